"""Keeping our ports mapped on a UPnP router: the trio side of :mod:`bip_handshake._upnp`.

``async with open_upnp_mapper() as mapper:`` finds the Internet Gateway Device (an SSDP
search), asks it to forward our ports (by default TCP and UDP 6881), keeps the mappings
renewed while the block runs, and deletes them on the way out (within ``close_timeout``
seconds, even when the block is cancelled). Its surface matches the NAT-PMP
:class:`~bip_handshake.PortMapper` where it can: :attr:`UpnpPortMapper.external_address`,
:meth:`UpnpPortMapper.mappings`, :meth:`UpnpPortMapper.external_port`,
:meth:`UpnpPortMapper.wait_changed`, and the ``on_event`` callback sees every
:class:`PortMappingEvent` (the shared :class:`PortMapped`, :class:`MappingFailed`,
:class:`MappingRemoved`, and UPnP's own :class:`UpnpDeviceFound`, :class:`UpnpDiscoveryFailed`,
:class:`UpnpAddressChanged`, :class:`UpnpAddressFailed`, :class:`UpnpDeviceLost`).

How it runs (as libtorrent's upnp.cpp does, where not said otherwise):

- **Search**: :data:`UPNP_SEARCH_TARGETS` are asked for, :data:`UPNP_SEARCH_SENDS` times
  (after 0, 1 and 3 s), and answers are taken for :data:`UPNP_SEARCH_TIMEOUT` seconds. An
  answer is used only if its LOCATION is ``http://`` to the very address the answer came
  from (else any LAN host could make us fetch from, then POST to, any host: it is counted
  and dropped), and the description's control URL must stay on that host too. One
  description is fetched per answering host (later answers are duplicates; but a host whose
  first LOCATION answered ``upnp:rootdevice`` and served no gateway, a media server on the
  router's address say, gets one more try with a LOCATION it gives for the gateway or its
  connection service), and at most :data:`UPNP_MAX_DEVICES` hosts are looked at per
  search. The gateway (``gateway``: by default the default route's) wins as soon as its
  description serves; another device is used only when the gateway's has not served by the
  end of the search (the first that served). A description offering several connection
  services (a WANPPPConnection beside the WANIPConnection) has each asked the external
  address in turn, and the first that tells one (neither empty nor 0.0.0.0) is used, else
  the first (miniupnpc's "connected" check). No device: :class:`UpnpDiscoveryFailed`, and
  a new search after :data:`UPNP_SEARCH_RETRY_MIN` seconds, doubling up to
  :data:`UPNP_SEARCH_RETRY_MAX`; a search socket that cannot be opened (out of file
  descriptors, say) is such a search, logged. On a multicast address the datagrams go with
  a TTL of 2 (UDA 1.1's default).
- **Requests** go to the device one at a time (small routers), each on its own connection
  (``Connection: close``) within ``http_timeout``: deletions first, then
  GetExternalIPAddress, then an AddPortMapping per mapping in the order they fell due
  (``NewInternalClient`` is our address on that connection, as the router sees it), asking
  for the internal port as the external one unless told. AddPortMapping and
  DeletePortMapping succeed on any HTTP 200 without a SOAP fault, whatever the body (as
  libtorrent and miniupnpc take them); GetExternalIPAddress must answer properly.
- **Renewal**: each grant is renewed halfway through its lease, asking the same port again;
  the external address is asked again as often. A permanent lease is renewed every
  :data:`UPNP_PERMANENT_RENEW` seconds all the same: routers reboot and forget.
- **Errors**: 725 OnlyPermanentLeasesSupported: asked again at once with lease 0 (for every
  later request to this device). 718 ConflictInMappingEntry (and 501 ActionFailed, which
  some routers answer instead) for the port held or wanted: GetSpecificPortMappingEntry
  first (once per go); when the router forwards that port to our address and internal
  port already (some routers answer 718 to a client adding again the mapping it holds),
  the mapping is deemed renewed, for the lease the router tells (0: permanent). Otherwise
  a 718 says another host holds the port: a standing grant of it is given up at once (and
  the port is never deleted as ours), and the mapping is asked again at once for a random
  port in :data:`UPNP_CONFLICT_PORTS`, up to :data:`UPNP_CONFLICT_ATTEMPTS` times; the
  port granted is the one :class:`PortMapped` tells. 724 SamePortValuesRequired: asked
  again with the internal port as the external one. Such a retry goes before any other
  request, and at most :data:`UPNP_MAX_ATTEMPTS` requests go in one go. Any other
  refusal (727 ExternalPortOnlyWildcard, 716, ...) fails the mapping
  (:class:`MappingFailed` with the code) until :data:`UPNP_RETRY_MAX` seconds later; no
  answer, an HTTP error, 501 or 728 NoPortMapsAvailable fail it until
  :data:`UPNP_RETRY_MIN` seconds later, doubling up to :data:`UPNP_RETRY_MAX`. As with
  NAT-PMP, a renewal that fails in one of those ways that may pass leaves the earlier
  grant standing until it runs out.
- **A lost device**: after :data:`UPNP_DEVICE_FAILURES` requests in a row got no usable
  answer, the device is deemed gone (:class:`UpnpDeviceLost`): its grants lapse
  (:class:`MappingFailed`), its address is forgotten, and a new search starts at once. A
  device found and lost again and again (it answers searches, not requests) is searched
  for after :data:`UPNP_SEARCH_RETRY_MIN` seconds, then doubling, up to
  :data:`UPNP_SEARCH_RETRY_MAX`, until one of its answers is usable again.
- **Close**: a DeletePortMapping for every external port the router may hold for a mapping
  (each one it granted, up to :data:`UPNP_MAX_PORTS_KEPT` per mapping, and one asked for
  whose answer never came; not those whose lease ran out), one at a time, all within
  ``close_timeout`` (shielded: a cancelled block still deletes). A mapping removed while
  the mapper runs gets the same.

A sketch (on a LAN with a UPnP router)::

    async with open_upnp_mapper([("tcp", 6881), ("udp", 6881)]) as mapper:
        await mapper.wait_changed()
        print(mapper.device, mapper.external_address, mapper.external_port("tcp", 6881))
"""

from __future__ import annotations

import enum
import logging
import math
import random
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Final, TypeVar

import trio

