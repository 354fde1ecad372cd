""":meth:`PeerManager.pause_reading` and :meth:`PeerManager.resume_reading`: an owner whose
sink is behind (a torrent's disk) stops reading one peer without stopping the event stream;
the peer is not idle meanwhile, and writing to it goes on. In-memory streams, virtual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address

import trio
import trio.testing

from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_peer._connection import PeerConnection
from bip_peer._manager import (
    MessageReceived,
    Peer,
    PeerAdded,
    PeerManager,
    PeerManagerConfig,
    open_peer_manager,
)
from bip_peer._messages import NEED_DATA, Have, KeepAlive

TORRENT = InfoHash(v1=b"\x33" * 20)
NUM_PIECES = 8


class Remote:
    """The far end: a PeerConnection over the other end of the stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.connection = PeerConnection(
            num_pieces=NUM_PIECES,
            info_hash=TORRENT,
            our_extensions=Extensions.FAST,
            their_extensions=Extensions.FAST,
        )

    async def send(self, message: object) -> None:
        await self.stream.send_all(self.connection.send(message))  # type: ignore[arg-type]

    async def receive(self) -> object:
        while (event := self.connection.next_event()) is NEED_DATA:
            data = await self.stream.receive_some()
            assert data
            self.connection.receive_data(data)
        return event


@asynccontextmanager
async def one_peer(config: PeerManagerConfig) -> AsyncIterator[tuple[PeerManager, Peer, Remote]]:
    local, far = trio.testing.memory_stream_pair()
    handshake = CompletedHandshake(
        stream=local,
        trailing=b"",
        peer_id=PeerId(b"-XX0000-remoteremote"),
        extensions=Extensions.FAST,
        our_extensions=Extensions.FAST,
        info_hash=TORRENT,
        swarm_id=TORRENT.swarm_ids()[0],
        address=PeerAddress(IPv4Address("10.0.0.1"), 6881),
        direction="outbound",
    )
    async with open_peer_manager(config) as manager:
        yield manager, manager.add_peer(handshake, num_pieces=NUM_PIECES), Remote(far)


async def next_message(events: AsyncIterator[object]) -> object:
    with trio.fail_after(1000):  # virtual time
        event = await anext(events)
    assert isinstance(event, MessageReceived)
    return event.message


async def test_a_paused_peer_is_not_read_nor_idle_until_resumed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with one_peer(PeerManagerConfig(idle_timeout=60)) as (manager, peer, remote):
        events = aiter(manager.events())
        assert isinstance(await anext(events), PeerAdded)
        # PeerAdded is queued by add_peer: let the reader start its first read.
        await trio.testing.wait_all_tasks_blocked()
        manager.pause_reading(peer)
        manager.pause_reading(peer)  # twice is once
        assert manager.is_reading_paused(peer)
        # The read under way when it was paused still ends in events; nothing after it.
        await remote.send(Have(1))
        assert await next_message(events) == Have(1)
        await remote.send(Have(2))
        with trio.move_on_after(300):  # five idle timeouts
            await anext(events)
            raise AssertionError("a paused peer was read (or dropped as idle)")
        assert manager.is_connected(peer)
        # Writing to it goes on meanwhile (keep-alives, and what we send).
        assert manager.send_nowait(peer, Have(5))
        with trio.fail_after(10):
            while (message := await remote.receive()) == KeepAlive():
                pass
            assert message == Have(5)
        manager.resume_reading(peer)
        assert not manager.is_reading_paused(peer)
        assert await next_message(events) == Have(2)
        await remote.send(Have(3))
        assert await next_message(events) == Have(3)


async def test_pausing_a_removed_peer_does_nothing() -> None:
    async with one_peer(PeerManagerConfig()) as (manager, peer, _remote):
        manager.pause_reading(peer)
        manager.remove_peer(peer, "test")
        assert not manager.is_reading_paused(peer)
        manager.pause_reading(peer)
        manager.resume_reading(peer)
        with trio.fail_after(5):
            while peer in manager.peers:
                await trio.sleep(0.01)
        manager.pause_reading(peer)  # gone altogether: nothing either
        manager.resume_reading(peer)
        assert not manager.is_reading_paused(peer)
