"""Compact peer addresses and compact node info, against the shared vectors and hypothesis."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_bencode import decode
from bip_handshake._compact import (
    DEFAULT_COMPACT_LIMIT,
    CompactError,
    NodeInfo,
    PeerAddress,
    encode_compact_nodes,
    encode_compact_peers,
    parse_compact_nodes,
    parse_compact_peers,
)

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


def _named(vectors: list[dict[str, Any]], fragment: str) -> dict[str, Any]:
    (found,) = [vector for vector in vectors if fragment in vector.get("name", "")]
    return found


def _pairs(peers: list[PeerAddress]) -> list[tuple[str, int]]:
    return [(str(peer.host), peer.port) for peer in peers]


# ------------------------------------------------------------------------------------ vectors


def test_pex_message_vector() -> None:
    vector = _named(_load("peer_wire/peer_messages.json")["vectors"], "ut_pex extended message")
    message = bytes.fromhex(vector["hex"])
    payload = decode(message[6:])  # 4-byte length, id 20, extended id 7
    assert isinstance(payload, dict)
    added = payload[b"added"]
    assert isinstance(added, bytes)
    assert added.hex() == vector["decoded"]["payload"]["added"]
    assert parse_compact_peers(added, 4) == [PeerAddress(IPv4Address("127.0.0.1"), 0x55AA)]
    assert parse_compact_peers(payload[b"added6"], 6) == []  # type: ignore[arg-type]
    assert parse_compact_peers(payload[b"dropped"], 4) == []  # type: ignore[arg-type]
    assert encode_compact_peers(parse_compact_peers(added)) == added


def test_pex_payload_vector() -> None:
    vector = _named(_load("peer_wire/peer_messages.json")["vectors"], "added with two peers")
    payload = decode(bytes.fromhex(vector["hex"]))
    assert isinstance(payload, dict)
    added = payload[b"added"]
    assert isinstance(added, bytes)
    peers = parse_compact_peers(added)
    expected = [(entry["ip"], entry["port"]) for entry in vector["decoded"]["added"]]
    assert _pairs(peers) == expected
    assert encode_compact_peers(peers, 4) == added


def test_krpc_values_vector() -> None:
    vectors = _load("dht/krpc_messages.json")["vectors"]
    (vector,) = [v for v in vectors if "derived_compact_peer_decoding" in v]
    message = decode(bytes.fromhex(vector["bencoded_hex"]))
    assert isinstance(message, dict)
    response = message[b"r"]
    assert isinstance(response, dict)
    values = response[b"values"]
    assert isinstance(values, list)
    expected = vector["derived_compact_peer_decoding"]["values"]
    for value, entry in zip(values, expected, strict=True):
        assert isinstance(value, bytes)
        assert value.hex() == entry["hex"]
        address = PeerAddress.from_compact(value)
        assert (str(address.host), address.port) == (entry["ip"], entry["port"])
        assert address.to_compact() == value


def test_krpc_placeholder_nodes_are_rejected() -> None:
    vectors = _load("dht/krpc_messages.json")["vectors"]
    placeholders = [v for v in vectors if "def456..." in json.dumps(v.get("decoded", {}))]
    assert len(placeholders) >= 2
    for vector in placeholders:
        message = decode(bytes.fromhex(vector["bencoded_hex"]))
        assert isinstance(message, dict)
        response = message[b"r"]
        assert isinstance(response, dict)
        nodes = response[b"nodes"]
        assert isinstance(nodes, bytes)
        with pytest.raises(CompactError, match="multiple of 26"):
            parse_compact_nodes(nodes)


def test_krpc_compact_formats() -> None:
    formats = _load("dht/krpc_messages.json")["compact_formats"]
    assert formats["peer_ipv4"].startswith("6 bytes")
    assert formats["node_ipv4"].startswith("26 bytes")
    assert formats["peer_ipv6 (BEP 32)"].startswith("18 bytes")
    assert formats["node_ipv6 (BEP 32 'nodes6')"].startswith("38 bytes")
    # A node built from the spec example's id and an address from its "nodes" list (BEP 5).
    node = NodeInfo(b"0123456789abcdefghij", PeerAddress(IPv4Address("127.0.0.1"), 6881))
    assert node.to_compact() == b"0123456789abcdefghij\x7f\x00\x00\x01\x1a\xe1"
    v6 = PeerAddress(IPv6Address("2001:db8:100:0:d5c8:db3f:995e:c0f7"), 1941)
    node6 = NodeInfo(b"abcdefghij0123456789", v6)
    assert len(node6.to_compact()) == 38
    assert parse_compact_nodes(encode_compact_nodes([node6]), 6) == [node6]


def test_udp_tracker_vector() -> None:
    vector = _named(_load("tracker/udp_tracker_bep15_bep41.json")["vectors"], "compact IPv4 peer")
    data = bytes.fromhex(vector["hex"])
    peers = parse_compact_peers(data, 4)
    assert _pairs(peers) == [tuple(pair) for pair in vector["peers"]]
    assert encode_compact_peers(peers) == data


def test_http_tracker_compacted_peers_file() -> None:
    bonus = _named(_load("tracker/udp_tracker_bep15_bep41.json")["http_tracker_bonus"], "BEP 23")
    response = decode((VECTORS / bonus["file"]).read_bytes())
    assert isinstance(response, dict)
    peers_blob = response[b"peers"]
    assert isinstance(peers_blob, bytes)
    assert peers_blob.hex() == bonus["expected"]["peers_hex"]
    peers = parse_compact_peers(peers_blob)
    assert len(peers) == 7
    assert str(peers[0]) == "46.189.27.100:6687"
    assert encode_compact_peers(peers) == peers_blob
    with pytest.raises(CompactError):
        parse_compact_peers(peers_blob, 6)  # 42 bytes is not a multiple of 18
    with pytest.raises(CompactError):
        parse_compact_peers(peers_blob + b"\x00")  # trailing data


# ------------------------------------------------------------------------------ PeerAddress


@pytest.mark.parametrize(
    ("text", "compact_hex"),
    [
        ("1.2.3.4:6881", "010203041ae1"),
        ("0.0.0.0:0", "000000000000"),
        ("255.255.255.255:65535", "ffffffffffff"),
        ("[::1]:6881", "00000000000000000000000000000001" + "1ae1"),
        ("[2001:db8::1]:80", "20010db8000000000000000000000001" + "0050"),
        ("[::ffff:1.2.3.4]:1", "00000000000000000000ffff01020304" + "0001"),
    ],
)
def test_address_forms(text: str, compact_hex: str) -> None:
    address = PeerAddress.parse(text)
    assert PeerAddress.parse(str(address)) == address
    if address.normalized() is address:  # mapped addresses print differently by Python version
        assert str(address) == text
    assert address.to_compact().hex() == compact_hex
    assert PeerAddress.from_compact(bytes.fromhex(compact_hex)) == address
    assert PeerAddress.from_compact(bytearray.fromhex(compact_hex)) == address
    assert PeerAddress.from_compact(memoryview(bytes.fromhex(compact_hex))) == address


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1.2.3.4",
        "1.2.3.4:",
        "1.2.3.4:65536",
        "1.2.3.4:123456",
        "1.2.3.4:+80",
        "1.2.3.4:-1",
        "1.2.3.4: 80",
        "1.2.3.4:\u0663",  # a non-ASCII digit
        "1.2.3:80",
        "::1:80",
        "[::1]",
        "[1.2.3.4]:80",
        "[fe80::1%eth0]:80",
        "example.org:80",
        "[" + "1" * 80 + "]:80",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(CompactError):
        PeerAddress.parse(text)


@pytest.mark.parametrize("size", [0, 1, 5, 7, 17, 19, 26])
def test_from_compact_rejects_wrong_sizes(size: int) -> None:
    with pytest.raises(CompactError, match="6 or 18"):
        PeerAddress.from_compact(bytes(size))


def test_address_validation() -> None:
    with pytest.raises(CompactError):
        PeerAddress(IPv4Address("1.2.3.4"), 65536)
    with pytest.raises(CompactError):
        PeerAddress(IPv4Address("1.2.3.4"), -1)
    with pytest.raises(CompactError):
        PeerAddress(IPv4Address("1.2.3.4"), True)
    with pytest.raises(CompactError):
        PeerAddress(IPv4Address("1.2.3.4"), "80")  # type: ignore[arg-type]
    with pytest.raises(CompactError):
        PeerAddress("1.2.3.4", 80)  # type: ignore[arg-type]
    with pytest.raises(CompactError, match="scoped"):
        PeerAddress(IPv6Address("fe80::1%eth0"), 80)


def test_address_is_frozen_and_hashable() -> None:
    address = PeerAddress.parse("1.2.3.4:5")
    with pytest.raises(dataclasses.FrozenInstanceError):
        address.port = 6  # type: ignore[misc]
    assert {address, PeerAddress.parse("1.2.3.4:5")} == {address}


def test_mapped_addresses_are_kept_but_normalise() -> None:
    mapped = PeerAddress.parse("[::ffff:10.0.0.1]:6881")
    plain = PeerAddress.parse("10.0.0.1:6881")
    assert mapped != plain
    assert mapped.family == 6
    assert mapped.normalized() == plain
    assert plain.normalized() is plain
    assert PeerAddress.parse("[::1]:1").normalized() == PeerAddress.parse("[::1]:1")


@pytest.mark.parametrize(
    ("text", "connectable"),
    [
        ("1.2.3.4:6881", True),
        ("1.2.3.4:0", False),
        ("0.0.0.0:6881", False),
        ("224.0.0.1:6881", False),
        ("[::]:6881", False),
        ("[ff02::1]:6881", False),
        ("[::ffff:0.0.0.0]:6881", False),
        ("[2001:db8::1]:6881", True),
    ],
)
def test_is_connectable(text: str, connectable: bool) -> None:
    assert PeerAddress.parse(text).is_connectable is connectable


# ----------------------------------------------------------------------------------- NodeInfo


def test_node_info_forms() -> None:
    node = NodeInfo(bytes(range(20)), PeerAddress.parse("[::1]:6881"))
    compact = node.to_compact()
    assert len(compact) == 38
    assert NodeInfo.from_compact(compact) == node
    assert str(node) == bytes(range(20)).hex() + "@[::1]:6881"
    assert NodeInfo(bytearray(range(20)), node.address) == node  # type: ignore[arg-type]


def test_node_info_validation() -> None:
    address = PeerAddress.parse("1.2.3.4:1")
    for node_id in (b"", b"x" * 19, b"x" * 21, "x" * 20):
        with pytest.raises(CompactError, match="20 bytes"):
            NodeInfo(node_id, address)  # type: ignore[arg-type]
    with pytest.raises(CompactError):
        NodeInfo(b"x" * 20, "1.2.3.4:1")  # type: ignore[arg-type]
    for size in (0, 6, 18, 25, 27, 37, 39):
        with pytest.raises(CompactError, match="26 or 38"):
            NodeInfo.from_compact(bytes(size))


# ------------------------------------------------------------------------------- bulk & bounds


@pytest.mark.parametrize("family", [0, 5, 46, True, "4", None, [4]])
def test_bad_family(family: object) -> None:
    with pytest.raises(CompactError, match="family"):
        parse_compact_peers(b"", family)  # type: ignore[arg-type]
    with pytest.raises(CompactError, match="family"):
        parse_compact_nodes(b"", family)  # type: ignore[arg-type]
    if family is not None:  # None means "whatever the first address is"
        with pytest.raises(CompactError, match="family"):
            encode_compact_peers([], family)  # type: ignore[arg-type]


def test_limit_is_enforced_before_decoding() -> None:
    assert DEFAULT_COMPACT_LIMIT >= 1000
    assert len(parse_compact_peers(bytes(6 * 3), limit=3)) == 3
    with pytest.raises(CompactError, match="limit"):
        parse_compact_peers(bytes(6 * 4), limit=3)
    with pytest.raises(CompactError, match="limit"):
        parse_compact_peers(bytes(6 * (DEFAULT_COMPACT_LIMIT + 1)))
    assert len(parse_compact_nodes(bytes(38 * 2), 6, limit=2)) == 2
    with pytest.raises(CompactError, match="limit"):
        parse_compact_nodes(bytes(38 * 3), 6, limit=2)
    with pytest.raises(CompactError, match="limit"):
        parse_compact_nodes(bytes(26), limit=0)


def test_encode_refuses_mixed_families() -> None:
    v4 = PeerAddress.parse("1.2.3.4:1")
    v6 = PeerAddress.parse("[::1]:1")
    with pytest.raises(CompactError, match="mix"):
        encode_compact_peers([v4, v6])
    with pytest.raises(CompactError, match="mix"):
        encode_compact_peers([v6], 4)
    with pytest.raises(CompactError, match="mix"):
        encode_compact_nodes([NodeInfo(bytes(20), v6), NodeInfo(bytes(20), v4)])
    with pytest.raises(CompactError, match="mix"):
        encode_compact_nodes([NodeInfo(bytes(20), v4)], 6)
    assert encode_compact_peers([]) == b""
    assert encode_compact_nodes([], 6) == b""
    assert encode_compact_peers(iter([v6, v6]), 6) == v6.to_compact() * 2


def test_bulk_accepts_bytes_likes() -> None:
    data = bytes.fromhex("7f0000010002ff0000030004")
    assert parse_compact_peers(bytearray(data)) == parse_compact_peers(memoryview(data))


# ----------------------------------------------------------------------------------- hypothesis

addresses = st.builds(
    PeerAddress,
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.integers(0, 65535),
)
node_ids = st.binary(min_size=20, max_size=20)


@given(addresses)
def test_address_round_trips(address: PeerAddress) -> None:
    assert PeerAddress.from_compact(address.to_compact()) == address
    assert PeerAddress.parse(str(address)) == address
    assert len(address.to_compact()) == (6 if address.family == 4 else 18)
    assert address.normalized().normalized() == address.normalized()


FAMILIES: list[Literal[4, 6]] = [4, 6]


def _addresses_of(family: Literal[4, 6]) -> st.SearchStrategy[PeerAddress]:
    return st.builds(PeerAddress, st.ip_addresses(v=family), st.integers(0, 65535))


@pytest.mark.parametrize("family", FAMILIES)
@given(data=st.data())
def test_peer_lists_round_trip(family: Literal[4, 6], data: st.DataObject) -> None:
    peers = data.draw(st.lists(_addresses_of(family), max_size=20))
    encoded = encode_compact_peers(peers, family)
    assert parse_compact_peers(encoded, family) == peers
    assert encode_compact_peers(peers) == encoded


@pytest.mark.parametrize("family", FAMILIES)
@given(data=st.data())
def test_node_lists_round_trip(family: Literal[4, 6], data: st.DataObject) -> None:
    nodes = data.draw(st.lists(st.builds(NodeInfo, node_ids, _addresses_of(family)), max_size=20))
    encoded = encode_compact_nodes(nodes, family)
    assert parse_compact_nodes(encoded, family) == nodes
    assert encode_compact_nodes(nodes) == encoded
    for node in nodes:
        assert NodeInfo.from_compact(node.to_compact()) == node


@pytest.mark.parametrize("family", FAMILIES)
@given(data=st.binary(max_size=200), limit=st.integers(0, 20))
def test_arbitrary_bytes_give_values_or_our_error(
    family: Literal[4, 6], data: bytes, limit: int
) -> None:
    peer_stride = 6 if family == 4 else 18
    try:
        peers = parse_compact_peers(data, family, limit=limit)
    except CompactError:
        assert len(data) % peer_stride or len(data) // peer_stride > limit
    else:
        assert len(peers) == len(data) // peer_stride
    node_stride = 20 + peer_stride
    try:
        nodes = parse_compact_nodes(data, family, limit=limit)
    except CompactError:
        assert len(data) % node_stride or len(data) // node_stride > limit
    else:
        assert len(nodes) == len(data) // node_stride
    with contextlib.suppress(CompactError):
        PeerAddress.from_compact(data)
    with contextlib.suppress(CompactError):
        NodeInfo.from_compact(data)


@given(st.text(max_size=80))
def test_arbitrary_text_gives_address_or_our_error(text: str) -> None:
    try:
        address = PeerAddress.parse(text)
    except CompactError:
        return
    assert PeerAddress.parse(str(address)) == address
