"""The storage-exhaustion attack on one DHT node: announces of random hashes from many addresses.

:func:`announce_flood` plays an attacker with ``sources`` source addresses who announces
``count`` random info-hashes to one node, each the way a real client must: a ``get_peers`` for
the hash first (to get a write token bound to the source IP and hash), then ``announce_peer``
with that token. A node that stored everything would grow without bound; a hardened one keeps
its peer store, token state, rate limiter and routing table within their configured caps and
keeps answering honest queries. The caller measures memory around the flood (tracemalloc).

The attacker drives the node's datagram methods directly (no network in between): it is the
node's cost per message and its memory that are under test. Datagrams are built from byte
templates (bencoded keys in sorted order), so the attacker's own cost stays small next to the
node's. Virtual time advances by ``interval`` per announce, and the node's timer runs whenever
it is due, as it would in a shell.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from bip_handshake import PeerAddress

from ._errors import LocalProtocolError
from ._node_config import DHTConfig
from ._sim_network import DatagramEndpoint

__all__ = ["FloodReport", "announce_flood", "memory_budget"]

# 20.0.0.0 onwards: public-looking (not exempt from anything) and never contacted: the
# datagrams only ever reach the node object in this process.
_FIRST_SOURCE = int(IPv4Address("20.0.0.0"))
_MAX_SOURCES = 1 << 24
# The /24s the sources spread over (20.0.0.0 to 21.255.255.0): source i is in /24 number
# i % _NETWORKS, so up to that many sources each have a network of their own.
_NETWORKS = 1 << 17


# What one stored thing may cost at most, for memory_budget: generous next to what the stores
# measure (a few hundred bytes each), so the budget is a ceiling, not a forecast.
_PER_HASH = 1024
_PER_PEER = 512
_PER_HOST = 256
_PER_TABLE_ENTRY = 512
_FIXED = 4 << 20


def memory_budget(config: DHTConfig) -> int:
    """A ceiling, in bytes, on what a node with ``config`` may hold under any announce flood:
    its caps (info-hashes, peers, rate-limited hosts, every routing-table bucket full with its
    replacement cache) times a generous cost per entry, plus 4 MiB for everything else.

    >>> round(memory_budget(DHTConfig()) / 2**20, 1)
    32.6
    """
    table = 160 * 2 * config.k * _PER_TABLE_ENTRY
    return (
        config.max_hashes * _PER_HASH
        + config.max_peers * _PER_PEER
        + config.rate_limited_hosts * _PER_HOST
        + table
        + _FIXED
    )


@dataclass(frozen=True, slots=True)
class FloodReport:
    """What :func:`announce_flood` did and how the node answered.

    Attributes:
        attempts: info-hashes tried: one ``get_peers`` each.
        tokens: ``get_peers`` answers that brought a token, each followed by an
            ``announce_peer`` (the others, rate-limited say, end there).
        accepted: announces answered with a response (stored, or at least acknowledged).
        refused: announces answered with an error (a bad token, say).
        unanswered: announces that got no answer (rate-limited, dropped).
        sources: distinct source addresses this call used.
        started, ended: the virtual time span of the flood.
    """

    attempts: int
    tokens: int
    accepted: int
    refused: int
    unanswered: int
    sources: int
    started: float
    ended: float


def _source(index: int) -> PeerAddress:
    # One /24 per source first: the node bounds what one network may store (an eighth of its
    # hash slots), so sources packed 254 to a /24 would test that bound, not the caps. Host
    # parts 1..128 (2**24 sources over 2**17 networks): never .0 or .255, which read as
    # network and broadcast addresses to some.
    number = _FIRST_SOURCE + ((index % _NETWORKS) << 8) + index // _NETWORKS + 1
    return PeerAddress(IPv4Address(number), 6881 + index % 1000)


def _attacker_id(slot: int) -> bytes:
    # the same id for a source every time it speaks (a real attacker's node keeps its id)
    return hashlib.sha1(slot.to_bytes(4, "big")).digest()


def _token(reply: bytes) -> bytes | None:
    # the reply is our node's own bencoding: find "5:token<len>:<bytes>" without decoding it all
    at = reply.find(b"5:token")
    if at < 0:
        return None
    colon = reply.find(b":", at + 7)
    length_text = reply[at + 7 : colon]
    if colon < 0 or not length_text.isdigit():
        return None
    length = int(length_text)
    return reply[colon + 1 : colon + 1 + length]


def announce_flood(
    node: DatagramEndpoint,
    count: int,
    *,
    rng: random.Random,
    now: float,
    sources: int = 100_000,
    interval: float = 0.0001,
    hashes: Sequence[bytes] | None = None,
    first: int = 0,
) -> FloodReport:
    """Announce ``count`` random info-hashes to ``node`` from ``sources`` addresses in turn.

    Each announce is a ``get_peers`` for a fresh random hash (or, with ``hashes``, for each of
    those info-hashes in turn: a flood of peers into a few swarms, against the per-swarm and
    total peer caps rather than the info-hash cap) followed, when the reply carries a
    token, by an ``announce_peer`` with it, from the same source. ``now`` is the virtual time
    the flood starts at; each announce takes ``interval`` seconds. The node's replies are
    drained and read; anything else it sends (its own maintenance queries to the attacker's
    addresses, which nobody answers) is discarded.

    Announce number ``i`` (counting from ``first``, so that a flood run in chunks goes on
    where the last chunk stopped) comes from source ``i % sources``, whose address and node
    id are fixed, and, with ``hashes``, is for ``hashes[i % len(hashes)]``. The sources'
    addresses spread over 131,072 /24s (a network each for up to that many sources), so the
    node's bound on one network's share of its store does not stop the flood before its caps
    do.
    """
    if count < 0 or first < 0 or not 1 <= sources <= _MAX_SOURCES or interval < 0:
        raise LocalProtocolError("count, first >= 0, sources in 1..2**24 and interval >= 0")
    targets = None if hashes is None else list(hashes)
    if targets is not None and (
        not targets or any(not isinstance(h, bytes) or len(h) != 20 for h in targets)
    ):
        raise LocalProtocolError("hashes is None or a non-empty sequence of 20-byte strings")
    accepted = refused = unanswered = tokens = 0
    used: set[int] = set()
    start = now
    deadline = node.next_deadline()
    for index in range(first, first + count):
        slot = index % sources
        if len(used) < sources:
            used.add(slot)
        source = _source(slot)
        info_hash = rng.randbytes(20) if targets is None else targets[index % len(targets)]
        head = b"d1:ad2:id20:" + _attacker_id(slot) + b"9:info_hash20:" + info_hash
        tid = (index & 0xFFFF).to_bytes(2, "big")
        query = head + b"e1:q9:get_peers1:t2:" + tid + b"1:y1:qe"
        if deadline is not None and deadline <= now:
            node.handle_timer(now)
        node.receive_datagram(query, source, now)
        token = None
        for data, destination in node.datagrams_to_send(now):
            if destination == source and b"1:y1:r" in data:
                token = _token(data)
        if token is not None:
            tokens += 1
            port = b"%d" % (1024 + index % 60000)
            announce = (
                head
                + b"4:porti"
                + port
                + b"e5:token"
                + b"%d:" % len(token)
                + token
                + b"e1:q13:announce_peer1:t2:"
                + tid
                + b"1:y1:qe"
            )
            node.receive_datagram(announce, source, now)
            answer = None
            for data, destination in node.datagrams_to_send(now):
                if destination == source:
                    answer = data
            if answer is None:
                unanswered += 1
            elif b"1:y1:r" in answer:
                accepted += 1
            else:
                refused += 1
        deadline = node.next_deadline()
        now += interval
    return FloodReport(
        attempts=count,
        tokens=tokens,
        accepted=accepted,
        refused=refused,
        unanswered=unanswered,
        sources=len(used),
        started=start,
        ended=now,
    )
