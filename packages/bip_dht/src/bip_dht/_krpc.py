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
- :class:`ErrorReply` (``y = e``): a code (:class:`ErrorCode`: BEP 5's 201-204, BEP 44's 205-207,
  301, 302; unknown codes are kept as plain ints) and a message.

Every message carries the top-level keys as keyword fields: ``transaction_id`` (``t``),
``version`` (``v``, the client version, kept as bytes), ``ip`` (BEP 42: the requester's address as
the responder saw it, as a :class:`~bip_handshake.PeerAddress`) and ``read_only`` (BEP 43 ``ro``).
Queries that may ask for nodes (find_node, get_peers, get, sample_infohashes) keep BEP 32 ``want``
as a tuple of byte strings (``b"n4"``, ``b"n6"``; unknown entries kept, see :data:`WANT_N4`);
:func:`wanted_families` says which node lists a reply to it should carry. A ``want`` that is not
a list counts as absent, as libtorrent reads it (``dict_find_list``).

API::

    decode_message(data, limits=DEFAULT_LIMITS, *, source_family=None)
        -> Query | Response | ErrorReply
    message.encode() -> bytes

:func:`decode_message` raises :class:`~bip_dht.KRPCError` for anything that is not a valid
message and nothing else, whatever the bytes. When the datagram is a recognisable query whose
arguments are wrong it raises the subclass :class:`KRPCQueryError`, which carries the transaction
id and method, so that the node can answer with error 203 as BEP 5 asks. Untrusted input cannot
make it allocate much: datagrams above ``limits.max_datagram`` bytes are refused before decoding,
nesting is capped, and so are the lengths of ``values``, ``nodes``, ``nodes6`` and ``samples``;
only the first ``limits.max_want`` entries of a ``want`` are read.

