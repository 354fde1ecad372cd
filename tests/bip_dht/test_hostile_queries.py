"""A hostile campaign of queries against a running node (real UDP on loopback).

The node under attack binds 127.0.0.2; attackers send raw KRPC from other 127.0.0.x sockets,
as a misbehaving node on the public DHT does every day. Every campaign is bounded in count and
time, and ends with the same checks: no crash, no ERROR record or traceback, the node's sizes
stay within their bounds, and honest bip_dht nodes (127.0.0.3 and .4) can still ping, find,
announce and get_peers through it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from hashlib import sha1
from typing import Any

import pytest
import trio
from _hostile import honest_still_served, no_errors
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bip_bencode import BencodeError, decode, encode
from bip_dht._items import mutable_target
from bip_dht._node import DHTNode
from bip_dht._node_config import DHTConfig
from bip_dht._serve import MAX_COUNTED_METHODS, OTHER_METHODS
from bip_dht._shell import DHT, open_dht
from bip_handshake import PeerAddress

# Short timeouts (a silent attacker costs a lookup half a second); small stores, so that the
# campaigns reach the bounds in a few hundred datagrams.
CONFIG = DHTConfig(query_timeout=1.5, slow_after=0.4, max_hashes=40, max_peers=200, max_items=30)
HASH = bytes.fromhex("cd" * 20)
ATTACKER = "127.0.0.10"


class Raw:
    """A raw UDP socket speaking KRPC by hand (the attacker)."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock

    async def send(self, message: dict[bytes, Any] | bytes, to: PeerAddress) -> None:
        data = message if isinstance(message, bytes) else encode(message)
        await self.sock.sendto(data, (str(to.host), to.port))

    async def receive(self, timeout: float = 1.0) -> dict[bytes, Any] | None:
        """The next reply (decoded; the node's own queries to us skipped), or None when none
        comes in time."""
        with trio.move_on_after(timeout):
            while True:
                data, _ = await self.sock.recvfrom(2048)
                try:
                    reply = decode(data)
                except BencodeError:
                    continue
                if isinstance(reply, dict) and reply.get(b"y") in (b"r", b"e"):
                    return reply
        return None

    async def ask(self, message: dict[bytes, Any], to: PeerAddress) -> dict[bytes, Any] | None:
        """Send *message*; its reply (by transaction id), or None."""
        await self.send(message, to)
        with trio.move_on_after(1.0):
            while True:
                reply = await self.receive()
                if reply is None or reply.get(b"t") == message[b"t"]:
                    return reply
        return None


@asynccontextmanager
async def raw(host: str) -> AsyncIterator[Raw]:
    sock = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    with sock:
        await sock.bind((host, 0))
        yield Raw(sock)


def query(method: bytes, tid: bytes = b"aa", **args: Any) -> dict[bytes, Any]:
    body: dict[bytes, Any] = {b"id": random.Random(method).randbytes(20)}
    body.update({key.encode(): value for key, value in args.items()})
    return {b"t": tid, b"y": b"q", b"q": method, b"a": body}


@asynccontextmanager
async def target() -> AsyncIterator[DHT]:
    async with open_dht("127.0.0.2:0", config=CONFIG, rng=random.Random(1)) as dht:
        yield dht


async def test_flood_from_one_ip_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with trio.fail_after(20):
        async with target() as dht, raw(ATTACKER) as attacker:
            entry = dht.addresses[0]
            methods = (b"ping", b"find_node", b"get_peers")
            for i in range(1500):
                method = methods[i % 3]
                await attacker.send(
                    query(method, target=HASH, info_hash=HASH, tid=i.to_bytes(2, "big")), entry
                )
            await trio.sleep(0.3)
            stats = dht.statistics()
            answered = stats.datagrams_sent
            # the burst, and the rate for the time the flood took, no more
            assert stats.rate_limited >= 1000
            assert answered <= CONFIG.query_burst + 200
            assert stats.table_size <= 1  # one IP, one node
            await honest_still_served(dht, CONFIG, HASH)
    no_errors(caplog)


