"""SOCKS5 UDP ASSOCIATE over trio: a UDP socket whose datagrams go through a proxy's relay.

libtorrent sends all of its UDP (trackers, the DHT, uTP) through the proxy's UDP relay when a
SOCKS5 proxy is set (``src/udp_socket.cpp``, its ``socks5`` class). This is that piece, for the
UDP tracker client and the DHT to plug in:

- :func:`open_socks5_udp_socket` binds a UDP socket of ours at once and yields a
  :class:`Socks5UdpSocket`; a background task keeps a TCP control connection to the proxy
  carrying a ``UDP ASSOCIATE`` (RFC 1928, section 4, command 3), negotiated and authenticated
  as :func:`~bip_handshake._socks_shell.open_socks5_stream` does. It goes to the proxy's
  addresses of our UDP socket's family only (the relay is reached from that socket; as
  libtorrent), from our UDP socket's host when that is a specific address (a proxy relays
  for the control connection's host: Dante, and RFC 1928's advice), and TCP keep-alive
  probes it (idle 30 s, as libtorrent) so that a proxy gone silently is noticed within
  about 40 s. While that connection stays open we are associated: the reply's bound address
  is the relay (the proxy's own address when it answers the unspecified address, as
  libtorrent);
- :meth:`Socks5UdpSocket.sendto` wraps each datagram in RFC 1928's section 7 header and sends
  it to the relay; while no association is up it raises
  :class:`~bip_handshake._socks.SocksUnavailableError` (libtorrent's ``permission_denied``):
  nothing is ever sent directly, a proxy being there to hide us;
- :meth:`Socks5UdpSocket.recvfrom` returns the next datagram from the relay, unwrapped, its
  source normalized (``::ffff:a.b.c.d`` is the IPv4 address); datagrams from anyone else,
  fragments (``FRAG`` not zero: not reassembled), malformed ones and ones whose source is a
  host name (not an IP address written as one; a scoped IPv6 address is no peer's either)
  are dropped and counted. ICMP errors are ignored, as libtorrent does while proxied;
- when the proxy refuses (microsocks answers "command not supported"), does not answer within
  ``timeout``, or the control connection closes, we are not associated,
  :attr:`Socks5UdpSocket.last_error` says why, and we try again after ``retry_interval``
  seconds, doubled after each failure up to a minute (back to ``retry_interval`` once an
  association is up).

Bounds: one control connection at a time; every read of the UDP socket takes at most 65,535
bytes; a datagram from a foreign host costs a comparison and a counter.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Final, Literal

import trio

from ._compact import PeerAddress
from ._handshaker import ListenError
from ._socks import (
    MAX_DATAGRAM_SIZE,
    Socks5Client,
    SocksCommand,
    SocksError,
    SocksProtocolError,
    SocksUnavailableError,
    decode_socks5_datagram,
    encode_socks5_datagram,
)
from ._socks_shell import (
    _MAX_TARGETS,
    DEFAULT_SOCKS_TIMEOUT,
    ProxyConfig,
    _connect_to_proxy,
    _literal,
    _negotiate,
    _proxy_literal,
    _unmapped,
    _unresolved,
    _written,
)
from ._tcp_from import _MAX_ANSWERS

__all__ = [
    "MAX_RETRY_INTERVAL",
    "Socks5UdpSocket",
    "Socks5UdpStatistics",
    "open_socks5_udp_socket",
    "proxy_udp_family",
]

_log = logging.getLogger("bip_handshake.socks")

MAX_RETRY_INTERVAL: Final = 60.0
"""Seconds between two attempts to associate at most, after repeated failures (unless
``retry_interval`` itself is longer)."""
_CONTROL_READ: Final = 512
"""Bytes read at once from the control connection once associated: the proxy has nothing to
say there, so any byte ends the association."""
_ICMP_ERRNOS: Final = frozenset(
    {errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH}
)
"""Errors a UDP read may report for an ICMP message about an earlier send: ignored (the
relay's path, not a datagram)."""
_BROADCAST: Final = IPv4Address("255.255.255.255")
"""The limited broadcast address: :attr:`PeerAddress.is_connectable` lets it through."""
_KEEPALIVE_IDLE: Final = 30
"""Seconds of quiet on the control connection before TCP keep-alive probes it (libtorrent's
``tcp_keepalive_idle`` for it)."""
_KEEPALIVE_INTERVAL: Final = 1
"""Seconds between two unanswered keep-alive probes (libtorrent's ``tcp_keepalive_interval``)."""
_KEEPALIVE_COUNT: Final = 9
"""Unanswered probes that end the connection (Linux's default, set for every system): a dead
proxy is noticed about 39 s after its last word."""


@dataclass(frozen=True, slots=True)
class Socks5UdpStatistics:
    """Counters of a :class:`Socks5UdpSocket` since it was opened.

    Attributes:
        sent: datagrams sent to the relay.
        received: datagrams from the relay handed to :meth:`~Socks5UdpSocket.recvfrom`'s
            caller.
        dropped_foreign: datagrams from another address than the relay's (or while not
            associated).
        dropped_malformed: datagrams from the relay with a bad header, or whose source is a
            host name (a name that reads as an IP address is taken as that address, but for
            a scoped IPv6 one, ``fe80::1%eth0``: not a peer's address).
        dropped_fragments: datagrams from the relay with ``FRAG`` not zero.
        associations: associations the proxy set up.
        refused_sends: :meth:`~Socks5UdpSocket.sendto` calls refused while not associated.
    """

    sent: int = 0
    received: int = 0
    dropped_foreign: int = 0
    dropped_malformed: int = 0
    dropped_fragments: int = 0
    associations: int = 0
    refused_sends: int = 0


def _retry_delays(first: float) -> Iterator[float]:
    """Seconds to wait before each new attempt after consecutive failures: ``first``, then
    doubled each time up to ``MAX_RETRY_INTERVAL`` (or ``first`` when it is longer).

    >>> from itertools import islice
    >>> list(islice(_retry_delays(5.0), 7))
    [5.0, 10.0, 20.0, 40.0, 60.0, 60.0, 60.0]
    """
    ceiling = max(first, MAX_RETRY_INTERVAL)
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, ceiling)


