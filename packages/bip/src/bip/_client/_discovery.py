"""Where a torrent's peers come from: the user, trackers, and any other source (the DHT).

Every source is a :class:`PeerSource`: a long-running task, started once per torrent, that
pushes the addresses it finds into a bip_handshake :class:`~bip_handshake.PeerSink` (the
session's :class:`~bip._client.Connector`, which keeps them in the torrent's peer list and
dials the best of them while there is room). PEX needs no task: it is a bip_peer service that
feeds the same sink. The sources here:

- :class:`UserPeers`: the ``--peer`` addresses and a magnet link's ``x.pe``, offered again
  every so often (a peer may not have been ready, or may have gone away);
- :class:`TrackerAnnouncer`: BEP 15 UDP trackers and BEP 3 HTTP(S) trackers
  (:class:`HttpTrackerClient`), both through bip_utracker's :class:`~bip_utracker.Announcer`
  (started, regular, completed and stopped announces; a finished partial download's regular
  announces say ``paused`` to HTTP trackers, BEP 21); a hybrid torrent is announced in both
  its v1 and its v2 swarm (BEP 52), and in each address family the session reaches trackers
  in (BEP 7); peers an HTTP tracker names by DNS name are resolved in
  the background, a few at a time, after its numeric peers went to the sink; the address an
  HTTP tracker says it sees us at (BEP 24) is passed on as a vote for our external address;
- a DHT: any object with ``keep_finding`` as bip_dht's ``open_dht`` returns plugs in
  through :class:`DhtPeers`;
- Local Service Discovery (BEP 14): :class:`LsdPeers` announces a torrent's swarms on the
  session's :class:`~bip_handshake.LocalServiceDiscovery` (the peers it hears go straight to
  the sink, from the session).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Final, NoReturn, Protocol
from urllib.parse import urlsplit

import trio

from bip_dht import DHTError
from bip_handshake import Family, IPFilter, LocalServiceDiscovery, PeerAddress, PeerId, PeerSink
from bip_metainfo import InfoHash
from bip_utracker import (
    DEFAULT_MAX_ANNOUNCE_INTERVAL,
    DEFAULT_MIN_ANNOUNCE_INTERVAL,
    AnnounceEvent,
    AnnounceProgress,
    Announcer,
    AnnouncerStatus,
    TrackerClient,
)
from bip_utracker import LocalProtocolError as UtrackerLocalProtocolError
from bip_utracker import TrackerError as UtrackerError

__all__ = [
    "TRACKER_MAX_INTERVAL",
    "TRACKER_MIN_INTERVAL",
    "DhtLike",
    "DhtPeers",
    "DiscoveryTarget",
    "LsdPeers",
    "PeerSource",
    "TrackerAnnouncer",
    "UserPeers",
]

from ._config import DEFAULT_DHT_INTERVAL, check_tracker_min_interval
from ._http_tracker import (
    HttpAnnounceResult,
    HttpTrackerClient,
    resolve_peer_names,
)
from ._http_tracker_codec import PeerName, shown_url

logger = logging.getLogger("bip.client")

TRACKER_MIN_INTERVAL: Final = DEFAULT_MIN_ANNOUNCE_INTERVAL
"""Seconds between two regular announces to a tracker at least, whatever interval it asks for:
300, libtorrent's ``min_announce_interval`` (a tracker answering ``interval`` 1 is asked every
5 minutes, not every second)."""
TRACKER_MAX_INTERVAL: Final = DEFAULT_MAX_ANNOUNCE_INTERVAL
"""Seconds between two announces to a tracker at most (a tracker asking for more is capped)."""
_TRACKER_RETRY: Final = 15.0  # first wait after a failed announce, doubled up to the max
_ANNOUNCE_TIMEOUT: Final = 60.0  # bip_utracker retransmits for hours (BEP 15): cut it short
# An HTTP announce may wait for a slot of the session's HttpTrackerClient (its requests in
# flight are bounded) for as long as the queue ahead of it takes: its own torrent's other
# announces (slots go round-robin between swarms), each at most the client's timeout, which
# counts from when the slot is held and is what fails a silent tracker. So the Announcer
# puts no bound of its own on an HTTP announce (timeout None): the queue never fails a
# tracker (its wait grows with the torrent's tracker count, 1800 s for 3000 silent ones and
# 50 slots).
_STOPPED_TIMEOUT: Final = 2.0  # the goodbye announce must not hold up an exit
# Answers whose peer names wait for the resolver at most; one more is dropped (at DEBUG): the
# tracker names them again at its next announce.
_NAME_BATCHES: Final = 8

_NameBatch = tuple[bytes, tuple[PeerName, ...]]
# A tracker's announcer in one swarm and family, the same from one run to the next.
_Place = tuple[str, bytes, Family | None]


class DiscoveryTarget(Protocol):
    """What a peer source knows of the torrent it finds peers for."""

    @property
    def info_hash(self) -> InfoHash:
        """The torrent (every hash known so far: a magnet's may gain its v2 half)."""
        ...

    @property
    def listen_port(self) -> int:
        """Our TCP port to announce (0 when we do not listen), read at each announce: the
        external port a NAT-PMP gateway maps may change while the torrent runs."""
        ...

    def transfer(self) -> tuple[int, int, int]:
        """``(uploaded, downloaded, left)`` payload bytes, for trackers; ``left`` counts the
        whole torrent whatever the selection, and 0 means a seed (every piece verified)."""
        ...

    @property
    def completed(self) -> trio.Event:
        """Set once every selected piece is verified."""
        ...

    @property
    def seeded(self) -> trio.Event:
        """Set once every piece of the torrent is verified (``left`` 0), whatever the
        selection. Never cleared: a new unset event replaces it when a piece goes missing
        again (read the attribute anew rather than keep the event)."""
        ...

    @property
    def ready(self) -> trio.Event:
        """Set once the data on disk is checked, or at once while the metadata is unknown."""
        ...

    @property
    def private(self) -> bool:
        """Whether the torrent is private (BEP 27: trackers only, no DHT)."""
        ...


class PeerSource(Protocol):
    """A discovery source: runs for one torrent until cancelled, feeding ``sink``."""

    async def run(self, target: DiscoveryTarget, sink: PeerSink) -> None:
        """Find peers of ``target`` and give them to ``sink`` (``sink.discovered``), forever."""
        ...


class UserPeers:
    """The peers the user named, offered to the sink every ``interval`` seconds.

    Args:
        peers: the addresses.
        interval: seconds between offers. Each offer clears the peer's failures and backoff
            in the peer list (the user asked for it): one not connected is dialled again.
    """

    def __init__(self, peers: Sequence[PeerAddress], *, interval: float) -> None:
        self.peers = tuple(peers)
        self.interval = interval

    async def run(self, target: DiscoveryTarget, sink: PeerSink) -> None:
        """Offer the peers now and then again, forever."""
        if not self.peers:
            return
        while True:
            sink.discovered(target.info_hash, self.peers, "user")
            await trio.sleep(self.interval)


class TrackerAnnouncer:
    """Announces a torrent to UDP (BEP 15) and HTTP(S) (BEP 3) trackers, in each of its swarms
    and each address family.

    One bip_utracker :class:`~bip_utracker.Announcer` per tracker, swarm and family does the
    work (started, regular, completed and stopped announces, retries), whatever the transport;
    this adds what the engine knows: when to start (once the data is checked), when a download
    here made the torrent a seed (``completed``, once: when every piece is verified, not when
    a partial selection finished, as libtorrent), whether it is a partial seed (its selection
    complete, a piece still missing: BEP 21's ``paused`` in an HTTP tracker's regular
    announces; a UDP tracker hears ``none``, BEP 15 having no such event), which tracker of
    each tier to announce to (BEP 12, below), and an INFO record per failure. ``udp://``
    URLs go to ``client``, ``http://`` and ``https://`` ones to ``http_client``; trackers of
    other schemes (``wss://``...), or of a scheme whose client is missing, are skipped with a
    warning. The peers an HTTP tracker names by DNS name go to the sink once resolved
    (:func:`resolve_peer_names`): one answer's names at a time, a few lookups at once, each cut
    short after a few seconds; the numeric peers of the same answer went to the sink already.
    A tracker that fails is retried by its announcer with backoff; an announcer that fails in
    a way no tracker should make it (a bug, a misuse of the library) ends alone, logged at
    ERROR with its traceback and shown in :meth:`status` (``given_up``), never taking the
    torrent, its other trackers or the session with it.

    BEP 12 tiers: each tier is shuffled once (when built), and one tracker of it is announced
    to at a time, the first in its order; a tracker that fails (every family's last announce
    failed, given up, or ended on an error) hands over to the next one of its tier that its
    backoff lets try, at once and without a ``stopped`` to it (as libtorrent), and is tried
    again when its turn comes and its backoff ran out; a tracker that answers moves to the
    front of its tier. Alternates of one tier are never
    announced to together, as libtorrent with ``announce_to_all_trackers`` off. Every tier is
    announced to at once (libtorrent's ``announce_to_all_tiers``, which libtorrent leaves
    off: it announces to the first tier that works alone): a torrent's tiers are more often
    separate trackers than backups. ``completed`` goes to the trackers announced to when the
    download finishes; one that never heard ``started`` from us is not told (nor does a
    tracker taking over learn it: it hears ``started`` with nothing left). A tracker told
    that has not answered it yet when the torrent stops announcing (a pause, a queue's
    hold) still owes it, as libtorrent's per-tracker ``complete_sent``: it hears
    ``started`` then ``completed`` when :meth:`run` runs again (a resume; not after a
    restart of the session: that is not kept, as libtorrent keeps it in no resume data),
    once the torrent is a seed: at once if it still is, else when it is again (a file
    selected or a piece found missing meanwhile), as libtorrent sends it only for a seed.

    BEP 7: "an announce to the tracker should be made for each local IP address the client
    listens on". With ``families`` of both IP versions (by default those of ``client``'s
    sockets, which the session binds from its listen addresses), each tracker and swarm has
    an announcer per family, each with its own state (interval, backoff, ``tracker id``,
    connection id), as libtorrent's ``announce_endpoint`` per listen socket: it reaches the
    tracker at its addresses of that family only, from our address of it, and its peers go to
    the same sink. A family the tracker has no address of fails in that family alone: its
    status says so (:attr:`~bip_utracker.AnnouncerStatus.family`), and the tracker is logged
    as failing (INFO) only once every family failed its last announce (each family's reason
    given), other failures at DEBUG: a tracker working in one family is working. Only the
    families the tracker's client can reach it in count (a ``tracker_bind`` of one family
    reaches no tracker in the other), and a tracker named by an IP address is announced to
    in its own family alone: an announcer that can never succeed is not made. One family
    announces once per tracker and swarm (the status's ``family`` None), to the tracker's
    first address of that family, the other family's only when it has none (for a UDP
    tracker: the HTTP client connects to the first address that answers): a session
    listening in IPv4 alone must not be listed at its IPv6 address, where nothing listens,
    as libtorrent announces from its listen sockets only. A client that reaches trackers
    through a proxy (its relay's family; an HTTP client with a ``proxy``) announces once,
    to the tracker's first address.

    Args:
        client: the session's UDP tracker client.
        urls: the torrent's tracker tiers (BEP 12): each a sequence of URLs, or one URL
            (a tier of its own). A URL is kept in its first tier only.
        peer_id: ours.
        http_client: the session's HTTP tracker client (None: HTTP trackers are skipped).
        on_external_ip: called with our address as an HTTP tracker saw it (its BEP 24
            ``external ip``) and the tracker's address, at each answer that says it; must
            not block.
        min_interval: seconds between two regular announces to one tracker at least, whatever
            interval it asks for (:data:`TRACKER_MIN_INTERVAL` by default; a test against a
            tracker of short intervals passes less). At most :data:`TRACKER_MAX_INTERVAL`.
        resolve_peer_names: look up the peers HTTP trackers name by host name (the
            default); False drops them, with one warning (then DEBUG records): peers are
            dialled through a proxy that resolves names (``socks5h://``), and our own
            resolver must not hear of them.
        families: the IP versions (4, 6) to announce in, one announcer each when there are
            two: the families the session listens in (those the tracker's client cannot
            reach it in left out). None: those of ``client``'s sockets (none through its
            proxy). Each announce tells the tracker ``target.listen_port``.
        rng: shuffles the tiers (default: an unpredictable one).

    Raises:
        ValueError: ``min_interval`` is not a number of seconds in
            ``(0, TRACKER_MAX_INTERVAL]``, ``families`` holds something other than 4
            and 6, or a URL is not a str.
    """

    def __init__(
        self,
        client: TrackerClient,
        urls: Sequence[str | Sequence[str]],
        *,
        peer_id: PeerId,
        http_client: HttpTrackerClient | None = None,
        on_external_ip: Callable[[IPv4Address | IPv6Address, PeerAddress], None] | None = None,
        min_interval: float = TRACKER_MIN_INTERVAL,
        resolve_peer_names: bool = True,
        families: Iterable[Family] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        # Checked now, not when the first Announcer is built after the torrent's check: a bad
        # setting is the caller's mistake, not one tracker's to skip.
        self.min_interval = check_tracker_min_interval("min_interval", min_interval)
        self.families: frozenset[Family] | None = None
        if families is not None:
            chosen = tuple(families)
            if any(isinstance(f, bool) or f not in (4, 6) for f in chosen):
                raise ValueError(f"families are 4 and 6, got {chosen!r:.80}")
            self.families = frozenset(chosen)
        self.client = client
        self.http_client = http_client
        self.on_external_ip = on_external_ip
        self.peer_id = peer_id
        given = _tiers_of(urls)
        self.urls: tuple[str, ...] = tuple(url for tier in given for url in tier)
        # BEP 12: "URLs within each tier will be processed in a randomly chosen order", once.
        shuffler = rng if rng is not None else random.Random()
        for tier in given:
            shuffler.shuffle(tier)
        self._tiers = given
        self.resolve_peer_names = resolve_peer_names
        self._names_dropped = False
        self._announcers: list[Announcer] = []
        # The announcers that ended on an error of their own, and why (see _run_alone).
        self._broken: dict[Announcer, UtrackerError] = {}
        # Each announcer of this run's tracker, swarm and family, which outlive the run; and
        # those told "completed" that did not answer it yet (libtorrent's complete_sent
        # unset): a pause must not lose it, the next run tells them again.
        self._places: dict[Announcer, _Place] = {}
        self._completed_owed: set[_Place] = set()

    @property
    def tiers(self) -> tuple[tuple[str, ...], ...]:
        """The tiers in the order their trackers are tried: the first of each is the one
        announced to (once running, the trackers that cannot be used are left out)."""
        return tuple(tuple(tier) for tier in self._tiers)

    def status(self) -> tuple[AnnouncerStatus, ...]:
        """Where each tracker, swarm and family stands (empty until the announces start;
        ``family`` None when one announcer serves every family); an announcer that ended on
        an error of its own says so in ``given_up`` and ``last_error``. A tracker is
        working when one of its families is."""
        return tuple(self._status_of(announcer) for announcer in self._announcers)

    def _status_of(self, announcer: Announcer) -> AnnouncerStatus:
        status = announcer.status
        error = self._broken.get(announcer)
        if error is None:
            return status
        return dataclasses.replace(status, given_up=f"stopped: {error}", last_error=error)

    async def run(self, target: DiscoveryTarget, sink: PeerSink) -> None:
        """Announce to one usable tracker of each tier in every swarm of the torrent,
        forever."""
        usable = [url for url in self.urls if self._client_for(url) is not None]
        skipped = [url for url in self.urls if url not in usable]
        if skipped:
            shown = shown_url(skipped[0])  # a passkey (the query) stays out of logs
            supported = "udp://, http:// and https://" if self.http_client else "udp://"
            logger.warning(
                "skipping %s: only %s trackers are supported",
                shown if len(skipped) == 1 else f"{len(skipped)} trackers ({shown}, ...)",
                supported,
            )
        # Trackers hear of us once we know what we have (libtorrent also announces after the
        # check), or at once for a magnet link: it needs peers for its metadata.
        await target.ready.wait()
        # A seed from the start (every piece verified) never announces "completed".
        seed = target.transfer()[2] == 0
        self._announcers = []
        self._broken = {}
        self._places = {}
        names_in, names_out = trio.open_memory_channel[_NameBatch](_NAME_BATCHES)

        def updated(status: AnnouncerStatus, families: Sequence[Announcer]) -> None:
            _log_failure(status, families)
            if self.resolve_peer_names:
                _queue_names(status, names_in)
            else:
                self._drop_names(status)
            self._external_ip(status)

        # The swarm id, not the InfoHash: a hybrid's v2 swarm is announced (and its peers
        # dialled) with the truncated v2 hash. Each tier runs once per swarm.
        swarm_ids = target.info_hash.swarm_ids()
        runs: list[tuple[list[str], dict[str, _Entry]]] = []
        built: dict[tuple[str, bytes], _Entry] = {}
        kept = set(usable)
        for order in self._tiers:
            order[:] = [url for url in order if url in kept]
            entries: dict[bytes, dict[str, _Entry]] = {swarm_id: {} for swarm_id in swarm_ids}
            for url in list(order):
                try:
                    for swarm_id in swarm_ids:
                        entries[swarm_id][url] = self._entry(
                            url, swarm_id, target=target, sink=sink, updated=updated, order=order
                        )
                except UtrackerLocalProtocolError as error:  # a malformed URL
                    logger.warning("skipping tracker %s: %s", shown_url(url), error)
                    order.remove(url)
                    kept.discard(url)
                    for of_swarm in entries.values():
                        of_swarm.pop(url, None)
            runs.extend((order, of_swarm) for of_swarm in entries.values() if of_swarm)
            built.update(
                ((url, swarm_id), entry)
                for swarm_id, of_swarm in entries.items()
                for url, entry in of_swarm.items()
            )
        # The statuses in the order the URLs were given, whatever the shuffle.
        self._announcers = [
            announcer
            for url in self.urls
            if url in kept
            for swarm_id in swarm_ids
            for announcer in built[url, swarm_id].announcers
        ]
        if not self._announcers:
            return
        # Owed from an earlier run: told again once a seed (at once if one now), after
        # "started", as libtorrent's complete_sent; a torrent no longer whole (files
        # selected again, a recheck that found data missing) tells them at its completion.
        owed = [a for a in self._announcers if self._places[a] in self._completed_owed]
        if seed:
            for announcer in owed:
                announcer.mark_completed()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_resolve_names, names_out, sink)
            for order, of_swarm in runs:
                nursery.start_soon(self._run_tier, order, of_swarm)
            if not seed:
                await self._until_seed(target)
                for announcer in owed:
                    announcer.mark_completed()
                # "completed" is for a download that finished here, not for data a magnet
                # link's check found whole; and for the trackers that heard "started" (an
                # announcer running now): a tier's alternate taking over later hears
                # "started" with nothing left, as libtorrent's (its complete_sent needs
                # start_sent).
                if target.transfer()[1] > 0:
                    for announcer in self._announcers:
                        status = announcer.status
                        if status.running and not status.completed:
                            self._completed_owed.add(self._places[announcer])
                            announcer.mark_completed()

    def _entry(
        self,
        url: str,
        swarm_id: bytes,
        *,
        target: DiscoveryTarget,
        sink: PeerSink,
        updated: Callable[[AnnouncerStatus, Sequence[Announcer]], None],
        order: list[str],
    ) -> _Entry:
        """The tracker ``url`` in one swarm, in its tier ``order``: an announcer per family
        (BEP 7), each told of the others' state to decide whether the tracker as a whole
        fails.

        Raises:
            UtrackerLocalProtocolError: a malformed URL.
        """
        entry = _Entry(url, order)

        def on_update(status: AnnouncerStatus) -> None:
            if status.completed:  # answered: owed no more (a family's own)
                self._completed_owed.discard((url, swarm_id, status.family))
            updated(status, entry.announcers)
            entry.updated(status)

        for family in self._families_of(url):
            announcer = self._announcer(url, swarm_id, target, sink, on_update, family=family)
            entry.announcers.append(announcer)
            self._places[announcer] = (url, swarm_id, family)
        return entry

    async def _run_tier(self, order: list[str], entries: dict[str, _Entry]) -> None:
        """Announce to one tracker of a tier (``entries``, one swarm's, tried in ``order``)
        at a time, forever: the first that may be tried, until it fails; then the next."""
        if len(entries) == 1:  # no alternate: its announcers' own backoff is all there is
            [entry] = entries.values()
            await self._run_entry(entry)
            return
        while True:
            entry = await _next_of_tier(order, entries)
            entry.restart()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._run_entry, entry)
                await entry.failed.wait()
                # Read before the cancel: a stopped announcer has no next announce.
                entry.retry_at = entry.next_try()
                entry.say_goodbye(False)
                nursery.cancel_scope.cancel()

    async def _run_entry(self, entry: _Entry) -> None:
        """Run a tracker's announcers (one per family) until cancelled; should each end on
        an error of its own, the tracker fails for good."""
        async with trio.open_nursery() as nursery:
            for announcer in entry.announcers:
                nursery.start_soon(self._run_alone, announcer)
        entry.failed.set()

    async def _run_alone(self, announcer: Announcer) -> None:
        """Run one announcer; an error out of it ends it alone.

        A tracker's failures never come out of :meth:`Announcer.run` (they are its status,
        retried with backoff); what does is a misuse (a ``LocalProtocolError``) or a bug. Either
        is ours, not the tracker's: it is logged loudly, with its traceback, and shown in
        :meth:`status`, but it must not end the torrent's other trackers, the torrent and the
        session with it (one hostile tracker URL would then stop every download).
        """
        try:
            await announcer.run()
        except Exception as error:  # logged with its traceback below, not swallowed
            shown = shown_url(announcer.status.tracker)
            logger.error("announcing to %s stopped: %r", shown, error, exc_info=error)
            self._broken[announcer] = (
                error
                if isinstance(error, UtrackerError)
                else UtrackerError(f"{type(error).__name__}: {error}")
            )

    @staticmethod
    async def _until_seed(target: DiscoveryTarget) -> None:
        """Return once every piece is verified (``left`` 0), as libtorrent's finished()
        calls completed() only ``if (is_seed())``: a finished partial download is no snatch
        to a tracker, and one that goes on to every file is, once. Waits on the target's
        ``seeded`` event, whatever made it a seed (a download, a recheck, a move's check);
        no polling: thousands of finished partial downloads must not wake every second."""
        # Read anew each time: a piece lost between the set and our waking replaces the event.
        while not target.seeded.is_set():
            await target.seeded.wait()

    def _drop_names(self, status: AnnouncerStatus) -> None:
        """Drop a fresh HTTP answer's peer names, unresolved: the first time with a warning
        (not those of ``stopped``, which would not be looked up either)."""
        if status.last_event is AnnounceEvent.STOPPED:
            return
        result = _fresh_http_answer(status)
        if result is None or not result.peer_names:
            return
        level = logging.DEBUG if self._names_dropped else logging.WARNING
        self._names_dropped = True
        logger.log(
            level,
            "%d peers named by host name from %s dropped: peers are dialled through a proxy "
            "that resolves names, and a lookup here would tell our resolver",
            len(result.peer_names),
            shown_url(status.tracker),
        )

    def _external_ip(self, status: AnnouncerStatus) -> None:
        """A fresh HTTP answer's BEP 24 ``external ip``, to ``on_external_ip``."""
        if self.on_external_ip is None:
            return
        result = _fresh_http_answer(status)
        if result is not None and result.external_ip is not None:
            self.on_external_ip(result.external_ip, result.tracker)

    def _families_of(self, url: str) -> tuple[Family | None, ...]:
        """The families ``url`` is announced in, one announcer each: both IP versions when
        the session listens in both, the tracker's client can reach it in both (a socket,
        an HTTP local address of each: a ``tracker_bind`` of one family reaches no tracker
        in the other, and an announcer there would fail for ever, as libtorrent disables
        an endpoint on ``address_family_not_supported``) and it is reached directly, else
        ``(None,)`` (one announcer, :meth:`_preferred_family` first). A tracker named by an
        IP address has one announcer: of its family when there are two."""
        families = self._usable_families(url)
        if families is None or len(families) < 2:
            return (None,)
        literal = _literal_family(url)
        if literal is not None:
            return (literal,) if literal in families else (None,)
        return tuple(sorted(families))

    def _preferred_family(self, url: str) -> Family | None:
        """The family a single announcer to ``url`` reaches a tracker name in first: the one
        the session listens in, when the client can reach it (else the tracker would hand
        out our address of the other family, where nothing listens, as libtorrent announces
        from its listen sockets only); the other family only when the name has none."""
        families = self._usable_families(url)
        if families is None or len(families) != 1:
            return None
        [family] = families
        return family

    def _usable_families(self, url: str) -> frozenset[Family] | None:
        """The families ``url`` may be announced in: those the session listens in that its
        client reaches trackers in directly; None through a proxy (or without a client)."""
        client = self._client_for(url)
        if client is None or client.proxy is not None:
            return None
        if isinstance(client, TrackerClient):
            reached = frozenset(address.family for address in client.local_addresses)
        else:
            reached = frozenset(f for f in (4, 6) if f in client.families)
        return reached if self.families is None else reached & self.families

    def _client_for(self, url: str) -> TrackerClient | HttpTrackerClient | None:
        """The client that announces to ``url``, by its scheme; None for no client."""
        scheme = url.partition("://")[0].lower()
        if scheme == "udp":
            return self.client
        if scheme in ("http", "https"):
            return self.http_client
        return None

    def _announcer(
        self,
        url: str,
        swarm_id: bytes,
        target: DiscoveryTarget,
        sink: PeerSink,
        on_update: Callable[[AnnouncerStatus], None],
        *,
        family: Family | None = None,
    ) -> Announcer:
        def progress() -> AnnounceProgress:
            uploaded, downloaded, left = target.transfer()
            # BEP 21's partial seed, libtorrent's is_finished() && !is_seed(): the same
            # ``completed`` the peers' upload_only comes from (Torrent.says_upload_only, which
            # also hides it while super-seeding: a pose for peers, nothing to a tracker).
            partial_seed = left > 0 and target.completed.is_set()
            return AnnounceProgress(
                uploaded=uploaded, downloaded=downloaded, left=left, partial_seed=partial_seed
            )

        client = self._client_for(url)
        assert client is not None  # run() keeps only the URLs with a client
        return Announcer(
            client,
            url,
            swarm_id,
            peer_id=self.peer_id,
            # Read at each announce: a port NAT-PMP maps for us may come, or change.
            port=lambda: target.listen_port,
            progress=progress,
            sink=sink,
            min_interval=self.min_interval,
            max_interval=TRACKER_MAX_INTERVAL,
            retry_delay=_TRACKER_RETRY,
            timeout=_ANNOUNCE_TIMEOUT if client is self.client else None,
            stopped_timeout=_STOPPED_TIMEOUT,
            on_update=on_update,
            family=family,
            prefer_family=self._preferred_family(url) if family is None else None,
        )


