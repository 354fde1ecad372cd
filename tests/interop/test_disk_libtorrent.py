"""bip_disk and libtorrent 2.1 agree on what is stored where.

For a v1, a v2-only and a hybrid torrent of several files (an empty one, sizes
that are no multiple of the piece length, so v1 pieces span files, v2 pieces end
with their file and the hybrid torrent has pad files), made by bip_metainfo from
known content:

1. our DiskManager writes every piece, block by block in a shuffled order, onto a
   NativeFileSystem;
2. libtorrent, given that directory (no seed mode: it checks the data itself), finds
   every piece and seeds: libtorrent seeds from data we wrote;
3. a second libtorrent session downloads the torrent from the first into a fresh
   directory;
4. our DiskManager, added on that directory, checks every piece good: data
   downloaded by libtorrent checks good in our DiskManager.

Each libtorrent session runs in its own process (``_lt_peer.py``), on loopback, with
LSD, UPnP, NAT-PMP and DHT off, stopped by PID at teardown.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

from bip_disk._events import CheckFinished, PieceVerified
from bip_disk._manager import open_disk_manager
from bip_disk._native import NativeFileSystem
from bip_metainfo import Metainfo, create_torrent

from ._helpers import StartProcess, require_client
from ._seeders import HOST, run_lt_peer

pytestmark = pytest.mark.interop

PIECE = 32 * 1024
FILES = {
    "a.bin": 3 * PIECE + 1000,
    "empty": 0,
    "dir/b.bin": 70_001,
    "dir/c.txt": 5,
    "d.bin": 2 * PIECE,
}


def _make(tmp_path: Path, version: str) -> tuple[Metainfo, bytes]:
    """The torrent and its piece space (pad files as zeros), from content in tmp_path."""
    source = tmp_path / "source" / "payload"
    rng = random.Random(version)
    contents = {}
    for name, size in FILES.items():
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        contents[("payload", *name.split("/"))] = data = rng.randbytes(size)
        path.write_bytes(data)
    metainfo = create_torrent(
        source,
        version=version,  # type: ignore[arg-type]
        piece_length=PIECE,
        creation_date=None,
        created_by=None,
    )
    space = b"".join(
        bytes(entry.length) if entry.is_pad else contents[entry.path]
        for entry in metainfo.info.files
    )
    return metainfo, space


async def _write_with_disk_manager(metainfo: Metainfo, space: bytes, root: Path) -> None:
    info = metainfo.info
    fs = NativeFileSystem(root)
    try:
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(metainfo, fs)
            await disk.wait_checked(torrent)
            order = list(range(info.num_pieces))
            random.Random(1).shuffle(order)
            for piece in order:
                data = space[piece * PIECE : piece * PIECE + info.piece_size(piece)]
                begins = list(range(0, len(data), 16384))
                random.Random(piece).shuffle(begins)
                for begin in begins:
                    await disk.write_block(torrent, piece, begin, data[begin : begin + 16384])
            good = 0
            with trio.fail_after(30):
                async for event in disk.events():
                    if isinstance(event, PieceVerified):
                        assert event.good
                        good += 1
                        if good == info.num_pieces:
                            break
            await disk.save_resume_data(torrent)  # syncs the files
    finally:
        fs.close()


async def _check_with_disk_manager(metainfo: Metainfo, root: Path) -> CheckFinished:
    fs = NativeFileSystem(root)
    try:
        async with open_disk_manager() as disk:
            await disk.add_torrent(metainfo, fs)
            with trio.fail_after(30):
                async for event in disk.events():
                    if isinstance(event, CheckFinished):
                        return event
    finally:
        fs.close()
    raise AssertionError("no CheckFinished")


@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
async def test_libtorrent_seeds_what_we_wrote_and_we_check_what_it_downloaded(
    tmp_path: Path, start_process: StartProcess, version: str
) -> None:
    require_client("libtorrent")
    metainfo, space = _make(tmp_path, version)
    torrent = tmp_path / "payload.torrent"
    torrent.write_bytes(metainfo.to_bytes())
    count = metainfo.info.num_pieces

    ours = tmp_path / "ours"
    await _write_with_disk_manager(metainfo, space, ours)
    assert (ours / "payload" / "empty").stat().st_size == 0
    assert not (ours / "payload" / ".pad").exists()  # pad files are never written

    # No seed mode: libtorrent checks the data itself.
    seeder = await trio.to_thread.run_sync(
        lambda: run_lt_peer(
            start_process, tmp_path, torrent, ours, ready_timeout=30, name="libtorrent-seed"
        )
    )
    assert seeder["have"] == count, seeder
    assert seeder["is_seeding"], seeder

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    downloader = await trio.to_thread.run_sync(
        lambda: run_lt_peer(
            start_process,
            tmp_path,
            torrent,
            theirs,
            wait="complete",
            peer=(HOST, int(seeder["port"])),
            ready_timeout=60,
            name="libtorrent-download",
        )
    )
    assert downloader["have"] == count, downloader

    finished = await _check_with_disk_manager(metainfo, theirs)
    assert finished.good == count
    assert finished.checked == count
    for name in FILES:
        assert (theirs / "payload" / name).read_bytes() == (ours / "payload" / name).read_bytes()
