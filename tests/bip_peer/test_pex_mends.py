"""Mends in BEP 11 PEX (and what BEP 55 holepunch takes of it).

- A listening address given at construction stays ours when the same address, learnt as our
  external one, is removed again (the external IP changed): PEX must not dial it, nor the
  holepunch service act on a connect to it.
- A hybrid torrent added by a v2-only magnet is one PEX swarm: the peers that joined under the
  truncated v2 hash and those that joined under the v1 hash after the metadata hear of each
  other, and :meth:`PeerExchange.relay_for` finds a relay among all of them.
- Every PEX message within the flood allowance is taken (libtorrent's ``ut_pex.cpp``), so
  messages that arrive bunched (queued behind piece data) lose no added or dropped address.
- ``addresses_ignored`` is cumulative: it does not fall when a peer leaves.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from types import SimpleNamespace
from typing import Any

import trio
import trio.testing

from bip_handshake import PeerAddress
from bip_metainfo import InfoHash
from bip_peer import HolepunchMessage, HolepunchService, PeerExchange, PexMessage
from bip_peer._extended import ExtendedHandshake
from bip_peer._pex import PEX_FLOOD_ALLOWANCE, PexFlags, PexInbox

V1 = InfoHash.from_info_bytes(b"d4:name1:xe", v1=True, v2=False)
HYBRID = InfoHash.from_info_bytes(b"d4:name1:ye", v1=True, v2=True)
MAGNET = InfoHash(v2=HYBRID.v2)  # what a btmh-only magnet registers before its metadata
LISTEN = PeerAddress(IPv4Address("81.2.69.160"), 6881)  # a public address we listen on


def addr(n: int) -> PeerAddress:
    return PeerAddress(IPv4Address(f"93.184.216.{n}"), 6881)


class Sink:
    def __init__(self) -> None:
        self.addresses: list[PeerAddress] = []

    def discovered(self, info_hash: object, addresses: Any, source: str) -> None:
        self.addresses.extend(addresses)


class FakePeer:
    """What PEX and holepunch read of a peer we dialled that offered both extensions (hashed
    by identity, as a Peer is)."""

    def __init__(self, address: PeerAddress, info_hash: InfoHash) -> None:
        self.address = address
        self.info_hash = info_hash
        self.direction = "outbound"
        self.transport = "tcp"
        self.encryption = "none"
        ids = {"ut_pex": 1, "ut_holepunch": 4}
        self.extended_handshake = ExtendedHandshake(m=ids)
        self.connection = SimpleNamespace(
            their_extension_ids=ids, peer_has_all=False, peer_upload_only=False
        )

    def __repr__(self) -> str:
        return f"FakePeer({self.address})"


class FakeManager:
    def __init__(self, peers: list[Any]) -> None:
        self.peers = peers
        self.sent: list[tuple[Any, object]] = []

    def is_connected(self, peer: object) -> bool:
        return peer in self.peers

    def send_nowait(self, peer: object, message: object) -> bool:
        self.sent.append((peer, message))
        return True


def relay_peer(pex: PeerExchange, info_hash: InfoHash, address: PeerAddress) -> object:
    """The peer :meth:`PeerExchange.relay_for` names, or None."""
    relay = pex.relay_for(info_hash, address)
    return None if relay is None else relay.peer


# ------------------------------------------------------------- F1: a fixed address stays ours


def test_a_listening_address_stays_ours_when_learnt_and_unlearnt() -> None:
    pex = PeerExchange(Sink(), our_addresses=[LISTEN])
    hole = HolepunchService(our_addresses=[LISTEN])
    inbox = PexInbox(our_addresses=[LISTEN])
    learnt = PeerAddress(IPv4Address("81.2.69.200"), 6881)
    for user in (pex, hole, inbox):
        # The voter decides the address we listen on, then another one.
        user.add_our_address(LISTEN)
        user.add_our_address(learnt)
        user.remove_our_address(LISTEN)
        assert LISTEN in user.our_addresses, user
        # Only what was learnt goes.
        user.remove_our_address(learnt)
        assert user.our_addresses == {LISTEN}, user


async def test_after_the_ip_changes_we_do_not_dial_our_listening_address() -> None:
    sink = Sink()
    pex = PeerExchange(sink, our_addresses=[LISTEN])
    connects: list[PeerAddress] = []
    hole = HolepunchService(
        on_connect=lambda info_hash, address: connects.append(address), our_addresses=[LISTEN]
    )
    for user in (pex, hole):
        user.add_our_address(LISTEN)
        user.remove_our_address(LISTEN)
    peer: Any = FakePeer(addr(34), V1)
    manager: Any = FakeManager([peer])
    pex.peer_added(manager, peer)
    hole.peer_added(manager, peer)
    pex.message_received(manager, peer, PexMessage(added=(LISTEN, addr(9))))
    hole.message_received(manager, peer, HolepunchMessage.connect(LISTEN))
    assert sink.addresses == [addr(9)]
    assert connects == []


# ------------------------------------------------------ F2: a hybrid magnet is one PEX swarm


def test_a_hybrid_magnets_early_and_late_peers_are_one_swarm() -> None:
    pex = PeerExchange(Sink())
    early = [FakePeer(addr(1), MAGNET), FakePeer(addr(2), MAGNET)]
    late = [FakePeer(addr(3), HYBRID), FakePeer(addr(4), HYBRID)]
    peers: list[Any] = [*early, *late]
    manager: Any = FakeManager(peers)
    for peer in peers:
        pex.peer_added(manager, peer)
    pex.tick(manager, 0.0)
    told = {peer.address: {str(a) for a in message.added} for peer, message in manager.sent}
    everyone = {str(p.address) for p in peers}
    assert told == {p.address: everyone - {str(p.address)} for p in peers}


async def test_relay_for_finds_a_relay_among_a_hybrid_magnets_early_peers() -> None:
    pex = PeerExchange(Sink())
    early: Any = FakePeer(addr(1), MAGNET)
    late: Any = FakePeer(addr(3), HYBRID)
    manager: Any = FakeManager([early, late])
    pex.peer_added(manager, early)
    pex.peer_added(manager, late)
    target = addr(9)
    pex.message_received(manager, early, PexMessage(added=(target,), added_flags=(0x08,)))
    # A late peer's message (the torrent's full hash, keyed by v1) hides nothing.
    pex.message_received(manager, late, PexMessage(added=(addr(10),), added_flags=(0,)))
    for info_hash in (HYBRID, MAGNET, InfoHash(v1=HYBRID.v1)):
        assert relay_peer(pex, info_hash, target) is early, info_hash
        assert relay_peer(pex, info_hash, addr(10)) is late, info_hash
    # The early peer leaves: its relays go, the late one's stay.
    manager.peers.remove(early)
    pex.peer_removed(manager, early)
    assert pex.relay_for(HYBRID, target) is None
    assert relay_peer(pex, MAGNET, addr(10)) is late
    # Another torrent's peers are another swarm.
    assert pex.relay_for(V1, addr(10)) is None


async def test_two_swarm_tables_joined_by_a_full_hash_peer_are_one() -> None:
    """Peers that joined under v1 only and under v2 only, before any peer of the full hash:
    once one comes, the relays of both halves are found with any of the torrent's hashes."""
    pex = PeerExchange(Sink())
    by_v1: Any = FakePeer(addr(1), InfoHash(v1=HYBRID.v1))
    by_v2: Any = FakePeer(addr(2), MAGNET)
    full: Any = FakePeer(addr(3), HYBRID)
    manager: Any = FakeManager([by_v1, by_v2, full])
    for peer in (by_v1, by_v2, full):
        pex.peer_added(manager, peer)
    pex.message_received(manager, by_v1, PexMessage(added=(addr(11),)))
    pex.message_received(manager, by_v2, PexMessage(added=(addr(12),)))
    pex.message_received(manager, full, PexMessage(added=(addr(13),)))
    for info_hash in (HYBRID, MAGNET, InfoHash(v1=HYBRID.v1)):
        found = [relay_peer(pex, info_hash, addr(n)) for n in (11, 12, 13)]
        assert found == [by_v1, by_v2, full], info_hash
    for peer in (by_v1, by_v2, full):
        pex.peer_removed(manager, peer)
    assert pex._sources == {}  # nothing left behind under any key


