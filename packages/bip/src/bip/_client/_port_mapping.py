"""The session's ports mapped on the NAT gateway (NAT-PMP, RFC 6886, spoken as PCP, RFC 6887,
to a router that knows it; and UPnP IGD), and the ports we tell.

Behind a home router nobody can dial us unless the router forwards a port; with
:attr:`~bip._client.ClientConfig.natpmp` or :attr:`~bip._client.ClientConfig.upnp` on,
:func:`open_session_port_mapping` asks the gateway (bip_handshake's
:func:`~bip_handshake.open_port_mapper` and :func:`~bip_handshake.open_upnp_mapper`, side by
side as libtorrent runs both) to forward the session's TCP listen ports and its UDP ports
(uTP, the DHT), keeps the mappings alive while the session runs and deletes them when it
closes (within bip_handshake's bounded closes). As libtorrent does with its port mappings,
the external TCP port the gateway grants (which may differ from ours: another machine behind
the router may hold it; NAT-PMP's grant first when both granted one) is what we tell others:
:class:`SessionPortMapping` gives it to the trackers' and the DHT's announces (read at each
announce: :attr:`SessionPortMapping.external_tcp_port`), to our BEP 10 extended handshake's
``p`` (it is a peer manager service), and to the external address voting (the gateway's
external address as a :attr:`~bip_handshake.VoteSource.ROUTER` vote; and every port a
gateway forwards to us, each UPnP gateway's grant included, as ours at the decided address:
:meth:`~bip._client._external_address.ExternalAddresses.set_mapped_ports`).

A gateway that cannot be found or opened costs a WARNING and the session runs without it; one
that never answers costs nothing but the unmapped port being announced (bip_handshake gives
up on it quietly and tries again later). Port mapping is for a host behind a NAT: when every
address we listen on is a global one, nothing is asked (an INFO record says so).

IPv6 has no NAT, but a home router's firewall drops what is not an answer: with
:attr:`~bip._client.ClientConfig.natpmp` on and IPv6 listeners, the IPv6 router
(:attr:`~bip._client.ClientConfig.natpmp_gateway6`, or the IPv6 default route's next hop) is
asked in PCP for pinholes to the same ports (libtorrent runs NAT-PMP/PCP per listen socket,
PCP alone for an IPv6 one): :attr:`SessionPortMapping.mapper6`. Its grants are told as our
ports as the IPv4 ones are. No router found, or no global IPv6 address (a pinhole for a
link-local or unique local address opens nothing), costs an INFO record.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import ClassVar

from bip import __version__
from bip_handshake import (
    GatewayReset,
    LocalProtocolError,
    MappingFailed,
    MappingProtocol,
    MappingRemoved,
    PeerAddress,
    PortMapped,
    PortMapper,
    PortMapping,
    PortMappingEvent,
    UpnpDeviceLost,
    UpnpPortMapper,
    default_gateway,
    default_gateway6,
    is_global_address,
    open_port_mapper,
    open_upnp_mapper,
)
from bip_peer import Peer, PeerManager

from ._config import UPNP_SSDP_ADDRESS, ClientConfig
from ._external_address import ExternalAddresses

__all__ = ["SessionPortMapping", "mappable_ports", "open_session_port_mapping", "pinhole_ports"]

logger = logging.getLogger("bip.client")


class SessionPortMapping:
    """What the gateway maps for the session, and the ports we tell others (a peer manager
    service: our BEP 10 ``p`` is the mapped TCP port once granted).

    Not built directly: :func:`open_session_port_mapping` gives one (with no mapper when
    port mapping is off or could not start: then every external port is the local one).

    Args:
        tcp_port: the TCP port we accept peers on (0: none), whose mapping we announce.
        external: told of the mapped ports and of the gateway's external address.
    """

    # No message: the peer manager asks it about none (it only adds our "p").
    message_types: ClassVar[tuple[type, ...]] = ()

    def __init__(self, tcp_port: int, *, external: ExternalAddresses | None = None) -> None:
        self.tcp_port = tcp_port
        """Our local TCP listen port (0 when we do not listen)."""
        self.mapper: PortMapper | None = None
        """bip_handshake's NAT-PMP mapper while it runs, else ``None``."""
        self.upnp: UpnpPortMapper | None = None
        """bip_handshake's UPnP IGD mapper while it runs, else ``None``."""
        self.mapper6: PortMapper | None = None
        """bip_handshake's PCP mapper of the IPv6 router's pinholes while it runs, else
        ``None``."""
        self._external = external

    def _mappers(self) -> tuple[PortMapper | UpnpPortMapper, ...]:
        # NAT-PMP first: a router speaking both answers NAT-PMP sooner, and one view wins.
        # The IPv6 pinholes last: an IPv4 grant of the same port is the one told.
        return tuple(m for m in (self.mapper, self.upnp, self.mapper6) if m is not None)

    @property
    def external_address(self) -> IPv4Address | None:
        """The gateway's external IPv4 address, ``None`` until a mapper learnt it (or
        without port mapping); NAT-PMP's when both know it."""
        return next(
            (a for m in self._mappers() if isinstance(a := m.external_address, IPv4Address)),
            None,
        )

    def mappings(self) -> tuple[PortMapping, ...]:
        """Snapshots of the mappings asked for, NAT-PMP's, UPnP's then the IPv6 pinholes'
        (``external_port`` None while not granted); empty without port mapping."""
        return tuple(mapping for m in self._mappers() for mapping in m.mappings())

    def external_port(self, protocol: MappingProtocol, internal_port: int) -> int | None:
        """The external port the gateway forwards to our ``internal_port`` (NAT-PMP's grant
        first, then UPnP's, then the IPv6 router's pinhole), or ``None``."""
        if not internal_port:
            return None
        for mapper in self._mappers():
            port = mapper.external_port(protocol, internal_port)
            if port is not None:
                return port
        return None

    @property
    def external_tcp_port(self) -> int:
        """The TCP port peers should dial: the one mapped to :attr:`tcp_port` once the
        gateway granted it, else :attr:`tcp_port` itself (0 when we do not listen)."""
        mapped = self.external_port(MappingProtocol.TCP, self.tcp_port)
        return self.tcp_port if mapped is None else mapped

    def mapped_ports(self) -> tuple[int, ...]:
        """Every external port a gateway forwards to us now (TCP and UDP, in no order):
        NAT-PMP's grants, each UPnP gateway's (a router and a mesh node or second NAT may
        each grant a mapping, on other ports after a conflict) and the IPv6 pinholes'."""
        ports = {m.external_port for m in self.mappings() if m.external_port is not None}
        if self.upnp is not None:
            # mappings() shows one gateway's grant of each mapping; the others' are ours too.
            # Only the address voting's addresses come of these ports (the decided IP with
            # each): no vote, so a LAN host posing as gateways decides nothing with them.
            ports.update(
                held.mapping.external_port
                for held in self.upnp.device_mappings()
                if held.mapping.external_port is not None
            )
        return tuple(sorted(ports))

    def on_event(self, event: PortMappingEvent) -> None:
        """The mappers' events (bip_handshake logs what a user wants to know): the mapped
        ports (:meth:`mapped_ports`) go on to the external address voting. Never raises (it
        runs in a mapper's task)."""
        if self._external is not None and isinstance(
            event, MappingFailed | PortMapped | MappingRemoved | GatewayReset | UpnpDeviceLost
        ):
            self._external.set_mapped_ports(self.mapped_ports())

    # -- PeerService -------------------------------------------------------------------------

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        """``p``: the mapped TCP port, once granted (the manager's own ``p`` is the local
        one); libtorrent tells every peer its external port alike."""
        mapped = self.external_port(MappingProtocol.TCP, self.tcp_port)
        return {} if mapped is None else {"p": mapped}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        """Nothing to do."""

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        """Consumes nothing."""
        return False

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        """Nothing to forget."""

    def tick(self, manager: PeerManager, now: float) -> None:
        """No timers (the mapper keeps its own)."""


