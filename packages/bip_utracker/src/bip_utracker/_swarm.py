"""The swarm store: who is in which swarm, for how long, and what to tell an announcer.

A tracker remembers, per info-hash, the peers that announced it: their address (the sender's IP
and the announced TCP port, in compact form), whether they are seeding, and until when they
count as present (their last announce plus ``peer_lifetime``: the announce interval and some
grace). It answers an announce with the swarm's counts and a random selection of peers of the
announcer's address family (IPv4 peers to an IPv4 announcer, IPv6 to IPv6: BEP 15 sends them in
the family of the request), never the announcer itself.

Peers are keyed by that address, not by peer id: the address is proven by the connection id,
while any client could claim another's peer id and overwrite its entry.

Memory is bounded whatever announcers send, by three limits and one rule, least recently
announced first out:

- ``max_swarms``: a new swarm beyond it evicts the swarm announced to least recently;
- ``max_peers_per_swarm``: a new peer in a full swarm evicts that swarm's least recently
  announced peer;
- ``max_peers``: a new peer beyond the total evicts whole swarms, least recently announced first.

One more limit keeps a single host from pushing the others out of a swarm: peers are keyed by
address and port, so one IP announcing a thousand ports would otherwise be a thousand peers,
each new one evicting an honest one. ``max_peers_per_host`` bounds the entries one host (one IP
address) has in one swarm; beyond it, the host's new ports are answered but not recorded (as a
peer that listens nowhere) until one of its entries leaves or expires. The default leaves room
for many clients behind one NAT address. (A holder of a whole IPv6 /64 has addresses to spare:
against it, the server's rate limit per /64 is what slows the flood.)

Swarms that clients keep announcing to stay at the recent end, so a flood of announces for
random info-hashes pushes out only swarms nobody announced to lately (and what the flood itself
made). Expiry needs no scan: both the swarms and each swarm's peers are kept in the order of their
last announce, so the expired ones are always at the front. An announce or scrape trims the
front of its swarm; :meth:`SwarmStore.expire` drops the swarms whose every peer has expired.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from bip_handshake import PeerAddress

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
    """

    swarms: int
    peers: int
    seeders: int
    leechers: int
    evicted_swarms: int
    evicted_peers: int
    expired_peers: int
    unrecorded_peers: int = 0


class _Peer:
    """One peer of a swarm; mutable, and slotted because a store holds up to a million."""

    __slots__ = ("completed", "expires", "index", "seeder")

    def __init__(self, expires: float, seeder: bool, index: int) -> None:
        self.expires = expires
        self.seeder = seeder
        self.completed = False  # whether its "completed" event was counted already
        self.index = index  # its position in its family's list, for O(1) removal


