"""The fast paths of compact addresses and BEP 40 priority, against the plain implementations.

PeerAddress, NodeInfo and peer_priority decide on integers and skip re-checking parts already
known valid; each test here compares them with the straightforward ipaddress-property versions
they replaced, on addresses biased towards the edges (mapped, unspecified, multicast, port 0).
"""

from __future__ import annotations

import dataclasses
import enum
from ipaddress import IPv4Address, IPv6Address
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_handshake._compact import (
    CompactError,
    NodeInfo,
    PeerAddress,
    encode_compact_nodes,
    encode_compact_peers,
    parse_compact_nodes,
    parse_compact_peers,
)
from bip_handshake._peer_priority import crc32c, peer_priority

# ------------------------------------------------------------------- the plain implementations


def _plain_normalized(address: PeerAddress) -> PeerAddress:
    host = address.host
    if isinstance(host, IPv6Address) and host.ipv4_mapped is not None:
        return PeerAddress(host.ipv4_mapped, address.port)
    return address


def _plain_is_connectable(address: PeerAddress) -> bool:
    host = _plain_normalized(address).host
    broadcast = host == IPv4Address("255.255.255.255")  # the limited broadcast: no peer
    return address.port != 0 and not (host.is_unspecified or host.is_multicast or broadcast)


def _plain_to_compact(address: PeerAddress) -> bytes:
    return address.host.packed + address.port.to_bytes(2, "big")


def _plain_from_compact(raw: bytes) -> PeerAddress:
    if len(raw) == 6:
        return PeerAddress(IPv4Address(raw[:4]), int.from_bytes(raw[4:], "big"))
    return PeerAddress(IPv6Address(raw[:16]), int.from_bytes(raw[16:], "big"))


def _plain_priority(a: PeerAddress, b: PeerAddress) -> int:
    a, b = _plain_normalized(a), _plain_normalized(b)
    if a.host == b.host:
        low, high = sorted((a.port, b.port))
        return crc32c(low.to_bytes(2, "big") + high.to_bytes(2, "big"))
    ours, theirs = a.host.packed, b.host.packed
    first_difference = next(i for i, (x, y) in enumerate(zip(ours, theirs, strict=True)) if x != y)
    kept = max(2 if len(ours) == 4 else 6, first_difference + 1)

    def mask(raw: bytes) -> bytes:
        return raw[:kept] + bytes(byte & 0x55 for byte in raw[kept:])

    first, second = mask(ours), mask(theirs)
    return crc32c(min(first, second) + max(first, second))


# ------------------------------------------------------------------------------- strategies

_EDGE_HOSTS = [
    IPv4Address(text)
    for text in ("0.0.0.0", "0.0.0.1", "223.255.255.255", "224.0.0.0", "239.255.255.255")
] + [IPv4Address(text) for text in ("240.0.0.0", "255.255.255.255", "127.0.0.1")]
_EDGE_HOSTS6 = [
    IPv6Address(text)
    for text in (
        "::",
        "::1",
        "::ffff:0.0.0.0",
        "::ffff:224.0.0.1",
        "::ffff:1.2.3.4",
        "::fffe:0:0",
        "::1:ffff:0:0",
        "::ffff:0:0:0",
        "feff::1",
        "ff00::",
        "ff02::1",
        "2001:db8::1",
    )
]
_mapped = st.integers(0, 0xFFFFFFFF).map(lambda value: IPv6Address(0xFFFF << 32 | value))
hosts: st.SearchStrategy[IPv4Address | IPv6Address] = st.one_of(
    st.ip_addresses(v=4),
    st.ip_addresses(v=6),
    _mapped,
    st.sampled_from([*_EDGE_HOSTS, *_EDGE_HOSTS6]),
)
ports = st.one_of(st.just(0), st.just(0xFFFF), st.integers(0, 0xFFFF))
addresses = st.builds(PeerAddress, hosts, ports)


# ------------------------------------------------------------------------------- equivalence


@given(addresses)
def test_address_checks_match_the_plain_ones(address: PeerAddress) -> None:
    normal = address.normalized()
    assert normal == _plain_normalized(address)
    assert type(normal.host) is type(_plain_normalized(address).host)
    assert address.is_connectable is _plain_is_connectable(address)
    assert normal.is_connectable is _plain_is_connectable(address)
    compact = address.to_compact()
    assert compact == _plain_to_compact(address)
    decoded = PeerAddress.from_compact(compact)
    assert decoded == _plain_from_compact(compact) == address
    assert hash(decoded) == hash(address)
    assert repr(decoded) == repr(address)


@pytest.mark.parametrize("family", [4, 6])
@given(data=st.data())
def test_bulk_decoding_matches_entry_by_entry(family: Literal[4, 6], data: st.DataObject) -> None:
    size = 6 if family == 4 else 18
    raw = data.draw(st.binary(max_size=size * 6).map(lambda b: b[: len(b) - len(b) % size]))
    peers = parse_compact_peers(raw, family)
    assert peers == [_plain_from_compact(raw[i : i + size]) for i in range(0, len(raw), size)]
    assert encode_compact_peers(peers, family) == raw
    node_ids = data.draw(st.lists(st.binary(min_size=20, max_size=20), min_size=len(peers)))
    nodes_raw = b"".join(n + p.to_compact() for n, p in zip(node_ids, peers, strict=False))
    nodes = parse_compact_nodes(nodes_raw, family)
    assert nodes == [NodeInfo(n, p) for n, p in zip(node_ids, peers, strict=False)]
    assert encode_compact_nodes(nodes, family) == nodes_raw
    assert all(type(node.node_id) is bytes for node in nodes)


