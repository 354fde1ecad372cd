"""The network half of the simulator: datagram endpoints on a virtual clock, no sockets, no trio.

:class:`DatagramNetwork` carries datagrams between sans-IO datagram endpoints (anything with
the four methods of DESIGN.md section 3: ``receive_datagram``, ``datagrams_to_send``,
``next_deadline``, ``handle_timer``; a :class:`~bip_dht.DHTNode` is one) on a virtual clock.
One heap holds every future thing: datagram deliveries and each endpoint's next timer, ordered
by time and then by the order they were scheduled, so a run is a pure function of the seed and
the calls made.

The link model, chosen to be cheap enough for ten thousand endpoints in one process:

- **Latency** is one-way and fixed per pair of endpoints: a hash of the seed and the two
  endpoints' indices picks it uniformly in ``latency = (low, high)``. It is the same both ways
  and the same for every datagram, so nothing is reordered on one link, while different links
  differ (a lookup meets fast and slow nodes). No matrix is stored: ten thousand endpoints
  would need a hundred million entries.
- **Loss**: each datagram is dropped with probability ``loss``, drawn from the network's
  seeded generator as it is sent.
- **Silence**: a silent endpoint (:meth:`DatagramNetwork.set_silent`) is a node that went away
  without a word: datagrams to it vanish on arrival, it sends nothing and its timers do not
  fire. When it comes back its timer is read again.
- A datagram to an address no endpoint holds vanishes (counted as ``unroutable``).

Timers use lazy invalidation: after every call into an endpoint its ``next_deadline()`` is read,
and when that differs from the deadline already scheduled a new heap entry is pushed; an entry
that no longer matches the endpoint's scheduled deadline is skipped when popped. Each call
pushes at most one timer entry, so the heap stays within a small factor of the datagrams in
flight.

Addresses are made up: IPv4 ``10.x.y.z`` port 6881 in attachment order by default (private,
hence exempt from BEP 42's id rule, and never loopback: nothing is ever sent anywhere).

Building a large network (attaching ten thousand nodes, filling their routing tables) runs with
Python's cyclic garbage collector paused (:func:`collector_paused`): it allocates millions of
objects that all live on, over which the collector would otherwise make about ten full passes
as the heap grows: a quarter of a warm formation's time.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any, Generic, Protocol, TypeVar

from bip_handshake import PeerAddress

from ._errors import LocalProtocolError

__all__ = [
    "DatagramEndpoint",
    "DatagramNetwork",
    "NetworkStatistics",
    "SimulatedNode",
]


class DatagramEndpoint(Protocol):
    """What the network drives: the datagram core shape of DESIGN.md section 3."""

    def receive_datagram(self, data: bytes, source: PeerAddress, now: float) -> None:
        """Take one datagram that arrived from ``source``."""

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, PeerAddress]]:
        """The datagrams to send now (the endpoint forgets them once returned)."""
        ...

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` should next run (None: nothing scheduled)."""
        ...

    def handle_timer(self, now: float) -> None:
        """Run whatever was due by ``now``."""


E = TypeVar("E", bound=DatagramEndpoint)

_FIRST_ADDRESS = int(IPv4Address("10.0.0.1"))
_LAST_ADDRESS = int(IPv4Address("10.255.255.254"))
DEFAULT_PORT = 6881

_MASK64 = (1 << 64) - 1
# How often in a row an endpoint may ask for its timer at or before the time it just ran
# before the network calls it broken: a timer that never moves forward would spin forever
# at one virtual instant.
_MAX_STUCK_TIMERS = 10_000


