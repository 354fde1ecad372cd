"""The trio UDP tracker client: :class:`TrackerClient`, run by :func:`open_tracker_client`.

A thin shell around :class:`~bip_utracker._client_core.TrackerClientCore`: it owns one UDP
socket per address family, a reader task per socket and a timer task, resolves tracker host
names, and turns the core's events into return values and exceptions of the awaiting
:meth:`TrackerClient.announce` / :meth:`TrackerClient.scrape` calls. Any number of calls may
run at once, to any number of trackers (``max_requests`` in flight, the others waiting their
turn); calls to one tracker share its connection id. An error answer to a call sent with an
id that may be stale drops that id and sends the call again at once with a fresh one, once (a
tracker that restarted or rotated its secret refuses every id it granted before); an error to
an id granted for the call itself is a refusal at once.

With a SOCKS5 ``proxy`` (libtorrent's ``proxy_tracker_connections``, ``src/udp_socket.cpp``)
the client owns one UDP socket instead, which talks to the proxy's UDP relay only
(:func:`~bip_handshake.open_socks5_udp_socket`): trackers of either family are reached through
that one relay (the datagram's header says the family), and nothing is ever sent directly.
With the proxy's remote DNS (``socks5h://``) a tracker's host name goes to the proxy and is
never resolved here. While the proxy has no association up, a request waits for one up to
``proxy_timeout`` seconds, then fails with a :class:`TrackerError` naming why (the proxy
refused UDP ASSOCIATE, could not be reached...), as libtorrent fails such a send with
``permission_denied``; a request whose datagram cannot be sent later (the association was
lost) fails the same way at once, never waiting out BEP 15's retransmissions.

>>> async def main(info_hash, peer_id):  # doctest: +SKIP
...     async with open_tracker_client() as client:
...         result = await client.announce(
...             "udp://tracker.example.org:6969/announce", info_hash,
...             peer_id=peer_id, port=6881, left=1 << 20, event=AnnounceEvent.STARTED)
...         print(result.interval, [str(peer) for peer in result.peers])
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import random
import socket as stdlib_socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

import trio

from bip_handshake import (
    CompactError,
    Family,
    ListenError,
    PeerAddress,
    PeerId,
    PeerSink,
    ProxyConfig,
    Socks5UdpSocket,
    Socks5UdpStatistics,
    SocksUnavailableError,
    open_socks5_udp_socket,
    proxy_udp_family,
)
from bip_metainfo import InfoHash

from ._client_core import (
    DEFAULT_CONNECTION_LIFETIME,
    DEFAULT_MAX_REQUESTS_IN_FLIGHT,
    DEFAULT_MAX_RETRANSMITS,
    DEFAULT_RETRANSMIT_TIMEOUT,
    AnnounceParams,
    AnnounceResult,
    ClientStatistics,
    RequestFailed,
    RequestId,
    ScrapeResult,
    TrackerAddress,
    TrackerClientCore,
    TrackerEvent,
    shown_tracker,
)
from ._codec import MAX_SCRAPE_HASHES, AnnounceEvent
from ._errors import LocalProtocolError, TrackerError
from ._url import TrackerUrl, check_host, parse_tracker_url

__all__ = ["DEFAULT_PROXY_TIMEOUT", "TrackerClient", "TrackerTarget", "open_tracker_client"]

_log = logging.getLogger("bip_utracker.client")

TrackerTarget = str | TrackerUrl | PeerAddress | tuple[str, int]
"""Where to send a request: a ``udp://`` URL (text or parsed), an address, or ``(host, port)``."""

DEFAULT_PROXY_TIMEOUT = 10.0
"""Seconds an attempt to set up the proxy's UDP association may take, and a request waits for
one (bip_handshake's SOCKS5 timeout)."""

_MAX_DATAGRAM = 65_536  # a UDP payload never exceeds this, so nothing is ever cut short
_SWARM_ID_SIZE = 20
_IP_FAMILIES = frozenset({stdlib_socket.AF_INET, stdlib_socket.AF_INET6})
_TRANSIENT_ERRORS = frozenset(
    {errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH}
)


@dataclass(slots=True)
class _Waiter:
    """Where an event for one request is left for the task awaiting it."""

    done: trio.Event
    event: TrackerEvent | None = None


