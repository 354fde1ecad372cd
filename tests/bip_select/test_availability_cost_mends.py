"""What a bitfield or a departure costs the wanted index: counted work, never timings.

A peer's bitfield, have none or departure touches up to every piece. Moving each of them
between the wanted index's buckets cost 1-4 us a piece in Python (2 s for a bitfield of a
1M-piece torrent). As libtorrent's piece_picker does (``inc_refcount``/``dec_refcount`` of a
bitfield update piece by piece only below min(50, half the pieces), otherwise bump the
counters and set ``m_dirty``), a bulk change only bumps counts and marks the index stale;
the index is rebuilt once, at the next read of its order. The answers stay those of the
piece-by-piece index: priority first, rarest first, random among equals (checked against
a plain model below).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Hashable

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bip_peer import PieceSet
from bip_select import PeerBitfield, PeerJoined, PeerLeft, SwarmBrain, TorrentGeometry
from bip_select._availability import Availability

N = 4096  # big enough that a move of every piece shows in the counts


class CountingRandom(random.Random):
    """A Random that counts its draws: each move of a wanted piece into a bucket draws one
    (its random place there), so the draws count the index's per-piece work."""

    def __init__(self, seed: int) -> None:
        self.draws = 0
        super().__init__(seed)

    def random(self) -> float:
        self.draws += 1
        return super().random()

    def getrandbits(self, k: int, /) -> int:
        self.draws += 1
        return super().getrandbits(k)


def _half(num_pieces: int, seed: int) -> PieceSet:
    """About half the pieces, at random."""
    rng = random.Random(seed)
    return PieceSet(num_pieces, (p for p in range(num_pieces) if rng.random() < 0.5))


def _wanted_all(a: Availability, priority: int = 4) -> None:
    for piece in range(a.num_pieces):
        a.set_priority(piece, priority)


def _in_order(a: Availability, peer: Hashable | None = None) -> list[int]:
    """``iter_wanted(peer)``, checked to be in (priority, rarity) order."""
    wanted = list(a.iter_wanted(peer))
    keys = [(-a.priority(p), a.count(p)) for p in wanted]
    assert keys == sorted(keys)
    return wanted


def test_bitfields_and_departures_move_no_piece_one_by_one() -> None:
    rng = CountingRandom(1)
    a = Availability(N, rng)
    _wanted_all(a)
    _in_order(a)
    rng.draws = 0
    for i in range(4):
        a.add_peer(i)
        a.bitfield(i, _half(N, i))  # bitmap to bitmap
    a.bitfield(0, set(_half(N, 9)))  # piece by piece, replacing what peer 0 had
    a.have_none(1)
    a.remove_peer(2)
    a.add_peer("s")
    for piece in range(N):  # completes one have at a time: a seed, counted in the shift
        a.have("s", piece)
    assert a.is_seed("s")
    assert rng.draws == 0  # before: one draw (and one bucket move) per piece each time
    # The next read of the order rebuilds the index once (a shuffle of each bucket) ...
    wanted = _in_order(a, 0)
    assert set(wanted) == set(_half(N, 9))
    assert 0 < rng.draws <= 2 * N
    # ... and later reads find it built.
    rng.draws = 0
    assert _in_order(a, 0) == wanted
    assert sorted(_in_order(a)) == list(range(N))
    assert rng.draws == 0
    a.check()


def test_few_pieces_and_haves_stay_piece_by_piece() -> None:
    rng = CountingRandom(1)
    a = Availability(N, rng)
    _wanted_all(a)
    _in_order(a)
    rng.draws = 0
    a.add_peer("x")
    a.bitfield("x", range(10))  # a few pieces: moved one by one, no rebuild
    assert a.have("x", 100)
    assert a.dont_have("x", 0)
    a.remove_peer("x")
    assert rng.draws == 10 + 1 + 1 + 10
    # The index was never rebuilt (a rebuild draws for every bucket's shuffle).
    rng.draws = 0
    assert sorted(_in_order(a)) == list(range(N))
    assert rng.draws == 0
    a.check()


def test_haves_while_stale_are_counted_and_ordered_at_the_rebuild() -> None:
    rng = CountingRandom(2)
    a = Availability(N, rng)
    _wanted_all(a)
    a.add_peer("x")
    a.bitfield("x", _half(N, 1))
    rng.draws = 0
    a.add_peer("y")
    for piece in range(0, N, 7):  # haves on a stale index: counts only
        a.have("y", piece)
    a.dont_have("y", 7)
    a.set_priority(1, 0)
    a.set_priority(2, 7)
    assert rng.draws == 0
    wanted = _in_order(a)
    assert wanted[0] == 2
    assert 1 not in wanted
    assert len(wanted) == a.num_wanted == N - 1
    assert [a.wanted_key(p) for p in wanted] == sorted(a.wanted_key(p) for p in wanted)
    a.check()


def test_a_brain_pays_one_rebuild_for_many_bitfields() -> None:
    brain = SwarmBrain(TorrentGeometry(N, 16384), rng=random.Random(1))
    availability = brain.picker.availability
    rng = CountingRandom(1)
    availability._rng = rng  # count only the index's draws
    for i in range(5):
        brain.handle(PeerJoined(i), 0.0)
        brain.handle(PeerBitfield(i, _half(N, i)), 0.0)
    brain.handle(PeerLeft(0), 0.0)
    assert rng.draws == 0  # before: about N/2 moves for each bitfield and the departure
    _in_order(availability, 1)
    assert rng.draws <= 2 * N
    brain.check()