# --------------------------------------------------------- F3: bunched messages are all taken


async def test_bunched_pex_messages_lose_nothing(autojump_clock: trio.testing.MockClock) -> None:
    sink = Sink()
    pex = PeerExchange(sink)
    sender: Any = FakePeer(addr(200), V1)
    manager: Any = FakeManager([sender])
    pex.peer_added(manager, sender)
    # Sent 60 s apart (a full list, then a diff), they arrive 11 s apart.
    first = PexMessage(added=(addr(1), addr(2)), added_flags=(8, 8))
    second = PexMessage(added=(addr(3),), added_flags=(8,), dropped=(addr(1),))
    await trio.sleep(50)
    pex.message_received(manager, sender, first)
    await trio.sleep(11)
    pex.message_received(manager, sender, second)
    assert sink.addresses == [addr(1), addr(2), addr(3)]
    assert pex._peers[sender].inbox.known == {addr(2), addr(3)}
    assert pex.relay_for(V1, addr(1)) is None  # dropped: no longer a relay for it
    assert relay_peer(pex, V1, addr(3)) is sender
    stats = pex.statistics()
    assert (stats.messages_received, stats.messages_ignored) == (2, 0)


def test_every_message_within_the_allowance_is_taken() -> None:
    inbox = PexInbox()
    for n in range(PEX_FLOOD_ALLOWANCE):
        update = inbox.receive(
            PexMessage(added=(addr(10 + n),), dropped=(addr(9 + n),) if n else ()), now=n * 0.01
        )
        assert update.addresses == (addr(10 + n),)
        assert update.dropped == ((addr(9 + n),) if n else ())
    assert inbox.known == {addr(10 + PEX_FLOOD_ALLOWANCE - 1)}
    stats = inbox.statistics()
    assert (stats.messages, stats.ignored_too_soon) == (PEX_FLOOD_ALLOWANCE, 0)


