"""Keeping our ports mapped on UPnP routers: a trio shell around :class:`UpnpClient`.

``async with open_upnp_mapper() as mapper:`` finds the Internet Gateway Devices (an SSDP
search: every one that answers, as libtorrent maps on each), asks each to forward our ports
(by default TCP and UDP 6881), keeps the mappings renewed while the block runs, and deletes
them on the way out (within ``close_timeout`` seconds, even when the block is cancelled).
Its surface matches the NAT-PMP :class:`~bip_handshake.PortMapper` where it can:
:attr:`UpnpPortMapper.external_address`, :meth:`UpnpPortMapper.mappings`,
:meth:`UpnpPortMapper.external_port`, :meth:`UpnpPortMapper.wait_changed`, and the
``on_event`` callback sees every :class:`PortMappingEvent` (the shared :class:`PortMapped`,
:class:`MappingFailed`, :class:`MappingRemoved`, and UPnP's own :class:`UpnpDeviceFound`,
:class:`UpnpDiscoveryFailed`, :class:`UpnpAddressChanged`, :class:`UpnpAddressFailed`,
:class:`UpnpDeviceLost`); a port mapped or failed on one gateway comes as
:class:`UpnpPortMapped` / :class:`UpnpMappingFailed` (those shared events with the
``device``), and :meth:`UpnpPortMapper.device_mappings` shows each gateway's grants where
:meth:`UpnpPortMapper.mappings` shows the first that grants.

Every rule (when to search, which devices are used, what to ask and when, what an answer or a
fault means, what is deleted on close) is :class:`~bip_handshake._upnp_client.UpnpClient`'s:
see :mod:`bip_handshake._upnp_client`. This shell only does the IO the core asks for; the
core runs ``concurrent``: one request in flight per lane (the search's, and each gateway's),
the lanes side by side, as libtorrent keeps one request in flight per device. A worker task
hands out what the core asks:

- a **search**: a UDP socket bound to ``bind_host`` (on a multicast address the datagrams go
  with a TTL of 2, UDA 1.1's default, and leave by ``bind_host`` when one is named), the
  M-SEARCH rounds the core gives sent on it, its answers fed back by a task of its own
  until the core ends the search (the gateways found meanwhile are asked at once); a
  socket that cannot be opened (out of file descriptors, say) is logged and told to the
  core, for which it is a search that found nothing;
- **HTTP exchanges** (descriptions and SOAP actions), each in a task of its own, on its
  own connection (``Connection: close``) from ``bind_host`` within ``http_timeout``; the
  answer, or what went wrong, goes back to the core. One at a time per gateway (its
  control URL never gets two requests at once), the gateways side by side: a slow or dead
  one (each request waiting its timeout) delays no other's mappings. At most one task per
  lane: 1 + :data:`~bip_handshake.UPNP_MAX_GATEWAYS`;
- **waiting** until the core's next deadline, until an exchange ends or an answer to the
  search comes, or until :meth:`UpnpPortMapper.add_mapping` /
  :meth:`UpnpPortMapper.remove_mapping` wakes it;
- **events**: a second task hands the core's events to ``on_event`` and wakes
  :meth:`UpnpPortMapper.wait_changed`, even while the worker waits for a slow device;
- **close**: the core's deletions made one at a time per gateway, the gateways side by
  side, within ``close_timeout`` (shielded: a cancelled block still deletes), what is left
  then given up and said so.

A sketch (on a LAN with a UPnP router)::

    async with open_upnp_mapper([("tcp", 6881), ("udp", 6881)]) as mapper:
        await mapper.wait_changed()
        print(mapper.device, mapper.external_address, mapper.external_port("tcp", 6881))
"""

from __future__ import annotations

import logging
import math
import random
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from ipaddress import IPv4Address

import trio

