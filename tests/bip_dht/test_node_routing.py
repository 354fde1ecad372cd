"""What the node needs from the routing table when a node's IP is already held (one per IP)."""

from __future__ import annotations

from random import Random

from bip_dht._node_id import NodeId
from bip_dht._routing import MAX_FAILURES, Admission, NodeState, RoutingTable
from bip_handshake import NodeInfo, PeerAddress

OWN = NodeId(bytes(20))
WHERE = PeerAddress.parse("10.0.0.5:6881")


def table() -> RoutingTable:
    return RoutingTable(OWN, family=4, rng=Random(1))


def test_a_bad_holder_gives_its_ip_to_a_node_that_answers() -> None:
    routing = table()
    old = NodeInfo(b"\x80" * 20, WHERE)
    routing.heard_from(old, 0.0, responded=True)
    for _ in range(MAX_FAILURES):
        routing.failed(old, 1.0)
    assert routing.state_of(old.node_id, 1.0) is NodeState.BAD
    elsewhere = NodeInfo(b"\x81" * 20, PeerAddress.parse("10.0.0.5:7000"))
    assert routing.heard_from(elsewhere, 2.0, responded=False) is Admission.REJECTED
    assert routing.heard_from(elsewhere, 2.0, responded=True) is Admission.ADDED
    assert routing.state_of(old.node_id, 2.0) is None


def test_a_new_id_at_a_held_address_evicts_the_holder_first() -> None:
    routing = table()
    old = NodeInfo(b"\x80" * 20, WHERE)
    routing.heard_from(old, 0.0, responded=True)
    restarted = NodeInfo(b"\x90" * 20, WHERE)
    # a query claiming a new id proves nothing
    assert routing.heard_from(restarted, 1.0, responded=False) is Admission.REJECTED
    assert routing.state_of(old.node_id, 1.0) is NodeState.GOOD
    # an answer from that very address: the old entry goes, the new id joins at its next answer
    assert routing.heard_from(restarted, 2.0, responded=True) is Admission.REJECTED
    assert routing.state_of(old.node_id, 2.0) is None
    assert routing.heard_from(restarted, 3.0, responded=True) is Admission.ADDED


def test_a_good_holder_keeps_its_ip_against_another_port() -> None:
    routing = table()
    old = NodeInfo(b"\x80" * 20, WHERE)
    routing.heard_from(old, 0.0, responded=True)
    other = NodeInfo(b"\x90" * 20, PeerAddress.parse("10.0.0.5:7000"))
    assert routing.heard_from(other, 1.0, responded=True) is Admission.REJECTED
    assert routing.state_of(old.node_id, 1.0) is NodeState.GOOD
