"""PiecePicker and the selection strategies: exact choices per strategy, and properties."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bip_select._errors import LocalProtocolError
from bip_select._geometry import BLOCK_SIZE, Block, TorrentGeometry
from bip_select._selection import (
    MAX_ALLOWED_FAST,
    PiecePicker,
    RandomFirst,
    RarestFirst,
    Sequential,
    Strategy,
    Streaming,
)

ONE = TorrentGeometry(6, BLOCK_SIZE)  # one block per piece: a block is a piece
FOUR = TorrentGeometry(4, 4 * BLOCK_SIZE)  # four blocks per piece


def _picker(
    geometry: TorrentGeometry = ONE, strategy: Strategy | None = None, seed: int = 0
) -> PiecePicker:
    return PiecePicker(geometry, random.Random(seed), strategy)


def _pieces(blocks: list[Block]) -> list[int]:
    return [b.piece for b in blocks]


def _swarm(picker: PiecePicker, bitfields: dict[str, set[int]]) -> None:
    for peer, pieces in bitfields.items():
        picker.add_peer(peer)
        picker.peer_bitfield(peer, pieces)


# -- rarest first ------------------------------------------------------------------------


def test_rarest_first_exact_order() -> None:
    p = _picker()
    _swarm(p, {"s": set(range(6)), "a": {0, 1, 2, 3}, "b": {0, 1, 2}, "c": {0, 1}, "d": {0}})
    # counts: 0:5, 1:4, 2:3, 3:2, 4:1, 5:1 (4 and 5 tie: random)
    first = _pieces(p.pick("s", 6, 0.0))
    assert sorted(first[:2]) == [4, 5]
    assert first[2:] == [3, 2, 1, 0]
    p.check()


def test_rarest_first_ties_are_random_but_reproducible() -> None:
    def first_pick(seed: int) -> int:
        p = _picker(seed=seed)
        _swarm(p, {"s": set(range(6))})
        return p.pick("s", 1, 0.0)[0].piece

    picks = {first_pick(seed) for seed in range(30)}
    assert len(picks) > 3  # all six are equally rare
    assert first_pick(7) == first_pick(7)


def test_priority_orders_before_rarity_and_zero_is_never_picked() -> None:
    p = _picker()
    _swarm(p, {"s": set(range(6)), "a": {0, 1, 2}})
    p.set_piece_priorities({0: 7, 4: 0, 5: 0})
    picked = _pieces(p.pick("s", 6, 0.0))
    assert picked[:2] == [0, 3]  # priority 7 first, then the rarest
    assert sorted(picked[2:]) == [1, 2]
    assert not p.wants(4)
    assert p.piece_priority(4) == 0
    p.check()


def test_priority_zero_pieces_make_nobody_interesting() -> None:
    p = _picker()
    _swarm(p, {"a": {4, 5}, "b": {1}})
    assert p.is_interesting("a")
    p.set_piece_priorities([4, 4, 4, 4, 0, 0])
    assert not p.is_interesting("a")
    assert p.is_interesting("b")
    assert not p.peer_have("a", 5)
    assert p.peer_have("a", 3)
    assert p.pick("a", 5, 0.0) == [Block(3, 0, BLOCK_SIZE)]


def test_file_priorities() -> None:
    g = TorrentGeometry(4, BLOCK_SIZE, file_pieces=[range(2), range(1, 4)])
    p = PiecePicker(g, random.Random(0))
    p.set_file_priorities([0, 1])
    assert [p.wants(i) for i in range(4)] == [False, True, True, True]
    p.set_file_priorities([7, 1])
    assert [p.piece_priority(i) for i in range(4)] == [7, 7, 1, 1]
    with pytest.raises(LocalProtocolError):
        p.set_file_priorities([1])
    with pytest.raises(LocalProtocolError):
        p.set_piece_priority(0, 9)
    with pytest.raises(LocalProtocolError):
        PiecePicker(g, random.Random(0), priorities=[1, 2])


def test_finish_started_pieces_first() -> None:
    p = _picker(FOUR)
    _swarm(p, {"a": {0, 1, 2, 3}, "b": {0, 1, 2, 3}, "c": {3}})
    # a starts some piece (piece 3 is the most common: it is not the one).
    started = p.pick("a", 1, 0.0)
    assert started[0].piece != 3
    # b is handed the rest of a's piece before anything new.
    assert _pieces(p.pick("b", 3, 0.0)) == [started[0].piece] * 3
    p.check()


def test_a_rarer_fresh_piece_beats_a_started_common_one() -> None:
    # Like libtorrent, a started piece only wins ties: a seed's upload is not spent on
    # finishing a piece others can give when it has a piece nobody else has.
    p = _picker(FOUR)
    _swarm(p, {"x": {0}, "s": {0, 1, 2, 3}})
    assert _pieces(p.pick("x", 1, 0.0)) == [0]
    p.peer_have("x", 1)
    p.peer_have("x", 2)
    # counts: 0, 1, 2 -> 2 (x and s), 3 -> 1 (s only): 3 first, then the started 0.
    assert _pieces(p.pick("s", 7, 0.0)) == [3, 3, 3, 3, 0, 0, 0]


def test_many_started_pieces_come_first_outright() -> None:
    g = TorrentGeometry(12, 4 * BLOCK_SIZE)
    p = _picker(g)
    _swarm(p, {"x": set(range(8)), "s": set(range(12))})
    for piece in range(8):  # one block of each of 8 pieces: 8 started
        p.requests.request("x", g.block(piece, 0), 0.0)
    # 8..11 are rarer (only s has them), but 8 started pieces for 2 peers is a lot.
    assert all(piece < 8 for piece in _pieces(p.pick("s", 3, 0.0)))


def test_higher_priority_beats_a_started_piece() -> None:
    p = _picker(FOUR)
    _swarm(p, {"a": {0, 1, 2, 3}})
    p.set_piece_priorities([4, 4, 4, 4])
    first = p.pick("a", 1, 0.0)[0].piece
    urgent = (first + 1) % 4
    p.set_piece_priority(urgent, 7)
    assert _pieces(p.pick("a", 5, 0.0)) == [urgent] * 4 + [first]


# -- random first, sequential -------------------------------------------------------------


def test_random_first_then_rarest() -> None:
    rarest_first_picks = 0
    for seed in range(20):
        p = _picker(strategy=RandomFirst(first=1), seed=seed)
        _swarm(p, {"s": set(range(6)), "a": {0, 1, 2, 3, 4}})
        # 5 is the rarest; random first ignores that.
        rarest_first_picks += p.pick("s", 1, 0.0)[0].piece == 5
    assert 0 < rarest_first_picks < 20
    # Once a piece is had, rarest first takes over.
    p = PiecePicker(ONE, random.Random(0), RandomFirst(first=1), have=[0])
    _swarm(p, {"s": set(range(6)), "a": {0, 1, 2, 3, 4}})
    assert p.pick("s", 1, 0.0)[0].piece == 5
    with pytest.raises(LocalProtocolError):
        RandomFirst(first=-1)


def test_random_first_keeps_priorities() -> None:
    p = _picker(strategy=RandomFirst(), seed=3)
    _swarm(p, {"s": set(range(6))})
    p.set_piece_priorities({2: 7, 3: 0})
    picked = _pieces(p.pick("s", 6, 0.0))
    assert picked[0] == 2
    assert sorted(picked) == [0, 1, 2, 4, 5]


def test_sequential_in_order_with_priorities() -> None:
    p = _picker(strategy=Sequential())
    _swarm(p, {"a": {1, 2, 4, 5}})
    assert _pieces(p.pick("a", 2, 0.0)) == [1, 2]
    p.set_piece_priority(5, 7)
    p.set_piece_priority(4, 0)
    assert _pieces(p.pick("a", 2, 0.0)) == [5]
    p.check()


# -- streaming with deadlines -------------------------------------------------------------


def test_streaming_deadlines_first_then_sequential() -> None:
    s = Streaming()
    p = _picker(strategy=s)
    _swarm(p, {"a": set(range(6))})
    s.set_deadline(4, 5.0)
    s.set_deadline(2, 3.0)
    assert _pieces(p.pick("a", 4, 0.0)) == [2, 4, 0, 1]
    assert s.deadlines() == {2: 3.0, 4: 5.0}
    p.block_received("a", Block(2, 0, BLOCK_SIZE))
    p.piece_passed(2)
    assert s.deadlines() == {4: 5.0}  # met: forgotten
    s.clear_deadline(4)
    assert s.deadline(4) is None
    with pytest.raises(LocalProtocolError):
        s.set_deadline(-1, 1.0)


def test_strategies_nest() -> None:
    streaming = Streaming(then=RarestFirst())
    p = _picker(strategy=RandomFirst(then=streaming, first=1), seed=4)
    _swarm(p, {"s": set(range(6)), "a": {0, 1, 2, 3, 4}})
    streaming.set_deadline(2, 9.0)
    assert p.strategy.deadline(2) == 9.0
    first = p.pick("s", 1, 0.0)[0]  # random first: the deadline waits
    p.block_received("s", first)
    p.piece_passed(first.piece)
    picked = _pieces(p.pick("s", 2, 0.0))
    if first.piece != 2:
        assert picked[0] == 2  # then the deadline, however deep it sits
        p.block_received("s", Block(2, 0, BLOCK_SIZE))
        p.piece_passed(2)
    assert streaming.deadlines() == {}
    assert 5 in picked or first.piece == 5  # and rarest first after it


def test_deadline_piece_goes_to_a_peer_that_can_make_it() -> None:
    s = Streaming()
    p = _picker(FOUR, strategy=s)
    _swarm(p, {"slow": {0, 1, 2, 3}, "fast": {0, 1, 2, 3}})
    p.set_rate("slow", BLOCK_SIZE / 10)  # 10 s per block
    p.set_rate("fast", 100 * BLOCK_SIZE)
    s.set_deadline(3, 5.0)
    # The slow peer cannot deliver piece 3 in 5 s and a faster peer has it: not for it.
    assert 3 not in _pieces(p.pick("slow", 2, 0.0))
    assert _pieces(p.pick("fast", 4, 0.0)) == [3, 3, 3, 3]


def test_fastest_peer_takes_an_impossible_deadline() -> None:
    s = Streaming()
    p = _picker(FOUR, strategy=s)
    _swarm(p, {"slow": {0, 1, 2, 3}, "slower": {0, 1, 2, 3}})
    p.set_rate("slow", BLOCK_SIZE / 10)
    p.set_rate("slower", BLOCK_SIZE / 100)
    s.set_deadline(3, 1.0)
    assert _pieces(p.pick("slower", 1, 0.0)) != [3]
    assert _pieces(p.pick("slow", 1, 0.0)) == [3]


def test_late_deadline_block_is_duplicated_to_a_faster_peer() -> None:
    s = Streaming()
    p = _picker(ONE, strategy=s)
    _swarm(p, {"slow": set(range(6)), "fast": set(range(6))})
    p.set_rate("slow", 10 * BLOCK_SIZE)
    s.set_deadline(0, 1.0)
    assert p.pick("slow", 1, 0.0) == [Block(0, 0, BLOCK_SIZE)]  # due at 0.1 s: fine
    # Time passes, the block has not come (the slow peer's rate collapsed).
    p.set_rate("slow", BLOCK_SIZE / 100)
    p.set_rate("fast", 100 * BLOCK_SIZE)
    picked = p.pick("fast", 1, 0.5)
    assert picked == [Block(0, 0, BLOCK_SIZE)]
    assert p.requests.requesters(Block(0, 0, BLOCK_SIZE)) == ("slow", "fast")
    result = p.block_received("fast", Block(0, 0, BLOCK_SIZE))
    assert result is not None
    assert result.cancel == ("slow",)
    p.check()


def test_unmeasured_peer_does_not_duplicate() -> None:
    s = Streaming()
    p = _picker(ONE, strategy=s)
    _swarm(p, {"a": {0}, "b": {0}})
    s.set_deadline(0, 1.0)
    assert p.pick("a", 1, 0.0) == [Block(0, 0, BLOCK_SIZE)]
    assert p.pick("b", 1, 5.0) == []


# -- choking, allowed fast, parole, end-game -----------------------------------------------


def test_allowed_fast_while_choked() -> None:
    p = _picker()
    _swarm(p, {"a": set(range(6))})
    assert p.pick("a", 3, 0.0, choked=True) == []
    p.allowed_fast("a", 4)
    p.allowed_fast("a", 99)  # out of range: ignored
    p.allowed_fast("a", "4")  # type: ignore[arg-type]
    assert not p.peer_have("a", "4")  # type: ignore[arg-type]
    assert _pieces(p.pick("a", 3, 0.0, choked=True)) == [4]
    for piece in range(200):
        p.allowed_fast("b", piece % 6)
    assert len(p._allowed_fast["b"]) <= MAX_ALLOWED_FAST


def test_choke_without_fast_extension_drops_requests() -> None:
    p = _picker()
    _swarm(p, {"a": set(range(6))})
    picked = p.pick("a", 2, 0.0)
    assert p.peer_choked("a", fast=True) == []
    assert p.peer_choked("a", fast=False) == picked
    assert p.requests.num_outstanding("a") == 0
    again = p.pick("a", 2, 0.0)
    assert p.remove_peer("a") == again
    p.check()


def test_parole_peer_gets_whole_pieces_to_itself() -> None:
    p = _picker(FOUR)
    _swarm(p, {"honest": {0, 1, 2, 3}, "suspect": {0, 1, 2, 3}})
    started = p.pick("honest", 1, 0.0)[0].piece
    mine = p.pick("suspect", 8, 0.0, exclusive=True)
    assert started not in _pieces(mine)
    assert len(set(_pieces(mine))) == 2
    # Nobody else gets blocks of the suspect's pieces.
    others = _pieces(p.pick("honest", 7, 0.0))  # the rest: 3 + 4 blocks before end-game
    assert not set(others) & set(_pieces(mine))
    p.remove_peer("suspect")
    assert not p._exclusive


def test_parole_peer_that_stops_loses_its_pieces() -> None:
    p = _picker(FOUR)
    _swarm(p, {"honest": {0, 1, 2, 3}, "suspect": {0, 1, 2, 3}})
    mine = p.pick("suspect", 2, 0.0, exclusive=True)
    piece = mine[0].piece
    assert piece not in _pieces(p.pick("honest", 2, 0.0))
    assert p.block_timed_out("suspect", mine[0])
    # The piece is open to everyone again (after honest's own, nearer completion).
    assert p.pick("honest", 3, 0.0)[2] == mine[0]
    later = p.pick("suspect", 4, 0.0, exclusive=True)
    assert p.block_rejected("suspect", later[0])
    assert p.peer_choked("suspect", fast=False) == [mine[1], *later[1:]]
    assert not p._exclusive
    p.check()


def test_endgame_duplicates_and_cancels_losers() -> None:
    p = _picker(FOUR)
    _swarm(p, {"a": {0, 1, 2, 3}, "b": {0, 1, 2, 3}})
    first = p.pick("a", 16, 0.0)
    assert len(first) == 16
    assert p.in_endgame()
    dup = p.pick("b", 3, 1.0)
    assert len(dup) == 1  # endgame_depth 1: one duplicate, to a peer with nothing pending
    assert all(p.requests.requesters(b) == ("a", "b") for b in dup)
    assert p.pick("b", 3, 1.0) == []  # b still has one pending
    result = p.block_received("b", dup[0])
    assert result is not None
    assert result.cancel == ("a",)
    assert p.block_received("a", dup[0]) is None  # the loser's copy is not needed
    p.check()


def test_endgame_depth_is_configurable() -> None:
    p = PiecePicker(FOUR, random.Random(0), endgame_depth=8)
    _swarm(p, {"a": {0, 1, 2, 3}, "b": {0, 1, 2, 3}})
    p.pick("a", 16, 0.0)
    assert len(p.pick("b", 10, 1.0)) == 8
    with pytest.raises(LocalProtocolError):
        PiecePicker(FOUR, random.Random(0), endgame_depth=0)


def test_not_endgame_while_blocks_are_free() -> None:
    p = _picker(FOUR)
    _swarm(p, {"a": {0, 1, 2, 3}})
    p.pick("a", 15, 0.0)
    (free,) = (piece for piece in range(4) if p.requests.num_free(piece))
    p.add_peer("b")
    p.peer_have("b", (free + 1) % 4)
    assert not p.in_endgame()
    assert p.pick("b", 2, 0.0) == []  # its piece is all asked for, and b has not the free one
    p.peer_have("b", free)
    # b takes the last free block, which starts end-game, and then a duplicate.
    assert _pieces(p.pick("b", 2, 0.0))[0] == free
    assert p.in_endgame()


def test_constructor_priorities_and_peer_losing_pieces() -> None:
    p = PiecePicker(ONE, random.Random(0), priorities=[0, 1, 0, 7, 0, 0])
    _swarm(p, {"a": set(range(6))})
    assert _pieces(p.pick("a", 6, 0.0)) == [3, 1]
    p.peer_dont_have("a", 1)
    p.peer_have_none("a")
    assert not p.is_interesting("a")
    p.check()


def test_late_block_deep_in_a_slow_queue_is_duplicated() -> None:
    s = Streaming()
    p = _picker(ONE, strategy=s)
    _swarm(p, {"slow": set(range(6)), "fast": set(range(6))})
    p.set_rate("slow", BLOCK_SIZE)  # a block a second
    for piece in (0, 1, 2):
        s.set_deadline(piece, 2.5)
    assert _pieces(p.pick("slow", 3, 0.0)) == [0, 1, 2]  # due at 1, 2 and 3 s
    p.set_rate("fast", 100 * BLOCK_SIZE)
    # Only the third will miss its deadline behind the other two: it alone is doubled.
    assert _pieces(p.pick("fast", 1, 0.1)) == [2]


def test_nothing_wanted_means_no_picks() -> None:
    p = PiecePicker(ONE, random.Random(0), have=range(6))
    _swarm(p, {"a": set(range(6))})
    assert p.is_complete()
    assert not p.in_endgame()
    assert p.pick("a", 4, 0.0) == []
    assert not p.is_interesting("a")
    assert p.first_wanted() == 6


def test_lost_piece_is_wanted_again() -> None:
    p = PiecePicker(ONE, random.Random(0), have=[1])
    _swarm(p, {"a": {1}})
    assert not p.is_interesting("a")
    p.lose_piece(1)
    assert p.is_interesting("a")
    assert _pieces(p.pick("a", 1, 0.0)) == [1]
    p.check()


def test_failed_piece_is_picked_again() -> None:
    p = _picker()
    _swarm(p, {"a": {2}})
    (block,) = p.pick("a", 1, 0.0)
    p.block_received("a", block)
    assert p.piece_failed(2) == ("a",)
    assert p.pick("a", 1, 0.0) == [block]
    p.block_received("a", block)
    assert p.piece_passed(2) == ("a",)
    assert not p.wants(2)
    p.check()


# -- properties ------------------------------------------------------------------------------


G = TorrentGeometry(5, 2 * BLOCK_SIZE, 9 * BLOCK_SIZE)


def _random_first() -> Strategy:
    return RandomFirst(first=2)


STRATEGIES: list[Callable[[], Strategy]] = [RarestFirst, Sequential, _random_first, Streaming]


class PickerMachine(RuleBasedStateMachine):
    """Random swarm traffic through a picker.

    Every request is settled exactly once (received, rejected, timed out, dropped);
    outside end-game no block is ever asked of two peers; the bookkeeping and the
    availability index stay consistent.
    """

    def __init__(self) -> None:
        super().__init__()
        self.picker: PiecePicker | None = None
        self.peers: set[int] = set()
        self.next_peer = 0
        self.pending: set[tuple[int, Block]] = set()
        self.issued = 0
        self.settled = 0
        self.duplicable: set[Block] = set()
        self.now = 0.0

    @precondition(lambda self: self.picker is None)
    @rule(which=st.integers(0, len(STRATEGIES) - 1), seed=st.integers(0, 9))
    def start(self, which: int, seed: int) -> None:
        strategy = STRATEGIES[which]()
        self.picker = PiecePicker(G, random.Random(seed), strategy)
        if isinstance(strategy, Streaming):
            strategy.set_deadline(3, 10.0)

    @precondition(lambda self: self.picker is not None)
    @rule(pieces=st.sets(st.integers(0, 4)), seed=st.booleans())
    def join(self, pieces: set[int], seed: bool) -> None:
        assert self.picker is not None
        peer = self.next_peer
        self.next_peer += 1
        self.picker.add_peer(peer)
        if seed:
            self.picker.peer_have_all(peer)
        else:
            self.picker.peer_bitfield(peer, pieces)
        self.picker.set_rate(peer, float(peer + 1) * BLOCK_SIZE)
        self.peers.add(peer)

    def _peer(self, data: st.DataObject) -> int:
        return data.draw(st.sampled_from(sorted(self.peers)))

    @precondition(lambda self: self.peers)
    @rule(data=st.data(), count=st.integers(1, 6), choked=st.booleans())
    def pick(self, data: st.DataObject, count: int, choked: bool) -> None:
        assert self.picker is not None
        peer = self._peer(data)
        self.now += 0.5
        endgame = self.picker.in_endgame()
        picked = self.picker.pick(peer, count, self.now, choked=choked)
        # A pick that takes the last free blocks enters end-game on the way.
        endgame = endgame or self.picker.in_endgame()
        assert len(picked) <= count
        assert len(set(picked)) == len(picked)
        for block in picked:
            assert self.picker.availability.peer_has(peer, block.piece)
            assert (peer, block) not in self.pending
            self.pending.add((peer, block))
            self.issued += 1
            if endgame or len(self.picker.requests.requesters(block)) > 1:
                # Only end-game or a late deadline piece may duplicate a block.
                assert endgame or self.picker.strategy.deadline(block.piece) is not None
                self.duplicable.add(block)

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), how=st.sampled_from(["received", "rejected", "timed_out"]))
    def answer(self, data: st.DataObject, how: str) -> None:
        assert self.picker is not None
        peer, block = data.draw(st.sampled_from(sorted(self.pending)))
        if how == "received":
            result = self.picker.block_received(peer, block)
            assert result is not None
            settled = {(peer, block)} | {(other, block) for other in result.cancel}
            assert settled <= self.pending
            self.pending -= settled
            self.settled += len(settled)
            if result.piece_complete:
                good = data.draw(st.booleans())
                if good:
                    self.picker.piece_passed(block.piece)
                else:
                    self.picker.piece_failed(block.piece)
        else:
            method = (
                self.picker.block_rejected if how == "rejected" else self.picker.block_timed_out
            )
            assert method(peer, block)
            self.pending.discard((peer, block))
            self.settled += 1

    @precondition(lambda self: self.peers)
    @rule(data=st.data(), leave=st.booleans())
    def leave_or_choke(self, data: st.DataObject, leave: bool) -> None:
        assert self.picker is not None
        peer = self._peer(data)
        if leave:
            dropped = self.picker.remove_peer(peer)
            self.peers.discard(peer)
        else:
            dropped = self.picker.peer_choked(peer, fast=False)
        mine = {(p, b) for p, b in self.pending if p == peer}
        assert {(peer, b) for b in dropped} == mine
        self.pending -= mine
        self.settled += len(mine)

    @precondition(lambda self: self.peers)
    @rule(data=st.data(), piece=st.integers(0, 4), allowed=st.booleans())
    def have_or_allowed_fast(self, data: st.DataObject, piece: int, allowed: bool) -> None:
        assert self.picker is not None
        peer = self._peer(data)
        if allowed:
            self.picker.allowed_fast(peer, piece)
        else:
            self.picker.peer_have(peer, piece)

    @precondition(lambda self: self.picker is not None)
    @rule(piece=st.integers(0, 4), priority=st.integers(0, 7))
    def priority(self, piece: int, priority: int) -> None:
        assert self.picker is not None
        self.picker.set_piece_priority(piece, priority)

    def teardown(self) -> None:
        """Liveness: with a seed that answers everything, every wanted piece arrives."""
        picker = self.picker
        if picker is None:
            return
        for peer, block in sorted(self.pending):
            picker.block_rejected(peer, block)
        picker.add_peer("seed")
        picker.peer_have_all("seed")
        picker.set_rate("seed", 1e9)
        for _ in range(4 * G.num_pieces * 2):
            if picker.is_complete():
                break
            self.now += 1.0
            for block in picker.pick("seed", 4, self.now):
                result = picker.block_received("seed", block)
                assert result is not None
                if result.piece_complete:
                    picker.piece_passed(block.piece)
        assert picker.is_complete()
        picker.check()

    @invariant()
    def consistent(self) -> None:
        if self.picker is None:
            return
        self.picker.check()
        assert self.issued == self.settled + len(self.pending)
        actual = {
            (p, b) for p in range(self.next_peer) for b in self.picker.requests.outstanding(p)
        }
        assert actual == self.pending
        for _, block in self.pending:
            if block not in self.duplicable:
                assert len(self.picker.requests.requesters(block)) == 1


PickerMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)
TestPickerMachine = PickerMachine.TestCase


@pytest.mark.parametrize("make", STRATEGIES)
def test_a_swarm_of_seeds_completes_the_torrent(make: Callable[[], Strategy]) -> None:
    """Liveness: answering every request finishes the download, whatever the strategy."""
    p = PiecePicker(G, random.Random(1), make())
    for peer in range(3):
        p.add_peer(peer)
        p.peer_have_all(peer)
        p.set_rate(peer, 10.0 * BLOCK_SIZE)
    now = 0.0
    for _ in range(100):
        if p.is_complete():
            break
        now += 1.0
        for peer in range(3):
            for block in p.pick(peer, 2, now):
                result = p.block_received(peer, block)
                if result is not None and result.piece_complete:
                    p.piece_passed(block.piece)
    assert p.is_complete()
    assert p.requests.num_have == G.num_pieces
