"""The session's peer lists and the task that dials from them (libtorrent's ``peer_list`` and
its ``connect_peers`` pass).

Every discovery source (trackers, the DHT, PEX, the user's peers, resolved tracker names)
feeds :class:`Connector`, the session's :class:`~bip_handshake.PeerSink`: each address goes to
its torrent's :class:`~bip_handshake.PeerList` (bip_handshake's; the rules for ranking,
backoff, failures and bounds are there), with the swarm id it came with (a hybrid torrent's
v1 or v2 swarm). :meth:`Connector.run`, one task per session, dials the best candidates
while the peers connected plus the dials in flight stay under ``ClientConfig.max_peers``, at
most ``connection_speed`` dials a second (libtorrent's ``connection_speed``), sharing the
room between torrents by giving one dial at a time to the torrent with the fewest peers. It
wakes when peers arrive and when a slot frees, and once a second for the waits that end.

So the client remembers its peers: addresses beyond the handshaker's queue wait in the lists
rather than being dropped, a dead address is not dialled again before its backoff, a session
at ``max_peers`` dials no more (a dial would only end in a refused peer: a wasted connection
the remote sees as connect-and-drop), and a banned host is never dialled. What the peers say
while connected updates their entries (:meth:`Connector.peer_message`): a peer that dialled us
is recorded where it listens (its BEP 10 ``p``), to be dialled back, and a seed is marked one
at once, so that a seeding torrent does not dial it again. A torrent paused or rechecking
(its ``halted``) keeps its list, and still learns addresses, but none of its peers is dialled
meanwhile; it wakes the connector when it comes back (:meth:`Connector.wake`). The dials its
hold ended cost their peers nothing (no failure, no wait, as its connected peers): they are
dialled again as soon as it is back.

Our own addresses are no peers: one we listen on (the handshaker's listeners, as bound) is
neither recorded nor dialled (PEX refuses them too), and one a dial found to be ourselves
(answered with our own peer id: a tracker or the DHT listing us) is dropped from its list and
refused from then on, in every torrent. libtorrent bans that peer; left in, it was dialled
again after every announce listing it. The address alone: other peers on our host (other
clients on the machine, behind the same NAT) are peers like any. Only what is proven ours is
refused: the external address the session decided from votes (``our_addresses``, BEP 10
``yourip``) ranks peers (BEP 40) but is not refused, for three lying peers could name an
honest peer's address and have us shun it; were it ours, its first dial finds it. Only a
concrete bind names its address: behind a wildcard one (``0.0.0.0``, ``::``) our LAN or
loopback address is recorded and dialled once, as any, before that first dial finds it ours.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Final, Protocol

import trio

from bip_handshake import (
    CompletedHandshake,
    DialFailure,
    Handshaker,
    HandshakerStatistics,
    PeerAddress,
    PeerList,
    PeerOrigin,
)
from bip_metainfo import InfoHash
from bip_peer import (
    REASON_PROTOCOL,
    REASON_SEND_TIMEOUT,
    REASON_TRANSPORT,
    Bitfield,
    DontHave,
    ExtendedHandshake,
    Have,
    HaveAll,
    HaveNone,
    Peer,
    UploadOnly,
)

from ._config import DEFAULT_CONNECTION_SPEED
from ._torrent import REASON_PAUSED, REASON_RECHECK

__all__ = ["Connector", "ConnectorTorrent"]

logger = logging.getLogger("bip.client")

# Candidates looked at per dial at most: those the handshaker will not queue (connected
# already, filtered, its queue full) are skipped, but a full queue must not cost a whole list.
_TRIES: Final = 8
_MIN_WAIT: Final = 0.001  # seconds: the shortest wait for the next dial token
_WAKE_INTERVAL: Final = 1.0  # seconds: a pass at least this often (backoffs end, seeds change)
# Removals that count as a failed connection: the peer misbehaved or the link broke. A peer
# that closed, went idle or was dropped by us (redundant, a duplicate, choked out) did not fail.
_FAILED_REASONS: Final = frozenset({REASON_PROTOCOL, REASON_TRANSPORT, REASON_SEND_TIMEOUT})
# Connections the torrent ended for a reason of its own: the peer may be dialled again as
# soon as the torrent is back, with no reconnect wait.
_OUR_HOLDS: Final = frozenset({REASON_PAUSED, REASON_RECHECK})
# Messages after which a peer may have become (or stopped being) a seed.
_PIECE_NEWS: Final = (HaveAll, HaveNone, Bitfield, Have, DontHave, UploadOnly, ExtendedHandshake)
CONNECTOR_MESSAGES: Final[frozenset[type]] = frozenset(_PIECE_NEWS)
"""The classes of the messages :meth:`Connector.peer_message` acts on (a peer's extended
handshake and what says it may be a seed): the session hands it these alone, by exact class
(none has a subclass), since it routes a message per block."""


class ConnectorTorrent(Protocol):
    """What the connector needs of a torrent (the session's :class:`Torrent` has it)."""

    @property
    def info_hash(self) -> InfoHash:
        """Every hash known so far (the handshaker dials with it)."""
        ...

    @property
    def completed(self) -> trio.Event:
        """Set once every selected file is complete (we want nothing more): peers known to
        be seeds are not dialled then."""
        ...

    @property
    def peers(self) -> set[Peer]:
        """Its connected peers."""
        ...

    @property
    def halted(self) -> bool:
        """Out of its swarm now (paused, rechecking): none of its peers is dialled."""
        ...


class Connector:
    """The torrents' peer lists, the sink all sources feed, and the dialling task.

    Args:
        handshaker: dials (its ``connect``) and counts the dials in flight; the addresses it
            listens on (its ``listen_addresses``: a wildcard bind's names no address of ours)
            and those its dials found to be ourselves (its ``is_self_address``) are refused.
        find: the torrent an info-hash or swarm id names (the session's ``find``).
        connected_peers: how many places of ``max_peers`` the peers hold now, all torrents
            together: the peer manager's ``places_in_use`` (the peers connected, and those
            removed whose removal is not reported yet: a dial for one of those places would
            be refused).
        our_addresses: our addresses now, to rank peers against (BEP 40): the external ones
            once decided, the listen ones before. Not refused (peers' votes decide them):
            the handshaker's listen addresses and those a dial found to be ourselves are.
        max_peers: connected peers plus dials in flight at most, all torrents together.
        connection_speed: dials started per second at most.
        new_list: makes a torrent's list (its bounds).
    """

    def __init__(
        self,
        *,
        handshaker: Handshaker,
        find: Callable[[InfoHash | bytes], ConnectorTorrent | None],
        connected_peers: Callable[[], int],
        our_addresses: Callable[[], Iterable[PeerAddress]],
        max_peers: int,
        connection_speed: int = DEFAULT_CONNECTION_SPEED,
        new_list: Callable[[], PeerList] = PeerList,
    ) -> None:
        self._handshaker = handshaker
        self._find = find
        self._connected_peers = connected_peers
        self._our_addresses = our_addresses
        self._max_peers = max_peers
        self._speed = connection_speed
        self._new_list = new_list
        self._lists: dict[ConnectorTorrent, PeerList] = {}
        # Our dials not yet settled, with the hash each was made with and the handshaker's
        # count of dials unregister ended when it was made (_settle): the handshaker tells
        # failed connects (dial_failed) but not failed handshakes; those are found here.
        self._dialled: dict[tuple[ConnectorTorrent, PeerAddress], tuple[InfoHash, int]] = {}
        # Peers recorded under another address than their connection's: one that dialled us,
        # under the address it listens on (its BEP 10 ``p``). Bounded by the connected peers.
        self._listed: dict[Peer, PeerAddress] = {}
        # The handshaker's listen addresses (normalised), read once: its listeners are fixed
        # for its life, and reading them is a system call each (discovered runs per message).
        # Those a dial found to be ourselves, the handshaker remembers (is_self_address).
        self._listening: frozenset[PeerAddress] | None = None
        # The ports of every address refused (listening, or found ours since): most addresses
        # offered are told apart by their port alone, without normalising and hashing them
        # (some 0.6 us an address otherwise). Never shrinks: 65,536 ports at most.
        self._refused_ports: set[int] = set()
        self._wake = trio.Event()
        self._tokens = float(connection_speed)
        self._refilled = -math.inf

    # -- the torrents ---------------------------------------------------------------------

    def attach(self, torrent: ConnectorTorrent) -> PeerList:
        """Give ``torrent`` a peer list (once; the same list after)."""
        peers = self._lists.get(torrent)
        if peers is None:
            peers = self._lists[torrent] = self._new_list()
        return peers

    def detach(self, torrent: ConnectorTorrent) -> None:
        """Forget ``torrent`` (removed from the session): its list, its dials pending, its
        peers' listen addresses. Nothing happens for a torrent not attached."""
        self._lists.pop(torrent, None)
        for key in [key for key in self._dialled if key[0] is torrent]:
            del self._dialled[key]
        for peer in torrent.peers:
            self._listed.pop(peer, None)

    def peer_list(self, torrent: ConnectorTorrent) -> PeerList | None:
        """The torrent's list (``None`` when not attached)."""
        return self._lists.get(torrent)

    def wake(self) -> None:
        """Look for dials to start now (a slot freed, peers arrived, a torrent is back in
        its swarm)."""
        self._wake.set()

    # -- PeerSink -------------------------------------------------------------------------

    def discovered(
        self, info_hash: InfoHash | bytes, addresses: Iterable[PeerAddress], source: str
    ) -> None:
        """Record peers a source found in their torrent's list (:class:`PeerSink`); never
        blocks. Given as a swarm id (bytes), the peers are dialled with that id."""
        torrent = self._find(info_hash)
        peers = None if torrent is None else self._lists.get(torrent)
        if peers is None:
            return  # not (or no longer) ours: the handshaker would drop them too
        swarm_id = bytes(info_hash[:20]) if isinstance(info_hash, bytes) else None
        now = trio.current_time()
        # (Anything not an address goes on, for add_many to refuse as it does.)
        others = (a for a in addresses if not (isinstance(a, PeerAddress) and self._is_ours(a)))
        if peers.add_many(others, PeerOrigin.from_name(source), now, swarm_id=swarm_id):
            self.wake()

    # -- what became of dials and connections ---------------------------------------------

    def dial_failed(self, failure: DialFailure) -> None:
        """A dial failed (the handshaker's ``on_dial_failed``)."""
        peers = self._list_of(failure.torrent)
        if peers is not None:
            peers.dial_failed(failure.address, trio.current_time())
        self.wake()

    def handshake_taken(self, torrent: ConnectorTorrent, handshake: CompletedHandshake) -> None:
        """A handshake became a peer of ``torrent``."""
        peers = self._lists.get(torrent)
        if peers is None:
            return
        origin = PeerOrigin.INCOMING if handshake.direction == "inbound" else PeerOrigin.NONE
        peers.connected(handshake.address, trio.current_time(), origin=origin)

    def handshake_refused(
        self, torrent: ConnectorTorrent | None, handshake: CompletedHandshake
    ) -> None:
        """A completed handshake was closed before it became a peer (banned, filtered, a
        duplicate, no room, its torrent paused meanwhile): an outbound one was no failure of
        the peer's, and one its torrent's hold closed may be dialled again as soon as the
        torrent is back."""
        peers = None if torrent is None else self._lists.get(torrent)
        if peers is not None and handshake.direction == "outbound":
            now = trio.current_time()
            if torrent is not None and torrent.halted:
                self._dropped_by_hold(peers, handshake.address, now)
            else:
                peers.dial_cancelled(handshake.address, now)
        self.wake()

    def peer_message(self, torrent: ConnectorTorrent, peer: Peer, message: object) -> None:
        """A message from a peer of ``torrent``: what it says about where it listens (BEP 10
        ``p``) and whether it is a seed goes to its entry while it is connected.

        A peer that dialled us is recorded under its ephemeral port; its ``p`` moves its entry
        to the address it listens on, to be dialled back once it disconnects (libtorrent's
        ``update_peer_port``). A peer with every piece, or that only uploads (BEP 21), is
        marked a seed at once (libtorrent's ``set_seed``): a seeding torrent does not dial it
        again, and neither side wants anything of the other.

        Other messages change nothing: the session hands over those of
        :data:`CONNECTOR_MESSAGES` alone.
        """
        peers = self._lists.get(torrent)
        if peers is None:
            return
        if (
            isinstance(message, ExtendedHandshake)
            and message.p is not None
            and peer.direction == "inbound"
        ):
            listed = peers.update_port(
                self._listed.get(peer, peer.address),
                message.p,
                trio.current_time(),
                swarm_id=peer.swarm_id,
            )
            if listed is not None and listed != peer.address.normalized():
                self._listed[peer] = listed
        if isinstance(message, _PIECE_NEWS):
            peers.mark_seed(self._address_of(peer), self._is_seed(peer))

    @staticmethod
    def _is_seed(peer: Peer) -> bool:
        return peer.connection.peer_has_all or peer.connection.peer_upload_only

    def _address_of(self, peer: Peer) -> PeerAddress:
        """The address the peer is recorded under in its list."""
        return self._listed.get(peer, peer.address)

    def peer_removed(self, torrent: ConnectorTorrent, peer: Peer, reason: str) -> None:
        """A peer of ``torrent`` is gone: a slot is free."""
        address = self._listed.pop(peer, peer.address)
        peers = self._lists.get(torrent)
        if peers is not None:
            if self._is_seed(peer):
                peers.mark_seed(address)
            peers.disconnected(
                address,
                trio.current_time(),
                failed=reason in _FAILED_REASONS,
                wait=reason not in _OUR_HOLDS,
            )
        self.wake()

    # -- dialling -------------------------------------------------------------------------

    async def run(self) -> None:
        """Dial from the lists forever (one task per session)."""
        while True:
            now = trio.current_time()
            # One snapshot for the settling and the dials of this pass (nothing runs between):
            # each dial keeps the count as it is when it is made, and is compared with the
            # count as it is when it is found gone.
            statistics = self._handshaker.statistics()
            self._settle(now, statistics.unregistered)
            self._refill(now)
            if self._tokens >= 1:
                self._pass(now, statistics)
            if self._tokens < 1:
                # No dial may start before the next token; waking earlier would do nothing.
                # (At least a millisecond: a wait shorter than the clock's resolution at its
                # value would not move it, and the loop would spin.)
                await trio.sleep(max((1 - self._tokens) / self._speed, _MIN_WAIT))
                continue
            with trio.move_on_after(_WAKE_INTERVAL):
                await self._wake.wait()
            self._wake = trio.Event()

    def _settle(self, now: float, unregistered: int) -> None:
        """Dials the handshaker no longer has, that did not become a connection: failed (a
        failed handshake: MSE, a timeout, a peer not serving the torrent), unless a hold of
        their torrent ended them (``_dropped_by_hold``). ``unregistered``: the handshaker's
        count now."""
        for key, (info_hash, seen) in list(self._dialled.items()):
            torrent, address = key
            peers = self._lists[torrent]
            if not peers.is_dialling(address):  # settled already (or forgotten)
                del self._dialled[key]
            elif not self._handshaker.is_dialling(info_hash, address):
                if self._handshaker.is_self_address(address):
                    self._found_ourselves(peers, address)
                elif torrent.halted or unregistered != seen:
                    self._dropped_by_hold(peers, address, now)
                else:
                    peers.dial_failed(address, now)
                del self._dialled[key]

    def _found_ourselves(self, peers: PeerList, address: PeerAddress) -> None:
        """A dial to ``address`` reached ourselves: forgotten, and refused from now on (in
        every torrent's list: ``_is_ours``), as libtorrent bans the peer on ``self_connection``.
        Charged as a failure, it was dialled again after each announce listing it, forever
        (each source's offer takes a failure off)."""
        logger.debug("%s is ourselves: forgotten, and not dialled again", address)
        peers.remove(address)
        self._refused_ports.add(address.port)

    def _is_ours(self, address: PeerAddress) -> bool:
        """Whether ``address`` (in any form: IPv4-mapped...) is proven ours: one we listen on,
        or one a dial found to be ourselves (the handshaker's last ``MAX_SELF_ADDRESSES``).
        Not the external addresses peers voted ours (``our_addresses``): lying peers could
        name an honest peer's. O(1)."""
        listening = self._listening
        if listening is None:
            listening = self._listening = frozenset(
                a.normalized() for a in self._handshaker.listen_addresses
            )
            self._refused_ports.update(a.port for a in listening)
        if address.port not in self._refused_ports:
            return False
        normalized = address.normalized()
        return normalized in listening or self._handshaker.is_self_address(normalized)

    @staticmethod
    def _dropped_by_hold(peers: PeerList, address: PeerAddress, now: float) -> None:
        """A dial its torrent's hold (pause, queue, recheck: ``Handshaker.unregister``) ended:
        no failure of the peer's, and no wait, as for its connected peers (libtorrent closes
        both for a reason of its own): the peer is dialled again as soon as the torrent is
        back. Charged, a pause left each peer dialled a failure and a doubled wait, and
        three holds while dials pended gave it up for good.

        A dial is taken for one of these when its torrent is halted, or when the
        handshaker's ``unregistered`` count moved since the dial was made: a pause and a
        resume may both come before the connector looks again, and the handshaker counts
        the dials unregister ended when it ends them. The count is the handshaker's, not
        the torrent's: a handshake that failed while another torrent left its swarm is not
        charged either, and is dialled again once more (the next failure counts).
        """
        peers.disconnected(address, now, wait=False)

    def _refill(self, now: float) -> None:
        elapsed = now - self._refilled if self._refilled != -math.inf else math.inf
        # (A hair over, so that float rounding never leaves a token at 0.9999...)
        self._tokens = min(float(self._speed), self._tokens + elapsed * self._speed + 1e-9)
        self._refilled = now

    def free_slots(self) -> int:
        """Connections that may still be opened: ``max_peers`` less the places the peers
        hold (``connected_peers``) and the dials queued or in flight."""
        return self._free_slots(self._handshaker.statistics())

    def _free_slots(self, statistics: HandshakerStatistics) -> int:
        # Our own count of dials pending covers a handshake delivered but not yet a peer
        # (the handshaker counts it no more); the handshaker's covers dials of others
        # (holepunch).
        ours = sum(peers.dialling for peers in self._lists.values())
        dials = max(statistics.outbound_in_flight + statistics.queued, ours)
        return max(0, self._max_peers - self._connected_peers() - dials)

    def _pass(self, now: float, statistics: HandshakerStatistics) -> None:
        """Start as many dials as the free slots and the rate allow, one torrent at a time
        (``statistics``: the handshaker's now)."""
        budget = min(self._free_slots(statistics), int(self._tokens))
        if budget <= 0 or not self._lists:
            return
        ours = tuple(self._our_addresses())
        # The torrent with the fewest peers (and dials pending) is served first, one dial at
        # a time, so one torrent with a long list cannot take every slot.
        load = {t: len(t.peers) + peers.dialling for t, peers in self._lists.items()}
        for peers in self._lists.values():
            peers.set_our_addresses(ours)
        # A paused torrent dials nobody: dry from the start.
        dry: set[ConnectorTorrent] = {t for t in self._lists if t.halted}
        while budget > 0 and len(dry) < len(self._lists):
            torrent = min((t for t in self._lists if t not in dry), key=load.__getitem__)
            if self._dial_one(torrent, now, statistics.unregistered):
                budget -= 1
                self._tokens -= 1
                load[torrent] += 1
            else:
                dry.add(torrent)

    def _dial_one(self, torrent: ConnectorTorrent, now: float, unregistered: int) -> bool:
        """Dial the torrent's best candidate, never one of ours (``_is_ours``); returns False
        when it has none. ``unregistered``: the handshaker's count now, kept with the dial
        (``_settle``)."""
        peers = self._lists[torrent]
        seed = torrent.completed.is_set()
        for _ in range(_TRIES):
            candidates = peers.connect_candidates(1, now, seed=seed)
            if not candidates:
                return False
            [address] = candidates
            if self._is_ours(address):
                # Recorded before it was known to be ours (a dial of another torrent's reached
                # ourselves since, or added to the list directly): forgotten undialled.
                peers.remove(address)
                continue
            entry = peers.entry(address)
            swarm_id = None if entry is None else entry.swarm_id
            info_hash = torrent.info_hash
            if swarm_id is not None and swarm_id not in info_hash.swarm_ids():
                swarm_id = None
            if self._handshaker.connect(info_hash, address, swarm_id=swarm_id):
                self._dialled[torrent, address] = (info_hash, unregistered)
                return True
            # Not queued (connected already, filtered, the queue full): no failure of the
            # peer's; it waits for its next turn.
            peers.dial_cancelled(address, now)
        return False

    def _list_of(self, info_hash: InfoHash) -> PeerList | None:
        torrent = self._find(info_hash)
        return None if torrent is None else self._lists.get(torrent)
