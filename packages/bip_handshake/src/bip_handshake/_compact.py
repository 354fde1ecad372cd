"""Compact peer addresses and compact node info (BEP 23, BEP 5, BEP 32, BEP 11).

A compact peer is the address in network byte order followed by the port, big-endian: 6 bytes for
IPv4, 18 for IPv6. Compact node info prefixes that with the 20-byte DHT node id: 26 or 38 bytes.
Trackers, ``ut_pex`` and the DHT send lists of them concatenated, and which family a list holds is
known only from context (``peers`` / ``peers6``, ``added`` / ``added6``, ``nodes`` / ``nodes6``),
so the bulk functions take the family as an argument.

IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``) are kept exactly as received, so that decoding
and encoding round-trip byte for byte and two addresses are equal only if their bytes are.
:meth:`PeerAddress.normalized` turns a mapped address into plain IPv4; call it before dialling or
deduplicating peers that may arrive over both families.

Port 0 is kept too (it is valid bytes and shows up in the wild), but such an address is not
:attr:`~PeerAddress.is_connectable`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from typing import Final, Literal

from ._errors import HandshakeError

__all__ = [
    "DEFAULT_COMPACT_LIMIT",
    "CompactError",
    "NodeInfo",
    "PeerAddress",
    "encode_compact_nodes",
    "encode_compact_peers",
    "parse_compact_nodes",
    "parse_compact_peers",
]

DEFAULT_COMPACT_LIMIT = 10_000
"""How many entries the bulk parsers accept by default before refusing the input."""

NODE_ID_LENGTH = 20
_PEER_SIZE = {4: 6, 6: 18}
_MAX_TEXT = 64  # "[" + 45-character IPv6 text + "]:" + 5 digits fits comfortably

# Bulk decoding unpacks every entry at C speed rather than slicing and converting field by field.
_V4_PEER: Final = struct.Struct(">IH")
_V6_PEER: Final = struct.Struct(">QQH")
_V4_NODE: Final = struct.Struct(f">{NODE_ID_LENGTH}sIH")
_V6_NODE: Final = struct.Struct(f">{NODE_ID_LENGTH}sQQH")
# Address checks on the address's integer: the ipaddress properties build or compare objects on
# every call, and they run for every address a tracker, PEX message or DHT reply brings.
_V4_MAPPED_PREFIX: Final = 0xFFFF  # an IPv6 address's top 96 bits when it is ::ffff:a.b.c.d
_V4_LOW: Final = 0xFFFFFFFF
_V4_MULTICAST_TOP4: Final = 0xE  # 224.0.0.0/4
_V4_LIMITED_BROADCAST: Final = 0xFFFFFFFF  # 255.255.255.255: no peer, and a dial fails EACCES
_V6_MULTICAST_TOP8: Final = 0xFF  # ff00::/8


def _v4_unicast(value: int) -> bool:
    """Whether the IPv4 address ``value`` is a specified unicast host (not 0.0.0.0, not
    multicast, not the limited broadcast)."""
    return value != 0 and value >> 28 != _V4_MULTICAST_TOP4 and value != _V4_LIMITED_BROADCAST


Family = Literal[4, 6]
"""An address family: 4 for IPv4, 6 for IPv6."""


class CompactError(HandshakeError, ValueError):
    """Compact peer or node data (or an address given to encode) is malformed.

    A :class:`ValueError` too, as it always was.

    >>> PeerAddress.from_compact(b"12345")
    Traceback (most recent call last):
    ...
    bip_handshake._compact.CompactError: a compact peer is 6 or 18 bytes, got 5
    """


def _peer_size(family: object) -> int:
    if isinstance(family, bool) or not isinstance(family, int) or family not in _PEER_SIZE:
        raise CompactError(f"an address family is 4 or 6, got {family!r}")
    return _PEER_SIZE[family]


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """An IP address and a TCP/UDP port, as carried in compact form.

    >>> address = PeerAddress(IPv4Address("1.2.3.4"), 6881)
    >>> str(address)
    '1.2.3.4:6881'
    >>> address.to_compact().hex()
    '010203041ae1'
    >>> PeerAddress.from_compact(bytes.fromhex("010203041ae1")) == address
    True
    >>> PeerAddress.parse("[::1]:6881")
    PeerAddress(host=IPv6Address('::1'), port=6881)
    >>> PeerAddress.parse("[::ffff:1.2.3.4]:6881").normalized() == address
    True
    """

    host: IPv4Address | IPv6Address
    port: int

    def __post_init__(self) -> None:
        host, port = self.host, self.port
        # The usual case, decided on exact types: anything else (a bool or other int subclass,
        # an ipaddress subclass, a scoped or foreign host) takes the full checks below, which
        # give each refusal its message.
        if (
            type(port) is int
            and 0 <= port <= 0xFFFF
            and (type(host) is IPv4Address or (type(host) is IPv6Address and host.scope_id is None))
        ):
            return
        if not isinstance(self.host, IPv4Address | IPv6Address):
            raise CompactError(f"a host is an IPv4Address or IPv6Address, got {self.host!r}")
        if isinstance(self.host, IPv6Address) and self.host.scope_id is not None:
            raise CompactError(f"a scoped address has no compact form: {self.host}")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise CompactError(f"a port is an int, got {self.port!r}")
        if not 0 <= self.port <= 0xFFFF:
            raise CompactError(f"a port is in 0..65535, got {self.port}")

    @property
    def family(self) -> Family:
        """4 or 6, by the host's type (a mapped IPv4 address in IPv6 form is 6).

        >>> PeerAddress.parse("[::1]:1").family
        6
        """
        return 4 if isinstance(self.host, IPv4Address) else 6

    @property
    def is_connectable(self) -> bool:
        """Whether one could dial this address: a non-zero port and a unicast, specified host
        (not the IPv4 limited broadcast ``255.255.255.255`` either).

        >>> PeerAddress.parse("1.2.3.4:0").is_connectable
        False
        >>> PeerAddress.parse("0.0.0.0:6881").is_connectable
        False
        >>> PeerAddress.parse("255.255.255.255:6881").is_connectable
        False
        """
        if self.port == 0:
            return False
        host = self.host
        if type(host) is IPv4Address:
            return _v4_unicast(int(host))
        if type(host) is IPv6Address:
            value = int(host)
            if value >> 32 == _V4_MAPPED_PREFIX:  # judged as the IPv4 address it carries
                return _v4_unicast(value & _V4_LOW)
            return value != 0 and value >> 120 != _V6_MULTICAST_TOP8
        # An ipaddress subclass may answer differently: ask it.
        normal = self.normalized().host
        return not (
            normal.is_unspecified
            or normal.is_multicast
            or normal == IPv4Address(_V4_LIMITED_BROADCAST)
        )

    def normalized(self) -> PeerAddress:
        """This address with an IPv4-mapped IPv6 host (``::ffff:a.b.c.d``) turned into IPv4.

        >>> PeerAddress.parse("[::ffff:10.0.0.1]:80").normalized()
        PeerAddress(host=IPv4Address('10.0.0.1'), port=80)
        """
        host = self.host
        if type(host) is IPv4Address:
            return self
        if type(host) is IPv6Address:
            value = int(host)
            if value >> 32 == _V4_MAPPED_PREFIX:
                return _peer(IPv4Address(value & _V4_LOW), self.port)
            return self
        if isinstance(host, IPv6Address) and host.ipv4_mapped is not None:
            return PeerAddress(host.ipv4_mapped, self.port)
        return self

    def to_compact(self) -> bytes:
        """The 6-byte (IPv4) or 18-byte (IPv6) compact form.

        >>> PeerAddress.parse("[::1]:258").to_compact().hex()
        '000000000000000000000000000000010102'
        """
        host = self.host
        if type(host) is IPv4Address:
            return _V4_PEER.pack(int(host), self.port)
        if type(host) is IPv6Address:
            value = int(host)
            return _V6_PEER.pack(value >> 64, value & 0xFFFFFFFFFFFFFFFF, self.port)
        return host.packed + self.port.to_bytes(2, "big")

    @classmethod
    def from_compact(cls, data: bytes | bytearray | memoryview) -> PeerAddress:
        """Decode 6 bytes (IPv4) or 18 bytes (IPv6).

        >>> PeerAddress.from_compact(b"\\x7f\\x00\\x00\\x01\\x1a\\xe1")
        PeerAddress(host=IPv4Address('127.0.0.1'), port=6881)
        """
        raw = bytes(data)
        host: IPv4Address | IPv6Address
        if len(raw) == 6:
            address, port = _V4_PEER.unpack(raw)
            host = IPv4Address(address)
        elif len(raw) == 18:
            high, low, port = _V6_PEER.unpack(raw)
            host = IPv6Address(high << 64 | low)
        else:
            raise CompactError(f"a compact peer is 6 or 18 bytes, got {len(raw)}")
        # A subclass may check more in its __post_init__: only our own class skips the checks.
        return _peer(host, port) if cls is PeerAddress else cls(host, port)

    @classmethod
    def parse(cls, text: str) -> PeerAddress:
        """Parse ``1.2.3.4:6881`` or ``[::1]:6881``, the forms ``str(address)`` gives.

        >>> PeerAddress.parse("10.0.0.2:51413").port
        51413
        """
        if len(text) > _MAX_TEXT:
            raise CompactError("an address is too long to be host:port")
        host_text, colon, port_text = text.rpartition(":")
        if not colon or not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:
            raise CompactError(f"expected host:port, got {text!r}")
        bracketed = host_text.startswith("[") and host_text.endswith("]")
        try:
            host: IPv4Address | IPv6Address = (
                IPv6Address(host_text[1:-1]) if bracketed else IPv4Address(host_text)
            )
        except ValueError:
            raise CompactError(f"expected 1.2.3.4:port or [v6]:port, got {text!r}") from None
        return cls(host, int(port_text))

    def __str__(self) -> str:
        if isinstance(self.host, IPv6Address):
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A DHT node: its 20-byte id and its address; 26 (IPv4) or 38 (IPv6) bytes compact.

    >>> node = NodeInfo(b"n" * 20, PeerAddress.parse("1.2.3.4:6881"))
    >>> len(node.to_compact())
    26
    >>> NodeInfo.from_compact(node.to_compact()) == node
    True
    >>> str(node)[-13:]
    '@1.2.3.4:6881'
    """

    node_id: bytes
    address: PeerAddress

    def __post_init__(self) -> None:
        node_id: object = self.node_id
        # The usual case, decided on exact types; anything else takes the full checks below.
        if (
            type(node_id) is bytes
            and len(node_id) == NODE_ID_LENGTH
            and type(self.address) is PeerAddress
        ):
            return
        if isinstance(node_id, bytearray | memoryview):
            node_id = bytes(node_id)
            object.__setattr__(self, "node_id", node_id)
        if not isinstance(node_id, bytes) or len(node_id) != NODE_ID_LENGTH:
            raise CompactError(f"a node id is {NODE_ID_LENGTH} bytes")
        if not isinstance(self.address, PeerAddress):
            raise CompactError(f"a node address is a PeerAddress, got {self.address!r}")

    def to_compact(self) -> bytes:
        """The 26-byte (IPv4) or 38-byte (IPv6) compact node info.

        >>> NodeInfo(bytes(20), PeerAddress.parse("[::1]:1")).to_compact()[20:].hex()
        '000000000000000000000000000000010001'
        """
        return self.node_id + self.address.to_compact()

    @classmethod
    def from_compact(cls, data: bytes | bytearray | memoryview) -> NodeInfo:
        """Decode 26 bytes (IPv4) or 38 bytes (IPv6).

        >>> NodeInfo.from_compact(bytes(20) + b"\\x01\\x02\\x03\\x04\\x00\\x50").address
        PeerAddress(host=IPv4Address('1.2.3.4'), port=80)
        """
        raw = bytes(data)
        if len(raw) not in (26, 38):
            raise CompactError(f"compact node info is 26 or 38 bytes, got {len(raw)}")
        node_id, address = raw[:NODE_ID_LENGTH], PeerAddress.from_compact(raw[NODE_ID_LENGTH:])
        # A subclass may check more in its __post_init__: only our own class skips the checks.
        return _node(node_id, address) if cls is NodeInfo else cls(node_id, address)

    def __str__(self) -> str:
        return f"{self.node_id.hex()}@{self.address}"