def test_rebuilt_ties_are_random() -> None:
    a = Availability(1000, random.Random(5))
    _wanted_all(a)
    a.add_peer("x")
    a.bitfield("x", range(1000))  # a seed: no reorder
    a.add_peer("y")
    a.bitfield("y", range(0, 1000, 2))  # even pieces one more: the odd ones first
    wanted = _in_order(a)
    odd, even = wanted[:500], wanted[500:]
    assert sorted(odd) == list(range(1, 1000, 2))
    assert sorted(even) == list(range(0, 1000, 2))
    assert odd != sorted(odd)
    assert even != sorted(even)


# ------------------------------------------------- the same answers as a plain model


class StaleIndexMachine(RuleBasedStateMachine):
    """Bulk and single changes in any mix, against a model of what each peer has: counts,
    priorities and the order of every walk (rarest first within a priority) agree, whether
    the index was rebuilt or kept up piece by piece. 80 pieces: a change of 40 or more is a
    bulk one."""

    N = 80

    def __init__(self) -> None:
        super().__init__()
        self.a = Availability(self.N, random.Random(0))
        self.model: dict[int, set[int]] = {}
        self.priorities = [0] * self.N
        self.next_peer = 0

    def _peer(self, data: st.DataObject) -> int:
        return data.draw(st.sampled_from(sorted(self.model)))

    @rule()
    def join(self) -> None:
        self.a.add_peer(self.next_peer)
        self.model[self.next_peer] = set()
        self.next_peer += 1

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        peer = self._peer(data)
        self.a.remove_peer(peer)
        del self.model[peer]

    @precondition(lambda self: self.model)
    @rule(
        data=st.data(),
        pieces=st.one_of(
            st.sets(st.integers(0, N - 1), max_size=8),
            st.sets(st.integers(0, N - 1), min_size=40),
        ),
        as_bitmap=st.booleans(),
    )
    def bitfield(self, data: st.DataObject, pieces: set[int], as_bitmap: bool) -> None:
        peer = self._peer(data)
        self.a.bitfield(peer, PieceSet(self.N, pieces) if as_bitmap else pieces)
        self.model[peer] = set(pieces)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), piece=st.integers(0, N - 1))
    def have(self, data: st.DataObject, piece: int) -> None:
        peer = self._peer(data)
        assert self.a.have(peer, piece) == (piece not in self.model[peer])
        self.model[peer].add(piece)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), piece=st.integers(0, N - 1))
    def dont_have(self, data: st.DataObject, piece: int) -> None:
        peer = self._peer(data)
        assert self.a.dont_have(peer, piece) == (piece in self.model[peer])
        self.model[peer].discard(piece)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), everything=st.booleans())
    def have_all_or_none(self, data: st.DataObject, everything: bool) -> None:
        peer = self._peer(data)
        if everything:
            self.a.have_all(peer)
            self.model[peer] = set(range(self.N))
        else:
            self.a.have_none(peer)
            self.model[peer] = set()

    @rule(pieces=st.sets(st.integers(0, N - 1), max_size=50), priority=st.integers(0, 7))
    def priority(self, pieces: set[int], priority: int) -> None:
        for piece in sorted(pieces):
            self.a.set_priority(piece, priority)
            self.priorities[piece] = priority

    @rule(data=st.data(), peer=st.booleans())
    def read_the_order(self, data: st.DataObject, peer: bool) -> None:
        """A walk (which rebuilds a stale index) between changes, part way or whole."""
        who = self._peer(data) if peer and self.model else None
        walk = self.a.iter_wanted(who)
        for _ in range(data.draw(st.integers(0, 5))):
            next(walk, None)

    def _groups(self, peer: int | None) -> list[tuple[tuple[int, int], set[int]]]:
        """The model's walk: (priority, count) keys in order, each with its pieces."""
        counts = [sum(p in had for had in self.model.values()) for p in range(self.N)]
        mine = range(self.N) if peer is None else self.model[peer]
        groups: dict[tuple[int, int], set[int]] = defaultdict(set)
        for piece in mine:
            if self.priorities[piece]:
                groups[(-self.priorities[piece], counts[piece])].add(piece)
        return sorted(groups.items())

    @invariant()
    def answers_match_the_model(self) -> None:
        self.a.check()
        for piece in range(self.N):
            expected = sum(piece in had for had in self.model.values())
            assert self.a.count(piece) == expected
            assert self.a.priority(piece) == self.priorities[piece]
        assert self.a.num_wanted == sum(1 for p in self.priorities if p)
        assert self.a.priority_levels() == sorted({p for p in self.priorities if p}, reverse=True)
        for peer in [None, *self.model]:
            wanted = list(self.a.iter_wanted(peer))
            groups: dict[tuple[int, int], set[int]] = defaultdict(set)
            keys: list[tuple[int, int]] = []
            for piece in wanted:
                key = (-self.priorities[piece], self.a.count(piece))
                if not keys or keys[-1] != key:
                    keys.append(key)
                groups[key].add(piece)
            assert len(wanted) == len(set(wanted))
            assert sorted(groups.items()) == self._groups(peer)
            assert keys == sorted(groups)  # each key's pieces together, keys in order
            assert sorted(wanted, key=self.a.wanted_key) == wanted
        self.a.check()


StaleIndexMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=25)
TestStaleIndexMachine = StaleIndexMachine.TestCase
