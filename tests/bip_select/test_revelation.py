"""Piece revelation: honest, lazy bitfield and super-seeding (BEP 16)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_select._actions import Action, SendBitfield, SendHave, SendHaveAll, SendHaveNone
from bip_select._errors import LocalProtocolError
from bip_select._revelation import (
    HonestRevelation,
    LazyBitfield,
    RevelationStrategy,
    SuperSeeding,
)


def haves(actions: list[Action]) -> list[tuple[object, int]]:
    return [(a.peer, a.piece) for a in actions if isinstance(a, SendHave)]


class TestHonest:
    def test_bitfield_of_what_we_have(self) -> None:
        reveal = HonestRevelation(10, have=[1, 5])
        assert reveal.peer_joined("a", 0.0) == [SendBitfield("a", frozenset({1, 5}))]
        assert reveal.peer_joined("b", 0.0, fast=True) == [SendBitfield("b", frozenset({1, 5}))]
        assert reveal.revealed("a") == {1, 5}

    def test_nothing_or_have_none_when_we_have_nothing(self) -> None:
        reveal = HonestRevelation(10)
        assert reveal.peer_joined("a", 0.0) == []
        assert reveal.peer_joined("b", 0.0, fast=True) == [SendHaveNone("b")]

    def test_have_all_only_to_fast_peers(self) -> None:
        reveal = HonestRevelation(3, have=range(3))
        assert reveal.peer_joined("a", 0.0, fast=True) == [SendHaveAll("a")]
        assert reveal.peer_joined("b", 0.0) == [SendBitfield("b", frozenset({0, 1, 2}))]

    def test_a_have_to_every_peer_for_each_new_piece(self) -> None:
        reveal = HonestRevelation(10)
        for peer in ("a", "b", "c"):
            reveal.peer_joined(peer, 0.0)
        reveal.peer_have("b", 4, 0.5)
        assert reveal.piece_added(4, 1.0) == [SendHave(p, 4) for p in ("a", "b", "c")]
        assert reveal.piece_added(4, 2.0) == []  # already announced
        assert reveal.have == {4}

    def test_without_redundant_haves_peers_that_have_it_are_skipped(self) -> None:
        reveal = HonestRevelation(10, redundant_haves=False)
        for peer in ("a", "b", "c"):
            reveal.peer_joined(peer, 0.0)
        reveal.peer_have("b", 4, 0.5)
        reveal.peer_have_all("c", 0.5)
        assert reveal.piece_added(4, 1.0) == [SendHave("a", 4)]

    def test_what_peers_have_is_not_kept_when_every_peer_gets_every_have(self) -> None:
        reveal = HonestRevelation(4)
        reveal.peer_joined("a", 0.0)
        assert reveal.peer_bitfield("a", [0, 1], 0.0) == []
        assert reveal.peer_have_all("a", 0.0) == []
        assert reveal.peer_dont_have("a", 0, 0.0) == []
        assert reveal.piece_added(0, 1.0) == [SendHave("a", 0)]

    def test_peers_that_left_are_not_told(self) -> None:
        reveal = HonestRevelation(10)
        reveal.peer_joined("a", 0.0)
        reveal.peer_joined("b", 0.0)
        reveal.peer_left("a")
        assert reveal.piece_added(0, 1.0) == [SendHave("b", 0)]
        assert "a" not in reveal

    def test_peer_nonsense_is_ignored(self) -> None:
        reveal = HonestRevelation(4, redundant_haves=False)
        reveal.peer_joined("a", 0.0)
        assert reveal.peer_have_none("a", 0.0) == []
        assert reveal.peer_have("a", 4, 0.0) == []
        assert reveal.peer_have("a", -1, 0.0) == []
        assert reveal.peer_bitfield("a", [0, 9, -3], 0.0) == []
        assert reveal.peer_dont_have("a", 7, 0.0) == []
        assert reveal.piece_added(1, 0.0) == [SendHave("a", 1)]
        assert reveal.piece_added(0, 0.0) == []  # its bitfield had 0

    def test_late_bitfield_and_have_none_replace_what_the_peer_had(self) -> None:
        reveal = HonestRevelation(4, redundant_haves=False)
        reveal.peer_joined("a", 0.0)
        reveal.peer_bitfield("a", [0, 1], 0.0)
        reveal.peer_have("a", 2, 0.0)
        reveal.peer_bitfield("a", [1, 3], 0.0)  # 0 and 2 are gone
        assert reveal.piece_added(0, 0.0) == [SendHave("a", 0)]
        assert reveal.piece_added(1, 0.0) == []
        reveal.peer_have_all("a", 0.0)
        reveal.peer_bitfield("a", [3], 0.0)  # a seed no more
        assert reveal.piece_added(2, 0.0) == [SendHave("a", 2)]
        reveal.peer_have_none("a", 0.0)
        assert reveal.piece_added(3, 0.0) == [SendHave("a", 3)]

    def test_dont_have_after_have_all(self) -> None:
        reveal = HonestRevelation(4, redundant_haves=False)
        reveal.peer_joined("a", 0.0)
        reveal.peer_have_all("a", 0.0)
        assert reveal.peer_have_all("a", 0.0) == []
        reveal.peer_dont_have("a", 2, 0.0)
        assert reveal.piece_added(2, 1.0) == [SendHave("a", 2)]
        assert reveal.piece_added(3, 1.0) == []

    def test_client_mistakes_raise(self) -> None:
        reveal = HonestRevelation(4)
        with pytest.raises(LocalProtocolError, match="never joined"):
            reveal.peer_have("x", 0, 0.0)
        with pytest.raises(LocalProtocolError):
            reveal.peer_left("x")
        with pytest.raises(LocalProtocolError):
            reveal.revealed("x")
        with pytest.raises(LocalProtocolError, match="hashable"):
            reveal.peer_joined({}, 0.0)  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError, match="never joined"):
            reveal.peer_have_none({}, 0.0)  # type: ignore[arg-type]
        reveal.peer_joined("x", 0.0)
        with pytest.raises(LocalProtocolError, match="already joined"):
            reveal.peer_joined("x", 0.0)
        for piece in (4, -1, True, "1"):
            with pytest.raises(LocalProtocolError, match="outside"):
                reveal.piece_added(piece, 0.0)  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError):
            HonestRevelation(4, have=[4])
        with pytest.raises(LocalProtocolError):
            HonestRevelation(-1)
        with pytest.raises(LocalProtocolError):
            HonestRevelation(2**32 + 1)
        with pytest.raises(LocalProtocolError):
            HonestRevelation(1.5)  # type: ignore[arg-type]

    def test_nothing_is_ever_scheduled(self) -> None:
        reveal = HonestRevelation(4, have=[0])
        reveal.peer_joined("a", 0.0)
        assert reveal.next_deadline() is None
        assert reveal.tick(100.0) == []


class TestLazyBitfield:
    def test_leaves_some_out_and_reveals_them_shortly_after(self) -> None:
        reveal = LazyBitfield(200, have=range(200), rng=random.Random(3), max_delay=2.0)
        (first,) = reveal.peer_joined("a", 10.0, fast=True)
        assert isinstance(first, SendBitfield)
        withheld = set(range(200)) - first.pieces
        assert len(withheld) == 20  # num_pieces // 10, under the cap of 50
        deadline = reveal.next_deadline()
        assert deadline is not None
        assert 10.0 <= deadline <= 12.0
        assert reveal.tick(9.0) == []
        later = reveal.tick(12.0)
        assert {piece for _, piece in haves(later)} == withheld
        assert reveal.revealed("a") == set(range(200))
        assert reveal.next_deadline() is None

    def test_haves_come_in_time_order(self) -> None:
        reveal = LazyBitfield(100, have=range(100), rng=random.Random(4))
        reveal.peer_joined("a", 0.0)
        times: list[float] = []
        while (deadline := reveal.next_deadline()) is not None:
            assert reveal.tick(deadline)
            times.append(deadline)
        assert times == sorted(times)
        assert len(times) <= 10
        assert reveal.revealed("a") == set(range(100))

    def test_the_cap_on_withheld_pieces(self) -> None:
        reveal = LazyBitfield(2000, have=range(2000), rng=random.Random(5), max_withheld=50)
        (first,) = reveal.peer_joined("a", 0.0)
        assert isinstance(first, SendBitfield)
        assert len(first.pieces) == 1950

    def test_small_torrents_still_withhold_one(self) -> None:
        reveal = LazyBitfield(3, have=[0, 1], rng=random.Random(6))
        (first,) = reveal.peer_joined("a", 0.0)
        assert isinstance(first, SendBitfield)
        assert len(first.pieces) == 1

    def test_a_single_piece_withheld_leaves_an_empty_bitfield(self) -> None:
        reveal = LazyBitfield(3, have=[2], rng=random.Random(6), max_delay=0.0)
        assert reveal.peer_joined("a", 0.0, fast=True) == [SendHaveNone("a"), SendHave("a", 2)]
        assert reveal.peer_joined("b", 0.0) == [SendHave("b", 2)]

    def test_nothing_to_hide(self) -> None:
        reveal = LazyBitfield(8, rng=random.Random(6))
        assert reveal.peer_joined("a", 0.0, fast=True) == [SendHaveNone("a")]
        assert reveal.next_deadline() is None
        assert reveal.piece_added(3, 1.0) == [SendHave("a", 3)]

    def test_deterministic_for_a_seed(self) -> None:
        def run(seed: int) -> list[Action]:
            reveal = LazyBitfield(300, have=range(0, 300, 2), rng=random.Random(seed))
            actions = reveal.peer_joined("a", 0.0)
            actions += reveal.peer_joined("b", 0.0)
            return actions + reveal.tick(5.0)

        assert run(1) == run(1)
        assert run(1) != run(2)

    def test_pending_haves_of_a_peer_that_left_are_dropped(self) -> None:
        reveal = LazyBitfield(100, have=range(100), rng=random.Random(8))
        reveal.peer_joined("x", 0.0)
        reveal.peer_left("x")
        assert reveal.next_deadline() is None  # x's entries dropped
        reveal.peer_joined("a", 0.0)
        reveal.peer_joined("b", 0.0)
        reveal.peer_left("b")
        assert len(haves(reveal.tick(10.0))) == 10  # a's, not b's
        reveal.peer_left("a")
        assert reveal.next_deadline() is None
        reveal.peer_joined("a", 1.0)  # the same key again: only its new withheld pieces
        assert len(haves(reveal.tick(10.0))) == 10

    def test_new_pieces_are_announced_at_once(self) -> None:
        reveal = LazyBitfield(100, have=range(50), rng=random.Random(9))
        reveal.peer_joined("a", 0.0)
        assert reveal.piece_added(70, 0.1) == [SendHave("a", 70)]

    def test_bad_options(self) -> None:
        with pytest.raises(LocalProtocolError):
            LazyBitfield(10, rng=random.Random(0), max_withheld=0)
        with pytest.raises(LocalProtocolError):
            LazyBitfield(10, rng=random.Random(0), max_delay=-1.0)
        with pytest.raises(LocalProtocolError):
            LazyBitfield(10, rng=random.Random(0), max_delay=float("inf"))


class TestPieceLost:
    def test_honest_announces_a_lost_piece_again_once_back(self) -> None:
        reveal = HonestRevelation(4, have=range(4))
        reveal.peer_joined("a", 0.0)
        assert reveal.piece_lost(2, 1.0) == []
        assert reveal.piece_lost(2, 1.0) == []  # already gone
        assert reveal.have == {0, 1, 3}
        assert reveal.peer_joined("b", 1.0) == [SendBitfield("b", frozenset({0, 1, 3}))]
        assert reveal.piece_added(2, 2.0) == [SendHave("a", 2), SendHave("b", 2)]
        with pytest.raises(LocalProtocolError):
            reveal.piece_lost(4, 0.0)

    def test_super_seeding_never_reveals_a_lost_piece(self) -> None:
        reveal = SuperSeeding(4, have=range(4), rng=random.Random(1))
        (to_a,) = haves(reveal.peer_joined("a", 0.0))
        for piece in range(4):
            if piece != to_a[1]:
                assert reveal.piece_lost(piece, 1.0) == []
        assert haves(reveal.peer_joined("b", 1.0)) == []  # nothing fresh left: it waits
        back = next(p for p in range(4) if p != to_a[1])
        assert haves(reveal.piece_added(back, 2.0)) == [("b", back)]


class TestSuperSeeding:
    def test_poses_as_empty_and_reveals_one_piece(self) -> None:
        reveal = SuperSeeding(10, have=range(10), rng=random.Random(1))
        first = reveal.peer_joined("a", 0.0, fast=True)
        assert first[0] == SendHaveNone("a")
        assert len(first) == 2
        assert isinstance(first[1], SendHave)
        assert reveal.assigned("a") == first[1].piece
        second = reveal.peer_joined("b", 0.0)
        assert len(second) == 1
        assert isinstance(second[0], SendHave)
        assert second[0].piece != first[1].piece  # not the one already on its way

    def test_next_piece_only_after_the_first_showed_up_elsewhere(self) -> None:
        reveal = SuperSeeding(10, have=range(10), rng=random.Random(2))
        (to_a,) = haves(reveal.peer_joined("a", 0.0))
        (to_b,) = haves(reveal.peer_joined("b", 0.0))
        piece_a, piece_b = to_a[1], to_b[1]
        # a downloads its piece from us: that alone earns it nothing.
        assert reveal.peer_have("a", piece_a, 1.0) == []
        assert reveal.revealed("a") == {piece_a}
        # b passes its own piece on? no: b gets a's piece from a.
        actions = reveal.peer_have("b", piece_a, 2.0)
        assert [peer for peer, _ in haves(actions)] == ["a"]
        (_, next_a) = haves(actions)[0]
        assert next_a not in {piece_a, piece_b}
        assert reveal.assigned("a") == next_a
        assert reveal.assigned("b") == piece_b  # b's own piece has not spread yet

    def test_loose_mode_moves_on_when_the_peer_itself_has_it(self) -> None:
        reveal = SuperSeeding(10, have=range(10), rng=random.Random(2), strict=False)
        ((_, piece),) = haves(reveal.peer_joined("a", 0.0))
        actions = reveal.peer_have("a", piece, 1.0)
        assert len(haves(actions)) == 1
        assert haves(actions)[0][1] != piece

    def test_stall_timeout_frees_a_lone_leecher(self) -> None:
        reveal = SuperSeeding(4, have=range(4), rng=random.Random(2), stall_timeout=30.0)
        ((_, piece),) = haves(reveal.peer_joined("a", 0.0))
        assert reveal.next_deadline() is None  # it has not got the piece yet
        assert reveal.peer_have("a", piece, 5.0) == []
        assert reveal.next_deadline() == 35.0
        assert reveal.tick(34.0) == []
        ((_, following),) = haves(reveal.tick(35.0))
        assert following != piece
        assert reveal.next_deadline() is None

    def test_no_stall_timeout_by_default(self) -> None:
        reveal = SuperSeeding(4, have=range(4), rng=random.Random(2))
        ((_, piece),) = haves(reveal.peer_joined("a", 0.0))
        reveal.peer_have("a", piece, 5.0)
        assert reveal.next_deadline() is None
        assert reveal.tick(10**6) == []
        with pytest.raises(LocalProtocolError):
            SuperSeeding(4, rng=random.Random(0), stall_timeout=0.0)

    def test_prefers_the_rarest_piece(self) -> None:
        reveal = SuperSeeding(6, have=range(6), rng=random.Random(3))
        for peer, lacks in (("s1", (3, 4, 5)), ("s2", (4, 5)), ("s3", (5,))):
            # Seeds told every piece (adopted from an honest strategy): their copies count,
            # and they are never assigned a piece, even once they lack some (a seed that
            # joined would be revealed the pieces it loses, one at a time).
            reveal.adopt(peer, 0.0, seed=True, revealed=range(6))
            for piece in lacks:
                reveal.peer_dont_have(peer, piece, 0.0)
        assert reveal.assigned("s1") is None
        # copies: 0, 1, 2 three each; 3 two; 4 one; 5 none
        ((_, piece),) = haves(reveal.peer_joined("z", 0.0))
        assert piece == 5
        # Every piece but 5 is out; 5 is on its way to z: revealing it (or anything) to w now
        # would only make us upload something twice before the first copy is complete.
        assert haves(reveal.peer_joined("w", 0.0)) == []
        assert reveal.assigned("w") is None
        # z gets 5 and has it: the first copy is complete, w gets the rarest piece (4: one
        # copy; 5 has one and is still counted on its way to... z, until seen elsewhere).
        assert haves(reveal.peer_have("z", 5, 1.0)) == [("w", 4)]

    def test_one_freed_piece_serves_one_waiting_peer(self) -> None:
        reveal = SuperSeeding(1, have=[0], rng=random.Random(5))
        assert haves(reveal.peer_joined("a", 0.0)) == [("a", 0)]
        assert haves(reveal.peer_joined("b", 0.0)) == []
        assert haves(reveal.peer_joined("c", 0.0)) == []
        reveal.peer_left("a")
        assert haves(reveal.tick(1.0)) == [("b", 0)]  # the first to wait; c keeps waiting
        assert reveal.assigned("c") is None

    def test_a_waiting_peer_that_loses_a_piece_is_revealed_it(self) -> None:
        reveal = SuperSeeding(2, have=range(2), rng=random.Random(5))
        ((_, first),) = haves(reveal.peer_joined("a", 0.0))
        assert haves(reveal.peer_bitfield("a", [0, 1], 0.0)) == []  # had both: nothing to offer
        assert reveal.assigned("a") is None
        assert haves(reveal.peer_dont_have("a", 1 - first, 1.0)) == [("a", 1 - first)]
        assert reveal.peer_dont_have("a", first, 1.0) == []  # it was told of that one already

    def test_a_waiting_peer_takes_a_piece_freed_by_a_peer_leaving(self) -> None:
        reveal = SuperSeeding(2, have=range(2), rng=random.Random(5))
        ((_, first),) = haves(reveal.peer_joined("a", 0.0))
        ((_, second),) = haves(reveal.peer_joined("b", 0.0))
        assert {first, second} == {0, 1}
        assert haves(reveal.peer_joined("c", 0.0)) == []  # both pieces on their way
        reveal.peer_left("a")  # a's piece is free again; c gets it on the next event
        assert haves(reveal.tick(1.0)) == [("c", first)]
        assert haves(reveal.peer_joined("d", 1.0)) == []
        reveal.peer_left("b")
        assert haves(reveal.peer_have_none("c", 1.5)) == [("d", second)]
        assert reveal.tick(2.0) == []

    def test_a_bitfield_with_the_revealed_piece_gets_another_at_once(self) -> None:
        reveal = SuperSeeding(4, have=range(4), rng=random.Random(4))
        ((_, piece),) = haves(reveal.peer_joined("a", 0.0))
        actions = reveal.peer_bitfield("a", [piece], 0.1)
        ((_, other),) = haves(actions)
        assert other != piece
        assert reveal.assigned("a") == other

    def test_seeds_get_nothing(self) -> None:
        reveal = SuperSeeding(4, have=range(4), rng=random.Random(5))
        assert len(haves(reveal.peer_joined("a", 0.0))) == 1
        reveal.peer_joined("s", 0.0)
        actions = reveal.peer_have_all("s", 0.1)
        # the seed gets no reveal; a's piece is now seen elsewhere, so a gets its next one
        assert [peer for peer, _ in haves(actions)] == ["a"]
        assert reveal.assigned("s") is None

    def test_never_reveals_a_piece_the_peer_has(self) -> None:
        reveal = SuperSeeding(3, have=range(3), rng=random.Random(6))
        reveal.peer_joined("other", 0.0)
        reveal.peer_bitfield("other", [0, 1, 2], 0.0)
        reveal.peer_joined("a", 0.0)
        reveal.peer_bitfield("a", [0, 1], 0.0)
        assert reveal.assigned("a") == 2
        reveal.peer_have("a", 2, 0.0)
        assert reveal.assigned("a") == 2  # nothing left to reveal: it keeps waiting
        reveal.peer_have("other", 2, 0.0)  # no-op: other had it
        assert reveal.revealed("a") <= {0, 1, 2}

    def test_only_pieces_we_have_and_starving_peers_fed_later(self) -> None:
        reveal = SuperSeeding(4, have=[], rng=random.Random(7))
        assert reveal.peer_joined("a", 0.0, fast=True) == [SendHaveNone("a")]
        assert reveal.assigned("a") is None
        assert reveal.piece_added(2, 1.0) == [SendHave("a", 2)]
        assert reveal.piece_added(2, 1.0) == []
        assert reveal.piece_added(3, 1.0) == []  # a is busy with 2

    @pytest.mark.parametrize("seed", range(10))
    def test_copies_seen_before_we_had_the_piece_count(self, seed: int) -> None:
        reveal = SuperSeeding(3, have=[], rng=random.Random(seed))
        reveal.peer_joined("s", 0.0)
        reveal.peer_have("s", 0, 0.0)  # a copy of a piece we lack yet
        for piece in range(3):
            reveal.piece_added(piece, 1.0)
        on_its_way = reveal.assigned("s")
        assert on_its_way in {1, 2}  # s had 0
        ((_, piece),) = haves(reveal.peer_joined("a", 2.0))
        assert piece == 3 - on_its_way  # 0 has a copy, the other is on its way: score 0 wins

    def test_leaving_frees_the_piece_on_its_way(self) -> None:
        reveal = SuperSeeding(2, have=range(2), rng=random.Random(8))
        ((_, piece),) = haves(reveal.peer_joined("a", 0.0))
        reveal.peer_left("a")
        ((_, again),) = haves(reveal.peer_joined("b", 0.0))
        assert again == piece or again == 1 - piece  # both are at zero copies again
        reveal.peer_joined("s", 0.0)
        reveal.peer_have_all("s", 0.0)
        reveal.peer_dont_have("s", 0, 0.0)
        reveal.peer_left("s")
        reveal.peer_left("b")
        reveal.peer_joined("t", 0.0)
        reveal.peer_have_all("t", 0.0)
        reveal.peer_left("t")  # a seed leaving takes its copy of everything with it
        ((_, piece),) = haves(reveal.peer_joined("c", 0.0))
        assert reveal.was_revealed("c", piece)
        assert not reveal.was_revealed("c", 1 - piece)

    def test_every_piece_leaves_us_once_before_any_leaves_twice(self) -> None:
        pieces, peers = 40, 8
        rng = random.Random(11)
        reveal = SuperSeeding(pieces, have=range(pieces), rng=random.Random(12))
        holdings: dict[int, set[int]] = {p: set() for p in range(peers)}
        told: dict[int, set[int]] = {p: set() for p in range(peers)}  # what we revealed
        uploads: list[int] = []

        def record(actions: list[Action]) -> None:
            for peer, piece in haves(actions):
                assert isinstance(peer, int)
                told[peer].add(piece)

        for peer in range(peers):
            record(reveal.peer_joined(peer, 0.0))
        for step in range(1, 200):
            if all(len(h) == pieces for h in holdings.values()):
                break
            for peer in range(peers):
                # From us: a piece we revealed that it still lacks, one per step.
                wanted = sorted(told[peer] - holdings[peer])
                if wanted:
                    holdings[peer].add(wanted[0])
                    uploads.append(wanted[0])
                    record(reveal.peer_have(peer, wanted[0], float(step)))
                # From the others: one piece some other peer has.
                offers = set().union(*(holdings[o] for o in range(peers) if o != peer))
                offers -= holdings[peer]
                if offers:
                    piece = rng.choice(sorted(offers))
                    holdings[peer].add(piece)
                    record(reveal.peer_have(peer, piece, float(step)))
        assert all(len(h) == pieces for h in holdings.values())
        assert sorted(uploads[:pieces]) == list(range(pieces))  # no piece twice before all once
        for peer in range(peers):  # told only one piece at a time, and only what it lacked
            assert len(told[peer]) <= len(uploads)


# ---------------------------------------------------------------- properties

_events = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "join",
                "join_fast",
                "left",
                "bitfield",
                "have",
                "have_all",
                "have_none",
                "dont_have",
                "added",
                "tick",
            ]
        ),
        st.integers(0, 5),
        st.integers(-1, 17),
        st.frozensets(st.integers(-2, 18), max_size=8),
        st.floats(0.0, 3.0),
    ),
    max_size=80,
)


def _make(kind: str, num_pieces: int, have: frozenset[int], seed: int) -> RevelationStrategy:
    if kind == "honest":
        return HonestRevelation(num_pieces, have, redundant_haves=seed % 2 == 0)
    if kind == "lazy":
        return LazyBitfield(num_pieces, have, rng=random.Random(seed), max_withheld=1 + seed % 5)
    return SuperSeeding(
        num_pieces,
        have,
        rng=random.Random(seed),
        strict=seed % 3 != 0,
        stall_timeout=None if seed % 2 else 2.0,
    )


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["honest", "lazy", "super"]),
    st.integers(1, 16).flatmap(
        lambda n: st.tuples(st.just(n), st.frozensets(st.integers(0, n - 1)))
    ),
    st.integers(0, 1000),
    _events,
)
def test_never_claims_a_piece_we_do_not_have(
    kind: str,
    torrent: tuple[int, frozenset[int]],
    seed: int,
    events: list[tuple[str, int, int, frozenset[int], float]],
) -> None:
    num_pieces, have = torrent
    reveal = _make(kind, num_pieces, have, seed)
    ours = set(have)
    known: dict[int, set[int]] = {}  # what each peer told us it has
    now = 0.0
    for name, peer, piece, pieces, step in events:
        now += step
        actions: list[Action] = []
        joined = peer in reveal
        if name in {"join", "join_fast"}:
            if joined:
                continue
            known[peer] = set()
            actions = reveal.peer_joined(peer, now, fast=name == "join_fast")
        elif name == "added":
            if 0 <= piece < num_pieces:
                actions = reveal.piece_added(piece, now)
                ours.add(piece)
        elif name == "tick":
            actions = reveal.tick(now)
        elif not joined:
            continue
        elif name == "left":
            reveal.peer_left(peer)
            del known[peer]
        elif name == "bitfield":
            actions = reveal.peer_bitfield(peer, pieces, now)
            known[peer] = {p for p in pieces if 0 <= p < num_pieces}  # replaces, even late
        elif name == "have":
            actions = reveal.peer_have(peer, piece, now)
            if 0 <= piece < num_pieces:
                known[peer].add(piece)
        elif name == "have_all":
            actions = reveal.peer_have_all(peer, now)
            known[peer] = set(range(num_pieces))
        elif name == "have_none":
            actions = reveal.peer_have_none(peer, now)
            known[peer] = set()
        else:
            actions = reveal.peer_dont_have(peer, piece, now)
            known[peer].discard(piece)
        for action in actions:
            assert action.peer in reveal
            if isinstance(action, SendHave):
                assert action.piece in ours
                if kind == "super":
                    assert action.piece not in known[action.peer]  # type: ignore[index]
            elif isinstance(action, SendBitfield):
                assert action.pieces <= ours
                assert action.pieces
            elif isinstance(action, SendHaveAll):
                assert len(ours) == num_pieces
        for key in known:
            assert reveal.revealed(key) <= ours
            if isinstance(reveal, SuperSeeding):
                assigned = reveal.assigned(key)
                # one piece at a time: everything revealed but the current piece is known to
                # be held by the peer or to have been seen elsewhere
                assert assigned is None or assigned in reveal.revealed(key)
        assert reveal.have == ours
    if isinstance(reveal, LazyBitfield):  # eventually everything is revealed
        reveal.tick(now + 10.0)
        for key in known:
            assert reveal.revealed(key) == ours