class TrackerClient:
    """Announces and scrapes to UDP trackers (BEP 15) over IPv4 and IPv6.

    Made by :func:`open_tracker_client`; its methods may be called from any task while the
    ``async with`` block runs.
    """

    def __init__(
        self,
        core: TrackerClientCore,
        sockets: dict[Family, trio.socket.SocketType],
        *,
        sink: PeerSink | None,
        key: int,
        relay: Socks5UdpSocket | None = None,
        proxy_timeout: float = DEFAULT_PROXY_TIMEOUT,
    ) -> None:
        """Wrap *core* and *sockets* (or, through a proxy, *relay* and no sockets); use
        :func:`open_tracker_client` rather than this."""
        self._core = core
        self._sockets = sockets
        self._relay = relay
        self._proxy_timeout = proxy_timeout
        self._sink = sink
        self._key = key
        self._waiters: dict[RequestId, _Waiter] = {}
        self._wakeup = trio.Event()
        self._timer_deadline = math.inf  # when the timer task next wakes by itself
        self._closed = False
        self._send_errors = 0
        # One slot per request the core may have in flight: a call beyond them waits for one
        # (first come, first served) rather than being refused, within its caller's timeout.
        self._slots = trio.Semaphore(core.max_requests)

    # --- the API ---------------------------------------------------------------------------------

    async def announce(
        self,
        tracker: TrackerTarget,
        info_hash: InfoHash | bytes,
        *,
        peer_id: PeerId | bytes,
        port: int,
        uploaded: int = 0,
        downloaded: int = 0,
        left: int = 0,
        event: AnnounceEvent = AnnounceEvent.NONE,
        num_want: int | None = None,
        key: int | None = None,
        ip: IPv4Address | int = 0,
        url_data: bytes | None = None,
        family: Family | None = None,
        prefer_family: Family | None = None,
    ) -> AnnounceResult:
        """Announce to *tracker* and return its answer; found peers also go to the sink.

        A ``stopped`` announce's peers do not: we are leaving the swarm. While ``max_requests``
        calls (see :func:`open_tracker_client`) are in flight, this one waits for one of them
        to end, first come, first served: the caller's timeout or cancel bounds that wait too.

        Args:
            tracker: a ``udp://host:port/path`` URL (its path and query are sent as BEP 41
                URLData), a :class:`TrackerUrl`, a :class:`~bip_handshake.PeerAddress`, or a
                ``(host, port)`` pair. Host names are resolved here, but through a proxy
                that resolves names (``socks5h://``), which is given the name.
            info_hash: an :class:`~bip_metainfo.InfoHash` (its v1 hash, or its truncated v2
                hash for a v2-only torrent; announce a hybrid's v2 swarm with
                ``InfoHash(v2=...)`` in a second call) or a 20-byte swarm id.
            peer_id: our peer id.
            port: our TCP listen port.
            uploaded: bytes uploaded this session.
            downloaded: bytes downloaded this session.
            left: bytes left to download (0 for a seeder).
            event: started, completed, stopped, or none for a regular announce.
            num_want: how many peers we want; -1 lets the tracker decide. By default -1, but
                0 for ``stopped``: we are leaving, and would throw the peers away (as
                libtorrent). A number given is sent as it is.
            key: the BEP 15 key; by default one random key per client.
            ip: an IPv4 address to announce instead of the sender's (0: the sender's).
            url_data: BEP 41 URLData to send instead of the URL's path and query.
            family: 4 or 6: announce in that IP version only, to the tracker's address of
                it, from our socket of it (BEP 7: one announce per address family we listen
                on, as libtorrent's ``announce_endpoint``); None: to the first address of a
                family we have a socket for. Through a proxy that resolves names
                (``socks5h://``) a name goes to the proxy whatever the family.
            prefer_family: with ``family`` None, 4 or 6: a host name's first address of that
                family, the other family's only when it has none (a session listening in
                one family announces in it, or the tracker would hand out our address of
                the other family, where nothing listens). Through a proxy's relay, the
                relay's family is preferred instead.

        Raises:
            TrackerTimeoutError: no answer after every retransmission.
            TrackerRejectedError: the tracker answered with an error message (its first 1024
                characters, control characters escaped). An error to an id that may be stale
                (a cached one) drops it and the request goes again at once with a fresh one,
                since trackers word a stale id in their own way; an error to an id the tracker
                had just granted for this request, or a second error, is final.
            MalformedPacketError: the answer was not a valid packet.
            TrackerError: the host name did not resolve, or only to addresses no datagram can
                go to (unspecified, multicast, the IPv4 broadcast: a DNS blocklist answers
                ``0.0.0.0`` for a blocked name; such addresses are skipped), the tracker's
                address is one of those, or there is no socket of its family, or it has no
                address of ``family`` (one family failing, not the tracker); through a
                proxy, no UDP association came up within ``proxy_timeout`` seconds, or the
                association was lost (the message says why).
            LocalProtocolError: a bad argument (URLData making the packet longer than
                :data:`~bip_utracker._client_core.MAX_REQUEST_SIZE`, 65,245 bytes, too, or a
                ``family`` or ``prefer_family`` other than 4, 6 or None), or the client is
                closed.
        """
        check_family(family)
        check_family(prefer_family)
        address, path = await self._resolve(tracker, family, prefer_family)
        swarm_id = _swarm_id(info_hash)
        try:
            announce_event = AnnounceEvent(event)
        except ValueError:
            raise LocalProtocolError(f"not an announce event: {event!r}") from None
        if isinstance(ip, bool) or not isinstance(ip, IPv4Address | int):
            raise LocalProtocolError(f"ip is an IPv4Address or an int, got {ip!r}")
        params = AnnounceParams(
            info_hash=swarm_id,
            peer_id=_peer_id_bytes(peer_id),
            port=port,
            uploaded=uploaded,
            downloaded=downloaded,
            left=left,
            event=announce_event,
            num_want=_num_want(num_want, announce_event),
            key=self._key if key is None else key,
            ip=int(ip),
            url_data=path if url_data is None else url_data,
        )
        params.check()  # before any wait for the proxy: a bad argument is told at once
        shown = shown_tracker(address)
        try:
            await self._wait_for_relay(shown)
            async with self._slots:
                self._check_open()
                request_id = self._core.announce(address, params, trio.current_time())
                result = await self._wait(request_id)
        except TrackerError as error:
            # Raised to the caller, who decides what it means: only a trace here.
            _log.debug("announce to tracker %s failed: %r", shown, error)
            raise
        assert isinstance(result, AnnounceResult)
        _log.info(
            "announced %s to tracker %s%s: %d peers (%d seeders, %d leechers), next in %d s",
            swarm_id.hex(),
            shown,
            "" if announce_event is AnnounceEvent.NONE else f" ({announce_event.name.lower()})",
            len(result.peers),
            result.seeders,
            result.leechers,
            result.interval,
        )
        # A "stopped" announce says we are leaving the swarm: its peers are not worth dialling.
        if self._sink is not None and result.peers and announce_event is not AnnounceEvent.STOPPED:
            self._sink.discovered(info_hash, result.peers, "tracker")
        return result

    async def scrape(
        self, tracker: TrackerTarget, info_hashes: Iterable[InfoHash | bytes]
    ) -> ScrapeResult:
        """Ask *tracker* for the seeders, completed downloads and leechers of 1 to 74 swarms.

        The result lists the 20-byte swarm ids in the order given (see :meth:`announce` for
        how an :class:`~bip_metainfo.InfoHash` becomes one); :meth:`ScrapeResult.stats` looks
        one up.

        Raises:
            TrackerTimeoutError, TrackerRejectedError, MalformedPacketError, TrackerError,
            LocalProtocolError: as for :meth:`announce`.
        """
        hashes = tuple(_swarm_id(info_hash) for info_hash in info_hashes)
        if not 1 <= len(hashes) <= MAX_SCRAPE_HASHES:
            raise LocalProtocolError(
                f"a scrape asks for 1..{MAX_SCRAPE_HASHES} info-hashes, got {len(hashes)}"
            )
        address, _ = await self._resolve(tracker)
        shown = shown_tracker(address)
        try:
            await self._wait_for_relay(shown)
            async with self._slots:
                self._check_open()
                request_id = self._core.scrape(address, hashes, trio.current_time())
                result = await self._wait(request_id)
        except TrackerError as error:
            _log.debug("scrape of %d swarms at tracker %s failed: %r", len(hashes), shown, error)
            raise
        assert isinstance(result, ScrapeResult)
        _log.debug("scraped %d swarms at tracker %s", len(hashes), shown)
        return result

    def statistics(self) -> ClientStatistics:
        """A snapshot of the core's counters: tracker datagrams, whether they went directly or
        through the proxy's relay (:attr:`proxy_statistics` counts the relay's side)."""
        return self._core.statistics()

    @property
    def proxy(self) -> ProxyConfig | None:
        """The SOCKS5 proxy every datagram goes through, or None (direct)."""
        return None if self._relay is None else self._relay.proxy

    @property
    def proxy_statistics(self) -> Socks5UdpStatistics | None:
        """The counters of the socket that talks to the proxy's relay (datagrams sent and
        received through it, dropped ones, associations, sends refused while there was none),
        or None without a proxy."""
        return None if self._relay is None else self._relay.statistics

    @property
    def local_addresses(self) -> tuple[PeerAddress, ...]:
        """The addresses our sockets are bound to (IPv4 first). Through a proxy, the one UDP
        socket that talks to the proxy's relay: trackers see the relay's address, not this."""
        if self._relay is not None:
            return (self._relay.local_address,)
        addresses = []
        for family in sorted(self._sockets):
            host, port = self._sockets[family].getsockname()[:2]
            addresses.append(PeerAddress(ip_address(host), port))
        return tuple(addresses)

    @property
    def send_errors(self) -> int:
        """Datagrams the operating system refused to send (they count as lost), and through a
        proxy those not sent for want of a UDP association (their requests failed)."""
        return self._send_errors

    # --- the machinery ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LocalProtocolError("the tracker client is closed")

    async def _wait_for_relay(self, shown: str) -> None:
        """Through a proxy, wait up to ``proxy_timeout`` seconds for its UDP association.

        Raises:
            TrackerError: none came up; the message names the proxy's last error.
            LocalProtocolError: the client closed meanwhile.
        """
        relay = self._relay
        if relay is None or relay.associated:
            return
        with trio.move_on_after(self._proxy_timeout):
            try:
                await relay.wait_associated()
            except trio.ClosedResourceError:
                raise LocalProtocolError("the tracker client is closed") from None
            return
        why = relay.last_error
        reason = f"none set up within {self._proxy_timeout:g} s" if why is None else f"{why}"
        raise TrackerError(
            f"cannot reach tracker {shown}: no UDP association through the proxy "
            f"{relay.proxy.address} ({reason})"
        )

    async def _resolve(
        self,
        tracker: TrackerTarget,
        family: Family | None = None,
        prefer_family: Family | None = None,
    ) -> tuple[TrackerAddress, bytes]:
        """The address to send to (or through a proxy that resolves names, the name) and the
        URLData the target implies; of ``family`` only, if given, else of ``prefer_family``
        first."""
        if isinstance(tracker, PeerAddress):
            return self._usable(tracker, family), b""
        if isinstance(tracker, str):
            tracker = parse_tracker_url(tracker)
        if isinstance(tracker, TrackerUrl):
            host, port, path = tracker.host, tracker.port, tracker.url_data
        elif (
            isinstance(tracker, tuple)
            and len(tracker) == 2
            and isinstance(tracker[0], str)
            and isinstance(tracker[1], int)
        ):
            (host, port), path = tracker, b""
            if not 1 <= port <= 0xFFFF:
                raise LocalProtocolError(f"a tracker port is 1..65535, got {port}")
            # The same checks as a URL's host: "1.2.3" must not reach the resolver, which
            # would read it as the address 1.2.0.3.
            host = check_host(host, ":" in host, repr(tracker))
        else:
            raise LocalProtocolError(f"not a tracker address or udp:// URL: {tracker!r}")
        try:
            literal: IPv4Address | IPv6Address | None = ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            return self._usable(PeerAddress(literal, port), family), path
        if self._relay is not None and self._relay.proxy.remote_dns:
            # socks5h://: the proxy resolves it; our resolver must not hear of it.
            return (host, port), path
        return await self._lookup(host, port, family, prefer_family), path

    async def _lookup(
        self,
        host: str,
        port: int,
        family: Family | None = None,
        prefer_family: Family | None = None,
    ) -> PeerAddress:
        """Resolve *host* to the first address of a family we have a socket for (of
        ``family`` only, if given: its announce in that family, BEP 7; of ``prefer_family``
        first, the other family's only when there is none: the one family a session listens
        in, as libtorrent announces from its listen sockets only); through a
        proxy's relay, the first of our relay socket's family, the other family's only when
        there is none (as libtorrent keeps the addresses its socket can route): a proxy
        reached over IPv4 may have no IPv6 route, and every request to a dual-stack tracker
        would wait out its retransmissions. Addresses no datagram can go to (unspecified,
        multicast, the IPv4 broadcast: a DNS blocklist answers ``0.0.0.0`` and ``::`` for a
        blocked name) are skipped, as libtorrent's ``name_lookup`` drops the endpoints it
        cannot use.

        Raises:
            TrackerError: the name did not resolve, or to no address left (a failing
                tracker, retried as any other, never the caller's mistake), or none of
                ``family`` (that family's announce failing, not the tracker).
        """
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=stdlib_socket.SOCK_DGRAM)
        except (OSError, UnicodeError) as error:
            raise TrackerError(f"cannot resolve tracker host {host!r}: {error}") from None
        preferred = prefer_family if self._relay is None else self._relay.local_address.family
        fallback: PeerAddress | None = None
        unusable: PeerAddress | None = None  # the first skipped for its host, for the message
        other_family = False  # an address of the family not asked for, for the message
        for info_family, _, _, _, sockaddr in infos:
            if info_family not in _IP_FAMILIES:  # a custom resolver may answer any family
                continue
            try:
                # A mapped IPv6 address is the IPv4 tracker it names.
                address = PeerAddress(ip_address(sockaddr[0]), port).normalized()
            except (ValueError, CompactError):
                continue  # a scoped link-local address: not one we can key on
            if family is not None and address.family != family:
                other_family = True
                continue
            if not address.is_connectable:
                unusable = unusable or address
                continue
            if not self._reaches(address.family):
                continue
            if preferred is None or address.family == preferred:
                return address
            if fallback is None:
                fallback = address
        if fallback is not None:
            return fallback
        if unusable is not None:
            raise TrackerError(
                f"tracker host {host!r} has no address we can reach (it resolves to "
                f"{unusable.host}, which no datagram can go to: a DNS blocklist's answer?)"
            )
        if family is not None and other_family:
            raise TrackerError(f"tracker host {host!r} has no IPv{family} address")
        raise TrackerError(f"tracker host {host!r} has no address we can reach")

    def _usable(self, address: PeerAddress, family: Family | None = None) -> PeerAddress:
        """*address* as sent to: plain IPv4 if mapped, of a family we can reach (``family``,
        if given).

        Raises:
            LocalProtocolError: port 0, as a URL's or a ``(host, port)`` pair's.
            TrackerError: no datagram can go to its host (unspecified, multicast, the IPv4
                broadcast: a torrent's tracker URL may name one, which is a failing tracker,
                not the caller's mistake), or we have no socket of its family, or it is not
                of ``family``.
        """
        address = address.normalized()
        if address.port == 0:
            raise LocalProtocolError(f"a tracker port is 1..65535, got 0 ({address})")
        if family is not None and address.family != family:
            raise TrackerError(f"tracker {address} is no IPv{family} address")
        if not address.is_connectable:
            raise TrackerError(f"cannot send to tracker address {address}")
        if not self._reaches(address.family):
            raise TrackerError(f"no IPv{address.family} socket to reach tracker {address}")
        return address

    def _reaches(self, family: Family) -> bool:
        """Whether trackers of *family* can be sent to: through a proxy's relay any family
        (the datagram's header names the destination's), else with a socket of ours."""
        return self._relay is not None or family in self._sockets

    async def _wait(self, request_id: RequestId) -> AnnounceResult | ScrapeResult:
        """Wake the sending task and wait for the request's event."""
        waiter = _Waiter(trio.Event())
        self._waiters[request_id] = waiter
        # The timer task sends the new request's datagram and sees its deadline. Sending from
        # here instead could lose datagrams queued by other requests if this call is cancelled.
        self._wakeup.set()
        try:
            await waiter.done.wait()
        except BaseException:
            # Cancelled: the core must forget the request.
            if self._waiters.pop(request_id, None) is not None:
                self._core.cancel(request_id)
            raise
        event = waiter.event
        if isinstance(event, RequestFailed):
            raise event.error
        assert event is not None
        return event

    async def _flush(self) -> None:
        """Send every datagram the core has queued."""
        if self._relay is not None:
            await self._flush_to_relay(self._relay)
            return
        for data, address in self._core.datagrams_to_send(trio.current_time()):
            assert isinstance(address, PeerAddress)  # names are kept only through a proxy
            sock = self._sockets.get(address.family)
            if sock is None:  # the address was checked when the request started
                continue
            try:
                await sock.sendto(data, (str(address.host), address.port))
            except OSError as error:
                # Like a lost datagram: retransmission or the timeout deal with it.
                self._send_errors += 1
                _log.debug("cannot send to tracker %s: %s", address, error)

    async def _flush_to_relay(self, relay: Socks5UdpSocket) -> None:
        """Send every datagram the core has queued through the proxy's relay; without an
        association, fail the requests to that tracker at once (never a direct send)."""
        failed = False
        for data, address in self._core.datagrams_to_send(trio.current_time()):
            try:
                await relay.sendto(data, address)
            except (SocksUnavailableError, ValueError, TypeError) as error:
                # No association, or a datagram or destination SOCKS5 cannot write (the core
                # bounds both, so a bug of ours): the requests to that tracker fail, the
                # client (this task, its nursery) lives on.
                self._send_errors += 1
                failed = True
                shown = shown_tracker(address)
                _log.debug("cannot send to tracker %s: %s", shown, error)
                self._core.fail_tracker(
                    address, TrackerError(f"cannot reach tracker {shown}: {error}")
                )
            except OSError as error:
                # Like a lost datagram: retransmission or the timeout deal with it.
                self._send_errors += 1
                _log.debug("cannot send to tracker %s: %s", shown_tracker(address), error)
        if failed:
            self._dispatch()

    def _dispatch(self) -> None:
        """Hand the core's events to the tasks waiting for them."""
        while (event := self._core.next_event()) is not None:
            waiter = self._waiters.pop(event.request_id, None)
            if waiter is not None:
                waiter.event = event
                waiter.done.set()

    async def _read(self, sock: trio.socket.SocketType) -> None:
        """Feed every datagram arriving on *sock* to the core."""
        while True:
            try:
                data, source = await sock.recvfrom(_MAX_DATAGRAM)
            except OSError as error:
                # ICMP errors (port or host unreachable) surface here on some systems; the
                # socket stays usable and the request's retransmission or timeout handles it.
                if error.errno in _TRANSIENT_ERRORS:
                    continue
                raise
            try:
                address = PeerAddress(ip_address(source[0]), source[1])
            except (ValueError, CompactError):
                continue  # a scoped source address: not any tracker we sent to
            await self._received(data, address)

    async def _read_relay(self, relay: Socks5UdpSocket) -> None:
        """Feed every datagram the proxy's relay passes on to the core, with the source the
        relay reports (the socket drops anything not from the relay)."""
        while True:
            data, source = await relay.recvfrom()
            # A dual-stack proxy may report an IPv4 tracker as a mapped IPv6 address.
            await self._received(data, source.normalized())

    async def _received(self, data: bytes, source: PeerAddress) -> None:
        """Hand one datagram to the core and act on what it changed."""
        self._core.receive_datagram(data, source, trio.current_time())
        self._dispatch()
        await self._flush()  # a connect answer releases the requests waiting for it
        # Those sends (and an error's retry) have deadlines of their own, which may come
        # before the one the timer task sleeps until: wake it to look again. A stray
        # datagram changes no deadline and wakes nothing, so a flood costs it no work.
        deadline = self._core.next_deadline()
        if deadline is not None and deadline < self._timer_deadline:
            self._wakeup.set()

    async def _run_timers(self) -> None:
        """Call the core's timer at each deadline and send what new requests queued.

        New requests nudge it through ``_wakeup``.
        """
        while True:
            deadline = self._core.next_deadline()
            self._timer_deadline = math.inf if deadline is None else deadline
            with trio.move_on_at(self._timer_deadline):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            self._core.handle_timer(trio.current_time())
            self._dispatch()
            await self._flush()

    def _close(self) -> None:
        """Fail every waiting call: the client is going away."""
        self._closed = True
        for request_id, waiter in list(self._waiters.items()):
            self._core.cancel(request_id)
            waiter.event = RequestFailed(
                request_id,
                PeerAddress(IPv4Address(0), 0),
                LocalProtocolError("the tracker client closed before the tracker answered"),
            )
            waiter.done.set()
        self._waiters.clear()


