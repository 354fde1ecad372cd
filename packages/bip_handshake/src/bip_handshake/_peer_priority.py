"""BEP 40 canonical peer priority: a ranking of peer addresses that every client agrees on.

Each pair of endpoints (ours, the peer's) gets a 32-bit number, the same at both ends:
CRC32-C (Castagnoli) of the two masked addresses, lowest first. When every client prefers
the connections with the highest number, a swarm cannot be kept closed by peers that never
free a slot, and an attacker cannot take every slot of a peer by hammering it with
connections: the connections it would evict are not the attacker's to choose.

The masks, as BEP 40 gives them:

- IPv4: ``FF.FF.55.55``; ``FF.FF.FF.55`` when both are in one /16; the whole address when
  both are in one /24.
- IPv6: ``FFFF:FFFF:FFFF:5555:...`` (the first 48 bits kept); one more byte kept for each
  further byte the two share (same /48: ``FFFF:FFFF:FFFF:FF55:...``; same /56:
  ``FFFF:FFFF:FFFF:FFFF:5555:...``, "etc.").
- Equal addresses: the two ports (16-bit, network order), lowest first.

That is, the bytes up to and including the first byte the addresses differ in are kept (at
least 2 for IPv4, 6 for IPv6), every later byte is masked with ``0x55``. For IPv6, libtorrent
departs from the BEP: it keeps the first 32 and the last 64 bits unmasked and masks bytes 4-7
by whether the addresses share a /32 or a /48. We follow the BEP text; the IPv4 rule, the one
almost every swarm uses, is the same in both.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from ._compact import PeerAddress

__all__ = ["crc32c", "peer_priority"]

_CASTAGNOLI: int = 0x82F63B78  # the Castagnoli polynomial 0x1EDC6F41, bit-reversed
_KEPT = {4: 2, 16: 6}  # bytes always kept unmasked, by address length (IPv4 /16, IPv6 /48)
_FIVES = {4: 0x55555555, 16: int.from_bytes(b"\x55" * 16, "big")}  # 0x55 in every byte


@functools.cache
def _table() -> Sequence[int]:
    """The 256-entry lookup table of the reflected CRC32-C, built once on first use."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CASTAGNOLI if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC32-C (Castagnoli, as iSCSI and BEP 40 / BEP 42 use), not zlib's CRC-32.

    >>> hex(crc32c(b"123456789"))
    '0xe3069283'
    """
    table = _table()
    crc = 0xFFFFFFFF
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(ours: int, theirs: int, length: int) -> tuple[int, int]:
    """Both (different) addresses, as big-endian integers of *length* bytes, masked as BEP 40
    says (see the module docstring). Worked out on the integers: this runs for every address
    a peer list takes in, and for its whole list when our address changes."""
    # The first byte that differs, counted from the most significant: the difference's highest
    # bit lies in it.
    first_difference = length - ((ours ^ theirs).bit_length() + 7) // 8
    kept = max(_KEPT[length], first_difference + 1)
    masked_bits = (1 << (length - kept) * 8) - 1  # the bytes after the kept ones
    fives = _FIVES[length] & masked_bits
    return (ours & ~masked_bits) | (ours & fives), (theirs & ~masked_bits) | (theirs & fives)


def peer_priority(a: PeerAddress, b: PeerAddress) -> int:
    """The BEP 40 priority of a connection between ``a`` and ``b`` (symmetric), 0 to 2**32-1.

    One address is ours (our external address, as the peer sees us), the other the peer's;
    which is which does not matter. An IPv4-mapped IPv6 address counts as the IPv4 one.

    >>> hex(peer_priority(PeerAddress.parse("123.213.32.10:0"), PeerAddress.parse("98.76.54.32:0")))
    '0xec2d7224'

    Raises:
        ValueError: one address is IPv4 and the other IPv6 (BEP 40 ranks only peers of one
            family: compare with our address of the peer's family).
    """
    a, b = a.normalized(), b.normalized()
    if a.family != b.family:
        raise ValueError(f"BEP 40 compares addresses of one family, not {a} and {b}")
    if a.host == b.host:
        low, high = sorted((a.port, b.port))
        return crc32c(low.to_bytes(2, "big") + high.to_bytes(2, "big"))
    # Ordering the masked addresses as integers orders their big-endian bytes alike.
    length = 4 if a.family == 4 else 16
    first, second = sorted(_masked(int(a.host), int(b.host), length))
    return crc32c(first.to_bytes(length, "big") + second.to_bytes(length, "big"))
