"""Blocks that arrived and wait for our disk (BlockArrived) are no longer the peer's to
deliver: a disk stall blames no peer; a block we drop ourselves (BlockDropped) is asked
again without penalty."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from bip_select._actions import Action, SendCancel, SendRequest
from bip_select._brain import SwarmBrain
from bip_select._errors import LocalProtocolError
from bip_select._geometry import Block, TorrentGeometry
from bip_select._inputs import (
    AllowedFast,
    BlockArrived,
    BlockDropped,
    BlockReceived,
    BlockRejected,
    PeerChokedUs,
    PeerHave,
    PeerHaveAll,
    PeerJoined,
    PeerUnchokedUs,
    PieceVerified,
    RequestTimedOut,
)
from bip_select._queueing import PeerQueues

GEOMETRY = TorrentGeometry(8, 32768)  # 8 pieces of 2 blocks


def brain() -> SwarmBrain:
    return SwarmBrain(GEOMETRY, rng=random.Random(1))


def requests(actions: Sequence[Action], peer: str) -> list[Block]:
    return [a.block for a in actions if isinstance(a, SendRequest) and a.peer == peer]


def cancels(actions: Sequence[Action]) -> list[SendCancel]:
    return [a for a in actions if isinstance(a, SendCancel)]


def leecher_of(peer: str) -> tuple[SwarmBrain, list[Block]]:
    """A brain that asked ``peer`` (a seed that unchoked it at 0) for blocks."""
    b = brain()
    b.handle(PeerJoined(peer, fast=True), 0.0)
    b.handle(PeerHaveAll(peer), 0.0)
    asked = requests(b.handle(PeerUnchokedUs(peer), 0.0), peer)
    assert len(asked) >= 2
    return b, asked


def test_a_peer_whose_block_waits_for_the_disk_is_not_snubbed() -> None:
    """One block arrived at 1 s and waits 120 s for the disk: the peer (paused by us, say,
    so its other requests wait too) is neither snubbed nor timed out meanwhile. Once the
    block is stored, its clocks count from then: 60 s more before anything expires."""
    b, asked = leecher_of("s")
    assert b.handle(BlockArrived("s", asked[0]), 1.0) == []
    assert b.queues.is_waiting("s", asked[0])
    for now in (30.0, 61.0, 90.0, 121.0):
        assert not cancels(b.tick(now))
    assert not b.queues.is_snubbed("s")
    assert set(b.picker.requests.outstanding("s")) == set(asked)
    assert not b.picker.requests.is_received(asked[0])  # arrived, not received
    b.handle(BlockReceived("s", asked[0]), 121.0)
    assert b.picker.requests.is_received(asked[0])
    assert not b.queues.is_waiting("s", asked[0])
    assert not cancels(b.tick(180.0))
    assert not b.queues.is_snubbed("s")
    late = cancels(b.tick(182.0))  # 61 s after the store: the rest are late now
    assert set(asked[1:]) <= {a.block for a in late}
    assert b.queues.is_snubbed("s")
    b.check()


def test_without_an_arrival_the_stall_is_blamed_on_the_peer() -> None:
    """The same stall unreported: the peer is snubbed at 60 s (what BlockArrived mends)."""
    b, asked = leecher_of("s")
    assert {a.block for a in cancels(b.tick(61.0))} == set(asked)
    assert b.queues.is_snubbed("s")


def test_no_cancel_for_a_block_that_arrived() -> None:
    """An end-game race: the block arrived from "b" (waiting for the disk) when "a"'s copy
    is stored; "b" gets no cancel. Nor does a client timer or a verified piece cancel a
    block that arrived."""
    b = SwarmBrain(TorrentGeometry(1, 32768), rng=random.Random(1))  # 1 piece of 2 blocks
    for peer in ("a", "b"):
        b.handle(PeerJoined(peer, fast=True), 0.0)
        b.handle(PeerHave(peer, 0), 0.0)
    asked_a = requests(b.handle(PeerUnchokedUs("a"), 0.0), "a")
    [block] = requests(b.handle(PeerUnchokedUs("b"), 0.0), "b")  # an end-game duplicate
    assert set(asked_a) == set(GEOMETRY.blocks(0))
    b.handle(BlockArrived("b", block), 1.0)
    assert b.handle(RequestTimedOut("b", block), 2.0) == []
    assert block in b.picker.requests.outstanding("b")
    assert SendCancel("b", block) not in b.handle(BlockReceived("a", block), 2.0)
    # The other block arrived from "a" too; the piece verifies (from a web seed, say)
    # before it is stored: no cancel for it.
    [other] = [blk for blk in asked_a if blk != block]
    b.handle(BlockArrived("a", other), 3.0)
    assert SendCancel("a", other) not in b.handle(PieceVerified(0, good=True), 3.0)
    # The copies that waited are stored later: they settle, blaming nobody.
    b.handle(BlockReceived("b", block), 4.0)
    b.handle(BlockReceived("a", other), 4.0)
    assert not b.queues.is_waiting("b", block)
    assert not b.queues.is_waiting("a", other)
    b.check()


def test_a_dropped_block_is_asked_again_without_revoking_allowed_fast() -> None:
    """A fast peer that chokes us serves an allowed-fast piece; we drop a block of it (our
    disk queue is full): the block is asked again (of it: it still allows the piece)."""
    b = brain()
    b.handle(PeerJoined("s", fast=True), 0.0)
    b.handle(PeerHaveAll("s"), 0.0)
    asked = requests(b.handle(AllowedFast("s", 6), 0.0), "s")
    block = asked[0]
    actions = b.handle(BlockDropped("s", block), 1.0)
    assert b.picker.is_allowed_fast("s", 6)
    assert block in requests(actions, "s")
    assert not b.queues.is_snubbed("s")
    # A reject of the same block from the choking peer revokes the piece (BEP 6).
    assert b.handle(BlockRejected("s", block), 2.0) == []
    assert not b.picker.is_allowed_fast("s", 6)
    b.check()


def test_a_dropped_block_that_arrived_settles_and_is_asked_again() -> None:
    b, asked = leecher_of("s")
    b.handle(BlockArrived("s", asked[0]), 1.0)
    actions = b.handle(BlockDropped("s", asked[0]), 2.0)
    assert not b.queues.is_waiting("s", asked[0])
    assert asked[0] in requests(actions, "s")  # it has room again: asked at once
    # Its clocks run again from the drop (2 s): nothing is late before 62 s.
    assert not cancels(b.tick(61.5))
    assert cancels(b.tick(62.5))
    b.check()


def test_nonsense_arrivals_and_drops_change_nothing() -> None:
    b, asked = leecher_of("s")
    not_asked = Block(7, 16384, 16384)
    for event in (
        BlockArrived("s", not_asked),
        BlockArrived("s", Block(0, 1, 2)),
        BlockDropped("s", Block(99, 0, 16384)),
        BlockDropped("s", not_asked),
    ):
        assert b.handle(event, 1.0) == []
    assert not b.queues.is_waiting("s", not_asked)
    b.handle(PeerChokedUs("s"), 1.0)
    for event in (BlockArrived("x", asked[0]), BlockDropped("x", asked[0])):
        with pytest.raises(LocalProtocolError):
            b.handle(event, 1.0)
    b.check()


def test_queues_hold_a_peer_while_its_blocks_wait() -> None:
    queues = PeerQueues()
    queues.add_peer("p", now=0.0)
    first, second = Block(0, 0, 16384), Block(0, 16384, 16384)
    queues.block_arrived("p", first, 1.0)
    queues.block_arrived("p", second, 2.0)
    queues.block_settled("p", first, 50.0)
    assert queues.is_waiting("p", second)
    assert not queues.is_waiting("p", first)
    queues.block_settled("p", second, 70.0)
    queues.block_settled("p", second, 80.0)  # settled twice: nothing more
    queues.block_settled("gone", second, 80.0)  # a peer that left: nothing
    assert not queues.is_waiting("p", second)
    with pytest.raises(LocalProtocolError):
        queues.block_arrived("gone", first, 1.0)


def test_a_malformed_block_is_never_waiting() -> None:
    b, asked = leecher_of("s")
    b.handle(BlockArrived("s", asked[0]), 1.0)
    odd = Block([0], 0, 16384)  # type: ignore[arg-type]
    assert not b.queues.is_waiting("s", odd)
    b.handle(BlockReceived("s", odd), 2.0)  # ignored by the book, settles nothing
    assert b.queues.is_waiting("s", asked[0])
