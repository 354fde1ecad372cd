"""The node's operations: what one ping, lookup, bootstrap, announce or put is doing, sans-IO.

Private to :mod:`bip_dht._node`, which owns the sockets' side (transactions, the routing
tables, the outbox) and drives these objects:

- :meth:`Operation.sends` hands out the queries the operation wants sent now (at most
  ``budget``, the free transaction slots); the node opens a transaction for each;
- :meth:`Operation.on_response` / :meth:`Operation.on_failure` report what became of them
  (a failure is a KRPC error, with its code, or a timeout, code None);
- :meth:`Operation.handle_timer` / :meth:`Operation.next_deadline` drive the lookups' slow
  timers; :attr:`Operation.done` says it is over and :meth:`Operation.finished` gives the
  event that ends it.

The operations follow libtorrent's traversal algorithms: a lookup is a :class:`~bip_dht.Lookup`;
a bootstrap first asks each address (whose id we do not know) for nodes close to our own id,
then runs a find_node lookup on our id seeded with what they said (libtorrent's bootstrap
traversal); an announce (put) is a get_peers (get) lookup followed by announce_peer (put) to
the ``k`` closest responders that gave a write token (:meth:`~bip_dht.Lookup.writable`: past
the ``k`` closest responders when those withhold their tokens), as libtorrent's dht::announce
and put_data do.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from bip_bencode import decode
from bip_handshake import Family, NodeInfo, PeerAddress

from ._bloom import ScrapeBloom
from ._items import ImmutableItem, MutableItem
from ._krpc import (
    AnnouncePeer,
    FindNode,
    Get,
    GetPeers,
    Ping,
    Put,
    Query,
    Response,
    SampleInfohashes,
)
from ._lookup import Lookup, LookupKind, LookupNode, LookupResult
from ._node_config import DHTConfig
from ._node_events import (
    AnnounceFinished,
    DHTEvent,
    LookupFinished,
    PeersFound,
    PingFinished,
    PutFinished,
    SamplesFound,
)
from ._node_id import NodeId
from ._transactions import Transaction

__all__ = [
    "AnnounceOp",
    "BootstrapOp",
    "Context",
    "LookupOp",
    "Operation",
    "PingOp",
    "PutOp",
    "Send",
]

EMPTY_RESULT = LookupResult((), (), None, 0)
# nodes a bootstrap's first answers may seed its lookup with (a few answers' worth)
_MAX_BOOTSTRAP_SEEDS = 256


class Send:
    """One query an operation wants sent: to *address* (node id *node_id* when known), built
    from the transaction id by *build*."""

    __slots__ = ("address", "build", "node_id")

    def __init__(
        self, address: PeerAddress, node_id: bytes | None, build: Callable[[bytes], Query]
    ) -> None:
        self.address = address
        self.node_id = node_id
        self.build = build


class Context(Protocol):
    """What operations need from the node."""

    @property
    def own_id(self) -> NodeId: ...

    def common(self) -> dict[str, Any]:
        """The query fields every query carries (``node_id``, ``version``, ``read_only``)."""
        ...

    def want(self) -> tuple[bytes, ...] | None:
        """BEP 32 ``want`` for node-returning queries (both families when we run both)."""
        ...

    @property
    def families(self) -> tuple[Family, ...]: ...

    @property
    def config(self) -> DHTConfig: ...

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
        """A lookup of *family* with the node's settings, seeded with *seeds* and the
        family's routing table, with *learned* as learned candidates (one per network)."""
        ...

    def emit(self, event: DHTEvent) -> None:
        """Queue a progress event (dropped and counted when the queue is full)."""
        ...

    def local_port(self, family: Family) -> int:
        """Our UDP port for *family* when the shell told us (else 0)."""
        ...


