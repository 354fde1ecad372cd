"""DiskManager: downloading, checking, reading, resuming, removing and moving torrents.

Torrents are made by bip_metainfo's create_torrent from files in ``tmp_path`` (so
they are real v1, v2 and hybrid torrents, with pad files, empty files and links);
their storage is each FileSystem in turn.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing

from bip_disk._errors import ResumeDataError, StorageError, TorrentStateError
from bip_disk._events import (
    CheckFinished,
    CheckProgress,
    DiskEvent,
    PieceVerified,
    StorageMoved,
    StorageProblem,
    TorrentHandle,
    TorrentRemoved,
    TorrentState,
)
from bip_disk._filesystem import FileSystem
from bip_disk._layout import StorageLayout
from bip_disk._manager import DiskManager, open_disk_manager
from bip_disk._memory import MemoryFileSystem
from bip_metainfo import Info, Metainfo, create_torrent

PIECE = 16384
BLOCK = 16384


@dataclass(frozen=True)
class Sample:
    """A torrent and its content."""

    metainfo: Metainfo
    contents: dict[str, bytes]  # stored path -> bytes
    space: bytes  # the piece space, pads as zeros

    @property
    def info(self) -> Info:
        return self.metainfo.info

    def piece(self, index: int) -> bytes:
        start = index * self.info.piece_length
        return self.space[start : start + self.info.piece_size(index)]

    def data_size(self, index: int) -> int:
        return self.info.piece_size(index, include_pad=False)


def make_sample(
    tmp_path: Path,
    files: dict[str, bytes],
    version: str = "hybrid",
    piece_length: int = PIECE,
    links: dict[str, str] | None = None,
) -> Sample:
    root = tmp_path / "source" / "album"
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for name, target in (links or {}).items():
        (root / name).symlink_to(target)
    metainfo = create_torrent(
        root,
        version=version,  # type: ignore[arg-type]
        piece_length=piece_length,
        creation_date=None,
        created_by=None,
    )
    layout = StorageLayout.from_info(metainfo.info)
    by_path = {"album/" + name: data for name, data in files.items()}
    contents = {file.path: by_path[file.path] for file in layout.stored_files}
    parts = []
    for file in layout.files:
        if file.is_pad:
            parts.append(bytes(file.length))
        elif file.is_stored:
            parts.append(contents[file.path])
    return Sample(metainfo, contents, b"".join(parts))


def standard_files(seed: int = 1) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {
        "a.bin": rng.randbytes(3 * PIECE + 100),
        "b/empty": b"",
        "b/small.txt": rng.randbytes(10),
        "c.bin": rng.randbytes(PIECE),
        "d/e/f.bin": rng.randbytes(2 * PIECE + 7),
    }


def many_small_files(seed: int = 2) -> dict[str, bytes]:
    """v1: pieces that span many files, zero-length ones among them."""
    rng = random.Random(seed)
    return {f"f{i:02}": rng.randbytes(rng.choice([0, 1, 700, 5000])) for i in range(30)}


async def write_piece(
    disk: DiskManager, torrent: TorrentHandle, sample: Sample, index: int, *, data_only: bool
) -> None:
    """Write a piece's blocks in a shuffled order (only its file bytes with data_only)."""
    data = sample.piece(index)
    size = sample.data_size(index) if data_only else len(data)
    begins = list(range(0, size, BLOCK))
    random.Random(index).shuffle(begins)
    for begin in begins:
        await disk.write_block(torrent, index, begin, data[begin : min(begin + BLOCK, size)])


async def collect(
    disk: DiskManager, until: Callable[[DiskEvent], bool], seen: list[DiskEvent] | None = None
) -> list[DiskEvent]:
    """Events up to and including the first for which ``until`` is true."""
    events = [] if seen is None else seen
    with trio.fail_after(30):
        async for event in disk.events():
            events.append(event)
            if until(event):
                return events
    raise AssertionError("the event stream ended")


def verified(events: list[DiskEvent]) -> dict[int, bool]:
    return {e.piece: e.good for e in events if isinstance(e, PieceVerified)}


