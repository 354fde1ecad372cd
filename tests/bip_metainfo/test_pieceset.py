"""PieceSet: a peer's pieces as a bitfield."""

from __future__ import annotations

import doctest
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_metainfo import _pieceset
from bip_metainfo._pieceset import MAX_PIECES, PieceSet


def test_doctests() -> None:
    assert doctest.testmod(_pieceset).failed == 0


@pytest.mark.parametrize("num_pieces", [0, 1, 7, 8, 9, 16, 17, 1000])
def test_full_and_empty(num_pieces: int) -> None:
    full = PieceSet.full(num_pieces)
    assert len(full) == full.count == num_pieces
    assert full.is_seed == (num_pieces > 0)
    assert list(full) == list(range(num_pieces))
    assert PieceSet.from_bitfield(full.to_bitfield(), num_pieces) == full
    full.clear()
    assert full.is_empty
    assert not full.is_seed
    assert full == PieceSet(num_pieces)
    assert len(PieceSet(num_pieces).to_bitfield()) == (num_pieces + 7) // 8


def test_add_discard_contains() -> None:
    pieces = PieceSet(12, [3])
    pieces.add(3)
    pieces.add(11)
    assert pieces.count == 2
    assert 3 in pieces
    assert 11 in pieces
    assert 4 not in pieces
    pieces.discard(3)
    pieces.discard(3)
    assert list(pieces) == [11]
    assert repr(pieces) == "PieceSet(1/12)"
    other = pieces.copy()
    other.add(0)
    assert 0 not in pieces
    assert other != pieces
    assert (pieces == "x") is False


@pytest.mark.parametrize("probe", [-1, 12, 2**40, "1", 1.0, None, True])
def test_contains_never_raises(probe: Any) -> None:
    assert probe not in PieceSet.full(12)


@pytest.mark.parametrize(
    ("bits", "num_pieces", "message"),
    [
        (b"\x00", 9, "is 2 bytes, not 1"),
        (b"\x00\x00\x00", 9, "is 2 bytes, not 3"),
        (b"\x00\x40", 9, "spare bits"),
        (b"\x01", 7, "spare bits"),
        (b"", 1, "is 1 bytes, not 0"),
    ],
)
def test_bad_bitfields(bits: bytes, num_pieces: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PieceSet.from_bitfield(bits, num_pieces)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: PieceSet(-1), ValueError),
        (lambda: PieceSet(MAX_PIECES + 1), ValueError),
        (lambda: PieceSet(1.5), TypeError),  # type: ignore[arg-type]
        (lambda: PieceSet(True), TypeError),
        (lambda: PieceSet(3).add(3), ValueError),
        (lambda: PieceSet(3).add(-1), ValueError),
        (lambda: PieceSet(3).discard(3), ValueError),
        (lambda: PieceSet(3).add("1"), TypeError),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments(call: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        call()


def test_unhashable() -> None:
    with pytest.raises(TypeError):
        hash(PieceSet(1))


@given(
    st.integers(min_value=0, max_value=300).flatmap(
        lambda n: st.tuples(st.just(n), st.sets(st.integers(min_value=0, max_value=max(n - 1, 0))))
    )
)
def test_round_trip(case: tuple[int, set[int]]) -> None:
    num_pieces, indices = case
    indices = {i for i in indices if i < num_pieces}
    pieces = PieceSet(num_pieces, indices)
    assert set(pieces) == indices
    assert len(pieces) == len(indices)
    decoded = PieceSet.from_bitfield(pieces.to_bitfield(), num_pieces)
    assert decoded == pieces
    assert decoded.count == len(indices)
    assert decoded.is_seed == (num_pieces > 0 and len(indices) == num_pieces)


@given(st.binary(max_size=40), st.integers(min_value=0, max_value=330))
def test_arbitrary_bitfields_give_value_error_or_a_set(bits: bytes, num_pieces: int) -> None:
    try:
        pieces = PieceSet.from_bitfield(bits, num_pieces)
    except ValueError:
        return
    assert pieces.to_bitfield() == bits
    assert all(index < num_pieces for index in pieces)