def _near(family: Literal[4, 6]) -> st.SearchStrategy[tuple[PeerAddress, PeerAddress]]:
    """Two addresses of *family* that often share a long prefix (or are the same host)."""
    bits = 32 if family == 4 else 128
    kind = IPv4Address if family == 4 else IPv6Address

    def pair(base: int, flip: int, ports: tuple[int, int]) -> tuple[PeerAddress, PeerAddress]:
        return PeerAddress(kind(base), ports[0]), PeerAddress(kind(base ^ flip), ports[1])

    flips = st.one_of(st.just(0), st.integers(0, bits - 1).map(lambda n: 1 << n))
    return st.builds(
        pair,
        st.integers(0, (1 << bits) - 1),
        st.one_of(flips, st.integers(0, (1 << bits) - 1)),
        st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    ).filter(_one_family)


def _one_family(pair: tuple[PeerAddress, PeerAddress]) -> bool:
    """BEP 40 compares one family: an IPv4-mapped address beside a plain IPv6 one is a
    caller's error (ValueError), tested apart (the mapped pair is IPv4 for both)."""
    a, b = pair
    return a.normalized().family == b.normalized().family


@pytest.mark.parametrize("family", [4, 6])
@given(data=st.data())
def test_peer_priority_matches_the_byte_masking(family: Literal[4, 6], data: st.DataObject) -> None:
    a, b = data.draw(_near(family))
    assert peer_priority(a, b) == peer_priority(b, a) == _plain_priority(a, b)


@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF), ports, ports)
def test_peer_priority_of_mapped_addresses_matches(x: int, y: int, p: int, q: int) -> None:
    a = PeerAddress(IPv6Address(0xFFFF << 32 | x), p)
    b = PeerAddress(IPv4Address(y), q)
    assert peer_priority(a, b) == _plain_priority(a, b)


# --------------------------------------------------------------- what the fast paths leave alone


class _Port(enum.IntEnum):
    HTTP = 80


class _Host(IPv4Address):
    """An ipaddress subclass that calls every address multicast: the slow paths ask it."""

    @property
    def is_multicast(self) -> bool:
        return True


class _Tagged(PeerAddress):
    """A subclass whose constructor counts: decoding into it must go through it."""

    made = 0

    def __post_init__(self) -> None:
        PeerAddress.__post_init__(self)
        _Tagged.made += 1


def test_unusual_parts_take_the_full_checks() -> None:
    host = IPv4Address("1.2.3.4")
    assert PeerAddress(host, _Port.HTTP).port == 80  # an int subclass is still a port
    for port in (True, False, 65536, -1, 80.0, "80"):
        with pytest.raises(CompactError):
            PeerAddress(host, port)  # type: ignore[arg-type]
    with pytest.raises(CompactError, match="scoped"):
        PeerAddress(IPv6Address("fe80::1%eth0"), 80)
    with pytest.raises(CompactError, match="IPv4Address or IPv6Address"):
        PeerAddress(1, 80)  # type: ignore[arg-type]
    odd = PeerAddress(_Host("1.2.3.4"), 80)
    assert not odd.is_connectable
    assert odd.normalized() is odd
    assert odd.to_compact() == bytes.fromhex("010203040050")
    with pytest.raises(CompactError, match="20 bytes"):
        NodeInfo(b"x" * 19, PeerAddress(host, 1))
    assert NodeInfo(memoryview(b"x" * 20), PeerAddress(host, 1)).node_id == b"x" * 20  # type: ignore[arg-type]


def test_decoding_into_a_subclass_runs_its_constructor() -> None:
    before = _Tagged.made
    decoded = _Tagged.from_compact(bytes.fromhex("010203040050"))
    assert type(decoded) is _Tagged
    assert _Tagged.made == before + 1
    assert type(PeerAddress.from_compact(bytes.fromhex("010203040050"))) is PeerAddress


def test_fast_made_values_are_ordinary_frozen_dataclasses() -> None:
    (peer,) = parse_compact_peers(bytes.fromhex("010203040050"))
    (node,) = parse_compact_nodes(bytes(20) + bytes.fromhex("010203040050"))
    mapped = PeerAddress(IPv6Address("::ffff:1.2.3.4"), 80).normalized()
    for value in (peer, mapped, node.address):
        with pytest.raises(dataclasses.FrozenInstanceError):
            value.port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.node_id = b"y" * 20  # type: ignore[misc]
    assert peer == mapped == node.address == PeerAddress(IPv4Address("1.2.3.4"), 80)
    assert len({peer, mapped, node.address}) == 1
    assert dataclasses.replace(peer, port=81).port == 81
    assert node == NodeInfo(bytes(20), peer)
