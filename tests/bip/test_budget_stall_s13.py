"""A torrent's writer never stalls behind a block that waits for room for a new piece, and a
resume save that failed is tried again.

bip_disk keeps each piece still arriving in memory under one in-flight bound shared by the
session's torrents. A block that starts a new piece waits for room; were the writer to wait
with it, the blocks that complete the pieces in memory (and free the room) would wait behind
it for good. libtorrent never reserves a piece, so nothing waits behind its writes.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
import trio
import trio.testing
from _engine_helpers import address_of, loopback_config, make_torrent, write_content

import bip._client._session as session_module
import bip._client._torrent as torrent_module
import bip_disk._manager as manager_module
from bip._client import TorrentOptions, open_session
from bip._client._block_queue import BlockQueue
from bip._client._torrent import Torrent
from bip_bencode import encode
from bip_disk import (
    DiskManager,
    FileSystem,
    NativeFileSystem,
    ResumeData,
    StorageError,
    TorrentHandle,
    TorrentState,
    open_disk_manager,
)
from bip_disk._memory import MemoryFileSystem
from bip_metainfo import Info
from bip_peer import Peer, Piece


async def test_blocks_of_pieces_started_pass_blocks_set_aside() -> None:
    # Items are (piece, block); pieces 1 and 3 cannot start now, piece 2 is in memory.
    queue: BlockQueue[tuple[int, int]] = BlockQueue(max_bytes=100, limit_bytes=400)
    room = {1: False, 2: True, 3: False}
    stored: list[tuple[int, int]] = []
    room_made = trio.Event()

    async def store(item: tuple[int, int]) -> None:
        while not room[item[0]]:
            await room_made.wait()
        stored.append(item)

    def waits(item: tuple[int, int]) -> bool:
        return not room[item[0]]

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(
                    queue.run, store, lambda: None, piece_of=lambda item: item[0], waits=waits
                )
            )
            for item in [(1, 0), (2, 0), (3, 0), (1, 1), (2, 1), (3, 1)]:
                assert queue.put(item, 10)
            await trio.testing.wait_all_tasks_blocked()
            # Piece 2's blocks went by; the others wait, still counted by the queue.
            assert stored == [(2, 0), (2, 1)]
            assert queue.queued_bytes == 40
            room[1] = room[3] = True
            room_made.set()
            await trio.testing.wait_all_tasks_blocked()
            # Each piece's blocks in order (which piece gets room first is the disk's line:
            # test_a_set_aside_piece_keeps_its_place_in_line_for_room).
            assert sorted(stored[2:]) == [(1, 0), (1, 1), (3, 0), (3, 1)]
            assert [item for item in stored if item[0] == 1] == [(1, 0), (1, 1)]
            assert [item for item in stored if item[0] == 3] == [(3, 0), (3, 1)]
            assert queue.queued_bytes == 0
            nursery.cancel_scope.cancel()


async def test_set_aside_blocks_do_not_pause_the_peers() -> None:
    # The peers that would complete the pieces in memory must still be read: only blocks
    # the writer can store on its own make the queue over its bound.
    queue: BlockQueue[tuple[int, int]] = BlockQueue(max_bytes=30, limit_bytes=120)
    dropped: list[tuple[int, int]] = []
    never = trio.Event()

    async def store(item: tuple[int, int]) -> None:
        await never.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            functools.partial(
                queue.run,
                store,
                lambda: None,
                piece_of=lambda item: item[0],
                waits=lambda item: True,
                drop=dropped.append,
            )
        )
        for block in range(5):
            assert queue.put((7, block), 10)
            await trio.testing.wait_all_tasks_blocked()
        assert not queue.over
        # Past max_bytes set aside, blocks are given back rather than kept.
        assert dropped == [(7, 3), (7, 4)]
        assert queue.queued_bytes == 30
        queue.clear()  # the block the writer waits for room with is dropped too
        await trio.testing.wait_all_tasks_blocked()
        assert queue.queued_bytes == 0
        nursery.cancel_scope.cancel()


async def test_several_peers_each_starting_a_piece_do_not_stall_the_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Room for two pieces in memory, three seeders each sending another piece: the third
    # piece's first block waits for room while the blocks that complete the other two come.
    piece = 32768
    monkeypatch.setattr(
        session_module,
        "open_disk_manager",
        functools.partial(open_disk_manager, max_in_flight_bytes=2 * piece),
    )
    folder = write_content(tmp_path / "seed", (24 * piece,))
    torrent = make_torrent(folder, "v1", piece_length=piece)
    with trio.fail_after(30):
        async with (
            open_session(loopback_config()) as seed_a,
            open_session(loopback_config()) as seed_b,
            open_session(loopback_config()) as seed_c,
            open_session(loopback_config()) as leecher,
        ):
            seeds = (seed_a, seed_b, seed_c)
            for seed in seeds:
                seeding = await seed.add_torrent(
                    torrent, TorrentOptions(folder.parent, resume=False)
                )
                await seeding.wait_complete()
            download = await leecher.add_torrent(
                torrent,
                TorrentOptions(
                    tmp_path / "down", peers=tuple(address_of(s) for s in seeds), resume=False
                ),
            )
            with trio.move_on_after(15):
                await download.wait_complete()
            status = download.status()
            assert status.pieces == status.num_pieces


class _StatFails:
    """A NativeFileSystem whose ``stat`` fails while ``failing`` is set."""

    def __init__(self, inner: FileSystem) -> None:
        self.inner = inner
        self.failing = False
        self.stats = 0

    def stat(self, path: str) -> object:
        self.stats += 1
        if self.failing:
            raise StorageError(f"stat {path}: I/O error", errno=errno.EIO, path=path)
        return self.inner.stat(path)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_a_failed_resume_save_is_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write_content(tmp_path / "seed", (1_000_000,))
    torrent = make_torrent(folder, "v1", piece_length=65536)
    down = tmp_path / "down"
    storage = _StatFails(NativeFileSystem(down))
    factory: Callable[[Path], FileSystem] = lambda _path: cast(FileSystem, storage)  # noqa: E731
    caplog.set_level(logging.WARNING, "bip")
    with trio.fail_after(20):
        async with (
            # About a second to download: saves fail during it and after it.
            open_session(loopback_config(upload_rate_limit=1_000_000)) as seeder,
            open_session(loopback_config()) as leecher,
        ):
            seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent, resume=False))
            await seeding.wait_complete()
            download = await leecher.add_torrent(
                torrent, TorrentOptions(down, peers=(address_of(seeder),), storage=factory)
            )
            while download.status().pieces < 1:
                await trio.sleep(0.001)
            storage.failing = True  # every save fails from now on
            await download.wait_complete()
            # A save tried (and failed) after the last piece: its data stays to be saved.
            tried = storage.stats
            while storage.stats == tried or "cannot save resume data" not in caplog.text:
                await trio.sleep(0.01)
            storage.failing = False  # the disk is fine again: the dirty data is saved
            num_pieces = torrent.info.num_pieces
            have = 0
            while have < num_pieces:
                await trio.sleep(0.05)
                paths = list((down / ".bip").glob("*.resume"))
                if paths:
                    have = len(ResumeData.from_bytes(paths[0].read_bytes()).have)


async def test_a_stranded_piece_of_one_torrent_does_not_stop_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A's only seed leaves in the middle of a piece as big as the whole bound: B, another
    # torrent of the session, still downloads, once A's piece is idle (0.3 s here, not a
    # minute) and dropped for it.
    big = 1024 * 1024
    monkeypatch.setattr(
        session_module,
        "open_disk_manager",
        functools.partial(open_disk_manager, max_in_flight_bytes=big),
    )
    monkeypatch.setattr(manager_module, "_IDLE_PIECE_SECONDS", 0.3)
    monkeypatch.setattr(manager_module, "_IDLE_SCAN_SECONDS", 0.05)
    folder_a = write_content(tmp_path / "a", (2 * big,), seed=1)
    folder_b = write_content(tmp_path / "b", (300_000,), seed=2)
    torrent_a = make_torrent(folder_a, "v1", piece_length=big)
    torrent_b = make_torrent(folder_b, "v1", piece_length=32768)
    with trio.fail_after(30):
        async with (
            open_session(loopback_config()) as leecher,
            open_session(loopback_config()) as seed_b,
        ):
            seeding = await seed_b.add_torrent(
                torrent_b, TorrentOptions(folder_b.parent, resume=False)
            )
            await seeding.wait_complete()
            async with open_session(loopback_config(upload_rate_limit=500_000)) as seed_a:
                seeding = await seed_a.add_torrent(
                    torrent_a, TorrentOptions(folder_a.parent, resume=False)
                )
                await seeding.wait_complete()
                await leecher.add_torrent(
                    torrent_a,
                    TorrentOptions(tmp_path / "down", peers=(address_of(seed_a),), resume=False),
                )
                while leecher.disk.statistics().partial_pieces < 1:
                    await trio.sleep(0.01)
            # A's seed is gone, its piece half in memory: the whole bound.
            assert leecher.disk.statistics().in_flight_bytes == big
            b = await leecher.add_torrent(
                torrent_b,
                TorrentOptions(tmp_path / "down", peers=(address_of(seed_b),), resume=False),
            )
            await b.wait_complete()


PIECE = 32768
BLOCK = 16384


def _info(name: str, num_pieces: int) -> tuple[Info, bytes]:
    """A torrent of ``num_pieces`` pieces of two blocks, and its content."""
    content = random.Random(name).randbytes(num_pieces * PIECE)
    pieces = b"".join(
        hashlib.sha1(content[i : i + PIECE]).digest() for i in range(0, len(content), PIECE)
    )
    info = Info.from_bytes(
        encode({"name": name, "piece length": PIECE, "pieces": pieces, "length": len(content)})
    )
    return info, content


class _Writer:
    """A torrent's writer in front of a disk: items are (piece, block index)."""

    def __init__(self, disk: DiskManager, torrent: TorrentHandle, content: bytes) -> None:
        self.disk = disk
        self.torrent = torrent
        self.content = content
        self.queue: BlockQueue[tuple[int, int]] = BlockQueue(max_bytes=1 << 20)
        self.stored: list[tuple[int, int]] = []

    async def store(self, item: tuple[int, int]) -> None:
        begin = item[0] * PIECE + item[1] * BLOCK
        await self.disk.write_block(
            self.torrent, item[0], item[1] * BLOCK, self.content[begin : begin + BLOCK]
        )
        self.stored.append(item)

    async def run(self) -> None:
        await self.queue.run(
            self.store,
            lambda: None,
            piece_of=lambda item: item[0],
            waits=lambda item: self.disk.must_wait_for_room(self.torrent, item[0]),
            drop=lambda item: None,
        )

    async def put(self, piece: int, block: int) -> None:
        assert self.queue.put((piece, block), BLOCK)
        await trio.testing.wait_all_tasks_blocked()


