"""SwarmBrain end-game: the work per received block does not grow with the peer count.

A hunt found end-game costing about the cube of the peer count: every second or third block
received started a fresh refill pass over every peer (a new epoch), each pick walked every
started piece (``in_endgame`` and the started-pieces loop) and every outstanding block (the
duplicate choice). Work is counted here, not time: picker runs, the pieces the picks and the
end-game test walk, and the pieces the duplicate choice looks at, per block received, at two
peer counts.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Hashable, Iterator

import pytest

from bip_select._actions import Action, SendCancel, SendRequest
from bip_select._brain import SwarmBrain
from bip_select._geometry import Block, TorrentGeometry
from bip_select._inputs import (
    BlockReceived,
    PeerBitfield,
    PeerHaveAll,
    PeerJoined,
    PeerUnchokedUs,
    PieceVerified,
)
from bip_select._queueing import QueueConfig
from bip_select._requests import RequestBook
from bip_select._selection import PiecePicker, Sequential

BLOCKS_PER_PIECE = 4
PIECES = 256


class Work:
    """Counters of the work done, by kind."""

    def __init__(self) -> None:
        self.picks = 0
        self.pieces_walked = 0  # started pieces yielded to the picker (its loops, in_endgame)
        # Pieces the duplicate choice asked ``peer_has`` about (its scan: every started
        # piece, and every outstanding block of the ones the peer has, before the mend).
        # Its ``arrived`` test is not counted: asked for each requester of a block it
        # returns, it grows with the copies of the last blocks, as many as idle peers.
        self.looked_at = 0

    @property
    def total(self) -> int:
        return self.picks + self.pieces_walked + self.looked_at


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> Work:
    """Counts the picker's runs and what its end-game walks look at."""
    counted = Work()
    pick, started, candidates = (
        PiecePicker.pick,
        RequestBook.started_pieces,
        RequestBook.duplicate_candidates,
    )

    def counting_pick(self: PiecePicker, *args: object, **kwargs: object) -> list[Block]:
        counted.picks += 1
        return pick(self, *args, **kwargs)  # type: ignore[arg-type]

    def counting_started(self: RequestBook) -> Iterator[int]:
        for piece in started(self):
            counted.pieces_walked += 1
            yield piece

    def counting_candidates(
        self: RequestBook,
        peer: Hashable,
        peer_has: Callable[[int], bool],
        limit: int,
        arrived: Callable[[Hashable, Block], bool] | None = None,
    ) -> list[Block]:
        def has(piece: int) -> bool:
            counted.looked_at += 1
            return peer_has(piece)

        return candidates(self, peer, has, limit, arrived)

    monkeypatch.setattr(PiecePicker, "pick", counting_pick)
    monkeypatch.setattr(RequestBook, "started_pieces", counting_started)
    monkeypatch.setattr(RequestBook, "duplicate_candidates", counting_candidates)
    return counted


def end_game(peers: int, work: Work) -> tuple[int, int]:
    """``peers`` seeds, as many pieces left as peers, every request answered in the order it
    was sent (duplicates too); returns (blocks handled, work done while handling them)."""
    geometry = TorrentGeometry(PIECES, BLOCKS_PER_PIECE * 16384)
    brain = SwarmBrain(geometry, rng=random.Random(2), have=range(peers, PIECES))
    pending: deque[SendRequest] = deque()
    for index in range(peers):
        peer = f"p{index}"
        brain.handle(PeerJoined(peer, fast=True), 0.0)
        brain.handle(PeerHaveAll(peer), 0.0)
        for action in brain.handle(PeerUnchokedUs(peer), 0.0):
            if isinstance(action, SendRequest):
                pending.append(action)
    assert brain.statistics().endgame
    before = work.total
    received: dict[int, set[Block]] = {}
    handled = 0
    now = 0.0
    while pending and not brain.is_complete:
        request = pending.popleft()
        piece = request.block.piece
        if brain.has_piece(piece):
            continue
        now += 0.001
        actions = brain.handle(BlockReceived(request.peer, request.block), now)
        handled += 1
        blocks = received.setdefault(piece, set())
        blocks.add(request.block)
        if len(blocks) == BLOCKS_PER_PIECE:
            actions += brain.handle(PieceVerified(piece, True), now)
        pending.extend(a for a in actions if isinstance(a, SendRequest))
        assert handled < 50 * BLOCKS_PER_PIECE * peers
    done = work.total - before
    assert brain.is_complete
    brain.check()
    return handled, done


