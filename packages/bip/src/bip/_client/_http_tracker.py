"""The HTTP(S) tracker client (BEP 3, BEP 23 compact peers, BEP 7 IPv6 peers, BEP 48 scrape).

:class:`HttpTrackerClient` is a bip_utracker :class:`~bip_utracker.AnnounceClient`, so the same
:class:`~bip_utracker.Announcer` that keeps a torrent announced to UDP trackers drives it: the
schedule is written once. This module is its trio shell: one TCP (or TLS) connection per
request with ``Connection: close``, redirects followed, the whole exchange under one timeout,
every request judged first by libtorrent's ``ssrf_mitigation`` and ``allow_idna`` rules
(``_http_exchange``).
What it sends and how it reads the answers are pure and live apart, each testable alone:

- ``_http_tracker_codec``: tracker URLs, announce and scrape queries, and the bencoded answers;
- ``_http_response``: a sans-IO HTTP/1.1 response reader bounded for untrusted trackers.

Peers a tracker names by DNS name come back unresolved in
:attr:`HttpAnnounceResult.peer_names`, so the announce (and its numeric peers) is never held up
by a slow resolver; :func:`resolve_peer_names` looks them up afterwards, a few at a time.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from types import TracebackType
from typing import ClassVar, Final, TypeVar

import trio

from bip import __version__
from bip_handshake import PeerAddress, PeerId, ProxyConfig
from bip_metainfo import InfoHash
from bip_utracker import (
    AnnounceEvent,
    AnnounceResult,
    LocalProtocolError,
    RequestId,
    ScrapeStats,
    TrackerTimeoutError,
)

from ._http_exchange import ExchangeError, follow_redirects, http_exchange, local_sources
from ._http_response import HttpResponse, HttpResponseParser
from ._http_rules import (
    IPAddress,
    SsrfRule,
    idna_refusal,
    is_this_host,
    literal_address,
    tracker_path_refusal,
    tracker_query_refusal,
)
from ._http_tracker_codec import (
    MAX_PEER_NAMES,
    HttpTrackerUrl,
    PeerName,
    announce_query,
    failure_error,
    parse_announce_response,
    parse_http_tracker_url,
    parse_scrape_response,
    scrape_query,
    scrape_url,
    usable_peer,
    with_query,
)
from ._http_tracker_errors import HttpTrackerError, TrackerBlockedError

__all__ = [
    "DEFAULT_HTTP_TRACKER_TIMEOUT",
    "DEFAULT_MAX_CONCURRENT_HTTP_ANNOUNCES",
    "DEFAULT_MAX_REDIRECTS",
    "MAX_ADDRESSES_PER_NAME",
    "PEER_NAME_LOOKUPS",
    "PEER_NAME_OVERRUN",
    "PEER_NAME_TIMEOUT",
    "HttpAnnounceResult",
    "HttpTrackerClient",
    "resolve_peer_names",
]

logger = logging.getLogger("bip.client")
_T = TypeVar("_T")

DEFAULT_MAX_REDIRECTS: Final = 5
"""Redirects followed at most for one request."""
DEFAULT_HTTP_TRACKER_TIMEOUT: Final = 30.0
"""Seconds one whole exchange may take, redirects included (libtorrent's
``tracker_completion_timeout``)."""
DEFAULT_MAX_CONCURRENT_HTTP_ANNOUNCES: Final = 50
"""HTTP tracker requests in flight at once by default, all torrents together (libtorrent's
``max_concurrent_http_announces``): each holds a connection and up to a megabyte of answer."""
PEER_NAME_LOOKUPS: Final = 4
"""Peer names looked up at once by default, by all torrents together: each lookup holds one of
trio's worker threads."""
PEER_NAME_TIMEOUT: Final = 5.0
"""Seconds one peer name's lookup may take before the name is dropped."""
PEER_NAME_OVERRUN: Final = 60.0
"""Seconds a lookup that outlived its timeout may keep its place among the lookups at once
(then it is cancelled). The name is dropped at the timeout, but the system's lookup runs on
in a worker thread that no cancel stops, until the resolver's own timeouts end it (up to tens
of seconds): while it runs it is still counted, so that silent names cannot pile up threads."""

# The lookups of all torrents of one trio run share one limiter: worker threads are the
# process's (trio's default limiter is shared with file I/O and every other lookup).
_SHARED_LOOKUPS: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar(
    "bip_peer_name_lookups"
)


