"""The lookup experiment of issue 8: announce in a churned network, then find every announcer.

:func:`lookup_experiment` builds a :class:`~bip_dht.simulator.SimulatedNetwork`, forms it
(through the protocol, or warm), silences a share of the nodes (churn after formation), has
random live nodes announce random info-hashes, then has other random live nodes look each of
them up, many at once, and measures what a user of ``get_peers`` would see:

- whether each lookup found its announcer;
- the virtual time until the announcer's address came (the first PeersFound event carrying
  it: when a client can dial), and the virtual time until the lookup's Finished event (which
  also waits, as libtorrent's does, for the closest nodes that never answer to time out);
- the queries each lookup sent;
- wall-clock costs: forming the network, and lookups per second once it runs.

Virtual times and query counts are a pure function of the parameters (the seed included), so
tests can assert them; wall times depend on the machine and are only reported.
"""

from __future__ import annotations

import gc
import logging
import mmap
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ._errors import LocalProtocolError
from ._node import DHTNode
from ._node_config import DHTConfig
from ._node_events import AnnounceFinished
from ._sim_dht import SimulatedNetwork, SimulationTimeoutError
from ._sim_network import SimulatedNode

_log = logging.getLogger("bip_dht.simulator")

__all__ = ["LookupExperiment", "lookup_experiment"]


@dataclass(frozen=True, slots=True)
class LookupExperiment:
    """What :func:`lookup_experiment` measured.

    Attributes:
        nodes, silent: nodes in the network, and how many went silent after formation.
        formation: ``"protocol"`` or ``"warm"``.
        formation_wall: wall seconds spent forming the network (nodes created and joined).
        formation_datagrams: datagrams the formation sent (0 for a warm one).
        memory_per_node: bytes the formed network held per node: what tracemalloc traced when
            it was tracing, else the growth of the process's resident memory (allocator
            overhead included).
        memory_source: ``"tracemalloc"`` or ``"rss"``.
        announces: info-hashes announced; ``announced_to``: how many nodes accepted each.
        lookups: get_peers lookups made; ``found``: how many of them found their announcer.
        time_to_announcer: per lookup, virtual seconds until the announcer's address came
            (None: it never did).
        durations: per lookup, virtual seconds until its Finished event.
        queries: per lookup, the queries it sent.
        lookup_wall: wall seconds the lookups took (all of them, run ``concurrency`` at a time).
    """

    nodes: int
    silent: int
    formation: str
    formation_wall: float
    formation_datagrams: int
    memory_per_node: float
    memory_source: str
    announces: int
    announced_to: tuple[int, ...]
    lookups: int
    found: int
    time_to_announcer: tuple[float | None, ...]
    durations: tuple[float, ...]
    queries: tuple[int, ...]
    lookup_wall: float

    @property
    def median_time_to_announcer(self) -> float:
        """The median of :attr:`time_to_announcer` (a lookup that never found it counts as
        infinitely slow)."""
        return statistics.median(float("inf") if t is None else t for t in self.time_to_announcer)

    @property
    def median_duration(self) -> float:
        """The median virtual time to a lookup's Finished event."""
        return statistics.median(self.durations)

    @property
    def median_queries(self) -> float:
        """The median number of queries per lookup."""
        return statistics.median(self.queries)

    @property
    def lookups_per_second(self) -> float:
        """Lookups completed per wall-clock second (the whole network simulated meanwhile)."""
        return self.lookups / self.lookup_wall if self.lookup_wall > 0 else float("inf")


def _memory() -> int:
    """Bytes in use: traced by tracemalloc when it runs, else the resident set size (0 where
    neither /proc nor the resource module exists)."""
    if tracemalloc.is_tracing():
        return tracemalloc.get_traced_memory()[0]
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * mmap.PAGESIZE
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource  # noqa: PLC0415 - Unix only
    except ImportError:
        return 0
    # the peak resident size, in KiB on Linux and the BSDs
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _announcing(info_hash: bytes) -> Callable[[DHTNode, float], int]:
    return lambda dht, now: dht.announce(info_hash, now)


def _searching(info_hash: bytes) -> Callable[[DHTNode, float], int]:
    return lambda dht, now: dht.get_peers(info_hash, now)