async def _open_socket(family: Family, host: str) -> trio.socket.SocketType:
    sock = trio.socket.socket(
        stdlib_socket.AF_INET if family == 4 else stdlib_socket.AF_INET6, stdlib_socket.SOCK_DGRAM
    )
    try:
        if family == 6:
            # One socket per family: a dual-stack socket would show IPv4 trackers as mapped
            # IPv6 addresses, and BEP 15 sizes announce peers by the family the packet used.
            sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 1)
        await sock.bind((host, 0))
    except BaseException:
        sock.close()
        raise
    return sock


@asynccontextmanager
async def open_tracker_client(
    *,
    bind_v4: str | None = "0.0.0.0",
    bind_v6: str | None = "::",
    sink: PeerSink | None = None,
    rng: random.Random | None = None,
    timeout: float = DEFAULT_RETRANSMIT_TIMEOUT,
    max_retransmits: int = DEFAULT_MAX_RETRANSMITS,
    connection_lifetime: float = DEFAULT_CONNECTION_LIFETIME,
    max_requests: int = DEFAULT_MAX_REQUESTS_IN_FLIGHT,
    proxy: ProxyConfig | None = None,
    proxy_timeout: float = DEFAULT_PROXY_TIMEOUT,
) -> AsyncIterator[TrackerClient]:
    """Run a :class:`TrackerClient` for the duration of an ``async with`` block.

    The client sends and reads until the block is left, even after a cancel reached the block
    from outside (Ctrl-C, a deadline around the block and what runs in it), through a proxy
    its UDP association kept up as long: the shielded work still running in the block, an
    :class:`~bip_utracker.Announcer`'s ``stopped``, goes out and hears its answer in one
    round trip. A call that is not shielded is cancelled with the
    block, as any other; leaving the block ends the client's tasks at once.

    Args:
        bind_v4: the local IPv4 address for the IPv4 socket, or None for no IPv4.
        bind_v6: the local IPv6 address for the IPv6 socket, or None for no IPv6. When the
            system has no IPv6 and this is the default ``"::"``, the client runs IPv4 only.
        sink: where the peers of every successful announce go (source ``"tracker"``), but a
            ``stopped`` one's.
        rng: the source of transaction ids and of the default key; a
            :class:`random.SystemRandom` by default, so ids cannot be guessed off-path.
        timeout: seconds before the first retransmission (BEP 15: 15).
        max_retransmits: retransmissions before a request fails (BEP 15: 8).
        connection_lifetime: seconds a connection id is used (BEP 15: 60).
        max_requests: requests in flight at once; a further call waits until one ends (first
            come, first served), within its caller's own timeout or cancel: a full client
            slows its callers down, it fails none.
        proxy: send every datagram through this SOCKS5 proxy's UDP relay (UDP ASSOCIATE),
            none directly (see the module docstring). The one UDP socket is bound on
            ``bind_v6`` when the proxy's host is an IPv6 address or a name whose first
            address is (resolved here once, even with ``socks5h://``; IPv4 when that fails)
            or when there is no IPv4 bind, else on ``bind_v4``: the relay is of the proxy's
            family. Trackers of either family are reached through it, those named by a
            host name resolved here at an address of the socket's family if they have one.
        proxy_timeout: seconds an attempt to set up the association may take, and a request
            waits for one before it fails.

    Raises:
        OSError: a socket could not be bound.
        LocalProtocolError: a bad setting.
    """
    if bind_v4 is None and bind_v6 is None:
        raise LocalProtocolError("a tracker client needs an IPv4 or an IPv6 socket")
    if proxy is not None and not isinstance(proxy, ProxyConfig):
        raise LocalProtocolError(f"proxy is a ProxyConfig, got {proxy!r:.80}")
    if (
        isinstance(proxy_timeout, bool)
        or not isinstance(proxy_timeout, int | float)
        or not 0 < proxy_timeout < math.inf
    ):
        raise LocalProtocolError(
            f"proxy_timeout is a positive number of seconds, got {proxy_timeout!r}"
        )
    source = random.SystemRandom() if rng is None else rng
    core = TrackerClientCore(
        rng=source,
        timeout=timeout,
        max_retransmits=max_retransmits,
        connection_lifetime=connection_lifetime,
        max_requests=max_requests,
    )
    sockets: dict[Family, trio.socket.SocketType] = {}
    async with AsyncExitStack() as stack:
        relay: Socks5UdpSocket | None = None
        if proxy is not None:
            # IPv4 when the proxy's name does not resolve in time: the association's
            # attempts say why (a tracker request's TrackerError names it).
            family = await proxy_udp_family(proxy, timeout=proxy_timeout, fallback=4)
            host = _relay_bind(family, bind_v4, bind_v6)
            try:
                # Shielded as the client's own tasks (below), for the same "stopped": a cancel
                # from outside would otherwise close the control connection, and the proxy end
                # the association, under it. The stack closes it after the client's tasks end.
                relay = await stack.enter_async_context(
                    open_socks5_udp_socket(
                        proxy, bind=(host, 0), timeout=proxy_timeout, shielded=True
                    )
                )
            except ListenError as error:
                raise OSError(str(error)) from error
        else:
            stack.callback(_close_all, sockets)
            if bind_v4 is not None:
                sockets[4] = await _open_socket(4, bind_v4)
            if bind_v6 is not None:
                try:
                    sockets[6] = await _open_socket(6, bind_v6)
                except OSError as error:
                    if bind_v6 != "::" or not sockets:
                        raise
                    _log.debug("no IPv6 socket (%s): the tracker client runs over IPv4 only", error)
        client = TrackerClient(
            core,
            sockets,
            sink=sink,
            key=source.getrandbits(32),
            relay=relay,
            proxy_timeout=float(proxy_timeout),
        )
        if _log.isEnabledFor(logging.DEBUG):
            through = "" if proxy is None else f", through the proxy {proxy.url}"
            _log.debug(
                "tracker client bound to %s%s",
                ", ".join(map(str, client.local_addresses)),
                through,
            )
        tasks: list[Callable[[], Awaitable[None]]] = [
            functools.partial(client._read, sock) for sock in sockets.values()
        ]
        if relay is not None:
            tasks.append(functools.partial(client._read_relay, relay))
        tasks.append(client._run_timers)
        # The reader and timer tasks are shielded, and only the exit of this block ends them:
        # a cancel reaching the caller's block from outside (Ctrl-C, an application-wide
        # deadline) would otherwise end them at once, while the block's own shielded and
        # bounded work (an Announcer's "stopped") still needs them to send its datagram and
        # hear the answer. Made before any task starts, so that one not yet started when the
        # block ends finds its shield already cancelled; every way out passes the finally.
        shields = [trio.CancelScope(shield=True) for _ in tasks]
        try:
            async with trio.open_nursery() as nursery:
                for task, shield in zip(tasks, shields, strict=True):
                    nursery.start_soon(_run_shielded, task, shield)
                try:
                    yield client
                finally:
                    _cancel_all(shields)
                    nursery.cancel_scope.cancel()
        finally:
            client._close()


