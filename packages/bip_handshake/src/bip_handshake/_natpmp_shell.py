"""Keeping our ports mapped on the home router: a trio shell around :class:`NatPmpClient`.

``async with open_port_mapper(gateway) as mapper:`` asks the gateway to forward our ports
(by default TCP and UDP 6881) in PCP (RFC 6887), or in NAT-PMP (RFC 6886) when the gateway
does not speak PCP (the core negotiates; ``pcp=False`` talks NAT-PMP alone), keeps the
mappings renewed while the block runs, and deletes them on the way out (within
``close_timeout`` seconds, even when the block is cancelled: a deletion is advisory, RFC
6886 3.1, so it is bounded, never awaited for long).
Meanwhile :attr:`PortMapper.external_address` and :meth:`PortMapper.external_port` say where
the internet reaches us, :meth:`PortMapper.wait_changed` wakes when that changes, and the
``on_event`` callback sees every :class:`NatPmpEvent`.

The gateway is an argument: :func:`default_gateway` reads Linux's routing table for the
usual choice (RFC 6886 3: the default route's gateway). One task owns the socket and the
core: it sends what the core owes, waits for an answer or the core's next deadline, and
feeds either in. PCP requests carry our own address toward the gateway (RFC 6887 8.1): it
is read off a throwaway UDP socket connected to the gateway (connecting sends nothing; the
kernel picks the source address its route would use) on opening, and again whenever the
core asks (:attr:`NatPmpClient.client_address_stale`): before every PCP probe after the
first, and after the gateway answered ADDRESS_MISMATCH, since a DHCP renewal may have
changed it. The socket that talks stays unconnected, so that answers from elsewhere still
reach the core, which counts them (a connected one would have the kernel drop them
unseen).

A sketch (the gateway a real router's address)::

    async with open_port_mapper(default_gateway(), [("tcp", 6881), ("udp", 6881)]) as mapper:
        await mapper.wait_changed()
        print(mapper.external_address, mapper.external_port("tcp", 6881))
"""

from __future__ import annotations

import logging
import math
import random
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Final, Literal, TypeAlias

import trio

from ._background import background
from ._compact import PeerAddress
from ._errors import LocalProtocolError
from ._natpmp import (
    NATPMP_LIFETIME,
    NATPMP_PORT,
    GatewayProtocol,
    MappingId,
    MappingProtocol,
    NatPmpClient,
    NatPmpEvent,
    NatPmpStatistics,
    PortMapping,
)

__all__ = [
    "NATPMP_CLOSE_TIMEOUT",
    "NATPMP_DEFAULT_MAPPINGS",
    "MappingProtocolName",
    "PortMapper",
    "default_gateway",
    "open_port_mapper",
]

MappingProtocolName: TypeAlias = Literal["tcp", "udp"] | MappingProtocol
"""A mapping's transport: ``"tcp"``, ``"udp"`` or a :class:`MappingProtocol`."""

NATPMP_DEFAULT_MAPPINGS: Final[tuple[tuple[MappingProtocolName, int], ...]] = (
    ("tcp", 6881),
    ("udp", 6881),
)
"""What :func:`open_port_mapper` maps unless told: BitTorrent's TCP and uTP/DHT port."""

NATPMP_CLOSE_TIMEOUT: Final = 2.0
"""Seconds the deletions may take on exit (three tries of one deletion take 1.75 s)."""

_MAX_DATAGRAM: Final = 2048  # a PCP message has 1100 bytes at most (NAT-PMP's 16): room

_RTF_UP: Final = 0x1
_RTF_GATEWAY: Final = 0x2

_log = logging.getLogger("bip_handshake.natpmp")


def _protocol(value: object) -> MappingProtocol:
    if isinstance(value, MappingProtocol):
        return value
    if value == "tcp":
        return MappingProtocol.TCP
    if value == "udp":
        return MappingProtocol.UDP
    raise LocalProtocolError(f"a mapping protocol is 'tcp' or 'udp', got {value!r}")


async def _source_address(
    gateway: IPv4Address | IPv6Address, port: int, bind_host: str
) -> IPv4Address | None:
    """Our IPv4 address toward ``gateway``, or None when there is no route to it (yet).

    Connecting a UDP socket sends nothing; the kernel binds it to the source address its
    route to the gateway uses, which getsockname then tells (as Bitcoin Core's PCP client
    does).
    """
    try:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            await probe.bind((bind_host, 0))
            await probe.connect((str(gateway), port))
            host = probe.getsockname()[0]
    except OSError as error:
        _log.info("PCP: no route to gateway %s (%s)", gateway, error)
        return None
    address = IPv4Address(host)
    if address.is_unspecified:  # pragma: no cover - a connected socket has an address
        return None
    return address


