"""Mends of the s13 DHT hunt: add_node (BEP 5's PORT message) and the transaction slots it may
take, refused operations told apart, and keep_finding's rounds retried soon and spaced."""

from __future__ import annotations

import functools
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Iterable

import pytest
import trio
import trio.testing

from bip_bencode import decode, encode
from bip_dht._krpc import FindNode, Ping, decode_message
from bip_dht._node import DHTNode
from bip_dht._node_config import DHTConfig
from bip_dht._node_events import DHTEvent, LookupFinished, PingFinished
from bip_dht._shell import DHT, open_dht
from bip_handshake import NodeInfo, PeerAddress

SILENT = PeerAddress.parse("10.9.9.9:6881")
HASH = bytes.fromhex("ab" * 20)


def sent(node: DHTNode, now: float) -> list[tuple[object, PeerAddress]]:
    return [(decode_message(data), to) for data, to in node.datagrams_to_send(now)]


def events(node: DHTNode) -> list[DHTEvent]:
    found = []
    while (event := node.next_event()) is not None:
        found.append(event)
    return found


def test_add_node_pings_an_address_once_while_queued_or_asked() -> None:
    node = DHTNode(rng=random.Random(1), now=0.0)
    for _ in range(1300):  # one peer's PORT messages, all naming its silent port
        node.add_node(SILENT, 0.0)
    assert [to for _, to in sent(node, 0.0)] == [SILENT]
    node.add_node(SILENT, 1.0)  # its ping still awaits an answer
    assert sent(node, 1.0) == []
    # Once that ping has failed, the address may be tried again.
    node.handle_timer(node.config.query_timeout + 1)
    node.add_node(SILENT, node.config.query_timeout + 1)
    assert [to for _, to in sent(node, node.config.query_timeout + 1)] == [SILENT]


def test_add_node_skips_an_address_a_ping_of_the_caller_awaits() -> None:
    node = DHTNode(rng=random.Random(1), now=0.0)
    node.ping(SILENT, 0.0)
    assert len(sent(node, 0.0)) == 1
    node.add_node(SILENT, 0.0)
    assert sent(node, 0.0) == []


def test_add_node_skips_a_good_node_of_the_table() -> None:
    node = DHTNode(rng=random.Random(1), now=0.0)
    good = NodeInfo(bytes(range(20)), SILENT)
    node.table(4).heard_from(good, 0.0, responded=True)
    node.add_node(SILENT, 1.0)
    assert sent(node, 1.0) == []


def test_pending_pings_leave_lookups_transaction_slots() -> None:
    config = DHTConfig(max_outstanding=8, max_queued=64)
    node = DHTNode(rng=random.Random(1), now=0.0, config=config)
    addresses = [PeerAddress.parse(f"10.1.0.{i + 1}:6881") for i in range(40)]
    for address in addresses:
        node.add_node(address, 0.0)
    pings = sent(node, 0.0)
    assert all(isinstance(query, Ping) for query, _ in pings)
    assert 0 < len(pings) <= config.max_outstanding // 2
    # A lookup started now still has slots: its first query goes at once.
    router = PeerAddress.parse("10.2.0.1:6881")
    node.bootstrap([router], 0.0)
    assert [(type(q), to) for q, to in sent(node, 0.0)] == [(FindNode, router)]
    # And every queued ping goes out in time, none lost.
    now, asked = 0.0, {to for _, to in pings}
    for _ in range(40):
        now += config.query_timeout + 1
        node.handle_timer(now)
        asked.update(to for q, to in sent(node, now) if isinstance(q, Ping))
    assert asked >= set(addresses)


