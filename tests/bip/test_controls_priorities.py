"""File priorities 0..7 of a torrent of a session (libtorrent's ``prioritize_files``,
``file_priority``, ``get_file_priorities`` and ``add_torrent_params.file_priorities``): what
the brain is given, the order pieces come in, and what the next run remembers."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from _engine_helpers import (
    address_of,
    download_from,
    loopback_config,
    make_torrent,
    seeder_and_leecher,
    until,
    write_content,
)
from hypothesis import given
from hypothesis import strategies as st

from bip._client import (
    DEFAULT_FILE_PRIORITY,
    MAX_FILE_PRIORITY,
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
from bip_disk import PieceVerified
from bip_metainfo import MagnetLink, Metainfo
from bip_select import TorrentGeometry

DEADLINE = 30.0
PIECE = 32768
SIZES = (300_000, 200_000, 100_000)  # f0, sub/f1, f2: the torrent lists f0, f2, sub/f1
ONLY_FILE_1 = 10  # bytes 327680..360448: inside file 1 (f2: 300000..400000)


def content(tmp_path: Path, sizes: tuple[int, ...] = SIZES) -> tuple[Path, Metainfo]:
    folder = write_content(tmp_path / "seed", sizes)
    return folder, make_torrent(folder, "v1", piece_length=PIECE)


def wanted_size(torrent: Metainfo, priorities: tuple[int, ...], pieces: set[int] = set()) -> int:  # noqa: B006
    """The data bytes of the pieces files at these priorities (and these pieces) need."""
    geometry = TorrentGeometry.from_info(torrent.info)
    by_piece = geometry.piece_priorities(priorities)
    wanted = {piece for piece, priority in enumerate(by_piece) if priority} | pieces
    return sum(geometry.piece_data_size(piece) for piece in wanted)


def selection_path(save_dir: Path, torrent: Metainfo) -> Path:
    return save_dir / ".bip" / f"{torrent.info.info_hash.hex()}.selection"


def selected(download: Torrent) -> frozenset[int] | None:
    return download.files  # (read again: mypy would keep what an earlier assert said)


def fed_to_brain(download: Torrent) -> list[int] | None:
    """The piece priorities the torrent gave its brain (``None``: every piece at 4)."""
    return download._priorities


def record_verified(torrent: Torrent) -> list[int]:
    """The pieces the disk verifies for ``torrent`` from now on, in order."""
    verified: list[int] = []
    original = torrent.disk_event

    async def disk_event(event: object) -> None:
        if isinstance(event, PieceVerified) and event.good:
            verified.append(event.piece)
        await original(event)

    torrent.disk_event = disk_event  # type: ignore[method-assign]
    return verified


async def checked(torrent: Torrent) -> Torrent:
    """``torrent`` once its data is checked (its brain made)."""
    await torrent.ready.wait()
    return torrent


# -- the priorities and the files selected -----------------------------------------------------


async def test_priorities_and_files_agree(tmp_path: Path) -> None:
    _folder, torrent = content(tmp_path)
    geometry = TorrentGeometry.from_info(torrent.info)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            # No peer: nothing arrives, the choices are all there is to see.
            download = await checked(
                await session.add_torrent(torrent, TorrentOptions(tmp_path / "down"))
            )
            assert download.file_priorities() == (DEFAULT_FILE_PRIORITY,) * 3
            assert selected(download) is None

            download.set_files(frozenset({0}))
            assert download.file_priorities() == (4, 0, 0)

            download.set_file_priorities([7, 0, 1])
            assert download.file_priorities() == (7, 0, 1)
            assert selected(download) == frozenset({0, 2})
            assert download.status().total == wanted_size(torrent, (7, 0, 1))
            # A piece takes the highest priority of its files (libtorrent's rule).
            assert fed_to_brain(download) == geometry.piece_priorities([7, 0, 1])
            shared = geometry.file_pieces(0)[-1]  # f0's last piece holds f2's first bytes
            assert shared in geometry.file_pieces(1)
            assert fed_to_brain(download)[shared] == 7  # type: ignore[index]

            download.set_file_priorities({1: 2})  # a few files: the others keep theirs
            assert download.file_priorities() == (7, 2, 1)
            assert selected(download) is None  # every file wanted
            assert download.status().total == torrent.info.total_size

            download.set_file_priorities((0, 0, 0))
            assert selected(download) == frozenset()
            status = download.status()
            assert status.phase is TorrentPhase.SEEDING
            assert status.total == status.done == 0

            download.set_files(None)
            assert download.file_priorities() == (4, 4, 4)
            assert fed_to_brain(download) is None  # every piece at the default


async def test_set_file_priorities_refuses_bad_input(tmp_path: Path) -> None:
    _folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            other = make_torrent(_folder, "v2", piece_length=PIECE)  # another info-hash
            magnet = MagnetLink.from_info_hash(other.info.info_hash)
            waiting = await session.add_torrent(magnet, TorrentOptions(tmp_path / "magnet"))
            assert waiting.file_priorities() == ()
            with pytest.raises(TorrentError, match="before the metadata"):
                waiting.set_file_priorities([4, 4, 4])

            download = await checked(
                await session.add_torrent(
                    torrent, TorrentOptions(tmp_path / "down", file_priorities=(1, 2, 3))
                )
            )
            total = download.status().total
            with pytest.raises(TorrentError, match="2 file priorities for 3 files"):
                download.set_file_priorities([4, 4])
            with pytest.raises(TorrentError, match="no file 3"):
                download.set_file_priorities({3: 4})
            with pytest.raises(TorrentError, match="no file -1"):
                download.set_file_priorities({-1: 4})
            with pytest.raises(ValueError, match="file priority 1 is 8"):
                download.set_file_priorities([4, 8, 4])
            with pytest.raises(ValueError, match=r"not in 0\.\.7"):
                download.set_file_priorities({0: -1})
            with pytest.raises(TypeError, match="not an int"):
                download.set_file_priorities([4, True, 4])
            with pytest.raises(TypeError, match="not an int"):
                download.set_file_priorities([4, 4.0, 4])  # type: ignore[list-item]
            with pytest.raises(TypeError, match="file indices"):
                download.set_file_priorities({"0": 4})  # type: ignore[dict-item]
            with pytest.raises(TypeError, match="sequence of ints"):
                download.set_file_priorities(b"\x04\x04\x04")
            with pytest.raises(TypeError, match="sequence of ints"):
                download.set_file_priorities(4)  # type: ignore[arg-type]
            # Nothing changed.
            assert download.file_priorities() == (1, 2, 3)
            assert download.status().total == total


def test_torrent_options_check_the_priorities(tmp_path: Path) -> None:
    options = TorrentOptions(tmp_path, file_priorities=[0, MAX_FILE_PRIORITY])
    assert options.file_priorities == (0, 7)  # kept as a tuple
    with pytest.raises(ValueError, match="files or file_priorities, not both"):
        TorrentOptions(tmp_path, files=frozenset({0}), file_priorities=(4,))
    with pytest.raises(ValueError, match=r"not in 0\.\.7"):
        TorrentOptions(tmp_path, file_priorities=(4, 9))
    with pytest.raises(TypeError, match="sequence of ints"):
        TorrentOptions(tmp_path, file_priorities="44")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="paused must be a bool"):
        TorrentOptions(tmp_path, paused=1)  # type: ignore[arg-type]


# -- downloading by priority -------------------------------------------------------------------


async def test_the_highest_priority_file_comes_first(tmp_path: Path) -> None:
    # Three files of 8 pieces each; the middle one wanted first, the last one not at all.
    folder, torrent = content(tmp_path, (8 * PIECE, 8 * PIECE, 8 * PIECE))
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(
            torrent, folder, download_rate_limit=512 * 1024, limit_local_peers=True
        ) as (seeder, leecher):
            download = await download_from(
                seeder, leecher, torrent, down, file_priorities=(1, 7, 0)
            )
            verified = record_verified(download)
            await download.wait_complete()
            # The torrent lists f0, f2, sub/f1: file 1 (f2) is pieces 8..15, at priority 7;
            # file 0 (f0) 0..7 at 1, file 2 (sub/f1) 16..23 at 0. Rarest first or not, the
            # pieces at 7 come first (but for one or two the seed's upload workers reorder;
            # with both files at one priority, f0's come first here).
            assert sorted(verified) == list(range(16))
            assert len(set(verified[:8]) & set(range(8, 16))) >= 6
            assert download.status().total == 16 * PIECE
            assert download.file_progress() == (8 * PIECE, 8 * PIECE, 0)
    assert not (down / "album" / "sub" / "f1.bin").exists()  # priority 0: never written


async def test_options_priorities_for_a_magnet_link(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            address = address_of(seeder)
            magnet = MagnetLink.from_info_hash(
                torrent.info.info_hash, peers=[(str(address.host), address.port)]
            )
            # Applied once the metadata tells the files.
            download = await leecher.add_torrent(
                magnet, TorrentOptions(tmp_path / "down", file_priorities=(0, 5, 0))
            )
            await download.wait_complete()
            assert download.file_priorities() == (0, 5, 0)
            assert selected(download) == frozenset({1})
            assert download.status().total == wanted_size(torrent, (0, 5, 0))
            # A count that does not fit fails the torrent, as a selection of a file it lacks.
            async with open_session(loopback_config()) as third:
                wrong = await third.add_torrent(
                    magnet, TorrentOptions(tmp_path / "wrong", file_priorities=(4, 4))
                )
                with pytest.raises(TorrentError, match="2 file priorities for 3 files"):
                    await wrong.wait_complete()
                assert wrong.status().phase is TorrentPhase.FAILED


async def test_a_deadline_raises_a_piece_at_priority_zero(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            download = await download_from(
                seeder, leecher, torrent, tmp_path / "down", file_priorities=(6, 0, 0)
            )
            await download.wait_complete()
            download.set_piece_deadline(ONLY_FILE_1, 0)
            assert fed_to_brain(download)[ONLY_FILE_1] == 1  # type: ignore[index]
            assert download.status().total == wanted_size(torrent, (6, 0, 0), {ONLY_FILE_1})
            await download.wait_complete()
            assert download.handle is not None
            assert ONLY_FILE_1 in leecher.disk.have(download.handle)
            assert download.file_priorities() == (6, 0, 0)  # the piece, not its file
            # New priorities set every piece's from its files again (libtorrent's too).
            download.set_file_priorities({2: 3})
            assert fed_to_brain(download)[ONLY_FILE_1] == 0  # type: ignore[index]


# -- remembered by the next run ----------------------------------------------------------------


async def test_the_saved_priorities_come_back(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    saved = selection_path(folder.parent, torrent)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            seeding.set_file_priorities([2, 0, 7])
            await until(saved.exists)
        # Readable by a reader that knows only "files" (what older versions select).
        assert decode_saved_selection(saved.read_bytes()) == SavedSelection(
            frozenset({0, 2}), (2, 0, 7)
        )
        async with open_session(loopback_config()) as session:
            again = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await again.wait_complete()
            assert again.file_priorities() == (2, 0, 7)
            assert again.status().total == wanted_size(torrent, (2, 0, 7))
        async with open_session(loopback_config()) as session:
            # Priorities named in the options win over the saved ones.
            named = await session.add_torrent(
                torrent, TorrentOptions(folder.parent, file_priorities=(1, 1, 1))
            )
            await named.wait_complete()
            assert named.file_priorities() == (1, 1, 1)
        # A record whose count does not fit the torrent is not ours: ignored.
        saved.write_bytes(encode_saved_selection(None, (7, 7)))
        async with open_session(loopback_config()) as session:
            fresh = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await fresh.wait_complete()
            assert fresh.file_priorities() == (4, 4, 4)
        # An older record (a selection only) is read as before.
        saved.write_bytes(encode_saved_selection(frozenset({1})))
        async with open_session(loopback_config()) as session:
            older = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await older.wait_complete()
            assert older.file_priorities() == (0, 4, 0)


def test_saved_priorities_round_trip() -> None:
    for priorities in ((4,), (0, 7, 1, 0), ()):
        selected = frozenset(i for i, p in enumerate(priorities) if p)
        data = encode_saved_selection(None, priorities)
        assert decode_saved_selection(data) == SavedSelection(selected, priorities)
    assert decode_saved_selection(b"d10:prioritiesli4ei7eee") == SavedSelection(None, (4, 7))
    for bad in (
        b"d10:prioritiesi4ee",  # not a list
        b"d10:prioritiesli8eee",  # above 7
        b"d10:prioritiesli-1eee",  # below 0
        b"d10:prioritiesl1:4ee",  # not an int
        b"d5:filesli0ee10:prioritiesli4e3:abcee",
    ):
        assert decode_saved_selection(bad) is None


@given(st.lists(st.integers(0, 7), max_size=50))
def test_saved_priorities_round_trip_any(priorities: list[int]) -> None:
    saved = decode_saved_selection(encode_saved_selection(None, priorities))
    assert saved is not None
    assert saved.priorities == tuple(priorities)


@given(st.binary(max_size=64))
def test_saved_selection_reads_anything(data: bytes) -> None:
    saved = decode_saved_selection(data)
    assert saved is None or isinstance(saved, SavedSelection)