def _shared_lookups() -> trio.CapacityLimiter:
    try:
        return _SHARED_LOOKUPS.get()
    except LookupError:
        limiter = trio.CapacityLimiter(PEER_NAME_LOOKUPS)
        _SHARED_LOOKUPS.set(limiter)
        return limiter


MAX_ADDRESSES_PER_NAME: Final = 4
"""Addresses kept of one peer name at most (its IPv4 and IPv6 ones, say)."""
_MAX_TRACKER_IDS: Final = 4096  # remembered (tracker, swarm) pairs; the oldest go first
_MAX_WARNINGS: Final = 256  # distinct warning messages remembered, so each is logged once
# Distinct warnings of one tracker logged at INFO; later ones go at DEBUG: a tracker wording
# its warning afresh in every answer must not fill the log. Counted for that many trackers.
_WARNINGS_SHOWN: Final = 4
_MAX_WARNING_TRACKERS: Final = 1024
_SWARM_ID_SIZE: Final = 20
_NUM_WANT_RANGE: Final = range(-(2**31), 2**31)
# Bodies larger than this are bdecoded in a worker thread: a megabyte of tiny containers
# (a hostile tracker's answer, allowed by MAX_RESPONSE_SIZE) costs tenths of a second of
# Python, which on the event loop would stall every torrent of the session at each announce.
_DECODE_IN_THREAD: Final = 64 * 1024
_Refusal = tuple[str, SsrfRule]  # why, and the rule


class _FairSlots:
    """Requests in flight at once, at most ``total``, granted round-robin between keys (a
    swarm): while slots are short, each key with requests waiting gets the next free slot in
    turn, its own requests first come first served. One torrent's thousand trackers then
    wait behind each other, not in front of every other torrent's announces."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._free = total
        # Each key's waiters in arrival order; the keys in the order they are served.
        self._waiting: OrderedDict[bytes, deque[trio.Event]] = OrderedDict()

    async def acquire(self, key: bytes) -> None:
        """Wait for a slot for a request of ``key`` (cancellable; nothing held then)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._free > 0 and not self._waiting:
            self._free -= 1
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        grant = trio.Event()
        queue = self._waiting.setdefault(key, deque())
        queue.append(grant)
        try:
            await grant.wait()
        except BaseException:
            if grant.is_set():  # granted as it was cancelled: the slot goes to the next one
                self.release()
            else:
                queue.remove(grant)
                if not queue and self._waiting.get(key) is queue:
                    del self._waiting[key]
            raise

    def release(self) -> None:
        """Free a slot: to the first waiter of the next key in turn, if any."""
        if not self._waiting:
            self._free += 1
            return
        key, queue = next(iter(self._waiting.items()))
        grant = queue.popleft()
        if queue:
            self._waiting.move_to_end(key)  # its turn is over: every other key goes first
        else:
            del self._waiting[key]
        grant.set()


def _request(url: HttpTrackerUrl, target: str, user_agent: str) -> bytes:
    return (
        f"GET {target} HTTP/1.1\r\n"
        f"Host: {url.host_header}\r\n"
        f"User-Agent: {user_agent}\r\n"
        "Accept-Encoding: identity\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii")


# -- the trio client ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpAnnounceResult(AnnounceResult):
    """An HTTP tracker's answer: bip_utracker's :class:`~bip_utracker.AnnounceResult`
    (``request_id`` counts this client's requests; ``tracker`` is the address that answered,
    after redirects) and what only HTTP trackers say.

    Attributes:
        min_interval: seconds the tracker wants between announces at least, if it said.
        tracker_id: the ``tracker id`` it gave, if any (sent back from then on).
        warning: its ``warning message``, if any.
        peer_names: the peers it named by DNS name, unresolved (see
            :func:`resolve_peer_names`); ``peers`` holds the numeric ones.
        external_ip: our address as the tracker saw it (BEP 24 ``external ip``), if it said
            so readably: a vote for our external address, from ``tracker``.
    """

    min_interval: int | None = None
    tracker_id: bytes | None = None
    warning: str | None = None
    peer_names: tuple[PeerName, ...] = ()
    external_ip: IPv4Address | IPv6Address | None = None


