"""Announcing to one tracker for as long as a torrent runs: :class:`Announcer`.

Every client writes the same loop around :meth:`TrackerClient.announce`: ``started`` first,
then a regular announce at the interval the tracker asks for (within sane bounds), with the
bytes left recomputed each time; ``completed`` once when the download finishes; failures
retried with a growing delay, or when the tracker said to (BEP 31 ``retry in``), or never
again if it said so; and ``stopped`` on the way out, quickly. libtorrent and
anacrolix/torrent run it inside their sessions; this is ours, on top of the trio client. The
same loop drives any other :class:`AnnounceClient` (an HTTP tracker client, say): the schedule
does not depend on the transport. A partial seed (BEP 21: every piece it wants is here, not
every piece) says so in its regular announces, ``event=paused``, to a client that can send it
(an HTTP tracker's), until a tracker refuses it: that tracker then hears ``none`` again.

>>> async def main(client, url, info_hash, peer_id, have):  # doctest: +SKIP
...     announcer = Announcer(client, url, info_hash, peer_id=peer_id, port=6881,
...                           progress=lambda: AnnounceProgress(left=have.bytes_left()))
...     async with trio.open_nursery() as nursery:
...         nursery.start_soon(announcer.run)   # cancel the nursery: "stopped" is sent
...         ...
...         announcer.mark_completed()          # the download finished: "completed" now
...         print(announcer.status)
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Literal, Protocol, TypeGuard, runtime_checkable

import trio

from bip_handshake import Family, PeerAddress, PeerId, PeerSink
from bip_metainfo import InfoHash

from ._checks import seconds
from ._client import TrackerClient, TrackerTarget, _peer_id_bytes, _swarm_id, check_family
from ._client_core import AnnounceResult
from ._codec import AnnounceEvent
from ._errors import LocalProtocolError, TrackerError, TrackerRejectedError, TrackerTimeoutError
from ._url import TrackerUrl, parse_tracker_url, shown_url

__all__ = [
    "DEFAULT_ANNOUNCE_NOW_INTERVAL",
    "DEFAULT_ANNOUNCE_TIMEOUT",
    "DEFAULT_MAX_ANNOUNCE_INTERVAL",
    "DEFAULT_MIN_ANNOUNCE_INTERVAL",
    "DEFAULT_RETRY_DELAY",
    "DEFAULT_STOPPED_TIMEOUT",
    "MAX_RETRY_IN",
    "AnnounceClient",
    "AnnounceProgress",
    "Announcer",
    "AnnouncerStatus",
]

_log = logging.getLogger("bip_utracker.client")

DEFAULT_MIN_ANNOUNCE_INTERVAL: Final = 300.0
"""Seconds between two regular announces at least, whatever interval the tracker asks for:
libtorrent's ``min_announce_interval``. A tracker that answers ``interval`` 1 (misconfigured,
or hostile: it would have every client of a swarm knock once a second) is asked every 5
minutes."""
DEFAULT_ANNOUNCE_NOW_INTERVAL: Final = 30.0
"""Seconds :meth:`Announcer.announce_now` waits after the previous announce at least, unless the
tracker's ``min interval`` says longer: libtorrent's default ``min interval`` for an HTTP answer
without one. Only the caller asks for these, so they need no floor as high as the regular
one's."""
DEFAULT_MAX_ANNOUNCE_INTERVAL: Final = 1800.0
"""Seconds between two regular announces at most (a longer interval asked for is capped)."""
DEFAULT_RETRY_DELAY: Final = 15.0
"""Seconds before retrying a failed announce; doubled after each failure in a row, up to the
maximum interval (15, 30, 60, ... 960, then 1800 s by default)."""
MAX_RETRY_IN: Final = 3600.0
"""Seconds a tracker's BEP 31 ``retry in`` may hold off the next try at most (unless the
announcer's ``max_interval`` is longer): libtorrent's ``tracker_retry_delay_max``. A tracker
that asks for days is asked again after an hour, one request."""
DEFAULT_ANNOUNCE_TIMEOUT: Final = 60.0
"""Seconds one announce may take: BEP 15's retransmissions would go on for hours."""
DEFAULT_STOPPED_TIMEOUT: Final = 2.0
"""Seconds the ``stopped`` announce may hold up the exit of :meth:`Announcer.run`."""

_NUM_WANT_RANGE: Final = range(-(2**31), 2**31)  # the packet's field is a signed 32-bit int
_MAX_DOUBLINGS = 32  # 2**32 times any sane delay is past every cap: no float overflow