def default_gateway(route_table: str | Path = "/proc/net/route") -> IPv4Address | None:
    """The IPv4 default route's gateway, read from Linux's routing table.

    The route with the lowest metric wins. None when there is no such route, or the table
    cannot be read (not Linux, no /proc) or makes no sense.

    Args:
        route_table: the file to read, in /proc/net/route's format.
    """
    try:
        lines = Path(route_table).read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    best: tuple[int, IPv4Address] | None = None
    for line in lines[1:]:
        fields = line.split()
        if len(fields) < 7:
            continue
        try:
            destination = int(fields[1], 16)
            gateway = int(fields[2], 16)
            flags = int(fields[3], 16)
            metric = int(fields[6])
        except ValueError:
            continue
        if destination != 0 or flags & (_RTF_UP | _RTF_GATEWAY) != _RTF_UP | _RTF_GATEWAY:
            continue
        if not 0 < gateway <= 0xFFFF_FFFF:
            continue
        # The kernel prints the address as a host-order integer.
        address = IPv4Address(gateway.to_bytes(4, sys.byteorder))
        if best is None or metric < best[0]:
            best = (metric, address)
    return best[1] if best is not None else None


class PortMapper:
    """The mappings :func:`open_port_mapper` keeps; read it, or add and remove mappings.

    Not built directly: :func:`open_port_mapper` gives one.
    """

    def __init__(
        self,
        client: NatPmpClient,
        sock: trio.socket.SocketType,
        on_event: Callable[[NatPmpEvent], None] | None,
        bind_host: str = "0.0.0.0",
    ) -> None:
        self._client = client
        self._sock = sock
        self._on_event = on_event
        self._bind_host = bind_host
        self._changed = trio.Event()
        self._wait_scope: trio.CancelScope | None = None

    @property
    def gateway(self) -> PeerAddress:
        """The gateway's address and NAT-PMP / PCP port."""
        return self._client.gateway

    @property
    def protocol(self) -> GatewayProtocol | None:
        """What the gateway is talked to in: ``"pcp"`` or ``"natpmp"``, None while the
        first PCP requests are unanswered (see :attr:`NatPmpClient.protocol`)."""
        return self._client.protocol

    @property
    def external_address(self) -> IPv4Address | None:
        """The gateway's external IPv4 address, None until it said."""
        return self._client.external_address

    def mappings(self) -> tuple[PortMapping, ...]:
        """Snapshots of the mappings kept (``external_port`` None while not granted)."""
        return self._client.mappings()

    def external_port(self, protocol: MappingProtocolName, internal_port: int) -> int | None:
        """The external port the gateway forwards to ``internal_port``, None while none.

        The gateway may grant another port than the one asked for: this is the one peers
        must dial (what a tracker announce, the DHT and BEP 10 ``p`` should carry).
        """
        wanted = _protocol(protocol)
        for mapping in self._client.mappings():
            if mapping.protocol is wanted and mapping.internal_port == internal_port:
                return mapping.external_port
        return None

    def statistics(self) -> NatPmpStatistics:
        """The core's counters (sent, retransmitted, dropped answers, ...)."""
        return self._client.statistics()

    def add_mapping(
        self, protocol: MappingProtocolName, internal_port: int, *, external_port: int | None = None
    ) -> MappingId:
        """Map one more port (see :meth:`NatPmpClient.add_mapping`); the request goes out
        as soon as the gateway is free.

        Raises:
            LocalProtocolError: a bad argument, a duplicate, or too many mappings.
        """
        mapping_id = self._client.add_mapping(
            _protocol(protocol), internal_port, trio.current_time(), external_port=external_port
        )
        self._kick()
        return mapping_id

    def remove_mapping(self, mapping_id: MappingId) -> None:
        """Stop keeping a mapping and delete it on the gateway.

        Raises:
            LocalProtocolError: no such mapping.
        """
        self._client.remove_mapping(mapping_id, trio.current_time())
        self._kick()

    async def wait_changed(self) -> None:
        """Wait for the next event: the address learnt or changed, a port mapped, moved,
        failed or removed, the gateway reset."""
        await self._changed.wait()

    def _kick(self) -> None:
        # The pump may be waiting on an older deadline: wake it to send at once.
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    def _dispatch(self) -> None:
        changed = False
        while (event := self._client.next_event()) is not None:
            changed = True
            _log.debug("NAT-PMP: %s", event)  # the core logs what a user wants to see
            if self._on_event is not None:
                self._on_event(event)
        if changed:
            self._changed.set()
            self._changed = trio.Event()

    async def _refresh_client_address(self) -> None:
        """Read our address toward the gateway again, for the core's next PCP requests."""
        client = self._client
        gateway = client.gateway
        source = await _source_address(gateway.host, gateway.port, self._bind_host)
        # No route just now: the address we had is the best guess (and clears the ask).
        address = source or client.client_address
        if address is not None:
            client.set_client_address(address)

    async def _pump(self, *, until_closed: bool) -> None:
        client = self._client
        # The check is after the dispatch, never before it: a close that ends at once (no
        # mapping ever sent) still hands its events to on_event and wakes wait_changed.
        while True:
            now = trio.current_time()
            client.handle_timer(now)
            if client.client_address_stale:
                # A PCP probe is about to go out, or the gateway said our address is wrong.
                await self._refresh_client_address()
            for data, destination in client.datagrams_to_send(now):
                try:
                    await self._sock.sendto(data, (str(destination.host), destination.port))
                except OSError as error:
                    # Lost like a dropped datagram: the core retransmits or times out.
                    _log.debug("NAT-PMP send to %s failed: %s", destination, error)
            self._dispatch()
            if until_closed and client.is_closed:
                break
            deadline = client.next_deadline()
            with trio.CancelScope(deadline=math.inf if deadline is None else deadline) as scope:
                self._wait_scope = scope
                try:
                    data, (host, port) = await self._sock.recvfrom(_MAX_DATAGRAM)
                except OSError as error:
                    # An ICMP error (port unreachable) may surface here; the core's
                    # timeout handles a gateway that does not speak NAT-PMP.
                    _log.debug("NAT-PMP receive failed: %s", error)
                    continue
                finally:
                    self._wait_scope = None
                client.receive_datagram(
                    data, PeerAddress(IPv4Address(host), port), now=trio.current_time()
                )
            self._dispatch()

    async def _run(self) -> None:
        await self._pump(until_closed=False)

    async def _close(self) -> None:
        self._client.close(trio.current_time())
        await self._pump(until_closed=True)


