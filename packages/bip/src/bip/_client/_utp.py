"""uTP (BEP 29) for a session: the UDP sockets beside its TCP listeners, and the DHT's port.

For each TCP listener the session accepts uTP on the UDP port of the same number, as
libtorrent does. When the session's DHT is bound to that very address and port (BEP 5's
habit: ``bip download`` binds both to ``--port``), uTP shares the DHT's socket: the DHT
hands every datagram that is not KRPC to a :class:`UtpRouter`, and uTP sends through
``DHT.send_datagram``. Otherwise uTP binds a socket of its own; if that port is taken, a
WARNING says so and uTP goes on from an ephemeral port, for outgoing connections only.
A session with no listener at all dials uTP from ephemeral ports of its own: one on
``0.0.0.0`` and, where the system has IPv6, one on ``::`` (a failure to bind that one is
only logged at DEBUG: many hosts have no IPv6), so that IPv6 peers are reached too.
Those outgoing-only sockets accept nothing (``accept_incoming=False``): a stray SYN gets
a RESET and leaves no state behind.

Every accepted uTP stream goes to the handshaker (:meth:`~bip_handshake.Handshaker.accept_stream`),
as a TCP connection would; one socket of each IP family is given to the session's
:class:`~bip_handshake.PeerDialer`, which uses it for peers of that family: the one on the
dialer's local address of that family (``--bind``'s first), else the first of the family,
so that uTP and TCP dials leave from the same address.

Through a SOCKS5 proxy (peers dialled through it), uTP is dialled through the proxy's UDP
relay, as libtorrent does: one UDP socket of ours associated with the proxy
(:func:`~bip_handshake.open_socks5_udp_socket`), uTP over it
(:func:`~bip_handshake.open_utp_over`, fed what the relay returns), and that socket alone is
given to the dialer, with a check that refuses a connect at once while no association is up
(the proxy refuses UDP, or is not answering yet): the dial goes on over TCP, through the
proxy too. Nothing is dialled directly: the listening sockets still accept uTP peers, but
the dialer never gets them, and no outgoing-only socket is opened. The relay socket is of
the proxy's IP family (:func:`~bip_handshake.proxy_udp_family`'s: an IPv4-mapped literal,
``socks5://[::ffff:10.0.0.1]``, is IPv4), bound to the session's outgoing address when
that is a specific one of that family (``--bind 127.0.0.2``: the control connection then
leaves from there too, the host the proxy relays for), and dials the peers of that family
only; its datagrams leave room for SOCKS5's header. A peer dialled is always an address
(with ``socks5h://`` the peers trackers name by host name are dropped before any dial, as
for TCP), so the relay is given addresses, never names.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from ipaddress import ip_address
from typing import Final, Protocol, runtime_checkable

import trio

from bip_dht import DHTError
from bip_handshake import (
    DEFAULT_SOCKS_TIMEOUT,
    MIN_DATAGRAM,
    Handshaker,
    ListenError,
    PeerAddress,
    PeerDialer,
    ProxyConfig,
    Socks5UdpSocket,
    SocksUnavailableError,
    UtpConfig,
    UtpSocket,
    is_mtu_probe,
    open_socks5_udp_socket,
    open_utp_over,
    open_utp_socket,
    proxy_udp_family,
)

from ._local_hosts import first_of_each_family

__all__ = ["DatagramSharer", "UtpRouter", "open_session_utp"]

logger = logging.getLogger("bip.client")

_SOCKS_OVERHEAD: Final = {4: 10, 6: 22}
"""Bytes a uTP datagram to a peer of each IP family gives up through a SOCKS5 relay: the
header, 10 bytes before an IPv4 address and 22 before an IPv6 one (libtorrent's
``mtu_for_dest``: 1462 for an IPv4 peer). Nothing more: the relay socket dials only the peers
of its own family (the dialer keys uTP sockets by family) and associates only with a relay
of that family, so both legs carry the same IP header."""
_IPV6_MIN_PAYLOAD: Final = 1280 - 40 - 8
"""The UDP payload every IPv6 path carries: the 1280-byte minimum MTU less the IPv6 and UDP
headers."""
_FEED_PAUSE: Final = 1.0
"""Seconds the relay's reader waits after the system failed a read (not an ICMP error),
so that a persistent failure is logged once a second, not spun on."""


@runtime_checkable
class DatagramSharer(Protocol):
    """A DHT whose UDP sockets uTP can share (bip_dht's ``DHT`` is one)."""

    @property
    def addresses(self) -> tuple[PeerAddress, ...]:
        """Where its sockets are bound."""
        ...

    async def send_datagram(
        self, data: bytes, address: PeerAddress, *, dont_fragment: bool = False
    ) -> None:
        """Send one datagram from its socket of ``address``'s family (``dont_fragment``: a
        path MTU probe, sent with "don't fragment" where the system lets us)."""
        ...


class UtpRouter:
    """Takes the DHT's datagrams that are not KRPC (``open_dht(other_datagrams=...)``) and
    gives each to the uTP socket sharing the DHT's socket of its IP family.

    The DHT opens before the session, and the session's uTP sockets after its listeners:
    until a socket of the datagram's family is attached, datagrams are dropped (and counted)
    as a closed port would drop them; uTP retransmits.
    """

    def __init__(self) -> None:
        self._targets: dict[int, UtpSocket] = {}
        self._dropped = 0

    @property
    def dropped(self) -> int:
        """Datagrams that arrived while no uTP socket of their family was attached."""
        return self._dropped

    def attach(self, utp: UtpSocket) -> None:
        """Route datagrams of ``utp``'s IP family (its local address's) to it."""
        self._targets[utp.local_address.family] = utp

    def detach(self, utp: UtpSocket) -> None:
        """Stop routing to ``utp`` (before it closes); an unknown socket is ignored."""
        family = utp.local_address.family
        if self._targets.get(family) is utp:
            del self._targets[family]

    def datagram_received(self, data: bytes, address: PeerAddress) -> None:
        """The DHT's ``other_datagrams`` callback: never blocks, never raises for bad data."""
        target = self._targets.get(address.family)
        if target is None:
            self._dropped += 1
            return
        target.datagram_received(data, address)


def _sender(dht: DatagramSharer) -> Callable[[bytes, PeerAddress], Awaitable[None]]:
    """``dht.send_datagram`` with the DHT's errors made what uTP takes for a lost datagram,
    and its path MTU probes sent as probes ("don't fragment")."""

    async def send(data: bytes, address: PeerAddress) -> None:
        try:
            await dht.send_datagram(data, address, dont_fragment=is_mtu_probe(data))
        except DHTError as error:
            # No socket of that family, a refused send, a DHT closing first: to uTP these are
            # lost datagrams (an OSError is counted and logged at DEBUG), never a crash. The
            # system's errno goes along: EMSGSIZE tells uTP to send smaller.
            cause = error.__cause__
            code = cause.errno if isinstance(cause, OSError) else None
            raise OSError(code, f"the DHT's socket did not send it: {error}") from error

    return send


def _shared_address(
    dht: object, router: UtpRouter | None, listen: PeerAddress
) -> PeerAddress | None:
    """The DHT's address equal to ``listen`` when uTP may share that socket, else None."""
    if router is None or not isinstance(dht, DatagramSharer):
        return None
    for address in dht.addresses:
        if address.normalized() == listen:
            return address
    return None


def _relayed_config(config: UtpConfig, family: int) -> UtpConfig:
    """``config`` for uTP through a SOCKS5 relay of IP version ``family`` (4 or 6): path MTU
    ceilings that leave room for the relay's header, never below the floor.

    Through an IPv6 relay the floor (``min_datagram``, sent before any probe) shrinks so
    that it and the header still fit IPv6's 1280-byte minimum MTU, never below IPv4's 548
    (:data:`~bip_handshake.MIN_DATAGRAM`): an IPv6 router drops what is larger, and a lost
    first datagram is a lost SYN. An IPv4 relay keeps the floor: IPv4 promises only 576
    bytes anyway, the floor there is "what every sane path carries", and 10 more bytes
    (1270 in all) stay under the 1280 such paths are trusted with.
    """
    floor = config.min_datagram
    if family == 6:
        floor = max(MIN_DATAGRAM, min(floor, _IPV6_MIN_PAYLOAD - _SOCKS_OVERHEAD[6]))
    return replace(
        config,
        min_datagram=floor,
        max_datagram_v4=max(floor, config.max_datagram_v4 - _SOCKS_OVERHEAD[4]),
        max_datagram_v6=max(floor, config.max_datagram_v6 - _SOCKS_OVERHEAD[6]),
    )


async def _relay_bind(proxy: ProxyConfig, timeout: float) -> tuple[str, int]:
    """Where the relay socket binds: in the proxy's IP family (the control connection goes to
    its addresses of our socket's family alone; for a name, IPv4 when it has a routable IPv4
    address, and IPv4 when it does not resolve within ``timeout``: the association's attempts
    then say why: :func:`~bip_handshake.proxy_udp_family`)."""
    family = await proxy_udp_family(proxy, timeout=timeout, fallback=4)
    return ("::", 0) if family == 6 else ("0.0.0.0", 0)


def _bound_to(bind: tuple[str, int], local: str | Sequence[str] | None) -> tuple[str, int]:
    """``bind`` on the session's outgoing address of its family (``local``: one address or
    several, ``--bind``'s) in place of its unspecified host: the relay's control connection
    then leaves from there too. The first address of that family counts
    (:func:`.first_of_each_family`: an unspecified one leaves ``bind`` as it is, as the
    dialers let the system pick; an IPv4-mapped one is IPv4); a host name is skipped.

    >>> _bound_to(("0.0.0.0", 0), "127.0.0.2"), _bound_to(("::", 0), "127.0.0.2")
    (('127.0.0.2', 0), ('::', 0))
    >>> _bound_to(("::", 0), ("127.0.0.2", "::1", "::2"))
    ('::1', 0)
    """
    try:
        host = ip_address(bind[0])
    except ValueError:  # a name: the system picks, as for the direct dialer
        return bind
    if not host.is_unspecified:
        return bind
    first = first_of_each_family(local).get(host.version)
    return bind if first is None else (str(first), bind[1])


def _relay_check(udp: Socks5UdpSocket) -> Callable[[], int]:
    """The dialer's check of the relay's uTP socket: refuses at once while not associated,
    and names the association a connect leaves on (how many there were so far: a lost one
    and its successor differ), so that a connect or a connection that died with it is not
    blamed on the peer."""

    def check() -> int:
        if not udp.associated:
            why = "not set up yet" if udp.last_error is None else str(udp.last_error)
            raise SocksUnavailableError(
                f"no UDP association through the proxy {udp.proxy.address} for uTP: {why}"
            )
        return udp.statistics.associations

    return check


async def _feed(udp: Socks5UdpSocket, utp: UtpSocket) -> None:
    """Hand every datagram the relay returns to ``utp``, until cancelled or closed.

    One datagram at a time, each pumped on its own (an ack per DATA, where a socket of our
    own reads bursts and acks each once): :meth:`Socks5UdpSocket.recvfrom` awaits every
    read and has no call that takes what is queued without waiting, and uTP's burst intake
    is private to its socket. Acks are small and the relay's rate is the proxy's: left so
    until the relay socket can hand over a burst.

    The sources come normalized (:meth:`~bip_handshake.Socks5UdpSocket.recvfrom`): a relay
    writing an IPv4 peer as ``::ffff:a.b.c.d`` still names the address uTP dialled, which
    keys the connection (else its SYN-ACK would be an unknown connection's, answered by a
    RESET)."""
    while True:
        try:
            data, source = await udp.recvfrom()
        except trio.ClosedResourceError:
            return
        except OSError as error:
            logger.warning("reading from the SOCKS5 UDP relay failed: %s", error)
            await trio.sleep(_FEED_PAUSE)
            continue
        utp.datagram_received(data, source)


async def _open_relayed(
    stack: AsyncExitStack,
    nursery: trio.Nursery,
    proxy: ProxyConfig,
    config: UtpConfig,
    timeout: float | None,
    *,
    local: str | Sequence[str] | None,
) -> tuple[UtpSocket, Callable[[], int]]:
    """uTP over a UDP socket associated with ``proxy`` (in ``stack``), bound to ``local``'s
    address of the relay's family (:func:`_bound_to`), for dialling out only, its reader
    started in ``nursery``; and the dialer's check of it.

    Raises:
        ListenError: the relay socket cannot be bound.
    """
    wait = DEFAULT_SOCKS_TIMEOUT if timeout is None else timeout
    bind = _bound_to(await _relay_bind(proxy, wait), local)
    socks = open_socks5_udp_socket(proxy, bind=bind, timeout=wait)
    udp = await stack.enter_async_context(socks)
    # Nobody can reach us there (the relay passes only what answers our own datagrams): a
    # SYN gets a RESET, no connection.
    # uTP's datagrams go out by the relay socket's own sendto (a SocksUnavailableError while
    # not associated is an OSError: a lost datagram to uTP). Path MTU probes go as any
    # datagram: the relay socket cannot set "don't fragment", so on our leg a probe larger
    # than its MTU is fragmented by our system and reassembled by the proxy, and a probe that
    # arrives shows that datagrams of its size reach the peer, not that they do so whole. That
    # still works (a datagram arrives or is lost as a whole), our leg is usually one 1500-byte
    # link to a nearby proxy where the ceilings above fit, and probing is kept for the far
    # leg, whose MTU is the one unknown.
    utp = await stack.enter_async_context(
        open_utp_over(
            udp.sendto,
            udp.local_address,
            config=_relayed_config(config, udp.local_address.family),
            accept_incoming=False,
        )
    )
    nursery.start_soon(_feed, udp, utp, name=f"bip utp relay {proxy.address}")
    logger.debug("dialling uTP through the SOCKS5 proxy %s from %s", proxy.url, udp.local_address)
    return utp, _relay_check(udp)


def _dialling_sockets(
    sockets: Sequence[UtpSocket], local_addresses: Sequence[str]
) -> tuple[UtpSocket, ...]:
    """The socket of each IP family the dialer connects from: the one bound to its address of
    that family (``local_addresses``: the dialer's, ``--bind``'s first of each family), else
    the first of the family (listening ones come first). TCP connects then leave from the same
    address as uTP ones, with several listeners of one family."""
    chosen: dict[int, UtpSocket] = {}
    for utp in sockets:
        if str(utp.local_address.host) in local_addresses:
            chosen.setdefault(utp.local_address.family, utp)
    for utp in sockets:
        chosen.setdefault(utp.local_address.family, utp)
    return tuple(chosen.values())


async def _accept(utp: UtpSocket, handshaker: Handshaker) -> None:
    """Give every uTP connection a peer opens to the handshaker, as a TCP one (marked uTP)."""
    async for stream in utp.incoming():
        handshaker.accept_stream(stream, stream.remote_address, transport="utp")


@asynccontextmanager
async def open_session_utp(
    handshaker: Handshaker,
    config: UtpConfig,
    *,
    dialer: PeerDialer | None,
    dht: object = None,
    router: UtpRouter | None = None,
    dial_from: str | Sequence[str] | None = None,
    proxy: ProxyConfig | None = None,
    proxy_timeout: float | None = None,
    proxy_local: str | Sequence[str] | None = None,
) -> AsyncIterator[tuple[UtpSocket, ...]]:
    """uTP beside each of ``handshaker``'s listeners, for the duration of the block.

    Args:
        handshaker: where accepted streams go, and whose listeners name the ports.
        config: every uTP socket's settings.
        dialer: given one socket of each IP family (``None``: outbound connections do not
            use uTP): the one on its ``local_addresses``' address of that family, else the
            first.
        dht: the session's DHT; shared when ``router`` is its ``other_datagrams`` and it is
            bound to a listener's address and port.
        router: the DHT's ``other_datagrams`` router, or None.
        dial_from: without any listener, the host (or hosts, one socket each) of sockets
            for outgoing connections only (``None``: no such socket). An IPv6 one is
            skipped where the system has no IPv6, and a failure to bind it is logged at
            DEBUG only (one IPv4 host and ``"::"`` is the usual pair).
        proxy: the SOCKS5 proxy peers are dialled through: the ``dialer`` then dials uTP
            through its UDP relay only (a socket opened for it), never from the listening
            sockets nor from ``dial_from``'s, which are not opened.
        proxy_timeout: seconds one attempt to associate with ``proxy`` may take (``None``:
            :func:`~bip_handshake.open_socks5_udp_socket`'s default).
        proxy_local: the IP address the relay socket binds to (its control connection to
            ``proxy`` leaving from there too) when it is of the relay's family: the session's
            outgoing address (``--bind``); or several, the first of the relay's family
            counting (a session listening on a host of each family:
            ``("10.8.0.2", "fd00::2")``). ``None``, none of that family, or an unspecified
            first one: the unspecified address of the relay's family.

    Yields the sockets, listening ones first (the relay's, with a ``dialer`` and a
    ``proxy``, last; when it cannot be bound, a WARNING says so and peers are dialled over
    TCP alone).
    """
    sockets: list[UtpSocket] = []
    async with AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        # Registered first, so it runs last: the tasks end before the sockets close.
        stack.callback(nursery.cancel_scope.cancel)
        outgoing_hosts: list[str] = []
        optional_hosts: set[str] = set()  # dial_from's IPv6 hosts: quiet when unavailable
        for listen in handshaker.listen_addresses:
            shared = _shared_address(dht, router, listen)
            if shared is not None:
                assert router is not None
                assert isinstance(dht, DatagramSharer)
                utp = await stack.enter_async_context(
                    open_utp_over(_sender(dht), shared, config=config)
                )
                router.attach(utp)
                stack.callback(router.detach, utp)
                logger.debug("uTP shares the DHT's socket on %s", shared)
            else:
                try:
                    utp = await stack.enter_async_context(
                        open_utp_socket((str(listen.host), listen.port), config=config)
                    )
                except (ListenError, OSError) as error:  # taken; or no socket at all (EMFILE)
                    logger.warning(
                        "cannot accept uTP peers on UDP %s (%s): going on with TCP only for "
                        "incoming peers",
                        listen,
                        error.__cause__ or error,
                    )
                    outgoing_hosts.append(str(listen.host))
                    continue
                logger.debug("accepting uTP peers on UDP %s", utp.local_address)
            sockets.append(utp)
            nursery.start_soon(_accept, utp, handshaker, name=f"bip utp accept {listen}")
        if not handshaker.listen_addresses and dial_from is not None:
            for host in (dial_from,) if isinstance(dial_from, str) else dial_from:
                if ":" in host:
                    if not socket.has_ipv6:
                        logger.debug("no outgoing uTP from %s: this Python has no IPv6", host)
                        continue
                    optional_hosts.add(host)
                outgoing_hosts.append(host)
        if dialer is not None and proxy is not None:
            try:
                relayed, check = await _open_relayed(
                    stack, nursery, proxy, config, proxy_timeout, local=proxy_local
                )
            except (ListenError, OSError) as error:  # no socket at all (EMFILE...)
                logger.warning(
                    "no uTP dials through the SOCKS5 proxy %s (%s): peers are dialled over "
                    "TCP only",
                    proxy.url,
                    error.__cause__ or error,
                )
            else:
                sockets.append(relayed)
                dialer.add_utp(relayed, check=check)
                stack.callback(dialer.remove_utp, relayed)
        elif dialer is not None:
            for host in outgoing_hosts:
                try:
                    # Nobody was told this port: a SYN to it gets a RESET, no connection.
                    utp = await stack.enter_async_context(
                        open_utp_socket((host, 0), config=config, accept_incoming=False)
                    )
                except (ListenError, OSError) as error:
                    level = logging.DEBUG if host in optional_hosts else logging.WARNING
                    logger.log(level, "no outgoing uTP from %s: %s", host, error.__cause__ or error)
                    continue
                sockets.append(utp)
            for utp in _dialling_sockets(sockets, dialer.local_addresses):
                dialer.add_utp(utp)
                stack.callback(dialer.remove_utp, utp)
        yield tuple(sockets)
