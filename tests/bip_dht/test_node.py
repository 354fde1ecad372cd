"""DHTNode end to end: nodes wired to each other in memory on a fake clock (no network)."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from ipaddress import IPv4Address, ip_address
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_bencode import encode
from bip_dht._errors import LocalProtocolError
from bip_dht._items import ImmutableItem, MutableItem
from bip_dht._krpc import (
    AnnouncePeer,
    ErrorCode,
    ErrorReply,
    FindNode,
    Ping,
    Response,
    decode_message,
)
from bip_dht._node import DHTNode
from bip_dht._node_config import DHTConfig
from bip_dht._node_events import (
    AnnounceFinished,
    DHTEvent,
    LookupFinished,
    NodeIdChanged,
    PeersFound,
    PingFinished,
    PutFinished,
    SamplesFound,
)
from bip_dht._node_id import NodeId
from bip_dht._routing import NodeState, RoutingStateError
from bip_handshake import NodeInfo, PeerAddress

HASH = bytes.fromhex("aa" * 20)
E = TypeVar("E", bound=DHTEvent)


class Net:
    """Nodes exchanging datagrams through a heap of deliveries, on a virtual clock."""

    def __init__(self, *, latency: float = 0.01, seed: int = 1, start: float = 0.0) -> None:
        self.now = start
        self.latency = latency
        self.rng = random.Random(seed)
        self.nodes: dict[PeerAddress, DHTNode] = {}
        self.silent: set[PeerAddress] = set()
        self.hold: set[PeerAddress] = set()  # nodes whose events nobody reads
        self.events: dict[PeerAddress, list[DHTEvent]] = {}
        self.sent: list[tuple[PeerAddress, bytes, PeerAddress]] = []
        self.tap: Callable[[PeerAddress, bytes, PeerAddress], bytes | None] | None = None
        self._heap: list[tuple[float, int, PeerAddress, bytes, PeerAddress]] = []
        self._seq = 0

    def add(self, address: str, **kwargs: object) -> DHTNode:
        where = PeerAddress.parse(address)
        options: dict[str, object] = {
            "rng": random.Random(self.rng.getrandbits(32)),
            "now": self.now,
        }
        options.update(kwargs)
        node = DHTNode(**options)  # type: ignore[arg-type]
        self.nodes[where] = node
        self.events[where] = []
        return node

    def address(self, node: DHTNode) -> PeerAddress:
        return next(a for a, n in self.nodes.items() if n is node)

    def info(self, node: DHTNode) -> NodeInfo:
        return NodeInfo(node.node_id.value, self.address(node))

    def inject(self, data: bytes, source: PeerAddress, dest: PeerAddress) -> None:
        self._push(self.now, source, data, dest)

    def _push(self, when: float, source: PeerAddress, data: bytes, dest: PeerAddress) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, source, data, dest))

    def _source(self, node: DHTNode, family: int) -> PeerAddress:
        return next(a for a, n in self.nodes.items() if n is node and a.family == family)

    def _collect(self) -> None:
        for address, node in list(self.nodes.items()):
            for out, dest in node.datagrams_to_send(self.now):
                source = self._source(node, dest.family)
                data: bytes | None = out
                if self.tap is not None:
                    data = self.tap(source, out, dest)
                if data is None:
                    continue
                self.sent.append((source, data, dest))
                self._push(self.now + self.latency, source, data, dest)
            if address in self.hold:
                continue
            while (event := node.next_event()) is not None:
                self.events[address].append(event)

    def step(self) -> bool:
        self._collect()
        when = [
            (d, "timer", a) for a, n in self.nodes.items() if (d := n.next_deadline()) is not None
        ]
        best = min(when, key=lambda item: item[0]) if when else None
        if self._heap and (best is None or self._heap[0][0] <= best[0]):
            at, _, source, data, dest = heapq.heappop(self._heap)
            self.now = max(self.now, at)
            node = self.nodes.get(dest)
            if node is not None and dest not in self.silent:
                node.receive_datagram(data, source, self.now)
        elif best is not None:
            self.now = max(self.now, best[0])
            self.nodes[best[2]].handle_timer(self.now)
        else:
            return False
        self._collect()
        return True

    def run_until(self, done: Callable[[], bool], timeout: float = 120.0) -> None:
        limit = self.now + timeout
        for _ in range(200_000):
            if done():
                return
            if self.now > limit or not self.step():
                break
        assert done(), f"condition not met by t={self.now}"

    def run_for(self, seconds: float) -> None:
        limit = self.now + seconds
        for _ in range(200_000):
            self._collect()
            times = [d for n in self.nodes.values() if (d := n.next_deadline()) is not None]
            if self._heap:
                times.append(self._heap[0][0])
            if not times or min(times) > limit:
                break
            self.step()
        self.now = max(self.now, limit)

    def finished(self, node: DHTNode, op: int) -> DHTEvent | None:
        for event in self.events[self.address(node)]:
            if event.operation == op and not isinstance(event, PeersFound | SamplesFound):
                return event
        return None

    def wait(self, node: DHTNode, op: int, timeout: float = 120.0) -> DHTEvent:
        self.run_until(lambda: self.finished(node, op) is not None, timeout)
        event = self.finished(node, op)
        assert event is not None
        return event

    def of(self, node: DHTNode, kind: type[E]) -> list[E]:
        return [e for e in self.events[self.address(node)] if isinstance(e, kind)]


def private(i: int) -> str:
    return f"10.0.{i // 250}.{i % 250 + 1}:6881"


def confirm(net: Net, hub: DHTNode, nodes: list[DHTNode], *addresses: PeerAddress) -> None:
    """*hub* pings every node of *nodes* (at each of *addresses* when given, else at its
    address), as its maintenance would in a few ticks: a node hands out in its replies only
    nodes that have answered it (libtorrent's rule), so a hub that others join through must
    have heard each of them answer before it introduces them to each other."""
    for target in addresses or tuple(net.address(node) for node in nodes):
        event = net.wait(hub, hub.ping(target, net.now))
        assert isinstance(event, PingFinished)
        assert event.node is not None


def network(count: int, **kwargs: object) -> tuple[Net, list[DHTNode]]:
    """``count`` nodes, each bootstrapped from node 0 (which bootstraps from node 1), which
    has pinged them all first (:func:`confirm`); then four maintenance ticks, in which each
    node pings the joiners that only queried it so far (and fills sparse buckets), so that it
    passes them on too: replies list only nodes that answered (libtorrent's rule)."""
    net = Net()
    nodes = [net.add(private(i), **kwargs) for i in range(count)]
    confirm(net, nodes[0], nodes[1:])
    first = net.address(nodes[0])
    ops = [(node, node.bootstrap([first], net.now)) for node in nodes[1:]]
    ops.append((nodes[0], nodes[0].bootstrap([net.address(nodes[1])], net.now)))
    for node, op in ops:
        net.wait(node, op)
    net.run_for(4 * nodes[0].config.maintenance_interval)
    return net, nodes


# -- ping, bootstrap, find_node ----------------------------------------------------------------


def test_ping_end_to_end_puts_both_sides_in_the_tables() -> None:
    net = Net()
    a, b = net.add(private(0)), net.add(private(1))
    op = a.ping(net.address(b), net.now)
    event = net.wait(a, op)
    assert event == PingFinished(op, net.info(b))
    assert a.table().state_of(b.node_id, net.now) is NodeState.GOOD
    # B heard A's query: a candidate to query, in no bucket until it answers B (libtorrent)
    assert b.table().state_of(a.node_id, net.now) is None
    assert b.table().candidate_count == 1
    stats = a.statistics()
    assert stats.queries_sent[b"ping"] == 1
    assert stats.responses_received == 1
    assert b.statistics().queries_received[b"ping"] == 1


def test_querier_gets_confirmed_by_maintenance_ping() -> None:
    net = Net()
    a, b = net.add(private(0)), net.add(private(1))
    net.wait(a, a.ping(net.address(b), net.now))
    net.run_for(a.config.maintenance_interval + 1)
    # B queried A, its candidate, on its maintenance tick; A answered: now good in B's table
    assert b.table().state_of(a.node_id, net.now) is NodeState.GOOD


def test_a_querier_is_listed_in_our_replies_only_once_it_answered_us() -> None:
    net = Net()
    us, querier, asker = net.add(private(0)), net.add(private(1)), net.add(private(2))
    net.wait(querier, querier.ping(net.address(us), net.now))  # it only queried us
    assert us.table().state_of(querier.node_id, net.now) is None  # a candidate, no more

    def listed() -> bool:
        query = FindNode(transaction_id=b"fn", node_id=asker.node_id.value, target=b"\x01" * 20)
        net.inject(query.encode(), net.address(asker), net.address(us))
        net.run_for(1.0)
        (reply,) = [
            m
            for s, d, dest in net.sent
            if s == net.address(us)
            and dest == net.address(asker)
            and isinstance(m := decode_message(d), Response)
            and m.transaction_id == b"fn"
        ][-1:]
        assert reply.nodes is not None
        return net.info(querier) in reply.nodes

    assert not listed()
    event = net.wait(us, us.ping(net.address(querier), net.now))  # it answers our ping
    assert event == PingFinished(event.operation, net.info(querier))
    assert listed()


def test_add_node_joins_the_table_when_it_answers() -> None:
    net = Net()
    a, b = net.add(private(0)), net.add(private(1))
    a.add_node(net.address(b), net.now)
    a.add_node(PeerAddress.parse("10.9.9.9:1"), net.now)  # nobody there
    net.run_for(a.config.query_timeout + 1)
    assert a.table().state_of(b.node_id, net.now) is NodeState.GOOD
    assert len(a.table()) == 1
    assert not net.events[net.address(a)]  # no events for background pings


def test_query_with_bad_arguments_gets_error_203() -> None:
    a = DHTNode(rng=random.Random(1), now=0.0)
    source = PeerAddress.parse("10.0.0.9:7")
    bad = encode({b"t": b"xy", b"y": b"q", b"q": b"find_node", b"a": {b"id": b"n" * 20}})
    a.receive_datagram(bad, source, 0.0)
    ((data, dest),) = a.datagrams_to_send(0.0)
    reply = decode_message(data)
    assert dest == source
    assert isinstance(reply, ErrorReply)
    assert reply.code == ErrorCode.PROTOCOL
    assert reply.transaction_id == b"xy"
    assert a.statistics().errors_sent == {203: 1}


def test_ping_timeout_reports_none_and_counts() -> None:
    net = Net()
    a = net.add(private(0))
    op = a.ping(PeerAddress.parse("10.9.9.9:1"), net.now)
    event = net.wait(a, op)
    assert event == PingFinished(op, None)
    assert net.now == pytest.approx(a.config.query_timeout, abs=0.1)
    assert a.statistics().timeouts == 1


def test_bootstrap_and_find_node_converge_on_the_closest() -> None:
    net, nodes = network(40)
    for node in nodes:
        assert len(node.table()) >= 8
    # four ticks more: a node that only queried the others waits as their candidate, and
    # one whose bucket's candidates are all nodes an answer listed waits for its next query
    # (a querier never pushes those out); after the first four ticks a quarter of the
    # network knows the fifth closest here, after eight more than half
    net.run_for(4 * nodes[0].config.maintenance_interval)
    target = NodeId.random(random.Random(5))
    seeker = nodes[7]
    event = net.wait(seeker, seeker.find_node(target, net.now))
    assert isinstance(event, LookupFinished)
    assert event.kind == "find_node"
    found = [n.node.node_id for n in event.result.nodes]
    truth = sorted(
        (n.node_id.value for n in nodes if n is not seeker),
        key=lambda i: int(NodeId(i)) ^ int(target),
    )
    assert found == truth[:8]


def test_a_fresh_network_forms_unaided() -> None:
    """Ten nodes join through node 0, which has never heard of any of them: nobody pings
    anyone first (unlike :func:`network`). Replies list only nodes that answered, so node 0
    hands out nothing at first; its maintenance pings confirm the joiners, and their own
    refreshes then learn one another. Every table holds 8 within 90 s (about 30-45 s)."""
    net = Net()
    nodes = [net.add(private(i)) for i in range(11)]
    first = net.address(nodes[0])
    ops = [(node, node.bootstrap([first], net.now)) for node in nodes[1:]]
    net.run_until(lambda: all(len(node.table()) >= 8 for node in nodes), timeout=90.0)
    assert net.now <= 90.0
    everyone = {node.node_id.value for node in nodes}
    for node in nodes:
        known = {info.node_id for info in node.table().closest(node.node_id, net.now, 16)}
        assert known <= everyone - {node.node_id.value}
    for node, op in ops:
        assert isinstance(net.finished(node, op), LookupFinished)


@pytest.mark.parametrize("start", [-1000.0, 0.0, 1e9])
def test_any_clock_origin_works(start: float) -> None:
    net = Net(start=start)
    nodes = [net.add(private(i)) for i in range(6)]
    confirm(net, nodes[0], nodes[1:])  # nodes[0] introduces only nodes that answered it
    for node in nodes[1:]:
        net.wait(node, node.bootstrap([net.address(nodes[0])], net.now))
    net.silent.add(net.address(nodes[5]))  # one slow timer and one timeout on the way
    event = net.wait(nodes[1], nodes[1].find_node(nodes[5].node_id, net.now))
    assert isinstance(event, LookupFinished)
    assert len(event.result.nodes) == 4


def test_bootstrap_event_and_unknown_ids() -> None:
    net = Net()
    a, b, c = (net.add(private(i)) for i in range(3))
    net.wait(b, b.ping(net.address(c), net.now))
    op = a.bootstrap([net.address(b)], net.now)
    event = net.wait(a, op)
    assert isinstance(event, LookupFinished)
    assert event.kind == "bootstrap"
    assert event.target == a.node_id.value
    ids = {n.node.node_id for n in event.result.nodes}
    assert ids == {b.node_id.value, c.node_id.value}
    assert len(a.table()) == 2


def test_bootstrap_from_nothing_finishes_empty() -> None:
    net = Net()
    a = net.add(private(0))
    event = net.wait(a, a.bootstrap([], net.now))
    assert isinstance(event, LookupFinished)
    assert event.result.nodes == ()


def test_rebootstrap_when_the_table_is_empty() -> None:
    net = Net()
    a = net.add(private(0), config=DHTConfig(bootstrap_retry_interval=30.0))
    where = PeerAddress.parse(private(1))
    net.wait(a, a.bootstrap([where], net.now))  # nobody there yet
    assert len(a.table()) == 0
    b = net.add(private(1))
    net.run_for(60.0)
    assert a.table().state_of(b.node_id, net.now) is NodeState.GOOD


def test_rebootstrap_when_every_node_went_bad() -> None:
    net = Net()
    a = net.add(private(0), config=DHTConfig(bootstrap_retry_interval=30.0))
    b = net.add(private(1))
    where = net.address(b)
    net.wait(a, a.bootstrap([where], net.now))
    assert a.table().state_of(b.node_id, net.now) is NodeState.GOOD
    net.silent.add(where)  # b leaves; a notices once b is questionable and fails its pings
    net.run_for(17 * 60.0)
    assert a.table().state_of(b.node_id, net.now) is NodeState.BAD
    net.silent.discard(where)
    del net.nodes[where]
    newcomer = net.add(private(1))  # someone else at the bootstrap address
    net.run_for(60.0)
    assert a.table().state_of(newcomer.node_id, net.now) is NodeState.GOOD


def test_stale_bucket_is_refreshed() -> None:
    net, nodes = network(12)
    a = nodes[3]
    before = a.statistics().queries_sent.get(b"find_node", 0)
    net.run_for(16 * 60.0)
    assert a.statistics().queries_sent.get(b"find_node", 0) > before
    assert len(a.table()) >= 8


# -- get_peers, announce, BEP 33 -----------------------------------------------------------------


def test_announce_then_get_peers_finds_the_announcer() -> None:
    net, nodes = network(30)
    announcer, seeker = nodes[4], nodes[20]
    event = net.wait(announcer, announcer.announce(HASH, net.now, port=51413))
    assert isinstance(event, AnnounceFinished)
    assert event.announced_to >= 6
    op = seeker.get_peers(HASH, net.now)
    done = net.wait(seeker, op)
    assert isinstance(done, LookupFinished)
    assert done.kind == "get_peers"
    expected = PeerAddress(net.address(announcer).host, 51413)
    assert expected in done.result.peers
    found = [p for e in net.of(seeker, PeersFound) for p in e.peers]
    assert expected in found
    assert len(found) == len(set(found))


def test_announce_implied_port_and_seed_scrape() -> None:
    net, nodes = network(20)
    announcer, seeker = nodes[2], nodes[15]
    net.wait(announcer, announcer.announce(HASH, net.now, seed=True))
    done = net.wait(seeker, seeker.get_peers(HASH, net.now))
    assert net.address(announcer) in done.result.peers  # type: ignore[attr-defined]
    scrape = net.wait(seeker, seeker.get_peers(HASH, net.now, scrape=True))
    assert isinstance(scrape, LookupFinished)
    assert scrape.seeds_estimate is not None
    assert scrape.seeds_estimate >= 0.5
    assert scrape.peers_estimate is not None
    assert scrape.peers_estimate <= 0.5


def test_implied_port_announce_carries_the_local_port_too() -> None:
    net, nodes = network(10)
    announcer = nodes[2]
    announcer.set_local_port(4, 6881)
    net.wait(announcer, announcer.announce(HASH, net.now))
    sent = [decode_message(d) for s, d, _ in net.sent if s == net.address(announcer)]
    announces = [m for m in sent if isinstance(m, AnnouncePeer)]
    assert announces
    assert all(m.implied_port and m.port == 6881 for m in announces)
    with pytest.raises(LocalProtocolError):
        announcer.set_local_port(4, 70000)


def test_info_hash_object_is_accepted() -> None:
    from bip_metainfo import InfoHash

    net, nodes = network(10)
    op = nodes[1].get_peers(InfoHash(v1=HASH), net.now)
    event = net.wait(nodes[1], op)
    assert isinstance(event, LookupFinished)
    assert event.target == HASH


# -- BEP 44 --------------------------------------------------------------------------------------


def test_put_and_get_immutable() -> None:
    net, nodes = network(20)
    item = ImmutableItem(encode(b"Hello World!"))
    put = net.wait(nodes[3], nodes[3].put(item, net.now))
    assert isinstance(put, PutFinished)
    assert put.stored_at >= 6
    assert put.errors == ()
    got = net.wait(nodes[17], nodes[17].get(item.target, net.now))
    assert isinstance(got, LookupFinished)
    assert got.result.item == item


def test_put_and_get_mutable_with_salt_and_cas() -> None:
    net, nodes = network(20)
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    first = MutableItem.create(key, encode(b"one"), seq=1, salt=b"room")
    assert net.wait(nodes[3], nodes[3].put(first, net.now)).stored_at >= 6  # type: ignore[attr-defined]
    second = MutableItem.create(key, encode(b"two"), seq=2, salt=b"room")
    ok = net.wait(nodes[5], nodes[5].put(second, net.now, cas=1))
    assert isinstance(ok, PutFinished)
    assert ok.stored_at >= 6
    assert isinstance(ok.result.item, MutableItem)
    assert ok.result.item.seq == 1
    stale = MutableItem.create(key, encode(b"three"), seq=3, salt=b"room")
    refused = net.wait(nodes[6], nodes[6].put(stale, net.now, cas=1))
    assert isinstance(refused, PutFinished)
    assert refused.stored_at == 0
    assert refused.errors
    assert {code for _, code in refused.errors} == {ErrorCode.CAS_MISMATCH}
    got = net.wait(nodes[11], nodes[11].get(second.target, net.now, salt=b"room"))
    assert isinstance(got, LookupFinished)
    assert got.result.item == second
    # without the salt the signature cannot be checked: no item
    unsalted = net.wait(nodes[11], nodes[11].get(second.target, net.now))
    assert unsalted.result.item is None  # type: ignore[attr-defined]


# -- BEP 51 --------------------------------------------------------------------------------------


def test_sample_infohashes_reports_samples() -> None:
    net, nodes = network(15)
    net.wait(nodes[1], nodes[1].announce(HASH, net.now, port=7000))
    op = nodes[9].sample_infohashes(HASH, net.now)
    done = net.wait(nodes[9], op)
    assert isinstance(done, LookupFinished)
    assert done.kind == "sample_infohashes"
    samples = [e for e in net.of(nodes[9], SamplesFound) if e.operation == op]
    assert samples
    assert any(HASH in e.samples for e in samples)
    assert all(e.interval > 0 for e in samples)


# -- transactions ------------------------------------------------------------------------------


def test_forged_and_unmatched_answers_are_dropped_and_counted() -> None:
    net = Net(latency=1.0)
    a, b = net.add(private(0)), net.add(private(1))
    op = a.ping(net.address(b), net.now)
    net._collect()
    ((_, data, _),) = net.sent
    tid = decode_message(data).transaction_id
    forger = PeerAddress.parse("10.6.6.6:6881")
    forged = Response(transaction_id=tid, node_id=b"f" * 20).encode()
    a.receive_datagram(forged, forger, net.now)  # right tid, wrong address
    a.receive_datagram(Response(transaction_id=b"zz", node_id=b"f" * 20).encode(), forger, net.now)
    a.receive_datagram(b"garbage", forger, net.now)
    stats = a.statistics()
    assert stats.unmatched == 2
    assert stats.malformed == 1
    event = net.wait(a, op)
    assert event == PingFinished(op, net.info(b))  # the real answer still matched


def test_answer_with_another_id_fails_the_node() -> None:
    net = Net()
    a = net.add(private(0))
    fake = NodeInfo(b"x" * 20, PeerAddress.parse("10.7.0.1:6881"))
    a.warm_table([fake], net.now)
    op = a.find_node(b"y" * 20, net.now)
    ((data, dest),) = a.datagrams_to_send(net.now)
    query = decode_message(data)
    assert isinstance(query, FindNode)
    assert dest == fake.address
    reply = Response(transaction_id=query.transaction_id, node_id=b"z" * 20, nodes=())
    a.receive_datagram(reply.encode(), fake.address, net.now)
    assert a.statistics().id_mismatch == 1
    event = a.next_event()
    assert isinstance(event, LookupFinished)
    assert event.operation == op
    assert event.result.nodes == ()
    assert a.table().state_of(fake.node_id, net.now) is not NodeState.GOOD


def test_answer_missing_what_the_query_needs_is_invalid() -> None:
    net = Net()
    a = net.add(private(0))
    fake = NodeInfo(b"x" * 20, PeerAddress.parse("10.7.0.1:6881"))
    a.warm_table([fake], net.now)
    a.find_node(b"y" * 20, net.now)
    ((data, _),) = a.datagrams_to_send(net.now)
    tid = decode_message(data).transaction_id
    a.receive_datagram(
        Response(transaction_id=tid, node_id=fake.node_id).encode(), fake.address, 0.0
    )
    assert a.statistics().invalid_answers == 1


def test_error_answer_ends_ping_without_a_node() -> None:
    net = Net()
    a = net.add(private(0))
    where = PeerAddress.parse("10.7.0.1:6881")
    op = a.ping(where, 0.0)
    ((data, _),) = a.datagrams_to_send(0.0)
    tid = decode_message(data).transaction_id
    a.receive_datagram(ErrorReply(transaction_id=tid, code=201, message="no").encode(), where, 0.1)
    assert a.next_event() == PingFinished(op, None)
    assert a.statistics().errors_received == {201: 1}


def test_transaction_ids_are_unique_among_outstanding() -> None:
    a = DHTNode(rng=random.Random(3), now=0.0, config=DHTConfig(max_outstanding=300))
    for i in range(300):
        a.ping(PeerAddress(IPv4Address(0x0A100000 + i), 6881), 0.0)
    tids = [decode_message(d).transaction_id for d, _ in a.datagrams_to_send(0.0)]
    assert len(tids) == 300
    assert len(set(tids)) == 300
    assert all(len(t) == 2 for t in tids)


# -- BEP 42 --------------------------------------------------------------------------------------


def test_external_ip_votes_give_a_bep42_id() -> None:
    net = Net()
    config = DHTConfig(external_ip_votes=3)
    me = net.add("1.2.3.4:6881", config=config, node_id=b"\x00" * 20)
    # Four networks: the table keeps one node per /24 in a bucket.
    others = [net.add(f"5.6.{i}.7:6881", config=config) for i in range(1, 5)]
    old = me.node_id
    for other in others:
        net.wait(me, me.ping(net.address(other), net.now))
    changed = net.of(me, NodeIdChanged)
    assert len(changed) == 1
    assert changed[0].old == old
    new = me.node_id
    assert changed[0].new == new
    assert new.is_valid_for(ip_address("1.2.3.4"))
    assert me.external_addresses[4] == PeerAddress.parse("1.2.3.4:6881")
    # the table kept its nodes around the new id, confirmed as they were
    assert len(me.table()) == 4
    assert all(e.state is NodeState.GOOD for e in me.table().entries(net.now))
    assert me.table().own_id == new
    net.run_for(10.0)
    # others now answer the new id; queries we send carry it
    pong = net.wait(others[0], others[0].ping(net.address(me), net.now))
    assert pong.node.node_id == new.value  # type: ignore[attr-defined]


def test_exempt_addresses_keep_their_id() -> None:
    net = Net()
    config = DHTConfig(external_ip_votes=2)
    me = net.add(private(0), config=config)
    old = me.node_id
    for i in range(1, 4):
        other = net.add(private(i), config=config)
        net.wait(me, me.ping(net.address(other), net.now))
    assert me.node_id == old
    assert not net.of(me, NodeIdChanged)
    # a vote naming a private address is ignored, as libtorrent's ip_voter ignores it
    assert 4 not in me.external_addresses


def test_enforce_node_id_keeps_bad_ids_out() -> None:
    net = Net()
    me = net.add("1.2.3.4:6881", config=DHTConfig(enforce_node_id=True))
    liar = net.add("5.6.7.8:6881", node_id=b"\x00" * 20)
    net.wait(me, me.ping(net.address(liar), net.now))
    assert len(me.table()) == 0


# -- read-only ---------------------------------------------------------------------------------


def test_read_only_sends_ro_and_answers_nothing() -> None:
    net = Net()
    ro = net.add(private(0), config=DHTConfig(read_only=True))
    b = net.add(private(1))
    assert net.wait(ro, ro.ping(net.address(b), net.now)).node is not None  # type: ignore[attr-defined]
    query = decode_message(next(d for s, d, _ in net.sent if s == net.address(ro)))
    assert query.read_only
    assert len(b.table()) == 0  # BEP 43: a read-only querier is not added
    op = b.ping(net.address(ro), net.now)
    assert net.wait(b, op) == PingFinished(op, None)
    assert ro.statistics().read_only_ignored == 1


# -- IPv6 ----------------------------------------------------------------------------------------


def test_dual_stack_lookup_uses_both_families() -> None:
    net = Net()
    nodes = []
    for i in range(12):
        node = net.add(f"[fd00::{i + 1}]:6881", families=(4, 6))
        nodes.append(node)
        net.nodes[PeerAddress.parse(f"10.0.0.{i + 1}:6881")] = node
        net.events[PeerAddress.parse(f"10.0.0.{i + 1}:6881")] = net.events[net.address(node)]
    first6 = PeerAddress.parse("[fd00::1]:6881")
    first4 = PeerAddress.parse("10.0.0.1:6881")
    # the entry introduces only nodes that answered it, in each family's table
    others = [f"{f}:6881" for i in range(2, 13) for f in (f"[fd00::{i}]", f"10.0.0.{i}")]
    confirm(net, nodes[0], nodes[1:], *map(PeerAddress.parse, others))
    for node in nodes[1:]:
        net.wait(node, node.bootstrap([first6, first4], net.now))
    seeker = nodes[5]
    assert len(seeker.table(6)) >= 2
    assert len(seeker.table(4)) >= 2
    queries = [decode_message(d) for s, d, _ in net.sent if isinstance(decode_message(d), FindNode)]
    assert all(q.want == (b"n4", b"n6") for q in queries)  # type: ignore[union-attr]
    event = net.wait(seeker, seeker.find_node(b"q" * 20, net.now))
    families = {n.node.address.family for n in event.result.nodes}  # type: ignore[attr-defined]
    assert families == {4, 6}
    # an announce goes out over both families; a search finds both addresses
    announcer = nodes[8]
    done = net.wait(announcer, announcer.announce(HASH, net.now, port=7002))
    assert isinstance(done, AnnounceFinished)
    assert done.announced_to >= 16  # k per family
    found = net.wait(seeker, seeker.get_peers(HASH, net.now))
    assert isinstance(found, LookupFinished)
    assert set(found.result.peers) == {
        PeerAddress.parse("10.0.0.9:7002"),
        PeerAddress.parse("[fd00::9]:7002"),
    }


def test_v4_only_node_drops_v6_datagrams_and_refuses_v6_pings() -> None:
    a = DHTNode(rng=random.Random(1), now=0.0)
    ping = Ping(transaction_id=b"aa", node_id=b"n" * 20).encode()
    a.receive_datagram(ping, PeerAddress.parse("[fd00::1]:1"), 0.0)
    assert a.datagrams_to_send(0.0) == []
    assert a.statistics().wrong_family == 1
    with pytest.raises(LocalProtocolError):
        a.ping(PeerAddress.parse("[fd00::1]:1"), 0.0)
    # an IPv4-mapped source is IPv4
    a.receive_datagram(ping, PeerAddress.parse("[::ffff:10.0.0.9]:7"), 0.0)
    ((_, dest),) = a.datagrams_to_send(0.0)
    assert dest == PeerAddress.parse("10.0.0.9:7")


# -- bounds, cancel ------------------------------------------------------------------------------


def test_outstanding_transactions_are_bounded() -> None:
    a = DHTNode(rng=random.Random(1), now=0.0, config=DHTConfig(max_outstanding=10))
    ops = [a.ping(PeerAddress(IPv4Address(0x0A100000 + i), 1), 0.0) for i in range(25)]
    assert len(a.datagrams_to_send(0.0)) == 10
    assert a.statistics().outstanding == 10
    a.handle_timer(a.config.query_timeout)
    assert len(a.datagrams_to_send(a.config.query_timeout)) == 10  # the next ten
    ends = [a.next_event() for _ in range(10)]
    assert [e.operation for e in ends if e is not None] == ops[:10]


def test_lookups_queue_then_refuse() -> None:
    config = DHTConfig(max_lookups=1, max_queued=1)
    a = DHTNode(rng=random.Random(1), now=0.0, config=config)
    a.warm_table([NodeInfo(b"x" * 20, PeerAddress.parse("10.7.0.1:6881"))], 0.0)
    first = a.find_node(b"a" * 20, 0.0)
    second = a.find_node(b"b" * 20, 0.0)
    third = a.find_node(b"c" * 20, 0.0)
    event = a.next_event()
    assert isinstance(event, LookupFinished)
    assert event.operation == third
    stats = a.statistics()
    assert stats.lookups == 1
    assert stats.queued == 1
    assert stats.refused == 1
    a.cancel(second)
    assert a.next_event().operation == second  # type: ignore[union-attr]
    a.cancel(first)
    assert a.next_event().operation == first  # type: ignore[union-attr]
    a.cancel(first)  # twice: ignored
    assert a.next_event() is None


def test_progress_events_are_bounded_but_finished_events_kept() -> None:
    net, nodes = network(12)
    for i in range(6):
        net.wait(nodes[i + 4], nodes[i + 4].announce(HASH, net.now, port=1000 + i))
    seeker = net.add(private(30), config=DHTConfig(max_events=2))
    net.wait(seeker, seeker.bootstrap([net.address(nodes[0])], net.now))
    net.hold.add(net.address(seeker))  # nobody reads the seeker's events for a while
    ops = [seeker.get_peers(HASH, net.now) for _ in range(3)]
    net.run_for(30.0)
    assert seeker.statistics().events_dropped > 0
    held = []
    while (event := seeker.next_event()) is not None:
        held.append(event)
    assert len([e for e in held if isinstance(e, PeersFound)]) <= 2
    assert {e.operation for e in held if isinstance(e, LookupFinished)} == set(ops)


def test_timeouts_fail_the_node_in_the_table_and_the_lookup() -> None:
    net = Net()
    a = net.add(private(0))
    dead = NodeInfo(b"d" * 20, PeerAddress.parse("10.7.0.1:6881"))
    a.warm_table([dead], net.now)
    op = a.find_node(b"y" * 20, net.now)
    event = net.wait(a, op)
    assert isinstance(event, LookupFinished)
    assert event.result.nodes == ()
    (entry,) = list(a.table().entries(net.now))
    assert entry.failures == 1
    assert entry.state is NodeState.QUESTIONABLE
    # maintenance keeps pinging it; after MAX_FAILURES it is bad and, never replaced, dropped
    net.run_for(60.0)
    assert all(e.state is NodeState.BAD for e in a.table().entries(net.now))


def test_outbox_is_bounded() -> None:
    a = DHTNode(rng=random.Random(1), now=0.0, config=DHTConfig(max_outbox=3, rate_limit=False))
    for i in range(10):
        ping = Ping(transaction_id=bytes([i]), node_id=b"n" * 20).encode()
        a.receive_datagram(ping, PeerAddress.parse("10.0.0.9:7"), 0.0)
    assert len(a.datagrams_to_send(0.0)) == 3
    assert a.statistics().outbox_dropped == 7


def test_cancel_running_lookup_reports_partial_result() -> None:
    net, nodes = network(10)
    a = nodes[2]
    op = a.get_peers(HASH, net.now)
    a.cancel(op)
    net._collect()
    event = net.finished(a, op)
    assert isinstance(event, LookupFinished)
    net.run_for(30.0)  # late answers still feed the table, and nothing breaks
    assert [e for e in net.events[net.address(a)] if e.operation == op] == [event]


# -- state ---------------------------------------------------------------------------------------


def test_save_and_restore_state() -> None:
    net, nodes = network(12)
    a = nodes[4]
    state = a.save_state(net.now)
    b = DHTNode(rng=random.Random(9), now=net.now, state=state)
    assert b.node_id == a.node_id
    assert len(b.table()) == len(a.table())
    assert b.save_state(net.now) != b""
    other = DHTNode(rng=random.Random(9), now=0.0, state=state, node_id=b"q" * 20)
    assert other.node_id == NodeId(b"q" * 20)
    for bad in (
        b"junk",
        encode({b"id": b"short"}),
        encode([1]),
        encode({b"id": b"i" * 20, b"tables": 3}),
    ):
        with pytest.raises(RoutingStateError):
            DHTNode(rng=random.Random(1), now=0.0, state=bad)


def test_restored_node_bootstraps_from_saved_nodes() -> None:
    net, nodes = network(12)
    state = nodes[4].save_state(net.now)
    del net.nodes[net.address(nodes[4])]
    b = net.add(private(4), state=state)
    event = net.wait(b, b.bootstrap([], net.now))
    assert len(event.result.nodes) == 8  # type: ignore[attr-defined]


# -- arguments ----------------------------------------------------------------------------------


def test_bad_arguments_raise_our_error() -> None:
    a = DHTNode(rng=random.Random(1), now=0.0)
    for call in (
        lambda: a.find_node(b"short", 0.0),
        lambda: a.get_peers("x" * 20, 0.0),  # type: ignore[arg-type]
        lambda: a.announce(HASH, 0.0, port=0),
        lambda: a.get(HASH, 0.0, seq=-1),
        lambda: a.put("v", 0.0),  # type: ignore[arg-type]
        lambda: a.put(ImmutableItem(b"i1e"), 0.0, cas=1),
        lambda: a.ping("10.0.0.1:1", 0.0),  # type: ignore[arg-type]
        lambda: DHTNode(rng=random.Random(1), now=0.0, families=(5,)),  # type: ignore[arg-type]
        lambda: DHTNode(rng=random.Random(1), now=0.0, families=()),
        lambda: DHTConfig(slow_after=10.0, query_timeout=5.0),
        lambda: DHTConfig(max_outstanding=0),
        lambda: DHTConfig(read_only=1),  # type: ignore[arg-type]
    ):
        with pytest.raises(LocalProtocolError):
            call()


# -- untrusted input ----------------------------------------------------------------------------

_bencodable = st.recursive(
    st.integers(-(2**70), 2**70) | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=12), inner, max_size=6)
    ),
    max_leaves=20,
)
_keys = st.sampled_from(
    [b"t", b"y", b"q", b"a", b"r", b"e", b"id", b"nodes", b"values", b"ip", b"ro"]
)


