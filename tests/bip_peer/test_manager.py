"""The trio PeerManager: in-memory streams, a virtual clock, and a remote peer driven by hand.

The remote side of each connection is a :class:`PeerConnection` (or raw bytes, for garbage)
over the other end of a ``trio.testing`` stream pair.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from ipaddress import IPv4Address
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_peer._connection import PeerConnection
from bip_peer._errors import LocalProtocolError, RemoteProtocolError
from bip_peer._extended import ExtendedHandshake
from bip_peer._manager import (
    REASON_CLOSED,
    REASON_IDLE,
    REASON_INTERNAL,
    REASON_PROTOCOL,
    REASON_SEND_TIMEOUT,
    REASON_TRANSPORT,
    ManagerEvent,
    MessageReceived,
    Peer,
    PeerAdded,
    PeerClosedError,
    PeerManager,
    PeerManagerConfig,
    PeerManagerFullError,
    PeerRemoved,
    open_peer_manager,
)
from bip_peer._messages import (
    NEED_DATA,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    KeepAlive,
    Piece,
    Request,
    Unchoke,
)

TORRENT = InfoHash(v1=b"\x11" * 20)
NUM_PIECES = 8
BOTH = Extensions.EXTENSION_PROTOCOL | Extensions.FAST
REMOTE_ID = PeerId(b"-XX0000-remoteremote")
BLOCK = bytes(range(256)) * 64  # 16 KiB


def address(n: int = 1) -> PeerAddress:
    return PeerAddress(IPv4Address(f"10.0.0.{n}"), 6881)


def handshake(
    stream: trio.abc.Stream,
    *,
    ours: Extensions = BOTH,
    theirs: Extensions = BOTH,
    trailing: bytes = b"",
    n: int = 1,
) -> CompletedHandshake:
    return CompletedHandshake(
        stream=stream,
        trailing=trailing,
        peer_id=REMOTE_ID,
        extensions=theirs,
        our_extensions=ours,
        info_hash=TORRENT,
        swarm_id=TORRENT.swarm_ids()[0],
        address=address(n),
        direction="outbound",
    )


class Remote:
    """The far end of a connection: a PeerConnection over a raw stream."""

    def __init__(
        self, stream: trio.abc.Stream, *, ours: Extensions = BOTH, theirs: Extensions = BOTH
    ) -> None:
        self.stream = stream
        self.connection = PeerConnection(
            num_pieces=NUM_PIECES, info_hash=TORRENT, our_extensions=ours, their_extensions=theirs
        )

    async def send(self, *messages: Any) -> None:
        await self.stream.send_all(b"".join(self.connection.send(m) for m in messages))

    async def receive(self) -> Any:
        """The next message from the manager (keep-alives included)."""
        while True:
            event = self.connection.next_event()
            if event is not NEED_DATA:
                return event
            data = await self.stream.receive_some()
            if not data:
                raise EOFError
            self.connection.receive_data(data)

    async def receive_closed(self) -> bool:
        try:
            while await self.stream.receive_some():
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        return True


@asynccontextmanager
async def manager_and_remote(
    config: PeerManagerConfig | None = None,
    *,
    ours: Extensions = BOTH,
    theirs: Extensions = BOTH,
    trailing: bytes = b"",
) -> AsyncIterator[tuple[PeerManager, Peer, Remote]]:
    local, far = trio.testing.memory_stream_pair()
    async with open_peer_manager(config) as manager:
        peer = manager.add_peer(
            handshake(local, ours=ours, theirs=theirs, trailing=trailing), num_pieces=NUM_PIECES
        )
        yield manager, peer, Remote(far, ours=theirs, theirs=ours)


async def next_event(events: AsyncIterator[ManagerEvent]) -> ManagerEvent:
    # Virtual time jumps over the heartbeats; real time is bounded for a hung test.
    virtual = isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
    with trio.fail_after(1000 if virtual else 10):
        return await events.__anext__()


async def next_message(events: AsyncIterator[ManagerEvent]) -> object:
    event = await next_event(events)
    assert isinstance(event, MessageReceived), event
    return event.message


# -- the connection starts --------------------------------------------------------------------


async def test_extended_handshake_first_then_messages_both_ways() -> None:
    async with manager_and_remote(PeerManagerConfig(listen_port=6881)) as (manager, peer, remote):
        events = manager.events()
        assert await next_event(events) == PeerAdded(peer)
        first = await remote.receive()
        assert isinstance(first, ExtendedHandshake)
        assert first.p == 6881
        assert first.reqq == peer.connection.limits.max_peer_requests
        assert first.yourip == address().host.packed
        assert first.v is not None
        await remote.send(ExtendedHandshake(m={"ut_pex": 7}), HaveAll(), Unchoke())
        assert isinstance(await next_message(events), ExtendedHandshake)
        assert peer.extended_handshake is not None
        assert peer.extended_handshake.m["ut_pex"] == 7
        assert await next_message(events) == HaveAll()
        assert await next_message(events) == Unchoke()
        assert peer.connection.peer_pieces.is_seed
        await manager.send(peer, Interested())
        assert await remote.receive() == Interested()
        assert manager.send_nowait(peer, Request(0, 0, 16384))
        assert await remote.receive() == Request(0, 0, 16384)


async def test_no_extended_handshake_without_both_bits() -> None:
    async with manager_and_remote(theirs=Extensions.FAST) as (manager, peer, remote):
        await manager.send(peer, Interested())
        assert await remote.receive() == Interested()
        assert peer.extensions == Extensions.FAST


async def test_trailing_bytes_are_read_first() -> None:
    remote_state = PeerConnection(
        num_pieces=NUM_PIECES, info_hash=TORRENT, our_extensions=BOTH, their_extensions=BOTH
    )
    trailing = remote_state.send(HaveAll())
    async with manager_and_remote(trailing=trailing) as (manager, _peer, remote):
        remote.connection = remote_state
        events = manager.events()
        assert isinstance(await next_event(events), PeerAdded)
        assert await next_message(events) == HaveAll()
        stats = manager.statistics()
        assert stats.bytes_received == len(trailing)


async def test_piece_blocks_arrive_whole_and_in_order() -> None:
    async with manager_and_remote() as (manager, peer, remote):
        events = manager.events()
        await next_event(events)
        await remote.receive()  # our extended handshake
        await remote.send(HaveAll(), Unchoke())
        await next_message(events)
        await next_message(events)
        for begin in (0, 16384):
            await manager.send(peer, Request(1, begin, 16384))
        assert await remote.receive() == Request(1, 0, 16384)
        assert await remote.receive() == Request(1, 16384, 16384)
        await remote.send(Piece(1, 0, BLOCK), Piece(1, 16384, BLOCK[::-1]))
        first = await next_message(events)
        second = await next_message(events)
        assert isinstance(first, Piece)
        assert isinstance(second, Piece)
        assert (first.index, first.begin, bytes(first.block)) == (1, 0, BLOCK)
        # Handed out uncopied: a view of what the reader received.
        assert isinstance(first.block, memoryview)
        assert (second.begin, bytes(second.block)) == (16384, BLOCK[::-1])
        assert not peer.connection.our_requests


# -- heartbeats and timeouts (virtual clock) --------------------------------------------------


async def test_keepalive_after_a_minute_without_sending(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # libtorrent's interval (half its 120 s peer_timeout): two minutes would race that timeout.
    config = PeerManagerConfig(idle_timeout=10_000)
    async with manager_and_remote(config) as (manager, peer, remote):
        await remote.receive()  # extended handshake
        start = trio.current_time()
        assert await remote.receive() == KeepAlive()
        waited = trio.current_time() - start
        assert 60 <= waited <= 62
        await manager.send(peer, Interested())
        assert await remote.receive() == Interested()
        sent = trio.current_time()
        assert await remote.receive() == KeepAlive()
        assert 60 <= trio.current_time() - sent <= 62


async def test_a_quiet_manager_outlives_libtorrents_inactivity_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # libtorrent (peer_timeout 120) drops a peer, on its 1 s tick, once more than 120 s passed
    # since it received a byte; it sends keep-alives every 60 s itself. We send one message,
    # then nothing: our keep-alives must arrive before its check ever fires.
    async with manager_and_remote(PeerManagerConfig()) as (manager, peer, remote):
        last_received = trio.current_time()

        async def read() -> None:
            nonlocal last_received
            while await remote.stream.receive_some(65536):
                last_received = trio.current_time()

        async def keep_alive() -> None:
            while True:
                await trio.sleep(60)
                await remote.stream.send_all(b"\0\0\0\0")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            nursery.start_soon(keep_alive)
            await trio.sleep(0.3)
            await manager.send(peer, Interested())
            await trio.sleep(0.2)  # libtorrent's ticks at t = 0.5 + n
            for _ in range(400):
                await trio.sleep(1)
                assert trio.current_time() - last_received <= 120, "libtorrent drops us"
            nursery.cancel_scope.cancel()


async def test_idle_peer_is_dropped(autojump_clock: trio.testing.MockClock) -> None:
    async with manager_and_remote() as (manager, peer, _remote):
        events = manager.events()
        await next_event(events)
        start = trio.current_time()
        removed = await next_event(events)
        assert removed == PeerRemoved(peer, REASON_IDLE, None)
        assert 180 <= trio.current_time() - start <= 182
        assert peer not in manager.peers
        assert manager.statistics().removed_reasons == {REASON_IDLE: 1}


async def test_keepalives_keep_a_peer_alive(autojump_clock: trio.testing.MockClock) -> None:
    async with manager_and_remote(PeerManagerConfig(idle_timeout=60)) as (manager, peer, remote):
        for _ in range(10):
            await trio.sleep(50)
            await remote.stream.send_all(b"\0\0\0\0")
        await trio.testing.wait_all_tasks_blocked()
        assert peer in manager.peers
        stats = manager.statistics().peers[peer]
        assert stats.messages_received == 10
        assert stats.bytes_received == 40
        # Keep-alives are counted but not surfaced as events.
        events = manager.events()
        assert isinstance(await next_event(events), PeerAdded)
        with trio.move_on_after(1):
            await next_event(events)
            pytest.fail("a keep-alive became an event")


async def test_a_peer_that_stops_reading_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    local, far = trio.testing.lockstep_stream_pair()  # nothing is written unless far reads
    async with open_peer_manager(PeerManagerConfig(idle_timeout=100)) as manager:
        peer = manager.add_peer(handshake(local, theirs=Extensions.FAST), num_pieces=NUM_PIECES)
        events = manager.events()
        await next_event(events)
        await manager.send(peer, Interested())
        start = trio.current_time()
        async with trio.open_nursery() as nursery:

            async def keep_alive() -> None:
                while True:  # the peer talks, but never reads
                    await trio.sleep(30)
                    await far.send_all(b"\0\0\0\0")

            nursery.start_soon(keep_alive)
            removed = await next_event(events)
            nursery.cancel_scope.cancel()
        assert removed == PeerRemoved(peer, REASON_SEND_TIMEOUT, None)
        assert 100 <= trio.current_time() - start <= 102


async def test_a_slow_consumer_does_not_make_peers_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = PeerManagerConfig(event_buffer=1, idle_timeout=60)
    async with manager_and_remote(config) as (manager, peer, remote):
        await remote.send(Have(1), Have(2), Have(3))
        await trio.sleep(300)  # the reader holds Have(1) all along: the peer is not idle
        assert peer in manager.peers
        events = manager.events()
        assert isinstance(await next_event(events), PeerAdded)
        assert [await next_message(events) for _ in range(3)] == [Have(1), Have(2), Have(3)]
        await trio.sleep(61)  # now it is
        assert await next_event(events) == PeerRemoved(peer, REASON_IDLE, None)


# -- backpressure and capacity ----------------------------------------------------------------


async def test_full_send_queue_blocks_send_and_refuses_send_nowait() -> None:
    local, far = trio.testing.lockstep_stream_pair()  # send_all waits for the reader
    config = PeerManagerConfig(send_queue_size=4)
    async with open_peer_manager(config) as manager:
        peer = manager.add_peer(handshake(local, theirs=Extensions.FAST), num_pieces=NUM_PIECES)
        remote = Remote(far, ours=Extensions.FAST, theirs=BOTH)
        for index in range(4):
            await manager.send(peer, Have(index))
        await trio.testing.wait_all_tasks_blocked()
        # The writer holds what it took (blocked in send_all); refill the queue to the brim.
        while manager.send_nowait(peer, Have(7)):
            pass
        assert manager.statistics().peers[peer].queued == 4
        blocked = trio.Event()

        async def sender() -> None:
            await manager.send(peer, Have(6))
            blocked.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            assert not blocked.is_set()
            received = [await remote.receive() for _ in range(4)]
            assert received == [Have(0), Have(1), Have(2), Have(3)]
            with trio.fail_after(5):
                await blocked.wait()
        seen: list[object] = []
        while len(seen) < 5:
            seen.append(await remote.receive())
        assert seen[-1] == Have(6)


async def test_capacity() -> None:
    streams = [trio.testing.memory_stream_pair() for _ in range(3)]
    async with open_peer_manager(PeerManagerConfig(max_peers=2)) as manager:
        first = manager.add_peer(handshake(streams[0][0], n=1))
        manager.add_peer(handshake(streams[1][0], n=2))
        with pytest.raises(PeerManagerFullError):
            manager.add_peer(handshake(streams[2][0], n=3))
        assert manager.statistics().rejected_full == 1
        manager.remove_peer(first, "making room")
        events = manager.events()
        while not isinstance(event := await next_event(events), PeerRemoved):
            pass
        assert event == PeerRemoved(first, "making room", None)
        manager.add_peer(handshake(streams[2][0], n=3))
        assert len(manager.peers) == 2


async def test_slow_event_consumer_stops_the_readers() -> None:
    async with manager_and_remote(PeerManagerConfig(event_buffer=2)) as (manager, peer, remote):
        for index in range(6):
            await remote.send(Have(index))
        await trio.testing.wait_all_tasks_blocked()
        # PeerAdded and one have are buffered; the reader waits with the next one.
        assert manager.statistics().peers[peer].messages_received <= 4
        events = manager.events()
        assert isinstance(await next_event(events), PeerAdded)
        assert [await next_message(events) for _ in range(6)] == [Have(i) for i in range(6)]


# -- misbehaving peers cost their connection only ---------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xff\xff\xff\x07",  # a 4 GiB message
        b"\x00\x00\x00\x02\x00\x00",  # a choke with a payload
        b"\x00\x00\x00\x03\x05\x00\x00",  # a bitfield of the wrong length
        b"\x00\x00\x00\x05\x04\x00\x00\x00\x63",  # a have beyond the piece count
    ],
)
async def test_a_malicious_peer_costs_only_its_connection(garbage: bytes) -> None:
    good_local, good_far = trio.testing.memory_stream_pair()
    bad_local, bad_far = trio.testing.memory_stream_pair()
    async with open_peer_manager() as manager:
        good = manager.add_peer(handshake(good_local, n=1), num_pieces=NUM_PIECES)
        bad = manager.add_peer(handshake(bad_local, n=2), num_pieces=NUM_PIECES)
        await bad_far.send_all(garbage)
        events = manager.events()
        removed = None
        while removed is None:
            event = await next_event(events)
            if isinstance(event, PeerRemoved):
                removed = event
        assert removed.peer is bad
        assert removed.reason == REASON_PROTOCOL
        assert isinstance(removed.error, RemoteProtocolError)
        assert await Remote(bad_far).receive_closed()
        remote = Remote(good_far)
        await remote.receive()  # extended handshake
        await remote.send(Have(2))
        assert await next_message(events) == Have(2)
        assert manager.peers == {good}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.sampled_from([m.encode() for m in (Have(1), HaveAll(), Unchoke(), KeepAlive())]),
        ),
        max_size=8,
    )
)
def test_any_bytes_cost_at_most_that_connection(chunks: list[bytes]) -> None:
    """Whatever a peer sends, the manager survives and only that peer can be removed."""

    async def main() -> None:
        bad_local, bad_far = trio.testing.memory_stream_pair()
        good_local, good_far = trio.testing.memory_stream_pair()
        async with open_peer_manager() as manager:
            bad = manager.add_peer(handshake(bad_local, n=1), num_pieces=NUM_PIECES)
            good = manager.add_peer(handshake(good_local, n=2), num_pieces=NUM_PIECES)
            try:
                for chunk in chunks:
                    await bad_far.send_all(chunk)
            except trio.BrokenResourceError:
                pass  # the manager hung up already
            await bad_far.aclose()
            events = manager.events()
            removed = None
            while removed is None:
                event = await next_event(events)
                if isinstance(event, PeerRemoved):
                    removed = event
            assert removed.peer is bad
            assert removed.reason in (REASON_PROTOCOL, REASON_CLOSED, REASON_TRANSPORT)
            if removed.reason == REASON_PROTOCOL:
                assert isinstance(removed.error, RemoteProtocolError)
            remote = Remote(good_far)
            await remote.receive()  # extended handshake
            await remote.send(Have(5))
            while not isinstance(event := await next_event(events), MessageReceived):
                pass
            assert event == MessageReceived(good, Have(5))

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_peer_closing_and_transport_errors() -> None:
    first_local, first_far = trio.testing.memory_stream_pair()
    second_local, second_far = trio.testing.memory_stream_pair()
    async with open_peer_manager() as manager:
        first = manager.add_peer(handshake(first_local, n=1))
        second = manager.add_peer(handshake(second_local, n=2))
        events = manager.events()
        await first_far.aclose()
        removed: dict[Peer, PeerRemoved] = {}
        while first not in removed:
            event = await next_event(events)
            if isinstance(event, PeerRemoved):
                removed[event.peer] = event
        assert removed[first].reason in (REASON_CLOSED, REASON_TRANSPORT)
        # A stream that fails when written to.
        second_far.receive_stream.close_hook = None
        await second_far.receive_stream.aclose()
        await manager.send(second, Interested())
        while second not in removed:
            event = await next_event(events)
            if isinstance(event, PeerRemoved):
                removed[event.peer] = event
        assert removed[second].reason == REASON_TRANSPORT
        assert isinstance(
            removed[second].error, trio.BrokenResourceError | trio.ClosedResourceError
        )


async def test_closed_by_peer_reason() -> None:
    async with manager_and_remote() as (manager, _peer, remote):
        await remote.receive()
        await remote.stream.aclose()
        events = manager.events()
        await next_event(events)
        removed = await next_event(events)
        assert isinstance(removed, PeerRemoved)
        assert removed.reason in (REASON_CLOSED, REASON_TRANSPORT)


async def test_remove_peer_and_sending_to_a_removed_peer() -> None:
    async with manager_and_remote() as (manager, peer, remote):
        events = manager.events()
        await next_event(events)
        manager.remove_peer(peer, "banned")
        manager.remove_peer(peer, "twice")  # the first reason wins
        assert await next_event(events) == PeerRemoved(peer, "banned", None)
        assert await remote.receive_closed()
        with pytest.raises(PeerClosedError):
            await manager.send(peer, Interested())
        assert manager.send_nowait(peer, Interested()) is False
        manager.remove_peer(peer, "again")  # nothing happens
        assert manager.statistics().removed_reasons == {"banned": 1}


async def test_local_protocol_error_reaches_the_caller_and_queues_nothing() -> None:
    async with manager_and_remote() as (manager, peer, remote):
        with pytest.raises(LocalProtocolError):
            await manager.send(peer, Request(0, 0, 16384))  # choked
        with pytest.raises(LocalProtocolError):
            manager.send_nowait(peer, Request(0, 0, 16384))
        await manager.send(peer, Interested())
        await remote.receive()  # extended handshake
        assert await remote.receive() == Interested()
        assert peer in manager.peers


# -- statistics -------------------------------------------------------------------------------


async def test_statistics_count_both_ways(autojump_clock: trio.testing.MockClock) -> None:
    async with manager_and_remote(theirs=Extensions.FAST) as (manager, peer, remote):
        events = manager.events()
        await next_event(events)
        await remote.send(HaveAll(), Unchoke())
        await next_message(events)
        await next_message(events)
        await manager.send(peer, Interested())
        await manager.send(peer, Request(0, 0, 16384))
        await remote.receive()
        await remote.receive()
        await remote.send(Piece(0, 0, BLOCK))
        await next_message(events)
        await trio.sleep(1)
        stats = manager.statistics()
        mine = stats.peers[peer]
        assert mine.messages_received == 3
        assert mine.bytes_received == 1 + 4 + 1 + 4 + 13 + 16384
        assert mine.messages_sent == 2
        assert mine.bytes_sent == 5 + 17
        assert mine.receive_rate > 0
        assert mine.send_rate > 0
        assert mine.queued == 0
        assert mine.connected_for >= 1
        assert mine.idle_for >= 1
        assert stats.bytes_received == mine.bytes_received
        assert stats.messages_sent == mine.messages_sent
        assert stats.peers_added == 1
        assert stats.peers_removed == 0
        await trio.sleep(30)
        assert manager.statistics().peers[peer].receive_rate == 0.0
        manager.remove_peer(peer, "done")
        await next_event(events)
        stats = manager.statistics()
        assert stats.peers == {}
        assert stats.bytes_received == mine.bytes_received  # kept after the removal
        assert stats.peers_removed == 1


# -- services ---------------------------------------------------------------------------------


class RecordingService:
    def __init__(self, *, consume: type | None = None, fail_on: type | None = None) -> None:
        self.consume = consume
        self.fail_on = fail_on
        self.added: list[Peer] = []
        self.removed: list[Peer] = []
        self.messages: list[object] = []
        self.ticks: list[float] = []

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        return {"m": {"ut_metadata": 2}, "metadata_size": 1234, "x_custom": 5}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        self.added.append(peer)

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        self.messages.append(message)
        if self.fail_on is not None and isinstance(message, self.fail_on):
            raise RuntimeError("service bug")
        return self.consume is not None and isinstance(message, self.consume)

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        self.removed.append(peer)

    def tick(self, manager: PeerManager, now: float) -> None:
        self.ticks.append(now)


async def test_services_hooks(autojump_clock: trio.testing.MockClock) -> None:
    service = RecordingService(consume=Have)
    config = PeerManagerConfig(services=[service])
    async with manager_and_remote(config) as (manager, peer, remote):
        assert service.added == [peer]
        ours = await remote.receive()
        assert isinstance(ours, ExtendedHandshake)
        assert ours.m["ut_metadata"] == 2
        assert ours.metadata_size == 1234
        assert ours.extra[b"x_custom"] == 5
        events = manager.events()
        await next_event(events)
        await remote.send(Have(1), Have(2), Unchoke())
        assert await next_message(events) == Unchoke()  # the haves were consumed
        assert service.messages == [Have(1), Have(2), Unchoke()]
        await trio.sleep(10.5)
        assert 9 <= len(service.ticks) <= 11
        manager.remove_peer(peer, "bye")
        await next_event(events)
        assert service.removed == [peer]


async def test_a_failing_service_hook_removes_that_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = PeerManagerConfig(services=[RecordingService(fail_on=Have)])
    async with manager_and_remote(config) as (manager, _peer, remote):
        events = manager.events()
        await next_event(events)
        await remote.send(Have(1))
        removed = await next_event(events)
        assert isinstance(removed, PeerRemoved)
        assert removed.reason == REASON_INTERNAL
        assert isinstance(removed.error, RuntimeError)


class ExplodingService(RecordingService):
    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        if self.where == "handshake_fields":
            raise RuntimeError("no fields")
        return {}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        if self.where == "peer_added":
            raise RuntimeError("no peers")


async def test_a_failing_handshake_fields_leaves_the_stream_to_the_caller() -> None:
    local, _far = trio.testing.memory_stream_pair()
    config = PeerManagerConfig(services=[ExplodingService("handshake_fields")])
    async with open_peer_manager(config) as manager:
        with pytest.raises(RuntimeError, match="no fields"):
            manager.add_peer(handshake(local))
        assert not manager.peers
        assert manager.statistics().peers_added == 0


async def test_a_failing_peer_added_removes_the_peer() -> None:
    local, far = trio.testing.memory_stream_pair()
    config = PeerManagerConfig(services=[ExplodingService("peer_added")])
    async with open_peer_manager(config) as manager:
        with pytest.raises(RuntimeError, match="no peers"):
            manager.add_peer(handshake(local))
        assert await Remote(far).receive_closed()
        await trio.testing.wait_all_tasks_blocked()
        assert not manager.peers
        assert manager.statistics().removed_reasons == {REASON_INTERNAL: 1}


async def test_a_peer_error_from_a_service_is_a_protocol_error() -> None:
    class Strict(RecordingService):
        def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
            raise RemoteProtocolError("bad metadata")

    async with manager_and_remote(PeerManagerConfig(services=[Strict()])) as (manager, _, remote):
        events = manager.events()
        await next_event(events)
        await remote.send(Have(1))
        removed = await next_event(events)
        assert isinstance(removed, PeerRemoved)
        assert removed.reason == REASON_PROTOCOL
        assert isinstance(removed.error, RemoteProtocolError)


async def test_add_service_later_sees_connected_peers() -> None:
    async with manager_and_remote() as (manager, peer, _remote):
        service = RecordingService()
        manager.add_service(service)
        assert service.added == [peer]
        assert manager.services == (service,)


# -- lifetime ---------------------------------------------------------------------------------


async def test_leaving_the_manager_closes_every_peer_and_ends_events() -> None:
    local, far = trio.testing.memory_stream_pair()
    async with open_peer_manager() as manager:
        manager.add_peer(handshake(local))
        events = manager.events()
        await next_event(events)
    assert await Remote(far).receive_closed()
    with pytest.raises(StopAsyncIteration):
        await events.__anext__()
    with pytest.raises(trio.ClosedResourceError):
        manager.add_peer(handshake(trio.testing.memory_stream_pair()[0]))


async def test_two_managers_talk_to_each_other() -> None:
    left_stream, right_stream = trio.testing.memory_stream_pair()
    async with open_peer_manager() as left, open_peer_manager() as right:
        a = left.add_peer(handshake(left_stream, n=1), num_pieces=NUM_PIECES)
        b = right.add_peer(handshake(right_stream, n=2), num_pieces=NUM_PIECES)
        await left.send(a, HaveNone())
        await right.send(b, HaveAll())
        await right.send(b, Unchoke())
        right_events = right.events()
        left_events = left.events()
        assert isinstance(await next_event(left_events), PeerAdded)
        assert isinstance(await next_message(left_events), ExtendedHandshake)
        assert await next_message(left_events) == HaveAll()
        assert await next_message(left_events) == Unchoke()
        await left.send(a, Interested())
        await left.send(a, Request(5, 0, 16384))
        assert isinstance(await next_event(right_events), PeerAdded)
        assert isinstance(await next_message(right_events), ExtendedHandshake)
        for _ in range(2):
            await next_message(right_events)
        assert await next_message(right_events) == Request(5, 0, 16384)
        await right.send(b, Piece(5, 0, BLOCK))
        piece = await next_message(left_events)
        assert isinstance(piece, Piece)
        assert bytes(piece.block) == BLOCK


async def test_two_managers_over_loopback_tcp_move_every_block_intact() -> None:
    """Real sockets: partial writes, large reads, blocks straddling reads."""
    num_pieces = 4
    blocks = {
        (index, begin): bytes([index, begin // 16384]) * 8192
        for index in range(num_pieces)
        for begin in range(0, 16 * 16384, 16384)
    }
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        accepted: list[trio.SocketStream] = []

        async def accept() -> None:
            accepted.append(await listeners[0].accept())

        nursery.start_soon(accept)
        dialled = await trio.open_tcp_stream("127.0.0.1", port)
    config = PeerManagerConfig(receive_size=20_000)  # reads that cut through blocks
    with trio.fail_after(10):
        async with open_peer_manager(config) as seeder, open_peer_manager(config) as leecher:
            s = seeder.add_peer(handshake(accepted[0], n=1), num_pieces=num_pieces)
            p = leecher.add_peer(handshake(dialled, n=2), num_pieces=num_pieces)
            await seeder.send(s, HaveAll())
            await seeder.send(s, Unchoke())
            await leecher.send(p, Interested())

            async def serve() -> None:
                async for event in seeder.events():
                    if isinstance(event, MessageReceived) and isinstance(event.message, Request):
                        request = event.message
                        block = blocks[(request.index, request.begin)]
                        await seeder.send(s, Piece(request.index, request.begin, block))

            received: dict[tuple[int, int], bytes] = {}
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                events = leecher.events()
                while len(received) < len(blocks):
                    event = await next_event(events)
                    if not isinstance(event, MessageReceived):
                        continue
                    message = event.message
                    if isinstance(message, Unchoke):
                        for index, begin in blocks:
                            await leecher.send(p, Request(index, begin, 16384))
                    elif isinstance(message, Piece):
                        received[(message.index, message.begin)] = bytes(message.block)
                nursery.cancel_scope.cancel()
            assert received == blocks
            stats = leecher.statistics().peers[p]
            assert stats.bytes_received >= 64 * (16384 + 13)
            assert stats.messages_sent == 2 + len(blocks)  # extended handshake, interested
    for listener in listeners:
        await listener.aclose()


def test_config_validation() -> None:
    for bad in (
        {"max_peers": 0},
        {"send_queue_size": 0},
        {"receive_size": True},
        {"event_buffer": -1},
        {"keepalive_interval": 0},
        {"idle_timeout": float("nan")},
        {"tick_interval": float("inf")},
        {"listen_port": 70000},
    ):
        with pytest.raises(ValueError, match="must"):
            PeerManagerConfig(**bad)