async def download(
    disk: DiskManager, torrent: TorrentHandle, sample: Sample, *, data_only: bool = False
) -> list[DiskEvent]:
    """Write every piece; return the events up to the last PieceVerified."""
    events: list[DiskEvent] = []
    count = sample.info.num_pieces

    async def writer() -> None:
        for index in range(count):
            await write_piece(disk, torrent, sample, index, data_only=data_only)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await collect(disk, lambda _: len(verified(events)) == count, events)
    return events


def assert_stored(fs: FileSystem, sample: Sample) -> None:
    for path, data in sample.contents.items():
        assert fs.size(path) == len(data), path
        assert fs.read(path, 0, len(data) + 1) == data, path


CASES = [
    ("v1", many_small_files),
    ("v1", standard_files),
    ("v2", standard_files),
    ("hybrid", standard_files),
]


@pytest.mark.parametrize(("version", "files"), CASES)
async def test_download_every_piece_on_every_filesystem(
    tmp_path: Path,
    filesystem: FileSystem,
    version: str,
    files: Callable[[], dict[str, bytes]],
) -> None:
    sample = make_sample(tmp_path, files(), version)
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(sample.metainfo, filesystem)
        assert disk.status(torrent).state in (TorrentState.CHECKING, TorrentState.READY)
        events = await collect(disk, lambda e: isinstance(e, CheckFinished))
        assert events[-1] == CheckFinished(torrent, good=0, checked=0, resumed=False)
        assert await disk.wait_checked(torrent) is TorrentState.READY
        # v2 peers send a file's last piece without the pad; v1 peers the whole piece.
        events = await download(disk, torrent, sample, data_only=version != "v1")
        assert verified(events) == dict.fromkeys(range(sample.info.num_pieces), True)
        assert disk.have(torrent) == frozenset(range(sample.info.num_pieces))
        assert_stored(filesystem, sample)
        for file in StorageLayout.from_info(sample.info).files:
            if file.is_pad:
                assert filesystem.size(file.path) is None  # pad files are never written
        for index in range(sample.info.num_pieces):
            data = sample.piece(index)
            assert await disk.read_block(torrent, index, 0, len(data)) == data
            assert await disk.read_block(torrent, index, len(data) - 1, 1) == data[-1:]
        stats = disk.statistics()
        assert stats.pieces_good == sample.info.num_pieces
        assert stats.in_flight_bytes == 0
        assert stats.partial_pieces == stats.queued_pieces == 0


async def test_a_bad_piece_is_reported_never_written_and_can_be_downloaded_again(
    tmp_path: Path,
) -> None:
    sample = make_sample(tmp_path, standard_files(), "hybrid")
    fs = MemoryFileSystem()
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(sample.metainfo, fs)
        await disk.wait_checked(torrent)
        corrupt = bytearray(sample.piece(1))
        corrupt[100] ^= 0xFF
        await disk.write_block(torrent, 1, 0, corrupt)
        events = await collect(disk, lambda e: isinstance(e, PieceVerified))
        assert events[-1] == PieceVerified(torrent, 1, good=False)
        assert 1 not in disk.have(torrent)
        assert fs.size("album/a.bin") is None  # nothing of it written
        assert disk.statistics().pieces_bad == 1
        with pytest.raises(TorrentStateError, match="does not have piece 1"):
            await disk.read_block(torrent, 1, 0, 10)
        await disk.write_block(torrent, 1, 0, sample.piece(1))
        events = await collect(disk, lambda e: isinstance(e, PieceVerified))
        assert events[-1] == PieceVerified(torrent, 1, good=True)
        assert disk.have(torrent) == {1}


