"""DHT.keep_finding joins when no family has a node to look up with (not "the table is
empty"; a dead family beside a working one is left to the core's own re-bootstrap), and never
beside another bootstrap of the node, under way or about to start (decided at the moment of
starting): that one is waited for, at most the round's own interval, and the rounds that need
a join together share one. Real nodes on 127.0.0.x (and ::1), the autojump clock."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable
from functools import partial

import pytest
import trio
import trio.testing
from _joining import (
    ASKED,
    QUICK,
    Sink,
    black_hole,
    proxied_with_a_dead_and_a_live_name,
    proxied_with_a_dead_name,
    router_and_node,
)
from _loopback import FAST
from tests._resolvers import has_ipv6_loopback

from bip_dht._errors import DHTError
from bip_dht._node_config import DHTConfig
from bip_dht._shell import DHT, open_dht
from bip_dht._shell_periodic import _can_look_up, _joins
from bip_handshake import NodeInfo, PeerAddress

HASH = bytes.fromhex("ab" * 20)


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
    async with router_and_node(joined=False) as (router, dht), black_hole() as hole:
        node = dht.node
        # A bootstrap of the node's no caller waits for (as the core's own re-bootstrap or
        # the proxied rejoin's); the black hole would keep it running until its query timeout.
        dht._start_bootstrap([hole])
        (op,) = node.bootstrap_ops
        assert not _can_look_up(node, trio.current_time())
        starts = Starts(dht, monkeypatch)
        with trio.move_on_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(dht.keep_finding, HASH, interval=60))
                await trio.sleep(0.5)
                # It ends early (as a bootstrap whose nodes answered), with a node to ask.
                info = NodeInfo(router.node_id.value, router.addresses[0])
                assert node.warm_table([info], trio.current_time()) == 1
                node.cancel(op)
                dht._dispatch()
        assert starts.bootstraps == []  # none beside it, none after it (it gave a node)
        assert len(starts.lookups) == 1
        started, running = starts.lookups[0]
        assert running == 0  # the round looked up once that bootstrap had ended
        # Woken by its end: neither by its query timeout nor by a poll of the round's.
        assert started < 0.5 + FAST.query_timeout / 4


async def test_rounds_on_an_empty_table_share_one_join(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before, each torrent's round that found the table empty bootstrapped: three at once.
    async with router_and_node(joined=False) as (router, dht):
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
    async with router_and_node(joined=False) as (_, dht), black_hole() as hole:
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
    """A guard, not a regression test (it passes on the parent commit too): the waiting
    round polls for a close, as closing wakes nobody waiting for a bootstrap's end."""
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


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this host cannot bind ::1")
async def test_a_family_with_no_node_beside_one_that_works_is_left_to_the_core(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A dual-stack node on a host whose IPv6 reaches nobody: its IPv6 table stays empty, so
    # the node "needs a bootstrap" for ever. Before, every round of every torrent
    # bootstrapped for it (15 find_node floods here), beside the core's own re-bootstrap,
    # which it rate-limits (one per bootstrap_retry_interval).
    async with (
        open_dht("127.0.0.2:0", config=FAST, rng=random.Random(0)) as router,
        open_dht(
            ["127.0.0.3:0", "[::1]:0"], config=FAST, peer_sink=Sink(), rng=random.Random(1)
        ) as dht,
    ):
        node = dht.node
        assert node.families == (4, 6)
        with trio.fail_after(5):
            await dht.bootstrap([router.addresses[0]])
        assert len(node.table(6)) == 0
        starts = Starts(dht, monkeypatch)
        with trio.move_on_after(900):
            async with trio.open_nursery() as nursery:
                for i in range(5):  # five torrents, 7 s apart
                    nursery.start_soon(partial(dht.keep_finding, bytes([i]) * 20, interval=300))
                    await trio.sleep(7)
        assert node.needs_bootstrap(trio.current_time())
    assert starts.bootstraps == []  # the rounds left the IPv6 table to the core
    assert len(starts.lookups) == 15  # three rounds each, through IPv4


async def test_a_caller_bootstrap_asking_names_is_not_joined_beside(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A caller's bootstrap first asks the pending names and is not under way in the core
    # meanwhile. Before, a round that came then saw no bootstrap running and started its
    # own once the asking it shared ended: two at once.
    async with proxied_with_a_dead_name(autojump_clock) as (dht, _):
        starts = Starts(dht, monkeypatch)
        begun = trio.current_time()
        with trio.move_on_after(5):  # the round's next join is 10 s on
            async with trio.open_nursery() as nursery:
                nursery.start_soon(dht.bootstrap)
                await trio.sleep(0.1)
                assert dht._asking is not None
                assert not dht.node.bootstrapping
                nursery.start_soon(partial(dht.keep_finding, HASH, interval=60))
    # The caller's alone, once its asking had ended.
    assert [time - begun for time, _ in starts.bootstraps] == [pytest.approx(ASKED, abs=0.1)]
    assert starts.lookups == []  # nobody answered: no node to look up with


async def test_a_bootstrap_begun_while_the_round_asked_names_is_not_joined_beside(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The round's own join asks the pending names first; a bootstrap of the node begins
    # meanwhile (as the core's re-bootstrap or the proxied rejoin): the round decides at the
    # moment it would start, and takes that one's outcome instead.
    async with proxied_with_a_dead_name(autojump_clock) as (dht, dead):
        starts = Starts(dht, monkeypatch)
        begun = trio.current_time()
        with trio.move_on_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(dht.keep_finding, HASH, interval=60))
                await trio.sleep(0.75 * ASKED)
                assert dht._asking is not None
                assert not dht.node.bootstrapping
                dht._start_bootstrap([dead])  # runs past the asking's end (a query timeout)
    assert [time - begun for time, _ in starts.bootstraps] == [pytest.approx(0.75 * ASKED)]
    assert starts.lookups == []


async def test_a_waiting_round_waits_no_longer_than_its_own_interval(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first round's join runs long (a node that never answers, a 30 s query timeout); a
    # round with a 1 s interval that waits for it goes on after its own second, and looks up
    # through a node learnt meanwhile. Before, it waited out the other round's join.
    slow = DHTConfig(query_timeout=30.0, slow_after=0.5)
    async with (
        black_hole() as hole,
        open_dht("127.0.0.2:0", config=slow, rng=random.Random(0)) as router,
        open_dht("127.0.0.3:0", config=slow, peer_sink=Sink(), rng=random.Random(1)) as dht,
    ):
        node = dht.node
        node._bootstrap_addresses = [hole]
        starts = Starts(dht, monkeypatch)
        with trio.move_on_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(dht.keep_finding, HASH, interval=600))
                await trio.sleep(0.1)
                assert dht in _joins
                nursery.start_soon(partial(dht.keep_finding, bytes(20), interval=1))
                await trio.sleep(0.4)
                info = NodeInfo(router.node_id.value, router.addresses[0])
                assert node.warm_table([info], trio.current_time()) == 1
    assert len(starts.bootstraps) == 1  # the first round's, still running
    assert [time for time, _ in starts.lookups][:1] == [pytest.approx(1.1, abs=0.05)]


async def test_names_that_answered_a_join_that_starts_none_reach_the_core(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The round's join asks the names, then finds a bootstrap begun meanwhile and starts
    # none. Before, the answers were dropped: the live name neither pending (it answered)
    # nor remembered by the core, never asked again nor saved.
    async with proxied_with_a_dead_and_a_live_name(autojump_clock) as (dht, dead, live):
        starts = Starts(dht, monkeypatch)
        begun = trio.current_time()
        with trio.move_on_after(2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(dht.keep_finding, HASH, interval=60))
                await trio.sleep(0.75 * ASKED)
                assert dht._asking is not None
                dht._start_bootstrap([dead])  # as the core's re-bootstrap
        assert [time - begun for time, _ in starts.bootstraps] == [pytest.approx(0.75 * ASKED)]
        assert live in dht.node.bootstrap_addresses
        assert ("localhost", live.port) not in dht._pending_names.snapshot()


@pytest.mark.parametrize("round_first", [True, False], ids=["round_first", "rejoin_first"])
async def test_the_proxied_rejoin_starts_none_beside_a_rounds_join(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, round_first: bool
) -> None:
    # The round's join and the rejoin (a round of _keep_joining) share one asking of the
    # names; the one that asked goes on first and starts through the answers, the other
    # finds it running and takes its outcome. Before, with the round first, both started a
    # bootstrap once the asking ended: two at once (the other order is a guard).
    async with proxied_with_a_dead_and_a_live_name(autojump_clock) as (dht, _, live):
        starts = Starts(dht, monkeypatch)
        rejoined = trio.Event()

        async def rejoin() -> None:
            await dht._rejoin(regained=False)
            rejoined.set()

        finding: Callable[[], Awaitable[object]] = partial(dht.keep_finding, HASH, interval=60)
        first, second = (finding, rejoin) if round_first else (rejoin, finding)
        with trio.move_on_after(2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(first)
                await trio.sleep(0.5 * ASKED)
                assert dht._asking is not None
                nursery.start_soon(second)
        assert [ops for _, ops in starts.bootstraps] == [0]  # one, through the answer
        assert rejoined.is_set()  # the bootstrap reached the live node: nothing more to do
        assert len(starts.lookups) == 1
        assert live in dht.node.bootstrap_addresses


async def test_a_rejoin_whose_names_answer_beside_a_bootstrap_joins_through_them_after_it(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bootstrap that knows nothing of the answers (begun before them, as the core's own)
    # runs when they come: the rejoin waits for its end, then joins through them, as it still
    # has nobody to ask. Before, it started beside it.
    async with proxied_with_a_dead_and_a_live_name(autojump_clock) as (dht, dead, _):
        starts = Starts(dht, monkeypatch)
        begun = trio.current_time()
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(dht._rejoin, regained=False))
                await trio.sleep(0.75 * ASKED)
                assert dht._asking is not None
                dht._start_bootstrap([dead])  # a query timeout long: past the asking's end
        assert [ops for _, ops in starts.bootstraps] == [0, 0]  # none beside another
        first, then = (time - begun for time, _ in starts.bootstraps)
        assert first == pytest.approx(0.75 * ASKED)
        assert then > ASKED  # after that one's end, not at the answers
        with trio.fail_after(1):
            await dht._bootstraps_ended()
        assert _can_look_up(dht.node, trio.current_time())  # through the live node


async def test_a_rejoin_that_waited_starts_none_beside_one_begun_as_that_ended(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The scenario above, but another bootstrap begins in the step the one waited for ends
    # (as one of those its end woke, which ran before the rejoin: trio orders the tasks woken
    # together at random, so the test begins it in the wake itself). The rejoin, woken after
    # it, looks again and starts none beside it. Without that second look, it did.
    async with proxied_with_a_dead_and_a_live_name(autojump_clock) as (dht, dead, live):
        starts = Starts(dht, monkeypatch)
        wake = dht._wake_bootstrap_waiters

        def begin_another_then_wake() -> None:
            if len(starts.bootstraps) == 1:  # the first ended: another begins in this step
                dht._start_bootstrap([dead])
            wake()

        monkeypatch.setattr(dht, "_wake_bootstrap_waiters", begin_another_then_wake)
        begun = trio.current_time()
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(dht._rejoin, regained=False))
                await trio.sleep(0.75 * ASKED)
                assert dht._asking is not None
                dht._start_bootstrap([dead])  # a query timeout long: past the asking's end
            await dht._bootstraps_ended()  # the other's, which the rejoin left alone
        assert [ops for _, ops in starts.bootstraps] == [0, 0]  # never two at once
        assert starts.bootstraps[1][0] - begun > ASKED  # at the first one's end
        assert live in dht.node.bootstrap_addresses  # the answer is the next join's


async def test_a_rejoin_leaves_its_answers_to_a_caller_bootstrap_about_to_start(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A caller's bootstrap is held before its start (as one waiting for open_dht's join
    # through a proxy), so no bootstrap of the core's runs yet, while the rejoin's names
    # answer: the rejoin starts none, and the caller's, once it goes on, joins through the
    # answer the core remembered. Before (looking only at the core's), both started.
    async with proxied_with_a_dead_and_a_live_name(autojump_clock) as (dht, _, live):
        dht._joining = held = trio.Event()
        starts = Starts(dht, monkeypatch)
        begun = trio.current_time()
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(dht.bootstrap)
                await dht._rejoin(regained=False)
                assert trio.current_time() - begun == pytest.approx(ASKED, abs=0.1)
                assert starts.bootstraps == []
                assert live in dht.node.bootstrap_addresses
                await trio.sleep(0.5)
                released = trio.current_time()
                held.set()
        ((started, ops),) = starts.bootstraps
        assert ops == 0
        # Once it goes on, after its own asking of the dead name (due again by then).
        assert started - released == pytest.approx(ASKED, abs=0.1)
        assert _can_look_up(dht.node, trio.current_time())  # through the live node


async def test_a_caller_bootstrap_begun_while_the_round_asks_names_is_not_joined_beside(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The caller shares the round's asking and starts once it ended; the round, which owns
    # the asking and goes on first, sees it about to start and takes its outcome.
    async with proxied_with_a_dead_and_a_live_name(autojump_clock) as (dht, _, _):
        starts = Starts(dht, monkeypatch)
        begun = trio.current_time()
        with trio.move_on_after(2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(dht.keep_finding, HASH, interval=60))
                await trio.sleep(0.5 * ASKED)
                assert dht._asking is not None
                nursery.start_soon(dht.bootstrap)
        assert [ops for _, ops in starts.bootstraps] == [0]
        assert starts.bootstraps[0][0] - begun == pytest.approx(ASKED, abs=0.1)
        ((looked, _),) = starts.lookups  # once the caller's bootstrap reached the live node
        assert looked - starts.bootstraps[0][0] < QUICK.query_timeout / 4


async def test_a_round_waits_for_a_caller_bootstrap_asking_names_and_takes_its_result(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The round comes while a caller's bootstrap asks the names (not under way in the core
    # yet): it waits for that one to start and end, and looks up through what it found.
    # Before (not waiting for one about to start), it went on with nobody to ask and tried
    # again 10 s later.
    async with proxied_with_a_dead_and_a_live_name(autojump_clock) as (dht, _, _):
        starts = Starts(dht, monkeypatch)
        begun = trio.current_time()
        with trio.move_on_after(2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(dht.bootstrap)
                await trio.sleep(0.1)
                assert dht._asking is not None
                nursery.start_soon(partial(dht.keep_finding, HASH, interval=60))
        assert [ops for _, ops in starts.bootstraps] == [0]
        assert starts.bootstraps[0][0] - begun == pytest.approx(ASKED, abs=0.1)
        ((looked, _),) = starts.lookups
        assert looked - starts.bootstraps[0][0] < QUICK.query_timeout / 4


async def test_a_round_wakes_when_the_caller_bootstrap_it_waits_for_starts(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The round waits for a caller's bootstrap held before its start (as one waiting for
    # open_dht's join through a proxy); that one's start wakes it, so it follows its end at
    # once. Without the wake, only its poll every query timeout (2 s here) saw it.
    async with router_and_node(joined=False) as (router, dht):
        dht._joining = held = trio.Event()
        starts = Starts(dht, monkeypatch)
        with trio.move_on_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(dht.bootstrap, [router.addresses[0]])
                await trio.sleep(0.1)
                nursery.start_soon(partial(dht.keep_finding, HASH, interval=60))
                await trio.sleep(0.4)
                assert starts.bootstraps == []
                held.set()
        assert [(time, ops) for time, ops in starts.bootstraps] == [(0.5, 0)]
        ((looked, _),) = starts.lookups
        assert looked < 0.5 + FAST.query_timeout / 4
