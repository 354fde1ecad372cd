"""The peers other nodes announced to us (``announce_peer``), per info-hash, bounded.

A DHT node stores, for each info-hash, the address (IP and port) and the seed flag
(BEP 33) of every peer that announced it, forgets an announce after ``peer_ttl`` (30 min,
as libtorrent), and answers ``get_peers`` with a random sample small enough for a UDP
datagram, or with BEP 33 scrape bloom filters.

A peer is its IP and port, as libtorrent's ``dht_storage`` keys them: two clients behind
one NAT (or on one host) announcing the same info-hash are two peers, and a re-announce of an
IP and port refreshes its entry. One IP holds at most :data:`MAX_PORTS_PER_IP` entries per
info-hash: a newcomer port beyond that (or in a swarm's family that is full) takes the place of
that IP's least recently announced entry, so a client that restarts on a new port replaces its
own stale entry, and one host cannot fill a swarm's list from many ports.

Memory is bounded whatever the network announces: at most ``max_peers_per_hash`` IPv4 and as
many IPv6 peers per info-hash (each family its own cap, as libtorrent's ``peers4`` /
``peers6``), ``max_hashes`` info-hashes and ``max_peers`` in all. When a cap is hit:

- an info-hash's family full, or ``max_hashes`` reached by a new info-hash: the newcomer is
  refused and what is stored stays, as libtorrent's ``announce_peer`` does ("we're at
  capacity, drop the announce"); a peer already stored still refreshes its entry (and an IP
  already stored may move one of its entries to a new port, as above). The node
  gives no write token to a ``get_peers`` whose announce would be refused
  (:meth:`PeerStore.accepts`), so the requester announces to other nodes near the hash
  instead. Evicting instead would let one host empty the store: 500 addresses of one IPv6
  /64 (each its own rate limit and token) would push every IPv4 peer out of a swarm, and
  one IPv4 host within its rate limit would evict every small swarm in minutes. Swarms whose
  announces have all expired count until :meth:`PeerStore.expire` runs (the node runs it
  every maintenance tick);
- ``max_peers`` reached: the least recently announced peer of the info-hash with the most
  peers makes room, so no single swarm can crowd the others out.

Refusing newcomers at a cap means whoever fills a cap first keeps it, so one network's share
is bounded too: one /24 (IPv4) or /64 (IPv6) has entries in at most ``max_hashes // 8``
info-hashes (an eighth of the hash slots), at most ``max_peers // 8`` entries in all (an
eighth of the store) and at most ``max_peers_per_hash // 8`` entries in one swarm's family
(each at least 1); a newcomer of a network at any of these bounds is refused (no token) like
one at a cap: one that would add a hash to its network's share, one over its network's share
of the store, or one over its network's share of the swarm. Without them one IPv4 host
re-announcing 2000 random hashes every 30 minutes (2.2 queries a second, well within the rate
limit) held every hash slot for ever, and every new swarm was refused; and 62 hosts of one
IPv6 /64 in 250 swarms held 15,500 entries, so four /64s filled ``max_peers`` and the
eviction (the largest swarm gives way) pushed honest peers out. The hash bound counts hashes,
not entries: many hosts of one network (a campus, a carrier-grade NAT) in a few popular
swarms each reach their share of every swarm. The network is the routing
table's (``_network``); local addresses (a LAN, loopback: those BEP 42 exempts) share a /24
honestly and are exempt, as there.

API (sans-IO: time is passed in, randomness from the caller's ``random.Random``):

- :class:`PeerStore` ``(*, max_peers_per_hash=500, max_hashes=2000, max_peers=50_000,
  peer_ttl=1800.0)``;
- ``announce(info_hash, address, *, seed, now) -> bool`` (False: not stored: the address
  is not connectable, or the store refuses a newcomer at a cap);
- ``accepts(info_hash, address, now) -> bool``: whether an announce from that IP would be
  stored, whatever its port (the node's condition for a write token: caps and network bounds
  alike);
- ``get_peers(info_hash, family, rng, now, *, max_count=None, noseed=False) ->
  list[PeerAddress]``: at most ``max_count`` (default :func:`max_values`) random live
  peers of the family;
- ``scrape(info_hash, now) -> (seeds, downloaders)``: two :class:`ScrapeBloom`;
- ``counts(info_hash, now) -> (seeds, downloaders)``; ``has_peers(info_hash, now)``;
  ``expire(now)``;
  ``sample_info_hashes(count, rng) -> list[bytes]`` (BEP 51); ``len(store)`` (peers),
  ``hash_count``, ``info_hash in store``.

>>> import random
>>> from bip_handshake import PeerAddress
>>> store = PeerStore()
>>> h = bytes(20)
>>> store.announce(h, PeerAddress.parse("10.0.0.1:6881"), seed=True, now=0.0)
True
>>> store.get_peers(h, 4, random.Random(0), now=60.0)
[PeerAddress(host=IPv4Address('10.0.0.1'), port=6881)]
>>> store.get_peers(h, 4, random.Random(0), now=1801.0)
[]
"""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv6Address

