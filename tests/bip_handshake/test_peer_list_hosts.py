"""PeerList: one host's many ports, link-local addresses, and the scan skipped while idle."""

from __future__ import annotations

import math
from ipaddress import IPv6Address

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from bip_handshake import PeerAddress
from bip_handshake._peer_list import DEFAULT_MAX_PER_HOST, PeerList, PeerOrigin, _Entry


def at(text: str) -> PeerAddress:
    return PeerAddress.parse(text)


def ports_of(host: str, count: int, first: int = 1000) -> list[PeerAddress]:
    return [at(f"{host}:{port}") for port in range(first, first + count)]


# -- one host under many ports ----------------------------------------------------------------


@pytest.mark.parametrize("max_per_host", [1, DEFAULT_MAX_PER_HOST])
def test_one_host_under_3000_ports_is_dialled_at_most_max_per_host(max_per_host: int) -> None:
    peers = PeerList(max_per_host=max_per_host)
    peers.add_many(ports_of("203.0.113.5", 3000), PeerOrigin.PEX, 0.0)
    assert len(peers) == max_per_host
    dials = peers.connect_candidates(200, 0.0)
    assert len(dials) == max_per_host
    # More ports while those dials are pending change nothing: no entry may move.
    assert peers.add_many(ports_of("203.0.113.5", 100, 5000), PeerOrigin.TRACKER, 0.0) == 0
    assert len(peers) == max_per_host
    assert peers.connect_candidates(200, 0.0) == []
    # Other hosts are not affected.
    assert peers.add(at("203.0.113.6:1000"), PeerOrigin.PEX, 0.0)


def test_a_new_port_moves_the_oldest_entry_with_its_history() -> None:
    peers = PeerList(max_per_host=1, min_reconnect_time=10.0)
    old, new = at("10.0.0.1:6881"), at("10.0.0.1:7000")
    peers.add(old, PeerOrigin.TRACKER, 0.0)
    assert peers.connect_candidates(1, 0.0) == [old]
    peers.dial_failed(old, 0.0)
    assert peers.add(new, PeerOrigin.PEX, 1.0)  # libtorrent's update_peer: the peer moved
    assert old not in peers
    entry = peers.entry(new)
    assert entry is not None
    assert entry.origin == PeerOrigin.TRACKER | PeerOrigin.PEX
    assert entry.failcount == 1  # a new port buys no new tries
    assert peers.connect_candidates(1, 19.0) == []
    assert peers.connect_candidates(1, 20.0) == [new]
    peers.ban(new.host)
    assert len(peers) == 0


def test_connected_user_and_incoming_entries_stay_where_they_are() -> None:
    peers = PeerList(max_per_host=1)
    user, connected = at("10.0.0.1:6881"), at("10.0.0.2:6881")
    peers.add(user, PeerOrigin.USER, 0.0)
    peers.add(connected, PeerOrigin.TRACKER, 0.0)
    peers.connected(connected, 0.0)
    assert not peers.add(at("10.0.0.1:7000"), PeerOrigin.PEX, 0.0)
    assert not peers.add(at("10.0.0.2:7000"), PeerOrigin.PEX, 0.0)
    assert user in peers
    assert connected in peers
    # The user's own addresses are not capped; nor are connections.
    assert peers.add(at("10.0.0.1:7001"), PeerOrigin.USER, 0.0)
    assert peers.connected(at("10.0.0.2:7002"), 0.0)
    assert len(peers) == 4
    # An entry of an incoming connection is never dialled: the cap does not count it.
    ephemeral = at("10.0.0.3:51234")
    peers.connected(ephemeral, 0.0, origin=PeerOrigin.INCOMING)
    assert peers.add(at("10.0.0.3:6881"), PeerOrigin.DHT, 0.0)
    assert ephemeral in peers


