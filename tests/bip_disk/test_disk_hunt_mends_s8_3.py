"""Regressions for a hunt in bip_disk: a write waiting for in-flight room that is cancelled
in the same tick as its torrent is rechecked or removed (ByteBudget.turn_away) gets its
Cancelled, not a ValueError; a removal during a move's deletion of the old files waits for
it, so that StorageMoved never comes after TorrentRemoved; and BEP 47 executable files are
created executable by NativeFileSystem (mode 0o777 reduced by the umask, as libtorrent)."""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from bip_bencode import encode
from bip_disk import StorageLayout, create_files
from bip_disk._budget import ByteBudget
from bip_disk._events import DiskEvent, StorageMoved, TorrentRemoved
from bip_disk._fileops import copy_files
from bip_disk._manager import DiskManager, open_disk_manager
from bip_disk._memory import MemoryFileSystem
from bip_disk._native import NativeFileSystem
from bip_metainfo import Info

PIECE = 16384

posix_modes = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


def _drain(disk: DiskManager) -> list[DiskEvent]:
    """The events queued now."""
    events = []
    while True:
        try:
            events.append(disk.events().receive_nowait())
        except trio.WouldBlock:
            return events


# -- 1. a waiting write cancelled as its torrent turns it away -----------------------------


async def test_budget_waiter_cancelled_and_turned_away_in_one_tick() -> None:
    budget = ByteBudget(4)
    owner, other = object(), object()
    assert await budget.take(4, owner)
    outcome: list[str] = []

    async def wait(who: object, scope: trio.CancelScope) -> None:
        with scope:
            outcome.append(str(await budget.take(2, who)))
        if scope.cancelled_caught:
            outcome.append("cancelled")

    scope, later = trio.CancelScope(), trio.CancelScope()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, owner, scope)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(wait, other, later)  # behind it in line
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            budget.turn_away(owner)  # same tick: it used to be removed twice (ValueError)
            await trio.testing.wait_all_tasks_blocked()
            assert outcome == ["cancelled"]
            assert budget.waiting == 1  # the other one still waits its turn
            budget.release(4)
    assert outcome == ["cancelled", "True"]
    assert (budget.used, budget.pending, budget.waiting) == (2, 0, 0)