# Private constructors for parts already known valid (an exact IPv4Address, or an unscoped exact
# IPv6Address, and a port in 0..65535; a 20-byte bytes id and a PeerAddress): decoding and
# normalising make them by the thousand, and the dataclass __init__ would check again what the
# decoder has just established. The slot descriptors store the fields as the frozen dataclass's
# own __init__ does, without going through its refusing __setattr__.
_new: Final = object.__new__
_set_host: Final[Callable[[PeerAddress, IPv4Address | IPv6Address], None]] = PeerAddress.__dict__[
    "host"
].__set__
_set_port: Final[Callable[[PeerAddress, int], None]] = PeerAddress.__dict__["port"].__set__
_set_node_id: Final[Callable[[NodeInfo, bytes], None]] = NodeInfo.__dict__["node_id"].__set__
_set_address: Final[Callable[[NodeInfo, PeerAddress], None]] = NodeInfo.__dict__["address"].__set__


def _peer(host: IPv4Address | IPv6Address, port: int) -> PeerAddress:
    """``PeerAddress(host, port)`` for a *host* and *port* known valid, unchecked."""
    address: PeerAddress = _new(PeerAddress)
    _set_host(address, host)
    _set_port(address, port)
    return address


def _node(node_id: bytes, address: PeerAddress) -> NodeInfo:
    """``NodeInfo(node_id, address)`` for a 20-byte ``bytes`` id and a PeerAddress, unchecked."""
    node: NodeInfo = _new(NodeInfo)
    _set_node_id(node, node_id)
    _set_address(node, address)
    return node


