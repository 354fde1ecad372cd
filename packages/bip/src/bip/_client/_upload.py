"""Serving peers: the requests a torrent accepted, answered with blocks read from the disk.

bip_peer's :class:`~bip_peer.PeerConnection` already refused every request we must not serve
(while we choke the peer, for a piece we did not announce, beyond our ``reqq``); what reaches
here is queued per peer and served by a few worker tasks, so a slow disk read holds up one
worker, not the task routing every peer's messages.

Bounded. A peer's queued requests are kept in a dict of its own, oldest first. The
connection's open requests (:attr:`~bip_peer.PeerConnection.peer_requests`, at most our
``reqq``) are the truth: a request cancelled, or rejected by a choke, leaves them at once, and
its entry here becomes stale. Stale entries are skipped when they come up, and swept out
whenever a peer's dict grows past ``reqq`` by a quarter: a peer requesting and cancelling in
a loop holds at most ``reqq * 5 / 4`` entries, of which at most ``reqq`` are live, and the
sweep costs O(1) per request however the peer plays. A request that was cancelled before its
event reached us is not queued at all. A peer's entries go when a worker or a watcher (below)
finds it gone: every peer with entries is in one of their hands.

Fair. Peers with requests take turns, one block each (round robin), so a peer with a deep
queue does not starve the others; several workers may serve one peer at once when nobody
else waits.

Backpressure. A block is read for a peer only while the bytes queued for it and not yet
written (:meth:`~bip_peer.PeerManager.queued_bytes`), plus the blocks being read for it,
are below :data:`SEND_WATERMARK` (512 KiB), as libtorrent reads a block for a peer only
below its ``send_buffer_watermark``. A peer at the watermark is set aside with a watcher
task waiting for its queue to drain (:meth:`~bip_peer.PeerManager.wait_writable`), then
takes its turn again; the workers go on serving the others. A peer that requests and never
reads holds the watermark's bytes and no worker, until the manager's send timeout drops it.
Blocks are queued with :meth:`~bip_peer.PeerManager.send_nowait`: a worker never waits on a
peer.

Just before reading, and again before sending, a request is looked up in the connection's
open requests: one cancelled or rejected by a choke meanwhile is skipped.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Final

import trio

from bip_disk import DiskManager, StorageError, TorrentHandle, TorrentStateError
from bip_peer import LocalProtocolError, Peer, PeerClosedError, PeerManager, Piece, Request
from bip_select import Block

__all__ = ["SEND_WATERMARK", "UPLOAD_WORKERS", "Uploader"]

logger = logging.getLogger("bip.client")

UPLOAD_WORKERS: Final = 4
"""Tasks per torrent reading requested blocks from disk and queueing them to peers."""

SEND_WATERMARK: Final = 512 * 1024
"""Bytes queued for a peer (not yet written, or being read for it) below which we read it
another block.

