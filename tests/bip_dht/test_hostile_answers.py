"""A hostile campaign of answers against a running node (real UDP on loopback).

The node under attack binds 127.0.0.2 and queries attackers, which answer by hand from other
127.0.0.x sockets: unsolicited answers, answers from the wrong address, answers that try to
poison the routing table, an endless supply of ever closer made-up nodes, garbage errors, and
a node that changes its id. No crash, no ERROR record, bounded sizes, and honest bip_dht
nodes can still ping, find, announce and get_peers through the attacked node.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from _hostile import honest_still_served, no_errors

from bip_bencode import BencodeError, decode, encode
from bip_dht._node import MAX_COUNTED_ERROR_CODES, OTHER_ERROR_CODES, DHTNode
from bip_dht._node_config import DHTConfig
from bip_dht._shell import DHT, open_dht
from bip_handshake import NodeInfo, PeerAddress

CONFIG = DHTConfig(query_timeout=1.0, slow_after=0.3)
HASH = bytes.fromhex("ab" * 20)

Answer = Callable[[dict[bytes, Any], "Responder"], Any]
"""What an attacker answers to a query: a message (bytes or a dictionary to bencode), or
None to stay silent."""


class Responder:
    """An attacker's socket that answers every query it gets with ``answer(query, self)``."""

    def __init__(self, sock: trio.socket.SocketType, answer: Answer) -> None:
        self.sock = sock
        self.answer = answer
        self.queries: list[dict[bytes, Any]] = []
        host, port = sock.getsockname()[:2]
        self.address = PeerAddress.parse(f"{host}:{port}")

    async def serve(self) -> None:
        while True:
            data, source = await self.sock.recvfrom(2048)
            try:
                message = decode(data)
            except BencodeError:
                continue
            if not isinstance(message, dict) or message.get(b"y") != b"q":
                continue
            self.queries.append(message)
            reply = self.answer(message, self)
            if reply is not None:
                out = reply if isinstance(reply, bytes) else encode(reply)
                await self.sock.sendto(out, source)


@asynccontextmanager
async def responders(hosts: list[str], answer: Answer) -> AsyncIterator[list[Responder]]:
    async with trio.open_nursery() as nursery:
        out = []
        for host in hosts:
            sock = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
            await sock.bind((host, 0))
            responder = Responder(sock, answer)
            out.append(responder)
            nursery.start_soon(responder.serve)
        try:
            yield out
        finally:
            nursery.cancel_scope.cancel()
            for responder in out:
                responder.sock.close()


def compact(node_id: bytes, address: PeerAddress) -> bytes:
    return node_id + address.host.packed + address.port.to_bytes(2, "big")


def response(query: dict[bytes, Any], node_id: bytes, **fields: Any) -> dict[bytes, Any]:
    body: dict[bytes, Any] = {b"id": node_id}
    body.update({key.encode(): value for key, value in fields.items()})
    return {b"t": query[b"t"], b"y": b"r", b"r": body}


@asynccontextmanager
async def target(**options: Any) -> AsyncIterator[DHT]:
    config = options.pop("config", CONFIG)
    async with open_dht("127.0.0.2:0", config=config, rng=random.Random(1), **options) as dht:
        yield dht


async def test_unsolicited_and_misdirected_answers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    rng = random.Random(5)
    with trio.fail_after(15):
        async with target() as dht:
            entry = dht.addresses[0]
            for host in range(10, 30):
                sock = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
                with sock:
                    await sock.bind((f"127.0.0.{host}", 0))
                    for tid in (rng.randbytes(2), rng.randbytes(1000), b""):
                        message: dict[bytes, Any] = {
                            b"t": tid,
                            b"y": b"r",
                            b"r": {b"id": rng.randbytes(20)},
                        }
                        await sock.sendto(encode(message), (str(entry.host), entry.port))
            # the real answerer's transaction id, from another port and from another IP
            captured: list[bytes] = []

            def silent(query: dict[bytes, Any], _: Responder) -> None:
                captured.append(query[b"t"])

            async with responders(["127.0.0.30"], silent) as [victim]:
                with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as forger:
                    await forger.bind(("127.0.0.30", 0))
                    with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as other:
                        await other.bind(("127.0.0.31", 0))
                        async with trio.open_nursery() as nursery:
                            result: list[NodeInfo | None] = []

                            async def ping() -> None:
                                result.append(await dht.ping(victim.address))

                            nursery.start_soon(ping)
                            while not captured:
                                await trio.sleep(0.01)
                            for sock in (forger, other):
                                message = {b"t": captured[0], b"y": b"r", b"r": {b"id": bytes(20)}}
                                await sock.sendto(encode(message), (str(entry.host), entry.port))
                        assert result == [None]
            stats = dht.statistics()
            assert stats.unmatched >= 60 + 2
            assert stats.table_size == 0
            assert stats.responses_received == 0
            await honest_still_served(dht, CONFIG, HASH)
    no_errors(caplog)