async def _run_shielded(task: Callable[[], Awaitable[None]], shield: trio.CancelScope) -> None:
    """Run one of the client's tasks within its *shield*, until ``open_tracker_client``
    cancels it.

    One that fails does not cancel the others: the nursery cancels the caller's block, whose
    exit ends them, and meanwhile they still time out (or answer) what the block waits for.
    """
    with shield:
        await task()


def _cancel_all(shields: list[trio.CancelScope]) -> None:
    for shield in shields:
        shield.cancel()


def _relay_bind(family: Family, bind_v4: str | None, bind_v6: str | None) -> str:
    """Where the socket that talks to the proxy's relay is bound: in the proxy's *family*
    when we may bind it (the control connection goes to its addresses of our socket's
    family only, the relay is of it), else in the other."""
    if family == 6 and bind_v6 is not None:
        return bind_v6
    if bind_v4 is not None:
        return bind_v4
    assert bind_v6 is not None  # checked by the caller
    return bind_v6


def _close_all(sockets: dict[Family, trio.socket.SocketType]) -> None:
    for sock in sockets.values():
        sock.close()


def check_family(family: object) -> None:
    """Accept an address family as the announce APIs take it: 4, 6, or None (any).

    Raises:
        LocalProtocolError: anything else.
    """
    if family is not None and (isinstance(family, bool) or family not in (4, 6)):
        raise LocalProtocolError(f"family is 4, 6 or None, got {family!r:.40}")