def _entries(data: bytes | bytearray | memoryview, size: int, limit: int, what: str) -> memoryview:
    """A byte view of *data*, once its length is checked to hold whole entries, at most *limit*."""
    view = memoryview(data).cast("B")
    if len(view) % size:
        raise CompactError(f"{what} must be a multiple of {size} bytes, got {len(view)}")
    count = len(view) // size
    if count > limit:
        raise CompactError(f"{count} {what} entries exceed the limit of {limit}")
    return view


def parse_compact_peers(
    data: bytes | bytearray | memoryview, family: Family = 4, *, limit: int = DEFAULT_COMPACT_LIMIT
) -> list[PeerAddress]:
    """Decode a concatenated list of compact peers (tracker ``peers``, PEX ``added``, DHT values).

    The length must be a multiple of 6 (*family* 4) or 18 (*family* 6), and the list may hold at
    most *limit* entries; otherwise :class:`CompactError`.

    >>> [str(peer) for peer in parse_compact_peers(bytes.fromhex("7f0000010002ff0000030004"))]
    ['127.0.0.1:2', '255.0.0.3:4']
    >>> parse_compact_peers(b"", 6)
    []
    """
    size = _peer_size(family)
    view = _entries(data, size, limit, "compact peers")
    if family == 4:
        return [_peer(IPv4Address(host), port) for host, port in _V4_PEER.iter_unpack(view)]
    return [
        _peer(IPv6Address(high << 64 | low), port) for high, low, port in _V6_PEER.iter_unpack(view)
    ]


