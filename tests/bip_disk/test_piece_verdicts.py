"""The verdicts of complete pieces against a removal, and their count: a removed torrent's
pieces get no event, even a bad one hashed before the removal and settled after it (a good
piece of its batch was still being written), and DiskStatistics.pieces_discarded counts the
PieceDiscarded events told."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing
from tests._disk_race import (
    PIECE,
    PIECES,
    WRITE_0,
    GatedFileSystem,
    drain,
    entered,
    make,
    next_event,
    of_type,
    stored_but_piece_0,
    writing_piece_0,
)

from bip_disk._events import (
    PieceDiscarded,
    PieceVerified,
    TorrentRemoved,
    TorrentState,
)
from bip_disk._manager import open_disk_manager

WRITE_1, WRITE_2 = ("write", PIECE), ("write", 2 * PIECE)


async def test_a_bad_piece_settled_after_its_torrent_is_removed_gets_no_verdict(
    tmp_path: Path,
) -> None:
    metainfo, content = make(tmp_path)
    fs = GatedFileSystem()  # nothing stored: every piece is to download
    async with open_disk_manager(hash_threads=1) as disk:
        with trio.fail_after(10):
            torrent = await disk.add_torrent(metainfo, fs)
            assert await disk.wait_checked(torrent) is TorrentState.READY
            drain(disk)
            gate_2, gate_1 = fs.hold(WRITE_2), fs.hold(WRITE_1)
            # Piece 2's write holds the only hashing thread while pieces 0 (bad) and 1
            # (good) queue behind it: the thread then takes both in one batch.
            await disk.write_block(torrent, 2, 0, content[2 * PIECE : 3 * PIECE])
            await entered(fs, WRITE_2)
            await disk.write_block(torrent, 0, 0, bytes(PIECE))
            await disk.write_block(torrent, 1, 0, content[PIECE : 2 * PIECE])
            gate_2.set()
            # Piece 0 is hashed (bad) and piece 1 is being written: neither is settled.
            await entered(fs, WRITE_1)
            assert drain(disk) == [PieceVerified(torrent, 2, True)]
            # Queued behind the batch: the removal drops it, unwritten and untold.
            await disk.write_block(torrent, 3, 0, content[3 * PIECE : 4 * PIECE])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(disk.remove_torrent, torrent)
                await trio.testing.wait_all_tasks_blocked()  # waits for the batch
                gate_1.set()
        assert drain(disk) == [TorrentRemoved(torrent, False)]
        statistics = disk.statistics()
        # Both settled pieces are counted (piece 2 good earlier, piece 1 good and piece 0 bad
        # after the removal), though only piece 2 was told.
        assert (statistics.pieces_good, statistics.pieces_bad) == (2, 1)
        assert statistics.pieces_discarded == 0  # a removal's drops are no fault's


async def test_the_statistics_count_the_pieces_discarded(tmp_path: Path) -> None:
    metainfo, content, fs = stored_but_piece_0(tmp_path)
    async with open_disk_manager() as disk:
        assert disk.statistics().pieces_discarded == 0
        with trio.fail_after(10):
            torrent, gate = await writing_piece_0(disk, fs, metainfo, content, failing=True)
            gate.set()
            events = await next_event(disk, PieceDiscarded)
        [discard] = of_type(events, PieceDiscarded)
        assert (discard.torrent, discard.piece) == (torrent, 0)
        assert discard.reason.startswith("writing piece 0 failed")
        statistics = disk.statistics()
        assert statistics.pieces_discarded == 1
        assert (statistics.pieces_good, statistics.pieces_bad) == (0, 0)
        assert disk.have(torrent) == frozenset(range(1, PIECES))
        assert WRITE_0 not in fs.fail  # the write was tried, and failed
