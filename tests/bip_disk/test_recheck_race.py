"""DiskManager.recheck against what still runs when it is called: the last check's task
reporting late, a piece being written that fails afterwards, a second recheck, a cancelled
caller, a removal and the manager closing. The recheck waits for all of it, never overlaps
the last check, and the state after it is the new check's alone (the last check's
CheckFinished is not sent, even one that waited for room in the event queue)."""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from tests._disk_race import (
    MANY,
    PIECE,
    PIECES,
    READ_0,
    HeldFullFileSystem,
    call_then_open_gate,
    discarded,
    drain,
    entered,
    finished,
    make,
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
from bip_disk._errors import TorrentStateError
from bip_disk._events import (
    CheckFinished,
    DiskEvent,
    PieceDiscarded,
    TorrentFailed,
    TorrentHandle,
    TorrentRemoved,
    TorrentState,
)
from bip_disk._manager import DiskManager, open_disk_manager
from bip_disk._memory import MemoryFileSystem
from bip_metainfo import Metainfo


async def recheck_then_open_gate(
    disk: DiskManager, torrent: TorrentHandle, gate: threading.Event
) -> None:
    """Recheck ``torrent``, opening ``gate`` once the recheck waits (CHECKING) for what ran
    before it; then wait for the new check, which finds the torrent READY."""
    recheck = partial(disk.recheck, torrent)
    await call_then_open_gate(disk, torrent, recheck, TorrentState.CHECKING, gate)
    assert await disk.wait_checked(torrent) is TorrentState.READY


async def recheck_noting(
    disk: DiskManager, torrent: TorrentHandle, returned: list[int], which: int = 0
) -> None:
    """Recheck ``torrent``, then note ``which`` in ``returned``."""
    await disk.recheck(torrent)
    returned.append(which)


async def test_a_recheck_waits_for_the_failed_check_still_ending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One piece per batch: the check's two tasks hash pieces 0 and 1 at once.
    monkeypatch.setattr(_manager, "_BATCH_BYTES", PIECE)
    metainfo, content = make(tmp_path)
    fs = stored(content)
    async with open_disk_manager(hash_threads=2) as disk:
        with trio.fail_after(10):
            torrent, gate = await stopped_while_piece_0_is_read(disk, fs, metainfo)
            # The failed check's last batch comes back once the gate opens.
            await recheck_then_open_gate(disk, torrent, gate)
        # The old check did not take the recheck's state for its own: everything is hashed.
        assert disk.have(torrent) == frozenset(range(PIECES))
        events = drain(disk)
        assert not of_type(events, TorrentFailed)  # the one fault only
        # The old check ended after the recheck was called: only the new check tells.
        assert finished(events) == [CheckFinished(torrent, PIECES, PIECES, resumed=False)]


async def test_a_write_failing_after_the_recheck_began_does_not_stop_the_torrent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metainfo, content, fs = stored_but_piece_0(tmp_path)
    caplog.set_level(logging.WARNING, logger="bip_disk.manager")
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            torrent, gate = await writing_piece_0(disk, fs, metainfo, content, failing=True)
            # The write fails once the gate opens, with the recheck waiting for it.
            await recheck_then_open_gate(disk, torrent, gate)
        status = disk.status(torrent)
        assert status.error is None
        assert disk.have(torrent) == frozenset(range(1, PIECES))
        events = drain(disk)
        one_problem(events, "before the recheck: writing piece 0 failed", errno.EIO)
        assert finished(events)[-1] == CheckFinished(torrent, PIECES - 1, PIECES, resumed=False)
    assert "before its recheck: writing piece 0 failed" in caplog.text


async def test_a_second_recheck_joins_the_one_waiting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metainfo, content, fs = stored_but_piece_0(tmp_path)
    caplog.set_level(logging.INFO, logger="bip_disk.manager")
    returned: list[int] = []
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            torrent, gate = await writing_piece_0(disk, fs, metainfo, content, failing=False)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(recheck_noting, disk, torrent, returned, 1)
                nursery.start_soon(recheck_noting, disk, torrent, returned, 2)
                await trio.testing.wait_all_tasks_blocked()
                assert returned == []  # both wait for the piece being written
                gate.set()
            assert sorted(returned) == [1, 2]
            assert await disk.wait_checked(torrent) is TorrentState.READY
        assert disk.have(torrent) == frozenset(range(PIECES))
        # The add's check and one recheck.
        assert len(finished(drain(disk))) == 2
    assert caplog.text.count("rechecking torrent") == 1


async def test_a_cancelled_recheck_call_still_rechecks(tmp_path: Path) -> None:
    metainfo, content, fs = stored_but_piece_0(tmp_path)
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            torrent, gate = await writing_piece_0(disk, fs, metainfo, content, failing=False)
            with trio.move_on_after(0.05) as scope:
                await disk.recheck(torrent)
            assert scope.cancelled_caught
            assert disk.status(torrent).state is TorrentState.CHECKING
            gate.set()
            # Not left CHECKING with no check to end it.
            assert await disk.wait_checked(torrent) is TorrentState.READY
        assert disk.have(torrent) == frozenset(range(PIECES))
        assert finished(drain(disk))[-1] == CheckFinished(torrent, PIECES, PIECES, resumed=False)


async def test_a_removal_while_the_recheck_waits_ends_both(tmp_path: Path) -> None:
    metainfo, content, fs = stored_but_piece_0(tmp_path)
    returned: list[int] = []
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            torrent, gate = await writing_piece_0(disk, fs, metainfo, content, failing=False)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(recheck_noting, disk, torrent, returned)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(disk.remove_torrent, torrent)
                await trio.testing.wait_all_tasks_blocked()
                gate.set()
        assert returned == [0]  # given up quietly: the torrent is gone
        assert disk.statistics().torrents == 0
        events = drain(disk)
        assert events[-1] == TorrentRemoved(torrent, data_deleted=False)
        assert len(finished(events)) == 1  # the add's check only


async def test_closing_while_the_recheck_waits_starts_no_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metainfo, content, fs = stored_but_piece_0(tmp_path)
    caplog.set_level(logging.INFO, logger="bip_disk.manager")
    returned: list[int] = []
    with trio.fail_after(10):
        # The manager closes first, the nursery of the test's tasks then.
        async with trio.open_nursery() as nursery, open_disk_manager() as disk:
            torrent, gate = await writing_piece_0(disk, fs, metainfo, content, failing=False)
            nursery.start_soon(recheck_noting, disk, torrent, returned)
            await trio.testing.wait_all_tasks_blocked()
            assert disk.status(torrent).state is TorrentState.CHECKING
            nursery.start_soon(open_gate_once_closing, gate)
    assert returned == [0]
    assert "rechecking torrent" not in caplog.text
    events = [event async for event in disk.events()]
    assert len(finished(events)) == 1  # the add's check only


async def full_with_pieces_queued(
    disk: DiskManager, fs: HeldFullFileSystem, metainfo: Metainfo, content: bytes
) -> TorrentHandle:
    """A READY torrent of MANY pieces, none stored, all written to a full disk: the one at
    ``fs.held_at`` waits at the gate on the only hashing thread, the others are queued."""
    torrent = await disk.add_torrent(metainfo, fs)
    assert await disk.wait_checked(torrent) is TorrentState.READY
    await queue_pieces_on_a_full_disk(disk, fs, torrent, content, MANY)
    return torrent


async def test_a_full_disk_under_a_queue_of_pieces_is_one_problem_before_the_recheck(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metainfo, content = make(tmp_path, MANY)
    fs = HeldFullFileSystem(held=0)
    caplog.set_level(logging.WARNING, logger="bip_disk.manager")
    async with open_disk_manager(hash_threads=1) as disk:
        with trio.fail_after(10):
            torrent = await full_with_pieces_queued(disk, fs, metainfo, content)
            await recheck_then_open_gate(disk, torrent, fs.gate)
        assert fs.writes == 1  # the queued pieces were dropped once the first write failed
        assert disk.have(torrent) == frozenset()
        events = drain(disk)
        one_problem(events, "before the recheck: writing piece 0 failed", errno.ENOSPC)
        # Every piece has its verdict: none was stored.
        assert discarded(events) == list(range(MANY))
        reasons = [event.reason for event in of_type(events, PieceDiscarded)]
        assert reasons[0].startswith("writing piece 0 failed")
        assert reasons[1].startswith("not written: before the recheck: writing piece 0 failed")
        # Nothing stored to hash: the recheck found the file absent.
        assert finished(events)[-1] == CheckFinished(torrent, 0, 0, resumed=False)
    assert caplog.text.count("before its recheck") == 1


async def test_the_faults_of_a_batch_while_the_recheck_waits_are_told_once_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metainfo, content = make(tmp_path, MANY)
    fs = HeldFullFileSystem(held=5 * PIECE)
    fs.spared.add(fs.held_at)  # written: the next batch, every other piece, then fails at once
    caplog.set_level(logging.DEBUG, logger="bip_disk.manager")
    async with open_disk_manager(hash_threads=1) as disk:
        with trio.fail_after(10):
            torrent = await full_with_pieces_queued(disk, fs, metainfo, content)
            await recheck_then_open_gate(disk, torrent, fs.gate)
        assert fs.writes == MANY
        assert disk.have(torrent) == {5}  # hashed again by the recheck: written well
        events = drain(disk)
        one_problem(events, "before the recheck: writing piece 0 failed")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert ["before its recheck" in r.getMessage() for r in warnings] == [True]
    assert f"{MANY - 1} faults before its recheck, the first told" in caplog.text


async def test_closing_ends_the_writes_and_reads_waiting_for_a_check(tmp_path: Path) -> None:
    metainfo, content = make(tmp_path)
    fs = stored(content)
    gate = fs.hold(READ_0)  # the add's check waits on its thread
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
            gate.set()  # then the manager's exit ends: the check's thread returns

    with trio.fail_after(2):
        # The caller's tasks outlive the manager (closed first): nothing of it would wake
        # them again.
        async with trio.open_nursery() as nursery, open_disk_manager(hash_threads=1) as disk:
            torrent = await disk.add_torrent(metainfo, fs)
            await entered(fs, READ_0)
            block = content[:PIECE]
            nursery.start_soon(wait_for_the_check, partial(disk.write_block, torrent, 0, 0, block))
            nursery.start_soon(wait_for_the_check, partial(disk.read_block, torrent, 1, 0, 10))
            await trio.testing.wait_all_tasks_blocked()
            assert disk.status(torrent).state is TorrentState.CHECKING
            nursery.start_soon(open_gate_once_both_failed)
    assert [str(error) for error in errors] == ["the disk manager is closing"] * 2


async def test_a_check_finished_waiting_for_room_is_not_sent_after_a_recheck(
    tmp_path: Path,
) -> None:
    (tmp_path / "first").mkdir()
    first, _ = make(tmp_path / "first", 4)
    metainfo, content = make(tmp_path)
    events: list[DiskEvent] = []
    async with open_disk_manager(event_buffer=1) as disk:
        with trio.fail_after(10):
            # The first torrent's CheckFinished fills the event queue.
            other = await disk.add_torrent(first, MemoryFileSystem(), check=False)
            await disk.wait_checked(other)
            torrent = await disk.add_torrent(metainfo, stored(content), check=False)
            while disk.status(torrent).state is not TorrentState.READY:
                await trio.sleep(0.001)
            # Its check is over; its CheckFinished waits for room, and the recheck comes.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(disk.recheck, torrent)
                await trio.testing.wait_all_tasks_blocked()
                async for event in disk.events():
                    events.append(event)
                    if isinstance(event, CheckFinished) and event.torrent == torrent:
                        break
    # What the recheck found, never what the check before it did (nothing, unchecked).
    assert finished(events) == [
        CheckFinished(other, 0, 0, resumed=False),
        CheckFinished(torrent, PIECES, PIECES, resumed=False),
    ]
