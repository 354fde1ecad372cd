"""What bip's docs promise and the code did not keep: a deadline for a piece we already have
is ignored (set_piece_deadline's docstring, libtorrent's ``set_piece_deadline`` returns before
raising the piece's priority when the piece has passed its check)."""

from __future__ import annotations

from pathlib import Path

import trio
from _engine_helpers import (
    download_from,
    loopback_config,
    make_torrent,
    seeder_and_leecher,
    until,
    write_content,
)

from bip._client import TorrentOptions, TorrentPhase, open_session
from bip._errors import describe
from bip_handshake import CompactError, PeerIdError, RemoteProtocolError
from bip_metainfo import Metainfo
from bip_select import TorrentGeometry

DEADLINE = 30.0
PIECE = 32768
SIZES = (300_000, 200_000, 100_000)  # f0, sub/f1, f2: the torrent lists f0, f2, sub/f1
ONLY_FILE_2 = 16  # inside file 2 (sub/f1) alone


def content(tmp_path: Path) -> tuple[Path, Metainfo]:
    folder = write_content(tmp_path / "seed", SIZES)
    return folder, make_torrent(folder, "v1", piece_length=PIECE)


def size_of_file_0(torrent: Metainfo) -> int:
    geometry = TorrentGeometry.from_info(torrent.info)
    return sum(geometry.piece_data_size(p) for p in geometry.file_pieces(0))


async def test_a_deadline_for_a_piece_we_have_leaves_it_unselected(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(
                torrent, TorrentOptions(folder.parent, files=frozenset({0}))
            )
            await seeding.wait_complete()
            assert seeding.swarm is not None
            assert seeding.swarm.brain.has_piece(ONLY_FILE_2)
            seeding.set_piece_deadline(ONLY_FILE_2, 5.0)
            status = seeding.status()
            assert status.total == size_of_file_0(torrent)
            assert status.phase is TorrentPhase.SEEDING
            assert ONLY_FILE_2 not in seeding.swarm.brain.deadlines()


async def test_a_deadline_set_while_checking_for_a_piece_on_disk_is_dropped_whole(
    tmp_path: Path,
) -> None:
    folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(
                torrent, TorrentOptions(folder.parent, files=frozenset({0}))
            )
            # Checking: nobody knows yet that the piece is there.
            assert seeding.status().phase is TorrentPhase.CHECKING
            seeding.set_piece_deadline(ONLY_FILE_2, 5.0)
            await seeding.wait_complete()
            assert seeding.swarm is not None
            assert seeding.swarm.brain.has_piece(ONLY_FILE_2)
            status = seeding.status()
            assert status.total == size_of_file_0(torrent)
            assert status.phase is TorrentPhase.SEEDING
            assert ONLY_FILE_2 not in seeding.swarm.brain.deadlines()


async def test_a_deadline_set_and_cleared_while_checking_is_dropped_with_its_raise(
    tmp_path: Path,
) -> None:
    folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(
                torrent, TorrentOptions(folder.parent, files=frozenset({0}))
            )
            assert seeding.status().phase is TorrentPhase.CHECKING
            seeding.set_piece_deadline(ONLY_FILE_2, 5.0)
            seeding.clear_piece_deadline(ONLY_FILE_2)  # the raise stays: the check finds it
            await seeding.wait_complete()
            assert seeding.status().total == size_of_file_0(torrent)


async def test_a_raise_made_before_a_recheck_stays_whatever_deadline_comes_meanwhile(
    tmp_path: Path,
) -> None:
    folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            download = await download_from(
                seeder,
                leecher,
                torrent,
                tmp_path / "down",
                files=frozenset({0}),
                auto_managed=False,
                resume=False,  # no resume save to wait for at the close
            )
            await until(lambda: download.swarm is not None)
            download.set_piece_deadline(ONLY_FILE_2, 1.0)  # raised to 1: fetched
            await download.wait_complete()
            raised = download.status().total
            assert raised > size_of_file_0(torrent)
            download.force_recheck()
            # Checking: a deadline again for the piece raised before (kept: not this
            # check's raise, so the check finding the piece does not undo it).
            download.set_piece_deadline(ONLY_FILE_2, 1.0)
            await until(lambda: download.swarm is not None)
            assert download.status().total == raised


def test_the_command_line_still_names_compact_and_peer_id_errors() -> None:
    """CompactError and PeerIdError are HandshakeErrors now: their own labels still win."""
    assert describe(CompactError("a compact peer is 6 bytes")).startswith("bad compact address:")
    assert describe(PeerIdError("a peer id is 20 bytes")).startswith("bad peer id:")
    assert describe(RemoteProtocolError("not BitTorrent")).startswith("handshake:")


async def test_a_deadline_after_a_new_selection_while_checking_raises_the_piece(
    tmp_path: Path,
) -> None:
    """A torrent whose brain had explicit priorities rechecks; set_files then deselects a
    piece and a deadline comes for it, both during the check: the piece is raised and keeps
    its deadline, as without a check (the priorities read were the old brain's)."""
    _folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            download = await session.add_torrent(
                torrent,
                TorrentOptions(
                    tmp_path / "down",
                    auto_managed=False,
                    resume=False,
                    files=frozenset({0, 1, 2}),
                ),
            )
            await until(lambda: download.swarm is not None)  # nothing on disk: downloading
            download.pause()
            download.force_recheck()
            assert not download.swarm  # no brain while the check waits (paused)
            download.set_files(frozenset({0}))
            download.set_piece_deadline(ONLY_FILE_2, 5.0)
            download.resume()
            await until(lambda: download.swarm is not None)
            swarm = download.swarm
            assert swarm is not None
            assert ONLY_FILE_2 in swarm.brain.deadlines()
            assert download.status().total > size_of_file_0(torrent)


async def test_a_raise_made_in_an_earlier_check_stays_after_the_next_finds_the_piece(
    tmp_path: Path,
) -> None:
    """A piece raised during one check (not on disk then), fetched, and found by the next
    check: the next check keeps the raise (only the raises of the check that finds the piece
    are undone)."""
    folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            download = await download_from(
                seeder,
                leecher,
                torrent,
                tmp_path / "down",
                files=frozenset({0}),
                auto_managed=False,
                resume=False,
            )
            await until(lambda: download.swarm is not None)
            download.pause()
            download.force_recheck()
            download.set_piece_deadline(ONLY_FILE_2, 1.0)  # raised in check 1: not on disk
            download.resume()
            await until(lambda: download.swarm is not None)
            await download.wait_complete()
            raised = download.status().total
            assert raised > size_of_file_0(torrent)
            download.force_recheck()
            await until(lambda: download.swarm is not None)
            assert download.status().total == raised
