"""DHTConfig: every knob of a DHT node, with the defaults libtorrent and the BEPs suggest.

One frozen dataclass, checked on construction (:class:`~bip_dht.LocalProtocolError` for a bad
value), shared by the sans-IO :class:`~bip_dht._node.DHTNode` and the trio shell. Nothing here
names a public host: bootstrap addresses are always the caller's.

>>> DHTConfig().k, DHTConfig().alpha
(8, 3)
>>> DHTConfig(alpha=0)
Traceback (most recent call last):
...
bip_dht._errors.LocalProtocolError: DHTConfig.alpha must be an int in 1..64, not 0
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._errors import LocalProtocolError
from ._items import DEFAULT_ITEM_LIFETIME, DEFAULT_MAX_ITEMS
from ._krpc import DEFAULT_LIMITS, KRPCLimits
from ._lookup import DEFAULT_QUERY_TIMEOUT, DEFAULT_SLOW_AFTER
from ._peer_store import (
    DEFAULT_MAX_HASHES,
    DEFAULT_MAX_PEERS,
    DEFAULT_MAX_PEERS_PER_HASH,
    DEFAULT_PEER_TTL,
)
from ._ratelimit import DEFAULT_QUERY_BURST, DEFAULT_QUERY_RATE, DEFAULT_RATE_LIMITED_HOSTS
from ._routing import BUCKET_SIZE, MAX_FAILURES
from ._serve import (
    DEFAULT_SAMPLE_COUNT,
    DEFAULT_SAMPLE_INTERVAL,
    MAX_SAMPLE_COUNT,
    MAX_SAMPLE_INTERVAL,
)
from ._tokens import DEFAULT_ROTATE_INTERVAL

__all__ = ["DEFAULT_VERSION", "DHTConfig"]

DEFAULT_VERSION = b"bp\x00\x01"
"""The client version we send as the top-level ``v`` (two letters, two version bytes, as
libtorrent's ``LT`` + version)."""

# name -> (low, high) for the int knobs; checked in __post_init__.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "k": (1, 64),
    "alpha": (1, 64),
    "max_failures": (1, 1024),
    "max_lookups": (1, 4096),
    "max_queued": (0, 1 << 20),
    "max_outstanding": (1, 60000),
    "max_events": (1, 1 << 24),
    "max_outbox": (1, 1 << 24),
    "max_bootstrap_addresses": (1, 4096),
    "pings_per_tick": (0, 1024),
    "refresh_queries_per_tick": (0, 1024),
    "refreshes_per_tick": (0, 64),
    "external_ip_votes": (1, 1024),  # a voting round holds 1024 responders (DEFAULT_MAX_VOTERS)
    "max_peers_per_hash": (1, 1 << 24),
    "max_hashes": (1, 1 << 24),
    "max_peers": (1, 1 << 26),
    "max_items": (1, 1 << 24),
    "rate_limited_hosts": (1, 1 << 24),
    "sample_count": (0, MAX_SAMPLE_COUNT),  # libtorrent's cap: more would not fit a datagram
    "sample_interval": (0, MAX_SAMPLE_INTERVAL),
    "max_lookup_peers": (0, 1 << 20),
}
_POSITIVE_FLOATS = (
    "query_timeout",
    "slow_after",
    "maintenance_interval",
    "bootstrap_retry_interval",
    "peer_ttl",
    "item_lifetime",
    "token_rotate_interval",
    "query_rate",
    "query_burst",
)
_BOOLS = (
    "read_only",
    "restrict_routing_ips",
    "restrict_routing_networks",
    "restrict_search_ips",
    "enforce_node_id",
    "bep42_own_id",
    "rate_limit",
)


