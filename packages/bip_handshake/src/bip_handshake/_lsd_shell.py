"""Local Service Discovery on the network: a trio shell around :class:`LsdService`.

``async with open_lsd(6881, on_peer=...) as lsd:`` joins BEP 14's multicast group on the LSD
port (6771), announces the torrents given to :meth:`LocalServiceDiscovery.announce` while
the block runs, and calls ``on_peer(info_hash, peer)`` for every host on the local network
that announces one of them. One task owns the socket and the core: it sends what the core
owes, waits for a datagram or the core's next deadline, and feeds either in. Leaving the
block closes the socket at once (LSD has no goodbye to send).

The socket is set up as libtorrent sets up its own: bound to the group's port with
``SO_REUSEADDR`` (and ``SO_REUSEPORT`` where it exists) so that several clients on one
machine share it, the group joined (``IP_ADD_MEMBERSHIP`` / ``IPV6_JOIN_GROUP``), a hop
limit of 1 (``IP_MULTICAST_TTL`` / ``IPV6_MULTICAST_HOPS``: the local network only), and the
multicast loopback on, so that clients on this machine hear each other; our own messages
come back too, and their cookie drops them. Unless told otherwise it binds the group's
address itself, not every address: Linux and the BSDs then deliver only what was sent to
the group, and multicast does not cross the internet, so a datagram sent to port 6771 from
afar (with a forged source, to make us dial someone) is never read. libtorrent filters by
the interface's netmask to the same end. Where binding the group is refused, every address
is bound.

A group that is a unicast address (tests: ``127.0.0.1`` and a port) joins nothing: the
socket binds an ephemeral port unless told, and announces go to that address alone.

A machine with no multicast route (a loopback-only namespace, a container without one)
cannot join the group: :func:`open_lsd` then raises :class:`LsdUnavailableError`, an
:class:`OSError`, so the client can log a warning and run without LSD.

BEP 27: private torrents must never be announced; the caller keeps them out.

A sketch (the callback a handshaker's :meth:`~bip_handshake.PeerSink.discovered`)::

    def found(info_hash: bytes, peer: PeerAddress) -> None:
        handshaker.discovered(info_hash, [peer], "lsd")

    try:
        async with open_lsd(6881, on_peer=found) as lsd:
            lsd.announce(torrent.info_hash)
            await trio.sleep_forever()
    except LsdUnavailableError as error:
        log.warning("running without local service discovery: %s", error)
"""

from __future__ import annotations

import errno
import logging
import math
import random
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from ipaddress import IPv4Address, ip_address
from typing import Final

import trio

from bip_metainfo import InfoHash

from ._background import background
from ._compact import CompactError, Family, PeerAddress
from ._errors import LocalProtocolError
from ._lsd import (
    LSD_ANNOUNCE_INTERVAL,
    LSD_FIRST_ANNOUNCES,
    LSD_FIRST_RETRIES,
    LSD_GROUP_V4,
    LSD_GROUP_V6,
    LSD_MAX_MESSAGE,
    LSD_MAX_SOURCES,
    LSD_MIN_GAP,
    LSD_SOURCE_BURST,
    LSD_SOURCE_RATE,
    LsdPeerFound,
    LsdService,
    LsdStatistics,
)

__all__ = ["LocalServiceDiscovery", "LsdUnavailableError", "open_lsd"]

_WILDCARD: Final = {4: "0.0.0.0", 6: "::"}

_log = logging.getLogger("bip_handshake.lsd")


class LsdUnavailableError(OSError):
    """The LSD socket could not be set up: no multicast route, the interface unknown, the
    port taken... Its ``errno`` and ``strerror`` are the system's; ``__cause__`` is the
    original :class:`OSError`. LSD is an optional peer source: log it and go on without.
    Not a :class:`~bip_handshake.HandshakeError`: the system refused, not the input.
    """


_SocketOption = tuple[int, int, int | bytes]
"""A ``setsockopt`` call: level, option, value."""


