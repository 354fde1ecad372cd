"""One torrent's storage state inside the DiskManager, and the pieces being assembled.

:class:`PartialPiece` collects a piece's blocks in one ``bytearray`` the size of
the piece (the manager charges that size against its in-flight bound when the
first block arrives). Blocks may come in any order, overlap or repeat; pad-file
ranges count as received from the start and always hold zeros, whatever a peer
sends for them. :class:`TorrentStorage` is the rest of a torrent's state: its
layout, verifier, FileSystem, state, the pieces it has, and the pieces in memory.
Nothing here does I/O or awaits; the manager drives it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

import trio

from bip_metainfo import Info

from ._errors import DiskError
from ._events import TorrentHandle, TorrentState
from ._filesystem import Buffer, FileSystem
from ._hashing import PieceVerifier
from ._layout import StorageLayout, executable_creator
from ._readcache import LineRead

__all__ = ["BatchOut", "PartialPiece", "TorrentStatus", "TorrentStorage"]


class PartialPiece:
    """A piece whose blocks are arriving (see the module documentation).

    Attributes:
        buffer: the piece's bytes so far (zeros where nothing arrived in a new
            buffer; whatever a recycled one held there).
        size: the piece's size (pad bytes included).
        received: bytes covered so far, pad bytes included.
    """

    __slots__ = ("_ends", "_pads", "_starts", "buffer", "received", "size")

    def __init__(
        self,
        size: int,
        pads: tuple[tuple[int, int], ...] = (),
        buffer: bytearray | None = None,
    ) -> None:
        """An empty piece of ``size`` bytes whose ``pads`` ranges (start, end) are zeros.

        ``buffer``, a recycled bytearray of ``size`` bytes, is filled instead of a
        new one: only its pad ranges are zeroed, since every other byte is
        overwritten before the piece is complete.
        """
        self.size = size
        if buffer is None:
            buffer = bytearray(size)
        elif len(buffer) != size:
            raise ValueError(f"a recycled buffer of {len(buffer)} bytes for a piece of {size}")
        else:
            for start, end in pads:
                buffer[start:end] = bytes(end - start)
        self.buffer = buffer
        self._pads = pads
        # Disjoint, sorted, non-adjacent covered ranges: [starts[i], ends[i]).
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.received = 0
        for start, end in pads:
            self._cover(start, end)

    @property
    def complete(self) -> bool:
        """Whether every byte of the piece has arrived."""
        return self.received == self.size

    def add(self, begin: int, data: Buffer) -> int:
        """Copy a block in at ``begin`` (it must fit); returns how many new bytes it covered.

        Bytes on pad ranges are not copied (they stay zero).
        """
        view = data if type(data) is memoryview else memoryview(data)
        ends = self._ends
        if ends and ends[-1] == begin and not self._pads and view.c_contiguous:
            # The common case, inlined: blocks in order, no pads. The new block
            # extends the last covered range, and nothing follows it. (A C-contiguous
            # view of any format is copied as its bytes: no cast needed.)
            end = begin + view.nbytes
            self.buffer[begin:end] = view
            ends[-1] = end
            self.received += end - begin
            return end - begin
        if view.ndim != 1 or view.format != "B":
            # Copied as its bytes, in order (only a C-contiguous view can be cast).
            view = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
        end = begin + len(view)
        if not self._pads:
            self.buffer[begin:end] = view
        else:
            position = begin
            for pad_start, pad_end in self._pads:
                if pad_end <= position or pad_start >= end:
                    continue
                if pad_start > position:
                    self.buffer[position:pad_start] = view[position - begin : pad_start - begin]
                position = max(position, pad_end)
            if position < end:
                self.buffer[position:end] = view[position - begin :]
        return self._cover(begin, end)

    def _cover(self, start: int, end: int) -> int:
        """Mark [start, end) received; returns how many bytes were not received before."""
        if end <= start:
            return 0
        starts, ends = self._starts, self._ends
        if ends and ends[-1] == start:
            # Blocks in order: the new one extends the last range, and nothing follows.
            ends[-1] = end
            self.received += end - start
            return end - start
        # The ranges that overlap or touch [start, end) are lo .. hi - 1.
        lo = bisect_left(ends, start)
        hi = bisect_right(starts, end)
        if lo == hi:
            starts.insert(lo, start)
            ends.insert(lo, end)
            self.received += end - start
            return end - start
        merged_start = min(start, starts[lo])
        merged_end = max(end, ends[hi - 1])
        before = sum(ends[i] - starts[i] for i in range(lo, hi))
        starts[lo:hi] = [merged_start]
        ends[lo:hi] = [merged_end]
        added = (merged_end - merged_start) - before
        self.received += added
        return added


@dataclass(slots=True, eq=False)
class BatchOut:
    """A batch of complete pieces on a flush thread, or being settled, as each of its
    torrents sees it (:attr:`TorrentStorage.writing`).

    Attributes:
        since: when (``time.time_ns``) it was handed to the thread: resume data made
            before its pieces are settled is dated no later.
        settled: the torrent's pieces settled meanwhile, by any batch: written, maybe,
            after a file this batch found missing was created again, so not lost with
            the old one.
    """

    since: int
    settled: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class TorrentStatus:
    """A snapshot of one torrent's storage (:meth:`DiskManager.status`).

    Attributes:
        state: where the torrent stands.
        error: the fault that stopped it (state ``ERROR``), else None.
        reason: a one-line explanation of ``error``, else None.
        num_pieces: the torrent's number of pieces.
        have: how many pieces are verified and written.
        partial_pieces: pieces whose blocks are arriving, in memory.
        queued_pieces: complete pieces waiting to be hashed and written.
        checked: pieces settled by the current or last check.
        to_check: pieces that check had to settle.
    """

    state: TorrentState
    error: DiskError | None
    reason: str | None
    num_pieces: int
    have: int
    partial_pieces: int
    queued_pieces: int
    checked: int
    to_check: int


class TorrentStorage:
    """One torrent's storage state (see the module documentation). Internal to the manager."""

    def __init__(
        self,
        handle: TorrentHandle,
        info: Info,
        layout: StorageLayout,
        verifier: PieceVerifier,
        fs: FileSystem,
    ) -> None:
        """A torrent in state ``CHECKING`` with nothing had."""
        self.handle = handle
        self.info = info
        self.layout = layout
        self.verifier = verifier
        self.fs = fs
        self.unmade_executables: set[str] = set()
        self.expect_executables()
        self.state = TorrentState.CHECKING
        self.create_files = True  # after each check, create missing files and links
        self.error: DiskError | None = None
        self.reason: str | None = None
        self.have: set[int] = set()
        self.partial: dict[int, PartialPiece] = {}
        self.flushing: set[int] = set()  # complete, queued or on a thread being written
        self.stopped = False  # read by flush threads: drop queued pieces, write nothing more
        self.io_active = 0  # thread operations using ``fs`` right now (reads, moves)
        self.checked = 0
        self.to_check = 0
        # Whether the last full check settled every piece it had to (a fault stopped none
        # of it; a start with check=False counts, its unhashed pieces marked below; the
        # check after a KEEP move, of the kept files only, completes none the torrent had
        # not): until one has, resume data records no file, so that the next start hashes
        # everything rather than trust files whose pieces were never hashed.
        self.check_completed = False
        # Files (indices) resume data records no stat for, so that the next start hashes
        # their pieces: those a write failed on since the last check started (it may have
        # created the file again, deleted behind our back, before failing, which nothing
        # told).
        self.unsure_files: set[int] = set()
        # Files (indices) holding a piece a start with check=False left unhashed: resume
        # data is dated so that they are racy (see ResumeData.is_racy), and the next start
        # trusts the pieces it lists of them and hashes their others.
        self.unhashed_files: set[int] = set()
        # The batches holding its pieces now on a flush thread, or being settled.
        self.writing: list[BatchOut] = []
        self.check_scope: trio.CancelScope | None = None
        self.check_stop = [False]  # read by check threads: end the batch early
        self.check_done = trio.Event()
        # Around the send of a check's CheckFinished, and of the changes the check after a
        # KEEP move found: a recheck cancels it (see recheck).
        self.check_finishing: trio.CancelScope | None = None
        # Line reads on a thread now, by the line's offset in the torrent.
        self.reading: dict[int, LineRead] = {}
        self._changed = trio.Event()
        self._pad_cache: dict[int, tuple[tuple[int, int], ...]] = {}
        self._has_pads = any(file.is_pad for file in layout.files)
        # Every piece is piece_length long but the last (pads included).
        self._last_piece = layout.num_pieces - 1
        self._last_size = layout.piece_size(self._last_piece)

    def expect_executables(self) -> None:
        """Mark the torrent's BEP 47 executable files as not yet created by it in ``fs``
        (all of them, if ``fs`` can create files executable): a flush thread creates
        each one executable before the first write touching it (see ``_write_run`` in the
        manager), then takes it out of ``unmade_executables``. Called when ``fs`` is
        set (the torrent added or moved) and when a check starts, so that a file deleted
        meanwhile comes back executable; creating a file that is there is a no-op.
        Empty ones are created (executable) with the torrent's other files."""
        if executable_creator(self.fs) is None:
            self.unmade_executables = set()
        else:
            self.unmade_executables = {
                file.path
                for file in self.layout.stored_files
                if file.executable and file.length > 0
            }

    # -- state ------------------------------------------------------------------------

    def set_state(self, state: TorrentState) -> None:
        """Change state and wake everything waiting on a change."""
        self.state = state
        self.stopped = state in (TorrentState.ERROR, TorrentState.REMOVED)
        self.changed()

    def is_in(self, *states: TorrentState) -> bool:
        """Whether the state is one of ``states`` (the state changes across awaits)."""
        return self.state in states

    def changed(self) -> None:
        """Wake the tasks waiting in :meth:`wait_changed`."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        """Wait for the next state change, flushed piece or finished I/O."""
        await self._changed.wait()

    @property
    def idle(self) -> bool:
        """No piece being written and no thread using the FileSystem."""
        return not self.flushing and self.io_active == 0

    def status(self) -> TorrentStatus:
        """A frozen snapshot."""
        return TorrentStatus(
            state=self.state,
            error=self.error,
            reason=self.reason,
            num_pieces=self.layout.num_pieces,
            have=len(self.have),
            partial_pieces=len(self.partial),
            queued_pieces=len(self.flushing),
            checked=self.checked,
            to_check=self.to_check,
        )

    # -- pieces -----------------------------------------------------------------------

    def piece_size(self, piece: int) -> int:
        """The size of piece ``piece`` (pads included), in O(1); the piece must exist."""
        return self._last_size if piece == self._last_piece else self.layout.piece_length

    def pads(self, piece: int) -> tuple[tuple[int, int], ...]:
        """The ranges of piece ``piece`` that fall on pad files, as (start, end)."""
        if not self._has_pads:
            return ()
        cached = self._pad_cache.get(piece)
        if cached is not None:
            return cached
        ranges = []
        position = 0
        for span in self.layout.spans(piece):
            if span.is_pad:
                ranges.append((position, position + span.length))
            position += span.length
        result = tuple(ranges)
        if len(self._pad_cache) < 4096:  # pads are rare; bound the cache all the same
            self._pad_cache[piece] = result
        return result

    def new_partial(self, piece: int, buffer: bytearray | None = None) -> PartialPiece:
        """Start assembling piece ``piece`` (in ``buffer``, recycled, if given)."""
        partial = PartialPiece(self.piece_size(piece), self.pads(piece), buffer)
        self.partial[piece] = partial
        return partial