def _mappable(host: IPv4Address | IPv6Address) -> bool:
    """Whether a socket bound to ``host`` (IPv4-mapped addresses unwrapped) may sit behind a
    NAT gateway: an IPv4 one, on every IPv4 address (``0.0.0.0``) or on one that is not
    global. NAT-PMP and UPnP IGD map IPv4 alone (and are for hosts behind a NAT); a socket on
    ``::`` takes no IPv4 (the session's sockets are all ``IPV6_V6ONLY``), so a gateway
    forwarding to its port would reach nothing."""
    return isinstance(host, IPv4Address) and (host.is_unspecified or not is_global_address(host))


def mappable_ports(addresses: Iterable[PeerAddress]) -> tuple[int, ...]:
    """The distinct ports of ``addresses`` (where sockets are bound) that a NAT gateway could
    forward to us: those of IPv4 sockets on every address or on a non-global one, in order;
    IPv6 sockets (``::`` included) and ports 0 (not bound) are left out.

    >>> listening = [PeerAddress.parse("[::]:6882"), PeerAddress.parse("0.0.0.0:6881")]
    >>> mappable_ports(listening)
    (6881,)
    """
    ports: dict[int, None] = {}
    for address in addresses:
        if address.port and _mappable(address.normalized().host):
            ports[address.port] = None
    return tuple(ports)


