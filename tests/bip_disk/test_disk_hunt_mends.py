"""Regressions for the storage hunt's findings: a symlink loop under fsspec's local
backend, staged uploads failing for another file, staged copies lost by a failed
rename or remove, a FIFO swapped in for a file, and any exception a third-party
FileSystem raises. Each is our error (or nothing at all), never a crash or a hang."""

from __future__ import annotations

import errno
import logging
import os
import random
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from bip_disk import _check, _fsspec, _manager
from bip_disk._errors import DestinationExistsError, DiskError, StorageError
from bip_disk._events import PieceVerified, TorrentFailed, TorrentState
from bip_disk._fileops import same_storage, storage_faults
from bip_disk._filesystem import Buffer, FileStat, FileSystem
from bip_disk._fsspec import FsspecFileSystem
from bip_disk._hashing import PieceVerifier
from bip_disk._layout import StorageLayout
from bip_disk._manager import open_disk_manager
from bip_disk._memory import MemoryFileSystem
from bip_disk._native import NativeFileSystem
from bip_metainfo import Metainfo, create_torrent

PIECE = 16384
needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")


def _torrent(tmp_path: Path, seed: int = 3) -> tuple[Metainfo, bytes]:
    source = tmp_path / f"source-{seed}" / "t"
    source.mkdir(parents=True)
    content = random.Random(seed).randbytes(4 * PIECE)
    (source / "a").write_bytes(content[: 2 * PIECE])
    (source / "b").write_bytes(content[2 * PIECE :])
    metainfo = create_torrent(source, piece_length=PIECE, creation_date=None, created_by=None)
    return metainfo, content


async def _failure(disk: Any) -> TorrentFailed:
    with trio.fail_after(10):
        async for event in disk.events():
            if isinstance(event, TorrentFailed):
                return event
    raise AssertionError("the event stream ended")


# -- 1. a symlink loop already in the folder ------------------------------------------


@needs_symlinks
@pytest.mark.parametrize("kind", ["memory", "native", "fsspec-local"])
def test_symlink_loop_is_a_storage_error(
    kind: str, tmp_path: Path, filesystem_factory: Callable[[str, Path], FileSystem]
) -> None:
    fs = filesystem_factory(kind, tmp_path / "root")
    fs.symlink("a", "b")
    fs.symlink("b", "a")
    calls: list[Callable[[], object]] = [
        lambda: fs.read("a", 0, 1),
        lambda: fs.write("a/x", 0, b"x"),
        lambda: fs.stat("a/x"),
        lambda: fs.truncate("a", 0),
    ]
    for call in calls:
        with pytest.raises(StorageError) as info:
            call()
        assert info.value.errno == errno.ELOOP
    fs.close()


