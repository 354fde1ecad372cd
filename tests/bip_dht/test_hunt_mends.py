"""Mends for defects a hostile hunt found: the BEP 42 vote flipping our address (and id) at
will, error replies echoing the method name, replies over the datagram limit, and BEP 32
``want`` ignored by ``sample_infohashes`` and unknown methods."""

from __future__ import annotations

import random
from ipaddress import ip_address

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bip_bencode import encode
from bip_dht import DHTNode, MutableItem, NodeIdChanged
from bip_dht._krpc import (
    WANT_N4,
    WANT_N6,
    FindNode,
    Get,
    Response,
    SampleInfohashes,
    UnknownQuery,
    decode_message,
)
from bip_dht._node import MIN_ID_CHANGE_INTERVAL
from bip_dht._node_voting import ROTATE_INTERVAL, ExternalAddressVoter, is_votable
from bip_dht._serve import MAX_REPLY_SIZE
from bip_handshake import NodeInfo, PeerAddress

# -- helpers -------------------------------------------------------------------------------------


def answer_ping(node: DHTNode, responder: PeerAddress, claimed: str, now: float) -> None:
    """*node* pings *responder*, which answers saying it sees us at *claimed*."""
    node.ping(responder, now)
    [(query, _)] = node.datagrams_to_send(now)
    tid = decode_message(query).transaction_id
    reply = Response(
        transaction_id=tid,
        node_id=random.Random(str(responder)).randbytes(20),
        ip=PeerAddress.parse(claimed),
    )
    node.receive_datagram(reply.encode(), responder, now)
    node.datagrams_to_send(now)


def id_changes(node: DHTNode) -> list[NodeIdChanged]:
    changes = []
    while (event := node.next_event()) is not None:
        if isinstance(event, NodeIdChanged):
            changes.append(event)
    return changes


def warmed(families: tuple[int, ...] = (4,), seed: int = 5) -> DHTNode:
    rng = random.Random(seed)
    node = DHTNode(rng=rng, now=0.0, families=families)  # type: ignore[arg-type]
    nodes = [NodeInfo(rng.randbytes(20), PeerAddress.parse(f"8.{i}.0.1:6881")) for i in range(30)]
    if 6 in families:
        nodes += [
            NodeInfo(rng.randbytes(20), PeerAddress.parse(f"[2001:db8:{i}::1]:6881"))
            for i in range(30)
        ]
    node.warm_table(nodes, 0.0)
    return node


def query(node: DHTNode, data: bytes, source: str = "9.9.9.9:6881") -> bytes | None:
    node.receive_datagram(data, PeerAddress.parse(source), 1.0)
    out = node.datagrams_to_send(1.0)
    assert len(out) <= 1
    return out[0][0] if out else None


# -- 1. the external address vote ----------------------------------------------------------------


def test_ten_responders_cannot_flip_our_address_and_id() -> None:
    node = warmed()
    now = 1.0
    changes = []
    for rnd, claimed in enumerate(["1.2.3.4", "5.6.7.8", "1.2.3.4", "5.6.7.8"]):
        for i in range(10):
            answer_ping(node, PeerAddress.parse(f"45.{rnd}.{i}.1:6881"), claimed + ":6881", now)
            now += 0.1
        changes += id_changes(node)
    assert len(changes) == 1  # the first decision only
    assert node.external_addresses[4].host == ip_address("1.2.3.4")
    assert node.node_id.is_valid_for(ip_address("1.2.3.4"))


def test_an_honest_move_is_followed() -> None:
    node = warmed()
    now = 1.0
    for i in range(10):
        answer_ping(node, PeerAddress.parse(f"45.0.{i}.1:6881"), "1.2.3.4:6881", now)
    assert len(id_changes(node)) == 1
    # we moved: responders met over the next minutes see us at the new address
    for i in range(12):
        now += 30.0
        answer_ping(node, PeerAddress.parse(f"46.0.{i}.1:6881"), "5.6.7.8:7000", now)
    assert now - 1.0 > ROTATE_INTERVAL
    assert node.external_addresses[4] == PeerAddress.parse("5.6.7.8:7000")
    [changed] = id_changes(node)
    assert changed.new.is_valid_for(ip_address("5.6.7.8"))


def test_fifty_votes_move_the_address_at_once_but_the_id_waits() -> None:
    node = warmed()
    for i in range(10):
        answer_ping(node, PeerAddress.parse(f"45.0.{i}.1:6881"), "1.2.3.4:6881", 1.0)
    assert len(id_changes(node)) == 1
    for i in range(50):
        answer_ping(node, PeerAddress.parse(f"46.0.{i}.1:6881"), "5.6.7.8:6881", 10.0)
    assert node.external_addresses[4].host == ip_address("5.6.7.8")
    assert id_changes(node) == []  # within the floor since the last change
    later = 1.0 + MIN_ID_CHANGE_INTERVAL + 10.0
    node.handle_timer(later)  # the maintenance tick takes the id the new address asks for
    [changed] = id_changes(node)
    assert changed.new.is_valid_for(ip_address("5.6.7.8"))


