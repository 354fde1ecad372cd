"""Regressions for storage items left alone earlier: the staged fsspec memory bound
(overwrites counted as growth, a file's load not counted, concurrent writers passing the
bound), a REPLACE move where the source lacks a file (left, as libtorrent leaves it), and a
move between nested roots whose paths overlap (refused before anything is touched)."""

from __future__ import annotations

import errno
import random
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from bip_disk import ExistingFiles, StorageLayout, TorrentState, open_disk_manager
from bip_disk._errors import StorageError
from bip_disk._fileops import copy_files, refuse_nested
from bip_disk._filesystem import Buffer, FileStat, errno_error
from bip_disk._fsspec import FsspecFileSystem
from bip_disk._memory import MemoryFileSystem
from bip_disk._native import NativeFileSystem
from bip_metainfo import Metainfo, create_torrent

fsspec = pytest.importorskip("fsspec")

PIECE = 16384


# -- 1. the staged fsspec memory bound --------------------------------------------------


def _dead() -> Any:
    """fsspec's memory backend whose uploads fail while ``broken`` (reads still work)."""
    memory: Any = type(fsspec.filesystem("memory"))

    class Dead(memory):  # type: ignore[misc]
        broken = False
        uploads = 0

        def pipe_file(self, path: str, value: bytes, **kwargs: Any) -> None:
            self.uploads += 1
            if self.broken:
                raise ValueError("backend down")
            super().pipe_file(path, value, **kwargs)

    return Dead()


def _staged(backend: Any, bound: int) -> FsspecFileSystem:
    return FsspecFileSystem(
        backend, f"/bip-s8-{uuid.uuid4().hex}", random_writes=False, max_staged_bytes=bound
    )


def _failing(backend: Any, fs: FsspecFileSystem, files: int) -> None:
    """Stage ``files`` one-block files with uploads failing: the last write is over the
    bound, its early uploads fail, and every staged file is marked failed."""
    backend.broken = True
    for index in range(files):
        fs.write(f"t/f{index}", 0, b"x" * PIECE)
    assert fs._held() == files * PIECE


def test_an_overwrite_of_staged_bytes_is_not_growth() -> None:
    backend = _dead()
    fs = _staged(backend, bound=PIECE)
    _failing(backend, fs, 2)  # twice the bound held, uploads failing
    uploads = backend.uploads
    fs.write("t/f0", 0, b"y" * PIECE)  # the same chunk again: nothing more held
    fs.write("t/f1", 100, b"z" * 50)
    assert backend.uploads <= uploads + 2  # one try per write at most (is it back?)
    assert fs._held() == 2 * PIECE
    with pytest.raises(StorageError) as info:
        fs.write("t/f1", PIECE, b"new")  # a new chunk is still refused
    assert info.value.path in {"t/f0", "t/f1"}
    assert fs._held() == 2 * PIECE
    backend.broken = False
    fs.close()
    assert backend.cat_file(f"{fs.root}/t/f0") == b"y" * PIECE


def test_loading_a_file_counts_against_the_bound() -> None:
    backend = _dead()
    fs = _staged(backend, bound=2 * PIECE)
    backend.pipe_file(f"{fs.root}/t/big", b"b" * (3 * PIECE))  # three chunks in the backend
    _failing(backend, fs, 3)  # 3 blocks held, bound 2, uploads failing: 1 block of room
    with pytest.raises(StorageError):
        fs.write("t/big", 0, b"B")  # one byte, but the file's three chunks must be loaded
    assert fs._held() <= 4 * PIECE
    fs.write("t/f0", 0, b"ok")  # what is staged can still be written
    backend.broken = False
    fs.close()
    assert fs._held() == 0
    assert backend.cat_file(f"{fs.root}/t/big") == b"b" * (3 * PIECE)


