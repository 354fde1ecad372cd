"""PieceDiscarded: a piece whose every block arrived but which the storage dropped unjudged
(bip_disk's PieceDiscarded: its write failed, or a fault stopped the storage first). Without
a verdict the brain would wait for one for ever and never ask for the piece again; told, it
fetches the piece again at once, and blames none of the peers that sent it.

A deadline piece wanted again (discarded, hashed bad or lost) is offered at once to the peers
that have it, whatever room their queues have, as a new deadline is; other pieces wait for
the refill batch (a quarter of a peer's queue drained)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from bip_select import (
    Action,
    Block,
    BlockReceived,
    DropPeer,
    LocalProtocolError,
    PeerHaveAll,
    PeerJoined,
    PeerUnchokedUs,
    PieceDeadlineSet,
    PieceDiscarded,
    PieceLost,
    PieceVerified,
    QueueConfig,
    SendRequest,
    Sequential,
    Streaming,
    SwarmBrain,
    TorrentGeometry,
)

GEOMETRY = TorrentGeometry(4, 32768)  # 4 pieces of 2 blocks
UNSTORED = 0  # the piece the storage drops


def requested(actions: Sequence[Action]) -> list[Block]:
    return [action.block for action in actions if isinstance(action, SendRequest)]


def downloaded_but_one() -> SwarmBrain:
    """A leecher that received every block from its seed ``"s"``: each piece verified good
    but :data:`UNSTORED`, of which no verdict came."""
    brain = SwarmBrain(GEOMETRY, rng=random.Random(1))
    brain.handle(PeerJoined("s", fast=True), 0.0)
    brain.handle(PeerHaveAll("s"), 0.0)
    pending = requested(brain.handle(PeerUnchokedUs("s"), 0.0))
    received: set[Block] = set()
    for _ in range(100):  # bounded: 8 blocks
        if not pending:
            break
        block = pending.pop(0)
        received.add(block)
        actions = brain.handle(BlockReceived("s", block), 0.5)
        piece = block.piece
        if piece != UNSTORED and set(GEOMETRY.blocks(piece)) <= received:
            actions += brain.handle(PieceVerified(piece, good=True), 0.5)
        pending += requested(actions)
    assert received == {block for piece in range(4) for block in GEOMETRY.blocks(piece)}
    assert brain.num_have == 3
    return brain


def test_without_a_verdict_the_piece_is_never_asked_for_again() -> None:
    # The gap PieceDiscarded closes: the brain waits for the verdict, an hour long.
    brain = downloaded_but_one()
    asked = [block for now in range(1, 3601, 10) for block in requested(brain.tick(float(now)))]
    assert asked == []
    assert not brain.has_piece(UNSTORED)


def test_a_discarded_piece_is_asked_for_again_at_once_blaming_no_one() -> None:
    brain = downloaded_but_one()
    trust = brain.queues.trust("s")
    actions = brain.handle(PieceDiscarded(UNSTORED), 1.0)
    assert not [action for action in actions if isinstance(action, DropPeer)]
    assert requested(actions) == list(GEOMETRY.blocks(UNSTORED))
    # Its data was never found bad: the peer keeps its trust, is on no parole, banned never.
    assert brain.queues.trust("s") == trust
    assert brain.queues.hash_failures("s") == 0
    assert not brain.queues.on_parole("s")
    assert not brain.is_banned("s")
    for block in GEOMETRY.blocks(UNSTORED):
        brain.handle(BlockReceived("s", block), 1.5)
    brain.handle(PieceVerified(UNSTORED, good=True), 2.0)
    assert brain.is_seed
    brain.check()


def test_discarding_a_piece_we_have_or_never_started_changes_little() -> None:
    brain = SwarmBrain(GEOMETRY, rng=random.Random(1), have={1})
    brain.handle(PeerJoined("s", fast=True), 0.0)
    assert brain.handle(PieceDiscarded(1), 0.0) == []  # had: a stale event
    assert brain.has_piece(1)
    assert brain.handle(PieceDiscarded(2), 0.0) == []  # nothing asked: nothing to free
    with pytest.raises(LocalProtocolError):
        brain.handle(PieceDiscarded(4), 0.0)
    brain.check()


# ---------------------------------------------------------------- deadline pieces wanted again

LONG = TorrentGeometry(32, 32768)  # 32 pieces of 2 blocks: more than a queue of 16 holds
URGENT = 0  # the deadline piece


def deep_brain(
    streaming: Streaming | None = None, have: frozenset[int] = frozenset()
) -> SwarmBrain:
    """A leecher whose seed ``"s"`` takes 16 requests, never more: a room of a few blocks is
    below the refill batch (a quarter of the queue), so only an unbatched fill uses it."""
    queueing = QueueConfig(initial_queue=16, min_queue=16, max_queue=16, ban_sole_contributor=False)
    selection = streaming if streaming is not None else Sequential()
    return SwarmBrain(LONG, rng=random.Random(1), queueing=queueing, selection=selection, have=have)


def seed_asked(brain: SwarmBrain) -> list[Block]:
    """Seed ``"s"`` joins and unchokes us; the 16 blocks asked of it."""
    brain.handle(PeerJoined("s", fast=True), 0.0)
    brain.handle(PeerHaveAll("s"), 0.0)
    asked = requested(brain.handle(PeerUnchokedUs("s"), 0.0))
    assert len(asked) == 16
    return asked


def received_urgent(deadline: bool) -> SwarmBrain:
    """:data:`URGENT` (with a deadline if ``deadline``) asked first of seed ``"s"`` and both
    its blocks received, leaving a room of two under 14 requests: below the batch."""
    brain = deep_brain()
    if deadline:
        brain.handle(PieceDeadlineSet(URGENT, 5.0), 0.0)
    asked = seed_asked(brain)
    assert asked[:2] == list(LONG.blocks(URGENT))
    for block in asked[:2]:
        assert requested(brain.handle(BlockReceived("s", block), 0.1)) == []  # no refill
    return brain


@pytest.mark.parametrize("deadline", [True, False])
def test_a_discarded_deadline_piece_is_asked_for_without_waiting_for_the_batch(
    deadline: bool,
) -> None:
    brain = received_urgent(deadline)
    asked = requested(brain.handle(PieceDiscarded(URGENT), 0.2))
    # The room of two, at once, for the deadline piece; without one, the batch rule holds.
    assert asked == (list(LONG.blocks(URGENT)) if deadline else [])
    assert brain.picker.requests.num_outstanding("s") == (16 if deadline else 14)
    brain.check()


def test_a_bad_deadline_piece_is_asked_for_without_waiting_for_the_batch() -> None:
    brain = received_urgent(deadline=True)
    actions = brain.handle(PieceVerified(URGENT, good=False), 0.2)
    assert not [action for action in actions if isinstance(action, DropPeer)]  # not banned
    assert requested(actions) == list(LONG.blocks(URGENT))
    assert brain.queues.on_parole("s")
    brain.check()


def test_a_lost_deadline_piece_is_asked_for_without_waiting_for_the_batch() -> None:
    # A piece had keeps a deadline only if the strategy gives it one: a user's own
    # Streaming layer, told directly (PieceDeadlineSet ignores a piece we have).
    streaming = Streaming(Sequential())
    brain = deep_brain(streaming, have=frozenset({URGENT}))
    asked = seed_asked(brain)
    assert URGENT not in {block.piece for block in asked}
    for block in asked[:2]:
        assert requested(brain.handle(BlockReceived("s", block), 0.1)) == []  # no refill
    streaming.set_deadline(URGENT, 5.0)
    assert requested(brain.handle(PieceLost(URGENT), 0.2)) == list(LONG.blocks(URGENT))
    assert not brain.has_piece(URGENT)
    brain.check()
