"""The trio shell on loopback: several open_dht nodes in one test, real UDP, bounded in time.

Each node binds its own 127.0.0.x address: the table keeps one node per IP and the rate
limiter counts per IP, as on the real network.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AsyncExitStack

import pytest
import trio
from _loopback import FAST, loopback_swarm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bip_dht._errors import DHTError, LocalProtocolError
from bip_dht._items import immutable_target
from bip_dht._node_config import DHTConfig
from bip_dht._node_id import NodeId
from bip_dht._shell import DHT, DHTSocketError, open_dht
from bip_dht._shell_sockets import bind_list, resolve
from bip_handshake import NodeInfo, PeerAddress

HASH = bytes.fromhex("bb" * 20)


class Sink:
    """A PeerSink that records what it is given."""

    def __init__(self) -> None:
        self.found: list[tuple[bytes, tuple[PeerAddress, ...], str]] = []

    def discovered(self, info_hash: object, addresses: Iterable[PeerAddress], source: str) -> None:
        assert isinstance(info_hash, bytes)
        self.found.append((info_hash, tuple(addresses), source))


async def test_ping_and_bootstrap_on_loopback() -> None:
    with trio.fail_after(10):
        async with loopback_swarm(6) as nodes:
            a, b = nodes[0], nodes[1]
            assert a.addresses[0].host.exploded == "127.0.0.2"
            node = await a.ping(b.addresses[0])
            assert node is not None
            assert node.node_id == b.node_id.value
            assert await a.ping(str(b.addresses[0])) is not None
            assert await a.ping(("127.0.0.3", b.addresses[0].port)) is not None
            for dht in nodes:
                assert dht.statistics().table_size >= 4
            found = await nodes[3].find_node(nodes[5].node_id)
            assert nodes[5].node_id.value in {n.node_id for n in found}
            # a hint from a peer (BEP 5 PORT): tried in the background, junk ignored
            async with open_dht("127.0.0.50:0", config=FAST) as late:
                late.add_node(a.addresses[0])
                late.add_node(PeerAddress.parse("[::1]:6881"))  # a family it does not run
                late.add_node(PeerAddress.parse("127.0.0.1:0"))
                with trio.fail_after(5):
                    while late.statistics().table_size == 0:
                        await trio.sleep(0.02)


async def test_ping_of_a_silent_address_times_out() -> None:
    with trio.fail_after(5):
        quick = DHTConfig(query_timeout=0.5, slow_after=0.25)
        async with open_dht("127.0.0.2:0", config=quick) as dht:
            silent = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
            with silent:
                await silent.bind(("127.0.0.9", 0))
                port = silent.getsockname()[1]
                assert await dht.ping(f"127.0.0.9:{port}") is None
            assert dht.statistics().timeouts == 1


async def test_announce_and_search_feed_the_sink() -> None:
    sink = Sink()
    with trio.fail_after(15):
        async with loopback_swarm(8) as nodes:
            announced = await nodes[2].announce(HASH, 51413)
            assert announced.announced_to >= 5
            implied = await nodes[3].announce(HASH)
            assert implied.announced_to >= 5
            async with AsyncExitStack() as stack:
                seeker = await stack.enter_async_context(
                    open_dht("127.0.0.40:0", [nodes[0].addresses[0]], config=FAST, peer_sink=sink)
                )
                await seeker.bootstrap()
                peers = []
                async with seeker.get_peers(HASH) as search:
                    async for peer in search:
                        peers.append(peer)
                expected = {
                    PeerAddress(nodes[2].addresses[0].host, 51413),
                    nodes[3].addresses[0],
                }
                assert expected <= set(peers)
                assert expected <= set(search.result().peers)
                assert any(h == HASH and src == "dht" for h, _, src in sink.found)
                sunk = {p for _, ps, _ in sink.found for p in ps}
                assert expected <= sunk
                # plain iteration, no context manager, and a scrape
                assert expected <= {p async for p in seeker.get_peers(HASH)}
                scrape = seeker.get_peers(HASH, scrape=True)
                await scrape.wait()
                assert scrape.finished is not None
                assert scrape.finished.peers_estimate is not None
                assert scrape.finished.peers_estimate >= 1.0


async def test_bep44_items_both_kinds() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    public = key.public_key().public_bytes_raw()
    with trio.fail_after(15):
        async with loopback_swarm(8) as nodes:
            stored = await nodes[1].put_immutable(b"Hello World!")
            assert stored.target == immutable_target(b"12:Hello World!")
            assert stored.stored_at >= 5
            assert await nodes[6].get_immutable(stored.target) == b"Hello World!"
            assert await nodes[6].get_immutable(b"\x01" * 20) is None
            first = await nodes[2].put_mutable(key, {b"msg": b"one"}, salt=b"room")
            assert first.stored_at >= 5
            item = await nodes[5].get_mutable(public, b"room")
            assert item is not None
            assert (item.seq, item.value) == (0, b"d3:msg3:onee")
            second = await nodes[4].put_mutable(bytes(range(32)), {b"msg": b"two"}, salt=b"room")
            assert second.stored_at >= 5
            item = await nodes[7].get_mutable(public, b"room")
            assert item is not None
            assert item.seq == 1
            assert await nodes[7].get_mutable(public, b"other") is None


async def test_sample_infohashes_on_loopback() -> None:
    with trio.fail_after(10):
        async with loopback_swarm(6) as nodes:
            await nodes[1].announce(HASH, 6000)
            samples = await nodes[4].sample_infohashes(HASH)
            assert any(HASH in s.samples for s in samples)
            assert await nodes[4].sample_infohashes() is not None


async def test_cancelled_call_cancels_its_operation() -> None:
    with trio.fail_after(5):
        async with loopback_swarm(3) as nodes:
            dht = nodes[0]
            with trio.move_on_after(0.0):
                await dht.find_node(b"x" * 20)
            with trio.move_on_after(0.001):
                async with dht.get_peers(HASH) as search:
                    await trio.sleep(1)
            assert search.finished is not None
            await trio.sleep(0.05)
            stats = dht.statistics()
            assert stats.lookups == 0


async def test_save_state_restarts_from_known_nodes() -> None:
    with trio.fail_after(10):
        async with loopback_swarm(5) as nodes:
            async with open_dht("127.0.0.30:0", [nodes[0].addresses[0]], config=FAST) as first:
                await first.bootstrap()
                state = first.save_state()
                old_id = first.node_id
            async with open_dht("127.0.0.30:0", state=state, config=FAST) as again:
                assert again.node_id == old_id
                assert await again.bootstrap() >= 4


async def test_ipv6_loopback() -> None:
    try:
        async with open_dht(["[::1]:0", "127.0.0.2:0"], config=FAST) as probe:
            assert {a.family for a in probe.addresses} == {4, 6}
    except DHTSocketError:
        pytest.skip("no IPv6 loopback here")
    with trio.fail_after(10):
        async with AsyncExitStack() as stack:
            a = await stack.enter_async_context(open_dht("[::1]:0", config=FAST))
            b = await stack.enter_async_context(open_dht("[::1]:0", config=FAST))
            node = await a.ping(b.addresses[0])
            assert node is not None
            assert node.address.family == 6


async def test_bind_errors_are_ours() -> None:
    with trio.fail_after(5):
        async with open_dht("127.0.0.2:0", config=FAST) as first:
            taken = first.addresses[0]
            with pytest.raises(DHTSocketError):
                async with open_dht(taken):
                    pass
        with pytest.raises(LocalProtocolError):
            async with open_dht("127.0.0.2:notaport"):
                pass
        with pytest.raises(LocalProtocolError):
            async with open_dht([]):
                pass
        async with open_dht(("127.0.0.2", 0), config=FAST) as dht:
            with pytest.raises(LocalProtocolError):
                await dht.find_node(b"short")
            with pytest.raises(LocalProtocolError):
                await dht.put_mutable(b"bad key", b"v")
            with pytest.raises(LocalProtocolError):
                await dht.ping("127.0.0.1")  # no port
            assert isinstance(dht.node_id, NodeId)


async def test_address_forms() -> None:
    v4, v6 = PeerAddress.parse("10.0.0.1:6881"), PeerAddress.parse("[fd00::1]:6881")
    assert await resolve("10.0.0.1:6881", None) == [v4]
    assert await resolve("[fd00::1]:6881", None) == [v6]
    assert await resolve("fd00::1", 6881) == [v6]  # bare, unbracketed IPv6 (bind form)
    assert await resolve(("10.0.0.1", 6881), None) == [v4]
    assert await resolve(v4, None) == [v4]
    assert await resolve("[::ffff:10.0.0.1]:6881", None) == [v4]
    assert await resolve("10.0.0.1", 0) == [PeerAddress.parse("10.0.0.1:0")]
    with trio.fail_after(5):
        local = await resolve("localhost:6881", None)  # the system resolver, no network
    assert local
    assert all(a.host.is_loopback for a in local)
    for bad in ("10.0.0.1", "10.0.0.1:x", "[fd00::1", "[fd00::1]x", ":6881", "10.0.0.1:99999"):
        with pytest.raises(LocalProtocolError):
            await resolve(bad, None)
    with pytest.raises(LocalProtocolError):
        await resolve(("10.0.0.1", "6881"), None)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        bind_list(42)  # type: ignore[arg-type]
    assert bind_list(("10.0.0.1", 1)) == [("10.0.0.1", 1)]
    assert bind_list(["10.0.0.1:1", v6]) == ["10.0.0.1:1", v6]


async def test_calls_waiting_when_the_dht_closes_fail_with_our_error() -> None:
    outcomes: list[BaseException] = []

    async def search(dht: DHT) -> None:
        try:
            async for _ in dht.get_peers(HASH):
                pass
        except DHTError as error:
            outcomes.append(error)

    async def ping(dht: DHT, where: str) -> None:
        try:
            await dht.ping(where)
        except DHTError as error:
            outcomes.append(error)

    with trio.fail_after(5):
        silent = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
        with silent:
            await silent.bind(("127.0.0.9", 0))
            where = f"127.0.0.9:{silent.getsockname()[1]}"
            async with trio.open_nursery() as outer:
                async with open_dht("127.0.0.2:0", config=FAST) as dht:
                    # a node that never answers keeps the lookup waiting
                    silent_node = NodeInfo(b"s" * 20, PeerAddress.parse(where))
                    dht.node.warm_table([silent_node], trio.current_time())
                    outer.start_soon(search, dht)
                    outer.start_soon(ping, dht, where)
                    await trio.sleep(0.1)
                with pytest.raises(DHTError):
                    await dht.find_node(b"x" * 20)
    assert len(outcomes) == 2
