"""The brain's runtime controls: StrategyChanged and the cheap piece deadline inputs
(PieceDeadlineSet, PieceDeadlineCleared, PieceDeadlinesCleared)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_select._actions import Action, DropPeer, SendCancel, SendRequest
from bip_select._brain import SwarmBrain
from bip_select._errors import LocalProtocolError
from bip_select._geometry import Block, TorrentGeometry
from bip_select._inputs import (
    AllowedFast,
    BlockReceived,
    BlockRejected,
    Input,
    PeerBitfield,
    PeerChokedUs,
    PeerHave,
    PeerHaveAll,
    PeerJoined,
    PeerLeft,
    PeerUnchokedUs,
    PieceDeadlineCleared,
    PieceDeadlinesCleared,
    PieceDeadlineSet,
    PieceLost,
    PieceVerified,
    PrioritiesChanged,
    RequestTimedOut,
    StrategyChanged,
    Tick,
)
from bip_select._queueing import QueueConfig
from bip_select._selection import (
    PiecePicker,
    RandomFirst,
    RarestFirst,
    Sequential,
    Strategy,
    Streaming,
)
from bip_select.simulator import BrainContext, PeerSpec, SwarmConfig, simulate

GEOMETRY = TorrentGeometry(32, 32768)  # 32 pieces of 2 blocks
BLOCK = 16384


def brain(**options: object) -> SwarmBrain:
    return SwarmBrain(GEOMETRY, rng=random.Random(1), **options)  # type: ignore[arg-type]


def requests(actions: Sequence[Action], peer: object = None) -> list[Block]:
    return [
        a.block for a in actions if isinstance(a, SendRequest) and (peer is None or a.peer == peer)
    ]


def seed_joined(b: SwarmBrain, peer: str = "s", unchoke: bool = True) -> list[Action]:
    b.handle(PeerJoined(peer, fast=True), 0.0)
    b.handle(PeerHaveAll(peer), 0.0)
    return b.handle(PeerUnchokedUs(peer), 0.0) if unchoke else []


def strategy_of(b: SwarmBrain) -> Strategy:
    """The brain's strategy, read afresh (mypy keeps an earlier isinstance narrowing)."""
    return b.strategy


def deep_queues() -> QueueConfig:
    """16 requests per peer from the start: a one-block room is below the refill batch."""
    return QueueConfig(initial_queue=16, min_queue=16)