@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
async def test_checking_existing_data_finds_good_and_bad_pieces(
    tmp_path: Path, version: str
) -> None:
    sample = make_sample(tmp_path, standard_files(), version)
    fs = MemoryFileSystem()
    for path, data in sample.contents.items():
        fs.write(path, 0, data)
    fs.write("album/c.bin", 5, b"\x00" if sample.contents["album/c.bin"][5] else b"\x01")
    layout = StorageLayout.from_info(sample.info)
    bad = (next(f.offset for f in layout.files if f.path == "album/c.bin") + 5) // PIECE
    async with open_disk_manager(hash_threads=2) as disk:
        torrent = await disk.add_torrent(sample.metainfo, fs)
        events = await collect(disk, lambda e: isinstance(e, CheckFinished))
        progress = [e for e in events if isinstance(e, CheckProgress)]
        count = sample.info.num_pieces
        assert progress[0].checked == 0
        assert progress[-1].checked == progress[-1].total == count
        assert [p.checked for p in progress] == sorted(p.checked for p in progress)
        assert events[-1] == CheckFinished(torrent, good=count - 1, checked=count, resumed=False)
        assert disk.have(torrent) == frozenset(range(count)) - {bad}
        assert disk.status(torrent).to_check == count


async def test_missing_and_short_files_are_not_read(tmp_path: Path) -> None:
    sample = make_sample(tmp_path, standard_files(), "v1")
    fs = MemoryFileSystem()
    fs.write("album/a.bin", 0, sample.contents["album/a.bin"][:PIECE])  # one piece of it
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(sample.metainfo, fs)
        events = await collect(disk, lambda e: isinstance(e, CheckFinished))
        assert events[-1] == CheckFinished(torrent, good=1, checked=1, resumed=False)
        assert disk.have(torrent) == {0}
        assert fs.stat("album/b/empty") is not None  # empty files are created after the check


async def test_a_check_without_create_files_changes_nothing(tmp_path: Path) -> None:
    """What a verifying tool needs: the check reads, and the storage stays as it was found
    (no empty files, no directories), also after a recheck; a written piece still lands."""
    sample = make_sample(tmp_path, standard_files(), "v1")
    fs = MemoryFileSystem()
    fs.write("album/a.bin", 0, sample.contents["album/a.bin"][:PIECE])
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(sample.metainfo, fs, create_files=False)
        events = await collect(disk, lambda e: isinstance(e, CheckFinished))
        assert events[-1] == CheckFinished(torrent, good=1, checked=1, resumed=False)
        assert fs.stat("album/b/empty") is None
        assert fs.stat("album/c.bin") is None
        await disk.recheck(torrent)
        await disk.wait_checked(torrent)
        assert fs.stat("album/b/empty") is None
        await write_piece(disk, torrent, sample, 3, data_only=True)
        events = await collect(disk, lambda e: isinstance(e, PieceVerified) and e.piece == 3)
        assert verified(events) == {3: True}
        assert await disk.read_block(torrent, 3, 0, PIECE) == sample.piece(3)
    assert fs.stat("album/c.bin") is not None


async def test_blocks_outside_pieces_and_repeats(tmp_path: Path) -> None:
    sample = make_sample(tmp_path, standard_files(), "v1")
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(sample.metainfo, MemoryFileSystem())
        await disk.wait_checked(torrent)
        last = sample.info.num_pieces - 1
        size = sample.info.piece_size(last)
        for piece, begin, length in [
            (-1, 0, 1),
            (last + 1, 0, 1),
            (0, -1, 1),
            (0, 0, 0),
            (0, PIECE - 1, 2),
            (last, size, 1),
        ]:
            with pytest.raises(TorrentStateError):
                await disk.write_block(torrent, piece, begin, bytes(max(length, 0)))
        with pytest.raises(TorrentStateError):
            await disk.write_block(torrent, "0", 0, b"x")  # type: ignore[arg-type]
        # Overlapping and repeated blocks: the piece completes once, with the last bytes.
        data = sample.piece(0)
        assert await disk.write_block(torrent, 0, 0, b"\xff" * 1000)
        assert await disk.write_block(torrent, 0, 500, data[500:9000])
        assert await disk.write_block(torrent, 0, 0, data[:600])
        assert disk.status(torrent).partial_pieces == 1
        assert await disk.write_block(torrent, 0, 8000, data[8000:])
        events = await collect(disk, lambda e: isinstance(e, PieceVerified))
        assert events[-1] == PieceVerified(torrent, 0, good=True)
        assert not await disk.write_block(torrent, 0, 0, data[:10])  # already had
        assert disk.statistics().blocks_ignored == 1


