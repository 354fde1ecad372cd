"""The swarm store: counters, peer selection, expiry, and memory bounds under floods."""

from __future__ import annotations

import random
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_handshake import PeerAddress
from bip_utracker._codec import (
    AnnounceEvent,
    AnnounceRequest,
    AnnounceResponse,
    ConnectRequest,
    ConnectResponse,
    ScrapeStats,
    decode_response,
)
from bip_utracker._errors import LocalProtocolError
from bip_utracker._server_core import ServerConfig, TrackerServerCore
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
    # three hosts: promoted out of probation at the second
    assert s.statistics() == SwarmStatistics(
        1, 3, 1, 2, 0, 0, 0, protected_swarms=1, promoted_swarms=1
    )
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
    # The info-hashes are cut from random blocks of 10,000 (one randbytes call each, not one
    # per hash: that call was a sixth of the loop).
    for start in range(0, 1_000_000, 10_000):
        block = randbytes(20 * 10_000)
        hashes = [block[at : at + 20] for at in range(0, len(block), 20)]
        for n, info_hash in enumerate(hashes, start):
            announce(info_hash, peer, 1, STARTED, 50, n * 1e-3)
        if start % 250_000 == 0:
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
        ({"promote_after": 0}, "promote_after"),
        ({"peer_lifetime": 90, "promote_after": 90}, "could never promote"),
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


# -- probation and protection (a segmented LRU) ------------------------------------------------


def net6(n: int, port: int = 6881) -> bytes:
    """An IPv6 peer in /48 number *n*: a site of its own (``v6`` numbers addresses inside one
    /64 of the /48 number 0)."""
    return b"\x20\x01\x0d\xb8" + n.to_bytes(2, "big") + bytes(9) + b"\x01" + port.to_bytes(2, "big")


def subnet6(n: int, port: int = 6881) -> bytes:
    """An IPv6 peer in /64 number *n* of the /48 number 0 (the site of ``v6``)."""
    return (
        b"\x20\x01\x0d\xb8\x00\x00"
        + n.to_bytes(2, "big")
        + bytes(7)
        + b"\x01"
        + port.to_bytes(2, "big")
    )


def h(n: int) -> bytes:
    return n.to_bytes(20, "big")


def protected(s: SwarmStore) -> set[bytes]:
    return set(s.protected_info_hashes())


def promote(s: SwarmStore, info_hash: bytes, now: float) -> None:
    """Two hosts announce *info_hash*: it is promoted, if it is on probation."""
    s.announce_compact(info_hash, v4(1), 1, STARTED, 50, now)
    s.announce_compact(info_hash, v4(2), 1, STARTED, 50, now)


def test_a_flood_of_new_swarms_leaves_the_protected_ones_in_place() -> None:
    """Ten times max_swarms info-hashes, each announced once from its own host, after honest
    swarms were announced by a few hosts each: every honest swarm stays, and answers."""
    s = store(max_swarms=32, peer_lifetime=3000.0)
    honest = [h(n) for n in range(10)]
    for n, info_hash in enumerate(honest):
        s.announce_compact(info_hash, v4(1), 0, STARTED, 50, 0.0)
        s.announce_compact(info_hash, v4(2), 1, STARTED, 50, 0.0)
        s.announce_compact(info_hash, net6(n), 1, STARTED, 50, 0.0)
    assert protected(s) == set(honest)
    generator = random.Random(3)
    for n in range(320):
        peer = v4(1000 + n) if n % 2 else net6(1000 + n)
        s.announce_compact(generator.randbytes(20), peer, 1, STARTED, 50, 1.0 + n)
    stats = s.statistics()
    assert (stats.swarms, stats.protected_swarms) == (32, 10)
    assert stats.evicted_swarms == stats.evicted_probation_swarms == 330 - 32
    assert stats.evicted_protected_swarms == stats.demoted_swarms == 0
    for n, info_hash in enumerate(honest):
        assert s.announce_compact(info_hash, v4(3), 1, STARTED, 50, 400.0) == (1, 3, [v4(1), v4(2)])
        assert s.announce_compact(info_hash, net6(500), 1, STARTED, 50, 400.0) == (
            1,
            4,
            [net6(n)],
        )


