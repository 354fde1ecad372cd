"""The queueing policy of the bip client (``bip._client._queue``), libtorrent's auto-managed
torrents without I/O: limits per kind and all together, queue positions, seed ranks, the
slow-torrent exemption with its grace, and what the queue never touches; Hypothesis checks
the limits and the order over arbitrary sessions."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip._client import ClientConfig
from bip._client._queue import (
    MIN_SAMPLE,
    SEED_STICKY,
    QueueDecision,
    QueuedTorrent,
    QueueError,
    QueueKind,
    QueueLimits,
    TorrentQueue,
)

DOWN = QueueKind.DOWNLOADING
SEED = QueueKind.SEEDING
CHECK = QueueKind.CHECKING


def downloads(count: int, *, running: int = 0) -> list[QueuedTorrent]:
    """``count`` auto-managed downloads at positions 0.., the first ``running`` running."""
    return [
        QueuedTorrent(key=i, kind=DOWN, position=i, started=0.0 if i < running else None)
        for i in range(count)
    ]


def decide(torrents: list[QueuedTorrent], now: float = 0.0, **limits: object) -> QueueDecision:
    return TorrentQueue(QueueLimits(**limits)).decide(torrents, now)  # type: ignore[arg-type]


def test_downloads_run_by_queue_position() -> None:
    torrents = downloads(5)
    random.Random(3).shuffle(torrents)  # the order given does not matter
    decision = decide(torrents, active_downloads=2)
    assert decision.run == {0, 1}
    assert decision.queue == {2, 3, 4}
    assert decision.inactive == frozenset()
    # A running one further down the line gives way to one above it.
    moved = [replace(t, position=(t.key + 3) % 5) for t in downloads(5, running=2)]
    assert decide(moved, active_downloads=2).run == {2, 3}


def test_minus_one_is_unlimited_and_zero_runs_none() -> None:
    assert decide(downloads(7), active_downloads=-1).run == set(range(7))
    assert decide(downloads(3), active_downloads=0).queue == {0, 1, 2}
    assert decide(downloads(7), active_downloads=-1, active_limit=4).run == {0, 1, 2, 3}


def test_every_kind_but_checks_counts_against_active_limit() -> None:
    torrents = [
        QueuedTorrent(key=0, kind=SEED, started=0.0),
        QueuedTorrent(key=1, kind=DOWN, position=1),
        QueuedTorrent(key=2, kind=CHECK, position=0),
        QueuedTorrent(key=3, kind=DOWN, position=2),
        QueuedTorrent(key=4, kind=DOWN, position=3),
    ]
    decision = decide(torrents, active_limit=2)
    # libtorrent's order: checks (against active_checking only), downloads, then seeds.
    assert decision.run == {2, 1, 3}
    assert decision.queue == {4, 0}


def test_checks_not_auto_managed_count_against_active_checking_first() -> None:
    checks = [QueuedTorrent(key=k, kind=CHECK, position=k) for k in range(3)]
    forced = QueuedTorrent(key=9, kind=CHECK, auto_managed=False, check_running=True)
    assert decide([*checks, forced], active_checking=2).run == {0}
    queue = TorrentQueue(QueueLimits(active_checking=2))
    assert queue.decide(checks, 0.0, forced_checking=1).run == {0}
    assert queue.decide(checks, 0.0, forced_checking=5).run == frozenset()
    # Running torrents not auto-managed, given as a count: as their facts would.
    downs = downloads(3)
    assert (
        queue.decide(downs, 0.0, forced=2).run
        == decide(downs + [QueuedTorrent(key=k, kind=DOWN, auto_managed=False) for k in (7, 8)]).run
    )
    assert TorrentQueue(QueueLimits(active_limit=2)).decide(downs, 0.0, forced=1).run == {0}
    with pytest.raises(QueueError):
        queue.decide(checks, 0.0, forced=-1)
    with pytest.raises(TypeError):
        queue.decide(checks, 0.0, forced_checking=True)


def test_a_check_keeps_the_slot_it_ran_in() -> None:
    # A running download rechecks: the next in line does not start for the length of it.
    rechecking = QueuedTorrent(key=0, kind=CHECK, position=0, check_running=True, keeps=DOWN)
    waiting = QueuedTorrent(key=1, kind=DOWN, position=1)
    decision = decide([rechecking, waiting], active_downloads=1)
    assert decision.run == {0}
    assert decision.queue == {1}
    assert decide([rechecking, waiting], active_downloads=2).run == {0, 1}
    # A seed's slot likewise; and a kept slot counts against active_limit.
    seed = QueuedTorrent(key=2, kind=SEED, started=0.0)
    kept_seed = replace(rechecking, keeps=SEED)
    assert decide([kept_seed, seed], active_seeds=1).queue == {2}
    assert decide([rechecking, seed], active_limit=1).queue == {2}
    # Only a check keeps a slot, and only a download's or a seed's.
    with pytest.raises(QueueError):
        QueuedTorrent(key=3, kind=DOWN, keeps=DOWN)
    with pytest.raises(QueueError):
        QueuedTorrent(key=3, kind=CHECK, keeps=CHECK)


def test_a_check_waiting_for_its_turn_keeps_no_slot() -> None:
    # The reviewer's case: a running download rechecks while a long check of another runs
    # (active_checking=1). Before, its download slot sat idle for the whole wait; now the
    # next download runs meanwhile, as in libtorrent (which frees the slot at once).
    other_check = QueuedTorrent(key=0, kind=CHECK, position=0, check_running=True, started=0.0)
    rechecking = QueuedTorrent(key=1, kind=CHECK, position=1, keeps=DOWN)
    waiting = QueuedTorrent(key=2, kind=DOWN, position=2)
    decision = decide([other_check, rechecking, waiting], active_checking=1, active_downloads=1)
    assert decision.run == {0, 2}
    assert decision.queue == {1}
    # Let in (a slot free) or under way: it keeps its slot from then on.
    decision = decide([rechecking, waiting], active_checking=1, active_downloads=1)
    assert decision.run == {1}
    assert decision.queue == {2}
    running = replace(rechecking, check_running=True, started=0.0)
    assert decide([running, waiting], active_checking=1, active_downloads=1).queue == {2}


def test_running_torrents_not_auto_managed_take_their_share_of_active_limit() -> None:
    forced = [
        QueuedTorrent(key=10, kind=DOWN, auto_managed=False, started=0.0),
        QueuedTorrent(key=11, kind=SEED, auto_managed=False, started=0.0),
        # Paused or failed: not running, not counted.
        QueuedTorrent(key=12, kind=DOWN, auto_managed=False, paused=True),
        QueuedTorrent(key=13, kind=QueueKind.FAILED, auto_managed=False),
    ]
    decision = decide(downloads(4) + forced, active_limit=3)
    assert decision.run == {0}
    assert decision.queue == {1, 2, 3}
    # Never queued nor started: not the queue's.
    everything = decision.run | decision.queue
    assert not everything & {10, 11, 12, 13}
    assert decide(downloads(2) + forced * 1, active_limit=1).run == frozenset()


def test_paused_failed_and_unmanaged_torrents_are_left_alone() -> None:
    torrents = [
        QueuedTorrent(key=0, kind=DOWN, position=0, paused=True),
        QueuedTorrent(key=1, kind=DOWN, position=1, paused=True, started=None),
        QueuedTorrent(key=2, kind=QueueKind.FAILED, position=2),
        QueuedTorrent(key=3, kind=DOWN, auto_managed=False, started=0.0),
        QueuedTorrent(key=4, kind=DOWN, position=3),
    ]
    decision = decide(torrents, active_downloads=1)
    assert decision.run == {4}  # the paused ones above it do not count
    assert decision.queue == frozenset()


def test_checks_under_way_keep_their_slot() -> None:
    torrents = [
        QueuedTorrent(key=0, kind=CHECK, position=0),
        QueuedTorrent(key=1, kind=CHECK, position=1, check_running=True, started=0.0),
        QueuedTorrent(key=2, kind=CHECK, position=2),
    ]
    assert decide(torrents, active_checking=1).run == {1}
    assert decide(torrents, active_checking=2).run == {0, 1}
    waiting = [replace(t, check_running=False, started=None) for t in torrents]
    assert decide(waiting, active_checking=1).run == {0}


def test_checks_to_start_fill_the_slots_left_in_line_order() -> None:
    queue = TorrentQueue(QueueLimits(active_checking=2))
    waiting = [(3, 30), (-1, 5), (0, 10), (1, 11), (-1, 4)]
    assert queue.checks_to_start(0, waiting) == [10, 11]
    assert queue.checks_to_start(1, waiting) == [10]
    assert queue.checks_to_start(2, waiting) == []
    assert queue.checks_to_start(5, waiting) == []  # limits lowered: none, none queued
    assert queue.checks_to_start(0, []) == []
    # Unlimited: all, in line; those without a position last, by key.
    queue.set_limits(QueueLimits(active_checking=-1))
    assert queue.checks_to_start(9, iter(waiting)) == [10, 11, 30, 4, 5]
    queue.set_limits(QueueLimits(active_checking=0))
    assert queue.checks_to_start(0, waiting) == []


@given(
    st.integers(min_value=-1, max_value=4),
    st.integers(min_value=0, max_value=4),
    st.lists(st.integers(min_value=-1, max_value=6), max_size=8),
)
@settings(max_examples=50, deadline=None)
def test_checks_to_start_start_what_decide_would_run(
    active_checking: int, running: int, positions: list[int]
) -> None:
    """The checks started between two decisions are those the next decision runs, with
    the checks under way."""
    limits = QueueLimits(active_checking=active_checking)
    under_way = [
        QueuedTorrent(key=100 + i, kind=CHECK, position=i, check_running=True, started=0.0)
        for i in range(running)
    ]
    held = [QueuedTorrent(key=i, kind=CHECK, position=p) for i, p in enumerate(positions)]
    started = TorrentQueue(limits).checks_to_start(running, [(t.position, t.key) for t in held])
    decision = TorrentQueue(limits).decide(under_way + held, 0.0)
    assert set(started) == decision.run & {t.key for t in held}
    assert len(started) == len(set(started))


def test_checks_to_start_refuses_bad_input() -> None:
    queue = TorrentQueue()
    with pytest.raises(QueueError):
        queue.checks_to_start(-1, [])
    with pytest.raises(TypeError):
        queue.checks_to_start(True, [])
    with pytest.raises(QueueError):
        queue.checks_to_start(0, [(-2, 1)])
    with pytest.raises(QueueError):
        queue.checks_to_start(0, [(2**31, 1)])
    with pytest.raises(TypeError):
        queue.checks_to_start(0, [(0, "a")])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        queue.checks_to_start(0, [(0, 1, 2)])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        queue.checks_to_start(0, [(0.5, 1)])  # type: ignore[list-item]


def seed(key: int, **facts: object) -> QueuedTorrent:
    return QueuedTorrent(key=key, kind=SEED, **facts)  # type: ignore[arg-type]


def test_seeds_rank_recently_started_then_fewer_seeds_then_time_then_ratio() -> None:
    now = 10 * SEED_STICKY
    fewer = seed(0, swarm_seeds=1, seeding_time=500.0, ratio=3.0)
    more = seed(1, swarm_seeds=9)
    assert decide([more, fewer], now, active_seeds=1).run == {0}
    younger = seed(2, swarm_seeds=1, seeding_time=10.0, ratio=3.0)
    assert decide([fewer, younger], now, active_seeds=1).run == {2}
    lower = seed(3, swarm_seeds=1, seeding_time=500.0, ratio=0.5)
    assert decide([fewer, lower], now, active_seeds=1).run == {3}
    assert decide([seed(5), seed(4)], now, active_seeds=1).run == {4}  # ties: the key
    # Started less than SEED_STICKY ago: it stays, however it ranks otherwise (no flapping).
    sticky = seed(6, swarm_seeds=50, started=now - SEED_STICKY / 2)
    assert decide([fewer, sticky], now, active_seeds=1).run == {6}
    old = replace(sticky, started=now - SEED_STICKY)
    assert decide([fewer, old], now, active_seeds=1).run == {0}


def test_a_slow_download_lets_another_start_after_the_grace() -> None:
    queue = TorrentQueue(QueueLimits(active_downloads=1, auto_manage_startup=60.0))
    first, second = downloads(2, running=1)
    assert queue.decide([first, second], 0.0).run == {0}
    # Slow (below 2048 B/s) but within its grace: it still counts.
    first = replace(first, downloaded=1000)
    assert queue.decide([first, second], 30.0).run == {0}
    # Slow for the whole 60 s: inactive, and the next one starts.
    first = replace(first, downloaded=2000)
    decision = queue.decide([first, second], 60.0)
    assert decision.run == {0, 1}
    assert decision.inactive == {0}
    assert queue.inactive(first, 60.0)
    # It picks up: it counts again, and takes its slot back (position 0 first).
    second = replace(second, started=60.0)
    first = replace(first, downloaded=2000 + 90 * 4096)
    decision = queue.decide([first, second], 150.0)
    assert decision.run == {0}
    assert decision.queue == {1}
    assert decision.inactive == frozenset()


def test_inactive_torrents_still_count_against_active_limit() -> None:
    queue = TorrentQueue(QueueLimits(active_downloads=1, active_limit=2, auto_manage_startup=0))
    torrents = downloads(3, running=1)
    queue.decide(torrents, 0.0)
    decision = queue.decide(torrents, 5.0)
    assert decision.inactive == {0}
    assert decision.run == {0, 1}  # not 2: the hard limit
    assert decision.queue == {2}


def test_without_dont_count_slow_torrents_slow_ones_count() -> None:
    limits = QueueLimits(active_downloads=1, auto_manage_startup=0, dont_count_slow_torrents=False)
    queue = TorrentQueue(limits)
    torrents = downloads(2, running=1)
    queue.decide(torrents, 0.0)
    decision = queue.decide(torrents, 100.0)
    assert decision.run == {0}
    assert decision.inactive == frozenset()


def test_seeds_are_judged_on_uploads_and_a_restart_or_a_new_kind_starts_afresh() -> None:
    queue = TorrentQueue(QueueLimits(active_seeds=1, auto_manage_startup=10.0))
    uploading = seed(0, started=0.0, downloaded=10**9)  # downloads do not count for a seed
    other = seed(1, swarm_seeds=5)
    queue.decide([uploading, other], 0.0)
    assert queue.decide([uploading, other], 10.0).inactive == {0}
    # Restarted (a pause, the queue): a new grace.
    restarted = replace(uploading, started=20.0)
    assert queue.decide([restarted, other], 25.0).inactive == frozenset()
    assert queue.decide([restarted, other], 35.0).inactive == {0}
    # Now downloading (a new selection): judged on its downloads, from now on.
    downloading = replace(restarted, kind=DOWN, position=0)
    assert queue.decide([downloading, other], 40.0).inactive == frozenset()
    assert queue.decide([downloading, other], 50.0).inactive == {0}
    # A check is never slow.
    checking = replace(restarted, kind=CHECK, position=0)
    queue.decide([checking], 60.0)
    assert queue.decide([checking], 100.0).inactive == frozenset()


def test_calls_closer_than_min_sample_keep_the_last_verdict() -> None:
    queue = TorrentQueue(QueueLimits(auto_manage_startup=0))
    fast = QueuedTorrent(key=0, kind=DOWN, position=0, started=0.0)
    queue.decide([fast], 0.0)
    fast = replace(fast, downloaded=10**6)
    assert queue.decide([fast], 5.0).inactive == frozenset()
    # A burst of events: nothing moved in 0.1 s, but that is no sample.
    assert queue.decide([fast], 5.0 + MIN_SAMPLE / 10).inactive == frozenset()
    assert queue.decide([fast], 5.0 + MIN_SAMPLE * 2).inactive == {0}


def test_a_torrent_not_shown_is_forgotten() -> None:
    queue = TorrentQueue(QueueLimits(auto_manage_startup=0))
    slow = QueuedTorrent(key=0, kind=DOWN, position=0, started=0.0)
    queue.decide([slow], 0.0)
    assert queue.decide([slow], 5.0).inactive == {0}
    queue.decide([], 6.0)
    assert queue.decide([slow], 7.0).inactive == frozenset()  # a fresh start


def test_limits_can_change() -> None:
    queue = TorrentQueue()
    assert queue.limits == QueueLimits()
    assert queue.decide(downloads(5), 0.0).run == {0, 1, 2}  # libtorrent's 3
    queue.set_limits(QueueLimits(active_downloads=4))
    assert queue.decide(downloads(5), 0.0).run == {0, 1, 2, 3}
    with pytest.raises(TypeError):
        queue.set_limits(ClientConfig())  # type: ignore[arg-type]


def test_bad_limits_and_facts_are_refused() -> None:
    for name in ("active_downloads", "active_seeds", "active_checking", "active_limit"):
        with pytest.raises(QueueError):
            QueueLimits(**{name: -2})  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            QueueLimits(**{name: 1.5})  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            QueueLimits(**{name: True})
    for name in ("inactive_down_rate", "inactive_up_rate", "auto_manage_startup"):
        for bad in (-1, float("nan"), float("inf")):
            with pytest.raises(QueueError):
                QueueLimits(**{name: bad})  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            QueueLimits(**{name: "1"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        QueueLimits(dont_count_slow_torrents=1)  # type: ignore[arg-type]
    # QueueError is a ValueError: the config's fields are checked the same way.
    with pytest.raises(ValueError, match="active_downloads"):
        ClientConfig(active_downloads=-5)
    with pytest.raises(ValueError, match="auto_manage_interval"):
        ClientConfig(auto_manage_interval=0)
    with pytest.raises(TypeError):
        ClientConfig(dont_count_slow_torrents=None)  # type: ignore[arg-type]
    bad_facts: list[dict[str, object]] = [
        {"key": "a"},
        {"key": True},
        {"kind": "downloading"},
        {"position": -2},
        {"position": 2**31},
        {"position": 1.0},
        {"downloaded": -1},
        {"uploaded": 0.5},
        {"swarm_seeds": -1},
        {"seeding_time": -1.0},
        {"ratio": float("nan")},
        {"started": float("inf")},
        {"started": "now"},
        {"paused": 1},
        {"check_running": None},
    ]
    for bad_fact in bad_facts:
        facts: dict[str, object] = {"key": 0, "kind": DOWN, **bad_fact}
        with pytest.raises((TypeError, QueueError)):
            QueuedTorrent(**facts)  # type: ignore[arg-type]
    queue = TorrentQueue()
    with pytest.raises(QueueError, match="two torrents"):
        queue.decide(downloads(2) + downloads(1), 0.0)
    with pytest.raises(QueueError):
        queue.decide(downloads(1), float("nan"))
    with pytest.raises(TypeError):
        queue.decide([object()], 0.0)  # type: ignore[list-item]


# -- properties ---------------------------------------------------------------------------------

limit = st.integers(min_value=-1, max_value=4)


@st.composite
def sessions(draw: st.DrawFn) -> tuple[QueueLimits, list[QueuedTorrent], dict[int, int], float]:
    """Limits, torrents (with unique positions for those in line), each one's payload rate,
    and the time between two decisions."""
    limits = QueueLimits(
        active_downloads=draw(limit),
        active_seeds=draw(limit),
        active_checking=draw(limit),
        active_limit=draw(st.integers(min_value=-1, max_value=8)),
        dont_count_slow_torrents=draw(st.booleans()),
        inactive_down_rate=draw(st.sampled_from([0, 100, 2048])),
        inactive_up_rate=draw(st.sampled_from([0, 100, 2048])),
        auto_manage_startup=draw(st.sampled_from([0.0, 5.0, 20.0])),
    )
    count = draw(st.integers(min_value=0, max_value=12))
    torrents = []
    rates = {}
    for key in range(count):
        kind = draw(st.sampled_from(list(QueueKind)))
        running = draw(st.booleans())
        torrents.append(
            QueuedTorrent(
                key=key,
                kind=kind,
                auto_managed=draw(st.booleans()),
                paused=draw(st.booleans()),
                started=0.0 if running else None,
                check_running=running and draw(st.booleans()),
                swarm_seeds=draw(st.integers(min_value=0, max_value=3)),
                seeding_time=draw(st.sampled_from([0.0, 100.0])),
                ratio=draw(st.sampled_from([0.0, 1.0])),
            )
        )
        rates[key] = draw(st.sampled_from([0, 50, 1000, 5000]))
    # Positions: a permutation over the auto-managed ones that check or download.
    in_line = [t for t in torrents if t.auto_managed and t.kind in (CHECK, DOWN)]
    order = draw(st.permutations(range(len(in_line))))
    positions = {t.key: order[i] for i, t in enumerate(in_line)}
    torrents = [replace(t, position=positions.get(t.key, -1)) for t in torrents]
    elapsed = draw(st.sampled_from([0.5, 10.0, 30.0]))
    return limits, torrents, rates, elapsed


def rank(torrent: QueuedTorrent, now: float) -> tuple[bool, int, float, float, int]:
    """The seed order, as the module's docstring states it."""
    started = torrent.started
    recent = started is not None and now - started < SEED_STICKY
    return (not recent, torrent.swarm_seeds, torrent.seeding_time, torrent.ratio, torrent.key)


