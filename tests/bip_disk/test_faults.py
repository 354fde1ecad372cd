"""Storage faults are events, not crashes: disk full, permission denied, I/O errors,
files truncated or deleted behind our back. Verified data stays verified; nothing
half written is ever reported good."""

from __future__ import annotations

import errno
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from bip_disk._errors import StorageError, TorrentStateError
from bip_disk._events import (
    CheckFinished,
    DiskEvent,
    PieceDiscarded,
    PieceLost,
    PieceVerified,
    TorrentFailed,
    TorrentState,
)
from bip_disk._filesystem import Buffer, FileStat, FileSystem
from bip_disk._manager import DiskManager, open_disk_manager
from bip_disk._memory import MemoryFileSystem
from bip_disk._resume import ResumeData
from bip_metainfo import Metainfo, create_torrent

PIECE = 16384


class FaultyFileSystem:
    """Wraps a FileSystem; writes fail with ``errno`` once ``budget`` bytes were written,
    and any call named in ``failing`` fails with its errno (or raises ``raw`` as is)."""

    def __init__(self, inner: FileSystem, *, budget: int | None = None) -> None:
        self.inner = inner
        self.budget = budget
        self.write_errno = errno.ENOSPC
        self.written = 0
        self.failing: dict[str, int] = {}
        self.raw: BaseException | None = None
        self._lock = threading.Lock()

    def _maybe_fail(self, operation: str, path: str | None) -> None:
        if operation in self.failing:
            code = self.failing[operation]
            if self.raw is not None:
                raise self.raw
            raise StorageError(f"{operation} {path}: {os.strerror(code)}", errno=code, path=path)

    def read(self, path: str, offset: int, length: int) -> bytes:
        self._maybe_fail("read", path)
        return self.inner.read(path, offset, length)

    def write(self, path: str, offset: int, data: Buffer) -> None:
        self._maybe_fail("write", path)
        length = memoryview(data).nbytes
        with self._lock:
            if self.budget is not None and self.written + length > self.budget:
                # Half of what fits is written, as a real disk filling up would leave it.
                room = max(0, self.budget - self.written)
                self.inner.write(path, offset, memoryview(data)[: room // 2])
                self.written += room // 2
                code = self.write_errno
                raise StorageError(f"write {path}: {os.strerror(code)}", errno=code, path=path)
            self.written += length
        self.inner.write(path, offset, data)

    def size(self, path: str) -> int | None:
        return self.inner.size(path)

    def stat(self, path: str) -> FileStat | None:
        self._maybe_fail("stat", path)
        return self.inner.stat(path)

    def allocate(self, path: str, size: int, *, sparse: bool = True) -> None:
        self._maybe_fail("allocate", path)
        self.inner.allocate(path, size, sparse=sparse)

    def truncate(self, path: str, size: int) -> None:
        self.inner.truncate(path, size)

    def sync(self, path: str | None = None) -> None:
        self._maybe_fail("sync", path)
        self.inner.sync(path)

    def remove(self, path: str) -> None:
        self.inner.remove(path)

    def rename(self, old: str, new: str) -> None:
        self.inner.rename(old, new)

    def symlink(self, path: str, target: str) -> None:
        self._maybe_fail("symlink", path)
        self.inner.symlink(path, target)

    def close(self) -> None:
        self.inner.close()


def make(tmp_path: Path, pieces: int = 12, version: str = "v1") -> tuple[Metainfo, bytes]:
    root = tmp_path / "source" / "t"
    root.mkdir(parents=True)
    rng = random.Random(7)
    # Two files, so a fault in one leaves the other's pieces alone.
    half = pieces // 2 * PIECE
    content = rng.randbytes(pieces * PIECE - 100)
    (root / "a").write_bytes(content[:half])
    (root / "b").write_bytes(content[half:])
    metainfo = create_torrent(
        root,
        version=version,  # type: ignore[arg-type]
        piece_length=PIECE,
        creation_date=None,
        created_by=None,
    )
    return metainfo, content


def piece_of(content: bytes, index: int) -> bytes:
    return content[index * PIECE : (index + 1) * PIECE]


async def events_until(
    disk: DiskManager, until: Callable[[DiskEvent], bool], into: list[DiskEvent]
) -> list[DiskEvent]:
    with trio.fail_after(30):
        async for event in disk.events():
            into.append(event)
            if until(event):
                return into
    raise AssertionError("the event stream ended")


def good_pieces(events: list[DiskEvent]) -> set[int]:
    return {e.piece for e in events if isinstance(e, PieceVerified) and e.good}


@pytest.mark.parametrize(
    ("code", "make_fs"),
    [
        (errno.ENOSPC, lambda: MemoryFileSystem(capacity=4 * PIECE)),  # a real full "disk"
        (errno.ENOSPC, lambda: FaultyFileSystem(MemoryFileSystem(), budget=4 * PIECE + 100)),
        (errno.EIO, None),
        (errno.EACCES, None),
    ],
)
async def test_a_failed_write_stops_the_torrent_and_keeps_verified_pieces(
    tmp_path: Path, code: int, make_fs: Callable[[], FileSystem] | None
) -> None:
    metainfo, content = make(tmp_path)
    if make_fs is None:
        faulty = FaultyFileSystem(MemoryFileSystem(), budget=4 * PIECE + 100)
        faulty.write_errno = code
        fs: FileSystem = faulty
    else:
        fs = make_fs()
    events: list[DiskEvent] = []
    written: set[int] = set()
    async with open_disk_manager(hash_threads=1) as disk:
        torrent = await disk.add_torrent(metainfo, fs)
        await disk.wait_checked(torrent)
        for index in range(metainfo.info.num_pieces):
            if disk.status(torrent).state is TorrentState.ERROR:
                break
            await disk.write_block(torrent, index, 0, piece_of(content, index))
            written.add(index)
        await events_until(disk, lambda e: isinstance(e, TorrentFailed), events)
        fault = events[-1]
        assert isinstance(fault, TorrentFailed)
        assert isinstance(fault.error, StorageError)
        assert fault.error.errno == code
        assert "writing piece 4 failed" in fault.reason
        good = good_pieces(events)
        assert good == {0, 1, 2, 3}
        assert 4 not in verified_pieces(events)  # not bad data
        # Every piece written has its verdict: the failed one and those queued after it
        # were not stored (the fault came first, once), and are to fetch again.
        await events_until(
            disk, lambda _: verified_pieces(events) | discarded_pieces(events) >= written, events
        )
        assert discarded_pieces(events) == written - good
        assert 4 in discarded_pieces(events)
        assert not of_type_failed(events[events.index(fault) + 1 :])
        reasons = {e.piece: e.reason for e in events if isinstance(e, PieceDiscarded)}
        assert reasons[4].startswith("writing piece 4 failed")
        # Those after it: written in the same batch (and failed too), or dropped once stopped.
        for piece, reason in reasons.items():
            assert reason.startswith(
                (f"writing piece {piece} failed", "not written: the torrent is stopped: writing")
            ), reason
        status = disk.status(torrent)
        assert status.state is TorrentState.ERROR
        assert status.error is fault.error
        assert status.partial_pieces == 0
        await disk.wait_idle(torrent)  # the pieces queued after the fault are dropped
        assert disk.statistics().in_flight_bytes == 0
        with pytest.raises(TorrentStateError, match="stopped"):
            await disk.write_block(torrent, 5, 0, piece_of(content, 5))
        # Verified pieces are still served and listed in resume data; the failed one is not.
        assert disk.have(torrent) == good
        assert await disk.read_block(torrent, 3, 0, 10) == piece_of(content, 3)[:10]
        resume = ResumeData.from_bytes(disk.resume_data(torrent))
        assert resume.have == good
        # Once there is room again, a recheck starts the torrent again.
        if isinstance(fs, FaultyFileSystem):
            fs.budget = None
        else:
            fs = MemoryFileSystem()
            await disk.move_storage(torrent, fs)
            assert disk.status(torrent).state is TorrentState.READY
        if disk.status(torrent).state is TorrentState.ERROR:
            await disk.recheck(torrent)
            assert await disk.wait_checked(torrent) is TorrentState.READY
            assert disk.have(torrent) == good
        for index in range(4, metainfo.info.num_pieces):
            await disk.write_block(torrent, index, 0, piece_of(content, index))
        await events_until(
            disk, lambda _: len(good_pieces(events)) == metainfo.info.num_pieces, events
        )
        assert disk.have(torrent) == frozenset(range(metainfo.info.num_pieces))


def verified_pieces(events: list[DiskEvent]) -> set[int]:
    return {e.piece for e in events if isinstance(e, PieceVerified)}


def discarded_pieces(events: list[DiskEvent]) -> set[int]:
    return {e.piece for e in events if isinstance(e, PieceDiscarded)}


def of_type_failed(events: list[DiskEvent]) -> list[TorrentFailed]:
    return [e for e in events if isinstance(e, TorrentFailed)]


async def test_an_oserror_from_a_third_party_filesystem_is_a_fault_not_a_crash(
    tmp_path: Path,
) -> None:
    metainfo, content = make(tmp_path)
    fs = FaultyFileSystem(MemoryFileSystem())
    fs.failing["write"] = errno.EIO
    fs.raw = OSError(errno.EIO, "bus error")
    events: list[DiskEvent] = []
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(metainfo, fs)
        await disk.wait_checked(torrent)
        await disk.write_block(torrent, 0, 0, piece_of(content, 0))
        await events_until(disk, lambda e: isinstance(e, TorrentFailed), events)
        error = events[-1]
        assert isinstance(error, TorrentFailed)
        assert isinstance(error.error, StorageError)
        assert error.error.errno == errno.EIO
        assert disk.have(torrent) == set()


@pytest.mark.parametrize("how", ["truncated", "deleted"])
async def test_a_file_changed_behind_our_back_loses_its_pieces_on_read(
    tmp_path: Path, how: str
) -> None:
    metainfo, content = make(tmp_path)
    fs = MemoryFileSystem()
    events: list[DiskEvent] = []
    count = metainfo.info.num_pieces
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(metainfo, fs)
        await disk.wait_checked(torrent)
        for index in range(count):
            await disk.write_block(torrent, index, 0, piece_of(content, index))
        await events_until(disk, lambda _: len(good_pieces(events)) == count, events)
        # t/a holds pieces 0..5: cut it after piece 2, or delete it.
        if how == "truncated":
            fs.truncate("t/a", 3 * PIECE + 10)
            lost = {3, 4, 5}
        else:
            fs.remove("t/a")
            lost = {0, 1, 2, 3, 4, 5}
        with pytest.raises(StorageError):
            await disk.read_block(torrent, 4, 0, 100)
        await events_until(disk, lambda e: isinstance(e, TorrentFailed), events)
        assert {e.piece for e in events if isinstance(e, PieceLost)} == lost
        assert disk.have(torrent) == frozenset(range(count)) - lost
        assert disk.status(torrent).state is TorrentState.ERROR
        assert ResumeData.from_bytes(disk.resume_data(torrent)).have == disk.have(torrent)
        # The other file's pieces are still served; writes are refused.
        assert await disk.read_block(torrent, 7, 0, 5) == piece_of(content, 7)[:5]
        with pytest.raises(TorrentStateError, match="does not have piece 4"):
            await disk.read_block(torrent, 4, 0, 100)
        with pytest.raises(TorrentStateError, match="stopped"):
            await disk.write_block(torrent, 4, 0, piece_of(content, 4))


async def test_a_read_error_in_the_check_stops_the_torrent(tmp_path: Path) -> None:
    metainfo, content = make(tmp_path)
    inner = MemoryFileSystem()
    inner.write("t/a", 0, content[: 6 * PIECE])
    fs = FaultyFileSystem(inner)
    fs.failing["read"] = errno.EACCES
    events: list[DiskEvent] = []
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(metainfo, fs)
        await events_until(disk, lambda e: isinstance(e, CheckFinished), events)
        errors = [e for e in events if isinstance(e, TorrentFailed)]
        assert len(errors) == 1
        assert "checking the files failed" in errors[0].reason
        assert disk.status(torrent).state is TorrentState.ERROR
        fs.failing.clear()
        await disk.recheck(torrent)
        assert await disk.wait_checked(torrent) is TorrentState.READY
        assert disk.have(torrent) == frozenset(range(6))


async def test_a_stat_error_in_the_check_stops_the_torrent(tmp_path: Path) -> None:
    metainfo, _ = make(tmp_path)
    fs = FaultyFileSystem(MemoryFileSystem())
    fs.failing["stat"] = errno.EIO
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(metainfo, fs)
        assert await disk.wait_checked(torrent) is TorrentState.ERROR
        with pytest.raises(StorageError):
            disk.resume_data(torrent)
        with pytest.raises(StorageError):
            await disk.save_resume_data(torrent)


async def test_files_that_cannot_be_created_stop_the_torrent_links_only_warn(
    tmp_path: Path,
) -> None:
    root = tmp_path / "source" / "t"
    root.mkdir(parents=True)
    (root / "data").write_bytes(b"d" * 100)
    (root / "empty").write_bytes(b"")
    (root / "link").symlink_to("data")
    metainfo = create_torrent(root, version="v1", creation_date=None, created_by=None)
    fs = FaultyFileSystem(MemoryFileSystem())
    fs.failing["symlink"] = errno.ENOTSUP
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(metainfo, fs)
        events: list[DiskEvent] = []
        await events_until(disk, lambda e: isinstance(e, CheckFinished), events)
        assert [type(e).__name__ for e in events] == ["StorageProblem", "CheckFinished"]
        assert disk.status(torrent).state is TorrentState.READY
        await disk.remove_torrent(torrent)
        fs.failing = {"allocate": errno.EACCES}
        torrent = await disk.add_torrent(metainfo, fs, allocate="sparse")
        assert await disk.wait_checked(torrent) is TorrentState.ERROR
        assert "creating the files failed" in (disk.status(torrent).reason or "")


async def test_sync_failures_on_remove_and_close_are_warnings(tmp_path: Path) -> None:
    metainfo, _ = make(tmp_path)
    fs = FaultyFileSystem(MemoryFileSystem())
    fs.failing["sync"] = errno.EIO
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(metainfo, fs)
        await disk.wait_checked(torrent)
        await disk.remove_torrent(torrent)
        events: list[DiskEvent] = []
        await events_until(disk, lambda e: type(e).__name__ == "TorrentRemoved", events)
        assert [type(e).__name__ for e in events] == [
            "CheckFinished",
            "StorageProblem",
            "TorrentRemoved",
        ]
        await disk.add_torrent(metainfo, fs)
    # The second torrent's check is stopped by the close: only the sync warning.
    assert [type(e).__name__ async for e in disk.events()] == ["StorageProblem"]


async def test_a_failed_move_leaves_the_torrent_where_it_was(tmp_path: Path) -> None:
    metainfo, content = make(tmp_path)
    fs = MemoryFileSystem()
    destination = FaultyFileSystem(MemoryFileSystem())
    destination.failing["write"] = errno.ENOSPC
    events: list[DiskEvent] = []
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(metainfo, fs)
        await disk.wait_checked(torrent)
        await disk.write_block(torrent, 0, 0, piece_of(content, 0))
        await events_until(disk, lambda e: isinstance(e, PieceVerified), events)
        with pytest.raises(StorageError):
            await disk.move_storage(torrent, destination)
        assert disk.status(torrent).state is TorrentState.READY
        assert await disk.read_block(torrent, 0, 0, 10) == content[:10]
        assert fs.read("t/a", 0, 10) == content[:10]  # the old storage is untouched
