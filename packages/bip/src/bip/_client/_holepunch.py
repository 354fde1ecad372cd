"""BEP 55 holepunching in the client: which failed dials ask for a rendezvous, and what a
connect makes us do (:class:`HolepunchPolicy`).

bip_peer's :class:`~bip_peer.HolepunchService` speaks ``ut_holepunch`` (relays rendezvous
for our peers, sends ours, hands on connects); this module decides when to use it, as
libtorrent does:

- a dial to an address learnt from PEX fails (bip_handshake's ``on_dial_failed``): if a
  connected peer that listed it (:meth:`~bip_peer.PeerExchange.relay_for`) offered
  ``ut_holepunch`` and flagged the address as speaking it too, that peer is asked for a
  rendezvous. At most one per address every :data:`DEFAULT_RENDEZVOUS_INTERVAL` seconds, and
  per relay no faster than a bip relay accepts them (its default budget), so that a swarm
  full of unreachable peers costs a bounded number of messages;
- a connect arrives (for our rendezvous, or because the other end asked for one): the
  address is dialled at once, over uTP only (:meth:`~bip_handshake.PeerDialer.prefer_utp_for`)
  from the uTP socket the relay saw (the dialer's socket of that family, the listening one),
  since both ends dialling each other at once over uTP is what opens their NATs. A dial that
  a connect started does not ask for another rendezvous when it fails (libtorrent's
  holepunch mode), and the connection that comes of it, in either direction, is counted.

When the other end's connection arrives while ours is still pending, both may complete; the
session keeps one connection per pair of peers as for any two peers that dial each other.

Private torrents: PEX is off for them, so :meth:`~bip_peer.PeerExchange.relay_for` names no
relay and we never start a rendezvous for one; the service still offers ``ut_holepunch`` and
relays between peers of the same private swarm (bip_peer's choice, as libtorrent's): a
connect only introduces two peers that are both in that swarm already.

Every table here is bounded: addresses asked about and addresses being punched
(:data:`MAX_HOLEPUNCH_ADDRESSES` each, oldest forgotten first), relay budgets (one per
connected peer), counts (one per torrent).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Final

import trio

from bip_handshake import DialFailure, Handshaker, PeerAddress, PeerDialer
from bip_metainfo import InfoHash
from bip_peer import (
    DEFAULT_HOLEPUNCH_RELAY_BURST,
    DEFAULT_HOLEPUNCH_RELAY_RATE,
    HolepunchService,
    Peer,
    PeerExchange,
    PeerManager,
    TokenBucket,
)

__all__ = [
    "DEFAULT_HOLEPUNCH_DIAL_TTL",
    "DEFAULT_RENDEZVOUS_INTERVAL",
    "MAX_HOLEPUNCH_ADDRESSES",
    "HolepunchCounts",
    "HolepunchPolicy",
    "HolepunchPolicyStatistics",
]

logger = logging.getLogger("bip.client")

DEFAULT_RENDEZVOUS_INTERVAL: Final = 300.0
"""Seconds before an address we asked a rendezvous for may be asked about again (a peer that
a holepunch did not reach rarely becomes reachable within minutes)."""
DEFAULT_HOLEPUNCH_DIAL_TTL: Final = 30.0
"""Seconds a connect's address stays hinted uTP-only and watched for the connection it
brings (the dial, a plaintext redial, and the other end's dial all fit in it)."""
MAX_HOLEPUNCH_ADDRESSES: Final = 1024
"""Addresses remembered in each table (asked about, being punched), at most."""


@dataclass(frozen=True, slots=True)
class HolepunchCounts:
    """One torrent's BEP 55 counts (in :class:`~bip._client.TorrentStatus` too).

    Attributes:
        rendezvous: rendezvous we sent for its peers (a dial to them failed).
        connects: connects we acted on (dialled over uTP): answers to our rendezvous and
            requests from the other end of someone else's.
        peers: connections made after a connect, in either direction: peers reached by
            holepunch.
    """

    rendezvous: int = 0
    connects: int = 0
    peers: int = 0


@dataclass(frozen=True, slots=True)
class HolepunchPolicyStatistics:
    """A snapshot of a :class:`HolepunchPolicy`'s counters, all torrents together.

    Attributes:
        rendezvous: rendezvous sent.
        connects: connects acted on (a uTP dial started).
        peers: peers reached by holepunch.
        refused: rendezvous a relay answered with an error.
        no_relay: failed dials with no connected peer to ask (not learnt from PEX, the
            peer that listed it gone or without ``ut_holepunch``, or the address not flagged
            as speaking it).
        too_soon: failed dials to an address asked about less than the interval ago.
        relay_busy: failed dials whose relay had no budget left (asked later).
    """

    rendezvous: int
    connects: int
    peers: int
    refused: int
    no_relay: int
    too_soon: int
    relay_busy: int


class _Counts:
    __slots__ = ("connects", "peers", "rendezvous")

    def __init__(self) -> None:
        self.rendezvous = 0
        self.connects = 0
        self.peers = 0


def _check_seconds(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f"{name} must be a positive finite number of seconds, not {value!r}")
    return float(value)


def _remember(
    table: OrderedDict[PeerAddress, tuple[float, bytes]],
    address: PeerAddress,
    value: tuple[float, bytes],
    bound: int,
) -> None:
    table.pop(address, None)
    table[address] = value  # last: with one lifetime per table, the order is by deadline
    while len(table) > bound:
        table.popitem(last=False)


def _expire(table: OrderedDict[PeerAddress, tuple[float, bytes]], now: float) -> None:
    while table:
        address, (deadline, _) = next(iter(table.items()))
        if deadline > now:
            break
        del table[address]


class HolepunchPolicy:
    """The client's BEP 55 policy around a :class:`~bip_peer.HolepunchService`.

    The session wires it: the handshaker's ``on_dial_failed`` calls :meth:`dial_failed`;
    :attr:`service` and the policy itself (a :class:`~bip_peer.PeerService` that only
    watches peers come and go) are services of the peer manager.

    Args:
        handshaker: dials the addresses connects name.
        pex: names the relays (:meth:`~bip_peer.PeerExchange.relay_for`).
        dialer: the session's dialer: told to dial those addresses over uTP only, and
            whose uTP sockets say which addresses a hole can be punched to.
        our_addresses: our listening addresses (a relay asked for one refuses it, a
            connect to one is ignored); more can be added later to :attr:`service`
            (:meth:`~bip_peer.HolepunchService.add_our_address`).
        refuses: whether the torrent refuses a peer at an address (its host banned for bad
            data): a connect to one is ignored, not dialled (libtorrent checks the ban
            first too); ``None`` refuses none.
        rendezvous_interval: seconds before an address may be asked about again.
        dial_ttl: seconds a connect's address stays uTP-only and watched.
        max_addresses: addresses remembered per table.
    """

    # No message: the peer manager asks it about none (its service takes ut_holepunch's).
    message_types: ClassVar[tuple[type, ...]] = ()

    def __init__(
        self,
        *,
        handshaker: Handshaker,
        pex: PeerExchange,
        dialer: PeerDialer,
        our_addresses: Iterable[PeerAddress] = (),
        refuses: Callable[[InfoHash, PeerAddress], bool] | None = None,
        rendezvous_interval: float = DEFAULT_RENDEZVOUS_INTERVAL,
        dial_ttl: float = DEFAULT_HOLEPUNCH_DIAL_TTL,
        max_addresses: int = MAX_HOLEPUNCH_ADDRESSES,
    ) -> None:
        if isinstance(max_addresses, bool) or not isinstance(max_addresses, int):
            raise ValueError(f"max_addresses must be a positive int, not {max_addresses!r}")
        if max_addresses < 1:
            raise ValueError(f"max_addresses must be a positive int, not {max_addresses!r}")
        self._interval = _check_seconds("rendezvous_interval", rendezvous_interval)
        self._dial_ttl = _check_seconds("dial_ttl", dial_ttl)
        self._max = max_addresses
        self._handshaker = handshaker
        self._pex = pex
        self._dialer = dialer
        self._refuses = refuses
        self._manager: PeerManager | None = None
        self.service = HolepunchService(
            on_connect=self._on_connect,
            on_error=self._on_error,
            our_addresses=our_addresses,
        )
        """The ``ut_holepunch`` service (a peer manager service of its own)."""
        # address -> (until when it is not asked about again, the torrent's swarm key)
        self._asked: OrderedDict[PeerAddress, tuple[float, bytes]] = OrderedDict()
        # address -> (until when a connection with it counts as punched, swarm key)
        self._punching: OrderedDict[PeerAddress, tuple[float, bytes]] = OrderedDict()
        # Per relay, a bucket mirroring a bip relay's budget: asking faster is wasted.
        self._budgets: dict[Peer, TokenBucket] = {}
        self._counts: dict[bytes, _Counts] = {}  # by every swarm id of a torrent
        self._refused = 0
        self._no_relay = 0
        self._too_soon = 0
        self._relay_busy = 0

    # -- public ----------------------------------------------------------------------------

    def counts(self, info_hash: InfoHash) -> HolepunchCounts:
        """The counts of the torrent ``info_hash`` names (any of its swarm ids)."""
        counts = self._find_counts(info_hash)
        if counts is None:
            return HolepunchCounts()
        return HolepunchCounts(counts.rendezvous, counts.connects, counts.peers)

    def statistics(self) -> HolepunchPolicyStatistics:
        """A snapshot of the counters, all torrents together."""
        distinct = {id(c): c for c in self._counts.values()}.values()
        return HolepunchPolicyStatistics(
            rendezvous=sum(c.rendezvous for c in distinct),
            connects=sum(c.connects for c in distinct),
            peers=sum(c.peers for c in distinct),
            refused=self._refused,
            no_relay=self._no_relay,
            too_soon=self._too_soon,
            relay_busy=self._relay_busy,
        )

    def dial_failed(self, failure: DialFailure) -> None:
        """A dial never connected: ask a peer that listed the address for a rendezvous.

        The handshaker's ``on_dial_failed``; never blocks. Nothing happens before the
        peer manager is attached (the first peers), for an address a connect is being
        dialled to, for one asked about less than the interval ago, or with no relay.
        """
        manager = self._manager
        if manager is None:
            return
        address = failure.address.normalized()
        now = trio.current_time()
        if self._live(self._punching, address, now):
            return  # the holepunch's own dial: no rendezvous for it (libtorrent's rule)
        if not self._reaches(address):
            return  # no uTP socket reaches it: no hole to punch
        if self._live(self._asked, address, now):
            self._too_soon += 1
            return
        relay = self._pex.relay_for(failure.torrent, address)
        if relay is None or not relay.can_relay or not relay.target_supports_holepunch:
            self._no_relay += 1
            return
        budget = self._budgets.get(relay.peer)
        if budget is None:
            budget = self._budgets[relay.peer] = TokenBucket(
                DEFAULT_HOLEPUNCH_RELAY_RATE, burst=DEFAULT_HOLEPUNCH_RELAY_BURST, now=now
            )
        if not budget.take(1, now):
            self._relay_busy += 1
            return
        if not self.service.rendezvous(manager, relay.peer, address):
            self._no_relay += 1  # gone meanwhile, or its send queue is full
            return
        key = failure.torrent.swarm_ids()[0]
        _remember(self._asked, address, (now + self._interval, key), self._max)
        self._counter(failure.torrent).rendezvous += 1
        logger.debug(
            "dial to %s failed (%s): asked %s for a holepunch",
            address,
            failure.reason,
            relay.peer.address,
        )

    def attach(self, manager: PeerManager) -> None:
        """Start: rendezvous go through ``manager`` (whose services must include
        :attr:`service`)."""
        self._manager = manager

    # -- the service's callbacks -----------------------------------------------------------

    def _on_connect(self, info_hash: InfoHash, address: PeerAddress) -> None:
        """A relay says: dial ``address`` now (over uTP, from our listening socket)."""
        address = address.normalized()
        now = trio.current_time()
        if self._refuses is not None and self._refuses(info_hash, address):
            # Its connection would be refused when it arrives: no dial, no hole for it.
            logger.debug("holepunch: %s is banned; connect ignored", address)
            return
        if not self._reaches(address):
            logger.debug("holepunch: no uTP socket reaches %s; connect ignored", address)
            return
        self._dialer.prefer_utp_for(address, self._dial_ttl, only=True)
        _remember(
            self._punching, address, (now + self._dial_ttl, info_hash.swarm_ids()[0]), self._max
        )
        self._counter(info_hash).connects += 1
        if self._handshaker.connect(info_hash, address):
            logger.debug("holepunch: dialling %s over uTP", address)
        else:
            logger.debug(
                "holepunch: %s not dialled: a dial or connection to it is up already, or the"
                " dial queue, a filter or a per-host bound refused it (the handshaker's"
                " dropped_* statistics say which)",
                address,
            )

    def _on_error(self, info_hash: InfoHash, address: PeerAddress, code: int) -> None:
        # The address stays asked about: the relay knows best that it cannot reach it now.
        self._refused += 1

    # -- PeerService: watching peers -------------------------------------------------------

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        """Nothing: :attr:`service` offers ``ut_holepunch``."""
        return {}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        """Count a peer that a connect brought (dialled by us or by the other end)."""
        address = peer.address.normalized()
        entry = self._punching.get(address)
        if entry is None:
            return
        deadline, key = entry
        if trio.current_time() >= deadline or key not in peer.info_hash.swarm_ids():
            return
        del self._punching[address]
        self._counter(peer.info_hash).peers += 1
        logger.debug("holepunch: connected to %s over %s", address, peer.transport)

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        """Consumes nothing."""
        return False

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        """Forget the peer's relay budget."""
        self._budgets.pop(peer, None)

    def tick(self, manager: PeerManager, now: float) -> None:
        """Forget expired addresses."""
        _expire(self._asked, now)
        _expire(self._punching, now)

    # -- internals ---------------------------------------------------------------------------

    def _reaches(self, address: PeerAddress) -> bool:
        """Whether the dialer has a uTP socket of ``address``'s family."""
        return any(utp.local_address.family == address.family for utp in self._dialer.utp_sockets)

    @staticmethod
    def _live(
        table: OrderedDict[PeerAddress, tuple[float, bytes]], address: PeerAddress, now: float
    ) -> bool:
        entry = table.get(address)
        return entry is not None and entry[0] > now

    def _find_counts(self, info_hash: InfoHash) -> _Counts | None:
        for swarm_id in info_hash.swarm_ids():
            found = self._counts.get(swarm_id)
            if found is not None:
                return found
        return None

    def _counter(self, info_hash: InfoHash) -> _Counts:
        # One counter per torrent, under every swarm id it is known by (a magnet's hash may
        # gain its v2 half); only registered torrents' peers and dials reach here.
        counts = self._find_counts(info_hash)
        if counts is None:
            counts = _Counts()
        for swarm_id in info_hash.swarm_ids():
            self._counts.setdefault(swarm_id, counts)
        return counts
