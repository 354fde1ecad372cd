"""The events alone keep a user's record of the pieces right: a user that keeps its own view
(a piece picker) across a move that kept files, a stop or a recheck needs no rebuild from
DiskManager.have().

The check after ``move_storage(..., existing=KEEP)`` tells each piece had and found bad as a
PieceLost, and each piece found that was not had as a good PieceVerified; the pieces in memory
a stop, a recheck or such a move drops are each a PieceDiscarded ("blocks dropped: ..."), so
that their blocks are requested again (libtorrent's picker gets back every block its storage
drops)."""

from __future__ import annotations

import errno
import os
import threading

from tests._disk_events import multi_file_info, until

from bip_disk import (
    CheckFinished,
    DiskEvent,
    DiskManager,
    ExistingFiles,
    MemoryFileSystem,
    PieceDiscarded,
    PieceLost,
    PieceVerified,
    StorageError,
    TorrentFailed,
    TorrentHandle,
    TorrentState,
    open_disk_manager,
)
from bip_disk._filesystem import Buffer

PIECE = 16384
# Stored in this order, one piece space: a = 0-1, b = 2-3, c = 4-6, d = 6-7 (6 is c's and d's).
FILES = (("a.bin", 2 * PIECE), ("b.bin", 2 * PIECE), ("c.bin", 2 * PIECE + 100), ("d.bin", PIECE))
CONTENT = {name: os.urandom(size) for name, size in FILES}
SPACE = b"".join(CONTENT[name] for name, _ in FILES)
NUM_PIECES = -(-len(SPACE) // PIECE)
INFO = multi_file_info("t", [(name, CONTENT[name]) for name, _ in FILES], PIECE)


def piece(index: int) -> bytes:
    return SPACE[index * PIECE : (index + 1) * PIECE]


def holding(*names: str) -> MemoryFileSystem:
    """A MemoryFileSystem holding the torrent's files ``names``, whole and right."""
    fs = MemoryFileSystem()
    for name in names:
        fs.write(f"t/{name}", 0, CONTENT[name])
    return fs


class FailingFileSystem(MemoryFileSystem):
    """A MemoryFileSystem whose reads of ``t/<read>`` fail with EIO, and whose writes fail
    with ENOSPC once ``full`` is set."""

    def __init__(self, read: str | None = None) -> None:
        super().__init__()
        self.failing_read = None if read is None else f"t/{read}"
        self.full = threading.Event()

    def read(self, path: str, offset: int, length: int) -> bytes:
        """Read, or fail with EIO for the failing file."""
        if path == self.failing_read:
            raise StorageError(f"read {path}: {os.strerror(errno.EIO)}", errno=errno.EIO, path=path)
        return super().read(path, offset, length)

    def write(self, path: str, offset: int, data: Buffer) -> None:
        """Write, or fail with ENOSPC once full."""
        if self.full.is_set():
            raise StorageError(
                f"write {path}: {os.strerror(errno.ENOSPC)}", errno=errno.ENOSPC, path=path
            )
        super().write(path, offset, data)


async def added(disk: DiskManager, fs: MemoryFileSystem) -> tuple[TorrentHandle, set[int]]:
    """The torrent added on ``fs`` and checked, and a user's view of it: the pieces had."""
    torrent = await disk.add_torrent(INFO, fs)
    await until(disk, CheckFinished)
    return torrent, set(disk.have(torrent))


def follow(view: set[int], events: list[DiskEvent]) -> None:
    """Update a user's view of the pieces had from the events alone."""
    for event in events:
        if isinstance(event, PieceLost):
            assert event.piece in view, event
            view.discard(event.piece)
        elif isinstance(event, PieceVerified) and event.good:
            assert event.piece not in view, event
            view.add(event.piece)


async def test_a_keep_move_tells_each_piece_it_loses_and_finds() -> None:
    old = holding("a.bin", "c.bin", "d.bin")  # b.bin missing: pieces 2, 3 not had
    new = holding("b.bin")  # kept, and right: 2, 3 found
    new.write("t/a.bin", 0, CONTENT["a.bin"][:PIECE])  # kept, half: 1 lost unread, 0 stays
    new.write("t/c.bin", 0, bytes(len(CONTENT["c.bin"])))  # kept, spoilt: 4, 5, 6 lost
    async with open_disk_manager(hash_threads=1) as disk:
        torrent, view = await added(disk, old)
        assert view == {0, 1, 4, 5, 6, 7}
        kept = await disk.move_storage(torrent, new, existing=ExistingFiles.KEEP)
        assert kept == ("t/a.bin", "t/b.bin", "t/c.bin")
        events = await until(disk, CheckFinished)
        told = [e for e in events if isinstance(e, PieceLost | PieceVerified)]
        assert told == [
            PieceLost(torrent, 1, "kept file missing or too short"),
            PieceLost(torrent, 4, "kept file differs"),
            PieceLost(torrent, 5, "kept file differs"),
            PieceLost(torrent, 6, "kept file differs"),
            PieceVerified(torrent, 2, good=True),
            PieceVerified(torrent, 3, good=True),
        ]
        assert events[-1] == CheckFinished(torrent, good=4, checked=6, resumed=True)
        follow(view, events)
        assert view == disk.have(torrent) == {0, 2, 3, 7}
        assert await disk.wait_checked(torrent) is TorrentState.READY
        # A lost piece is simply fetched again: written into the kept file.
        await disk.write_block(torrent, 4, 0, piece(4))
        assert (await until(disk, PieceVerified))[-1] == PieceVerified(torrent, 4, good=True)


async def test_a_fault_during_the_keep_check_loses_what_it_did_not_check() -> None:
    old = holding(*(name for name, _ in FILES))
    new = FailingFileSystem(read="c.bin")
    for name in ("a.bin", "c.bin"):  # kept; reading c.bin fails
        new.write(f"t/{name}", 0, CONTENT[name])
    async with open_disk_manager(hash_threads=1) as disk:
        torrent, view = await added(disk, old)
        assert view == set(range(NUM_PIECES))
        await disk.move_storage(torrent, new, existing=ExistingFiles.KEEP)
        events = await until(disk, CheckFinished)
        assert await disk.wait_checked(torrent) is TorrentState.ERROR
        [failed] = [e for e in events if isinstance(e, TorrentFailed)]
        # One batch (one thread), failed as a whole: no piece of a kept file was judged.
        reason = f"kept file not checked: {failed.reason}"
        lost = [e for e in events if isinstance(e, PieceLost)]
        assert lost == [PieceLost(torrent, index, reason) for index in (0, 1, 4, 5, 6)]
        assert events.index(failed) < events.index(lost[0])
        follow(view, events)
        assert view == disk.have(torrent)


async def test_a_stop_tells_each_piece_in_memory_it_drops() -> None:
    fs = FailingFileSystem()
    async with open_disk_manager() as disk:
        torrent, _ = await added(disk, fs)
        await disk.write_block(torrent, 0, 0, piece(0)[:1000])  # arriving, in memory
        fs.full.set()
        await disk.write_block(torrent, 3, 0, piece(3))  # complete: its write fails
        events = await until(disk, PieceDiscarded)
        events += await until(disk, PieceDiscarded)
        [failed, dropped, unwritten] = events
        assert isinstance(failed, TorrentFailed)
        assert dropped == PieceDiscarded(
            torrent, 0, f"blocks dropped: the torrent is stopped: {failed.reason}"
        )
        assert unwritten == PieceDiscarded(torrent, 3, failed.reason)
        assert disk.statistics().partial_pieces == 0
        assert disk.statistics().pieces_discarded == 1  # complete pieces only
        # Started again elsewhere, piece 0 is fetched again from its first block.
        await disk.move_storage(torrent, MemoryFileSystem())
        await disk.write_block(torrent, 0, 0, piece(0))
        assert (await until(disk, PieceVerified))[-1] == PieceVerified(torrent, 0, good=True)


async def test_a_recheck_tells_each_piece_in_memory_it_drops() -> None:
    async with open_disk_manager() as disk:
        torrent, _ = await added(disk, holding("a.bin"))
        for index in (5, 2):
            await disk.write_block(torrent, index, 0, piece(index)[:1000])
        await disk.recheck(torrent)
        events = await until(disk, CheckFinished)
        reason = "blocks dropped: the torrent is rechecked"
        assert [e for e in events if isinstance(e, PieceDiscarded)] == [
            PieceDiscarded(torrent, 2, reason),
            PieceDiscarded(torrent, 5, reason),
        ]
        assert disk.statistics().partial_pieces == 0
