"""The UDP tracker client as a sans-IO datagram core (BEP 15).

:class:`TrackerClientCore` runs any number of announces and scrapes to any number of trackers at
once. It never reads a clock or touches a socket: the caller passes ``now`` (seconds, any
monotonic origin) and moves datagrams in and out.

- ``announce(tracker, params, now)`` / ``scrape(tracker, info_hashes, now)`` start a request
  and return its :data:`RequestId`;
- ``datagrams_to_send(now)`` gives the ``(bytes, tracker)`` pairs to send (``tracker``: a
  :class:`~bip_handshake.PeerAddress`, or a ``(host, port)`` name for a proxy to resolve);
- ``receive_datagram(data, source, now)`` takes whatever arrived;
- ``next_deadline()`` / ``handle_timer(now)`` drive retransmission;
- ``next_event()`` gives :class:`AnnounceResult`, :class:`ScrapeResult` or
  :class:`RequestFailed`, one per request, or None.

How the protocol is run:

- Per tracker address, one connection id is cached for ``connection_lifetime`` seconds (BEP 15:
  one minute) from the connect response. Requests that find no valid id wait for it, and one
  connect serves every request queued meanwhile.
- Every packet carries a transaction id drawn from the injected :class:`random.Random`, unique
  among the packets in flight. A reply is accepted only with a known transaction id, from the
  address the packet went to, and of the action that answers it; everything else is counted
  (:meth:`TrackerClientCore.statistics`) and dropped, so a forged or stray datagram can neither
  complete a request nor disturb one.
- A tracker may also be named by ``(host, port)``, a host name a SOCKS5 proxy resolves (remote
  DNS: the name never reaches our resolver). Its answers come from an address we never saw,
  which the proxy's relay reports: one is accepted from any source with a known transaction id
  of the packet's tracker and the answering action (the shell takes datagrams from the relay
  only), and is decoded by its source's family (BEP 15 sizes an announce's peers by the family
  the packet used between the proxy and the tracker). A tracker named by an address keeps the
  address check.
- A packet unanswered after ``timeout * 2**n`` seconds is sent again with n one higher, up to
  n = ``max_retransmits`` (BEP 15: 15 s and 8); then the request fails with
  :class:`TrackerTimeoutError`. A retransmission that would use an expired connection id
  reconnects first (the same transaction id stays valid, so a late answer still counts).
- An error response to an announce or scrape sent with a connection id that may be stale (a
  cached one, or one a retransmission reused) drops that id and sends the request again at
  once, with a fresh id and a fresh transaction id; a second error fails it with
  :class:`TrackerRejectedError`. Trackers word a stale id differently (ours says "connection
  id expired", opentracker "Connection ID missmatch.", aquatic "Connection invalid or
  expired"; a restart or a rotated secret makes any id stale), so the message is not read.
  An error to a request whose only send carried an id the tracker had just granted for it is
  a real refusal: it fails at once, and the id stays (as libtorrent, which reconnects on an
  error only when the id might have expired). The retry is once per request, so a tracker
  that answers every packet with an error cannot loop us, and the fresh transaction id keeps
  an error answering a retransmission of the refused packet from failing the retry. An error
  answering a connect fails every request waiting for it. The tracker's message is kept to
  :data:`MAX_ERROR_MESSAGE` characters, control characters escaped: it goes into exceptions
  and log lines.
- What an answer says is cleaned, never trusted: peers that could not be dialled (port 0, an
  unspecified or multicast host) and repeats are dropped, and an IPv4-mapped IPv6 peer
  becomes IPv4, as bip's HTTP tracker client does (our own address stays: only the peer id
  in the handshake tells it apart); a negative interval or count (a 32-bit field read as
  signed, 2**32-1 being -1) reads as 0. A datagram bounds the peers of one answer (10,914
  over IPv4, 3,638 over IPv6): no further cap.
- A reply with the right transaction id that does not decode fails its request with
  :class:`MalformedPacketError`.

>>> import random
>>> from bip_handshake import PeerAddress, printable_text
>>> from bip_utracker._codec import ConnectResponse, AnnounceResponse, decode_request
>>> core = TrackerClientCore(rng=random.Random(1))
>>> tracker = PeerAddress.parse("127.0.0.1:6969")
>>> rid = core.announce(tracker, AnnounceParams(b"i" * 20, b"p" * 20, port=6881), now=0.0)
>>> [(connect, to)] = core.datagrams_to_send(0.0)
>>> reply = ConnectResponse(decode_request(connect).transaction_id, 42).encode()
>>> core.receive_datagram(reply, tracker, now=0.1)
>>> [(announce, to)] = core.datagrams_to_send(0.1)
>>> request = decode_request(announce)
>>> request.connection_id, request.port
(42, 6881)
>>> core.receive_datagram(
...     AnnounceResponse(request.transaction_id, 1800, 0, 1).encode(), tracker, now=0.2)
>>> result = core.next_event()
>>> result.request_id == rid, result.interval, result.seeders
(True, 1800, 1)
"""

