"""DHTStatistics: one snapshot of what a DHT node holds and has seen.

Counters run from the node's creation; sizes are taken when the snapshot is made. Mappings are
read-only views of copies, so a snapshot never changes after it is taken.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from bip_handshake import PeerAddress

from ._node_id import NodeId

__all__ = ["DHTStatistics", "count_capped"]

_K = TypeVar("_K", bound=Hashable)


def count_capped(counter: Counter[_K], key: _K, limit: int, other: _K) -> None:
    """Count ``key`` in ``counter``, or under ``other`` once ``limit`` keys are held and
    ``key`` is not one of them: a peer that makes up a new key each time cannot grow the
    counter."""
    if key not in counter and len(counter) >= limit:
        key = other
    counter[key] += 1


@dataclass(frozen=True, slots=True)
class DHTStatistics:
    """What :meth:`DHTNode.statistics() <bip_dht.DHTNode.statistics>` reports.

    **Routing table, per address family (4, 6)**

    - nodes: nodes in buckets. good_nodes: those that are good (BEP 5).
    - replacements: nodes waiting in the replacement caches.
    - buckets: buckets the table has split into.

    **Identity**

    - node_id: our id now. external_addresses: the external address the responders' votes
      settled on, per family (BEP 42), when they have.

    **Traffic**

    - datagrams_received, datagrams_sent, bytes_received, bytes_sent: on the wire.
    - queries_sent: our queries by method. responses_received: answers matched to them.
    - errors_received: KRPC errors answering our queries, by code (up to
      :data:`~bip_dht.MAX_COUNTED_ERROR_CODES` codes; further ones under
      :data:`~bip_dht.OTHER_ERROR_CODES`).
    - timeouts: our queries that got no answer in time.
    - unreachable: our queries failed at once, before their timeout, because the system
      reported their destination unreachable (an ICMP port, host or network unreachable;
      Linux); not counted in timeouts.
    - unmatched: answers with no outstanding transaction of that id from that address
      (late, duplicated or forged): dropped.
    - id_mismatch: answers from the right address with another node id than the one we
      queried (that node's failure).
    - invalid_answers: answers lacking what the query needs (a find_node reply without
      nodes...), counted as the node's failure.
    - malformed: datagrams that are not KRPC at all: dropped.
    - wrong_family: datagrams from an address family the node does not run: dropped.
    - filtered_ip: datagrams from an address the IP filter blocks (dropped unread), and
      queries of ours it kept from being sent (each failed at once).
    - queries_received: queries others sent us, by method (unknown methods as sent, up to
      :data:`~bip_dht.MAX_COUNTED_METHODS` names; further ones under
      :data:`~bip_dht.OTHER_METHODS`).
    - errors_sent: our error replies, by code.
    - rate_limited: queries dropped because their source IP was over its rate.
    - read_only_ignored: queries not answered because we are read-only (BEP 43).
    - oversized_dropped: replies not sent because they would exceed
      :data:`~bip_dht.MAX_REPLY_SIZE` even without nodes (a query with a huge transaction id).

    **Work and bounds**

    - outstanding: our queries awaiting an answer. lookups: operations running.
    - queued: operations waiting for a slot. refused: operations that ended at once because
      the queue was full. events_dropped: progress events dropped on a full event queue.
    - outbox_dropped: datagrams dropped on a full outbox.
    - send_errors: datagrams the operating system refused to send (the trio shell's count).
    - other_datagrams: datagrams that cannot be KRPC (first byte not ``d``) handed to
      ``open_dht(other_datagrams=...)`` (uTP sharing the socket); other_datagram_errors: how
      many of those the callback raised on.
    - icmp_errors: error reports read from the sockets' error queues (Linux, where the trio
      shell turns ``IP_RECVERR`` on), whether or not they failed a query (those that did are
      ``unreachable``; the others were about our replies, another protocol's datagrams or
      queries already over, and are ignored); icmp_malformed: reports that could not be
      parsed (ignored).

    **Storage**

    - info_hashes, peers: what others announced to us. items: BEP 44 items we store.
    """

    node_id: NodeId
    nodes: Mapping[int, int] = field(default_factory=dict)
    good_nodes: Mapping[int, int] = field(default_factory=dict)
    replacements: Mapping[int, int] = field(default_factory=dict)
    buckets: Mapping[int, int] = field(default_factory=dict)
    external_addresses: Mapping[int, PeerAddress] = field(default_factory=dict)
    datagrams_received: int = 0
    datagrams_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    queries_sent: Mapping[bytes, int] = field(default_factory=dict)
    responses_received: int = 0
    errors_received: Mapping[int, int] = field(default_factory=dict)
    timeouts: int = 0
    unreachable: int = 0
    unmatched: int = 0
    id_mismatch: int = 0
    invalid_answers: int = 0
    malformed: int = 0
    wrong_family: int = 0
    filtered_ip: int = 0
    queries_received: Mapping[bytes, int] = field(default_factory=dict)
    errors_sent: Mapping[int, int] = field(default_factory=dict)
    rate_limited: int = 0
    read_only_ignored: int = 0
    oversized_dropped: int = 0
    outstanding: int = 0
    lookups: int = 0
    queued: int = 0
    refused: int = 0
    events_dropped: int = 0
    outbox_dropped: int = 0
    send_errors: int = 0
    other_datagrams: int = 0
    other_datagram_errors: int = 0
    icmp_errors: int = 0
    icmp_malformed: int = 0
    info_hashes: int = 0
    peers: int = 0
    items: int = 0

    @property
    def table_size(self) -> int:
        """Nodes in buckets, all families together."""
        return sum(self.nodes.values())