@settings(max_examples=300, deadline=None)
@given(
    datagrams=st.lists(
        st.binary(max_size=200)
        | _bencodable.map(encode)
        | st.dictionaries(_keys, _bencodable, max_size=6).map(encode),
        max_size=8,
    ),
    answer_tid=st.booleans(),
)
def test_arbitrary_datagrams_never_raise(datagrams: list[bytes], answer_tid: bool) -> None:
    a = DHTNode(rng=random.Random(1), now=0.0, families=(4, 6))
    peer = PeerAddress.parse("10.0.0.2:6881")
    a.warm_table([NodeInfo(b"p" * 20, peer)], 0.0)
    a.find_node(b"q" * 20, 0.0)
    ((query, _),) = a.datagrams_to_send(0.0)
    tid = decode_message(query).transaction_id
    for i, raw in enumerate(datagrams):
        data = raw
        if answer_tid and raw.startswith(b"d") and raw.endswith(b"e") and b"1:t" not in raw:
            data = raw[:-1] + b"1:t2:" + tid + b"e"
        a.receive_datagram(data, peer if i % 2 else PeerAddress.parse("[fd00::1]:1"), 0.1 * i)
        a.datagrams_to_send(0.1 * i)
    a.handle_timer(100.0)
    while a.next_event() is not None:
        pass
    stats = a.statistics()
    assert stats.outstanding <= a.config.max_outstanding


