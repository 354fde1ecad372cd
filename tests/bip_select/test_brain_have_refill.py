"""SwarmBrain: a have from a peer that unchokes us and had nothing more for us is asked at once.

A leecher interested in a peer that unchokes it, with every block that peer has asked of
others, used to wait for the periodic refill (up to ``DEFAULT_REFILL_INTERVAL``) before asking
for a piece the peer announces next; a seed revealing pieces one at a time (super-seeding) made
that an idle second per piece. Sans-IO: every call at the same ``now``, so no refill is due.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import pytest

from bip_select._actions import Action, SendCancel, SendRequest
from bip_select._brain import SwarmBrain
from bip_select._geometry import Block, TorrentGeometry
from bip_select._inputs import (
    AllowedFast,
    BlockReceived,
    PeerBitfield,
    PeerHave,
    PeerHaveAll,
    PeerJoined,
    PeerLeft,
    PeerUnchokedUs,
    PieceDeadlineSet,
    PieceVerified,
)
from bip_select._queueing import QueueConfig
from bip_select._selection import PiecePicker

GEOMETRY = TorrentGeometry(8, 32768)  # 8 pieces of 2 blocks


def requests_to(actions: Sequence[Action], peer: str) -> list[Block]:
    """The blocks requested of ``peer``, in order (failing on a request to anyone else)."""
    sent = [a for a in actions if isinstance(a, SendRequest)]
    assert all(a.peer == peer for a in sent), sent
    return [a.block for a in sent]


def starved_behind(
    geometry: TorrentGeometry, theirs: frozenset[int], mine: frozenset[int]
) -> SwarmBrain:
    """A leecher whose peer "b" (having ``theirs``) was asked for every block of them, and
    whose peer "a" (having ``mine``, a subset) unchokes it with nothing left to ask of it."""
    brain = SwarmBrain(geometry, rng=random.Random(1), queueing=QueueConfig(initial_queue=16))
    brain.handle(PeerJoined("b", fast=True), 0.0)
    brain.handle(PeerBitfield("b", theirs), 0.0)
    asked = requests_to(brain.handle(PeerUnchokedUs("b"), 0.0), "b")
    assert {block.piece for block in asked} == theirs
    brain.handle(PeerJoined("a", fast=True), 0.0)
    brain.handle(PeerBitfield("a", mine), 0.0)
    assert brain.is_interested("a")
    assert requests_to(brain.handle(PeerUnchokedUs("a"), 0.0), "a") == []
    return brain


def test_a_have_from_an_unchoking_peer_with_an_empty_pipe_is_requested_at_once() -> None:
    brain = starved_behind(GEOMETRY, frozenset({0}), frozenset({0}))
    asked = requests_to(brain.handle(PeerHave("a", 1), 0.0), "a")
    assert asked == list(GEOMETRY.blocks(1))  # in the same call: no refill was due
    # No block is asked twice: a repeated have is no news, and "b" does not have piece 1.
    assert requests_to(brain.handle(PeerHave("a", 1), 0.0), "a") == []
    assert brain.picker.requests.num_outstanding("a") == 2
    brain.check()


def test_a_flood_of_haves_to_a_full_pipe_runs_no_picker(picks: list[str]) -> None:
    geometry = TorrentGeometry(1024, 32768)
    config = QueueConfig(initial_queue=2, min_queue=2, max_queue=2)
    brain = SwarmBrain(geometry, rng=random.Random(1), queueing=config)
    brain.handle(PeerJoined("a", fast=True), 0.0)
    brain.handle(PeerBitfield("a", frozenset(range(4))), 0.0)
    assert len(requests_to(brain.handle(PeerUnchokedUs("a"), 0.0), "a")) == 2  # full
    picks.clear()
    for piece in range(4, geometry.num_pieces):
        assert requests_to(brain.handle(PeerHave("a", piece), 0.0), "a") == []
    assert picks == []  # the room test comes first: O(1) per have
    assert brain.is_interested("a")
    brain.check()


def test_haves_of_pieces_asked_of_others_cost_no_picker_run(picks: list[str]) -> None:
    geometry = TorrentGeometry(64, 32768)  # pieces 8.. are untouched: no end-game
    brain = starved_behind(geometry, frozenset(range(8)), frozenset({0}))
    picks.clear()
    for piece in range(1, 8):  # every block asked of "b": nothing new for the picker
        assert requests_to(brain.handle(PeerHave("a", piece), 0.0), "a") == []
    assert picks == []
    asked = requests_to(brain.handle(PeerHave("a", 8), 0.0), "a")
    assert asked == list(geometry.blocks(8))
    assert picks == ["a"]
    brain.check()


def test_a_have_from_a_choking_peer_asks_nothing(picks: list[str]) -> None:
    brain = SwarmBrain(GEOMETRY, rng=random.Random(1))
    brain.handle(PeerJoined("a", fast=True), 0.0)
    brain.handle(PeerBitfield("a", frozenset({0})), 0.0)
    assert brain.is_interested("a")
    # It allows piece 7 fast (which it does not have yet): _fill would run the picker for
    # it, so nothing asked below is the have's own guard, not _fill's early return.
    assert requests_to(brain.handle(AllowedFast("a", 7), 0.0), "a") == []
    picks.clear()
    for piece in range(1, 7):
        assert requests_to(brain.handle(PeerHave("a", piece), 0.0), "a") == []
    assert picks == []
    # The pieces are not forgotten: the unchoke asks for them.
    assert requests_to(brain.handle(PeerUnchokedUs("a"), 0.0), "a")
    brain.check()


def test_a_have_of_an_allowed_fast_piece_from_a_choking_peer_is_asked_at_once(
    picks: list[str],
) -> None:
    brain = SwarmBrain(GEOMETRY, rng=random.Random(1))
    brain.handle(PeerJoined("a", fast=True), 0.0)
    brain.handle(PeerBitfield("a", frozenset({0})), 0.0)
    brain.handle(AllowedFast("a", 3), 0.0)  # it chokes us, but piece 3 may be asked
    assert brain.picker.is_allowed_fast("a", 3)
    assert not brain.picker.is_allowed_fast("a", 0)
    picks.clear()
    asked = requests_to(brain.handle(PeerHave("a", 3), 0.0), "a")
    assert asked == list(GEOMETRY.blocks(3))
    assert picks == ["a"]
    brain.check()


def test_is_allowed_fast_answers_nonsense_with_false() -> None:
    picker = PiecePicker(GEOMETRY, random.Random(1))
    picker.add_peer("a")
    picker.allowed_fast("a", 2)
    assert picker.is_allowed_fast("a", 2)
    for piece in (3, -1, 8, 2.0, True, "2"):
        assert not picker.is_allowed_fast("a", piece)  # type: ignore[arg-type]
    assert not picker.is_allowed_fast("b", 2)  # never granted
    picker.remove_peer("a")
    assert not picker.is_allowed_fast("a", 2)


def test_a_have_of_a_late_deadline_piece_asks_a_faster_starved_peer_at_once() -> None:
    # "b" (100 B/s) was asked for pieces 0 and 1; piece 1 is due at 5 s, which b misses by
    # far. "a" (10 MB/s) had nothing to ask (piece 0 is b's, without a deadline) when it
    # announces piece 1: nothing of it is free, but the picker asks a faster peer for a
    # late deadline block too, so the have must run it.
    geometry = TorrentGeometry(64, 32768)
    brain = starved_behind(geometry, frozenset({0, 1}), frozenset({0}))
    brain.handle(PieceDeadlineSet(1, 5.0), 0.0)
    brain.picker.set_rate("b", 100.0)
    brain.picker.set_rate("a", 10e6)
    assert brain.picker.requests.num_free(1) == 0
    asked = requests_to(brain.handle(PeerHave("a", 1), 0.0), "a")
    assert asked == list(geometry.blocks(1))
    assert all(set(brain.picker.requests.requesters(b)) == {"a", "b"} for b in asked)
    brain.check()


def test_a_piece_verified_elsewhere_tops_up_at_once_so_a_have_finds_a_full_pipe(
    picks: list[str],
) -> None:
    # Nothing of piece 0 is free (all asked of "b") and no end-game. A piece verified
    # elsewhere (say, by a web seed) cancels two of a's requests: the verification itself
    # asks "a" for two more (test_brain_topup.py), so its next have finds a full pipe and
    # runs no picker.
    geometry = TorrentGeometry(64, 32768)
    config = QueueConfig(initial_queue=4, min_queue=4, max_queue=4)
    brain = SwarmBrain(geometry, rng=random.Random(1), queueing=config)
    brain.handle(PeerJoined("b", fast=True), 0.0)
    brain.handle(PeerBitfield("b", frozenset({0, 1})), 0.0)
    assert len(requests_to(brain.handle(PeerUnchokedUs("b"), 0.0), "b")) == 4
    brain.handle(PeerJoined("a", fast=True), 0.0)
    brain.handle(PeerBitfield("a", frozenset(range(2, 8))), 0.0)
    first = requests_to(brain.handle(PeerUnchokedUs("a"), 0.0), "a")
    assert len(first) == 4  # its pipe is full: not starved
    done = first[0].piece
    picks.clear()
    actions = brain.handle(PieceVerified(done, good=True), 0.0)
    assert [a.block for a in actions if isinstance(a, SendCancel)] == list(geometry.blocks(done))
    asked = requests_to(actions, "a")
    assert len(asked) == 2
    assert {block.piece for block in asked}.isdisjoint({0, done})
    assert picks == ["a"]
    assert brain.picker.requests.num_outstanding("a") == 4
    assert requests_to(brain.handle(PeerHave("a", 0), 0.0), "a") == []
    assert picks == ["a"]  # the have: O(1)
    brain.check()


def test_a_have_tops_up_a_peer_not_starved_with_room(picks: list[str]) -> None:
    """A peer not starved goes on to the room test, even for a piece the picker has
    nothing free of: its room may come from a race it lost, which is not topped up.

    "a" (fast) was asked for duplicates of piece 1, a deadline piece late at "b" (slow),
    and for fresh pieces. One block in leaves it a request below the batch point; "b"
    winning the race for a block of piece 1 cancels a's copy, which brings a's room to
    the batch point and asks nothing (the loser waits). a's have of piece 0 (all asked of
    "b", no deadline, no end-game) must then top it up with fresh blocks.
    """
    geometry = TorrentGeometry(64, 32768)  # pieces 20.. are untouched: no end-game
    config = QueueConfig(initial_queue=8, min_queue=8, max_queue=8)  # batch point: room 2
    brain = SwarmBrain(geometry, rng=random.Random(1), queueing=config)
    brain.handle(PeerJoined("b", fast=True), 0.0)
    brain.handle(PeerBitfield("b", frozenset({0, 1})), 0.0)
    assert {b.piece for b in requests_to(brain.handle(PeerUnchokedUs("b"), 0.0), "b")} == {0, 1}
    brain.handle(PieceDeadlineSet(1, 5.0), 0.0)
    brain.handle(PeerJoined("a", fast=True), 0.0)
    brain.handle(PeerBitfield("a", frozenset({1, *range(2, 20)})), 0.0)
    brain.picker.set_rate("b", 100.0)  # misses the deadline by far
    brain.picker.set_rate("a", 10e6)
    first = requests_to(brain.handle(PeerUnchokedUs("a"), 0.0), "a")
    late = list(geometry.blocks(1))
    assert first[:2] == late  # the late deadline blocks, asked of "a" too
    assert len(first) == 8  # and fresh ones: its pipe is full, not starved
    assert requests_to(brain.handle(BlockReceived("a", first[2]), 0.0), "a") == []  # room 1
    lost = brain.handle(BlockReceived("b", late[0]), 0.0)
    assert lost == [SendCancel("a", late[0])]  # room 2, and not topped up
    requests = brain.picker.requests
    assert requests.num_outstanding("a") == 6
    assert requests.num_free(0) == 0
    picks.clear()
    asked = requests_to(brain.handle(PeerHave("a", 0), 0.0), "a")
    assert len(asked) == 2
    assert {block.piece for block in asked}.isdisjoint({0, 1, *(b.piece for b in first)})
    assert picks == ["a"]
    assert requests.num_outstanding("a") == 8
    brain.check()


def test_a_have_to_a_partly_full_pipe_waits_for_the_batch(picks: list[str]) -> None:
    config = QueueConfig(initial_queue=16, min_queue=16, max_queue=16)
    brain = SwarmBrain(GEOMETRY, rng=random.Random(1), queueing=config)
    brain.handle(PeerJoined("a", fast=True), 0.0)
    brain.handle(PeerBitfield("a", frozenset(range(7))), 0.0)
    first = requests_to(brain.handle(PeerUnchokedUs("a"), 0.0), "a")
    assert len(first) == 14  # room 2 left, under a quarter of 16
    picks.clear()
    assert requests_to(brain.handle(PeerHave("a", 7), 0.0), "a") == []
    assert picks == []  # the room test comes before the picker
    assert requests_to(brain.handle(BlockReceived("a", first[0]), 0.0), "a") == []  # room 3
    asked = requests_to(brain.handle(BlockReceived("a", first[1]), 0.0), "a")  # room 4
    assert asked == list(GEOMETRY.blocks(7))
    brain.check()


def test_in_end_game_a_have_brings_duplicates_at_once() -> None:
    # "b", a seed, was asked for every block; piece 0 came in whole (not verified yet), so
    # "a", which has only piece 0, has nothing to duplicate until it announces piece 1.
    brain = SwarmBrain(GEOMETRY, rng=random.Random(1), queueing=QueueConfig(initial_queue=16))
    brain.handle(PeerJoined("b", fast=True), 0.0)
    brain.handle(PeerHaveAll("b"), 0.0)
    assert len(requests_to(brain.handle(PeerUnchokedUs("b"), 0.0), "b")) == 16
    for block in GEOMETRY.blocks(0):
        brain.handle(BlockReceived("b", block), 0.0)
    brain.handle(PeerJoined("a", fast=True), 0.0)
    brain.handle(PeerBitfield("a", frozenset({0})), 0.0)
    assert requests_to(brain.handle(PeerUnchokedUs("a"), 0.0), "a") == []
    asked = requests_to(brain.handle(PeerHave("a", 1), 0.0), "a")
    assert asked == list(GEOMETRY.blocks(1))[: brain.picker.endgame_depth]
    assert all(set(brain.picker.requests.requesters(b)) == {"a", "b"} for b in asked)
    brain.check()


def end_game_with(geometry: TorrentGeometry) -> SwarmBrain:
    """End-game: seed "b" was asked for every block, and "a" (only piece 0) for duplicates
    of piece 0 up to the picker's end-game depth (1)."""
    config = QueueConfig(initial_queue=4 * geometry.num_pieces, max_queue=500)
    brain = SwarmBrain(geometry, rng=random.Random(1), queueing=config)
    brain.handle(PeerJoined("b", fast=True), 0.0)
    brain.handle(PeerHaveAll("b"), 0.0)
    asked = requests_to(brain.handle(PeerUnchokedUs("b"), 0.0), "b")
    assert len(asked) == 2 * geometry.num_pieces
    brain.handle(PeerJoined("a", fast=True), 0.0)
    brain.handle(PeerBitfield("a", frozenset({0})), 0.0)
    duplicates = requests_to(brain.handle(PeerUnchokedUs("a"), 0.0), "a")
    assert duplicates == list(geometry.blocks(0))[: brain.picker.endgame_depth]
    assert brain.statistics().endgame
    return brain


