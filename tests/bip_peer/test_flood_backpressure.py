"""The replies a peer's own messages earn (rejects) are bounded, and never stop the reader.

A peer that floods requests we reject (here: before the metadata, with the fast extension)
faster than it reads their rejects is removed once more than ``send_queue_bytes`` of them
are unwritten (1 MiB without a byte bound; never less than 64 KiB, nor than four times what
the ``reqq`` we advertise can earn): its send queue stays within that plus one read's
rejects. An honest peer that cancels every request of a full ``reqq`` at once is kept, a
small byte bound notwithstanding. An honest peer that earns a reject now and then is read at
once however full its queue (the reader never waits for the writer), and two bip peers
trading blocks both ways while cancelling some keep trading (a reader waiting for its own
writer waited for the other side's reader, which waited for its writer...). In-memory
streams under trio's autojump clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address

import pytest
import trio
import trio.testing

from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_peer._connection import ConnectionLimits
from bip_peer._errors import RemoteProtocolError, StaleSendError
from bip_peer._manager import (
    _REPLY_BOUND_WITHOUT_BYTES,
    REASON_PROTOCOL,
    MessageReceived,
    Peer,
    PeerAdded,
    PeerClosedError,
    PeerManager,
    PeerManagerConfig,
    PeerRemoved,
    _reply_bound,
    open_peer_manager,
)
from bip_peer._messages import (
    Cancel,
    HaveAll,
    Interested,
    KeepAlive,
    Piece,
    Request,
    Unchoke,
)

TORRENT = InfoHash(v1=b"\x33" * 20)
EXT = Extensions.FAST | Extensions.EXTENSION_PROTOCOL
CAPACITY = 16 * 1024  # the send queue's byte bound
BOUND = _reply_bound(CAPACITY, ConnectionLimits())  # the rejects' bound: its 64 KiB floor
READ = 4096  # bytes per read: one read's rejects are at most this (a reject is a request's size)
REQUEST = Request(0, 0, 16384).encode()  # rejected: no piece count yet
CHUNK = REQUEST * (READ // len(REQUEST))
CHUNKS = 100  # 400 KiB of requests: their rejects would be 6 times the bound
FLOOD = "the peer floods requests it cannot be served"


def handshake(stream: trio.abc.Stream, n: int) -> CompletedHandshake:
    """A completed handshake over ``stream`` with the peer at 203.0.113.``n``."""
    return CompletedHandshake(
        stream=stream,
        trailing=b"",
        peer_id=PeerId(b"-XX0000-%012d" % n),
        extensions=EXT,
        our_extensions=EXT,
        info_hash=TORRENT,
        swarm_id=TORRENT.swarm_ids()[0],
        address=PeerAddress(IPv4Address(f"203.0.113.{n}"), 6881),
        direction="outbound",
    )


@dataclass
class Flood:
    """The far end's side of the test."""

    manager: PeerManager
    peer: Peer
    far: trio.abc.Stream
    removed: list[PeerRemoved]
    sent: int = 0  # request bytes the manager took from the far end
    peak: int = 0  # the most bytes seen queued for the peer
    spans: int = 0  # the most reply spans seen tracked for the peer


