"""Our seed to our download, in one process on loopback: multi-file v1, v2 and hybrid
torrents, every piece verified, with and without MSE."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from _engine_helpers import (
    Version,
    address_of,
    loopback_config,
    make_torrent,
    same_files,
    seeder_and_leecher,
    write_content,
)

from bip._client import TorrentError, TorrentOptions, TorrentPhase, open_session
from bip_disk import MemoryFileSystem
from bip_handshake import EncryptionPolicy

SIZES = (100_000, 0, 70_000, 32768, 5)
DEADLINE = 30.0


@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
@pytest.mark.parametrize(
    "encryption", [EncryptionPolicy.PLAINTEXT_ONLY, EncryptionPolicy.REQUIRE_ENCRYPTED]
)
async def test_seed_to_download(
    tmp_path: Path, version: Version, encryption: EncryptionPolicy
) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, version)
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder, encryption=encryption) as (seeder, leecher):
            download = await leecher.add_torrent(
                torrent,
                TorrentOptions(tmp_path / "down", peers=(address_of(seeder),)),
            )
            await download.wait_complete()
            status = download.status()
    assert status.complete
    assert status.pieces == status.num_pieces == torrent.info.num_pieces
    assert status.bad_pieces == 0
    assert same_files(folder, tmp_path / "down" / "album")


async def test_download_into_memory(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "hybrid")
    memory = MemoryFileSystem()
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            options = TorrentOptions(
                tmp_path / "unused", peers=(address_of(seeder),), storage=lambda _: memory
            )
            download = await leecher.add_torrent(torrent, options)
            await download.wait_complete()
    for entry in torrent.info.files:
        if not entry.is_pad:
            stored = memory.read("/".join(entry.path), 0, entry.length)
            assert stored == folder.parent.joinpath(*entry.path).read_bytes()
    # Only the resume record went to the real disk.
    assert [path.name for path in (tmp_path / "unused").iterdir()] == [".bip"]


async def test_disk_full_fails_the_download(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1")
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            options = TorrentOptions(
                tmp_path / "down",
                peers=(address_of(seeder),),
                resume=False,
                storage=lambda _: MemoryFileSystem(capacity=100_000),
            )
            download = await leecher.add_torrent(torrent, options)
            with pytest.raises(TorrentError, match="storage"):
                await download.wait_complete()
            status = download.status()
    assert status.phase is TorrentPhase.FAILED
    assert status.error is not None
    assert "space" in status.error.lower()


async def test_two_seeds_do_not_stay_connected(tmp_path: Path) -> None:
    # Neither wants anything of the other: the connection is closed (libtorrent's
    # close_redundant_connections), and upload_only (BEP 21) is in our extended handshake.
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1")
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (first, second):
            two = await second.add_torrent(
                torrent, TorrentOptions(folder.parent, peers=(address_of(first),), resume=False)
            )
            await two.wait_complete()
            while not first.manager.statistics().removed_reasons.get("both seeds"):
                await trio.sleep(0.02)
            assert not first.manager.peers


async def test_two_torrents_in_one_session(tmp_path: Path) -> None:
    # One session serves two torrents, another downloads both over its connections: the
    # handshaker, the peer manager and the disk are shared, peers routed by info-hash.
    first = write_content(tmp_path / "seed1", SIZES, seed=1)
    second = write_content(tmp_path / "seed2", SIZES[:2], seed=2)
    torrents = [make_torrent(first, "v1"), make_torrent(second, "v2")]
    with trio.fail_after(DEADLINE):
        async with (
            open_session(loopback_config()) as seeder,
            open_session(loopback_config()) as leecher,
        ):
            for torrent, folder in zip(torrents, (first, second), strict=True):
                seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
                await seeding.wait_complete()
            downloads = [
                await leecher.add_torrent(
                    torrent, TorrentOptions(tmp_path / f"down{i}", peers=(address_of(seeder),))
                )
                for i, torrent in enumerate(torrents)
            ]
            for download in downloads:
                await download.wait_complete()
    assert same_files(first, tmp_path / "down0" / "album")
    assert same_files(second, tmp_path / "down1" / "album")