def test_probation_alone_is_least_recently_announced_first() -> None:
    s = store(max_swarms=8)
    for n in range(8):
        s.announce_compact(h(n), v4(n), 1, STARTED, 50, float(n))
    # A quick re-announce refreshes its swarm without promoting it.
    s.announce_compact(h(0), v4(0), 1, NONE, 50, 8.0)
    for n in range(8, 11):
        s.announce_compact(h(n), v4(n), 1, STARTED, 50, float(n + 1))
    assert list(s.info_hashes()) == [h(n) for n in (4, 5, 6, 7, 0, 8, 9, 10)]
    stats = s.statistics()
    assert (stats.protected_swarms, stats.promoted_swarms) == (0, 0)
    assert stats.evicted_swarms == stats.evicted_probation_swarms == 3


def test_promotion_by_two_hosts() -> None:
    s = store(max_swarms=8)
    # IPv4: another port of one address is no other host; another address is.
    s.announce_compact(h(1), v4(1), 1, STARTED, 50, 0.0)
    s.announce_compact(h(1), v4(1, port=7000), 1, STARTED, 50, 0.0)
    assert protected(s) == set()
    s.announce_compact(h(1), v4(2), 1, STARTED, 50, 0.0)
    assert protected(s) == {h(1)}
    # IPv6: another address of one /64, or another /64 of one /48, is no other host (a site
    # is handed a /48 or a /56); another /48 is.
    s.announce_compact(h(2), v6(1), 1, STARTED, 50, 0.0)
    s.announce_compact(h(2), v6(2), 1, STARTED, 50, 0.0)
    s.announce_compact(h(2), subnet6(1), 1, STARTED, 50, 0.0)
    s.announce_compact(h(2), subnet6(0xFFFF), 1, STARTED, 50, 0.0)
    assert protected(s) == {h(1)}
    s.announce_compact(h(2), net6(7), 1, STARTED, 50, 0.0)
    assert protected(s) == {h(1), h(2)}
    # One host over both families (a dual-stack client announces over each) is not two.
    s.announce_compact(h(3), v4(1), 1, STARTED, 50, 0.0)
    s.announce_compact(h(3), v6(1), 1, STARTED, 50, 0.0)
    # Two hosts at once: one that left and another that came after are not.
    s.announce_compact(h(4), v4(1), 1, STARTED, 50, 0.0)
    s.announce_compact(h(4), v4(1), 1, STOPPED, 50, 1.0)
    s.announce_compact(h(4), v4(2), 1, STARTED, 50, 2.0)
    assert protected(s) == {h(1), h(2)}
    assert s.statistics().promoted_swarms == 2


def test_promotion_by_a_re_announce() -> None:
    s = store(peer_lifetime=90.0, promote_after=30.0)
    s.announce_compact(HASH, v4(1), 1, STARTED, 50, 0.0)
    s.announce_compact(HASH, v4(1), 1, NONE, 50, 20.0)  # 20 s after: too soon
    assert protected(s) == set()
    s.announce_compact(HASH, v4(1), 1, NONE, 50, 50.0)  # 30 s after its previous one
    assert protected(s) == {HASH}
    # By default, a third of the lifetime (half the interval, for interval plus half of one).
    s = store(peer_lifetime=90.0)
    s.announce_compact(HASH, v4(1), 1, STARTED, 50, 0.0)
    s.announce_compact(HASH, v4(1), 1, NONE, 50, 29.0)
    assert protected(s) == set()
    s.announce_compact(HASH, v4(1), 1, NONE, 50, 59.0)
    assert protected(s) == {HASH}
    # But never more than 15 minutes: clients cap a long interval (bip's Announcer at 30).
    s = store(peer_lifetime=8100.0)
    s.announce_compact(HASH, v4(1), 1, STARTED, 50, 0.0)
    s.announce_compact(HASH, v4(1), 1, NONE, 50, 899.0)
    assert protected(s) == set()
    s.announce_compact(HASH, v4(1), 1, NONE, 50, 1799.0)
    assert protected(s) == {HASH}