libtorrent's default ``send_buffer_watermark`` (500 KiB): the kernel's socket buffer covers
the link's delay, this only has to cover a disk read. On loopback a libtorrent leecher
downloads from ``bip seed`` as fast with 256 KiB as with 4 MiB (about 135 MiB/s here), and
a peer that stops reading holds this and one block, and no worker.
"""


_BlockKey = tuple[int, int, int]


class _PeerQueue:
    """One peer's queued requests and where the peer is in the uploader's hands."""

    __slots__ = ("limit", "reading", "requests", "scheduled", "stuck", "waiting_reads")

    def __init__(self, reqq: int) -> None:
        # Oldest first; a dict keeps insertion order and drops a duplicate for free.
        self.requests: dict[_BlockKey, None] = {}
        # Past this many entries the stale ones are swept out (see the module docstring).
        self.limit = reqq + reqq // 4 + 1
        self.reading = 0  # bytes being read from the disk for this peer
        self.scheduled = False  # in the ready ring, set aside with a watcher, or waiting_reads
        # Out of the ring until a read for it ends: its blocks being read alone reach the
        # watermark (a watcher would find its send queue empty and hand it back at once).
        self.waiting_reads = False
        # Queued bytes when the send queue refused a block (full in messages): its next turn
        # waits until some of them are written (0: not stuck).
        self.stuck = 0


class Uploader:
    """The upload side of one torrent.

    Args:
        disk: where the blocks are read.
        manager: where the pieces are sent.
        on_sent: told of every block queued to a peer (for rates and the choker).
        watermark: bytes queued for a peer below which another block is read for it
            (:data:`SEND_WATERMARK`).

    Raises:
        ValueError: ``watermark`` is not a positive int.
    """

    def __init__(
        self,
        disk: DiskManager,
        manager: PeerManager,
        *,
        on_sent: Callable[[Peer, Block], None],
        watermark: int = SEND_WATERMARK,
    ) -> None:
        if isinstance(watermark, bool) or not isinstance(watermark, int) or watermark < 1:
            raise ValueError(f"watermark must be a positive int, not {watermark!r}")
        self._disk = disk
        self._manager = manager
        self._on_sent = on_sent
        self._watermark = watermark
        self._queues: dict[Peer, _PeerQueue] = {}
        self._ready: deque[Peer] = deque()  # peers to serve, in turn; each at most once
        self._idle = trio.lowlevel.ParkingLot()  # workers waiting for a ready peer
        self._nursery: trio.Nursery | None = None  # run()'s, for the watchers

    def queue(self, peer: Peer, request: Request) -> None:
        """Serve ``request`` from ``peer`` when its turn comes."""
        key = (request.index, request.begin, request.length)
        connection = peer.connection
        if key not in connection.peer_requests:
            return  # cancelled, or rejected by a choke, before its event reached us
        state = self._queues.get(peer)
        if state is None:
            state = self._queues[peer] = _PeerQueue(connection.limits.max_peer_requests)
        if len(state.requests) >= state.limit:
            self._sweep(peer, state)  # a new dict
        state.requests[key] = None
        if not state.scheduled:
            state.scheduled = True
            self._ready.append(peer)
            if self._idle:
                self._idle.unpark()

    def queued(self, peer: Peer) -> int:
        """Requests of ``peer`` queued here, stale ones (cancelled, not yet swept) included."""
        state = self._queues.get(peer)
        return 0 if state is None else len(state.requests)

    @property
    def queued_peers(self) -> int:
        """Peers with requests queued here (or blocks being read for them)."""
        return len(self._queues)

    async def run(self, handle: TorrentHandle, *, workers: int = UPLOAD_WORKERS) -> None:
        """Serve the torrent ``handle``'s requests until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                for _ in range(workers):
                    nursery.start_soon(self._work, handle)
                await trio.sleep_forever()
            finally:
                self._nursery = None

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _sweep(peer: Peer, state: _PeerQueue) -> None:
        """Drop ``peer``'s stale entries: requests its connection no longer has open."""
        open_requests = peer.connection.peer_requests
        state.requests = {key: None for key in state.requests if key in open_requests}

    def _forget(self, peer: Peer, state: _PeerQueue) -> None:
        """Drop ``peer``'s entry if nothing is queued or being read for it and nobody holds it."""
        if (
            not state.requests
            and not state.reading
            and not state.scheduled
            and self._queues.get(peer) is state
        ):
            del self._queues[peer]

    def _drop(self, peer: Peer, state: _PeerQueue) -> None:
        """``peer`` is gone: forget its requests."""
        state.requests.clear()
        state.scheduled = False
        self._forget(peer, state)

    def _next(self) -> tuple[Peer, _PeerQueue, _BlockKey] | None:
        """Take the next peer's turn: its oldest open request, with room for the block.

        ``None`` when the peer at the head of the ring had no turn to take (gone, at the
        watermark, or only stale requests left).
        """
        peer = self._ready.popleft()
        state = self._queues.get(peer)
        if state is None:
            return None
        manager = self._manager
        if not manager.is_connected(peer):
            self._drop(peer, state)
            return None
        if state.reading >= self._watermark:
            state.waiting_reads = True  # _work hands it back as one of its reads ends
            return None
        limit = self._watermark - state.reading
        if state.stuck:
            limit = min(limit, state.stuck)
        if manager.queued_bytes(peer) >= limit:
            self._set_aside(peer, state, limit)
            return None
        state.stuck = 0
        requests = state.requests
        open_requests = peer.connection.peer_requests
        key: _BlockKey | None = None
        while requests:
            oldest = next(iter(requests))
            del requests[oldest]
            if oldest in open_requests:
                key = oldest
                break
        if requests:
            self._ready.append(peer)  # its next turn, after every other peer's
            if self._idle:
                self._idle.unpark()  # a peer alone may keep several workers busy
        else:
            state.scheduled = False
        if key is None:
            self._forget(peer, state)
            return None
        return peer, state, key

    def _set_aside(self, peer: Peer, state: _PeerQueue, limit: int) -> None:
        """Hand ``peer`` to a watcher that waits for fewer than ``limit`` bytes queued."""
        nursery = self._nursery
        assert nursery is not None  # only workers call this, and they run in run()'s nursery
        nursery.start_soon(self._watch, peer, state, limit)

    async def _watch(self, peer: Peer, state: _PeerQueue, limit: int) -> None:
        """Wait for ``peer``'s send queue to drain below ``limit``, then give it its turn.

        Blocks being read for it were counted in ``limit``; their reads only end meanwhile
        (no worker serves a peer set aside), so one wait is enough.
        """
        try:
            await self._manager.wait_writable(peer, limit)
        except PeerClosedError:
            self._drop(peer, state)
            return
        if state.requests:
            self._ready.append(peer)
            if self._idle:
                self._idle.unpark()
        else:
            state.scheduled = False
            self._forget(peer, state)

    async def _work(self, handle: TorrentHandle) -> None:
        ready = self._ready
        while True:
            if not ready:
                await self._idle.park()
                continue
            turn = self._next()
            if turn is None:
                continue
            peer, state, key = turn
            length = key[2]
            state.reading += length
            try:
                await self._serve(handle, peer, state, key)
            finally:
                state.reading -= length
                if state.waiting_reads:
                    state.waiting_reads = False
                    ready.append(peer)
                    if self._idle:
                        self._idle.unpark()
                self._forget(peer, state)

    async def _serve(
        self, handle: TorrentHandle, peer: Peer, state: _PeerQueue, key: _BlockKey
    ) -> None:
        """Read ``key`` and queue it to ``peer``, unless it is no longer wanted."""
        try:
            data = await self._disk.read_block(handle, *key)
        except (TorrentStateError, StorageError) as error:
            # A storage fault stops the torrent; its event says why.
            logger.debug("cannot serve %s: %s", key, error)
            return
        if key not in peer.connection.peer_requests:
            return  # cancelled, or rejected by a choke, while it was read
        try:
            sent = self._manager.send_nowait(peer, Piece(key[0], key[1], data))
        except LocalProtocolError:  # StaleSendError: overtaken by the peer; nothing queued
            return
        if sent:
            self._on_sent(peer, Block(*key))
            return
        # Gone, or full (in messages, or in bytes by what others queued: haves, metadata...):
        # the request goes back to the head of the peer's queue, and its next turn waits
        # until some of what is queued is written. The block read is lost; this is rare.
        # (``state`` stays ours while a read for the peer is counted in it: _forget keeps it)
        if not self._manager.is_connected(peer):
            return
        state.requests = {key: None, **state.requests}
        state.stuck = max(1, self._manager.queued_bytes(peer))
        if not state.scheduled:
            state.scheduled = True
            self._ready.append(peer)
            if self._idle:
                self._idle.unpark()
