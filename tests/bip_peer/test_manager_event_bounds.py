"""What a peer can make the manager and a magnet's connection hold, and the promise that
every peer :meth:`PeerManager.add_peer` returns is announced and later removed.

- :class:`PeerAdded` is queued by ``add_peer`` itself: a peer removed while the event queue
  was full (remove_peer, a transport error, an idle tick) still gets its PeerAdded and its
  PeerRemoved, and a removed peer holds its place in ``max_peers`` until its PeerRemoved is
  queued (which bounds the queue past ``event_buffer``).
- The event queue is bounded in payload bytes too (``event_buffer_bytes``): unknown
  messages, unknown extension messages, bitfields and hashes replies carry up to
  ``max_message_length`` each, and 256 of them from one peer were 256 MiB held.
- Before the piece count is known, haves and donthaves are kept sparsely, bounded in count:
  one 9-byte have for piece 8,388,599 no longer allocates a 1 MiB bitfield.

In-memory streams, virtual clock."""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import AsyncIterator
from ipaddress import IPv4Address

import pytest
import trio
import trio.testing

from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_peer._connection import PeerConnection, UnknownExtended
from bip_peer._errors import RemoteProtocolError
from bip_peer._extended import DontHave, ExtendedHandshake
from bip_peer._manager import (
    DEFAULT_EVENT_BUFFER_BYTES,
    ManagerEvent,
    MessageReceived,
    Peer,
    PeerAdded,
    PeerManager,
    PeerManagerConfig,
    PeerManagerFullError,
    PeerRemoved,
    open_peer_manager,
)
from bip_peer._messages import (
    NEED_DATA,
    Bitfield,
    Extended,
    Have,
    HaveAll,
    HaveNone,
    Message,
    UnknownMessage,
)

TORRENT = InfoHash(v1=b"\x33" * 20)
FAST = Extensions.FAST
EXT = Extensions.FAST | Extensions.EXTENSION_PROTOCOL
DONTHAVE_ID = 7
_KiB = 1024


def handshake(stream: trio.abc.Stream, n: int, extensions: Extensions = FAST) -> CompletedHandshake:
    return CompletedHandshake(
        stream=stream,
        trailing=b"",
        peer_id=PeerId(b"-XX0000-%012d" % n),
        extensions=extensions,
        our_extensions=extensions,
        info_hash=TORRENT,
        swarm_id=TORRENT.swarm_ids()[0],
        address=PeerAddress(IPv4Address(f"203.0.113.{n}"), 6881),
        direction="inbound",
    )


def add(
    manager: PeerManager, n: int, extensions: Extensions = FAST, num_pieces: int | None = 8
) -> tuple[Peer, trio.abc.Stream]:
    local, far = trio.testing.memory_stream_pair()
    return manager.add_peer(handshake(local, n, extensions), num_pieces=num_pieces), far


async def drain(events: AsyncIterator[ManagerEvent], seconds: float = 5) -> list[ManagerEvent]:
    """Every event until none comes for ``seconds`` (virtual)."""
    seen: list[ManagerEvent] = []
    while True:
        with trio.move_on_after(seconds):
            seen.append(await anext(events))
            continue
        return seen


def about(peer: Peer, events: list[ManagerEvent]) -> list[str]:
    return [type(e).__name__ for e in events if getattr(e, "peer", None) is peer]


# -- every peer add_peer returns is announced, and removed -----------------------------------


@pytest.mark.parametrize("how", ["remove_peer", "transport error"])
async def test_a_peer_removed_while_the_queue_is_full_is_announced_and_removed(
    autojump_clock: trio.testing.MockClock, how: str
) -> None:
    async with open_peer_manager(PeerManagerConfig(event_buffer=4)) as manager:
        busy, busy_far = add(manager, 1)
        # The busy peer's events fill the queue: the consumer is elsewhere.
        await busy_far.send_all(HaveNone().encode() + b"".join(Have(i).encode() for i in range(8)))
        await trio.sleep(1)
        late, late_far = add(manager, 2)  # the owner holds this handle now...
        await trio.sleep(1)
        if how == "remove_peer":
            manager.remove_peer(late, "duplicate")  # ...and drops it (bip's duplicate rule)
        else:
            await late_far.aclose()  # ...and the peer goes
        await trio.sleep(1)
        assert not manager.is_connected(late)
        seen = await drain(aiter(manager.events()))
    assert about(late, seen) == ["PeerAdded", "PeerRemoved"]
    assert about(busy, seen) == ["PeerAdded"] + ["MessageReceived"] * 9
    removed = next(e for e in seen if isinstance(e, PeerRemoved))
    assert removed.reason == ("duplicate" if how == "remove_peer" else "closed by peer")


