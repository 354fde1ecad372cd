"""File selection against what the disk and the status hold: a piece no longer wanted gives
its blocks in memory back to the disk's shared bound (and is asked for again from its first
block once wanted again), also during a move's check and for blocks waiting for the disk
(not written, or dropped once written); a recheck or a move's check forgets what was done
before it begins; and ``Torrent.files`` reads the per-file priorities, pad files included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from _engine_helpers import loopback_config, make_torrent, until, write_content
from _hostile_peer import HostilePeer, hostile_peer

from bip._client import (
    MoveFlags,
    Session,
    Torrent,
    TorrentOptions,
    TorrentPhase,
    TorrentStatus,
    open_session,
)
from bip_disk import TorrentHandle, TorrentState
from bip_disk._torrent import TorrentStorage
from bip_peer import HaveAll, Piece, Request, Unchoke
from bip_select import Block

PIECE = 32768
BLOCK = 16384


def asked(peer: HostilePeer, piece: int, begin: int) -> int:
    """How many requests for the block at ``begin`` of ``piece`` the peer received."""
    return sum(
        isinstance(m, Request) and (m.index, m.begin) == (piece, begin) for m in peer.received
    )


async def test_deselecting_drops_the_partial_pieces_and_reselecting_asks_again(
    tmp_path: Path,
) -> None:
    # f0.bin: pieces 0 and 1; sub/f1.bin: pieces 2 and 3.
    folder = write_content(tmp_path / "seed", (2 * PIECE, 2 * PIECE))
    torrent = make_torrent(folder, "v1", piece_length=PIECE)
    content = (folder / "f0.bin").read_bytes()
    with trio.fail_after(20):
        async with open_session(loopback_config()) as session:
            download = await session.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", files=frozenset({0}), resume=False)
            )
            await download.ready.wait()
            handle = download.handle
            assert handle is not None
            [address] = session.handshaker.listen_addresses
            async with hostile_peer(address, torrent.info.info_hash) as peer:
                await peer.send(HaveAll(), Unchoke())
                # The first block of each piece of f0.bin, and nothing more: two pieces
                # half received, each a piece-sized buffer of the disk's shared bound.
                await peer.wait_until(lambda: asked(peer, 0, 0) > 0 and asked(peer, 1, 0) > 0)
                await peer.send(
                    *(Piece(p, 0, content[p * PIECE : p * PIECE + BLOCK]) for p in (0, 1))
                )
                await until(lambda: session.disk.status(handle).partial_pieces == 2)
                download.set_files(frozenset({1}))
                assert session.disk.status(handle).partial_pieces == 0
                assert session.disk.statistics().in_flight_bytes == 0
                # Wanted again: the brain asks for the blocks the disk dropped too.
                before = asked(peer, 0, 0)
                download.set_files(None)
                await peer.wait_until(lambda: asked(peer, 0, 0) > before)


async def test_a_recheck_forgets_what_was_done_at_once(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", (100_000, 100_000, 100_000))
    torrent = make_torrent(folder, "v1", piece_length=PIECE)
    with trio.fail_after(20):
        async with open_session(loopback_config()) as session:
            download = await session.add_torrent(
                torrent, TorrentOptions(folder.parent, auto_managed=False)
            )
            await download.wait_complete()
            (folder / "f0.bin").unlink()  # the check will find a third gone
            download.pause()
            download.force_recheck()
            status = download.status()
            # Nothing counts as had until the check says (libtorrent's force_recheck).
            assert (status.done, status.complete, status.eta) == (0, False, None)
            download.set_files(frozenset({0}))
            status = download.status()
            assert status.done <= status.total
            download.resume()
            await until(lambda: download.swarm is not None)
            status = download.status()
            assert status.phase is TorrentPhase.DOWNLOADING
            assert (status.done, status.complete) == (0, False)


async def test_files_reads_the_priorities_pad_files_included(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", (50_000, 40_000, 30_000))
    torrent = make_torrent(folder, "hybrid")
    pads = [i for i, f in enumerate(torrent.info.files) if f.is_pad]
    real = frozenset(i for i, f in enumerate(torrent.info.files) if not f.is_pad)
    assert pads
    with trio.fail_after(20):
        async with open_session(loopback_config()) as session:
            download = await session.add_torrent(torrent, TorrentOptions(tmp_path / "down"))
            await download.ready.wait()
            seen = []
            download.set_files(real)
            seen.append(download.files)  # None: every file but the pad files
            download.set_files(frozenset({pads[0]}))
            seen.append(download.files)  # nothing: a pad file is never selected
            assert download.status().total == 0
            download.set_files(frozenset({pads[0], min(real)}))
            seen.append(download.files)
            download.set_file_priorities([4] * len(torrent.info.files))
            seen.append(download.files)
            assert seen == [None, frozenset(), frozenset({min(real)}), None]


async def test_deselecting_during_a_moves_check_drops_the_partial_pieces(tmp_path: Path) -> None:
    # f0.bin: pieces 0 and 1, half received; sub/f1.bin (pieces 2, 3) is in the move's way.
    folder = write_content(tmp_path / "seed", (2 * PIECE, 2 * PIECE))
    torrent = make_torrent(folder, "v1", piece_length=PIECE)
    content = (folder / "f0.bin").read_bytes()
    moved = tmp_path / "moved"
    (moved / folder.name / "sub").mkdir(parents=True)
    (moved / folder.name / "sub" / "f1.bin").write_bytes((folder / "sub" / "f1.bin").read_bytes())
    with trio.fail_after(20):
        async with open_session(loopback_config()) as session:
            download = await session.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", resume=False, auto_managed=False)
            )
            await download.ready.wait()
            handle = download.handle
            assert handle is not None
            [address] = session.handshaker.listen_addresses
            async with hostile_peer(address, torrent.info.info_hash) as peer:
                await peer.send(HaveAll(), Unchoke())
                await peer.wait_until(lambda: asked(peer, 0, 0) > 0 and asked(peer, 1, 0) > 0)
                await peer.send(
                    *(Piece(p, 0, content[p * PIECE : p * PIECE + BLOCK]) for p in (0, 1))
                )
                await until(lambda: session.disk.status(handle).partial_pieces == 2)
                wait_checked = session.disk.wait_checked

                async def deselect_while_checking(checked: TorrentHandle) -> TorrentState:
                    if download.swarm is None:  # the move's check of the kept file
                        download.set_files(frozenset({1}))  # f0.bin's pieces 0, 1: unwanted
                    return await wait_checked(checked)

                session.disk.wait_checked = deselect_while_checking  # type: ignore[method-assign,assignment]
                await download.move_storage(moved, flags=MoveFlags.DONT_REPLACE)
                await until(lambda: download.swarm is not None)
                assert session.disk.status(handle).partial_pieces == 0
                assert session.disk.statistics().in_flight_bytes == 0


async def test_a_moves_check_counts_nothing_as_done_until_it_ends(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", (300_000, 200_000, 100_000))
    torrent = make_torrent(folder, "v1", piece_length=PIECE)
    here, moved = tmp_path / "here", tmp_path / "moved"
    here.mkdir()
    folder.rename(here / folder.name)
    (moved / folder.name).mkdir(parents=True)
    (moved / folder.name / "f2.bin").write_bytes(bytes(100_000))  # kept, and spoilt
    seen: list[TorrentStatus] = []
    with trio.fail_after(20):
        async with open_session(loopback_config()) as session:
            download = await session.add_torrent(
                torrent, TorrentOptions(here, auto_managed=False, resume=False)
            )
            await download.wait_complete()
            download.pause()
            wait_checked = session.disk.wait_checked

            async def look_while_checking(checked: TorrentHandle) -> TorrentState:
                if download.swarm is None and not seen:
                    seen.append(download.status())
                    download.set_files(frozenset({0}))
                    seen.append(download.status())
                return await wait_checked(checked)

            session.disk.wait_checked = look_while_checking  # type: ignore[method-assign,assignment]
            await download.move_storage(moved, flags=MoveFlags.DONT_REPLACE)
            await until(lambda: download.swarm is not None)
            seen.append(download.status())
    # Nothing counts as had until the check says (as after force_recheck).
    assert [(s.done, s.complete, s.eta) for s in seen[:2]] == [(0, False, None)] * 2
    assert seen[1].total < seen[0].total
    assert 0 < seen[2].done <= seen[2].total
    assert not seen[2].complete


async def open_slow_disk_download(
    session: Session, tmp_path: Path, gate: trio.Event, entered: trio.Event
) -> tuple[Torrent, bytes, Any]:
    """A download of f0.bin (pieces 0, 1) whose disk holds every write until ``gate``."""
    folder = write_content(tmp_path / "seed", (2 * PIECE, 2 * PIECE))
    torrent = make_torrent(folder, "v1", piece_length=PIECE)
    download = await session.add_torrent(
        torrent, TorrentOptions(tmp_path / "down", resume=False, files=frozenset({0}))
    )
    await download.ready.wait()
    write_block = session.disk.write_block

    async def slow_write_block(
        handle: TorrentHandle, piece: int, begin: int, data: bytes | bytearray | memoryview
    ) -> bool:
        entered.set()
        await gate.wait()
        return await write_block(handle, piece, begin, data)

    session.disk.write_block = slow_write_block  # type: ignore[method-assign,assignment]
    return download, (folder / "f0.bin").read_bytes(), torrent.info.info_hash


async def test_a_block_being_written_when_its_piece_is_deselected_is_dropped_after(
    tmp_path: Path,
) -> None:
    gate, entered = trio.Event(), trio.Event()
    with trio.fail_after(20):
        async with open_session(loopback_config()) as session:
            download, content, info_hash = await open_slow_disk_download(
                session, tmp_path, gate, entered
            )
            handle = download.handle
            assert handle is not None
            [address] = session.handshaker.listen_addresses
            async with hostile_peer(address, info_hash) as peer:
                await peer.send(HaveAll(), Unchoke())
                await peer.wait_until(lambda: asked(peer, 0, 0) > 0)
                await peer.send(Piece(0, 0, content[:BLOCK]))
                await entered.wait()  # in the disk's hands
                download.set_files(frozenset({1}))
                gate.set()
                await until(lambda: not download._blocks.queued_bytes)
                assert session.disk.status(handle).partial_pieces == 0
                assert session.disk.statistics().in_flight_bytes == 0


async def test_blocks_waiting_for_the_disk_of_a_deselected_piece_are_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[int] = []
    new_partial = TorrentStorage.new_partial

    def count_new_partial(storage: TorrentStorage, piece: int, buffer: Any) -> Any:
        started.append(piece)
        return new_partial(storage, piece, buffer)

    monkeypatch.setattr(TorrentStorage, "new_partial", count_new_partial)
    gate, entered = trio.Event(), trio.Event()
    blocks = [(p, b) for p in (0, 1) for b in (0, BLOCK)]
    with trio.fail_after(20):
        async with open_session(loopback_config()) as session:
            download, content, info_hash = await open_slow_disk_download(
                session, tmp_path, gate, entered
            )
            handle = download.handle
            assert handle is not None
            [address] = session.handshaker.listen_addresses
            async with hostile_peer(address, info_hash) as peer:
                await peer.send(HaveAll(), Unchoke())
                await peer.wait_until(lambda: all(asked(peer, p, b) for p, b in blocks))
                await peer.send(
                    *(
                        Piece(p, b, content[p * PIECE + b : p * PIECE + b + BLOCK])
                        for p, b in blocks
                    )
                )
                await entered.wait()
                await until(lambda: download._blocks.queued_bytes == len(blocks) * BLOCK)
                download.set_files(frozenset({1}))  # f0.bin's four blocks: unwanted
                gate.set()
                await until(lambda: not download._blocks.queued_bytes)
                # The one in the disk's hands only: the others did not start their piece
                # again (a piece-sized buffer of the shared bound) to be dropped at once.
                assert len(started) == 1
                assert session.disk.status(handle).partial_pieces == 0


async def test_a_web_seeds_block_of_a_deselected_piece_is_not_written(tmp_path: Path) -> None:
    gate, entered = trio.Event(), trio.Event()
    gate.set()  # the disk is not held up: the block is refused before it
    with trio.fail_after(20):
        async with open_session(loopback_config()) as session:
            download, content, _ = await open_slow_disk_download(session, tmp_path, gate, entered)
            download.set_files(frozenset({1}))  # f0.bin's pieces 0, 1: unwanted
            # As a web seed's fetch of piece 0 begun before, ending now (one gone since).
            await download._web_block(object(), Block(0, 0, BLOCK), content[:BLOCK])  # type: ignore[arg-type]
            assert not entered.is_set()
