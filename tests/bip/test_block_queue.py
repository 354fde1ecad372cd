"""Downloaded blocks go to their torrent's own writer: the session's router never waits for
the disk, so one torrent whose store is stuck (a move, a slow drive) holds up no other."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
from _engine_helpers import (
    address_of,
    download_from,
    loopback_config,
    make_torrent,
    same_files,
    write_content,
)

from bip._client import TorrentOptions, TorrentPhase, open_session
from bip._client import _torrent as torrent_module
from bip._client._block_queue import BlockQueue
from bip._client._swarm import Swarm
from bip_disk import TorrentHandle
from bip_peer import Peer
from bip_select import BlockArrived, BlockDropped, BlockReceived, BlockRejected, Input


async def test_blocks_are_stored_in_order_and_their_bytes_freed() -> None:
    queue: BlockQueue[int] = BlockQueue(max_bytes=20, limit_bytes=30)
    stored: list[int] = []
    drained: list[int] = []
    gate = trio.Event()

    async def store(item: int) -> None:
        await gate.wait()
        stored.append(item)

    def on_drained() -> None:
        drained.append(queue.queued_bytes)

    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run, store, on_drained)
            assert queue.put(1, 10)
            await trio.testing.wait_all_tasks_blocked()
            # 1 is being stored: it still counts (not idle), but it is not over its bound.
            assert (queue.idle, queue.over) == (False, False)
            assert queue.put(2, 10)
            assert queue.over  # its torrent stops reading the peers that send it blocks
            assert queue.put(3, 10)
            assert not queue.accepts(1)
            assert not queue.put(4, 1)  # past the hard bound: refused, not waited for
            assert queue.queued_bytes == 30
            gate.set()
            await trio.testing.wait_all_tasks_blocked()
            assert stored == [1, 2, 3]
            assert drained == [10]  # once, as soon as it was down to half its bound
            assert (queue.idle, queue.queued_bytes, queue.over) == (True, 0, False)
            assert queue.put(5, 100)  # an idle queue takes any one block
            nursery.cancel_scope.cancel()


async def test_cleared_blocks_are_freed_and_drain_the_queue() -> None:
    queue: BlockQueue[int] = BlockQueue(max_bytes=20)
    stored: list[int] = []
    drained: list[int] = []
    gate = trio.Event()

    async def store(item: int) -> None:
        await gate.wait()
        stored.append(item)

    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run, store, lambda: drained.append(queue.queued_bytes))
            for item in range(4):
                assert queue.put(item, 10)
                await trio.testing.wait_all_tasks_blocked()
            queue.clear()  # the one being stored (0) still counts until stored
            assert queue.queued_bytes == 10
            gate.set()
            await trio.testing.wait_all_tasks_blocked()
            assert (stored, drained, queue.idle) == ([0], [0], True)
            nursery.cancel_scope.cancel()


def test_a_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        BlockQueue(max_bytes=0)
    with pytest.raises(ValueError, match="limit_bytes"):
        BlockQueue(max_bytes=10, limit_bytes=9)


async def test_a_stuck_store_holds_up_no_other_torrent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck_folder = write_content(tmp_path / "a", (40_000,), seed=1)
    other_folder = write_content(tmp_path / "b", (40_000,), seed=2)
    stuck_torrent = make_torrent(stuck_folder, "v1", piece_length=16384)
    other_torrent = make_torrent(other_folder, "v1", piece_length=16384)
    with trio.fail_after(10):
        async with (
            open_session(loopback_config()) as seeder,
            open_session(loopback_config()) as leecher,
        ):
            for torrent, folder in ((stuck_torrent, stuck_folder), (other_torrent, other_folder)):
                seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
                await seeding.wait_complete()
            # The leecher's disk stores none of the first torrent's blocks until let go (as
            # bip_disk waits while a torrent moves its storage).
            write_block = leecher.disk.write_block
            waiting, let_go = trio.Event(), trio.Event()

            async def slow_write_block(
                handle: TorrentHandle, piece: int, begin: int, data: bytes | bytearray | memoryview
            ) -> bool:
                if handle.info_hash == stuck_torrent.info.info_hash:
                    waiting.set()
                    await let_go.wait()
                return await write_block(handle, piece, begin, data)

            monkeypatch.setattr(leecher.disk, "write_block", slow_write_block)
            stuck = await download_from(seeder, leecher, stuck_torrent, tmp_path / "la")
            await waiting.wait()
            other = await download_from(seeder, leecher, other_torrent, tmp_path / "lb")
            # Before, the router waited for the first torrent's disk: never complete.
            await other.wait_complete()
            assert not stuck.completed.is_set()
            let_go.set()
            await stuck.wait_complete()  # its blocks waited in order, none lost


@pytest.mark.parametrize("limit_bytes", [4 << 20, 64 * 1024], ids=["paused", "past-the-limit"])
async def test_a_stalling_disk_with_several_peers_costs_no_request_timeout(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    limit_bytes: int,
) -> None:
    """Several seeds, a leecher whose disk stalls now and then, and a small queue: each
    stall fills it. Its peers are paused (not read) until the writer catches up: no block is
    dropped to wait for its 60 s request timeout (the first case: a hard bound above the
    whole torrent). Past the hard bound (the second case: no larger than the pause
    threshold) blocks are dropped, and given back to the brain at once: asked again from any
    peer, no 60 s wait either. The brain hears of each block as it arrives (BlockArrived:
    a stall is not the peer's delay) and of each drop as ours (BlockDropped, not a reject)."""
    caplog.set_level(logging.DEBUG, logger="bip.client")
    fed: list[Input] = []
    feed = Swarm.feed

    def recording_feed(swarm: Swarm, event: Input, now: float) -> None:
        if isinstance(event, BlockArrived | BlockReceived | BlockDropped | BlockRejected):
            fed.append(event)
        feed(swarm, event, now)

    monkeypatch.setattr(Swarm, "feed", recording_feed)
    folder = write_content(tmp_path / "s", (1 << 20,), seed=5)  # 64 blocks
    torrent = make_torrent(folder, "v1", piece_length=64 * 1024)
    monkeypatch.setattr(
        torrent_module,
        "BlockQueue",
        lambda: BlockQueue(max_bytes=64 * 1024, limit_bytes=limit_bytes),
    )
    with trio.fail_after(10):  # the sessions' start and stop included
        async with (
            open_session(loopback_config()) as seed_a,
            open_session(loopback_config()) as seed_b,
            open_session(loopback_config()) as seed_c,
            open_session(loopback_config()) as leecher,
        ):
            seeds = (seed_a, seed_b, seed_c)
            for seed in seeds:
                seeding = await seed.add_torrent(torrent, TorrentOptions(folder.parent))
                await seeding.wait_complete()
            write_block = leecher.disk.write_block
            writes = 0

            async def stalling_write_block(
                handle: TorrentHandle, piece: int, begin: int, data: bytes | bytearray | memoryview
            ) -> bool:
                nonlocal writes
                writes += 1
                if writes % 20 == 0:
                    await trio.sleep(0.25)  # the disk stalls, the peers keep sending
                return await write_block(handle, piece, begin, data)

            monkeypatch.setattr(leecher.disk, "write_block", stalling_write_block)
            pause_reading = leecher.manager.pause_reading
            paused: list[Peer] = []

            def counted_pause_reading(peer: Peer) -> None:
                paused.append(peer)
                pause_reading(peer)

            monkeypatch.setattr(leecher.manager, "pause_reading", counted_pause_reading)
            started = trio.current_time()
            leeching = await leecher.add_torrent(
                torrent,
                TorrentOptions(tmp_path / "l", peers=tuple(address_of(seed) for seed in seeds)),
            )
            with trio.fail_after(3):  # a dropped block left to time out would take 60 s
                await leeching.wait_complete()
            assert trio.current_time() - started < 3
            assert paused  # the stalls did fill the queue
            assert not any(leecher.manager.is_reading_paused(peer) for peer in leeching.peers)
            assert same_files(folder, tmp_path / "l" / folder.name)
    dropped = [record for record in caplog.records if "dropped" in record.getMessage()]
    assert bool(dropped) is (limit_bytes < 1 << 20)
    assert not any(isinstance(event, BlockRejected) for event in fed)
    assert sum(isinstance(event, BlockDropped) for event in fed) == len(dropped)
    arrived: set[tuple[object, object]] = set()
    for event in fed:
        if isinstance(event, BlockArrived):
            arrived.add((event.peer, event.block))
        elif isinstance(event, BlockReceived):
            assert (event.peer, event.block) in arrived  # told as it came, stored after


async def test_blocks_queued_before_a_recheck_are_not_written_into_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks the old brain asked for, still queued when a recheck begins, are dropped: the
    new brain asks again for what the check finds missing."""
    folder = write_content(tmp_path / "s", (40 * 16384,), seed=6)
    torrent = make_torrent(folder, "v1", piece_length=64 * 1024)
    with trio.fail_after(10):
        async with (
            open_session(loopback_config()) as seeder,
            open_session(loopback_config()) as leecher,
        ):
            seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            write_block = leecher.disk.write_block
            let_go = trio.Event()
            written_while_checking = 0

            async def gated_write_block(
                handle: TorrentHandle, piece: int, begin: int, data: bytes | bytearray | memoryview
            ) -> bool:
                nonlocal written_while_checking
                await let_go.wait()
                if leeching.status().phase is TorrentPhase.CHECKING:
                    written_while_checking += 1
                return await write_block(handle, piece, begin, data)

            monkeypatch.setattr(leecher.disk, "write_block", gated_write_block)
            leeching = await download_from(seeder, leecher, torrent, tmp_path / "l")
            while leeching._blocks.queued_bytes < 4 * 16384:  # one stuck, three behind it
                await trio.sleep(0.01)
            leeching.force_recheck()
            let_go.set()
            await leeching.wait_complete()
            # At most the one being stored went on (it was under way); none waiting did.
            assert written_while_checking <= 1
            assert same_files(folder, tmp_path / "l" / folder.name)