async def test_routing_table_poisoning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    rng = random.Random(6)
    with trio.fail_after(20):
        async with target() as dht:
            own = dht.addresses[0]
            liar_id = rng.randbytes(20)

            def poison(query: dict[bytes, Any], me: Responder) -> dict[bytes, Any]:
                nodes = [
                    compact(dht.node_id.value, own),  # our own id
                    compact(rng.randbytes(20), own),  # our own address
                    compact(rng.randbytes(20), PeerAddress.parse("127.0.0.40:0")),
                    compact(rng.randbytes(20), PeerAddress.parse("0.0.0.0:6881")),
                    compact(rng.randbytes(20), PeerAddress.parse("224.0.0.1:6881")),
                    compact(rng.randbytes(20), PeerAddress.parse("239.255.255.250:1900")),
                    compact(rng.randbytes(20), PeerAddress.parse("255.255.255.255:6881")),
                    compact(liar_id, me.address),  # itself again
                ]
                # and a crowd at one made-up IP (nobody listens there), as many as a datagram
                # holds
                nodes += [
                    compact(rng.randbytes(20), PeerAddress.parse(f"127.0.4.1:{1000 + i}"))
                    for i in range(47)
                ]
                return response(query, liar_id, nodes=b"".join(nodes), token=b"t")

            async with responders(["127.0.0.10"], poison) as [liar]:
                await dht.bootstrap([liar.address])
                for _ in range(3):
                    await dht.find_node(rng.randbytes(20))
                table = dht.node.table()
                entries = list(table.entries(trio.current_time()))
                addresses = {entry.node.address for entry in entries}
                assert all(address.is_connectable for address in addresses)
                assert own not in addresses
                assert dht.node_id.value not in {entry.node.node_id for entry in entries}
                # only the liar answered: nobody else is in the table, at most one per IP
                hosts = [entry.node.address.host for entry in entries]
                assert len(hosts) == len(set(hosts))
                assert [entry.node.address for entry in entries if entry.in_bucket] == [
                    liar.address
                ]
                assert table.candidate_count <= 8 * CONFIG.k
                # we never queried ourselves (an answer from us has another id) nor sent to
                # the broadcast address (the system refuses it)
                stats = dht.statistics()
                assert stats.id_mismatch == 0
                assert stats.send_errors == 0
            await honest_still_served(dht, CONFIG, HASH)
    no_errors(caplog)


