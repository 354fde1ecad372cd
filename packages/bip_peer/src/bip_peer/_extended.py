"""Extension protocol payloads (BEP 10) and the extensions bip_peer speaks, sans-IO.

An :class:`~bip_peer._messages.Extended` message carries an extended id and a payload. Id 0 is
the extended handshake (:class:`ExtendedHandshake`), in which each side lists, in ``m``, the ids
*it* wants to receive each extension under. The payload codecs here:

- :class:`ExtendedHandshake` (BEP 10, with the BEP 9 ``metadata_size`` and BEP 21
  ``upload_only`` fields);
- ``ut_metadata`` (BEP 9): :class:`MetadataRequest`, :class:`MetadataData`,
  :class:`MetadataReject` and :func:`decode_metadata_message`;
- ``ut_pex`` (BEP 11): :class:`PexMessage`;
- ``lt_donthave`` (BEP 54): :class:`DontHave`;
- ``upload_only`` (BEP 21 as libtorrent sends it): :class:`UploadOnly`;
- ``ut_holepunch`` (BEP 55): :class:`HolepunchMessage` and :func:`decode_holepunch_message`.

Peers are sloppy, so decoding follows libtorrent: a payload that is not what the extension is
at all (not a bencoded dictionary, a ``ut_metadata`` message without an int ``msg_type`` and
``piece``, a ``lt_donthave`` payload that is not 4 bytes) raises
:class:`~bip_peer._errors.RemoteProtocolError`, while a single field of the wrong type or range
in an otherwise valid dictionary is ignored as if absent (a ``reqq`` sent as a string, a ``p``
of 0, an ``m`` entry of 300). What each decoder ignores is listed in its docstring. What the
connection does with a decoder's error is its own: as libtorrent, a
:class:`~bip_peer.PeerConnection` ends the connection for a malformed ``ut_metadata`` or
``ut_pex`` message but ignores a ``lt_donthave`` or ``upload_only`` message of the wrong size
(surfaced as :class:`~bip_peer.UnknownExtended`).
Constructing a message locally checks every field and raises ``TypeError`` / ``ValueError``.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from types import MappingProxyType
from typing import ClassVar, Final, TypeVar

from bip_bencode import BencodeDecodeError, BencodeEncodeError, decode_prefix, encode
from bip_handshake import (
    Family,
    PeerAddress,
    encode_compact_peers,
    parse_compact_peers,
)

from ._errors import RemoteProtocolError
from ._messages import Extended

__all__ = [
    "DEFAULT_EXTENSION_IDS",
    "DEFAULT_MAX_PEX_ENTRIES",
    "EXTENSION_NAMES",
    "HANDSHAKE_FIELDS",
    "HOLEPUNCH_EXTENSION",
    "HOLEPUNCH_EXTENSION_ID",
    "MAX_CLIENT_VERSION_LENGTH",
    "MAX_EXTENDED_HANDSHAKE_SIZE",
    "MAX_EXTENSION_NAME_LENGTH",
    "MAX_HANDSHAKE_EXTENSION_NAMES",
    "MAX_HANDSHAKE_EXTRA_KEYS",
    "MAX_HANDSHAKE_EXTRA_VALUE_LENGTH",
    "MAX_METADATA_MESSAGE_SIZE",
    "MAX_METADATA_TOTAL_SIZE",
    "MAX_PEX_MESSAGE_SIZE",
    "METADATA_PIECE_SIZE",
    "DontHave",
    "ExtendedHandshake",
    "HolepunchError",
    "HolepunchMessage",
    "HolepunchMessageType",
    "MetadataData",
    "MetadataReject",
    "MetadataRequest",
    "PexMessage",
    "UploadOnly",
    "decode_holepunch_message",
    "decode_metadata_message",
]

EXTENSION_NAMES: Final = ("ut_metadata", "ut_pex", "lt_donthave", "upload_only")
"""The canonical names (``m`` keys) of the extensions :class:`~bip_peer.PeerConnection` decodes
itself. ``ut_holepunch`` (:data:`HOLEPUNCH_EXTENSION`) has its codec here too, but the
:class:`~bip_peer.HolepunchService` that speaks it decodes it, so it is not listed."""

DEFAULT_EXTENSION_IDS: Final[Mapping[str, int]] = MappingProxyType(
    {"ut_pex": 1, "ut_metadata": 2, "upload_only": 3, "lt_donthave": 7}
)
"""The ids we ask peers to use for our extensions: libtorrent's numbering.

libtorrent's ``ut_pex`` plugin uses 1, ``ut_metadata`` 2, and its ``bt_peer_connection``
reserves 3 for ``upload_only`` and 7 for ``lt_donthave`` (4 is ``ut_holepunch``:
:data:`HOLEPUNCH_EXTENSION_ID`). Any distinct
non-zero ids would do, since each side sends under the ids the other chose; using the most
common client's keeps packet captures easy to compare."""

METADATA_PIECE_SIZE: Final = 16384
"""BEP 9 sends the info dictionary in pieces of 16 KiB; only the last may be shorter."""

MAX_METADATA_TOTAL_SIZE: Final = 0x7FFFFFFF
"""The largest ``total_size`` / ``metadata_size`` accepted from a peer (libtorrent reads them
as a signed 32-bit int). The fetcher applies its own, much smaller bound before allocating."""

DEFAULT_MAX_PEX_ENTRIES: Final = 1000
"""The most addresses :meth:`PexMessage.decode_payload` accepts in one list by default.

BEP 11 says at most 50 added and 50 dropped per message and libtorrent sends at most 100
added, so a list 20 times longer is hostile; the limit keeps a 1 MiB message from turning into
170,000 address objects."""

MAX_METADATA_MESSAGE_SIZE: Final = 17 * 1024
"""The largest received ``ut_metadata`` payload accepted: 17 KiB, libtorrent's limit (it
disconnects a peer that sends more). The largest valid message is a 16 KiB piece after a
dictionary of some 50 bytes; a larger payload is refused before it is decoded."""