@runtime_checkable
class AnnounceClient(Protocol):
    """A tracker client other than :class:`TrackerClient` that an :class:`Announcer` can drive.

    An HTTP tracker client (BEP 3, BEP 23), for one. The :class:`Announcer` hands it the tracker
    exactly as the caller gave it (no ``udp://`` parsing), after :meth:`check_tracker` accepted
    it, and reads ``interval`` and ``peers`` from each :class:`AnnounceResult` (and shows the
    whole result in :attr:`AnnouncerStatus.last_result`): fill ``request_id`` with any counter of
    your own and ``tracker`` with the address that answered. A subclass of
    :class:`AnnounceResult` may carry more; an int ``min_interval`` on it (the tracker's ``min
    interval``, seconds) holds off :meth:`Announcer.announce_now` that long.

    The exceptions decide what the :class:`Announcer` does: a :class:`TrackerError` (a
    :class:`TrackerRejectedError` for the tracker's own refusal, a :class:`TrackerTimeoutError`,
    or a subclass of your own for anything else the tracker or the network did wrong) is retried
    with backoff; a :class:`LocalProtocolError` is the caller's mistake, or a closed client, and
    ends :meth:`Announcer.run`. A :class:`TrackerError` may say more with two attributes, as
    bip's HTTP client's refusals do:

    - ``retry_in``: BEP 31's ``retry in`` as the tracker gave it: an int of minutes (0 or
      more), and the next try comes no sooner (at most :data:`MAX_RETRY_IN` later, or
      ``max_interval`` if longer), nor sooner than the backoff would (``retry in`` only
      lengthens it; it stands in for ``interval``); or ``"never"``, and the announcer sends
      this tracker nothing more, not even ``stopped`` (:attr:`AnnouncerStatus.given_up`).
      Anything else there is ignored.
    - ``interval``: seconds the refusal asked between announces (an int): the backoff waits
      at least that long (up to ``max_interval``), as libtorrent does.

    BEP 21's ``paused`` is opt-in: a client whose class (or instance) sets the attribute
    ``announces_paused`` to ``True`` (bip's HTTP client's does: ``announces_paused:
    ClassVar[bool] = True``) must take a keyword ``paused: bool`` in :meth:`announce`, and is
    passed ``paused=True`` with a regular announce (event ``none``) while the progress says
    we are a partial seed: it then sends ``event=paused``. Any other client is never passed
    the keyword, so one written before it works as before (its tracker hears ``none``, as a
    UDP tracker does: BEP 15 has no ``paused``). The attribute is read once, when the
    :class:`Announcer` is built, and only ``True`` itself opts in (not a mock's truthy
    attribute, not a signature that happens to name ``paused``: a wrapper forwarding
    ``**kwargs`` sets the attribute if what it wraps takes the keyword). A tracker that
    refuses an announce saying ``paused`` hears ``none`` from then on (see :class:`Announcer`).

    Announcing per address family (BEP 7, an :class:`Announcer` given a ``family``) is opt-in
    the same way: a client whose ``announces_family`` is ``True`` (bip's HTTP client's is)
    must take a keyword ``family: int | None`` in :meth:`announce` (4 or 6: reach the tracker
    at its addresses of that IP version only, from our address of it), and is passed it with
    every announce of such an announcer. An announcer is given a family for a client that did
    not opt in: :class:`LocalProtocolError` when it is built.
    """

    def check_tracker(self, tracker: str) -> None:
        """Accept ``tracker`` (a URL) or raise :class:`LocalProtocolError` saying why not.

        Called once, when an :class:`Announcer` is built: a tracker the client can never
        announce to is the caller's error, not a failure to retry for ever.
        """
        ...

    async def announce(
        self,
        tracker: str,
        info_hash: InfoHash | bytes,
        *,
        peer_id: PeerId | bytes,
        port: int,
        uploaded: int,
        downloaded: int,
        left: int,
        event: AnnounceEvent,
        num_want: int,
    ) -> AnnounceResult:
        """Announce to ``tracker`` (as :meth:`TrackerClient.announce` does) and return its answer.

        ``info_hash`` is a swarm id (20 bytes) or an :class:`~bip_metainfo.InfoHash`;
        ``num_want`` -1 lets the tracker decide (``stopped`` comes with 0: send it, so the
        tracker sends no peers we would throw away). The :class:`Announcer` gives the peers of the
        answer to its sink itself (not those of a ``stopped`` answer).
        """
        ...


@dataclass(frozen=True, slots=True)
class AnnounceProgress:
    """What an announce reports of the download, in payload bytes this session.

    Attributes:
        uploaded: bytes sent to peers.
        downloaded: bytes received from peers (and verified, as most clients count).
        left: bytes still missing (0 for a seeder).
        partial_seed: every piece we want is here, but not every piece (BEP 21; libtorrent's
            ``is_finished() && !is_seed()``): a regular announce then says ``paused`` to a
            client that can (an HTTP tracker's). Ignored while ``left`` is 0: a seed is none.
            A UDP tracker hears ``none`` (0 on the wire), where libtorrent sends 4: BEP 15
            defines no such value, and strict UDP trackers drop the packet or refuse it.

    The :class:`Announcer` checks each one it is given: the counts are ints of 0 or more,
    ``partial_seed`` a bool (:class:`LocalProtocolError` otherwise, which ends
    :meth:`Announcer.run`).
    """

    uploaded: int = 0
    downloaded: int = 0
    left: int = 0
    partial_seed: bool = False


