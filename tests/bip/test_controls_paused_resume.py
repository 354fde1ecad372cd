"""A torrent's paused state across runs of a session (libtorrent's resume data ``paused``,
and ``add_torrent_params``' paused flag): saved in ``.bip/HASH.state``, read back by
``add_torrent`` unless ``TorrentOptions.paused`` says otherwise."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
from _engine_helpers import (
    download_from,
    loopback_config,
    make_torrent,
    same_files,
    until,
    write_content,
)
from hypothesis import given
from hypothesis import strategies as st

from bip._client import TorrentOptions, TorrentPhase, open_session
from bip._client._resume import decode_saved_paused, encode_saved_paused
from bip_bencode import encode
from bip_metainfo import MagnetLink, Metainfo

DEADLINE = 30.0
PIECE = 32768


def content(tmp_path: Path) -> tuple[Path, Metainfo]:
    folder = write_content(tmp_path / "seed", [200_000, 100_000])
    return folder, make_torrent(folder, "v1", piece_length=PIECE)


def state_path(save_dir: Path, torrent: Metainfo) -> Path:
    return save_dir / ".bip" / f"{torrent.info.info_hash.hex()}.state"


def saved_paused(save_dir: Path, torrent: Metainfo) -> bool | None:
    """What the state file says (``None``: no file, or not ours)."""
    path = state_path(save_dir, torrent)
    return decode_saved_paused(path.read_bytes()) if path.exists() else None


async def test_a_torrent_paused_at_close_comes_back_paused(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    save_dir = folder.parent
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(save_dir))
            await seeding.wait_complete()
            assert saved_paused(save_dir, torrent) is None  # never paused: nothing written
            seeding.pause()
        assert saved_paused(save_dir, torrent) is True

        async with (
            open_session(loopback_config()) as seeder,
            open_session(loopback_config()) as leecher,
        ):
            again = await seeder.add_torrent(torrent, TorrentOptions(save_dir))
            assert again.paused
            assert again.halted
            # It checks its data, but joins no swarm: inbound handshakes are refused.
            await again.ready.wait()
            assert again.status().phase is TorrentPhase.PAUSED
            assert again.status().pieces == torrent.info.num_pieces
            download = await download_from(seeder, leecher, torrent, down)
            await until(lambda: seeder.handshaker.statistics().unknown_info_hash > 0)
            assert not again.peers

            again.resume()  # back in its swarm: it serves the leecher (who dials again)
            assert again.status().phase is TorrentPhase.SEEDING
            await download.wait_complete()
            # No longer paused, for the next run too (saved with the resume data).
            await until(lambda: saved_paused(save_dir, torrent) is False)

        async with open_session(loopback_config()) as session:
            third = await session.add_torrent(torrent, TorrentOptions(save_dir))
            assert not third.paused
            await third.wait_complete()
    assert same_files(folder, down / "album")


async def test_the_options_win_over_the_saved_state(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    save_dir = folder.parent
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(save_dir))
            seeding.pause()
        async with open_session(loopback_config()) as session:
            forced = await session.add_torrent(torrent, TorrentOptions(save_dir, paused=False))
            assert not forced.paused
            await forced.wait_complete()
            assert forced.status().phase is TorrentPhase.SEEDING
        # That run ended unpaused: "as saved" is unpaused now.
        assert saved_paused(save_dir, torrent) is False
        async with open_session(loopback_config()) as session:
            as_saved = await session.add_torrent(torrent, TorrentOptions(save_dir))
            assert not as_saved.paused
            await session.remove_torrent(as_saved)
            forced = await session.add_torrent(torrent, TorrentOptions(save_dir, paused=True))
            assert forced.paused
            await forced.ready.wait()
            assert forced.status().phase is TorrentPhase.PAUSED
        assert saved_paused(save_dir, torrent) is True


async def test_the_pause_is_saved_while_running(tmp_path: Path) -> None:
    # What a kill would leave: the state saved with the resume data soon after the pause.
    folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            seeding.pause()
            await until(lambda: saved_paused(folder.parent, torrent) is True)
            seeding.resume()
            await until(lambda: saved_paused(folder.parent, torrent) is False)


async def test_a_magnet_paused_before_its_metadata_comes_back_paused(tmp_path: Path) -> None:
    _folder, torrent = content(tmp_path)
    down = tmp_path / "down"
    magnet = MagnetLink.from_info_hash(torrent.info.info_hash)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            waiting = await session.add_torrent(magnet, TorrentOptions(down))
            waiting.pause()
        assert saved_paused(down, torrent) is True
        async with open_session(loopback_config()) as session:
            again = await session.add_torrent(magnet, TorrentOptions(down))
            assert again.paused
            assert again.status().phase is TorrentPhase.PAUSED


async def test_a_state_file_that_is_not_ours_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder, torrent = content(tmp_path)
    path = state_path(folder.parent, torrent)
    path.parent.mkdir(parents=True)
    with trio.fail_after(DEADLINE):
        # (A record with one key not ours is read but for that key: test_saved_state.py.)
        for junk in (b"\xff not bencoding", b"li1ee", b"x" * 5000):
            path.write_bytes(junk)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="bip.client"):
                async with open_session(loopback_config()) as session:
                    seeding = await session.add_torrent(torrent, TorrentOptions(folder.parent))
                    assert not seeding.paused
                    await seeding.wait_complete()
            assert any(
                record.levelno == logging.WARNING and "not a torrent state" in record.message
                for record in caplog.records
            ), junk
            # Written again, in our format, once the torrent saved its resume data.
            assert saved_paused(folder.parent, torrent) is False


async def test_removing_a_paused_torrent_deletes_its_state(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            seeding.pause()
            await until(state_path(folder.parent, torrent).exists)
            await session.remove_torrent(seeding)
            assert not (folder.parent / ".bip").exists()
        async with open_session(loopback_config()) as session:
            again = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            assert not again.paused


async def test_without_resume_data_only_the_options_count(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(
                torrent, TorrentOptions(folder.parent, resume=False, paused=True)
            )
            assert seeding.paused
            await seeding.ready.wait()
        assert not (folder.parent / ".bip").exists()  # nothing recorded


def test_saved_paused_round_trip() -> None:
    for paused in (False, True):
        assert decode_saved_paused(encode_saved_paused(paused)) is paused
    assert decode_saved_paused(b"d5:laterli1ee6:pausedi1ee") is True  # other keys: ignored
    for bad in (b"", b"de", b"d6:paused1:1e", b"d6:pausedi2ee", b"d6:pausedi-1ee", b"i1e"):
        assert decode_saved_paused(bad) is None
    too_large = encode({b"padding": bytes(2000), b"paused": 1})
    assert decode_saved_paused(too_large) is None


@given(st.binary(max_size=64))
def test_saved_paused_reads_anything(data: bytes) -> None:
    assert decode_saved_paused(data) in (None, False, True)