MAX_PEX_MESSAGE_SIZE: Final = 64 * 1024
"""The largest received ``ut_pex`` payload accepted: 64 KiB, refused before it is decoded.

libtorrent disconnects above 500 KiB, but sends at most 100 added addresses (2.5 KiB); our
decoder refuses a list of more than :data:`DEFAULT_MAX_PEX_ENTRIES` addresses anyway, and
every list that full (with flags) is about 50 KB, so a larger payload is junk whose decoding
would cost time in proportion to its size."""

MAX_EXTENDED_HANDSHAKE_SIZE: Final = 64 * 1024
"""The largest received extended handshake payload accepted: 64 KiB.

libtorrent's and Transmission's handshakes are a few hundred bytes (a dozen ``m`` names and
as many short fields); a larger one is refused with
:class:`~bip_peer._errors.RemoteProtocolError`, since decoding costs time in proportion to its
size (about a second per MiB of nested junk) and a peer may send handshakes again and again."""

MAX_EXTENSION_NAME_LENGTH: Final = 64
"""The longest extension name kept from a peer's ``m`` (real ones are a dozen characters)."""

MAX_HANDSHAKE_EXTENSION_NAMES: Final = 128
"""How many ``m`` names of one received handshake are kept, in the order sent. Clients name
about a dozen; the connection's id table keeps fewer still (its names plus
:data:`~bip_peer.MAX_PEER_EXTENSION_NAMES` others). A peer naming more than this before one
we speak loses that one: only it is harmed."""

MAX_HANDSHAKE_EXTRA_KEYS: Final = 32
"""How many unknown keys of one received handshake are kept in ``extra`` (libtorrent sends
two: ``e`` and ``complete_ago``)."""

MAX_HANDSHAKE_EXTRA_VALUE_LENGTH: Final = 64
"""The longest byte string value, and key, kept in a received handshake's ``extra``."""

MAX_CLIENT_VERSION_LENGTH: Final = 256
"""The most bytes of a received ``v`` kept (longer ones are cut): a client's name and version."""

HANDSHAKE_FIELDS: Final = frozenset(
    {"m", "v", "p", "yourip", "ipv4", "ipv6", "reqq", "metadata_size", "upload_only"}
)
"""The extended handshake keys :class:`ExtendedHandshake` has a field for."""

_HANDSHAKE_KEYS: Final = frozenset(name.encode() for name in HANDSHAKE_FIELDS)
_MAX_DEPTH: Final = 32  # peers' dictionaries nest a level or two; refuse deep junk early
_U32_MAX: Final = 0xFFFFFFFF
_I64_MIN: Final = -(2**63)  # libtorrent reads a bencoded int as an int64
_I64_MAX: Final = 2**63 - 1


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, not {value}")
    return value


def _check_bytes(name: str, value: object, *sizes: int) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    raw = bytes(value)
    if sizes and len(raw) not in sizes:
        expected = " or ".join(str(size) for size in sizes)
        raise ValueError(f"{name} must be {expected} bytes, not {len(raw)}")
    return raw


