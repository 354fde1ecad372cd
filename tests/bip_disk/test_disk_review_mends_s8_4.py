"""Regressions for a review of bip_disk: a torrent whose removal deletes its files (also a
moving torrent's copy) cannot be added again until they are deleted; BEP 47 executable
files are created executable by their first write, not up front (an untouched one is never
created), but for empty and allocated ones."""

from __future__ import annotations

import functools
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
from bip_disk import TorrentState, TorrentStateError
from bip_disk._manager import open_disk_manager
from bip_disk._memory import MemoryFileSystem
from bip_disk._native import NativeFileSystem
from bip_metainfo import Info

PIECE = 16384

posix_modes = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


def _torrent(files: list[tuple[str, int, bool]]) -> tuple[Info, bytes]:
    """A multi-file torrent ``t`` of ``(name, length, executable)`` files, and its bytes
    (each file starts on a piece boundary, so that a piece touches one file)."""
    data = b"".join(bytes([i + 1]) * length for i, (_, length, _) in enumerate(files))
    entries: list[Any] = [
        {b"length": length, b"path": [name.encode()], **({b"attr": b"x"} if x else {})}
        for name, length, x in files
    ]
    starts = range(0, len(data), PIECE)
    hashes = b"".join(hashlib.sha1(data[start : start + PIECE]).digest() for start in starts)
    raw: dict[bytes, Any] = {
        b"name": b"t",
        b"piece length": PIECE,
        b"files": entries,
        b"pieces": hashes,
    }
    return Info.from_bytes(encode(raw)), data


# -- 1. adding a torrent again while its removal deletes its files ---------------------------


