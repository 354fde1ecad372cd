"""Extensions: the 8 reserved bytes of the BitTorrent handshake."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from ._errors import HandshakeError

__all__ = ["Extensions", "ExtensionsError"]

_SIZE = 8
_MASK = (1 << (8 * _SIZE)) - 1


class ExtensionsError(HandshakeError, ValueError):
    """Reserved bytes that are not 8 bytes (or 16 hex digits), or a value beyond 8 bytes.

    A :class:`ValueError` too, as it always was.

    >>> Extensions.from_hex("00")
    Traceback (most recent call last):
    ...
    bip_handshake._extensions.ExtensionsError: reserved bytes must be 8 bytes long, not 1
    """


def _bit(byte: int, mask: int) -> int:
    """The integer value of ``reserved[byte] & mask`` (byte 0 is the most significant)."""
    return mask << (8 * (_SIZE - 1 - byte))


@dataclass(frozen=True, slots=True)
class Extensions:
    """The 8 reserved bytes of a handshake: which protocol extensions a peer supports.

    The bytes are held as one big-endian integer, ``value``. Named flags are class
    constants (each an :class:`Extensions` with one bit set), combined and tested
    with set operators: ``|`` (union), ``&`` (intersection), ``-`` (difference),
    ``^`` (symmetric difference), ``~`` (complement), ``in`` (all bits of the left
    operand set in the right one). Bits without a name are kept through every
    operation, so a handshake can be parsed and re-emitted unchanged.

    Named flags (BEP 4 "Assigned Numbers" and later BEPs), as ``reserved[i] & mask``:

    ==================  ============  ============================================
    name                bit           meaning
    ==================  ============  ============================================
    AZUREUS_MESSAGING   [0] & 0x80    Azureus Messaging Protocol
    LOCATION_AWARE      [2] & 0x08    BitTorrent Location-aware Protocol
    EXTENSION_PROTOCOL  [5] & 0x10    BEP 10 extension protocol (LTEP)
    DHT                 [7] & 0x01    BEP 5 DHT (the peer sends a ``port`` message)
    XBT_PEX             [7] & 0x02    XBT peer exchange
    FAST                [7] & 0x04    BEP 6 fast extension
    NAT_TRAVERSAL       [7] & 0x08    libtorrent NAT traversal
    V2_UPGRADE          [7] & 0x10    BEP 52: the peer supports v2 of a hybrid torrent
    ==================  ============  ============================================

    >>> ours = Extensions.EXTENSION_PROTOCOL | Extensions.FAST | Extensions.DHT
    >>> ours.to_bytes().hex()
    '0000000000100005'
    >>> Extensions.FAST in ours, Extensions.V2_UPGRADE in ours
    (True, False)
    >>> theirs = Extensions.from_bytes(bytes.fromhex("8000000000100004"))
    >>> theirs & ours
    Extensions(0x0000000000100004: EXTENSION_PROTOCOL|FAST)
    >>> [flag.name for flag in theirs]
    ['AZUREUS_MESSAGING', 'EXTENSION_PROTOCOL', 'FAST']

    Attributes:
        value: the 8 bytes as an unsigned big-endian integer (``0 <= value < 2**64``).
    """

    value: int = 0

    AZUREUS_MESSAGING: ClassVar[Extensions]
    LOCATION_AWARE: ClassVar[Extensions]
    EXTENSION_PROTOCOL: ClassVar[Extensions]
    DHT: ClassVar[Extensions]
    XBT_PEX: ClassVar[Extensions]
    FAST: ClassVar[Extensions]
    NAT_TRAVERSAL: ClassVar[Extensions]
    V2_UPGRADE: ClassVar[Extensions]
    NONE: ClassVar[Extensions]

    def __post_init__(self) -> None:
        """Check that the value fits in 8 bytes."""
        if type(self.value) is not int:
            raise TypeError(f"Extensions value must be an int, not {self.value!r}")
        if not 0 <= self.value <= _MASK:
            raise ExtensionsError(f"Extensions value must fit in 8 bytes, not {self.value:#x}")

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Extensions:
        """The extensions in 8 reserved bytes, as they appear in a handshake.

        >>> Extensions.from_bytes(b"\\x00" * 7 + b"\\x01")
        Extensions(0x0000000000000001: DHT)

        Raises:
            ExtensionsError: ``data`` is not exactly 8 bytes long.
        """
        raw = bytes(data)
        if len(raw) != _SIZE:
            raise ExtensionsError(f"reserved bytes must be {_SIZE} bytes long, not {len(raw)}")
        return cls(int.from_bytes(raw, "big"))

    @classmethod
    def from_hex(cls, text: str) -> Extensions:
        """The extensions written as 16 hex digits (as logs and INTEROP.md show them).

        >>> Extensions.from_hex("0000000000100004")
        Extensions(0x0000000000100004: EXTENSION_PROTOCOL|FAST)

        Raises:
            ExtensionsError: ``text`` is not 16 hex digits.
        """
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ExtensionsError(f"reserved bytes are 16 hex digits, not {text[:40]!r}") from None
        return cls.from_bytes(raw)

    def to_bytes(self) -> bytes:
        """The 8 reserved bytes for a handshake."""
        return self.value.to_bytes(_SIZE, "big")

    def hex(self) -> str:
        """The 8 bytes as 16 lowercase hex digits."""
        return self.to_bytes().hex()

    @property
    def name(self) -> str | None:
        """The flag's name if exactly one named bit (and nothing else) is set, else None."""
        return _NAMES.get(self.value)

    @property
    def unknown(self) -> Extensions:
        """The bits set here that have no name in this library."""
        return Extensions(self.value & ~_KNOWN_BITS)

    def __iter__(self) -> Iterator[Extensions]:
        """The named flags that are set, from the most significant bit down."""
        for bit, flag in _FLAGS:
            if self.value & bit:
                yield flag

    def __contains__(self, other: object) -> bool:
        """Whether every bit of ``other`` is set here (``Extensions.DHT in theirs``)."""
        if not isinstance(other, Extensions):
            return False
        return other.value & self.value == other.value

    def __bool__(self) -> bool:
        """Whether any bit is set."""
        return self.value != 0

    def __or__(self, other: Extensions) -> Extensions:
        """The bits set in either."""
        if not isinstance(other, Extensions):
            return NotImplemented
        return Extensions(self.value | other.value)

    def __and__(self, other: Extensions) -> Extensions:
        """The bits set in both: what two peers have in common."""
        if not isinstance(other, Extensions):
            return NotImplemented
        return Extensions(self.value & other.value)

    def __xor__(self, other: Extensions) -> Extensions:
        """The bits set in exactly one."""
        if not isinstance(other, Extensions):
            return NotImplemented
        return Extensions(self.value ^ other.value)

    def __sub__(self, other: Extensions) -> Extensions:
        """The bits set here but not in ``other``."""
        if not isinstance(other, Extensions):
            return NotImplemented
        return Extensions(self.value & ~other.value)

    def __invert__(self) -> Extensions:
        """Every bit of the 8 bytes that is not set here."""
        return Extensions(~self.value & _MASK)

    def __repr__(self) -> str:
        """``Extensions(0x<16 hex digits>: NAME|NAME|0x<unknown bits>)``."""
        parts = [flag.name or "" for flag in self]
        if self.unknown:
            parts.append(f"{self.unknown.value:#x}")
        return f"Extensions(0x{self.hex()}: {'|'.join(parts) or 'none'})"


_NAMED = {
    "AZUREUS_MESSAGING": _bit(0, 0x80),
    "LOCATION_AWARE": _bit(2, 0x08),
    "EXTENSION_PROTOCOL": _bit(5, 0x10),
    "V2_UPGRADE": _bit(7, 0x10),
    "NAT_TRAVERSAL": _bit(7, 0x08),
    "FAST": _bit(7, 0x04),
    "XBT_PEX": _bit(7, 0x02),
    "DHT": _bit(7, 0x01),
}
_NAMES = {bit: name for name, bit in _NAMED.items()}
_KNOWN_BITS = sum(_NAMED.values())
for _name, _value in _NAMED.items():
    setattr(Extensions, _name, Extensions(_value))
Extensions.NONE = Extensions(0)
_FLAGS: tuple[tuple[int, Extensions], ...] = tuple(
    (bit, Extensions(bit)) for bit in sorted(_NAMED.values(), reverse=True)
)