from __future__ import annotations

import heapq
import logging
import random
from collections import deque
from dataclasses import dataclass
from ipaddress import ip_address
from typing import NewType

from bip_handshake import PeerAddress, printable_text

from ._codec import (
    AnnounceEvent,
    AnnounceRequest,
    AnnounceResponse,
    ConnectRequest,
    ConnectResponse,
    ErrorResponse,
    ScrapeRequest,
    ScrapeResponse,
    ScrapeStats,
    decode_response,
)
from ._errors import (
    LocalProtocolError,
    MalformedPacketError,
    TrackerError,
    TrackerRejectedError,
    TrackerTimeoutError,
)

__all__ = [
    "DEFAULT_CONNECTION_LIFETIME",
    "DEFAULT_MAX_REQUESTS_IN_FLIGHT",
    "DEFAULT_MAX_RETRANSMITS",
    "DEFAULT_RETRANSMIT_TIMEOUT",
    "MAX_ERROR_MESSAGE",
    "MAX_REQUEST_SIZE",
    "AnnounceParams",
    "AnnounceResult",
    "ClientStatistics",
    "RequestFailed",
    "RequestId",
    "ScrapeResult",
    "TrackerAddress",
    "TrackerClientCore",
    "TrackerEvent",
]

DEFAULT_RETRANSMIT_TIMEOUT = 15.0
"""Seconds before the first retransmission (BEP 15); the n-th waits ``timeout * 2**n``."""

DEFAULT_MAX_RETRANSMITS = 8
"""The largest n of BEP 15's ``15 * 2**n``: after that wait, the request fails."""

DEFAULT_CONNECTION_LIFETIME = 60.0
"""Seconds a connection id is used after it was received (BEP 15: one minute)."""

DEFAULT_MAX_REQUESTS_IN_FLIGHT = 10_000
"""How many requests may be in flight at once before :meth:`TrackerClientCore.announce` refuses
(the trio :class:`~bip_utracker.TrackerClient` makes further calls wait for a slot instead)."""

MAX_ERROR_MESSAGE = 1024
"""Characters kept of a tracker's error message (a datagram may carry 65,000): it goes into a
:class:`TrackerRejectedError` and log lines."""

MAX_REQUEST_SIZE = 65_507 - 262
"""Bytes of a request datagram at most (65,245): the largest IPv4 UDP payload (65,507) less
the longest SOCKS5 UDP header (262: a 255-byte host name) a proxy's relay puts in front, so
that a request fits either path. An announce past it (its URLData: a 98-byte packet plus 2
bytes per 255 of URLData) is refused when it starts, never cut (libtorrent cuts URLData to
255 bytes, which would send a tracker a wrong passkey or path without a word)."""

RequestId = NewType("RequestId", int)
"""Names one announce or scrape of a :class:`TrackerClientCore`."""

TrackerAddress = PeerAddress | tuple[str, int]
"""Where a request goes: the tracker's address, or a host name and port for a SOCKS5 proxy to
resolve (remote DNS; never an IP literal, which is a :class:`~bip_handshake.PeerAddress`)."""

_MAX_HOST_NAME = 255  # what SOCKS5's one length byte can carry

_CONNECT, _ANNOUNCE, _SCRAPE = 0, 1, 2
# The action field of an announce reply, as it starts the datagram.
_BARE_ANNOUNCE_ACTION = (1).to_bytes(4, "big")
_KIND_NAMES = ("connect", "announce", "scrape")

# The shell's logger: retransmissions and retries are seen only here, and are DEBUG detail.
_log = logging.getLogger("bip_utracker.client")


