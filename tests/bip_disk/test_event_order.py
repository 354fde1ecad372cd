"""Each torrent's events keep their order when the event queue is full.

A move or a recheck decides its outcome at once and tells it without waiting (the blocks it
dropped from memory, each a PieceDiscarded "blocks dropped: ..."): what the queue has no room
for goes out from a task of the manager's. The check that follows emits from its own task;
its events must come after those, or a user following the events drops a piece the check told
it was verified. And the changes the check after a KEEP move found, still waiting to be told
when a fault stopped it, are not told once a recheck has taken the torrent over.

The last tests drive the manager's own sends (``_emit_later``, ``_emit``) behind a backlog:
what is emitted while it waits joins its end, so that the queue gets the events in the order
they were emitted, whichever task emits them, and a send cancelled while it waits never
happens.

Every test runs with ``event_buffer=1``: one event not taken fills the queue.
"""

from __future__ import annotations

import errno
import os

import trio
import trio.testing
from tests._disk_events import multi_file_info, until

from bip_disk import (
    CheckFinished,
    CheckProgress,
    DiskEvent,
    DiskManager,
    ExistingFiles,
    FileStat,
    MemoryFileSystem,
    PieceDiscarded,
    PieceLost,
    PieceVerified,
    StorageError,
    StorageMoved,
    TorrentFailed,
    TorrentHandle,
    TorrentState,
    open_disk_manager,
)

PIECE = 16384
BAD = 3  # b.bin's first pieces hold zeros in the new storage: 1..3 bad, 4..8 good
A = os.urandom(PIECE)
B = os.urandom(8 * PIECE)
SPACE = A + B  # a.bin is piece 0, b.bin pieces 1..8
INFO = multi_file_info("t", [("a.bin", A), ("b.bin", B)], PIECE)
ARRIVING = range(1, 9)  # a block of each of b.bin's pieces is in memory at the move
DEADLINE = 10


class FailingReads(MemoryFileSystem):
    """A MemoryFileSystem whose reads of ``t/b.bin`` fail with EIO."""

    def read(self, path: str, offset: int, length: int) -> bytes:
        """Read, or fail for b.bin."""
        if path == "t/b.bin":
            raise StorageError(f"read {path}: {os.strerror(errno.EIO)}", errno=errno.EIO, path=path)
        return super().read(path, offset, length)


class NoTimes(MemoryFileSystem):
    """A MemoryFileSystem that keeps no modification time: fast resume trusts none of it."""

    def stat(self, path: str) -> FileStat | None:
        """The file's size, and mtime 0."""
        stat = super().stat(path)
        return None if stat is None else FileStat(stat.size, 0)


def storage(
    files: dict[str, bytes], kind: type[MemoryFileSystem] = MemoryFileSystem
) -> MemoryFileSystem:
    fs = kind()
    for name, data in files.items():
        fs.write(f"t/{name}", 0, data)
    return fs


def piece(torrent: TorrentHandle, index: int) -> PieceVerified:
    """An event told by its piece index."""
    return PieceVerified(torrent, index, True)


async def taken(disk: DiskManager, count: int) -> list[int]:
    """The piece indices of the next ``count`` events."""
    indices: list[int] = []
    with trio.fail_after(DEADLINE):
        async for event in disk.events():
            assert isinstance(event, PieceVerified), event
            indices.append(event.piece)
            if len(indices) == count:
                break
    return indices


async def added(disk: DiskManager, fs: MemoryFileSystem) -> TorrentHandle:
    """The torrent added on ``fs``, its check's events all taken."""
    torrent = await disk.add_torrent(INFO, fs)
    await until(disk, CheckFinished)
    return torrent


async def check_waits_to_emit(disk: DiskManager, torrent: TorrentHandle) -> None:
    """Return once the torrent's new check has planned (its first check settled piece 0,
    so ``checked`` drops to 0) and waits to emit: it and the events of the move or recheck
    then compete for the full queue."""
    with trio.fail_after(DEADLINE):
        while disk.status(torrent).checked:
            await trio.sleep(0.001)  # the plan runs on a thread
    await trio.testing.wait_all_tasks_blocked()


