"""BEP 52 hash requests answered from a piece layer, and their replies checked."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bip_metainfo._merkle_proofs as proofs_module
from bip_metainfo._merkle import BLOCK_SIZE, MerkleTree, pad_hash, piece_layer
from bip_metainfo._merkle_proofs import (
    HashRequestError,
    PieceLayerTree,
    check_hash_request,
    full_proof_layers,
    hash_reply_count,
    tree_depth,
    verify_hashes,
)


def _file(length: int, seed: int = 1) -> bytes:
    # Distinct blocks, so that swapping two hashes changes the root.
    return bytes((seed + i // 997) % 251 for i in range(length))


def _tree(length: int, piece_length: int) -> tuple[MerkleTree, PieceLayerTree]:
    full = MerkleTree.from_data(_file(length))
    layer = full.piece_layer(piece_length)
    return full, PieceLayerTree(layer, piece_length=piece_length, file_length=length)


def test_doctests() -> None:
    assert doctest.testmod(proofs_module).failed == 0


def test_root_matches_the_full_tree() -> None:
    full, tree = _tree(7 * BLOCK_SIZE + 5, 2 * BLOCK_SIZE)
    assert tree.root == full.root
    assert (tree.depth, tree.piece_level, tree.file_length) == (3, 1, 7 * BLOCK_SIZE + 5)


@pytest.mark.parametrize(
    ("piece_blocks", "blocks"),
    # Files larger than one piece; some of exactly a power of two pieces (2, 4, 8, 16).
    [(p, b) for p in (1, 2, 4) for b in (2, 3, 4, 5, 8, 9, 16, 17) if b > p],
)
def test_every_answerable_request_equals_the_full_tree(piece_blocks: int, blocks: int) -> None:
    length = blocks * BLOCK_SIZE - 100
    piece_length = piece_blocks * BLOCK_SIZE
    full, tree = _tree(length, piece_length)
    depth = full.depth
    for base in range(depth):
        width = 1 << (depth - base)
        count = 1
        while count <= width:
            for index in range(0, width, count):
                for proof in range(depth - base):
                    reply = tree.hashes(base, index, count, proof)
                    if base < tree.piece_level:
                        assert reply is None
                        continue
                    assert reply is not None
                    if count >= 2:
                        assert reply == b"".join(full.hashes(base, index, count, proof))
                    assert len(reply) == 32 * hash_reply_count(count, proof)
                    if proof == depth - base - 1:
                        assert verify_hashes(
                            reply,
                            pieces_root=full.root,
                            file_length=length,
                            base_layer=base,
                            index=index,
                            length=count,
                            proof_layers=proof,
                        )
            count *= 2


def test_padding_past_the_end_is_the_pad_of_the_layer() -> None:
    piece_length = 2 * BLOCK_SIZE
    _, tree = _tree(5 * BLOCK_SIZE, piece_length)  # 3 pieces, piece layer width 4
    reply = tree.hashes(1, 2, 2, 0)
    assert reply is not None
    assert reply[32:64] == pad_hash(2)


def test_length_one_as_libtorrent_asks_for_a_last_lone_piece() -> None:
    length = 3 * BLOCK_SIZE
    full, tree = _tree(length, BLOCK_SIZE)
    reply = tree.hashes(0, 2, 1, 1)
    assert reply is not None
    assert len(reply) == 32 * 3  # the hash, its sibling (padding), and the other half
    assert verify_hashes(
        reply,
        pieces_root=full.root,
        file_length=length,
        base_layer=0,
        index=2,
        length=1,
        proof_layers=1,
    )


@pytest.mark.parametrize(
    ("base", "index", "length", "proof", "match"),
    [
        (3, 0, 2, 0, "not below the root"),
        (0, 1, 2, 0, "multiple"),
        (0, 0, 3, 0, "power of two"),
        (0, 0, 0, 0, "length"),
        (0, 6, 4, 0, "multiple"),
        (0, 8, 2, 0, "pass the end"),
        (1, 0, 8, 0, "pass the end"),
        (0, 0, 2, 3, "proof layers"),
        (-1, 0, 2, 0, "base layer"),
        (0, -2, 2, 0, "index"),
        (0, 0, 2, -1, "proof layers"),
        (0, 0, 2**33, 0, "length"),
        (True, 0, 2, 0, "base layer"),
    ],
)
def test_bad_geometry_is_our_error(
    base: int, index: int, length: int, proof: int, match: str
) -> None:
    _, tree = _tree(5 * BLOCK_SIZE, BLOCK_SIZE)  # depth 3
    with pytest.raises(HashRequestError, match=match):
        tree.hashes(base, index, length, proof)
    with pytest.raises(HashRequestError):
        check_hash_request(5 * BLOCK_SIZE, base, index, length, proof)


def test_a_one_block_file_has_no_request() -> None:
    with pytest.raises(HashRequestError):
        check_hash_request(100, 0, 0, 1, 0)
    assert tree_depth(100) == 0
    with pytest.raises(ValueError, match="positive"):
        tree_depth(0)


def test_tree_arguments() -> None:
    assert piece_layer([], BLOCK_SIZE) == b""
    with pytest.raises(ValueError, match="one piece"):
        PieceLayerTree(b"", piece_length=4 * BLOCK_SIZE, file_length=3 * BLOCK_SIZE)
    with pytest.raises(ValueError, match="3 hashes"):
        PieceLayerTree(bytes(64), piece_length=BLOCK_SIZE, file_length=3 * BLOCK_SIZE)
    with pytest.raises(ValueError, match="piece length"):
        PieceLayerTree(bytes(96), piece_length=1000, file_length=3000)


def test_verify_refuses_a_proof_that_stops_below_the_root() -> None:
    full, tree = _tree(5 * BLOCK_SIZE, BLOCK_SIZE)
    reply = tree.hashes(0, 0, 2, 1)
    assert reply is not None
    with pytest.raises(HashRequestError, match="below the root"):
        verify_hashes(
            reply,
            pieces_root=full.root,
            file_length=5 * BLOCK_SIZE,
            base_layer=0,
            index=0,
            length=2,
            proof_layers=1,
        )


def test_verify_refuses_wrong_sizes() -> None:
    full, tree = _tree(5 * BLOCK_SIZE, BLOCK_SIZE)
    request = {"base_layer": 0, "index": 0, "length": 2, "proof_layers": 2}
    reply = tree.hashes(**request)
    assert reply is not None
    assert verify_hashes(reply, pieces_root=full.root, file_length=5 * BLOCK_SIZE, **request)
    for bad in (reply[:-32], reply + bytes(32), b"", reply[:-1]):
        assert not verify_hashes(bad, pieces_root=full.root, file_length=5 * BLOCK_SIZE, **request)
    assert not verify_hashes(
        reply, pieces_root=full.root[:31], file_length=5 * BLOCK_SIZE, **request
    )


def test_full_proof_layers() -> None:
    assert full_proof_layers(5 * BLOCK_SIZE, 0, 2) == 2
    assert full_proof_layers(1000 * BLOCK_SIZE, 3, 64) == 10 - 3 - 1
    with pytest.raises(HashRequestError):
        full_proof_layers(5 * BLOCK_SIZE, 3, 2)


_PIECE_LENGTHS = st.sampled_from([BLOCK_SIZE, 2 * BLOCK_SIZE, 4 * BLOCK_SIZE])


@st.composite
def _requests(draw: st.DrawFn) -> tuple[int, int, int, int, int, int]:
    piece_length = draw(_PIECE_LENGTHS)
    # Lengths across piece and block boundaries, from two pieces plus a byte to ~40 blocks.
    length = draw(st.integers(piece_length + 1, 40 * BLOCK_SIZE))
    depth = tree_depth(length)
    piece_level = piece_length.bit_length() - BLOCK_SIZE.bit_length()
    base = draw(st.integers(piece_level, depth - 1))
    width = 1 << (depth - base)
    count = 1 << draw(st.integers(0, width.bit_length() - 1))
    index = draw(st.integers(0, width // count - 1)) * count
    return piece_length, length, base, index, count, draw(st.integers(0, 3))


@settings(max_examples=150, deadline=None)
@given(_requests(), st.data())
def test_every_valid_reply_verifies_and_no_flipped_byte_does(
    request: tuple[int, int, int, int, int, int], data: st.DataObject
) -> None:
    piece_length, length, base, index, count, seed = request
    full = MerkleTree.from_data(_file(length, seed))
    tree = PieceLayerTree(
        full.piece_layer(piece_length), piece_length=piece_length, file_length=length
    )
    proof = full_proof_layers(length, base, count)
    reply = tree.hashes(base, index, count, proof)
    assert reply is not None
    fields = {"base_layer": base, "index": index, "length": count, "proof_layers": proof}
    assert verify_hashes(reply, pieces_root=full.root, file_length=length, **fields)
    position = data.draw(st.integers(0, len(reply) - 1))
    bit = 1 << data.draw(st.integers(0, 7))
    flipped = bytearray(reply)
    flipped[position] ^= bit
    assert not verify_hashes(bytes(flipped), pieces_root=full.root, file_length=length, **fields)
