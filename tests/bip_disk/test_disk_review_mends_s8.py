"""Regressions for a review of the staged fsspec bound and of moves: a REPLACE move leaves a
destination file the source lacks (as libtorrent), recovery on a dead backend is bounded in
time, a refused write loads nothing it need not, the nested-roots check probes only where
the torrent's paths can meet (and skips only a source that refuses writing), and the staged
bytes are counted, not summed."""

from __future__ import annotations

import errno
import random
import threading
import uuid
from typing import Any

import pytest

from bip_bencode import encode
from bip_disk import ExistingFiles, StorageLayout
from bip_disk import _fsspec as fsspec_module
from bip_disk._errors import StorageError
from bip_disk._fileops import copy_files, refuse_nested
from bip_disk._filesystem import Buffer, FileStat, errno_error
from bip_disk._fsspec import FsspecFileSystem
from bip_disk._memory import MemoryFileSystem, SparseBuffer
from bip_metainfo import Info

fsspec = pytest.importorskip("fsspec")

PIECE = 16384


def _layout(*paths: str, length: int = 3) -> StorageLayout:
    """A layout of files named ``t/<path>``, each ``length`` bytes."""
    files: list[Any] = [{b"length": length, b"path": path.encode().split(b"/")} for path in paths]
    total = length * len(paths)
    info = encode(
        {
            b"name": b"t",
            b"piece length": PIECE,
            b"files": files,
            b"pieces": bytes(20 * -(-total // PIECE)),
        }
    )
    return StorageLayout.from_info(Info.from_bytes(info))


# -- 1. REPLACE leaves a destination file the source lacks ---------------------------------


class _Stats(MemoryFileSystem):
    """Counts the paths looked at."""

    def __init__(self) -> None:
        super().__init__()
        self.looked: list[str] = []

    def stat(self, path: str) -> FileStat | None:
        self.looked.append(path)
        return super().stat(path)


def test_replace_leaves_a_file_the_source_lacks() -> None:
    layout = _layout("a", "b", length=2 * PIECE)
    source, destination = MemoryFileSystem(), _Stats()
    source.write("t/a", 0, b"a" * (2 * PIECE))  # t/b never arrived
    mine = random.Random(1).randbytes(2 * PIECE)
    destination.write("t/b", 0, mine)  # the user's own complete copy
    destination.write("t/a", 0, b"old" * PIECE)
    copy_files(source, destination, layout, ExistingFiles.REPLACE)
    assert destination.read("t/b", 0, 3 * PIECE) == mine  # left, as libtorrent does
    assert destination.read("t/a", 0, 3 * PIECE) == b"a" * (2 * PIECE)
    assert "t/b" not in destination.looked  # nothing extra looked at


def test_replace_with_a_folder_where_the_source_lacks_the_file() -> None:
    layout = _layout("a", "b")
    source, destination = MemoryFileSystem(), MemoryFileSystem()
    source.write("t/a", 0, b"abc")
    destination.write("t/b/keep.txt", 0, b"x")  # a folder where t/b would be
    copy_files(source, destination, layout, ExistingFiles.REPLACE)  # used to fail: EISDIR
    assert destination.read("t/b/keep.txt", 0, 9) == b"x"
    assert destination.read("t/a", 0, 9) == b"abc"


# -- 2, 3, 6. the staged fsspec bound ----------------------------------------------------------


def _dead() -> Any:
    """fsspec's memory backend whose uploads fail while ``broken``; counts uploads and
    whole-file loads."""
    memory: Any = type(fsspec.filesystem("memory"))

    class Dead(memory):  # type: ignore[misc]
        broken = False
        uploads = 0
        loads = 0

        def pipe_file(self, path: str, value: bytes, **kwargs: Any) -> None:
            self.uploads += 1
            if self.broken:
                raise ValueError("backend down")
            super().pipe_file(path, value, **kwargs)

        def cat_file(self, path: str, start: Any = None, end: Any = None, **kwargs: Any) -> Any:
            if start is None and end is None:
                self.loads += 1
            return super().cat_file(path, start=start, end=end, **kwargs)

    return Dead()


def _staged(backend: Any, bound: int) -> FsspecFileSystem:
    return FsspecFileSystem(
        backend, f"/bip-s8r-{uuid.uuid4().hex}", random_writes=False, max_staged_bytes=bound
    )


def _counted(fs: FsspecFileSystem) -> int:
    """What the staged files hold, summed (the running count must equal it)."""
    with fs._state:
        return sum(item.data.held for item in fs._staged.values())


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_recovery_on_a_dead_backend_is_bounded_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(fsspec_module, "_monotonic", clock, raising=False)
    backend = _dead()
    fs = _staged(backend, bound=4 * PIECE)
    backend.broken = True
    fs.write("t/a", 0, b"a" * (3 * PIECE))
    fs.write("t/c", 0, b"c" * (2 * PIECE))  # past the bound: both early uploads fail
    uploads = backend.uploads

    def overwrites(count: int) -> int:
        before: int = backend.uploads
        for index in range(count):
            fs.write("t/a", (index % 3) * PIECE, b"z" * PIECE)  # nothing new held
        return int(backend.uploads) - before

    first: float = getattr(fsspec_module, "_RECOVER_FIRST", 1.0)
    longest: float = getattr(fsspec_module, "_RECOVER_MAX", 60.0)
    assert overwrites(100) == 1  # one try (is it back?), then none until the clock moves
    clock.now += first - 0.01
    assert overwrites(10) == 0
    clock.now += 0.02
    assert overwrites(10) == 1
    clock.now += first  # backoff: twice as long now
    assert overwrites(10) == 0
    clock.now += first + 0.01
    assert overwrites(10) == 1
    clock.now += 10_000  # never more than one try per the longest wait
    assert overwrites(10) == 1
    clock.now += longest
    assert overwrites(10) == 1
    # A refused write does not try past the clock either.
    with pytest.raises(StorageError):
        fs.write("t/new", 0, b"n" * (4 * PIECE))
    assert backend.uploads - uploads == 5
    # Back: found at the next try, below twice the bound, and the wait starts over.
    backend.broken = False
    clock.now += longest
    fs.write("t/a", 0, b"back")
    assert fs._held() <= 4 * PIECE
    assert fs._held() == _counted(fs)
    backend.broken = True
    fs.write("t/d", 0, b"d" * (2 * PIECE))
    fs.write("t/e", 0, b"e" * (2 * PIECE))
    assert overwrites(3) == 1  # a new failure: tried at once
    clock.now += first + 0.01  # and the first wait again, not the longest
    assert overwrites(3) == 1
    backend.broken = False
    staged = fs.read("t/a", 0, 4 * PIECE)
    fs.close()
    assert backend.cat_file(f"{fs.root}/t/a") == staged
    assert fs._held() == _counted(fs) == 0


def test_a_refused_write_loads_nothing() -> None:
    backend = _dead()
    fs = _staged(backend, bound=2 * PIECE)
    backend.pipe_file(f"{fs.root}/t/big", b"b" * (64 * PIECE))
    backend.broken = True
    for index in range(3):
        fs.write(f"t/f{index}", 0, b"x" * PIECE)  # held past the bound: uploads failed
    backend.loads = 0
    uploads = backend.uploads
    with pytest.raises(StorageError):
        fs.write("t/big", 0, b"B")  # its 64 chunks cannot come in
    assert backend.loads == 0  # told by its size (was: loaded twice)
    assert backend.uploads == uploads + 1  # one try of the smallest failed file
    with pytest.raises(StorageError):
        fs.write("t/big", 0, b"B")
    assert backend.loads == 0
    assert fs._held() == 3 * PIECE
    # With room for it, a file still loads once, failures or not.
    backend.broken = False
    backend.pipe_file(f"{fs.root}/t/small", b"s" * 10)
    backend.broken = True
    fs.write("t/small", 2, b"S")
    assert backend.loads == 1
    assert fs.read("t/small", 0, 20) == b"ssSsssssss"
    backend.broken = False
    fs.close()
    assert backend.cat_file(f"{fs.root}/t/big") == b"b" * (64 * PIECE)


def test_a_refused_write_goes_on_once_the_backend_is_back() -> None:
    backend = _dead()
    fs = _staged(backend, bound=2 * PIECE)
    backend.pipe_file(f"{fs.root}/t/big", b"b" * (3 * PIECE))
    backend.broken = True
    for index in range(3):
        fs.write(f"t/f{index}", 0, b"x" * PIECE)
    backend.broken = False
    backend.loads = 0
    fs.write("t/big", 0, b"B")  # refused by its size, one upload goes through: it goes on
    assert backend.loads == 1
    assert fs._held() <= 2 * PIECE
    fs.close()
    assert backend.cat_file(f"{fs.root}/t/big") == b"B" + b"b" * (3 * PIECE - 1)


def test_staged_bytes_are_counted_not_summed(monkeypatch: pytest.MonkeyPatch) -> None:
    fs = _staged(fsspec.filesystem("memory"), bound=1 << 30)
    for index in range(300):
        fs.write(f"t/f{index}", 0, b"x")
    looks = [0]
    held = SparseBuffer.held

    def counting(self: SparseBuffer) -> int:
        looks[0] += 1
        return int(held.fget(self))  # type: ignore[attr-defined]

    monkeypatch.setattr(SparseBuffer, "held", property(counting))
    for index in range(10):
        fs.write(f"t/f{index}", 1, b"y" * 100)
    assert looks[0] <= 10 * 4  # was 2 * 300 per write
    monkeypatch.undo()
    assert fs._held() == _counted(fs) == 300 * PIECE
    fs.close()
    assert fs._held() == _counted(fs) == 0


def test_the_count_stays_right_under_every_change() -> None:
    backend = _dead()
    fs = _staged(backend, bound=8 * PIECE)
    errors: list[BaseException] = []
    rng = random.Random(5)
    plan = [
        [
            (rng.randrange(7), f"d{rng.randrange(2)}/f{rng.randrange(6)}", rng.randrange(4))
            for _ in range(60)
        ]
        for _ in range(4)
    ]

    def worker(steps: list[tuple[int, str, int]]) -> None:
        for op, path, size in steps:
            try:
                if op <= 1:
                    fs.write(path, size * PIECE + 7, b"w" * (size * PIECE + 1))
                elif op == 2:
                    fs.truncate(path, size * PIECE // 2)
                elif op == 3:
                    fs.allocate(path, size * PIECE, sparse=size % 2 == 0)
                elif op == 4:
                    fs.remove(path)
                elif op == 5:
                    fs.rename(path, f"d{size % 2}/g{size}")
                else:
                    fs.sync(path)
            except StorageError:
                pass
            except BaseException as error:
                errors.append(error)
            if size == 3:
                backend.broken = not backend.broken  # the backend flaps

    threads = [threading.Thread(target=worker, args=(steps,)) for steps in plan]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert fs._held() == _counted(fs)
    backend.broken = False
    fs.close()
    assert fs._held() == _counted(fs) == 0


# -- 4, 5. the nested-roots check ------------------------------------------------------------


class _Calls(MemoryFileSystem):
    """Counts every storage call the check makes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def stat(self, path: str) -> FileStat | None:
        self.calls += 1
        return super().stat(path)

    def write(self, path: str, offset: int, data: Buffer) -> None:
        self.calls += 1
        super().write(path, offset, data)

    def sync(self, path: str | None = None) -> None:
        self.calls += 1
        super().sync(path)

    def remove(self, path: str) -> None:
        self.calls += 1
        super().remove(path)


def test_refuse_nested_probes_only_where_paths_can_meet() -> None:
    album = _layout(*(f"disc{index}/track.flac" for index in range(500)))
    source, destination = _Calls(), _Calls()
    refuse_nested(source, destination, album)  # no path is another's, a folder deeper
    assert source.calls == destination.calls == 0  # was ~1000
    overlapping = _layout("x", "t/x", "d/e/f", "d/e/g")  # only t/t/x meets t/x, under t
    refuse_nested(source, destination, overlapping)  # side by side: not nested
    # Per half: the marker written, synced and removed, and one folder looked in.
    assert source.calls + destination.calls == 2 * 4


class _Refusing(MemoryFileSystem):
    def __init__(self, code: int) -> None:
        super().__init__()
        self.code = code

    def write(self, path: str, offset: int, data: Buffer) -> None:
        raise errno_error(self.code, path, "write")


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.EPERM])
def test_a_source_refusing_writes_is_left_out(code: int) -> None:
    refuse_nested(_Refusing(code), MemoryFileSystem(), _layout("x", "t/x"))


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
def test_a_source_failing_otherwise_cannot_tell(code: int) -> None:
    with pytest.raises(StorageError) as info:
        refuse_nested(_Refusing(code), MemoryFileSystem(), _layout("x", "t/x"))
    assert "cannot tell whether one storage lies inside the other" in str(info.value)
    assert info.value.errno == code
