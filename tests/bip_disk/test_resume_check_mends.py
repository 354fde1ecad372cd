"""Regressions for a hunt in bip_disk's fast resume and checks.

1. Resume data made after a check that did not complete (a fault stopped it part way,
   also a recheck's) records no file, so that the next start hashes everything: it used to
   record every file as it was, with only the pieces hashed before the fault, and the next
   start trusted the files and hashed nothing (a complete download lost).
2. A file deleted behind our back and re-created (sparse) by a later write: the pieces it
   held are lost (``PieceLost``), not served as zeros and vouched for by resume data. Every
   FileSystem's ``write`` tells whether it had to create the file.
3. ``save_resume_data`` dates the data before it takes the pieces had: a piece written
   while the files sync (or written and not yet settled) is racy, not lost.
4. Resume data of a file dated before 1970 (a negative mtime) is read back.
5. A zero-length file whose path is now a directory (or anything else) does not stop
   the torrent: it holds no piece.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from bip_bencode import encode
from bip_disk import ExistingFiles, StorageLayout, create_files
from bip_disk._check import plan_check, stat_files
from bip_disk._errors import ResumeDataError, StorageError
from bip_disk._events import DiskEvent, PieceLost, PieceVerified, TorrentState
from bip_disk._filesystem import FileStat, FileSystem
from bip_disk._manager import DiskManager, open_disk_manager
from bip_disk._memory import MemoryFileSystem
from bip_disk._native import NativeFileSystem
from bip_disk._resume import ResumeData
from bip_metainfo import Metainfo

PIECE = 16384
HOUR_NS = 3600 * 10**9


def _torrent(files: list[tuple[str, int]], name: bytes = b"t") -> tuple[Metainfo, bytes]:
    """A torrent of ``files`` (path, length) under ``name``, and its bytes."""
    total = sum(length for _, length in files)
    data = bytes((i * 7 + 3) % 251 for i in range(total))
    hashes = b"".join(
        hashlib.sha1(data[start : start + PIECE]).digest() for start in range(0, total, PIECE)
    )
    info: dict[bytes, Any] = {b"name": name, b"piece length": PIECE, b"pieces": hashes}
    info[b"files"] = [{b"length": length, b"path": [path.encode()]} for path, length in files]
    return Metainfo.from_bytes(encode({b"info": info})), data


def _single(pieces: int) -> tuple[Metainfo, bytes]:
    """A one-file torrent ``f.bin`` of ``pieces`` pieces, and its bytes."""
    data = bytes((i * 7 + 3) % 251 for i in range(pieces * PIECE))
    hashes = b"".join(
        hashlib.sha1(data[start : start + PIECE]).digest() for start in range(0, len(data), PIECE)
    )
    info: dict[bytes, Any] = {
        b"name": b"f.bin",
        b"piece length": PIECE,
        b"length": len(data),
        b"pieces": hashes,
    }
    return Metainfo.from_bytes(encode({b"info": info})), data


def _drain(disk: DiskManager) -> list[DiskEvent]:
    events = []
    while True:
        try:
            events.append(disk.events().receive_nowait())
        except trio.WouldBlock:
            return events


async def _wait_have(disk: DiskManager, torrent: Any, pieces: set[int]) -> None:
    with trio.fail_after(10):
        while not pieces <= disk.have(torrent):
            await trio.sleep(0.005)


def _age(root: Path, *names: str) -> None:
    """Date the files an hour back: written long before any resume data (not racy)."""
    old = time.time_ns() - HOUR_NS
    for name in names:
        os.utime(root / name, ns=(old, old))


# -- 1. a check that did not complete ---------------------------------------------------------


class _FlakyRead(NativeFileSystem):
    """Reads of ``broken`` fail with EIO while ``failing`` (a transient disk fault)."""

    failing = True
    broken = "t/b"

    def read(self, path: str, offset: int, length: int) -> bytes:
        if self.failing and path == self.broken:
            raise StorageError("read failed: EIO", errno=errno.EIO, path=path)
        return super().read(path, offset, length)


def _complete_download(root: Path) -> tuple[Metainfo, bytes]:
    metainfo, data = _torrent([("a", 2 * PIECE), ("b", 2 * PIECE)])
    (root / "t").mkdir(parents=True)
    (root / "t" / "a").write_bytes(data[: 2 * PIECE])
    (root / "t" / "b").write_bytes(data[2 * PIECE :])
    _age(root, "t/a", "t/b")
    return metainfo, data


async def test_resume_data_after_a_failed_check_records_no_file(tmp_path: Path) -> None:
    metainfo, _ = _complete_download(tmp_path)
    with trio.fail_after(20):
        async with open_disk_manager(hash_threads=1) as disk:
            torrent = await disk.add_torrent(metainfo, _FlakyRead(tmp_path))
            assert await disk.wait_checked(torrent) is TorrentState.ERROR
            for made in (disk.resume_data(torrent), await disk.save_resume_data(torrent)):
                assert ResumeData.from_bytes(made).files == (None, None)
            resume = disk.resume_data(torrent)
        fixed = _FlakyRead(tmp_path)
        fixed.failing = False
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(metainfo, fixed, resume_data=resume)
            assert await disk.wait_checked(torrent) is TorrentState.READY
            assert disk.have(torrent) == {0, 1, 2, 3}  # hashed again, not trusted as absent


async def test_resume_data_after_a_failed_recheck_records_no_file(tmp_path: Path) -> None:
    metainfo, _ = _complete_download(tmp_path)
    fs = _FlakyRead(tmp_path)
    fs.failing = False
    with trio.fail_after(20):
        async with open_disk_manager(hash_threads=1) as disk:
            torrent = await disk.add_torrent(metainfo, fs)
            assert await disk.wait_checked(torrent) is TorrentState.READY
            files = ResumeData.from_bytes(disk.resume_data(torrent)).files
            assert all(stat is not None for stat in files)  # a complete check: recorded
            fs.failing = True
            await disk.recheck(torrent)
            assert await disk.wait_checked(torrent) is TorrentState.ERROR
            assert ResumeData.from_bytes(disk.resume_data(torrent)).files == (None, None)
            fs.failing = False
            await disk.recheck(torrent)  # a check that completes records them again
            assert await disk.wait_checked(torrent) is TorrentState.READY
            files = ResumeData.from_bytes(disk.resume_data(torrent)).files
            assert all(stat is not None for stat in files)


async def test_a_write_fault_after_a_complete_check_still_records_the_files(
    tmp_path: Path,
) -> None:
    class FullDisk(NativeFileSystem):
        def write(self, path: str, offset: int, data: Any) -> bool:
            raise StorageError("disk full", errno=errno.ENOSPC, path=path)

    metainfo, data = _torrent([("a", PIECE), ("b", PIECE)])
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a").write_bytes(data[:PIECE])
    _age(tmp_path, "t/a")
    with trio.fail_after(20):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(metainfo, FullDisk(tmp_path))
            await disk.wait_checked(torrent)
            await disk.write_block(torrent, 1, 0, data[PIECE:])
            with trio.fail_after(10):
                while disk.status(torrent).state is not TorrentState.ERROR:
                    await trio.sleep(0.005)
            resume = ResumeData.from_bytes(disk.resume_data(torrent))
    # The check completed: what it found stays vouched for (the fault came after). Only
    # the file the write failed on is not (review r4: the write may have created it again).
    assert resume.files[0] is not None
    assert resume.files[1] is None
    assert set(resume.have) == {0}


# -- 2. a file deleted behind our back, re-created by a write --------------------------------


def test_every_filesystem_write_tells_whether_it_created_the_file(filesystem: FileSystem) -> None:
    assert filesystem.write("t/a", 4, b"xy") is True
    assert filesystem.write("t/a", 0, b"ab") is False
    assert filesystem.write("t/a", 10, b"") is False
    filesystem.remove("t/a")
    assert filesystem.write("t/a", 0, b"") is True  # created, even by writing nothing
    assert filesystem.stat("t/a") is not None


def test_create_executable_tells_whether_it_created_the_file(tmp_path: Path) -> None:
    fs = NativeFileSystem(tmp_path)
    assert fs.create_executable("t/run") is True
    assert fs.create_executable("t/run") is False
    assert fs.write("t/run", 0, b"x") is False


def test_native_write_through_an_evicted_handle_tells_the_file_was_re_created(
    tmp_path: Path,
) -> None:
    fs = NativeFileSystem(tmp_path, max_open_files=1)
    assert fs.write("t/a", 0, b"a") is True
    assert fs.write("t/b", 0, b"b") is True  # evicts a's handle
    os.unlink(tmp_path / "t" / "a")
    assert fs.write("t/a", 1, b"a") is True
    assert fs.read("t/a", 0, 2) == b"\x00a"


_FILES = [("a", 3 * PIECE), ("b", PIECE)]


async def _download_then_delete(
    fs: FileSystem, delete: Callable[[], None]
) -> tuple[list[DiskEvent], frozenset[int], bytes]:
    """Pieces 0, 1 (file ``a``) and 3 (file ``b``) downloaded, ``a`` deleted, then piece 2
    (file ``a`` again) written: the events, what is had, and the resume data saved."""
    metainfo, data = _torrent(_FILES)
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(metainfo, fs)
        await disk.wait_checked(torrent)
        for piece in (0, 1, 3):  # in this order: b's handle is the last one opened
            await disk.write_block(torrent, piece, 0, data[piece * PIECE : (piece + 1) * PIECE])
            await _wait_have(disk, torrent, {piece})
        delete()
        await disk.write_block(torrent, 2, 0, data[2 * PIECE : 3 * PIECE])
        await _wait_have(disk, torrent, {2})
        await disk.wait_idle(torrent)
        have = disk.have(torrent)
        resume = await disk.save_resume_data(torrent)
        events = _drain(disk)
    return events, have, resume


def _lost(events: list[DiskEvent]) -> list[int]:
    return [event.piece for event in events if isinstance(event, PieceLost)]


async def test_a_file_deleted_and_re_created_by_a_write_loses_its_pieces(tmp_path: Path) -> None:
    # max_open_files=1: a's handle is evicted by b's (a torrent of more files than the cache).
    fs = NativeFileSystem(tmp_path, max_open_files=1)
    with trio.fail_after(20):
        events, have, resume = await _download_then_delete(
            fs, lambda: os.unlink(tmp_path / "t" / "a")
        )
        assert sorted(_lost(events)) == [0, 1]
        lost_at = next(i for i, e in enumerate(events) if isinstance(e, PieceLost))
        verified_2 = next(
            i for i, e in enumerate(events) if isinstance(e, PieceVerified) and e.piece == 2
        )
        assert lost_at < verified_2  # told as the write that found it gone settles
        assert have == {2, 3}
        assert set(ResumeData.from_bytes(resume).have) == {2, 3}
        async with open_disk_manager() as disk:
            metainfo = _torrent(_FILES)[0]
            torrent = await disk.add_torrent(
                metainfo, NativeFileSystem(tmp_path), resume_data=resume
            )
            await disk.wait_checked(torrent)
            assert disk.have(torrent) == {2, 3}  # piece 0 is not vouched for (zeros on disk)


@pytest.mark.parametrize("kind", ["memory", "native", "fsspec-memory", "fsspec-local", "staged"])
async def test_every_filesystem_tells_the_manager_of_a_re_created_file(
    kind: str, tmp_path: Path, filesystem_factory: Callable[[str, Path], FileSystem]
) -> None:
    fs = filesystem_factory("fsspec-staged" if kind == "staged" else kind, tmp_path / "root")
    # Through the FileSystem: its handle (native) or staged copy (fsspec) goes too.
    with trio.fail_after(20):
        events, have, _ = await _download_then_delete(fs, lambda: fs.remove("t/a"))
    fs.close()
    assert sorted(_lost(events)) == [0, 1]
    assert have == {2, 3}


async def test_a_third_party_write_that_tells_nothing_still_works() -> None:
    class Silent(MemoryFileSystem):
        def write(self, path: str, offset: int, data: Any) -> None:
            super().write(path, offset, data)

    with trio.fail_after(20):
        events, have, _ = await _download_then_delete(Silent(), lambda: None)
    assert _lost(events) == []
    assert have == {0, 1, 2, 3}


async def test_the_first_write_of_a_file_loses_nothing(tmp_path: Path) -> None:
    metainfo, data = _torrent([("a", PIECE), ("b", PIECE), ("c", PIECE)])
    with trio.fail_after(20):
        async with open_disk_manager(hash_threads=2) as disk:
            torrent = await disk.add_torrent(metainfo, NativeFileSystem(tmp_path))
            await disk.wait_checked(torrent)
            for piece in (0, 1, 2):
                await disk.write_block(torrent, piece, 0, data[piece * PIECE : (piece + 1) * PIECE])
            await _wait_have(disk, torrent, {0, 1, 2})
            assert _lost(_drain(disk)) == []


class _SlowFirstWrite(MemoryFileSystem):
    """The write that creates a file waits (on its thread, after creating it) until
    ``gate`` is set; ``entered`` tells when."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def write(self, path: str, offset: int, data: Any) -> bool | None:
        created = super().write(path, offset, data)
        if created:
            self.entered.set()
            assert self.gate.wait(10)
        return created