@dataclass(frozen=True, slots=True)
class AnnouncerStatus:
    """A snapshot of an :class:`Announcer`, for a user interface (times are trio's clock).

    Attributes:
        tracker: the tracker, as given.
        running: whether :meth:`Announcer.run` is running.
        announcing: whether an announce is waiting for the tracker's answer now.
        announces: announces the tracker answered.
        failures: announces that failed in a row since the last answer (0 after an answer).
        started: whether the tracker knows us (``started`` was answered, ``stopped`` not sent).
        completed: whether ``completed`` was answered.
        last_event: the event of the last answered announce.
        last_result: the last answer.
        last_error: why the last announce failed; None if it was answered.
        last_announce: when the last answer arrived.
        next_announce: when the next announce is due (None when not running, or given up).
        given_up: why announcing to this tracker stopped for good, to show a user: the
            tracker's refusal (``str`` of its error) when it said BEP 31 ``retry in: never``;
            None while announcing goes on.
        last_paused: whether the last answered announce said BEP 21's ``paused`` (its
            ``last_event`` is then ``none``, the event it stands in for).
        family: the IP version (4 or 6) this announcer reaches the tracker in (BEP 7: one
            announcer per family we listen on, each with its own state); None: whichever
            address of the tracker comes first.
    """

    tracker: str
    running: bool
    announcing: bool
    announces: int
    failures: int
    started: bool
    completed: bool
    last_event: AnnounceEvent | None
    last_result: AnnounceResult | None
    last_error: TrackerError | None
    last_announce: float | None
    next_announce: float | None
    given_up: str | None = None
    last_paused: bool = False
    family: Family | None = None