from ._background import background
from ._errors import LocalProtocolError
from ._natpmp_shell import (
    NATPMP_DEFAULT_MAPPINGS,
    MappingProtocolName,
    _protocol,
    default_gateway,
)
from ._portmap import (
    MappingFailed,
    MappingId,
    MappingProtocol,
    MappingRemoved,
    PortMapped,
    PortMapping,
    PortMappingEvent,
)
from ._upnp import (
    UPNP_MAX_DESCRIPTION,
    UPNP_MAX_SOAP_RESPONSE,
    UPNP_MAX_SSDP_RESPONSE,
    UPNP_SEARCH_TARGETS,
    UPNP_SSDP_HOST,
    UPNP_SSDP_PORT,
    HttpResponse,
    HttpResponseParser,
    HttpUrl,
    UpnpActionError,
    UpnpAddressChanged,
    UpnpAddressFailed,
    UpnpDevice,
    UpnpDeviceFound,
    UpnpDeviceLost,
    UpnpDiscoveryFailed,
    UpnpError,
    UpnpErrorCode,
    UpnpPortMappingEntry,
    build_add_port_mapping,
    build_delete_port_mapping,
    build_get_external_address,
    build_get_specific_port_mapping_entry,
    build_http_get,
    build_msearch,
    check_soap_success,
    parse_device_services,
    parse_external_address,
    parse_http_url,
    parse_port_mapping_entry,
    parse_ssdp_response,
)

__all__ = [
    "UPNP_CLOSE_TIMEOUT",
    "UPNP_CONFLICT_ATTEMPTS",
    "UPNP_CONFLICT_PORTS",
    "UPNP_DEVICE_FAILURES",
    "UPNP_HTTP_TIMEOUT",
    "UPNP_LEASE_DURATION",
    "UPNP_MAX_ATTEMPTS",
    "UPNP_MAX_DEVICES",
    "UPNP_MAX_LEASE",
    "UPNP_MAX_MAPPINGS",
    "UPNP_MAX_PORTS_KEPT",
    "UPNP_MIN_RENEW_DELAY",
    "UPNP_PERMANENT_RENEW",
    "UPNP_RETRY_MAX",
    "UPNP_RETRY_MIN",
    "UPNP_SEARCH_INTERVAL",
    "UPNP_SEARCH_RETRY_MAX",
    "UPNP_SEARCH_RETRY_MIN",
    "UPNP_SEARCH_SENDS",
    "UPNP_SEARCH_TIMEOUT",
    "UpnpPortMapper",
    "UpnpStatistics",
    "open_upnp_mapper",
]

UPNP_LEASE_DURATION: Final = 3600
"""Seconds of lease each mapping asks for (libtorrent's default); 0 asks a permanent one."""

UPNP_MAX_LEASE: Final = 604800
"""The longest lease WANIPConnection:2 allows (a week); the caller may not ask more."""

UPNP_PERMANENT_RENEW: Final = 3600.0
"""Seconds between renewals of a permanent mapping (and address requests meanwhile)."""

UPNP_MIN_RENEW_DELAY: Final = 2.0
"""Least seconds between a grant and its renewal, whatever the lease."""

UPNP_SEARCH_SENDS: Final = 3
"""M-SEARCH rounds per search: UDP may lose one."""

UPNP_SEARCH_INTERVAL: Final = 1.0
"""Seconds before the second round; each later gap doubles (rounds at 0, 1 and 3 s)."""

UPNP_SEARCH_TIMEOUT: Final = 5.0
"""Seconds a search takes answers for (MX is 2: devices answer within 2 s of a round)."""

UPNP_SEARCH_RETRY_MIN: Final = 60.0
"""Seconds before a search that found nothing is tried again; doubles."""

UPNP_SEARCH_RETRY_MAX: Final = 1800.0
"""Longest wait between searches."""

UPNP_MAX_DEVICES: Final = 16
"""Distinct devices one search looks at: a LAN full of answers costs a bounded effort."""

UPNP_HTTP_TIMEOUT: Final = 5.0
"""Seconds one HTTP exchange with a device may take, connection to last byte."""

UPNP_RETRY_MIN: Final = 60.0
"""Seconds before a request that failed in a way that may pass is tried again; doubles."""

UPNP_RETRY_MAX: Final = 3600.0
"""Longest wait before a failed request is tried again (and the wait after a refusal)."""

UPNP_CONFLICT_ATTEMPTS: Final = 4
"""Random ports tried after 718 ConflictInMappingEntry (or 501) before the mapping fails."""

UPNP_CONFLICT_PORTS: Final = (49152, 65535)
"""The range a random external port is drawn from after a conflict (IANA's dynamic ports)."""

UPNP_MAX_ATTEMPTS: Final = 6
"""AddPortMapping requests for one mapping in one go (725, 718 and 724 are asked again at
once), besides one GetSpecificPortMappingEntry after a 718 or 501 on the port held or
wanted."""

UPNP_DEVICE_FAILURES: Final = 3
"""Requests in a row without a usable answer before the device is deemed gone."""

UPNP_MAX_MAPPINGS: Final = 64
"""Mappings one mapper may hold at once."""

UPNP_MAX_PORTS_KEPT: Final = 8
"""External ports remembered per mapping for deletion (each grant, and a request whose
answer never came); past it, the one whose lease ends first is forgotten."""

UPNP_CLOSE_TIMEOUT: Final = 4.0
"""Seconds the deletions may take on exit."""

_MAX_DESCRIPTION_TEXT: Final = 256  # NewPortMappingDescription, in characters
_ROOT_DEVICE: Final = "upnp:rootdevice"  # the search target that names no gateway
_RECEIVE_SIZE: Final = 65536

