"""A request the connection refuses because the peer took its piece back (``lt_donthave``, or a
bitfield replacing what it said, read before the brain heard of it) goes back to the brain at
once (:meth:`bip._client._swarm.Swarm.carry_out`), as one a fast peer's choke refused does: the
peer never saw it, so nothing would ever answer it, and it held its block for the brain's 60 s
request timeout. The brain hears the piece is gone first, so it does not ask that peer for it
again; another peer that has it is asked at once.

The tests drive a real brain and real :class:`~bip_peer.PeerConnection` objects (the refusals
are bip_peer's own) behind a stand-in for the peer manager, under trio's MockClock.
"""

from __future__ import annotations

import random
from typing import cast

import trio
import trio.testing
from _swarm_fakes import FAST, PLAIN, FakeManager, FakePeer, connection, donthave, read

from bip._client._swarm import Swarm
from bip_handshake import Extensions
from bip_peer import (
    Bitfield,
    Have,
    HaveAll,
    Peer,
    PeerConnection,
    PeerManager,
    Unchoke,
)
from bip_select import (
    BLOCK_SIZE,
    Block,
    PeerDontHave,
    PeerHave,
    PeerHaveAll,
    PeerJoined,
    PeerUnchokedUs,
    SwarmBrain,
    TorrentGeometry,
)

PIECES = 4  # one block each: the second peer's first queue (4) takes the rest
ZERO = Block(0, 0, BLOCK_SIZE)


class Arena:
    """A swarm of a brain for :data:`PIECES` one-block pieces, its peers joined one by one."""

    def __init__(self) -> None:
        brain = SwarmBrain(TorrentGeometry(PIECES, BLOCK_SIZE), rng=random.Random(1))
        self.manager = FakeManager()
        self.swarm = Swarm(cast(PeerManager, self.manager), brain, on_banned=lambda peer: None)

    def join(self, ours: PeerConnection) -> Peer:
        fake = FakePeer(ours)
        self.manager.peers.add(fake)
        peer = cast(Peer, fake)
        self.swarm.joined.add(peer)
        self.swarm.feed(PeerJoined(peer, fast=ours.fast), trio.current_time())
        return peer

    def feed(self, *events: PeerHave | PeerHaveAll | PeerUnchokedUs | PeerDontHave) -> None:
        for event in events:
            self.swarm.feed(event, trio.current_time())

    def outstanding(self, peer: Peer, block: Block = ZERO) -> bool:
        return peer in self.swarm.brain.picker.requests.requesters(block)


def requested(ours: PeerConnection) -> set[int]:
    return {index for index, _, _ in ours.our_requests}


async def _taken_back_then_asked_elsewhere(extensions: Extensions) -> None:
    arena = Arena()
    # The first peer had piece 0 only, then took it back: the connection read it all, the
    # brain heard only the have and the unchoke, so it asks that peer for piece 0.
    first = connection(PIECES, extensions)
    read(first, Bitfield(b"\x80"), Unchoke(), donthave(0))
    lender = arena.join(first)
    arena.feed(PeerHave(lender, 0), PeerUnchokedUs(lender))
    assert [error.choked for error in arena.manager.refused] == [False]
    assert not first.our_requests
    assert not arena.outstanding(lender)  # back in the pool at once, not pending for 60 s
    # A seed comes: piece 0 is asked of it with the others, well before any timeout.
    second = connection(PIECES, extensions)
    read(second, Bitfield(b"\xf0"), Unchoke())
    seed = arena.join(second)
    arena.feed(PeerHaveAll(seed), PeerUnchokedUs(seed))
    await trio.sleep(5.0)
    arena.swarm.tick(trio.current_time())
    assert requested(second) == set(range(PIECES))
    assert arena.outstanding(seed)
    # The brain never asked the first peer for piece 0 again; its own event is no news.
    assert len(arena.manager.refused) == 1
    arena.feed(PeerDontHave(lender, 0))
    assert not first.our_requests
    assert requested(second) == set(range(PIECES))


async def test_a_block_taken_back_by_a_fast_peer_is_asked_of_another_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    await _taken_back_then_asked_elsewhere(FAST)


async def test_a_block_taken_back_by_a_plain_peer_is_asked_of_another_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Without BEP 6 too: the brain's lt_donthave keeps requests the peer saw (it may still
    # answer them), and this one it never saw.
    await _taken_back_then_asked_elsewhere(PLAIN)


async def test_a_seed_taking_a_piece_back_is_asked_for_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One peer alone: the piece it took back waits for someone who has it, the other pieces
    # are asked of it as usual, and nothing is asked twice.
    arena = Arena()
    ours = connection(PIECES)
    read(ours, HaveAll(), Unchoke(), donthave(2))
    peer = arena.join(ours)
    arena.feed(PeerHaveAll(peer), PeerUnchokedUs(peer))
    assert requested(ours) == {0, 1, 3}
    assert len(arena.manager.refused) == 1
    assert not arena.outstanding(peer, Block(2, 0, BLOCK_SIZE))
    assert arena.swarm.brain.picker.requests.num_outstanding(peer) == 3
    # It has the piece again: asked for it too, once the brain fills the peer's queue.
    read(ours, Have(2))
    arena.feed(PeerHave(peer, 2))
    await trio.sleep(1.0)
    arena.swarm.tick(trio.current_time())
    assert requested(ours) == {0, 1, 2, 3}
    assert not arena.swarm._unsent