class Announcer:
    """Keeps one torrent announced to one tracker while :meth:`run` runs.

    :meth:`run` announces ``started``, then again at the interval the tracker asks for,
    bounded to ``[min_interval, max_interval]`` (5 to 30 minutes by default: the floor is
    libtorrent's, so that a tracker answering ``interval`` 1 cannot make us announce every
    second, the cap bounds how stale our entry may go); ``completed`` once, when
    :meth:`mark_completed` is called or when a regular announce finds the download finished
    here (``left`` 0 and ``downloaded`` above 0, having started with ``left`` above 0); and
    ``stopped`` when cancelled, shielded and cut short after ``stopped_timeout`` seconds. Each
    announce reads ``progress()`` afresh. A tracker that fails (no answer within ``timeout``,
    an error message, a malformed reply, a name that does not resolve or only to addresses no
    datagram can go to, such as the ``0.0.0.0`` of a DNS blocklist, or such an address in its
    URL) is retried after ``retry_delay`` seconds, doubled after each failure in a row up to
    ``max_interval`` (15, 30, 60, 120, 240, 480, 960, then 1800 s by default; libtorrent waits
    5 * (1 + 2.5 n²) s after the n-th, 17.5, 55, 117.5, 205, 317.5 ... up to an hour: as
    fast for the first five, then slower, to a longer cap), and not before the ``interval``
    a refusal gave. A refusal with BEP 31's ``retry in`` is retried that many minutes later
    (at most :data:`MAX_RETRY_IN`, or ``max_interval`` if longer) or when the backoff says,
    whichever is later: ``retry in`` only ever lengthens the wait (libtorrent ignores it), so
    a tracker answering ``retry in: 0`` to every announce is backed off from as any failing
    tracker, not asked every ``retry_delay`` seconds; the refusal's ``interval`` then does
    not count. Neither :meth:`announce_now` nor :meth:`mark_completed` brings the tracker's
    minutes forward (the backoff beyond them gives way as after any failure);
    with ``retry in: never`` the announcer stops: it sends that tracker nothing more (no
    ``stopped``: it refused us), :attr:`AnnouncerStatus.given_up` says why, and :meth:`run`
    waits idle until cancelled. Failures are status (:attr:`status`, and DEBUG records on
    the ``bip_utracker.client`` logger), never exceptions. The peers of each answer go to the
    client's sink (a :class:`TrackerClient`'s), and to ``sink`` if one is given, except those
    of the ``stopped`` answer: we are leaving the swarm (they stay in :attr:`status`).

    While ``progress()`` says we are a partial seed (BEP 21), a regular announce says
    ``paused`` to a client that can send it (see :class:`AnnounceClient`). A UDP tracker
    hears ``none``, 0 on the wire: libtorrent puts 4 there, a value BEP 15 does not define,
    which strict UDP trackers drop or refuse. ``started``, ``completed`` and ``stopped`` go
    as they are: ``paused`` stands in for ``none`` only, after ``started`` was answered. That
    differs from libtorrent on purpose: it turns ``none`` into ``paused`` before deciding
    whether ``started`` is due, so its partial seed's first announce says ``paused`` and never
    ``started``; every tracker knows ``started``, and a tracker that knows no ``paused``
    would refuse that first announce. Such trackers exist (chihaya: "failed to provide valid
    client event"; bittorrent-tracker: "invalid event"; some private ones): when one refuses
    (:class:`TrackerRejectedError`, an HTTP tracker's ``failure reason``) an announce that
    said ``paused``, this announcer says ``none`` to it for as long as it lives, and announces
    again at once, whatever the backoff, the refusal's ``retry in`` or ``min_interval`` would
    say (once: the next refusal is a failure as any other). That refusal is no failure: it
    is not counted in ``failures`` (nor doubles a backoff), leaves ``last_error`` as it was
    and calls no ``on_update`` (the retry's outcome does). A timeout or a network error
    proves nothing of the event and changes nothing.

    Args:
        client: a running :class:`TrackerClient`, or any other :class:`AnnounceClient`.
        tracker: for a :class:`TrackerClient`, a ``udp://`` URL or any other
            :data:`TrackerTarget`; for another client, a URL it accepts (its
            :meth:`~AnnounceClient.check_tracker` decides).
        info_hash: the swarm to announce (see :meth:`TrackerClient.announce`: a hybrid's v1
            swarm; a second announcer with ``InfoHash(v2=...)`` joins its v2 swarm).
        peer_id: ours.
        port: our TCP listen port (0 if we accept no peers), or a function giving it at each
            announce (a port a NAT maps for us may change: libtorrent announces its listen
            socket's external port each time).
        progress: called before each announce for the bytes uploaded, downloaded and left,
            and whether we are a partial seed (an :class:`AnnounceProgress`).
        sink: also give the peers found here (source ``"tracker"``), but for ``stopped``.
        num_want: peers wanted per announce; -1 lets the tracker decide. ``stopped`` asks
            for none (0, as libtorrent): we are leaving.
        min_interval: seconds between regular announces at least, whatever interval the
            tracker asks for; None for :data:`DEFAULT_MIN_ANNOUNCE_INTERVAL` (300 s, as
            libtorrent), or ``max_interval`` if that is shorter.
        max_interval: seconds between regular announces at most; also the longest retry delay.
        announce_now_interval: seconds :meth:`announce_now` waits after the previous announce
            at least (the tracker's ``min interval``, if it gave a longer one).
        retry_delay: seconds before the first retry of a failed announce.
        timeout: seconds an announce may take before it counts as failed; None: no
            overall bound (for a client that bounds each request itself, such as an HTTP
            client whose requests may first wait for a slot of its own: that wait must not
            fail the tracker). A client that does not bound its requests then waits for an
            answer for as long as it takes, so give one a finite timeout.
        stopped_timeout: seconds the ``stopped`` announce may take (0: send none).
        on_update: called with the new :attr:`status` after each announce, answered or
            failed (``stopped`` included), as libtorrent posts its tracker alerts: to log or
            show it. It runs in :meth:`run`'s task and must not block.
        family: 4 or 6: announce in that IP version only (BEP 7: "an announce to the tracker
            should be made for each local IP address the client listens on"), to the
            tracker's addresses of it, from our address of it: run one announcer per family
            we listen on, each with its own state (interval, backoff, ``tracker id``,
            connection id), as libtorrent's ``announce_endpoint`` per listen socket. A name
            without an address of that family fails in this family only. None (the
            default): the tracker's first address of a family the client can reach. A
            client other than a :class:`TrackerClient` must opt in (see
            :class:`AnnounceClient`).
        prefer_family: with ``family`` None, 4 or 6: a :class:`TrackerClient` reaches a
            tracker name at its first address of that family, the other family's only when
            it has none (the one family a session listens in: the tracker must not hand out
            our address of the other, where nothing listens). Other clients ignore it.

    Raises:
        LocalProtocolError: a bad argument (a URL that is not ``udp://`` for a
            :class:`TrackerClient`, one the other client refuses, a bad port, a ``family``
            or ``prefer_family`` other than 4, 6 or None, or a ``family`` for a client that
            did not opt in...).
    """

    def __init__(
        self,
        client: TrackerClient | AnnounceClient,
        tracker: TrackerTarget,
        info_hash: InfoHash | bytes,
        *,
        peer_id: PeerId | bytes,
        port: int | Callable[[], int],
        progress: Callable[[], AnnounceProgress],
        sink: PeerSink | None = None,
        num_want: int = -1,
        min_interval: float | None = None,
        max_interval: float = DEFAULT_MAX_ANNOUNCE_INTERVAL,
        announce_now_interval: float = DEFAULT_ANNOUNCE_NOW_INTERVAL,
        retry_delay: float = DEFAULT_RETRY_DELAY,
        timeout: float | None = DEFAULT_ANNOUNCE_TIMEOUT,
        stopped_timeout: float = DEFAULT_STOPPED_TIMEOUT,
        on_update: Callable[[AnnouncerStatus], None] | None = None,
        family: Family | None = None,
        prefer_family: Family | None = None,
    ) -> None:
        # Checked here, not at the first announce: a bad URL is the caller's mistake, and
        # run() must not mistake it for a tracker failure to retry for ever.
        check_family(family)
        check_family(prefer_family)
        if not isinstance(client, TrackerClient):
            if not isinstance(client, AnnounceClient):
                raise LocalProtocolError(
                    f"client is a TrackerClient or an AnnounceClient, got {client!r:.80}"
                )
            if not isinstance(tracker, str):
                raise LocalProtocolError(f"a tracker URL is a str, got {tracker!r:.80}")
            client.check_tracker(tracker)  # the client knows its own URLs: passed as given
            if family is not None and getattr(client, "announces_family", False) is not True:
                raise LocalProtocolError(
                    f"a family is given to a client that announces in any family: {client!r:.80}"
                )
            self._label = tracker
        elif isinstance(tracker, str):
            self._label = tracker
            tracker = parse_tracker_url(tracker)
        elif isinstance(tracker, TrackerUrl | PeerAddress | tuple):
            self._label = str(tracker)
        else:
            raise LocalProtocolError(f"not a tracker address or udp:// URL: {tracker!r:.80}")
        # For logs and messages: a private tracker's passkey (in its query or its path) stays
        # out of them; with the family, as its announcer is one of two.
        self._shown = shown_url(self._label) + ("" if family is None else f" (IPv{family})")
        _swarm_id(info_hash)
        _peer_id_bytes(peer_id)
        if not callable(port):
            _check_port(port)
        if (
            isinstance(num_want, bool)
            or not isinstance(num_want, int)
            or num_want not in _NUM_WANT_RANGE
        ):
            raise LocalProtocolError(f"num_want is a 32-bit signed int, got {num_want!r}")
        if not callable(progress):
            raise LocalProtocolError(f"progress is a callable, got {progress!r:.80}")
        if on_update is not None and not callable(on_update):
            raise LocalProtocolError(f"on_update is a callable, got {on_update!r:.80}")
        self._max = seconds("max_interval", max_interval)
        if min_interval is None:
            # The default floor gives way to a shorter cap the caller chose: only an explicit
            # floor above the cap is a contradiction.
            self._min = min(DEFAULT_MIN_ANNOUNCE_INTERVAL, self._max)
        else:
            self._min = seconds("min_interval", min_interval)
            if self._min > self._max:
                raise LocalProtocolError(f"min_interval {min_interval} exceeds max_interval")
        self._announce_now_gap = seconds("announce_now_interval", announce_now_interval)
        self._retry = seconds("retry_delay", retry_delay)
        self._timeout = math.inf if timeout is None else seconds("timeout", timeout)
        self._stopped_timeout = seconds("stopped_timeout", stopped_timeout, zero=True)
        self._client: TrackerClient | AnnounceClient = client
        # BEP 21's "paused" goes to a client that opted in (read once), until its tracker
        # refuses it once: from then on None, and that tracker hears "none".
        self._pausing: _PausingClient | None = (
            client if not isinstance(client, TrackerClient) and _announces_paused(client) else None
        )
        self._tracker: TrackerTarget = tracker
        self._info_hash = info_hash
        self._peer_id = peer_id
        self._port = port
        self._progress = progress
        self._sink = sink
        self._num_want = num_want
        self._on_update = on_update
        self._family = family
        self._prefer_family = prefer_family
        # The state the status shows.
        self._running = False
        self._announcing = False
        self._announces = 0
        self._failures = 0
        self._started = False
        self._completed = False
        self._last_event: AnnounceEvent | None = None
        self._last_paused = False
        self._last_result: AnnounceResult | None = None
        self._last_error: TrackerError | None = None
        self._last_announce: float | None = None
        self._next: float | None = None
        self._given_up: str | None = None
        # The "min interval" of the tracker's last answer (0: none), bounding announce_now().
        self._tracker_min = 0.0
        # The earliest next try a tracker's BEP 31 "retry in" allows (None: no such hold).
        self._hold_until: float | None = None
        # What run() is asked to do sooner than planned.
        self._complete_pending = False
        self._left_at_start = 0
        self._last_attempt = -math.inf
        self._forced = False
        self._wake = trio.Event()

    # -- the API ------------------------------------------------------------------------------

    @property
    def status(self) -> AnnouncerStatus:
        """A snapshot of where the announcer stands."""
        return AnnouncerStatus(
            tracker=self._label,
            running=self._running,
            announcing=self._announcing,
            announces=self._announces,
            failures=self._failures,
            started=self._started,
            completed=self._completed,
            last_event=self._last_event,
            last_result=self._last_result,
            last_error=self._last_error,
            last_announce=self._last_announce,
            next_announce=self._next,
            given_up=self._given_up,
            last_paused=self._last_paused,
            family=self._family,
        )

    @property
    def stopped_timeout(self) -> float:
        """Seconds the ``stopped`` announce may take when :meth:`run` is cancelled (0: send
        none). Read as the run ends, so an owner may change it first: a client failing over
        from a tracker that stopped answering says nothing more to it (libtorrent neither),
        where a torrent leaving says ``stopped``.

        Raises:
            LocalProtocolError: (setting) not a finite number of seconds, 0 or more.
        """
        return self._stopped_timeout

    @stopped_timeout.setter
    def stopped_timeout(self, value: float) -> None:
        self._stopped_timeout = seconds("stopped_timeout", value, zero=True)

    def mark_completed(self) -> None:
        """The download finished here: announce ``completed`` now (once; a no-op after).

        Before ``started`` was answered, ``completed`` follows it. Do not call it for a
        torrent that was complete from the start: ``completed`` counts downloads.
        """
        if not self._completed and not self._complete_pending:
            self._complete_pending = True
            self._wake.set()

    def announce_now(self) -> None:
        """Announce at once (for more peers, say), or ``announce_now_interval`` seconds after
        the previous announce if that was more recent (or the ``min interval`` the tracker's
        last answer gave, if longer, up to ``max_interval``; an HTTP tracker's
        ``min_interval``): a tracker asked too often may refuse us. Not ``min_interval``: that
        floor bounds what the tracker may ask of us, this what we ask of it, as libtorrent's
        ``force_reannounce`` waits for the tracker's ``min interval`` only."""
        self._forced = True
        self._wake.set()

    async def run(self) -> None:
        """Announce until cancelled, then send ``stopped`` (see the class docstring).

        Raises:
            LocalProtocolError: already running, or the client closed under it (or another
                misuse the client reports).
        """
        if self._running:
            raise LocalProtocolError(f"the announcer of {self._shown} is already running")
        self._running = True
        # A new run is a new session for the tracker, even if our last "stopped" was lost.
        self._started = self._forced = False
        try:
            while self._given_up is None:
                await self._announce_once()
                if self._given_up is None:
                    await self._wait_until_due()
            # The tracker refused us for good (BEP 31 "never"): nothing more goes to it, but
            # run() keeps the shape its callers know: it ends when cancelled.
            await trio.sleep_forever()
        finally:
            self._next = None
            try:
                if self._started and self._given_up is None and self._stopped_timeout > 0:
                    with trio.CancelScope(shield=True):
                        await self._say_goodbye()
            finally:
                self._running = False

    # -- the machinery ------------------------------------------------------------------------

    def _event(self, progress: AnnounceProgress) -> AnnounceEvent:
        if not self._started:
            return AnnounceEvent.STARTED
        if not self._completed and not self._complete_pending:
            # Finished here since started (not a seed from the start, not data found whole).
            finished = progress.left == 0 and progress.downloaded > 0 and self._left_at_start > 0
            self._complete_pending = finished
        return AnnounceEvent.COMPLETED if self._complete_pending else AnnounceEvent.NONE

    def _paused(self, event: AnnounceEvent, progress: AnnounceProgress) -> bool:
        """Whether this announce says BEP 21's ``paused``: a regular one, of a partial seed, to
        a client that opted in, its tracker not having refused it. ``paused`` stands in for
        ``none`` only (after ``started``, unlike libtorrent: see :class:`Announcer`): the
        tracker must still hear that we start, finish or leave. ``progress`` was checked."""
        return (
            self._pausing is not None
            and event is AnnounceEvent.NONE
            and progress.partial_seed
            and progress.left > 0
        )

    async def _send(
        self, event: AnnounceEvent, progress: AnnounceProgress, *, paused: bool = False
    ) -> AnnounceResult:
        client = self._client
        announce: Callable[..., Awaitable[AnnounceResult]]
        if isinstance(client, TrackerClient):
            announce = functools.partial(
                client.announce,
                self._tracker,
                family=self._family,
                prefer_family=self._prefer_family,
            )
        else:  # another client gets the URL as given, which is the label
            # Only the keywords it opted in to (checked when built), and only when they say
            # something: the protocol's announce leaves them out, for the clients written
            # before them.
            keywords: dict[str, object] = {}
            if paused and self._pausing is not None:
                keywords["paused"] = True
            if self._family is not None:
                keywords["family"] = self._family
            method: Callable[..., Awaitable[AnnounceResult]] = client.announce
            announce = functools.partial(method, self._label, **keywords)
        result = await announce(
            self._info_hash,
            peer_id=self._peer_id,
            port=_check_port(self._port() if callable(self._port) else self._port),
            uploaded=progress.uploaded,
            downloaded=progress.downloaded,
            left=progress.left,
            event=event,
            # We are leaving: the peers of a "stopped" answer would be thrown away (libtorrent
            # asks for none then too), so the tracker need not pick and send them.
            num_want=0 if event is AnnounceEvent.STOPPED else self._num_want,
        )
        # The peers of a "stopped" answer would be dialled as we leave: wasted work. The result
        # still goes to the status whole.
        if self._sink is not None and result.peers and event is not AnnounceEvent.STOPPED:
            self._sink.discovered(self._info_hash, result.peers, "tracker")
        return result

    async def _announce_once(self) -> None:
        """One announce; plan the next one from its outcome."""
        # Checked before anything reads it: a caller's bad value is its mistake, told as one.
        progress = _checked_progress(self._progress())
        event = self._event(progress)
        paused = self._paused(event, progress)
        self._forced = False
        self._hold_until = None
        self._last_attempt = trio.current_time()
        self._announcing = True
        try:
            with trio.move_on_after(self._timeout) as scope:
                result = await self._send(event, progress, paused=paused)
            if scope.cancelled_caught:
                raise TrackerTimeoutError(f"no answer within {self._timeout:g} s")
        except LocalProtocolError:
            raise  # our caller's mistake, or the client closed: not the tracker's fault
        except TrackerError as error:
            wait: float | None
            if paused and isinstance(error, TrackerRejectedError):
                # The tracker's own refusal of an announce that said "paused": many know no
                # such event and refuse every one (chihaya, bittorrent-tracker), so saying it
                # again would keep us out of the swarm for good. "none" from now on, and at
                # once: what was refused may be the event only, whatever its "retry in" says.
                # Once: _paused() is false from now on, so the next refusal is an ordinary one.
                # Not a failure (no failures counted, no last_error, nobody told): we handle
                # it, and a count would double the backoff should the retry fail. The retry's
                # outcome is the news, at once.
                self._pausing = None
                _log.debug(
                    "announce to %s saying paused (BEP 21) refused: %s; saying none to it from"
                    " now on, at once",
                    self._shown,
                    error,
                )
                self._next = trio.current_time()
                return  # the finally above ends _announcing
            self._failures += 1
            self._last_error = error
            retry_in = _retry_in(error)
            if retry_in == "never":
                self._given_up = str(error) or type(error).__name__
                _log.debug(
                    "announce to %s refused for good (retry in: never): %s", self._shown, error
                )
                wait = None  # no next announce
            elif retry_in is not None:
                # The tracker's wait holds against announce_now() and completed; it only
                # lengthens our backoff, never cuts it short: a tracker answering "retry in:
                # 0" to every announce would otherwise be asked every retry_delay for ever.
                # It stands in for the refusal's interval (the tracker said when exactly).
                # Capped in whole minutes first: an int of minutes may be too large for a
                # float (10**400 raised OverflowError out of run()).
                most = max(MAX_RETRY_IN, self._max)
                hold = min(min(retry_in, math.ceil(most / 60.0)) * 60.0, most)
                self._hold_until = trio.current_time() + hold
                wait = max(hold, self._doubled_delay())
            else:
                wait = self._backoff(error)
            if wait is not None:
                _log.debug(
                    "announce to %s failed (%d in a row): %s; next try in %g s",
                    self._shown,
                    self._failures,
                    error,
                    wait,
                )
        else:
            now = trio.current_time()
            if event is AnnounceEvent.STARTED:
                self._started = True
                self._left_at_start = progress.left
            elif event is AnnounceEvent.COMPLETED:
                self._completed, self._complete_pending = True, False
            self._announces += 1
            self._failures = 0
            self._last_event, self._last_result, self._last_error = event, result, None
            self._last_paused = paused
            self._tracker_min = _tracker_min_interval(result, self._max)
            self._last_announce = now
            wait = min(max(float(result.interval), self._min), self._max)
        finally:
            self._announcing = False
        self._next = None if wait is None else trio.current_time() + wait
        self._updated()

    def _backoff(self, error: TrackerError) -> float:
        """The wait after a failure that did not say when to come back: the doubled delay
        (:meth:`_doubled_delay`); at least the ``interval`` the refusal gave, if it gave one
        (capped at ``max_interval``)."""
        wait = self._doubled_delay()
        interval = _int_attribute(error, "interval", least=1)
        if interval is not None:
            wait = max(wait, min(float(interval), self._max))
        return wait

    def _doubled_delay(self) -> float:
        """``retry_delay`` doubled per failure in a row after the first, capped at
        ``max_interval``."""
        doublings = min(self._failures - 1, _MAX_DOUBLINGS)
        return min(self._retry * 2.0**doublings, self._max)

    def _updated(self) -> None:
        if self._on_update is not None:
            self._on_update(self.status)

    def _due(self) -> float:
        """When the next announce should go, given what was asked of us meanwhile."""
        assert self._next is not None
        due = self._next
        if self._started and self._complete_pending and not self._failures:
            due = min(due, trio.current_time())  # but a failed one waits out its backoff
        if self._forced:
            least = max(self._announce_now_gap, self._tracker_min)
            due = min(due, max(trio.current_time(), self._last_attempt + least))
        if self._hold_until is not None:  # the tracker said when: nothing brings it forward
            due = max(due, self._hold_until)
        return due

    async def _wait_until_due(self) -> None:
        while (due := self._due()) > trio.current_time():
            self._wake = trio.Event()
            with trio.move_on_at(due):
                await self._wake.wait()

    async def _say_goodbye(self) -> None:
        """The ``stopped`` announce, within ``stopped_timeout``; failures only logged."""
        with trio.move_on_after(self._stopped_timeout) as scope:
            try:
                result = await self._send(
                    AnnounceEvent.STOPPED, _checked_progress(self._progress())
                )
            except TrackerError as error:  # the client may have closed: nothing to tell
                _log.debug("stopped announce to %s failed: %s", self._shown, error)
                self._last_error = error
            else:
                self._started = self._last_paused = False
                self._announces += 1
                self._last_event, self._last_result, self._last_error = (
                    AnnounceEvent.STOPPED,
                    result,
                    None,
                )
                self._last_announce = trio.current_time()
        if scope.cancelled_caught:
            _log.debug(
                "stopped announce to %s unanswered after %g s", self._shown, self._stopped_timeout
            )
            self._last_error = TrackerTimeoutError(
                f"no answer to stopped within {self._stopped_timeout:g} s"
            )
        self._updated()


