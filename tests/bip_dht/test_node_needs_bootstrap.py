"""``DHTNode.needs_bootstrap`` and ``DHTNode.bootstrapping``: the core's one "needs a
bootstrap" rule (a family whose table has no node we could still query, in a dual-family node
too) and whether a bootstrap of its own is under way, the re-bootstrap it starts by itself
(which has no event) included. Sans-IO, on the node's own clock."""

from __future__ import annotations

import random

from bip_dht._node import DHTNode
from bip_dht._node_config import DHTConfig
from bip_handshake import NodeInfo, PeerAddress

V4 = NodeInfo(b"4" * 20, PeerAddress.parse("10.0.0.4:6881"))
V6 = NodeInfo(b"6" * 20, PeerAddress.parse("[fd00::6]:6881"))
BOOT = [PeerAddress.parse("10.0.0.1:6881"), PeerAddress.parse("[fd00::1]:6881")]
CONFIG = DHTConfig(bootstrap_retry_interval=30.0)


def dual(config: DHTConfig = CONFIG) -> DHTNode:
    return DHTNode(rng=random.Random(1), now=0.0, families=(4, 6), config=config)


def bootstrapping(node: DHTNode) -> bool:
    """``node.bootstrapping`` now (a call: mypy keeps no narrowing of it across calls)."""
    return node.bootstrapping


def go_bad(node: DHTNode, info: NodeInfo, now: float) -> None:
    """*info* fails its queries in a row, as while a relay lost every datagram."""
    table = node.table(info.address.family)
    for _ in range(node.config.max_failures):
        table.failed(info, now)


def test_any_family_without_a_node_we_could_query_needs_a_bootstrap() -> None:
    node = dual()
    assert node.needs_bootstrap(0.0)  # both tables empty
    assert node.warm_table([V4], 0.0) == 1
    assert node.needs_bootstrap(0.0)  # IPv6 still has none, though IPv4 works
    assert node.warm_table([V6], 0.0) == 1
    assert not node.needs_bootstrap(0.0)
    go_bad(node, V6, 1.0)
    # The table's size says nothing: what counts is a node we could still query.
    assert node.needs_bootstrap(1.0)
    assert node.table(4).closest(node.node_id, 1.0, 1) == [V4]


def test_bootstrapping_holds_while_any_bootstrap_runs() -> None:
    node = dual()
    assert not bootstrapping(node)
    operation = node.bootstrap(BOOT, 0.0)
    assert bootstrapping(node)
    assert node.bootstrap_ops == {operation}
    node.cancel(operation)
    assert not bootstrapping(node)
    assert node.bootstrap_ops == frozenset()
    assert node.bootstrap_addresses == tuple(BOOT)  # remembered for re-bootstraps


def test_an_earlier_bootstrap_still_counts_when_a_later_one_ended() -> None:
    # Before, `bootstrapping` followed the bootstrap started last: with A running and B
    # cancelled it said none ran. A queued bootstrap (no lookup slot free) counts too.
    node = dual(DHTConfig(bootstrap_retry_interval=30.0, max_lookups=2))
    first = node.bootstrap(BOOT, 0.0)
    second = node.bootstrap(BOOT, 0.0)
    queued = node.bootstrap(BOOT, 0.0)
    assert node.bootstrap_ops == {first, second, queued}
    node.cancel(second)  # the queued one takes its slot
    assert bootstrapping(node)
    assert node.bootstrap_ops == {first, queued}
    node.cancel(queued)
    node.cancel(first)
    assert not bootstrapping(node)


def test_the_node_does_not_bootstrap_again_beside_a_bootstrap_under_way() -> None:
    # IPv6 is dead and the retry interval has passed, but a bootstrap started before the
    # last one (which ended) still runs: the core's own re-bootstrap waits for it.
    config = DHTConfig(bootstrap_retry_interval=0.5, maintenance_interval=1.0)
    node = dual(config)
    node.warm_table([V4], 0.0)
    first = node.bootstrap(BOOT, 0.0)
    node.cancel(node.bootstrap(BOOT, 0.0))
    now = 0.0
    while now < 2 * config.maintenance_interval:  # two ticks, well within query_timeout
        deadline = node.next_deadline()
        assert deadline is not None
        now = max(now, deadline)
        node.handle_timer(now)
        assert node.needs_bootstrap(now)
        assert node.bootstrap_ops == {first}


def test_the_node_bootstraps_again_by_itself_when_one_family_went_dead() -> None:
    # IPv4 works, IPv6's only node went bad: the core's own re-bootstrap starts (no event:
    # only `bootstrapping` tells), at most every bootstrap_retry_interval.
    node = dual()
    node.cancel(node.bootstrap(BOOT, 0.0))
    node.warm_table([V4, V6], 0.0)
    go_bad(node, V6, 0.0)
    now = 0.0
    while not bootstrapping(node):
        deadline = node.next_deadline()
        assert deadline is not None
        now = max(now, deadline)
        assert now <= CONFIG.bootstrap_retry_interval + CONFIG.maintenance_interval
        node.warm_table([V4], now)  # IPv4's node keeps answering (nobody runs it here)
        node.handle_timer(now)
    assert now >= CONFIG.bootstrap_retry_interval
    assert node.table(4).closest(node.node_id, now, 1) == [V4]
    assert node.next_event() is not None  # the cancelled bootstrap's end, and
    assert node.next_event() is None  # nothing for the node's own
    # It ends (nobody answers at the bootstrap addresses) within the query timeouts.
    end = now + 10 * CONFIG.query_timeout
    while bootstrapping(node):
        deadline = node.next_deadline()
        assert deadline is not None
        assert deadline <= end
        now = max(now, deadline)
        node.handle_timer(now)
    assert node.needs_bootstrap(now)