def test_update_port_is_not_capped_and_the_host_index_follows() -> None:
    peers = PeerList(max_per_host=1)
    listed, ephemeral = at("10.0.0.1:6881"), at("10.0.0.1:51234")
    peers.add(listed, PeerOrigin.TRACKER, 0.0)
    peers.connected(ephemeral, 0.0, origin=PeerOrigin.INCOMING)
    assert peers.update_port(ephemeral, 7000, 0.0) == at("10.0.0.1:7000")
    assert len(peers) == 2
    assert peers.ban(listed.host) == 1  # the one not connected
    peers.disconnected(at("10.0.0.1:7000"), 1.0)
    assert len(peers) == 0


def test_a_made_up_port_never_takes_a_proven_one() -> None:
    # A hostile PEX peer names a port of a host we connected to: the port that worked stays,
    # with what it proved; the unproven entry moves instead (its failure kept).
    peers = PeerList()
    real, other = at("203.0.113.5:6881"), at("203.0.113.5:6882")
    peers.add_many([real, other], PeerOrigin.TRACKER, 0.0)
    peers.connect_candidates(5, 0.0)
    peers.connected(real, 1.0)
    peers.disconnected(real, 2.0)
    peers.dial_failed(other, 0.0)
    made_up = at("203.0.113.5:1")
    assert peers.add(made_up, PeerOrigin.PEX, 3.0)
    assert real in peers
    assert other not in peers
    moved = peers.entry(made_up)
    assert moved is not None
    assert moved.failcount == 1
    assert peers.best(1) == [real]
    # Once the moved entry is proven too, a further made-up port has nothing to move.
    peers.connected(made_up, 4.0)
    peers.disconnected(made_up, 5.0)
    assert not peers.add(at("203.0.113.5:2"), PeerOrigin.PEX, 6.0)
    assert set(peers.best(5)) == {real, made_up}


def test_a_listening_port_is_not_moved_and_connected_entries_are_the_hosts_youngest() -> None:
    peers = PeerList(max_per_host=2)
    listed, ephemeral = at("10.0.0.1:6881"), at("10.0.0.1:51234")
    peers.add(listed, PeerOrigin.TRACKER, 0.0)
    peers.connected(ephemeral, 0.0, origin=PeerOrigin.INCOMING)
    listen = peers.update_port(ephemeral, 7000, 0.0)  # the port the peer says it listens on
    assert listen == at("10.0.0.1:7000")
    peers.disconnected(listen, 1.0)
    # The host's oldest is the tracker's entry, and it moves; the listening port stays.
    assert peers.add(at("10.0.0.1:9"), PeerOrigin.PEX, 2.0)
    assert listed not in peers
    assert listen in peers
    # connected() makes an entry the host's youngest too, so "oldest" means the same in both.
    a, b = at("10.0.0.2:1"), at("10.0.0.2:2")
    peers.add_many([a, b], PeerOrigin.DHT, 0.0)
    peers.connected(a, 3.0)
    assert list(peers._hosts[a.host]) == [b, a]
    assert list(peers._entries)[-1] == a


def test_no_cap_with_max_per_host_none() -> None:
    peers = PeerList(max_per_host=None)
    assert peers.add_many(ports_of("127.0.0.1", 50), PeerOrigin.PEX, 0.0) == 50
    assert len(peers.connect_candidates(100, 0.0)) == 50
    with pytest.raises(ValueError, match="max_per_host"):
        PeerList(max_per_host=0)


def test_bounds_changed_back_and_forth_do_not_hide_a_candidate() -> None:
    peers = PeerList(max_failcount=3, min_reconnect_time=60.0)
    a = at("10.0.0.1:6881")
    peers.add(a, PeerOrigin.TRACKER, 0.0)
    assert peers.connect_candidates(5, 0.0) == [a]
    peers.connected(a, 0.0)
    assert peers.connect_candidates(5, 1.0) == []  # connected: nothing until a change
    peers.max_failcount = 1
    peers.disconnected(a, 2.0, failed=True)  # given up under a bound of 1
    peers.max_failcount = 3
    assert peers.connect_candidates(5, 1000.0) == [a]
    peers.dial_failed(a, 1000.0)  # failcount 2: ready at 1000 + 180
    assert peers.connect_candidates(5, 1001.0) == []
    peers.min_reconnect_time = 0.5
    assert peers.connect_candidates(5, 1002.0) == [a]
    with pytest.raises(ValueError, match="max_failcount"):
        peers.max_failcount = 0
    with pytest.raises(TypeError, match="min_reconnect_time"):
        peers.min_reconnect_time = "1"  # type: ignore[assignment]