def pinhole_ports(addresses: Iterable[PeerAddress]) -> tuple[int, ...]:
    """The distinct ports of ``addresses`` (where sockets are bound) that the IPv6 router
    could open pinholes to: those of IPv6 sockets (not IPv4-mapped ones), in order; ports 0
    (not bound) are left out. Whether our address is global is the mapper's to find.

    >>> listening = [PeerAddress.parse("[::]:6882"), PeerAddress.parse("0.0.0.0:6881")]
    >>> pinhole_ports(listening)
    (6882,)
    """
    ports: dict[int, None] = {}
    for address in addresses:
        if address.port and isinstance(address.normalized().host, IPv6Address):
            ports[address.port] = None
    return tuple(ports)


def _first_listen_host(config: ClientConfig, family: int) -> str | None:
    """The first listen host that is a specific address of ``family`` (4, or 6 without the
    IPv4-mapped ones), as text; None when there is none."""
    for host, _ in config.listen:
        try:
            address = ip_address(host)
        except ValueError:
            continue
        if address.is_unspecified:
            continue
        if family == 4 and isinstance(address, IPv4Address):
            return str(address)
        if family == 6 and isinstance(address, IPv6Address) and address.ipv4_mapped is None:
            return str(address)
    return None


def _bind_host6(config: ClientConfig) -> str:
    """The local address PCP requests to the IPv6 router leave from, the one the pinholes
    are for: the first IPv6 listen host when it is a specific address, else ``::`` (the
    mapper takes our global address toward the internet)."""
    return _first_listen_host(config, 6) or "::"


def _bind_host(config: ClientConfig) -> str:
    """The local address NAT-PMP and UPnP requests leave from: the first listen host when it
    is a specific IPv4 address (a NAT-PMP gateway maps the address its requests come from,
    RFC 6886 3.3; UPnP's ``NewInternalClient`` is the address of our connection to the
    router), else every address (the system picks the one on the gateway's route)."""
    return _first_listen_host(config, 4) or "0.0.0.0"


def _announce_group(announce: str | None) -> tuple[str, int] | None:
    """A configured announcement address (``"224.0.0.1:5350"``, ``"[ff02::1]:5350"``) as
    :func:`open_port_mapper`'s ``announce_address`` (None: not listened for)."""
    if announce is None:
        return None
    group = PeerAddress.parse(announce)
    return (str(group.host), group.port)


