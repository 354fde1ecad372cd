"""Recycled piece buffers: SpareBuffers, PartialPiece on a used buffer, the manager's reuse."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bip_disk._budget import SpareBuffers
from bip_disk._events import PieceVerified
from bip_disk._filesystem import Buffer
from bip_disk._manager import open_disk_manager
from bip_disk._memory import MemoryFileSystem
from bip_disk._torrent import PartialPiece
from bip_metainfo import Info, create_torrent

PIECE = 16384
BLOCK = 4096


def test_spare_buffers_are_taken_by_size_and_trimmed() -> None:
    spares = SpareBuffers()
    assert spares.take(8) is None
    small, other, large = bytearray(8), bytearray(8), bytearray(16)
    spares.give(small)
    spares.give(large)
    spares.give(other)
    assert spares.bytes == 32
    assert spares.take(8) is other  # the most recently given: likelier in the cache
    assert spares.take(8) is small
    assert spares.take(8) is None
    assert spares.bytes == 16
    spares.give(small)
    spares.trim(8)
    assert spares.bytes <= 8
    spares.trim(-5)
    assert spares.bytes == 0
    assert spares.take(16) is None
    assert spares.take(8) is None


def test_a_recycled_buffer_gets_zeroed_pads_and_must_fit() -> None:
    used = bytearray(b"\xff" * 8)
    piece = PartialPiece(8, ((2, 4),), used)
    assert piece.buffer is used
    assert used == b"\xff\xff\x00\x00\xff\xff\xff\xff"  # only the pads are zeroed
    assert piece.received == 2
    piece.add(0, b"ab")
    piece.add(4, b"cdef")
    assert piece.complete
    assert used == b"ab\x00\x00cdef"
    with pytest.raises(ValueError, match="recycled buffer"):
        PartialPiece(9, (), bytearray(8))


def make_info(tmp_path: Path, pieces: int) -> tuple[Info, bytes]:
    data = random.Random(7).randbytes(pieces * PIECE)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    metainfo = create_torrent(path, version="v1", piece_length=PIECE, creation_date=None)
    return metainfo.info, data


class KeepingFileSystem(MemoryFileSystem):
    """A FileSystem that keeps a view of every buffer it is given (allowed: it is its data)."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[tuple[int, memoryview]] = []

    def write(self, path: str, offset: int, data: Buffer) -> None:
        super().write(path, offset, data)
        self.kept.append((offset, memoryview(data)))


async def write_all(tmp_path: Path, fs: MemoryFileSystem, pieces: int) -> bytes:
    info, data = make_info(tmp_path, pieces)
    async with open_disk_manager(max_in_flight_bytes=4 * PIECE, hash_threads=2) as disk:
        torrent = await disk.add_torrent(info, fs)
        await disk.wait_checked(torrent)
        for piece in range(pieces):
            for begin in range(0, PIECE, BLOCK):
                start = piece * PIECE + begin
                assert await disk.write_block(torrent, piece, begin, data[start : start + BLOCK])
        await disk.wait_idle(torrent)
        assert disk.have(torrent) == frozenset(range(pieces))
        assert disk._spares.bytes + disk._budget.used <= disk._budget.limit
        good = 0
        while good < pieces:
            event = disk.events().receive_nowait()
            if isinstance(event, PieceVerified):
                assert event.good
                good += 1
    return data


async def test_written_pieces_lend_their_buffers_to_the_next(tmp_path: Path) -> None:
    fs = MemoryFileSystem()
    reused: list[bool] = []
    original = PartialPiece.__init__

    def spy(
        self: PartialPiece,
        size: int,
        pads: tuple[tuple[int, int], ...] = (),
        buffer: bytearray | None = None,
    ) -> None:
        reused.append(buffer is not None)
        original(self, size, pads, buffer)

    PartialPiece.__init__ = spy  # type: ignore[method-assign]
    try:
        data = await write_all(tmp_path, fs, 24)
    finally:
        PartialPiece.__init__ = original  # type: ignore[method-assign]
    assert len(reused) == 24
    assert any(reused)  # past the first pieces, buffers come back
    assert fs.read("payload.bin", 0, len(data)) == data


async def test_a_buffer_a_filesystem_still_holds_is_never_reused(tmp_path: Path) -> None:
    fs = KeepingFileSystem()
    data = await write_all(tmp_path, fs, 24)
    assert len(fs.kept) == 24
    for offset, view in fs.kept:  # every view still shows the bytes it was given
        assert view == data[offset : offset + len(view)]
    assert fs.read("payload.bin", 0, len(data)) == data
