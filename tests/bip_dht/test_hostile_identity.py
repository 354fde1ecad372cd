"""A hostile identity campaign: Sybils against a running node's routing table and external
address vote (real UDP on loopback), and against the /24 rule in the core.

libtorrent keeps one node per IP in its table and one per /24 (IPv4) or /64 (IPv6) in a
bucket; its ip_voter needs distinct voters. The node under attack binds 127.0.0.2.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from ipaddress import IPv4Address, ip_address
from typing import Any

import pytest
import trio
from _hostile import honest_still_served, no_errors

from bip_bencode import BencodeError, decode, encode
from bip_dht._node import DHTNode
from bip_dht._node_config import DHTConfig
from bip_dht._node_id import NodeId
from bip_dht._routing import Admission, RoutingTable
from bip_dht._shell import DHT, open_dht
from bip_handshake import NodeInfo, PeerAddress

CONFIG = DHTConfig(query_timeout=1.0, slow_after=0.3, external_ip_votes=3)
HASH = bytes.fromhex("ba" * 20)
REPORTED = PeerAddress.parse("1.2.3.4:6881")  # the address the Sybils say they see us at


class Sybil:
    """One socket of an attacker: answers every query with its own id and a made-up ``ip``."""

    def __init__(self, sock: trio.socket.SocketType, node_id: bytes) -> None:
        self.sock = sock
        self.node_id = node_id
        host, port = sock.getsockname()[:2]
        self.address = PeerAddress(ip_address(host), port)

    async def serve(self) -> None:
        reported = REPORTED.host.packed + REPORTED.port.to_bytes(2, "big")
        while True:
            data, source = await self.sock.recvfrom(2048)
            try:
                query = decode(data)
            except BencodeError:
                continue
            if not isinstance(query, dict) or query.get(b"y") != b"q":
                continue
            body: dict[bytes, Any] = {b"id": self.node_id, b"nodes": b""}
            reply = {b"t": query[b"t"], b"y": b"r", b"r": body, b"ip": reported}
            await self.sock.sendto(encode(reply), source)


@asynccontextmanager
async def sybils(hosts: list[str], rng: random.Random) -> AsyncIterator[list[Sybil]]:
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        out = []
        for host in hosts:
            sock = stack.enter_context(trio.socket.socket(type=trio.socket.SOCK_DGRAM))
            await sock.bind((host, 0))
            sybil = Sybil(sock, rng.randbytes(20))
            out.append(sybil)
            nursery.start_soon(sybil.serve)
        yield out
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def target(config: DHTConfig = CONFIG) -> AsyncIterator[DHT]:
    async with open_dht("127.0.0.2:0", config=config, rng=random.Random(1)) as dht:
        yield dht


def held_hosts(dht: DHT) -> list[Any]:
    return [e.node.address.host for e in dht.node.table().entries(trio.current_time())]


async def test_many_ids_from_one_ip_hold_one_table_slot(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    rng = random.Random(11)
    with trio.fail_after(20):
        async with target() as dht:
            entry = dht.addresses[0]
            # queries with a fresh id from a fresh port each (under the rate limiter's burst)
            async with AsyncExitStack() as stack:
                for i in range(35):
                    sock = stack.enter_context(trio.socket.socket(type=trio.socket.SOCK_DGRAM))
                    await sock.bind(("127.0.0.10", 0))
                    body = {b"id": rng.randbytes(20), b"target": rng.randbytes(20)}
                    query: dict[bytes, Any] = {
                        b"t": b"s%d" % i,
                        b"y": b"q",
                        b"q": b"find_node",
                        b"a": body,
                    }
                    await sock.sendto(encode(query), (str(entry.host), entry.port))
                await trio.sleep(0.2)
            assert held_hosts(dht).count(IPv4Address("127.0.0.10")) <= 1
            # and answers: twenty sockets of one IP, twenty ids, all answering our pings
            async with sybils(["127.0.0.11"] * 20, rng) as crowd:
                for sybil in crowd:
                    await dht.ping(sybil.address)
                assert held_hosts(dht).count(IPv4Address("127.0.0.11")) <= 1
                hosts = held_hosts(dht)
                assert len(hosts) == len(set(hosts))
                # one IP's votes are one vote however many ports and ids it answers from
                assert dht.statistics().external_addresses == {}
            await honest_still_served(dht, CONFIG, HASH)
    no_errors(caplog)


async def test_the_vote_needs_distinct_voters(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    rng = random.Random(12)
    with trio.fail_after(15):
        async with target() as dht:
            old = dht.node_id
            async with sybils(["127.0.0.20"] * 10, rng) as crowd:
                for sybil in crowd:
                    assert await dht.ping(sybil.address) is not None
            assert dht.statistics().external_addresses == {}
            assert dht.node_id == old
            # three distinct responders agreeing is what external_ip_votes=3 asks for
            async with sybils(["127.0.0.21", "127.0.0.22", "127.0.0.23"], rng) as voters:
                for voter in voters:
                    assert await dht.ping(voter.address) is not None
            assert dht.statistics().external_addresses == {4: REPORTED}
            # 1.2.3.4 is global: we took a BEP 42 id for it
            assert dht.node_id != old
            assert dht.node_id.is_valid_for(REPORTED.host)
            await honest_still_served(dht, CONFIG, HASH)
    no_errors(caplog)


def test_one_network_per_bucket() -> None:
    """The core, with global addresses (loopback ones are exempt): 64 nodes of one /24 with
    made-up ids fill one slot per bucket at most; other networks are unaffected."""
    rng = random.Random(13)
    sybils = [
        NodeInfo(rng.randbytes(20), PeerAddress(IPv4Address(f"1.2.3.{i}"), 6881))
        for i in range(1, 65)
    ]
    honest = [
        NodeInfo(rng.randbytes(20), PeerAddress(IPv4Address(f"9.{i}.1.1"), 6881))
        for i in range(1, 9)
    ]
    node = DHTNode(rng=rng, now=0.0, node_id=bytes(20))  # the rule is on by default
    node.warm_table(sybils + honest, 0.0)
    table = node.table()
    per_bucket: dict[int, int] = {}
    for entry in table.entries(0.0):
        if entry.node.address.host in {s.address.host for s in sybils}:
            per_bucket[entry.bucket] = per_bucket.get(entry.bucket, 0) + 1
    assert per_bucket
    assert max(per_bucket.values()) == 1
    held = {entry.node.node_id for entry in table.entries(0.0)}
    assert all(node.node_id in held for node in honest)
    # without the rule only one node per IP applies
    loose = DHTNode(
        rng=random.Random(13),
        now=0.0,
        config=DHTConfig(restrict_routing_networks=False),
        node_id=bytes(20),
    )
    assert loose.warm_table(sybils, 0.0) > len(per_bucket)
    # local networks are exempt: a LAN's nodes share a /24
    lan = [
        NodeInfo(rng.randbytes(20), PeerAddress(IPv4Address(f"192.168.1.{i}"), 6881))
        for i in range(1, 9)
    ]
    strict = DHTNode(rng=rng, now=0.0, node_id=bytes(20))
    assert strict.warm_table(lan, 0.0) == len(lan)


def test_one_network_per_bucket_in_the_table() -> None:
    """The table itself: a second node of a held /24 is refused in the bucket, as a
    candidate and when a known node moves there; a bad holder no longer holds it; IPv6 counts
    /64s."""
    own = NodeId(bytes(20))
    table = RoutingTable(own, family=4, rng=random.Random(0), restrict_networks=True)
    first = NodeInfo((1 << 159).to_bytes(20, "big"), PeerAddress.parse("1.2.3.4:1"))
    second = NodeInfo((1 << 159 | 1).to_bytes(20, "big"), PeerAddress.parse("1.2.3.5:1"))
    elsewhere = NodeInfo((1 << 159 | 2).to_bytes(20, "big"), PeerAddress.parse("1.2.4.5:1"))
    assert table.heard_from(first, 0.0, responded=True) is Admission.ADDED
    assert table.heard_from(second, 0.0, responded=True) is Admission.REJECTED
    assert not table.heard_about(second, 0.0)
    assert table.heard_from(elsewhere, 0.0, responded=True) is Admission.ADDED
    # a known node that answers from the held network is not followed there
    moved = NodeInfo(elsewhere.node_id, PeerAddress.parse("1.2.3.9:1"))
    for _ in range(3):  # it must be bad first: a good node is never followed
        table.failed(elsewhere, 0.0)
    assert table.heard_from(moved, 1.0, responded=True) is Admission.REJECTED
    # the holder gone bad frees its network
    for _ in range(3):
        table.failed(first, 1.0)
    assert table.heard_from(second, 2.0, responded=True) is not Admission.REJECTED
    six = RoutingTable(own, family=6, rng=random.Random(0), restrict_networks=True)
    a = NodeInfo((1 << 159).to_bytes(20, "big"), PeerAddress.parse("[2001:db8::1]:1"))
    b = NodeInfo((1 << 159 | 1).to_bytes(20, "big"), PeerAddress.parse("[2001:db8::2]:1"))
    c = NodeInfo((1 << 159 | 2).to_bytes(20, "big"), PeerAddress.parse("[2001:db8:0:1::1]:1"))
    assert six.heard_from(a, 0.0, responded=True) is Admission.ADDED
    assert six.heard_from(b, 0.0, responded=True) is Admission.REJECTED
    assert six.heard_from(c, 0.0, responded=True) is Admission.ADDED
