"""The routing table: bucket splits, BEP 5 node states, replacements, limits, save / load."""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from ipaddress import IPv4Address, IPv6Address
from random import Random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from bip_bencode import encode
from bip_dht._errors import DHTError, LocalProtocolError
from bip_dht._node_id import NodeId
from bip_dht._routing import (
    BUCKET_SIZE,
    GOOD_INTERVAL,
    Admission,
    NodeState,
    RefreshTarget,
    RoutingStateError,
    RoutingTable,
    bep42_filter,
)
from bip_handshake import NodeInfo, PeerAddress

OWN = NodeId(bytes(20))
T0 = 1000.0


def node(number: int, ip: str | None = None, port: int = 6881) -> NodeInfo:
    """A node with id *number* at 10.x.y.z derived from the number unless *ip* is given."""
    host: IPv4Address | IPv6Address
    if ip is None:
        digest = hashlib.sha1(number.to_bytes(20, "big")).digest()
        host = IPv4Address(b"\x0a" + digest[:3])
    elif ":" in ip:
        host = IPv6Address(ip)
    else:
        host = IPv4Address(ip)
    return NodeInfo(NodeId.from_int(number).value, PeerAddress(host, port))


def far(i: int) -> int:
    """Ids sharing no leading bit with OWN (bucket 0)."""
    return (1 << 159) | i


def table(**kwargs: Any) -> RoutingTable:
    kwargs.setdefault("family", 4)
    kwargs.setdefault("rng", Random(7))
    kwargs.setdefault("now", T0)
    return RoutingTable(OWN, **kwargs)


def fill(t: RoutingTable, ids: list[int], now: float = T0, responded: bool = True) -> None:
    for number in ids:
        t.heard_from(node(number), now, responded)


def restored(nodes: list[NodeInfo], now: float = T0) -> RoutingTable:
    """A table holding *nodes* in their buckets unconfirmed, as a table loaded from a save
    holds them (a node that only queried us no longer gets into a bucket)."""
    t = table()
    for n in nodes:
        t.heard_from(n, now, True)
    return RoutingTable.load(t.save(now), rng=Random(7), now=now)


# -- layout ------------------------------------------------------------------------------------


def test_empty_table() -> None:
    t = table()
    assert len(t) == 0
    assert t.bucket_count == 1
    assert t.closest(OWN, T0) == []
    assert t.family == 4
    assert t.own_id == OWN
    assert t.nodes_to_ping(T0) == []


def test_split_only_the_bucket_holding_our_id() -> None:
    t = table()
    fill(t, [far(i) for i in range(8)])
    assert (len(t), t.bucket_count) == (8, 1)
    # the ninth far node splits the last bucket; it still belongs to bucket 0, which is full
    assert t.heard_from(node(far(8)), T0, True) is Admission.REPLACEMENT
    assert t.bucket_count == 2
    # a node sharing 5 bits with us lands in the new last bucket
    assert t.heard_from(node(1 << 154), T0, True) is Admission.ADDED
    assert t.bucket_index(NodeId.from_int(1 << 154)) == 1
    # bucket 0 can no longer split: it is not the last one
    assert t.heard_from(node(far(9)), T0, True) is Admission.REPLACEMENT
    assert t.bucket_count == 2
    assert len(t) == 9


def test_split_redistributes_and_goes_as_deep_as_needed() -> None:
    t = table()
    fill(t, [1 << (150 - i) for i in range(8)])  # prefix lengths 9..16, one each
    assert t.bucket_count == 1
    assert t.heard_from(node(1 << 140), T0, True) is Admission.ADDED
    # the last bucket split until the nine nodes no longer shared one bucket
    entries = list(t.entries(T0))
    assert all(e.bucket == t.bucket_index(e.node.node_id) for e in entries)
    assert t.bucket_count == 11
    assert Counter(e.bucket for e in entries) == {9: 1, 10: 8}