from ._background import background, unwrap_single
from ._errors import LocalProtocolError
from ._natpmp_shell import (
    NATPMP_DEFAULT_MAPPINGS,
    MappingProtocolName,
    _protocol,
    default_gateway,
)
from ._portmap import MappingId, PortMapping, PortMappingEvent
from ._upnp import (
    UPNP_MAX_SSDP_RESPONSE,
    UPNP_SSDP_HOST,
    UPNP_SSDP_PORT,
    HttpResponse,
    HttpResponseParser,
    HttpUrl,
    UpnpDevice,
    UpnpError,
    _check_port,
)
from ._upnp_client import (
    UPNP_CLOSE_TIMEOUT,
    UPNP_HTTP_TIMEOUT,
    UPNP_LEASE_DURATION,
    UPNP_SEARCH_TIMEOUT,
    UpnpClient,
    UpnpDeviceMapping,
    UpnpRequest,
    UpnpRequestKind,
    UpnpStatistics,
)

# The constants, the statistics and the rules live in the core (bip_handshake._upnp_client).
__all__ = [
    "UpnpPortMapper",
    "open_upnp_mapper",
]

_RECEIVE_SIZE = 65536
_RECEIVE_ERROR_PAUSE = 0.1  # after a failed receive: a socket that keeps failing never spins

_log = logging.getLogger("bip_handshake.upnp")