async def test_pad_bytes_from_a_peer_are_ignored(tmp_path: Path) -> None:
    sample = make_sample(tmp_path, {"x": b"x" * 100, "y": b"y" * 50}, "hybrid")
    assert sample.info.piece_size(0) == PIECE  # 100 bytes of x, then a pad
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(sample.metainfo, MemoryFileSystem())
        await disk.wait_checked(torrent)
        await disk.write_block(torrent, 0, 0, b"x" * 100 + b"\xee" * (PIECE - 100))
        events = await collect(disk, lambda e: isinstance(e, PieceVerified))
        assert events[-1] == PieceVerified(torrent, 0, good=True)


async def test_symlinks_are_created_after_the_check(tmp_path: Path, filesystem: FileSystem) -> None:
    sample = make_sample(
        tmp_path,
        {"real.bin": b"r" * 3000, "sub/other": b"o" * 10},
        "v1",
        links={"link": "real.bin", "sub/up": "../real.bin"},
    )
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(sample.metainfo, filesystem)
        events = await collect(disk, lambda e: isinstance(e, CheckFinished))
        warnings = [e for e in events if isinstance(e, StorageProblem)]
        await download(disk, torrent, sample)
        if warnings:  # a backend that stores no links: the torrent works without them
            assert all(
                isinstance(w.error, StorageError) and w.error.errno == errno.ENOTSUP
                for w in warnings
            )
            assert filesystem.stat("album/link") is None
        else:
            # Both links lead to album/real.bin, whatever directory they are in.
            assert filesystem.read("album/link", 0, 10) == b"r" * 10
            assert filesystem.read("album/sub/up", 0, 10) == b"r" * 10


async def test_torrents_are_told_apart(tmp_path: Path) -> None:
    one = make_sample(tmp_path / "1", standard_files(1), "v1")
    two = make_sample(tmp_path / "2", standard_files(2), "v2")
    async with open_disk_manager() as disk:
        first = await disk.add_torrent(one.metainfo, MemoryFileSystem())
        with pytest.raises(TorrentStateError, match="already added"):
            await disk.add_torrent(one.metainfo, MemoryFileSystem())
        second = await disk.add_torrent(
            two.info, MemoryFileSystem(), piece_layers=two.metainfo.piece_layers
        )
        assert first != second
        await disk.wait_checked(first)
        await disk.wait_checked(second)
        with pytest.raises(TypeError):
            await disk.add_torrent(b"not a torrent", MemoryFileSystem())  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await disk.add_torrent(one.info, object())  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            disk.have(1)  # type: ignore[arg-type]
    async with open_disk_manager() as other:
        with pytest.raises(TorrentStateError, match="not a torrent of this manager"):
            other.have(first)


async def test_v2_info_without_piece_layers_is_refused(tmp_path: Path) -> None:
    sample = make_sample(tmp_path, standard_files(), "v2")
    async with open_disk_manager() as disk:
        with pytest.raises(TorrentStateError, match="piece layers"):
            await disk.add_torrent(sample.info, MemoryFileSystem())


