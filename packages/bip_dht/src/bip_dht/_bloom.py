"""BEP 33 scrape bloom filters: how many seeds and peers a DHT node knows for a torrent.

A node answering ``get_peers`` with ``scrape=1`` returns two 256-byte filters, ``BFsd``
(seeds) and ``BFpe`` (peers, i.e. downloaders). Each is a 2048-bit bloom filter into
which every known address was inserted with k = 2 hash positions taken from the SHA-1 of
the address's bytes in network order (4 bytes for IPv4, 16 for IPv6). A scraper unions
the filters it gets from several nodes and estimates the number of distinct addresses.

API (sans-IO, no state beyond the 256 bytes):

- :class:`ScrapeBloom` -- a mutable filter. ``ScrapeBloom()`` is empty;
  ``ScrapeBloom.from_bytes(b)`` reads a ``BFsd``/``BFpe`` value (exactly 256 bytes, else
  :class:`~bip_dht._errors.KRPCError`); ``insert(ip)`` adds an
  ``IPv4Address``/``IPv6Address``; ``ip in bloom`` asks (with false positives);
  ``bloom |= other`` / ``bloom | other`` / ``ScrapeBloom.union(filters)`` combine;
  ``estimate()`` gives the BEP's size estimate; ``to_bytes()`` the wire form.
- :data:`BLOOM_BYTES` (256), :data:`BLOOM_BITS` (2048), :data:`BLOOM_HASHES` (2).

Addresses are inserted exactly as given: an IPv4-mapped IPv6 address hashes as its 16
bytes, as the BEP's pseudocode does; callers that want one count per host normalise first
(:class:`~bip_dht._peer_store.PeerStore` does).

>>> from ipaddress import IPv4Address
>>> bloom = ScrapeBloom()
>>> for last in range(256):
...     bloom.insert(IPv4Address(f"192.0.2.{last}"))
>>> round(bloom.estimate(), 1)
257.9
>>> IPv4Address("192.0.2.7") in bloom
True
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address

from ._errors import KRPCError

__all__ = ["BLOOM_BITS", "BLOOM_BYTES", "BLOOM_HASHES", "ScrapeBloom"]

BLOOM_BYTES = 256
"""The size of a BEP 33 bloom filter (``BFsd`` / ``BFpe``) in bytes."""

BLOOM_BITS = BLOOM_BYTES * 8
"""The number of bits in a BEP 33 bloom filter (2048)."""

BLOOM_HASHES = 2
"""How many bits each inserted address sets (BEP 33: two, from its SHA-1)."""

# Number of zero bits in every byte value, so counting a filter's zeros is 256 lookups.
_ZEROS = bytes(8 - bin(value).count("1") for value in range(256))


def _positions(ip: IPv4Address | IPv6Address) -> tuple[int, int]:
    if not isinstance(ip, IPv4Address | IPv6Address):
        raise TypeError(f"a bloom filter holds IPv4Address or IPv6Address, got {ip!r}")
    digest = hashlib.sha1(ip.packed).digest()
    # BEP 33: the first two pairs of bytes of the digest, each read little-endian.
    return (digest[0] | digest[1] << 8) % BLOOM_BITS, (digest[2] | digest[3] << 8) % BLOOM_BITS


class ScrapeBloom:
    """A BEP 33 2048-bit bloom filter of IP addresses.

    >>> from ipaddress import IPv6Address
    >>> a, b = ScrapeBloom(), ScrapeBloom()
    >>> a.insert(IPv6Address("2001:db8::1"))
    >>> (a | b).to_bytes() == a.to_bytes()
    True
    >>> ScrapeBloom().estimate()  # the BEP's clamp: an empty filter reads as 0.5
    0.5
    """

    __slots__ = ("_bits",)

    def __init__(self) -> None:
        self._bits = bytearray(BLOOM_BYTES)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> ScrapeBloom:
        """Read a filter as carried in ``BFsd``/``BFpe`` (exactly 256 bytes).

        >>> ScrapeBloom.from_bytes(b"x")
        Traceback (most recent call last):
        ...
        bip_dht._errors.KRPCError: a BEP 33 bloom filter is 256 bytes, got 1
        """
        raw = bytes(data)
        if len(raw) != BLOOM_BYTES:
            raise KRPCError(f"a BEP 33 bloom filter is {BLOOM_BYTES} bytes, got {len(raw)}")
        bloom = cls()
        bloom._bits[:] = raw
        return bloom

    @classmethod
    def union(cls, filters: Iterable[ScrapeBloom]) -> ScrapeBloom:
        """A new filter holding every address of ``filters`` (bitwise OR)."""
        result = cls()
        for bloom in filters:
            result |= bloom
        return result

    def to_bytes(self) -> bytes:
        """The 256-byte wire form."""
        return bytes(self._bits)

    def insert(self, ip: IPv4Address | IPv6Address) -> None:
        """Add an address (its 4 or 16 network-order bytes, as BEP 33 says)."""
        for index in _positions(ip):
            self._bits[index >> 3] |= 1 << (index & 7)

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, IPv4Address | IPv6Address):
            return False
        return all(self._bits[index >> 3] >> (index & 7) & 1 for index in _positions(ip))

    def __ior__(self, other: ScrapeBloom) -> ScrapeBloom:
        if not isinstance(other, ScrapeBloom):
            return NotImplemented
        merged = int.from_bytes(self._bits, "little") | int.from_bytes(other._bits, "little")
        self._bits[:] = merged.to_bytes(BLOOM_BYTES, "little")
        return self

    def __or__(self, other: ScrapeBloom) -> ScrapeBloom:
        if not isinstance(other, ScrapeBloom):
            return NotImplemented
        result = ScrapeBloom.from_bytes(self._bits)
        result |= other
        return result

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScrapeBloom):
            return NotImplemented
        return self._bits == other._bits

    __hash__ = None  # type: ignore[assignment]  # mutable, like bytearray

    def zero_bits(self) -> int:
        """How many of the 2048 bits are still clear."""
        return sum(_ZEROS[value] for value in self._bits)

    def estimate(self) -> float:
        """The BEP 33 estimate of how many distinct addresses were inserted.

        ``size = log(c / m) / (k * log(1 - 1/m))`` with ``c = min(m - 1, zero bits)``. That
        clamp is the BEP's (and libtorrent's), so an empty filter reads 0.5, not 0. The BEP
        leaves a full filter (no zero bit) at log(0); we also keep ``c`` at least 1 there, so
        a saturated filter reads about 7,806, the most any filter can tell, not infinity.
        """
        zeros = max(1, min(BLOOM_BITS - 1, self.zero_bits()))
        return math.log(zeros / BLOOM_BITS) / (BLOOM_HASHES * math.log(1 - 1 / BLOOM_BITS))

    def __repr__(self) -> str:
        return f"ScrapeBloom(estimate={self.estimate():.1f})"
