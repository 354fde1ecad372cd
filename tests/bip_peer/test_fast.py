"""The BEP 6 allowed-fast set, against the shared vectors and hypothesis."""

from __future__ import annotations

import doctest
import hashlib
import json
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_peer import _fast
from bip_peer._fast import IPV6_PREFIX_LENGTH, allowed_fast_set

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "peer_wire"
DATA: dict[str, Any] = json.loads((VECTORS / "bep6_allowed_fast.json").read_text())


def _reference(ip4: bytes, info_hash: bytes, num_pieces: int, k: int) -> list[int]:
    """The algorithm exactly as the BEP text writes it (IPv4 only), for comparison."""
    x = bytes([ip4[0], ip4[1], ip4[2], 0]) + info_hash
    a: list[int] = []
    k = min(k, num_pieces)
    while len(a) < k:
        x = hashlib.sha1(x).digest()
        for i in range(5):
            if len(a) >= k:
                break
            y = int.from_bytes(x[4 * i : 4 * i + 4], "big") % num_pieces
            if y not in a:
                a.append(y)
    return a


def test_doctests() -> None:
    assert doctest.testmod(_fast).failed == 0


@pytest.mark.parametrize("vector", DATA["vectors"], ids=lambda v: f"k={v['k']}")
def test_bep6_vectors(vector: dict[str, Any]) -> None:
    info_hash = bytes.fromhex(vector["infohash_hex"])
    got = allowed_fast_set(vector["ip"], info_hash, vector["num_pieces"], vector["k"])
    assert got == vector["expected"]
    # The same answer from an address object and from the IPv4-mapped IPv6 form.
    assert (
        allowed_fast_set(IPv4Address(vector["ip"]), info_hash, vector["num_pieces"], vector["k"])
        == got
    )
    mapped = IPv6Address("::ffff:" + vector["ip"])
    assert allowed_fast_set(mapped, info_hash, vector["num_pieces"], vector["k"]) == got


def test_same_slash_24_same_set() -> None:
    (prop,) = [p for p in DATA["property_vectors_anacrolix"] if "same /24" in p["property"]]
    info_hash = bytes(i ^ 0x55 for i in range(20))
    first, second = (
        allowed_fast_set(ip, info_hash, prop["num_pieces"], prop["k"]) for ip in prop["ips_equal"]
    )
    assert first == second
    assert allowed_fast_set(prop["ip_different"], info_hash, prop["num_pieces"], prop["k"]) != first


def test_k_equal_to_num_pieces_gives_every_piece() -> None:
    info_hash = bytes.fromhex("fe" * 20)
    got = allowed_fast_set("203.0.113.1", info_hash, 7, 7)
    assert sorted(got) == list(range(7))
    # And the order is the hash chain's, as the BEP loop produces it.
    assert got == _reference(bytes([203, 0, 113, 1]), info_hash, 7, 7)


@pytest.mark.parametrize(("num_pieces", "k"), [(0, 10), (10, 0), (0, 0)])
def test_empty(num_pieces: int, k: int) -> None:
    assert allowed_fast_set("1.2.3.4", bytes(20), num_pieces, k) == []


def test_more_wanted_than_pieces() -> None:
    assert sorted(allowed_fast_set("1.2.3.4", bytes(20), 3, 10)) == [0, 1, 2]
    assert allowed_fast_set("1.2.3.4", bytes(20), 1, 10) == [0]


def test_ipv6_masks_to_slash_48() -> None:
    info_hash = bytes(range(20))
    a = allowed_fast_set("2001:db8:1:aaaa::1", info_hash, 1000)
    b = allowed_fast_set("2001:db8:1:ffff:1:2:3:4", info_hash, 1000)
    c = allowed_fast_set("2001:db8:2::1", info_hash, 1000)
    assert a == b
    assert a != c
    assert len(a) == 10
    assert len(set(a)) == 10
    # The chain starts from the masked 16 bytes and the info-hash.
    prefix = (
        int(IPv6Address("2001:db8:1::")) >> (128 - IPV6_PREFIX_LENGTH) << (128 - IPV6_PREFIX_LENGTH)
    )
    first = hashlib.sha1(prefix.to_bytes(16, "big") + info_hash).digest()
    assert a[0] == int.from_bytes(first[:4], "big") % 1000


def test_degenerate_chain_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # A hash that never changes: the bounded loop stops and the set is completed in order.
    class _Stuck:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def digest(self) -> bytes:
            return bytes(20)

    monkeypatch.setattr(hashlib, "sha1", _Stuck)
    assert allowed_fast_set("1.2.3.4", bytes(20), 100, 4) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("not an ip", bytes(20), 10), ValueError),
        (("1.2.3.4", bytes(19), 10), ValueError),
        (("1.2.3.4", bytes(20), -1), ValueError),
        (("1.2.3.4", bytes(20), 2**32 + 1), ValueError),
        ((1234, bytes(20), 10), TypeError),
        (("1.2.3.4", "x" * 20, 10), TypeError),
        (("1.2.3.4", bytes(20), 10.0), TypeError),
        (("1.2.3.4", bytes(20), True), TypeError),
    ],
)
def test_bad_arguments(args: tuple[Any, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        allowed_fast_set(*args)


def test_negative_k() -> None:
    with pytest.raises(ValueError, match="k must not be negative"):
        allowed_fast_set("1.2.3.4", bytes(20), 10, -1)


@given(
    ip=st.ip_addresses(v=4),
    info_hash=st.binary(min_size=20, max_size=20),
    num_pieces=st.integers(min_value=1, max_value=5000),
    k=st.integers(min_value=0, max_value=20),
)
def test_matches_the_bep_text(ip: IPv4Address, info_hash: bytes, num_pieces: int, k: int) -> None:
    got = allowed_fast_set(ip, info_hash, num_pieces, k)
    assert got == _reference(ip.packed, info_hash, num_pieces, k)


@given(
    ip=st.ip_addresses(),
    info_hash=st.binary(min_size=20, max_size=20),
    num_pieces=st.integers(min_value=0, max_value=2**32),
    k=st.integers(min_value=0, max_value=30),
)
def test_properties(
    ip: IPv4Address | IPv6Address, info_hash: bytes, num_pieces: int, k: int
) -> None:
    got = allowed_fast_set(ip, info_hash, num_pieces, k)
    assert len(got) == min(k, num_pieces)
    assert len(set(got)) == len(got)
    assert all(0 <= index < num_pieces for index in got)
