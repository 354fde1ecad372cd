"""Mends of the swarm brain's block inputs and parole rules (each test failed before its fix).

- A ``RequestTimedOut`` or ``BlockRejected`` whose block had a field that is not hashable (a
  list as the piece index) raised ``TypeError``, as did ``PeerDontHave`` with such a piece and
  ``BlockSent``/``RequestTimedOut`` with something not a block at all. Such a block is now
  ignored by every block input, as ``BlockReceived``, ``BlockArrived`` and ``BlockDropped``
  already did (a block nobody asked for), and such a piece by ``PeerDontHave``, as by
  ``PeerHave``.
- A BEP 6 reject, from a peer that chokes us, of a block not pending (the answer to our own
  cancel) took back that peer's allowed-fast piece: a piece cancelled because it was no longer
  wanted was never asked of that peer again once wanted.
- Once only parole peers had a piece that a departed peer had started, nobody finished it: a
  parole peer may now finish it (the piece is then mixed).
- A second parole peer's forfeit of a piece replaced the first's, which could take the piece
  back at once: forfeits are kept per piece and peer (at most ``_MAX_FORFEITS_PER_PIECE`` per
  piece).

Sans-IO: time is the ``now`` each call is given.
"""

from __future__ import annotations

import random

import pytest
from _brains import requests_to

from bip_select._actions import SendCancel
from bip_select._brain import SwarmBrain
from bip_select._errors import LocalProtocolError
from bip_select._geometry import BLOCK_SIZE, Block, TorrentGeometry
from bip_select._inputs import (
    AllowedFast,
    BlockArrived,
    BlockDropped,
    BlockReceived,
    BlockRejected,
    BlockSent,
    Input,
    PeerDontHave,
    PeerHave,
    PeerHaveAll,
    PeerJoined,
    PeerLeft,
    PeerUnchokedUs,
    PieceVerified,
    PrioritiesChanged,
    RequestTimedOut,
)
from bip_select._queueing import QueueConfig
from bip_select._selection import _FORFEIT_TIME, _MAX_FORFEITS_PER_PIECE, PiecePicker

# ---------------------------------------------------------------- 1. malformed blocks

MALFORMED: list[object] = [
    Block([0], 0, BLOCK_SIZE),  # type: ignore[arg-type]
    Block(0, [0], BLOCK_SIZE),  # type: ignore[arg-type]
    Block(0, 0, [BLOCK_SIZE]),  # type: ignore[arg-type]
    Block({}, 0, 1),  # type: ignore[arg-type]
    Block(0.0, 0, BLOCK_SIZE),  # type: ignore[arg-type]
    [0, 0, BLOCK_SIZE],
    (0, 0),
    "abc",
    None,
]
BLOCK_INPUTS = [
    BlockReceived,
    BlockArrived,
    BlockDropped,
    BlockRejected,
    RequestTimedOut,
    BlockSent,
]


def _leecher(choked: bool) -> tuple[SwarmBrain, list[Block]]:
    """A leecher of 4 pieces of 2 blocks asking everything of seed "s" (fast extension):
    unchoked, or choking us and allowing piece 0 fast."""
    brain = SwarmBrain(TorrentGeometry(4, 2 * BLOCK_SIZE), rng=random.Random(0))
    brain.handle(PeerJoined("s", reqq=250, fast=True), 0.0)
    brain.handle(PeerHaveAll("s"), 0.0)
    event: Input = AllowedFast("s", 0) if choked else PeerUnchokedUs("s")
    asked = requests_to(brain.handle(event, 0.0), "s")
    assert asked
    return brain, asked


@pytest.mark.parametrize("choked", [False, True])
@pytest.mark.parametrize("kind", BLOCK_INPUTS)
def test_a_malformed_block_is_ignored_by_every_block_input(kind: type, choked: bool) -> None:
    brain, asked = _leecher(choked)
    for block in MALFORMED:
        assert brain.handle(kind("s", block), 1.0) == [], block
    assert list(brain.picker.requests.outstanding("s")) == asked
    assert brain.picker.is_allowed_fast("s", 0) == choked
    brain.check()