def _interface_index(interface: str | int | None) -> int:
    if interface is None:
        return 0
    if isinstance(interface, bool) or not isinstance(interface, int | str):
        raise LocalProtocolError(f"an IPv6 interface is an index or a name, got {interface!r}")
    if isinstance(interface, int):
        if not 0 <= interface <= 0xFFFF_FFFF:
            raise LocalProtocolError(f"an interface index is in 0..2**32-1, got {interface}")
        return interface
    if not interface or "\0" in interface:
        # if_nametoindex would say "no interface" (or raise ValueError for a NUL) as if the
        # machine lacked it: this is the caller's mistake, not the machine's.
        raise LocalProtocolError(f"an IPv6 interface name is a non-empty name, got {interface!r}")
    try:
        return socket.if_nametoindex(interface)
    except OSError as error:
        # Its OSError has no errno nor strerror: give it both, for LsdUnavailableError.
        raise OSError(errno.ENODEV, "no such interface") from error


def _interface_address(interface: str | int | None) -> IPv4Address | None:
    if interface is None:
        return None
    try:
        if isinstance(interface, str):
            return IPv4Address(interface)
    except ValueError:
        pass
    raise LocalProtocolError(f"an IPv4 interface is given by its address, got {interface!r}")


def _multicast_options(
    group: PeerAddress, interface: str | int | None = None, *, ttl: int = 1
) -> list[_SocketOption]:
    """The ``setsockopt`` calls that join ``group`` and set how we send to it.

    Args:
        group: a multicast group.
        interface: for IPv4 the address of the interface to join on and send from, for
            IPv6 its index or name; None lets the system choose by its routes.
        ttl: the hop limit of what we send (1: the local network only).

    Raises:
        LocalProtocolError: ``group`` is not multicast, or a bad interface (an empty name)
            or ttl.
        OSError: an IPv6 interface name that names no interface (``ENODEV``).

    >>> [option for _, option, _ in _multicast_options(LSD_GROUP_V4)] == [
    ...     socket.IP_ADD_MEMBERSHIP, socket.IP_MULTICAST_TTL, socket.IP_MULTICAST_LOOP]
    True
    """
    if not group.host.is_multicast:
        raise LocalProtocolError(f"not a multicast group: {group}")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= 255:
        raise LocalProtocolError(f"a multicast ttl is in 1..255, got {ttl!r}")
    if isinstance(group.host, IPv4Address):
        address = _interface_address(interface)
        any_interface = (address or IPv4Address(0)).packed
        # IPv4's TTL and loop options are one byte on BSD; Linux takes a byte as well.
        options: list[_SocketOption] = [
            (socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group.host.packed + any_interface),
            (socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, bytes((ttl,))),
            (socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, b"\x01"),
        ]
        if address is not None:
            options.append((socket.IPPROTO_IP, socket.IP_MULTICAST_IF, address.packed))
        return options
    index = _interface_index(interface)
    options = [
        (socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group.host.packed + struct.pack("@I", index)),
        (socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl),
        (socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1),
    ]
    if index:
        options.append((socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index))
    return options