async def test_a_set_aside_piece_keeps_its_place_in_line_for_room() -> None:
    # x's piece 1 waits for room first, then a write of torrent y: the room piece 0 frees is
    # x's, although x's writer stored a block meanwhile. Its wait ended at each block put,
    # and it joined the line again at the back, behind every other torrent's writes.
    info_x, content_x = _info("x", 4)
    info_y, content_y = _info("y", 4)
    async with open_disk_manager(max_in_flight_bytes=2 * PIECE) as disk:
        x = await disk.add_torrent(info_x, MemoryFileSystem())
        y = await disk.add_torrent(info_y, MemoryFileSystem())
        await disk.wait_checked(x)
        await disk.wait_checked(y)
        await disk.write_block(x, 3, 0, content_x[3 * PIECE :][:BLOCK])  # nobody completes it
        writer = _Writer(disk, x, content_x)
        y_written = trio.Event()

        async def write_y() -> None:
            await disk.write_block(y, 0, 0, content_y[:BLOCK])
            y_written.set()

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer.run)
                await writer.put(0, 0)  # piece 0 starts: the bound is full
                await writer.put(1, 0)  # set aside, waiting for room
                nursery.start_soon(write_y)
                await trio.testing.wait_all_tasks_blocked()
                await writer.put(0, 1)  # piece 0 complete: its room comes once written
                while (1, 0) not in writer.stored and not y_written.is_set():
                    await trio.sleep(0.001)
                assert (1, 0) in writer.stored
                assert not y_written.is_set()
                nursery.cancel_scope.cancel()