def _mix64(value: int) -> int:
    # splitmix64's finaliser: a cheap, well-spread hash of a 64-bit integer
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    value = (value ^ (value >> 27)) * 0x94D049BB133111EB & _MASK64
    return value ^ (value >> 31)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run the block with Python's cyclic garbage collector paused (as it was after).

    For building steps that allocate many objects which all stay alive and form no garbage
    cycles: the collector, triggered by allocation counts, would re-traverse the whole growing
    heap again and again to free nothing. Reference counting frees as usual meanwhile; a
    collector already paused by the caller stays paused. Never wrap running the protocol in
    it: that makes garbage, cycles included, for as long as it runs.

    >>> with collector_paused():
    ...     gc.isenabled()
    False
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _scheduled(node: SimulatedNode[Any]) -> float | None:
    # read through a function: the caller has just cleared the field, and a type checker
    # would otherwise assume the calls in between left it None
    return node._timer_at


@dataclass(frozen=True, slots=True)
class NetworkStatistics:
    """Datagram counters of a :class:`DatagramNetwork` since it was created.

    Attributes:
        sent: datagrams endpoints handed to the network.
        delivered: datagrams an endpoint received.
        lost: datagrams dropped by the random loss.
        to_silent: datagrams that arrived at a silent endpoint (dropped).
        unroutable: datagrams to an address no endpoint holds (dropped).
        bytes_sent: the payload bytes of every datagram sent.
        timers: timer calls made into endpoints.
        in_flight: datagrams sent and not yet arrived (or dropped on arrival).
    """

    sent: int
    delivered: int
    lost: int
    to_silent: int
    unroutable: int
    bytes_sent: int
    timers: int
    in_flight: int


class SimulatedNode(Generic[E]):
    """One endpoint attached to a :class:`DatagramNetwork`, with its address and counters.

    Attributes:
        index: the attachment order (0, 1, ...); latencies are keyed on it.
        address: where other endpoints reach it.
        endpoint: the sans-IO endpoint itself.
        sent: datagrams it sent; ``received``: datagrams delivered to it.
    """

    __slots__ = (
        "_stuck",
        "_timer_at",
        "address",
        "endpoint",
        "index",
        "received",
        "sent",
        "silent",
    )

    def __init__(self, index: int, address: PeerAddress, endpoint: E) -> None:
        self.index = index
        self.address = address
        self.endpoint = endpoint
        self.silent = False
        """True while the endpoint is gone (see :meth:`DatagramNetwork.set_silent`)."""
        self.sent = 0
        self.received = 0
        self._timer_at: float | None = None
        self._stuck = 0

    def __repr__(self) -> str:
        state = " silent" if self.silent else ""
        return f"<SimulatedNode {self.index} {self.address}{state}>"