def _check_text(name: str, value: str) -> None:
    """Refuse text that has no UTF-8 form (lone surrogates), so that encoding cannot fail later."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} is not encodable as UTF-8") from None


def _decode_dict(payload: bytes | bytearray | memoryview, what: str) -> dict[bytes, object]:
    """The dictionary at the start of ``payload``; bytes after it are ignored, as libtorrent's
    decoder stops at the end of the first value."""
    try:
        value, _ = decode_prefix(payload, lenient=True, max_depth=_MAX_DEPTH)
    except BencodeDecodeError as error:
        raise RemoteProtocolError(f"{what} is not valid bencoding: {error}") from None
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"{what} is not a bencoded dictionary")
    return dict(value)


class _ExtensionMessage(abc.ABC):
    """What the extension messages share: a name and a payload codec."""

    __slots__ = ()

    extension_name: ClassVar[str]
    """The ``m`` key of the extension this message belongs to."""

    @abc.abstractmethod
    def encode_payload(self) -> bytes:
        """The payload, without the extended message header."""

    def to_extended(self, extended_id: int) -> Extended:
        """This message framed under ``extended_id`` (the id the *receiver* assigned)."""
        return Extended(extended_id, self.encode_payload())


# ---------------------------------------------------------------------------- handshake


_K = TypeVar("_K")
_V = TypeVar("_V")


def _frozen_mapping(value: Mapping[_K, _V]) -> Mapping[_K, _V]:
    return MappingProxyType(dict(value))


@dataclass(frozen=True, slots=True, repr=False)
class ExtendedHandshake:
    """The BEP 10 extended handshake (extended id 0), sent once or more by both sides.

    Every field is optional:

    - ``m``: extension name to the id the sender wants to receive it under; 0 means the
      extension is disabled (a later handshake may turn one off);
    - ``v``: the client's name and version;
    - ``p``: the TCP port the sender listens on;
    - ``yourip``: the receiver's address as the sender sees it (4 or 16 bytes);
    - ``ipv4`` / ``ipv6``: the sender's own addresses (4 / 16 bytes);
    - ``reqq``: how many outstanding requests the sender queues;
    - ``metadata_size``: the size of the info dictionary (BEP 9);
    - ``upload_only``: the sender only uploads (BEP 21; a seed, or a partial download);
    - ``extra``: every other key, with its decoded value (of a received handshake, only the
      small scalars: see :meth:`decode_payload`).

    >>> hs = ExtendedHandshake(m={"ut_metadata": 2}, v="bip 0.1", reqq=500, metadata_size=31235)
    >>> hs.encode_payload()
    b'd1:md11:ut_metadatai2ee13:metadata_sizei31235e4:reqqi500e1:v7:bip 0.1e'
    >>> ExtendedHandshake.decode_payload(hs.encode_payload()) == hs
    True
    >>> hs.extension_id("ut_metadata"), hs.extension_id("ut_pex")
    (2, None)

    Decoding keeps what libtorrent keeps and ignores what it ignores: a payload that does not
    start with a bencoded dictionary raises :class:`RemoteProtocolError` (bytes after the
    dictionary are ignored; its keys may be unsorted); a field of the wrong type or out of
    range is dropped as if absent (``m`` not a dictionary, an ``m`` entry that is not an int
    in 0..255 or whose name is not UTF-8, ``p`` outside 1..65535, ``yourip`` not 4 or 16 bytes,
    ``ipv4`` not 4, ``ipv6`` not 16, ``reqq`` outside 1..2**32-1, ``metadata_size`` outside
    1..:data:`MAX_METADATA_TOTAL_SIZE`, ``upload_only`` not an int); ``v`` is decoded as
    UTF-8 with invalid bytes replaced.

    >>> lax = ExtendedHandshake.decode_payload(b"d1:pi0e4:reqq3:abc11:upload_onlyi1ee")
    >>> lax.p, lax.reqq, lax.upload_only
    (None, None, True)
    """

    m: Mapping[str, int] = field(default_factory=dict)
    v: str | None = None
    p: int | None = None
    yourip: bytes | None = None
    ipv4: bytes | None = None
    ipv6: bytes | None = None
    reqq: int | None = None
    metadata_size: int | None = None
    upload_only: bool | None = None
    extra: Mapping[bytes, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check every field; keep ``m`` and ``extra`` as read-only copies."""
        if not isinstance(self.m, Mapping):
            raise TypeError(f"m must be a mapping, not {type(self.m).__name__}")
        for name, number in self.m.items():
            if not isinstance(name, str):
                raise TypeError(f"extension names must be str, not {name!r}")
            _check_text(f"the extension name {name!r}", name)
            _check_int(f"the id of {name}", number, 0, 255)
        object.__setattr__(self, "m", _frozen_mapping(self.m))
        if self.v is not None:
            if not isinstance(self.v, str):
                raise TypeError(f"v must be a str, not {type(self.v).__name__}")
            _check_text("v", self.v)
        if self.p is not None:
            _check_int("p", self.p, 1, 0xFFFF)
        for name, sizes in (("yourip", (4, 16)), ("ipv4", (4,)), ("ipv6", (16,))):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _check_bytes(name, value, *sizes))
        if self.reqq is not None:
            _check_int("reqq", self.reqq, 1, _U32_MAX)
        if self.metadata_size is not None:
            _check_int("metadata_size", self.metadata_size, 1, MAX_METADATA_TOTAL_SIZE)
        if self.upload_only is not None and not isinstance(self.upload_only, bool):
            raise TypeError(f"upload_only must be a bool, not {type(self.upload_only).__name__}")
        if not isinstance(self.extra, Mapping):
            raise TypeError(f"extra must be a mapping, not {type(self.extra).__name__}")
        for key in self.extra:
            if not isinstance(key, bytes):
                raise TypeError(f"extra keys must be bytes, not {key!r}")
            if key in _HANDSHAKE_KEYS:
                raise ValueError(f"{key!r} has a field of its own; it cannot be in extra")
        try:
            encode(dict(self.extra))  # type: ignore[arg-type]  # checked right here
        except (BencodeEncodeError, TypeError, ValueError) as error:
            raise ValueError(f"extra cannot be bencoded: {error}") from None
        object.__setattr__(self, "extra", _frozen_mapping(self.extra))

    def __repr__(self) -> str:
        """Only the fields that are set, ``m`` and ``extra`` as plain dicts.

        >>> ExtendedHandshake(m={"ut_pex": 1}, reqq=250)
        ExtendedHandshake(m={'ut_pex': 1}, reqq=250)
        """
        parts = [f"m={dict(self.m)!r}"]
        for name in ("v", "p", "yourip", "ipv4", "ipv6", "reqq", "metadata_size", "upload_only"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value!r}")
        if self.extra:
            parts.append(f"extra={dict(self.extra)!r}")
        return f"ExtendedHandshake({', '.join(parts)})"

    def extension_id(self, name: str) -> int | None:
        """The id the sender wants ``name`` under, or ``None`` if absent or disabled (0)."""
        number = self.m.get(name)
        return number or None

    @property
    def yourip_address(self) -> IPv4Address | IPv6Address | None:
        """``yourip`` as an address object (an IPv4-mapped IPv6 address stays IPv6).

        >>> ExtendedHandshake(yourip=bytes([10, 0, 0, 1])).yourip_address
        IPv4Address('10.0.0.1')
        """
        if self.yourip is None:
            return None
        return IPv4Address(self.yourip) if len(self.yourip) == 4 else IPv6Address(self.yourip)

    def encode_payload(self) -> bytes:
        """The bencoded dictionary: ``m`` always, the other fields when not ``None``."""
        out: dict[bytes, object] = dict(self.extra)
        out[b"m"] = {name.encode(): number for name, number in self.m.items()}
        for key, value in (
            (b"v", self.v),
            (b"p", self.p),
            (b"yourip", self.yourip),
            (b"ipv4", self.ipv4),
            (b"ipv6", self.ipv6),
            (b"reqq", self.reqq),
            (b"metadata_size", self.metadata_size),
        ):
            if value is not None:
                out[key] = value
        if self.upload_only is not None:
            out[b"upload_only"] = int(self.upload_only)
        return encode(out)  # type: ignore[arg-type]  # values checked in __post_init__

    @classmethod
    def decode_payload(cls, payload: bytes | bytearray | memoryview) -> ExtendedHandshake:
        """Decode a received extended handshake (see the class docstring for the leniency).

        What a peer's handshake can make us keep is bounded, as libtorrent keeps only the
        fields it reads: ``m`` keeps its first :data:`MAX_HANDSHAKE_EXTENSION_NAMES` names of
        at most :data:`MAX_EXTENSION_NAME_LENGTH` characters, ``v`` its first
        :data:`MAX_CLIENT_VERSION_LENGTH` bytes, and ``extra`` only the first
        :data:`MAX_HANDSHAKE_EXTRA_KEYS` unknown keys (of at most
        :data:`MAX_HANDSHAKE_EXTRA_VALUE_LENGTH` bytes) whose value is a 64-bit int or a byte
        string of at most that length: lists, dictionaries and longer values are dropped.

        >>> ExtendedHandshake.decode_payload(b"d1:ei1e1:xlee").extra
        mappingproxy({b'e': 1})

        Raises:
            RemoteProtocolError: the payload is longer than
                :data:`MAX_EXTENDED_HANDSHAKE_SIZE`, or not a bencoded dictionary.
        """
        if len(payload) > MAX_EXTENDED_HANDSHAKE_SIZE:
            raise RemoteProtocolError(
                f"extended handshake of {len(payload)} bytes exceeds the limit of "
                f"{MAX_EXTENDED_HANDSHAKE_SIZE}"
            )
        return _decode_handshake(payload, received=True)


