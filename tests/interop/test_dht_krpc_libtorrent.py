"""bip_dht's KRPC codec and QueryHandler against libtorrent 2.1's DHT, datagram by datagram.

Our side is a raw KRPC node (_dht_nodes.KRPCNode): queries built with bip_dht's classes, replies
decoded with ``decode_message``, and the queries libtorrent sends us answered by bip_dht's
``QueryHandler`` from its routing table, peer store and item store. libtorrent runs two DHT
sessions, A and B, in one process (_lt_dht.py), each on its own 127.0.0.X.

What it proves: libtorrent understands every query we encode and we decode every reply and
query it sends (ping, find_node, get_peers, announce_peer, BEP 44 get and put); its tokens work
when we announce and put, ours work when it does; both sides verify the other's ed25519
signatures over the same bytes; BEP 44's error codes for a bad signature, a stale ``seq`` and a
``cas`` mismatch mean the same on both sides; and what one client stores the other finds.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bip_bencode import decode, encode
from bip_dht import (
    WANT_N4,
    WANT_N6,
    ErrorCode,
    ErrorReply,
    FindNode,
    Get,
    GetPeers,
    ImmutableItem,
    MutableItem,
    Ping,
    Put,
    Response,
    SampleInfohashes,
    ScrapeBloom,
    UnknownQuery,
    immutable_target,
    mutable_target,
)
from bip_handshake import NodeInfo, PeerAddress

from ._dht_nodes import KRPCNode, LibtorrentDHT, loopback_host, open_krpc_node, open_libtorrent_dht

pytestmark = pytest.mark.interop

A, B = 0, 1  # the two libtorrent sessions


@dataclass
class Pair:
    """Our raw node and the libtorrent process with sessions A and B."""

    ours: KRPCNode
    lt: LibtorrentDHT

    @property
    def a(self) -> PeerAddress:
        return self.lt.sessions[A].address

    @property
    def b(self) -> PeerAddress:
        return self.lt.sessions[B].address


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    hosts = [loopback_host(), loopback_host()]
    async with open_libtorrent_dht(tmp_path, hosts, lifetime=45) as lt, open_krpc_node() as ours:
        yield Pair(ours, lt)


def _response(reply: Response | ErrorReply) -> Response:
    assert isinstance(reply, Response), f"libtorrent answered with an error: {reply!r}"
    return reply


async def _token(ours: KRPCNode, to: PeerAddress, info_hash: bytes) -> bytes:
    """The announce token ``to`` gives us in its get_peers reply."""
    reply = _response(await ours.get_peers(to, info_hash))
    assert reply.token, f"get_peers reply without a token: {reply!r}"
    return reply.token


async def _b_knows_a_and_us(pair: Pair) -> None:
    """Give session B both A and our node, and wait until both are in its routing table."""
    await pair.lt.add_node(B, pair.a)
    await pair.lt.add_node(B, pair.ours.address)
    await pair.lt.wait_routing_table(B, 2)


async def _get(pair: Pair, target: bytes, seq: int | None = None) -> Response:
    return _response(
        await pair.ours.query(
            lambda t: Get(transaction_id=t, node_id=pair.ours.node_id, target=target, seq=seq),
            pair.a,
        )
    )


async def test_ping_and_find_node(pair: Pair) -> None:
    """libtorrent answers our ping and find_node; its own ping and find_node to us get our
    QueryHandler's answers, after which we are in its routing table and its nodes list."""
    ours = pair.ours
    reply = _response(
        await ours.query(lambda t: Ping(transaction_id=t, node_id=ours.node_id), pair.a)
    )
    assert reply.node_id == pair.lt.sessions[A].node_id
    assert reply.ip == ours.address  # BEP 42: where it saw us
    assert reply.version is not None
    assert reply.version[:2] == b"LT"

    # add_node: libtorrent queries us, and our handler's replies put us in its table.
    await pair.lt.add_node(A, ours.address)
    await pair.lt.add_node(A, pair.b)
    await pair.lt.wait_routing_table(A, 2)
    methods = {query.method for query, source in ours.queries_in if source == pair.a}
    assert methods & {b"ping", b"find_node", b"get_peers"}, methods

    target = secrets.token_bytes(20)
    found = _response(
        await ours.query(
            lambda t: FindNode(transaction_id=t, node_id=ours.node_id, target=target), pair.a
        )
    )
    assert found.nodes is not None
    known = {node.address: node.node_id for node in found.nodes}
    assert known.get(ours.address) == ours.node_id
    assert known.get(pair.b) == pair.lt.sessions[B].node_id
    assert not ours.undecodable, ours.undecodable


