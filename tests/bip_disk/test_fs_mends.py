"""Regressions for FileSystem defects a hunt proved: a write in flight during a sync left
unsynced, fsspec's creation time taken for a modification time, an exclusive create in a
directory removed meanwhile, a handle cached across a remove, a renamed directory's dirty
marks dropped, a long link name replaced through a temporary name too long, and a v2
single-file torrent's ``name_override`` ignored. Races are forced with events and patched
calls, never sleeps."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

import bip_disk._native as native
from bip_bencode import encode
from bip_disk import StorageLayout
from bip_disk._errors import StorageError
from bip_disk._native import NativeFileSystem
from bip_metainfo import Info, sanitize_path

WAIT = 10.0  # seconds any event wait may take before the test fails


def _fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The real paths ``_fsync`` is called on from now on (Linux's /proc names them)."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to name the descriptors synced")
    synced: list[str] = []
    real = native._fsync

    def logging(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(native, "_fsync", logging)
    return synced


# -- 1. a write in flight during a sync --------------------------------------------------


def test_write_in_flight_during_sync_stays_marked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync that runs while a write is between taking its handle and its ``pwrite``
    must leave the file for the next sync: the bytes land after its fsync."""
    fs = NativeFileSystem(tmp_path / "root")
    fs.write("t/f.bin", 0, b"first")
    fs.sync()
    entered, go = threading.Event(), threading.Event()
    real_pwrite_all = native._pwrite_all

    def gated(handle: Any, offset: int, view: memoryview) -> None:
        if threading.current_thread() is not threading.main_thread():
            entered.set()
            assert go.wait(WAIT)
        real_pwrite_all(handle, offset, view)

    monkeypatch.setattr(native, "_pwrite_all", gated)
    writer = threading.Thread(target=fs.write, args=("t/f.bin", 0, b"second"))
    writer.start()
    try:
        assert entered.wait(WAIT)
        fs.sync()  # the write has its handle, its bytes are not written yet
    finally:
        go.set()
        writer.join(WAIT)
    assert not writer.is_alive()
    synced = _fsynced(monkeypatch)
    fs.sync()
    assert os.path.realpath(tmp_path / "root" / "t" / "f.bin") in synced
    fs.close()


# -- 2. fsspec: creation time is no modification time ----------------------------------


def test_fsspec_in_place_memory_reports_no_mtime() -> None:
    """fsspec's memory backend written in place keeps no modification time: in-place
    writes change neither its 'created' nor its ``modified()``. So the file reports
    ``mtime_ns`` 0 (fast resume never trusts it), never its creation time."""
    fsspec = pytest.importorskip("fsspec")
    from bip_disk._fsspec import FsspecFileSystem

    fs = FsspecFileSystem(fsspec.filesystem("memory"), f"/bip-mend-{uuid.uuid4().hex}")
    assert fs.random_writes
    fs.write("t/f.bin", 0, b"a" * 100)
    before = fs.stat("t/f.bin")
    fs.write("t/f.bin", 10, b"b" * 10)  # same size, other bytes
    after = fs.stat("t/f.bin")
    assert before is not None
    assert after is not None
    assert after.mtime_ns == 0
    assert before.mtime_ns == 0


def test_fsspec_staged_memory_reports_upload_time() -> None:
    """Staged, every upload makes a new object: its creation time is when it was
    written, so a staged memory file still reports a time."""
    fsspec = pytest.importorskip("fsspec")
    from bip_disk._fsspec import FsspecFileSystem

    fs = FsspecFileSystem(
        fsspec.filesystem("memory"), f"/bip-mend-{uuid.uuid4().hex}", random_writes=False
    )
    fs.write("t/f.bin", 0, b"a" * 100)
    fs.sync()
    found = fs.stat("t/f.bin")
    assert found is not None
    assert found.size == 100
    assert found.mtime_ns > 0


def test_fsspec_in_place_keeps_a_real_mtime(tmp_path: Path) -> None:
    """The local backend reports a real modification time, in place too."""
    fsspec = pytest.importorskip("fsspec")
    from bip_disk._fsspec import FsspecFileSystem

    fs = FsspecFileSystem(fsspec.filesystem("file"), str(tmp_path))
    fs.write("f.bin", 0, b"x")
    found = fs.stat("f.bin")
    assert found is not None
    assert found.mtime_ns != 0


# -- 3. an exclusive create in a directory removed meanwhile -----------------------------


