"""What moving a torrent's storage does with files already at the destination (libtorrent's
``move_storage`` with ``move_flags_t``): replaced (the default), refused before anything
moves (``FAIL_IF_EXIST``), or kept and used, their pieces checked again (``DONT_REPLACE``).
And a move racing a cancelled caller, a close or a removal; pad files' priority."""

from __future__ import annotations

import functools
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
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
    _resume,
    open_session,
)
from bip_disk import (
    CheckFinished,
    ExistingFiles,
    FileSystem,
    NativeFileSystem,
    PieceVerified,
)
from bip_disk._filesystem import Buffer
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


def files_of(torrent: Torrent) -> frozenset[int] | None:
    return torrent.files  # (read again: mypy would keep what an earlier assert said)


def phase(torrent: Torrent) -> TorrentPhase:
    return torrent.status().phase  # (read again: mypy would keep what an earlier assert said)


async def until_checked(torrent: Torrent) -> None:
    """Until the check a move started is over: the torrent has a brain again (its phase
    says ``PAUSED`` all along when paused)."""
    await until(lambda: torrent.swarm is not None)


def record_checks(torrent: Torrent) -> list[tuple[CheckFinished, TorrentPhase, bool]]:
    """The checks the disk reports for ``torrent`` from now on, each with the torrent's phase
    and whether it was halted (out of its swarm) when the end of the check reached it."""
    finished: list[tuple[CheckFinished, TorrentPhase, bool]] = []
    original = torrent.disk_event

    async def disk_event(event: object) -> None:
        if isinstance(event, CheckFinished):
            finished.append((event, torrent.status().phase, torrent.halted))
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
            with pytest.raises(TorrentError, match=r"album/f2\.bin exists at the destination$"):
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
            with pytest.raises(TorrentError, match=r"exists at the destination \(and 2 more of"):
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
            handle = download.handle
            assert handle is not None
            checks = record_checks(download)
            # The kept files as the disk's move leaves them: once its check is over, the
            # torrent fetches what they lack into them, which on loopback can come before
            # move_storage returns to us.
            disk, move = leecher.disk, leecher.disk.move_storage
            seen: dict[str, Any] = {}

            async def move_storage(*args: Any, **kwargs: Any) -> tuple[str, ...]:
                kept = await move(*args, **kwargs)
                seen["bad"] = kept_pieces - good_pieces(torrent.info, moved)
                seen["mtime"], seen["spoilt"] = good.stat().st_mtime, spoilt.read_bytes()
                return kept

            disk.move_storage = move_storage  # type: ignore[method-assign]

            await download.move_storage(moved, flags=MoveFlags.DONT_REPLACE)
            bad: set[int] = seen["bad"]
            assert bad  # f2's pieces (and those it shares)
            # The destination's files are kept as they were (not even written to).
            assert seen["mtime"] == LONG_AGO
            assert seen["spoilt"] == bytes(100_000)
            assert (moved / "album" / "sub" / "f1.bin").read_bytes() == (
                folder / "sub" / "f1.bin"
            ).read_bytes()
            # As libtorrent's: the old copies of the kept files stay, the moved one is gone.
            assert sorted(p.name for p in (down / "album").rglob("*")) == ["f0.bin", "f2.bin"]
            for name in ("f0.bin", "f2.bin"):
                assert (down / "album" / name).read_bytes() == (folder / name).read_bytes()
            assert download.options.save_dir == moved
            assert download.handle == handle  # the same storage, moved: nothing added anew
            # Out of its swarm while the kept files' pieces are hashed; only theirs are.
            await until_checked(download)
            [(check, checking, halted)] = checks
            assert checking is TorrentPhase.CHECKING
            assert halted  # its peers were disconnected, none dialled
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


