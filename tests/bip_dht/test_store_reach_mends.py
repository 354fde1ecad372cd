"""Mends after review of the store steering: our announces and puts reach the closest nodes
that give a token (not only those among the k closest responders), one /24 or /64 cannot hold
every hash slot of a store for ever, and a bootstrap's named nodes of a family no responder
answered in are learned candidates, not seeds."""

from __future__ import annotations

import random
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_peer_store import _check_invariants
from test_storage_steering_mends import Asker

from bip_bencode import decode, encode
from bip_dht import (
    AnnounceFinished,
    DHTConfig,
    DHTNode,
    ImmutableItem,
    LocalProtocolError,
    Lookup,
    LookupFinished,
    NodeId,
    PutFinished,
    is_bep42_exempt,
)
from bip_dht._krpc import Response
from bip_dht._peer_store import DEFAULT_PEER_TTL, PeerStore
from bip_dht.simulator import SimulatedNetwork
from bip_handshake import NodeInfo, PeerAddress

# -- announces and puts go to the closest responders WITH a token ---------------------------


def _xor(target: bytes, first: int, last: int) -> bytes:
    """An id that differs from *target* by *first* in its first byte and *last* in its last."""
    return bytes([target[0] ^ first]) + target[1:19] + bytes([target[19] ^ last])


# What a scripted node answers: its id, the token it gives (None: none) and the nodes it names.
Script = dict[PeerAddress, tuple[bytes, bytes | None, list[NodeInfo]]]


def _withholding_network(target: bytes) -> tuple[list[NodeInfo], Script]:
    """Three far nodes that give a token and name eight near ones, of which only the sixth
    gives a token: the near ones' stores are full for *target*, say."""
    far = [
        NodeInfo(_xor(target, 0x80 | j, 0), PeerAddress.parse(f"81.1.{j}.1:6881"))
        for j in (1, 2, 3)
    ]
    near = [
        NodeInfo(_xor(target, 0, i + 1), PeerAddress.parse(f"82.0.{i}.1:6881")) for i in range(8)
    ]
    script: Script = {n.address: (n.node_id, b"far", near) for n in far}
    for index, n in enumerate(near):
        script[n.address] = (n.node_id, b"near" if index == 5 else None, [])
    return far, script


def _drive(node: DHTNode, script: Script, now: float) -> list[tuple[bytes, PeerAddress, bytes]]:
    """Answer every query the node sends by *script*; return its writes (method, to, token)."""
    writes: list[tuple[bytes, PeerAddress, bytes]] = []
    for _ in range(40):
        out = node.datagrams_to_send(now)
        if not out:
            return writes
        for raw, to in out:
            message: Any = decode(raw)
            node_id, token, named = script[to]
            answer: dict[bytes, Any] = {b"id": node_id}
            if message[b"q"] in (b"get_peers", b"get"):
                answer[b"nodes"] = b"".join(n.to_compact() for n in named)
                if token is not None:
                    answer[b"token"] = token
            else:
                writes.append((message[b"q"], to, message[b"a"][b"token"]))
            reply = {b"t": message[b"t"], b"y": b"r", b"r": answer}
            node.receive_datagram(encode(reply), to, now)
        now += 0.1
    raise AssertionError("the node kept sending")


def _expected_writes(far: list[NodeInfo], method: bytes) -> list[tuple[bytes, PeerAddress, bytes]]:
    near_with_token = PeerAddress.parse("82.0.5.1:6881")
    return [(method, near_with_token, b"near")] + [(method, n.address, b"far") for n in far]


def test_an_announce_walks_past_the_tokenless_closest_responders() -> None:
    # Before: the write went to the holders of a token among the k closest responders
    # only; now that a full swarm's nodes withhold their tokens, our own announce went to
    # one node here (to none when all k withhold), not to the closest four that take it.
    info_hash = b"\x55" * 20
    far, script = _withholding_network(info_hash)
    node = DHTNode(rng=random.Random(1), now=0.0, node_id=b"\xf0" * 20)
    node.warm_table(far, 0.0)
    node.announce(info_hash, 0.0, port=7000)
    writes = _drive(node, script, 0.0)
    assert writes == _expected_writes(far, b"announce_peer")  # closest first
    [finished] = [e for e in iter(node.next_event, None) if isinstance(e, AnnounceFinished)]
    assert finished.announced_to == 4
    # the lookup's result is still the k closest responders, token or not
    assert [n.node.address for n in finished.result.nodes][:8] == [
        PeerAddress.parse(f"82.0.{i}.1:6881") for i in range(8)
    ]