class Socks5UdpSocket:
    """A UDP socket whose datagrams go through a SOCKS5 proxy's relay: made by
    :func:`open_socks5_udp_socket`, usable inside its block only.

    One task at a time may wait in :meth:`recvfrom` (trio allows one reader per socket).
    """

    def __init__(
        self,
        sock: trio.socket.SocketType,
        local_address: PeerAddress,
        proxy: ProxyConfig,
        *,
        timeout: float,
        retry_interval: float,
        send_local_endpoint: bool,
    ) -> None:
        self._sock = sock
        self._local = local_address
        self._proxy = proxy
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._send_local_endpoint = send_local_endpoint
        self._relay: PeerAddress | None = None
        # The relay as the socket reports a datagram's source: compared on every read.
        self._relay_sockaddr: tuple[str, int] | None = None
        self._last_error: SocksError | None = None
        self._changed = trio.Event()
        self._closed = False
        self._sent = self._received = self._associations = self._refused_sends = 0
        self._dropped_foreign = self._dropped_malformed = self._dropped_fragments = 0

    @property
    def local_address(self) -> PeerAddress:
        """Our UDP socket's address (bound before any association)."""
        return self._local

    @property
    def proxy(self) -> ProxyConfig:
        """The proxy whose relay carries our datagrams."""
        return self._proxy

    @property
    def relay(self) -> PeerAddress | None:
        """The proxy's UDP relay while associated, else None."""
        return self._relay

    @property
    def associated(self) -> bool:
        """Whether a UDP association is up: :meth:`sendto` sends only then."""
        return self._relay is not None

    @property
    def last_error(self) -> SocksError | None:
        """Why we are not associated: the last attempt's failure, or how the last association
        ended. None once associated, and before the first attempt has ended."""
        return self._last_error

    @property
    def statistics(self) -> Socks5UdpStatistics:
        """A snapshot of the counters."""
        return Socks5UdpStatistics(
            sent=self._sent,
            received=self._received,
            dropped_foreign=self._dropped_foreign,
            dropped_malformed=self._dropped_malformed,
            dropped_fragments=self._dropped_fragments,
            associations=self._associations,
            refused_sends=self._refused_sends,
        )

    async def wait_associated(self) -> None:
        """Return once an association is up (at once if it is). Unbounded: callers bound it
        (``trio.move_on_after``), a proxy may refuse for ever.

        Raises:
            trio.ClosedResourceError: the socket's block was left.
        """
        # Bounded per round: each wakeup is a change of association, and the loop only goes
        # on when that change was a loss.
        while not self.associated:
            if self._closed:
                raise trio.ClosedResourceError("the SOCKS5 UDP socket is closed")
            await self._changed.wait()

    async def sendto(
        self,
        payload: bytes | bytearray | memoryview,
        destination: PeerAddress | tuple[str, int],
    ) -> None:
        """Send ``payload`` to ``destination`` through the proxy's relay.

        Args:
            payload: the datagram (with SOCKS5's header, at most 65,535 bytes in all).
            destination: a :class:`PeerAddress`, or a host and a port; a host that is not an
                IP literal is sent as a domain name, for the proxy to resolve (remote DNS).

        Raises:
            SocksUnavailableError: no association is up (:attr:`last_error` says why); the
                datagram is not sent, directly or otherwise.
            ValueError: the destination cannot be written (a port out of 0..65535, a name
                empty or longer than 255 bytes) or the datagram is too long.
            TypeError: ``destination`` is neither a :class:`PeerAddress` nor a pair.
            trio.ClosedResourceError: the socket's block was left.
            OSError: the system refused the send.
        """
        if isinstance(destination, PeerAddress):
            host: str | IPv4Address | IPv6Address = destination.host
            port = destination.port
        elif isinstance(destination, tuple) and len(destination) == 2:
            host, port = destination
        else:
            raise TypeError(f"a destination is a PeerAddress or (host, port), not {destination!r}")
        datagram = encode_socks5_datagram(host, port, payload)
        if self._closed:
            raise trio.ClosedResourceError("the SOCKS5 UDP socket is closed")
        relay = self._relay_sockaddr
        if relay is None:
            self._refused_sends += 1
            reason = " (not set up yet)" if self._last_error is None else f": {self._last_error}"
            raise SocksUnavailableError(
                f"no UDP association through the proxy {self._proxy.address}{reason}"
            )
        await self._sock.sendto(datagram, relay)
        self._sent += 1

    async def recvfrom(self) -> tuple[bytes, PeerAddress]:
        """The next datagram from the relay: its payload and its source.

        Datagrams from any other address, fragments, malformed ones and ones whose source is
        a host name are dropped and counted (:attr:`statistics`); so are ICMP errors. A
        source written as a name that reads as an IP address is that address (as
        libtorrent), a scoped IPv6 one (``fe80::1%eth0``) excepted: dropped as malformed.
        The source is :meth:`~PeerAddress.normalized`: one the relay writes as an
        IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, as a dual-stack proxy may) is the
        IPv4 address it embeds, the address we sent to (uTP keys its connections by it).
        Unbounded in time: callers bound it.

        Raises:
            trio.ClosedResourceError: the socket's block was left.
            OSError: the system failed the read (other than an ICMP error).
        """
        # Each round takes one datagram (or one ICMP error) from the socket: a flood costs a
        # comparison and a counter per datagram, and trio checkpoints between reads.
        while True:
            if self._closed:
                raise trio.ClosedResourceError("the SOCKS5 UDP socket is closed")
            try:
                data, source = await self._sock.recvfrom(MAX_DATAGRAM_SIZE)
            except OSError as error:
                if error.errno in _ICMP_ERRNOS:
                    continue
                raise
            relay = self._relay_sockaddr
            if relay is None or source[1] != relay[1] or source[0] != relay[0]:
                self._dropped_foreign += 1
                continue
            if len(data) > 2 and data[2]:
                self._dropped_fragments += 1
                continue
            try:
                datagram = decode_socks5_datagram(data)
            except SocksProtocolError:
                self._dropped_malformed += 1
                continue
            host = datagram.host
            try:
                # A name would have to be resolved to be a peer's address: dropped. One that
                # reads as an IP address is that address (libtorrent's unwrap parses the
                # name as an address and drops the datagram only when that fails), but for
                # a scoped IPv6 one ("fe80::1%eth0"): ip_address takes it, PeerAddress
                # refuses it (a CompactError, a ValueError), the relay's word naming no
                # peer. Caught here: a hostile relay must not end our caller's reads.
                source = PeerAddress(
                    ip_address(host) if isinstance(host, str) else host, datagram.port
                ).normalized()
            except ValueError:
                self._dropped_malformed += 1
                continue
            self._received += 1
            return datagram.payload, source

    async def _keep_associated(self) -> None:
        """Associate, hold the association while the control connection lasts, and try again
        after a delay whenever it fails or ends; until cancelled."""
        delays = _retry_delays(self._retry_interval)
        while True:
            try:
                stream, relay = await self._associate()
            except SocksError as error:
                self._lost(error)
                _log.debug("no UDP association through %s: %s", self._proxy.url, error)
            else:
                async with stream:
                    # An association that came up starts the back-off afresh: its loss is
                    # waited out retry_interval first (libtorrent resets its delay too).
                    delays = _retry_delays(self._retry_interval)
                    self._up(relay)
                    try:
                        ended = await self._hold(stream)
                    except BaseException:
                        # Cancelled (a cancel from outside reached an unshielded keeper):
                        # closing the stream ends the association, so a send meanwhile must
                        # fail at once, not go into a relay the proxy has torn down.
                        self._lost(
                            SocksError(
                                f"the UDP association through {self._proxy.address} was ended",
                                errno_value=errno.ECONNABORTED,
                            )
                        )
                        raise
                    # Before closing the stream (a checkpoint): no send may go to a relay
                    # whose association is over while it closes.
                    self._lost(ended)
                _log.info("UDP association through %s ended: %s", self._proxy.url, ended)
            await trio.sleep(next(delays))

    def _up(self, relay: PeerAddress) -> None:
        self._relay = relay
        # Written as the system writes a datagram's source (inet_ntop: ipaddress writes a
        # mapped IPv6 address otherwise), so that one comparison recognises the relay.
        family = socket.AF_INET if relay.family == 4 else socket.AF_INET6
        self._relay_sockaddr = (socket.inet_ntop(family, relay.host.packed), relay.port)
        self._last_error = None
        self._associations += 1
        self._changed.set()
        self._changed = trio.Event()
        _log.info("UDP association through %s: relay %s", self._proxy.url, relay)

    def _lost(self, error: SocksError) -> None:
        self._relay = None
        self._relay_sockaddr = None
        self._last_error = error

    async def _associate(self) -> tuple[trio.SocketStream, PeerAddress]:
        """A control connection carrying a new association, and the relay's address.

        Raises:
            SocksError: the proxy's name could not be resolved (the resolver's error), the
                proxy could not be reached (it has no address of our socket's family:
                EHOSTUNREACH; the system refused a socket: EMFILE say), broke the protocol,
                refused us, named an unusable relay, or took longer than the timeout
                (ETIMEDOUT).
        """
        if self._send_local_endpoint:
            host: IPv4Address | IPv6Address = self._local.host
            port = self._local.port
        else:
            host = IPv4Address(0) if self._local.family == 4 else IPv6Address(0)
            port = 0
        client = Socks5Client(
            host,
            port,
            username=self._proxy.username,
            password=self._proxy.password,
            command=SocksCommand.UDP_ASSOCIATE,
        )
        family = socket.AF_INET if self._local.family == 4 else socket.AF_INET6
        # From our UDP socket's host when it is a specific one: the proxy takes datagrams
        # from the control connection's host (we name none: 0.0.0.0:0), so a control
        # connection leaving from another of our addresses would have our datagrams dropped.
        host_address = self._local.host
        local = () if host_address.is_unspecified else (host_address,)
        with trio.move_on_after(self._timeout):
            stream = await _connect_to_proxy(self._proxy, family, local)
            try:
                _keep_alive(stream.socket)
                await _negotiate(stream, client)
                relay = self._relay_of(stream, client)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
            return stream, relay
        raise SocksError(
            f"the proxy {self._proxy.address} did not set up a UDP association "
            f"within {self._timeout:g} s",
            errno_value=errno.ETIMEDOUT,
        )

    def _relay_of(self, stream: trio.SocketStream, client: Socks5Client) -> PeerAddress:
        """The relay a finished ``client`` names: its bound address, or the proxy's own when
        it is the unspecified address (as libtorrent). An IPv4-mapped one
        (``::ffff:a.b.c.d``: a dual-stack proxy naming its IPv4 relay so) is the IPv4
        address it embeds, where our IPv4 socket's datagrams go (an IPv6 socket of ours is
        IPv6-only: such a relay is of the other family for it).

        Raises:
            SocksProtocolError: a domain name, port 0, a multicast or broadcast address, or a
                family other than our socket's.
        """
        bound, bound_port = client.bound_host, client.bound
        # The conversation is done: both are set.
        assert bound is not None
        assert bound_port is not None
        if isinstance(bound, str):
            raise SocksProtocolError(
                f"the proxy named its UDP relay by a host name ({bound!r:.80}), not an address"
            )
        written = _written(bound)  # for the messages below, which show the IPv4 address
        bound = _unmapped(bound)
        if bound.is_unspecified:
            try:
                peer = stream.socket.getpeername()
            except OSError as error:  # reset already: no proxy address to fall back on
                raise SocksError(
                    f"the control connection to the proxy {self._proxy.address} broke: {error}",
                    errno_value=errno.ECONNRESET,
                ) from error
            bound = ip_address(str(peer[0]).partition("%")[0])
        relay = PeerAddress(bound, bound_port[1])
        if relay.port == 0:
            raise SocksProtocolError(f"the proxy named a UDP relay on port 0 ({relay}{written})")
        if not relay.is_connectable or relay.host == _BROADCAST:
            # Our datagrams would go to a group or the whole link, not to one relay.
            raise SocksProtocolError(
                f"the proxy named a UDP relay we cannot send to: {relay}{written} is not unicast"
            )
        if relay.family != self._local.family:
            raise SocksProtocolError(
                f"the proxy's UDP relay {relay}{written} is IPv{relay.family}, "
                f"our UDP socket {self._local} IPv{self._local.family}"
            )
        return relay

    async def _hold(self, stream: trio.SocketStream) -> SocksError:
        """Wait while the control connection stays open and quiet: what ended it."""
        try:
            data = await stream.receive_some(_CONTROL_READ)
        except (trio.BrokenResourceError, OSError) as error:
            cause = error.__cause__ if error.__cause__ is not None else error
            return SocksError(
                f"the control connection to the proxy {self._proxy.address} broke: {cause}",
                errno_value=errno.ECONNRESET,
            )
        if data:
            return SocksProtocolError(
                f"the proxy {self._proxy.address} sent {len(data)} bytes on the control "
                "connection of a UDP association"
            )
        return SocksError(
            f"the proxy {self._proxy.address} closed the control connection of the UDP association",
            errno_value=errno.ECONNRESET,
        )

    def _close(self) -> None:
        self._closed = True
        self._relay = None
        self._relay_sockaddr = None
        self._changed.set()  # waiters see the socket closed


