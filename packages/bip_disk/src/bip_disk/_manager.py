"""The trio ``DiskManager``: verified piece storage with bounded memory and fast resume.

Open one with :func:`open_disk_manager`; add torrents with their
:class:`~bip_disk.FileSystem`; write the blocks peers send and read the blocks
peers ask for; take what happens from :meth:`DiskManager.events`::

    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(metainfo, NativeFileSystem("/downloads"))
        await disk.wait_checked(torrent)
        await disk.write_block(torrent, piece, begin, block)
        async for event in disk.events():
            ...

**A block's life.** :meth:`~DiskManager.write_block` copies the block into its
piece's buffer, a ``bytearray`` the size of the piece, allocated when the piece's
first block arrives. That allocation is what the in-flight bound counts: a write
that would start a new piece past ``max_in_flight_bytes`` waits until pieces are
written (blocks of pieces already started never wait, so pieces in progress can
always finish and the bound cannot deadlock; a piece nobody completes cannot hold
it for good either: while writes wait, pieces no block reached for over a minute
are dropped, each a :class:`~bip_disk.PieceDiscarded`). A new piece also waits while the
complete pieces queued for the hashing threads pass a few MiB per thread: the
queue drains on its own, and a shallow queue keeps every piece in the CPU caches
from the copy of its blocks to its hashing and writing. Once every byte of a
piece is in, the piece is queued; ``hash_threads`` workers take queued pieces in
batches (one thread crossing per batch, never per block) and on the thread:

1. hash each piece's in-memory bytes (v1 SHA-1, v2 merkle SHA-256 against the
   piece layer, or both for a hybrid torrent), one hashlib call per piece;
2. drop the bad ones: nothing of them is written, and
   :class:`~bip_disk.PieceVerified` says ``good=False``;
3. write the good ones to the FileSystem (consecutive bytes of a file at once:
   one ``pwritev`` for a run of pieces on a :class:`~bip_disk.NativeFileSystem`,
   each run as soon as its pieces are hashed), and only when every write of a
   piece returned is the piece added to :meth:`~DiskManager.have` (and so to
   resume data) and reported ``good=True``.

Fewer calls matter: each hashlib or write call releases the GIL, and a worker
whose call returns waits for the GIL while trio's thread copies blocks. A
written piece's buffer is kept for the next piece (within the in-flight bound,
and only if nothing else still references it): a fresh half-MiB ``bytearray`` is
mapped, faulted in and zeroed, which costs more than copying its blocks.

Hashing before writing means bad data never reaches the disk and a piece is
never reported good before its bytes are stored. "Stored" means the FileSystem
accepted them (for the native one, the OS has them: they survive the process
being killed); :meth:`~DiskManager.save_resume_data` with ``sync=True`` (the
default: what a client does at close) syncs the files before returning, so resume
data it makes survives a power cut too (once the caller has stored it durably),
as libtorrent's saved with ``flush_disk_cache``. With ``sync=False`` (a cheaper
periodic save) it survives the process being killed, not a power cut: it may
list pieces whose bytes were still in the OS's cache.

**Faults are events.** A failed write (disk full, permission denied, an I/O
error), a failed read of a verified piece (a file truncated or deleted behind our
back) or a failed check puts the torrent in state ``ERROR`` and sends a
:class:`~bip_disk.TorrentFailed`: pieces in memory are dropped, writes are refused,
the pieces already verified stay verified (except those a read found destroyed:
:class:`~bip_disk.PieceLost`), and nothing half written is ever reported good.
:meth:`~DiskManager.recheck` or :meth:`~DiskManager.move_storage` start it again.
A write that had to create its file again (deleted behind our back; the
FileSystem's ``write`` tells) loses the pieces that file held, each a
:class:`~bip_disk.PieceLost`, and the torrent goes on: they are fetched again.
Faults reported while one of those waits for what ran before it (pieces being
written, the last check ending) stop nothing: the first is one
:class:`~bip_disk.StorageProblem` and the others are only counted (a recheck
then drops the torrent's queued pieces, which it would hash again; a move lets
them be written, and copies what they wrote).

**Every complete piece gets a verdict**: :class:`~bip_disk.PieceVerified`, or
:class:`~bip_disk.PieceDiscarded` when it was not stored (its write failed, or a
fault stopped the torrent before it was written), so that whoever sent its blocks
knows to fetch it again. The fault itself is told once however many pieces it
cost; a removed torrent's pieces get no event. **Every block dropped is told** too:
the pieces still arriving that a stop, a recheck, a move keeping their files or the
wait for room (idle for over a minute) drops from memory are each a
:class:`~bip_disk.PieceDiscarded` (``"blocks dropped: ..."``),
so that a piece picker that counted those blocks as received asks for them again.

**Events** wait in a queue of ``event_buffer`` events. If nobody takes them, the
queue fills, the workers wait to report, pieces stay in memory and writes wait
for the in-flight bound: take the events. Each torrent's events come in the order
things happened to it, full queue or not: the blocks a move or recheck dropped come
before anything the check that follows says.

**Logging.** The logger ``bip_disk.manager`` tells the torrent's life at INFO (added,
checked, rechecked, moved, removed, files deleted) and its storage faults at WARNING (the
torrent stopped, pieces lost, files or links that could not be made, synced or
deleted), a few records per torrent whatever its size; pieces failing their hash
check and the manager's own opening and closing are DEBUG. Blocks are never
logged, and an exception raised to the caller is not logged above DEBUG.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import logging
import math
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final, Literal, cast

import trio

from bip_metainfo import Info, Metainfo, sanitize_name

from ._budget import ByteBudget, SpareBuffers
from ._check import check_pad_pieces, check_pieces, pieces_cut_short, plan_check, stat_files
from ._errors import DiskError, StorageError, TorrentStateError
from ._events import (
    CheckFinished,
    CheckProgress,
    DiskEvent,
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
from ._fileops import (
    Copied,
    CopyStopped,
    ExistingFiles,
    as_storage_error,
    copy_files,
    create_files,
    delete_files,
    refuse_existing,
    refuse_nested,
    same_storage,
    stat_stored,
    storage_faults,
)
from ._filesystem import Buffer, FileStat, FileSystem
from ._hashing import HashPool, PieceVerifier, default_hash_threads
from ._layout import StorageLayout, StoredFile, executable_creator, read_span_data
from ._native import NativeFileSystem
from ._readcache import LineCache, LineRead
from ._resume import RACY_WINDOW_NS, ResumeData
from ._torrent import BatchOut, PartialPiece, TorrentStatus, TorrentStorage

__all__ = [
    "DEFAULT_EVENT_BUFFER",
    "DEFAULT_IO_THREADS",
    "DEFAULT_MAX_IN_FLIGHT_BYTES",
    "DEFAULT_READ_CACHE_BYTES",
    "DiskManager",
    "DiskStatistics",
    "open_disk_manager",
]

DEFAULT_MAX_IN_FLIGHT_BYTES: Final = 64 * 1024 * 1024
"""Bytes of pieces held in memory (arriving, queued, being written) by default."""
DEFAULT_EVENT_BUFFER: Final = 4096
"""Events held until :meth:`DiskManager.events` takes them, by default."""
DEFAULT_READ_CACHE_BYTES: Final = 16 * 1024 * 1024
"""Bytes of recently read lines of pieces (up to 512 KiB each) kept to serve the next
blocks, by default."""
DEFAULT_IO_THREADS: Final = 4
"""Threads reading blocks and doing file operations at once, by default."""

_BATCH_BYTES: Final = 4 * 1024 * 1024  # pieces checked in one thread crossing, at most
# Complete pieces handed to a hashing thread at once, at most (a batch grows past
# it by one piece at most): one run to write (_RUN_BYTES). Trio's thread holds the
# GIL while it copies the blocks of the pieces a settled batch makes room for, and
# a hashing thread whose hashlib or write call returns meanwhile waits for it: the
# smaller the batch, the shorter those waits (measured on two idle cores, in noisy
# runs: 1 MiB batches 5 to 10 % faster than 4 MiB ones, for a little more CPU per
# crossing; 512 KiB ones slower again).
_FLUSH_BATCH_BYTES: Final = 1024 * 1024
# Complete pieces waiting for the hashing threads, per thread, beyond which a write
# that starts a new piece waits (see DiskManager._queue_full). A deeper queue holds
# nothing more back, but its pieces leave the CPU caches before they are hashed and
# written, and the buffers they lend to the next pieces are cold when blocks are
# copied into them.
_QUEUED_BYTES_PER_THREAD: Final = 8 * 1024 * 1024
# Bytes written by one call at most (a run grows past it by one piece's part at
# most). Two threads writing one file contend for its inode lock in the kernel; in
# calls of several MiB the one that waits burns CPU spinning (measured: up to 2 CPU
# s/GiB on a busy machine), in calls of 512 KiB or 1 MiB hardly.
_RUN_BYTES: Final = 1024 * 1024
# Handle ids are unique in the process, so a handle of one manager never names a
# torrent of another.
_IDS: Final = itertools.count(1)
# What a FileSystem call may raise: ours, but a third party's may let anything through
# (its backend's own ValueError...). A storage fault all the same, never a crash; what
# is not an Exception (trio.Cancelled, KeyboardInterrupt) passes.
_FAULTS: Final = (Exception,)
_READY: Final = TorrentState.READY
_IDLE_PIECE_SECONDS: Final = 60.0
"""How long a piece in memory may go without a block, while writes wait for room in the
in-flight bound, before it is dropped to make that room (see :meth:`DiskManager.write_block`).
bip_select's and libtorrent's request timeout: by then every request of its blocks has
timed out and gone to another peer, so a piece nothing reached for as long has nobody
sending it. (libtorrent holds no piece in memory, so it needs no such bound.)"""
# Idle is counted from the first look that finds a piece's count changed (or finds the
# piece): a piece is dropped once idle for the above, at most a look (1.25 times as long)
# after its last block; a write waits that long at most for it.
_IDLE_SCAN_SECONDS = _IDLE_PIECE_SECONDS / 4
_checkpoint_if_cancelled: Final = trio.lowlevel.checkpoint_if_cancelled
# How many references a settled piece's buffer has when nothing but the manager
# holds it (see DiskManager._recycle); without sys.getrefcount (not CPython),
# buffers are never recycled.
_getrefcount: Final = getattr(sys, "getrefcount", None)
_UNSHARED_REFS: Final = 3
_log: Final = logging.getLogger("bip_disk.manager")
# What add_torrent does with existing data, by (check, resume data given), for its log.
_CHECK_PLANS: Final = {
    (True, True): "checking the data its resume data does not vouch for",
    (True, False): "checking its data",
    (False, True): "trusting its resume data",
    (False, False): "not checking its data",
}

Allocation = Literal["none", "sparse", "full"]


@dataclass(frozen=True, slots=True)
class DiskStatistics:
    """A snapshot of a :class:`DiskManager` (:meth:`DiskManager.statistics`).

    Attributes:
        torrents: torrents added and not removed.
        in_flight_bytes: bytes of pieces in memory (arriving, queued, being written).
        max_in_flight_bytes: the bound on ``in_flight_bytes``.
        waiting_writes: writes waiting for room under the bound (or for the hashing
            threads to catch up before they start a new piece).
        partial_pieces: pieces whose blocks are arriving.
        queued_pieces: complete pieces waiting to be hashed and written, or on a thread.
        read_cache_bytes: bytes of lines of pieces kept to serve reads.
        hash_threads: threads hashing and writing pieces at most.
        pieces_good: pieces verified good and written since the manager opened.
        pieces_bad: pieces that failed verification.
        pieces_discarded: complete pieces not stored, each told by a
            :class:`~bip_disk.PieceDiscarded` (their write failed, or a fault stopped
            the torrent first); a removed torrent's dropped pieces are not counted, nor
            the pieces still arriving dropped from memory (``"blocks dropped: ..."``).
        blocks_ignored: blocks for pieces already had or already complete.
        events_dropped: events dropped because the event queue was closed (or full
            while the manager shut down).
    """

    torrents: int
    in_flight_bytes: int
    max_in_flight_bytes: int
    waiting_writes: int
    partial_pieces: int
    queued_pieces: int
    read_cache_bytes: int
    hash_threads: int
    pieces_good: int
    pieces_bad: int
    pieces_discarded: int
    blocks_ignored: int
    events_dropped: int


@dataclass(slots=True)
class _Job:
    """A complete piece on its way to a hashing thread."""

    torrent: TorrentStorage
    piece: int
    data: bytearray
    # Files (indices) a write of this piece's had to create, set by the flush thread: the
    # manager then looks for pieces lost with them (see DiskManager._lose_recreated).
    created_files: list[int] | None = None


@dataclass(slots=True, eq=False)
class _Owner:
    """A recheck or a move that owns a torrent while it waits for what ran before it to end
    (the last check's task, the pieces being written, the reads on a thread).

    The torrent is ``CHECKING`` or ``MOVING`` meanwhile, so nothing new starts and no
    other operation is accepted; what ran before may still report a fault, which is the
    owner's to judge (see :meth:`DiskManager._fail`), not a stop of the torrent.
    """

    operation: Literal["recheck", "move"]
    # Set once the wait is over (a recheck's check started or was given up): a second
    # recheck that joined this one returns then.
    settled: trio.Event = field(default_factory=trio.Event)
    # The first fault reported meanwhile and its reason: the torrent's, should the move be
    # given up (a recheck hashes everything again, so it never needs it).
    fault: tuple[DiskError, str] | None = None
    # Faults reported meanwhile: the first is told, the others (pieces queued when it came)
    # only counted, so that a full disk under a queue of thousands of pieces is one record
    # and one StorageProblem, not one per piece (each piece still gets its PieceDiscarded).
    faults: int = 0


@dataclass(slots=True, eq=False)
class _Turn:
    """An event of a task that waits in a torrent's backlog (see :meth:`DiskManager._emit`):
    the backlog's task gives it its turn, and the waiting task sends it itself, so that a
    cancellation while it waits means it is never sent (as trio's own send promises)."""

    event: DiskEvent
    # Set by the backlog's task: the earlier events are sent, this one may go now (or
    # the manager closes: nothing waits behind a backlog then).
    go: trio.Event = field(default_factory=trio.Event)
    # Set by the waiting task once it has sent its event or given up (cancelled): the
    # backlog's task then goes on, or skips the event if its turn never came.
    over: trio.Event = field(default_factory=trio.Event)


@dataclass(slots=True, eq=False)
class _Backlog:
    """A torrent's events that found the event queue full when their operation was decided
    (see :meth:`DiskManager._emit_later`), and those emitted after them while they wait: a
    task of the manager's lets them out one by one in the order they came, so that the
    queue keeps each torrent's order."""

    # An event to send (left by _emit_later), or a turn to give (an _emit waiting).
    entries: deque[DiskEvent | _Turn] = field(default_factory=deque)


# Outcome of one piece on a flush thread: True written good, False bad, None dropped
# (the torrent stopped), or the storage error that stopped the write.
_Outcome = bool | None | StorageError


def _flush(jobs: Sequence[_Job]) -> list[_Outcome]:
    """On a worker thread: hash each piece, and write the good ones (see the module doc).

    Consecutive bytes of one file are written in one call where the FileSystem
    can (a run, :func:`_write_run`), each run as soon as its pieces are hashed and
    the next piece starts another run: the bytes a run writes were just hashed on
    this thread and are still in its cache (a batch may hold several runs: pieces
    of several files, or of a torrent whose batch outgrows one run).
    Each hashlib or write call releases the GIL, and while trio's thread copies
    blocks this thread may wait milliseconds to take it back: so one hashlib call
    per piece, and as few writes as the pieces' layout allows.
    """
    outcomes: list[_Outcome] = []
    run: _Run | None = None
    for index, job in enumerate(jobs):
        torrent = job.torrent
        if torrent.stopped:
            outcomes.append(None)
            continue
        good = torrent.verifier.verify(job.piece, job.data)
        outcomes.append(good)
        if not good:
            continue
        view = memoryview(job.data)
        position = 0
        for span in torrent.layout.spans(job.piece):
            if not span.is_pad:
                part = (index, span.file_offset, view[position : position + span.length])
                if (
                    run is not None
                    and run.torrent is torrent
                    and run.path == span.path
                    and run.end == span.file_offset
                    and run.end - run.parts[0][1] < _RUN_BYTES
                ):
                    run.parts.append(part)
                    run.end += span.length
                else:
                    if run is not None:
                        _write_run(run, outcomes, jobs)
                    run = _Run(
                        torrent,
                        span.path,
                        span.file_index,
                        span.file_offset + span.length,
                        [part],
                    )
            position += span.length
    if run is not None:
        _write_run(run, outcomes, jobs)
    return outcomes


@dataclass(slots=True)
class _Run:
    """Consecutive bytes of one file, from one or more pieces of a batch, to write at once.

    ``parts`` are (index in the batch of the piece, offset in the file, its bytes).
    """

    torrent: TorrentStorage
    path: str
    file_index: int
    end: int
    parts: list[tuple[int, int, memoryview]]


def _write_run(run: _Run, outcomes: list[_Outcome], jobs: Sequence[_Job]) -> None:
    """Write a run of ``jobs`` (see :func:`_flush`). A write that had to create the file
    is noted on the run's first job, for the manager to look for the pieces the file held
    before it was deleted behind our back (see ``DiskManager._lose_recreated``)."""
    created = False
    torrent, parts = run.torrent, run.parts
    if torrent.stopped:
        for index, _, _ in parts:
            if outcomes[index] is True:
                outcomes[index] = None
        return
    fs = torrent.fs
    if run.path in torrent.unmade_executables:
        # A BEP 47 executable file, created executable by its first write (as libtorrent
        # gives it 0o777 when it first opens it for writing), not up front: a file no
        # piece was written to (one the user deselected) is not created at all.
        create_executable = executable_creator(fs)
        try:
            with storage_faults(run.path):
                if create_executable is not None:
                    # A no-op for a file that is there.
                    created = create_executable(run.path) is True
        except StorageError as error:
            fault = _without_frames(error)
            for index, _, _ in parts:
                if outcomes[index] is True:
                    outcomes[index] = fault  # not written: as a failed write
            return
        # Only once it is there: a flush thread writing the same file meanwhile creates
        # it too (one of the two finds it made), rather than write it into being 0o666.
        torrent.unmade_executables.discard(run.path)
    # NativeFileSystem writes a run with one pwritev. (A subclass overriding write,
    # to count or fail writes, keeps seeing every write.)
    if len(parts) > 1 and type(fs).write is NativeFileSystem.write:
        try:
            with storage_faults():
                created |= (
                    cast(NativeFileSystem, fs)._write_vectored(
                        run.path, parts[0][1], [view for _, _, view in parts]
                    )
                    is True
                )
        except StorageError:
            pass  # again piece by piece below, to tell which pieces failed
        else:
            if created:
                _note_created(run, jobs)
            return
    for index, offset, view in parts:
        if outcomes[index] is not True:
            continue  # a part of this piece failed already: the rest is not written
        try:
            with storage_faults():
                # True or False from ours; None (nothing told) from an older third party's.
                created |= fs.write(run.path, offset, view) is True
        except StorageError as error:
            outcomes[index] = _without_frames(error)
    if created:
        _note_created(run, jobs)


def _note_created(run: _Run, jobs: Sequence[_Job]) -> None:
    """On the flush thread: a write of ``run`` had to create its file (noted on the job
    of the run's first part; nothing else is done here, the torrent's state is the trio
    thread's)."""
    job = jobs[run.parts[0][0]]
    if job.created_files is None:
        job.created_files = []
    job.created_files.append(run.file_index)


def _fault_of(error: Exception, torrent: TorrentHandle, doing: str) -> StorageError:
    """``error``, raised on a thread while ``doing``, as the torrent's fault (no frames).

    ``_FAULTS`` catches every exception, also one from our own code run there
    (:func:`plan_check`, :func:`check_pieces`): one that is neither an OSError nor
    one of ours is logged at DEBUG with its traceback first, which the fault loses,
    so a bug of ours is not silent.
    """
    if not isinstance(error, (OSError, DiskError)):  # our own faults are not bugs
        _log.debug(
            "torrent %r (%s): %s raised %s, taken as a storage fault",
            torrent.name,
            torrent.info_hash.hex(),
            doing,
            type(error).__name__,
            exc_info=error,
        )
    return _without_frames(as_storage_error(error))


def _without_frames(error: StorageError) -> StorageError:
    """``error`` without the tracebacks of it and its causes, returned.

    Their frames (this thread's: :func:`_flush`, :func:`_write_run`, the write)
    hold the batch's piece buffers, which the error, kept as the torrent's fault
    and sent in its :class:`~bip_disk.TorrentFailed`, would keep in memory past
    the in-flight bound (each failing torrent its batch: a full disk fails them
    all). The messages of the chain stay.
    """
    link: BaseException | None = error
    for _ in range(8):  # a chain is a few links; the bound is against a cycle
        if link is None:
            break
        link.__traceback__ = None
        link = link.__cause__ or link.__context__
    return error


def _lost_pieces(fs: FileSystem, layout: StorageLayout, piece: int) -> set[int]:
    """On a worker thread, after a read of ``piece`` failed: every piece its files lost.

    A file now missing loses all its pieces; a shorter one those past its new end.
    The piece itself is always counted lost (its bytes could not be read).
    """
    lost = {piece}
    for span in layout.spans(piece):
        if span.is_pad:
            continue
        file = layout.files[span.file_index]
        try:
            with storage_faults(file.path):
                stat = fs.stat(file.path)
        except StorageError:
            stat = None
        lost.update(pieces_cut_short(layout, file, 0 if stat is None else stat.size))
    return lost


def _info_of(torrent: object) -> Info:
    """``torrent``'s info dictionary: a :class:`~bip_metainfo.Metainfo`'s or the
    :class:`~bip_metainfo.Info` itself; ``TypeError`` for anything else."""
    if isinstance(torrent, Metainfo):
        return torrent.info
    if isinstance(torrent, Info):
        return torrent
    raise TypeError(f"a torrent is a Metainfo or an Info, not {type(torrent).__name__}")


def _check_filesystem(filesystem: object) -> None:
    """Refuse what is not a :class:`FileSystem` (a TypeError, the caller's mistake)."""
    if not isinstance(filesystem, FileSystem):
        raise TypeError(f"{filesystem!r} does not implement the FileSystem protocol")


def _resume_of(info: Info, resume_data: bytes | ResumeData | None) -> ResumeData | None:
    """``resume_data`` decoded and checked against ``info`` (ResumeDataError if it is
    malformed or of another torrent)."""
    if resume_data is None:
        return None
    if isinstance(resume_data, ResumeData):
        resume = resume_data
    else:
        # The torrent's counts let the loader refuse data of another shape before it
        # builds its bitfield or file list (resume data is untrusted input).
        resume = ResumeData.from_bytes(
            resume_data, num_pieces=info.num_pieces, num_files=len(info.files)
        )
    resume.check_torrent(info.info_hash, info.num_pieces, len(info.files))
    return resume


class DiskManager:
    """Stores the pieces of many torrents; build it with :func:`open_disk_manager`.

    See the module documentation for how blocks become verified pieces, how
    memory is bounded and how faults are reported.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        max_in_flight_bytes: int,
        hash_threads: int,
        io_threads: int,
        read_cache_bytes: int,
        event_buffer: int,
    ) -> None:
        """Internal: use :func:`open_disk_manager`."""
        self._nursery = nursery
        self._budget = ByteBudget(max_in_flight_bytes)
        self._hash_pool = HashPool(hash_threads)
        self._io_pool = HashPool(io_threads)
        self._cache = LineCache(read_cache_bytes)
        self._spares = SpareBuffers()
        self._events_send, self._events_receive = trio.open_memory_channel[DiskEvent](event_buffer)
        # Complete pieces: bounded by the in-flight bound, since each holds its bytes.
        self._jobs_send, self._jobs_receive = trio.open_memory_channel[_Job](math.inf)
        self._workers = hash_threads
        # Bytes of complete pieces queued or on a thread, and the writes waiting for
        # that to fall below _max_queued_bytes before they start a new piece.
        self._queued_bytes = 0
        self._max_queued_bytes = hash_threads * _QUEUED_BYTES_PER_THREAD
        self._queue_room = trio.lowlevel.ParkingLot()
        # The most room a write found missing since the last look for idle pieces in
        # memory, and whether that look is going on (see _drop_idle_pieces).
        self._room_wanted = 0
        self._dropping_idle = False
        self._workers_running = 0
        self._workers_done = trio.Event()
        self._torrents: dict[int, TorrentStorage] = {}
        # Torrents removed with their data while move_storage copied them (see there).
        self._deleted_while_moving: set[int] = set()
        # Rechecks and moves waiting for what ran before them to end, by torrent id: one
        # at most per torrent (see _Owner, recheck and move_storage).
        self._owners: dict[int, _Owner] = {}
        # Events waiting for room in the queue, by torrent id (see _emit_later).
        self._backlogs: dict[int, _Backlog] = {}
        self._by_hash: dict[object, TorrentStorage] = {}
        # Info hashes of the torrents whose files delete_files is deleting: not added then.
        self._deleting: set[object] = set()
        self._closing = False
        self._pieces_good = 0
        self._pieces_bad = 0
        self._pieces_discarded = 0
        self._blocks_ignored = 0
        self._events_dropped = 0

    # -- public API: torrents ----------------------------------------------------------

    async def add_torrent(
        self,
        torrent: Metainfo | Info,
        filesystem: FileSystem,
        *,
        resume_data: bytes | ResumeData | None = None,
        check: bool = True,
        piece_layers: Mapping[bytes, bytes] | None = None,
        name: str | None = None,
        allocate: Allocation = "none",
        create_files: bool = True,
    ) -> TorrentHandle:
        """Add a torrent stored in ``filesystem``; its existing data is checked in the background.

        Returns at once with the torrent in state ``CHECKING``; progress comes as
        :class:`~bip_disk.CheckProgress` events, the end as
        :class:`~bip_disk.CheckFinished` (or wait with :meth:`wait_checked`).
        Writes and reads wait until the check ends.

        Args:
            torrent: a parsed .torrent (which carries v2 piece layers) or an info
                dictionary (from a magnet link's metadata).
            filesystem: where the torrent's files are (the caller owns it, and
                closes it after removing the torrent).
            resume_data: from :meth:`resume_data` or :meth:`save_resume_data`:
                pieces touching files unchanged since are not hashed again.
            check: hash existing data. Without, only resume data says what is had
                (pieces touching changed files are dropped rather than hashed) and
                a fresh download starts at once.
            piece_layers: v2 piece layers by pieces root, for an :class:`~bip_metainfo.Info`
                (a v2-only torrent needs them for every file larger than a piece).
            name: store the torrent under this name instead of its own.
            allocate: after the check, ``"sparse"`` sets every file's size,
                ``"full"`` also reserves the space (a full disk then shows up at
                once); ``"none"`` lets files grow as pieces are written.
            create_files: after the check (and after every recheck), create the
                missing empty files (and with ``allocate`` the others), their
                directories and BEP 47 links, as libtorrent does. False leaves the
                storage exactly as the check found it, so a verifying tool changes
                nothing; written pieces still create the files they touch, but links
                are then never made and ``allocate`` is ignored. Either way a BEP 47
                executable file is created executable, in a FileSystem that can (see
                :meth:`NativeFileSystem.create_executable
                <bip_disk.NativeFileSystem.create_executable>`), by whatever creates
                it first: this, or the first write touching it (so a non-empty one no
                piece touches is not created, unless allocated).

        Raises:
            TorrentStateError: the torrent is already added, or its files are being
                deleted (:meth:`remove_torrent` with ``delete_data``,
                :meth:`delete_files`), the manager is closing, or a v2-only torrent lacks
                piece layers.
            ResumeDataError: ``resume_data`` is malformed or of another torrent
                (add again without it to check everything).
            PathError: ``name`` is not usable.
        """
        self._check_open()
        if isinstance(torrent, Metainfo):
            info = torrent.info
            layers: dict[bytes, bytes] = dict(torrent.piece_layers)
        elif isinstance(torrent, Info):
            info = torrent
            layers = {}
        else:
            raise TypeError(f"a torrent is a Metainfo or an Info, not {type(torrent).__name__}")
        layers.update(piece_layers or {})
        _check_filesystem(filesystem)
        if allocate not in ("none", "sparse", "full"):
            raise ValueError(f"allocate must be 'none', 'sparse' or 'full', not {allocate!r}")
        self._check_new(info)
        resume = _resume_of(info, resume_data)
        layout = StorageLayout.from_info(info, name_override=name)
        # Checking piece layers hashes them all: a thread's work for a big torrent.
        verifier = await self._hash_pool.run(PieceVerifier, info, layers)
        self._check_open()
        self._check_new(info)
        shown = info.name if name is None else sanitize_name(name)
        handle = TorrentHandle(next(_IDS), info.info_hash, shown, info.num_pieces)
        storage = TorrentStorage(handle, info, layout, verifier, filesystem)
        storage.create_files = create_files
        self._torrents[handle.id] = storage
        self._by_hash[info.info_hash] = storage
        _log.info(
            "added torrent %r (%s): %d pieces in %d files, %s",
            shown,
            info.info_hash.hex(),
            info.num_pieces,
            len(layout.stored_files),
            _CHECK_PLANS[check, resume is not None],
        )
        self._start_check(storage, resume, check, allocate)
        return handle

    async def pieces_to_hash(
        self,
        torrent: Metainfo | Info,
        filesystem: FileSystem,
        *,
        resume_data: bytes | ResumeData | None = None,
        name: str | None = None,
    ) -> int:
        """How many pieces :meth:`add_torrent` with the same arguments would hash, as the
        files stand now: those resume data does not settle (of files changed since it was
        made, and racy files' unlisted pieces), of files there and long enough (0 when no
        file is there, or resume data vouches for every file). Pieces of pad bytes only
        are never counted: the check settles them without reading or hashing them.

        Every stored file is stat'ed once, on an I/O thread, and none is read: a caller
        that limits how many torrents hash at once (a client's queue of checks) learns
        whether this one's check would hash anything before it adds it, as libtorrent's
        ``checking_resume_data`` tells a full check from none. The files may change
        between this and :meth:`add_torrent`, whose own plan then decides.

        Raises:
            TypeError: ``torrent`` or ``filesystem`` is not one.
            TorrentStateError: the manager is closing.
            ResumeDataError: ``resume_data`` is malformed or of another torrent (as
                :meth:`add_torrent` would raise).
            PathError: ``name`` is not usable.
            StorageError: a file could not be stat'ed.
        """
        self._check_open()
        info = _info_of(torrent)
        _check_filesystem(filesystem)
        resume = _resume_of(info, resume_data)
        layout = StorageLayout.from_info(info, name_override=name)
        try:
            plan = await self._io_pool.run(plan_check, filesystem, layout, resume)
        except StorageError:
            raise
        except _FAULTS as error:
            raise as_storage_error(error) from error
        return len(plan.to_hash)

    async def remove_torrent(self, torrent: TorrentHandle, *, delete_data: bool = False) -> None:
        """Remove a torrent, and with ``delete_data`` its files and links.

        Pieces in memory are dropped, waiting writes fail, a check is stopped, and so
        is the copy of a :meth:`move_storage` (at its next chunk; what it copied is
        deleted); the call returns once no thread uses the torrent's files (a move
        that has switched deletes the old ones first: its events come before this
        call's). Without ``delete_data`` the files are synced. Failures to delete or
        sync come as :class:`~bip_disk.StorageProblem`; :class:`~bip_disk.TorrentRemoved`
        ends the torrent's events. With ``delete_data``, from the call on until the files
        are deleted (also a moving torrent's copy), :meth:`add_torrent` and
        :meth:`delete_files` refuse the torrent: its check would find every piece there,
        and the deletion would then take them from under it.

        Raises:
            TorrentStateError: the torrent is unknown or already removed.
        """
        storage = self._get(torrent)
        info_hash = storage.info.info_hash
        if delete_data:
            # Before it leaves _by_hash: until its files are deleted, the torrent must not
            # be added again (its check would find every piece, then lose the files under
            # it) nor its files deleted twice at once (see delete_files).
            self._deleting.add(info_hash)
        del self._torrents[torrent.id]
        self._by_hash.pop(info_hash, None)
        try:
            if delete_data and storage.state is TorrentState.MOVING:
                # The move deletes its copy too (one entry per move under way: the move
                # drops it).
                self._deleted_while_moving.add(torrent.id)
            storage.set_state(TorrentState.REMOVED)
            self._drop_partials(storage)
            if storage.check_scope is not None:
                storage.check_stop[0] = True
                storage.check_scope.cancel()
            with trio.CancelScope(shield=True):
                # Shielded: returning early would let a thread still write the files
                # that the caller is about to reuse or delete.
                while not storage.idle:
                    await storage.wait_changed()
                await storage.check_done.wait()
                self._cache.drop_torrent(torrent.id)
                try:
                    if delete_data:
                        problems = await self._io_pool.run(delete_files, storage.fs, storage.layout)
                    else:
                        problems = []
                        await self._io_pool.run(_sync, storage.fs)
                except StorageError as error:
                    problems = [error]
        finally:
            if delete_data:
                self._deleting.discard(info_hash)
        # Not shielded: a full event queue must not make this call uncancellable.
        _warn_problems(torrent, "removing it", problems)
        for problem in problems:
            await self._emit(StorageProblem(torrent, problem, f"removing the torrent: {problem}"))
        _log.info(
            "removed torrent %r (%s)%s",
            torrent.name,
            torrent.info_hash.hex(),
            " and deleted its files" if delete_data else "",
        )
        await self._emit(TorrentRemoved(torrent, delete_data))

    async def delete_files(
        self,
        torrent: Metainfo | Info,
        filesystem: FileSystem,
        *,
        name: str | None = None,
    ) -> list[StorageError]:
        """Delete the files and links of a torrent that is not added, then the directories
        that leaves empty: what :meth:`remove_torrent` with ``delete_data`` deletes, for a
        torrent that never reached the manager (a client's torrent waiting for its turn
        to be checked, or whose adding failed), as libtorrent's ``remove_torrent`` with
        ``delete_files`` deletes in every state.

        The torrent's layout (with ``name`` as :meth:`add_torrent` takes it) says which
        paths are its own: pad files are never touched (a file at a pad file's path is
        not the torrent's), nor is anything else in ``filesystem``, and a directory still
        holding something stays. Missing files are no error. Runs on one of the
        manager's I/O threads, never stopped half way: a cancellation waits for the
        deletion to end (and strikes at the caller's next checkpoint). Meanwhile the
        torrent cannot be added (nor its files deleted twice at once).

        Returns:
            The errors met, in order (deleting goes on past each one, and nothing is
            raised for them): empty when everything was deleted.

        Raises:
            TypeError: ``torrent`` or ``filesystem`` is not one.
            TorrentStateError: the manager has the torrent (its files are in use: remove
                it with :meth:`remove_torrent` and ``delete_data``), is deleting its files
                already (here, or for a removal with ``delete_data``), or is closing.
            PathError: ``name`` is not usable.
        """
        self._check_open()
        info = _info_of(torrent)
        _check_filesystem(filesystem)
        if info.info_hash in self._by_hash:
            raise TorrentStateError(
                f"torrent {info.info_hash.hex()} is added: its files are in use (remove it "
                "with remove_torrent and delete_data instead)"
            )
        self._check_new(info)  # not being deleted already
        layout = StorageLayout.from_info(info, name_override=name)
        shown = info.name if name is None else sanitize_name(name)
        self._deleting.add(info.info_hash)
        try:
            problems = await self._io_pool.run(delete_files, filesystem, layout)
        finally:
            self._deleting.discard(info.info_hash)
        # Logged as remove_torrent logs; the problems are the caller's (returned), so
        # they are counted here, not told.
        _log.info(
            "deleted the files of torrent %r (%s), which was not added%s",
            shown,
            info.info_hash.hex(),
            f"; {len(problems)} could not be deleted, the first: {problems[0]}" if problems else "",
        )
        return problems

    async def move_storage(
        self,
        torrent: TorrentHandle,
        filesystem: FileSystem,
        *,
        existing: ExistingFiles = ExistingFiles.REPLACE,
    ) -> tuple[str, ...]:
        """Move a torrent's files to another FileSystem (another disk, root or backend).

        Writes and reads wait while the files are copied; then the torrent switches
        to ``filesystem`` and the old files are deleted. Verified pieces stay
        verified, pieces in memory carry on into the new storage, and a torrent
        stopped by a fault of the old storage is ``READY`` again. On failure the
        copy is left as is (it may be partial), the torrent stays on its old
        storage and the error is raised. A ``filesystem`` that stores its files
        where the current one does (another view of the same root) is simply
        switched to: nothing is copied or deleted, whatever ``existing`` says. One
        whose root lies inside the current one's, or the other way round, where a
        file's new place is another file's old one (a torrent holding ``t/x`` and
        ``t/t/x`` moved one ``t`` deeper) is refused before anything is copied: the
        copy would overwrite files it has yet to read.

        The torrent is ``MOVING`` at once, and the copy starts once what ran before has
        ended: the last check's task, the pieces being written and the reads on a
        thread. A fault those report meanwhile is the old storage's: it does not stop
        the torrent (it comes as a :class:`~bip_disk.StorageProblem`, the first one only;
        the others are counted) and the move goes on, copying what is on disk. The pieces
        still queued are written meanwhile (a fault may be one piece's, an I/O error);
        each one not stored (its write failed too, or a fault stopped the torrent before
        the move) comes as a :class:`~bip_disk.PieceDiscarded`, never as had: fetch it
        again, into the new storage. Should the move then fail or be cancelled before the
        switch, the torrent stays on its old storage stopped by that fault
        (:class:`~bip_disk.TorrentFailed`), as it would have been without the move. A
        :meth:`recheck` meanwhile is refused, as a move is while a recheck waits to
        start.

        ``existing`` says what becomes of the torrent's files already in
        ``filesystem`` (see :class:`~bip_disk.ExistingFiles`): replaced (the
        default; one the old storage lacks is left as it is, as libtorrent leaves
        it); refused (``FAIL``:
        :class:`~bip_disk.DestinationExistsError` before anything is copied, or as
        soon as one appears during the copy); or
        kept (``KEEP``): neither copied nor written, and their old copies are not
        deleted. After a move that kept files the torrent is ``CHECKING`` while the
        pieces touching them are hashed from the new storage in the background, as
        after :meth:`add_torrent` with resume data (:class:`~bip_disk.CheckProgress`,
        then :class:`~bip_disk.CheckFinished` with ``resumed`` true; wait with
        :meth:`wait_checked`): those found bad are no longer in :meth:`have` (write
        them again), every other piece stays verified. Each change comes as an event of
        its own before the ``CheckFinished``, so that a user keeping its own record of
        the pieces across the move stays right: a :class:`~bip_disk.PieceLost` (reason
        ``"kept file differs"``) for each piece had and found bad, a
        :class:`~bip_disk.PieceVerified` ``good`` for each piece the kept files hold that
        was not had. Their pieces in memory are dropped, each a
        :class:`~bip_disk.PieceDiscarded` (``"blocks dropped: ..."``): request them again.

        Once the torrent has switched, the move is done: a cancellation then waits
        for the old files' deletion, and this returns normally (the cancellation
        strikes at the caller's next checkpoint), so that the caller always learns
        where the files are. A :meth:`remove_torrent` then waits for that deletion too
        (one job on a thread), so that the move's :class:`~bip_disk.StorageMoved` comes
        before the :class:`~bip_disk.TorrentRemoved`.

        A removal of the torrent (:meth:`remove_torrent`) or the manager closing
        during the copy stops it before its next chunk (of 4 MiB), so that neither
        waits for a copy it would refuse: the files the copy created or wrote over
        are deleted (one a ``REPLACE`` removed first is not brought back) with the
        folders that leaves empty (also one of the torrent's that was there, empty,
        before), those it had not reached and those ``KEEP`` left alone stay, and the
        torrent stays on its old storage (a removal deleting the data deletes it
        there). Deleting what failed is a WARNING.

        Returns:
            The torrent-relative paths of the files kept (``KEEP``), in the torrent's
            order; empty otherwise.

        Raises:
            TorrentStateError: the torrent is checking (also while a recheck waits to
                start), moving or removed (also when it is removed before or during the
                copy: a stopped copy is deleted, a finished one is left, or deleted if
                the removal deleted the data), or the manager is closing (also when it
                starts closing before the switch: the torrent then stays where it was;
                a stopped copy is deleted, a finished one is left).
            DestinationExistsError: ``FAIL``, and a file of the torrent is there.
            StorageError: copying failed; or ``EINVAL``, the storages are nested where
                the torrent's paths meet (see above).
        """
        storage = self._get(torrent)
        if not isinstance(filesystem, FileSystem):
            raise TypeError(f"{filesystem!r} does not implement the FileSystem protocol")
        if not isinstance(existing, ExistingFiles):
            raise TypeError(f"existing must be an ExistingFiles, not {existing!r}")
        self._check_open()
        if storage.state not in (TorrentState.READY, TorrentState.ERROR):
            raise TorrentStateError(f"cannot move {torrent!r} while {storage.state.value}")
        if filesystem is storage.fs:
            return ()
        try:
            return await self._move(storage, filesystem, existing)
        finally:
            self._deleted_while_moving.discard(torrent.id)

    async def _move(
        self, storage: TorrentStorage, filesystem: FileSystem, existing: ExistingFiles
    ) -> tuple[str, ...]:
        torrent = storage.handle
        previous = storage.state
        owner = self._owners[torrent.id] = _Owner("move")
        _take_over(storage, TorrentState.MOVING)
        try:
            try:
                # The last check's task may still be ending (reporting a fault): while it
                # runs, it could take the torrent for its own check started below.
                await storage.check_done.wait()
                while not storage.idle:
                    await storage.wait_changed()
            finally:
                # Nothing of the torrent runs now but the move (writes and reads wait for
                # MOVING to end): no fault can come from elsewhere until it ends.
                self._disown(torrent, owner)
            if not storage.is_in(TorrentState.MOVING):
                raise TorrentStateError(f"{torrent!r} was removed before its storage moved")
            # Closing meanwhile: the manager is syncing and leaving its torrents where they
            # are, as a recheck waiting then gives up too.
            self._check_open()
            # Nothing is queued now (idle, and writes wait while MOVING): the pieces in
            # memory carry on into the new storage once they complete.
            storage.stopped = False

            def stop() -> bool:
                # On the copy's thread, between chunks: a removal (which waits for the
                # copy) or the manager closing stops it there, rather than wait for a copy
                # that would be refused or deleted anyway. Reads of two attributes only.
                return self._closing or not storage.is_in(TorrentState.MOVING)

            storage.io_active += 1
            try:
                copy = await self._io_pool.run(
                    _copy_for_move, storage.fs, filesystem, storage.layout, existing, stop
                )
            except CopyStopped as stopped:
                # What the copy wrote is deleted; a removal deleting the data deletes the
                # old files, as ever.
                _warn_problems(torrent, "deleting the copy of a stopped move", stopped.problems)
                if storage.is_in(TorrentState.MOVING):
                    self._check_open()  # closing: refused as below, the torrent stays
                raise TorrentStateError(
                    f"{torrent!r} was removed while its storage moved"
                ) from None
            finally:
                storage.io_active -= 1
                storage.changed()  # a removal waits for the copy to end
            if storage.is_in(TorrentState.MOVING):
                self._check_open()  # closed during the copy: not switched to, as a failure
        except BaseException as error:
            if storage.is_in(TorrentState.MOVING):
                self._give_back(storage, previous, owner.fault)
            if isinstance(error, Exception):  # raised to the caller: DEBUG only
                _log.debug(
                    "moving torrent %r (%s) to %r failed: %s",
                    torrent.name,
                    torrent.info_hash.hex(),
                    filesystem,
                    error,
                )
            raise
        kept = copy.copied.kept if copy.copied is not None else ()
        if not storage.is_in(TorrentState.MOVING):
            # Removed during the copy (remove_torrent waited for it): the old files were
            # synced or deleted. A removal that deleted the data deletes the copy too.
            if torrent.id in self._deleted_while_moving and copy.copied is not None:
                # Counted as the torrent's I/O, and from before this task yields: the
                # removal, woken as the copy ended, waits for this deletion too, so that
                # the torrent cannot be added again until its copy is gone.
                storage.io_active += 1
                try:
                    with trio.CancelScope(shield=True):
                        problems = await self._io_pool.run(
                            functools.partial(
                                delete_files, filesystem, storage.layout, keep=_paths(kept)
                            )
                        )
                finally:
                    storage.io_active -= 1
                    storage.changed()
                _warn_problems(torrent, "deleting the copy of a removed torrent", problems)
            raise TorrentStateError(f"{torrent!r} was removed while its storage moved")
        # The switch: from here on the torrent is moved, whatever happens to the caller.
        old = storage.fs
        storage.fs = filesystem
        # Every executable file is expected again: one the copy did not create (the source
        # lacked it) is made executable by its first write there; for the copied ones the
        # exclusive create is a no-op.
        storage.expect_executables()
        storage.error = storage.reason = None
        self._cache.drop_torrent(torrent.id)
        checking = bool(kept)
        dropped: list[int] = []
        if checking:
            storage.check_done = trio.Event()  # the last one is set: awaited above
            storage.set_state(TorrentState.CHECKING)
            dropped = self._drop_partials_of(storage, kept)
        else:
            storage.set_state(TorrentState.READY)
        warnings = [] if copy.copied is None else list(copy.copied.warnings)
        # The deletion below uses the old files: counted as I/O of the torrent, so that a
        # removal meanwhile waits for it (it returns once no thread uses the torrent's
        # files) and its TorrentRemoved comes after this move's events, sent before the
        # count drops (TorrentRemoved ends the torrent's events).
        storage.io_active += 1
        try:
            if copy.copied is not None:
                # Shielded: the move is done, and the old files must not be left behind
                # because the caller gave up now (a bounded job on a thread).
                with trio.CancelScope(shield=True):
                    try:
                        warnings += await self._io_pool.run(
                            functools.partial(delete_files, old, storage.layout, keep=_paths(kept))
                        )
                    except StorageError as error:  # pragma: no cover - it collects errors
                        warnings.append(error)
            _warn_problems(torrent, "moving its storage", warnings)
            _log.info(
                "moved torrent %r (%s) to %r%s",
                torrent.name,
                torrent.info_hash.hex(),
                filesystem,
                " (the same storage: nothing copied)"
                if copy.copied is None
                else f"; kept {len(kept)} files found there, checking their pieces"
                if kept
                else "",
            )
            self._emit_later(
                [StorageProblem(torrent, w, f"moving storage: {w}") for w in warnings]
                + [StorageMoved(torrent)]
                + self._blocks_dropped(storage, dropped, "a file the move kept holds the piece")
            )
            if checking and storage.is_in(TorrentState.CHECKING):
                resume = _resume_after_keeping(storage, copy, kept)
                kept_files = frozenset(file.index for file in kept)
                self._start_check(storage, resume, True, "none", report=kept_files)
                checking = False
        finally:
            storage.io_active -= 1
            if checking:  # removed meanwhile: no check to end, and remove_torrent waits for it
                storage.check_done.set()
            storage.changed()  # a removal, recheck or wait_idle waits for the deletion
        return _paths(kept)

    def _give_back(
        self, storage: TorrentStorage, previous: TorrentState, fault: tuple[DiskError, str] | None
    ) -> None:
        """Leave a torrent whose move was given up where it was: in its ``previous`` state,
        or stopped by the ``fault`` its old storage reported while the move waited (the
        move told it as a problem then; the torrent stays on that storage, so it now
        stops the torrent as it would have). A torrent stopped before keeps its fault."""
        if fault is not None and previous is TorrentState.READY:
            # Without waiting: the caller may be cancelled, and the move is over.
            self._emit_later(self._stop(storage, *fault))
        else:
            storage.set_state(previous)

    def _drop_partials_of(self, storage: TorrentStorage, kept: Sequence[StoredFile]) -> list[int]:
        """Drop the pieces in memory that touch the ``kept`` files: the check after the
        move decides about those pieces (one completed meanwhile would be reported twice).
        Returns their indices, in order."""
        dropped: set[int] = set()
        for file in kept:
            for piece in storage.layout.file_pieces(file.index):
                if self._drop_partial(storage, piece):
                    dropped.add(piece)
        return sorted(dropped)

    async def recheck(self, torrent: TorrentHandle) -> None:
        """Forget what the torrent has and hash all its data again (in the background).

        Also the way to start a torrent a fault stopped, once the fault is fixed.
        Pieces in memory are dropped, and the torrent is ``CHECKING`` at once (writes
        and reads wait). The check starts once what ran before has ended: the last
        check's task, the pieces being written and the reads on a thread. Whatever
        those report meanwhile belongs to the torrent as it was: a fault then does not
        stop the torrent (it comes as a :class:`~bip_disk.StorageProblem`), and the
        state after the recheck is the new check's alone. Returns once the check has
        started (or has been given up because the torrent was removed or the manager
        closes meanwhile); a cancelled call still rechecks.

        Before it hashes, the check closes the FileSystem's open handles
        (:meth:`FileSystem.close <bip_disk.FileSystem.close>`), as libtorrent's
        ``force_recheck`` releases the files: a file replaced or deleted since they were
        opened is hashed, and then written, as it is now. A failure to close is one
        :class:`~bip_disk.StorageProblem`, and the check goes on.

        A call made while another recheck waits to start joins it, as libtorrent's
        ``force_recheck`` does nothing for a torrent already queued for checking: it
        returns when that one does, and only one check runs.

        While the recheck waits, the first fault reported is one WARNING and one
        :class:`~bip_disk.StorageProblem`, and the torrent's queued pieces are then
        dropped, not written (the check hashes everything again): a full disk under a
        queue of pieces is one problem, not one per piece (each dropped piece is a
        :class:`~bip_disk.PieceDiscarded`, as ever). A check still ending when this is
        called sends no :class:`~bip_disk.CheckFinished` (not even one waiting for room in
        the event queue): the recheck's own check sends the one that tells what the
        torrent has. The pieces in memory dropped are each a
        :class:`~bip_disk.PieceDiscarded` (``"blocks dropped: ..."``).

        Raises:
            TorrentStateError: the torrent is checking (also a recheck that has
                returned), moving or removed, or the manager is closing.
        """
        storage = self._get(torrent)
        self._check_open()
        owner = self._owners.get(torrent.id)
        if owner is None:
            if storage.state not in (TorrentState.READY, TorrentState.ERROR):
                raise TorrentStateError(f"cannot recheck {torrent!r} while {storage.state.value}")
            owner = self._owners[torrent.id] = _Owner("recheck")
            previous = storage.check_done
            if storage.check_finishing is not None:
                # The last check waits for room to send its CheckFinished (or the changes
                # the check after a KEEP move found, the torrent stopped by a fault since):
                # they would tell what this recheck forgets. A send cancelled while it
                # waits never happened.
                storage.check_finishing.cancel()
            _take_over(storage, TorrentState.CHECKING)
            storage.check_done = trio.Event()
            dropped = self._drop_partials(storage)
            # Without waiting: a cancelled call still rechecks, and tells what it dropped.
            self._emit_later(self._blocks_dropped(storage, dropped, "the torrent is rechecked"))
            # A task of the manager's does the waiting, so that a cancelled caller cannot
            # leave the torrent CHECKING with no check to end it.
            self._nursery.start_soon(self._recheck_when_settled, storage, previous, owner)
        elif owner.operation != "recheck":  # a move waits: it owns the torrent
            raise TorrentStateError(f"cannot recheck {torrent!r} while {storage.state.value}")
        await owner.settled.wait()

    async def _recheck_when_settled(
        self, storage: TorrentStorage, previous: trio.Event, owner: _Owner
    ) -> None:
        """Start the check of :meth:`recheck` once nothing of the torrent runs any more."""
        torrent = storage.handle
        checking = False
        try:
            # The last check's task may still be ending (reporting a fault, or its other
            # batches coming back): it must be gone before the new check takes its place.
            await previous.wait()
            while not storage.idle:
                await storage.wait_changed()
            if storage.is_in(TorrentState.CHECKING) and not self._closing:
                await self._release_files(storage)
            # Not CHECKING: removed meanwhile (remove_torrent waits for check_done).
            if storage.is_in(TorrentState.CHECKING) and not self._closing:
                del self._owners[torrent.id]  # the new check is the torrent's own
                storage.stopped = False  # stopped by a fault before or meanwhile: no longer
                storage.have.clear()
                storage.error = storage.reason = None
                self._cache.drop_torrent(torrent.id)
                _log.info("rechecking torrent %r (%s)", torrent.name, torrent.info_hash.hex())
                self._start_check(storage, None, True, "none")
                checking = True
        finally:
            self._disown(torrent, owner)
            if not checking:
                storage.check_done.set()
                storage.changed()

    async def _release_files(self, storage: TorrentStorage) -> None:
        """Close the FileSystem's open handles before a recheck (it reopens them on demand),
        as libtorrent's ``force_recheck`` releases the files first: a handle opened before
        would read a file replaced since through the old one (its bytes verified), or
        write the pieces fetched again into a deleted one. Nothing else uses the files
        meanwhile (``CHECKING``: writes and reads wait). A failure (a write error a close
        reports late) is a problem told, not a fault: the check that follows finds what
        it cost."""
        storage.io_active += 1
        try:
            await self._io_pool.run(_release, storage.fs)
        except StorageError as error:
            _warn_problems(storage.handle, "releasing its files before the recheck", [error])
            reason = f"releasing the files before the recheck failed: {error}"
            self._emit_later([StorageProblem(storage.handle, error, reason)])
        finally:
            storage.io_active -= 1
            storage.changed()  # a removal waits for the torrent's threads

    async def wait_checked(self, torrent: TorrentHandle) -> TorrentState:
        """Wait until the torrent's current check (if any) ends; returns its state then.

        Raises:
            TorrentStateError: the torrent is unknown or removed.
        """
        storage = self._get(torrent)
        await storage.check_done.wait()
        return storage.state

    async def wait_idle(self, torrent: TorrentHandle) -> None:
        """Wait until no complete piece of the torrent is queued or being written.

        Pieces still arriving do not count. Useful before saving resume data that
        should list every piece received so far.

        Raises:
            TorrentStateError: the torrent is unknown or removed.
        """
        storage = self._get(torrent)
        while not storage.idle:
            await storage.wait_changed()
        await trio.lowlevel.checkpoint()

    # -- public API: blocks ------------------------------------------------------------

    async def write_block(
        self, torrent: TorrentHandle, piece: int, begin: int, data: Buffer
    ) -> bool:
        """Store a block of a piece; returns False if the piece is already had or complete.

        The block is copied (``data`` may be reused at once). A block that starts
        a piece waits while the in-flight bound is reached, or while the hashing
        threads are a few MiB of complete pieces behind; writes also wait while
        the torrent is checking or moving. When the piece's last byte arrives, it
        is queued to be hashed and written: its :class:`~bip_disk.PieceVerified`
        event follows (or a :class:`~bip_disk.PieceDiscarded`, should it not be
        stored).

        While a write waits for room, pieces in memory that no block reached for
        a minute (their peers left, or nobody sends them: as long as a request takes to
        time out)
        are dropped to make it, the longest idle first, each a
        :class:`~bip_disk.PieceDiscarded` whose reason starts with ``"blocks dropped: "``
        (ask for it again): else such a piece would hold its room, which every torrent of
        the manager shares, for good. A caller with other blocks to store (of pieces
        already started, which never wait) asks :meth:`must_wait_for_room` first and keeps
        a block of a new piece aside rather than wait behind it: blocks of pieces already
        started are what frees the room.

        Raises:
            TorrentStateError: the torrent is unknown, removed or stopped by a
                fault, the block is not inside the piece, or the manager is closing
                (also when it starts closing while the write waits).
        """
        # The fast path, for every block of a piece but the first: the piece is in
        # memory and the torrent READY, so the block only needs to fit. It runs
        # once per 16 KiB block while the GIL is held, and so does its caller: a
        # worker thread that finished hashing waits for it, so every step counts.
        storage = self._torrents.get(torrent.id) if type(torrent) is TorrentHandle else None
        if (
            storage is not None
            and storage.state is _READY  # not while moving: see move_storage
            and type(piece) is int
            and type(begin) is int
        ):
            partial = storage.partial.get(piece)
            if partial is not None:
                view = memoryview(data)
                if begin >= 0 and 0 < view.nbytes <= partial.size - begin:
                    # Cancellation is honoured on every call, but the scheduler is
                    # entered only when a piece completes: a pass of trio's run loop
                    # per block would cost more than copying the block.
                    await _checkpoint_if_cancelled()
                    partial.add(begin, view)
                    if partial.received == partial.size:
                        await self._queue(storage, piece, partial)
                    return True
        view = memoryview(data)
        storage = self._get(torrent)
        self._check_block(storage, piece, begin, view.nbytes)
        await _checkpoint_if_cancelled()
        while True:
            self._check_open()
            if storage.state is not TorrentState.READY:
                await self._wait_usable(storage, writing=True)
                continue
            if piece in storage.have or piece in storage.flushing:
                self._blocks_ignored += 1
                return False
            partial = storage.partial.get(piece)
            if partial is not None:
                break
            if self._queue_full():
                await self._queue_room.park()
                continue  # things may have changed meanwhile: the loop decides
            size = storage.piece_size(piece)
            if not self._budget.grants_now(size):
                self._want_room(size)
            granted = await self._budget.take(size, storage, piece)
            if not granted:
                continue  # the torrent stopped or is checking: the loop decides
            if (
                self._closing
                or storage.state is not TorrentState.READY
                or piece in storage.partial
                or piece in storage.have
                or piece in storage.flushing
            ):
                self._budget.release(size)  # things changed while we waited
                continue
            partial = storage.new_partial(piece, self._spare_buffer(size))
            if self._budget.waiting:
                # Other writes of this piece waiting for room (a peer's and a web seed's
                # block) now write into it: room for a piece more would be taken for nothing,
                # and they would wait for it behind every write in line.
                self._budget.turn_away_piece(storage, piece)
            break
        partial.add(begin, view)
        if partial.received == partial.size:
            await self._queue(storage, piece, partial)
        return True

    def must_wait_for_room(self, torrent: TorrentHandle, piece: int) -> bool:
        """Whether a block of ``piece`` written now would wait for room to start the piece
        (the in-flight bound, or the hashing threads behind): never for a piece already
        in memory, had, or being written. While the torrent checks or moves, a block of
        any other piece would wait (for that, then for room): ``True`` then, so that the
        blocks behind it, which may complete the pieces in memory, need not wait with it.

        A caller storing blocks in order keeps such a block aside and stores the blocks
        behind it first: they may be those that complete the pieces in memory, which is
        what makes the room. Pieces idle in memory are dropped to make room asked for
        here as for a waiting write (see :meth:`write_block`).

        Raises:
            TypeError: ``torrent`` is not a :class:`TorrentHandle` (as for every method
                that takes one).
            TorrentStateError: the torrent is unknown or removed.
        """
        # Asked once per block (most of a piece in memory): that case first, and cheap.
        storage = self._torrents.get(torrent.id) if type(torrent) is TorrentHandle else None
        if storage is None:
            storage = self._get(torrent)  # raises the error that says why
        if (
            type(piece) is not int  # write_block refuses it at once
            or piece in storage.partial
            or not 0 <= piece < storage.layout.num_pieces
            or piece in storage.have
            or piece in storage.flushing
        ):
            return False
        if storage.state is not _READY:
            # The write waits for the check or move, then maybe for room: the caller's
            # other blocks must not wait behind it (no room is wanted yet: the write asks).
            return True
        if self._queue_full():
            return True  # drains on its own: no piece need be dropped for it
        size = storage.piece_size(piece)
        if self._budget.grants_now(size):
            return False
        self._want_room(size)
        return True

    def _want_room(self, size: int) -> None:
        """Note that a write found no room for ``size`` bytes: look for idle pieces."""
        self._room_wanted = max(self._room_wanted, size)
        if not self._dropping_idle and not self._closing:
            self._dropping_idle = True
            self._nursery.start_soon(self._drop_idle_pieces)

    async def _drop_idle_pieces(self) -> None:
        """While writes want room, drop the pieces in memory that got no block for
        ``_IDLE_PIECE_SECONDS``, the longest idle first, until they have it.

        Nothing is timed per block (the fast path stays as it is): each look notes how
        much of each piece had arrived, and a piece whose count has not changed since a
        look that long ago is idle.
        """
        budget = self._budget
        seen: dict[PartialPiece, tuple[int, float]] = {}
        try:
            while (self._room_wanted or budget.waiting) and not self._closing:
                wanted, self._room_wanted = self._room_wanted, 0
                now = trio.current_time()
                looked: dict[PartialPiece, tuple[int, float]] = {}
                idle: list[tuple[float, TorrentStorage, int, PartialPiece]] = []
                for storage in self._torrents.values():
                    if storage.state is not _READY:
                        continue  # a check or move decides about its pieces in memory
                    for piece, partial in storage.partial.items():
                        received, since = seen.get(partial, (partial.received, now))
                        if received != partial.received:
                            since = now
                        looked[partial] = (partial.received, since)
                        if now - since >= _IDLE_PIECE_SECONDS:
                            idle.append((since, storage, piece, partial))
                seen = looked
                idle.sort(key=lambda entry: entry[0])
                events: list[DiskEvent] = []
                for since, storage, piece, partial in idle:
                    if not budget.waiting and budget.grants_now(wanted):
                        break
                    self._drop_partial(storage, piece)  # lets the waiting writes in
                    del seen[partial]
                    idle_for = f"{now - since:.0f} s or more"
                    why = f"no block came for {idle_for} while writes waited for room"
                    events += self._blocks_dropped(storage, [piece], why)
                if events:
                    _log.debug("%d idle pieces in memory dropped to make room", len(events))
                    self._emit_later(events)
                await trio.sleep(_IDLE_SCAN_SECONDS)
        finally:
            self._dropping_idle = False

    def _queue_full(self) -> bool:
        """Whether a write that starts a new piece must wait for the hashing threads.

        Once the complete pieces waiting for the threads reach
        ``_max_queued_bytes`` (while below the in-flight bound, which bounds them
        anyway), new pieces wait: pieces already started never do, so the pieces
        in progress always finish. A new piece's buffer is then the one a piece
        just written lent (still in the caches), and the pieces queued are hashed
        soon after their blocks were copied, before they leave the caches: on a
        fast disk this saves the work of fetching every byte from memory twice
        more. The queue drains whatever the writers do (the threads need nothing
        from them), so the wait always ends.
        """
        return (
            self._queued_bytes >= self._max_queued_bytes
            and self._max_queued_bytes < self._budget.limit
        )

    async def _queue(self, storage: TorrentStorage, piece: int, partial: PartialPiece) -> None:
        """Hand a complete piece to the flush workers."""
        del storage.partial[piece]
        storage.flushing.add(piece)
        self._queued_bytes += len(partial.buffer)
        self._jobs_send.send_nowait(_Job(storage, piece, partial.buffer))
        await trio.lowlevel.cancel_shielded_checkpoint()  # let the flush workers run

    def _spare_buffer(self, size: int) -> bytearray | None:
        """A written piece's buffer for a piece of ``size`` bytes just granted, if any.

        Spare buffers and pieces in memory together stay within the in-flight
        bound (see :meth:`_recycle`), so the bound still bounds the memory.
        """
        spares = self._spares
        buffer = spares.take(size)
        if spares.bytes:
            # Writes granted room and not resumed yet take spares when they do.
            budget = self._budget
            spares.trim(budget.limit - budget.used + budget.pending)
        return buffer

    def _recycle(self, job: _Job) -> None:
        """Keep a settled piece's buffer for the next piece, if that is safe.

        Called before the piece's bytes leave the in-flight count, so that the
        buffer only changes from counted "in flight" to "spare": pieces in memory
        and spares never exceed the bound (beyond pieces granted and not started).
        A buffer anything else still references (a FileSystem that kept a view of
        what it was given) is left alone: reusing it would change those bytes.

        The memory held is the buffers of pieces started or queued plus the
        spares: the budget's ``used`` less what it granted to writes that have not
        resumed yet (``pending``: they allocate nothing until they do, and then
        take a spare). Counting those as held would turn away most buffers of a
        batch settled while writes wait for room, each then freed and allocated
        again by the next piece.
        """
        data = job.data
        budget = self._budget
        # References: job.data, ``data`` and getrefcount's argument; the flush
        # thread's views are gone once it has returned.
        if (
            _getrefcount is not None
            and _getrefcount(data) <= _UNSHARED_REFS
            and budget.used - budget.pending + self._spares.bytes <= budget.limit
        ):
            self._spares.give(data)

    def discard_piece(self, torrent: TorrentHandle, piece: int) -> bool:
        """Drop the blocks received so far of a piece (its peer left); returns whether any were.

        Raises:
            TorrentStateError: the torrent is unknown or removed.
        """
        return self._drop_partial(self._get(torrent), piece)

    def _drop_partial(self, storage: TorrentStorage, piece: int) -> bool:
        """Drop ``piece`` from memory, its room back in the in-flight bound; whether it was."""
        partial = storage.partial.pop(piece, None)
        if partial is None:
            return False
        self._budget.release(partial.size)
        return True

    async def read_block(
        self, torrent: TorrentHandle, piece: int, begin: int, length: int
    ) -> bytes:
        """Read a block of a piece the torrent has.

        The block is read (on a thread) with its line: lines of libtorrent 1.x's
        ``read_cache_line_size`` (32 blocks, 512 KiB), aligned in the piece
        (libtorrent reads ahead from the block). Lines are kept in a small cache
        shared by every torrent, so the following blocks of the line cost no thread
        crossing and a block never costs a read of its whole piece; blocks asked for
        while their line is read wait for that read. Reads wait while the torrent
        is checking or moving, and are served in state ``ERROR``.

        Raises:
            TorrentStateError: the torrent is unknown or removed, the piece is not
                had, the block is not inside the piece, or the manager closes while the
                read waits for a check or a move to end.
            StorageError: the read failed; the torrent is stopped, and the pieces
                the failure destroyed are no longer had (:class:`~bip_disk.PieceLost`).
        """
        storage = self._get(torrent)
        self._check_block(storage, piece, begin, length)
        span = self._cache.span(storage.piece_size(piece), begin, length)
        if span is None:  # across two lines, or a cache too small for one: the block alone
            return await self._read_alone(storage, piece, begin, length)
        line, start, end = span
        # Reads of a line on a thread now, by the line's offset in the torrent: the
        # blocks asked for meanwhile wait for it rather than read it again.
        key = piece * storage.layout.piece_length + start
        waited: LineRead | None = None
        while True:
            await self._wait_usable(storage, writing=False)
            if piece not in storage.have:
                # Lost meanwhile: by the read this one waited for, maybe (it says why).
                cause = None if waited is None else waited.error
                raise TorrentStateError(f"{torrent!r} does not have piece {piece}") from cause
            if waited is not None and waited.data is not None:
                # From the read itself, not the cache: lines that finished in the same
                # scheduler pass may have evicted it before this task ran.
                return waited.data[begin - start : begin - start + length]
            cached = self._cache.get(torrent.id, piece, line)
            if cached is not None:
                await trio.lowlevel.checkpoint()
                return cached[begin - start : begin - start + length]
            waited = storage.reading.get(key)
            if waited is None:
                break
            # Then the piece is looked at again: a recheck, a loss or a removal may have
            # come meanwhile. A read given up before its thread started (its caller was
            # cancelled) gave nothing: one of its waiters reads the line then.
            await waited.done.wait()
        reading = storage.reading[key] = LineRead()
        storage.io_active += 1
        try:
            data = reading.data = await self._io_pool.run(_read, storage, piece, start, end - start)
        except StorageError as error:
            reading.error = error
            await self._read_failed(storage, piece, error)
            raise
        finally:
            storage.io_active -= 1
            del storage.reading[key]
            reading.done.set()
            storage.changed()
        # Only verified data is kept: the piece may have been lost while we read (a
        # recheck, a move or a removal waits for the read, then drops the torrent's lines).
        # A caller cancelled meanwhile fills the cache all the same: the bytes are read, and
        # the blocks that waited for them would read the line again.
        if piece in storage.have:
            self._cache.put(torrent.id, piece, line, data)
        return data[begin - start : begin - start + length]

    async def _read_alone(
        self, storage: TorrentStorage, piece: int, begin: int, length: int
    ) -> bytes:
        """``read_block`` of a block read without its line and never cached."""
        await self._wait_usable(storage, writing=False)
        if piece not in storage.have:
            raise TorrentStateError(f"{storage.handle!r} does not have piece {piece}")
        storage.io_active += 1
        try:
            return await self._io_pool.run(_read, storage, piece, begin, length)
        except StorageError as error:
            await self._read_failed(storage, piece, error)
            raise
        finally:
            storage.io_active -= 1
            storage.changed()

    # -- public API: state -------------------------------------------------------------

    def events(self) -> trio.MemoryReceiveChannel[DiskEvent]:
        """The event stream, to iterate with ``async for`` (one stream per manager).

        It ends when the manager closes.
        """
        return self._events_receive

    def have(self, torrent: TorrentHandle) -> frozenset[int]:
        """The pieces verified and written.

        Raises:
            TorrentStateError: the torrent is unknown or removed.
        """
        return frozenset(self._get(torrent).have)

    def status(self, torrent: TorrentHandle) -> TorrentStatus:
        """A snapshot of the torrent's storage.

        Raises:
            TorrentStateError: the torrent is unknown or removed.
        """
        return self._get(torrent).status()

    def resume_data(self, torrent: TorrentHandle) -> bytes:
        """Resume data for the torrent now, without syncing (blocks briefly: it stats files).

        It lists the pieces verified and written (never pieces in memory) and the
        files' sizes and modification times. Made while the torrent is checking or
        moving, or after a check that did not complete (a fault stopped it part way:
        the pieces it had not hashed are unknown), it records no file, so the next start
        hashes everything; a check that completes (:meth:`recheck`) ends that (the
        check after a :attr:`~bip_disk.ExistingFiles.KEEP` move, of the kept files only,
        does not). A start with ``check=False`` hashes nothing: it completes, and the
        data made after it is dated no later than the mtime of each file holding a piece
        the start would otherwise have hashed (a file changed since, a piece not had of
        a file written just before the data was made) plus the racy window, less 1 ns:
        those files are racy, so the next start hashes their pieces the data does not
        list and trusts those it lists (a file dated before 1970, which cannot be made
        racy so, is recorded as absent). After a write fault it records none of the
        files that write touched (it may have created one again, deleted behind our
        back, before failing). It
        survives the process being killed; for it to survive a power cut, use
        :meth:`save_resume_data`.

        Raises:
            TorrentStateError: the torrent is unknown or removed.
            StorageError: a file could not be stat'ed.
        """
        storage = self._get(torrent)
        saved = _dated(storage)
        have, settled = frozenset(storage.have), _settled(storage)
        with storage_faults():
            stats = stat_files(storage.fs, storage.layout)
        return self._resume(storage, have, stats if settled else None, saved).to_bytes()

    async def save_resume_data(self, torrent: TorrentHandle, *, sync: bool = True) -> bytes:
        """Resume data for the torrent, after syncing its files (on a thread).

        Every piece listed was written before the sync started, so it is durable
        once this returns. A file written to within 2 s before the save started (FAT's
        modification-time granularity, the coarsest), or since, is *racy*: the next
        start hashes its pieces the data does not list, in case a write right after the
        save left its mtime unchanged (or came while the files synced). At a clean
        shutdown, saving again once writes have stopped for that long avoids the extra
        hashing. See :meth:`resume_data` for the files it records.

        Raises:
            TorrentStateError: the torrent is unknown or removed.
            StorageError: stat'ing or syncing failed.
        """
        storage = self._get(torrent)
        saved = _dated(storage)
        have, settled = frozenset(storage.have), _settled(storage)
        fs, layout = storage.fs, storage.layout

        def stat_and_sync() -> tuple[FileStat | None, ...]:
            with storage_faults():
                if sync:
                    fs.sync()
                return stat_files(fs, layout)

        stats = await self._io_pool.run(stat_and_sync)
        return self._resume(storage, have, stats if settled else None, saved).to_bytes()

    def statistics(self) -> DiskStatistics:
        """A frozen snapshot of the manager's counters."""
        torrents = self._torrents.values()
        return DiskStatistics(
            torrents=len(self._torrents),
            in_flight_bytes=self._budget.used,
            max_in_flight_bytes=self._budget.limit,
            waiting_writes=self._budget.waiting + len(self._queue_room),
            partial_pieces=sum(len(storage.partial) for storage in torrents),
            queued_pieces=sum(len(storage.flushing) for storage in torrents),
            read_cache_bytes=self._cache.bytes,
            hash_threads=self._workers,
            pieces_good=self._pieces_good,
            pieces_bad=self._pieces_bad,
            pieces_discarded=self._pieces_discarded,
            blocks_ignored=self._blocks_ignored,
            events_dropped=self._events_dropped,
        )

    # -- internals ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing:
            raise TorrentStateError("the disk manager is closing")

    def _check_new(self, info: Info) -> None:
        if info.info_hash in self._by_hash:
            raise TorrentStateError(f"torrent {info.info_hash.hex()} is already added")
        if info.info_hash in self._deleting:
            raise TorrentStateError(
                f"the files of torrent {info.info_hash.hex()} are being deleted"
            )

    def _get(self, torrent: TorrentHandle) -> TorrentStorage:
        if not isinstance(torrent, TorrentHandle):
            raise TypeError(f"a torrent is a TorrentHandle, not {type(torrent).__name__}")
        storage = self._torrents.get(torrent.id)
        if storage is None:
            raise TorrentStateError(f"{torrent!r} is not a torrent of this manager (removed?)")
        return storage

    @staticmethod
    def _check_block(storage: TorrentStorage, piece: int, begin: int, length: int) -> None:
        num_pieces = storage.layout.num_pieces
        if type(piece) is not int or not 0 <= piece < num_pieces:
            raise TorrentStateError(f"piece {piece!r} is not in 0..{num_pieces - 1}")
        partial = storage.partial.get(piece)
        size = partial.size if partial is not None else storage.piece_size(piece)
        if type(begin) is not int or type(length) is not int:
            raise TorrentStateError("a block's begin and length are integers")
        if begin < 0 or length <= 0 or begin + length > size:
            raise TorrentStateError(
                f"block {begin}+{length} is not inside piece {piece} of {size} bytes"
            )

    async def _wait_usable(self, storage: TorrentStorage, *, writing: bool) -> None:
        """Wait while the torrent checks or moves; raise if it cannot serve the operation.

        Closing the manager ends the wait (it wakes every torrent's waiters): a check it
        stops leaves the torrent ``CHECKING`` for good, and a move or recheck waiting then
        gives up, so nothing would ever wake the caller again.
        """
        while True:
            state = storage.state
            if state is TorrentState.REMOVED:
                raise TorrentStateError(f"{storage.handle!r} was removed")
            if state is TorrentState.ERROR and writing:
                raise TorrentStateError(f"{storage.handle!r} is stopped: {storage.reason}")
            if state is TorrentState.READY or state is TorrentState.ERROR:
                return
            self._check_open()
            await storage.wait_changed()

    def _drop_partials(self, storage: TorrentStorage) -> list[int]:
        """Drop every piece of ``storage`` in memory; returns their indices, in order."""
        # The torrent's waiters first, so that the room made next goes to others.
        self._budget.turn_away(storage)
        # Writes waiting for the queue look at their torrent again (others park again).
        self._queue_room.unpark_all()
        for partial in storage.partial.values():
            self._budget.release(partial.size)
        dropped = sorted(storage.partial)
        storage.partial.clear()
        return dropped

    def _blocks_dropped(
        self, storage: TorrentStorage, pieces: Sequence[int], why: str
    ) -> list[DiskEvent]:
        """One :class:`~bip_disk.PieceDiscarded` per piece in memory dropped for ``why``.

        Whoever sent those blocks counts them as received (a piece picker marks them
        finished) and would never ask for them again: as libtorrent's picker gets every
        block its storage drops back (``write_failed``, a recheck's fresh picker), the
        user is told to request them again. At most the in-flight bound's worth of pieces.
        """
        return [PieceDiscarded(storage.handle, piece, f"blocks dropped: {why}") for piece in pieces]

    def _resume(
        self,
        storage: TorrentStorage,
        have: frozenset[int],
        stats: tuple[FileStat | None, ...] | None,
        saved: int,
    ) -> ResumeData:
        if stats is None:
            # Pieces not checked yet (or files half moved) must not pass for missing next
            # time: recording every file as absent makes the next start hash them all.
            stats = (None,) * len(storage.layout.files)
        else:
            # Likewise the files a failed write may have created again (see _settle).
            unsure = set(storage.unsure_files)
            # Those holding pieces a start with check=False left unhashed (see _check) are
            # racy: dated no later than their mtime + the window - 1 (see is_racy). One
            # dated before 1970 cannot be (saved is not negative): no stat then. One
            # whose storage keeps no mtime (0) is hashed whole anyway.
            for index in storage.unhashed_files - unsure:
                stat = stats[index]
                if stat is not None and stat.mtime_ns:
                    if stat.mtime_ns + RACY_WINDOW_NS - 1 < 0:
                        unsure.add(index)
                    else:
                        saved = min(saved, stat.mtime_ns + RACY_WINDOW_NS - 1)
            if unsure:
                stats = tuple(None if i in unsure else stat for i, stat in enumerate(stats))
        return ResumeData(storage.info.info_hash, storage.layout.num_pieces, have, stats, saved)

    async def _emit_soon(self, event: DiskEvent) -> None:
        """:meth:`_emit`, without a schedule point while the queue has room.

        Settling a batch of pieces emits one event per piece: yielding to the
        scheduler for each would let the writer fill a whole piece in between,
        and hold up the next batch for the hashing threads.
        """
        # Not past the torrent's backlog: it exists until its last event is sent.
        if not self._closing and event.torrent.id not in self._backlogs:
            try:
                self._events_send.send_nowait(event)
            except trio.WouldBlock:
                pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._events_dropped += 1
                return
            else:
                return
        await self._emit(event)

    async def _emit(self, event: DiskEvent) -> None:
        """Send ``event``, waiting for room in the queue, and first for its torrent's events
        left to a task of the manager's (see :meth:`_emit_later`): each torrent's events keep
        their order (the blocks a move or recheck dropped are told before the check that
        follows says anything, and a piece is never told dropped after it is told verified).

        Behind a backlog the event takes its place at the end of it, so that what comes
        later (another waiting ``_emit``, more events left to the task) goes after it; its
        turn come, this task sends it, so that a cancellation before it is sent (a recheck
        cancels a check's CheckFinished) means it never is.
        """
        backlog = self._backlogs.get(event.torrent.id)
        if backlog is None or self._closing:
            await self._send(event)
            return
        turn = _Turn(event)
        backlog.entries.append(turn)
        try:
            await turn.go.wait()
            await self._send(event)
        finally:
            turn.over.set()

    async def _send(self, event: DiskEvent) -> None:
        """Put ``event`` in the queue, waiting for room (dropped, and counted, once the
        manager closes and the queue is full)."""
        if self._closing:
            try:
                self._events_send.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self._events_dropped += 1
            return
        try:
            await self._events_send.send(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._events_dropped += 1

    def _emit_later(self, events: Sequence[DiskEvent]) -> None:
        """Send ``events`` in order without waiting: those the queue has no room for now go
        out from a task of the manager's. For a call whose outcome is decided (a move that
        switched): a cancellation must not keep its events from the user, nor a full
        queue keep it from returning.

        The torrent's events that come after them wait for them (see :meth:`_emit`): a
        check that a move or recheck starts next emits from a task of its own, and the
        two would otherwise take turns at the queue (a piece told dropped after the check
        told it verified, which makes whoever follows the events drop a piece it has).
        """
        pending = deque(events)
        while pending:
            event = pending[0]
            backlog = self._backlogs.get(event.torrent.id)
            if backlog is not None:  # behind the torrent's events still waiting
                backlog.entries.append(pending.popleft())
                continue
            try:
                self._events_send.send_nowait(event)
            except trio.WouldBlock:
                if self._closing:
                    # As _emit does then; and the manager's nursery may be closed already,
                    # so no task could send them later.
                    self._events_dropped += len(pending)
                    return
                backlog = self._backlogs[event.torrent.id] = _Backlog()
                self._nursery.start_soon(self._send_backlog, event.torrent.id, backlog)
                continue  # the loop queues it there
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._events_dropped += len(pending)
                return
            pending.popleft()

    async def _send_backlog(self, torrent_id: int, backlog: _Backlog) -> None:
        """Let a torrent's backlog out in order, including what joined it meanwhile: send
        each event left to it, give each waiting :meth:`_emit` its turn and wait for it to
        be over; then (the backlog gone) the torrent's events go straight to the queue."""
        entries = backlog.entries
        try:
            while entries:
                entry = entries[0]
                if isinstance(entry, _Turn):
                    if not entry.over.is_set():  # else cancelled before its turn: not sent
                        entry.go.set()
                        await entry.over.wait()
                else:
                    await self._send(entry)
                entries.popleft()
        finally:
            # Cancelled only as the manager shuts down: the events left to us are dropped;
            # the waiting tasks (released at close already) send or drop their own.
            for entry in entries:
                if isinstance(entry, _Turn):
                    entry.go.set()
                else:
                    self._events_dropped += 1
            entries.clear()
            if self._backlogs.get(torrent_id) is backlog:
                del self._backlogs[torrent_id]

    async def _fail(self, storage: TorrentStorage, error: DiskError, reason: str) -> None:
        """Stop a torrent after a storage fault (the first fault is the one reported), and
        tell it, waiting for room in the event queue (see ``_fault``)."""
        for event in self._fault(storage, error, reason):
            await self._emit(event)

    def _fault(self, storage: TorrentStorage, error: DiskError, reason: str) -> list[DiskEvent]:
        """What ``_fail`` does, without a wait: the torrent is stopped (or the fault
        is kept by the recheck or move that waits), and the events that tell it are
        returned, for the caller to send."""
        if storage.state in (TorrentState.ERROR, TorrentState.REMOVED):
            return []
        handle = storage.handle
        owner = self._owners.get(handle.id)
        if owner is not None:
            # Reported by what ran before a recheck or move that waits for it (a write or
            # read under way, the last check ending): that operation decides the torrent's
            # state (a recheck hashes everything again; a move copies what is on disk and
            # starts the torrent on the new storage, or leaves it stopped by this fault if
            # it is given up), so the fault is told but stops nothing now.
            owner.faults += 1
            if owner.fault is not None:
                return []  # told once; the count is logged when the owner settles
            owner.fault = (error, reason)
            if owner.operation == "recheck":
                # The queued pieces are dropped, not written, as a stop would drop them: the
                # recheck hashes everything again, so writing them (a full disk would fail
                # every one in turn) gains nothing. Each is a PieceDiscarded (_settle).
                storage.stopped = True
            # A move lets them be written: the fault may be one piece's (an I/O error), the
            # others are then stored and copied, and those that fail too are only counted
            # here (each is a PieceDiscarded, fetched again into the new storage).
            what = owner.operation
            hex_hash = handle.info_hash.hex()
            _log.warning("torrent %r (%s), before its %s: %s", handle.name, hex_hash, what, reason)
            return [StorageProblem(handle, error, f"before the {what}: {reason}")]
        return self._stop(storage, error, reason)

    def _stop(self, storage: TorrentStorage, error: DiskError, reason: str) -> list[DiskEvent]:
        """Put the torrent in ``ERROR`` for ``error``; returns the events that tell it: its
        :class:`~bip_disk.TorrentFailed`, then a :class:`~bip_disk.PieceDiscarded` for each
        piece in memory it dropped."""
        handle = storage.handle
        storage.error = error
        storage.reason = reason
        storage.set_state(TorrentState.ERROR)
        dropped = self._drop_partials(storage)
        _log.warning("torrent %r (%s) stopped: %s", handle.name, handle.info_hash.hex(), reason)
        why = f"the torrent is stopped: {reason}"
        return [TorrentFailed(handle, error, reason), *self._blocks_dropped(storage, dropped, why)]

    def _disown(self, torrent: TorrentHandle, owner: _Owner) -> None:
        """End ``owner``'s hold on ``torrent`` (if it still has it): faults stop it again."""
        if self._owners.get(torrent.id) is owner:
            del self._owners[torrent.id]
        if owner.faults > 1 and not owner.settled.is_set():
            _log.debug(
                "torrent %r (%s): %d faults before its %s, the first told",
                torrent.name,
                torrent.info_hash.hex(),
                owner.faults,
                owner.operation,
            )
        owner.settled.set()

    async def _read_failed(self, storage: TorrentStorage, piece: int, error: StorageError) -> None:
        """After a read of ``piece`` failed: the pieces its files lost are no longer had nor
        cached, and the torrent is stopped (see ``_fault``).

        The reader is a peer's task, cancelled when the peer leaves or cancels: whatever
        happens to it, all of that is done, and told. So the files are looked at shielded
        (a bounded job on a thread), then every change is made before anything waits, and
        the events are left to ``_emit_later``: a send that waited for room in the queue
        and was cancelled left the pieces after it had, cached and served, and the torrent
        ``READY`` for good.
        """
        with trio.CancelScope(shield=True):
            try:
                lost = await self._io_pool.run(_lost_pieces, storage.fs, storage.layout, piece)
            except StorageError:  # pragma: no cover - _lost_pieces catches stat errors
                lost = {piece}
        reason = f"reading piece {piece} failed: {error}"
        events: list[DiskEvent] = [*self._lose(storage, sorted(lost & storage.have), reason)]
        events += self._fault(storage, error, reason)
        self._emit_later(events)

    def _lose(self, storage: TorrentStorage, pieces: list[int], reason: str) -> list[PieceLost]:
        """Forget the verified ``pieces`` (sorted) of ``storage``, no longer on its disk:
        no longer had nor cached, one warning for them all (a vanished file can take
        thousands). Their :class:`~bip_disk.PieceLost` events, for the caller to emit."""
        if not pieces:
            return []
        handle = storage.handle
        _log.warning(
            "torrent %r (%s) lost %d verified pieces (%s): %s",
            handle.name,
            handle.info_hash.hex(),
            len(pieces),
            _pieces_text(pieces),
            reason,
        )
        for piece in pieces:
            storage.have.discard(piece)
            self._cache.discard(handle.id, piece, storage.piece_size(piece))
        return [PieceLost(handle, piece, reason) for piece in pieces]

    # -- background work ---------------------------------------------------------------

    async def _flush_worker(self) -> None:
        """Take complete pieces in batches, hash and write them on a thread, report."""
        self._workers_running += 1
        try:
            await self._flush_jobs()
        finally:
            self._workers_running -= 1
            if not self._workers_running:
                self._workers_done.set()

    async def _flush_jobs(self) -> None:
        receive = self._jobs_receive
        while True:
            try:
                job = await receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            batch = [job]
            size = len(job.data)
            # Take enough for this thread, leaving the other workers their share.
            share = max(1, receive.statistics().current_buffer_used // self._workers)
            while size < _FLUSH_BATCH_BYTES and len(batch) <= share:
                try:
                    job = receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                batch.append(job)
                size += len(job.data)
            # Seen by each of its torrents until it is settled (see BatchOut).
            out = BatchOut(time.time_ns())
            torrents = {job.torrent for job in batch}
            for torrent in torrents:
                torrent.writing.append(out)
            try:
                outcomes = await self._hash_pool.run(_flush, batch)
                for job, outcome in zip(batch, outcomes, strict=True):
                    if job.created_files is not None:
                        await self._lose_recreated(job.torrent, job.created_files, out)
                    await self._settle(job, outcome)
            finally:
                for torrent in torrents:
                    torrent.writing.remove(out)

    async def _settle(self, job: _Job, outcome: _Outcome) -> None:
        storage, piece = job.torrent, job.piece
        storage.flushing.discard(piece)
        self._recycle(job)
        self._budget.release(len(job.data))
        self._queued_bytes -= len(job.data)
        if self._queue_room and not self._queue_full():
            self._queue_room.unpark_all()
        storage.changed()
        if outcome is True:
            self._pieces_good += 1  # verified and written, as a bad one is counted below
            if storage.state is TorrentState.REMOVED:
                return
            storage.have.add(piece)
            for out in storage.writing:  # a batch or two, while pieces are being written
                out.settled.add(piece)
            await self._emit_soon(PieceVerified(storage.handle, piece, True))
        elif outcome is False:
            self._pieces_bad += 1
            _log.debug(
                "piece %d of torrent %r failed its hash check: dropped, nothing written",
                piece,
                storage.handle.name,
            )
            # Hashed before the removal, settled after it (a good piece of its batch was
            # still being written): counted, but a removed torrent's events end with its
            # TorrentRemoved, and nobody fetches its pieces again.
            if storage.state is TorrentState.REMOVED:
                return
            await self._emit_soon(PieceVerified(storage.handle, piece, False))
        else:
            # Not stored: its write failed (the error), or the torrent stopped first (None).
            # It gets its verdict all the same: whoever sent every block of it waits for one,
            # and would never fetch it again. The fault comes first, once.
            if outcome is None:
                reason = self._dropped_reason(storage)
            else:
                reason = f"writing piece {piece} failed: {outcome}"
                # The write may have created a file deleted behind our back, then failed
                # before telling so: resume data must not vouch for what that file held.
                storage.unsure_files.update(
                    span.file_index for span in storage.layout.spans(piece) if not span.is_pad
                )
                await self._fail(storage, outcome, reason)
            if storage.state is not TorrentState.REMOVED:
                self._pieces_discarded += 1
                await self._emit_soon(PieceDiscarded(storage.handle, piece, reason))

    async def _lose_recreated(
        self, storage: TorrentStorage, files: Sequence[int], out: BatchOut
    ) -> None:
        """After a batch (``out``) whose writes had to create ``files``: the pieces of
        those files the torrent had are gone with the files it had (deleted behind our
        back) and not in the new ones (holes that read as zeros), whatever a check or
        resume data said. They are no longer had nor cached, each a
        :class:`~bip_disk.PieceLost`, before the verdict of the piece whose write found
        its file gone. The first write of a fresh file finds none had.

        Had, that is, since before the batch was handed to its thread: its write found
        the file missing, so one written before was written to the file deleted since. A
        piece settled while the batch was out (``out.settled``, another thread's) may
        have been written to the new file, right after it was created: it is kept (of a
        file deleted while that piece was being written, it passes for kept, which only
        a deletion racing two writes of the file can do).

        The torrent goes on: the write that found its file gone succeeded, and the lost
        pieces are fetched again into the new file (a read of a file gone cannot be
        served: that stops the torrent, see :meth:`_read_failed`).
        """
        if storage.state is TorrentState.REMOVED:
            return  # its events have ended
        for index in files:
            pieces = storage.layout.file_pieces(index)
            have = storage.have
            # One set lookup per piece of the file or per piece had, whichever is fewer.
            if len(pieces) <= len(have):
                had = have.intersection(pieces)
            else:
                had = {piece for piece in have if piece in pieces}
            path = storage.layout.files[index].path
            reason = f"{path!r} was deleted behind our back (a write had to create it again)"
            for event in self._lose(storage, sorted(had - out.settled), reason):
                await self._emit(event)

    def _dropped_reason(self, storage: TorrentStorage) -> str:
        """Why a queued piece of ``storage`` was dropped, not written: a fault stopped the
        torrent (maybe before a recheck or move that waits now), or one reported while a
        recheck waited (see :meth:`_fail`)."""
        if storage.reason is not None:
            return f"not written: the torrent is stopped: {storage.reason}"
        owner = self._owners.get(storage.handle.id)
        if owner is not None and owner.fault is not None:
            return f"not written: before the {owner.operation}: {owner.fault[1]}"
        return "not written: the torrent is stopped"  # pragma: no cover - one of the above

    def _start_check(
        self,
        storage: TorrentStorage,
        resume: ResumeData | None,
        check: bool,
        allocate: Allocation,
        *,
        report: frozenset[int] | None = None,
    ) -> None:
        """Check ``storage`` in a task of the manager's; with ``report`` (the check after a
        move that kept files: their indices) every change to what the torrent
        had (``resume.have``) is an event of its own (see :meth:`_report_kept`)."""
        # The scope exists before the task runs, so closing or removing the torrent
        # right away cancels a check that has not started yet.
        scope = storage.check_scope = trio.CancelScope()
        storage.check_stop = [False]
        # Until this one has settled every piece; the check after a KEEP move hashes only
        # the kept files (report): it judges those again, and completes no check the
        # torrent had not (see _run_check).
        completed, storage.check_completed = storage.check_completed, False
        if report is None:
            storage.unsure_files.clear()
            storage.unhashed_files.clear()
        else:
            storage.unsure_files.difference_update(report)
            storage.unhashed_files.difference_update(report)
        # It reads the files as they are: a creation a failed write left untold (see
        # NativeFileSystem.write) must not make the next write lose what it verifies.
        # Lazily: with none pending (nearly always), a FileSystem costs nothing per file.
        forget_created = getattr(storage.fs, "forget_created", None)
        if forget_created is not None:
            forget_created(file.path for file in storage.layout.stored_files)
        # Nothing writes until the check ends: an executable file found missing (deleted
        # since the last check) is created executable again by its first write.
        storage.expect_executables()
        self._nursery.start_soon(
            functools.partial(
                self._run_check,
                storage,
                resume=resume,
                check=check,
                allocate=allocate,
                scope=scope,
                done=storage.check_done,
                report=report,
                completed=completed or report is None,
            )
        )

    def _still_checking(self, storage: TorrentStorage) -> bool:
        """Whether the torrent's running check still owns it: ``CHECKING``, and not because
        a recheck that waits for that check to end set the state for its own check."""
        return storage.state is TorrentState.CHECKING and storage.handle.id not in self._owners

    async def _run_check(
        self,
        storage: TorrentStorage,
        *,
        resume: ResumeData | None,
        check: bool,
        allocate: Allocation,
        scope: trio.CancelScope,
        done: trio.Event,
        report: frozenset[int] | None = None,
        completed: bool = True,
    ) -> None:
        """Check a torrent's data (see :mod:`._check`), create its files, make it READY;
        ``completed``: whether the files this check does not hash were settled before it."""
        handle = storage.handle
        try:
            with scope:
                hashed: set[int] = set()
                if await self._check(storage, resume, check, hashed):
                    storage.check_completed = completed
                if self._still_checking(storage) and storage.create_files:
                    await self._create_files(storage, allocate)
                if report is not None and resume is not None:
                    # Before READY: no write can settle one of these pieces meanwhile. A
                    # fault that stopped the check leaves the torrent ERROR, and a recheck
                    # may then take it over while these wait for room: it cancels them (as
                    # a CheckFinished), for it forgets what they tell.
                    reporting = storage.check_finishing = trio.CancelScope()
                    try:
                        with reporting:
                            await self._report_kept(storage, frozenset(resume.have), hashed, report)
                    finally:
                        storage.check_finishing = None
                if self._still_checking(storage):
                    storage.set_state(TorrentState.READY)
                _log_checked(storage, resume is not None)
                owner = self._owners.get(handle.id)
                # A recheck called meanwhile: its own check's CheckFinished tells what the
                # torrent has; this one would tell what the recheck has already forgotten.
                if owner is None or owner.operation != "recheck":
                    event = CheckFinished(
                        handle, len(storage.have), storage.checked, resume is not None
                    )
                    # A recheck called while the send waits for room cancels it (see
                    # recheck): the event would then be stale.
                    finishing = storage.check_finishing = trio.CancelScope()
                    try:
                        with finishing:
                            await self._emit(event)
                    finally:
                        storage.check_finishing = None
        finally:
            if storage.check_scope is scope:
                storage.check_scope = None
            done.set()
            storage.changed()

    async def _check(
        self,
        storage: TorrentStorage,
        resume: ResumeData | None,
        check: bool,
        hashed: set[int] | None = None,
    ) -> bool:
        """Plan the check and hash what it must (``hashed``, if given, gathers the pieces
        read and judged); a fault stops the torrent. Returns whether every piece was
        settled (False when a fault, a recheck or a removal stopped the check first)."""
        handle = storage.handle
        storage.io_active += 1
        try:
            plan = await self._io_pool.run(plan_check, storage.fs, storage.layout, resume)
        except _FAULTS as error:
            fault = _fault_of(error, handle, "planning the check")
            await self._fail(storage, fault, f"checking the files failed: {fault}")
            return False
        finally:
            storage.io_active -= 1
        storage.have = set(plan.trusted)
        to_hash = plan.to_hash if check else ()
        storage.to_check = len(to_hash)
        storage.checked = 0
        if check and plan.pad_only:
            # Pieces of pad bytes only: settled here, not hashed one by one (a long pad
            # would hold the check for as long as hashing its zeros takes).
            storage.io_active += 1
            try:
                verdicts = await self._hash_pool.run(
                    check_pad_pieces, storage.verifier, plan.pad_only
                )
            finally:
                storage.io_active -= 1
            if not self._still_checking(storage):
                return False
            storage.have.update(
                piece for piece, good in zip(plan.pad_only, verdicts, strict=True) if good
            )
        _log.debug(
            "checking torrent %r: %d pieces trusted from resume data, %d of pad bytes "
            "only settled, %d to hash",
            handle.name,
            len(plan.trusted),
            len(plan.pad_only) if check else 0,
            len(to_hash),
        )
        if not check and plan.to_hash and self._still_checking(storage):
            # A start with check=False hashes nothing: it completes, and resume data makes
            # racy the files holding a piece it left unhashed, so that the next start
            # hashes those pieces and trusts the listed ones (see resume_data).
            storage.unhashed_files.update(_files_holding(storage.layout, plan.to_hash))
        if not to_hash:
            return self._still_checking(storage)
        await self._emit(CheckProgress(handle, 0, len(to_hash), len(storage.have)))
        per_batch = max(1, _BATCH_BYTES // storage.layout.piece_length)
        batches = iter(
            [to_hash[start : start + per_batch] for start in range(0, len(to_hash), per_batch)]
        )

        async def hash_batches() -> None:
            for batch in batches:
                if storage.check_stop[0]:
                    return
                storage.io_active += 1
                try:
                    results = await self._hash_pool.run(
                        check_pieces,
                        storage.fs,
                        storage.layout,
                        storage.verifier,
                        batch,
                        storage.check_stop,
                    )
                except _FAULTS as error:
                    storage.check_stop[0] = True
                    # Kept as the torrent's fault: not with the frames (and piece) of
                    # the hashing thread.
                    fault = _fault_of(error, handle, "checking pieces")
                    await self._fail(storage, fault, f"checking the files failed: {fault}")
                    return
                finally:
                    storage.io_active -= 1
                if not self._still_checking(storage):
                    return
                storage.have.update(
                    piece for piece, good in zip(batch, results, strict=True) if good
                )
                if hashed is not None:
                    hashed.update(batch)
                storage.checked += len(batch)
                await self._emit(
                    CheckProgress(handle, storage.checked, len(to_hash), len(storage.have))
                )

        async with trio.open_nursery() as nursery:
            for _ in range(self._hash_pool.threads):
                nursery.start_soon(hash_batches)
        # A fault stops the torrent (or, before a recheck, sets check_stop): every batch
        # was hashed only if neither happened.
        return self._still_checking(storage) and not storage.check_stop[0]

    async def _report_kept(
        self,
        storage: TorrentStorage,
        before: frozenset[int],
        hashed: set[int],
        kept_files: frozenset[int],
    ) -> None:
        """Tell, piece by piece, what the check after a move that kept files changed in what
        the torrent had (``before``), so that a user who keeps its own record of the pieces
        (a piece picker) across the move stays right without rebuilding it from
        :meth:`have`: a :class:`~bip_disk.PieceLost` for each piece had and no longer (a
        kept file holds other bytes, is too short, or a fault stopped the check first), a
        :class:`~bip_disk.PieceVerified` ``good`` for each piece found that was not had. A
        piece neither had nor found gets nothing (its blocks in memory were dropped and
        told at the switch, before anything of this check), and no peer is blamed for a kept
        file's bytes. A lost piece's reason names a ``"kept file"`` when it touches one, else
        a ``"copied file"`` (one the check hashed too). Nothing more is told once a recheck
        has taken the torrent over (it forgets everything; it cancels the sends waiting for
        room, see :meth:`recheck`) or it is removed.
        """
        if storage.state is TorrentState.REMOVED or self._rechecking(storage):
            return
        have = frozenset(storage.have)
        lost, found = sorted(before - have), sorted(have - before)
        if not lost and not found:
            return
        handle = storage.handle
        _log.info(
            "torrent %r (%s): the files kept by its move hold %d more pieces, and lack %d%s",
            handle.name,
            handle.info_hash.hex(),
            len(found),
            len(lost),
            f" ({_pieces_text(lost)})" if lost else "",
        )
        for piece in lost:
            # A copied file the check hashed too (a backend that keeps no modification
            # time is never trusted) is not one the move kept: say which it was.
            kept = any(
                span.file_index in kept_files and not span.is_pad
                for span in storage.layout.spans(piece)
            )
            file = "kept file" if kept else "copied file"
            if piece in hashed:
                reason = f"{file} differs"
            elif storage.reason is not None:
                reason = f"{file} not checked: {storage.reason}"
            else:
                reason = f"{file} missing or too short"
            await self._emit(PieceLost(handle, piece, reason))
        for piece in found:
            await self._emit(PieceVerified(handle, piece, True))

    def _rechecking(self, storage: TorrentStorage) -> bool:
        """Whether a recheck has taken ``storage`` over (it waits for what ran before it)."""
        owner = self._owners.get(storage.handle.id)
        return owner is not None and owner.operation == "recheck"

    async def _create_files(self, storage: TorrentStorage, allocate: Allocation) -> None:
        storage.io_active += 1
        try:
            warnings = await self._io_pool.run(create_files, storage.fs, storage.layout, allocate)
        except StorageError as error:
            await self._fail(storage, error, f"creating the files failed: {error}")
            return
        finally:
            storage.io_active -= 1
        _warn_problems(storage.handle, "creating its links", warnings)
        for warning in warnings:
            await self._emit(
                StorageProblem(storage.handle, warning, f"a link was not created: {warning}")
            )

    async def _close(self) -> None:
        """Finish the queued pieces, stop checks, sync every torrent's files."""
        self._closing = True
        for storage in self._torrents.values():
            if storage.check_scope is not None:
                storage.check_stop[0] = True
                storage.check_scope.cancel()
            self._drop_partials(storage)
        # Events waiting behind a backlog go out (or are dropped) as any event does now: the
        # workers must finish without waiting for a consumer that may be gone.
        for backlog in self._backlogs.values():
            for entry in backlog.entries:
                if isinstance(entry, _Turn):
                    entry.go.set()
        self._wake_all()
        self._jobs_send.close()  # the workers finish what is queued, then return

    def _wake_all(self) -> None:
        """Wake the writes and reads waiting for a torrent's check or move: the manager
        closes, and they give up (see :meth:`_wait_usable`)."""
        for storage in self._torrents.values():
            storage.changed()

    async def _sync_all(self) -> None:
        for storage in list(self._torrents.values()):
            try:
                await self._io_pool.run(_sync, storage.fs)
            except StorageError as error:
                _warn_problems(storage.handle, "syncing its files on close", [error])
                await self._emit(
                    StorageProblem(storage.handle, error, f"syncing on close failed: {error}")
                )


def _log_checked(storage: TorrentStorage, resumed: bool) -> None:
    """Log the end of a check: INFO when the torrent is ready (a fault was WARNING already)."""
    handle = storage.handle
    level = logging.INFO if storage.state is TorrentState.READY else logging.DEBUG
    _log.log(
        level,
        "checked torrent %r (%s): %d of %d pieces had (%d hashed%s)%s",
        handle.name,
        handle.info_hash.hex(),
        len(storage.have),
        handle.num_pieces,
        storage.checked,
        ", resume data used" if resumed else "",
        "" if storage.state is TorrentState.READY else f", then {storage.state.value}",
    )


def _warn_problems(handle: TorrentHandle, doing: str, problems: Sequence[DiskError]) -> None:
    """One WARNING for the problems met doing one thing (deleting a thousand files that
    fail is one record, not a thousand); the events still carry each one."""
    if not problems:
        return
    _log.warning(
        "torrent %r (%s): %s failed%s: %s",
        handle.name,
        handle.info_hash.hex(),
        doing,
        f" {len(problems)} times" if len(problems) > 1 else "",
        problems[0] if len(problems) == 1 else f"{problems[0]} (and {len(problems) - 1} more)",
    )


def _pieces_text(pieces: Sequence[int], shown: int = 8) -> str:
    """``"3, 4, 9"``, or the first ``shown`` then ``"..."``: a bounded piece list for a log."""
    text = ", ".join(str(piece) for piece in pieces[:shown])
    return text + ", ..." if len(pieces) > shown else text


def _files_holding(layout: StorageLayout, pieces: Sequence[int]) -> set[int]:
    """The stored files holding bytes of any of ``pieces`` (ascending): a search per file,
    not a step per piece (a start with no resume data leaves every piece unhashed)."""
    held = set()
    for file in layout.stored_files:
        span = layout.file_pieces(file.index)
        first = bisect.bisect_left(pieces, span.start)
        if file.length and first < len(pieces) and pieces[first] < span.stop:
            held.add(file.index)
    return held


def _settled(storage: TorrentStorage) -> bool:
    """Whether what the torrent has is known: its last check settled every piece (a fault
    that stopped it part way, in ``ERROR`` since, left the pieces it had not hashed
    unknown), and it is not checking, nor moving its files."""
    return storage.check_completed and storage.state not in (
        TorrentState.CHECKING,
        TorrentState.MOVING,
    )


def _dated(storage: TorrentStorage) -> int:
    """When resume data about to be made of ``storage`` is dated (its ``saved``), read
    before anything of it is taken: no later than any write whose piece it may not list.

    A piece written after ``have`` is taken (while the files are stat'ed or synced, a
    sync may take seconds), or written before and not settled yet (its batch waits for
    room in the event queue), is not listed: its file's mtime must then lie after the
    date, or within :data:`~bip_disk._resume.RACY_WINDOW_NS` before it, so that the file
    is racy and the next start hashes that piece. Dated after the sync, the file would
    look unchanged and the piece, good on disk, would be neither trusted nor hashed.
    An earlier date only makes more files racy: never less safe.
    """
    return min([time.time_ns(), *(out.since for out in storage.writing)])


def _sync(fs: FileSystem) -> None:
    with storage_faults():
        fs.sync()


def _release(fs: FileSystem) -> None:
    with storage_faults():
        fs.close()


@dataclass(frozen=True, slots=True)
class _MoveCopy:
    """What a move did on its thread: ``copied`` is None for the same storage (nothing
    copied); ``stats`` are the new storage's files' after the copy, when files were kept."""

    copied: Copied | None
    stats: tuple[FileStat | None, ...] = ()


def _take_over(storage: TorrentStorage, state: TorrentState) -> None:
    """The state of a recheck or move that waits for what ran before it. A torrent a fault
    stopped keeps dropping its queued pieces meanwhile (the recheck hashes them again, the
    move copies what is on disk): ``set_state`` alone would start writing them."""
    stopped = storage.stopped
    storage.set_state(state)
    storage.stopped = stopped


def _copy_for_move(
    source: FileSystem,
    destination: FileSystem,
    layout: StorageLayout,
    existing: ExistingFiles,
    stop: Callable[[], bool],
) -> _MoveCopy:
    """On a thread: the copy of a move (see :meth:`DiskManager.move_storage`); ``stop``
    as ``copy_files`` takes it (``CopyStopped`` once it answers true)."""
    if same_storage(source, destination):
        # Nothing is copied: what the source still buffers of the torrent's files (a
        # staged fsspec view's unsynced pieces) must reach the storage now, or the
        # destination view would never see it (the source is not synced again).
        _sync_files(source, layout)
        return _MoveCopy(None)
    refuse_nested(source, destination, layout)
    if existing is ExistingFiles.FAIL:
        refuse_existing(destination, layout)
    copied = copy_files(source, destination, layout, existing, stop=stop)
    if not copied.kept:
        return _MoveCopy(copied)
    with storage_faults():
        return _MoveCopy(copied, stat_files(destination, layout))


def _sync_files(fs: FileSystem, layout: StorageLayout) -> None:
    """Sync each of the torrent's files that exists (only these: the FileSystem may hold
    other torrents' files, and syncing a missing file is an error)."""
    for file in layout.stored_files:
        with storage_faults(file.path):
            # A zero-length one that cannot be stat'ed (a directory there) is passed over.
            if stat_stored(fs, file) is not None:
                fs.sync(file.path)


def _paths(files: Sequence[StoredFile]) -> tuple[str, ...]:
    return tuple(file.path for file in files)


def _resume_after_keeping(
    storage: TorrentStorage, copy: _MoveCopy, kept: Sequence[StoredFile]
) -> ResumeData:
    """Resume data for the check after a move that kept files: the pieces had, and the
    new storage's files as they are, but the kept ones, which count as changed. The
    fast-resume check then hashes only the pieces touching a kept file.

    Dated after every file's time: nothing could be written between the stats (taken
    after the copy) and the check (the torrent was moving, then checking), so no file is
    racy, and the pieces a copied file lacks are not hashed for nothing.
    """
    kept_indices = {file.index for file in kept}
    files = tuple(None if i in kept_indices else stat for i, stat in enumerate(copy.stats))
    newest = max((stat.mtime_ns for stat in files if stat is not None), default=0)
    info = storage.info
    return ResumeData(
        info.info_hash,
        storage.layout.num_pieces,
        frozenset(storage.have),
        files,
        max(time.time_ns(), newest + RACY_WINDOW_NS),
    )


def _read(storage: TorrentStorage, piece: int, begin: int, length: int) -> bytes:
    """On a thread: read part of a piece, any fault as a StorageError."""
    with storage_faults():
        return read_span_data(storage.fs, storage.layout, piece, begin, length)


@asynccontextmanager
async def open_disk_manager(
    *,
    max_in_flight_bytes: int = DEFAULT_MAX_IN_FLIGHT_BYTES,
    hash_threads: int | None = None,
    io_threads: int = DEFAULT_IO_THREADS,
    read_cache_bytes: int = DEFAULT_READ_CACHE_BYTES,
    event_buffer: int = DEFAULT_EVENT_BUFFER,
) -> AsyncIterator[DiskManager]:
    """Run a :class:`DiskManager` for the duration of an ``async with`` block.

    On a normal exit, pieces already complete are hashed and written, checks are
    stopped, pieces still arriving are dropped and every torrent's files are
    synced; then the event stream ends. The FileSystems are not closed: they
    belong to the caller. If the block raises, everything stops at once.

    Args:
        max_in_flight_bytes: bytes of pieces in memory at most (see the module
            documentation); a piece larger than this is still stored, alone.
        hash_threads: threads hashing and writing pieces and checking data; by
            default one per core.
        io_threads: threads reading blocks and doing file operations.
        read_cache_bytes: bytes of recently read lines of pieces kept, shared by
            every torrent (0: none). A block is read with the aligned line of up to
            512 KiB of its piece around it; the line shrinks to a quarter of a small
            cache (16 KiB at least), and a line larger than a quarter of the cache is
            not kept: its blocks are read one by one.
        event_buffer: events held until :meth:`DiskManager.events` takes them.
    """
    if type(max_in_flight_bytes) is not int or max_in_flight_bytes < 1:
        raise ValueError(f"max_in_flight_bytes must be positive, not {max_in_flight_bytes!r}")
    threads = default_hash_threads() if hash_threads is None else hash_threads
    if type(threads) is not int or threads < 1:
        raise ValueError(f"hash_threads must be positive, not {hash_threads!r}")
    if type(io_threads) is not int or io_threads < 1:
        raise ValueError(f"io_threads must be positive, not {io_threads!r}")
    if type(read_cache_bytes) is not int or read_cache_bytes < 0:
        raise ValueError(f"read_cache_bytes must not be negative, not {read_cache_bytes!r}")
    if type(event_buffer) is not int or event_buffer < 1:
        raise ValueError(f"event_buffer must be positive, not {event_buffer!r}")
    manager: DiskManager | None = None
    try:
        async with trio.open_nursery() as nursery:
            manager = DiskManager(
                nursery,
                max_in_flight_bytes=max_in_flight_bytes,
                hash_threads=threads,
                io_threads=io_threads,
                read_cache_bytes=read_cache_bytes,
                event_buffer=event_buffer,
            )
            for _ in range(threads):
                nursery.start_soon(manager._flush_worker)
            _log.debug(
                "disk manager open: %d hashing threads, %d I/O threads, %d bytes in flight at most",
                threads,
                io_threads,
                max_in_flight_bytes,
            )
            try:
                yield manager
            except BaseException:
                manager._closing = True
                manager._wake_all()
                nursery.cancel_scope.cancel()
                raise
            await manager._close()
            await manager._workers_done.wait()
            await manager._sync_all()
            nursery.cancel_scope.cancel()
            _log.debug(
                "disk manager closed: %d pieces good, %d bad, %d discarded, %d events dropped",
                manager._pieces_good,
                manager._pieces_bad,
                manager._pieces_discarded,
                manager._events_dropped,
            )
    except BaseExceptionGroup as group:
        # Our tasks raise nothing but bugs; unwrap the body's own exception.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        if manager is not None:
            manager._closing = True
            manager._events_send.close()