def test_in_end_game_haves_to_a_peer_at_its_duplicate_depth_run_no_picker(
    picks: list[str],
) -> None:
    geometry = TorrentGeometry(16, 32768)
    brain = end_game_with(geometry)
    assert brain.picker.requests.num_outstanding("a") == brain.picker.endgame_depth
    picks.clear()
    for piece in range(1, geometry.num_pieces):
        assert requests_to(brain.handle(PeerHave("a", piece), 0.0), "a") == []
    assert picks == []  # the picker gives no duplicate to a peer at its depth
    assert brain.statistics().endgame
    brain.check()


def test_end_game_is_left_when_a_leaving_peer_frees_blocks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_select.brain")
    geometry = TorrentGeometry(16, 32768)
    brain = end_game_with(geometry)
    caplog.clear()
    brain.handle(PeerLeft("b"), 0.0)  # pieces 1..15 are free again, and "a" has none
    assert not brain.statistics().endgame
    messages = [r.getMessage() for r in caplog.records if r.name == "bip_select.brain"]
    assert messages == ["end-game left: pieces to download became free again"]
    # A new seed asked for everything begins a new end-game, logged as such.
    caplog.clear()
    brain.handle(PeerJoined("c", fast=True), 0.0)
    brain.handle(PeerHaveAll("c"), 0.0)
    assert len(requests_to(brain.handle(PeerUnchokedUs("c"), 0.0), "c")) == 30
    messages = [r.getMessage() for r in caplog.records if r.name == "bip_select.brain"]
    assert messages == [
        "end-game: every block still missing is requested (pieces left: 16); "
        "duplicates go to idle peers"
    ]
    brain.check()