def lookup_experiment(
    *,
    nodes: int = 10_000,
    latency: tuple[float, float] = (0.02, 0.3),
    loss: float = 0.05,
    silent: float = 0.1,
    announces: int = 100,
    lookups: int = 500,
    concurrency: int = 100,
    formation: Literal["protocol", "warm"] = "warm",
    settle: float = 30.0,
    config: DHTConfig | None = None,
    seed: int = 1,
    timeout: float = 120.0,
) -> LookupExperiment:
    """Run the experiment (see the module docstring) and return its measurements.

    ``nodes`` nodes on links of ``latency`` and ``loss``, formed warm or through the
    protocol (then running ``settle`` virtual seconds: past 900, every bucket has had BEP 5's
    15-minute refresh, as in a network that has run for a while); after formation a ``silent``
    share of them goes silent; ``announces`` random live nodes announce a random info-hash
    each (implied port), all at once; then ``lookups`` lookups, each by a random live node for
    a random one of those hashes (never its own), ``concurrency`` at a time. Every operation
    must end within ``timeout`` virtual seconds of its batch starting.
    """
    if nodes < 2 or announces < 1 or lookups < 0 or concurrency < 1:
        raise LocalProtocolError("need nodes >= 2, announces >= 1, lookups >= 0, concurrency >= 1")
    if formation not in ("protocol", "warm"):
        raise LocalProtocolError(f"formation is 'protocol' or 'warm', got {formation!r}")
    gc.collect()
    memory_before = _memory()
    net = SimulatedNetwork(seed=seed, latency=latency, loss=loss, config=config)
    started = time.perf_counter()
    if formation == "warm":
        net.add_nodes(nodes)
        net.warm()
    else:
        net.form(nodes, settle=settle)
    formation_wall = time.perf_counter() - started
    gc.collect()
    memory_per_node = (_memory() - memory_before) / nodes
    formation_datagrams = net.statistics().sent
    gone = net.silence(silent)
    live = net.live_nodes()
    if len(live) < 2:
        raise LocalProtocolError("fewer than two live nodes are left")
    rng = random.Random(seed ^ 0x5EED)

    announcers: list[tuple[SimulatedNode[DHTNode], bytes]] = [
        (rng.choice(live), rng.randbytes(20)) for _ in range(announces)
    ]
    _log.debug(
        "lookup experiment: %d nodes formed (%s) in %.1f s, %d silenced; %d announces start",
        nodes,
        formation,
        formation_wall,
        len(gone),
        announces,
    )
    stores = [net.start(node, _announcing(h)) for node, h in announcers]
    if not net.wait(stores, timeout=timeout):
        raise SimulationTimeoutError(f"announces still running after {timeout} s")

    found = 0
    times: list[float | None] = []
    durations: list[float] = []
    queries: list[int] = []
    lookup_started = time.perf_counter()
    for first in range(0, lookups, concurrency):
        batch: list[SimulatedNode[DHTNode]] = []
        searches = []
        for _ in range(min(concurrency, lookups - first)):
            announcer, info_hash = rng.choice(announcers)
            searcher = rng.choice(live)
            while searcher is announcer:
                searcher = rng.choice(live)
            searches.append(net.start(searcher, _searching(info_hash)))
            batch.append(announcer)
        if not net.wait(searches, timeout=timeout):
            raise SimulationTimeoutError(f"lookups still running after {timeout} s")
        for announcer, search in zip(batch, searches, strict=True):
            host = announcer.address.host
            found += any(peer.host == host for peer in search.result.peers)
            times.append(search.time_to_peer(host))
            durations.append(search.duration)
            queries.append(search.queries)
    lookup_wall = time.perf_counter() - lookup_started
    _log.debug(
        "lookup experiment: %d of %d lookups found their announcer in %.1f s",
        found,
        lookups,
        lookup_wall,
    )
    return LookupExperiment(
        nodes=nodes,
        silent=len(gone),
        formation=formation,
        formation_wall=formation_wall,
        formation_datagrams=formation_datagrams,
        memory_per_node=memory_per_node,
        memory_source="tracemalloc" if tracemalloc.is_tracing() else "rss",
        announces=announces,
        announced_to=tuple(
            op.finished.announced_to if isinstance(op.finished, AnnounceFinished) else 0
            for op in stores
        ),
        lookups=lookups,
        found=found,
        time_to_announcer=tuple(times),
        durations=tuple(durations),
        queries=tuple(queries),
        lookup_wall=lookup_wall,
    )