class LocalServiceDiscovery:
    """The torrents :func:`open_lsd` announces; add and withdraw them, read the counters.

    Not built directly: :func:`open_lsd` gives one.
    """

    def __init__(
        self,
        service: LsdService,
        sock: trio.socket.SocketType,
        on_peer: Callable[[bytes, PeerAddress], None] | None,
    ) -> None:
        self._service = service
        self._sock = sock
        self._on_peer = on_peer
        self._wait_scope: trio.CancelScope | None = None
        self._closed = False
        host, port = sock.getsockname()[:2]
        self._local_address = PeerAddress(ip_address(host.partition("%")[0]), port)

    @property
    def group(self) -> PeerAddress:
        """Where our announces go."""
        return self._service.group

    @property
    def cookie(self) -> str:
        """The token our messages carry (and ours are recognised by)."""
        return self._service.cookie

    @property
    def local_address(self) -> PeerAddress:
        """The address and port the socket is bound to (the group's own for a multicast
        group, unless ``bind_host`` said otherwise)."""
        return self._local_address

    def announce(self, info_hash: bytes | InfoHash) -> None:
        """Announce a torrent while the block runs (see :meth:`LsdService.announce`): the
        first message goes at once, and again 2 s and 6 s later (unless ``first_announces``
        first-announce messages went within the last ``min_gap``: then as soon as the
        schedule allows). Never a
        private torrent (BEP 27).

        Raises:
            LocalProtocolError: not a 20-byte id nor an InfoHash, or the block has ended.
        """
        if self._closed:
            raise LocalProtocolError("local service discovery has stopped")
        self._service.announce(info_hash, trio.current_time())
        self._kick()

    def withdraw(self, info_hash: bytes | InfoHash) -> None:
        """Stop announcing a torrent and reporting its peers (nothing if not announced).

        Raises:
            LocalProtocolError: not a 20-byte id nor an InfoHash.
        """
        self._service.withdraw(info_hash)

    def is_announced(self, info_hash: bytes | InfoHash) -> bool:
        """Whether a torrent is announced (every swarm id of an InfoHash)."""
        return self._service.is_announced(info_hash)

    def statistics(self) -> LsdStatistics:
        """The core's counters (messages sent, peers found, datagrams dropped, ...)."""
        return self._service.statistics()

    def _kick(self) -> None:
        # The pump may be waiting on a later deadline (or none): wake it to send now (it
        # asks the core again what to send and until when to wait).
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    def _dispatch(self) -> None:
        while (event := self._service.next_event()) is not None:
            if isinstance(event, LsdPeerFound) and self._on_peer is not None:
                self._on_peer(event.info_hash, event.peer)

    async def _run(self) -> None:
        service = self._service
        size = LSD_MAX_MESSAGE + 1  # one byte more: a longer datagram is seen to be too long
        while True:
            now = trio.current_time()
            service.handle_timer(now)
            for data, destination in service.datagrams_to_send(now):
                try:
                    await self._sock.sendto(data, (str(destination.host), destination.port))
                except OSError as error:
                    # Lost like a dropped datagram: the torrents are announced again later.
                    _log.debug("LSD send to %s failed: %s", destination, error)
            deadline = service.next_deadline()
            with trio.CancelScope(deadline=math.inf if deadline is None else deadline) as scope:
                self._wait_scope = scope
                try:
                    data, address = await self._sock.recvfrom(size)
                except OSError as error:
                    _log.debug("LSD receive failed: %s", error)
                    continue
                finally:
                    self._wait_scope = None
                # An IPv6 source may carry its scope ("fe80::1%eth0"); the core drops
                # link-local sources anyway.
                host = ip_address(address[0].partition("%")[0])
                service.receive_datagram(
                    data, PeerAddress(host, address[1]), now=trio.current_time()
                )
                self._dispatch()


def _group(family: object, group_address: PeerAddress | str | None) -> PeerAddress:
    if isinstance(family, bool) or family not in (4, 6):
        raise LocalProtocolError(f"an address family is 4 or 6, got {family!r}")
    if group_address is None:
        return LSD_GROUP_V4 if family == 4 else LSD_GROUP_V6
    if isinstance(group_address, str):
        try:
            group_address = PeerAddress.parse(group_address)
        except CompactError as error:
            raise LocalProtocolError(f"not a group address: {group_address!r}") from error
    if not isinstance(group_address, PeerAddress):
        raise LocalProtocolError(f"a group address is a PeerAddress, got {group_address!r}")
    if group_address.family != family:
        raise LocalProtocolError(f"group {group_address} is not of IPv{family}")
    return group_address


def _bind_host(bind_host: object, family: Family) -> str:
    try:
        if isinstance(bind_host, str) and ip_address(bind_host).version == family:
            return bind_host
    except ValueError:
        pass
    raise LocalProtocolError(f"bind_host is an IPv{family} address, got {bind_host!r}")


def _bind_port(bind_port: object) -> int:
    if (
        isinstance(bind_port, bool)
        or not isinstance(bind_port, int)
        or not 0 <= bind_port <= 0xFFFF
    ):
        raise LocalProtocolError(f"bind_port is in 0..65535, got {bind_port!r}")
    return bind_port