class Operation(ABC):
    """Base of every operation; see the module docstring."""

    uses_lookup_slot = True

    def __init__(self, ctx: Context, op_id: int, *, internal: bool = False) -> None:
        self.ctx = ctx
        self.id = op_id
        self.internal = internal
        self.done = False
        # whether the nodes its answers list are offered to the routing tables as candidates
        # (RoutingTable.heard_about): the node's own upkeep (bootstraps, refreshes), not the
        # caller's searches
        self.feeds_table = internal

    def start(self, now: float) -> None:  # noqa: B027 - a hook; most operations need none
        """The operation got its slot and may begin."""

    def sends(self, now: float, budget: int) -> list[Send]:
        """The queries to send now, at most *budget* (the free transaction slots)."""
        return []

    def sent(self, tx: Transaction) -> None:  # noqa: B027 - a hook
        """The node opened *tx* for one of the sends this operation asked for."""

    def on_response(self, tx: Transaction, response: Response, now: float) -> None:  # noqa: B027
        """A valid answer to *tx* (matched, from the node queried, answering the query)."""

    def on_failure(self, tx: Transaction, code: int | None, now: float) -> None:  # noqa: B027
        """*tx* failed: a KRPC error with *code*, or a timeout (None)."""

    def handle_timer(self, now: float) -> None:  # noqa: B027 - a hook
        """Time passed (the node calls it at every timer)."""

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` has something to do for this operation."""
        return None

    def cancel(self) -> None:
        """Stop now; :meth:`finished` reports what was found so far."""
        self.done = True

    @abstractmethod
    def finished(self) -> DHTEvent:
        """The event that ends this operation (once :attr:`done`, or when refused)."""

    def _emit(self, event: DHTEvent) -> None:
        if not self.internal:
            self.ctx.emit(event)


class PingOp(Operation):
    """One ping to an address; ends with the node that answered, or None."""

    uses_lookup_slot = False

    def __init__(
        self,
        ctx: Context,
        op_id: int,
        address: PeerAddress,
        node_id: bytes | None = None,
        *,
        internal: bool = False,
    ) -> None:
        super().__init__(ctx, op_id, internal=internal)
        self.address = address
        self.node_id = node_id
        self._asked = False
        self.node: NodeInfo | None = None

    def sends(self, now: float, budget: int) -> list[Send]:
        if self.done or self._asked or budget < 1:
            return []
        self._asked = True
        ctx = self.ctx
        return [
            Send(
                self.address,
                self.node_id,
                lambda tid: Ping(transaction_id=tid, **ctx.common()),
            )
        ]

    def on_response(self, tx: Transaction, response: Response, now: float) -> None:
        self.node = NodeInfo(response.node_id, tx.address)
        self.done = True

    def on_failure(self, tx: Transaction, code: int | None, now: float) -> None:
        self.done = True

    def finished(self) -> DHTEvent:
        return PingFinished(self.id, self.node)


class LookupOp(Operation):
    """A find_node, get_peers, get or sample_infohashes lookup.

    A dual-stack node runs one :class:`~bip_dht.Lookup` per family (as libtorrent runs one
    traversal per socket): the IPv4 half queries IPv4 nodes, the IPv6 half IPv6 ones, so both
    tables fill and a get_peers collects peers of both families (a node answers with peers of
    the family the query came over). Each half hands the other the nodes it hears of in the
    other family (BEP 32 ``want``). A half starts once it has candidates. The result has up to
    ``k`` nodes per family, closest first.
    """

    def __init__(
        self,
        ctx: Context,
        op_id: int,
        kind: LookupKind,
        target: NodeId,
        *,
        internal: bool = False,
        scrape: bool = False,
        noseed: bool = False,
        seq: int | None = None,
        salt: bytes = b"",
        name: str | None = None,
    ) -> None:
        super().__init__(ctx, op_id, internal=internal)
        self.kind: LookupKind = kind
        self.name = name or kind
        self.target = target
        self.scrape = scrape
        self.noseed = noseed
        self.seq = seq
        self.salt = salt
        self.lookups: dict[Family, Lookup] = {}
        self.started = False
        self._peers: dict[PeerAddress, None] = {}
        # BEP 33: each responder's filters, to union those of the closest at the end
        self._blooms: dict[bytes, tuple[bytes, bytes]] = {}

    def start(self, now: float) -> None:
        self._begin(())

    def _begin(self, seeds: Iterable[NodeInfo]) -> None:
        self.started = True
        seeds = list(seeds)
        for family in self.ctx.families:
            mine = [n for n in seeds if n.address.family == family]
            lookup = self.ctx.new_lookup(self.target, self.kind, mine, self.salt, family)
            if not lookup.done:
                self.lookups[family] = lookup
        self._check_done()

    # -- queries --------------------------------------------------------------------------

    def _builder(self, kind: LookupKind) -> Callable[[bytes], Query]:
        ctx, target = self.ctx, self.target.value
        if kind == "find_node":
            return lambda tid: FindNode(
                transaction_id=tid, target=target, want=ctx.want(), **ctx.common()
            )
        if kind == "get_peers":
            scrape, noseed = self.scrape, self.noseed
            return lambda tid: GetPeers(
                transaction_id=tid,
                info_hash=target,
                want=ctx.want(),
                scrape=scrape,
                noseed=noseed,
                **ctx.common(),
            )
        if kind == "get":
            seq = self.seq
            return lambda tid: Get(
                transaction_id=tid, target=target, seq=seq, want=ctx.want(), **ctx.common()
            )
        return lambda tid: SampleInfohashes(
            transaction_id=tid, target=target, want=ctx.want(), **ctx.common()
        )

    def _lookup_sends(self, now: float, budget: int) -> list[Send]:
        out: list[Send] = []
        for lookup in self.lookups.values():
            # A lookup hands out up to alpha queries at once and cannot take some back.
            if lookup.done or budget - len(out) < lookup.alpha:
                continue
            out.extend(
                Send(node.address, node.node_id, self._builder(kind))
                for node, kind in lookup.next_queries(now)
            )
        return out

    def sends(self, now: float, budget: int) -> list[Send]:
        if self.done:
            return []
        out = self._lookup_sends(now, budget)
        self._check_done()
        return out

    # -- answers --------------------------------------------------------------------------

    def on_response(self, tx: Transaction, response: Response, now: float) -> None:
        lookup = self.lookups.get(tx.address.family)
        if lookup is None or tx.node_id is None:
            return
        node = NodeInfo(tx.node_id, tx.address)
        if not lookup.on_response(node, response, now):
            return
        self._cross_feed(tx.address.family, response)
        if response.values and self.kind == "get_peers":
            fresh = [p for p in response.values if p not in self._peers]
            room = self.ctx.config.max_lookup_peers * 2 - len(self._peers)
            fresh = list(dict.fromkeys(fresh))[: max(room, 0)]
            if fresh:
                self._peers.update(dict.fromkeys(fresh))
                self._emit(PeersFound(self.id, self.target.value, tuple(fresh)))
        if response.bfsd is not None and response.bfpe is not None:
            self._blooms[node.node_id] = (response.bfsd, response.bfpe)
        if self.kind == "sample_infohashes" and response.samples is not None:
            self._emit(
                SamplesFound(
                    self.id, node, response.samples, response.num or 0, response.interval or 0
                )
            )
        self._check_done()

    def _cross_feed(self, family: Family, response: Response) -> None:
        for other in self.ctx.families:
            if other == family:
                continue
            learned = response.nodes if other == 4 else response.nodes6
            if not learned:
                continue
            lookup = self.lookups.get(other)
            if lookup is None:
                # The missing half starts from our routing table; what one responder named is
                # learned, not a seed: as seeds, 8 made-up ids in one /64 would take every
                # place of the k closest (seeds skip the one-per-network rule).
                fresh = self.ctx.new_lookup(
                    self.target, self.kind, [], self.salt, other, learned=learned
                )
                if not fresh.done:
                    self.lookups[other] = fresh
            else:
                lookup.add_candidates(learned)

    def on_failure(self, tx: Transaction, code: int | None, now: float) -> None:
        lookup = self.lookups.get(tx.address.family)
        if lookup is not None and tx.node_id is not None:
            lookup.on_error(NodeInfo(tx.node_id, tx.address), now)
            self._check_done()

    def handle_timer(self, now: float) -> None:
        for lookup in self.lookups.values():
            lookup.handle_timer(now)
        self._check_done()

    def next_deadline(self) -> float | None:
        if self.done:
            return None
        deadlines = [
            d for lookup in self.lookups.values() if (d := lookup.next_deadline()) is not None
        ]
        return min(deadlines) if deadlines else None

    def _lookups_done(self) -> bool:
        return self.started and all(lookup.done for lookup in self.lookups.values())

    def _check_done(self) -> None:
        if self._lookups_done():
            self.done = True

    # -- the end --------------------------------------------------------------------------

    def result(self) -> LookupResult:
        """Both families' results together: up to ``k`` nodes of each, closest first."""
        results = [lookup.result() for lookup in self.lookups.values()]
        if not results:
            return EMPTY_RESULT
        if len(results) == 1:
            return results[0]
        goal = int(self.target)
        nodes = sorted(
            (n for r in results for n in r.nodes), key=lambda n: int(NodeId(n.node.node_id)) ^ goal
        )
        peers = tuple(dict.fromkeys(p for r in results for p in r.peers))
        items = [r.item for r in results if r.item is not None]
        item = items[0] if items else None
        for other in items[1:]:
            if (
                isinstance(other, MutableItem)
                and isinstance(item, MutableItem)
                and other.seq > item.seq
            ):
                item = other
        return LookupResult(tuple(nodes), peers, item, sum(r.queries for r in results))

    def scrape_estimates(self, result: LookupResult) -> tuple[float | None, float | None]:
        """BEP 33: the union of the closest responders' filters, as (seeds, peers) estimates."""
        blooms = self._blooms
        chosen = [blooms[n.node.node_id] for n in result.nodes if n.node.node_id in blooms]
        if not chosen:
            return None, None
        seeds = ScrapeBloom.union(ScrapeBloom.from_bytes(s) for s, _ in chosen)
        peers = ScrapeBloom.union(ScrapeBloom.from_bytes(p) for _, p in chosen)
        return seeds.estimate(), peers.estimate()

    def finished(self) -> DHTEvent:
        result = self.result()
        seeds, peers = self.scrape_estimates(result)
        return LookupFinished(
            self.id,
            self.name,
            self.target.value,
            result,
            seeds_estimate=seeds,
            peers_estimate=peers,
        )


class BootstrapOp(LookupOp):
    """Ask addresses of unknown id for nodes near us, then look our own id up.

    Phase one sends ``find_node(own id)`` to every address. The lookup starts once every
    address has answered or failed, or ``slow_after`` seconds after the first answer (later
    answers still fill the routing table); it is seeded with the responders, the nodes they
    returned and what the routing table already holds.
    """

    def __init__(
        self,
        ctx: Context,
        op_id: int,
        addresses: list[PeerAddress],
        *,
        slow_after: float,
        internal: bool = False,
    ) -> None:
        super().__init__(ctx, op_id, "find_node", ctx.own_id, internal=internal, name="bootstrap")
        self.feeds_table = True  # joining: what the network tells us of fills the far buckets
        self.addresses = addresses
        self.slow_after = slow_after
        self._unsent = deque(addresses)
        self._pending: set[bytes] = set()
        # Who answered, and whom they named: the lookup starts from the responders and takes
        # the named nodes as learned ones (one per /24 or /64, libtorrent's
        # restrict_search_ips: only its routers are initial), so one responder cannot fill
        # the k closest places from one network.
        self._responders: dict[bytes, NodeInfo] = {}
        self._named: dict[bytes, NodeInfo] = {}
        self._first_answer: float | None = None

    def start(self, now: float) -> None:
        # the target is our id at the time the bootstrap runs (it may have changed, BEP 42)
        self.target = self.ctx.own_id
        if not self._unsent:
            self._begin(())

    def sends(self, now: float, budget: int) -> list[Send]:
        if self.done:
            return []
        if self.started:
            return super().sends(now, budget)
        ctx, target = self.ctx, self.target.value
        out = []
        while self._unsent and budget > 0:
            address = self._unsent.popleft()
            out.append(
                Send(
                    address,
                    None,
                    lambda tid: FindNode(
                        transaction_id=tid, target=target, want=ctx.want(), **ctx.common()
                    ),
                )
            )
            budget -= 1
        return out

    def sent(self, tx: Transaction) -> None:
        if not self.started:
            self._pending.add(tx.tid)

    def on_response(self, tx: Transaction, response: Response, now: float) -> None:
        if tx.tid not in self._pending:
            super().on_response(tx, response, now)
            return
        self._pending.discard(tx.tid)
        if self.started:
            return  # a late answer: the node already put the responder in its table
        if self._first_answer is None:
            self._first_answer = now
        own = self.ctx.own_id.value
        responder = NodeInfo(response.node_id, tx.address)
        if responder.node_id != own:
            self._responders.setdefault(
                responder.node_id + responder.address.to_compact(), responder
            )
        for node in (*(response.nodes or ()), *(response.nodes6 or ())):
            if node.node_id != own and len(self._named) < _MAX_BOOTSTRAP_SEEDS:
                self._named.setdefault(node.node_id + node.address.to_compact(), node)
        self._maybe_begin(now)

    def on_failure(self, tx: Transaction, code: int | None, now: float) -> None:
        if tx.tid not in self._pending:
            super().on_failure(tx, code, now)
            return
        self._pending.discard(tx.tid)
        if not self.started:
            self._maybe_begin(now)

    def _maybe_begin(self, now: float) -> None:
        if self._unsent:
            return
        if not self._pending or (
            self._first_answer is not None and now >= self._first_answer + self.slow_after
        ):
            self._begin_from_answers()

    def _begin_from_answers(self) -> None:
        """Start each family's lookup from its responders (seeds) and the routing table, the
        nodes the responders named offered as learned candidates (one per /24 or /64). The
        learned ones start the lookup alone where no responder of the family is left to
        start from: none answered in it (``nodes6`` from an IPv4 responder), or the lookup's
        filter refused them all (BEP 42 enforced on a router's id, an unconnectable
        address); as seeds there, one answer's made-up ids in one network could take every
        place of the ``k`` closest (seeds skip the one-per-network rule)."""
        self.started = True
        ctx = self.ctx
        responders = list(self._responders.values())
        named = list(self._named.values())
        for family in ctx.families:
            theirs = [n for n in named if n.address.family == family]
            mine = [n for n in responders if n.address.family == family]
            lookup = ctx.new_lookup(self.target, self.kind, mine, self.salt, family, learned=theirs)
            if not lookup.done:
                self.lookups[family] = lookup
        self._check_done()

    def handle_timer(self, now: float) -> None:
        if self.started:
            super().handle_timer(now)
        else:
            self._maybe_begin(now)

    def next_deadline(self) -> float | None:
        if self.done:
            return None
        if not self.started:
            if self._first_answer is not None and not self._unsent:
                return self._first_answer + self.slow_after
            return None
        return super().next_deadline()


class _StoreOp(LookupOp):
    """A lookup followed by a write (announce_peer, put) to the closest responders with a
    token: ``k`` of them at most per family, walking past the tokenless ones (a full swarm's
    nodes withhold their tokens) as libtorrent's ``find_data::done`` does."""

    def __init__(
        self,
        ctx: Context,
        op_id: int,
        kind: LookupKind,
        target: NodeId,
        *,
        k: int,
        salt: bytes = b"",
    ) -> None:
        super().__init__(ctx, op_id, kind, target, salt=salt)
        self.k = k
        self._writes: deque[LookupNode] | None = None
        self._pending: set[bytes] = set()
        self.accepted = 0
        self.errors: list[tuple[NodeInfo, int]] = []
        self._final: LookupResult | None = None

    @abstractmethod
    def _write(self, node: LookupNode) -> Callable[[bytes], Query]:
        """The write query (announce_peer, put) for *node*, built from a transaction id."""

    def _check_done(self) -> None:
        if not self._lookups_done():
            return
        if self._writes is None:
            self._final = super().result()
            writes: deque[LookupNode] = deque()
            for family in self.ctx.families:
                lookup = self.lookups.get(family)
                if lookup is not None:
                    # every responder with a token, not only those among the k closest
                    writes.extend(lookup.writable(self.k))
            self._writes = writes
        if not self._writes and not self._pending:
            self.done = True

    def sends(self, now: float, budget: int) -> list[Send]:
        if self.done:
            return []
        out: list[Send] = []
        if self._writes is None:
            out = self._lookup_sends(now, budget)
            self._check_done()  # may turn to the writes at once
        return out + self._write_sends(budget - len(out))

    def _write_sends(self, budget: int) -> list[Send]:
        out: list[Send] = []
        while self._writes and budget > 0:
            node = self._writes.popleft()
            out.append(Send(node.node.address, node.node.node_id, self._write(node)))
            budget -= 1
        return out

    def sent(self, tx: Transaction) -> None:
        if self._writes is not None:
            self._pending.add(tx.tid)

    def on_response(self, tx: Transaction, response: Response, now: float) -> None:
        if tx.tid in self._pending:
            self._pending.discard(tx.tid)
            self.accepted += 1
            self._check_done()
        else:
            super().on_response(tx, response, now)

    def on_failure(self, tx: Transaction, code: int | None, now: float) -> None:
        if tx.tid in self._pending:
            self._pending.discard(tx.tid)
            if code is not None and tx.node_id is not None:
                self.errors.append((NodeInfo(tx.node_id, tx.address), code))
            self._check_done()
        else:
            super().on_failure(tx, code, now)

    def result(self) -> LookupResult:
        return self._final if self._final is not None else super().result()


class AnnounceOp(_StoreOp):
    """get_peers, then announce_peer to the closest responders with a token."""

    def __init__(
        self, ctx: Context, op_id: int, info_hash: NodeId, *, port: int | None, seed: bool, k: int
    ) -> None:
        super().__init__(ctx, op_id, "get_peers", info_hash, k=k)
        self.port = port
        self.seed = seed

    def _write(self, node: LookupNode) -> Callable[[bytes], Query]:
        ctx, info_hash, token = self.ctx, self.target.value, node.token or b""
        # implied_port: the receiver takes our UDP source port. We still fill 'port' with it
        # when we know it, as libtorrent does, for nodes that ignore implied_port (aria2).
        family = node.node.address.family
        port, implied = (
            (self.ctx.local_port(family), True) if self.port is None else (self.port, False)
        )
        seed = self.seed
        return lambda tid: AnnouncePeer(
            transaction_id=tid,
            info_hash=info_hash,
            port=port,
            token=token,
            implied_port=implied,
            seed=seed,
            **ctx.common(),
        )

    def finished(self) -> DHTEvent:
        return AnnounceFinished(self.id, self.target.value, self.accepted, self.result())


class PutOp(_StoreOp):
    """get (to find the closest nodes and their tokens), then put to them."""

    def __init__(
        self,
        ctx: Context,
        op_id: int,
        item: ImmutableItem | MutableItem,
        *,
        cas: int | None,
        k: int,
    ) -> None:
        salt = item.salt if isinstance(item, MutableItem) else b""
        super().__init__(ctx, op_id, "get", NodeId(item.target), k=k, salt=salt)
        self.item = item
        self.cas = cas
        self._v = decode(item.value)

    def _write(self, node: LookupNode) -> Callable[[bytes], Query]:
        ctx, item, v, token, cas = self.ctx, self.item, self._v, node.token or b"", self.cas
        if isinstance(item, MutableItem):
            return lambda tid: Put(
                transaction_id=tid,
                token=token,
                v=v,
                k=item.public_key,
                sig=item.signature,
                seq=item.seq,
                cas=cas,
                salt=item.salt,
                **ctx.common(),
            )
        return lambda tid: Put(transaction_id=tid, token=token, v=v, **ctx.common())

    def finished(self) -> DHTEvent:
        return PutFinished(
            self.id, self.target.value, self.accepted, tuple(self.errors), self.result()
        )
