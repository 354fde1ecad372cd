"""SwarmBrain: peers whose requests were cancelled for a piece verified meanwhile are topped
up in the same step, and a have of a deadline piece is asked at once.

Requests cancelled because their piece was verified meanwhile (say, from a web seed) used to
leave those peers' pipelines short until their next block or the periodic refill
(``DEFAULT_REFILL_INTERVAL``); a have of a deadline piece from a peer that unchokes us waited
for the batch rule (a quarter of the queue drained). The losers of an end-game race still wait
for their next block or the refill. Sans-IO: every call at the same ``now`` unless a test
ticks, so no refill is due and whatever is asked is asked by the call itself.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from _brains import requests_to, starved_slow_peer

from bip_select._actions import Action, SendCancel, SendRequest
from bip_select._brain import DEFAULT_REFILL_INTERVAL, SwarmBrain
from bip_select._geometry import Block, TorrentGeometry
from bip_select._inputs import (
    AllowedFast,
    BlockReceived,
    PeerBitfield,
    PeerChokedUs,
    PeerHave,
    PeerHaveAll,
    PeerJoined,
    PeerUnchokedUs,
    PieceDeadlineSet,
    PieceVerified,
)
from bip_select._queueing import QueueConfig
from bip_select._selection import RarestFirst, Sequential, Streaming


def cancels_to(actions: Sequence[Action], peer: str) -> list[Block]:
    """The blocks cancelled at ``peer``, in order."""
    return [a.block for a in actions if isinstance(a, SendCancel) and a.peer == peer]


def sequential_brain(geometry: TorrentGeometry, depth: int) -> SwarmBrain:
    """A leecher asking pieces in index order, ``depth`` requests per peer."""
    config = QueueConfig(initial_queue=depth, min_queue=depth, max_queue=depth)
    return SwarmBrain(geometry, rng=random.Random(1), selection=Sequential(), queueing=config)


def end_game_duplicates(brain: SwarmBrain) -> list[Block]:
    """Seeds "b" then "a" join ``brain`` (a torrent of 16 blocks, 16 requests a peer) and
    unchoke it: "b" is asked for every block, then "a" for end-game duplicates: those."""
    brain.handle(PeerJoined("b", fast=True), 0.0)
    brain.handle(PeerHaveAll("b"), 0.0)
    assert len(requests_to(brain.handle(PeerUnchokedUs("b"), 0.0), "b")) == 16
    brain.handle(PeerJoined("a", fast=True), 0.0)
    brain.handle(PeerHaveAll("a"), 0.0)
    return requests_to(brain.handle(PeerUnchokedUs("a"), 0.0), "a")


def test_a_verified_piece_tops_up_its_cancelled_peers_in_the_same_call(
    picks: list[str],
) -> None:
    # "a" (unchoking) and "c" (fast, so its requests outlive its choke) share piece 0.
    geometry = TorrentGeometry(8, 65536)  # 4 blocks a piece
    brain = sequential_brain(geometry, 2)
    for peer in ("a", "c"):
        brain.handle(PeerJoined(peer, fast=True), 0.0)
        brain.handle(PeerHaveAll(peer), 0.0)
    blocks = list(geometry.blocks(0))
    assert requests_to(brain.handle(PeerUnchokedUs("a"), 0.0), "a") == blocks[:2]
    assert requests_to(brain.handle(PeerUnchokedUs("c"), 0.0), "c") == blocks[2:]
    assert brain.handle(PeerChokedUs("c"), 0.0) == []
    picks.clear()
    # Piece 0 verified before its blocks came (e.g. from a web seed).
    actions = brain.handle(PieceVerified(0, good=True), 0.0)
    assert cancels_to(actions, "a") == blocks[:2]
    assert cancels_to(actions, "c") == blocks[2:]
    # "a" is asked again at once, once for both its cancels; "c", choking us, is asked nothing.
    assert requests_to(actions, "a") == list(geometry.blocks(1))[:2]
    assert requests_to(actions, "c") == []
    assert picks == ["a"]
    # Every cancel comes before the requests that replace it.
    kinds = [type(a) for a in actions if isinstance(a, (SendCancel, SendRequest))]
    assert kinds == [SendCancel] * 4 + [SendRequest] * 2
    assert brain.picker.requests.num_outstanding("a") == 2
    brain.check()


def test_a_verified_piece_tops_up_a_choking_peer_from_its_allowed_fast_pieces(
    picks: list[str],
) -> None:
    # "c" chokes us but allows pieces 0 and 5 fast (BEP 6): it was asked for piece 0.
    geometry = TorrentGeometry(8, 65536)  # 4 blocks a piece
    brain = sequential_brain(geometry, 2)
    brain.handle(PeerJoined("c", fast=True), 0.0)
    brain.handle(PeerHaveAll("c"), 0.0)
    blocks = list(geometry.blocks(0))
    assert requests_to(brain.handle(AllowedFast("c", 0), 0.0), "c") == blocks[:2]
    assert requests_to(brain.handle(AllowedFast("c", 5), 0.0), "c") == []  # full
    picks.clear()
    actions = brain.handle(PieceVerified(0, good=True), 0.0)
    assert cancels_to(actions, "c") == blocks[:2]
    # Topped up at once, from its other allowed-fast piece (unchoked, it would be piece 1).
    assert requests_to(actions, "c") == list(geometry.blocks(5))[:2]
    assert picks == ["c"]
    brain.check()


def test_no_block_is_asked_twice_after_a_top_up() -> None:
    geometry = TorrentGeometry(8, 32768)  # 2 blocks a piece
    brain = sequential_brain(geometry, 4)
    brain.handle(PeerJoined("a", fast=True), 0.0)
    brain.handle(PeerHaveAll("a"), 0.0)
    first = requests_to(brain.handle(PeerUnchokedUs("a"), 0.0), "a")
    assert {block.piece for block in first} == {0, 1}
    actions = brain.handle(PieceVerified(1, good=True), 0.0)
    assert cancels_to(actions, "a") == list(geometry.blocks(1))
    again = requests_to(actions, "a")
    assert again == list(geometry.blocks(2))  # neither piece 0's blocks nor piece 1's
    requests = brain.picker.requests
    assert set(requests.outstanding("a")) == set(geometry.blocks(0)) | set(again)
    assert all(requests.requesters(block) == ("a",) for block in requests.outstanding("a"))
    brain.check()


def test_a_starved_peer_outside_end_game_costs_no_picker_run(picks: list[str]) -> None:
    # "b" was asked for pieces 0-7; "a" has those and piece 8, and was asked for piece 8 only
    # (starved: nothing else free). Piece 8 verified: a cancel frees no block, so the picker
    # would find nothing more for "a" (no end-game: pieces 9.. are untouched).
    geometry = TorrentGeometry(64, 32768)
    brain = SwarmBrain(geometry, rng=random.Random(1), queueing=QueueConfig(initial_queue=16))
    brain.handle(PeerJoined("b", fast=True), 0.0)
    brain.handle(PeerBitfield("b", frozenset(range(8))), 0.0)
    assert len(requests_to(brain.handle(PeerUnchokedUs("b"), 0.0), "b")) == 16
    brain.handle(PeerJoined("a", fast=True), 0.0)
    brain.handle(PeerBitfield("a", frozenset(range(9))), 0.0)
    asked = requests_to(brain.handle(PeerUnchokedUs("a"), 0.0), "a")
    assert asked == list(geometry.blocks(8))
    picks.clear()
    actions = brain.handle(PieceVerified(8, good=True), 0.0)
    assert cancels_to(actions, "a") == asked
    assert requests_to(actions, "a") == []
    assert picks == []
    assert brain.is_interested("a")
    brain.check()


def test_a_verified_piece_gives_its_starved_end_game_peer_new_duplicates() -> None:
    # "b", a seed, was asked for every block; "a" got an end-game duplicate of piece 0 (and
    # is starved: the picker gives it no more while it holds endgame_depth of them). Piece 0
    # verified from elsewhere (say, a web seed) cancels it: "a", now below its depth, gets a
    # new duplicate in the same call.
    geometry = TorrentGeometry(8, 32768)
    brain = SwarmBrain(geometry, rng=random.Random(1), queueing=QueueConfig(initial_queue=16))
    duplicates = end_game_duplicates(brain)
    assert duplicates == list(geometry.blocks(0))[: brain.picker.endgame_depth]
    actions = brain.handle(PieceVerified(0, good=True), 0.0)
    assert cancels_to(actions, "a") == duplicates
    assert cancels_to(actions, "b") == list(geometry.blocks(0))
    again = requests_to(actions, "a")
    assert len(again) == brain.picker.endgame_depth == 1
    requests = brain.picker.requests
    assert all(set(requests.requesters(block)) == {"a", "b"} for block in again)
    assert requests_to(actions, "b") == []
    brain.check()


def test_a_verified_piece_asks_a_starved_peer_for_a_deadline_piece_it_now_makes() -> None:
    # "a" (one block a second) was asked for pieces 10 and 11, all it has: starved. It
    # then announces piece 20, due at 3 s: behind its 4 requests it would deliver at 5 s,
    # and "f" (choking us) is faster, so the picker refuses it. Piece 10 verified from
    # elsewhere cancels two of them: at 3 s it now makes it, so the starved "a" is asked
    # again (a cancel frees no block: only a deadline or an end-game duplicate can change
    # the picker's answer for a starved peer).
    geometry = TorrentGeometry(64, 32768)
    brain = starved_slow_peer(geometry, Streaming())
    assert brain.handle(PieceDeadlineSet(20, 3.0), 0.0) == []  # only "f" has it
    assert requests_to(brain.handle(PeerHave("a", 20), 0.0), "a") == []  # too slow
    actions = brain.handle(PieceVerified(10, good=True), 0.0)
    assert cancels_to(actions, "a") == list(geometry.blocks(10))
    assert requests_to(actions, "a") == list(geometry.blocks(20))
    assert requests_to(actions, "f") == []
    brain.check()


def test_a_deadline_held_by_an_inner_streaming_layer_counts_for_the_top_up() -> None:
    # As above, but the deadline is the given strategy's own, held by an inner Streaming
    # layer the outer one does not see: the top-up still asks the starved "a" again.
    geometry = TorrentGeometry(64, 32768)
    inner = Streaming()
    selection = Streaming(then=inner)
    brain = starved_slow_peer(geometry, selection)
    inner.set_deadline(20, 3.0)
    assert selection.deadlines() == {}
    assert brain.picker.has_deadlines()
    assert requests_to(brain.handle(PeerHave("a", 20), 0.0), "a") == []  # too slow
    actions = brain.handle(PieceVerified(10, good=True), 0.0)
    assert cancels_to(actions, "a") == list(geometry.blocks(10))
    assert requests_to(actions, "a") == list(geometry.blocks(20))
    brain.check()


def test_an_end_game_loser_is_not_topped_up_before_the_refill(picks: list[str]) -> None:
    """The loser of an end-game race waits for its next block or the refill, as before.

    Topping it up in the same call (new duplicates at once) was tried and measured: it
    lengthened the end-game tail in benchmarks/swarm_sim.py (super-seeding, seeds 0-3: the
    largest share of a leecher's time spent on its last 1% of pieces went from 2.84% to
    3.69%, worse on every seed).
    """
    # "b", a seed, was asked for every block; "a" got an end-game duplicate of one of them.
    geometry = TorrentGeometry(8, 32768)
    brain = SwarmBrain(geometry, rng=random.Random(1), queueing=QueueConfig(initial_queue=16))
    brain.tick(0.0)  # the first refill: the next is due a refill interval later
    duplicates = end_game_duplicates(brain)
    assert len(duplicates) == brain.picker.endgame_depth == 1
    requests = brain.picker.requests
    picks.clear()
    actions = brain.handle(BlockReceived("b", duplicates[0]), 0.0)  # "b" wins the race
    assert cancels_to(actions, "a") == [duplicates[0]]
    assert requests_to(actions, "a") == []
    assert picks == []  # no picker run for "a" either
    assert requests.num_outstanding("a") == 0
    # Nothing for "a" before the refill is due; the refill tops it up.
    assert requests_to(brain.tick(DEFAULT_REFILL_INTERVAL / 2), "a") == []
    again = requests_to(brain.tick(DEFAULT_REFILL_INTERVAL), "a")
    assert len(again) == 1
    assert again[0] != duplicates[0]
    assert set(requests.requesters(again[0])) == {"a", "b"}
    assert requests.num_outstanding("a") == 1
    brain.check()


def test_a_have_of_a_deadline_piece_is_asked_at_once_past_the_batch() -> None:
    geometry = TorrentGeometry(64, 32768)
    brain = SwarmBrain(geometry, rng=random.Random(1), queueing=QueueConfig(initial_queue=16))
    brain.handle(PeerJoined("a", fast=True), 0.0)
    brain.handle(PeerBitfield("a", frozenset(range(32))), 0.0)
    first = requests_to(brain.handle(PeerUnchokedUs("a"), 0.0), "a")
    assert len(first) == 16
    # One block in: 15 out of 17 (slow start), room 2 < a quarter: the batch waits.
    assert requests_to(brain.handle(BlockReceived("a", first[0]), 0.0), "a") == []
    assert brain.queues.desired_depth("a", 0.0) - brain.picker.requests.num_outstanding("a") == 2
    assert brain.handle(PieceDeadlineSet(40, 5.0), 0.0) == []  # nobody has it yet
    # A plain have waits for the batch...
    assert requests_to(brain.handle(PeerHave("a", 41), 0.0), "a") == []
    # ...a have of the deadline piece takes the room there is.
    assert requests_to(brain.handle(PeerHave("a", 40), 0.0), "a") == list(geometry.blocks(40))
    assert brain.picker.requests.num_outstanding("a") == 17
    brain.check()


def test_a_have_of_a_deadline_piece_takes_an_allowed_fast_slot_past_the_batch() -> None:
    # "c" chokes us and allows pieces 2-5 and 40-41 fast: pieces 2-5 filled its pipe (8).
    geometry = TorrentGeometry(64, 32768)
    config = QueueConfig(initial_queue=8, min_queue=8, max_queue=8)  # batch point: room 2
    brain = SwarmBrain(geometry, rng=random.Random(1), queueing=config)
    brain.handle(PeerJoined("c", fast=True), 0.0)
    brain.handle(PeerBitfield("c", frozenset(range(2, 6))), 0.0)
    first: list[Block] = []
    for piece in (2, 3, 4, 5, 40, 41):
        first += requests_to(brain.handle(AllowedFast("c", piece), 0.0), "c")
    assert {block.piece for block in first} == {2, 3, 4, 5}
    assert len(first) == 8
    # One block in: room 1, below the batch point.
    assert requests_to(brain.handle(BlockReceived("c", first[0]), 0.0), "c") == []
    assert brain.handle(PieceDeadlineSet(40, 5.0), 0.0) == []  # nobody has it yet
    # A have of a plain allowed-fast piece waits for the batch...
    assert requests_to(brain.handle(PeerHave("c", 41), 0.0), "c") == []
    # ...one of an allowed-fast deadline piece takes the room there is, choked or not.
    assert requests_to(brain.handle(PeerHave("c", 40), 0.0), "c") == list(geometry.blocks(40))[:1]
    assert brain.picker.requests.num_outstanding("c") == 8
    brain.check()


def test_haves_from_a_choking_peer_look_up_no_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # The hot path: most haves come from peers that choke us, and ask nothing of them.
    geometry = TorrentGeometry(64, 32768)
    brain = SwarmBrain(geometry, rng=random.Random(1), selection=RarestFirst())
    brain.handle(PeerJoined("a", fast=True), 0.0)
    brain.handle(PeerBitfield("a", frozenset({0})), 0.0)
    assert brain.is_interested("a")
    lookups: list[int] = []
    original = RarestFirst.deadline

    def counting(self: RarestFirst, piece: int) -> float | None:
        lookups.append(piece)
        return original(self, piece)

    monkeypatch.setattr(RarestFirst, "deadline", counting)
    for piece in range(1, geometry.num_pieces):
        assert brain.handle(PeerHave("a", piece), 0.0) == []
    assert lookups == []
    brain.check()


def test_a_have_of_a_deadline_piece_from_a_choking_peer_asks_nothing(
    picks: list[str],
) -> None:
    geometry = TorrentGeometry(64, 32768)
    brain = SwarmBrain(geometry, rng=random.Random(1))
    brain.handle(PeerJoined("a", fast=True), 0.0)
    brain.handle(PeerBitfield("a", frozenset({0})), 0.0)
    brain.handle(PieceDeadlineSet(40, 5.0), 0.0)
    assert requests_to(brain.handle(PeerHave("a", 40), 0.0), "a") == []
    assert picks == []
    assert requests_to(brain.handle(PeerUnchokedUs("a"), 0.0), "a")[:2] == list(geometry.blocks(40))
    brain.check()
