"""Choosing files, rechecking and moving a torrent of a session (libtorrent's
``prioritize_files``, ``force_recheck``, ``move_storage``), a deadline on a piece not
selected, and the handshaker's inbound bounds from the config: our seed and our download on
loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from _engine_helpers import (
    address_of,
    download_from,
    loopback_config,
    make_torrent,
    same_files,
    seeder_and_leecher,
    spoil_pieces,
    until,
    write_content,
)
from hypothesis import given
from hypothesis import strategies as st

from bip._client import (
    ClientConfig,
    Torrent,
    TorrentError,
    TorrentOptions,
    TorrentPhase,
    open_session,
)
from bip._client._resume import (
    SavedSelection,
    decode_saved_selection,
    encode_saved_selection,
)
from bip_disk import MemoryFileSystem
from bip_metainfo import MagnetLink, Metainfo
from bip_select import TorrentGeometry

DEADLINE = 30.0
PIECE = 32768
SIZES = (300_000, 200_000, 100_000)  # f0, sub/f1, f2: the torrent lists f0, f2, sub/f1
ONLY_FILE_2 = 16  # bytes 524288..557056: inside file 2 (sub/f1: 400000..600000)


def content(tmp_path: Path) -> tuple[Path, Metainfo]:
    folder = write_content(tmp_path / "seed", SIZES)
    return folder, make_torrent(folder, "v1", piece_length=PIECE)


def wanted_size(torrent: Metainfo, files: set[int], pieces: set[int] = set()) -> int:  # noqa: B006
    """The data bytes of the pieces these files (and pieces) need."""
    geometry = TorrentGeometry.from_info(torrent.info)
    wanted = {p for f in files for p in geometry.file_pieces(f)} | pieces
    return sum(geometry.piece_data_size(p) for p in wanted)


def file_bytes(torrent: Metainfo, root: Path, index: int) -> bytes | None:
    """File ``index`` of the torrent (its order: ``f0``, ``f2``, ``sub/f1``) under ``root``."""
    path = root.joinpath(*torrent.info.files[index].path)
    return path.read_bytes() if path.exists() else None


def selected(download: Torrent) -> frozenset[int] | None:
    return download.files  # (read again: mypy would keep what an earlier assert said)


def files_in(folder: Path, pattern: str) -> list[Path]:
    return list(folder.glob(pattern)) if folder.exists() else []


def left(download: Torrent) -> int:
    return download.transfer()[2]


# -- set_files ---------------------------------------------------------------------------------


async def test_select_more_files_after_completing(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            download = await download_from(seeder, leecher, torrent, down, files=frozenset({0}))
            await download.wait_complete()
            first = download.completed
            status = download.status()
            assert status.phase is TorrentPhase.SEEDING
            assert status.total == status.done == wanted_size(torrent, {0})
            assert left(download) == torrent.info.total_size - status.done > 0
            assert download.files == frozenset({0})

            download.set_files(frozenset({0, 2}))
            status = download.status()
            assert download.files == frozenset({0, 2})
            assert status.phase is TorrentPhase.DOWNLOADING
            assert status.total == wanted_size(torrent, {0, 2})
            assert left(download) == torrent.info.total_size - status.done > 0
            assert first.is_set()  # the old event stays set; a new one waits
            assert download.completed is not first
            assert not download.completed.is_set()
            await download.wait_complete()
            assert download.status().phase is TorrentPhase.SEEDING
            assert download.handle is not None
            await leecher.disk.wait_idle(download.handle)  # written, not only verified
            assert file_bytes(torrent, down, 2) == file_bytes(torrent, folder.parent, 2)
            assert file_bytes(torrent, down, 0) == file_bytes(torrent, folder.parent, 0)
            # Remembered for the next run.
            selection = down / ".bip" / f"{torrent.info.info_hash.hex()}.selection"
            await until(selection.exists)
            assert decode_saved_selection(selection.read_bytes()) == SavedSelection(
                frozenset({0, 2})
            )

            download.set_files(None)
            assert download.status().phase is TorrentPhase.DOWNLOADING
            await download.wait_complete()
            assert selected(download) is None
    assert same_files(folder, down / "album")


async def test_deselect_makes_a_download_complete(tmp_path: Path) -> None:
    _folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            # No peer: nothing arrives, but deselecting every file completes it.
            download = await session.add_torrent(torrent, TorrentOptions(tmp_path / "down"))
            await download.ready.wait()
            assert download.status().phase is TorrentPhase.DOWNLOADING
            download.set_files(frozenset())
            status = download.status()
            assert status.phase is TorrentPhase.SEEDING
            assert status.total == status.done == 0
            assert left(download) == torrent.info.total_size
            await download.wait_complete()


async def test_set_files_refuses_bad_selections(tmp_path: Path) -> None:
    _folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            download = await session.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", files=frozenset({1}))
            )
            await download.ready.wait()
            total = download.status().total
            with pytest.raises(TorrentError, match="no file 3 to select"):
                download.set_files(frozenset({0, 3}))
            with pytest.raises(TorrentError, match="no file -1 to select"):
                download.set_files(frozenset({-1}))
            with pytest.raises(TypeError, match="frozenset of ints"):
                download.set_files(frozenset({"0"}))  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="frozenset of ints"):
                download.set_files([0])  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="frozenset of ints"):
                download.set_files(frozenset({True}))
            assert download.files == frozenset({1})
            assert download.status().total == total


async def test_the_saved_selection_comes_back(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            seeding.set_files(frozenset({1}))
        async with open_session(loopback_config()) as session:
            again = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await again.wait_complete()
            assert again.files == frozenset({1})
            assert again.status().total == wanted_size(torrent, {1})
        async with open_session(loopback_config()) as session:
            # Files named in the options win over the saved ones.
            named = await session.add_torrent(
                torrent, TorrentOptions(folder.parent, files=frozenset({2}))
            )
            await named.wait_complete()
            assert named.files == frozenset({2})
        # A record that is not ours is ignored.
        saved = folder.parent / ".bip" / f"{torrent.info.info_hash.hex()}.selection"
        saved.write_bytes(b"d5:filesli-1eee")
        async with open_session(loopback_config()) as session:
            fresh = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await fresh.wait_complete()
            assert fresh.files is None


async def test_set_files_before_the_metadata(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            address = address_of(seeder)
            magnet = MagnetLink.from_info_hash(
                torrent.info.info_hash, peers=[(str(address.host), address.port)]
            )
            download = await leecher.add_torrent(magnet, TorrentOptions(down))
            assert download.info is None
            download.set_files(frozenset({2}))
            await download.wait_complete()
            assert download.status().total == wanted_size(torrent, {2})
    assert file_bytes(torrent, down, 2) == file_bytes(torrent, folder.parent, 2)


def test_saved_selection_round_trip() -> None:
    for files in (None, frozenset(), frozenset({0, 7, 3})):
        assert decode_saved_selection(encode_saved_selection(files)) == SavedSelection(files)
    for bad in (b"", b"le", b"d5:files3:abce", b"d5:filesli1e3:abcee", b"x" * (5 << 20)):
        assert decode_saved_selection(bad) is None


@given(st.binary(max_size=64))
def test_saved_selection_reads_anything(data: bytes) -> None:
    saved = decode_saved_selection(data)
    assert saved is None or isinstance(saved, SavedSelection)


# -- a deadline on a piece not selected --------------------------------------------------------


async def test_a_deadline_raises_a_piece_not_selected(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            download = await download_from(seeder, leecher, torrent, down, files=frozenset({0}))
            await download.wait_complete()
            download.set_piece_deadline(ONLY_FILE_2, 0)
            status = download.status()
            assert status.phase is TorrentPhase.DOWNLOADING
            assert status.total == wanted_size(torrent, {0}, {ONLY_FILE_2})
            await download.wait_complete()
            assert download.handle is not None
            have = leecher.disk.have(download.handle)
            assert ONLY_FILE_2 in have
            assert ONLY_FILE_2 + 1 not in have  # the piece, not its file
            # Clearing the deadline leaves it wanted (libtorrent's too); a selection drops it.
            download.clear_piece_deadline(ONLY_FILE_2)
            assert download.status().total == wanted_size(torrent, {0}, {ONLY_FILE_2})
            download.set_piece_deadline(ONLY_FILE_2 + 1, 3600)
            assert download.swarm is not None
            assert ONLY_FILE_2 + 1 in download.swarm.brain.deadlines()
            download.set_files(frozenset({0}))  # before any checkpoint: nothing came yet
            assert download.status().total == wanted_size(torrent, {0})
            assert download.status().phase is TorrentPhase.SEEDING
            # A piece no longer wanted loses its deadline (libtorrent's prioritize_files).
            assert ONLY_FILE_2 + 1 not in download.swarm.brain.deadlines()


async def test_a_deadline_before_the_brain_raises_the_piece(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            download = await download_from(
                seeder, leecher, torrent, tmp_path / "down", files=frozenset({0})
            )
            assert download.swarm is None
            download.set_piece_deadline(ONLY_FILE_2, 1.0)
            await download.wait_complete()
            assert download.status().total == wanted_size(torrent, {0}, {ONLY_FILE_2})
            assert download.handle is not None
            assert ONLY_FILE_2 in leecher.disk.have(download.handle)


# -- force_recheck -----------------------------------------------------------------------------


async def test_force_recheck_finds_spoilt_pieces_and_fetches_them_again(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            [seeding] = seeder.torrents
            download = await download_from(seeder, leecher, torrent, down)
            await download.wait_complete()
            first = download.completed
            spoil_pieces(torrent.info, down, [0, 7])
            download.force_recheck()
            assert download.status().phase is TorrentPhase.CHECKING
            download.force_recheck()  # checking already: nothing more
            await until(lambda: not seeding.peers)
            await until(lambda: download.status().phase is not TorrentPhase.CHECKING)
            assert first.is_set()
            await download.wait_complete()
            assert download.status().phase is TorrentPhase.SEEDING
            assert download.status().bad_pieces == 0
    assert same_files(folder, down / "album")


async def test_force_recheck_of_a_whole_torrent_keeps_it_seeding(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            first = seeding.completed
            seeding.pause()
            seeding.force_recheck()
            # Forgotten until the check says, as libtorrent's force_recheck forgets have_all
            # (a wait started meanwhile waits for the check); a waiter woken before stays so.
            assert not seeding.completed.is_set()
            await until(lambda: seeding.swarm is not None)
            assert first.is_set()
            assert seeding.completed.is_set()
            assert seeding.status().phase is TorrentPhase.PAUSED
            seeding.resume()
            assert seeding.status().phase is TorrentPhase.SEEDING


async def test_force_recheck_needs_the_metadata(tmp_path: Path) -> None:
    _, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            magnet = MagnetLink.from_info_hash(torrent.info.info_hash)
            waiting = await session.add_torrent(magnet, TorrentOptions(tmp_path / "down"))
            with pytest.raises(TorrentError, match="before the metadata"):
                waiting.force_recheck()


# -- move_storage ------------------------------------------------------------------------------


async def test_move_storage_moves_the_files_and_the_resume_data(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    down, moved = tmp_path / "down", tmp_path / "moved"
    name = torrent.info.info_hash.hex()
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            download = await download_from(seeder, leecher, torrent, down)
            await download.wait_complete()
            await until((down / ".bip" / f"{name}.resume").exists)
            await download.move_storage(moved)
            assert download.options.save_dir == moved
            assert download.status().phase is TorrentPhase.SEEDING
            assert same_files(folder, moved / "album")
            assert not (down / "album" / "f0.bin").exists()
            assert not files_in(down / ".bip", f"{name}.*")
            assert (moved / ".bip" / f"{name}.resume").exists()
        # The next run from the new place trusts the resume data there.
        async with open_session(loopback_config()) as session:
            again = await session.add_torrent(torrent, TorrentOptions(moved))
            await again.wait_complete()


async def test_move_storage_uses_the_storage_factory(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    stores: dict[Path, MemoryFileSystem] = {}

    def storage(save_dir: Path) -> MemoryFileSystem:
        return stores.setdefault(save_dir, MemoryFileSystem())

    first, second = tmp_path / "first", tmp_path / "second"
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            download = await download_from(seeder, leecher, torrent, first, storage=storage)
            await download.wait_complete()
            await download.move_storage(second)
            assert download.options.save_dir == second
            assert download.options.storage is storage
    assert set(stores) == {first, second}
    for entry in torrent.info.files:
        name = "/".join(entry.path)
        expected = folder.parent.joinpath(*entry.path).read_bytes()
        assert stores[second].read(name, 0, entry.length) == expected
        assert stores[first].size(name) is None  # the old copy is gone
    # The resume files went with it (the real disk keeps those).
    assert files_in(second / ".bip", "*.resume")
    assert not files_in(first / ".bip", "*")


async def test_move_storage_before_the_metadata(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    moved = tmp_path / "moved"
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            address = address_of(seeder)
            magnet = MagnetLink.from_info_hash(
                torrent.info.info_hash, peers=[(str(address.host), address.port)]
            )
            download = await leecher.add_torrent(magnet, TorrentOptions(tmp_path / "down"))
            download.pause()
            await download.move_storage(moved)
            download.resume()
            await download.wait_complete()
            assert download.options.save_dir == moved
    assert same_files(folder, moved / "album")
    assert not (tmp_path / "down" / "album").exists()


async def test_move_storage_refuses_while_checking(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            assert seeding.status().phase is TorrentPhase.CHECKING
            with pytest.raises(TorrentError, match="cannot move while checking"):
                await seeding.move_storage(tmp_path / "moved")
            await seeding.wait_complete()
            assert seeding.options.save_dir == folder.parent


async def test_move_storage_that_fails_leaves_the_torrent_in_place(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder must go")
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            with pytest.raises(TorrentError, match="cannot move"):
                await seeding.move_storage(blocker / "inside")
            assert seeding.options.save_dir == folder.parent
            assert seeding.status().phase is TorrentPhase.SEEDING
            # Still serving from where it was: a recheck finds everything.
            seeding.force_recheck()
            await until(lambda: seeding.status().phase is TorrentPhase.SEEDING)
            assert seeding.status().pieces == torrent.info.num_pieces


# -- the handshaker's inbound bounds -----------------------------------------------------------


async def test_inbound_bounds_reach_the_handshaker() -> None:
    async with open_session(loopback_config(max_inbound=3, max_inbound_per_host=1)) as session:
        assert session.handshaker._max_inbound == 3
        assert session.handshaker._max_per_host == 1
    async with open_session(loopback_config()) as session:  # the handshaker's defaults
        assert session.handshaker._max_inbound == 64
        assert session.handshaker._max_per_host == 16


@pytest.mark.parametrize("name", ["max_inbound", "max_inbound_per_host"])
@pytest.mark.parametrize("value", [0, -1, True, 2.5, "3"])
def test_inbound_bounds_are_checked(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        ClientConfig(**{name: value})  # type: ignore[arg-type]