def _literal_family(url: str) -> Family | None:
    """The family of ``url``'s host when it is an IP address (None: a name, or no URL
    we can read; the announcer's own parsing tells of a malformed one)."""
    try:
        host = urlsplit(url).hostname
        address = None if host is None else ip_address(host)
    except ValueError:
        return None
    if address is None:
        return None
    # A mapped IPv6 address is the IPv4 tracker it names (the clients send to it so).
    return 4 if address.version == 4 or getattr(address, "ipv4_mapped", None) else 6


def _tiers_of(urls: Sequence[str | Sequence[str]]) -> list[list[str]]:
    """The tiers of ``urls`` (a str is a tier of its own), each URL in its first tier only,
    empty tiers left out.

    >>> _tiers_of(["udp://a:1", ["http://b/announce", "udp://a:1", "udp://c:1"], []])
    [['udp://a:1'], ['http://b/announce', 'udp://c:1']]

    Raises:
        ValueError: a URL is not a str (nor a tier a sequence of them).
    """
    seen: set[str] = set()
    tiers: list[list[str]] = []
    for item in urls:
        # Anything but a str or a sequence (bytes: of ints) is a URL that is not a str.
        is_tier = isinstance(item, Sequence) and not isinstance(item, bytes | bytearray)
        tier: list[object] = [item] if isinstance(item, str) or not is_tier else list(item)
        urls_of_tier = [url for url in tier if isinstance(url, str)]
        if len(urls_of_tier) != len(tier):
            raise ValueError(f"a tracker URL is a str, got {item!r:.80}")
        kept = [url for url in dict.fromkeys(urls_of_tier) if url not in seen]
        seen.update(kept)
        if kept:
            tiers.append(kept)
    return tiers


