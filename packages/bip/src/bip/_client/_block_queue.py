"""A torrent's downloaded blocks on their way to the disk, stored by the torrent's own task.

The session routes every peer's messages from one task. Were that task to wait for bip_disk
(which waits while the torrent checks or moves its storage, or while its in-flight bound is
full), one torrent's slow store would stop every torrent's peer traffic. libtorrent never
waits on the disk in its network loop: its writes are asynchronous. So here: the router
hands a block to its torrent's :class:`BlockQueue` without waiting, and the torrent's writer
task (:meth:`BlockQueue.run`) stores the blocks one at a time, in the order they came (the
brain hears of each once it is stored, as before).

The queue is bounded in bytes: the brain keeps at most a queue depth of requests open per
peer, and a block not stored yet is still open to it, so a torrent whose disk is behind soon
stops being sent more. A block beyond the bound is refused (:meth:`BlockQueue.put` is
``False``): the caller drops it, as libtorrent stops reading a peer over its disk queue
limit, and the brain asks for it again when the request times out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, Generic, TypeVar

import trio

__all__ = ["MAX_QUEUED_BLOCK_BYTES", "BlockQueue"]

MAX_QUEUED_BLOCK_BYTES: Final = 16 * 1024 * 1024
"""The bytes of blocks one torrent keeps waiting for its disk at most (the one being stored
included): a thousand 16 KiB blocks, a few seconds of a fast download."""

_T = TypeVar("_T")


class BlockQueue(Generic[_T]):
    """Blocks waiting to be stored, first in first out, bounded by their bytes.

    >>> queue: BlockQueue[str] = BlockQueue(max_bytes=10)
    >>> queue.put("a", 6), queue.put("b", 6), queue.put("c", 4)
    (True, False, True)
    >>> queue.queued_bytes, queue.idle
    (10, False)
    """

    def __init__(self, max_bytes: int = MAX_QUEUED_BLOCK_BYTES) -> None:
        """An empty queue holding at most ``max_bytes`` (but always one block).

        Raises:
            ValueError: ``max_bytes`` is not positive.
        """
        if type(max_bytes) is not int or max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive int, not {max_bytes!r}")
        self._max_bytes = max_bytes
        self._items: deque[tuple[_T, int]] = deque()
        self._bytes = 0  # the items' and the one being stored's
        self._storing = False
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

    def put(self, item: _T, size: int) -> bool:
        """Queue ``item`` of ``size`` bytes, without waiting; ``False`` (not queued) when
        that would take the queue over its bound (an idle queue takes any one block)."""
        if not self.idle and self._bytes + size > self._max_bytes:
            return False
        self._items.append((item, size))
        self._bytes += size
        self._lot.unpark()
        return True

    async def run(self, store: Callable[[_T], Awaitable[None]]) -> None:
        """Store the items with ``store``, one at a time, in the order they were put, until
        cancelled (the items still waiting are then dropped with the queue)."""
        while True:
            while not self._items:
                await self._lot.park()
            item, size = self._items.popleft()
            self._storing = True
            try:
                await store(item)
            finally:
                self._storing = False
                self._bytes -= size
