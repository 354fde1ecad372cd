"""PieceSet: a set of pieces (which a peer has, which we have), stored as the wire's bitfield.

BEP 3 sends availability as a bitfield: one bit per piece, the high bit of the
first byte is piece 0, and the spare bits after the last piece are zero. A
:class:`PieceSet` keeps exactly those bytes (so sending ours costs one copy) and
a running count (so ``is_seed`` is O(1) on every ``have``).

The bitfield codec helpers live here: :meth:`PieceSet.from_bitfield` checks a
received bitfield's length and spare bits, :meth:`PieceSet.to_bitfield` produces
one to send.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ._errors import MetainfoBaseError

__all__ = ["MAX_PIECES", "PieceSet"]

MAX_PIECES = 0xFFFFFFFF + 1
"""Piece indices are uint32 on the wire, so no torrent has more pieces than this."""


def _check_num_pieces(num_pieces: int) -> None:
    if isinstance(num_pieces, bool) or not isinstance(num_pieces, int):
        raise TypeError(f"num_pieces must be an int, not {num_pieces!r}")
    if not 0 <= num_pieces <= MAX_PIECES:
        raise ValueError(f"num_pieces must be between 0 and 2**32, not {num_pieces}")


class PieceSet:
    """A mutable set of piece indices below ``num_pieces``, backed by a bitfield.

    >>> pieces = PieceSet(10)
    >>> pieces.add(0); pieces.add(9)
    >>> 9 in pieces, 5 in pieces, len(pieces)
    (True, False, 2)
    >>> pieces.to_bitfield().hex()
    '8040'
    >>> list(PieceSet.from_bitfield(bytes.fromhex("8040"), 10))
    [0, 9]
    >>> PieceSet.full(10).is_seed
    True

    ``in`` accepts any object and answers False for anything that is not a valid
    index (a negative number, one past the end, a string), so it never raises.
    """

    __slots__ = ("_bits", "_count", "_num_pieces")

    def __init__(self, num_pieces: int, pieces: Iterable[int] = ()) -> None:
        """An empty set of ``num_pieces`` pieces, then ``pieces`` added.

        Raises:
            ValueError: ``num_pieces`` is negative or above 2**32, or a piece is out of range.
            TypeError: ``num_pieces`` or a piece is not an int.
        """
        _check_num_pieces(num_pieces)
        self._num_pieces = num_pieces
        self._bits = bytearray((num_pieces + 7) // 8)
        self._count = 0
        for index in pieces:
            self.add(index)

    @classmethod
    def full(cls, num_pieces: int) -> PieceSet:
        """Every piece (a seed's set, or what a ``have all`` says)."""
        pieces = cls(num_pieces)
        pieces.set_all()
        return pieces

    @classmethod
    def from_bitfield(cls, bits: bytes | bytearray | memoryview, num_pieces: int) -> PieceSet:
        """The pieces a received bitfield names.

        Raises:
            MetainfoBaseError: ``bits`` is not ``ceil(num_pieces / 8)`` bytes, or a spare
                bit after the last piece is set (a :class:`ValueError` too).
            ValueError, TypeError: ``num_pieces`` is not a piece count (see the constructor).
        """
        _check_num_pieces(num_pieces)
        expected = (num_pieces + 7) // 8
        # The bits come from a peer: what is wrong with them is bad input, one of ours.
        if len(bits) != expected:
            raise MetainfoBaseError(
                f"a bitfield for {num_pieces} pieces is {expected} bytes, not {len(bits)}"
            )
        spare = expected * 8 - num_pieces
        if spare and bits[-1] & ((1 << spare) - 1):
            raise MetainfoBaseError(f"a bitfield for {num_pieces} pieces has spare bits set")
        pieces = cls(num_pieces)
        pieces._bits[:] = bits
        # One big int's bit_count() counts the whole bitfield in C, no loop per byte.
        pieces._count = int.from_bytes(pieces._bits, "big").bit_count()
        return pieces

    @property
    def num_pieces(self) -> int:
        """How many pieces the torrent has (the size of the universe, not of the set)."""
        return self._num_pieces

    @property
    def count(self) -> int:
        """How many pieces are in the set (same as ``len()``)."""
        return self._count

    @property
    def is_seed(self) -> bool:
        """Whether every piece is in the set (and the torrent has any pieces)."""
        return self._num_pieces > 0 and self._count == self._num_pieces

    @property
    def is_empty(self) -> bool:
        """Whether no piece is in the set."""
        return self._count == 0

    def _check_index(self, index: int) -> None:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"a piece index must be an int, not {index!r}")
        if not 0 <= index < self._num_pieces:
            raise ValueError(f"piece {index} out of range for {self._num_pieces} pieces")

    def add(self, index: int) -> None:
        """Put piece ``index`` in the set (no-op if it is there).

        Raises:
            ValueError: ``index`` is not below ``num_pieces``.
        """
        self._check_index(index)
        mask = 0x80 >> (index & 7)
        byte = self._bits[index >> 3]
        if not byte & mask:
            self._bits[index >> 3] = byte | mask
            self._count += 1

    def discard(self, index: int) -> None:
        """Take piece ``index`` out of the set (no-op if it is not there).

        Raises:
            ValueError: ``index`` is not below ``num_pieces``.
        """
        self._check_index(index)
        mask = 0x80 >> (index & 7)
        byte = self._bits[index >> 3]
        if byte & mask:
            self._bits[index >> 3] = byte & ~mask
            self._count -= 1

    def set_all(self) -> None:
        """Put every piece in the set (spare bits stay zero)."""
        full, rest = divmod(self._num_pieces, 8)
        self._bits[:full] = b"\xff" * full
        if rest:
            self._bits[full] = (0xFF << (8 - rest)) & 0xFF
        self._count = self._num_pieces

    def clear(self) -> None:
        """Empty the set."""
        self._bits[:] = bytes(len(self._bits))
        self._count = 0

    def to_bitfield(self) -> bytes:
        """The set as the payload of a bitfield message."""
        return bytes(self._bits)

    def copy(self) -> PieceSet:
        """An independent copy."""
        other = PieceSet(0)
        other._num_pieces = self._num_pieces
        other._bits = bytearray(self._bits)
        other._count = self._count
        return other

    def __contains__(self, index: object) -> bool:
        """Whether ``index`` is a piece in the set (False for anything else)."""
        if type(index) is not int or not 0 <= index < self._num_pieces:
            return False
        return bool(self._bits[index >> 3] & (0x80 >> (index & 7)))

    def __len__(self) -> int:
        """How many pieces are in the set."""
        return self._count

    def __iter__(self) -> Iterator[int]:
        """The pieces in the set, in increasing order."""
        for byte_index, byte in enumerate(self._bits):
            if not byte:
                continue
            base = byte_index << 3
            for bit in range(8):
                if byte & (0x80 >> bit):
                    yield base + bit

    def __eq__(self, other: object) -> bool:
        """Equal to another PieceSet of the same size holding the same pieces."""
        if not isinstance(other, PieceSet):
            return NotImplemented
        return self._num_pieces == other._num_pieces and self._bits == other._bits

    __hash__ = None  # type: ignore[assignment]  # mutable, like set

    def __repr__(self) -> str:
        """``PieceSet(<count>/<num_pieces>)``."""
        return f"PieceSet({self._count}/{self._num_pieces})"
