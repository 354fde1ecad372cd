"""The uTP packet codec: header layout, extensions, round trips and garbage."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_handshake._errors import HandshakeError
from bip_handshake._utp_packet import (
    HEADER_SIZE,
    MAX_EXTENSIONS,
    MAX_SACK_BYTES,
    UtpPacket,
    UtpPacketError,
    UtpPacketType,
    sack_from_offsets,
    sack_offsets,
)

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
sacks = st.none() | st.binary(min_size=1, max_size=MAX_SACK_BYTES)
packets = st.builds(
    UtpPacket,
    st.sampled_from(UtpPacketType),
    u16,
    u32,
    u32,
    u32,
    u16,
    u16,
    selective_ack=sacks,
    payload=st.binary(max_size=1500),
)


def header(
    first: int = 0x01,
    extension: int = 0,
    conn_id: int = 7,
    seq: int = 5,
    ack: int = 4,
) -> bytes:
    return struct.pack(">BBHIIIHH", first, extension, conn_id, 1, 2, 3, seq, ack)


def test_known_layout() -> None:
    packet = UtpPacket(
        UtpPacketType.STATE, 0x1234, 0x01020304, 0x05060708, 0x0A0B0C0D, 0xBEEF, 0xCAFE
    )
    data = packet.encode()
    assert len(data) == HEADER_SIZE
    assert data[0] == (2 << 4) | 1
    assert data[1] == 0
    assert data[2:4] == b"\x12\x34"
    assert data[4:8] == bytes.fromhex("01020304")
    assert data[8:12] == bytes.fromhex("05060708")
    assert data[12:16] == bytes.fromhex("0a0b0c0d")
    assert data[16:18] == b"\xbe\xef"
    assert data[18:20] == b"\xca\xfe"


def test_selective_ack_layout() -> None:
    packet = UtpPacket(UtpPacketType.STATE, 1, 0, 0, 0, 1, 9, selective_ack=b"\x01\x00\x00\x80")
    data = packet.encode()
    assert data[1] == 1  # the first extension is a selective ack
    assert data[20:22] == b"\x00\x04"  # no next extension, 4 bytes
    assert data[22:26] == b"\x01\x00\x00\x80"
    assert sack_offsets(UtpPacket.decode(data).selective_ack or b"") == [0, 31]


@given(packets)
def test_round_trip(packet: UtpPacket) -> None:
    assert UtpPacket.decode(packet.encode()) == packet
    assert UtpPacket.decode(bytearray(packet.encode())) == packet
    assert UtpPacket.decode(memoryview(packet.encode())) == packet


@given(st.binary(max_size=200))
def test_garbage_gives_our_error(data: bytes) -> None:
    try:
        packet = UtpPacket.decode(data)
    except UtpPacketError:
        return
    assert isinstance(packet, UtpPacket)


@given(st.binary(min_size=HEADER_SIZE, max_size=120), st.integers(0, 255))
def test_garbage_after_a_valid_first_byte(data: bytes, extension: int) -> None:
    mutated = bytes([0x41, extension]) + data[2:]
    with contextlib.suppress(UtpPacketError):
        UtpPacket.decode(mutated)


def test_every_prefix_of_a_packet() -> None:
    data = UtpPacket(
        UtpPacketType.DATA, 1, 2, 3, 4, 5, 6, selective_ack=bytes(8), payload=b"xyz"
    ).encode()
    for size in range(len(data)):
        prefix = data[:size]
        if size < HEADER_SIZE + 2 + 8:
            with pytest.raises(UtpPacketError):
                UtpPacket.decode(prefix)


def test_short_wrong_version_and_type() -> None:
    with pytest.raises(UtpPacketError, match="at least 20"):
        UtpPacket.decode(header()[:19])
    with pytest.raises(UtpPacketError, match="version 2"):
        UtpPacket.decode(header(first=0x02))
    with pytest.raises(UtpPacketError, match="type 5"):
        UtpPacket.decode(header(first=0x51))
    with pytest.raises(UtpPacketError, match="version 4, type 6"):
        UtpPacket.decode(b"d1:ad2:id20:" + bytes(20))  # a KRPC message
    assert issubclass(UtpPacketError, HandshakeError)


def test_unknown_extensions_are_skipped() -> None:
    # extension 2 (libutp's extension bits, 8 bytes), then a selective ack, then data.
    data = header(extension=2) + bytes([1, 8]) + bytes(8) + bytes([0, 4]) + b"\x02\0\0\0" + b"hi"
    packet = UtpPacket.decode(data)
    assert packet.selective_ack == b"\x02\0\0\0"
    assert packet.payload == b"hi"
    unknown = header(extension=77) + bytes([0, 3]) + b"abc" + b"payload"
    assert UtpPacket.decode(unknown).payload == b"payload"
    assert UtpPacket.decode(unknown).selective_ack is None


def test_bad_extensions() -> None:
    with pytest.raises(UtpPacketError, match="truncated"):
        UtpPacket.decode(header(extension=1) + b"\x00")
    with pytest.raises(UtpPacketError, match="past the end"):
        UtpPacket.decode(header(extension=1) + bytes([0, 8]) + bytes(4))
    with pytest.raises(UtpPacketError, match="two selective acks"):
        UtpPacket.decode(header(extension=1) + bytes([1, 4]) + bytes(4) + bytes([0, 4]) + bytes(4))
    chain = b"".join(bytes([9, 0]) for _ in range(MAX_EXTENSIONS + 1))
    with pytest.raises(UtpPacketError, match="more than"):
        UtpPacket.decode(header(extension=9) + chain)
    ok = header(extension=9) + b"".join(bytes([9, 0]) for _ in range(MAX_EXTENSIONS - 1))
    assert UtpPacket.decode(ok + bytes([0, 0])).payload == b""


def test_selective_acks_of_any_length() -> None:
    # BEP 29 asks for multiples of 4 bytes; libtorrent 2.1 sends e.g. 95 bytes.
    for length in (1, 3, 5, 95, MAX_SACK_BYTES):
        mask = bytes(range(1, length + 1))
        packet = UtpPacket.decode(header(extension=1) + bytes([0, length]) + mask + b"data")
        assert packet.selective_ack == mask
        assert packet.payload == b"data"
    empty = UtpPacket.decode(header(extension=1) + bytes([0, 0]) + b"data")
    assert empty.selective_ack is None
    assert empty.payload == b"data"


def test_field_validation() -> None:
    with pytest.raises(ValueError, match="connection_id"):
        UtpPacket(UtpPacketType.DATA, 0x10000, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="seq_nr"):
        UtpPacket(UtpPacketType.DATA, 0, 0, 0, 0, -1, 0)
    with pytest.raises(ValueError, match="timestamp_us"):
        UtpPacket(UtpPacketType.DATA, 0, 1 << 32, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="selective ack"):
        UtpPacket(UtpPacketType.STATE, 0, 0, 0, 0, 0, 0, selective_ack=b"")
    with pytest.raises(ValueError, match="selective ack"):
        UtpPacket(UtpPacketType.STATE, 0, 0, 0, 0, 0, 0, selective_ack=bytes(256))
    with pytest.raises(ValueError, match="type"):
        UtpPacket(3, 0, 0, 0, 0, 0, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="payload"):
        UtpPacket(UtpPacketType.DATA, 0, 0, 0, 0, 0, 0, payload="text")  # type: ignore[arg-type]


@given(st.sets(st.integers(0, (MAX_SACK_BYTES // 4) * 32 - 1)))
def test_sack_bitmask_round_trip(offsets: set[int]) -> None:
    mask = sack_from_offsets(offsets)
    if not offsets:
        assert mask is None
        return
    assert mask is not None
    assert len(mask) % 4 == 0
    assert 4 <= len(mask) <= MAX_SACK_BYTES
    assert sack_offsets(mask) == sorted(offsets)


def test_sack_bitmask_limit() -> None:
    assert sack_from_offsets({0, 40}, limit=4) == b"\x01\0\0\0"
    assert sack_from_offsets({40}, limit=4) is None
    assert sack_from_offsets({40}, limit=7) is None  # whole 4-byte words only
    assert len(sack_from_offsets({(MAX_SACK_BYTES // 4) * 32 - 1}) or b"") == 252
