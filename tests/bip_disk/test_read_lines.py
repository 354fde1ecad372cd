"""The read cache keeps lines of pieces, not whole pieces: a block missed is read with
the aligned line of at most 512 KiB around it (libtorrent 1.x's read_cache_line_size),
so readers on more pieces than the cache holds read each byte about once rather than
a whole piece per block, and every invalidation (a piece lost, a recheck, a move, a
removal) drops the lines it must, and only those."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

from bip_disk._errors import StorageError, TorrentStateError
from bip_disk._events import PieceLost, TorrentHandle, TorrentState
from bip_disk._manager import DiskManager, open_disk_manager
from bip_disk._memory import MemoryFileSystem
from bip_disk._readcache import BLOCK_BYTES, LINE_BYTES, LineCache
from bip_metainfo import Metainfo, create_torrent

KIB = 1024
MIB = 1024 * KIB
BLOCK = BLOCK_BYTES
LINE = LINE_BYTES


class CountingFileSystem(MemoryFileSystem):
    """A MemoryFileSystem that records every read: (path, offset, length)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[str, int, int]] = []

    def read(self, path: str, offset: int, length: int) -> bytes:
        self.reads.append((path, offset, length))
        return super().read(path, offset, length)

    @property
    def read_bytes(self) -> int:
        return sum(length for _, _, length in self.reads)


def _make(
    tmp_path: Path, sizes: dict[str, int], piece_length: int, seed: int = 1
) -> tuple[Metainfo, bytes]:
    """A torrent ``t`` of the files ``sizes`` (random bytes) and its content, end to end."""
    source = tmp_path / f"source-{seed}" / "t"
    source.mkdir(parents=True)
    rng = random.Random(seed)
    content = b""
    for name, size in sizes.items():
        data = rng.randbytes(size)
        (source / name).write_bytes(data)
        content += data
    metainfo = create_torrent(
        source, piece_length=piece_length, creation_date=None, created_by=None
    )
    return metainfo, content


async def _seeded(
    disk: DiskManager, metainfo: Metainfo, content: bytes, sizes: dict[str, int]
) -> tuple[TorrentHandle, CountingFileSystem]:
    """The torrent added on a CountingFileSystem holding its data, checked, reads forgotten."""
    fs = CountingFileSystem()
    offset = 0
    for name, size in sizes.items():
        fs.write(f"t/{name}", 0, content[offset : offset + size])
        offset += size
    torrent = await disk.add_torrent(metainfo, fs)
    with trio.fail_after(10):
        assert await disk.wait_checked(torrent) is TorrentState.READY
    fs.reads.clear()
    return torrent, fs


def _block(content: bytes, piece_length: int, piece: int, begin: int, length: int) -> bytes:
    start = piece * piece_length + begin
    return content[start : start + length]


# -- the cache itself ----------------------------------------------------------------


