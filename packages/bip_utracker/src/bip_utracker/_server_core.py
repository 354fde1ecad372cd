"""The UDP tracker server as a sans-IO datagram core (BEP 15, BEP 41).

Datagrams go in with :meth:`TrackerServerCore.receive_datagram` (bytes, the sender's socket
address, the time), replies come out of :meth:`~TrackerServerCore.datagrams_to_send`, and
:meth:`~TrackerServerCore.handle_timer` expires quiet swarms when
:meth:`~TrackerServerCore.next_deadline` says. No sockets, no clock: a trio shell
(:func:`~bip_utracker.serve_tracker`), an asyncio one or a test drives it.

What it does with a datagram, in order:

1. Per-address rate limit (a token bucket per IP): over the limit, the datagram is dropped
   unanswered, so that a flood with a victim's source address reflects nothing.
2. Shape: anything that is not a well-formed connect, announce or scrape request is garbage and
   gets no answer (it is counted), since its sender may not even speak the protocol. So is a
   datagram from source port 0: no answer could reach it, so it can only be forged. A scrape
   of more than :data:`~bip_utracker._codec.MAX_SCRAPE_HASHES` (74) info-hashes is a scrape
   of its first 74, as opentracker answers it: a client that asks too much at once still gets
   the start of what it asked, and the answer stays smaller than the request. An announce's
   event is no part of its shape: 4, libtorrent's BEP 21 ``paused`` (sent by a partial seed
   for each regular announce, its first included), is a regular announce, and so is any
   other value BEP 15 does not define, as opentracker serves them (those are counted in
   ``unknown_events``). Dropping them left libtorrent's partial seeds out of the swarm.
3. Connection id (announce and scrape): stateless, see :mod:`._connection_ids`. A wrong or
   expired one is answered with a short error, never larger than the request (whoever forged
   the source address gains no amplification from it), and nothing is stored.
4. Allow and deny lists of info-hashes: an announce for a torrent not allowed gets an error
   ("torrent not registered with this tracker"); a scrape answers zeros for it, so it reveals
   nothing.
5. The handler: the built-in :class:`~bip_utracker.SwarmStore` (called on an allocation-light
   path) or a user's :class:`TrackerHandler`. A handler that raises costs that request an error
   reply ("internal tracker error"), never the server.

Every reply fits in ``max_response_size`` bytes over IPv4 and 20 bytes less over IPv6, whose
header is 20 bytes longer (so that a reply that fits one frame over IPv4 fits it over IPv6 too):
an announce carries as many peers as fit (BEP 15 sends 6-byte IPv4 peers over IPv4 and 18-byte
IPv6 peers over IPv6; an IPv4 client reaching a dual-stack socket as ``::ffff:a.b.c.d`` is
IPv4), and error messages are cut to fit.
"""

from __future__ import annotations

import logging
import math
import random
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bip_metainfo import InfoHash

from ._announcer import DEFAULT_MAX_ANNOUNCE_INTERVAL
from ._checks import seconds
from ._codec import (
    _ANNOUNCE_RESPONSE,
    _CONNECT_RESPONSE,
    _HASH_SIZE,
    _RESPONSE_HEADER,
    _SCRAPE_STATS,
    ANNOUNCE_REQUEST_SIZE,
    MAX_SCRAPE_HASHES,
    PAUSED_EVENT,
    PROTOCOL_ID,
    AnnounceRequest,
    ScrapeStats,
    decode_request,
)
from ._connection_ids import DEFAULT_CONNECTION_ID_WINDOW, ConnectionIds
from ._errors import LocalProtocolError
from ._options import options_are_well_formed
from ._swarm import (
    DEFAULT_MAX_PEERS,
    DEFAULT_MAX_PEERS_PER_HOST,
    DEFAULT_MAX_PEERS_PER_SWARM,
    DEFAULT_MAX_SWARMS,
    AnnounceAnswer,
    SwarmStatistics,
    SwarmStore,
)

__all__ = [
    "DEFAULT_MAX_RESPONSE_SIZE",
    "MIN_RESPONSE_SIZE",
    "Address",
    "Refusal",
    "ServerConfig",
    "ServerStatistics",
    "TrackerHandler",
    "TrackerServerCore",
]

_log = logging.getLogger("bip_utracker.server")

