"""Pieces in memory that nothing completes do not hold the shared in-flight bound for good:
while a write waits for room, those idle for a minute are dropped, each told by a
PieceDiscarded ("blocks dropped: ..."), so that they are asked for again. Timeouts run on the
autojump clock."""

from __future__ import annotations

import hashlib
import random

import pytest
import trio
import trio.testing

from bip_bencode import encode
from bip_disk._events import PieceDiscarded, TorrentState
from bip_disk._manager import DiskManager, open_disk_manager
from bip_disk._memory import MemoryFileSystem
from bip_metainfo import Info

PIECE = 2 * 16384
BLOCK = 16384


def make_info(name: str, num_pieces: int) -> tuple[Info, bytes]:
    content = random.Random(name).randbytes(num_pieces * PIECE)
    pieces = b"".join(
        hashlib.sha1(content[i : i + PIECE]).digest() for i in range(0, len(content), PIECE)
    )
    info = Info.from_bytes(
        encode({"name": name, "piece length": PIECE, "pieces": pieces, "length": len(content)})
    )
    return info, content


def next_discarded(disk: DiskManager) -> PieceDiscarded:
    """The next PieceDiscarded already sent (the checks' events come first)."""
    while True:
        event = disk.events().receive_nowait()
        if isinstance(event, PieceDiscarded):
            return event


async def test_an_idle_piece_of_one_torrent_makes_room_for_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stranded_info, stranded = make_info("a", 4)
    healthy_info, healthy = make_info("b", 4)
    async with open_disk_manager(max_in_flight_bytes=2 * PIECE) as disk:
        a = await disk.add_torrent(stranded_info, MemoryFileSystem())
        b = await disk.add_torrent(healthy_info, MemoryFileSystem())
        await disk.wait_checked(a)
        await disk.wait_checked(b)
        # Half of two pieces of a: the whole bound, and their peers never come back.
        await disk.write_block(a, 0, 0, stranded[:BLOCK])
        await trio.sleep(10)
        await disk.write_block(a, 1, 0, stranded[PIECE : PIECE + BLOCK])
        assert disk.must_wait_for_room(b, 0)
        assert not disk.must_wait_for_room(a, 1)  # in memory: its blocks never wait
        # Not a piece of it: write_block refuses the block at once, it never waits.
        assert not disk.must_wait_for_room(b, 99)
        assert not disk.must_wait_for_room(b, [0])  # type: ignore[arg-type]
        with trio.fail_after(200):
            started = trio.current_time()
            await disk.write_block(b, 0, 0, healthy[:BLOCK])  # waits for room
            waited = trio.current_time() - started
        # Not before a minute idle, and within a minute and a quarter.
        assert 60 <= waited <= 75
        # a's pieces, the longest idle first, until b's piece fitted: one of them.
        event = next_discarded(disk)
        assert (event.torrent, event.piece) == (a, 0)
        assert event.reason.startswith("blocks dropped: ")
        assert disk.statistics().partial_pieces == 2
        # The piece dropped is asked for again from the start: its blocks are taken anew.
        with trio.fail_after(200):
            await disk.write_block(a, 0, 0, stranded[:BLOCK])  # waits for room again
        event = next_discarded(disk)
        assert (event.torrent, event.piece) == (a, 1)  # idle for longest, b's is not
        assert disk.statistics().partial_pieces == 2


async def test_a_piece_still_receiving_blocks_is_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    info, content = make_info("c", 4)
    async with open_disk_manager(max_in_flight_bytes=PIECE) as disk:
        torrent = await disk.add_torrent(info, MemoryFileSystem())
        await disk.wait_checked(torrent)
        slow = bytes(1024)  # a slow peer: a kilobyte every 20 s
        await disk.write_block(torrent, 0, 0, slow)
        waiting = trio.Event()
        async with trio.open_nursery() as nursery:

            async def new_piece() -> None:
                await disk.write_block(torrent, 1, 0, content[PIECE : PIECE + BLOCK])
                waiting.set()

            nursery.start_soon(new_piece)
            for begin in range(1024, 10 * 1024, 1024):
                await trio.sleep(20)
                await disk.write_block(torrent, 0, begin, slow)
            assert not waiting.is_set()  # piece 0 is alive: never dropped
            assert disk.statistics().partial_pieces == 1
            with trio.fail_after(100):
                await waiting.wait()  # once it stops, it goes after a minute
        assert disk.statistics().partial_pieces == 1


