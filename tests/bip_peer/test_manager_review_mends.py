"""Mends after the review of the manager's event bounds (e9cf952).

1. A reader that finds the queue past ``event_buffer`` (the PeerAdded events ``add_peer``
   queues whatever it holds) counts no room, instead of a negative room taken for some.
2. :attr:`PeerManager.places_in_use` counts the peers connected and those leaving: what
   ``add_peer`` refuses by.
3. ``replace_peer(old, ...)``: a connection replacing a duplicate takes its place, in
   ``max_peers`` and in ``max_peers_per_host``, instead of being refused while it leaves.
4. Decoded PEX messages and extended handshakes count in the queue's byte bound.
5. A service's ``peer_added`` that raises: no PeerAdded/PeerRemoved pair for a peer the
   caller never got.
6. Random sequences of adds, replacements, removals, closes, messages and reads keep the
   places and the event queue within their bounds, and every peer announced once each way.

In-memory streams, virtual clock."""

from __future__ import annotations

import contextlib
import random
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
import trio
import trio.testing

from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_peer._extended import (
    DEFAULT_MAX_PEX_ENTRIES,
    MAX_CLIENT_VERSION_LENGTH,
    MAX_EXTENSION_NAME_LENGTH,
    MAX_HANDSHAKE_EXTENSION_NAMES,
    MAX_HANDSHAKE_EXTRA_KEYS,
    MAX_HANDSHAKE_EXTRA_VALUE_LENGTH,
    ExtendedHandshake,
    PexMessage,
)
from bip_peer._manager import (
    ManagerEvent,
    MessageReceived,
    Peer,
    PeerManager,
    PeerManagerConfig,
    PeerManagerFullError,
    PeerRemoved,
    _payload_size,
    open_peer_manager,
)
from bip_peer._messages import Extended, Have, HaveNone

TORRENT = InfoHash(v1=b"\x44" * 20)
FAST = Extensions.FAST


def handshake(stream: trio.abc.Stream, n: int, *, host: str | None = None) -> CompletedHandshake:
    return CompletedHandshake(
        stream=stream,
        trailing=b"",
        peer_id=PeerId(b"-XX0000-%012d" % n),
        extensions=FAST,
        our_extensions=FAST,
        info_hash=TORRENT,
        swarm_id=TORRENT.swarm_ids()[0],
        address=PeerAddress(IPv4Address(host or f"203.0.113.{n}"), 6881 + n),
        direction="inbound",
    )


def add(
    manager: PeerManager, n: int, *, host: str | None = None, replacing: Peer | None = None
) -> tuple[Peer, trio.abc.Stream]:
    local, far = trio.testing.memory_stream_pair()
    if replacing is None:
        return manager.add_peer(handshake(local, n, host=host), num_pieces=8), far
    return manager.replace_peer(replacing, handshake(local, n, host=host), num_pieces=8), far


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


# -- 1. no negative room -------------------------------------------------------------------------


async def test_a_reader_finding_the_queue_past_its_bound_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The reviewer's probe: PeerAdded events push the queue past event_buffer; a reader
    # then counted a negative room, true, and appended every message (5007 events queued).
    config = PeerManagerConfig(event_buffer=4, max_peers=10)
    async with open_peer_manager(config) as manager:
        _first, first_far = add(manager, 1)
        await first_far.send_all(b"".join(Have(i).encode() for i in range(3)))
        await trio.sleep(1)
        assert len(manager._events) == 4  # full: its PeerAdded and three haves
        _second, _far2 = add(manager, 2)
        _third, third_far = add(manager, 3)  # announced past the bound: 6 queued
        await third_far.send_all(
            HaveNone().encode() + b"".join(Have(i % 8).encode() for i in range(5000))
        )
        await trio.sleep(5)
        assert len(manager._events) <= config.event_buffer + config.max_peers
        assert manager.places_in_use == 3
        seen = await drain(aiter(manager.events()))
    assert about(_third, seen) == ["PeerAdded"] + ["MessageReceived"] * 5001


