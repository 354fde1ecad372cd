"""The announced-peer store: expiry, seeds, caps and eviction, sampling, scrapes, floods."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_bencode import encode
from bip_dht._bloom import ScrapeBloom
from bip_dht._errors import LocalProtocolError
from bip_dht._peer_store import DEFAULT_PEER_TTL, MAX_PORTS_PER_IP, PeerStore, max_values
from bip_handshake import PeerAddress, encode_compact_peers

H1, H2, H3 = b"\x01" * 20, b"\x02" * 20, b"\x03" * 20


def _v4(index: int, port: int = 6881) -> PeerAddress:
    return PeerAddress(IPv4Address(0x0A000000 + index), port)


def _v6(index: int, port: int = 6881) -> PeerAddress:
    return PeerAddress(IPv6Address(0x20010DB8 << 96 | index), port)


def _check_invariants(store: PeerStore) -> None:
    """The private indexes agree with the swarms (white-box, for the property tests)."""
    swarms = store._swarms
    assert sorted(store._hash_list) == sorted(swarms)
    for position, info_hash in enumerate(store._hash_list):
        assert swarms[info_hash].index == position
    assert all(swarm.peers for swarm in swarms.values())
    assert len(store) == sum(len(swarm.peers) for swarm in swarms.values())
    grouped = {h: count for count, group in store._by_count.items() for h in group}
    assert grouped == {h: len(swarm.peers) for h, swarm in swarms.items()}
    assert all(store._by_count.values())
    assert store._top >= max(store._by_count, default=0)
    assert store.hash_count <= store.max_hashes
    assert len(store) <= store.max_peers
    for swarm in swarms.values():
        # keyed by compact peer: 4 or 16 bytes of IP, 2 of port
        v6 = sum(1 for key in swarm.peers if len(key) == 18)
        assert swarm.v6 == v6
        # each IP's keys, in the swarm's announce order (its first is its oldest entry)
        ips: dict[bytes, list[bytes]] = {}
        for key in swarm.peers:
            ips.setdefault(key[:-2], []).append(key)
        assert swarm.ips == ips
        assert max(map(len, ips.values())) <= MAX_PORTS_PER_IP
        assert v6 <= store.max_peers_per_hash
        assert len(swarm.peers) - v6 <= store.max_peers_per_hash


def test_announce_then_get_peers() -> None:
    store = PeerStore()
    rng = random.Random(0)
    assert store.announce(H1, _v4(1), seed=False, now=0.0)
    assert store.announce(H1, _v4(2), seed=True, now=0.0)
    assert store.announce(H1, _v6(3), seed=False, now=0.0)
    assert sorted(map(str, store.get_peers(H1, 4, rng, now=1.0))) == [
        "10.0.0.1:6881",
        "10.0.0.2:6881",
    ]
    assert store.get_peers(H1, 6, rng, now=1.0) == [_v6(3)]
    assert store.get_peers(H1, 4, rng, now=1.0, noseed=True) == [_v4(1)]
    assert store.get_peers(H2, 4, rng, now=1.0) == []
    assert store.counts(H1, now=1.0) == (1, 2)
    assert len(store) == 3
    assert store.hash_count == 1
    assert H1 in store
    assert H2 not in store


def test_a_reannounce_refreshes_the_entry_and_another_port_is_another_peer() -> None:
    # A peer is its IP and port (libtorrent's dht_storage); it was one entry per IP, the
    # second port replacing the first (see test_routing_mends.py).
    store = PeerStore()
    store.announce(H1, _v4(1, 1000), seed=False, now=0.0)
    store.announce(H1, _v4(1, 1000), seed=True, now=10.0)
    assert store.get_peers(H1, 4, random.Random(0), now=11.0) == [_v4(1, 1000)]
    assert store.counts(H1, now=11.0) == (1, 0)
    assert len(store) == 1
    store.announce(H1, _v4(1, 2000), seed=False, now=20.0)
    assert set(store.get_peers(H1, 4, random.Random(0), now=21.0)) == {_v4(1, 1000), _v4(1, 2000)}
    assert store.counts(H1, now=21.0) == (1, 1)
    # each port lives by its own announces: 1000 (last at 10.0) expires before 2000
    assert store.get_peers(H1, 4, random.Random(0), now=DEFAULT_PEER_TTL + 15.0) == [_v4(1, 2000)]


def test_mapped_ipv6_is_stored_as_ipv4() -> None:
    store = PeerStore()
    store.announce(H1, PeerAddress.parse("[::ffff:10.0.0.1]:6881"), seed=False, now=0.0)
    store.announce(H1, _v4(1), seed=False, now=0.0)
    assert store.get_peers(H1, 4, random.Random(0), now=0.0) == [_v4(1)]
    assert store.get_peers(H1, 6, random.Random(0), now=0.0) == []


@pytest.mark.parametrize("text", ["10.0.0.1:0", "0.0.0.0:6881", "224.0.0.1:6881", "[::]:6881"])
def test_unconnectable_addresses_are_not_stored(text: str) -> None:
    store = PeerStore()
    assert not store.announce(H1, PeerAddress.parse(text), seed=False, now=0.0)
    assert len(store) == 0
    assert store.hash_count == 0


def test_announces_expire_after_thirty_minutes() -> None:
    store = PeerStore()
    rng = random.Random(0)
    store.announce(H1, _v4(1), seed=False, now=0.0)
    store.announce(H1, _v4(2), seed=False, now=600.0)
    store.announce(H2, _v4(3), seed=False, now=0.0)
    assert DEFAULT_PEER_TTL == 1800.0
    assert store.get_peers(H1, 4, rng, now=1799.0) != []
    assert store.get_peers(H1, 4, rng, now=1800.0) == [_v4(2)]
    assert store.expire(now=1800.0) == 1  # H2's peer; H1's went on the lookup above
    assert H2 not in store
    assert store.hash_count == 1
    store.announce(H1, _v4(2), seed=False, now=2000.0)  # refreshes
    assert store.get_peers(H1, 4, rng, now=3500.0) == [_v4(2)]
    assert store.expire(now=3800.0) == 1
    assert len(store) == 0
    assert store.hash_count == 0
    _check_invariants(store)


def test_get_peers_is_a_bounded_random_sample_that_fits_a_datagram() -> None:
    store = PeerStore()
    for index in range(300):
        store.announce(H1, _v4(index), seed=False, now=0.0)
        store.announce(H1, _v6(index), seed=False, now=0.0)
    rng = random.Random(0)
    for family in (4, 6):
        first = store.get_peers(H1, family, rng, now=1.0)
        second = store.get_peers(H1, family, rng, now=1.0)
        assert len(first) == len(set(first)) == max_values(family)
        assert first != second
        values = [peer.to_compact() for peer in first]
        # The values list, bencoded, plus 8 nodes and ~100 bytes of envelope fit 1280 bytes.
        node_size = 26 if family == 4 else 38
        assert len(encode(values)) + 8 * node_size + 10 + 100 <= 1280
        assert encode_compact_peers(first)
    assert len(store.get_peers(H1, 4, rng, now=1.0, max_count=7)) == 7
    assert store.get_peers(H1, 4, rng, now=1.0, max_count=0) == []


def test_the_sample_comes_from_the_injected_random() -> None:
    store = PeerStore()
    for index in range(300):
        store.announce(H1, _v4(index), seed=False, now=0.0)
    assert store.get_peers(H1, 4, random.Random(5), now=0.0) == store.get_peers(
        H1, 4, random.Random(5), now=0.0
    )


def test_per_hash_cap_refuses_the_newcomer_and_a_known_peer_refreshes() -> None:
    store = PeerStore(max_peers_per_hash=3)
    for index in range(3):
        store.announce(H1, _v4(index), seed=False, now=float(index))
    assert store.announce(H1, _v4(0, 7000), seed=True, now=3.0)  # refreshed, still allowed
    assert not store.accepts(H1, _v4(9), now=4.0)
    assert not store.announce(H1, _v4(9), seed=False, now=4.0)  # full: dropped (libtorrent)
    peers = set(store.get_peers(H1, 4, random.Random(0), now=5.0))
    assert peers == {_v4(0, 7000), _v4(1), _v4(2)}
    assert store.counts(H1, now=5.0) == (1, 2)
    # the IPv6 peers have a cap of their own
    assert store.accepts(H1, _v6(9), now=5.0)
    assert store.announce(H1, _v6(9), seed=False, now=5.0)
    # once the oldest expires, a newcomer has room again
    assert store.announce(H1, _v4(9), seed=False, now=DEFAULT_PEER_TTL + 1.0)
    _check_invariants(store)


def test_hash_cap_refuses_a_new_hash() -> None:
    store = PeerStore(max_hashes=2)
    for index in range(5):
        store.announce(H1, _v4(index), seed=False, now=0.0)
    store.announce(H2, _v4(1), seed=False, now=1.0)
    assert not store.accepts(H3, _v4(2), now=2.0)
    assert not store.announce(H3, _v4(2), seed=False, now=2.0)
    assert H1 in store
    assert H2 in store
    assert H3 not in store
    assert store.announce(H2, _v4(2), seed=False, now=2.0)  # a stored hash takes newcomers
    store.expire(DEFAULT_PEER_TTL + 1.5)  # H1's peers and H2's first are gone
    assert store.announce(H3, _v4(2), seed=False, now=DEFAULT_PEER_TTL + 1.5)
    _check_invariants(store)


def test_total_cap_takes_from_the_largest_swarm() -> None:
    store = PeerStore(max_peers=6)
    for index in range(5):
        store.announce(H1, _v4(index), seed=False, now=float(index))
    store.announce(H2, _v4(100), seed=False, now=10.0)
    store.announce(H3, _v4(200), seed=False, now=11.0)
    assert len(store) == 6
    assert store.counts(H1, now=11.0) == (0, 4)
    assert _v4(0) not in store.get_peers(H1, 4, random.Random(0), now=11.0)
    assert store.counts(H2, now=11.0) == (0, 1)
    assert store.counts(H3, now=11.0) == (0, 1)
    _check_invariants(store)


def test_total_cap_with_single_peer_swarms() -> None:
    store = PeerStore(max_peers=3)
    for index in range(10):
        store.announce(bytes([index]) * 20, _v4(index), seed=False, now=float(index))
        _check_invariants(store)
    assert len(store) == 3
    assert bytes([9]) * 20 in store


def test_scrape_blooms() -> None:
    store = PeerStore()
    expected_seeds, expected_peers = ScrapeBloom(), ScrapeBloom()
    for index in range(40):
        seed = index % 4 == 0
        address = _v4(index) if index % 2 else _v6(index)
        store.announce(H1, address, seed=seed, now=0.0)
        (expected_seeds if seed else expected_peers).insert(address.host)
    seeds, peers = store.scrape(H1, now=1.0)
    assert seeds == expected_seeds
    assert peers == expected_peers
    assert seeds.estimate() == pytest.approx(10, abs=2)
    assert peers.estimate() == pytest.approx(30, abs=3)
    empty_seeds, empty_peers = store.scrape(H2, now=1.0)
    assert empty_seeds == empty_peers == ScrapeBloom()
    assert store.scrape(H1, now=DEFAULT_PEER_TTL) == (ScrapeBloom(), ScrapeBloom())


def test_sample_info_hashes() -> None:
    store = PeerStore()
    hashes = [bytes([index]) * 20 for index in range(30)]
    for index, info_hash in enumerate(hashes):
        store.announce(info_hash, _v4(index), seed=False, now=0.0)
    sample = store.sample_info_hashes(10, random.Random(0))
    assert len(sample) == len(set(sample)) == 10
    assert set(sample) <= set(hashes)
    assert sorted(store.sample_info_hashes(100, random.Random(0))) == sorted(hashes)
    assert store.sample_info_hashes(0, random.Random(0)) == []


def test_bad_arguments_are_refused() -> None:
    store = PeerStore()
    rng = random.Random(0)
    with pytest.raises(LocalProtocolError):
        store.announce(b"short", _v4(1), seed=False, now=0.0)
    with pytest.raises(LocalProtocolError):
        store.announce(H1, "10.0.0.1:6881", seed=False, now=0.0)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        store.get_peers(H1, 5, rng, now=0.0)
    with pytest.raises(LocalProtocolError):
        store.get_peers(H1, 4, rng, now=0.0, max_count=-1)
    with pytest.raises(LocalProtocolError):
        store.get_peers(H1, 5, rng, now=0.0, max_count=10)
    assert store.counts(H1, now=0.0) == (0, 0)
    with pytest.raises(LocalProtocolError):
        store.sample_info_hashes(-1, rng)
    for options in ({"max_peers": 0}, {"max_hashes": True}, {"max_peers_per_hash": 1.5}):
        with pytest.raises(LocalProtocolError):
            PeerStore(**options)
    with pytest.raises(LocalProtocolError):
        PeerStore(peer_ttl=0.0)


operations = st.lists(
    st.tuples(
        st.integers(0, 5),  # info-hash
        st.integers(0, 12),  # address
        st.booleans(),  # seed
        st.floats(0, 400),  # time step
        st.booleans(),  # also run expire()
    ),
    max_size=80,
)


@settings(max_examples=150)
@given(operations, st.integers(1, 4), st.integers(1, 4), st.integers(1, 10))
def test_caps_and_indexes_hold_under_any_sequence(
    steps: list[tuple[int, int, bool, float, bool]], per_hash: int, hashes: int, total: int
) -> None:
    store = PeerStore(max_peers_per_hash=per_hash, max_hashes=hashes, max_peers=total)
    rng = random.Random(0)
    now = 0.0
    for info_hash_index, address_index, seed, step, expire in steps:
        now += step
        info_hash = bytes([info_hash_index]) * 20
        address = _v4(address_index) if address_index % 3 else _v6(address_index)
        accepted = store.accepts(info_hash, address, now)
        assert store.announce(info_hash, address, seed=seed, now=now) == accepted
        # An announce the store accepts is there: no eviction takes the newcomer.
        found = store.get_peers(info_hash, address.family, rng, now=now, max_count=99)
        assert (address in found) == accepted
        if expire:
            store.expire(now)
        _check_invariants(store)


def test_a_million_random_announces_stay_bounded_and_honest_queries_work() -> None:
    store = PeerStore(max_hashes=2000, max_peers=20_000)
    rng = random.Random(1)
    honest = b"\xaa" * 20
    honest_peers = [_v4(index) for index in range(50)]
    for peer in honest_peers:
        store.announce(honest, peer, seed=False, now=0.0)
    attackers = [PeerAddress(IPv4Address(0x50000000 + index), 6881) for index in range(65_536)]
    base = rng.getrandbits(160)
    now = 0.0
    for index in range(1_000_000):
        now = index * 0.001  # 1,000 announces a second for ~17 minutes
        # Distinct pseudo-random info-hashes, cheap to make: an odd multiplier is a bijection.
        info_hash = ((base + index * 0x9E3779B97F4A7C15F39CC0605CEDC8341082276B) % 2**160).to_bytes(
            20
        )
        store.announce(info_hash, attackers[index & 0xFFFF], seed=False, now=now)
        if index % 100_000 == 0:
            assert store.hash_count <= 2000
            assert len(store) <= 20_000
    assert store.hash_count <= 2000
    assert len(store) <= 20_000
    _check_invariants(store)
    # The popular torrent survived the flood and still answers in full.
    found = store.get_peers(honest, 4, rng, now=now)
    assert set(found) == set(honest_peers)
    # A new peer of a stored swarm is stored and found; a new hash waits for room (the
    # node gives no token meanwhile, so it is announced to other nodes).
    assert store.announce(honest, _v4(99), seed=True, now=now)
    assert _v4(99) in store.get_peers(honest, 4, rng, now=now)
    assert not store.announce(H1, _v4(7), seed=True, now=now)
    store.expire(now + DEFAULT_PEER_TTL)
    assert store.announce(H1, _v4(7), seed=True, now=now + DEFAULT_PEER_TTL)
    assert store.get_peers(H1, 4, rng, now=now + DEFAULT_PEER_TTL) == [_v4(7)]


def test_many_addresses_into_one_hash_stay_under_the_cap() -> None:
    store = PeerStore(max_peers_per_hash=500)
    for index in range(20_000):
        store.announce(H1, _v4(index), seed=index % 2 == 0, now=index * 0.01)
    assert len(store) == 500
    assert len(store.get_peers(H1, 4, random.Random(0), now=200.0)) == max_values(4)
    _check_invariants(store)
