"""The reader's backpressure on the replies a peer's own messages earn: a peer that floods
requests we reject (here: before the metadata, with the fast extension) and reads slowly
is read no faster than it reads, and its send queue stays within the byte bound plus one
read's rejects. In-memory lockstep streams (a write waits for the far end to read) under
trio's autojump clock."""

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
from bip_peer._manager import (
    REASON_SEND_TIMEOUT,
    Peer,
    PeerClosedError,
    PeerManager,
    PeerManagerConfig,
    PeerRemoved,
    open_peer_manager,
)
from bip_peer._messages import KeepAlive, Request

TORRENT = InfoHash(v1=b"\x33" * 20)
EXT = Extensions.FAST | Extensions.EXTENSION_PROTOCOL
CAPACITY = 16 * 1024  # the send queue's byte bound
READ = 4096  # bytes per read: one read's rejects are at most this (a reject is a request's size)
REQUEST = Request(0, 0, 16384).encode()  # rejected: no piece count yet
CHUNK = REQUEST * (READ // len(REQUEST))
CHUNKS = 100  # 400 KiB of requests: their rejects would be 25 times the bound


@dataclass
class Flood:
    """The far end's side of the test."""

    manager: PeerManager
    peer: Peer
    far: trio.abc.Stream
    removed: list[PeerRemoved]
    sent: int = 0  # request bytes the manager took from the far end
    peak: int = 0  # the most bytes seen queued for the peer


@asynccontextmanager
async def flooded(**options: object) -> AsyncIterator[Flood]:
    """A manager with one peer (no metadata yet) whose far end floods requests."""
    local, far = trio.testing.lockstep_stream_pair()
    handshake = CompletedHandshake(
        stream=local,
        trailing=b"",
        peer_id=PeerId(b"-XX0000-flooderflood"),
        extensions=EXT,
        our_extensions=EXT,
        info_hash=TORRENT,
        swarm_id=TORRENT.swarm_ids()[0],
        address=PeerAddress(IPv4Address("203.0.113.5"), 6881),
        direction="outbound",
    )
    config = PeerManagerConfig(
        send_queue_bytes=CAPACITY,
        send_queue_size=100_000,  # the byte bound is the one that governs
        receive_size=READ,
        **options,  # type: ignore[arg-type]
    )
    async with open_peer_manager(config) as manager, trio.open_nursery() as nursery:
        removed: list[PeerRemoved] = []

        async def drain() -> None:
            async for event in manager.events():
                if isinstance(event, PeerRemoved):
                    removed.append(event)

        nursery.start_soon(drain)
        flood = Flood(manager, manager.add_peer(handshake, num_pieces=None), far, removed)

        async def send_requests() -> None:
            for _ in range(CHUNKS):
                try:
                    await far.send_all(CHUNK)
                except trio.BrokenResourceError:
                    return  # the peer was removed
                flood.sent += len(CHUNK)
                flood.peak = max(flood.peak, manager.queued_bytes(flood.peer))

        async def watch() -> None:
            while True:
                flood.peak = max(flood.peak, manager.queued_bytes(flood.peer))
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


async def test_a_reject_flood_is_held_to_the_byte_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with flooded() as flood, trio.open_nursery() as nursery:
        nursery.start_soon(drip, flood.far, 1000, 0.1)  # 10 KB/s
        await trio.sleep(5)
        assert flood.peak <= CAPACITY + READ
        # Read no faster than it reads (about 50 KB in 5 s), yet still read: it stalls,
        # is not dropped, and goes on as its reading makes room.
        assert CAPACITY < flood.sent < CHUNKS * len(CHUNK) // 2
        assert flood.manager.is_connected(flood.peer)
        refused = flood.peer.connection.refused_requests
        await trio.sleep(2)
        assert flood.peer.connection.refused_requests > refused
        assert flood.peak <= CAPACITY + READ
        nursery.cancel_scope.cancel()


async def test_the_reader_is_not_starved_by_senders_keeping_the_queue_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The reader waits for its own rejects' place in the queue (their bytes written up to
    the bound), not for the queue to fall below the bound, which a sender refilling it at
    every write would put off: it goes on reading, and the queue stays bounded."""
    async with flooded() as flood, trio.open_nursery() as nursery:

        async def keep_full() -> None:
            while True:
                await flood.manager.send(flood.peer, KeepAlive())

        nursery.start_soon(keep_full)
        nursery.start_soon(drip, flood.far, 1000, 0.1)
        await trio.sleep(5)
        # Rejects and keep-alives share the 50 KB it read: the flood still got through.
        assert flood.sent > 2 * len(CHUNK)
        assert flood.peak <= CAPACITY + READ + len(KeepAlive().encode())
        nursery.cancel_scope.cancel()


async def test_a_flooder_that_stops_reading_is_dropped_by_the_send_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with flooded(idle_timeout=10.0) as flood, trio.open_nursery() as nursery:
        # It reads a little, then never again: the reader waits for the queue, and the
        # writer's stuck write ends it (waiting for our queue is not the peer being idle).
        nursery.start_soon(flood.far.receive_some, 1000)
        with trio.fail_after(30):
            while not flood.removed:
                await trio.sleep(1)
        assert [event.reason for event in flood.removed] == [REASON_SEND_TIMEOUT]
        assert flood.peak <= CAPACITY + READ
        with pytest.raises(PeerClosedError):
            await flood.manager.send(flood.peer, KeepAlive())
