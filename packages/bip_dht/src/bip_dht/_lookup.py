"""The iterative Kademlia lookup (BEP 5 ``find_node`` / ``get_peers``, BEP 44 ``get``, BEP 51
``sample_infohashes``), sans-IO.

A :class:`Lookup` walks towards a target: it queries the closest nodes it knows, learns closer
ones from their answers, and stops when the ``k`` closest nodes it has seen have all answered
(or failed). It never sends anything: the node core asks :meth:`Lookup.next_queries` whom to
query, sends the queries, and reports back with :meth:`Lookup.on_response`,
:meth:`Lookup.on_error` and :meth:`Lookup.handle_timer` (driven by :meth:`Lookup.next_deadline`).
Time is the caller's ``now`` (seconds, monotonic).

API::

    lookup = Lookup(target, "get_peers", seeds, alpha=3, k=8)
    lookup.next_queries(now) -> [(NodeInfo, "get_peers"), ...]
    lookup.on_response(node, response, now) / on_error(node, now) / handle_timer(now)
    lookup.next_deadline() -> float | None
    lookup.done -> bool
    lookup.result() -> LookupResult (closest responders with tokens, peers, best item)
    lookup.writable(k) -> (LookupNode, ...) (the k closest responders that gave a token)

Timeouts, as libtorrent does them. A query unanswered after ``slow_after`` seconds (default 2 s)
is *slow*: it stops counting against ``alpha`` so one dead node does not stall the lookup, but
it is not given up and its answer is still welcome (libtorrent's "short timeout"). After
``timeout`` seconds (default 8 s; libtorrent gives up between 5 and 15 s) it has *failed*.

Which nodes get queried: the closest ``k`` entries that have not failed (libtorrent's
traversal rule). A node is never queried twice, nor two ids at one address. At most ``alpha``
queries are outstanding and not slow at any time; at most ``max_queries`` are sent in total
(default ``16 * k``), so a lookup ends whatever the network answers.

Bounds on what peers can make us hold: the candidate set keeps at most ``max_candidates``
entries (default ``8 * k``): the farthest never-queried ones are dropped first; queried ones
are at most ``max_queries``. Peers (``values``) are deduplicated and capped at ``max_peers``.
With ``one_per_ip`` (the default, libtorrent's ``restrict_search_ips``) a second node id at an
IP already in the set is ignored, and so is a node learned from an answer (or
:meth:`Lookup.add_candidates`) whose /24 (IPv4) or /64 (IPv6) network an earlier learned node
holds, as libtorrent's ``traversal_algorithm::add_entry`` does: one host owning a /64 cannot
answer with made-up ids at made-up addresses and fill all ``k`` closest places. The seeds the
lookup starts from (libtorrent's ``flag_initial``: our routing table's nodes and, for a
bootstrap, the addresses that answered it) hold no network, so they neither count against it
nor are refused by it; the nodes a bootstrap's responders name are learned ones. Local
addresses (those BEP 42 exempts: a LAN, loopback, the simulator's 10/8) are exempt from the
network rule as in the routing table (many honest nodes share such a /24); for them only
the one-per-IP rule applies.
The ``learned`` argument starts a lookup with learned candidates besides its seeds (the node
core starts a dual-stack lookup's missing half from its routing table and the other family's
answer this way), under the network rule like :meth:`Lookup.add_candidates`.
An optional ``node_filter`` refuses candidates before they are stored (the node core uses it
for address families it has no socket for, unconnectable addresses and BEP 42 enforcement).

Answers from nodes we did not query (or that are no longer outstanding) are ignored, as are
answers whose ``id`` is not the id we queried (counted as a failure of that node: it is not
who we thought). BEP 44 ``get`` answers are verified (target and, for mutable items, the ed25519
signature) before they can become the result; the highest ``seq`` wins.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Literal

from bip_bencode import BencodeError, encode
from bip_handshake import NodeInfo, PeerAddress

from ._errors import DHTError, LocalProtocolError
from ._items import MAX_SALT_SIZE, ImmutableItem, Item, MutableItem
from ._krpc_replies import Response
from ._node_id import NodeId
from ._routing import _network

__all__ = [
    "DEFAULT_QUERY_TIMEOUT",
    "DEFAULT_SLOW_AFTER",
    "Lookup",
    "LookupKind",
    "LookupNode",
    "LookupResult",
]

LookupKind = Literal["find_node", "get_peers", "get", "sample_infohashes"]
"""The query a :class:`Lookup` sends to every node it walks through."""

_KINDS: frozenset[str] = frozenset({"find_node", "get_peers", "get", "sample_infohashes"})

DEFAULT_SLOW_AFTER = 2.0
"""Seconds before an unanswered lookup query stops counting against ``alpha`` (still awaited)."""

DEFAULT_QUERY_TIMEOUT = 8.0
"""Seconds before an unanswered lookup query has failed."""


class _State(enum.Enum):
    CANDIDATE = "candidate"
    IN_FLIGHT = "in_flight"
    SLOW = "slow"
    RESPONDED = "responded"
    FAILED = "failed"


_NetworkKey = tuple[int, int]
"""A learned node's network in :attr:`Lookup._networks`: (IP version, ``_network`` of its
host); the version keeps an IPv4 /24 and an IPv6 /64 with the same number apart."""


class _Entry:
    __slots__ = ("distance", "info", "network", "sent_at", "state", "token")

    def __init__(self, info: NodeInfo, distance: int, network: _NetworkKey | None) -> None:
        self.info = info
        self.distance = distance
        # the network this entry holds (learned, non-local nodes with one_per_ip), else None
        self.network = network
        self.state = _State.CANDIDATE
        self.sent_at = 0.0
        self.token: bytes | None = None


def _distance(entry: _Entry) -> int:
    return entry.distance


@dataclass(frozen=True, slots=True)
class LookupNode:
    """A node that answered the lookup, with the write token it gave (``None``: none).

    The token is what ``announce_peer`` (get_peers) or ``put`` (get) must carry to that node.
    """

    node: NodeInfo
    token: bytes | None


@dataclass(frozen=True, slots=True)
class LookupResult:
    """What a lookup found.

    Attributes:
        nodes: up to ``k`` responding nodes, closest to the target first.
        peers: the peers (``values``) all nodes returned, deduplicated, in arrival order.
        item: the best verified BEP 44 item (``get`` lookups: highest ``seq``), or None.
        queries: how many queries were sent.
    """

    nodes: tuple[LookupNode, ...]
    peers: tuple[PeerAddress, ...]
    item: Item | None
    queries: int


def _host(address: PeerAddress) -> IPv4Address | IPv6Address:
    return address.normalized().host


class Lookup:
    """One iterative lookup towards ``target``; see the module docstring.

    >>> from bip_handshake import PeerAddress
    >>> seed = NodeInfo(bytes(19) + b"\\x01", PeerAddress.parse("10.0.0.1:6881"))
    >>> lookup = Lookup(NodeId(bytes(20)), "find_node", [seed])
    >>> lookup.next_queries(0.0) == [(seed, "find_node")]
    True
    >>> lookup.on_response(seed, Response(transaction_id=b"t", node_id=seed.node_id, nodes=()), 0.1)
    True
    >>> lookup.done, [n.node for n in lookup.result().nodes] == [seed]
    (True, True)
    """

    def __init__(
        self,
        target: NodeId,
        kind: LookupKind,
        seeds: Iterable[NodeInfo],
        *,
        alpha: int = 3,
        k: int = 8,
        slow_after: float = DEFAULT_SLOW_AFTER,
        timeout: float = DEFAULT_QUERY_TIMEOUT,
        max_queries: int | None = None,
        max_candidates: int | None = None,
        max_peers: int = 2000,
        one_per_ip: bool = True,
        own_id: NodeId | None = None,
        salt: bytes = b"",
        node_filter: Callable[[NodeInfo], bool] | None = None,
        learned: Iterable[NodeInfo] = (),
    ) -> None:
        if not isinstance(target, NodeId):
            raise LocalProtocolError(f"target must be a NodeId, got {target!r}")
        if not isinstance(kind, str) or kind not in _KINDS:
            raise LocalProtocolError(
                f"kind must be find_node, get_peers, get or sample_infohashes, got {kind!r}"
            )
        if alpha < 1 or k < 1 or max_peers < 0:
            raise LocalProtocolError("alpha and k must be at least 1, max_peers at least 0")
        if not isinstance(salt, bytes) or len(salt) > MAX_SALT_SIZE:
            raise LocalProtocolError("salt must be at most 64 bytes (BEP 44)")
        if not 0 < slow_after <= timeout:
            raise LocalProtocolError("need 0 < slow_after <= timeout")
        self.target = target
        self.kind: LookupKind = kind
        self.alpha = alpha
        self.k = k
        self.slow_after = slow_after
        self.timeout = timeout
        self.max_queries = 16 * k if max_queries is None else max_queries
        self.max_candidates = 8 * k if max_candidates is None else max_candidates
        if self.max_queries < 1 or self.max_candidates < k:
            raise LocalProtocolError("max_queries must be >= 1 and max_candidates >= k")
        self.max_peers = max_peers
        self.one_per_ip = one_per_ip
        self._own = own_id.value if own_id is not None else None
        self._salt = salt
        self._filter = node_filter
        self._target_int = int(target)
        # Sorted by distance (bisected on _Entry.distance).
        self._entries: list[_Entry] = []
        self._by_id: dict[bytes, _Entry] = {}
        self._hosts: set[IPv4Address | IPv6Address] = set()
        # the networks learned entries hold (one_per_ip; seeds and local addresses hold none)
        self._networks: set[_NetworkKey] = set()
        # Ids and addresses ever queried: never query either twice (bounded by max_queries).
        self._queried_ids: set[bytes] = set()
        self._queried_addresses: set[PeerAddress] = set()
        self._queries = 0
        self._peers: dict[PeerAddress, None] = {}
        self._item: Item | None = None
        self._done = False
        # next_deadline()'s answer, kept until a query starts or ends (None: not known); the
        # node core asks for it after every datagram, and a scan per ask dominated its cost
        self._due: tuple[float | None] | None = None
        for seed in seeds:
            self._add(seed, learned=False)
        # before the first _update_done: a lookup with no seed would be done already
        self._add_learned(learned)
        self._update_done()

    # ---- candidates -------------------------------------------------------------------------

    def _add(self, info: NodeInfo, *, learned: bool = True) -> None:
        if not isinstance(info, NodeInfo):
            raise LocalProtocolError(f"a seed must be a NodeInfo, got {info!r}")
        if info.node_id in self._by_id or info.node_id == self._own:
            return
        if info.node_id in self._queried_ids or info.address in self._queried_addresses:
            return
        host = _host(info.address)
        network: _NetworkKey | None = None
        if self.one_per_ip:
            if host in self._hosts:
                return
            if learned:
                # libtorrent's restrict_search_ips: one learned node per /24 or /64 (None:
                # a local address, exempt as in the routing table; the host rule above holds)
                prefix = _network(host)
                if prefix is not None:
                    network = (host.version, prefix)
                    if network in self._networks:
                        return
        if self._filter is not None and not self._filter(info):
            return
        distance = int.from_bytes(info.node_id, "big") ^ self._target_int
        if len(self._entries) >= self.max_candidates:
            # Full: drop the farthest never-queried entry if the newcomer is closer.
            victim = self._farthest_candidate()
            if victim is None or self._entries[victim].distance < distance:
                return
            self._remove(victim)
        entry = _Entry(info, distance, network)
        index = bisect.bisect_left(self._entries, distance, key=_distance)
        self._entries.insert(index, entry)
        self._by_id[info.node_id] = entry
        self._hosts.add(host)
        if network is not None:
            self._networks.add(network)

    def _distance_to_target(self, info: NodeInfo) -> int:
        return int.from_bytes(info.node_id, "big") ^ self._target_int

    def _farthest_candidate(self) -> int | None:
        for index in range(len(self._entries) - 1, -1, -1):
            state = self._entries[index].state
            if state is _State.CANDIDATE or state is _State.FAILED:
                return index
        return None

    def _remove(self, index: int) -> None:
        entry = self._entries.pop(index)
        del self._by_id[entry.info.node_id]
        self._hosts.discard(_host(entry.info.address))
        if entry.network is not None:
            self._networks.discard(entry.network)

    def _top(self) -> list[_Entry]:
        """The ``k`` closest entries that have not failed."""
        top: list[_Entry] = []
        for entry in self._entries:
            if entry.state is not _State.FAILED:
                top.append(entry)
                if len(top) == self.k:
                    break
        return top

    def _update_done(self) -> None:
        if self._done:
            return
        budget = self._queries < self.max_queries
        for entry in self._top():
            if entry.state is _State.IN_FLIGHT or entry.state is _State.SLOW:
                return
            if entry.state is _State.CANDIDATE and budget:
                return
        self._done = True

    # ---- driving ----------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """True once the ``k`` closest nodes seen have answered or failed (or the budget is
        spent and nothing among them is outstanding); later events are ignored."""
        return self._done

    @property
    def queries_sent(self) -> int:
        """How many queries :meth:`next_queries` has handed out."""
        return self._queries

    @property
    def outstanding(self) -> int:
        """Queries in flight that are not slow (never more than ``alpha``)."""
        return sum(1 for e in self._entries if e.state is _State.IN_FLIGHT)

    def next_queries(self, now: float) -> list[tuple[NodeInfo, LookupKind]]:
        """The queries to send now (with :attr:`kind`), after handling expired timers."""
        self.handle_timer(now)
        out: list[tuple[NodeInfo, LookupKind]] = []
        if self._done:
            return out
        free = self.alpha - self.outstanding
        for entry in self._top():
            if free <= 0 or self._queries >= self.max_queries:
                break
            if entry.state is not _State.CANDIDATE:
                continue
            entry.state = _State.IN_FLIGHT
            entry.sent_at = now
            self._queries += 1
            self._queried_ids.add(entry.info.node_id)
            self._queried_addresses.add(entry.info.address)
            out.append((entry.info, self.kind))
            free -= 1
        if out:
            self._due = None
        self._update_done()
        return out

    def add_candidates(self, nodes: Iterable[NodeInfo]) -> None:
        """Offer more nodes to query, learned elsewhere (the node core feeds a dual-stack
        lookup's IPv6 half with the ``nodes6`` its IPv4 half hears, and back). The usual
        rules apply (bounds, one per IP and per network, the filter); ignored once the lookup
        is done."""
        if self._done:
            return
        self._add_learned(nodes)

    def _add_learned(self, nodes: Iterable[NodeInfo]) -> None:
        """Add learned candidates, closest first (so one network's closest node is the one
        it keeps)."""
        nodes = list(nodes)
        for info in nodes:
            if not isinstance(info, NodeInfo):
                raise LocalProtocolError(f"a candidate must be a NodeInfo, got {info!r}")
        ordered = sorted(nodes, key=self._distance_to_target)
        for info in ordered:
            self._add(info)

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` next has something to do (None: no query in flight)."""
        if self._done:
            return None
        if self._due is not None:
            return self._due[0]
        deadline: float | None = None
        for entry in self._entries:
            if entry.state is _State.IN_FLIGHT:
                when = entry.sent_at + self.slow_after
            elif entry.state is _State.SLOW:
                when = entry.sent_at + self.timeout
            else:
                continue
            if deadline is None or when < deadline:
                deadline = when
        self._due = (deadline,)
        return deadline

    def handle_timer(self, now: float) -> None:
        """Mark queries slow after ``slow_after`` and failed after ``timeout``."""
        if self._done:
            return
        due = self.next_deadline()
        if due is None or now < due:
            # nothing is due: the scan below would change nothing
            self._update_done()
            return
        self._due = None
        for entry in self._entries:
            if entry.state is _State.IN_FLIGHT or entry.state is _State.SLOW:
                # Compare with the very sums next_deadline() returns: now - sent_at could round
                # below the limit and leave the timer firing forever.
                if now >= entry.sent_at + self.timeout:
                    entry.state = _State.FAILED
                elif now >= entry.sent_at + self.slow_after:
                    entry.state = _State.SLOW
        self._update_done()

    def _outstanding_entry(self, node: NodeInfo) -> _Entry | None:
        if self._done or not isinstance(node, NodeInfo):
            return None
        entry = self._by_id.get(node.node_id)
        if entry is None or entry.info.address != node.address:
            return None
        if entry.state is not _State.IN_FLIGHT and entry.state is not _State.SLOW:
            return None
        return entry

    def on_error(self, node: NodeInfo, now: float) -> bool:
        """``node`` answered with a KRPC error (or could not be reached): it failed.

        Returns False (and changes nothing) when no query to ``node`` is outstanding.
        """
        entry = self._outstanding_entry(node)
        if entry is None:
            return False
        entry.state = _State.FAILED
        self._due = None
        self.handle_timer(now)
        return True

    def on_response(self, node: NodeInfo, response: Response, now: float) -> bool:
        """``node`` answered our query with ``response``; learn from it.

        Returns False (and changes nothing) when no query to ``node`` is outstanding; a response
        whose ``id`` is not ``node``'s counts as that node's failure.
        """
        entry = self._outstanding_entry(node)
        if entry is None or not isinstance(response, Response):
            return False
        self._due = None
        if response.node_id != node.node_id:
            entry.state = _State.FAILED
            self.handle_timer(now)
            return True
        entry.state = _State.RESPONDED
        entry.token = response.token
        learned = [*(response.nodes or ()), *(response.nodes6 or ())]
        learned.sort(key=self._distance_to_target)
        for info in learned:
            self._add(info)
        if self.kind == "get_peers" and response.values:
            for peer in response.values:
                if len(self._peers) >= self.max_peers:
                    break
                self._peers.setdefault(peer, None)
        if self.kind == "get" and response.v is not None:
            self._consider_item(response)
        self.handle_timer(now)
        return True

    def _consider_item(self, response: Response) -> None:
        if response.v is None:
            return
        try:
            value = encode(response.v)
            item: Item
            if response.k is None:
                item = ImmutableItem(value)
            elif response.sig is not None and response.seq is not None:
                item = MutableItem(value, response.k, response.seq, response.sig, self._salt)
            else:
                return
        except (BencodeError, DHTError, TypeError, ValueError):
            return  # an invalid item proves nothing; the node still counts as responding
        if item.target != self.target.value:
            return
        best = self._item
        if best is None or (
            isinstance(item, MutableItem) and isinstance(best, MutableItem) and item.seq > best.seq
        ):
            self._item = item

    def writable(self, k: int | None = None) -> tuple[LookupNode, ...]:
        """The ``k`` (default: the lookup's) closest responders that gave a write token,
        closest first: where an announce_peer or put goes.

        Every responder is walked and the tokenless ones skipped, as libtorrent's
        ``find_data::done`` does, not only the ``k`` closest: a node whose store is full for
        the target withholds its token (so do read-only ones), and the ``k`` closest
        responders of a popular hash may all do so; the write then goes to the next closest
        that take it, not to nobody.

        Raises:
            LocalProtocolError: ``k`` is not a positive int.
        """
        limit = self.k if k is None else k
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise LocalProtocolError(f"k is a positive int, got {k!r}")
        out: list[LookupNode] = []
        for entry in self._entries:  # closest first
            if entry.state is _State.RESPONDED and entry.token is not None:
                out.append(LookupNode(entry.info, entry.token))
                if len(out) == limit:
                    break
        return tuple(out)

    def result(self) -> LookupResult:
        """The closest ``k`` responding nodes (with tokens), the peers and the best item."""
        nodes = tuple(
            LookupNode(entry.info, entry.token)
            for entry in self._entries
            if entry.state is _State.RESPONDED
        )[: self.k]
        return LookupResult(nodes, tuple(self._peers), self._item, self._queries)
