"""Switching the revelation strategy of a running brain (libtorrent's super-seeding flag at run
time), peers handed over with what they were told, and the requests a super-seed refuses."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_select._actions import (
    Action,
    SendBitfield,
    SendHave,
    SendHaveAll,
    SendHaveNone,
)
from bip_select._brain import SwarmBrain
from bip_select._errors import LocalProtocolError
from bip_select._geometry import TorrentGeometry
from bip_select._inputs import (
    PeerBitfield,
    PeerHave,
    PeerHaveAll,
    PeerJoined,
    PeerLeft,
    PieceLost,
    PieceVerified,
)
from bip_select._revelation import (
    CATCH_UP_BATCH,
    CATCH_UP_INTERVAL,
    HonestRevelation,
    LazyBitfield,
    RevelationStrategy,
    SuperSeeding,
)

GEOMETRY = TorrentGeometry(8, 32768)
ALL = frozenset(range(8))
FIRST_MESSAGES = (SendBitfield, SendHaveAll, SendHaveNone)


def super_seed(num_pieces: int = 8, *, strict: bool = True, seed: int = 0) -> SuperSeeding:
    return SuperSeeding(num_pieces, range(num_pieces), rng=random.Random(seed), strict=strict)


def seed_brain(revelation: RevelationStrategy | None = None) -> SwarmBrain:
    return SwarmBrain(GEOMETRY, rng=random.Random(1), have=ALL, revelation=revelation)


def haves(actions: Iterable[Action]) -> dict[object, set[int]]:
    """The pieces each peer is sent a have for."""
    told: dict[object, set[int]] = {}
    for action in actions:
        if isinstance(action, SendHave):
            told.setdefault(action.peer, set()).add(action.piece)
    return told


def only_haves(actions: Sequence[Action]) -> bool:
    return all(isinstance(action, SendHave) for action in actions)


class TestSuperToHonest:
    def test_every_peer_is_told_the_rest_by_haves(self) -> None:
        b = seed_brain(super_seed())
        b.handle(PeerJoined("fast", fast=True), 0.0)
        b.handle(PeerJoined("slow"), 0.0)
        told = {peer: b.revelation.revealed(peer) for peer in ("fast", "slow")}
        assert all(len(pieces) == 1 for pieces in told.values())
        actions = b.set_revelation(HonestRevelation(8, ALL), 1.0)
        assert only_haves(actions)  # never a bitfield, have all or have none mid-stream
        assert haves(actions) == {peer: set(ALL - told[peer]) for peer in told}
        for peer in told:
            assert b.revelation.revealed(peer) == ALL
            assert all(b.may_upload(peer, piece) for piece in ALL)
        assert b.revelation.next_deadline() is None  # nothing left owed
        # Peers joining now are served honestly.
        assert b.handle(PeerJoined("new", fast=True), 1.0) == [SendHaveAll("new")]
        b.check()

    def test_a_seed_and_what_a_peer_has_are_skipped_without_redundant_haves(self) -> None:
        b = seed_brain(super_seed())
        b.handle(PeerJoined("a"), 0.0)
        b.handle(PeerBitfield("a", {5, 6}), 0.0)
        b.handle(PeerJoined("s"), 0.0)
        b.handle(PeerHaveAll("s"), 0.0)
        told = b.revelation.revealed("a")
        actions = b.set_revelation(HonestRevelation(8, ALL, redundant_haves=False), 1.0)
        assert haves(actions) == {"a": set(ALL - told - {5, 6})}
        b.check()

    def test_a_large_torrent_is_told_in_paced_batches(self) -> None:
        pieces = 3 * CATCH_UP_BATCH + 10
        geometry = TorrentGeometry(pieces, 16384)
        have = range(pieces)
        b = SwarmBrain(geometry, rng=random.Random(1), have=have, revelation=super_seed(pieces))
        for peer in ("a", "b"):
            b.handle(PeerJoined(peer, fast=True), 0.0)
        before = {peer: b.revelation.revealed(peer) for peer in ("a", "b")}
        first = b.set_revelation(HonestRevelation(pieces, have), 10.0)
        assert {peer: len(p) for peer, p in haves(first).items()} == {
            "a": CATCH_UP_BATCH,
            "b": CATCH_UP_BATCH,
        }
        assert b.revelation.next_deadline() == 10.0 + CATCH_UP_INTERVAL
        due = b.next_deadline()
        assert due is not None
        assert due <= 10.0 + CATCH_UP_INTERVAL
        assert b.revelation.tick(10.0 + CATCH_UP_INTERVAL / 2) == []  # not yet
        told = {peer: set(p) for peer, p in haves(first).items()}
        now = 10.0
        for _ in range(10):
            now += CATCH_UP_INTERVAL
            batch = b.tick(now)
            for key, batch_pieces in haves(batch).items():
                assert len(batch_pieces) <= CATCH_UP_BATCH
                assert not told[key] & batch_pieces  # nothing twice
                told[key] |= batch_pieces
        for peer in ("a", "b"):
            assert told[peer] == set(have) - before[peer]  # each once
            assert b.revelation.revealed(peer) == set(have)
        assert b.revelation.next_deadline() is None
        b.check()

    def test_a_piece_lost_or_told_meanwhile_is_skipped(self) -> None:
        pieces = CATCH_UP_BATCH + 20
        geometry = TorrentGeometry(pieces, 16384)
        have = range(pieces)
        b = SwarmBrain(geometry, rng=random.Random(1), have=have, revelation=super_seed(pieces))
        b.handle(PeerJoined("a"), 0.0)
        b.handle(PeerJoined("b"), 0.0)
        b.set_revelation(HonestRevelation(pieces, have), 1.0)
        owed_a = set(have) - b.revelation.revealed("a")
        lost, back = sorted(owed_a)[-2:]
        b.handle(PieceLost(lost), 1.0)
        b.handle(PieceLost(back), 1.0)
        assert haves(b.handle(PieceVerified(back, True), 1.0)) == {"a": {back}, "b": {back}}
        b.handle(PeerLeft("b"), 1.0)
        rest = b.tick(1.0 + CATCH_UP_INTERVAL)
        assert set(haves(rest)) == {"a"}
        assert lost not in haves(rest)["a"]
        assert back not in haves(rest)["a"]  # told already, when it was verified again
        assert b.revelation.revealed("a") == set(have) - {lost}
        assert not b.may_upload("a", lost)
        b.check()

    def test_to_a_lazy_bitfield_too(self) -> None:
        b = seed_brain(super_seed())
        b.handle(PeerJoined("a", fast=True), 0.0)
        lazy = LazyBitfield(8, ALL, rng=random.Random(3), max_delay=1.0)
        actions = b.set_revelation(lazy, 1.0)
        assert only_haves(actions)
        assert b.revelation.revealed("a") == ALL
        # Its own withholding is for peers that join from now on.
        first = b.handle(PeerJoined("b"), 1.0)
        assert isinstance(first[0], SendBitfield)
        assert first[0].pieces < ALL
        b.check()


class TestHonestToSuper:
    def test_peers_told_everything_stay_told_and_new_ones_are_super_seeded(self) -> None:
        b = seed_brain()
        assert b.handle(PeerJoined("a", fast=True), 0.0) == [SendHaveAll("a")]
        b.handle(PeerJoined("b"), 0.0)
        b.handle(PeerHave("b", 3), 0.0)
        assert b.set_revelation(super_seed(), 1.0) == []  # nothing to say, nothing taken back
        for peer in ("a", "b"):
            assert b.revelation.revealed(peer) == ALL
            assert all(b.may_upload(peer, piece) for piece in ALL)
        assert isinstance(b.revelation, SuperSeeding)
        assert b.revelation.assigned("a") is None  # served honestly: never assigned
        joined = b.handle(PeerJoined("c", fast=True), 1.0)
        assert joined[0] == SendHaveNone("c")
        assert list(haves(joined)) == ["c"]
        [piece] = haves(joined)["c"]
        assert piece != 3  # b has a copy of 3: a piece nobody has comes first
        assert [p for p in ALL if b.may_upload("c", p)] == [piece]
        b.check()

    def test_peers_told_everything_hear_of_a_piece_verified_again(self) -> None:
        b = seed_brain()
        b.handle(PeerJoined("a", fast=True), 0.0)
        b.set_revelation(super_seed(), 1.0)
        b.handle(PieceLost(2), 1.0)
        assert not b.may_upload("a", 2)
        assert haves(b.handle(PieceVerified(2, True), 2.0)) == {"a": {2}}
        assert b.may_upload("a", 2)

    def test_the_copies_of_adopted_peers_count(self) -> None:
        b = seed_brain()
        b.handle(PeerJoined("a"), 0.0)
        b.handle(PeerBitfield("a", ALL - {6}), 0.0)
        b.set_revelation(super_seed(), 1.0)
        # While a piece has no copy, only such a piece is revealed.
        joined = b.handle(PeerJoined("c"), 1.0)
        assert haves(joined) == {"c": {6}}

    def test_a_partly_told_peer_keeps_the_piece_it_works_on(self) -> None:
        b = seed_brain(super_seed(strict=True, seed=4))
        b.handle(PeerJoined("a", fast=True), 0.0)
        [piece] = b.revelation.revealed("a")
        # Strict to loose: the same piece stays a's; no second piece before it spread.
        assert b.set_revelation(super_seed(strict=False, seed=5), 1.0) == []
        assert isinstance(b.revelation, SuperSeeding)
        assert b.revelation.assigned("a") == piece
        # Loose: announcing it earns the next one.
        after = haves(b.handle(PeerHave("a", piece), 2.0))
        assert list(after) == ["a"]
        assert piece not in after["a"]
        b.check()

    def test_a_partly_told_peer_that_has_what_it_was_told_is_assigned_one(self) -> None:
        b = seed_brain(LazyBitfield(8, ALL, rng=random.Random(2), max_withheld=8, max_delay=9.0))
        first = b.handle(PeerJoined("a"), 0.0)
        assert isinstance(first[0], SendBitfield)
        told = set(first[0].pieces)
        b.handle(PeerBitfield("a", told), 0.0)
        actions = b.set_revelation(super_seed(), 1.0)
        [(peer, fresh)] = [(p, piece) for p, pieces in haves(actions).items() for piece in pieces]
        assert peer == "a"
        assert fresh not in told
        assert b.revelation.revealed("a") == told | {fresh}
        b.check()


class TestRequestsWhileSuperSeeding:
    def test_only_revealed_pieces_may_be_uploaded(self) -> None:
        b = seed_brain(super_seed())
        b.handle(PeerJoined("a", fast=True), 0.0)
        [piece] = b.revelation.revealed("a")
        assert b.may_upload("a", piece)
        for other in ALL - {piece}:
            assert not b.may_upload("a", other)  # "piece not superseeded"
        for nonsense in (-1, 8, 2**40, True, "1"):
            assert not b.may_upload("a", nonsense)  # type: ignore[arg-type]
        b.handle(PieceLost(piece), 1.0)
        assert not b.may_upload("a", piece)  # announced, but gone from storage
        with pytest.raises(LocalProtocolError):
            b.may_upload("nobody", piece)

    def test_honest_peers_may_take_every_piece_we_have(self) -> None:
        b = SwarmBrain(GEOMETRY, rng=random.Random(1), have={1, 2})
        b.handle(PeerJoined("a"), 0.0)
        assert [p for p in ALL if b.may_upload("a", p)] == [1, 2]


class TestSwitchErrors:
    def test_bad_strategies_are_refused_and_nothing_changes(self) -> None:
        b = seed_brain()
        b.handle(PeerJoined("a"), 0.0)
        current = b.revelation
        used = HonestRevelation(8, ALL)
        used.peer_joined("x", 0.0)
        for bad in (
            HonestRevelation(8, ALL - {1}),
            HonestRevelation(9, range(9)),
            used,
            object(),
        ):
            with pytest.raises(LocalProtocolError):
                b.set_revelation(bad, 1.0)  # type: ignore[arg-type]
            assert b.revelation is current
        assert b.set_revelation(current, 1.0) == []

    def test_adopting_a_peer_twice_or_a_bad_piece(self) -> None:
        reveal = HonestRevelation(4, range(4))
        reveal.adopt("a", 0.0, revealed=[0])
        with pytest.raises(LocalProtocolError):
            reveal.adopt("a", 0.0)
        with pytest.raises(LocalProtocolError):
            reveal.adopt("b", 0.0, revealed=[4])
        with pytest.raises(LocalProtocolError):
            reveal.adopt([1], 0.0)  # type: ignore[arg-type]
        assert reveal.peers == {"a"}


# ---------------------------------------------------------------- properties

_steps = st.lists(
    st.tuples(
        st.sampled_from(
            ["join", "join_fast", "left", "have", "have_all", "lost", "back", "switch"]
        ),
        st.integers(0, 4),
        st.integers(0, 7),
        st.sampled_from(["honest", "lazy", "super", "loose"]),
    ),
    max_size=40,
)


def _strategy(kind: str, have: frozenset[int], seed: int) -> RevelationStrategy:
    if kind == "honest":
        return HonestRevelation(8, have, redundant_haves=seed % 2 == 0)
    if kind == "lazy":
        return LazyBitfield(8, have, rng=random.Random(seed), max_delay=0.5)
    return SuperSeeding(8, have, rng=random.Random(seed), strict=kind == "super")


@settings(max_examples=150, deadline=None)
@given(_steps, st.integers(0, 1000))
def test_switches_keep_the_wire_and_the_record_in_step(
    steps: list[tuple[str, int, int, str]], seed: int
) -> None:
    """Whatever the switches: a first message only first, what each peer was sent is what
    the strategy says it was told, nothing told is taken back, never a piece we lack; and
    an honest strategy, given time, tells every peer everything we have."""
    b = SwarmBrain(GEOMETRY, rng=random.Random(seed), have=ALL, revelation=super_seed(seed=seed))
    sent: dict[object, set[int]] = {}
    talked: set[object] = set()
    now = 0.0

    def carry(actions: list[Action]) -> None:
        for action in actions:
            peer = action.peer
            if isinstance(action, FIRST_MESSAGES):
                assert peer not in talked, action
            talked.add(peer)
            if isinstance(action, SendHave):
                assert b.has_piece(action.piece)
                sent.setdefault(peer, set()).add(action.piece)
            elif isinstance(action, SendBitfield):
                sent.setdefault(peer, set()).update(action.pieces)
            elif isinstance(action, SendHaveAll):
                sent.setdefault(peer, set()).update(ALL)

    for kind, peer, piece, new in steps:
        now += 0.25
        joined = peer in b.peers
        if kind in ("join", "join_fast") and not joined:
            talked.discard(peer)
            sent.pop(peer, None)
            carry(b.handle(PeerJoined(peer, fast=kind == "join_fast"), now))
        elif kind == "left" and joined:
            carry(b.handle(PeerLeft(peer), now))
        elif kind == "have" and joined:
            carry(b.handle(PeerHave(peer, piece), now))
        elif kind == "have_all" and joined:
            carry(b.handle(PeerHaveAll(peer), now))
        elif kind == "lost":
            carry(b.handle(PieceLost(piece), now))
        elif kind == "back":
            carry(b.handle(PieceVerified(piece, True), now))
        elif kind == "switch":
            before = {p: b.revelation.revealed(p) for p in b.peers}
            carry(b.set_revelation(_strategy(new, b.revelation.have, seed), now))
            for p, told in before.items():
                assert told <= b.revelation.revealed(p)  # never claims less
        carry(b.tick(now))
        for p in b.peers:
            assert b.revelation.revealed(p) == sent.get(p, set())
        b.check()
    have = b.revelation.have
    carry(b.set_revelation(HonestRevelation(8, have), now))
    for _ in range(5):
        now += 1.0
        carry(b.tick(now))
    for p in b.peers:
        assert have <= sent.get(p, set())


class TestCatchUpMemory:
    def test_adopting_peers_of_a_big_torrent_is_cheap(self) -> None:
        # Each adopted peer is owed (almost) every piece: what it is owed is a cursor, not a
        # list of the pieces (100,000 pieces x 20 peers would hold 16 MB of lists).
        pieces = 100_000
        strategy = HonestRevelation(pieces, range(pieces))
        tracemalloc.start()
        try:
            for peer in range(20):
                actions = strategy.adopt(peer, 1.0, revealed=(0, pieces - 1))
                assert [a.piece for a in actions if isinstance(a, SendHave)] == list(
                    range(1, CATCH_UP_BATCH + 1)
                )
            del actions
            held, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert held < 1_000_000, held
        assert peak < 2_000_000, peak
        assert strategy.next_deadline() == 1.0 + CATCH_UP_INTERVAL

    def test_the_cursor_skips_what_was_told_and_stops_at_the_last_owed(self) -> None:
        strategy = HonestRevelation(3 * CATCH_UP_BATCH, range(3 * CATCH_UP_BATCH))
        # Told all but the first batch and one piece past it: two steps, then nothing owed.
        told = set(range(CATCH_UP_BATCH, 3 * CATCH_UP_BATCH)) - {2 * CATCH_UP_BATCH}
        first = strategy.adopt("a", 0.0, revealed=told)
        assert haves(first) == {"a": set(range(CATCH_UP_BATCH))}
        assert strategy.next_deadline() == CATCH_UP_INTERVAL
        assert haves(strategy.tick(CATCH_UP_INTERVAL)) == {"a": {2 * CATCH_UP_BATCH}}
        assert strategy.next_deadline() is None
        # Exactly one batch owed: told at once, nothing left for tick.
        strategy.adopt("b", 0.0, revealed=range(CATCH_UP_BATCH, 3 * CATCH_UP_BATCH))
        assert strategy.next_deadline() is None
        assert strategy.revealed("b") == frozenset(range(3 * CATCH_UP_BATCH))
