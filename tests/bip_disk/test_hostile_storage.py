"""A malicious torrent author against bip_disk: the storage of well-formed hostile torrents.

bip_metainfo makes every path safe and every link point inside the torrent; here the
real file system shows it: nothing is created outside the storage root, links that
would be loops are not created, a file of a petabyte is refused with our error (the
torrent fails, the process does not), and crafted resume data cannot make a piece
count as had when its file changed since.

What fast resume trusts (see :mod:`bip_disk._resume`): a piece listed in ``have``
whose every file has the recorded size and a non-zero recorded mtime. Anything else
is hashed again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio

import bip_metainfo._info
from bip_bencode import encode
from bip_disk._events import CheckFinished, TorrentState
from bip_disk._filesystem import FileStat
from bip_disk._manager import DiskManager, open_disk_manager
from bip_disk._native import NativeFileSystem
from bip_disk._resume import ResumeData
from bip_metainfo import Info

PIECE = 16384


def _info(files: list[dict[bytes, Any]], piece_length: int = PIECE) -> Info:
    total = sum(entry.get(b"length", 0) for entry in files)
    data = encode(
        {
            b"name": b"t",
            b"piece length": piece_length,
            b"files": files,
            b"pieces": bytes(20 * -(-total // piece_length)),
        }
    )
    return Info.from_bytes(data)


def _file(*path: bytes, length: int = 3) -> dict[bytes, Any]:
    return {b"length": length, b"path": list(path)}


def _link(path: list[bytes], *target: bytes) -> dict[bytes, Any]:
    return {b"attr": b"l", b"path": path, b"symlink path": list(target)}


def _tree(top: Path) -> dict[str, str | int]:
    """Everything under ``top``: a link's target, or a file's size (-1 for a directory)."""
    found: dict[str, str | int] = {}
    for directory, names, files in os.walk(top):
        for name in names + files:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, top)
            if os.path.islink(path):
                found[relative] = os.readlink(path)
            elif os.path.isdir(path):
                found[relative] = -1
            else:
                found[relative] = os.path.getsize(path)
    return found


async def _add(disk: DiskManager, info: Info, fs: NativeFileSystem, **options: Any) -> Any:
    handle = await disk.add_torrent(info, fs, **options)
    with trio.fail_after(20):
        await disk.wait_checked(handle)
    return handle


async def test_hostile_paths_and_links_stay_inside_the_root(tmp_path: Path) -> None:
    info = _info(
        [
            _file(b"..", b"..", b"escaped"),
            _file(b"/etc", b"passwd"),
            _file(b"C:", b"Windows", b"con"),
            _file(b"a"),
            _file(b"A"),
            _file(b"a", b"b"),  # "a" is a file and a directory
            _link([b"up"], b"..", b"..", b"..", b"usr"),
            _link([b"abs"], b"/usr"),
            _link([b"p"], b"q"),
            _link([b"q"], b"p"),
            _link([b"d", b"loop"], b"d"),
            _file(b"d", b"f"),
            _link([b"r"], b"d", b"f"),
        ]
    )
    root = tmp_path / "dl"
    with NativeFileSystem(root) as fs:
        async with open_disk_manager() as disk:
            handle = await _add(disk, info, fs, allocate="sparse")
            assert disk.status(handle).state is TorrentState.READY
    assert sorted(os.listdir(tmp_path)) == ["dl"]  # nothing beside the root
    tree = _tree(root)
    for relative, what in tree.items():
        real = os.path.realpath(root / relative)
        assert real == str(root.resolve()) or real.startswith(str(root.resolve()) + os.sep)
        if isinstance(what, str):  # a link: relative, and to something that exists
            assert not os.path.isabs(what)
            assert os.path.exists(root / relative), relative
    assert tree["t/r"] == "d/f"
    # "../../../usr" and "/usr" are "usr" from the root: not in the torrent, not created
    for loop in ("t/up", "t/abs", "t/p", "t/q", "t/d/loop"):
        assert loop not in tree  # self-links and loops are not created
    assert tree["t/_/_/escaped"] == 3
    assert tree["t/C_/Windows/con_"] == 3
    assert tree["t/a/b"] == 3
    names = [part.casefold() for part in os.listdir(root / "t")]
    assert len(names) == len(set(names))  # no two names meet on a case-insensitive disk


async def test_a_petabyte_file_fails_the_torrent_with_our_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # bip_metainfo refuses files past libtorrent's ~16 TiB (under ext4's own limit): one
    # past every file system's limit comes from an Info parsed without that bound.
    monkeypatch.setattr(bip_metainfo._info, "MAX_FILE_SIZE", 2**62)
    length = 2**50
    data = encode(
        {b"name": b"big", b"piece length": 2**29, b"length": length, b"pieces": bytes(40 * 2**20)}
    )
    info = Info.from_bytes(data)
    with NativeFileSystem(tmp_path / "dl") as fs:
        async with open_disk_manager() as disk:
            for allocate in ("sparse", "full"):
                handle = await _add(disk, info, fs, allocate=allocate)
                status = disk.status(handle)
                if status.state is TorrentState.ERROR:  # the file system's size limit
                    assert status.reason is not None
                    assert "big" in status.reason
                else:  # a file system with holes that large: sparse, no blocks used
                    assert allocate == "sparse"
                    assert os.stat(tmp_path / "dl" / "big").st_blocks < 1024
                await disk.remove_torrent(handle)
            # The manager survives and keeps serving other torrents.
            small = _info([_file(b"x")])
            other = await _add(disk, small, fs)
            assert disk.status(other).state is TorrentState.READY


async def test_crafted_resume_data_cannot_vouch_for_changed_files(tmp_path: Path) -> None:
    info = _info([_file(b"a", length=PIECE), _file(b"b", length=PIECE)])
    root = tmp_path / "dl"
    (root / "t").mkdir(parents=True)
    for name in ("a", "b"):
        (root / "t" / name).write_bytes(b"\xee" * PIECE)  # not the torrent's data
    real = [os.stat(root / "t" / name) for name in ("a", "b")]
    everything = frozenset(range(info.num_pieces))
    saved = 10**18

    def resume(*stats: FileStat | None) -> bytes:
        return ResumeData(info.info_hash, info.num_pieces, everything, stats, saved).to_bytes()

    forged = {
        # the sizes match but the mtimes are wrong: hashed again, found bad
        "mtime": resume(FileStat(PIECE, 1), FileStat(PIECE, 1)),
        # the mtimes match but the sizes do not
        "size": resume(
            FileStat(PIECE + 1, real[0].st_mtime_ns), FileStat(PIECE + 1, real[1].st_mtime_ns)
        ),
        # no file recorded at all (missing then): nothing vouched for
        "missing": resume(None, None),
        # mtime 0: storage that keeps none never vouches
        "zero": resume(FileStat(PIECE, 0), FileStat(PIECE, 0)),
    }
    with NativeFileSystem(root) as fs:
        for name, data in forged.items():
            async with open_disk_manager() as disk:
                handle = await disk.add_torrent(info, fs, resume_data=data)
                finished: CheckFinished | None = None
                with trio.fail_after(20):
                    async for event in disk.events():
                        if isinstance(event, CheckFinished):
                            finished = event
                            break
                assert finished is not None
                assert finished.good == 0, name
                assert finished.checked == info.num_pieces, name
                assert disk.have(handle) == frozenset(), name