_log = logging.getLogger("bip_handshake.upnp")

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class UpnpStatistics:
    """A snapshot of a :class:`UpnpPortMapper`'s counters.

    Attributes:
        searches: searches started.
        ssdp_sent: M-SEARCH datagrams sent.
        ssdp_received: SSDP answers received.
        ssdp_malformed: answers dropped for not parsing.
        ssdp_untrusted: answers dropped for a LOCATION that is not ``http://`` to the
            address the answer came from.
        ssdp_duplicates: answers dropped for a host already looked at in the search.
        ssdp_ignored: answers dropped past :data:`UPNP_MAX_DEVICES` hosts.
        descriptions_rejected: descriptions that could not be fetched or used.
        requests: SOAP requests sent.
        request_failures: requests without a usable answer (none, an HTTP error, garbage).
        action_errors: requests answered with a UPnP error.
        devices_lost: devices deemed gone.
    """

    searches: int
    ssdp_sent: int
    ssdp_received: int
    ssdp_malformed: int
    ssdp_untrusted: int
    ssdp_duplicates: int
    ssdp_ignored: int
    descriptions_rejected: int
    requests: int
    request_failures: int
    action_errors: int
    devices_lost: int


class _State(enum.Enum):
    WANTED = "wanted"  # to be requested at ``due`` (new, failed and retried, or device new)
    MAPPED = "mapped"  # granted; renewed at ``due``
    REMOVING = "removing"  # to be deleted at ``due``


class _Mapping:
    __slots__ = (
        "attempts",
        "checked",
        "conflicts",
        "due",
        "expires_at",
        "external_port",
        "failures",
        "home_port",
        "id",
        "internal_port",
        "lifetime",
        "port",
        "ports",
        "protocol",
        "state",
    )

    def __init__(
        self, mapping_id: MappingId, protocol: MappingProtocol, internal: int, external: int
    ) -> None:
        self.id = mapping_id
        self.protocol = protocol
        self.internal_port = internal
        self.home_port = external  # the port wanted, then the port last granted
        self.port = external  # the port the next request asks for
        self.external_port: int | None = None
        self.lifetime = 0
        self.expires_at: float | None = None
        self.state = _State.WANTED
        self.due = -math.inf
        self.failures = 0  # failed goes in a row: the back-off
        self.attempts = 0  # requests in the current go
        self.conflicts = 0  # random ports tried in the current go
        self.checked = False  # GetSpecificPortMappingEntry asked in the current go
        # External port -> until when the router may hold it for us: every grant, and a
        # request on its way or never answered (the router may have made it). Removing
        # the mapping deletes those still live; at most UPNP_MAX_PORTS_KEPT.
        self.ports: dict[int, float] = {}

    def snapshot(self) -> PortMapping:
        return PortMapping(
            self.id,
            self.protocol,
            self.internal_port,
            self.external_port,
            self.lifetime,
            self.expires_at,
        )