def _keep_alive(sock: trio.socket.SocketType) -> None:
    """Have the system probe a control connection that stays quiet, as libtorrent does: the
    proxy says nothing on it, so a proxy (or a path) that died without a FIN or RST would
    otherwise leave us associated for ever, sending into a dead relay.

    Options a system lacks (or refuses) are skipped: keep-alive is then at its defaults.
    """
    # macOS calls the idle time TCP_KEEPALIVE.
    idle = "TCP_KEEPIDLE" if hasattr(socket, "TCP_KEEPIDLE") else "TCP_KEEPALIVE"
    # By name, for the log: an option's number means nothing to its reader.
    for level, name, value in (
        (socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
        (socket.IPPROTO_TCP, idle, _KEEPALIVE_IDLE),
        (socket.IPPROTO_TCP, "TCP_KEEPINTVL", _KEEPALIVE_INTERVAL),
        (socket.IPPROTO_TCP, "TCP_KEEPCNT", _KEEPALIVE_COUNT),
    ):
        option = getattr(socket, name, None)
        if option is None:
            continue
        try:
            sock.setsockopt(level, option, value)
        except OSError as error:
            _log.debug(
                "keep-alive option %s=%d on the control connection refused: %s", name, value, error
            )


@asynccontextmanager
async def open_socks5_udp_socket(
    proxy: ProxyConfig,
    *,
    bind: tuple[str, int] = ("0.0.0.0", 0),
    timeout: float = DEFAULT_SOCKS_TIMEOUT,
    retry_interval: float = 5.0,
    send_local_endpoint: bool = False,
    shielded: bool = False,
) -> AsyncIterator[Socks5UdpSocket]:
    """A UDP socket of ours whose datagrams go through ``proxy``'s UDP relay.

    The socket is bound at once and yielded before any association:
    :meth:`Socks5UdpSocket.wait_associated` waits for one (bound it). Leaving the block
    closes the UDP socket, the control connection and the background task. An IPv6 socket is
    IPv6-only (as the Handshaker's listeners): it reaches the proxy at its IPv6 addresses
    only and takes an IPv6 relay only; an IPv4 socket likewise (a proxy with no address of
    the socket's family is EHOSTUNREACH in :attr:`Socks5UdpSocket.last_error`). An
    IPv4-mapped address (``::ffff:a.b.c.d``: the proxy's, or the relay the proxy names) is
    IPv4 here, for an IPv4 socket (:func:`proxy_udp_family` says 4 for it). Bound to a
    specific host (``--bind 127.0.0.2``), the control connection leaves from that host too
    (port 0): a proxy relays only the datagrams of the control connection's host (Dante,
    ours in the tests), as libtorrent binds its proxy connections to its listen interface.

    Args:
        proxy: the SOCKS5 proxy (credentials as for TCP).
        bind: the host (an IP address) and port of our UDP socket (port 0: any free port).
        timeout: seconds one attempt to associate may take (the proxy's name, the connect,
            the negotiation).
        retry_interval: seconds before another attempt after a failure, doubled after each
            one in a row up to 60 s (``MAX_RETRY_INTERVAL``).
        send_local_endpoint: tell the proxy our UDP socket's address and port in the
            request (libtorrent's ``socks5_udp_send_local_ep``); else ``0.0.0.0:0``
            (``[::]:0`` for IPv6), as libtorrent: the proxy takes datagrams from our host.
        shielded: keep associating, and the association up, until the block is left, even
            once a cancel reached the block from outside (Ctrl-C, a deadline around it): for
            a caller whose own shielded work still sends and reads through the relay while
            it winds down (a tracker client's ``stopped``). Leaving the block ends it at
            once all the same. Else (the default) such a cancel ends the association with
            the block's other work, and :meth:`~Socks5UdpSocket.sendto` then refuses.

    Raises:
        ListenError: the UDP socket cannot be bound (not an IP address, port taken...).
        ValueError: ``timeout`` or ``retry_interval`` is not a positive number.
        TypeError: ``proxy`` is not a :class:`ProxyConfig`.
    """
    if not isinstance(proxy, ProxyConfig):
        raise TypeError(f"proxy must be a ProxyConfig, not {proxy!r}")
    for name, value in (("timeout", timeout), ("retry_interval", retry_interval)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    if not math.isfinite(retry_interval):
        raise ValueError(f"retry_interval must be finite, not {retry_interval!r}")
    if not isinstance(send_local_endpoint, bool):
        raise TypeError(f"send_local_endpoint is a bool, not {send_local_endpoint!r}")
    if not isinstance(shielded, bool):
        raise TypeError(f"shielded is a bool, not {shielded!r}")
    try:
        host, port = bind
        address = ip_address(host)
    except (TypeError, ValueError) as error:
        raise ListenError(
            f"cannot bind a UDP socket to {bind!r:.80}: not (IP address, port)"
        ) from error
    family = socket.AF_INET6 if isinstance(address, IPv6Address) else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_DGRAM)
    with sock:
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            await sock.bind((str(address), port))
        except (OSError, OverflowError, TypeError) as error:
            raise ListenError(f"cannot bind a UDP socket to {bind!r:.80}: {error}") from error
        bound = sock.getsockname()
        local = PeerAddress(ip_address(str(bound[0]).partition("%")[0]), bound[1])
        udp = Socks5UdpSocket(
            sock,
            local,
            proxy,
            timeout=float(timeout),
            retry_interval=float(retry_interval),
            send_local_endpoint=send_local_endpoint,
        )
        # Made before the task starts, so that a block left before it ran finds it cancelled
        # already; only leaving the block cancels it (the finally below).
        keeper = trio.CancelScope(shield=shielded)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_run_within, udp._keep_associated, keeper)
            try:
                yield udp
            finally:
                udp._close()
                keeper.cancel()
                nursery.cancel_scope.cancel()