async def _open_socket(
    group: PeerAddress,
    bind_host: str | None,
    bind_port: int | None,
    interface: str | int | None,
    ttl: int,
) -> trio.socket.SocketType:
    family = group.family
    multicast = group.host.is_multicast
    if multicast:
        # Bad arguments fail before any socket exists; an unknown interface name is an
        # OSError like the others below.
        try:
            options = _multicast_options(group, interface, ttl=ttl)
        except OSError as error:
            raise LsdUnavailableError(
                error.errno, f"LSD cannot use interface {interface!r}: {error.strerror}"
            ) from error
    else:
        options = []
    wildcard = _WILDCARD[family]
    host = wildcard if bind_host is None else _bind_host(bind_host, family)
    port = (group.port if multicast else 0) if bind_port is None else _bind_port(bind_port)
    sock = trio.socket.socket(socket.AF_INET if family == 4 else socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        if multicast:
            # Several clients on one machine listen on the group's port together.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            reuse_port = getattr(socket, "SO_REUSEPORT", None)
            if reuse_port is not None:
                with suppress(OSError):  # some kernels define it and refuse it
                    sock.setsockopt(socket.SOL_SOCKET, reuse_port, 1)
        if family == 6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if multicast and bind_host is None:
            try:
                # Only what is sent to the group arrives (see the module docstring).
                await sock.bind((str(group.host), port))
                host = str(group.host)
            except OSError as error:
                _log.debug("LSD cannot bind %s (%s): binding every address", group, error)
                await sock.bind((wildcard, port))
        else:
            await sock.bind((host, port))
        for level, option, value in options:
            sock.setsockopt(level, option, value)
    except OSError as error:
        sock.close()
        where = f"group {group}" if multicast else f"{host} port {port}"
        raise LsdUnavailableError(
            error.errno, f"LSD cannot set up its socket on {where}: {error.strerror}"
        ) from error
    except BaseException:
        sock.close()
        raise
    return sock


@asynccontextmanager
async def open_lsd(
    port: int,
    *,
    family: Family = 4,
    group_address: PeerAddress | str | None = None,
    bind_host: str | None = None,
    bind_port: int | None = None,
    interface: str | int | None = None,
    on_peer: Callable[[bytes, PeerAddress], None] | None = None,
    ttl: int = 1,
    announce_interval: float = LSD_ANNOUNCE_INTERVAL,
    min_gap: float = LSD_MIN_GAP,
    first_announces: int = LSD_FIRST_ANNOUNCES,
    first_retries: int = LSD_FIRST_RETRIES,
    source_rate: float = LSD_SOURCE_RATE,
    source_burst: int = LSD_SOURCE_BURST,
    max_sources: int = LSD_MAX_SOURCES,
    cookie: str | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[LocalServiceDiscovery]:
    """Run Local Service Discovery while the block runs.

    Args:
        port: the port we listen on for BitTorrent connections (what announces carry).
        family: 4 or 6: the group joined by default, and the socket's family.
        group_address: the group: by default BEP 14's (239.192.152.143:6771 or
            [ff15::efc0:988f]:6771). A unicast address joins nothing and sends there.
        bind_host: the local address to bind; by default the group's address for a
            multicast group (only what is sent to the group arrives), every address of
            the family for a unicast one.
        bind_port: the local port to bind; by default the group's for a multicast group,
            an ephemeral one for a unicast group.
        interface: the interface to join the group on and send from: for IPv4 its
            address, for IPv6 its index or name; by default the system's choice.
        on_peer: called with ``(info_hash, peer)`` for every announce of a torrent we
            announce, in the LSD task (an exception it raises ends the block); without
            it peers are only counted.
        ttl: the multicast hop limit (1: the local network only).
        announce_interval: seconds between two announces of one torrent.
        min_gap: least seconds between two regular messages (with 0, each torrent has its
            own message: none are batched).
        first_announces: messages announcing a torrent for the first time allowed within
            any ``min_gap`` beyond the regular ones (see :class:`LsdService`).
        first_retries: times a torrent's first announce is sent again (2 s, then 4 s
            apart, as libtorrent), within the same allowance.
        source_rate: messages a second one host may send us once its burst is spent.
        source_burst: messages one host may send us at once.
        max_sources: hosts whose message rate is tracked at once.
        cookie: the token our messages carry; random by default.
        rng: draws the random cookie.

    Raises:
        LocalProtocolError: a bad argument.
        LsdUnavailableError: the socket could not be opened, bound, or join the group
            (an :class:`OSError`; nothing was sent).
    """
    group = _group(family, group_address)
    service = LsdService(
        port,
        group=group,
        cookie=cookie,
        announce_interval=announce_interval,
        min_gap=min_gap,
        first_announces=first_announces,
        first_retries=first_retries,
        source_rate=source_rate,
        source_burst=source_burst,
        max_sources=max_sources,
        rng=rng,
    )
    sock = await _open_socket(group, bind_host, bind_port, interface, ttl)
    with sock:
        lsd = LocalServiceDiscovery(service, sock, on_peer)
        _log.info("LSD: announcing port %d to %s from %s", port, group, lsd.local_address)
        try:
            async with background(lsd._run):
                yield lsd
        finally:
            lsd._closed = True