@dataclass(frozen=True, slots=True)
class AnnounceParams:
    """What an announce says about us, everything but the ids the core fills in.

    Attributes:
        info_hash: the 20-byte swarm id (a v1 info-hash or a truncated v2 one).
        peer_id: our 20-byte peer id.
        port: our TCP listen port.
        uploaded: bytes uploaded this session.
        downloaded: bytes downloaded this session.
        left: bytes left to download.
        event: started, completed, stopped, or none for a regular announce.
        num_want: how many peers we want; -1 lets the tracker choose.
        key: a random number that identifies us across IP address changes.
        ip: an IPv4 address as an unsigned integer, or 0 for the sender's address.
        url_data: BEP 41 URLData (the tracker URL's path and query).
    """

    info_hash: bytes
    peer_id: bytes
    port: int
    uploaded: int = 0
    downloaded: int = 0
    left: int = 0
    event: AnnounceEvent = AnnounceEvent.NONE
    num_want: int = -1
    key: int = 0
    ip: int = 0
    url_data: bytes = b""

    def request(self, connection_id: int, transaction_id: int) -> AnnounceRequest:
        """The announce request carrying these parameters and the given ids."""
        return AnnounceRequest(
            connection_id=connection_id,
            transaction_id=transaction_id,
            info_hash=self.info_hash,
            peer_id=self.peer_id,
            downloaded=self.downloaded,
            left=self.left,
            uploaded=self.uploaded,
            event=self.event,
            ip=self.ip,
            key=self.key,
            num_want=self.num_want,
            port=self.port,
            url_data=self.url_data,
        )

    def check(self) -> None:
        """Check that these parameters make a request we can send.

        Raises:
            LocalProtocolError: a field does not fit the packet, or the request is longer than
                :data:`MAX_REQUEST_SIZE` (too much URLData).
        """
        size = len(self.request(0, 0).encode())  # encoding checks every field
        if size > MAX_REQUEST_SIZE:
            raise LocalProtocolError(
                f"an announce with {len(self.url_data)} bytes of URLData is {size} bytes, "
                f"more than a UDP datagram through a SOCKS5 proxy carries ({MAX_REQUEST_SIZE})"
            )


@dataclass(frozen=True, slots=True)
class AnnounceResult:
    """A tracker answered an announce.

    Attributes:
        request_id: the announce this answers.
        tracker: the tracker's address (for a tracker named by host name, the address the
            answer came from, as the proxy's relay reported it).
        info_hash: the swarm id announced.
        interval: seconds the tracker wants between announces (0 for a negative one; an
            :class:`~bip_utracker.Announcer` bounds it further).
        leechers: peers in the swarm still downloading (0 for a negative count).
        seeders: peers in the swarm with everything (0 for a negative count).
        peers: some peers of the swarm (of that address's family, but an IPv4-mapped
            IPv6 one made IPv4), in the tracker's order, each once, none with port 0 or an
            unspecified or multicast host.
    """

    request_id: RequestId
    tracker: PeerAddress
    info_hash: bytes
    interval: int
    leechers: int
    seeders: int
    peers: tuple[PeerAddress, ...]


@dataclass(frozen=True, slots=True)
class ScrapeResult:
    """A tracker answered a scrape.

    Attributes:
        request_id: the scrape this answers.
        tracker: the tracker's address (for a tracker named by host name, the address the
            answer came from).
        info_hashes: the swarm ids asked about, in request order.
        files: the statistics of each, in the same order.

    >>> result = ScrapeResult(RequestId(1), PeerAddress.parse("127.0.0.1:1"),
    ...                       (b"a" * 20,), (ScrapeStats(3, 2, 1),))
    >>> result.stats(b"a" * 20).seeders
    3
    """

    request_id: RequestId
    tracker: PeerAddress
    info_hashes: tuple[bytes, ...]
    files: tuple[ScrapeStats, ...]

    def stats(self, info_hash: bytes) -> ScrapeStats:
        """The statistics for *info_hash*; :class:`LocalProtocolError` if it was not asked."""
        for asked, stats in zip(self.info_hashes, self.files, strict=True):
            if asked == info_hash:
                return stats
        raise LocalProtocolError(f"{info_hash.hex()} was not part of this scrape")


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """A request ended without an answer.

    Attributes:
        request_id: the request that failed.
        tracker: the tracker as the request named it: its address, or ``(host, port)``.
        error: :class:`TrackerTimeoutError`, :class:`TrackerRejectedError` (the tracker's
            message) or :class:`MalformedPacketError` (the answer did not decode).
    """

    request_id: RequestId
    tracker: TrackerAddress
    error: TrackerError


TrackerEvent = AnnounceResult | ScrapeResult | RequestFailed
"""What :meth:`TrackerClientCore.next_event` returns."""


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    """A snapshot of a :class:`TrackerClientCore`'s counters.

    Attributes:
        requests_in_flight: announces and scrapes not yet answered.
        trackers: tracker addresses with state (a cached connection id or requests).
        datagrams_sent: every datagram handed out, retransmissions included.
        datagrams_received: every datagram passed to ``receive_datagram``.
        retransmissions: datagrams sent again after a timeout.
        connects: connect requests started (not counting their retransmissions).
        ignored_unknown_transaction: replies whose transaction id matched nothing in flight.
        ignored_wrong_address: replies with a known transaction id from another address.
        ignored_unexpected_action: replies of an action that does not answer the packet.
        malformed: replies to a packet in flight that did not decode (the request failed).
        completed: requests answered.
        failed: requests that failed (timeouts, rejections, malformed answers).
        error_retries: requests sent again with a fresh connection id after an error answer.
    """

    requests_in_flight: int
    trackers: int
    datagrams_sent: int
    datagrams_received: int
    retransmissions: int
    connects: int
    ignored_unknown_transaction: int
    ignored_wrong_address: int
    ignored_unexpected_action: int
    malformed: int
    completed: int
    failed: int
    error_retries: int


