"""Peer wire messages and their framing (BEP 3, 5, 6, 10 and 52), sans-IO.

After the handshake, both directions of a connection are a stream of messages, each a 4-byte
big-endian length followed by that many bytes: a one-byte message id and its payload. A length of
zero is a keep-alive. This module holds one frozen dataclass per message, each with
:meth:`~Message.encode`, and :class:`MessageDecoder`, which turns received bytes into messages
incrementally and bounds what a peer can make us buffer.

The decoder is the receive hot path, so it is written to move 16 KiB ``piece`` messages with as
few copies as Python allows:

- a message wholly inside one received chunk is parsed in place, and a piece's block is returned
  as a read-only :class:`memoryview` slice of that chunk (no copy at all);
- a message that straddles chunks is copied once into a :class:`bytearray` allocated at its exact
  size as soon as its length and id are known (never re-sliced); only a payload over 64 KiB
  (a huge bitfield or extension message, never a piece) is grown as it arrives instead, so
  that a peer announcing a long message must send it before we hold its memory;
- the decoder keeps an offset into the current chunk instead of slicing the consumed bytes off.

Two consequences: the decoder keeps references to the chunks given to
:meth:`MessageDecoder.receive_data` and piece blocks may point into them, so a caller that reuses
a buffer (``receive_into``) must not overwrite it while messages from it are alive; and a block
kept for long keeps its whole received chunk alive, so a caller that holds blocks (say, until
their piece is complete) should write them into the piece's buffer, which is the one copy the
issue allows, rather than keep the views.

Bitfields themselves are :class:`bip_metainfo.PieceSet`'s to pack and unpack.
"""

from __future__ import annotations

import abc
import enum
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final

from ._errors import RemoteProtocolError

__all__ = [
    "BLOCK_SIZE",
    "DEFAULT_MAX_MESSAGE_LENGTH",
    "NEED_DATA",
    "AllowedFast",
    "Bitfield",
    "Cancel",
    "Choke",
    "Extended",
    "HashReject",
    "HashRequest",
    "Hashes",
    "Have",
    "HaveAll",
    "HaveNone",
    "Interested",
    "KeepAlive",
    "Message",
    "MessageDecoder",
    "NeedData",
    "NotInterested",
    "Piece",
    "Port",
    "RejectRequest",
    "Request",
    "Suggest",
    "Unchoke",
    "UnknownMessage",
]

BLOCK_SIZE: Final = 16384
"""The block size every client requests (16 KiB); many refuse larger requests."""

DEFAULT_MAX_MESSAGE_LENGTH: Final = 1 << 20
"""The largest length prefix :class:`MessageDecoder` accepts by default: 1 MiB.

A piece message is 16 KiB + 9 bytes, so the bound is set by the other variable-length
messages: a bitfield of up to 8,388,600 pieces (far beyond the largest real torrents), a BEP 52
``hashes`` reply of 32,000 hashes, or an extension message carrying a 16 KiB metadata piece. A
peer can make us allocate at most this much per connection."""

_U32_MAX: Final = 0xFFFFFFFF
_PREALLOCATE_LIMIT: Final = 64 * 1024  # payloads up to this are allocated whole on their head
_HEADER = struct.Struct(">I")
_HEADER_ID = struct.Struct(">IB")
_EXTENDED_HEAD = struct.Struct(">IBB")
_U32_ID = struct.Struct(">IBI")
_U32X3_ID = struct.Struct(">IBIII")
_HEAD_FIELDS = _U32X3_ID  # a message head and three uint32 (MessageDecoder's fast path)
_PIECE_HEAD = struct.Struct(">IBII")
_II = struct.Struct(">II")
_III = struct.Struct(">III")
_I = struct.Struct(">I")
_H = struct.Struct(">H")
_HASH_FIELDS = struct.Struct(">32sIIII")
_HASH_HEAD = struct.Struct(">IB32sIIII")
_PIECES_ROOT_LENGTH: Final = 32


class NeedData(enum.Enum):
    """The type of :data:`NEED_DATA`: the decoder has no whole message yet."""

    NEED_DATA = "NEED_DATA"
    """Feed more bytes with :meth:`MessageDecoder.receive_data`."""

    def __repr__(self) -> str:
        """The bare name, as h11's sentinels print."""
        return self.name


NEED_DATA: Final = NeedData.NEED_DATA
"""Returned by :meth:`MessageDecoder.next_message` when it needs more bytes; compare with ``is``."""


# ---------------------------------------------------------------------------- field checks