class _RequestError(Exception):
    """An HTTP exchange with a device gave nothing usable (internal)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _transient(result: int | None) -> bool:
    # No answer may pass; so may a router's "action failed" and "no port maps available".
    return result in (
        None,
        UpnpErrorCode.ACTION_FAILED,
        UpnpErrorCode.NO_PORT_MAPS_AVAILABLE,
    )


def _retry_delay(result: int | None, failures: int) -> float:
    if _transient(result):
        return min(math.ldexp(UPNP_RETRY_MIN, min(failures - 1, 32)), UPNP_RETRY_MAX)
    return UPNP_RETRY_MAX


def _code_text(code: int | None) -> str:
    if code is None:
        return "no usable answer"
    if isinstance(code, UpnpErrorCode):
        return f"{int(code)} {code.name}"
    return f"UPnP error {code}"


class UpnpPortMapper:
    """The mappings :func:`open_upnp_mapper` keeps on a UPnP router; read it, or add and
    remove mappings.

    Not built directly: :func:`open_upnp_mapper` gives one.
    """

    def __init__(
        self,
        *,
        ssdp_address: tuple[IPv4Address, int],
        bind_host: IPv4Address,
        gateway: IPv4Address | None,
        lease_duration: int,
        description: str,
        search_timeout: float,
        http_timeout: float,
        on_event: Callable[[PortMappingEvent], None] | None,
        rng: random.Random,
    ) -> None:
        self._ssdp_address = ssdp_address
        self._bind_host = bind_host
        self._preferred = gateway  # the device a search takes at once; None: the first
        self._lease = lease_duration
        self._description = description
        self._search_timeout = search_timeout
        self._http_timeout = http_timeout
        self._on_event = on_event
        self._rng = rng
        self._mappings: dict[MappingId, _Mapping] = {}
        self._next_id = 1
        self._device: UpnpDevice | None = None
        self._control: HttpUrl | None = None
        self._permanent_only = False  # the device answered 725
        self._address: IPv4Address | None = None
        self._address_due = math.inf  # no device, nothing to ask
        self._address_failures = 0
        self._device_failures = 0  # requests in a row without a usable answer
        self._losses = 0  # devices lost with no usable answer since
        self._again: _Mapping | None = None  # asked again at once (725, 718, 724)
        self._search_failures = 0
        self._search_due = -math.inf
        self._closed = False
        self._events: deque[PortMappingEvent] = deque()
        self._pending = trio.Event()  # events wait for the dispatcher
        self._changed = trio.Event()
        self._wait_scope: trio.CancelScope | None = None
        self._searches = 0
        self._ssdp_sent = 0
        self._ssdp_received = 0
        self._ssdp_malformed = 0
        self._ssdp_untrusted = 0
        self._ssdp_duplicates = 0
        self._ssdp_ignored = 0
        self._descriptions_rejected = 0
        self._requests = 0
        self._request_failures = 0
        self._action_errors = 0
        self._devices_lost = 0

    # -- what the caller reads and wants ---------------------------------------------------

    @property
    def device(self) -> UpnpDevice | None:
        """The gateway in use, None while none is (searching, or none found)."""
        return self._device

    @property
    def external_address(self) -> IPv4Address | None:
        """The gateway's external IPv4 address, None until it said (or when it has none)."""
        return self._address

    def mappings(self) -> tuple[PortMapping, ...]:
        """Snapshots of the mappings kept (``external_port`` None while not granted), in the
        order they were added."""
        return tuple(m.snapshot() for m in self._mappings.values())

    def external_port(self, protocol: MappingProtocolName, internal_port: int) -> int | None:
        """The external port the router forwards to ``internal_port``, None while none.

        After a conflict the router may forward another port than the one asked for: this
        is the one peers must dial.
        """
        wanted = _protocol(protocol)
        for mapping in self._mappings.values():
            if mapping.protocol is wanted and mapping.internal_port == internal_port:
                return mapping.external_port
        return None

    def statistics(self) -> UpnpStatistics:
        """A snapshot of the counters."""
        return UpnpStatistics(
            searches=self._searches,
            ssdp_sent=self._ssdp_sent,
            ssdp_received=self._ssdp_received,
            ssdp_malformed=self._ssdp_malformed,
            ssdp_untrusted=self._ssdp_untrusted,
            ssdp_duplicates=self._ssdp_duplicates,
            ssdp_ignored=self._ssdp_ignored,
            descriptions_rejected=self._descriptions_rejected,
            requests=self._requests,
            request_failures=self._request_failures,
            action_errors=self._action_errors,
            devices_lost=self._devices_lost,
        )

    def add_mapping(
        self, protocol: MappingProtocolName, internal_port: int, *, external_port: int | None = None
    ) -> MappingId:
        """Map one more port; the request goes out as soon as the gateway is known and free.

        Args:
            protocol: ``"tcp"``, ``"udp"`` or a :class:`MappingProtocol`.
            internal_port: our listening port (1..65535).
            external_port: the external port to ask for; by default the internal port.

        Raises:
            LocalProtocolError: a bad argument, the mapper closed, :data:`UPNP_MAX_MAPPINGS`
                mappings held, or this protocol and port mapped already.
        """
        kind = _protocol(protocol)
        _check_port("an internal port", internal_port)
        wanted = internal_port if external_port is None else external_port
        _check_port("an external port", wanted)
        if self._closed:
            raise LocalProtocolError("the UPnP mapper is closed")
        if len(self._mappings) >= UPNP_MAX_MAPPINGS:
            raise LocalProtocolError(f"a UPnP mapper holds at most {UPNP_MAX_MAPPINGS} mappings")
        for m in self._mappings.values():
            if m.protocol is kind and m.internal_port == internal_port:
                raise LocalProtocolError(f"{kind.name} port {internal_port} is mapped already")
        mapping_id = MappingId(self._next_id)
        self._next_id += 1
        self._mappings[mapping_id] = _Mapping(mapping_id, kind, internal_port, wanted)
        self._kick()
        return mapping_id

    def remove_mapping(self, mapping_id: MappingId) -> None:
        """Stop keeping a mapping, deleting it on the router if it may be there.

        :class:`MappingRemoved` follows, at once or when the deletion is done. Removing a
        mapping already being removed does nothing.

        Raises:
            LocalProtocolError: no such mapping.
        """
        mapping = self._mappings.get(mapping_id)
        if mapping is None:
            raise LocalProtocolError(f"no UPnP mapping {mapping_id!r}")
        if mapping.state is _State.REMOVING:
            return
        now = trio.current_time()
        if self._device is None or not _live_ports(mapping, now):
            self._drop(mapping, None)
            return
        # A request for it may be under way: the deletion waits its turn behind it.
        mapping.state = _State.REMOVING
        mapping.due = now
        self._kick()

    async def wait_changed(self) -> None:
        """Wait for the next event: a gateway found or lost, the address learnt or changed,
        a port mapped, moved, failed or removed."""
        await self._changed.wait()

    # -- events ----------------------------------------------------------------------------

    def _emit(self, event: PortMappingEvent) -> None:
        self._events.append(event)
        self._pending.set()

    def _dispatch(self) -> None:
        changed = False
        while self._events:
            event = self._events.popleft()
            changed = True
            _log.debug("UPnP: %s", event)
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

    @property
    def _gateway(self) -> str:
        """The gateway's address, for the log."""
        return "(none)" if self._control is None else str(self._control.host)

    def _kick(self) -> None:
        # The worker may be waiting on an older deadline: wake it to work at once.
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    # -- the worker ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if self._device is None:
                await trio.sleep_until(self._search_due)
                found = await self._search()
                if found is None:
                    self._discovery_failed(trio.current_time())
                else:
                    self._use(*found, trio.current_time())
                continue
            await self._work()

    async def _work(self) -> None:
        """Do the one request due first, or wait until one is."""
        now = trio.current_time()
        self._lapse_grants(now)
        removing = self._first_due(now, removing=True)
        if removing is not None:
            await self._delete(removing)
            return
        again, self._again = self._again, None
        if again is not None and again.id in self._mappings and again.state is not _State.REMOVING:
            # A refusal that another request may lift: it goes before anything else.
            await self._map(again)
            return
        if self._address_due <= now:
            await self._ask_address()
            return
        wanted = self._first_due(now, removing=False)
        if wanted is not None:
            await self._map(wanted)
            return
        with trio.CancelScope(deadline=self._next_deadline()) as scope:
            self._wait_scope = scope
            try:
                await trio.sleep_forever()
            finally:
                self._wait_scope = None

    def _first_due(self, now: float, *, removing: bool) -> _Mapping | None:
        best: _Mapping | None = None
        for m in self._mappings.values():
            if m.due > now or (m.state is _State.REMOVING) is not removing:
                continue
            if best is None or m.due < best.due:
                best = m
        return best

    def _next_deadline(self) -> float:
        deadlines = [self._address_due]
        for m in self._mappings.values():
            deadlines.append(m.due)
            if m.state is _State.WANTED and m.expires_at is not None:
                deadlines.append(m.expires_at)
        return min(deadlines)

    # -- search ----------------------------------------------------------------------------

    async def _search(self) -> tuple[UpnpDevice, IPv4Address | None] | None:
        """One search: M-SEARCH rounds, then the descriptions of the hosts that answered;
        the device to use, with its external address if a check learnt it."""
        self._searches += 1
        host, port = self._ssdp_address
        try:
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except OSError as error:
            # Out of file descriptors (EMFILE), say: a search that found nothing, tried
            # again later like one; the mapper (and the session around it) goes on.
            _log.info("UPnP: cannot open a search socket: %s", error)
            return None
        with sock:
            try:
                await sock.bind((str(self._bind_host), 0))
                if host.is_multicast:
                    _multicast_options(sock, self._bind_host)
            except OSError as error:
                _log.debug("UPnP search socket failed: %s", error)
                return None
            start = trio.current_time()
            end = start + self._search_timeout
            sends = 0
            next_send = start
            hosts: dict[str, _Answered] = {}
            queue: deque[str] = deque()
            fallback: tuple[UpnpDevice, IPv4Address | None] | None = None
            while True:
                now = trio.current_time()
                if sends < UPNP_SEARCH_SENDS and now >= next_send:
                    await self._send_search(sock, host, port)
                    sends += 1
                    next_send = start + UPNP_SEARCH_INTERVAL * (2**sends - 1)
                if queue:
                    location = queue.popleft()
                    preferred = self._preferred is None or (
                        parse_http_url(location).host == self._preferred  # checked by _on_ssdp
                    )
                    if fallback is not None and not preferred:
                        continue  # it could not beat the device already found
                    found = await self._describe(location)
                    if found is not None:
                        if preferred:
                            return found
                        # Not the gateway: used only if the gateway does not serve.
                        fallback = found
                    continue
                if now >= end:
                    return fallback
                wake = min(end, next_send) if sends < UPNP_SEARCH_SENDS else end
                with trio.move_on_at(wake):
                    try:
                        data, source = await sock.recvfrom(UPNP_MAX_SSDP_RESPONSE + 1)
                    except OSError as error:
                        # An ICMP error (port unreachable) may surface here; a pause keeps
                        # a socket that keeps failing from spinning until the search ends.
                        _log.debug("UPnP search receive failed: %s", error)
                        await trio.sleep(0.1)
                        continue
                    self._on_ssdp(data, source[0], hosts, queue)

    async def _send_search(
        self, sock: trio.socket.SocketType, host: IPv4Address, port: int
    ) -> None:
        for target in UPNP_SEARCH_TARGETS:
            request = build_msearch(target, host=str(host), port=port)
            try:
                await sock.sendto(request, (str(host), port))
            except OSError as error:
                # Lost like a dropped datagram: no answer comes, the search ends empty.
                _log.debug("UPnP search to %s:%d failed: %s", host, port, error)
                continue
            self._ssdp_sent += 1

    def _on_ssdp(
        self, data: bytes, source: str, hosts: dict[str, _Answered], queue: deque[str]
    ) -> None:
        self._ssdp_received += 1
        try:
            answer = parse_ssdp_response(data)
        except UpnpError as error:
            self._ssdp_malformed += 1
            _log.debug("UPnP: a bad SSDP answer from %s: %s", source, error)
            return
        try:
            location = parse_http_url(answer.location)
        except UpnpError as error:
            self._ssdp_untrusted += 1
            _log.debug("UPnP: SSDP answer from %s ignored: %s", source, error)
            return
        if str(location.host) != source:
            # Else any LAN host could send us to fetch from, then POST to, another host.
            self._ssdp_untrusted += 1
            _log.debug(
                "UPnP: SSDP answer from %s ignored: its LOCATION %s is elsewhere",
                source,
                answer.location,
            )
            return
        # One description per host: a host answering with ever new LOCATIONs costs one
        # fetch. A router's address may also serve a media server, which answers only
        # upnp:rootdevice: the gateway's own LOCATION, when it comes, gets one more try.
        claims = answer.search_target != _ROOT_DEVICE
        known = hosts.get(source)
        if known is not None:
            if claims and not known.claimed and answer.location != known.location:
                hosts[source] = _Answered(answer.location, claimed=True)
                queue.append(answer.location)
            else:
                self._ssdp_duplicates += 1
            return
        if len(hosts) >= UPNP_MAX_DEVICES:
            self._ssdp_ignored += 1
            return
        hosts[source] = _Answered(answer.location, claimed=claims)
        queue.append(answer.location)

    async def _describe(self, location: str) -> tuple[UpnpDevice, IPv4Address | None] | None:
        """The service of the description at ``location`` to use, with the external
        address its check learnt; None when the description is of no use."""
        url = parse_http_url(location)  # checked by _on_ssdp
        try:
            response = await self._exchange(
                url, lambda _: build_http_get(url), UPNP_MAX_DESCRIPTION
            )
            if response.status != 200:
                raise UpnpError(f"HTTP {response.status} {response.reason}".rstrip())
            services = parse_device_services(response.body, location)
        except (_RequestError, UpnpError) as error:
            self._descriptions_rejected += 1
            _log.debug("UPnP: the description at %s is of no use: %s", location, error)
            return None
        if len(services) == 1:
            return services[0], None
        # miniupnpc's "connected" check: a router may offer a WANIPConnection and a
        # WANPPPConnection of which only one is up; the first that tells an address wins.
        for service in services:
            address = await self._probe(service)
            if address is not None:
                return service, address
        return services[0], None

    async def _probe(self, service: UpnpDevice) -> IPv4Address | None:
        """The external address ``service`` tells; None when it tells none (not
        connected: empty or 0.0.0.0, an error such as 401 InvalidAction, no answer)."""
        control = parse_http_url(service.control_url)
        self._requests += 1
        try:
            response = await self._exchange(
                control, lambda _: build_get_external_address(service), UPNP_MAX_SOAP_RESPONSE
            )
            return parse_external_address(response)
        except UpnpActionError as error:
            self._action_errors += 1
            _log.debug("UPnP: %s tells no address: %s", service.service_type, error)
        except (_RequestError, UpnpError) as error:
            self._request_failures += 1
            _log.debug("UPnP: %s tells no address: %s", service.service_type, error)
        return None

    def _discovery_failed(self, now: float) -> None:
        self._search_failures += 1
        delay = min(
            math.ldexp(UPNP_SEARCH_RETRY_MIN, min(self._search_failures - 1, 32)),
            UPNP_SEARCH_RETRY_MAX,
        )
        self._search_due = now + delay
        # Said once; later failures are the same news.
        level = logging.INFO if self._search_failures == 1 else logging.DEBUG
        _log.log(level, "no UPnP gateway found; searching again in %.0f s", delay)
        self._emit(UpnpDiscoveryFailed(self._search_due))

    def _use(self, device: UpnpDevice, address: IPv4Address | None, now: float) -> None:
        self._device = device
        self._control = parse_http_url(device.control_url)
        self._permanent_only = False
        self._search_failures = 0
        self._device_failures = 0
        self._address_failures = 0
        self._address_due = now
        for m in self._mappings.values():
            m.due = min(m.due, now)
        _log.info(
            "UPnP gateway %s found: %s, %s",
            self._gateway,
            device.friendly_name or "unnamed",
            device.service_type.rpartition(":service:")[2],
        )
        self._emit(UpnpDeviceFound(device))
        if address is not None:
            # The search's check asked it already.
            self._address_learnt(address, now)

    def _device_failed(self, reason: str) -> None:
        """A request got no usable answer: after a few in a row, the device is gone."""
        self._request_failures += 1
        self._device_failures += 1
        if self._closed or self._device_failures < UPNP_DEVICE_FAILURES:
            return
        device = self._device
        assert device is not None
        now = trio.current_time()
        self._devices_lost += 1
        _log.info("UPnP gateway %s stopped answering (%s)", self._gateway, reason)
        self._emit(UpnpDeviceLost(device, reason))
        self._device = None
        self._control = None
        self._address = None
        self._address_due = math.inf
        self._again = None
        # Search again at once; but a device that is found and lost again and again (it
        # answers searches, not requests) is searched for ever more slowly.
        self._losses += 1
        self._search_due = now
        if self._losses > 1:
            self._search_due += min(
                math.ldexp(UPNP_SEARCH_RETRY_MIN, min(self._losses - 2, 32)),
                UPNP_SEARCH_RETRY_MAX,
            )
        for m in list(self._mappings.values()):
            m.ports.clear()  # that device is not there to delete them; their leases will
            if m.state is _State.REMOVING:
                self._drop(m, None)
                continue
            m.state = _State.WANTED
            m.due = -math.inf  # asked for as soon as a device is found
            m.failures = m.attempts = m.conflicts = 0
            m.checked = False
            m.port = m.home_port
            if m.expires_at is not None:
                # Asked for again once the next search finds a gateway.
                self._clear_grant(m)
                self._emit(MappingFailed(m.snapshot(), None, self._search_due))

    # -- requests --------------------------------------------------------------------------

    async def _exchange(
        self, url: HttpUrl, build: Callable[[IPv4Address], bytes], max_body: int
    ) -> HttpResponse:
        """One HTTP request on its own connection; ``build`` gets our address on it."""
        local = None if self._bind_host == IPv4Address(0) else str(self._bind_host)
        try:
            with trio.fail_after(self._http_timeout):
                stream = await trio.open_tcp_stream(str(url.host), url.port, local_address=local)
                async with stream:
                    ours = IPv4Address(stream.socket.getsockname()[0])
                    await stream.send_all(build(ours))
                    parser = HttpResponseParser(max_body=max_body)
                    while True:
                        response = parser.receive_data(await stream.receive_some(_RECEIVE_SIZE))
                        if response is not None:
                            return response
        except trio.TooSlowError:
            raise _RequestError(f"no answer within {self._http_timeout:g} s") from None
        except (OSError, trio.BrokenResourceError) as error:
            raise _RequestError(str(error) or type(error).__name__) from None
        except UpnpError as error:
            raise _RequestError(str(error)) from None

    async def _soap(
        self, build: Callable[[IPv4Address], bytes], parse: Callable[[HttpResponse], _T]
    ) -> _T:
        """POST one action to the device; what ``parse`` reads in the answer.

        Raises:
            UpnpActionError: the device refused (it answered: the device is fine).
            _RequestError: no usable answer (counted toward losing the device).
        """
        assert self._control is not None
        self._requests += 1
        try:
            response = await self._exchange(self._control, build, UPNP_MAX_SOAP_RESPONSE)
            value = parse(response)
        except UpnpActionError:
            self._action_errors += 1
            self._device_failures = self._losses = 0
            raise
        except UpnpError as error:
            raise _RequestError(str(error)) from None
        self._device_failures = self._losses = 0
        return value

    async def _ask_address(self) -> None:
        device = self._device
        assert device is not None
        try:
            address = await self._soap(
                lambda _: build_get_external_address(device), parse_external_address
            )
        except UpnpActionError as error:
            self._address_failed(error.code)
            return
        except _RequestError as failure:
            self._address_failed(None)
            self._device_failed(failure.reason)
            return
        now = trio.current_time()
        if address is None:
            # No address yet: the router is not connected upstream.
            self._address_failed(None)
            return
        self._address_learnt(address, now)

    def _address_learnt(self, address: IPv4Address, now: float) -> None:
        self._address_failures = 0
        self._address_due = now + self._renew_interval(self._effective_lease())
        if address != self._address:
            self._address = address
            _log.info("UPnP gateway %s: our external address is %s", self._gateway, address)
            self._emit(UpnpAddressChanged(address))

    def _address_failed(self, result: int | None) -> None:
        now = trio.current_time()
        self._address_failures += 1
        retry_at = now + _retry_delay(result, self._address_failures)
        self._address_due = retry_at
        self._emit(UpnpAddressFailed(result, retry_at))

    def _effective_lease(self) -> int:
        return 0 if self._permanent_only else self._lease

    @staticmethod
    def _renew_interval(lease: int) -> float:
        return max(lease / 2, UPNP_MIN_RENEW_DELAY) if lease else UPNP_PERMANENT_RENEW

    async def _map(self, mapping: _Mapping) -> None:
        device = self._device
        assert device is not None
        lease = self._effective_lease()
        port = mapping.port
        mapping.attempts += 1
        # From the moment the request leaves, the router may hold the port for us (an
        # answer may never come): remembered for deletion, forgotten if it is refused.
        held_until = mapping.ports.get(port)
        self._remember(mapping, port, lease)

        def build(ours: IPv4Address) -> bytes:
            return build_add_port_mapping(
                device,
                protocol=mapping.protocol,
                external_port=port,
                internal_port=mapping.internal_port,
                internal_client=ours,
                description=self._description,
                lease_duration=lease,
            )

        try:
            await self._soap(build, check_soap_success)
        except UpnpActionError as error:
            await self._refused(mapping, port, held_until, error.code, lease)
            return
        except _RequestError as failure:
            _log.debug(
                "UPnP: mapping %s port %d got no usable answer: %s",
                mapping.protocol.name,
                mapping.internal_port,
                failure.reason,
            )
            self._mapping_failed(mapping, None)
            self._device_failed(failure.reason)
            return
        self._granted(mapping, port, lease)

    async def _refused(
        self, mapping: _Mapping, port: int, held_until: float | None, code: int, lease: int
    ) -> None:
        """AddPortMapping of ``port`` was refused with ``code``; ``held_until`` is what was
        known of the router's hold on ``port`` before the request."""
        conflict = code in (UpnpErrorCode.CONFLICT_IN_MAPPING_ENTRY, UpnpErrorCode.ACTION_FAILED)
        entry: UpnpPortMappingEntry | None = None
        theirs = False  # the router showed the port forwards elsewhere
        if (
            conflict
            and port == mapping.home_port
            and not mapping.checked
            and mapping.state is not _State.REMOVING
        ):
            # Some routers answer so to a client adding again the mapping it holds (Open.NAT
            # #14): ask whose the port is before moving to another one.
            mapping.checked = True
            entry, theirs = await self._our_entry(mapping, port)
            if self._device is None or mapping.id not in self._mappings:
                return  # the check lost the device: every mapping was reset with it
        if entry is not None:
            lifetime = _entry_lifetime(entry.lease_duration, lease)
            self._remember(mapping, port, lifetime)  # ours: deleted with the others
            if entry.enabled is not False:
                _log.debug(
                    "UPnP gateway %s refused %s port %d as a conflict, but it is ours: kept",
                    self._gateway,
                    mapping.protocol.name,
                    port,
                )
                self._granted(mapping, port, lifetime)
                return
            # Ours but disabled: it forwards nothing; another port is looked for.
            if mapping.external_port == port:
                self._clear_grant(mapping)
        elif code == UpnpErrorCode.CONFLICT_IN_MAPPING_ENTRY or theirs:
            # Another host holds the port (a 718, or a 501 whose check showed it): a grant
            # of it no longer stands, and it is never ours to delete.
            mapping.ports.pop(port, None)
            if mapping.external_port == port:
                self._clear_grant(mapping)
        elif held_until is None:
            mapping.ports.pop(port, None)  # this request made nothing
        else:
            mapping.ports[port] = held_until  # an earlier grant may still hold it
        if mapping.state is _State.REMOVING:
            return  # its deletion is due: a refusal changes nothing
        if mapping.attempts < UPNP_MAX_ATTEMPTS:
            if code == UpnpErrorCode.ONLY_PERMANENT_LEASES_SUPPORTED and lease:
                _log.debug("UPnP gateway %s takes permanent leases only", self._gateway)
                self._permanent_only = True
                self._again = mapping
                return
            if conflict and mapping.conflicts < UPNP_CONFLICT_ATTEMPTS:
                # Another host holds the port (some routers say 501): try a random one.
                mapping.conflicts += 1
                mapping.port = self._rng.randint(*UPNP_CONFLICT_PORTS)
                self._again = mapping
                return
            if (
                code == UpnpErrorCode.SAME_PORT_VALUES_REQUIRED
                and mapping.port != mapping.internal_port
            ):
                mapping.port = mapping.internal_port
                self._again = mapping
                return
        self._mapping_failed(mapping, code)

    async def _our_entry(
        self, mapping: _Mapping, port: int
    ) -> tuple[UpnpPortMappingEntry | None, bool]:
        """``(entry, theirs)``: the router's entry for ``port`` if it forwards to our address
        and internal port (else None), and whether the router showed it forwards elsewhere
        (another host's: never ours to delete). ``(None, False)`` when the entry is absent
        or the router will not tell."""
        device = self._device
        assert device is not None
        ours: list[IPv4Address] = []

        def build(local: IPv4Address) -> bytes:
            ours.append(local)
            return build_get_specific_port_mapping_entry(
                device, protocol=mapping.protocol, external_port=port
            )

        try:
            entry = await self._soap(build, parse_port_mapping_entry)
        except UpnpActionError as error:
            # 714 NoSuchEntryInArray, or 401: the router does not have this action.
            _log.debug("UPnP: no entry told for %s port %d: %s", mapping.protocol.name, port, error)
            return None, False
        except _RequestError as failure:
            self._device_failed(failure.reason)
            return None, False
        if entry.internal_client != ours[-1] or entry.internal_port != mapping.internal_port:
            return None, True
        return entry, False

    def _remember(self, mapping: _Mapping, port: int, lease: int) -> None:
        """The router may hold ``port`` for ``mapping`` for ``lease`` seconds from now."""
        now = trio.current_time()
        for stale in [p for p, until in mapping.ports.items() if until <= now or p == port]:
            del mapping.ports[stale]
        if len(mapping.ports) >= UPNP_MAX_PORTS_KEPT:
            # Bounded: the port whose lease ends first is let go (its lease will end it).
            first = min(mapping.ports, key=mapping.ports.__getitem__)
            del mapping.ports[first]
            _log.debug(
                "UPnP: %s external port %d forgotten: too many kept", mapping.protocol.name, first
            )
        mapping.ports[port] = now + lease if lease else math.inf

    def _granted(self, mapping: _Mapping, port: int, lease: int) -> None:
        if mapping.state is _State.REMOVING:
            return  # removed while asked: the deletion is due, for every port in ``ports``
        now = trio.current_time()
        changed = mapping.external_port != port
        mapping.state = _State.MAPPED
        mapping.failures = mapping.attempts = mapping.conflicts = 0
        mapping.checked = False
        mapping.external_port = mapping.port = mapping.home_port = port
        mapping.lifetime = lease
        mapping.expires_at = now + lease if lease else math.inf
        mapping.due = now + self._renew_interval(lease)
        if changed:
            _log.info(
                "UPnP gateway %s maps %s port %d to external port %d %s",
                self._gateway,
                mapping.protocol.name,
                mapping.internal_port,
                port,
                f"for {lease} s" if lease else "permanently",
            )
            self._emit(PortMapped(mapping.snapshot()))

    def _mapping_failed(self, mapping: _Mapping, result: int | None) -> None:
        if mapping.state is _State.REMOVING:
            return
        now = trio.current_time()
        mapping.failures += 1
        mapping.attempts = mapping.conflicts = 0
        mapping.checked = False
        retry_at = now + _retry_delay(result, mapping.failures)
        if result is not None:
            _log.info(
                "UPnP gateway %s refused to map %s port %d: %s; retrying in %.0f s",
                self._gateway,
                mapping.protocol.name,
                mapping.internal_port,
                _code_text(result),
                retry_at - now,
            )
        mapping.state = _State.WANTED
        mapping.due = retry_at
        mapping.port = mapping.home_port
        if not (_transient(result) and mapping.expires_at is not None and mapping.expires_at > now):
            self._clear_grant(mapping)
        # Otherwise a renewal failed in a way that may pass: the earlier grant stands until
        # it runs out, as with NAT-PMP (the router keeps a mapping its lease long).
        self._emit(MappingFailed(mapping.snapshot(), result, retry_at))

    def _lapse_grants(self, now: float) -> None:
        for m in self._mappings.values():
            if m.state is _State.WANTED and m.expires_at is not None and m.expires_at <= now:
                _log.info(
                    "UPnP gateway %s: the mapping of %s port %d ran out unrenewed",
                    self._gateway,
                    m.protocol.name,
                    m.internal_port,
                )
                self._clear_grant(m)
                self._emit(MappingFailed(m.snapshot(), None, max(m.due, now)))

    @staticmethod
    def _clear_grant(mapping: _Mapping) -> None:
        mapping.external_port = None
        mapping.lifetime = 0
        mapping.expires_at = None

    def _drop(self, mapping: _Mapping, result: int | None) -> None:
        del self._mappings[mapping.id]
        self._emit(MappingRemoved(mapping.snapshot(), result))

    async def _delete(self, mapping: _Mapping) -> None:
        """Delete every port the router may still hold for ``mapping``, then drop it; the
        result told is the last deletion's (the latest grant goes last)."""
        result: int | None = None
        for port in _live_ports(mapping, trio.current_time()):
            if self._device is None or mapping.id not in self._mappings:
                break  # the device was lost meanwhile (and the mapping dropped with it)
            result = await self._delete_port(mapping, port)
        if mapping.id in self._mappings:
            self._drop(mapping, result)

    async def _delete_port(self, mapping: _Mapping, port: int) -> int | None:
        device = self._device
        assert device is not None
        try:
            await self._soap(
                lambda _: build_delete_port_mapping(
                    device, protocol=mapping.protocol, external_port=port
                ),
                check_soap_success,
            )
            result: int = 0
        except UpnpActionError as error:
            result = error.code  # 714 NoSuchEntryInArray: it was gone already
        except _RequestError as failure:
            # A deletion is advisory: the lease ends the mapping anyway.
            self._device_failed(failure.reason)
            return None
        mapping.ports.pop(port, None)
        return result

    # -- close -----------------------------------------------------------------------------

    async def _close(self) -> None:
        self._closed = True
        self._address_due = math.inf
        try:
            for mapping in list(self._mappings.values()):
                if mapping.id not in self._mappings:
                    continue
                if self._device is None or not _live_ports(mapping, trio.current_time()):
                    self._drop(mapping, None)
                else:
                    await self._delete(mapping)
                self._dispatch()
        finally:
            # Past the bound (or cancelled): what is left is given up, and said so.
            for mapping in list(self._mappings.values()):
                self._drop(mapping, None)
            self._dispatch()


