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
feeds either in. Our own address toward the gateway (PCP requests carry it, RFC 6887 8.1;
a NAT-PMP gateway maps the address a request comes from, RFC 6886 3.3) is read off a
throwaway UDP socket connected to the gateway (connecting sends nothing; the kernel picks
the source address its route would use) on opening, then by that task each minute (one
rule, whatever the protocol, the announcement group joined or not), and whenever the core
asks (:attr:`NatPmpClient.client_address_stale`): before every PCP probe after the first,
and after the gateway answered ADDRESS_MISMATCH, since a DHCP renewal may have changed it.
A new address read has every mapping asked for it at once, granted ones included, in PCP
or NAT-PMP alike (the gateway forwards a mapping to the address it was made for; the old
grants stay shown until granted again or run out), and the announcement group joined on
its interface (below). The reads are that one task's: they never overlap (an older read
applied last would undo a newer one). The socket that talks stays unconnected, so that
answers from elsewhere still reach the core, which counts them (a connected one would have
the kernel drop them unseen).

An IPv6 gateway (:func:`default_gateway6` reads the IPv6 default route's next hop, a
link-local address with its interface) is asked for pinholes in its firewall, in PCP alone
(NAT-PMP has no IPv6), as libtorrent does for an IPv6 listen socket: the client address is
our global IPv6 address (``bind_host``, or the system's source toward the internet), and
the socket that talks is bound to it, so that the server sees it as the packets' source. A
host with link-local or unique local addresses alone has nothing to open:
:func:`open_port_mapper` refuses at once. The system's source is read with the stable
(public) address preferred over a temporary one (RFC 4941's, deprecated after about a day;
``IPV6_ADDR_PREFERENCES`` on Linux, the system's choice elsewhere), and read again each
minute and after ADDRESS_MISMATCH, as libtorrent rebuilds its per-socket PCP client on an
address change: a new one (a temporary address deprecated, a renumbered prefix) has the
socket bound to it and every pinhole asked for it at once, those granted included (the old
ones, which nothing reaches any more, run out). Its announcements (PCP's ANNOUNCE to
[ff02::1]:5350) are listened for only when ``announce_address`` names an IPv6 address.
Datagrams from a link-local gateway's address over another link are counted as from
elsewhere.

A gateway says when it rebooted or got a new external address: it multicasts an announcement
to 224.0.0.1:5350 (RFC 6886 3.2.1: its address, ten times from 250 ms doubling; RFC 6887
14.1.1: PCP's ANNOUNCE after a restart), and clients SHOULD listen, so that the mappings are
made again at once rather than at the next renewal (up to half an hour later). A second task
listens there (``announce_address``): a socket bound to the group's port with
``SO_REUSEADDR`` (and ``SO_REUSEPORT`` where it exists), so that every program on the host
hears it, bound to the group's address where the system allows (only what is sent to the
group arrives, as for LSD), and joined to the group on the interface toward the gateway (our
address toward it). A membership stays on the interface it was made on: when the minute's
read (it costs no traffic; a route lost is logged at INFO once, not at each read while it
stays lost) or one the core asked for finds our address changed (a DHCP renewal, another
network), the old membership is left and the group joined on the new interface, once per
change (a failed join of 224.0.0.1 is logged at DEBUG, as on opening; of another group, it
ends the listening, not the reads). Anyone on the network can multicast: a datagram is
handed to the core only when it comes from the gateway's address (the core checks the port,
the gateway's own, from which a server sends its announcements as its answers, and the
content); the others are counted and dropped unread, as is anything longer than PCP's
largest message. Even the gateway's address can be forged, so the core believes no
announcement: it brings forward the request whose answer, to our own socket's port, tells
(:meth:`NatPmpClient.receive_announcement`, at most one each
:data:`~bip_handshake._natpmp.NATPMP_HINT_INTERVAL` seconds). Listening is a convenience,
never a condition: a socket that cannot be opened or bound (the port held by a program that
shares it with no one) costs one INFO record, and the mapper runs without it (a reboot is
then seen at the next renewal, by its epoch). A failed join of 224.0.0.1 (no multicast route
in a container) is only logged at DEBUG: every host is a member of the all-hosts group on
each of its multicast interfaces anyway (Linux joins it itself), so the socket may hear it
all the same; another group not joined ends the listening as a bind failure does.

A sketch (the gateway a real router's address)::

    async with open_port_mapper(default_gateway(), [("tcp", 6881), ("udp", 6881)]) as mapper:
        await mapper.wait_changed()
        print(mapper.external_address, mapper.external_port("tcp", 6881))
"""

from __future__ import annotations

import errno
import logging
import math
import random
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, fields
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

import trio

from ._background import background
from ._compact import PeerAddress
from ._errors import LocalProtocolError
from ._external import is_global_address
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
from ._pcp import PCP_MAX_MESSAGE

__all__ = [
    "NATPMP_ANNOUNCE_ADDRESS",
    "NATPMP_CLOSE_TIMEOUT",
    "NATPMP_DEFAULT_MAPPINGS",
    "PCP_ANNOUNCE_ADDRESS6",
    "MappingProtocolName",
    "PortMapper",
    "PortMapperStatistics",
    "default_gateway",
    "default_gateway6",
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

NATPMP_ANNOUNCE_ADDRESS: Final[tuple[str, int]] = ("224.0.0.1", 5350)
"""Where a gateway multicasts its announcements: the all-hosts group, port 5350 (RFC 6886
3.2.1, RFC 6887 14.1.1)."""

PCP_ANNOUNCE_ADDRESS6: Final[tuple[str, int]] = ("ff02::1", 5350)
"""Where an IPv6 PCP server multicasts its ANNOUNCE: the link-local all-nodes group, port
5350 (RFC 6887 14.1.1). Not listened on unless asked (``announce_address``)."""

_ALL_HOSTS: Final = IPv4Address(NATPMP_ANNOUNCE_ADDRESS[0])

# open_port_mapper's announce_address when not given: equal to NATPMP_ANNOUNCE_ADDRESS but
# another object (built at run time), so that an IPv6 gateway tells it from the same group
# given on purpose (refused: an IPv6 gateway does not announce there).
_DEFAULT_ANNOUNCE: Final[tuple[str, int]] = (NATPMP_ANNOUNCE_ADDRESS[0], NATPMP_ANNOUNCE_ADDRESS[1])

# A global destination to read our global IPv6 address off (a UDP connect sends nothing):
# the kernel's source for it, by RFC 6724, is a global address on the default route's
# link. The gateway itself will not do when it is link-local (or a ULA): the source chosen
# toward it would be of the same scope. 2001:db8::/32 is documentation space, routed by the
# default route like any global address.
_GLOBAL_PROBE: Final = IPv6Address("2001:db8::1")

# Linux's source address preference (<linux/in6.h>; Python names neither): the stable
# address over an RFC 4941 temporary one, which is deprecated after about a day, so that
# the pinholes open an address that lasts. Elsewhere the system's choice stands.
_IPV6_ADDR_PREFERENCES: Final[int | None] = getattr(
    socket, "IPV6_ADDR_PREFERENCES", 72 if sys.platform == "linux" else None
)
_IPV6_PREFER_SRC_PUBLIC: Final[int] = getattr(socket, "IPV6_PREFER_SRC_PUBLIC", 0x0002)

_MAX_DATAGRAM: Final = 2048  # a PCP message has 1100 bytes at most (NAT-PMP's 16): room

# Seconds between two reads of our address toward the gateway, by the task that talks to
# it (both families, every protocol): a DHCP renewal or a move to another network changes
# the address the mappings must forward to and the interface the announcement group must be
# joined on, and nothing else tells us under NAT-PMP (PCP's ADDRESS_MISMATCH comes with the
# next request only, up to half an hour later). A read sends nothing (a UDP connect). The
# same for our global IPv6 address when the system picks it: the pinholes must follow it.
_ADDRESS_CHECK_INTERVAL: Final = 60.0

_RTF_UP: Final = 0x1
_RTF_GATEWAY: Final = 0x2
_RTF_REJECT: Final = 0x200

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
    gateway: IPv4Address | IPv6Address, port: int, bind_host: str, *, quiet: bool = False
) -> IPv4Address | None:
    """Our IPv4 address toward ``gateway``, or None when there is no route to it (yet).

    Connecting a UDP socket sends nothing; the kernel binds it to the source address its
    route to the gateway uses, which getsockname then tells (as Bitcoin Core's PCP client
    does). No route is logged at INFO, at DEBUG when ``quiet`` (the route was lost at the
    last read already: a host offline for hours would log one line each minute).
    """
    try:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            await probe.bind((bind_host, 0))
            await probe.connect((str(gateway), port))
            host = probe.getsockname()[0]
    except OSError as error:
        level = logging.DEBUG if quiet else logging.INFO
        _log.log(level, "NAT-PMP/PCP: no route to gateway %s (%s)", gateway, error)
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


def default_gateway6(route_table: str | Path = "/proc/net/ipv6_route") -> IPv6Address | None:
    """The IPv6 default route's next hop (the router an IPv6 PCP client asks for pinholes),
    read from Linux's IPv6 routing table.

    Routers advertise themselves by their link-local address: the one returned then carries
    its interface as its scope (``fe80::1%eth0``), which sending needs. The route with the
    lowest metric wins. None when there is no such route, or the table cannot be read (not
    Linux, no /proc, no IPv6) or makes no sense.

    Args:
        route_table: the file to read, in /proc/net/ipv6_route's format.
    """
    try:
        lines = Path(route_table).read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    best: tuple[int, IPv6Address] | None = None
    for line in lines:
        # destination, its prefix length, source, its prefix length, next hop, metric,
        # reference count, use count, flags, device: all hex but the device.
        fields = line.split()
        if len(fields) != 10:
            continue
        try:
            destination, length = int(fields[0], 16), int(fields[1], 16)
            hop = IPv6Address(bytes.fromhex(fields[4]))
            metric, flags = int(fields[5], 16), int(fields[8], 16)
        except ValueError:
            continue
        wanted = _RTF_UP | _RTF_GATEWAY
        if destination or length or flags & wanted != wanted or flags & _RTF_REJECT:
            continue
        if hop.is_unspecified or hop.is_loopback or hop.is_multicast or hop.ipv4_mapped is not None:
            continue
        if hop.is_link_local:
            # A link-local address means nothing without its link.
            try:
                hop = IPv6Address(f"{hop}%{fields[9]}")
            except ValueError:
                continue
        if best is None or metric < best[0]:
            best = (metric, hop)
    return best[1] if best is not None else None


def _gateway_address(value: object) -> IPv4Address | IPv6Address:
    """``open_port_mapper``'s ``gateway``: an IPv4 address, or an IPv6 one (a link-local
    one with its scope); an IPv4-mapped one is its IPv4 address."""
    address: object = value
    if isinstance(value, str):
        try:
            address = ip_address(value)
        except ValueError:
            raise LocalProtocolError(
                f"a NAT-PMP/PCP gateway is an IPv4 or IPv6 address, got {value!r}"
            ) from None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if not isinstance(address, IPv4Address | IPv6Address):
        raise LocalProtocolError(f"a NAT-PMP/PCP gateway is an IPv4 or IPv6 address, got {value!r}")
    if address.is_unspecified or address.is_multicast:
        raise LocalProtocolError(f"a NAT-PMP/PCP gateway is a unicast address, got {address}")
    return address


def _unscoped(address: IPv6Address) -> IPv6Address:
    """``address`` without its scope (what the core and :class:`PeerAddress` hold)."""
    return IPv6Address(int(address))


def _scope_index(address: IPv6Address) -> int:
    """The interface index of ``address``'s scope (0: none).

    Raises:
        LocalProtocolError: a scope that names no interface of this host.
    """
    scope = address.scope_id
    if not scope:
        return 0
    if scope.isdigit():
        return int(scope)
    try:
        return socket.if_nametoindex(scope)
    except OSError:
        raise LocalProtocolError(f"no interface {scope!r} for gateway {address}") from None


def _pinhole_ok(address: IPv6Address, gateway: IPv6Address) -> bool:
    """Whether a pinhole for ``address`` opens anything: a global address is reachable from
    the internet, a link-local or unique local one (fc00::/7) is not. Our loopback address
    toward a gateway on the loopback is a test's stand-in, taken as it is."""
    return is_global_address(address) or (address.is_loopback and gateway.is_loopback)


async def _source_address6(toward: IPv6Address, port: int) -> IPv6Address:
    """The kernel's source address toward ``toward`` (a seam for the tests): read off a
    connected UDP socket (connecting sends nothing), the stable address preferred over a
    temporary one where the system lets us say so (silently not elsewhere).

    Raises:
        OSError: no route.
    """
    with trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        if _IPV6_ADDR_PREFERENCES is not None:
            with suppress(OSError):  # an older kernel: its own choice then
                probe.setsockopt(
                    socket.IPPROTO_IPV6, _IPV6_ADDR_PREFERENCES, _IPV6_PREFER_SRC_PUBLIC
                )
        await probe.connect((str(toward), port))
        return IPv6Address(probe.getsockname()[0])


async def _open_pinhole_socket(address: IPv6Address) -> trio.socket.SocketType:
    """The UDP socket that talks to an IPv6 gateway, bound to ``address``, ours that the
    pinholes are for (a seam for the tests, which cannot bind another address than ::1).

    Raises:
        OSError: it could not be opened or bound (the address is no longer ours).
    """
    sock = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        await sock.bind((str(address), 0))
    except BaseException:
        sock.close()
        raise
    return sock


async def _pinhole_address(gateway: IPv6Address, port: int, bind_host: str) -> IPv6Address:
    """Our IPv6 address the pinholes are for (the PCP client address, and the one the
    socket talking to the gateway is bound to, so that the server sees it as the source,
    RFC 6887 8.1): ``bind_host`` when it is a specific address, else the kernel's source
    address toward a global destination (or toward the gateway, when it is global or on
    the loopback), the stable one preferred.

    Raises:
        LocalProtocolError: no global address (a host with link-local or unique local
            addresses alone has nothing to open), or no route to find one.
    """
    try:
        host = IPv6Address(bind_host)
    except ValueError:
        raise LocalProtocolError(
            f"an IPv6 gateway's bind_host is an IPv6 address, got {bind_host!r}"
        ) from None
    if host.is_unspecified:
        toward = gateway if gateway.is_global or gateway.is_loopback else _GLOBAL_PROBE
        try:
            host = await _source_address6(toward, port)
        except (OSError, ValueError) as error:
            raise LocalProtocolError(
                f"no IPv6 route to find our global address ({error}): no pinhole to open"
            ) from None
    if not _pinhole_ok(host, gateway):
        raise LocalProtocolError(
            f"no global IPv6 address (ours toward gateway {gateway} is {host}): no pinhole to open"
        )
    return _unscoped(host)


def _announce_address(value: object) -> tuple[IPv4Address, int] | None:
    """``open_port_mapper``'s ``announce_address``, checked before any socket exists."""
    if value is None:
        return None
    if not isinstance(value, tuple) or len(value) != 2:
        raise LocalProtocolError(f"announce_address is a (host, port) pair, got {value!r}")
    host, port = value
    if not isinstance(host, str):
        raise LocalProtocolError(f"an announcement address is an IPv4 address, got {host!r}")
    try:
        # IPv4 alone: the gateway is an IPv4 one, and its announcements come from it.
        address = IPv4Address(host)
    except ValueError:
        raise LocalProtocolError(
            f"an announcement address is an IPv4 address, got {host!r}"
        ) from None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise LocalProtocolError(f"an announcement port is in 0..65535, got {port!r}")
    if port == 0 and address.is_multicast:
        # Port 0 picks a free port: no gateway sends a group's announcements there.
        raise LocalProtocolError(f"an announcement group needs its port, got {host}:0")
    return address, port


def _announce_address6(value: object) -> tuple[IPv6Address, int] | None:
    """``open_port_mapper``'s ``announce_address`` with an IPv6 gateway, checked before any
    socket exists: None unless an IPv6 address is asked for (left at its default, the IPv4
    group is the IPv4 gateway's alone; given, an IPv4 address is refused: nothing an IPv6
    gateway sends arrives there)."""
    if value is None or value is _DEFAULT_ANNOUNCE:
        return None
    if not isinstance(value, tuple) or len(value) != 2:
        raise LocalProtocolError(f"announce_address is a (host, port) pair, got {value!r}")
    host, port = value
    try:
        address = IPv6Address(host) if isinstance(host, str) else None
    except ValueError:
        address = None
    if address is None or address.scope_id is not None or address.ipv4_mapped is not None:
        raise LocalProtocolError(
            f"an IPv6 gateway's announcement address is an unscoped IPv6 address, got {host!r}"
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise LocalProtocolError(f"an announcement port is in 0..65535, got {port!r}")
    if port == 0 and address.is_multicast:
        raise LocalProtocolError(f"an announcement group needs its port, got [{host}]:0")
    return address, port


def _new_announce_socket() -> trio.socket.SocketType:
    """A fresh UDP socket for the announcements (a seam for the tests' fake socket)."""
    return trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def _new_announce_socket6() -> trio.socket.SocketType:
    """A fresh IPv6 UDP socket for an IPv6 gateway's announcements (a seam for the tests)."""
    return trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)


def _share_port(sock: trio.socket.SocketType) -> None:
    """Let every program on the host that maps ports listen on the announcements' port too:
    ``SO_REUSEADDR``, and ``SO_REUSEPORT`` where the system has it.

    Raises:
        OSError: ``SO_REUSEADDR`` refused.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reuse_port = getattr(socket, "SO_REUSEPORT", None)
    if reuse_port is not None:
        with suppress(OSError):  # some kernels define it and refuse it
            sock.setsockopt(socket.SOL_SOCKET, reuse_port, 1)


async def _open_announce_socket6(
    host: IPv6Address, port: int, interface: int
) -> trio.socket.SocketType | None:
    """A socket hearing what is sent to ``[host]:port``; None when it cannot be set up (said
    once, at INFO: the mapper runs without it).

    A multicast ``host`` (ff02::1) is joined on the gateway's link (``interface``, its
    scope's index; 0: the system's choice), which does not change while the mapper runs,
    unlike our IPv4 address toward an IPv4 gateway: no membership to move. A unicast one (a
    test's stand-in) is bound as it is and joins nothing.
    """
    sock = _new_announce_socket6()
    try:
        _share_port(sock)
        with suppress(OSError):  # IPv6 alone: the IPv4 mapper listens for IPv4's own
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if host.is_multicast:
            # Bound to every address: the source check (the gateway's address alone)
            # keeps out what else arrives on the port.
            await sock.bind(("::", port))
            request = host.packed + interface.to_bytes(4, sys.byteorder)  # struct ipv6_mreq
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, request)
        else:
            await sock.bind((str(host), port))
    except OSError as error:
        sock.close()
        _log.info(
            "PCP: not listening for the IPv6 gateway's announcements on [%s]:%d (%s);"
            " a gateway restart is seen at the next renewal",
            host,
            port,
            error,
        )
        return None
    except BaseException:
        sock.close()
        raise
    return sock


def _membership(group: IPv4Address, interface: IPv4Address | None) -> bytes:
    """``struct ip_mreq``: the group, and the address of the interface to join it on (0.0.0.0:
    the system's choice by its routes)."""
    return group.packed + (interface or IPv4Address(0)).packed


def _join(sock: trio.socket.SocketType, group: IPv4Address, interface: IPv4Address | None) -> bool:
    """Join ``group`` on ``interface``: True when joined (or a member there already), False
    when a join of 224.0.0.1 failed (logged at DEBUG: the socket may hear it all the same).

    Raises:
        OSError: another group could not be joined (nothing sent to it would arrive).
    """
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, _membership(group, interface))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            # Linux: this socket holds the group on that interface already (a new address
            # on the same interface, the old membership not left): what we want.
            return True
        if group != _ALL_HOSTS:
            raise
        # RFC 1112: every multicast-capable interface is in the all-hosts group already
        # (Linux joins it itself): what reaches it reaches this socket. No multicast route
        # (a container) fails the join, and would close a socket that works.
        _log.debug("NAT-PMP: joining %s failed (%s); listening all the same", group, error)
        return False
    return True


class _GroupMembership:
    """The announcement socket's membership of its multicast group, on the interface that
    has our address toward the gateway: moved there when that address changes (a DHCP
    renewal, another network), since a membership stays on the interface it was made on."""

    __slots__ = ("_sock", "group", "interface", "joined")

    def __init__(
        self,
        sock: trio.socket.SocketType,
        group: IPv4Address,
        interface: IPv4Address | None,
        joined: bool,
    ) -> None:
        self._sock = sock
        self.group = group
        self.interface = interface  # the address the join named (None: 0.0.0.0)
        self.joined = joined  # False: a failed join of 224.0.0.1, listening all the same

    def move(self, interface: IPv4Address) -> bool:
        """Be a member on the interface that has ``interface`` rather than the one joined:
        the old membership is left first, then the group joined anew (once per address
        change: a failed join is not tried again until the address changes again).

        Returns False when the group could not be joined there and it is not 224.0.0.1:
        nothing sent to it arrives any more, and listening ends.
        """
        if interface == self.interface:
            return True
        old = self.interface
        if self.joined:
            try:
                self._sock.setsockopt(
                    socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, _membership(self.group, old)
                )
            except OSError as error:
                # The kernel may have dropped it with the old address or interface.
                _log.debug("NAT-PMP: leaving %s on %s failed (%s)", self.group, old, error)
            self.joined = False
        self.interface = interface
        try:
            self.joined = _join(self._sock, self.group, interface)
        except OSError as error:
            _log.info(
                "NAT-PMP/PCP: stopped listening for announcements: cannot join %s on %s (%s)",
                self.group,
                interface,
                error,
            )
            return False
        _log.debug("NAT-PMP: listening for %s on %s (was %s)", self.group, interface, old)
        return True


async def _open_announce_socket(
    host: IPv4Address, port: int, interface: IPv4Address | None
) -> tuple[trio.socket.SocketType, _GroupMembership | None] | None:
    """A socket hearing what is sent to ``host:port`` and, for a multicast ``host``, its
    membership; None when it cannot be set up (said once, at INFO: the mapper runs without
    it).

    A multicast ``host`` is joined on the interface that has ``interface`` (our address
    toward the gateway; None: the system's choice by its routes); a failed join of
    224.0.0.1 keeps the socket (logged at DEBUG: the host is a member of that group on each
    multicast interface anyway). A unicast one (a test's stand-in for the group) is bound as
    it is and joins nothing.
    """
    membership: _GroupMembership | None = None
    sock = _new_announce_socket()
    try:
        _share_port(sock)
        if host.is_multicast:
            try:
                # Only what is sent to the group arrives (Linux, the BSDs), not what anyone
                # sends to port 5350 of one of our addresses.
                await sock.bind((str(host), port))
            except OSError as error:
                # Windows binds no multicast address: every address then; the listener's
                # source check holds all the same.
                _log.debug(
                    "NAT-PMP cannot bind %s:%d (%s): binding every address", host, port, error
                )
                await sock.bind(("0.0.0.0", port))
            membership = _GroupMembership(sock, host, interface, _join(sock, host, interface))
        else:
            await sock.bind((str(host), port))
    except OSError as error:
        sock.close()
        _log.info(
            "NAT-PMP/PCP: not listening for the gateway's announcements on %s:%d (%s);"
            " a gateway reboot is seen at the next renewal",
            host,
            port,
            error,
        )
        return None
    except BaseException:
        sock.close()
        raise
    return sock, membership


@dataclass(frozen=True, slots=True)
class PortMapperStatistics(NatPmpStatistics):
    """The core's counters (:class:`NatPmpStatistics`), and the shell's own.

    Attributes:
        announcements: datagrams from the gateway's address heard on the announcement
            socket, handed to the core (which takes announcements as hints alone: what it
            did with them shows in ``hints``, ``announcements_ignored``, ``wrong_source``,
            ``malformed`` and ``unexpected``).
        announcements_dropped: datagrams on the announcement socket dropped unread: from
            another address than the gateway's (anyone on the network can multicast), or
            longer than PCP's largest message.
    """

    announcements: int = 0
    announcements_dropped: int = 0


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
        *,
        announce_sock: trio.socket.SocketType | None = None,
        announce_host: IPv4Address | IPv6Address | None = None,
        membership: _GroupMembership | None = None,
        route_lost: bool = False,
        gateway_host: IPv6Address | None = None,
        follow_address: bool = False,
    ) -> None:
        self._client = client
        self._sock = sock
        self._on_event = on_event
        self._bind_host = bind_host
        # An IPv6 gateway as it is sent to (a link-local one with its scope), and its
        # link's index: what comes from another link is not the gateway's (the core, which
        # holds addresses without their scope, could not tell).
        self._gateway_host = gateway_host
        self._send_host = None if gateway_host is None else str(gateway_host)
        self._gateway_scope = 0 if gateway_host is None else _scope_index(gateway_host)
        # An IPv6 gateway's pinholes for the address the system picked, and our address
        # toward an IPv4 gateway always (the mappings and the group's interface follow it):
        # read again each _ADDRESS_CHECK_INTERVAL by the pump, the one task that reads it
        # (so no two reads overlap) and that alone may swap the socket it reads.
        self._follows = follow_address and gateway_host is not None
        reads = gateway_host is None or self._follows
        self._check_at = trio.current_time() + _ADDRESS_CHECK_INTERVAL if reads else math.inf
        self._wrong_link = 0
        self._changed = trio.Event()
        self._wait_scope: trio.CancelScope | None = None
        self._announce_sock = announce_sock
        self._membership = membership
        self._listen_scope = trio.CancelScope()  # cancelled when listening must end
        self._route_lost = route_lost  # the last read of our address found no route
        # The last new IPv6 address no socket could be bound to, and why: said at INFO once
        # (read again each minute, it would say the same every minute), then at DEBUG.
        self._rebind_failure: tuple[IPv6Address, str] | None = None
        # Set by _close: the deletions go from the address and socket held, whatever the
        # system picks meanwhile (the pinholes were made for it).
        self._closing = False
        self._announce_address: tuple[str, int] | None = None
        if announce_sock is not None and announce_host is not None:
            # The port bound (a test's stand-in may ask for port 0); the group's address
            # rather than the wildcard a system that binds no group address leaves.
            self._announce_address = (str(announce_host), announce_sock.getsockname()[1])
        self._announcements = 0
        self._announcements_dropped = 0

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
    def external_address(self) -> IPv4Address | IPv6Address | None:
        """The gateway's external IPv4 address, None until it said; for an IPv6 gateway, the
        IPv6 address its pinholes open (ours, unless the firewall translates it)."""
        return self._client.external_address

    @property
    def family(self) -> Literal[4, 6]:
        """The gateway's address family: 6 for an IPv6 firewall asked for pinholes in PCP."""
        return self._client.family

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

    @property
    def announce_address(self) -> tuple[str, int] | None:
        """Where the gateway's announcements are listened for, None when they are not
        (turned off, the socket could not be set up, or it failed since, or the group could
        not be joined on the interface of our new address)."""
        return self._announce_address

    def statistics(self) -> PortMapperStatistics:
        """The core's counters (sent, retransmitted, dropped answers, ...) and the
        announcements heard and dropped."""
        core = self._client.statistics()
        counters = {field.name: getattr(core, field.name) for field in fields(core)}
        counters["wrong_source"] += self._wrong_link
        return PortMapperStatistics(
            **counters,
            announcements=self._announcements,
            announcements_dropped=self._announcements_dropped,
        )

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
        """Read our address toward the gateway again (the pump alone does, each minute and
        when the core asks): a new one is given to the core, which asks for every mapping
        from it at once (PCP's requests carry it, NAT-PMP's come from it), and the
        announcement group is joined on its interface."""
        client = self._client
        gateway = client.gateway
        if client.family == 6:
            await self._follow_address6(self._gateway_host or IPv6Address(int(gateway.host)))
            return
        self._check_at = trio.current_time() + _ADDRESS_CHECK_INTERVAL
        source = await _source_address(
            gateway.host, gateway.port, self._bind_host, quiet=self._route_lost
        )
        self._route_lost = source is None
        if isinstance(source, IPv4Address):
            self._follow_interface(source)
        known = client.client_address  # None: no route to the gateway found so far
        if client.client_address_stale:
            # No route just now: the address we had is the best guess (and clears the ask).
            address = source or known
            if address is not None:
                client.set_client_address(address)
        elif source is not None and source != known:
            # Another address (the first one found is none): every mapping is asked for it
            # at once, PCP's requests carrying it (rather than be refused ADDRESS_MISMATCH),
            # NAT-PMP's coming from it; after such a refusal it may bring PCP back. The pump
            # is woken to send.
            client.set_client_address(source)
            self._kick()

    async def _follow_address6(self, gateway: IPv6Address) -> None:
        """Our global IPv6 address the pinholes are for, read again when the system picks
        it (a given ``bind_host`` stays ours): a new one has the socket bound to it and is
        given to the core, which asks for every pinhole again at once. No global address
        just now (said at INFO once, at DEBUG while it lasts), or one the socket cannot be
        bound to (see :meth:`_rebind`), keeps the one held (read again at the next check);
        so does a close (an ADDRESS_MISMATCH to a deletion reads nothing: the pinholes to
        delete are the held address's, and a rebind would only lose their answers)."""
        client = self._client
        known = client.client_address
        assert isinstance(known, IPv6Address)  # an IPv6 gateway's core has ours
        address = known
        if self._follows and not self._closing:
            self._check_at = trio.current_time() + _ADDRESS_CHECK_INTERVAL
            try:
                found = await _pinhole_address(gateway, client.gateway.port, "::")
            except LocalProtocolError as error:
                level = logging.DEBUG if self._route_lost else logging.INFO
                _log.log(level, "PCP: keeping %s for the pinholes: %s", known, error)
                self._route_lost = True
            else:
                self._route_lost = False
                if found == known:
                    self._rebind_failure = None  # back: a failure again is news
                elif await self._rebind(found):
                    address = found
        # Read afresh or not, it clears the core's ask.
        client.set_client_address(address)
        if address != known:
            self._kick()

    async def _rebind(self, address: IPv6Address) -> bool:
        """Talk to the IPv6 gateway from ``address`` from now on (the server takes the
        packets' source for the client, RFC 6887 8.1); False when no socket can be bound to
        it (said at INFO, then at DEBUG while the same failure lasts: the address is read
        again each minute). The old socket is closed: answers to it are of no use."""
        try:
            sock = await _open_pinhole_socket(address)
        except OSError as error:
            failure = (address, str(error))
            level = logging.DEBUG if failure == self._rebind_failure else logging.INFO
            self._rebind_failure = failure
            _log.log(level, "PCP: cannot send from our new address %s (%s)", address, error)
            return False
        self._rebind_failure = None
        old, self._sock = self._sock, sock
        old.close()
        return True

    def _peer(self, address: Any) -> PeerAddress | None:
        """A datagram's source as the core takes it; None when it came over another link
        than a link-local gateway's (not the gateway, whatever its address)."""
        # recvfrom's (host, port) for IPv4, (host, port, flow info, scope id) for IPv6.
        host: str = address[0]
        port: int = address[1]
        if self._client.family == 4:
            return PeerAddress(IPv4Address(host), port)
        if self._gateway_scope and address[3:4] != (self._gateway_scope,):
            return None
        return PeerAddress(_unscoped(IPv6Address(host)), port)

    def _follow_interface(self, address: IPv4Address) -> None:
        """Join the announcement group on the interface that has ``address``, our address
        toward the gateway, if it is not the one joined (leaving that one)."""
        membership = self._membership
        if membership is not None and not membership.move(address):
            self._stop_listening()

    def _stop_listening(self) -> None:
        self._announce_address = None
        self._membership = None
        self._listen_scope.cancel()

    async def _pump(self, *, until_closed: bool) -> None:
        client = self._client
        # The check is after the dispatch, never before it: a close that ends at once (no
        # mapping ever sent) still hands its events to on_event and wakes wait_changed.
        while True:
            now = trio.current_time()
            client.handle_timer(now)
            # No minute's read while closing, and an IPv6 address asked for again after
            # ADDRESS_MISMATCH is the one held (see _follow_address6): the deletions are for
            # the address the pinholes were made for.
            due = not until_closed and self._check_at <= now
            if client.client_address_stale or due:
                # A PCP probe is about to go out, the gateway said our address is wrong, or
                # the minute's read is due (both families, every protocol).
                await self._refresh_client_address()
            for data, destination in client.datagrams_to_send(now):
                # An IPv6 gateway with its scope, which a link-local address needs.
                host = self._send_host or str(destination.host)
                try:
                    await self._sock.sendto(data, (host, destination.port))
                except OSError as error:
                    # Lost like a dropped datagram: the core retransmits or times out.
                    _log.debug("NAT-PMP send to %s failed: %s", destination, error)
            self._dispatch()
            if until_closed and client.is_closed:
                break
            deadline = client.next_deadline()
            deadline = math.inf if deadline is None else deadline
            if not until_closed:
                deadline = min(deadline, self._check_at)
            with trio.CancelScope(deadline=deadline) as scope:
                self._wait_scope = scope
                try:
                    data, address = await self._sock.recvfrom(_MAX_DATAGRAM)
                except OSError as error:
                    # An ICMP error (port unreachable) may surface here; the core's
                    # timeout handles a gateway that does not speak NAT-PMP.
                    _log.debug("NAT-PMP receive failed: %s", error)
                    continue
                finally:
                    self._wait_scope = None
                source = self._peer(address)
                if source is None:
                    self._wrong_link += 1  # told among the core's wrong_source
                else:
                    client.receive_datagram(data, source, now=trio.current_time())
            self._dispatch()

    async def _run(self) -> None:
        await self._pump(until_closed=False)

    async def _listen(self) -> None:
        """Hand the gateway's announcements to the core as they arrive.

        The core is fed from this task directly: trio runs one task at a time, and the core
        is consistent whenever the pump awaits; the pump is then woken to send what the
        announcement brought forward (the request whose answer tells: a reboot then
        recreates every mapping within 0 to 5 s).
        """
        sock = self._announce_sock
        assert sock is not None  # started only with one
        with self._listen_scope:
            await self._receive_announcements(sock)
        # Listening ended (the socket failed, or the group could not be joined on our new
        # interface): nothing more is read, so nothing more should queue up in the kernel.
        sock.close()

    async def _receive_announcements(self, sock: trio.socket.SocketType) -> None:
        gateway = self._client.gateway.host
        while True:
            try:
                # One byte more than the longest message: a longer datagram shows itself.
                data, address = await sock.recvfrom(PCP_MAX_MESSAGE + 1)
            except OSError as error:
                # Nothing is sent on this socket, so no ICMP error lands here: whatever
                # fails would fail again. The renewals still see a reboot, by its epoch.
                _log.info("NAT-PMP/PCP: stopped listening for announcements (%s)", error)
                self._stop_listening()
                return
            source = self._peer(address)
            if source is None or source.host != gateway or len(data) > PCP_MAX_MESSAGE:
                # Anyone on the network can send to the group: never fed to the core, only
                # counted (no record each: a flood would flood the log).
                self._announcements_dropped += 1
                continue
            self._announcements += 1
            self._client.receive_announcement(data, source, now=trio.current_time())
            self._dispatch()
            self._kick()

    async def _close(self) -> None:
        self._closing = True
        self._client.close(trio.current_time())
        await self._pump(until_closed=True)