def test_bucket_index_and_limits() -> None:
    t = table()
    assert t.bucket_index(NodeId.from_int(1)) == 0  # only one bucket so far
    t2 = table(k=1)
    for shift in range(159, -1, -1):
        t2.heard_from(node(1 << shift), T0, True)
    assert t2.bucket_count == 160
    assert len(t2) == 160
    assert t2.bucket_index(NodeId.from_int(1)) == 159


# -- states ------------------------------------------------------------------------------------


def test_states_follow_bep5() -> None:
    t = table()
    n = node(far(1))
    t.heard_from(n, T0, True)
    assert t.state_of(n.node_id, T0 + GOOD_INTERVAL - 1) is NodeState.GOOD
    assert t.state_of(n.node_id, T0 + GOOD_INTERVAL) is NodeState.QUESTIONABLE
    # it responded once, so a query from it makes it good again
    t.heard_from(n, T0 + 2000, False)
    assert t.state_of(n.node_id, T0 + 2000) is NodeState.GOOD
    assert t.state_of(n.node_id, T0 + 2000 + GOOD_INTERVAL) is NodeState.QUESTIONABLE
    # failures: questionable until the third in a row, a response clears them
    assert t.failed(n, T0 + 3000)
    assert t.state_of(n.node_id, T0 + 3000) is NodeState.QUESTIONABLE
    t.heard_from(n, T0 + 3001, True)
    assert t.state_of(n.node_id, T0 + 3001) is NodeState.GOOD
    for _ in range(3):
        t.failed(n, T0 + 3002)
    assert t.state_of(n.node_id, T0 + 3002) is NodeState.BAD
    # with no replacement the bad node stays (it may come back) but is never offered
    assert len(t) == 1
    assert t.closest(OWN, T0 + 3002) == []
    t.heard_from(n, T0 + 3003, True)
    assert t.state_of(n.node_id, T0 + 3003) is NodeState.GOOD


def test_a_node_that_only_queried_us_waits_as_a_candidate() -> None:
    # libtorrent's add_node_impl: only a node that answered us enters a bucket (or splits
    # one); a querier may be a forged source address.
    t = table()
    n = node(far(1))
    assert t.heard_from(n, T0, False) is Admission.CANDIDATE
    assert t.heard_from(n, T0 + 1, False) is Admission.CANDIDATE  # asking again changes nothing
    assert (len(t), t.candidate_count, t.state_of(n.node_id, T0)) == (0, 1, None)
    assert [q.node for q in t.refresh_queries(T0 + 1, 4, 10.0)] == [n]  # queried by the refresh
    assert t.heard_from(n, T0 + 2, True) is Admission.ADDED  # its answer admits it
    assert t.state_of(n.node_id, T0 + 2) is NodeState.GOOD
    # queriers never split the last bucket; in a full bucket they wait in its cache
    crowd = table()
    assert all(crowd.heard_from(node(i << 100), T0, False) for i in range(1, 20))
    assert (len(crowd), crowd.bucket_count) == (0, 1)
    full = table()
    full.heard_from(node(1 << 150), T0, True)
    fill(full, [far(i) for i in range(8)])
    assert full.heard_from(node(far(9)), T0, False) is Admission.REPLACEMENT
    assert full.candidate_count == 0


def test_a_node_that_never_responded_is_dropped_at_its_first_failure() -> None:
    n = node(far(1))
    t = restored([n])
    assert t.state_of(n.node_id, T0) is NodeState.QUESTIONABLE
    assert t.nodes_to_ping(T0) == [n]
    # it never answered: one failure makes it bad and it is dropped
    assert t.failed(n, T0)
    assert t.state_of(n.node_id, T0) is None
    assert len(t) == 0
    assert not t.failed(n, T0)


def test_max_failures_is_configurable() -> None:
    t = table(max_failures=1)
    n = node(far(1))
    t.heard_from(n, T0, True)
    t.failed(n, T0)
    assert t.state_of(n.node_id, T0) is NodeState.BAD


