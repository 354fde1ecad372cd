"""A REPLACE move onto a file of the torrent that is at the destination already.

The copy skips the source's runs of zeros (a sparse copy): the destination file must be
emptied first, or it keeps its old bytes where the source has zeros and its old tail
where it is longer, while the pieces stay had (read_block serves the old bytes, and the
resume data, recording the new size and mtime, makes a restart trust them). Each on
every FileSystem kind that a move writes to.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from bip_disk import (
    ExistingFiles,
    FileSystem,
    MemoryFileSystem,
    StorageLayout,
    TorrentState,
    open_disk_manager,
)
from bip_disk._fileops import copy_files
from bip_metainfo import Metainfo, create_torrent

MIB = 1 << 20
KINDS = ("memory", "native", "fsspec-local", "fsspec-staged")


def _sample(tmp_path: Path) -> tuple[Metainfo, bytes]:
    """A one-file torrent: 4 MiB of zeros (one whole copy chunk), then 2 MiB of noise."""
    rng = random.Random(11)
    content = bytes(4 * MIB) + rng.randbytes(2 * MIB)
    root = tmp_path / "made" / "album"
    root.mkdir(parents=True)
    (root / "img.bin").write_bytes(content)
    metainfo = create_torrent(
        root, version="v1", piece_length=MIB, creation_date=None, created_by=None
    )
    return metainfo, content


def _bad_pieces(metainfo: Metainfo, data: bytes, have: frozenset[int]) -> list[int]:
    return [
        piece
        for piece in sorted(have)
        if hashlib.sha1(data[piece * MIB : (piece + 1) * MIB]).digest()
        != metainfo.info.piece_hash(piece)
    ]


@pytest.mark.parametrize("kind", KINDS)
async def test_replace_empties_a_file_there_before_the_sparse_copy(
    tmp_path: Path, kind: str, filesystem_factory: Callable[[str, Path], FileSystem]
) -> None:
    metainfo, content = _sample(tmp_path)
    path = "album/img.bin"
    source = filesystem_factory(kind, tmp_path / "src")
    destination = filesystem_factory(kind, tmp_path / "dst")
    source.write(path, 0, content)
    stale = random.Random(3).randbytes(len(content) + 12345)  # longer, no zeros to speak of
    destination.write(path, 0, stale)
    destination.sync()
    with trio.fail_after(20):
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(metainfo, source)
            assert await disk.wait_checked(torrent) is TorrentState.READY
            await disk.move_storage(torrent, destination, existing=ExistingFiles.REPLACE)
            have = disk.have(torrent)
            assert have == frozenset(range(metainfo.info.num_pieces))
            data = destination.read(path, 0, len(stale) + 1)
            assert data == content  # byte for byte: no old bytes, no old tail
            assert _bad_pieces(metainfo, data, have) == []
            assert await disk.read_block(torrent, 0, 0, 16384) == bytes(16384)
            resume = await disk.save_resume_data(torrent)
        async with open_disk_manager() as disk:  # a restart trusting that resume data
            again = await disk.add_torrent(metainfo, destination, resume_data=resume)
            await disk.wait_checked(again)
            assert _bad_pieces(metainfo, data, disk.have(again)) == []
            assert disk.have(again) == have


def test_copy_files_replace_leaves_a_missing_source_file_and_keep_alone(tmp_path: Path) -> None:
    """Only a file that is copied is emptied first: KEEP keeps what is there (its pieces are
    checked again), and a file missing from the source leaves the destination's alone (as
    libtorrent's move_storage does)."""
    metainfo, content = _sample(tmp_path)
    layout = StorageLayout.from_info(metainfo.info)
    path = "album/img.bin"
    source, destination = MemoryFileSystem(), MemoryFileSystem()
    stale = b"\x01" * (len(content) + 5)
    destination.write(path, 0, stale)
    copy_files(source, destination, layout, ExistingFiles.REPLACE)  # nothing to copy
    assert destination.read(path, 0, len(stale) + 1) == stale
    source.write(path, 0, content)
    copied = copy_files(source, destination, layout, ExistingFiles.KEEP)
    assert [file.path for file in copied.kept] == [path]
    assert destination.read(path, 0, len(stale) + 1) == stale
    copy_files(source, destination, layout, ExistingFiles.REPLACE)
    assert destination.read(path, 0, len(stale) + 1) == content