@settings(max_examples=100, deadline=None)
@given(
    nodes=st.binary(min_size=0, max_size=26 * 8).map(lambda b: b[: len(b) - len(b) % 26]),
    values=st.lists(st.binary(min_size=6, max_size=6), max_size=10),
)
def test_structured_answers_never_raise(nodes: bytes, values: list[bytes]) -> None:
    a = DHTNode(rng=random.Random(1), now=0.0)
    peer = NodeInfo(b"p" * 20, PeerAddress.parse("10.0.0.2:6881"))
    a.warm_table([peer], 0.0)
    op = a.get_peers(HASH, 0.0)
    ((query, _),) = a.datagrams_to_send(0.0)
    tid = decode_message(query).transaction_id
    body: dict[bytes, Any] = {
        b"id": peer.node_id,
        b"nodes": nodes,
        b"values": values,
        b"token": b"tok",
    }
    a.receive_datagram(encode({b"t": tid, b"y": b"r", b"r": body}), peer.address, 0.1)
    for _ in range(20):
        a.datagrams_to_send(a.next_deadline() or 0.0)
        a.handle_timer(a.next_deadline() or 0.0)
    events = []
    while (event := a.next_event()) is not None:
        events.append(event)
    assert any(isinstance(e, LookupFinished) and e.operation == op for e in events)


