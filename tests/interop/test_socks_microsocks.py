"""A bip leecher downloads from a bip seed through the real ``microsocks`` SOCKS5 proxy
(Debian's package), without and with RFC 1929 username/password.

microsocks listens on 127.0.0.1 only (``-i``) and makes its outgoing connections from
127.0.0.5 (``-b``); the seed refuses the leecher's own address (127.0.0.6) with its IP
filter, so only connections that went through the proxy can deliver a byte. microsocks runs
as its own process and is stopped by PID at teardown; the sessions run in this process.
"""

from __future__ import annotations

import random
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trio

from bip._client import ClientConfig, TorrentOptions, open_session
from bip_handshake import EncryptionPolicy, IPFilter, IPRange
from bip_metainfo import create_torrent

from ._helpers import StartProcess, free_port, require_client, tcp_listening

pytestmark = pytest.mark.interop

DEADLINE = 20.0
PROXY_HOST = "127.0.0.1"
PROXY_OUT = "127.0.0.5"  # where microsocks connects from
SEED_HOST = "127.0.0.4"
LEECH_HOST = "127.0.0.6"  # refused by the seed: a direct dial would fail


def config(host: str, **changes: object) -> ClientConfig:
    settings: dict[str, object] = {
        "listen": ((host, 0),),
        "trackers": False,
        "encryption": EncryptionPolicy.PREFER_ENCRYPTED,
        "resume_interval": 0.5,
        "natpmp_announce_address": None,
    }
    settings.update(changes)
    return ClientConfig(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("auth", [False, True], ids=["no-auth", "username-password"])
async def test_bip_downloads_through_microsocks(
    tmp_path: Path, start_process: StartProcess, auth: bool
) -> None:
    binary = require_client("microsocks")
    port = free_port(PROXY_HOST)
    argv = [binary, "-i", PROXY_HOST, "-p", str(port), "-b", PROXY_OUT]
    credentials = ""
    if auth:
        argv += ["-u", "bip", "-P", "s3cret"]
        credentials = "bip:s3cret@"
    start_process(argv, ready=tcp_listening(PROXY_HOST, port))

    folder = tmp_path / "seed" / "payload"
    folder.mkdir(parents=True)
    rng = random.Random(5)
    (folder / "one.bin").write_bytes(rng.randbytes(600_000))
    (folder / "two.bin").write_bytes(rng.randbytes(1_000))
    torrent = create_torrent(folder, version="hybrid", creation_date=None, created_by=None)
    leecher_address = IPv4Address(LEECH_HOST)
    refuse_leecher = IPFilter.blocking([IPRange(leecher_address, leecher_address)])
    with trio.fail_after(DEADLINE):
        async with (
            open_session(config(SEED_HOST, ip_filter=refuse_leecher)) as seeder,
            open_session(
                config(LEECH_HOST, proxy=f"socks5://{credentials}{PROXY_HOST}:{port}")
            ) as leecher,
        ):
            seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            [seed] = seeder.handshaker.listen_addresses
            download = await leecher.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", peers=(seed,))
            )
            await download.wait_complete()
            assert leecher.dialer is not None  # microsocks refuses UDP: no uTP dial connects
            assert leecher.dialer.statistics().utp_connected == 0
    for name in ("one.bin", "two.bin"):
        assert (tmp_path / "down" / "payload" / name).read_bytes() == (folder / name).read_bytes()