def test_a_malformed_piece_is_ignored_as_a_have_of_one_is() -> None:
    brain, asked = _leecher(choked=False)
    nonsense: list[object] = [[1], {}, None, 1.0, "1"]
    for piece in nonsense:
        assert brain.handle(PeerHave("s", piece), 1.0) == []  # type: ignore[arg-type]
        assert brain.handle(PeerDontHave("s", piece), 1.0) == []  # type: ignore[arg-type]
    assert brain.picker.availability.is_seed("s")
    assert list(brain.picker.requests.outstanding("s")) == asked
    brain.check()


def test_a_peer_key_that_is_not_hashable_is_the_clients_mistake() -> None:
    brain, asked = _leecher(choked=False)
    for event in (
        PeerJoined([1]),  # type: ignore[arg-type]
        PeerLeft([1]),  # type: ignore[arg-type]
        BlockRejected([1], asked[0]),  # type: ignore[arg-type]
        RequestTimedOut([1], asked[0]),  # type: ignore[arg-type]
        PeerDontHave([1], 0),  # type: ignore[arg-type]
    ):
        with pytest.raises(LocalProtocolError):
            brain.handle(event, 1.0)
    assert not brain.is_banned([1])  # type: ignore[arg-type]  # nothing can ban what cannot be a key
    brain.check()


# ---------------------------------------------------------------- 2. reject of a cancel


def test_the_reject_answering_our_cancel_keeps_the_allowed_fast_piece() -> None:
    brain, asked = _leecher(choked=True)  # "s" chokes us, allows piece 0: both blocks asked
    assert {block.piece for block in asked} == {0}
    actions = brain.handle(PrioritiesChanged(piece_priorities={0: 0}), 1.0)
    cancelled = [a.block for a in actions if isinstance(a, SendCancel)]
    assert cancelled == asked
    for block in cancelled:  # BEP 6: every request gets one answer, a cancelled one too
        assert brain.handle(BlockRejected("s", block), 2.0) == []
    assert brain.picker.is_allowed_fast("s", 0)
    # Wanted again: asked of the peer that still allows it.
    again = requests_to(brain.handle(PrioritiesChanged(piece_priorities={0: 4}), 3.0), "s")
    assert again == asked
    # A reject of a request it has pending still takes the piece back (libtorrent's rule).
    brain.handle(BlockRejected("s", again[0]), 4.0)
    assert not brain.picker.is_allowed_fast("s", 0)
    brain.check()


# ---------------------------------------------------------------- 3. only parole peers left


def _parole_brain(*parole: str) -> SwarmBrain:
    """One piece of 2 blocks; honest "H" and the ``parole`` peers (who shared a bad piece)
    have it; H unchokes us and sends block 0, then leaves with block 1 still asked of it."""
    brain = SwarmBrain(
        TorrentGeometry(1, 2 * BLOCK_SIZE), rng=random.Random(0), queueing=QueueConfig()
    )
    for peer in ("H", *parole):
        brain.handle(PeerJoined(peer, reqq=250, fast=True), 0.0)
        brain.handle(PeerHaveAll(peer), 0.0)
    brain.queues.piece_failed([*parole, "gone"])
    assert requests_to(brain.handle(PeerUnchokedUs("H"), 0.0), "H") == list(
        brain.geometry.blocks(0)
    )
    brain.handle(BlockReceived("H", Block(0, 0, BLOCK_SIZE)), 1.0)
    brain.handle(PeerLeft("H"), 2.0)
    return brain


def test_a_parole_peer_finishes_a_piece_only_parole_peers_are_left_for() -> None:
    brain = _parole_brain("Q")
    last = Block(0, BLOCK_SIZE, BLOCK_SIZE)
    assert requests_to(brain.handle(PeerUnchokedUs("Q"), 3.0), "Q") == [last]
    assert brain.picker._exclusive == {0: "Q"}  # held: no other peer mixes in more
    brain.handle(BlockReceived("Q", last), 4.0)
    assert set(brain.picker.requests.sources(0)) == {"H", "Q"}
    brain.handle(PieceVerified(0, False), 5.0)
    assert not brain.is_banned("Q")  # a mixed piece: not its alone
    brain.check()


