"""Speedups made for the simulator's scale give the answers the plain algorithms give."""

from __future__ import annotations

from ipaddress import IPv4Address
from random import Random

from hypothesis import given, settings
from hypothesis import strategies as st

from bip_dht._krpc_replies import Response
from bip_dht._lookup import Lookup, _State
from bip_dht._node_id import NodeId
from bip_dht._routing import NodeState, RoutingTable
from bip_handshake import NodeInfo, PeerAddress


def _brute_closest(
    table: RoutingTable, target: NodeId, now: float, n: int, include_questionable: bool
) -> list[NodeInfo]:
    """RoutingTable.closest as first written: every bucket node, sorted."""
    goal = int(target)
    good, questionable = [], []
    for entry in table.entries(now):
        if not entry.in_bucket:
            continue
        distance = int.from_bytes(entry.node.node_id, "big") ^ goal
        if entry.state is NodeState.GOOD:
            good.append((distance, entry.node))
        elif entry.state is NodeState.QUESTIONABLE and include_questionable:
            questionable.append((distance, entry.node))
    good.sort(key=lambda pair: pair[0])
    chosen = good[:n]
    if len(chosen) < n:
        questionable.sort(key=lambda pair: pair[0])
        chosen += questionable[: n - len(chosen)]
        chosen.sort(key=lambda pair: pair[0])
    return [node for _, node in chosen]


def _brute_to_ping(table: RoutingTable, now: float) -> list[NodeInfo]:
    """RoutingTable.nodes_to_ping as first written: per bucket, the stalest questionable."""
    out = []
    for bucket in table._buckets:
        stale = [e for e in bucket.nodes.values() if e.state(now, 3) is NodeState.QUESTIONABLE]
        if stale:
            out.append(min(stale, key=lambda e: float("-inf") if e.seen is None else e.seen).node)
    return out


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    size=st.integers(0, 400),
    near=st.integers(0, 400),
    n=st.integers(0, 20),
    include_questionable=st.booleans(),
    close_target=st.booleans(),
)
def test_closest_equals_the_full_sort(
    *, seed: int, size: int, near: int, n: int, include_questionable: bool, close_target: bool
) -> None:
    rng = Random(seed)
    own = NodeId.random(rng)
    table = RoutingTable(own, family=4, rng=rng)
    nodes = []
    for index in range(size + near):
        if index < size:
            raw = rng.randbytes(20)
        else:  # ids near ours, so the table splits deep
            raw = own.random_with_prefix(rng.randrange(8, 40), rng).value
        node = NodeInfo(raw, PeerAddress(IPv4Address(0x0A000001 + index), 6881))
        nodes.append(node)
        # answered, only queried us, or answered long ago (questionable)
        when = rng.choice([0.0, 0.0, -2000.0])
        table.heard_from(node, when, responded=rng.random() < 0.8)
    for node in rng.sample(nodes, len(nodes) // 5):
        table.failed(node, 1.0)
    target = own.random_with_prefix(rng.randrange(160), rng) if close_target else NodeId.random(rng)
    expected = _brute_closest(table, target, 10.0, n, include_questionable)
    got = table.closest(target, 10.0, n, include_questionable=include_questionable)
    assert got == expected
    assert table.closest(own, 10.0, n) == _brute_closest(table, own, 10.0, n, True)
    for now in (10.0, 1000.0):
        assert table.nodes_to_ping(now) == _brute_to_ping(table, now)


def _brute_deadline(lookup: Lookup) -> float | None:
    """Lookup.next_deadline as first written: a scan of every entry."""
    if lookup.done:
        return None
    deadline = None
    for entry in lookup._entries:
        if entry.state is _State.IN_FLIGHT:
            when = entry.sent_at + lookup.slow_after
        elif entry.state is _State.SLOW:
            when = entry.sent_at + lookup.timeout
        else:
            continue
        if deadline is None or when < deadline:
            deadline = when
    return deadline


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32), steps=st.lists(st.integers(0, 3), max_size=60))
def test_the_lookup_deadline_cache_matches_a_scan(seed: int, steps: list[int]) -> None:
    rng = Random(seed)
    target = NodeId.random(rng)

    def node(index: int) -> NodeInfo:
        return NodeInfo(rng.randbytes(20), PeerAddress(IPv4Address(0x0A000001 + index), 6881))

    counter = iter(range(10**6))
    lookup = Lookup(target, "get_peers", [node(next(counter)) for _ in range(12)], k=4)
    now = 0.0
    sent: list[NodeInfo] = []
    for step in steps:
        if step == 0:
            sent += [info for info, _ in lookup.next_queries(now)]
        elif step == 1 and sent:
            info = sent.pop(rng.randrange(len(sent)))
            learned = tuple(node(next(counter)) for _ in range(rng.randrange(4)))
            reply = Response(transaction_id=b"t", node_id=info.node_id, nodes=learned)
            lookup.on_response(info, reply, now)
        elif step == 2 and sent:
            lookup.on_error(sent.pop(rng.randrange(len(sent))), now)
        else:
            now += rng.choice([0.5, 1.0, 2.0, 3.0, 8.0])
            lookup.handle_timer(now)
        assert lookup.next_deadline() == _brute_deadline(lookup)
