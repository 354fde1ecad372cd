"""ServerStatistics carries the built-in swarm store's counters (segments, promotions,
evictions per segment), through the datagram interface."""

from __future__ import annotations

import random
from collections.abc import Sequence

from bip_utracker._codec import (
    AnnounceEvent,
    AnnounceRequest,
    AnnounceResponse,
    ConnectRequest,
    ConnectResponse,
    ScrapeStats,
    decode_response,
)
from bip_utracker._server_core import Address, ServerConfig, TrackerServerCore
from bip_utracker._swarm import AnnounceAnswer, SwarmStatistics

A: Address = ("10.0.0.1", 50001)
B: Address = ("10.0.0.2", 50002)
# Two swarms at most: a protected segment of one (90% of 2), so one is always on probation.
TINY = ServerConfig(rate_limit=None, max_swarms=2)


def make(config: ServerConfig = TINY, **kwargs: object) -> TrackerServerCore:
    return TrackerServerCore(config, secret=b"s" * 32, rng=random.Random(3), **kwargs)  # type: ignore[arg-type]


def announce(core: TrackerServerCore, addr: Address, info_hash: bytes, now: float = 0.0) -> None:
    core.receive_datagram(ConnectRequest(1).encode(), addr, now)
    ((packet, _),) = core.datagrams_to_send()
    connected = decode_response(packet, family=4)
    assert isinstance(connected, ConnectResponse)
    request = AnnounceRequest(
        connected.connection_id,
        2,
        info_hash,
        b"-XX0001-" + bytes(12),
        0,
        100,
        0,
        AnnounceEvent.STARTED,
        0,
        1,
        -1,
        6881,
    )
    core.receive_datagram(request.encode(), addr, now)
    ((packet, _),) = core.datagrams_to_send()
    assert isinstance(decode_response(packet, family=4), AnnounceResponse)


def test_the_stores_segments_promotions_and_evictions_are_in_the_server_statistics() -> None:
    core = make()
    fresh = core.statistics().store
    assert fresh == SwarmStatistics(0, 0, 0, 0, 0, 0, 0)
    assert fresh is not None
    assert fresh.probation_swarms == 0
    # Two hosts in the first swarm: promoted, and the protected segment (one swarm) is full.
    announce(core, A, b"\x01" * 20, now=1.0)
    announce(core, B, b"\x01" * 20, now=2.0)
    # Two hosts in the second, while the first is in use: its promotion is refused.
    announce(core, A, b"\x02" * 20, now=3.0)
    announce(core, B, b"\x02" * 20, now=4.0)
    # A third swarm: the store is full, the one on probation goes.
    announce(core, A, b"\x03" * 20, now=5.0)
    stats = core.statistics()
    store = stats.store
    assert store is not None
    assert core.store is not None
    assert store == core.store.statistics()  # the store's own snapshot, every counter
    assert (stats.swarms, stats.peers) == (store.swarms, store.peers) == (2, 3)
    assert (store.protected_swarms, store.probation_swarms) == (1, 1)
    assert (store.promoted_swarms, store.refused_promotions, store.demoted_swarms) == (1, 1, 0)
    assert (store.evicted_swarms, store.evicted_probation_swarms) == (1, 1)
    assert store.evicted_protected_swarms == 0
    assert store.evicted_peers == 2  # the two peers of the evicted swarm
    assert fresh.promoted_swarms == 0  # a snapshot: later announces do not change it


def test_a_custom_handler_has_no_store_statistics() -> None:
    class Handler:
        def announce(
            self, request: AnnounceRequest, peer: bytes, num_want: int, now: float
        ) -> AnnounceAnswer:
            return AnnounceAnswer(seeders=0, leechers=1)

        def scrape(self, info_hashes: Sequence[bytes], now: float) -> list[ScrapeStats]:
            return [ScrapeStats(0, 0, 0) for _ in info_hashes]

    core = make(handler=Handler())
    announce(core, A, b"\x01" * 20)
    stats = core.statistics()
    assert stats.store is None
    assert (stats.announces, stats.swarms, stats.peers) == (1, 0, 0)
