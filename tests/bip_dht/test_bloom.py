"""BEP 33 scrape bloom filters: the shared vectors, unions and estimates."""

from __future__ import annotations

import json
import math
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_dht._bloom import BLOOM_BITS, BLOOM_BYTES, ScrapeBloom
from bip_dht._errors import KRPCError

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "dht"
_DATA: dict[str, Any] = json.loads(
    (VECTORS / "bep33_scrape_bloom.json").read_text(encoding="utf-8")
)

ipv4s = st.integers(0, 2**32 - 1).map(IPv4Address)
ipv6s = st.integers(0, 2**128 - 1).map(IPv6Address)
addresses = st.one_of(ipv4s, ipv6s)


def _range(first: str, last: str) -> list[IPv4Address | IPv6Address]:
    start, stop = ip_address(first), ip_address(last)
    return [ip_address(value) for value in range(int(start), int(stop) + 1)]


@pytest.mark.parametrize("vector", _DATA["vectors"], ids=lambda vector: vector["name"][:40])
def test_vectors(vector: dict[str, Any]) -> None:
    bloom = ScrapeBloom()
    inserted = vector["inserted"]
    for key in ("ipv4_range", "ipv6_range"):
        if key in inserted:
            for address in _range(*inserted[key]):
                bloom.insert(address)
    assert bloom.to_bytes().hex() == vector["bloom_hex"]
    assert bloom.estimate() == pytest.approx(
        vector["expected_estimate"], abs=vector["estimate_tolerance"]
    )
    # Reading the wire form gives the same filter and the same estimate.
    read = ScrapeBloom.from_bytes(bytes.fromhex(vector["bloom_hex"]))
    assert read == bloom
    assert read.estimate() == bloom.estimate()


def test_union_of_the_vector_halves_is_the_whole() -> None:
    (both, only_v4) = _DATA["vectors"]
    v6 = ScrapeBloom()
    for address in _range(*both["inserted"]["ipv6_range"]):
        v6.insert(address)
    v4 = ScrapeBloom.from_bytes(bytes.fromhex(only_v4["bloom_hex"]))
    assert (v4 | v6).to_bytes().hex() == both["bloom_hex"]
    assert ScrapeBloom.union([v4, v6]).to_bytes().hex() == both["bloom_hex"]


def test_empty_and_full_filters_have_finite_estimates() -> None:
    assert ScrapeBloom().zero_bits() == BLOOM_BITS
    assert ScrapeBloom().estimate() == pytest.approx(0.5)
    full = ScrapeBloom.from_bytes(b"\xff" * BLOOM_BYTES)
    assert full.zero_bits() == 0
    assert math.isfinite(full.estimate())
    assert full.estimate() > 7000


@pytest.mark.parametrize("size", [0, 255, 257, 512])
def test_from_bytes_rejects_other_sizes(size: int) -> None:
    with pytest.raises(KRPCError, match="256 bytes"):
        ScrapeBloom.from_bytes(bytes(size))


def test_insert_rejects_non_addresses() -> None:
    with pytest.raises(TypeError):
        ScrapeBloom().insert("1.2.3.4")  # type: ignore[arg-type]
    assert "1.2.3.4" not in ScrapeBloom()


def test_or_with_other_types_is_not_implemented() -> None:
    with pytest.raises(TypeError):
        ScrapeBloom() | b"x"  # type: ignore[operator]
    assert ScrapeBloom() != b"\x00" * BLOOM_BYTES
    bloom = ScrapeBloom()
    with pytest.raises(TypeError):
        bloom |= b"x"  # type: ignore[arg-type]
    assert repr(ScrapeBloom()) == "ScrapeBloom(estimate=0.5)"


@given(st.lists(addresses, max_size=50))
def test_inserted_addresses_are_members(inserted: list[IPv4Address | IPv6Address]) -> None:
    bloom = ScrapeBloom()
    for address in inserted:
        bloom.insert(address)
    assert all(address in bloom for address in inserted)
    # Each insert sets at most two bits.
    assert BLOOM_BITS - bloom.zero_bits() <= 2 * len(inserted)


@given(st.lists(addresses, max_size=30), st.lists(addresses, max_size=30))
def test_union_equals_inserting_both(
    left: list[IPv4Address | IPv6Address], right: list[IPv4Address | IPv6Address]
) -> None:
    a, b, both = ScrapeBloom(), ScrapeBloom(), ScrapeBloom()
    for address in left:
        a.insert(address)
        both.insert(address)
    for address in right:
        b.insert(address)
        both.insert(address)
    assert a | b == both
    assert b | a == both
    a |= b
    assert a == both


@given(st.integers(0, 1000))
def test_estimate_tracks_distinct_counts(count: int) -> None:
    bloom = ScrapeBloom()
    for value in range(count):
        bloom.insert(IPv4Address(0x0A000000 + value))
    # Loose: a 2048-bit filter with k=2 is within a few percent up to a thousand or so.
    assert abs(bloom.estimate() - count) <= 3 + 0.08 * count


@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_a_filter_or_our_error(data: bytes) -> None:
    try:
        bloom = ScrapeBloom.from_bytes(data)
    except KRPCError:
        assert len(data) != BLOOM_BYTES
    else:
        assert bloom.to_bytes() == data
        assert 0 <= bloom.estimate() < 8000
