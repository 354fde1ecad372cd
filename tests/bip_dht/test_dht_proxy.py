"""The DHT through a SOCKS5 proxy's UDP relay (``open_dht(proxy=...)``), as libtorrent sends
its DHT whenever a SOCKS5 proxy is set.

Loopback trio tests with real UDP, each bounded in time: a node behind the in-test proxy
(tests/_socks_server.py, which relays to loopback targets) pings, looks up, announces and
finds peers through a direct node, which sees the relay's address only; a proxy that refuses
UDP ASSOCIATE loses the node's datagrams, none sent directly, logged once; under remote DNS a
bootstrap name goes to the proxy, never to our resolver. The name probes and the outage log
are also tested on their own.
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any

import pytest
import trio
from tests._socks_server import SocksServer, serve_socks5

from bip_dht import DHT, DHTConfig, DHTNode, DHTSocketError, LocalProtocolError, NodeId, open_dht
from bip_dht._krpc import ErrorReply, Ping, Response
from bip_dht._shell_proxy import PROBE_ATTEMPTS, NameProbes, PendingNames, RelayOutages
from bip_dht._shell_sockets import host_name
from bip_handshake import NodeInfo, PeerAddress, ProxyConfig

DEADLINE = 4.0
FAST = DHTConfig(query_timeout=1.0, slow_after=0.5)
QUICK = DHTConfig(query_timeout=0.4, slow_after=0.1)
NODE_LOG = "bip_dht.node"
INFO_HASH = bytes(range(20))


def proxy_of(server: SocksServer, *, remote_dns: bool = False) -> ProxyConfig:
    return ProxyConfig("127.0.0.1", server.port, remote_dns=remote_dns)


@asynccontextmanager
async def proxied_pair(
    server: SocksServer, *, direct_host: str = "127.0.0.3", **options: Any
) -> AsyncIterator[tuple[DHT, DHT]]:
    """A direct node on ``direct_host`` and a node on 127.0.0.1 behind ``server`` (the in-test
    relay takes datagrams from the control connection's host only, as RFC 1928 lets it)."""
    async with (
        open_dht(f"{direct_host}:0", config=FAST, rng=random.Random(1)) as direct,
        open_dht(
            "127.0.0.1:0",
            config=options.pop("config", FAST),
            rng=random.Random(2),
            proxy=options.pop("proxy", proxy_of(server)),
            **options,
        ) as proxied,
    ):
        yield direct, proxied


@asynccontextmanager
async def counting_socket(
    host: str = "127.0.0.3",
) -> AsyncIterator[tuple[PeerAddress, list[bytes]]]:
    """A UDP socket that records every datagram it gets (a peer nothing may reach)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    got: list[bytes] = []
    with sock:
        await sock.bind((host, 0))

        async def read() -> None:
            while True:
                data, _ = await sock.recvfrom(65_535)
                got.append(data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            yield PeerAddress(IPv4Address(host), sock.getsockname()[1]), got
            nursery.cancel_scope.cancel()


async def test_ping_find_node_announce_and_get_peers_through_the_relay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5() as server,
            proxied_pair(server, config=QUICK) as (direct, proxied),
        ):
            assert proxied.proxy == proxy_of(server)
            assert direct.proxy is None
            await proxied.wait_associated()
            answered = await proxied.ping(direct.addresses[0])
            assert answered is not None
            assert answered.node_id == direct.node_id.value
            found = await proxied.find_node(NodeId(bytes(20)))
            assert direct.node_id.value in [node.node_id for node in found]
            finished = await proxied.announce(INFO_HASH)  # implied_port: the relay's port
            assert finished.announced_to == 1
            async with proxied.get_peers(INFO_HASH) as search:
                peers = [peer async for peer in search]
            # The direct node stored the address it saw: the relay's, not our socket's.
            association = server.associations[0]
            relay = PeerAddress(IPv4Address("127.0.0.1"), association.relay_port)
            assert peers == [relay]
            now = trio.current_time()
            seen = [entry.node.address for entry in direct.node.table(4).entries(now)]
            assert proxied.addresses[0] not in seen
            assert association.relayed >= 4
            assert association.returned >= 4
            assert association.dropped == 0
            assert len(server.associations) == 1  # one socket, one association
            assert proxied.statistics().send_errors == 0
            with pytest.raises(DHTSocketError, match="not shared"):
                await proxied.send_datagram(b"\x41\x00", direct.addresses[0])
            # The proxy ends the association: the node's datagrams are lost, logged once.
            association.close()
            while proxied.associated:
                await trio.sleep(0.01)
            assert await proxied.ping(direct.addresses[0]) is None
            assert await proxied.find_node(NodeId(bytes(20))) == []
            assert proxied.statistics().send_errors >= 2
    lost = [r for r in caplog.records if "datagrams are lost" in r.getMessage()]
    assert len(lost) == 1
    assert "closed the control connection" in lost[0].getMessage()


async def test_refused_association_loses_datagrams_sends_nothing_directly_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=NODE_LOG)
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5() as server,
            counting_socket() as (peer, got),
            open_dht("127.0.0.1:0", config=QUICK, proxy=proxy_of(server)) as proxied,
        ):
            server.refuse_udp = True
            await server.wait_requests(1)
            await trio.sleep(0.05)  # the refusal reaches the client
            assert not proxied.associated
            assert await proxied.ping(peer) is None
            assert await proxied.ping(peer) is None
            assert got == []  # nothing went directly
            assert server.associations == []
            assert proxied.statistics().send_errors == 2
            assert proxied.statistics().timeouts == 2
    lost = [r for r in caplog.records if "datagrams are lost" in r.getMessage()]
    assert len(lost) == 1  # once per outage, not per datagram
    assert lost[0].levelno == logging.WARNING
    assert "command not supported" in lost[0].getMessage()


async def test_remote_dns_bootstrap_sends_the_name_to_the_proxy() -> None:
    asked: list[bytes | str | None] = []

    class Recorder(trio.abc.HostnameResolver):
        async def getaddrinfo(self, host: Any, port: Any, *args: Any) -> Any:
            asked.append(host)
            return await trio.to_thread.run_sync(socket.getaddrinfo, host, port, *args)

        async def getnameinfo(self, sockaddr: Any, flags: int) -> Any:
            return await trio.to_thread.run_sync(socket.getnameinfo, sockaddr, flags)

    previous = trio.socket.set_custom_hostname_resolver(Recorder())
    try:
        with trio.fail_after(DEADLINE):
            async with serve_socks5() as server:
                proxy = proxy_of(server, remote_dns=True)
                async with open_dht("127.0.0.1:0", config=FAST) as direct:
                    name = ("localhost", direct.addresses[0].port)
                    async with open_dht(
                        "127.0.0.1:0", [name], config=QUICK, proxy=proxy
                    ) as proxied:
                        while proxied.node.statistics().table_size == 0:
                            await trio.sleep(0.01)
                        assert proxied.node.bootstrap_addresses == (direct.addresses[0],)
                        # bootstrap() and ping() take names too, the same way
                        assert await proxied.bootstrap([name]) == 1
                        answered = await proxied.ping(f"localhost:{name[1]}")
                        assert answered is not None
                        assert answered.address == direct.addresses[0]
                        with pytest.raises(DHTSocketError, match="no address"):
                            await proxied.ping("localhost:1")  # nobody answers there
    finally:
        trio.socket.set_custom_hostname_resolver(previous)
    assert "localhost" not in asked
    assert b"localhost" not in asked


JUMP_AFTER = 0.03
"""Real seconds of idleness before a MockClock jumps: loopback I/O is done well before."""


async def test_a_name_unanswered_while_the_proxy_refused_udp_is_asked_when_it_relays(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # The proxy refuses UDP past PROXY_WAIT (10 s): the first join could ask nobody. Its
    # association comes up at 15 s (the socket's retries: 5 s, then 10 s more): the name is
    # asked then, not after the core's bootstrap_retry_interval (which had nothing to retry).
    autojump_clock.autojump_threshold = JUMP_AFTER
    with trio.fail_after(40):
        async with (
            serve_socks5() as server,
            open_dht("127.0.0.1:0", config=QUICK, rng=random.Random(1)) as direct,
        ):
            server.refuse_udp = True
            name = ("localhost", direct.addresses[0].port)
            proxy = proxy_of(server, remote_dns=True)
            async with open_dht(
                "127.0.0.1:0", [name], config=QUICK, rng=random.Random(2), proxy=proxy
            ) as proxied:
                await trio.sleep(11)
                assert not proxied.associated
                assert not proxied.node.bootstrap_addresses
                server.refuse_udp = False
                await proxied.wait_associated()
                up = trio.current_time()
                while proxied.node.statistics().table_size == 0:
                    await trio.sleep(0.2)
                assert trio.current_time() - up < 2.0
                assert proxied.node.bootstrap_addresses == (direct.addresses[0],)
    waiting = [r for r in caplog.records if "asked again when its relay" in r.getMessage()]
    assert len(waiting) == 1


async def test_a_name_nobody_answered_at_is_asked_again_while_the_table_is_empty(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The relay works, but nobody listens at the name's port yet: the name is kept, and asked
    # again at the next re-bootstrap (the DHT's own bootstrap() asks it too).
    autojump_clock.autojump_threshold = JUMP_AFTER
    config = replace(QUICK, bootstrap_retry_interval=5.0)
    with trio.fail_after(30):
        async with serve_socks5() as server:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
                silent.bind(("127.0.0.1", 0))  # holds the port; reads nothing, answers nothing
                port = silent.getsockname()[1]
                proxy = proxy_of(server, remote_dns=True)
                async with open_dht(
                    "127.0.0.1:0", [f"localhost:{port}"], config=config, proxy=proxy
                ) as proxied:
                    await proxied.wait_associated()
                    assert await proxied.bootstrap() == 0  # just asked (the join): not again yet
                    silent.close()
                    async with open_dht(("127.0.0.1", port), config=QUICK) as direct:
                        started = trio.current_time()
                        while proxied.node.statistics().table_size == 0:
                            await trio.sleep(0.5)  # each poll costs a jump: JUMP_AFTER, real
                        assert trio.current_time() - started < config.bootstrap_retry_interval + 2
                        assert proxied.node.bootstrap_addresses == (direct.addresses[0],)
                        assert await proxied.bootstrap() == 1


async def test_a_malformed_bootstrap_entry_fails_open_dht_before_its_block() -> None:
    # Through a proxy too (whose resolving is left to the background): nothing is contacted.
    entered = False
    with trio.fail_after(DEADLINE):
        proxies = (None, ProxyConfig("127.0.0.1", 1), ProxyConfig("127.0.0.1", 1, remote_dns=True))
        for proxy in proxies:
            with pytest.raises(LocalProtocolError, match="needs a port"):
                async with open_dht("127.0.0.1:0", ["no-port"], proxy=proxy):
                    entered = True
            with pytest.raises(LocalProtocolError, match="bad port"):
                async with open_dht("127.0.0.1:0", ["10.0.0.1:x"], proxy=proxy):
                    entered = True
    assert not entered


async def test_other_datagrams_and_a_proxy_exclude_each_other() -> None:
    proxy = ProxyConfig("127.0.0.1", 1080)
    with pytest.raises(LocalProtocolError, match="other_datagrams"):
        async with open_dht("127.0.0.2:0", proxy=proxy, other_datagrams=lambda d, s: None):
            pass
    with pytest.raises(LocalProtocolError, match="ProxyConfig"):
        async with open_dht("127.0.0.2:0", proxy="socks5://127.0.0.1:1080"):  # type: ignore[arg-type]
            pass


# -- the pieces on their own -----------------------------------------------------------------


def test_name_probes_take_only_their_own_answers() -> None:
    probes = NameProbes(random.Random(3), capacity=2)
    node = PeerAddress.parse("10.0.0.7:6881")
    assert not probes.take(Response(transaction_id=b"xx", node_id=bytes(20)).encode(), node)
    tid, probe = probes.open(4)
    assert len(tid) == 8
    other, _ = probes.open(6)
    with pytest.raises(LocalProtocolError):
        probes.open(4)
    query = Ping(transaction_id=tid, node_id=bytes(20)).encode()
    assert not probes.take(query, node)  # a query is not an answer
    assert not probes.take(b"d1:t8:" + tid + b"e", node)  # malformed
    assert not probes.take(b"\x41\x00" + tid, node)  # not KRPC
    assert not probes.take(b"", node)
    v6 = PeerAddress.parse("[2001:db8::1]:6881")
    assert not probes.take(Response(transaction_id=tid, node_id=bytes(20)).encode(), v6)
    unreachable = PeerAddress.parse("10.0.0.7:0")
    assert not probes.take(Response(transaction_id=tid, node_id=bytes(20)).encode(), unreachable)
    assert not probe.answered.is_set()
    error = ErrorReply(transaction_id=tid, code=201, message="busy").encode()
    assert probes.take(error, node)  # an error proves a node there too
    assert probe.address == node
    assert probe.answered.is_set()
    probes.close(tid)
    probes.close(tid)  # no-op
    assert len(probes) == 1
    assert not probes.take(Response(transaction_id=tid, node_id=bytes(20)).encode(), node)
    probes.close(other)
    with pytest.raises(LocalProtocolError):
        NameProbes(random.Random(), capacity=0)


def test_pending_names_are_bounded_and_forget_the_oldest() -> None:
    names = PendingNames(capacity=3)
    for n in range(10):
        names.add(f"n{n}.example", 6881)
    names.add("n8.example", 6881)  # kept already: no change of age
    assert names.snapshot() == [("n7.example", 6881), ("n8.example", 6881), ("n9.example", 6881)]
    names.discard("n8.example", 6881)
    names.discard("n8.example", 6881)  # no-op
    assert len(names) == 2
    for bad in (0, True, 1.5):
        with pytest.raises(LocalProtocolError):
            PendingNames(capacity=bad)  # type: ignore[arg-type]


def test_host_name_tells_names_from_literals() -> None:
    assert host_name("localhost:6881", None) == ("localhost", 6881)
    assert host_name(("router.example", 1), None) == ("router.example", 1)
    assert host_name("[::1]:6881", None) is None
    assert host_name(PeerAddress.parse("10.0.0.1:1"), None) is None
    with pytest.raises(LocalProtocolError):
        host_name("localhost", None)  # no port


def test_relay_outages_are_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=NODE_LOG)
    outages = RelayOutages(ProxyConfig("127.0.0.1", 1080, username="me", password="secret"))
    outages.sent(4)  # nothing to end
    for _ in range(3):
        outages.lost(4, None)
    assert outages.down(4)
    assert not outages.down(6)
    outages.sent(4)
    outages.sent(4)
    outages.lost(4, None)
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in messages] == [logging.WARNING, logging.INFO, logging.WARNING]
    assert all(
        "secret" not in text and "socks5://me@127.0.0.1:1080" in text for _, text in messages
    )
    assert "no UDP association yet" in messages[0][1]


# -- joining again through the relay (review of 3ba26f7) -------------------------------------


def live(dht: DHT) -> bool:
    """Whether *dht*'s routing table holds a node it could still query (the core's test)."""
    node = dht.node
    now = trio.current_time()
    return any(node.table(f).closest(node.node_id, now, 1) for f in node.families)


async def test_a_node_whose_table_went_bad_in_an_outage_joins_again_when_the_relay_is_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The known node stays in its bucket, bad, after the outage's lost queries: "empty" is
    # the core's test (no node we could still query), not len(table). Before: usable again
    # only at the core's bootstrap_retry_interval (60 s here).
    autojump_clock.autojump_threshold = JUMP_AFTER
    config = replace(QUICK, bootstrap_retry_interval=60.0)
    with trio.fail_after(40):
        async with (
            serve_socks5() as server,
            open_dht("127.0.0.3:0", config=QUICK, rng=random.Random(1)) as direct,
            open_dht(
                "127.0.0.1:0",
                [direct.addresses[0]],
                config=config,
                rng=random.Random(2),
                proxy=proxy_of(server),
            ) as proxied,
        ):
            while not live(proxied):
                await trio.sleep(0.1)
            server.refuse_udp = True
            server.associations[0].close()
            while proxied.associated:
                await trio.sleep(0.01)
            while live(proxied):  # the queries are lost: the known node goes bad
                assert await proxied.find_node(NodeId(bytes(20))) == []
            assert len(proxied.node.table(4)) == 1
            server.refuse_udp = False
            await proxied.wait_associated()
            back = trio.current_time()
            while not live(proxied):
                await trio.sleep(0.1)
            assert trio.current_time() - back < 2.0
            found = await proxied.find_node(NodeId(bytes(20)))
            assert direct.node_id.value in [node.node_id for node in found]


async def test_concurrent_bootstraps_share_one_asking_of_the_pending_names(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A dead bootstrap name (nobody answers at its port): 8 bootstrap() at once (callers
    # beside the periodic rounds) ask it once together, not one after the
    # other (they ended at 0.8, 1.6 ... 6.4 s); one right after asks nothing; nor does one
    # while the table has live nodes.
    autojump_clock.autojump_threshold = JUMP_AFTER
    config = replace(QUICK, bootstrap_retry_interval=60.0)
    with trio.fail_after(30):
        async with (
            serve_socks5() as server,
            counting_socket("127.0.0.1") as (dead, got),
            open_dht("127.0.0.3:0", config=QUICK, rng=random.Random(1)) as direct,
        ):
            proxy = proxy_of(server, remote_dns=True)
            name = f"localhost:{dead.port}"
            async with open_dht(
                "127.0.0.1:0", [name], config=config, rng=random.Random(2), proxy=proxy
            ) as proxied:
                while len(got) < PROBE_ATTEMPTS:  # the first join's asking
                    await trio.sleep(0.1)
                await trio.sleep(1.0)  # past the spacing of askings
                ended: list[float] = []
                started = trio.current_time()

                async def join() -> None:
                    assert await proxied.bootstrap() == 0
                    ended.append(trio.current_time() - started)

                async with trio.open_nursery() as nursery:
                    for _ in range(8):
                        nursery.start_soon(join)
                assert len(got) == 2 * PROBE_ATTEMPTS
                assert max(ended) < PROBE_ATTEMPTS * QUICK.query_timeout + 0.5
                assert await proxied.bootstrap() == 0  # asked just now: not again
                assert len(got) == 2 * PROBE_ATTEMPTS
                await trio.sleep(1.0)
                assert await proxied.ping(direct.addresses[0]) is not None
                assert live(proxied)
                assert await proxied.bootstrap() == 1  # live nodes: the name is not asked
                assert len(got) == 2 * PROBE_ATTEMPTS


async def test_local_dns_join_keeps_the_entries_that_resolve(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # socks5:// resolves here, in the background: one name that fails is logged and left
    # out; the literal given with it is still joined through (it dropped the whole join).
    class Failing(trio.abc.HostnameResolver):
        async def getaddrinfo(self, host: Any, port: Any, *args: Any) -> Any:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        async def getnameinfo(self, sockaddr: Any, flags: int) -> Any:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    previous = trio.socket.set_custom_hostname_resolver(Failing())
    try:
        with trio.fail_after(DEADLINE):
            async with (
                serve_socks5() as server,
                open_dht("127.0.0.3:0", config=QUICK) as direct,
                open_dht(
                    "127.0.0.1:0",
                    ["nowhere.example:6881", direct.addresses[0]],
                    config=QUICK,
                    proxy=proxy_of(server),
                ) as proxied,
            ):
                while proxied.node.statistics().table_size == 0:
                    await trio.sleep(0.01)
                assert proxied.node.bootstrap_addresses == (direct.addresses[0],)
    finally:
        trio.socket.set_custom_hostname_resolver(previous)
    failed = [r for r in caplog.records if "nowhere.example" in r.getMessage()]
    assert len(failed) == 1
    assert failed[0].levelno == logging.WARNING
    assert not [r for r in caplog.records if "of a family the node runs" in r.getMessage()]


def test_pending_names_are_due_a_spacing_after_they_were_asked() -> None:
    names = PendingNames(capacity=3)
    names.add("never.example", 1)
    names.add("asked.example", 2, asked_at=10.0)
    assert names.due(10.5, spacing=1.0) == [("never.example", 1)]
    assert names.due(11.0, spacing=1.0) == [("never.example", 1), ("asked.example", 2)]
    names.add("never.example", 1, asked_at=11.0)  # asked now: same age, new time
    assert names.due(11.5, spacing=1.0) == [("asked.example", 2)]
    assert names.snapshot() == [("never.example", 1), ("asked.example", 2)]


async def test_relay_outages_are_counted_per_family_until_a_join_handles_them() -> None:
    # _keep_joining's bookkeeping: an outage of IPv6 does not hide IPv4's, and one that
    # begins while a join runs (after handled()) is the next round's.
    outages = RelayOutages(ProxyConfig("127.0.0.1", 1080))
    assert outages.unhandled() == frozenset()
    outages.lost(4, None)
    outages.lost(4, None)  # the same outage
    outages.lost(6, None)
    assert await outages.wait_unhandled() == {4, 6}
    outages.handled([4])  # a join for IPv4 begins
    assert outages.unhandled() == {6}
    outages.sent(4)
    outages.lost(4, None)  # a new IPv4 outage, during that join
    assert outages.unhandled() == {4, 6}
    outages.handled([4, 6])
    assert outages.unhandled() == frozenset()
    with trio.fail_after(1):  # bound only: the wake comes at once
        async with trio.open_nursery() as nursery:

            async def later() -> None:
                await trio.sleep(0)
                outages.sent(6)
                outages.lost(6, None)

            nursery.start_soon(later)
            assert await outages.wait_unhandled() == {6}


# -- one "needs a bootstrap" rule with the core: any family ---------------------------------

V4_NODE = NodeInfo(b"4" * 20, PeerAddress.parse("10.0.0.4:6881"))
V6_NODE = NodeInfo(b"6" * 20, PeerAddress.parse("[fd00::6]:6881"))
BOOT = [PeerAddress.parse("10.0.0.1:6881"), PeerAddress.parse("[fd00::1]:6881")]


def bootstrapping(node: DHTNode) -> bool:
    """``node.bootstrapping`` now (a call: mypy keeps no narrowing of it across calls)."""
    return node.bootstrapping


def dual_shell() -> tuple[DHTNode, DHT]:
    """A dual-family core that remembers BOOT, with IPv4 and IPv6 nodes it could query, in
    a shell with no socket: _rejoin's decision alone (the in-test relay carries IPv4 only)."""
    node = DHTNode(rng=random.Random(1), now=trio.current_time(), families=(4, 6))
    dht = DHT(node, {}, peer_sink=None, rng=random.Random(1))
    now = trio.current_time()
    dht._cancel(node.bootstrap(BOOT, now))
    assert node.warm_table([V4_NODE, V6_NODE], now) == 2
    return node, dht


