"""A simulated Mainline DHT: thousands of real :class:`~bip_dht.DHTNode` cores on virtual time.

Every node is the real sans-IO core; only the network is made up. :class:`SimulatedNetwork`
carries their datagrams with a fixed latency per pair of nodes drawn from a range, random loss,
and nodes that go silent (churn), on a virtual clock driven by one heap of deliveries and node
timers (the engine is :class:`DatagramNetwork`, which can drive any sans-IO datagram endpoint).
Nothing touches a socket, a thread or trio, and a run is a pure function of its seed and the
calls made, so tests can assert on virtual durations and query counts.

::

    >>> from bip_dht.simulator import SimulatedNetwork
    >>> net = SimulatedNetwork(seed=1, latency=(0.02, 0.3), loss=0.05)
    >>> nodes = net.form(60)                       # joined through the real protocol
    >>> h = bytes(range(20))
    >>> net.announce(nodes[3], h, port=6881).finished.announced_to > 0
    True
    >>> search = net.get_peers(nodes[40], h)
    >>> nodes[3].address.host in {p.host for p in search.result.peers}
    True
    >>> search.time_to_peer(nodes[3].address.host) < 1.0, search.queries < 60
    (True, True)

Forming a network:

- :meth:`SimulatedNetwork.form` grows a network through the protocol: each newcomer bootstraps
  from a few random nodes already in (a ``find_node`` of its own id, as a real client does),
  in waves that double up to ``batch`` newcomers at a time, and then the network runs for
  ``settle`` seconds so the nodes' maintenance pings the newcomers they heard of.
- :meth:`SimulatedNetwork.warm` is the fast alternative for large tests: it hands each node's
  routing table the nodes a long-running network would have taught it (for each bucket around
  its id, ``k`` random nodes of that bucket's range, plus as many for the replacement cache),
  as nodes that have just answered. It costs no datagram, so ten thousand nodes are ready in
  seconds rather than the minutes the protocol join takes in Python.

Operations: :meth:`SimulatedNetwork.start` starts one on a node (any call returning an
operation id) and gives an :class:`Operation` that collects its events; the helpers
(:meth:`~SimulatedNetwork.ping`, :meth:`~SimulatedNetwork.find_node`,
:meth:`~SimulatedNetwork.get_peers`, :meth:`~SimulatedNetwork.announce`,
:meth:`~SimulatedNetwork.bootstrap`, ...) start one and run the network until its Finished
event, returning the :class:`Operation` with the event, the virtual duration and the queries
it sent. Events of operations nobody watches are counted and the most recent kept
(:attr:`SimulatedNetwork.unclaimed`).

The experiment of issue 8 (announce in a churned network, then look every announcer up, and
measure) is :func:`lookup_experiment`; flooding one node with announces from many addresses
(the storage-exhaustion attack) is :func:`announce_flood`. ``benchmarks/dht_sim.py`` runs
both at full size.
"""

from ._sim_dht import Operation, SimulatedNetwork, SimulationTimeoutError
from ._sim_experiment import LookupExperiment, lookup_experiment
from ._sim_flood import FloodReport, announce_flood, memory_budget
from ._sim_network import DatagramEndpoint, DatagramNetwork, NetworkStatistics, SimulatedNode

__all__ = [
    "DatagramEndpoint",
    "DatagramNetwork",
    "FloodReport",
    "LookupExperiment",
    "NetworkStatistics",
    "Operation",
    "SimulatedNetwork",
    "SimulatedNode",
    "SimulationTimeoutError",
    "announce_flood",
    "lookup_experiment",
    "memory_budget",
]