async def test_a_write_waiting_for_a_piece_another_write_started_goes_at_once() -> None:
    # Two writes of the same new piece wait for room (a peer's and a web seed's block): once
    # the first is granted the piece is in memory, and the second is one of its blocks, which
    # never waits. It waited for room for a whole piece more, which it then gave back.
    info, content = make_info("d", 4)
    async with open_disk_manager(max_in_flight_bytes=2 * PIECE) as disk:
        torrent = await disk.add_torrent(info, MemoryFileSystem())
        await disk.wait_checked(torrent)
        await disk.write_block(torrent, 0, 0, content[:BLOCK])  # completed below
        await disk.write_block(torrent, 3, 0, content[3 * PIECE : 3 * PIECE + BLOCK])  # idle
        first_done = trio.Event()
        second_done = trio.Event()

        async def write(begin: int, done: trio.Event) -> None:
            await disk.write_block(torrent, 2, begin, content[2 * PIECE + begin :][:BLOCK])
            done.set()

        # On the real clock: the autojump clock ran on while piece 0 was hashed on its
        # thread, the idle drop's looks 15 s apart, up to the deadline (flaky).
        with trio.fail_after(5):  # the idle piece 3 is dropped after 60 s only
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write, 0, first_done)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(write, BLOCK, second_done)
                await trio.testing.wait_all_tasks_blocked()
                assert disk.statistics().waiting_writes == 2
                await disk.write_block(torrent, 0, BLOCK, content[BLOCK:PIECE])  # room made
                await first_done.wait()
                await second_done.wait()
        # Piece 2 complete in memory: only piece 3 holds room besides it (or piece 2 written).
        assert disk.statistics().waiting_writes == 0


async def test_must_wait_for_room_refuses_what_is_not_a_torrent_handle() -> None:
    info, _content = make_info("e", 1)
    async with open_disk_manager() as disk:
        await disk.add_torrent(info, MemoryFileSystem())
        with pytest.raises(TypeError, match="TorrentHandle"):
            disk.must_wait_for_room("e", 0)  # type: ignore[arg-type]


async def test_a_piece_idle_long_before_a_write_waits_is_dropped_after_a_minute(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The documented window: a minute idle. Counted from the first look, it was dropped at
    # the look after a minute (75 s), the piece idle for ten minutes already.
    info, content = make_info("w", 4)
    async with open_disk_manager(max_in_flight_bytes=PIECE) as disk:
        torrent = await disk.add_torrent(info, MemoryFileSystem())
        await disk.wait_checked(torrent)
        await disk.write_block(torrent, 0, 0, content[:BLOCK])  # the whole bound
        await trio.sleep(600)
        start = trio.current_time()
        await disk.write_block(torrent, 1, 0, content[PIECE : PIECE + BLOCK])
        assert trio.current_time() - start == pytest.approx(60)
        event = next_discarded(disk)
        assert event.piece == 0
        assert event.reason.startswith("blocks dropped: no block came for 60 s or more")


async def test_must_wait_for_room_while_moving_for_a_piece_not_started() -> None:
    # The write would wait for the move, then maybe for room: the caller sets it aside.
    info, content = make_info("v", 4)
    async with open_disk_manager(max_in_flight_bytes=4 * PIECE) as disk:
        torrent = await disk.add_torrent(info, MemoryFileSystem())
        await disk.wait_checked(torrent)
        await disk.write_block(torrent, 0, 0, content[:BLOCK])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(disk.move_storage, torrent, MemoryFileSystem())
            while disk.status(torrent).state is not TorrentState.MOVING:
                await trio.sleep(0)
            assert disk.must_wait_for_room(torrent, 1)
            assert not disk.must_wait_for_room(torrent, 0)  # in memory: never waits
            assert not disk.must_wait_for_room(torrent, 99)  # refused at once
        assert not disk.must_wait_for_room(torrent, 1)  # READY again, with room