class DatagramNetwork(Generic[E]):
    """Sans-IO datagram endpoints connected on a virtual clock (see the module docstring).

    ``seed`` drives every random choice (losses, latencies); ``latency`` is the ``(low, high)``
    range of one-way delays in seconds; ``loss`` the probability that a datagram is dropped;
    ``now`` the virtual time the clock starts at.

    >>> net: DatagramNetwork[DatagramEndpoint]
    >>> net = DatagramNetwork(seed=1, latency=(0.02, 0.3), loss=0.05)
    >>> net.now, net.statistics().sent
    (0.0, 0)
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        latency: tuple[float, float] = (0.02, 0.3),
        loss: float = 0.0,
        now: float = 0.0,
    ) -> None:
        low, high = latency
        if not 0 <= low <= high < float("inf"):
            raise LocalProtocolError(f"latency is (low, high) with 0 <= low <= high, got {latency}")
        if not 0.0 <= loss < 1.0:
            raise LocalProtocolError(f"loss is a probability in [0, 1), got {loss}")
        self.seed = seed
        self.latency = (float(low), float(high))
        self.loss = float(loss)
        self.now = float(now)
        self.rng = random.Random(seed)
        """The network's generator: losses, and anything else the simulation draws."""
        self._salt = _mix64(seed & _MASK64 ^ 0x5DEECE66D)
        self._span = float(high) - float(low)
        self._heap: list[tuple[float, int, int, object]] = []
        self._seq = itertools.count()
        self._nodes: list[SimulatedNode[E]] = []
        self._by_address: dict[PeerAddress, SimulatedNode[E]] = {}
        self._sent = self._delivered = self._lost = self._to_silent = 0
        self._unroutable = self._bytes = self._timers = 0

    # -- membership ------------------------------------------------------------------------

    @property
    def nodes(self) -> list[SimulatedNode[E]]:
        """Every attached endpoint, in attachment order (silent ones included)."""
        return list(self._nodes)

    def __len__(self) -> int:
        """How many endpoints are attached."""
        return len(self._nodes)

    def node_at(self, address: PeerAddress) -> SimulatedNode[E] | None:
        """The endpoint reached at ``address``, or None."""
        return self._by_address.get(address)

    def next_address(self) -> PeerAddress:
        """The address :meth:`attach` gives the next endpoint when none is named."""
        number = _FIRST_ADDRESS + len(self._nodes)
        # skip addresses a caller already took by hand (bounded by the number attached)
        while PeerAddress(IPv4Address(number), DEFAULT_PORT) in self._by_address:
            number += 1
        if number > _LAST_ADDRESS:
            raise LocalProtocolError("the simulated 10.0.0.0/8 address space is full")
        return PeerAddress(IPv4Address(number), DEFAULT_PORT)

    def attach(self, endpoint: E, address: PeerAddress | None = None) -> SimulatedNode[E]:
        """Connect ``endpoint`` at ``address`` (default: :meth:`next_address`).

        Its timer is read at once, and anything it already wants to send leaves now.
        """
        if address is None:
            address = self.next_address()
        elif not isinstance(address, PeerAddress):
            raise LocalProtocolError(f"an address is a PeerAddress, got {address!r}")
        if address in self._by_address:
            raise LocalProtocolError(f"{address} is already attached")
        node = SimulatedNode(len(self._nodes), address, endpoint)
        self._nodes.append(node)
        self._by_address[address] = node
        self._pump(node)
        return node

    def set_silent(self, node: SimulatedNode[E], silent: bool = True) -> None:
        """Make ``node`` go away without a word (or come back with ``silent=False``).

        A silent endpoint keeps its state but receives nothing (datagrams to it are dropped on
        arrival, as they would be by a host that is gone), sends nothing and runs no timers.
        Coming back, its timer is read again and runs at once when overdue.
        """
        if node.silent == silent:
            return
        node.silent = silent
        node._timer_at = None
        if not silent:
            self._pump(node)

    # -- link model ------------------------------------------------------------------------

    def latency_between(self, a: SimulatedNode[E], b: SimulatedNode[E]) -> float:
        """The one-way delay between two endpoints (the same both ways, fixed for the run)."""
        return self._latency(a.index, b.index)

    def _latency(self, i: int, j: int) -> float:
        if i > j:
            i, j = j, i
        mixed = _mix64((i << 32 | j) ^ self._salt)
        return self.latency[0] + self._span * (mixed >> 11) * (1.0 / (1 << 53))

    # -- running ---------------------------------------------------------------------------

    def _push(self, when: float, index: int, payload: object) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), index, payload))

    def _pump(self, node: SimulatedNode[E]) -> None:
        """After any call into ``node``: send what it wants to send, re-read its timer."""
        if node.silent:
            self._after_call(node)
            return
        now = self.now
        endpoint = node.endpoint
        out = endpoint.datagrams_to_send(now)
        if out:
            self._send(node, out)
        deadline = endpoint.next_deadline()
        if deadline != node._timer_at:
            node._timer_at = deadline
            if deadline is not None:
                self._push(deadline if deadline > now else now, node.index, deadline)
        self._after_call(node)

    def _after_call(self, node: SimulatedNode[E]) -> None:
        """A hook for subclasses: runs after every call into an endpoint."""

    def _send(self, node: SimulatedNode[E], out: list[tuple[bytes, PeerAddress]]) -> None:
        now = self.now
        by_address = self._by_address
        loss = self.loss
        random_ = self.rng.random
        source = node.address
        for data, destination in out:
            node.sent += 1
            self._sent += 1
            self._bytes += len(data)
            target = by_address.get(destination)
            if target is None:
                self._unroutable += 1
                continue
            if loss and random_() < loss:
                self._lost += 1
                continue
            when = now + self._latency(node.index, target.index)
            heapq.heappush(self._heap, (when, next(self._seq), target.index, (data, source)))

    def call(self, node: SimulatedNode[E], action: Callable[[E, float], object]) -> object:
        """Run ``action(endpoint, now)`` on ``node`` (say, starting an operation), then send
        what it queued and re-read its timer; returns what ``action`` returned.

        A silent node can still be called (its state changes), but sends nothing until it
        comes back.
        """
        result = action(node.endpoint, self.now)
        self._pump(node)
        return result

    def step(self) -> bool:
        """Handle the next scheduled thing (advancing the clock to it); False if none."""
        heap = self._heap
        while heap:
            when, _, index, payload = heapq.heappop(heap)
            if self._handle(when, index, payload):
                return True
        return False

    def _handle(self, when: float, index: int, payload: object) -> bool:
        # True when something ran; stale timer entries and drops only advance the clock
        node = self._nodes[index]
        self.now = max(self.now, when)
        if isinstance(payload, tuple):
            if node.silent:
                self._to_silent += 1
                return True
            self._delivered += 1
            node.received += 1
            data, source = payload
            node.endpoint.receive_datagram(data, source, self.now)
            self._pump(node)
            return True
        if node.silent or payload != node._timer_at:
            return False  # stale: the endpoint rescheduled (or went silent) since
        assert isinstance(payload, float | int)
        node._timer_at = None
        self._timers += 1
        node.endpoint.handle_timer(self.now)
        self._pump(node)
        after = _scheduled(node)
        if after is not None and after <= self.now:
            node._stuck += 1
            if node._stuck > _MAX_STUCK_TIMERS:
                raise LocalProtocolError(
                    f"{node}: the endpoint's timer does not move forward (deadline {after})"
                )
        else:
            node._stuck = 0
        return True

    def run_until(self, condition: Callable[[], bool], *, timeout: float) -> bool:
        """Run until ``condition()`` holds (checked before starting and after each thing
        handled) or ``timeout`` seconds of virtual time have passed; returns whether it held.

        On timeout the clock stands at the deadline, as if the caller waited that long.
        """
        if timeout < 0:
            raise LocalProtocolError(f"timeout is not negative, got {timeout}")
        deadline = self.now + timeout
        if condition():
            return True
        heap = self._heap
        pop = heapq.heappop
        handle = self._handle
        while heap and heap[0][0] <= deadline:
            when, _, index, payload = pop(heap)
            if handle(when, index, payload) and condition():
                return True
        self.now = max(self.now, deadline)
        return False

    def run_for(self, seconds: float) -> None:
        """Run everything scheduled in the next ``seconds`` of virtual time; the clock ends
        exactly ``seconds`` later."""
        if seconds < 0:
            raise LocalProtocolError(f"seconds is not negative, got {seconds}")
        deadline = self.now + seconds
        heap = self._heap
        pop = heapq.heappop
        handle = self._handle
        while heap and heap[0][0] <= deadline:
            when, _, index, payload = pop(heap)
            handle(when, index, payload)
        self.now = max(self.now, deadline)

    def statistics(self) -> NetworkStatistics:
        """A snapshot of the datagram counters."""
        in_flight = sum(1 for entry in self._heap if isinstance(entry[3], tuple))
        return NetworkStatistics(
            sent=self._sent,
            delivered=self._delivered,
            lost=self._lost,
            to_silent=self._to_silent,
            unroutable=self._unroutable,
            bytes_sent=self._bytes,
            timers=self._timers,
            in_flight=in_flight,
        )