from bip_handshake import PeerAddress

from ._bloom import ScrapeBloom
from ._errors import LocalProtocolError
from ._routing import _network

__all__ = [
    "DEFAULT_MAX_HASHES",
    "DEFAULT_MAX_PEERS",
    "DEFAULT_MAX_PEERS_PER_HASH",
    "DEFAULT_PEER_TTL",
    "MAX_PORTS_PER_IP",
    "PeerStore",
    "max_values",
]

DEFAULT_PEER_TTL = 30 * 60.0
"""Seconds an announced peer is kept without announcing again (BEP 5 suggests 30 minutes)."""

DEFAULT_MAX_PEERS_PER_HASH = 500
"""The most peers of one address family a :class:`PeerStore` keeps for one info-hash by
default (libtorrent's ``dht_max_peers``; IPv4 and IPv6 each have this cap)."""

DEFAULT_MAX_HASHES = 2000
"""The most info-hashes a :class:`PeerStore` keeps peers for by default."""

DEFAULT_MAX_PEERS = 50_000
"""The most peers a :class:`PeerStore` keeps in all by default (its memory bound)."""

MAX_PORTS_PER_IP = 4
"""The most entries (ports) one IP holds in one info-hash's list. Enough for the few clients
of one household or office behind a NAT, or a seedbox running several, in the same swarm;
small beside a swarm's cap (500) and its network's share (a /24 or /64 holds an eighth), so one
host weighs at most four times an honest peer in the random sample a ``get_peers`` answer
gives, and cannot fill the list from many ports. libtorrent sets no such bound; without one,
keying by port would let one IP take its network's whole share of a swarm."""

_INFO_HASH_SIZE = 20

# A stored peer's key is its compact form: 4 or 16 bytes of IP, 2 of port.
_COMPACT_V4 = 6
_COMPACT_V6 = 18

# A network's share (see the module docstring): 1/8 of the hash slots and 1/8 of the entries
# over the store, 1/8 of a swarm's family cap in one swarm: it takes eight networks or more to
# fill any of these caps.
_NETWORK_SHARE = 8

# How many compact peers fit in a get_peers response. A reply also carries the header,
# id, token and 8 nodes (26 bytes each over IPv4, 38 over IPv6); each value costs its
# compact form plus the bencoded length prefix ("6:" / "18:"). 100 IPv4 values (800 bytes)
# is libtorrent's default; 40 IPv6 values (840 bytes) keep the reply under the 1280-byte
# IPv6 minimum MTU with nodes6 alongside.
_MAX_VALUES = {4: 100, 6: 40}


def max_values(family: int) -> int:
    """How many peers of ``family`` (4 or 6) a get_peers reply carries at most."""
    if family not in _MAX_VALUES:
        raise LocalProtocolError(f"an address family is 4 or 6, got {family!r}")
    return _MAX_VALUES[family]


def _network_key(host: IPv4Address | IPv6Address) -> int | None:
    """The /24 or /64 of a stored (unmapped) IP as one int, the family in the low bit so an
    IPv4 /24 and an IPv6 /64 of the same number stay apart; None for a local address."""
    prefix = _network(host)
    if prefix is None:
        return None
    return prefix << 1 | (host.version == 6)