class _RequestError(Exception):
    """An HTTP exchange with a device gave nothing usable (internal)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UpnpPortMapper:
    """The mappings :func:`open_upnp_mapper` keeps on a UPnP router; read it, or add and
    remove mappings.

    Not built directly: :func:`open_upnp_mapper` gives one.
    """

    def __init__(
        self,
        client: UpnpClient,
        *,
        bind_host: IPv4Address,
        http_timeout: float,
        on_event: Callable[[PortMappingEvent], None] | None,
    ) -> None:
        self._client = client
        self._bind_host = bind_host
        self._http_timeout = http_timeout
        self._on_event = on_event
        self._pending = trio.Event()  # the core may hold events for the dispatcher
        self._changed = trio.Event()
        self._woken = trio.Event()  # set: the worker has work (a report, an add, an answer)
        self._search_socket: trio.socket.SocketType | None = None  # the search's, if one runs
        self._listener: trio.CancelScope | None = None  # its listening task's
        # The requests' tasks' nursery: the worker's, then the close's.
        self._nursery: trio.Nursery | None = None
        self._close_deadline: float | None = None  # closing: when the close gives up
        self._round = trio.Lock()  # held while a search round goes out

    # -- what the caller reads and wants ---------------------------------------------------

    @property
    def device(self) -> UpnpDevice | None:
        """The gateway read first (the preferred one when in use, else the first found),
        None while none is in use (searching, or none found)."""
        return self._client.device

    @property
    def devices(self) -> tuple[UpnpDevice, ...]:
        """Every gateway in use, in the order found."""
        return self._client.devices

    @property
    def external_address(self) -> IPv4Address | None:
        """An external IPv4 address a gateway told (the one read first's, when it told
        one), None until one did."""
        return self._client.external_address

    def mappings(self) -> tuple[PortMapping, ...]:
        """Snapshots of the mappings kept, in the order they were added: each as the
        gateway read first that grants it shows it (``external_port`` None while none
        does)."""
        return self._client.mappings()

    def device_mappings(self) -> tuple[UpnpDeviceMapping, ...]:
        """Each mapping on each gateway in use: the gateways in the order found, their
        mappings in the order added (``external_port`` None while not granted)."""
        return self._client.device_mappings()

    def external_port(self, protocol: MappingProtocolName, internal_port: int) -> int | None:
        """The external port a gateway forwards to ``internal_port`` (the one read first
        that grants it), None while none.

        After a conflict the router may forward another port than the one asked for: this
        is the one peers must dial.
        """
        return self._client.external_port(_protocol(protocol), internal_port)

    def statistics(self) -> UpnpStatistics:
        """A snapshot of the counters."""
        return self._client.statistics()

    def add_mapping(
        self, protocol: MappingProtocolName, internal_port: int, *, external_port: int | None = None
    ) -> MappingId:
        """Map one more port on every gateway; its requests go out as soon as each gateway
        is known and free.

        Args:
            protocol: ``"tcp"``, ``"udp"`` or a :class:`MappingProtocol`.
            internal_port: our listening port (1..65535).
            external_port: the external port to ask for; by default the internal port.

        Raises:
            LocalProtocolError: a bad argument, the mapper closed, :data:`UPNP_MAX_MAPPINGS`
                mappings held, or this protocol and port mapped already.
        """
        mapping_id = self._client.add_mapping(
            _protocol(protocol), internal_port, trio.current_time(), external_port=external_port
        )
        self._kick()
        return mapping_id

    def remove_mapping(self, mapping_id: MappingId) -> None:
        """Stop keeping a mapping, deleting it on each gateway that may hold it.

        :class:`MappingRemoved` follows (one), at once or when the deletions are done. Removing a
        mapping already being removed does nothing.

        Raises:
            LocalProtocolError: no such mapping.
        """
        self._client.remove_mapping(mapping_id, trio.current_time())
        self._pending.set()
        self._kick()

    async def wait_changed(self) -> None:
        """Wait for the next event: a gateway found or lost, an address learnt or changed,
        a port mapped, moved, failed or removed."""
        await self._changed.wait()

    # -- events ----------------------------------------------------------------------------

    def _dispatch(self) -> None:
        changed = False
        while (event := self._client.next_event()) is not None:
            changed = True
            _log.debug("UPnP: %s", event)  # the core logs what a user wants to see
            if self._on_event is not None:
                self._on_event(event)
        if changed:
            self._changed.set()
            self._changed = trio.Event()

    async def _dispatcher(self) -> None:
        # Events raised by the caller's add/remove reach on_event from this task too, even
        # while the worker is busy with a search or a slow request.
        while True:
            await self._pending.wait()
            self._pending = trio.Event()
            self._dispatch()

    def _kick(self) -> None:
        # The worker may be waiting on an older deadline: wake it to work at once.
        self._woken.set()

    # -- the worker ------------------------------------------------------------------------

    def _next(self) -> UpnpRequest | None:
        """Let the core's time pass, then a request due now (its events to the
        dispatcher)."""
        now = trio.current_time()
        self._client.handle_timer(now)
        if self._listener is not None and not self._client.searching:
            # The core ended the search: its socket goes with its listener.
            self._listener.cancel()
            self._listener = None
            self._search_socket = None
        request = self._client.next_request(now)
        self._pending.set()
        return request

    def _hand_out(self) -> None:
        """Start a task for each request the core has due now.

        Called by the worker, and by each task as it ends (an exchange reported, an answer
        to the search taken): the core's next step goes at once, in the order it gives.
        One task per request in flight: the core (concurrent) hands out at most one per
        lane, the search's and each gateway's (at most
        :data:`~bip_handshake.UPNP_MAX_GATEWAYS`), so they are bounded, and a gateway's
        control URL never gets two requests at once."""
        nursery = self._nursery
        if nursery is None:
            return  # between the worker's end and the close's start: the close asks
        while (request := self._next()) is not None:
            if request.kind is UpnpRequestKind.SEARCH:
                nursery.start_soon(self._search_round, request)
                continue
            bound = self._http_timeout
            if self._close_deadline is not None:
                # Closing: within what is left of the close's bound.
                left = self._close_deadline - trio.current_time()
                bound = min(bound, max(left, 0.0))
            nursery.start_soon(self._perform, request, bound)

    async def _run(self) -> None:
        # A bug in a request's task comes out as itself, not wrapped by this nursery and
        # again by the block's.
        with unwrap_single():
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    while True:
                        # Replaced before asking the core: a report (or an add) from here
                        # on wakes the wait below, whatever it does meanwhile.
                        self._woken = trio.Event()
                        self._hand_out()
                        deadline = self._client.next_deadline()
                        with trio.move_on_at(math.inf if deadline is None else deadline):
                            await self._woken.wait()
                finally:
                    self._nursery = None

    async def _search_round(self, request: UpnpRequest) -> None:
        """One round of a search; its first opens the search's socket, heard by a task
        of its own until the core ends the search. The answers that come meanwhile are
        taken once the round is out whole (as the round's last datagram leaves, the first
        answers are in): the first to answer is described first."""
        async with self._round:
            await self._send_round(request)
        self._next_step()

    async def _send_round(self, request: UpnpRequest) -> None:
        sock = self._search_socket
        if sock is None:
            sock = await self._open_search_socket(request)
            if sock is None:
                return  # told to the core: a search that found nothing
            nursery = self._nursery
            if nursery is None:  # pragma: no cover - this task runs in that nursery
                sock.close()
                return
            self._search_socket = sock
            self._listener = trio.CancelScope()
            nursery.start_soon(self._listen, sock, self._listener)
        destination = request.destination
        assert destination is not None  # a SEARCH has one (UpnpRequest checks)
        host, port = destination
        sent = 0
        for datagram in request.datagrams():
            try:
                await sock.sendto(datagram, (str(host), port))
            except OSError as error:
                # Lost like a dropped datagram: no answer comes, the search ends empty.
                _log.debug("UPnP search to %s:%d failed: %s", host, port, error)
                continue
            sent += 1
        self._client.search_sent(request, sent, self._now())

    async def _open_search_socket(self, first: UpnpRequest) -> trio.socket.SocketType | None:
        """The search's socket, bound; None (told to the core) when it cannot be had."""
        client = self._client
        try:
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except OSError as error:
            # Out of file descriptors (EMFILE), say: a search that found nothing, tried
            # again later like one; the mapper (and the session around it) goes on.
            _log.info("UPnP: cannot open a search socket: %s", error)
            client.request_failed(first, f"cannot open a search socket: {error}", self._now())
            return None
        try:
            await sock.bind((str(self._bind_host), 0))
            if first.destination is not None and first.destination[0].is_multicast:
                _multicast_options(sock, self._bind_host)
        except OSError as error:
            sock.close()
            _log.debug("UPnP search socket failed: %s", error)
            client.request_failed(first, f"search socket failed: {error}", self._now())
            return None
        except BaseException:
            sock.close()  # cancelled while binding: the socket is nobody's yet
            raise
        return sock

    async def _listen(self, sock: trio.socket.SocketType, scope: trio.CancelScope) -> None:
        """Take the search's answers until the worker cancels ``scope`` (the core ended
        the search); the socket is this search's alone, closed on the way out."""
        with sock, scope:
            while True:
                try:
                    data, source = await sock.recvfrom(UPNP_MAX_SSDP_RESPONSE + 1)
                except OSError as error:
                    # An ICMP error (port unreachable) may surface here; a pause keeps a
                    # socket that keeps failing from spinning until the search ends.
                    _log.debug("UPnP search receive failed: %s", error)
                    await trio.sleep(_RECEIVE_ERROR_PAUSE)
                    continue
                async with self._round:  # a round under way goes out whole first
                    self._client.ssdp_received(data, IPv4Address(source[0]), self._now())
                    # A gateway found is described (and asked) before the next answer is
                    # read.
                    self._next_step()

    async def _perform(self, request: UpnpRequest, timeout: float | None = None) -> None:
        """One HTTP exchange the core asked for, within ``timeout`` seconds (by default
        ``http_timeout``); its outcome goes back to the core, whose next step goes at
        once."""
        url = request.url
        assert url is not None  # every request but a SEARCH has one (UpnpRequest checks)
        bound = self._http_timeout if timeout is None else timeout
        try:
            response, local = await self._exchange(url, request.payload, request.max_body, bound)
        except _RequestError as failure:
            self._client.request_failed(request, failure.reason, self._now())
        else:
            self._client.request_answered(request, response, local, self._now())
        self._next_step()

    def _next_step(self) -> None:
        # What the core wants next goes now; the worker (or the close) recomputes its
        # deadline and tells the events.
        self._hand_out()
        self._kick()

    async def _exchange(
        self, url: HttpUrl, build: Callable[[IPv4Address], bytes], max_body: int, timeout: float
    ) -> tuple[HttpResponse, IPv4Address]:
        """One HTTP request on its own connection within ``timeout`` seconds; ``build``
        gets our address on it, which comes back with the answer."""
        local = None if self._bind_host == IPv4Address(0) else str(self._bind_host)
        try:
            with trio.fail_after(timeout):
                stream = await trio.open_tcp_stream(str(url.host), url.port, local_address=local)
                async with stream:
                    ours = IPv4Address(stream.socket.getsockname()[0])
                    await stream.send_all(build(ours))
                    parser = HttpResponseParser(max_body=max_body)
                    while True:
                        response = parser.receive_data(await stream.receive_some(_RECEIVE_SIZE))
                        if response is not None:
                            return response, ours
        except trio.TooSlowError:
            raise _RequestError(f"no answer within {timeout:g} s") from None
        except (OSError, trio.BrokenResourceError) as error:
            raise _RequestError(str(error) or type(error).__name__) from None
        except UpnpError as error:
            raise _RequestError(str(error)) from None

    @staticmethod
    def _now() -> float:
        return trio.current_time()

    # -- close -----------------------------------------------------------------------------

    async def _close(self) -> None:
        """Make the core's deletions, one at a time per gateway and the gateways side by
        side; past the caller's bound (or cancelled), what is left is given up, and said
        so.

        Each exchange gets at most what is left of the bound: a gateway that stopped
        answering spends it on its own deletion alone (the core then asks it nothing
        more) while the others make theirs meanwhile."""
        client = self._client
        client.close(trio.current_time())
        try:
            self._dispatch()
            # An exception of on_event (called by _dispatch in this nursery's body) ends the
            # block as itself, as it does while the block runs: not in a group.
            with unwrap_single():
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self._close_deadline = trio.current_effective_deadline()
                    while True:
                        self._woken = trio.Event()
                        self._hand_out()
                        self._dispatch()
                        if not nursery.child_tasks:
                            break  # none under way: nothing more is due (a task's end asks)
                        await self._woken.wait()
        finally:
            self._nursery = None
            client.abandon()
            self._dispatch()


