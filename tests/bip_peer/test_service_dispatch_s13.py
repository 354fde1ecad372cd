"""Which services the manager asks about a message: those that declare its type (or a base of
it) in ``message_types``, and every service that declares nothing, in the services' order.

A download asked ~10 services about every block, none of which takes one: a service that
says what it takes is asked about nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from ipaddress import IPv4Address
from typing import Any, ClassVar, Protocol

import pytest
import trio
import trio.testing

from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_peer import HolepunchService, MetadataExchange, PeerExchange, PieceLayerExchange
from bip_peer._connection import PeerConnection
from bip_peer._extended import ExtendedHandshake
from bip_peer._manager import (
    ManagerEvent,
    MessageReceived,
    Peer,
    PeerManager,
    PeerManagerConfig,
    open_peer_manager,
)
from bip_peer._messages import (
    NEED_DATA,
    Have,
    HaveAll,
    Interested,
    Message,
    Piece,
    Request,
    Unchoke,
)

TORRENT = InfoHash(v1=b"\x13" * 20)
NUM_PIECES = 8
BOTH = Extensions.EXTENSION_PROTOCOL | Extensions.FAST
BLOCK = b"\x5a" * 16384


class Undeclared:
    """A service of before ``message_types``: it says nothing, so it is asked about everything."""

    def __init__(self, consume: type | None = None) -> None:
        self.consume = consume
        self.messages: list[object] = []

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        return {}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        self.messages.append(message)
        return self.consume is not None and isinstance(message, self.consume)

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def tick(self, manager: PeerManager, now: float) -> None:
        pass


class TakesHaves(Undeclared):
    message_types: ClassVar[tuple[type, ...]] = (Have,)


class TakesNothing(Undeclared):
    message_types: ClassVar[tuple[type, ...]] = ()


class TakesWireMessages(Undeclared):
    # A base class stands for its subclasses: every message of the peer wire (not BEP 10's).
    message_types: ClassVar[tuple[type, ...]] = (Message,)


class Remote:
    """The far end of the connection, driven by hand."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.connection = PeerConnection(
            num_pieces=NUM_PIECES, info_hash=TORRENT, our_extensions=BOTH, their_extensions=BOTH
        )

    async def send(self, *messages: Any) -> None:
        await self.stream.send_all(b"".join(self.connection.send(m) for m in messages))

    async def receive(self) -> Any:
        while True:
            event = self.connection.next_event()
            if event is not NEED_DATA:
                return event
            data = await self.stream.receive_some()
            if not data:
                raise EOFError
            self.connection.receive_data(data)


@asynccontextmanager
async def manager_and_remote(*services: Any) -> AsyncIterator[tuple[PeerManager, Peer, Remote]]:
    local, far = trio.testing.memory_stream_pair()
    async with open_peer_manager(PeerManagerConfig(services=list(services))) as manager:
        peer = manager.add_peer(
            CompletedHandshake(
                stream=local,
                trailing=b"",
                peer_id=PeerId(b"-XX0000-dispatchdisp"),
                extensions=BOTH,
                our_extensions=BOTH,
                info_hash=TORRENT,
                swarm_id=TORRENT.swarm_ids()[0],
                address=PeerAddress(IPv4Address("10.0.0.1"), 6881),
                direction="outbound",
            ),
            num_pieces=NUM_PIECES,
        )
        yield manager, peer, Remote(far)


async def next_message(events: AsyncIterator[ManagerEvent]) -> object:
    with trio.fail_after(10):
        while True:
            event = await events.__anext__()
            if isinstance(event, MessageReceived):
                return event.message


async def test_a_service_is_asked_only_about_the_types_it_declares() -> None:
    everything, haves = Undeclared(), TakesHaves()
    nothing, wire = TakesNothing(), TakesWireMessages()
    async with manager_and_remote(everything, haves, nothing, wire) as (manager, _peer, remote):
        events = manager.events()
        handshake = ExtendedHandshake(m={}, v="far")
        await remote.send(handshake, Have(1), Unchoke())
        assert isinstance(await next_message(events), ExtendedHandshake)
        assert await next_message(events) == Have(1)
        assert await next_message(events) == Unchoke()
    assert [type(m) for m in everything.messages] == [ExtendedHandshake, Have, Unchoke]
    assert haves.messages == [Have(1)]
    assert nothing.messages == []
    assert wire.messages == [Have(1), Unchoke()]  # Message's subclasses; not BEP 10's handshake