async def test_a_piece_written_to_a_file_another_thread_just_created_is_not_lost() -> None:
    metainfo, data = _single(3)
    fs = _SlowFirstWrite()
    with trio.fail_after(20):
        async with open_disk_manager(hash_threads=2) as disk:
            torrent = await disk.add_torrent(metainfo, fs)
            await disk.wait_checked(torrent)
            await disk.write_block(torrent, 0, 0, data[:PIECE])  # creates f.bin, then waits
            assert await trio.to_thread.run_sync(fs.entered.wait, 10)
            await disk.write_block(torrent, 1, 0, data[PIECE : 2 * PIECE])  # the other thread
            await _wait_have(disk, torrent, {1})  # settled before the creating write returns
            fs.gate.set()
            await _wait_have(disk, torrent, {0, 1})
            assert _lost(_drain(disk)) == []


# -- 3. save_resume_data dates the data before it takes the pieces ----------------------------


class _Clock:
    """``time`` for the manager, ``offset_ns`` ahead of the real clock."""

    def __init__(self) -> None:
        self.offset_ns = 0

    def time_ns(self) -> int:
        return time.time_ns() + self.offset_ns


class _SlowSync(NativeFileSystem):
    """Its sync waits (on its thread) until ``gate`` is set; ``entered`` tells when."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gating = False
        self.entered = threading.Event()
        self.gate = threading.Event()

    def sync(self, path: str | None = None) -> None:
        if self.gating:
            self.entered.set()
            assert self.gate.wait(10)
        super().sync(path)


async def test_a_piece_written_during_the_sync_of_a_save_is_racy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bip_disk import _manager

    clock = _Clock()
    monkeypatch.setattr(_manager, "time", clock)
    metainfo, data = _single(4)
    fs = _SlowSync(tmp_path)
    with trio.fail_after(20):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(metainfo, fs)
            await disk.wait_checked(torrent)
            await disk.write_block(torrent, 0, 0, data[:PIECE])
            await _wait_have(disk, torrent, {0})
            fs.gating = True
            saved: list[bytes] = []

            async def save() -> None:
                saved.append(await disk.save_resume_data(torrent))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(save)
                assert await trio.to_thread.run_sync(fs.entered.wait, 10)
                await disk.write_block(torrent, 1, 0, data[PIECE : 2 * PIECE])
                await _wait_have(disk, torrent, {1})
                clock.offset_ns = 3 * 10**9  # the sync took 3 s
                fs.gate.set()
            resume = ResumeData.from_bytes(saved[0])
    assert set(resume.have) == {0}
    assert resume.is_racy(0)  # so the next start hashes piece 1
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(metainfo, NativeFileSystem(tmp_path), resume_data=resume)
        await disk.wait_checked(torrent)
        assert disk.have(torrent) == {0, 1}


async def test_a_piece_written_and_not_yet_settled_when_saved_is_racy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of pieces is written, then settled one by one; a full event queue holds the
    rest of the batch back: written long before the save, they are not had yet."""
    from bip_disk import _manager

    clock = _Clock()
    monkeypatch.setattr(_manager, "time", clock)
    metainfo, data = _single(4)

    def block(piece: int) -> bytes:
        return data[piece * PIECE : (piece + 1) * PIECE]

    with trio.fail_after(20):
        async with open_disk_manager(hash_threads=1, event_buffer=1) as disk:
            torrent = await disk.add_torrent(metainfo, NativeFileSystem(tmp_path))
            await disk.wait_checked(torrent)
            _drain(disk)
            await disk.write_block(torrent, 0, 0, block(0))  # its verdict fills the queue
            await _wait_have(disk, torrent, {0})
            await disk.write_block(torrent, 3, 0, block(3))  # its settle waits for room
            await _wait_have(disk, torrent, {3})
            await disk.write_block(torrent, 1, 0, block(1))  # queued behind: one batch
            await disk.write_block(torrent, 2, 0, block(2))
            assert disk.events().receive_nowait().torrent == torrent  # room for piece 3's
            await _wait_have(disk, torrent, {1})  # piece 1 settled, its verdict waits
            await trio.testing.wait_all_tasks_blocked()
            assert 2 not in disk.have(torrent)  # written with piece 1, not settled
            clock.offset_ns = 3 * 10**9  # saved long after piece 2 was written
            resume = ResumeData.from_bytes(await disk.save_resume_data(torrent, sync=False))
            _drain(disk)
    assert set(resume.have) == {0, 1, 3}
    assert resume.is_racy(0)