async def test_dont_replace_counts_the_pieces_a_kept_file_brings_once(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    here, moved = tmp_path / "here", tmp_path / "moved"
    shutil.copytree(folder, here / "album")
    (here / "album" / "f2.bin").unlink()  # file 1: its pieces are lacking here
    (moved / "album").mkdir(parents=True)
    shutil.copyfile(folder / "f2.bin", moved / "album" / "f2.bin")  # kept: it brings them
    found = pieces_of(torrent, {1})
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            download = await session.add_torrent(torrent, TorrentOptions(here))
            await until_checked(download)
            assert download.status().done < download.status().total
            # bip_disk tells each piece its check finds in the kept file (a good PieceVerified);
            # here they reach the torrent only once its new brain is made, as they may on a
            # busy session: the brain, made from the disk's have(), counts them already.
            told: list[int] = []
            original = download.disk_event

            async def disk_event(event: object) -> None:
                if isinstance(event, PieceVerified):
                    await until(lambda: download.swarm is not None)
                    told.append(event.piece)
                await original(event)

            download.disk_event = disk_event  # type: ignore[method-assign]
            await download.move_storage(moved, flags=MoveFlags.DONT_REPLACE)
            await until(lambda: sorted(told) == sorted(found))
            await download.wait_complete()
            status = download.status()
            assert status.done == status.total
            assert phase(download) is TorrentPhase.SEEDING
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
    assert [flags.existing for flags in MoveFlags] == list(ExistingFiles)


# -- races: a cancelled caller, a close or a removal during the move --------------------------


def in_the_way(tmp_path: Path) -> tuple[Path, Metainfo, Path, Path]:
    """The content, its torrent, a copy of it in ``here``, and ``moved`` holding a good copy
    of f0 already (so that a DONT_REPLACE move keeps it and checks its pieces)."""
    folder, torrent = content(tmp_path)
    here, moved = tmp_path / "here", tmp_path / "moved"
    shutil.copytree(folder, here / "album")
    (moved / "album").mkdir(parents=True)
    shutil.copyfile(folder / "f0.bin", moved / "album" / "f0.bin")
    return folder, torrent, here, moved


def resume_files(save_dir: Path) -> list[str]:
    directory = save_dir / ".bip"
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


async def test_a_cancelled_move_never_leaves_the_torrent_checking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reviewer's case: a UI's timeout around move_storage(DONT_REPLACE) strikes after
    # bip_disk moved the files (here while the resume files move).
    folder, torrent, here, moved = in_the_way(tmp_path)
    original = _resume.ResumeStore.take_files_of
    entered = trio.Event()

    async def slow(self: _resume.ResumeStore, other: _resume.ResumeStore) -> None:
        entered.set()
        await trio.sleep(0.2)
        await original(self, other)

    monkeypatch.setattr(_resume.ResumeStore, "take_files_of", slow)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(here))
            await seeding.wait_complete()
            scope = trio.CancelScope()

            async def move() -> None:
                with scope:
                    await seeding.move_storage(moved, flags=MoveFlags.DONT_REPLACE)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(move)
                await entered.wait()
                scope.cancel()
            assert scope.cancelled_caught
            # The check of the kept file goes on and ends, whatever became of the caller.
            await until_checked(seeding)
            assert phase(seeding) is TorrentPhase.SEEDING
            assert not seeding.halted
            # The move is whole: the data and its resume files are in the new place.
            assert seeding.options.save_dir == moved
            assert same_files(folder, moved / "album")
            assert resume_files(here) == []
            assert resume_files(moved)


class Gated(NativeFileSystem):
    """A NativeFileSystem whose writes of the torrent's files wait (on their thread) for
    ``gate`` while it is not set, telling ``entered``; ``closed`` says whether it was."""

    def __init__(self, root: Path, gate: threading.Event, entered: threading.Event) -> None:
        super().__init__(root)
        self.gate = gate
        self.entered = entered
        self.closed = False

    def write(self, path: str, offset: int, data: Buffer) -> None:
        if path.startswith("album/") and not self.gate.is_set():
            self.entered.set()
            assert self.gate.wait(DEADLINE)
        super().write(path, offset, data)

    def close(self) -> None:
        self.closed = True
        super().close()


@pytest.mark.parametrize("delete_data", [False, True])
async def test_a_removal_during_the_copy_leaks_nothing(tmp_path: Path, delete_data: bool) -> None:
    _folder, torrent, here, moved = in_the_way(tmp_path)
    gate, entered = threading.Event(), threading.Event()
    made: list[Gated] = []

    def storage(save_dir: Path) -> FileSystem:
        made.append(Gated(save_dir, gate, entered))
        return made[-1]

    failures: list[TorrentError] = []
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(here, storage=storage))
            await seeding.wait_complete()

            async def move() -> None:
                with pytest.raises(TorrentError) as caught:
                    await seeding.move_storage(moved, flags=MoveFlags.DONT_REPLACE)
                failures.append(caught.value)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(move)
                await trio.to_thread.run_sync(entered.wait)  # copying
                remove = functools.partial(session.remove_torrent, seeding, delete_data=delete_data)
                nursery.start_soon(remove)
                # The removal has reached the disk (its torrent is gone from it) and waits
                # for the copy: a removal still saving or stopping would let the copy end.
                await until(lambda: session.disk.statistics().torrents == 0)
                gate.set()  # which stops at its next chunk, deleting what it wrote
            [failure] = failures
            assert "removed while moving" in str(failure)
            # Nothing of it left: not on the disk, no resume files, no open storage, no
            # copy (stopped and deleted, data kept or not).
            assert session.disk.statistics().torrents == 0
            assert resume_files(here) == resume_files(moved) == []
            assert all(fs.closed for fs in made)
            assert (here / "album").exists() is not delete_data
            assert not (moved / "album" / "sub").exists()
            assert (moved / "album" / "f0.bin").exists()  # kept: never the torrent's
            # It can be added again.
            again = await session.add_torrent(torrent, TorrentOptions(moved))
            await until(again.ready.is_set)
            assert phase(again) is not TorrentPhase.FAILED