def test_end_game_work_per_block_does_not_grow_with_the_peer_count(work: Work) -> None:
    few_blocks, few_work = end_game(16, work)
    many_blocks, many_work = end_game(64, work)
    few, many = few_work / few_blocks, many_work / many_blocks
    # Four times the peers (and pieces left): about the same work per block (the races for
    # the last blocks grow a little with the peers). Before the mend: 34 units per block at
    # 16 peers, 281 at 64; after it: 3.6 and 4.4.
    assert many <= 1.5 * few + 2, (few, many)


def requests_to(actions: list[Action], peer: str) -> list[Block]:
    """The blocks asked of ``peer``, in order."""
    return [a.block for a in actions if isinstance(a, SendRequest) and a.peer == peer]


def sequential_end_game() -> tuple[SwarmBrain, list[Action]]:
    """Three pieces of two blocks, in order: seed "a" was asked for pieces 0 and 1; "c" has
    only piece 0, so nothing was left for it; then seed "b" unchokes us and takes the last
    free blocks (piece 2), which begins end-game. Returns the brain and b's unchoke's
    actions."""
    geometry = TorrentGeometry(3, 32768)
    config = QueueConfig(initial_queue=4, min_queue=4, max_queue=4)
    brain = SwarmBrain(geometry, rng=random.Random(1), selection=Sequential(), queueing=config)
    for peer in ("a", "b", "c"):
        brain.handle(PeerJoined(peer, fast=True), 0.0)
    brain.handle(PeerHaveAll("a"), 0.0)
    brain.handle(PeerHaveAll("b"), 0.0)
    brain.handle(PeerBitfield("c", frozenset({0})), 0.0)
    assert requests_to(brain.handle(PeerUnchokedUs("a"), 0.0), "a") == [
        *geometry.blocks(0),
        *geometry.blocks(1),
    ]
    assert requests_to(brain.handle(PeerUnchokedUs("c"), 0.0), "c") == []  # nothing free
    assert not brain.statistics().endgame
    actions = brain.handle(PeerUnchokedUs("b"), 0.0)
    assert requests_to(actions, "b") == list(geometry.blocks(2))
    return brain, actions


def test_idle_peers_get_duplicates_in_the_step_end_game_begins() -> None:
    # Once per end-game, whichever step begins it: "c", idle, takes a duplicate of piece 0
    # at once (before the mend it waited for a block to arrive, or for the refill).
    brain, actions = sequential_end_game()
    assert brain.statistics().endgame
    assert requests_to(actions, "c") == [Block(0, 0, 16384)]
    assert requests_to(actions, "a") == []  # it has requests out: no duplicate
    brain.check()


def test_a_peer_that_ran_dry_in_end_game_takes_a_duplicate_at_its_block(picks: list[str]) -> None:
    # "c" wins the race for its duplicate: nothing left out, it takes the next duplicate at
    # once (before the mend, starved this epoch, it waited for another peer's block to
    # start a pass over every peer). Only "c" is asked: "a", the loser, waits for the refill.
    brain, _ = sequential_end_game()
    picks.clear()
    actions = brain.handle(BlockReceived("c", Block(0, 0, 16384)), 0.5)
    assert [a.block for a in actions if isinstance(a, SendCancel)] == [Block(0, 0, 16384)]
    assert requests_to(actions, "c") == [Block(0, 16384, 16384)]
    assert picks == ["c"]
    assert set(brain.picker.requests.requesters(Block(0, 16384, 16384))) == {"a", "c"}
    brain.check()