# -- 4. a file dated before 1970 ---------------------------------------------------------------


def test_resume_data_reads_back_negative_mtimes() -> None:
    metainfo, _ = _single(2)
    info = metainfo.info
    lowest = -(1 << 63)
    for mtime in (-(10**9), lowest):
        data = ResumeData(info.info_hash, 2, frozenset({0}), (FileStat(2 * PIECE, mtime),), 5)
        raw = data.to_bytes()
        assert ResumeData.from_bytes(raw, num_pieces=2, num_files=1) == data
    too_low = raw.replace(str(lowest).encode(), str(lowest - 1).encode())
    with pytest.raises(ResumeDataError, match="out of range"):
        ResumeData.from_bytes(too_low)


async def test_a_file_dated_before_1970_is_trusted_on_restart(tmp_path: Path) -> None:
    metainfo, data = _single(2)
    (tmp_path / "f.bin").write_bytes(data)
    os.utime(tmp_path / "f.bin", ns=(-(10**9), -(10**9)))
    with trio.fail_after(20):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(metainfo, NativeFileSystem(tmp_path))
            await disk.wait_checked(torrent)
            resume = await disk.save_resume_data(torrent)
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(
                metainfo, NativeFileSystem(tmp_path), resume_data=resume, check=False
            )
            await disk.wait_checked(torrent)
            assert disk.have(torrent) == {0, 1}  # trusted without hashing