def test_a_put_walks_past_the_tokenless_closest_responders() -> None:
    item = ImmutableItem(encode(b"reach"))
    far, script = _withholding_network(item.target)
    node = DHTNode(rng=random.Random(2), now=0.0, node_id=bytes([item.target[0] ^ 0x40]) * 20)
    node.warm_table(far, 0.0)
    node.put(item, 0.0)
    writes = _drive(node, script, 0.0)
    assert writes == _expected_writes(far, b"put")
    [finished] = [e for e in iter(node.next_event, None) if isinstance(e, PutFinished)]
    assert finished.stored_at == 4


def test_lookup_writable_takes_k_token_givers_closest_first() -> None:
    target = NodeId(bytes(20))
    nodes = [
        NodeInfo(bytes(19) + bytes([i + 1]), PeerAddress.parse(f"81.0.{i}.1:1")) for i in range(6)
    ]
    lookup = Lookup(target, "get_peers", nodes, alpha=6, k=6)
    for node, _ in lookup.next_queries(0.0):
        token = None if node.node_id[19] % 2 else b"t%d" % node.node_id[19]
        response = Response(transaction_id=b"t", node_id=node.node_id, token=token)
        assert lookup.on_response(node, response, 0.1)
    assert lookup.done
    assert [(n.node, n.token) for n in lookup.writable(2)] == [(nodes[1], b"t2"), (nodes[3], b"t4")]
    assert len(lookup.writable()) == 3  # all three, under the default k
    for bad in (0, -1, True, 1.5):
        with pytest.raises(LocalProtocolError):
            lookup.writable(bad)  # type: ignore[arg-type]


def test_successive_announcers_of_a_full_swarm_still_reach_nodes() -> None:
    # Two peers fill the swarm (max_peers_per_hash=2) at the nodes closest to the hash; from
    # the third announcer on, those withhold their tokens. Before: the later announcers
    # reached no node at all ([8, 8, 0, 0, 0, 0, 0, 0]); now they reach the next closest.
    network = SimulatedNetwork(seed=1, config=DHTConfig(max_peers_per_hash=2))
    network.form(40, settle=10.0)
    info_hash = bytes(range(20))
    reached = []

    def announcing(port: int) -> Callable[[DHTNode, float], int]:
        return lambda dht, now: dht.announce(info_hash, now, port=port)

    for index in range(8):
        op = network.run_operation(network.nodes[index * 3], announcing(1000 + index))
        assert isinstance(op.finished, AnnounceFinished)
        reached.append(op.finished.announced_to)
    assert reached[:2] == [8, 8]
    assert sum(reached[2:]) >= 10  # 15 at this seed; 0 before


# -- one network's share of a store ---------------------------------------------------------


def _hash(index: int) -> bytes:
    return index.to_bytes(20, "big")