def test_a_refused_operation_says_so() -> None:
    config = DHTConfig(max_lookups=1, max_queued=0)
    node = DHTNode(rng=random.Random(1), now=0.0, config=config)
    node.table(4).heard_from(NodeInfo(bytes(range(20)), SILENT), 0.0, responded=True)
    first = node.get_peers(HASH, 0.0)
    second = node.get_peers(HASH, 0.0)
    [refused] = events(node)
    assert isinstance(refused, LookupFinished)
    assert refused.operation == second
    assert refused.refused
    node.handle_timer(config.query_timeout + 1)
    ended = [e for e in events(node) if isinstance(e, LookupFinished)]
    assert [(e.operation, e.refused) for e in ended] == [(first, False)]
    # A ping's Finished event carries the flag too (and is False when it ran).
    node.ping(SILENT, 100.0)
    node.handle_timer(100.0 + config.query_timeout + 1)
    [pinged] = [e for e in events(node) if isinstance(e, PingFinished)]
    assert not pinged.refused


class SlowNode:
    """A DHT node on a UDP socket that answers each get_peers (no peers) after ``DELAY``
    seconds, and records when each came: every lookup takes that long, and the node stays
    good in our table (it answers the other queries at once)."""

    NODE_ID = bytes(range(20))
    DELAY = 1.0

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.asked: list[tuple[float, bytes]] = []

    @property
    def address(self) -> PeerAddress:
        host, port = self.sock.getsockname()[:2]
        return PeerAddress.parse(f"{host}:{port}")

    async def serve(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                data, source = await self.sock.recvfrom(2048)
                message = decode(data)
                assert isinstance(message, dict)
                arguments = message[b"a"]
                assert isinstance(arguments, dict)
                delay = 0.0
                if message.get(b"q") == b"get_peers":
                    info_hash = arguments[b"info_hash"]
                    assert isinstance(info_hash, bytes)
                    self.asked.append((trio.current_time(), info_hash))
                    delay = self.DELAY
                tid = message[b"t"]
                assert isinstance(tid, bytes)
                nursery.start_soon(self._answer, tid, source, delay)

    async def _answer(self, tid: bytes, source: tuple[str, int], delay: float) -> None:
        await trio.sleep(delay)
        answer = {b"id": self.NODE_ID, b"token": b"tok", b"nodes": b""}
        reply: dict[bytes, bytes | dict[bytes, bytes]] = {b"t": tid, b"y": b"r", b"r": answer}
        await self.sock.sendto(encode(reply), source)

    def hashes(self) -> set[bytes]:
        return {info_hash for _, info_hash in self.asked}


class NoSink:
    def discovered(self, info_hash: object, addresses: Iterable[PeerAddress], source: str) -> None:
        return None


async def _slow_node() -> SlowNode:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.60", 0))
    return SlowNode(sock)


def _know(dht: DHT, slow: SlowNode) -> None:
    """The only node of *dht*'s table, as if it had answered already."""
    node = NodeInfo(SlowNode.NODE_ID, slow.address)
    dht.node.table(4).heard_from(node, trio.current_time(), responded=True)


async def test_keep_finding_retries_a_refused_round_soon(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_dht")
    config = DHTConfig(max_lookups=1, max_queued=0, query_timeout=2.0, slow_after=0.5)
    slow = await _slow_node()
    hashes = [bytes([i]) * 20 for i in range(1, 6)]
    with slow.sock:
        async with (
            open_dht("127.0.0.61:0", config=config, rng=random.Random(1)) as dht,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(slow.serve)
            _know(dht, slow)
            for info_hash in hashes:  # one runs, the others are refused at first
                nursery.start_soon(
                    functools.partial(dht.keep_finding, info_hash, interval=900, sink=NoSink())
                )
            with trio.fail_after(300):  # far less than the 900 s interval
                while slow.hashes() != set(hashes):
                    await trio.sleep(1)
            nursery.cancel_scope.cancel()
    busy = [r for r in caplog.records if "refused" in r.getMessage()]
    assert dht.statistics().refused >= 1
    # Logged once for the burst at WARNING, the rest at DEBUG.
    assert [r.levelno for r in busy if r.levelno > logging.DEBUG] == [logging.WARNING]


async def test_round_starts_are_spaced_across_the_dht(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = DHTConfig(query_timeout=2.0, slow_after=0.5)
    slow = await _slow_node()
    hashes = [bytes([i]) * 20 for i in range(1, 6)]
    with slow.sock:
        async with (
            open_dht("127.0.0.61:0", config=config, rng=random.Random(1)) as dht,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(slow.serve)
            _know(dht, slow)
            for info_hash in hashes:  # a session resuming its torrents: all at once
                nursery.start_soon(
                    functools.partial(dht.keep_finding, info_hash, interval=900, sink=NoSink())
                )
            with trio.fail_after(60):
                while slow.hashes() != set(hashes):
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    firsts = sorted(min(t for t, h in slow.asked if h == info_hash) for info_hash in hashes)
    gaps = [b - a for a, b in itertools.pairwise(firsts)]
    assert min(gaps) > 0.05, gaps


# -- review R5 of these mends ---------------------------------------------------------------


def test_add_node_finds_a_good_node_without_walking_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = DHTNode(rng=random.Random(1), now=0.0)
    table = node.table(4)
    table.heard_from(NodeInfo(bytes(range(20)), SILENT), 0.0, responded=True)

    def walk(now: float) -> Iterable[object]:
        raise AssertionError("add_node walked the routing table")

    monkeypatch.setattr(table, "entries", walk)
    node.add_node(SILENT, 1.0)  # a peer's PORT message, per message: one index lookup
    assert sent(node, 1.0) == []
    from bip_dht._routing import NodeState

    assert table.state_at(SILENT, 1.0) is NodeState.GOOD
    assert table.state_at(PeerAddress.parse("10.9.9.9:6882"), 1.0) is None
    assert table.state_at(PeerAddress.parse("10.9.9.8:6881"), 1.0) is None


def test_add_node_pings_one_port_of_an_ip_at_a_time() -> None:
    node = DHTNode(rng=random.Random(1), now=0.0)
    for port in range(1000, 2200):  # one host naming 1200 ports
        node.add_node(PeerAddress.parse(f"10.66.0.1:{port}"), 0.0)
    honest = PeerAddress.parse("10.77.0.1:6881")
    node.add_node(honest, 0.0)
    asked = [to for _, to in sent(node, 0.0)]
    assert [to.host for to in asked].count(PeerAddress.parse("10.66.0.1:1").host) == 1
    assert honest in asked
    # Once that ping has failed, the IP may be tried again (another port).
    later = node.config.query_timeout + 1
    node.handle_timer(later)
    node.add_node(PeerAddress.parse("10.66.0.1:3000"), later)
    assert [str(to) for _, to in sent(node, later)] == ["10.66.0.1:3000"]


def test_add_node_pings_each_port_when_the_table_keeps_several_per_ip() -> None:
    config = DHTConfig(restrict_routing_ips=False)
    node = DHTNode(rng=random.Random(1), now=0.0, config=config)
    ports = [PeerAddress.parse(f"127.0.0.1:{port}") for port in (7001, 7002, 7003)]
    for address in ports:
        node.add_node(address, 0.0)
    assert sorted(to.port for _, to in sent(node, 0.0)) == [7001, 7002, 7003]


@pytest.mark.parametrize("slots", [1, 2, 5, 8])
def test_add_node_pings_take_at_most_half_the_slots_never_the_last(slots: int) -> None:
    config = DHTConfig(max_outstanding=slots, max_queued=64)
    node = DHTNode(rng=random.Random(1), now=0.0, config=config)
    for i in range(20):
        node.add_node(PeerAddress.parse(f"10.1.0.{i + 1}:6881"), 0.0)
    assert len(sent(node, 0.0)) == slots // 2


async def test_a_cancelled_round_gives_up_its_turn(autojump_clock: trio.testing.MockClock) -> None:
    slow = await _slow_node()
    with slow.sock:
        async with (
            open_dht(
                "127.0.0.61:0", config=DHTConfig(query_timeout=2.0), rng=random.Random(1)
            ) as dht,
            trio.open_nursery() as outer,
        ):
            outer.start_soon(slow.serve)
            _know(dht, slow)
            async with trio.open_nursery() as doomed:  # torrents paused before their first round
                for i in range(200):
                    doomed.start_soon(
                        functools.partial(
                            dht.keep_finding, i.to_bytes(20, "big"), interval=900, sink=NoSink()
                        )
                    )
                await trio.sleep(0.5)
                doomed.cancel_scope.cancel()
            start = trio.current_time()
            new = b"\xee" * 20
            outer.start_soon(functools.partial(dht.keep_finding, new, interval=900, sink=NoSink()))
            with trio.fail_after(60):
                while new not in slow.hashes():
                    await trio.sleep(0.01)
            assert trio.current_time() - start < 1.0
            outer.cancel_scope.cancel()


async def test_value_returning_calls_raise_when_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from bip_dht import DHTBusyError, DHTError

    assert issubclass(DHTBusyError, DHTError)
    config = DHTConfig(max_lookups=1, max_queued=0, query_timeout=2.0)
    slow = await _slow_node()
    with slow.sock:
        async with (
            open_dht("127.0.0.61:0", config=config, rng=random.Random(1)) as dht,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(slow.serve)
            _know(dht, slow)
            async with dht.get_peers(b"\x01" * 20):  # takes the only lookup slot
                calls: list[Callable[[], Awaitable[object]]] = [
                    functools.partial(dht.get, b"\x02" * 20),
                    functools.partial(dht.find_node, b"\x03" * 20),
                    dht.sample_infohashes,
                    functools.partial(dht.get_mutable_torrent, bytes(32)),
                    functools.partial(dht.put_mutable, bytes(32), b"v"),  # its seq unknown
                ]
                for call in calls:
                    with pytest.raises(DHTBusyError):
                        await call()
                # announce and put say it in their result, as before
                assert (await dht.announce(b"\x04" * 20, 6881)).refused
            # and a lookup that ran and found nothing still returns None
            assert await dht.get(b"\x02" * 20) is None
            nursery.cancel_scope.cancel()


# -- review R8 of these mends ---------------------------------------------------------------


def test_state_at_is_exact_when_the_table_keeps_several_nodes_per_ip() -> None:
    from bip_dht._routing import NodeState

    config = DHTConfig(restrict_routing_ips=False, restrict_search_ips=False)
    node = DHTNode(rng=random.Random(1), now=0.0, config=config)
    table = node.table(4)
    a = NodeInfo(bytes([1]) * 20, PeerAddress.parse("127.0.0.1:7001"))
    b = NodeInfo(bytes([2]) * 20, PeerAddress.parse("127.0.0.1:7002"))
    table.heard_from(a, 0.0, responded=True)
    table.heard_from(b, 0.0, responded=True)
    assert table.state_at(a.address, 1.0) is NodeState.GOOD
    assert table.state_at(b.address, 1.0) is NodeState.GOOD
    assert table.state_at(PeerAddress.parse("127.0.0.1:7003"), 1.0) is None
    sent(node, 1.0)
    node.add_node(a.address, 1.0)  # a good node of the table: nothing to learn
    assert [to for q, to in sent(node, 1.0) if isinstance(q, Ping)] == []
    for _ in range(10):  # b leaves: a stays known at its address
        table.failed(b, 2.0)
    assert table.state_at(a.address, 2.0) is NodeState.GOOD
    assert table.state_at(b.address, 2.0) is table.state_of(b.node_id, 2.0)


def test_add_node_keeps_its_record_of_pings_bounded() -> None:
    config = DHTConfig(max_outstanding=8, max_queued=16, query_timeout=2.0)
    node = DHTNode(rng=random.Random(1), now=0.0, config=config)
    now, peak = 0.0, 0
    for i in range(3000):  # distinct IPs, never named again: their records must go anyway
        node.add_node(PeerAddress.parse(f"10.{i // 250 % 250}.{i % 250}.1:6881"), now)
        node.datagrams_to_send(now)
        if i % 10 == 0:
            now += 0.5
            node.handle_timer(now)
        peak = max(peak, len(node._pinging))
    assert peak <= config.max_outstanding


async def test_ping_raises_when_refused(autojump_clock: trio.testing.MockClock) -> None:
    from bip_dht import DHTBusyError
    from bip_dht._node_ops import PingOp

    config = DHTConfig(max_outstanding=2, max_queued=0, query_timeout=2.0)
    silent = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await silent.bind(("127.0.0.62", 0))
    host, port = silent.getsockname()[:2]
    with silent:
        async with (
            open_dht("127.0.0.61:0", config=config, rng=random.Random(1)) as dht,
            trio.open_nursery() as nursery,
        ):
            for _ in range(2):  # as many pings as may run: they wait for silent answers
                nursery.start_soon(dht.ping, f"{host}:{port}")
            with trio.fail_after(1):
                while sum(isinstance(op, PingOp) for op in dht.node._running.values()) < 2:
                    await trio.sleep(0.01)
            with pytest.raises(DHTBusyError):
                await dht.ping(f"{host}:{port}")
            nursery.cancel_scope.cancel()


async def test_bootstrap_and_a_refused_join_raise(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from bip_dht import DHTBusyError

    config = DHTConfig(max_lookups=1, max_queued=0, query_timeout=2.0)
    slow = await _slow_node()
    with slow.sock:
        async with (
            open_dht("127.0.0.61:0", config=config, rng=random.Random(1)) as dht,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(slow.serve)
            _know(dht, slow)
            async with dht.get_peers(b"\x01" * 20):  # takes the only lookup slot
                with pytest.raises(DHTBusyError):
                    await dht.bootstrap([slow.address])
                for _ in range(10):  # nobody left to look up with: a join is needed
                    dht.node.table(4).failed(NodeInfo(SlowNode.NODE_ID, slow.address), 0.0)
                # refused, not "nobody answered": for the join's caller and whoever shared it
                async with trio.open_nursery() as joiners:
                    outcomes: list[str] = []

                    async def join() -> None:
                        try:
                            await dht.join_if_needed(timeout=10)
                        except DHTBusyError:
                            outcomes.append("busy")

                    for _ in range(2):
                        joiners.start_soon(join)
                assert outcomes == ["busy", "busy"]
            nursery.cancel_scope.cancel()


async def test_keep_finding_retries_a_refused_join_soon(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = DHTConfig(max_lookups=1, max_queued=0, query_timeout=2.0)
    slow = await _slow_node()
    new = b"\xee" * 20
    with slow.sock:
        async with (
            open_dht("127.0.0.61:0", config=config, rng=random.Random(1)) as dht,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(slow.serve)
            _know(dht, slow)
            async with dht.get_peers(b"\x01" * 20):  # takes the only lookup slot
                for _ in range(10):  # nobody left to look up with: the round joins first
                    dht.node.table(4).failed(NodeInfo(SlowNode.NODE_ID, slow.address), 0.0)
                start = trio.current_time()
                nursery.start_soon(
                    functools.partial(dht.keep_finding, new, interval=900, sink=NoSink())
                )
                with trio.fail_after(1):  # the round's join is refused meanwhile
                    while dht.statistics().refused < 1:
                        await trio.sleep(0.01)
            with trio.fail_after(60):
                while new not in slow.hashes():
                    await trio.sleep(0.01)
            # tried again as a refused round (about 5 s), not as a join that found nobody
            # (10 s, then 20...): the DHT error raised by the join did not end the loop
            assert trio.current_time() - start < 9.0
            nursery.cancel_scope.cancel()


async def test_a_refused_peer_search_raises(autojump_clock: trio.testing.MockClock) -> None:
    from bip_dht import DHTBusyError

    config = DHTConfig(max_lookups=1, max_queued=0, query_timeout=2.0)
    slow = await _slow_node()
    with slow.sock:
        async with (
            open_dht("127.0.0.61:0", config=config, rng=random.Random(1)) as dht,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(slow.serve)
            _know(dht, slow)
            async with dht.get_peers(b"\x01" * 20):  # takes the only lookup slot
                with pytest.raises(DHTBusyError):
                    async for _ in dht.get_peers(b"\x05" * 20):
                        pass
                search = dht.get_peers(b"\x06" * 20)
                with pytest.raises(DHTBusyError):
                    await search.wait()
                assert search.finished is not None
                assert search.finished.refused
            # one that ran and found nobody still just ends
            assert [peer async for peer in dht.get_peers(b"\x05" * 20)] == []
            nursery.cancel_scope.cancel()