async def test_a_later_set_aside_piece_in_memory_goes_before_the_oldest() -> None:
    # A web seed's block of piece 2 waits for room before the writer sets pieces 1 and 2
    # aside: the room piece 0 frees starts piece 2, whose set-aside block completes it, which
    # makes the room for piece 1. Only the oldest piece set aside was tried: piece 2's block
    # waited behind piece 1, for the room piece 2 itself would free (until the idle drop).
    info, content = _info("z", 4)
    async with open_disk_manager(max_in_flight_bytes=2 * PIECE) as disk:
        torrent = await disk.add_torrent(info, MemoryFileSystem())
        await disk.wait_checked(torrent)
        await disk.write_block(torrent, 3, 0, content[3 * PIECE :][:BLOCK])  # stranded
        writer = _Writer(disk, torrent, content)
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer.run)
                await writer.put(0, 0)  # the bound is full
                web_seed = functools.partial(
                    disk.write_block, torrent, 2, BLOCK, content[2 * PIECE + BLOCK :][:BLOCK]
                )
                nursery.start_soon(web_seed)
                await trio.testing.wait_all_tasks_blocked()
                await writer.put(1, 0)
                await writer.put(2, 0)
                await writer.put(0, 1)
                while len(writer.stored) < 4:
                    await trio.sleep(0.001)
                assert writer.stored == [(0, 0), (0, 1), (2, 0), (1, 0)]
                nursery.cancel_scope.cancel()