async def _run_within(task: Callable[[], Awaitable[None]], scope: trio.CancelScope) -> None:
    """Run ``task`` within ``scope`` (shielded or not), which its opener cancels."""
    with scope:
        await task()


_FAMILY_MEMORY: Final = 60.0
"""Seconds :func:`proxy_udp_family` keeps what a proxy's name gave (or that it failed): the
sockets of one session ask one after another, and a name that hangs must not cost each its
own timeout."""
_FAMILY_MEMORY_SIZE: Final = 16
"""Proxy names remembered at once (the oldest forgotten first)."""


@dataclass(frozen=True)
class _Remembered:
    """What a proxy's name gave: a family, or a failure (its words, errno, and the timeout it
    had if it timed out), until ``until``. A failure is raised afresh each time (one
    exception object raised again would pile up every caller's traceback)."""

    until: float
    family: Literal[4, 6] | None
    message: str = ""
    errno_value: int | None = None
    timed_out_within: float | None = None


_families: trio.lowlevel.RunVar[dict[tuple[str, int], _Remembered]]
_families = trio.lowlevel.RunVar("bip_handshake.socks.proxy_families")


async def proxy_udp_family(
    proxy: ProxyConfig,
    *,
    timeout: float | None = None,
    fallback: Literal[4, 6] | None = None,
) -> Literal[4, 6]:
    """The address family to bind a UDP socket in for ``proxy``'s relay
    (:func:`open_socks5_udp_socket`'s ``bind``): its control connection goes to the proxy's
    addresses of the socket's family only, so a socket of the other family never associates.

    An IP literal is of its own family, an IPv4-mapped one (``::ffff:a.b.c.d``) IPv4: the
    control connection goes to the IPv4 address it embeds. A host name is resolved here,
    even under ``socks5h://`` (remote DNS keeps the targets' names from our resolver, not
    the proxy's own, which every connection to it resolves anyway): IPv4 when it has an
    IPv4 address (most peers, trackers and DHT nodes are IPv4, and a relay socket reaches
    its own family best: the DHT and uTP keep one socket per family), IPv6 when it has IPv6
    addresses alone (an IPv4-mapped address counting as IPv4).
    What a name gave, or that it failed, is remembered for a minute within the trio run.

    Args:
        proxy: the proxy.
        timeout: seconds the lookup may take (None: as long as the resolver takes).
        fallback: the family to answer when the name cannot be resolved (in time), the
            failure logged at INFO: a socket must be bound now, and the association's own
            attempts resolve the name again and say why they fail. None: raise.

    Raises:
        SocksError: without ``fallback``: the name could not be resolved (the resolver's
            error, with its errno where one fits; ETIMEDOUT past ``timeout``), or to no IPv4
            or IPv6 address (EHOSTUNREACH).
        TypeError: ``proxy`` is not a :class:`ProxyConfig`.
        ValueError: ``timeout`` is negative or NaN, or ``fallback`` is not 4, 6 or None.
    """
    if not isinstance(proxy, ProxyConfig):
        raise TypeError(f"proxy must be a ProxyConfig, not {proxy!r}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0
    ):
        raise ValueError(f"timeout is seconds >= 0 or None, not {timeout!r}")
    if not _is_family_or_none(fallback):
        raise ValueError(f"fallback is 4, 6 or None, not {fallback!r}")
    literal = _proxy_literal(proxy.host)
    if literal is not None:
        return 4 if literal.version == 4 else 6
    try:
        known = _families.get()
    except LookupError:  # the run's first question (a default would be shared by runs)
        known = {}
        _families.set(known)
    key = (proxy.host.lower(), proxy.port)
    remembered = known.get(key)
    if remembered is None or not _still_good(remembered, timeout):
        remembered = await _look_up_family(proxy, timeout)
        known.pop(key, None)
        while len(known) >= _FAMILY_MEMORY_SIZE:
            del known[next(iter(known))]
        known[key] = remembered
        if remembered.family is None and fallback is not None:
            _log.info("%s; its UDP relay is tried over IPv%d", remembered.message, fallback)
    if remembered.family is not None:
        return remembered.family
    if fallback is None:
        raise SocksError(remembered.message, errno_value=remembered.errno_value)
    return fallback