def kinds(events: list[DiskEvent]) -> list[str]:
    return [type(event).__name__ for event in events]


def in_order(events: list[DiskEvent]) -> None:
    """The blocks dropped come before anything the check says, and no piece is told
    dropped after it is told verified."""
    first_check = next(i for i, e in enumerate(events) if isinstance(e, CheckProgress))
    dropped = [i for i, e in enumerate(events) if isinstance(e, PieceDiscarded)]
    assert dropped, kinds(events)
    assert max(dropped) < first_check, kinds(events)
    verified: set[int] = set()
    for event in events:
        if isinstance(event, PieceVerified):
            verified.add(event.piece)
        elif isinstance(event, PieceDiscarded):
            assert event.piece not in verified, kinds(events)


async def test_blocks_a_keep_move_drops_are_told_before_its_check_speaks() -> None:
    new = storage({"b.bin": bytes(BAD * PIECE) + B[BAD * PIECE :]})
    async with open_disk_manager(hash_threads=1, event_buffer=1) as disk:
        torrent = await added(disk, storage({"a.bin": A}))  # b.bin missing
        for index in ARRIVING:
            await disk.write_block(torrent, index, 0, SPACE[index * PIECE :][:1000])
        # StorageMoved fills the queue: the blocks dropped wait in the manager's task.
        assert await disk.move_storage(torrent, new, existing=ExistingFiles.KEEP) == ("t/b.bin",)
        await check_waits_to_emit(disk, torrent)
        events = await until(disk, CheckFinished)
        assert isinstance(events[0], StorageMoved)
        reason = "blocks dropped: a file the move kept holds the piece"
        assert events[1 : 1 + len(ARRIVING)] == [
            PieceDiscarded(torrent, index, reason) for index in ARRIVING
        ]
        in_order(events)
        found = [e.piece for e in events if isinstance(e, PieceVerified) and e.good]
        assert found == list(range(BAD + 1, 9))
        assert disk.have(torrent) == {0, *found}


async def test_blocks_a_recheck_drops_are_told_before_its_check_speaks() -> None:
    async with open_disk_manager(hash_threads=1, event_buffer=1) as disk:
        torrent = await added(disk, storage({"a.bin": A}))
        for index in ARRIVING:
            await disk.write_block(torrent, index, 0, SPACE[index * PIECE :][:1000])
        await disk.recheck(torrent)  # the first dropped fills the queue, the others wait
        await check_waits_to_emit(disk, torrent)
        events = await until(disk, CheckFinished)
        reason = "blocks dropped: the torrent is rechecked"
        assert events[: len(ARRIVING)] == [
            PieceDiscarded(torrent, index, reason) for index in ARRIVING
        ]
        in_order(events)
        assert events[-1] == CheckFinished(torrent, good=1, checked=1, resumed=False)


async def test_a_recheck_silences_the_changes_a_stopped_keep_check_still_had_to_tell() -> None:
    async with open_disk_manager(hash_threads=1, event_buffer=1) as disk:
        torrent = await added(disk, storage({"a.bin": A, "b.bin": B}))
        new = storage({"b.bin": B}, FailingReads)  # kept, and unreadable
        await disk.move_storage(torrent, new, existing=ExistingFiles.KEEP)
        await until(disk, TorrentFailed)
        assert disk.status(torrent).state is TorrentState.ERROR
        # The check, stopped, tells pieces 1..8 lost: the first fills the queue, the
        # second waits for room.
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(DEADLINE):
            await disk.recheck(torrent)  # allowed in ERROR: it takes the torrent over
        events = await until(disk, CheckFinished)
        lost = [e for e in events if isinstance(e, PieceLost)]
        # Only the one already queued: the recheck forgets what the others would tell.
        assert lost == [events[0]]
        assert lost[0].piece == 1
        assert lost[0].reason.startswith("kept file not checked: ")
        assert kinds(events[1:]) == ["CheckProgress", "TorrentFailed", "CheckFinished"]