async def test_blocks_given_back_past_the_set_aside_bound_call_on_drained_later() -> None:
    # The torrent pauses the peer whose block is given back (else it sends the next one at
    # once, and the next is given back too, at line speed): it is read again once the blocks
    # set aside are down to half the bound.
    queue: BlockQueue[tuple[int, int]] = BlockQueue(max_bytes=30, limit_bytes=120)
    dropped: list[tuple[int, int]] = []
    drained: list[int] = []
    room = trio.Event()

    async def store(item: tuple[int, int]) -> None:
        await room.wait()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(
                    queue.run,
                    store,
                    lambda: drained.append(queue.queued_bytes),
                    piece_of=lambda item: item[0],
                    waits=lambda item: not room.is_set(),
                    drop=dropped.append,
                )
            )
            for block in range(5):
                assert queue.put((7, block), 10)
                await trio.testing.wait_all_tasks_blocked()
            assert dropped == [(7, 3), (7, 4)]
            assert drained == []
            room.set()
            while queue.queued_bytes:
                await trio.testing.wait_all_tasks_blocked()
            assert len(drained) == 1
            nursery.cancel_scope.cancel()


async def test_a_peer_past_the_set_aside_bound_is_paused_not_asked_again_and_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bound is full of another torrent's piece nobody completes (dropped only after a
    # minute idle): each block of b starts a new piece, set aside, and past the bound of the
    # blocks set aside each further one was given back and asked for again at once from the
    # same peer, which sent it again: megabytes a second read and thrown away.
    mib = 1024 * 1024
    monkeypatch.setattr(
        session_module,
        "open_disk_manager",
        functools.partial(open_disk_manager, max_in_flight_bytes=mib),
    )
    monkeypatch.setattr(
        torrent_module, "BlockQueue", functools.partial(BlockQueue, max_bytes=mib // 4)
    )
    given_back: list[int] = []
    give_back = Torrent._block_given_back

    def counted(self: Torrent, item: tuple[object, Peer, Piece]) -> None:
        given_back.append(item[2].index)
        give_back(self, item)  # type: ignore[arg-type]

    monkeypatch.setattr(Torrent, "_block_given_back", counted)
    folder_a = write_content(tmp_path / "a", (mib,), seed=1)
    folder_b = write_content(tmp_path / "b", (32 * mib,), seed=2)
    torrent_a = make_torrent(folder_a, "v1", piece_length=mib)
    torrent_b = make_torrent(folder_b, "v1", piece_length=65536)
    with trio.fail_after(30):
        async with (
            open_session(loopback_config()) as leecher,
            open_session(loopback_config()) as seed,
        ):
            seeding = await seed.add_torrent(
                torrent_b, TorrentOptions(folder_b.parent, resume=False)
            )
            await seeding.wait_complete()
            a = await leecher.add_torrent(
                torrent_a, TorrentOptions(tmp_path / "down_a", resume=False)
            )
            while a.handle is None:
                await trio.sleep(0.01)
            await leecher.disk.wait_checked(a.handle)
            b = await leecher.add_torrent(
                torrent_b,
                TorrentOptions(tmp_path / "down_b", peers=(address_of(seed),), resume=False),
            )
            while b.status().downloaded < mib:  # at full speed
                await trio.sleep(0.001)
            # a's piece takes the whole bound once b's pieces in memory are complete.
            await leecher.disk.write_block(a.handle, 0, 0, bytes(BLOCK))
            while not given_back:
                await trio.sleep(0.01)
            await trio.sleep(0.5)
            # At most what the peer sent before it was paused (a read, 512 KiB, 32 blocks).
            assert len(given_back) <= 64


async def test_waits_is_asked_once_per_block() -> None:
    # It costs a call into the disk per block: while a piece was set aside it was asked
    # twice per block (of the oldest piece set aside too).
    queue: BlockQueue[tuple[int, int]] = BlockQueue(max_bytes=1000)
    asked: list[tuple[int, int]] = []
    never = trio.Event()

    async def store(item: tuple[int, int]) -> None:
        if item[0] == 7:
            await never.wait()

    def waits(item: tuple[int, int]) -> bool:
        asked.append(item)
        return item[0] == 7

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            functools.partial(
                queue.run, store, lambda: None, piece_of=lambda item: item[0], waits=waits
            )
        )
        assert queue.put((7, 0), 10)
        for block in range(10):
            assert queue.put((2, block), 10)
        await trio.testing.wait_all_tasks_blocked()
        assert asked == [(7, 0)] + [(2, block) for block in range(10)]
        nursery.cancel_scope.cancel()