def check_decision(
    limits: QueueLimits, torrents: list[QueuedTorrent], decision: QueueDecision, now: float
) -> None:
    by_key = {t.key: t for t in torrents}
    managed = {t.key for t in torrents if t.managed}
    # Every managed torrent is decided once; the others never.
    assert decision.run | decision.queue == managed
    assert not decision.run & decision.queue
    assert decision.inactive <= decision.run
    for key in decision.inactive:
        torrent = by_key[key]
        assert limits.dont_count_slow_torrents
        assert torrent.running
        assert torrent.kind in (DOWN, SEED)
    # The limits, counting the slow exemption.
    unmanaged = [
        t
        for t in torrents
        if not t.auto_managed and not t.paused and t.kind is not QueueKind.FAILED
    ]
    forced_checking = sum(1 for t in unmanaged if t.kind is CHECK)
    for kind, kind_limit in (
        (CHECK, limits.active_checking - forced_checking),
        (DOWN, limits.active_downloads),
        (SEED, limits.active_seeds),
    ):
        counted = {k for k in decision.run - decision.inactive if by_key[k].kind is kind}
        if kind_limit != -1 - (forced_checking if kind is CHECK else 0):
            assert len(counted) <= max(0, kind_limit)
    # Checks do not count against active_limit.
    forced = len(unmanaged) - forced_checking
    if limits.active_limit != -1:
        not_checks = {k for k in decision.run if by_key[k].kind is not CHECK}
        assert len(not_checks) <= max(0, limits.active_limit - forced)
    # The order: none runs (and counts) while one before it of the same kind waits.
    for waiting in decision.queue:
        w = by_key[waiting]
        for running in decision.run - decision.inactive:
            r = by_key[running]
            if r.kind is not w.kind:
                continue
            if w.kind is DOWN:
                assert r.position < w.position
            elif w.kind is CHECK:
                assert (not r.check_running, r.position) < (not w.check_running, w.position)
            else:
                assert rank(r, now) < rank(w, now)