def _check_uint(name: str, value: object, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise ValueError(f"{name} must be in 0..{maximum}, not {value}")


def _check_u32(name: str, value: object) -> None:
    _check_uint(name, value, _U32_MAX)


def _check_block_fields(index: object, begin: object, length: object) -> None:
    """Check the three uint32 of a request, cancel or reject; the common case in one test."""
    if not (
        type(index) is int
        and type(begin) is int
        and type(length) is int
        and 0 <= index <= _U32_MAX
        and 0 <= begin <= _U32_MAX
        and 0 <= length <= _U32_MAX
    ):
        _check_u32("index", index)
        _check_u32("begin", begin)
        _check_u32("length", length)


def _as_bytes(name: str, value: object) -> bytes:
    """``value`` as immutable bytes (a copy only when it was mutable or not bytes)."""
    if type(value) is bytes:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{name} must be bytes, not {type(value).__name__}")


def _set(message: Message, name: str, value: object) -> None:
    object.__setattr__(message, name, value)


# ---------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Message(abc.ABC):
    """Base class of every peer wire message.

    ``message_id`` is the id byte on the wire (``None`` for :class:`KeepAlive`, which has none);
    :meth:`encode` gives the whole message, length prefix included.
    """

    message_id: ClassVar[int | None]

    @abc.abstractmethod
    def encode(self) -> bytes:
        """The message as sent on the wire, its 4-byte length prefix included."""


@dataclass(frozen=True, slots=True)
class KeepAlive(Message):
    """A zero-length message, sent to keep an idle connection open (BEP 3).

    >>> KeepAlive().encode()
    b'\\x00\\x00\\x00\\x00'
    """

    message_id: ClassVar[int | None] = None

    def encode(self) -> bytes:
        """Four zero bytes."""
        return b"\x00\x00\x00\x00"


@dataclass(frozen=True, slots=True)
class Choke(Message):
    """We will not answer the peer's requests (BEP 3, id 0).

    >>> Choke().encode().hex()
    '0000000100'
    """

    message_id: ClassVar[int | None] = 0

    def encode(self) -> bytes:
        """Length 1, id 0."""
        return b"\x00\x00\x00\x01\x00"


@dataclass(frozen=True, slots=True)
class Unchoke(Message):
    """We will answer the peer's requests (BEP 3, id 1).

    >>> Unchoke().encode().hex()
    '0000000101'
    """

    message_id: ClassVar[int | None] = 1

    def encode(self) -> bytes:
        """Length 1, id 1."""
        return b"\x00\x00\x00\x01\x01"


@dataclass(frozen=True, slots=True)
class Interested(Message):
    """We want pieces the peer has (BEP 3, id 2).

    >>> Interested().encode().hex()
    '0000000102'
    """

    message_id: ClassVar[int | None] = 2

    def encode(self) -> bytes:
        """Length 1, id 2."""
        return b"\x00\x00\x00\x01\x02"


@dataclass(frozen=True, slots=True)
class NotInterested(Message):
    """We want nothing the peer has (BEP 3, id 3).

    >>> NotInterested().encode().hex()
    '0000000103'
    """

    message_id: ClassVar[int | None] = 3

    def encode(self) -> bytes:
        """Length 1, id 3."""
        return b"\x00\x00\x00\x01\x03"


@dataclass(frozen=True, slots=True)
class Have(Message):
    """The sender has just completed and verified piece ``index`` (BEP 3, id 4).

    >>> Have(42).encode().hex()
    '00000005040000002a'
    """

    message_id: ClassVar[int | None] = 4
    index: int

    def __post_init__(self) -> None:
        """Check that ``index`` is a uint32."""
        index = self.index
        if type(index) is not int or not 0 <= index <= _U32_MAX:
            _check_u32("index", index)

    def encode(self) -> bytes:
        """Length 5, id 4, the index."""
        return _U32_ID.pack(5, 4, self.index)


@dataclass(frozen=True, slots=True)
class Bitfield(Message):
    """The pieces the sender has, one bit each, most significant bit first (BEP 3, id 5).

    Only valid as the first message after the handshake; its length must be ``ceil(pieces / 8)``
    with the spare bits clear (see :meth:`bip_metainfo.PieceSet.from_bitfield`).

    >>> Bitfield(b"\\x80").encode().hex()
    '000000020580'
    """

    message_id: ClassVar[int | None] = 5
    bits: bytes

    def __post_init__(self) -> None:
        """Keep ``bits`` as immutable bytes and check it fits a message."""
        bits = _as_bytes("bits", self.bits)
        _set(self, "bits", bits)
        if len(bits) > _U32_MAX - 1:
            raise ValueError("a bitfield this long does not fit a message")

    def encode(self) -> bytes:
        """Length, id 5, the bits."""
        return _HEADER_ID.pack(len(self.bits) + 1, 5) + self.bits


# Request and Piece are built once per block by whoever sends them: their __init__ is written
# out (init=False) because the one dataclass generates for a frozen class sets each field through
# object.__setattr__ and then calls __post_init__, twice the cost of checking and setting the
# slots directly (through the setters defined after Piece).


@dataclass(frozen=True, slots=True, init=False)
class Request(Message):
    """Ask for ``length`` bytes of piece ``index`` from offset ``begin`` (BEP 3, id 6).

    >>> Request(0, 0, 16384).encode().hex()
    '0000000d06000000000000000000004000'
    """

    message_id: ClassVar[int | None] = 6
    index: int
    begin: int
    length: int

    def __init__(self, index: int, begin: int, length: int) -> None:
        """Check that every field is a uint32."""
        if not (
            type(index) is int
            and type(begin) is int
            and type(length) is int
            and 0 <= index <= _U32_MAX
            and 0 <= begin <= _U32_MAX
            and 0 <= length <= _U32_MAX
        ):
            _check_block_fields(index, begin, length)  # raises the precise error
        _set_request_index(self, index)
        _set_request_begin(self, begin)
        _set_request_length(self, length)

    def encode(self) -> bytes:
        """Length 13, id 6, index, begin, length."""
        return _U32X3_ID.pack(13, 6, self.index, self.begin, self.length)


@dataclass(frozen=True, slots=True, repr=False, init=False)
class Piece(Message):
    """A block of data: ``block`` is piece ``index`` from offset ``begin`` (BEP 3, id 7).

    ``block`` may be a :class:`memoryview` (what :class:`MessageDecoder` returns, pointing into
    the received bytes, and what a sender may pass to avoid copying); a ``bytearray`` is copied
    to ``bytes`` so the message stays immutable. For sending, :meth:`encode_parts` gives the
    13-byte header and the block separately so a 16 KiB block need not be copied into one
    ``bytes``.

    >>> message = Piece(1, 0, b"abc")
    >>> message.encode().hex()
    '0000000c070000000100000000616263'
    >>> message
    Piece(index=1, begin=0, block=<3 bytes>)
    """

    message_id: ClassVar[int | None] = 7
    index: int
    begin: int
    block: bytes | memoryview

    def __init__(self, index: int, begin: int, block: bytes | memoryview) -> None:
        """Check the fields; make a ``bytearray`` block immutable."""
        if not (
            type(index) is int
            and type(begin) is int
            and 0 <= index <= _U32_MAX
            and 0 <= begin <= _U32_MAX
        ):
            _check_u32("index", index)
            _check_u32("begin", begin)
        if type(block) is memoryview:  # memoryview has no subclasses
            if block.format != "B" or block.ndim != 1:
                block = block.cast("B") if block.c_contiguous else memoryview(block.tobytes())
        elif type(block) is not bytes:
            block = _as_bytes("block", block)
        if len(block) > _U32_MAX - 9:
            raise ValueError("a block this long does not fit a message")
        _set_piece_index(self, index)
        _set_piece_begin(self, begin)
        _set_piece_block(self, block)

    def __hash__(self) -> int:
        """Hash by content, whatever memory the block lives in.

        A memoryview over a ``bytearray`` (a block the decoder assembled) has no hash of its
        own, so the block is hashed as bytes: a copy, but hashing a piece is rare.
        """
        block = self.block
        return hash((self.index, self.begin, block if type(block) is bytes else bytes(block)))

    def __repr__(self) -> str:
        """The block by its size only: it is usually 16 KiB."""
        return f"Piece(index={self.index}, begin={self.begin}, block=<{len(self.block)} bytes>)"

    def encode(self) -> bytes:
        """Length, id 7, index, begin, the block (a copy of the block: see :meth:`encode_parts`)."""
        return _PIECE_HEAD.pack(len(self.block) + 9, 7, self.index, self.begin) + self.block

    def encode_parts(self) -> tuple[bytes, bytes | memoryview]:
        """The 13-byte header and the block itself, to send one after the other uncopied.

        >>> head, block = Piece(1, 2, b"xyz").encode_parts()
        >>> head.hex(), block
        ('0000000c070000000100000002', b'xyz')
        """
        return _PIECE_HEAD.pack(len(self.block) + 9, 7, self.index, self.begin), self.block


def _slot_setter(cls: type[Message], name: str) -> Callable[[Message, object], None]:
    """The setter of a frozen dataclass's slot: sets it without checks (after our own)."""
    setter: Callable[[Message, object], None] = getattr(cls, name).__set__
    return setter


# For Request and Piece's __init__, and for MessageDecoder, which builds them unchecked.
_set_request_index = _slot_setter(Request, "index")
_set_request_begin = _slot_setter(Request, "begin")
_set_request_length = _slot_setter(Request, "length")
_set_piece_index = _slot_setter(Piece, "index")
_set_piece_begin = _slot_setter(Piece, "begin")
_set_piece_block = _slot_setter(Piece, "block")


@dataclass(frozen=True, slots=True)
class Cancel(Message):
    """Withdraw an earlier :class:`Request` (BEP 3, id 8).

    >>> Cancel(1, 16384, 16384).encode().hex()
    '0000000d08000000010000400000004000'
    """

    message_id: ClassVar[int | None] = 8
    index: int
    begin: int
    length: int

    def __post_init__(self) -> None:
        """Check that every field is a uint32."""
        _check_block_fields(self.index, self.begin, self.length)

    def encode(self) -> bytes:
        """Length 13, id 8, index, begin, length."""
        return _U32X3_ID.pack(13, 8, self.index, self.begin, self.length)


@dataclass(frozen=True, slots=True)
class Port(Message):
    """The UDP port of the sender's DHT node (BEP 5, id 9).

    >>> Port(6881).encode().hex()
    '00000003091ae1'
    """

    message_id: ClassVar[int | None] = 9
    port: int

    def __post_init__(self) -> None:
        """Check that ``port`` is a uint16."""
        _check_uint("port", self.port, 0xFFFF)

    def encode(self) -> bytes:
        """Length 3, id 9, the port."""
        return _HEADER_ID.pack(3, 9) + _H.pack(self.port)


@dataclass(frozen=True, slots=True)
class Suggest(Message):
    """The sender suggests downloading piece ``index`` (BEP 6, id 13).

    >>> Suggest(3).encode().hex()
    '000000050d00000003'
    """

    message_id: ClassVar[int | None] = 13
    index: int

    def __post_init__(self) -> None:
        """Check that ``index`` is a uint32."""
        index = self.index
        if type(index) is not int or not 0 <= index <= _U32_MAX:
            _check_u32("index", index)

    def encode(self) -> bytes:
        """Length 5, id 13, the index."""
        return _U32_ID.pack(5, 13, self.index)


@dataclass(frozen=True, slots=True)
class HaveAll(Message):
    """The sender has every piece; replaces the bitfield (BEP 6, id 14).

    >>> HaveAll().encode().hex()
    '000000010e'
    """

    message_id: ClassVar[int | None] = 14

    def encode(self) -> bytes:
        """Length 1, id 14."""
        return b"\x00\x00\x00\x01\x0e"


@dataclass(frozen=True, slots=True)
class HaveNone(Message):
    """The sender has no piece; replaces the bitfield (BEP 6, id 15).

    >>> HaveNone().encode().hex()
    '000000010f'
    """

    message_id: ClassVar[int | None] = 15

    def encode(self) -> bytes:
        """Length 1, id 15."""
        return b"\x00\x00\x00\x01\x0f"


@dataclass(frozen=True, slots=True)
class RejectRequest(Message):
    """The sender will not serve this request (BEP 6, id 16).

    >>> RejectRequest(0, 0, 16384).encode().hex()
    '0000000d10000000000000000000004000'
    """

    message_id: ClassVar[int | None] = 16
    index: int
    begin: int
    length: int

    def __post_init__(self) -> None:
        """Check that every field is a uint32."""
        _check_block_fields(self.index, self.begin, self.length)

    def encode(self) -> bytes:
        """Length 13, id 16, index, begin, length."""
        return _U32X3_ID.pack(13, 16, self.index, self.begin, self.length)


@dataclass(frozen=True, slots=True)
class AllowedFast(Message):
    """The receiver may request piece ``index`` even while choked (BEP 6, id 17).

    >>> AllowedFast(3).encode().hex()
    '000000051100000003'
    """

    message_id: ClassVar[int | None] = 17
    index: int

    def __post_init__(self) -> None:
        """Check that ``index`` is a uint32."""
        index = self.index
        if type(index) is not int or not 0 <= index <= _U32_MAX:
            _check_u32("index", index)

    def encode(self) -> bytes:
        """Length 5, id 17, the index."""
        return _U32_ID.pack(5, 17, self.index)


@dataclass(frozen=True, slots=True)
class Extended(Message):
    """An extension protocol message (BEP 10, id 20), payload still raw.

    ``extended_id`` 0 is the extended handshake (see ``bip_peer._extended``); other ids are the
    ones the receiver assigned to its extensions in its handshake's ``m`` dictionary.

    >>> Extended(0, b"de").encode().hex()
    '0000000414006465'
    """

    message_id: ClassVar[int | None] = 20
    extended_id: int
    payload: bytes

    def __post_init__(self) -> None:
        """Check ``extended_id`` is a byte; keep ``payload`` as bytes."""
        _check_uint("extended_id", self.extended_id, 0xFF)
        payload = _as_bytes("payload", self.payload)
        _set(self, "payload", payload)
        if len(payload) > _U32_MAX - 2:
            raise ValueError("an extended payload this long does not fit a message")

    def encode(self) -> bytes:
        """Length, id 20, the extended id, the payload."""
        return _EXTENDED_HEAD.pack(len(self.payload) + 2, 20, self.extended_id) + self.payload


def _check_hash_fields(message: HashRequest | Hashes | HashReject) -> None:
    root = _as_bytes("pieces_root", message.pieces_root)
    if len(root) != _PIECES_ROOT_LENGTH:
        raise ValueError(f"pieces_root must be {_PIECES_ROOT_LENGTH} bytes, not {len(root)}")
    _set(message, "pieces_root", root)
    _check_u32("base_layer", message.base_layer)
    _check_u32("index", message.index)
    _check_u32("length", message.length)
    _check_u32("proof_layers", message.proof_layers)


@dataclass(frozen=True, slots=True)
class HashRequest(Message):
    """Ask for ``length`` hashes of a file's merkle tree from layer ``base_layer`` (BEP 52, id 21).

    ``index`` is the offset of the first hash in that layer, and ``proof_layers`` how many
    uncle-hash layers to add so the reply can be checked against ``pieces_root``. Whether the
    request makes sense (``length`` a power of two, ``index`` a multiple of it) is for the
    receiver to judge and answer with :class:`HashReject`, as libtorrent does; the codec only
    checks the layout.

    >>> len(HashRequest(bytes(32), 0, 0, 2, 0).encode())
    53
    """

    message_id: ClassVar[int | None] = 21
    pieces_root: bytes
    base_layer: int
    index: int
    length: int
    proof_layers: int

    def __post_init__(self) -> None:
        """Check the 32-byte root and the uint32 fields."""
        _check_hash_fields(self)

    def encode(self) -> bytes:
        """Length 49, id 21, then the five fields."""
        return _HASH_HEAD.pack(
            49, 21, self.pieces_root, self.base_layer, self.index, self.length, self.proof_layers
        )


@dataclass(frozen=True, slots=True, repr=False)
class Hashes(Message):
    """The reply to a :class:`HashRequest`: its fields, then the hashes (BEP 52, id 22).

    ``hashes`` is the concatenation of 32-byte SHA-256 hashes: the requested ones, then the
    proof (uncle) hashes.

    >>> message = Hashes(bytes(32), 0, 0, 2, 0, bytes(64))
    >>> message
    Hashes(pieces_root=00000000..., base_layer=0, index=0, length=2, proof_layers=0, hashes=<2>)
    >>> len(message.encode())
    117
    """

    message_id: ClassVar[int | None] = 22
    pieces_root: bytes
    base_layer: int
    index: int
    length: int
    proof_layers: int
    hashes: bytes

    def __post_init__(self) -> None:
        """Check the fields and that ``hashes`` is a whole number of 32-byte hashes."""
        _check_hash_fields(self)
        hashes = _as_bytes("hashes", self.hashes)
        if len(hashes) % 32:
            raise ValueError(f"hashes must be a multiple of 32 bytes, not {len(hashes)}")
        if len(hashes) > _U32_MAX - 49:
            raise ValueError("hashes this long do not fit a message")
        _set(self, "hashes", hashes)

    def __repr__(self) -> str:
        """The root abbreviated and the hashes counted."""
        return (
            f"Hashes(pieces_root={self.pieces_root[:4].hex()}..., base_layer={self.base_layer}, "
            f"index={self.index}, length={self.length}, proof_layers={self.proof_layers}, "
            f"hashes=<{len(self.hashes) // 32}>)"
        )

    def encode(self) -> bytes:
        """Length, id 22, the five fields, the hashes."""
        head = _HASH_HEAD.pack(
            49 + len(self.hashes),
            22,
            self.pieces_root,
            self.base_layer,
            self.index,
            self.length,
            self.proof_layers,
        )
        return head + self.hashes


@dataclass(frozen=True, slots=True)
class HashReject(Message):
    """The sender will not answer this :class:`HashRequest` (BEP 52, id 23).

    >>> HashReject(bytes(32), 0, 0, 2, 0).encode()[4]
    23
    """

    message_id: ClassVar[int | None] = 23
    pieces_root: bytes
    base_layer: int
    index: int
    length: int
    proof_layers: int

    def __post_init__(self) -> None:
        """Check the 32-byte root and the uint32 fields."""
        _check_hash_fields(self)

    def encode(self) -> bytes:
        """Length 49, id 23, then the five fields."""
        return _HASH_HEAD.pack(
            49, 23, self.pieces_root, self.base_layer, self.index, self.length, self.proof_layers
        )


@dataclass(frozen=True, slots=True)
class UnknownMessage(Message):
    """A message whose id this library does not know, surfaced so the caller may ignore it.

    BEP 3 asks clients to ignore messages they do not understand, and clients send a few
    (libtorrent's ``lt_*`` ids, Azureus' old ones), so an unknown id is not an error. Its
    ``message_id`` is an instance field here, since it varies; it is never one of the known ids.

    >>> UnknownMessage(99, b"x").encode().hex()
    '000000026378'
    """

    message_id: int  # type: ignore[misc]  # an instance field here, a ClassVar elsewhere
    payload: bytes

    def __post_init__(self) -> None:
        """Check the id is a byte not taken by a known message; keep ``payload`` as bytes."""
        _check_uint("message_id", self.message_id, 0xFF)
        if self.message_id in _PARSERS:
            raise ValueError(f"message id {self.message_id} is a known message, not an unknown one")
        payload = _as_bytes("payload", self.payload)
        _set(self, "payload", payload)
        if len(payload) > _U32_MAX - 1:
            raise ValueError("a payload this long does not fit a message")

    def encode(self) -> bytes:
        """Length, the id, the payload."""
        return _HEADER_ID.pack(len(self.payload) + 1, self.message_id) + self.payload


# ---------------------------------------------------------------------------- bitfields


def _bitfield_length(num_pieces: int) -> int:
    return (num_pieces + 7) >> 3


def _spare_mask(num_pieces: int) -> int:
    used = num_pieces & 7
    return 0 if used == 0 else 0xFF >> used


def _check_bitfield_length(length: int, num_pieces: int) -> None:
    expected = _bitfield_length(num_pieces)
    if length != expected:
        raise RemoteProtocolError(
            f"bitfield of {length} bytes for {num_pieces} pieces (expected {expected})"
        )


# ---------------------------------------------------------------------------- decoding

# Singletons for the messages without fields: equal to fresh instances, and free to return.
_KEEP_ALIVE: Final = KeepAlive()
_NO_PAYLOAD: Final[dict[int, Message]] = {
    0: Choke(),
    1: Unchoke(),
    2: Interested(),
    3: NotInterested(),
    14: HaveAll(),
    15: HaveNone(),
}

# Exact payload sizes (after the id byte) of the fixed-size messages.
_FIXED_PAYLOAD: Final[dict[int, int]] = {
    0: 0,
    1: 0,
    2: 0,
    3: 0,
    4: 4,
    6: 12,
    8: 12,
    9: 2,
    13: 4,
    14: 0,
    15: 0,
    16: 12,
    17: 4,
    21: 48,
    23: 48,
}

_Buffer = memoryview
_Parser = Callable[[_Buffer, int, int], Message]


# The decoder builds the common messages without __init__ / __post_init__: struct gives uint32
# and uint16 values, always in range, so the checks would only cost time on the hot path.
_new = object.__new__


def _unchecked1(cls: type[Message], name: str) -> Callable[[int], Message]:
    set_field = getattr(cls, name).__set__

    def make(value: int) -> Message:
        message = _new(cls)
        set_field(message, value)
        return message

    return make


def _unchecked3(cls: type[Message], *names: str) -> Callable[[object, object, object], Message]:
    set_a, set_b, set_c = (getattr(cls, name).__set__ for name in names)

    def make(a: object, b: object, c: object) -> Message:
        message = _new(cls)
        set_a(message, a)
        set_b(message, b)
        set_c(message, c)
        return message

    return make


_have = _unchecked1(Have, "index")
_suggest = _unchecked1(Suggest, "index")
_allowed_fast = _unchecked1(AllowedFast, "index")
_port = _unchecked1(Port, "port")
_request = _unchecked3(Request, "index", "begin", "length")
_cancel = _unchecked3(Cancel, "index", "begin", "length")
_reject = _unchecked3(RejectRequest, "index", "begin", "length")
_piece = _unchecked3(Piece, "index", "begin", "block")


def _parse_have(buf: _Buffer, start: int, size: int) -> Message:
    return _have(_I.unpack_from(buf, start)[0])


def _parse_bitfield(buf: _Buffer, start: int, size: int) -> Message:
    return Bitfield(bytes(buf[start : start + size]))


def _parse_request(buf: _Buffer, start: int, size: int) -> Message:
    return _request(*_III.unpack_from(buf, start))


def _parse_piece(buf: _Buffer, start: int, size: int) -> Message:
    index, begin = _II.unpack_from(buf, start)
    return _piece(index, begin, buf[start + 8 : start + size])


def _parse_cancel(buf: _Buffer, start: int, size: int) -> Message:
    return _cancel(*_III.unpack_from(buf, start))


def _parse_port(buf: _Buffer, start: int, size: int) -> Message:
    return _port(_H.unpack_from(buf, start)[0])


def _parse_suggest(buf: _Buffer, start: int, size: int) -> Message:
    return _suggest(_I.unpack_from(buf, start)[0])


def _parse_reject(buf: _Buffer, start: int, size: int) -> Message:
    return _reject(*_III.unpack_from(buf, start))


def _parse_allowed_fast(buf: _Buffer, start: int, size: int) -> Message:
    return _allowed_fast(_I.unpack_from(buf, start)[0])


def _parse_extended(buf: _Buffer, start: int, size: int) -> Message:
    return Extended(buf[start], bytes(buf[start + 1 : start + size]))


def _parse_hash_request(buf: _Buffer, start: int, size: int) -> Message:
    return HashRequest(*_HASH_FIELDS.unpack_from(buf, start))


def _parse_hashes(buf: _Buffer, start: int, size: int) -> Message:
    root, base_layer, index, length, proof_layers = _HASH_FIELDS.unpack_from(buf, start)
    hashes = bytes(buf[start + 48 : start + size])
    return Hashes(root, base_layer, index, length, proof_layers, hashes)


def _parse_hash_reject(buf: _Buffer, start: int, size: int) -> Message:
    return HashReject(*_HASH_FIELDS.unpack_from(buf, start))


_PARSERS: Final[dict[int, _Parser]] = {
    4: _parse_have,
    5: _parse_bitfield,
    6: _parse_request,
    7: _parse_piece,
    8: _parse_cancel,
    9: _parse_port,
    13: _parse_suggest,
    16: _parse_reject,
    17: _parse_allowed_fast,
    20: _parse_extended,
    21: _parse_hash_request,
    22: _parse_hashes,
    23: _parse_hash_reject,
}


def _constant(message: Message) -> _Parser:
    def parse(buf: _Buffer, start: int, size: int) -> Message:
        return message

    return parse


_PARSERS.update({mid: _constant(message) for mid, message in _NO_PAYLOAD.items()})

_NAMES: Final[dict[int, str]] = {
    0: "choke",
    1: "unchoke",
    2: "interested",
    3: "not interested",
    4: "have",
    5: "bitfield",
    6: "request",
    7: "piece",
    8: "cancel",
    9: "port",
    13: "suggest",
    14: "have all",
    15: "have none",
    16: "reject request",
    17: "allowed fast",
    20: "extended",
    21: "hash request",
    22: "hashes",
    23: "hash reject",
}


class MessageDecoder:
    """Incremental decoder of the message stream one peer sends (everything after the handshake).

    Feed bytes with :meth:`receive_data`, then call :meth:`next_message` until it returns
    :data:`NEED_DATA`. Every malformed input raises :class:`RemoteProtocolError`, and once it has
    the decoder is dead: every later call raises the same error.

    Limits, all checked from the 5-byte message head, before the payload is buffered:

    - ``max_message_length``: the largest length prefix accepted (default
      :data:`DEFAULT_MAX_MESSAGE_LENGTH`);
    - fixed-size messages must have exactly their size (a 2-byte ``choke`` is refused);
    - ``max_block_length`` (optional): the largest block a ``piece`` may carry;
    - :attr:`num_pieces` (optional, settable once known, e.g. after a magnet download): a
      ``bitfield`` must then be exactly ``ceil(num_pieces / 8)`` bytes with clear spare bits.

    >>> decoder = MessageDecoder()
    >>> decoder.receive_data(bytes.fromhex("00000005040000002a00000001"))
    >>> decoder.next_message()
    Have(index=42)
    >>> decoder.next_message(), decoder.buffered
    (NEED_DATA, 4)
    >>> decoder.receive_data(b"\\x02")
    >>> decoder.next_message()
    Interested()
    """

    __slots__ = (
        "_body",
        "_body_filled",
        "_body_id",
        "_body_size",
        "_chunks",
        "_error",
        "_head",
        "_max_block_length",
        "_max_message_length",
        "_num_pieces",
        "_piece_limit",
        "_pos",
        "_whole",
        "_whole_size",
    )

    def __init__(
        self,
        max_message_length: int = DEFAULT_MAX_MESSAGE_LENGTH,
        *,
        max_block_length: int | None = None,
        num_pieces: int | None = None,
    ) -> None:
        """Make a decoder; see the class docstring for the limits.

        Raises:
            ValueError: a limit is out of range.
        """
        _check_u32("max_message_length", max_message_length)
        if max_block_length is not None:
            _check_u32("max_block_length", max_block_length)
        self._max_message_length = max_message_length
        self._max_block_length = max_block_length
        # The largest piece message the fast path takes; others go through _check_head.
        self._piece_limit = (
            max_message_length
            if max_block_length is None
            else min(max_message_length, max_block_length + 9)
        )
        self._num_pieces: int | None = None
        self.num_pieces = num_pieces
        # Chunks not yet consumed, as read-only byte views; _pos is the offset into the first.
        self._chunks: deque[memoryview] = deque()
        self._pos = 0
        # A message head (length + id) that straddles chunks, gathered byte by byte.
        self._head = bytearray()
        # The payload of a message that straddles chunks: preallocated at its exact size, or, for
        # a payload over _PREALLOCATE_LIMIT, grown as it arrives (a peer announcing 1 MiB then
        # trickling bytes holds only what it sent).
        self._body: bytearray | None = None
        self._body_size = 0
        self._body_filled = 0
        self._body_id = 0
        # The chunk the fast path parses whole messages in (the first one) and its size, or None
        # when there is none or a message is being assembled: one test per message instead of
        # looking at the deque, the head and the body.
        self._whole: memoryview | None = None
        self._whole_size = 0
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """How many received bytes are not yet returned as messages."""
        # Counted when asked rather than kept per message (the hot path): the unconsumed
        # chunks, a head being gathered, and the head and payload of a message being assembled.
        pending = sum(map(len, self._chunks)) - self._pos + len(self._head)
        if self._body is not None:
            pending += 5 + self._body_filled
        return pending

    @property
    def num_pieces(self) -> int | None:
        """The torrent's piece count, once known; bitfields are then checked against it."""
        return self._num_pieces

    @num_pieces.setter
    def num_pieces(self, value: int | None) -> None:
        if value is not None:
            _check_u32("num_pieces", value)
        self._num_pieces = value

    @property
    def max_message_length(self) -> int:
        """The largest length prefix accepted."""
        return self._max_message_length

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes received from the peer; empty data is ignored.

        The decoder keeps a reference to ``data`` (no copy), and piece blocks returned later may
        be views of it: do not modify it afterwards.
        """
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
        if not view.readonly:
            view = view.toreadonly()
        if len(view):
            self._chunks.append(view)
            if self._whole is None:
                self._find_whole()

    def _find_whole(self) -> None:
        """Point the fast path at the first chunk, unless a message is being assembled."""
        chunks = self._chunks
        if chunks and self._body is None and not self._head:
            self._whole = chunks[0]
            self._whole_size = len(chunks[0])
        else:
            self._whole = None

    def receive_eof(self) -> None:
        """Tell the decoder the peer closed the connection.

        Raises:
            RemoteProtocolError: the stream ended in the middle of a message.
        """
        if self._error is not None:
            raise self._error
        buffered = self.buffered
        if buffered:
            self._error = RemoteProtocolError(
                f"connection closed in the middle of a message ({buffered} bytes buffered)"
            )
            raise self._error

    def next_message(self) -> Message | NeedData:
        """The next whole message, or :data:`NEED_DATA`.

        Raises:
            RemoteProtocolError: the peer sent a malformed message (then and on every later call).
        """
        if self._error is not None:
            raise self._error
        try:
            # The fast path, inline rather than a method of its own because it runs once per
            # message (a call costs about as much as parsing a request): a whole message inside
            # the current chunk, parsed in place.
            chunk = self._whole
            if chunk is not None:
                pos = self._pos
                size = self._whole_size
                # With 17 bytes at hand (a request, the head of any piece), one unpack reads
                # the header and the fields of both; with fewer, the header alone.
                fields = size - pos >= 17
                if fields:
                    length, mid, index, begin, third = _HEAD_FIELDS.unpack_from(chunk, pos)
                elif size - pos >= 5:
                    length, mid = _HEADER_ID.unpack_from(chunk, pos)
                else:
                    return self._next_slow()
                end = pos + 4 + length
                if end <= size and length:
                    # Pieces and requests are nearly all the traffic of a transfer: they are
                    # checked and built here, without _check_head and the parser table (the
                    # values come from struct, so they need no range checks either).
                    message: Message
                    if fields and mid == 7 and 9 <= length <= self._piece_limit:
                        message = _new(Piece)
                        _set_piece_index(message, index)
                        _set_piece_begin(message, begin)
                        _set_piece_block(message, chunk[pos + 13 : end])
                    elif fields and mid == 6 and length == 13:
                        message = _new(Request)
                        _set_request_index(message, index)
                        _set_request_begin(message, begin)
                        _set_request_length(message, third)
                    else:
                        self._check_head(length, mid)
                        message = self._parse(mid, chunk, pos + 5, length - 1)
                    if end == size:
                        self._chunks.popleft()
                        self._pos = 0
                        self._find_whole()
                    else:
                        self._pos = end
                    return message
            return self._next_slow()
        except RemoteProtocolError as error:
            self._error = error
            raise

    def _next_slow(self) -> Message | NeedData:
        """What the fast path leaves: keep-alives, and heads or payloads that straddle chunks."""
        try:
            return self._next_straddling()
        finally:
            # Chunks are consumed, and heads and bodies started and finished, only under this
            # call (and the fast path, which keeps _whole itself).
            self._find_whole()

    def _next_straddling(self) -> Message | NeedData:
        if self._body is None:
            head = self._gather_head()
            if head is None:
                return NEED_DATA
            length, mid = head
            if length == 0:
                return _KEEP_ALIVE
            self._check_head(length, mid)
            size = length - 1
            if size == 0 or self._available_is_whole(size):
                # The payload is wholly in the current chunk: no need to assemble it.
                chunk = self._chunks[0] if size else memoryview(b"")
                pos = self._pos
                self._consume(size)
                return self._parse(mid, chunk, pos, size)
            self._body = bytearray(size) if size <= _PREALLOCATE_LIMIT else bytearray()
            self._body_size = size
            self._body_filled = 0
            self._body_id = mid
        return self._fill_body(self._body)

    def _gather_head(self) -> tuple[int, int] | None:
        """Collect a straddling length prefix and id byte; ``None`` until both are here.

        A keep-alive has no id byte: ``(0, 0)`` as soon as its four zero bytes are in.
        """
        head = self._head
        chunks = self._chunks
        while chunks and len(head) < 5:
            chunk = chunks[0]
            pos = self._pos
            take = min((4 if len(head) < 4 else 5) - len(head), len(chunk) - pos)
            head += chunk[pos : pos + take]
            self._consume(take)
            if len(head) == 4:
                length = _HEADER.unpack(head)[0]
                if length > self._max_message_length:
                    self._too_long(length)
                if length == 0:
                    head.clear()
                    return 0, 0
        if len(head) < 5:
            return None
        length, mid = _HEADER_ID.unpack(head)
        head.clear()
        return length, mid

    def _available_is_whole(self, size: int) -> bool:
        chunks = self._chunks
        return bool(chunks) and len(chunks[0]) - self._pos >= size

    def _consume(self, count: int) -> None:
        """Advance past ``count`` bytes of the first chunk (all of which are there)."""
        if count == 0:
            return
        self._pos += count
        if self._pos == len(self._chunks[0]):
            self._chunks.popleft()
            self._pos = 0

    def _fill_body(self, body: bytearray) -> Message | NeedData:
        """Copy what has arrived of the message under assembly into ``body``, its payload."""
        size = self._body_size
        chunks = self._chunks
        filled = self._body_filled
        # Preallocated: copy into place. Growing: append (no view of it may exist meanwhile).
        view = memoryview(body) if len(body) == size else None
        while filled < size and chunks:
            chunk = chunks[0]
            pos = self._pos
            take = min(size - filled, len(chunk) - pos)
            if view is not None:
                view[filled : filled + take] = chunk[pos : pos + take]
            else:
                body += chunk[pos : pos + take]
            filled += take
            self._consume(take)
        self._body_filled = filled
        if filled < size:
            if view is not None:
                view.release()
            return NEED_DATA
        self._body = None
        # A read-only view, so the message stays immutable (and hashable) like the fast path's.
        return self._parse(self._body_id, memoryview(body).toreadonly(), 0, size)

    def _too_long(self, length: int) -> None:
        raise RemoteProtocolError(
            f"message length {length} exceeds the limit of {self._max_message_length}"
        )

    def _check_head(self, length: int, mid: int) -> None:
        """Refuse a message from its length and id alone, before its payload is buffered."""
        if length > self._max_message_length:
            self._too_long(length)
        size = length - 1
        fixed = _FIXED_PAYLOAD.get(mid)
        if fixed is not None:
            if size != fixed:
                raise RemoteProtocolError(
                    f"{_NAMES[mid]} message with a {size}-byte payload (expected {fixed})"
                )
        elif mid == 7:
            if size < 8:
                raise RemoteProtocolError(f"piece message with a {size}-byte payload (minimum 8)")
            if self._max_block_length is not None and size - 8 > self._max_block_length:
                raise RemoteProtocolError(
                    f"piece message with a {size - 8}-byte block (limit {self._max_block_length})"
                )
        elif mid == 5:
            if self._num_pieces is not None:
                _check_bitfield_length(size, self._num_pieces)
        elif mid == 20:
            if size < 1:
                raise RemoteProtocolError("extended message without an extended id")
        elif mid == 22 and (size < 48 or (size - 48) % 32):
            raise RemoteProtocolError(
                f"hashes message with a {size}-byte payload (48 + a multiple of 32 expected)"
            )

    def _parse(self, mid: int, buf: _Buffer, start: int, size: int) -> Message:
        parser = _PARSERS.get(mid)
        if parser is None:
            return UnknownMessage(mid, bytes(buf[start : start + size]))
        message = parser(buf, start, size)
        if mid == 5 and self._num_pieces is not None:
            bits = buf[start : start + size]
            if size and bits[-1] & _spare_mask(self._num_pieces):
                raise RemoteProtocolError(
                    f"bitfield for {self._num_pieces} pieces has spare bits set"
                )
        return message
