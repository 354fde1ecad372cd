"""InfoHash: the identity of a torrent, v1, v2 or both."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from ._errors import InfoHashError

__all__ = ["InfoHash"]

_V1_SIZE = 20
_V2_SIZE = 32
_MULTIHASH_SHA256 = b"\x12\x20"  # multihash code 0x12 (sha2-256), length 0x20


@dataclass(frozen=True, slots=True)
class InfoHash:
    """A torrent's info-hash: v1 (SHA-1), v2 (SHA-256), or both for a hybrid torrent.

    Each is the hash of the info dictionary's bytes exactly as the .torrent has
    them. On the wire (handshakes, trackers, the DHT) a v2 hash is truncated to
    its first 20 bytes; :attr:`v2_truncated` gives that form and :meth:`swarm_ids`
    every 20-byte id under which the torrent's peers meet.

    >>> h = InfoHash.from_info_bytes(b"d4:name1:x12:piece lengthi16384e6:pieces0:e", v1=True)
    >>> h.hex()
    '2b21ac726f4c58e1b954df813c4b9fe21ea91f39'

    Attributes:
        v1: the 20-byte SHA-1 info-hash, or None for a v2-only torrent.
        v2: the 32-byte SHA-256 info-hash, or None for a v1-only torrent.
    """

    v1: bytes | None = None
    v2: bytes | None = None

    def __post_init__(self) -> None:
        """Check the hashes' types and sizes."""
        if self.v1 is None and self.v2 is None:
            raise ValueError("an InfoHash needs a v1 or a v2 hash (or both)")
        for name, value, size in (("v1", self.v1, _V1_SIZE), ("v2", self.v2, _V2_SIZE)):
            if value is not None and (type(value) is not bytes or len(value) != size):
                raise ValueError(f"{name} must be {size} bytes, not {value!r}")

    @classmethod
    def from_info_bytes(cls, info: bytes, *, v1: bool = False, v2: bool = False) -> InfoHash:
        """Hash an info dictionary's raw bytes as v1 (SHA-1), v2 (SHA-256) or both."""
        return cls(
            v1=hashlib.sha1(info).digest() if v1 else None,
            v2=hashlib.sha256(info).digest() if v2 else None,
        )

    @classmethod
    def parse(cls, text: str) -> InfoHash:
        """Parse a hash written as text.

        Accepted: 40 hex digits or 32 base32 characters (v1); 64 hex digits (v2); a
        v2 multihash in hex (``1220`` then 64 hex digits, as in ``urn:btmh:``).

        Raises:
            InfoHashError: the text is none of these (a :class:`ValueError`).
        """
        raw = _decode_text(text)
        if raw is not None:
            if len(raw) == _V1_SIZE:
                return cls(v1=raw)
            if len(raw) == _V2_SIZE:
                return cls(v2=raw)
            if len(raw) == len(_MULTIHASH_SHA256) + _V2_SIZE and raw.startswith(_MULTIHASH_SHA256):
                return cls(v2=raw[len(_MULTIHASH_SHA256) :])
        raise InfoHashError(
            f"not an info-hash: {text!r} (want 40 hex or 32 base32 characters for v1,"
            " 64 hex for v2, or a 1220-prefixed v2 multihash)"
        )

    @property
    def is_hybrid(self) -> bool:
        """Whether the torrent has both a v1 and a v2 info-hash."""
        return self.v1 is not None and self.v2 is not None

    @property
    def v2_truncated(self) -> bytes | None:
        """The first 20 bytes of the v2 hash, as v2 peers use it on the wire."""
        return None if self.v2 is None else self.v2[:_V1_SIZE]

    @property
    def best(self) -> bytes:
        """The strongest hash the torrent has: v2 if present, else v1."""
        best = self.v2 if self.v2 is not None else self.v1
        assert best is not None  # __post_init__ guarantees one of them
        return best

    def swarm_ids(self) -> tuple[bytes, ...]:
        """The 20-byte ids under which this torrent's peers meet: v1, truncated v2, or both."""
        ids = []
        if self.v1 is not None:
            ids.append(self.v1)
        if self.v2 is not None:
            ids.append(self.v2[:_V1_SIZE])
        return tuple(ids)

    def matches(self, swarm_id: bytes) -> bool:
        """Whether a 20-byte id from the wire (a handshake, a tracker) names this torrent."""
        return swarm_id in self.swarm_ids()

    def multihash(self) -> bytes:
        """The v2 hash as a multihash (``0x12 0x20`` then the 32 bytes), for ``urn:btmh:``.

        Raises:
            ValueError: the torrent has no v2 hash.
        """
        if self.v2 is None:
            raise ValueError("a v1-only torrent has no v2 multihash")
        return _MULTIHASH_SHA256 + self.v2

    def hex(self) -> str:
        """The v1 hash in hex if there is one, else the v2 hash."""
        return (self.v1 if self.v1 is not None else self.best).hex()

    def base32(self) -> str:
        """The v1 hash in base32 (the older ``urn:btih:`` form).

        Raises:
            ValueError: the torrent has no v1 hash (base32 is only used for v1).
        """
        if self.v1 is None:
            raise ValueError("a v2-only torrent has no v1 hash to write in base32")
        return base64.b32encode(self.v1).decode()

    def __str__(self) -> str:
        """The hex form of :meth:`hex`, with the v2 hash too for a hybrid torrent."""
        if self.v1 is not None and self.v2 is not None:
            return f"{self.v1.hex()}+{self.v2.hex()}"
        return self.hex()


def _decode_text(text: object) -> bytes | None:
    # ASCII only: str.upper() would turn some non-ASCII letters (a dotless i, say)
    # into ASCII ones and let them pass as base32.
    if not isinstance(text, str) or not text.isascii():
        return None
    if len(text) == 32:  # v1 in base32 (RFC 4648, upper or lower case)
        try:
            return base64.b32decode(text.upper())
        except binascii.Error:
            return None
    if len(text) % 2 or not all(c in "0123456789abcdefABCDEF" for c in text):
        return None
    return bytes.fromhex(text)
