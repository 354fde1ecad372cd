"""Serving peers: the requests a torrent accepted, answered with blocks read from the disk.

bip_peer's :class:`~bip_peer.PeerConnection` already refused every request we must not serve
(while we choke the peer, for a piece we did not announce, beyond our ``reqq``), and the
torrent the requests its brain does not admit (:meth:`~bip_select.SwarmBrain.may_upload`: a
piece not revealed to a peer we super-seed, or lost from storage); what reaches here is
queued per peer and served by a few worker tasks, so a slow disk read holds up one worker, not
the task routing every peer's messages.

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

Backpressure. A block is read for a peer only while the bytes queued for it and not yet written
(:meth:`~bip_peer.PeerManager.queued_bytes`), plus the blocks being read for it, are below the
peer's send watermark, as libtorrent reads a block for a peer only below its watermark. The
watermark adapts to the peer, with libtorrent's formula and defaults: the peer's upload rate
times :data:`SEND_WATERMARK_FACTOR` (50 %), so what is read ahead covers half a second at the
rate the peer takes it, clamped between :data:`SEND_LOW_WATERMARK` (10 KiB) and
:data:`SEND_WATERMARK` (512 KiB). A slow peer holds little read ahead (50 peers taking 20 KiB/s
each hold a block or two each, 1.6 MiB in all at most, where a fixed 512 KiB held 25 MiB), a
fast one enough to cover disk reads at its rate. A peer at its watermark is set aside with a
watcher task waiting for its queue to drain (:meth:`~bip_peer.PeerManager.wait_writable`), then
takes its turn again; the workers go on serving the others. A peer that requests and never reads
holds its watermark's bytes and no worker, until the manager's send timeout drops it. Blocks are
queued with :meth:`~bip_peer.PeerManager.send_nowait`: a worker never waits on a peer.

The rate. libtorrent takes the payload bytes it wrote to the peer in the last second; we count
the payload bytes of the blocks we queued to the peer over the last second
(:data:`RATE_WINDOW`), in O(1) per block. They are the same in the steady state (a block is
queued only as the queue drains below the watermark, so blocks go in at the rate they go out),
and the filling of an empty queue counts only once. At a given moment the rate is off by about
one of the manager's write batches (it sends what is queued in batches of up to 256 KiB, so
blocks are queued in bursts): the watermark wavers around the formula's value (between 40 % and
180 % of it for a peer at 200 KiB/s), and is exact on average; it only bounds what is read
ahead, never what is sent. A new peer's rate starts at zero (its meter counts as if it had been
idle for a whole window, rather than dividing its first block by a few milliseconds), and the
meter outlives the peer's queued requests, so a peer whose requests come in bursts keeps its
rate between them.

Why the rate can grow from zero. The comparison is strict: a peer with nothing queued or
being read always gets a block, however low its watermark (never less than one block at a
time). With ``n`` blocks at a time, each read, queued and handed to the socket in some time
``t`` (a disk read, mostly: the kernel's socket buffer covers the link), the rate is
``n * block / t`` and the watermark ``factor * n * block / t``, which lets a block more in as
soon as ``t`` is under ``factor`` seconds (half a second): then the rate grows, block by
block, up to what the peer takes, the workers or the high bound. A disk that takes more
than half a second per read may keep a peer at one block at a time, as it does libtorrent's (a
disk that slow limits the upload anyway, though the workers reading at once for one peer would
take a few blocks per read, not one).

Just before reading, and again before sending, a request is looked up in the connection's
open requests: one cancelled or rejected by a choke meanwhile is skipped.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections import deque
from collections.abc import Callable
from typing import Final

import trio

from bip_disk import DiskManager, StorageError, TorrentHandle, TorrentStateError
from bip_peer import (
    LocalProtocolError,
    Peer,
    PeerClosedError,
    PeerManager,
    Piece,
    RateMeter,
    RejectRequest,
    Request,
    StaleSendError,
)
from bip_select import Block

from ._swarm import REASON_STALLED

__all__ = [
    "RATE_WINDOW",
    "SEND_LOW_WATERMARK",
    "SEND_WATERMARK",
    "SEND_WATERMARK_FACTOR",
    "UPLOAD_WORKERS",
    "Uploader",
    "refuse_request",
]

logger = logging.getLogger("bip.client")

UPLOAD_WORKERS: Final = 4
"""Tasks per torrent reading requested blocks from disk and queueing them to peers."""

SEND_WATERMARK: Final = 512 * 1024
"""The most a peer's send watermark can be: bytes queued for it (not yet written, or being
read for it) below which we read it another block, however fast it takes them.

