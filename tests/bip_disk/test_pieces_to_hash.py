"""``DiskManager.pieces_to_hash``: how many pieces ``add_torrent`` would hash, told before the
torrent is added (files stat'ed, none read), so that a client's queue of checks can tell a
check that hashes from one that only vouches for resume data (libtorrent's
``checking_resume_data`` falling back to a full check)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

from bip_disk import (
    CheckFinished,
    MemoryFileSystem,
    ResumeDataError,
    StorageError,
    StorageLayout,
    TorrentStateError,
    open_disk_manager,
)
from bip_metainfo import Metainfo, create_torrent

PIECE = 16384


def sample(tmp_path: Path) -> tuple[Metainfo, dict[str, bytes]]:
    """A v1 torrent of two files (3 and 2 pieces, the second file's first piece shared)."""
    rng = random.Random(5)
    files = {"a.bin": rng.randbytes(2 * PIECE + 100), "b.bin": rng.randbytes(2 * PIECE)}
    root = tmp_path / "album"
    root.mkdir()
    for name, data in files.items():
        (root / name).write_bytes(data)
    metainfo = create_torrent(
        root, version="v1", piece_length=PIECE, creation_date=None, created_by=None
    )
    return metainfo, {f"album/{name}": data for name, data in files.items()}


async def test_pieces_to_hash_says_what_the_check_hashes(tmp_path: Path) -> None:
    metainfo, contents = sample(tmp_path)
    count = metainfo.info.num_pieces
    layout = StorageLayout.from_info(metainfo.info)
    fs = MemoryFileSystem()
    with trio.fail_after(10):
        async with open_disk_manager() as disk:
            # No file there: nothing to hash (libtorrent's has_any_file).
            assert await disk.pieces_to_hash(metainfo, fs) == 0
            assert await disk.pieces_to_hash(metainfo.info, fs) == 0
            for path, data in contents.items():
                fs.write(path, 0, data)
            # Files there, no resume data: every piece.
            assert await disk.pieces_to_hash(metainfo, fs) == count
            torrent = await disk.add_torrent(metainfo, fs)
            await disk.wait_checked(torrent)
            resume = await disk.save_resume_data(torrent)
            await disk.remove_torrent(torrent)
            # Files as the resume data says (every piece listed): none.
            assert await disk.pieces_to_hash(metainfo, fs, resume_data=resume) == 0
            # One file changed since (an unclean stop after a write): its pieces.
            changed = next(f for f in layout.files if f.path == "album/b.bin")
            fs.truncate(changed.path, changed.length - 1)
            pieces = layout.file_pieces(changed.index)
            planned = await disk.pieces_to_hash(metainfo, fs, resume_data=resume)
            assert planned == len(pieces) - 1  # the last cannot be had: not read
            # As many as add_torrent then hashes.
            torrent = await disk.add_torrent(metainfo, fs, resume_data=resume)
            async for event in disk.events():
                if isinstance(event, CheckFinished) and event.torrent == torrent:
                    assert event.checked == planned
                    break
            await disk.remove_torrent(torrent)
            # Refused as add_torrent refuses it; bad arguments.
            with pytest.raises(ResumeDataError):
                await disk.pieces_to_hash(metainfo, fs, resume_data=b"garbage")
            with pytest.raises(TypeError):
                await disk.pieces_to_hash(b"torrent", fs)  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await disk.pieces_to_hash(metainfo, object())  # type: ignore[arg-type]

            # A file that cannot be stat'ed: a StorageError.
            class Broken(MemoryFileSystem):
                def stat(self, path: str) -> None:
                    raise StorageError("no", path=path)

            with pytest.raises(StorageError):
                await disk.pieces_to_hash(metainfo, Broken())
            disk_after = disk
    with pytest.raises(TorrentStateError):
        await disk_after.pieces_to_hash(metainfo, fs)
