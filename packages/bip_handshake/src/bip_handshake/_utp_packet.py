"""The uTP (BEP 29) packet: a 20-byte header, an extension chain and a payload, sans-IO.

::

    0       4       8               16              24              32
    +-------+-------+---------------+---------------+---------------+
    | type  | ver   | extension     | connection_id                 |
    +-------+-------+---------------+---------------+---------------+
    | timestamp_microseconds                                        |
    +---------------+---------------+---------------+---------------+
    | timestamp_difference_microseconds                             |
    +---------------+---------------+---------------+---------------+
    | wnd_size                                                      |
    +---------------+---------------+---------------+---------------+
    | seq_nr                        | ack_nr                        |
    +---------------+---------------+---------------+---------------+

Each extension is ``(next extension type, length, bytes)``; type 1 is the
selective ack. BEP 29 says its bitmask is a multiple of 4 bytes, and ours always
is, but libtorrent 2.1 sends any length (95 bytes, say), so any length of 1 to 255
is taken; an empty one is ignored. Unknown extensions are skipped, as libtorrent
does, but the chain is bounded: a datagram cannot make us walk more than
:data:`MAX_EXTENSIONS` links.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from ._errors import HandshakeError

__all__ = [
    "HEADER_SIZE",
    "MAX_EXTENSIONS",
    "MAX_SACK_BYTES",
    "UtpPacket",
    "UtpPacketError",
    "UtpPacketType",
    "encode_packet",
    "sack_from_offsets",
    "sack_offsets",
]

HEADER_SIZE: Final = 20
"""Bytes in a uTP header, before extensions."""
VERSION: Final = 1
"""The only uTP version (the low nibble of the first byte)."""
MAX_EXTENSIONS: Final = 8
"""Extension links walked per packet at most; more is garbage (libtorrent knows two types)."""
MAX_SACK_BYTES: Final = 255
"""The largest selective ack bitmask (its length is one byte): 2040 packets past ``ack_nr + 1``."""
_EXT_SACK: Final = 1
_HEADER: Final = struct.Struct(">BBHIIIHH")


class UtpPacketError(HandshakeError):
    """A datagram is not a well-formed uTP packet (short, wrong version, bad extension...)."""


class UtpPacketType(enum.IntEnum):
    """The five uTP packet types (the high nibble of the first byte)."""

    DATA = 0
    """Carries payload; consumes a sequence number."""
    FIN = 1
    """The sender's last sequence number: end of its stream."""
    STATE = 2
    """An ack (or keepalive); carries no payload and consumes no sequence number."""
    RESET = 3
    """Terminates the connection at once."""
    SYN = 4
    """Opens a connection; its connection id is the initiator's receive id."""


