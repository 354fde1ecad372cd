"""DiskManager.delete_files (a torrent's files deleted without adding it: one a client
removes with its data before it ever reached the disk manager) and a move whose copy stops
between chunks once its torrent is removed or the manager closes (the copy made so far
deleted, files found at the destination before left alone)."""

from __future__ import annotations

import errno
import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing
from tests._disk_race import PATH, PIECE, make, open_gate_once_closing

from bip_disk import (
    DiskManager,
    ExistingFiles,
    StorageLayout,
    TorrentHandle,
    TorrentState,
    _fileops,
    open_disk_manager,
)
from bip_disk._errors import StorageError, TorrentStateError
from bip_disk._fileops import CopyStopped, copy_files
from bip_disk._filesystem import Buffer, FileSystem
from bip_disk._memory import MemoryFileSystem
from bip_disk._native import NativeFileSystem
from bip_metainfo import Metainfo, create_torrent

KINDS = ("memory", "native")


def _filesystem(kind: str, directory: Path) -> FileSystem:
    if kind == "memory":
        return MemoryFileSystem()
    directory.mkdir(parents=True, exist_ok=True)
    return NativeFileSystem(directory)


def _album(tmp_path: Path) -> Metainfo:
    """A hybrid torrent ``album``: files in nested folders (so pad files), an empty file and
    a link."""
    root = tmp_path / "made" / "album"
    rng = random.Random(8)
    for name, size in (("a.bin", 20000), ("d/b.bin", 100), ("d/e/c.bin", 3000), ("d/empty", 0)):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(rng.randbytes(size))
    (root / "link").symlink_to("a.bin")
    return create_torrent(root, piece_length=PIECE, creation_date=None, created_by=None)


def _store(fs: FileSystem, metainfo: Metainfo) -> StorageLayout:
    """Store the torrent's files (zeros: their bytes do not matter here) and its link."""
    layout = StorageLayout.from_info(metainfo.info)
    for file in layout.stored_files:
        fs.allocate(file.path, file.length)
        fs.write(file.path, 0, b"\x01" * min(file.length, 10))
    for link in layout.symlinks:
        assert link.symlink_target is not None
        fs.symlink(link.path, link.symlink_target)
    return layout


# -- DiskManager.delete_files -------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_delete_files_of_a_torrent_never_added(tmp_path: Path, kind: str) -> None:
    metainfo = _album(tmp_path)
    fs = _filesystem(kind, tmp_path / "store")
    layout = _store(fs, metainfo)
    pad = next(file.path for file in layout.files if file.is_pad)
    fs.write(pad, 0, b"not the torrent's")  # a real file where a pad file would be: no pad's
    fs.write("album/d/other", 0, b"not the torrent's")
    fs.write("elsewhere", 0, b"x")
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            assert await disk.delete_files(metainfo.info, fs) == []
            # Nothing left to delete is no error either.
            assert await disk.delete_files(metainfo, fs) == []
            # The torrent can be added afterwards (it was never in the manager).
            torrent = await disk.add_torrent(metainfo, fs, create_files=False)
            assert await disk.wait_checked(torrent) is TorrentState.READY
            assert disk.have(torrent) == frozenset()
    for file in layout.stored_files + layout.symlinks:
        assert fs.stat(file.path) is None, file.path
    assert fs.read(pad, 0, 100) == b"not the torrent's"
    assert fs.read("album/d/other", 0, 100) == b"not the torrent's"
    assert fs.stat("elsewhere") is not None
    if kind == "native":
        # The folders left empty are removed, the one still holding a file stays.
        root = tmp_path / "store" / "album"
        assert not (root / "d" / "e").exists()
        assert sorted(p.name for p in (root / "d").iterdir()) == ["other"]