class _Entry:
    """One tracker of a tier, in one swarm: its announcers (one per family), and when its
    tier may try it again after it failed."""

    __slots__ = ("announcers", "failed", "order", "outcomes", "retry_at", "url")

    def __init__(self, url: str, order: list[str]) -> None:
        self.url = url
        self.order = order  # the tier's URLs, the one to try first in front (shared)
        self.announcers: list[Announcer] = []
        self.retry_at = -math.inf
        self.failed = trio.Event()
        # Whether each family's last announce of this run was answered (by its family).
        self.outcomes: dict[Family | None, bool] = {}

    def restart(self) -> None:
        """A new turn of the tracker in its tier: nothing heard of it yet (and ``stopped``
        due to it when the torrent stops announcing to it)."""
        self.failed = trio.Event()
        self.outcomes = {}
        self.say_goodbye(True)

    def say_goodbye(self, goodbye: bool) -> None:
        """Whether the announcers send ``stopped`` when cancelled: not when the tier fails
        over from the tracker because it failed (libtorrent sends it nothing then; a tracker
        that does not answer would hold the failover up for the goodbye's timeout)."""
        for announcer in self.announcers:
            announcer.stopped_timeout = _STOPPED_TIMEOUT if goodbye else 0.0

    def updated(self, status: AnnouncerStatus) -> None:
        """One family's announce ended: the tracker answered, and goes to the front of its
        tier (BEP 12: "if a connection with a tracker is successful, it will be moved to the
        front of the tier"); or every family failed its last one this turn: it fails."""
        if status.last_event is AnnounceEvent.STOPPED and status.last_error is None:
            return  # our goodbye: no news of the tracker's health
        answered = status.last_error is None
        self.outcomes[status.family] = answered
        if answered:
            if self.url in self.order[1:]:
                self.order.remove(self.url)
                self.order.insert(0, self.url)
        elif len(self.outcomes) == len(self.announcers) and not any(self.outcomes.values()):
            self.failed.set()

    def next_try(self) -> float:
        """When the tracker may be tried again: the earliest next announce its announcers
        planned (their backoff, a BEP 31 ``retry in``); never when all gave up."""
        return min(
            (
                due
                for announcer in self.announcers
                if (due := announcer.status.next_announce) is not None
            ),
            default=math.inf,
        )