@given(sessions())
@settings(max_examples=300, deadline=None)
def test_limits_order_and_who_is_left_alone(
    case: tuple[QueueLimits, list[QueuedTorrent], dict[int, int], float],
) -> None:
    limits, torrents, rates, elapsed = case
    queue = TorrentQueue(limits)
    first = queue.decide(torrents, 0.0)
    check_decision(limits, torrents, first, 0.0)
    assert first.inactive == frozenset()  # nobody has been seen slow yet
    # Later: the counters moved at each torrent's rate.
    later = [
        replace(
            t,
            downloaded=t.downloaded + int(rates[t.key] * elapsed),
            uploaded=t.uploaded + int(rates[t.key] * elapsed),
        )
        for t in torrents
    ]
    second = queue.decide(later, elapsed)
    check_decision(limits, later, second, elapsed)
    # Exactly the running, managed downloads and seeds slow for long enough are inactive
    # (if they run at all: the hard limit may leave no room even for them).
    for t in later:
        threshold = limits.inactive_up_rate if t.kind is SEED else limits.inactive_down_rate
        slow = (
            limits.dont_count_slow_torrents
            and t.managed
            and t.running
            and t.kind in (DOWN, SEED)
            and elapsed >= MIN_SAMPLE
            and rates[t.key] < threshold
            and elapsed >= limits.auto_manage_startup
        )
        assert (t.key in second.inactive) == (slow and t.key in second.run)
    # Deterministic, whatever the order of the torrents.
    again = TorrentQueue(limits)
    shuffled = list(torrents)
    random.Random(len(torrents)).shuffle(shuffled)
    assert again.decide(shuffled, 0.0) == first
    shuffled_later = list(later)
    random.Random(1).shuffle(shuffled_later)
    assert again.decide(shuffled_later, elapsed) == second
