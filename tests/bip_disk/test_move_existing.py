"""DiskManager.move_storage(existing=...): what becomes of the torrent's files that are at the
destination already (libtorrent's move_flags_t). REPLACE is the plain move (test_manager.py);
here FAIL refuses before anything is copied (and stops when one appears during the copy), and
KEEP leaves them alone, keeps their old copies, and checks their pieces from the new storage.
Each on a MemoryFileSystem and a NativeFileSystem."""

from __future__ import annotations

import functools
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from bip_disk import (
    CheckFinished,
    DestinationExistsError,
    DiskEvent,
    DiskManager,
    ExistingFiles,
    FileSystem,
    PieceDiscarded,
    PieceVerified,
    StorageError,
    StorageLayout,
    StorageMoved,
    TorrentHandle,
    TorrentState,
    TorrentStateError,
    open_disk_manager,
)
from bip_disk._filesystem import Buffer
from bip_metainfo import Metainfo, create_torrent

PIECE = 16384
KINDS = ("memory", "native")
LONG_AGO = 1_000_000_000  # 2001, in seconds: a time no write of ours leaves on a file
KEPT_HOLDS = "a file the move kept holds the piece"
FILES = {
    "a.bin": 3 * PIECE + 100,
    "b/small.txt": 10,
    "c.bin": PIECE,
    "d/e/f.bin": 2 * PIECE + 7,
}


@dataclass(frozen=True)
class Sample:
    """A torrent, its files' bytes by stored path, and its piece space (pads as zeros)."""

    metainfo: Metainfo
    contents: dict[str, bytes]
    space: bytes

    def piece(self, index: int) -> bytes:
        start = index * self.metainfo.info.piece_length
        return self.space[start : start + self.metainfo.info.piece_size(index)]

    def pieces_of(self, *paths: str) -> set[int]:
        """The pieces that touch any of ``paths``."""
        layout = StorageLayout.from_info(self.metainfo.info)
        return {
            piece
            for file in layout.stored_files
            if file.path in paths
            for piece in layout.file_pieces(file.index)
        }


def make_sample(tmp_path: Path, version: str) -> Sample:
    rng = random.Random(7)
    root = tmp_path / "source" / "album"
    data = {name: rng.randbytes(size) for name, size in FILES.items()}
    for name, payload in data.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(payload)
    metainfo = create_torrent(
        root,
        version=version,  # type: ignore[arg-type]
        piece_length=PIECE,
        creation_date=None,
        created_by=None,
    )
    layout = StorageLayout.from_info(metainfo.info)
    contents = {file.path: data[file.path.removeprefix("album/")] for file in layout.stored_files}
    space = b"".join(
        bytes(file.length) if file.is_pad else contents[file.path]
        for file in layout.files
        if file.is_pad or file.is_stored
    )
    return Sample(metainfo, contents, space)


def make_fs(kind: str, directory: Path) -> FileSystem:
    if kind == "memory":
        from bip_disk import MemoryFileSystem

        return MemoryFileSystem()
    from bip_disk import NativeFileSystem

    return NativeFileSystem(directory)


async def collect(disk: DiskManager, until: Callable[[DiskEvent], bool]) -> list[DiskEvent]:
    """Events up to and including the first for which ``until`` is true."""
    events: list[DiskEvent] = []
    with trio.fail_after(10):
        async for event in disk.events():
            events.append(event)
            if until(event):
                return events
    raise AssertionError("the event stream ended")


async def seeded(disk: DiskManager, sample: Sample, fs: FileSystem) -> TorrentHandle:
    """The sample added on ``fs`` holding all of it, checked: every piece verified."""
    for path, payload in sample.contents.items():
        fs.write(path, 0, payload)
    torrent = await disk.add_torrent(sample.metainfo, fs)
    assert await disk.wait_checked(torrent) is TorrentState.READY
    assert disk.have(torrent) == frozenset(range(sample.metainfo.info.num_pieces))
    await collect(disk, lambda e: isinstance(e, CheckFinished))
    return torrent


def stored(fs: FileSystem, path: str) -> bytes | None:
    return None if fs.stat(path) is None else fs.read(path, 0, 1 << 20)


