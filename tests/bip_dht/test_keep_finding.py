"""DHT.keep_finding on loopback: real nodes on 127.0.0.x, the autojump clock for the rounds."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
import trio.testing

from bip_dht._errors import DHTError, LocalProtocolError
from bip_dht._node_config import DHTConfig
from bip_dht._shell import DHT, open_dht
from bip_handshake import PeerAddress
from bip_metainfo import InfoHash

HASH = bytes.fromhex("cd" * 20)
FAST = DHTConfig(query_timeout=2.0, slow_after=0.5)


class Sink:
    """A PeerSink that records what it is given, and when."""

    def __init__(self) -> None:
        self.found: list[tuple[float, object, tuple[PeerAddress, ...], str]] = []

    def discovered(self, info_hash: object, addresses: Iterable[PeerAddress], source: str) -> None:
        self.found.append((trio.current_time(), info_hash, tuple(addresses), source))

    def peers(self) -> set[PeerAddress]:
        return {peer for _, _, peers, _ in self.found for peer in peers}


@asynccontextmanager
async def network(*sinks: Sink | None) -> AsyncIterator[list[DHT]]:
    """A router on 127.0.0.2 and one node per sink on .3, .4...; each knows the router."""
    async with AsyncExitStack() as stack:
        router = await stack.enter_async_context(
            open_dht("127.0.0.2:0", config=FAST, rng=random.Random(0))
        )
        nodes = [router]
        for i, sink in enumerate(sinks):
            nodes.append(
                await stack.enter_async_context(
                    open_dht(
                        f"127.0.0.{i + 3}:0",
                        [router.addresses[0]],
                        config=FAST,
                        peer_sink=sink,
                        rng=random.Random(i + 1),
                    )
                )
            )
        yield nodes


async def test_rounds_find_an_announced_peer(autojump_clock: trio.testing.MockClock) -> None:
    seed_sink, leecher_sink, ours = Sink(), Sink(), Sink()
    async with (
        network(seed_sink, leecher_sink) as (router, seed, leecher),
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(lambda: seed.keep_finding(HASH, interval=60, announce=True, port=6881))
        await trio.sleep(10)  # the seed's first round is done
        assert router.statistics().peers == 1
        nursery.start_soon(lambda: leecher.keep_finding(HASH, interval=100, sink=ours))
        await trio.sleep(250)
        nursery.cancel_scope.cancel()
    expected = PeerAddress.parse("127.0.0.3:6881")
    assert leecher_sink.peers() == {expected}  # the DHT's own sink
    assert ours.peers() == {expected}  # and ours
    assert {source for _, _, _, source in ours.found} == {"dht"}
    assert {info_hash for _, info_hash, _, _ in ours.found} == {HASH}
    # Rounds at about 10, 110 and 210 s: each found the seed again.
    rounds = sorted({round(time) for time, _, _, _ in ours.found})
    assert len(rounds) == 3
    assert rounds[1] - rounds[0] == pytest.approx(100, abs=5)
    assert rounds[2] - rounds[1] == pytest.approx(100, abs=5)
    assert seed_sink.peers() <= {expected}  # the seed finds only itself


async def test_announce_with_the_implied_port(autojump_clock: trio.testing.MockClock) -> None:
    found = Sink()
    async with network(None, found) as (_, seed, leecher):
        ours = seed.addresses[0]
        with trio.move_on_after(5):
            await seed.keep_finding(InfoHash(v1=HASH), announce=True)
        with trio.move_on_after(5):
            await leecher.keep_finding(InfoHash(v1=HASH))
    assert found.peers() == {ours}  # the DHT socket's port (BEP 5 implied_port)


async def test_it_joins_first_and_retries_while_nobody_answers(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_dht.node")
    async with open_dht("127.0.0.2:0", config=FAST, peer_sink=Sink()) as lonely:
        with trio.move_on_after(100):
            await lonely.keep_finding(HASH, interval=30)
    joins = [r for r in caplog.records if "joining again" in r.getMessage()]
    # Tries at 0, 10, 30 (after 20), 60 (after 30: capped at the interval), 90.
    assert [r.getMessage().rsplit(" ", 2)[-2] for r in joins] == ["10", "20", "30", "30", "30"]


async def test_it_bootstraps_when_the_table_is_empty(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with network(None) as (router, _):
        # A node that knows only a bootstrap address it has not contacted yet.
        state_source = Sink()
        async with open_dht("127.0.0.9:0", config=FAST, peer_sink=state_source) as late:
            assert late.statistics().table_size == 0
            late._node._bootstrap_addresses = [router.addresses[0]]
            with trio.move_on_after(5):
                await late.keep_finding(HASH)
            assert late.statistics().table_size > 0


async def test_cancelling_cancels_the_round(autojump_clock: trio.testing.MockClock) -> None:
    async with network(Sink()) as (_, node):
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: node.keep_finding(HASH, interval=60))
                with trio.fail_after(1):
                    while not node._waiters:  # until the round's lookup runs
                        await trio.lowlevel.checkpoint()
                scope.cancel()
        assert not node._waiters
        await trio.sleep(10)
        assert node.statistics().send_errors == 0


async def test_a_closing_dht_is_our_error(autojump_clock: trio.testing.MockClock) -> None:
    async with network(Sink()) as (_, node):
        pass
    with pytest.raises(DHTError):
        await node.keep_finding(HASH)


async def test_bad_arguments() -> None:
    async with open_dht("127.0.0.2:0", config=FAST) as dht:
        cases: list[dict[str, object]] = [
            {},  # no sink anywhere, no announce
            {"sink": Sink(), "port": 6881},
            {"sink": Sink(), "seed": True},
            {"announce": True, "port": 0},
            {"announce": True, "port": True},
            {"announce": True, "interval": 0},
            {"announce": True, "interval": float("inf")},
            {"announce": True, "interval": "60"},
        ]
        for kwargs in cases:
            with pytest.raises(LocalProtocolError):
                await dht.keep_finding(HASH, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError):
            await dht.keep_finding(b"short", announce=True)
