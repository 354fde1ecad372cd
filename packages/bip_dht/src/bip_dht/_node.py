"""DHTNode: a complete Mainline DHT node with no I/O (the datagram core of DESIGN section 3).

The node ties the pieces together: the routing tables (one per address family, BEP 32), the
serving side (:class:`~bip_dht.QueryHandler`: tokens, peer store, item store, rate limits), our
own outstanding queries (:class:`~bip_dht._transactions.TransactionTable`) and the operations
the caller starts (:mod:`bip_dht._node_ops`). The shell moves bytes::

    node = DHTNode(rng=random.SystemRandom(), now=clock(), families=(4, 6))
    node.receive_datagram(data, source, now)          # every datagram from the socket(s)
    for data, address in node.datagrams_to_send(now): # after every call: send these
        sock.sendto(data, address)
    node.handle_timer(now)                            # at node.next_deadline()
    node.unreachable(address, now)                    # ICMP unreachable (if the OS says)
    while (event := node.next_event()) is not None: ...

Operations (:meth:`DHTNode.ping`, :meth:`~DHTNode.bootstrap`, :meth:`~DHTNode.find_node`,
:meth:`~DHTNode.get_peers`, :meth:`~DHTNode.announce`, :meth:`~DHTNode.get`,
:meth:`~DHTNode.put`, :meth:`~DHTNode.sample_infohashes`) return an operation id at once;
progress (:class:`~bip_dht.PeersFound`, :class:`~bip_dht.SamplesFound`) and exactly one
Finished event with that id come out of :meth:`~DHTNode.next_event`. Time is the caller's
``now`` (seconds, monotonic); randomness (node id, transaction ids, token secrets, samples)
comes from the injected ``rng``: give the shell a ``random.SystemRandom()``.

Decisions, the way libtorrent's node / rpc_manager / dht_tracker make them:

- Each datagram is decoded once. Queries go to the QueryHandler (which offers the querier
  to the routing table as heard-from, not confirmed). Responses and errors must match an
  outstanding transaction: its id, the address we queried and (when we knew it) the node id;
  anything else is dropped and counted (``unmatched``, ``id_mismatch``). An answer that lacks
  what its query needs counts as the node's failure (``invalid_answers``). Nothing a peer
  sends makes the node raise.
- Every sender of a valid response goes to its family's table as confirmed
  (``responded=True``); a timeout is the node's failure in the table (``failed``) and in the
  lookup that sent it, and so, sooner, is a report that the node is unreachable
  (:meth:`DHTNode.unreachable`: an ICMP error the shell heard of). A KRPC error answer ends
  that query as failed for the lookup; to one of BEP 5's reads (``ping``, ``find_node``,
  ``get_peers``) it is also the node's failure in the table, as libtorrent's traversal takes
  an error for a timeout (a node that answers every query with an error serves no lookup).
  Not charged: an error to BEP 44's ``get`` or BEP 51's ``sample_infohashes``, which honest
  nodes that predate them refuse; error 204 (method unknown) to any query, which says what
  the node lacks, not that it is gone; a refused write (``announce_peer``, ``put``: a stale
  token, a CAS or ``seq`` conflict), which judges what we sent, not the node.
- Bootstrap works from addresses whose ids we do not know (a router's name, a config file):
  ``find_node`` of our own id to each, then a lookup of our id seeded with what they
  returned. The addresses are remembered (bounded), and while a table stays empty the node
  bootstraps from them again every ``bootstrap_retry_interval``.
- Maintenance, every ``maintenance_interval`` (and at once when a bootstrap ends): check the
  least recently seen questionable node of each bucket (BEP 5; as libtorrent's refresh, with
  a ping when its bucket is full, else a find_node for a random id in its bucket); fill
  buckets with room with a few single find_node queries (``refresh_queries_per_tick``) to
  candidates, admitted when they answer: the nodes that queried us and those that answers
  to such queries and to bootstraps listed, oldest first; and to the node closest to a
  random id in a sparse bucket (a probe, backed off while the bucket gains nothing). With no
  fill queries (0) the queriers are still asked, from what ``pings_per_tick`` leaves, since
  a querier joins a bucket only once it answers. Refresh buckets unchanged for 15 minutes
  with a find_node lookup of a random id inside them; expire stored peers and items.
- BEP 42: every response's ``ip`` is a vote for our external address; one vote per responder
  IP per round, and an address is believed once ``external_ip_votes`` responders agree and it
  leads clearly; after that it changes only as libtorrent's ip_voter lets it (50 votes or five
  minutes, :mod:`._node_voting`). With ``bep42_own_id``, a believed address that is not local
  and that our id does not match gives us a new id (:class:`~bip_dht.NodeIdChanged`), at most
  once per :data:`MIN_ID_CHANGE_INTERVAL`: the tables re-file their nodes around it, each
  keeping what we know of it (:meth:`RoutingTable.change_own_id`, as libtorrent's
  ``update_node_id``), the QueryHandler answers as the new id and a lookup of the new id
  refills the neighbourhood (when every lookup slot is taken, queued ahead of the caller's
  operations, taking none of their ``max_queued`` places). IPv4 decides when we run IPv4.
- BEP 43 read-only: ``ro=1`` on every query we send, and no query answered.
- IP filter (:class:`~bip_handshake.IPFilter`, given at creation or by
  :meth:`DHTNode.set_ip_filter`), as libtorrent applies its session's filter to DHT nodes: a
  blocked address is never queried (a query to it fails at once, unsent), never enters a
  routing table or a lookup, and its datagrams are dropped unread, so its queries go
  unanswered; all counted in ``filtered_ip``. A new filter drops the nodes it blocks from the
  tables. Peers in ``values`` are not filtered: they are peers, not nodes, and the client's
  handshaker applies the same filter to them.
- IPv4 and IPv6: one table per family, queries to an address go out over its family (the
  shell picks the socket by ``address.family``), node-returning queries carry BEP 32
  ``want`` for both families when we run both. Datagrams from a family we do not run are
  dropped. IPv4-mapped IPv6 sources count as IPv4.
- Bounds: ``max_outstanding`` transactions (lookups wait for room); ``max_lookups``
  lookup-based operations at once, ``max_queued`` more of the caller's waiting, beyond which
  an operation ends at once with its Finished event (``refused=True``, and counted in
  ``refused``); :meth:`DHTNode.add_node`'s pings wait (at most ``max_queued``, one per IP
  waiting or outstanding) while at most half the transaction slots (rounded up) are free,
  so they take at most half (rounded down), never the last; ``max_events`` queued
  events (progress events are dropped past it, Finished events never); ``max_outbox``
  datagrams waiting to be sent. The stores have their own caps (:class:`~bip_dht.DHTConfig`).

Layout: the knobs are :mod:`._node_config`, the events :mod:`._node_events`, the operations
:mod:`._node_ops`, our queries :mod:`._transactions`, the BEP 42 voting :mod:`._node_voting`,
the saved state :mod:`._node_state`, the statistics :mod:`._stats`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from bip_handshake import Family, IPFilter, NodeInfo, PeerAddress
from bip_metainfo import InfoHash

from ._errors import KRPCError, LocalProtocolError
from ._items import ImmutableItem, ItemStore, MutableItem
from ._krpc import (
    WANT_N4,
    WANT_N6,
    ErrorCode,
    ErrorReply,
    FindNode,
    KRPCQueryError,
    Ping,
    Query,
    Response,
    decode_message,
)
from ._krpc_quote import quoted_krpc
from ._lookup import Lookup, LookupKind
from ._node_config import DHTConfig
from ._node_events import (
    AnnounceFinished,
    DHTEvent,
    LookupFinished,
    NodeIdChanged,
    PingFinished,
    PutFinished,
)
from ._node_id import NodeId, is_bep42_exempt
from ._node_ops import (
    AnnounceOp,
    BootstrapOp,
    LookupOp,
    Operation,
    PingOp,
    PutOp,
)
from ._node_state import decode_state, encode_state
from ._node_voting import ExternalAddressVoter
from ._peer_store import PeerStore
from ._ratelimit import RateLimiter
from ._routing import Admission, NodeState, RoutingTable, bep42_filter
from ._serve import QueryHandler
from ._stats import DHTStatistics, count_capped
from ._tokens import TokenManager
from ._transactions import Transaction, TransactionTable

__all__ = ["MAX_COUNTED_ERROR_CODES", "MIN_ID_CHANGE_INTERVAL", "OTHER_ERROR_CODES", "DHTNode"]

MAX_COUNTED_ERROR_CODES = 32
"""Distinct error codes ``errors_received`` keeps; answers with any further code are counted
together under :data:`OTHER_ERROR_CODES`."""
OTHER_ERROR_CODES = 0
"""The ``errors_received`` key for codes beyond :data:`MAX_COUNTED_ERROR_CODES` (no KRPC error
code is 0)."""

_IP = IPv4Address | IPv6Address

# The queries whose KRPC error answer is the node's failure in the table, as a timeout is:
# BEP 5's reads, which any working node answers. Not BEP 44's get nor BEP 51's
# sample_infohashes: nodes that predate them (most of the network for BEP 51) refuse them, and
# a burst of such lookups charged every honest node in the table bad for good (libtorrent
# sends sample_infohashes as one query without a node id, never charging a table node). A
# refused write (announce_peer: a token that expired or another IP's, 203; put: a CAS
# mismatch 301, a seq too low 302, a bad signature 206, too big 205...) judges what we wrote,
# not the node, whose get_peers or get has just answered in the same operation.
_CHARGED_ERRORS = frozenset({b"ping", b"find_node", b"get_peers"})

# DEBUG only, and off the per-datagram path: a simulator runs thousands of these cores, so the
# core never logs above DEBUG (the trio shell logs the lifecycle) and checks the level once
# per timer rather than per query. What peers send in is counted (statistics()), not logged.
_log = logging.getLogger("bip_dht.node")
_DEBUG = logging.DEBUG

# The events that end an operation: each says whether the node refused to start it.
_FINISHED = (PingFinished, LookupFinished, AnnounceFinished, PutFinished)
_IPV4_ONLY: tuple[Family, ...] = (4,)

MIN_ID_CHANGE_INTERVAL = 300.0
"""Seconds at least between two BEP 42 node id changes. Each change re-files every node of
the tables around the new id (they keep their state, but the buckets' layout and the
neighbourhood are new), starts a lookup of the new id, and leaves the network's tables holding
us under the old id until they hear from us again, so even responders enough to sway the vote
quickly (50 votes decide at once, as libtorrent's ip_voter) cannot keep the node rebuilding; a
change held back happens at the first maintenance tick after the floor."""


def _target(value: object, name: str) -> NodeId:
    if isinstance(value, NodeId):
        return value
    if isinstance(value, bytes | bytearray) and len(value) == 20:
        return NodeId(bytes(value))
    raise LocalProtocolError(f"{name} is a NodeId or 20 bytes, got {value!r}")


def _info_hash(value: object) -> NodeId:
    if isinstance(value, InfoHash):
        # the v1 swarm when there is one (a hybrid torrent's v2 swarm is another call)
        return NodeId(value.swarm_ids()[0])
    return _target(value, "info_hash")


def _ip_filter(value: object) -> IPFilter | None:
    if value is not None and not isinstance(value, IPFilter):
        raise LocalProtocolError(f"ip_filter is an IPFilter or None, got {value!r}")
    return value


def _routable(host: _IP) -> bool:
    """Not an address no datagram of ours should go to, beyond what
    :attr:`PeerAddress.is_connectable` refuses: IPv4's limited broadcast and "this network"
    (0/8), which a lying node may list to make us send where we cannot."""
    if isinstance(host, IPv4Address):
        # on the integer: the routing tables ask this of every node they file
        value = int(host)
        return value >> 24 != 0 and value != _BROADCAST  # 0/8 holds 0.0.0.0 too
    return True


_BROADCAST = int(IPv4Address("255.255.255.255"))


def _address(value: object) -> PeerAddress:
    if not isinstance(value, PeerAddress):
        raise LocalProtocolError(f"an address is a PeerAddress, got {value!r}")
    return value.normalized()


class DHTNode:
    """A sans-IO Mainline DHT node; see the module docstring.

    Args:
        rng: all randomness (give ``random.SystemRandom()`` outside tests).
        now: the creation time.
        families: the address families the node runs (4, 6 or both).
        node_id: our id (default: the saved one, else random; BEP 42 may change it later).
        config: the knobs.
        state: bytes from :meth:`save_state`: our id (unless *node_id* is given), the known
            nodes (unconfirmed until they answer) and the bootstrap addresses.
        ip_filter: the addresses never to talk to (see the module docstring); replace it with
            :meth:`set_ip_filter`.

    Raises:
        LocalProtocolError: a bad argument.
        RoutingStateError: *state* is malformed.
    """

    def __init__(
        self,
        *,
        rng: random.Random,
        now: float,
        families: Collection[Family] = _IPV4_ONLY,
        node_id: NodeId | bytes | None = None,
        config: DHTConfig = DHTConfig(),  # noqa: B008 - frozen, shared safely
        state: bytes | None = None,
        ip_filter: IPFilter | None = None,
    ) -> None:
        if not isinstance(rng, random.Random):
            raise LocalProtocolError(f"rng is a random.Random, got {rng!r}")
        if not isinstance(config, DHTConfig):
            raise LocalProtocolError(f"config is a DHTConfig, got {config!r}")
        fams = tuple(sorted(set(families)))
        if not fams or any(f not in (4, 6) or isinstance(f, bool) for f in fams):
            raise LocalProtocolError(f"families is a non-empty collection of 4 and 6: {families!r}")
        self._rng = rng
        self._config = config
        self._ip_filter = _ip_filter(ip_filter)
        # queries the IP filter kept from being sent: _pump fails them at once
        self._blocked: list[Transaction] = []
        # our sockets' ports and bound hosts (set_local_address), and the external address
        # voter: before the tables, whose node filter (_is_us) reads them while loading a
        # saved state
        self._local_ports: dict[Family, int] = {}
        self._local_hosts: dict[Family, _IP] = {}
        self._voter = ExternalAddressVoter(threshold=config.external_ip_votes)
        # when BEP 42 last changed our id (None: never), for MIN_ID_CHANGE_INTERVAL
        self._last_id_change: float | None = None
        # the last time the node was told; statistics() and lookup seeding read node states
        # at it
        self._stats_now = now
        self._families: tuple[Family, ...] = fams
        saved_tables: dict[Family, bytes] = {}
        self._bootstrap_addresses: list[PeerAddress] = []
        saved_id: NodeId | None = None
        if state is not None:
            saved = decode_state(state, max_bootstrap=config.max_bootstrap_addresses)
            saved_id = saved.node_id
            saved_tables = {f: t for f, t in saved.tables.items() if f in fams}
            self._bootstrap_addresses = [
                a for a in saved.bootstrap if a.normalized().family in fams
            ]
        if node_id is not None:
            own = _target(node_id, "node_id")
        elif saved_id is not None:
            own = saved_id
        else:
            own = NodeId.random(rng)
        self._own = own
        self._tables: dict[Family, RoutingTable] = {}
        for family in fams:
            blob = saved_tables.get(family)
            if blob is not None:
                self._tables[family] = RoutingTable.load(
                    blob, own_id=own, now=now, **self._table_options()
                )
            else:
                self._tables[family] = RoutingTable(
                    own, family=family, now=now, **self._table_options()
                )
        self._tokens = TokenManager(rng, now, rotate_interval=config.token_rotate_interval)
        self._peer_store = PeerStore(
            max_peers_per_hash=config.max_peers_per_hash,
            max_hashes=config.max_hashes,
            max_peers=config.max_peers,
            peer_ttl=config.peer_ttl,
        )
        self._items = ItemStore(
            max_items=config.max_items, lifetime=config.item_lifetime, node_id=own.value
        )
        limiter = (
            RateLimiter(
                rate=config.query_rate,
                burst=config.query_burst,
                max_hosts=config.rate_limited_hosts,
            )
            if config.rate_limit
            else None
        )
        tables = list(self._tables.values())
        self._handler = QueryHandler(
            own,
            tables[0],
            self._tokens,
            self._peer_store,
            self._items,
            table6=tables[1] if len(tables) > 1 else None,
            read_only=config.read_only,
            rate_limit=limiter,
            rng=rng,
            version=config.version,
            sample_count=config.sample_count,
            sample_interval=config.sample_interval,
        )
        self._transactions = TransactionTable(
            rng, capacity=config.max_outstanding, timeout=config.query_timeout
        )
        self._next_op = 1
        self._running: dict[int, Operation] = {}
        self._queue: deque[Operation] = deque()
        self._events: deque[DHTEvent] = deque()
        self._outbox: list[tuple[bytes, PeerAddress]] = []
        # add_node's addresses waiting to be pinged, and their keys (_ping_key: the IP, or
        # the address when the table keeps several nodes per IP) with the add_node pings
        # outstanding: one per key at a time, as a peer's PORT messages repeat and one host
        # may name many ports
        self._pending_pings: deque[PeerAddress] = deque()
        self._pending_ping_set: set[object] = set()
        self._pinging: dict[object, Transaction] = {}
        # operations to ask for queries at the next pump (see _pump), and whether one went
        # short of transaction slots
        self._dirty: set[int] = set()
        self._starved = False
        self._next_tick = now + config.maintenance_interval
        self._last_bootstrap: float | None = None
        # every bootstrap under way or queued (the caller's, the core's own re-bootstrap and
        # an id change's refill): `bootstrapping` must hold while any runs, not the last only
        self._bootstrap_ops: set[int] = set()
        self._counts: Counter[str] = Counter()
        self._queries_sent: Counter[bytes] = Counter()
        self._errors_received: Counter[int] = Counter()

    # -- construction helpers ---------------------------------------------------------------

    def _table_options(self) -> dict[str, Any]:
        config = self._config
        return {
            "rng": self._rng,
            "k": config.k,
            "max_failures": config.max_failures,
            "restrict_ips": config.restrict_routing_ips,
            "restrict_networks": config.restrict_routing_networks,
            # always given: the IP filter it reads may be set later
            "node_filter": self._admissible,
        }

    def _admissible(self, node: NodeInfo) -> bool:
        """The tables' node filter (and the lookups'): no address we cannot or should not
        query (a broadcast one, our own), BEP 42 when enforced, and the IP filter."""
        address = node.address.normalized()  # an IPv4 address in IPv6 form is judged as IPv4
        if not _routable(address.host) or self._is_us(address):
            return False
        if self._config.enforce_node_id and not bep42_filter(node):
            return False
        return not self._filtered(address)

    def _filtered(self, address: PeerAddress) -> bool:
        ip_filter = self._ip_filter
        return ip_filter is not None and ip_filter.blocks(address.host)

    # -- the IP filter ------------------------------------------------------------------------

    @property
    def ip_filter(self) -> IPFilter | None:
        """The IP filter in force (None: none)."""
        return self._ip_filter

    def set_ip_filter(self, ip_filter: IPFilter | None, now: float) -> int:
        """Replace the IP filter (None: no filter), as libtorrent's ``set_ip_filter`` reaches
        its DHT: from now on blocked addresses are never queried and their datagrams are
        dropped. Nodes it blocks leave the routing tables at once (a replacement takes each
        freed slot); returns how many left. Queries already in flight to them are not
        recalled: their answers are dropped, so they time out.

        Raises:
            LocalProtocolError: *ip_filter* is neither an IPFilter nor None.
        """
        self._ip_filter = _ip_filter(ip_filter)
        self._stats_now = now
        removed = 0
        if self._ip_filter is not None:
            for table in self._tables.values():
                blocked = [
                    entry.node.node_id
                    for entry in table.entries(now)
                    if self._filtered(entry.node.address)
                ]
                for node_id in blocked:
                    removed += table.remove(node_id, now)
        _log.debug("DHT IP filter set: %r; %d nodes left the routing table", ip_filter, removed)
        return removed

    # -- reading ----------------------------------------------------------------------------

    @property
    def node_id(self) -> NodeId:
        """Our node id now (BEP 42 may change it: :class:`~bip_dht.NodeIdChanged`)."""
        return self._own

    @property
    def own_id(self) -> NodeId:
        """Same as :attr:`node_id` (the operations' view)."""
        return self._own

    @property
    def config(self) -> DHTConfig:
        """The configuration the node runs with."""
        return self._config

    @property
    def families(self) -> tuple[Family, ...]:
        """The address families the node runs."""
        return self._families

    def table(self, family: Family = 4) -> RoutingTable:
        """The routing table of *family* (read it; let the node change it).

        Raises:
            LocalProtocolError: the node does not run *family*.
        """
        table = self._tables.get(family)
        if table is None:
            raise LocalProtocolError(f"the node does not run IPv{family}")
        return table

    @property
    def bootstrap_addresses(self) -> tuple[PeerAddress, ...]:
        """The bootstrap addresses remembered (given to :meth:`bootstrap` or saved)."""
        return tuple(self._bootstrap_addresses)

    def needs_bootstrap(self, now: float) -> bool:
        """Whether a routing table (of any family we run) holds no node we could still query
        at *now*: the test by which the node bootstraps again by itself (every
        ``bootstrap_retry_interval`` while it holds). A table's size says nothing here: bad
        nodes stay in their buckets, waiting for replacements (after a network outage, for
        one). Costs a walk of each table."""
        return any(not table.closest(self._own, now, 1) for table in self._tables.values())

    @property
    def bootstrapping(self) -> bool:
        """Whether any bootstrap of the node is under way or queued: one started by
        :meth:`bootstrap` (until it ends or is cancelled) or by the node itself (its
        re-bootstrap, and the refill after an id change; these have no event)."""
        return bool(self._bootstrap_ops)

    @property
    def bootstrap_ops(self) -> frozenset[int]:
        """The operation ids of the bootstraps under way or queued (see
        :attr:`bootstrapping`), a snapshot: whoever waits for those that run now checks
        which of them are still in it."""
        return frozenset(self._bootstrap_ops)

    @property
    def external_addresses(self) -> dict[Family, PeerAddress]:
        """Our external address per family, as the responders' votes decided (BEP 42)."""
        return self._voter.decided

    def warm_table(self, nodes: Iterable[NodeInfo], now: float) -> int:
        """Offer *nodes* to the routing tables as nodes that have just answered us; return how
        many were taken into a bucket or a replacement cache.

        For simulations and tests that start from a network already formed (and for a caller
        that confirmed nodes by other means); nodes of a family we do not run are skipped.
        """
        taken = 0
        for node in nodes:
            if not isinstance(node, NodeInfo):
                raise LocalProtocolError(f"a node is a NodeInfo, got {node!r}")
            address = node.address.normalized()
            table = self._tables.get(address.family)
            if table is None:
                continue
            info = NodeInfo(node.node_id, address)
            if table.heard_from(info, now, responded=True) is not Admission.REJECTED:
                taken += 1
        return taken

    def statistics(self) -> DHTStatistics:
        """A snapshot of the node's counters and sizes."""
        serve = self._handler.statistics()
        counts = self._counts
        now_tables = {f: list(t.entries(self._stats_now)) for f, t in self._tables.items()}
        return DHTStatistics(
            node_id=self._own,
            nodes={f: sum(1 for e in es if e.in_bucket) for f, es in now_tables.items()},
            good_nodes={
                f: sum(1 for e in es if e.in_bucket and e.state is NodeState.GOOD)
                for f, es in now_tables.items()
            },
            replacements={f: sum(1 for e in es if not e.in_bucket) for f, es in now_tables.items()},
            buckets={f: t.bucket_count for f, t in self._tables.items()},
            external_addresses={int(f): a for f, a in self._voter.decided.items()},
            datagrams_received=counts["datagrams_received"],
            datagrams_sent=counts["datagrams_sent"],
            bytes_received=counts["bytes_received"],
            bytes_sent=counts["bytes_sent"],
            queries_sent=dict(self._queries_sent),
            responses_received=counts["responses"],
            errors_received=dict(self._errors_received),
            timeouts=counts["timeouts"],
            unreachable=counts["unreachable"],
            unmatched=counts["unmatched"],
            id_mismatch=counts["id_mismatch"],
            invalid_answers=counts["invalid_answers"],
            malformed=counts["malformed"] + serve.dropped_malformed,
            wrong_family=counts["wrong_family"],
            filtered_ip=counts["filtered_ip"],
            queries_received=dict(serve.queries),
            errors_sent=dict(serve.errors_sent),
            rate_limited=serve.rate_limited,
            read_only_ignored=serve.read_only_ignored,
            oversized_dropped=serve.oversized_dropped,
            outstanding=len(self._transactions),
            lookups=sum(1 for op in self._running.values() if op.uses_lookup_slot),
            queued=len(self._queue),
            refused=counts["refused"],
            events_dropped=counts["events_dropped"],
            outbox_dropped=counts["outbox_dropped"],
            info_hashes=self._peer_store.hash_count,
            peers=len(self._peer_store),
            items=len(self._items),
        )

    # -- the datagram core -------------------------------------------------------------------

    def receive_datagram(self, data: bytes, source: PeerAddress, now: float) -> None:
        """Take one datagram from *source*. Never raises on what a peer sends."""
        source = _address(source)
        self._stats_now = now
        self._counts["datagrams_received"] += 1
        self._counts["bytes_received"] += len(data)
        if source.family not in self._tables:
            self._counts["wrong_family"] += 1
            return
        if self._filtered(source):
            self._counts["filtered_ip"] += 1
            return
        try:
            message = decode_message(data, self._config.limits, source_family=source.family)
        except KRPCQueryError as error:
            self._reply(self._handler.handle_query_error(error, source, now), source)
            return
        except KRPCError:
            self._counts["malformed"] += 1
            return
        if isinstance(message, Response | ErrorReply):
            self._on_answer(message, source, now)
        else:
            self._reply(self._handler.handle_message(message, source, now), source)
        self._pump(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, PeerAddress]]:
        """The datagrams to send now, each with its destination (send over its family)."""
        out, self._outbox = self._outbox, []
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must next run (never None: maintenance always ticks)."""
        if self._blocked or self._dirty:
            # queries the IP filter stopped, or operations they failed that the last pump's
            # bounded rounds left: due now
            return self._stats_now
        deadline = self._next_tick
        tx = self._transactions.next_deadline()
        if tx is not None and tx < deadline:
            deadline = tx
        for op in self._running.values():
            when = op.next_deadline()
            if when is not None and when < deadline:
                deadline = when
        return deadline

    def handle_timer(self, now: float) -> None:
        """Run what is due: query timeouts, lookups' slow timers, maintenance."""
        self._stats_now = now
        debug = _log.isEnabledFor(_DEBUG)
        for tx in self._transactions.expire(now):
            self._counts["timeouts"] += 1
            if debug:
                _log.debug(
                    "DHT %s query to %s timed out", tx.query.method.decode("ascii"), tx.address
                )
            self._query_failed(tx, now)
        # only the operations whose own timer is due (asking all of them would make every
        # timer cost as much as the number of operations running)
        for op in list(self._running.values()):
            when = op.next_deadline()
            if when is not None and when <= now:
                op.handle_timer(now)
                self._dirty.add(op.id)
        if now >= self._next_tick:
            self._next_tick = now + self._config.maintenance_interval
            self._maintain(now)
        self._pump(now)

    def unreachable(
        self,
        address: PeerAddress,
        now: float,
        transaction_id: bytes | None = None,
        *,
        quoted: bytes | None = None,
    ) -> bool:
        """The system reports that a datagram to *address* found nobody (ICMP port, host or
        network unreachable: the trio shell reads these on Linux, as libtorrent's
        ``incoming_error``): the query in flight to *address* fails at once, as its timeout
        would (the node's failure in the table, the lookup moves on), counted in
        ``unreachable`` rather than ``timeouts``.

        *quoted* is the head of our datagram the ICMP message quoted (the shell reads it):
        a datagram of another protocol sharing the socket (not a dictionary: uTP's) or one of
        our replies fails nothing; a query's ``t``, when the quote reaches it, is taken as
        *transaction_id*.

        *transaction_id* is the failed query's ``t`` when the ICMP message quoted enough of
        it: then that very query fails, and none
        if it is not in flight to *address* (a stale report, or a forged one: an off-path
        forger who cannot see our ids cannot fail our queries, nor make the table drop a good
        node). Without it, which of several queries to *address* failed cannot be told: the
        oldest (the reports come back in the order the datagrams left), as libtorrent.

        One report fails at most one query (each query is one datagram). Returns whether one
        failed: False, and nothing changes, when none is in flight to *address* (the report
        was about one of our replies, another protocol's datagram, or a query already over).

        Raises:
            LocalProtocolError: *address* is not a PeerAddress, or *transaction_id* is neither
                bytes nor None.
        """
        if transaction_id is not None and not isinstance(transaction_id, bytes):
            raise LocalProtocolError(
                f"a transaction id is bytes or None, got {type(transaction_id).__name__}"
            )
        address = _address(address)
        if quoted:
            if quoted[:1] != b"d":
                return False  # another protocol's datagram (uTP): no node's failure
            head = quoted_krpc(quoted)
            if head.reply:
                return False  # one of our replies: its own query, if any, gets its report
            transaction_id = head.transaction_id
        self._stats_now = now
        transactions = self._transactions
        if transaction_id is None:
            tx = transactions.close_oldest_to(address)
        else:
            tx = transactions.match(transaction_id, address)
        if tx is None:
            return False
        self._counts["unreachable"] += 1
        if _log.isEnabledFor(_DEBUG):
            _log.debug(
                "DHT %s query to %s failed: the system reports the node unreachable",
                tx.query.method.decode("ascii"),
                tx.address,
            )
        self._query_failed(tx, now)
        self._pump(now)
        return True

    def _query_failed(self, tx: Transaction, now: float) -> None:
        """*tx* got no answer and never will (timed out, or unreachable): the node's failure
        in its table, and in the operation that sent it."""
        if tx.node_id is not None:
            table = self._tables.get(tx.address.family)
            if table is not None:
                table.failed(NodeInfo(tx.node_id, tx.address), now)
        op = self._running.get(tx.operation)
        if op is not None:
            op.on_failure(tx, None, now)
            self._dirty.add(op.id)

    def next_event(self) -> DHTEvent | None:
        """The next event, or None when there is none."""
        return self._events.popleft() if self._events else None

    # -- operations -------------------------------------------------------------------------

    def ping(self, address: PeerAddress, now: float) -> int:
        """Ping *address*; ends with :class:`~bip_dht.PingFinished` (the node, or None)."""
        address = self._sendable(address)
        return self._start(PingOp(self, self._op_id(), address), now)

    def add_node(self, address: PeerAddress, now: float) -> None:
        """Ping *address* in the background: if it answers, it joins the routing table (as
        libtorrent's add_node). No event; dropped when the ping queue is full or the IP
        filter blocks *address*, and when there is nothing to learn: *address* already waits
        for its ping, a query to it awaits an answer, or it is a good node of the table.

        With ``restrict_routing_ips`` (the default: the table keeps one node per IP anyway)
        one IP has one such ping waiting or outstanding at a time, whatever ports it names;
        without, one address.

        These pings take at most half (rounded down) of the ``max_outstanding`` transaction
        slots, never the last one (they wait while at most half, rounded up, are free; with
        one slot, add_node drops every address), so lookups always keep slots: the
        addresses come from peers (BEP 5's PORT message), and a silent one holds its slot
        ``query_timeout``.
        """
        address = self._sendable(address)
        if self._filtered(address):
            self._counts["filtered_ip"] += 1
        elif (
            self._config.max_outstanding > 1
            and not self._ping_waits(address)
            and not self._transactions.outstanding_to(address)
            and len(self._pending_pings) < max(self._config.max_queued, 1)
            and self._tables[address.family].state_at(address, now) is not NodeState.GOOD
        ):
            self._pending_pings.append(address)
            self._pending_ping_set.add(self._ping_key(address))
        self._pump(now)

    def _ping_key(self, address: PeerAddress) -> object:
        """What add_node pings one at a time: the IP when the table keeps one node per IP,
        else the address."""
        address = address.normalized()
        return address.host if self._config.restrict_routing_ips else address

    def _ping_waits(self, address: PeerAddress) -> bool:
        """Whether an add_node ping for *address*'s key waits or awaits its answer."""
        key = self._ping_key(address)
        if key in self._pending_ping_set:
            return True
        tx = self._pinging.get(key)
        if tx is None:
            return False
        # (a query to its address outstanding: this ping, or one that keeps the address busy
        # anyway; the transaction table closes answered and timed-out ones)
        if self._transactions.outstanding_to(tx.address):
            return True
        del self._pinging[key]  # answered or timed out
        return False

    def bootstrap(self, addresses: Iterable[PeerAddress], now: float) -> int:
        """Join the DHT through *addresses* (ids unknown) and the nodes already known.

        The addresses are remembered (up to ``max_bootstrap_addresses``) for re-bootstraps
        and :meth:`save_state`. Addresses of a family the node does not run, or that the IP
        filter blocks, are skipped.
        Ends with :class:`~bip_dht.LookupFinished` of kind ``bootstrap``.
        """
        chosen = self.remember_bootstrap_addresses(addresses)
        self._last_bootstrap = now
        op = BootstrapOp(self, self._op_id(), chosen, slow_after=self._config.slow_after)
        return self._start(op, now)

    def remember_bootstrap_addresses(self, addresses: Iterable[PeerAddress]) -> list[PeerAddress]:
        """Remember *addresses* for re-bootstraps and :meth:`save_state` as :meth:`bootstrap`
        does (the same filter, the most recent ``max_bootstrap_addresses`` kept), but
        without bootstrapping: a shell that learns addresses while another bootstrap runs,
        beside which it starts none, keeps them for the next (the node's own re-bootstrap
        included). Returns those taken (the first ``max_bootstrap_addresses`` of *addresses*
        the node could query, each once).

        Raises:
            LocalProtocolError: an entry is not an address.
        """
        chosen: list[PeerAddress] = []
        for given in addresses:
            address = _address(given)
            if (
                address.family in self._tables
                and address.is_connectable
                and address not in chosen
                and not self._filtered(address)
            ):
                chosen.append(address)
            if len(chosen) >= self._config.max_bootstrap_addresses:
                break
        for address in chosen:
            if address not in self._bootstrap_addresses:
                self._bootstrap_addresses.append(address)
        del self._bootstrap_addresses[: -self._config.max_bootstrap_addresses]
        return chosen

    def find_node(self, target: NodeId | bytes, now: float) -> int:
        """Look up the nodes closest to *target*; ends with LookupFinished (``find_node``)."""
        return self._start(
            LookupOp(self, self._op_id(), "find_node", _target(target, "target")), now
        )

    def get_peers(
        self,
        info_hash: bytes | InfoHash,
        now: float,
        *,
        scrape: bool = False,
        noseed: bool = False,
    ) -> int:
        """Look up peers of *info_hash* (PeersFound as they come, then LookupFinished).

        *scrape* asks for BEP 33 bloom filters (the Finished event carries the estimates);
        *noseed* asks to leave seeds out. An :class:`~bip_metainfo.InfoHash` means its first
        swarm id (v1 for a hybrid torrent).
        """
        op = LookupOp(
            self,
            self._op_id(),
            "get_peers",
            _info_hash(info_hash),
            scrape=bool(scrape),
            noseed=bool(noseed),
        )
        return self._start(op, now)

    def announce(
        self,
        info_hash: bytes | InfoHash,
        now: float,
        *,
        port: int | None = None,
        seed: bool = False,
    ) -> int:
        """get_peers, then announce_peer to the ``k`` closest responders (with a token).

        *port* None announces the port our datagrams come from (``implied_port``), right
        for a client whose TCP (uTP) port is its DHT port. Ends with AnnounceFinished;
        peers found on the way come as PeersFound.
        """
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 0xFFFF
        ):
            raise LocalProtocolError(f"port is None or in 1..65535, got {port!r}")
        op = AnnounceOp(
            self,
            self._op_id(),
            _info_hash(info_hash),
            port=port,
            seed=bool(seed),
            k=self._config.k,
        )
        return self._start(op, now)

    def get(self, target: bytes, now: float, *, seq: int | None = None, salt: bytes = b"") -> int:
        """BEP 44 get: the item stored under *target* (LookupFinished ``get``; its
        ``result.item`` is the best verified item, highest ``seq`` for mutable ones).

        *seq* asks nodes not to send a mutable value we already have at that version; *salt*
        is needed to verify a salted mutable item's signature.
        """
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
            raise LocalProtocolError(f"seq is None or a non-negative int, got {seq!r}")
        if not isinstance(salt, bytes) or len(salt) > 64:
            raise LocalProtocolError("salt is at most 64 bytes")
        op = LookupOp(self, self._op_id(), "get", _target(target, "target"), seq=seq, salt=salt)
        return self._start(op, now)

    def put(self, item: ImmutableItem | MutableItem, now: float, *, cas: int | None = None) -> int:
        """BEP 44 put: get lookup on the item's target, then put to the ``k`` closest
        responders with a token (*cas*: compare-and-swap on the stored ``seq``, mutable
        items only). Ends with PutFinished."""
        if not isinstance(item, ImmutableItem | MutableItem):
            raise LocalProtocolError(f"item is an ImmutableItem or MutableItem, got {item!r}")
        if cas is not None and (
            not isinstance(item, MutableItem) or isinstance(cas, bool) or not isinstance(cas, int)
        ):
            raise LocalProtocolError("cas is an int, for mutable items only")
        return self._start(PutOp(self, self._op_id(), item, cas=cas, k=self._config.k), now)

    def sample_infohashes(self, target: NodeId | bytes, now: float) -> int:
        """BEP 51: a lookup towards *target* asking each node for a sample of the info-hashes
        it stores (SamplesFound per answer, then LookupFinished ``sample_infohashes``)."""
        op = LookupOp(self, self._op_id(), "sample_infohashes", _target(target, "target"))
        return self._start(op, now)

    def cancel(self, operation: int) -> None:
        """Stop *operation* now; its Finished event reports what it found so far. Unknown or
        finished operations are ignored. Answers to its queries still feed the table."""
        op = self._running.pop(operation, None)
        if op is None:
            for queued in self._queue:
                if queued.id == operation:
                    self._queue.remove(queued)
                    op = queued
                    break
        if op is None:
            return
        op.cancel()
        self._finish(op)
        self._pump(self._stats_now)  # a freed lookup slot starts a queued operation

    def save_state(self, now: float) -> bytes:
        """Bencoded state to give the next :class:`DHTNode` (``state=``): our id, the nodes
        worth keeping and the bootstrap addresses."""
        tables = [table.save(now) for table in self._tables.values()]
        return encode_state(self._own, tables, self._bootstrap_addresses)

    # -- operation plumbing ------------------------------------------------------------------

    def _op_id(self) -> int:
        op_id = self._next_op
        self._next_op += 1
        return op_id

    def _sendable(self, address: PeerAddress) -> PeerAddress:
        address = _address(address)
        if address.family not in self._tables:
            raise LocalProtocolError(f"the node does not run IPv{address.family}: {address}")
        if not address.is_connectable:
            raise LocalProtocolError(f"{address} cannot be sent to")
        return address

    def _lookups_running(self) -> int:
        return sum(1 for op in self._running.values() if op.uses_lookup_slot)

    def _refill_waits(self) -> bool:
        """Whether an id change's refill waits for a lookup slot: at the queue's head, where
        _change_id puts it and nothing else goes; one at most (_change_id)."""
        return bool(self._queue) and self._queue[0].internal

    def _queued_for_callers(self) -> int:
        """How many of the caller's operations wait for a lookup slot: ``max_queued`` bounds
        these, and a waiting refill takes none of their places."""
        return len(self._queue) - int(self._refill_waits())

    def _start(self, op: Operation, now: float) -> int:
        self._stats_now = now
        if isinstance(op, BootstrapOp):
            self._bootstrap_ops.add(op.id)  # queued counts too; refused, _finish drops it
        config = self._config
        others = len(self._running) - self._lookups_running()
        if not op.uses_lookup_slot and others >= config.max_outstanding + config.max_queued:
            # pings wait for transaction slots; this many waiting is a caller gone wild
            self._counts["refused"] += 1
            _log.debug("DHT operation %d refused: %d pings already wait", op.id, others)
            op.cancel()
            self._finish(op, refused=True)
        elif not op.uses_lookup_slot or self._lookups_running() < config.max_lookups:
            self._running[op.id] = op
            self._dirty.add(op.id)
            op.start(now)
        elif self._queued_for_callers() < config.max_queued:
            self._queue.append(op)
        else:
            self._counts["refused"] += 1
            _log.debug(
                "DHT operation %d refused: %d lookups run and %d wait",
                op.id,
                self._lookups_running(),
                len(self._queue),
            )
            op.cancel()
            self._finish(op, refused=True)
        self._pump(now)
        return op.id

    def _finish(self, op: Operation, *, refused: bool = False) -> None:
        if isinstance(op, BootstrapOp):
            self._bootstrap_ops.discard(op.id)
            # just joined: refresh the buckets at once (libtorrent's bootstrap does too)
            self._next_tick = min(self._next_tick, self._stats_now)
        if not op.internal:
            event = op.finished()
            if refused:
                # a refused operation never ran: its caller may try again soon
                assert isinstance(event, _FINISHED)  # every operation's ends with one
                event = dataclasses.replace(event, refused=True)
            self._events.append(event)

    def _pump(self, now: float) -> None:
        """Let the operations that may want to send (the *dirty* ones: started, answered,
        timed, or waiting for transaction slots that have since freed) send within the free
        slots; end those that are done and start queued ones. Asking only those keeps the
        cost of a datagram independent of how many lookups run."""
        if not (
            self._dirty or self._pending_pings or self._queue or self._starved or self._blocked
        ):
            return  # the common case of a query answered: nothing can want to send
        # bounded: each round either ends an operation, starts one, or sends nothing new
        for _ in range(1 + len(self._running) + len(self._queue)):
            self._flush_pings(now)
            if self._starved and self._transactions.free > 0:
                self._dirty.update(self._running)
                self._starved = False
            dirty = sorted(op_id for op_id in self._dirty if op_id in self._running)
            self._dirty.clear()
            ended: list[Operation] = []
            for op_id in dirty:
                op = self._running[op_id]
                if not op.done:
                    for send in op.sends(now, self._transactions.free):
                        tx = self._open(send.address, send.node_id, op.id, send.build, now)
                        op.sent(tx)
                    if self._transactions.free < self._config.alpha:
                        self._starved = True  # it may want more once slots free up
                if op.done:
                    ended.append(op)
            # queries the IP filter stopped fail now: their operations move on next round
            blocked = self._fail_blocked(now)
            for op in ended:
                del self._running[op.id]
                self._finish(op)
            started = False
            while self._queue and self._lookups_running() < self._config.max_lookups:
                op = self._queue.popleft()
                self._running[op.id] = op
                self._dirty.add(op.id)
                op.start(now)
                started = True
            if not ended and not started and not blocked:
                break

    def _fail_blocked(self, now: float) -> bool:
        """Fail the queries :meth:`_open` did not send (the IP filter blocks their address),
        as an unreachable report would; whether there were any."""
        if not self._blocked:
            return False
        blocked, self._blocked = self._blocked, []
        for tx in blocked:
            if self._transactions.match(tx.tid, tx.address) is not None:
                self._query_failed(tx, now)
        return True

    def _upkeep_query(self, node: NodeInfo, target: NodeId | None, now: float) -> None:
        """A maintenance query to *node*: find_node *target*, or a ping when None. It belongs
        to no operation (0): the answer goes to the table, its nodes to the candidates."""
        if target is None:
            build = self._ping_builder()
        else:
            common, want, value = self.common(), self.want(), target.value
            build = lambda tid: FindNode(  # noqa: E731 - a builder, as the operations' are
                transaction_id=tid, target=value, want=want, **common
            )
        self._open(node.address, node.node_id, 0, build, now)

    def _flush_pings(self, now: float) -> None:
        # Only while at least half the slots (rounded up) stay free: add_node's pings
        # (addresses peers name, which may never answer) must not take the slots lookups
        # need, and never the last. libtorrent's rpc_manager has no shared cap, so its pings
        # cannot starve its lookups either.
        reserve = self._config.max_outstanding - self._config.max_outstanding // 2
        while self._pending_pings and self._transactions.free > reserve:
            address = self._pending_pings.popleft()
            key = self._ping_key(address)
            self._pending_ping_set.discard(key)
            self._pinging[key] = self._open(address, None, 0, self._ping_builder(), now)
        if len(self._pinging) > self._config.max_outstanding:
            # the ones answered or timed out, which _ping_waits drops only when asked: at
            # most max_outstanding // 2 are outstanding, so this runs rarely
            busy = self._transactions.outstanding_to
            done = [key for key, tx in self._pinging.items() if not busy(tx.address)]
            for key in done:
                del self._pinging[key]

    def _ping_builder(self) -> Callable[[bytes], Query]:
        common = self.common()
        return lambda tid: Ping(transaction_id=tid, **common)

    def _open(
        self,
        address: PeerAddress,
        node_id: bytes | None,
        op_id: int,
        build: Callable[[bytes], Query],
        now: float,
    ) -> Transaction:
        tx = self._transactions.open(build, address, node_id, op_id, now)
        if self._filtered(tx.address):
            # the one gate every query passes: never sent, failed at the next pump
            self._counts["filtered_ip"] += 1
            self._blocked.append(tx)
            return tx
        query = tx.query
        self._queries_sent[query.method] += 1
        self._send(query.encode(), tx.address)
        return tx

    def _send(self, data: bytes, address: PeerAddress) -> None:
        if len(self._outbox) >= self._config.max_outbox:
            self._counts["outbox_dropped"] += 1
            return
        self._counts["datagrams_sent"] += 1
        self._counts["bytes_sent"] += len(data)
        self._outbox.append((data, address))

    def _reply(self, data: bytes | None, source: PeerAddress) -> None:
        if data is not None:
            self._send(data, source)

    # -- Context (what the operations use) ---------------------------------------------------

    def common(self) -> dict[str, Any]:
        """Fields of every query we send."""
        return {
            "node_id": self._own.value,
            "version": self._config.version,
            "read_only": self._config.read_only,
        }

    def want(self) -> tuple[bytes, ...] | None:
        """BEP 32 ``want``: both families when we run both, else the socket's default."""
        return (WANT_N4, WANT_N6) if len(self._tables) > 1 else None

    def _search_filter(self, node: NodeInfo) -> bool:
        address = node.address
        if address.family not in self._tables or address.normalized() != address:
            return False
        if not address.is_connectable:
            return False
        return self._admissible(node)

    def _is_us(self, address: PeerAddress) -> bool:
        """Whether *address* is our own socket's (as bound, or as the voters see it)."""
        family = address.family
        if address.port != self._local_ports.get(family):
            return False
        host = address.host
        bound = self._local_hosts.get(family)
        if host == bound or (bound is not None and bound.is_unspecified and host.is_loopback):
            return True
        external = self._voter.decided.get(family)
        return external is not None and external.host == host

    def new_lookup(
        self,
        target: NodeId,
        kind: LookupKind,
        seeds: list[NodeInfo],
        salt: bytes,
        family: Family,
        *,
        learned: Sequence[NodeInfo] = (),
    ) -> Lookup:
        """A lookup of *family* with our settings, seeded with *seeds* and the family's table's
        closest nodes (twice ``k``, so dead ones are replaced at once), with *learned* as
        learned candidates (one per /24 or /64, as the nodes answers name)."""
        config = self._config
        found = list(seeds)
        table = self._tables.get(family)
        if table is not None:
            found.extend(table.closest(target, self._stats_now, 2 * config.k))

        def accept(node: NodeInfo) -> bool:
            return node.address.family == family and self._search_filter(node)

        return Lookup(
            target,
            kind,
            found,
            alpha=config.alpha,
            k=config.k,
            slow_after=config.slow_after,
            timeout=config.query_timeout,
            max_peers=config.max_lookup_peers,
            one_per_ip=config.restrict_search_ips,
            own_id=self._own,
            salt=salt,
            node_filter=accept,
            learned=learned,
        )

    def local_port(self, family: Family) -> int:
        """Our UDP port for *family* as :meth:`set_local_port` gave it (0: unknown)."""
        return self._local_ports.get(family, 0)

    def set_local_port(self, family: Family, port: int) -> None:
        """Tell the node the UDP port its *family* socket is bound to. An announce with
        ``implied_port`` then carries it in ``port`` too, for nodes that ignore
        ``implied_port`` (libtorrent sends both the same way)."""
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
            raise LocalProtocolError(f"port is in 0..65535, got {port!r}")
        self._local_ports[family] = port

    def set_local_address(self, address: PeerAddress) -> None:
        """Tell the node the address its socket of that family is bound to (the port as
        :meth:`set_local_port`). Lookups then never query that address: a node that lists
        it (with some made-up id) would have us query ourselves. An unspecified host
        (``0.0.0.0``, ``::``) means every loopback address at that port is ours.

        Raises:
            LocalProtocolError: *address* is not a PeerAddress.
        """
        address = _address(address)
        self.set_local_port(address.family, address.port)
        self._local_hosts[address.family] = address.host

    def emit(self, event: DHTEvent) -> None:
        """Queue a progress event; dropped (and counted) when the queue is full."""
        if len(self._events) >= self._config.max_events:
            self._counts["events_dropped"] += 1
            return
        self._events.append(event)

    # -- answers to our queries --------------------------------------------------------------

    def _on_answer(self, message: Response | ErrorReply, source: PeerAddress, now: float) -> None:
        tx = self._transactions.match(message.transaction_id, source)
        if tx is None:
            self._counts["unmatched"] += 1
            return
        op = self._running.get(tx.operation)
        if op is not None:
            self._dirty.add(op.id)
        table = self._tables[tx.address.family]
        if isinstance(message, ErrorReply):
            code = int(message.code)
            count_capped(self._errors_received, code, MAX_COUNTED_ERROR_CODES, OTHER_ERROR_CODES)
            if _log.isEnabledFor(_DEBUG):
                _log.debug(
                    "DHT node %s answered our %s with error %d: %r",
                    tx.address,
                    tx.query.method.decode("ascii"),
                    int(message.code),
                    message.message[:80],
                )
            if (
                tx.node_id is not None
                and tx.query.method in _CHARGED_ERRORS
                and code != ErrorCode.METHOD_UNKNOWN
            ):
                # as libtorrent (an error is the query's timeout): a node that answers every
                # read with an error serves no lookup, yet left uncharged it stayed
                # questionable, took its bucket's ping every tick and was handed out. 204 is
                # an answer about the query, from a node that is there.
                table.failed(NodeInfo(tx.node_id, tx.address), now)
            if op is not None:
                op.on_failure(tx, code, now)
            return
        problem = None
        if tx.node_id is not None and message.node_id != tx.node_id:
            problem = "id_mismatch"
        else:
            try:
                message.check_answers(tx.query)
            except KRPCError:
                problem = "invalid_answers"
        if problem is not None:
            self._counts[problem] += 1
            if _log.isEnabledFor(_DEBUG):
                _log.debug(
                    "DHT node %s answered our %s with %s: counted as a failure",
                    tx.address,
                    tx.query.method.decode("ascii"),
                    "another node id" if problem == "id_mismatch" else "malformed nodes or values",
                )
            if tx.node_id is not None:
                table.failed(NodeInfo(tx.node_id, tx.address), now)
            if op is not None:
                op.on_failure(tx, None, now)
            return
        self._counts["responses"] += 1
        if not message.read_only:
            table.heard_from(NodeInfo(message.node_id, tx.address), now, responded=True)
        if tx.operation == 0 or (op is not None and op.feeds_table):
            # upkeep queries (maintenance, bootstrap): the nodes they list are candidates
            # for buckets with room (libtorrent's refresh hears about them the same way)
            self._heard_about(message, now)
        if message.ip is not None:
            self._vote(message.ip, tx.address, now)
        if op is not None:
            op.on_response(tx, message, now)

    def _heard_about(self, message: Response, now: float) -> None:
        for family, nodes in ((4, message.nodes), (6, message.nodes6)):
            table = self._tables.get(family)  # type: ignore[call-overload]
            if table is not None and nodes:
                for node in nodes:
                    table.heard_about(node, now)

    # -- BEP 42 ------------------------------------------------------------------------------

    def _vote(self, reported: PeerAddress, voter: PeerAddress, now: float) -> None:
        if reported.normalized().family not in self._tables:
            return
        decided = self._voter.vote(reported, voter, now=now)
        if decided is not None:
            self._check_own_id(decided.family, decided.host, now)

    def _check_own_id(self, family: Family, ip: IPv4Address | IPv6Address, now: float) -> None:
        if not self._config.bep42_own_id or is_bep42_exempt(ip):
            return
        if family == 6 and 4 in self._tables and 4 in self._voter.decided:
            return  # IPv4 decides while we run it and know our IPv4 address
        if self._own.is_valid_for(ip):
            return
        last = self._last_id_change
        if last is not None and now - last < MIN_ID_CHANGE_INTERVAL:
            return  # too soon after the last change: _maintain asks again later
        self._change_id(NodeId.for_ip(ip, self._rng), now)

    def _recheck_own_id(self, now: float) -> None:
        """Take the id a decided address asks for if a change was held back by
        :data:`MIN_ID_CHANGE_INTERVAL` (IPv4 first: it decides while we run it)."""
        for family, address in sorted(self._voter.decided.items()):
            if family in self._tables:
                self._check_own_id(family, address.host, now)

    def _change_id(self, new: NodeId, now: float) -> None:
        old = self._own
        self._own = new
        self._last_id_change = now
        for table in self._tables.values():
            # each node keeps what we know of it (libtorrent's update_node_id): rebuilt from
            # a save, every node came back unconfirmed and our answers carried none
            table.change_own_id(new, now)
        tables = list(self._tables.values())
        self._handler.rebind(new, tables[0], tables[1] if len(tables) > 1 else None)
        self._items.node_id = new.value  # a full store keeps the items nearest our id
        self._events.append(NodeIdChanged(old=old, new=new))
        # refill the neighbourhood of the new id (libtorrent re-bootstraps too)
        if self._refill_waits():
            return  # an earlier change's refill still waits: it looks up our id as it starts
        refill = BootstrapOp(
            self, self._op_id(), [], slow_after=self._config.slow_after, internal=True
        )
        if not self._start_internal(refill, now):
            # every lookup slot is taken: first in the queue, it starts as soon as one frees
            # (dropped, the neighbourhood of the new id was never looked up). One at most
            # waits (above), and it takes none of the caller's max_queued places
            # (_queued_for_callers): an id change, which the network decides, must not
            # have the caller's next operation refused.
            self._queue.appendleft(refill)
            self._bootstrap_ops.add(refill.id)

    # -- maintenance -------------------------------------------------------------------------

    def _start_internal(self, op: Operation, now: float) -> bool:
        if op.uses_lookup_slot and self._lookups_running() >= self._config.max_lookups:
            return False
        self._running[op.id] = op
        if isinstance(op, BootstrapOp):
            self._bootstrap_ops.add(op.id)
        self._dirty.add(op.id)
        op.start(now)
        return True

    def _maintain(self, now: float) -> None:
        config = self._config
        transactions = self._transactions
        for table in self._tables.values():
            checked = 0
            for node in table.nodes_to_ping(now):
                if checked >= config.pings_per_tick or transactions.free <= config.alpha:
                    break
                if transactions.outstanding_to(node.address):
                    continue
                # libtorrent's send_single_refresh: a ping when the node's bucket is full,
                # else a find_node inside the bucket, whose answer helps fill it
                bucket = table.bucket_index(node.node_id)
                target = table.random_id_in(bucket) if table.has_room(bucket) else None
                self._upkeep_query(node, target, now)
                checked += 1
            if config.refresh_queries_per_tick == 0:
                # no fill queries, yet a node that only queried us joins a bucket only once
                # it answers us: what the ping budget leaves asks such candidates, as the
                # ping of a questionable node would have confirmed them in their bucket
                spare = min(config.pings_per_tick - checked, transactions.free - config.alpha)
                if spare > 0:
                    for query in table.querier_queries(
                        now, spare, busy=transactions.outstanding_to
                    ):
                        self._upkeep_query(query.node, query.target, now)
                continue
            # asked for no more than can be sent: a candidate handed out is out of the table,
            # and one to an address we await an answer from stays for a later tick
            budget = min(config.refresh_queries_per_tick, transactions.free - config.alpha)
            if budget > 0:
                for query in table.refresh_queries(
                    now, budget, config.maintenance_interval, busy=transactions.outstanding_to
                ):
                    self._upkeep_query(query.node, query.target, now)
        refreshed = 0
        for table in self._tables.values():
            for refresh in table.buckets_to_refresh(now):
                if refreshed >= config.refreshes_per_tick:
                    break
                op = LookupOp(self, self._op_id(), "find_node", refresh.target, internal=True)
                if not self._start_internal(op, now):
                    break
                table.refresh_started(refresh.bucket, now)
                refreshed += 1
        # asked last, as needs_bootstrap costs a table walk
        if (
            self._bootstrap_addresses
            and not self._bootstrap_ops
            and (
                self._last_bootstrap is None
                or now >= self._last_bootstrap + config.bootstrap_retry_interval
            )
            and self.needs_bootstrap(now)
        ):
            op = BootstrapOp(
                self,
                self._op_id(),
                list(self._bootstrap_addresses),
                slow_after=config.slow_after,
                internal=True,
            )
            if self._start_internal(op, now):
                self._last_bootstrap = now
                _log.debug(
                    "DHT routing table has no live node: bootstrapping again from %d addresses",
                    len(self._bootstrap_addresses),
                )
        self._recheck_own_id(now)
        self._peer_store.expire(now)
        self._items.expire(now)
