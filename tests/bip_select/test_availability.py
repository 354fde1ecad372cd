"""Availability: counts from bitfields, haves, seeds; the wanted index in rarest order."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bip_peer import PieceSet
from bip_select._availability import Availability
from bip_select._errors import LocalProtocolError


def _wanted_all(a: Availability, priority: int = 4) -> None:
    for piece in range(a.num_pieces):
        a.set_priority(piece, priority)


def test_counts_from_every_kind_of_announcement() -> None:
    a = Availability(5, random.Random(0))
    for peer in "abc":
        a.add_peer(peer)
    a.bitfield("a", [0, 1, 99, -1])  # out-of-range indices are ignored
    assert a.have("b", 1)
    assert not a.have("b", 1)  # not news
    assert not a.have("b", 5)
    a.have_all("c")
    assert [a.count(p) for p in range(5)] == [2, 3, 1, 1, 1]
    assert a.num_seeds == 1
    assert a.is_seed("c")
    assert a.dont_have("a", 0)
    assert not a.dont_have("a", 0)
    assert [a.count(p) for p in range(5)] == [1, 3, 1, 1, 1]
    a.remove_peer("b")
    assert [a.count(p) for p in range(5)] == [1, 2, 1, 1, 1]
    a.have_none("c")
    assert a.num_seeds == 0
    assert [a.count(p) for p in range(5)] == [0, 1, 0, 0, 0]
    a.check()


def test_bitfield_from_a_piece_set() -> None:
    a = Availability(11, random.Random(0))
    a.add_peer("x")
    a.bitfield("x", PieceSet(11, [0, 7, 8, 10]))
    assert list(a.peer_pieces("x")) == [0, 7, 8, 10]
    assert [a.count(p) for p in range(11)] == [1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1]
    a.bitfield("x", PieceSet.full(11))
    assert a.is_seed("x")
    a.add_peer("y")
    a.bitfield("y", PieceSet(12, [3, 11]))  # another size: piece by piece, 11 ignored
    assert list(a.peer_pieces("y")) == [3]
    a.check()


def test_full_bitfield_and_last_have_make_a_seed() -> None:
    a = Availability(3, random.Random(0))
    a.add_peer("x")
    a.bitfield("x", {0, 1, 2})
    assert a.is_seed("x")
    assert a.num_seeds == 1
    a.add_peer("y")
    a.have("y", 0)
    a.have("y", 1)
    assert not a.is_seed("y")
    a.have("y", 2)
    assert a.is_seed("y")
    assert [a.count(p) for p in range(3)] == [2, 2, 2]
    a.check()


def test_seed_that_loses_a_piece() -> None:
    a = Availability(3, random.Random(0))
    a.add_peer("s")
    a.have_all("s")
    a.have_all("s")  # idempotent
    assert a.dont_have("s", 1)
    assert not a.is_seed("s")
    assert [a.count(p) for p in range(3)] == [1, 0, 1]
    assert list(a.peer_pieces("s")) == [0, 2]
    a.check()


def test_unknown_peer_and_bad_arguments() -> None:
    a = Availability(2, random.Random(0))
    with pytest.raises(LocalProtocolError):
        a.have("ghost", 0)
    a.add_peer("x")
    with pytest.raises(LocalProtocolError):
        a.add_peer("x")
    with pytest.raises(LocalProtocolError):
        a.count(2)
    with pytest.raises(LocalProtocolError):
        a.set_priority(0, 8)
    with pytest.raises(LocalProtocolError):
        a.set_priority(2, 1)
    with pytest.raises(LocalProtocolError):
        Availability(0, random.Random(0))
    assert not a.peer_has("x", 7)


def test_rarest_first_then_priority_before_rarity() -> None:
    a = Availability(4, random.Random(0))
    for peer in "abcd":
        a.add_peer(peer)
    a.bitfield("a", {0, 1, 2, 3})  # a seed: counted apart
    a.bitfield("b", {0, 1, 2})
    a.bitfield("c", {0, 1})
    a.bitfield("d", {0})
    _wanted_all(a)
    # counts: 0 -> 4, 1 -> 3, 2 -> 2, 3 -> 1
    assert list(a.iter_wanted("a")) == [3, 2, 1, 0]
    assert list(a.iter_wanted("b")) == [2, 1, 0]
    assert list(a.iter_wanted(None)) == [3, 2, 1, 0]
    a.set_priority(0, 7)  # the most common piece, but the most urgent
    assert list(a.iter_wanted("a")) == [0, 3, 2, 1]
    a.set_priority(3, 0)  # not wanted at all
    assert list(a.iter_wanted("a")) == [0, 2, 1]
    assert a.num_wanted == 3
    a.check()


def test_ties_are_broken_at_random_and_reproducibly() -> None:
    def order(seed: int) -> list[int]:
        a = Availability(50, random.Random(seed))
        a.add_peer("s")
        a.have_all("s")
        _wanted_all(a)
        return list(a.iter_wanted("s"))

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert sorted(order(1)) == list(range(50))
    assert order(1) != list(range(50))


def test_small_peer_uses_its_own_pieces() -> None:
    # A peer with few pieces of a big torrent: the answer must not depend on the path.
    a = Availability(10_000, random.Random(3))
    a.add_peer("big")
    a.bitfield("big", range(0, 10_000, 2))
    a.add_peer("small")
    a.bitfield("small", {4, 5, 6})
    _wanted_all(a)
    assert list(a.iter_wanted("small")) == [5, *sorted([4, 6], key=lambda p: a._pos[p])]
    assert next(a.iter_wanted("big")) % 2 == 0


def test_min_count_and_peer_queries() -> None:
    a = Availability(3, random.Random(0))
    a.add_peer("x")
    a.bitfield("x", {1})
    assert a.min_count() == 0
    assert a.min_count([1]) == 1
    assert a.peer_piece_count("x") == 1
    assert a.has_peer("x")
    assert a.num_peers == 1


class AvailabilityMachine(RuleBasedStateMachine):
    """Random peer announcements: counts always match a model, never negative."""

    N = 12

    def __init__(self) -> None:
        super().__init__()
        self.a = Availability(self.N, random.Random(0))
        self.model: dict[int, set[int]] = {}
        self.next_peer = 0

    @rule()
    def join(self) -> None:
        self.a.add_peer(self.next_peer)
        self.model[self.next_peer] = set()
        self.next_peer += 1

    def _peer(self, data: st.DataObject) -> int:
        return data.draw(st.sampled_from(sorted(self.model)))

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        peer = self._peer(data)
        self.a.remove_peer(peer)
        del self.model[peer]

    @precondition(lambda self: self.model)
    @rule(data=st.data(), pieces=st.sets(st.integers(-2, N + 2)))
    def bitfield(self, data: st.DataObject, pieces: set[int]) -> None:
        peer = self._peer(data)
        self.a.bitfield(peer, pieces)
        self.model[peer] = {p for p in pieces if 0 <= p < self.N}

    @precondition(lambda self: self.model)
    @rule(data=st.data(), piece=st.integers(-1, N))
    def have(self, data: st.DataObject, piece: int) -> None:
        peer = self._peer(data)
        self.a.have(peer, piece)
        if 0 <= piece < self.N:
            self.model[peer].add(piece)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), piece=st.integers(-1, N))
    def dont_have(self, data: st.DataObject, piece: int) -> None:
        peer = self._peer(data)
        self.a.dont_have(peer, piece)
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

    @rule(piece=st.integers(0, N - 1), priority=st.integers(0, 7))
    def priority(self, piece: int, priority: int) -> None:
        self.a.set_priority(piece, priority)

    @invariant()
    def counts_match(self) -> None:
        self.a.check()
        for piece in range(self.N):
            expected = sum(piece in pieces for pieces in self.model.values())
            assert self.a.count(piece) == expected >= 0
        for peer, pieces in self.model.items():
            wanted = list(self.a.iter_wanted(peer))
            assert set(wanted) == {p for p in pieces if self.a.priority(p)}
            keys = [(-self.a.priority(p), self.a.count(p)) for p in wanted]
            assert keys == sorted(keys)


AvailabilityMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40)
TestAvailabilityMachine = AvailabilityMachine.TestCase


@given(st.lists(st.sets(st.integers(0, 63)), max_size=8))
def test_walk_and_sort_paths_agree(bitfields: list[set[int]]) -> None:
    a = Availability(64, random.Random(1))
    for i, pieces in enumerate(bitfields):
        a.add_peer(i)
        a.bitfield(i, pieces)
    for piece in range(64):
        a.set_priority(piece, 1 + piece % 3)
    for i in range(len(bitfields)):
        bits = a._peers[i][0]
        walked = list(a._walk(bits)) if bits is not None else list(a._walk(None))
        assert walked == list(a.iter_wanted(i))