class _Tracker:
    """What we know about one tracker (an address, or a name a proxy resolves)."""

    __slots__ = (
        "address",
        "connect",
        "connection_id",
        "expires",
        "in_flight",
        "shown",
        "timer",
        "waiting",
    )

    def __init__(self, address: TrackerAddress) -> None:
        self.address = address
        self.shown = shown_tracker(address)
        self.connection_id: int | None = None
        self.expires = 0.0
        self.connect: _Exchange | None = None
        # Requests waiting for a connection id, in arrival order (a dict for O(1) removal).
        self.waiting: dict[RequestId, _Exchange] = {}
        self.in_flight = 0
        self.timer = 0  # the sequence number of the one live timer entry, 0 for none

    def valid_connection(self, now: float) -> int | None:
        """The cached connection id if it has not expired at *now*."""
        if self.connection_id is not None and now < self.expires:
            return self.connection_id
        return None


class _Exchange:
    """One packet we wait an answer for: a connect, or an announce or scrape request."""

    __slots__ = (
        "attempt",
        "connection_id",
        "deadline",
        "done",
        "fresh",
        "info_hashes",
        "kind",
        "params",
        "request_id",
        "retried",
        "sends",
        "timer",
        "tracker",
        "transaction_id",
    )

    def __init__(
        self,
        kind: int,
        tracker: _Tracker,
        transaction_id: int,
        *,
        request_id: RequestId = RequestId(0),
        params: AnnounceParams | None = None,
        info_hashes: tuple[bytes, ...] = (),
    ) -> None:
        self.kind = kind
        self.tracker = tracker
        self.transaction_id = transaction_id
        self.request_id = request_id
        self.params = params
        self.info_hashes = info_hashes
        self.attempt = 0
        self.deadline: float | None = None  # None while waiting for a connection id
        self.done = False
        self.connection_id: int | None = None  # the id the request was last sent with
        self.retried = False  # already sent again after an error answer
        self.sends = 0  # packets sent under the current transaction id
        # Whether the one packet sent under the current transaction id carried an id the
        # tracker granted while this request waited for it (an error to it is a refusal).
        self.fresh = False
        self.timer = 0  # the sequence number of the one live timer entry, 0 for none


