"""Which auto-managed torrents of a session run and which wait in line: libtorrent's queueing
(``torrent_flags::auto_managed``, ``session_impl::recalculate_auto_managed_torrents``), sans-IO.

A session with 200 torrents need not run 200 swarms, announce 200 times and hash 200 sets of
files at once. A :class:`TorrentQueue` is shown the facts of every torrent of a session
(:class:`QueuedTorrent`) and says which of the auto-managed ones should run now and which
should wait (:class:`QueueDecision`), within :class:`QueueLimits`:

- a torrent checking its data counts against ``active_checking``, where the checks of
  torrents not auto-managed are counted first; one downloading (or fetching a magnet link's
  metadata) against ``active_downloads``; one seeding against ``active_seeds``; every
  running one but a check against ``active_limit``, where the running torrents that are
  not auto-managed are counted first (the user started those: the queue cannot stop them).
  ``-1`` is unlimited. Those counts of torrents not auto-managed may be given as numbers
  (``decide(..., forced=, forced_checking=)``) rather than as facts;
- a running torrent that checks again (a recheck, a magnet link's metadata come) keeps the
  slot it had (:attr:`QueuedTorrent.keeps`) while its check runs or is let in, until it
  ends: another torrent started in its place for the length of a short check would be
  queued again as soon as it ends. While it waits for a checking slot it keeps none, as in
  libtorrent (which frees it at once): a long check of another would leave it idle;
- checks under way come first (bip_disk cannot stop one half-way, and another check would
  only hash alongside it), then the others by queue position;
- downloads go by queue position, 0 first;
- seeds go by rank, libtorrent's ``seed_rank`` in order: a seed that met none of its
  seeding goals first (:meth:`QueueLimits.seed_goals_met`: libtorrent's
  ``share_ratio_limit``, ``seed_time_ratio_limit``, ``seed_time_limit``), so that a seed
  that met one gives way to those that still owe their swarm when ``active_seeds`` is short;
  then one running since less than :data:`SEED_STICKY` seconds (so that two seeds do not take
  turns at every evaluation), then fewer seeds in its swarm, then less seeding time, then a
  lower ratio. A seed that met its goals is queued only for want of room, never for that
  alone (libtorrent's);
- with ``dont_count_slow_torrents``, a running torrent whose payload rate (received for a
  download, sent for a seed) stayed below ``inactive_down_rate`` / ``inactive_up_rate`` for
  ``auto_manage_startup`` seconds is *inactive*: it keeps running but does not count against
  its kind's limit, so that another may start; it still counts against ``active_limit``, as
  in libtorrent (which is why a session full of dead swarms stops at ``active_limit``). A
  torrent just started has that long before it can be found slow; a checking one never is.

Torrents paused by the user, failed ones and those not auto-managed are never in a decision:
the queue does not touch them.

Between two decisions, :meth:`TorrentQueue.checks_to_start` says which waiting checks take the
slots of checks that just ended, by the same order and limit: a caller need not wait for its
next decision to start them (tiny checks would go ``active_checking`` per decision).

The queue remembers, per torrent, its payload counters at the last sample and since when it
has been slow: it tells slow from not by how much the counters moved between two calls (at
least :data:`MIN_SAMPLE` seconds apart), so that a burst between two evaluations counts as
well as a steady rate. A torrent not shown in a call is forgotten.

>>> queue = TorrentQueue(QueueLimits(active_downloads=1))
>>> first = QueuedTorrent(key=1, kind=QueueKind.DOWNLOADING, position=0, started=0.0)
>>> second = QueuedTorrent(key=2, kind=QueueKind.DOWNLOADING, position=1)
>>> decision = queue.decide([first, second], now=0.0)
>>> sorted(decision.run), sorted(decision.queue)
([1], [2])
"""

from __future__ import annotations

import enum
import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "MIN_SAMPLE",
    "SEED_STICKY",
    "UNLIMITED",
    "QueueDecision",
    "QueueError",
    "QueueKind",
    "QueueLimits",
    "QueuedTorrent",
    "TorrentQueue",
]

UNLIMITED: Final = -1
"""A limit of :class:`QueueLimits` that does not limit (libtorrent's -1)."""
SEED_STICKY: Final = 30 * 60.0
"""Seconds a seed started by the queue ranks before the other seeds (libtorrent's
``recently_started`` bit of ``seed_rank``): without it, two seeds of nearly equal rank could
take turns at every evaluation, each start costing announces and new connections."""
MIN_SAMPLE: Final = 1.0
"""Seconds between two samples of a torrent's payload counters at least: calls closer than
that to the last sample (events in a burst) keep the last verdict on whether it is slow."""
# Queue positions beyond this are not ours (a session does not hold 2**31 torrents).
_MAX_POSITION: Final = 2**31 - 1