async def test_fast_resume_skips_unchanged_files_and_rechecks_changed_ones(
    tmp_path: Path, filesystem: FileSystem, filesystem_kind: str
) -> None:
    sample = make_sample(tmp_path, standard_files(), "hybrid")
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(sample.metainfo, filesystem)
        await disk.wait_checked(torrent)
        await download(disk, torrent, sample)
        resume = await disk.save_resume_data(torrent)
        assert disk.resume_data(torrent)[:40] == resume[:40]
    count = sample.info.num_pieces
    layout = StorageLayout.from_info(sample.info)
    # A backend that keeps no modification time (fsspec's memory one written in place:
    # mtime_ns 0) is never trusted: every piece is hashed again. Known from the kind, not
    # from the backend under test (one reporting 0 by mistake would pass unnoticed).
    trusted = filesystem_kind != "fsspec-memory"
    # Unchanged files: nothing is hashed (every piece is listed, so racy files do not matter).
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(sample.metainfo, filesystem, resume_data=resume)
        events = await collect(disk, lambda e: isinstance(e, CheckFinished))
        checked = 0 if trusted else count
        assert events[-1] == CheckFinished(torrent, good=count, checked=checked, resumed=True)
    # One file changed behind our back (its size too: some backends keep no mtime):
    # only its pieces are hashed; the first is bad now, the last cannot be had.
    changed = next(f for f in layout.files if f.path == "album/d/e/f.bin")
    filesystem.write(changed.path, 0, b"changed")
    filesystem.truncate(changed.path, changed.length - 1)
    pieces = layout.file_pieces(changed.index)
    assert len(pieces) == 3
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(sample.metainfo, filesystem, resume_data=resume)
        events = await collect(disk, lambda e: isinstance(e, CheckFinished))
        checked = 2 if trusted else count - 1  # (the short last one is not hashed)
        assert events[-1] == CheckFinished(torrent, good=count - 2, checked=checked, resumed=True)
        assert disk.have(torrent) == frozenset(range(count)) - {pieces[0], pieces[2]}


async def test_resume_data_of_another_torrent_is_refused(tmp_path: Path) -> None:
    one = make_sample(tmp_path / "1", standard_files(1), "v1")
    two = make_sample(tmp_path / "2", standard_files(2), "v1")
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(one.metainfo, MemoryFileSystem())
        await disk.wait_checked(torrent)
        resume = disk.resume_data(torrent)
        with pytest.raises(ResumeDataError, match="for torrent"):
            await disk.add_torrent(two.metainfo, MemoryFileSystem(), resume_data=resume)
        with pytest.raises(ResumeDataError):
            await disk.add_torrent(two.metainfo, MemoryFileSystem(), resume_data=b"garbage")


async def test_without_check_only_resume_data_counts(tmp_path: Path) -> None:
    sample = make_sample(tmp_path, standard_files(), "v1")
    fs = MemoryFileSystem()
    for path, data in sample.contents.items():
        fs.write(path, 0, data)
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(sample.metainfo, fs, check=False)
        events = await collect(disk, lambda e: isinstance(e, CheckFinished))
        assert events[-1] == CheckFinished(torrent, good=0, checked=0, resumed=False)


async def test_remove_keeping_and_deleting_data(tmp_path: Path, filesystem: FileSystem) -> None:
    sample = make_sample(tmp_path, standard_files(), "hybrid")
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(sample.metainfo, filesystem)
        await disk.wait_checked(torrent)
        await download(disk, torrent, sample)
        await disk.write_block(torrent, 0, 0, b"x")  # ignored: had
        await disk.remove_torrent(torrent)
        events = await collect(disk, lambda e: isinstance(e, TorrentRemoved))
        assert events[-1] == TorrentRemoved(torrent, data_deleted=False)
        assert_stored(filesystem, sample)
        for call in (disk.have, disk.status, disk.resume_data):
            with pytest.raises(TorrentStateError):
                call(torrent)
        with pytest.raises(TorrentStateError):
            await disk.write_block(torrent, 0, 0, b"x")
        with pytest.raises(TorrentStateError):
            await disk.remove_torrent(torrent)
        # Added again (a new handle), then removed with its data.
        again = await disk.add_torrent(sample.metainfo, filesystem)
        assert again != torrent
        assert await disk.wait_checked(again) is TorrentState.READY
        assert disk.have(again) == frozenset(range(sample.info.num_pieces))
        await disk.remove_torrent(again, delete_data=True)
        events = await collect(disk, lambda e: isinstance(e, TorrentRemoved))
        assert events[-1] == TorrentRemoved(again, data_deleted=True)
        for path in sample.contents:
            assert filesystem.stat(path) is None