# -- 5. a zero-length file that is a directory -------------------------------------------------


async def test_an_empty_file_that_is_a_directory_does_not_stop_the_torrent(
    tmp_path: Path,
) -> None:
    metainfo, data = _torrent([("a", 2 * PIECE), ("empty", 0)])
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a").write_bytes(data)
    (tmp_path / "t" / "empty").write_bytes(b"")
    with trio.fail_after(20):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(metainfo, NativeFileSystem(tmp_path))
            assert await disk.wait_checked(torrent) is TorrentState.READY
            resume = await disk.save_resume_data(torrent)
        (tmp_path / "t" / "empty").unlink()
        (tmp_path / "t" / "empty").mkdir()
        for resume_data in (None, resume):
            async with open_disk_manager() as disk:
                torrent = await disk.add_torrent(
                    metainfo, NativeFileSystem(tmp_path), resume_data=resume_data
                )
                assert await disk.wait_checked(torrent) is TorrentState.READY
                assert disk.have(torrent) == {0, 1}
                disk.resume_data(torrent)  # stats nothing that fails either
    assert (tmp_path / "t" / "empty").is_dir()  # left alone


def test_create_files_leaves_what_is_at_an_empty_files_path(filesystem: FileSystem) -> None:
    metainfo, _ = _torrent([("a", PIECE), ("empty", 0), ("new", 0)])
    layout = StorageLayout.from_info(metainfo.info)
    filesystem.write("t/empty/inside", 0, b"x")  # t/empty is a directory
    create_files(filesystem, layout)
    assert filesystem.read("t/empty/inside", 0, 1) == b"x"
    created = filesystem.stat("t/new")
    assert created is not None
    assert created.size == 0
    plan = plan_check(filesystem, layout, None)
    assert plan.stats[1] is None
    assert stat_files(filesystem, layout)[1] is None


