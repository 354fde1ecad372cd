"""KRPC replies: the generic Response (every key any query's answer may carry) and ErrorReply.

Part of the KRPC codec; :mod:`bip_dht._krpc` documents the API and decodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar

from bip_bencode import Value, encode
from bip_handshake import NodeInfo, PeerAddress, encode_compact_nodes

from ._bloom import BLOOM_BYTES
from ._errors import KRPCError, LocalProtocolError
from ._krpc_base import (
    ID_LENGTH,
    KEY_LENGTH,
    SIG_LENGTH,
    Envelope,
    NodeMessage,
    check_bytes,
    check_int,
    check_nodes,
    check_optional_bytes,
    check_value,
)
from ._krpc_queries import FindNode, Get, GetPeers, Query, SampleInfohashes

__all__ = ["ErrorCode", "ErrorReply", "Response"]


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


RESPONSE_KNOWN = frozenset(
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
class Response(NodeMessage):
    """A reply (``y = r``), with every key any query's reply may carry (None when absent).

    ``nodes`` holds IPv4 nodes, ``nodes6`` IPv6 ones (BEP 32); ``values`` holds peers of both
    families (BEP 32 lets IPv6 peers share the list). ``samples`` is the BEP 51 list of 20-byte
    info-hashes. ``ignored`` names known keys that arrived malformed and were dropped, in whole or
    in part (the stray tail of ``nodes``, a bad ``values`` entry); it is not part of equality and
    is never encoded.
    """

    known: ClassVar[frozenset[bytes]] = RESPONSE_KNOWN
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
    ignored: tuple[bytes, ...] = field(default=(), compare=False)

    def _check_own(self) -> None:
        check_nodes("nodes", self.nodes, 4)
        check_nodes("nodes6", self.nodes6, 6)
        if self.values is not None and (
            not isinstance(self.values, tuple)
            or not all(isinstance(peer, PeerAddress) for peer in self.values)
        ):
            raise LocalProtocolError("values must be a tuple of PeerAddress or None")
        check_optional_bytes("token", self.token)
        if self.samples is not None:
            if not isinstance(self.samples, tuple):
                raise LocalProtocolError("samples must be a tuple of 20-byte hashes or None")
            for sample in self.samples:
                check_bytes("a sample", sample, ID_LENGTH)
        if self.num is not None:
            check_int("num", self.num, 0)
        if self.interval is not None:
            check_int("interval", self.interval, 0)
        if self.v is not None:
            check_value("v", self.v)
        check_optional_bytes("k", self.k, KEY_LENGTH)
        check_optional_bytes("sig", self.sig, SIG_LENGTH)
        if self.seq is not None:
            check_int("seq", self.seq)
        check_optional_bytes("bfsd", self.bfsd, BLOOM_BYTES)
        check_optional_bytes("bfpe", self.bfpe, BLOOM_BYTES)
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

        >>> find = FindNode(transaction_id=b"a", node_id=bytes(20), target=bytes(20))
        >>> Response(transaction_id=b"a", node_id=bytes(20), nodes=()).check_answers(find).nodes
        ()
        >>> Response(transaction_id=b"a", node_id=bytes(20)).check_answers(find)
        Traceback (most recent call last):
        ...
        bip_dht._errors.KRPCError: a find_node response without nodes or nodes6
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
class ErrorReply(Envelope):
    """An error reply (``y = e``): ``code`` (an :class:`ErrorCode` when known) and a message.

    >>> ErrorReply(transaction_id=b"aa", code=ErrorCode.GENERIC, message="A Generic Error Ocurred"
    ...       ).encode()
    b'd1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee'
    """

    code: int
    message: str = ""

    def _check_own(self) -> None:
        check_int("code", self.code)
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
