"""DiskManager.move_storage against what still runs when it is called: a piece being written,
a read on a thread and the last check's task, each failing late; a recheck asked for meanwhile
(and a move while a recheck waits); a move that fails or is cancelled after such a fault; a
removal and the manager closing. The move owns the torrent while it waits: a late fault is a
StorageProblem, never a stop or a misleading "removed", and there are never two owners. The
pieces queued behind a write that fails are written all the same, and every piece not stored
gets its verdict (PieceDiscarded), so that it is fetched again."""

from __future__ import annotations

import errno
import logging
import threading
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from tests._disk_race import (
    MANY,
    PATH,
    PIECE,
    PIECES,
    READ_0,
    WRITE_0,
    GatedFileSystem,
    HeldFullFileSystem,
    call_then_open_gate,
    discarded,
    drain,
    entered,
    make,
    next_event,
    of_type,
    one_problem,
    open_gate_once_closing,
    queue_pieces_on_a_full_disk,
    stopped_while_piece_0_is_read,
    stored,
    stored_but_piece_0,
    writing_piece_0,
)

from bip_disk import _manager
from bip_disk._errors import StorageError, TorrentStateError
from bip_disk._events import (
    CheckFinished,
    PieceDiscarded,
    PieceLost,
    PieceVerified,
    StorageMoved,
    StorageProblem,
    TorrentFailed,
    TorrentHandle,
    TorrentRemoved,
    TorrentState,
)
from bip_disk._filesystem import Buffer
from bip_disk._manager import DiskManager, open_disk_manager
from bip_disk._memory import MemoryFileSystem

READ_3 = ("read", 3 * PIECE)


class FullFileSystem(MemoryFileSystem):
    """A destination whose every write fails: disk full."""

    def write(self, path: str, offset: int, data: Buffer) -> None:
        raise StorageError(f"write {path}: no space", errno=errno.ENOSPC, path=path)


async def read_piece_3_on_hold(
    disk: DiskManager, fs: GatedFileSystem, torrent: TorrentHandle, nursery: trio.Nursery
) -> threading.Event:
    """Start reading piece 3, held at the gate returned (the read then succeeds)."""
    gate = fs.hold(READ_3)
    nursery.start_soon(disk.read_block, torrent, 3, 0, 10)
    await entered(fs, READ_3)
    return gate


async def move_then_open_gate(
    disk: DiskManager, torrent: TorrentHandle, new: MemoryFileSystem, gate: threading.Event
) -> None:
    """Move ``torrent`` to ``new``, opening ``gate`` once the move waits (MOVING) for what
    ran before it; the move succeeds."""
    move = partial(disk.move_storage, torrent, new)
    assert await call_then_open_gate(disk, torrent, move, TorrentState.MOVING, gate) == ()


async def move_refused(
    disk: DiskManager,
    torrent: TorrentHandle,
    new: MemoryFileSystem,
    failures: list[TorrentStateError],
) -> None:
    """Move ``torrent`` to ``new``, keeping the TorrentStateError the move ends with."""
    try:
        await disk.move_storage(torrent, new)
    except TorrentStateError as error:
        failures.append(error)


async def test_a_write_failing_while_the_move_waits_does_not_stop_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metainfo, content, fs = stored_but_piece_0(tmp_path)
    new = MemoryFileSystem()
    caplog.set_level(logging.WARNING, logger="bip_disk.manager")
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            torrent, gate = await writing_piece_0(disk, fs, metainfo, content, failing=True)
            # The write fails once the gate opens, with the move waiting for it.
            await move_then_open_gate(disk, torrent, new, gate)
        status = disk.status(torrent)
        assert status.state is TorrentState.READY
        assert status.error is None
        assert disk.have(torrent) == frozenset(range(1, PIECES))  # piece 0 never reported good
        events = drain(disk)
        one_problem(events, "before the move: writing piece 0 failed", errno.EIO)
        [dropped] = of_type(events, PieceDiscarded)
        assert dropped.piece == 0
        assert dropped.reason.startswith("writing piece 0 failed")
        assert events.index(of_type(events, StorageProblem)[0]) < events.index(dropped)
        assert events[-1] == StorageMoved(torrent)
        # What was on disk moved; the piece is written again, into the new storage.
        assert new.read(PATH, 0, len(content)) == bytes(PIECE) + content[PIECE:]
        assert fs.stat(PATH) is None
        with trio.fail_after(10):
            assert await disk.write_block(torrent, 0, 0, content[:PIECE])
            await disk.wait_idle(torrent)
        assert disk.have(torrent) == frozenset(range(PIECES))
        assert new.read(PATH, 0, PIECE) == content[:PIECE]
    assert "before its move: writing piece 0 failed" in caplog.text


