"""DHT node ids: the 160-bit XOR metric of Kademlia (BEP 5) and BEP 42's address-bound ids.

:class:`NodeId` wraps the 20 bytes of a node id (or of an info-hash / BEP 44 target, which live
in the same space). Distance is the XOR of two ids read as a big-endian unsigned integer; the
routing table files a node by the length of the prefix it shares with our own id.

BEP 42 ties a node id to the node's external IP address so that an attacker cannot choose ids
freely: the first 21 bits of the id are the first 21 bits of ``crc32c((ip & mask) | (r << n))``
where ``r`` is the low 3 bits of the id's last byte. The hash covers only the 4 masked IPv4
bytes (8 high bytes for IPv6), as the BEP's reference code and libtorrent do; the prose's
"64-bit integer" does not reproduce the BEP's own table. Local addresses (libtorrent's
``is_local``: RFC 1918, link-local, loopback, CGNAT, and their IPv6 counterparts) are exempt: any
id is valid for them.

>>> node = NodeId.from_hex("5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401")
>>> node.is_valid_for(IPv4Address("124.31.75.21"))
True
>>> node.common_prefix_length(NodeId(bytes(20)))
1
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from random import Random

from bip_handshake import crc32c

from ._errors import LocalProtocolError
from ._ip import unmapped_ip

__all__ = [
    "NODE_ID_BITS",
    "NODE_ID_BYTES",
    "NodeId",
    "crc32c",
    "is_bep42_exempt",
]

NODE_ID_BYTES = 20
"""The length of a node id in bytes."""

NODE_ID_BITS = 160
"""The length of a node id in bits."""

_V4_MASK = bytes.fromhex("030f3fff")
_V6_MASK = bytes.fromhex("0103070f1f3f7fff")

_V4_EXEMPT = tuple(
    (IPv4Address(net), bits)
    for net, bits in (
        ("10.0.0.0", 8),
        ("172.16.0.0", 12),
        ("192.168.0.0", 16),
        ("169.254.0.0", 16),
        ("127.0.0.0", 8),
        ("100.64.0.0", 10),  # shared address space (CGNAT, RFC 6598), local since libtorrent 2.0.9
    )
)

# the first 10 bits of fe80::/10 (link-local) and fec0::/10 (site-local)
_V6_LOCAL_10 = (0x3FA, 0x3FB)
# multicast (ff) with scope link-local (2) or site-local (5), under mask 0xff0f (asio's
# is_multicast_link_local / is_multicast_site_local, which libtorrent's is_local uses)
_V6_LOCAL_MULTICAST = (0xFF02, 0xFF05)

# (shift, network >> shift) per exempt range: a match is `int(ip) >> shift == prefix`
_V4_EXEMPT_PREFIXES = tuple((32 - bits, int(net) >> (32 - bits)) for net, bits in _V4_EXEMPT)


def is_bep42_exempt(ip: IPv4Address | IPv6Address) -> bool:
    """Whether *ip* is a local address, for which BEP 42 accepts any node id.

    This is libtorrent's ``is_local``, which its ``verify_id`` exempts, and the one definition of
    a local address in this package (the external-address vote ignores the same ones). IPv4: the
    ranges BEP 42 lists (10/8, 172.16/12, 192.168/16, 169.254/16, 127/8) and the shared address
    space 100.64/10 (CGNAT). IPv6 has no list in the BEP; like libtorrent we exempt loopback
    (``::1``), link-local (fe80::/10), site-local (fec0::/10, deprecated but unrouted by
    default), unique-local (fc00::/7) and link- or site-local scoped multicast (ff02::/16 and
    ff05::/16, whatever the flags nibble). An IPv4-mapped IPv6 address counts as IPv4.

    >>> is_bep42_exempt(IPv4Address("192.168.1.9")), is_bep42_exempt(IPv4Address("8.8.8.8"))
    (True, False)
    >>> is_bep42_exempt(IPv4Address("100.64.1.2")), is_bep42_exempt(IPv6Address("fec0::1"))
    (True, True)
    """
    if type(ip) is not IPv4Address:  # the common IPv4 case skips the unmapping call
        ip = unmapped_ip(ip)
    if isinstance(ip, IPv4Address):
        # a plain loop over precomputed prefixes, not any() over a generator: the routing
        # table asks this of every node it files, so it is on the simulator's hottest path
        value = int(ip)
        for shift, prefix in _V4_EXEMPT_PREFIXES:  # noqa: SIM110 - see above
            if value >> shift == prefix:
                return True
        return False
    value = int(ip)
    top = value >> 112  # the first 16 bits
    return (
        value == 1  # ::1
        or top >> 6 in _V6_LOCAL_10  # fe80::/10 link-local, fec0::/10 site-local
        or top >> 9 == 0x7E  # fc00::/7 unique-local
        or top & 0xFF0F in _V6_LOCAL_MULTICAST  # the scope nibble: 2 link-local, 5 site-local
    )


def _bep42_crc(ip: IPv4Address | IPv6Address, r: int) -> int:
    if isinstance(ip, IPv4Address):
        masked = bytearray(a & m for a, m in zip(ip.packed, _V4_MASK, strict=True))
    else:
        masked = bytearray(a & m for a, m in zip(ip.packed[:8], _V6_MASK, strict=True))
    masked[0] |= (r & 7) << 5
    return crc32c(masked)


@dataclass(frozen=True, slots=True, order=True)
class NodeId:
    """A 160-bit DHT node id (also an info-hash or BEP 44 target): 20 bytes, ordered as integers.

    >>> a, b = NodeId(bytes(19) + b"\\x05"), NodeId(bytes(19) + b"\\x03")
    >>> a.distance(b)
    6
    >>> a.common_prefix_length(b)
    157
    >>> NodeId(b"short")
    Traceback (most recent call last):
    ...
    bip_dht._errors.LocalProtocolError: a node id is 20 bytes, got 5
    """

    value: bytes

    def __post_init__(self) -> None:
        value: object = self.value
        if isinstance(value, bytearray | memoryview):
            value = bytes(value)
            object.__setattr__(self, "value", value)
        if not isinstance(value, bytes):
            raise LocalProtocolError(f"a node id is bytes, got {type(value).__name__}")
        if len(value) != NODE_ID_BYTES:
            raise LocalProtocolError(f"a node id is {NODE_ID_BYTES} bytes, got {len(value)}")

    @classmethod
    def from_int(cls, number: int) -> NodeId:
        """The id whose big-endian value is *number* (0 <= number < 2**160).

        >>> NodeId.from_int(1).value[-1]
        1
        """
        if isinstance(number, bool) or not isinstance(number, int):
            raise LocalProtocolError(f"a node id number is an int, got {number!r}")
        if not 0 <= number < 1 << NODE_ID_BITS:
            raise LocalProtocolError("a node id number is in 0 .. 2**160 - 1")
        return cls(number.to_bytes(NODE_ID_BYTES, "big"))

    @classmethod
    def from_hex(cls, text: str) -> NodeId:
        """Parse 40 hexadecimal digits.

        >>> NodeId.from_hex("00" * 19 + "ff").value[-1]
        255
        """
        try:
            raw = bytes.fromhex(text)
        except (ValueError, TypeError):
            raise LocalProtocolError(f"a node id is 40 hex digits, got {text!r}") from None
        return cls(raw)

    @classmethod
    def random(cls, rng: Random) -> NodeId:
        """A uniformly random id drawn from *rng*.

        >>> len(NodeId.random(Random(1)).value)
        20
        """
        return cls.from_int(rng.getrandbits(NODE_ID_BITS))

    @classmethod
    def for_ip(cls, ip: IPv4Address | IPv6Address, rng: Random, rand: int | None = None) -> NodeId:
        """A BEP 42 id for a node whose external address is *ip*.

        The first 21 bits come from the CRC of the masked address and ``r = rand & 7``; the
        last byte is *rand* (drawn from *rng* when None); the other bits are random. For an
        exempt (local) address the id is still built the same way, so it stays valid if the
        address is later seen from outside.

        >>> node = NodeId.for_ip(IPv4Address("124.31.75.21"), Random(0), rand=1)
        >>> node.value[:2].hex(), node.value[19]
        ('5fbf', 1)
        """
        ip = unmapped_ip(ip)
        if rand is None:
            rand = rng.getrandbits(8)
        if isinstance(rand, bool) or not isinstance(rand, int) or not 0 <= rand <= 0xFF:
            raise LocalProtocolError(f"rand is a byte value 0..255, got {rand!r}")
        crc = _bep42_crc(ip, rand)
        body = bytearray(rng.getrandbits(8 * NODE_ID_BYTES).to_bytes(NODE_ID_BYTES, "big"))
        body[0] = crc >> 24
        body[1] = (crc >> 16) & 0xFF
        body[2] = ((crc >> 8) & 0xF8) | (body[2] & 0x07)
        body[19] = rand
        return cls(bytes(body))

    def is_valid_for(self, ip: IPv4Address | IPv6Address) -> bool:
        """Whether this id satisfies BEP 42 for a node at *ip* (always True for local addresses).

        >>> NodeId(bytes(20)).is_valid_for(IPv4Address("10.1.2.3"))
        True
        >>> NodeId(bytes(20)).is_valid_for(IPv4Address("124.31.75.21"))
        False
        """
        ip = unmapped_ip(ip)
        if is_bep42_exempt(ip):
            return True
        crc = _bep42_crc(ip, self.value[19])
        value = self.value
        return (
            value[0] == crc >> 24
            and value[1] == (crc >> 16) & 0xFF
            and value[2] & 0xF8 == (crc >> 8) & 0xF8
        )

    def __int__(self) -> int:
        return int.from_bytes(self.value, "big")

    def distance(self, other: NodeId) -> int:
        """The XOR distance to *other*, as an integer (0 only for the same id)."""
        return int(self) ^ int(other)

    def common_prefix_length(self, other: NodeId) -> int:
        """How many leading bits this id shares with *other*: 0..160 (160 when equal)."""
        return NODE_ID_BITS - self.distance(other).bit_length()

    def random_with_prefix(self, prefix_length: int, rng: Random) -> NodeId:
        """A random id sharing exactly *prefix_length* leading bits with this one (0..159).

        That is an id that lands in bucket *prefix_length* of a table whose own id is this one:
        the first *prefix_length* bits are ours, the next is flipped, the rest are random.

        >>> own = NodeId(bytes(20))
        >>> own.random_with_prefix(7, Random(3)).common_prefix_length(own)
        7
        """
        if isinstance(prefix_length, bool) or not isinstance(prefix_length, int):
            raise LocalProtocolError(f"a prefix length is an int, got {prefix_length!r}")
        if not 0 <= prefix_length < NODE_ID_BITS:
            raise LocalProtocolError(f"a prefix length is in 0..159, got {prefix_length}")
        free = NODE_ID_BITS - prefix_length - 1
        flip = 1 << free
        return NodeId.from_int((int(self) ^ flip) & ~(flip - 1) | rng.getrandbits(free))

    def hex(self) -> str:
        """The 40 lowercase hex digits."""
        return self.value.hex()

    def __str__(self) -> str:
        return self.value.hex()
