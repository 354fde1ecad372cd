"""Keeping our ports mapped on UPnP routers, as a sans-IO core: :class:`UpnpClient`.

:class:`UpnpClient` holds every rule of the conversation with the Internet Gateway Devices
(which devices to use, what to ask them and when, what their answers mean) and the table of
mappings; the messages themselves are :mod:`bip_handshake._upnp`'s. It never reads a clock
nor touches a socket: the caller (the trio shell :func:`~bip_handshake.open_upnp_mapper`, or
a test) passes ``now``, in seconds from any monotonic origin, and does the IO it is told to:

- ``add_mapping(protocol, internal_port, now)`` / ``remove_mapping(mapping_id, now)`` /
  ``close(now)`` say what we want;
- ``next_request(now)`` gives the one thing to do now, an :class:`UpnpRequest`: an M-SEARCH
  round to send (``search_sent`` tells it went), a description to fetch or a SOAP action to
  POST (``request_answered`` takes the HTTP answer, ``request_failed`` the lack of one);
  ``ssdp_received(data, source, now)`` takes the answers to a search;
- ``next_deadline()`` / ``handle_timer(now)`` drive searches, renewals, retries and lapses;
- ``next_event()`` gives the :class:`~bip_handshake.PortMappingEvent` s (a gateway found or
  lost, an address learnt, a port mapped, moved, failed or removed) or None.

How it runs (as libtorrent's upnp.cpp does, where not said otherwise):

- **Every gateway**: as libtorrent keeps a set of root devices and maps each port on each,
  every Internet Gateway Device a search finds is used (a home network may have a router
  and a mesh node, or a second NAT), up to :data:`UPNP_MAX_GATEWAYS` at once, one per
  answering host (its address: a device answering with two LOCATIONs, or with a new port
  after a restart, is one; a LAN host cannot take several places with ever new URLs), one
  place kept for the preferred ``gateway`` while it is not in use; a description that
  serves past them is ignored and counted. Each gateway has its own
  control URL, service, external address, leases, renewals, refusals, back-off and failure
  count, and every mapping is asked of each: :class:`~bip_handshake.UpnpPortMapped` and
  :class:`~bip_handshake.UpnpMappingFailed` (the shared events, with the ``device``) tell
  what each gateway did, :meth:`UpnpClient.device_mappings` shows each gateway's grants.
  :meth:`UpnpClient.mappings`, :meth:`UpnpClient.external_port`,
  :attr:`UpnpClient.external_address` and :attr:`UpnpClient.device` read the gateways in
  rank order: the ``gateway`` preferred first (the default route's), then the others in
  the order found. A mapping removed (or the client closed) is deleted on every gateway,
  and one :class:`~bip_handshake.MappingRemoved` says so when the last is done.
- **Search**: :data:`UPNP_SEARCH_TARGETS` are asked for, :data:`UPNP_SEARCH_SENDS` times
  (after 0, 1 and 3 s), and answers are taken for ``search_timeout`` seconds, whatever was
  found meanwhile: each gateway is used as soon as its description serves. An answer is
  used only if its LOCATION is ``http://`` to the very address the answer came from (else
  any LAN host could make us fetch from, then POST to, any host: it is counted and
  dropped), and the description's control URL must stay on that host too. An answering
  host's first LOCATION is fetched, then, in the order heard and only while none before
  served a gateway, up to three distinct LOCATIONs in all that it gives for the gateway or
  its connection service (not ``upnp:rootdevice``): a media server on the router's address
  may answer first, and so may a forged answer from the router's address claiming the
  gateway at a dead URL (any LAN host can send one), yet the router's own LOCATION is
  fetched. Later answers are duplicates, as are those of a host whose gateway is in use. At
  most :data:`UPNP_MAX_DEVICES` hosts are looked at per search besides the preferred
  ``gateway``'s, which is fetched first however many answered before it. A description
  offering several connection services (a WANPPPConnection beside the WANIPConnection) has
  each asked the external address in turn, and the first that tells one (neither empty nor
  0.0.0.0) is used, else the first (miniupnpc's "connected" check). A search that ends
  with no gateway in use: :class:`UpnpDiscoveryFailed`, and a new search after
  :data:`UPNP_SEARCH_RETRY_MIN` seconds, doubling up to :data:`UPNP_SEARCH_RETRY_MAX`; a
  search whose socket could not be opened (``request_failed`` of its first round) ends
  there.
- **Requests** go one at a time, all gateways together (small routers; one worker in the
  caller): a search round first, then a gateway's retry, check or deletion, then a
  description, then the gateway whose work fell due first. A gateway whose last request
  got no usable answer (a timeout, likely) waits behind the others' work that fell due
  before that failure: a dead gateway costs the others one timeout, not one for each of
  the :data:`UPNP_DEVICE_FAILURES` it takes to be deemed lost. With ``concurrent=True``
  (the shell's way, libtorrent's) they go one at a time per lane instead: the search's
  (rounds, descriptions) and each gateway's are in flight together, so a dead or slow
  gateway costs the others nothing, and none is ever asked two things at once (the same
  order within each lane). On each gateway: deletions
  first, then GetExternalIPAddress, then an AddPortMapping per mapping in the order they
  fell due
  (``NewInternalClient`` is our address on that connection, as the router sees it: the
  ``local`` the caller builds the request with), asking for the internal port as the
  external one unless told. AddPortMapping and DeletePortMapping succeed on any HTTP 200
  without a SOAP fault, whatever the body (as libtorrent and miniupnpc take them);
  GetExternalIPAddress must answer properly.
- **Renewal**: each grant is renewed halfway through its lease, asking the same port again;
  the external address is asked again as often. A permanent lease is renewed every
  :data:`UPNP_PERMANENT_RENEW` seconds all the same: routers reboot and forget.
- **Errors**: 725 OnlyPermanentLeasesSupported: asked again at once with lease 0 (for every
  later request to this gateway). 718 ConflictInMappingEntry (and 501 ActionFailed, which
  some routers answer instead) for the port held or wanted: GetSpecificPortMappingEntry
  first (once per go); when the router forwards that port to our address and internal
  port already (some routers answer 718 to a client adding again the mapping it holds),
  the mapping is deemed renewed, for the lease the router tells (0: permanent). Otherwise
  a 718 says another host holds the port: a standing grant of it is given up at once (and
  the port is never deleted as ours), and the mapping is asked again at once for a random
  port in :data:`UPNP_CONFLICT_PORTS`, up to :data:`UPNP_CONFLICT_ATTEMPTS` times; the
  port granted is the one :class:`~bip_handshake.UpnpPortMapped` tells. 724
  SamePortValuesRequired: asked again with the internal port as the external one. Such a
  retry goes before any other request but deletions, and at most
  :data:`UPNP_MAX_ATTEMPTS` AddPortMapping requests go in one go. Any other refusal (727
  ExternalPortOnlyWildcard, 716, ...) fails the mapping
  (:class:`~bip_handshake.UpnpMappingFailed` with the code) until :data:`UPNP_RETRY_MAX`
  seconds later; no answer, an HTTP error, 501 or 728 NoPortMapsAvailable fail it until
  :data:`UPNP_RETRY_MIN` seconds later, doubling up to :data:`UPNP_RETRY_MAX`. As with
  NAT-PMP, a renewal that fails in one of those ways that may pass leaves the earlier
  grant standing until it runs out.
- **A lost gateway**: after :data:`UPNP_DEVICE_FAILURES` requests in a row got no usable
  answer, the gateway is deemed gone (:class:`UpnpDeviceLost`) and dropped: its grants
  lapse (:class:`~bip_handshake.UpnpMappingFailed`), its address is forgotten, the other
  gateways go on untouched, and a new search starts at once (after the one under way);
  while it is missing, searches go on as when none is found (after
  :data:`UPNP_SEARCH_RETRY_MIN` seconds, doubling up to :data:`UPNP_SEARCH_RETRY_MAX`). A
  gateway found and lost again and again (it answers searches, not requests) is searched
  for after :data:`UPNP_SEARCH_RETRY_MIN` seconds, then doubling, up to
  :data:`UPNP_SEARCH_RETRY_MAX`, until one of its answers is usable again. Losses are
  remembered by host, as places are counted: the back-off holds whatever new URL the host
  gives (the last :data:`UPNP_MAX_GATEWAYS` times two hosts lost are remembered).
- **Close**: on every gateway (in rank order), a DeletePortMapping for every external port
  it may hold for a mapping (each one it granted, up to :data:`UPNP_MAX_PORTS_KEPT` per
  mapping, and one asked for whose answer never came; not those whose lease ran out), one
  at a time. A port whose GetSpecificPortMappingEntry was due after a 718 or 501 is asked
  about again after every other deletion (a check the close cut short is likely to hang
  again): deleted if the router shows it ours, let alone if another host's. A
  gateway that gives no usable answer while closing is asked nothing more (its mappings'
  leases end them). A mapping removed while the client runs gets the same deletions (its
  check first). The caller bounds the time the deletions take: :meth:`UpnpClient.abandon`
  gives up what is left.

A sketch of one go, a gateway found and a port mapped (while the search hears out the
others):

>>> from ._upnp import HttpResponse
>>> client = UpnpClient(gateway=IPv4Address("192.168.1.1"), rng=random.Random(0))
>>> tcp = client.add_mapping(MappingProtocol.TCP, 6881, now=0.0)
>>> search = client.next_request(0.0)
>>> search.kind, len(search.datagrams())
(<UpnpRequestKind.SEARCH: 'search'>, 5)
>>> client.search_sent(search, 5, now=0.0)
>>> client.ssdp_received(
...     b"HTTP/1.1 200 OK\\r\\nST: upnp:rootdevice\\r\\n"
...     b"LOCATION: http://192.168.1.1:5000/rootDesc.xml\\r\\n\\r\\n",
...     IPv4Address("192.168.1.1"),
...     now=0.1,
... )
>>> describe = client.next_request(0.1)
>>> describe.kind, str(describe.url)
(<UpnpRequestKind.DESCRIBE: 'describe'>, 'http://192.168.1.1:5000/rootDesc.xml')
>>> description = (
...     b"<root><device><serviceList><service><serviceType>"
...     b"urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>"
...     b"<controlURL>/ctl</controlURL></service></serviceList></device></root>"
... )
>>> me = IPv4Address("192.168.1.20")
>>> client.request_answered(describe, HttpResponse(200, "OK", (), description), me, now=0.2)
>>> type(client.next_event()).__name__
'UpnpDeviceFound'
>>> address = client.next_request(0.2)  # the address first
>>> address.kind
<UpnpRequestKind.EXTERNAL_ADDRESS: 'external-address'>
>>> client.request_failed(address, "no answer within 5 s", now=5.2)
>>> add = client.next_request(5.2)
>>> add.kind, add.external_port, add.lease
(<UpnpRequestKind.ADD: 'add'>, 6881, 3600)
>>> client.request_answered(add, HttpResponse(200, "OK", (), b""), me, now=5.3)
>>> [type(e).__name__ for e in iter(client.next_event, None)]
['UpnpAddressFailed', 'UpnpPortMapped']
>>> client.handle_timer(5.3)  # the search's time is up: the gateway found stays in use
>>> client.searching, client.mappings()[0].external_port
(False, 6881)
>>> client.next_deadline()  # the address asked again
65.2
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Final, TypeVar

from ._errors import LocalProtocolError
from ._portmap import (
    MappingId,
    MappingProtocol,
    MappingRemoved,
    PortMapping,
    PortMappingEvent,
)
from ._upnp import (
    UPNP_MAX_DESCRIPTION,
    UPNP_MAX_SOAP_RESPONSE,
    UPNP_SEARCH_TARGETS,
    UPNP_SSDP_HOST,
    UPNP_SSDP_PORT,
    HttpResponse,
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
    UpnpMappingFailed,
    UpnpPortMapped,
    UpnpPortMappingEntry,
    _check_port,
    _http_error,
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
    "UPNP_MAX_GATEWAYS",
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
    "UpnpClient",
    "UpnpDeviceMapping",
    "UpnpRequest",
    "UpnpRequestKind",
    "UpnpStatistics",
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
"""Distinct hosts one search looks at, besides the preferred gateway's (which is never
shut out): a LAN full of answers costs a bounded effort."""

UPNP_MAX_GATEWAYS: Final = 8
"""Gateways (Internet Gateway Devices, one per answering host: its address) in use at once,
each mapping every port, one of them the preferred gateway's place (the others take one
fewer while it is not in use); a description that serves past them is ignored (counted in
:attr:`UpnpStatistics.devices_ignored`)."""

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
# LOCATIONs claiming the gateway fetched from one host in one search (each only if those
# before it served none): a forged answer from the router's address cannot shut out its
# own, and a host with ever new URLs costs a few fetches.
_MAX_CLAIMED_LOCATIONS: Final = 3
_MAX_LOSSES_KEPT: Final = 2 * UPNP_MAX_GATEWAYS  # hosts whose losses are remembered

_log = logging.getLogger("bip_handshake.upnp")

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class UpnpStatistics:
    """A snapshot of a :class:`UpnpClient`'s counters (and so of its mapper's).

    Attributes:
        searches: searches started.
        ssdp_sent: M-SEARCH datagrams sent.
        ssdp_received: SSDP answers received.
        ssdp_malformed: answers dropped for not parsing.
        ssdp_untrusted: answers dropped for a LOCATION that is not ``http://`` to the
            address the answer came from.
        ssdp_duplicates: answers dropped for a host already looked at in the search.
        ssdp_ignored: answers dropped past :data:`UPNP_MAX_DEVICES` hosts (never the
            preferred gateway's).
        descriptions_rejected: descriptions that could not be fetched or used.
        requests: SOAP requests sent.
        request_failures: requests without a usable answer (none, an HTTP error, garbage).
        action_errors: requests answered with a UPnP error.
        devices_lost: gateways deemed gone.
        devices_ignored: gateways that served past :data:`UPNP_MAX_GATEWAYS` in use.
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
    devices_ignored: int


class UpnpRequestKind(enum.Enum):
    """What an :class:`UpnpRequest` asks the caller to do."""

    SEARCH = "search"
    """Send one M-SEARCH round (:meth:`UpnpRequest.datagrams`) to ``destination``."""
    DESCRIBE = "describe"
    """GET the device description at ``url``."""
    EXTERNAL_ADDRESS = "external-address"
    """POST GetExternalIPAddress to ``service`` (also a search's "connected" check)."""
    ADD = "add"
    """POST AddPortMapping of ``external_port`` to ``internal_port`` for ``lease`` s."""
    DELETE = "delete"
    """POST DeletePortMapping of ``external_port``."""
    GET_ENTRY = "get-entry"
    """POST GetSpecificPortMappingEntry of ``external_port``: whose is it?"""


_HTTP_NEEDS: Final[dict[UpnpRequestKind, tuple[str, ...]]] = {
    UpnpRequestKind.SEARCH: ("destination",),
    UpnpRequestKind.DESCRIBE: ("url",),
    UpnpRequestKind.EXTERNAL_ADDRESS: ("url", "service"),
    UpnpRequestKind.ADD: (
        "url",
        "service",
        "mapping_id",
        "protocol",
        "external_port",
        "internal_port",
        "lease",
    ),
    UpnpRequestKind.DELETE: ("url", "service", "mapping_id", "protocol", "external_port"),
    UpnpRequestKind.GET_ENTRY: ("url", "service", "mapping_id", "protocol", "external_port"),
}


def _present(value: _T | None, name: str) -> _T:
    if value is None:
        raise LocalProtocolError(f"this UPnP request has no {name}")
    return value


@dataclass(frozen=True, slots=True)
class UpnpRequest:
    """One thing :meth:`UpnpClient.next_request` asks the caller to do now.

    A SEARCH round is sent with :meth:`datagrams` to ``destination`` and reported with
    :meth:`UpnpClient.search_sent`; every other kind is one HTTP exchange with ``url``'s
    host and port on its own connection (``Connection: close``): the request's bytes are
    :meth:`payload` of our address on that connection, the answer is read with
    :class:`~bip_handshake.HttpResponseParser` bounded to :attr:`max_body`, and reported
    with :meth:`UpnpClient.request_answered` (or :meth:`UpnpClient.request_failed` when
    none came). The fields a kind does not use are None.

    The core never times an exchange: the caller bounds each one, connection to last byte
    (:data:`UPNP_HTTP_TIMEOUT`, as the shell does, or a bound of its own), and reports one
    that ran out with :meth:`UpnpClient.request_failed`. Every request handed out must be
    reported exactly once (or abandoned by :meth:`UpnpClient.close` /
    :meth:`UpnpClient.abandon`): one never reported leaves the core waiting for it for
    good, asking nothing more.

    Attributes:
        kind: what to do.
        url: where the HTTP request goes (the description, or the service's control URL).
        service: the connection service a SOAP action is for.
        mapping_id: the mapping an ADD, DELETE or GET_ENTRY is for.
        protocol: its protocol.
        external_port: the external port asked, deleted or looked up.
        internal_port: our port an ADD forwards to.
        lease: the seconds of lease an ADD asks (0: permanent).
        description: an ADD's ``NewPortMappingDescription``.
        destination: where a SEARCH round goes (SSDP's group, or a unicast address).

    Raises:
        LocalProtocolError: a field its kind needs is missing.
    """

    kind: UpnpRequestKind
    url: HttpUrl | None = None
    service: UpnpDevice | None = None
    mapping_id: MappingId | None = None
    protocol: MappingProtocol | None = None
    external_port: int | None = None
    internal_port: int | None = None
    lease: int | None = None
    description: str = ""
    destination: tuple[IPv4Address, int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, UpnpRequestKind):
            raise LocalProtocolError(f"a request kind is an UpnpRequestKind, got {self.kind!r}")
        for name in _HTTP_NEEDS[self.kind]:
            _present(getattr(self, name), name)

    @property
    def max_body(self) -> int:
        """The most body bytes to read of the answer (a description may be larger)."""
        if self.kind is UpnpRequestKind.DESCRIBE:
            return UPNP_MAX_DESCRIPTION
        return UPNP_MAX_SOAP_RESPONSE

    def datagrams(self) -> tuple[bytes, ...]:
        """A SEARCH round's M-SEARCH datagrams, one per search target.

        Raises:
            LocalProtocolError: not a SEARCH.
        """
        if self.kind is not UpnpRequestKind.SEARCH:
            raise LocalProtocolError(f"a {self.kind.value} request sends no datagrams")
        host, port = _present(self.destination, "destination")
        return tuple(build_msearch(t, host=str(host), port=port) for t in UPNP_SEARCH_TARGETS)

    def payload(self, local: IPv4Address) -> bytes:
        """The HTTP request's bytes, ``local`` being our address on its connection (what
        an AddPortMapping's ``NewInternalClient`` carries).

        Raises:
            LocalProtocolError: a SEARCH, or ``local`` not an IPv4Address.
        """
        if not isinstance(local, IPv4Address):
            raise LocalProtocolError(f"a local address is an IPv4Address, got {local!r}")
        kind = self.kind
        if kind is UpnpRequestKind.SEARCH:
            raise LocalProtocolError("a search request is datagrams, not an HTTP request")
        if kind is UpnpRequestKind.DESCRIBE:
            return build_http_get(_present(self.url, "url"))
        service = _present(self.service, "service")
        if kind is UpnpRequestKind.EXTERNAL_ADDRESS:
            return build_get_external_address(service)
        protocol = _present(self.protocol, "protocol")
        port = _present(self.external_port, "external_port")
        if kind is UpnpRequestKind.ADD:
            return build_add_port_mapping(
                service,
                protocol=protocol,
                external_port=port,
                internal_port=_present(self.internal_port, "internal_port"),
                internal_client=local,
                description=self.description,
                lease_duration=_present(self.lease, "lease"),
            )
        if kind is UpnpRequestKind.DELETE:
            return build_delete_port_mapping(service, protocol=protocol, external_port=port)
        return build_get_specific_port_mapping_entry(service, protocol=protocol, external_port=port)


class _State(enum.Enum):
    WANTED = "wanted"  # to be requested at ``due`` (new, failed and retried, or device new)
    MAPPED = "mapped"  # granted; renewed at ``due``
    REMOVING = "removing"  # to be deleted at ``due``


class _Want:
    """A mapping the caller wants kept, on every gateway in use."""

    __slots__ = ("gone", "id", "internal_port", "protocol", "removing", "wanted")

    def __init__(
        self, mapping_id: MappingId, protocol: MappingProtocol, internal: int, external: int
    ) -> None:
        self.id = mapping_id
        self.protocol = protocol
        self.internal_port = internal
        self.wanted = external  # the external port first asked of each gateway
        self.removing = False
        # Each gateway done with it once it is being removed: (rank, its last snapshot,
        # its deletion's result); at most one a gateway kept (UPNP_MAX_GATEWAYS) or lost.
        self.gone: list[tuple[tuple[bool, int], PortMapping, int | None]] = []

    def bare(self) -> PortMapping:
        """The mapping granted by no gateway."""
        return PortMapping(self.id, self.protocol, self.internal_port, None, 0, None)


class _Grant:
    """One mapping on one gateway: what was asked of it, and what it granted."""

    __slots__ = (
        "attempts",
        "checked",
        "conflicts",
        "due",
        "expires_at",
        "external_port",
        "failures",
        "home_port",
        "lifetime",
        "port",
        "ports",
        "removal_result",
        "state",
        "want",
    )

    def __init__(self, want: _Want, due: float) -> None:
        self.want = want
        self.home_port = want.wanted  # the port wanted, then the port last granted
        self.port = want.wanted  # the port the next request asks for
        self.external_port: int | None = None
        self.lifetime = 0
        self.expires_at: float | None = None
        self.state = _State.WANTED
        self.due = due
        self.failures = 0  # failed goes in a row: the back-off
        self.attempts = 0  # AddPortMapping requests in the current go
        self.conflicts = 0  # random ports tried in the current go
        self.checked = False  # GetSpecificPortMappingEntry asked in the current go
        # External port -> until when the router may hold it for us: every grant, and a
        # request on its way or never answered (the router may have made it). Removing
        # the mapping deletes those still live; at most UPNP_MAX_PORTS_KEPT.
        self.ports: dict[int, float] = {}
        # Being removed: its last deletion's result (the latest grant's port goes last).
        self.removal_result: int | None = None

    @property
    def id(self) -> MappingId:
        return self.want.id

    @property
    def protocol(self) -> MappingProtocol:
        return self.want.protocol

    @property
    def internal_port(self) -> int:
        return self.want.internal_port

    def snapshot(self) -> PortMapping:
        return PortMapping(
            self.want.id,
            self.want.protocol,
            self.want.internal_port,
            self.external_port,
            self.lifetime,
            self.expires_at,
        )


class _Device:
    """A gateway in use: its service, its address, and each mapping's grant on it."""

    __slots__ = (
        "address",
        "address_due",
        "address_failures",
        "again",
        "control",
        "deletion",
        "failed_at",
        "failures",
        "grants",
        "lost",
        "permanent_only",
        "preferred",
        "refusal",
        "seq",
        "service",
    )

    def __init__(self, service: UpnpDevice, seq: int, *, preferred: bool, now: float) -> None:
        self.service = service
        self.control = parse_http_url(service.control_url)
        self.seq = seq  # the order it was found in
        self.preferred = preferred  # the gateway: read first
        self.permanent_only = False  # it answered 725
        self.address: IPv4Address | None = None
        self.address_due = now
        self.address_failures = 0
        self.failures = 0  # requests in a row without a usable answer
        self.failed_at = -math.inf  # when the last of those failures came
        self.lost = False
        self.grants: dict[MappingId, _Grant] = {}
        self.again: _Grant | None = None  # asked again at once (725, 718, 724)
        self.refusal: _Refusal | None = None  # its GetSpecificPortMappingEntry is due
        self.deletion: _Deletion | None = None

    @property
    def rank(self) -> tuple[bool, int]:
        """Its place among the gateways: the preferred first, then in the order found."""
        return (not self.preferred, self.seq)

    @property
    def host(self) -> str:
        """Its address, for the log."""
        return str(self.control.host)


@dataclass(frozen=True, slots=True)
class _Answered:
    """What a search heard from one host: the LOCATIONs queued for it, and how many of
    them came with a search target naming the gateway (not upnp:rootdevice)."""

    locations: tuple[str, ...]
    claims: int


class _Search:
    """A search under way."""

    __slots__ = ("end", "hosts", "next_send", "queue", "sends", "start")

    def __init__(self, start: float, timeout: float) -> None:
        self.start = start
        self.end = start + timeout
        self.sends = 0  # M-SEARCH rounds sent
        self.next_send = start
        self.hosts: dict[IPv4Address, _Answered] = {}
        self.queue: deque[tuple[str, HttpUrl]] = deque()  # LOCATIONs to fetch


class _Describe:
    """A description being looked at: fetched, then its services asked in turn."""

    __slots__ = ("location", "probed", "services")

    def __init__(self, location: str) -> None:
        self.location = location
        self.services: tuple[UpnpDevice, ...] = ()
        self.probed = 0  # services asked the external address so far


@dataclass(frozen=True, slots=True)
class _Refusal:
    """An AddPortMapping refused with 718 or 501 whose GetSpecificPortMappingEntry is due:
    what the rest of the refusal needs."""

    mapping_id: MappingId
    port: int
    held_until: float | None  # the router's hold on ``port`` known before the request
    code: int
    lease: int


class _Deletion:
    """A removed mapping's ports being deleted on one gateway, one request each."""

    __slots__ = ("grant", "ports")

    def __init__(self, grant: _Grant, ports: list[int]) -> None:
        self.grant = grant
        self.ports = deque(ports)


@dataclass(frozen=True, slots=True)
class _Flight:
    """A request handed out and not yet reported: its lane (the gateway it is for, None
    for the search's), and for an ADD the router's hold on its port known before it left
    (a refusal restores it)."""

    request: UpnpRequest
    device: _Device | None
    held_until: float | None


@dataclass(frozen=True, slots=True)
class _Refused:
    code: int


@dataclass(frozen=True, slots=True)
class _Failed:
    reason: str


@dataclass(frozen=True, slots=True)
class UpnpDeviceMapping:
    """One mapping as one gateway holds it (:meth:`UpnpClient.device_mappings`).

    Attributes:
        device: the gateway.
        external_address: its external IPv4 address, None until it said (or when it has
            none).
        mapping: the mapping on it (``external_port`` None while it grants none).
    """

    device: UpnpDevice
    external_address: IPv4Address | None
    mapping: PortMapping


def _transient(result: int | None) -> bool:
    # No answer may pass; so may a router's "action failed" and "no port maps available".
    return result in (
        None,
        UpnpErrorCode.ACTION_FAILED,
        UpnpErrorCode.NO_PORT_MAPS_AVAILABLE,
    )


def _retry_delay(result: int | None, failures: int) -> float:
    if _transient(result):
        return _backoff(UPNP_RETRY_MIN, failures - 1, UPNP_RETRY_MAX)
    return UPNP_RETRY_MAX


def _backoff(start: float, count: int, cap: float) -> float:
    """``start`` doubled ``count`` times, at most ``cap``."""
    return min(math.ldexp(start, min(count, 32)), cap)


def _code_text(code: int) -> str:
    if isinstance(code, UpnpErrorCode):
        return f"{int(code)} {code.name}"
    return f"UPnP error {code}"


def _live_ports(grant: _Grant, now: float) -> list[int]:
    """The external ports the router may still hold for ``grant``, the latest last."""
    return [port for port, until in grant.ports.items() if until > now]


def _entry_lifetime(told: int | None, asked: int) -> int:
    """The lease of a mapping the router holds for us already: what it tells (0:
    permanent), no longer than we asked; what we asked when it tells nothing."""
    if told is None:
        return asked
    if told == 0:
        return 0
    return min(told, asked or UPNP_MAX_LEASE)


def _renew_interval(lease: int) -> float:
    return max(lease / 2, UPNP_MIN_RENEW_DELAY) if lease else UPNP_PERMANENT_RENEW


def _check_time(now: object) -> float:
    if isinstance(now, bool) or not isinstance(now, int | float) or math.isnan(now):
        raise LocalProtocolError(f"now is a number of seconds, got {now!r}")
    return float(now)


def _removal_result(results: list[int | None]) -> int | None:
    """A removed mapping's result from each gateway's (in rank order): 0 when every one
    confirmed its deletion, else the first error code one answered, else None."""
    if results and all(r == 0 for r in results):
        return 0
    return next((r for r in results if r), None)


class UpnpClient:
    """A UPnP IGD port mapping client: every gateway its searches find (up to
    :data:`UPNP_MAX_GATEWAYS`), each mapping kept on each; see the module docstring for the
    rules.

    What the caller owes it:

    - **One request at a time, each reported**: :meth:`next_request` hands out one
      :class:`UpnpRequest` and nothing more until :meth:`search_sent`,
      :meth:`request_answered` or :meth:`request_failed` reports it (one at a time for
      all the gateways together: a small router is never asked two things at once, and
      the caller needs one worker). With ``concurrent=True`` it is one at a time **per
      lane** instead, as libtorrent keeps one request in flight per device: the search
      (its rounds, descriptions and "connected" checks) is one lane, each gateway in use
      another (at most :data:`UPNP_MAX_GATEWAYS`); :meth:`next_request` is called until
      it gives None, and each request handed out is performed beside the others (a
      gateway's control URL still never gets two at once, and a slow or dead gateway
      delays no other). The core keeps no time of its own for an exchange: the caller
      bounds each (:data:`UPNP_HTTP_TIMEOUT`, or its own bound) and reports a timeout
      with :meth:`request_failed`; a request never reported leaves the core (that lane,
      when concurrent) waiting for good.
    - **Abandoned exchanges cancelled first** (concurrent): :meth:`close` abandons every
      request in flight and at once hands out the deletions, to the same gateways (an
      AddPortMapping cut short is followed by the DeletePortMapping of its port). The
      caller cancels (or waits out) the abandoned exchanges before it performs anything
      :meth:`next_request` gives after the close: else a gateway gets two requests at
      once, and the abandoned AddPortMapping, landing after the deletion, leaves its port
      mapped. (The shell does: the block's tasks, those exchanges among them, end before
      its close starts.) Their late reports are still taken, and ignored.
    - **Events drained**: events pile up in the core until :meth:`next_event` takes them;
      there is no bound of their own (none is dropped). Each comes of a call of the
      caller's (a report, a timer, an add, a removal, a close), at most a few per mapping
      held on each gateway (at most :data:`UPNP_MAX_MAPPINGS` on
      :data:`UPNP_MAX_GATEWAYS`), never of what other hosts send unasked; a caller that
      drains them after each call (the shell does) holds a handful.
    - **Time**: :meth:`next_deadline` tells when to call :meth:`handle_timer` and
      :meth:`next_request` again: a time (one already past: at once), ``-math.inf`` when
      work is due at once whatever the clock (a description to fetch, a conflict check, a
      retry or a deletion waiting its turn: the core reads no clock, so it cannot say
      "now"), or None when nothing happens until the caller acts.

    Args:
        ssdp_address: where searches go: SSDP's multicast group, or (for a test's fake
            gateway) a unicast address.
        gateway: the device read first (the default route's gateway, usually):
            :attr:`device`, :attr:`external_address`, :meth:`mappings` and
            :meth:`external_port` show its grants before another gateway's; None for no
            preference (the gateways in the order found).
        lease_duration: seconds of lease each mapping asks for (0..604800); 0 asks a
            permanent mapping (renewed hourly anyway).
        description: the mappings' description in the router's pages (at most 256
            characters, no control characters).
        search_timeout: seconds a search takes answers for.
        rng: draws the random external ports tried after a conflict.
        concurrent: one request in flight per lane (the search, each gateway) rather
            than one in all; see above.

    Raises:
        LocalProtocolError: a bad argument.
    """

    def __init__(
        self,
        *,
        ssdp_address: tuple[IPv4Address, int] = (IPv4Address(UPNP_SSDP_HOST), UPNP_SSDP_PORT),
        gateway: IPv4Address | None = None,
        lease_duration: int = UPNP_LEASE_DURATION,
        description: str = "bip",
        search_timeout: float = UPNP_SEARCH_TIMEOUT,
        rng: random.Random | None = None,
        concurrent: bool = False,
    ) -> None:
        if not isinstance(concurrent, bool):
            raise LocalProtocolError(f"concurrent is a bool, got {concurrent!r}")
        if (
            not isinstance(ssdp_address, tuple)
            or len(ssdp_address) != 2
            or not isinstance(ssdp_address[0], IPv4Address)
        ):
            raise LocalProtocolError(
                f"an SSDP address is an (IPv4Address, port) pair, got {ssdp_address!r}"
            )
        _check_port("an SSDP port", ssdp_address[1])
        if gateway is not None and not isinstance(gateway, IPv4Address):
            raise LocalProtocolError(f"a gateway is an IPv4Address or None, got {gateway!r}")
        if isinstance(lease_duration, bool) or not isinstance(lease_duration, int):
            raise LocalProtocolError(f"lease_duration is an int, got {lease_duration!r}")
        if not 0 <= lease_duration <= UPNP_MAX_LEASE:
            raise LocalProtocolError(
                f"lease_duration is in 0..{UPNP_MAX_LEASE}, got {lease_duration}"
            )
        if (
            not isinstance(description, str)
            or len(description) > _MAX_DESCRIPTION_TEXT
            or not description.isprintable()
        ):
            raise LocalProtocolError(
                f"a description is printable text of at most {_MAX_DESCRIPTION_TEXT} characters"
            )
        if (
            isinstance(search_timeout, bool)
            or not isinstance(search_timeout, int | float)
            or not 0 < search_timeout < math.inf
        ):
            raise LocalProtocolError(
                f"search_timeout is a finite number of seconds above 0, got {search_timeout!r}"
            )
        self._ssdp_address = ssdp_address
        self._preferred = gateway
        self._lease = lease_duration
        self._description = description
        self._search_timeout = float(search_timeout)
        self._rng = rng if rng is not None else random.Random()
        self._wants: dict[MappingId, _Want] = {}
        self._next_id = 1
        self._events: deque[PortMappingEvent] = deque()
        self._concurrent = concurrent
        # The requests in flight, by lane: a gateway's, or None for the search's. At most
        # one (not concurrent), else one per lane: at most 1 + UPNP_MAX_GATEWAYS.
        self._flights: dict[_Device | None, _Flight] = {}
        # Handed out, then abandoned by close() or abandon() before its report: that late
        # report is ignored (once). Those in flight at each at most: nothing goes out after
        # abandon().
        self._abandoned: list[UpnpRequest] = []
        self._held_until: float | None = None  # _add_request's, for the flight it makes
        self._search: _Search | None = None
        self._search_due = -math.inf
        self._search_failures = 0
        self._describing: _Describe | None = None
        self._devices: list[_Device] = []  # in the order found
        self._next_seq = 0
        # Host -> times its gateway was lost with no usable answer since: a gateway found
        # and lost again and again is searched for ever more slowly. By host, not URL: a
        # device with a new port each time (or a LAN host making URLs up) keeps its back-off.
        self._losses: dict[IPv4Address, int] = {}
        self._closed = False
        self._searches = 0
        self._ssdp_sent = 0
        self._ssdp_received = 0
        self._ssdp_malformed = 0
        self._ssdp_untrusted = 0
        self._ssdp_duplicates = 0
        self._ssdp_ignored = 0
        self._descriptions_rejected = 0
        self._devices_ignored = 0
        self._requests = 0
        self._request_failures = 0
        self._action_errors = 0
        self._devices_lost = 0

    # -- what the caller reads -------------------------------------------------------------

    def _ranked(self) -> list[_Device]:
        """The gateways in use, the one read first first."""
        return sorted(self._devices, key=lambda d: d.rank)

    @property
    def device(self) -> UpnpDevice | None:
        """The gateway read first (the preferred one when in use, else the first found),
        None while none is in use (searching, or none found)."""
        ranked = self._ranked()
        return ranked[0].service if ranked else None

    @property
    def devices(self) -> tuple[UpnpDevice, ...]:
        """Every gateway in use, in the order found."""
        return tuple(d.service for d in self._devices)

    @property
    def external_address(self) -> IPv4Address | None:
        """An external IPv4 address a gateway told (the one read first's, when it told
        one), None until one did."""
        return next((d.address for d in self._ranked() if d.address is not None), None)

    @property
    def searching(self) -> bool:
        """Whether a search is under way (its socket is wanted until it ends)."""
        return self._search is not None

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`close` was called and every deletion is done (or given up)."""
        return self._closed and not self._wants and not self._flights

    def _view(self, want: _Want) -> PortMapping:
        """``want`` as the first gateway (in rank order) that grants it shows it."""
        for device in self._ranked():
            grant = device.grants.get(want.id)
            if grant is not None and grant.external_port is not None:
                return grant.snapshot()
        return want.bare()

    def mappings(self) -> tuple[PortMapping, ...]:
        """Snapshots of the mappings kept, in the order they were added: each as the
        gateway read first that grants it shows it (``external_port`` None while none
        does). :meth:`device_mappings` shows each gateway's."""
        return tuple(self._view(want) for want in self._wants.values())

    def device_mappings(self) -> tuple[UpnpDeviceMapping, ...]:
        """Each mapping on each gateway in use: the gateways in the order found, their
        mappings in the order added (``external_port`` None while not granted)."""
        return tuple(
            UpnpDeviceMapping(device.service, device.address, grant.snapshot())
            for device in self._devices
            for grant in device.grants.values()
        )

    def external_port(self, protocol: MappingProtocol, internal_port: int) -> int | None:
        """The external port a gateway forwards to ``internal_port`` (the one read first
        that grants it), None while none.

        Raises:
            LocalProtocolError: ``protocol`` not a :class:`MappingProtocol` (the shell
                takes ``"tcp"`` and ``"udp"`` too), or ``internal_port`` not in 1..65535.
        """
        # Checked as add_mapping checks them: a name such as "tcp" would match nothing and
        # quietly read as "not mapped".
        if not isinstance(protocol, MappingProtocol):
            raise LocalProtocolError(f"a protocol is a MappingProtocol, got {protocol!r}")
        _check_port("an internal port", internal_port)
        for want in self._wants.values():
            if want.protocol is protocol and want.internal_port == internal_port:
                return self._view(want).external_port
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
            devices_ignored=self._devices_ignored,
        )

    def next_event(self) -> PortMappingEvent | None:
        """The oldest event not yet taken, or None. Events wait here until taken (no bound:
        drain them after each call, see :class:`UpnpClient`)."""
        return self._events.popleft() if self._events else None

    # -- what the caller wants -------------------------------------------------------------

    def add_mapping(
        self,
        protocol: MappingProtocol,
        internal_port: int,
        now: float,
        *,
        external_port: int | None = None,
    ) -> MappingId:
        """Map one more port on every gateway; its requests go as soon as each gateway is
        known and free.

        Args:
            protocol: TCP or UDP.
            internal_port: our listening port (1..65535).
            now: the current time.
            external_port: the external port to ask for; by default the internal port.

        Raises:
            LocalProtocolError: a bad argument, the client closed, :data:`UPNP_MAX_MAPPINGS`
                mappings held, or this protocol and port mapped already.
        """
        if not isinstance(protocol, MappingProtocol):
            raise LocalProtocolError(f"a protocol is a MappingProtocol, got {protocol!r}")
        _check_port("an internal port", internal_port)
        wanted = internal_port if external_port is None else external_port
        _check_port("an external port", wanted)
        now = _check_time(now)
        if self._closed:
            raise LocalProtocolError("the UPnP mapper is closed")
        if len(self._wants) >= UPNP_MAX_MAPPINGS:
            raise LocalProtocolError(f"a UPnP mapper holds at most {UPNP_MAX_MAPPINGS} mappings")
        for w in self._wants.values():
            if w.protocol is protocol and w.internal_port == internal_port:
                raise LocalProtocolError(f"{protocol.name} port {internal_port} is mapped already")
        mapping_id = MappingId(self._next_id)
        self._next_id += 1
        want = self._wants[mapping_id] = _Want(mapping_id, protocol, internal_port, wanted)
        for device in self._devices:
            device.grants[mapping_id] = _Grant(want, now)
        return mapping_id

    def remove_mapping(self, mapping_id: MappingId, now: float) -> None:
        """Stop keeping a mapping, deleting it on each gateway that may hold it.

        :class:`MappingRemoved` follows (one, whatever the gateways), at once or when the
        deletions are done. Removing a mapping already being removed does nothing.

        Raises:
            LocalProtocolError: no such mapping.
        """
        want = self._wants.get(mapping_id)
        if want is None:
            raise LocalProtocolError(f"no UPnP mapping {mapping_id!r}")
        now = _check_time(now)
        if want.removing:
            return
        self._start_removal(want, now)

    def _start_removal(self, want: _Want, now: float) -> None:
        """Delete ``want`` on each gateway that may hold it; drop it where none may."""
        want.removing = True
        for device in list(self._devices):
            grant = device.grants.get(want.id)
            if grant is None:  # pragma: no cover - every gateway holds a grant of each
                continue
            if _live_ports(grant, now):
                # A request for it may be under way: the deletion waits its turn behind it.
                grant.state = _State.REMOVING
                grant.due = now
            else:
                self._drop_grant(device, grant, None)
        self._settle_want(want)

    def close(self, now: float) -> tuple[tuple[MappingProtocol, int], ...]:
        """Remove every mapping and ask nothing more; the deletions to make.

        The requests in flight are abandoned (an AddPortMapping's port is deleted all the
        same: the router may have made it; a later report of it is ignored). Mappings no gateway
        can hold are dropped at once; the others are deleted on each gateway one request at
        a time, as :meth:`next_request` gives them, until :attr:`is_closed`. A
        GetSpecificPortMappingEntry due after a 718 or 501 (asked, or to be asked) is asked
        again once those deletions are made (the close likely cut it short because the
        router was slow to answer it: it must not hold back deletions certainly owed): its
        port is deleted too if the router shows it ours (some routers answer 718
        to a renewal of a mapping we hold, which a permanent lease would keep forwarded to
        us for good), and let alone if it is another host's. A gateway that gives no usable
        answer meanwhile is asked nothing more. Closing twice does nothing.

        Returns:
            ``(protocol, external_port)`` of each deletion, gateway after gateway (in rank
            order: the preferred gateway first, then in the order found), in the order they
            go (a port held on two gateways is listed twice); not the port whose check is
            due, which goes after the others only if the router shows it ours.
        """
        now = _check_time(now)
        if self._closed:
            return ()
        self._closed = True
        self._search = None
        self._describing = None
        self._abandon_request()
        for device in self._devices:
            device.address_due = math.inf
            device.again = None
            device.deletion = None  # its mapping's live ports are asked again from the first
        # A refusal whose check is due is kept: _closing_request asks the check after every
        # deletion certainly owed, and _entry_answered then settles the port (ours: deleted;
        # another host's: let alone). Giving it up here would leave a mapping of ours on
        # the router, for good under a permanent lease.
        for want in list(self._wants.values()):
            if not want.removing:
                self._start_removal(want, now)
        going: list[tuple[MappingProtocol, int]] = []
        for device in self._ranked():
            refusal = device.refusal
            if refusal is not None and refusal.mapping_id not in device.grants:
                refusal = device.refusal = None  # its mapping could hold nothing: no check
            grants = sorted(device.grants.values(), key=lambda g: g.due)  # stable: table order
            going += [
                (g.protocol, port)
                for g in grants
                for port in _live_ports(g, now)
                if refusal is None or (g.id, port) != (refusal.mapping_id, refusal.port)
            ]
        return tuple(going)

    def abandon(self) -> None:
        """Give up the deletions still owed (the close's time ran out): every mapping left
        is dropped (:class:`MappingRemoved` with ``result`` None), a request in flight
        forgotten (a later report of it is ignored). Closes the client if it was not."""
        self._closed = True
        self._abandon_request()
        self._search = None
        self._describing = None
        for want in self._wants.values():
            want.removing = True
        for device in self._devices:
            device.address_due = math.inf
            device.again = None
            device.refusal = None
            device.deletion = None
            for grant in list(device.grants.values()):
                self._drop_grant(device, grant, None)
        for want in list(self._wants.values()):
            self._settle_want(want)

    def _abandon_request(self) -> None:
        """Forget the requests in flight; their reports may still come (the caller's
        exchanges raced the close), and are then ignored."""
        self._abandoned += [flight.request for flight in self._flights.values()]
        self._flights.clear()

    # -- time ------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` or :meth:`next_request` next has work (a time already
        past: at once), ``-math.inf`` when work is due at once whatever the time (a
        description to fetch, a conflict check, a retry or a deletion waiting its turn),
        or None when nothing will happen unless the caller acts.

        While a request is in flight only a grant's lapse is timed: nothing else goes
        before its answer (when concurrent: nothing else of its lane).
        """
        times = [
            g.expires_at
            for d in self._devices
            for g in d.grants.values()
            if g.state is _State.WANTED and g.expires_at is not None
        ]
        if self._flights and not self._concurrent:
            return min(times, default=None)
        search = self._search
        if None in self._flights:
            pass  # the search's lane is busy: its next step waits for that report
        elif search is not None:
            if self._describing is not None or search.queue:
                return -math.inf
            if search.sends < UPNP_SEARCH_SENDS and search.next_send < search.end:
                times.append(search.next_send)
            else:
                times.append(search.end)
        elif not self._closed:
            times.append(self._search_due)
        for device in self._devices:
            if device in self._flights:
                continue  # busy: its next step waits for that report
            if (
                device.refusal is not None
                or device.deletion is not None
                or device.again is not None
            ):
                return -math.inf
            times.append(device.address_due)
            times += [g.due for g in device.grants.values()]
        deadline = min(times, default=math.inf)
        return None if deadline == math.inf else deadline

    def handle_timer(self, now: float) -> None:
        """Let time pass: a search whose time is up ends (:class:`UpnpDiscoveryFailed` when
        no gateway is in use), a grant whose renewal failed runs out."""
        now = _check_time(now)
        for device in self._devices:
            for g in device.grants.values():
                if g.state is _State.WANTED and g.expires_at is not None and g.expires_at <= now:
                    _log.info(
                        "UPnP gateway %s: the mapping of %s port %d ran out unrenewed",
                        device.host,
                        g.protocol.name,
                        g.internal_port,
                    )
                    self._clear_grant(g)
                    self._events.append(
                        UpnpMappingFailed(g.snapshot(), None, max(g.due, now), device.service)
                    )
        search = self._search
        if (
            search is not None
            and None not in self._flights
            and self._describing is None
            and not search.queue
            and now >= search.end
        ):
            self._search = None
            self._end_search(now)

    # -- requests --------------------------------------------------------------------------

    def next_request(self, now: float) -> UpnpRequest | None:
        """The one thing to do now, or None (nothing due, or a request in flight; when
        concurrent: nothing due on a lane with none in flight, call again until None).

        The request stays in flight until :meth:`search_sent`, :meth:`request_answered`
        or :meth:`request_failed` reports it.
        """
        now = _check_time(now)
        if self._flights and not self._concurrent:
            return None
        self._held_until = None
        request, device = self._choose(now)
        if request is None:
            return None
        if request.kind not in (UpnpRequestKind.SEARCH, UpnpRequestKind.DESCRIBE):
            self._requests += 1
        self._flights[device] = _Flight(request, device, self._held_until)
        return request

    def _busy(self, device: _Device | None) -> bool:
        """Whether ``device``'s lane (None: the search's) has a request in flight."""
        return device in self._flights

    def _choose(self, now: float) -> tuple[UpnpRequest | None, _Device | None]:
        """The request due now and the gateway it is for (None: the search's). A search
        round first (datagrams: quick), then a gateway's retry, check or deletion (part of
        a go under way), then a description or "connected" check, then the gateway whose
        work fell due first. A gateway whose last request got no usable answer waits its
        :meth:`_turn`, even for a retry or deletion. When concurrent, a lane with a
        request in flight is passed over (the others' go meanwhile)."""
        search = self._search
        searcher_free = not self._busy(None)
        if search is None and not self._closed and self._search_due <= now:
            self._searches += 1
            self._search_due = math.inf  # a loss or a failed search sets the next
            search = self._search = _Search(now, self._search_timeout)
        if (
            search is not None
            and searcher_free
            and search.sends < UPNP_SEARCH_SENDS
            and search.next_send <= now < search.end
        ):
            return UpnpRequest(UpnpRequestKind.SEARCH, destination=self._ssdp_address), None
        ranked = [device for device in self._ranked() if not self._busy(device)]
        if self._closed:
            return self._closing_request(ranked, now)
        for device in ranked:
            request = None if device.failures else self._urgent_request(device, now)
            if request is not None:
                return request, device
        if search is not None and searcher_free:
            request = self._describe_request(search)
            if request is not None:
                return request, None
        # The first with work due now, in turn (sorted keeps rank order among equals).
        for device in sorted(ranked, key=self._turn):
            request = self._urgent_request(device, now) if device.failures else None
            if request is None:
                request = self._due_request(device, now)
            if request is not None:
                return request, device
        return None, None

    def _turn(self, device: _Device) -> float:
        """When ``device``'s work fell due, for the order gateways are served in.

        A gateway whose last request got no usable answer (a timeout, likely: the caller
        waited its whole bound) comes no earlier than that failure, even for a retry or
        deletion under way: the others' work that fell due meanwhile goes first. Else a
        dead gateway would hold them back one timeout per request until deemed lost
        (:data:`UPNP_DEVICE_FAILURES` of them); now it costs them one. It is never
        starved: work that falls due after its failure goes after it."""
        if not device.failures:
            return self._due(device)
        if device.refusal is not None or device.deletion is not None or device.again is not None:
            due = -math.inf  # a go under way: due at once
        else:
            due = min([device.address_due] + [g.due for g in device.grants.values()])
        return max(due, device.failed_at)

    def search_sent(self, request: UpnpRequest, sent: int, now: float) -> None:
        """A SEARCH round went out: ``sent`` of its datagrams (the others were lost like a
        dropped datagram).

        Raises:
            LocalProtocolError: ``request`` is not the SEARCH in flight, or a bad count.
                (A round abandoned by :meth:`close` or :meth:`abandon` may still be
                reported, once: it is ignored.)
        """
        now = _check_time(now)
        if self._settle(request) is None:
            return
        if request.kind is not UpnpRequestKind.SEARCH:
            raise LocalProtocolError(f"a {request.kind.value} request is answered, not sent")
        if isinstance(sent, bool) or not isinstance(sent, int) or not 0 <= sent <= 64:
            raise LocalProtocolError(f"datagrams sent is a small count, got {sent!r}")
        del self._flights[None]
        self._ssdp_sent += sent
        search = self._search
        if search is None:  # pragma: no cover - a SEARCH is in flight only in a search
            return
        search.sends += 1
        search.next_send = search.start + UPNP_SEARCH_INTERVAL * (2**search.sends - 1)

    def ssdp_received(self, data: bytes, source: IPv4Address, now: float) -> None:
        """Take an answer to a search that came from ``source``; never raises for its
        content. Outside a search it is dropped uncounted."""
        now = _check_time(now)
        if not isinstance(source, IPv4Address):
            raise LocalProtocolError(f"an SSDP source is an IPv4Address, got {source!r}")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise LocalProtocolError(f"an SSDP answer is bytes, got {type(data).__name__}")
        search = self._search
        if search is None:
            return
        self._ssdp_received += 1
        try:
            answer = parse_ssdp_response(bytes(data))
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
        if location.host != source:
            # Else any LAN host could send us to fetch from, then POST to, another host.
            self._ssdp_untrusted += 1
            _log.debug(
                "UPnP: SSDP answer from %s ignored: its LOCATION %s is elsewhere",
                source,
                answer.location,
            )
            return
        # A few descriptions per host: a host answering with ever new LOCATIONs costs its
        # first and _MAX_CLAIMED_LOCATIONS claiming the gateway at most. A router's address
        # may also serve a media server, which answers only upnp:rootdevice; and any LAN
        # host can forge an answer from the router's address claiming the gateway at a
        # dead URL: the router's own LOCATION, when it comes, is fetched still (if none
        # before it served: _use drops the rest). A host whose gateway is in use is not
        # fetched again, whatever LOCATION it gives: a host is one gateway place (else one
        # LAN host could fill them all, a new URL at each search).
        claims = answer.search_target != _ROOT_DEVICE
        kept = self._in_use(source)
        known = search.hosts.get(source)
        if known is not None:
            if (
                claims
                and not kept
                and known.claims < _MAX_CLAIMED_LOCATIONS
                and answer.location not in known.locations
            ):
                search.hosts[source] = _Answered(
                    (*known.locations, answer.location), known.claims + 1
                )
                self._queue(search, answer.location, location)
            else:
                self._ssdp_duplicates += 1
            return
        if kept:
            search.hosts[source] = _Answered((answer.location,), _MAX_CLAIMED_LOCATIONS)
            self._ssdp_duplicates += 1
            return
        if len(search.hosts) >= UPNP_MAX_DEVICES and source != self._preferred:
            # Bounded, but not for the preferred gateway: every UPnP device of a LAN (a TV,
            # a NAS) answers our upnp:rootdevice search, and enough of them (or one host
            # with as many addresses) would else shut the router out of every search. Its
            # host is one more at most.
            self._ssdp_ignored += 1
            return
        search.hosts[source] = _Answered((answer.location,), int(claims))
        self._queue(search, answer.location, location)

    def request_answered(
        self, request: UpnpRequest, response: HttpResponse, local: IPv4Address, now: float
    ) -> None:
        """An HTTP request got ``response``; ``local`` was our address on its connection.

        What it means is read here: a description's services, a SOAP answer's values, a
        fault's UPnP error code, or an answer of no use (an HTTP error, garbage).

        Raises:
            LocalProtocolError: ``request`` is not the one in flight, or a bad argument.
                A request handed out, then abandoned by :meth:`close` or :meth:`abandon`,
                may still be reported once (the caller's exchange raced the close): that
                report is ignored. One never handed out, or reported already, raises,
                closed or not.
        """
        now = _check_time(now)
        if not isinstance(response, HttpResponse):
            raise LocalProtocolError(f"a response is an HttpResponse, got {response!r}")
        if not isinstance(local, IPv4Address):
            raise LocalProtocolError(f"a local address is an IPv4Address, got {local!r}")
        flight = self._settle(request)
        if flight is None:
            return
        if request.kind is UpnpRequestKind.SEARCH:
            raise LocalProtocolError("a search round is sent (search_sent), not answered")
        self._outcome(flight, response, local, now)

    def request_failed(self, request: UpnpRequest, reason: str, now: float) -> None:
        """A request got no answer (a timeout, a refused or broken connection, an answer
        that does not parse as HTTP); ``reason`` says what, for the log and
        :class:`UpnpDeviceLost`. For a SEARCH: its socket could not be opened, and the
        search ends there.

        Raises:
            LocalProtocolError: ``request`` is not the one in flight, or a bad argument.
                A request handed out, then abandoned by :meth:`close` or :meth:`abandon`,
                may still be reported once (the caller's exchange raced the close): that
                report is ignored. One never handed out, or reported already, raises,
                closed or not.
        """
        now = _check_time(now)
        if not isinstance(reason, str):
            raise LocalProtocolError(f"a reason is a str, got {reason!r}")
        flight = self._settle(request)
        if flight is None:
            return
        if request.kind is UpnpRequestKind.SEARCH:
            del self._flights[None]
            self._search = None
            self._end_search(now)
            return
        self._outcome(flight, reason, None, now)

    def _settle(self, request: UpnpRequest) -> _Flight | None:
        """``request``'s flight if it is in flight; None for one handed out, then abandoned
        by :meth:`close` or :meth:`abandon` (its late report is of no use).

        Raises:
            LocalProtocolError: any other: one the core never handed out, or one reported
                already.
        """
        for flight in self._flights.values():
            if flight.request is request:
                return flight
        for i, abandoned in enumerate(self._abandoned):
            if abandoned is request:
                del self._abandoned[i]  # reported now: a second report is a mistake
                return None
        raise LocalProtocolError(f"not the UPnP request in flight: {request!r}")

    # -- search ----------------------------------------------------------------------------

    def _describe_request(self, search: _Search) -> UpnpRequest | None:
        describing = self._describing
        if describing is not None:
            # miniupnpc's "connected" check: a router may offer a WANIPConnection and a
            # WANPPPConnection of which only one is up; each is asked its address in turn.
            service = describing.services[describing.probed]
            return UpnpRequest(
                UpnpRequestKind.EXTERNAL_ADDRESS,
                url=parse_http_url(service.control_url),
                service=service,
            )
        if search.queue:
            # None of a host in use: _use drops them.
            location, url = search.queue.popleft()
            self._describing = _Describe(location)
            return UpnpRequest(UpnpRequestKind.DESCRIBE, url=url)
        return None

    def _in_use(self, host: IPv4Address) -> bool:
        """Whether a gateway in use answered from ``host`` (its place is taken)."""
        return any(d.control.host == host for d in self._devices)

    def _is_preferred(self, host: IPv4Address) -> bool:
        return self._preferred is None or host == self._preferred

    def _queue(self, search: _Search, location: str, url: HttpUrl) -> None:
        if self._preferred is not None and url.host == self._preferred:
            # The gateway never waits for a slot; its own LOCATIONs go in the order heard.
            ahead = next(
                (i for i, (_, queued) in enumerate(search.queue) if queued.host != url.host),
                len(search.queue),
            )
            search.queue.insert(ahead, (location, url))
        else:
            search.queue.append((location, url))

    def _described(self, response: HttpResponse | str, now: float) -> None:
        describing = self._describing
        if describing is None:  # pragma: no cover - a DESCRIBE is in flight only with one
            return
        try:
            if isinstance(response, str):
                raise UpnpError(response)
            if response.status != 200:
                raise _http_error(response)
            services = parse_device_services(response.body, describing.location)
        except UpnpError as error:
            self._descriptions_rejected += 1
            self._describing = None
            _log.debug("UPnP: the description at %s is of no use: %s", describing.location, error)
            return
        if len(services) == 1:
            self._found(services[0], None, now)
        else:
            describing.services = services  # next_request asks each its address

    def _probed(self, response: HttpResponse | str, now: float) -> None:
        describing = self._describing
        if describing is None:  # pragma: no cover - a probe is in flight only with one
            return
        service = describing.services[describing.probed]
        describing.probed += 1
        address: IPv4Address | None = None
        try:
            if isinstance(response, str):
                raise UpnpError(response)
            address = parse_external_address(response)
        except UpnpActionError as error:
            self._action_errors += 1
            _log.debug("UPnP: %s tells no address: %s", service.service_type, error)
        except UpnpError as error:
            self._request_failures += 1
            _log.debug("UPnP: %s tells no address: %s", service.service_type, error)
        if address is not None:
            self._found(service, address, now)
        elif describing.probed >= len(describing.services):
            self._found(describing.services[0], None, now)

    def _found(self, service: UpnpDevice, address: IPv4Address | None, now: float) -> None:
        """A description served: its gateway is used at once, beside the others."""
        self._describing = None
        host = parse_http_url(service.control_url).host
        if self._in_use(host):  # pragma: no cover - no description of such a host is fetched
            # One host is one gateway, whatever LOCATIONs it answers with.
            _log.debug("UPnP: %s is the gateway at %s again", service.location, host)
            return
        room = UPNP_MAX_GATEWAYS
        preferred = self._preferred
        if (
            preferred is not None
            and host != preferred
            and all(d.control.host != preferred for d in self._devices)
        ):
            # One place is kept for the preferred gateway (the one read first): else, lost
            # a while (a reboot), it would find every place taken by the others when it
            # came back, and never be used again.
            room -= 1
        if len(self._devices) >= room:
            self._devices_ignored += 1
            _log.info(
                "UPnP: gateway %s not used: %d gateways in use already",
                service.location,
                UPNP_MAX_GATEWAYS,
            )
            return
        self._use(service, address, now)

    def _end_search(self, now: float) -> None:
        """A search ended: it failed when no gateway is in use. While a gateway lost is
        not in use again (a router rebooting beside a mesh node still in use), searches go
        on, ever more slowly, as when none is found."""
        if not self._devices:
            if self._search_due == math.inf:
                self._discovery_failed(now)
            # Else a gateway found by this search was lost during it: the next search is
            # when that loss set it (at once, or later for one lost again and again).
            return
        if all(self._in_use(host) for host in self._losses):
            self._search_failures = 0
            return
        self._search_failures += 1
        delay = _backoff(UPNP_SEARCH_RETRY_MIN, self._search_failures - 1, UPNP_SEARCH_RETRY_MAX)
        self._search_due = min(self._search_due, now + delay)
        _log.debug("UPnP: a gateway lost is still missing; searching again in %.0f s", delay)

    def _discovery_failed(self, now: float) -> None:
        self._search_failures += 1
        delay = _backoff(UPNP_SEARCH_RETRY_MIN, self._search_failures - 1, UPNP_SEARCH_RETRY_MAX)
        self._search_due = now + delay
        # Said once; later failures are the same news.
        level = logging.INFO if self._search_failures == 1 else logging.DEBUG
        _log.log(level, "no UPnP gateway found; searching again in %.0f s", delay)
        self._events.append(UpnpDiscoveryFailed(self._search_due))

    def _use(self, service: UpnpDevice, address: IPv4Address | None, now: float) -> None:
        control = parse_http_url(service.control_url)
        device = _Device(
            service, self._next_seq, preferred=self._is_preferred(control.host), now=now
        )
        self._next_seq += 1
        self._devices.append(device)
        search = self._search
        if search is not None and search.queue:
            # Its host's other LOCATIONs queued meanwhile (a root device answer, then the
            # gateway's): a host is one place, fetching them is of no use. Dropped now, not
            # at their turn: a queue of nothing to fetch would keep a search whose time is
            # up from ending, its deadline (next_deadline) one already past.
            left = deque(entry for entry in search.queue if entry[1].host != control.host)
            self._ssdp_duplicates += len(search.queue) - len(left)
            search.queue = left
        self._search_failures = 0
        for want in self._wants.values():
            if not want.removing:
                device.grants[want.id] = _Grant(want, now)
        _log.info(
            "UPnP gateway %s found: %s, %s",
            device.host,
            service.friendly_name or "unnamed",
            service.service_type.rpartition(":service:")[2],
        )
        self._events.append(UpnpDeviceFound(service))
        if address is not None:
            # The search's check asked it already.
            self._address_learnt(device, address, now)

    # -- a gateway -------------------------------------------------------------------------

    def _soap(
        self,
        device: _Device,
        kind: UpnpRequestKind,
        grant: _Grant | None = None,
        port: int | None = None,
        lease: int | None = None,
    ) -> UpnpRequest:
        """A SOAP action for ``device`` (an ADD when ``lease`` is given)."""
        return UpnpRequest(
            kind,
            url=device.control,
            service=device.service,
            mapping_id=None if grant is None else grant.id,
            protocol=None if grant is None else grant.protocol,
            external_port=port,
            internal_port=None if grant is None else grant.internal_port,
            lease=lease,
            description="" if lease is None else self._description,
        )

    def _urgent_request(self, device: _Device, now: float) -> UpnpRequest | None:
        """``device``'s conflict check, deletion or retry due at once, if any (while it
        runs: the check is part of the refused request's go and goes first)."""
        request = self._check_request(device)
        if request is None:
            request = self._deletion_request(device, now)
        if request is not None:
            return request
        again, device.again = device.again, None
        if (
            again is not None
            and device.grants.get(again.id) is again
            and again.state is not _State.REMOVING
        ):
            # A refusal that another request may lift: it goes before anything else.
            return self._add_request(device, again, now)
        return None

    def _closing_request(
        self, ranked: list[_Device], now: float
    ) -> tuple[UpnpRequest | None, _Device | None]:
        """Closed: the deletions certainly owed, on every gateway (in rank order), then the
        conflict checks still due, each followed by its port's deletion if it is ours
        (``ranked``: the gateways free to ask, when concurrent; a gateway's check then goes
        once its own deletions are made, whatever the others still owe).

        A check is last because it is the one likely to hang: the close usually cut it
        short because the router was slow to answer it, and asked first it could eat the
        whole close budget (an exchange may take longer than the budget), leaving mappings
        that are certainly ours forwarded, for good on a permanent lease. It is still asked
        (the router may answer this time, and nothing else waits for it): a mapping of ours
        left forwarded is what the check is for. (One check is due at a time: each is asked
        as soon as its refusal comes.)"""
        for device in ranked:
            request = self._deletion_request(device, now)
            if request is not None:
                return request, device
        for device in ranked:
            request = self._check_request(device)
            if request is not None:
                return request, device
        return None, None

    def _check_request(self, device: _Device) -> UpnpRequest | None:
        """``device``'s GetSpecificPortMappingEntry due after a 718 or 501, if any."""
        refusal = device.refusal
        if refusal is None:
            return None
        checked = device.grants.get(refusal.mapping_id)
        if checked is None:
            device.refusal = None  # dropped meanwhile: whose the port is matters no more
            return None
        return self._soap(device, UpnpRequestKind.GET_ENTRY, checked, refusal.port)

    def _deletion_request(self, device: _Device, now: float) -> UpnpRequest | None:
        """``device``'s next DeletePortMapping, if any: a deletion under way has a port
        left (its last answer ends it); else the removed grant due first starts one, and
        one whose leases ran out meanwhile is dropped. The port whose conflict check is
        due is not deleted before the check shows it ours (another host's never is)."""
        deletion = device.deletion
        if deletion is None:
            refusal = device.refusal
            removing = [
                g for g in device.grants.values() if g.state is _State.REMOVING and g.due <= now
            ]
            removing.sort(key=lambda g: g.due)  # stable: table order among equals
            for grant in removing:
                ports = _live_ports(grant, now)
                if refusal is not None and refusal.mapping_id == grant.id:
                    ports = [p for p in ports if p != refusal.port]
                    if not ports:
                        continue  # kept for its check
                elif not ports:
                    self._drop_grant(device, grant, grant.removal_result)
                    continue
                deletion = device.deletion = _Deletion(grant, ports)
                break
            else:
                return None
        return self._soap(device, UpnpRequestKind.DELETE, deletion.grant, deletion.ports[0])

    @staticmethod
    def _due(device: _Device) -> float:
        """When ``device`` next has an address or mapping request due."""
        return min(
            [device.address_due]
            + [g.due for g in device.grants.values() if g.state is not _State.REMOVING]
        )

    def _due_request(self, device: _Device, now: float) -> UpnpRequest | None:
        """``device``'s address request or AddPortMapping due now, if any."""
        if device.address_due <= now:
            return self._soap(device, UpnpRequestKind.EXTERNAL_ADDRESS)
        wanted = self._first_wanted(device, now)
        if wanted is not None:
            return self._add_request(device, wanted, now)
        return None

    @staticmethod
    def _first_wanted(device: _Device, now: float) -> _Grant | None:
        """``device``'s grant to ask for (or renew) due first, if any is due."""
        best: _Grant | None = None
        for g in device.grants.values():
            if g.due > now or g.state is _State.REMOVING:
                continue
            if best is None or g.due < best.due:
                best = g
        return best

    def _effective_lease(self, device: _Device) -> int:
        return 0 if device.permanent_only else self._lease

    def _add_request(self, device: _Device, grant: _Grant, now: float) -> UpnpRequest:
        lease = self._effective_lease(device)
        port = grant.port
        grant.attempts += 1
        # From the moment the request leaves, the router may hold the port for us (an
        # answer may never come): remembered for deletion, forgotten if it is refused.
        self._held_until = grant.ports.get(port)
        self._remember(grant, port, lease, now)
        return self._soap(device, UpnpRequestKind.ADD, grant, port, lease)

    def _read(
        self, device: _Device, response: HttpResponse | str, parse: Callable[[HttpResponse], _T]
    ) -> _T | _Refused | _Failed:
        """What ``parse`` reads in a SOAP answer; a refusal (the gateway answered: it is
        fine), or a failure (no usable answer: counted toward losing the gateway)."""
        if isinstance(response, str):
            return _Failed(response)
        try:
            value = parse(response)
        except UpnpActionError as error:
            self._action_errors += 1
            self._answered(device)
            return _Refused(error.code)
        except UpnpError as error:
            return _Failed(str(error))
        self._answered(device)
        return value

    def _answered(self, device: _Device) -> None:
        """``device`` answered usably: it is not failing."""
        device.failures = 0
        self._losses.pop(device.control.host, None)

    def _outcome(
        self,
        flight: _Flight,
        response: HttpResponse | str,
        local: IPv4Address | None,
        now: float,
    ) -> None:
        """``flight``'s request answered (an HttpResponse) or not (the reason why)."""
        request, device = flight.request, flight.device
        del self._flights[device]
        kind = request.kind
        if device is None:
            if kind is UpnpRequestKind.DESCRIBE:
                self._described(response, now)
            else:
                self._probed(response, now)
        elif kind is UpnpRequestKind.EXTERNAL_ADDRESS:
            self._address_answered(device, response, now)
        elif kind is UpnpRequestKind.ADD:
            self._add_answered(device, request, flight.held_until, response, now)
        elif kind is UpnpRequestKind.GET_ENTRY:
            self._entry_answered(device, response, local, now)
        else:
            self._delete_answered(device, request, response, now)

    def _address_answered(self, device: _Device, response: HttpResponse | str, now: float) -> None:
        address = self._read(device, response, parse_external_address)
        if isinstance(address, _Refused):
            self._address_failed(device, address.code, now)
        elif isinstance(address, _Failed):
            self._address_failed(device, None, now)
            self._device_failed(device, address.reason, now)
        elif address is None:
            # No address yet: the router is not connected upstream.
            self._address_failed(device, None, now)
        else:
            self._address_learnt(device, address, now)

    def _address_learnt(self, device: _Device, address: IPv4Address, now: float) -> None:
        device.address_failures = 0
        device.address_due = now + _renew_interval(self._effective_lease(device))
        if address != device.address:
            device.address = address
            _log.info("UPnP gateway %s: our external address is %s", device.host, address)
            self._events.append(UpnpAddressChanged(address, device.service))

    def _address_failed(self, device: _Device, result: int | None, now: float) -> None:
        device.address_failures += 1
        retry_at = now + _retry_delay(result, device.address_failures)
        device.address_due = retry_at
        self._events.append(UpnpAddressFailed(result, retry_at, device.service))

    def _add_answered(
        self,
        device: _Device,
        request: UpnpRequest,
        held_until: float | None,
        response: HttpResponse | str,
        now: float,
    ) -> None:
        grant = device.grants.get(_present(request.mapping_id, "mapping_id"))
        port = _present(request.external_port, "external_port")
        lease = _present(request.lease, "lease")
        result = self._read(device, response, check_soap_success)
        if isinstance(result, _Failed):
            if grant is not None:
                _log.debug(
                    "UPnP gateway %s: mapping %s port %d got no usable answer: %s",
                    device.host,
                    grant.protocol.name,
                    grant.internal_port,
                    result.reason,
                )
                self._mapping_failed(device, grant, None, now)
            self._device_failed(device, result.reason, now)
            return
        if grant is None:
            return  # dropped meanwhile (its lease ran out before its answer came)
        if isinstance(result, _Refused):
            refusal = _Refusal(grant.id, port, held_until, result.code, lease)
            self._refused(device, grant, refusal, now)
            return
        self._granted(device, grant, port, lease, now)

    def _refused(self, device: _Device, grant: _Grant, refusal: _Refusal, now: float) -> None:
        """AddPortMapping of ``refusal.port`` was refused with ``refusal.code``."""
        conflict = refusal.code in (
            UpnpErrorCode.CONFLICT_IN_MAPPING_ENTRY,
            UpnpErrorCode.ACTION_FAILED,
        )
        if (
            conflict
            and refusal.port == grant.home_port
            and not grant.checked
            and grant.state is not _State.REMOVING
        ):
            # Some routers answer so to a client adding again the mapping it holds (Open.NAT
            # #14): ask whose the port is before moving to another one.
            grant.checked = True
            device.refusal = refusal
            return
        self._after_check(device, grant, refusal, None, theirs=False, now=now)

    def _entry_answered(
        self,
        device: _Device,
        response: HttpResponse | str,
        local: IPv4Address | None,
        now: float,
    ) -> None:
        refusal = device.refusal
        if refusal is None:  # pragma: no cover - a GET_ENTRY is in flight only with one
            return
        device.refusal = None
        grant = device.grants.get(refusal.mapping_id)
        entry = self._read(device, response, parse_port_mapping_entry)
        ours: UpnpPortMappingEntry | None = None
        theirs = False  # the router showed the port forwards elsewhere
        if isinstance(entry, _Refused):
            # 714 NoSuchEntryInArray, or 401: the router does not have this action.
            _log.debug("UPnP: no entry told for port %d: error %d", refusal.port, entry.code)
        elif isinstance(entry, _Failed):
            self._device_failed(device, entry.reason, now)
        elif grant is not None and (
            entry.internal_client == local and entry.internal_port == grant.internal_port
        ):
            ours = entry
        else:
            theirs = True
        if device.lost or grant is None or device.grants.get(grant.id) is not grant:
            return  # the check lost the gateway (its grants went with it)
        self._after_check(device, grant, refusal, ours, theirs=theirs, now=now)

    def _after_check(
        self,
        device: _Device,
        grant: _Grant,
        refusal: _Refusal,
        entry: UpnpPortMappingEntry | None,
        *,
        theirs: bool,
        now: float,
    ) -> None:
        """The rest of a refusal, once whose the port is is known (or not told)."""
        if self._settle_port(device, grant, refusal, entry, theirs=theirs, now=now):
            return
        if grant.state is _State.REMOVING:
            return  # its deletion is due: a refusal changes nothing
        code = refusal.code
        if grant.attempts < UPNP_MAX_ATTEMPTS:
            if code == UpnpErrorCode.ONLY_PERMANENT_LEASES_SUPPORTED and refusal.lease:
                _log.debug("UPnP gateway %s takes permanent leases only", device.host)
                device.permanent_only = True
                device.again = grant
                return
            conflict = code in (
                UpnpErrorCode.CONFLICT_IN_MAPPING_ENTRY,
                UpnpErrorCode.ACTION_FAILED,
            )
            if conflict and grant.conflicts < UPNP_CONFLICT_ATTEMPTS:
                # Another host holds the port (some routers say 501): try a random one.
                grant.conflicts += 1
                grant.port = self._rng.randint(*UPNP_CONFLICT_PORTS)
                device.again = grant
                return
            same_port = code == UpnpErrorCode.SAME_PORT_VALUES_REQUIRED
            if same_port and grant.port != grant.internal_port:
                grant.port = grant.internal_port
                device.again = grant
                return
        self._mapping_failed(device, grant, code, now)

    def _settle_port(
        self,
        device: _Device,
        grant: _Grant,
        refusal: _Refusal,
        entry: UpnpPortMappingEntry | None,
        *,
        theirs: bool,
        now: float,
    ) -> bool:
        """What the refusal of ``refusal.port`` says of our hold on it; True when the
        router showed it holds the mapping for us already (deemed renewed)."""
        port = refusal.port
        if entry is not None:
            lifetime = _entry_lifetime(entry.lease_duration, refusal.lease)
            self._remember(grant, port, lifetime, now)  # ours: deleted with the others
            if entry.enabled is not False:
                _log.debug(
                    "UPnP gateway %s refused %s port %d as a conflict, but it is ours: kept",
                    device.host,
                    grant.protocol.name,
                    port,
                )
                self._granted(device, grant, port, lifetime, now)
                return True
            # Ours but disabled: it forwards nothing; another port is looked for.
            if grant.external_port == port:
                self._clear_grant(grant)
        elif refusal.code == UpnpErrorCode.CONFLICT_IN_MAPPING_ENTRY or theirs:
            # Another host holds the port (a 718, or a 501 whose check showed it): a grant
            # of it no longer stands, and it is never ours to delete.
            grant.ports.pop(port, None)
            if grant.external_port == port:
                self._clear_grant(grant)
        elif refusal.held_until is None:
            grant.ports.pop(port, None)  # this request made nothing
        else:
            grant.ports[port] = refusal.held_until  # an earlier grant may still hold it
        return False

    def _delete_answered(
        self, device: _Device, request: UpnpRequest, response: HttpResponse | str, now: float
    ) -> None:
        deletion = device.deletion
        port = _present(request.external_port, "external_port")
        if deletion is None or not deletion.ports:  # pragma: no cover - its DELETE is ports[0]
            return
        deletion.ports.popleft()
        grant = deletion.grant
        # Asked once either way: a deletion is advisory (the lease ends the mapping anyway).
        grant.ports.pop(port, None)
        result = self._read(device, response, check_soap_success)
        if isinstance(result, _Failed):
            grant.removal_result = None
            self._device_failed(device, result.reason, now)  # a lost gateway drops the grant
        else:
            # 714 NoSuchEntryInArray: it was gone already.
            grant.removal_result = result.code if isinstance(result, _Refused) else 0
        if device.deletion is deletion and not deletion.ports:
            # The last one: the grant goes, with its result (the latest grant's); unless
            # its conflict check is still due (closed: the check goes after the deletions),
            # which settles the port it holds back.
            device.deletion = None
            refusal = device.refusal
            held = refusal is not None and refusal.mapping_id == grant.id
            if device.grants.get(grant.id) is grant and not held:
                self._drop_grant(device, grant, grant.removal_result)

    def _device_failed(self, device: _Device, reason: str, now: float) -> None:
        """A request got no usable answer: after a few in a row, the gateway is gone."""
        self._request_failures += 1
        device.failures += 1
        device.failed_at = now
        if self._closed and not device.lost:
            # Closing: the close's budget is shared by every gateway (and, not concurrent,
            # the one worker); one that did not answer would cost a timeout for each
            # deletion left, and (not concurrent) the others' would be given up unsent.
            # What it is owed is dropped (the leases end those mappings).
            _log.debug("UPnP gateway %s: deletions given up on exit (%s)", device.host, reason)
            device.again = device.refusal = device.deletion = None
            for grant in list(device.grants.values()):
                grant.ports.clear()
                self._drop_grant(device, grant, None)
            return
        if device.lost or device.failures < UPNP_DEVICE_FAILURES:
            return
        self._devices_lost += 1
        _log.info("UPnP gateway %s stopped answering (%s)", device.host, reason)
        self._events.append(UpnpDeviceLost(device.service, reason))
        device.lost = True
        self._devices.remove(device)
        device.again = device.refusal = device.deletion = None
        # Search again at once; but a gateway that is found and lost again and again (it
        # answers searches, not requests) is searched for ever more slowly. Counted by
        # host: a new URL at each search (a new port after each restart, or a LAN host
        # making them up) would otherwise be searched for at once after every loss.
        host = device.control.host
        losses = self._losses.pop(host, 0) + 1
        self._losses[host] = losses  # the latest last: the oldest is forgotten first
        while len(self._losses) > _MAX_LOSSES_KEPT:
            del self._losses[next(iter(self._losses))]
        due = now
        if losses > 1:
            due += _backoff(UPNP_SEARCH_RETRY_MIN, losses - 2, UPNP_SEARCH_RETRY_MAX)
        self._search_due = min(self._search_due, due)
        for grant in list(device.grants.values()):
            grant.ports.clear()  # that gateway is not there to delete them; their leases will
            if grant.state is _State.REMOVING or grant.want.removing:
                self._drop_grant(device, grant, None)
            elif grant.expires_at is not None:
                # Asked for again once a search finds that gateway again; the others' stand.
                self._clear_grant(grant)
                self._events.append(
                    UpnpMappingFailed(grant.snapshot(), None, self._search_due, device.service)
                )
        device.grants.clear()

    # -- the mapping table -----------------------------------------------------------------

    @staticmethod
    def _remember(grant: _Grant, port: int, lease: int, now: float) -> None:
        """The router may hold ``port`` for ``grant`` for ``lease`` seconds from now."""
        for stale in [p for p, until in grant.ports.items() if until <= now or p == port]:
            del grant.ports[stale]
        if len(grant.ports) >= UPNP_MAX_PORTS_KEPT:
            # Bounded: the port whose lease ends first is let go (its lease will end it).
            first = min(grant.ports, key=grant.ports.__getitem__)
            del grant.ports[first]
            _log.debug(
                "UPnP: %s external port %d forgotten: too many kept", grant.protocol.name, first
            )
        grant.ports[port] = now + lease if lease else math.inf

    def _granted(self, device: _Device, grant: _Grant, port: int, lease: int, now: float) -> None:
        if grant.state is _State.REMOVING:
            return  # removed while asked: the deletion is due, for every port in ``ports``
        changed = grant.external_port != port
        grant.state = _State.MAPPED
        grant.failures = grant.attempts = grant.conflicts = 0
        grant.checked = False
        grant.external_port = grant.port = grant.home_port = port
        grant.lifetime = lease
        grant.expires_at = now + lease if lease else math.inf
        grant.due = now + _renew_interval(lease)
        if changed:
            _log.info(
                "UPnP gateway %s maps %s port %d to external port %d %s",
                device.host,
                grant.protocol.name,
                grant.internal_port,
                port,
                f"for {lease} s" if lease else "permanently",
            )
            self._events.append(UpnpPortMapped(grant.snapshot(), device.service))

    def _mapping_failed(
        self, device: _Device, grant: _Grant, result: int | None, now: float
    ) -> None:
        if grant.state is _State.REMOVING:
            return
        grant.failures += 1
        grant.attempts = grant.conflicts = 0
        grant.checked = False
        retry_at = now + _retry_delay(result, grant.failures)
        if result is not None:
            _log.info(
                "UPnP gateway %s refused to map %s port %d: %s; retrying in %.0f s",
                device.host,
                grant.protocol.name,
                grant.internal_port,
                _code_text(result),
                retry_at - now,
            )
        grant.state = _State.WANTED
        grant.due = retry_at
        grant.port = grant.home_port
        if not (_transient(result) and grant.expires_at is not None and grant.expires_at > now):
            self._clear_grant(grant)
        # Otherwise a renewal failed in a way that may pass: the earlier grant stands until
        # it runs out, as with NAT-PMP (the router keeps a mapping its lease long).
        self._events.append(UpnpMappingFailed(grant.snapshot(), result, retry_at, device.service))

    @staticmethod
    def _clear_grant(grant: _Grant) -> None:
        grant.external_port = None
        grant.lifetime = 0
        grant.expires_at = None

    def _drop_grant(self, device: _Device, grant: _Grant, result: int | None) -> None:
        """``device`` is done with ``grant`` (deleted, or nothing to delete)."""
        del device.grants[grant.id]
        want = grant.want
        if want.removing:
            want.gone.append((device.rank, grant.snapshot(), result))
            self._settle_want(want)

    def _settle_want(self, want: _Want) -> None:
        """A mapping being removed leaves once no gateway holds a grant of it."""
        if not want.removing or self._wants.get(want.id) is not want:
            return
        if any(want.id in d.grants for d in self._devices):
            return
        del self._wants[want.id]
        gone = sorted(want.gone, key=lambda item: item[0])
        snapshot = next((s for _, s, _ in gone if s.external_port is not None), want.bare())
        self._events.append(MappingRemoved(snapshot, _removal_result([r for _, _, r in gone])))
