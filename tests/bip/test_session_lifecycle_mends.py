"""A session's and a torrent's life at its edges: a removal with the data of a torrent not on
the disk yet (its files deleted all the same), a session used after it closed, waits during a
check, the queue's line while a removal is under way, controls of a removed torrent, and a
paused torrent's check (at once when not auto-managed, as documented; libtorrent's
``should_check_files`` would defer it)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from _engine_helpers import loopback_config, make_torrent, spoil_pieces, until, write_content

from bip._client import (
    MoveFlags,
    Torrent,
    TorrentError,
    TorrentOptions,
    TorrentPhase,
    open_session,
)
from bip_disk import MemoryFileSystem
from bip_handshake import IPFilter

DEADLINE = 10.0


def waits_for_its_check(torrent: Torrent) -> bool:
    """The torrent found data to hash, and waits for its turn (not on the disk yet)."""
    return not torrent._unqueued_check and torrent.handle is None


async def test_removal_with_the_data_of_a_torrent_not_on_the_disk_deletes_it(
    tmp_path: Path,
) -> None:
    sizes = (40_000, 20_000)
    queued_data = write_content(tmp_path / "a", sizes, seed=1)
    paused_data = write_content(tmp_path / "b", sizes, seed=2)
    queued_meta = make_torrent(queued_data, "v1")
    paused_meta = make_torrent(paused_data, "v1")
    fresh_meta = make_torrent(write_content(tmp_path / "c", sizes, seed=3), "v1")
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            queued = await session.add_torrent(
                queued_meta,
                TorrentOptions(queued_data.parent, paused=True, auto_managed=True, resume=False),
            )
            paused = await session.add_torrent(
                paused_meta, TorrentOptions(paused_data.parent, paused=True, resume=False)
            )
            # Paused and auto-managed: its check waits for its resume (libtorrent's). Paused
            # alone: it checks at once, as add_torrent says (its pause holds it out of its
            # swarm only), unlike libtorrent's.
            await until(lambda: waits_for_its_check(queued))
            await paused.wait_complete()
            assert paused.status().phase is TorrentPhase.PAUSED
            assert paused.status().pieces == paused_meta.info.num_pieces
            assert queued.handle is None

            # Not on the disk: its files are deleted all the same, as libtorrent deletes them
            # in every state (bip_disk's delete_files; before: left, and an error said so),
            # and the folders they leave empty; nothing else of the save directory.
            await session.remove_torrent(queued, delete_data=True)
            assert queued not in session.torrents
            assert not queued_data.exists()
            assert queued_data.parent.is_dir()
            assert sorted(p.name for p in paused_data.rglob("*.bin")) == ["f0.bin", "f1.bin"]
            # Nothing there (removed before its storage opened): nothing to say.
            fresh = await session.add_torrent(fresh_meta, TorrentOptions(tmp_path / "empty"))
            await session.remove_torrent(fresh, delete_data=True)
            assert fresh not in session.torrents


async def test_a_closed_session_refuses_every_change(tmp_path: Path) -> None:
    data = write_content(tmp_path / "seed", (30_000,))
    meta = make_torrent(data, "v1")
    other = make_torrent(write_content(tmp_path / "other", (30_000,), seed=5), "v1")
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            torrent = await session.add_torrent(meta, TorrentOptions(data.parent))
            await torrent.wait_complete()
        # Before: add_torrent half-registered the torrent, then raised RuntimeError; the
        # removal returned as if it had deleted the data.
        with pytest.raises(TorrentError, match="the session is closed"):
            await session.add_torrent(other, TorrentOptions(tmp_path / "other"))
        assert session.torrents == (torrent,)
        assert session.find(other.info.info_hash) is None
        with pytest.raises(TorrentError, match="the session is closed"):
            await session.remove_torrent(torrent, delete_data=True)
        assert session.torrents == (torrent,)
        assert (data / "f0.bin").exists()
        for change in (
            lambda: session.queue_position_top(torrent),
            lambda: session.set_queue_position(torrent, 0),
            lambda: session.set_queue_limits(active_downloads=1),
            lambda: session.set_rate_limits(upload=1000),
            lambda: session.set_ip_filter(IPFilter()),
            lambda: session.add_source(lambda: pytest.fail("not run")),
        ):
            with pytest.raises(TorrentError, match="the session is closed"):
                change()


async def test_a_check_forgets_completion_until_it_ends(tmp_path: Path) -> None:
    data = write_content(tmp_path / "seed", (100_000,))
    meta = make_torrent(data, "v1")
    elsewhere = tmp_path / "elsewhere"
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            torrent = await session.add_torrent(meta, TorrentOptions(data.parent, resume=False))
            await torrent.wait_complete()
            torrent.force_recheck()
            # As libtorrent's force_recheck forgets have_all: a wait started now waits for
            # the check's result (before: both events stayed set, and it returned at once).
            assert not torrent.completed.is_set()
            assert not torrent.seeded.is_set()
            await torrent.wait_complete()  # the data is whole: set again by the check
            assert torrent.seeded.is_set()

            # A move that keeps a file found at the destination checks its pieces: the same.
            shutil.copytree(data, elsewhere / data.name)
            spoil_pieces(meta.info, elsewhere, [1])
            seen: list[bool] = []
            finish = torrent._finish_check

            async def watched(handle: object) -> None:
                seen.append(torrent.completed.is_set() or torrent.seeded.is_set())
                await finish(handle)  # type: ignore[arg-type]

            torrent._finish_check = watched  # type: ignore[method-assign]
            await torrent.move_storage(elsewhere, flags=MoveFlags.DONT_REPLACE)
            await until(lambda: torrent.status().phase is not TorrentPhase.CHECKING)
            assert seen == [False]
            assert not torrent.completed.is_set()  # the kept copy lacks a piece
            assert torrent.status().pieces == meta.info.num_pieces - 1


async def test_a_removal_under_way_has_left_the_line(tmp_path: Path) -> None:
    metas = [
        make_torrent(write_content(tmp_path / f"s{i}", (40_000,), seed=i), "v1") for i in range(3)
    ]
    options = TorrentOptions(tmp_path / "d", storage=lambda _: MemoryFileSystem(), resume=False)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            first, second, third = [await session.add_torrent(m, options) for m in metas]
            everyone = (first, second, third)
            await until(lambda: all(t.status().phase is TorrentPhase.DOWNLOADING for t in everyone))
            assert [t.queue_position for t in (first, second, third)] == [0, 1, 2]
            removed: list[bool] = []

            async def remove() -> None:
                await session.remove_torrent(first)
                removed.append(True)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(remove)
                while first in session.torrents:  # its first step (no wait: one checkpoint)
                    await trio.sleep(0)
                assert not removed  # under way (the disk removes it on a thread)
                # Out of line at once: the others close up (before: a move now renumbered a
                # line that still held it).
                assert (first.queue_position, second.queue_position) == (-1, 0)
                session.queue_position_top(third)
                assert [t.status().queue_position for t in (second, third)] == [1, 0]
            assert [session.queue_position(t) for t in (second, third)] == [1, 0]
            assert [t.status().queue_position for t in (second, third)] == [1, 0]

            # A removed torrent's controls refuse, as pause and set_files do (before: these
            # returned as if done).
            controls: list[Callable[[], None]] = [
                lambda: first.set_piece_deadline(0, 1.0),
                lambda: first.clear_piece_deadline(0),
                first.clear_piece_deadlines,
                lambda: first.set_sequential(True),
                lambda: first.set_super_seeding(True),
            ]
            for control in controls:
                with pytest.raises(TorrentError, match="removed"):
                    control()
            assert not first.sequential
            assert not first.super_seeding
