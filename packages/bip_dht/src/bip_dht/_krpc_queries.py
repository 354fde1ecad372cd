"""KRPC queries: one frozen dataclass per method (BEP 5, 32, 33, 43, 44, 51), and UnknownQuery.

Part of the KRPC codec; :mod:`bip_dht._krpc` documents the API and decodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

from bip_bencode import Value, encode

from ._errors import LocalProtocolError
from ._krpc_base import (
    ID_LENGTH,
    KEY_LENGTH,
    SIG_LENGTH,
    NodeMessage,
    check_bool,
    check_bytes,
    check_int,
    check_optional_bytes,
    check_value,
    check_want,
    put_want,
)

__all__ = [
    "AnnouncePeer",
    "FindNode",
    "Get",
    "GetPeers",
    "Ping",
    "Put",
    "Query",
    "SampleInfohashes",
    "UnknownQuery",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryBase(NodeMessage):
    """Shared by the query classes: the method name and the ``a`` dictionary."""

    method: ClassVar[bytes]

    def _arguments(self) -> dict[bytes, Any]:
        raise NotImplementedError  # every concrete query overrides it

    def _method_name(self) -> bytes:
        return self.method

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


COMMON_ARGS = frozenset({b"id"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping(QueryBase):
    """``ping``: are you there? Answered by a :class:`Response` with just ``id``."""

    method: ClassVar[bytes] = b"ping"
    known: ClassVar[frozenset[bytes]] = COMMON_ARGS

    def _arguments(self) -> dict[bytes, Any]:
        return {}


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetQuery(QueryBase):
    """A query with just a 20-byte ``target`` and BEP 32 ``want``: find_node, sample_infohashes.

    A shared base, not a query of its own: the two stay distinct classes (a response is checked
    against the query's class, and BEP 51 requires ``samples`` only of sample_infohashes).
    """

    known: ClassVar[frozenset[bytes]] = COMMON_ARGS | {b"target", b"want"}
    target: bytes
    want: tuple[bytes, ...] | None = None

    def _check_own(self) -> None:
        check_bytes("target", self.target, ID_LENGTH)
        check_want(self.want)

    def _arguments(self) -> dict[bytes, Any]:
        args: dict[bytes, Any] = {b"target": self.target}
        put_want(args, self.want)
        return args


@dataclass(frozen=True, slots=True, kw_only=True)
class FindNode(TargetQuery):
    """``find_node``: the K nodes closest to ``target`` (BEP 32 ``want`` picks families)."""

    method: ClassVar[bytes] = b"find_node"


@dataclass(frozen=True, slots=True, kw_only=True)
class GetPeers(QueryBase):
    """``get_peers``: peers for ``info_hash``, or closer nodes; always a write token.

    BEP 33: ``scrape`` asks for the ``BFsd`` / ``BFpe`` bloom filters, ``noseed`` for leechers
    only.
    """

    method: ClassVar[bytes] = b"get_peers"
    known: ClassVar[frozenset[bytes]] = COMMON_ARGS | {b"info_hash", b"want", b"noseed", b"scrape"}
    info_hash: bytes
    want: tuple[bytes, ...] | None = None
    noseed: bool = False
    scrape: bool = False

    def _check_own(self) -> None:
        check_bytes("info_hash", self.info_hash, ID_LENGTH)
        check_want(self.want)
        check_bool("noseed", self.noseed)
        check_bool("scrape", self.scrape)

    def _arguments(self) -> dict[bytes, Any]:
        args: dict[bytes, Any] = {b"info_hash": self.info_hash}
        put_want(args, self.want)
        if self.noseed:
            args[b"noseed"] = 1
        if self.scrape:
            args[b"scrape"] = 1
        return args


@dataclass(frozen=True, slots=True, kw_only=True)
class AnnouncePeer(QueryBase):
    """``announce_peer``: the sender downloads ``info_hash`` on ``port``.

    With ``implied_port`` the receiver uses the datagram's source port instead of ``port``
    (which may then be absent on the wire and decodes as 0). BEP 33: ``seed`` marks a seed.
    """

    method: ClassVar[bytes] = b"announce_peer"
    known: ClassVar[frozenset[bytes]] = COMMON_ARGS | {
        b"info_hash",
        b"port",
        b"token",
        b"implied_port",
        b"seed",
    }
    info_hash: bytes
    port: int
    token: bytes
    implied_port: bool = False
    seed: bool = False

    def _check_own(self) -> None:
        check_bytes("info_hash", self.info_hash, ID_LENGTH)
        check_int("port", self.port, 0, 0xFFFF)
        check_bytes("token", self.token)
        check_bool("implied_port", self.implied_port)
        check_bool("seed", self.seed)

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
class Get(QueryBase):
    """BEP 44 ``get``: the item stored under ``target``.

    ``seq`` (a libtorrent extension BEP 44 mentions) asks the responder to leave ``v`` out unless
    its mutable item is newer than ``seq``.
    """

    method: ClassVar[bytes] = b"get"
    known: ClassVar[frozenset[bytes]] = COMMON_ARGS | {b"target", b"seq", b"want"}
    target: bytes
    seq: int | None = None
    want: tuple[bytes, ...] | None = None

    def _check_own(self) -> None:
        check_bytes("target", self.target, ID_LENGTH)
        if self.seq is not None:
            check_int("seq", self.seq)
        check_want(self.want)

    def _arguments(self) -> dict[bytes, Any]:
        args: dict[bytes, Any] = {b"target": self.target}
        if self.seq is not None:
            args[b"seq"] = self.seq
        put_want(args, self.want)
        return args


@dataclass(frozen=True, slots=True, kw_only=True)
class Put(QueryBase):
    """BEP 44 ``put``: store ``v``.

    Immutable when ``k``, ``sig`` and ``seq`` are all None; mutable when all three are set
    (``k`` 32 bytes, ``sig`` 64 bytes), with optional ``salt`` and compare-and-swap ``cas``.
    Sizes (``v`` ≤ 1000 bytes bencoded, ``salt`` ≤ 64) and the signature are the storage's
    checks, so that it can answer 205 / 206 / 207. ``encode(v)`` gives the bytes BEP 44 hashes
    and signs: the sender's own bytes whenever it bencoded canonically (sorted keys), as it must.
    """

    method: ClassVar[bytes] = b"put"
    known: ClassVar[frozenset[bytes]] = COMMON_ARGS | {
        b"token",
        b"v",
        b"k",
        b"sig",
        b"seq",
        b"cas",
        b"salt",
    }
    token: bytes
    v: Value = field(hash=False)
    k: bytes | None = None
    sig: bytes | None = None
    seq: int | None = None
    cas: int | None = None
    salt: bytes = b""

    def _check_own(self) -> None:
        check_bytes("token", self.token)
        check_value("v", self.v)
        check_optional_bytes("k", self.k, KEY_LENGTH)
        check_optional_bytes("sig", self.sig, SIG_LENGTH)
        if self.seq is not None:
            check_int("seq", self.seq)
        if self.cas is not None:
            check_int("cas", self.cas)
        check_bytes("salt", self.salt)
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
class SampleInfohashes(TargetQuery):
    """BEP 51 ``sample_infohashes``: a sample of the info-hashes the node stores."""

    method: ClassVar[bytes] = b"sample_infohashes"


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownQuery(QueryBase):
    """A query whose method we do not know; every argument but ``id`` is in ``extra``."""

    method: ClassVar[bytes] = b""
    known: ClassVar[frozenset[bytes]] = COMMON_ARGS
    name: bytes

    def _check_own(self) -> None:
        check_bytes("name", self.name)
        if self.name in QUERY_TYPES:
            raise LocalProtocolError(f"{self.name!r} is a known method: use its own class")

    def _method_name(self) -> bytes:
        return self.name

    def _arguments(self) -> dict[bytes, Any]:
        return {}


Query: TypeAlias = (
    Ping | FindNode | GetPeers | AnnouncePeer | Get | Put | SampleInfohashes | UnknownQuery
)
"""Any query."""


QUERY_TYPES: dict[bytes, type[QueryBase]] = {
    cls.method: cls for cls in (Ping, FindNode, GetPeers, AnnouncePeer, Get, Put, SampleInfohashes)
}
