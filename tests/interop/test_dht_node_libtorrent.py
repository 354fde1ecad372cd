"""Our DHT node (``open_dht``) and libtorrent 2.1's, both ways, on loopback.

libtorrent runs two DHT sessions, A and B, in one process (_lt_dht.py), each on its own
127.0.0.X; B knows A. Our node bootstraps from A. Then, each way: ping and find_node; a hash
announced by one is found by the other's get_peers lookup (explicit port and implied_port); a
BEP 44 immutable item and a salted mutable item put by one are got by the other, byte for byte,
signatures included; our compare-and-swap put succeeds on the current ``seq`` and is refused
(301) on a stale one, by libtorrent's nodes.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bip_bencode import Value, decode, encode
from bip_dht import (
    ImmutableItem,
    MutableItem,
    Response,
    immutable_target,
    mutable_target,
)
from bip_dht._node_config import DHTConfig
from bip_dht._shell import DHT, open_dht
from bip_handshake import NodeInfo, PeerAddress

from ._dht_nodes import (
    LibtorrentDHT,
    loopback_host,
    open_krpc_node,
    open_libtorrent_dht,
    wire_problems,
)

pytestmark = pytest.mark.interop

A, B = 0, 1

# Every node here is on 127.0.0.0/8: one /8, no BEP 42-valid ids. libtorrent runs with the same
# restrictions off (INTEROP.md).
LOOPBACK = DHTConfig(
    restrict_routing_ips=False, restrict_search_ips=False, query_timeout=2.0, slow_after=0.5
)


@dataclass
class Net:
    ours: DHT
    lt: LibtorrentDHT
    # KRPC error codes a test provoked on purpose (the fixture's wire check allows them).
    errors_expected: set[int] = field(default_factory=set)

    @property
    def me(self) -> PeerAddress:
        address: PeerAddress = self.ours.addresses[0]
        return address

    @property
    def a(self) -> PeerAddress:
        return self.lt.sessions[A].address

    @property
    def b(self) -> PeerAddress:
        return self.lt.sessions[B].address


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Net]:
    hosts = [loopback_host(), loopback_host()]
    async with open_libtorrent_dht(tmp_path, hosts, lifetime=45) as lt:
        await lt.add_node(B, lt.sessions[A].address)
        await lt.wait_routing_table(B, 1)
        async with open_dht(
            (loopback_host(), 0), [lt.sessions[A].address], config=LOOPBACK
        ) as ours:
            # libtorrent B pings us and takes us in. A node that only queried us joins our
            # table once it answers one of our queries (as in libtorrent): we ask B, so both
            # libtorrent nodes are ours to use from the start.
            await lt.add_node(B, ours.addresses[0])
            await lt.wait_routing_table(B, 2)
            with trio.fail_after(10):
                await ours.ping(lt.sessions[B].address)
            net = Net(ours, lt)
            yield net
            # Whatever the test did, libtorrent and our node agreed on every datagram.
            problems = wire_problems(ours.statistics(), errors_allowed=net.errors_expected)
            assert not problems, problems


async def _peers(dht: DHT, info_hash: bytes) -> list[PeerAddress]:
    """Every peer one get_peers lookup of ours finds."""
    return [peer async for peer in dht.get_peers(info_hash)]


async def test_ping_and_find_node(net: Net) -> None:
    """Our ping, bootstrap and find_node against libtorrent; libtorrent's ping to us."""
    with trio.fail_after(20):
        pong = await net.ours.ping(net.a)
        assert pong == NodeInfo(net.lt.sessions[A].node_id, net.a)
        assert await net.ours.bootstrap([net.a]) >= 1
        found = await net.ours.find_node(net.lt.sessions[B].node_id)
    assert NodeInfo(net.lt.sessions[B].node_id, net.b) in found
    assert net.ours.statistics().nodes[4] >= 2


async def test_libtorrent_announce_found_by_us(net: Net) -> None:
    """B announces (port 6881, then implied_port); our get_peers lookups find both."""
    info_hash = secrets.token_bytes(20)
    await net.lt.announce(B, info_hash, port=6881)
    wanted = PeerAddress(net.b.host, 6881)
    with trio.fail_after(20):
        while wanted not in await _peers(net.ours, info_hash):
            await trio.sleep(0.2)
    implied = secrets.token_bytes(20)
    await net.lt.announce(B, implied)
    with trio.fail_after(20):
        while net.b not in await _peers(net.ours, implied):
            await trio.sleep(0.2)


