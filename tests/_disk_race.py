"""What the bip_disk race tests share (tests/bip_disk/test_move_race.py and
test_recheck_race.py): file systems whose calls wait at a gate and then fail, the torrent they
are tried on, and the set-ups that leave a move or a recheck waiting for what ran before it.

Imported as ``tests._disk_race``: the root conftest puts the repository's root on
``sys.path`` (tests/bip_disk is no package), as mypy finds it from the repository's root.
"""

from __future__ import annotations

import errno
import os
import random
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import trio
import trio.testing

from bip_disk._errors import StorageError
from bip_disk._events import (
    CheckFinished,
    DiskEvent,
    PieceDiscarded,
    StorageProblem,
    TorrentFailed,
    TorrentHandle,
    TorrentState,
)
from bip_disk._filesystem import Buffer
from bip_disk._manager import DiskManager
from bip_disk._memory import MemoryFileSystem
from bip_metainfo import Metainfo, create_torrent

__all__ = [
    "MANY",
    "PATH",
    "PIECE",
    "PIECES",
    "READ_0",
    "WRITE_0",
    "GatedFileSystem",
    "HeldFullFileSystem",
    "call_then_open_gate",
    "discarded",
    "drain",
    "entered",
    "finished",
    "make",
    "next_event",
    "of_type",
    "one_problem",
    "open_gate_once_closing",
    "queue_pieces_on_a_full_disk",
    "stopped_while_piece_0_is_read",
    "stored",
    "stored_but_piece_0",
    "writing_piece_0",
]

PIECE = 16384
PIECES = 8
MANY = 64  # pieces of a torrent whose queued writes fail
PATH = "t/a"
WRITE_0 = ("write", 0)
READ_0, READ_1 = ("read", 0), ("read", PIECE)
E = TypeVar("E", bound=DiskEvent)
T = TypeVar("T")


class GatedFileSystem(MemoryFileSystem):
    """A MemoryFileSystem whose reads or writes at chosen offsets of ``t/a`` wait (on their
    thread) at a gate of their own, then fail once with EIO if told to.

    ``hold`` makes the calls at ``(operation, offset)`` wait until the gate it returns is set;
    ``entered`` tells when one waits; ``fail`` holds the ``(operation, offset)`` pairs whose
    next call fails (once: a later check or copy then reads the file like any other).
    """

    def __init__(self) -> None:
        super().__init__()
        self.gates: dict[tuple[str, int], threading.Event] = {}
        self.entered: dict[tuple[str, int], threading.Event] = {}
        self.fail: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def hold(self, key: tuple[str, int]) -> threading.Event:
        """Make the calls at ``key`` wait until the gate returned is set."""
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
        """Read, once past the gate of this offset (if any); fail if told to."""
        self._visit("read", path, offset)
        return super().read(path, offset, length)

    def write(self, path: str, offset: int, data: Buffer) -> None:
        """Write, once past the gate of this offset (if any); fail if told to."""
        self._visit("write", path, offset)
        super().write(path, offset, data)


class HeldFullFileSystem(MemoryFileSystem):
    """A MemoryFileSystem whose writes to ``t/a`` fail with ENOSPC once ``full`` is set (but
    at the offsets in ``spared``); the write at ``held_at`` waits (on its thread) until
    ``gate`` is set, then goes on. ``writes`` counts the writes tried."""

    def __init__(self, held: int = 0) -> None:
        super().__init__()
        self.full = False
        self.spared: set[int] = set()
        self.held_at = held
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.writes = 0

    def write(self, path: str, offset: int, data: Buffer) -> None:
        """Write, or fail as a full disk does (see the class)."""
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
    """A torrent of one file ``t/a`` of ``pieces`` random pieces, and that file's content."""
    root = tmp_path / "t"
    root.mkdir()
    content = random.Random(5).randbytes(pieces * PIECE)
    (root / "a").write_bytes(content)
    metainfo = create_torrent(root, piece_length=PIECE, creation_date=None, created_by=None)
    return metainfo, content


def stored(data: bytes) -> GatedFileSystem:
    """A GatedFileSystem holding ``data`` as ``t/a``."""
    fs = GatedFileSystem()
    fs.write(PATH, 0, data)
    return fs


def stored_but_piece_0(tmp_path: Path) -> tuple[Metainfo, bytes, GatedFileSystem]:
    """A torrent of :data:`PIECES` pieces (:func:`make`), its content, and a GatedFileSystem
    holding that content as ``t/a`` but with zeros for piece 0."""
    metainfo, content = make(tmp_path)
    return metainfo, content, stored(bytes(PIECE) + content[PIECE:])


def drain(disk: DiskManager) -> list[DiskEvent]:
    """The events queued now (the tests' torrents make far fewer than the queue holds)."""
    events = []
    while True:
        try:
            events.append(disk.events().receive_nowait())
        except trio.WouldBlock:
            return events


def of_type(events: list[DiskEvent], kind: type[E]) -> list[E]:
    """The events of ``kind``, in order."""
    return [event for event in events if isinstance(event, kind)]