def _is_family_or_none(value: object) -> bool:
    """``value`` is 4, 6 (ints, not ``4.0`` or ``True``-like) or None."""
    return value is None or (type(value) is int and value in (4, 6))


def _still_good(remembered: _Remembered, timeout: float | None) -> bool:
    """Whether ``remembered`` answers a caller now: not expired, and not a timeout shorter
    than the caller's own (a patient caller looks again)."""
    if remembered.until <= trio.current_time():
        return False
    within = remembered.timed_out_within
    return within is None or (timeout is not None and timeout <= within)


async def _look_up_family(proxy: ProxyConfig, timeout: float | None) -> _Remembered:
    """:func:`_proxy_family` within ``timeout``, as something to remember (a cancelled lookup
    raises: nothing is remembered)."""
    try:
        with trio.fail_after(math.inf if timeout is None else timeout):
            family = await _proxy_family(proxy)
    except SocksError as error:
        until = trio.current_time() + _FAMILY_MEMORY
        return _Remembered(until, None, error.strerror or str(error), error.errno)
    except trio.TooSlowError:
        assert timeout is not None
        return _Remembered(
            trio.current_time() + _FAMILY_MEMORY,
            None,
            f"the proxy {proxy.host!r:.80} did not resolve within {timeout:g} s",
            errno.ETIMEDOUT,
            timed_out_within=timeout,
        )
    return _Remembered(trio.current_time() + _FAMILY_MEMORY, family)


