"""Candidates of the routing table: one per IP, k per bucket, queriers pushed out first, a
probe every refresh; replacements that never answered become candidates, not bucket nodes."""

from __future__ import annotations

import random

from test_routing import T0, far, fill, node, table

from bip_dht._node import DHTNode
from bip_dht._node_config import DHTConfig
from bip_dht._node_id import NodeId
from bip_dht._routing import Admission

TICK = 10.0
ATTACKER = "198.51.100.7"


def test_a_querier_flood_from_one_address_takes_no_fill_query_from_real_candidates() -> None:
    t = table()
    t.heard_from(node(1 << 150), T0, True)
    real = [node((1 << 158) | i) for i in range(1, 9)]
    assert all(t.heard_about(n, T0) for n in real)
    for i in range(64):  # ids close to ours, from one address: one candidate at most
        t.heard_from(node((1 << 20) | i, ip=ATTACKER), T0 + 1, False)
    assert t.candidate_count == 8  # the real ones: a querier pushes none of them out
    asked = [q.node for q in t.refresh_queries(T0 + 2, 64, TICK)]
    assert set(real) <= set(asked)
    assert ATTACKER not in {str(n.address.host) for n in asked}
    assert node(1 << 150) in asked  # the probe ran too


def test_one_candidate_per_ip_released_when_handed_out() -> None:
    t = table()
    t.heard_from(node(1 << 150), T0, True)
    assert t.heard_about(node(1 << 140, ip="192.0.2.1"), T0)
    assert not t.heard_about(node(1 << 141, ip="192.0.2.1"), T0)  # the IP is a candidate's
    assert t.heard_from(node(1 << 142, ip="192.0.2.1"), T0, False) is Admission.REJECTED
    t.refresh_queries(T0, 8, TICK)
    assert t.candidate_count == 0
    assert t.heard_about(node(1 << 141, ip="192.0.2.1"), T0)  # released
    # a network held by a candidate of the bucket, with restrict_networks
    n = table(restrict_networks=True)
    n.heard_from(node(1 << 150), T0, True)
    assert n.heard_about(node(1 << 140, ip="192.0.2.1"), T0)
    assert not n.heard_about(node(1 << 141, ip="192.0.2.2"), T0)


def test_forged_queriers_take_free_slots_only_and_go_out_first() -> None:
    t = table()
    fill(t, [far(i) for i in range(8)])
    t.heard_from(node(1 << 150), T0, True)
    assert t.bucket_count == 2
    t.remove(node(far(7)).node_id, T0)  # bucket 0 has a free slot
    far_real = node(far(50))
    assert t.heard_about(far_real, T0)
    # forged queriers from many addresses fill the last bucket's candidates
    for i in range(20):
        admission = t.heard_from(node((1 << 100) | i, ip=f"203.0.113.{i + 1}"), T0, False)
        assert admission is Admission.CANDIDATE  # in a free slot, or an older querier's
    assert t.candidate_count == 9  # bucket 0's candidate untouched: k per bucket
    # nodes an answer lists push the queriers out, oldest first
    listed = [node((1 << 120) | i) for i in range(8)]
    assert all(t.heard_about(n, T0 + 1) for n in listed)
    assert t.candidate_count == 9
    asked = [q.node for q in t.refresh_queries(T0 + 2, 64, TICK)]
    assert {far_real, *listed} <= set(asked)
    assert not [n for n in asked if str(n.address.host).startswith("203.0.113.")]
    assert len(asked) == 9 + 2  # and a probe of each bucket


def test_the_last_slot_of_a_refresh_goes_to_a_due_probe() -> None:
    t = table()
    t.heard_from(node(1 << 150), T0, True)
    for i in range(8):
        t.heard_about(node((1 << 140) | i), T0)
    queries = t.refresh_queries(T0, 2, TICK)
    assert [q.node == node(1 << 150) for q in queries] == [False, True]
    # not due any more: both slots go to candidates
    assert node(1 << 150) not in [q.node for q in t.refresh_queries(T0 + 1, 2, TICK)]
    assert t.candidate_count == 5


def test_candidates_at_a_busy_address_stay() -> None:
    t = table()
    t.heard_from(node(1 << 150), T0, True)
    waiting = node(1 << 140)
    t.heard_about(waiting, T0)
    queries = t.refresh_queries(T0, 4, TICK, busy=lambda a: a == waiting.address)
    assert waiting not in [q.node for q in queries]
    assert t.candidate_count == 1
    assert [q.node for q in t.refresh_queries(T0 + 1, 4, TICK)] == [waiting]


def test_a_replacement_that_never_answered_becomes_a_candidate() -> None:
    t = table()
    t.heard_from(node(1 << 150), T0, True)
    fill(t, [far(i) for i in range(8)])
    querier = node(far(99))
    assert t.heard_from(querier, T0, False) is Admission.REPLACEMENT
    for _ in range(3):
        t.failed(node(far(0)), T0 + 1)
    assert querier.node_id not in {e.node.node_id for e in t.entries(T0 + 1) if e.in_bucket}
    assert t.state_of(querier.node_id, T0 + 1) is None
    assert t.candidate_count == 1
    assert querier in [q.node for q in t.refresh_queries(T0 + 1, 4, TICK)]
    assert t.heard_from(querier, T0 + 2, True) is Admission.ADDED  # its answer admits it
    # one that answered moves in at once
    answered = node(far(98))
    fill(t, [far(97)])
    assert t.heard_from(answered, T0 + 3, True) is Admission.REPLACEMENT
    t.remove(node(far(1)).node_id, T0 + 4)
    assert {e.node: e.in_bucket for e in t.entries(T0 + 4)}[answered] is True


def test_maintenance_pops_no_candidate_it_cannot_send() -> None:
    config = DHTConfig(refreshes_per_tick=0, refresh_queries_per_tick=4)
    own = NodeId(bytes(20))
    dht = DHTNode(rng=random.Random(1), now=0.0, node_id=own, config=config)
    table = dht.table()
    table.heard_from(node(1 << 150), 0.0, True)
    waiting = node(1 << 140)
    assert table.heard_about(waiting, 0.0)
    dht.ping(waiting.address, 0.0)  # a query to that address is outstanding
    dht.datagrams_to_send(0.0)
    dht.handle_timer(config.maintenance_interval)
    assert table.candidate_count == 1  # kept for a later tick
    sent = [address for _, address in dht.datagrams_to_send(config.maintenance_interval)]
    assert waiting.address not in sent
