"""A block that arrived and waits for our disk (BlockArrived) is no request: end-game and
late deadline pieces do not ask for it again."""

from __future__ import annotations

import random
from collections.abc import Sequence

from bip_select._actions import Action, SendRequest
from bip_select._brain import SwarmBrain
from bip_select._geometry import Block, TorrentGeometry
from bip_select._inputs import BlockArrived, PeerHaveAll, PeerJoined, PeerUnchokedUs
from bip_select._selection import PiecePicker, Streaming

ONE_PIECE = TorrentGeometry(1, 65536)  # 4 blocks: the first unchoke asks them all (end-game)


def requests(actions: Sequence[Action], peer: str) -> list[Block]:
    return [a.block for a in actions if isinstance(a, SendRequest) and a.peer == peer]


def seeds(*peers: str, geometry: TorrentGeometry = ONE_PIECE) -> SwarmBrain:
    """A leecher with ``peers`` (seeds, choking us) joined at 0."""
    brain = SwarmBrain(geometry, rng=random.Random(1))
    for peer in peers:
        brain.handle(PeerJoined(peer), 0.0)
        brain.handle(PeerHaveAll(peer), 0.0)
    return brain


def test_endgame_asks_no_duplicate_of_a_block_that_arrived() -> None:
    """Every block is asked of s (end-game); s's first block came and waits for our disk:
    t is asked for the others only."""
    b = seeds("s", "t")
    asked = requests(b.handle(PeerUnchokedUs("s"), 0.0), "s")
    assert len(asked) == 4
    b.handle(BlockArrived("s", asked[0]), 1.0)
    to_t = requests(b.handle(PeerUnchokedUs("t"), 2.0), "t")
    assert to_t  # end-game duplicates
    assert asked[0] not in to_t
    book = b.picker.requests
    assert asked[0] in book.duplicate_candidates("t", lambda piece: True, 9)
    assert asked[0] not in book.duplicate_candidates(
        "t", lambda piece: True, 9, b.queues.is_waiting
    )
    b.check()


def test_a_deadline_block_that_arrived_is_not_late() -> None:
    """A late deadline block is asked of a faster peer too, unless it arrived already."""
    for waiting in (False, True):
        picker = PiecePicker(ONE_PIECE, random.Random(1), Streaming())
        for peer in ("slow", "fast"):
            picker.add_peer(peer)
            picker.peer_have_all(peer)
        picker.set_rate("slow", 1000.0)
        picker.set_rate("fast", 10_000_000.0)
        first = picker.pick("slow", 1, now=0.0)
        assert len(first) == 1
        picker.strategy.set_deadline(0, 1.0)  # type: ignore[attr-defined]

        def arrived(
            peer: object, block: Block, waiting: bool = waiting, first: list[Block] = first
        ) -> bool:
            return waiting and peer == "slow" and block == first[0]

        again = picker.pick("fast", 4, now=0.5, arrived=arrived)
        assert (first[0] in again) is not waiting
        picker.check()