@dataclass(frozen=True, slots=True)
class DHTConfig:
    """How a DHT node behaves; every field has a documented default.

    **Lookups**

    - k: bucket size, lookup width and announce / put fan-out (BEP 5's K, 8).
    - alpha: queries a lookup keeps in flight (not counting slow ones), 3.
    - query_timeout: seconds before an unanswered query has failed (libtorrent: 5 to 15).
    - slow_after: seconds after which a lookup stops waiting for a query and sends another
      (libtorrent's short timeout), while still accepting its answer.
    - max_lookup_peers: peers one get_peers lookup collects at most.
    - restrict_search_ips: a lookup keeps one node per IP address, and of the nodes it
      learns from answers one per /24 (IPv4) or /64 (IPv6) network, as libtorrent's
      ``restrict_search_ips`` does (the nodes it starts from, our table's and the bootstrap
      addresses, are exempt from the network rule, and so are local addresses, the ones
      BEP 42 exempts), so one host owning a /64 cannot fill a lookup's closest places.

    **Routing table**

    - restrict_routing_ips: the table keeps one node per IP address.
    - restrict_routing_networks: with restrict_routing_ips, a bucket also keeps one node per
      /24 (IPv4) or /64 (IPv6) network, as libtorrent's ``restrict_routing_ips`` does (local
      addresses, the ones BEP 42 exempts, are exempt: a LAN's nodes share a /24). On by
      default, as in libtorrent: it also turns away honest nodes that share a network (a
      campus, a carrier-grade NAT), a cost libtorrent accepts to keep a Sybil holding a whole
      network to one node per bucket.
    - enforce_node_id: refuse (table and lookups) nodes whose id breaks BEP 42 for their
      address (local addresses are exempt); off by default, as in libtorrent, because
      many nodes still run unrestricted ids.
    - max_failures: failed queries in a row that make a confirmed node bad.

    **Identity**

    - bep42_own_id: once the responders' ``ip`` votes settle on an external address that is
      not local and that our id does not match, take a BEP 42 id for it
      (:class:`~bip_dht.NodeIdChanged`).
    - external_ip_votes: distinct responders that must agree on our external address
      before we believe it (libtorrent's ip_voter waits for a handful too); at most 1024, the
      responders a voting round holds.
    - read_only: BEP 43: send ``ro=1`` and answer no query.
    - version: our client version (the top-level ``v``), None to send none.

    **Bounds (what the node may hold, whatever the network sends or the caller asks)**

    - max_lookups: lookups (find_node, get_peers, announce, get, put, sample, bootstrap)
      running at once; more wait in a queue.
    - max_queued: operations waiting for a lookup slot (or a ping for a transaction
      slot); beyond it an operation ends at once with its Finished event. The refill
      lookup of a BEP 42 id change, when it waits, is not counted.
    - max_outstanding: our queries awaiting an answer; lookups pause while it is full.
    - max_events: events queued for
      :meth:`DHTNode.next_event() <bip_dht.DHTNode.next_event>`; beyond it progress
      events (PeersFound, SamplesFound) are dropped and counted, Finished events are always
      kept (they are bounded by the operations).
    - max_outbox: datagrams waiting for
      :meth:`DHTNode.datagrams_to_send() <bip_dht.DHTNode.datagrams_to_send>`; beyond it
      replies are dropped and counted.
    - max_bootstrap_addresses: bootstrap addresses remembered and queried at most.

    **Maintenance (libtorrent ticks every few seconds)**

    - maintenance_interval: seconds between maintenance ticks.
    - pings_per_tick: questionable table nodes checked per tick at most (BEP 5's ping;
      a ``find_node`` for a random id in the node's bucket when that bucket has room,
      as libtorrent does, so the answer also brings nodes to fill it).
    - refresh_queries_per_tick: queries per tick (and per address family) that fill
      buckets with room, as libtorrent's refresh does: to candidates (nodes that queried
      us and nodes heard of in answers to such queries, oldest first; their answer admits
      them) and to the node closest to a random id in a sparse bucket (its probe, backed
      off while it brings no new node). The first tick comes as soon as a bootstrap ends,
      so a node that has just joined fills its far buckets within a minute or two. At 0
      the nodes that queried us are still asked, from what pings_per_tick leaves (a
      querier joins a bucket only once it answers); listed nodes and probes are not.
    - refreshes_per_tick: stale-bucket refresh lookups started per tick at most.
    - bootstrap_retry_interval: seconds between bootstraps from the remembered addresses
      while the routing table stays empty.

    **Serving and storage** (see :class:`~bip_dht.QueryHandler`, :class:`~bip_dht.PeerStore`,
    :class:`~bip_dht.ItemStore`, :class:`~bip_dht.RateLimiter`)

    - max_peers_per_hash, max_hashes, max_peers, peer_ttl: the peer store's caps.
    - max_items, item_lifetime: the BEP 44 item store's caps.
    - rate_limit, query_rate, query_burst, rate_limited_hosts: per-IP query limiting.
    - token_rotate_interval: seconds between write-token secret rotations.
    - sample_count, sample_interval: BEP 51 replies (at most 20 hashes, libtorrent's cap, so a
      reply fits a datagram; the interval at most 21600 s, BEP 51's maximum; the sample is
      redrawn once per interval).
    - limits: what one datagram may make the decoder allocate.
    """

    k: int = BUCKET_SIZE
    alpha: int = 3
    query_timeout: float = DEFAULT_QUERY_TIMEOUT
    slow_after: float = DEFAULT_SLOW_AFTER
    read_only: bool = False
    restrict_routing_ips: bool = True
    restrict_routing_networks: bool = True
    restrict_search_ips: bool = True
    enforce_node_id: bool = False
    bep42_own_id: bool = True
    external_ip_votes: int = 10
    max_failures: int = MAX_FAILURES
    max_lookups: int = 16
    max_queued: int = 256
    max_outstanding: int = 1024
    max_events: int = 4096
    max_outbox: int = 4096
    max_bootstrap_addresses: int = 64
    max_lookup_peers: int = 2000
    maintenance_interval: float = 5.0
    pings_per_tick: int = 4
    refresh_queries_per_tick: int = 4
    refreshes_per_tick: int = 1
    bootstrap_retry_interval: float = 60.0
    version: bytes | None = DEFAULT_VERSION
    max_peers_per_hash: int = DEFAULT_MAX_PEERS_PER_HASH
    max_hashes: int = DEFAULT_MAX_HASHES
    max_peers: int = DEFAULT_MAX_PEERS
    peer_ttl: float = DEFAULT_PEER_TTL
    max_items: int = DEFAULT_MAX_ITEMS
    item_lifetime: float = DEFAULT_ITEM_LIFETIME
    rate_limit: bool = True
    query_rate: float = DEFAULT_QUERY_RATE
    query_burst: float = DEFAULT_QUERY_BURST
    rate_limited_hosts: int = DEFAULT_RATE_LIMITED_HOSTS
    token_rotate_interval: float = DEFAULT_ROTATE_INTERVAL
    sample_count: int = DEFAULT_SAMPLE_COUNT
    sample_interval: int = DEFAULT_SAMPLE_INTERVAL
    limits: KRPCLimits = field(default=DEFAULT_LIMITS)

    def __post_init__(self) -> None:
        for name, (low, high) in _INT_RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise LocalProtocolError(
                    f"DHTConfig.{name} must be an int in {low}..{high}, not {value!r}"
                )
        for name in _POSITIVE_FLOATS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise LocalProtocolError(
                    f"DHTConfig.{name} must be a positive number, not {value!r}"
                )
        for name in _BOOLS:
            if not isinstance(getattr(self, name), bool):
                raise LocalProtocolError(f"DHTConfig.{name} must be a bool")
        if self.slow_after > self.query_timeout:
            raise LocalProtocolError("DHTConfig.slow_after must not exceed query_timeout")
        if self.query_burst < 1:
            raise LocalProtocolError("DHTConfig.query_burst must be at least 1")
        if self.version is not None and not isinstance(self.version, bytes):
            raise LocalProtocolError("DHTConfig.version must be bytes or None")
        if not isinstance(self.limits, KRPCLimits):
            raise LocalProtocolError("DHTConfig.limits must be a KRPCLimits")
