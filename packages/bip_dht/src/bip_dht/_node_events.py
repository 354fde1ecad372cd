"""What a DHT node tells its user: one frozen event per step of an operation.

Every operation the caller starts on :class:`~bip_dht._node.DHTNode` (ping, bootstrap,
find_node, get_peers, announce, get, put, sample_infohashes) returns an operation id and ends
with exactly one *Finished* event carrying that id, whether it succeeded, failed, was refused
for lack of room, or was cancelled: the caller never waits forever. A refused one (every
lookup slot taken and ``max_queued`` operations already waiting, or too many pings waiting)
says so with ``refused=True``: it never ran, and is worth trying again soon, where one that
ran and found nothing is not. Lookups that find things
report them as they arrive (:class:`PeersFound`, :class:`SamplesFound`), so a client can dial
the first peers while the lookup goes on. :class:`NodeIdChanged` (operation 0) is the node's
own news: BEP 42 gave it a new id.

>>> PingFinished(operation=1, node=None)
PingFinished(operation=1, node=None, refused=False)
"""

from __future__ import annotations

from dataclasses import dataclass

from bip_handshake import NodeInfo, PeerAddress

from ._lookup import LookupResult
from ._node_id import NodeId

__all__ = [
    "AnnounceFinished",
    "DHTEvent",
    "LookupFinished",
    "NodeIdChanged",
    "PeersFound",
    "PingFinished",
    "PutFinished",
    "SamplesFound",
]


@dataclass(frozen=True, slots=True)
class DHTEvent:
    """Base of every node event; ``operation`` is the id the starting call returned (0 for
    the node's own events)."""

    operation: int


@dataclass(frozen=True, slots=True)
class PeersFound(DHTEvent):
    """A get_peers (or announce) lookup learned peers: only those new to this operation."""

    info_hash: bytes
    peers: tuple[PeerAddress, ...]


@dataclass(frozen=True, slots=True)
class SamplesFound(DHTEvent):
    """A BEP 51 answer: ``node`` stores ``num`` info-hashes, of which ``samples`` is a random
    sample; it asks not to be queried again for ``interval`` seconds (0 when it did not say)."""

    node: NodeInfo
    samples: tuple[bytes, ...]
    num: int
    interval: int


@dataclass(frozen=True, slots=True)
class PingFinished(DHTEvent):
    """A ping ended: the node that answered (with the id it gave), or None (timeout, error,
    cancelled)."""

    node: NodeInfo | None
    refused: bool = False
    """The node refused to start the operation (see the module docstring): it never ran."""


@dataclass(frozen=True, slots=True)
class LookupFinished(DHTEvent):
    """A lookup ended. ``kind`` is ``find_node``, ``get_peers``, ``get``,
    ``sample_infohashes`` or ``bootstrap``; ``result`` holds the closest responders (with
    tokens), every peer found and the best BEP 44 item. A BEP 33 scrape (``get_peers`` with
    ``scrape=True``) also gives the estimated numbers of seeds and of downloaders, from the
    union of the closest responders' bloom filters (None when none sent filters)."""

    kind: str
    target: bytes
    result: LookupResult
    seeds_estimate: float | None = None
    peers_estimate: float | None = None
    refused: bool = False
    """The node refused to start the operation (see the module docstring): it never ran."""


@dataclass(frozen=True, slots=True)
class AnnounceFinished(DHTEvent):
    """An announce ended: ``announced_to`` of the closest responders accepted our
    ``announce_peer``; ``result`` is the get_peers lookup that found them."""

    info_hash: bytes
    announced_to: int
    result: LookupResult
    refused: bool = False
    """The node refused to start the operation (see the module docstring): it never ran."""


@dataclass(frozen=True, slots=True)
class PutFinished(DHTEvent):
    """A BEP 44 put ended: ``stored_at`` nodes accepted it; ``errors`` lists the nodes that
    refused it with the KRPC error code they gave (301 CAS mismatch, 302 sequence too low...);
    ``result`` is the get lookup that found the nodes (its ``item`` is what was there)."""

    target: bytes
    stored_at: int
    errors: tuple[tuple[NodeInfo, int], ...]
    result: LookupResult
    refused: bool = False
    """The node refused to start the operation (see the module docstring): it never ran."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeIdChanged(DHTEvent):
    """Our node id changed (BEP 42: the external address the network reports does not match
    it). The routing tables re-filed their nodes around ``new``, each keeping its state."""

    operation: int = 0
    old: NodeId
    new: NodeId
