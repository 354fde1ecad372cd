"""Reads of a line under way, and reads that fail, whatever happens to their callers.

The manager's I/O pool is replaced by a gated stand-in that runs each job inline once a
gate opens (cancellable while it waits for one of its "threads", not once it holds one,
as the real pool): the reads that the gate lets go finish in one scheduler pass, which
makes the races deterministic and the tests fast. Blocks asked for while their line is
read take their bytes from that read, not from the cache (which may have evicted the
line by then), a reader cancelled before or while its read runs costs its waiters
nothing, and a failed read stops the torrent and drops the pieces it lost, and tells
it, even when its caller (a peer's task) is cancelled meanwhile.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import trio
import trio.testing

from bip_disk._errors import StorageError, TorrentStateError
from bip_disk._events import DiskEvent, PieceLost, TorrentFailed, TorrentHandle, TorrentState
from bip_disk._manager import DiskManager, open_disk_manager
from bip_disk._memory import MemoryFileSystem
from bip_disk._readcache import BLOCK_BYTES
from bip_metainfo import Metainfo, create_torrent

KIB = 1024
BLOCK = BLOCK_BYTES
PIECE = 64 * KIB  # four blocks; one line with the default cache

_T = TypeVar("_T")


class CountingFileSystem(MemoryFileSystem):
    """A MemoryFileSystem that records every read: (path, offset, length)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[str, int, int]] = []

    def read(self, path: str, offset: int, length: int) -> bytes:
        self.reads.append((path, offset, length))
        return super().read(path, offset, length)


class GatedPool:
    """Stands in for the manager's I/O pool (see the module documentation)."""

    def __init__(self, threads: int) -> None:
        self.limiter = trio.CapacityLimiter(threads)
        self.gate = trio.Event()
        self.started = 0  # jobs that took a thread

    async def run(self, function: Callable[..., _T], *args: object) -> _T:
        async with self.limiter:  # cancellable while queued, as trio's threads
            self.started += 1
            # Not once it runs: the real pool waits for its thread to finish.
            with trio.CancelScope(shield=True):
                await self.gate.wait()
            return function(*args)

    async def wait_started(self, count: int) -> None:
        with trio.fail_after(5):
            while self.started < count:
                await trio.sleep(0)


async def _seeded(
    disk: DiskManager, tmp_path: Path, pieces: int, threads: int
) -> tuple[TorrentHandle, CountingFileSystem, bytes, GatedPool]:
    """A torrent of one file ``t/f`` of ``pieces`` pieces of 64 KiB, checked, on a
    CountingFileSystem (reads forgotten); the manager's I/O pool is then gated."""
    source = tmp_path / "t"
    source.mkdir()
    content = random.Random(7).randbytes(pieces * PIECE)
    (source / "f").write_bytes(content)
    metainfo: Metainfo = create_torrent(
        source, piece_length=PIECE, creation_date=None, created_by=None
    )
    fs = CountingFileSystem()
    fs.write("t/f", 0, content)
    torrent = await disk.add_torrent(metainfo, fs)
    with trio.fail_after(5):
        assert await disk.wait_checked(torrent) is TorrentState.READY
    fs.reads.clear()
    pool = GatedPool(threads)
    disk._io_pool = pool  # type: ignore[assignment]
    return torrent, fs, content, pool


def _block(content: bytes, piece: int, begin: int) -> bytes:
    return content[piece * PIECE + begin :][:BLOCK]


async def test_no_line_is_read_twice_when_more_lines_finish_than_the_cache_holds(
    tmp_path: Path,
) -> None:
    # A 256 KiB cache keeps 4 lines of 64 KiB; 8 lines finish in one scheduler pass, each
    # with 3 more blocks waiting for it. From the cache, the waiters of the 4 lines
    # evicted before they ran read them again (12 reads).
    async with open_disk_manager(read_cache_bytes=256 * KIB) as disk:
        torrent, fs, content, pool = await _seeded(disk, tmp_path, 8, threads=8)
        got: dict[tuple[int, int], bytes] = {}

        async def read(piece: int, begin: int) -> None:
            got[piece, begin] = await disk.read_block(torrent, piece, begin, BLOCK)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                for piece in range(8):
                    for begin in range(0, PIECE, BLOCK):
                        nursery.start_soon(read, piece, begin)
                await pool.wait_started(8)
                await trio.testing.wait_all_tasks_blocked()
                pool.gate.set()
        assert sorted(fs.reads) == [("t/f", piece * PIECE, PIECE) for piece in range(8)]
        assert got == {key: _block(content, *key) for key in got}
        assert len(got) == 32
        assert disk.statistics().read_cache_bytes == 256 * KIB