async def _next_of_tier(order: Sequence[str], entries: dict[str, _Entry]) -> _Entry:
    """The first tracker of the tier, in its order, that may be tried now; waits for the
    earliest one otherwise (for ever when every one gave up)."""
    while True:
        now = trio.current_time()
        for url in order:
            entry = entries.get(url)
            if entry is not None and entry.retry_at <= now:
                return entry
        # math.inf (every tracker gave up) sleeps for ever.
        await trio.sleep_until(min(entry.retry_at for entry in entries.values()))


def _log_failure(status: AnnouncerStatus, families: Sequence[Announcer]) -> None:
    """The engine's user hears of a tracker that fails (the library logs it at DEBUG only).

    With an announcer per family (``families``, the tracker's and swarm's), the tracker fails
    once every family's last announce failed (one not yet answered, or answered, does not),
    told with each family's reason; a family failing alone (a name without an IPv6 address)
    is no failure of the tracker, and goes at DEBUG.
    """
    if status.last_error is None:
        return
    shown = shown_url(status.tracker)
    if status.family is None:
        logger.info("announce to %s failed: %s", shown, status.last_error)
        return
    statuses = [announcer.status for announcer in families]
    if all(other.last_error is not None for other in statuses):
        reasons = "; ".join(f"IPv{other.family}: {other.last_error}" for other in statuses)
        logger.info("announce to %s failed: %s", shown, reasons)
    else:
        logger.debug(
            "announce to %s over IPv%d failed: %s", shown, status.family, status.last_error
        )