@needs_symlinks
async def test_a_loop_in_an_fsspec_local_folder_fails_that_torrent_only(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    metainfo, _ = _torrent(tmp_path)
    root = tmp_path / "looped"
    root.mkdir()
    (root / "t").symlink_to("t")  # the torrent's folder is a loop
    async with open_disk_manager() as disk:
        bad = await disk.add_torrent(
            metainfo, FsspecFileSystem(fsspec.filesystem("file"), str(root))
        )
        fault = await _failure(disk)
        assert isinstance(fault.error, StorageError)
        assert fault.error.errno == errno.ELOOP
        assert disk.status(bad).state is TorrentState.ERROR
        other, content = _torrent(tmp_path, seed=4)
        good = await disk.add_torrent(other, MemoryFileSystem())
        await disk.wait_checked(good)
        await disk.write_block(good, 0, 0, content[:PIECE])
        await disk.wait_idle(good)
        assert disk.have(good) == {0}


# -- 2. and 3. staged mode -------------------------------------------------------------


class _Flaky:
    """An fsspec memory filesystem whose uploads (and removals) fail while ``broken``."""

    def __new__(cls) -> Any:
        fsspec = pytest.importorskip("fsspec")
        memory: Any = type(fsspec.filesystem("memory"))

        class Flaky(memory):  # type: ignore[misc]
            protocol = ("bip-flaky",)
            broken = True

            def pipe_file(self, path: str, value: bytes, **kwargs: Any) -> None:
                if self.broken:
                    raise ValueError("backend said no (a botocore ClientError, say)")
                super().pipe_file(path, value, **kwargs)

            def rm_file(self, path: str) -> None:
                if self.broken:
                    raise ValueError("backend said no")
                super().rm_file(path)

        return Flaky()


def _staged(backend: Any, bound: int = PIECE) -> Any:
    return FsspecFileSystem(
        backend, f"/bip-mend-{uuid.uuid4().hex}", random_writes=False, max_staged_bytes=bound
    )


def test_a_failed_early_upload_of_another_file_keeps_it_for_sync() -> None:
    backend = _Flaky()
    fs = _staged(backend)
    fs.write("t/a", 0, b"x" * PIECE)
    fs.write("t/b", 0, b"y")  # over the bound: t/a's early upload fails, t/b's write does not
    fs.allocate("t/c", 10)
    assert fs.read("t/a", 0, PIECE) == b"x" * PIECE  # still staged: nothing lost
    with pytest.raises(StorageError) as info:
        fs.sync("t/a")
    assert info.value.path == "t/a"
    assert fs.read("t/a", 0, 3) == b"xxx"
    backend.broken = False
    fs.close()
    assert fs._held() == 0
    assert backend.cat_file(f"{fs.root}/t/a") == b"x" * PIECE
    assert backend.cat_file(f"{fs.root}/t/b") == b"y"


def test_staged_memory_stays_bounded_while_uploads_fail() -> None:
    backend = _Flaky()
    fs = _staged(backend)
    fs.write("t/a", 0, b"x" * PIECE)
    fs.write("t/0", 0, b"y" * PIECE)  # twice the bound held: uploads fail, writes do not
    with pytest.raises(StorageError) as info:
        fs.write("t/1", 0, b"y" * PIECE)  # more: the uploads' failure is ours
    assert info.value.path in {"t/a", "t/0", "t/1"}
    assert fs._held() <= 3 * PIECE
    backend.broken = False
    fs.close()
    assert fs._held() == 0


def test_staged_rename_of_a_missing_file_keeps_the_target() -> None:
    fs = _staged(_Flaky(), bound=1 << 20)
    fs.write("t/n", 0, b"precious")
    with pytest.raises(StorageError) as info:
        fs.rename("t/missing", "t/n")
    assert info.value.errno == errno.ENOENT
    assert fs.read("t/n", 0, 8) == b"precious"


def test_staged_remove_that_fails_keeps_the_data() -> None:
    backend = _Flaky()
    backend.broken = False
    fs = _staged(backend, bound=1 << 20)
    fs.write("t/n", 0, b"old")
    fs.sync()
    fs.write("t/n", 0, b"new")  # staged again, not uploaded
    backend.broken = True
    with pytest.raises(StorageError):
        fs.remove("t/n")
    assert fs.read("t/n", 0, 3) == b"new"
    backend.broken = False
    fs.remove("t/n")
    assert fs.stat("t/n") is None


# -- 4. a FIFO where a file was ---------------------------------------------------------


def _bounded(call: Callable[[], object]) -> BaseException | None:
    """Run ``call`` on a thread for at most 5 s; what it raised (a hang fails the test)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:  # handed to the test
            outcome.append(error)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5)
    assert outcome, "the call blocked on the FIFO"
    return outcome[0]


@needs_fifo
def test_a_fifo_swapped_in_for_a_file_is_refused(tmp_path: Path) -> None:
    fs = NativeFileSystem(tmp_path / "root")
    fs.write("t/a", 0, b"x" * 10)
    fs.close()  # the handle is closed: the next call opens the path again
    os.unlink(tmp_path / "root" / "t" / "a")
    os.mkfifo(tmp_path / "root" / "t" / "a")
    for call in (
        lambda: fs.read("t/a", 0, 1),
        lambda: fs.write("t/a", 0, b"y"),
        lambda: fs.sync("t/a"),
        fs.sync,
    ):
        error = _bounded(call)
        assert isinstance(error, StorageError)
        assert error.errno == errno.EINVAL
        assert error.path == "t/a"
    fs.close()


# -- 5. anything a third-party FileSystem raises --------------------------------------


class _Odd(MemoryFileSystem):
    """A third-party FileSystem raising its own exception types from ``failing`` calls."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: set[str] = set()

    def _maybe(self, name: str) -> None:
        if name in self.failing:
            raise ValueError(f"{name} went wrong in a plugin")

    def write(self, path: str, offset: int, data: Buffer) -> None:
        self._maybe("write")
        super().write(path, offset, data)

    def stat(self, path: str) -> FileStat | None:
        self._maybe("stat")
        return super().stat(path)

    def read(self, path: str, offset: int, length: int) -> bytes:
        self._maybe("read")
        return super().read(path, offset, length)


def test_storage_faults_converts_any_exception_but_base_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.DEBUG, logger="bip_disk.manager"),
        pytest.raises(StorageError) as info,
        storage_faults("t/a"),
    ):
        raise ValueError("odd")
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.path == "t/a"
    # Not an OSError: a bug (ours or the plugin's) is told with its traceback.
    (record,) = caplog.records
    assert "ValueError" in record.getMessage()
    assert record.exc_info is not None
    caplog.clear()
    with (
        caplog.at_level(logging.DEBUG, logger="bip_disk.manager"),
        pytest.raises(StorageError),
        storage_faults("t/a"),
    ):
        raise OSError(28, "No space left on device")
    assert not caplog.records  # a plain storage failure: nothing more to say
    exists = DestinationExistsError("t/a exists", path="t/a")
    with pytest.raises(DestinationExistsError) as kept, storage_faults("t/a"):
        raise exists
    assert kept.value is exists
    with pytest.raises(KeyboardInterrupt), storage_faults():
        raise KeyboardInterrupt


