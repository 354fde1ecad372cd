"""The checks of auto-managed torrents in a bip session's queue: a check that ends hands its
``active_checking`` slot on at once (not at the queue's next decision, up to a second away),
and a full check made because the disk refused the resume data waits for a slot as any other
(libtorrent's checking_files), while vouching for resume data does not."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import trio
from _check_counter import Checks
from _engine_helpers import loopback_config, make_torrent, until, write_content

from bip._client import (
    ClientConfig,
    Torrent,
    TorrentOptions,
    TorrentPhase,
    _session,
    open_session,
)
from bip._client._resume import ResumeStore
from bip_metainfo import Metainfo

DEADLINE = 20.0


def queue_config(**changes: object) -> ClientConfig:
    settings: dict[str, object] = {"dont_count_slow_torrents": False}
    settings.update(changes)
    return loopback_config(**settings)


def tiny(tmp_path: Path, count: int) -> list[tuple[Path, Metainfo]]:
    """``count`` one-piece torrents of different data, each in its own directory."""
    made = []
    for index in range(count):
        folder = write_content(tmp_path / f"t{index}", [100], seed=index)
        made.append((folder, make_torrent(folder, "v1")))
    return made


def checked(torrents: list[Torrent]) -> bool:
    return all(torrent.ready.is_set() for torrent in torrents)


async def test_a_check_that_ends_starts_the_next_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A second between two decisions whatever the number of torrents: before, 50 tiny
    # checks one at a time took 50 of them.
    monkeypatch.setattr(_session, "QUEUE_GAP_PER_TORRENT", _session.QUEUE_MIN_GAP)
    gap = _session.QUEUE_MIN_GAP
    checks = Checks(monkeypatch)
    made = tiny(tmp_path, 50)
    with trio.fail_after(DEADLINE):
        async with open_session(queue_config(active_checking=1, active_seeds=-1)) as session:
            start = trio.current_time()
            t = [
                await session.add_torrent(torrent, TorrentOptions(folder.parent, auto_managed=True))
                for folder, torrent in made
            ]
            await until(lambda: checked(t))
            elapsed = trio.current_time() - start
            assert checks.started == 50
            assert checks.most == 1  # still one at a time
            await until(lambda: all(x.status().phase is TorrentPhase.SEEDING for x in t))
    assert elapsed < 50 * gap / 5


async def test_a_full_check_after_refused_resume_data_waits_for_a_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    (folder, torrent), (folder2, torrent2) = tiny(tmp_path, 2)
    # Resume data the disk refuses (not bencoding): everything is to be hashed.
    store = ResumeStore(folder.parent, torrent.info.info_hash)
    store.resume_path.parent.mkdir(parents=True, exist_ok=True)
    store.resume_path.write_bytes(b"not resume data")
    with trio.fail_after(DEADLINE):
        async with open_session(queue_config()) as session:
            plain = await session.add_torrent(torrent2, TorrentOptions(folder2.parent))
            await plain.wait_complete()
    assert ResumeStore(folder2.parent, torrent2.info.info_hash).resume_path.exists()
    checks = Checks(monkeypatch)
    with trio.fail_after(DEADLINE):
        async with open_session(queue_config(active_checking=0)) as session:
            # Vouching for good resume data is no check of the queue's: done at once.
            vouched = await session.add_torrent(
                torrent2, TorrentOptions(folder2.parent, auto_managed=True)
            )
            await until(lambda: checked([vouched]))
            checks.started = 0
            refused = await session.add_torrent(
                torrent, TorrentOptions(folder.parent, auto_managed=True)
            )
            await until(lambda: "ignoring the resume data" in caplog.text)
            await trio.sleep(0.2)
            # No slot (active_checking=0): the full check waits, held.
            assert checks.started == 0
            assert not refused.ready.is_set()
            assert refused.queued
            assert refused.status().phase is TorrentPhase.QUEUED
            session.set_queue_limits(active_checking=1)
            await until(lambda: checked([refused]))
            assert checks.started == 1
            await until(lambda: refused.status().phase is TorrentPhase.SEEDING)


async def made_resume_data(tmp_path: Path, count: int) -> list[tuple[Path, Metainfo]]:
    """``count`` tiny torrents whose data is there, each with the resume data of a run."""
    made = tiny(tmp_path, count)
    with trio.fail_after(DEADLINE):
        async with open_session(queue_config()) as session:
            for folder, torrent in made:
                plain = await session.add_torrent(torrent, TorrentOptions(folder.parent))
                await plain.wait_complete()
    for folder, torrent in made:
        assert ResumeStore(folder.parent, torrent.info.info_hash).resume_path.exists()
    return made


async def test_resume_data_of_changed_files_checks_in_the_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reviewer's case: after an unclean stop the files of a download are newer than its
    # resume data, and the disk hashes them all. Before, that check ran at once, whatever
    # active_checking (out of the queue's view); now it waits for a slot, as libtorrent's
    # checking_resume_data falling back to checking_files.
    (folder, torrent), (folder2, torrent2) = await made_resume_data(tmp_path, 2)
    changed = folder / "f0.bin"
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**10))
    checks = Checks(monkeypatch)
    with trio.fail_after(DEADLINE):
        async with open_session(queue_config(active_checking=0)) as session:
            # Files as the resume data says: nothing to hash, no slot needed.
            vouched = await session.add_torrent(
                torrent2, TorrentOptions(folder2.parent, auto_managed=True)
            )
            # A download with no file yet: nothing to hash either (libtorrent's
            # has_any_file); before, it waited for a slot too.
            fresh = await session.add_torrent(
                torrent, TorrentOptions(tmp_path / "fresh", auto_managed=True)
            )
            await until(lambda: checked([vouched, fresh]))
            await until(lambda: fresh.status().phase is TorrentPhase.DOWNLOADING)
            await session.remove_torrent(fresh)
            checks.started = 0
            stale = await session.add_torrent(
                torrent, TorrentOptions(folder.parent, auto_managed=True)
            )
            await trio.sleep(0.2)
            assert checks.started == 0  # no slot: the check that hashes waits, held
            assert not stale.ready.is_set()
            assert stale.status().phase is TorrentPhase.QUEUED
            session.set_queue_limits(active_checking=1)
            await until(lambda: checked([stale]))
            assert checks.started == 1
            await until(lambda: stale.status().phase is TorrentPhase.SEEDING)


async def test_a_check_paused_while_it_hashes_keeps_its_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # bip_disk cannot stop a check: paused half-way, it hashes on. Before, the queue no
    # longer counted it (a paused torrent is not the queue's) and let the next check in:
    # two hashing at once with active_checking=1.
    gate = trio.Event()
    checks = Checks(monkeypatch, gate)
    made = tiny(tmp_path, 2)
    with trio.fail_after(DEADLINE):
        async with open_session(queue_config(active_checking=1, active_seeds=-1)) as session:
            first, second = [
                await session.add_torrent(torrent, TorrentOptions(folder.parent, auto_managed=True))
                for folder, torrent in made
            ]
            await until(lambda: checks.started == 1)
            hashing = first if first._disk_checking else second
            hashing.pause()
            await trio.sleep(0.2)  # many decisions, and a check ending would start the next
            assert checks.started == 1
            assert checks.most == 1
            gate.set()  # its check ends: the next starts at once
            await until(lambda: checks.started == 2)
            other = second if hashing is first else first
            await until(lambda: checked([other]))
            assert checks.most == 1
            assert hashing.status().phase is TorrentPhase.PAUSED
