"""BEP 9 metadata exchange, sans-IO: fetch an info dictionary from peers, and serve ours.

A magnet link names a torrent by its info-hash only; the info dictionary itself comes from the
peers, in 16 KiB pieces, over the ``ut_metadata`` extension. This module holds the two halves of
that exchange without any I/O:

- :class:`MetadataFetcher` decides which piece to ask which peer for, several peers in parallel,
  takes the answers, and verifies the assembled bytes against the info-hash (SHA-1 for v1, SHA-256
  for v2, both for a hybrid torrent). Time is passed in (``now``) for request timeouts, re-requests
  and the back-off after a reject. Peers that send data which cannot be right are reported through
  :meth:`MetadataFetcher.take_banned` so the caller can drop them.
- :class:`MetadataServer` answers requests from our info dictionary's bytes, with a per-peer
  budget so a peer cannot make us upload the same bytes forever.

How the fetcher paces its requests, given a ``request_interval`` (the
:class:`~bip_peer.MetadataExchange` gives 1 s), as libtorrent's ``ut_metadata`` does: a new
peer is sent one request (libtorrent's, on the extended handshake), then one more for each
answer, and one more at each tick (every ``request_interval``, whenever the last request went)
while it has fewer than ``max_requests_per_peer`` (2) in flight. A peer that answers at once
has two in flight from its first tick on. rtorrent 0.9.8 drops a request that arrives while
its reply to the previous one is unsent and stops reading the connection: pieces 0 and 1 asked
back to back got piece 0 and nothing more, ever, and a tick that finds its reply unsent (a
slow uplink) has the same effect, under libtorrent too. So a peer added with
``one_at_a_time`` (:class:`~bip_peer.MetadataExchange` does so for rtorrent) is never sent a
second request while one is in flight; one whose reply is still unsent when its request times
out goes deaf all the same. Without a ``request_interval`` a peer is sent
``max_requests_per_peer`` requests at once (one, ``one_at_a_time``).

How the fetcher deals with silent peers. A request holds its piece for ``rerequest_delay`` (3 s,
libtorrent's figure: its ``ut_metadata`` asks for a piece again, of another peer, once its last
request is 3 s old). After that the piece may be asked of another peer too, while the first
request stays outstanding: whichever answer comes first is taken, so a slow peer's answer is not
wasted, and a silent peer that advertised the right ``metadata_size`` delays a piece by 3 s, not
by the whole ``request_timeout``. The piece is asked again at most once per ``rerequest_delay``
(every request holds it that long), and of one peer again only once its request there timed
out, nothing else is left to ask that peer and it has no request outstanding (else a source, or
the only peer, that let one request time out would stop the fetch). ``request_timeout`` (10 s)
still decides when a request stops occupying one of the peer's ``max_requests_per_peer`` slots
and counts as a timeout; an answer after that is still taken if the piece is still missing. A
peer whose requests time out ``max_timeouts`` times is *stalled*: left alone for ``stall_backoff``
(60 s), then asked again with its count of timeouts cleared. Never for good (libtorrent has no
permanent stall either: it asks again after 3 s): an honest but slow peer, the only one, would
otherwise stop the fetch with no deadline while its late answers were still coming. A silent peer
costs a few requests per ``stall_backoff`` (at most ``max_timeouts + max_requests_per_peer - 1``),
a peer probed for the size (it advertised none) as well. A silent peer is never dropped by the
fetcher (nor by :class:`~bip_peer.MetadataExchange`): as libtorrent, which disconnects for no
``ut_metadata`` silence, only its general inactivity timeout; a paused or slow seeder's answers
may still be coming, and a peer that sends nothing at all is the
:class:`~bip_peer.PeerManager`'s ``idle_timeout`` to drop.

How the fetcher deals with liars. Peers advertise ``metadata_size`` in their extended handshake;
sizes above ``max_size`` are refused outright (libtorrent's ``ut_metadata`` ignores sizes above
4 MiB, which is our default too). When peers disagree, the fetcher assembles one size at a time:
the size the most eligible peers advertise, kept while any eligible peer still offers it. The
pieces of a size given up are set aside, not dropped, and taken up again when a peer offers that
size again (a seeder whose connection dropped and came back, as libtorrent keeps its metadata
buffer across disconnects): one size's (the one with the most pieces), dropped once they and the
pieces being assembled exceed ``max_size`` bytes, and trusted no more than others. A piece
whose length does not fit that size, or a ``total_size`` that differs from what the peer
advertised, costs the peer its place (banned). A peer that re-advertises another size keeps its
requests made under the old one outstanding, so a silent one still times out; an info dictionary
cannot change under its info-hash, so a second change bans it. When the assembled bytes do not
hash to the info-hash, somebody lied, and the fetcher finds out who:

- if one peer sent every piece, it is banned at once;
- otherwise the fetcher cannot tell which piece was wrong, so it keeps a digest of every piece it
  got from every contributor and starts over in *single-source* mode, fetching the whole
  dictionary from one peer at a time (peers that did not contribute to a failure first, then by
  arrival; but after a source that came once single-source mode began, one there before it:
  a liar coming back again and again as a new peer, by a new connection or a handshake whose
  size we refuse, cannot keep the others from their turn). A failed
  single-source attempt bans that one peer; a verified one bans every earlier contributor whose
  piece differs from the verified bytes. Each failure therefore bans at least one peer eventually,
  and an honest peer is never banned.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from bip_metainfo import InfoHash

# BEP 9 splits the info dictionary into pieces of METADATA_PIECE_SIZE (16 KiB; the last one may
# be shorter).
from ._extended import METADATA_PIECE_SIZE, MetadataData, MetadataReject, MetadataRequest

__all__ = [
    "DEFAULT_MAX_METADATA_SIZE",
    "DEFAULT_METADATA_REJECT_BACKOFF",
    "DEFAULT_METADATA_REQUEST_INTERVAL",
    "DEFAULT_METADATA_REQUEST_TIMEOUT",
    "DEFAULT_METADATA_REREQUEST_DELAY",
    "DEFAULT_METADATA_STALL_BACKOFF",
    "MetadataFetcher",
    "MetadataFetcherStatistics",
    "MetadataServer",
    "MetadataServerStatistics",
    "info_matches",
    "metadata_piece_count",
]

DEFAULT_MAX_METADATA_SIZE: Final = 4 * 1024 * 1024
"""The largest ``metadata_size`` we fetch by default: 4 MiB, the bound libtorrent's ``ut_metadata``
applies to an advertised size (its ``max_metadata_size`` setting, 30 MiB, bounds other paths)."""

DEFAULT_METADATA_REQUEST_TIMEOUT: Final = 10.0
"""Seconds a metadata request may stay unanswered before it counts as timed out and frees its
slot on the peer (its piece was asked of another peer already, after ``rerequest_delay``)."""

DEFAULT_METADATA_REREQUEST_DELAY: Final = 3.0
"""Seconds a metadata request holds its piece before the piece may be asked of another peer as
well, the first request staying outstanding (libtorrent's ``ut_metadata`` waits 3 s too)."""

DEFAULT_METADATA_REJECT_BACKOFF: Final = 60.0
"""Seconds a peer that rejected a request is left alone (libtorrent waits one minute too)."""

DEFAULT_METADATA_STALL_BACKOFF: Final = 60.0
"""Seconds a peer whose requests timed out ``max_timeouts`` times is left alone before it is asked
again, its timeouts forgotten (as long as the reject back-off: a minute, libtorrent's figure)."""

DEFAULT_MAX_REQUESTS_PER_PEER: Final = 2
"""Metadata requests in flight to one peer (libtorrent keeps two)."""

DEFAULT_METADATA_REQUEST_INTERVAL: Final = 1.0
"""Seconds between the ticks at which a peer awaiting answers may be sent one more metadata
request, as a :class:`~bip_peer.MetadataExchange` paces its fetchers (libtorrent's
``ut_metadata`` asks one more per one-second tick, besides one per answer)."""

DEFAULT_MAX_TIMEOUTS: Final = 3
"""Timed-out requests after which a peer is stalled: not asked for ``stall_backoff`` seconds."""

DEFAULT_MAX_PARALLEL_FAILURES: Final = 1
"""Failed multi-source assemblies before the fetcher switches to one source at a time."""

_MAX_BANS: Final = 1024
"""Banned peers a :class:`MetadataFetcher` remembers while the caller keeps them (it forgets
one when told it left, :meth:`MetadataFetcher.remove_peer`): the oldest ban goes beyond it."""

DEFAULT_SERVE_BURST: Final = 512
"""Pieces a peer may fetch from a :class:`MetadataServer` at once (8 MiB, two whole 4 MiB
dictionaries) before the rate applies."""

DEFAULT_SERVE_RATE: Final = 32.0
"""Pieces per second a peer's budget refills at in a :class:`MetadataServer` (512 KiB/s)."""

K = TypeVar("K", bound=Hashable)


def metadata_piece_count(size: int) -> int:
    """How many 16 KiB pieces a dictionary of *size* bytes has (the last may be shorter).

    >>> metadata_piece_count(1), metadata_piece_count(16384), metadata_piece_count(16385)
    (1, 1, 2)
    """
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"a metadata size is a positive int, got {size!r}")
    return -(-size // METADATA_PIECE_SIZE)


def info_matches(info_hash: InfoHash, info: bytes) -> bool:
    """Whether *info* hashes to every hash *info_hash* has (SHA-1 for v1, SHA-256 for v2).

    >>> info = b"d4:name1:xe"
    >>> info_matches(InfoHash.from_info_bytes(info, v1=True, v2=True), info)
    True
    >>> info_matches(InfoHash.from_info_bytes(info, v2=True), info + b" ")
    False
    """
    if info_hash.v1 is not None and hashlib.sha1(info).digest() != info_hash.v1:
        return False
    return info_hash.v2 is None or hashlib.sha256(info).digest() == info_hash.v2


def _piece_length(size: int, piece: int) -> int:
    return min(METADATA_PIECE_SIZE, size - piece * METADATA_PIECE_SIZE)


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclass(frozen=True, slots=True)
class MetadataFetcherStatistics:
    """A snapshot of a :class:`MetadataFetcher`'s progress and counters.

    Attributes:
        metadata_size: the size being assembled, or None while no peer offered a usable one.
        pieces_total: pieces of that size (0 while unknown).
        pieces_have: pieces received for the current attempt.
        peers: peers known and not banned.
        requests_sent: requests handed out by :meth:`MetadataFetcher.next_request`.
        pieces_received: data messages accepted.
        rejects: reject messages for requests we had sent.
        timeouts: requests that timed out.
        ignored: data or rejects that answered no request of ours, or came too late to be of use.
        hash_failures: assemblies that did not hash to the info-hash.
        banned: peers banned so far.
        single_source: whether the fetcher fetches from one peer at a time (after a failure).
    """

    metadata_size: int | None
    pieces_total: int
    pieces_have: int
    peers: int
    requests_sent: int
    pieces_received: int
    rejects: int
    timeouts: int
    ignored: int
    hash_failures: int
    banned: int
    single_source: bool


@dataclass(slots=True)
class _Peer:
    order: int
    size: int | None
    outstanding: dict[int, float] = field(default_factory=dict)  # piece -> time sent
    # Outstanding pieces whose request still holds the piece (sent less than rerequest_delay
    # ago): no other peer is asked for them meanwhile. Always a subset of ``outstanding``.
    holding: set[int] = field(default_factory=set)
    late: set[int] = field(default_factory=set)  # timed-out pieces whose data we still take
    # Pieces asked under the size the peer advertised before its change: their requests still
    # take slots and time out, their answers are ignored. A subset of ``outstanding`` (never
    # late: an expired one is forgotten, an abandoned one stays outstanding).
    stale: set[int] = field(default_factory=set)
    resized: bool = False  # the peer changed its advertised size once already
    backoff_until: float = -math.inf  # after a reject, or stalled (see ``timeouts``)
    # Timed-out requests since the peer was last stalled: at max_timeouts it is stalled (backs
    # off for stall_backoff), and the count starts again from 0 when the back-off ends.
    timeouts: int = 0
    # Paced (a request_interval): whether one request may be sent, granted as libtorrent's
    # ut_metadata sends one: on the extended handshake (a new peer), on each answer, and at
    # each tick while fewer than max_requests_per_peer are in flight; a send takes it.
    may_send: bool = True
    # Never more than one request in flight (rtorrent: see add_peer), paced or not.
    one_at_a_time: bool = False


class MetadataFetcher(Generic[K]):
    """Fetch and verify an info dictionary over BEP 9 from any number of peers (sans-IO).

    Peers are identified by any hashable key the caller chooses (a connection handle, say). The
    caller tells the fetcher what each peer offers (:meth:`add_peer`, from its extended
    handshake), asks it what to send (:meth:`next_request`), feeds it the answers
    (:meth:`on_data`, :meth:`on_reject`) and the passing of time (:meth:`handle_timer` at
    :meth:`next_deadline`), and drops the peers :meth:`take_banned` names. Once :attr:`done`,
    :meth:`result` is the verified info dictionary.

    >>> info = b"d4:name1:x12:piece lengthi16384e6:pieces0:e"
    >>> fetcher = MetadataFetcher(InfoHash.from_info_bytes(info, v1=True))
    >>> fetcher.add_peer("seed", len(info))
    True
    >>> request = fetcher.next_request("seed", now=0.0)
    >>> request
    MetadataRequest(piece=0)
    >>> fetcher.on_data("seed", MetadataData(0, len(info), info), now=0.1)
    >>> fetcher.result() == info
    True

    Args:
        info_hash: the torrent; every hash it has (v1, v2) must match.
        max_size: the largest dictionary fetched; larger advertised sizes are ignored.
        request_timeout: seconds before an unanswered request times out: it frees its slot
            on the peer and counts toward ``max_timeouts``.
        rerequest_delay: seconds a request holds its piece; after that the piece may be asked
            of another peer as well, the first request staying outstanding (its answer is
            taken if it comes first). At most ``request_timeout``: a larger value acts as it.
        reject_backoff: seconds a peer that rejected a request is not asked again.
        max_requests_per_peer: requests in flight to one peer.
        max_timeouts: timeouts after which a peer is stalled.
        stall_backoff: seconds a stalled peer is not asked; then its timeouts are forgotten.
        max_parallel_failures: failed multi-source assemblies before single-source mode.
        request_interval: seconds between the ticks that may send a peer one more request
            while it awaits answers (else one request to a new peer, then one per answer, as
            libtorrent); None (the default) sends a peer ``max_requests_per_peer`` requests at
            once. See the module documentation: rtorrent 0.9.8 stops reading a connection
            that pipelines them.
    """

    def __init__(
        self,
        info_hash: InfoHash,
        *,
        max_size: int = DEFAULT_MAX_METADATA_SIZE,
        request_timeout: float = DEFAULT_METADATA_REQUEST_TIMEOUT,
        reject_backoff: float = DEFAULT_METADATA_REJECT_BACKOFF,
        rerequest_delay: float = DEFAULT_METADATA_REREQUEST_DELAY,
        max_requests_per_peer: int = DEFAULT_MAX_REQUESTS_PER_PEER,
        max_timeouts: int = DEFAULT_MAX_TIMEOUTS,
        max_parallel_failures: int = DEFAULT_MAX_PARALLEL_FAILURES,
        stall_backoff: float = DEFAULT_METADATA_STALL_BACKOFF,
        request_interval: float | None = None,
    ) -> None:
        if not isinstance(info_hash, InfoHash):
            raise TypeError(f"info_hash must be an InfoHash, got {info_hash!r}")
        _check_count("max_size", max_size)
        _check_positive("request_timeout", request_timeout)
        _check_positive("reject_backoff", reject_backoff)
        _check_positive("rerequest_delay", rerequest_delay)
        _check_count("max_requests_per_peer", max_requests_per_peer)
        _check_count("max_timeouts", max_timeouts)
        _check_count("max_parallel_failures", max_parallel_failures)
        _check_positive("stall_backoff", stall_backoff)
        if request_interval is not None:
            _check_positive("request_interval", request_interval)
        self._info_hash = info_hash
        self._max_size = max_size
        self._request_timeout = float(request_timeout)
        self._reject_backoff = float(reject_backoff)
        # A request that timed out holds nothing any more, so the delay cannot be longer.
        self._rerequest_delay = min(float(rerequest_delay), self._request_timeout)
        self._max_requests = max_requests_per_peer
        self._max_timeouts = max_timeouts
        self._max_parallel_failures = max_parallel_failures
        self._stall_backoff = float(stall_backoff)
        self._request_interval = None if request_interval is None else float(request_interval)
        # Paced: the next tick (every request_interval from the first request sent).
        self._next_tick: float | None = None

        self._peers: dict[K, _Peer] = {}
        self._next_order = 0
        # Banned and not yet removed by the caller (its connection lasts): ordered, the oldest
        # forgotten beyond _MAX_BANS. Removed, a peer is forgotten, as a new connection to it
        # is a new peer: kept, every departed liar's connection would stay with a kept fetch.
        self._banned: dict[K, None] = {}
        self._to_report: list[tuple[K, str]] = []

        self._size: int | None = None  # the size being assembled
        self._pieces: dict[int, tuple[bytes, K]] = {}  # piece -> (data, source)
        # The pieces of a size no peer offers any more, with that size: taken up again when a
        # peer offers it again (a seeder whose connection dropped). One size only, the one with
        # the most pieces, and dropped once it and _pieces hold more than max_size bytes.
        self._aside: tuple[int, dict[int, tuple[bytes, K]]] | None = None
        # After a failed assembly: for each (size, piece), the digest each contributor sent.
        # Both kept while the peer's connection lasts (remove_peer), the digests only until it
        # is banned: a liar withdrawing ut_metadata or advertising a size we refuse, then
        # offering it again, stays marked, and the verified dictionary still bans it.
        self._suspect: dict[tuple[int, int], dict[K, bytes]] = {}
        self._failed_contributors: set[K] = set()
        self._parallel_failures = 0
        self._single_source = False
        # Peers added from this order on came after single-source mode began. After such a
        # source, the next is one there before it: a liar coming back as a new peer (a new
        # connection, or a size refused then offered again) would otherwise be first for ever.
        self._single_source_order = 0
        self._late_source = False  # the last source came after single-source mode began
        self._source: K | None = None
        self._result: bytes | None = None

        self._requests_sent = 0
        self._pieces_received = 0
        self._rejects = 0
        self._timeouts = 0
        self._ignored = 0
        self._hash_failures = 0
        self._banned_count = 0

    # ------------------------------------------------------------------------------- peers

    def add_peer(self, peer: K, metadata_size: int | None, *, one_at_a_time: bool = False) -> bool:
        """Tell the fetcher a peer speaks ``ut_metadata`` and what size it advertised.

        Call again when the peer re-sends its extended handshake. A size where the peer had
        none (it got the metadata since) is simply taken; a handshake without the field leaves
        the size known. A *different* size replaces the old one once: the requests made under
        the old one still take the peer's slots and count as timeouts when they expire (as
        libtorrent leaves sent requests alone), and their answers are ignored. An info
        dictionary cannot change under its info-hash (a BEP 46 update names a new one, so
        another swarm), so a peer that changes its size a second time is banned: otherwise a
        silent peer re-advertising could dodge ``max_timeouts`` for ever. *metadata_size* None
        (not advertised) makes a new peer usable once another peer's size is known, or to
        learn the size from its answer when nobody advertised one. *one_at_a_time* keeps
        the peer at one request in flight for good (once given, a later call cannot lift it):
        for rtorrent, which stops reading a connection whose request arrives while its reply
        to the previous one is unsent (a tick of libtorrent's pacing may send one then).

        Returns:
            False if the peer is not usable: banned earlier or now, or an advertised size that
            is not positive or exceeds ``max_size``. True otherwise.
        """
        if peer in self._banned or self._result is not None:
            return False
        if metadata_size is not None and not self._size_ok(metadata_size):
            self._remove(peer)
            return False
        state = self._peers.get(peer)
        if state is None:
            state = self._peers[peer] = _Peer(order=self._next_order, size=metadata_size)
            self._next_order += 1
        state.one_at_a_time |= bool(one_at_a_time)
        if metadata_size is None or state.size == metadata_size:
            pass  # new, the same size, or the field left out: nothing the peer told us changes
        elif state.size is None:
            state.size = metadata_size  # the peer has the metadata now; its requests stand
        elif state.resized:
            self._ban(
                peer, f"changed its metadata_size a second time ({state.size} to {metadata_size})"
            )
            return False
        else:
            state.resized = True
            # The requests stay outstanding so that they still time out, but hold nothing:
            # what they ask for is of a size the peer no longer offers. Late ones were counted.
            state.holding.clear()
            state.stale.update(state.outstanding)
            state.late.clear()
            state.size = metadata_size
            if self._source == peer:
                self._source = None
                self._discard_pieces()
        self._choose_size()
        return True

    def remove_peer(self, peer: K) -> None:
        """Forget a peer (disconnected); its requests in flight go to others.

        A banned peer's ban is forgotten too, and not reported by :meth:`take_banned` if it
        was not yet: keys name connections, and a new connection to the same host is a new
        peer (the fetch keeps nothing of the ones that left).
        """
        self._banned.pop(peer, None)
        self._failed_contributors.discard(peer)
        self._to_report = [(banned, reason) for banned, reason in self._to_report if banned != peer]
        self._forget_suspect(peer)
        self._remove(peer)

    def withdraw_peer(self, peer: K) -> None:
        """The peer no longer offers ``ut_metadata`` (a later extended handshake), its
        connection lasting: forget its requests as :meth:`remove_peer` does, but a ban stays,
        and so does its part in a failed assembly (offering it again, it is no fresh peer)."""
        self._remove(peer)

    def _remove(self, peer: K) -> None:
        """Forget the peer's state and requests; what it sent in a failed assembly stays."""
        state = self._peers.pop(peer, None)
        if state is None:
            return
        if self._source == peer:
            self._source = None
            self._discard_pieces()
        self._choose_size()

    def _forget_suspect(self, peer: K) -> None:
        """Drop the digests *peer* sent in a failed assembly (it left, or is banned)."""
        for key, digests in list(self._suspect.items()):
            digests.pop(peer, None)
            if not digests:
                del self._suspect[key]

    @property
    def peers(self) -> frozenset[K]:
        """The peers known and not banned."""
        return frozenset(self._peers)

    def take_banned(self) -> list[tuple[K, str]]:
        """The peers banned since the last call, each with the reason; drop their connections.

        A banned peer is not added again until :meth:`remove_peer` says it left (then a new
        connection to it is a new peer). Bans the caller never removes are bounded: the
        oldest of more than 1024 is forgotten.
        """
        reported, self._to_report = self._to_report, []
        return reported

    # ----------------------------------------------------------------------------- progress

    @property
    def done(self) -> bool:
        """Whether the verified dictionary is available (:meth:`result`)."""
        return self._result is not None

    def result(self) -> bytes | None:
        """The verified info dictionary's bytes, or None while the fetch goes on."""
        return self._result

    @property
    def metadata_size(self) -> int | None:
        """The size being assembled, or None while unknown."""
        return self._size

    def statistics(self) -> MetadataFetcherStatistics:
        """A snapshot of progress and counters."""
        size = self._size
        return MetadataFetcherStatistics(
            metadata_size=size,
            pieces_total=0 if size is None else metadata_piece_count(size),
            pieces_have=len(self._pieces),
            peers=len(self._peers),
            requests_sent=self._requests_sent,
            pieces_received=self._pieces_received,
            rejects=self._rejects,
            timeouts=self._timeouts,
            ignored=self._ignored,
            hash_failures=self._hash_failures,
            banned=self._banned_count,
            single_source=self._single_source,
        )

    # ----------------------------------------------------------------------------- requests

    def next_request(self, peer: K, now: float) -> MetadataRequest | None:
        """The next request to send to *peer*, or None (nothing to ask it now).

        Call repeatedly until None, after adding a peer, after every answer from it, and after
        :meth:`handle_timer`. The returned request counts as sent.
        """
        state = self._peers.get(peer)
        if state is None or self._result is not None:
            return None
        if len(state.outstanding) >= self._slots(state) or now < state.backoff_until:
            return None
        if self._request_interval is not None and not state.may_send:
            return None  # one more only on an answer, or at a tick (see the module docs)
        # Over, even if handle_timer has not run yet (a stalled peer always backs off, so
        # once this ran it has fewer than max_timeouts timeouts).
        self._end_backoff(state)
        size = self._size
        if size is None:
            return self._probe_request(peer, state, now)
        if state.size is not None and state.size != size:
            return None
        if self._single_source:
            source = None if self._source is None else self._peers.get(self._source)
            if source is not None and not self._can_source(source, size, now):
                # It can no longer be asked (its size, learnt from an answer, is not the one
                # assembled, say), and while it is the source nobody else is: move on.
                self._drop_source(source)
            if self._source is None:
                self._source = self._pick_source()
            if self._source != peer:
                return None
        piece = self._pick_piece(peer, state, size, now)
        if piece is None:
            return None
        self._send(state, piece, now)
        return MetadataRequest(piece)

    def _probe_request(self, peer: K, state: _Peer, now: float) -> MetadataRequest | None:
        # Nobody advertised a usable size: ask a peer that advertised none for piece 0, whose
        # answer carries total_size. One probe at a time across all peers, and none of a peer
        # whose last request is still outstanding: asked again once it times out, the probe
        # counts as a timeout (asked again when it let another peer be probed, it reset its
        # own clock: 20 probes a minute to a silent peer, which never stalled).
        self._release_due(now)
        if (
            state.size is not None
            or state.outstanding
            or any(0 in other.holding for other in self._peers.values())
        ):
            return None
        self._send(state, 0, now)
        return MetadataRequest(0)

    def _send(self, state: _Peer, piece: int, now: float) -> None:
        state.outstanding[piece] = now
        if self._request_interval is not None:
            state.may_send = False
            if self._next_tick is None:
                self._next_tick = now + self._request_interval
        state.holding.add(piece)
        state.late.discard(piece)  # asked again (a timed-out piece): awaited, not late
        self._requests_sent += 1

    def _release(self, state: _Peer, piece: int) -> None:
        """The peer's request for ``piece`` no longer keeps other peers from being asked."""
        state.holding.discard(piece)

    def _abandon_requests(self, state: _Peer) -> None:
        """``state``'s requests in flight hold nothing and await nothing any more; an answer
        to one is still taken late, as a timed-out one is.

        Stale requests (asked under the size the peer advertised before its change) stay
        outstanding instead: their answers are ignored, so as late ones they would only keep
        their pieces from ever being asked of this peer again (a peer whose late pieces are
        all that is missing would stop the fetch). Outstanding, they still count toward
        ``max_timeouts`` when they expire, as :meth:`add_peer` promises, and are then forgotten.
        """
        state.holding.clear()
        for piece in state.outstanding.keys() - state.stale:
            del state.outstanding[piece]
            state.late.add(piece)

    def _release_due(self, now: float) -> None:
        """Release the requests older than ``rerequest_delay`` (still outstanding)."""
        # The very expression next_deadline reports: a moment it gives is released at that
        # ``now`` (``now - delay`` may round the other way and leave it held till timeout).
        delay = self._rerequest_delay
        for state in self._peers.values():
            for piece in [p for p in state.holding if state.outstanding[p] + delay <= now]:
                self._release(state, piece)

    def _pick_piece(self, peer: K, state: _Peer, size: int, now: float) -> int | None:
        """The piece to ask *peer* for: never asked (or every request dead) first, then one
        asked of others whose requests no longer hold it (the fewest requests outstanding);
        among equals, one this peer did not send in a failed assembly, then the lowest.

        A piece whose request to this peer timed out comes last of all, and only while the
        peer has no request outstanding: otherwise a peer that let one request time out (a
        single source, or the only peer) would be left with nothing to ask while that piece
        is missing, and the fetch would stop with no deadline. Its request was sent at least
        ``request_timeout`` ago, later than libtorrent's 3 s before it asks any peer again;
        each silent re-ask counts as a timeout, so ``max_timeouts`` still stalls the peer.
        """
        self._release_due(now)
        asked: dict[int, int] = {}  # piece -> requests outstanding, holding or not
        held: set[int] = set()  # pieces a request of less than rerequest_delay holds
        for other in self._peers.values():
            for piece in other.outstanding.keys() - other.stale:  # stale: of another size
                asked[piece] = asked.get(piece, 0) + 1
            held.update(other.holding)
        retry = not state.outstanding  # this peer's timed-out pieces may be asked again
        best: tuple[bool, int, bool, int] | None = None
        for piece in range(metadata_piece_count(size)):
            if piece in self._pieces or piece in state.outstanding:
                continue
            late = piece in state.late
            if (late and not retry) or piece in held:
                continue  # held: asked elsewhere less than rerequest_delay ago
            suspect = peer in self._suspect.get((size, piece), ())
            key = (late, asked.get(piece, 0), suspect, piece)
            if best is None or key < best:
                best = key
                if key[:3] == (False, 0, False):
                    break  # nothing can beat an unasked, unsuspected piece
        return None if best is None else best[3]

    def _can_source(self, state: _Peer, size: int, now: float) -> bool:
        """Whether a single source may still be asked for pieces of *size*."""
        return (
            state.timeouts < self._max_timeouts
            and now >= state.backoff_until
            and (state.size is None or state.size == size)
        )

    def _pick_source(self) -> K:
        """The next single source: peers that did not contribute to a failure first, then by
        arrival; after a source that came once single-source mode began, a peer there before
        it first (see ``_single_source_order``). Called from :meth:`next_request`, whose peer
        is always a candidate."""
        size = self._size
        late = self._single_source_order
        candidates = [
            (
                self._late_source and state.order >= late,
                peer in self._failed_contributors,
                state.order,
                peer,
            )
            for peer, state in self._peers.items()
            if self._eligible(state) and (state.size is None or state.size == size)
        ]
        *_, order, source = min(candidates, key=lambda item: item[:3])
        self._late_source = order >= late
        return source

    # ------------------------------------------------------------------------------ answers

    def on_data(self, peer: K, message: MetadataData, now: float) -> None:
        """Take a piece of the dictionary from *peer*.

        Data that answers no request of ours (or a piece we already have) is ignored. A
        ``total_size`` that differs from the size the peer advertised, or a piece of the wrong
        length, bans the peer. When the last piece arrives the whole is verified; see the module
        documentation for what a mismatch does.
        """
        state = self._peers.get(peer)
        piece = message.piece
        if state is None or self._result is not None:
            self._ignored += 1
            return
        requested = piece in state.outstanding
        late = piece in state.late
        if not (requested or late):
            self._ignored += 1
            return
        state.may_send = True  # one more per answer, late or not (as libtorrent)
        stale = piece in state.stale
        self._clear_request(state, piece)
        if stale:
            self._ignored += 1  # asked under the size the peer advertised before its change
            return
        total = message.total_size
        if state.size is None:
            if not self._size_ok(total):
                self._ban(peer, f"metadata total_size {total} is out of range")
                return
            state.size = total
            self._choose_size()
        elif total != state.size:
            self._ban(peer, f"metadata total_size {total} differs from its metadata_size")
            return
        size = self._size
        if size is None or total != size or piece in self._pieces:
            # Another size is being assembled, or another peer answered first.
            self._ignored += 1
            return
        if self._single_source and peer != self._source:
            self._ignored += 1
            return
        # MetadataData guarantees 0 <= piece and piece * 16 KiB < total_size (== size).
        expected = _piece_length(size, piece)
        if len(message.data) != expected:
            self._ban(
                peer, f"metadata piece {piece} is {len(message.data)} bytes, expected {expected}"
            )
            return
        self._pieces[piece] = (bytes(message.data), peer)
        self._pieces_received += 1
        if self._aside is not None and self._held() > self._max_size:
            self._aside = None  # the size assembled now has the pieces, and the place
        if len(self._pieces) == metadata_piece_count(size):
            self._assemble(size)

    def on_reject(self, peer: K, message: MetadataReject, now: float) -> None:
        """Take a reject: the peer is not asked again for ``reject_backoff`` seconds."""
        state = self._peers.get(peer)
        if state is None or not (message.piece in state.outstanding or message.piece in state.late):
            self._ignored += 1
            return
        self._rejects += 1
        # No request follows a reject (libtorrent sends none either): the peer backs off.
        self._clear_request(state, message.piece)
        # Never shortens a stall's longer back-off (a late request's reject may come then).
        state.backoff_until = max(state.backoff_until, now + self._reject_backoff)
        if self._source == peer:
            self._drop_source(state)  # single-source mode needs a peer that answers: move on
        self._choose_size()

    def _clear_request(self, state: _Peer, piece: int) -> None:
        self._release(state, piece)
        state.outstanding.pop(piece, None)
        state.late.discard(piece)
        state.stale.discard(piece)

    # ------------------------------------------------------------------------------- timers

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` has something to do: the earliest request timeout, moment
        a piece may be asked of another peer (``rerequest_delay`` after its request), next
        tick while a peer could be sent one more request by it, or end of a reject back-off;
        None if nothing is pending."""
        deadlines = [
            sent + self._request_timeout
            for state in self._peers.values()
            for sent in state.outstanding.values()
        ]
        # A moment handle_timer reached was released there, so none is reported twice.
        deadlines.extend(
            state.outstanding[piece] + self._rerequest_delay
            for state in self._peers.values()
            for piece in state.holding
        )
        # The next tick, while a peer could use it (not one granted a request already: it
        # has nothing to ask now, and asks when told of something new).
        if self._next_tick is not None and any(
            not state.may_send
            and len(state.outstanding) < self._slots(state)
            and state.backoff_until == -math.inf
            for state in self._peers.values()
        ):
            deadlines.append(self._next_tick)
        deadlines.extend(
            state.backoff_until for state in self._peers.values() if state.backoff_until > -math.inf
        )
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        """Let the pieces requested ``rerequest_delay`` ago be asked of other peers too,
        expire the requests older than ``request_timeout`` (they free their peer's slot), and,
        paced, at a tick (every ``request_interval``) let each peer with fewer than
        ``max_requests_per_peer`` in flight be sent one more.

        A late answer to an expired request is still taken if the piece is still missing.
        After this, ask :meth:`next_request` again for every peer.
        """
        self._release_due(now)
        for peer, state in list(self._peers.items()):
            expired = [
                piece
                for piece, sent in state.outstanding.items()
                if now >= sent + self._request_timeout
            ]
            for piece in expired:
                self._release(state, piece)
                del state.outstanding[piece]
                if piece in state.stale:
                    # Its answer would be ignored: forget it, so the piece may be asked again.
                    state.stale.discard(piece)
                else:
                    state.late.add(piece)
                state.timeouts += 1
                self._timeouts += 1
            if expired and state.timeouts >= self._max_timeouts:
                # Stalled: left alone for a while, never for good (see the module docs).
                state.backoff_until = max(state.backoff_until, now + self._stall_backoff)
                if self._source == peer:
                    self._drop_source(state)
            if state.backoff_until <= now:
                self._end_backoff(state)
        interval = self._request_interval
        if interval is not None and self._next_tick is not None and now >= self._next_tick:
            # A tick: one more request to every peer with a slot free, whenever its last
            # request went (libtorrent's one-second tick; expired requests freed theirs).
            self._next_tick = now + interval
            for state in self._peers.values():
                if len(state.outstanding) < self._slots(state):
                    state.may_send = True
        self._choose_size()

    # --------------------------------------------------------------------------- internals

    def _slots(self, state: _Peer) -> int:
        """Requests the peer may have in flight."""
        return 1 if state.one_at_a_time else self._max_requests

    def _end_backoff(self, state: _Peer) -> None:
        """The peer's back-off is over: a stalled peer starts again with no timeouts."""
        state.backoff_until = -math.inf
        if state.timeouts >= self._max_timeouts:
            state.timeouts = 0

    def _size_ok(self, size: object) -> bool:
        return isinstance(size, int) and not isinstance(size, bool) and 0 < size <= self._max_size

    def _eligible(self, state: _Peer) -> bool:
        return state.timeouts < self._max_timeouts and state.backoff_until == -math.inf

    def _choose_size(self) -> None:
        """Keep the size being assembled while an eligible peer offers it; else take the size
        most eligible peers offer (ties: the first peer's)."""
        current = self._size
        if current is not None and any(
            state.size == current and self._eligible(state) for state in self._peers.values()
        ):
            return
        votes: dict[int, tuple[int, int]] = {}  # size -> (peers, -first order)
        for state in self._peers.values():
            if state.size is None or not self._eligible(state):
                continue
            count, first = votes.get(state.size, (0, -state.order))
            votes[state.size] = (count + 1, max(first, -state.order))
        if not votes:
            if current is not None and not any(
                state.size == current for state in self._peers.values()
            ):
                self._set_size(None)
            return  # keep a size whose peers are only backing off for a while
        # The current size has no eligible peer, so it cannot be the best one.
        self._set_size(max(votes, key=lambda size: votes[size]))

    def _drop_source(self, state: _Peer) -> None:
        """Give up on the single source (``state``): its pieces are discarded, and its requests
        still in flight no longer hold their pieces (its answers are ignored from now on)."""
        self._abandon_requests(state)
        self._source = None
        self._discard_pieces()

    def _set_size(self, size: int | None) -> None:
        """Assemble ``size`` from now on (None: no peer offers a usable one). The pieces of
        the size given up are set aside (unless fewer than those set aside already), and
        those set aside for ``size`` taken up again: a seeder whose connection dropped and
        came back goes on from them. They are trusted no more than any: only once the
        whole dictionary hashes to the info-hash."""
        if size is not None and self._size is None:
            self._release_probes()
        old, pieces = self._size, self._pieces
        self._size = size
        self._pieces = {}
        aside = self._aside
        if aside is not None and aside[0] == size:
            self._pieces, self._aside, aside = aside[1], None, None
        # Not in single-source mode: those pieces came from one source, gone or moved on.
        if (
            old is not None
            and pieces
            and not self._single_source
            and (aside is None or len(pieces) >= len(aside[1]))
        ):
            self._aside = (old, pieces)

    def _release_probes(self) -> None:
        """The size is known now: a probe (piece 0, asked of a peer that advertised no size,
        only to learn it) no longer holds its piece, or a probed peer that never answers would
        keep the peers that advertised the size from being asked for it until it times out.
        Its answer is still taken, as a timed-out one is."""
        for state in self._peers.values():
            if state.size is None:
                self._abandon_requests(state)

    def _discard_pieces(self) -> None:
        self._pieces.clear()

    def _held(self) -> int:
        """Bytes of the pieces held, set aside or not."""
        held = sum(len(data) for data, _ in self._pieces.values())
        if self._aside is not None:
            held += sum(len(data) for data, _ in self._aside[1].values())
        return held

    def _assemble(self, size: int) -> None:
        pieces = [self._pieces[index] for index in range(metadata_piece_count(size))]
        info = b"".join(data for data, _ in pieces)
        if self._verify(info):
            self._result = info
            self._finish(pieces)
            return
        self._hash_failures += 1
        contributors = {source for _, source in pieces}
        self._pieces.clear()
        if len(contributors) == 1:
            (liar,) = contributors
            self._ban(liar, "sent metadata that does not match the info-hash")
            if self._single_source:
                self._source = None
            return
        # Several contributors: remember who sent what, and retry one source at a time. Only
        # of the peers still here: one that left (its pieces set aside) cannot be banned, and
        # what is remembered of it would only hold its connection.
        for index, (data, source) in enumerate(pieces):
            if source in self._peers:
                digest = hashlib.sha1(data).digest()
                self._suspect.setdefault((size, index), {})[source] = digest
        self._failed_contributors |= contributors & self._peers.keys()
        self._parallel_failures += 1
        if self._parallel_failures >= self._max_parallel_failures:
            self._single_source = True
            self._single_source_order = self._next_order
            self._source = None
            self._aside = None  # pieces from several sources: of no use to one at a time

    def _finish(self, pieces: list[tuple[bytes, K]]) -> None:
        size = len(self._result or b"")
        digests = [hashlib.sha1(data).digest() for data, _ in pieces]
        liars: dict[K, None] = {}  # ordered, without duplicates
        for (suspect_size, index), sent in self._suspect.items():
            for peer, digest in sent.items():
                # A piece of another size came from a peer that lied about the size.
                if suspect_size != size or digest != digests[index]:
                    liars[peer] = None
        self._suspect.clear()
        self._aside = None
        for peer in liars:
            self._ban(peer, "sent metadata pieces that differ from the verified ones")
        self._pieces.clear()
        for state in self._peers.values():
            state.outstanding.clear()
            state.holding.clear()
            state.late.clear()
            state.stale.clear()

    def _verify(self, info: bytes) -> bool:
        return info_matches(self._info_hash, info)

    def _ban(self, peer: K, reason: str) -> None:
        self._forget_suspect(peer)  # kept, they would ban it again once the dictionary verifies
        if peer in self._peers:
            self._remove(peer)
            self._banned[peer] = None
            while len(self._banned) > _MAX_BANS:
                del self._banned[next(iter(self._banned))]
        self._banned_count += 1
        self._to_report.append((peer, reason))


@dataclass(frozen=True, slots=True)
class MetadataServerStatistics:
    """A snapshot of a :class:`MetadataServer`'s counters.

    Attributes:
        served: data messages answered.
        rejected_range: requests for a piece that does not exist (any int of up to 20 digits
            may be asked, negative ones too; each costs the peer a token of its budget all the
            same).
        rejected_budget: requests for an existing piece refused because the peer spent its
            budget.
        peers: peers with a budget being tracked.
    """

    served: int
    rejected_range: int
    rejected_budget: int
    peers: int


@dataclass(slots=True)
class _Budget:
    tokens: float
    updated: float


class MetadataServer(Generic[K]):
    """Answer BEP 9 requests from our info dictionary's bytes (sans-IO).

    Each peer has a token bucket: *burst* pieces at once, refilled at *rate* pieces per second,
    so a peer that asks for the same pieces over and over gets rejects instead of our upload.
    A request for a piece that does not exist (BEP 9 lets a peer ask for any index, and a peer
    may send a negative one; libtorrent and we answer with a reject naming it) spends a token
    too: a peer that floods us with them has its valid requests rejected as well until its
    budget refills, as if it had asked for data.
    Every request gets one small answer, never more, so a flood costs us no more than it costs
    the peer. Call :meth:`forget` when a peer leaves.

    >>> server = MetadataServer(b"d4:name1:xe")
    >>> server.metadata_size
    11
    >>> server.answer("peer", MetadataRequest(0), now=0.0)
    MetadataData(piece=0, total_size=11, data=b'd4:name1:xe')
    >>> server.answer("peer", MetadataRequest(1), now=0.0)
    MetadataReject(piece=1)
    >>> server.answer("peer", MetadataRequest(-1), now=0.0)
    MetadataReject(piece=-1)

    Args:
        info_bytes: the info dictionary exactly as hashed.
        burst: pieces a peer may fetch at once.
        rate: pieces per second a peer's budget refills at.
        max_peers: budgets tracked at once; the stalest is forgotten beyond it.
    """

    def __init__(
        self,
        info_bytes: bytes | bytearray | memoryview,
        *,
        burst: int = DEFAULT_SERVE_BURST,
        rate: float = DEFAULT_SERVE_RATE,
        max_peers: int = 4096,
    ) -> None:
        if not isinstance(info_bytes, bytes | bytearray | memoryview):
            raise TypeError(f"info_bytes must be bytes, got {type(info_bytes).__name__}")
        self._info = bytes(info_bytes)
        if not self._info:
            raise ValueError("an info dictionary is not empty")
        _check_count("burst", burst)
        _check_positive("rate", rate)
        _check_count("max_peers", max_peers)
        self._burst = burst
        self._rate = float(rate)
        self._max_peers = max_peers
        self._budgets: dict[K, _Budget] = {}
        self._served = 0
        self._rejected_range = 0
        self._rejected_budget = 0

    @property
    def metadata_size(self) -> int:
        """The dictionary's size: the ``metadata_size`` for our extended handshake."""
        return len(self._info)

    @property
    def info_bytes(self) -> bytes:
        """The dictionary served."""
        return self._info

    @property
    def piece_count(self) -> int:
        """How many 16 KiB pieces the dictionary has."""
        return metadata_piece_count(len(self._info))

    def answer(
        self, peer: K, request: MetadataRequest, now: float
    ) -> MetadataData | MetadataReject:
        """The answer to *request* from *peer*: the piece, or a reject.

        Pieces out of range (negative, or past the end) and requests beyond the peer's budget
        are rejected, the reject naming the piece asked for, as BEP 9 says for metadata we
        cannot give.
        """
        piece = request.piece
        budget = self._budgets.pop(peer, None)  # re-inserted last: the dict stays LRU-ordered
        if budget is None:
            budget = _Budget(float(self._burst), now)
            while len(self._budgets) >= self._max_peers:
                del self._budgets[next(iter(self._budgets))]
        elapsed = max(0.0, now - budget.updated)
        budget.tokens = min(float(self._burst), budget.tokens + elapsed * self._rate)
        budget.updated = max(budget.updated, now)
        self._budgets[peer] = budget
        if not 0 <= piece < self.piece_count:
            # Spent like a valid request, so that bad requests are rate-limited as good ones.
            budget.tokens = max(0.0, budget.tokens - 1.0)
            self._rejected_range += 1
            return MetadataReject(piece)
        if budget.tokens < 1.0:
            self._rejected_budget += 1
            return MetadataReject(piece)
        budget.tokens -= 1.0
        self._served += 1
        start = piece * METADATA_PIECE_SIZE
        return MetadataData(piece, len(self._info), self._info[start : start + METADATA_PIECE_SIZE])

    def forget(self, peer: K) -> None:
        """Drop a peer's budget (it disconnected)."""
        self._budgets.pop(peer, None)

    def statistics(self) -> MetadataServerStatistics:
        """A snapshot of the counters."""
        return MetadataServerStatistics(
            served=self._served,
            rejected_range=self._rejected_range,
            rejected_budget=self._rejected_budget,
            peers=len(self._budgets),
        )