# -- full buckets and replacements ------------------------------------------------------------


def test_full_bucket_of_good_nodes_sends_newcomers_to_the_bounded_cache() -> None:
    t = table()
    t.heard_from(node(1 << 150), T0, True)  # keeps the far bucket from being the last one
    fill(t, [far(i) for i in range(8)])
    fill(t, [far(i) for i in range(8, 16)])
    assert len(t) == 9
    replacements = [e for e in t.entries(T0) if not e.in_bucket]
    assert len(replacements) == BUCKET_SIZE
    # an unconfirmed newcomer does not displace confirmed candidates
    assert t.heard_from(node(far(16)), T0 + 1, False) is Admission.REJECTED
    # a confirmed one displaces the least recently seen
    assert t.heard_from(node(far(17)), T0 + 1, True) is Admission.REPLACEMENT
    assert t.state_of(NodeId.from_int(far(8)), T0 + 1) is None
    assert sum(not e.in_bucket for e in t.entries(T0 + 1)) == BUCKET_SIZE


def test_bad_node_is_replaced_by_best_replacement() -> None:
    t = table()
    t.heard_from(node(1 << 150), T0, True)
    fill(t, [far(i) for i in range(8)])
    t.heard_from(node(far(20)), T0 + 5, False)  # unconfirmed candidate
    t.heard_from(node(far(21)), T0 + 1, True)  # confirmed candidate
    victim = node(far(3))
    for _ in range(3):
        assert t.failed(victim, T0 + 10)
    assert t.state_of(victim.node_id, T0 + 10) is None
    in_bucket = {e.node for e in t.entries(T0 + 10) if e.in_bucket}
    assert node(far(21)) in in_bucket
    assert node(far(20)) not in in_bucket


def test_newcomer_takes_a_bad_nodes_place() -> None:
    t = table()
    t.heard_from(node(1 << 150), T0, True)
    fill(t, [far(i) for i in range(8)])
    victim = node(far(2))
    for _ in range(3):
        t.failed(victim, T0)
    assert t.state_of(victim.node_id, T0) is NodeState.BAD  # no replacement: kept
    # one that only queried us waits in the cache; one that answered takes the place
    assert t.heard_from(node(far(31)), T0, False) is Admission.REPLACEMENT
    assert t.state_of(victim.node_id, T0) is NodeState.BAD
    assert t.heard_from(node(far(30)), T0, True) is Admission.ADDED
    assert t.state_of(victim.node_id, T0) is None


def test_confirmed_newcomer_takes_an_unconfirmed_nodes_place() -> None:
    t = restored([node(far(7))])  # unconfirmed, in the bucket
    t.heard_from(node(1 << 150), T0, True)
    fill(t, [far(i) for i in range(7)])
    assert t.heard_from(node(far(8)), T0, False) is Admission.REPLACEMENT
    assert t.heard_from(node(far(9)), T0, True) is Admission.ADDED
    assert t.state_of(NodeId.from_int(far(7)), T0) is None


def test_replacement_that_responds_is_promoted_when_it_outranks() -> None:
    t = restored([node(far(7))])  # unconfirmed, in the bucket
    t.heard_from(node(1 << 150), T0, True)
    fill(t, [far(i) for i in range(7)])
    assert t.heard_from(node(far(8)), T0, False) is Admission.REPLACEMENT  # in the cache
    assert t.heard_from(node(far(8)), T0 + 1, True) is Admission.UPDATED
    held = {e.node.node_id: e.in_bucket for e in t.entries(T0 + 1)}
    assert held[NodeId.from_int(far(8)).value] is True
    assert NodeId.from_int(far(7)).value not in held
    # a failed replacement is dropped at once... unless it was confirmed and has failures left
    t.heard_from(node(far(9)), T0, False)
    assert t.failed(node(far(9)), T0)
    assert t.state_of(NodeId.from_int(far(9)), T0) is None