class QueueError(ValueError):
    """The queue was given what it cannot use: a limit or a fact out of range, or two
    torrents with one key."""


class QueueKind(enum.Enum):
    """What a torrent would do if it ran, for the limit it counts against.

    - ``CHECKING``: hash its data (``active_checking``).
    - ``DOWNLOADING``: fetch pieces, or a magnet link's metadata (``active_downloads``).
    - ``SEEDING``: every wanted piece is here; serve them (``active_seeds``).
    - ``FAILED``: stopped for good (failed or closed): never queued nor counted.
    """

    CHECKING = "checking"
    DOWNLOADING = "downloading"
    SEEDING = "seeding"
    FAILED = "failed"


def _check_goal(name: str, value: object) -> None:
    """``value`` is a seeding goal: ``None`` (off), or a number >= 0 and finite."""
    if value is not None:
        _check_amount(name, value)


def _check_limit(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < UNLIMITED:
        raise QueueError(f"{name} must be -1 (unlimited) or more, not {value}")


def _check_amount(name: str, value: object) -> None:
    """``value`` is a number >= 0 and finite (a rate, seconds)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {value!r}")
    try:
        finite = math.isfinite(value)
    except OverflowError:
        # An int past a float's range: no amount we could count to. Its size, not its
        # repr (which Python refuses past 4300 digits).
        raise QueueError(
            f"{name} must be finite and >= 0, not an int of {int(value).bit_length()} bits"
        ) from None
    if not (finite and value >= 0):
        raise QueueError(f"{name} must be finite and >= 0, not {value!r}")


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """How many auto-managed torrents may run at once: libtorrent's settings of the same
    names, with libtorrent's defaults.

    Attributes:
        active_downloads: downloading torrents running at most (``-1``: no limit).
        active_seeds: seeding torrents running at most.
        active_checking: torrents checking their data at most.
        active_limit: running torrents at most, all kinds together, and the running
            torrents that are not auto-managed with them.
        dont_count_slow_torrents: a slow torrent (inactive) counts against
            ``active_limit`` only, not against its kind's limit.
        inactive_down_rate: bytes per second of payload received below which a download
            is slow.
        inactive_up_rate: bytes per second of payload sent below which a seed is slow.
        auto_manage_startup: seconds a torrent must have been slow, without a break, to be
            inactive; a torrent (re)started has that long to get going.
        share_ratio_limit: a seed has met this goal once it uploaded this many times what it
            downloaded, or its size if more (libtorrent's, 200 percent there). ``None``: off,
            never met (libtorrent turns it off with a huge value; 0 is met at once).
        seed_time_ratio_limit: met once it seeded this many times as long as it downloaded
            (libtorrent's, 700 percent there); ``None``: off.
        seed_time_limit: met once it seeded this many seconds (libtorrent's, 24 h);
            ``None``: off.

    Raises:
        TypeError: a limit is not an int, a rate or a time not a number, the flag not a
            bool, a goal not a number nor ``None``.
        QueueError: a limit is below -1, a rate, a time or a goal negative or not finite.
    """

    active_downloads: int = 3
    active_seeds: int = 5
    active_checking: int = 1
    active_limit: int = 500
    dont_count_slow_torrents: bool = True
    inactive_down_rate: float = 2048
    inactive_up_rate: float = 2048
    auto_manage_startup: float = 60.0
    share_ratio_limit: float | None = 2.0
    seed_time_ratio_limit: float | None = 7.0
    seed_time_limit: float | None = 24 * 3600.0

    def __post_init__(self) -> None:
        """Refuse limits that cannot work."""
        for name in ("active_downloads", "active_seeds", "active_checking", "active_limit"):
            _check_limit(name, getattr(self, name))
        for name in ("inactive_down_rate", "inactive_up_rate", "auto_manage_startup"):
            _check_amount(name, getattr(self, name))
        for name in ("share_ratio_limit", "seed_time_ratio_limit", "seed_time_limit"):
            _check_goal(name, getattr(self, name))
        if not isinstance(self.dont_count_slow_torrents, bool):
            raise TypeError(
                f"dont_count_slow_torrents must be a bool, not {self.dont_count_slow_torrents!r}"
            )

    def seed_goals_met(
        self,
        *,
        uploaded: int,
        downloaded: int,
        size: int,
        active_time: float,
        seeding_time: float,
    ) -> bool:
        """Whether a complete torrent met any of its seeding goals, libtorrent's rule
        (``torrent::seed_rank``'s ``seed_ratio_not_met``, cleared by any goal met):

        - the share ratio: ``uploaded`` over ``downloaded``, or over ``size`` when less was
          downloaded (a torrent added complete owes its size), reached
          ``share_ratio_limit``; met too when both are 0 (nothing to share);
        - the time ratio: the seeding time over the download time (``active_time`` less
          ``seeding_time``) reached ``seed_time_ratio_limit``; met too when the torrent
          downloaded for a second or less (added complete: it owes no time);
        - the seed time: ``seeding_time`` reached ``seed_time_limit``.

        A goal that is ``None`` is never met. ``uploaded`` and ``downloaded`` are payload
        bytes, ``active_time`` the seconds the torrent ran (its first check included, holds not),
        ``seeding_time`` those of them it ran complete (libtorrent's ``finished_time``).

        Raises:
            TypeError: a byte count is not an int, a time not a number.
            QueueError: a count or a time negative, a time not finite.
        """
        for name, count in (("uploaded", uploaded), ("downloaded", downloaded), ("size", size)):
            if isinstance(count, bool) or not isinstance(count, int):
                raise TypeError(f"{name} must be an int, not {count!r}")
            if count < 0:
                raise QueueError(f"{name} must be >= 0, not {count}")
        _check_amount("active_time", active_time)
        _check_amount("seeding_time", seeding_time)
        if self.seed_time_limit is not None and seeding_time >= self.seed_time_limit:
            return True
        ratio = self.seed_time_ratio_limit
        # libtorrent wants more than a second of download time to divide by (whole seconds
        # there): a torrent added complete counts only its check, or nothing.
        download_time = max(active_time - seeding_time, 0.0)
        if ratio is not None and (download_time <= 1.0 or seeding_time >= ratio * download_time):
            return True
        share = self.share_ratio_limit
        owed = max(downloaded, size)
        return share is not None and (owed == 0 or uploaded >= share * owed)


@dataclass(frozen=True, slots=True)
class QueuedTorrent:
    """What the queue needs to know of one torrent of the session.

    Attributes:
        key: the torrent's name in decisions, unique in a call (the session's number).
        kind: what it does, or would do, when it runs.
        auto_managed: whether the queue manages it; a torrent that is not is never queued,
            but counts against ``active_limit`` while it runs.
        paused: paused by the user: never queued nor counted, whatever ``auto_managed``.
        position: its queue position (0 first), for a checking or downloading torrent;
            ``-1`` for the others (seeds).
        started: since when it has run (joined its swarm, or started its check), on the
            caller's clock; ``None`` while queued or paused.
        downloaded: payload bytes received, a counter that never goes down while the
            torrent is in the session (this run's).
        uploaded: payload bytes sent, likewise.
        check_running: for ``CHECKING``, the check of its data is under way (it cannot be
            stopped half-way; it keeps its slot).
        swarm_seeds: seeds known in its swarm (a seed with fewer ranks first).
        seeding_time: seconds it has seeded so far (less ranks first).
        ratio: what it uploaded over its size (lower ranks first).
        active_time: seconds it has run so far, out of any hold (the seeding goals'
            download time is this less ``seeding_time``).
        size: its size in payload bytes (the share ratio's divisor when it downloaded
            less): with ``uploaded``, ``downloaded`` and the times, what
            :meth:`QueueLimits.seed_goals_met` judges a seed on.
        keeps: for ``CHECKING``, the kind (``DOWNLOADING`` or ``SEEDING``) whose slot it
            keeps while its check runs or is let in (:meth:`TorrentQueue.decide` counts it
            then only, not while it waits for a checking slot): it ran as that when its
            check was asked for, and most often runs as that again after it (a slot given to
            another for the length of the check would be taken back at once). A trade-off,
            libtorrent keeps none: a recheck that completes a download keeps a download's
            slot until it ends, and one that waited for its turn takes back, as it starts,
            the slot another was given meanwhile.

    Raises:
        TypeError: a field of the wrong type.
        QueueError: a position below -1, a counter or a time negative or not finite.
    """

    key: int
    kind: QueueKind
    auto_managed: bool = True
    paused: bool = False
    position: int = -1
    started: float | None = None
    downloaded: int = 0
    uploaded: int = 0
    check_running: bool = False
    swarm_seeds: int = 0
    seeding_time: float = 0.0
    ratio: float = 0.0
    keeps: QueueKind | None = None
    active_time: float = 0.0
    size: int = 0

    def __post_init__(self) -> None:
        """Refuse facts that cannot be."""
        if isinstance(self.key, bool) or not isinstance(self.key, int):
            raise TypeError(f"a torrent's key is an int, not {self.key!r}")
        if not isinstance(self.kind, QueueKind):
            raise TypeError(f"kind must be a QueueKind, not {self.kind!r}")
        for name in ("auto_managed", "paused", "check_running"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, not {getattr(self, name)!r}")
        _check_limit("position", self.position)
        if self.position > _MAX_POSITION:
            raise QueueError(f"position {self.position} is out of range")
        for name in ("downloaded", "uploaded", "swarm_seeds", "size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {value!r}")
            if value < 0:
                raise QueueError(f"{name} must be >= 0, not {value}")
        _check_amount("seeding_time", self.seeding_time)
        _check_amount("ratio", self.ratio)
        _check_amount("active_time", self.active_time)
        if self.keeps is not None and (
            self.kind is not QueueKind.CHECKING
            or self.keeps not in (QueueKind.DOWNLOADING, QueueKind.SEEDING)
        ):
            raise QueueError(
                f"only a check keeps a slot, a download's or a seed's, not {self.keeps!r}"
                f" while {self.kind.value}"
            )
        started = self.started
        if started is not None and (
            isinstance(started, bool)
            or not isinstance(started, int | float)
            or not math.isfinite(started)
        ):
            raise QueueError(f"started must be a finite time or None, not {started!r}")

    @property
    def running(self) -> bool:
        """Whether it runs now (neither queued nor paused)."""
        return self.started is not None

    @property
    def managed(self) -> bool:
        """Whether the queue decides for it: auto-managed, not paused, not failed."""
        return self.auto_managed and not self.paused and self.kind is not QueueKind.FAILED


@dataclass(frozen=True, slots=True)
class QueueDecision:
    """What the queue says (:meth:`TorrentQueue.decide`), by torrent key.

    Attributes:
        run: the auto-managed torrents that should run (start those queued).
        queue: those that should wait (queue those running).
        inactive: those of ``run`` found slow, that do not count against their kind's limit.
    """

    run: frozenset[int] = field(default_factory=frozenset)
    queue: frozenset[int] = field(default_factory=frozenset)
    inactive: frozenset[int] = field(default_factory=frozenset)


@dataclass(slots=True)
class _Track:
    """Whether one running torrent is slow: its last sample, and since when it is slow."""

    kind: QueueKind
    started: float
    sampled_at: float
    sampled_bytes: int
    slow_since: float | None = None


def _unlimited(limit: int) -> float:
    return math.inf if limit == UNLIMITED else limit


def _payload(torrent: QueuedTorrent) -> int:
    """The counter that tells whether ``torrent`` is slow: received for a download, sent for
    a seed."""
    return torrent.uploaded if torrent.kind is QueueKind.SEEDING else torrent.downloaded


class TorrentQueue:
    """The queueing policy of a session (see the module): fed every torrent's facts, says
    which auto-managed ones run. Deterministic: the same calls give the same decisions,
    whatever the order of the torrents in a call."""

    def __init__(self, limits: QueueLimits | None = None) -> None:
        """A queue with ``limits`` (libtorrent's defaults when ``None``)."""
        self._limits = limits if limits is not None else QueueLimits()
        self._tracks: dict[int, _Track] = {}  # the running torrents shown in the last call

    @property
    def limits(self) -> QueueLimits:
        """The limits in force."""
        return self._limits

    def set_limits(self, limits: QueueLimits) -> None:
        """Use ``limits`` from the next :meth:`decide` on.

        Raises:
            TypeError: ``limits`` is not a :class:`QueueLimits`.
        """
        if not isinstance(limits, QueueLimits):
            raise TypeError(f"limits must be a QueueLimits, not {limits!r}")
        self._limits = limits

    def inactive(self, torrent: QueuedTorrent, now: float) -> bool:
        """Whether ``torrent`` counted as inactive (slow for ``auto_manage_startup``
        seconds, with ``dont_count_slow_torrents``) at the last :meth:`decide`, as seen at
        ``now``."""
        limits = self._limits
        track = self._tracks.get(torrent.key)
        return (
            limits.dont_count_slow_torrents
            and track is not None
            and track.slow_since is not None
            and now - track.slow_since >= limits.auto_manage_startup
        )

    def decide(
        self,
        torrents: Iterable[QueuedTorrent],
        now: float,
        *,
        forced: int = 0,
        forced_checking: int = 0,
    ) -> QueueDecision:
        """Which auto-managed torrents should run and which should wait, at ``now``.

        ``forced`` running torrents and ``forced_checking`` checking ones, not auto-managed
        and not among ``torrents``, count as the facts of such torrents would: a caller need
        not build facts for the torrents the queue does not manage.

        Raises:
            TypeError: an item is not a :class:`QueuedTorrent`, a count not an int.
            QueueError: two torrents share a key, ``now`` is not finite, or a count is
                negative.
        """
        if not (isinstance(now, int | float) and math.isfinite(now)):
            raise QueueError(f"now must be a finite time, not {now!r}")
        for name, count in (("forced", forced), ("forced_checking", forced_checking)):
            if isinstance(count, bool) or not isinstance(count, int):
                raise TypeError(f"{name} must be an int, not {count!r}")
            if count < 0:
                raise QueueError(f"{name} must be >= 0, not {count}")
        shown: dict[int, QueuedTorrent] = {}
        for torrent in torrents:
            if not isinstance(torrent, QueuedTorrent):
                raise TypeError(f"the queue takes QueuedTorrent facts, not {torrent!r}")
            if torrent.key in shown:
                raise QueueError(f"two torrents with the key {torrent.key}")
            shown[torrent.key] = torrent
        self._observe(shown, now)
        limits = self._limits
        slow = frozenset(
            key
            for key, torrent in shown.items()
            if torrent.managed and torrent.running and self.inactive(torrent, now)
        )
        # The running torrents the queue cannot stop take their share of the hard limit,
        # and their checks their share of the checking limit (libtorrent's
        # recalculate_auto_managed_torrents); a check counts against the checking limit only.
        for torrent in shown.values():
            if torrent.auto_managed or torrent.paused or torrent.kind is QueueKind.FAILED:
                continue
            if torrent.kind is QueueKind.CHECKING:
                forced_checking += 1
            else:
                forced += 1
        hard = _unlimited(limits.active_limit) - forced
        managed = sorted(
            (torrent for torrent in shown.values() if torrent.managed), key=lambda t: t.key
        )
        run: set[int] = set()
        queue: set[int] = set()

        def allot(ordered: list[QueuedTorrent], left: float) -> None:
            # libtorrent's auto_manage_torrents: in order, an inactive torrent takes a slot of
            # the hard limit only, the others one of both, until either runs out.
            nonlocal hard
            for torrent in ordered:
                if hard > 0 and torrent.key in slow:
                    run.add(torrent.key)
                    hard -= 1
                elif hard > 0 and left > 0:
                    run.add(torrent.key)
                    hard -= 1
                    left -= 1
                else:
                    queue.add(torrent.key)

        def allot_checks(ordered: list[QueuedTorrent], left: float) -> None:
            # Checks: against the checking limit alone (never slow).
            for torrent in ordered:
                if left > 0:
                    run.add(torrent.key)
                    left -= 1
                else:
                    queue.add(torrent.key)

        def of(kind: QueueKind) -> list[QueuedTorrent]:
            return [torrent for torrent in managed if torrent.kind is kind]

        # Checks first (libtorrent's order): a check is short, and then the torrent knows
        # whether it downloads or seeds.
        checking = of(QueueKind.CHECKING)
        allot_checks(
            sorted(checking, key=lambda t: (not t.check_running, *_in_line(t))),
            _unlimited(limits.active_checking) - forced_checking,
        )
        # The slots kept by checks (a running torrent rechecking), before any other's: by
        # those that run or start now only; one that waits for a checking slot (a long
        # check of another under way) does not leave its slot idle meanwhile.
        kept = dict.fromkeys((QueueKind.DOWNLOADING, QueueKind.SEEDING), 0)
        for torrent in checking:
            if torrent.keeps is not None and torrent.key in run:
                kept[torrent.keeps] += 1
        hard -= sum(kept.values())
        allot(
            sorted(of(QueueKind.DOWNLOADING), key=_in_line),
            _unlimited(limits.active_downloads) - kept[QueueKind.DOWNLOADING],
        )
        seeds = sorted(of(QueueKind.SEEDING), key=lambda t: _seed_rank(t, now, limits))
        allot(seeds, _unlimited(limits.active_seeds) - kept[QueueKind.SEEDING])
        return QueueDecision(frozenset(run), frozenset(queue), slow & frozenset(run))

    def checks_to_start(self, checking: int, waiting: Iterable[tuple[int, int]]) -> list[int]:
        """Which waiting checks start now, between two :meth:`decide`: when a check ends,
        its slot need not wait for the next decision.

        ``checking`` is the checks under way or already let in, auto-managed or not (and
        those of paused torrents under way: a check cannot be stopped); ``waiting`` the
        ``(position, key)`` of the auto-managed checks held back for a slot. The first of
        them in line (as :meth:`decide` orders checks: by position, one without after) take
        what ``active_checking`` leaves, and their keys come back in that order. O(n) for n
        waiting, however few start (a session full of checks asks once per check ending).

        Raises:
            TypeError: ``checking``, a position or a key is not an int.
            QueueError: ``checking`` is negative, or a position out of range.
        """
        if isinstance(checking, bool) or not isinstance(checking, int):
            raise TypeError(f"checking must be an int, not {checking!r}")
        if checking < 0:
            raise QueueError(f"checking must be >= 0, not {checking}")
        room = _unlimited(self._limits.active_checking) - checking
        lined: list[tuple[bool, int, int]] = []
        for item in waiting:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise TypeError(f"a waiting check is a (position, key) pair, not {item!r}")
            position, key = item
            _check_limit("position", position)
            if position > _MAX_POSITION:
                raise QueueError(f"position {position} is out of range")
            if isinstance(key, bool) or not isinstance(key, int):
                raise TypeError(f"a torrent's key is an int, not {key!r}")
            lined.append(_line_order(position, key))
        if room <= 0 or not lined:
            return []
        first = sorted(lined) if room >= len(lined) else heapq.nsmallest(int(room), lined)
        return [key for _last, _position, key in first]

    def _observe(self, shown: dict[int, QueuedTorrent], now: float) -> None:
        """Sample the payload counters of the running torrents: which are slow, since when."""
        limits = self._limits
        tracks: dict[int, _Track] = {}
        for key, torrent in shown.items():
            started = torrent.started
            if started is None or torrent.kind is QueueKind.FAILED:
                continue  # queued or paused: never slow (it has had no chance)
            counter = _payload(torrent)
            track = self._tracks.get(key)
            if track is None or track.kind is not torrent.kind or track.started != started:
                # New, (re)started, or now doing another thing (a download that completed
                # is judged on its uploads from now on): a fresh start.
                tracks[key] = _Track(torrent.kind, started, now, counter)
                continue
            tracks[key] = track
            elapsed = now - track.sampled_at
            if elapsed < MIN_SAMPLE:
                continue
            threshold = (
                limits.inactive_up_rate
                if torrent.kind is QueueKind.SEEDING
                else limits.inactive_down_rate
            )
            rate = (counter - track.sampled_bytes) / elapsed
            if torrent.kind is QueueKind.CHECKING or rate >= threshold:
                track.slow_since = None
            elif track.slow_since is None:
                track.slow_since = track.sampled_at  # slow over the whole sample
            track.sampled_at = now
            track.sampled_bytes = counter
        self._tracks = tracks  # those not shown, or not running, are forgotten


def _seed_rank(
    torrent: QueuedTorrent, now: float, limits: QueueLimits
) -> tuple[bool, bool, int, float, float, int]:
    """The order of seeds, best first (libtorrent's ``seed_rank``, in its older form with
    the seeding time and the ratio): none of the seeding goals met, running since less than
    :data:`SEED_STICKY`, fewer seeds in the swarm, less seeding time, lower ratio; then the
    key, so that the order is total."""
    started = torrent.started
    sticky = started is not None and now - started < SEED_STICKY
    met = limits.seed_goals_met(
        uploaded=torrent.uploaded,
        downloaded=torrent.downloaded,
        size=torrent.size,
        active_time=torrent.active_time,
        seeding_time=torrent.seeding_time,
    )
    return (
        met,
        not sticky,
        torrent.swarm_seeds,
        torrent.seeding_time,
        torrent.ratio,
        torrent.key,
    )


def _in_line(torrent: QueuedTorrent) -> tuple[bool, int, int]:
    """The order of a queue position, 0 first; one without (it should have one) after them,
    by key."""
    return _line_order(torrent.position, torrent.key)


def _line_order(position: int, key: int) -> tuple[bool, int, int]:
    """:func:`_in_line` of a torrent at ``position`` named ``key``."""
    return (position < 0, position, key)
