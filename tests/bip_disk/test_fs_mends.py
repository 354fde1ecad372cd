"""Regressions for FileSystem defects a hunt proved: a write in flight during a sync left
unsynced, fsspec's creation time taken for a modification time, an exclusive create in a
directory removed meanwhile, a handle cached across a remove, a renamed directory's dirty
marks dropped, a long link name replaced through a temporary name too long, and a v2
single-file torrent's ``name_override`` ignored. Then a review's: a mark left for a path gone
failing every later sync, a write's count in flight left behind by a rename, a failed removal
dropping marks, a removal scanning every mark, a failing close leaking counts. Races are
forced with events and patched calls, never sleeps."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import uuid
from pathlib import Path
from typing import Any, ClassVar

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
    fs.close()
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
    fs.close()
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
    fs.close()
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
    fs.close()
    other.close()


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
    with NativeFileSystem(tmp_path / "root") as fs, pytest.raises(StorageError) as caught:
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
    with Racing(root) as fs:
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
    fs.close()


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
    # The write marked the path after the removal: sync() passes over it (before the file
    # is written again, which would hide a mark left for the path gone).
    fs.sync()
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
    """A write in flight (its cached handle taken, its bytes not written yet) while its
    file is removed: the removal drops the path's dirty mark once the file is gone, and
    ``sync()`` succeeds afterwards. (A write that opened the file before the removal and
    marks the path after it: see test_sync_after_a_write_opened_before_a_remove.)"""
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
    assert "t/a.bin" not in fs._dirty
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
    fs.close()
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


# -- 6. marks of paths that are gone; writes in flight across a rename ------------------
#
# A second review: a dirty mark left for a path removed meanwhile failed every later
# sync() (a shared FileSystem: every torrent's resume data), a rename left the count of
# a write in flight under the old path, a removal that failed had dropped the marks
# under it, a removal scanned every mark, a failing close leaked a write's count.


class _GatedOpen(NativeFileSystem):
    """Holds the first ``_open`` of a thread other than the main one, once ``gate`` is
    set, after it opened (its descriptor not cached yet) until ``go``."""

    gate = False

    def __init__(self, root: Path, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.opened, self.go = threading.Event(), threading.Event()
        self.fds: list[int] = []  # what the held open returned

    def _open(self, path: str, parts: tuple[str, ...], flags: int) -> tuple[int, bool]:
        result = super()._open(path, parts, flags)
        if self.gate and threading.current_thread() is not threading.main_thread():
            self.gate = False
            self.fds.append(result[0])
            self.opened.set()
            assert self.go.wait(WAIT)
        return result


class _GatedWrites:
    """Holds each write thread named in ``held`` just before its ``pwrite`` (its handle
    taken, its write counted in flight) until its event is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
        self.entered = {name: threading.Event() for name in names}
        self.go = {name: threading.Event() for name in names}
        self.threads: list[threading.Thread] = []
        real = native._pwrite_all

        def gated(handle: Any, offset: int, view: memoryview) -> None:
            name = threading.current_thread().name
            if name in self.go:
                self.entered[name].set()
                assert self.go[name].wait(WAIT)
            real(handle, offset, view)

        monkeypatch.setattr(native, "_pwrite_all", gated)

    def start(self, name: str, fs: NativeFileSystem, path: str, data: bytes) -> None:
        """Start a write of ``data`` at ``path`` on a thread ``name``; wait until it is held."""
        thread = threading.Thread(target=fs.write, args=(path, 0, data), name=name)
        self.threads.append(thread)
        thread.start()
        assert self.entered[name].wait(WAIT)

    def finish(self, name: str) -> None:
        """Let the write on ``name`` go and wait until it is done."""
        self.go[name].set()
        for thread in self.threads:
            if thread.name == name:
                thread.join(WAIT)
                assert not thread.is_alive()

    def finish_all(self) -> None:
        """Let every write go (the tests' ``finally``)."""
        for name in self.go:
            self.finish(name)


def _relative(synced: list[str], root: Path) -> set[str]:
    real = os.path.realpath(root)
    return {os.path.relpath(path, real) for path in synced}