# -- link-local -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["[fe80::1]:6881", "[febf:ffff::1]:6881"])
def test_link_local_addresses_are_refused(text: str) -> None:
    peers = PeerList()
    assert not peers.add(at(text), PeerOrigin.PEX, 0.0)
    assert len(peers) == 0
    incoming = PeerAddress(IPv6Address("2001:db8::1"), 51234)
    peers.connected(incoming, 0.0, origin=PeerOrigin.INCOMING)
    assert peers.update_port(incoming, 6881, 0.0) is not None  # a global address is fine
    assert peers.add(at("[fec0::1]:6881"), PeerOrigin.PEX, 0.0)  # outside fe80::/10
    ephemeral = at(text.replace("6881", "51234"))
    peers.connected(ephemeral, 0.0, origin=PeerOrigin.INCOMING)
    assert peers.update_port(ephemeral, 6881, 0.0) is None
    assert at(text) not in peers


# -- the scan skipped while no entry can be a candidate ---------------------------------------


def count_scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the entries connect_candidates looks at (one _ready_time each)."""
    looked = [0]
    original = PeerList._ready_time

    def counting(self: PeerList, entry: _Entry, seed: bool) -> float:
        looked[0] += 1
        return original(self, entry, seed)

    monkeypatch.setattr(PeerList, "_ready_time", counting)
    return looked


def test_a_list_of_waiting_entries_is_not_scanned_again(monkeypatch: pytest.MonkeyPatch) -> None:
    peers = PeerList(min_reconnect_time=60.0, max_failcount=3)
    addresses = [at(f"10.0.{i >> 8}.{i & 255}:6881") for i in range(1, 1001)]
    peers.add_many(addresses, PeerOrigin.TRACKER, 0.0)
    for address in peers.connect_candidates(1000, 0.0):
        peers.dial_failed(address, 0.0)
    looked = count_scans(monkeypatch)
    assert peers.connect_candidates(1, 1.0) == []
    assert looked[0] == 0  # the failures said when the first wait ends
    peers.add(addresses[0], PeerOrigin.PEX, 1.0)  # a change: look again, once
    assert peers.connect_candidates(1, 1.0) == []
    assert looked[0] == 1000
    for now in (2.0, 50.0, 119.0):
        assert peers.connect_candidates(1, now) == []
    assert looked[0] == 1000  # nothing scanned: every entry waits until 120 s
    assert len(peers.connect_candidates(5, 120.0)) == 5  # and found when its wait ends


def test_changes_that_make_a_candidate_are_seen_at_once() -> None:
    peers = PeerList(min_reconnect_time=60.0)
    a, b, c = at("10.0.0.1:6881"), at("10.0.0.2:6881"), at("10.0.0.3:6881")
    peers.add_many([a, b], PeerOrigin.TRACKER, 0.0)
    assert peers.connect_candidates(5, 0.0, seed=True) == [a, b]
    peers.connected(a, 0.0)
    peers.mark_seed(a)
    peers.disconnected(a, 0.0, wait=False)  # a seed: not for a seeding torrent
    assert peers.connect_candidates(5, 1.0, seed=True) == []
    assert peers.connect_candidates(5, 1.0) == [a]  # but for a downloading one
    peers.add(c, PeerOrigin.PEX, 2.0)  # a new entry
    assert peers.connect_candidates(5, 2.0) == [c]
    peers.dial_cancelled(b, 3.0)  # b waits from its attempt at 0 s
    assert peers.connect_candidates(5, 59.0) == []
    assert peers.connect_candidates(5, 60.0) == [b]
    peers.dial_failed(b, 61.0)
    peers.add(b, PeerOrigin.USER, 62.0)  # the user clears its wait
    assert peers.connect_candidates(5, 62.0) == [b]
    peers.min_reconnect_time = 1.0  # the bounds are the owner's to change
    peers.dial_failed(b, 62.0)
    peers.dial_failed(c, 62.0)
    assert set(peers.connect_candidates(5, 66.0)) == {b, c}


ADDRESSES = [at(f"10.0.0.{i}:{port}") for i in range(1, 4) for port in (6881, 6882, 6883)]


class IdleBoundMachine(RuleBasedStateMachine):
    """Whenever connect_candidates skips its scan, a scan would have found nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.peers = PeerList(max_size=6, max_failcount=2, min_reconnect_time=3.0)
        self.now = 0.0

    @rule(address=st.sampled_from(ADDRESSES), origin=st.sampled_from(list(PeerOrigin)))
    def add(self, address: PeerAddress, origin: PeerOrigin) -> None:
        self.peers.add(address, origin, self.now)

    @rule(count=st.integers(1, 3), seed=st.booleans())
    def candidates(self, count: int, seed: bool) -> None:
        peers = self.peers
        peers._expire(self.now)
        skipped = peers._idle_seed == seed and self.now < peers._idle_until
        ready = [e for e in peers._entries.values() if peers._ready_time(e, seed) <= self.now]
        got = peers.connect_candidates(count, self.now, seed=seed)
        if skipped:
            assert ready == []
            assert got == []
        else:
            assert len(got) == min(count, len(ready))

    @rule(
        address=st.sampled_from(ADDRESSES),
        what=st.sampled_from(["failed", "cancelled", "connected", "incoming", "gone", "seed"]),
        flag=st.booleans(),
    )
    def report(self, address: PeerAddress, what: str, flag: bool) -> None:
        peers, now = self.peers, self.now
        if what == "failed":
            peers.dial_failed(address, now)
        elif what == "cancelled":
            peers.dial_cancelled(address, now)
        elif what in ("connected", "incoming"):
            origin = PeerOrigin.INCOMING if what == "incoming" else PeerOrigin.NONE
            peers.connected(address, now, origin=origin)
        elif what == "gone":
            peers.disconnected(address, now, failed=flag, wait=not flag)
        else:
            peers.mark_seed(address, flag)

    @rule(address=st.sampled_from(ADDRESSES), port=st.sampled_from([6881, 6882, 7000]))
    def update_port(self, address: PeerAddress, port: int) -> None:
        self.peers.update_port(address, port, self.now)

    @rule(address=st.sampled_from(ADDRESSES), ban=st.booleans())
    def forget(self, address: PeerAddress, ban: bool) -> None:
        if ban:
            self.peers.ban(address.host)
        else:
            self.peers.remove(address)

    @rule(max_failcount=st.sampled_from([1, 2, 3]), min_reconnect_time=st.sampled_from([1.0, 3.0]))
    def bounds(self, max_failcount: int, min_reconnect_time: float) -> None:
        self.peers.max_failcount = max_failcount
        self.peers.min_reconnect_time = min_reconnect_time

    @rule(seconds=st.sampled_from([0.5, 3.0, 7.0]))
    def wait(self, seconds: float) -> None:
        self.now += seconds

    @invariant()
    def host_index_matches(self) -> None:
        peers = self.peers
        indexed = {a: e for entries in peers._hosts.values() for a, e in entries.items()}
        assert indexed == peers._entries
        assert all(peers._hosts.values())
        assert all(a.host == h for h, entries in peers._hosts.items() for a in entries)
        # The bound is one: no entry can be a candidate before it.
        if peers._idle_seed is not None:
            seed = peers._idle_seed
            times = [peers._ready_time(e, seed) for e in peers._entries.values()]
            soonest = min(times, default=math.inf)
            assert peers._idle_until <= soonest or peers._idle_until == -math.inf


TestIdleBoundMachine = IdleBoundMachine.TestCase
TestIdleBoundMachine.settings = settings(max_examples=80, stateful_step_count=30, deadline=None)
