"""The iterative lookup against an in-memory fake network on virtual time."""

from __future__ import annotations

from ipaddress import IPv4Address
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_dht._errors import LocalProtocolError
from bip_dht._krpc_replies import Response
from bip_dht._lookup import Lookup, LookupKind
from bip_dht._node_id import NodeId
from bip_handshake import NodeInfo, PeerAddress


def _node(rng: Random, index: int) -> NodeInfo:
    ip = IPv4Address(0x0A000000 + index + 1)
    return NodeInfo(rng.randbytes(20), PeerAddress(ip, 6881))


class FakeNetwork:
    """Nodes that each know a slice of the network: their closest peers plus random ones."""

    def __init__(self, size: int, rng: Random, *, loss: float = 0.0, silent: float = 0.0) -> None:
        self.rng = rng
        self.nodes = [_node(rng, i) for i in range(size)]
        self.silent = {n.node_id for n in self.nodes if rng.random() < silent}
        self.loss = loss
        self.known: dict[bytes, list[NodeInfo]] = {}
        for node in self.nodes:
            me = int.from_bytes(node.node_id)
            by_distance = sorted(self.nodes, key=lambda o: int.from_bytes(o.node_id) ^ me)
            self.known[node.node_id] = by_distance[1:9] + rng.sample(self.nodes, 8)
        self.peers = {
            n.node_id: PeerAddress(IPv4Address("192.0.2.1"), 1000 + i)
            for i, n in enumerate(self.nodes)
        }

    def closest(self, target: NodeId, count: int, exclude: set[bytes]) -> list[bytes]:
        alive = [n for n in self.nodes if n.node_id not in exclude]
        alive.sort(key=lambda n: int.from_bytes(n.node_id) ^ int(target))
        return [n.node_id for n in alive[:count]]

    def answer(self, node: NodeInfo, target: NodeId) -> Response | None:
        if node.node_id in self.silent or self.rng.random() < self.loss:
            return None
        known = sorted(
            self.known[node.node_id], key=lambda o: int.from_bytes(o.node_id) ^ int(target)
        )[:8]
        return Response(
            transaction_id=b"t",
            node_id=node.node_id,
            nodes=tuple(known),
            token=b"tok" + node.node_id[:2],
            values=(self.peers[node.node_id],),
        )


def run(net: FakeNetwork, lookup: Lookup, target: NodeId, latency: float = 0.05) -> float:
    """Drive ``lookup`` on virtual time; return the virtual time it took."""
    now = 0.0
    pending: list[tuple[float, NodeInfo, Response]] = []
    for _ in range(10_000):
        for node, _kind in lookup.next_queries(now):
            reply = net.answer(node, target)
            if reply is not None:
                pending.append((now + latency * (1 + net.rng.random()), node, reply))
        assert lookup.outstanding <= lookup.alpha
        if lookup.done:
            return now
        pending.sort(key=lambda p: p[0])
        deadline = lookup.next_deadline()
        if pending and (deadline is None or pending[0][0] <= deadline):
            now, node, reply = pending.pop(0)
            lookup.on_response(node, reply, now)
        else:
            assert deadline is not None
            now = deadline
            lookup.handle_timer(now)
    raise AssertionError("lookup did not terminate")


@pytest.mark.parametrize("seed", range(5))
def test_converges_on_true_closest(seed: int) -> None:
    rng = Random(seed)
    net = FakeNetwork(300, rng)
    target = NodeId.random(rng)
    lookup = Lookup(target, "get_peers", rng.sample(net.nodes, 8))
    elapsed = run(net, lookup, target)
    result = lookup.result()
    assert [n.node.node_id for n in result.nodes] == net.closest(target, 8, set())
    assert all(n.token == b"tok" + n.node.node_id[:2] for n in result.nodes)
    assert result.peers
    assert len(set(result.peers)) == len(result.peers)
    assert result.queries <= lookup.max_queries
    assert elapsed < 5