def _fresh_http_answer(status: AnnouncerStatus) -> HttpAnnounceResult | None:
    """The HTTP answer this update of ``status`` brings, or None: a failure leaves the last
    answer in the status, already taken when it came; a UDP answer has none of its fields."""
    if status.last_error is not None:
        return None
    result = status.last_result
    return result if isinstance(result, HttpAnnounceResult) else None


def _queue_names(status: AnnouncerStatus, names: trio.MemorySendChannel[_NameBatch]) -> None:
    """Queue the peer names of a fresh HTTP answer for the resolver (not those of ``stopped``:
    we are leaving, as the Announcer gives no numeric peers of it either)."""
    if status.last_event is AnnounceEvent.STOPPED:
        return
    result = _fresh_http_answer(status)
    if result is None or not result.peer_names:
        return
    try:
        names.send_nowait((result.info_hash, result.peer_names))
    except trio.WouldBlock:
        logger.debug(
            "%d peer names from %s dropped: the resolver is busy",
            len(result.peer_names),
            shown_url(status.tracker),
        )
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the resolver is gone: the announcers are stopping


async def _resolve_names(batches: trio.MemoryReceiveChannel[_NameBatch], sink: PeerSink) -> None:
    """Resolve each answer's peer names in turn and give their addresses to ``sink``, as
    tracker peers of the answer's swarm. The lookups are bounded with every other torrent's
    (resolve_peer_names' shared limiter): worker threads are the process's."""
    async for swarm_id, names in batches:

        def found(
            name: PeerName, addresses: tuple[PeerAddress, ...], swarm_id: bytes = swarm_id
        ) -> None:
            sink.discovered(swarm_id, addresses, "tracker")

        await resolve_peer_names(names, found)