@asynccontextmanager
async def open_port_mapper(
    gateway: IPv4Address | IPv6Address | str,
    mappings: Iterable[tuple[MappingProtocolName, int]] = NATPMP_DEFAULT_MAPPINGS,
    *,
    gateway_port: int = NATPMP_PORT,
    lifetime: int = NATPMP_LIFETIME,
    close_timeout: float = NATPMP_CLOSE_TIMEOUT,
    on_event: Callable[[NatPmpEvent], None] | None = None,
    bind_host: str | None = None,
    rng: random.Random | None = None,
    pcp: bool = True,
    announce_address: tuple[str, int] | None = _DEFAULT_ANNOUNCE,
) -> AsyncIterator[PortMapper]:
    """Keep ``mappings`` mapped on the gateway (PCP or NAT-PMP) while the block runs.

    Our address toward an IPv4 gateway is read on opening and again each minute, whatever
    the protocol: a new one (a DHCP renewal, another network) has every mapping asked for it
    at once, the gateway forwarding a mapping to the address it was made for. With an IPv6
    gateway (the IPv6 default router: :func:`default_gateway6`) the mappings are pinholes in
    its firewall, asked for in PCP alone (NAT-PMP has no IPv6), for our global IPv6 address:
    ``bind_host`` when it is one, else the one the system would send from to the internet
    (its stable address preferred), read again each minute and after ADDRESS_MISMATCH. The
    socket that talks to the gateway is bound to it (the server takes the packets' source
    for the client, RFC 6887 8.1); when the system's pick changes, to the new one, and every
    pinhole is asked for it at once.

    Args:
        gateway: the gateway's IPv4 address (:func:`default_gateway` finds the usual one),
            or IPv6 address (a link-local one with its scope, ``fe80::1%eth0``).
        mappings: ``(protocol, internal_port)`` pairs to map, each asking for the same
            external port.
        gateway_port: the gateway's NAT-PMP and PCP port (5351; another only for a test's
            gateway), where its answers and its announcements come from.
        lifetime: seconds of lifetime each mapping asks for.
        close_timeout: seconds the deletions may take on exit.
        on_event: called with every :class:`NatPmpEvent`, in the mapper's task (an
            exception it raises ends the block).
        bind_host: the local address to send from, of the gateway's family (the gateway
            maps the address its requests come from, RFC 3.3); by default (None, or the
            unspecified address) the system picks it per route.
        rng: for the random delay before recreating mappings after a gateway reset, and
            PCP's mapping nonces and renewal times.
        pcp: talk PCP first, falling back to NAT-PMP; False: NAT-PMP alone (refused with
            an IPv6 gateway). With no route to an IPv4 gateway when the block opens (our
            address toward it unknown), NAT-PMP alone too.
        announce_address: ``(host, port)`` where the gateway's announcements of a reboot
            or a new external address are listened for: by default RFC 6886's group,
            224.0.0.1:5350, joined on the interface toward the gateway, and joined anew
            when our address toward it changes (checked each minute; a unicast address,
            a test's stand-in, is bound as it is; port 0 picks one, for a unicast address
            only: :attr:`PortMapper.announce_address` tells it). None: not listened for.
            With an IPv6 gateway, only an IPv6 address given is listened on
            (:data:`PCP_ANNOUNCE_ADDRESS6`, ff02::1 port 5350, joined on the gateway's
            link); left at its default, nothing is (an IPv4 address given is refused). A
            socket that cannot be set up is logged at INFO and done without. What is
            heard is a hint, never believed: it brings a request forward, at most one each
            :data:`~bip_handshake._natpmp.NATPMP_HINT_INTERVAL` seconds.

    Raises:
        LocalProtocolError: a bad argument; or, with an IPv6 gateway, no global IPv6
            address (link-local or unique local addresses alone: no pinhole to open).
        OSError: the UDP socket that talks to the gateway could not be opened.
    """
    gateway = _gateway_address(gateway)
    if isinstance(close_timeout, bool) or not isinstance(close_timeout, int | float):
        raise LocalProtocolError(f"close_timeout is a number of seconds, got {close_timeout!r}")
    if not close_timeout >= 0:
        raise LocalProtocolError(f"close_timeout is at least 0, got {close_timeout!r}")
    if not isinstance(pcp, bool):
        raise LocalProtocolError(f"pcp is a bool, got {pcp!r}")
    if isinstance(gateway, IPv6Address):
        if not pcp:
            raise LocalProtocolError("NAT-PMP has no IPv6: an IPv6 gateway is asked in PCP")
        announce6 = _announce_address6(announce_address)
        host6 = "::" if bind_host is None else bind_host
        interface = _scope_index(gateway)
        ours = await _pinhole_address(gateway, gateway_port, host6)
        sock = await _open_pinhole_socket(ours)
        mapper: PortMapper | None = None
        try:
            client = NatPmpClient(
                _unscoped(gateway),
                port=gateway_port,
                lifetime=lifetime,
                rng=rng,
                client_address=ours,
            )
            _add_mappings(client, mappings)
            announce_sock = None
            if announce6 is not None:
                announce_sock = await _open_announce_socket6(*announce6, interface)
            mapper = PortMapper(
                client,
                sock,
                on_event,
                host6,
                announce_sock=announce_sock,
                announce_host=announce6[0] if announce6 is not None else None,
                gateway_host=gateway,
                # The system's pick is followed; an address given is the user's to change.
                follow_address=IPv6Address(host6).is_unspecified,
            )
            async with _running(mapper, announce_sock, close_timeout):
                yield mapper
        finally:
            sock.close()
            if mapper is not None:
                mapper._sock.close()  # the one it moved to, if our address changed
        return
    host4 = "0.0.0.0" if bind_host is None else bind_host
    announce = _announce_address(announce_address)
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind((host4, 0))
        # Our address toward the gateway: PCP's client address, the interface the
        # announcement group is joined on, and, NAT-PMP alone too, what the minute's read
        # compares with (a change asks for every mapping from the new one).
        source = await _source_address(gateway, gateway_port, host4)
        if pcp and source is None:
            _log.info("PCP: our address toward gateway %s unknown; NAT-PMP alone", gateway)
        client = NatPmpClient(
            gateway,
            port=gateway_port,
            lifetime=lifetime,
            rng=rng,
            pcp=pcp and source is not None,
            # NAT-PMP alone too: a new address read (the minute's) has the core ask for
            # every mapping again from it.
            client_address=source,
        )
        _add_mappings(client, mappings)
        announce_sock = membership = None
        if announce is not None:
            opened = await _open_announce_socket(announce[0], announce[1], source)
            if opened is not None:
                announce_sock, membership = opened
        mapper = PortMapper(
            client,
            sock,
            on_event,
            host4,
            announce_sock=announce_sock,
            announce_host=announce[0] if announce is not None else None,
            membership=membership,
            route_lost=source is None,
        )
        async with _running(mapper, announce_sock, close_timeout):
            yield mapper


def _add_mappings(
    client: NatPmpClient, mappings: Iterable[tuple[MappingProtocolName, int]]
) -> None:
    now = trio.current_time()
    for protocol, internal_port in mappings:
        client.add_mapping(_protocol(protocol), internal_port, now)


@asynccontextmanager
async def _running(
    mapper: PortMapper, announce_sock: trio.socket.SocketType | None, close_timeout: float
) -> AsyncIterator[None]:
    """Run ``mapper``'s tasks while the block runs, then delete its mappings within
    ``close_timeout`` (even when the block is cancelled), and close the announcement
    socket."""
    try:
        tasks = [mapper._run]
        if announce_sock is not None:
            tasks.append(mapper._listen)
        try:
            async with background(*tasks):
                yield
        finally:
            # Shielded: a cancelled block still deletes its mappings, within the bound.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + close_timeout):
                await mapper._close()
    finally:
        if announce_sock is not None:
            announce_sock.close()