async def test_peer_added_comes_before_the_peers_messages_even_when_the_queue_is_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_peer_manager(PeerManagerConfig(event_buffer=2)) as manager:
        _busy, busy_far = add(manager, 1)
        await busy_far.send_all(b"".join(Have(i).encode() for i in range(6)))
        await trio.sleep(1)
        peer, far = add(manager, 2)
        await far.send_all(Have(3).encode() + Have(4).encode())
        await trio.sleep(1)
        seen = await drain(aiter(manager.events()))
    mine = [e for e in seen if getattr(e, "peer", None) is peer]
    assert isinstance(mine[0], PeerAdded)
    assert [e.message for e in mine[1:] if isinstance(e, MessageReceived)] == [Have(3), Have(4)]


async def test_a_removed_peer_holds_its_place_until_its_removal_is_queued(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = PeerManagerConfig(event_buffer=1, max_peers=2)
    async with open_peer_manager(config) as manager:
        events = aiter(manager.events())
        first, _far1 = add(manager, 1)
        second, _far2 = add(manager, 2)
        assert len(manager._events) == 2  # both announced, past event_buffer
        manager.remove_peer(first, "gone")
        manager.remove_peer(second, "gone")
        await trio.testing.wait_all_tasks_blocked()
        assert not manager.peers
        # Their PeerRemoved wait for room: they are leaving, not gone, so no third peer is
        # announced past the queue's bound meanwhile.
        with pytest.raises(PeerManagerFullError, match="0 peers connected and 2 leaving"):
            add(manager, 3)
        assert len(manager._events) <= config.event_buffer + config.max_peers
        seen = [await anext(events) for _ in range(4)]
        assert [type(e).__name__ for e in seen] == ["PeerAdded"] * 2 + ["PeerRemoved"] * 2
        await trio.testing.wait_all_tasks_blocked()
        third, _far3 = add(manager, 3)  # their places are free again
        assert isinstance(await anext(events), PeerAdded)
        assert manager.is_connected(third)


# -- the event queue's byte bound --------------------------------------------------------------


def unknown(size: int) -> bytes:
    """An unknown message (id 99) whose payload is ``size`` bytes."""
    return UnknownMessage(99, bytes(size)).encode()


def unknown_extended(size: int) -> bytes:
    """An extension message under an id we never assigned (42), ``size`` payload bytes."""
    return Extended(42, bytes(size)).encode()


def bitfield(size: int) -> bytes:
    """A bitfield of ``size`` bytes (taken whole before the piece count is known)."""
    return Bitfield(bytes(size)).encode()


@pytest.mark.parametrize("encode", [unknown, unknown_extended, bitfield])
async def test_payload_events_wait_for_the_consumer_past_the_byte_bound(
    autojump_clock: trio.testing.MockClock, encode: object
) -> None:
    assert callable(encode)
    size, budget = 32 * _KiB, 64 * _KiB
    config = PeerManagerConfig(event_buffer_bytes=budget)
    async with open_peer_manager(config) as manager:
        peer, far = add(manager, 1, EXT, num_pieces=None)
        await far.send_all(b"".join(encode(size) for _ in range(10)))
        await trio.sleep(5)
        queued = manager._events
        # Under the bound, one more is taken: 2 of 32 KiB make 64 KiB, the bound.
        assert len(queued) == 1 + 2  # PeerAdded and two messages
        assert queued._bytes == 2 * size
        # A peer whose messages carry nothing still gets through meanwhile.
        other, other_far = add(manager, 2)
        await other_far.send_all(Have(3).encode())
        await trio.sleep(1)
        assert len(queued) == 3 + 2
        seen = await drain(aiter(manager.events()))
        assert queued._bytes == 0
    messages = [e.message for e in seen if isinstance(e, MessageReceived) and e.peer is peer]
    assert len(messages) == 10
    for message in messages:
        payload = message.bits if isinstance(message, Bitfield) else message.payload  # type: ignore[attr-defined]
        assert len(payload) == size
    assert isinstance(messages[0], UnknownMessage | UnknownExtended | Bitfield)
    assert about(other, seen) == ["PeerAdded", "MessageReceived"]


async def test_readers_waiting_for_bytes_all_get_through_when_one_is_removed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Four peers wait for room in bytes; one removed while waiting must not strand the others.
    config = PeerManagerConfig(event_buffer_bytes=16 * _KiB)
    async with open_peer_manager(config) as manager:
        peers = [add(manager, n) for n in range(1, 5)]
        for _peer, far in peers:
            await far.send_all(b"".join(unknown(16 * _KiB) for _ in range(3)))
        await trio.sleep(1)
        manager.remove_peer(peers[1][0], "gone")
        with trio.fail_after(60):
            seen = await drain(aiter(manager.events()), seconds=10)
    for index, (peer, _far) in enumerate(peers):
        kinds = about(peer, seen)
        if index == 1:
            assert kinds[0] == "PeerAdded"
            assert kinds[-1] == "PeerRemoved"
        else:
            assert kinds == ["PeerAdded"] + ["MessageReceived"] * 3


async def test_one_peer_cannot_make_the_queue_hold_more_than_the_byte_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The hunter's probe, scaled down: 1 MiB unknown messages into a consumer busy elsewhere.
    config = PeerManagerConfig(event_buffer_bytes=4 * 1024 * _KiB)
    async with open_peer_manager(config) as manager:
        _peer, far = add(manager, 1)
        message = struct.pack(">IB", 1 << 20, 99) + bytes((1 << 20) - 1)
        async with trio.open_nursery() as nursery:

            async def flood() -> None:
                for _ in range(20):
                    await far.send_all(message)

            nursery.start_soon(flood)
            await trio.sleep(5)
            assert manager._events._bytes <= config.event_buffer_bytes + (1 << 20)
            assert len(manager._events) <= 1 + 5
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "16"])
def test_event_buffer_bytes_is_checked(value: object) -> None:
    with pytest.raises(ValueError, match="event_buffer_bytes must be a positive int"):
        PeerManagerConfig(event_buffer_bytes=value)  # type: ignore[arg-type]


