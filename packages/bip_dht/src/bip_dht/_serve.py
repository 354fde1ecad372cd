"""The serving side of a DHT node, sans-IO: a query datagram in, the reply datagram out.

:class:`QueryHandler` answers the queries other nodes send us from the state the node keeps:
the routing table(s), the write tokens, the announced peers and the BEP 44 items. It never
sends: :meth:`QueryHandler.handle` returns the bytes to send back to the source (or None to
stay silent), and the node core's socket does the rest.

What it answers (BEP 5, 32, 33, 42, 43, 44, 51, the way libtorrent does):

- ``ping``: our id.
- ``find_node``: the 8 nodes closest to ``target`` from the table of each family BEP 32's
  ``want`` asks for (default: the family the query came over), as ``nodes`` / ``nodes6``.
- ``get_peers``: a token bound to the source IP and info-hash, unless an announce from that
  IP would be refused (the swarm's family full, or a new hash and the store full:
  :meth:`~bip_dht.PeerStore.accepts`), as libtorrent withholds it so the
  announce goes to other nodes near the hash; ``values`` (peers of
  the requester's family from the :class:`~bip_dht.PeerStore`, seeds left out with BEP 33
  ``noseed``) when we know some, else the closest nodes; with BEP 33 ``scrape``, the ``BFsd``
  and ``BFpe`` bloom filters and the closest nodes instead of ``values`` (as libtorrent does:
  both would not fit one datagram). Replies stay under 1280 bytes (IPv6's minimum MTU)
  with 100 IPv4 or 40 IPv6 values.
- ``announce_peer``: stored when the token is one we gave the source IP for that info-hash
  (current or previous secret), else error 203; ``implied_port`` takes the source port. One
  the store refuses at capacity (the token was given before it filled) is acknowledged and
  dropped, as libtorrent does.
- BEP 44 ``get``: a token, the closest nodes, and the item if stored (for a mutable item
  ``k``, ``seq``, ``sig``, ``v``; only ``seq`` when the query's ``seq`` says the requester
  already has that version or a newer one). ``put``: the value's size (205) and the salt's
  (207) first, then the token (203), then the item (206 bad signature, 301 CAS mismatch, 302
  sequence number too low: :class:`~bip_dht.ItemRejectedError`'s ``code``).
- BEP 51 ``sample_infohashes``: up to ``sample_count`` (20, at most :data:`MAX_SAMPLE_COUNT`,
  libtorrent's cap: 20 hashes are 400 bytes, room for both node lists in one datagram) random
  info-hashes we store (``samples``), how many we store (``num``), the ``interval`` before
  asking again, and the closest nodes (of the families its ``want`` asks for, as libtorrent
  passes it on). As libtorrent's ``refresh_infohashes_sample`` does, the sample is kept for
  ``interval`` seconds and sent to everyone who asks meanwhile: the ``interval`` we tell means
  what it says, and a crawler asking again and again sooner learns nothing more (a new random
  sample per query would hand it our whole store at the rate limit). It is redrawn sooner
  while it holds fewer than ``sample_count`` hashes (all we stored then; libtorrent redraws
  those every time), with an ``interval`` of 0, and once fewer than half of it is live (below).
  ``interval`` is at most :data:`MAX_SAMPLE_INTERVAL`. It is drawn among the hashes with a
  live peer, and a kept hash whose peers have all expired since the draw is left out of what
  we send (libtorrent sends it on until the redraw), so an indexer is not sent after a hash
  nobody announces any more. Announces live 30 minutes, so on a store that turns over a kept
  sample would shrink to nothing long before 6 hours: once fewer than half of it is live it is
  drawn anew, but at most once per ``interval / 24`` seconds (15 minutes at 6 hours, about
  when half of a fresh sample has expired), so asking again and again learns at most 25
  samples per ``interval``, however fast our hashes vanish.
- Any other method: BEP 5's error 204, except that a query carrying a 20-byte ``target`` or
  ``info_hash`` is answered with the closest nodes (honouring a ``want`` list), as BEP 51
  suggests (and libtorrent does), so that nodes running newer extensions still make progress
  through us.

Every reply carries our id and BEP 42's ``ip``: the source address as we saw it, compact.

Every reply fits :data:`MAX_REPLY_SIZE` (1500 bytes: what our decoder and libtorrent's receive
buffer take). One that would not (a full BEP 44 item with both ``nodes`` and ``nodes6``) loses
its farthest nodes, the other family's first, until it fits; one that still would not is
dropped and counted (``oversized_dropped``). Error texts are ours, never the sender's bytes.

Decisions:

- Datagrams that do not decode are dropped silently and counted (``dropped_malformed``); a
  query whose method we know but whose arguments are wrong gets error 203 with its
  transaction id (:class:`~bip_dht.KRPCQueryError`).
- Responses and errors are not queries: :meth:`handle` returns None and counts them
  (``not_queries``); the node core matches them to its own queries.
- Read-only (BEP 43): a read-only node does not answer queries at all (BEP 43: it "should not
  respond to queries"; the ``ro=1`` in its own queries tells others not to ask it); queries are
  counted (``read_only_ignored``) and dropped.
- The sender of a query is offered to the routing table with ``responded=False`` (libtorrent's
  ``heard_about``), unless it set BEP 43's ``ro``: as in libtorrent, it enters no bucket
  until it answers one of our queries (its source address may be forged). For a bucket with
  room it becomes a candidate that the node core's maintenance queries; for a full one it
  waits in the replacement cache. The table's own filters (one node per IP, BEP 42) apply.
- The ``nodes`` / ``nodes6`` we reply with hold only confirmed nodes: ones that have answered
  one of our queries and not failed one since (recently or not), as libtorrent's
  ``write_nodes_entries`` hands out (``routing_table::find_node`` without
  ``include_failed``). A node that merely queried us, or that we only heard about, is never
  passed on until it answers us: otherwise a forged source address in one query would have
  us advertise it to everyone who asks (cheap routing poisoning, a reflection helper).
- Rate limiting: each source IP spends one token per query (:class:`~bip_dht.RateLimiter`,
  bounded memory); a query over the limit is dropped silently and counted, as libtorrent
  drops them. Only queries are charged, so a busy node's answers to our lookups are never lost.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from bip_bencode import decode, encode
from bip_handshake import Family, NodeInfo, PeerAddress

from ._errors import KRPCError, LocalProtocolError
from ._items import (
    MAX_SALT_SIZE,
    MAX_VALUE_SIZE,
    ImmutableItem,
    Item,
    ItemProblem,
    ItemRejectedError,
    ItemStore,
    MutableItem,
    mutable_target,
)
from ._krpc import (
    AnnouncePeer,
    ErrorCode,
    ErrorReply,
    FindNode,
    Get,
    GetPeers,
    KRPCQueryError,
    Message,
    Ping,
    Put,
    Query,
    Response,
    SampleInfohashes,
    UnknownQuery,
    decode_message,
)
from ._krpc_base import wanted_families
from ._node_id import NodeId
from ._peer_store import PeerStore
from ._ratelimit import RateLimiter
from ._routing import BUCKET_SIZE, RoutingTable
from ._stats import count_capped
from ._tokens import TokenManager

__all__ = [
    "DEFAULT_SAMPLE_COUNT",
    "DEFAULT_SAMPLE_INTERVAL",
    "MAX_COUNTED_METHODS",
    "MAX_REPLY_SIZE",
    "MAX_SAMPLE_COUNT",
    "MAX_SAMPLE_INTERVAL",
    "OTHER_METHODS",
    "QueryHandler",
    "ServeStatistics",
]

DEFAULT_SAMPLE_COUNT = 20
"""BEP 51: how many info-hashes a ``sample_infohashes`` reply carries at most (libtorrent: 20)."""
MAX_SAMPLE_COUNT = 20
"""The largest ``sample_count`` accepted: libtorrent's cap (it clamps its setting to 20). More
would not fit a datagram with the nodes beside it (256 hashes are 5 KiB; the reply would be
dropped as oversized), so a larger one is refused."""
DEFAULT_SAMPLE_INTERVAL = 21600
"""BEP 51 ``interval``: seconds before the same node should ask us again (libtorrent: 6 hours)."""
MAX_SAMPLE_INTERVAL = 21600
"""BEP 51: ``interval`` "should not exceed 21600 seconds"; a larger one is refused (libtorrent
clamps its setting to it)."""
_EARLY_REDRAWS_PER_INTERVAL = 24
# A kept sample less than half live is drawn anew at most once per sample_interval / 24 (15 min
# at 6 hours): half of a sample of 30-min announces has expired about then. A store that turns
# over fast (announces made a peer_ttl ago expiring, new ones taking their places) would
# otherwise let a crawler asking at the rate limit read it through our redraws; with the
# spacing, it learns at most 25 samples (500 hashes) per interval, as fast as samples die.
MAX_COUNTED_METHODS = 32
"""Distinct method names the ``queries`` counter keeps (the known ones first come well under
it); queries with any further name are counted together under :data:`OTHER_METHODS`, so a node
that sends a new made-up method in every datagram cannot grow the counter."""
OTHER_METHODS = b"..."
"""The ``queries`` key for methods beyond :data:`MAX_COUNTED_METHODS` names (no KRPC method
is named so)."""
MAX_REPLY_SIZE = 1500
"""Bytes a reply may take: the most our own decoder (``KRPCLimits.max_datagram``) and
libtorrent's (its ``udp_socket`` receive buffer is 1500 bytes, for IPv4 and IPv6 alike) read."""
_MAX_ERROR_TEXT = 100
"""Characters of an error reply's text at most (ours are short; this bounds the rest)."""
_NODE_SIZE = {"nodes": 26, "nodes6": 38}  # compact node info, BEP 5 and BEP 32


