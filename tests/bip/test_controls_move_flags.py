"""What moving a torrent's storage does with files already at the destination (libtorrent's
``move_storage`` with ``move_flags_t``): replaced (the default), refused before anything
moves (``FAIL_IF_EXIST``), or kept and used, their pieces checked again (``DONT_REPLACE``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import trio
from _engine_helpers import (
    download_from,
    good_pieces,
    loopback_config,
    make_torrent,
    same_files,
    seeder_and_leecher,
    until,
    write_content,
)

from bip._client import (
    MoveFlags,
    Torrent,
    TorrentError,
    TorrentOptions,
    TorrentPhase,
    open_session,
)
from bip._client._move import KeepExisting, existing_files
from bip_disk import CheckFinished, FileSystem, MemoryFileSystem
from bip_metainfo import Metainfo
from bip_select import TorrentGeometry

DEADLINE = 30.0
PIECE = 32768
SIZES = (300_000, 200_000, 100_000)  # f0, sub/f1, f2: the torrent lists f0, f2, sub/f1
LONG_AGO = 1_000_000_000  # 2001, in seconds: a file's time that no write leaves


def content(tmp_path: Path) -> tuple[Path, Metainfo]:
    folder = write_content(tmp_path / "seed", SIZES)
    return folder, make_torrent(folder, "v1", piece_length=PIECE)


def pieces_of(torrent: Metainfo, files: set[int]) -> set[int]:
    geometry = TorrentGeometry.from_info(torrent.info)
    return {piece for index in files for piece in geometry.file_pieces(index)}


def phase(torrent: Torrent) -> TorrentPhase:
    return torrent.status().phase  # (read again: mypy would keep what an earlier assert said)


async def until_checked(torrent: Torrent) -> None:
    """Until the check a move started is over: the torrent has a brain again (its phase
    says ``PAUSED`` all along when paused)."""
    await until(lambda: torrent.swarm is not None)


def record_checks(torrent: Torrent) -> list[CheckFinished]:
    """The checks the disk reports for ``torrent`` from now on."""
    finished: list[CheckFinished] = []
    original = torrent.disk_event

    async def disk_event(event: object) -> None:
        if isinstance(event, CheckFinished):
            finished.append(event)
        await original(event)

    torrent.disk_event = disk_event  # type: ignore[method-assign]
    return finished


# -- FAIL_IF_EXIST -----------------------------------------------------------------------------


async def test_fail_if_exist_refuses_before_moving_anything(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    here = tmp_path / "here"
    shutil.copytree(folder, here / "album")
    moved, empty = tmp_path / "moved", tmp_path / "empty"
    (moved / "album").mkdir(parents=True)
    (moved / "album" / "f2.bin").write_bytes(b"theirs")
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(here))
            await seeding.wait_complete()
            with pytest.raises(TorrentError, match=r"album/f2\.bin exists there"):
                await seeding.move_storage(moved, flags=MoveFlags.FAIL_IF_EXIST)
            # Nothing moved: the file in the way is as it was, the torrent where it was.
            assert (moved / "album" / "f2.bin").read_bytes() == b"theirs"
            assert sorted(path.name for path in moved.rglob("*")) == ["album", "f2.bin"]
            assert seeding.options.save_dir == here
            assert phase(seeding) is TorrentPhase.SEEDING
            assert same_files(folder, here / "album")

            # Staying where it is: its own files are not in the way.
            await seeding.move_storage(here, flags=MoveFlags.FAIL_IF_EXIST)
            # Nothing in the way: moved.
            await seeding.move_storage(empty, flags=MoveFlags.FAIL_IF_EXIST)
            assert seeding.options.save_dir == empty
            assert same_files(folder, empty / "album")
            assert not (here / "album").exists()


async def test_fail_if_exist_counts_every_file_in_the_way(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved / "album")
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            with pytest.raises(TorrentError, match="exists there \\(and 2 more of its files\\)"):
                await seeding.move_storage(moved, flags=MoveFlags.FAIL_IF_EXIST)
            assert seeding.options.save_dir == folder.parent


# -- DONT_REPLACE ------------------------------------------------------------------------------


async def test_dont_replace_keeps_the_files_there_and_checks_their_pieces(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    down, moved = tmp_path / "down", tmp_path / "moved"
    # At the destination already: a good copy of f0 (file 0), and a spoilt f2 (file 1).
    (moved / "album").mkdir(parents=True)
    good = moved / "album" / "f0.bin"
    shutil.copyfile(folder / "f0.bin", good)
    os.utime(good, (LONG_AGO, LONG_AGO))
    spoilt = moved / "album" / "f2.bin"
    spoilt.write_bytes(bytes(100_000))
    kept_pieces = pieces_of(torrent, {0, 1})
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            download = await download_from(seeder, leecher, torrent, down)
            await download.wait_complete()
            before = download.handle
            checks = record_checks(download)

            await download.move_storage(moved, flags=MoveFlags.DONT_REPLACE)
            bad = kept_pieces - good_pieces(torrent.info, moved)
            assert bad  # f2's pieces (and those it shares)
            # The destination's files are kept as they were (not even written to).
            assert good.stat().st_mtime == LONG_AGO
            assert spoilt.read_bytes() == bytes(100_000)
            assert (moved / "album" / "sub" / "f1.bin").read_bytes() == (
                folder / "sub" / "f1.bin"
            ).read_bytes()
            assert not (down / "album").exists()  # the old copies are gone, kept ones too
            assert download.options.save_dir == moved
            # Out of its swarm while the kept files' pieces are hashed; only theirs are.
            assert phase(download) is TorrentPhase.CHECKING
            assert download.halted  # its peers are being disconnected, none dialled
            handle = download.handle
            assert handle is not None
            assert handle != before
            await until_checked(download)
            [check] = checks
            assert check.resumed
            assert check.checked == len(kept_pieces)
            assert check.good == torrent.info.num_pieces - len(bad)

            # Back in the swarm: what the kept files lacked comes from the seed.
            await download.wait_complete()
            assert phase(download) is TorrentPhase.SEEDING
            await leecher.disk.wait_idle(handle)
            assert same_files(folder, moved / "album")

            # It serves from its new storage: a third peer gets everything from it alone.
            [seeding] = seeder.torrents
            seeding.pause()
            uploaded = download.status().uploaded
            async with open_session(loopback_config()) as third:
                copy = await download_from(leecher, third, torrent, tmp_path / "third")
                await copy.wait_complete()
            assert download.status().uploaded > uploaded
    assert same_files(folder, tmp_path / "third" / "album")


async def test_dont_replace_with_nothing_in_the_way_is_a_plain_move(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    here, moved = tmp_path / "here", tmp_path / "moved"
    shutil.copytree(folder, here / "album")
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(here))
            await seeding.wait_complete()
            handle = seeding.handle
            await seeding.move_storage(moved, flags=MoveFlags.DONT_REPLACE)
            assert phase(seeding) is TorrentPhase.SEEDING
            assert seeding.handle == handle
            assert not seeding.halted
    assert same_files(folder, moved / "album")


async def test_dont_replace_while_paused_stays_paused(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    here, moved = tmp_path / "here", tmp_path / "moved"
    shutil.copytree(folder, here / "album")
    (moved / "album" / "sub").mkdir(parents=True)
    (moved / "album" / "sub" / "f1.bin").write_bytes(b"short")  # file 2, spoilt
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(here))
            await seeding.wait_complete()
            seeding.pause()
            await seeding.move_storage(moved, flags=MoveFlags.DONT_REPLACE)
            await until_checked(seeding)
            assert phase(seeding) is TorrentPhase.PAUSED
            assert seeding.paused
            missing = pieces_of(torrent, {2})
            assert seeding.status().pieces == torrent.info.num_pieces - len(missing)
            seeding.resume()
            assert phase(seeding) is TorrentPhase.DOWNLOADING  # no peer to get them from
    assert (moved / "album" / "sub" / "f1.bin").read_bytes().startswith(b"short")


# -- the flags themselves ----------------------------------------------------------------------


async def test_move_flags_are_checked(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            with pytest.raises(TypeError, match="flags must be a MoveFlags"):
                await seeding.move_storage(tmp_path / "x", flags="dont_replace")  # type: ignore[arg-type]
            assert seeding.options.save_dir == folder.parent
    assert MoveFlags("fail_if_exist") is MoveFlags.FAIL_IF_EXIST  # libtorrent's names


def test_keep_existing_leaves_the_kept_files_alone() -> None:
    inner = MemoryFileSystem()
    inner.write("t/kept.bin", 0, b"theirs")
    guarded = KeepExisting(inner, ["t/kept.bin"])
    assert isinstance(guarded, FileSystem)
    for target in ("t/kept.bin", "t/new.bin"):
        guarded.write(target, 0, b"ours!!")
        guarded.allocate(target, 100)
        guarded.truncate(target, 3)
    guarded.rename("t/new.bin", "t/kept.bin")
    guarded.remove("t/kept.bin")
    guarded.symlink("t/kept.bin", "t/new.bin")
    assert guarded.read("t/kept.bin", 0, 100) == b"theirs"
    assert inner.read("t/new.bin", 0, 100) == b"our"
    stat = guarded.stat("t/kept.bin")
    assert stat is not None
    assert stat.size == guarded.size("t/kept.bin") == 6
    guarded.sync()
    guarded.close()
    assert inner.read("t/kept.bin", 0, 100) == b"theirs"  # still usable: not closed


def test_existing_files_lists_the_torrent_files_found(tmp_path: Path) -> None:
    _folder, torrent = content(tmp_path)
    storage = MemoryFileSystem()
    assert existing_files(storage, torrent.info) == []
    storage.write("album/sub/f1.bin", 0, b"x")
    storage.write("album/other.bin", 0, b"not the torrent's")
    assert existing_files(storage, torrent.info) == [(2, "album/sub/f1.bin")]