def test_remove_refills_from_the_cache() -> None:
    t = table()
    t.heard_from(node(1 << 150), T0, True)
    fill(t, [far(i) for i in range(9)])
    assert t.remove(NodeId.from_int(far(0)), T0)
    assert not t.remove(NodeId.from_int(far(0)), T0)
    assert all(e.in_bucket for e in t.entries(T0))
    assert len(t) == 9


# -- admission rules ---------------------------------------------------------------------------


def test_one_node_per_ip_by_default() -> None:
    t = table()
    assert t.heard_from(node(far(1), "1.2.3.4"), T0, True) is Admission.ADDED
    assert t.heard_from(node(far(2), "1.2.3.4", 9999), T0, True) is Admission.REJECTED
    loose = table(restrict_ips=False)
    loose.heard_from(node(far(1), "1.2.3.4"), T0, True)
    assert loose.heard_from(node(far(2), "1.2.3.4", 9999), T0, True) is Admission.ADDED


def test_ip_is_freed_when_a_node_leaves() -> None:
    t = restored([node(far(1), "1.2.3.4")])
    t.failed(node(far(1), "1.2.3.4"), T0)
    assert t.heard_from(node(far(2), "1.2.3.4"), T0, True) is Admission.ADDED


def test_known_id_at_another_address() -> None:
    t = restored([node(far(2), "2.2.2.2")])
    t.heard_from(node(far(1), "1.2.3.4"), T0, True)
    # a confirmed node keeps its address against a claimant
    assert t.heard_from(node(far(1), "5.6.7.8"), T0, True) is Admission.REJECTED
    assert not t.failed(node(far(1), "5.6.7.8"), T0)
    # an unconfirmed one follows a node that answers from a new address
    assert t.heard_from(node(far(2), "3.3.3.3"), T0, False) is Admission.REJECTED
    assert t.heard_from(node(far(2), "3.3.3.3"), T0, True) is Admission.UPDATED
    assert {str(e.node.address) for e in t.entries(T0)} == {"1.2.3.4:6881", "3.3.3.3:6881"}
    assert t.heard_from(node(far(3), "2.2.2.2"), T0, True) is Admission.ADDED


def test_rejects_own_id_and_unusable_addresses() -> None:
    t = table()
    assert t.heard_from(node(0, "1.2.3.4"), T0, True) is Admission.REJECTED
    assert t.heard_from(node(far(1), "1.2.3.4", 0), T0, True) is Admission.REJECTED
    assert t.heard_from(node(far(1), "0.0.0.0"), T0, True) is Admission.REJECTED
    assert len(t) == 0


def test_bep42_filter() -> None:
    t = table(node_filter=bep42_filter)
    public = IPv4Address("124.31.75.21")
    assert t.heard_from(node(far(1), str(public)), T0, True) is Admission.REJECTED
    good = NodeInfo(NodeId.for_ip(public, Random(1)).value, PeerAddress(public, 1))
    assert t.heard_from(good, T0, True) is Admission.ADDED
    assert t.heard_from(node(far(2), "10.0.0.9"), T0, True) is Admission.ADDED  # exempt


def test_families() -> None:
    t = table()
    with pytest.raises(LocalProtocolError):
        t.heard_from(node(far(1), "2001:db8::1"), T0, True)
    with pytest.raises(LocalProtocolError):
        t.failed(node(far(1), "2001:db8::1"), T0)
    # a mapped IPv4 address is IPv4, and shares the IP limit with the plain form
    assert t.heard_from(node(far(1), "::ffff:1.2.3.4"), T0, True) is Admission.ADDED
    assert t.heard_from(node(far(2), "1.2.3.4"), T0, True) is Admission.REJECTED
    t6 = table(family=6)
    assert t6.heard_from(node(far(1), "2001:db8::1"), T0, True) is Admission.ADDED
    with pytest.raises(LocalProtocolError):
        t6.heard_from(node(far(2), "1.2.3.4"), T0, True)


