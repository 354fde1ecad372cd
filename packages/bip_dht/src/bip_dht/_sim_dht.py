"""Real DHT nodes on the simulated network: :class:`SimulatedNetwork`.

The public face, and the documentation, is :mod:`bip_dht.simulator`.
"""

from __future__ import annotations

import bisect
import logging
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from bip_handshake import NodeInfo, PeerAddress

from ._errors import DHTError, LocalProtocolError
from ._lookup import LookupResult
from ._node import DHTNode
from ._node_config import DHTConfig
from ._node_events import (
    AnnounceFinished,
    DHTEvent,
    LookupFinished,
    PeersFound,
    PingFinished,
    PutFinished,
)
from ._node_id import NODE_ID_BITS, NodeId
from ._sim_network import DatagramNetwork, SimulatedNode, collector_paused

# One DEBUG record per formation step, never per node or datagram (the nodes' own cores log
# to bip_dht.node, DEBUG only).
_log = logging.getLogger("bip_dht.simulator")

__all__ = ["Operation", "SimulatedNetwork", "SimulationTimeoutError"]

_FINISHED = (PingFinished, LookupFinished, AnnounceFinished, PutFinished)

DHTSimNode = SimulatedNode[DHTNode]


def _bootstrap_from(addresses: list[PeerAddress]) -> Callable[[DHTNode, float], int]:
    return lambda dht, now: dht.bootstrap(addresses, now)


class SimulationTimeoutError(DHTError):
    """An operation did not finish within the virtual time it was given."""


@dataclass(slots=True)
class Operation:
    """One operation started on a simulated node, and what came of it.

    Attributes:
        node: the node it runs on.
        operation: the id the node gave it.
        started: the virtual time it started.
        events: its events, in order (progress events and the Finished one).
        event_times: the virtual time each of ``events`` came out of the node.
        finished: its Finished event, once it came.
        ended: the virtual time of the Finished event.
        sent_before: the node's datagram count when it started.
        datagrams: every datagram the node sent while the operation ran (its queries, but also
            its answers to others and its maintenance: the node's whole traffic meanwhile).
    """

    node: DHTSimNode
    operation: int
    started: float
    sent_before: int
    events: list[DHTEvent] = field(default_factory=list)
    event_times: list[float] = field(default_factory=list)
    finished: DHTEvent | None = None
    ended: float | None = None
    datagrams: int = 0

    @property
    def done(self) -> bool:
        """Whether the Finished event came."""
        return self.finished is not None

    @property
    def duration(self) -> float:
        """Virtual seconds from the start to the Finished event (an error before it came)."""
        if self.ended is None:
            raise LocalProtocolError("the operation has not finished")
        return self.ended - self.started

    @property
    def result(self) -> LookupResult:
        """The lookup result the Finished event carries (lookups, announces and puts)."""
        finished = self.finished
        if isinstance(finished, LookupFinished | AnnounceFinished | PutFinished):
            return finished.result
        raise LocalProtocolError(f"{finished!r} carries no lookup result")

    @property
    def queries(self) -> int:
        """The queries the operation sent: its lookup's count (plus, for announces and puts,
        one ``announce_peer`` or ``put`` per closest responder that gave a token); 1 for a
        ping."""
        finished = self.finished
        if isinstance(finished, PingFinished):
            return 1
        result = self.result
        written = 0
        if isinstance(finished, AnnounceFinished | PutFinished):
            written = sum(1 for node in result.nodes if node.token is not None)
        return result.queries + written

    @property
    def peers(self) -> tuple[PeerAddress, ...]:
        """Every peer the PeersFound events reported, in order."""
        return tuple(p for e in self.events if isinstance(e, PeersFound) for p in e.peers)

    def time_to_peer(self, host: IPv4Address | IPv6Address | None = None) -> float | None:
        """Virtual seconds from the start to the first PeersFound event (carrying a peer at
        ``host``, when given); None when none came. What a user of ``get_peers`` waits before
        it can dial, whereas :attr:`duration` also counts the lookup's wait for its slowest
        close nodes."""
        for event, when in zip(self.events, self.event_times, strict=True):
            if isinstance(event, PeersFound) and (
                host is None or any(peer.host == host for peer in event.peers)
            ):
                return when - self.started
        return None