# -- Review r4 ----------------------------------------------------------------------------------
# 1. A write that re-creates a deleted file and then fails keeps the "created" signal: the
#    FileSystem reports it with the next write of that path that returns, and resume data made
#    after the fault (the torrent in ERROR) records no stat for the files the write touched.
# 2. A start with check=False hashes nothing: its resume data makes racy the files holding a
#    piece it left unhashed (see Final read 2), so the next start hashes those pieces.
# 3. move_storage passes over a zero-length file whose source path cannot be stat'ed (a
#    directory there), as the check does.


def _failing_once(monkeypatch: pytest.MonkeyPatch, name: str) -> list[bool]:
    """Make ``_native.<name>`` fail with ENOSPC once armed (the open before it created the
    file)."""
    from bip_disk import _native

    real = getattr(_native, name)
    armed = [False]

    def flaky(target: Any, offset: int, views: Any) -> None:
        if armed[0]:
            armed[0] = False
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        real(target, offset, views)

    monkeypatch.setattr(_native, name, flaky)
    return armed


@pytest.mark.parametrize("vectored", [False, True])
def test_native_a_failed_write_that_created_the_file_tells_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vectored: bool
) -> None:
    armed = _failing_once(monkeypatch, "_pwritev_all" if vectored else "_pwrite_all")
    fs = NativeFileSystem(tmp_path)
    armed[0] = True
    write: Callable[[], object] = (
        (lambda: fs._write_vectored("t/a", 0, [b"ab", b"cd"]))
        if vectored
        else (lambda: fs.write("t/a", 0, b"abcd"))
    )
    with pytest.raises(StorageError):
        write()
    assert (tmp_path / "t" / "a").exists()  # created before the write failed
    assert fs.write("t/a", 4, b"e") is True  # the creation is told now, once
    assert fs.write("t/a", 5, b"f") is False


