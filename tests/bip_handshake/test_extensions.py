"""Extensions: the reserved bytes of the handshake."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_handshake import _extensions
from bip_handshake._extensions import Extensions

E = Extensions
values = st.integers(min_value=0, max_value=2**64 - 1).map(Extensions)


@pytest.mark.parametrize(
    ("flag", "byte", "mask"),
    [
        (E.AZUREUS_MESSAGING, 0, 0x80),
        (E.LOCATION_AWARE, 2, 0x08),
        (E.EXTENSION_PROTOCOL, 5, 0x10),
        (E.DHT, 7, 0x01),
        (E.XBT_PEX, 7, 0x02),
        (E.FAST, 7, 0x04),
        (E.NAT_TRAVERSAL, 7, 0x08),
        (E.V2_UPGRADE, 7, 0x10),
    ],
)
def test_flag_positions(flag: Extensions, byte: int, mask: int) -> None:
    expected = bytearray(8)
    expected[byte] = mask
    assert flag.to_bytes() == bytes(expected)
    assert Extensions.from_bytes(bytes(expected)) == flag
    assert flag.name is not None
    assert getattr(Extensions, flag.name) is flag


@pytest.mark.parametrize(
    ("client", "reserved", "flags"),
    [
        ("libtorrent / qBittorrent", "0000000000100005", {"EXTENSION_PROTOCOL", "FAST", "DHT"}),
        (
            "libtorrent, hybrid torrent",
            "0000000000100015",
            {"EXTENSION_PROTOCOL", "V2_UPGRADE", "FAST", "DHT"},
        ),
        ("aria2", "0000000000100005", {"EXTENSION_PROTOCOL", "FAST", "DHT"}),
        ("Transmission", "0000000000100004", {"EXTENSION_PROTOCOL", "FAST"}),
        ("rtorrent", "0000000000100000", {"EXTENSION_PROTOCOL"}),
        ("ctorrent", "0000000000000000", set()),
    ],
)
def test_reserved_bytes_of_real_clients(client: str, reserved: str, flags: set[str]) -> None:
    ext = Extensions.from_hex(reserved)
    assert {flag.name for flag in ext} == flags, client
    assert not ext.unknown
    assert ext.hex() == reserved
    assert bool(ext) == bool(flags)


def test_vector_handshake_reserved() -> None:
    # peer_messages.json, libtorrent-test_fast_extension: reserved 0000000000100004
    ext = Extensions.from_bytes(bytes.fromhex("0000000000100004"))
    assert ext == E.EXTENSION_PROTOCOL | E.FAST
    assert E.DHT not in ext


def test_set_operations() -> None:
    a = E.DHT | E.FAST | E.EXTENSION_PROTOCOL
    b = E.FAST | E.V2_UPGRADE
    assert a & b == E.FAST
    assert a - b == E.DHT | E.EXTENSION_PROTOCOL
    assert a ^ b == E.DHT | E.EXTENSION_PROTOCOL | E.V2_UPGRADE
    assert (E.DHT | E.FAST) in a
    assert (E.DHT | E.V2_UPGRADE) not in a
    assert E.NONE in a
    assert "DHT" not in a
    assert list(a) == [E.EXTENSION_PROTOCOL, E.FAST, E.DHT]
    assert Extensions(2**64 - 1) == ~E.NONE
    assert E() == E.NONE
    assert not E.NONE


def test_unknown_bits_kept() -> None:
    raw = bytes.fromhex("0123456789abcdef")
    ext = Extensions.from_bytes(raw)
    assert ext.to_bytes() == raw
    assert (ext | E.DHT).unknown == ext.unknown
    assert (ext - E.FAST).unknown == ext.unknown
    assert (ext & ~E.NONE).to_bytes() == raw
    assert (ext ^ E.NONE).to_bytes() == raw
    assert ext.unknown | Extensions(sum(f.value for f in ext)) == ext
    assert "0x" in repr(ext.unknown)


def test_repr() -> None:
    assert repr(E.NONE) == "Extensions(0x0000000000000000: none)"
    assert repr(E.DHT | E.FAST) == "Extensions(0x0000000000000005: FAST|DHT)"
    assert repr(Extensions(0x0100)) == "Extensions(0x0000000000000100: 0x100)"
    assert (E.DHT | E.FAST).name is None


@pytest.mark.parametrize("bad", [b"", b"\x00" * 7, b"\x00" * 9])
def test_from_bytes_wrong_size(bad: bytes) -> None:
    with pytest.raises(ValueError, match="8 bytes"):
        Extensions.from_bytes(bad)


def test_from_bytes_accepts_buffers() -> None:
    assert Extensions.from_bytes(memoryview(b"\x00" * 7 + b"\x04")) == E.FAST
    assert Extensions.from_bytes(bytearray(b"\x00" * 7 + b"\x01")) == E.DHT


@pytest.mark.parametrize("bad", [-1, 2**64])
def test_value_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError, match="8 bytes"):
        Extensions(bad)


def test_value_wrong_type() -> None:
    with pytest.raises(TypeError):
        Extensions(True)
    with pytest.raises(TypeError):
        Extensions(b"\x00" * 8)  # type: ignore[arg-type]


def test_operators_reject_other_types() -> None:
    with pytest.raises(TypeError):
        _ = E.DHT | 1  # type: ignore[operator]
    with pytest.raises(TypeError):
        _ = E.DHT & 1  # type: ignore[operator]
    with pytest.raises(TypeError):
        _ = E.DHT ^ 1  # type: ignore[operator]
    with pytest.raises(TypeError):
        _ = E.DHT - 1  # type: ignore[operator]


def test_frozen_and_hashable() -> None:
    with pytest.raises(AttributeError):
        E.DHT.value = 3  # type: ignore[misc]
    assert len({E.DHT, Extensions(1), E.FAST}) == 2


@given(values)
def test_bytes_round_trip(ext: Extensions) -> None:
    assert Extensions.from_bytes(ext.to_bytes()) == ext
    assert Extensions.from_hex(ext.hex()) == ext
    assert len(ext.to_bytes()) == 8


@given(values, values)
def test_set_algebra(a: Extensions, b: Extensions) -> None:
    assert (a | b) - b == a - b
    assert (a & b) | (a - b) == a
    assert a ^ b == (a - b) | (b - a)
    assert a in (a | b)
    assert (a & b) in a
    assert ~~a == a
    assert (a | b).unknown == a.unknown | b.unknown
    known = Extensions(sum(flag.value for flag in a))
    assert known | a.unknown == a
    assert not (known & a.unknown)


def test_doctests() -> None:
    failures, tried = doctest.testmod(_extensions, optionflags=doctest.ELLIPSIS)
    assert tried > 0
    assert failures == 0
