"""DHT.join_if_needed: keep_finding's rule for joining, public for a caller's own periodic
lookups (a BEP 46 follower's). It joins only when no family has a node to look up with, never
beside another bootstrap of the node (whose end it waits for, at most its timeout), sharing a
join under way with keep_finding's rounds; and the bootstrap it starts lists each address
once. Real nodes on 127.0.0.x, the autojump clock."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from functools import partial

import pytest
import trio
import trio.testing
from _joining import (
    ASKED,
    Sink,
    black_hole,
    proxied_with_a_dead_and_a_live_name,
    router_and_node,
)
from _loopback import FAST

from bip_dht._errors import LocalProtocolError
from bip_dht._node_config import DHTConfig
from bip_dht._shell import DHT, open_dht
from bip_dht._shell_periodic import _joins
from bip_handshake import PeerAddress

HASH = bytes.fromhex("ef" * 20)


class Bootstraps:
    """Spies on a node's ``bootstrap``: the addresses each was given, when it started, and
    how many bootstraps of the node were under way then."""

    def __init__(self, dht: DHT, monkeypatch: pytest.MonkeyPatch) -> None:
        node = dht.node
        self.started: list[tuple[float, int]] = []
        self.given: list[list[PeerAddress]] = []
        bootstrap = node.bootstrap

        def spy(addresses: Iterable[PeerAddress], now: float) -> int:
            addresses = list(addresses)
            self.given.append(addresses)
            self.started.append((now, len(node.bootstrap_ops)))
            return bootstrap(addresses, now)

        monkeypatch.setattr(node, "bootstrap", spy)


async def test_a_node_to_look_up_with_is_enough(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with router_and_node(joined=True) as (_, dht):
        spy = Bootstraps(dht, monkeypatch)
        begun = trio.current_time()
        assert await dht.join_if_needed(timeout=5)
        assert trio.current_time() == begun  # at once
        assert spy.started == []


async def test_it_joins_when_nobody_is_left_to_ask_and_says_whether_it_worked(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with router_and_node(joined=False) as (router, dht), black_hole() as hole:
        spy = Bootstraps(dht, monkeypatch)
        dht.node.remember_bootstrap_addresses([hole])
        with trio.fail_after(3 * FAST.query_timeout):  # its own bootstrap's bound
            assert not await dht.join_if_needed(timeout=0)  # nobody answered
        dht.node.remember_bootstrap_addresses([router.addresses[0]])
        with trio.fail_after(3 * FAST.query_timeout):
            assert await dht.join_if_needed(timeout=0)
        assert [beside for _, beside in spy.started] == [0, 0]
        assert dht not in _joins


async def test_it_shares_a_rounds_join_and_waits_no_longer_than_its_timeout(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # keep_finding's round joins through a node that never answers (a 30 s query timeout):
    # the caller that comes meanwhile starts no bootstrap beside it, and gives up after its
    # own timeout (not the round's join).
    slow = DHTConfig(query_timeout=30.0, slow_after=0.5)
    async with (
        black_hole() as hole,
        open_dht("127.0.0.3:0", config=slow, peer_sink=Sink(), rng=random.Random(1)) as dht,
    ):
        dht.node.remember_bootstrap_addresses([hole])
        spy = Bootstraps(dht, monkeypatch)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(dht.keep_finding, HASH, interval=600))
            await trio.sleep(0.1)
            assert dht in _joins
            begun = trio.current_time()
            assert not await dht.join_if_needed(timeout=1.5)
            assert trio.current_time() - begun == pytest.approx(1.5)
            nursery.cancel_scope.cancel()
        assert [beside for _, beside in spy.started] == [0]  # the round's only
        assert dht not in _joins


@pytest.mark.parametrize("timeout", [-1.0, math.nan, math.inf, True, "1"])
async def test_a_bad_timeout_is_refused(timeout: object) -> None:
    async with open_dht("127.0.0.3:0", config=FAST) as dht:
        with pytest.raises(LocalProtocolError, match="timeout"):
            await dht.join_if_needed(timeout=timeout)  # type: ignore[arg-type]


async def test_a_bootstrap_through_names_that_answered_lists_each_address_once(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The names asked through the proxy's remote DNS are remembered by the core as they
    # answer, and the bootstrap then takes the remembered addresses too. Before, those
    # answers were listed twice (first as answers, then as remembered).
    async with proxied_with_a_dead_and_a_live_name(autojump_clock) as (dht, _, live):
        other = PeerAddress.parse("127.0.0.9:6881")  # remembered before: second choice
        assert dht.node.remember_bootstrap_addresses([other]) == [other]
        spy = Bootstraps(dht, monkeypatch)
        with trio.fail_after(ASKED + 5):
            await dht.bootstrap()
        assert spy.given == [[live, other]]
        assert dht.node.bootstrap_addresses == (other, live)