async def test_a_read_failing_while_the_move_waits_does_not_stop_it(tmp_path: Path) -> None:
    metainfo, content = make(tmp_path)
    fs, new = stored(content), MemoryFileSystem()
    failures: list[StorageError] = []
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            torrent = await disk.add_torrent(metainfo, fs)
            assert await disk.wait_checked(torrent) is TorrentState.READY
            gate = fs.hold(READ_3)
            fs.fail.add(READ_3)

            async def read() -> None:
                try:
                    await disk.read_block(torrent, 3, 0, 10)
                except StorageError as error:
                    failures.append(error)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                await entered(fs, READ_3)
                # The read fails once the gate opens, with the move waiting for it.
                await move_then_open_gate(disk, torrent, new, gate)
        [failure] = failures  # its caller is told, as ever
        assert failure.errno == errno.EIO
        assert disk.status(torrent).state is TorrentState.READY
        assert disk.have(torrent) == frozenset(range(PIECES)) - {3}  # lost: fetch it again
        events = drain(disk)
        one_problem(events, "before the move: reading piece 3 failed")
        assert [event.piece for event in of_type(events, PieceLost)] == [3]
        assert events[-1] == StorageMoved(torrent)
        assert new.read(PATH, 0, len(content)) == content


async def test_a_check_failing_while_the_move_waits_does_not_stop_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One piece per batch: the check's two tasks hash pieces 0 and 1 at once.
    monkeypatch.setattr(_manager, "_BATCH_BYTES", PIECE)
    metainfo, content = make(tmp_path)
    fs, new = stored(content), MemoryFileSystem()
    fs.fail.add(READ_0)
    async with open_disk_manager(hash_threads=2) as disk:
        with trio.fail_after(10):
            torrent, gate = await stopped_while_piece_0_is_read(disk, fs, metainfo)
            # The check's last batch fails too once the gate opens, with the move waiting.
            await move_then_open_gate(disk, torrent, new, gate)
        # The move started the torrent again, on the new storage.
        status = disk.status(torrent)
        assert status.state is TorrentState.READY
        assert status.error is None
        events = drain(disk)
        one_problem(events, "before the move: checking the files failed")  # the one fault only
        assert len(of_type(events, CheckFinished)) == 1  # the failed check ended
        assert events[-1] == StorageMoved(torrent)
        assert new.read(PATH, 0, len(content)) == content


async def test_a_recheck_while_the_move_waits_is_refused_even_after_a_fault(
    tmp_path: Path,
) -> None:
    metainfo, content, fs = stored_but_piece_0(tmp_path)
    new = MemoryFileSystem()
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            torrent, write_gate = await writing_piece_0(disk, fs, metainfo, content, failing=True)
            async with trio.open_nursery() as nursery:
                # A read keeps the move waiting once the write has failed.
                read_gate = await read_piece_3_on_hold(disk, fs, torrent, nursery)
                nursery.start_soon(disk.move_storage, torrent, new)
                await trio.testing.wait_all_tasks_blocked()
                write_gate.set()
                await next_event(disk, StorageProblem)
                # Still the move's: a recheck now would be a second owner.
                assert disk.status(torrent).state is TorrentState.MOVING
                with pytest.raises(TorrentStateError, match=r"cannot recheck .* while moving"):
                    await disk.recheck(torrent)
                read_gate.set()
        assert disk.status(torrent).state is TorrentState.READY
        events = drain(disk)
        assert not of_type(events, CheckFinished)  # no check ran
        assert events[-1] == StorageMoved(torrent)