@pytest.mark.parametrize("failing", ["write", "stat", "read"])
async def test_any_exception_from_a_filesystem_is_a_fault_not_a_crash(
    tmp_path: Path, failing: str
) -> None:
    metainfo, content = _torrent(tmp_path)
    fs = _Odd()
    if failing == "read":  # data there to check
        fs.write("t/a", 0, content[: 2 * PIECE])
    fs.failing.add(failing)
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(metainfo, fs)
        if failing == "write":
            await disk.wait_checked(torrent)
            await disk.write_block(torrent, 0, 0, content[:PIECE])
        fault = await _failure(disk)
        assert isinstance(fault.error, StorageError)
        assert isinstance(fault.error.__cause__, ValueError)
        assert disk.status(torrent).state is TorrentState.ERROR
    assert isinstance(fault.error, DiskError)


# -- 6. a check holds at most a chunk of a large piece ---------------------------------


class _Counting(MemoryFileSystem):
    """Remembers the largest read asked for."""

    largest = 0

    def read(self, path: str, offset: int, length: int) -> bytes:
        self.largest = max(self.largest, length)
        return super().read(path, offset, length)


@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
def test_large_pieces_are_checked_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    piece = 4 * PIECE
    source = tmp_path / "t"
    source.mkdir()
    rng = random.Random(5)
    # A file of several pieces (the last short), one of less than a piece, one of a block.
    files = {"a": rng.randbytes(2 * piece + 3 * PIECE + 7), "b": rng.randbytes(PIECE + 99)}
    files["c"] = rng.randbytes(100)
    for name, data in files.items():
        (source / name).write_bytes(data)
    metainfo = create_torrent(
        source,
        version=version,  # type: ignore[arg-type]
        piece_length=piece,
        creation_date=None,
        created_by=None,
    )
    verifier = PieceVerifier(metainfo.info, metainfo.piece_layers)
    layout = StorageLayout.from_info(metainfo.info)
    fs = _Counting()
    for name, data in files.items():
        fs.write(f"t/{name}", 0, data)
    pieces = range(metainfo.info.num_pieces)
    monkeypatch.setattr(_check, "_READ_CHUNK", PIECE + 5000)  # not even whole blocks
    assert _check.check_pieces(fs, layout, verifier, pieces) == [True] * len(pieces)
    assert fs.largest <= PIECE + 5000
    fs.write("t/a", piece + PIECE + 3, b"\xff")  # piece 1, in its second chunk
    fs.write("t/b", PIECE + 50, b"\xff")  # the tail of a file of less than a piece
    verdicts = _check.check_pieces(fs, layout, verifier, pieces)
    bad = {index for index, good in enumerate(verdicts) if not good}
    assert bad == {1, 3}  # b is piece 3 in every version
    # Chunked and whole verdicts agree.
    monkeypatch.setattr(_check, "_READ_CHUNK", 1 << 30)
    assert _check.check_pieces(fs, layout, verifier, pieces) == verdicts