def _decode_handshake(
    payload: bytes | bytearray | memoryview, *, received: bool
) -> ExtendedHandshake:
    """The handshake in ``payload``: bounded as :meth:`ExtendedHandshake.decode_payload` says
    when ``received``, whole otherwise (our own payload, sent raw, which we may keep as is)."""
    fields = _decode_dict(payload, "extended handshake")
    m: dict[str, int] = {}
    raw_m = fields.get(b"m")
    if isinstance(raw_m, dict):
        for key, number in raw_m.items():
            if received and len(m) >= MAX_HANDSHAKE_EXTENSION_NAMES:
                break
            if _is_int(number, 0, 255):
                try:
                    name = key.decode("utf-8")
                except UnicodeDecodeError:
                    continue
                if not received or len(name) <= MAX_EXTENSION_NAME_LENGTH:
                    m[name] = number
    raw_v = fields.get(b"v")
    if received and isinstance(raw_v, bytes):
        raw_v = raw_v[:MAX_CLIENT_VERSION_LENGTH]
    upload_only = fields.get(b"upload_only")
    extra = {key: value for key, value in fields.items() if key not in _HANDSHAKE_KEYS}
    if received:
        extra = _small_extras(extra)
    return ExtendedHandshake(
        m=m,
        v=raw_v.decode("utf-8", "replace") if isinstance(raw_v, bytes) else None,
        p=_int_or_none(fields.get(b"p"), 1, 0xFFFF),
        yourip=_bytes_or_none(fields.get(b"yourip"), 4, 16),
        ipv4=_bytes_or_none(fields.get(b"ipv4"), 4),
        ipv6=_bytes_or_none(fields.get(b"ipv6"), 16),
        reqq=_int_or_none(fields.get(b"reqq"), 1, _U32_MAX),
        metadata_size=_int_or_none(fields.get(b"metadata_size"), 1, MAX_METADATA_TOTAL_SIZE),
        upload_only=bool(upload_only) if _is_int(upload_only) else None,
        extra=extra,
    )


def _small_extras(extra: Mapping[bytes, object]) -> dict[bytes, object]:
    """The unknown keys of a received handshake worth keeping for the connection's life: the
    scalars other clients send there (``e``, ``complete_ago``), nothing a peer could inflate."""
    kept: dict[bytes, object] = {}
    for key, value in extra.items():
        if len(kept) >= MAX_HANDSHAKE_EXTRA_KEYS:
            break
        if len(key) > MAX_HANDSHAKE_EXTRA_VALUE_LENGTH:
            continue
        if _is_int(value, _I64_MIN, _I64_MAX) or (
            isinstance(value, bytes) and len(value) <= MAX_HANDSHAKE_EXTRA_VALUE_LENGTH
        ):
            kept[key] = value
    return kept


def _is_int(value: object, low: int | None = None, high: int | None = None) -> bool:
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def _int_or_none(value: object, low: int, high: int) -> int | None:
    return value if _is_int(value, low, high) else None  # type: ignore[return-value]


def _bytes_or_none(value: object, *sizes: int) -> bytes | None:
    return value if isinstance(value, bytes) and len(value) in sizes else None


# ---------------------------------------------------------------------------- ut_metadata (BEP 9)


_MAX_PIECE: Final = MAX_METADATA_TOTAL_SIZE // METADATA_PIECE_SIZE
"""The last piece index a dictionary of at most :data:`MAX_METADATA_TOTAL_SIZE` bytes has."""

_MAX_PIECE_DIGITS: Final = 20
"""The most digits a request's ``piece`` may have, a sign aside (a 64-bit int has up to 20).
A request for a piece that cannot exist, negative included, is still a request, which BEP 9 says
to answer with a reject ("If the peer does not have the requested piece of metadata ... it MUST
respond with a reject message"), as libtorrent's ``ut_metadata`` does for ``piece < 0`` or past
the end; the reject names the same piece (libtorrent's names it cut to 32 bits). Longer
numbers are refused as malformed: echoing one would let a peer make us keep and send numbers as
long as its message."""

_MAX_ASKED_PIECE: Final = 10**_MAX_PIECE_DIGITS - 1
"""The largest piece a request (and so the reject answering it) may name: 20 digits."""

_MAX_ANSWERED_PIECE: Final = 2**63 - 1
"""The largest piece a received reject may name: a bencoded int as libtorrent reads one (64
bits). We never ask for more (nor for a negative piece), so a reject beyond it is nonsense."""


def _check_piece(piece: object, high: int = _MAX_PIECE, low: int = 0) -> None:
    _check_int("piece", piece, low, high)


@dataclass(frozen=True, slots=True)
class MetadataRequest(_ExtensionMessage):
    """Ask for piece ``piece`` of the info dictionary (BEP 9, ``msg_type`` 0).

    ``piece`` may be any int of at most 20 digits, pieces no dictionary has included (negative
    ones too): a peer may ask for them, and is answered with a :class:`MetadataReject` naming
    the same piece (BEP 9; libtorrent rejects too, naming it cut to 32 bits), not cut off.

    >>> MetadataRequest(0).encode_payload()
    b'd8:msg_typei0e5:piecei0ee'
    >>> MetadataRequest(-1).encode_payload()
    b'd8:msg_typei0e5:piecei-1ee'
    """

    extension_name: ClassVar[str] = "ut_metadata"
    piece: int

    def __post_init__(self) -> None:
        """Check that ``piece`` is an int of at most 20 digits (-(10**20 - 1) to 10**20 - 1)."""
        _check_piece(self.piece, _MAX_ASKED_PIECE, -_MAX_ASKED_PIECE)

    def encode_payload(self) -> bytes:
        """``d8:msg_typei0e5:piecei<piece>ee``."""
        return encode({b"msg_type": 0, b"piece": self.piece})