# -- every operation ends exactly once -----------------------------------------------------------

_operation = st.sampled_from(
    ["ping", "dead_ping", "find_node", "get_peers", "announce", "get", "put", "sample", "cancel"]
)


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(st.tuples(_operation, st.integers(0, 5), st.floats(0.0, 3.0)), max_size=25),
    loss=st.sampled_from([0.0, 0.2, 0.6]),
    seed=st.integers(0, 2**16),
)
def test_every_operation_ends_with_one_finished_event(
    ops: list[tuple[str, int, float]], loss: float, seed: int
) -> None:
    config = DHTConfig(max_lookups=2, max_queued=3, max_outstanding=12, query_timeout=4.0)
    net = Net(seed=seed)
    nodes = [net.add(private(i), config=config) for i in range(6)]
    for node in nodes[1:]:
        net.wait(node, node.bootstrap([net.address(nodes[0])], net.now))
    for events in net.events.values():
        events.clear()
    lossy = random.Random(seed)
    net.tap = lambda _s, data, _d: None if lossy.random() < loss else data
    started: dict[int, list[int]] = {i: [] for i in range(6)}
    item = ImmutableItem(encode(b"x"))
    for name, which, pause in ops:
        node, now = nodes[which], net.now
        if name == "ping":
            op = node.ping(net.address(nodes[(which + 1) % 6]), now)
        elif name == "dead_ping":
            op = node.ping(PeerAddress.parse("10.9.9.9:1"), now)
        elif name == "find_node":
            op = node.find_node(NodeId.random(lossy), now)
        elif name == "get_peers":
            op = node.get_peers(HASH, now, scrape=pause > 1.5)
        elif name == "announce":
            op = node.announce(HASH, now, port=1000 + which)
        elif name == "get":
            op = node.get(item.target, now)
        elif name == "put":
            op = node.put(item, now)
        elif name == "sample":
            op = node.sample_infohashes(HASH, now)
        else:
            if started[which]:
                node.cancel(started[which][-1])
            continue
        started[which].append(op)
        net.run_for(pause)
    net.run_for(120.0)
    for index, node in enumerate(nodes):
        ends = [
            e.operation
            for e in net.events[net.address(node)]
            if not isinstance(e, PeersFound | SamplesFound | NodeIdChanged)
        ]
        assert sorted(ends) == sorted(started[index])
        stats = node.statistics()
        assert stats.outstanding <= config.max_outstanding  # maintenance pings go on
        assert stats.lookups <= config.refreshes_per_tick + 1
        assert stats.queued == 0