async def test_a_move_while_a_recheck_waits_is_refused(tmp_path: Path) -> None:
    metainfo, content, fs = stored_but_piece_0(tmp_path)
    new = MemoryFileSystem()
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            torrent, gate = await writing_piece_0(disk, fs, metainfo, content, failing=True)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(disk.recheck, torrent)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(TorrentStateError, match=r"cannot move .* while checking"):
                    await disk.move_storage(torrent, new)
                gate.set()
            assert await disk.wait_checked(torrent) is TorrentState.READY
        assert new.stat(PATH) is None  # nothing copied
        [problem] = of_type(drain(disk), StorageProblem)
        assert problem.reason.startswith("before the recheck: writing piece 0 failed")


@pytest.mark.parametrize("how", ["copy fails", "cancelled"])
async def test_a_move_given_up_after_a_fault_leaves_the_torrent_stopped_by_it(
    tmp_path: Path, how: str
) -> None:
    metainfo, content, fs = stored_but_piece_0(tmp_path)
    new = FullFileSystem() if how == "copy fails" else MemoryFileSystem()
    failures: list[BaseException] = []
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            torrent, write_gate = await writing_piece_0(disk, fs, metainfo, content, failing=True)
            scope = trio.CancelScope()

            async def move() -> None:
                with scope:
                    try:
                        await disk.move_storage(torrent, new)
                    except StorageError as error:
                        failures.append(error)

            async with trio.open_nursery() as nursery:
                read_gate = await read_piece_3_on_hold(disk, fs, torrent, nursery)
                nursery.start_soon(move)
                await trio.testing.wait_all_tasks_blocked()
                write_gate.set()
                await next_event(disk, StorageProblem)
                if how == "cancelled":
                    scope.cancel()
                    await trio.testing.wait_all_tasks_blocked()
                read_gate.set()
            # Left where it was: on its storage, stopped by the write that failed there.
            status = disk.status(torrent)
            assert status.state is TorrentState.ERROR
            assert status.reason is not None
            assert status.reason.startswith("writing piece 0 failed")
            assert isinstance(status.error, StorageError)
            assert status.error.errno == errno.EIO
            [failed] = of_type(await next_event(disk, TorrentFailed), TorrentFailed)
            assert failed.reason == status.reason
        if how == "copy fails":
            [failure] = failures
            assert isinstance(failure, StorageError)
            assert failure.errno == errno.ENOSPC
        else:
            assert scope.cancelled_caught
            assert new.stat(PATH) is None
        assert fs.read(PATH, PIECE, PIECE) == content[PIECE : 2 * PIECE]  # the old files stay


async def test_a_removal_while_the_move_waits_ends_it(tmp_path: Path) -> None:
    metainfo, content, fs = stored_but_piece_0(tmp_path)
    new = MemoryFileSystem()
    failures: list[TorrentStateError] = []
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            torrent, gate = await writing_piece_0(disk, fs, metainfo, content, failing=True)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(move_refused, disk, torrent, new, failures)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(disk.remove_torrent, torrent)
                await trio.testing.wait_all_tasks_blocked()
                gate.set()
        [failure] = failures
        assert "was removed before its storage moved" in str(failure)
        assert new.stat(PATH) is None
        events = drain(disk)
        assert not of_type(events, TorrentFailed)
        assert events[-1] == TorrentRemoved(torrent, data_deleted=False)


async def test_closing_while_the_move_waits_gives_it_up(tmp_path: Path) -> None:
    metainfo, content, fs = stored_but_piece_0(tmp_path)
    new = MemoryFileSystem()
    failures: list[TorrentStateError] = []
    with trio.fail_after(10):
        # The manager closes first, the nursery of the test's tasks then.
        async with trio.open_nursery() as nursery, open_disk_manager() as disk:
            # This write succeeds.
            torrent, gate = await writing_piece_0(disk, fs, metainfo, content, failing=False)
            nursery.start_soon(move_refused, disk, torrent, new, failures)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(open_gate_once_closing, gate)
    [failure] = failures
    assert "closing" in str(failure)
    assert new.stat(PATH) is None  # nothing copied while the manager closed
    assert fs.read(PATH, 0, PIECE) == content[:PIECE]
    assert disk.status(torrent).state is TorrentState.READY


