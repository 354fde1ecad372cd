"""PieceDiscarded: a piece whose every block arrived but which the storage dropped unjudged
(bip_disk's PieceDiscarded: its write failed, or a fault stopped the storage first). Without
a verdict the brain would wait for one for ever and never ask for the piece again; told, it
fetches the piece again at once, and blames none of the peers that sent it."""

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
    PieceDiscarded,
    PieceVerified,
    SendRequest,
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
