"""What one small peer message costs the brain: counted work, never timings.

A peer flipping one piece (have all, don't have, have: lt_donthave), a repeated allowed fast,
have all / have none to a seed: each must cost O(1) (or O(what it changed)), not a pass over
every piece of the torrent. And a reject of an allowed-fast request while choked drops the
piece from the allowed set (libtorrent's incoming_reject_request), or we would ask again
forever.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

import pytest

from bip_select import (
    AllowedFast,
    BlockRejected,
    HonestRevelation,
    PeerBitfield,
    PeerDontHave,
    PeerHave,
    PeerHaveAll,
    PeerHaveNone,
    PeerJoined,
    PeerLeft,
    PeerUnchokedUs,
    PieceVerified,
    SendHave,
    SendInterested,
    SendNotInterested,
    SendRequest,
    SuperSeeding,
    SwarmBrain,
    TorrentGeometry,
)
from bip_select._availability import Availability
from bip_select._brain import SwarmBrain as _Brain
from bip_select._revelation import _PieceBits
from bip_select._selection import PiecePicker, RarestFirst, Sequential, Strategy, Streaming

N = 4096  # big enough that a pass over every piece shows in the counts


@pytest.fixture
def shifted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the pieces Availability._shift moves (its per-piece loop)."""
    moved: list[int] = []
    original = Availability._shift

    def counting(self: Availability, pieces: Iterable[int], delta: int) -> None:
        listed = list(pieces)
        moved.append(len(listed))
        original(self, listed, delta)

    monkeypatch.setattr(Availability, "_shift", counting)
    return moved