def test_sync_after_a_write_opened_before_a_remove(tmp_path: Path) -> None:
    """A write opens the file, a remove unlinks it and returns, then the write marks the
    path dirty: ``sync()`` passes over the path that is gone (it raised ENOENT, then and
    at every later sync: a shared FileSystem could save no torrent's resume data)."""
    fs = _GatedOpen(tmp_path / "root")
    fs.write("t/a.bin", 0, b"old data")
    fs.write("t/b.bin", 0, b"other")
    fs.sync()
    fs.close()
    fs.gate = True
    writer = threading.Thread(target=fs.write, args=("t/a.bin", 0, b"mid"))
    writer.start()
    try:
        assert fs.opened.wait(WAIT)
        fs.remove("t/a.bin")
    finally:
        fs.go.set()
        writer.join(WAIT)
    assert not writer.is_alive()
    assert fs.stat("t/a.bin") is None
    fs.write("t/b.bin", 0, b"OTHER")
    fs.sync()
    fs.sync()
    assert not fs._dirty
    fs.close()


@pytest.mark.parametrize("move", [False, True], ids=["remove", "rename"])
def test_sync_passes_over_a_path_removed_while_it_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, move: bool
) -> None:
    """``sync()`` lists the changed paths, then another thread removes (or renames) one
    before its turn: that sync and the later ones succeed, and a renamed file is synced
    at its new path."""
    armed = [True]

    class Racing(NativeFileSystem):
        def _walk(
            self, path: str, parts: tuple[str, ...], *, create: bool, follow_last: bool
        ) -> tuple[int | None, str]:
            if armed[0] and path == "t/b.bin" and follow_last and not create:
                armed[0] = False  # sync's turn: what another thread's call would do now
                if move:
                    self.rename("t/b.bin", "t/c.bin")
                else:
                    self.remove("t/b.bin")
            return super()._walk(path, parts, create=create, follow_last=follow_last)

    fs = Racing(tmp_path / "root")
    fs.write("t/a.bin", 0, b"a")
    fs.write("t/b.bin", 0, b"b")
    fs.sync()
    assert not armed[0]
    synced = _fsynced(monkeypatch)
    fs.sync()
    assert ("t/c.bin" in _relative(synced, tmp_path / "root")) is move
    fs.sync()
    assert not fs._dirty
    fs.close()


def test_sync_between_a_rename_and_its_bookkeeping_keeps_the_marks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync that finds a file gone after the rename moved it but before the rename
    moved its mark leaves the mark for the rename to move: the file is synced at its
    new path by the next sync."""
    fs = NativeFileSystem(tmp_path / "root")
    fs.write("t/a.bin", 0, b"data")
    real_replace = os.replace
    armed = [True]

    def replace_then_sync(*args: Any, **kwargs: Any) -> None:
        real_replace(*args, **kwargs)
        if armed[0]:
            armed[0] = False
            fs.sync()  # another thread's, between the move and its bookkeeping

    monkeypatch.setattr(os, "replace", replace_then_sync)
    fs.rename("t", "u")
    assert not armed[0]
    synced = _fsynced(monkeypatch)
    fs.sync()
    assert "u/a.bin" in _relative(synced, tmp_path / "root")
    fs.close()


def test_a_write_in_flight_across_a_rename_keeps_the_new_path_marked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write counted in flight when its directory is renamed counts under the new
    path: a sync meanwhile keeps the moved mark, as its bytes may land after the fsync."""
    fs = NativeFileSystem(tmp_path / "root")
    fs.write("t/a.bin", 0, b"first")
    fs.sync()
    writes = _GatedWrites(monkeypatch, "w")
    try:
        writes.start("w", fs, "t/a.bin", b"second")
        fs.rename("t", "u")
        fs.sync()  # the write's bytes are not written yet
        assert "u/a.bin" in fs._dirty
    finally:
        writes.finish_all()
    synced = _fsynced(monkeypatch)
    fs.sync()
    assert (tmp_path / "root" / "u" / "a.bin").read_bytes() == b"second"
    assert "u/a.bin" in _relative(synced, tmp_path / "root")
    assert not fs._dirty
    assert not fs._writing
    fs.close()