async def test_blocks_and_requests_reach_no_declaring_service() -> None:
    haves, nothing = TakesHaves(), TakesNothing()
    async with manager_and_remote(haves, nothing) as (manager, peer, remote):
        events = manager.events()
        await manager.send(peer, HaveAll())
        await manager.send(peer, Unchoke())
        with trio.fail_after(10):
            while not isinstance(await remote.receive(), Unchoke):
                pass
        await remote.send(HaveAll(), Unchoke(), Interested(), Request(0, 0, 16384))
        assert await next_message(events) == HaveAll()
        assert await next_message(events) == Unchoke()
        assert await next_message(events) == Interested()
        assert await next_message(events) == Request(0, 0, 16384)
        await manager.send(peer, Interested())
        await manager.send(peer, Request(0, 0, 16384))
        with trio.fail_after(10):
            while not isinstance(await remote.receive(), Request):
                pass
        await remote.send(Piece(0, 0, BLOCK))
        assert await next_message(events) == Piece(0, 0, BLOCK)
    assert haves.messages == []
    assert nothing.messages == []


async def test_the_order_of_the_services_and_consumption_are_kept() -> None:
    # The first that consumes a message ends its round: a later one, declared or not, and
    # the consumer of the events never see it.
    consumer = TakesHaves(consume=Have)
    later_declared, later_undeclared = TakesHaves(), Undeclared()
    async with manager_and_remote(consumer, later_declared, later_undeclared) as (
        manager,
        _peer,
        remote,
    ):
        events = manager.events()
        await remote.send(Have(1), Unchoke())
        assert await next_message(events) == Unchoke()  # the have was consumed
    assert consumer.messages == [Have(1)]
    assert later_declared.messages == []
    assert [type(m) for m in later_undeclared.messages] == [Unchoke]


async def test_a_service_added_later_is_asked_about_its_types() -> None:
    first = TakesNothing()
    async with manager_and_remote(first) as (manager, _peer, remote):
        events = manager.events()
        await remote.send(Have(1))
        assert await next_message(events) == Have(1)
        late = TakesHaves(consume=Have)
        manager.add_service(late)
        await remote.send(Have(2), Unchoke())
        assert await next_message(events) == Unchoke()  # the late one took Have(2)
        assert manager.services == (first, late)
    assert late.messages == [Have(2)]
    assert first.messages == []


class _ANamedThing(Protocol):
    name: str  # a data member: issubclass() refuses this protocol


@pytest.mark.parametrize(
    "declared", [[Have], (Have, "Piece"), Have, (Have, 3), (Have, _ANamedThing)]
)
async def test_a_malformed_declaration_is_refused_before_anything_changes(declared: Any) -> None:
    class Bad(Undeclared):
        message_types = declared

    with pytest.raises(TypeError, match="message_types"):
        async with open_peer_manager(PeerManagerConfig(services=[Bad()])):
            pass  # pragma: no cover - refused before
    async with open_peer_manager(PeerManagerConfig()) as manager:
        with pytest.raises(TypeError, match="message_types"):
            manager.add_service(Bad())
        assert manager.services == ()


@pytest.mark.parametrize(
    "service", [MetadataExchange, PeerExchange, PieceLayerExchange, HolepunchService]
)
def test_bip_peers_services_declare_what_they_take_and_no_block(service: Any) -> None:
    # Their own tests (through real managers) show the declarations cover what they handle.
    declared = service.message_types
    assert isinstance(declared, tuple)
    assert declared
    assert not any(issubclass(kind, declared) for kind in (Piece, Request))


def test_each_bip_peer_service_declares_exactly_the_messages_it_handles() -> None:
    """Pinned: a narrowed declaration drops messages silently (a reject learnt only by a
    time-out), which the services' own tests do not all catch (review of the dispatch mend)."""
    from bip_peer._connection import UnknownExtended
    from bip_peer._extended import (
        HolepunchMessage,
        MetadataData,
        MetadataReject,
        MetadataRequest,
        PexMessage,
    )
    from bip_peer._messages import Hashes, HashReject, HashRequest

    assert MetadataExchange.message_types == (
        ExtendedHandshake,
        MetadataRequest,
        MetadataData,
        MetadataReject,
    )
    assert PeerExchange.message_types == (PexMessage,)
    assert PieceLayerExchange.message_types == (HashRequest, Hashes, HashReject)
    assert HolepunchService.message_types == (UnknownExtended, HolepunchMessage)