def test_one_ipv4_network_cannot_take_every_hash_slot() -> None:
    # Before: one host re-announcing max_hashes random hashes within the rate limit held
    # every slot for ever, and every other new hash was refused (no token).
    store = PeerStore(max_hashes=80)  # a network's share: 10 hashes
    host = PeerAddress.parse("198.51.100.7:6881")
    taken = [store.announce(_hash(i), host, seed=False, now=0.0) for i in range(80)]
    assert taken == [True] * 10 + [False] * 70
    neighbour = PeerAddress.parse("198.51.100.200:6881")  # the same /24
    assert not store.accepts(_hash(90), neighbour, now=1.0)
    assert not store.announce(_hash(90), neighbour, seed=False, now=1.0)
    # a hash the network holds already takes more of its hosts (the swarm's share bounds them)
    assert store.announce(_hash(0), neighbour, seed=False, now=1.0)
    assert store.announce(_hash(0), host, seed=True, now=1.0)  # a stored entry refreshes
    # other networks have room; local addresses share a /24 honestly and are exempt
    assert store.announce(_hash(90), PeerAddress.parse("198.51.101.7:6881"), seed=False, now=2.0)
    lan = PeerAddress.parse("192.168.1.7:6881")
    assert all(store.announce(_hash(100 + i), lan, seed=False, now=2.0) for i in range(20))
    # once the network's entries expire, it has room again
    assert store.expire(DEFAULT_PEER_TTL + 0.5) == 9
    assert store._networks[_network_of(host.host.packed) or 0] == 1  # hash 0 (white-box)
    assert store.announce(_hash(95), neighbour, seed=False, now=DEFAULT_PEER_TTL + 0.5)
    _check_network_counts(store)


def test_the_hash_share_counts_hashes_not_entries() -> None:
    # Before: the bound counted a network's entries (one per info-hash and IP), so 99 hosts of
    # one /24 holding 5 of 200 hashes reached their swarm's share, 62, for no swarm (25 each,
    # 200 // 8 entries in all); a campus or CGNAT network lost its honest announces.
    s = PeerStore(max_peers_per_hash=500, max_hashes=200)
    h = b"\x01" * 20
    stored = sum(
        s.announce(h, PeerAddress(IPv4Address(f"198.51.100.{i}"), 6881), seed=False, now=0.0)
        for i in range(1, 100)
    )
    assert stored == 62  # 500 // 8: the swarm's share, not the store's
    store = PeerStore()  # 2000 hashes: a network's share is 250 hashes
    hosts = [PeerAddress(IPv4Address(f"203.0.113.{i}"), 6881) for i in range(1, 100)]
    for index in range(5):
        taken = [store.announce(_hash(index), a, seed=False, now=0.0) for a in hosts]
        assert taken == [True] * 62 + [False] * 37
        assert not store.accepts(_hash(index), hosts[-1], now=0.0)
    assert len(store) == 310  # over 250 entries: only 5 hashes count
    assert store.accepts(_hash(9), hosts[-1], now=0.0)
    _check_network_counts(store)


def test_a_few_ipv6_networks_cannot_fill_the_store_and_evict_an_honest_swarm() -> None:
    # Before: once a /64 had a hash, only the swarm's share bounded its hosts there: 62 hosts
    # in 250 hashes held 15,500 entries, four /64s filled max_peers, and the eviction (the
    # largest swarm gives way) cut an honest swarm of 494 IPv4 peers down to 50.
    store = PeerStore()  # a network's share: 250 hashes, 6250 entries, 62 per swarm family
    honest = _hash(5000)
    for index in range(494):
        peer = PeerAddress(IPv4Address(f"203.{index // 256}.{index % 256}.1"), 6881)
        assert store.announce(honest, peer, seed=False, now=0.0)
    hosts = [
        PeerAddress(IPv6Address(f"2001:db8:0:{net:x}::{host:x}"), 6881)
        for net in range(4)
        for host in range(1, 63)
    ]
    for index in range(1000):
        info_hash = _hash(index)
        for address in hosts:
            store.announce(info_hash, address, seed=False, now=1.0)
    assert store.counts(honest, now=2.0) == (0, 494)
    assert len(store) == 494 + 4 * 6250  # each /64 at its share of the entries
    assert not store.accepts(_hash(0), PeerAddress.parse("[2001:db8::99]:6881"), now=2.0)
    assert store.accepts(_hash(0), PeerAddress.parse("[2001:db8:0:9::1]:6881"), now=2.0)
    _check_network_counts(store)