async def _proxy_family(proxy: ProxyConfig) -> Literal[4, 6]:
    """:func:`proxy_udp_family`'s lookup of a name, unbounded and without a fallback."""
    try:
        infos = await trio.socket.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:  # UnicodeError: IDNA refused the name
        raise _unresolved(proxy, error) from error
    # IPv4 when we have a route to one of its IPv4 addresses (a host on an IPv6-only network
    # still gets A records), else IPv6 when we have one to an IPv6 address; with no route at
    # all, IPv4 if it has such an address (the attempts then say why). A resolver may list
    # other families (AF_UNIX) too. An IPv4-mapped address is IPv4, as the control
    # connection reaches it (_proxy_addresses). Bounded as every reader of a resolver's
    # answers: the first _MAX_ANSWERS, whatever a resolver answers.
    by_family: dict[int, list[tuple[Any, ...]]] = {socket.AF_INET: [], socket.AF_INET6: []}
    for family, _type, _proto, _name, sockaddr in infos[:_MAX_ANSWERS]:
        if family not in by_family:
            continue
        address = _literal(str(sockaddr[0]).partition("%")[0])
        if address is not None and address is not (mapped := _unmapped(address)):
            by_family[socket.AF_INET].append((str(mapped), sockaddr[1]))
        else:
            by_family[family].append(sockaddr)
    for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        found = by_family[family][:_MAX_TARGETS]
        if any(_routable(socket.AddressFamily(family), sockaddr) for sockaddr in found):
            return 4 if version == 4 else 6
    if by_family[socket.AF_INET]:
        return 4
    if by_family[socket.AF_INET6]:
        return 6
    raise SocksError(
        f"the proxy {proxy.host!r:.80} resolves to no IP address",
        errno_value=errno.EHOSTUNREACH,
    )


def _routable(family: socket.AddressFamily, sockaddr: tuple[Any, ...]) -> bool:
    """Whether this host has a route to ``sockaddr``: a UDP socket's connect picks a source
    address and sends nothing (RFC 6724's "avoid unusable destinations")."""
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(sockaddr)
    except OSError:
        return False
    return True
