"""BEP 52 merkle trees: the public vectors in ../shared/vectors/, then properties."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_bencode import decode_prefix
from bip_metainfo._merkle import (
    BLOCK_SIZE,
    HASH_SIZE,
    MerkleFileHasher,
    MerkleTree,
    block_hashes,
    merkle_root,
    pad_hash,
    piece_hash,
    piece_layer,
    pieces_root,
    pieces_root_from_layer,
    proof_uncle_count,
    root_from_proof,
    verify_block,
    verify_piece,
    verify_piece_layer,
)

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"
# A missing file fails at collection: the vectors are part of the proof, never skipped.
MERKLE: dict[str, Any] = json.loads((VECTORS / "bep52" / "merkle_vectors.json").read_text())
SUMMARY: dict[str, Any] = json.loads((VECTORS / "bep52" / "v2_torrents_summary.json").read_text())
INDEX_TABLES: dict[str, Any] = MERKLE["libtorrent_tree_index_vectors"]
ROOTS: dict[str, Any] = MERKLE["libtorrent_root_vectors"]
REAL_FILES = [
    (torrent["torrent"], torrent["all_layers_valid_expected"], file)
    for torrent in MERKLE["real_torrent_piece_layers"]
    for file in torrent["files"]
]
PIECE_LENGTHS = [BLOCK_SIZE << k for k in range(5)]  # 16 KiB .. 256 KiB
KiB = 1024


def h2(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(left + right).digest()


def _torrent(path: str) -> dict[bytes, Any]:
    # One libtorrent test torrent has a trailing byte after the top-level value.
    value, _ = decode_prefix((VECTORS / path).read_bytes(), lenient=True)
    assert isinstance(value, dict)
    return value


def _pairs(text: str) -> list[tuple[int, ...]]:
    """'up (2,1),(4,2)' -> [(2, 1), (4, 2)]."""
    return [tuple(int(n) for n in group.split(",")) for group in re.findall(r"\(([\d,]+)\)", text)]


def _data(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


# -- the vector file -------------------------------------------------------------------------


def test_the_vector_files_are_whole() -> None:
    assert len(MERKLE["real_torrent_piece_layers"]) == 7
    assert len(REAL_FILES) == 18
    assert sum(not valid for _, valid, _ in REAL_FILES) == 4
    assert len(ROOTS["cases"]) == 5
    assert len(MERKLE["zero_content_files"]) == 2
    assert len(SUMMARY["torrents"]) >= 25


# -- libtorrent's tree index arithmetic, against our (level, index) addressing --------------

# 300 distinct leaves: a tree of depth 9 (512 leaves), big enough for every table.
TREE = MerkleTree([hashlib.sha256(n.to_bytes(2, "big")).digest() for n in range(300)])


def _flat(tree: MerkleTree) -> list[bytes]:
    """The tree in libtorrent's flat layout: root at 0, children of n at 2n+1 and 2n+2."""
    depth = tree.depth
    return [tree.node(depth - layer, i) for layer in range(depth + 1) for i in range(1 << layer)]


FLAT = _flat(TREE)


def _flat_position(flat_index: int) -> tuple[int, int]:
    """(our level, index within it) of a flat index, by libtorrent's layer tables."""
    layer = INDEX_TABLES["merkle_get_layer"].get(str(flat_index))
    if layer is None:  # past the table: find the layer from merkle_layer_start
        starts = {int(k): v for k, v in INDEX_TABLES["merkle_layer_start"].items()}
        layer = max(k for k, start in starts.items() if start <= flat_index)
        return TREE.depth - layer, flat_index - starts[layer]
    return TREE.depth - layer, INDEX_TABLES["merkle_get_layer_offset"][str(flat_index)]