def test_line_size_and_the_line_of_a_block() -> None:
    assert LineCache(16 * MIB).line == LINE == 512 * KIB
    assert LineCache(MIB).line == 256 * KIB  # a quarter of a small cache
    assert LineCache(0).line == BLOCK
    cache = LineCache(16 * MIB)
    assert cache.span(4 * MIB, LINE - BLOCK, BLOCK) == (0, 0, LINE)
    assert cache.span(4 * MIB, LINE, BLOCK) == (1, LINE, 2 * LINE)
    assert cache.span(700 * KIB, 600 * KIB, BLOCK) == (1, LINE, 700 * KIB)  # the last, short
    assert cache.span(100 * KIB, 0, BLOCK) == (0, 0, 100 * KIB)  # a small piece: one line
    assert cache.span(4 * MIB, LINE - BLOCK // 2, BLOCK) is None  # across two lines
    assert cache.span(4 * MIB, 0, 4 * MIB) is None
    assert LineCache(0).span(BLOCK, 0, BLOCK) is None  # no cache: blocks alone
    # A piece smaller than a quarter of a tiny cache is still kept whole, as before.
    assert LineCache(40 * KIB).span(10 * KIB, 0, 10 * KIB) == (0, 0, 10 * KIB)
    assert LineCache(40 * KIB).span(BLOCK, 0, BLOCK) is None


def test_lines_are_evicted_least_recently_used_and_dropped_by_piece_or_torrent() -> None:
    cache = LineCache(2 * MIB)
    line = bytes(LINE)
    for key in ((1, 0, 0), (1, 0, 1), (1, 1, 0), (2, 0, 0)):
        cache.put(*key, line)
    assert cache.bytes == 2 * MIB
    assert cache.get(1, 0, 0) is line  # now the most recent
    cache.put(2, 0, 1, line)  # evicts (1, 0, 1), the least recently used
    assert cache.get(1, 0, 1) is None
    assert cache.bytes == 2 * MIB
    cache.put(2, 0, 1, bytes(BLOCK))  # put again: replaced, counted once
    assert cache.bytes == 3 * LINE + BLOCK
    cache.put(3, 0, 0, bytes(2 * MIB + 1))  # larger than the cache: not kept
    assert cache.get(3, 0, 0) is None
    cache.discard(1, 0, MIB)  # both lines of torrent 1's piece 0; piece 1 and torrent 2 stay
    assert cache.get(1, 0, 0) is None
    assert cache.get(1, 1, 0) is not None
    assert cache.get(2, 0, 0) is not None
    assert cache.bytes == 2 * LINE + BLOCK
    cache.drop_torrent(2)
    assert cache.bytes == LINE
    cache.drop_torrent(1)
    assert cache.bytes == 0


# -- reads through the manager -------------------------------------------------------


async def test_more_readers_than_pieces_the_cache_holds_read_each_byte_once(
    tmp_path: Path,
) -> None:
    # A 2 MiB cache holds 2 pieces of 1 MiB; 3 readers each take a piece block by block,
    # served round robin (as the uploader serves its peers). Reading whole pieces, every
    # block missed and read its piece again (x64); lines of 512 KiB all fit.
    sizes = {"f": 3 * MIB}
    metainfo, content = _make(tmp_path, sizes, MIB)
    async with open_disk_manager(read_cache_bytes=2 * MIB) as disk:
        torrent, fs = await _seeded(disk, metainfo, content, sizes)
        served = 0
        for begin in range(0, MIB, BLOCK):
            for piece in range(3):
                data = await disk.read_block(torrent, piece, begin, BLOCK)
                assert data == _block(content, MIB, piece, begin, BLOCK)
                served += len(data)
        assert fs.read_bytes == served == 3 * MIB
        assert len(fs.reads) == 6  # one thread crossing per line, not per block
        assert disk.statistics().read_cache_bytes == 2 * MIB


async def test_blocks_asked_for_at_once_share_one_read_of_their_line(tmp_path: Path) -> None:
    sizes = {"f": MIB}
    metainfo, content = _make(tmp_path, sizes, MIB)
    async with open_disk_manager() as disk:
        torrent, fs = await _seeded(disk, metainfo, content, sizes)
        got: dict[int, bytes] = {}

        async def read(begin: int) -> None:
            got[begin] = await disk.read_block(torrent, 0, begin, BLOCK)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for begin in range(0, MIB, BLOCK):
                    nursery.start_soon(read, begin)
        # One read per line (on two threads at once: in either order).
        assert sorted(fs.reads) == [("t/f", 0, LINE), ("t/f", LINE, LINE)]
        assert b"".join(got[begin] for begin in sorted(got)) == content


async def test_lines_are_aligned_in_their_piece_and_the_last_is_short(tmp_path: Path) -> None:
    # Piece 1 is 700 KiB: lines [0, 512K) and [512K, 700K) of it.
    sizes = {"f": MIB + 700 * KIB}
    metainfo, content = _make(tmp_path, sizes, MIB)
    async with open_disk_manager() as disk:
        torrent, fs = await _seeded(disk, metainfo, content, sizes)

        async def check(piece: int, begin: int, length: int = BLOCK) -> None:
            data = await disk.read_block(torrent, piece, begin, length)
            assert data == _block(content, MIB, piece, begin, length)

        await check(0, LINE - BLOCK)  # the last block of line 0
        assert fs.reads == [("t/f", 0, LINE)]
        await check(0, LINE)  # the first of line 1
        await check(0, 0)  # cached
        assert fs.reads[1:] == [("t/f", LINE, LINE)]
        await check(1, 600 * KIB)
        await check(1, 700 * KIB - BLOCK)  # cached
        await check(1, 700 * KIB - 1, 1)  # the piece's last byte, cached
        assert fs.reads[2:] == [("t/f", MIB + LINE, 188 * KIB)]
        # A block across two lines is read alone and not kept; so is a whole piece.
        del fs.reads[:]
        await check(1, LINE - BLOCK // 2)
        await check(1, LINE - BLOCK // 2)
        await check(0, 0, MIB)
        straddling = ("t/f", MIB + LINE - BLOCK // 2, BLOCK)
        assert fs.reads == [straddling, straddling, ("t/f", 0, MIB)]
        assert disk.statistics().read_cache_bytes == 2 * LINE + 188 * KIB


async def test_without_a_cache_blocks_are_read_alone(tmp_path: Path) -> None:
    sizes = {"f": MIB}
    metainfo, content = _make(tmp_path, sizes, MIB)
    async with open_disk_manager(read_cache_bytes=0) as disk:
        torrent, fs = await _seeded(disk, metainfo, content, sizes)
        for _ in range(2):
            assert await disk.read_block(torrent, 0, BLOCK, BLOCK) == content[BLOCK : 2 * BLOCK]
        assert fs.reads == [("t/f", BLOCK, BLOCK)] * 2
        assert disk.statistics().read_cache_bytes == 0


async def test_a_lost_piece_drops_its_lines_only(tmp_path: Path) -> None:
    sizes = {"a": MIB, "b": MIB}  # piece 0 is file a, piece 1 file b
    metainfo, content = _make(tmp_path, sizes, MIB)
    async with open_disk_manager() as disk:
        torrent, fs = await _seeded(disk, metainfo, content, sizes)
        await disk.read_block(torrent, 0, 0, BLOCK)
        await disk.read_block(torrent, 1, 0, BLOCK)
        await disk.read_block(torrent, 1, LINE, BLOCK)
        assert disk.statistics().read_cache_bytes == 3 * LINE
        fs.truncate("t/a", LINE + BLOCK)  # line 1 of piece 0 is gone behind our back
        with pytest.raises(StorageError):
            await disk.read_block(torrent, 0, LINE, BLOCK)
        with trio.fail_after(10):
            async for event in disk.events():
                if isinstance(event, PieceLost):
                    assert event.piece == 0
                    break
        # Line 0 of piece 0, read and still on disk, is no longer served: its piece is lost.
        assert disk.statistics().read_cache_bytes == 2 * LINE
        with pytest.raises(TorrentStateError, match="does not have piece 0"):
            await disk.read_block(torrent, 0, 0, BLOCK)
        del fs.reads[:]
        assert await disk.read_block(torrent, 1, LINE, BLOCK) == _block(
            content, MIB, 1, LINE, BLOCK
        )
        assert fs.reads == []  # piece 1's lines stayed


async def test_a_recheck_drops_the_torrents_lines(tmp_path: Path) -> None:
    sizes = {"f": 2 * MIB}
    metainfo, content = _make(tmp_path, sizes, MIB)
    async with open_disk_manager() as disk:
        torrent, fs = await _seeded(disk, metainfo, content, sizes)
        await disk.read_block(torrent, 0, 0, BLOCK)
        await disk.read_block(torrent, 1, LINE, BLOCK)
        # Piece 1's cached line changes behind our back: the recheck finds the piece bad,
        # and its old bytes are never served again.
        fs.write("t/f", MIB + LINE, bytes(BLOCK))
        await disk.recheck(torrent)
        with trio.fail_after(10):
            assert await disk.wait_checked(torrent) is TorrentState.READY
        assert disk.have(torrent) == {0}
        assert disk.statistics().read_cache_bytes == 0
        with pytest.raises(TorrentStateError, match="does not have piece 1"):
            await disk.read_block(torrent, 1, LINE, BLOCK)
        del fs.reads[:]
        assert await disk.read_block(torrent, 0, 0, BLOCK) == content[:BLOCK]
        assert fs.reads == [("t/f", 0, LINE)]  # read again after the recheck


async def test_a_move_and_a_removal_drop_the_torrents_lines_only(tmp_path: Path) -> None:
    sizes = {"f": MIB}
    first, first_content = _make(tmp_path, sizes, MIB, seed=1)
    second, second_content = _make(tmp_path, sizes, MIB, seed=2)
    async with open_disk_manager() as disk:
        moved, old = await _seeded(disk, first, first_content, sizes)
        kept, kept_fs = await _seeded(disk, second, second_content, sizes)
        for torrent in (moved, kept):
            await disk.read_block(torrent, 0, 0, BLOCK)
            await disk.read_block(torrent, 0, LINE, BLOCK)
        assert disk.statistics().read_cache_bytes == 4 * LINE
        new = CountingFileSystem()
        with trio.fail_after(10):
            await disk.move_storage(moved, new)
        assert disk.statistics().read_cache_bytes == 2 * LINE
        del new.reads[:]
        assert await disk.read_block(moved, 0, LINE, BLOCK) == first_content[LINE:][:BLOCK]
        assert new.reads == [("t/f", LINE, LINE)]  # from the new storage, not the cache
        await disk.remove_torrent(moved)
        assert disk.statistics().read_cache_bytes == 2 * LINE
        del kept_fs.reads[:]
        assert await disk.read_block(kept, 0, 0, BLOCK) == second_content[:BLOCK]
        assert await disk.read_block(kept, 0, LINE, BLOCK) == second_content[LINE:][:BLOCK]
        assert kept_fs.reads == []  # the other torrent's lines stayed
        await disk.remove_torrent(kept)
        assert disk.statistics().read_cache_bytes == 0
    assert old.reads  # the move copied from the old storage