class TestStrategyChanged:
    def test_the_next_picks_follow_the_new_strategy(self) -> None:
        b = brain(selection=Sequential())
        b.handle(PeerJoined("t", fast=True), 0.0)
        b.handle(PeerBitfield("t", frozenset(range(16))), 0.0)  # 0..15 are the common ones
        first = requests(seed_joined(b))
        assert [blk.piece for blk in first] == sorted(blk.piece for blk in first)
        assert all(blk.piece < 16 for blk in first)
        rarest = RarestFirst()
        assert b.handle(StrategyChanged(rarest), 1.0) == []  # queues full: nothing to add
        assert b.strategy is rarest
        assert b.picker.requests.num_outstanding("s") == len(first)  # requests sent stay
        later: list[Block] = []
        for block in first:
            later += requests(b.handle(BlockReceived("s", block), 1.0))
        assert later
        assert all(blk.piece >= 16 for blk in later)  # the rare ones now
        b.check()

    def test_the_switch_offers_requests_to_every_peer(self) -> None:
        # A peer refused a deadline piece (too slow, by the rates the picker had) is asked
        # again at the switch, by the rates measured then (none yet: the fastest of equals).
        b = brain(selection=Streaming())
        b.handle(PieceDeadlineSet(5, 0.001), 0.0)
        b.handle(PeerJoined("f", fast=True), 0.0)
        b.handle(PeerHave("f", 5), 0.0)  # the fast one chokes us
        b.handle(PeerJoined("w", fast=True), 0.0)
        b.handle(PeerHave("w", 5), 0.0)
        b.picker.set_rate("f", 1e6)
        b.picker.set_rate("w", 1.0)
        assert requests(b.handle(PeerUnchokedUs("w"), 0.0)) == []
        asked = requests(b.handle(StrategyChanged(Sequential()), 0.0))
        assert {blk.piece for blk in asked} == {5}
        assert b.deadlines() == {5: 0.001}  # carried over
        b.check()

    def test_deadlines_carry_over(self) -> None:
        b = brain()
        seed_joined(b)
        b.handle(PieceDeadlineSet(20, 10.0), 0.0)
        assert isinstance(b.strategy, Streaming)
        sequential = Sequential()
        b.handle(StrategyChanged(sequential), 1.0)
        assert b.deadlines() == {20: 10.0}
        assert isinstance(b.strategy, Streaming)
        assert b.strategy.then is sequential
        # A strategy bringing its own Streaming layer: its deadlines win, no second layer.
        own = Streaming(then=RarestFirst())
        own.set_deadline(20, 3.0)
        own.set_deadline(21, 4.0)
        b.handle(StrategyChanged(own), 2.0)
        assert b.strategy is own
        assert b.deadlines() == {20: 3.0, 21: 4.0}
        # Nested below another strategy: found there too.
        nested = RandomFirst(then=Streaming())
        b.handle(StrategyChanged(nested), 3.0)
        assert strategy_of(b) is nested
        assert b.deadlines() == {20: 3.0, 21: 4.0}
        b.check()

    def test_stale_deadlines_of_a_given_strategy_are_dropped(self) -> None:
        b = SwarmBrain(GEOMETRY, rng=random.Random(1), have={3})
        own = Streaming()
        own.set_deadline(3, 1.0)  # had
        own.set_deadline(99, 1.0)  # not a piece
        own.set_deadline(4, 1.0)
        b.handle(StrategyChanged(own), 0.0)
        assert b.deadlines() == {4: 1.0}
        b.check()
        given = Streaming()
        given.set_deadline(3, 1.0)
        assert (
            SwarmBrain(GEOMETRY, rng=random.Random(1), have={3}, selection=given).deadlines() == {}
        )

    def test_not_a_strategy(self) -> None:
        b = brain()
        for bad in (object(), None, "sequential"):
            with pytest.raises(LocalProtocolError, match="not a piece selection strategy"):
                b.handle(StrategyChanged(bad), 0.0)  # type: ignore[arg-type]
        assert isinstance(b.strategy, RarestFirst)

    def test_rates_are_measured_while_a_streaming_layer_needs_them(self) -> None:
        b = brain()
        first = requests(seed_joined(b))
        for block in first[:2]:
            b.handle(BlockReceived("s", block), 0.5)
        b.handle(Tick(1.0), 1.0)
        assert "s" not in b.picker._rates  # rarest first: no rate arithmetic
        b.handle(StrategyChanged(Streaming()), 1.0)
        rate = b.picker._rates["s"]  # measured at once, not at the next tick
        assert rate > 0
        for block in first[2:]:
            b.handle(BlockReceived("s", block), 1.5)
        b.handle(Tick(3.0), 3.0)
        assert b.picker._rates["s"] != rate  # and at every tick
        rate = b.picker._rates["s"]
        b.handle(StrategyChanged(RarestFirst()), 3.0)
        b.handle(Tick(9.0), 9.0)
        assert b.picker._rates["s"] == rate  # no longer

    def test_brain_asks_for_rates_at_its_first_deadline(self) -> None:
        b = brain()
        first = requests(seed_joined(b))
        b.handle(BlockReceived("s", first[0]), 0.5)
        b.handle(PieceDeadlineSet(30, 9.0), 1.0)
        assert b.picker._rates["s"] > 0


