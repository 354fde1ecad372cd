"""The IP filter applied to DHT nodes (as libtorrent applies its session's filter to the DHT):
blocked nodes are never queried, never enter the routing table or a lookup, and their
datagrams are dropped unanswered; the filter can be replaced while running. Peers named in
``values`` are not filtered (the handshaker filters peers)."""

from __future__ import annotations

import random
from ipaddress import IPv4Address
from typing import Any

import pytest
import trio

from bip_bencode import decode, encode
from bip_dht._errors import LocalProtocolError
from bip_dht._node import DHTNode
from bip_dht._node_config import DHTConfig
from bip_dht._node_events import LookupFinished, PeersFound, PingFinished
from bip_dht._shell import open_dht
from bip_handshake import IPFilter, IPRange, NodeInfo, PeerAddress

BAD = PeerAddress.parse("5.5.5.5:6881")
GOOD = PeerAddress.parse("6.6.6.6:6881")
FILTER = IPFilter.blocking([IPRange(IPv4Address("5.5.5.0"), IPv4Address("5.5.5.255"))])
HASH = bytes.fromhex("aa" * 20)


def node_id(n: int) -> bytes:
    return n.to_bytes(20, "big")


def ping(tid: bytes = b"pp") -> bytes:
    return encode({b"t": tid, b"y": b"q", b"q": b"ping", b"a": {b"id": node_id(7)}})


def compact(node: NodeInfo) -> bytes:
    return node.node_id + node.address.host.packed + node.address.port.to_bytes(2, "big")


def reply(tid: bytes, responder: bytes, **fields: Any) -> bytes:
    body: dict[bytes, Any] = {b"id": responder}
    body.update({k.encode(): v for k, v in fields.items()})
    return encode({b"t": tid, b"y": b"r", b"r": body})


def sent(node: DHTNode, now: float = 0.0) -> list[tuple[dict[bytes, Any], PeerAddress]]:
    out = []
    for data, address in node.datagrams_to_send(now):
        message = decode(data)
        assert isinstance(message, dict)
        out.append((message, address))
    return out


def events(node: DHTNode) -> list[object]:
    out: list[object] = []
    while (event := node.next_event()) is not None:
        out.append(event)
    return out


def test_a_blocked_source_is_not_answered() -> None:
    node = DHTNode(rng=random.Random(1), now=0.0, ip_filter=FILTER)
    node.receive_datagram(ping(), BAD, 0.0)
    assert sent(node) == []
    node.receive_datagram(ping(), GOOD, 0.0)
    assert [address for _, address in sent(node)] == [GOOD]
    assert node.statistics().filtered_ip == 1
    # the good querier becomes a candidate to query (in no bucket until it answers), the
    # blocked one is never seen
    assert node.table().candidate_count == 1
    assert len(node.table()) == 0


def test_a_blocked_address_is_never_queried() -> None:
    node = DHTNode(rng=random.Random(1), now=0.0, ip_filter=FILTER)
    op = node.ping(BAD, 0.0)
    assert sent(node) == []
    assert events(node) == [PingFinished(op, None)]  # at once, not at the timeout
    assert node.statistics().filtered_ip == 1
    assert node.statistics().outstanding == 0
    node.add_node(BAD, 0.0)  # a hint from a peer: dropped
    node.bootstrap([BAD], 0.0)
    assert sent(node) == []
    assert node.bootstrap_addresses == ()


def test_tables_and_lookups_skip_blocked_nodes() -> None:
    node = DHTNode(rng=random.Random(1), now=0.0, node_id=node_id(0), ip_filter=FILTER)
    bad = NodeInfo(node_id(1 << 150), BAD)
    good = NodeInfo(node_id(1 << 151), GOOD)
    assert node.warm_table([bad, good], 0.0) == 1
    op = node.find_node(node_id(1 << 140), 0.0)
    queries = sent(node)
    assert [address for _, address in queries] == [GOOD]
    # the good node names a blocked node (closer) and another one: only the other is asked
    closer_bad = NodeInfo(node_id(1 << 141), PeerAddress.parse("5.5.5.9:6881"))
    closer_good = NodeInfo(node_id(1 << 142), PeerAddress.parse("7.7.7.7:6881"))
    tid = queries[0][0][b"t"]
    nodes = compact(closer_bad) + compact(closer_good)
    node.receive_datagram(reply(tid, good.node_id, nodes=nodes), GOOD, 0.1)
    assert [address for _, address in sent(node, 0.1)] == [closer_good.address]
    node.cancel(op)
    [finished] = events(node)
    assert isinstance(finished, LookupFinished)
    assert BAD not in {n.node.address for n in finished.result.nodes}


