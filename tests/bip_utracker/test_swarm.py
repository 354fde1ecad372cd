"""The swarm store: counters, peer selection, expiry, and memory bounds under floods."""

from __future__ import annotations

import random
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_handshake import PeerAddress
from bip_utracker._codec import AnnounceEvent, AnnounceRequest, ScrapeStats
from bip_utracker._errors import LocalProtocolError
from bip_utracker._swarm import (
    DEFAULT_PEER_LIFETIME,
    AnnounceAnswer,
    SwarmStatistics,
    SwarmStore,
)

HASH = b"\x11" * 20
OTHER = b"\x22" * 20
NONE, COMPLETED, STARTED, STOPPED = 0, 1, 2, 3


def v4(n: int, port: int = 6881) -> bytes:
    return bytes([10, (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF]) + port.to_bytes(2, "big")


def v6(n: int, port: int = 6881) -> bytes:
    return b"\x20\x01\x0d\xb8" + bytes(8) + n.to_bytes(4, "big") + port.to_bytes(2, "big")


def store(**kwargs: object) -> SwarmStore:
    return SwarmStore(rng=random.Random(7), **kwargs)  # type: ignore[arg-type]


def test_counters_and_peers() -> None:
    s = store()
    assert s.announce_compact(HASH, v4(1), 0, STARTED, 50, 0.0) == (1, 0, [])
    seeders, leechers, peers = s.announce_compact(HASH, v4(2), 100, STARTED, 50, 1.0)
    assert (seeders, leechers, peers) == (1, 1, [v4(1)])
    seeders, leechers, peers = s.announce_compact(HASH, v4(3), 100, NONE, 50, 2.0)
    assert (seeders, leechers, sorted(peers)) == (1, 2, [v4(1), v4(2)])
    assert s.scrape_counts(HASH, 3.0) == (1, 0, 2)
    assert s.scrape_counts(OTHER, 3.0) == (0, 0, 0)
    assert s.statistics() == SwarmStatistics(1, 3, 1, 2, 0, 0, 0)
    assert len(s) == 1
    assert HASH in s
    assert OTHER not in s
    assert list(s.info_hashes()) == [HASH]
    assert s.peers(HASH) == tuple(PeerAddress.from_compact(v4(n)) for n in (1, 2, 3))
    assert s.peers(OTHER) == ()


def test_the_announcer_is_never_returned_to_itself() -> None:
    s = store()
    for n in range(200):
        s.announce_compact(HASH, v4(n), 1, STARTED, 50, 0.0)
    for n in range(200):
        for num_want in (0, 1, 5, 50, 198, 199, 200, 500):
            _, _, peers = s.announce_compact(HASH, v4(n), 1, NONE, num_want, 1.0)
            assert v4(n) not in peers
            assert len(peers) == min(num_want, 199)
            assert len(set(peers)) == len(peers)


def test_selection_is_random_and_covers_the_swarm() -> None:
    s = store()
    for n in range(100):
        s.announce_compact(HASH, v4(n), 1, STARTED, 0, 0.0)
    seen: set[bytes] = set()
    for _ in range(200):
        seen.update(s.announce_compact(HASH, v4(0), 1, NONE, 10, 1.0)[2])
    assert seen == {v4(n) for n in range(1, 100)}


def test_peers_of_the_announcers_family_only() -> None:
    s = store()
    s.announce_compact(HASH, v4(1), 1, STARTED, 50, 0.0)
    s.announce_compact(HASH, v6(1), 0, STARTED, 50, 0.0)
    s.announce_compact(HASH, v6(2), 1, STARTED, 50, 0.0)
    assert s.announce_compact(HASH, v4(2), 1, STARTED, 50, 1.0) == (1, 3, [v4(1)])
    assert s.announce_compact(HASH, v6(3), 1, STARTED, 50, 1.0)[2] in (
        [v6(1), v6(2)],
        [v6(2), v6(1)],
    )
    assert s.scrape_counts(HASH, 1.0) == (1, 0, 4)  # counters cover both families


def test_stopped_removes_the_peer() -> None:
    s = store()
    s.announce_compact(HASH, v4(1), 0, STARTED, 50, 0.0)
    s.announce_compact(HASH, v4(2), 5, STARTED, 50, 0.0)
    assert s.announce_compact(HASH, v4(1), 0, STOPPED, 50, 1.0) == (0, 1, [])
    assert s.announce_compact(HASH, v4(3), 5, STARTED, 50, 1.0) == (0, 2, [v4(2)])
    assert s.announce_compact(HASH, v4(1), 0, STOPPED, 50, 1.0) == (0, 2, [])  # twice: no-op
    # stopped for an unknown swarm creates nothing
    assert s.announce_compact(OTHER, v4(1), 0, STOPPED, 50, 1.0) == (0, 0, [])
    assert OTHER not in s
    assert s.statistics().peers == 2


def test_completed_is_counted_once_per_peer() -> None:
    s = store()
    s.announce_compact(HASH, v4(1), 10, STARTED, 50, 0.0)
    s.announce_compact(HASH, v4(1), 0, COMPLETED, 50, 1.0)
    s.announce_compact(HASH, v4(1), 0, COMPLETED, 50, 2.0)  # a retransmission
    s.announce_compact(HASH, v4(2), 0, COMPLETED, 50, 2.0)
    assert s.scrape_counts(HASH, 3.0) == (2, 2, 0)
    # a peer that leaves and comes back is a new peer
    s.announce_compact(HASH, v4(1), 0, STOPPED, 50, 4.0)
    s.announce_compact(HASH, v4(1), 0, COMPLETED, 50, 5.0)
    assert s.scrape_counts(HASH, 5.0) == (2, 3, 0)


def test_leecher_becomes_seeder_and_back() -> None:
    s = store()
    s.announce_compact(HASH, v4(1), 10, STARTED, 50, 0.0)
    assert s.announce_compact(HASH, v4(1), 0, NONE, 50, 1.0)[:2] == (1, 0)
    assert s.announce_compact(HASH, v4(1), 5, NONE, 50, 2.0)[:2] == (0, 1)
    assert s.statistics().seeders == 0


def test_peers_expire_after_their_lifetime() -> None:
    s = store(peer_lifetime=100.0)
    s.announce_compact(HASH, v4(1), 0, STARTED, 50, 0.0)
    s.announce_compact(HASH, v4(2), 5, STARTED, 50, 50.0)
    assert s.scrape_counts(HASH, 99.9) == (1, 0, 1)
    assert s.scrape_counts(HASH, 100.0) == (0, 0, 1)  # the seeder went quiet
    assert s.announce_compact(HASH, v4(3), 5, STARTED, 50, 120.0) == (0, 2, [v4(2)])
    # re-announcing keeps a peer
    s.announce_compact(HASH, v4(2), 5, NONE, 50, 140.0)
    assert s.announce_compact(HASH, v4(3), 5, NONE, 50, 230.0) == (0, 2, [v4(2)])
    stats = s.statistics()
    assert stats.expired_peers == 2  # v4(1) at 100, and v4(3) (quiet since 120) at 220
    assert stats.peers == 2


def test_expire_drops_silent_swarms_in_bounded_steps() -> None:
    s = store(peer_lifetime=10.0)
    for n in range(5):
        s.announce_compact(bytes([n]) * 20, v4(n), 1, STARTED, 50, float(n))
    s.announce_compact(HASH, v4(9), 1, STARTED, 50, 20.0)
    assert s.expire(12.0) is False  # swarms 0, 1, 2 went quiet at 10, 11, 12
    assert len(s) == 3
    assert s.expire(100.0, limit=2) is True
    assert len(s) == 1
    assert s.expire(100.0, limit=2) is False
    assert len(s) == 0
    assert s.statistics() == SwarmStatistics(0, 0, 0, 0, 0, 0, 6)


def test_emptied_swarm_goes_at_expiry() -> None:
    s = store(peer_lifetime=10.0)
    s.announce_compact(HASH, v4(1), 1, STARTED, 50, 0.0)
    s.announce_compact(HASH, v4(1), 1, STOPPED, 50, 1.0)
    assert HASH in s
    s.expire(11.0)
    assert HASH not in s


def test_too_many_swarms_evict_the_least_recently_announced() -> None:
    s = store(max_swarms=3)
    for n in range(3):
        s.announce_compact(bytes([n]) * 20, v4(n), 1, STARTED, 50, float(n))
    s.announce_compact(bytes([0]) * 20, v4(0), 1, NONE, 50, 3.0)  # swarm 0 is fresh again
    s.announce_compact(HASH, v4(9), 1, STARTED, 50, 4.0)
    assert set(s.info_hashes()) == {bytes([0]) * 20, bytes([2]) * 20, HASH}
    stats = s.statistics()
    assert (stats.swarms, stats.peers, stats.evicted_swarms, stats.evicted_peers) == (3, 3, 1, 1)


def test_full_swarm_evicts_its_least_recently_announced_peer() -> None:
    s = store(max_peers_per_swarm=3)
    for n in range(3):
        s.announce_compact(HASH, v4(n), 0 if n == 0 else 1, STARTED, 50, float(n))
    s.announce_compact(HASH, v4(0), 0, NONE, 50, 3.0)
    assert s.announce_compact(HASH, v4(3), 1, STARTED, 50, 4.0)[:2] == (1, 2)
    assert s.peers(HASH) == tuple(PeerAddress.from_compact(v4(n)) for n in (2, 0, 3))
    assert s.statistics().evicted_peers == 1


def test_evicting_a_seeder_keeps_the_counters_right() -> None:
    s = store(max_peers_per_swarm=2)
    s.announce_compact(HASH, v4(1), 0, STARTED, 50, 0.0)
    s.announce_compact(HASH, v4(2), 0, STARTED, 50, 1.0)
    assert s.announce_compact(HASH, v4(3), 5, STARTED, 50, 2.0)[:2] == (1, 1)
    stats = s.statistics()
    assert (stats.seeders, stats.leechers, stats.evicted_peers) == (1, 1, 1)


def test_total_peer_bound_evicts_old_swarms_then_old_peers() -> None:
    s = store(max_peers=4, max_peers_per_swarm=4)
    s.announce_compact(OTHER, v4(1), 1, STARTED, 50, 0.0)
    for n in range(3):
        s.announce_compact(HASH, v4(n), 1, STARTED, 50, 1.0)
    s.announce_compact(HASH, v4(3), 1, STARTED, 50, 2.0)  # OTHER goes
    assert OTHER not in s
    s.announce_compact(HASH, v4(4), 1, STARTED, 50, 3.0)  # alone: its oldest peer goes
    assert len(s.peers(HASH)) == 4
    assert PeerAddress.from_compact(v4(0)) not in s.peers(HASH)
    stats = s.statistics()
    assert (stats.peers, stats.evicted_swarms, stats.evicted_peers) == (4, 1, 2)


def test_a_million_random_info_hashes_stay_within_the_bounds() -> None:
    s = store(max_swarms=2_000, max_peers_per_swarm=50, max_peers=3_000)
    generator = random.Random(1)
    randbytes = generator.randbytes
    announce = s.announce_compact
    peer = v4(1)
    for n in range(1_000_000):
        announce(randbytes(20), peer, 1, STARTED, 50, n * 1e-3)
        if n % 250_000 == 0:
            assert len(s) <= 2_000
    stats = s.statistics()
    assert stats.swarms == 2_000
    assert stats.peers == 2_000
    assert stats.evicted_swarms == 998_000
    # What stays allocated is bounded too: once a flood has replaced every swarm, more of it
    # leaves the traced memory where it was.
    tracemalloc.start()
    try:
        for n in range(10_000):
            announce(randbytes(20), peer, 1, STARTED, 50, 1e3 + n * 1e-3)
        settled = tracemalloc.get_traced_memory()[0]
        for n in range(40_000):
            announce(randbytes(20), peer, 1, STARTED, 50, 2e3 + n * 1e-3)
        grown = tracemalloc.get_traced_memory()[0] - settled
    finally:
        tracemalloc.stop()
    assert settled < 2_000 * 2_000, settled  # under 2 kB per swarm of one peer
    assert grown < 100_000, grown
    # Many peers in one swarm: bounded by the per-swarm limit.
    for n in range(20_000):
        announce(HASH, v4(n, port=n & 0xFFFF), 1, STARTED, 50, 2e3)
    assert s.scrape_counts(HASH, 2e3) == (0, 0, 50)
    assert s.statistics().peers <= 3_000


def test_handler_interface() -> None:
    s = store()
    request = AnnounceRequest(
        1, 2, HASH, b"p" * 20, 0, 0, 0, AnnounceEvent.COMPLETED, 0, 0, -1, 6881
    )
    assert s.announce(request, v4(1), 50, 0.0) == AnnounceAnswer(1, 0, ())
    request = AnnounceRequest(1, 2, HASH, b"q" * 20, 0, 9, 0, AnnounceEvent.NONE, 0, 0, -1, 6881)
    assert s.announce(request, v4(2), 50, 0.0) == AnnounceAnswer(1, 1, (v4(1),))
    assert s.scrape([HASH, OTHER], 1.0) == (ScrapeStats(1, 1, 1), ScrapeStats(0, 0, 0))
    assert s.peer_lifetime == DEFAULT_PEER_LIFETIME


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"peer_lifetime": 0}, "peer_lifetime"),
        ({"peer_lifetime": float("nan")}, "peer_lifetime"),
        ({"peer_lifetime": True}, "peer_lifetime"),
        ({"max_swarms": 0}, "max_swarms"),
        ({"max_peers_per_swarm": 1.5}, "max_peers_per_swarm"),
        ({"max_peers": True}, "max_peers"),
        ({"max_peers": 10, "max_peers_per_swarm": 11}, "less than"),
    ],
)
def test_bad_limits(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        SwarmStore(**kwargs)  # type: ignore[arg-type]


_events = st.sampled_from([NONE, COMPLETED, STARTED, STOPPED])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),  # swarm
            st.integers(0, 12),  # peer
            st.booleans(),  # IPv6
            st.booleans(),  # seeder
            _events,
            st.integers(-1, 20),  # num_want
            st.floats(0, 30),  # time step
        ),
        max_size=120,
    )
)
def test_property_store_matches_a_model(
    steps: list[tuple[int, int, bool, bool, int, int, float]],
) -> None:
    """Against a plain dict model: counts, bounds, and answers always agree."""
    lifetime = 40.0
    s = store(peer_lifetime=lifetime, max_swarms=3, max_peers_per_swarm=5, max_peers=8)
    now = 0.0
    for swarm_n, peer_n, ipv6, seeder, event, num_want, step in steps:
        now += step
        info_hash = bytes([swarm_n]) * 20
        peer = v6(peer_n) if ipv6 else v4(peer_n)
        seeders, leechers, peers = s.announce_compact(
            info_hash, peer, 0 if seeder else 1, event, num_want, now
        )
        assert peer not in peers
        assert all(len(p) == len(peer) for p in peers)
        assert len(peers) <= max(num_want, 0)
        assert len(set(peers)) == len(peers)
        assert seeders >= 0
        assert leechers >= 0
        present = {p.to_compact() for p in s.peers(info_hash)}
        assert set(peers) <= present
        if event == STOPPED:
            assert peer not in present
            assert peers == []
        else:
            assert peer in present
        stats = s.statistics()
        assert stats.swarms <= 3
        assert stats.peers <= 8
        assert stats.peers == sum(len(s.peers(h)) for h in s.info_hashes())
        assert 0 <= stats.seeders <= stats.peers
    s.expire(now + lifetime)
    assert s.statistics().peers == 0
    assert len(s) == 0