@pytest.mark.parametrize("seed", range(4))
def test_silent_nodes_and_loss(seed: int) -> None:
    rng = Random(100 + seed)
    net = FakeNetwork(300, rng, silent=0.2)
    target = NodeId.random(rng)
    lookup = Lookup(target, "find_node", rng.sample(net.nodes, 8))
    run(net, lookup, target)
    got = [n.node.node_id for n in lookup.result().nodes]
    assert got == net.closest(target, 8, net.silent)
    # With random loss as well, most of the true closest are still found.
    net2 = FakeNetwork(300, Random(200 + seed), silent=0.1, loss=0.1)
    lookup2 = Lookup(target, "find_node", Random(seed).sample(net2.nodes, 8))
    run(net2, lookup2, target)
    truth = set(net2.closest(target, 8, net2.silent))
    assert len(truth & {n.node.node_id for n in lookup2.result().nodes}) >= 6


def test_slow_query_frees_slot_and_late_answer_counts() -> None:
    rng = Random(1)
    seeds = [_node(rng, i) for i in range(4)]
    lookup = Lookup(NodeId(bytes(20)), "find_node", seeds, alpha=1, slow_after=1, timeout=5)
    ((first, _),) = lookup.next_queries(0.0)
    assert lookup.next_queries(0.5) == []
    assert lookup.next_deadline() == 1.0
    ((second, _),) = lookup.next_queries(1.0)
    assert second != first
    late = Response(transaction_id=b"t", node_id=first.node_id, nodes=())
    assert lookup.on_response(first, late, 2.0)
    assert not lookup.on_response(first, late, 2.0)  # not outstanding any more


def test_ignores_unsolicited_and_wrong_id() -> None:
    rng = Random(2)
    seeds = [_node(rng, i) for i in range(3)]
    stranger = _node(rng, 50)
    lookup = Lookup(NodeId(bytes(20)), "find_node", seeds)
    sent = [n for n, _ in lookup.next_queries(0.0)]
    reply = Response(transaction_id=b"t", node_id=stranger.node_id, nodes=(stranger,))
    assert not lookup.on_response(stranger, reply, 0.1)
    assert lookup.on_response(sent[0], reply, 0.1)  # wrong id: counted as a failure
    assert all(r.node != sent[0] for r in lookup.result().nodes)
    assert lookup.next_queries(0.2) == []  # stranger was not learned from a liar


def test_get_keeps_verified_highest_seq() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from bip_dht._items import MutableItem

    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    old, new = MutableItem.create(key, b"i1e", 1), MutableItem.create(key, b"i2e", 2)
    rng = Random(3)
    seeds = [_node(rng, i) for i in range(3)]
    lookup = Lookup(NodeId(old.target), "get", seeds)
    sent = [n for n, _ in lookup.next_queries(0.0)]

    def reply(node: NodeInfo, item: MutableItem, sig: bytes) -> Response:
        return Response(
            transaction_id=b"t",
            node_id=node.node_id,
            v=int(item.value[1:-1]),
            k=item.public_key,
            seq=item.seq,
            sig=sig,
            token=b"x",
        )

    lookup.on_response(sent[0], reply(sent[0], old, old.signature), 0.1)
    lookup.on_response(sent[1], reply(sent[1], new, old.signature), 0.1)  # forged: ignored
    assert lookup.result().item == old
    lookup.on_response(sent[2], reply(sent[2], new, new.signature), 0.1)
    assert lookup.result().item == new
    assert lookup.done


def test_bad_arguments() -> None:
    with pytest.raises(LocalProtocolError):
        Lookup(NodeId(bytes(20)), "nope", [])  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Lookup(NodeId(bytes(20)), "get", [], alpha=0)
    with pytest.raises(LocalProtocolError):
        Lookup(NodeId(bytes(20)), "get", [], salt=bytes(65))
    with pytest.raises(LocalProtocolError):
        Lookup(NodeId(bytes(20)), ["get"], [])  # type: ignore[arg-type]
    assert Lookup(NodeId(bytes(20)), "get", []).done


_ids = st.binary(min_size=20, max_size=20)
_infos = st.builds(
    NodeInfo,
    _ids,
    st.builds(
        PeerAddress,
        st.integers(0, 40).map(lambda i: IPv4Address(0x0A000000 + i)),
        st.integers(1, 3),
    ),
)