async def test_a_block_of_a_piece_no_longer_wanted_is_not_set_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It held its share of the blocks set aside, and its request, until its piece had room,
    # only to be given back then: it is given back at once.
    monkeypatch.setattr(
        session_module,
        "open_disk_manager",
        functools.partial(open_disk_manager, max_in_flight_bytes=PIECE),
    )
    folder = write_content(tmp_path / "seed", (4 * PIECE, 4 * PIECE))
    torrent = make_torrent(folder, "v1", piece_length=PIECE)
    with trio.fail_after(10):
        async with open_session(loopback_config()) as leecher:
            download = await leecher.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", resume=False)
            )
            while download.handle is None or download.swarm is None:
                await trio.sleep(0.01)
            handle = download.handle
            await leecher.disk.wait_checked(handle)
            await leecher.disk.write_block(handle, 5, 0, bytes(BLOCK))  # the whole bound
            assert leecher.disk.must_wait_for_room(handle, 0)
            item = (download.swarm, cast(Peer, None), Piece(0, 0, bytes(BLOCK)))
            assert download._block_waits(item)
            download.set_files(frozenset({1}))  # piece 0 is the first file's
            assert not download._block_waits(item)


async def test_a_block_of_a_new_piece_taken_while_moving_is_set_aside() -> None:
    # The write of a new piece's block waits for the move, then for room: the blocks behind
    # it, which complete the pieces in memory and so make that room, must not wait with it
    # (else they waited for the idle drop, a minute on).
    info, content = _info("m", 4)
    async with open_disk_manager(max_in_flight_bytes=2 * PIECE) as disk:
        torrent = await disk.add_torrent(info, MemoryFileSystem())
        await disk.wait_checked(torrent)
        for piece in (0, 1):  # the whole bound
            await disk.write_block(torrent, piece, 0, content[piece * PIECE :][:BLOCK])
        writer = _Writer(disk, torrent, content)
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer.run)
                nursery.start_soon(disk.move_storage, torrent, MemoryFileSystem())
                while disk.status(torrent).state is not TorrentState.MOVING:
                    await trio.sleep(0)
                for item in ((2, 0), (0, 1), (1, 1), (2, 1)):
                    assert writer.queue.put(item, BLOCK)
                while len(writer.stored) < 4:
                    await trio.sleep(0.001)
                assert writer.stored == [(0, 1), (1, 1), (2, 0), (2, 1)]
                nursery.cancel_scope.cancel()


