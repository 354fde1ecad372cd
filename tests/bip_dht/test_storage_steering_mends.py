"""Mends for what a hostile hunt found in the stores and a lookup: one IPv6 /64 pushing every
IPv4 peer out of a swarm, one host evicting every small swarm or every single-source BEP 44
item, and one answer's ``nodes6`` seeding (unchecked) a dual-stack lookup's missing half."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from bip_bencode import decode, encode
from bip_dht import (
    DHTConfig,
    DHTNode,
    ImmutableItem,
    ItemStore,
    LocalProtocolError,
    LookupFinished,
    NodeId,
)
from bip_dht._krpc import decode_message
from bip_dht._lookup import Lookup
from bip_handshake import NodeInfo, PeerAddress

INFO_HASH = b"\xaa" * 20


class Asker:
    """Hand-made KRPC queries into a node, its reply to the asker out (sans-IO)."""

    def __init__(self, node: DHTNode) -> None:
        self.node = node
        self.serial = 0

    def ask(self, source: PeerAddress, method: bytes, args: dict[bytes, Any], now: float) -> Any:
        self.serial += 1
        query: dict[bytes, Any] = {
            b"t": self.serial.to_bytes(4, "big"),
            b"y": b"q",
            b"q": method,
            b"a": {b"id": random.Random(self.serial).randbytes(20), **args},
        }
        self.node.receive_datagram(encode(query), source, now)
        replies = [decode(d) for d, to in self.node.datagrams_to_send(now) if to == source]
        assert len(replies) == 1
        return replies[0]

    def announce(self, source: PeerAddress, info_hash: bytes, now: float) -> bool:
        """get_peers then announce_peer; False when the node gave no token."""
        reply = self.ask(source, b"get_peers", {b"info_hash": info_hash}, now)
        token = reply[b"r"].get(b"token")
        if token is None:
            return False
        args = {b"info_hash": info_hash, b"port": 6881, b"token": token}
        assert self.ask(source, b"announce_peer", args, now)[b"y"] == b"r"
        return True

    def values(self, source: PeerAddress, info_hash: bytes, now: float) -> list[bytes]:
        reply = self.ask(source, b"get_peers", {b"info_hash": info_hash}, now)
        values: list[bytes] = reply[b"r"].get(b"values", [])
        return values

    def put(self, source: PeerAddress, item: ImmutableItem, now: float) -> None:
        reply = self.ask(source, b"get", {b"target": item.target}, now)
        args = {b"token": reply[b"r"][b"token"], b"v": decode(item.value)}
        assert self.ask(source, b"put", args, now)[b"y"] == b"r"


def _v4(index: int) -> PeerAddress:
    return PeerAddress(IPv4Address(f"81.{index // 250}.{index % 250}.1"), 6881)


def test_one_ipv6_network_cannot_push_the_ipv4_peers_out_of_a_swarm() -> None:
    # Before: the per-hash cap was shared by both families and a full swarm dropped its least
    # recently announced peer, so 40 IPv6 addresses evicted every IPv4 peer. (One /64 now
    # holds at most max_peers_per_hash // 8 of a swarm's family: the flood comes from 40.)
    config = DHTConfig(max_peers_per_hash=20)
    node = DHTNode(rng=random.Random(1), now=0.0, families=(4, 6), config=config)
    asker = Asker(node)
    for index in range(10):
        assert asker.announce(_v4(index), INFO_HASH, float(index))
    flood = [PeerAddress(IPv6Address(f"2001:db8:1:{index + 1:x}::1"), 6881) for index in range(40)]
    taken = [asker.announce(address, INFO_HASH, 20.0) for address in flood]
    assert taken == [True] * 20 + [False] * 20  # the IPv6 half full: no token for a newcomer
    assert len(asker.values(PeerAddress.parse("82.0.0.1:6881"), INFO_HASH, 21.0)) == 10
    assert node.statistics().peers == 30
    # a peer already stored still gets a token and refreshes its entry
    assert asker.announce(flood[0], INFO_HASH, 1000.0)
    v6_asker = PeerAddress.parse("[2001:db8:2::1]:6881")
    assert len(asker.values(v6_asker, INFO_HASH, 1000.0)) == 20
    # at 1821 s only the refreshed one is live, and a newcomer has room again
    assert asker.values(v6_asker, INFO_HASH, 1821.0) == [flood[0].to_compact()]
    assert asker.announce(flood[30], INFO_HASH, 1821.0)


def test_a_flood_of_new_hashes_from_one_host_evicts_no_stored_swarm() -> None:
    # Before: a new hash at a full store evicted the smallest swarm, oldest first, so one host
    # within its rate limit emptied every one-peer swarm.
    config = DHTConfig(max_hashes=30)
    node = DHTNode(rng=random.Random(2), now=0.0, config=config)
    asker = Asker(node)
    rng = random.Random(3)
    honest = [rng.randbytes(20) for _ in range(30)]
    for index, info_hash in enumerate(honest):
        assert asker.announce(_v4(index), info_hash, index * 0.5)
    attacker = PeerAddress.parse("90.0.0.1:6881")
    now = 20.0
    for _ in range(60):
        assert not asker.announce(attacker, rng.randbytes(20), now)  # no token: full
        now += 0.5
    asker_of = PeerAddress.parse("82.0.0.1:6881")
    assert all(asker.values(asker_of, info_hash, now) for info_hash in honest)
    assert node.statistics().info_hashes == 30
    # a stored swarm still takes a newcomer
    assert asker.announce(attacker, honest[0], now)


def _near(own: bytes, bits: int, count: int) -> list[ImmutableItem]:
    """Items whose targets share their first *bits* bits with *own* (found by trying)."""
    prefix = int.from_bytes(own, "big") >> (160 - bits)
    found: list[ImmutableItem] = []
    serial = 0
    while len(found) < count:
        serial += 1
        item = ImmutableItem(encode(b"honest %d" % serial))
        if int.from_bytes(item.target, "big") >> (160 - bits) == prefix:
            found.append(item)
    return found


def test_a_put_flood_from_one_host_keeps_the_items_near_our_id() -> None:
    # Before: a full store evicted the item with the fewest sources, least recently put first:
    # one host's flood of one-off puts evicted every single-source item. Now the distance to
    # our id counts (libtorrent's immutable_item_comparator): honest puts go to the nodes
    # nearest their target, so what was put to us is near our id, and random junk is not.
    own = random.Random(4).randbytes(20)
    node = DHTNode(rng=random.Random(5), now=0.0, node_id=own, config=DHTConfig(max_items=20))
    asker = Asker(node)
    honest = _near(own, 8, 20)
    for index, item in enumerate(honest):
        asker.put(_v4(index), item, float(index))
    attacker = PeerAddress.parse("90.0.0.1:6881")
    now = 30.0
    for serial in range(60):
        asker.put(attacker, ImmutableItem(encode(b"junk %d" % serial)), now)
        now += 0.5
    kept = [item for item in honest if node._items.get(item.target, now) is not None]
    # the first junk put evicted an honest item farthest from our id (in bits; the newest of
    # those: a full store makes room for every new target, as libtorrent's does); the junk
    # then churned among itself
    own_int = int.from_bytes(own, "big")
    _, farthest = max(
        ((int.from_bytes(item.target, "big") ^ own_int).bit_length(), index)
        for index, item in enumerate(honest)
    )
    farthest_item = honest[farthest]
    assert kept == [item for item in honest if item is not farthest_item]
    assert len(node._items) == 20


def test_a_new_id_moves_what_the_item_store_keeps() -> None:
    store = ItemStore(max_items=10)
    own = random.Random(6).randbytes(20)
    near = _near(own, 8, 5)
    for index, item in enumerate(near):
        store.put(item, now=float(index), source=IPv4Address(f"81.0.0.{index + 1}"))
    store.node_id = own  # the distances are measured again from the new id
    for serial in range(40):
        junk = ImmutableItem(encode(b"junk %d" % serial))
        store.put(junk, now=10.0 + serial, source=IPv4Address("90.0.0.1"))
    assert all(item.target in store for item in near)
    assert len(store) == 10


def test_without_an_id_a_flood_of_one_off_puts_churns_among_itself() -> None:
    store = ItemStore(max_items=10)
    first = [ImmutableItem(encode(b"first %d" % serial)) for serial in range(10)]
    for index, item in enumerate(first):
        store.put(item, now=float(index), source=IPv4Address(f"81.0.0.{index + 1}"))
    for serial in range(40):
        junk = ImmutableItem(encode(b"junk %d" % serial))
        store.put(junk, now=10.0 + serial, source=IPv4Address("90.0.0.1"))
    assert sum(item.target in store for item in first) == 9  # the newest went for the first


def test_the_node_tells_the_item_store_its_new_id() -> None:
    own = random.Random(7).randbytes(20)
    node = DHTNode(rng=random.Random(8), now=0.0, node_id=own)
    assert node._items.node_id == own
    new = NodeId(random.Random(9).randbytes(20))
    node._change_id(new, 1.0)
    assert node._items.node_id == new.value


def test_a_bad_item_store_node_id_is_refused() -> None:
    for bad in (b"short", "x" * 20, NodeId(bytes(20))):
        try:
            ItemStore(node_id=bad)  # type: ignore[arg-type]
        except LocalProtocolError:
            continue
        raise AssertionError(f"{bad!r} was taken")


# -- a dual-stack lookup's missing half ------------------------------------------------------


def test_one_answer_cannot_fill_the_other_familys_lookup_from_one_network() -> None:
    # Before: the IPv6 nodes an IPv4 responder named became the seeds of the IPv6 half
    # (created on the spot, the IPv6 table being empty), and seeds skip the one-per-/64
    # rule: 8 made-up ids in one /64 took every place of the k closest.
    node = DHTNode(rng=random.Random(1), now=0.0, families=(4, 6))
    responder = PeerAddress.parse("81.1.1.1:6881")
    responder_id = bytes([0x80]) + bytes(19)
    node.warm_table([NodeInfo(responder_id, responder)], 0.0)
    node.find_node(bytes(20), 0.0)
    [(raw, to)] = node.datagrams_to_send(0.0)
    assert to == responder
    nodes6 = b"".join(
        bytes(19)
        + bytes([index + 1])
        + IPv6Address(f"2001:db8:1:1::{index + 1:x}").packed
        + (6881).to_bytes(2, "big")
        for index in range(30)
    )
    answer = {b"id": responder_id, b"nodes": b"", b"nodes6": nodes6}
    reply: dict[bytes, Any] = {b"t": decode_message(raw).transaction_id, b"y": b"r", b"r": answer}
    node.receive_datagram(encode(reply), responder, 0.1)
    now = 0.1
    asked: set[str] = set()
    for _ in range(20):
        out = node.datagrams_to_send(now)
        if not out:
            break
        for raw, to in out:
            asked.add(str(to.host))
            their_id = bytes(19) + bytes([int(to.host) & 0xFF])  # as named in nodes6
            empty = {b"id": their_id, b"nodes6": b""}
            node.receive_datagram(
                encode({b"t": decode_message(raw).transaction_id, b"y": b"r", b"r": empty}), to, now
            )
        now += 0.1
    assert asked == {"2001:db8:1:1::1"}  # the closest of the /64, and only it
    events = iter(node.next_event, None)
    finished = [e for e in events if isinstance(e, LookupFinished)]
    assert len(finished) == 1
    addresses = [str(n.node.address) for n in finished[0].result.nodes]
    assert addresses == ["[2001:db8:1:1::1]:6881", "81.1.1.1:6881"]


def test_learned_candidates_start_a_lookup_with_no_seed() -> None:
    learned = [
        NodeInfo(
            bytes(19) + bytes([index + 1]), PeerAddress.parse(f"[2001:db8:1:1::{index + 1:x}]:1")
        )
        for index in range(10)
    ] + [NodeInfo(bytes([1]) + bytes(19), PeerAddress.parse("[2001:db8:2::1]:1"))]
    lookup = Lookup(NodeId(bytes(20)), "find_node", [], learned=learned)
    assert not lookup.done
    asked = [str(node.address) for node, _ in lookup.next_queries(0.0)]
    assert asked == ["[2001:db8:1:1::1]:1", "[2001:db8:2::1]:1"]  # one per /64, closest first
    assert Lookup(NodeId(bytes(20)), "find_node", []).done