def _info(pieces: int) -> tuple[Info, bytes]:
    data = bytes(range(256)) * (pieces * PIECE // 256)
    starts = range(0, len(data), PIECE)
    hashes = b"".join(hashlib.sha1(data[start : start + PIECE]).digest() for start in starts)
    raw: dict[bytes, Any] = {
        b"name": b"f",
        b"piece length": PIECE,
        b"length": len(data),
        b"pieces": hashes,
    }
    return Info.from_bytes(encode(raw)), data


@pytest.mark.parametrize("how", ["recheck", "remove"])
async def test_waiting_write_cancelled_as_its_torrent_turns_it_away(how: str) -> None:
    info, data = _info(3)
    with trio.fail_after(10):
        async with open_disk_manager(max_in_flight_bytes=PIECE) as disk:
            torrent = await disk.add_torrent(info, MemoryFileSystem())
            await disk.wait_checked(torrent)
            await disk.write_block(torrent, 0, 0, data[:100])  # piece 0 holds the whole bound
            scope = trio.CancelScope()

            async def waiter() -> None:
                with scope:
                    await disk.write_block(torrent, 1, 0, data[PIECE : PIECE + 100])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                assert disk.statistics().waiting_writes == 1
                scope.cancel()  # the peer's task is cancelled, and in the same tick...
                if how == "recheck":
                    await disk.recheck(torrent)  # ...its torrent is rechecked
                else:
                    await disk.remove_torrent(torrent)  # ...or removed
            assert scope.cancelled_caught  # Cancelled, where a ValueError crashed the nursery
            statistics = disk.statistics()
            assert (statistics.waiting_writes, statistics.in_flight_bytes) == (0, 0)


# -- 2. a removal while a move deletes the old files -----------------------------------------


class _SlowRemove(MemoryFileSystem):
    """Its removals wait (on their thread) until ``gate`` is set; ``entered`` tells when."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def remove(self, path: str) -> None:
        self.entered.set()
        assert self.gate.wait(5)  # bounded: a failing test does not hang
        super().remove(path)


async def test_removal_waits_for_the_moves_deletion_of_the_old_files() -> None:
    info, data = _info(2)
    old = _SlowRemove()
    removed = trio.Event()
    with trio.fail_after(10):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(info, old)
            await disk.wait_checked(torrent)
            await disk.write_block(torrent, 0, 0, data[:PIECE])
            await disk.wait_idle(torrent)

            async def remove() -> None:
                await disk.remove_torrent(torrent)
                removed.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(disk.move_storage, torrent, MemoryFileSystem())
                # The move has switched and deletes the old files, on a thread.
                assert await trio.to_thread.run_sync(old.entered.wait, 5)
                nursery.start_soon(remove)
                await trio.testing.wait_all_tasks_blocked()
                assert not removed.is_set()  # it used to return at once: the torrent was idle
                old.gate.set()
            events = _drain(disk)
    kinds = [type(event) for event in events]
    assert kinds.count(StorageMoved) == kinds.count(TorrentRemoved) == 1
    assert kinds[-1] is TorrentRemoved  # it ends the torrent's events (StorageMoved came after)
    assert old.stat("f") is None  # the old file deleted all the same


# -- 3. BEP 47 executable files ---------------------------------------------------------------


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _layout() -> StorageLayout:
    """``t/run`` (executable, two pieces), ``t/data`` and ``t/empty`` (executable, empty)."""
    files: list[Any] = [
        {b"length": 2 * PIECE, b"path": [b"run"], b"attr": b"x"},
        {b"length": 100, b"path": [b"data"]},
        {b"length": 0, b"path": [b"empty"], b"attr": b"x"},
    ]
    raw: dict[bytes, Any] = {
        b"name": b"t",
        b"piece length": PIECE,
        b"files": files,
        b"pieces": bytes(60),
    }
    return StorageLayout.from_info(Info.from_bytes(encode(raw)))


@posix_modes
@pytest.mark.parametrize(
    ("mask", "mode"), [(0o022, 0o755), (0o027, 0o750), (0o077, 0o700)], ids=["022", "027", "077"]
)
def test_native_creates_executable_files_executable(tmp_path: Path, mask: int, mode: int) -> None:
    with _umask(mask), NativeFileSystem(tmp_path) as fs:
        fs.create_executable("t/bin/run")
        fs.write("t/plain", 0, b"x")
    assert _mode(tmp_path / "t/bin/run") == mode
    assert (tmp_path / "t/bin/run").stat().st_size == 0
    assert _mode(tmp_path / "t/plain") == mode & 0o666


@posix_modes
def test_native_create_executable_leaves_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t/file").write_bytes(b"mine")
    os.chmod(tmp_path / "t/file", 0o600)
    (tmp_path / "t/dir").mkdir()
    (tmp_path / "t/link").symlink_to("file")
    with _umask(0o022), NativeFileSystem(tmp_path) as fs:
        for path in ("t/file", "t/dir", "t/link"):
            fs.create_executable(path)
    assert _mode(tmp_path / "t/file") == 0o600  # the mode is set on creation only
    assert (tmp_path / "t/file").read_bytes() == b"mine"
    assert (tmp_path / "t/dir").is_dir()
    assert (tmp_path / "t/link").is_symlink()


@posix_modes
def test_create_files_and_copies_make_executable_files_executable(tmp_path: Path) -> None:
    layout = _layout()
    with _umask(0o022), NativeFileSystem(tmp_path / "a") as fs:
        create_files(fs, layout)  # allocate "none": "t/run" is left to its first write
        assert not (tmp_path / "a/t/run").exists()
        create_files(fs, layout, allocate="sparse")  # allocated: created executable now
        fs.write("t/run", PIECE, b"z" * PIECE)
        fs.write("t/data", 0, b"d" * 100)
        with NativeFileSystem(tmp_path / "b") as destination:
            copy_files(fs, destination, layout)
    for root in ("a", "b"):
        assert _mode(tmp_path / root / "t/run") == 0o755, root
        assert _mode(tmp_path / root / "t/empty") == 0o755, root
        assert _mode(tmp_path / root / "t/data") == 0o644, root
    assert (tmp_path / "b/t/run").read_bytes() == bytes(PIECE) + b"z" * PIECE
    memory = MemoryFileSystem()
    create_files(memory, layout)  # stores no modes: the attribute is ignored
    assert memory.stat("t/run") is None
    assert memory.stat("t/empty") is not None


@posix_modes
async def test_manager_creates_a_downloaded_executable_file_executable(tmp_path: Path) -> None:
    data = b"#!/bin/sh\n" + bytes(PIECE - 10)
    files: list[Any] = [{b"length": PIECE, b"path": [b"run"], b"attr": b"x"}]
    raw: dict[bytes, Any] = {
        b"name": b"t",
        b"piece length": PIECE,
        b"files": files,
        b"pieces": hashlib.sha1(data).digest(),
    }
    info = Info.from_bytes(encode(raw))
    with _umask(0o022), trio.fail_after(10):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(info, NativeFileSystem(tmp_path))
            await disk.wait_checked(torrent)
            await disk.write_block(torrent, 0, 0, data)
            await disk.wait_idle(torrent)
            assert disk.have(torrent) == frozenset({0})
            await disk.remove_torrent(torrent)
    assert _mode(tmp_path / "t/run") == 0o755
    assert (tmp_path / "t/run").read_bytes() == data