async def test_endless_closer_nodes_end_the_lookup(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    rng = random.Random(7)
    goal = rng.randbytes(20)
    goal_int = int.from_bytes(goal, "big")
    hosts = [f"127.0.3.{i}" for i in range(1, 61)]
    depth = [8]
    addresses: list[PeerAddress] = []

    def closer(query: dict[bytes, Any], me: Responder) -> dict[bytes, Any]:
        # eight made-up nodes closer than any before, at other attackers' addresses
        depth[0] = min(depth[0] + 1, 150)
        nodes = b""
        for _ in range(8):
            made_up = goal_int ^ rng.getrandbits(160 - depth[0])
            nodes += compact(made_up.to_bytes(20, "big"), rng.choice(addresses))
        return response(query, me.address.host.packed * 5, nodes=nodes, token=b"tk")

    with trio.fail_after(20):
        async with target() as dht, responders(hosts, closer) as liars:
            addresses.extend(liar.address for liar in liars)
            await dht.bootstrap([liars[0].address])
            before = sum(dht.statistics().queries_sent.values())
            with trio.fail_after(8):
                found = await dht.find_node(goal)
            sent = sum(dht.statistics().queries_sent.values()) - before
            assert found
            # one query per attacker IP at most (restrict_search_ips), within the lookup's cap
            # (and a maintenance tick's few queries)
            assert sent <= len(hosts) + 20
            with trio.fail_after(8):
                async with dht.get_peers(goal) as search:
                    assert [peer async for peer in search] == []
        async with target() as dht:
            await honest_still_served(dht, CONFIG, HASH)
    no_errors(caplog)


async def test_garbage_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    bodies: list[Any] = [
        [],
        [b"x"],
        [201],
        [201, b"\xff" * 1000],
        [2**80, b"big code"],
        [-5, b"negative"],
        [203, [b"nested"]],
        {b"a": 1},
        b"a string",
        7,
    ]
    index = [0]

    def errors(query: dict[bytes, Any], _: Responder) -> dict[bytes, Any]:
        body = bodies[index[0] % len(bodies)]
        index[0] += 1
        return {b"t": query[b"t"], b"y": b"e", b"e": body}

    with trio.fail_after(25):
        async with target() as dht, responders(["127.0.0.10"], errors) as [liar]:
            for _ in bodies:
                assert await dht.ping(liar.address) is None
            # a made-up code in every answer: counted, in bounded memory
            bodies[:] = [[code, b"made up"] for code in range(1000, 1050)]
            for _ in bodies:
                assert await dht.ping(liar.address) is None
            stats = dht.statistics()
            assert len(stats.errors_received) <= MAX_COUNTED_ERROR_CODES + 1
            assert stats.errors_received[OTHER_ERROR_CODES] >= 10
            assert stats.table_size == 0
            assert stats.responses_received == 0
            await honest_still_served(dht, CONFIG, HASH)
    no_errors(caplog)


async def test_a_node_that_changes_its_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    ids = [bytes([1]) * 20, bytes([2]) * 20]
    current = [0]

    def changeling(query: dict[bytes, Any], _: Responder) -> dict[bytes, Any]:
        return response(query, ids[current[0]], nodes=b"")

    with trio.fail_after(15):
        async with target() as dht, responders(["127.0.0.10"], changeling) as [liar]:

            def held() -> list[bytes]:
                entries = dht.node.table().entries(trio.current_time())
                return [entry.node.node_id for entry in entries]

            assert await dht.ping(liar.address) is not None
            assert held() == [ids[0]]
            current[0] = 1
            # same IP and port, another id: the old entry goes (libtorrent evicts it too),
            # the new id is not taken on this answer
            assert await dht.ping(liar.address) is not None
            assert held() == []
            assert await dht.ping(liar.address) is not None
            assert held() == [ids[1]]
            for _ in range(10):  # flapping between two ids never holds both
                current[0] ^= 1
                await dht.ping(liar.address)
                assert len(held()) <= 1
            await honest_still_served(dht, CONFIG, HASH)
    no_errors(caplog)


def test_lookups_skip_our_own_address_and_broadcast() -> None:
    """The core: nodes listed at our bound address (or, bound to any address, at a loopback
    one with our port), at our voted external address, at 255.255.255.255 or in 0/8 are
    neither queried nor kept as candidates."""
    node = DHTNode(rng=random.Random(1), now=0.0, node_id=bytes(20))
    node.set_local_address(PeerAddress.parse("0.0.0.0:7000"))
    friend = NodeInfo((1 << 150).to_bytes(20, "big"), PeerAddress.parse("9.9.9.9:6881"))
    node.warm_table([friend], 0.0)
    node.find_node((1 << 140).to_bytes(20, "big"), 0.0)
    [(data, _)] = node.datagrams_to_send(0.0)
    query: Any = decode(data)
    tid = query[b"t"]
    liars = [
        PeerAddress.parse("127.0.0.1:7000"),
        PeerAddress.parse("127.0.0.9:7000"),
        PeerAddress.parse("255.255.255.255:6881"),
        PeerAddress.parse("0.1.2.3:6881"),
    ]
    good = PeerAddress.parse("8.8.4.4:6881")
    nodes = b"".join(
        compact((1 << 141 | i).to_bytes(20, "big"), address)
        for i, address in enumerate([*liars, good])
    )
    reply = response({b"t": tid}, friend.node_id, nodes=nodes)
    node.receive_datagram(encode(reply), friend.address, 0.1)
    assert [address for _, address in node.datagrams_to_send(0.1)] == [good]
    assert node.table().candidate_count <= 1