async def test_libtorrent_announce_is_found_by_us(pair: Pair) -> None:
    """B announces (dht_announce, explicit port, then implied_port); our get_peers to A has
    B's address in ``values``, and so does our own store, which B announced to as well."""
    ours, lt = pair.ours, pair.lt
    await _b_knows_a_and_us(pair)
    info_hash = secrets.token_bytes(20)
    await lt.announce(B, info_hash, port=6881)
    wanted = PeerAddress(pair.b.host, 6881)
    with trio.fail_after(15):
        while True:
            reply = _response(
                await ours.query(
                    lambda t: GetPeers(transaction_id=t, node_id=ours.node_id, info_hash=info_hash),
                    pair.a,
                )
            )
            if reply.values and wanted in reply.values:
                break
            await trio.sleep(0.2)
    assert reply.token
    # B announced to us too, through our QueryHandler's token.
    with trio.fail_after(5):
        while wanted not in ours.stored_peers(info_hash):
            await trio.sleep(0.1)

    implied = secrets.token_bytes(20)
    await lt.announce(B, implied)  # port 0: implied_port, the DHT socket's port
    with trio.fail_after(15):
        while pair.b not in lt.announces_in(A, implied):
            await trio.sleep(0.1)


async def test_our_announce_is_found_by_libtorrent(pair: Pair) -> None:
    """We get a token from A and announce_peer to A (explicit port, then implied_port); A
    accepts both, and B's dht_get_peers lookup, which goes through A, finds us."""
    ours, lt = pair.ours, pair.lt
    await lt.add_node(B, pair.a)
    await lt.wait_routing_table(B, 1)
    info_hash = secrets.token_bytes(20)
    token = await _token(ours, pair.a, info_hash)
    _response(await ours.announce_peer(pair.a, info_hash, port=7001, token=token))
    announced = PeerAddress(ours.address.host, 7001)
    with trio.fail_after(5):
        while announced not in lt.announces_in(A, info_hash):
            await trio.sleep(0.05)
    assert announced in await lt.get_peers(B, info_hash)

    implied = secrets.token_bytes(20)
    token = await _token(ours, pair.a, implied)
    _response(await ours.announce_peer(pair.a, implied, port=1, token=token, implied_port=True))
    assert ours.address in await lt.get_peers(B, implied)

    # A wrong token is refused with BEP 5's protocol error.
    bad = await ours.announce_peer(pair.a, info_hash, port=7002, token=b"bad!")
    assert isinstance(bad, ErrorReply), bad
    assert bad.code == ErrorCode.PROTOCOL


async def test_immutable_items_both_ways(pair: Pair) -> None:
    """B puts an immutable item: it reaches A and our ItemStore under the same target, and our
    get from A returns ``v`` whose SHA-1 is that target. We put one to A with A's token: B's
    dht_get_immutable_item returns exactly our bencoded value."""
    ours, lt = pair.ours, pair.lt
    await _b_knows_a_and_us(pair)

    text = b"libtorrent says hello " + secrets.token_hex(8).encode()
    target, stored_at = await lt.put_immutable(B, text)
    assert target == immutable_target(encode(text))
    assert stored_at >= 1
    reply = await _get(pair, target)
    assert reply.v == text
    assert immutable_target(encode(reply.v)) == target
    with trio.fail_after(5):
        while ours.stored_item(target) is None:
            await trio.sleep(0.05)
    assert ours.stored_item(target) == ImmutableItem(encode(text))

    value = encode({b"from": b"bip", b"n": [1, 2, 3], b"r": secrets.token_bytes(8)})
    item = ImmutableItem(value)
    token = (await _get(pair, item.target)).token
    assert token
    _response(
        await ours.query(
            lambda t: Put(transaction_id=t, node_id=ours.node_id, token=token, v=decode(value)),
            pair.a,
        )
    )
    assert await lt.get_immutable(B, item.target) == value