@asynccontextmanager
async def open_session_port_mapping(
    config: ClientConfig,
    *,
    tcp_port: int,
    tcp_ports: Iterable[int],
    udp_ports: Iterable[int],
    external: ExternalAddresses | None = None,
    tcp_ports6: Iterable[int] = (),
    udp_ports6: Iterable[int] = (),
) -> AsyncIterator[SessionPortMapping]:
    """Map the session's ports on the NAT gateway while the block runs, if the config says
    to (:attr:`ClientConfig.natpmp`, :attr:`ClientConfig.upnp`: either or both); the
    mappings are deleted on the way out.

    Never fails for the gateway's sake: no gateway found, a gateway address that is not
    IPv4, or a socket that cannot be opened is a WARNING, and the block runs without that
    mapper.

    Args:
        config: ``natpmp``, ``natpmp_gateway``, ``natpmp_gateway_port``,
            ``natpmp_announce_address``, ``upnp`` and ``upnp_ssdp_address`` say what to do.
        tcp_port: the TCP port we announce (its mapping is the one we tell others).
        tcp_ports: every TCP port to map (:func:`mappable_ports` of the listeners); empty
            when every listener has a global address (or is IPv6): nothing is mapped then,
            not even the UDP ports.
        udp_ports: the UDP ports to map (uTP listeners, the DHT's IPv4 socket).
        external: the session's external address voting, told of mapped ports and of the
            gateway's address.
        tcp_ports6: the IPv6 TCP listeners' ports (:func:`pinhole_ports`): with
            ``natpmp`` on, pinholes to them (and to ``udp_ports6``) are asked of the IPv6
            router (``natpmp_gateway6``, ``natpmp_announce_address6``); empty: none.
        udp_ports6: the IPv6 UDP ports to open (uTP listeners, the DHT's IPv6 socket).
    """
    mapping = SessionPortMapping(tcp_port, external=external)
    tcp = tuple(dict.fromkeys(port for port in tcp_ports if port))
    mappings: list[tuple[MappingProtocol, int]] = [(MappingProtocol.TCP, p) for p in tcp]
    mappings += [(MappingProtocol.UDP, p) for p in dict.fromkeys(udp_ports) if p]
    wanted = [name for name, on in (("NAT-PMP", config.natpmp), ("UPnP", config.upnp)) if on]
    if not wanted:
        pass
    elif not config.listen:
        logger.info("%s: not mapping: we do not listen", " and ".join(wanted))
        wanted = []
    elif not tcp:
        # Port mapping is for a host behind a NAT: a global address is reached as it is.
        logger.info(
            "%s: not mapping: every address we listen on is global (or IPv6), so no NAT"
            " stands in the way",
            " and ".join(wanted),
        )
        wanted = []
    shown = ", ".join(f"{kind.name} {port}" for kind, port in mappings)
    async with AsyncExitStack() as stack:
        if "NAT-PMP" in wanted:
            gateway = config.natpmp_gateway or default_gateway()
            group = _announce_group(config.natpmp_announce_address)
            if gateway is None:
                logger.warning("NAT-PMP: no default gateway found; ports not mapped")
            else:
                try:
                    mapping.mapper = await stack.enter_async_context(
                        open_port_mapper(
                            gateway,
                            mappings,
                            gateway_port=config.natpmp_gateway_port,
                            on_event=mapping.on_event,
                            bind_host=_bind_host(config),
                            announce_address=group,
                        )
                    )
                except (OSError, LocalProtocolError) as error:
                    logger.warning("NAT-PMP: cannot talk to gateway %s: %s", gateway, error)
                else:
                    logger.info("NAT-PMP: asking gateway %s to map %s (PCP first)", gateway, shown)
        if "UPnP" in wanted:
            ssdp = PeerAddress.parse(config.upnp_ssdp_address or UPNP_SSDP_ADDRESS)
            try:
                mapping.upnp = await stack.enter_async_context(
                    open_upnp_mapper(
                        mappings,
                        ssdp_address=(str(ssdp.host), ssdp.port),
                        on_event=mapping.on_event,
                        bind_host=_bind_host(config),
                        description=f"bip {__version__}",
                    )
                )
            except (OSError, LocalProtocolError) as error:
                logger.warning("UPnP: cannot search for a gateway at %s: %s", ssdp, error)
            else:
                logger.info("UPnP: searching at %s for a gateway to map %s", ssdp, shown)
        pinholes = [(MappingProtocol.TCP, p) for p in dict.fromkeys(tcp_ports6) if p]
        if config.natpmp and pinholes:
            pinholes += [(MappingProtocol.UDP, p) for p in dict.fromkeys(udp_ports6) if p]
            mapping.mapper6 = await _open_pinholes(config, pinholes, mapping, stack)
        if external is not None and (mapping.mapper is not None or mapping.upnp is not None):
            external.set_router_address(lambda: mapping.external_address)
        yield mapping


async def _open_pinholes(
    config: ClientConfig,
    pinholes: list[tuple[MappingProtocol, int]],
    mapping: SessionPortMapping,
    stack: AsyncExitStack,
) -> PortMapper | None:
    """The IPv6 router's PCP mapper of ``pinholes``, entered on ``stack``; None (said at
    INFO, or WARNING for a socket that cannot be opened) when there is none to ask."""
    gateway = config.natpmp_gateway6 or default_gateway6()
    if gateway is None:
        logger.info("PCP (IPv6): no IPv6 default router found; no pinholes asked for")
        return None
    group = _announce_group(config.natpmp_announce_address6)
    shown = ", ".join(f"{kind.name} {port}" for kind, port in pinholes)
    try:
        mapper = await stack.enter_async_context(
            open_port_mapper(
                gateway,
                pinholes,
                gateway_port=config.natpmp_gateway_port,
                on_event=mapping.on_event,
                bind_host=_bind_host6(config),
                announce_address=group,
            )
        )
    except LocalProtocolError as error:
        # No global IPv6 address, the common case of a host without IPv6 connectivity.
        logger.info("PCP (IPv6): not asking router %s for pinholes: %s", gateway, error)
        return None
    except OSError as error:
        logger.warning("PCP (IPv6): cannot talk to router %s: %s", gateway, error)
        return None
    logger.info("PCP (IPv6): asking router %s for pinholes to %s", gateway, shown)
    return mapper