def _ip_of(key: bytes) -> bytes:
    """The packed IP of a stored peer's key (its compact form: the IP, then the port)."""
    return key[:-2]


class _Peer:
    __slots__ = ("announced_at", "network", "seed")

    def __init__(self, seed: bool, announced_at: float, network: int | None) -> None:
        self.seed = seed
        self.announced_at = announced_at
        self.network = network  # _network_key of its IP, kept to count it down when dropped


class _Swarm:
    """The peers of one info-hash, keyed by compact peer (packed IP and port), least recently
    announced first."""

    __slots__ = ("index", "ips", "networks", "peers", "v6")

    def __init__(self, index: int) -> None:
        self.peers: dict[bytes, _Peer] = {}
        # packed IP -> its keys in peers, in peers' order (least recently announced first; at
        # most MAX_PORTS_PER_IP): an IP's oldest entry is found without a scan of peers. An
        # IP is here iff it has a peer here.
        self.ips: dict[bytes, list[bytes]] = {}
        self.index = index  # position in PeerStore._hash_list, for O(1) random sampling
        self.v6 = 0  # how many of peers are IPv6 (the rest IPv4): each family has its own cap
        # peers per network key (non-local ones; the key holds the family): at most
        # max_peers_per_hash // 8 each; a network's key is here iff it has a peer here
        self.networks: dict[int, int] = {}

    def family_count(self, packed_size: int) -> int:
        """How many peers of the family of a packed IP of ``packed_size`` bytes it holds."""
        return self.v6 if packed_size == 16 else len(self.peers) - self.v6


def _add(counts: dict[int, int], key: int, change: int) -> int:
    """Add ``change`` to ``counts[key]`` and return the new count; a count reaching zero is
    deleted, so the dict holds only networks with entries (it stays bounded)."""
    left = counts.get(key, 0) + change
    if left:
        counts[key] = left
    else:
        del counts[key]
    return left


def _host(packed: bytes) -> IPv4Address | IPv6Address:
    return IPv4Address(packed) if len(packed) == 4 else IPv6Address(packed)