class DhtLike(Protocol):
    """What the engine needs of a DHT (bip_dht's ``open_dht`` gives a ``DHT`` that has it)."""

    @property
    def addresses(self) -> tuple[PeerAddress, ...]:
        """Where the DHT's sockets are bound (its port goes in our BEP 5 port messages)."""
        ...

    async def keep_finding(
        self,
        info_hash: bytes,
        *,
        interval: float,
        announce: bool,
        port: int | None,
        seed: bool,
        sink: PeerSink | None,
    ) -> NoReturn:
        """Look ``info_hash`` up (with ``announce``, one walk that also announces us on
        ``port``, as a seed with ``seed``: BEP 5 and 33) now and every ``interval`` seconds,
        joining the DHT again when no family's routing table has a node it could still
        query; the peers found go to ``sink`` as they are found, until cancelled."""
        ...

    def add_node(self, address: PeerAddress) -> None:
        """A node to try (a peer's BEP 5 port message names one)."""
        ...

    def set_ip_filter(self, ip_filter: IPFilter | None) -> int:
        """Filter the DHT's nodes (``None``: none): blocked ones are neither queried nor kept,
        their datagrams dropped. Returns how many nodes of the routing table it removed."""
        ...


class DhtPeers:
    """Finds a torrent's peers in the DHT (BEP 5) and announces us there, every ``interval``.

    One ``keep_finding`` per swarm (a hybrid torrent has two, BEP 52): each round is a single
    walk that finds peers and announces us to the closest nodes (only looks when we do not
    listen), as a seed once every piece is verified (BEP 33), and joins the DHT
    again first if its routing table emptied. When what the rounds depend on changes (the
    torrent completes, a magnet's metadata brings its v2 half or makes it private), they start
    again with the new facts. Private torrents (BEP 27) are never looked up nor announced.

    Args:
        dht: a running DHT.
        interval: seconds between the end of a round and the next.
    """

    def __init__(self, dht: DhtLike, *, interval: float = DEFAULT_DHT_INTERVAL) -> None:
        self.dht = dht
        self.interval = interval

    async def run(self, target: DiscoveryTarget, sink: PeerSink) -> None:
        """Keep finding the torrent's peers and announcing it, until cancelled (or until the
        DHT closes, or the torrent turns out private)."""
        await target.ready.wait()  # as for trackers: after the check, or at once for a magnet
        closed: DHTError | None = None
        while not target.private and closed is None:
            plan = _DhtPlan.of(target)
            try:
                async with trio.open_nursery() as nursery:
                    for swarm_id in plan.swarm_ids:
                        nursery.start_soon(self._keep_finding, swarm_id, plan, sink)
                    while _DhtPlan.of(target) == plan and not target.private:
                        await trio.sleep(min(_DHT_RECHECK, self.interval))
                    nursery.cancel_scope.cancel()
            except* DHTError as group:  # the DHT closed under us: no round can run again
                error = group.exceptions[0]
                assert isinstance(error, DHTError)
                closed = error
        if closed is not None:
            logger.info("DHT lookups for %s stopped: %s", target.info_hash, closed)

    async def _keep_finding(self, swarm_id: bytes, plan: _DhtPlan, sink: PeerSink) -> None:
        await self.dht.keep_finding(
            swarm_id,
            interval=self.interval,
            announce=plan.port is not None,
            port=plan.port,
            seed=plan.seed,
            sink=sink,
        )