def _num_want(given: int | None, event: AnnounceEvent) -> int:
    """The ``num_want`` to send: the caller's, else 0 for ``stopped`` (a client leaving wants
    no peers: libtorrent's too) and -1 (the tracker decides) for any other event."""
    if given is not None:
        return given
    return 0 if event is AnnounceEvent.STOPPED else -1


def _swarm_id(info_hash: InfoHash | bytes) -> bytes:
    """The 20-byte id a tracker knows the swarm by."""
    if isinstance(info_hash, InfoHash):
        return info_hash.swarm_ids()[0]  # v1 if it has one, else the truncated v2
    if isinstance(info_hash, bytes | bytearray | memoryview):
        raw = bytes(info_hash)
        if len(raw) == _SWARM_ID_SIZE:
            return raw
    raise LocalProtocolError(
        f"an info-hash is an InfoHash or {_SWARM_ID_SIZE} bytes, got {info_hash!r:.80}"
    )


def _peer_id_bytes(peer_id: PeerId | bytes) -> bytes:
    if isinstance(peer_id, PeerId):
        return peer_id.value
    if isinstance(peer_id, bytes) and len(peer_id) == _SWARM_ID_SIZE:
        return peer_id
    raise LocalProtocolError(f"a peer id is a PeerId or 20 bytes, got {peer_id!r:.80}")