async def test_mutable_items_both_ways(pair: Pair) -> None:
    """B puts a salted mutable item that libtorrent signs: our ItemStore accepts it (our
    signature check agrees with libtorrent's signing) and our get from A returns k, seq, sig
    and v that verify. We sign one with ``cryptography`` and put it to A: A accepts it and B's
    lookup returns our seq, value and signature. A refuses a bad signature (206), an old seq
    (302) and a wrong cas (301), the codes bip_dht uses."""
    ours, lt = pair.ours, pair.lt
    await _b_knows_a_and_us(pair)

    seed = secrets.token_bytes(32)
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    salt = b"room"
    text = b"mutable from libtorrent"
    put = await lt.put_mutable(B, seed, text, salt)
    assert put["num_success"] >= 1
    target = mutable_target(public, salt)  # a mutable put's alert has no target of its own
    reply = await _get(pair, target)
    assert reply.k == public
    assert reply.seq == put["seq"]
    assert reply.seq is not None
    assert reply.sig is not None
    assert reply.v == text
    got = MutableItem(encode(reply.v), reply.k, reply.seq, reply.sig, salt)  # verifies
    with trio.fail_after(5):
        while ours.stored_item(target) is None:
            await trio.sleep(0.05)
    assert ours.stored_item(target) == got

    # Our item, our signature, stored at A; B finds it.
    key = Ed25519PrivateKey.generate()
    our_public = key.public_key().public_bytes_raw()
    value = encode([b"bip", 1])
    item = MutableItem.create(key, value, seq=5, salt=b"s")
    first = await _get(pair, item.target)
    assert first.v is None
    assert first.token

    def put_query(
        candidate: MutableItem, *, sig: bytes | None = None, cas: int | None = None
    ) -> Callable[[bytes], Put]:
        token = first.token
        assert token is not None
        return lambda t: Put(
            transaction_id=t,
            node_id=ours.node_id,
            token=token,
            v=decode(candidate.value),
            k=candidate.public_key,
            sig=sig or candidate.signature,
            seq=candidate.seq,
            salt=candidate.salt,
            cas=cas,
        )

    _response(await ours.query(put_query(item), pair.a))
    found = await lt.get_mutable(B, our_public, b"s")
    assert found["seq"] == 5
    assert bytes.fromhex(found["value"]) == value
    assert bytes.fromhex(found["signature"]) == item.signature

    # The refusals, with the codes our ErrorCode names.
    forged = bytes(64)
    newer = MutableItem.create(key, encode(b"newer"), seq=6, salt=b"s")
    older = MutableItem.create(key, encode(b"older"), seq=4, salt=b"s")
    for query, code in (
        (put_query(newer, sig=forged), ErrorCode.INVALID_SIGNATURE),
        (put_query(older), ErrorCode.SEQUENCE_TOO_LOW),
        (put_query(newer, cas=3), ErrorCode.CAS_MISMATCH),
    ):
        refused = await ours.query(query, pair.a)
        assert isinstance(refused, ErrorReply), refused
        assert refused.code == code, refused
    _response(await ours.query(put_query(newer, cas=5), pair.a))
    stored = await _get(pair, item.target)
    assert stored.seq == 6
    assert stored.v == b"newer"
    # seq in a get: "I have 6 already", so A leaves v out.
    assert (await _get(pair, item.target, seq=6)).v is None
    assert not ours.undecodable, ours.undecodable


async def test_scrape_samples_want_and_errors(pair: Pair) -> None:
    """BEP 33: B announces as a downloader and we as a seed; A's scrape reply carries bloom
    filters byte-for-byte equal to the ones bip_dht's ScrapeBloom builds from those two IPs.
    BEP 51: A's samples hold the hash, and libtorrent's sample_infohashes to us decodes our
    QueryHandler's answer. BEP 32 ``want``, BEP 43 ``ro`` and unknown methods get the
    answers the BEPs describe (libtorrent's error code for an unknown method aside)."""
    ours, lt = pair.ours, pair.lt
    await _b_knows_a_and_us(pair)
    info_hash = secrets.token_bytes(20)
    await lt.announce(B, info_hash, port=6881)
    token = await _token(ours, pair.a, info_hash)
    _response(await ours.announce_peer(pair.a, info_hash, port=7003, token=token, seed=True))
    with trio.fail_after(10):
        while PeerAddress(pair.b.host, 6881) not in lt.announces_in(A, info_hash):
            await trio.sleep(0.05)

    scrape = _response(
        await ours.query(
            lambda t: GetPeers(
                transaction_id=t, node_id=ours.node_id, info_hash=info_hash, scrape=True
            ),
            pair.a,
        )
    )
    seeds, downloaders = ScrapeBloom(), ScrapeBloom()
    seeds.insert(ours.address.host)
    downloaders.insert(pair.b.host)
    assert scrape.bfsd == seeds.to_bytes()
    assert scrape.bfpe == downloaders.to_bytes()
    assert round(ScrapeBloom.from_bytes(scrape.bfpe).estimate()) == 1

    samples = _response(
        await ours.query(
            lambda t: SampleInfohashes(
                transaction_id=t, node_id=ours.node_id, target=secrets.token_bytes(20)
            ),
            pair.a,
        )
    )
    assert samples.samples is not None
    assert info_hash in samples.samples
    assert samples.num is not None
    assert samples.num >= 1
    assert samples.interval is not None

    # libtorrent asks us: B announced info_hash to our store too.
    with trio.fail_after(10):
        while not ours.stored_peers(info_hash):
            await trio.sleep(0.05)
    ours_sampled = await lt.sample_infohashes(A, ours.address, secrets.token_bytes(20))
    assert info_hash.hex() in ours_sampled["samples"]
    assert ours_sampled["num"] == 1

    both = _response(
        await ours.query(
            lambda t: FindNode(
                transaction_id=t,
                node_id=ours.node_id,
                target=secrets.token_bytes(20),
                want=(WANT_N4, WANT_N6),
            ),
            pair.a,
        )
    )
    assert both.nodes  # an IPv4-only libtorrent has no nodes6 to give
    read_only = _response(
        await ours.query(
            lambda t: Ping(transaction_id=t, node_id=secrets.token_bytes(20), read_only=True),
            pair.a,
        )
    )
    assert read_only.node_id == pair.lt.sessions[A].node_id
    unknown = await ours.query(
        lambda t: UnknownQuery(transaction_id=t, node_id=ours.node_id, name=b"frobnicate"),
        pair.a,
    )
    assert isinstance(unknown, ErrorReply), unknown
    # BEP 5 names 204 "Method Unknown"; libtorrent 2.1.1 answers 203 "unknown message" (bip_dht
    # sends 204). Either decodes to our ErrorCode.
    assert unknown.code in (ErrorCode.PROTOCOL, ErrorCode.METHOD_UNKNOWN), unknown
    # An unknown method with a target is answered like find_node (BEP 51's advice), as ours is.
    targeted = _response(
        await ours.query(
            lambda t: UnknownQuery(
                transaction_id=t,
                node_id=ours.node_id,
                name=b"frobnicate",
                extra={b"target": secrets.token_bytes(20)},
            ),
            pair.a,
        )
    )
    assert targeted.nodes
    assert not ours.undecodable, ours.undecodable


