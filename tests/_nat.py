"""A simulated port-restricted cone NAT in front of one bip session's UDP, for the BEP 55
holepunch tests: bip-only (tests/bip/test_session_holepunch.py) and with libtorrent as the
relay (tests/interop/test_holepunch_client_libtorrent.py).

Imported as ``tests._nat``: the root conftest puts the repository's root on ``sys.path``
(tests/bip is no package, tests/interop is one, and both can reach ``tests`` so, as mypy
does from the repository's root).

The NAT takes the place of the session's DHT, whose UDP socket uTP shares (the session's seam
for "uTP over someone else's socket"): the session's uTP socket is "bound" at the inside
address, but every datagram it sends leaves from the NAT's public address (same port
number: a port-preserving NAT, as most home routers are); a datagram arriving there reaches
the session only from an address the session has sent to before, and the others are dropped
and counted. Nothing listens on TCP at the public address, so only a holepunch gets a peer in.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, ip_address
from typing import NoReturn

import trio

from bip._client import ClientConfig, Session, open_session
from bip._client._utp import UtpRouter
from bip_handshake import IPFilter, ListenError, PeerAddress, PeerSink

__all__ = ["RestrictedConeNat", "session_behind_nat"]

_PORT_TRIES = 20  # a port free on both hosts is found at once in practice


class RestrictedConeNat:
    """A port-restricted cone NAT for one host's UDP, in the shape of a DHT whose socket uTP
    shares.

    Attributes:
        addresses: the inside address (the DHT's "own" address, where uTP says it is bound).
        router: the uTP router the session is given: what the holes let in goes to it.
        opened: the addresses the inside host has sent to (the holes).
        dropped: the sources of the datagrams the NAT dropped, in order.
        let_in: datagrams let in.
    """

    def __init__(self, sock: trio.socket.SocketType, inside: PeerAddress) -> None:
        self._socket = sock
        self.addresses = (inside,)
        self.router = UtpRouter()
        self.opened: set[PeerAddress] = set()
        self.dropped: list[PeerAddress] = []
        self.let_in = 0

    @property
    def public(self) -> PeerAddress:
        """Where the world sees the inside host: the NAT's socket."""
        host, port = self._socket.getsockname()[:2]
        return PeerAddress(ip_address(host), port)

    async def send_datagram(
        self, data: bytes, address: PeerAddress, *, dont_fragment: bool = False
    ) -> None:
        """The inside host sends: the NAT opens a hole for ``address`` and forwards from its
        public port."""
        self.opened.add(address.normalized())
        await self._socket.sendto(data, (str(address.host), address.port))

    async def run(self) -> None:
        """Forward what the holes let in to the inside host's uTP socket; drop the rest."""
        while True:
            data, (host, port, *_) = await self._socket.recvfrom(65536)
            source = PeerAddress(ip_address(host), port)
            if source in self.opened:
                self.let_in += 1
                self.router.datagram_received(data, source)
            else:
                self.dropped.append(source)

    # What the session asks of a DHT: nothing to find, nothing to announce.
    async def keep_finding(
        self,
        info_hash: bytes,
        *,
        interval: float,
        announce: bool,
        port: int | None,
        seed: bool,
        sink: PeerSink | None,
    ) -> NoReturn:
        """Find nobody, announce nowhere, until cancelled."""
        await trio.sleep_forever()

    def add_node(self, address: PeerAddress) -> None:
        """Keep no node."""

    def set_ip_filter(self, ip_filter: IPFilter | None) -> int:
        """Filter no node: there are none."""
        return 0


@asynccontextmanager
async def session_behind_nat(
    public: str, inside: str, config: Callable[[str, int], ClientConfig]
) -> AsyncIterator[tuple[Session, RestrictedConeNat]]:
    """A session at ``inside`` whose UDP goes through a NAT at ``public`` (same port), with
    nothing listening on TCP at the NAT's address.

    ``config(inside, port)`` gives the session's configuration: it must listen at
    ``(inside, port)`` only and prefer uTP. A port taken on either host is tried again
    with another, a bounded number of times.
    """
    for _ in range(_PORT_TRIES):
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind((public, 0))
        port = sock.getsockname()[1]
        nat = RestrictedConeNat(sock, PeerAddress(IPv4Address(inside), port))
        try:
            async with (
                trio.open_nursery() as nursery,
                open_session(config(inside, port), dht=nat, utp_router=nat.router) as session,
            ):
                nursery.start_soon(nat.run)
                [utp] = session.utp_sockets
                assert utp.local_address == nat.addresses[0]  # uTP rides on the NAT
                yield session, nat
                nursery.cancel_scope.cancel()
            return
        except ListenError:  # the TCP port is taken on the inside host: another port
            continue
        except BaseExceptionGroup as group:
            # The same, out of a nursery of the session's (its uTP socket's) or of ours.
            if group.split(ListenError)[1] is not None:
                raise
            continue
        finally:
            sock.close()
    raise AssertionError("no port free on both hosts")