def discarded(events: list[DiskEvent]) -> list[int]:
    """The pieces of the PieceDiscarded events, in order."""
    return [event.piece for event in of_type(events, PieceDiscarded)]


def finished(events: list[DiskEvent]) -> list[CheckFinished]:
    """The CheckFinished events, in order."""
    return of_type(events, CheckFinished)


def one_problem(events: list[DiskEvent], reason: str, code: int | None = None) -> None:
    """Check that ``events`` stop nothing (no TorrentFailed) and tell one StorageProblem,
    whose reason starts with ``reason`` and, given ``code``, whose error has that errno."""
    # Messages of their own: pytest rewrites the asserts of test modules only.
    assert not of_type(events, TorrentFailed), events
    problems = of_type(events, StorageProblem)
    assert len(problems) == 1, problems
    [problem] = problems
    assert problem.reason.startswith(reason), problem.reason
    if code is not None:
        assert isinstance(problem.error, StorageError), problem.error
        assert problem.error.errno == code, problem.error


async def next_event(disk: DiskManager, kind: type[DiskEvent]) -> list[DiskEvent]:
    """The events up to the first of ``kind``, that one included."""
    events = []
    async for event in disk.events():
        events.append(event)
        if isinstance(event, kind):
            return events
    raise AssertionError(f"the events ended before a {kind.__name__}")


async def entered(fs: GatedFileSystem, key: tuple[str, int]) -> None:
    """Wait until a held call of ``fs`` at ``key`` waits on its gate."""
    assert await trio.to_thread.run_sync(fs.entered[key].wait, 5)


async def writing_piece_0(
    disk: DiskManager, fs: GatedFileSystem, metainfo: Metainfo, content: bytes, *, failing: bool
) -> tuple[TorrentHandle, threading.Event]:
    """A READY torrent on ``fs`` (from :func:`stored_but_piece_0`) whose piece 0 is being written,
    held at the gate returned; the write then fails if ``failing``."""
    torrent = await disk.add_torrent(metainfo, fs)
    assert await disk.wait_checked(torrent) is TorrentState.READY
    assert disk.have(torrent) == frozenset(range(1, PIECES))
    gate = fs.hold(WRITE_0)
    if failing:
        fs.fail.add(WRITE_0)
    await disk.write_block(torrent, 0, 0, content[:PIECE])
    await entered(fs, WRITE_0)
    return torrent, gate


async def stopped_while_piece_0_is_read(
    disk: DiskManager, fs: GatedFileSystem, metainfo: Metainfo
) -> tuple[TorrentHandle, threading.Event]:
    """A torrent on ``fs`` (all stored) whose first check was stopped by reading piece 1
    failing while piece 0 is still being read, held at the gate returned (that read fails
    too if ``fs.fail`` holds READ_0).

    The manager must hash with two threads and one piece a batch (``_BATCH_BYTES``), so that
    the check reads both pieces at once.
    """
    gate_0, gate_1 = fs.hold(READ_0), fs.hold(READ_1)
    fs.fail.add(READ_1)
    torrent = await disk.add_torrent(metainfo, fs)
    await entered(fs, READ_0)
    await entered(fs, READ_1)
    gate_1.set()  # reading piece 1 stops the torrent, with piece 0 still being read
    await next_event(disk, TorrentFailed)
    assert disk.status(torrent).state is TorrentState.ERROR
    return torrent, gate_0


async def queue_pieces_on_a_full_disk(
    disk: DiskManager,
    fs: HeldFullFileSystem,
    torrent: TorrentHandle,
    content: bytes,
    pieces: int,
) -> None:
    """Fill ``fs`` and write pieces 0 to ``pieces - 1`` of the READY ``torrent``: the one at
    ``fs.held_at`` first, which waits at the gate on the manager's only hashing thread, the
    others queued behind it."""
    fs.full = True
    first = fs.held_at // PIECE
    await disk.write_block(torrent, first, 0, content[fs.held_at : fs.held_at + PIECE])
    assert await trio.to_thread.run_sync(fs.entered.wait, 5)
    for piece in range(pieces):
        if piece != first:
            await disk.write_block(torrent, piece, 0, content[piece * PIECE : (piece + 1) * PIECE])
    assert disk.status(torrent).queued_pieces == pieces


async def call_then_open_gate(
    disk: DiskManager,
    torrent: TorrentHandle,
    call: Callable[[], Awaitable[T]],
    state: TorrentState,
    gate: threading.Event,
) -> T:
    """Start ``call`` (a move or recheck of ``torrent``) in a task; once it waits for what
    ran before it, with ``torrent`` in ``state``, open ``gate``. What the call returned."""
    returned: list[T] = []

    async def run() -> None:
        returned.append(await call())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        assert disk.status(torrent).state is state
        gate.set()
    [result] = returned
    return result


async def open_gate_once_closing(gate: threading.Event) -> None:
    """Open ``gate`` once every task is blocked: started as the manager closes, whose exit
    waits for the held call, so everything else is blocked then."""
    await trio.testing.wait_all_tasks_blocked()
    gate.set()