def _swarm_id(info_hash: InfoHash | bytes) -> bytes:
    if isinstance(info_hash, InfoHash):
        return info_hash.swarm_ids()[0]  # v1 if it has one, else the truncated v2
    if isinstance(info_hash, bytes) and len(info_hash) == _SWARM_ID_SIZE:
        return info_hash
    raise LocalProtocolError(f"an info-hash is an InfoHash or 20 bytes, got {info_hash!r:.80}")


def _peer_id(peer_id: PeerId | bytes) -> bytes:
    if isinstance(peer_id, PeerId):
        return peer_id.value
    if isinstance(peer_id, bytes) and len(peer_id) == _SWARM_ID_SIZE:
        return peer_id
    raise LocalProtocolError(f"a peer id is a PeerId or 20 bytes, got {peer_id!r:.80}")


def _amount(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LocalProtocolError(f"{name} is a non-negative int, got {value!r:.40}")
    return value


class HttpTrackerClient:
    """Announces to (and scrapes) ``http://`` and ``https://`` trackers, over trio.

    A bip_utracker :class:`~bip_utracker.AnnounceClient`: give it to an
    :class:`~bip_utracker.Announcer` with an http(s) URL. Each request is one connection
    (``Connection: close``), its whole exchange within ``timeout`` seconds, redirects
    included. At most ``max_concurrent`` requests are in flight at once (libtorrent's
    ``max_concurrent_http_announces``): one torrent listing a thousand trackers must not open
    a thousand connections, hold a megabyte of answer for each and flood whatever hosts its
    URLs name. The others wait for a slot, the free slots going round-robin between swarms
    (each swarm's own requests first come first served): one torrent's many silent trackers
    hold up its own announces, not every other torrent's. ``stopped`` announces have as many
    slots again of their own, shared the same way: a leaving torrent's goodbye, which has
    seconds only, never waits behind regular announces. ``timeout`` counts from when a
    request holds its slot. One random 32-bit ``key`` per client goes with every
    announce (as libtorrent sends it), and the ``tracker id`` a tracker gave goes back to
    it. Each distinct
    ``warning message`` is logged once, at INFO on the ``bip.client`` logger (the first
    few of each tracker; any more at DEBUG). Use it in an
    ``async with`` block, or call :meth:`aclose`: requests in flight then fail with
    :class:`~bip_utracker.LocalProtocolError`, as later ones do.

    Args:
        timeout: seconds one request may take, redirects included.
        ssl_context: the TLS context for ``https://`` (default: the system's trusted CAs,
            ``ssl.create_default_context()``, made at the first https request).
        user_agent: the ``User-Agent`` header (default ``bip/<version>``).
        local_address: the IP address to connect from, trackers reached in its family only;
            or one of each family (``("10.8.0.2", "fd00::2")``: the session's listen
            addresses), each connection leaving from the one of the family it connects in
            (an unspecified one: the system picks in its family). None: any family, the
            system chooses.
        max_redirects: redirects followed at most per request.
        rng: the source of the ``key`` (default: the system's).
        ssrf_mitigation: libtorrent's rules of that name (on by default): a tracker on this
            machine is asked on its announce (or scrape) path only, a tracker URL carrying a
            parameter of our announce (``info_hash``, ``port``...) is refused, and no redirect
            leads from the Internet into a local network (see ``_http_exchange``).
        allow_idna: whether a host name with an internationalised (``xn--``) label may be
            asked (libtorrent's ``allow_idna``, off by default: a look-alike name could pass
            for another).
        proxy: a SOCKS5 proxy every request goes through (``None``: connect directly); the
            connection to it leaves from ``local_address``'s address of the proxy's family, if
            it has one. A host name is resolved here, or by the
            proxy with ``socks5h://`` (``_http_exchange`` says what the rules above then
            judge).
        max_concurrent: requests (announces and scrapes) in flight at once at most (and as
            many ``stopped`` announces besides).

    Raises:
        LocalProtocolError: a bad argument.
    """

    announces_paused: ClassVar[bool] = True
    """BEP 21: :meth:`announce` takes ``paused``, so an :class:`~bip_utracker.Announcer` passes
    it for a partial seed's regular announces (the opt-in its ``AnnounceClient`` documents)."""

    announces_family: ClassVar[bool] = True
    """BEP 7: :meth:`announce` takes ``family``, so an :class:`~bip_utracker.Announcer` may be
    given one (the opt-in its ``AnnounceClient`` documents)."""

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_HTTP_TRACKER_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str | None = None,
        local_address: str | Sequence[str] | None = None,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        rng: random.Random | None = None,
        ssrf_mitigation: bool = True,
        allow_idna: bool = False,
        proxy: ProxyConfig | None = None,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT_HTTP_ANNOUNCES,
    ) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise LocalProtocolError(f"timeout is a positive number of seconds, got {timeout!r}")
        if proxy is not None and not isinstance(proxy, ProxyConfig):
            raise LocalProtocolError(f"proxy is a ProxyConfig or None, got {proxy!r:.80}")
        self._proxy = proxy
        if isinstance(max_redirects, bool) or not isinstance(max_redirects, int):
            raise LocalProtocolError(f"max_redirects is an int, got {max_redirects!r}")
        if max_redirects < 0:
            raise LocalProtocolError(f"max_redirects is 0 or more, got {max_redirects}")
        if (
            isinstance(max_concurrent, bool)
            or not isinstance(max_concurrent, int)
            or max_concurrent < 1
        ):
            raise LocalProtocolError(f"max_concurrent is an int above 0, got {max_concurrent!r}")
        self._slots = _FairSlots(max_concurrent)
        self._goodbye_slots = _FairSlots(max_concurrent)
        try:
            local_sources(local_address)
        except ValueError as error:
            raise LocalProtocolError(str(error)) from None
        agent = f"bip/{__version__}" if user_agent is None else user_agent
        if not agent.isascii() or not agent.isprintable():
            raise LocalProtocolError(f"a User-Agent is printable ASCII, got {agent!r:.80}")
        self._timeout = float(timeout)
        self._ssl_context = ssl_context
        self._user_agent = agent
        # A copy: a caller's list changed later would not have been checked.
        self._local_address = (
            local_address
            if local_address is None or isinstance(local_address, str)
            else tuple(local_address)
        )
        self._max_redirects = max_redirects
        for name, flag in (("ssrf_mitigation", ssrf_mitigation), ("allow_idna", allow_idna)):
            if not isinstance(flag, bool):
                raise LocalProtocolError(f"{name} is a bool, got {flag!r:.40}")
        self._ssrf_mitigation = ssrf_mitigation
        self._allow_idna = allow_idna
        self.key = (rng if rng is not None else random.SystemRandom()).getrandbits(32)
        """The ``key`` sent with every announce."""
        self._requests = 0
        self._tracker_ids: OrderedDict[tuple[str, bytes, int | None], bytes] = OrderedDict()
        self._warned: OrderedDict[str, None] = OrderedDict()
        self._warnings_of: OrderedDict[str, int] = OrderedDict()  # tracker -> INFO lines
        self._in_flight: set[trio.CancelScope] = set()
        self._closed = False

    async def __aenter__(self) -> HttpTrackerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    @property
    def proxy(self) -> ProxyConfig | None:
        """The SOCKS5 proxy every request goes through, or None (direct)."""
        return self._proxy

    @property
    def max_concurrent(self) -> int:
        """Requests in flight at once at most; the others wait for a slot (``stopped``
        announces have as many slots again of their own)."""
        return self._slots.total

    @property
    def families(self) -> frozenset[int]:
        """The IP versions (4, 6) a tracker is connected to in directly: those of
        ``local_address`` (both when it is None)."""
        sources = local_sources(self._local_address)
        return frozenset((4, 6) if sources is None else sources)

    async def aclose(self) -> None:
        """Close the client: requests in flight (or waiting for a slot) are cancelled, later
        ones refused."""
        self._closed = True
        for scope in self._in_flight:
            scope.cancel()
        await trio.lowlevel.checkpoint()

    def check_tracker(self, tracker: str) -> None:
        """Accept an ``http://`` or ``https://`` URL or raise
        :class:`~bip_utracker.LocalProtocolError` (see :func:`parse_http_tracker_url`), also
        for a URL the ``ssrf_mitigation`` or ``allow_idna`` rules refuse as it stands."""
        self._tracker_url(tracker, scrape=False)

    async def announce(
        self,
        tracker: str,
        info_hash: InfoHash | bytes,
        *,
        peer_id: PeerId | bytes,
        port: int,
        uploaded: int = 0,
        downloaded: int = 0,
        left: int = 0,
        event: AnnounceEvent = AnnounceEvent.NONE,
        num_want: int = -1,
        paused: bool = False,
        family: int | None = None,
    ) -> HttpAnnounceResult:
        """Announce to ``tracker`` and return its answer.

        Args:
            tracker: the announce URL (a query already in it, such as a private tracker's
                passkey, is kept; ours follows).
            info_hash: an :class:`~bip_metainfo.InfoHash` (its v1 hash, or its truncated v2
                hash for a v2-only torrent) or a 20-byte swarm id.
            peer_id: our peer id.
            port: our TCP listen port.
            uploaded: bytes uploaded this session.
            downloaded: bytes downloaded this session.
            left: bytes left to download (0 for a seeder).
            event: started, completed, stopped, or none for a regular announce.
            num_want: how many peers we want; -1 lets the tracker decide.
            paused: we are a partial seed (BEP 21): a regular announce (event none) says
                ``event=paused``; another event goes as it is.
            family: 4 or 6: connect in that IP version only, to the tracker's addresses of
                it (its redirects' too), from ``local_address``'s address of it (BEP 7: one
                announce per address family we listen on, each with its own ``tracker
                id``); None: any family ``local_address`` allows. Through a ``proxy`` the
                proxy reaches the tracker as it will: the family is not applied.

        Raises:
            TrackerFailureError: the tracker answered with a ``failure reason`` (a
                :class:`~bip_utracker.TrackerRejectedError`; its ``retry_in`` is BEP 31's,
                which the :class:`~bip_utracker.Announcer` honours).
            TrackerTimeoutError: no complete answer within the timeout.
            MalformedTrackerResponseError: the answer is not one we can read.
            TrackerBlockedError: our rules refused a request once connected (a tracker on
                this machine off its announce path), or a redirect (see ``ssrf_mitigation``
                and ``allow_idna``); its ``retry_in`` is ``"never"``.
            HttpTrackerError: no connection (none in ``family``, or no local address of it),
                TLS failure, HTTP error status, bad redirect.
            LocalProtocolError: a bad argument, a URL our rules refuse as given (as
                :meth:`check_tracker`), or the client is closed.
        """
        url = self._tracker_url(tracker, scrape=False)
        if family is not None and (isinstance(family, bool) or family not in (4, 6)):
            raise LocalProtocolError(f"family is 4, 6 or None, got {family!r:.40}")
        swarm_id = _swarm_id(info_hash)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
            raise LocalProtocolError(f"a port is 0..65535, got {port!r:.40}")
        if not isinstance(event, AnnounceEvent):
            raise LocalProtocolError(f"not an announce event: {event!r:.40}")
        if not isinstance(paused, bool):
            raise LocalProtocolError(f"paused is a bool, got {paused!r:.40}")
        if isinstance(num_want, bool) or not isinstance(num_want, int):
            raise LocalProtocolError(f"num_want is an int, got {num_want!r:.40}")
        if num_want not in _NUM_WANT_RANGE:
            raise LocalProtocolError(f"num_want is a 32-bit signed int, got {num_want}")
        # Each family's announce is a tracker entry of its own (libtorrent keeps the tracker
        # id per announce endpoint): an id given to our IPv4 entry means nothing for IPv6.
        id_key = (url.url, swarm_id, family)
        query = announce_query(
            info_hash=swarm_id,
            peer_id=_peer_id(peer_id),
            port=port,
            uploaded=_amount("uploaded", uploaded),
            downloaded=_amount("downloaded", downloaded),
            left=_amount("left", left),
            event=event,
            num_want=num_want,
            key=self.key,
            tracker_id=self._tracker_ids.get(id_key),
            paused=paused,
        )
        local_address = self._local_address_in(family)
        response, address, request_id = await self._get(
            url,
            query,
            scrape=False,
            local_address=local_address,
            key=swarm_id,
            goodbye=event is AnnounceEvent.STOPPED,
        )
        if response.status != 200:
            await _off_loop(len(response.body), _refused, response)
        answer = await _off_loop(len(response.body), parse_announce_response, response.body)
        if answer.tracker_id is not None:
            self._tracker_ids[id_key] = answer.tracker_id
            self._tracker_ids.move_to_end(id_key)
            while len(self._tracker_ids) > _MAX_TRACKER_IDS:
                self._tracker_ids.popitem(last=False)
        if answer.warning is not None:
            self._warn(url.shown, answer.warning)
        return HttpAnnounceResult(
            request_id=request_id,
            tracker=address,
            info_hash=swarm_id,
            interval=answer.interval,
            leechers=answer.incomplete,
            seeders=answer.complete,
            peers=answer.peers,
            min_interval=answer.min_interval,
            tracker_id=answer.tracker_id,
            warning=answer.warning,
            peer_names=answer.peer_names,
            external_ip=answer.external_ip,
        )

    async def scrape(
        self, tracker: str, info_hashes: Sequence[InfoHash | bytes]
    ) -> tuple[ScrapeStats, ...]:
        """Scrape ``tracker`` (its announce URL; BEP 48) for the swarms of ``info_hashes``.

        Raises:
            LocalProtocolError: the tracker has no scrape URL (its last path component does
                not start with ``announce``), a URL our rules refuse as given, a bad argument,
                or the client is closed.
            TrackerFailureError, TrackerTimeoutError, MalformedTrackerResponseError,
            TrackerBlockedError, HttpTrackerError: as for :meth:`announce`.
        """
        shown = parse_http_tracker_url(tracker).shown
        target = scrape_url(tracker)
        if target is None:
            raise LocalProtocolError(f"{shown!r:.200} has no scrape URL (BEP 48)")
        url = self._tracker_url(target, scrape=True)
        swarm_ids = [_swarm_id(info_hash) for info_hash in info_hashes]
        key = swarm_ids[0] if swarm_ids else b""
        response, _, _ = await self._get(url, scrape_query(swarm_ids), scrape=True, key=key)
        if response.status != 200:
            await _off_loop(len(response.body), _refused, response)
        return await _off_loop(len(response.body), parse_scrape_response, response.body, swarm_ids)

    # -- internals --

    def _local_address_in(self, family: int | None) -> str | tuple[str, ...] | None:
        """Where an announce in ``family`` connects from (``local_address`` narrowed to that
        family: the any address of it when the system picks); ``local_address`` itself for
        no family, or through a proxy.

        Raises:
            HttpTrackerError: ``local_address`` has no address of ``family`` (that family's
                announce fails, as a UDP tracker client without its socket fails it).
        """
        if family is None or self._proxy is not None:
            return self._local_address
        any_address = "0.0.0.0" if family == 4 else "::"
        sources = local_sources(self._local_address)
        if sources is None:
            return any_address
        if family not in sources:
            raise HttpTrackerError(f"no IPv{family} address to connect from")
        source = sources[family]
        return any_address if source is None else source

    def _warn(self, tracker: str, message: str) -> None:
        if message in self._warned:
            return
        self._warned[message] = None
        while len(self._warned) > _MAX_WARNINGS:
            self._warned.popitem(last=False)
        shown = self._warnings_of.pop(tracker, 0)
        self._warnings_of[tracker] = shown + 1
        while len(self._warnings_of) > _MAX_WARNING_TRACKERS:
            self._warnings_of.popitem(last=False)
        level = logging.INFO if shown < _WARNINGS_SHOWN else logging.DEBUG
        logger.log(level, "tracker %s warns: %s", tracker, message)

    def _tracker_url(self, tracker: str, *, scrape: bool) -> HttpTrackerUrl:
        """``tracker`` parsed, or LocalProtocolError: malformed, or refused as it stands."""
        url = parse_http_tracker_url(tracker)
        refused = self._refusal(url, url.target, scrape=scrape)
        if refused is not None:
            raise LocalProtocolError(refused[0])
        if self._ssrf_mitigation and (query := tracker_query_refusal(url.target)) is not None:
            raise LocalProtocolError(query)
        return url

    def _refusal(self, url: HttpTrackerUrl, target: str, *, scrape: bool) -> _Refusal | None:
        """Why a request for ``target`` of ``url`` is refused before connecting, and by which
        rule; None if it is not."""
        if not self._allow_idna and (idna := idna_refusal(url.host)) is not None:
            return idna, "allow_idna"
        literal = literal_address(url.host)
        if self._ssrf_mitigation and literal is not None:
            refused = _local_path_refusal(target, literal, scrape=scrape)
            if refused is not None:
                return refused, "ssrf_mitigation"
        return None

    async def _get(
        self,
        url: HttpTrackerUrl,
        query: str,
        *,
        scrape: bool,
        key: bytes,
        local_address: str | tuple[str, ...] | None = None,
        goodbye: bool = False,
    ) -> tuple[HttpResponse, PeerAddress, RequestId]:
        """GET ``url`` with ``query`` appended, following redirects, within the timeout, from
        ``local_address`` (the client's by default), once a slot is granted to ``key`` (the
        swarm), a ``stopped`` announce's (``goodbye``) among its own slots."""
        if local_address is None:
            local_address = self._local_address
        if self._closed:
            raise LocalProtocolError("the HTTP tracker client is closed")
        self._requests += 1
        request_id = RequestId(self._requests)
        # In _in_flight while waiting for a slot too, so that aclose() ends the wait; the
        # timeout runs from when the slot is held (a tracker is not failed for the queue).
        scope = trio.CancelScope()
        self._in_flight.add(scope)

        async def fetch(
            url: HttpTrackerUrl, target: str, *, global_only: bool
        ) -> tuple[HttpResponse, PeerAddress]:
            return await self._fetch(
                url, target, global_only=global_only, scrape=scrape, local_address=local_address
            )

        slots = self._goodbye_slots if goodbye else self._slots
        try:
            with scope:
                await slots.acquire(key)
                try:
                    scope.deadline = trio.current_time() + self._timeout
                    response, address, _ = await follow_redirects(
                        url,
                        with_query(url.target, query),
                        fetch,
                        max_redirects=self._max_redirects,
                        error=HttpTrackerError,
                        ssrf_mitigation=self._ssrf_mitigation,
                    )
                    return response, address, request_id
                finally:
                    slots.release()
        finally:
            self._in_flight.discard(scope)
        if self._closed:
            raise LocalProtocolError("the HTTP tracker client is closed")
        raise TrackerTimeoutError(f"no answer from {url.shown} within {self._timeout:g} s")

    async def _fetch(
        self,
        url: HttpTrackerUrl,
        target: str,
        *,
        global_only: bool,
        scrape: bool,
        local_address: str | tuple[str, ...] | None,
    ) -> tuple[HttpResponse, PeerAddress]:
        # Every request is judged, a redirect's too: by its URL before connecting, and for a
        # host name by the address that answered, before a byte is sent.
        refused = self._refusal(url, target, scrape=scrape)
        if refused is not None:
            raise TrackerBlockedError(f"{url.shown}: {refused[0]}", rule=refused[1])

        def check_address(address: IPAddress) -> None:
            refused = _local_path_refusal(target, address, scrape=scrape)
            if refused is not None:
                raise TrackerBlockedError(f"{url.shown}: {refused}", rule="ssrf_mitigation")

        try:
            return await http_exchange(
                url,
                _request(url, target, self._user_agent),
                HttpResponseParser(),
                tls_context=self._tls_context,
                local_address=local_address,
                global_only=global_only,
                check_address=check_address if self._ssrf_mitigation else None,
                proxy=self._proxy,
            )
        except ExchangeError as error:
            message = error.message if error.connecting else f"{url.host_header}: {error.message}"
            raise HttpTrackerError(message) from None

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context