@pytest.mark.parametrize(
    "kwargs",
    [{"family": 5}, {"family": True}, {"k": 0}, {"k": True}, {"max_failures": 0}, {"k": 2000}],
)
def test_bad_configuration(kwargs: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        table(**kwargs)
    with pytest.raises(LocalProtocolError):
        RoutingTable(OWN.value, family=4, rng=Random())  # type: ignore[arg-type]


def test_misuse() -> None:
    t = table()
    with pytest.raises(LocalProtocolError):
        t.heard_from("node", T0, True)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        t.closest(OWN.value, T0)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        t.closest(OWN, T0, -1)
    with pytest.raises(LocalProtocolError):
        t.refresh_started(1, T0)
    with pytest.raises(LocalProtocolError):
        t.state_of(b"short", T0)


# -- queries ------------------------------------------------------------------------------------


def test_closest_prefers_good_nodes_then_sorts_by_distance() -> None:
    t = restored([node(1 << 140)])  # questionable
    for i in range(1, 6):
        t.heard_from(node(i << 100), T0, True)
    target = NodeId.from_int(3 << 100)
    assert t.closest(target, T0, 3) == [node(3 << 100), node(2 << 100), node(1 << 100)]
    # distances 0, 1, 2, 6 (5 ^ 3), 7 (4 ^ 3), then the questionable node
    order = [node(i << 100) for i in (3, 2, 1, 5, 4)]
    assert t.closest(target, T0, 7) == [*order, node(1 << 140)]
    assert t.closest(target, T0, 7, include_questionable=False) == order
    assert t.closest(target, T0, 0) == []
    # a good far node beats a questionable near one
    assert t.closest(NodeId.from_int(1 << 140), T0, 1) == [node(1 << 100)]


def test_closest_confirmed_only_is_libtorrents_rule_for_replies() -> None:
    t = restored([node(2 << 100)])  # loaded from a save: never confirmed
    t.heard_from(node(1 << 100), T0, True)  # good
    t.heard_from(node(3 << 100), T0 - GOOD_INTERVAL, True)  # confirmed long ago, no failure
    t.heard_from(node(4 << 100), T0, True)
    t.failed(node(4 << 100), T0)  # answered, then failed once: questionable
    t.heard_from(node(5 << 100), T0, True)
    assert t.state_of(node(3 << 100).node_id, T0) is NodeState.QUESTIONABLE
    target = NodeId.from_int(2 << 100)
    # by distance alone (3 ^ 2 = 1 before 1 ^ 2 = 3): a quiet confirmed node is not ranked
    # behind good ones, as libtorrent's find_node does not; include_questionable is moot
    expected = [node(3 << 100), node(1 << 100), node(5 << 100)]
    assert t.closest(target, T0, confirmed_only=True) == expected
    assert t.closest(target, T0, confirmed_only=True, include_questionable=False) == expected
    assert t.closest(target, T0, 2, confirmed_only=True) == expected[:2]
    assert t.closest(target, T0, 0, confirmed_only=True) == []
    # our own lookups still start from the unconfirmed and failed-once nodes too
    assert node(2 << 100) in t.closest(target, T0)
    assert node(4 << 100) in t.closest(target, T0)
    # the unconfirmed node answers one of our queries: from then on it is handed out; a response
    # clears a failure the same way
    t.heard_from(node(2 << 100), T0 + 1, True)
    t.heard_from(node(4 << 100), T0 + 1, True)
    served = t.closest(target, T0 + 1, confirmed_only=True)
    assert served[:2] == [node(2 << 100), node(3 << 100)]
    assert node(4 << 100) in served
    # a node loaded from a save is unconfirmed until it answers
    loaded = RoutingTable.load(t.save(T0 + 1), rng=Random(1), now=T0 + 1)
    assert loaded.closest(target, T0 + 1, confirmed_only=True) == []
    assert len(loaded.closest(target, T0 + 1)) == 5


def test_nodes_to_ping_least_recently_seen_questionable_per_bucket() -> None:
    t = table()
    t.heard_from(node(1 << 150), T0, True)
    fill(t, [far(i) for i in range(1, 8)], T0 + 10)
    t.heard_from(node(far(8)), T0 + 5, True)
    assert t.bucket_count == 2
    assert t.nodes_to_ping(T0 + 20) == []
    later = T0 + 5 + GOOD_INTERVAL
    assert t.nodes_to_ping(later) == [node(far(8)), node(1 << 150)]
    # once everything is stale, the least recently seen of each bucket
    assert t.nodes_to_ping(T0 + 10 + GOOD_INTERVAL) == [node(far(8)), node(1 << 150)]


def test_buckets_to_refresh() -> None:
    t = table()
    t.heard_from(node(1 << 150), T0, True)
    fill(t, [far(i) for i in range(8)])
    assert t.bucket_count == 2
    assert t.buckets_to_refresh(T0 + GOOD_INTERVAL - 1) == []
    due = t.buckets_to_refresh(T0 + GOOD_INTERVAL)
    assert [r.bucket for r in due] == [0, 1]
    assert all(isinstance(r, RefreshTarget) for r in due)
    assert all(t.bucket_index(r.target) == r.bucket for r in due)
    assert due[0].target.common_prefix_length(OWN) == 0
    assert due[1].target.common_prefix_length(OWN) >= 1
    t.refresh_started(0, T0 + GOOD_INTERVAL)
    # a response in bucket 1 counts as a change too
    t.heard_from(node(1 << 150), T0 + GOOD_INTERVAL, True)
    assert t.buckets_to_refresh(T0 + GOOD_INTERVAL + 1) == []
    assert [r.bucket for r in t.buckets_to_refresh(T0 + 2 * GOOD_INTERVAL)] == [0, 1]


def test_refresh_targets_come_from_the_rng() -> None:
    a = table(rng=Random(1)).buckets_to_refresh(T0 + GOOD_INTERVAL)
    b = table(rng=Random(1)).buckets_to_refresh(T0 + GOOD_INTERVAL)
    c = table(rng=Random(2)).buckets_to_refresh(T0 + GOOD_INTERVAL)
    assert a == b
    assert a != c


# -- save / load -------------------------------------------------------------------------------


def test_save_load_round_trip() -> None:
    t = table()
    t.heard_from(node(1 << 150), T0, True)
    fill(t, [far(i) for i in range(10)])
    t.heard_from(node(far(20)), T0, False)
    bad = node(far(0))
    for _ in range(3):
        t.failed(bad, T0)
    data = t.save(T0)
    loaded = RoutingTable.load(data, rng=Random(1), now=T0 + 60)
    assert loaded.own_id == OWN
    assert loaded.family == 4
    saved = {e.node for e in t.entries(T0)}
    restored = {e.node for e in loaded.entries(T0 + 60)}
    assert restored == saved
    assert all(e.state is NodeState.QUESTIONABLE for e in loaded.entries(T0 + 60))
    assert all(e.last_response is None for e in loaded.entries(T0 + 60))
    assert len(loaded.nodes_to_ping(T0 + 60)) == loaded.bucket_count
    assert loaded.save(T0 + 60) == RoutingTable.load(loaded.save(T0), rng=Random(1)).save(T0)


def test_load_with_new_id_and_ipv6() -> None:
    t = table(family=6)
    t.heard_from(node(far(1), "2001:db8::1"), T0, True)
    other = NodeId.from_int(far(1) ^ 1)
    loaded = RoutingTable.load(t.save(T0), rng=Random(1), own_id=other)
    assert loaded.own_id == other
    assert loaded.family == 6
    assert [e.bucket for e in loaded.entries(T0)] == [0]


def _state(**fields: object) -> bytes:
    base: dict[bytes, Any] = {
        b"family": 4,
        b"id": bytes(20),
        b"nodes": node(far(1)).to_compact(),
    }
    base.update({key.encode(): value for key, value in fields.items()})
    return encode({k: v for k, v in base.items() if v is not None})


def test_load_ignores_unknown_keys() -> None:
    assert len(RoutingTable.load(_state(extra=b"x"), rng=Random(0))) == 1


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"junk",
        b"le",
        b"d6:familyi4e2:id20:" + bytes(20) + b"5:nodes0:e trailing",
        _state(family=None),
        _state(family=5),
        _state(family=b"4"),
        _state(id=None),
        _state(id=bytes(19)),
        _state(id=5),
        _state(nodes=None),
        _state(nodes=b"x" * 25),
        _state(nodes=[node(far(1)).to_compact()]),
        _state(family=6),
        _state(nodes=node(far(1), "::ffff:1.2.3.4").to_compact()),
        _state(nodes=bytes(26) * 3000),
    ],
)
def test_load_rejects_malformed_state(data: bytes) -> None:
    with pytest.raises(RoutingStateError):
        RoutingTable.load(data, rng=Random(0))
    assert issubclass(RoutingStateError, DHTError)