async def test_our_announce_found_by_libtorrent(net: Net) -> None:
    """We announce (port 7001, then implied_port); B's dht_get_peers finds us both times."""
    info_hash = secrets.token_bytes(20)
    with trio.fail_after(20):
        finished = await net.ours.announce(info_hash, 7001)
    assert finished.announced_to >= 2  # A and B, the only other nodes
    assert PeerAddress(net.me.host, 7001) in await net.lt.get_peers(B, info_hash)
    implied = secrets.token_bytes(20)
    with trio.fail_after(20):
        finished = await net.ours.announce(implied)
    assert finished.announced_to >= 2
    assert net.me in await net.lt.get_peers(B, implied)


async def test_immutable_items_both_ways(net: Net) -> None:
    """B's immutable put is got by us; ours by B, byte for byte."""
    text = b"from libtorrent " + secrets.token_hex(4).encode()
    target, stored_at = await net.lt.put_immutable(B, text)
    assert stored_at >= 2  # A and us
    with trio.fail_after(20):
        got = await net.ours.get(target)
    assert got == ImmutableItem(encode(text))

    value: Value = {b"bip": [1, 2, secrets.token_bytes(6)]}
    with trio.fail_after(20):
        assert await net.ours.get_immutable(target) == text  # the decoded value
        put = await net.ours.put_immutable(value)
    assert put.target == immutable_target(encode(value))
    assert put.stored_at >= 2
    assert await net.lt.get_immutable(B, put.target) == encode(value)


async def test_mutable_items_both_ways(net: Net) -> None:
    """B's salted mutable put (libtorrent signs) is got and verified by us; ours (we sign) is
    got by B with our seq, value and signature; a cas put on the stale seq is refused."""
    seed = secrets.token_bytes(32)
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    put = await net.lt.put_mutable(B, seed, b"libtorrent's", b"salt")
    assert put["num_success"] >= 2
    with trio.fail_after(20):
        got = await net.ours.get_mutable(public, b"salt")
    assert isinstance(got, MutableItem)
    assert got.target == mutable_target(public, b"salt")
    assert (got.seq, decode(got.value)) == (put["seq"], b"libtorrent's")

    key = Ed25519PrivateKey.generate()
    ours_public = key.public_key().public_bytes_raw()
    value: Value = [b"bip", 1]
    with trio.fail_after(20):
        first = await net.ours.put_mutable(key, value, salt=b"s", seq=7)
    assert first.stored_at >= 2
    found = await net.lt.get_mutable(B, ours_public, b"s")
    expected = MutableItem.create(key, encode(value), seq=7, salt=b"s")
    assert found["seq"] == 7
    assert bytes.fromhex(found["value"]) == encode(value)
    assert bytes.fromhex(found["signature"]) == expected.signature

    # seq None: get the current one, then put current + 1 (no cas, as libtorrent's put).
    with trio.fail_after(20):
        second = await net.ours.put_mutable(key, b"second", salt=b"s")
    assert second.stored_at >= 2
    assert not second.errors
    found = await net.lt.get_mutable(B, ours_public, b"s")
    assert found["seq"] == 8
    assert decode(bytes.fromhex(found["value"])) == b"second"

    # An explicit cas on the stale seq 7 is refused (301) by libtorrent's nodes; on 8 it lands.
    third = MutableItem.create(key, encode(b"third"), seq=9, salt=b"s")
    net.errors_expected.add(301)
    with trio.fail_after(20):
        stale = await net.ours.put(third, cas=7)
    assert stale.stored_at == 0
    assert stale.errors
    assert {code for _, code in stale.errors} == {301}
    assert (await net.lt.get_mutable(B, ours_public, b"s"))["seq"] == 8
    with trio.fail_after(20):
        current = await net.ours.put(third, cas=8)
    assert current.stored_at >= 2
    assert (await net.lt.get_mutable(B, ours_public, b"s"))["seq"] == 9


