"""bip_disk's logging: lifecycle at INFO, storage faults at WARNING, never a record per block.

Every record comes from a logger under ``bip_disk`` (``bip_disk.manager``,
``bip_disk.fsspec``); an exception raised to the caller is not also logged above DEBUG.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from bip_disk._errors import StorageError
from bip_disk._events import DiskEvent, PieceVerified, TorrentFailed, TorrentHandle
from bip_disk._filesystem import Buffer, FileStat
from bip_disk._fsspec import FsspecFileSystem
from bip_disk._manager import DiskManager, open_disk_manager
from bip_disk._memory import MemoryFileSystem
from bip_metainfo import Metainfo, create_torrent

PIECE = 16384
MANAGER = "bip_disk.manager"


class FailingFileSystem:
    """A MemoryFileSystem whose operations named in ``failing`` fail with that errno."""

    def __init__(self) -> None:
        self.inner = MemoryFileSystem()
        self.failing: dict[str, int] = {}

    def _maybe_fail(self, operation: str, path: str | None) -> None:
        code = self.failing.get(operation)
        if code is not None:
            raise StorageError(f"{operation} {path}: {os.strerror(code)}", errno=code, path=path)

    def read(self, path: str, offset: int, length: int) -> bytes:
        self._maybe_fail("read", path)
        return self.inner.read(path, offset, length)

    def write(self, path: str, offset: int, data: Buffer) -> None:
        self._maybe_fail("write", path)
        self.inner.write(path, offset, data)

    def size(self, path: str) -> int | None:
        return self.inner.size(path)

    def stat(self, path: str) -> FileStat | None:
        return self.inner.stat(path)

    def allocate(self, path: str, size: int, *, sparse: bool = True) -> None:
        self.inner.allocate(path, size, sparse=sparse)

    def truncate(self, path: str, size: int) -> None:
        self.inner.truncate(path, size)

    def sync(self, path: str | None = None) -> None:
        self._maybe_fail("sync", path)
        self.inner.sync(path)

    def remove(self, path: str) -> None:
        self._maybe_fail("remove", path)
        self.inner.remove(path)

    def rename(self, old: str, new: str) -> None:
        self.inner.rename(old, new)

    def symlink(self, path: str, target: str) -> None:
        self._maybe_fail("symlink", path)
        self.inner.symlink(path, target)

    def close(self) -> None:
        self.inner.close()


def make(tmp_path: Path, pieces: int = 12, *, link: bool = False) -> tuple[Metainfo, bytes]:
    """A v1 torrent of two files ("t/a" holds the first half of the pieces)."""
    root = tmp_path / f"source-{uuid.uuid4().hex}" / "t"
    root.mkdir(parents=True)
    content = random.Random(pieces).randbytes(pieces * PIECE - 100)
    half = pieces // 2 * PIECE
    (root / "a").write_bytes(content[:half])
    (root / "b").write_bytes(content[half:])
    if link:
        (root / "link").symlink_to("a")
    metainfo = create_torrent(
        root, version="v1", piece_length=PIECE, creation_date=None, created_by=None
    )
    return metainfo, content


def piece_of(content: bytes, index: int) -> bytes:
    return content[index * PIECE : (index + 1) * PIECE]


async def events_until(disk: DiskManager, until: Callable[[DiskEvent], bool]) -> list[DiskEvent]:
    seen: list[DiskEvent] = []
    with trio.fail_after(30):
        async for event in disk.events():
            seen.append(event)
            if until(event):
                return seen
    raise AssertionError("the event stream ended")


def records(
    caplog: pytest.LogCaptureFixture, level: int = logging.DEBUG, name: str = MANAGER
) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == name and r.levelno == level]


def messages(caplog: pytest.LogCaptureFixture, level: int, name: str = MANAGER) -> list[str]:
    return [r.getMessage() for r in records(caplog, level, name)]


def assert_ours(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert record.name.startswith("bip_disk."), record.name
        record.getMessage()  # the arguments match the format


async def test_a_torrents_life_is_logged_at_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_disk")
    metainfo, content = make(tmp_path)
    hex_hash = metainfo.info.info_hash.hex()
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(metainfo, MemoryFileSystem())
        await disk.wait_checked(torrent)
        [added, checked] = messages(caplog, logging.INFO)
        assert added == f"added torrent 't' ({hex_hash}): 12 pieces in 2 files, checking its data"
        assert checked.startswith(f"checked torrent 't' ({hex_hash}): 0 of 12 pieces had")
        for index in range(3):
            await disk.write_block(torrent, index, 0, piece_of(content, index))
        await events_until(disk, lambda e: isinstance(e, PieceVerified) and e.piece == 2 and e.good)
        caplog.clear()
        await disk.recheck(torrent)
        await disk.wait_checked(torrent)
        assert messages(caplog, logging.INFO) == [
            f"rechecking torrent 't' ({hex_hash})",
            f"checked torrent 't' ({hex_hash}): 3 of 12 pieces had (3 hashed)",
        ]
        caplog.clear()
        await disk.move_storage(torrent, MemoryFileSystem())
        [moved] = messages(caplog, logging.INFO)
        assert moved.startswith(f"moved torrent 't' ({hex_hash}) to ")
        caplog.clear()
        resume = await disk.save_resume_data(torrent)
        await disk.remove_torrent(torrent, delete_data=True)
        assert messages(caplog, logging.INFO) == [
            f"removed torrent 't' ({hex_hash}) and deleted its files"
        ]
        caplog.clear()
        torrent = await disk.add_torrent(metainfo, MemoryFileSystem(), resume_data=resume)
        await disk.wait_checked(torrent)
        added = messages(caplog, logging.INFO)[0]
        assert added.endswith("checking the data its resume data does not vouch for")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert_ours(caplog)


async def test_a_write_fault_is_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_disk")
    metainfo, content = make(tmp_path)
    async with open_disk_manager(hash_threads=1) as disk:
        torrent = await disk.add_torrent(metainfo, MemoryFileSystem(capacity=4 * PIECE))
        await disk.wait_checked(torrent)
        for index in range(metainfo.info.num_pieces):
            await disk.write_block(torrent, index, 0, piece_of(content, index))
            if disk.status(torrent).error is not None:
                break
        await events_until(disk, lambda e: isinstance(e, TorrentFailed))
    [warning] = records(caplog, logging.WARNING)
    text = warning.getMessage()
    assert text.startswith("torrent 't' (")
    assert "stopped: writing piece 4 failed" in text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert_ours(caplog)


async def test_a_vanished_file_is_one_warning_for_its_pieces_and_one_for_the_stop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_disk")
    metainfo, content = make(tmp_path)
    fs = MemoryFileSystem()
    count = metainfo.info.num_pieces
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(metainfo, fs)
        await disk.wait_checked(torrent)
        for index in range(count):
            await disk.write_block(torrent, index, 0, piece_of(content, index))
        await disk.wait_idle(torrent)
        fs.remove("t/a")
        caplog.clear()
        with pytest.raises(StorageError):
            await disk.read_block(torrent, 4, 0, 100)
    lost, stopped = messages(caplog, logging.WARNING)
    assert "lost 6 verified pieces (0, 1, 2, 3, 4, 5): reading piece 4 failed" in lost
    assert "stopped: reading piece 4 failed" in stopped
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_links_and_syncs_that_fail_are_one_warning_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_disk")
    metainfo, _ = make(tmp_path, link=True)
    fs = FailingFileSystem()
    fs.failing["symlink"] = errno.ENOTSUP
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(metainfo, fs)
        await disk.wait_checked(torrent)
        [link] = messages(caplog, logging.WARNING)
        assert "creating its links failed" in link
        caplog.clear()
        fs.failing = {"sync": errno.EIO}
        await disk.remove_torrent(torrent)
        [sync] = messages(caplog, logging.WARNING)
        assert "removing it failed" in sync
        caplog.clear()
        fs.failing = {"remove": errno.EACCES}
        torrent = await disk.add_torrent(metainfo, fs)
        await disk.wait_checked(torrent)
        await disk.remove_torrent(torrent, delete_data=True)
        # a, b, link and the directory t failed to go: still a single record.
        [delete] = messages(caplog, logging.WARNING)
        assert "removing it failed 4 times" in delete
        assert "(and 3 more)" in delete
        caplog.clear()
        fs.failing = {"sync": errno.EIO}
        await disk.add_torrent(metainfo, fs)
    [close] = messages(caplog, logging.WARNING)
    assert "syncing its files on close failed" in close
    assert_ours(caplog)


async def test_what_is_raised_to_the_caller_is_logged_at_debug_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_disk")
    metainfo, content = make(tmp_path)
    fs = FailingFileSystem()
    destination = FailingFileSystem()
    destination.failing["write"] = errno.ENOSPC
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(metainfo, fs)
        await disk.wait_checked(torrent)
        await disk.write_block(torrent, 0, 0, piece_of(content, 0))
        await disk.wait_idle(torrent)
        caplog.clear()
        with pytest.raises(StorageError):
            await disk.move_storage(torrent, destination)
        fs.failing["sync"] = errno.EIO
        with pytest.raises(StorageError):
            await disk.save_resume_data(torrent)
        del fs.failing["sync"]
    [moving] = [r for r in caplog.records if "moving" in r.getMessage()]
    assert moving.levelno == logging.DEBUG
    assert moving.name == MANAGER
    assert "moving torrent 't' (" in moving.getMessage()
    assert not [r for r in caplog.records if r.levelno > logging.INFO]


async def test_a_bad_piece_is_debug(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_disk")
    metainfo, _ = make(tmp_path)
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(metainfo, MemoryFileSystem())
        await disk.wait_checked(torrent)
        await disk.write_block(torrent, 1, 0, bytes(PIECE))
        await events_until(disk, lambda e: isinstance(e, PieceVerified))
    [bad] = [m for m in messages(caplog, logging.DEBUG) if "hash check" in m]
    assert bad == "piece 1 of torrent 't' failed its hash check: dropped, nothing written"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def _download(tmp_path: Path, pieces: int, block: int, bad_every: int) -> int:
    """Write every piece of a ``pieces``-piece torrent in ``block``-byte blocks, one piece in
    ``bad_every`` first with garbage; returns how many blocks went in."""
    metainfo, content = make(tmp_path, pieces)
    blocks = 0
    async with open_disk_manager(max_in_flight_bytes=8 * PIECE) as disk:
        torrent = await disk.add_torrent(metainfo, MemoryFileSystem())
        await disk.wait_checked(torrent)

        async def write(index: int, data: bytes) -> None:
            nonlocal blocks
            for begin in range(0, len(data), block):
                await disk.write_block(torrent, index, begin, data[begin : begin + block])
                blocks += 1

        async def writer(handle: TorrentHandle) -> None:
            for index in range(pieces):
                data = piece_of(content, index)
                if index % bad_every == 0:
                    await write(index, bytes(len(data)))
                    while index not in decided:
                        await trio.sleep(0)
                await write(index, data)

        decided: set[int] = set()
        good = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer, torrent)
            with trio.fail_after(60):
                async for event in disk.events():
                    if isinstance(event, PieceVerified):
                        decided.add(event.piece)
                        good += event.good
                        if good == pieces:
                            break
        assert disk.have(torrent) == frozenset(range(pieces))
        await disk.save_resume_data(torrent)
    return blocks


async def test_records_above_debug_do_not_grow_with_blocks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_disk")
    small_blocks = await _download(tmp_path / "small", 16, 1024, 4)
    small = [r for r in caplog.records if r.levelno >= logging.INFO]
    small_debug = len(caplog.records)
    assert_ours(caplog)
    caplog.clear()
    large_blocks = await _download(tmp_path / "large", 64, 1024, 4)
    large = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert_ours(caplog)
    assert large_blocks >= 4 * small_blocks >= 4 * 256
    # The same lifecycle records (added, checked), whatever the number of blocks.
    assert [r.msg for r in small] == [r.msg for r in large]
    assert len(large) == 2
    # DEBUG: a bad piece each (one in four), and the manager opening and closing.
    assert small_debug <= 16 // 4 + 8
    assert len(caplog.records) <= 64 // 4 + 8


def test_an_early_upload_of_a_staged_file_is_debug(caplog: pytest.LogCaptureFixture) -> None:
    fsspec = pytest.importorskip("fsspec")
    caplog.set_level(logging.DEBUG, logger="bip_disk")

    def ours() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name.startswith("bip_disk.")]

    fs = FsspecFileSystem(
        fsspec.filesystem("memory"),
        f"/bip-test-{uuid.uuid4().hex}",
        random_writes=False,
        max_staged_bytes=PIECE,
    )
    try:
        fs.write("t/a", 0, bytes(PIECE))
        assert not ours()
        fs.write("t/b", 0, bytes(PIECE))
    finally:
        fs.close()
    [early] = ours()  # fsspec's own DEBUG records aside
    assert early.name == "bip_disk.fsspec"
    assert early.levelno == logging.DEBUG
    assert f"more than {PIECE} bytes staged, uploading 't/" in early.getMessage()