def test_load_rejects_oversized_and_non_bytes() -> None:
    with pytest.raises(RoutingStateError):
        RoutingTable.load(b"x" * (2 << 20), rng=Random(0))
    with pytest.raises(LocalProtocolError):
        RoutingTable.load("d4:nodes0:e", rng=Random(0))  # type: ignore[arg-type]


_values = st.recursive(
    st.integers(-10, 10) | st.binary(max_size=80), lambda inner: st.lists(inner, max_size=3)
)


@given(
    st.binary(max_size=100)
    | st.dictionaries(st.sampled_from([b"family", b"id", b"nodes", b"x"]), _values).map(encode)
)
def test_load_never_raises_anything_else(data: bytes) -> None:
    with contextlib.suppress(RoutingStateError):
        RoutingTable.load(data, rng=Random(0))


def test_load_skips_duplicates_and_filtered_nodes() -> None:
    nodes = node(far(1), "1.2.3.4").to_compact() * 2 + node(far(2), "1.2.3.4").to_compact()
    nodes += node(0, "5.5.5.5").to_compact() + node(far(3), "5.5.5.6", 0).to_compact()
    loaded = RoutingTable.load(_state(nodes=nodes), rng=Random(0))
    assert [e.node for e in loaded.entries(T0)] == [node(far(1), "1.2.3.4")]
    filtered = RoutingTable.load(_state(nodes=nodes), rng=Random(0), node_filter=bep42_filter)
    assert len(filtered) == 0