async def test_a_full_disk_under_a_queue_of_pieces_is_one_problem_before_the_move(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = 48  # the first pieces of the MANY, not stored
    metainfo, content = make(tmp_path, MANY)
    fs, new = HeldFullFileSystem(held=0), MemoryFileSystem()
    on_disk = bytes(missing * PIECE) + content[missing * PIECE :]
    fs.write(PATH, 0, on_disk)
    caplog.set_level(logging.DEBUG, logger="bip_disk.manager")
    async with open_disk_manager(hash_threads=1) as disk:
        with trio.fail_after(10):
            torrent = await disk.add_torrent(metainfo, fs)
            assert await disk.wait_checked(torrent) is TorrentState.READY
            assert disk.have(torrent) == frozenset(range(missing, MANY))
            # Piece 0 waits on the only hashing thread, the others missing queue behind it.
            await queue_pieces_on_a_full_disk(disk, fs, torrent, content, missing)
            # Piece 0 fails once the gate opens; the queued pieces are written, and fail too.
            await move_then_open_gate(disk, torrent, new, fs.gate)
        assert fs.writes == missing
        status = disk.status(torrent)
        assert status.state is TorrentState.READY
        assert status.error is None
        # No piece that failed passes for written: what the torrent has is what was on disk...
        assert disk.have(torrent) == frozenset(range(missing, MANY))
        events = drain(disk)
        assert not of_type(events, PieceVerified)
        one_problem(events, "before the move: writing piece 0 failed", errno.ENOSPC)
        # ... and each of them has its verdict: fetch it again.
        assert discarded(events) == list(range(missing))
        assert events[-1] == StorageMoved(torrent)
        # ... and what was on disk moved.
        assert new.read(PATH, 0, len(content)) == on_disk
        with trio.fail_after(10):
            assert await disk.write_block(torrent, 1, 0, content[PIECE : 2 * PIECE])
            await disk.wait_idle(torrent)
        assert 1 in disk.have(torrent)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert ["before its move" in message for message in warnings] == [True]
    assert f"{missing} faults before its move, the first told" in caplog.text


async def test_the_pieces_queued_behind_a_write_failing_while_the_move_waits_are_stored(
    tmp_path: Path,
) -> None:
    missing = 5  # pieces 0..4 not stored: 0 fails once (EIO), 1..4 are queued behind it
    metainfo, content = make(tmp_path)
    fs, new = stored(bytes(missing * PIECE) + content[missing * PIECE :]), MemoryFileSystem()
    async with open_disk_manager(hash_threads=1) as disk:
        with trio.fail_after(10):
            torrent = await disk.add_torrent(metainfo, fs)
            assert await disk.wait_checked(torrent) is TorrentState.READY
            gate = fs.hold(WRITE_0)
            fs.fail.add(WRITE_0)
            await disk.write_block(torrent, 0, 0, content[:PIECE])
            await entered(fs, WRITE_0)  # on the only hashing thread
            for piece in range(1, missing):
                await disk.write_block(
                    torrent, piece, 0, content[piece * PIECE : (piece + 1) * PIECE]
                )
            assert disk.status(torrent).queued_pieces == missing
            await move_then_open_gate(disk, torrent, new, gate)
        assert disk.status(torrent).state is TorrentState.READY
        # Every piece has its verdict: the one whose write failed is to fetch again (nothing
        # says its data was bad), the others were written, verified and moved.
        events = drain(disk)
        one_problem(events, "before the move: writing piece 0 failed", errno.EIO)
        assert discarded(events) == [0]
        assert [(e.piece, e.good) for e in of_type(events, PieceVerified)] == [
            (piece, True) for piece in range(1, missing)
        ]
        assert events[-1] == StorageMoved(torrent)
        assert disk.have(torrent) == frozenset(range(1, PIECES))
        assert new.read(PATH, PIECE, len(content) - PIECE) == content[PIECE:]
        with trio.fail_after(10):
            assert await disk.write_block(torrent, 0, 0, content[:PIECE])
            await disk.wait_idle(torrent)
        assert disk.have(torrent) == frozenset(range(PIECES))
        assert new.read(PATH, 0, PIECE) == content[:PIECE]