async def _off_loop(size: int, read: Callable[..., _T], *args: object) -> _T:
    """``read(*args)``, reading a body of ``size`` bytes: at once for a small one, in a worker
    thread for a large one (its exceptions raised here either way)."""
    if size <= _DECODE_IN_THREAD:
        return read(*args)
    return await trio.to_thread.run_sync(read, *args)


def _refused(response: HttpResponse) -> None:
    """A status other than 200: the tracker's own ``failure reason`` if the body has one (some
    trackers send it with a 4xx, BEP 31's ``retry in`` too), else the status."""
    failure = failure_error(response.body)
    if failure is not None:
        raise failure
    reason = response.reason.strip()[:80]
    raise HttpTrackerError(f"HTTP {response.status}{' ' + reason if reason else ''}")


# -- peers named by DNS name -------------------------------------------------------------------


async def resolve_peer_names(
    names: Sequence[PeerName],
    found: Callable[[PeerName, tuple[PeerAddress, ...]], None],
    *,
    limiter: trio.CapacityLimiter | None = None,
    timeout: float = PEER_NAME_TIMEOUT,
) -> None:
    """Look up the peers of an answer named by DNS name, and call ``found(name, addresses)``
    for each that resolves to a usable address.

    Names are looked up concurrently through :func:`trio.socket.getaddrinfo` (so a custom
    resolver set with :func:`trio.socket.set_custom_hostname_resolver` is used), at most
    ``limiter``'s tokens at once (by default one limiter of :data:`PEER_NAME_LOOKUPS` for
    every call in the trio run), the first :data:`MAX_PEER_NAMES` only, each within
    ``timeout`` seconds. A lookup that outlives its timeout is dropped but keeps its token
    until it ends (:data:`PEER_NAME_OVERRUN` at most): the system's lookup goes on in a
    worker thread that a cancel cannot stop, so returning its token at the timeout would let
    silent names pile up threads. Each address goes through
    the filter numeric peers pass (:func:`usable_peer`), and at most
    :data:`MAX_ADDRESSES_PER_NAME` are kept of a name, in the resolver's order. A name that
    fails, times out, or gives no usable address is dropped with a DEBUG record on the
    ``bip.client`` logger. Returns once every name is done; cancelling it keeps what
    ``found`` was given.

    Raises:
        LocalProtocolError: ``timeout`` is not a positive number.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise LocalProtocolError(f"timeout is a positive number of seconds, got {timeout!r}")
    lookups = limiter if limiter is not None else _shared_lookups()
    async with trio.open_nursery() as nursery:
        for name in dict.fromkeys(names[:MAX_PEER_NAMES]):
            nursery.start_soon(_resolve_one, name, found, lookups, float(timeout))


class _Lookup:
    """One name's lookup: its answer, and whether its waiter gave up on it."""

    __slots__ = ("answered", "infos", "late")

    def __init__(self) -> None:
        self.answered = trio.Event()
        self.infos: list[tuple[object, ...]] | None = None
        self.late = False

    async def run(self, name: PeerName) -> None:
        try:
            self.infos = list(
                await trio.socket.getaddrinfo(name.host, name.port, type=socket.SOCK_STREAM)
            )
        except (OSError, UnicodeError) as error:  # gaierror is an OSError; IDNA a Unicode one
            if not self.late:
                logger.debug("peer %s: cannot resolve it: %s", name, error)
        finally:
            self.answered.set()


