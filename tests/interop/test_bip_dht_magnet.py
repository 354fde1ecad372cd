"""A magnet link with only an info-hash, resolved through a loopback DHT that mixes our nodes
and libtorrent's, then downloaded: our engine seeds and announces through its bip_dht node, our
leecher's node finds the seed, both having joined through three libtorrent DHT nodes (which
must see the announce: the DHT that carried it is libtorrent's as much as ours)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

from bip._client import ClientConfig, TorrentOptions, open_session
from bip_dht import open_dht
from bip_handshake import EncryptionPolicy
from bip_metainfo import MagnetLink, create_torrent

from ._dht_nodes import loopback_host, open_libtorrent_dht

pytestmark = pytest.mark.interop

DEADLINE = 60.0


def config(host: str) -> ClientConfig:
    return ClientConfig(
        listen=((host, 0),),
        trackers=False,
        encryption=EncryptionPolicy.PREFER_ENCRYPTED,
        dht_interval=1.0,
        resume_interval=0.5,
    )


async def test_magnet_through_mixed_dht(tmp_path: Path) -> None:
    folder = tmp_path / "seed" / "payload"
    folder.mkdir(parents=True)
    rng = random.Random(3)
    (folder / "one.bin").write_bytes(rng.randbytes(700_000))
    (folder / "two.bin").write_bytes(rng.randbytes(300_000))
    torrent = create_torrent(folder, version="hybrid", creation_date=None, created_by=None)
    seed_host, leech_host = loopback_host(), loopback_host()
    with trio.fail_after(DEADLINE):
        async with open_libtorrent_dht(
            tmp_path / "lt", [loopback_host(), loopback_host(), loopback_host()]
        ) as libtorrent:
            routers = [session.address for session in libtorrent.sessions]
            async with (
                open_dht(seed_host, routers, rng=random.Random(1)) as seed_dht,
                open_dht(leech_host, routers, rng=random.Random(2)) as leech_dht,
            ):
                await seed_dht.bootstrap()
                await leech_dht.bootstrap()
                async with (
                    open_session(config(seed_host), dht=seed_dht) as seeder,
                    open_session(config(leech_host), dht=leech_dht) as leecher,
                ):
                    seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
                    await seeding.wait_complete()
                    magnet = MagnetLink.from_info_hash(torrent.info.info_hash)
                    download = await leecher.add_torrent(magnet, TorrentOptions(tmp_path / "down"))
                    await download.wait_complete()
                    v1 = torrent.info.info_hash.v1
                    assert v1 is not None
                    assert any(
                        libtorrent.announces_in(session.index, v1)
                        for session in libtorrent.sessions
                    )
    for name in ("one.bin", "two.bin"):
        assert (tmp_path / "down" / "payload" / name).read_bytes() == (folder / name).read_bytes()
