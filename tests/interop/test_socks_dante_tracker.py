"""A bip leecher behind the real Dante SOCKS5 server (``danted``) announces over ``udp://`` to
the real ``opentracker`` through Dante's UDP relay (UDP ASSOCIATE), finds there a bip seed that
announced directly, and downloads from it (the dial goes through Dante too).

Dante listens on 127.0.0.1 and relays from 127.0.0.5 (its ``external``); the seed (127.0.0.4)
refuses the leecher's own address (127.0.0.1) with its IP filter, so only a connection that
went through Dante delivers a byte, and the leecher knows the seed only from the tracker.
microsocks (Debian's package) refuses UDP ASSOCIATE: our UDP tracker client behind it fails an
announce with that refusal once the proxy timeout has passed, and sends nothing.

Every process is stopped by PID at teardown; the sessions run in this process.
"""

from __future__ import annotations

import random
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trio

from bip._client import ClientConfig, TorrentOptions, open_session
from bip_handshake import EncryptionPolicy, IPFilter, IPRange, ProxyConfig
from bip_metainfo import create_torrent
from bip_utracker import TrackerError, open_tracker_client

from ._dante import start_dante
from ._helpers import StartProcess, free_port, require_client, start_opentracker, tcp_listening

pytestmark = pytest.mark.interop

DEADLINE = 30.0
HOST = "127.0.0.1"  # Dante, opentracker and the leecher
DANTE_OUT = "127.0.0.5"  # where Dante's datagrams and connections leave from
SEED_HOST = "127.0.0.4"


def config(host: str, **changes: object) -> ClientConfig:
    settings: dict[str, object] = {
        "listen": ((host, 0),),
        "trackers": True,
        "encryption": EncryptionPolicy.PREFER_ENCRYPTED,
        "resume_interval": 0.5,
        "natpmp_announce_address": None,
    }
    settings.update(changes)
    return ClientConfig(**settings)  # type: ignore[arg-type]


async def test_a_udp_announce_through_dante_finds_the_seed(
    tmp_path: Path, start_process: StartProcess
) -> None:
    folder = tmp_path / "seed" / "payload"
    folder.mkdir(parents=True)
    rng = random.Random(11)
    (folder / "one.bin").write_bytes(rng.randbytes(300_000))
    (folder / "two.bin").write_bytes(rng.randbytes(1_000))
    torrent = create_torrent(folder, version="v1", creation_date=None, created_by=None)
    v1 = torrent.info.info_hash.v1
    assert v1 is not None
    tracker = await trio.to_thread.run_sync(
        start_opentracker, start_process, tmp_path / "opentracker", [v1]
    )
    port = await trio.to_thread.run_sync(
        lambda: start_dante(start_process, tmp_path / "dante", external=DANTE_OUT)
    )
    leecher_address = IPv4Address(HOST)
    refuse_leecher = IPFilter.blocking([IPRange(leecher_address, leecher_address)])
    with trio.fail_after(DEADLINE):
        async with open_session(config(SEED_HOST, ip_filter=refuse_leecher)) as seeder:
            seeding = await seeder.add_torrent(
                torrent, TorrentOptions(folder.parent, extra_trackers=(tracker.udp_url,))
            )
            await seeding.wait_complete()
            [seed] = seeder.handshaker.listen_addresses
            async with open_session(config(HOST, proxy=f"socks5://{HOST}:{port}")) as leecher:
                download = await leecher.add_torrent(
                    torrent, TorrentOptions(tmp_path / "down", extra_trackers=(tracker.udp_url,))
                )
                await download.wait_complete()
                assert leecher.trackers is not None
                relayed = leecher.trackers.proxy_statistics
    assert seed.host == IPv4Address(SEED_HOST)
    # The announce went through Dante's relay (the tracker client has no other socket).
    assert relayed is not None
    assert relayed.associations >= 1
    assert relayed.sent >= 2  # connect and announce
    assert relayed.received >= 2
    for name in ("one.bin", "two.bin"):
        assert (tmp_path / "down" / "payload" / name).read_bytes() == (folder / name).read_bytes()


async def test_microsocks_refusal_fails_a_udp_announce(
    tmp_path: Path, start_process: StartProcess
) -> None:
    binary = require_client("microsocks")
    port = free_port(HOST)
    start_process([binary, "-i", HOST, "-p", str(port)], ready=tcp_listening(HOST, port))
    with trio.fail_after(DEADLINE):
        async with open_tracker_client(
            bind_v4=HOST, bind_v6=None, proxy=ProxyConfig(HOST, port), proxy_timeout=0.5
        ) as client:
            with pytest.raises(TrackerError, match=r"command not supported \(SOCKS5 reply 7\)"):
                await client.announce(
                    f"udp://{HOST}:6969/announce", bytes(20), peer_id=bytes(20), port=1
                )
            relayed = client.proxy_statistics
    assert relayed is not None
    assert (relayed.sent, relayed.associations) == (0, 0)
