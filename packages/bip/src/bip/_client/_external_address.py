"""The session's external address: learnt from who sees us, and recognised as ours.

Listening on ``0.0.0.0`` / ``::`` (the default), the addresses we listen on are never the ones
peers see; a PEX list naming our public ``ip:port`` would be taken and dialled (a dial to
ourselves) and a BEP 55 rendezvous for it relayed. As libtorrent does with its ``ip_voter``,
:class:`ExternalAddresses` feeds bip_handshake's :class:`~bip_handshake.ExternalIPVoter` from:

- each peer's BEP 10 extended handshake ``yourip`` (it is a peer manager service: it sees
  every extended handshake, consumes none), but for peers dialled through a proxy, which
  see the proxy's address;
- HTTP trackers' BEP 24 ``external ip`` (:meth:`ExternalAddresses.tracker_vote`, called by
  the tracker announcer);
- the DHT's decided BEP 42 address, and the NAT-PMP gateway's external address (when the
  session maps its ports), read at the manager's ticks.

Once the voter decides a family's IP, ``ip:port`` for each of our listening ports (TCP and
uTP), and each external port the gateway maps for us (:meth:`ExternalAddresses.set_mapped_ports`),
becomes one of our addresses for PEX (every peer's inbox, now and later) and the holepunch
service (a rendezvous for it refused, a connect to it ignored); when the IP changes the old
ones are dropped. A user keeps the addresses it was given at construction apart (the session
gives PEX its listening addresses): one the voter decides and later drops (a seedbox that
listens on its public address, whose IP the voter then sees change) stays ours, as libtorrent
keeps its listen endpoints apart from its ``ip_voter``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from ipaddress import IPv4Address, IPv6Address
from typing import ClassVar, Final, Protocol

import trio

from bip_handshake import ExternalIPVoter, Family, PeerAddress, VoteSource
from bip_peer import ExtendedHandshake, Peer, PeerManager

__all__ = ["DHT_VOTE_INTERVAL", "ExternalAddresses", "OurAddressesLike"]

logger = logging.getLogger("bip.client")

DHT_VOTE_INTERVAL: Final = 60.0
"""Seconds between two votes of the DHT's (or the NAT-PMP gateway's) address while it disagrees
with ours (one vote per round counts; asking more often only fills the voter's "repeat"
counter)."""

_IP = IPv4Address | IPv6Address


class OurAddressesLike(Protocol):
    """Something that must know our addresses (PEX, the holepunch service)."""

    def add_our_address(self, address: PeerAddress) -> None:
        """Take ``address`` as ours."""
        ...

    def remove_our_address(self, address: PeerAddress) -> None:
        """No longer take ``address`` as ours, unless it was ours before it was added (an
        address we listen on)."""
        ...


class ExternalAddresses:
    """The session's external address: votes in, our addresses out (a peer manager service).

    Args:
        voter: counts the votes (bip_handshake's; a test on loopback passes one with
            ``accept_local=True``).
        ports: our listening ports (TCP and uTP), fixed once the session is open; zeros
            (not listening) and repeats are left out.
        users: told of our external ``ip:port`` addresses as they come and go (PEX, the
            holepunch service); more can be added with :meth:`add_user`.
        dht_addresses: the DHT's decided address per family now (bip_dht's
            ``DHT.node.external_addresses``), or ``None`` without a DHT.
        outbound_peer_votes: count the ``yourip`` of the peers we dialled (the default);
            False when we dial them through a proxy: they see the proxy's exit address,
            not ours (the peers that dialled us still vote).
    """

    # The peer manager asks it about these alone (their yourip are votes).
    message_types: ClassVar[tuple[type, ...]] = (ExtendedHandshake,)

    def __init__(
        self,
        voter: ExternalIPVoter,
        *,
        ports: Iterable[int],
        users: Iterable[OurAddressesLike] = (),
        dht_addresses: Callable[[], Mapping[Family, PeerAddress]] | None = None,
        outbound_peer_votes: bool = True,
    ) -> None:
        self.voter = voter
        """The voter (read its ``decided`` and ``statistics()``)."""
        self._listening = frozenset(port for port in ports if port)
        self._ports = tuple(sorted(self._listening))
        self._users: list[OurAddressesLike] = list(users)
        self._dht_addresses = dht_addresses
        self._outbound_peer_votes = outbound_peer_votes
        # The NAT-PMP gateway's external address now: set_router_address.
        self._router_address: Callable[[], IPv4Address | None] | None = None
        self._ours: dict[Family, tuple[PeerAddress, ...]] = {}
        # (source, family) -> (the address last voted, when)
        self._voted: dict[tuple[VoteSource, Family], tuple[_IP, float]] = {}

    @property
    def addresses(self) -> tuple[PeerAddress, ...]:
        """Our external addresses: each decided IP (IPv4 first) with each listening port."""
        return tuple(a for family in sorted(self._ours) for a in self._ours[family])

    def set_router_address(self, router_address: Callable[[], IPv4Address | None]) -> None:
        """Read the NAT-PMP gateway's external address from ``router_address`` at each tick
        from now on (it gives ``None`` until the gateway says)."""
        self._router_address = router_address

    def set_mapped_ports(self, ports: Iterable[int]) -> None:
        """The external ports the NAT gateway forwards to us now (TCP and UDP; empty when
        none): with each decided IP they are our addresses too, besides our listening ports.
        Our users hear of the addresses gained and lost."""
        new = tuple(sorted(self._listening | {port for port in ports if port}))
        if new == self._ports:
            return
        self._ports = new
        for family in list(self._ours):
            self._replace(family, self.voter.address(family))

    def add_user(self, user: OurAddressesLike) -> None:
        """Tell ``user`` our external addresses, now and as they change."""
        self._users.append(user)
        for address in self.addresses:
            user.add_our_address(address)

    def vote(
        self, reported: _IP, voter: PeerAddress | _IP | None, source: VoteSource, now: float
    ) -> None:
        """Count one vote (see :meth:`~bip_handshake.ExternalIPVoter.vote`) and act on a
        decision."""
        changed = self.voter.vote(reported, voter, source=source, now=now)
        if changed is not None:
            self._decided(changed)

    def tracker_vote(self, reported: _IP, tracker: PeerAddress | _IP | None) -> None:
        """An HTTP tracker at ``tracker`` (its address, if known) says it sees us at
        ``reported`` (BEP 24)."""
        self.vote(reported, tracker, VoteSource.TRACKER, trio.current_time())

    # -- PeerService -------------------------------------------------------------------------

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        """Nothing: the manager sends every peer its ``yourip`` already."""
        return {}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        """Nothing to do: the vote comes with the peer's extended handshake."""

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        """A peer's extended handshake: its ``yourip`` is a vote (not that of a peer we dialled
        through a proxy). Consumes nothing."""
        if isinstance(message, ExtendedHandshake) and (
            self._outbound_peer_votes or peer.direction != "outbound"
        ):
            reported = message.yourip_address
            if reported is not None:
                self.vote(reported, peer.address, VoteSource.PEER, trio.current_time())
        return False

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        """Nothing to forget: votes are the voter's, by IP."""

    def tick(self, manager: PeerManager, now: float) -> None:
        """End the voter's rounds that ran out, and take the DHT's address as a vote."""
        for decided in self.voter.handle_timer(now).values():
            self._decided(decided)
        if self._dht_addresses is not None:
            for address in self._dht_addresses().values():
                self._source_vote(address.normalized().host, VoteSource.DHT, now)
        if self._router_address is not None:
            router = self._router_address()
            if router is not None:
                self._source_vote(router, VoteSource.ROUTER, now)

    # -- internals ---------------------------------------------------------------------------

    def _source_vote(self, host: _IP, source: VoteSource, now: float) -> None:
        """A vote of a source with no address of its own (the DHT, the gateway), repeated
        while it disagrees with our address, at most every :data:`DHT_VOTE_INTERVAL`."""
        family: Family = 4 if isinstance(host, IPv4Address) else 6
        if host == self.voter.address(family):
            return  # nothing to learn
        last = self._voted.get((source, family))
        if last is not None and last[0] == host and now < last[1] + DHT_VOTE_INTERVAL:
            return
        self._voted[(source, family)] = (host, now)
        self.vote(host, None, source, now)

    def _decided(self, host: _IP) -> None:
        family: Family = 4 if isinstance(host, IPv4Address) else 6
        self._replace(family, host)
        logger.info(
            "our external IPv%d address is %s (peers, trackers, the DHT and the gateway agree)",
            family,
            host,
        )

    def _replace(self, family: Family, host: _IP | None) -> None:
        """Our addresses of ``family`` become ``host`` with each of our ports (none without
        a host); users hear of the changes."""
        old = self._ours.get(family, ())
        new = () if host is None else tuple(PeerAddress(host, port) for port in self._ports)
        for address in old:
            if address not in new:
                for user in self._users:
                    user.remove_our_address(address)
        for address in new:
            if address not in old:
                for user in self._users:
                    user.add_our_address(address)
        self._ours[family] = new
