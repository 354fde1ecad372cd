"""DiskManager.recheck releases the FileSystem's open handles before it hashes, as
libtorrent's ``force_recheck`` releases the files first: a file replaced or deleted since
the handles were opened is read (and then written) as it is on disk, never through a
descriptor of the old file."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import trio
from tests._disk_race import PIECE, PIECES, drain, make, of_type

from bip_disk._errors import StorageError
from bip_disk._events import StorageProblem, TorrentHandle, TorrentState
from bip_disk._filesystem import FileSystem
from bip_disk._manager import DiskManager, open_disk_manager
from bip_disk._memory import MemoryFileSystem
from bip_disk._native import NativeFileSystem


async def read_every_piece(disk: DiskManager, torrent: TorrentHandle) -> None:
    """Read a block of each piece, so that the native FileSystem holds the file open (as a
    seeding torrent does)."""
    for piece in range(PIECES):
        await disk.read_block(torrent, piece, 0, 16)


async def test_a_recheck_reads_a_replaced_file_not_the_old_one(tmp_path: Path) -> None:
    metainfo, content = make(tmp_path)
    fs = NativeFileSystem(tmp_path)
    with trio.fail_after(10):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(metainfo, fs)
            assert await disk.wait_checked(torrent) is TorrentState.READY
            await read_every_piece(disk, torrent)
            # Replaced by rename (a new inode, as an editor or a restore does): the first
            # half of the pieces as they were, the rest other bytes.
            spare = tmp_path / "t" / "a.new"
            half = PIECES // 2 * PIECE
            spare.write_bytes(content[:half] + bytes(len(content) - half))
            os.replace(spare, tmp_path / "t" / "a")
            await disk.recheck(torrent)
            assert await disk.wait_checked(torrent) is TorrentState.READY
            assert disk.have(torrent) == frozenset(range(PIECES // 2))
    fs.close()


async def test_a_piece_written_after_a_recheck_reaches_a_deleted_file(tmp_path: Path) -> None:
    metainfo, content = make(tmp_path)
    fs = NativeFileSystem(tmp_path / "down")
    path = tmp_path / "down" / "t" / "a"
    with trio.fail_after(10):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(metainfo, fs)
            assert await disk.wait_checked(torrent) is TorrentState.READY
            # Downloaded: the FileSystem holds the file open for writing.
            for piece in range(PIECES):
                await disk.write_block(
                    torrent, piece, 0, content[piece * PIECE : (piece + 1) * PIECE]
                )
            await disk.wait_idle(torrent)
            assert disk.have(torrent) == frozenset(range(PIECES))
            path.unlink()
            await disk.recheck(torrent)
            assert await disk.wait_checked(torrent) is TorrentState.READY
            assert disk.have(torrent) == frozenset()
            await disk.write_block(torrent, 0, 0, content[:PIECE])
            await disk.wait_idle(torrent)
            assert disk.have(torrent) == frozenset({0})
            # Written into the file at its path, not into the deleted one still open.
            assert path.read_bytes()[:PIECE] == content[:PIECE]
    fs.close()


class CountedCloses(MemoryFileSystem):
    """A memory FileSystem that counts its ``close`` calls, failing them if told to."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.closes = 0
        self.fail = fail

    def close(self) -> None:
        """Count the call; fail as a deferred write error would, if told to."""
        self.closes += 1
        if self.fail:
            raise StorageError("deferred write failed", errno=errno.EIO, path="t/a")


async def test_a_recheck_releases_any_filesystem_and_goes_on_if_that_fails(
    tmp_path: Path,
) -> None:
    metainfo, content = make(tmp_path)
    for fail in (False, True):
        fs = CountedCloses(fail)
        fs.write("t/a", 0, content)
        with trio.fail_after(10):
            async with open_disk_manager() as disk:
                torrent = await disk.add_torrent(metainfo, fs)
                assert await disk.wait_checked(torrent) is TorrentState.READY
                assert fs.closes == 0  # a first check's FileSystem is the caller's, fresh
                drain(disk)
                await disk.recheck(torrent)
                assert await disk.wait_checked(torrent) is TorrentState.READY
                assert fs.closes == 1
                assert disk.have(torrent) == frozenset(range(PIECES))
                problems = of_type(drain(disk), StorageProblem)
                if fail:
                    # One problem told; the recheck hashes what is there all the same.
                    assert len(problems) == 1
                    assert "releasing" in problems[0].reason
                else:
                    assert problems == []


async def test_every_filesystem_serves_again_after_a_recheck_released_it(
    tmp_path: Path, filesystem: FileSystem
) -> None:
    metainfo, content = make(tmp_path)
    with trio.fail_after(10):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(metainfo, filesystem)
            assert await disk.wait_checked(torrent) is TorrentState.READY
            for piece in range(PIECES):
                start = piece * PIECE
                await disk.write_block(torrent, piece, 0, content[start : start + PIECE])
            await disk.wait_idle(torrent)
            await read_every_piece(disk, torrent)
            await disk.recheck(torrent)
            assert await disk.wait_checked(torrent) is TorrentState.READY
            # Closed by the recheck, then opened again on demand (the protocol's promise).
            assert disk.have(torrent) == frozenset(range(PIECES))
            assert await disk.read_block(torrent, PIECES - 1, 0, 16) == content[-PIECE:][:16]
