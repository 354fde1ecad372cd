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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
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
        self._bytes = 0  # the items' and the one being stored's
        self._storing = False
        self._was_over = False  # over the bound since the last on_drained
        self._lot = trio.lowlevel.ParkingLot()

    @property
    def queued_bytes(self) -> int:
        """The bytes waiting, and the one block being stored."""
        return self._bytes

    @property
    def idle(self) -> bool:
        """Whether nothing waits and nothing is being stored: a block put now is stored at
        the writer's next turn."""
        return not self._items and not self._storing

    @property
    def over(self) -> bool:
        """Whether the queue holds ``max_bytes`` or more: its torrent stops reading the
        peers that send it blocks, until ``on_drained``."""
        return self._bytes >= self._max_bytes

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
        if self._bytes >= self._max_bytes:
            self._was_over = True
        self._lot.unpark()
        return True

    def clear(self) -> None:
        """Drop every block still waiting (the one being stored is not: it counts until
        stored). ``on_drained`` is called at the writer's next turn if it is due."""
        self._bytes -= sum(size for _item, size in self._items)
        self._items.clear()
        self._lot.unpark()

    async def run(
        self, store: Callable[[_T], Awaitable[None]], on_drained: Callable[[], None]
    ) -> None:
        """Store the items with ``store``, one at a time, in the order they were put, until
        cancelled (the items still waiting are then dropped with the queue).

        ``on_drained`` is called (between two stores, without waiting) once the queue,
        having been over its bound, holds at most half of it again: the torrent then
        reads the peers it paused (the half leaves them room to send before the writer
        runs dry, as a high and a low watermark do).
        """
        while True:
            while not self._items:
                self._drain_check(on_drained)
                await self._lot.park()
            item, size = self._items.popleft()
            self._storing = True
            try:
                await store(item)
            finally:
                self._storing = False
                self._bytes -= size
            self._drain_check(on_drained)

    def _drain_check(self, on_drained: Callable[[], None]) -> None:
        """Call ``on_drained`` once the queue fell back to half its bound."""
        if self._was_over and self._bytes <= self._max_bytes // 2:
            self._was_over = False
            on_drained()
