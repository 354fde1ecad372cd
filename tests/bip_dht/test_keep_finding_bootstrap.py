"""DHT.keep_finding joins by the core's rule (``DHTNode.needs_bootstrap``, not "the table is
empty") and never beside another bootstrap of the node: one under way is waited for, and the
rounds that need a join together share one. Real nodes on 127.0.0.x, the autojump clock."""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing

from bip_dht._errors import DHTError
from bip_dht._node_config import DHTConfig
from bip_dht._shell import DHT, open_dht
from bip_dht._shell_periodic import _joins
from bip_handshake import PeerAddress

HASH = bytes.fromhex("ab" * 20)
FAST = DHTConfig(query_timeout=2.0, slow_after=0.5)


class Sink:
    """A PeerSink that keeps nothing (keep_finding needs somewhere for the peers to go)."""

    def discovered(self, info_hash: object, addresses: Iterable[PeerAddress], source: str) -> None:
        pass


class Starts:
    """Spies on a node's ``bootstrap`` and ``get_peers``: when each started, and how many
    bootstraps of the node were under way then."""

    def __init__(self, dht: DHT, monkeypatch: pytest.MonkeyPatch) -> None:
        node = dht.node
        self.bootstraps: list[tuple[float, int]] = []
        self.lookups: list[tuple[float, int]] = []
        bootstrap, get_peers = node.bootstrap, node.get_peers

        def spy_bootstrap(addresses: Iterable[PeerAddress], now: float) -> int:
            self.bootstraps.append((now, len(node.bootstrap_ops)))
            return bootstrap(addresses, now)

        def spy_get_peers(info_hash: bytes, now: float) -> int:
            self.lookups.append((now, len(node.bootstrap_ops)))
            return get_peers(info_hash, now)

        monkeypatch.setattr(node, "bootstrap", spy_bootstrap)
        monkeypatch.setattr(node, "get_peers", spy_get_peers)


@asynccontextmanager
async def black_hole() -> AsyncIterator[PeerAddress]:
    """An address that never answers and sends no ICMP error back: a bound socket nobody
    reads (a query to it waits for its timeout)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.20", 0))
        yield PeerAddress.parse(f"127.0.0.20:{sock.getsockname()[1]}")


@asynccontextmanager
async def router_and_node(bootstrap: bool = True) -> AsyncIterator[tuple[DHT, DHT]]:
    """A router on 127.0.0.2 and a node on .3 (joined through the router, or knowing
    nobody: its table empty, no bootstrap address)."""
    async with open_dht("127.0.0.2:0", config=FAST, rng=random.Random(0)) as router:
        given = [router.addresses[0]] if bootstrap else []
        async with open_dht(
            "127.0.0.3:0", given, config=FAST, peer_sink=Sink(), rng=random.Random(1)
        ) as node:
            if bootstrap:
                with trio.fail_after(5):
                    await node.bootstrap()
            yield router, node


async def test_a_table_whose_nodes_all_went_bad_makes_it_join_again(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before, a table of bad nodes was not "empty": the round looked up with no node to
    # query and waited a whole interval, the core's own retry a minute.
    async with router_and_node() as (_, dht):
        node = dht.node
        now = trio.current_time()
        table = node.table(4)
        entries = list(table.entries(now))
        assert entries
        for entry in entries:  # as after an outage: every query failed
            for _ in range(node.config.max_failures):
                table.failed(entry.node, now)
        assert len(table) == len(entries)  # still there, waiting for replacements
        assert node.needs_bootstrap(now)
        starts = Starts(dht, monkeypatch)
        with trio.move_on_after(5):
            await dht.keep_finding(HASH, interval=60)
        assert [ops for _, ops in starts.bootstraps] == [0]  # one join, beside nothing
        assert len(starts.lookups) == 1
        assert starts.lookups[0][0] >= starts.bootstraps[0][0]
        assert not node.needs_bootstrap(trio.current_time())  # the router answered again


async def test_it_waits_for_a_bootstrap_under_way_instead_of_starting_another(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with router_and_node(bootstrap=False) as (router, dht), black_hole() as hole:
        node = dht.node
        # A bootstrap of the node's no caller waits for (as the core's own re-bootstrap or
        # the proxied rejoin's); the black hole keeps it running until its query timeout.
        dht._start_bootstrap([hole, router.addresses[0]])
        assert node.bootstrapping
        assert node.needs_bootstrap(trio.current_time())
        starts = Starts(dht, monkeypatch)
        with trio.move_on_after(10):
            await dht.keep_finding(HASH, interval=60)
        assert starts.bootstraps == []  # none beside it, none after it (it reached the router)
        assert len(starts.lookups) == 1
        started, running = starts.lookups[0]
        assert running == 0  # the round looked up once that bootstrap had ended
        assert started <= 2 * FAST.query_timeout  # woken by its end, not by a bound


async def test_rounds_on_an_empty_table_share_one_join(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before, each torrent's round that found the table empty bootstrapped: three at once.
    async with router_and_node(bootstrap=False) as (router, dht):
        node = dht.node
        dht.node._bootstrap_addresses = [router.addresses[0]]  # known, not contacted yet
        assert len(node.table(4)) == 0
        starts = Starts(dht, monkeypatch)
        with trio.move_on_after(5):
            async with trio.open_nursery() as nursery:
                for i in range(3):
                    nursery.start_soon(partial(dht.keep_finding, bytes([i]) * 20, interval=60))
        assert [ops for _, ops in starts.bootstraps] == [0]
        assert len(starts.lookups) == 3  # every round looked up after the one join
        assert min(time for time, _ in starts.lookups) >= starts.bootstraps[0][0]
        assert len(node.table(4)) > 0
        assert dht not in _joins


async def test_a_cancelled_join_hands_over_to_a_waiting_round(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with router_and_node(bootstrap=False) as (_, dht), black_hole() as hole:
        dht.node._bootstrap_addresses = [hole]  # nobody answers: the table stays empty
        starts = Starts(dht, monkeypatch)
        async with trio.open_nursery() as nursery:
            first = trio.CancelScope()

            async def cancelled_round() -> None:
                with first:
                    await dht.keep_finding(HASH, interval=60)

            nursery.start_soon(cancelled_round)
            with trio.fail_after(1):
                while not starts.bootstraps:  # the first round's bootstrap runs
                    await trio.lowlevel.checkpoint()
            nursery.start_soon(lambda: dht.keep_finding(bytes(20), interval=60))
            await trio.sleep(0.1)  # the second round waits for the first's join
            assert len(starts.bootstraps) == 1
            first.cancel()
            await trio.sleep(5)
            nursery.cancel_scope.cancel()
        # The waiting round joined itself once the first's bootstrap was cancelled with it
        # (the node still needed it), beside nothing; that found nobody either: no lookup.
        assert starts.bootstraps == [(0.0, 0), (0.1, 0)]
        assert starts.lookups == []
        assert dht not in _joins


async def test_a_dht_closing_while_it_waits_is_our_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    errors: list[BaseException] = []
    async with black_hole() as hole, trio.open_nursery() as nursery:
        async with open_dht("127.0.0.3:0", config=FAST, peer_sink=Sink()) as dht:
            dht._start_bootstrap([hole])

            async def round_() -> None:
                try:
                    await dht.keep_finding(HASH, interval=600)
                except DHTError as error:
                    errors.append(error)

            nursery.start_soon(round_)
            await trio.sleep(0.1)  # it waits for that bootstrap
        with trio.fail_after(2 * FAST.query_timeout):  # not the whole interval
            while not errors:
                await trio.sleep(0.1)
    assert "closed" in str(errors[0])
    assert dht not in _joins