Tolerance, the way libtorrent does it: unknown keys in ``a`` / ``r`` are kept in ``extra`` (and
written back by :meth:`encode`), top-level unknown keys are ignored; in a response, a key of a known
name whose value is malformed (a ``values`` entry that is not 6 or 18 bytes, a ``BFsd`` that is not
256 bytes...) is dropped and its name recorded in ``Response.ignored``, so a slightly broken reply
still proves the node alive. ``nodes`` / ``nodes6`` that are not a multiple of 26 / 38 bytes keep
their whole entries (libtorrent's ``look_for_nodes`` reads as many as there are) and are named in
``ignored`` for the stray tail (dropped when there is not one whole entry). A ``values`` list
holding one string, from an IPv4 node (when :func:`decode_message` is told ``source_family=4``),
is read as concatenated 6-byte peers, the format of the original Mainline client, as libtorrent's
``get_peers_observer`` does. Dictionaries whose keys are out of order are accepted (some clients
send them).

The codec checks shapes, not policy: a BEP 44 ``v`` over 1000 bytes or a ``salt`` over 64 bytes
decodes fine, so the storage layer can answer with error 205 / 207 as BEP 44 asks.

Constructors validate their fields and raise :class:`~bip_dht.LocalProtocolError` on misuse.

Layout: the query classes live in :mod:`._krpc_queries`, :class:`Response`, :class:`ErrorReply` and
:class:`ErrorCode` in :mod:`._krpc_replies`, the shared envelope and field checks in
:mod:`._krpc_base`; this module decodes and re-exports all of them (import from here).

>>> msg = decode_message(b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe")
>>> msg
Ping(transaction_id=b'aa', version=None, ip=None, read_only=False, \
node_id=b'abcdefghij0123456789', extra={})
>>> msg.encode()
b'd1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias, cast

from bip_bencode import BencodeDecodeError, Value, decode
from bip_handshake import (
    CompactError,
    Family,
    PeerAddress,
    parse_compact_nodes,
    parse_compact_peers,
)

from ._bloom import BLOOM_BYTES
from ._errors import KRPCError, LocalProtocolError
from ._krpc_base import (
    ID_LENGTH,
    KEY_LENGTH,
    SIG_LENGTH,
    WANT_N4,
    WANT_N6,
    wanted_families,
)
from ._krpc_queries import (
    QUERY_TYPES,
    AnnouncePeer,
    FindNode,
    Get,
    GetPeers,
    Ping,
    Put,
    Query,
    QueryBase,
    SampleInfohashes,
    UnknownQuery,
)
from ._krpc_replies import RESPONSE_KNOWN, ErrorCode, ErrorReply, Response

__all__ = [
    "DEFAULT_LIMITS",
    "WANT_N4",
    "WANT_N6",
    "AnnouncePeer",
    "ErrorCode",
    "ErrorReply",
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
    "wanted_families",
]


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
    """Entries of a BEP 32 ``want`` list that are read; any after them are not looked at (BEP 32
    defines two, and libtorrent, which has no cap, fails nothing over a long list)."""

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LocalProtocolError(f"KRPCLimits.{name} must be a positive int, not {value!r}")


DEFAULT_LIMITS = KRPCLimits()
"""The limits :func:`decode_message` uses unless told otherwise."""


class KRPCQueryError(KRPCError):
    """A query arrived with a method we know but arguments that are wrong.

    The node answers it with :attr:`ErrorCode.PROTOCOL` (203) using ``transaction_id``.

    Attributes:
        transaction_id: the query's ``t``, for the error reply.
        method: the query's ``q`` (the method name, as sent).

    >>> error = KRPCQueryError("'target' is missing", transaction_id=b"aa", method=b"find_node")
    >>> error.transaction_id, error.method
    (b'aa', b'find_node')
    """

    def __init__(self, message: str, *, transaction_id: bytes, method: bytes) -> None:
        super().__init__(message)
        self.transaction_id = transaction_id
        self.method = method


Message: TypeAlias = Query | Response | ErrorReply
"""Anything :func:`decode_message` returns."""


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
        # The method's name only when it is one we know: an unknown one is the sender's bytes,
        # and echoed in our error 203 (every undecodable byte three in UTF-8) it would make a
        # forged-source query an amplifier. The error's ``method`` keeps the bytes as sent.
        name = self._method.decode("ascii") if self._method in QUERY_TYPES else "query"
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
        if not isinstance(value, list):
            # libtorrent reads it with dict_find_list: any other type is as good as absent, and
            # the query is answered as if 'want' were not there (not failed with 203).
            return None
        # Only the first *limit* entries: bounded work, and no error over a long list (libtorrent
        # has no cap). Non-string entries carry no meaning; BEP 32 says to ignore what we do not
        # know.
        return tuple(entry for entry in value[:limit] if isinstance(entry, bytes))

    def extra(self) -> dict[bytes, Value]:
        return {key: value for key, value in self._args.items() if key not in self._used}


def _decode_query(top: dict[bytes, Value], common: dict[str, Any], limits: KRPCLimits) -> QueryBase:
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
            "k": args.bytes_(b"k", KEY_LENGTH, required=False),
            "sig": args.bytes_(b"sig", SIG_LENGTH, required=False),
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
    cls: Any = QUERY_TYPES.get(method, UnknownQuery)  # the fields above match its signature
    try:
        query: QueryBase = cls(node_id=node_id, extra=args.extra(), **fields, **common)
    except LocalProtocolError as exc:  # a check the readers above do not make; stay our error
        raise args.fail(str(exc)) from None
    return query


# The size of one compact node entry per family: a 20-byte id, then the address and port.
_NODE_ENTRY = {4: ID_LENGTH + 6, 6: ID_LENGTH + 18}
# One IPv4 peer in the Mainline client's concatenated ``values`` string.
_V4_PEER = 6


def _decode_response(
    top: dict[bytes, Value],
    common: dict[str, Any],
    limits: KRPCLimits,
    source_family: Family | None,
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
        if not isinstance(value, bytes):
            ignored.append(key)
            continue
        # Keep every whole entry and drop only a stray tail, as libtorrent's look_for_nodes
        # does (it reads while a whole entry is left): one bad byte must not lose the list.
        whole = len(value) - len(value) % _NODE_ENTRY[family]
        if value and not whole:  # not one whole entry: dropped (an empty string is no nodes)
            ignored.append(key)
            continue
        try:
            nodes = parse_compact_nodes(memoryview(value)[:whole], family, limit=limits.max_nodes)
        except CompactError:  # more entries than limits.max_nodes
            ignored.append(key)
            continue
        fields[name] = tuple(nodes)
        if whole != len(value):
            ignored.append(key)

    values = body.get(b"values")
    if values is not None:
        if (
            source_family == 4
            and isinstance(values, list)
            and len(values) == 1
            and isinstance(values[0], bytes)
        ):
            # The original Mainline client's format: one string of concatenated IPv4 peers.
            # libtorrent's get_peers_observer reads a one-string list from an IPv4 node so,
            # whatever its length (one 6-byte peer reads the same either way), whole peers
            # only; a stray tail is named in ignored, as for nodes.
            _take_mainline_values(values[0], limits, fields, ignored)
        elif not isinstance(values, list) or len(values) > limits.max_values:
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
    take_bytes(b"k", "k", KEY_LENGTH)
    take_bytes(b"sig", "sig", SIG_LENGTH)
    take_int(b"seq", "seq")
    take_bytes(b"BFsd", "bfsd", BLOOM_BYTES)
    take_bytes(b"BFpe", "bfpe", BLOOM_BYTES)
    if b"v" in body:
        fields["v"] = body[b"v"]
    extra = {key: value for key, value in body.items() if key not in RESPONSE_KNOWN}
    try:
        return Response(node_id=node_id, extra=extra, ignored=tuple(ignored), **fields, **common)
    except LocalProtocolError as exc:  # the readers above check every field; be safe anyway
        raise KRPCError(f"invalid response: {exc}") from None


def _take_mainline_values(
    blob: bytes, limits: KRPCLimits, fields: dict[str, Any], ignored: list[bytes]
) -> None:
    whole = len(blob) - len(blob) % _V4_PEER
    try:
        peers = parse_compact_peers(memoryview(blob)[:whole], 4, limit=limits.max_values)
    except CompactError:  # more peers than limits.max_values: refused whole, as a long list
        ignored.append(b"values")
        return
    fields["values"] = tuple(peers)
    if whole != len(blob):
        ignored.append(b"values")


def _decode_error(top: dict[bytes, Value], common: dict[str, Any]) -> ErrorReply:
    body = top.get(b"e")
    if not isinstance(body, list) or not body or not isinstance(body[0], int):
        raise KRPCError("an error's 'e' must be a list starting with an integer code")
    text = body[1] if len(body) > 1 else b""
    # Some clients send no message or a non-string one; the code is what matters.
    message = text.decode("utf-8", "surrogateescape") if isinstance(text, bytes) else ""
    try:
        return ErrorReply(code=body[0], message=message, **common)
    except LocalProtocolError as exc:
        raise KRPCError(f"invalid error: {exc}") from None


def decode_message(
    data: bytes | bytearray | memoryview,
    limits: KRPCLimits = DEFAULT_LIMITS,
    *,
    source_family: Family | None = None,
) -> Message:
    """Decode one KRPC datagram.

    Args:
        data: the UDP payload.
        limits: allocation bounds (:data:`DEFAULT_LIMITS`).
        source_family: the address family of the sender (4 or 6), when known. With 4, a
            response whose ``values`` is a list of one string is read as concatenated 6-byte
            IPv4 peers (the original Mainline client's format), as libtorrent does; with
            None or 6, each entry of ``values`` is one peer of 6 or 18 bytes.

    Returns:
        A query (:data:`Query`), a :class:`Response` or an :class:`ErrorReply`.

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
        return _decode_response(top, common, limits, source_family)
    if kind == b"e":
        return _decode_error(top, common)
    raise KRPCError(f"'y' must be q, r or e, not {kind!r}")