def test_a_burst_of_re_announces_does_not_promote() -> None:
    s = store(peer_lifetime=90.0, promote_after=30.0)
    for n in range(1000):  # for 100 s, every 0.1 s: each one restarts the wait
        s.announce_compact(HASH, v4(1), 1, NONE, 50, n * 0.1)
    for port in range(1, 40):  # nor do many ports of one host, recorded or not
        s.announce_compact(HASH, v4(1, port=port), 1, STARTED, 50, 100.0)
    assert s.statistics().unrecorded_peers > 0
    # Scrapes, stopped and port-0 announces are no evidence either.
    s.announce_compact(OTHER, v4(1), 1, STARTED, 50, 100.0)
    s.scrape_counts(OTHER, 140.0)
    s.announce_compact(OTHER, v4(2), 1, STOPPED, 50, 140.0)
    s.announce_compact(OTHER, v4(3, port=0), 1, STARTED, 50, 140.0)
    s.announce_compact(OTHER, v6(3, port=0), 1, NONE, 50, 140.0)
    assert protected(s) == set()
    assert s.statistics().promoted_swarms == 0


def test_a_full_protected_segment_refuses_promotions_while_its_swarms_are_in_use() -> None:
    s = store(max_swarms=10, peer_lifetime=100.0)  # the protected segment holds 9
    for n in range(9):
        promote(s, h(n), float(n))
    # Full, and its least recent swarm (h(0)) has a peer present: the tenth stays on probation.
    promote(s, h(9), 50.0)
    assert protected(s) == {h(n) for n in range(9)}
    stats = s.statistics()
    assert (stats.promoted_swarms, stats.refused_promotions, stats.demoted_swarms) == (9, 1, 0)
    # It has shown it is real: its next announce asks again, and once h(0)'s peers have expired
    # (100 s after its announce), it is promoted and h(0) demoted, not dropped.
    s.announce_compact(h(9), v4(1), 1, NONE, 50, 99.0)
    assert h(9) not in protected(s)
    s.announce_compact(h(9), v4(1), 1, NONE, 50, 100.0)
    assert protected(s) == {h(n) for n in range(1, 10)}
    assert len(s) == 10
    stats = s.statistics()
    assert (stats.promoted_swarms, stats.refused_promotions, stats.demoted_swarms) == (10, 2, 1)
    # A demoted swarm's next announce promotes it again at once when the next least recent is
    # out of use too (h(1), announced at 1.0)...
    s.announce_compact(h(0), v4(3), 1, STARTED, 50, 101.0)
    assert protected(s) == {h(n) for n in (0, *range(2, 10))}
    # ... and not while it is in use (h(2), announced at 2.0): h(1) stays demoted, on probation.
    s.announce_compact(h(1), v4(1), 1, NONE, 50, 101.5)
    assert h(1) not in protected(s)
    # On probation, it is the next new swarm's to evict, and no protected one.
    s.announce_compact(h(99), v4(9), 1, STARTED, 50, 101.6)
    assert h(1) not in s
    assert protected(s) == {h(n) for n in (0, *range(2, 10))}
    stats = s.statistics()
    assert (stats.promoted_swarms, stats.refused_promotions, stats.demoted_swarms) == (11, 3, 2)
    assert (stats.evicted_probation_swarms, stats.evicted_protected_swarms) == (1, 0)


ATTACKER_A, ATTACKER_B = bytes([192, 0, 2, 1, 0, 1]), bytes([192, 0, 2, 2, 0, 1])


def test_two_flooding_hosts_leave_the_honest_swarms_in_place() -> None:
    """A tracker at its defaults scaled down a thousand times (100 swarms, a 180 s interval),
    full of honest one-seeder swarms, each announced once per interval (some late, as after a
    lost packet); then two hosts announce new info-hashes, each from both (two hosts: each is
    promotable), twenty times as fast as the rate limit lets two hosts do at full scale. Every
    promotion would demote an honest swarm in use, so none is made: the flood churns only its
    own swarms, on probation."""
    interval = 180.0
    s = store(max_swarms=100, peer_lifetime=1.5 * interval, promote_after=interval / 2)
    honest = [h(n) for n in range(90)]  # as many as the protected segment holds
    events: list[tuple[float, bytes, bytes]] = []
    lateness = random.Random(4)
    for n, info_hash in enumerate(honest):
        t = n * interval / len(honest)
        for _ in range(6):
            events.append((t, info_hash, v4(n)))
            t += interval + lateness.choice([0.0, 0.0, 0.0, 15.0, 45.0])
    start, end = 2.5 * interval, 4.5 * interval
    for k in range(int((end - start) * 20)):
        t = start + k / 20
        flooded = b"x" + k.to_bytes(19, "big")
        events += [(t, flooded, ATTACKER_A), (t + 0.001, flooded, ATTACKER_B)]
    events.sort()
    checked = start
    for t, info_hash, peer in events:
        if t >= end:
            break
        s.announce_compact(info_hash, peer, 0, NONE, 50, t)
        if t >= checked:  # every 10 s of the flood: every honest swarm present and protected
            assert protected(s) == set(honest)
            checked += 10.0
    stats = s.statistics()
    assert (stats.swarms, stats.protected_swarms, stats.promoted_swarms) == (100, 90, 90)
    assert stats.evicted_probation_swarms == 7_200 - 10
    assert (stats.demoted_swarms, stats.evicted_protected_swarms) == (0, 0)
    assert stats.refused_promotions == 7_200