def test_writes_in_flight_onto_a_rename_destination_and_twice_renamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes in flight at both ends of a rename count together at the destination, and
    a count renamed twice follows: the mark stays until the last of them is done."""
    fs = NativeFileSystem(tmp_path / "root")
    fs.write("a.bin", 0, b"a")
    fs.write("b.bin", 0, b"b")
    fs.sync()
    writes = _GatedWrites(monkeypatch, "on a", "on b")
    try:
        writes.start("on a", fs, "a.bin", b"A")
        writes.start("on b", fs, "b.bin", b"B")
        fs.rename("a.bin", "b.bin")  # "on b" writes to the replaced file
        fs.rename("b.bin", "c.bin")
        writes.finish("on b")
        fs.sync()
        assert "c.bin" in fs._dirty  # "on a" is still in flight
        writes.finish("on a")
    finally:
        writes.finish_all()
    synced = _fsynced(monkeypatch)
    fs.sync()
    assert "c.bin" in _relative(synced, tmp_path / "root")
    assert (tmp_path / "root" / "c.bin").read_bytes() == b"A"
    fs.sync()
    assert not fs._dirty
    assert not fs._writing
    fs.close()


# -- 7. a removal that fails keeps the marks under its path ------------------------------


def test_failed_remove_and_symlink_keep_the_marks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Removing a directory that still holds another torrent's file fails (ENOTEMPTY,
    which deleting a torrent's files expects of shared folders), and so does a link
    where a directory is (EEXIST): the files under either are still synced."""
    fs = NativeFileSystem(tmp_path / "root")
    fs.write("common/b.bin", 0, b"torrent B's piece")
    fs.write("common/a.bin", 0, b"A")
    fs.write("x/c.bin", 0, b"C")
    fs.remove("common/a.bin")
    with pytest.raises(StorageError) as caught:
        fs.remove("common")
    assert caught.value.errno == errno.ENOTEMPTY
    if hasattr(os, "symlink"):
        with pytest.raises(StorageError) as caught:
            fs.symlink("x", "common/b.bin")
        assert caught.value.errno == errno.EEXIST
    synced = _fsynced(monkeypatch)
    fs.sync()
    assert {"common/b.bin", "x/c.bin"} <= _relative(synced, tmp_path / "root")
    fs.close()


def test_removed_directory_drops_the_marks_under_it(tmp_path: Path) -> None:
    """A removal that succeeds drops the marks under its path, a directory's too."""
    fs = NativeFileSystem(tmp_path / "root")
    fs.write("d/f.bin", 0, b"x")
    fs.write("dd.bin", 0, b"y")  # "d" is a prefix of its name, not its directory
    os.unlink(tmp_path / "root" / "d" / "f.bin")  # behind our back: the mark stays
    fs.remove("d")
    assert set(fs._dirty) == {"dd.bin"}
    fs.close()


# -- 8. removing a file looks at no other file's marks ------------------------------------


class _CountedPath(str):
    """A path that counts the prefix tests made on it (a scan of every mark makes one)."""

    __slots__ = ()
    tests: ClassVar[list[int]] = [0]

    def startswith(self, *args: Any) -> bool:
        self.tests[0] += 1
        return super().startswith(*args)


def test_removing_a_file_scans_no_other_marks(tmp_path: Path) -> None:
    """Deleting a torrent's N files removes them one by one: each removal must not look
    at every other unsynced file (quadratic: 8000 files took 15 s). The handle cache is
    looked at, but it holds at most ``max_open_files``: one here, the last file written."""
    fs = NativeFileSystem(tmp_path / "root", max_open_files=1)
    for index in range(20):
        fs.write(_CountedPath(f"t/f{index}.bin"), 0, b"x")
    fs.write("t/gone.bin", 0, b"x")
    _CountedPath.tests[0] = 0
    fs.remove("t/gone.bin")
    fs.remove("t/missing.bin")
    assert _CountedPath.tests[0] == 0
    assert len(fs._dirty) == 20
    fs.close()


# -- 9. a close that fails leaks no count -------------------------------------------------


def _failing_close(monkeypatch: pytest.MonkeyPatch, fds: list[int]) -> None:
    """``os.close`` closes, then reports EIO for the descriptors in ``fds`` (NFS and FUSE
    report deferred write errors at close)."""
    real = os.close

    def failing(fd: int) -> None:
        real(fd)
        if fd in fds:
            fds.remove(fd)
            raise OSError(errno.EIO, "deferred write error reported at close")

    monkeypatch.setattr(os, "close", failing)