_DHT_RECHECK: Final = 5.0
"""Seconds between two looks at what a torrent's DHT rounds depend on (a change restarts them
at once; these changes come a few times in a torrent's life)."""


@dataclass(frozen=True, slots=True)
class _DhtPlan:
    """What a torrent's DHT rounds depend on."""

    swarm_ids: tuple[bytes, ...]
    port: int | None
    """The TCP port to announce; None to look only (we do not listen)."""
    seed: bool
    """Announce as a seed (BEP 33): every piece verified, and announcing at all."""

    @classmethod
    def of(cls, target: DiscoveryTarget) -> _DhtPlan:
        return cls(
            swarm_ids=tuple(target.info_hash.swarm_ids()),
            port=target.listen_port or None,
            # (a look-only round has nothing to say, so completion does not restart it). A
            # seed has every piece, as libtorrent's is_seed(): a finished partial download
            # (left > 0) is none.
            seed=target.listen_port != 0
            and target.completed.is_set()
            and target.transfer()[2] == 0,
        )


class LsdPeers:
    """Announces a torrent on the local network (BEP 14) while it runs.

    Each swarm id (a hybrid torrent has two, BEP 52; a magnet's v2 half once its metadata
    brings it) is announced on the session's ``lsd``, which repeats it every five minutes;
    the swarms are withdrawn when the torrent stops (or pauses). Private torrents (BEP 27)
    are never announced, and a magnet that turns out private is withdrawn. What LSD hears
    goes to the session's sink from the ``lsd``'s own callback, not through here: one
    callback serves every torrent.

    Args:
        lsd: the session's running Local Service Discovery (one per address family).
    """

    def __init__(self, *lsd: LocalServiceDiscovery) -> None:
        self.lsd = lsd

    async def run(self, target: DiscoveryTarget, sink: PeerSink) -> None:
        """Keep the torrent's swarms announced until cancelled (or until it turns out
        private); withdraw them on the way out."""
        await target.ready.wait()  # as for trackers and the DHT: after the check
        announced: set[bytes] = set()
        try:
            while not target.private:
                for swarm_id in target.info_hash.swarm_ids():
                    if swarm_id not in announced:
                        announced.add(swarm_id)
                        for lsd in self.lsd:
                            lsd.announce(swarm_id)
                await trio.sleep(_DHT_RECHECK)
        finally:
            for swarm_id in announced:
                for lsd in self.lsd:
                    lsd.withdraw(swarm_id)
