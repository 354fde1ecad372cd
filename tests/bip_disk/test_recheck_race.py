"""DiskManager.recheck against what still runs when it is called: the last check's task
reporting late, a piece being written that fails afterwards, a second recheck, a cancelled
caller, a removal and the manager closing. The recheck waits for all of it, never overlaps
the last check, and the state after it is the new check's alone."""

from __future__ import annotations

import errno
import logging
import os
import random
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from bip_disk import _manager
from bip_disk._errors import StorageError, TorrentStateError
from bip_disk._events import (
    CheckFinished,
    DiskEvent,
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


class GatedFileSystem(MemoryFileSystem):
    """A MemoryFileSystem whose reads or writes at chosen offsets of ``t/a`` wait (on their
    thread) until ``gate`` is set, or fail with EIO.

    ``hold`` and ``fail`` hold ``(operation, offset)`` pairs; ``entered`` is set when a held
    call starts waiting, and a failing call waits for that while some call is to be held.
    """

    def __init__(self) -> None:
        super().__init__()
        self.hold: set[tuple[str, int]] = set()
        self.fail: set[tuple[str, int]] = set()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def _visit(self, operation: str, path: str, offset: int) -> None:
        if path != PATH:
            return
        if (operation, offset) in self.hold:
            self.entered.set()
            # Bounded: a test that never opens the gate fails here instead of hanging.
            assert self.gate.wait(10)
        if (operation, offset) in self.fail:
            if self.hold:  # fail once the held call waits, so that both are under way
                assert self.entered.wait(10)
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
    """A MemoryFileSystem whose writes to ``t/a`` fail with ENOSPC once ``full`` is set (but
    at the offsets in ``spared``); the write at ``held_at`` waits (on its thread) until
    ``gate`` is set, then goes on. ``writes`` counts the writes tried."""

    def __init__(self, held: int) -> None:
        super().__init__()
        self.full = False
        self.spared: set[int] = set()
        self.held_at = held
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.writes = 0

    def write(self, path: str, offset: int, data: Buffer) -> None:
        if path == PATH and self.full:
            self.writes += 1
            if offset == self.held_at:
                self.entered.set()
                assert self.gate.wait(10)  # bounded: a test that fails does not hang
            if offset not in self.spared:
                raise StorageError(
                    f"write {path}: {os.strerror(errno.ENOSPC)}", errno=errno.ENOSPC, path=path
                )
        super().write(path, offset, data)


def make(tmp_path: Path, pieces: int = PIECES) -> tuple[Metainfo, bytes]:
    root = tmp_path / "t"
    root.mkdir()
    content = random.Random(3).randbytes(pieces * PIECE)
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


async def entered(fs: GatedFileSystem) -> None:
    """Wait until a held call of ``fs`` waits on its gate."""
    assert await trio.to_thread.run_sync(fs.entered.wait, 5)


def finished(events: list[DiskEvent]) -> list[CheckFinished]:
    return [event for event in events if isinstance(event, CheckFinished)]


async def with_piece_written_on_hold(
    disk: DiskManager, fs: GatedFileSystem, metainfo: Metainfo, content: bytes
) -> TorrentHandle:
    """A READY torrent whose piece 0 (zeros on disk) is being written, held at the gate."""
    torrent = await disk.add_torrent(metainfo, fs)
    assert await disk.wait_checked(torrent) is TorrentState.READY
    assert disk.have(torrent) == frozenset(range(1, PIECES))
    fs.hold.add(("write", 0))
    await disk.write_block(torrent, 0, 0, content[:PIECE])
    await entered(fs)
    return torrent


def stored_but_piece_0(content: bytes) -> GatedFileSystem:
    fs = GatedFileSystem()
    fs.write(PATH, 0, bytes(PIECE) + content[PIECE:])
    return fs


async def test_a_recheck_waits_for_the_failed_check_still_ending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One piece per batch: the check's two tasks hash pieces 0 and 1 at once.
    monkeypatch.setattr(_manager, "_BATCH_BYTES", PIECE)
    metainfo, content = make(tmp_path)
    fs = GatedFileSystem()
    fs.write(PATH, 0, content)
    fs.hold.add(("read", 0))
    fs.fail.add(("read", PIECE))
    async with open_disk_manager(hash_threads=2) as disk:
        with trio.fail_after(10):
            torrent = await disk.add_torrent(metainfo, fs)
            await entered(fs)  # piece 0 is being read...
            async for event in disk.events():  # ... when reading piece 1 stops the torrent
                if isinstance(event, TorrentFailed):
                    break
            assert disk.status(torrent).state is TorrentState.ERROR
            fs.fail.clear()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(disk.recheck, torrent)
                await trio.testing.wait_all_tasks_blocked()
                assert disk.status(torrent).state is TorrentState.CHECKING
                fs.gate.set()  # the failed check's last batch comes back
            assert await disk.wait_checked(torrent) is TorrentState.READY
        # The old check did not take the recheck's state for its own: everything is hashed.
        assert disk.have(torrent) == frozenset(range(PIECES))
        events = drain(disk)
        assert not [e for e in events if isinstance(e, TorrentFailed)]  # the one fault only
        # The old check ended after the recheck was called: only the new check tells.
        assert finished(events) == [CheckFinished(torrent, PIECES, PIECES, resumed=False)]


async def test_a_write_failing_after_the_recheck_began_does_not_stop_the_torrent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metainfo, content = make(tmp_path)
    fs = stored_but_piece_0(content)
    fs.fail.add(("write", 0))
    caplog.set_level(logging.WARNING, logger="bip_disk.manager")
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            torrent = await with_piece_written_on_hold(disk, fs, metainfo, content)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(disk.recheck, torrent)
                await trio.testing.wait_all_tasks_blocked()
                fs.gate.set()  # the write fails now, with the recheck waiting for it
            assert await disk.wait_checked(torrent) is TorrentState.READY
        status = disk.status(torrent)
        assert status.error is None
        assert disk.have(torrent) == frozenset(range(1, PIECES))
        events = drain(disk)
        assert not [e for e in events if isinstance(e, TorrentFailed)]
        [problem] = [e for e in events if isinstance(e, StorageProblem)]
        assert problem.reason.startswith("before the recheck: writing piece 0 failed")
        assert isinstance(problem.error, StorageError)
        assert problem.error.errno == errno.EIO
        assert finished(events)[-1] == CheckFinished(torrent, PIECES - 1, PIECES, resumed=False)
    assert "before its recheck: writing piece 0 failed" in caplog.text


async def test_a_second_recheck_joins_the_one_waiting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metainfo, content = make(tmp_path)
    fs = stored_but_piece_0(content)
    caplog.set_level(logging.INFO, logger="bip_disk.manager")
    returned: list[int] = []

    async def recheck(torrent: TorrentHandle, which: int) -> None:
        await disk.recheck(torrent)
        returned.append(which)

    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            torrent = await with_piece_written_on_hold(disk, fs, metainfo, content)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(recheck, torrent, 1)
                nursery.start_soon(recheck, torrent, 2)
                await trio.testing.wait_all_tasks_blocked()
                assert returned == []  # both wait for the piece being written
                fs.gate.set()
            assert sorted(returned) == [1, 2]
            assert await disk.wait_checked(torrent) is TorrentState.READY
        assert disk.have(torrent) == frozenset(range(PIECES))
        # The add's check and one recheck.
        assert len(finished(drain(disk))) == 2
    assert caplog.text.count("rechecking torrent") == 1


async def test_a_cancelled_recheck_call_still_rechecks(tmp_path: Path) -> None:
    metainfo, content = make(tmp_path)
    fs = stored_but_piece_0(content)
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            torrent = await with_piece_written_on_hold(disk, fs, metainfo, content)
            with trio.move_on_after(0.05) as scope:
                await disk.recheck(torrent)
            assert scope.cancelled_caught
            assert disk.status(torrent).state is TorrentState.CHECKING
            fs.gate.set()
            # Not left CHECKING with no check to end it.
            assert await disk.wait_checked(torrent) is TorrentState.READY
        assert disk.have(torrent) == frozenset(range(PIECES))
        assert finished(drain(disk))[-1] == CheckFinished(torrent, PIECES, PIECES, resumed=False)


async def test_a_removal_while_the_recheck_waits_ends_both(tmp_path: Path) -> None:
    metainfo, content = make(tmp_path)
    fs = stored_but_piece_0(content)
    returned: list[None] = []
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            torrent = await with_piece_written_on_hold(disk, fs, metainfo, content)

            async def recheck() -> None:
                await disk.recheck(torrent)
                returned.append(None)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(recheck)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(disk.remove_torrent, torrent)
                await trio.testing.wait_all_tasks_blocked()
                fs.gate.set()
        assert returned == [None]  # given up quietly: the torrent is gone
        assert disk.statistics().torrents == 0
        events = drain(disk)
        assert events[-1] == TorrentRemoved(torrent, data_deleted=False)
        assert len(finished(events)) == 1  # the add's check only


async def test_closing_while_the_recheck_waits_starts_no_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metainfo, content = make(tmp_path)
    fs = stored_but_piece_0(content)
    caplog.set_level(logging.INFO, logger="bip_disk.manager")
    returned: list[None] = []

    async def open_gate_once_closing() -> None:
        # The manager's exit waits for the held write: everything else is blocked then.
        await trio.testing.wait_all_tasks_blocked()
        fs.gate.set()

    with trio.fail_after(10):
        # The manager closes first, the nursery of the test's tasks then.
        async with trio.open_nursery() as nursery, open_disk_manager() as disk:
            torrent = await with_piece_written_on_hold(disk, fs, metainfo, content)

            async def recheck() -> None:
                await disk.recheck(torrent)
                returned.append(None)

            nursery.start_soon(recheck)
            await trio.testing.wait_all_tasks_blocked()
            assert disk.status(torrent).state is TorrentState.CHECKING
            nursery.start_soon(open_gate_once_closing)
    assert returned == [None]
    assert "rechecking torrent" not in caplog.text
    events = [event async for event in disk.events()]
    assert len(finished(events)) == 1  # the add's check only


MANY = 64  # pieces of a torrent whose queued writes all fail


async def full_with_pieces_queued(
    disk: DiskManager, fs: FullFileSystem, metainfo: Metainfo, content: bytes
) -> TorrentHandle:
    """A READY torrent of MANY pieces, none stored, all written to a full disk: the one at
    ``fs.held_at`` waits at the gate on the only hashing thread, the others are queued."""
    torrent = await disk.add_torrent(metainfo, fs)
    assert await disk.wait_checked(torrent) is TorrentState.READY
    fs.full = True
    first = fs.held_at // PIECE
    await disk.write_block(torrent, first, 0, content[fs.held_at : fs.held_at + PIECE])
    assert await trio.to_thread.run_sync(fs.entered.wait, 5)
    for piece in range(MANY):
        if piece != first:
            await disk.write_block(torrent, piece, 0, content[piece * PIECE : (piece + 1) * PIECE])
    assert disk.status(torrent).queued_pieces == MANY
    return torrent


async def recheck_once_held_write_ends(
    disk: DiskManager, fs: FullFileSystem, torrent: TorrentHandle
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(disk.recheck, torrent)
        await trio.testing.wait_all_tasks_blocked()
        assert disk.status(torrent).state is TorrentState.CHECKING
        fs.gate.set()
    assert await disk.wait_checked(torrent) is TorrentState.READY


async def test_a_full_disk_under_a_queue_of_pieces_is_one_problem_before_the_recheck(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metainfo, content = make(tmp_path, MANY)
    fs = FullFileSystem(held=0)
    caplog.set_level(logging.WARNING, logger="bip_disk.manager")
    async with open_disk_manager(hash_threads=1) as disk:
        with trio.fail_after(10):
            torrent = await full_with_pieces_queued(disk, fs, metainfo, content)
            await recheck_once_held_write_ends(disk, fs, torrent)
        assert fs.writes == 1  # the queued pieces were dropped once the first write failed
        assert disk.have(torrent) == frozenset()
        events = drain(disk)
        assert not [e for e in events if isinstance(e, TorrentFailed)]
        [problem] = [e for e in events if isinstance(e, StorageProblem)]
        assert problem.reason.startswith("before the recheck: writing piece 0 failed")
        assert isinstance(problem.error, StorageError)
        assert problem.error.errno == errno.ENOSPC
        # Nothing stored to hash: the recheck found the file absent.
        assert finished(events)[-1] == CheckFinished(torrent, 0, 0, resumed=False)
    assert caplog.text.count("before its recheck") == 1


async def test_the_faults_of_a_batch_while_the_recheck_waits_are_told_once_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metainfo, content = make(tmp_path, MANY)
    fs = FullFileSystem(held=5 * PIECE)
    fs.spared.add(fs.held_at)  # written: the next batch, every other piece, then fails at once
    caplog.set_level(logging.DEBUG, logger="bip_disk.manager")
    async with open_disk_manager(hash_threads=1) as disk:
        with trio.fail_after(10):
            torrent = await full_with_pieces_queued(disk, fs, metainfo, content)
            await recheck_once_held_write_ends(disk, fs, torrent)
        assert fs.writes == MANY
        assert disk.have(torrent) == {5}  # hashed again by the recheck: written well
        events = drain(disk)
        assert not [e for e in events if isinstance(e, TorrentFailed)]
        [problem] = [e for e in events if isinstance(e, StorageProblem)]
        assert problem.reason.startswith("before the recheck: writing piece 0 failed")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert ["before its recheck" in r.getMessage() for r in warnings] == [True]
    assert f"{MANY - 1} faults before its recheck, the first told" in caplog.text


async def test_closing_ends_the_writes_and_reads_waiting_for_a_check(tmp_path: Path) -> None:
    metainfo, content = make(tmp_path)
    fs = GatedFileSystem()
    fs.write(PATH, 0, content)
    fs.hold.add(("read", 0))  # the add's check waits on its thread
    errors: list[TorrentStateError] = []
    both_failed = trio.Event()

    async def wait_for_the_check(call: Callable[[], Awaitable[object]]) -> None:
        try:
            await call()
        except TorrentStateError as error:
            errors.append(error)
            if len(errors) == 2:
                both_failed.set()

    async def open_gate_once_both_failed() -> None:
        try:
            await both_failed.wait()
        finally:
            fs.gate.set()  # then the manager's exit ends: the check's thread returns

    with trio.fail_after(2):
        # The caller's tasks outlive the manager (closed first): nothing of it would wake
        # them again.
        async with trio.open_nursery() as nursery, open_disk_manager(hash_threads=1) as disk:
            torrent = await disk.add_torrent(metainfo, fs)
            await entered(fs)
            block = content[:PIECE]
            nursery.start_soon(wait_for_the_check, partial(disk.write_block, torrent, 0, 0, block))
            nursery.start_soon(wait_for_the_check, partial(disk.read_block, torrent, 1, 0, 10))
            await trio.testing.wait_all_tasks_blocked()
            assert disk.status(torrent).state is TorrentState.CHECKING
            nursery.start_soon(open_gate_once_both_failed)
    assert [str(error) for error in errors] == ["the disk manager is closing"] * 2