# -- KEEP --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "hybrid"])
@pytest.mark.parametrize("kind", KINDS)
async def test_keep_uses_the_files_there_and_checks_only_their_pieces(
    tmp_path: Path, kind: str, version: str
) -> None:
    sample = make_sample(tmp_path, version)
    count = sample.metainfo.info.num_pieces
    old, new = make_fs(kind, tmp_path / "old"), make_fs(kind, tmp_path / "new")
    good, stale = "album/c.bin", "album/d/e/f.bin"
    new.write(good, 0, sample.contents[good])  # a good copy, from long ago
    if kind == "native":
        os.utime(tmp_path / "new" / good, (LONG_AGO, LONG_AGO))
    spoilt = b"x" * FILES["d/e/f.bin"]
    new.write(stale, 0, spoilt)  # as long as the torrent's, but not its bytes
    good_stat = new.stat(good)
    try:
        async with open_disk_manager() as disk:
            torrent = await seeded(disk, sample, old)
            kept = await disk.move_storage(torrent, new, existing=ExistingFiles.KEEP)
            assert kept == (good, stale)
            # Only the pieces touching a kept file are hashed, from the new storage.
            assert disk.status(torrent).state is TorrentState.CHECKING
            events = await collect(disk, lambda e: isinstance(e, CheckFinished))
            assert isinstance(events[0], StorageMoved)
            touched = sample.pieces_of(good, stale)
            bad = sample.pieces_of(stale)
            assert events[-1] == CheckFinished(
                torrent, good=count - len(bad), checked=len(touched), resumed=True
            )
            assert await disk.wait_checked(torrent) is TorrentState.READY
            assert disk.have(torrent) == frozenset(range(count)) - bad

            # The kept files were neither copied over nor written; their old copies stay.
            assert new.stat(good) == good_stat
            assert stored(new, stale) == spoilt
            assert stored(old, good) == sample.contents[good]
            assert stored(old, stale) == sample.contents[stale]
            # Everything else moved, and its old copy is gone.
            for path, payload in sample.contents.items():
                if path not in (good, stale):
                    assert stored(new, path) == payload, path
                    assert old.stat(path) is None, path

            # The stale file's pieces are bad: fetched again, they are written into it.
            for piece in sorted(bad):
                await disk.write_block(torrent, piece, 0, sample.piece(piece))
            verdicts: dict[int, bool] = {}

            def verdict(event: DiskEvent) -> bool:
                if isinstance(event, PieceVerified):
                    verdicts[event.piece] = event.good
                return len(verdicts) == len(bad)

            await collect(disk, verdict)
            assert verdicts == dict.fromkeys(bad, True)
            await disk.wait_idle(torrent)
            assert stored(new, stale) == sample.contents[stale]
            assert await disk.read_block(torrent, 0, 0, 10) == sample.piece(0)[:10]
    finally:
        old.close()
        new.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_keep_with_nothing_there_is_the_plain_move(tmp_path: Path, kind: str) -> None:
    sample = make_sample(tmp_path, "v1")
    old, new = make_fs(kind, tmp_path / "old"), make_fs(kind, tmp_path / "new")
    try:
        async with open_disk_manager() as disk:
            torrent = await seeded(disk, sample, old)
            assert await disk.move_storage(torrent, new, existing=ExistingFiles.KEEP) == ()
            assert disk.status(torrent).state is TorrentState.READY
            await collect(disk, lambda e: isinstance(e, StorageMoved))
            for path, payload in sample.contents.items():
                assert stored(new, path) == payload
                assert old.stat(path) is None
    finally:
        old.close()
        new.close()


async def test_keep_drops_the_pieces_in_memory_that_touch_a_kept_file(tmp_path: Path) -> None:
    sample = make_sample(tmp_path, "v1")
    old, new = make_fs("memory", tmp_path), make_fs("memory", tmp_path)
    kept_path = "album/d/e/f.bin"
    new.write(kept_path, 0, sample.contents[kept_path])
    [kept_piece] = sorted(sample.pieces_of(kept_path))[-1:]
    [other_piece] = sorted(sample.pieces_of("album/a.bin"))[:1]
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(sample.metainfo, old)
        await disk.wait_checked(torrent)
        await collect(disk, lambda e: isinstance(e, CheckFinished))
        await disk.write_block(torrent, kept_piece, 0, sample.piece(kept_piece)[:10])
        await disk.write_block(torrent, other_piece, 0, sample.piece(other_piece)[:10])
        assert disk.statistics().partial_pieces == 2
        assert await disk.move_storage(torrent, new, existing=ExistingFiles.KEEP) == (kept_path,)
        # The check decides about the kept file's piece; the other carries on.
        assert disk.statistics().partial_pieces == 1
        assert disk.statistics().in_flight_bytes == len(sample.piece(other_piece))
        await disk.wait_checked(torrent)
        assert kept_piece in disk.have(torrent)  # the kept file holds it
        assert other_piece not in disk.have(torrent)
        # Told: its blocks were dropped, then the check found it (and the kept file's
        # other pieces) there.
        events = await collect(disk, lambda e: isinstance(e, CheckFinished))
        assert [e for e in events if isinstance(e, PieceDiscarded | PieceVerified)] == [
            PieceDiscarded(torrent, kept_piece, f"blocks dropped: {KEPT_HOLDS}"),
            *(PieceVerified(torrent, piece, good=True) for piece in sorted(disk.have(torrent))),
        ]
        await disk.write_block(torrent, other_piece, 10, sample.piece(other_piece)[10:])
        events = await collect(disk, lambda e: isinstance(e, PieceVerified))
        assert events[-1] == PieceVerified(torrent, other_piece, good=True)


