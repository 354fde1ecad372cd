"""Mends for defects a hunt found in the KRPC codec, each checked against libtorrent: a ragged
``nodes`` list lost whole, BEP 42's local ranges short of libtorrent's ``is_local``, a ``want``
that is not a list (or is long) failing the query, and the Mainline client's one-string
``values`` dropped."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_bencode import encode
from bip_dht import DHTNode, PeersFound
from bip_dht._krpc import (
    WANT_N6,
    FindNode,
    Get,
    GetPeers,
    KRPCLimits,
    Response,
    SampleInfohashes,
    decode_message,
)
from bip_dht._node_id import NodeId, is_bep42_exempt
from bip_dht._node_voting import is_votable
from bip_dht._routing import bep42_filter
from bip_handshake import NodeInfo, PeerAddress

ID = b"A" * 20
TARGET = b"T" * 20
V4_NODE = NodeInfo(ID, PeerAddress.parse("1.2.3.4:6881"))
V6_NODE = NodeInfo(ID, PeerAddress.parse("[2001:db8::1]:6881"))
PEERS = [PeerAddress.parse("1.2.3.4:6881"), PeerAddress.parse("5.6.7.8:80")]
BLOB = b"".join(peer.to_compact() for peer in PEERS)


def response(body: dict[bytes, Any], source_family: Any = None) -> Response:
    wire = encode({b"t": b"aa", b"y": b"r", b"r": {b"id": ID, **body}})
    message = decode_message(wire, source_family=source_family)
    assert isinstance(message, Response)
    return message


def query(method: bytes, args: dict[bytes, Any], limits: KRPCLimits | None = None) -> Any:
    wire = encode({b"t": b"aa", b"y": b"q", b"q": method, b"a": {b"id": ID, **args}})
    return decode_message(wire, limits or KRPCLimits())


# -- 1. nodes / nodes6 with a stray tail keep their whole entries --------------------------------


@pytest.mark.parametrize(("key", "node"), [(b"nodes", V4_NODE), (b"nodes6", V6_NODE)])
@pytest.mark.parametrize("tail", [1, 25])
def test_a_ragged_node_list_keeps_its_whole_entries(key: bytes, node: NodeInfo, tail: int) -> None:
    message = response({key: node.to_compact() * 2 + b"\x00" * tail})
    assert getattr(message, key.decode()) == (node, node)
    assert message.ignored == (key,)


def test_a_node_list_without_one_whole_entry_is_dropped() -> None:
    message = response({b"nodes": b"x" * 25, b"nodes6": V6_NODE.to_compact()})
    assert (message.nodes, message.nodes6, message.ignored) == (None, (V6_NODE,), (b"nodes",))


def test_a_ragged_node_list_over_the_cap_is_still_dropped() -> None:
    nodes = V4_NODE.to_compact() * 3 + b"x"
    wire = encode({b"t": b"aa", b"y": b"r", b"r": {b"id": ID, b"nodes": nodes}})
    message = decode_message(wire, KRPCLimits(max_nodes=2))
    assert isinstance(message, Response)
    assert (message.nodes, message.ignored) == (None, (b"nodes",))


# -- 2. BEP 42's local addresses are libtorrent's is_local ---------------------------------------


def _libtorrent_is_local(ip: IPv4Address | IPv6Address) -> bool:
    """libtorrent's ``aux::is_local`` (ip_helpers.cpp, 2.0.9 and later), byte for byte."""
    if isinstance(ip, IPv4Address):
        n = int(ip)
        return (
            (n & 0xFF000000) == 0x0A000000
            or (n & 0xFFF00000) == 0xAC100000
            or (n & 0xFFFF0000) == 0xC0A80000
            or (n & 0xFFFF0000) == 0xA9FE0000
            or (n & 0xFF000000) == 0x7F000000
            or (n & 0xFFC00000) == 0x64400000
        )
    b = ip.packed
    return (
        ip == IPv6Address("::1")
        or (b[0] == 0xFE and b[1] & 0xC0 == 0x80)  # asio is_link_local
        or (b[0] == 0xFE and b[1] & 0xC0 == 0xC0)  # asio is_site_local
        or (b[0] == 0xFF and b[1] & 0x0F == 0x02)  # asio is_multicast_link_local
        or (b[0] == 0xFF and b[1] & 0x0F == 0x05)  # asio is_multicast_site_local
        or b[0] & 0xFE == 0xFC
    )


@pytest.mark.parametrize(
    ("ip", "local"),
    [("100.64.0.0", True), ("100.127.255.255", True), ("100.63.255.255", False),
     ("100.128.0.0", False), ("fec0::1", True), ("feff::1", True), ("ff02::1", True),
     ("ff12::2", True), ("ff05::1:3", True), ("ff15::1", True), ("ff01::1", False),
     ("ff0e::1", False), ("fe7f::1", False), ("::ffff:100.64.0.1", True)],
)  # fmt: skip
def test_local_ranges_match_libtorrent(ip: str, local: bool) -> None:
    host = ip_address(ip)
    assert is_bep42_exempt(host) is local
    assert NodeId(bytes(20)).is_valid_for(host) is local  # verify_id exempts is_local
    assert bep42_filter(NodeInfo(bytes(20), PeerAddress(host, 6881))) is local
    if not host.is_multicast:
        assert is_votable(host) is not local  # the vote ignores the very same addresses


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 2**32 - 1).map(ip_address)
    | st.integers(0, 2**128 - 1).map(IPv6Address)
    | st.sampled_from([0xFE, 0xFF, 0xFC, 0xFD]).flatmap(
        lambda high: st.integers(0, 2**120 - 1).map(lambda low: IPv6Address(high << 120 | low))
    )
)
def test_exemption_is_libtorrents_is_local(host: Any) -> None:
    if host.version == 6 and host.ipv4_mapped is not None:
        return  # libtorrent sees those over its IPv4 socket; we unmap them first
    assert is_bep42_exempt(host) == _libtorrent_is_local(host)