def test_votes_naming_local_addresses_are_ignored() -> None:
    voter = ExternalAddressVoter(threshold=1)
    voters = [PeerAddress.parse(f"5.6.7.{i}:1") for i in range(1, 9)]
    for claimed, who in zip(
        ["0.0.0.0", "127.0.0.1", "10.1.2.3", "192.168.1.1", "100.64.0.1", "224.0.0.1"],
        voters,
        strict=False,
    ):
        assert voter.vote(PeerAddress.parse(f"{claimed}:1"), who, now=0.0) is None
    for claimed in ("[::1]:1", "[fe80::1]:1", "[fd00::1]:1", "[::]:1", "[fec0::1]:1"):
        assert (
            voter.vote(PeerAddress.parse(claimed), PeerAddress.parse("[2001::9]:1"), now=0.0)
            is None
        )
    assert voter.decided == {}
    assert is_votable(ip_address("81.2.69.160"))
    assert not is_votable(ip_address("::ffff:10.0.0.1"))


def test_a_close_race_decides_nothing() -> None:
    voter = ExternalAddressVoter(threshold=2)
    a, b = PeerAddress.parse("1.1.1.1:1"), PeerAddress.parse("2.2.2.2:1")
    voter.vote(a, PeerAddress.parse("5.0.0.1:1"), now=0.0)
    voter.vote(b, PeerAddress.parse("5.0.0.2:1"), now=0.0)
    assert voter.vote(a, PeerAddress.parse("5.0.0.3:1"), now=0.0) is None  # 2 * 2 // 3 <= 1
    assert voter.vote(a, PeerAddress.parse("5.0.0.4:1"), now=0.0) == a  # 3 * 2 // 3 > 1


# -- 2. error replies ------------------------------------------------------------------------------


def test_an_error_reply_never_echoes_an_unknown_method() -> None:
    node = DHTNode(rng=random.Random(1), now=0.0)
    forged = encode({b"t": b"aa", b"y": b"q", b"q": b"\xff" * 1400, b"a": {}})
    reply = query(node, forged, "203.0.113.7:6881")
    assert reply is not None
    assert len(reply) < 120
    assert b"\xef\xbf\xbd" not in reply
    assert b"\xff" not in reply
    error = decode_message(reply)
    assert error.code == 203  # type: ignore[union-attr]
    # a known method still names itself
    bad = encode({b"t": b"bb", b"y": b"q", b"q": b"find_node", b"a": {b"id": bytes(20)}})
    assert b"find_node" in (query(node, bad) or b"")


def test_a_reply_over_the_limit_is_dropped_and_counted() -> None:
    node = DHTNode(rng=random.Random(1), now=0.0)
    # a transaction id so long that the error reply cannot fit, though the query did
    data = encode({b"t": b"x" * 1420, b"y": b"q", b"q": b"find_node", b"a": {b"id": bytes(20)}})
    assert len(data) <= MAX_REPLY_SIZE
    assert query(node, data) is None
    assert node._handler.statistics().oversized_dropped == 1


def test_oversized_drops_show_in_the_node_statistics() -> None:
    node = DHTNode(rng=random.Random(1), now=0.0)
    data = encode({b"t": b"x" * 1420, b"y": b"q", b"q": b"find_node", b"a": {b"id": bytes(20)}})
    assert query(node, data) is None
    assert node.statistics().oversized_dropped == 1


# -- 3. a full BEP 44 item fits ------------------------------------------------------------------


def test_a_full_item_with_both_node_families_fits_the_datagram_limit() -> None:
    server = warmed((4, 6), seed=7)
    key = Ed25519PrivateKey.from_private_bytes(bytes(32))
    item = MutableItem.create(key, encode(b"x" * 995), seq=1)
    server._items.put(item, 0.0)
    get = Get(transaction_id=b"ab", node_id=bytes(20), target=item.target, want=(WANT_N4, WANT_N6))
    reply = query(server, get.encode())
    assert reply is not None
    assert len(reply) <= MAX_REPLY_SIZE
    answer = decode_message(reply)
    assert isinstance(answer, Response)
    assert answer.v == b"x" * 995
    assert answer.nodes is not None
    assert len(answer.nodes) == 8  # the requester's family kept
    assert answer.nodes6 is not None
    assert len(answer.nodes6) < 8  # the farthest others shed


# -- 5. BEP 32 want everywhere nodes are listed ----------------------------------------------------


def test_sample_infohashes_and_unknown_methods_honour_want() -> None:
    node = warmed((4, 6), seed=3)
    both = (WANT_N4, WANT_N6)
    sample = SampleInfohashes(transaction_id=b"b", node_id=bytes(20), target=bytes(20), want=both)
    answer = decode_message(query(node, sample.encode()) or b"")
    assert isinstance(answer, Response)
    assert answer.nodes
    assert answer.nodes6
    unknown = UnknownQuery(
        transaction_id=b"c",
        node_id=bytes(20),
        name=b"vote",
        extra={b"target": bytes(20), b"want": [b"n6"]},
    )
    data = query(node, unknown.encode())
    assert data is not None
    assert len(data) <= MAX_REPLY_SIZE
    answer = decode_message(data)
    assert isinstance(answer, Response)
    assert answer.nodes is None
    assert answer.nodes6
    # without want: the family the query came over, as before
    plain = FindNode(transaction_id=b"d", node_id=bytes(20), target=bytes(20))
    answer = decode_message(query(node, plain.encode()) or b"")
    assert isinstance(answer, Response)
    assert answer.nodes
    assert answer.nodes6 is None
