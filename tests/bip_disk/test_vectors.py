"""Public vectors through the DiskManager: real torrents with their real content.

- ../shared/vectors/pieces/piece_verification.json (the webtorrent fixtures: the
  content and its torrent): checking the content finds every piece good, writing it
  block by block verifies every piece good, and a byte flipped at offset ``x`` makes
  exactly piece ``x // piece_length`` bad (the vectors' corruption rule).
- ../shared/vectors/bep52/merkle_vectors.json zero_content_files: libtorrent's v2
  (hybrid) and v2-only torrents whose content is all zeros.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import trio

from bip_disk._events import CheckFinished, DiskEvent, PieceVerified
from bip_disk._filesystem import FileSystem
from bip_disk._layout import StorageLayout
from bip_disk._manager import DiskManager, open_disk_manager
from bip_disk._memory import MemoryFileSystem
from bip_metainfo import Metainfo

VECTORS = Path("/work/shared/vectors")
PIECES = json.loads((VECTORS / "pieces" / "piece_verification.json").read_text())["vectors"]
ZERO = json.loads((VECTORS / "bep52" / "merkle_vectors.json").read_text())["zero_content_files"]


def _name(vector: dict[str, Any]) -> str:
    return Path(vector["torrent"]).stem


def _load(vector: dict[str, Any]) -> tuple[Metainfo, bytes, dict[str, bytes]]:
    """The torrent, its piece space, and its content by stored path."""
    metainfo = Metainfo.from_file(VECTORS / vector["torrent"])
    layout = StorageLayout.from_info(metainfo.info)
    stored = [file for file in layout.files if file.is_stored]
    assert len(stored) == len(vector["files"])
    contents = {}
    for file, described in zip(stored, vector["files"], strict=True):
        assert file.path.endswith(described["path_in_torrent"])
        contents[file.path] = (VECTORS / described["content_file"]).read_bytes()
        assert len(contents[file.path]) == described["length"]
    space = b"".join(contents[file.path] for file in stored)
    assert len(space) == vector["total_length"]
    return metainfo, space, contents


async def _until(disk: DiskManager, kind: type[DiskEvent], count: int = 1) -> list[DiskEvent]:
    events: list[DiskEvent] = []
    with trio.fail_after(30):
        async for event in disk.events():
            events.append(event)
            if sum(isinstance(e, kind) for e in events) == count:
                return events
    raise AssertionError("the event stream ended")


def test_the_vectors_are_there() -> None:
    assert {_name(v) for v in PIECES} >= {"leaves", "alice", "numbers", "folder"}


@pytest.mark.parametrize("vector", PIECES, ids=_name)
async def test_checking_the_real_content_finds_every_piece_good(
    vector: dict[str, Any], filesystem: FileSystem
) -> None:
    metainfo, _, contents = _load(vector)
    for path, data in contents.items():
        filesystem.write(path, 0, data)
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(metainfo, filesystem)
        events = await _until(disk, CheckFinished)
        count = vector["num_pieces"]
        assert events[-1] == CheckFinished(torrent, good=count, checked=count, resumed=False)


@pytest.mark.parametrize("vector", PIECES, ids=_name)
async def test_a_flipped_byte_makes_exactly_its_piece_bad(vector: dict[str, Any]) -> None:
    metainfo, _, contents = _load(vector)
    rng = random.Random(vector["torrent"])
    piece_length = vector["piece_length"]
    # One flip per piece, at a random offset inside it, in a file of its own copy.
    layout = StorageLayout.from_info(metainfo.info)
    for piece in range(vector["num_pieces"]):
        spans = [span for span in layout.spans(piece) if not span.is_pad]
        span = rng.choice(spans)
        offset = span.file_offset + rng.randrange(span.length)
        fs = MemoryFileSystem()
        for path, data in contents.items():
            fs.write(path, 0, data)
        fs.write(span.path, offset, bytes([contents[span.path][offset] ^ 0x20]))
        file = layout.files[span.file_index]
        assert (file.offset + offset) // piece_length == piece
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(metainfo, fs)
            await disk.wait_checked(torrent)
            assert disk.have(torrent) == frozenset(range(vector["num_pieces"])) - {piece}


@pytest.mark.parametrize("vector", PIECES, ids=_name)
async def test_downloading_the_real_content_verifies_every_piece(vector: dict[str, Any]) -> None:
    metainfo, space, contents = _load(vector)
    piece_length = vector["piece_length"]
    fs = MemoryFileSystem()
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(metainfo, fs)
        await disk.wait_checked(torrent)
        count = vector["num_pieces"]
        # Each piece is written with one byte flipped first (bad), then right (good).
        for piece in range(count):
            data = bytearray(space[piece * piece_length : (piece + 1) * piece_length])
            data[len(data) // 2] ^= 0x01
            for begin in range(0, len(data), 16384):
                await disk.write_block(torrent, piece, begin, data[begin : begin + 16384])
        events = await _until(disk, PieceVerified, count)
        assert {e.piece: e.good for e in events if isinstance(e, PieceVerified)} == dict.fromkeys(
            range(count), False
        )
        assert disk.have(torrent) == frozenset()
        assert all(fs.stat(path) is None or fs.size(path) == 0 for path in contents)
        for piece in range(count):
            good = space[piece * piece_length : (piece + 1) * piece_length]
            for begin in range(0, len(good), 16384):
                await disk.write_block(torrent, piece, begin, good[begin : begin + 16384])
        events = await _until(disk, PieceVerified, count)
        verdicts = [e.good for e in events if isinstance(e, PieceVerified)]
        assert verdicts == [True] * count
        for path, content in contents.items():
            assert fs.read(path, 0, len(content) + 1) == content


@pytest.mark.parametrize(
    ("torrent", "vector"),
    [("v2.torrent", ZERO[0]), ("v2_only.torrent", ZERO[1])],
)
async def test_libtorrent_v2_torrents_of_zeros(torrent: str, vector: dict[str, Any]) -> None:
    metainfo = Metainfo.from_file(VECTORS / "torrents" / "libtorrent" / torrent)
    (entry,) = [file for file in metainfo.info.files if not file.is_pad]
    assert entry.pieces_root == bytes.fromhex(vector["pieces_root"])
    assert entry.length == vector["length"]
    fs = MemoryFileSystem()
    fs.allocate(entry.path_str(), entry.length)  # sparse: reads as zeros
    count = metainfo.info.num_pieces
    async with open_disk_manager() as disk:
        torrent_handle = await disk.add_torrent(metainfo, fs)
        events = await _until(disk, CheckFinished)
        assert events[-1] == CheckFinished(torrent_handle, good=count, checked=count, resumed=False)
        await disk.remove_torrent(torrent_handle)
        # Written through the manager block by block, too.
        fresh = MemoryFileSystem()
        torrent_handle = await disk.add_torrent(metainfo, fresh)
        await disk.wait_checked(torrent_handle)
        for piece in range(count):
            for begin in range(0, metainfo.info.piece_length, 16384):
                await disk.write_block(torrent_handle, piece, begin, bytes(16384))
        events = await _until(disk, PieceVerified, count)
        verdicts = [e.good for e in events if isinstance(e, PieceVerified)]
        assert verdicts == [True] * count
        assert fresh.read(entry.path_str(), 0, entry.length + 1) == bytes(entry.length)