class _PausingClient(AnnounceClient, Protocol):
    """An :class:`AnnounceClient` that opted in to BEP 21's ``paused`` (its
    ``announces_paused`` is ``True``): its :meth:`announce` takes the keyword."""

    async def announce(
        self,
        tracker: str,
        info_hash: InfoHash | bytes,
        *,
        peer_id: PeerId | bytes,
        port: int,
        uploaded: int,
        downloaded: int,
        left: int,
        event: AnnounceEvent,
        num_want: int,
        paused: bool = False,
    ) -> AnnounceResult:
        """Announce as :meth:`AnnounceClient.announce`; ``paused``: say BEP 21's ``paused``
        for a regular announce."""
        ...


def _announces_paused(client: AnnounceClient) -> TypeGuard[_PausingClient]:
    """Whether ``client`` opted in to BEP 21's ``paused`` (see :class:`AnnounceClient`): its
    ``announces_paused`` is ``True`` itself. Not read from ``announce``'s signature: a
    wrapper forwarding ``**kwargs`` would hide the keyword, and an unrelated ``paused``
    would pass for it."""
    return getattr(client, "announces_paused", False) is True


def _checked_progress(progress: object) -> AnnounceProgress:
    """``progress`` if it is an :class:`AnnounceProgress` of non-negative int counts and a
    bool ``partial_seed``.

    Raises:
        LocalProtocolError: it is not.
    """
    if not isinstance(progress, AnnounceProgress):
        raise LocalProtocolError(f"progress() gives an AnnounceProgress, got {progress!r:.80}")
    for name in ("uploaded", "downloaded", "left"):
        value = getattr(progress, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise LocalProtocolError(f"progress {name} is an int of 0 or more, got {value!r:.40}")
    if not isinstance(progress.partial_seed, bool):
        raise LocalProtocolError(
            f"progress partial_seed is a bool, got {progress.partial_seed!r:.40}"
        )
    return progress


def _retry_in(error: TrackerError) -> int | Literal["never"] | None:
    """BEP 31's ``retry in`` an error carries (see :class:`AnnounceClient`): minutes, 0 or
    more, or ``"never"``; None if it carries none, or something else there."""
    if getattr(error, "retry_in", None) == "never":
        return "never"
    return _int_attribute(error, "retry_in", least=0)


def _tracker_min_interval(result: AnnounceResult, most: float) -> float:
    """The ``min interval`` an answer gave (an HTTP one's ``min_interval``), capped at
    ``most``; 0 when it gave none."""
    value = _int_attribute(result, "min_interval", least=1)
    return 0.0 if value is None else min(float(value), most)


def _int_attribute(source: object, name: str, *, least: int) -> int | None:
    """``source.name`` if it is an int (not a bool) of at least ``least``; None otherwise
    (the attributes an HTTP tracker's answers and refusals carry and a UDP one's lack)."""
    value = getattr(source, name, None)
    if isinstance(value, int) and not isinstance(value, bool) and value >= least:
        return value
    return None


def _check_port(port: object) -> int:
    """``port`` if it is a TCP port number (0: none).

    Raises:
        LocalProtocolError: it is not an int in 0..65535.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise LocalProtocolError(f"a port is 0..65535, got {port!r}")
    return port