def test_create_in_directory_removed_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another torrent's removal deletes the (emptied) folder between our walk and our
    exclusive create: the create walks again, making the folder, as libtorrent does."""
    root = tmp_path / "root"
    fs = NativeFileSystem(root)
    other = NativeFileSystem(root)
    other.write("Season 1/a.mkv", 0, b"A")
    real = native._open_regular
    armed = [True]

    def gated(path: str, name: str, flags: int, dir_fd: int | None, **kw: Any) -> int:
        if armed[0] and flags & os.O_EXCL:
            armed[0] = False
            other.remove("Season 1/a.mkv")
            other.remove("Season 1")
        return real(path, name, flags, dir_fd, **kw)

    monkeypatch.setattr(native, "_open_regular", gated)
    assert fs.write("Season 1/b.mkv", 0, b"piece of B") is True
    assert not armed[0]
    assert (root / "Season 1" / "b.mkv").read_bytes() == b"piece of B"


def test_create_whose_directory_keeps_vanishing_fails_with_enoent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walks again are bounded: a directory removed on every attempt is ENOENT."""
    real = native._open_regular
    calls = [0]

    def vanishing(path: str, name: str, flags: int, dir_fd: int | None, **kw: Any) -> int:
        if flags & os.O_EXCL:
            calls[0] += 1
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        return real(path, name, flags, dir_fd, **kw)

    monkeypatch.setattr(native, "_open_regular", vanishing)
    fs = NativeFileSystem(tmp_path / "root")
    with pytest.raises(StorageError) as caught:
        fs.write("d/f.bin", 0, b"x")
    assert caught.value.errno == errno.ENOENT
    assert calls[0] == native._MAX_ATTEMPTS


def test_mkdir_in_directory_removed_meanwhile(tmp_path: Path) -> None:
    """The folder the walk holds is removed before it makes the next one inside: the
    mkdir fails with ENOENT, and the walk starts again instead of failing the write."""
    root = tmp_path / "root"
    removed = [False]

    class Racing(NativeFileSystem):
        @staticmethod
        def _open_directory(name: str, dir_fd: int, create: bool) -> int:
            if name == "inner" and not removed[0]:
                removed[0] = True
                os.rmdir(root / "outer")  # empty: "inner" is not made yet
            return NativeFileSystem._open_directory(name, dir_fd, create)

    (root / "outer").mkdir(parents=True)
    fs = Racing(root)
    assert fs.write("outer/inner/f.bin", 0, b"data") is True
    assert removed[0]
    assert (root / "outer" / "inner" / "f.bin").read_bytes() == b"data"