@dataclass(frozen=True, slots=True)
class _Answered:
    """What a search heard from one host: the LOCATION fetched, and whether it came with
    a search target naming the gateway (not upnp:rootdevice)."""

    location: str
    claimed: bool


def _live_ports(mapping: _Mapping, now: float) -> list[int]:
    """The external ports the router may still hold for ``mapping``, the latest last."""
    return [port for port, until in mapping.ports.items() if until > now]


def _entry_lifetime(told: int | None, asked: int) -> int:
    """The lease of a mapping the router holds for us already: what it tells (0:
    permanent), no longer than we asked; what we asked when it tells nothing."""
    if told is None:
        return asked
    if told == 0:
        return 0
    return min(told, asked or UPNP_MAX_LEASE)


def _multicast_options(sock: trio.socket.SocketType, interface: IPv4Address) -> None:
    """A search sent to a multicast group stays on the LAN (UDA 1.1's TTL of 2, where
    libtorrent's multicast socket allows more hops), and leaves by ``interface`` when one is
    named."""
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
    if interface != IPv4Address(0):
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, interface.packed)


def _check_port(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise LocalProtocolError(f"{name} is an int in 1..65535, got {value!r}")
    return value


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
    """Keep ``mappings`` mapped on the LAN's UPnP gateway while the block runs.

    Args:
        mappings: ``(protocol, internal_port)`` pairs to map, each asking for the same
            external port.
        ssdp_address: where searches go: SSDP's multicast group, or (for a test's fake
            gateway) a unicast address.
        bind_host: the local IPv4 address to search and connect from; by default the
            system picks it per route.
        gateway: the device a search prefers: an IPv4 address; ``"route"`` (the default)
            for the default route's gateway (:func:`~bip_handshake.default_gateway`), or,
            when ``ssdp_address`` is a unicast address, that address; None for no
            preference (the first device that serves wins at once).
        lease_duration: seconds of lease each mapping asks for (0..604800); 0 asks a
            permanent mapping (renewed hourly anyway).
        description: the mappings' description in the router's pages (at most 256
            characters, no control characters).
        close_timeout: seconds the deletions may take on exit.
        search_timeout: seconds a search takes answers for.
        http_timeout: seconds one HTTP exchange with the gateway may take.
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
    preferred = _preferred_device(gateway, ssdp_host)
    if isinstance(lease_duration, bool) or not isinstance(lease_duration, int):
        raise LocalProtocolError(f"lease_duration is an int, got {lease_duration!r}")
    if not 0 <= lease_duration <= UPNP_MAX_LEASE:
        raise LocalProtocolError(f"lease_duration is in 0..{UPNP_MAX_LEASE}, got {lease_duration}")
    if (
        not isinstance(description, str)
        or len(description) > _MAX_DESCRIPTION_TEXT
        or not description.isprintable()
    ):
        raise LocalProtocolError(
            f"a description is printable text of at most {_MAX_DESCRIPTION_TEXT} characters"
        )
    close_bound = _check_seconds("close_timeout", close_timeout, positive=False)
    mapper = UpnpPortMapper(
        ssdp_address=(ssdp_host, ssdp_port),
        bind_host=bind,
        gateway=preferred,
        lease_duration=lease_duration,
        description=description,
        search_timeout=_check_seconds("search_timeout", search_timeout, positive=True),
        http_timeout=_check_seconds("http_timeout", http_timeout, positive=True),
        on_event=on_event,
        rng=rng if rng is not None else random.Random(),
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