# -- 3. a want that is not a list is absent; a long one is read up to the cap --------------------


@pytest.mark.parametrize(
    ("method", "args", "cls"),
    [(b"find_node", {b"target": TARGET}, FindNode),
     (b"get_peers", {b"info_hash": TARGET}, GetPeers),
     (b"get", {b"target": TARGET}, Get),
     (b"sample_infohashes", {b"target": TARGET}, SampleInfohashes)],
)  # fmt: skip
@pytest.mark.parametrize("want", [b"n4", 6, {b"n4": 1}])
def test_a_want_that_is_not_a_list_is_absent(
    method: bytes, args: dict[bytes, Any], cls: type, want: Any
) -> None:
    message = query(method, {**args, b"want": want})
    assert isinstance(message, cls)
    assert message.want is None  # type: ignore[attr-defined]
    assert b"want" not in message.extra  # type: ignore[attr-defined]


def test_a_long_want_is_read_up_to_the_cap() -> None:
    want = [b"x", 5, WANT_N6, *[b"n4"] * 20]
    message = query(b"find_node", {b"target": TARGET, b"want": want}, KRPCLimits(max_want=3))
    assert isinstance(message, FindNode)
    assert message.want == (b"x", WANT_N6)  # the first three entries, the int left out


def test_a_node_answers_a_query_whose_want_is_a_string() -> None:
    node = DHTNode(rng=random.Random(1), now=0.0)
    node.warm_table([NodeInfo(b"p" * 20, PeerAddress.parse("8.8.8.8:6881"))], 0.0)
    args = {b"id": ID, b"target": TARGET, b"want": b"n6"}
    wire = encode({b"t": b"aa", b"y": b"q", b"q": b"find_node", b"a": args})
    node.receive_datagram(wire, PeerAddress.parse("9.9.9.9:6881"), 1.0)
    [(reply, _)] = node.datagrams_to_send(1.0)
    answer = decode_message(reply)
    assert isinstance(answer, Response)  # not error 203
    # as if there were no want: nodes of the family the query came over
    assert answer.nodes is not None
    assert answer.nodes6 is None


# -- 4. the Mainline client's values: one string of concatenated IPv4 peers ----------------------


def test_one_string_of_peers_from_an_ipv4_node() -> None:
    message = response({b"values": [BLOB]}, source_family=4)
    assert (message.values, message.ignored) == (tuple(PEERS), ())


def test_one_string_of_peers_keeps_whole_peers_and_names_a_tail() -> None:
    message = response({b"values": [BLOB + b"\x01\x02"]}, source_family=4)
    assert (message.values, message.ignored) == (tuple(PEERS), (b"values",))
    # 18 bytes from an IPv4 node are three IPv4 peers to libtorrent, not one IPv6 peer
    three = response({b"values": [BLOB + PEERS[0].to_compact()]}, source_family=4)
    assert three.values == (*PEERS, PEERS[0])


@pytest.mark.parametrize("family", [None, 6])
def test_one_string_is_one_entry_unless_from_an_ipv4_node(family: Any) -> None:
    message = response({b"values": [BLOB]}, source_family=family)
    assert (message.values, message.ignored) == ((), (b"values",))
    v6 = PeerAddress.parse("[2001:db8::1]:80")
    assert response({b"values": [v6.to_compact()]}, source_family=family).values == (v6,)


def test_only_a_one_string_list_is_read_as_concatenated_peers() -> None:
    message = response({b"values": [BLOB, PEERS[0].to_compact()]}, source_family=4)
    assert (message.values, message.ignored) == ((PEERS[0],), (b"values",))
    assert response({b"values": [5]}, source_family=4).ignored == (b"values",)


def test_one_string_of_peers_is_capped() -> None:
    wire = encode({b"t": b"aa", b"y": b"r", b"r": {b"id": ID, b"values": [BLOB * 2]}})
    message = decode_message(wire, KRPCLimits(max_values=3), source_family=4)
    assert isinstance(message, Response)
    assert (message.values, message.ignored) == (None, (b"values",))


def test_a_lookup_finds_the_peers_of_a_mainline_answer() -> None:
    node = DHTNode(rng=random.Random(1), now=0.0)
    peer = NodeInfo(b"p" * 20, PeerAddress.parse("10.0.0.2:6881"))
    node.warm_table([peer], 0.0)
    node.get_peers(TARGET, 0.0)
    [(sent, _)] = node.datagrams_to_send(0.0)
    tid = decode_message(sent).transaction_id
    body: dict[bytes, Any] = {b"id": peer.node_id, b"values": [BLOB], b"token": b"tok"}
    node.receive_datagram(encode({b"t": tid, b"y": b"r", b"r": body}), peer.address, 0.1)
    found: list[PeerAddress] = []
    while (event := node.next_event()) is not None:
        if isinstance(event, PeersFound):
            found += event.peers
    assert found == PEERS
