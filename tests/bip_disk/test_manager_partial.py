"""PartialPiece: blocks in any order, overlapping or repeated, with pad ranges; a model check."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from bip_disk._torrent import PartialPiece

SIZE = 200


@st.composite
def pieces(draw: st.DrawFn) -> tuple[tuple[tuple[int, int], ...], list[tuple[int, bytes]]]:
    """Pad ranges, and blocks (begin, data) inside the piece."""
    cuts = sorted(draw(st.sets(st.integers(1, SIZE - 1), max_size=6)))
    bounds = [0, *cuts, SIZE]
    ranges = list(itertools.pairwise(bounds))
    pads = tuple(r for i, r in enumerate(ranges) if i % 2 == 1 and draw(st.booleans()))
    blocks = []
    for _ in range(draw(st.integers(0, 25))):
        begin = draw(st.integers(0, SIZE - 1))
        length = draw(st.integers(1, SIZE - begin))
        blocks.append((begin, draw(st.binary(min_size=length, max_size=length))))
    return pads, blocks


@given(pieces())
def test_partial_piece_matches_a_byte_model(
    case: tuple[tuple[tuple[int, int], ...], list[tuple[int, bytes]]],
) -> None:
    pads, blocks = case
    piece = PartialPiece(SIZE, pads)
    is_pad = [any(start <= i < end for start, end in pads) for i in range(SIZE)]
    covered = list(is_pad)
    expected = bytearray(SIZE)
    for begin, data in blocks:
        before = sum(covered)
        for offset, byte in enumerate(data):
            position = begin + offset
            covered[position] = True
            if not is_pad[position]:
                expected[position] = byte  # later blocks win; pads stay zero
        assert piece.add(begin, data) == sum(covered) - before
        assert piece.received == sum(covered)
        assert piece.complete == all(covered)
    assert piece.buffer == expected


def test_a_recycled_view_and_a_typed_memoryview_are_accepted() -> None:
    piece = PartialPiece(8, ((6, 8),))
    piece.add(0, memoryview(bytearray(b"abcd")))
    words = memoryview(bytearray(b"efgh")).cast("H")  # two-byte items: copied as bytes
    assert piece.add(4, words) == 2  # bytes 6 and 7 are pad: already counted
    assert piece.complete
    assert piece.buffer == b"abcdef\x00\x00"