Address = tuple[Any, ...]
"""A socket address as the socket module gives it: ``(host, port)`` for IPv4,
``(host, port, flowinfo, scope_id)`` for IPv6; replies go back to it unchanged."""

DEFAULT_MAX_RESPONSE_SIZE = 1472
"""The largest reply by default: what fits one 1500-byte Ethernet frame after the IPv4 (20
bytes) and UDP (8) headers, room for 242 IPv4 peers in an announce. Over IPv6 (a 40-byte
header) a reply gets 20 bytes less, 1452: 79 IPv6 peers, not 80, whose 1508-byte packet would
be fragmented, and fragmented IPv6 is often dropped on the way (RFC 7872)."""

_IPV6_EXTRA_HEADER = 40 - 20  # bytes an IPv6 header takes beyond an IPv4 one

MIN_RESPONSE_SIZE = 8 + 12 * MAX_SCRAPE_HASHES + _IPV6_EXTRA_HEADER
"""The smallest allowed ``max_response_size`` (916): a scrape for 74 info-hashes (896 bytes)
must fit, over IPv6 too."""

_INT32_MAX = 0x7FFFFFFF
_REQUEST_HEADER = struct.Struct(">QII")  # connection id (or protocol id), action, transaction
# The fields of an announce request after its header that the built-in store needs: info-hash,
# left, event, num_want, port (peer id, downloaded, uploaded, ip and key are skipped).
_ANNOUNCE_FIELDS = struct.Struct(">20s20x8xq8xi8xiH")
_ACTION_CONNECT, _ACTION_ANNOUNCE, _ACTION_SCRAPE, _ACTION_ERROR = 0, 1, 2, 3
_IPV4_PEER, _IPV6_PEER = 6, 18
_MAPPED_PREFIX = bytes(10) + b"\xff\xff"

NOT_REGISTERED = "torrent not registered with this tracker"
DENIED = "torrent denied by this tracker"
# Short on purpose: this error answers a request whose sender is not proven (the id is what
# would prove it), so with a forged source address it goes to a victim. 8 + 21 bytes stay under
# the smallest request answered with it (a 36-byte scrape): no amplification.
BAD_CONNECTION_ID = "connection id expired"
assert 8 + len(BAD_CONNECTION_ID) <= 16 + _HASH_SIZE  # under the smallest request, a scrape
INTERNAL_ERROR = "internal tracker error"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A handler's "no" to a request; the client gets an error response with *message*."""

    message: str


class TrackerHandler(Protocol):
    """Custom tracker logic: what to answer to announces and scrapes.

    The server core has already checked the request's shape, connection id, rate limit and
    info-hash lists before calling. :class:`~bip_utracker.SwarmStore` is the built-in
    implementation; a handler may wrap one (to authenticate BEP 41 URL data, say, then
    delegate). Methods run on the server's only task: they must not block.
    """

    def announce(
        self, request: AnnounceRequest, peer: bytes, num_want: int, now: float
    ) -> AnnounceAnswer | Refusal:
        """Answer an announce.

        Args:
            request: the decoded request (``url_data`` holds the BEP 41 path and query).
            peer: the announcer's compact address: the sender's IP (not the request's ``ip``
                field, which anybody could fill with a victim's) and the announced port; 6
                bytes for IPv4, 18 for IPv6. The answer's peers must be of the same size. The
                port may be 0 (an announcer that listens nowhere: the built-in store answers
                it without recording it).
            num_want: how many peers to return at most (the request's, capped by the server).
            now: the current time, in seconds.
        """
        ...

    def scrape(self, info_hashes: Sequence[bytes], now: float) -> Sequence[ScrapeStats] | Refusal:
        """The statistics of each info-hash (allowed ones only), in order."""
        ...


def _positive_int(name: str, value: object, *, maximum: int = _INT32_MAX) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise LocalProtocolError(f"{name} is an int in 1..{maximum}, got {value!r}")


