"""The in-flight bound: writes that would start a piece past it wait, in order; nothing grows
without bound; pieces already started always finish. Timeouts run on the autojump clock."""

from __future__ import annotations

import hashlib
import math
import random

import pytest
import trio
import trio.testing

from bip_bencode import encode
from bip_disk import _manager as manager_module
from bip_disk._errors import TorrentStateError
from bip_disk._events import PieceVerified
from bip_disk._manager import open_disk_manager
from bip_disk._memory import MemoryFileSystem
from bip_metainfo import Info

PIECE = 4 * 16384


def make_info(num_pieces: int, piece_length: int = PIECE) -> tuple[Info, bytes]:
    content = random.Random(num_pieces).randbytes(num_pieces * piece_length)
    pieces = b"".join(
        hashlib.sha1(content[i : i + piece_length]).digest()
        for i in range(0, len(content), piece_length)
    )
    info = Info.from_bytes(
        encode(
            {
                "name": "t",
                "piece length": piece_length,
                "pieces": pieces,
                "length": len(content),
            }
        )
    )
    return info, content


async def test_writes_wait_in_order_past_the_bound_and_go_on_when_room_is_made(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pieces that get no block are never dropped for the waiting writes here (they are
    # after a minute: test_budget_eviction_s13), so that the bound alone is seen.
    monkeypatch.setattr(manager_module, "_IDLE_PIECE_SECONDS", math.inf)
    info, content = make_info(10)
    async with open_disk_manager(max_in_flight_bytes=3 * PIECE) as disk:
        torrent = await disk.add_torrent(info, MemoryFileSystem())
        await disk.wait_checked(torrent)
        order: list[int] = []

        async def start_piece(piece: int) -> None:
            await disk.write_block(torrent, piece, 0, content[piece * PIECE : piece * PIECE + 10])
            order.append(piece)

        async with trio.open_nursery() as nursery:
            for piece in range(10):
                nursery.start_soon(start_piece, piece)
                await trio.testing.wait_all_tasks_blocked()
            stats = disk.statistics()
            assert stats.in_flight_bytes == 3 * PIECE
            assert stats.partial_pieces == 3
            assert stats.waiting_writes == 7
            assert order == [0, 1, 2]
            # They wait for as long as it takes (an hour on the virtual clock).
            with trio.move_on_after(3600):
                await trio.sleep_forever()
            assert order == [0, 1, 2]
            # Blocks of pieces already started never wait, so piece 1 can finish...
            await disk.write_block(torrent, 1, 10, content[PIECE + 10 : 2 * PIECE])
            async for event in disk.events():
                if isinstance(event, PieceVerified):
                    assert event == PieceVerified(torrent, 1, good=True)
                    break
            await trio.testing.wait_all_tasks_blocked()
            assert order == [0, 1, 2, 3]  # ...which lets the first waiter in
            # Dropping a partial piece makes room too.
            assert disk.discard_piece(torrent, 0)
            assert not disk.discard_piece(torrent, 0)
            await trio.testing.wait_all_tasks_blocked()
            assert order == [0, 1, 2, 3, 4]
            assert disk.statistics().in_flight_bytes == 3 * PIECE
            nursery.cancel_scope.cancel()
        # Cancelled waiters leave nothing behind.
        stats = disk.statistics()
        assert stats.waiting_writes == 0
        assert stats.in_flight_bytes == 3 * PIECE


async def test_a_piece_larger_than_the_bound_goes_through_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    info, content = make_info(3)
    async with open_disk_manager(max_in_flight_bytes=PIECE // 2) as disk:
        torrent = await disk.add_torrent(info, MemoryFileSystem())
        await disk.wait_checked(torrent)
        await disk.write_block(torrent, 0, 0, content[:100])
        with trio.move_on_after(30) as waited:  # piece 0 is dropped once idle for 60 s
            await disk.write_block(torrent, 1, 0, content[PIECE : PIECE + 100])
        assert waited.cancelled_caught
        assert disk.statistics().in_flight_bytes == PIECE
        await disk.write_block(torrent, 0, 100, content[100:PIECE])
        await disk.write_block(torrent, 1, 0, content[PIECE : 2 * PIECE])
        verdicts = []
        async for event in disk.events():
            if isinstance(event, PieceVerified):
                verdicts.append(event.good)
                if len(verdicts) == 2:
                    break
        assert verdicts == [True, True]


async def test_waiting_writes_fail_when_their_torrent_stops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    info, _content = make_info(4)
    async with open_disk_manager(max_in_flight_bytes=PIECE) as disk:
        torrent = await disk.add_torrent(info, MemoryFileSystem())
        await disk.wait_checked(torrent)
        await disk.write_block(torrent, 0, 0, b"x")
        failures: list[str] = []

        async def wait_then_fail() -> None:
            with pytest.raises(TorrentStateError) as caught:
                await disk.write_block(torrent, 1, 0, b"y")
            failures.append(str(caught.value))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_then_fail)
            await trio.testing.wait_all_tasks_blocked()
            assert disk.statistics().waiting_writes == 1
            await disk.remove_torrent(torrent)
        assert failures
        assert "removed" in failures[0]
        assert disk.statistics().in_flight_bytes == 0


@pytest.mark.parametrize("bound_pieces", [1, 4])
async def test_a_fast_producer_never_holds_more_than_the_bound(bound_pieces: int) -> None:
    info, content = make_info(48)
    bound = bound_pieces * PIECE
    peak = 0
    async with open_disk_manager(max_in_flight_bytes=bound, hash_threads=2) as disk:
        torrent = await disk.add_torrent(info, MemoryFileSystem())
        await disk.wait_checked(torrent)
        good = 0

        async def consume() -> None:
            nonlocal good
            async for event in disk.events():
                if isinstance(event, PieceVerified) and event.good:
                    good += 1
                    if good == info.num_pieces:
                        return

        async def produce(first: int) -> None:
            nonlocal peak
            # Two peers interleaving blocks of different pieces.
            for piece in range(first, info.num_pieces, 2):
                for begin in range(0, PIECE, 16384):
                    start = piece * PIECE + begin
                    await disk.write_block(torrent, piece, begin, content[start : start + 16384])
                    peak = max(peak, disk.statistics().in_flight_bytes)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                nursery.start_soon(produce, 0)
                nursery.start_soon(produce, 1)
        assert good == info.num_pieces
        assert 0 < peak <= bound
        assert disk.statistics().in_flight_bytes == 0