class PeerStore:
    """Announced peers per info-hash, with expiry and caps; see the module docstring.

    Attributes:
        max_peers_per_hash: IPv4 peers, and IPv6 peers, kept per info-hash at most.
        max_hashes: info-hashes kept at most.
        max_peers: peers kept in all at most.
        peer_ttl: seconds an announce is kept.
    """

    __slots__ = (
        "_by_count",
        "_hash_list",
        "_network_cap",
        "_network_entries",
        "_network_entry_cap",
        "_networks",
        "_swarm_network_cap",
        "_swarms",
        "_top",
        "_total",
        "max_hashes",
        "max_peers",
        "max_peers_per_hash",
        "peer_ttl",
    )

    def __init__(
        self,
        *,
        max_peers_per_hash: int = DEFAULT_MAX_PEERS_PER_HASH,
        max_hashes: int = DEFAULT_MAX_HASHES,
        max_peers: int = DEFAULT_MAX_PEERS,
        peer_ttl: float = DEFAULT_PEER_TTL,
    ) -> None:
        for name, value in (
            ("max_peers_per_hash", max_peers_per_hash),
            ("max_hashes", max_hashes),
            ("max_peers", max_peers),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LocalProtocolError(f"{name} is a positive int, got {value!r}")
        if not peer_ttl > 0:
            raise LocalProtocolError(f"peer_ttl must be positive, got {peer_ttl}")
        self.max_peers_per_hash = max_peers_per_hash
        self.max_hashes = max_hashes
        self.max_peers = max_peers
        self.peer_ttl = float(peer_ttl)
        self._swarms: dict[bytes, _Swarm] = {}
        self._hash_list: list[bytes] = []
        # Info-hashes grouped by peer count (each group in the order they reached that
        # count), so the fewest-peers and most-peers victims are found without a scan.
        self._by_count: dict[int, dict[bytes, None]] = {}
        self._top = 0  # an upper bound of the highest non-empty count
        self._total = 0
        # per non-local network, how many info-hashes it has an entry in (the swarms whose
        # ``networks`` hold its key) and how many entries it has in all (the sum of its counts
        # in the swarms' ``networks``); the bounds on these and on its entries in one swarm's
        # family. Both counts are kept: many hosts of a network in few hashes reach no hash
        # bound, yet without the entry bound four /64s filled max_peers.
        self._networks: dict[int, int] = {}
        self._network_entries: dict[int, int] = {}
        self._network_cap = max(1, max_hashes // _NETWORK_SHARE)
        self._network_entry_cap = max(1, max_peers // _NETWORK_SHARE)
        self._swarm_network_cap = max(1, max_peers_per_hash // _NETWORK_SHARE)

    # -- bookkeeping -------------------------------------------------------------------

    def _regroup(self, info_hash: bytes, old: int, new: int) -> None:
        if old:
            group = self._by_count[old]
            del group[info_hash]
            if not group:
                del self._by_count[old]
        if new:
            self._by_count.setdefault(new, {})[info_hash] = None
            self._top = max(self._top, new)

    def _count_network(self, swarm: _Swarm, network: int | None, change: int) -> None:
        """Count a peer of ``network`` in or out (``change`` +1 or -1) of the swarm's and the
        store's entry counts of its network, and the swarm in or out of the network's hash
        count when that peer is the network's first there or its last."""
        if network is None:
            return
        left = _add(swarm.networks, network, change)
        _add(self._network_entries, network, change)
        if left == 0 or (left == 1 and change == 1):
            _add(self._networks, network, -1 if left == 0 else 1)

    def _drop_peer(self, info_hash: bytes, swarm: _Swarm, key: bytes) -> None:
        count = len(swarm.peers)
        peer = swarm.peers.pop(key)
        packed = _ip_of(key)
        keys = swarm.ips[packed]
        keys.remove(key)  # at most MAX_PORTS_PER_IP long
        if not keys:
            del swarm.ips[packed]
        self._count_network(swarm, peer.network, -1)
        if len(key) == _COMPACT_V6:
            swarm.v6 -= 1
        self._total -= 1
        self._regroup(info_hash, count, count - 1)
        if count == 1:
            self._drop_swarm(info_hash, swarm)

    def _drop_swarm(self, info_hash: bytes, swarm: _Swarm) -> None:
        # Called on a swarm its last peer just left (_drop_peer): its counts are zero
        # already. Swap-remove it from the sampling list.
        last = self._hash_list.pop()
        if last != info_hash:
            self._hash_list[swarm.index] = last
            self._swarms[last].index = swarm.index
        del self._swarms[info_hash]

    def _expire_swarm(self, info_hash: bytes, swarm: _Swarm, now: float) -> int:
        removed = 0
        peers = swarm.peers
        while peers:
            key = next(iter(peers))
            if now - peers[key].announced_at < self.peer_ttl:
                break
            self._drop_peer(info_hash, swarm, key)
            removed += 1
        return removed

    def _live_swarm(self, info_hash: bytes, now: float) -> _Swarm | None:
        swarm = self._swarms.get(info_hash)
        if swarm is not None:
            self._expire_swarm(info_hash, swarm, now)
            if not swarm.peers:
                return None
        return swarm

    def _has_room(self, swarm: _Swarm | None, packed: bytes, network: int | None) -> bool:
        """Whether a new entry at IP ``packed`` of ``network`` (not in ``swarm`` yet, or
        there at other ports) may join it: a new hash needs a free hash slot, a known one
        room in the newcomer's family and for its network there; its network's entries in
        all must be under their share; and a newcomer that would add a hash to its network's
        count (none of its network in the swarm yet) needs that count under its share."""
        if swarm is None:
            if len(self._swarms) >= self.max_hashes:
                return False
        elif swarm.family_count(len(packed)) >= self.max_peers_per_hash:
            return False
        if network is None:
            return True  # a local address: no network bound
        if self._network_entries.get(network, 0) >= self._network_entry_cap:
            return False
        here = 0 if swarm is None else swarm.networks.get(network, 0)
        if here:
            return here < self._swarm_network_cap  # the hash counts for its network already
        return self._networks.get(network, 0) < self._network_cap

    def _evict_from_largest_swarm(self) -> None:
        while self._top not in self._by_count:
            self._top -= 1
        victim = next(iter(self._by_count[self._top]))
        swarm = self._swarms[victim]
        self._drop_peer(victim, swarm, next(iter(swarm.peers)))

    # -- public API --------------------------------------------------------------------

    def __len__(self) -> int:
        """How many peers are stored in all (expired ones until :meth:`expire` runs)."""
        return self._total

    def __contains__(self, info_hash: object) -> bool:
        return info_hash in self._swarms

    @property
    def hash_count(self) -> int:
        """How many info-hashes have peers stored."""
        return len(self._swarms)

    def announce(self, info_hash: bytes, address: PeerAddress, *, seed: bool, now: float) -> bool:
        """Record that ``address`` is in the swarm of ``info_hash`` (a seed if ``seed``).

        The caller has checked the token and resolved ``implied_port``. An IPv4-mapped
        IPv6 address is stored as IPv4. Returns False (storing nothing) for an address
        nobody could connect to (port 0, unspecified or multicast host), and for a newcomer
        the store has no room for (its family of the swarm full, a new info-hash with
        ``max_hashes`` stored, or its network at its share): see the module docstring. A
        stored IP and port always refreshes; a new port of a stored IP is always stored too,
        in place of that IP's oldest entry when it holds :data:`MAX_PORTS_PER_IP` or the
        swarm has no room for one more.
        """
        key, network = self._key(info_hash, address)
        if not address.is_connectable:
            return False
        packed = _ip_of(key)
        swarm = self._live_swarm(info_hash, now)
        if swarm is not None:
            held = swarm.ips.get(packed)  # the IP's keys, least recently announced first
            if held is not None and key in swarm.peers:
                # A re-announce: refresh, and move to the back of the announce order (the
                # IP's keys follow it).
                del swarm.peers[key]
                swarm.peers[key] = _Peer(bool(seed), now, network)
                held.remove(key)
                held.append(key)
                return True
            if held is not None and (
                len(held) >= MAX_PORTS_PER_IP or not self._has_room(swarm, packed, network)
            ):
                # The IP's least recently announced entry gives way (a restarted client's old
                # port, most often): every count stays as it is.
                del swarm.peers[held.pop(0)]
                swarm.peers[key] = _Peer(bool(seed), now, network)
                held.append(key)
                return True
        if not self._has_room(swarm, packed, network):
            return False  # at capacity: drop the announce, keep what is stored (libtorrent)
        # Make room in all. The eviction may remove a whole swarm, ours included (when it
        # had a single peer), so the swarm is looked up again afterwards.
        if self._total >= self.max_peers:
            self._evict_from_largest_swarm()
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            swarm = _Swarm(len(self._hash_list))
            self._swarms[info_hash] = swarm
            self._hash_list.append(info_hash)
        count = len(swarm.peers)
        swarm.peers[key] = _Peer(bool(seed), now, network)
        swarm.ips.setdefault(packed, []).append(key)
        self._count_network(swarm, network, 1)
        if len(packed) == 16:
            swarm.v6 += 1
        self._total += 1
        self._regroup(info_hash, count, count + 1)
        return True

    def accepts(self, info_hash: bytes, address: PeerAddress, now: float) -> bool:
        """Whether an announce of ``info_hash`` from the IP of ``address`` would be stored at
        ``now`` (its port is not looked at: the announce may name another): the IP is in the
        swarm already (a re-announce refreshes, a new port takes a place of its own), or the
        swarm's family, or for a new info-hash the store, has room, and the IP's network is
        under its shares (see the module docstring).

        The node gives a ``get_peers`` requester a write token only then, as libtorrent
        does: a full swarm's newcomers announce to other nodes near the hash instead.
        """
        key, network = self._key(info_hash, address)
        packed = _ip_of(key)
        swarm = self._live_swarm(info_hash, now)
        if swarm is not None and packed in swarm.ips:
            return True
        return self._has_room(swarm, packed, network)

    @staticmethod
    def _key(info_hash: bytes, address: PeerAddress) -> tuple[bytes, int | None]:
        """The checked arguments' stored key (the compact peer: the IP packed, IPv4-mapped
        IPv6 as IPv4, then the port) and its network key (None: a local address)."""
        if not isinstance(info_hash, bytes) or len(info_hash) != _INFO_HASH_SIZE:
            raise LocalProtocolError(f"an info-hash is 20 bytes, got {info_hash!r}")
        if not isinstance(address, PeerAddress):
            raise LocalProtocolError(f"a peer is a PeerAddress, got {address!r}")
        address = address.normalized()
        return address.to_compact(), _network_key(address.host)

    def get_peers(
        self,
        info_hash: bytes,
        family: int,
        rng: random.Random,
        now: float,
        *,
        max_count: int | None = None,
        noseed: bool = False,
    ) -> list[PeerAddress]:
        """At most ``max_count`` live peers of ``info_hash`` and ``family`` (4 or 6), at random.

        ``noseed`` (BEP 33) leaves seeds out, for a requester that is itself seeding.
        ``max_count`` defaults to :func:`max_values` (what fits a datagram).
        """
        default = max_values(family)  # also checks the family
        limit = default if max_count is None else max_count
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise LocalProtocolError(f"max_count is a non-negative int, got {max_count!r}")
        swarm = self._live_swarm(info_hash, now)
        if swarm is None:
            return []
        size = _COMPACT_V4 if family == 4 else _COMPACT_V6
        candidates = [
            key
            for key, peer in swarm.peers.items()
            if len(key) == size and not (noseed and peer.seed)
        ]
        if len(candidates) > limit:
            candidates = rng.sample(candidates, limit)
        return [PeerAddress.from_compact(key) for key in candidates]

    def counts(self, info_hash: bytes, now: float) -> tuple[int, int]:
        """How many live seeds and downloaders ``info_hash`` has (exact, unlike a scrape)."""
        swarm = self._live_swarm(info_hash, now)
        if swarm is None:
            return (0, 0)
        seeds = sum(1 for peer in swarm.peers.values() if peer.seed)
        return (seeds, len(swarm.peers) - seeds)

    def has_peers(self, info_hash: bytes, now: float) -> bool:
        """Whether ``info_hash`` has a live peer at ``now`` (unlike ``in``, which counts a swarm
        whose announces have all expired until :meth:`expire` runs)."""
        return self._live_swarm(info_hash, now) is not None

    def scrape(self, info_hash: bytes, now: float) -> tuple[ScrapeBloom, ScrapeBloom]:
        """BEP 33 ``BFsd`` and ``BFpe``: bloom filters of the live seeds and downloaders."""
        seeds, downloaders = ScrapeBloom(), ScrapeBloom()
        swarm = self._live_swarm(info_hash, now)
        if swarm is not None:
            # the blooms hold IPs (BEP 33): an IP's several ports insert the same bits
            for key, peer in swarm.peers.items():
                (seeds if peer.seed else downloaders).insert(_host(_ip_of(key)))
        return seeds, downloaders

    def expire(self, now: float) -> int:
        """Forget every announce older than ``peer_ttl``; return how many were dropped.

        The node calls this periodically (every minute, say); lookups also expire the
        swarm they read, so results never include a stale peer.
        """
        removed = 0
        for info_hash, swarm in list(self._swarms.items()):
            removed += self._expire_swarm(info_hash, swarm, now)
        return removed

    def sample_info_hashes(self, count: int, rng: random.Random) -> list[bytes]:
        """Up to ``count`` distinct stored info-hashes at random (BEP 51 ``samples``)."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise LocalProtocolError(f"count is a non-negative int, got {count!r}")
        if count >= len(self._hash_list):
            return list(self._hash_list)
        return rng.sample(self._hash_list, count)
