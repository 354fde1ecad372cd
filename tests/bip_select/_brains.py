"""Set-ups of SwarmBrain shared by the bip_select tests (sans-IO, every call at ``now`` 0).

Imported by name (``from _brains import ...``): tests/bip_select/conftest.py puts this folder
on ``sys.path``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from bip_select._actions import Action, SendRequest
from bip_select._brain import SwarmBrain
from bip_select._geometry import Block, TorrentGeometry
from bip_select._inputs import PeerBitfield, PeerJoined, PeerUnchokedUs
from bip_select._queueing import QueueConfig
from bip_select._selection import Strategy

__all__ = ["requests_to", "starved_slow_peer"]


def requests_to(actions: Sequence[Action], peer: str) -> list[Block]:
    """The blocks requested of ``peer``, in order."""
    return [a.block for a in actions if isinstance(a, SendRequest) and a.peer == peer]


def starved_slow_peer(geometry: TorrentGeometry, selection: Strategy) -> SwarmBrain:
    """A leecher on ``selection``, 8 requests a peer, with two fast-extension peers: "a" (one
    block a second) has pieces 10 and 11 and unchoked us, so was asked for both, all it has
    (starved); "f" (10 MB/s, choking us) has 10, 11 and 20. A deadline on piece 20 it then
    announces is one "a" cannot make behind its requests, and "f" can."""
    config = QueueConfig(initial_queue=8, min_queue=8, max_queue=8)
    brain = SwarmBrain(geometry, rng=random.Random(1), selection=selection, queueing=config)
    brain.handle(PeerJoined("a", fast=True), 0.0)
    brain.handle(PeerBitfield("a", frozenset({10, 11})), 0.0)
    brain.handle(PeerJoined("f", fast=True), 0.0)
    brain.handle(PeerBitfield("f", frozenset({10, 11, 20})), 0.0)
    brain.picker.set_rate("a", 16384.0)
    brain.picker.set_rate("f", 10e6)
    first = requests_to(brain.handle(PeerUnchokedUs("a"), 0.0), "a")
    assert {block.piece for block in first} == {10, 11}
    return brain