async def test_flood_from_many_ips_keeps_bounds(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with trio.fail_after(25):
        async with target() as dht:
            entry = dht.addresses[0]
            for host in range(10, 70):
                async with raw(f"127.0.0.{host}") as attacker:
                    for i in range(15):  # 30 queries: under the burst
                        info_hash = random.Random(host * 1000 + i).randbytes(20)
                        # a get_peers for a fresh hash, then an announce with its token
                        reply = await attacker.ask(
                            query(b"get_peers", tid=b"g%d" % i, info_hash=info_hash), entry
                        )
                        # no answer (rate-limited), or no token: max_hashes are stored and
                        # a new hash is refused (libtorrent), so there is nothing to announce
                        if reply is None or b"token" not in reply[b"r"]:
                            continue
                        token = reply[b"r"][b"token"]
                        await attacker.send(
                            query(
                                b"announce_peer",
                                info_hash=info_hash,
                                port=1000 + i,
                                token=token,
                            ),
                            entry,
                        )
            await trio.sleep(0.2)
            stats = dht.statistics()
            assert stats.info_hashes <= CONFIG.max_hashes
            assert stats.peers <= CONFIG.max_peers
            # the table takes one node per IP and is bounded by its buckets
            assert stats.table_size + sum(stats.replacements.values()) <= 60
            # the store is full: a new hash gets no token (libtorrent), so honest announces
            # of it go to other nodes; a stored hash's swarm still takes honest peers
            async with raw("127.0.0.70") as asker:
                reply = await asker.ask(query(b"get_peers", info_hash=HASH), entry)
            assert reply is not None
            assert b"token" not in reply[b"r"]
            stored = random.Random(10 * 1000).randbytes(20)  # the flood's first hash
            await honest_still_served(dht, CONFIG, stored)
    no_errors(caplog)


async def test_announce_with_bad_tokens_and_ports(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with trio.fail_after(20):
        async with target() as dht, raw(ATTACKER) as attacker, raw("127.0.0.11") as other:
            entry = dht.addresses[0]
            reply = await attacker.ask(query(b"get_peers", info_hash=HASH), entry)
            assert reply is not None
            token = reply[b"r"][b"token"]
            # another IP's token, a made-up one, one for another hash, and ports out of range
            cases: list[dict[str, Any]] = [
                {"token": token, "port": 6881, "from": other},
                {"token": b"forged", "port": 6881},
                {"token": token, "port": 6881, "info_hash": bytes(20)},
                {"token": token, "port": 0},
                {"token": token, "port": 65536},
                {"token": token, "port": -1},
                {"token": token, "port": 2**70},
                {"token": token, "port": b"6881"},
            ]
            for case in cases:
                sender = case.pop("from", attacker)
                assert isinstance(sender, Raw)
                args = {"info_hash": HASH} | case
                answer = await sender.ask(query(b"announce_peer", **args), entry)
                assert answer is not None, case
                assert answer[b"y"] == b"e", case
            assert dht.statistics().peers == 0
            # implied_port takes the source port whatever port says
            answer = await attacker.ask(
                query(b"announce_peer", info_hash=HASH, port=0, implied_port=1, token=token),
                entry,
            )
            assert answer is not None
            assert answer[b"y"] == b"r"
            assert dht.statistics().peers == 1
            await honest_still_served(dht, CONFIG, HASH)
    no_errors(caplog)


async def test_bep44_put_abuse(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    public = key.public_key().public_bytes_raw()

    def signed(seq: int, value: bytes, salt: bytes = b"") -> bytes:
        body = (b"4:salt" + encode(salt) if salt else b"") + b"3:seqi%de1:v" % seq + value
        return key.sign(body)

    with trio.fail_after(25):
        async with target() as dht, raw(ATTACKER) as attacker:
            entry = dht.addresses[0]
            goal = mutable_target(public, b"")
            reply = await attacker.ask(query(b"get", target=goal), entry)
            assert reply is not None
            token = reply[b"r"][b"token"]

            async def put(**args: Any) -> int:
                answer = await attacker.ask(query(b"put", token=token, k=public, **args), entry)
                assert answer is not None
                return 0 if answer[b"y"] == b"r" else int(answer[b"e"][0])

            assert await put(seq=5, v=b"hello", sig=signed(5, encode(b"hello"))) == 0
            assert await put(seq=6, v=b"evil", sig=bytes(64)) == 206  # bad signature
            assert await put(seq=4, v=b"old", sig=signed(4, encode(b"old"))) == 302
            assert await put(seq=7, v=b"cas", sig=signed(7, encode(b"cas")), cas=99) == 301
            big = b"x" * 1001
            assert await put(seq=8, v=big, sig=signed(8, encode(big))) == 205
            salt = b"s" * 65
            assert await put(seq=9, v=b"a", sig=signed(9, b"1:a", salt), salt=salt) == 207
            assert dht.statistics().items == 1
        async with target() as dht:
            entry = dht.addresses[0]
            # thousands of distinct immutable targets, from many IPs: the store stays bounded
            for host in range(20, 60):
                async with raw(f"127.0.0.{host}") as attacker:
                    for i in range(15):  # 30 queries: under the burst
                        value = encode(b"%d-%d" % (host, i))
                        goal = sha1(value).digest()
                        get = query(b"get", tid=b"g%d" % i, target=goal)
                        reply = await attacker.ask(get, entry)
                        if reply is None:
                            continue
                        await attacker.send(
                            query(b"put", token=reply[b"r"][b"token"], v=decode(value)), entry
                        )
            await trio.sleep(0.2)
            assert dht.statistics().items <= CONFIG.max_items
            await honest_still_served(dht, CONFIG, HASH)
    no_errors(caplog)


async def test_garbage_queries(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    rng = random.Random(7)
    bomb = b"l" * 5000 + b"e" * 5000
    deep = b"d1:a" + b"l" * 400 + b"e" * 400 + b"1:q4:ping1:t2:aa1:y1:qe"
    garbage: list[bytes] = [
        b"",
        b"d",
        b"de",
        b"le",
        bomb,
        deep,
        b"d1:t" + b"5000:" + b"x" * 5000 + b"1:y1:q1:q4:pinge",  # a huge transaction id
        encode({b"t": b"x" * 1200, b"y": b"q", b"q": b"ping", b"a": {b"id": bytes(20)}}),
        encode({b"t": b"aa", b"y": b"q", b"q": b"ping"}),  # no arguments
        encode({b"t": b"aa", b"y": b"q", b"q": b"ping", b"a": {b"id": b"short"}}),
        encode({b"t": b"aa", b"y": b"q", b"q": b"ping", b"a": []}),
        encode({b"t": 5, b"y": b"q", b"q": b"ping", b"a": {b"id": bytes(20)}}),
        encode({b"t": b"aa", b"y": b"z", b"q": b"ping", b"a": {b"id": bytes(20)}}),
        encode({b"t": b"aa", b"y": b"q", b"q": b"find_node", b"a": {b"id": bytes(20)}}),
        encode({b"t": b"aa", b"y": b"q", b"q": b"get_peers", b"a": {b"id": bytes(20)}}),
        encode(
            {
                b"t": b"aa",
                b"y": b"q",
                b"q": b"find_node",
                b"a": {b"id": bytes(20), b"target": bytes(20), b"want": [b"n4"] * 100},
            }
        ),
        encode(
            {
                b"t": b"aa",
                b"y": b"q",
                b"q": b"get_peers",
                b"a": {b"id": bytes(20), b"info_hash": {b"x": 1}, b"extra": [1, 2, {b"z": b""}]},
            }
        ),
        encode({b"t": b"aa", b"y": b"q", b"q": b"sample_infohashes", b"a": {b"id": bytes(20)}}),
    ]
    garbage += [rng.randbytes(rng.randrange(1, 1500)) for _ in range(50)]
    with trio.fail_after(20):
        async with target() as dht:
            entry = dht.addresses[0]
            # a fresh IP per datagram, so the rate limiter lets each one through to the decoder
            for index, data in enumerate(garbage):
                async with raw(f"127.0.1.{index % 250 + 1}") as attacker:
                    await attacker.send(data, entry)
            # distinct unknown methods: counted, but their names held in bounded memory
            async with raw(ATTACKER) as attacker:
                for i in range(300):
                    await attacker.send(query(b"m%d" % i, target=HASH), entry)
            await trio.sleep(0.3)
            stats = dht.statistics()
            assert len(stats.queries_received) <= MAX_COUNTED_METHODS + 1
            assert stats.queries_received.get(OTHER_METHODS, 0) >= 1
            assert stats.malformed >= 10
            await honest_still_served(dht, CONFIG, HASH)
    no_errors(caplog)


async def test_sample_infohashes_flood(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with trio.fail_after(20):
        async with target() as dht:
            entry = dht.addresses[0]
            answered = 0
            for host in range(10, 30):
                async with raw(f"127.0.0.{host}") as attacker:
                    for i in range(60):
                        await attacker.send(
                            query(b"sample_infohashes", target=HASH, tid=bytes([i])), entry
                        )
                    while await attacker.receive(0.05) is not None:
                        answered += 1
            # each IP gets its burst answered, no more
            assert answered <= 20 * (CONFIG.query_burst + 5)
            assert dht.statistics().rate_limited >= 20 * 10
            await honest_still_served(dht, CONFIG, HASH)
    no_errors(caplog)


def test_an_old_token_is_refused() -> None:
    """Two rotations after it was given, a token no longer stores a peer (the core, whose
    clock is an argument: the running node's rotation takes minutes)."""
    node = DHTNode(rng=random.Random(2), now=0.0, config=CONFIG)
    source = PeerAddress.parse("127.0.0.10:5000")
    other = bytes.fromhex("ef" * 20)
    tokens = []
    for info_hash in (HASH, other):
        node.receive_datagram(encode(query(b"get_peers", info_hash=info_hash)), source, 0.0)
        [(data, _)] = node.datagrams_to_send(0.0)
        tokens.append(reply_field(data, b"r", b"token"))
    fresh = query(b"announce_peer", info_hash=HASH, port=6881, token=tokens[0])
    node.receive_datagram(encode(fresh), source, 1.0)
    [(data, _)] = node.datagrams_to_send(1.0)
    assert reply_field(data, b"y") == b"r"
    later = 2 * CONFIG.token_rotate_interval + 1
    old = query(b"announce_peer", info_hash=other, port=6881, token=tokens[1])
    node.receive_datagram(encode(old), source, later)
    [(data, _)] = node.datagrams_to_send(later)
    assert reply_field(data, b"y") == b"e"
    assert node.statistics().peers == 1


def reply_field(data: bytes, *keys: bytes) -> Any:
    """A field of a bencoded reply, down the dictionaries *keys* name."""
    value: Any = decode(data)
    for key in keys:
        value = value[key]
    return value
