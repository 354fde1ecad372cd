"""The Kademlia routing table of BEP 5, sans-IO: what nodes we know and how far we trust them.

One :class:`RoutingTable` holds the nodes of one address family around our own id (BEP 32: an
IPv4 table and a separate IPv6 table). It never sends anything: the node core tells it what
happened (:meth:`~RoutingTable.heard_from`, :meth:`~RoutingTable.failed`) and asks it what to do
(:meth:`~RoutingTable.closest`, :meth:`~RoutingTable.nodes_to_ping`,
:meth:`~RoutingTable.buckets_to_refresh`). Time is the caller's ``now`` (seconds, any epoch,
monotonic); randomness comes from the injected :class:`random.Random`.

Layout. Bucket ``i`` (for ``i`` below the last) holds the nodes whose id shares exactly ``i``
leading bits with ours; the last bucket holds everything closer. A full last bucket is split in
two (the only bucket that may split, as in BEP 5 and libtorrent), up to 160 buckets. Each bucket
holds at most ``k`` nodes (8) plus a bounded replacement cache of ``k`` more. We do not use
libtorrent's larger far buckets (its "extended routing table"): BEP 5 sizes keep every bucket
and every reply equal, and the closest buckets already split as deep as our neighbourhood needs.

Node states (BEP 5). *Good*: responded to one of our queries in the last 15 minutes, or has
responded ever and queried us in the last 15 minutes, and has not failed since. *Bad*: failed
``max_failures`` queries in a row (a node that never responded is bad at its first failure, as
in libtorrent: it gave us nothing to keep it for). *Questionable*: anything else.

Admission of a node into a full bucket: it takes a bad node's place, or (if it has responded)
the place of a node that never has; otherwise it waits in the replacement cache, which keeps the
best ``k`` candidates (responded before unheard, then most recently seen). When a bucket node
turns bad, the best replacement takes its place. A node that has only queried us never enters
a bucket (nor splits one), as in libtorrent, whose ``add_node_impl`` puts an unpinged node in
the replacement cache only: its source address may be forged, and a flood of forged queriers
would otherwise hold the free slots (the refresh below skips buckets that look full) and split
our closest bucket. For a bucket with room it becomes a candidate of the refresh below (as
libtorrent's ``next_refresh`` pings unpinged replacements of buckets with room; a node that
sends no fill queries asks it through :meth:`~RoutingTable.querier_queries`), for a full
one it waits in the replacement cache. Likewise a freed slot is taken only by a replacement
that has answered us (libtorrent's ``fill_from_replacements``); the others then become
candidates. Questionable nodes are the node core's to ping
(:meth:`~RoutingTable.nodes_to_ping`); the answer or the failure comes back here.

Sparse buckets fill as libtorrent's do: nodes that answers list are offered as unverified
candidates (:meth:`~RoutingTable.heard_about`, kept apart from the buckets) for the buckets
with room, and :meth:`~RoutingTable.refresh_queries` hands out single find_node queries for
a random id inside such a bucket, to the candidates (whose answer admits them) and, as
probes backed off while they bring nothing, to the node closest to that id. Candidates are
bounded as the table is: ``k`` per bucket, one per IP (*restrict_ips*; one per network of a
bucket with *restrict_networks*), and one that only queried us never pushes out one an
answer listed, so a flood of queriers (whose source addresses may be forged) cannot take
every fill query; a refresh also keeps a slot for a due probe.

By default at most one node per IP address is kept (libtorrent's ``restrict_routing_ips``), so
one host cannot fill the table with made-up ids (a node that answers us from an IP held by a
bad node takes its place; one answering with a new id from a held node's very address evicts
it, as libtorrent does). With ``restrict_networks`` a bucket (its nodes and replacements) also
holds at most one node per /24 (IPv4) or /64 (IPv6) network, as libtorrent's
``restrict_routing_ips`` does, so one network cannot fill a bucket from many addresses
either. Local addresses (those BEP 42 exempts: a LAN, loopback, the
simulator's 10/8) are exempt from the network rule, where many honest nodes share a /24;
a bad node does not hold its network. An optional ``node_filter`` (for instance
:func:`bep42_filter`, BEP 42) rejects nodes before they are stored. Memory is bounded by
160 buckets of ``3 * k`` entries (nodes, replacements, candidates) whatever we hear.

:meth:`~RoutingTable.save` bencodes our id and the nodes worth keeping; :meth:`RoutingTable.load`
validates such bytes strictly and rebuilds a table whose nodes are known but unconfirmed, ready
to be pinged to bootstrap after a restart. A new id while running (BEP 42) is
:meth:`~RoutingTable.change_own_id`, which re-files the nodes keeping what we know of them.

>>> from random import Random
>>> from bip_handshake import PeerAddress
>>> own = NodeId(bytes(20))
>>> table = RoutingTable(own, family=4, rng=Random(0))
>>> peer = NodeInfo(NodeId.from_int(1 << 159).value, PeerAddress.parse("1.2.3.4:6881"))
>>> table.heard_from(peer, now=0.0, responded=True)
<Admission.ADDED: 'added'>
>>> table.state_of(peer.node_id, now=0.0)
<NodeState.GOOD: 'good'>
>>> table.closest(own, now=0.0) == [peer]
True
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from random import Random
from typing import Literal

from bip_bencode import BencodeError, decode, encode
from bip_handshake import CompactError, NodeInfo, PeerAddress, parse_compact_nodes

from ._errors import DHTError, LocalProtocolError
from ._node_id import NODE_ID_BITS, NodeId, is_bep42_exempt

__all__ = [
    "BUCKET_SIZE",
    "GOOD_INTERVAL",
    "MAX_FAILURES",
    "Admission",
    "NodeState",
    "RefreshQuery",
    "RefreshTarget",
    "RoutingEntry",
    "RoutingStateError",
    "RoutingTable",
    "bep42_filter",
]

BUCKET_SIZE = 8
"""K of BEP 5: nodes per bucket, and nodes returned by a lookup."""

GOOD_INTERVAL = 15 * 60.0
"""Seconds a response (or a query from a confirmed node) keeps a node good; also how long a
bucket may go unchanged before it needs a refresh (BEP 5)."""

MAX_FAILURES = 3
"""Failed queries in a row after which a node that had responded before is bad.