def test_the_core_remembers_bootstrap_addresses_without_bootstrapping() -> None:
    # What the shell does with the names that answered while another bootstrap ran (it
    # starts none beside it): bootstrap()'s filter and cap, and no bootstrap started.
    node = DHTNode(rng=random.Random(1), now=0.0, config=DHTConfig(max_bootstrap_addresses=2))
    a, b, c = (PeerAddress.parse(f"10.0.0.{i}:6881") for i in (1, 2, 3))
    v6, port_0 = PeerAddress.parse("[fd00::1]:6881"), PeerAddress.parse("10.0.0.9:0")
    assert node.remember_bootstrap_addresses([v6, port_0, a, a, b, c]) == [a, b]
    assert node.bootstrap_addresses == (a, b)
    assert not bootstrapping(node)
    assert node.remember_bootstrap_addresses([c]) == [c]
    assert node.bootstrap_addresses == (b, c)  # the most recent kept
    with pytest.raises(LocalProtocolError):
        node.remember_bootstrap_addresses(["10.0.0.4:6881"])  # type: ignore[list-item]


async def test_a_rejoin_bootstraps_when_one_familys_table_went_dead() -> None:
    # The core's rule (any family with no node we could query), not every family: IPv6's
    # table went dead in a relay outage while IPv4 still works, and the relay's return
    # rejoins at once. Before, the shell waited for IPv4 to die too.
    node, dht = dual_shell()
    with trio.fail_after(1):
        await dht._rejoin(regained=True)  # both families live: nothing to do
        assert not bootstrapping(node)
        v6 = node.table(6)
        for _ in range(node.config.max_failures):  # the outage's lost queries
            v6.failed(V6_NODE, trio.current_time())
        assert node.table(4).closest(node.node_id, trio.current_time(), 1) == [V4_NODE]
        await dht._rejoin(regained=True)
    assert bootstrapping(node)
    assert len(node.bootstrap_ops) == 1