async def test_scrape_and_samples(net: Net) -> None:
    """BEP 33: B announces as a seed; our scrape lookup's estimates (from the bloom filters
    libtorrent sends) say one seed, no downloader. BEP 51: our sample_infohashes walk gets the
    hash from libtorrent's samples."""
    info_hash = secrets.token_bytes(20)
    await net.lt.announce(B, info_hash, port=6881, seed=True)
    with trio.fail_after(10):
        while PeerAddress(net.b.host, 6881) not in net.lt.announces_in(A, info_hash):
            await trio.sleep(0.05)
    with trio.fail_after(20):
        async with net.ours.get_peers(info_hash, scrape=True) as search:
            await search.wait()
    finished = search.finished
    assert finished is not None
    assert finished.seeds_estimate is not None
    assert round(finished.seeds_estimate) == 1
    assert finished.peers_estimate is not None
    assert round(finished.peers_estimate) == 0
    with trio.fail_after(20):
        answers = await net.ours.sample_infohashes()
    assert any(info_hash in answer.samples for answer in answers), answers


async def test_read_only_node_stays_out_of_libtorrent_tables(net: Net, tmp_path: Path) -> None:
    """BEP 43: a read-only node of ours (``ro=1`` on its queries) looks things up through
    libtorrent, which answers it but keeps it out of its routing table; our ordinary node,
    which answered libtorrent's queries, is in it."""
    config = replace(LOOPBACK, read_only=True)
    async with open_dht((loopback_host(), 0), config=config) as reader:
        with trio.fail_after(20):
            assert await reader.bootstrap([net.a]) >= 1
            await reader.find_node(secrets.token_bytes(20))
            await net.ours.find_node(secrets.token_bytes(20))
        in_table = {node for _, node in await net.lt.live_nodes(A)}
        assert reader.addresses[0] not in in_table
        assert net.me in in_table
        assert not wire_problems(reader.statistics())


async def test_dual_stack(tmp_path: Path) -> None:
    """BEP 32 with our node on 127.0.0.X and ``::1`` and libtorrent's on both: one routing
    table per family fills from libtorrent's answers, B's announce is found over both
    families, and ours is stored by libtorrent over both."""
    hosts = [loopback_host(), loopback_host()]
    async with open_libtorrent_dht(tmp_path, hosts, lifetime=45, ipv6=True) as lt:
        a, b = lt.sessions[A], lt.sessions[B]
        for other in (a.address, a.address6):
            await lt.add_node(B, other)
        for other in (b.address, b.address6):
            await lt.add_node(A, other)
        async with open_dht([f"{loopback_host()}:0", "[::1]:0"], config=LOOPBACK) as ours:
            me4, me6 = sorted(ours.addresses, key=lambda address: address.family)
            assert (me4.family, me6.family) == (4, 6)
            with trio.fail_after(20):
                await ours.bootstrap([a.address, a.address6])
                found = await ours.find_node(b.node_id)
            tables = ours.statistics().nodes
            assert tables[4] >= 2
            assert tables[6] >= 2
            assert NodeInfo(b.node_id, b.address) in found
            assert b.node_id6 is not None
            assert NodeInfo(b.node_id6, b.address6) in found

            info_hash = secrets.token_bytes(20)
            await lt.announce(B, info_hash, port=6881)
            wanted = {PeerAddress(b.address.host, 6881), PeerAddress(b.address6.host, 6881)}
            with trio.fail_after(20):
                while not wanted <= set(await _peers(ours, info_hash)):
                    await trio.sleep(0.2)

            mine = secrets.token_bytes(20)
            with trio.fail_after(20):
                finished = await ours.announce(mine, 7002)
            assert finished.announced_to >= 4  # A and B, over each family
            assert PeerAddress(me4.host, 7002) in await lt.get_peers(B, mine)
            # libtorrent 2.1.1's dht_get_peers reports IPv4 peers only (its own IPv6 announces
            # too), so ask its IPv6 nodes directly whether they hand out our IPv6 address.
            async with open_krpc_node("::1") as raw:
                for node in (a.address6, b.address6):
                    reply = await raw.get_peers(node, mine)
                    assert isinstance(reply, Response), reply
                    assert reply.values is not None
                    assert PeerAddress(me6.host, 7002) in reply.values
            assert not wire_problems(ours.statistics())