async def test_a_lost_piece_of_a_copied_file_is_not_blamed_on_a_kept_one() -> None:
    old = storage({"a.bin": A, "b.bin": B})
    new = storage({"b.bin": B}, NoTimes)  # b.bin kept; no mtime: a.bin's copy is hashed too
    async with open_disk_manager(hash_threads=1, event_buffer=1) as disk:
        torrent = await added(disk, old)
        old.write("t/a.bin", 0, bytes(PIECE))  # spoilt behind the manager's back
        await disk.move_storage(torrent, new, existing=ExistingFiles.KEEP)
        events = await until(disk, CheckFinished)
        assert [e for e in events if isinstance(e, PieceLost)] == [
            PieceLost(torrent, 0, "copied file differs")
        ]
        assert disk.have(torrent) == set(ARRIVING)


async def test_an_emit_waiting_behind_a_backlog_is_not_overtaken_by_later_events() -> None:
    async with open_disk_manager(hash_threads=1, event_buffer=1) as disk:
        torrent = await added(disk, storage({"a.bin": A, "b.bin": B}))
        async with trio.open_nursery() as nursery:
            disk._emit_later([piece(torrent, 0), piece(torrent, 1)])  # 1 in the backlog
            nursery.start_soon(disk._emit, piece(torrent, 2))
            await trio.testing.wait_all_tasks_blocked()
            disk._emit_later([piece(torrent, 3)])  # decided after 2 was emitted
            assert await taken(disk, 4) == [0, 1, 2, 3]


async def test_emits_waiting_behind_a_backlog_go_in_the_order_they_came() -> None:
    async with open_disk_manager(hash_threads=1, event_buffer=1) as disk:
        torrent = await added(disk, storage({"a.bin": A, "b.bin": B}))
        # Woken together, tasks run in an order of trio's choosing: try it a few times.
        for _ in range(8):
            async with trio.open_nursery() as nursery:
                disk._emit_later([piece(torrent, 0), piece(torrent, 1)])
                for index in (2, 3, 4):
                    nursery.start_soon(disk._emit, piece(torrent, index))
                    await trio.testing.wait_all_tasks_blocked()
                disk._emit_later([piece(torrent, 5)])
                # A task that settles a piece slips in nowhere either.
                nursery.start_soon(disk._emit_soon, piece(torrent, 6))
                await trio.testing.wait_all_tasks_blocked()
                assert await taken(disk, 7) == [0, 1, 2, 3, 4, 5, 6]
            await trio.testing.wait_all_tasks_blocked()
            assert not disk._backlogs  # gone once its last event is sent


async def test_an_emit_cancelled_behind_a_backlog_is_never_sent() -> None:
    async with open_disk_manager(hash_threads=1, event_buffer=1) as disk:
        torrent = await added(disk, storage({"a.bin": A, "b.bin": B}))
        async with trio.open_nursery() as nursery:
            disk._emit_later([piece(torrent, 0), piece(torrent, 1)])
            scope = trio.CancelScope()

            async def cancellable() -> None:
                with scope:
                    await disk._emit(piece(torrent, 2))

            nursery.start_soon(cancellable)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(disk._emit, piece(torrent, 3))
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()  # as a recheck cancels a check's CheckFinished
            assert await taken(disk, 3) == [0, 1, 3]
        await trio.testing.wait_all_tasks_blocked()
        assert not disk._backlogs
        assert disk.statistics().events_dropped == 0


async def test_nothing_waits_behind_a_backlog_at_close() -> None:
    with trio.fail_after(DEADLINE):
        async with open_disk_manager(hash_threads=1, event_buffer=1) as disk:
            torrent = await added(disk, storage({"a.bin": A, "b.bin": B}))
            disk._emit_later([piece(torrent, 0), piece(torrent, 1)])
            disk._nursery.start_soon(disk._emit, piece(torrent, 2))
            await trio.testing.wait_all_tasks_blocked()
    # The queue held 0: 1 (the backlog's, cancelled) and 2 (no room at close) are dropped.
    assert disk.statistics().events_dropped == 2