def test_an_honest_holder_still_keeps_a_started_piece_from_a_parole_peer() -> None:
    brain = _parole_brain("Q")
    brain.handle(PeerJoined("K", reqq=250, fast=True), 2.5)
    brain.handle(PeerHaveAll("K"), 2.5)  # honest, choking us for now: it will finish it
    assert brain.handle(PeerUnchokedUs("Q"), 3.0) == []
    assert requests_to(brain.handle(PeerUnchokedUs("K"), 4.0), "K") == [
        Block(0, BLOCK_SIZE, BLOCK_SIZE)
    ]
    brain.check()


def test_of_two_parole_peers_left_one_finishes_the_piece() -> None:
    brain = _parole_brain("Q", "R")
    first = requests_to(brain.handle(PeerUnchokedUs("Q"), 3.0), "Q")
    assert first == [Block(0, BLOCK_SIZE, BLOCK_SIZE)]
    assert brain.handle(PeerUnchokedUs("R"), 3.0) == []  # Q holds it
    brain.check()


# ---------------------------------------------------------------- 4. forfeits per peer


_ON_PAROLE = frozenset(range(_MAX_FORFEITS_PER_PIECE + 2))


def _parole_picker(peers: int) -> PiecePicker:
    """One piece of 2 blocks that parole peers 0..peers-1 alone have: each may take it at
    another's forfeit (while a peer not on parole has it, none may: see
    test_select_mends.py's silent parole peers)."""
    picker = PiecePicker(TorrentGeometry(1, 2 * BLOCK_SIZE), random.Random(0))
    for peer in range(peers):
        picker.add_peer(peer)
        picker.peer_have_all(peer)
    return picker


def _forfeit(picker: PiecePicker, peer: int, now: float) -> None:
    """``peer`` takes the piece on parole and its requests time out at ``now``."""
    mine = picker.pick(peer, 2, now - 60.0, exclusive=True, on_parole=_ON_PAROLE)
    assert mine
    for block in mine:
        assert picker.block_timed_out(peer, block, now)


def test_a_second_forfeit_does_not_end_the_first() -> None:
    picker = _parole_picker(2)
    _forfeit(picker, 0, 60.0)
    _forfeit(picker, 1, 130.0)  # 1 takes the piece 0 forfeited, and forfeits it too
    assert picker.pick(0, 2, 131.0, exclusive=True, on_parole=_ON_PAROLE) == []  # runs to 180
    assert picker.pick(1, 2, 131.0, exclusive=True, on_parole=_ON_PAROLE) == []
    # Expired: its again (1's forfeit bars 0 no more than 0's barred 1: only parole peers
    # have the piece).
    assert picker.pick(0, 2, 60.0 + _FORFEIT_TIME, exclusive=True, on_parole=_ON_PAROLE)
    # Delivering a block of the piece, or leaving, ends a peer's forfeit, not another's.
    picker.block_received(0, Block(0, 0, BLOCK_SIZE))
    picker.remove_peer(0)
    assert picker._forfeited == {0: {1: 130.0 + _FORFEIT_TIME}}
    picker.check()


def test_forfeits_per_piece_are_bounded() -> None:
    peers = _MAX_FORFEITS_PER_PIECE + 2
    picker = _parole_picker(peers)
    for peer in range(peers):
        _forfeit(picker, peer, 60.0 + peer)
    kept = picker._forfeited[0]
    assert len(kept) == _MAX_FORFEITS_PER_PIECE
    # The first to expire went first; the newest are kept with their own times.
    assert kept == {peer: 60.0 + peer + _FORFEIT_TIME for peer in range(2, peers)}
    picker.check()