def test_create_executable_in_directory_removed_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same race for an executable file's creation."""
    root = tmp_path / "root"
    fs = NativeFileSystem(root)
    (root / "d").mkdir(parents=True)
    real_open = os.open
    armed = [True]

    def racing_open(name: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if armed[0] and flags & os.O_EXCL and name == "x.sh":
            armed[0] = False
            os.rmdir(root / "d")
        return real_open(name, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", racing_open)
    assert fs.create_executable("d/x.sh") is True
    assert not armed[0]
    assert (root / "d" / "x.sh").is_file()


# -- 4. a handle opened while its file is removed ---------------------------------------


def test_handle_opened_during_remove_is_not_cached(tmp_path: Path) -> None:
    """A write that opened the file just before a remove unlinked it must not leave that
    descriptor cached: later reads and writes would go to the deleted file."""
    opened, go = threading.Event(), threading.Event()

    class Gated(NativeFileSystem):
        gate = False

        def _open(self, path: str, parts: tuple[str, ...], flags: int) -> tuple[int, bool]:
            result = super()._open(path, parts, flags)
            if self.gate and threading.current_thread() is not threading.main_thread():
                self.gate = False
                opened.set()
                assert go.wait(WAIT)
            return result

    fs = Gated(tmp_path / "root")
    fs.write("t/a.bin", 0, b"old data")
    fs.close()  # no cached handle: the next write opens one
    fs.gate = True
    writer = threading.Thread(target=fs.write, args=("t/a.bin", 0, b"mid"))
    writer.start()
    try:
        assert opened.wait(WAIT)  # holds a descriptor of the file, not cached yet
        fs.remove("t/a.bin")
    finally:
        go.set()
        writer.join(WAIT)
    assert not writer.is_alive()
    assert fs.stat("t/a.bin") is None
    with pytest.raises(StorageError) as caught:
        fs.read("t/a.bin", 0, 8)
    assert caught.value.errno == errno.ENOENT
    assert fs.write("t/a.bin", 0, b"NEW") is True  # the file is gone: created again
    assert fs.read("t/a.bin", 0, 8) == b"NEW"
    fs.close()


def test_handle_opened_during_rename_is_not_cached(tmp_path: Path) -> None:
    """The same race with a rename: the descriptor holds the file now at the new path."""
    opened, go = threading.Event(), threading.Event()

    class Gated(NativeFileSystem):
        gate = False

        def _open(self, path: str, parts: tuple[str, ...], flags: int) -> tuple[int, bool]:
            result = super()._open(path, parts, flags)
            if self.gate and threading.current_thread() is not threading.main_thread():
                self.gate = False
                opened.set()
                assert go.wait(WAIT)
            return result

    fs = Gated(tmp_path / "root")
    fs.write("t/a.bin", 0, b"old data")
    fs.close()
    fs.gate = True
    writer = threading.Thread(target=fs.write, args=("t/a.bin", 0, b"mid"))
    writer.start()
    try:
        assert opened.wait(WAIT)
        fs.rename("t/a.bin", "t/b.bin")
    finally:
        go.set()
        writer.join(WAIT)
    assert not writer.is_alive()
    assert fs.write("t/a.bin", 0, b"new") is True  # not written into t/b.bin
    assert fs.read("t/a.bin", 0, 8) == b"new"
    assert fs.read("t/b.bin", 0, 8) == b"mid data"  # the racing write went with the file
    fs.close()


def test_write_racing_remove_leaves_no_mark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write in flight while its file is removed leaves no dirty mark for a path that
    is gone: ``sync()`` (which fails on a missing file) still succeeds afterwards."""
    fs = NativeFileSystem(tmp_path / "root")
    fs.write("t/a.bin", 0, b"data")
    entered, go = threading.Event(), threading.Event()
    real_pwrite_all = native._pwrite_all

    def gated(handle: Any, offset: int, view: memoryview) -> None:
        if threading.current_thread() is not threading.main_thread():
            entered.set()
            assert go.wait(WAIT)
        real_pwrite_all(handle, offset, view)

    monkeypatch.setattr(native, "_pwrite_all", gated)
    writer = threading.Thread(target=fs.write, args=("t/a.bin", 0, b"more"))
    writer.start()
    try:
        assert entered.wait(WAIT)
        fs.remove("t/a.bin")
    finally:
        go.set()
        writer.join(WAIT)
    assert not writer.is_alive()
    assert fs.stat("t/a.bin") is None
    fs.sync()
    fs.close()


# -- 5a. renaming a directory keeps its files' dirty marks --------------------------------


def test_rename_directory_keeps_dirty_marks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files written under a renamed directory are still synced by ``sync()``."""
    fs = NativeFileSystem(tmp_path / "root")
    fs.write("t/a.bin", 0, b"x" * 100)
    fs.write("t/sub/b.bin", 0, b"y" * 100)
    fs.write("tt.bin", 0, b"z")  # "t" is a prefix of its name, not its directory
    synced = _fsynced(monkeypatch)
    fs.rename("t", "u")
    fs.sync()
    real = os.path.realpath(tmp_path / "root")
    relative = {os.path.relpath(path, real) for path in synced}
    assert {"u/a.bin", "u/sub/b.bin", "tt.bin"} <= relative
    fs.close()


# -- 5b. replacing a link whose name is long --------------------------------------------


def test_replace_link_with_long_name(tmp_path: Path) -> None:
    """A link name the sanitiser allows (up to 255 bytes) is replaced through a temporary
    name that fits too."""
    if not hasattr(os, "symlink"):
        pytest.skip("no symlinks")
    name = sanitize_path([b"L" * 300 + b".lnk"])[0]
    assert len(name.encode()) > 225
    fs = NativeFileSystem(tmp_path / "root")
    fs.write("t/a", 0, b"a")
    fs.write("t/b", 0, b"b")
    fs.symlink(f"t/{name}", "t/a")
    fs.symlink(f"t/{name}", "t/b")
    assert os.readlink(tmp_path / "root" / "t" / name) == "b"
    assert sorted(os.listdir(tmp_path / "root" / "t")) == sorted(["a", "b", name])


# -- 5c. a v2 single-file torrent whose file is not named as the torrent ----------------


def _v2_single(key: bytes, name: bytes = b"movie") -> Info:
    root = hashlib.sha256(b"x" * 100).digest()
    info: dict[bytes, Any] = {
        b"name": name,
        b"piece length": 16384,
        b"meta version": 2,
        b"file tree": {key: {b"": {b"length": 100, b"pieces root": root}}},
    }
    return Info.from_bytes(encode(info))


def test_v2_single_file_name_override() -> None:
    """The single file sits at the root under its tree key; ``name_override`` renames
    it, as it renames a v1 single file (its pad file goes with the new name too)."""
    info = _v2_single(b"x.mkv")
    assert StorageLayout.from_info(info).files[0].path == "x.mkv"
    layout = StorageLayout.from_info(info, name_override="other")
    stored = [file.path for file in layout.files if not file.is_pad]
    assert stored == ["other"]
    assert all(file.path.startswith("other/") for file in layout.files if file.is_pad)


def test_v2_single_file_named_as_torrent_override() -> None:
    """The usual case, tree key and name alike, is renamed as before."""
    info = _v2_single(b"movie")
    layout = StorageLayout.from_info(info, name_override="other")
    assert [file.path for file in layout.files if not file.is_pad] == ["other"]