async def test_remove_while_checking_and_with_partial_pieces(tmp_path: Path) -> None:
    sample = make_sample(tmp_path, {"big": random.Random(5).randbytes(64 * PIECE)}, "v1")
    fs = MemoryFileSystem()
    fs.write("album/big", 0, sample.contents["album/big"])
    async with open_disk_manager(max_in_flight_bytes=PIECE) as disk:
        torrent = await disk.add_torrent(sample.metainfo, fs)
        await disk.remove_torrent(torrent)  # probably mid-check
        assert disk.statistics().torrents == 0
        torrent = await disk.add_torrent(sample.metainfo, MemoryFileSystem())
        await disk.wait_checked(torrent)
        await disk.write_block(torrent, 0, 0, b"a" * 10)  # takes the whole bound
        blocked: list[BaseException] = []

        async def wait_for_room() -> None:
            try:
                await disk.write_block(torrent, 1, 0, b"b" * 10)
            except TorrentStateError as error:
                blocked.append(error)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_room)
            await trio.testing.wait_all_tasks_blocked()
            assert disk.statistics().waiting_writes == 1
            await disk.remove_torrent(torrent)
        assert len(blocked) == 1
        assert disk.statistics().in_flight_bytes == 0


@pytest.mark.parametrize("target", ["memory", "native"])
async def test_move_storage_keeps_verified_pieces(
    tmp_path: Path,
    filesystem: FileSystem,
    filesystem_factory: Callable[[str, Path], FileSystem],
    target: str,
) -> None:
    sample = make_sample(tmp_path, standard_files(), "hybrid")
    destination = filesystem_factory(target, tmp_path / "moved")
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(sample.metainfo, filesystem)
        await disk.wait_checked(torrent)
        # Everything but the last piece, and half of the last in memory.
        last = sample.info.num_pieces - 1
        events: list[DiskEvent] = []
        for index in range(last):
            await write_piece(disk, torrent, sample, index, data_only=True)
        await collect(disk, lambda _: len(verified(events)) == last, events)
        await disk.write_block(torrent, last, 0, sample.piece(last)[:5])
        before = disk.have(torrent)
        await disk.move_storage(torrent, destination)
        events = await collect(disk, lambda e: isinstance(e, StorageMoved))
        assert disk.have(torrent) == before
        assert disk.status(torrent).partial_pieces == 1
        for path in sample.contents:
            assert filesystem.stat(path) is None  # moved away
        await disk.write_block(torrent, last, 5, sample.piece(last)[5 : sample.data_size(last)])
        events = await collect(disk, lambda e: isinstance(e, PieceVerified))
        assert events[-1] == PieceVerified(torrent, last, good=True)
        assert_stored(destination, sample)
        assert await disk.read_block(torrent, 0, 0, 100) == sample.piece(0)[:100]
        await disk.move_storage(torrent, destination)  # the same storage: nothing to do
        assert disk.have(torrent) == frozenset(range(sample.info.num_pieces))
    destination.close()


async def test_recheck(tmp_path: Path) -> None:
    sample = make_sample(tmp_path, standard_files(), "v2")
    fs = MemoryFileSystem()
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(sample.metainfo, fs)
        await disk.wait_checked(torrent)
        await download(disk, torrent, sample, data_only=True)
        fs.write("album/c.bin", 0, b"zz")
        await disk.recheck(torrent)
        with pytest.raises(TorrentStateError, match="while checking"):
            await disk.recheck(torrent)
        events = await collect(disk, lambda e: isinstance(e, CheckFinished))
        count = sample.info.num_pieces
        assert events[-1] == CheckFinished(torrent, good=count - 1, checked=count, resumed=False)


async def test_closing_writes_complete_pieces_and_drops_partial_ones(tmp_path: Path) -> None:
    sample = make_sample(tmp_path, standard_files(), "v1")
    fs = MemoryFileSystem()
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(sample.metainfo, fs)
        await disk.wait_checked(torrent)
        await disk.write_block(torrent, 0, 0, sample.piece(0))
        await disk.write_block(torrent, 1, 0, sample.piece(1)[:10])
    assert fs.read("album/a.bin", 0, PIECE) == sample.piece(0)
    events = [event async for event in disk.events()]
    assert events[-1] == PieceVerified(torrent, 0, good=True)
    with pytest.raises(TorrentStateError, match="closing"):
        await disk.add_torrent(sample.metainfo, fs)