BEP 5 says only "multiple queries in a row"; libtorrent's ``dht_max_fail_count`` is 20 but it
also drops such a node at once when a replacement waits. Three keeps a dead node in a bucket
for a few pings, not for hours, and a replacement takes over as soon as it is bad."""

_COMPACT_V6_NODE = 38

MAX_PROBE_BACKOFF = 7
"""A bucket whose fill probes keep bringing no new node is probed after 2, 4, ... up to 2**7
maintenance intervals (10 s to about 11 minutes at libtorrent's 5-second tick)."""

_IP = IPv4Address | IPv6Address


class RoutingStateError(DHTError):
    """Saved routing table bytes (:meth:`RoutingTable.load`) are malformed.

    >>> RoutingTable.load(b"junk", rng=Random(0))
    Traceback (most recent call last):
    ...
    bip_dht._routing.RoutingStateError: routing table state is not bencoded: ...
    """


class NodeState(enum.Enum):
    """How far a node is trusted, per BEP 5."""

    GOOD = "good"
    QUESTIONABLE = "questionable"
    BAD = "bad"


class Admission(enum.Enum):
    """What :meth:`RoutingTable.heard_from` did with a node."""

    ADDED = "added"
    """The node is new in a bucket."""
    UPDATED = "updated"
    """The node was known (in a bucket or the replacement cache); its times were updated."""
    REPLACEMENT = "replacement"
    """The node's bucket is full of nodes worth keeping (or it only queried us and its bucket is
    full); it waits in the replacement cache."""
    CANDIDATE = "candidate"
    """The node only queried us and its bucket has room: it waits as a candidate
    (:meth:`RoutingTable.heard_about`) for :meth:`RoutingTable.refresh_queries` to query it;
    its answer admits it."""
    REJECTED = "rejected"
    """The node was not stored: our own id, an unusable address, another node already holds its
    IP, the filter refused it, an id already known at another address, or a full cache of
    better candidates."""


@dataclass(frozen=True, slots=True)
class RoutingEntry:
    """A snapshot of one node the table holds (:meth:`RoutingTable.entries`)."""

    node: NodeInfo
    bucket: int
    state: NodeState
    in_bucket: bool
    """False for a node in the bucket's replacement cache."""
    last_response: float | None
    last_query: float | None
    failures: int


@dataclass(frozen=True, slots=True)
class RefreshQuery:
    """A maintenance query to fill a bucket that has room (:meth:`RoutingTable.refresh_queries`):
    ask *node* for the nodes closest to *target*, a random id inside bucket *bucket*.

    *node* is either a candidate (a node we heard about and have not heard from: its answer
    confirms it) or the known node closest to *target* (a probe of the bucket)."""

    node: NodeInfo
    bucket: int
    target: NodeId


@dataclass(frozen=True, slots=True)
class RefreshTarget:
    """A bucket that has not changed for :data:`GOOD_INTERVAL`, and a random id inside it to
    look up (BEP 5's bucket refresh)."""

    bucket: int
    target: NodeId


class _Entry:
    __slots__ = ("failures", "last_query", "last_response", "network", "node", "seen")

    def __init__(self, node: NodeInfo, now: float | None, host: _IP) -> None:
        self.node = node
        # Kept beside the node (set again where the node is replaced): _network_taken
        # compares it with every entry of a bucket. *host* is _host(node), which every
        # caller has at hand already.
        self.network = _network(host)
        self.last_response: float | None = None
        self.last_query: float | None = None
        self.failures = 0
        # when we last heard anything from or about it; None for nodes loaded from a save
        self.seen = now

    def state(self, now: float, max_failures: int) -> NodeState:
        if self.failures and (self.last_response is None or self.failures >= max_failures):
            return NodeState.BAD
        if self.failures or self.last_response is None:
            return NodeState.QUESTIONABLE
        if now - self.last_response < GOOD_INTERVAL:
            return NodeState.GOOD
        if self.last_query is not None and now - self.last_query < GOOD_INTERVAL:
            return NodeState.GOOD
        return NodeState.QUESTIONABLE

    def recently_answered(self, now: float) -> bool:
        # state()'s first way to be GOOD, alone: no failure since a response in the interval
        last = self.last_response
        return not self.failures and last is not None and now - last < GOOD_INTERVAL

    def rank(self) -> tuple[bool, float]:
        # which of two candidates is worth more: confirmed first, then the most recently seen
        return (self.last_response is not None, _NEVER if self.seen is None else self.seen)


_NEVER = float("-inf")
_FOREVER = float("inf")


def _good_until(entry: _Entry) -> float:
    # when a good node with no failure turns questionable (_Entry.state): 15 minutes after
    # its last response, or after its last query when that came later
    last = entry.last_response
    assert last is not None  # a good node has responded
    if entry.last_query is not None and entry.last_query > last:
        last = entry.last_query
    return last + GOOD_INTERVAL


def _seen(entry: _Entry) -> float:
    return _NEVER if entry.seen is None else entry.seen


class _Candidate:
    """A node waiting to be queried by :meth:`RoutingTable.refresh_queries` (or, if it
    queried us, :meth:`RoutingTable.querier_queries`), unverified."""

    __slots__ = ("network", "node", "querier", "serial")

    def __init__(self, node: NodeInfo, querier: bool, serial: int, network: int | None) -> None:
        self.node = node
        # it queried us (its source address may be forged) rather than being listed in an
        # answer to one of our queries
        self.querier = querier
        # the table's running count when it came: the candidates' order, oldest first
        self.serial = serial
        self.network = network


class _Bucket:
    __slots__ = (
        "candidates",
        "last_changed",
        "nodes",
        "ping_check",
        "probe_due",
        "probes",
        "replacements",
    )

    def __init__(self, now: float) -> None:
        self.nodes: dict[bytes, _Entry] = {}
        self.replacements: dict[bytes, _Entry] = {}
        # nodes to query for this bucket while it has room (RoutingTable.heard_about), at
        # most k, oldest first; they are in no bucket, and hold no IP of RoutingTable._ips
        self.candidates: dict[bytes, _Candidate] = {}
        self.last_changed = now
        # the fill probe (refresh_queries): when the bucket may be probed next, and how many
        # probes in a row found it no new node (the back-off's exponent)
        self.probe_due = now
        self.probes = 0
        # nodes_to_ping: no node here can be questionable before this time (a lower bound;
        # _NEVER = look now). A node turns questionable only by time passing (tracked here),
        # by failing, or by arriving unconfirmed: both reset it.
        self.ping_check = _NEVER

    def gained(self, now: float) -> None:
        # a node joined the bucket: it changed, and it is worth probing again at once
        self.last_changed = now
        self.probes = 0
        self.probe_due = now
        self.ping_check = _NEVER


def bep42_filter(node: NodeInfo) -> bool:
    """A ``node_filter`` enforcing BEP 42: the node's id must be valid for its address.

    >>> from bip_handshake import PeerAddress
    >>> bep42_filter(NodeInfo(bytes(20), PeerAddress.parse("8.8.8.8:53")))
    False
    """
    return NodeId(node.node_id).is_valid_for(node.address.host)


def _host(node: NodeInfo) -> _IP:
    return node.address.normalized().host


# The key of RoutingTable._ips for a host: its integer. A table holds one family, so the
# integer names the host alone, and hashing an int is far cheaper than hashing an ipaddress
# object (which formats a hex string each time); every node filed looks its IP up there.
_ip_key: Callable[[_IP], int] = int


def _address_key(address: PeerAddress) -> tuple[int, int]:
    """The key of RoutingTable._addresses for a normalized address (cheap to hash, as
    _ip_key)."""
    return int(address.host), address.port


def _network(host: _IP) -> int | None:
    """The /24 (IPv4) or /64 (IPv6) a bucket admits one node of; None for a local address,
    which the rule exempts."""
    if is_bep42_exempt(host):
        return None
    return int(host) >> (8 if isinstance(host, IPv4Address) else 64)


def _query_rule(
    limit: object, busy: Callable[[PeerAddress], bool] | None
) -> tuple[set[PeerAddress], Callable[[PeerAddress], bool]]:
    """For one call that hands out queries: the addresses asked so far (one query per address
    per call) and the rule that skips those and the ones *busy* names.

    Raises:
        LocalProtocolError: *limit* is not an int.
    """
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise LocalProtocolError(f"limit is an int, got {limit!r}")
    asked: set[PeerAddress] = set()

    def skip(address: PeerAddress) -> bool:
        return address.normalized() in asked or (busy is not None and busy(address))

    return asked, skip


class RoutingTable:
    """The buckets of one address family around our own id.

    *family* is 4 or 6 (one table per family, BEP 32); IPv4-mapped IPv6 addresses count as IPv4.
    *k* is the bucket size; *max_failures* the failures in a row that make a confirmed node bad;
    *restrict_ips* keeps at most one node per IP address; *restrict_networks* (with
    *restrict_ips*) one per /24 or /64 network in a bucket, local addresses exempt;
    *node_filter*, when given, must return True for a node to be stored (see
    :func:`bep42_filter`). *now* is the creation time, from which the buckets' refresh clocks
    start.
    """

    def __init__(
        self,
        own_id: NodeId,
        *,
        family: Literal[4, 6],
        rng: Random,
        k: int = BUCKET_SIZE,
        max_failures: int = MAX_FAILURES,
        restrict_ips: bool = True,
        restrict_networks: bool = False,
        node_filter: Callable[[NodeInfo], bool] | None = None,
        now: float = 0.0,
    ) -> None:
        if not isinstance(own_id, NodeId):
            raise LocalProtocolError(f"own_id is a NodeId, got {own_id!r}")
        if family not in (4, 6) or isinstance(family, bool):
            raise LocalProtocolError(f"family is 4 or 6, got {family!r}")
        for name, value in (("k", k), ("max_failures", max_failures)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
                raise LocalProtocolError(f"{name} is an int in 1..1024, got {value!r}")
        self._own = own_id
        self._own_int = int(own_id)
        self._family = family
        self._rng = rng
        self._k = k
        self._max_failures = max_failures
        self._restrict_ips = restrict_ips
        self._restrict_networks = restrict_ips and restrict_networks
        self._filter = node_filter
        self._buckets: list[_Bucket] = [_Bucket(now)]
        # _ip_key(host) -> the id holding that IP (restrict_ips)
        self._ips: dict[int, bytes] = {}
        # _ip_key(host) -> the candidate at that IP (restrict_ips): one candidate per IP,
        # apart from _ips (a candidate is unverified, so it must not keep a node out)
        self._candidate_ips: dict[int, bytes] = {}
        # _address_key(address) -> the id held there, bucket or replacement node (kept
        # whatever restrict_ips, with _ips: bounded by the table): state_at's exact answer
        # where _ips names one node per IP. Two ids at one address (a node restarted with a
        # new id, restrict_ips off) name the last filed, the one that answered lately.
        self._addresses: dict[tuple[int, int], bytes] = {}
        # a running count, to order the candidates of all buckets oldest first
        self._candidate_serial = 0

    # -- reading ---------------------------------------------------------------------------

    @property
    def own_id(self) -> NodeId:
        """Our node id."""
        return self._own

    @property
    def family(self) -> Literal[4, 6]:
        """4 or 6: the address family of every node here."""
        return self._family

    @property
    def bucket_count(self) -> int:
        """How many buckets the table has split into (1..160)."""
        return len(self._buckets)

    def __len__(self) -> int:
        """The number of nodes in buckets (the replacement caches not counted)."""
        return sum(len(bucket.nodes) for bucket in self._buckets)

    def bucket_index(self, node_id: bytes | NodeId) -> int:
        """The bucket that holds (or would hold) *node_id*."""
        raw = node_id.value if isinstance(node_id, NodeId) else NodeId(node_id).value
        return self._index(raw)

    def _index(self, raw: bytes) -> int:
        # bucket_index for an id already checked (a NodeInfo's): no NodeId built per call.
        # The bits the id shares with ours, worked out inline: every node filed or looked up
        # comes through here.
        prefix = NODE_ID_BITS - (int.from_bytes(raw, "big") ^ self._own_int).bit_length()
        last = len(self._buckets) - 1
        return prefix if prefix < last else last

    def _find(self, node_id: bytes) -> tuple[_Bucket, _Entry, bool] | None:
        bucket = self._buckets[self._index(node_id)]
        entry = bucket.nodes.get(node_id)
        if entry is not None:
            return bucket, entry, True
        entry = bucket.replacements.get(node_id)
        if entry is not None:
            return bucket, entry, False
        return None

    def state_of(self, node_id: bytes | NodeId, now: float) -> NodeState | None:
        """The state of the node with *node_id*, or None when the table does not hold it."""
        raw = node_id.value if isinstance(node_id, NodeId) else NodeId(node_id).value
        found = self._find(raw)
        return None if found is None else found[1].state(now, self._max_failures)

    def state_at(self, address: PeerAddress, now: float) -> NodeState | None:
        """The state of the node held at *address*, or None when the table holds none there.

        One lookup of the table's address index, no walk (a peer's PORT messages ask this for
        every message), exact whatever *restrict_ips*: nodes sharing an IP each answer for
        their own port.
        """
        if not isinstance(address, PeerAddress):
            raise LocalProtocolError(f"address is a PeerAddress, got {address!r}")
        address = address.normalized()
        if address.family != self._family:
            return None
        raw = self._addresses.get(_address_key(address))
        found = None if raw is None else self._find(raw)
        if found is None:  # pragma: no cover - _addresses follows the buckets; be safe anyway
            return None
        return found[1].state(now, self._max_failures)

    def entries(self, now: float) -> Iterator[RoutingEntry]:
        """Snapshots of every node held, bucket by bucket, bucket nodes before replacements."""
        for index, bucket in enumerate(self._buckets):
            for in_bucket, group in ((True, bucket.nodes), (False, bucket.replacements)):
                for entry in group.values():
                    yield RoutingEntry(
                        entry.node,
                        index,
                        entry.state(now, self._max_failures),
                        in_bucket,
                        entry.last_response,
                        entry.last_query,
                        entry.failures,
                    )

    def closest(
        self,
        target: NodeId,
        now: float,
        n: int = BUCKET_SIZE,
        *,
        include_questionable: bool = True,
        confirmed_only: bool = False,
    ) -> list[NodeInfo]:
        """Up to *n* bucket nodes closest to *target*, nearest first, never bad ones.

        Good nodes come first: the answer is the *n* closest good nodes, topped up (when there
        are fewer, and *include_questionable*) with the closest questionable ones; the result is
        sorted by distance. Replacement-cache nodes are not offered. This is what our own
        lookups start from: a node that never answered is worth a try there.

        With *confirmed_only* (what we hand out in our replies) the answer is instead the *n*
        closest nodes that have responded to one of our queries and have not failed one since,
        whether their last response is recent (good) or older (questionable): libtorrent's
        ``node_entry::confirmed()``, the rule of its ``routing_table::find_node`` without
        ``include_failed``, which its ``write_nodes_entries`` uses. A node that only queried us
        or was loaded from a save is never passed on to the network, so a querier cannot get
        itself (or a spoofed address) propagated by us without answering us first.
        *include_questionable* is then ignored.

        >>> from bip_handshake import PeerAddress
        >>> table = RoutingTable(NodeId(bytes(20)), family=4, rng=Random(0))
        >>> querier = NodeInfo(NodeId.from_int(1).value, PeerAddress.parse("1.2.3.4:6881"))
        >>> table.heard_from(querier, now=0.0, responded=False)  # not in a bucket yet
        <Admission.CANDIDATE: 'candidate'>
        >>> table.closest(table.own_id, 0.0, confirmed_only=True)
        []
        >>> table.heard_from(querier, now=1.0, responded=True)
        <Admission.ADDED: 'added'>
        >>> table.closest(table.own_id, 1.0, confirmed_only=True) == [querier]
        True
        """
        if not isinstance(target, NodeId):
            raise LocalProtocolError(f"target is a NodeId, got {target!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise LocalProtocolError(f"n is a non-negative int, got {n!r}")
        goal = int(target)
        if confirmed_only:
            return self._closest_confirmed(goal, n)
        good: list[tuple[int, _Entry]] = []
        questionable: list[tuple[int, _Entry]] = []
        max_failures = self._max_failures
        for group in self._by_distance(goal):
            for bucket in group:
                for raw, entry in bucket.nodes.items():
                    # entry.recently_answered(now), inlined: this runs for every node of the
                    # buckets looked at, on every find_node or get_peers answered
                    last = entry.last_response
                    if not entry.failures and last is not None and now - last < GOOD_INTERVAL:
                        good.append((int.from_bytes(raw, "big") ^ goal, entry))
                        continue
                    state = entry.state(now, max_failures)
                    if state is NodeState.GOOD:
                        good.append((int.from_bytes(raw, "big") ^ goal, entry))
                    elif state is NodeState.QUESTIONABLE and include_questionable:
                        questionable.append((int.from_bytes(raw, "big") ^ goal, entry))
            if len(good) >= n:
                # every later group is farther from the target than everything gathered so
                # far: the n closest good nodes are in hand, and no top-up is needed
                break
        good.sort(key=lambda pair: pair[0])
        chosen = good[:n]
        if len(chosen) < n:
            questionable.sort(key=lambda pair: pair[0])
            chosen += questionable[: n - len(chosen)]
            chosen.sort(key=lambda pair: pair[0])
        return [entry.node for _, entry in chosen]

    def _closest_confirmed(self, goal: int, n: int) -> list[NodeInfo]:
        """:meth:`closest` with *confirmed_only*: the *n* bucket nodes closest to *goal* that
        have responded and not failed since, by distance alone (libtorrent ranks no good node
        above a confirmed one that has been quiet for 15 minutes; neither does this)."""
        found: list[tuple[int, _Entry]] = []
        for group in self._by_distance(goal):
            for bucket in group:
                for raw, entry in bucket.nodes.items():
                    if entry.last_response is not None and not entry.failures:
                        found.append((int.from_bytes(raw, "big") ^ goal, entry))
            if len(found) >= n:
                break  # every later group is farther than all gathered (see _by_distance)
        found.sort(key=lambda pair: pair[0])
        return [entry.node for _, entry in found[:n]]

    def _by_distance(self, goal: int) -> Iterator[list[_Bucket]]:
        """The buckets in groups, each group's nodes all closer to *goal* than any later one's.

        With *home* the bucket *goal* falls in: bucket *home* first (its ids share more leading
        bits with *goal* than any other), then every closer bucket together (their ids differ
        from *goal* first at bit *home*), then buckets *home* - 1 down to 0 one by one (an id
        in bucket *i* differs from *goal* first at bit *i*). Lets :meth:`closest` stop at the
        first groups instead of sorting the whole table on every query it answers.
        """
        buckets = self._buckets
        last = len(buckets) - 1
        home = min(NODE_ID_BITS - (goal ^ self._own_int).bit_length(), last)
        yield [buckets[home]]
        if home < last:
            yield buckets[home + 1 :]
        for index in range(home - 1, -1, -1):
            yield [buckets[index]]

    def nodes_to_ping(self, now: float) -> list[NodeInfo]:
        """For each bucket, its questionable node heard from least recently (BEP 5's ping).

        The node core pings them and reports :meth:`heard_from` or :meth:`failed`; the table
        throttles nothing, so the caller skips nodes it already has a query out to. A bucket
        is looked at only once one of its nodes may have turned questionable (each remembers
        when its earliest good node's 15 minutes run out), so asking at every maintenance tick
        costs little more than the number of buckets.
        """
        out = []
        max_failures = self._max_failures
        for bucket in self._buckets:
            if bucket.ping_check > now:
                continue
            stalest: _Entry | None = None
            # when the first good node here turns questionable, if nothing else changes
            check = _FOREVER
            for entry in bucket.nodes.values():
                if entry.recently_answered(now):
                    # good: the common case, decided without state()
                    until = _good_until(entry)
                    check = min(check, until)
                    continue
                state = entry.state(now, max_failures)
                if state is NodeState.QUESTIONABLE:
                    if stalest is None or _seen(entry) < _seen(stalest):
                        stalest = entry
                elif state is NodeState.GOOD:
                    until = _good_until(entry)
                    check = min(check, until)
            if stalest is not None:
                out.append(stalest.node)
                bucket.ping_check = _NEVER  # still questionable until it answers
            else:
                bucket.ping_check = check
        return out

    def buckets_to_refresh(self, now: float) -> list[RefreshTarget]:
        """The buckets unchanged for :data:`GOOD_INTERVAL`, each with a random id inside it.

        A bucket changes when a node is added or replaced in it or one of its nodes responds.
        The caller looks the target up and calls :meth:`refresh_started` so the bucket is not
        offered again until the next interval.
        """
        return [
            RefreshTarget(index, self._random_id_in(index))
            for index, bucket in enumerate(self._buckets)
            if now - bucket.last_changed >= GOOD_INTERVAL
        ]

    def _random_id_in(self, index: int) -> NodeId:
        if index < len(self._buckets) - 1:
            return self._own.random_with_prefix(index, self._rng)
        # the last bucket holds every id sharing at least `index` bits with ours
        free = NODE_ID_BITS - index
        mask = (1 << free) - 1
        return NodeId.from_int(self._own_int & ~mask | self._rng.getrandbits(free))

    def random_id_in(self, bucket: int) -> NodeId:
        """A random id that bucket *bucket* would hold (from the table's rng)."""
        self._check_bucket(bucket)
        return self._random_id_in(bucket)

    def has_room(self, bucket: int) -> bool:
        """Whether bucket *bucket* could take one more node: it holds fewer than ``k``, or it
        is the last bucket (which splits when full)."""
        self._check_bucket(bucket)
        return len(self._buckets[bucket].nodes) < self._k or bucket == len(self._buckets) - 1

    def _check_bucket(self, bucket: int) -> None:
        if isinstance(bucket, bool) or not isinstance(bucket, int):
            raise LocalProtocolError(f"bucket is an int, got {bucket!r}")
        if not 0 <= bucket < len(self._buckets):
            raise LocalProtocolError(f"no bucket {bucket} in a table of {len(self._buckets)}")

    # -- filling sparse buckets (libtorrent's refresh) -------------------------------------

    @property
    def candidate_count(self) -> int:
        """How many nodes wait to be queried (:meth:`heard_about`, and nodes that only queried
        us)."""
        return sum(len(bucket.candidates) for bucket in self._buckets)

    def heard_about(self, node: NodeInfo, now: float) -> bool:
        """Offer *node*, which another node told us of (a response's ``nodes``), as a
        candidate for a bucket that has room; True if it was kept.

        Unverified, a candidate is not stored in a bucket (it holds no IP of the table and no
        lookup is offered it): :meth:`refresh_queries` hands it out to be queried, and its
        answer (:meth:`heard_from`) admits it. Only nodes a query could admit are kept: not
        ours, not known, not at an IP the table or another candidate holds, not of a network
        the bucket holds (*restrict_networks*, its candidates included), accepted by the
        filter, for a bucket with room. A bucket keeps at most ``k`` candidates; a newcomer
        to a full set pushes out the bucket's oldest candidate that only queried us, else its
        oldest (other buckets' candidates are never touched; a node that only queried us
        pushes out only another such node). Never raises on what a peer sent.
        """
        if not isinstance(node, NodeInfo):
            raise LocalProtocolError(f"a node is a NodeInfo, got {node!r}")
        return self._add_candidate(node, now, querier=False)

    def _add_candidate(self, node: NodeInfo, now: float, querier: bool) -> bool:
        """File *node* as a candidate of its bucket (see :meth:`heard_about`); *querier*: it
        only queried us. Such a candidate takes a free slot or an older querier's, never the
        slot of a node an answer listed, and is the first pushed out: a host that can forge
        its source address can file as many ids as it likes, and would otherwise push out
        every candidate our answers brought."""
        raw = node.node_id
        if raw == self._own.value:
            return False
        # cheapest first: in a table that has filled up, most nodes go to full buckets
        index = self._index(raw)
        bucket = self._buckets[index]
        if len(bucket.nodes) >= self._k and index < len(self._buckets) - 1:
            return False
        cache = bucket.candidates
        if raw in cache or raw in bucket.nodes or raw in bucket.replacements:
            return False
        address = node.address.normalized()
        if address.family != self._family or not address.is_connectable:
            return False
        key = _ip_key(address.host)
        if self._restrict_ips and (key in self._ips or key in self._candidate_ips):
            return False
        if self._filter is not None and not self._filter(node):
            return False
        network = _network(address.host)
        if self._network_taken(bucket, raw, network, now):
            return False
        if (
            network is not None
            and self._restrict_networks
            and any(other.network == network for other in cache.values())
        ):
            return False
        if len(cache) >= self._k:
            # bounded by k: the oldest querier goes first, else (for a node an answer listed)
            # the oldest candidate
            victim = next((other for other in cache.values() if other.querier), None)
            if victim is None:
                if querier:
                    return False
                victim = next(iter(cache.values()))
            self._drop_candidate(cache, victim.node.node_id)
        self._candidate_serial += 1
        cache[raw] = _Candidate(node, querier, self._candidate_serial, network)
        if self._restrict_ips:
            self._candidate_ips[key] = raw
        return True

    def _drop_candidate(self, cache: dict[bytes, _Candidate], raw: bytes) -> _Candidate:
        """Take the candidate *raw* out of *cache* (its bucket's), releasing its IP."""
        candidate = cache.pop(raw)
        key = _ip_key(_host(candidate.node))
        if self._candidate_ips.get(key) == raw:
            del self._candidate_ips[key]
        return candidate

    def refresh_queries(
        self,
        now: float,
        limit: int,
        interval: float,
        *,
        busy: Callable[[PeerAddress], bool] | None = None,
    ) -> list[RefreshQuery]:
        """Up to *limit* queries that fill buckets with room, the way libtorrent's refresh
        does: each asks a node for a random id inside a bucket, so its answer lists nodes of
        that bucket (which :meth:`heard_about` takes as candidates).

        Candidates come first (those whose bucket has filled up meanwhile, or which became known
        or lost their IP or network to a bucket node, are dropped): the query confirms them and
        brings more. They are asked oldest first, whether they queried us or an answer listed
        them (queriers first would let a flood of forged ones take every candidate query). The
        last of the *limit* slots goes to a probe first, so a flood of candidates never stops
        the probes: each bucket with room whose probe is due is probed through the known node
        closest to its random target; a probe that the bucket does not gain from pushes its next
        one back (*interval* times 2, 4, ... up to 2 ** 7), and a node joining the bucket makes
        it due again at once. Slots the probes leave go to more candidates.

        *busy*, when given, tells the addresses not to query now (a query to them is
        outstanding, say): their candidates stay for a later call, and their probes wait.
        """
        asked, skip = _query_rule(limit, busy)
        out = self._candidate_queries(limit - 1, now, skip, asked)
        last = len(self._buckets) - 1
        for index, bucket in enumerate(self._buckets):
            if len(out) >= limit:
                break
            if bucket.probe_due > now or (len(bucket.nodes) >= self._k and index < last):
                continue
            target = self._random_id_in(index)
            closest = self.closest(target, now, 1)
            if not closest:
                break  # an empty table: nobody to ask
            if skip(closest[0].address):
                continue
            bucket.probes = min(bucket.probes + 1, MAX_PROBE_BACKOFF)
            bucket.probe_due = now + interval * (1 << bucket.probes)
            asked.add(closest[0].address.normalized())
            out.append(RefreshQuery(closest[0], index, target))
        if len(out) < limit:
            out += self._candidate_queries(limit - len(out), now, skip, asked)
        return out

    def querier_queries(
        self,
        now: float,
        limit: int,
        *,
        busy: Callable[[PeerAddress], bool] | None = None,
    ) -> list[RefreshQuery]:
        """Up to *limit* queries to the candidates that only queried us, oldest first, as
        :meth:`refresh_queries` asks candidates (a find_node for a random id inside the
        bucket; those no query can admit any more are dropped, those at an address *busy*
        names stay), and nothing else: no candidate an answer listed, no probe.

        For a node that sends no fill queries: a querier joins a bucket only once it has
        answered us, so without this query it would wait for ever.
        """
        asked, skip = _query_rule(limit, busy)
        return self._candidate_queries(limit, now, skip, asked, queriers_only=True)

    def _candidate_queries(
        self,
        limit: int,
        now: float,
        skip: Callable[[PeerAddress], bool],
        asked: set[PeerAddress],
        *,
        queriers_only: bool = False,
    ) -> list[RefreshQuery]:
        """Up to *limit* queries to candidates (see :meth:`refresh_queries`; only those
        that queried us with *queriers_only*), taken out of the table, their addresses added
        to *asked*; candidates no query can admit any more are dropped, those at an address
        *skip* names stay."""
        if limit <= 0:
            return []
        # (serial, bucket index, id) of every candidate of a bucket with room
        waiting: list[tuple[int, int, bytes]] = []
        last = len(self._buckets) - 1
        for index, bucket in enumerate(self._buckets):
            cache = bucket.candidates
            if not cache:
                continue
            if len(bucket.nodes) >= self._k and index < last:
                for raw in list(cache):  # the bucket filled up: none of them can join
                    self._drop_candidate(cache, raw)
                continue
            waiting += [
                (c.serial, index, raw) for raw, c in cache.items() if c.querier or not queriers_only
            ]
        # oldest first, queriers or not: queriers first would form a network faster, but a
        # flood of forged ones (up to every candidate slot no listed node is waiting for)
        # would then take every candidate query of every call
        waiting.sort()
        out: list[RefreshQuery] = []
        # bounded: one pass per candidate held (at most k per bucket)
        for _, index, raw in waiting:
            if len(out) >= limit:
                break
            bucket = self._buckets[index]
            node = bucket.candidates[raw].node
            if raw in bucket.nodes or raw in bucket.replacements:
                self._drop_candidate(bucket.candidates, raw)
                continue
            host = _host(node)
            if self._restrict_ips and _ip_key(host) in self._ips:
                self._drop_candidate(bucket.candidates, raw)
                continue
            if self._network_taken(bucket, raw, _network(host), now):
                self._drop_candidate(bucket.candidates, raw)
                continue
            if skip(node.address):
                continue  # asked at a later call
            self._drop_candidate(bucket.candidates, raw)
            asked.add(node.address.normalized())
            out.append(RefreshQuery(node, index, self._random_id_in(index)))
        return out

    def refresh_started(self, bucket: int, now: float) -> None:
        """Record that bucket *bucket* is being refreshed: its refresh clock restarts at *now*."""
        if isinstance(bucket, bool) or not isinstance(bucket, int):
            raise LocalProtocolError(f"bucket is an int, got {bucket!r}")
        if not 0 <= bucket < len(self._buckets):
            raise LocalProtocolError(f"no bucket {bucket} in a table of {len(self._buckets)}")
        self._buckets[bucket].last_changed = now

    # -- updating --------------------------------------------------------------------------

    def _check_node(self, node: NodeInfo) -> PeerAddress:
        # returns the node's address normalized, which the callers go on to use
        if not isinstance(node, NodeInfo):
            raise LocalProtocolError(f"a node is a NodeInfo, got {node!r}")
        address = node.address.normalized()
        if address.family != self._family:
            raise LocalProtocolError(f"an IPv{address.family} node in an IPv{self._family} table")
        return address

    def heard_from(self, node: NodeInfo, now: float, responded: bool) -> Admission:
        """Record a message from *node*: a response to our query (*responded*) or a query.

        A new node that responded goes into its bucket if there is room (splitting the last
        bucket when it is full), in place of a bad node or of a never-confirmed node; otherwise
        into the replacement cache. A new node that only queried us goes into no bucket (see
        the module docstring): a candidate when its bucket has room, else into the replacement
        cache. A known node has its times updated; a response clears its failures, and
        promotes it from the replacement cache when its bucket has room or holds a node it
        outranks.
        """
        address = self._check_node(node)
        raw = node.node_id
        if raw == self._own.value or not address.is_connectable:
            return Admission.REJECTED
        if responded:
            cache = self._buckets[self._index(raw)].candidates
            if raw in cache:
                self._drop_candidate(cache, raw)  # heard from at last: no longer a candidate
        found = self._find(raw)
        if found is not None:
            return self._update(found, node, now, responded)
        host = address.host
        if (
            self._restrict_ips
            and _ip_key(host) in self._ips
            and not (responded and self._yield_ip(host, node, now))
        ):
            return Admission.REJECTED
        if self._filter is not None and not self._filter(node):
            return Admission.REJECTED
        entry = _Entry(node, now, host)
        if responded:
            entry.last_response = now
            return self._insert(entry, now, host)
        entry.last_query = now
        # Only queried us: a candidate for a bucket with room (the last one can split), to be
        # queried by refresh_queries; in a full bucket's cache otherwise (libtorrent's rule).
        index = self._index(raw)
        bucket = self._buckets[index]
        if len(bucket.nodes) < self._k or index == len(self._buckets) - 1:
            if raw in bucket.candidates or self._add_candidate(node, now, querier=True):
                return Admission.CANDIDATE
            return Admission.REJECTED
        if self._network_taken(bucket, raw, entry.network, now):
            return Admission.REJECTED
        return self._to_replacements(bucket, entry, host)

    def _yield_ip(self, host: _IP, newcomer: NodeInfo, now: float) -> bool:
        """A node that answered us from *host*, which another id holds: may it have the IP?

        A bad holder gives way (it stopped answering; this node did). A holder at the very
        address the newcomer answered from has changed its id (a restart, or a forgery): as
        libtorrent does, it is evicted, and the newcomer is not admitted this time (its next
        answer is); until then nobody holds the IP. Otherwise the holder keeps it.
        """
        key = _ip_key(host)
        found = self._find(self._ips[key])
        if found is None:  # pragma: no cover - _ips follows the buckets; be safe anyway
            del self._ips[key]
            return True
        bucket, holder, in_bucket = found
        bad = holder.state(now, self._max_failures) is NodeState.BAD
        if not bad and holder.node.address != newcomer.address:
            return False
        (bucket.nodes if in_bucket else bucket.replacements).pop(holder.node.node_id)
        self._drop(holder)
        self._refill(bucket, now)
        return bad

    def _update(
        self, found: tuple[_Bucket, _Entry, bool], node: NodeInfo, now: float, responded: bool
    ) -> Admission:
        bucket, entry, in_bucket = found
        if entry.node.address != node.address:
            # An id seen at a new address: keep a node that has proven itself where it is
            # (the newcomer may be spoofing it); otherwise follow the node to its new address.
            if entry.state(now, self._max_failures) is not NodeState.BAD and (
                entry.last_response is not None or not responded
            ):
                return Admission.REJECTED
            host = _host(node)
            key = _ip_key(host)
            if self._restrict_ips and self._ips.get(key, node.node_id) != node.node_id:
                return Admission.REJECTED
            if self._filter is not None and not self._filter(node):
                return Admission.REJECTED
            network = _network(host)
            if self._network_taken(bucket, node.node_id, network, now):
                return Admission.REJECTED
            self._forget_ip(entry)
            entry.node = node
            entry.network = network
            self._hold_ip(node, host)
        entry.seen = now
        if responded:
            entry.last_response = now
            entry.failures = 0
            # it may have been bad, which nodes_to_ping's bound leaves out: good now, it
            # turns questionable no sooner than in GOOD_INTERVAL
            bucket.ping_check = min(bucket.ping_check, now + GOOD_INTERVAL)
            if in_bucket:
                bucket.last_changed = now
            else:
                self._promote_one(bucket, entry, now)
        else:
            entry.last_query = now
        return Admission.UPDATED

    def _promote_one(self, bucket: _Bucket, entry: _Entry, now: float) -> None:
        # a replacement that just responded takes a free slot, a bad node's or an unconfirmed one's
        victim = self._victim(bucket, entry, now)
        if victim is None and len(bucket.nodes) >= self._k:
            return
        if victim is not None:
            self._drop(bucket.nodes.pop(victim))
        del bucket.replacements[entry.node.node_id]
        bucket.nodes[entry.node.node_id] = entry
        bucket.gained(now)

    def _victim(self, bucket: _Bucket, newcomer: _Entry, now: float) -> bytes | None:
        # The first bad node (in bucket order); else, for a newcomer that responded, the
        # lowest-ranked node that never has (the first of equals). One pass, with _Entry.state's
        # BAD rule inlined: every node filed into a full bucket comes through here.
        if len(bucket.nodes) < self._k:
            return None
        max_failures = self._max_failures
        unconfirmed: list[_Entry] = []
        for raw, entry in bucket.nodes.items():
            failures = entry.failures
            if entry.last_response is None:
                if failures:
                    return raw  # bad: failed without ever responding
                unconfirmed.append(entry)
            elif failures >= max_failures:
                return raw  # bad: failed max_failures times in a row
        if unconfirmed and newcomer.last_response is not None:
            return min(unconfirmed, key=_Entry.rank).node.node_id
        return None

    def _network_taken(self, bucket: _Bucket, raw: bytes, network: int | None, now: float) -> bool:
        """Whether another live node of *network* (the ``_network`` of the host of the node
        with id *raw*) is in *bucket* (restrict_networks)."""
        if network is None or not self._restrict_networks:
            return False
        for group in (bucket.nodes, bucket.replacements):
            for other in group.values():
                if (
                    other.network == network
                    and other.node.node_id != raw
                    and other.state(now, self._max_failures) is not NodeState.BAD
                ):
                    return True
        return False

    def _insert(self, entry: _Entry, now: float, host: _IP) -> Admission:
        # *host* is _host(entry.node), which the callers have at hand
        raw = entry.node.node_id
        # bounded: each pass either stores the node or adds one of at most 160 buckets
        while True:
            index = self._index(raw)
            bucket = self._buckets[index]
            if len(bucket.nodes) < self._k:
                if self._network_taken(bucket, raw, entry.network, now):
                    return Admission.REJECTED
                bucket.nodes[raw] = entry
                bucket.gained(now)
                self._hold_ip(entry.node, host)
                return Admission.ADDED
            if index == len(self._buckets) - 1 and len(self._buckets) < NODE_ID_BITS:
                self._split(now)
                continue
            if self._network_taken(bucket, raw, entry.network, now):
                return Admission.REJECTED
            victim = self._victim(bucket, entry, now)
            if victim is not None:
                self._drop(bucket.nodes.pop(victim))
                bucket.nodes[raw] = entry
                bucket.gained(now)
                self._hold_ip(entry.node, host)
                return Admission.ADDED
            return self._to_replacements(bucket, entry, host)

    def _to_replacements(self, bucket: _Bucket, entry: _Entry, host: _IP) -> Admission:
        cache = bucket.replacements
        if len(cache) >= self._k:
            worst = min(cache.values(), key=_Entry.rank)
            if worst.rank() >= entry.rank():
                return Admission.REJECTED
            self._drop(cache.pop(worst.node.node_id))
        cache[entry.node.node_id] = entry
        self._hold_ip(entry.node, host)
        return Admission.REPLACEMENT

    def _split(self, now: float) -> None:
        old = self._buckets[-1]
        depth = len(self._buckets) - 1
        new = _Bucket(now)
        new.last_changed = old.last_changed
        self._buckets.append(new)
        # an id moves when it shares more than `depth` leading bits with ours: its XOR with
        # ours is shorter than NODE_ID_BITS - depth bits
        own, free = self._own_int, NODE_ID_BITS - depth
        for group, new_group in ((old.nodes, new.nodes), (old.replacements, new.replacements)):
            for raw in [r for r in group if (int.from_bytes(r, "big") ^ own).bit_length() < free]:
                new_group[raw] = group.pop(raw)
        moving = old.candidates
        for raw in [r for r in moving if (int.from_bytes(r, "big") ^ own).bit_length() < free]:
            new.candidates[raw] = moving.pop(raw)
        old.probes, old.probe_due = 0, now
        for bucket in (old, new):
            self._refill(bucket, now)

    def _refill(self, bucket: _Bucket, now: float) -> None:
        """Fill *bucket*'s free slots from its replacement cache: only with nodes that have
        answered us (libtorrent's ``fill_from_replacements`` moves only pinged ones). If room
        is left, the others (that only queried us, or were loaded from a save) become
        candidates, for :meth:`refresh_queries` to query: their answer admits them."""
        replacements = bucket.replacements
        # bounded by k: each pass moves one replacement into a free slot
        while len(bucket.nodes) < self._k and replacements:
            answered = [entry for entry in replacements.values() if entry.last_response is not None]
            if not answered:
                break
            best = max(answered, key=_Entry.rank)
            del replacements[best.node.node_id]
            bucket.nodes[best.node.node_id] = best
            bucket.gained(now)
        if len(bucket.nodes) >= self._k or not replacements:
            return
        unanswered = sorted(replacements.values(), key=_Entry.rank, reverse=True)
        replacements.clear()
        for entry in unanswered:
            self._drop(entry)  # releases its IP, which it holds as a candidate instead
        for entry in unanswered:
            self._add_candidate(entry.node, now, querier=entry.last_query is not None)

    def _hold_ip(self, node: NodeInfo, host: _IP) -> None:
        """File *node* (at *host*, its normalized IP) in the indexes of what the table
        holds: by IP and by address."""
        self._ips[_ip_key(host)] = node.node_id
        self._addresses[_ip_key(host), node.address.port] = node.node_id

    def _forget_ip(self, entry: _Entry) -> None:
        host = _host(entry.node)
        key = _ip_key(host)
        if self._ips.get(key) == entry.node.node_id:
            del self._ips[key]
        address = (key, entry.node.address.port)
        if self._addresses.get(address) == entry.node.node_id:
            del self._addresses[address]

    def _drop(self, entry: _Entry) -> None:
        self._forget_ip(entry)

    def failed(self, node: NodeInfo, now: float) -> bool:
        """Record that *node* did not answer a query; True if the table held it.

        A bucket node that turns bad is replaced by the best replacement when there is one
        (and dropped anyway if it never responded); a replacement that turns bad is dropped.
        A report for a known id at another address is ignored (it is not that node's failure).
        """
        self._check_node(node)
        found = self._find(node.node_id)
        if found is None:
            return False
        bucket, entry, in_bucket = found
        if entry.node.address != node.address:
            return False
        entry.failures += 1
        bucket.ping_check = _NEVER
        if entry.state(now, self._max_failures) is not NodeState.BAD:
            return True
        if not in_bucket:
            self._drop(bucket.replacements.pop(node.node_id))
        elif bucket.replacements or entry.last_response is None:
            self._drop(bucket.nodes.pop(node.node_id))
            self._refill(bucket, now)
        return True

    def remove(self, node_id: bytes | NodeId, now: float) -> bool:
        """Forget the node with *node_id* (bucket or replacement cache); True if it was held.

        A freed bucket slot is taken at once by the best replacement.
        """
        raw = node_id.value if isinstance(node_id, NodeId) else NodeId(node_id).value
        found = self._find(raw)
        if found is None:
            return False
        bucket, entry, in_bucket = found
        (bucket.nodes if in_bucket else bucket.replacements).pop(raw)
        self._drop(entry)
        self._refill(bucket, now)
        return True

    def change_own_id(self, own_id: NodeId, now: float) -> None:
        """Take *own_id* as our id (BEP 42 gave us a new one) and re-file every node around
        it, each keeping what the table knows of it: its last response and query, its
        failures and when it was last seen, as libtorrent's ``routing_table::update_node_id``
        re-adds its entries. A node that had answered us is still handed out in our replies,
        and still outranks newcomers that never answered.

        The bucket nodes go back first, then the replacements, so a bucket node of the old
        layout is not pushed out by an old replacement; then the candidates, oldest first.
        Each is filed as a newcomer with its state would be: a replacement that never
        answered us enters no bucket (a candidate where there is room, as :meth:`heard_from`
        files a querier), one the new layout has no room for is dropped (a full bucket's
        replacement cache keeps the best), as are bad nodes (which :meth:`save` leaves out
        too: they only wait to be replaced), a node that holds *own_id* itself and one the
        ``node_filter`` refuses now (it may read what changed with the id: the node's own
        external address, say). The buckets' refresh clocks start at *now*.
        """
        if not isinstance(own_id, NodeId):
            raise LocalProtocolError(f"own_id is a NodeId, got {own_id!r}")
        max_failures = self._max_failures
        old = self._buckets
        nodes = [
            e
            for b in old
            for e in b.nodes.values()
            if e.state(now, max_failures) is not NodeState.BAD
        ]
        replacements = [e for b in old for e in b.replacements.values()]
        candidates = sorted((c for b in old for c in b.candidates.values()), key=lambda c: c.serial)
        self._own = own_id
        self._own_int = int(own_id)
        self._buckets = [_Bucket(now)]
        self._ips.clear()
        self._addresses.clear()
        self._candidate_ips.clear()
        raw_own, node_filter = own_id.value, self._filter
        # bounded: at most 3 * k entries per old bucket, each filed once
        was_bucket_node = len(nodes)
        for index, entry in enumerate(nodes + replacements):
            node = entry.node
            if node.node_id == raw_own or (node_filter is not None and not node_filter(node)):
                continue
            if index < was_bucket_node or entry.last_response is not None:
                self._insert(entry, now, _host(node))
            else:
                self._file_unanswered(entry, now)
        for candidate in candidates:
            self._add_candidate(candidate.node, now, candidate.querier)

    def _file_unanswered(self, entry: _Entry, now: float) -> None:
        """File a node that has never answered us (it only queried us, or was loaded from a
        save) as :meth:`heard_from` files a querier: a candidate for a bucket with room,
        else in its full bucket's replacement cache, never in a bucket."""
        node = entry.node
        index = self._index(node.node_id)
        bucket = self._buckets[index]
        if len(bucket.nodes) < self._k or index == len(self._buckets) - 1:
            self._add_candidate(node, now, querier=entry.last_query is not None)
        elif not self._network_taken(bucket, node.node_id, entry.network, now):
            self._to_replacements(bucket, entry, _host(node))

    # -- persistence -----------------------------------------------------------------------

    def save(self, now: float) -> bytes:
        """Bencoded state for a restart: our id, the family, and the non-bad nodes, bucket
        nodes first (then replacements), as compact node info.

        >>> table = RoutingTable(NodeId(bytes(20)), family=4, rng=Random(0))
        >>> table.save(now=0.0)
        b'd6:familyi4e2:id20:\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x005:nodes0:e'
        """
        first = [e.node for e in self.entries(now) if e.in_bucket and e.state is not NodeState.BAD]
        rest = [
            e.node for e in self.entries(now) if not e.in_bucket and e.state is not NodeState.BAD
        ]
        nodes = b"".join(node.to_compact() for node in first + rest)
        return encode({b"family": self._family, b"id": self._own.value, b"nodes": nodes})

    @classmethod
    def load(
        cls,
        data: bytes,
        *,
        rng: Random,
        own_id: NodeId | None = None,
        k: int = BUCKET_SIZE,
        max_failures: int = MAX_FAILURES,
        restrict_ips: bool = True,
        restrict_networks: bool = False,
        node_filter: Callable[[NodeInfo], bool] | None = None,
        now: float = 0.0,
    ) -> RoutingTable:
        """Rebuild a table from :meth:`save` output; malformed data raises
        :class:`RoutingStateError`.

        The saved nodes come back unconfirmed (questionable, never responded), for the node core
        to ping. *own_id* overrides the saved id (say, a new BEP 42 id after the external address
        changed); the nodes are re-filed around it. Keys other than ``family``, ``id`` and
        ``nodes`` are ignored, for forward compatibility; everything else is checked.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise LocalProtocolError(f"saved state is bytes, got {type(data).__name__}")
        # a save holds at most two full buckets' worth (bucket + cache) per possible bucket
        max_nodes = NODE_ID_BITS * 2 * max(k, BUCKET_SIZE) if isinstance(k, int) else 0
        max_bytes = max_nodes * _COMPACT_V6_NODE + 256
        if len(data) > max_bytes:
            raise RoutingStateError(f"routing table state is over {max_bytes} bytes")
        try:
            state = decode(data)
        except BencodeError as exc:
            raise RoutingStateError(f"routing table state is not bencoded: {exc}") from None
        if not isinstance(state, dict):
            raise RoutingStateError("routing table state is not a dictionary")
        family = state.get(b"family")
        if type(family) is not int or family not in (4, 6):
            raise RoutingStateError(f"'family' is 4 or 6, got {family!r}")
        saved_id = state.get(b"id")
        if not isinstance(saved_id, bytes) or len(saved_id) != 20:
            raise RoutingStateError("'id' is a 20-byte string")
        nodes = state.get(b"nodes")
        if not isinstance(nodes, bytes):
            raise RoutingStateError("'nodes' is a byte string of compact node info")
        try:
            parsed = parse_compact_nodes(nodes, 4 if family == 4 else 6, limit=max_nodes)
        except CompactError as exc:
            raise RoutingStateError(f"'nodes': {exc}") from None
        table = cls(
            NodeId(saved_id) if own_id is None else own_id,
            family=4 if family == 4 else 6,
            rng=rng,
            k=k,
            max_failures=max_failures,
            restrict_ips=restrict_ips,
            restrict_networks=restrict_networks,
            node_filter=node_filter,
            now=now,
        )
        for node in parsed:
            if node.address.normalized().family != table.family:
                raise RoutingStateError(f"'nodes' holds {node.address} in an IPv{family} table")
            table._restore(node, now)
        return table

    def _restore(self, node: NodeInfo, now: float) -> None:
        if node.node_id == self._own.value or not node.address.is_connectable:
            return
        if self._find(node.node_id) is not None:
            return
        host = _host(node)
        if self._restrict_ips and _ip_key(host) in self._ips:
            return
        if self._filter is not None and not self._filter(node):
            return
        self._insert(_Entry(node, None, host), now, host)
