"""The swarm store: who is in which swarm, for how long, and what to tell an announcer.

A tracker remembers, per info-hash, the peers that announced it: their address (the sender's IP
and the announced TCP port, in compact form), whether they are seeding, and until when they
count as present (their last announce plus ``peer_lifetime``: the announce interval and some
grace). It answers an announce with the swarm's counts and a random selection of peers of the
announcer's address family (IPv4 peers to an IPv4 announcer, IPv6 to IPv6: BEP 15 sends them in
the family of the request), never the announcer itself.

Peers are keyed by that address, not by peer id: the address is proven by the connection id,
while any client could claim another's peer id and overwrite its entry.

Memory is bounded whatever announcers send, by three limits:

- ``max_swarms``: a new swarm beyond it evicts a swarm on probation (below);
- ``max_peers_per_swarm``: a new peer in a full swarm evicts that swarm's least recently
  announced peer;
- ``max_peers``: a new peer beyond the total evicts whole swarms, probation first (below).

One more limit keeps a single host from pushing the others out of a swarm: peers are keyed by
address and port, so one IP announcing a thousand ports would otherwise be a thousand peers,
each new one evicting an honest one. ``max_peers_per_host`` bounds the entries one host (one IP
address) has in one swarm; beyond it, the host's new ports are answered but not recorded (as a
peer that listens nowhere) until one of its entries leaves or expires. The default leaves room
for many clients behind one NAT address. (A holder of a whole IPv6 /64 has addresses to spare:
against it, the server's rate limit per /64 is what slows the flood.)

Which swarm makes room is chosen the way caches resist scans (a segmented LRU, as 2Q). Plain
"least recently announced first" let a flood of announces for random info-hashes push out every
swarm: each announcer needs a connection id, so its address is real, but an IPv6 /48 holds
65,536 /64s, each with its own rate allowance, and ``max_swarms`` random info-hashes within one
announce interval emptied the store of honest swarms, whose users then got empty peer lists until
they announced again. So a new swarm starts *on probation*, and is *promoted* to the protected
segment once it has shown it is real, by either of:

- two hosts in it at once: a new peer joins while a peer of another host is in it, another host
  being another IPv4 address or another IPv6 /48 of the same family (the /48 because a site, a
  home or an office, is handed a /48 or a /56 whole: by /64 it would be 256 or 65,536 hosts; the
  same family because a dual-stack client announces over both);
- a re-announce: a peer announces again at least ``promote_after`` seconds after its previous
  announce (by default a third of ``peer_lifetime``, half the announce interval with the default
  lifetime of interval plus half an interval, but at most 15 minutes: clients cap a long interval,
  bip's Announcer at 30 minutes; the server passes half its interval, at most 15 minutes too).
  Clients announce once per interval, so their regular re-announce qualifies, while a burst of
  re-announces never does: each one restarts the wait. Its time needs no storage: it is the
  peer's expiry minus ``peer_lifetime``.

The protected swarms are at most 90% of ``max_swarms``, so a full store always has one on
probation: a new swarm beyond ``max_swarms`` evicts the least recently announced swarm there, and
a flood of single announces only churns probation, among the swarms the flood itself made. A
promotion into a full protected segment would demote its least recently announced swarm to
probation, where a flood's new swarms push it out before its next announce: two hosts announcing
each of their info-hashes from both would so empty the protected segment, one promotion at a
time. So a promotion is made only if that swarm is out of use: announced last ``peer_lifetime``
or more ago, so that none of its peers is left (not an interval ago: a client whose announce
came a retransmission late would lose its swarm). Otherwise it is refused (counted in
``refused_promotions``) and the swarm stays on probation, marked as shown real: each of its
later announces asks again. A demoted swarm is evicted in its turn (by last announce among the
swarms on probation) unless it is announced first: then it is promoted again at once if the rule
above allows (it has shown it is real; it was only the least recent). ``max_peers`` evicts whole
swarms on probation first, least recently announced first, and protected ones only when no other
is left; never the swarm being announced to. Scrapes, ``stopped`` announces and port-0 announces
neither promote nor refresh a swarm.

What this stops, and what it does not:

- A flood of new info-hashes, announced once each or from two hosts each, churns probation
  only, once the protected segment is full (its free places the flood's two-host swarms may
  take): the protected swarms stay while they are announced at least once per
  ``peer_lifetime``, however few their peers.
- The protected segment is first come, first served. While it is full of swarms in use, no swarm
  is promoted, not even a new honest one with many hosts: new swarms live on probation, least
  recently announced first among themselves, and a flood churns them there. An attacker that
  filled it first (from two hosts, while it had room: after a restart, say) keeps it by
  announcing each of its swarms once per ``peer_lifetime``: 90,000 swarms in 2,700 s, 34
  announces a second at the defaults. A rising ``refused_promotions`` says the store is too small
  for its swarms (or under such an attack): raise ``max_swarms``.
- While the protected segment has room, a new swarm of two hosts is promoted at once, but a lone
  seeder's new swarm must survive probation until its re-announce ``promote_after`` later. New
  info-hashes at (places on probation) / ``promote_after`` a second evict it before: with the
  protected segment nearly full, probation holds 10% of ``max_swarms``, so about 11 a second from
  one host at the defaults. The seeder's swarm is then made again at each of its announces and
  lost in between: a leecher that comes soon after finds it (and, a second host, promotes it); one
  that comes later finds nobody until the seeder's next announce.

Expiry needs no scan: each segment (probation keeps new and demoted swarms in two queues) and each
swarm's peers are kept in the order of their last announce, so the expired ones are always at the
front. (A demoted swarm is the protected segment's least recent, and every swarm enters that
segment at its announce, so demotions come in last-announce order too.) An announce or scrape
trims the front of its swarm; :meth:`SwarmStore.expire` drops the swarms whose every peer has
expired. The queues are ordered dicts (:class:`~collections.OrderedDict`), not dicts: taking
the first entry of a dict that deletions churn walks past every deleted slot before it, which
made an announce at 100,000 swarms cost nearly twenty times one at 1,000.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from bip_handshake import PeerAddress

from ._announcer import DEFAULT_MAX_ANNOUNCE_INTERVAL
from ._checks import seconds
from ._codec import AnnounceEvent, AnnounceRequest, ScrapeStats
from ._errors import LocalProtocolError

__all__ = [
    "DEFAULT_MAX_PEERS",
    "DEFAULT_MAX_PEERS_PER_HOST",
    "DEFAULT_MAX_PEERS_PER_SWARM",
    "DEFAULT_MAX_SWARMS",
    "DEFAULT_PEER_LIFETIME",
    "AnnounceAnswer",
    "SwarmStatistics",
    "SwarmStore",
]

DEFAULT_PEER_LIFETIME = 2700.0
"""Seconds a peer stays in a swarm after its last announce: a 30-minute interval and 15 of grace."""

DEFAULT_MAX_SWARMS = 100_000
"""Swarms kept at most by default."""

DEFAULT_MAX_PEERS_PER_SWARM = 10_000
"""Peers kept at most in one swarm by default."""

DEFAULT_MAX_PEERS = 1_000_000
"""Peers kept at most over all swarms by default (a few hundred bytes each)."""

DEFAULT_MAX_PEERS_PER_HOST = 32
"""Entries (ports) one IP address keeps at most in one swarm by default."""

_STOPPED = AnnounceEvent.STOPPED.value
_COMPLETED = AnnounceEvent.COMPLETED.value
_IPV4_SIZE = 6
_IPV6_SIZE = 18
# What tells two hosts apart for a promotion: the IPv4 address, or the IPv6 /48. Not the /64
# of the server's rate limit: a site (a home or an office, not only a hosting provider) is
# commonly handed a /48 or a /56, so two /64s of one are one party, not two.
_NETWORK_SIZE = {_IPV4_SIZE: 4, _IPV6_SIZE: 6}
_PROTECTED_PERCENT = 90  # of max_swarms, at most in the protected segment


@dataclass(frozen=True, slots=True)
class AnnounceAnswer:
    """What a tracker handler says to an announce.

    Attributes:
        seeders: peers in the swarm that have everything (both address families).
        leechers: peers in the swarm still downloading (both address families).
        peers: compact addresses (6 bytes each for an IPv4 announcer, 18 for IPv6) of peers to
            give the announcer; the server sends as many as fit its response size bound.
        interval: seconds until the client should announce again, or None for the server's
            configured interval.
    """

    seeders: int
    leechers: int
    peers: tuple[bytes, ...] = ()
    interval: int | None = None


@dataclass(frozen=True, slots=True)
class SwarmStatistics:
    """A snapshot of a :class:`SwarmStore`'s size and evictions.

    Attributes:
        swarms: info-hashes with a swarm.
        peers: peers over all swarms (both address families).
        seeders: of those, the peers that have everything.
        leechers: of those, the peers still downloading.
        evicted_swarms: swarms pushed out by ``max_swarms`` or ``max_peers``.
        evicted_peers: peers pushed out by ``max_peers_per_swarm`` or ``max_peers`` (peers of
            an evicted swarm included).
        expired_peers: peers dropped because they did not announce within ``peer_lifetime``.
        unrecorded_peers: announces of a new peer answered but not recorded, because its host
            held ``max_peers_per_host`` entries of that swarm already.
        protected_swarms: of ``swarms``, those in the protected segment (the others are on
            probation: :attr:`probation_swarms`).
        promoted_swarms: moves from probation to the protected segment (a demoted swarm's
            return included).
        demoted_swarms: protected swarms moved back to probation to make room for a promotion,
            the protected segment being full (90% of ``max_swarms``); only swarms out of use
            (none of their peers left) are.
        evicted_probation_swarms: of ``evicted_swarms``, those evicted from probation.
        evicted_protected_swarms: of ``evicted_swarms``, protected ones: only ``max_peers``
            evicts them, and only when no swarm on probation but the one announced to is left.
        refused_promotions: promotions not made because the protected segment was full of swarms
            in use (its least recent has a peer left); each announce of a swarm that waits
            counts. Rising, it says ``max_swarms`` is too small for the swarms in use, or an
            attacker holds the protected segment.
    """

    swarms: int
    peers: int
    seeders: int
    leechers: int
    evicted_swarms: int
    evicted_peers: int
    expired_peers: int
    unrecorded_peers: int = 0
    protected_swarms: int = 0
    promoted_swarms: int = 0
    demoted_swarms: int = 0
    evicted_probation_swarms: int = 0
    evicted_protected_swarms: int = 0
    refused_promotions: int = 0

    @property
    def probation_swarms(self) -> int:
        """Of ``swarms``, those on probation (new, demoted, or waiting for a refused
        promotion): the ones a new swarm beyond ``max_swarms`` evicts first."""
        return self.swarms - self.protected_swarms


class _Peer:
    """One peer of a swarm; mutable, and slotted because a store holds up to a million.

    Made field by field where a peer is added (in :meth:`SwarmStore.announce_compact` and
    :meth:`SwarmStore._new_swarm`), not by an ``__init__``: a Python-level ``__init__`` is one
    more call per announce of a new peer (with :class:`_Swarm`'s, they were a tenth of the
    announce of a new info-hash). Every field is set there.
    """

    __slots__ = ("completed", "expires", "index", "seeder")

    expires: float
    seeder: bool
    completed: bool  # whether its "completed" event was counted already
    index: int  # its position in its family's list, for O(1) removal


class _Swarm:
    """The peers of one info-hash, in order of last announce, and its counters.

    Made field by field where a swarm is made (:meth:`SwarmStore._new_swarm`, the path of each
    announce of a flood of new info-hashes), not by an ``__init__``, as :class:`_Peer`.
    """

    __slots__ = (
        "completed",
        "counted_hosts",
        "last",
        "peers",
        "proven",
        "seeders",
        "trim_at",
        "v4",
        "v6",
    )

    # An OrderedDict, not a dict: trimming and eviction take the first peer, which in a dict
    # churned by deletions costs a walk past every deleted slot before it (O(n) each).
    peers: OrderedDict[bytes, _Peer]
    # Entries per host, for max_peers_per_host; a host with none has no key. A host is the IP:
    # a compact peer without its 2-byte port (not the /64 of an IPv6 address, as for the rate
    # limit: hosting providers hand out addresses of one /64 to many). None until the swarm
    # first holds max_peers_per_host peers: below that no host can hold as many, and most
    # swarms never get there (nor does any swarm of a flood of new info-hashes), so they go
    # without the dict and a key sliced per peer; once counted, kept up to date for good.
    counted_hosts: dict[bytes, int] | None
    # The same addresses per family, in a list, to pick a random run of them in O(k).
    v4: list[bytes]
    v6: list[bytes]
    seeders: int
    completed: int
    last: float  # the time of its last announce
    # Whether it has shown it is real (promoted once, or its promotion was refused): on
    # probation, any announce of it is then a candidate for promotion again.
    proven: bool
    # No peer expires before this (the front peer's expiry when last looked at): one comparison
    # tells an announce whether there is anything to trim.
    trim_at: float

    @property
    def hosts(self) -> dict[bytes, int]:
        """Entries per host of its peers: the kept count, or one counted now if none is kept."""
        if self.counted_hosts is None:
            return _count_hosts(self.peers)
        return self.counted_hosts


def _count_hosts(peers: Iterable[bytes]) -> dict[bytes, int]:
    """Entries per host (a compact peer without its port) of *peers*, as in ``counted_hosts``."""
    hosts: dict[bytes, int] = {}
    for key in peers:
        host = key[:-2]
        hosts[host] = hosts.get(host, 0) + 1
    return hosts


def _check_limit(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LocalProtocolError(f"{name} is a positive int, got {value!r}")
    return value


class SwarmStore:
    """Peers per info-hash, with expiry, counters and bounded memory.

    It is the built-in tracker handler of :class:`~bip_utracker.TrackerServerCore`
    (:meth:`announce` and :meth:`scrape`); the server core calls its allocation-light
    :meth:`announce_compact` and :meth:`scrape_counts` directly. Time is an argument, as in every
    sans-IO core; *now* must not go backwards.

    Args:
        peer_lifetime: seconds a peer stays after its last announce (announce interval plus
            grace).
        max_swarms: swarms kept at most. A new swarm beyond it evicts the least recently
            announced swarm on probation: swarms start there and are promoted to a protected
            segment (at most 90% of ``max_swarms``) by two hosts in them at once, or by a peer's
            re-announce ``promote_after`` seconds after its previous one, so a flood of new
            info-hashes does not push out the swarms in use. A full protected segment takes a
            swarm only in place of one out of use (none of its peers left); until then the
            promotion is refused (see the module documentation).
        max_peers_per_swarm: peers kept at most in one swarm.
        max_peers: peers kept at most over all swarms (at least ``max_peers_per_swarm``);
            beyond it, whole swarms are evicted, on probation first.
        max_peers_per_host: entries (ports) one IP address keeps at most in one swarm; its
            further ports are answered but not recorded.
        promote_after: seconds between a peer's announces that make the later one a re-announce
            that promotes its swarm, less than ``peer_lifetime`` (a peer silent that long has
            expired); None for a third of ``peer_lifetime`` (half the announce interval, if the
            lifetime is the interval and half an interval of grace), at most half of
            :data:`~bip_utracker.DEFAULT_MAX_ANNOUNCE_INTERVAL` (15 minutes: clients cap a
            longer interval, and a re-announce must count).
        rng: the source of the random peer selection (a seeded one for tests).

    >>> store = SwarmStore(rng=random.Random(1))
    >>> a, b = bytes([10, 0, 0, 1, 0x1A, 0xE1]), bytes([10, 0, 0, 2, 0x1A, 0xE1])
    >>> store.announce_compact(b"h" * 20, a, left=0, event=2, num_want=50, now=0.0)
    (1, 0, [])
    >>> store.announce_compact(b"h" * 20, b, left=5, event=2, num_want=50, now=1.0) == (1, 1, [a])
    True
    >>> store.statistics().protected_swarms  # two hosts: the swarm is real
    1
    """

    __slots__ = (
        "_demoted",
        "_demotions",
        "_evicted_peers",
        "_evicted_probation",
        "_evicted_protected",
        "_expired_peers",
        "_max_peers",
        "_max_peers_per_host",
        "_max_peers_per_swarm",
        "_max_swarms",
        "_peer_count",
        "_peer_lifetime",
        "_probation",
        "_promote_after",
        "_promotions",
        "_protected",
        "_protected_cap",
        "_random",
        "_refusals",
        "_seeder_count",
        "_unrecorded_peers",
    )

    def __init__(
        self,
        *,
        peer_lifetime: float = DEFAULT_PEER_LIFETIME,
        max_swarms: int = DEFAULT_MAX_SWARMS,
        max_peers_per_swarm: int = DEFAULT_MAX_PEERS_PER_SWARM,
        max_peers: int = DEFAULT_MAX_PEERS,
        max_peers_per_host: int = DEFAULT_MAX_PEERS_PER_HOST,
        promote_after: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._peer_lifetime = seconds("peer_lifetime", peer_lifetime)
        self._max_swarms = _check_limit("max_swarms", max_swarms)
        self._max_peers_per_swarm = _check_limit("max_peers_per_swarm", max_peers_per_swarm)
        self._max_peers = _check_limit("max_peers", max_peers)
        self._max_peers_per_host = _check_limit("max_peers_per_host", max_peers_per_host)
        if max_peers < max_peers_per_swarm:
            raise LocalProtocolError(
                f"max_peers ({max_peers}) is less than max_peers_per_swarm ({max_peers_per_swarm})"
            )
        if promote_after is None:
            # Half the interval, for a lifetime of interval plus half of one; but clients cap
            # the interval they wait (bip's Announcer at 30 minutes), so never more than half
            # of that cap, or a longer interval's regular re-announce would never count.
            self._promote_after = min(self._peer_lifetime / 3, DEFAULT_MAX_ANNOUNCE_INTERVAL / 2)
        else:
            self._promote_after = seconds("promote_after", promote_after)
            if self._promote_after >= self._peer_lifetime:
                # A peer that waits that long has expired: its announce is a new peer's.
                raise LocalProtocolError(
                    f"promote_after ({promote_after}) is not less than peer_lifetime "
                    f"({peer_lifetime}): a re-announce could never promote"
                )
        # Below max_swarms (0 for a store of fewer than two swarms: nothing is promoted), so that
        # a new swarm always finds one on probation to evict.
        self._protected_cap = max_swarms * _PROTECTED_PERCENT // 100
        self._random = rng if rng is not None else random.Random()
        # The segments. In each, insertion order is the order of last announce: the least
        # recent swarm comes first. Probation is two queues, the new swarms and the demoted ones,
        # because a demoted swarm is older than most new ones: appended to their queue, it
        # would break its order.
        self._probation: OrderedDict[bytes, _Swarm] = OrderedDict()
        self._demoted: OrderedDict[bytes, _Swarm] = OrderedDict()
        self._protected: OrderedDict[bytes, _Swarm] = OrderedDict()
        self._peer_count = 0
        self._seeder_count = 0
        self._evicted_probation = 0
        self._evicted_protected = 0
        self._evicted_peers = 0
        self._expired_peers = 0
        self._unrecorded_peers = 0
        self._promotions = 0
        self._demotions = 0
        self._refusals = 0

    # -- the handler interface ----------------------------------------------------------------

    def announce(
        self, request: AnnounceRequest, peer: bytes, num_want: int, now: float
    ) -> AnnounceAnswer:
        """Record an announce and answer it (the tracker handler interface).

        Args:
            request: the decoded announce (its info-hash, ``left`` and event matter here).
            peer: the announcer's compact address: the sender's IP and the announced port.
            num_want: how many peers to return at most (already capped by the server).
            now: the current time, in seconds.
        """
        seeders, leechers, peers = self.announce_compact(
            request.info_hash, peer, request.left, request.event, num_want, now
        )
        return AnnounceAnswer(seeders, leechers, tuple(peers))

    def scrape(self, info_hashes: Iterable[bytes], now: float) -> tuple[ScrapeStats, ...]:
        """The statistics of each info-hash, in order (zeros for an unknown one)."""
        return tuple(ScrapeStats(*self.scrape_counts(h, now)) for h in info_hashes)

    # -- the fast path ------------------------------------------------------------------------

    def announce_compact(  # noqa: PLR0917  (the hot path: positional calls are cheaper)
        self, info_hash: bytes, peer: bytes, left: int, event: int, num_want: int, now: float
    ) -> tuple[int, int, list[bytes]]:
        """Record an announce; return ``(seeders, leechers, peers)``.

        *peer* is the announcer's 6-byte (IPv4) or 18-byte (IPv6) compact address and the
        returned peers are compact addresses of that family, at most *num_want* of them, never
        *peer*. *event* is an :class:`AnnounceEvent` value: ``stopped`` removes the peer (and
        returns no peers; it does not refresh the swarm), ``completed`` counts a download once
        per peer; any other value is a regular announce (the server passes 0 for BEP 21's
        ``paused`` and for values BEP 15 does not define). ``left == 0`` makes a seeder, and
        only that: a partial seed (``paused``, ``left`` > 0) is a leecher, as BEP 15's counts
        have no third kind. A new peer whose host holds ``max_peers_per_host`` entries of the
        swarm already is answered as by :meth:`sample_compact`, and not recorded. So is a peer
        of port 0: it listens nowhere (others would dial it in vain), and may neither create
        nor keep alive a swarm.

        The announce may promote the swarm out of probation (two hosts in it at once, or a
        re-announce at least ``promote_after`` seconds after the peer's previous one), and a
        swarm that has shown it is real (a demoted one, or one whose promotion was refused) is
        promoted by any announce recorded or not; if the protected segment is full, only in
        place of a swarm out of use.
        """
        if not (peer[-2] or peer[-1]):  # port 0
            return self.sample_compact(info_hash, peer, 0 if event == _STOPPED else num_want, now)
        if event == _STOPPED:
            return self._leave(info_hash, peer, now)
        # Find the swarm and make it the most recently announced of its segment; the protected
        # segment first: that is where the swarms in use are.
        protected = self._protected
        probation = self._probation
        on_probation = False
        swarm = protected.get(info_hash)
        if swarm is not None:
            protected.move_to_end(info_hash)
        else:
            swarm = probation.get(info_hash)
            if swarm is not None:
                probation.move_to_end(info_hash)
                on_probation = True
            else:
                demoted = self._demoted
                swarm = demoted.pop(info_hash, None) if demoted else None
                if swarm is not None:
                    # It has shown it is real before; it only was the least recent protected.
                    # Promoted again at once if there is room, else the most recent of the new
                    # swarms' queue (not of the demoted: a demotion to come may bring an older
                    # one, which must go before it). (Not asked again in this announce.)
                    if self._may_promote(now):
                        self._protect(info_hash, swarm)
                    else:
                        probation[info_hash] = swarm
                else:
                    return self._new_swarm(info_hash, peer, left == 0, event, now)
        if now >= swarm.trim_at:
            self._trim(swarm, now)
        swarm.last = now
        peers = swarm.peers
        record = peers.get(peer)
        seeder = left == 0
        family = swarm.v4 if len(peer) == _IPV4_SIZE else swarm.v6
        # Whether to promote it (never in a store too small to have a protected segment). A
        # proven swarm on probation had its promotion refused: any announce of it asks again.
        promote = on_probation and swarm.proven
        if record is None:
            hosts = swarm.counted_hosts
            if hosts is None and len(peers) >= self._max_peers_per_host:
                hosts = swarm.counted_hosts = _count_hosts(peers)
            if hosts is not None:
                host = peer[:-2]
                held = hosts.get(host, 0)
                if held >= self._max_peers_per_host:
                    self._unrecorded_peers += 1
                    if promote:
                        self._try_promote(info_hash, swarm, now)
                    return self._sample(swarm, peer, num_want)
                hosts[host] = held + 1
            if on_probation and family and self._protected_cap > 0:
                # Every peer of this family in an unproven swarm on probation is of one network
                # (another would have proven it), so any one of them tells whether this is
                # another.
                size = _NETWORK_SIZE[len(peer)]
                promote = promote or family[0][:size] != peer[:size]
            if len(peers) >= self._max_peers_per_swarm:
                self._evict_peer(swarm)
            if self._peer_count >= self._max_peers:
                self._make_room(swarm)
            record = _Peer()
            record.expires = now + self._peer_lifetime
            record.seeder = seeder
            record.completed = False
            record.index = len(family)
            if not peers:
                swarm.trim_at = record.expires
            family.append(peer)
            peers[peer] = record  # the most recently announced peer of the swarm
            self._peer_count += 1
            if seeder:
                swarm.seeders += 1
                self._seeder_count += 1
        else:
            peers.move_to_end(peer)  # now the most recently announced peer of the swarm
            # Its previous announce was at its expiry minus the lifetime.
            promote = promote or (
                on_probation
                and self._protected_cap > 0
                and now + self._peer_lifetime - record.expires >= self._promote_after
            )
            record.expires = now + self._peer_lifetime
            if record.seeder != seeder:
                change = 1 if seeder else -1
                swarm.seeders += change
                self._seeder_count += change
                record.seeder = seeder
        if event == _COMPLETED and not record.completed:
            record.completed = True
            swarm.completed += 1
        if promote:
            self._try_promote(info_hash, swarm, now)
        seeders = swarm.seeders
        leechers = len(peers) - seeders

        # A random run of the family's list, minus the announcer (who is in it).
        count = len(family)
        if num_want <= 0 or count <= 1:
            return seeders, leechers, []
        index = record.index
        if count - 1 <= num_want:
            chosen = family.copy()
            chosen[index] = chosen[-1]
            chosen.pop()
            return seeders, leechers, chosen
        take = num_want + 1
        start = int(self._random.random() * count)
        end = start + take
        chosen = family[start:end] if end <= count else family[start:] + family[: end - count]
        offset = (index - start) % count
        if offset < take:
            chosen[offset] = chosen[-1]
        chosen.pop()
        return seeders, leechers, chosen

    def _new_swarm(
        self, info_hash: bytes, peer: bytes, seeder: bool, event: int, now: float
    ) -> tuple[int, int, list[bytes]]:
        """Make *info_hash*'s swarm, the most recent on probation, with *peer* its one peer.

        :meth:`announce_compact` for an info-hash without a swarm (each announce of a flood of
        new info-hashes), without the steps a swarm with peers needs: no host is full and
        nobody is evicted from it, nothing is trimmed or promoted (one host, no re-announce),
        and there is nobody to give the announcer.
        """
        probation = self._probation
        demoted = self._demoted
        if len(probation) + len(demoted) + len(self._protected) >= self._max_swarms:
            if probation and not demoted:
                # What _evict_swarm(None) does in this case, the usual one, spelt out: under a
                # flood, a new swarm evicts one at each announce, and the call costs as much.
                _, evicted = probation.popitem(last=False)
                count = len(evicted.peers)
                self._evicted_probation += 1
                self._evicted_peers += count
                self._peer_count -= count
                self._seeder_count -= evicted.seeders
            else:
                self._evict_swarm(None)
        expires = now + self._peer_lifetime
        swarm = _Swarm()
        swarm.peers = OrderedDict()
        swarm.counted_hosts = None
        swarm.v4 = []
        swarm.v6 = []
        swarm.seeders = 0
        swarm.completed = 0
        swarm.last = now
        swarm.proven = False
        swarm.trim_at = expires  # its one peer's expiry
        probation[info_hash] = swarm
        if self._peer_count >= self._max_peers:
            self._make_room(swarm)
        record = _Peer()
        record.expires = expires
        record.seeder = seeder
        record.completed = event == _COMPLETED
        record.index = 0
        if record.completed:
            swarm.completed = 1
        (swarm.v4 if len(peer) == _IPV4_SIZE else swarm.v6).append(peer)
        swarm.peers[peer] = record
        self._peer_count += 1
        if seeder:
            swarm.seeders = 1
            self._seeder_count += 1
            return 1, 0, []
        return 0, 1, []

    def _leave(self, info_hash: bytes, peer: bytes, now: float) -> tuple[int, int, list[bytes]]:
        """A ``stopped`` announce: drop *peer*'s entry, answer the counts and no peers.

        The swarm is neither made nor moved to the recent end: leaving is no sign of life, and
        anybody may send a ``stopped`` (for a port it never announced) to keep a swarm it wants
        kept from expiry and eviction.
        """
        swarm = self._find(info_hash)
        if swarm is None:
            return 0, 0, []
        if now >= swarm.trim_at:
            self._trim(swarm, now)
        peers = swarm.peers
        record = peers.pop(peer, None)
        if record is not None:
            self._remove(swarm, peer, record)
        return swarm.seeders, len(peers) - swarm.seeders, []

    def sample_compact(
        self, info_hash: bytes, peer: bytes, num_want: int, now: float
    ) -> tuple[int, int, list[bytes]]:
        """Answer an announcer without recording it: ``(seeders, leechers, peers)``.

        For a peer that listens nowhere (it announced port 0): handing its address out would
        only cost other peers a failed dial, and its announce must not create or refresh a
        swarm. The peers are a random selection of at most *num_want* compact addresses of
        *peer*'s family (6 or 18 bytes), never *peer* itself; an unknown info-hash answers
        zeros and creates nothing.
        """
        swarm = self._find(info_hash)
        if swarm is None:
            return 0, 0, []
        if now >= swarm.trim_at:
            self._trim(swarm, now)
        return self._sample(swarm, peer, num_want)

    def _sample(self, swarm: _Swarm, peer: bytes, num_want: int) -> tuple[int, int, list[bytes]]:
        """Counts and up to *num_want* random peers of *peer*'s family, never *peer*."""
        peers = swarm.peers
        seeders = swarm.seeders
        leechers = len(peers) - seeders
        family = swarm.v4 if len(peer) == _IPV4_SIZE else swarm.v6
        count = len(family)
        if num_want <= 0 or not count:
            return seeders, leechers, []
        if count <= num_want:
            chosen = family.copy()
        else:
            start = int(self._random.random() * count)
            end = start + num_want
            chosen = family[start:end] if end <= count else family[start:] + family[: end - count]
        if peer in peers:  # only if it was recorded by a direct call: never name the asker
            chosen = [address for address in chosen if address != peer]
        return seeders, leechers, chosen

    def scrape_counts(self, info_hash: bytes, now: float) -> tuple[int, int, int]:
        """``(seeders, completed, leechers)`` of *info_hash*: zeros for an unknown one.

        A scrape is no sign that a swarm is real (anybody may scrape any info-hash): it neither
        promotes nor refreshes it.
        """
        swarm = self._find(info_hash)
        if swarm is None:
            return 0, 0, 0
        if now >= swarm.trim_at:
            self._trim(swarm, now)
        return swarm.seeders, swarm.completed, len(swarm.peers) - swarm.seeders

    # -- expiry and eviction ------------------------------------------------------------------

    def expire(self, now: float, limit: int | None = None) -> bool:
        """Drop the swarms whose every peer expired by *now*; True if some are left to drop.

        At most *limit* swarms go per call (None: all), to bound the time one call takes; each
        segment is in last-announce order, so this looks at the front of each and never scans
        live swarms. Swarms whose peers all left (``stopped``) go the same way, with their
        ``completed`` counter.
        """
        lifetime = self._peer_lifetime
        dropped = 0
        for segment in self._segments():
            while segment:
                if segment[next(iter(segment))].last + lifetime > now:
                    break
                if limit is not None and dropped >= limit:
                    return True
                _, swarm = segment.popitem(last=False)
                self._expired_peers += len(swarm.peers)
                self._forget(swarm)
                dropped += 1
        return False

    def _trim(self, swarm: _Swarm, now: float) -> None:
        """Drop the expired peers at the front of *swarm*."""
        peers = swarm.peers
        while peers:
            key = next(iter(peers))
            record = peers[key]
            if record.expires > now:
                swarm.trim_at = record.expires
                return
            peers.popitem(last=False)
            self._remove(swarm, key, record)
            self._expired_peers += 1
        swarm.trim_at = math.inf

    def _remove(self, swarm: _Swarm, key: bytes, record: _Peer) -> None:
        """Count out *key* (already out of ``swarm.peers``) and take it out of its family's list."""
        family = swarm.v4 if len(key) == _IPV4_SIZE else swarm.v6
        last = family.pop()
        if last != key:
            family[record.index] = last
            swarm.peers[last].index = record.index
        self._peer_count -= 1
        if record.seeder:
            swarm.seeders -= 1
            self._seeder_count -= 1
        hosts = swarm.counted_hosts
        if hosts is not None:
            host = key[:-2]
            held = hosts[host] - 1
            if held:
                hosts[host] = held
            else:
                del hosts[host]

    def _forget(self, swarm: _Swarm) -> None:
        self._peer_count -= len(swarm.peers)
        self._seeder_count -= swarm.seeders

    def _find(self, info_hash: bytes) -> _Swarm | None:
        """The swarm of *info_hash*, in whichever segment, or None."""
        swarm = self._protected.get(info_hash)
        if swarm is None:
            swarm = self._probation.get(info_hash)
            if swarm is None:
                swarm = self._demoted.get(info_hash)
        return swarm

    def _try_promote(self, info_hash: bytes, swarm: _Swarm, now: float) -> None:
        """A swarm on probation has shown it is real: protected, unless that would demote a
        protected swarm still in use (it then stays on probation, proven, and any announce
        of it asks again)."""
        swarm.proven = True
        if self._may_promote(now):
            del self._probation[info_hash]
            self._protect(info_hash, swarm)

    def _may_promote(self, now: float) -> bool:
        """Whether a swarm may be promoted at *now*; if not, count a refused promotion.

        Yes while the protected segment has room, or when the swarm a promotion would demote
        (its least recently announced) is no longer in use: not announced for ``peer_lifetime``,
        so that no peer of it is left. Demoting a swarm in use would hand it to the evictions of
        probation, where a flood's new swarms push it out before its next announce; two hosts
        promoting the flood's own swarms would so empty the protected segment.
        """
        protected = self._protected
        if len(protected) < self._protected_cap:
            return True
        if protected and protected[next(iter(protected))].last + self._peer_lifetime <= now:
            return True
        self._refusals += 1
        return False

    def _protect(self, info_hash: bytes, swarm: _Swarm) -> None:
        """Promote *swarm* (already out of probation) to the recent end of the protected
        segment; if that is over its cap, demote the segment's least recently announced (which
        :meth:`_may_promote` said is no longer in use)."""
        protected = self._protected
        protected[info_hash] = swarm
        swarm.proven = True
        self._promotions += 1
        if len(protected) > self._protected_cap:
            # Not *swarm*: the cap is at least 1 if promoting, and *swarm* is the most recent.
            key, demoted = protected.popitem(last=False)
            self._demoted[key] = demoted
            self._demotions += 1

    def _evict_swarm(self, keep: _Swarm | None) -> bool:
        """Drop the least recently announced swarm on probation (new or demoted) or, if there
        is none, the least recently announced protected one; never *keep* (the swarm being
        announced to, the most recent of its segment). False if there was none to drop."""
        # (The two queues spelt out, not looped over: a flood of new info-hashes evicts a swarm
        # at each announce.)
        segment: OrderedDict[bytes, _Swarm] | None = None
        oldest = math.inf
        probation = self._probation
        demoted = self._demoted
        if probation:
            front = probation[next(iter(probation))]
            if front is not keep:
                segment, oldest = probation, front.last
        if demoted:
            front = demoted[next(iter(demoted))]
            if front is not keep and front.last < oldest:
                segment = demoted
        if segment is None:
            segment = self._protected
            if not segment or segment[next(iter(segment))] is keep:
                return False
            self._evicted_protected += 1
        else:
            self._evicted_probation += 1
        _, swarm = segment.popitem(last=False)
        count = len(swarm.peers)
        self._evicted_peers += count
        self._peer_count -= count
        self._seeder_count -= swarm.seeders
        return True

    def _evict_peer(self, swarm: _Swarm) -> None:
        """Drop the least recently announced peer of *swarm*."""
        key, record = swarm.peers.popitem(last=False)
        self._remove(swarm, key, record)
        self._evicted_peers += 1

    def _make_room(self, current: _Swarm) -> None:
        """Evict whole swarms, on probation first, least recently announced first, until one
        more peer fits.

        *current*, the swarm being announced to, is never evicted; alone, it cannot be over the
        bound: the per-swarm limit (at most ``max_peers``) already made room in it.
        """
        while self._peer_count >= self._max_peers and self._evict_swarm(current):
            pass

    # -- inspection ---------------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of swarms."""
        return len(self._probation) + len(self._demoted) + len(self._protected)

    def __contains__(self, info_hash: object) -> bool:
        """Whether *info_hash* has a swarm."""
        return (
            info_hash in self._protected
            or info_hash in self._probation
            or info_hash in self._demoted
        )

    def info_hashes(self) -> Iterator[bytes]:
        """The info-hashes with a swarm, least recently announced first (over all segments)."""
        merged = heapq.merge(
            *(list(segment.items()) for segment in self._segments()),
            key=lambda item: item[1].last,
        )
        return iter([key for key, _ in merged])

    def protected_info_hashes(self) -> Iterator[bytes]:
        """The info-hashes whose swarm is protected (promoted, not demoted since), least recently
        announced first."""
        return iter(list(self._protected))

    def _segments(self) -> tuple[OrderedDict[bytes, _Swarm], ...]:
        """The three queues: new swarms on probation, demoted ones, protected ones."""
        return (self._probation, self._demoted, self._protected)

    def peers(self, info_hash: bytes) -> tuple[PeerAddress, ...]:
        """Every peer of *info_hash*'s swarm (both families), least recently announced first;
        expired peers not yet dropped included."""
        swarm = self._find(info_hash)
        if swarm is None:
            return ()
        return tuple(PeerAddress.from_compact(key) for key in swarm.peers)

    @property
    def peer_lifetime(self) -> float:
        """Seconds a peer stays after its last announce."""
        return self._peer_lifetime

    def statistics(self) -> SwarmStatistics:
        """A snapshot of the store's size and evictions (expired peers that no announce,
        scrape or :meth:`expire` has dropped yet still count)."""
        return SwarmStatistics(
            swarms=len(self),
            peers=self._peer_count,
            seeders=self._seeder_count,
            leechers=self._peer_count - self._seeder_count,
            evicted_swarms=self._evicted_probation + self._evicted_protected,
            evicted_peers=self._evicted_peers,
            expired_peers=self._expired_peers,
            unrecorded_peers=self._unrecorded_peers,
            protected_swarms=len(self._protected),
            promoted_swarms=self._promotions,
            demoted_swarms=self._demotions,
            evicted_probation_swarms=self._evicted_probation,
            evicted_protected_swarms=self._evicted_protected,
            refused_promotions=self._refusals,
        )