async def test_an_error_in_the_body_propagates_unwrapped() -> None:
    with pytest.raises(KeyError):
        async with open_disk_manager():
            raise KeyError("body")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_in_flight_bytes": 0},
        {"hash_threads": 0},
        {"io_threads": 0},
        {"read_cache_bytes": -1},
        {"event_buffer": 0},
    ],
)
async def test_bad_arguments(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must"):
        async with open_disk_manager(**kwargs):
            pass


async def test_resume_data_made_while_checking_makes_the_next_start_hash_everything(
    tmp_path: Path,
) -> None:
    sample = make_sample(tmp_path, standard_files(), "v1")
    fs = MemoryFileSystem()
    for path, data in sample.contents.items():
        fs.write(path, 0, data)
    count = sample.info.num_pieces
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(sample.metainfo, fs)
        early = disk.resume_data(torrent)  # still checking: nothing settled
        assert disk.status(torrent).state is TorrentState.CHECKING
        await disk.wait_checked(torrent)
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(sample.metainfo, fs, resume_data=early)
        events = await collect(disk, lambda e: isinstance(e, CheckFinished))
        assert events[-1] == CheckFinished(torrent, good=count, checked=count, resumed=True)


async def test_moving_waits_for_blocks_of_pieces_in_memory(tmp_path: Path) -> None:
    sample = make_sample(tmp_path, standard_files(), "v1")
    source, destination = MemoryFileSystem(), MemoryFileSystem()
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(sample.metainfo, source, name="renamed")
        assert torrent.name == "renamed"
        await disk.wait_checked(torrent)
        data = sample.piece(0)
        await disk.write_block(torrent, 0, 0, data[:100])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(disk.move_storage, torrent, destination)
            await trio.testing.wait_all_tasks_blocked()
            # The rest of the piece waits for the move, then lands in the new storage.
            await disk.write_block(torrent, 0, 100, data[100:])
        events = await collect(disk, lambda e: isinstance(e, PieceVerified))
        assert events[-1] == PieceVerified(torrent, 0, good=True)
        assert destination.read("renamed/a.bin", 0, 10) == data[:10]
        assert source.stat("renamed/a.bin") is None


async def test_moving_to_another_view_of_the_same_root_copies_and_deletes_nothing(
    tmp_path: Path, filesystem_factory: Callable[[str, Path], FileSystem]
) -> None:
    sample = make_sample(tmp_path, standard_files(), "hybrid")
    first = filesystem_factory("native", tmp_path / "root")
    second = filesystem_factory("native", tmp_path / "root")
    try:
        async with open_disk_manager() as disk:
            torrent = await disk.add_torrent(sample.metainfo, first)
            await disk.wait_checked(torrent)
            await download(disk, torrent, sample, data_only=True)
            await disk.move_storage(torrent, second)
            await collect(disk, lambda e: isinstance(e, StorageMoved))
            assert disk.have(torrent) == frozenset(range(sample.info.num_pieces))
        assert_stored(second, sample)
        assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["album"]  # no marker
    finally:
        first.close()
        second.close()


async def test_writes_waiting_for_room_fail_when_the_manager_closes(tmp_path: Path) -> None:
    sample = make_sample(tmp_path, standard_files(), "v1")
    failures: list[str] = []
    async with (
        trio.open_nursery() as outer,
        open_disk_manager(max_in_flight_bytes=PIECE) as disk,
    ):
        torrent = await disk.add_torrent(sample.metainfo, MemoryFileSystem())
        await disk.wait_checked(torrent)
        await disk.write_block(torrent, 0, 0, b"x")

        async def wait_for_room() -> None:
            try:
                await disk.write_block(torrent, 1, 0, b"y")
            except TorrentStateError as error:
                failures.append(str(error))

        outer.start_soon(wait_for_room)
        await trio.testing.wait_all_tasks_blocked()
    assert failures == ["the disk manager is closing"]