def test_a_lone_new_swarm_under_a_flood_waits_for_a_second_host() -> None:
    """What a weaker flood does: one host announcing new info-hashes just fast enough to turn
    probation over within ``promote_after`` keeps a lone seeder's new swarm from being promoted
    by its re-announce (it is evicted before, and made again at each announce), but a second
    host joining it promotes it, while the protected segment has room; when that is full of
    swarms in use, the new swarm stays on probation."""
    s = store(max_swarms=20, peer_lifetime=150.0, promote_after=100.0)
    for n in range(10):  # protected, 8 places free; probation holds the other 10 swarms
        promote(s, h(n), 0.0)
    lonely = h(99)
    now = 0.0
    for n in range(60):  # one new info-hash each 5 s: 10 places turned over in 50 s
        now = 5.0 * n
        if n % 24 == 0:  # the seeder announces each 120 s
            s.announce_compact(lonely, v4(50), 0, NONE, 50, now)
        s.announce_compact(h(1000 + n), ATTACKER_A, 1, STARTED, 50, now + 1.0)
        if n % 24 == 12:  # half-way between two announces: gone
            assert lonely not in s
    assert s.statistics().promoted_swarms == 10  # its re-announces never counted
    s.announce_compact(lonely, v4(50), 0, NONE, 50, 300.0)
    seeders, leechers, peers = s.announce_compact(lonely, v4(51), 1, STARTED, 50, 301.0)
    assert (seeders, leechers, peers) == (1, 1, [v4(50)])
    assert lonely in protected(s)
    # With the protected segment full of swarms in use, a second host is not enough.
    for n in range(17):  # the ten announced again, seven more
        promote(s, h(n), 302.0)
    assert len(protected(s)) == 18
    s.announce_compact(h(98), v4(50), 0, NONE, 50, 303.0)
    s.announce_compact(h(98), v4(51), 1, STARTED, 50, 303.0)
    assert h(98) not in protected(s)
    assert s.statistics().refused_promotions == 1


def test_a_demoted_swarm_refused_waits_as_the_newest_on_probation() -> None:
    s = store(max_swarms=40, peer_lifetime=100.0)  # the protected segment holds 36
    for n in range(36):
        promote(s, h(n), float(n))
    promote(s, h(36), 100.0)  # demotes h(0), out of use
    s.announce_compact(h(0), v4(1), 1, NONE, 50, 100.5)  # h(1) is in use: refused
    promote(s, h(37), 101.0)  # demotes h(1), out of use now
    assert len(s) == 38
    # h(0) waits among the new swarms, announced at 100.5; h(1) is the oldest demoted, at 1.0:
    # a new swarm in a full store evicts h(1) (a queue of demoted swarms holding h(0) first
    # would have evicted h(0)).
    for n in range(60, 63):
        s.announce_compact(h(n), v4(9), 1, STARTED, 50, 102.0)
    assert h(1) not in s
    assert h(0) in s
    s.announce_compact(h(0), v4(1), 1, NONE, 50, 102.0)  # asks again: h(2) is out of use
    assert h(0) in protected(s)
    assert h(2) not in protected(s)
    stats = s.statistics()
    assert (stats.promoted_swarms, stats.refused_promotions, stats.demoted_swarms) == (39, 1, 3)