def test_peers_in_values_are_not_filtered() -> None:
    node = DHTNode(rng=random.Random(1), now=0.0, node_id=node_id(0), ip_filter=FILTER)
    good = NodeInfo(node_id(1 << 151), GOOD)
    node.warm_table([good], 0.0)
    node.get_peers(HASH, 0.0)
    [(query, _)] = sent(node)
    peer = PeerAddress.parse("5.5.5.77:51413")  # blocked as a node, still a peer
    values = [peer.host.packed + peer.port.to_bytes(2, "big")]
    node.receive_datagram(reply(query[b"t"], good.node_id, token=b"tk", values=values), GOOD, 0.1)
    found = [e for e in events(node) if isinstance(e, PeersFound)]
    assert found
    assert found[0].peers == (peer,)


def test_set_ip_filter_drops_blocked_nodes_and_can_be_lifted() -> None:
    node = DHTNode(rng=random.Random(1), now=0.0, node_id=node_id(0))
    bad = NodeInfo(node_id(1 << 150), BAD)
    good = NodeInfo(node_id(1 << 151), GOOD)
    assert node.warm_table([bad, good], 0.0) == 2
    assert node.set_ip_filter(FILTER, 1.0) == 1
    assert node.ip_filter is FILTER
    assert [e.node for e in node.table().entries(1.0)] == [good]
    node.receive_datagram(ping(), BAD, 1.0)
    assert sent(node, 1.0) == []
    # lifted: the address is answered and may join again (a candidate until it answers us)
    assert node.set_ip_filter(None, 2.0) == 0
    assert node.table().candidate_count == 0
    node.receive_datagram(ping(), BAD, 2.0)
    assert [address for _, address in sent(node, 2.0)] == [BAD]
    assert node.table().candidate_count == 1


def test_a_query_in_flight_when_the_filter_comes_is_not_matched() -> None:
    node = DHTNode(rng=random.Random(1), now=0.0)
    op = node.ping(BAD, 0.0)
    [(query, _)] = sent(node)
    node.set_ip_filter(FILTER, 0.5)
    node.receive_datagram(reply(query[b"t"], node_id(9)), BAD, 0.6)
    assert events(node) == []
    node.handle_timer(DHTConfig().query_timeout + 1)
    assert events(node) == [PingFinished(op, None)]


def test_a_bad_filter_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        DHTNode(rng=random.Random(1), now=0.0, ip_filter="5.5.5.5")  # type: ignore[arg-type]
    node = DHTNode(rng=random.Random(1), now=0.0)
    with pytest.raises(LocalProtocolError):
        node.set_ip_filter(object(), 0.0)  # type: ignore[arg-type]


async def test_a_running_node_with_a_filter() -> None:
    config = DHTConfig(query_timeout=1.0, slow_after=0.3)
    blocked = IPFilter.blocking([IPRange(IPv4Address("127.0.0.3"), IPv4Address("127.0.0.3"))])
    with trio.fail_after(15):
        async with (
            open_dht("127.0.0.2:0", config=config, ip_filter=blocked) as dht,
            open_dht("127.0.0.3:0", config=config) as shunned,
            open_dht("127.0.0.4:0", config=config) as welcome,
        ):
            assert dht.ip_filter is blocked
            entry = dht.addresses[0]
            assert await shunned.ping(entry) is None  # dropped unanswered
            assert await dht.ping(shunned.addresses[0]) is None  # never sent
            assert await welcome.ping(entry) is not None
            assert await dht.ping(welcome.addresses[0]) is not None
            assert dht.statistics().filtered_ip >= 2
            assert dht.set_ip_filter(None) == 0
            assert await shunned.ping(entry) is not None
            assert await dht.ping(shunned.addresses[0]) is not None
            assert dht.set_ip_filter(blocked) == 1  # .3 had joined the table
            with pytest.raises(LocalProtocolError):
                dht.set_ip_filter("127.0.0.3")  # type: ignore[arg-type]


def test_a_lookup_drops_candidates_a_new_filter_blocks_at_once() -> None:
    # Both blocked nodes in the table: they share a /24, which the default rule would refuse.
    config = DHTConfig(alpha=1, restrict_routing_networks=False)
    node = DHTNode(rng=random.Random(1), now=0.0, node_id=node_id(0), config=config)
    good = NodeInfo(node_id(1 << 140), GOOD)
    blocked = [
        NodeInfo(node_id(1 << 150), BAD),
        NodeInfo(node_id(1 << 151), PeerAddress.parse("5.5.5.6:6881")),
    ]
    node.warm_table([good, *blocked], 0.0)
    op = node.find_node(node_id(1 << 139), 0.0)
    [(query, address)] = sent(node)
    assert address == GOOD
    assert node.set_ip_filter(FILTER, 0.1) == 2
    node.receive_datagram(reply(query[b"t"], good.node_id, nodes=b""), GOOD, 0.2)
    # the lookup's other candidates are blocked: failed unsent, and the lookup is over now
    # (at once, not at their timeouts)
    assert node.next_deadline() == 0.2
    node.handle_timer(0.2)
    assert sent(node, 0.2) == []
    [finished] = events(node)
    assert isinstance(finished, LookupFinished)
    assert finished.operation == op
    assert [n.node for n in finished.result.nodes] == [good]
    assert node.statistics().filtered_ip == 2
    assert node.statistics().outstanding == 0