async def test_keep_into_the_same_storage_copies_checks_and_deletes_nothing(
    tmp_path: Path,
) -> None:
    sample = make_sample(tmp_path, "hybrid")
    first, second = make_fs("native", tmp_path / "root"), make_fs("native", tmp_path / "root")
    try:
        async with open_disk_manager() as disk:
            torrent = await seeded(disk, sample, first)
            for existing in ExistingFiles:
                assert await disk.move_storage(torrent, second, existing=existing) == ()
                assert disk.status(torrent).state is TorrentState.READY
                await disk.move_storage(torrent, first, existing=existing)
        for path, payload in sample.contents.items():
            assert stored(first, path) == payload
    finally:
        first.close()
        second.close()


# -- FAIL --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_fail_refuses_before_copying_anything(tmp_path: Path, kind: str) -> None:
    sample = make_sample(tmp_path, "v1")
    old, new = make_fs(kind, tmp_path / "old"), make_fs(kind, tmp_path / "new")
    new.write("album/c.bin", 0, b"theirs")
    new.write("album/d/e/f.bin", 0, b"theirs too")
    try:
        async with open_disk_manager() as disk:
            torrent = await seeded(disk, sample, old)
            with pytest.raises(DestinationExistsError) as caught:
                await disk.move_storage(torrent, new, existing=ExistingFiles.FAIL)
            assert caught.value.path == "album/c.bin"
            assert str(caught.value) == (
                "album/c.bin exists at the destination (and 1 more of the torrent's files)"
            )
            assert isinstance(caught.value, StorageError)
            # Nothing copied; the torrent is where it was, as it was.
            for path in sample.contents:
                assert stored(old, path) == sample.contents[path]
                if path not in ("album/c.bin", "album/d/e/f.bin"):
                    assert new.stat(path) is None, path
            assert stored(new, "album/c.bin") == b"theirs"
            assert disk.status(torrent).state is TorrentState.READY
            assert await disk.read_block(torrent, 0, 0, 10) == sample.piece(0)[:10]

            # With nothing in the way, it moves.
            new.remove("album/c.bin")
            new.remove("album/d/e/f.bin")
            assert await disk.move_storage(torrent, new, existing=ExistingFiles.FAIL) == ()
            for path, payload in sample.contents.items():
                assert stored(new, path) == payload
                assert old.stat(path) is None
    finally:
        old.close()
        new.close()