class TestDeadlines:
    def test_without_a_streaming_strategy_the_brain_adds_one(self) -> None:
        sequential = Sequential()
        b = brain(selection=sequential)
        b.handle(PieceDeadlineSet(7, 5.0), 0.0)
        assert isinstance(b.strategy, Streaming)
        assert b.strategy.then is sequential
        asked = requests(seed_joined(b))
        assert asked[0].piece == 7
        # Clearing one keeps the layer (a player sets the next at once); clearing all
        # takes it off.
        b.handle(PieceDeadlineCleared(7), 0.0)
        assert isinstance(b.strategy, Streaming)
        assert b.deadlines() == {}
        b.handle(PieceDeadlinesCleared(), 0.0)
        assert strategy_of(b) is sequential
        b.check()

    def test_a_user_streaming_layer_stays(self) -> None:
        streaming = Streaming()
        b = brain(selection=streaming)
        b.handle(PieceDeadlineSet(7, 5.0), 0.0)
        assert b.strategy is streaming
        assert streaming.deadlines() == {7: 5.0}
        b.handle(PieceDeadlinesCleared(), 0.0)
        assert b.strategy is streaming
        assert b.deadlines() == {}

    def test_only_peers_that_have_the_piece_are_asked_at_once(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        b = brain(selection=Sequential(), queueing=deep_queues())
        first = requests(seed_joined(b, "s"))
        assert len(first) == 16
        b.handle(PeerJoined("t", fast=True), 0.0)
        b.handle(PeerBitfield("t", frozenset(range(20))), 0.0)
        b.handle(PeerUnchokedUs("t"), 0.0)
        b.handle(PeerJoined("u", fast=True), 0.0)
        b.handle(PeerHaveAll("u"), 0.0)  # chokes us
        # One block in: a room of one, below the batch: no refill.
        assert requests(b.handle(BlockReceived("s", first[0]), 0.1)) == []

        def recount(*_args: object) -> None:
            raise AssertionError("a deadline must not recount every peer's pieces")

        monkeypatch.setattr(b, "_recount_wanted", recount)
        actions = b.handle(PieceDeadlineSet(25, 5.0), 0.2)
        # The room the slow start left, all for the deadline piece; not "t", not "u".
        assert actions
        assert all(isinstance(a, SendRequest) and a.peer == "s" for a in actions)
        assert requests(actions)[0] == Block(25, 0, BLOCK)
        assert {blk.piece for blk in requests(actions)} == {25}
        assert b.deadlines() == {25: 5.0}
        # Replaced by a new deadline; a piece we have is ignored.
        b.handle(PieceDeadlineSet(25, 4.0), 0.3)
        assert b.deadlines() == {25: 4.0}
        monkeypatch.undo()
        b.check()

    def test_a_piece_we_have_is_ignored(self) -> None:
        b = SwarmBrain(GEOMETRY, rng=random.Random(1), have={3}, selection=Sequential())
        assert b.handle(PieceDeadlineSet(3, 1.0), 0.0) == []
        assert b.deadlines() == {}
        assert isinstance(b.strategy, Sequential)  # no layer for nothing

    def test_a_met_deadline_is_forgotten(self) -> None:
        b = brain()
        b.handle(PieceDeadlineSet(9, 1.0), 0.0)
        asked = requests(seed_joined(b))
        assert [blk.piece for blk in asked[:2]] == [9, 9]
        for block in asked[:2]:
            b.handle(BlockReceived("s", block), 0.5)
        b.handle(PieceVerified(9, good=True), 0.5)
        assert b.deadlines() == {}
        b.check()

    def test_priority_zero_wins(self) -> None:
        # A deadline is an order, not a selection: the piece waits until it is wanted
        # (libtorrent would raise its priority to 1 and keep it raised).
        priorities = [4] * GEOMETRY.num_pieces
        priorities[6] = 0
        b = brain(piece_priorities=priorities)
        assert b.handle(PieceDeadlineSet(6, 1.0), 0.0) == []
        assert b.deadlines() == {6: 1.0}
        assert b.picker.piece_priority(6) == 0
        asked = requests(seed_joined(b))
        assert 6 not in {blk.piece for blk in asked}
        b.handle(PrioritiesChanged(piece_priorities={6: 4}), 0.0)
        later: list[Block] = []
        for block in asked:
            later += requests(b.handle(BlockReceived("s", block), 0.5))
        assert later[0].piece == 6
        b.check()

    def test_clearing_lets_a_slow_peer_take_the_piece(self) -> None:
        b = brain()
        b.handle(PieceDeadlineSet(5, 0.001), 0.0)
        b.handle(PeerJoined("f", fast=True), 0.0)
        b.handle(PeerHave("f", 5), 0.0)  # fast, but chokes us
        b.handle(PeerJoined("w", fast=True), 0.0)
        b.handle(PeerHave("w", 5), 0.0)
        b.picker.set_rate("f", 1e6)
        b.picker.set_rate("w", 1.0)
        assert requests(b.handle(PeerUnchokedUs("w"), 0.0)) == []  # too slow for it
        asked = requests(b.handle(PieceDeadlineCleared(5), 0.0))
        assert {blk.piece for blk in asked} == {5}
        assert b.handle(PieceDeadlineCleared(5), 0.0) == []  # none left: nothing
        b.check()

    @pytest.mark.parametrize(
        "event",
        [
            PieceDeadlineSet(-1, 1.0),
            PieceDeadlineSet(32, 1.0),
            PieceDeadlineSet(True, 1.0),
            PieceDeadlineSet(1, float("nan")),
            PieceDeadlineSet(1, float("inf")),
            PieceDeadlineSet(1, "soon"),  # type: ignore[arg-type]
            PieceDeadlineSet(1, True),
            PieceDeadlineCleared(32),
            PieceDeadlineCleared(None),  # type: ignore[arg-type]
        ],
    )
    def test_misuse_is_a_local_error_that_changes_nothing(self, event: Input) -> None:
        b = brain(selection=Sequential())
        with pytest.raises(LocalProtocolError):
            b.handle(event, 0.0)
        assert isinstance(b.strategy, Sequential)
        assert b.deadlines() == {}

    def test_clearing_without_deadlines(self) -> None:
        b = brain()
        assert b.handle(PieceDeadlineCleared(3), 0.0) == []
        assert b.handle(PieceDeadlinesCleared(), 0.0) == []
        assert isinstance(b.strategy, RarestFirst)


def test_the_deadline_order_follows_every_change() -> None:
    """Streaming keeps its deadlines sorted between changes: each set or clear is seen by
    the next pick, even one made while an earlier order was being walked."""
    streaming = Streaming(then=RarestFirst())
    picker = PiecePicker(GEOMETRY, random.Random(1), streaming)
    picker.add_peer("s")
    picker.peer_have_all("s")

    def urgent() -> list[int]:
        return [p for p in streaming.order(picker, "s") if p in streaming.deadlines()]

    streaming.set_deadline(3, 5.0)
    streaming.set_deadline(1, 2.0)
    walking = streaming.order(picker, "s")
    assert next(walking) == 1
    streaming.set_deadline(2, 1.0)
    streaming.clear_deadline(1)
    assert next(walking) == 3  # the walk in progress keeps its own order
    assert urgent() == [2, 3]
    streaming.set_deadline(3, 0.5)
    assert urgent() == [3, 2]
    streaming.clear_deadline(7)  # none: nothing changes
    assert urgent() == [3, 2]
    picker.set_piece_priority(3, 0)
    assert urgent() == [2]


# -------------------------------------------------------------------- any sequence

PEERS = ("a", "b", "c")
BLOCKS = [blk for piece in range(GEOMETRY.num_pieces) for blk in GEOMETRY.blocks(piece)]
STRATEGIES: list[Callable[[], Strategy]] = [
    RarestFirst,
    Sequential,
    lambda: RandomFirst(first=2),
    Streaming,
    lambda: Streaming(then=RarestFirst()),
    lambda: RandomFirst(then=Streaming(), first=1),
]


def inputs() -> st.SearchStrategy[Input]:
    peer = st.sampled_from(PEERS)
    piece = st.integers(0, GEOMETRY.num_pieces - 1)
    block = st.sampled_from(BLOCKS)
    when = st.floats(0, 60)
    return st.one_of(
        st.builds(PeerBitfield, peer, st.frozensets(piece)),
        st.builds(PeerHave, peer, piece),
        st.builds(PeerHaveAll, peer),
        st.builds(PeerChokedUs, peer),
        st.builds(PeerUnchokedUs, peer),
        st.builds(AllowedFast, peer, piece),
        st.builds(BlockReceived, peer, block),
        st.builds(BlockRejected, peer, block),
        st.builds(RequestTimedOut, peer, block),
        st.builds(PieceVerified, piece, st.booleans()),
        st.builds(PieceLost, piece),
        st.builds(PeerLeft, peer),
        st.builds(PrioritiesChanged, st.dictionaries(piece, st.integers(0, 7), max_size=4)),
        st.builds(Tick, st.just(0.0)),
        # The inputs under test, often.
        st.builds(StrategyChanged, st.sampled_from(STRATEGIES).map(lambda make: make())),
        st.builds(PieceDeadlineSet, piece, when),
        st.builds(PieceDeadlineSet, piece, when),
        st.builds(PieceDeadlineCleared, piece),
        st.builds(PieceDeadlinesCleared),
    )


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(STRATEGIES),
    st.lists(st.tuples(inputs(), st.floats(0, 5)), max_size=60),
)
def test_any_switches_and_deadlines_keep_the_books(
    initial: Callable[[], Strategy], steps: list[tuple[Input, float]]
) -> None:
    """Strategy switches and deadline calls amid any peer traffic: the brain's and the
    picker's invariants hold, the deadlines are exactly the ones set and not met or
    cleared, no request is for a piece not wanted, and every request the brain counts is
    one it sent."""
    b = brain(selection=initial())
    now = 0.0
    model: dict[int, float] = {}
    sent: set[tuple[object, Block]] = set()
    banned: set[object] = set()
    for peer in PEERS:
        b.handle(PeerJoined(peer, fast=peer != "c"), now)
    for event, delta in steps:
        now += delta
        had = isinstance(event, PieceDeadlineSet) and b.has_piece(event.piece)
        try:
            actions = b.handle(event, now)
        except LocalProtocolError:
            # The only misuses generated: a peer left twice, or news of a peer the brain
            # dropped (banned for bad data) and that could not come back.
            assert isinstance(event, PeerLeft) or getattr(event, "peer", None) in banned
            continue
        if isinstance(event, PieceDeadlineSet) and not had:
            model[event.piece] = float(event.when)
        elif isinstance(event, PieceDeadlineCleared):
            model.pop(event.piece, None)
        elif isinstance(event, PieceDeadlinesCleared):
            model.clear()
        elif isinstance(event, PieceVerified) and event.good:
            model.pop(event.piece, None)
        for action in actions:
            if isinstance(action, SendRequest):
                sent.add((action.peer, action.block))
                assert b.picker.wants(action.block.piece)
            elif isinstance(action, SendCancel):
                sent.discard((action.peer, action.block))
        assert b.deadlines() == model
        b.check()
        live = {
            (peer, blk)
            for peer in b.picker.requests.peers()
            for blk in b.picker.requests.outstanding(peer)
        }
        assert live <= sent
        sent &= live
        if isinstance(event, PeerLeft):
            b.handle(PeerJoined(event.peer, fast=True), now)  # back, for more traffic
        # A peer the brain dropped is gone already (DropPeer): back too, unless banned.
        for action in actions:
            if isinstance(action, DropPeer) and action.peer not in banned:
                back = b.handle(PeerJoined(action.peer, fast=True), now)
                if any(isinstance(again, DropPeer) for again in back):
                    banned.add(action.peer)


