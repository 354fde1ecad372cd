"""What every KRPC message shares: sizes, the top-level envelope and field checks.

Private to the KRPC codec (:mod:`bip_dht._krpc` documents the API): the query classes in
:mod:`._krpc_queries` and the replies in :mod:`._krpc_replies` build on :class:`Envelope` (every
message) or :class:`NodeMessage` (queries and responses), which declare the shared fields once,
and validate their own fields with the ``check_*`` helpers, which raise
:class:`~bip_dht.LocalProtocolError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bip_bencode import BencodeEncodeError, Value, encode
from bip_handshake import Family, NodeInfo, PeerAddress

from ._errors import LocalProtocolError

ID_LENGTH = 20
KEY_LENGTH = 32
SIG_LENGTH = 64

WANT_N4 = b"n4"
"""BEP 32 ``want`` entry asking for IPv4 nodes (``nodes``)."""
WANT_N6 = b"n6"
"""BEP 32 ``want`` entry asking for IPv6 nodes (``nodes6``)."""


# --- field checks shared by constructors (LocalProtocolError) --------------------------------


def check_bytes(name: str, value: object, length: int | None = None) -> None:
    if not isinstance(value, bytes):
        raise LocalProtocolError(f"{name} must be bytes, not {type(value).__name__}")
    if length is not None and len(value) != length:
        raise LocalProtocolError(f"{name} must be {length} bytes, not {len(value)}")


def check_optional_bytes(name: str, value: object, length: int | None = None) -> None:
    if value is not None:
        check_bytes(name, value, length)


def check_int(name: str, value: object, low: int | None = None, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LocalProtocolError(f"{name} must be an int, not {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise LocalProtocolError(f"{name} must be in {low}..{high}, not {value}")


def check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise LocalProtocolError(f"{name} must be a bool, not {value!r}")


def check_value(name: str, value: object) -> None:
    # Encoding is the one complete check of "a bencodable value", and it is what we will send.
    try:
        encode(value)  # type: ignore[arg-type]
    except (BencodeEncodeError, TypeError, ValueError) as exc:
        raise LocalProtocolError(f"{name} is not bencodable: {exc}") from None


def check_common(message: Envelope) -> None:
    check_bytes("transaction_id", message.transaction_id)
    check_optional_bytes("version", message.version)
    if message.ip is not None and not isinstance(message.ip, PeerAddress):
        raise LocalProtocolError(f"ip must be a PeerAddress, not {message.ip!r}")
    check_bool("read_only", message.read_only)


def check_extra(extra: object, known: frozenset[bytes]) -> None:
    if not isinstance(extra, Mapping):
        raise LocalProtocolError("extra must be a mapping of bytes keys")
    for key, value in extra.items():
        check_bytes("an extra key", key)
        if key in known:
            raise LocalProtocolError(f"extra must not hold the known key {key!r}")
        check_value(f"extra[{key!r}]", value)


def check_want(want: object) -> None:
    if want is None:
        return
    if not isinstance(want, tuple):
        raise LocalProtocolError("want must be a tuple of bytes or None")
    for entry in want:
        check_bytes("a want entry", entry)


def check_nodes(name: str, nodes: object, family: int) -> None:
    if nodes is None:
        return
    if not isinstance(nodes, tuple):
        raise LocalProtocolError(f"{name} must be a tuple of NodeInfo or None")
    for node in nodes:
        if not isinstance(node, NodeInfo) or node.address.family != family:
            raise LocalProtocolError(f"{name} holds only IPv{family} NodeInfo, not {node!r}")


# --- the envelope ------------------------------------------------------------------------------


# The message classes are frozen slots dataclasses all the way down (a frozen dataclass cannot
# inherit from a non-frozen one). The decorator recreates a slots class, which breaks
# zero-argument super() in its methods, so checks do not chain through super(): the
# __post_init__ of Envelope or NodeMessage checks every shared field, then calls the _check_own
# hook, which each message class overrides to check only the fields it adds. One hook call keeps
# construction, on the DHT's hot path, as cheap as one __post_init__ per class was.


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """What every message has: the top-level keys ``t``, ``v``, ``ip``, ``ro``."""

    transaction_id: bytes
    version: bytes | None = None
    ip: PeerAddress | None = None
    read_only: bool = False

    def __post_init__(self) -> None:
        check_common(self)
        self._check_own()

    def _check_own(self) -> None:
        """Check the fields a subclass adds; raise :class:`~bip_dht.LocalProtocolError`."""

    def _top(self, kind: bytes) -> dict[bytes, Any]:
        top: dict[bytes, Any] = {b"t": self.transaction_id, b"y": kind}
        if self.version is not None:
            top[b"v"] = self.version
        if self.ip is not None:
            top[b"ip"] = self.ip.to_compact()
        if self.read_only:
            top[b"ro"] = 1
        return top


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeMessage(Envelope):
    """A query or a response: the sender's ``id`` and the unknown keys kept in ``extra``.

    ``known`` (per class) names the keys of ``a`` / ``r`` that have fields, so that ``extra``
    cannot shadow them. ``extra`` is not hashed (its values may be lists or dictionaries).
    """

    known: ClassVar[frozenset[bytes]]
    node_id: bytes
    extra: Mapping[bytes, Value] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        check_common(self)
        check_bytes("node_id", self.node_id, ID_LENGTH)
        check_extra(self.extra, self.known)
        self._check_own()


def put_want(args: dict[bytes, Any], want: tuple[bytes, ...] | None) -> None:
    if want is not None:
        args[b"want"] = list(want)


def wanted_families(want: tuple[bytes, ...] | None, default: Family) -> frozenset[Family]:
    """Which node families (``nodes`` 4, ``nodes6`` 6) a reply should carry, per BEP 32.

    *default* is the family of the socket the query arrived on: what a query without ``want``
    gets. A ``want`` naming neither ``n4`` nor ``n6`` is treated as absent (BEP 32 says to
    ignore unknown entries), so a reply always carries some nodes.

    >>> sorted(wanted_families((WANT_N4, WANT_N6), 4))
    [4, 6]
    >>> sorted(wanted_families(None, 6)), sorted(wanted_families((b"n9",), 4))
    ([6], [4])
    """
    families: set[Family] = set()
    if want is not None:
        if WANT_N4 in want:
            families.add(4)
        if WANT_N6 in want:
            families.add(6)
    return frozenset(families) if families else frozenset((default,))