async def test_a_rejoin_waits_for_the_cores_own_bootstrap_rather_than_start_another() -> None:
    # A bootstrap the shell did not start (the core's own re-bootstrap, which has no event,
    # is alike) is under way: the rejoin starts none beside it, and decides once it ended.
    node, dht = dual_shell()
    node.table(6).remove(V6_NODE.node_id, trio.current_time())
    operation = node.bootstrap(BOOT, trio.current_time())
    done = trio.Event()

    async def rejoin() -> None:
        await dht._rejoin(regained=True)
        done.set()

    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rejoin)
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()
            assert node.bootstrap_ops == {operation}  # the shell started none
            node.cancel(operation)  # it ends, having found nobody
            dht._dispatch()
            await done.wait()
    assert bootstrapping(node)  # IPv6 still has no node: the shell's rejoin
    assert len(node.bootstrap_ops) == 1


async def test_a_rejoin_waits_for_an_earlier_bootstrap_when_a_later_one_ended_first() -> None:
    # Two bootstraps overlap: A (not the shell's) runs on, B (a DHT.bootstrap() whose
    # caller gave up) ends first. Before, `bootstrapping` followed B only: the rejoin saw
    # none under way and started another beside A.
    node, dht = dual_shell()
    node.table(6).remove(V6_NODE.node_id, trio.current_time())
    first = node.bootstrap(BOOT, trio.current_time())
    dht._cancel(node.bootstrap(BOOT, trio.current_time()))
    assert bootstrapping(node)
    assert node.bootstrap_ops == {first}
    done = trio.Event()

    async def rejoin() -> None:
        await dht._rejoin(regained=True)
        done.set()

    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rejoin)
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()
            assert node.bootstrap_ops == {first}  # none beside A
            node.cancel(first)
            dht._dispatch()
            await done.wait()
    (rejoined,) = node.bootstrap_ops  # IPv6 still has no node: one rejoin, after A
    assert rejoined > first


async def test_the_bootstrap_wait_ends_with_those_running_at_its_start() -> None:
    # The wait is for the bootstraps under way when it began: one started meanwhile neither
    # holds it up nor, when it ends, wakes it (only an end of one it waits for does).
    node, dht = dual_shell()
    first = node.bootstrap(BOOT, trio.current_time())
    done = trio.Event()

    async def wait() -> None:
        await dht._bootstraps_ended()
        done.set()

    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            later = node.bootstrap(BOOT, trio.current_time())
            woken = dht._bootstrap_ended
            dht._cancel(later)
            assert dht._bootstrap_ended is woken  # not woken: the later one is not its
            third = node.bootstrap(BOOT, trio.current_time())
            node.cancel(first)
            dht._dispatch()
            await done.wait()
    assert node.bootstrap_ops == {third}