@dataclass(frozen=True, slots=True, repr=False)
class MetadataData(_ExtensionMessage):
    """Piece ``piece`` of an info dictionary of ``total_size`` bytes (BEP 9, ``msg_type`` 1).

    ``data`` follows the bencoded dictionary in the payload. It is at most 16 KiB (exactly
    16 KiB except for the last piece, which the fetcher checks), and the piece must lie inside
    ``total_size``.

    >>> message = MetadataData(0, 11, b"d4:name1:xe")
    >>> message.encode_payload()
    b'd8:msg_typei1e5:piecei0e10:total_sizei11eed4:name1:xe'
    >>> message
    MetadataData(piece=0, total_size=11, data=b'd4:name1:xe')
    """

    extension_name: ClassVar[str] = "ut_metadata"
    piece: int
    total_size: int
    data: bytes

    def __post_init__(self) -> None:
        """Check the sizes: at most 16 KiB of data, inside ``total_size``."""
        _check_piece(self.piece)
        _check_int("total_size", self.total_size, 1, MAX_METADATA_TOTAL_SIZE)
        data = _check_bytes("data", self.data)
        object.__setattr__(self, "data", data)
        if len(data) > METADATA_PIECE_SIZE:
            raise ValueError(f"a metadata piece is at most 16 KiB, not {len(data)} bytes")
        start = self.piece * METADATA_PIECE_SIZE
        if start >= self.total_size or start + len(data) > self.total_size:
            raise ValueError(
                f"piece {self.piece} of {len(data)} bytes lies outside {self.total_size} bytes"
            )

    def __repr__(self) -> str:
        """Short data shown whole, long data by its size."""
        shown = repr(self.data) if len(self.data) <= 32 else f"<{len(self.data)} bytes>"
        return f"MetadataData(piece={self.piece}, total_size={self.total_size}, data={shown})"

    def encode_payload(self) -> bytes:
        """The dictionary, then the data."""
        head = encode({b"msg_type": 1, b"piece": self.piece, b"total_size": self.total_size})
        return head + self.data


@dataclass(frozen=True, slots=True)
class MetadataReject(_ExtensionMessage):
    """The sender will not send piece ``piece`` (BEP 9, ``msg_type`` 2).

    ``piece`` has the range of :attr:`MetadataRequest.piece`: a reject answers any request, and
    names the piece asked for. A received reject is an answer to a request of ours, so
    :func:`decode_metadata_message` takes only pieces we could have asked for (0 to 2**63 - 1).

    >>> MetadataReject(0).encode_payload()
    b'd8:msg_typei2e5:piecei0ee'
    """

    extension_name: ClassVar[str] = "ut_metadata"
    piece: int

    def __post_init__(self) -> None:
        """Check that ``piece`` is an int of at most 20 digits, as a request's."""
        _check_piece(self.piece, _MAX_ASKED_PIECE, -_MAX_ASKED_PIECE)

    def encode_payload(self) -> bytes:
        """``d8:msg_typei2e5:piecei<piece>ee``."""
        return encode({b"msg_type": 2, b"piece": self.piece})


def decode_metadata_message(
    payload: bytes | bytearray | memoryview,
) -> MetadataRequest | MetadataData | MetadataReject | None:
    """Decode a ``ut_metadata`` payload; ``None`` for a ``msg_type`` we do not know.

    An unknown ``msg_type`` is ignored, as libtorrent does, so a future message type does
    not cost the connection. Bytes after the dictionary of a request or reject are ignored.

    >>> decode_metadata_message(b"d8:msg_typei1e5:piecei0e10:total_sizei3eeabc")
    MetadataData(piece=0, total_size=3, data=b'abc')
    >>> decode_metadata_message(b"d8:msg_typei9e5:piecei0ee") is None
    True

    A request for a piece no dictionary can have decodes, whatever the int (negative, or
    beyond 64 bits, up to 20 digits): it is answered with a reject naming the same piece
    (BEP 9), as libtorrent answers ``piece < 0`` or past the end, and the connection stays.
    Data and rejects answer requests of ours, so theirs must be pieces we could have asked
    for; a reject of a piece we never asked (up to 2**63 - 1) decodes, and is ignored.

    >>> decode_metadata_message(b"d8:msg_typei0e5:piecei2147483648ee")
    MetadataRequest(piece=2147483648)
    >>> decode_metadata_message(b"d8:msg_typei0e5:piecei-7ee")
    MetadataRequest(piece=-7)

    Raises:
        RemoteProtocolError: longer than :data:`MAX_METADATA_MESSAGE_SIZE` (not decoded);
            not a bencoded dictionary; ``msg_type`` or ``piece`` missing or
            not an int; a negative ``msg_type``; a ``piece`` of more than 20 digits; a reject
            of a negative piece or one beyond 64 bits; data with a negative piece or one
            beyond the largest dictionary, without a valid ``total_size``, with more than
            16 KiB of data, or with a piece outside ``total_size``.
    """
    if len(payload) > MAX_METADATA_MESSAGE_SIZE:
        raise RemoteProtocolError(
            f"ut_metadata message of {len(payload)} bytes exceeds the limit of "
            f"{MAX_METADATA_MESSAGE_SIZE}"
        )
    raw = bytes(payload)
    try:
        value, end = decode_prefix(raw, lenient=True, max_depth=_MAX_DEPTH)
    except BencodeDecodeError as error:
        raise RemoteProtocolError(f"ut_metadata message is not valid bencoding: {error}") from None
    if not isinstance(value, dict):
        raise RemoteProtocolError("ut_metadata message is not a bencoded dictionary")
    msg_type = value.get(b"msg_type")
    piece = value.get(b"piece")
    if not _is_int(msg_type, 0):
        raise RemoteProtocolError(f"ut_metadata message with msg_type {msg_type!r}")
    if not _is_int(piece):
        raise RemoteProtocolError(f"ut_metadata message with piece {piece!r}")
    assert isinstance(piece, int)  # narrowed by _is_int
    # Bounded by value, not by digits counted in a string: the bencode decoder already made
    # the int (at most Python's 4300 digits, in a message the connection bounds), and keeping
    # it no longer than 20 digits bounds what a reject echoing it costs us.
    if not -_MAX_ASKED_PIECE <= piece <= _MAX_ASKED_PIECE:
        raise RemoteProtocolError(
            f"ut_metadata message with a piece of more than {_MAX_PIECE_DIGITS} digits"
        )
    if msg_type == 0:
        return MetadataRequest(piece)
    if msg_type == 2:
        if not 0 <= piece <= _MAX_ANSWERED_PIECE:  # we never ask for such a piece
            raise RemoteProtocolError(f"ut_metadata reject of piece {piece}")
        return MetadataReject(piece)
    if msg_type != 1:
        return None
    # Data must lie inside a dictionary (total_size checks the rest).
    if not 0 <= piece <= _MAX_PIECE:
        raise RemoteProtocolError(f"ut_metadata data with piece {piece}")
    total_size = value.get(b"total_size")
    if not _is_int(total_size, 1, MAX_METADATA_TOTAL_SIZE):
        raise RemoteProtocolError(f"ut_metadata data with total_size {total_size!r}")
    assert isinstance(total_size, int)
    try:
        return MetadataData(piece, total_size, raw[end:])
    except ValueError as error:
        raise RemoteProtocolError(f"ut_metadata data: {error}") from None


