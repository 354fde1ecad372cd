"""A block that arrived and waits for our disk (BlockArrived) ends a snub, as a stored one
does, and is kept through a choke without the fast extension: it is no longer a request."""

from __future__ import annotations

import random
from collections.abc import Sequence

from bip_select._actions import Action, DropPeer, SendRequest
from bip_select._brain import SwarmBrain
from bip_select._geometry import Block, TorrentGeometry
from bip_select._inputs import (
    BlockArrived,
    BlockDropped,
    BlockReceived,
    PeerChokedUs,
    PeerHaveAll,
    PeerJoined,
    PeerUnchokedUs,
)

GEOMETRY = TorrentGeometry(8, 32768)  # 8 pieces of 2 blocks


def requests(actions: Sequence[Action], peer: str) -> list[Block]:
    return [a.block for a in actions if isinstance(a, SendRequest) and a.peer == peer]


def seeds(*peers: str, fast: bool = False, drop_after: float | None = None) -> SwarmBrain:
    """A leecher with ``peers`` (seeds, choking us) joined at 0."""
    brain = SwarmBrain(GEOMETRY, rng=random.Random(1), drop_snubbed_after=drop_after)
    for peer in peers:
        brain.handle(PeerJoined(peer, fast=fast), 0.0)
        brain.handle(PeerHaveAll(peer), 0.0)
    return brain


def test_an_arrival_ends_a_snub_and_its_drop_timer() -> None:
    """Snubbed at 60 s, the peer's next block arrives at 70 s and waits for our disk past
    the drop limit: the peer is no longer snubbed, and is not dropped."""
    b = seeds("s", drop_after=30.0)
    asked = requests(b.handle(PeerUnchokedUs("s"), 0.0), "s")
    (again,) = requests(b.tick(60.0), "s")  # its requests timed out; one is asked again
    assert b.queues.is_snubbed("s")
    assert b.handle(BlockArrived("s", again), 70.0) == []
    assert not b.queues.is_snubbed("s")
    assert not any(isinstance(a, DropPeer) for a in b.tick(95.0))
    assert not any(isinstance(a, DropPeer) for a in b.tick(200.0))
    assert "s" in b.peers
    assert not b.queues.is_snubbed("s")
    b.handle(BlockReceived("s", again), 201.0)
    assert asked  # it was asked at the unchoke, before the snub
    b.check()


def test_a_choke_keeps_a_block_that_waits_for_the_disk() -> None:
    """Without the fast extension a choke drops every request but the block that arrived:
    it is asked of nobody else, and counts once stored."""
    b = seeds("s", "t")
    asked = requests(b.handle(PeerUnchokedUs("s"), 0.0), "s")
    b.handle(BlockArrived("s", asked[0]), 1.0)
    b.handle(PeerChokedUs("s"), 2.0)
    book = b.picker.requests
    assert list(book.outstanding("s")) == [asked[0]]
    assert book.requesters(asked[0]) == ("s",)
    for block in asked[1:]:
        assert book.requesters(block) == ()  # the rest are free again
    assert b.queues.is_waiting("s", asked[0])
    to_t = requests(b.handle(PeerUnchokedUs("t"), 3.0), "t")
    assert to_t
    assert asked[0] not in to_t
    b.handle(BlockReceived("s", asked[0]), 4.0)
    assert book.is_received(asked[0])
    assert book.sources(asked[0].piece) == {"s": 1}
    assert book.num_outstanding("s") == 0
    b.check()


def test_a_kept_block_the_disk_drops_is_freed() -> None:
    """The kept block goes back to the pool when the client drops it."""
    b = seeds("s")
    asked = requests(b.handle(PeerUnchokedUs("s"), 0.0), "s")
    b.handle(BlockArrived("s", asked[0]), 1.0)
    b.handle(PeerChokedUs("s"), 2.0)
    assert b.picker.requests.requesters(asked[0]) == ("s",)
    b.handle(BlockDropped("s", asked[0]), 3.0)
    book = b.picker.requests
    assert book.requesters(asked[0]) == ()
    assert not book.is_received(asked[0])
    assert asked[0] in book.free_blocks(asked[0].piece)
    assert book.num_outstanding("s") == 0
    assert not b.queues.is_waiting("s", asked[0])
    b.check()


def test_a_fast_peer_choke_still_keeps_everything() -> None:
    """With the fast extension nothing changes: requests stay until rejected."""
    b = seeds("s", fast=True)
    asked = requests(b.handle(PeerUnchokedUs("s"), 0.0), "s")
    b.handle(BlockArrived("s", asked[0]), 1.0)
    b.handle(PeerChokedUs("s"), 2.0)
    assert list(b.picker.requests.outstanding("s")) == asked
    b.check()