@settings(max_examples=60, deadline=None)
@given(
    seeds=st.lists(_infos, max_size=10),
    events=st.lists(
        st.tuples(
            st.integers(0, 3), st.integers(0, 30), st.lists(_infos, max_size=8), st.floats(0, 3)
        ),
        max_size=80,
    ),
    kind=st.sampled_from(["find_node", "get_peers", "get"]),
)
def test_random_responses(
    seeds: list[NodeInfo], events: list[tuple[int, int, list[NodeInfo], float]], kind: LookupKind
) -> None:
    lookup = Lookup(NodeId(bytes(20)), kind, seeds, max_queries=20)
    now = 0.0
    sent: list[NodeInfo] = []
    ids: set[bytes] = set()
    for action, pick, nodes, step in events:
        now += step
        for node, _ in lookup.next_queries(now):
            assert node.node_id not in ids
            ids.add(node.node_id)
            sent.append(node)
        assert lookup.outstanding <= lookup.alpha
        assert lookup.queries_sent <= 20
        if not sent:
            continue
        target = sent[pick % len(sent)]
        if action == 0:
            lookup.on_error(target, now)
        elif action == 1:
            lookup.handle_timer(now)
        else:
            lookup.on_response(
                target,
                Response(transaction_id=b"t", node_id=target.node_id, nodes=tuple(nodes)),
                now,
            )
    # Whatever happened, the lookup terminates once every timer has run.
    for _ in range(200):
        lookup.next_queries(now)
        deadline = lookup.next_deadline()
        if lookup.done or deadline is None:
            break
        now = deadline
        lookup.handle_timer(now)
    lookup.next_queries(now)
    assert lookup.done
    assert len(lookup.result().nodes) <= lookup.k


def test_get_immutable_item_checks_target() -> None:
    from bip_bencode import encode
    from bip_dht._items import ImmutableItem

    rng = Random(4)
    seeds = [_node(rng, i) for i in range(2)]
    item = ImmutableItem(encode(b"hello"))
    lookup = Lookup(NodeId(item.target), "get", seeds)
    sent = [n for n, _ in lookup.next_queries(0.0)]
    wrong = Response(transaction_id=b"t", node_id=sent[0].node_id, v=b"other")
    lookup.on_response(sent[0], wrong, 0.1)
    assert lookup.result().item is None
    right = Response(transaction_id=b"t", node_id=sent[1].node_id, v=b"hello")
    lookup.on_response(sent[1], right, 0.1)
    assert lookup.result().item == item


def test_caps_on_candidates_and_queries() -> None:
    rng = Random(5)
    seeds = [_node(rng, i) for i in range(3)]
    lookup = Lookup(NodeId(bytes(20)), "find_node", seeds, k=2, max_queries=5)
    now = 0.0
    fresh = 0
    for _ in range(50):
        batch = lookup.next_queries(now)
        if not batch:
            break
        for node, _kind in batch:
            # Each flood is closer to the target than everything before, so the walk goes on.
            bits = 150 - fresh // 10
            flood = tuple(
                NodeInfo(
                    (rng.getrandbits(bits) | 1 << bits).to_bytes(20),
                    # one per /24: a lookup keeps one learned node per network
                    PeerAddress(IPv4Address(0x0B000000 + ((fresh + i) << 8)), 1),
                )
                for i in range(40)
            )
            fresh += 40
            reply = Response(transaction_id=b"t", node_id=node.node_id, nodes=flood)
            lookup.on_response(node, reply, now)
            assert len(lookup._entries) <= lookup.max_candidates
        now += 0.1
    assert lookup.queries_sent == 5
    assert lookup.done
    assert len(lookup.result().nodes) == 2


def test_one_per_ip() -> None:
    rng = Random(6)
    address = PeerAddress(IPv4Address("10.9.9.9"), 1)
    twins = [NodeInfo(rng.randbytes(20), address) for _ in range(3)]
    assert len(Lookup(NodeId(bytes(20)), "find_node", twins).next_queries(0.0)) == 1
    other_ports = [NodeInfo(rng.randbytes(20), PeerAddress(address.host, p)) for p in (1, 2)]
    relaxed = Lookup(NodeId(bytes(20)), "find_node", other_ports, one_per_ip=False)
    assert len(relaxed.next_queries(0.0)) == 2