class SimulatedNetwork(DatagramNetwork[DHTNode]):
    """Real DHT nodes on a simulated network; see :mod:`bip_dht.simulator`.

    ``seed``, ``latency``, ``loss`` and ``now`` are the network's (:class:`DatagramNetwork`);
    ``config`` is what :meth:`add_node` gives a node unless told otherwise; ``keep_events`` is
    how many unclaimed events :attr:`unclaimed` keeps.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        latency: tuple[float, float] = (0.02, 0.3),
        loss: float = 0.0,
        now: float = 0.0,
        config: DHTConfig | None = None,
        keep_events: int = 1000,
    ) -> None:
        super().__init__(seed=seed, latency=latency, loss=loss, now=now)
        self.config = DHTConfig() if config is None else config
        if not isinstance(self.config, DHTConfig):
            raise LocalProtocolError(f"config is a DHTConfig, got {config!r}")
        self._watched: dict[tuple[int, int], Operation] = {}
        self._finished_count = 0
        self.unclaimed: deque[tuple[DHTSimNode, DHTEvent]] = deque(maxlen=keep_events)
        """The most recent events of operations nobody started through :meth:`start`
        (bootstraps of :meth:`form` included), with their node."""
        self.unclaimed_counts: Counter[str] = Counter()
        """How many unclaimed events came, by event class name."""

    # -- nodes -----------------------------------------------------------------------------

    def add_node(
        self,
        *,
        node_id: NodeId | bytes | None = None,
        address: PeerAddress | None = None,
        config: DHTConfig | None = None,
        state: bytes | None = None,
    ) -> DHTSimNode:
        """A new :class:`~bip_dht.DHTNode` at ``address`` (default: the next free one).

        Its random generator and (unless given) its id come from the network's seed; it knows
        nobody until it bootstraps (:meth:`bootstrap`, :meth:`form`) or is warmed
        (:meth:`warm`), or ``state`` (from ``save_state``) is given.
        """
        if node_id is None and state is None:
            node_id = NodeId.random(self.rng)
        dht = DHTNode(
            rng=random.Random(self.rng.getrandbits(64)),
            now=self.now,
            node_id=node_id,
            config=self.config if config is None else config,
            state=state,
        )
        return self.attach(dht, address)

    def add_nodes(self, count: int, *, config: DHTConfig | None = None) -> list[DHTSimNode]:
        """``count`` new nodes (see :meth:`add_node`)."""
        # many long-lived objects, no garbage: see collector_paused
        with collector_paused():
            return [self.add_node(config=config) for _ in range(count)]

    def live_nodes(self) -> list[DHTSimNode]:
        """The nodes that are not silent."""
        return [node for node in self._nodes if not node.silent]

    def silence(
        self, fraction: float, *, among: Sequence[DHTSimNode] | None = None
    ) -> list[DHTSimNode]:
        """Churn: make a random ``fraction`` of the nodes (or of ``among``) go silent; returns
        them. They keep their place in everyone's routing tables until the others notice."""
        if not 0.0 <= fraction <= 1.0:
            raise LocalProtocolError(f"fraction is in [0, 1], got {fraction}")
        pool = list(self._nodes if among is None else among)
        chosen = self.rng.sample(pool, round(len(pool) * fraction))
        for node in chosen:
            self.set_silent(node)
        return chosen

    # -- formation -------------------------------------------------------------------------

    def form(
        self,
        count: int,
        *,
        contacts: int = 3,
        batch: int = 200,
        settle: float = 30.0,
        timeout: float = 120.0,
    ) -> list[DHTSimNode]:
        """Grow the network by ``count`` nodes joining through the real protocol.

        Each newcomer bootstraps from ``contacts`` random nodes already in the network (the
        first node of an empty network from nobody); newcomers come in waves, each as large as
        the network already is, at most ``batch``, and a wave's bootstraps must all finish
        within ``timeout`` virtual seconds (else :class:`SimulationTimeoutError`). Then the
        network runs ``settle`` seconds more. Returns the new nodes.
        """
        if count < 0 or contacts < 1 or batch < 1:
            raise LocalProtocolError("count >= 0, contacts >= 1 and batch >= 1")
        members = [node for node in self._nodes if not node.silent]
        added: list[DHTSimNode] = []
        if not members and count:
            first = self.add_node()
            members.append(first)
            added.append(first)
        while len(added) < count:
            wave = min(batch, len(members), count - len(added))
            newcomers = self.add_nodes(wave)
            operations = []
            for node in newcomers:
                seeds = self.rng.sample(members, min(contacts, len(members)))
                addresses = [seed.address for seed in seeds]
                operations.append(self.start(node, _bootstrap_from(addresses)))
            if not self.wait(operations, timeout=timeout):
                raise SimulationTimeoutError(f"bootstraps still running after {timeout} s")
            members += newcomers
            added += newcomers
        self.run_for(settle)
        _log.debug(
            "simulated DHT: %d nodes joined through the protocol, %d in the network at %.1f s",
            len(added),
            len(self._nodes),
            self.now,
        )
        return added

    def warm(self, nodes: Sequence[DHTSimNode] | None = None, *, extra: bool = True) -> None:
        """Fill the routing tables of ``nodes`` (default: all) as a long-running network would.

        For every bucket around a node's id, the table is offered ``k`` nodes picked at random
        among the network's nodes in that bucket's id range (all of them when fewer), as nodes
        that have just answered, and with ``extra`` as many again, which land in the
        replacement cache. The closest buckets thus hold the node's true neighbours, the far
        ones a random sample, as a table refreshed for hours ends up. Silent nodes are offered
        too: tables learn of departures only by querying. Sends nothing.
        """
        population = sorted(self._nodes, key=lambda n: n.endpoint.node_id.value)
        ids = [int(n.endpoint.node_id) for n in population]
        infos = [NodeInfo(n.endpoint.node_id.value, n.address) for n in population]
        rng = self.rng
        sample = rng.sample
        bisect_left = bisect.bisect_left
        # the tables' millions of entries all live on: see collector_paused
        with collector_paused():
            for node in self._nodes if nodes is None else nodes:
                dht = node.endpoint
                k = dht.config.k
                want = 2 * k if extra else k
                own = int(dht.node_id)
                chosen: list[NodeInfo] = []
                for depth in range(NODE_ID_BITS):
                    # ids sharing exactly `depth` leading bits with ours: our prefix, next bit
                    # flipped
                    free = NODE_ID_BITS - depth - 1
                    low = ((own >> free) ^ 1) << free
                    start = bisect_left(ids, low)
                    end = bisect_left(ids, low + (1 << free), start)
                    if end - start <= want:
                        chosen += infos[start:end]
                    else:
                        chosen += [infos[i] for i in sorted(sample(range(start, end), want))]
                    # nobody left on our side of the next bit: the deeper buckets are empty
                    side = own >> free << free
                    if bisect_left(ids, side + (1 << free)) - bisect_left(ids, side) <= 1:
                        break
                dht.warm_table(chosen, self.now)
                self._pump(node)
        _log.debug(
            "simulated DHT: warmed the routing tables of %d of %d nodes",
            len(self._nodes) if nodes is None else len(nodes),
            len(self._nodes),
        )

    # -- operations ------------------------------------------------------------------------

    def start(self, node: DHTSimNode, action: Callable[[DHTNode, float], int]) -> Operation:
        """Start an operation on ``node``: ``action(dht, now)`` must return its id.

        The :class:`Operation` returned fills in as the network runs.
        """
        before = node.sent
        op_id = action(node.endpoint, self.now)
        if isinstance(op_id, bool) or not isinstance(op_id, int):
            raise LocalProtocolError(f"the action returned {op_id!r}, not an operation id")
        operation = Operation(node, op_id, self.now, before)
        self._watched[(node.index, op_id)] = operation
        self._pump(node)
        return operation

    def wait(self, operations: Iterable[Operation], *, timeout: float) -> bool:
        """Run until every one of ``operations`` has finished (True) or ``timeout`` virtual
        seconds have passed (False)."""
        pending = [op for op in operations if not op.done]
        seen = self._finished_count

        def all_done() -> bool:
            nonlocal pending, seen
            # look at the operations again only when one (anywhere) has finished since
            if self._finished_count != seen:
                seen = self._finished_count
                pending = [op for op in pending if not op.done]
            return not pending

        return self.run_until(all_done, timeout=timeout)

    def run_operation(
        self,
        node: DHTSimNode,
        action: Callable[[DHTNode, float], int],
        *,
        timeout: float = 120.0,
    ) -> Operation:
        """:meth:`start` an operation and run the network until its Finished event; raises
        :class:`SimulationTimeoutError` when it has not come after ``timeout`` seconds."""
        operation = self.start(node, action)
        if not self.run_until(lambda: operation.finished is not None, timeout=timeout):
            raise SimulationTimeoutError(f"operation {operation.operation} on {node} timed out")
        return operation

    def ping(self, node: DHTSimNode, address: PeerAddress, *, timeout: float = 120.0) -> Operation:
        """``node`` pings ``address``; returns the finished operation."""
        return self.run_operation(node, lambda d, now: d.ping(address, now), timeout=timeout)

    def bootstrap(
        self, node: DHTSimNode, addresses: Iterable[PeerAddress], *, timeout: float = 120.0
    ) -> Operation:
        """``node`` bootstraps from ``addresses``; returns the finished operation."""
        known = list(addresses)
        return self.run_operation(node, lambda d, now: d.bootstrap(known, now), timeout=timeout)

    def find_node(
        self, node: DHTSimNode, target: NodeId | bytes, *, timeout: float = 120.0
    ) -> Operation:
        """``node`` looks ``target`` up; returns the finished operation."""
        return self.run_operation(node, lambda d, now: d.find_node(target, now), timeout=timeout)

    def get_peers(self, node: DHTSimNode, info_hash: bytes, *, timeout: float = 120.0) -> Operation:
        """``node`` searches peers for ``info_hash``; returns the finished operation."""
        return self.run_operation(node, lambda d, now: d.get_peers(info_hash, now), timeout=timeout)

    def announce(
        self,
        node: DHTSimNode,
        info_hash: bytes,
        *,
        port: int | None = None,
        seed: bool = False,
        timeout: float = 120.0,
    ) -> Operation:
        """``node`` announces itself for ``info_hash`` (``port`` None: implied port)."""
        return self.run_operation(
            node, lambda d, now: d.announce(info_hash, now, port=port, seed=seed), timeout=timeout
        )

    def _after_call(self, node: DHTSimNode) -> None:
        next_event = node.endpoint.next_event
        watched = self._watched
        # bounded: the node's event queue is (max_events plus one Finished per operation)
        while (event := next_event()) is not None:
            operation = watched.get((node.index, event.operation))
            if operation is None:
                self.unclaimed.append((node, event))
                self.unclaimed_counts[type(event).__name__] += 1
                continue
            operation.events.append(event)
            operation.event_times.append(self.now)
            if isinstance(event, _FINISHED):
                operation.finished = event
                operation.ended = self.now
                operation.datagrams = node.sent - operation.sent_before
                self._finished_count += 1
                del watched[(node.index, event.operation)]
