"""Node ids: XOR metric, bucket prefixes, BEP 42 ids against the shared vectors."""

from __future__ import annotations

import json
import random
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_dht._errors import LocalProtocolError
from bip_dht._node_id import NodeId, crc32c, is_bep42_exempt

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "dht"
DATA: dict[str, Any] = json.loads((VECTORS / "bep42_node_id.json").read_text(encoding="utf-8"))

ids = st.binary(min_size=20, max_size=20).map(NodeId)


@pytest.mark.parametrize("case", DATA["crc32c_vectors"], ids=lambda c: c["crc32c_hex"])
def test_crc32c_vectors(case: dict[str, Any]) -> None:
    assert crc32c(bytes.fromhex(case["input_hex"])) == int(case["crc32c_hex"], 16)


@pytest.mark.parametrize("case", DATA["vectors"], ids=lambda c: f"{c['ip']}-{c['rand']}")
def test_bep42_vectors(case: dict[str, Any]) -> None:
    ip = ip_address(case["ip"])
    example = NodeId.from_hex(case["example_node_id"])
    assert example.is_valid_for(ip)
    if "invalid_variant_node_id" in case:
        assert not NodeId.from_hex(case["invalid_variant_node_id"]).is_valid_for(ip)
    for seed in range(5):
        made = NodeId.for_ip(ip, random.Random(seed), rand=case["rand"])
        assert made.is_valid_for(ip)
        assert made.value[19] == case["rand"]
        assert made.value[:2] == example.value[:2]
        assert made.value[2] & 0xF8 == example.value[2] & 0xF8
        if "expected_prefix_hex" in case:
            # the table's third byte carries 3 random low bits; the top 21 bits are fixed
            prefix = bytes.fromhex(case["expected_prefix_hex"])
            assert made.value[:2] == prefix[:2]
            assert made.value[2] & 0xF8 == prefix[2] & 0xF8
        if "derived" in case:
            assert made.value[:2].hex() == case["derived"]["crc32c_hex"][:4]


@pytest.mark.parametrize("case", DATA["vectors"], ids=lambda c: f"{c['ip']}-{c['rand']}")
def test_bep42_other_r_is_invalid(case: dict[str, Any]) -> None:
    # changing r (the low 3 bits of the last byte) changes the CRC, so the id stops matching
    ip = ip_address(case["ip"])
    raw = bytearray(bytes.fromhex(case["example_node_id"]))
    raw[19] ^= 0x01
    assert not NodeId(bytes(raw)).is_valid_for(ip)
    raw[19] ^= 0x01 | 0x80  # the high bits of the last byte are not part of r
    assert NodeId(bytes(raw)).is_valid_for(ip)


@pytest.mark.parametrize(
    "ip",
    ["10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.7.7", "169.254.1.1", "127.0.0.1",
     "::1", "fe80::1", "fd00::5", "::ffff:10.0.0.1"],
)  # fmt: skip
def test_local_addresses_are_exempt(ip: str) -> None:
    host = ip_address(ip)
    assert is_bep42_exempt(host)
    assert NodeId(bytes(20)).is_valid_for(host)


@pytest.mark.parametrize(
    "ip", ["172.32.0.1", "8.8.8.8", "11.0.0.1", "2001:db8::1", "::ffff:8.8.8.8"]
)
def test_public_addresses_are_not_exempt(ip: str) -> None:
    host = ip_address(ip)
    assert not is_bep42_exempt(host)
    assert not NodeId(bytes(20)).is_valid_for(host)
    assert NodeId.for_ip(host, random.Random(1)).is_valid_for(host)


def test_mapped_ipv4_is_checked_as_ipv4() -> None:
    v4 = IPv4Address("124.31.75.21")
    node = NodeId.for_ip(v4, random.Random(2))
    assert node.is_valid_for(IPv6Address("::ffff:124.31.75.21"))


@given(st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 2**32))
def test_generated_ids_are_valid_v4(address: int, rand: int, seed: int) -> None:
    ip = IPv4Address(address)
    assert NodeId.for_ip(ip, random.Random(seed), rand).is_valid_for(ip)


@given(st.integers(0, 2**128 - 1), st.integers(0, 2**32))
def test_generated_ids_are_valid_v6(address: int, seed: int) -> None:
    ip = IPv6Address(address)
    assert NodeId.for_ip(ip, random.Random(seed)).is_valid_for(ip)


@given(ids, ids)
def test_distance_is_xor(a: NodeId, b: NodeId) -> None:
    assert a.distance(b) == b.distance(a) == int(a) ^ int(b)
    assert (a.distance(b) == 0) == (a == b)
    cpl = a.common_prefix_length(b)
    assert 0 <= cpl <= 160
    assert (int(a) >> (160 - cpl)) == (int(b) >> (160 - cpl))
    if cpl < 160:
        assert (int(a) >> (159 - cpl)) != (int(b) >> (159 - cpl))


@given(ids, st.integers(0, 159), st.integers(0, 2**32))
def test_random_with_prefix(own: NodeId, prefix: int, seed: int) -> None:
    assert own.random_with_prefix(prefix, random.Random(seed)).common_prefix_length(own) == prefix


def test_random_with_prefix_uses_the_rng() -> None:
    own = NodeId(bytes(20))
    a = own.random_with_prefix(3, random.Random(1))
    assert a == own.random_with_prefix(3, random.Random(1))
    assert a != own.random_with_prefix(3, random.Random(2))
    assert own.random_with_prefix(159, random.Random(1)) == NodeId.from_int(1)


def test_exact_values() -> None:
    own = NodeId.from_int(0)
    assert NodeId.from_int(2**159).common_prefix_length(own) == 0
    assert NodeId.from_int(1).common_prefix_length(own) == 159
    assert own.common_prefix_length(own) == 160
    assert NodeId.from_int(5) < NodeId.from_int(6)
    assert str(NodeId.from_int(255)) == "00" * 19 + "ff"
    assert NodeId(bytearray(20)) == own  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make",
    [
        lambda: NodeId(b"x" * 19),
        lambda: NodeId("x" * 20),  # type: ignore[arg-type]
        lambda: NodeId.from_int(-1),
        lambda: NodeId.from_int(2**160),
        lambda: NodeId.from_int(True),
        lambda: NodeId.from_hex("zz"),
        lambda: NodeId.from_hex("00"),
        lambda: NodeId(bytes(20)).random_with_prefix(160, random.Random()),
        lambda: NodeId(bytes(20)).random_with_prefix(-1, random.Random()),
        lambda: NodeId.for_ip(IPv4Address("1.2.3.4"), random.Random(), rand=256),
        lambda: NodeId(bytes(20)).is_valid_for("1.2.3.4"),  # type: ignore[arg-type]
    ],
)
def test_misuse_raises_local_protocol_error(make: Any) -> None:
    with pytest.raises(LocalProtocolError):
        make()