def test_an_intake_interval_ignores_added_but_applies_dropped() -> None:
    inbox = PexInbox(min_interval=45.0)
    inbox.receive(PexMessage(added=(addr(1), addr(2)), added_flags=(0, PexFlags.SEED)), now=0.0)
    update = inbox.receive(PexMessage(added=(addr(3),), dropped=(addr(1),)), now=11.0)
    assert update.addresses == ()  # sooner than the interval: added ignored and counted
    assert update.dropped == (addr(1),)  # a drop always counts: no stale relays
    assert inbox.known == {addr(2)}
    stats = inbox.statistics()
    assert (stats.messages, stats.ignored_too_soon, stats.ignored_excess) == (1, 1, 1)
    update = inbox.receive(PexMessage(added=(addr(3),)), now=45.0)
    assert update.addresses == (addr(3),)


# ---------------------------------------------------------- F4: addresses_ignored cumulative


async def test_addresses_ignored_does_not_fall_when_a_peer_leaves() -> None:
    private = False
    pex = PeerExchange(Sink(), is_private=lambda info_hash: private)
    junk = (PeerAddress(IPv4Address("192.168.1.9"), 6881), PeerAddress(IPv4Address("8.8.8.8"), 0))
    one: Any = FakePeer(addr(34), V1)
    two: Any = FakePeer(addr(35), V1)
    manager: Any = FakeManager([one, two])
    for peer in (one, two):
        pex.peer_added(manager, peer)
        pex.message_received(manager, peer, PexMessage(added=junk))
    assert pex.statistics().addresses_ignored == 4
    pex.peer_removed(manager, one)
    assert pex.statistics().addresses_ignored == 4
    private = True  # the other's PEX stops: the torrent turned out private
    pex.tick(manager, 0.0)
    assert pex._peers == {}
    assert pex.statistics().addresses_ignored == 4
