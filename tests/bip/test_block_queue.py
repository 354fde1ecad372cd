"""Downloaded blocks go to their torrent's own writer: the session's router never waits for
the disk, so one torrent whose store is stuck (a move, a slow drive) holds up no other."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from _engine_helpers import download_from, loopback_config, make_torrent, write_content

from bip._client import TorrentOptions, open_session
from bip._client._block_queue import BlockQueue
from bip_disk import TorrentHandle


async def test_blocks_are_stored_in_order_and_their_bytes_freed() -> None:
    queue: BlockQueue[int] = BlockQueue(max_bytes=30)
    stored: list[int] = []
    gate = trio.Event()

    async def store(item: int) -> None:
        await gate.wait()
        stored.append(item)

    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(queue.run, store)
            assert queue.put(1, 10)
            await trio.testing.wait_all_tasks_blocked()
            assert not queue.idle  # 1 is being stored: it still counts
            assert queue.put(2, 10)
            assert queue.put(3, 10)
            assert not queue.put(4, 1)  # over the bound: refused, not waited for
            assert queue.queued_bytes == 30
            gate.set()
            await trio.testing.wait_all_tasks_blocked()
            assert stored == [1, 2, 3]
            assert (queue.idle, queue.queued_bytes) == (True, 0)
            assert queue.put(5, 100)  # an idle queue takes any one block
            nursery.cancel_scope.cancel()


def test_a_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        BlockQueue(max_bytes=0)


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
