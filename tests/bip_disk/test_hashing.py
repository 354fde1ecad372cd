"""PieceVerifier (v1, v2, hybrid; pads, short pieces, per-file pieces) and HashPool."""

from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path

import pytest
import trio

from bip_bencode import encode
from bip_disk._errors import TorrentStateError
from bip_disk._hashing import HashPool, PieceVerifier, default_hash_threads
from bip_metainfo import Info, Metainfo, create_torrent

PIECE = 16384


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def piece_space(info: Info, contents: dict[tuple[str, ...], bytes]) -> bytes:
    """The torrent's piece space: files in order, pad files as zeros."""
    parts = []
    for entry in info.files:
        if entry.is_pad:
            parts.append(bytes(entry.length))
        elif not entry.is_symlink:
            parts.append(contents[entry.path])
    return b"".join(parts)


def make(
    tmp_path: Path, files: dict[str, bytes], version: str, piece_length: int = PIECE
) -> tuple[Metainfo, bytes]:
    """A torrent of ``files`` under ``tmp_path/album`` and its piece space."""
    root = tmp_path / "album"
    _write_tree(root, files)
    metainfo = create_torrent(
        root,
        version=version,  # type: ignore[arg-type]
        piece_length=piece_length,
        creation_date=None,
        created_by=None,
    )
    contents = {("album", *name.split("/")): data for name, data in files.items()}
    return metainfo, piece_space(metainfo.info, contents)


def _files(seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {
        "a.bin": rng.randbytes(3 * PIECE + 100),  # the last v2 piece of a file is short
        "b/empty": b"",
        "b/small.txt": rng.randbytes(10),  # smaller than a block: its own piece in v2
        "c.bin": rng.randbytes(PIECE),  # exactly one piece
        "d.bin": rng.randbytes(5 * PIECE + 7),
    }


@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
def test_every_piece_verifies_and_a_flipped_byte_fails(tmp_path: Path, version: str) -> None:
    metainfo, space = make(tmp_path, _files(1), version)
    info = metainfo.info
    verifier = PieceVerifier(info, metainfo.piece_layers)
    assert verifier.checks_v1 == (version != "v2")
    assert verifier.checks_v2 == (version != "v1")
    for index in range(info.num_pieces):
        size = info.piece_size(index)
        data = bytearray(space[index * info.piece_length : index * info.piece_length + size])
        assert verifier.verify(index, data), index
        v2 = verifier.v2_target(index)
        # Flip a byte of file data (never of a pad: pads are not file data).
        position = (v2.length if v2 else size) - 1
        data[position] ^= 0x01
        assert not verifier.verify(index, data), index
        assert not verifier.verify(index, data[:-1])  # the wrong size
    assert verifier.verify_many([(0, space[: info.piece_size(0)])]) == [True]


def test_v2_only_checks_only_the_file_bytes_of_a_piece(tmp_path: Path) -> None:
    metainfo, space = make(tmp_path, {"x.bin": b"x" * (PIECE + 5), "y.bin": b"y" * 3}, "v2")
    info = metainfo.info
    verifier = PieceVerifier(info, metainfo.piece_layers)
    target = verifier.v2_target(1)
    assert target is not None
    assert target.length == 5
    assert not target.whole_file
    # v2 pieces of a file never hold another file's bytes: piece 2 is y.bin alone.
    last = verifier.v2_target(2)
    assert last is not None
    assert last.whole_file
    assert last.length == 3
    assert verifier.verify(2, space[2 * PIECE : 3 * PIECE])


def test_v2_without_piece_layers_is_refused_hybrid_falls_back_to_v1(tmp_path: Path) -> None:
    files = {"big.bin": random.Random(2).randbytes(3 * PIECE), "small": b"s"}
    v2, _ = make(tmp_path / "v2", files, "v2")
    with pytest.raises(TorrentStateError, match="piece layers"):
        PieceVerifier(v2.info)
    hybrid, space = make(tmp_path / "hybrid", files, "hybrid")
    verifier = PieceVerifier(hybrid.info)
    assert verifier.checks_v1
    assert not verifier.checks_v2
    assert verifier.verify(0, space[:PIECE])


def test_a_piece_layer_that_does_not_match_its_root_is_refused(tmp_path: Path) -> None:
    metainfo, _ = make(tmp_path, {"big.bin": bytes(3 * PIECE), "small": b"s"}, "v2")
    ((root, layer),) = metainfo.piece_layers.items()
    with pytest.raises(TorrentStateError, match="does not hash"):
        PieceVerifier(metainfo.info, {root: layer[::-1]})


def test_v1_pad_files_are_zeros_in_the_piece(tmp_path: Path) -> None:
    # A hand-made v1 torrent with a BEP 47 pad file between two files.
    a, b = b"a" * 1000, b"b" * 500
    space = a + bytes(PIECE - len(a)) + b
    pieces = hashlib.sha1(space[:PIECE]).digest() + hashlib.sha1(space[PIECE:]).digest()
    info = Info.from_bytes(
        encode(
            {
                "name": "t",
                "piece length": PIECE,
                "pieces": pieces,
                "files": [
                    {"path": ["a"], "length": len(a)},
                    {"path": [".pad", "x"], "length": PIECE - len(a), "attr": "p"},
                    {"path": ["b"], "length": len(b)},
                ],
            }
        )
    )
    verifier = PieceVerifier(info)
    assert verifier.piece_size(1) == len(b)  # the last, short piece
    assert verifier.verify(0, space[:PIECE])
    assert verifier.verify(1, space[PIECE:])
    assert verifier.v2_target(0) is None


async def test_hash_pool_runs_on_at_most_its_threads() -> None:
    pool = HashPool(2)
    assert pool.threads == 2
    lock = threading.Lock()
    running = peak = 0

    def work(n: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        hashlib.sha1(bytes(1 << 20)).digest()
        with lock:
            running -= 1
        return n * 2

    results: list[int] = []

    async def one(n: int) -> None:
        results.append(await pool.run(work, n))

    async with trio.open_nursery() as nursery:
        for n in range(8):
            nursery.start_soon(one, n)
    assert sorted(results) == [n * 2 for n in range(8)]
    assert 1 <= peak <= 2
    assert pool.busy == 0
    with pytest.raises(ValueError, match="positive"):
        HashPool(0)
    assert default_hash_threads() >= 1


async def test_hash_pool_verifies_a_batch(tmp_path: Path) -> None:
    metainfo, space = make(tmp_path, {"f": random.Random(3).randbytes(2 * PIECE)}, "hybrid")
    verifier = PieceVerifier(metainfo.info, metainfo.piece_layers)
    batch = [(0, space[:PIECE]), (1, space[PIECE:]), (1, bytes(PIECE))]
    assert await HashPool(2).verify(verifier, batch) == [True, True, False]