def _swarm_ids(hashes: Iterable[bytes | InfoHash], what: str) -> frozenset[bytes]:
    """20-byte swarm ids from info-hashes: v1 as is, v2 truncated, both for a hybrid."""
    ids: set[bytes] = set()
    for value in hashes:
        if isinstance(value, InfoHash):
            ids.update(value.swarm_ids())
        elif isinstance(value, bytes) and len(value) in (20, 32):
            ids.add(value[:_HASH_SIZE])
        else:
            raise LocalProtocolError(
                f"{what} holds InfoHash values or 20- or 32-byte hashes, got {value!r:.60}"
            )
    return frozenset(ids)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How a tracker server behaves; every limit has a safe default.

    Attributes:
        interval: seconds clients are told to wait between announces.
        peer_grace: seconds a peer stays past ``interval`` without announcing.
        default_num_want: peers returned when a client leaves it to us (``num_want`` < 0).
        max_num_want: peers returned at most, whatever the client asks (or the default says).
        max_response_size: bytes per reply at most over IPv4, 20 less over IPv6 (at least
            :data:`MIN_RESPONSE_SIZE`); announces carry as many peers as fit.
        max_swarms: swarms the built-in store keeps at most. A new swarm beyond it evicts the
            least recently announced swarm still on probation: one that neither two hosts at
            once nor a peer's re-announce half an ``interval`` (at most 15 minutes) after its
            previous one showed to be real. Those are promoted to a protected segment (at most
            90% of ``max_swarms``; while it is full of swarms with a peer present, promotions
            wait), so a flood of announces for random info-hashes does not push out the swarms
            in use (see :class:`~bip_utracker.SwarmStore`).
        max_peers_per_swarm: peers per swarm the built-in store keeps at most.
        max_peers: peers over all swarms the built-in store keeps at most.
        max_peers_per_host: entries (ports) one IP address keeps at most in one swarm of the
            built-in store; its further ports are answered, not recorded (one IP announcing
            many ports would otherwise push every other peer out of a swarm).
        rate_limit: requests per second allowed per IP address (per /64 network for IPv6: a
            token bucket), or None for no limit. Connect, announce and scrape all count; the
            default leaves room for a seedbox announcing a thousand torrents at once, or for
            many clients behind one NAT.
        rate_burst: requests an idle address may send at once.
        max_rate_limited_addresses: addresses the rate limiter remembers at most (under a
            flood from more addresses, it forgets the quietest early).
        allowed_info_hashes: if not None, the only torrents served (a whitelist, as
            opentracker's); v2 hashes match by their first 20 bytes.
        denied_info_hashes: torrents never served (a blacklist).
        connection_id_window: seconds per connection id window (ids live one to two windows).
        expiry_interval: seconds between sweeps for swarms nobody announced to.
    """

    interval: int = 1800
    peer_grace: float = 900.0
    default_num_want: int = 50
    max_num_want: int = 200
    max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE
    max_swarms: int = DEFAULT_MAX_SWARMS
    max_peers_per_swarm: int = DEFAULT_MAX_PEERS_PER_SWARM
    max_peers: int = DEFAULT_MAX_PEERS
    max_peers_per_host: int = DEFAULT_MAX_PEERS_PER_HOST
    rate_limit: float | None = 100.0
    rate_burst: int = 1000
    max_rate_limited_addresses: int = 100_000
    allowed_info_hashes: frozenset[bytes] | None = None
    denied_info_hashes: frozenset[bytes] = frozenset()
    connection_id_window: float = DEFAULT_CONNECTION_ID_WINDOW
    expiry_interval: float = 60.0

    def __post_init__(self) -> None:
        _positive_int("interval", self.interval)
        seconds("peer_grace", self.peer_grace)
        _positive_int("max_num_want", self.max_num_want)
        if isinstance(self.default_num_want, bool) or not isinstance(self.default_num_want, int):
            raise LocalProtocolError(f"default_num_want is an int, got {self.default_num_want!r}")
        if self.default_num_want < 0:
            raise LocalProtocolError(f"default_num_want is 0 or more, got {self.default_num_want}")
        _positive_int("max_response_size", self.max_response_size, maximum=65_507)
        if self.max_response_size < MIN_RESPONSE_SIZE:
            raise LocalProtocolError(
                f"max_response_size is at least {MIN_RESPONSE_SIZE} (a full scrape), "
                f"got {self.max_response_size}"
            )
        _positive_int("max_swarms", self.max_swarms)
        _positive_int("max_peers_per_swarm", self.max_peers_per_swarm)
        _positive_int("max_peers", self.max_peers)
        _positive_int("max_peers_per_host", self.max_peers_per_host)
        if self.max_peers < self.max_peers_per_swarm:
            raise LocalProtocolError("max_peers is less than max_peers_per_swarm")
        if self.rate_limit is not None:
            seconds("rate_limit", self.rate_limit)
        _positive_int("rate_burst", self.rate_burst)
        _positive_int("max_rate_limited_addresses", self.max_rate_limited_addresses)
        if self.allowed_info_hashes is not None:
            object.__setattr__(
                self,
                "allowed_info_hashes",
                _swarm_ids(self.allowed_info_hashes, "allowed_info_hashes"),
            )
        object.__setattr__(
            self, "denied_info_hashes", _swarm_ids(self.denied_info_hashes, "denied_info_hashes")
        )
        seconds("connection_id_window", self.connection_id_window)
        seconds("expiry_interval", self.expiry_interval)


@dataclass(frozen=True, slots=True)
class ServerStatistics:
    """A snapshot of a tracker server's counters (:meth:`TrackerServerCore.statistics`).

    Every datagram received ends in exactly one of: ``rate_limited``, ``malformed``, or one of
    the request counters (``connects``, ``announces``, ``scrapes``); a request then is answered
    (by its response or an error) and, if refused, also counted in ``bad_connection_id``,
    ``refused`` or ``handler_failures``.

    Attributes:
        datagrams: datagrams received.
        connects: well-formed connect requests.
        announces: well-formed announce requests.
        scrapes: well-formed scrape requests.
        malformed: datagrams that were no request at all, or came from source port 0
            (dropped unanswered).
        rate_limited: datagrams over their address's rate limit (dropped unanswered).
        bad_connection_id: announces and scrapes with a wrong or expired connection id.
        refused: announces refused by the info-hash lists, and requests by the handler.
        handler_failures: requests whose handler raised or answered nonsense.
        errors_sent: error responses sent (all the refusals above).
        swarms: swarms in the built-in store (0 with a custom handler).
        peers: peers in the built-in store, both families (0 with a custom handler).
        seeders: of those, peers that have everything.
        leechers: of those, peers still downloading.
        store: the built-in store's own counters (None with a custom handler): its segments
            (``protected_swarms``, ``probation_swarms``), ``promoted_swarms``,
            ``demoted_swarms``, ``refused_promotions``, evictions per segment
            (``evicted_probation_swarms``, ``evicted_protected_swarms``), and peers evicted,
            expired or left unrecorded (see :class:`~bip_utracker.SwarmStatistics`). A rising
            ``refused_promotions`` says ``max_swarms`` is too small, or that an attacker holds
            the protected segment.
        unknown_events: of the announces, those whose event was none of BEP 15's 0 to 3 nor
            4 (BEP 21's ``paused``, which libtorrent sends): served as regular announces, as
            opentracker serves them, and counted here once served (a forged one refused for
            its connection id is not) in case a client sends nonsense.
    """

    datagrams: int
    connects: int
    announces: int
    scrapes: int
    malformed: int
    rate_limited: int
    bad_connection_id: int
    refused: int
    handler_failures: int
    errors_sent: int
    swarms: int
    peers: int
    seeders: int
    leechers: int
    store: SwarmStatistics | None = None
    unknown_events: int = 0


class _RateLimiter:
    """Token buckets per address, forgotten once full, in bounded memory.

    Each bucket is one float, its "theoretical arrival time" (the generic cell rate algorithm,
    equivalent to a token bucket of ``burst`` tokens refilled at ``rate`` per second): the time
    at which it would be full again. A request at *now* passes if that time is at most
    ``(burst - 1) / rate`` ahead, and pushes it ``1 / rate`` further.

    Buckets live in two generations swapped every ``burst / rate`` seconds (the time an empty
    bucket takes to fill): one untouched for a whole generation is full again, so dropping it
    loses nothing. Touching a bucket of the old generation moves it to the new one. When the
    new generation reaches half the address bound early, it is swapped early: memory stays
    bounded and a flood from that many addresses only makes the limiter forget sooner.
    """

    __slots__ = ("_current", "_half", "_interval", "_previous", "_refill", "_swap_at", "_tolerance")

    def __init__(self, rate: float, burst: int, max_addresses: int) -> None:
        self._interval = 1.0 / rate
        # (a millionth of a token of slack, so that float rounding never costs a whole one)
        self._tolerance = (burst - 1 + 1e-6) / rate
        self._refill = burst / rate
        self._half = max(1, max_addresses // 2)
        self._current: dict[str | bytes, float] = {}
        self._previous: dict[str | bytes, float] = {}
        self._swap_at = -math.inf

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def swap_if_due(self, now: float) -> None:
        if now >= self._swap_at or len(self._current) >= self._half:
            self._previous = self._current
            self._current = {}
            self._swap_at = now + self._refill

    def admit(self, key: str | bytes, now: float) -> bool:
        """Take a token from *key*'s bucket; False if it has none."""
        current = self._current
        if now >= self._swap_at or len(current) >= self._half:
            self.swap_if_due(now)
            current = self._current
        due = current.get(key)
        if due is None:
            due = self._previous.pop(key, now)
        due = max(due, now)
        if due - now > self._tolerance:
            current[key] = due
            return False
        current[key] = due + self._interval
        return True


def _compact_host(host: str) -> bytes:
    """The packed IP of a socket address's host: 4 bytes for IPv4 (and IPv4-mapped IPv6)."""
    try:
        if ":" not in host:
            return socket.inet_pton(socket.AF_INET, host)
        packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
    except OSError:
        raise LocalProtocolError(f"not an IP address: {host!r:.60}") from None
    return packed[12:] if packed[:12] == _MAPPED_PREFIX else packed


def _v6_network(host: str) -> str | bytes:
    """The rate-limit key of an IPv6 host: its /64 network, since one subscriber usually has a
    whole /64 to pick addresses from; an IPv4-mapped address keeps its own key."""
    try:
        packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
    except OSError:
        return host  # not an address: _compact_host refuses it later, if it gets that far
    return host if packed[:12] == _MAPPED_PREFIX else packed[:8]


def _is_ipv6(host: str) -> bool:
    """Whether a reply to *host* travels in an IPv6 packet (an IPv4-mapped address, an IPv4
    client on a dual-stack socket, travels in an IPv4 one)."""
    if ":" not in host:
        return False
    try:
        return len(_compact_host(host)) == 16  # as announces pick the peers' family
    except LocalProtocolError:
        return True  # not an address (refused later): the smaller bound is the safe one


def _reply_limit(max_response_size: int, ipv6: bool) -> int:
    """Bytes a reply may take: ``max_response_size`` is sized for IPv4's header, and IPv6's
    is 20 bytes longer, so a reply that fits a frame over IPv4 fits it over IPv6 too."""
    return max_response_size - _IPV6_EXTRA_HEADER if ipv6 else max_response_size


def _error_packet(transaction_id: int, message: str, limit: int) -> bytes:
    """An error response cut to *limit* bytes (on a character boundary)."""
    text = message.encode("utf-8", "replace")
    if len(text) > limit - 8:
        text = text[: limit - 8].decode("utf-8", "ignore").encode()
    return _RESPONSE_HEADER.pack(_ACTION_ERROR, transaction_id) + text


class TrackerServerCore:
    """A UDP tracker's protocol logic, without I/O.

    Args:
        config: limits and policies (:class:`ServerConfig`).
        handler: the tracker logic: None for a :class:`~bip_utracker.SwarmStore` sized by
            *config*, a :class:`~bip_utracker.SwarmStore` of one's own (its own limits
            apply), or any :class:`TrackerHandler`.
        secret: the connection id key (16 to 64 bytes); random when None. Share it between
            processes serving one address.
        rng: randomness for the built-in store's peer selection (seed it in tests).

    >>> core = TrackerServerCore(secret=bytes(32))
    >>> connect = bytes.fromhex("00000417271019800000000000000007")
    >>> core.receive_datagram(connect, ("10.0.0.1", 6881), now=0.0)
    >>> [(len(data), address) for data, address in core.datagrams_to_send()]
    [(16, ('10.0.0.1', 6881))]
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        handler: TrackerHandler | SwarmStore | None = None,
        secret: bytes | None = None,
        rng: random.Random | None = None,
    ) -> None:
        config = ServerConfig() if config is None else config
        if not isinstance(config, ServerConfig):
            raise LocalProtocolError(f"config is a ServerConfig, got {config!r:.60}")
        self._config = config
        self._ids = ConnectionIds(secret, window_length=config.connection_id_window)
        if handler is None:
            handler = SwarmStore(
                peer_lifetime=config.interval + config.peer_grace,
                max_swarms=config.max_swarms,
                max_peers_per_swarm=config.max_peers_per_swarm,
                max_peers=config.max_peers,
                max_peers_per_host=config.max_peers_per_host,
                # Clients re-announce once per interval: half of one apart is no burst. But
                # they cap a long interval (bip's Announcer at 30 minutes): half an interval
                # of 2 hours would never pass between two of their announces.
                promote_after=min(config.interval, DEFAULT_MAX_ANNOUNCE_INTERVAL) / 2,
                rng=rng,
            )
        self._handler: TrackerHandler | SwarmStore = handler
        self._store = handler if isinstance(handler, SwarmStore) else None
        self._limiter = (
            None
            if config.rate_limit is None
            else _RateLimiter(
                config.rate_limit, config.rate_burst, config.max_rate_limited_addresses
            )
        )
        self._allowed = config.allowed_info_hashes
        self._denied = config.denied_info_hashes
        self._outbox: list[tuple[bytes, Address]] = []
        self._next_sweep: float | None = None
        # Peers one announce response carries at most, per family (by compact address size):
        # max_num_want, or fewer if that many would not fit the family's reply size.
        room = {
            size: _reply_limit(config.max_response_size, size == _IPV6_PEER)
            - _ANNOUNCE_RESPONSE.size
            for size in (_IPV4_PEER, _IPV6_PEER)
        }
        self._num_want_cap = {size: min(config.max_num_want, room[size] // size) for size in room}
        self._connects = 0
        self._announces = 0
        self._scrapes = 0
        self._malformed = 0
        self._unknown_events = 0
        self._rate_limited = 0
        self._bad_connection_id = 0
        self._refused = 0
        self._handler_failures = 0
        self._errors_sent = 0

    # -- configuration --------------------------------------------------------------------

    @property
    def config(self) -> ServerConfig:
        """The configuration the core started with (lists may have changed since)."""
        return self._config

    @property
    def store(self) -> SwarmStore | None:
        """The swarm store, when the handler is one (the default)."""
        return self._store

    @property
    def allowed_info_hashes(self) -> frozenset[bytes] | None:
        """The torrents served, or None for all."""
        return self._allowed

    @property
    def denied_info_hashes(self) -> frozenset[bytes]:
        """The torrents never served."""
        return self._denied

    def set_allowed_info_hashes(self, hashes: Iterable[bytes | InfoHash] | None) -> None:
        """Replace the allow list (None: serve every torrent not denied).

        Takes effect for the next datagram, like opentracker's whitelist reload.
        """
        self._allowed = None if hashes is None else _swarm_ids(hashes, "the allow list")

    def set_denied_info_hashes(self, hashes: Iterable[bytes | InfoHash]) -> None:
        """Replace the deny list."""
        self._denied = _swarm_ids(hashes, "the deny list")

    # -- the datagram interface -----------------------------------------------------------

    def receive_datagram(
        self, data: bytes | bytearray | memoryview, addr: Address, now: float
    ) -> None:
        """Handle one datagram from *addr* received at *now*; replies queue for sending.

        *data* may be a view into a buffer the caller reuses: nothing keeps a reference to it.
        Never raises for what a remote sends; raises :class:`LocalProtocolError` only for an
        *addr* that is no IP socket address.
        """
        host = addr[0]
        if type(host) is not str:
            raise LocalProtocolError(
                f"a socket address starts with the host text, got {addr!r:.60}"
            )
        limiter = self._limiter
        if limiter is not None and not limiter.admit(
            _v6_network(host) if ":" in host else host, now
        ):
            self._rate_limited += 1
            return
        size = len(data)
        if size < 16 or addr[1] == 0:
            self._malformed += 1
            return
        connection_id, action, transaction_id = _REQUEST_HEADER.unpack_from(data)

        if action == _ACTION_CONNECT:
            if size != 16 or connection_id != PROTOCOL_ID:
                self._malformed += 1
                return
            self._connects += 1
            self._outbox.append(
                (
                    _CONNECT_RESPONSE.pack(
                        _ACTION_CONNECT, transaction_id, self._ids.issue(host.encode(), now)
                    ),
                    addr,
                )
            )
            return

        if action == _ACTION_ANNOUNCE:
            if size < ANNOUNCE_REQUEST_SIZE:
                self._malformed += 1
                return
            info_hash, left, event, num_want, port = _ANNOUNCE_FIELDS.unpack_from(data, 16)
            # BEP 41 options: only their shape matters here (a custom handler gets them
            # decoded). Checked without building them: the sender is not proven yet.
            if size > ANNOUNCE_REQUEST_SIZE and not options_are_well_formed(
                data[ANNOUNCE_REQUEST_SIZE:]
            ):
                self._malformed += 1
                return
            self._announces += 1
            # A regular announce (decode_request reads it so for a custom handler): 4 is
            # BEP 21's paused, a partial seed, which ``left`` already makes a leecher. Counted
            # below, once served: a forged one refused for its connection id is not.
            unknown_event = not 0 <= event <= 3 and event != PAUSED_EVENT
            if not 0 <= event <= 3:
                event = 0
            if not self._ids.is_valid(connection_id, host.encode(), now):
                self._bad_connection_id += 1
                self._error(transaction_id, BAD_CONNECTION_ID, addr)
                return
            if info_hash in self._denied:
                self._refused += 1
                self._error(transaction_id, DENIED, addr)
                return
            allowed = self._allowed
            if allowed is not None and info_hash not in allowed:
                self._refused += 1
                self._error(transaction_id, NOT_REGISTERED, addr)
                return
            if unknown_event:
                self._unknown_events += 1
            peer = _compact_host(host) + port.to_bytes(2, "big")
            config = self._config
            if num_want < 0:
                num_want = config.default_num_want
            cap = self._num_want_cap[len(peer)]
            num_want = min(num_want, cap)
            store = self._store
            if store is not None:
                # (a port-0 announce is answered, not recorded: the store's rule)
                seeders, leechers, peers = store.announce_compact(
                    info_hash, peer, left, event, num_want, now
                )
                self._outbox.append(
                    (
                        _ANNOUNCE_RESPONSE.pack(
                            _ACTION_ANNOUNCE, transaction_id, config.interval, leechers, seeders
                        )
                        + b"".join(peers),
                        addr,
                    )
                )
                return
            self._custom_announce(data, peer, num_want, transaction_id, addr=addr, now=now)
            return

        if action == _ACTION_SCRAPE:
            count, extra = divmod(size - 16, _HASH_SIZE)
            if extra or count < 1:
                self._malformed += 1
                return
            self._scrapes += 1
            if not self._ids.is_valid(connection_id, host.encode(), now):
                self._bad_connection_id += 1
                self._error(transaction_id, BAD_CONNECTION_ID, addr)
                return
            # More than BEP 15's 74: the first 74 are answered, as opentracker does, rather
            # than nothing. 12 bytes per answered hash against 20 asked: still no amplification.
            end = 16 + _HASH_SIZE * min(count, MAX_SCRAPE_HASHES)
            hashes = [bytes(data[at : at + _HASH_SIZE]) for at in range(16, end, _HASH_SIZE)]
            self._scrape(hashes, transaction_id, addr, now)
            return

        self._malformed += 1

    def _error(self, transaction_id: int, message: str, addr: Address) -> None:
        """Queue an error response, cut to the reply size of *addr*'s family."""
        self._errors_sent += 1
        size = _reply_limit(self._config.max_response_size, _is_ipv6(addr[0]))
        self._outbox.append((_error_packet(transaction_id, message, size), addr))

    def _custom_announce(
        self,
        data: bytes | bytearray | memoryview,
        peer: bytes,
        num_want: int,
        transaction_id: int,
        *,
        addr: Address,
        now: float,
    ) -> None:
        """An announce through a user's handler, with its answer checked."""
        request = decode_request(data)  # checked above: cannot fail
        assert isinstance(request, AnnounceRequest)
        try:
            answer = self._handler.announce(request, peer, num_want, now)
            if isinstance(answer, Refusal):
                self._refused += 1
                self._error(transaction_id, str(answer.message), addr)
                return
            if not isinstance(answer, AnnounceAnswer):
                raise TypeError(f"announce returned {answer!r:.80}, not an AnnounceAnswer")
            peers = tuple(answer.peers)[:num_want]
            if any(not isinstance(p, bytes) or len(p) != len(peer) for p in peers):
                raise TypeError(f"announce returned peers that are not {len(peer)}-byte compact")
            interval = self._config.interval if answer.interval is None else answer.interval
            packet = _ANNOUNCE_RESPONSE.pack(
                _ACTION_ANNOUNCE, transaction_id, interval, answer.leechers, answer.seeders
            ) + b"".join(peers)
        except Exception:
            self._handler_failed(transaction_id, addr, "announce")
            return
        self._outbox.append((packet, addr))

    def _scrape(self, hashes: list[bytes], transaction_id: int, addr: Address, now: float) -> None:
        # Torrents not served answer zeros, as if unknown: a scrape reveals nothing about them.
        denied = self._denied
        allowed = self._allowed
        served = [
            i for i, h in enumerate(hashes) if h not in denied and (allowed is None or h in allowed)
        ]
        counts: list[tuple[int, int, int]] = [(0, 0, 0)] * len(hashes)
        store = self._store
        if store is not None:
            for i in served:
                counts[i] = store.scrape_counts(hashes[i], now)
        elif served:
            try:
                stats = self._handler.scrape([hashes[i] for i in served], now)
                if isinstance(stats, Refusal):
                    self._refused += 1
                    self._error(transaction_id, str(stats.message), addr)
                    return
                if len(stats) != len(served):
                    raise TypeError(f"scrape returned {len(stats)} results for {len(served)}")
                for i, item in zip(served, stats, strict=True):
                    counts[i] = (item.seeders, item.completed, item.leechers)
            except Exception:
                self._handler_failed(transaction_id, addr, "scrape")
                return
        try:
            body = b"".join(
                _SCRAPE_STATS.pack(
                    min(seeders, _INT32_MAX), min(completed, _INT32_MAX), min(leechers, _INT32_MAX)
                )
                for seeders, completed, leechers in counts
            )
        except (struct.error, TypeError):
            self._handler_failed(transaction_id, addr, "scrape")
            return
        self._outbox.append((_RESPONSE_HEADER.pack(_ACTION_SCRAPE, transaction_id) + body, addr))

    def _handler_failed(self, transaction_id: int, addr: Address, what: str) -> None:
        # A bug in custom logic costs the request, never the server; the log keeps the trace.
        # A handler failing on every request must not flood the log: the 1st, 2nd, 4th, 8th...
        # failure is an ERROR with its traceback, the others DEBUG.
        self._handler_failures += 1
        count = self._handler_failures
        if count & (count - 1) == 0:
            _log.exception(
                "the tracker handler failed on a %s from %s (failure %d so far; "
                "the client got an error reply)",
                what,
                addr[0],
                count,
            )
        else:
            _log.debug("the tracker handler failed on a %s from %s", what, addr[0], exc_info=True)
        self._error(transaction_id, INTERNAL_ERROR, addr)

    def datagrams_to_send(self, now: float | None = None) -> list[tuple[bytes, Address]]:
        """The replies queued since the last call, each with its destination; empties the queue.

        *now* is accepted for the datagram-core interface and not needed: replies never wait.
        """
        out = self._outbox
        self._outbox = []
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` should run next; None until it first ran (a shell calls it
        once at start: the core has no clock to know the time before)."""
        return self._next_sweep

    def handle_timer(self, now: float) -> None:
        """Expire quiet swarms (a bounded batch per call) and forget idle rate-limit buckets."""
        if self._limiter is not None:
            self._limiter.swap_if_due(now)
        more = False
        if self._store is not None:
            more = self._store.expire(now, limit=_SWEEP_BATCH)
        # A flood of swarms that went quiet together is dropped in batches, soon after another.
        self._next_sweep = now + (0.0 if more else self._config.expiry_interval)

    def statistics(self) -> ServerStatistics:
        """A snapshot of the counters, the built-in store's included
        (:attr:`ServerStatistics.store`)."""
        store = self._store.statistics() if self._store is not None else None
        return ServerStatistics(
            datagrams=self._connects
            + self._announces
            + self._scrapes
            + self._malformed
            + self._rate_limited,
            connects=self._connects,
            announces=self._announces,
            scrapes=self._scrapes,
            malformed=self._malformed,
            rate_limited=self._rate_limited,
            bad_connection_id=self._bad_connection_id,
            refused=self._refused,
            handler_failures=self._handler_failures,
            errors_sent=self._errors_sent,
            swarms=store.swarms if store else 0,
            peers=store.peers if store else 0,
            seeders=store.seeders if store else 0,
            leechers=store.leechers if store else 0,
            store=store,
            unknown_events=self._unknown_events,
        )


_SWEEP_BATCH = 10_000
