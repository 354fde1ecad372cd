"""A bootstrap takes the nodes its responders name as learned ones: one per /24 or /64, as
libtorrent's restrict_search_ips (only its routers start a search unchecked)."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv4Network

from bip_dht import DHTConfig
from bip_dht._krpc import FindNode, Response, decode_message
from bip_dht._node import DHTNode
from bip_dht._node_id import NodeId
from bip_handshake import NodeInfo, PeerAddress

RESPONDER = PeerAddress.parse("11.0.0.1:6881")
ATTACKER = IPv4Network("11.0.0.0/24")


def _near(own: bytes, n: int) -> bytes:
    """An id sharing all but the last byte with ``own``: closer than anyone honest."""
    return own[:19] + bytes([own[19] ^ n])


def test_a_responder_cannot_fill_the_bootstrap_from_its_own_network() -> None:
    node = DHTNode(rng=random.Random(7), now=0.0)
    node.bootstrap([RESPONDER], 0.0)
    ((data, dest),) = node.datagrams_to_send(0.0)
    query = decode_message(data)
    assert isinstance(query, FindNode)
    assert dest == RESPONDER
    own = node.node_id.value
    invented = tuple(
        NodeInfo(_near(own, n), PeerAddress(IPv4Address(f"11.0.0.{n + 1}"), 6881))
        for n in range(1, 9)
    )
    honest = tuple(
        NodeInfo(random.Random(n).randbytes(20), PeerAddress.parse(f"12.0.{n}.1:6881"))
        for n in range(8)
    )
    reply = Response(
        transaction_id=query.transaction_id, node_id=b"r" * 20, nodes=invented + honest
    )
    node.receive_datagram(reply.encode(), RESPONDER, 0.0)
    asked = [dest for _, dest in node.datagrams_to_send(0.0)]
    assert asked, "the lookup started"
    from_attacker = [a for a in asked if a != RESPONDER and a.host in ATTACKER]
    assert len(from_attacker) <= 1, asked


def test_a_refused_responder_still_starts_the_bootstrap_from_the_nodes_it_named() -> None:
    # BEP 42 enforced, a router whose id breaks it: the lookup cannot start from the router,
    # so it starts from the (valid) nodes the router named, rather than ask nobody.
    node = DHTNode(config=DHTConfig(enforce_node_id=True), rng=random.Random(7), now=0.0)
    node.bootstrap([RESPONDER], 0.0)
    ((data, _),) = node.datagrams_to_send(0.0)
    query = decode_message(data)
    named = []
    for n in range(8):
        host = IPv4Address(f"12.0.{n}.1")
        named.append(NodeInfo(NodeId.for_ip(host, random.Random(n)).value, PeerAddress(host, 6881)))
    reply = Response(transaction_id=query.transaction_id, node_id=b"r" * 20, nodes=tuple(named))
    node.receive_datagram(reply.encode(), RESPONDER, 0.0)
    asked = {dest for _, dest in node.datagrams_to_send(0.0)}
    assert asked
    assert asked <= {info.address for info in named}