def _check_u(name: str, value: int, bits: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise ValueError(f"{name} must be an unsigned {bits}-bit int, not {value!r}")


@dataclass(frozen=True, slots=True)
class UtpPacket:
    """One uTP packet.

    >>> packet = UtpPacket(UtpPacketType.DATA, 7, 1000, 20, 65536, 5, 4, payload=b"hi")
    >>> UtpPacket.decode(packet.encode()) == packet
    True
    >>> packet.encode()[:1].hex()  # (type << 4) | version
    '01'

    Attributes:
        type: the :class:`UtpPacketType`.
        connection_id: the 16-bit id the recipient knows the connection by.
        timestamp_us: the sender's clock in microseconds, modulo 2**32.
        timestamp_difference_us: the sender's last one-way delay measurement
            (its clock minus our timestamp), modulo 2**32; 0 when it has none.
        wnd_size: bytes the sender can still receive.
        seq_nr: the sender's sequence number (16 bits, wrapping).
        ack_nr: the last sequence number the sender received in order.
        selective_ack: the selective ack bitmask as sent (bit ``i`` of byte ``j``,
            least significant first, acks ``ack_nr + 2 + 8 * j + i``), or ``None``.
        payload: the data (only DATA packets carry any).
    """

    type: UtpPacketType
    connection_id: int
    timestamp_us: int
    timestamp_difference_us: int
    wnd_size: int
    seq_nr: int
    ack_nr: int
    selective_ack: bytes | None = None
    payload: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.type, UtpPacketType):
            raise ValueError(f"type must be a UtpPacketType, not {self.type!r}")
        _check_u("connection_id", self.connection_id, 16)
        _check_u("timestamp_us", self.timestamp_us, 32)
        _check_u("timestamp_difference_us", self.timestamp_difference_us, 32)
        _check_u("wnd_size", self.wnd_size, 32)
        _check_u("seq_nr", self.seq_nr, 16)
        _check_u("ack_nr", self.ack_nr, 16)
        sack = self.selective_ack
        if sack is not None and (
            not isinstance(sack, bytes) or not 1 <= len(sack) <= MAX_SACK_BYTES
        ):
            raise ValueError(f"a selective ack is 1..{MAX_SACK_BYTES} bytes, not {sack!r}")
        if not isinstance(self.payload, bytes):
            raise ValueError(f"payload must be bytes, not {type(self.payload).__name__}")

    def encode(self) -> bytes:
        """The packet as sent in one datagram.

        >>> len(UtpPacket(UtpPacketType.STATE, 1, 0, 0, 0, 1, 0, selective_ack=bytes(4)).encode())
        26
        """
        return encode_packet(
            self.type,
            self.connection_id,
            self.timestamp_us,
            self.timestamp_difference_us,
            self.wnd_size,
            self.seq_nr,
            self.ack_nr,
            self.selective_ack,
            self.payload,
        )

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> UtpPacket:
        """Parse one datagram.

        Raises:
            UtpPacketError: the datagram is not a uTP packet: shorter than a header,
                a version other than 1, an unknown type, a truncated or overlong
                extension chain, or a malformed selective ack.

        >>> UtpPacket.decode(b"d1:ad2:id20:" + bytes(20))  # a KRPC message
        Traceback (most recent call last):
        ...
        bip_handshake._utp_packet.UtpPacketError: not a uTP packet: version 4, type 6
        """
        view = memoryview(data)
        if len(view) < HEADER_SIZE:
            raise UtpPacketError(f"a uTP packet is at least {HEADER_SIZE} bytes, got {len(view)}")
        first, extension, conn_id, ts, ts_diff, wnd, seq, ack = _HEADER.unpack_from(view)
        kind = first >> 4
        if first & 0x0F != VERSION or kind > UtpPacketType.SYN:
            raise UtpPacketError(f"not a uTP packet: version {first & 0x0F}, type {kind}")
        offset = HEADER_SIZE
        sack: bytes | None = None
        links = 0
        while extension:
            links += 1
            if links > MAX_EXTENSIONS:
                raise UtpPacketError(f"more than {MAX_EXTENSIONS} extensions")
            if offset + 2 > len(view):
                raise UtpPacketError("truncated extension header")
            following, length = view[offset], view[offset + 1]
            start, offset = offset + 2, offset + 2 + length
            if offset > len(view):
                raise UtpPacketError(f"extension {extension} claims {length} bytes past the end")
            if extension == _EXT_SACK:
                if sack is not None:
                    raise UtpPacketError("two selective acks in one packet")
                if length:
                    sack = bytes(view[start:offset])
            # Any other type is skipped, as libtorrent does (libutp's extension bits...).
            extension = following
        # Every field came out of the struct in range: skip __post_init__'s checks, which
        # cost more than the parsing (this runs once per datagram received).
        packet = _new_packet(cls)
        for name, value in (
            ("type", _TYPES[kind]),
            ("connection_id", conn_id),
            ("timestamp_us", ts),
            ("timestamp_difference_us", ts_diff),
            ("wnd_size", wnd),
            ("seq_nr", seq),
            ("ack_nr", ack),
            ("selective_ack", sack),
            ("payload", bytes(view[offset:])),
        ):
            _set_field(packet, name, value)
        return packet


_new_packet = object.__new__
_set_field = object.__setattr__
_TYPES: Final = tuple(UtpPacketType)


def encode_packet(  # noqa: PLR0917 (the header's fields, in wire order)
    kind: UtpPacketType,
    connection_id: int,
    timestamp_us: int,
    timestamp_difference_us: int,
    wnd_size: int,
    seq_nr: int,
    ack_nr: int,
    selective_ack: bytes | None = None,
    payload: bytes = b"",
) -> bytes:
    """The datagram of a packet with these fields, unchecked: the fast path of
    :meth:`UtpPacket.encode` for callers whose values are in range by construction.

    Raises:
        struct.error: a field out of range (a bug of the caller's, not the peer's).

    >>> encode_packet(UtpPacketType.STATE, 1, 0, 0, 0, 1, 0).hex()[:8]
    '21000001'
    """
    header = _HEADER.pack(
        (kind << 4) | VERSION,
        _EXT_SACK if selective_ack is not None else 0,
        connection_id,
        timestamp_us,
        timestamp_difference_us,
        wnd_size,
        seq_nr,
        ack_nr,
    )
    if selective_ack is None:
        return header + payload if payload else header
    return b"".join((header, bytes((0, len(selective_ack))), selective_ack, payload))


def sack_offsets(bitmask: bytes) -> list[int]:
    """The offsets past ``ack_nr + 2`` that a selective ack bitmask acknowledges, ascending.

    >>> sack_offsets(bytes([0b00000101, 0, 0, 0b10000000]))
    [0, 2, 31]
    """
    offsets: list[int] = []
    for index, value in enumerate(bitmask):
        base = index * 8
        bits = value
        while bits:
            low = bits & -bits
            offsets.append(base + low.bit_length() - 1)
            bits ^= low
    return offsets


def sack_from_offsets(offsets: list[int] | set[int], limit: int = MAX_SACK_BYTES) -> bytes | None:
    """A selective ack bitmask acknowledging ``ack_nr + 2 + offset`` for each offset.

    The bitmask is as short as it can be, a multiple of 4 bytes as BEP 29 asks, and at
    most ``limit`` bytes; offsets beyond it are left out. ``None`` when no offset fits.

    >>> sack_from_offsets({0, 2, 31}).hex()
    '05000080'
    >>> sack_from_offsets(set()) is None
    True
    """
    fitting = [offset for offset in offsets if 0 <= offset < (limit // 4) * 32]
    if not fitting:
        return None
    size = (max(fitting) // 32 + 1) * 4
    mask = bytearray(size)
    for offset in fitting:
        mask[offset >> 3] |= 1 << (offset & 7)
    return bytes(mask)
