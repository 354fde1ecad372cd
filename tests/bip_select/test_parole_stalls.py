"""Mends after the review of the parole holds (each test failed before its fix).

- A parole peer that silently drops its requests took its piece back at every time-out: a piece
  it got nothing of is no longer started once its requests time out, so it came back as a fresh
  piece (the forfeit was only checked for started pieces), was held again, and end-game, which
  spares held pieces, never rescued it. The forfeit now holds for fresh pieces too, for two
  minutes or until the peer delivers a block of the piece.
- A hold kept after our own cancel outlived the peer losing the piece (lt_donthave, have-none, a
  late bitfield): nobody could take the piece any more. Such a hold now ends.
- ``RequestBook.worked_on_by_others`` walked every block of the piece (each parole pick, each
  started piece): it now reads per-piece counts of the peers asked.
- A parole peer that unchokes us and rejects every request held its piece for ever: the reject
  ended the hold but, unlike a time-out, did not forfeit the piece, so the peer, refilled first,
  took it back at once (and end-game never duplicates a held piece). Such a reject now forfeits
  the piece; a choke's rejects (BEP 6) still only end the hold.
- The reject BEP 6 has a peer send for our own cancel ended the hold the cancel kept: a reject
  of a block not pending now changes nothing.

Sans-IO: time is the ``now`` each call is given.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterator

import pytest

from bip_select._actions import SendCancel, SendRequest
from bip_select._brain import SwarmBrain
from bip_select._geometry import BLOCK_SIZE, Block, TorrentGeometry
from bip_select._inputs import (
    BlockReceived,
    BlockRejected,
    PeerBitfield,
    PeerChokedUs,
    PeerDontHave,
    PeerHaveAll,
    PeerHaveNone,
    PeerJoined,
    PeerUnchokedUs,
    PieceVerified,
    PrioritiesChanged,
)
from bip_select._queueing import QueueConfig
from bip_select._requests import RequestBook
from bip_select._selection import _FORFEIT_TIME, PiecePicker


def _brain(geometry: TorrentGeometry) -> SwarmBrain:
    """Two peers with everything, fast extension: "Q" on parole (it shared a bad piece), "H"
    honest. Neither unchokes us yet."""
    brain = SwarmBrain(geometry, rng=random.Random(0), queueing=QueueConfig())
    for peer in ("Q", "H"):
        brain.handle(PeerJoined(peer, reqq=250, fast=True), 0.0)
        brain.handle(PeerHaveAll(peer), 0.0)
    brain.queues.piece_failed(["Q", "gone"])
    assert brain.queues.on_parole("Q")
    return brain


def _serve(
    brain: SwarmBrain,
    now: float,
    peers: tuple[str, ...],
    seconds: float,
    rejecting: tuple[str, ...] = (),
) -> float:
    """``peers`` send at once whatever they are asked, pieces verify good; ``rejecting`` peers
    reject at once whatever they are asked (a few rounds a tick: they are fast); ticks every
    half second for at most ``seconds``. Returns when the download completed (or the end)."""
    geometry = brain.geometry
    requests = brain.picker.requests
    end = now + seconds
    while now < end and not brain.is_complete:
        now += 0.5
        brain.tick(now)
        for peer in rejecting:
            for _ in range(20):
                asked = list(requests.outstanding(peer))
                if not asked:
                    break
                for block in asked:
                    brain.handle(BlockRejected(peer, block), now)
        for peer in peers:
            for block in list(requests.outstanding(peer)):
                brain.handle(BlockReceived(peer, block), now)
                piece = block.piece
                if not brain.has_piece(piece) and all(
                    requests.is_received(b) for b in geometry.blocks(piece)
                ):
                    brain.handle(PieceVerified(piece, True), now)
    return now


@pytest.mark.parametrize("blocks", [4, 16])
def test_a_silent_parole_peer_does_not_hold_its_piece_for_ever(blocks: int) -> None:
    brain = _brain(TorrentGeometry(4, blocks * BLOCK_SIZE))
    brain.handle(PeerUnchokedUs("Q"), 0.0)  # Q is asked first, and never answers
    brain.handle(PeerUnchokedUs("H"), 0.0)
    done = _serve(brain, 0.0, ("H",), 600.0)
    assert brain.is_complete
    assert done <= 60.0 + 1.0  # one request time-out: the hold ends, H fetches the piece
    assert not brain.picker._exclusive


def test_a_forfeited_fresh_piece_is_not_taken_back_until_it_expires() -> None:
    picker = PiecePicker(TorrentGeometry(1, 2 * BLOCK_SIZE), random.Random(0))
    for peer in ("honest", "suspect"):
        picker.add_peer(peer)
        picker.peer_have_all(peer)
    mine = picker.pick("suspect", 2, 0.0, exclusive=True)
    for block in mine:
        assert picker.block_timed_out("suspect", block, 60.0)
    assert not picker.requests.is_started(0)  # nothing came: a fresh piece again
    assert picker.pick("suspect", 2, 61.0, exclusive=True) == []
    # Nobody else took it (honest chokes us, say): once the forfeit expires, the suspect may.
    late = 60.0 + _FORFEIT_TIME
    assert picker.pick("suspect", 2, late - 1, exclusive=True) == []
    assert picker.pick("suspect", 2, late, exclusive=True) == mine
    assert picker._exclusive == {0: "suspect"}
    picker.check()


def test_a_forfeit_without_now_counts_from_the_request() -> None:
    picker = PiecePicker(TorrentGeometry(1, BLOCK_SIZE), random.Random(0))
    for peer in ("honest", "suspect"):
        picker.add_peer(peer)
        picker.peer_have_all(peer)
    (block,) = picker.pick("suspect", 1, 5.0, exclusive=True)
    assert picker.block_timed_out("suspect", block)
    assert picker.pick("suspect", 1, 5.0 + _FORFEIT_TIME - 1, exclusive=True) == []
    assert picker.pick("suspect", 1, 5.0 + _FORFEIT_TIME, exclusive=True) == [block]


@pytest.mark.parametrize("how", ["dont_have", "have_none", "bitfield"])
def test_a_parole_hold_ends_when_the_peer_loses_the_piece(how: str) -> None:
    brain = _brain(TorrentGeometry(2, 4 * BLOCK_SIZE))
    asked = [a.block for a in brain.handle(PeerUnchokedUs("Q"), 0.0) if isinstance(a, SendRequest)]
    piece = asked[0].piece
    brain.handle(BlockReceived("Q", asked[0]), 0.1)
    brain.handle(PrioritiesChanged(piece_priorities={piece: 0}), 0.2)  # our cancel: held
    assert brain.picker._exclusive.get(piece) == "Q"
    if how == "dont_have":
        brain.handle(PeerDontHave("Q", piece), 0.3)
    elif how == "have_none":
        brain.handle(PeerHaveNone("Q"), 0.3)
    else:
        brain.handle(PeerBitfield("Q", frozenset({1 - piece})), 0.3)
    assert piece not in brain.picker._exclusive
    brain.handle(PrioritiesChanged(piece_priorities={piece: 4}), 0.4)  # wanted again
    brain.handle(PeerUnchokedUs("H"), 0.4)
    _serve(brain, 0.4, ("H", "Q"), 60.0)
    assert brain.is_complete


def test_a_late_bitfield_keeps_the_holds_on_pieces_still_had() -> None:
    picker = PiecePicker(TorrentGeometry(3, 2 * BLOCK_SIZE), random.Random(0))
    for peer in ("honest", "suspect"):
        picker.add_peer(peer)
        picker.peer_have_all(peer)
    mine = picker.pick("suspect", 6, 0.0, exclusive=True)
    assert set(picker._exclusive) == {0, 1, 2}
    picker.peer_bitfield("suspect", {0, 2})
    assert picker._exclusive == {0: "suspect", 2: "suspect"}
    assert len(mine) == 6
    picker.check()


@pytest.mark.parametrize("order", [("Q", "H"), ("H", "Q")])
def test_a_rejecting_parole_peer_does_not_hold_its_piece_for_ever(order: tuple[str, str]) -> None:
    brain = _brain(TorrentGeometry(4, 4 * BLOCK_SIZE))
    for peer in order:
        brain.handle(PeerUnchokedUs(peer), 0.0)
    assert brain.picker.requests.num_outstanding("Q")  # Q is asked, and rejects everything
    done = _serve(brain, 0.0, ("H",), 60.0, rejecting=("Q",))
    assert brain.is_complete
    assert done <= 2.0  # each reject forfeits Q's piece at once: H fetches everything
    assert not brain.picker._exclusive


def test_a_reject_while_unchoked_forfeits_the_piece() -> None:
    picker = PiecePicker(TorrentGeometry(1, 2 * BLOCK_SIZE), random.Random(0))
    for peer in ("honest", "suspect"):
        picker.add_peer(peer)
        picker.peer_have_all(peer)
    mine = picker.pick("suspect", 2, 0.0, exclusive=True)
    assert picker.block_rejected("suspect", mine[0], 1.0)
    assert picker._forfeited == {0: {"suspect": 1.0 + _FORFEIT_TIME}}
    assert not picker._exclusive
    assert picker.block_rejected("suspect", mine[1], 1.0)  # the hold is gone: no new forfeit
    assert picker._forfeited == {0: {"suspect": 1.0 + _FORFEIT_TIME}}
    assert picker.pick("suspect", 2, 2.0, exclusive=True) == []
    assert picker.pick("honest", 2, 2.0) == mine
    picker.check()


def test_a_parole_peer_rejecting_while_it_chokes_us_takes_its_piece_back() -> None:
    brain = _brain(TorrentGeometry(2, 4 * BLOCK_SIZE))
    asked = [a.block for a in brain.handle(PeerUnchokedUs("Q"), 0.0) if isinstance(a, SendRequest)]
    piece = asked[0].piece
    brain.handle(BlockReceived("Q", asked[0]), 0.1)
    brain.handle(PeerChokedUs("Q"), 0.2)  # fast extension: the requests stay until rejected
    for block in list(brain.picker.requests.outstanding("Q")):
        brain.handle(BlockRejected("Q", block), 0.3)
    assert piece not in brain.picker._exclusive  # the choke ended the hold...
    assert not brain.picker._forfeited  # ...without forfeiting the piece
    again = [a.block for a in brain.handle(PeerUnchokedUs("Q"), 0.4) if isinstance(a, SendRequest)]
    assert {b.piece for b in again[:3]} == {piece}  # only Q worked on it: Q finishes it
    assert brain.picker._exclusive.get(piece) == "Q"


def test_the_reject_answering_our_cancel_keeps_the_hold() -> None:
    brain = _brain(TorrentGeometry(2, 4 * BLOCK_SIZE))
    asked = [a.block for a in brain.handle(PeerUnchokedUs("Q"), 0.0) if isinstance(a, SendRequest)]
    piece = asked[0].piece
    brain.handle(BlockReceived("Q", asked[0]), 0.1)
    out = brain.handle(PrioritiesChanged(piece_priorities={piece: 0}), 0.2)
    cancelled = [a.block for a in out if isinstance(a, SendCancel) and a.peer == "Q"]
    assert cancelled
    assert brain.picker._exclusive.get(piece) == "Q"  # our cancel keeps the hold
    for block in cancelled:  # BEP 6: a fast peer answers each cancel with a reject
        assert brain.handle(BlockRejected("Q", block), 0.3) == []
    assert brain.picker._exclusive.get(piece) == "Q"
    assert piece not in brain.picker._forfeited
    # Nor does one while Q unchokes us: the block is not pending, nothing is forfeited.
    assert not brain.picker.block_rejected("Q", cancelled[0], 0.4)
    assert brain.picker._exclusive.get(piece) == "Q"
    assert not brain.picker._forfeited
    brain.picker.check()


class _NoWalk(list[list[Hashable]]):
    """A piece's per-block asked lists that may be indexed but not walked."""

    def __iter__(self) -> Iterator[list[Hashable]]:
        raise AssertionError("walked every block of the piece")


def test_worked_on_by_others_does_not_walk_the_blocks() -> None:
    geometry = TorrentGeometry(1, 1024 * BLOCK_SIZE)
    book = RequestBook(geometry)
    last = geometry.block(0, 1023)
    book.request("suspect", geometry.block(0, 0), 0.0)
    book.request("other", last, 0.0)
    state = book._pieces[0]
    state.asked = _NoWalk(state.asked)
    assert book.worked_on_by_others(0, "suspect")
    assert book.cancel("other", last)
    assert not book.worked_on_by_others(0, "suspect")
    book.request("other", last, 1.0)
    book.request("suspect", last, 1.0, duplicate=True)
    assert book.receive("suspect", last) is not None  # both settled by the arrival
    assert not book.worked_on_by_others(0, "suspect")
    assert book.receive("other", Block(0, 0, BLOCK_SIZE)) is not None  # an unasked block
    assert book.worked_on_by_others(0, "suspect")  # its data is in the piece
    state.asked = list(state.asked.__getitem__(slice(None)))
    book.check()