def encode_compact_peers(peers: Iterable[PeerAddress], family: Family | None = None) -> bytes:
    """Concatenate the compact forms of *peers*, which must all be of one family.

    With *family* given, every peer must be of that family (so an ``added6`` list never gets an
    IPv4 address); without it, the first peer decides.

    >>> encode_compact_peers([PeerAddress.parse("1.2.3.4:5")]).hex()
    '010203040005'
    """
    expected = None if family is None else _peer_size(family)
    out = bytearray()
    for peer in peers:
        compact = peer.to_compact()
        if expected is None:
            expected = len(compact)
        elif len(compact) != expected:
            raise CompactError(f"cannot mix address families in one compact list: {peer}")
        out += compact
    return bytes(out)


def parse_compact_nodes(
    data: bytes | bytearray | memoryview, family: Family = 4, *, limit: int = DEFAULT_COMPACT_LIMIT
) -> list[NodeInfo]:
    """Decode concatenated compact node info (KRPC ``nodes`` with *family* 4, ``nodes6`` with 6).

    >>> nodes = parse_compact_nodes(b"a" * 20 + b"\\x01\\x02\\x03\\x04\\x1a\\xe1")
    >>> str(nodes[0].address)
    '1.2.3.4:6881'
    """
    size = NODE_ID_LENGTH + _peer_size(family)
    view = _entries(data, size, limit, "compact nodes")
    if family == 4:
        return [
            _node(node_id, _peer(IPv4Address(host), port))
            for node_id, host, port in _V4_NODE.iter_unpack(view)
        ]
    return [
        _node(node_id, _peer(IPv6Address(high << 64 | low), port))
        for node_id, high, low, port in _V6_NODE.iter_unpack(view)
    ]


def encode_compact_nodes(nodes: Iterable[NodeInfo], family: Family | None = None) -> bytes:
    """Concatenate the compact node info of *nodes*, which must all be of one family.

    >>> len(encode_compact_nodes([NodeInfo(bytes(20), PeerAddress.parse("[::1]:1"))] * 2))
    76
    """
    expected = None if family is None else _peer_size(family)
    out = bytearray()
    for node in nodes:
        compact = node.to_compact()
        if expected is None:
            expected = len(compact) - NODE_ID_LENGTH
        elif len(compact) != NODE_ID_LENGTH + expected:
            raise CompactError(f"cannot mix address families in one compact list: {node}")
        out += compact
    return bytes(out)


# The IPv6 prefix one host is taken to hold: a host is usually given a whole /64, so one
# machine could speak from 2**64 addresses.
_HOST_IPV6_PREFIX: Final = 64


def host_network(host: IPv4Address | IPv6Address) -> IPv4Address | IPv6Network:
    """What one host counts as where a host is counted (votes, slots; internal to the
    package): an IPv4 address as it is, an IPv6 address as its /64."""
    if isinstance(host, IPv4Address):
        return host
    return IPv6Network((host, _HOST_IPV6_PREFIX), strict=False)
