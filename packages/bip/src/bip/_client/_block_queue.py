"""A torrent's downloaded blocks on their way to the disk, stored by the torrent's own task.

The session routes every peer's messages from one task. Were that task to wait for bip_disk
(which waits while the torrent checks or moves its storage, or while its in-flight bound is
full), one torrent's slow store would stop every torrent's peer traffic. libtorrent never
waits on the disk in its network loop: its writes are asynchronous. So here: the router
hands a block to its torrent's :class:`BlockQueue` without waiting, and the torrent's writer
task (:meth:`BlockQueue.run`) stores the blocks one at a time, in the order they came (the
brain hears of each once it is stored, as before).

The queue is bounded in bytes twice. Past ``max_bytes`` it is :attr:`~BlockQueue.over` its
bound: the torrent stops reading each peer that sends it a block then (bip_peer's
:meth:`~bip_peer.PeerManager.pause_reading`, libtorrent's disk queue limit), and reads them
again once the writer has brought it down to half the bound (the ``on_drained`` callback of
:meth:`BlockQueue.run`). Nothing is lost: blocks still on their way from a paused peer (at
most one read of it) are taken. Past ``limit_bytes`` (four times ``max_bytes`` by default,
reached only by very many peers all delivering at once) a block is refused
(:meth:`BlockQueue.put` is ``False``): the caller gives it back to the brain at once, so
what peers can make us hold is bounded whatever happens.

A block that starts a new piece may have to wait for room in bip_disk's in-flight bound
(shared by the session's torrents), which the pieces in memory free as they complete. Were
the writer to wait with it, the blocks that complete those pieces would wait behind it: for
good. So the writer sets such a block aside (``waits``, given to :meth:`BlockQueue.run`),
with the blocks of its piece that follow it, in order, and stores the blocks behind them.
Each piece set aside has a task of its own that stores its blocks in order, the first
waiting for room meanwhile: the piece keeps its place in the line for room (first in,
first served, with every torrent's writes), whatever blocks the writer stores meanwhile,
and a piece that entered memory another way (a web seed's block) goes at once, whatever
waits before it. libtorrent reserves no piece, so nothing ever waits behind its writes.

Set-aside blocks count towards ``limit_bytes``, not towards ``max_bytes``: pausing the
peers for them would stop the blocks that make their room. Past ``max_bytes`` set aside, a
block that would be set aside is given back (``drop``), so that they stay bounded too; the
caller stops reading the peer that sent it (else that peer, asked again at once, sends the
next block at once, given back too: a loop at the speed of the line), until ``on_drained``,
which waits until they are down to half ``max_bytes`` too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Final, Generic, TypeVar

import trio

__all__ = ["LIMIT_FACTOR", "MAX_QUEUED_BLOCK_BYTES", "BlockQueue"]

MAX_QUEUED_BLOCK_BYTES: Final = 16 * 1024 * 1024
"""The bytes of blocks one torrent keeps waiting for its disk before it stops reading its
peers (the one being stored included): a thousand 16 KiB blocks, a few seconds of a fast
download (libtorrent's ``max_queued_disk_bytes`` is the same idea)."""

LIMIT_FACTOR: Final = 4
"""The hard bound of a queue by default, in multiples of its ``max_bytes``: a block beyond it
is refused. Each paused peer can still deliver one read (bip_peer's ``receive_size``, 512
KiB): dozens of peers crossing the bound together fit below it."""

_T = TypeVar("_T")


class BlockQueue(Generic[_T]):
    """Blocks waiting to be stored, first in first out, bounded by their bytes.

    >>> queue: BlockQueue[str] = BlockQueue(max_bytes=10, limit_bytes=12)
    >>> queue.put("a", 6), queue.over, queue.put("b", 6), queue.over
    (True, False, True, True)
    >>> queue.accepts(1), queue.put("c", 1), queue.queued_bytes
    (False, False, 12)
    """

    def __init__(
        self, max_bytes: int = MAX_QUEUED_BLOCK_BYTES, *, limit_bytes: int | None = None
    ) -> None:
        """An empty queue over its bound past ``max_bytes``, refusing blocks past
        ``limit_bytes`` (:data:`LIMIT_FACTOR` times ``max_bytes`` if not given; an idle
        queue takes any one block all the same).

        Raises:
            ValueError: ``max_bytes`` is not a positive int, or ``limit_bytes`` is not an
                int at least ``max_bytes``.
        """
        if type(max_bytes) is not int or max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive int, not {max_bytes!r}")
        if limit_bytes is None:
            limit_bytes = LIMIT_FACTOR * max_bytes
        if type(limit_bytes) is not int or limit_bytes < max_bytes:
            raise ValueError(f"limit_bytes must be an int >= max_bytes, not {limit_bytes!r}")
        self._max_bytes = max_bytes
        self._limit_bytes = limit_bytes
        self._items: deque[tuple[_T, int]] = deque()
        self._bytes = 0  # the items', the set-aside ones' and the ones being stored
        # Blocks waiting for room for their piece, by piece, oldest piece first; the
        # first of each is the one its task stores (it counts until stored).
        self._aside: dict[Hashable, deque[tuple[_T, int]]] = {}
        self._aside_bytes = 0
        # The tasks storing the pieces set aside, by piece (cancelled by clear(), discard()).
        self._aside_tasks: dict[Hashable, trio.CancelScope] = {}
        self._storing = 0  # blocks being stored, by the writer or the tasks
        self._was_over = False  # over the bound since the last on_drained
        self._gave_back = False  # a block given back since the last on_drained
        self._lot = trio.lowlevel.ParkingLot()

    @property
    def queued_bytes(self) -> int:
        """The bytes waiting (set aside included), and the one block being stored."""
        return self._bytes

    @property
    def idle(self) -> bool:
        """Whether nothing waits and nothing is being stored: a block put now is stored at
        the writer's next turn."""
        return not self._items and not self._storing and not self._aside

    @property
    def over(self) -> bool:
        """Whether the queue holds ``max_bytes`` or more besides the blocks set aside: its
        torrent stops reading the peers that send it blocks, until ``on_drained``."""
        return self._bytes - self._aside_bytes >= self._max_bytes

    def accepts(self, size: int) -> bool:
        """Whether :meth:`put` takes a block of ``size`` bytes now (checked first by a
        caller that copies the block before putting it)."""
        return self.idle or self._bytes + size <= self._limit_bytes

    def put(self, item: _T, size: int) -> bool:
        """Queue ``item`` of ``size`` bytes, without waiting; ``False`` (not queued) when
        that would take the queue past ``limit_bytes`` (see :meth:`accepts`)."""
        if not self.accepts(size):
            return False
        self._items.append((item, size))
        self._bytes += size
        if self.over:
            self._was_over = True
        self._lot.unpark()
        return True

    def clear(self) -> None:
        """Drop every block still waiting, set aside or not (the one the writer stores is
        not: it counts until stored; a set-aside one waiting for room stops waiting).
        ``on_drained`` is called at the writer's next turn if it is due."""
        self._bytes -= sum(size for _item, size in self._items) + self._aside_bytes
        self._items.clear()
        self._aside.clear()
        self._aside_bytes = 0
        for scope in self._aside_tasks.values():
            scope.cancel()
        self._aside_tasks.clear()
        self._lot.unpark()

    def discard(self, piece: Hashable) -> list[_T]:
        """Drop the blocks of ``piece`` set aside, and return them in order, for the caller
        to give back (its piece is no longer wanted: they would hold their share of the
        blocks set aside, and the piece its place in the line for room, for nothing). The
        one its task stores stops waiting; the piece's next block is asked ``waits`` again.
        """
        group = self._aside.pop(piece, None)
        if group is None:
            return []
        scope = self._aside_tasks.pop(piece, None)
        if scope is not None:
            scope.cancel()
        size = sum(size for _item, size in group)
        self._aside_bytes -= size
        self._bytes -= size
        self._lot.unpark()  # the writer calls on_drained if it is due
        return [item for item, _size in group]

    async def run(
        self,
        store: Callable[[_T], Awaitable[None]],
        on_drained: Callable[[], None],
        *,
        piece_of: Callable[[_T], Hashable] | None = None,
        waits: Callable[[_T], bool] | None = None,
        drop: Callable[[_T], None] | None = None,
    ) -> None:
        """Store the items with ``store``, one at a time, in the order they were put, until
        cancelled (the items still waiting are then dropped with the queue: one run per
        queue).

        ``on_drained`` is called (between two stores, without waiting) once the queue,
        having been over its bound, holds at most half of it again: the torrent then
        reads the peers it paused (the half leaves them room to send before the writer
        runs dry, as a high and a low watermark do).

        With ``waits`` (and ``piece_of``), an item that ``waits`` says would wait for room
        for its piece is set aside with the items of its piece (``piece_of``) that follow,
        and the writer goes on (see the module documentation); ``drop`` is given those it
        cannot keep, which leave the queue. ``waits`` is asked once per item, and only of
        an item whose piece has nothing set aside.
        """
        async with trio.open_nursery() as nursery:
            while True:
                if not self._items:
                    self._drain_check(on_drained)
                    await self._lot.park()
                    continue
                item, size = self._items.popleft()
                if waits is not None and piece_of is not None:
                    piece = piece_of(item)
                    group = self._aside.get(piece) if self._aside else None
                    if group is not None or waits(item):
                        if self._set_aside(piece, group, item, size, drop):
                            self._start_aside(nursery, piece, store)
                        continue
                self._storing += 1
                try:
                    await store(item)
                finally:
                    self._storing -= 1
                    self._bytes -= size
                self._drain_check(on_drained)

    def _set_aside(
        self,
        piece: Hashable,
        group: deque[tuple[_T, int]] | None,
        item: _T,
        size: int,
        drop: Callable[[_T], None] | None,
    ) -> bool:
        """Keep ``item`` behind the blocks of its piece set aside, or give it back past
        ``max_bytes`` set aside; whether it starts a piece set aside."""
        if self._aside_bytes + size > self._max_bytes:
            self._bytes -= size
            self._gave_back = True  # its peer is paused until the blocks set aside drain
            if drop is not None:
                drop(item)
            return False
        started = group is None
        if group is None:
            group = self._aside[piece] = deque()
        group.append((item, size))
        self._aside_bytes += size
        return started

    def _start_aside(
        self,
        nursery: trio.Nursery,
        piece: Hashable,
        store: Callable[[_T], Awaitable[None]],
    ) -> None:
        """Start the task that stores ``piece``'s blocks set aside."""
        scope = self._aside_tasks[piece] = trio.CancelScope()
        nursery.start_soon(self._store_aside, piece, self._aside[piece], scope, store)

    async def _store_aside(
        self,
        piece: Hashable,
        group: deque[tuple[_T, int]],
        scope: trio.CancelScope,
        store: Callable[[_T], Awaitable[None]],
    ) -> None:
        """Store ``piece``'s blocks set aside, in order: the first waits for room in its
        place in line (the others are then in memory), those set aside meanwhile follow."""
        with scope:
            while group and self._aside.get(piece) is group:
                item, size = group[0]
                self._storing += 1
                try:
                    await store(item)
                finally:
                    self._storing -= 1
                # Taken off once stored (had clear() or discard() dropped it, it counts no
                # more).
                if self._aside.get(piece) is group:
                    group.popleft()
                    self._aside_bytes -= size
                    self._bytes -= size
            if self._aside.get(piece) is group:
                del self._aside[piece]
                del self._aside_tasks[piece]
            self._lot.unpark()  # the writer calls on_drained if it is due

    def _drain_check(self, on_drained: Callable[[], None]) -> None:
        """Call ``on_drained`` once the queue fell back to half its bound (the blocks set
        aside apart), and the blocks set aside too if one was given back."""
        half = self._max_bytes // 2
        if not (self._was_over or self._gave_back) or self._bytes - self._aside_bytes > half:
            return
        if self._gave_back and self._aside_bytes > half:
            return
        self._was_over = self._gave_back = False
        on_drained()
