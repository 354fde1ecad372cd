"""The memory the DiskManager holds for writes: the in-flight bound and spare buffers.

:class:`ByteBudget` is the bound on bytes of pieces in memory. Writes that start
a piece take its size from it, in FIFO order, waiting when it is spent; the bytes
come back when the piece is written or dropped. A waiter can be turned away (its
torrent stopped), and a request larger than the whole bound is granted when
nothing else is held, so pieces bigger than the bound still go through, one at a
time.

(The read cache, of lines of pieces, is ``bip_disk._readcache``.)

:class:`SpareBuffers` keeps the buffers of written pieces for the next pieces:
allocating a fresh zeroed half-MiB ``bytearray`` (pages mapped, faulted in and
zeroed, then unmapped when freed) costs more than copying the piece's blocks.
"""

from __future__ import annotations

from collections import deque

import trio

__all__ = ["ByteBudget", "SpareBuffers"]


class _Waiter:
    """A write waiting for room: granted, or turned away, when its event is set."""

    __slots__ = ("event", "granted", "owner", "piece", "size")

    def __init__(self, size: int, owner: object, piece: object) -> None:
        self.size = size
        self.owner = owner
        self.piece = piece
        self.event = trio.Event()
        self.granted = False


class ByteBudget:
    """The in-flight bound: bytes are taken in FIFO order; a waiter can be turned away.

    A request larger than the whole bound is granted when nothing else is held,
    so a torrent with pieces bigger than the bound still progresses, one piece at
    a time.

    Attributes:
        limit: the bound.
        used: bytes taken and not released (``pending`` included).
        pending: bytes granted to waiters that have not resumed yet: counted in
            ``used``, but their owners have not allocated anything for them.
    """

    __slots__ = ("_waiters", "limit", "pending", "used")

    def __init__(self, limit: int) -> None:
        """A bound of ``limit`` bytes, none of them taken."""
        self.limit = limit
        self.used = 0
        self.pending = 0
        self._waiters: deque[_Waiter] = deque()

    @property
    def waiting(self) -> int:
        """How many takers are waiting."""
        return len(self._waiters)

    def grants_now(self, size: int) -> bool:
        """Whether :meth:`take` of ``size`` bytes would return without waiting."""
        return not self._waiters and self._fits(size)

    def _fits(self, size: int) -> bool:
        return self.used == 0 or self.used + size <= self.limit

    async def take(self, size: int, owner: object, piece: object = None) -> bool:
        """Take ``size`` bytes, waiting in line; False if :meth:`turn_away` (or
        :meth:`turn_away_piece`, for ``piece``) ended the wait."""
        if not self._waiters and self._fits(size):
            self.used += size
            return True
        waiter = _Waiter(size, owner, piece)
        self._waiters.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self.pending -= size
                self.release(size)
            elif not waiter.event.is_set():
                self._waiters.remove(waiter)
                self._grant()
            # Else turned away in the same tick as the cancellation: ``turn_away`` took
            # it out of the line already (removing it again would raise ValueError in
            # place of the Cancelled), and let the next waiters in.
            raise
        if waiter.granted:
            self.pending -= size
        return waiter.granted

    def release(self, size: int) -> None:
        """Give back ``size`` bytes and let the next waiters in."""
        self.used -= size
        self._grant()

    def turn_away(self, owner: object) -> None:
        """End the waits of ``owner``'s writes without granting them."""
        for waiter in [waiter for waiter in self._waiters if waiter.owner is owner]:
            self._waiters.remove(waiter)
            waiter.event.set()
        self._grant()

    def turn_away_piece(self, owner: object, piece: object) -> None:
        """End the waits of ``owner``'s writes for room for ``piece`` without granting them:
        another write started the piece, so they need no room of their own."""
        for waiter in [w for w in self._waiters if w.owner is owner and w.piece == piece]:
            self._waiters.remove(waiter)
            waiter.event.set()
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self._fits(self._waiters[0].size):
            waiter = self._waiters.popleft()
            self.used += waiter.size
            self.pending += waiter.size
            waiter.granted = True
            waiter.event.set()


class SpareBuffers:
    """Piece buffers no longer in use, by size, for pieces that start next.

    The owner decides what may be kept and bounds it with :meth:`trim`.
    """

    __slots__ = ("_buffers", "bytes")

    def __init__(self) -> None:
        """No spare buffers."""
        self._buffers: dict[int, list[bytearray]] = {}
        self.bytes = 0

    def take(self, size: int) -> bytearray | None:
        """A spare buffer of ``size`` bytes (its content is stale), or None."""
        buffers = self._buffers.get(size)
        if buffers is None:
            return None
        buffer = buffers.pop()
        if not buffers:
            del self._buffers[size]  # no empty lists: trim takes the first one
        self.bytes -= size
        return buffer

    def give(self, buffer: bytearray) -> None:
        """Keep ``buffer`` for a later :meth:`take` (nothing else may use it any more)."""
        self._buffers.setdefault(len(buffer), []).append(buffer)
        self.bytes += len(buffer)

    def trim(self, limit: int) -> None:
        """Drop buffers until at most ``limit`` bytes are kept."""
        while self.bytes > max(0, limit):
            size, buffers = next(iter(self._buffers.items()))
            buffers.pop()
            self.bytes -= size
            if not buffers:
                del self._buffers[size]
