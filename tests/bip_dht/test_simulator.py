"""The DHT simulator with real DHTNode cores: formation, operations, churn, floods (small)."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from ipaddress import IPv4Address

import pytest

from bip_dht._errors import LocalProtocolError
from bip_dht._node import DHTNode
from bip_dht._node_config import DHTConfig
from bip_dht._node_events import AnnounceFinished, LookupFinished, PeersFound, PingFinished
from bip_dht._node_id import NodeId
from bip_dht.simulator import (
    Operation,
    SimulatedNetwork,
    SimulationTimeoutError,
    announce_flood,
)
from bip_handshake import PeerAddress


def _getting(info_hash: bytes) -> Callable[[DHTNode, float], int]:
    return lambda dht, now: dht.get_peers(info_hash, now)


def _announcing(info_hash: bytes) -> Callable[[DHTNode, float], int]:
    return lambda dht, now: dht.announce(info_hash, now)


def _formed(size: int, seed: int = 1, **kwargs: float) -> SimulatedNetwork:
    net = SimulatedNetwork(seed=seed, latency=(0.02, 0.3), **kwargs)  # type: ignore[arg-type]
    net.form(size, settle=10.0)
    return net


def test_two_nodes_ping_over_the_simulated_link() -> None:
    net = SimulatedNetwork(seed=3, latency=(0.05, 0.25))
    a = net.add_node()
    b = net.add_node()
    op = net.ping(a, b.address)
    assert isinstance(op.finished, PingFinished)
    assert op.finished.node is not None
    assert op.finished.node.node_id == b.endpoint.node_id.value
    assert op.duration == pytest.approx(2 * net.latency_between(a, b))
    assert op.queries == 1
    assert op.datagrams == 1
    stats = net.statistics()
    assert (stats.sent, stats.delivered, stats.lost) == (2, 2, 0)
    # a heard b answer: b is in a's table; b only heard a query: a is b's candidate, to be
    # queried (libtorrent admits only nodes that answered)
    assert a.endpoint.statistics().nodes[4] == 1
    assert b.endpoint.statistics().nodes[4] == 0
    assert b.endpoint.table().candidate_count == 1


def test_a_ping_to_a_silent_node_fails_after_the_query_timeout() -> None:
    net = SimulatedNetwork(seed=3)
    a, b = net.add_node(), net.add_node()
    net.set_silent(b)
    op = net.ping(a, b.address)
    assert isinstance(op.finished, PingFinished)
    assert op.finished.node is None
    assert op.duration == pytest.approx(net.config.query_timeout, abs=0.01)
    assert net.statistics().to_silent == 1
    with pytest.raises(SimulationTimeoutError):
        net.ping(a, b.address, timeout=1.0)


def test_formation_through_the_protocol_joins_everyone() -> None:
    net = _formed(80, loss=0.05)
    assert len(net) == 80
    sizes = [node.endpoint.statistics().nodes[4] for node in net.nodes]
    assert min(sizes) >= 8
    assert net.statistics().lost > 0
    # every bootstrap was watched and ended
    assert net.unclaimed_counts["LookupFinished"] == 0
    assert net._watched == {}


def test_form_grows_an_existing_network_and_refuses_nonsense() -> None:
    net = _formed(20)
    more = net.form(10, settle=1.0)
    assert len(more) == 10
    assert len(net) == 30
    assert all(node.endpoint.statistics().nodes[4] > 0 for node in more)
    with pytest.raises(LocalProtocolError):
        net.form(5, contacts=0)


def test_announce_then_get_peers_finds_the_announcer() -> None:
    net = _formed(120, loss=0.05)
    rng = random.Random(9)
    nodes = net.nodes
    for _ in range(5):
        announcer, searcher = rng.sample(nodes, 2)
        info_hash = rng.randbytes(20)
        announce = net.announce(announcer, info_hash, port=7000)
        assert isinstance(announce.finished, AnnounceFinished)
        assert announce.finished.announced_to >= 4
        assert announce.queries >= announce.result.queries
        search = net.get_peers(searcher, info_hash)
        assert isinstance(search.finished, LookupFinished)
        assert PeerAddress(announcer.address.host, 7000) in search.result.peers
        assert PeerAddress(announcer.address.host, 7000) in search.peers
        found_after = search.time_to_peer(announcer.address.host)
        assert found_after is not None
        assert 0 < found_after <= search.duration
        assert search.time_to_peer() == min(
            t - search.started
            for e, t in zip(search.events, search.event_times, strict=True)
            if isinstance(e, PeersFound)
        )
        assert search.queries < 60


def test_implied_port_announces_the_node_port() -> None:
    net = _formed(40)
    announcer, searcher = net.nodes[3], net.nodes[30]
    info_hash = bytes(range(20))
    net.announce(announcer, info_hash)
    search = net.get_peers(searcher, info_hash)
    assert announcer.address in search.result.peers


def test_warm_tables_hold_the_true_neighbours() -> None:
    net = SimulatedNetwork(seed=5)
    nodes = net.add_nodes(400)
    net.warm()
    assert net.statistics().sent == 0
    by_id = sorted(nodes, key=lambda n: int(n.endpoint.node_id))
    for node in random.Random(1).sample(nodes, 20):
        own = node.endpoint.node_id
        truth = [
            n.endpoint.node_id.value
            for n in sorted(
                (n for n in by_id if n is not node),
                key=lambda n: int(n.endpoint.node_id) ^ int(own),
            )
        ]
        table = node.endpoint.table(4)
        closest = [c.node_id for c in table.closest(own, net.now)]
        # the nearest neighbours are known; a bucket holds k of its range, like a real one
        assert closest[:2] == truth[:2]
        assert set(closest) <= set(truth[:24])
        for entry in table.entries(net.now):
            depth = NodeId(entry.node.node_id).common_prefix_length(own)
            assert entry.bucket == min(depth, table.bucket_count - 1)
        stats = node.endpoint.statistics()
        assert stats.good_nodes[4] == stats.nodes[4] >= 40
        assert stats.replacements[4] > 0


def test_warm_network_serves_lookups_without_any_join_traffic() -> None:
    net = SimulatedNetwork(seed=8, loss=0.05)
    nodes = net.add_nodes(300)
    net.warm(extra=False)
    assert all(n.endpoint.statistics().replacements[4] == 0 for n in nodes[:20])
    target = NodeId.random(random.Random(4))
    op = net.find_node(nodes[0], target)
    best = min(nodes, key=lambda n: int(n.endpoint.node_id) ^ int(target))
    assert op.result.nodes[0].node.node_id == best.endpoint.node_id.value


def test_churn_silences_a_share_and_lookups_still_succeed() -> None:
    net = _formed(150, seed=4, loss=0.05)
    gone = net.silence(0.1)
    assert len(gone) == 15
    assert all(node.silent for node in gone)
    live = net.live_nodes()
    assert len(live) == 135
    rng = random.Random(2)
    hashes = []
    for _ in range(6):
        announcer = rng.choice(live)
        info_hash = rng.randbytes(20)
        hashes.append((announcer, info_hash))
        net.announce(announcer, info_hash)
    searches = [net.start(rng.choice(live), _getting(h)) for _, h in hashes]
    assert net.wait(searches, timeout=60.0)
    for (announcer, _), search in zip(hashes, searches, strict=True):
        assert announcer.address in search.result.peers
    assert net.statistics().to_silent > 0
    with pytest.raises(LocalProtocolError):
        net.silence(1.5)


def test_runs_are_deterministic_per_seed() -> None:
    def run(seed: int) -> tuple[float, int, int]:
        net = _formed(50, seed=seed, loss=0.05)
        op = net.get_peers(net.nodes[7], bytes(20))
        return op.duration, op.queries, net.statistics().sent

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_operation_bookkeeping() -> None:
    net = SimulatedNetwork(seed=2)
    a, b = net.add_node(), net.add_node()
    op = net.start(a, lambda d, now: d.ping(b.address, now))
    assert isinstance(op, Operation)
    assert not op.done
    with pytest.raises(LocalProtocolError):
        _ = op.duration
    net.run_until(lambda: op.done, timeout=5.0)
    with pytest.raises(LocalProtocolError, match="no lookup result"):
        _ = op.result
    assert op.time_to_peer() is None
    with pytest.raises(LocalProtocolError):
        net.start(a, lambda d, now: None)  # type: ignore[arg-type,return-value]
    # an operation started behind the simulator's back: its events are unclaimed
    net.call(a, lambda d, now: d.ping(b.address, now))
    net.run_for(2.0)
    assert net.unclaimed_counts["PingFinished"] == 1
    assert isinstance(net.unclaimed[-1][1], PingFinished)
    assert net.unclaimed[-1][0] is a


def test_nodes_take_explicit_ids_addresses_and_configs() -> None:
    net = SimulatedNetwork(seed=2, config=DHTConfig(k=4))
    address = PeerAddress(IPv4Address("10.9.9.9"), 7777)
    node = net.add_node(node_id=bytes(20), address=address, config=DHTConfig(alpha=1))
    assert node.address == address
    assert node.endpoint.node_id == NodeId(bytes(20))
    assert node.endpoint.config.alpha == 1
    assert net.add_node().endpoint.config.k == 4
    with pytest.raises(LocalProtocolError):
        SimulatedNetwork(config="fast")  # type: ignore[arg-type]


def test_a_node_comes_back_from_saved_state() -> None:
    net = _formed(40)
    old = net.nodes[5]
    state = old.endpoint.save_state(net.now)
    net.set_silent(old)
    back = net.add_node(state=state)
    assert back.endpoint.node_id == old.endpoint.node_id
    assert back.endpoint.statistics().nodes[4] > 0
    op = net.find_node(back, NodeId.random(random.Random(3)))
    assert len(op.result.nodes) == 8


def test_a_flood_stays_within_the_store_caps_and_the_node_keeps_answering() -> None:
    config = DHTConfig(max_hashes=100, max_peers=1000, rate_limited_hosts=64)
    net = SimulatedNetwork(seed=6, config=config)
    victim = net.add_node()
    honest = net.add_node()
    report = announce_flood(victim.endpoint, 3000, rng=random.Random(1), now=net.now, sources=500)
    # once max_hashes are stored a new hash gets no token (libtorrent): nothing is evicted
    assert (report.attempts, report.tokens, report.accepted) == (3000, 100, 100)
    assert report.sources == 500
    assert report.refused == report.unanswered == 0
    assert report.ended == pytest.approx(net.now + 0.3)
    stats = victim.endpoint.statistics()
    assert stats.info_hashes == 100
    assert stats.peers == 100
    assert stats.queries_received[b"announce_peer"] == 100
    # the victim still answers an honest node; a new hash waits for room (the flood's
    # announces to expire), then the victim stores its announce
    net.run_for(1.0)
    pong = net.ping(honest, victim.address).finished
    assert isinstance(pong, PingFinished)
    assert pong.node is not None
    info_hash = bytes(range(20))
    op = net.run_operation(honest, lambda d, now: d.announce(info_hash, now, port=999))
    assert isinstance(op.finished, AnnounceFinished)
    assert op.finished.announced_to == 0
    net.run_for(config.peer_ttl)
    op = net.run_operation(honest, lambda d, now: d.announce(info_hash, now, port=999))
    assert isinstance(op.finished, AnnounceFinished)
    assert op.finished.announced_to == 1
    search = net.get_peers(honest, info_hash)
    assert PeerAddress(honest.address.host, 999) in search.result.peers


def test_a_flood_of_one_source_is_rate_limited() -> None:
    node = DHTNode(rng=random.Random(1), now=0.0)
    report = announce_flood(node, 200, rng=random.Random(2), now=0.0, sources=1)
    # the burst (40 queries) lets 20 get_peers and 20 announces through, then the source is
    # over its rate (10 queries a second; the flood lasts 0.02 s)
    assert report.tokens == report.accepted == 20
    assert node.statistics().rate_limited == 180
    with pytest.raises(LocalProtocolError):
        announce_flood(node, 10, rng=random.Random(2), now=0.0, sources=0)


def test_median_lookup_on_a_small_churned_network() -> None:
    net = _formed(200, seed=7, loss=0.05)
    net.silence(0.1)
    live = net.live_nodes()
    rng = random.Random(3)
    pairs = [(rng.choice(live), rng.randbytes(20)) for _ in range(10)]
    announces = [net.start(a, _announcing(h)) for a, h in pairs]
    assert net.wait(announces, timeout=60.0)
    searches = [net.start(rng.choice(live), _getting(h)) for _, h in pairs]
    assert net.wait(searches, timeout=60.0)
    found = [s.time_to_peer(a.address.host) for (a, _), s in zip(pairs, searches, strict=True)]
    assert all(t is not None for t in found)
    assert statistics.median(t for t in found if t is not None) < 1.0
    assert statistics.median(s.queries for s in searches) < 60
