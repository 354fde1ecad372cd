"""PeerList: a torrent's peers, their history, and the next ones to dial (sans-IO)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bip_handshake import PeerAddress
from bip_handshake._peer_list import (
    _SOURCE_RANK,
    EVICTION_WINDOW,
    MAX_BANNED_HOSTS,
    PeerList,
    PeerOrigin,
    _source_rank,
)
from bip_handshake._peer_priority import peer_priority


def at(text: str) -> PeerAddress:
    return PeerAddress.parse(text)


A, B, C = at("10.0.0.1:6881"), at("10.0.0.2:6881"), at("10.0.0.3:6881")


# -- adding ---------------------------------------------------------------------------------


def test_add_normalises_and_merges_sources() -> None:
    peers = PeerList()
    assert peers.add(at("[::ffff:10.0.0.1]:6881"), PeerOrigin.DHT, 0.0)
    assert peers.add(A, PeerOrigin.TRACKER, 0.0, swarm_id=b"v" * 20)
    assert len(peers) == 1
    assert A in peers
    assert at("[::ffff:10.0.0.1]:6881") in peers
    assert "x" not in peers
    entry = peers.entry(A)
    assert entry is not None
    assert entry.origin == PeerOrigin.DHT | PeerOrigin.TRACKER
    assert entry.swarm_id == b"v" * 20


@pytest.mark.parametrize("text", ["10.0.0.1:0", "0.0.0.0:6881", "224.0.0.1:6881", "[::]:1"])
def test_unconnectable_addresses_are_refused(text: str) -> None:
    peers = PeerList()
    assert not peers.add(at(text), PeerOrigin.PEX, 0.0)
    assert len(peers) == 0


def test_bad_arguments() -> None:
    peers = PeerList()
    with pytest.raises(TypeError):
        peers.add("10.0.0.1:1", PeerOrigin.PEX, 0.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        peers.add(A, 4, 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="20 bytes"):
        peers.add(A, PeerOrigin.PEX, 0.0, swarm_id=b"short")
    with pytest.raises(TypeError):
        peers.ban("10.0.0.1")  # type: ignore[arg-type]
    assert len(peers) == 0


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("max_size", 0, ValueError),
        ("max_size", 1.5, TypeError),
        ("max_size", True, TypeError),
        ("max_failcount", 0, ValueError),
        ("min_reconnect_time", 0, ValueError),
        ("min_reconnect_time", float("inf"), ValueError),
        ("dial_timeout", "1", TypeError),
    ],
)
def test_bounds_are_checked(name: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        PeerList(**{name: value})  # type: ignore[arg-type]


def test_source_names() -> None:
    assert PeerOrigin.from_name("tracker") is PeerOrigin.TRACKER
    assert PeerOrigin.from_name("user") is PeerOrigin.USER
    assert PeerOrigin.from_name("something new") is PeerOrigin.OTHER


# -- candidates -----------------------------------------------------------------------------


def test_a_pending_candidate_is_not_given_twice() -> None:
    peers = PeerList()
    peers.add_many([A, B], PeerOrigin.TRACKER, 0.0)
    first = peers.connect_candidates(1, 0.0)
    second = peers.connect_candidates(5, 0.0)
    assert len(first) == 1
    assert set(first).isdisjoint(second)
    assert peers.connect_candidates(5, 0.0) == []
    assert peers.dialling == 2
    assert peers.connect_candidates(0, 0.0) == []


def test_a_disconnect_of_our_own_needs_no_reconnect_wait() -> None:
    """A connection we ended for a reason of ours (a pause, a recheck) may be dialled again
    at once; any other waits min_reconnect_time."""
    peers = PeerList(min_reconnect_time=60.0)
    peers.add_many([A, B], PeerOrigin.TRACKER, 0.0)
    assert set(peers.connect_candidates(2, 0.0)) == {A, B}
    peers.connected(A, 1.0)
    peers.connected(B, 1.0)
    peers.disconnected(A, 2.0)
    peers.disconnected(B, 2.0, wait=False)
    assert peers.connect_candidates(2, 3.0) == [B]
    assert peers.connect_candidates(2, 62.0) == [A]


def test_is_dialling_until_the_outcome() -> None:
    peers = PeerList()
    peers.add(at("10.0.0.9:6881"), PeerOrigin.TRACKER, 0.0)
    assert not peers.is_dialling(at("10.0.0.9:6881"))
    [address] = peers.connect_candidates(1, 0.0)
    assert peers.is_dialling(address)
    assert peers.is_dialling(at("[::ffff:10.0.0.9]:6881"))  # IPv4-mapped: the same address
    peers.dial_failed(address, 1.0)
    assert not peers.is_dialling(address)
    assert not peers.is_dialling(at("10.0.0.10:6881"))  # unknown


def test_backoff_grows_with_failures_and_gives_up() -> None:
    peers = PeerList(min_reconnect_time=60.0, max_failcount=3)
    peers.add(A, PeerOrigin.TRACKER, 0.0)
    assert peers.connect_candidates(1, 0.0) == [A]
    peers.dial_failed(A, 1.0)
    assert peers.connect_candidates(1, 120.0) == []  # 60 s x (1 + 1) from the failure
    assert peers.connect_candidates(1, 121.0) == [A]
    peers.dial_failed(A, 121.0)
    assert peers.connect_candidates(1, 121.0 + 179.0) == []
    assert peers.connect_candidates(1, 121.0 + 180.0) == [A]
    peers.dial_failed(A, 301.0)
    assert peers.connect_candidates(1, 1e9) == []  # given up after 3 failures
    assert peers.statistics().given_up == 1
    # PEX or the DHT listing it again changes nothing; the user asking for it does.
    peers.add(A, PeerOrigin.PEX | PeerOrigin.DHT, 1e9)
    assert peers.connect_candidates(1, 1e9) == []
    peers.add(A, PeerOrigin.USER, 1e9)
    assert peers.connect_candidates(1, 1e9) == [A]


def test_a_tracker_listing_a_peer_again_takes_one_failure_off() -> None:
    # libtorrent's update_peer: someone else apparently reaches it; one failure per offer.
    peers = PeerList(min_reconnect_time=60.0, max_failcount=3)
    peers.add(A, PeerOrigin.DHT, 0.0)
    for now in (1.0, 200.0, 500.0):
        peers.dial_failed(A, now)
    assert peers.connect_candidates(1, 1e9) == []  # given up
    peers.add(A, PeerOrigin.TRACKER, 1e9)
    entry = peers.entry(A)
    assert entry is not None
    assert entry.failcount == 2
    assert peers.connect_candidates(1, 1e9) == [A]
    peers.dial_failed(A, 1e9)
    assert peers.connect_candidates(1, 2e9) == []  # given up again: the next offer decides
    peers.add(A, PeerOrigin.TRACKER, 2e9)
    peers.add(A, PeerOrigin.TRACKER, 2e9)
    entry = peers.entry(A)
    assert entry is not None
    assert entry.failcount == 1
    peers.add(A, PeerOrigin.TRACKER, 2e9)
    peers.add(A, PeerOrigin.TRACKER, 2e9)
    entry = peers.entry(A)
    assert entry is not None
    assert entry.failcount == 0  # never below zero


def test_one_reply_naming_a_peer_several_times_is_one_offer() -> None:
    # A tracker reply listing an address three times takes one failure off, not three.
    peers = PeerList(min_reconnect_time=60.0, max_failcount=3)
    peers.add(A, PeerOrigin.DHT, 0.0)
    for now in (1.0, 200.0, 500.0):
        peers.dial_failed(A, now)
    assert peers.add_many([A, A, A], PeerOrigin.TRACKER, 1e9) == 1
    entry = peers.entry(A)
    assert entry is not None
    assert entry.failcount == 2


def test_cancelled_dial_is_no_failure_but_waits() -> None:
    peers = PeerList(min_reconnect_time=10.0)
    peers.add(A, PeerOrigin.DHT, 0.0)
    assert peers.connect_candidates(1, 0.0) == [A]
    peers.dial_cancelled(A, 0.0)
    entry = peers.entry(A)
    assert entry is not None
    assert entry.failcount == 0
    assert not entry.dialling
    assert peers.connect_candidates(1, 5.0) == []
    assert peers.connect_candidates(1, 10.0) == [A]


def test_unreported_dial_expires_as_failed() -> None:
    peers = PeerList(dial_timeout=30.0, min_reconnect_time=1.0)
    peers.add(A, PeerOrigin.DHT, 0.0)
    assert peers.connect_candidates(1, 0.0) == [A]
    assert peers.connect_candidates(1, 29.0) == []
    assert peers.connect_candidates(1, 30.0) == []  # expired now: failed, waits 2 s
    entry = peers.entry(A)
    assert entry is not None
    assert entry.failcount == 1
    assert not entry.dialling
    assert peers.connect_candidates(1, 32.0) == [A]


def test_ranking_failures_then_source_then_priority() -> None:
    peers = PeerList(min_reconnect_time=1.0)
    ours = at("50.60.70.80:6881")
    peers.set_our_addresses([ours])
    pex = [at(f"{i}.1.2.3:1") for i in range(1, 20)]
    peers.add_many(pex, PeerOrigin.PEX, 0.0)
    peers.add(at("200.1.1.1:1"), PeerOrigin.TRACKER, 0.0)
    peers.add(at("201.1.1.1:1"), PeerOrigin.USER, 0.0)
    # One PEX peer failed once: after every PEX peer that never failed.
    failed = pex[0]
    for address in peers.connect_candidates(len(peers), 0.0):
        if address == failed:
            peers.dial_failed(address, 0.0)
        else:
            peers.dial_cancelled(address, 0.0)
    order = peers.connect_candidates(len(peers), 100.0)
    assert order[:2] == [at("201.1.1.1:1"), at("200.1.1.1:1")]
    ranked = sorted(pex[1:], key=lambda a: -peer_priority(ours, a))
    assert order[2:-1] == ranked
    assert order[-1] == failed


def test_priority_follows_our_address() -> None:
    peers = PeerList()
    peers.add(A, PeerOrigin.PEX, 0.0)
    entry = peers.entry(A)
    assert entry is not None
    assert entry.priority == 0
    peers.set_our_addresses([at("[2001:db8::1]:1"), at("1.2.3.4:5"), at("9.9.9.9:9")])
    entry = peers.entry(A)
    assert entry is not None
    assert entry.priority == peer_priority(at("1.2.3.4:5"), A)


def test_seed_not_dialled_while_we_seed() -> None:
    peers = PeerList()
    peers.add(A, PeerOrigin.TRACKER, 0.0)
    peers.mark_seed(A)
    assert peers.connect_candidates(1, 0.0, seed=True) == []
    assert peers.connect_candidates(1, 0.0, seed=False) == [A]


# -- connections ----------------------------------------------------------------------------


def test_connected_is_no_candidate_and_resets_failures() -> None:
    peers = PeerList(min_reconnect_time=1.0)
    peers.add(A, PeerOrigin.TRACKER, 0.0)
    peers.connect_candidates(1, 0.0)
    peers.dial_failed(A, 0.0)
    assert peers.connected(A, 10.0)
    entry = peers.entry(A)
    assert entry is not None
    assert entry.connected
    assert entry.failcount == 0
    assert peers.connect_candidates(1, 100.0) == []
    peers.disconnected(A, 100.0, failed=True)
    assert peers.connect_candidates(1, 101.0) == []  # 1 s x (1 + 1)
    assert peers.connect_candidates(1, 102.0) == [A]


def test_incoming_only_entry_is_never_dialled_and_goes_with_its_connection() -> None:
    peers = PeerList()
    ephemeral = at("10.0.0.9:51234")
    assert peers.connected(ephemeral, 0.0, origin=PeerOrigin.INCOMING)
    assert peers.connect_candidates(5, 1e6) == []
    peers.disconnected(ephemeral, 1.0)
    assert ephemeral not in peers
    # A known address that connects to us stays, and is not dialled while connected.
    peers.add(B, PeerOrigin.DHT, 0.0)
    peers.connected(B, 0.0, origin=PeerOrigin.INCOMING)
    assert peers.connect_candidates(5, 0.0) == []
    peers.disconnected(B, 1.0)
    assert B in peers


def test_ban_drops_and_refuses_a_host() -> None:
    peers = PeerList()
    peers.add_many([A, at("10.0.0.1:7000"), B], PeerOrigin.PEX, 0.0)
    peers.connected(B, 0.0)
    assert peers.ban(IPv4Address("10.0.0.1")) == 2
    assert peers.is_banned(IPv6Address("::ffff:10.0.0.1"))
    assert not peers.add(A, PeerOrigin.USER, 0.0)
    assert not peers.connected(A, 0.0)
    assert peers.ban(IPv4Address("10.0.0.2")) == 0  # connected: goes when it disconnects
    assert peers.connect_candidates(5, 0.0) == []
    peers.disconnected(B, 1.0)
    assert B not in peers
    assert len(peers) == 0
    assert peers.statistics().banned_hosts == 2


def test_banned_hosts_are_bounded() -> None:
    peers = PeerList()
    for i in range(MAX_BANNED_HOSTS + 10):
        peers.ban(IPv4Address(i + 1))
    assert peers.statistics().banned_hosts == MAX_BANNED_HOSTS


def test_remove() -> None:
    peers = PeerList()
    peers.add(A, PeerOrigin.PEX, 0.0)
    peers.connect_candidates(1, 0.0)
    assert peers.remove(A)
    assert not peers.remove(A)
    assert peers.dialling == 0
    assert len(peers) == 0
    # Reports about an address it forgot are ignored.
    peers.dial_failed(A, 0.0)
    peers.dial_cancelled(A, 0.0)
    peers.disconnected(A, 0.0)
    peers.mark_seed(A)
    assert len(peers) == 0


# -- bounds ---------------------------------------------------------------------------------


def test_full_list_evicts_failed_first_then_lowest_priority() -> None:
    peers = PeerList(max_size=3, min_reconnect_time=1.0)
    ours = at("50.60.70.80:6881")
    peers.set_our_addresses([ours])
    peers.add_many([A, B, C], PeerOrigin.PEX, 0.0)
    peers.connect_candidates(3, 0.0)
    peers.dial_failed(B, 0.0)
    peers.dial_cancelled(A, 0.0)
    peers.dial_cancelled(C, 0.0)
    new = at("10.0.0.4:6881")
    assert peers.add(new, PeerOrigin.PEX, 0.0)
    assert B not in peers
    assert len(peers) == 3
    assert peers.statistics().evicted == 1
    # None failed now: the lowest priority goes, if the newcomer ranks above it.
    by_priority = sorted([A, C, new], key=lambda a: peer_priority(ours, a))
    candidates = [at(f"10.1.{i}.{j}:1") for i in range(4) for j in range(1, 9)]
    better = max(candidates, key=lambda a: peer_priority(ours, a))
    assert peer_priority(ours, better) > peer_priority(ours, by_priority[0])
    assert peers.add(better, PeerOrigin.PEX, 0.0)
    assert by_priority[0] not in peers
    assert better in peers
    worse = min(candidates, key=lambda a: peer_priority(ours, a))
    if peer_priority(ours, worse) <= min(peer_priority(ours, a) for a in peers._entries):
        assert not peers.add(worse, PeerOrigin.PEX, 0.0)
        assert peers.statistics().dropped == 1


def test_user_connected_and_dialling_entries_are_never_evicted() -> None:
    peers = PeerList(max_size=3)
    peers.add(A, PeerOrigin.USER, 0.0)
    peers.add(B, PeerOrigin.TRACKER, 0.0)
    peers.add(C, PeerOrigin.TRACKER, 0.0)
    peers.connected(B, 0.0)
    assert peers.connect_candidates(5, 0.0) == [A, C]
    peers.dial_failed(A, 0.0)
    assert not peers.add(at("10.0.0.4:1"), PeerOrigin.TRACKER, 0.0)
    assert set(peers._entries) == {A, B, C}


def test_pex_flood_stays_bounded() -> None:
    peers = PeerList(max_size=100)
    peers.set_our_addresses([at("50.60.70.80:6881")])
    flood = (PeerAddress(IPv4Address(0x0B000000 + i), 1000 + i % 7) for i in range(20_000))
    peers.add_many(flood, PeerOrigin.PEX, 0.0)
    assert len(peers) == 100
    stats = peers.statistics()
    assert stats.evicted + stats.dropped + 100 == 20_000
    assert EVICTION_WINDOW > 0


# -- an inbound peer's listen port (BEP 10 ``p``) --------------------------------------------

EPHEMERAL = at("10.0.0.9:51234")
LISTEN = at("10.0.0.9:6881")


def test_update_port_moves_an_inbound_entry_to_where_it_listens() -> None:
    # libtorrent's update_peer_port: the ephemeral entry becomes the listen address, connected,
    # with the connection's swarm; once disconnected it is kept and dialled back.
    peers = PeerList()
    assert peers.connected(EPHEMERAL, 0.0, origin=PeerOrigin.INCOMING)
    assert peers.update_port(EPHEMERAL, 6881, 1.0, swarm_id=b"s" * 20) == LISTEN
    assert EPHEMERAL not in peers
    entry = peers.entry(LISTEN)
    assert entry is not None
    assert entry.connected
    assert entry.origin == PeerOrigin.INCOMING
    assert entry.swarm_id == b"s" * 20
    assert peers.connect_candidates(5, 1.0) == []  # connected
    peers.disconnected(LISTEN, 2.0)
    assert LISTEN in peers  # not forgotten: it is where the peer listens
    assert peers.connect_candidates(5, 30.0) == []  # the usual wait first
    assert peers.connect_candidates(5, 62.0) == [LISTEN]


def test_update_port_merges_into_a_known_entry() -> None:
    # A tracker gave the listen address (not being dialled: a dial pending there keeps both
    # entries, test_handshake_mends_s8) when the peer dialled us.
    peers = PeerList()
    peers.add(LISTEN, PeerOrigin.TRACKER, 0.0)
    peers.connected(EPHEMERAL, 0.0, origin=PeerOrigin.INCOMING)
    assert peers.update_port(EPHEMERAL, 6881, 0.0) == LISTEN
    assert len(peers) == 1
    entry = peers.entry(LISTEN)
    assert entry is not None
    assert entry.connected
    assert not entry.dialling
    assert entry.origin == PeerOrigin.TRACKER | PeerOrigin.INCOMING
    assert peers.dialling == 0
    # Told again (a second extended handshake), from the address it is recorded under now.
    assert peers.update_port(LISTEN, 6881, 0.0) == LISTEN
    assert len(peers) == 1


def test_update_port_of_an_unrecorded_connection_adds_it() -> None:
    peers = PeerList()
    assert peers.update_port(EPHEMERAL, 6881, 0.0) == LISTEN
    entry = peers.entry(LISTEN)
    assert entry is not None
    assert entry.connected


@pytest.mark.parametrize("port", [0, -1, 65536, True])
def test_update_port_refuses_an_unconnectable_port(port: int) -> None:
    peers = PeerList()
    peers.connected(EPHEMERAL, 0.0, origin=PeerOrigin.INCOMING)
    assert peers.update_port(EPHEMERAL, port, 0.0) is None
    assert EPHEMERAL in peers  # unchanged: forgotten at its disconnect, as before
    peers.disconnected(EPHEMERAL, 1.0)
    assert len(peers) == 0


def test_update_port_refuses_a_banned_host_and_a_bad_swarm_id() -> None:
    peers = PeerList()
    peers.connected(EPHEMERAL, 0.0, origin=PeerOrigin.INCOMING)
    with pytest.raises(ValueError, match="swarm id"):
        peers.update_port(EPHEMERAL, 6881, 0.0, swarm_id=b"short")
    peers.ban(EPHEMERAL.host)
    assert peers.update_port(EPHEMERAL, 6881, 0.0) is None
    assert LISTEN not in peers


def test_update_port_with_a_full_list_keeps_the_entry() -> None:
    # The ephemeral entry's place is reused: no eviction, no drop.
    peers = PeerList(max_size=2)
    peers.add(A, PeerOrigin.USER, 0.0)
    peers.connected(EPHEMERAL, 0.0, origin=PeerOrigin.INCOMING)
    assert peers.update_port(EPHEMERAL, 6881, 0.0) == LISTEN
    assert set(peers._entries) == {A, LISTEN}
    assert peers.statistics().evicted == 0


# -- the peers kept for the next run ---------------------------------------------------------


def test_best_ranks_connected_then_once_connected_and_leaves_out_the_useless() -> None:
    peers = PeerList(max_failcount=2)
    never, once, now, dead, incoming, banned = (at(f"10.0.1.{i}:6881") for i in range(1, 7))
    for address in (never, once, now, dead, banned):
        peers.add(address, PeerOrigin.TRACKER, 0.0)
    peers.connected(once, 0.0)
    peers.disconnected(once, 1.0)
    peers.connected(now, 0.0)
    peers.connected(banned, 0.0)
    peers.ban(banned.host)
    for _ in range(2):
        peers.connect_candidates(5, 1000.0)
        peers.dial_failed(dead, 1000.0)
    peers.connected(incoming, 0.0, origin=PeerOrigin.INCOMING)
    assert peers.best(10) == [now, once, never]
    assert peers.best(2) == [now, once]
    assert peers.best(0) == []
    assert peers.banned_hosts() == [banned.host]


# -- any sequence of operations -------------------------------------------------------------

HOSTS = [IPv4Address(f"10.0.{i}.{j}") for i in range(2) for j in range(1, 4)]
ADDRESSES = [PeerAddress(host, port) for host in HOSTS for port in (6881, 6882)]


class PeerListMachine(RuleBasedStateMachine):
    """Bounds, bans and pending dials hold whatever the owner and the sources do."""

    def __init__(self) -> None:
        super().__init__()
        self.peers = PeerList(max_size=5, max_failcount=2, min_reconnect_time=3.0, dial_timeout=7.0)
        self.now = 0.0
        self.pending: set[PeerAddress] = set()
        self.banned: set[IPv4Address] = set()

    @rule(
        address=st.sampled_from(ADDRESSES),
        origin=st.sampled_from(list(PeerOrigin)),
        swarm=st.sampled_from([None, b"1" * 20, b"2" * 20]),
    )
    def add(self, address: PeerAddress, origin: PeerOrigin, swarm: bytes | None) -> None:
        added = self.peers.add(address, origin, self.now, swarm_id=swarm)
        if address.host in self.banned:
            assert not added

    @rule(count=st.integers(0, 4), seed=st.booleans())
    def candidates(self, count: int, seed: bool) -> None:
        before = {
            a for a, e in self.peers._pending.items() if self.now - (e.dial_started or 0) < 7.0
        }
        got = self.peers.connect_candidates(count, self.now, seed=seed)
        assert len(got) <= count
        assert len(set(got)) == len(got)
        assert not set(got) & before  # never twice while its dial is pending
        for address in got:
            assert address.host not in self.banned
            entry = self.peers.entry(address)
            assert entry is not None
            assert not entry.connected
            assert not (seed and entry.seed)

    @precondition(lambda self: self.peers.dialling > 0)
    @rule(data=st.data(), outcome=st.sampled_from(["failed", "cancelled", "connected"]))
    def outcome(self, data: st.DataObject, outcome: str) -> None:
        address = data.draw(st.sampled_from(sorted(self.peers._pending, key=str)))
        if outcome == "failed":
            self.peers.dial_failed(address, self.now)
        elif outcome == "cancelled":
            self.peers.dial_cancelled(address, self.now)
        else:
            self.peers.connected(address, self.now)

    @rule(address=st.sampled_from(ADDRESSES), incoming=st.booleans())
    def connected(self, address: PeerAddress, incoming: bool) -> None:
        origin = PeerOrigin.INCOMING if incoming else PeerOrigin.NONE
        self.peers.connected(address, self.now, origin=origin)

    @rule(address=st.sampled_from(ADDRESSES), failed=st.booleans())
    def disconnected(self, address: PeerAddress, failed: bool) -> None:
        self.peers.disconnected(address, self.now, failed=failed)

    @rule(address=st.sampled_from(ADDRESSES), seed=st.booleans())
    def mark_seed(self, address: PeerAddress, seed: bool) -> None:
        self.peers.mark_seed(address, seed)

    @rule(address=st.sampled_from(ADDRESSES), port=st.sampled_from([0, 6881, 6882, 7000]))
    def update_port(self, address: PeerAddress, port: int) -> None:
        listed = self.peers.update_port(address, port, self.now)
        if listed is not None:
            entry = self.peers.entry(listed)
            assert entry is not None
            assert entry.connected
            assert listed.host not in self.banned

    @rule(count=st.integers(0, 6))
    def best(self, count: int) -> None:
        kept = self.peers.best(count)
        assert len(kept) <= count
        assert len(set(kept)) == len(kept)
        for address in kept:
            entry = self.peers.entry(address)
            assert entry is not None
            assert entry.failcount < 2
            assert address.host not in self.banned

    @rule(host=st.sampled_from(HOSTS))
    def ban(self, host: IPv4Address) -> None:
        self.peers.ban(host)
        self.banned.add(host)

    @rule(address=st.sampled_from(ADDRESSES))
    def remove(self, address: PeerAddress) -> None:
        self.peers.remove(address)

    @rule(ours=st.sampled_from([at("1.2.3.4:1"), at("10.0.0.1:6881"), at("[::1]:1")]))
    def our_address(self, ours: PeerAddress) -> None:
        self.peers.set_our_addresses([ours])

    @rule(seconds=st.sampled_from([0.5, 3.0, 10.0]))
    def wait(self, seconds: float) -> None:
        self.now += seconds

    @invariant()
    def bounded(self) -> None:
        stats = self.peers.statistics()
        assert len(self.peers) <= 5
        assert stats.dialling <= len(self.peers)
        assert set(self.peers._pending) <= set(self.peers._entries)
        for entry in self.peers.entries():
            assert 0 <= entry.failcount <= 2
            assert not (entry.dialling and entry.connected)
            assert self.peers.is_dialling(entry.address) == entry.dialling
            # A banned host keeps only the entries still connected (by the model's bans and
            # by the list's own: connect_candidates relies on it and looks for no ban).
            assert entry.address.host not in self.banned or entry.connected
            assert not self.peers.is_banned(entry.address.host) or entry.connected


TestPeerListMachine = PeerListMachine.TestCase
TestPeerListMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


@given(st.integers(0, 1 << 12))
def test_source_rank_table_is_the_sum_of_the_flags_ranks(value: int) -> None:
    origin = PeerOrigin(value)  # bits beyond the flags' too: an IntFlag keeps them
    expected = sum(rank for flag, rank in _SOURCE_RANK if flag in origin)
    assert _source_rank(origin) == expected