# -- 7. the review's findings: a dead backend, a marker that cannot be looked for ------


class _Dead:
    """An fsspec memory filesystem whose uploads fail while ``broken``, counting them."""

    def __new__(cls) -> Any:
        fsspec = pytest.importorskip("fsspec")
        memory: Any = type(fsspec.filesystem("memory"))

        class Dead(memory):  # type: ignore[misc]
            protocol = ("bip-dead",)
            broken = True
            uploads = 0

            def pipe_file(self, path: str, value: bytes, **kwargs: Any) -> None:
                self.uploads += 1
                if self.broken:
                    raise ValueError("backend down")
                super().pipe_file(path, value, **kwargs)

        return Dead()


def test_a_dead_backend_neither_grows_staging_nor_retries_every_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]  # the clock of the waits between tries of a failed upload
    monkeypatch.setattr(_fsspec, "_monotonic", lambda: now[0])
    backend = _Dead()
    bound = 4 * PIECE
    fs = _staged(backend, bound=bound)
    written: dict[tuple[str, int], bytes] = {}
    refusals: list[StorageError] = []
    for count in range(20 * bound // PIECE):  # 20x the bound, a block at a time, 8 files
        path, offset = f"t/f{count % 8}", count // 8 * PIECE
        data = bytes([count % 251]) * PIECE
        try:
            fs.write(path, offset, data)
            written[path, offset] = data
        except StorageError as error:
            refusals.append(error)
        assert fs._held() <= 2 * bound + PIECE
        # At most one upload per write: a failed file is not tried again by every write.
        assert backend.uploads <= count + 1
    assert refusals
    assert all(str(error.path).startswith("t/f") for error in refusals)
    assert len({id(error) for error in refusals}) == len(refusals)  # new ones: no frames pile up
    stat = fs.stat("t/f0")
    assert stat is not None
    assert stat.size < 20 * PIECE  # the refused writes were not taken
    # The backend is back: the next write once the wait is over tries one failed upload,
    # which now succeeds, then the others, and goes on.
    backend.broken = False
    now[0] += _fsspec._RECOVER_MAX
    fs.write("t/f0", 0, b"back")
    written["t/f0", 0] = b"back" + written["t/f0", 0][4:]
    assert fs._held() <= bound + PIECE
    fs.close()
    assert fs._held() == 0
    for (path, offset), data in written.items():
        assert backend.cat_file(f"{fs.root}/{path}", start=offset, end=offset + PIECE) == data


class _MarkerBlind(NativeFileSystem):
    """Native storage whose ``stat`` of a move's marker file fails (a flaky plugin's)."""

    def stat(self, path: str) -> FileStat | None:
        if path.startswith(".bip-disk-move-"):
            raise ValueError("the plugin choked")
        return super().stat(path)


async def test_a_move_whose_marker_cannot_be_looked_for_is_refused(tmp_path: Path) -> None:
    metainfo, content = _torrent(tmp_path)
    old = _MarkerBlind(tmp_path / "root")
    same = NativeFileSystem(tmp_path / "root")  # the same folder: a move must delete nothing
    old.write("t/a", 0, content[: 2 * PIECE])
    old.write("t/b", 0, content[2 * PIECE :])
    try:
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(metainfo, old)
            await disk.wait_checked(torrent)
            with pytest.raises(StorageError) as info:
                await disk.move_storage(torrent, same)
            assert "cannot tell whether the two storages are one" in str(info.value)
            assert disk.status(torrent).state is TorrentState.READY
            assert await disk.read_block(torrent, 3, 0, 10) == content[3 * PIECE :][:10]
        assert (tmp_path / "root" / "t" / "a").read_bytes() == content[: 2 * PIECE]
        assert (tmp_path / "root" / "t" / "b").read_bytes() == content[2 * PIECE :]
        assert not [name for name in os.listdir(tmp_path / "root") if name.startswith(".bip")]
    finally:
        old.close()
        same.close()


async def test_a_bug_of_ours_in_a_check_is_logged_with_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def buggy(*args: object) -> list[bool]:
        raise IndexError("a bug of ours")

    monkeypatch.setattr(_manager, "check_pieces", buggy)
    metainfo, content = _torrent(tmp_path)
    fs = MemoryFileSystem()
    fs.write("t/a", 0, content[: 2 * PIECE])
    caplog.set_level(logging.DEBUG, logger="bip_disk.manager")
    async with open_disk_manager() as disk:
        await disk.add_torrent(metainfo, fs)
        fault = await _failure(disk)
    cause = fault.error.__cause__
    assert cause is not None
    assert cause.__traceback__ is None  # the fault keeps no frames...
    logged = [record for record in caplog.records if record.exc_info]
    assert len(logged) == 1
    assert "checking pieces raised IndexError" in logged[0].getMessage()
    exc_info = logged[0].exc_info
    assert exc_info is not None
    assert exc_info[2] is not None  # ...but the log has them


# -- third review: a move between two staged views of one fsspec root ------------------


async def _download(disk: Any, torrent: Any, content: bytes) -> None:
    """Write every piece through the manager and wait until each is verified."""
    for piece in range(len(content) // PIECE):
        await disk.write_block(torrent, piece, 0, content[piece * PIECE : (piece + 1) * PIECE])
    seen: set[int] = set()
    with trio.fail_after(10):
        async for event in disk.events():
            if isinstance(event, PieceVerified):
                assert event.good
                seen.add(event.piece)
                if len(seen) == len(content) // PIECE:
                    return
    raise AssertionError("the event stream ended")


def _assert_stored(fs: FileSystem, content: bytes) -> None:
    assert fs.read("t/a", 0, 2 * PIECE + 1) == content[: 2 * PIECE]
    assert fs.read("t/b", 0, 2 * PIECE + 1) == content[2 * PIECE :]


@pytest.mark.parametrize("synced", [True, False])
async def test_a_move_between_staged_views_of_one_root_deletes_nothing(
    tmp_path: Path, synced: bool
) -> None:
    fsspec = pytest.importorskip("fsspec")
    backend = fsspec.filesystem("memory")
    root = f"/r3-{tmp_path.name}-{synced}"
    src = FsspecFileSystem(backend, root, random_writes=False)
    dst = FsspecFileSystem(backend, root, random_writes=False)
    metainfo, content = _torrent(tmp_path)
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(metainfo, src)
        await disk.wait_checked(torrent)
        await _download(disk, torrent, content)
        if synced:
            src.sync()
            _assert_stored(dst, content)
        # Unsynced, the torrent's pieces are still only in ``src``'s staged copies.
        await disk.move_storage(torrent, dst)
        _assert_stored(dst, content)
        assert await disk.read_block(torrent, 3, 0, 10) == content[3 * PIECE :][:10]
    src.close()
    dst.close()
    _assert_stored(FsspecFileSystem(backend, root, random_writes=False), content)
    assert not [name for name in backend.ls(root, detail=False) if ".bip-disk-move-" in name]


def test_a_marker_that_cannot_be_uploaded_is_refused_and_dropped() -> None:
    backend = _Dead()
    first = _staged(backend)
    second = FsspecFileSystem(backend, first.root, random_writes=False)
    with pytest.raises(StorageError) as info:
        same_storage(first, second)
    assert "cannot tell whether the two storages are one" in str(info.value)
    assert second._held() == 0  # the staged marker went with the failure
    backend.broken = False
    assert same_storage(first, second)
    assert not same_storage(first, _staged(backend))
    assert not backend.exists(first.root) or not backend.ls(first.root, detail=False)