async def test_discard_gives_back_the_blocks_set_aside_of_a_piece() -> None:
    # Piece 1 set aside (its first block waiting for room), piece 3 too: discarding piece 1
    # returns its blocks in order, frees their bytes and its place in line; piece 3 stays.
    queue: BlockQueue[tuple[int, int]] = BlockQueue(max_bytes=100, limit_bytes=400)
    room_made = trio.Event()
    stored: list[tuple[int, int]] = []
    cancelled: list[tuple[int, int]] = []

    async def store(item: tuple[int, int]) -> None:
        try:
            await room_made.wait()
        except trio.Cancelled:
            cancelled.append(item)
            raise
        stored.append(item)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            functools.partial(
                queue.run, store, lambda: None, piece_of=lambda item: item[0], waits=lambda _: True
            )
        )
        for item in ((1, 0), (3, 0), (1, 1)):
            assert queue.put(item, 10)
        await trio.testing.wait_all_tasks_blocked()
        assert queue.discard(1) == [(1, 0), (1, 1)]
        assert queue.discard(1) == []  # nothing set aside of it any more
        assert queue.queued_bytes == 10
        await trio.testing.wait_all_tasks_blocked()
        assert cancelled == [(1, 0)]  # its write stopped waiting for room
        room_made.set()
        await trio.testing.wait_all_tasks_blocked()
        assert stored == [(3, 0)]
        assert queue.queued_bytes == 0
        assert queue.idle
        nursery.cancel_scope.cancel()


async def test_blocks_set_aside_of_a_piece_deselected_leave_the_line_for_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # They kept their piece's place in bip_disk's line, and their share of the blocks set
    # aside: once granted, the room went to a piece nobody wants, dropped at once.
    monkeypatch.setattr(
        session_module,
        "open_disk_manager",
        functools.partial(open_disk_manager, max_in_flight_bytes=PIECE),
    )
    folder = write_content(tmp_path / "seed", (4 * PIECE, 4 * PIECE))
    torrent = make_torrent(folder, "v1", piece_length=PIECE)
    with trio.fail_after(10):
        async with open_session(loopback_config()) as leecher:
            download = await leecher.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", resume=False)
            )
            while download.handle is None or download.swarm is None:
                await trio.sleep(0.01)
            handle = download.handle
            await leecher.disk.wait_checked(handle)
            await leecher.disk.write_block(handle, 5, 0, bytes(BLOCK))  # the whole bound
            item = (download.swarm, cast(Peer, None), Piece(0, 0, bytes(BLOCK)))
            assert download._blocks.put(item, BLOCK)
            while leecher.disk.statistics().waiting_writes != 1:
                await trio.sleep(0.001)
            download.set_files(frozenset({1}))  # piece 0 is the first file's
            assert download._blocks.queued_bytes == 0
            while leecher.disk.statistics().waiting_writes:
                await trio.sleep(0.001)
            assert download._blocks.idle