def test_new_and_demoted_swarms_leave_probation_by_last_announce() -> None:
    s = store(max_swarms=20, peer_lifetime=100.0)  # the protected segment holds 18
    s.announce_compact(h(100), v4(9), 1, STARTED, 50, 0.0)  # new, on probation
    for n in range(18):
        promote(s, h(n), 1.0 + n)
    promote(s, h(18), 101.0)  # demotes h(0), announced at 1.0 and out of use since 101.0
    assert len(s) == 20
    assert s.statistics().demoted_swarms == 1
    s.announce_compact(h(200), v4(9), 1, STARTED, 50, 102.0)
    assert h(100) not in s  # announced at 0.0: before h(0)
    assert h(0) in s
    s.announce_compact(h(0), v4(9), 1, STARTED, 50, 103.0)  # back, demoting h(1) (at 2.0)
    s.announce_compact(h(201), v4(9), 1, STARTED, 50, 104.0)
    assert h(1) not in s  # announced at 2.0: before h(200)
    assert h(200) in s
    s.announce_compact(h(202), v4(9), 1, STARTED, 50, 105.0)
    assert h(200) not in s
    assert s.statistics().evicted_protected_swarms == 0


def test_a_store_of_one_swarm_promotes_nothing() -> None:
    s = store(max_swarms=1)
    promote(s, HASH, 0.0)
    s.announce_compact(OTHER, v4(1), 1, STARTED, 50, 1.0)
    assert list(s.info_hashes()) == [OTHER]
    assert s.statistics().promoted_swarms == 0


def test_max_peers_evicts_swarms_on_probation_first() -> None:
    s = store(max_peers=6, max_peers_per_swarm=6)
    promote(s, h(1), 0.0)  # protected, and the least recently announced
    s.announce_compact(h(2), v4(3), 1, STARTED, 50, 1.0)  # on probation
    s.announce_compact(h(3), v4(4), 1, STARTED, 50, 2.0)
    s.announce_compact(h(3), v4(4, port=2), 1, STARTED, 50, 2.0)
    s.announce_compact(h(4), v4(5), 1, STARTED, 50, 3.0)
    assert s.statistics().peers == 6
    s.announce_compact(h(4), v4(5, port=2), 1, STARTED, 50, 4.0)
    assert h(2) not in s  # the least recent on probation, not the protected h(1)
    s.announce_compact(h(4), v4(5, port=3), 1, STARTED, 50, 5.0)
    s.announce_compact(h(4), v4(5, port=4), 1, STARTED, 50, 5.0)
    assert h(3) not in s
    assert list(s.info_hashes()) == [h(1), h(4)]
    stats = s.statistics()
    assert (stats.evicted_probation_swarms, stats.evicted_protected_swarms) == (2, 0)
    # With no other swarm on probation, the protected one goes: never the one announced to.
    s.announce_compact(h(4), v4(5, port=5), 1, STARTED, 50, 6.0)
    s.announce_compact(h(4), v4(5, port=6), 1, STARTED, 50, 6.0)
    assert list(s.info_hashes()) == [h(4)]
    stats = s.statistics()
    assert (stats.evicted_probation_swarms, stats.evicted_protected_swarms) == (2, 1)
    assert (stats.peers, stats.evicted_swarms, stats.evicted_peers) == (6, 3, 5)


def test_expiry_covers_every_segment() -> None:
    s = store(max_swarms=20, peer_lifetime=100.0)  # the protected segment holds 18
    promote(s, h(0), 0.0)  # demoted by the last promotion below
    s.announce_compact(h(100), v4(9), 1, STARTED, 50, 0.5)  # on probation
    for n in range(1, 18):
        promote(s, h(n), float(n))
    s.announce_compact(h(1), v4(3), 1, STARTED, 50, 50.0)  # protected, refreshed
    assert s.expire(99.9) is False
    assert len(s) == 19
    promote(s, h(18), 100.0)  # h(0), quiet since 0.0, is out of use: demoted
    stats = s.statistics()
    assert (stats.swarms, stats.protected_swarms, stats.demoted_swarms) == (20, 18, 1)
    # h(100) (quiet since 0.5) and h(0) (since 0.0) are due, h(2) (since 2.0) not yet.
    assert s.expire(101.0, limit=1) is True
    assert s.expire(101.0, limit=1) is False
    assert h(0) not in s
    assert h(100) not in s
    assert len(s) == 18
    assert s.expire(118.0, limit=10) is True
    assert s.expire(118.0) is False
    assert list(s.info_hashes()) == [h(1), h(18)]
    s.expire(200.0)
    assert len(s) == 0
    stats = s.statistics()
    assert (stats.expired_peers, stats.peers, stats.evicted_swarms) == (40, 0, 0)