def test_tree_is_libtorrents_flat_layout() -> None:
    assert TREE.depth == 9
    assert len(FLAT) == INDEX_TABLES["merkle_layer_start"]["9"] + 512
    assert FLAT[0] == TREE.root
    for parent in range(len(FLAT) // 2):
        assert FLAT[parent] == h2(FLAT[2 * parent + 1], FLAT[2 * parent + 2])


@pytest.mark.parametrize("name", ["merkle_get_layer", "merkle_get_layer_offset"])
def test_index_tables_layer_and_offset(name: str) -> None:
    for flat_index in INDEX_TABLES[name]:
        level, index = _flat_position(int(flat_index))
        assert FLAT[int(flat_index)] == TREE.node(level, index)


def test_index_table_to_flat_index_and_layer_start() -> None:
    for key, flat_index in INDEX_TABLES["merkle_to_flat_index(layer,offset)"].items():
        ((layer, offset),) = _pairs(key)
        assert FLAT[flat_index] == TREE.node(TREE.depth - layer, offset)
    for layer, start in INDEX_TABLES["merkle_layer_start"].items():
        assert FLAT[start] == TREE.node(TREE.depth - int(layer), 0)


def test_index_table_parent_and_first_child() -> None:
    for child, parent in INDEX_TABLES["merkle_get_parent"].items():
        level, index = _flat_position(int(child))
        assert _flat_position(parent) == (level + 1, index >> 1)
        first = TREE.node(level, index & ~1)
        assert FLAT[parent] == h2(first, TREE.node(level, index | 1))
    for node, child in INDEX_TABLES["merkle_get_first_child"].items():
        level, index = _flat_position(int(node))
        assert _flat_position(child) == (level - 1, 2 * index)
    for key, child in INDEX_TABLES["merkle_get_first_child_depth"].items():
        ((node, depth),) = _pairs(key)
        level, index = _flat_position(node)
        assert FLAT[child] == TREE.node(level - depth, index << depth)


def test_index_table_sibling_is_the_first_uncle() -> None:
    for node, sibling in INDEX_TABLES["merkle_get_sibling"].items():
        level, index = _flat_position(int(node))
        assert TREE.proof(level, index, 1) == [FLAT[sibling]]
        assert TREE.proof(level, index)[0] == FLAT[sibling]


def test_index_tables_sizes() -> None:
    leaf = bytes(range(32))
    for blocks, leaves in INDEX_TABLES["merkle_num_leafs"].items():
        assert MerkleTree([leaf] * int(blocks)).num_leaves == leaves
    for leaves, layers in INDEX_TABLES["merkle_num_layers"].items():
        if int(leaves) == 0:
            with pytest.raises(ValueError, match="empty"):
                MerkleTree([])
            continue
        assert MerkleTree([leaf] * int(leaves)).depth == layers
    for leaves, nodes in INDEX_TABLES["merkle_num_nodes"].items():
        assert len(_flat(MerkleTree([leaf] * int(leaves)))) == nodes
    for leaves, first in INDEX_TABLES["merkle_first_leaf"].items():
        tree = MerkleTree([hashlib.sha256(bytes([n])).digest() for n in range(int(leaves))])
        assert _flat(tree)[first:] == [tree.node(0, i) for i in range(int(leaves))]


# -- libtorrent's roots and pads -------------------------------------------------------------

LEAVES = {
    name: bytes(32) if name == "o" else (char * 32).encode()
    for name, char in {
        "a": "1",
        "b": "b",
        "c": "c",
        "d": "d",
        "e": "e",
        "f": "f",
        "g": "g",
        "h": "i",
        "o": "",
    }.items()
}


def test_leaf_definitions_are_what_we_build() -> None:
    for name, definition in ROOTS["leaf_definitions"].items():
        if name == "o":
            assert definition == "32 zero bytes"
        else:
            assert definition.startswith(f"ASCII '{LEAVES[name][:1].decode()}'*32")


@pytest.mark.parametrize("case", ROOTS["cases"], ids=[c["leaves"] for c in ROOTS["cases"]])
def test_libtorrent_merkle_root(case: dict[str, Any]) -> None:
    names, _, capacity = case["leaves"].partition(" with ")
    hashes = [LEAVES[name] for name in names.split(",")]
    leaves = int(capacity.split("-")[0]) if capacity else None
    pad = LEAVES[case.get("pad", "o")]
    assert merkle_root(hashes, leaves=leaves, pad=pad).hex() == case["expected_hex_derived"]


def test_libtorrent_root_relations() -> None:
    a, b, c, d, e, f, g, h, o = (LEAVES[n] for n in "abcdefgho")
    ad = h2(h2(a, b), h2(c, d))
    assert merkle_root([a, b, c, d, e, f, g, h]) == h2(ad, h2(h2(e, f), h2(g, h)))
    assert merkle_root([a, b, c, d, e, f]) == h2(ad, h2(h2(e, f), h2(o, o)))
    assert merkle_root([a, b, c], leaves=8) == h2(h2(h2(a, b), h2(c, o)), h2(h2(o, o), h2(o, o)))
    assert merkle_root([a, b, c], leaves=8, pad=o) == merkle_root([a, b, c, o, o, o, o, o])
    # A piece layer pads with the root of an all-zero piece, not with zeros.
    assert merkle_root([a, b, c], pad=pad_hash(4)) == h2(h2(a, b), h2(c, pad_hash(4)))


@pytest.mark.parametrize("relation", list(ROOTS["merkle_pad(blocks, pieces)"]))
def test_libtorrent_merkle_pad(relation: str) -> None:
    expected = ROOTS["merkle_pad(blocks, pieces)"][relation]
    pairs = _pairs(relation)
    assert pairs
    for blocks, pieces in pairs:
        assert pad_hash(blocks // pieces).hex() == expected


# -- whole files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vector",
    MERKLE["zero_content_files"],
    ids=[v["description"][:8] for v in MERKLE["zero_content_files"]],
)
def test_all_zero_files(vector: dict[str, Any]) -> None:
    data = bytes(vector["length"])
    assert pieces_root(data) is not None
    assert pieces_root(data).hex() == vector["pieces_root"]  # type: ignore[union-attr]
    hasher = MerkleFileHasher()
    hasher.update(data)
    assert hasher.root == bytes.fromhex(vector["pieces_root"])
    if "v1_piece_sha1_64KiB" in vector:  # the content really is zeros
        assert hashlib.sha1(data).hexdigest() == vector["v1_piece_sha1_64KiB"]


def test_all_zero_1mib_file_rebuilds_the_torrents_piece_layer() -> None:
    """test1MB of v2_only.torrent: our piece layer is byte for byte the torrent's."""
    data = bytes(1 << 20)
    root = bytes.fromhex("515ea9181744b817744ded9d2e8e9dc6a8450c0b0c52e24b5077f302ffbd9008")
    layers = _torrent("torrents/libtorrent/v2_only.torrent")[b"piece layers"]
    assert list(layers) == [root]
    assert piece_layer(block_hashes(data), 65536) == layers[root]
    assert MerkleTree.from_data(data).piece_layer(65536) == layers[root]
    hasher = MerkleFileHasher(65536)
    hasher.update(data)
    assert (hasher.root, hasher.piece_layer()) == (root, layers[root])


def test_derived_pattern_file() -> None:
    vector = MERKLE["derived_pattern_file"]
    data = bytes((i * 31) & 0xFF for i in range(vector["length"]))
    assert [h.hex() for h in block_hashes(data)] == vector["leaf_hashes"]
    assert pieces_root(data) == bytes.fromhex(vector["pieces_root"])
    assert pieces_root(data[:100]) == bytes.fromhex(vector["single_block_root_first_100_bytes"])
    hasher = MerkleFileHasher()
    for i in range(0, len(data), 1000):
        hasher.update(data[i : i + 1000])
    assert hasher.root == bytes.fromhex(vector["pieces_root"])


# -- the piece layers of real torrents -------------------------------------------------------


@pytest.mark.parametrize(
    ("torrent", "valid", "file"),
    REAL_FILES,
    ids=[f"{t.split('/')[-1]}:{f['path']}" for t, _, f in REAL_FILES],
)
def test_real_piece_layer(torrent: str, valid: bool, file: dict[str, Any]) -> None:
    root = bytes.fromhex(file["pieces_root"])
    length, piece_length = file["length"], file["piece_length"]
    layer = _torrent(torrent)[b"piece layers"][root]
    assert -(-len(layer) // HASH_SIZE) == file["num_layer_hashes"]  # one is 513 bytes
    assert pad_hash(piece_length // BLOCK_SIZE).hex() == file["pad_hash_at_piece_layer"]
    assert -(-length // piece_length) == file["expected_num"]
    matches = file["root_from_layer_matches"]
    assert matches is valid or not valid
    assert verify_piece_layer(layer, root, piece_length, length) is matches
    if file["num_layer_hashes"] != file["expected_num"]:
        with pytest.raises(ValueError, match="piece layer"):
            pieces_root_from_layer(layer, piece_length, length)
    else:
        assert (pieces_root_from_layer(layer, piece_length, length) == root) is matches
    if matches:  # any flipped bit breaks it
        for position in (0, len(layer) // 2, len(layer) - 1):
            broken = bytearray(layer)
            broken[position] ^= 0x01
            assert not verify_piece_layer(broken, root, piece_length, length)


def _summary_files(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in entry.get("v2_files") or [] if f["pieces_root"] and f["length"]]


@pytest.mark.parametrize(
    "entry", SUMMARY["torrents"], ids=[t["file"].split("/")[-1] for t in SUMMARY["torrents"]]
)
def test_every_v2_torrents_piece_layers(entry: dict[str, Any]) -> None:
    """Valid torrents: every layer verifies, and only files over a piece have one.

    Torrents libtorrent rejects for their piece layers have a missing or failing one.
    """
    try:
        torrent = _torrent(entry["file"])
    except ValueError:  # not bencoding (an overlong integer): nothing to check here
        assert entry["expect"] == "invalid"
        return
    layers = torrent.get(b"piece layers", {})
    piece_length = entry["piece_length"]
    verdicts = []
    for file in _summary_files(entry):
        root, length = bytes.fromhex(file["pieces_root"]), file["length"]
        try:
            verdict = verify_piece_layer(layers.get(root, b""), root, piece_length, length)
        except ValueError:  # the piece length itself is invalid
            assert entry["libtorrent_error"] == "torrent_missing_piece_length"
            return
        if length <= piece_length:
            assert verdict  # nothing to check: a one-piece file is its own piece hash
            if entry["expect"] == "valid":
                assert root not in layers
        elif entry["expect"] == "valid" and root in layers:
            assert verdict, file["path"]
        verdicts.append(verdict)
    if entry["expect"] == "valid" and not all(verdicts):  # only when layers may be absent
        assert re.match(
            r"(some files )?missing '?piece layers'? is accepted", entry["source_checks"]["note"]
        )
    if entry.get("libtorrent_error") == "torrent_invalid_piece_layer":
        assert not all(verdicts)


def test_real_torrent_layers_seen() -> None:
    """The summary walk above checks dozens of layers (guards against it going vacuous)."""
    checked = 0
    for entry in SUMMARY["torrents"]:
        if entry["expect"] != "valid":
            continue
        layers = _torrent(entry["file"]).get(b"piece layers", {})
        for file in _summary_files(entry):
            root = bytes.fromhex(file["pieces_root"])
            if root in layers and file["length"] > entry["piece_length"]:
                assert verify_piece_layer(layers[root], root, entry["piece_length"], file["length"])
                checked += 1
    assert checked >= 40


# -- BEP 52's own words ----------------------------------------------------------------------


def test_128_kib_pieces_use_the_third_layer_up() -> None:
    tree = MerkleTree.from_data(_data(20 * BLOCK_SIZE + 5, 1))
    assert tree.piece_layer(128 * KiB) == tree.layer(3)
    assert (
        tree.piece_layer(16 * KiB)
        == tree.layer(0)
        == b"".join(block_hashes(_data(20 * BLOCK_SIZE + 5, 1)))
    )


def test_leaves_past_the_end_are_zero_and_the_last_block_is_short() -> None:
    data = b"x" * (BLOCK_SIZE + 1)
    leaves = [hashlib.sha256(data[:BLOCK_SIZE]).digest(), hashlib.sha256(b"x").digest()]
    assert block_hashes(data) == leaves
    assert pieces_root(data) == h2(*leaves)
    data = b"x" * (2 * BLOCK_SIZE + 1)
    leaves = block_hashes(data)
    assert pieces_root(data) == h2(h2(leaves[0], leaves[1]), h2(leaves[2], bytes(32)))


def test_pad_hash_is_the_root_of_zero_leaves() -> None:
    for leaves in (1, 2, 4, 8, 256):
        assert pad_hash(leaves) == merkle_root([bytes(32)] * leaves)
    assert pad_hash(1 << 40) == h2(pad_hash(1 << 39), pad_hash(1 << 39))


def test_small_files_and_the_single_piece_rule() -> None:
    """A file of one piece or less: no layer, and its root pads only to its own blocks."""
    data = _data(BLOCK_SIZE + 10, 2)  # two blocks, in a 64 KiB piece
    root = pieces_root(data)
    assert root is not None
    assert piece_layer(block_hashes(data), 65536) == b""
    assert piece_hash(data, 65536) != root  # the piece hash pads to four leaves ...
    assert piece_hash(data, 32768) == root  # ... the root to two
    assert verify_piece(
        data, 0, pieces_root=root, piece_layer=b"", piece_length=65536, file_length=len(data)
    )
    assert verify_piece_layer(b"", root, 65536, len(data))
    assert verify_piece_layer(root, root, 65536, len(data))  # libtorrent 2.0 ignored [root]
    assert not verify_piece_layer(bytes(32), root, 65536, len(data))
    assert pieces_root_from_layer(root, 65536, len(data)) == root
    # exactly one piece is still one piece; one byte more makes two
    data = _data(65536, 3)
    assert piece_layer(block_hashes(data), 65536) == b""
    assert len(piece_layer(block_hashes(data + b"!"), 65536)) == 2 * HASH_SIZE


def test_empty_file_has_no_root() -> None:
    assert pieces_root(b"") is None
    assert block_hashes(b"") == []
    hasher = MerkleFileHasher()
    hasher.update(b"")
    assert (hasher.root, hasher.piece_layer(), hasher.num_blocks, hasher.length) == (
        None,
        b"",
        0,
        0,
    )
    with pytest.raises(ValueError, match="empty"):
        MerkleTree.from_data(b"")
    with pytest.raises(ValueError, match="empty file"):
        verify_piece_layer(b"", bytes(32), BLOCK_SIZE, 0)


# -- argument checks and untrusted input -----------------------------------------------------

BAD_PIECE_LENGTHS = [0, -16384, 8192, 16385, 3 * BLOCK_SIZE, 2**31 - 1, True, 16384.0]


@pytest.mark.parametrize("bad", BAD_PIECE_LENGTHS)
def test_invalid_piece_length_is_a_value_error(bad: Any) -> None:
    data = bytes(100)
    calls: list[Callable[[], object]] = [
        lambda: piece_layer(block_hashes(data), bad),
        lambda: piece_hash(data, bad),
        lambda: pieces_root_from_layer(bytes(32), bad, 100),
        lambda: verify_piece_layer(bytes(32), bytes(32), bad, 100),
        lambda: verify_piece(
            data, 0, pieces_root=bytes(32), piece_layer=b"", piece_length=bad, file_length=100
        ),
        lambda: MerkleFileHasher(bad),
        lambda: MerkleTree.from_data(data).piece_layer(bad),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="piece length"):
            call()


def test_invalid_arguments() -> None:
    for bad in (0, 3, -2, True, 6):
        with pytest.raises(ValueError, match="power of two"):
            pad_hash(bad)
    with pytest.raises(ValueError, match="at least one"):
        merkle_root([])
    with pytest.raises(ValueError, match="32 bytes"):
        merkle_root([b"short"])
    with pytest.raises(ValueError, match="pad"):
        merkle_root([bytes(32)], pad=b"x")
    for leaves in (1, 3, 0):
        with pytest.raises(ValueError, match="leaves"):
            merkle_root([bytes(32)] * 2, leaves=leaves)
    with pytest.raises(ValueError, match="32 bytes"):
        piece_layer([bytes(31)], BLOCK_SIZE)
    with pytest.raises(ValueError, match="a piece holds"):
        piece_hash(b"", BLOCK_SIZE)
    with pytest.raises(ValueError, match="a piece holds"):
        piece_hash(bytes(BLOCK_SIZE + 1), BLOCK_SIZE)
    for length in (0, -1, 1.5):
        with pytest.raises(ValueError, match="file length"):
            pieces_root_from_layer(bytes(32), BLOCK_SIZE, length)  # type: ignore[arg-type]
    hasher = MerkleFileHasher(65536)
    with pytest.raises(ValueError, match="cannot give"):
        hasher.piece_layer(32768)


def test_pieces_root_from_layer_rejects_wrong_sizes() -> None:
    for size in (0, 31, 33, 64, 96):
        with pytest.raises(ValueError, match="piece layer"):
            pieces_root_from_layer(bytes(size), BLOCK_SIZE, 5 * BLOCK_SIZE)


def test_verify_piece_layer_never_raises_on_bad_bytes() -> None:
    root = bytes(32)
    bad_layers: list[Any] = [None, 3, "abc", [b"x"], {}, b"", bytes(31), bytes(33)]
    for layer in bad_layers:
        assert verify_piece_layer(layer, root, BLOCK_SIZE, 3 * BLOCK_SIZE) is False
    bad_roots: list[Any] = [None, b"", bytes(31), bytes(33), "x" * 32]
    for bad_root in bad_roots:
        assert verify_piece_layer(bytes(96), bad_root, BLOCK_SIZE, 3 * BLOCK_SIZE) is False
    # a huge claimed file does not make us allocate or hash anything
    assert verify_piece_layer(bytes(32), root, BLOCK_SIZE, 1 << 60) is False


@settings(max_examples=200)
@given(layer=st.binary(max_size=200), root=st.binary(max_size=40), length=st.integers(1, 10**7))
def test_verify_piece_layer_on_arbitrary_bytes(layer: bytes, root: bytes, length: int) -> None:
    assert verify_piece_layer(layer, root, 65536, length) in (True, False)


def test_verify_piece_checks() -> None:
    data = _data(3 * BLOCK_SIZE + 7, 4)
    root, layer = pieces_root(data), piece_layer(block_hashes(data), BLOCK_SIZE)
    assert root is not None
    kwargs: dict[str, Any] = {
        "pieces_root": root,
        "piece_layer": layer,
        "piece_length": BLOCK_SIZE,
        "file_length": len(data),
    }
    assert verify_piece(data[3 * BLOCK_SIZE :], 3, **kwargs)
    assert not verify_piece(data[3 * BLOCK_SIZE :] + b"\0", 3, **kwargs)  # too long
    assert not verify_piece(data[: BLOCK_SIZE - 1], 0, **kwargs)  # too short
    assert not verify_piece(data[:BLOCK_SIZE], 1, **kwargs)  # another piece
    assert not verify_piece(data[:BLOCK_SIZE], 0, **{**kwargs, "piece_layer": layer[:-1]})
    assert not verify_piece(data[:BLOCK_SIZE], 0, **{**kwargs, "piece_layer": None})
    for index in (-1, 4, True):
        with pytest.raises(ValueError, match="piece index"):
            verify_piece(data[:BLOCK_SIZE], index, **kwargs)
    single = {**kwargs, "file_length": 7, "piece_layer": b""}
    assert verify_piece(data[:7], 0, **{**single, "pieces_root": pieces_root(data[:7])})
    assert not verify_piece(data[:7], 0, **{**single, "pieces_root": b"short"})


def test_buffers_of_any_kind() -> None:
    data = _data(BLOCK_SIZE * 2 + 8, 5)
    words = array("I", data)
    assert (
        block_hashes(memoryview(words))
        == block_hashes(memoryview(data))
        == block_hashes(bytearray(data))
    )
    hasher = MerkleFileHasher()
    hasher.update(memoryview(words))
    assert hasher.root == pieces_root(data)


def test_hasher_results_do_not_end_the_stream() -> None:
    data = _data(5 * BLOCK_SIZE + 3, 6)
    hasher = MerkleFileHasher(2 * BLOCK_SIZE)
    for i, byte in enumerate(data[: BLOCK_SIZE + 1]):  # one byte at a time, reading as we go
        hasher.update(bytes([byte]))
        if i % 4096 == 0:
            assert hasher.root == pieces_root(data[: i + 1])
    hasher.update(data[BLOCK_SIZE + 1 :])
    assert hasher.root == pieces_root(data)
    assert hasher.piece_layer() == piece_layer(block_hashes(data), 2 * BLOCK_SIZE)
    assert hasher.piece_layer(8 * BLOCK_SIZE) == b""
    assert hasher.piece_length == 2 * BLOCK_SIZE
    assert (hasher.length, hasher.num_blocks) == (len(data), 6)
    fine = MerkleFileHasher()  # reading results must not pin its buffers
    for end in range(BLOCK_SIZE, len(data) + BLOCK_SIZE, BLOCK_SIZE):
        fine.update(data[end - BLOCK_SIZE : end])
        assert fine.root == pieces_root(data[:end])
        assert fine.piece_layer() == piece_layer(block_hashes(data[:end]), BLOCK_SIZE)


# -- proofs: hash requests, hashes, single blocks --------------------------------------------


def test_proof_uncle_count() -> None:
    # BEP 52: the first log2(length) - 1 proof layers are omitted
    assert [proof_uncle_count(2, p) for p in range(4)] == [0, 1, 2, 3]
    assert [proof_uncle_count(8, p) for p in range(6)] == [0, 0, 0, 1, 2, 3]
    for length in (0, 1, 3, 6, True):
        with pytest.raises(ValueError, match="length"):
            proof_uncle_count(length, 1)
    with pytest.raises(ValueError, match="proof layers"):
        proof_uncle_count(2, -1)


def test_hashes_answers_and_libtorrent_style_requests() -> None:
    data = _data(37 * BLOCK_SIZE + 100, 7)  # 38 blocks: 64 leaves, depth 6
    tree = MerkleTree.from_data(data)
    assert (tree.depth, tree.num_blocks) == (6, 38)
    # all the block hashes of the last 64 KiB piece (blocks 36..39, two of them padding)
    answer = tree.hashes(0, 36, 4, 0)
    assert answer == [tree.node(0, i) for i in range(36, 40)]
    assert answer[2:] == [bytes(32)] * 2
    assert root_from_proof(answer, 36, []) == tree.piece_layer(65536)[9 * 32 :]
    # the piece layer (16 pieces) with a proof to the root
    answer = tree.hashes(2, 0, 16, 3)
    layer = tree.piece_layer(65536)
    assert b"".join(answer[:10]) == layer
    assert answer[10:16] == [pad_hash(4)] * 6
    assert root_from_proof(answer[:16], 0, answer[16:]) == tree.root
    assert len(answer) == 16 + proof_uncle_count(16, 3)


def test_hashes_rejects_what_bep52_forbids() -> None:
    tree = MerkleTree.from_data(bytes(8 * BLOCK_SIZE))  # depth 3
    for args in [
        (3, 0, 2, 0),  # the root layer itself
        (-1, 0, 2, 0),
        (0, 0, 1, 0),  # length below 2
        (0, 0, 3, 0),  # length not a power of two
        (0, 2, 4, 0),  # index not a multiple of length
        (0, 8, 2, 0),  # past the layer
        (0, 0, 16, 0),
        (0, 0, 2, 3),  # proof up to the root, which has no sibling
        (1, 0, 2, 2),
    ]:
        with pytest.raises(ValueError, match=r"layer|length|index|proof"):
            tree.hashes(*args)
    assert tree.hashes(0, 0, 2, 2)[-1] == tree.node(2, 1)
    with pytest.raises(ValueError, match="index"):
        tree.node(0, 8)
    with pytest.raises(ValueError, match="level"):
        tree.layer(4)
    with pytest.raises(ValueError, match="count"):
        tree.proof(0, 0, 4)


def test_root_from_proof_checks() -> None:
    with pytest.raises(ValueError, match="power of two"):
        root_from_proof([], 0, [])
    with pytest.raises(ValueError, match="power of two"):
        root_from_proof([bytes(32)] * 3, 0, [])
    with pytest.raises(ValueError, match="multiple"):
        root_from_proof([bytes(32)] * 2, 1, [])
    with pytest.raises(ValueError, match="32 bytes"):
        root_from_proof([bytes(32)] * 2, 0, [b"short"])
    with pytest.raises(ValueError, match="32 bytes"):
        root_from_proof([b"short"] * 2, 0, [])


def test_verify_block_checks() -> None:
    data = _data(5 * BLOCK_SIZE + 9, 8)
    tree = MerkleTree.from_data(data)
    last = data[5 * BLOCK_SIZE :]
    kwargs: dict[str, Any] = {"pieces_root": tree.root, "file_length": len(data)}
    assert verify_block(last, 5, tree.proof(0, 5), **kwargs)
    assert not verify_block(last + b"\0", 5, tree.proof(0, 5), **kwargs)
    assert not verify_block(last, 5, tree.proof(0, 5)[:-1], **kwargs)
    assert not verify_block(last, 5, [*tree.proof(0, 5)[:-1], b"short"], **kwargs)
    assert not verify_block(last, 5, tree.proof(0, 4), **kwargs)
    assert not verify_block(last, 5, tree.proof(0, 5), pieces_root=b"", file_length=len(data))
    for index in (-1, 6):
        with pytest.raises(ValueError, match="block index"):
            verify_block(last, index, tree.proof(0, 5), **kwargs)
    one = b"tiny"
    assert verify_block(one, 0, [], pieces_root=hashlib.sha256(one).digest(), file_length=4)


# -- properties ------------------------------------------------------------------------------

SIZES = st.one_of(
    st.integers(0, 300 * KiB),
    st.integers(0, 20).map(lambda n: n * BLOCK_SIZE),
    st.tuples(st.integers(1, 4), st.sampled_from(PIECE_LENGTHS), st.integers(-1, 1)).map(
        lambda t: max(0, t[0] * t[1] + t[2])
    ),
)

CUTS_AT_BLOCKS = st.tuples(st.integers(1, 25), st.integers(-1, 1)).map(
    lambda t: t[0] * BLOCK_SIZE + t[1]
)


@settings(max_examples=150, deadline=None)
@given(
    size=SIZES,
    seed=st.integers(0, 2**32),
    piece_length=st.sampled_from(PIECE_LENGTHS),
    cuts=st.lists(st.one_of(st.integers(0, 400 * KiB), CUTS_AT_BLOCKS), max_size=24),
)
def test_streaming_equals_one_shot(
    size: int, seed: int, piece_length: int, cuts: list[int]
) -> None:
    """Any chunking (cuts anywhere, at and next to block boundaries too) gives the same."""
    data = _data(size, seed)
    leaves = block_hashes(data)
    root = pieces_root(data)
    layer = piece_layer(leaves, piece_length)
    fine, coarse = MerkleFileHasher(), MerkleFileHasher(piece_length)
    bounds = sorted({0, size, *(cut % (size + 1) for cut in cuts)})
    for start, end in itertools.pairwise(bounds):
        fine.update(data[start:end])
        coarse.update(memoryview(data)[start:end])
    fine.update(b"")
    assert fine.root == coarse.root == root
    assert fine.piece_layer(piece_length) == coarse.piece_layer(piece_length) == layer
    assert fine.num_blocks == coarse.num_blocks == len(leaves) == -(-size // BLOCK_SIZE)
    if root is None:
        return
    assert root == merkle_root(leaves)
    tree = MerkleTree(leaves)
    assert tree.root == root
    assert tree.piece_layer(piece_length) == layer
    assert coarse.piece_layer(piece_length * 2) == piece_layer(leaves, piece_length * 2)


@settings(max_examples=150, deadline=None)
@given(
    size=SIZES.filter(bool), seed=st.integers(0, 2**32), piece_length=st.sampled_from(PIECE_LENGTHS)
)
def test_layers_pieces_and_roots_agree(size: int, seed: int, piece_length: int) -> None:
    data = _data(size, seed)
    root = pieces_root(data)
    assert root is not None
    layer = piece_layer(block_hashes(data), piece_length)
    pieces = [data[i : i + piece_length] for i in range(0, size, piece_length)]
    assert verify_piece_layer(layer, root, piece_length, size)
    if len(pieces) == 1:
        assert layer == b""
    else:
        assert len(layer) == len(pieces) * HASH_SIZE
        assert pieces_root_from_layer(layer, piece_length, size) == root
        assert b"".join(piece_hash(piece, piece_length) for piece in pieces) == layer
    for index, piece in enumerate(pieces):
        common: dict[str, Any] = {
            "piece_length": piece_length,
            "file_length": size,
            "pieces_root": root,
        }
        assert verify_piece(piece, index, piece_layer=layer, **common)
        tampered = bytes([piece[0] ^ 0x80]) + piece[1:]
        assert not verify_piece(tampered, index, piece_layer=layer, **common)


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(2 * BLOCK_SIZE + 1, 300 * KiB),
    seed=st.integers(0, 2**32),
    piece_length=st.sampled_from(PIECE_LENGTHS[:3]),
    position=st.integers(0),
    mask=st.integers(1, 255),
)
def test_flipping_any_layer_byte_fails(
    size: int, seed: int, piece_length: int, position: int, mask: int
) -> None:
    data = _data(size, seed)
    root = pieces_root(data)
    layer = bytearray(piece_layer(block_hashes(data), piece_length))
    if not layer:
        return
    layer[position % len(layer)] ^= mask
    assert not verify_piece_layer(layer, root, piece_length, size)  # type: ignore[arg-type]
    assert verify_piece_layer(layer[:-1], root, piece_length, size) is False  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(1, 300 * KiB),
    seed=st.integers(0, 2**32),
    data_choice=st.data(),
)
def test_proofs_recompute_what_they_prove(size: int, seed: int, data_choice: st.DataObject) -> None:
    data = _data(size, seed)
    tree = MerkleTree.from_data(data)
    block = data_choice.draw(st.integers(0, tree.num_blocks - 1))
    content = data[block * BLOCK_SIZE : (block + 1) * BLOCK_SIZE]
    proof = tree.proof(0, block)
    assert verify_block(content, block, proof, pieces_root=tree.root, file_length=size)
    flipped = bytes([content[0] ^ 1]) + content[1:]
    assert not verify_block(flipped, block, proof, pieces_root=tree.root, file_length=size)
    if tree.depth < 1:
        return
    # any valid hash request, answered and checked against the node it leads to
    base = data_choice.draw(st.integers(0, tree.depth - 1))
    span = data_choice.draw(st.integers(1, tree.depth - base))
    length = 1 << span
    index = data_choice.draw(st.integers(0, (1 << (tree.depth - base - span)) - 1)) * length
    proof_layers = data_choice.draw(st.integers(0, tree.depth - base - 1))
    answer = tree.hashes(base, index, length, proof_layers)
    uncles = proof_uncle_count(length, proof_layers)
    assert len(answer) == length + uncles
    top = span + uncles
    assert root_from_proof(answer[:length], index, answer[length:]) == tree.node(
        base + top, index >> top
    )
    if base + top == tree.depth:
        assert root_from_proof(answer[:length], index, answer[length:]) == tree.root