class _GatedRemove(MemoryFileSystem):
    """Its removals of the file ``t/a`` wait (on their thread) until ``gate`` is set;
    ``entered`` tells when one is waiting. Its syncs with no path wait likewise at
    ``sync_gate`` once ``hold_sync`` is set (``sync_entered``)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.hold_sync = False
        self.sync_entered = threading.Event()
        self.sync_gate = threading.Event()

    def remove(self, path: str) -> None:
        if path == "t/a":
            self.entered.set()
            assert self.gate.wait(5)  # bounded: a failing test does not hang
        super().remove(path)

    def sync(self, path: str | None = None) -> None:
        if path is None and self.hold_sync:
            self.sync_entered.set()
            assert self.sync_gate.wait(5)
        super().sync(path)


async def test_adding_again_while_the_removal_deletes_the_files_is_refused() -> None:
    info, data = _torrent([("a", PIECE, False)])
    fs = _GatedRemove()
    fs.write("t/a", 0, data)
    with trio.fail_after(10):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(info, fs)
            await disk.wait_checked(torrent)
            assert disk.have(torrent) == frozenset({0})
            remove_deleting = functools.partial(disk.remove_torrent, delete_data=True)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(remove_deleting, torrent)
                assert await trio.to_thread.run_sync(fs.entered.wait, 5)
                # It used to be accepted, check READY with every piece, and then lose the
                # file under it as the old removal's deletion went on.
                with pytest.raises(TorrentStateError, match="being deleted"):
                    await disk.add_torrent(info, fs)
                with pytest.raises(TorrentStateError, match="being deleted"):
                    await disk.delete_files(info, fs)
                fs.gate.set()
            # Deleted: adding it again now finds nothing.
            again = await disk.add_torrent(info, fs)
            await disk.wait_checked(again)
            assert disk.have(again) == frozenset()


async def test_adding_again_while_the_removal_deletes_a_moves_copy_is_refused() -> None:
    info, data = _torrent([("a", PIECE, False)])
    old, new = MemoryFileSystem(), _GatedRemove()
    old.write("t/a", 0, data)
    new.hold_sync = True
    refused: list[BaseException] = []
    with trio.fail_after(10):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(info, old)
            await disk.wait_checked(torrent)
            remove_deleting = functools.partial(disk.remove_torrent, delete_data=True)

            async def move() -> None:
                try:
                    await disk.move_storage(torrent, new)
                except TorrentStateError as error:
                    refused.append(error)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(move)
                # The copy is written, past its last look at stop: the removal cannot
                # stop it, and the move deletes the copy once it ends.
                assert await trio.to_thread.run_sync(new.sync_entered.wait, 5)
                nursery.start_soon(remove_deleting, torrent)
                await trio.testing.wait_all_tasks_blocked()
                new.sync_gate.set()
                assert await trio.to_thread.run_sync(new.entered.wait, 5)
                # The copy's deletion is under way (the removal waits for it, then deletes
                # the old files): the torrent must not be added there meanwhile.
                with pytest.raises(TorrentStateError, match="being deleted"):
                    await disk.add_torrent(info, new)
                new.gate.set()
    assert len(refused) == 1
    assert old.stat("t/a") is None
    assert new.stat("t/a") is None


# -- 2. executable files created by their first write ---------------------------------------


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


_FILES = [
    ("run", PIECE, True),
    ("skipped", PIECE, True),  # never written to: deselected, say
    ("empty", 0, True),
    ("data", PIECE, False),
]


@posix_modes
async def test_an_untouched_executable_file_is_not_created(tmp_path: Path) -> None:
    info, data = _torrent(_FILES)
    with _umask(0o022), trio.fail_after(10):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(info, NativeFileSystem(tmp_path))
            await disk.wait_checked(torrent)
            # Created right after the check, before anything was written, it used to be
            # there, empty, for a file the user deselected.
            assert not (tmp_path / "t/skipped").exists()
            assert not (tmp_path / "t/run").exists()
            assert _mode(tmp_path / "t/empty") == 0o755  # empty ones are created up front
            for piece in (0, 2):  # "run" and "data"
                await disk.write_block(torrent, piece, 0, data[piece * PIECE : (piece + 1) * PIECE])
            await disk.wait_idle(torrent)
            assert disk.have(torrent) == frozenset({0, 2})
            await disk.remove_torrent(torrent)
    assert _mode(tmp_path / "t/run") == 0o755  # created executable by its first write
    assert (tmp_path / "t/run").read_bytes() == data[:PIECE]
    assert _mode(tmp_path / "t/data") == 0o644
    assert not (tmp_path / "t/skipped").exists()


@posix_modes
async def test_allocated_executable_files_are_created_up_front(tmp_path: Path) -> None:
    info, _ = _torrent(_FILES)
    with _umask(0o022), trio.fail_after(10):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(info, NativeFileSystem(tmp_path), allocate="sparse")
            await disk.wait_checked(torrent)
            await disk.remove_torrent(torrent)
    for name in ("run", "skipped", "empty"):
        assert _mode(tmp_path / "t" / name) == 0o755, name
    assert (tmp_path / "t/skipped").stat().st_size == PIECE
    assert _mode(tmp_path / "t/data") == 0o644


@posix_modes
async def test_an_executable_file_first_written_after_a_move_is_executable(
    tmp_path: Path,
) -> None:
    info, data = _torrent(_FILES)
    with _umask(0o022), trio.fail_after(10):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(info, MemoryFileSystem())  # no modes there
            await disk.wait_checked(torrent)
            await disk.write_block(torrent, 0, 0, data[:PIECE])
            await disk.wait_idle(torrent)
            await disk.move_storage(torrent, NativeFileSystem(tmp_path))
            assert _mode(tmp_path / "t/run") == 0o755  # the copy creates it executable
            assert not (tmp_path / "t/skipped").exists()  # nothing to copy
            await disk.write_block(torrent, 1, 0, data[PIECE : 2 * PIECE])
            await disk.wait_idle(torrent)
            assert disk.have(torrent) == frozenset({0, 1})
            await disk.remove_torrent(torrent)
    assert _mode(tmp_path / "t/skipped") == 0o755
    assert (tmp_path / "t/skipped").read_bytes() == data[PIECE : 2 * PIECE]


class _NoExecutables(NativeFileSystem):
    """Cannot create executable files (say, a folder the user may not write)."""

    def create_executable(self, path: str) -> None:
        raise PermissionError(13, "denied", path)


async def test_failing_to_create_an_executable_file_fails_its_write(tmp_path: Path) -> None:
    info, data = _torrent(_FILES[:1])
    with trio.fail_after(10):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(info, _NoExecutables(tmp_path))
            await disk.wait_checked(torrent)
            await disk.write_block(torrent, 0, 0, data)
            await disk.wait_idle(torrent)
            status = disk.status(torrent)
            assert status.state is TorrentState.ERROR  # a write fault stops the torrent
            assert status.have == 0
            await disk.remove_torrent(torrent)
    assert not (tmp_path / "t/run").exists()  # not written into being 0o666 instead