_ops = st.tuples(
    st.integers(0, 9),  # 0-6 announce, 7 scrape, 8 expire, 9 expire one
    st.integers(0, 11),  # swarm
    st.integers(0, 4),  # host
    st.integers(0, 3),  # port (0: listens nowhere)
    st.booleans(),  # IPv6
    _events,
    st.floats(0, 25),  # time step
)


@settings(max_examples=80, deadline=None)
@given(st.lists(_ops, max_size=150))
def test_property_segments_keep_their_bounds_order_and_counts(
    steps: list[tuple[int, int, int, int, bool, int, float]],
) -> None:
    """Whatever is announced, scraped and expired: the store, its protected segment and its
    peers stay within their bounds, every segment in last-announce order, and the statistics
    match what is stored."""
    s = store(
        peer_lifetime=60.0,
        promote_after=20.0,
        max_swarms=8,
        max_peers_per_swarm=6,
        max_peers=12,
        max_peers_per_host=2,
    )
    now = 0.0
    for kind, swarm_n, host, port, ipv6, event, step in steps:
        now += step
        info_hash = h(swarm_n)
        protected_before = {key: swarm.last for key, swarm in s._protected.items()}
        demoted_before = set(s._demoted)
        if kind <= 6:
            peer = (net6(host, port) if host % 2 else v6(host, port)) if ipv6 else v4(host, port)
            s.announce_compact(info_hash, peer, 1 if port % 2 else 0, event, 5, now)
        elif kind == 7:
            before = (list(s.info_hashes()), list(s.protected_info_hashes()))
            s.scrape_counts(info_hash, now)
            assert (list(s.info_hashes()), list(s.protected_info_hashes())) == before
        else:
            s.expire(now, limit=1 if kind == 9 else None)
        segments = (s._probation, s._demoted, s._protected)
        for segment in segments:
            times = [swarm.last for swarm in segment.values()]
            assert times == sorted(times)
        for swarm in s._probation.values():  # one network per family, or it was proven
            if not swarm.proven:
                assert len({key[:4] for key in swarm.v4}) <= 1
                assert len({key[:6] for key in swarm.v6}) <= 1
        for swarm in s._demoted.values():
            assert swarm.proven
        stats = s.statistics()
        everything = [key for segment in segments for key in segment]
        assert len(everything) == len(set(everything)) == stats.swarms == len(s) <= 8
        assert stats.protected_swarms == len(s._protected) <= 7
        assert stats.peers == sum(len(s.peers(key)) for key in everything) <= 12
        assert stats.seeders == sum(swarm.seeders for seg in segments for swarm in seg.values())
        assert (
            stats.evicted_swarms == stats.evicted_probation_swarms + stats.evicted_protected_swarms
        )
        assert stats.demoted_swarms + stats.evicted_protected_swarms <= stats.promoted_swarms
        for key in set(s._demoted) - demoted_before:  # only a swarm out of use is demoted
            assert protected_before[key] + 60.0 <= now
        assert stats.promoted_swarms - stats.demoted_swarms >= stats.protected_swarms
    s.expire(now + 60.0)
    assert (len(s), s.statistics().peers) == (0, 0)


# -- the server over the store ------------------------------------------------------------------


def _server_announce(
    core: TrackerServerCore, addr: tuple[str, int], info_hash: bytes, now: float
) -> AnnounceResponse:
    core.receive_datagram(ConnectRequest(1).encode(), addr, now)
    ((packet, _),) = core.datagrams_to_send()
    connected = decode_response(packet)
    assert isinstance(connected, ConnectResponse)
    peer_id = b"-XX0001-" + bytes(12)
    event = AnnounceEvent.STARTED
    request = AnnounceRequest(
        connected.connection_id, 2, info_hash, peer_id, 0, 1, 0, event, 0, 0, -1, 6881
    )
    core.receive_datagram(request.encode(), addr, now)
    ((packet, _),) = core.datagrams_to_send()
    answer = decode_response(packet)
    assert isinstance(answer, AnnounceResponse)
    return answer