@pytest.mark.parametrize("queued", [False, True])
async def test_a_first_reader_cancelled_costs_its_waiters_nothing(
    tmp_path: Path, queued: bool
) -> None:
    # Cancelled while its read runs, the first reader's read still serves the waiter (and
    # the cache); cancelled while queued for a thread (held by a read of piece 1), it read
    # nothing, and the waiter reads the line instead: once, either way.
    async with open_disk_manager() as disk:
        torrent, fs, content, pool = await _seeded(disk, tmp_path, 2, threads=1)
        got: list[bytes] = []
        first = trio.CancelScope()

        async def first_reader() -> None:
            with first:
                got.append(await disk.read_block(torrent, 0, 0, BLOCK))

        async def second_reader() -> None:
            got.append(await disk.read_block(torrent, 0, BLOCK, BLOCK))

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                if queued:
                    nursery.start_soon(disk.read_block, torrent, 1, 0, BLOCK)
                    await pool.wait_started(1)
                nursery.start_soon(first_reader)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(second_reader)
                await trio.testing.wait_all_tasks_blocked()
                first.cancel()
                await trio.testing.wait_all_tasks_blocked()
                pool.gate.set()
        line = ("t/f", 0, PIECE)
        if queued:
            assert first.cancelled_caught
            assert got == [_block(content, 0, BLOCK)]
            assert fs.reads == [("t/f", PIECE, PIECE), line]
        else:
            assert not first.cancelled_caught  # a read on its thread is not abandoned
            assert sorted(got) == sorted([_block(content, 0, 0), _block(content, 0, BLOCK)])
            assert fs.reads == [line]
        assert disk.statistics().read_cache_bytes == (2 if queued else 1) * PIECE


async def test_a_failed_read_fails_its_waiters_without_reading_again(tmp_path: Path) -> None:
    async with open_disk_manager() as disk:
        torrent, fs, _, pool = await _seeded(disk, tmp_path, 2, threads=4)
        fs.truncate("t/f", PIECE + BLOCK)  # piece 1 is cut short behind our back
        outcomes: list[BaseException] = []

        async def read(begin: int) -> None:
            try:
                await disk.read_block(torrent, 1, begin, BLOCK)
            except (StorageError, TorrentStateError) as error:
                outcomes.append(error)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                for begin in range(0, PIECE, BLOCK):
                    nursery.start_soon(read, begin)
                await pool.wait_started(1)
                await trio.testing.wait_all_tasks_blocked()
                pool.gate.set()
        assert fs.reads == [("t/f", PIECE, PIECE)]
        failed = [error for error in outcomes if isinstance(error, StorageError)]
        assert len(failed) == 1
        waiters = [error for error in outcomes if isinstance(error, TorrentStateError)]
        assert len(waiters) == 3
        for error in waiters:
            assert "does not have piece 1" in str(error)
            assert error.__cause__ is failed[0]  # why: the read they waited for
        assert disk.status(torrent).state is TorrentState.ERROR
        assert disk.have(torrent) == {0}


@pytest.mark.parametrize("when", ["reading", "telling"])
async def test_a_reader_cancelled_after_its_read_failed_leaves_nothing_had_nor_cached(
    tmp_path: Path, when: str
) -> None:
    # The file is emptied: all 8 pieces are lost by one failed read. Its caller is
    # cancelled while the read runs, or once the events fill the queue (nobody takes
    # them): every lost piece is dropped from what is had and from the cache all the
    # same, the torrent stops, and every event is told, in order.
    async with open_disk_manager(event_buffer=2) as disk:
        events = disk.events()
        async with trio.open_nursery() as nursery:  # the check's events taken

            async def drain() -> None:
                async for _ in events:
                    pass

            nursery.start_soon(drain)
            torrent, fs, _, pool = await _seeded(disk, tmp_path, 8, threads=4)
            nursery.cancel_scope.cancel()
        pool.gate.set()
        for piece in (5, 6):
            await disk.read_block(torrent, piece, 0, BLOCK)  # their lines cached
        assert disk.statistics().read_cache_bytes == 2 * PIECE
        pool.gate, pool.started = trio.Event(), 0
        fs.truncate("t/f", 0)
        reader = trio.CancelScope()

        async def read() -> None:
            with reader, contextlib.suppress(StorageError):
                await disk.read_block(torrent, 0, 0, BLOCK)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                await pool.wait_started(1)
                if when == "telling":
                    pool.gate.set()
                    await trio.testing.wait_all_tasks_blocked()
                reader.cancel()
                pool.gate.set()
        assert fs.reads[-1] == ("t/f", 0, PIECE)  # the read that failed
        assert disk.status(torrent).state is TorrentState.ERROR
        assert disk.have(torrent) == set()
        assert disk.statistics().read_cache_bytes == 0
        with pytest.raises(TorrentStateError, match="does not have piece 6"):
            await disk.read_block(torrent, 6, 0, BLOCK)
        told: list[DiskEvent] = []
        with trio.fail_after(5):
            async for event in events:
                told.append(event)
                if isinstance(event, TorrentFailed):
                    break
        assert [event.piece for event in told if isinstance(event, PieceLost)] == list(range(8))
        assert isinstance(told[-1], TorrentFailed)
        assert len(told) == 9