@pytest.fixture
def recounts(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Counts the brain's recounts of a peer's wanted pieces (a pass over its pieces)."""
    calls: list[object] = []
    original = _Brain._recount_wanted

    def counting(self: _Brain, peer: object, state: object) -> None:
        calls.append(peer)
        original(self, peer, state)  # type: ignore[arg-type]

    monkeypatch.setattr(_Brain, "_recount_wanted", counting)
    return calls


def _brain(n: int = N, **kwargs: object) -> SwarmBrain:
    return SwarmBrain(TorrentGeometry(n, 16384), rng=random.Random(1), **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- 1. flipping one piece


def test_a_have_all_peer_flipping_a_piece_moves_one_piece_each(shifted: list[int]) -> None:
    a = Availability(N, random.Random(1))
    for piece in range(N):
        a.set_priority(piece, 4)
    a.add_peer("s")
    a.have_all("s")
    a.add_peer("x")
    a.have("x", 0)
    for _ in range(5):
        assert a.dont_have("s", 0)
        assert not a.is_seed("s")
        assert a.count(0) == 1
        assert a.count(1) == 1
        assert a.num_seeds == 0
        assert not a.peer_has("s", 0)
        assert a.holders(0) == {"x"}
        assert a.have("s", 0)
        assert a.is_seed("s")
        assert a.count(0) == 2
        a.check()
    assert sum(shifted) == 0  # before: every piece, twice per round
    # A near-seed's pieces and wanted walk leave out what it lacks.
    a.dont_have("s", 3)
    assert not a.have("s", N)  # past the end: ignored
    assert next(a.peer_pieces("s", 2)) == 2
    assert 3 not in set(a.peer_pieces("s"))
    assert 3 not in set(a.iter_wanted("s"))
    assert len(list(a.iter_wanted("s"))) == N - 1
    a.check()
    # Have all gives back what it lacked; have none and a departure take back the rest.
    a.have_all("s")
    assert a.is_seed("s")
    a.dont_have("s", 3)
    a.have_none("s")
    assert a.count(3) == 0
    assert a.count(0) == 1
    a.check()
    a.have_all("s")
    a.dont_have("s", 5)
    a.remove_peer("s")
    assert [a.count(p) for p in (0, 5, 6)] == [1, 0, 0]
    a.check()


def test_a_near_seed_that_lost_most_pieces_sorts_what_it_has() -> None:
    a = Availability(64, random.Random(1))
    for piece in range(64):
        a.set_priority(piece, 1 + piece % 3)
    a.add_peer("s")
    a.have_all("s")
    for piece in range(60):
        a.dont_have("s", piece)
    assert a.peer_piece_count("s") == 4
    assert sorted(a.iter_wanted("s")) == [60, 61, 62, 63]
    assert list(a.iter_wanted("s")) == sorted(a.iter_wanted("s"), key=a.wanted_key)
    a.check()


def test_dont_have_adjusts_the_wanted_count_without_a_recount(recounts: list[object]) -> None:
    brain = _brain()
    brain.handle(PeerJoined("p", fast=True), 0.0)
    brain.handle(PeerBitfield("p", frozenset(range(N - 2))), 0.0)
    brain.handle(PeerJoined("s", fast=True), 0.0)
    brain.handle(PeerHaveAll("s"), 0.0)
    brain.handle(PeerJoined("one", fast=True), 0.0)
    recounts.clear()
    for _ in range(3):
        for peer in ("p", "s"):
            brain.handle(PeerDontHave(peer, 0), 1.0)
            brain.handle(PeerHave(peer, 0), 1.0)
        # A peer whose only wanted piece goes: not interested, and interested again.
        assert brain.handle(PeerHave("one", 7), 1.0)[0] == SendInterested("one")
        assert brain.handle(PeerDontHave("one", 7), 1.0) == [SendNotInterested("one")]
        assert brain.handle(PeerDontHave("one", 7), 1.0) == []  # it did not have it
    assert recounts == []  # before: one per DontHave of a piece it had
    brain.check()


# ---------------------------------------------------------------- 2. allowed fast


def test_a_repeated_allowed_fast_runs_no_picker(picks: list[str]) -> None:
    brain = _brain(have=[9])
    brain.handle(PeerJoined("p", fast=True), 0.0)
    brain.handle(PeerHaveAll("p"), 0.0)
    first = brain.handle(AllowedFast("p", 5), 0.0)
    assert [a.block.piece for a in first if isinstance(a, SendRequest)] == [5]
    assert picks == ["p"]
    for _ in range(5):
        assert brain.handle(AllowedFast("p", 5), 1.0) == []
    assert brain.handle(AllowedFast("p", 9), 1.0) == []  # we have it: nothing to ask
    assert brain.handle(AllowedFast("p", N), 1.0) == []  # nonsense: ignored
    assert picks == ["p"]  # before: a picker run per message
    brain.check()


def test_a_choked_pick_walks_only_the_allowed_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    walked: list[int] = []
    original = Availability.iter_wanted

    def counting(self: Availability, peer: object = None) -> Iterator[int]:
        for piece in original(self, peer):
            walked.append(piece)
            yield piece

    monkeypatch.setattr(Availability, "iter_wanted", counting)
    picker = PiecePicker(TorrentGeometry(N, 16384), random.Random(1))
    picker.add_peer("p")
    picker.peer_have_all("p")
    for piece in (N - 1, N - 2):
        assert picker.allowed_fast("p", piece)
    assert not picker.allowed_fast("p", N - 1)  # not news
    blocks = picker.pick("p", 4, 0.0, choked=True)
    assert {b.piece for b in blocks} == {N - 1, N - 2}
    assert walked == []  # before: every wanted piece up to the allowed ones


def _order_state(seed: int, strategy: Strategy) -> tuple[PiecePicker, set[int]]:
    rng = random.Random(seed)
    picker = PiecePicker(TorrentGeometry(200, 16384), random.Random(seed), strategy)
    for peer in range(6):
        picker.add_peer(peer)
        picker.peer_bitfield(peer, {p for p in range(200) if rng.random() < 0.3})
    picker.add_peer("p")
    if seed % 2:
        picker.peer_have_all("p")
        picker.peer_dont_have("p", rng.randrange(200))
    else:
        picker.peer_bitfield("p", {p for p in range(200) if rng.random() < 0.5})
    picker.set_piece_priorities({p: rng.choice([0, 1, 4, 7]) for p in range(0, 200, 7)})
    allowed = {rng.randrange(200) for _ in range(20)}
    for piece in allowed:
        picker.allowed_fast("p", piece)
    return picker, allowed


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("make", [RarestFirst, Sequential, lambda: Streaming(RarestFirst())])
def test_the_allowed_order_is_the_strategys(seed: int, make: type[Strategy]) -> None:
    strategy = make()
    picker, allowed = _order_state(seed, strategy)
    if isinstance(strategy, Streaming):
        for rank, piece in enumerate(sorted(allowed)[::3]):
            strategy.set_deadline(piece, 10.0 + rank)  # distinct deadlines
    walked = [p for p in strategy.order(picker, "p") if p in allowed]
    assert list(picker._allowed_order("p", allowed)) == walked


# ---------------------------------------------------------------- 3. reject while choked


def test_a_reject_while_choked_drops_the_piece_from_the_allowed_set(picks: list[str]) -> None:
    brain = _brain()
    brain.handle(PeerJoined("p", fast=True), 0.0)
    brain.handle(PeerHaveAll("p"), 0.0)
    asked = [a.block for a in brain.handle(AllowedFast("p", 5), 0.0) if isinstance(a, SendRequest)]
    assert [b.piece for b in asked] == [5]
    after = brain.handle(BlockRejected("p", asked[0]), 1.0)
    assert [a for a in after if isinstance(a, SendRequest)] == []  # before: asked again
    assert not brain.picker.is_allowed_fast("p", 5)
    assert not brain.picker.revoke_allowed_fast("p", 5)
    # Allowed again later: asked again.
    again = brain.handle(AllowedFast("p", 5), 2.0)
    assert [a.block for a in again if isinstance(a, SendRequest)] == [asked[0]]
    brain.check()


def test_a_reject_while_unchoked_keeps_the_allowed_set() -> None:
    brain = _brain()
    brain.handle(PeerJoined("p", fast=True), 0.0)
    brain.handle(PeerHaveAll("p"), 0.0)
    brain.handle(AllowedFast("p", 5), 0.0)
    asked = [a.block for a in brain.handle(PeerUnchokedUs("p"), 0.0) if isinstance(a, SendRequest)]
    brain.handle(BlockRejected("p", asked[0]), 1.0)
    assert brain.picker.is_allowed_fast("p", 5)
    brain.check()


# ---------------------------------------------------------------- 4. have all / have none


def test_have_all_and_have_none_to_an_honest_seed_touch_no_piece(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    touched: list[str] = []
    for name in ("__contains__", "__iter__", "fill"):
        original = getattr(_PieceBits, name)

        def spy(self: _PieceBits, *args: object, _o: object = original, _n: str = name) -> object:
            touched.append(_n)
            return _o(self, *args)  # type: ignore[operator]

        monkeypatch.setattr(_PieceBits, name, spy)
    rev = HonestRevelation(N, have=range(N), redundant_haves=False)
    rev.peer_joined("x", 0.0, fast=True)
    touched.clear()
    for _ in range(5):
        assert rev.peer_have_all("x", 1.0) == []
        assert rev.peer_have_none("x", 1.0) == []
    assert touched == []  # before: every piece, per message
    rev.peer_have_all("x", 1.0)
    rev.peer_dont_have("x", 3, 1.0)
    assert rev.piece_lost(3, 2.0) == []
    assert rev.piece_added(3, 3.0) == [SendHave("x", 3)]


def _check_super_seeding(s: SuperSeeding) -> None:
    """Its copy counts agree with what the peers have; its buckets and tally with those."""
    views = list(s._peers.values())
    assert s._whole == sum(1 for v in views if v.whole)
    assert all(v.whole for v in views if v.seed)
    tally: dict[int, int] = {}
    for piece in range(s.num_pieces):
        copies = sum(1 for v in views if v.has(piece))
        assert s._copies[piece] + s._whole == copies, piece
        on_the_way = sum(1 for v in views if v.assigned == piece)
        assert s._on_the_way[piece] == on_the_way
        position = s._position[piece]
        assert (position >= 0) == (piece in s._have)
        if position >= 0:
            level = s._copies[piece] + on_the_way
            assert s._levels[level][position] == piece
            tally[s._copies[piece]] = tally.get(s._copies[piece], 0) + 1
    assert tally == s._tally
    assert sum(len(b) for b in s._levels.values()) == len(s._have)


def test_have_all_and_have_none_to_a_super_seed_count_no_piece(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counted: list[int] = []
    original = SuperSeeding._count

    def counting(self: SuperSeeding, piece: int, delta: int) -> None:
        counted.append(piece)
        original(self, piece, delta)

    monkeypatch.setattr(SuperSeeding, "_count", counting)
    rev = SuperSeeding(N, have=range(N), rng=random.Random(1))
    rev.peer_joined("a", 0.0, fast=True)
    rev.peer_joined("x", 0.0, fast=True)
    piece = rev.assigned("a")
    assert piece is not None
    for round_ in range(5):
        # A have all shows a's piece elsewhere: a gets its next one (BEP 16).
        actions = rev.peer_have_all("x", 1.0)
        assert [(type(a).__name__, a.peer) for a in actions] == [("SendHave", "a")]
        # x's first have all (which may cross our first have) shows it had its piece: let
        # go. A later one counts as a have of it: x waits for it to show up elsewhere.
        assert (rev.assigned("x") is None) == (round_ == 0)
        # Now it lacks every piece: the first time it is revealed one (a seed no more is
        # super-seeded); later, it still holds the one it was revealed.
        actions = rev.peer_have_none("x", 1.0)
        expected = [("SendHave", "x")] if round_ == 0 else []
        assert [(type(a).__name__, a.peer) for a in actions] == expected
    assert counted == []  # before: every piece, per message
    rev.peer_have_all("x", 2.0)
    rev.peer_dont_have("x", 7, 2.0)  # a have-all peer that lost a piece: still counted whole
    rev.peer_have("x", 7, 2.0)
    rev.peer_dont_have("x", 8, 2.0)
    assert len(counted) == 3
    _check_super_seeding(rev)


@pytest.mark.parametrize("seed", range(8))
def test_super_seeding_counts_stay_right(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.choice([3, 9, 17, 40])
    have = range(n) if seed % 2 else [p for p in range(n) if rng.random() < 0.7]
    rev = SuperSeeding(n, have=have, rng=random.Random(seed), strict=seed % 4 < 2)
    peers: list[int] = []
    for step in range(150):
        r = rng.random()
        if not peers or r < 0.08:
            peer = step
            rev.peer_joined(peer, 0.0, fast=rng.random() < 0.5)
            peers.append(peer)
            continue
        peer = rng.choice(peers)
        piece = rng.randrange(n)
        if r < 0.12:
            rev.peer_left(peer)
            peers.remove(peer)
        elif r < 0.3:
            rev.peer_have_all(peer, 1.0)
        elif r < 0.4:
            rev.peer_have_none(peer, 1.0)
        elif r < 0.6:
            rev.peer_dont_have(peer, piece, 1.0)
        elif r < 0.8:
            rev.peer_have(peer, piece, 1.0)
        elif r < 0.88:
            rev.peer_bitfield(peer, {p for p in range(n) if rng.random() < 0.5}, 1.0)
        elif r < 0.94:
            rev.piece_lost(piece, 1.0)
        else:
            rev.piece_added(piece, 1.0)
        _check_super_seeding(rev)


def test_a_super_seeding_brain_with_flipping_peers_keeps_its_invariants() -> None:
    n = 40
    rev = SuperSeeding(n, have=range(n), rng=random.Random(3))
    brain = _brain(n, have=range(n), revelation=rev)
    for peer in "abc":
        brain.handle(PeerJoined(peer, fast=True), 0.0)
    for step, event in enumerate(
        [
            PeerHaveAll("a"),
            PeerDontHave("a", 1),
            PeerHave("b", 2),
            PeerHaveNone("a"),
            PeerHaveAll("b"),
            PeerDontHave("b", 3),
            PeerHave("b", 3),
            PeerBitfield("c", frozenset(range(0, n, 2))),
            PeerHaveAll("c"),
            PeerLeft("b"),
            PieceVerified(5, True),
        ]
    ):
        brain.handle(event, float(step))
        brain.check()
        _check_super_seeding(rev)
