"""KRPC, the DHT's wire format: datagrams in, typed messages out, and back (sans-IO).

A KRPC message is one bencoded dictionary per UDP datagram (BEP 5). This module covers every
message the Mainline DHT sends today:

- queries (``y = q``): :class:`Ping`, :class:`FindNode`, :class:`GetPeers` (with BEP 33
  ``scrape`` / ``noseed``), :class:`AnnouncePeer` (``implied_port``, BEP 33 ``seed``),
  :class:`Get` and :class:`Put` (BEP 44), :class:`SampleInfohashes` (BEP 51), and
  :class:`UnknownQuery` for any other method (the node answers it with error 204, or, as BEP 51
  suggests, as a ``find_node`` when it carries a ``target``);
- :class:`Response` (``y = r``): one generic type with every known key (``nodes``, ``nodes6``,
  ``values``, ``token``, BEP 33 ``BFsd`` / ``BFpe``, BEP 44 ``v`` / ``k`` / ``sig`` / ``seq``,
  BEP 51 ``samples`` / ``num`` / ``interval``), because a response does not say which query it
  answers: the node core matches it by transaction id, then calls
  :meth:`Response.check_answers` with the query it sent;
- :class:`Error` (``y = e``): a code (:class:`ErrorCode`: BEP 5's 201-204, BEP 44's 205-207,
  301, 302; unknown codes are kept as plain ints) and a message.

Every message carries the top-level keys as keyword fields: ``transaction_id`` (``t``),
``version`` (``v``, the client version, kept as bytes), ``ip`` (BEP 42: the requester's address as
the responder saw it, as a :class:`~bip_handshake.PeerAddress`) and ``read_only`` (BEP 43 ``ro``).
Queries that may ask for nodes (find_node, get_peers, get, sample_infohashes) keep BEP 32 ``want``
as a tuple of byte strings (``b"n4"``, ``b"n6"``; unknown entries kept, see :data:`WANT_N4`).

API::

    decode_message(data, limits=DEFAULT_LIMITS) -> Query | Response | Error
    message.encode() -> bytes

:func:`decode_message` raises :class:`~bip_dht.KRPCError` for anything that is not a valid
message and nothing else, whatever the bytes. When the datagram is a recognisable query whose
arguments are wrong it raises the subclass :class:`KRPCQueryError`, which carries the transaction
id and method, so that the node can answer with error 203 as BEP 5 asks. Untrusted input cannot
make it allocate much: datagrams above ``limits.max_datagram`` bytes are refused before decoding,
nesting is capped, and so are the lengths of ``values``, ``nodes``, ``nodes6``, ``samples`` and
``want``.

Tolerance, the way libtorrent does it: unknown keys in ``a`` / ``r`` are kept in ``extra`` (and
written back by :meth:`encode`), top-level unknown keys are ignored; in a response, a key of a known
name whose value is malformed (``nodes`` not a multiple of 26 bytes, a ``values`` entry that is not
6 or 18 bytes, a ``BFsd`` that is not 256 bytes...) is dropped and its name recorded in
``Response.ignored``, so a slightly broken reply still proves the node alive. Dictionaries whose
keys are out of order are accepted (some clients send them).

The codec checks shapes, not policy: a BEP 44 ``v`` over 1000 bytes or a ``salt`` over 64 bytes
decodes fine, so the storage layer can answer with error 205 / 207 as BEP 44 asks.

Constructors validate their fields and raise :class:`~bip_dht.LocalProtocolError` on misuse.

>>> msg = decode_message(b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe")
>>> msg
Ping(transaction_id=b'aa', node_id=b'abcdefghij0123456789', version=None, ip=None, \
read_only=False, extra={})
>>> msg.encode()
b'd1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, TypeAlias, cast

from bip_bencode import BencodeDecodeError, BencodeEncodeError, Value, decode, encode
from bip_handshake._compact import (
    CompactError,
    Family,
    NodeInfo,
    PeerAddress,
    encode_compact_nodes,
    parse_compact_nodes,
)

from ._errors import KRPCError, LocalProtocolError

__all__ = [
    "BLOOM_SIZE",
    "DEFAULT_LIMITS",
    "WANT_N4",
    "WANT_N6",
    "AnnouncePeer",
    "Error",
    "ErrorCode",
    "FindNode",
    "Get",
    "GetPeers",
    "KRPCLimits",
    "KRPCQueryError",
    "Message",
    "Ping",
    "Put",
    "Query",
    "Response",
    "SampleInfohashes",
    "UnknownQuery",
    "decode_message",
]

ID_LENGTH = 20
BLOOM_SIZE = 256
"""Bytes in a BEP 33 ``BFsd`` / ``BFpe`` bloom filter."""
_KEY_LENGTH = 32
_SIG_LENGTH = 64

WANT_N4 = b"n4"
"""BEP 32 ``want`` entry asking for IPv4 nodes (``nodes``)."""
WANT_N6 = b"n6"
"""BEP 32 ``want`` entry asking for IPv6 nodes (``nodes6``)."""


class ErrorCode(IntEnum):
    """KRPC error codes: BEP 5 (201-204) and BEP 44 (205-207, 301, 302)."""

    GENERIC = 201
    SERVER = 202
    PROTOCOL = 203
    METHOD_UNKNOWN = 204
    MESSAGE_TOO_BIG = 205
    INVALID_SIGNATURE = 206
    SALT_TOO_BIG = 207
    CAS_MISMATCH = 301
    SEQUENCE_TOO_LOW = 302


@dataclass(frozen=True, slots=True)
class KRPCLimits:
    """What one datagram may make the decoder allocate.

    The defaults fit the real DHT: datagrams stay under the Ethernet MTU (a full BEP 44 ``put``
    is about 1200 bytes), and the list caps are above anything 1500 bytes can hold, so they only
    bite when ``max_datagram`` is raised.
    """

    max_datagram: int = 1500
    """Larger datagrams are refused before they are decoded."""
    max_depth: int = 16
    """How deeply lists and dictionaries may nest (a BEP 44 ``v`` may be a structure)."""
    max_values: int = 256
    """Entries in a ``values`` list."""
    max_nodes: int = 128
    """Entries in ``nodes`` or in ``nodes6``."""
    max_samples: int = 128
    """Info-hashes in BEP 51 ``samples``."""
    max_want: int = 8
    """Entries in a BEP 32 ``want`` list."""

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LocalProtocolError(f"KRPCLimits.{name} must be a positive int, not {value!r}")


DEFAULT_LIMITS = KRPCLimits()
"""The limits :func:`decode_message` uses unless told otherwise."""


class KRPCQueryError(KRPCError):
    """A query arrived with a method we know but arguments that are wrong.

    The node answers it with :attr:`ErrorCode.PROTOCOL` (203) using :attr:`transaction_id`.

    >>> error = KRPCQueryError("'target' is missing", transaction_id=b"aa", method=b"find_node")
    >>> error.transaction_id, error.method
    (b'aa', b'find_node')
    """

    def __init__(self, message: str, *, transaction_id: bytes, method: bytes) -> None:
        super().__init__(message)
        self.transaction_id = transaction_id
        self.method = method


# --- field checks shared by constructors (LocalProtocolError) --------------------------------


def _check_bytes(name: str, value: object, length: int | None = None) -> None:
    if not isinstance(value, bytes):
        raise LocalProtocolError(f"{name} must be bytes, not {type(value).__name__}")
    if length is not None and len(value) != length:
        raise LocalProtocolError(f"{name} must be {length} bytes, not {len(value)}")


def _check_optional_bytes(name: str, value: object, length: int | None = None) -> None:
    if value is not None:
        _check_bytes(name, value, length)


def _check_int(name: str, value: object, low: int | None = None, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LocalProtocolError(f"{name} must be an int, not {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise LocalProtocolError(f"{name} must be in {low}..{high}, not {value}")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise LocalProtocolError(f"{name} must be a bool, not {value!r}")


def _check_value(name: str, value: object) -> None:
    # Encoding is the one complete check of "a bencodable value", and it is what we will send.
    try:
        encode(value)  # type: ignore[arg-type]
    except (BencodeEncodeError, TypeError, ValueError) as exc:
        raise LocalProtocolError(f"{name} is not bencodable: {exc}") from None


def _check_common(message: _Envelope) -> None:
    _check_bytes("transaction_id", message.transaction_id)
    _check_optional_bytes("version", message.version)
    if message.ip is not None and not isinstance(message.ip, PeerAddress):
        raise LocalProtocolError(f"ip must be a PeerAddress, not {message.ip!r}")
    _check_bool("read_only", message.read_only)


def _check_extra(extra: object, known: frozenset[bytes]) -> None:
    if not isinstance(extra, Mapping):
        raise LocalProtocolError("extra must be a mapping of bytes keys")
    for key, value in extra.items():
        _check_bytes("an extra key", key)
        if key in known:
            raise LocalProtocolError(f"extra must not hold the known key {key!r}")
        _check_value(f"extra[{key!r}]", value)


def _check_want(want: object) -> None:
    if want is None:
        return
    if not isinstance(want, tuple):
        raise LocalProtocolError("want must be a tuple of bytes or None")
    for entry in want:
        _check_bytes("a want entry", entry)


def _check_nodes(name: str, nodes: object, family: int) -> None:
    if nodes is None:
        return
    if not isinstance(nodes, tuple):
        raise LocalProtocolError(f"{name} must be a tuple of NodeInfo or None")
    for node in nodes:
        if not isinstance(node, NodeInfo) or node.address.family != family:
            raise LocalProtocolError(f"{name} holds only IPv{family} NodeInfo, not {node!r}")


# --- the envelope ------------------------------------------------------------------------------


class _Envelope:
    """What every message has: the top-level keys ``t``, ``v``, ``ip``, ``ro``."""

    __slots__ = ()
    transaction_id: bytes
    version: bytes | None
    ip: PeerAddress | None
    read_only: bool

    def _top(self, kind: bytes) -> dict[bytes, Any]:
        top: dict[bytes, Any] = {b"t": self.transaction_id, b"y": kind}
        if self.version is not None:
            top[b"v"] = self.version
        if self.ip is not None:
            top[b"ip"] = self.ip.to_compact()
        if self.read_only:
            top[b"ro"] = 1
        return top


def _put_want(args: dict[bytes, Any], want: tuple[bytes, ...] | None) -> None:
    if want is not None:
        args[b"want"] = list(want)


class _QueryBase(_Envelope):
    """Shared by the query classes: the method name and the ``a`` dictionary."""

    __slots__ = ()
    method: ClassVar[bytes]
    known: ClassVar[frozenset[bytes]]
    node_id: bytes
    extra: Mapping[bytes, Value]

    def _arguments(self) -> dict[bytes, Any]:
        raise NotImplementedError  # every concrete query overrides it

    def _method_name(self) -> bytes:
        return self.method

    def _check(self) -> None:
        _check_common(self)
        _check_bytes("node_id", self.node_id, ID_LENGTH)
        _check_extra(self.extra, self.known)

    def encode(self) -> bytes:
        """The bencoded datagram.

        >>> Ping(transaction_id=b"t1", node_id=bytes(20)).encode()[:9]
        b'd1:ad2:id'
        """
        args: dict[bytes, Any] = dict(self.extra)
        args.update(self._arguments())
        args[b"id"] = self.node_id
        top = self._top(b"q")
        top[b"q"] = self._method_name()
        top[b"a"] = args
        return encode(top)


_COMMON = frozenset({b"id"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping(_QueryBase):
    """``ping``: are you there? Answered by a :class:`Response` with just ``id``."""

    method: ClassVar[bytes] = b"ping"
    known: ClassVar[frozenset[bytes]] = _COMMON
    transaction_id: bytes
    node_id: bytes
    version: bytes | None = None
    ip: PeerAddress | None = None
    read_only: bool = False
    extra: Mapping[bytes, Value] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        self._check()

    def _arguments(self) -> dict[bytes, Any]:
        return {}


@dataclass(frozen=True, slots=True, kw_only=True)
class FindNode(_QueryBase):
    """``find_node``: the K nodes closest to ``target`` (BEP 32 ``want`` picks families)."""

    method: ClassVar[bytes] = b"find_node"
    known: ClassVar[frozenset[bytes]] = _COMMON | {b"target", b"want"}
    transaction_id: bytes
    node_id: bytes
    target: bytes
    want: tuple[bytes, ...] | None = None
    version: bytes | None = None
    ip: PeerAddress | None = None
    read_only: bool = False
    extra: Mapping[bytes, Value] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        self._check()
        _check_bytes("target", self.target, ID_LENGTH)
        _check_want(self.want)

    def _arguments(self) -> dict[bytes, Any]:
        args: dict[bytes, Any] = {b"target": self.target}
        _put_want(args, self.want)
        return args


@dataclass(frozen=True, slots=True, kw_only=True)
class GetPeers(_QueryBase):
    """``get_peers``: peers for ``info_hash``, or closer nodes; always a write token.

    BEP 33: ``scrape`` asks for the ``BFsd`` / ``BFpe`` bloom filters, ``noseed`` for leechers
    only.
    """

    method: ClassVar[bytes] = b"get_peers"
    known: ClassVar[frozenset[bytes]] = _COMMON | {b"info_hash", b"want", b"noseed", b"scrape"}
    transaction_id: bytes
    node_id: bytes
    info_hash: bytes
    want: tuple[bytes, ...] | None = None
    noseed: bool = False
    scrape: bool = False
    version: bytes | None = None
    ip: PeerAddress | None = None
    read_only: bool = False
    extra: Mapping[bytes, Value] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        self._check()
        _check_bytes("info_hash", self.info_hash, ID_LENGTH)
        _check_want(self.want)
        _check_bool("noseed", self.noseed)
        _check_bool("scrape", self.scrape)

    def _arguments(self) -> dict[bytes, Any]:
        args: dict[bytes, Any] = {b"info_hash": self.info_hash}
        _put_want(args, self.want)
        if self.noseed:
            args[b"noseed"] = 1
        if self.scrape:
            args[b"scrape"] = 1
        return args


@dataclass(frozen=True, slots=True, kw_only=True)
class AnnouncePeer(_QueryBase):
    """``announce_peer``: the sender downloads ``info_hash`` on ``port``.

    With ``implied_port`` the receiver uses the datagram's source port instead of ``port``
    (which may then be absent on the wire and decodes as 0). BEP 33: ``seed`` marks a seed.
    """

    method: ClassVar[bytes] = b"announce_peer"
    known: ClassVar[frozenset[bytes]] = _COMMON | {
        b"info_hash",
        b"port",
        b"token",
        b"implied_port",
        b"seed",
    }
    transaction_id: bytes
    node_id: bytes
    info_hash: bytes
    port: int
    token: bytes
    implied_port: bool = False
    seed: bool = False
    version: bytes | None = None
    ip: PeerAddress | None = None
    read_only: bool = False
    extra: Mapping[bytes, Value] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        self._check()
        _check_bytes("info_hash", self.info_hash, ID_LENGTH)
        _check_int("port", self.port, 0, 0xFFFF)
        _check_bytes("token", self.token)
        _check_bool("implied_port", self.implied_port)
        _check_bool("seed", self.seed)

    def _arguments(self) -> dict[bytes, Any]:
        args: dict[bytes, Any] = {
            b"info_hash": self.info_hash,
            b"port": self.port,
            b"token": self.token,
        }
        if self.implied_port:
            args[b"implied_port"] = 1
        if self.seed:
            args[b"seed"] = 1
        return args


@dataclass(frozen=True, slots=True, kw_only=True)
class Get(_QueryBase):
    """BEP 44 ``get``: the item stored under ``target``.

    ``seq`` (a libtorrent extension BEP 44 mentions) asks the responder to leave ``v`` out unless
    its mutable item is newer than ``seq``.
    """

    method: ClassVar[bytes] = b"get"
    known: ClassVar[frozenset[bytes]] = _COMMON | {b"target", b"seq", b"want"}
    transaction_id: bytes
    node_id: bytes
    target: bytes
    seq: int | None = None
    want: tuple[bytes, ...] | None = None
    version: bytes | None = None
    ip: PeerAddress | None = None
    read_only: bool = False
    extra: Mapping[bytes, Value] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        self._check()
        _check_bytes("target", self.target, ID_LENGTH)
        if self.seq is not None:
            _check_int("seq", self.seq)
        _check_want(self.want)

    def _arguments(self) -> dict[bytes, Any]:
        args: dict[bytes, Any] = {b"target": self.target}
        if self.seq is not None:
            args[b"seq"] = self.seq
        _put_want(args, self.want)
        return args


@dataclass(frozen=True, slots=True, kw_only=True)
class Put(_QueryBase):
    """BEP 44 ``put``: store ``v``.

    Immutable when ``k``, ``sig`` and ``seq`` are all None; mutable when all three are set
    (``k`` 32 bytes, ``sig`` 64 bytes), with optional ``salt`` and compare-and-swap ``cas``.
    Sizes (``v`` ≤ 1000 bytes bencoded, ``salt`` ≤ 64) and the signature are the storage's
    checks, so that it can answer 205 / 206 / 207.
    """

    method: ClassVar[bytes] = b"put"
    known: ClassVar[frozenset[bytes]] = _COMMON | {
        b"token",
        b"v",
        b"k",
        b"sig",
        b"seq",
        b"cas",
        b"salt",
    }
    transaction_id: bytes
    node_id: bytes
    token: bytes
    v: Value = field(hash=False)
    k: bytes | None = None
    sig: bytes | None = None
    seq: int | None = None
    cas: int | None = None
    salt: bytes = b""
    version: bytes | None = None
    ip: PeerAddress | None = None
    read_only: bool = False
    extra: Mapping[bytes, Value] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        self._check()
        _check_bytes("token", self.token)
        _check_value("v", self.v)
        _check_optional_bytes("k", self.k, _KEY_LENGTH)
        _check_optional_bytes("sig", self.sig, _SIG_LENGTH)
        if self.seq is not None:
            _check_int("seq", self.seq)
        if self.cas is not None:
            _check_int("cas", self.cas)
        _check_bytes("salt", self.salt)
        mutable = (self.k is not None, self.sig is not None, self.seq is not None)
        if any(mutable) and not all(mutable):
            raise LocalProtocolError("a mutable put has k, sig and seq; an immutable one none")
        if not self.is_mutable and (self.cas is not None or self.salt):
            raise LocalProtocolError("cas and salt belong to mutable puts only")

    @property
    def is_mutable(self) -> bool:
        """Whether this is a mutable item (signed with ``k``)."""
        return self.k is not None

    def _arguments(self) -> dict[bytes, Any]:
        args: dict[bytes, Any] = {b"token": self.token, b"v": self.v}
        if self.k is not None:
            args[b"k"] = self.k
        if self.sig is not None:
            args[b"sig"] = self.sig
        if self.seq is not None:
            args[b"seq"] = self.seq
        if self.cas is not None:
            args[b"cas"] = self.cas
        if self.salt:
            args[b"salt"] = self.salt
        return args


@dataclass(frozen=True, slots=True, kw_only=True)
class SampleInfohashes(_QueryBase):
    """BEP 51 ``sample_infohashes``: a sample of the info-hashes the node stores."""

    method: ClassVar[bytes] = b"sample_infohashes"
    known: ClassVar[frozenset[bytes]] = _COMMON | {b"target", b"want"}
    transaction_id: bytes
    node_id: bytes
    target: bytes
    want: tuple[bytes, ...] | None = None
    version: bytes | None = None
    ip: PeerAddress | None = None
    read_only: bool = False
    extra: Mapping[bytes, Value] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        self._check()
        _check_bytes("target", self.target, ID_LENGTH)
        _check_want(self.want)

    def _arguments(self) -> dict[bytes, Any]:
        args: dict[bytes, Any] = {b"target": self.target}
        _put_want(args, self.want)
        return args


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownQuery(_QueryBase):
    """A query whose method we do not know; every argument but ``id`` is in ``extra``."""

    method: ClassVar[bytes] = b""
    known: ClassVar[frozenset[bytes]] = _COMMON
    transaction_id: bytes
    node_id: bytes
    name: bytes
    version: bytes | None = None
    ip: PeerAddress | None = None
    read_only: bool = False
    extra: Mapping[bytes, Value] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        self._check()
        _check_bytes("name", self.name)
        if self.name in _QUERY_TYPES:
            raise LocalProtocolError(f"{self.name!r} is a known method: use its own class")

    def _method_name(self) -> bytes:
        return self.name

    def _arguments(self) -> dict[bytes, Any]:
        return {}


Query: TypeAlias = (
    Ping | FindNode | GetPeers | AnnouncePeer | Get | Put | SampleInfohashes | UnknownQuery
)
"""Any query."""


_RESPONSE_KNOWN = frozenset(
    {
        b"id",
        b"nodes",
        b"nodes6",
        b"values",
        b"token",
        b"samples",
        b"num",
        b"interval",
        b"v",
        b"k",
        b"sig",
        b"seq",
        b"BFsd",
        b"BFpe",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Response(_Envelope):
    """A reply (``y = r``), with every key any query's reply may carry (None when absent).

    ``nodes`` holds IPv4 nodes, ``nodes6`` IPv6 ones (BEP 32); ``values`` holds peers of both
    families (BEP 32 lets IPv6 peers share the list). ``samples`` is the BEP 51 list of 20-byte
    info-hashes. ``ignored`` names known keys that arrived malformed and were dropped; it is not
    part of equality and is never encoded.
    """

    transaction_id: bytes
    node_id: bytes
    nodes: tuple[NodeInfo, ...] | None = None
    nodes6: tuple[NodeInfo, ...] | None = None
    values: tuple[PeerAddress, ...] | None = None
    token: bytes | None = None
    samples: tuple[bytes, ...] | None = None
    num: int | None = None
    interval: int | None = None
    v: Value | None = field(default=None, hash=False)
    k: bytes | None = None
    sig: bytes | None = None
    seq: int | None = None
    bfsd: bytes | None = None
    bfpe: bytes | None = None
    version: bytes | None = None
    ip: PeerAddress | None = None
    read_only: bool = False
    extra: Mapping[bytes, Value] = field(default_factory=dict, hash=False)
    ignored: tuple[bytes, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        _check_common(self)
        _check_bytes("node_id", self.node_id, ID_LENGTH)
        _check_nodes("nodes", self.nodes, 4)
        _check_nodes("nodes6", self.nodes6, 6)
        if self.values is not None and (
            not isinstance(self.values, tuple)
            or not all(isinstance(peer, PeerAddress) for peer in self.values)
        ):
            raise LocalProtocolError("values must be a tuple of PeerAddress or None")
        _check_optional_bytes("token", self.token)
        if self.samples is not None:
            if not isinstance(self.samples, tuple):
                raise LocalProtocolError("samples must be a tuple of 20-byte hashes or None")
            for sample in self.samples:
                _check_bytes("a sample", sample, ID_LENGTH)
        if self.num is not None:
            _check_int("num", self.num, 0)
        if self.interval is not None:
            _check_int("interval", self.interval, 0)
        if self.v is not None:
            _check_value("v", self.v)
        _check_optional_bytes("k", self.k, _KEY_LENGTH)
        _check_optional_bytes("sig", self.sig, _SIG_LENGTH)
        if self.seq is not None:
            _check_int("seq", self.seq)
        _check_optional_bytes("bfsd", self.bfsd, BLOOM_SIZE)
        _check_optional_bytes("bfpe", self.bfpe, BLOOM_SIZE)
        _check_extra(self.extra, _RESPONSE_KNOWN)
        if not isinstance(self.ignored, tuple):
            raise LocalProtocolError("ignored must be a tuple of bytes")

    def check_answers(self, query: Query) -> Response:
        """Check that this response has what an answer to *query* must have; return it.

        ``find_node`` needs ``nodes`` or ``nodes6``; ``get_peers`` needs ``values``, ``nodes``
        or ``nodes6``; ``sample_infohashes`` needs ``samples`` (BEP 51 makes it mandatory so
        that supporting nodes can be told apart); a mutable BEP 44 ``get`` answer with ``v``
        needs ``k``, ``sig`` and ``seq``. Others need nothing beyond ``id``.

        Raises:
            KRPCError: the response cannot answer *query*.

        >>> ping = Ping(transaction_id=b"a", node_id=bytes(20))
        >>> Response(transaction_id=b"a", node_id=bytes(20)).check_answers(ping).node_id[:2]
        b'\\x00\\x00'
        """
        has_nodes = self.nodes is not None or self.nodes6 is not None
        if isinstance(query, FindNode) and not has_nodes:
            raise KRPCError("a find_node response without nodes or nodes6")
        if isinstance(query, GetPeers) and not has_nodes and self.values is None:
            raise KRPCError("a get_peers response without values, nodes or nodes6")
        if isinstance(query, SampleInfohashes) and self.samples is None:
            raise KRPCError("a sample_infohashes response without samples")
        if isinstance(query, Get):
            signed = (self.k is not None, self.sig is not None, self.seq is not None)
            if self.k is not None and not all(signed):
                raise KRPCError("a mutable get response needs k, sig and seq together")
        return self

    def encode(self) -> bytes:
        """The bencoded datagram.

        >>> Response(transaction_id=b"aa", node_id=b"mnopqrstuvwxyz123456").encode()
        b'd1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re'
        """
        body: dict[bytes, Any] = dict(self.extra)
        body[b"id"] = self.node_id
        if self.nodes is not None:
            body[b"nodes"] = encode_compact_nodes(self.nodes, 4)
        if self.nodes6 is not None:
            body[b"nodes6"] = encode_compact_nodes(self.nodes6, 6)
        if self.values is not None:
            body[b"values"] = [peer.to_compact() for peer in self.values]
        optional = {
            b"token": self.token,
            b"num": self.num,
            b"interval": self.interval,
            b"v": self.v,
            b"k": self.k,
            b"sig": self.sig,
            b"seq": self.seq,
            b"BFsd": self.bfsd,
            b"BFpe": self.bfpe,
        }
        body.update((key, value) for key, value in optional.items() if value is not None)
        if self.samples is not None:
            body[b"samples"] = b"".join(self.samples)
        top = self._top(b"r")
        top[b"r"] = body
        return encode(top)


@dataclass(frozen=True, slots=True, kw_only=True)
class Error(_Envelope):
    """An error reply (``y = e``): ``code`` (an :class:`ErrorCode` when known) and a message.

    >>> Error(transaction_id=b"aa", code=ErrorCode.GENERIC, message="A Generic Error Ocurred"
    ...       ).encode()
    b'd1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee'
    """

    transaction_id: bytes
    code: int
    message: str = ""
    version: bytes | None = None
    ip: PeerAddress | None = None
    read_only: bool = False

    def __post_init__(self) -> None:
        _check_common(self)
        _check_int("code", self.code)
        if not isinstance(self.message, str):
            raise LocalProtocolError(f"message must be a str, not {self.message!r}")
        try:
            self.message.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise LocalProtocolError("message holds characters UTF-8 cannot encode") from None
        if not isinstance(self.code, ErrorCode) and self.code in ErrorCode._value2member_map_:
            object.__setattr__(self, "code", ErrorCode(self.code))

    def encode(self) -> bytes:
        """The bencoded datagram."""
        top = self._top(b"e")
        top[b"e"] = [int(self.code), self.message.encode("utf-8", "surrogateescape")]
        return encode(top)


Message: TypeAlias = Query | Response | Error
"""Anything :func:`decode_message` returns."""


_QUERY_TYPES: dict[bytes, type[_QueryBase]] = {
    cls.method: cls for cls in (Ping, FindNode, GetPeers, AnnouncePeer, Get, Put, SampleInfohashes)
}


# --- decoding ----------------------------------------------------------------------------------


class _Args:
    """Reads typed values out of a decoded ``a`` dictionary; failures become KRPCQueryError."""

    __slots__ = ("_args", "_method", "_tid", "_used")

    def __init__(self, args: dict[bytes, Value], tid: bytes, method: bytes) -> None:
        self._args = args
        self._tid = tid
        self._method = method
        self._used: set[bytes] = set()

    def fail(self, what: str) -> KRPCQueryError:
        name = self._method.decode("ascii", "replace")
        return KRPCQueryError(f"{name}: {what}", transaction_id=self._tid, method=self._method)

    def raw(self, key: bytes) -> Value | None:
        self._used.add(key)
        return self._args.get(key)

    def bytes_(self, key: bytes, length: int | None = None, *, required: bool = True) -> Any:
        value = self.raw(key)
        if value is None and not required:
            return None
        if not isinstance(value, bytes):
            raise self.fail(f"{key.decode()!r} must be a byte string")
        if length is not None and len(value) != length:
            raise self.fail(f"{key.decode()!r} must be {length} bytes, not {len(value)}")
        return value

    def int_(self, key: bytes, *, required: bool = True) -> Any:
        value = self.raw(key)
        if value is None and not required:
            return None
        if not isinstance(value, int):
            raise self.fail(f"{key.decode()!r} must be an integer")
        return value

    def flag(self, key: bytes) -> bool:
        # Clients send 0/1; anything non-zero means set. A non-int flag is ignored, as
        # libtorrent does, rather than failing the whole query.
        value = self.raw(key)
        return isinstance(value, int) and value != 0

    def want(self, limit: int) -> tuple[bytes, ...] | None:
        value = self.raw(b"want")
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.fail("'want' must be a list")
        if len(value) > limit:
            raise self.fail(f"'want' has {len(value)} entries, more than {limit}")
        # Non-string entries carry no meaning; BEP 32 says to ignore what we do not know.
        return tuple(entry for entry in value if isinstance(entry, bytes))

    def extra(self) -> dict[bytes, Value]:
        return {key: value for key, value in self._args.items() if key not in self._used}


def _decode_query(
    top: dict[bytes, Value], common: dict[str, Any], limits: KRPCLimits
) -> _QueryBase:
    tid: bytes = common["transaction_id"]
    method = top.get(b"q")
    if not isinstance(method, bytes):
        raise KRPCError("a query's 'q' must be a byte string")
    raw_args = top.get(b"a")
    if not isinstance(raw_args, dict):
        raise KRPCQueryError(
            "a query's 'a' must be a dictionary", transaction_id=tid, method=method
        )
    args = _Args(raw_args, tid, method)
    node_id = args.bytes_(b"id", ID_LENGTH)
    fields: dict[str, Any]
    if method == b"ping":
        fields = {}
    elif method in (b"find_node", b"sample_infohashes"):
        fields = {"target": args.bytes_(b"target", ID_LENGTH), "want": args.want(limits.max_want)}
    elif method == b"get_peers":
        fields = {
            "info_hash": args.bytes_(b"info_hash", ID_LENGTH),
            "want": args.want(limits.max_want),
            "noseed": args.flag(b"noseed"),
            "scrape": args.flag(b"scrape"),
        }
    elif method == b"announce_peer":
        implied = args.flag(b"implied_port")
        port = args.int_(b"port", required=not implied)
        if port is None:
            port = 0
        if not 0 <= port <= 0xFFFF:
            raise args.fail(f"'port' must be in 0..65535, not {port}")
        fields = {
            "info_hash": args.bytes_(b"info_hash", ID_LENGTH),
            "port": port,
            "token": args.bytes_(b"token"),
            "implied_port": implied,
            "seed": args.flag(b"seed"),
        }
    elif method == b"get":
        fields = {
            "target": args.bytes_(b"target", ID_LENGTH),
            "seq": args.int_(b"seq", required=False),
            "want": args.want(limits.max_want),
        }
    elif method == b"put":
        v = args.raw(b"v")
        if v is None:
            raise args.fail("'v' is missing")
        fields = {
            "token": args.bytes_(b"token"),
            "v": v,
            "k": args.bytes_(b"k", _KEY_LENGTH, required=False),
            "sig": args.bytes_(b"sig", _SIG_LENGTH, required=False),
            "seq": args.int_(b"seq", required=False),
            "cas": args.int_(b"cas", required=False),
            "salt": args.bytes_(b"salt", required=False) or b"",
        }
        mutable = (fields["k"] is not None, fields["sig"] is not None, fields["seq"] is not None)
        if any(mutable) and not all(mutable):
            raise args.fail("a mutable put needs k, sig and seq together")
        if not fields["k"] and (fields["cas"] is not None or fields["salt"]):
            raise args.fail("cas and salt belong to mutable puts only")
    else:
        fields = {"name": method}
    cls: Any = _QUERY_TYPES.get(method, UnknownQuery)  # the fields above match its signature
    try:
        query: _QueryBase = cls(node_id=node_id, extra=args.extra(), **fields, **common)
    except LocalProtocolError as exc:  # a check the readers above do not make; stay our error
        raise args.fail(str(exc)) from None
    return query


def _decode_response(
    top: dict[bytes, Value], common: dict[str, Any], limits: KRPCLimits
) -> Response:
    body = top.get(b"r")
    if not isinstance(body, dict):
        raise KRPCError("a response's 'r' must be a dictionary")
    node_id = body.get(b"id")
    if not isinstance(node_id, bytes) or len(node_id) != ID_LENGTH:
        raise KRPCError("a response's 'id' must be 20 bytes")
    ignored: list[bytes] = []
    fields: dict[str, Any] = {}

    def take_bytes(key: bytes, name: str, length: int | None = None) -> None:
        value = body.get(key)
        if value is None:
            return
        if isinstance(value, bytes) and (length is None or len(value) == length):
            fields[name] = value
        else:
            ignored.append(key)

    def take_int(key: bytes, name: str, low: int | None = None) -> None:
        value = body.get(key)
        if value is None:
            return
        if isinstance(value, int) and (low is None or value >= low):
            fields[name] = value
        else:
            ignored.append(key)

    families: tuple[tuple[bytes, str, Family], ...] = (
        (b"nodes", "nodes", 4),
        (b"nodes6", "nodes6", 6),
    )
    for key, name, family in families:
        value = body.get(key)
        if value is None:
            continue
        try:
            if not isinstance(value, bytes):
                raise CompactError(f"{name} is not a byte string")
            fields[name] = tuple(parse_compact_nodes(value, family, limit=limits.max_nodes))
        except CompactError:
            ignored.append(key)

    values = body.get(b"values")
    if values is not None:
        if not isinstance(values, list) or len(values) > limits.max_values:
            ignored.append(b"values")
        else:
            peers = []
            for entry in values:
                # One bad entry should not lose the good ones (libtorrent skips it too).
                if isinstance(entry, bytes) and len(entry) in (6, 18):
                    peers.append(PeerAddress.from_compact(entry))
            if len(peers) != len(values):
                ignored.append(b"values")
            fields["values"] = tuple(peers)

    samples = body.get(b"samples")
    if samples is not None:
        count = len(samples) // ID_LENGTH if isinstance(samples, bytes) else 0
        if not isinstance(samples, bytes) or len(samples) % ID_LENGTH or count > limits.max_samples:
            ignored.append(b"samples")
        else:
            fields["samples"] = tuple(
                samples[i : i + ID_LENGTH] for i in range(0, len(samples), ID_LENGTH)
            )

    take_bytes(b"token", "token")
    take_int(b"num", "num", 0)
    take_int(b"interval", "interval", 0)
    take_bytes(b"k", "k", _KEY_LENGTH)
    take_bytes(b"sig", "sig", _SIG_LENGTH)
    take_int(b"seq", "seq")
    take_bytes(b"BFsd", "bfsd", BLOOM_SIZE)
    take_bytes(b"BFpe", "bfpe", BLOOM_SIZE)
    if b"v" in body:
        fields["v"] = body[b"v"]
    extra = {key: value for key, value in body.items() if key not in _RESPONSE_KNOWN}
    try:
        return Response(node_id=node_id, extra=extra, ignored=tuple(ignored), **fields, **common)
    except LocalProtocolError as exc:  # the readers above check every field; be safe anyway
        raise KRPCError(f"invalid response: {exc}") from None


def _decode_error(top: dict[bytes, Value], common: dict[str, Any]) -> Error:
    body = top.get(b"e")
    if not isinstance(body, list) or not body or not isinstance(body[0], int):
        raise KRPCError("an error's 'e' must be a list starting with an integer code")
    text = body[1] if len(body) > 1 else b""
    # Some clients send no message or a non-string one; the code is what matters.
    message = text.decode("utf-8", "surrogateescape") if isinstance(text, bytes) else ""
    try:
        return Error(code=body[0], message=message, **common)
    except LocalProtocolError as exc:
        raise KRPCError(f"invalid error: {exc}") from None


def decode_message(
    data: bytes | bytearray | memoryview, limits: KRPCLimits = DEFAULT_LIMITS
) -> Message:
    """Decode one KRPC datagram.

    Args:
        data: the UDP payload.
        limits: allocation bounds (:data:`DEFAULT_LIMITS`).

    Returns:
        A query (:data:`Query`), a :class:`Response` or an :class:`Error`.

    Raises:
        KRPCQueryError: a query with a known method and wrong arguments (answer with 203).
        KRPCError: anything else that is not a valid message; never another exception.

    >>> decode_message(b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee").code
    <ErrorCode.GENERIC: 201>
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise KRPCError(f"a datagram is bytes, not {type(data).__name__}")
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size > limits.max_datagram:
        raise KRPCError(f"a {size}-byte datagram exceeds the {limits.max_datagram} limit")
    try:
        top = decode(data, lenient=True, max_depth=limits.max_depth)
    except (BencodeDecodeError, ValueError) as exc:
        raise KRPCError(f"not bencoded: {exc}") from None
    if not isinstance(top, dict):
        raise KRPCError("a KRPC message is a dictionary")
    tid = top.get(b"t")
    if not isinstance(tid, bytes):
        raise KRPCError("'t' (the transaction id) must be a byte string")
    version = top.get(b"v")
    ip_value = top.get(b"ip")
    ip = None
    # A malformed 'v', 'ip' or 'ro' is advisory data gone wrong: drop it, keep the message.
    if isinstance(ip_value, bytes) and len(ip_value) in (6, 18):
        ip = PeerAddress.from_compact(ip_value)
    read_only = top.get(b"ro")
    common: dict[str, Any] = {
        "transaction_id": tid,
        "version": version if isinstance(version, bytes) else None,
        "ip": ip,
        "read_only": isinstance(read_only, int) and read_only != 0,
    }
    kind = top.get(b"y")
    if kind == b"q":
        return cast(Query, _decode_query(top, common, limits))
    if kind == b"r":
        return _decode_response(top, common, limits)
    if kind == b"e":
        return _decode_error(top, common)
    raise KRPCError(f"'y' must be q, r or e, not {kind!r}")