# ---------------------------------------------------------------------------- ut_pex (BEP 11)


def _check_addresses(name: str, value: object, family: int) -> tuple[PeerAddress, ...]:
    if not isinstance(value, tuple | list):
        raise TypeError(f"{name} must be a tuple of PeerAddress, not {type(value).__name__}")
    for address in value:
        if not isinstance(address, PeerAddress):
            raise TypeError(f"{name} must hold PeerAddress objects, not {address!r}")
        if address.family != family:
            raise ValueError(f"{name} holds IPv{family} addresses only, not {address}")
    return tuple(value)


def _check_flags(name: str, value: object, count: int) -> tuple[int, ...]:
    if not isinstance(value, tuple | list):
        raise TypeError(f"{name} must be a tuple of ints, not {type(value).__name__}")
    for flag in value:
        _check_int(f"a flag in {name}", flag, 0, 255)
    if len(value) not in (0, count):
        raise ValueError(f"{name} has {len(value)} flags for {count} addresses")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class PexMessage(_ExtensionMessage):
    """A peer exchange message (BEP 11): peers added and dropped since the last one.

    ``added`` / ``dropped`` hold IPv4 addresses and ``added6`` / ``dropped6`` IPv6 ones (BEP 11's
    text calls ``dropped`` IPv6: an erratum; every client sends IPv4 there). Each flags tuple is
    either empty (no flags sent) or has one byte per added address: 0x01 prefers encryption,
    0x02 seed / upload only, 0x04 supports uTP, 0x08 supports ut_holepunch, 0x10 reachable
    (an outgoing connection).

    >>> peer = PeerAddress.parse("127.0.0.1:21930")
    >>> message = PexMessage(added=(peer,), added_flags=(0x11,))
    >>> message.encode_payload()
    b'd5:added6:\\x7f\\x00\\x00\\x01U\\xaa7:added.f1:\\x11e'
    >>> PexMessage.decode_payload(message.encode_payload()) == message
    True
    """

    extension_name: ClassVar[str] = "ut_pex"
    added: tuple[PeerAddress, ...] = ()
    added_flags: tuple[int, ...] = ()
    added6: tuple[PeerAddress, ...] = ()
    added6_flags: tuple[int, ...] = ()
    dropped: tuple[PeerAddress, ...] = ()
    dropped6: tuple[PeerAddress, ...] = ()

    def __post_init__(self) -> None:
        """Check families and flag counts; keep every list as a tuple."""
        for name, family in (("added", 4), ("added6", 6), ("dropped", 4), ("dropped6", 6)):
            object.__setattr__(self, name, _check_addresses(name, getattr(self, name), family))
        object.__setattr__(
            self, "added_flags", _check_flags("added_flags", self.added_flags, len(self.added))
        )
        object.__setattr__(
            self, "added6_flags", _check_flags("added6_flags", self.added6_flags, len(self.added6))
        )

    def encode_payload(self) -> bytes:
        """The bencoded dictionary, with only the non-empty keys (BEP 11 allows omitting any)."""
        # The families were checked on construction, so the compact encoders cannot fail.
        out: dict[bytes, bytes] = {}
        for key, value in (
            (b"added", encode_compact_peers(self.added, 4)),
            (b"added.f", bytes(self.added_flags)),
            (b"added6", encode_compact_peers(self.added6, 6)),
            (b"added6.f", bytes(self.added6_flags)),
            (b"dropped", encode_compact_peers(self.dropped, 4)),
            (b"dropped6", encode_compact_peers(self.dropped6, 6)),
        ):
            if value:
                out[key] = value
        return encode(out)

    @classmethod
    def decode_payload(
        cls, payload: bytes | bytearray | memoryview, *, max_entries: int = DEFAULT_MAX_PEX_ENTRIES
    ) -> PexMessage:
        """Decode a received ``ut_pex`` payload.

        As libtorrent: bytes after the dictionary are ignored, a key whose value is not a byte
        string is ignored, a list whose length
        is not a multiple of the entry size (6 or 18) loses its incomplete tail, and a flags
        string whose length does not match its address list is ignored (empty flags). The
        addresses are kept as sent (port 0, IPv4-mapped IPv6 included): filtering them is for
        the receiver.

        Raises:
            RemoteProtocolError: longer than :data:`MAX_PEX_MESSAGE_SIZE` (not decoded), not
                a bencoded dictionary, or a list of more than ``max_entries`` addresses
                (default :data:`DEFAULT_MAX_PEX_ENTRIES`).
        """
        if len(payload) > MAX_PEX_MESSAGE_SIZE:
            raise RemoteProtocolError(
                f"ut_pex message of {len(payload)} bytes exceeds the limit of "
                f"{MAX_PEX_MESSAGE_SIZE}"
            )
        fields = _decode_dict(payload, "ut_pex message")
        lists: dict[bytes, tuple[PeerAddress, ...]] = {}
        for key, size in ((b"added", 6), (b"added6", 18), (b"dropped", 6), (b"dropped6", 18)):
            raw = fields.get(key)
            if not isinstance(raw, bytes):
                lists[key] = ()
                continue
            count = len(raw) // size
            if count > max_entries:
                raise RemoteProtocolError(
                    f"ut_pex {key.decode()} of {count} addresses exceeds the limit of {max_entries}"
                )
            # A whole number of entries, no more than the limit: the parser cannot refuse it.
            family: Family = 4 if size == 6 else 6
            lists[key] = tuple(parse_compact_peers(raw[: count * size], family, limit=max_entries))

        def flags(key: bytes, count: int) -> tuple[int, ...]:
            raw = fields.get(key)
            return tuple(raw) if isinstance(raw, bytes) and len(raw) == count else ()

        return cls(
            added=lists[b"added"],
            added_flags=flags(b"added.f", len(lists[b"added"])),
            added6=lists[b"added6"],
            added6_flags=flags(b"added6.f", len(lists[b"added6"])),
            dropped=lists[b"dropped"],
            dropped6=lists[b"dropped6"],
        )


