"""Speedups made for the simulator's scale give the answers the plain algorithms give."""

from __future__ import annotations

from ipaddress import IPv4Address
from random import Random

from hypothesis import given, settings
from hypothesis import strategies as st

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