The high bound of the adaptive watermark (see the module docstring), as libtorrent's
``send_buffer_watermark`` (500 KiB; 512 KiB is qBittorrent's default): the kernel's socket
buffer covers the link's delay, this only has to cover a disk read. A peer taking 1 MiB/s or
more reaches it (half a second at its rate). On loopback a libtorrent leecher downloads from
``bip seed`` as fast with 256 KiB as with 4 MiB, and as fast with the adaptive watermark as
with this one fixed (about 150 MiB/s here); a peer that stops reading holds at most this and
one block, and no worker.
"""

SEND_LOW_WATERMARK: Final = 10 * 1024
"""The least a peer's send watermark can be, as libtorrent's ``send_buffer_low_watermark``.

Below a block (16 KiB): a peer whose rate is that low, or zero (new, or not reading), is
served one block at a time (a block is always read for a peer with nothing queued).
"""

SEND_WATERMARK_FACTOR: Final = 50
"""A peer's send watermark in percent of its upload rate (bytes per second), as libtorrent's
``send_buffer_watermark_factor``: 50 keeps half a second of the peer's rate read ahead."""

RATE_WINDOW: Final = 1.0
"""Seconds a peer's upload rate is measured over, for its watermark (libtorrent's: the last
second)."""

_RATE_BUCKETS: Final = 10  # the rate's time resolution: a tenth of the window


_BlockKey = tuple[int, int, int]


def refuse_request(manager: PeerManager, peer: Peer, index: int, begin: int, length: int) -> None:
    """Answer ``peer``'s open request for the block at ``begin`` in piece ``index`` without
    the block, so that it frees its ``reqq`` slot: one the :class:`Uploader` could not read,
    or one the torrent refuses (a piece not revealed to a peer we super-seed, or lost from
    storage).

    With fast, a reject (BEP 6: every request is answered; libtorrent rejects a block whose
    read failed). The reject is a control message, queued whatever the send queue holds;
    refused, the peer left a flood of them unwritten (it stopped reading) and is dropped, as
    the swarm drops it for its haves. Without fast, nothing is sent (BEP 3 lets requests go
    unanswered: the peer times it out) and the connection forgets the request: left open, it
    would hold a slot for good and later requests would be refused. A request no longer open
    (cancelled, or rejected by a choke, before this) is left alone.
    """
    connection = peer.connection
    if not connection.fast:
        connection.withdraw_peer_request(index, begin, length)
        return
    # Stale: no longer open. Any other LocalProtocolError is a bug of ours, and goes up.
    with contextlib.suppress(StaleSendError):
        if not manager.send_control(peer, RejectRequest(index, begin, length)):
            manager.remove_peer(peer, REASON_STALLED)


class _PeerQueue:
    """One peer's queued requests and where the peer is in the uploader's hands."""

    __slots__ = ("limit", "meter", "reading", "requests", "scheduled", "stuck", "waiting_reads")

    def __init__(self, reqq: int, meter: RateMeter) -> None:
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
        # The peer's upload rate (the uploader's, shared with the queues the peer has later).
        self.meter = meter


class Uploader:
    """The upload side of one torrent.

    A peer's send watermark (see the module docstring) is its upload rate over the last
    :data:`RATE_WINDOW` times ``watermark_factor`` percent, clamped between
    ``low_watermark`` and ``watermark``. For a fixed watermark, give both bounds the same
    value.

    Args:
        disk: where the blocks are read.
        manager: where the pieces are sent.
        on_sent: told of every block queued to a peer (for rates and the choker).
        watermark: the most a peer's watermark can be (:data:`SEND_WATERMARK`).
        low_watermark: the least a peer's watermark can be (:data:`SEND_LOW_WATERMARK`);
            above ``watermark``, it is ``watermark``.
        watermark_factor: a peer's watermark in percent of its upload rate in bytes per
            second (:data:`SEND_WATERMARK_FACTOR`).

    Raises:
        ValueError: ``watermark``, ``low_watermark`` or ``watermark_factor`` is not a
            positive int.
    """

    def __init__(
        self,
        disk: DiskManager,
        manager: PeerManager,
        *,
        on_sent: Callable[[Peer, Block], None],
        watermark: int = SEND_WATERMARK,
        low_watermark: int = SEND_LOW_WATERMARK,
        watermark_factor: int = SEND_WATERMARK_FACTOR,
    ) -> None:
        for name, value in (
            ("watermark", watermark),
            ("low_watermark", low_watermark),
            ("watermark_factor", watermark_factor),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        self._disk = disk
        self._manager = manager
        self._on_sent = on_sent
        self._watermark = watermark
        self._low_watermark = min(low_watermark, watermark)
        self._factor = watermark_factor / 100
        self._queues: dict[Peer, _PeerQueue] = {}
        # Each peer's upload rate, kept while its queue comes and goes. Weak: a peer's meter
        # goes with the peer's handle, whether or not we saw it leave (a peer removed while
        # nothing was queued for it never comes up here again).
        self._meters: weakref.WeakKeyDictionary[Peer, RateMeter] = weakref.WeakKeyDictionary()
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
            state = self._queues[peer] = _PeerQueue(
                connection.limits.max_peer_requests, self._meter(peer)
            )
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

    def upload_rate(self, peer: Peer) -> float:
        """Bytes per second of blocks queued to ``peer`` over the last :data:`RATE_WINDOW`.

        0.0 for a peer never served. Call it from trio (it reads trio's clock).
        """
        meter = self._meters.get(peer)
        return 0.0 if meter is None else meter.rate(trio.current_time())

    def watermark(self, peer: Peer) -> int:
        """``peer``'s send watermark now: bytes queued or being read for it below which its
        next block is read.

        Call it from trio (it reads trio's clock).
        """
        meter = self._meters.get(peer)
        if meter is None:
            return self._low_watermark
        return self._watermark_of(meter, trio.current_time())

    @property
    def queued_peers(self) -> int:
        """Peers with requests queued here (or blocks being read for them)."""
        return len(self._queues)

    async def run(self, handle: TorrentHandle, *, workers: int = UPLOAD_WORKERS) -> None:
        """Serve the torrent ``handle``'s requests until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for _ in range(workers):
                    nursery.start_soon(self._work, handle)
                await trio.sleep_forever()
        finally:
            # Only once every worker is done: a worker woken in the same tick as the
            # cancellation may still set a peer aside (its watcher is cancelled at once).
            self._nursery = None

    # -- internals --------------------------------------------------------------------------

    def _meter(self, peer: Peer) -> RateMeter:
        """``peer``'s rate meter, made the first time it is asked."""
        meter = self._meters.get(peer)
        if meter is None:
            # Started a window ago: a new peer's rate is its bytes over a whole window. A
            # meter started now would divide its first block by a few milliseconds, and let a
            # slow peer's first burst of blocks raise its own watermark.
            now = trio.current_time()
            meter = self._meters[peer] = RateMeter(
                RATE_WINDOW, _RATE_BUCKETS, now=now - RATE_WINDOW
            )
        return meter

    def _watermark_of(self, meter: RateMeter, now: float) -> int:
        """The watermark for a peer whose upload rate ``meter`` counts."""
        watermark = int(meter.rate(now) * self._factor)
        if watermark < self._low_watermark:
            return self._low_watermark
        return min(watermark, self._watermark)

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
        """``peer`` is gone: forget its requests and its rate."""
        self._meters.pop(peer, None)
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
        watermark = self._watermark_of(state.meter, trio.current_time())
        if state.reading >= watermark:
            state.waiting_reads = True  # _work hands it back as one of its reads ends
            return None
        limit = watermark - state.reading
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
            if ready:
                await self._take_turn(handle)
            else:
                await self._idle.park()

    async def _take_turn(self, handle: TorrentHandle) -> None:
        """Serve the next peer's turn, if it has one.

        A call of its own so that a worker waiting for work holds no peer (its handle, its
        connection and its rate stay alive as long as anything refers to them).
        """
        turn = self._next()
        if turn is None:
            return
        peer, state, key = turn
        length = key[2]
        state.reading += length
        try:
            await self._serve(handle, peer, state, key)
        finally:
            state.reading -= length
            if state.waiting_reads:
                state.waiting_reads = False
                self._ready.append(peer)
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
            refuse_request(self._manager, peer, *key)
            return
        if key not in peer.connection.peer_requests:
            return  # cancelled, or rejected by a choke, while it was read
        try:
            sent = self._manager.send_nowait(peer, Piece(key[0], key[1], data))
        except LocalProtocolError:  # StaleSendError: overtaken by the peer; nothing queued
            return
        if sent:
            state.meter.add(key[2], trio.current_time())
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