class FailingRemove(MemoryFileSystem):
    """Removing ``album/a.bin`` fails (permission denied); ``gate`` holds every remove
    until set once ``hold`` is."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.entered = threading.Event()
        self.gate = threading.Event()

    def remove(self, path: str) -> None:
        if self.hold:
            self.entered.set()
            assert self.gate.wait(10)  # bounded: a failing test does not hang
        if path == "album/a.bin":
            raise StorageError("remove: permission denied", errno=errno.EACCES, path=path)
        super().remove(path)


async def test_delete_files_collects_errors_and_owns_the_torrent_meanwhile(
    tmp_path: Path,
) -> None:
    metainfo = _album(tmp_path)
    fs = FailingRemove()
    layout = _store(fs, metainfo)
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            fs.hold = True
            problems: list[list[StorageError]] = []

            async def delete() -> None:
                problems.append(await disk.delete_files(metainfo, fs))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(delete)
                assert await trio.to_thread.run_sync(fs.entered.wait, 5)
                # Its files are being deleted: neither added nor deleted twice meanwhile.
                with pytest.raises(TorrentStateError, match="being deleted"):
                    await disk.add_torrent(metainfo, MemoryFileSystem())
                with pytest.raises(TorrentStateError, match="being deleted"):
                    await disk.delete_files(metainfo, MemoryFileSystem())
                fs.gate.set()
            [[problem]] = problems  # collected, not raised; the others deleted all the same
            assert problem.errno == errno.EACCES
            assert fs.stat("album/a.bin") is not None
            assert all(fs.stat(f.path) is None for f in layout.stored_files[1:])
            # Over: the torrent may be added again.
            torrent = await disk.add_torrent(metainfo, fs, create_files=False)
            await disk.wait_checked(torrent)


async def test_delete_files_refuses_a_torrent_the_manager_has(tmp_path: Path) -> None:
    metainfo = _album(tmp_path)
    fs = MemoryFileSystem()
    layout = _store(fs, metainfo)
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            torrent = await disk.add_torrent(metainfo, fs)
            with pytest.raises(TorrentStateError, match="remove_torrent"):
                await disk.delete_files(metainfo.info, fs)
            # Also through another storage: the info hash is the torrent's.
            with pytest.raises(TorrentStateError, match="remove_torrent"):
                await disk.delete_files(metainfo, MemoryFileSystem())
            with pytest.raises(TypeError):
                await disk.delete_files(b"not a torrent", fs)  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await disk.delete_files(metainfo, object())  # type: ignore[arg-type]
            await disk.wait_checked(torrent)
            assert all(fs.stat(file.path) is not None for file in layout.stored_files)
    # A closing manager takes nothing new.
    async with open_disk_manager() as closing:
        closing._closing = True
        with pytest.raises(TorrentStateError, match="closing"):
            await closing.delete_files(metainfo, fs)


# -- a move stopped mid-copy -------------------------------------------------------------


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Copies in chunks of one piece (instead of 4 MiB): a small file is many chunks."""
    monkeypatch.setattr(_fileops, "_COPY_CHUNK", PIECE)
    monkeypatch.setattr(_fileops, "_ZEROS", bytes(PIECE))


class HeldDestination(MemoryFileSystem):
    """Counts the writes to ``t/a``; the one at offset ``held_at`` waits (on its thread)
    until ``gate`` is set."""

    def __init__(self, held_at: int) -> None:
        super().__init__()
        self.held_at = held_at
        self.writes = 0
        self.entered = threading.Event()
        self.gate = threading.Event()

    def write(self, path: str, offset: int, data: Buffer) -> None:
        if path == PATH:
            self.writes += 1
            if offset == self.held_at:
                self.entered.set()
                assert self.gate.wait(10)  # bounded: a failing test does not hang
        super().write(path, offset, data)


def _entries(fs: MemoryFileSystem) -> set[tuple[str, ...]]:
    """Every file, link and folder ``fs`` holds."""
    return set(fs._files) | set(fs._links) | set(fs._dirs)


async def _move_refused(
    disk: DiskManager, torrent: TorrentHandle, new: FileSystem, failures: list[str]
) -> None:
    try:
        await disk.move_storage(torrent, new)
    except TorrentStateError as error:
        failures.append(str(error))


async def _ready(
    disk: DiskManager, tmp_path: Path
) -> tuple[TorrentHandle, MemoryFileSystem, bytes]:
    metainfo, content = make(tmp_path, pieces=16)
    source = MemoryFileSystem()
    source.write(PATH, 0, content)
    torrent = await disk.add_torrent(metainfo, source)
    assert await disk.wait_checked(torrent) is TorrentState.READY
    return torrent, source, content


