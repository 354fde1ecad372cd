"""The BEP 6 allowed-fast set: pieces a choked peer may still request.

BEP 6 computes the set from the peer's IPv4 address masked to its /24 and the
20-byte info-hash, so that every address of one subnet gets the same set and a
peer cannot collect more free pieces by reconnecting from its neighbours::

    x = (ip & 0xFFFFFF00) as 4 big-endian bytes + infohash
    while len(a) < k:
        x = SHA1(x)
        for each of the 5 big-endian uint32 words y of x, while len(a) < k:
            index = y % num_pieces
            if index not in a: a.append(index)

IPv6 is not defined by BEP 6. Implementations differ: anacrolix/torrent gives an
IPv6 peer no set at all; libtorrent hashes the whole 16-byte address unmasked
(and, unlike the BEP, does not mask IPv4 addresses either). Hashing the whole
address defeats the purpose of the mask, since one IPv6 host usually owns a /64
and a site a /48. We therefore mask an IPv6 address to its /48
(:data:`IPV6_PREFIX_LENGTH`, the usual allocation to one site, the analogue of
the IPv4 /24) and hash the 16 masked bytes followed by the info-hash. An
IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, as dual-stack sockets report IPv4
peers) is treated as the IPv4 address it maps. The set is only a promise the
sender makes; no client recomputes a peer's set to check it, so this choice
cannot break interoperability.

When ``k >= num_pieces`` every piece is allowed; the loop then runs until it has
met every index (as anacrolix/torrent does), so the order is still the BEP's.
The loop is bounded: should the hashes fail to cover the set within
:data:`MAX_ROUNDS_PER_PIECE` rounds per wanted piece (they never do in practice),
the missing indices are appended in increasing order.
"""

from __future__ import annotations

import hashlib
from ipaddress import IPv4Address, IPv6Address, ip_address

__all__ = ["DEFAULT_ALLOWED_FAST_SET_SIZE", "IPV6_PREFIX_LENGTH", "allowed_fast_set"]

DEFAULT_ALLOWED_FAST_SET_SIZE = 10
"""``k``: how many pieces BEP 6 recommends to allow (libtorrent's default too)."""

IPV6_PREFIX_LENGTH = 48
"""How many leading bits of an IPv6 address select its allowed-fast set."""

MAX_ROUNDS_PER_PIECE = 64
"""Bound on SHA-1 rounds per wanted piece before the deterministic fallback."""

_IPV4_MASK = 0xFFFFFF00
_IPV6_MASK = ((1 << IPV6_PREFIX_LENGTH) - 1) << (128 - IPV6_PREFIX_LENGTH)
_INFO_HASH_SIZE = 20
_MAX_PIECE_INDEX = 0xFFFFFFFF


def _address_bytes(ip: str | IPv4Address | IPv6Address) -> bytes:
    """The masked address bytes that start the hash chain."""
    if isinstance(ip, str):
        try:
            address: IPv4Address | IPv6Address = ip_address(ip)
        except ValueError:
            raise ValueError(f"not an IP address: {ip!r}") from None
    elif isinstance(ip, (IPv4Address, IPv6Address)):
        address = ip
    else:
        raise TypeError(f"ip must be a str, IPv4Address or IPv6Address, not {ip!r}")
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, IPv4Address):
        return (int(address) & _IPV4_MASK).to_bytes(4, "big")
    return (int(address) & _IPV6_MASK).to_bytes(16, "big")


def allowed_fast_set(
    ip: str | IPv4Address | IPv6Address,
    info_hash: bytes,
    num_pieces: int,
    k: int = DEFAULT_ALLOWED_FAST_SET_SIZE,
) -> list[int]:
    """The BEP 6 allowed-fast set for a peer at ``ip``, in the order BEP 6 generates it.

    >>> allowed_fast_set("80.4.4.200", b"\\xaa" * 20, 1313, k=7)
    [1059, 431, 808, 1217, 287, 376, 1188]
    >>> allowed_fast_set("80.4.4.1", b"\\xaa" * 20, 1313, k=7)  # same /24, same set
    [1059, 431, 808, 1217, 287, 376, 1188]
    >>> sorted(allowed_fast_set("10.0.0.1", b"\\x01" * 20, 5, k=10))
    [0, 1, 2, 3, 4]

    Args:
        ip: the peer's address as seen by us (IPv4, IPv6 or IPv4-mapped IPv6).
        info_hash: the 20-byte id of the torrent on the wire (the v1 info-hash, or
            the truncated v2 one on a v2 connection).
        num_pieces: the number of pieces of the torrent (0 gives an empty set).
        k: how many pieces to allow; at most ``num_pieces`` are returned.

    Returns:
        ``min(k, num_pieces)`` distinct piece indices, each below ``num_pieces``.

    Raises:
        ValueError: ``ip`` is not an address, ``info_hash`` is not 20 bytes, or
            ``num_pieces`` / ``k`` is negative (or ``num_pieces`` above 2**32 - 1).
        TypeError: an argument has the wrong type.
    """
    if not isinstance(info_hash, (bytes, bytearray, memoryview)):
        raise TypeError(f"info_hash must be bytes, not {info_hash!r}")
    if len(info_hash) != _INFO_HASH_SIZE:
        raise ValueError(f"info_hash must be {_INFO_HASH_SIZE} bytes, not {len(info_hash)}")
    for name, value in (("num_pieces", num_pieces), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {value!r}")
        if value < 0:
            raise ValueError(f"{name} must not be negative, got {value}")
    if num_pieces > _MAX_PIECE_INDEX + 1:
        raise ValueError(f"num_pieces must fit a uint32 piece index, got {num_pieces}")
    x = _address_bytes(ip) + bytes(info_hash)
    wanted = min(k, num_pieces)
    chosen: list[int] = []
    seen: set[int] = set()
    rounds = 0
    max_rounds = MAX_ROUNDS_PER_PIECE * wanted
    while len(chosen) < wanted and rounds < max_rounds:
        x = hashlib.sha1(x).digest()
        rounds += 1
        for offset in range(0, 20, 4):
            if len(chosen) >= wanted:
                break
            index = int.from_bytes(x[offset : offset + 4], "big") % num_pieces
            if index not in seen:
                seen.add(index)
                chosen.append(index)
    # Fallback for a hash chain that keeps repeating itself: complete the set
    # deterministically rather than loop without bound.
    index = 0
    while len(chosen) < wanted:
        if index not in seen:
            seen.add(index)
            chosen.append(index)
        index += 1
    return chosen