@asynccontextmanager
async def open_port_mapper(
    gateway: IPv4Address | str,
    mappings: Iterable[tuple[MappingProtocolName, int]] = NATPMP_DEFAULT_MAPPINGS,
    *,
    gateway_port: int = NATPMP_PORT,
    lifetime: int = NATPMP_LIFETIME,
    close_timeout: float = NATPMP_CLOSE_TIMEOUT,
    on_event: Callable[[NatPmpEvent], None] | None = None,
    bind_host: str = "0.0.0.0",
    rng: random.Random | None = None,
    pcp: bool = True,
) -> AsyncIterator[PortMapper]:
    """Keep ``mappings`` mapped on the gateway (PCP or NAT-PMP) while the block runs.

    Args:
        gateway: the gateway's IPv4 address (:func:`default_gateway` finds the usual one).
        mappings: ``(protocol, internal_port)`` pairs to map, each asking for the same
            external port.
        gateway_port: the gateway's NAT-PMP and PCP port (5351; another only for a test's
            gateway).
        lifetime: seconds of lifetime each mapping asks for.
        close_timeout: seconds the deletions may take on exit.
        on_event: called with every :class:`NatPmpEvent`, in the mapper's task (an
            exception it raises ends the block).
        bind_host: the local IPv4 address to send from (the gateway maps the address its
            requests come from, RFC 3.3); by default the system picks it per route.
        rng: for the random delay before recreating mappings after a gateway reset, and
            PCP's mapping nonces and renewal times.
        pcp: talk PCP first, falling back to NAT-PMP; False: NAT-PMP alone. With no route
            to the gateway when the block opens (our address toward it unknown), NAT-PMP
            alone too.

    Raises:
        LocalProtocolError: a bad argument.
        OSError: the UDP socket could not be opened.
    """
    if isinstance(gateway, str):
        try:
            gateway = IPv4Address(gateway)
        except ValueError:
            raise LocalProtocolError(
                f"a NAT-PMP gateway is an IPv4 address, got {gateway!r}"
            ) from None
    if isinstance(close_timeout, bool) or not isinstance(close_timeout, int | float):
        raise LocalProtocolError(f"close_timeout is a number of seconds, got {close_timeout!r}")
    if not close_timeout >= 0:
        raise LocalProtocolError(f"close_timeout is at least 0, got {close_timeout!r}")
    if not isinstance(pcp, bool):
        raise LocalProtocolError(f"pcp is a bool, got {pcp!r}")
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind((bind_host, 0))
        source = await _source_address(gateway, gateway_port, bind_host) if pcp else None
        if pcp and source is None:
            _log.info("PCP: our address toward gateway %s unknown; NAT-PMP alone", gateway)
        client = NatPmpClient(
            gateway,
            port=gateway_port,
            lifetime=lifetime,
            rng=rng,
            pcp=source is not None,
            client_address=source,
        )
        now = trio.current_time()
        for protocol, internal_port in mappings:
            client.add_mapping(_protocol(protocol), internal_port, now)
        mapper = PortMapper(client, sock, on_event, bind_host)
        try:
            async with background(mapper._run):
                yield mapper
        finally:
            # Shielded: a cancelled block still deletes its mappings, within the bound.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + close_timeout):
                await mapper._close()