@pytest.mark.usefixtures("small_chunks")
async def test_a_removal_stops_the_copy_of_a_move(tmp_path: Path) -> None:
    destination = HeldDestination(held_at=2 * PIECE)
    destination.write("t/mine", 0, b"was there")
    before = _entries(destination)
    failures: list[str] = []
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            torrent, source, content = await _ready(disk, tmp_path)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_move_refused, disk, torrent, destination, failures)
                assert await trio.to_thread.run_sync(destination.entered.wait, 5)
                nursery.start_soon(disk.remove_torrent, torrent)
                await trio.testing.wait_all_tasks_blocked()
                destination.gate.set()  # the copy goes on: its next chunk is not copied
    # The held write was the third of sixteen, and the last: the removal waited for it only.
    assert destination.writes == 3
    assert _entries(destination) == before  # the copy made so far was deleted
    assert destination.read("t/mine", 0, 100) == b"was there"
    assert source.read(PATH, 0, len(content)) == content
    assert failures == [f"{torrent!r} was removed while its storage moved"]


@pytest.mark.usefixtures("small_chunks")
async def test_closing_the_manager_stops_the_copy_of_a_move(tmp_path: Path) -> None:
    destination = HeldDestination(held_at=2 * PIECE)
    failures: list[str] = []
    with trio.fail_after(10):
        # The move outlives the manager's block, whose exit closes it mid-copy.
        async with trio.open_nursery() as outer, open_disk_manager() as disk:
            torrent, source, content = await _ready(disk, tmp_path)
            outer.start_soon(_move_refused, disk, torrent, destination, failures)
            assert await trio.to_thread.run_sync(destination.entered.wait, 5)
            outer.start_soon(open_gate_once_closing, destination.gate)
    assert destination.writes == 3
    assert _entries(destination) == set()
    assert source.read(PATH, 0, len(content)) == content
    assert failures == ["the disk manager is closing"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("existing", [ExistingFiles.KEEP, ExistingFiles.REPLACE])
@pytest.mark.usefixtures("small_chunks")
def test_a_stopped_copy_deletes_what_it_wrote_only(
    tmp_path: Path, kind: str, existing: ExistingFiles
) -> None:
    metainfo = _album(tmp_path)
    source = _filesystem(kind, tmp_path / "source")
    layout = _store(source, metainfo)
    destination = _filesystem(kind, tmp_path / "destination")
    destination.write("album/d/e/c.bin", 0, b"found there")  # kept (KEEP) or replaced
    destination.write("album/d/other", 0, b"not the torrent's")
    chunks = 0

    def stop() -> bool:
        nonlocal chunks
        chunks += 1
        # Asked before each file and each further chunk: a.bin (2 chunks), b.bin, then
        # c.bin kept or copied; stopped before d/empty.
        return chunks > 4

    with pytest.raises(CopyStopped) as stopped:
        copy_files(source, destination, layout, existing, stop=stop)
    assert stopped.value.problems == []
    for file in layout.stored_files + layout.symlinks:
        if file.path != "album/d/e/c.bin":
            assert destination.stat(file.path) is None, file.path
    if existing is ExistingFiles.KEEP:  # left alone
        assert destination.read("album/d/e/c.bin", 0, 100) == b"found there"
    else:  # replaced by the copy's, which is deleted with the rest of it
        assert destination.stat("album/d/e/c.bin") is None
    assert destination.read("album/d/other", 0, 100) == b"not the torrent's"
    for file in layout.stored_files:
        assert source.stat(file.path) is not None
    if kind == "native":
        assert not (tmp_path / "destination" / "album" / "a.bin").exists()


@pytest.mark.usefixtures("small_chunks")
def test_a_copy_not_stopped_is_whole(tmp_path: Path) -> None:
    metainfo = _album(tmp_path)
    source, destination = MemoryFileSystem(), MemoryFileSystem()
    layout = _store(source, metainfo)
    checks: Callable[[], bool] = lambda: False  # noqa: E731
    copied = copy_files(source, destination, layout, stop=checks)
    assert copied.kept == ()
    for file in layout.stored_files:
        assert destination.read(file.path, 0, file.length) == source.read(file.path, 0, file.length)