def test_one_learned_node_per_network() -> None:
    # The hunt's Sybil: the host owning 2001:db8:1::/64 answers with 8 made-up ids closer to
    # the target than anything, at made-up addresses of its /64. As libtorrent's add_entry
    # (restrict_search_ips) does, one of them gets in: the attacker's /64 holds its own seed
    # entry and that one, and the honest nodes keep the other k - 2 places.
    target = NodeId(bytes(20))
    honest = [
        NodeInfo(bytes([0x40 + i]) + bytes(19), PeerAddress.parse(f"[2001:db8:{i + 1}::1]:6881"))
        for i in range(8)
    ]
    lookup = Lookup(target, "get_peers", honest)
    attacker = lookup.next_queries(0.0)[0][0]
    assert str(attacker.address.host) == "2001:db8:1::1"
    fake = tuple(
        NodeInfo(bytes(19) + bytes([i + 1]), PeerAddress.parse(f"[2001:db8:1::{i + 2}]:6881"))
        for i in range(8)
    )
    reply = Response(transaction_id=b"t", node_id=attacker.node_id, nodes6=fake)
    assert lookup.on_response(attacker, reply, 0.1)
    top = [entry.info for entry in lookup._top()]
    assert len(top) == 8
    invented = [info for info in top if info in fake]
    assert len(invented) == 1
    assert sum(str(info.address.host).startswith("2001:db8:1:") for info in top) == 2
    # IPv4: one learned node per /24, from answers and from add_candidates alike; the seeds
    # (our table's nodes) are exempt: two of them in one /24 are both queried.
    seeds = [
        NodeInfo(bytes([0x80 + i]) + bytes(19), PeerAddress.parse(f"198.51.100.{i + 1}:1"))
        for i in range(2)
    ]
    lookup4 = Lookup(target, "find_node", seeds)
    assert len(lookup4.next_queries(0.0)) == 2
    lookup4.add_candidates(
        NodeInfo(bytes(19) + bytes([i + 1]), PeerAddress.parse(f"203.0.113.{i + 1}:1"))
        for i in range(5)
    )
    lookup4.add_candidates(
        [NodeInfo(bytes(19) + bytes([0x10]), PeerAddress.parse("198.51.100.77:1"))]
    )
    hosts = [str(entry.info.address.host) for entry in lookup4._entries]
    assert hosts.count("203.0.113.1") == 1  # the closest of the /24 won
    assert sum(h.startswith("203.0.113.") for h in hosts) == 1
    assert "198.51.100.77" in hosts  # the seeds hold no network
    # Without one_per_ip the network rule is off too.
    relaxed = Lookup(target, "find_node", seeds, one_per_ip=False)
    relaxed.add_candidates(
        NodeInfo(bytes(19) + bytes([i + 1]), PeerAddress.parse(f"203.0.113.{i + 1}:1"))
        for i in range(5)
    )
    assert len(relaxed._entries) == 7


def test_local_networks_exempt_in_lookups() -> None:
    # As in the routing table, the addresses BEP 42 exempts (the simulator's 10/8, a LAN,
    # loopback) hold no network: many honest nodes share such a /24. One per IP still holds.
    rng = Random(9)
    seed = NodeInfo(rng.randbytes(20), PeerAddress.parse("10.0.0.1:1"))
    lookup = Lookup(NodeId(bytes(20)), "find_node", [seed])
    node = lookup.next_queries(0.0)[0][0]
    learned = (
        *(NodeInfo(rng.randbytes(20), PeerAddress.parse(f"10.0.0.{i}:1")) for i in range(2, 6)),
        *(NodeInfo(rng.randbytes(20), PeerAddress.parse(f"192.168.1.{i}:1")) for i in (1, 2)),
        NodeInfo(rng.randbytes(20), PeerAddress.parse("10.0.0.2:2")),  # a second id at an IP
    )
    lookup.on_response(node, Response(transaction_id=b"t", node_id=node.node_id, nodes=learned), 1)
    assert len(lookup._entries) == 7