# ---------------------------------------------------------------- lt_donthave, upload_only


@dataclass(frozen=True, slots=True)
class DontHave(_ExtensionMessage):
    """The sender no longer has piece ``index`` (BEP 54 ``lt_donthave``): the opposite of have.

    >>> DontHave(5).encode_payload()
    b'\\x00\\x00\\x00\\x05'
    """

    extension_name: ClassVar[str] = "lt_donthave"
    index: int

    def __post_init__(self) -> None:
        """Check that ``index`` is a uint32."""
        _check_int("index", self.index, 0, _U32_MAX)

    def encode_payload(self) -> bytes:
        """The index as a 4-byte big-endian integer."""
        return self.index.to_bytes(4, "big")

    @classmethod
    def decode_payload(cls, payload: bytes | bytearray | memoryview) -> DontHave:
        """Decode the 4-byte payload.

        Raises:
            RemoteProtocolError: the payload is not exactly 4 bytes.
        """
        if len(payload) != 4:
            raise RemoteProtocolError(f"lt_donthave payload of {len(payload)} bytes (expected 4)")
        return cls(int.from_bytes(payload, "big"))


@dataclass(frozen=True, slots=True)
class UploadOnly(_ExtensionMessage):
    """The sender switches upload-only mode on or off (BEP 21, as libtorrent's extension message).

    BEP 21 puts ``upload_only`` in the extended handshake; libtorrent also sends a one-byte
    ``upload_only`` extension message when the state changes later, and so do we.

    >>> UploadOnly(True).encode_payload()
    b'\\x01'
    """

    extension_name: ClassVar[str] = "upload_only"
    upload_only: bool

    def __post_init__(self) -> None:
        """Check that ``upload_only`` is a bool."""
        if not isinstance(self.upload_only, bool):
            raise TypeError(f"upload_only must be a bool, not {type(self.upload_only).__name__}")

    def encode_payload(self) -> bytes:
        """One byte: 1 or 0."""
        return b"\x01" if self.upload_only else b"\x00"

    @classmethod
    def decode_payload(cls, payload: bytes | bytearray | memoryview) -> UploadOnly:
        """Decode the one-byte payload (any non-zero byte is on).

        Raises:
            RemoteProtocolError: the payload is not exactly 1 byte.
        """
        if len(payload) != 1:
            raise RemoteProtocolError(f"upload_only payload of {len(payload)} bytes (expected 1)")
        return cls(payload[0] != 0)


# ---------------------------------------------------------------------------- ut_holepunch (BEP 55)


HOLEPUNCH_EXTENSION: Final = "ut_holepunch"
"""The BEP 10 name of the holepunch extension (BEP 55)."""

HOLEPUNCH_EXTENSION_ID: Final = 4
"""The id we ask peers to send ``ut_holepunch`` under: libtorrent's (its ``holepunch_msg``)."""


class HolepunchMessageType(enum.IntEnum):
    """The ``msg_type`` byte of a ``ut_holepunch`` message (BEP 55)."""

    RENDEZVOUS = 0
    """Initiator to relay: please introduce me to the peer at this address."""
    CONNECT = 1
    """Relay to both ends: dial the peer at this address now (it is dialling you)."""
    ERROR = 2
    """Relay to initiator: the rendezvous for this address failed, for the error code given."""


class HolepunchError(enum.IntEnum):
    """The ``err_code`` of a ``ut_holepunch`` error message (BEP 55)."""

    NO_SUCH_PEER = 1
    """The target address is invalid."""
    NOT_CONNECTED = 2
    """The relay is not connected to the target."""
    NO_SUPPORT = 3
    """The target does not speak ``ut_holepunch``."""
    NO_SELF = 4
    """The target is the relay itself (or, as libtorrent reads it, the initiator)."""


_ADDR_TYPE_OF_FAMILY: Final = {4: 0, 6: 1}
_HOLEPUNCH_HEADER: Final = 2  # msg_type, addr_type