# -- 2. the places in use ------------------------------------------------------------------------


async def test_places_in_use_counts_the_peers_leaving(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = PeerManagerConfig(event_buffer=1, max_peers=3)
    async with open_peer_manager(config) as manager:
        events = aiter(manager.events())
        assert manager.places_in_use == 0
        first, _far1 = add(manager, 1)
        second, _far2 = add(manager, 2)
        assert manager.places_in_use == 2
        manager.remove_peer(first, "gone")
        await trio.testing.wait_all_tasks_blocked()
        # Gone from peers, but its PeerRemoved waits for room: it still holds its place.
        assert manager.peers == {second}
        assert manager.places_in_use == 2
        add(manager, 3)
        assert manager.places_in_use == 3
        with pytest.raises(PeerManagerFullError):
            add(manager, 4)
        await drain(events)
        assert manager.places_in_use == 2


# -- 3. a replacing connection takes the leaving peer's place ------------------------------------


@pytest.mark.parametrize("bound", ["max_peers", "max_peers_per_host"])
async def test_a_replacing_peer_takes_the_place_of_the_one_it_replaces(
    autojump_clock: trio.testing.MockClock, bound: str
) -> None:
    options: dict[str, Any] = (
        {"max_peers": 2} if bound == "max_peers" else {"max_peers_per_host": 1}
    )
    async with open_peer_manager(PeerManagerConfig(**options)) as manager:
        events = aiter(manager.events())
        add(manager, 1)
        old, _far = add(manager, 2, host="198.51.100.7")
        manager.remove_peer(old, "duplicate")
        # Without replacing, refused: the old one holds its place until it has left.
        with pytest.raises(PeerManagerFullError):
            add(manager, 3, host="198.51.100.7")
        new = manager.replace_peer(
            old,
            handshake(trio.testing.memory_stream_pair()[0], 3, host="198.51.100.7"),
            reason="duplicate",
        )
        assert manager.is_connected(new)
        assert manager.places_in_use == 2
        # Its place is given once: no second replacement of the same peer.
        with pytest.raises(PeerManagerFullError):
            add(manager, 4, host="198.51.100.7", replacing=old)
        seen = await drain(events)
        assert about(old, seen) == ["PeerAdded", "PeerRemoved"]
        assert about(new, seen) == ["PeerAdded"]
        assert manager.places_in_use == 2
        # The old one left without freeing the place it gave: still full.
        with pytest.raises(PeerManagerFullError):
            add(manager, 5, host="198.51.100.7")


async def test_replacing_removes_the_old_peer_and_a_chain_stays_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A consumer that reads nothing: each replacement announces a PeerAdded past the bound,
    # so a chain of them (a hostile peer id winning every tie-break) must stop.
    config = PeerManagerConfig(event_buffer=2, max_peers=2)
    async with open_peer_manager(config) as manager:
        peer, _far = add(manager, 1)
        add(manager, 2)
        streams = []
        for n in range(3, 50):
            try:
                peer, far = add(manager, n, replacing=peer)  # removes the one it replaces
            except PeerManagerFullError:
                break
            streams.append(far)
            await trio.testing.wait_all_tasks_blocked()
        assert len(streams) == 2  # then the places given wait for the consumer
        assert len(manager._events) <= config.event_buffer + config.max_peers
        assert len(manager.peers) <= config.max_peers
        seen = await drain(aiter(manager.events()))
    removed = [e for e in seen if isinstance(e, PeerRemoved)]
    assert {e.reason for e in removed} == {"replaced"}


# -- 4. decoded extension messages count in the byte bound ----------------------------------------


def _v4(n: int) -> PeerAddress:
    return PeerAddress(IPv4Address(0x0A000000 + n), 1 + n % 65535)


def _v6(n: int) -> PeerAddress:
    return PeerAddress(IPv6Address((0x2001_0DB8 << 96) + n), 1 + n % 65535)


def _held(make: Any) -> tuple[int, Any]:
    """The bytes ``make()``'s result holds (traced), and the result."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        value = make()
        return tracemalloc.get_traced_memory()[0] - before, value
    finally:
        tracemalloc.stop()


def test_a_full_pex_message_counts_at_least_what_it_holds() -> None:
    n = DEFAULT_MAX_PEX_ENTRIES
    payload = PexMessage(
        added=tuple(_v4(i) for i in range(n)),
        added_flags=(0x11,) * n,
        added6=tuple(_v6(i) for i in range(n)),
        added6_flags=(0x11,) * n,
        dropped=tuple(_v4(i + n) for i in range(n)),
        dropped6=tuple(_v6(i + n) for i in range(n)),
    ).encode_payload()
    held, message = _held(lambda: PexMessage.decode_payload(payload))
    assert held > 400_000  # what the reviewer saw: some 0.7 MB decoded
    assert held <= _payload_size(message) <= 2 * held


def test_a_full_extended_handshake_counts_at_least_what_it_holds() -> None:
    names = {
        f"{i:03d}".ljust(MAX_EXTENSION_NAME_LENGTH, "x"): 1 + i % 255
        for i in range(MAX_HANDSHAKE_EXTENSION_NAMES)
    }
    extra: dict[bytes, object] = {
        b"k%02d" % i: b"v" * MAX_HANDSHAKE_EXTRA_VALUE_LENGTH
        for i in range(MAX_HANDSHAKE_EXTRA_KEYS)
    }
    payload = ExtendedHandshake(
        m=names, v="v" * MAX_CLIENT_VERSION_LENGTH, extra=extra
    ).encode_payload()
    held, message = _held(lambda: ExtendedHandshake.decode_payload(payload))
    assert held <= _payload_size(message) <= 2 * held + 1024


async def test_pex_events_wait_for_the_consumer_past_the_byte_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ext = Extensions.FAST | Extensions.EXTENSION_PROTOCOL
    pex_id = 9  # ours: the peer sends ut_pex under it, and the connection decodes it
    config = PeerManagerConfig(event_buffer_bytes=1_000_000, extension_ids={"ut_pex": pex_id})
    message = PexMessage(added=tuple(_v4(i) for i in range(DEFAULT_MAX_PEX_ENTRIES)))
    size = _payload_size(message)
    async with open_peer_manager(config) as manager:
        local, far = trio.testing.memory_stream_pair()
        hs = replace(handshake(local, 1), extensions=ext, our_extensions=ext)
        peer = manager.add_peer(hs, num_pieces=8)
        await far.send_all(Extended(pex_id, message.encode_payload()).encode() * 20)
        await trio.sleep(5)
        # PeerAdded, and the PEX messages up to the bound (one past it): they held 0 bytes
        # each, and every one was taken (3.5 MB decoded, for 120 KB sent).
        queued = manager._events
        assert queued._bytes <= config.event_buffer_bytes + size
        assert len(queued) == 1 + 1 + config.event_buffer_bytes // size
        seen = await drain(aiter(manager.events()))
        assert queued._bytes == 0
    assert about(peer, seen) == ["PeerAdded"] + ["MessageReceived"] * 20
    assert all(isinstance(e.message, PexMessage) for e in seen if isinstance(e, MessageReceived))


# -- 5. a service's peer_added that raises ---------------------------------------------------------


class _Refusing:
    """A service whose peer_added raises (a bug), and which records what it hears."""

    def __init__(self) -> None:
        self.removed: list[Peer] = []

    def handshake_fields(self, peer: Peer) -> dict[str, object]:
        return {}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        raise RuntimeError("a bug")

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        return False

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        self.removed.append(peer)

    def tick(self, manager: PeerManager, now: float) -> None:
        pass


async def test_an_add_a_service_fails_queues_no_event_about_the_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = _Refusing()
    async with open_peer_manager(PeerManagerConfig(services=[service], max_peers=1)) as manager:
        local, far = trio.testing.memory_stream_pair()
        with pytest.raises(RuntimeError, match="a bug"):
            manager.add_peer(handshake(local, 1), num_pieces=8)
        await trio.testing.wait_all_tasks_blocked()
        assert manager.places_in_use == 0  # its place is free at once: no event to queue
        assert len(service.removed) == 1  # the services still hear it go
        with pytest.raises(trio.BrokenResourceError):
            await far.send_all(b"x")  # the manager closed the stream
        assert len(manager._events) == 0
        seen = await drain(aiter(manager.events()), seconds=1)
    assert seen == []


# -- 6. randomised invariants of the places and the queue ----------------------------------------

_HOSTS = ("203.0.113.1", "203.0.113.2", "203.0.113.3")


def _check_bounds(manager: PeerManager, config: PeerManagerConfig, handles: list[Peer]) -> None:
    connected = [peer for peer in handles if manager.is_connected(peer)]
    assert set(connected) <= manager.peers
    # Each peer connected holds a place; those leaving may hold more, never past the bound.
    assert len(connected) <= manager.places_in_use <= config.max_peers
    assert len(manager._events) <= config.event_buffer + config.max_peers
    if config.max_peers_per_host is not None:
        per_host = Counter(peer.address.normalized().host for peer in connected)
        assert max(per_host.values(), default=0) <= config.max_peers_per_host


@pytest.mark.parametrize("seed", range(20))
async def test_random_operations_keep_the_places_and_the_queue_bounded(
    autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    rng = random.Random(seed)
    config = PeerManagerConfig(
        event_buffer=rng.choice([1, 2, 4]),
        max_peers=rng.choice([1, 2, 3, 5]),
        max_peers_per_host=rng.choice([None, 1, 2]),
    )
    handles: list[Peer] = []
    far_ends: dict[Peer, trio.abc.Stream] = {}
    seen: list[ManagerEvent] = []
    async with open_peer_manager(config) as manager:
        events = aiter(manager.events())
        for n in range(1, 301):
            op = rng.random()
            try:
                if op < 0.3:
                    peer, far = add(manager, n, host=rng.choice(_HOSTS))
                    handles.append(peer)
                    far_ends[peer] = far
                elif op < 0.55 and handles:
                    old = rng.choice(handles)
                    # Mostly from the old one's host, as a duplicate is.
                    host = str(old.address.host) if rng.random() < 0.8 else rng.choice(_HOSTS)
                    peer, far = add(manager, n, host=host, replacing=old)
                    handles.append(peer)
                    far_ends[peer] = far
                elif op < 0.65 and handles:
                    manager.remove_peer(rng.choice(handles), "gone")
                elif op < 0.72 and handles:
                    await far_ends[rng.choice(handles)].aclose()
                elif op < 0.78 and handles:
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await far_ends[rng.choice(handles)].send_all(
                            Have(rng.randrange(8)).encode()
                        )
                elif op < 0.92:
                    for _ in range(rng.randrange(4)):
                        with trio.move_on_after(0.01):
                            seen.append(await anext(events))
                else:
                    await trio.testing.wait_all_tasks_blocked()
            except PeerManagerFullError:
                pass
            _check_bounds(manager, config, handles)
            if rng.random() < 0.5:
                await trio.testing.wait_all_tasks_blocked()
                _check_bounds(manager, config, handles)
        for peer in handles:
            manager.remove_peer(peer, "end")
        seen += await drain(events)
        # No place leaked (none given and never freed): all of them are free again.
        assert manager.places_in_use == 0
        assert not manager.peers
        for n in range(config.max_peers):
            add(manager, 1000 + n, host=f"198.51.100.{n + 1}")
    for peer in handles:
        assert [e for e in about(peer, seen) if e != "MessageReceived"] == [
            "PeerAdded",
            "PeerRemoved",
        ]