@dataclass(frozen=True, slots=True)
class ServeStatistics:
    """What :class:`QueryHandler` has seen, since it was created.

    Attributes:
        queries: queries answered or refused, by method name (unknown methods as sent, up to
            :data:`MAX_COUNTED_METHODS` names; the rest under :data:`OTHER_METHODS`).
        errors_sent: error replies we sent, by code.
        rate_limited: queries dropped because their source was over its rate.
        dropped_malformed: datagrams that were not KRPC at all (dropped silently).
        not_queries: responses and errors handed to us (not ours to answer).
        read_only_ignored: queries not answered because we are read-only (BEP 43).
        oversized_dropped: replies not sent because they would exceed
            :data:`MAX_REPLY_SIZE` even without nodes.
    """

    queries: Mapping[bytes, int] = field(default_factory=dict)
    errors_sent: Mapping[int, int] = field(default_factory=dict)
    rate_limited: int = 0
    dropped_malformed: int = 0
    not_queries: int = 0
    read_only_ignored: int = 0
    oversized_dropped: int = 0


def _checked_int(name: str, value: object, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise LocalProtocolError(f"{name} is an int in 0..{high}, got {value!r}")
    return value


def _id_bytes(value: object) -> bytes:
    if isinstance(value, NodeId):
        return value.value
    if isinstance(value, bytes) and len(value) == 20:
        return value
    raise LocalProtocolError(f"own_id is a NodeId or 20 bytes, got {value!r}")


class QueryHandler:
    """Answers incoming KRPC queries from the node's state (see the module docstring).

    Args:
        own_id: our node id.
        table: the routing table of one family (its ``family`` says which).
        tokens: the write-token manager.
        peers: the announced peers.
        items: the BEP 44 items.
        table6: the other family's table, for BEP 32 dual-stack nodes (optional).
        read_only: BEP 43: answer nothing.
        rate_limit: the per-IP limiter (default: :class:`RateLimiter` with its defaults);
            None disables rate limiting.
        rng: randomness for peer and info-hash sampling.
        version: our client version (the top-level ``v``), or None to send none.
        sample_count: BEP 51 samples per reply at most, 0 to :data:`MAX_SAMPLE_COUNT`.
        sample_interval: BEP 51 ``interval``, 0 to :data:`MAX_SAMPLE_INTERVAL` seconds; the
            sample is kept that long.

    ``read_only``, ``sample_count`` and ``sample_interval`` may be changed on a live handler;
    the last two are checked as in the constructor (:class:`~bip_dht.LocalProtocolError`).
    """

    __slots__ = (
        "_errors",
        "_items",
        "_own",
        "_peers",
        "_queries",
        "_rate_limit",
        "_rng",
        "_sample",
        "_sample_at",
        "_sample_count",
        "_sample_interval",
        "_stats",
        "_tables",
        "_tokens",
        "_version",
        "read_only",
    )

    def __init__(
        self,
        own_id: NodeId | bytes,
        table: RoutingTable,
        tokens: TokenManager,
        peers: PeerStore,
        items: ItemStore,
        *,
        table6: RoutingTable | None = None,
        read_only: bool = False,
        rate_limit: RateLimiter | str | None = "default",
        rng: random.Random,
        version: bytes | None = None,
        sample_count: int = DEFAULT_SAMPLE_COUNT,
        sample_interval: int = DEFAULT_SAMPLE_INTERVAL,
    ) -> None:
        self._own = _id_bytes(own_id)
        tables: dict[Family, RoutingTable] = {}
        for candidate in (table, table6):
            if candidate is None:
                continue
            if not isinstance(candidate, RoutingTable):
                raise LocalProtocolError(f"a table is a RoutingTable, got {candidate!r}")
            if candidate.family in tables:
                raise LocalProtocolError("table and table6 must be of different families")
            if candidate.own_id.value != self._own:
                raise LocalProtocolError("the routing table belongs to another node id")
            tables[candidate.family] = candidate
        if isinstance(rate_limit, str):
            if rate_limit != "default":
                raise LocalProtocolError(f"rate_limit is a RateLimiter or None, got {rate_limit!r}")
            rate_limit = RateLimiter()
        elif rate_limit is not None and not isinstance(rate_limit, RateLimiter):
            raise LocalProtocolError(f"rate_limit is a RateLimiter or None, got {rate_limit!r}")
        if version is not None and not isinstance(version, bytes):
            raise LocalProtocolError(f"version is bytes or None, got {version!r}")
        self._tables = tables
        self._tokens = tokens
        self._peers = peers
        self._items = items
        self._rate_limit = rate_limit
        self._rng = rng
        self._version = version
        self.read_only = bool(read_only)
        self._sample_count = _checked_int("sample_count", sample_count, MAX_SAMPLE_COUNT)
        self._sample_interval = _checked_int(
            "sample_interval", sample_interval, MAX_SAMPLE_INTERVAL
        )
        # the BEP 51 sample sent until sample_interval has passed since _sample_at (None: none
        # drawn yet); at most sample_count hashes
        self._sample: tuple[bytes, ...] | None = None
        self._sample_at = 0.0
        self._queries: Counter[bytes] = Counter()
        self._errors: Counter[int] = Counter()
        self._stats: Counter[str] = Counter()

    @property
    def sample_count(self) -> int:
        """BEP 51 samples per reply at most (0 to :data:`MAX_SAMPLE_COUNT`); settable, checked."""
        return self._sample_count

    @sample_count.setter
    def sample_count(self, value: int) -> None:
        # a kept sample of another length is redrawn at the next query (see _current_sample)
        self._sample_count = _checked_int("sample_count", value, MAX_SAMPLE_COUNT)

    @property
    def sample_interval(self) -> int:
        """BEP 51 ``interval`` (0 to :data:`MAX_SAMPLE_INTERVAL` seconds); settable, checked."""
        return self._sample_interval

    @sample_interval.setter
    def sample_interval(self, value: int) -> None:
        self._sample_interval = _checked_int("sample_interval", value, MAX_SAMPLE_INTERVAL)

    def statistics(self) -> ServeStatistics:
        """A snapshot of the counters (later traffic does not change it)."""
        return ServeStatistics(
            queries=MappingProxyType(dict(self._queries)),
            errors_sent=MappingProxyType(dict(self._errors)),
            rate_limited=self._stats["rate_limited"],
            dropped_malformed=self._stats["dropped_malformed"],
            not_queries=self._stats["not_queries"],
            read_only_ignored=self._stats["read_only_ignored"],
            oversized_dropped=self._stats["oversized_dropped"],
        )

    # --- entry point ---------------------------------------------------------------------------

    def handle(self, datagram: bytes, source: PeerAddress, now: float) -> bytes | None:
        """Answer one datagram from *source*; return the reply to send back, or None.

        Never raises on anything a peer can send: undecodable datagrams, responses and errors,
        rate-limited and (in read-only mode) all queries give None.
        """
        if not isinstance(source, PeerAddress):
            raise LocalProtocolError(f"source is a PeerAddress, got {source!r}")
        try:
            message = decode_message(datagram)
        except KRPCQueryError as error:
            return self.handle_query_error(error, source, now)
        except KRPCError:
            self._stats["dropped_malformed"] += 1
            return None
        return self.handle_message(message, source, now)

    def handle_message(self, message: Message, source: PeerAddress, now: float) -> bytes | None:
        """Like :meth:`handle`, for a datagram the caller has already decoded.

        The node core decodes each datagram once, keeps responses and errors for its own
        transactions and hands queries here; a response or error given here is counted
        (``not_queries``) and gets None.
        """
        if not isinstance(source, PeerAddress):
            raise LocalProtocolError(f"source is a PeerAddress, got {source!r}")
        if isinstance(message, Response | ErrorReply):
            self._stats["not_queries"] += 1
            return None
        name = message.name if isinstance(message, UnknownQuery) else message.method
        self._count_query(name)
        if not self._admit(source, now):
            return None
        if not message.read_only:
            self._offer(message.node_id, source, now)
        return self._answer(message, source, now)

    def handle_query_error(
        self, error: KRPCQueryError, source: PeerAddress, now: float
    ) -> bytes | None:
        """The error 203 reply to a query whose arguments did not decode (None when
        rate-limited or read-only)."""
        self._count_query(error.method)
        if not self._admit(source, now):
            return None
        return self._error(error.transaction_id, ErrorCode.PROTOCOL, str(error), source)

    def rebind(
        self, own_id: NodeId | bytes, table: RoutingTable, table6: RoutingTable | None = None
    ) -> None:
        """Answer as *own_id* from new tables (after a BEP 42 id change); stores, tokens, the
        rate limiter and the counters are kept."""
        own = _id_bytes(own_id)
        tables: dict[Family, RoutingTable] = {}
        for candidate in (table, table6):
            if candidate is None:
                continue
            if not isinstance(candidate, RoutingTable) or candidate.own_id.value != own:
                raise LocalProtocolError("rebind takes RoutingTables of the new id")
            if candidate.family in tables:
                raise LocalProtocolError("table and table6 must be of different families")
            tables[candidate.family] = candidate
        self._own = own
        self._tables = tables

    def _count_query(self, name: bytes) -> None:
        count_capped(self._queries, name, MAX_COUNTED_METHODS, OTHER_METHODS)

    def _admit(self, source: PeerAddress, now: float) -> bool:
        if self.read_only:
            self._stats["read_only_ignored"] += 1
            return False
        if self._rate_limit is not None and not self._rate_limit.allow(source.host, now):
            self._stats["rate_limited"] += 1
            return False
        return True

    def _offer(self, node_id: bytes, source: PeerAddress, now: float) -> None:
        address = source.normalized()
        table = self._tables.get(address.family)
        if table is not None:
            table.heard_from(NodeInfo(node_id, address), now, responded=False)

    # --- replies -------------------------------------------------------------------------------

    def _error(self, tid: bytes, code: int, message: str, source: PeerAddress) -> bytes | None:
        data = ErrorReply(
            transaction_id=tid,
            code=code,
            message=message[:_MAX_ERROR_TEXT],
            version=self._version,
            ip=source,
        ).encode()
        if len(data) > MAX_REPLY_SIZE:  # only a huge transaction id gets here
            self._stats["oversized_dropped"] += 1
            return None
        self._errors[int(code)] += 1
        return data

    def _reply(self, tid: bytes, source: PeerAddress, **fields: Any) -> bytes | None:
        data = self._encode_reply(tid, source, fields)
        if len(data) <= MAX_REPLY_SIZE:
            return data
        # Too big for the requester to read: shed the farthest nodes (lists are nearest
        # first), the other family's before the requester's own, until the reply fits.
        own = "nodes" if source.normalized().family == 4 else "nodes6"
        for key in sorted(_NODE_SIZE, key=lambda k: k == own):
            nodes = fields.get(key)
            while nodes and len(data) > MAX_REPLY_SIZE:
                excess = len(data) - MAX_REPLY_SIZE
                nodes = fields[key] = nodes[: max(0, len(nodes) - -(-excess // _NODE_SIZE[key]))]
                data = self._encode_reply(tid, source, fields)
            if len(data) <= MAX_REPLY_SIZE:
                return data
        self._stats["oversized_dropped"] += 1
        return None

    def _encode_reply(self, tid: bytes, source: PeerAddress, fields: dict[str, Any]) -> bytes:
        return Response(
            transaction_id=tid, node_id=self._own, version=self._version, ip=source, **fields
        ).encode()

    def _nodes(
        self, target: bytes, want: tuple[bytes, ...] | None, source: PeerAddress, now: float
    ) -> dict[str, Any]:
        """``nodes`` / ``nodes6`` closest to *target* for the families *want* asks for."""
        families = wanted_families(want, source.normalized().family)
        fields: dict[str, Any] = {}
        goal = NodeId(target)
        for family in sorted(families):
            table = self._tables.get(family)
            if table is None:
                continue
            # only nodes that have answered us (libtorrent's rule): a querier we never heard
            # answer is not passed on, or anyone could have us spread its (spoofed) address
            found = tuple(table.closest(goal, now, BUCKET_SIZE, confirmed_only=True))
            fields["nodes" if family == 4 else "nodes6"] = found
        if not fields:
            # A requester wanting only a family we have no table for still gets a valid reply.
            fields["nodes" if source.normalized().family == 4 else "nodes6"] = ()
        return fields

    def _answer(self, query: Query, source: PeerAddress, now: float) -> bytes | None:
        tid = query.transaction_id
        host = source.host
        if isinstance(query, Ping):
            return self._reply(tid, source)
        if isinstance(query, FindNode):
            return self._reply(tid, source, **self._nodes(query.target, query.want, source, now))
        if isinstance(query, GetPeers):
            return self._get_peers(query, source, now)
        if isinstance(query, AnnouncePeer):
            if not self._tokens.verify(query.token, host, query.info_hash, now):
                return self._error(tid, ErrorCode.PROTOCOL, "invalid token", source)
            port = source.port if query.implied_port else query.port
            announced = PeerAddress(host, port)
            if not announced.is_connectable:
                return self._error(tid, ErrorCode.PROTOCOL, "invalid port", source)
            # False at capacity (a token given before the swarm filled): dropped and still
            # acknowledged, as libtorrent does
            self._peers.announce(query.info_hash, announced, seed=query.seed, now=now)
            return self._reply(tid, source)
        if isinstance(query, Get):
            return self._get(query, source, now)
        if isinstance(query, Put):
            return self._put(query, source, now)
        if isinstance(query, SampleInfohashes):
            return self._reply(
                tid,
                source,
                samples=self._live_sample(now),
                num=self._peers.hash_count,
                interval=self.sample_interval,
                **self._nodes(query.target, query.want, source, now),
            )
        # An unknown method: BEP 51 suggests answering like find_node when there is a target,
        # with the families its want asks for (libtorrent reads ``want`` for these too).
        raw_want = query.extra.get(b"want")
        want = (
            tuple(entry for entry in raw_want if isinstance(entry, bytes))
            if isinstance(raw_want, list)
            else None
        )
        for key in (b"target", b"info_hash"):
            target = query.extra.get(key)
            if isinstance(target, bytes) and len(target) == 20:
                return self._reply(tid, source, **self._nodes(target, want, source, now))
        return self._error(tid, ErrorCode.METHOD_UNKNOWN, "method unknown", source)

    def _live_sample(self, now: float) -> tuple[bytes, ...]:
        """The kept sample less the hashes whose peers have all expired since it was drawn
        (left out, not replaced one for one: that would hand a crawler new hashes as fast as
        ours expire). Once fewer than half of it is live, it is drawn anew, but no sooner
        than ``sample_interval / 24`` after the last draw (see the module docstring)."""
        sample = self._current_sample(now)
        live = tuple(h for h in sample if self._peers.has_peers(h, now))
        if 2 * len(live) < len(sample) and (
            now - self._sample_at >= self.sample_interval / _EARLY_REDRAWS_PER_INTERVAL
        ):
            # Drawn among live hashes only (_current_sample expires the store first), so the
            # new sample is whole; _sample_at restarts the interval and the spacing from now.
            self._sample = None
            return self._current_sample(now)
        return live

    def _current_sample(self, now: float) -> tuple[bytes, ...]:
        """The BEP 51 sample to send at *now*: the one drawn last while ``sample_interval``
        has not passed since and it is full, else a new one (libtorrent's
        ``refresh_infohashes_sample``)."""
        sample = self._sample
        if (
            sample is None
            or len(sample) != self.sample_count  # short: all we had then (or the count changed)
            or now - self._sample_at >= self.sample_interval
            or now < self._sample_at  # a clock that went back: do not keep it for ever
        ):
            # Draw from live hashes only: the store forgets expired announces when the node's
            # maintenance runs, and a sample drawn among them would be sent mostly empty.
            self._peers.expire(now)
            sample = tuple(self._peers.sample_info_hashes(self.sample_count, self._rng))
            self._sample = sample
            self._sample_at = now
        return sample

    def _get_peers(self, query: GetPeers, source: PeerAddress, now: float) -> bytes | None:
        fields: dict[str, Any] = {}
        if self._peers.accepts(query.info_hash, source, now):
            # libtorrent withholds the token when the announce would be dropped (the swarm's
            # family or the store full): the requester announces to other nodes instead
            fields["token"] = self._tokens.token(source.host, query.info_hash, now)
        values: list[PeerAddress] = []
        if query.scrape:
            # The filters replace the values, as in libtorrent: a scraper wants counts, and
            # 512 bytes of filters plus 100 values would not fit a datagram.
            seeds, downloaders = self._peers.scrape(query.info_hash, now)
            fields["bfsd"] = seeds.to_bytes()
            fields["bfpe"] = downloaders.to_bytes()
        else:
            family = source.normalized().family
            values = self._peers.get_peers(
                query.info_hash, family, self._rng, now, noseed=query.noseed
            )
        if values:
            fields["values"] = tuple(values)
        else:
            fields.update(self._nodes(query.info_hash, query.want, source, now))
        return self._reply(query.transaction_id, source, **fields)

    def _get(self, query: Get, source: PeerAddress, now: float) -> bytes | None:
        fields: dict[str, Any] = {
            "token": self._tokens.token(source.host, query.target, now),
        }
        fields.update(self._nodes(query.target, query.want, source, now))
        item = self._items.get(query.target, now)
        if isinstance(item, ImmutableItem):
            fields["v"] = decode(item.value)
        elif isinstance(item, MutableItem):
            fields["seq"] = item.seq
            # libtorrent's extension: a requester that has this seq or newer needs only seq.
            if query.seq is None or item.seq > query.seq:
                fields["v"] = decode(item.value)
                fields["k"] = item.public_key
                fields["sig"] = item.signature
        return self._reply(query.transaction_id, source, **fields)

    def _put(self, query: Put, source: PeerAddress, now: float) -> bytes | None:
        tid = query.transaction_id
        value = encode(query.v)  # the codec checked v is a bencodable value
        try:
            item: Item
            if query.k is not None and query.sig is not None and query.seq is not None:
                if len(query.salt) > MAX_SALT_SIZE:
                    raise ItemRejectedError(ItemProblem.SALT_TOO_BIG, "salt too big")
                if len(value) > MAX_VALUE_SIZE:
                    raise ItemRejectedError(ItemProblem.VALUE_TOO_BIG, "v too big")
                target = mutable_target(query.k, query.salt)
                if not self._tokens.verify(query.token, source.host, target, now):
                    return self._error(tid, ErrorCode.PROTOCOL, "invalid token", source)
                item = MutableItem(value, query.k, query.seq, query.sig, query.salt)
            else:
                if len(value) > MAX_VALUE_SIZE:
                    raise ItemRejectedError(ItemProblem.VALUE_TOO_BIG, "v too big")
                item = ImmutableItem(value)
                if not self._tokens.verify(query.token, source.host, item.target, now):
                    return self._error(tid, ErrorCode.PROTOCOL, "invalid token", source)
            self._items.put(item, now, cas=query.cas, source=source.host)
        except ItemRejectedError as error:
            return self._error(tid, int(error.code), str(error), source)
        return self._reply(tid, source)