@dataclass(frozen=True, slots=True)
class HolepunchMessage(_ExtensionMessage):
    """A ``ut_holepunch`` message (BEP 55): a type, an address, and for errors a code.

    The payload is binary: ``msg_type`` (1 byte), ``addr_type`` (1 byte: 0 IPv4, 1 IPv6), the
    address (4 or 16 bytes) and port (2 bytes, big-endian), then the ``err_code`` (4 bytes,
    big-endian), 0 in a rendezvous or a connect. BEP 55 makes ``err_code`` part of every
    message, and anacrolix/torrent refuses a message without it (and drops the connection);
    libtorrent writes it only in errors but reads either, as :func:`decode_holepunch_message`
    does. ``address`` is kept in the family it has: an IPv4-mapped IPv6 address is sent as
    IPv6 (normalise it first to send it as IPv4). ``error`` is ``None`` for a rendezvous or a
    connect, and an int for an error: a :class:`HolepunchError` when the code is one BEP 55
    defines, the plain int otherwise (a code from a newer peer).

    >>> target = PeerAddress.parse("10.0.0.1:6881")
    >>> HolepunchMessage.rendezvous(target).encode_payload().hex()
    '00000a0000011ae100000000'
    >>> failed = HolepunchMessage.failed(target, HolepunchError.NOT_CONNECTED)
    >>> failed.encode_payload().hex()
    '02000a0000011ae100000002'
    >>> decode_holepunch_message(failed.encode_payload()) == failed
    True
    """

    extension_name: ClassVar[str] = HOLEPUNCH_EXTENSION
    msg_type: HolepunchMessageType
    address: PeerAddress
    error: int | None = None

    def __post_init__(self) -> None:
        """Check the fields: a known type, an address, an error code exactly for errors."""
        raw_type: object = self.msg_type  # checked: a caller may pass anything
        if isinstance(raw_type, bool) or not isinstance(raw_type, int):
            raise TypeError(f"msg_type must be a HolepunchMessageType, not {raw_type!r}")
        try:
            msg_type = HolepunchMessageType(raw_type)
        except ValueError:
            raise ValueError(f"msg_type must be 0, 1 or 2, not {raw_type}") from None
        object.__setattr__(self, "msg_type", msg_type)
        if not isinstance(self.address, PeerAddress):
            raise TypeError(f"address must be a PeerAddress, not {self.address!r}")
        if msg_type is HolepunchMessageType.ERROR:
            code = _check_int("error", self.error, 0, _U32_MAX)
            object.__setattr__(self, "error", _error_code(code))
        elif self.error is not None:
            raise ValueError(f"only an error message carries an error code, not {msg_type.name}")

    @classmethod
    def rendezvous(cls, target: PeerAddress) -> HolepunchMessage:
        """Ask the receiver (the relay) to introduce us to ``target``."""
        return cls(HolepunchMessageType.RENDEZVOUS, target)

    @classmethod
    def connect(cls, address: PeerAddress) -> HolepunchMessage:
        """Tell the receiver to dial ``address`` (sent by a relay to both ends)."""
        return cls(HolepunchMessageType.CONNECT, address)

    @classmethod
    def failed(cls, target: PeerAddress, error: HolepunchError | int) -> HolepunchMessage:
        """Tell the receiver (an initiator) its rendezvous for ``target`` failed."""
        return cls(HolepunchMessageType.ERROR, target, error)

    def encode_payload(self) -> bytes:
        """``msg_type``, ``addr_type``, address, port, and ``err_code`` (0 unless an error)."""
        head = bytes((self.msg_type, _ADDR_TYPE_OF_FAMILY[self.address.family]))
        body = head + self.address.host.packed + self.address.port.to_bytes(2, "big")
        return body + (self.error or 0).to_bytes(4, "big")


def _error_code(code: int) -> int:
    try:
        return HolepunchError(code)
    except ValueError:
        return code


def decode_holepunch_message(payload: bytes | bytearray | memoryview) -> HolepunchMessage | None:
    """Decode a ``ut_holepunch`` payload; ``None`` for a ``msg_type`` or ``addr_type`` we do
    not know.

    As libtorrent: a message of an unknown type or address type is ignored (a future
    extension of BEP 55 must not cost the connection), bytes after the message are ignored,
    and an error code BEP 55 does not define is kept as a plain int (libtorrent logs it as
    unknown and carries on). A rendezvous or a connect is read with or without its
    ``err_code`` (libtorrent sends none; BEP 55 and the others send 0), which is not looked
    at. A payload too short for its own fields raises; libtorrent drops
    such a message without closing the connection, which is what
    :class:`~bip_peer.HolepunchService` does with the error.

    >>> decode_holepunch_message(bytes.fromhex("0100" "7f000001" "1ae1"))
    HolepunchMessage(msg_type=<HolepunchMessageType.CONNECT: 1>, address=PeerAddress(host=IPv4Address('127.0.0.1'), port=6881), error=None)
    >>> decode_holepunch_message(bytes.fromhex("0900")) is None
    True

    Raises:
        RemoteProtocolError: shorter than the 2-byte header, than its address, or (an error
            message) than its 4-byte error code.
    """  # noqa: E501  # the doctest's repr is one line
    raw = bytes(payload)
    if len(raw) < _HOLEPUNCH_HEADER:
        raise RemoteProtocolError(f"ut_holepunch payload of {len(raw)} bytes (at least 2)")
    msg_type, addr_type = raw[0], raw[1]
    if msg_type > HolepunchMessageType.ERROR or addr_type > 1:
        return None
    size = 4 if addr_type == 0 else 16
    end = _HOLEPUNCH_HEADER + size + 2
    if msg_type == HolepunchMessageType.ERROR:
        end += 4
    if len(raw) < end:
        raise RemoteProtocolError(
            f"ut_holepunch {HolepunchMessageType(msg_type).name.lower()} message of "
            f"{len(raw)} bytes (expected {end})"
        )
    packed = raw[_HOLEPUNCH_HEADER : _HOLEPUNCH_HEADER + size]
    host = IPv4Address(packed) if size == 4 else IPv6Address(packed)
    port = int.from_bytes(raw[_HOLEPUNCH_HEADER + size : _HOLEPUNCH_HEADER + size + 2], "big")
    error = None
    if msg_type == HolepunchMessageType.ERROR:
        error = int.from_bytes(raw[end - 4 : end], "big")
    return HolepunchMessage(HolepunchMessageType(msg_type), PeerAddress(host, port), error)