# -------------------------------------------------------------------- in a swarm


@pytest.mark.parametrize("order", [RarestFirst, Sequential])
def test_a_stream_meets_its_deadlines_without_a_streaming_strategy(
    order: Callable[[], Strategy],
) -> None:
    """The simulator sets each deadline with PieceDeadlineSet: a brain built with a plain
    order adds its own Streaming layer and meets them all, as a Streaming brain does
    (test_swarm_properties), when the bandwidth is there."""

    brains: list[SwarmBrain] = []

    def streamer(context: BrainContext) -> SwarmBrain:
        b = SwarmBrain(context.geometry, have=context.have, rng=context.rng, selection=order())
        brains.append(b)
        return b

    fast = 1_000_000
    deadlines = {piece: 3.0 + 0.4 * piece for piece in range(0, 100, 3)}
    peers = [
        PeerSpec(upload=fast, download=fast, seed=True),
        PeerSpec(upload=fast, download=fast, deadlines=deadlines, brain=streamer),
    ]
    peers += [PeerSpec(upload=fast, download=fast) for _ in range(4)]
    trace = simulate(SwarmConfig(num_pieces=100, piece_length=65536, peers=peers, seed=3))
    assert trace.completion[1] is not None
    assert trace.deadline_misses.get(1, []) == []
    times = trace.piece_times[1]
    for piece, when in deadlines.items():
        got = times[piece]
        assert got is not None
        assert got <= when
    assert trace.violations == []
    [b] = brains
    assert isinstance(b.strategy, Streaming)  # the brain's own, met deadlines forgotten
    assert isinstance(b.strategy.then, order)  # type: ignore[arg-type]
    assert b.deadlines() == {}