class _Swarm:
    """The peers of one info-hash, in order of last announce, and its counters."""

    __slots__ = ("completed", "hosts", "last", "peers", "seeders", "trim_at", "v4", "v6")

    def __init__(self) -> None:
        self.peers: dict[bytes, _Peer] = {}
        # Entries per host, for max_peers_per_host; a host with none has no key. A host is
        # the IP: a compact peer without its 2-byte port (not the /64 of an IPv6 address, as
        # for the rate limit: hosting providers hand out addresses of one /64 to many).
        self.hosts: dict[bytes, int] = {}
        # The same addresses per family, in a list, to pick a random run of them in O(k).
        self.v4: list[bytes] = []
        self.v6: list[bytes] = []
        self.seeders = 0
        self.completed = 0
        self.last = -math.inf
        # No peer expires before this (the front peer's expiry when last looked at): one
        # comparison tells an announce whether there is anything to trim.
        self.trim_at = math.inf


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
        max_swarms: swarms kept at most.
        max_peers_per_swarm: peers kept at most in one swarm.
        max_peers: peers kept at most over all swarms (at least ``max_peers_per_swarm``).
        max_peers_per_host: entries (ports) one IP address keeps at most in one swarm; its
            further ports are answered but not recorded.
        rng: the source of the random peer selection (a seeded one for tests).

    >>> store = SwarmStore(rng=random.Random(1))
    >>> a, b = bytes([10, 0, 0, 1, 0x1A, 0xE1]), bytes([10, 0, 0, 2, 0x1A, 0xE1])
    >>> store.announce_compact(b"h" * 20, a, left=0, event=2, num_want=50, now=0.0)
    (1, 0, [])
    >>> store.announce_compact(b"h" * 20, b, left=5, event=2, num_want=50, now=1.0) == (1, 1, [a])
    True
    """

    __slots__ = (
        "_evicted_peers",
        "_evicted_swarms",
        "_expired_peers",
        "_max_peers",
        "_max_peers_per_host",
        "_max_peers_per_swarm",
        "_max_swarms",
        "_peer_count",
        "_peer_lifetime",
        "_random",
        "_seeder_count",
        "_swarms",
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
        rng: random.Random | None = None,
    ) -> None:
        if (
            isinstance(peer_lifetime, bool)
            or not isinstance(peer_lifetime, int | float)
            or not math.isfinite(peer_lifetime)
            or peer_lifetime <= 0
        ):
            raise LocalProtocolError(f"peer_lifetime is a positive number, got {peer_lifetime!r}")
        self._peer_lifetime = float(peer_lifetime)
        self._max_swarms = _check_limit("max_swarms", max_swarms)
        self._max_peers_per_swarm = _check_limit("max_peers_per_swarm", max_peers_per_swarm)
        self._max_peers = _check_limit("max_peers", max_peers)
        self._max_peers_per_host = _check_limit("max_peers_per_host", max_peers_per_host)
        if max_peers < max_peers_per_swarm:
            raise LocalProtocolError(
                f"max_peers ({max_peers}) is less than max_peers_per_swarm ({max_peers_per_swarm})"
            )
        self._random = rng if rng is not None else random.Random()
        # Insertion order is the order of last announce: the least recent swarm comes first.
        self._swarms: dict[bytes, _Swarm] = {}
        self._peer_count = 0
        self._seeder_count = 0
        self._evicted_swarms = 0
        self._evicted_peers = 0
        self._expired_peers = 0
        self._unrecorded_peers = 0

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
        per peer; ``left == 0`` makes a seeder. A new peer whose host holds
        ``max_peers_per_host`` entries of the swarm already is answered as by
        :meth:`sample_compact`, and not recorded. So is a peer of port 0: it listens nowhere
        (others would dial it in vain), and may neither create nor keep alive a swarm.
        """
        if not (peer[-2] or peer[-1]):  # port 0
            return self.sample_compact(info_hash, peer, 0 if event == _STOPPED else num_want, now)
        if event == _STOPPED:
            return self._leave(info_hash, peer, now)
        swarms = self._swarms
        swarm = swarms.pop(info_hash, None)
        if swarm is None:
            if len(swarms) >= self._max_swarms:
                self._evict_swarm()
            swarm = _Swarm()
        elif now >= swarm.trim_at:
            self._trim(swarm, now)
        swarms[info_hash] = swarm  # now the most recently announced
        swarm.last = now
        peers = swarm.peers
        record = peers.pop(peer, None)
        seeder = left == 0
        family = swarm.v4 if len(peer) == _IPV4_SIZE else swarm.v6
        if record is None:
            hosts = swarm.hosts
            host = peer[:-2]
            held = hosts.get(host, 0)
            if held >= self._max_peers_per_host:
                self._unrecorded_peers += 1
                return self._sample(swarm, peer, num_want)
            hosts[host] = held + 1
            if len(peers) >= self._max_peers_per_swarm:
                self._evict_peer(swarm)
            if self._peer_count >= self._max_peers:
                self._make_room()
            record = _Peer(now + self._peer_lifetime, seeder, len(family))
            if not peers:
                swarm.trim_at = record.expires
            family.append(peer)
            self._peer_count += 1
            if seeder:
                swarm.seeders += 1
                self._seeder_count += 1
        else:
            record.expires = now + self._peer_lifetime
            if record.seeder != seeder:
                change = 1 if seeder else -1
                swarm.seeders += change
                self._seeder_count += change
                record.seeder = seeder
        peers[peer] = record  # now the most recently announced peer of the swarm
        if event == _COMPLETED and not record.completed:
            record.completed = True
            swarm.completed += 1
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

    def _leave(self, info_hash: bytes, peer: bytes, now: float) -> tuple[int, int, list[bytes]]:
        """A ``stopped`` announce: drop *peer*'s entry, answer the counts and no peers.

        The swarm is neither made nor moved to the recent end: leaving is no sign of life, and
        anybody may send a ``stopped`` (for a port it never announced) to keep a swarm it wants
        kept from expiry and eviction.
        """
        swarm = self._swarms.get(info_hash)
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
        swarm = self._swarms.get(info_hash)
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
        """``(seeders, completed, leechers)`` of *info_hash*: zeros for an unknown one."""
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            return 0, 0, 0
        if now >= swarm.trim_at:
            self._trim(swarm, now)
        return swarm.seeders, swarm.completed, len(swarm.peers) - swarm.seeders

    # -- expiry and eviction ------------------------------------------------------------------

    def expire(self, now: float, limit: int | None = None) -> bool:
        """Drop the swarms whose every peer expired by *now*; True if some are left to drop.

        At most *limit* swarms go per call (None: all), to bound the time one call takes; the
        least recently announced come first, so this never scans live swarms. Swarms whose
        peers all left (``stopped``) go the same way, with their ``completed`` counter.
        """
        swarms = self._swarms
        lifetime = self._peer_lifetime
        dropped = 0
        while swarms:
            key = next(iter(swarms))
            swarm = swarms[key]
            if swarm.last + lifetime > now:
                return False
            if limit is not None and dropped >= limit:
                return True
            del swarms[key]
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
            del peers[key]
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
        hosts = swarm.hosts
        host = key[:-2]
        held = hosts[host] - 1
        if held:
            hosts[host] = held
        else:
            del hosts[host]

    def _forget(self, swarm: _Swarm) -> None:
        self._peer_count -= len(swarm.peers)
        self._seeder_count -= swarm.seeders

    def _evict_swarm(self) -> None:
        """Drop the least recently announced swarm."""
        key = next(iter(self._swarms))
        swarm = self._swarms.pop(key)
        self._evicted_swarms += 1
        self._evicted_peers += len(swarm.peers)
        self._forget(swarm)

    def _evict_peer(self, swarm: _Swarm) -> None:
        """Drop the least recently announced peer of *swarm*."""
        peers = swarm.peers
        key = next(iter(peers))
        record = peers.pop(key)
        self._remove(swarm, key, record)
        self._evicted_peers += 1

    def _make_room(self) -> None:
        """Evict whole swarms, least recently announced first, until one more peer fits.

        The swarm being announced to is the most recent, so it goes last; alone, it cannot be
        over the bound: the per-swarm limit (at most ``max_peers``) already made room in it.
        """
        while self._peer_count >= self._max_peers and len(self._swarms) > 1:
            self._evict_swarm()

    # -- inspection ---------------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of swarms."""
        return len(self._swarms)

    def __contains__(self, info_hash: object) -> bool:
        """Whether *info_hash* has a swarm."""
        return info_hash in self._swarms

    def info_hashes(self) -> Iterator[bytes]:
        """The info-hashes with a swarm, least recently announced first."""
        return iter(list(self._swarms))

    def peers(self, info_hash: bytes) -> tuple[PeerAddress, ...]:
        """Every peer of *info_hash*'s swarm (both families), least recently announced first;
        expired peers not yet dropped included."""
        swarm = self._swarms.get(info_hash)
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
            swarms=len(self._swarms),
            peers=self._peer_count,
            seeders=self._seeder_count,
            leechers=self._peer_count - self._seeder_count,
            evicted_swarms=self._evicted_swarms,
            evicted_peers=self._evicted_peers,
            expired_peers=self._expired_peers,
            unrecorded_peers=self._unrecorded_peers,
        )
