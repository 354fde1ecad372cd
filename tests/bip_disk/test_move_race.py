"""DiskManager.move_storage against what still runs when it is called: a piece being written,
a read on a thread and the last check's task, each failing late; a recheck asked for meanwhile
(and a move while a recheck waits); a move that fails or is cancelled after such a fault; a
removal and the manager closing. The move owns the torrent while it waits: a late fault is a
StorageProblem, never a stop or a misleading "removed", and there are never two owners."""

from __future__ import annotations

import errno
import logging
import os
import random
import threading
from pathlib import Path
from typing import TypeVar

import pytest
import trio
import trio.testing

from bip_disk import _manager
from bip_disk._errors import StorageError, TorrentStateError
from bip_disk._events import (
    CheckFinished,
    DiskEvent,
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
from bip_metainfo import Metainfo, create_torrent

PIECE = 16384
PIECES = 8
PATH = "t/a"
WRITE_0 = ("write", 0)
READ_3 = ("read", 3 * PIECE)
E = TypeVar("E", bound=DiskEvent)


class GatedFileSystem(MemoryFileSystem):
    """A MemoryFileSystem whose reads or writes at chosen offsets of ``t/a`` wait (on their
    thread) at a gate of their own, then fail once with EIO if told to.

    ``hold`` makes the calls at ``(operation, offset)`` wait until the gate it returns is set;
    ``entered`` tells when one waits; ``fail`` holds the ``(operation, offset)`` pairs whose
    next call fails (once: the move's copy then reads the file like any other).
    """

    def __init__(self) -> None:
        super().__init__()
        self.gates: dict[tuple[str, int], threading.Event] = {}
        self.entered: dict[tuple[str, int], threading.Event] = {}
        self.fail: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def hold(self, key: tuple[str, int]) -> threading.Event:
        self.entered[key] = threading.Event()
        gate = self.gates[key] = threading.Event()
        return gate

    def _visit(self, operation: str, path: str, offset: int) -> None:
        if path != PATH:
            return
        key = (operation, offset)
        gate = self.gates.get(key)
        if gate is not None:
            self.entered[key].set()
            # Bounded: a test that never opens the gate fails here instead of hanging.
            assert gate.wait(10)
        with self._lock:
            failing = key in self.fail
            self.fail.discard(key)
        if failing:
            raise StorageError(
                f"{operation} {path}: {os.strerror(errno.EIO)}", errno=errno.EIO, path=path
            )

    def read(self, path: str, offset: int, length: int) -> bytes:
        self._visit("read", path, offset)
        return super().read(path, offset, length)

    def write(self, path: str, offset: int, data: Buffer) -> None:
        self._visit("write", path, offset)
        super().write(path, offset, data)


class FullFileSystem(MemoryFileSystem):
    """A destination whose every write fails: disk full."""

    def write(self, path: str, offset: int, data: Buffer) -> None:
        raise StorageError(f"write {path}: no space", errno=errno.ENOSPC, path=path)


class HeldFullFileSystem(MemoryFileSystem):
    """A MemoryFileSystem whose writes to ``t/a`` fail with ENOSPC once ``full`` is set; the
    one at offset 0 first waits (on its thread) until ``gate`` is set. ``writes`` counts the
    writes tried."""

    def __init__(self) -> None:
        super().__init__()
        self.full = False
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.writes = 0

    def write(self, path: str, offset: int, data: Buffer) -> None:
        if path == PATH and self.full:
            self.writes += 1
            if offset == 0:
                self.entered.set()
                assert self.gate.wait(10)  # bounded: a test that fails does not hang
            raise StorageError(
                f"write {path}: {os.strerror(errno.ENOSPC)}", errno=errno.ENOSPC, path=path
            )
        super().write(path, offset, data)


def make(tmp_path: Path, pieces: int = PIECES) -> tuple[Metainfo, bytes]:
    root = tmp_path / "t"
    root.mkdir()
    content = random.Random(5).randbytes(pieces * PIECE)
    (root / "a").write_bytes(content)
    metainfo = create_torrent(root, piece_length=PIECE, creation_date=None, created_by=None)
    return metainfo, content


def drain(disk: DiskManager) -> list[DiskEvent]:
    """The events queued now (the tests' torrents make far fewer than the queue holds)."""
    events = []
    while True:
        try:
            events.append(disk.events().receive_nowait())
        except trio.WouldBlock:
            return events


def of_type(events: list[DiskEvent], kind: type[E]) -> list[E]:
    return [event for event in events if isinstance(event, kind)]


async def entered(fs: GatedFileSystem, key: tuple[str, int]) -> None:
    """Wait until a held call of ``fs`` at ``key`` waits on its gate."""
    assert await trio.to_thread.run_sync(fs.entered[key].wait, 5)


async def next_event(disk: DiskManager, kind: type[DiskEvent]) -> list[DiskEvent]:
    """The events up to the first of ``kind``, that one included."""
    events = []
    async for event in disk.events():
        events.append(event)
        if isinstance(event, kind):
            return events
    raise AssertionError(f"the events ended before a {kind.__name__}")


def stored_but_piece_0(content: bytes) -> GatedFileSystem:
    fs = GatedFileSystem()
    fs.write(PATH, 0, bytes(PIECE) + content[PIECE:])
    return fs


async def with_piece_0_written_on_hold(
    disk: DiskManager, fs: GatedFileSystem, content: bytes, metainfo: Metainfo
) -> tuple[TorrentHandle, threading.Event]:
    """A READY torrent whose piece 0 (zeros on disk) is being written, held at the gate
    returned; the write then fails."""
    torrent = await disk.add_torrent(metainfo, fs)
    assert await disk.wait_checked(torrent) is TorrentState.READY
    gate = fs.hold(WRITE_0)
    fs.fail.add(WRITE_0)
    await disk.write_block(torrent, 0, 0, content[:PIECE])
    await entered(fs, WRITE_0)
    return torrent, gate


async def read_piece_3_on_hold(
    disk: DiskManager, fs: GatedFileSystem, torrent: TorrentHandle, nursery: trio.Nursery
) -> threading.Event:
    """Start reading piece 3, held at the gate returned (the read then succeeds)."""
    gate = fs.hold(READ_3)
    nursery.start_soon(disk.read_block, torrent, 3, 0, 10)
    await entered(fs, READ_3)
    return gate


async def test_a_write_failing_while_the_move_waits_does_not_stop_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metainfo, content = make(tmp_path)
    fs, new = stored_but_piece_0(content), MemoryFileSystem()
    caplog.set_level(logging.WARNING, logger="bip_disk.manager")
    moved: list[tuple[str, ...]] = []
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            torrent, gate = await with_piece_0_written_on_hold(disk, fs, content, metainfo)

            async def move() -> None:
                moved.append(await disk.move_storage(torrent, new))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(move)
                await trio.testing.wait_all_tasks_blocked()
                assert disk.status(torrent).state is TorrentState.MOVING
                gate.set()  # the write fails now, with the move waiting for it
        assert moved == [()]
        status = disk.status(torrent)
        assert status.state is TorrentState.READY
        assert status.error is None
        assert disk.have(torrent) == frozenset(range(1, PIECES))  # piece 0 never reported good
        events = drain(disk)
        assert not of_type(events, TorrentFailed)
        [problem] = of_type(events, StorageProblem)
        assert problem.reason.startswith("before the move: writing piece 0 failed")
        assert isinstance(problem.error, StorageError)
        assert problem.error.errno == errno.EIO
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
    fs, new = GatedFileSystem(), MemoryFileSystem()
    fs.write(PATH, 0, content)
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
                nursery.start_soon(disk.move_storage, torrent, new)
                await trio.testing.wait_all_tasks_blocked()
                assert disk.status(torrent).state is TorrentState.MOVING
                gate.set()  # the read fails, with the move waiting for it
        [failure] = failures  # its caller is told, as ever
        assert failure.errno == errno.EIO
        assert disk.status(torrent).state is TorrentState.READY
        assert disk.have(torrent) == frozenset(range(PIECES)) - {3}  # lost: fetch it again
        events = drain(disk)
        assert not of_type(events, TorrentFailed)
        assert [event.piece for event in of_type(events, PieceLost)] == [3]
        [problem] = of_type(events, StorageProblem)
        assert problem.reason.startswith("before the move: reading piece 3 failed")
        assert events[-1] == StorageMoved(torrent)
        assert new.read(PATH, 0, len(content)) == content


async def test_a_check_failing_while_the_move_waits_does_not_stop_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One piece per batch: the check's two tasks hash pieces 0 and 1 at once.
    monkeypatch.setattr(_manager, "_BATCH_BYTES", PIECE)
    metainfo, content = make(tmp_path)
    fs, new = GatedFileSystem(), MemoryFileSystem()
    fs.write(PATH, 0, content)
    read_0, read_1 = ("read", 0), ("read", PIECE)
    gate_0, gate_1 = fs.hold(read_0), fs.hold(read_1)
    fs.fail.update((read_0, read_1))
    async with open_disk_manager(hash_threads=2) as disk:
        with trio.fail_after(10):
            torrent = await disk.add_torrent(metainfo, fs)
            await entered(fs, read_0)
            await entered(fs, read_1)
            gate_1.set()  # reading piece 1 stops the torrent, with piece 0 still being read
            await next_event(disk, TorrentFailed)
            assert disk.status(torrent).state is TorrentState.ERROR
            async with trio.open_nursery() as nursery:
                nursery.start_soon(disk.move_storage, torrent, new)
                await trio.testing.wait_all_tasks_blocked()
                assert disk.status(torrent).state is TorrentState.MOVING
                gate_0.set()  # the check's last batch fails too, with the move waiting for it
        # The move started the torrent again, on the new storage.
        status = disk.status(torrent)
        assert status.state is TorrentState.READY
        assert status.error is None
        events = drain(disk)
        assert not of_type(events, TorrentFailed)  # the one fault only
        [problem] = of_type(events, StorageProblem)
        assert problem.reason.startswith("before the move: checking the files failed")
        assert len(of_type(events, CheckFinished)) == 1  # the failed check ended
        assert events[-1] == StorageMoved(torrent)
        assert new.read(PATH, 0, len(content)) == content


async def test_a_recheck_while_the_move_waits_is_refused_even_after_a_fault(
    tmp_path: Path,
) -> None:
    metainfo, content = make(tmp_path)
    fs, new = stored_but_piece_0(content), MemoryFileSystem()
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            torrent, write_gate = await with_piece_0_written_on_hold(disk, fs, content, metainfo)
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
    metainfo, content = make(tmp_path)
    fs, new = stored_but_piece_0(content), MemoryFileSystem()
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            torrent, gate = await with_piece_0_written_on_hold(disk, fs, content, metainfo)
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
    metainfo, content = make(tmp_path)
    fs = stored_but_piece_0(content)
    new = FullFileSystem() if how == "copy fails" else MemoryFileSystem()
    failures: list[BaseException] = []
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            torrent, write_gate = await with_piece_0_written_on_hold(disk, fs, content, metainfo)
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
    metainfo, content = make(tmp_path)
    fs, new = stored_but_piece_0(content), MemoryFileSystem()
    failures: list[TorrentStateError] = []
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            torrent, gate = await with_piece_0_written_on_hold(disk, fs, content, metainfo)

            async def move() -> None:
                try:
                    await disk.move_storage(torrent, new)
                except TorrentStateError as error:
                    failures.append(error)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(move)
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
    metainfo, content = make(tmp_path)
    fs, new = GatedFileSystem(), MemoryFileSystem()
    fs.write(PATH, 0, bytes(PIECE) + content[PIECE:])
    failures: list[TorrentStateError] = []

    async def open_gate_once_closing(gate: threading.Event) -> None:
        # The manager's exit waits for the held write: everything else is blocked then.
        await trio.testing.wait_all_tasks_blocked()
        gate.set()

    with trio.fail_after(10):
        # The manager closes first, the nursery of the test's tasks then.
        async with trio.open_nursery() as nursery, open_disk_manager() as disk:
            torrent = await disk.add_torrent(metainfo, fs)
            assert await disk.wait_checked(torrent) is TorrentState.READY
            gate = fs.hold(WRITE_0)  # this write succeeds
            await disk.write_block(torrent, 0, 0, content[:PIECE])
            await entered(fs, WRITE_0)

            async def move() -> None:
                try:
                    await disk.move_storage(torrent, new)
                except TorrentStateError as error:
                    failures.append(error)

            nursery.start_soon(move)
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
    many, stored = 64, 48  # pieces of the torrent; the first not stored
    metainfo, content = make(tmp_path, many)
    fs, new = HeldFullFileSystem(), MemoryFileSystem()
    on_disk = bytes(stored * PIECE) + content[stored * PIECE :]
    fs.write(PATH, 0, on_disk)
    caplog.set_level(logging.WARNING, logger="bip_disk.manager")
    moved: list[tuple[str, ...]] = []
    async with open_disk_manager(hash_threads=1) as disk:
        with trio.fail_after(10):
            torrent = await disk.add_torrent(metainfo, fs)
            assert await disk.wait_checked(torrent) is TorrentState.READY
            assert disk.have(torrent) == frozenset(range(stored, many))
            fs.full = True
            # Piece 0 waits on the only hashing thread, the others queue behind it.
            await disk.write_block(torrent, 0, 0, content[:PIECE])
            assert await trio.to_thread.run_sync(fs.entered.wait, 5)
            for piece in range(1, stored):
                await disk.write_block(
                    torrent, piece, 0, content[piece * PIECE : (piece + 1) * PIECE]
                )
            assert disk.status(torrent).queued_pieces == stored

            async def move() -> None:
                moved.append(await disk.move_storage(torrent, new))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(move)
                await trio.testing.wait_all_tasks_blocked()
                assert disk.status(torrent).state is TorrentState.MOVING
                fs.gate.set()  # piece 0 fails: the queued pieces are dropped, not written
        assert moved == [()]
        assert fs.writes == 1
        status = disk.status(torrent)
        assert status.state is TorrentState.READY
        assert status.error is None
        # No dropped piece passes for written: what the torrent has is what was on disk...
        assert disk.have(torrent) == frozenset(range(stored, many))
        events = drain(disk)
        assert not of_type(events, PieceVerified)
        assert not of_type(events, TorrentFailed)
        [problem] = of_type(events, StorageProblem)
        assert problem.reason.startswith("before the move: writing piece 0 failed")
        assert isinstance(problem.error, StorageError)
        assert problem.error.errno == errno.ENOSPC
        assert events[-1] == StorageMoved(torrent)
        # ... and what was on disk moved.
        assert new.read(PATH, 0, len(content)) == on_disk
        with trio.fail_after(10):
            assert await disk.write_block(torrent, 1, 0, content[PIECE : 2 * PIECE])
            await disk.wait_idle(torrent)
        assert 1 in disk.have(torrent)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert ["before its move" in message for message in warnings] == [True]