# -- the invariants, under random traffic ---------------------------------------------------------

POOL_IPS = [f"{a}.{b}.0.1" for a in (1, 2) for b in range(12)]


def _id(shift: int, low: int) -> NodeId:
    return NodeId.from_int(((1 << 160) - 1) >> shift ^ low)


class TableMachine(RuleBasedStateMachine):
    """Random traffic against a small table (k=3) with colliding ids and addresses."""

    def __init__(self) -> None:
        super().__init__()
        self.restrict = True
        self.k = 3
        self.now = T0
        self.table = RoutingTable(OWN, family=4, rng=Random(0), k=self.k, now=T0)

    @rule(
        shift=st.integers(0, 159),
        low=st.integers(0, 7),
        ip=st.sampled_from(POOL_IPS),
        port=st.integers(0, 2),
        responded=st.booleans(),
    )
    def heard(self, shift: int, low: int, ip: str, port: int, responded: bool) -> None:
        info = NodeInfo(_id(shift, low).value, PeerAddress(IPv4Address(ip), 6881 + port))
        self.table.heard_from(info, self.now, responded)

    @rule(data=st.data())
    def fail_known(self, data: st.DataObject) -> None:
        held = [e.node for e in self.table.entries(self.now)]
        if held:
            self.table.failed(data.draw(st.sampled_from(held)), self.now)

    @rule(data=st.data())
    def remove_known(self, data: st.DataObject) -> None:
        held = [e.node.node_id for e in self.table.entries(self.now)]
        if held:
            assert self.table.remove(data.draw(st.sampled_from(held)), self.now)

    @rule(seconds=st.sampled_from([1.0, 60.0, GOOD_INTERVAL]))
    def tick(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def save_and_load(self) -> None:
        before = {e.node for e in self.table.entries(self.now) if e.state is not NodeState.BAD}
        loaded = RoutingTable.load(self.table.save(self.now), rng=Random(0), k=self.k)
        assert {e.node for e in loaded.entries(self.now)} <= before

    @invariant()
    def buckets_are_bounded_and_right(self) -> None:
        entries = list(self.table.entries(self.now))
        sizes = Counter((e.bucket, e.in_bucket) for e in entries)
        assert all(size <= self.k for size in sizes.values())
        assert self.table.bucket_count <= 160
        for e in entries:
            assert self.table.bucket_index(e.node.node_id) == e.bucket
        ids = [e.node.node_id for e in entries]
        assert len(ids) == len(set(ids))
        hosts = [e.node.address.host for e in entries]
        assert len(hosts) == len(set(hosts))
        assert len(self.table) == sum(e.in_bucket for e in entries)

    @invariant()
    def closest_is_the_true_closest(self) -> None:
        target = _id(self.table.bucket_count % 160, 5)
        goal = int(target)
        live = [e for e in self.table.entries(self.now) if e.in_bucket]
        good = sorted(
            (e for e in live if e.state is NodeState.GOOD),
            key=lambda e: int(NodeId(e.node.node_id)) ^ goal,
        )
        rest = sorted(
            (e for e in live if e.state is NodeState.QUESTIONABLE),
            key=lambda e: int(NodeId(e.node.node_id)) ^ goal,
        )
        chosen = (good[:8] + rest)[:8]
        expected = sorted(chosen, key=lambda e: int(NodeId(e.node.node_id)) ^ goal)
        assert self.table.closest(target, self.now) == [e.node for e in expected]

    @invariant()
    def confirmed_only_is_the_true_closest_confirmed(self) -> None:
        # libtorrent's confirmed(): responded once, no failure since; by distance alone
        target = _id(self.table.bucket_count % 160, 5)
        goal = int(target)
        confirmed = sorted(
            (
                e
                for e in self.table.entries(self.now)
                if e.in_bucket and e.last_response is not None and not e.failures
            ),
            key=lambda e: int(NodeId(e.node.node_id)) ^ goal,
        )
        served = self.table.closest(target, self.now, confirmed_only=True)
        assert served == [e.node for e in confirmed[:8]]


TableMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
test_table_machine = TableMachine.TestCase


def test_memory_is_bounded_under_a_flood() -> None:
    rng = Random(3)
    t = table(k=4)
    for i in range(3000):
        # a quarter of the ids are crafted close to ours, to force splits
        shift = rng.randrange(160) if i % 4 == 0 else 0
        info = NodeInfo(
            NodeId.from_int(rng.getrandbits(160) >> shift).value,
            PeerAddress(IPv4Address(rng.getrandbits(32) | 1 << 24), 1 + i % 60000),
        )
        t.heard_from(info, T0 + i, bool(i % 2))
    entries = list(t.entries(T0 + 3000))
    assert len(entries) <= t.bucket_count * 2 * 4
    assert t.bucket_count <= 160
    assert len(t.closest(OWN, T0 + 3000)) == BUCKET_SIZE


def test_save_of_a_large_k_table_loads() -> None:
    t = table(k=20)
    fill(t, [far(i) for i in range(40)])
    loaded = RoutingTable.load(t.save(T0), rng=Random(0), k=20)
    assert {e.node for e in loaded.entries(T0)} == {e.node for e in t.entries(T0)}
