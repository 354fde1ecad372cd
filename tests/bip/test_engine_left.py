"""What the client tells trackers it still needs (``left``) and shows as its total: file
data only, never BEP 47 pad bytes (libtorrent counts them the same way)."""

from __future__ import annotations

from pathlib import Path

import trio
from _engine_helpers import (
    address_of,
    loopback_config,
    make_torrent,
    same_files,
    seeder_and_leecher,
    write_content,
)

from bip._client import TorrentOptions, open_session

# Odd sizes: in a hybrid torrent each file but the last is padded to a piece boundary.
SIZES = (100_001, 70_003, 40_005)
DEADLINE = 30.0


async def test_left_and_total_leave_pad_bytes_out(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "hybrid")
    info = torrent.info
    assert any(entry.is_pad for entry in info.files)  # the test means something
    data = sum(SIZES)
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            download = await leecher.add_torrent(
                torrent, TorrentOptions(down, peers=(address_of(seeder),))
            )
            await download.wait_complete()
            assert download.status().total == data
            assert download.transfer()[2] == 0
            seeding = seeder.find(info.info_hash)
            assert seeding is not None
            assert seeding.status().total == data
            assert seeding.transfer()[2] == 0
    assert same_files(folder, down / folder.name)


async def test_left_before_anything_is_the_file_data(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "hybrid")
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as lonely:
            download = await lonely.add_torrent(torrent, TorrentOptions(tmp_path / "down"))
            await download.ready.wait()
            assert download.transfer() == (0, 0, sum(SIZES))
            assert download.status().total == sum(SIZES)