def test_concurrent_writers_stay_inside_the_bound() -> None:
    backend = _dead()
    fs = _staged(backend, bound=2 * PIECE)
    _failing(backend, fs, 3)  # 3 blocks held, room for 1 more under twice the bound
    # Four new files on four different stripes, written at once: each writer looks at the
    # backend for its file only once every one of them has got that far.
    paths: list[str] = []
    locks: set[int] = set()
    for index in range(1000):
        path = f"u/n{index}"
        if id(fs._lock(path)) not in locks:
            locks.add(id(fs._lock(path)))
            paths.append(path)
        if len(paths) == 4:
            break
    wanted = {f"{fs.root}/{path}" for path in paths}
    barrier = threading.Barrier(len(paths), timeout=5)
    seen: set[str] = set()
    seen_lock = threading.Lock()
    isfile = backend.isfile

    def meeting_isfile(full: str) -> bool:
        with seen_lock:
            first = full in wanted and full not in seen
            seen.add(full)
        if first:
            barrier.wait()
        return bool(isfile(full))

    backend.isfile = meeting_isfile
    outcomes: list[BaseException | None] = []

    def writer(path: str) -> None:
        try:
            fs.write(path, 0, b"n" * PIECE)
            outcomes.append(None)
        except BaseException as error:
            outcomes.append(error)

    threads = [threading.Thread(target=writer, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert len(outcomes) == len(paths)
    assert all(isinstance(error, StorageError | type(None)) for error in outcomes), outcomes
    assert fs._held() <= 4 * PIECE  # twice the bound: one writer got in, the others not
    assert outcomes.count(None) == 1
    backend.isfile = isfile
    backend.broken = False
    fs.close()
    assert fs._held() == 0


@pytest.mark.parametrize("write", ["overwrite", "new file"])
def test_a_backend_back_is_found_below_twice_the_bound(write: str) -> None:
    backend = _dead()
    fs = _staged(backend, bound=2 * PIECE)
    _failing(backend, fs, 3)  # past the bound, under twice it: no write is refused
    backend.broken = False
    if write == "overwrite":
        fs.write("t/f0", 0, b"again")
    else:
        fs.write("t/new", 0, b"n")  # its own early upload goes through: the backend is back
    assert fs._held() <= 2 * PIECE  # the failed files were tried again
    fs.close()
    expected = b"again" if write == "overwrite" else b"xxxxx"
    assert backend.cat_file(f"{fs.root}/t/f0")[:5] == expected


# -- 2. a REPLACE move where the source has no file (left, as libtorrent) -----------------


def _two_files(tmp_path: Path) -> tuple[Metainfo, bytes]:
    source = tmp_path / "made" / "t"
    source.mkdir(parents=True)
    content = random.Random(8).randbytes(4 * PIECE)
    (source / "a").write_bytes(content[: 2 * PIECE])
    (source / "b").write_bytes(content[2 * PIECE :])
    metainfo = create_torrent(source, piece_length=PIECE, creation_date=None, created_by=None)
    return metainfo, content


def test_replace_leaves_a_destination_file_the_source_lacks(tmp_path: Path) -> None:
    metainfo, content = _two_files(tmp_path)
    layout = StorageLayout.from_info(metainfo.info)
    source, destination = MemoryFileSystem(), MemoryFileSystem()
    source.write("t/a", 0, content[: 2 * PIECE])  # t/b never arrived
    destination.write("t/b", 0, b"stale" * 9999)
    destination.write("t/a", 0, b"old")
    copy_files(source, destination, layout, ExistingFiles.REPLACE)
    # Left, as libtorrent leaves it (it may be the user's own copy).
    assert destination.read("t/b", 0, 5) == b"stale"
    assert destination.read("t/a", 0, 3 * PIECE) == content[: 2 * PIECE]
    # KEEP keeps it too.
    assert [f.path for f in copy_files(source, destination, layout, ExistingFiles.KEEP).kept] == [
        "t/a",
        "t/b",
    ]
    assert destination.read("t/b", 0, 5) == b"stale"


# -- 3. nested roots ------------------------------------------------------------------------


def _overlapping(tmp_path: Path) -> tuple[Metainfo, bytes]:
    """A torrent named ``t`` holding ``t/x`` and ``t/t/x``: moved one ``t`` deeper (or
    shallower), one file's new place is the other's old one."""
    source = tmp_path / "made" / "t"
    (source / "t").mkdir(parents=True)
    content = random.Random(9).randbytes(4 * PIECE)
    (source / "x").write_bytes(content[: 2 * PIECE])
    (source / "t" / "x").write_bytes(content[2 * PIECE :])
    metainfo = create_torrent(source, piece_length=PIECE, creation_date=None, created_by=None)
    return metainfo, content


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("inward", [True, False])
async def test_a_move_between_overlapping_nested_roots_is_refused(
    tmp_path: Path, inward: bool
) -> None:
    metainfo, content = _overlapping(tmp_path)
    top = tmp_path / "top"
    old_root, new_root = (top, top / "t") if inward else (top / "t", top)
    old = NativeFileSystem(old_root)
    new = NativeFileSystem(new_root)
    old.write("t/x", 0, content[: 2 * PIECE])
    old.write("t/t/x", 0, content[2 * PIECE :])
    before = _files(top)
    try:
        with trio.fail_after(10):
            async with open_disk_manager() as disk:
                torrent = await disk.add_torrent(metainfo, old)
                assert await disk.wait_checked(torrent) is TorrentState.READY
                with pytest.raises(StorageError) as info:
                    await disk.move_storage(torrent, new)
                assert info.value.errno == errno.EINVAL
                assert "inside" in str(info.value)
                assert disk.status(torrent).state is TorrentState.READY
                assert disk.have(torrent) == frozenset(range(4))
                stored = content[2 * PIECE :] + content[: 2 * PIECE]  # t/t/x comes first
                for piece in range(4):
                    block = await disk.read_block(torrent, piece, 0, PIECE)
                    assert block == stored[piece * PIECE :][:PIECE]
        assert _files(top) == before  # nothing touched, no marker left
    finally:
        old.close()
        new.close()


async def test_a_move_out_of_a_doubled_folder_is_not_refused(tmp_path: Path) -> None:
    """Nested roots whose paths do not meet (``top/t/t/...`` to ``top/t/...``) move."""
    metainfo, content = _two_files(tmp_path)
    top = tmp_path / "top"
    old = NativeFileSystem(top / "t")
    new = NativeFileSystem(top)
    old.write("t/a", 0, content[: 2 * PIECE])
    old.write("t/b", 0, content[2 * PIECE :])
    try:
        with trio.fail_after(10):
            async with open_disk_manager() as disk:
                torrent = await disk.add_torrent(metainfo, old)
                await disk.wait_checked(torrent)
                await disk.move_storage(torrent, new)
                assert disk.have(torrent) == frozenset(range(4))
        assert _files(top) == {"t/a": content[: 2 * PIECE], "t/b": content[2 * PIECE :]}
    finally:
        old.close()
        new.close()


def test_nested_staged_fsspec_views_are_found_and_leave_no_marker(tmp_path: Path) -> None:
    overlapping = StorageLayout.from_info(_overlapping(tmp_path / "o")[0].info)
    apart = StorageLayout.from_info(_two_files(tmp_path / "a")[0].info)
    backend = fsspec.filesystem("memory")
    root = f"/bip-s8-{uuid.uuid4().hex}"
    outer = FsspecFileSystem(backend, root, random_writes=False)
    inner = FsspecFileSystem(backend, f"{root}/t", random_writes=False)
    for old, new in ((outer, inner), (inner, outer)):
        with pytest.raises(StorageError) as info:
            refuse_nested(old, new, overlapping)
        assert info.value.errno == errno.EINVAL
        refuse_nested(old, new, apart)  # nested, but no path lands on another
    refuse_nested(outer, FsspecFileSystem(backend, f"{root}-b"), overlapping)  # side by side
    assert backend.find(root) == []
    assert outer._held() == inner._held() == 0


class _ReadOnly(MemoryFileSystem):
    def write(self, path: str, offset: int, data: Buffer) -> None:
        raise errno_error(errno.EROFS, path, "write")


class _Blind(MemoryFileSystem):
    def stat(self, path: str) -> FileStat | None:
        if ".bip-disk-move-" in path:
            raise errno_error(errno.EIO, path, "stat")
        return super().stat(path)


def test_refuse_nested_without_an_answer(tmp_path: Path) -> None:
    layout = StorageLayout.from_info(_overlapping(tmp_path)[0].info)
    source = MemoryFileSystem()
    source.write("t", 0, b"a file where the torrent has a folder")  # ENOTDIR: not nested
    refuse_nested(source, MemoryFileSystem(), layout)
    refuse_nested(_ReadOnly(), MemoryFileSystem(), layout)  # its half cannot be looked at
    with pytest.raises(StorageError) as info:
        refuse_nested(_Blind(), MemoryFileSystem(), layout)  # never "not nested" then
    assert "cannot tell whether one storage lies inside the other" in str(info.value)
    assert info.value.errno == errno.EIO