@asynccontextmanager
async def flooded(
    send_queue_bytes: int | None = CAPACITY, read: int = READ, chunks: int = CHUNKS
) -> AsyncIterator[Flood]:
    """A manager with one peer (no metadata yet) whose far end floods requests."""
    local, far = trio.testing.lockstep_stream_pair()
    config = PeerManagerConfig(
        send_queue_bytes=send_queue_bytes,
        send_queue_size=100_000,  # the byte bound is the one that governs
        receive_size=read,
    )
    chunk = REQUEST * (read // len(REQUEST))
    async with open_peer_manager(config) as manager, trio.open_nursery() as nursery:
        removed: list[PeerRemoved] = []

        async def drain() -> None:
            async for event in manager.events():
                if isinstance(event, PeerRemoved):
                    removed.append(event)

        nursery.start_soon(drain)
        flood = Flood(manager, manager.add_peer(handshake(local, 5), num_pieces=None), far, removed)
        task = manager._peers[flood.peer]

        def look() -> None:
            flood.peak = max(flood.peak, manager.queued_bytes(flood.peer))
            flood.spans = max(flood.spans, len(task.replies.spans))

        async def send_requests() -> None:
            for _ in range(chunks):
                try:
                    await far.send_all(chunk)
                except trio.BrokenResourceError:
                    return  # the peer was removed
                flood.sent += len(chunk)
                look()

        async def watch() -> None:
            while True:
                look()
                await trio.sleep(0.01)

        nursery.start_soon(send_requests)
        nursery.start_soon(watch)
        yield flood
        nursery.cancel_scope.cancel()


async def drip(far: trio.abc.Stream, size: int, interval: float) -> None:
    """Read ``size`` bytes every ``interval`` seconds: a peer that reads, slowly."""
    while True:
        await far.receive_some(size)
        await trio.sleep(interval)


async def wait_removed(flood: Flood, seconds: float) -> PeerRemoved:
    with trio.fail_after(seconds):
        while not flood.removed:
            await trio.sleep(0.01)
    [event] = flood.removed
    return event


async def test_a_reject_flood_read_slowly_is_removed_within_the_byte_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with flooded() as flood, trio.open_nursery() as nursery:
        nursery.start_soon(drip, flood.far, 1000, 0.1)  # 10 KB/s
        event = await wait_removed(flood, 5)
        assert event.reason == REASON_PROTOCOL
        assert isinstance(event.error, RemoteProtocolError)
        assert FLOOD in str(event.error)
        assert "bytes of rejects unwritten" in str(event.error)
        assert f"(limit {BOUND})" in str(event.error)
        # Its rejects never held more than the bound and one read's, in a single span
        # (they queue back to back); and it took a few reads past the bound, not its 400 KiB.
        assert BOUND == 64 * 1024
        assert flood.peak <= BOUND + READ
        assert flood.spans == 1
        assert BOUND < flood.sent < BOUND + 4 * READ
        with pytest.raises(PeerClosedError):
            await flood.manager.send(flood.peer, KeepAlive())
        nursery.cancel_scope.cancel()


async def test_a_reject_flood_never_read_is_removed_long_before_the_send_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with flooded() as flood:
        # It reads nothing: the writer's first write never completes (the send timeout
        # would come after 180 s), but the reader goes on and counts the rejects.
        event = await wait_removed(flood, 1)
        assert event.reason == REASON_PROTOCOL
        assert FLOOD in str(event.error)
        assert flood.peak <= BOUND + READ


async def test_without_a_byte_bound_a_reject_flood_is_removed_at_1_mib(
    autojump_clock: trio.testing.MockClock,
) -> None:
    read = 64 * 1024
    bound = _REPLY_BOUND_WITHOUT_BYTES
    async with flooded(send_queue_bytes=None, read=read, chunks=2 * bound // read) as flood:
        event = await wait_removed(flood, 5)
        assert event.reason == REASON_PROTOCOL
        assert f"(limit {bound})" in str(event.error)
        assert flood.peak <= bound + read
        assert flood.sent <= bound + 2 * read


async def test_an_honest_slow_reader_earning_rejects_is_read_at_once_and_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The owner keeps the peer's queue at its bound and the peer reads it slowly, sending
    a request now and then that earns a reject: each is read at once (the reader does not
    wait for the queue ahead of its reject to be written), and the peer stays."""
    async with flooded(chunks=0) as flood, trio.open_nursery() as nursery:
        manager, peer = flood.manager, flood.peer

        async def keep_full() -> None:
            while True:
                await manager.send(peer, KeepAlive())

        nursery.start_soon(keep_full)
        nursery.start_soon(drip, flood.far, 1000, 0.1)  # the queue takes 1.6 s to drain
        for _ in range(20):
            await trio.sleep(0.5)
            assert manager.queued_bytes(peer) >= CAPACITY  # always full ahead of the reject
            started = trio.current_time()
            # Lockstep: each returns once the reader took it; the second only if the reader
            # read on after queueing the first one's reject.
            await flood.far.send_all(REQUEST)
            await flood.far.send_all(REQUEST)
            assert trio.current_time() - started < 0.01
        assert manager.is_connected(peer)
        assert not flood.removed
        assert peer.connection.refused_requests == 40
        assert flood.peak <= CAPACITY + len(KeepAlive().encode()) + 2 * len(REQUEST)
        # Two rejects every 0.5 s, written within the 1.6 s the queue takes: a few spans.
        assert flood.spans <= 8
        nursery.cancel_scope.cancel()


async def test_an_honest_peer_cancelling_a_full_reqq_at_once_is_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """We advertise a ``reqq`` of 1000 with a 16 KiB byte bound: the peer fills it, then
    cancels all 1000 requests in one write (the endgame). The 17,000 bytes of rejects come
    out of one read, over the byte bound, but within what that ``reqq`` can earn: the peer
    stays (it was removed as a flood when the bound was the byte bound alone)."""
    reqq = 1000
    config = PeerManagerConfig(
        send_queue_bytes=CAPACITY, limits=ConnectionLimits(max_peer_requests=reqq)
    )
    local, far = trio.testing.memory_stream_pair()
    keys = [(n // 64, n % 64 * 16384, 16384) for n in range(reqq)]
    async with open_peer_manager(config) as manager, trio.open_nursery() as nursery:
        removed: list[PeerRemoved] = []
        cancels = 0

        async def drain() -> None:
            nonlocal cancels
            async for event in manager.events():
                if isinstance(event, PeerRemoved):
                    removed.append(event)
                elif isinstance(event, MessageReceived) and isinstance(event.message, Cancel):
                    cancels += 1

        async def read_all() -> None:  # an honest peer reads what we send
            while await far.receive_some(1 << 20):
                pass

        nursery.start_soon(drain)
        nursery.start_soon(read_all)
        peer = manager.add_peer(handshake(local, 7), num_pieces=100)
        await manager.send(peer, HaveAll())
        await manager.send(peer, Unchoke())
        with trio.fail_after(5):
            await far.send_all(b"".join(Request(*key).encode() for key in keys))
            while len(peer.connection.peer_requests) < reqq:
                await trio.sleep(0.01)
            await far.send_all(b"".join(Cancel(*key).encode() for key in keys))
            while cancels < reqq:
                await trio.sleep(0.01)
        await trio.sleep(1)
        assert not removed
        assert manager.is_connected(peer)
        assert not peer.connection.peer_requests
        assert reqq * 17 > CAPACITY  # the byte bound alone would have removed it
        nursery.cancel_scope.cancel()


# -- two bip peers trading blocks both ways ----------------------------------------------------

PIPE = 16 * 1024  # bytes in flight each way (a socket's buffers)
SEGMENT = 4096  # bytes moved at a time
RATE = 2e6  # bytes per second each way
QUEUE = 256 * 1024  # each side's send queue bound
WINDOW = 64  # requests each side keeps outstanding: 1 MiB of blocks, over the queue's bound
BLOCKS = 200  # blocks each side must get (at e578e4c both stalled before 100)


class _Pipe:
    """One direction of a bounded in-memory connection: writes wait while ``PIPE`` bytes
    are unread, as a socket's do while its buffers are full."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.changed = trio.lowlevel.ParkingLot()
        self.closed = False


class _SendEnd(trio.abc.SendStream):
    def __init__(self, pipe: _Pipe) -> None:
        self.pipe = pipe

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(bytes(data))
        pipe = self.pipe
        while view:
            while len(pipe.buffer) >= PIPE:
                if pipe.closed:
                    raise trio.BrokenResourceError
                await pipe.changed.park()
            if pipe.closed:
                raise trio.BrokenResourceError
            size = min(PIPE - len(pipe.buffer), SEGMENT)
            await trio.sleep(size / RATE)  # the link's speed
            pipe.buffer += view[:size]
            view = view[size:]
            pipe.changed.unpark_all()
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.pipe.closed = True
        self.pipe.changed.unpark_all()
        await trio.lowlevel.checkpoint()


class _ReceiveEnd(trio.abc.ReceiveStream):
    def __init__(self, pipe: _Pipe) -> None:
        self.pipe = pipe

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        pipe = self.pipe
        while not pipe.buffer:
            if pipe.closed:
                return b""
            await pipe.changed.park()
        size = max_bytes or len(pipe.buffer)
        data = bytes(pipe.buffer[:size])
        del pipe.buffer[:size]
        pipe.changed.unpark_all()
        await trio.lowlevel.checkpoint()
        return data

    async def aclose(self) -> None:
        self.pipe.closed = True
        self.pipe.changed.unpark_all()
        await trio.lowlevel.checkpoint()


@dataclass
class Side:
    """What one side of the trade got."""

    blocks: int = 0
    rejects: int = 0  # rejects it earned the other side (cancels of requests not yet served)
    removed: PeerRemoved | None = None


async def trade(manager: PeerManager, side: Side) -> None:
    """Serve every request with the blocking :meth:`PeerManager.send` and request blocks,
    ``WINDOW`` at a time, cancelling one request in four (an endgame's cancels, which the
    other side answers with rejects)."""
    served_in, served_out = trio.open_memory_channel[tuple[Peer, Request]](10_000)

    async def serve() -> None:
        async for peer, request in served_out:
            try:
                await manager.send(peer, Piece(request.index, request.begin, bytes(request.length)))
            except StaleSendError:
                pass  # cancelled meanwhile: rejected instead
            except PeerClosedError:
                return

    async def request(peer: Peer) -> None:
        connection = peer.connection
        while connection.peer_choking or not connection.peer_has_all:
            await trio.sleep(0.01)  # its have all and unchoke are on their way
        for n in range(100_000):
            while len(connection.our_requests) >= WINDOW:
                await trio.sleep(0.01)
            key = (n % 1000, n // 1000 * 16384, 16384)
            try:
                await manager.send(peer, Request(*key))
                if n % 4 == 3:
                    await manager.send(peer, Cancel(*key))
            except StaleSendError:
                pass  # the block came while the cancel waited for room
            except PeerClosedError:
                return
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        async for event in manager.events():
            if isinstance(event, PeerAdded):
                for greeting in (HaveAll(), Unchoke(), Interested()):
                    await manager.send(event.peer, greeting)
                nursery.start_soon(request, event.peer)
            elif isinstance(event, MessageReceived):
                message = event.message
                if isinstance(message, Request):
                    served_in.send_nowait((event.peer, message))
                elif isinstance(message, Piece):
                    side.blocks += 1
                elif isinstance(message, Cancel):
                    side.rejects += 1  # surfaced only when it earned a reject (fast)
            elif isinstance(event, PeerRemoved):
                side.removed = event
                nursery.cancel_scope.cancel()


async def test_two_peers_serving_and_cancelling_both_ways_keep_trading(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Both queues reach their bound (each side serves as fast as it is asked) and both
    earn rejects: neither reader waits for its writer, so neither side stalls (a reader
    waiting for its writer waited for the other side's reader, which waited for its own
    writer, which waited for the first reader...)."""
    config = PeerManagerConfig(send_queue_bytes=QUEUE, send_queue_size=100_000, receive_size=PIPE)
    one, two = _Pipe(), _Pipe()
    sides = Side(), Side()
    async with (
        open_peer_manager(config) as a,
        open_peer_manager(config) as b,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(trade, a, sides[0])
        nursery.start_soon(trade, b, sides[1])
        peers = (
            a.add_peer(
                handshake(trio.StapledStream(_SendEnd(one), _ReceiveEnd(two)), 1), num_pieces=1000
            ),
            b.add_peer(
                handshake(trio.StapledStream(_SendEnd(two), _ReceiveEnd(one)), 2), num_pieces=1000
            ),
        )
        peaks = [0, 0]
        with trio.fail_after(30):  # 200 blocks at 2 MB/s take about 2 s
            while min(side.blocks for side in sides) < BLOCKS:
                assert not any(side.removed for side in sides)
                for n, (manager, peer) in enumerate(zip((a, b), peers, strict=True)):
                    peaks[n] = max(peaks[n], manager.queued_bytes(peer))
                await trio.sleep(0.05)
        assert min(peaks) >= QUEUE
        assert all(side.rejects > 10 for side in sides)
        nursery.cancel_scope.cancel()