async def _resolve_one(
    name: PeerName,
    found: Callable[[PeerName, tuple[PeerAddress, ...]], None],
    limiter: trio.CapacityLimiter,
    timeout: float,
) -> None:
    lookup = _Lookup()
    async with limiter, trio.open_nursery() as nursery:
        # The token is held until the lookup ends, not only until we stop waiting for it.
        nursery.cancel_scope.deadline = trio.current_time() + max(timeout, PEER_NAME_OVERRUN)
        nursery.start_soon(lookup.run, name)
        with trio.move_on_after(timeout):
            await lookup.answered.wait()
        if not lookup.answered.is_set():
            lookup.late = True
            logger.debug("peer %s: not resolved within %g s", name, timeout)
    if lookup.late or lookup.infos is None:
        return
    addresses = _usable_addresses(lookup.infos, name.port)
    if not addresses:
        logger.debug("peer %s: resolves to no address we would dial", name)
        return
    found(name, addresses)


def _usable_addresses(infos: list[tuple[object, ...]], port: int) -> tuple[PeerAddress, ...]:
    """The distinct usable TCP addresses of getaddrinfo's answer, at most a few."""
    usable: dict[PeerAddress, None] = {}
    for info in infos:
        if len(usable) >= MAX_ADDRESSES_PER_NAME:
            break
        if len(info) != 5 or info[0] not in (socket.AF_INET, socket.AF_INET6):
            continue
        sockaddr = info[4]
        if not isinstance(sockaddr, tuple) or not sockaddr or not isinstance(sockaddr[0], str):
            continue
        try:
            host = ip_address(sockaddr[0])
        except ValueError:
            continue
        if isinstance(host, IPv6Address) and len(sockaddr) == 4 and sockaddr[3]:
            continue  # a scope id beside the address: link-local, as usable_peer refuses
        peer = usable_peer(host, port)  # the port the tracker gave, whatever the resolver says
        if peer is not None:
            usable[peer] = None
    return tuple(usable)


def _local_path_refusal(target: str, address: IPAddress, *, scrape: bool) -> str | None:
    """Why ``target`` may not be asked of a tracker at ``address``: only one on this machine
    is held to a tracker's path (libtorrent's ``ssrf_mitigation``)."""
    return tracker_path_refusal(target, address, scrape=scrape) if is_this_host(address) else None