async def test_a_removal_while_the_resume_files_move_does_not_bring_them_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _folder, torrent, here, moved = in_the_way(tmp_path)
    original = _resume.ResumeStore.take_files_of
    entered, go = trio.Event(), trio.Event()

    async def slow(self: _resume.ResumeStore, other: _resume.ResumeStore) -> None:
        entered.set()
        await go.wait()
        await original(self, other)

    monkeypatch.setattr(_resume.ResumeStore, "take_files_of", slow)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(here))
            await seeding.wait_complete()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    functools.partial(seeding.move_storage, moved, flags=MoveFlags.DONT_REPLACE)
                )
                await entered.wait()
                nursery.start_soon(session.remove_torrent, seeding)
                await trio.testing.wait_all_tasks_blocked()
                go.set()
            assert session.disk.statistics().torrents == 0
            await trio.sleep(0.6)  # past a resume save (loopback_config: every 0.5 s)
            assert resume_files(here) == resume_files(moved) == []


async def test_a_close_during_the_copy_closes_the_new_storage(tmp_path: Path) -> None:
    _folder, torrent, here, moved = in_the_way(tmp_path)
    gate, entered = threading.Event(), threading.Event()
    made: list[Gated] = []

    def storage(save_dir: Path) -> FileSystem:
        made.append(Gated(save_dir, gate, entered))
        return made[-1]

    failures: list[TorrentError] = []
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as outside, open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(here, storage=storage))
            await seeding.wait_complete()

            async def move() -> None:
                with pytest.raises(TorrentError) as caught:
                    await seeding.move_storage(moved, flags=MoveFlags.DONT_REPLACE)
                failures.append(caught.value)

            async def open_gate_once_closing() -> None:
                # Once the disk dropped the torrent (remove_torrent, which then waits for the
                # copy): had the copy ended first, the move would be done, not cut short.
                await until(lambda: session.disk.statistics().torrents == 0)
                gate.set()

            outside.start_soon(move)
            await trio.to_thread.run_sync(entered.wait)  # copying
            outside.start_soon(open_gate_once_closing)
            # Leaving the session closes the torrent while the copy runs.
    [failure] = failures
    assert "closed while moving" in str(failure)
    assert [fs.closed for fs in made] == [True, True]  # the old storage and the new one
    assert seeding.options.save_dir == here  # it did not move
    assert resume_files(here)
    assert resume_files(moved) == []


# -- pad files ---------------------------------------------------------------------------------


async def test_pad_files_have_priority_0_whatever_is_set(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "hybrid", piece_length=PIECE)  # pad files after f0 and f2
    pads = [i for i, entry in enumerate(torrent.info.files) if entry.is_pad]
    assert pads
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            count = len(torrent.info.files)
            priorities = seeding.file_priorities()
            assert [priorities[i] for i in pads] == [0] * len(pads)
            assert all(priorities[i] == 4 for i in range(count) if i not in pads)
            assert seeding.files is None  # every file that has data
            seeding.set_file_priorities([7] * count)
            assert [seeding.file_priorities()[i] for i in pads] == [0] * len(pads)
            seeding.set_file_priorities(dict.fromkeys(pads, 5))
            assert [seeding.file_priorities()[i] for i in pads] == [0] * len(pads)
            assert files_of(seeding) is None
            # A pad file wanted alone wants nothing: libtorrent ignores its priority.
            seeding.set_file_priorities([7 if i in pads else 0 for i in range(count)])
            assert seeding.file_priorities() == (0,) * count
            assert files_of(seeding) == frozenset()
            assert seeding.status().total == 0
