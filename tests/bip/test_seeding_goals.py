"""Seeding goals, as libtorrent's ``share_ratio_limit``, ``seed_time_ratio_limit`` and
``seed_time_limit``: an auto-managed seed that met any of them ranks after the seeds that met
none (libtorrent's ``seed_ratio_not_met`` bit of ``seed_rank``), and is queued in their favour
when ``active_seeds`` is short; a torrent's status says whether it met them.

The rule's cases are libtorrent 2.1's, as its ``torrent_status.seed_rank`` showed them for a
seed added with those ``active_time`` / ``finished_time`` / ``total_uploaded`` /
``total_downloaded`` (a 64 KiB torrent, default settings): the goal is met at the limit
exactly; a torrent that downloaded for a second or less has met the time ratio; the share
ratio divides by the torrent's size when less than that was downloaded. A seed added complete
whose first check took 14 s showed ``active_duration`` 16 s, ``finished_duration`` 2 s and
the goals not met: the check counts as download time, as bip's ``active_time`` counts it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import trio
from _engine_helpers import (
    address_of,
    loopback_config,
    make_torrent,
    until,
    write_content,
)

from bip._client import ClientConfig, Torrent, TorrentOptions, TorrentPhase, open_session
from bip._client._queue import QueuedTorrent, QueueError, QueueKind, QueueLimits, TorrentQueue
from bip._client._resume import ResumeStore, SavedState, decode_saved_state, encode_saved_state
from bip_bencode import decode, encode

DEADLINE = 20.0
SIZE = 65536  # the torrent libtorrent was asked about
DAY = 24 * 3600.0


def met(
    limits: QueueLimits | None = None,
    *,
    uploaded: int = 0,
    downloaded: int = 0,
    size: int = SIZE,
    active_time: float = 0.0,
    seeding_time: float = 0.0,
) -> bool:
    return (limits or QueueLimits()).seed_goals_met(
        uploaded=uploaded,
        downloaded=downloaded,
        size=size,
        active_time=active_time,
        seeding_time=seeding_time,
    )


def test_libtorrent_defaults() -> None:
    limits = QueueLimits()
    assert limits.share_ratio_limit == 2.0  # libtorrent's 200 (percent)
    assert limits.seed_time_ratio_limit == 7.0  # libtorrent's 700
    assert limits.seed_time_limit == DAY  # libtorrent's 24 h
    config = ClientConfig()
    assert config.share_ratio_limit == 2.0
    assert config.seed_time_ratio_limit == 7.0
    assert config.seed_time_limit == DAY
    changed = ClientConfig(share_ratio_limit=None, seed_time_ratio_limit=3, seed_time_limit=60)
    assert changed.queue_limits.share_ratio_limit is None
    assert changed.queue_limits.seed_time_ratio_limit == 3
    assert changed.queue_limits.seed_time_limit == 60


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        # Downloaded 10 s, seeded 20 s, nothing uploaded: no goal met.
        ({"active_time": 30.0, "seeding_time": 20.0}, False),
        # Never downloaded (added complete): the time ratio is met at once.
        ({}, True),
        ({"active_time": 21.0, "seeding_time": 20.0}, True),  # 1 s of download: not > 1
        ({"active_time": 12.0, "seeding_time": 10.0}, False),  # 2 s: 5x so far
        # The time ratio: seeded 7x the download time, exactly.
        ({"active_time": 80.0, "seeding_time": 70.0}, True),
        ({"active_time": 79.0, "seeding_time": 69.0}, False),
        # The seed time: 24 h, exactly.
        ({"active_time": 34 * 3600.0, "seeding_time": DAY}, True),
        ({"active_time": 34 * 3600.0 - 1, "seeding_time": DAY - 1}, False),
        # The share ratio over the size when less was downloaded.
        ({"active_time": 30.0, "seeding_time": 20.0, "uploaded": 2 * SIZE}, True),
        ({"active_time": 30.0, "seeding_time": 20.0, "uploaded": 2 * SIZE - 1}, False),
        # Over the bytes downloaded when more (end-game duplicates, failed pieces).
        (
            {
                "active_time": 30.0,
                "seeding_time": 20.0,
                "uploaded": 2 * SIZE,
                "downloaded": 2 * SIZE,
            },
            False,
        ),
        (
            {
                "active_time": 30.0,
                "seeding_time": 20.0,
                "uploaded": 4 * SIZE,
                "downloaded": 2 * SIZE,
            },
            True,
        ),
        # An empty torrent, nothing downloaded: no ratio to meet (libtorrent's downloaded > 0).
        ({"active_time": 30.0, "seeding_time": 20.0, "size": 0}, True),
    ],
)
def test_the_rule_is_libtorrents(facts: dict[str, float], expected: bool) -> None:
    assert met(**facts) is expected  # type: ignore[arg-type]


def test_each_goal_can_be_turned_off() -> None:
    downloading_long = {"active_time": 30.0, "seeding_time": 20.0}
    # A limit of 0 is met at once (libtorrent's); None is never met (off).
    assert met(QueueLimits(share_ratio_limit=0.0), **downloading_long)  # type: ignore[arg-type]
    assert met(QueueLimits(seed_time_limit=0.0), **downloading_long)  # type: ignore[arg-type]
    assert met(QueueLimits(seed_time_ratio_limit=0.0), **downloading_long)  # type: ignore[arg-type]
    off = QueueLimits(share_ratio_limit=None, seed_time_ratio_limit=None, seed_time_limit=None)
    # Off, every one: nothing is ever met, whatever was seeded or uploaded.
    assert not met(off)
    assert not met(off, uploaded=100 * SIZE, active_time=10 * DAY, seeding_time=9 * DAY)
    # One off: the others still count.
    no_time_ratio = QueueLimits(seed_time_ratio_limit=None)
    assert not met(no_time_ratio)  # never downloaded, but the time ratio is off
    assert met(no_time_ratio, uploaded=2 * SIZE)
    assert met(no_time_ratio, seeding_time=DAY, active_time=DAY)
    no_ratio = QueueLimits(share_ratio_limit=None)
    assert not met(no_ratio, uploaded=100 * SIZE, size=0, **downloading_long)  # type: ignore[arg-type]
    assert met(no_ratio)  # the time ratio, never downloaded
    no_seed_time = QueueLimits(seed_time_limit=None)
    assert not met(no_seed_time, active_time=20 * DAY, seeding_time=10 * DAY)
    assert met(QueueLimits(), active_time=20 * DAY, seeding_time=10 * DAY)


@pytest.mark.parametrize("name", ["share_ratio_limit", "seed_time_ratio_limit", "seed_time_limit"])
def test_bad_goals_are_refused(name: str) -> None:
    # Any: the values are wrong on purpose.
    def limits(value: Any) -> QueueLimits:
        return QueueLimits(**{name: value})

    def config(value: Any) -> ClientConfig:
        return ClientConfig(**{name: value})

    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(QueueError):
            limits(bad)
        with pytest.raises(ValueError, match=name):
            config(bad)
    for wrong in (True, "2", b"2"):
        with pytest.raises(TypeError):
            limits(wrong)
    assert getattr(limits(None), name) is None
    assert getattr(limits(3), name) == 3


def test_bad_facts_are_refused() -> None:
    facts: dict[str, Any]
    for facts in ({"active_time": -1.0}, {"active_time": math.inf}, {"size": -1}):
        with pytest.raises(QueueError):
            QueuedTorrent(key=0, kind=QueueKind.SEEDING, **facts)
    for facts in ({"size": 1.5}, {"size": True}, {"active_time": "1"}):
        with pytest.raises(TypeError):
            QueuedTorrent(key=0, kind=QueueKind.SEEDING, **facts)
    with pytest.raises(TypeError):
        met(uploaded=1.5)  # type: ignore[arg-type]
    with pytest.raises(QueueError):
        met(seeding_time=-1.0)


def seed(key: int, **facts: object) -> QueuedTorrent:
    return QueuedTorrent(key=key, kind=QueueKind.SEEDING, size=SIZE, **facts)  # type: ignore[arg-type]


def test_a_seed_that_met_a_goal_ranks_after_those_that_did_not() -> None:
    now = 100 * DAY
    owing = seed(0, swarm_seeds=50, active_time=30.0, seeding_time=20.0)  # downloaded 10 s
    # Recently started, alone in its swarm, but it met its share ratio: it gives way.
    done = seed(1, started=now - 1.0, uploaded=2 * SIZE, active_time=30.0, seeding_time=20.0)
    # Never downloaded: nothing owed either.
    added_complete = seed(2, started=now - 1.0)
    queue = TorrentQueue(QueueLimits(active_seeds=1))
    decision = queue.decide([done, owing, added_complete], now)
    assert decision.run == {0}
    assert decision.queue == {1, 2}
    # Among those that met a goal, the usual order (the recently started first, here).
    assert queue.decide([done, seed(3)], now).run == {1}
    # With every goal off, the order is the old one: the recently started seed stays.
    off = QueueLimits(
        active_seeds=1, share_ratio_limit=None, seed_time_ratio_limit=None, seed_time_limit=None
    )
    assert TorrentQueue(off).decide([done, owing], now).run == {1}
    # Room for all: none is queued for its goals (libtorrent queues a seed only for room).
    assert TorrentQueue(QueueLimits(active_seeds=3)).decide([done, owing], now).queue == set()


def goals_config(**changes: object) -> ClientConfig:
    settings: dict[str, object] = {
        "active_seeds": 1,
        "dont_count_slow_torrents": False,
        # The share ratio alone, reached by one copy served (the others off): the time goals
        # of a torrent added complete would be met at once.
        "share_ratio_limit": 1.0,
        "seed_time_ratio_limit": None,
        "seed_time_limit": None,
    }
    settings.update(changes)
    return loopback_config(**settings)


def phase(torrent: Torrent) -> TorrentPhase:
    return torrent.status().phase


async def test_a_seed_that_met_its_ratio_is_queued_for_one_that_did_not(tmp_path: Path) -> None:
    first = write_content(tmp_path / "a", [3 * 16384 + 100], seed=1)
    second = write_content(tmp_path / "b", [2 * 16384 + 7], seed=2)
    served, other = make_torrent(first, "v1", piece_length=16384), make_torrent(second, "v1")
    with trio.fail_after(DEADLINE):
        async with (
            open_session(goals_config()) as seeder,
            open_session(loopback_config()) as leecher,
        ):
            a = await seeder.add_torrent(served, TorrentOptions(first.parent, auto_managed=True))
            await until(lambda: phase(a) is TorrentPhase.SEEDING)
            status = a.status()
            assert not status.seed_goals_met  # nothing uploaded yet
            assert status.active_time >= status.seeding_time >= 0.0
            # One copy served: its share ratio (1.0) is met.
            copy = await leecher.add_torrent(
                served, TorrentOptions(tmp_path / "down", peers=(address_of(seeder),))
            )
            await copy.wait_complete()
            await until(lambda: a.status().seed_goals_met)
            assert a.status().uploaded >= served.info.total_size
            # A second seed, that owes its swarm: it takes the one seed slot, though the
            # first started less than SEED_STICKY ago.
            b = await seeder.add_torrent(other, TorrentOptions(second.parent, auto_managed=True))
            await until(
                lambda: phase(b) is TorrentPhase.SEEDING and phase(a) is TorrentPhase.QUEUED
            )
            assert a.status().seed_goals_met  # still met while queued
            assert not b.status().seed_goals_met
            # The goal off: both owe alike, and the order is the usual one again (b, the
            # more recently started, stays).
            seeder.set_queue_limits(share_ratio_limit=None)
            assert seeder.queue_limits.share_ratio_limit is None
            assert not a.status().seed_goals_met
            assert phase(b) is TorrentPhase.SEEDING
            seeder.set_queue_limits(share_ratio_limit=0.5, seed_time_limit=DAY)
            assert seeder.queue_limits.seed_time_limit == DAY
            with pytest.raises(ValueError, match="seed_time_ratio_limit"):
                seeder.set_queue_limits(seed_time_ratio_limit=-1.0)
            assert seeder.queue_limits.share_ratio_limit == 0.5  # nothing changed


async def test_seeding_and_active_time_are_counted_out_of_holds(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "a", [16384 + 1], seed=3)
    torrent = make_torrent(folder, "v1", piece_length=16384)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            t = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await until(lambda: phase(t) is TorrentPhase.SEEDING)
            # The session's ticker counts; a tick of ours, 5 s on, shows by how much (no
            # checkpoint in between: the ticker does not run meanwhile).
            before = t.status()
            t.tick(trio.current_time() + 5.0)
            after = t.status()
            assert after.seeding_time - before.seeding_time >= 5.0
            assert after.active_time - before.active_time >= 5.0
            assert after.active_time >= after.seeding_time
            # Never downloaded: the time ratio is met (libtorrent's defaults).
            assert after.seed_goals_met
            # Paused: nothing counts.
            t.pause()
            t.tick(trio.current_time() + 100.0)
            paused = t.status()
            assert paused.phase is TorrentPhase.PAUSED
            assert paused.seeding_time == after.seeding_time
            assert paused.active_time == after.active_time
            assert paused.seed_goals_met  # a complete torrent's goals, paused or not


async def test_a_removed_seed_has_met_no_goal(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "a", [16384 + 1], seed=4)
    torrent = make_torrent(folder, "v1", piece_length=16384)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            t = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await until(lambda: phase(t) is TorrentPhase.SEEDING)
            assert t.status().seed_goals_met  # never downloaded: the time ratio
            await session.remove_torrent(t, delete_data=True)
            # Before: still met, of a torrent whose files are gone. The goals are a
            # complete torrent's, and a removed one is never complete.
            status = t.status()
            assert status.phase is TorrentPhase.REMOVED
            assert not status.complete
            assert not status.seed_goals_met


# -- the counters over all the runs (libtorrent's resume data keeps them) ----------------------


def test_the_state_file_keeps_the_counters() -> None:
    state = SavedState(
        paused=True,
        total_uploaded=3 * SIZE,
        total_downloaded=SIZE,
        active_time=100,
        finished_time=90,
        seeding_time=80,
    )
    data = encode_saved_state(state)
    read = decode_saved_state(data)
    assert read is not None
    assert read == SavedState(paused=True)  # the flags; the counters are not compared
    assert read.counters() == (3 * SIZE, SIZE, 100, 90, 80)
    assert read.ignored == frozenset()
    # libtorrent's keys, as its resume data names them; a counter at 0 is left out.
    document = decode(data)
    assert isinstance(document, dict)
    assert document[b"total_uploaded"] == 3 * SIZE
    assert document[b"finished_time"] == 90
    assert b"total_downloaded" not in decode(encode_saved_state(SavedState()))  # type: ignore[operator]
    # A counter not ours (not an int, negative, past int64) is ignored alone.
    for bad in (b"x", -1, 2**63):
        record = decode_saved_state(encode({b"active_time": bad, b"seeding_time": 5}))
        assert record is not None
        assert record.ignored == frozenset({"active_time"})
        assert record.counters() == (0, 0, 0, 0, 5)


async def test_the_counters_go_on_from_the_earlier_runs(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "a", [3 * 16384 + 5], seed=5)
    torrent = make_torrent(folder, "v1", piece_length=16384)
    size = torrent.info.total_size
    down = tmp_path / "down"
    store = ResumeStore(down, torrent.info.info_hash)
    with trio.fail_after(DEADLINE):
        async with (
            open_session(loopback_config()) as seeder,
            open_session(loopback_config()) as leecher,
        ):
            await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
            copy = await leecher.add_torrent(
                torrent, TorrentOptions(down, peers=(address_of(seeder),))
            )
            await copy.wait_complete()
            # Ten seconds more of seeding (a tick of ours: no checkpoint before the close).
            copy.tick(trio.current_time() + 10.0)
            first = copy.status()
        assert first.downloaded >= size
        assert first.seeding_time >= 10.0
        saved = await store.load_state()
        assert saved is not None
        assert saved.total_downloaded == first.downloaded
        assert saved.finished_time == int(first.seeding_time)
        assert saved.seeding_time == int(first.seeding_time)  # every piece: a seed
        assert saved.active_time == int(first.active_time)
        async with open_session(loopback_config()) as session:
            again = await session.add_torrent(torrent, TorrentOptions(down))
            await until(lambda: phase(again) is TorrentPhase.SEEDING)
            status = again.status()
            # Before: 0 and 0, every session: the goals started over.
            assert status.seeding_time >= int(first.seeding_time)
            assert status.active_time >= int(first.active_time)
            assert status.all_time_downloaded == first.downloaded
            assert status.all_time_uploaded == 0
            # This session's transfer, as the trackers hear it (libtorrent's announces).
            assert status.downloaded == 0
            assert again.transfer()[:2] == (0, 0)


# -- mends of the final read F2 ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "share_ratio_limit",
        "seed_time_ratio_limit",
        "seed_time_limit",
        "inactive_down_rate",
        "inactive_up_rate",
        "auto_manage_startup",
    ],
)
async def test_an_int_too_large_for_a_float_is_refused_clearly(name: str) -> None:
    """Before: ``math.isfinite`` raised a bare OverflowError (an int past a float's range)."""

    def setting(value: int) -> dict[str, Any]:  # Any: each is a setting of its own type
        return {name: value}

    for huge in (10**400, 10**5000):  # the second has no repr (past 4300 digits)
        with pytest.raises(QueueError, match=name):
            QueueLimits(**setting(huge))
        with pytest.raises(ValueError, match=name):
            ClientConfig(**setting(huge))
    assert getattr(QueueLimits(**setting(10**300)), name) == 10**300  # a float holds it
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            before = session.queue_limits
            with pytest.raises(QueueError, match=name):
                session.set_queue_limits(**setting(10**400))
            assert session.queue_limits == before  # nothing changed


def state_counters(folder: Path) -> list[tuple[int, int, int, int, int]]:
    """The counters of each state file under ``folder``'s ``.bip``."""
    found = []
    for path in (folder / ".bip").glob("*.state"):
        state = decode_saved_state(path.read_bytes())
        if state is not None:
            found.append(state.counters())
    return found


async def test_a_seed_writes_its_counters_while_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Libtorrent's ``if_counters_changed``: the counters (uploads, times) are written once
    per ``resume_interval`` when they changed, not only at the close, so a crash loses at
    most an interval of them; and nothing is written when they did not change."""
    folder = write_content(tmp_path / "seed", [6 * 16384 + 11], seed=6)
    writes: list[SavedState] = []  # the seed's (the leecher's are its own)
    save_state = ResumeStore.save_state

    async def counted(store: ResumeStore, state: SavedState) -> None:
        if store.state_path.is_relative_to(folder.parent):
            writes.append(state)
        await save_state(store, state)

    monkeypatch.setattr(ResumeStore, "save_state", counted)
    torrent = make_torrent(folder, "v1", piece_length=16384)
    size = torrent.info.total_size
    with trio.fail_after(DEADLINE):
        async with (
            open_session(loopback_config(resume_interval=0.2)) as seeder,
            open_session(loopback_config()) as leecher,
        ):
            seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            copy = await leecher.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", peers=(address_of(seeder),))
            )
            await copy.wait_complete()
            # Before: the seed's state file never had its uploads before the close.
            await until(lambda: any(c[0] >= size for c in state_counters(folder.parent)))
            # Its time counters too, as they grow (whole seconds).
            await until(lambda: any(c[4] >= 1 for c in state_counters(folder.parent)))
            # Paused, its counters stop: written once for the pause, then no more.
            seeding.pause()
            await until(lambda: any(w.paused for w in writes))
            settled = len(writes)
            await trio.sleep(1.0)  # five intervals: none finds a counter changed
            assert len(writes) == settled


@pytest.mark.parametrize("name", ["resume_interval", "dht_interval", "auto_manage_interval"])
async def test_a_time_too_large_for_a_float_is_refused_with_a_value_error(name: str) -> None:
    """The client's positive times refuse an int past a float's range with ValueError (a bare
    OverflowError before), in ClientConfig and in Session.set_queue_limits."""

    def setting(value: int) -> dict[str, Any]:  # Any: each is a setting of its own type
        return {name: value}

    for huge in (10**400, 10**5000):
        with pytest.raises(ValueError, match=name):
            ClientConfig(**setting(huge))
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            before = session.queue_limits
            with pytest.raises(ValueError, match="auto_manage_interval"):
                session.set_queue_limits(auto_manage_interval=10**400)
            assert session.queue_limits == before
