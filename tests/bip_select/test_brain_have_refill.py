"""SwarmBrain: a have from a peer that unchokes us and had nothing more for us is asked at once.

A leecher interested in a peer that unchokes it, with every block that peer has asked of
others, used to wait for the periodic refill (up to ``DEFAULT_REFILL_INTERVAL``) before asking
for a piece the peer announces next; a seed revealing pieces one at a time (super-seeding) made
that an idle second per piece. Sans-IO: every call at the same ``now``, so no refill is due.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from bip_select._actions import Action, SendRequest
from bip_select._brain import SwarmBrain
from bip_select._geometry import Block, TorrentGeometry
from bip_select._inputs import (
    BlockReceived,
    PeerBitfield,
    PeerHave,
    PeerHaveAll,
    PeerJoined,
    PeerUnchokedUs,
)
from bip_select._queueing import QueueConfig
from bip_select._selection import PiecePicker

GEOMETRY = TorrentGeometry(8, 32768)  # 8 pieces of 2 blocks


def requests_to(actions: Sequence[Action], peer: str) -> list[Block]:
    """The blocks requested of ``peer``, in order (failing on a request to anyone else)."""
    sent = [a for a in actions if isinstance(a, SendRequest)]
    assert all(a.peer == peer for a in sent), sent
    return [a.block for a in sent]


@pytest.fixture
def picks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the picker runs (PiecePicker.pick calls): the work a have may cost."""
    calls: list[str] = []
    original = PiecePicker.pick

    def counting(
        self: PiecePicker,
        peer: str,
        count: int,
        now: float,
        *,
        choked: bool = False,
        exclusive: bool = False,
    ) -> list[Block]:
        calls.append(peer)
        return original(self, peer, count, now, choked=choked, exclusive=exclusive)

    monkeypatch.setattr(PiecePicker, "pick", counting)
    return calls


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
    for piece in range(1, 8):
        assert requests_to(brain.handle(PeerHave("a", piece), 0.0), "a") == []
    assert picks == []
    # The pieces are not forgotten: the unchoke asks for them.
    assert requests_to(brain.handle(PeerUnchokedUs("a"), 0.0), "a")
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
    assert asked == list(GEOMETRY.blocks(1))
    assert all(set(brain.picker.requests.requesters(b)) == {"a", "b"} for b in asked)
    brain.check()
