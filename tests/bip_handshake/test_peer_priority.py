"""BEP 40 canonical peer priority and its CRC32-C."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_handshake import PeerAddress
from bip_handshake._peer_priority import crc32c, peer_priority


def at(text: str) -> PeerAddress:
    return PeerAddress.parse(text)


# -- CRC32-C ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0x00000000),
        (b"123456789", 0xE3069283),  # the catalogue check value of CRC-32C
        (bytes(32), 0x8A9136AA),  # RFC 3720 (iSCSI) B.4: 32 bytes of zeros
        (b"\xff" * 32, 0x62A8AB43),  # RFC 3720 B.4: 32 bytes of ones
        (bytes(range(32)), 0x46DD794E),  # RFC 3720 B.4: incrementing bytes
    ],
)
def test_crc32c_known_values(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected


def test_crc32c_is_not_zlibs() -> None:
    import zlib

    assert crc32c(b"123456789") != zlib.crc32(b"123456789")


def test_crc32c_takes_any_buffer() -> None:
    assert crc32c(bytearray(b"123456789")) == crc32c(memoryview(b"123456789")) == 0xE3069283


# -- BEP 40 -------------------------------------------------------------------------------


def test_bep40_examples() -> None:
    # The BEP's own test vectors.
    assert peer_priority(at("123.213.32.10:0"), at("98.76.54.32:0")) == 0xEC2D7224
    assert peer_priority(at("123.213.32.10:0"), at("123.213.32.234:0")) == 0x99568189


def test_same_ip_hashes_the_ports_lowest_first() -> None:
    expected = crc32c(b"\x01\x2c\x04\xd2")  # 300 then 1234, 16-bit big-endian
    assert peer_priority(at("230.12.123.3:1234"), at("230.12.123.3:300")) == expected
    assert peer_priority(
        at("[ffff:ffff:ffff:ffff::1]:1234"), at("[ffff:ffff:ffff:ffff::1]:300")
    ) == (expected)


def test_ipv4_masks() -> None:
    # Same /24: the whole addresses.
    assert peer_priority(at("230.12.123.1:1"), at("230.12.123.3:2")) == crc32c(
        bytes([230, 12, 123, 1, 230, 12, 123, 3])
    )
    # Same /16: FF.FF.FF.55.
    assert peer_priority(at("230.12.23.1:1"), at("230.12.123.3:2")) == crc32c(
        bytes([230, 12, 23, 1, 230, 12, 123, 1])
    )
    # Different /16: FF.FF.55.55, lowest first.
    assert peer_priority(at("230.120.23.1:1"), at("230.12.123.3:2")) == crc32c(
        bytes([230, 12, 0x51, 0x01, 230, 120, 0x15, 0x01])
    )


def _v6(host: str) -> bytes:
    return IPv6Address(host).packed


def _masked(raw: bytes, kept: int) -> bytes:
    return raw[:kept] + bytes(b & 0x55 for b in raw[kept:])


@pytest.mark.parametrize(
    ("a", "b", "kept"),
    [
        ("2001:db8:1::1", "2a00:1:2::3", 6),  # different /48: FFFF:FFFF:FFFF:5555:...
        ("2001:db8:1:ff00::1", "2001:db8:1:1100::3", 7),  # same /48: ...:FF55:5555:...
        ("2001:db8:1:ff00::1", "2001:db8:1:ff11::3", 8),  # same /56: ...:FFFF:5555:...
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2:3:4:5:7", 16),  # "etc.": down to the byte
    ],
)
def test_ipv6_masks(a: str, b: str, kept: int) -> None:
    first, second = sorted((_masked(_v6(a), kept), _masked(_v6(b), kept)))
    assert peer_priority(at(f"[{a}]:1"), at(f"[{b}]:2")) == crc32c(first + second)


def test_mapped_ipv4_counts_as_ipv4() -> None:
    plain = peer_priority(at("123.213.32.10:0"), at("98.76.54.32:0"))
    assert peer_priority(at("[::ffff:123.213.32.10]:0"), at("98.76.54.32:0")) == plain


def test_mixed_families_are_refused() -> None:
    with pytest.raises(ValueError, match="one family"):
        peer_priority(at("1.2.3.4:1"), at("[2001:db8::1]:1"))


ipv4 = st.builds(
    PeerAddress,
    st.integers(0, 2**32 - 1).map(IPv4Address),
    st.integers(0, 65535),
)
# Near each other often, so that every mask and the equal-IP case are reached.
ipv6 = st.builds(
    PeerAddress,
    st.integers(0, 2**128 - 1).map(IPv6Address),
    st.integers(0, 65535),
)
pairs = st.one_of(
    st.tuples(ipv4, ipv4),
    st.tuples(ipv6, ipv6),
    ipv4.flatmap(
        lambda a: st.tuples(
            st.just(a),
            st.integers(0, 255).map(
                lambda low: PeerAddress(IPv4Address((int(a.host) & ~0xFF) | low), a.port ^ 1)
            ),
        )
    ),
)


@given(pairs)
def test_symmetric_and_32_bits(pair: tuple[PeerAddress, PeerAddress]) -> None:
    a, b = pair
    value = peer_priority(a, b)
    assert value == peer_priority(b, a)
    assert 0 <= value < 2**32


@given(pairs)
def test_deterministic(pair: tuple[PeerAddress, PeerAddress]) -> None:
    a, b = pair
    assert peer_priority(a, b) == peer_priority(
        PeerAddress(a.host, a.port), PeerAddress(b.host, b.port)
    )