async def test_ipv6_compact_forms(tmp_path: Path) -> None:
    """BEP 32 over ``::1``: libtorrent's IPv6 DHT nodes answer our IPv6 queries with an 18-byte
    ``ip``, ``nodes6`` (and ``nodes`` when ``want`` asks for both), and 18-byte ``values``; our
    IPv6 announce_peer is stored and handed out by libtorrent's lookup."""
    hosts = [loopback_host(), loopback_host()]
    async with (
        open_libtorrent_dht(tmp_path, hosts, lifetime=45, ipv6=True) as lt,
        open_krpc_node("::1") as ours,
    ):
        a6 = lt.sessions[A].address6
        b6 = lt.sessions[B].address6
        pong = _response(
            await ours.query(lambda t: Ping(transaction_id=t, node_id=ours.node_id), a6)
        )
        assert pong.node_id == lt.sessions[A].node_id6
        assert pong.ip == ours.address
        await lt.add_node(B, a6)
        await lt.add_node(B, lt.sessions[A].address)
        await lt.add_node(B, ours.address)
        await lt.add_node(A, b6)  # A6 pings B6, which joins A6's table at once
        await lt.wait_routing_table(B, 1)

        async def find_node_wanting_both() -> Response:
            return _response(
                await ours.query(
                    lambda t: FindNode(
                        transaction_id=t,
                        node_id=ours.node_id,
                        target=secrets.token_bytes(20),
                        want=(WANT_N4, WANT_N6),
                    ),
                    a6,
                )
            )

        both = await find_node_wanting_both()
        assert both.nodes6 is not None
        assert all(node.address.family == 6 for node in both.nodes6)
        with trio.fail_after(10):
            while NodeInfo(lt.sessions[B].node_id6 or b"", b6) not in (both.nodes6 or ()):
                await trio.sleep(0.2)
                both = await find_node_wanting_both()
        assert both.nodes is not None  # want n4: the IPv4 node's nodes as well

        info_hash = secrets.token_bytes(20)
        await lt.announce(B, info_hash, port=6881)
        wanted = PeerAddress(b6.host, 6881)
        with trio.fail_after(15):
            while True:
                reply = _response(
                    await ours.query(
                        lambda t: GetPeers(
                            transaction_id=t, node_id=ours.node_id, info_hash=info_hash
                        ),
                        a6,
                    )
                )
                if reply.values and wanted in reply.values:
                    break
                await trio.sleep(0.2)
        assert reply.token

        mine = secrets.token_bytes(20)
        token = await _token(ours, a6, mine)
        _response(await ours.announce_peer(a6, mine, port=7004, token=token))
        assert PeerAddress(ours.address.host, 7004) in await lt.get_peers(B, mine)
        assert not ours.undecodable, ours.undecodable