def test_server_honest_swarms_survive_a_flood_of_new_info_hashes() -> None:
    config = ServerConfig(rate_limit=None, max_swarms=16, interval=600)
    core = TrackerServerCore(config, secret=bytes(32), rng=random.Random(1))
    honest = [h(n) for n in range(4)]
    for info_hash in honest:
        _server_announce(core, ("10.0.0.1", 1000), info_hash, 0.0)
        _server_announce(core, ("10.0.0.2", 1000), info_hash, 0.0)
    # One seeder alone: its re-announce half an interval later shows it real, not one sooner.
    lonely = h(99)
    _server_announce(core, ("10.0.0.3", 1000), lonely, 0.0)
    _server_announce(core, ("10.0.0.3", 1000), lonely, 299.0)
    assert core.store is not None
    assert lonely not in set(core.store.protected_info_hashes())
    _server_announce(core, ("10.0.0.3", 1000), lonely, 599.0)
    generator = random.Random(2)
    for n in range(160):
        _server_announce(core, (f"10.1.{n // 4}.{n % 4}", 1000), generator.randbytes(20), 600.0)
    assert set(core.store.protected_info_hashes()) == {*honest, lonely}
    for info_hash in honest:
        answer = _server_announce(core, ("10.0.0.4", 1000), info_hash, 601.0)
        assert set(answer.peers) == {PeerAddress.parse(f"10.0.0.{n}:6881") for n in (1, 2)}
    assert _server_announce(core, ("10.0.0.4", 1000), lonely, 601.0).seeders == 0
    assert core.statistics().swarms == 16


def test_server_counts_a_re_announce_of_a_client_capping_a_long_interval() -> None:
    """Told 2 hours, bip's Announcer (and others) announce again after 30 minutes at most:
    the server's ``promote_after`` is half an interval, but at most 15 minutes."""
    core = TrackerServerCore(ServerConfig(interval=7200), secret=bytes(32), rng=random.Random(1))
    assert core.store is not None
    _server_announce(core, ("10.0.0.3", 1000), HASH, 0.0)
    _server_announce(core, ("10.0.0.3", 1000), HASH, 899.0)
    assert set(core.store.protected_info_hashes()) == set()
    _server_announce(core, ("10.0.0.3", 1000), HASH, 1799.0)
    assert set(core.store.protected_info_hashes()) == {HASH}


def test_server_honest_swarms_survive_two_hosts_flooding_within_the_rate_limit() -> None:
    """The server's store full of one-seeder swarms announced once per interval; two hosts,
    within their rate limit, announce new info-hashes from both: none is promoted in place of
    an honest swarm, and every honest swarm still answers with its seeder."""
    config = ServerConfig(max_swarms=20, interval=180, peer_grace=90.0, rate_limit=50.0)
    core = TrackerServerCore(config, secret=bytes(32), rng=random.Random(1))
    assert core.store is not None
    honest = [h(n) for n in range(18)]
    for n, info_hash in enumerate(honest):  # promoted by their second announce
        for k in range(2):
            _server_announce(core, (f"10.0.0.{n}", 1000), info_hash, 10.0 * n + 180.0 * k)
    assert set(core.store.protected_info_hashes()) == set(honest)
    flooded = 0
    for k in range(360):  # 2 new info-hashes a second, each from both hosts, for 180 s
        now = 360.0 + k / 2
        for n, info_hash in enumerate(honest):
            if now == 360.0 + 10.0 * n:
                _server_announce(core, (f"10.0.0.{n}", 1000), info_hash, now)
        flooded_hash = b"x" + k.to_bytes(19, "big")
        _server_announce(core, ("192.0.2.1", 1000), flooded_hash, now)
        _server_announce(core, ("192.0.2.2", 1000), flooded_hash, now)
        flooded += 1
    store = core.store.statistics()
    assert set(core.store.protected_info_hashes()) == set(honest)
    assert (store.refused_promotions, store.demoted_swarms) == (flooded, 0)
    assert core.statistics().rate_limited == 0
    for n, info_hash in enumerate(honest):
        answer = _server_announce(core, ("10.0.1.1", 1000), info_hash, 541.0)
        assert answer.peers == (PeerAddress.parse(f"10.0.0.{n}:6881"),)