class TrackerClientCore:
    """Announces and scrapes to UDP trackers, without I/O (see the module docstring)."""

    def __init__(
        self,
        *,
        rng: random.Random,
        timeout: float = DEFAULT_RETRANSMIT_TIMEOUT,
        max_retransmits: int = DEFAULT_MAX_RETRANSMITS,
        connection_lifetime: float = DEFAULT_CONNECTION_LIFETIME,
        max_requests: int = DEFAULT_MAX_REQUESTS_IN_FLIGHT,
    ) -> None:
        """Create a core.

        Args:
            rng: the source of transaction ids (inject a seeded one for reproducible tests;
                a :class:`random.SystemRandom` makes ids unguessable to off-path forgers).
            timeout: seconds before the first retransmission of a packet.
            max_retransmits: how many times a packet is sent again before its request fails.
            connection_lifetime: seconds a connection id is used after it was received.
            max_requests: how many requests may be in flight at once.
        """
        if not timeout > 0:
            raise LocalProtocolError(f"timeout must be positive, got {timeout!r}")
        if isinstance(max_retransmits, bool) or not 0 <= max_retransmits <= 32:
            raise LocalProtocolError(f"max_retransmits is in 0..32, got {max_retransmits!r}")
        if not connection_lifetime > 0:
            raise LocalProtocolError(
                f"connection_lifetime must be positive, got {connection_lifetime!r}"
            )
        if isinstance(max_requests, bool) or not isinstance(max_requests, int) or max_requests < 1:
            raise LocalProtocolError(f"max_requests is an int of 1 or more, got {max_requests!r}")
        self._rng = rng
        self._timeout = float(timeout)
        self._max_retransmits = max_retransmits
        self._lifetime = float(connection_lifetime)
        self._max_requests = max_requests
        self._trackers: dict[TrackerAddress, _Tracker] = {}
        self._transactions: dict[int, _Exchange] = {}
        self._requests: dict[RequestId, _Exchange] = {}
        # (deadline, sequence, exchange or tracker); stale entries are skipped when popped.
        self._timers: list[tuple[float, int, _Exchange | _Tracker]] = []
        self._sequence = 0
        self._next_request = 1
        self._outgoing: list[tuple[bytes, TrackerAddress]] = []
        self._events: deque[TrackerEvent] = deque()
        self._sent = 0
        self._received = 0
        self._retransmissions = 0
        self._connects = 0
        self._unknown_transaction = 0
        self._wrong_address = 0
        self._unexpected_action = 0
        self._malformed = 0
        self._completed = 0
        self._failed = 0
        self._error_retries = 0

    @property
    def max_requests(self) -> int:
        """How many requests may be in flight at once (a shell makes further ones wait)."""
        return self._max_requests

    # --- requests ------------------------------------------------------------------------------

    def announce(self, tracker: TrackerAddress, params: AnnounceParams, now: float) -> RequestId:
        """Start an announce to *tracker*; its result comes from :meth:`next_event`.

        Raises:
            LocalProtocolError: a parameter does not fit the packet, the packet is longer
                than :data:`MAX_REQUEST_SIZE`, the tracker address is not usable, or
                ``max_requests`` (:data:`DEFAULT_MAX_REQUESTS_IN_FLIGHT`) are in flight.
        """
        if not isinstance(params, AnnounceParams):
            raise LocalProtocolError(f"params is an AnnounceParams, got {type(params).__name__}")
        # Every field and the size checked now, not at the first send: a datagram too long
        # for the system (EMSGSIZE) or for SOCKS5's header would fail every send until the
        # timeout, where the caller can be told at once.
        params.check()
        return self._start(_ANNOUNCE, tracker, now, params=params)

    def scrape(
        self, tracker: TrackerAddress, info_hashes: tuple[bytes, ...], now: float
    ) -> RequestId:
        """Start a scrape of 1 to 74 swarm ids at *tracker*; see :meth:`next_event` for the result.

        Raises:
            LocalProtocolError: a wrong number of hashes, a hash that is not 20 bytes, an
                unusable tracker address, or too many requests in flight.
        """
        hashes = tuple(info_hashes)
        ScrapeRequest(0, 0, hashes).encode()  # checks the count and every hash now
        return self._start(_SCRAPE, tracker, now, info_hashes=hashes)

    def cancel(self, request_id: RequestId) -> bool:
        """Forget a request: no event will come for it. False if it was not in flight."""
        exchange = self._requests.get(request_id)
        if exchange is None:
            return False
        self._finish(exchange)
        return True

    def fail_tracker(self, tracker: TrackerAddress, error: TrackerError) -> int:
        """Fail every request to *tracker* with *error*, each with a :class:`RequestFailed`
        event: the shell could not send to it (through a proxy, no UDP association is up).
        Returns how many failed. Its cached connection id stays (the tracker did not refuse
        it); a connect waiting for an answer is dropped with its requests.
        """
        doomed = [
            exchange for exchange in self._requests.values() if exchange.tracker.address == tracker
        ]
        for exchange in doomed:
            self._fail(exchange, error)
        return len(doomed)

    # --- datagrams and time --------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, TrackerAddress]]:
        """The datagrams to send now, each with its destination; the list is handed over."""
        del now  # packets are built when the state changes; the argument keeps the API uniform
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    def receive_datagram(self, data: bytes, source: PeerAddress, now: float) -> None:
        """Take a datagram that arrived from *source*; it may complete or fail a request.

        Nothing a datagram holds raises: anything that is not an answer to a packet in flight
        is counted and dropped.
        """
        self._received += 1
        raw = bytes(data)
        exchange = (
            self._transactions.get(int.from_bytes(raw[4:8], "big")) if len(raw) >= 8 else None
        )
        if exchange is None:
            self._unknown_transaction += 1
            return
        tracker = exchange.tracker
        if isinstance(tracker.address, PeerAddress):
            if source != tracker.address:
                self._wrong_address += 1
                return
            family = tracker.address.family
        else:
            # A name the proxy resolved: the answer comes from an address we never saw (the
            # relay vouches for it, the transaction id names the packet). The packet between
            # the proxy and the tracker used the source's family: its peers are sized by it.
            source = source.normalized()
            family = source.family
        if exchange.kind == _ANNOUNCE and raw[:4] == _BARE_ANNOUNCE_ACTION and len(raw) == 8:
            # A bare announce header with no body is how opentracker refuses a torrent that is
            # not on its whitelist: a refusal, not line noise.
            self._fail_exchange(
                exchange,
                TrackerRejectedError(
                    "the tracker answered the announce with an empty reply (opentracker does "
                    "this for a torrent that is not on its whitelist)"
                ),
            )
            return
        try:
            response = decode_response(raw, family=family)
        except MalformedPacketError as error:
            self._malformed += 1
            self._fail_exchange(exchange, error)
            return
        if isinstance(response, ErrorResponse):
            self._on_error(exchange, response, now)
        elif exchange.kind == _CONNECT and isinstance(response, ConnectResponse):
            self._on_connected(exchange, response, now)
        elif exchange.kind == _ANNOUNCE and isinstance(response, AnnounceResponse):
            params = exchange.params
            assert params is not None
            self._complete(
                exchange,
                AnnounceResult(
                    exchange.request_id,
                    source,
                    params.info_hash,
                    max(response.interval, 0),
                    max(response.leechers, 0),
                    max(response.seeders, 0),
                    _dialable(response.peers),
                ),
            )
        elif exchange.kind == _SCRAPE and isinstance(response, ScrapeResponse):
            if len(response.files) != len(exchange.info_hashes):
                self._malformed += 1
                self._fail_exchange(
                    exchange,
                    MalformedPacketError(
                        f"a scrape of {len(exchange.info_hashes)} info-hashes was answered "
                        f"with {len(response.files)}"
                    ),
                )
                return
            self._complete(
                exchange,
                ScrapeResult(
                    exchange.request_id,
                    source,
                    exchange.info_hashes,
                    tuple(_counted(stats) for stats in response.files),
                ),
            )
        else:
            # A reply of the wrong kind is not an answer (libtorrent ignores these too).
            self._unexpected_action += 1

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` next has work, or None if nothing is scheduled."""
        timers = self._timers
        while timers and not self._live(timers[0]):
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def handle_timer(self, now: float) -> None:
        """Retransmit or fail every packet whose deadline passed at *now*; forget expired ids."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            entry = heapq.heappop(timers)
            if not self._live(entry):
                continue
            target = entry[2]
            if isinstance(target, _Tracker):
                # A tracker's one timer is its connection id's expiry: the id goes now, even
                # with a request in flight (a retransmission of it connects again), so that
                # the tracker is forgotten once idle, now or when its last request ends.
                target.connection_id = None
                self._drop_if_idle(target)
            else:
                self._on_timeout(target, now)

    def next_event(self) -> TrackerEvent | None:
        """The next result or failure, or None when there is none."""
        return self._events.popleft() if self._events else None

    def statistics(self) -> ClientStatistics:
        """A snapshot of the counters."""
        return ClientStatistics(
            requests_in_flight=len(self._requests),
            trackers=len(self._trackers),
            datagrams_sent=self._sent,
            datagrams_received=self._received,
            retransmissions=self._retransmissions,
            connects=self._connects,
            ignored_unknown_transaction=self._unknown_transaction,
            ignored_wrong_address=self._wrong_address,
            ignored_unexpected_action=self._unexpected_action,
            malformed=self._malformed,
            completed=self._completed,
            failed=self._failed,
            error_retries=self._error_retries,
        )

    def connection_id(self, tracker: TrackerAddress, now: float) -> int | None:
        """The connection id cached for *tracker* and still valid at *now*, if any."""
        state = self._trackers.get(tracker)
        return None if state is None else state.valid_connection(now)

    # --- internals -----------------------------------------------------------------------------

    def _start(
        self,
        kind: int,
        address: TrackerAddress,
        now: float,
        *,
        params: AnnounceParams | None = None,
        info_hashes: tuple[bytes, ...] = (),
    ) -> RequestId:
        if isinstance(address, PeerAddress):
            if not address.is_connectable:
                raise LocalProtocolError(f"cannot send to tracker address {address}")
        else:
            address = _checked_name(address)
        if len(self._requests) >= self._max_requests:
            raise LocalProtocolError(f"{self._max_requests} requests are already in flight")
        tracker = self._trackers.get(address)
        if tracker is None:
            tracker = self._trackers[address] = _Tracker(address)
        request_id = RequestId(self._next_request)
        self._next_request += 1
        exchange = _Exchange(
            kind,
            tracker,
            self._new_transaction_id(),
            request_id=request_id,
            params=params,
            info_hashes=info_hashes,
        )
        self._transactions[exchange.transaction_id] = exchange
        self._requests[request_id] = exchange
        tracker.in_flight += 1
        self._send_when_connected(exchange, now)
        return request_id

    def _new_transaction_id(self) -> int:
        # Unique among packets in flight, so a reply names exactly one of them.
        while True:
            transaction_id = self._rng.getrandbits(32)
            if transaction_id not in self._transactions:
                return transaction_id

    def _wait_for_connection(self, exchange: _Exchange, now: float) -> None:
        tracker = exchange.tracker
        exchange.deadline = None
        exchange.timer = 0
        tracker.waiting[exchange.request_id] = exchange
        if tracker.connect is None:
            connect = _Exchange(_CONNECT, tracker, self._new_transaction_id())
            self._transactions[connect.transaction_id] = connect
            tracker.connect = connect
            self._connects += 1
            self._send(connect, 0, now)

    def _send(
        self, exchange: _Exchange, connection_id: int, now: float, *, fresh: bool = False
    ) -> None:
        # Fresh only if no packet under this transaction id went before: an error could
        # answer an earlier one, sent with an older id.
        exchange.fresh = fresh and exchange.sends == 0
        exchange.sends += 1
        if exchange.kind == _CONNECT:
            packet = ConnectRequest(exchange.transaction_id).encode()
        else:
            exchange.connection_id = connection_id  # an error answer drops this id, not a newer
            if exchange.kind == _ANNOUNCE:
                assert exchange.params is not None
                packet = exchange.params.request(connection_id, exchange.transaction_id).encode()
            else:
                packet = ScrapeRequest(
                    connection_id, exchange.transaction_id, exchange.info_hashes
                ).encode()
        self._outgoing.append((packet, exchange.tracker.address))
        self._sent += 1
        exchange.deadline = now + self._timeout * (2**exchange.attempt)
        self._schedule(exchange.deadline, exchange)

    def _schedule(self, deadline: float, target: _Exchange | _Tracker) -> None:
        """Arm *target*'s one timer; an earlier entry for it goes stale."""
        self._sequence += 1
        target.timer = self._sequence
        heapq.heappush(self._timers, (deadline, self._sequence, target))

    def _live(self, entry: tuple[float, int, _Exchange | _Tracker]) -> bool:
        """Whether a timer entry still means something (entries are never removed eagerly)."""
        _, sequence, target = entry
        if isinstance(target, _Tracker):
            return self._trackers.get(target.address) is target and target.timer == sequence
        return not target.done and target.timer == sequence

    def _on_timeout(self, exchange: _Exchange, now: float) -> None:
        if exchange.attempt >= self._max_retransmits:
            waited = self._timeout * (2 ** (self._max_retransmits + 1) - 1)
            self._fail_exchange(
                exchange,
                TrackerTimeoutError(
                    f"no answer from tracker {exchange.tracker.shown} after "
                    f"{self._max_retransmits + 1} attempts ({waited:g} s)"
                ),
            )
            return
        exchange.attempt += 1
        self._retransmissions += 1
        _log.debug(
            "no answer from tracker %s to a %s: sending it again (retransmission %d of %d)",
            exchange.tracker.shown,
            _KIND_NAMES[exchange.kind],
            exchange.attempt,
            self._max_retransmits,
        )
        if exchange.kind == _CONNECT:
            self._send(exchange, 0, now)
            return
        # An id that expired while we waited would be refused: a new one first.
        self._send_when_connected(exchange, now)

    def _on_connected(self, connect: _Exchange, response: ConnectResponse, now: float) -> None:
        tracker = connect.tracker
        self._retire(connect)
        tracker.connect = None
        tracker.connection_id = response.connection_id
        tracker.expires = now + self._lifetime
        self._schedule(tracker.expires, tracker)
        waiting = list(tracker.waiting.values())
        tracker.waiting.clear()
        for exchange in waiting:
            self._send(exchange, response.connection_id, now, fresh=True)

    def _on_error(self, exchange: _Exchange, response: ErrorResponse, now: float) -> None:
        message = _tidy_message(response.message)
        if exchange.kind == _CONNECT:
            self._fail_exchange(exchange, TrackerRejectedError(message))
            return
        tracker = exchange.tracker
        if exchange.fresh:
            # The id was granted for this very packet: the tracker refuses the request, not
            # the id, and asking again would only cost it another round trip.
            self._fail(exchange, TrackerRejectedError(message))
            return
        # Whatever the message says, the id may be what is refused (see the module docstring).
        # Only the id this request used is dropped: a newer one, got meanwhile by another
        # request's reconnect, is fresh.
        if tracker.connection_id == exchange.connection_id:
            tracker.connection_id = None
        if exchange.retried:
            self._fail(exchange, TrackerRejectedError(message))
            return
        exchange.retried = True
        self._error_retries += 1
        _log.debug(
            "tracker %s answered a %s with an error (%r): sending it again with a fresh "
            "connection id",
            tracker.shown,
            _KIND_NAMES[exchange.kind],
            message,
        )
        self._renew_transaction_id(exchange)
        # The error proves the tracker answers: the retry gets the full retransmission schedule.
        exchange.attempt = 0
        self._send_when_connected(exchange, now)

    def _send_when_connected(self, exchange: _Exchange, now: float) -> None:
        """Send an announce or scrape with the tracker's connection id, or once it has one."""
        connection_id = exchange.tracker.valid_connection(now)
        if connection_id is None:
            self._wait_for_connection(exchange, now)
        else:
            self._send(exchange, connection_id, now)

    def _renew_transaction_id(self, exchange: _Exchange) -> None:
        """Give *exchange* a new transaction id; answers to the old one become unknown."""
        # Drawn while the old id is still registered, so the new one differs from it.
        transaction_id = self._new_transaction_id()
        if self._transactions.get(exchange.transaction_id) is exchange:
            del self._transactions[exchange.transaction_id]
        exchange.transaction_id = transaction_id
        exchange.sends = 0
        self._transactions[transaction_id] = exchange

    def _complete(self, exchange: _Exchange, event: AnnounceResult | ScrapeResult) -> None:
        self._finish(exchange)
        self._completed += 1
        self._events.append(event)

    def _fail_exchange(self, exchange: _Exchange, error: TrackerError) -> None:
        """Fail a request, or for a connect every request waiting for it."""
        if exchange.kind != _CONNECT:
            self._fail(exchange, error)
            return
        tracker = exchange.tracker
        self._retire(exchange)
        tracker.connect = None
        for waiting in list(tracker.waiting.values()):
            self._fail(waiting, error)

    def _fail(self, exchange: _Exchange, error: TrackerError) -> None:
        self._finish(exchange)
        self._failed += 1
        self._events.append(RequestFailed(exchange.request_id, exchange.tracker.address, error))

    def _retire(self, exchange: _Exchange) -> None:
        """Stop waiting for answers to *exchange*; its timers go stale."""
        exchange.done = True
        exchange.timer = 0
        if self._transactions.get(exchange.transaction_id) is exchange:
            del self._transactions[exchange.transaction_id]

    def _finish(self, exchange: _Exchange) -> None:
        """Take a request out of every table."""
        self._retire(exchange)
        tracker = exchange.tracker
        del self._requests[exchange.request_id]
        tracker.waiting.pop(exchange.request_id, None)
        tracker.in_flight -= 1
        if not tracker.waiting and tracker.connect is not None:
            # Nobody needs that connection id any more.
            self._retire(tracker.connect)
            tracker.connect = None
        self._drop_if_idle(tracker)

    def _drop_if_idle(self, tracker: _Tracker) -> None:
        """Forget a tracker with no request and no connection id (bounds our memory)."""
        if tracker.in_flight or tracker.connect is not None:
            return
        if tracker.connection_id is not None:
            return  # kept for later requests; its expiry timer forgets it and comes back here
        if self._trackers.get(tracker.address) is tracker:
            del self._trackers[tracker.address]


def _checked_name(address: object) -> tuple[str, int]:
    """A ``(host, port)`` tracker name as a key: the host in lower case (names are not case
    sensitive, and one connection id serves all spellings).

    Raises:
        LocalProtocolError: not a pair of a host name (1 to 255 ASCII characters, not an IP
            literal) and a port in 1..65535.
    """
    if not (
        isinstance(address, tuple)
        and len(address) == 2
        and isinstance(address[0], str)
        and isinstance(address[1], int)
        and not isinstance(address[1], bool)
    ):
        raise LocalProtocolError(
            f"a tracker is a PeerAddress or (host name, port), got {address!r:.80}"
        )
    host, port = address
    if not 1 <= port <= 0xFFFF:
        raise LocalProtocolError(f"a tracker port is 1..65535, got {port}")
    if not host.isascii() or not 0 < len(host) <= _MAX_HOST_NAME:
        raise LocalProtocolError(f"not a tracker host name: {host!r:.80}")
    try:
        ip_address(host)
    except ValueError:
        return host.lower(), port
    # An address is checked against the answers' source: it must not pass as a name.
    raise LocalProtocolError(f"an IP address is a PeerAddress, not a name: {host!r}")


def shown_tracker(address: TrackerAddress) -> str:
    """A tracker's address or ``(host, port)`` name as ``host:port``, for messages (a name's
    tuple would show as ``('host', 1)``)."""
    if isinstance(address, PeerAddress):
        return str(address)
    return f"{address[0]}:{address[1]}"


def _dialable(peers: tuple[PeerAddress, ...]) -> tuple[PeerAddress, ...]:
    """*peers* as we would dial them (an IPv4-mapped IPv6 address as IPv4), without those no
    one could dial and without repeats, in the tracker's order."""
    # One pass, a dict for order: an answer of 10,000 copies of one peer costs one entry.
    normalized = (peer.normalized() for peer in peers)
    return tuple(dict.fromkeys(peer for peer in normalized if peer.is_connectable))


def _counted(stats: ScrapeStats) -> ScrapeStats:
    """*stats* with a negative count (a 32-bit field read as signed) read as 0."""
    if min(stats.seeders, stats.completed, stats.leechers) >= 0:
        return stats
    return ScrapeStats(max(stats.seeders, 0), max(stats.completed, 0), max(stats.leechers, 0))


def _tidy_message(message: str) -> str:
    """A tracker's error message as :func:`~bip_handshake.printable_text` shows it, at most
    :data:`MAX_ERROR_MESSAGE` characters: a newline or a terminal escape in it can neither
    fake a log line nor move a cursor."""
    return printable_text(message, MAX_ERROR_MESSAGE)