def test_one_network_holds_an_eighth_of_a_swarms_family() -> None:
    store = PeerStore(max_peers_per_hash=16)  # a network's share of a swarm's family: 2
    h = _hash(1)
    v4 = [PeerAddress(IPv4Address(f"198.51.100.{i + 1}"), 6881) for i in range(4)]
    v6 = [PeerAddress(IPv6Address(f"2001:db8:1:1::{i + 1:x}"), 6881) for i in range(4)]
    assert [store.announce(h, a, seed=False, now=0.0) for a in v4] == [True, True, False, False]
    assert [store.announce(h, a, seed=False, now=0.0) for a in v6] == [True, True, False, False]
    other_64 = PeerAddress(IPv6Address("2001:db8:1:2::1"), 6881)
    assert store.accepts(h, other_64, now=0.0)
    # the network's entries in other swarms are not bound by this swarm's share
    assert store.announce(_hash(2), v4[2], seed=False, now=0.0)
    _check_network_counts(store)


def test_the_node_gives_no_token_to_a_network_at_its_share() -> None:
    node = DHTNode(rng=random.Random(3), now=0.0, config=DHTConfig(max_hashes=16))
    asker = Asker(node)
    host = PeerAddress.parse("198.51.100.7:6881")
    taken = [asker.announce(host, _hash(i), float(i)) for i in range(4)]
    assert taken == [True, True, False, False]  # 16 // 8 entries
    assert asker.announce(PeerAddress.parse("203.0.113.9:6881"), _hash(9), 5.0)
    assert node.statistics().info_hashes == 3


def _network_of(packed: bytes) -> int | None:
    host = IPv4Address(packed) if len(packed) == 4 else IPv6Address(packed)
    if is_bep42_exempt(host):
        return None
    return (int(host) >> (8 if host.version == 4 else 64)) << 1 | (host.version == 6)