def _multicast_options(sock: trio.socket.SocketType, interface: IPv4Address) -> None:
    """A search sent to a multicast group stays on the LAN (UDA 1.1's TTL of 2, where
    libtorrent's multicast socket allows more hops), and leaves by ``interface`` when one is
    named."""
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
    if interface != IPv4Address(0):
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, interface.packed)


def _check_seconds(name: str, value: object, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LocalProtocolError(f"{name} is a number of seconds, got {value!r}")
    if not (value > 0 if positive else value >= 0) or not math.isfinite(value):
        bound = "more than 0" if positive else "at least 0"
        raise LocalProtocolError(f"{name} is {bound} and finite, got {value!r}")
    return float(value)


def _ipv4(name: str, value: object) -> IPv4Address:
    if not isinstance(value, str):
        raise LocalProtocolError(f"{name} is an IPv4 address as a str, got {value!r}")
    try:
        return IPv4Address(value)
    except ValueError:
        raise LocalProtocolError(f"{name} is an IPv4 address, got {value!r}") from None


def _preferred_device(gateway: object, ssdp_host: IPv4Address) -> IPv4Address | None:
    """The device a search prefers, from ``open_upnp_mapper``'s ``gateway``."""
    if gateway is None:
        return None
    if gateway == "route":
        # A unicast search asks one device: that one. Else the router on the default
        # route, the device miniupnpc and libtorrent look for.
        if ssdp_host.is_multicast or ssdp_host == IPv4Address("255.255.255.255"):
            return default_gateway()
        return ssdp_host
    return _ipv4("gateway", gateway)


@asynccontextmanager
async def open_upnp_mapper(
    mappings: Iterable[tuple[MappingProtocolName, int]] = NATPMP_DEFAULT_MAPPINGS,
    *,
    ssdp_address: tuple[str, int] = (UPNP_SSDP_HOST, UPNP_SSDP_PORT),
    bind_host: str = "0.0.0.0",
    gateway: str | None = "route",
    lease_duration: int = UPNP_LEASE_DURATION,
    description: str = "bip",
    close_timeout: float = UPNP_CLOSE_TIMEOUT,
    search_timeout: float = UPNP_SEARCH_TIMEOUT,
    http_timeout: float = UPNP_HTTP_TIMEOUT,
    on_event: Callable[[PortMappingEvent], None] | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[UpnpPortMapper]:
    """Keep ``mappings`` mapped on the LAN's UPnP gateways (each that answers, up to
    :data:`UPNP_MAX_GATEWAYS`) while the block runs.

    Args:
        mappings: ``(protocol, internal_port)`` pairs to map, each asking for the same
            external port.
        ssdp_address: where searches go: SSDP's multicast group, or (for a test's fake
            gateway) a unicast address.
        bind_host: the local IPv4 address to search and connect from; by default the
            system picks it per route.
        gateway: the device read first (:attr:`UpnpPortMapper.device`,
            :attr:`UpnpPortMapper.external_address`, :meth:`UpnpPortMapper.mappings` and
            :meth:`UpnpPortMapper.external_port` show its grants before another
            gateway's): an IPv4 address; ``"route"`` (the default) for the default route's
            gateway (:func:`~bip_handshake.default_gateway`), or, when ``ssdp_address`` is
            a unicast address, that address; None for no preference (in the order found).
        lease_duration: seconds of lease each mapping asks for (0..604800); 0 asks a
            permanent mapping (renewed hourly anyway).
        description: the mappings' description in the router's pages (at most 256
            characters, no control characters).
        close_timeout: seconds the deletions may take on exit.
        search_timeout: seconds a search takes answers for.
        http_timeout: seconds one HTTP exchange with a gateway may take.
        on_event: called with every :class:`PortMappingEvent`, in the mapper's task (an
            exception it raises ends the block).
        rng: draws the random external ports tried after a conflict.

    Raises:
        LocalProtocolError: a bad argument.
    """
    if not isinstance(ssdp_address, tuple) or len(ssdp_address) != 2:
        raise LocalProtocolError(f"ssdp_address is a (host, port) pair, got {ssdp_address!r}")
    ssdp_host = _ipv4("an SSDP address", ssdp_address[0])
    ssdp_port = _check_port("an SSDP port", ssdp_address[1])
    bind = _ipv4("bind_host", bind_host)
    client = UpnpClient(
        ssdp_address=(ssdp_host, ssdp_port),
        concurrent=True,
        gateway=_preferred_device(gateway, ssdp_host),
        lease_duration=lease_duration,
        description=description,
        search_timeout=_check_seconds("search_timeout", search_timeout, positive=True),
        rng=rng,
    )
    close_bound = _check_seconds("close_timeout", close_timeout, positive=False)
    mapper = UpnpPortMapper(
        client,
        bind_host=bind,
        http_timeout=_check_seconds("http_timeout", http_timeout, positive=True),
        on_event=on_event,
    )
    for protocol, internal_port in mappings:
        mapper.add_mapping(protocol, internal_port)
    try:
        async with background(mapper._run, mapper._dispatcher):
            yield mapper
    finally:
        # Shielded: a cancelled block still deletes its mappings, within the bound.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + close_bound):
            await mapper._close()