def test_failing_close_after_a_write_leaks_no_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``close()`` retires the handle a write uses; the write closes it when done, and
    that close fails: the write is reported failed, its count in flight is over (it
    stayed, and the path's mark could never be dropped again)."""
    fs = NativeFileSystem(tmp_path / "root")
    fs.write("t/a.bin", 0, b"x")
    errors: list[StorageError] = []

    def write() -> None:
        try:
            fs.write("t/a.bin", 0, b"y")
        except StorageError as error:
            errors.append(error)

    entered, go = threading.Event(), threading.Event()
    real_pwrite_all = native._pwrite_all

    def gated(handle: Any, offset: int, view: memoryview) -> None:
        entered.set()
        assert go.wait(WAIT)
        real_pwrite_all(handle, offset, view)

    monkeypatch.setattr(native, "_pwrite_all", gated)
    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert entered.wait(WAIT)
        _failing_close(monkeypatch, [fs._handles["t/a.bin"].fd])
        fs.close()  # retires the handle in use: the writer closes it
    finally:
        go.set()
        writer.join(WAIT)
    assert not writer.is_alive()
    assert [error.errno for error in errors] == [errno.EIO]
    fs.sync()
    assert not fs._dirty  # no write left counted in flight, which would keep the mark
    assert not fs._writing
    fs.close()


def test_failing_close_of_a_spare_descriptor_leaks_no_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writes open the file at once; the later to come back uses the other's
    descriptor and closes its own, which fails: its counts are given back."""
    fs = _GatedOpen(tmp_path / "root")
    fs.write("a.bin", 0, b"x")
    fs.close()
    fs.gate = True
    errors: list[StorageError] = []

    def write() -> None:
        try:
            fs.write("a.bin", 0, b"y")
        except StorageError as error:
            errors.append(error)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert fs.opened.wait(WAIT)
        fs.write("a.bin", 1, b"z")  # opens and caches its own descriptor
        _failing_close(monkeypatch, list(fs.fds))
    finally:
        fs.go.set()
        writer.join(WAIT)
    assert not writer.is_alive()
    assert [error.errno for error in errors] == [errno.EIO]
    assert fs._handles["a.bin"].users == 0
    fs.sync()
    assert not fs._dirty  # no write left counted in flight, which would keep the mark
    assert not fs._writing
    fs.close()


def test_failing_close_of_an_evicted_descriptor_leaks_no_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write's open evicts an idle descriptor whose close fails: the write fails with
    that error, and gives back what it took."""
    fs = NativeFileSystem(tmp_path / "root", max_open_files=1)
    fs.write("a.bin", 0, b"a")
    _failing_close(monkeypatch, [fs._handles["a.bin"].fd])
    with pytest.raises(StorageError) as caught:
        fs.write("b.bin", 0, b"b")
    assert caught.value.errno == errno.EIO
    assert fs._handles["b.bin"].users == 0
    fs.sync()
    assert not fs._dirty  # no write left counted in flight, which would keep the mark
    assert not fs._writing
    fs.close()


def test_fsspec_sync_passes_over_a_file_removed_while_it_ran() -> None:
    """The same race on staged fsspec storage: ``sync()`` lists the staged files, another
    thread removes one before its upload; that sync still succeeds."""
    fsspec = pytest.importorskip("fsspec")
    from bip_disk._fsspec import FsspecFileSystem

    armed = [True]

    class Racing(FsspecFileSystem):
        def sync(self, path: str | None = None) -> None:
            if armed[0] and path == "t/b.bin":
                armed[0] = False
                self.remove("t/b.bin")  # what another thread's call would do now
            super().sync(path)

    fs = Racing(fsspec.filesystem("memory"), f"/bip-mend-{uuid.uuid4().hex}", random_writes=False)
    fs.write("t/a.bin", 0, b"a")
    fs.write("t/b.bin", 0, b"b")
    fs.sync()
    assert not armed[0]
    assert fs.read("t/a.bin", 0, 1) == b"a"
    assert fs.stat("t/b.bin") is None
    fs.close()


def test_a_failing_close_is_a_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write error NFS defers to close(): our StorageError, never a bare OSError."""
    fs = NativeFileSystem(tmp_path)
    fs.write("a.bin", 0, b"x")
    real_close = os.close

    def failing_close(fd: int) -> None:
        real_close(fd)
        raise OSError(errno.EIO, "deferred write error")

    monkeypatch.setattr(os, "close", failing_close)
    with pytest.raises(StorageError) as raised:
        fs.close()
    assert raised.value.errno == errno.EIO