def _check_network_counts(store: PeerStore) -> None:
    """The network counts agree with the peers, and stay within the shares (white-box): per
    swarm a network's entries, over the store the hashes a network has entries in and its
    entries in all."""
    _check_invariants(store)
    total: dict[int, int] = {}
    entries: dict[int, int] = {}
    for swarm in store._swarms.values():
        counts: dict[int, int] = {}
        for key, peer in swarm.peers.items():
            network = _network_of(key[:-2])  # keyed by compact peer: the IP, then the port
            assert peer.network == network
            if network is not None:
                counts[network] = counts.get(network, 0) + 1
        for network, count in counts.items():
            total[network] = total.get(network, 0) + 1
            entries[network] = entries.get(network, 0) + count
        assert swarm.networks == counts
        assert all(count <= max(1, store.max_peers_per_hash // 8) for count in counts.values())
    assert store._networks == total
    assert all(count <= max(1, store.max_hashes // 8) for count in total.values())
    assert store._network_entries == entries
    assert all(count <= max(1, store.max_peers // 8) for count in entries.values())


def _expected_accept(store: PeerStore, info_hash: bytes, address: PeerAddress) -> bool:
    """The documented rule, from the stored peers alone (after a lazy expiry of the swarm):
    a stored IP refreshes (or stores another port of its own); a newcomer needs room in the
    swarm's family (a new hash a free slot), and for its network entries in all under its
    share of max_peers, and room in the swarm's share when the network is in the swarm
    already, else a hash count under its share of the hash slots."""
    packed = address.normalized().host.packed
    swarm = store._swarms.get(info_hash)
    if swarm is not None and any(key[:-2] == packed for key in swarm.peers):
        return True
    if swarm is None:
        if store.hash_count >= store.max_hashes:
            return False
    elif swarm.family_count(len(packed)) >= store.max_peers_per_hash:
        return False
    network = _network_of(packed)
    if network is None:
        return True
    stored = sum(_network_of(k[:-2]) == network for s in store._swarms.values() for k in s.peers)
    if stored >= max(1, store.max_peers // 8):
        return False
    here = 0 if swarm is None else sum(_network_of(k[:-2]) == network for k in swarm.peers)
    if here:
        return here < max(1, store.max_peers_per_hash // 8)
    hashes = sum(
        any(_network_of(k[:-2]) == network for k in s.peers) for s in store._swarms.values()
    )
    return hashes < max(1, store.max_hashes // 8)


def _address(index: int) -> PeerAddress:
    """Three IPv4 /24s, two IPv6 /64s and a LAN /24, a few hosts in each."""
    network, host = divmod(index, 4)
    if network < 3:
        return PeerAddress(IPv4Address(f"198.51.{100 + network}.{host + 1}"), 6881)
    if network < 5:
        return PeerAddress(IPv6Address(f"2001:db8:{network}::{host + 1:x}"), 6881)
    return PeerAddress(IPv4Address(f"192.168.0.{host + 1}"), 6881)


_steps = st.lists(
    st.tuples(
        st.integers(0, 5),  # info-hash
        st.integers(0, 23),  # address
        st.floats(0, 400),  # time step
        st.booleans(),  # also run expire()
    ),
    max_size=80,
)


@settings(max_examples=100, deadline=None)
@given(_steps, st.integers(1, 40), st.integers(1, 20), st.integers(1, 60))
def test_network_counts_stay_exact_under_any_sequence(
    steps: list[tuple[int, int, float, bool]], per_hash: int, hashes: int, total: int
) -> None:
    # announce, refresh, expire (lazily and by expire()) and eviction by the total cap alike
    store = PeerStore(max_peers_per_hash=per_hash, max_hashes=hashes, max_peers=total)
    rng = random.Random(0)
    now = 0.0
    for info_hash_index, address_index, step, expire in steps:
        now += step
        info_hash = bytes([info_hash_index]) * 20
        address = _address(address_index)
        accepted = store.accepts(info_hash, address, now)
        assert accepted == _expected_accept(store, info_hash, address)
        assert store.announce(info_hash, address, seed=False, now=now) == accepted
        found = store.get_peers(info_hash, address.family, rng, now=now, max_count=99)
        assert (address in found) == accepted
        if expire:
            store.expire(now)
        _check_network_counts(store)


# -- a bootstrap's named nodes of a family no responder answered in -------------------------


def test_one_bootstrap_answer_cannot_fill_the_other_familys_lookup_from_one_network() -> None:
    # Before: an IPv4 router's nodes6 seeded the IPv6 half of the bootstrap (no IPv6
    # responder), and seeds skip the one-per-/64 rule: the 8 closest of 30 made-up ids in
    # one /64 were all queried.
    own = b"\x33" * 20
    node = DHTNode(rng=random.Random(4), now=0.0, node_id=own, families=(4, 6))
    router = PeerAddress.parse("81.1.1.1:6881")
    router_id = bytes([own[0] ^ 0x80]) + own[1:]
    named = [
        NodeInfo(
            _xor(own, 0, index + 1), PeerAddress(IPv6Address(f"2001:db8:1:1::{index + 1:x}"), 6881)
        )
        for index in range(30)
    ]
    script: Script = {router: (router_id, None, [])}
    script.update({n.address: (n.node_id, None, []) for n in named})
    node.bootstrap([router], 0.0)
    [(raw, to)] = node.datagrams_to_send(0.0)
    assert to == router
    answer = {b"id": router_id, b"nodes": b"", b"nodes6": b"".join(n.to_compact() for n in named)}
    message: Any = decode(raw)
    node.receive_datagram(encode({b"t": message[b"t"], b"y": b"r", b"r": answer}), router, 0.1)
    asked: list[str] = []
    now = 0.1
    for _ in range(40):
        out = node.datagrams_to_send(now)
        if not out:
            break
        for raw, to in out:
            message = decode(raw)
            if message[b"q"] == b"find_node" and to.family == 6:
                asked.append(str(to.host))
            node_id, _, _ = script[to]
            reply = {b"t": message[b"t"], b"y": b"r", b"r": {b"id": node_id, b"nodes6": b""}}
            node.receive_datagram(encode(reply), to, now)
        now += 0.1
    assert asked == ["2001:db8:1:1::1"]  # the closest of the /64, and only it
    finished = [e for e in iter(node.next_event, None) if isinstance(e, LookupFinished)]
    assert [e.kind for e in finished] == ["bootstrap"]
    addresses = [str(n.node.address) for n in finished[0].result.nodes]
    assert addresses == ["[2001:db8:1:1::1]:6881", "81.1.1.1:6881"]