def test_event_buffer_bytes_default() -> None:
    assert PeerManagerConfig().event_buffer_bytes == DEFAULT_EVENT_BUFFER_BYTES == 16 << 20


# -- haves and donthaves before the piece count ------------------------------------------------


def magnet() -> PeerConnection:
    conn = PeerConnection(
        num_pieces=None, info_hash=InfoHash(v1=bytes(20)), our_extensions=EXT, their_extensions=EXT
    )
    conn.send(ExtendedHandshake(m={"lt_donthave": DONTHAVE_ID}))
    return conn


def deliver(conn: PeerConnection, *messages: Message) -> None:
    conn.receive_data(b"".join(message.encode() for message in messages))
    while conn.next_event() is not NEED_DATA:
        pass


def donthave(index: int) -> Extended:
    return Extended(DONTHAVE_ID, DontHave(index).encode_payload())


LAST_INDEX = 8 * ((1 << 20) - 1) - 1  # the last piece a 1 MiB bitfield message can hold


def test_a_have_for_a_far_piece_costs_little_before_the_piece_count() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        conns = [magnet() for _ in range(20)]
        base = tracemalloc.get_traced_memory()[0] - before
        for conn in conns:
            deliver(conn, Have(LAST_INDEX), donthave(LAST_INDEX - 1))
        held = tracemalloc.get_traced_memory()[0] - before - base
    finally:
        tracemalloc.stop()
    assert held < 20 * 4 * _KiB  # was 2 MiB per connection (two grown bitfields)
    with pytest.raises(RemoteProtocolError, match=f"announced piece {LAST_INDEX} of"):
        conns[0].num_pieces = 1000


def test_past_the_bound_haves_for_other_pieces_are_ignored() -> None:
    conn = magnet()
    deliver(conn, *(Have(i) for i in range(1100)))  # 1024 kept, the rest ignored
    deliver(conn, donthave(5), donthave(2000))  # a piece kept is updated; 2000 is ignored
    conn.num_pieces = 1100
    assert set(conn.peer_pieces) == set(range(1024)) - {5}


def test_pending_changes_stay_bounded_in_count() -> None:
    conn = magnet()
    deliver(conn, *(Have(LAST_INDEX - i) for i in range(1100)))
    assert len(conn._pending_changes) == 1024
    with pytest.raises(RemoteProtocolError, match=f"announced piece {LAST_INDEX - 1023} of"):
        conn.num_pieces = 1000


def test_have_all_and_bitfield_still_settle_with_the_changes_after_them() -> None:
    conn = magnet()
    deliver(conn, HaveAll(), donthave(3), Have(3), donthave(6))
    assert not conn.peer_has_all  # piece 6 taken back
    conn.num_pieces = 10
    assert set(conn.peer_pieces) == set(range(10)) - {6}
    conn = magnet()
    deliver(conn, Have(40), Bitfield(b"\xa0\x00"), Have(9))  # the bitfield forgets Have(40)
    conn.num_pieces = 12
    assert set(conn.peer_pieces) == {0, 2, 9}
    conn = magnet()
    deliver(conn, HaveAll(), donthave(2), HaveAll())
    assert conn.peer_has_all
