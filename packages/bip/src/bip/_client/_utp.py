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
as a TCP connection would; every socket is given to the session's
:class:`~bip_handshake.PeerDialer`, which uses it for peers of its IP family.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Protocol, runtime_checkable

import trio

from bip_dht import DHTError
from bip_handshake import (
    Handshaker,
    ListenError,
    PeerAddress,
    PeerDialer,
    UtpConfig,
    UtpSocket,
    is_mtu_probe,
    open_utp_over,
    open_utp_socket,
)

__all__ = ["DatagramSharer", "UtpRouter", "open_session_utp"]

logger = logging.getLogger("bip.client")


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
) -> AsyncIterator[tuple[UtpSocket, ...]]:
    """uTP beside each of ``handshaker``'s listeners, for the duration of the block.

    Args:
        handshaker: where accepted streams go, and whose listeners name the ports.
        config: every uTP socket's settings.
        dialer: given every socket (``None``: outbound connections do not use uTP).
        dht: the session's DHT; shared when ``router`` is its ``other_datagrams`` and it is
            bound to a listener's address and port.
        router: the DHT's ``other_datagrams`` router, or None.
        dial_from: without any listener, the host (or hosts, one socket each) of sockets
            for outgoing connections only (``None``: no such socket). An IPv6 one is
            skipped where the system has no IPv6, and a failure to bind it is logged at
            DEBUG only (one IPv4 host and ``"::"`` is the usual pair).

    Yields the sockets, listening ones first.
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
        if dialer is not None:
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
            for utp in sockets:
                dialer.add_utp(utp)
                stack.callback(dialer.remove_utp, utp)
        yield tuple(sockets)
