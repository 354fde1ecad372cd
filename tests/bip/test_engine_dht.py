"""A magnet link with nothing but an info-hash, resolved through a loopback DHT of our nodes:
the seed announces itself in the DHT, the leecher finds it there, fetches the metadata from it
(BEP 9) and downloads everything."""

from __future__ import annotations

import random
from pathlib import Path

import trio
from _engine_helpers import LOOPBACK, loopback_config, make_torrent, same_files, write_content

from bip._client import TorrentOptions, open_session
from bip_dht._shell import open_dht
from bip_handshake import Extensions
from bip_metainfo import MagnetLink

SIZES = (120_000, 50_000)
DEADLINE = 60.0


async def test_magnet_through_the_dht(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "hybrid")
    config = loopback_config(dht_interval=0.5)
    with trio.fail_after(DEADLINE):
        # A third node both know: the seed's announce is stored there, the leecher asks it.
        async with open_dht(LOOPBACK, rng=random.Random(1)) as router:
            [router_address] = router.addresses
            async with (
                open_dht(LOOPBACK, [router_address], rng=random.Random(2)) as seed_dht,
                open_dht(LOOPBACK, [router_address], rng=random.Random(3)) as leech_dht,
            ):
                await seed_dht.bootstrap()
                await leech_dht.bootstrap()
                async with (
                    open_session(config, dht=seed_dht) as seeder,
                    open_session(config, dht=leech_dht) as leecher,
                ):
                    seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
                    await seeding.wait_complete()
                    magnet = MagnetLink.from_info_hash(torrent.info.info_hash)
                    download = await leecher.add_torrent(magnet, TorrentOptions(tmp_path / "down"))
                    await download.wait_complete()
                    assert Extensions.DHT in leecher.handshaker.extensions
    assert same_files(folder, tmp_path / "down" / "album")