def test_fsspec_in_place_a_failed_write_that_created_the_file_tells_the_next_write(
    tmp_path: Path,
) -> None:
    fsspec = pytest.importorskip("fsspec")
    from bip_disk._fsspec import FsspecFileSystem

    backend = fsspec.filesystem("file")
    fs = FsspecFileSystem(backend, str(tmp_path), random_writes=True)
    real_open = backend.open
    armed = [True]

    def failing_open(path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if armed[0] and mode == "r+b":
            armed[0] = False
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        return real_open(path, mode, **kwargs)

    backend.open = failing_open
    try:
        with pytest.raises(StorageError):
            fs.write("t/a", 0, b"abcd")
        assert (tmp_path / "t" / "a").exists()  # created before the write failed
        assert fs.write("t/a", 4, b"e") is True
        assert fs.write("t/a", 5, b"f") is False
    finally:
        del backend.open


def test_native_a_created_file_removed_by_us_is_not_told_created_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    armed = _failing_once(monkeypatch, "_pwrite_all")
    fs = NativeFileSystem(tmp_path)
    armed[0] = True
    with pytest.raises(StorageError):
        fs.write("t/a", 0, b"abcd")
    fs.remove("t/a")
    assert fs.write("t/a", 0, b"x") is True  # this write's own creation
    assert fs.write("t/a", 1, b"y") is False


async def test_resume_data_after_a_failed_re_creating_write_does_not_trust_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    armed = _failing_once(monkeypatch, "_pwrite_all")
    metainfo, data = _torrent(_FILES)
    with trio.fail_after(20):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(metainfo, NativeFileSystem(tmp_path, max_open_files=1))
            await disk.wait_checked(torrent)
            for piece in (0, 1, 3):
                await disk.write_block(torrent, piece, 0, data[piece * PIECE : (piece + 1) * PIECE])
                await _wait_have(disk, torrent, {piece})
            os.unlink(tmp_path / "t" / "a")
            armed[0] = True
            await disk.write_block(torrent, 2, 0, data[2 * PIECE : 3 * PIECE])
            with trio.fail_after(10):
                while disk.status(torrent).state is not TorrentState.ERROR:
                    await trio.sleep(0.005)
            resume = disk.resume_data(torrent)
            assert ResumeData.from_bytes(resume).files[0] is None  # a: not vouched for
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(
                metainfo, NativeFileSystem(tmp_path), resume_data=resume
            )
            await disk.wait_checked(torrent)
            assert disk.have(torrent) == {3}  # a's pieces hashed again: zeros, not had


async def test_a_start_with_check_false_makes_the_files_it_left_unhashed_racy(
    tmp_path: Path,
) -> None:
    metainfo, _ = _complete_download(tmp_path)
    with trio.fail_after(20):
        async with open_disk_manager(hash_threads=1) as disk:
            torrent = await disk.add_torrent(metainfo, _FlakyRead(tmp_path))
            assert await disk.wait_checked(torrent) is TorrentState.ERROR
            failed = disk.resume_data(torrent)
        for resume_data in (failed, None):
            async with open_disk_manager() as disk:
                torrent = await disk.add_torrent(
                    metainfo, NativeFileSystem(tmp_path), resume_data=resume_data, check=False
                )
                await disk.wait_checked(torrent)
                resume = disk.resume_data(torrent)
                loaded = ResumeData.from_bytes(resume)
                assert loaded.is_racy(0)
                assert loaded.is_racy(1)
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(
                metainfo, NativeFileSystem(tmp_path), resume_data=resume
            )
            await disk.wait_checked(torrent)
            assert disk.have(torrent) == {0, 1, 2, 3}  # found again


async def test_a_start_with_check_false_and_nothing_to_hash_completes(tmp_path: Path) -> None:
    metainfo, data = _torrent(_FILES)
    with trio.fail_after(20):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(metainfo, NativeFileSystem(tmp_path), check=False)
            await disk.wait_checked(torrent)
            await disk.write_block(torrent, 3, 0, data[3 * PIECE :])
            await _wait_have(disk, torrent, {3})
            files = ResumeData.from_bytes(disk.resume_data(torrent)).files
            assert files[1] is not None  # nothing was there to hash: the check completed


@pytest.mark.parametrize("same", [False, True])
async def test_move_storage_passes_over_an_empty_file_that_is_a_directory(
    tmp_path: Path, same: bool
) -> None:
    metainfo, data = _torrent([("a", 2 * PIECE), ("empty", 0)])
    source = tmp_path / "src"
    (source / "t").mkdir(parents=True)
    (source / "t" / "a").write_bytes(data)
    (source / "t" / "empty").mkdir()
    destination = source if same else tmp_path / "dst"
    with trio.fail_after(20):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(metainfo, NativeFileSystem(source))
            assert await disk.wait_checked(torrent) is TorrentState.READY
            await disk.move_storage(torrent, NativeFileSystem(destination))
            assert disk.status(torrent).state is TorrentState.READY
            assert disk.have(torrent) == {0, 1}
    if not same:
        assert (destination / "t" / "empty").is_file()  # made where nothing was
        assert (destination / "t" / "a").read_bytes() == data


# -- Review r8 ----------------------------------------------------------------------------------
# 1. A start with check=False completes for the files it trusted: its resume data marks only
#    the files holding pieces it left unhashed (racy since Final read 2), so repeated
#    check=False starts keep what the others vouch for.
# 2. Only a write's own creation of a file is told by a later write: allocate (after a move,
#    or with allocate="sparse") creates the file without making the next write lose pieces.
# 3. A check forgets the creations not told yet of the torrent's files: what it verified in
#    them is there, and the next write must not take them for lost.


async def test_repeated_check_false_starts_keep_the_files_they_trusted(tmp_path: Path) -> None:
    metainfo, data = _torrent([("a", 2 * PIECE), ("b", 2 * PIECE)])
    with trio.fail_after(20):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(metainfo, NativeFileSystem(tmp_path))
            await disk.wait_checked(torrent)
            for piece in (0, 1, 3):
                await disk.write_block(torrent, piece, 0, data[piece * PIECE : (piece + 1) * PIECE])
            await _wait_have(disk, torrent, {0, 1, 3})
            resume = disk.resume_data(torrent)  # both files racy: b's piece 2 to hash
        for _ in range(3):
            async with open_disk_manager() as disk:
                torrent = await disk.add_torrent(
                    metainfo, NativeFileSystem(tmp_path), resume_data=resume, check=False
                )
                await disk.wait_checked(torrent)
                resume = disk.resume_data(torrent)
            files = ResumeData.from_bytes(resume).files
            assert files[0] is not None  # a was trusted whole: vouched for again
            assert ResumeData.from_bytes(resume).is_racy(1)  # b holds piece 2, unhashed
            assert disk.have(torrent) >= {0, 1}
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(
                metainfo, NativeFileSystem(tmp_path), resume_data=resume
            )
            await disk.wait_checked(torrent)
            assert disk.have(torrent) == {0, 1, 3}  # b hashed again: its pieces found


def test_native_allocate_is_not_told_created_by_the_next_write(tmp_path: Path) -> None:
    fs = NativeFileSystem(tmp_path)
    fs.allocate("t/a", 4)
    assert fs.write("t/a", 0, b"ab") is False
    assert fs._write_vectored("t/a", 2, [b"c", b"d"]) is False
    fs.truncate("t/a", 2)
    assert fs.write("t/a", 2, b"cd") is False


async def test_writing_after_a_move_to_allocated_files_loses_nothing(tmp_path: Path) -> None:
    # Piece 2, b's first, all zeros: the move copies no chunk of b, and allocate creates it.
    _, made = _torrent([("a", 2 * PIECE), ("b", 2 * PIECE)])
    data = made[: 2 * PIECE] + bytes(PIECE) + made[3 * PIECE :]
    hashes = b"".join(
        hashlib.sha1(data[at : at + PIECE]).digest() for at in range(0, 4 * PIECE, PIECE)
    )
    files = [{b"length": 2 * PIECE, b"path": [name]} for name in (b"a", b"b")]
    info: dict[bytes, Any] = {
        b"name": b"t",
        b"piece length": PIECE,
        b"pieces": hashes,
        b"files": files,
    }
    metainfo = Metainfo.from_bytes(encode({b"info": info}))
    with trio.fail_after(20):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(metainfo, NativeFileSystem(tmp_path / "src"))
            await disk.wait_checked(torrent)
            for piece in (0, 1, 2):
                await disk.write_block(torrent, piece, 0, data[piece * PIECE : (piece + 1) * PIECE])
            await _wait_have(disk, torrent, {0, 1, 2})
            await disk.move_storage(torrent, NativeFileSystem(tmp_path / "dst"))
            await disk.wait_checked(torrent)
            _drain(disk)
            await disk.write_block(torrent, 3, 0, data[3 * PIECE :])
            await _wait_have(disk, torrent, {3})
            assert _lost(_drain(disk)) == []
            assert disk.have(torrent) == {0, 1, 2, 3}


async def test_a_recheck_forgets_a_creation_a_failed_write_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    armed = _failing_once(monkeypatch, "_pwrite_all")
    metainfo, data = _torrent([("a", 2 * PIECE), ("b", 2 * PIECE)])
    fs = NativeFileSystem(tmp_path)
    with trio.fail_after(20):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(metainfo, fs)
            await disk.wait_checked(torrent)
            armed[0] = True
            await disk.write_block(torrent, 2, 0, data[2 * PIECE : 3 * PIECE])
            with trio.fail_after(10):
                while disk.status(torrent).state is not TorrentState.ERROR:
                    await trio.sleep(0.005)
            assert (tmp_path / "t" / "b").exists()  # created, then the write failed
            with (tmp_path / "t" / "b").open("r+b") as file:
                file.write(data[2 * PIECE : 3 * PIECE])  # piece 2 put there meanwhile
            await disk.recheck(torrent)
            await disk.wait_checked(torrent)
            assert disk.have(torrent) == {2}
            _drain(disk)
            await disk.write_block(torrent, 3, 0, data[3 * PIECE :])
            await _wait_have(disk, torrent, {3})
            assert _lost(_drain(disk)) == []
            assert disk.have(torrent) == {2, 3}


def test_fsspec_in_place_forget_created_drops_an_untold_creation(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    from bip_disk._fsspec import FsspecFileSystem

    backend = fsspec.filesystem("file")
    fs = FsspecFileSystem(backend, str(tmp_path), random_writes=True)
    fs.allocate("t/a", 4)
    assert fs.write("t/a", 0, b"ab") is False  # allocate's creation is no write's
    real_open = backend.open
    armed = [True]

    def failing_open(path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if armed[0] and mode == "r+b":
            armed[0] = False
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        return real_open(path, mode, **kwargs)

    backend.open = failing_open
    try:
        with pytest.raises(StorageError):
            fs.write("t/b", 0, b"abcd")
    finally:
        del backend.open
    fs.forget_created(["t/b"])
    assert fs.write("t/b", 0, b"abcd") is False


# -- Final read -----------------------------------------------------------------------------------
# 1. The check after a KEEP move hashes only the kept files: it completes no check the torrent
#    had not (a fault stopped the last part way), and vouches again only for the kept files.
# 2. A start with check=False dates its resume data so that the files holding a piece it left
#    unhashed are racy: the next start trusts their listed pieces and hashes the others.
# 3. forget_created walks no path while no creation is pending (a check of many files started
#    on the event loop).


async def test_a_keep_move_does_not_complete_a_check_a_fault_stopped(tmp_path: Path) -> None:
    metainfo, data = _torrent([("a", 2 * PIECE), ("b", 2 * PIECE), ("c", 2 * PIECE)])
    source, destination = tmp_path / "src", tmp_path / "dst"
    for root in (source, destination):
        (root / "t").mkdir(parents=True)
    for index, name in enumerate("abc"):
        (source / "t" / name).write_bytes(data[2 * PIECE * index : 2 * PIECE * (index + 1)])
    (destination / "t" / "a").write_bytes(data[: 2 * PIECE])  # kept by the move
    _age(source, "t/a", "t/b", "t/c")
    _age(destination, "t/a")
    with trio.fail_after(20):
        async with open_disk_manager(hash_threads=1) as disk:
            fs = _FlakyRead(source)
            torrent = await disk.add_torrent(metainfo, fs)
            assert await disk.wait_checked(torrent) is TorrentState.ERROR
            fs.failing = False
            await disk.move_storage(
                torrent, NativeFileSystem(destination), existing=ExistingFiles.KEEP
            )
            await disk.wait_checked(torrent)
            _age(destination, "t/b", "t/c")
            resume = disk.resume_data(torrent)
        assert ResumeData.from_bytes(resume).files == (None, None, None)
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(
                metainfo, NativeFileSystem(destination), resume_data=resume
            )
            await disk.wait_checked(torrent)
            assert disk.have(torrent) == set(range(6))


async def test_a_keep_move_keeps_the_files_a_check_false_start_left_unhashed_racy(
    tmp_path: Path,
) -> None:
    metainfo, data = _complete_download(tmp_path / "src")
    destination = tmp_path / "dst"
    (destination / "t").mkdir(parents=True)
    (destination / "t" / "a").write_bytes(data[: 2 * PIECE])
    _age(destination, "t/a")
    with trio.fail_after(20):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(
                metainfo, NativeFileSystem(tmp_path / "src"), check=False
            )
            await disk.wait_checked(torrent)
            await disk.move_storage(
                torrent, NativeFileSystem(destination), existing=ExistingFiles.KEEP
            )
            await disk.wait_checked(torrent)
            assert disk.have(torrent) == {0, 1}  # a hashed, b never
            _age(destination, "t/b")
            resume = ResumeData.from_bytes(disk.resume_data(torrent))
        assert resume.is_racy(1)  # b: its pieces are hashed next time
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(
                metainfo, NativeFileSystem(destination), resume_data=resume.to_bytes()
            )
            await disk.wait_checked(torrent)
            assert disk.have(torrent) == {0, 1, 2, 3}


async def test_repeated_check_false_starts_keep_the_listed_pieces_of_unhashed_files(
    tmp_path: Path,
) -> None:
    metainfo, data = _torrent([("a", 2 * PIECE), ("b", 2 * PIECE)])
    with trio.fail_after(20):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(metainfo, NativeFileSystem(tmp_path), check=False)
            await disk.wait_checked(torrent)
            for piece in (0, 1, 3):
                await disk.write_block(torrent, piece, 0, data[piece * PIECE : (piece + 1) * PIECE])
            await _wait_have(disk, torrent, {0, 1, 3})
            resume = disk.resume_data(torrent)
        for _ in range(3):
            async with open_disk_manager() as disk:
                torrent = await disk.add_torrent(
                    metainfo, NativeFileSystem(tmp_path), resume_data=resume, check=False
                )
                await disk.wait_checked(torrent)
                assert disk.have(torrent) == {0, 1, 3}
                resume = disk.resume_data(torrent)
            assert ResumeData.from_bytes(resume).is_racy(1)  # b holds piece 2, unhashed
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(
                metainfo, NativeFileSystem(tmp_path), resume_data=resume
            )
            await disk.wait_checked(torrent)
            assert disk.have(torrent) == {0, 1, 3}  # piece 2 hashed (a hole), 3 trusted


class _NoPath:
    """Paths that fail the test once walked."""

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("walked though no creation is pending")


def test_forget_created_walks_no_path_with_none_pending(tmp_path: Path) -> None:
    NativeFileSystem(tmp_path).forget_created(_NoPath())
    fsspec = pytest.importorskip("fsspec")
    from bip_disk._fsspec import FsspecFileSystem

    FsspecFileSystem(fsspec.filesystem("memory"), "/b").forget_created(_NoPath())