class Intruded:
    """A FileSystem over ``inner`` in which someone else writes ``path`` at the moment the
    move writes its first byte of the torrent (every other call goes to ``inner``)."""

    def __init__(self, inner: FileSystem, path: str, data: bytes) -> None:
        self.inner = inner
        self.path = path
        self.data = data
        self.intruded = False

    def write(self, path: str, offset: int, data: Buffer) -> None:
        if not self.intruded and path.startswith("album/"):
            self.intruded = True
            self.inner.write(self.path, 0, self.data)
        self.inner.write(path, offset, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("kind", KINDS)
async def test_fail_stops_at_a_file_that_appears_during_the_copy(tmp_path: Path, kind: str) -> None:
    sample = make_sample(tmp_path, "v1")
    old, inner = make_fs(kind, tmp_path / "old"), make_fs(kind, tmp_path / "new")
    late = "album/d/e/f.bin"  # the torrent's last file: copied last
    new = Intruded(inner, late, b"appeared meanwhile")
    assert isinstance(new, FileSystem)
    try:
        async with open_disk_manager() as disk:
            torrent = await seeded(disk, sample, old)
            with pytest.raises(DestinationExistsError, match="appeared during the copy") as caught:
                await disk.move_storage(torrent, new, existing=ExistingFiles.FAIL)
            assert caught.value.path == late
            assert new.intruded
            assert stored(inner, late) == b"appeared meanwhile"  # never overwritten
            assert disk.status(torrent).state is TorrentState.READY
            for path, payload in sample.contents.items():
                assert stored(old, path) == payload  # nothing deleted
            assert disk.have(torrent) == frozenset(range(sample.metainfo.info.num_pieces))
    finally:
        old.close()
        inner.close()


# -- races -------------------------------------------------------------------------------------


class Gated:
    """A FileSystem over ``inner`` whose ``operation`` (``"write"`` or ``"remove"``) of the
    torrent's files waits, on its thread, until ``gate`` is set; ``entered`` is set when one
    first waits."""

    def __init__(self, inner: FileSystem, operation: str) -> None:
        self.inner = inner
        self.operation = operation
        self.entered = threading.Event()
        self.gate = threading.Event()

    def _wait(self, operation: str, path: str) -> None:
        if operation == self.operation and path.startswith("album/"):
            self.entered.set()
            assert self.gate.wait(10)

    def write(self, path: str, offset: int, data: Buffer) -> None:
        self._wait("write", path)
        self.inner.write(path, offset, data)

    def remove(self, path: str) -> None:
        self._wait("remove", path)
        self.inner.remove(path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("delete_data", [False, True])
async def test_a_removal_during_the_copy_ends_the_move(tmp_path: Path, delete_data: bool) -> None:
    sample = make_sample(tmp_path, "v1")
    old, inner = make_fs("memory", tmp_path), make_fs("memory", tmp_path)
    new = Gated(inner, "write")
    failures: list[TorrentStateError] = []
    async with open_disk_manager() as disk:
        torrent = await seeded(disk, sample, old)

        async def move() -> None:
            try:
                await disk.move_storage(torrent, new)
            except TorrentStateError as error:
                failures.append(error)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(move)
                await trio.to_thread.run_sync(new.entered.wait)  # copying
                nursery.start_soon(
                    functools.partial(disk.remove_torrent, torrent, delete_data=delete_data)
                )
                await trio.testing.wait_all_tasks_blocked()
                new.gate.set()
        [failure] = failures
        assert "removed while its storage moved" in str(failure)
        assert disk.statistics().torrents == 0
    for path, payload in sample.contents.items():
        # The removal's data goes with it, wherever the move had copied it.
        assert stored(old, path) == (None if delete_data else payload), path
        # The copy stopped at the removal (the next chunk) and was deleted, data kept or not.
        assert inner.stat(path) is None, path


async def test_a_cancellation_after_the_switch_lets_the_move_finish(tmp_path: Path) -> None:
    sample = make_sample(tmp_path, "v1")
    inner, new = make_fs("memory", tmp_path), make_fs("memory", tmp_path)
    old = Gated(inner, "remove")  # the old files' deletion, after the switch
    moved: list[tuple[str, ...]] = []
    async with open_disk_manager() as disk:
        torrent = await seeded(disk, sample, old)
        scope = trio.CancelScope()

        async def move() -> None:
            with scope:
                moved.append(await disk.move_storage(torrent, new))
                await trio.sleep_forever()  # the cancellation strikes here

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(move)
                await trio.to_thread.run_sync(old.entered.wait)  # deleting the old files
                scope.cancel()
                await trio.sleep(0.05)
                old.gate.set()
        assert moved == [()]  # it returned: the caller knows the files moved
        await collect(disk, lambda e: isinstance(e, StorageMoved))
        for path, payload in sample.contents.items():
            assert stored(new, path) == payload
            assert inner.stat(path) is None  # the old copies are deleted all the same
        assert await disk.read_block(torrent, 0, 0, 10) == sample.piece(0)[:10]


async def test_move_arguments_are_checked(tmp_path: Path) -> None:
    sample = make_sample(tmp_path, "v1")
    old, new = make_fs("memory", tmp_path), make_fs("memory", tmp_path)
    async with open_disk_manager() as disk:
        torrent = await seeded(disk, sample, old)
        with pytest.raises(TypeError, match="existing must be an ExistingFiles"):
            await disk.move_storage(torrent, new, existing="keep")  # type: ignore[arg-type]
        assert disk.status(torrent).state is TorrentState.READY
