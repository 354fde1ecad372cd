"""Mends from the bip_select behaviour hunt (each test failed before its fix).

- A torrent done with its selected files (complete, not a seed) hears nothing from its peers:
  every download rate is 0, and the tie-break kept the same regular peers unchoked for ever.
  Equal senders are now ranked by the seed ranking (libtorrent's ``unchoke_compare_rr`` ranks
  every torrent by ``downloaded_in_last_round`` first, then round robin).
- The brain's default choker got a fixed 5 MiB round-robin turn whatever the piece size;
  libtorrent's is ``seeding_piece_quota`` (20) pieces.
- A ``PrioritiesChanged`` with a bad field applied the file priorities before raising,
  leaving the peers' wanted counts stale.
- End-game duplicates: one, only to a peer with nothing pending (libtorrent's
  request_blocks.cpp), not two.

Sans-IO: time is the ``now`` each call is given.
"""

from __future__ import annotations

import math
import random

import pytest
from _brains import requests_to

from bip_select._brain import SwarmBrain
from bip_select._choking import Choker, SeedChoking
from bip_select._errors import LocalProtocolError
from bip_select._geometry import Block, TorrentGeometry
from bip_select._inputs import (
    BlockSent,
    PeerHaveAll,
    PeerInterested,
    PeerJoined,
    PeerUnchokedUs,
    PrioritiesChanged,
)
from bip_select._queueing import QueueConfig
from bip_select._selection import PiecePicker, Streaming

MiB = 2**20


def interested_peers(brain: SwarmBrain, count: int) -> None:
    """Peers 0..count-1 join ``brain`` at 0 s and are interested in its pieces."""
    for peer in range(count):
        brain.handle(PeerJoined(peer, fast=True), 0.0)
        brain.handle(PeerInterested(peer), 0.0)


def regular(brain: SwarmBrain) -> frozenset[object]:
    return brain.choker.unchoked - brain.choker.optimistic


# ---------------------------------------------------------------- 1. partial download rotates


def test_a_finished_partial_download_rotates_its_regular_slots() -> None:
    # Pieces 0-3 selected and had, 4-7 not selected: complete, not a seed.
    geometry = TorrentGeometry(8, 262144)
    brain = SwarmBrain(
        geometry, rng=random.Random(1), have=range(4), piece_priorities=[4] * 4 + [0] * 4
    )
    assert brain.is_complete
    assert not brain.is_seed
    interested_peers(brain, 10)
    held: set[object] = set()
    for step in range(25):  # 250 s of rechokes, each unchoked peer served 2 MiB a rechoke
        now = 10.0 * step
        brain.tick(now)
        held |= regular(brain)
        for peer in brain.choker.unchoked:
            brain.handle(BlockSent(peer, Block(0, 0, 16384)), now)
            brain.choker.uploaded(peer, 2 * MiB, now)
    assert held == set(range(10))  # every interested peer had its turn (was: 0-3 for ever)
    brain.check()


def test_equal_senders_rotate_while_downloading_and_the_fastest_still_win() -> None:
    choker = Choker(rng=random.Random(3), round_robin_quota=MiB, optimistic_slots=0)
    for peer in range(8):
        choker.add_peer(peer, 0.0)
        choker.set_interested(peer, True, 0.0)
    held: set[object] = set()
    for step in range(30):
        now = 10.0 * step
        choker.downloaded(7, 100_000, now)  # only peer 7 sends us anything
        choker.tick(now)
        assert 7 in choker.unchoked  # tit-for-tat first
        held |= choker.unchoked
        for unchoked in choker.unchoked:
            choker.uploaded(unchoked, MiB, now)
    assert held == set(range(8))  # the silent ones took turns (was: the first three kept)


def test_fastest_upload_ties_let_an_idle_unchoked_peer_yield() -> None:
    choker = Choker(rng=random.Random(3), regular_slots=1, optimistic_slots=0)
    choker.seed_choking = SeedChoking.FASTEST_UPLOAD
    for peer in range(2):
        choker.add_peer(peer, 0.0)
        choker.set_interested(peer, True, 0.0)
    choker.tick(0.0)
    assert choker.unchoked == {0}
    choker.tick(10.0)  # peer 0 took nothing for a whole interval: peer 1 waited longer
    assert choker.unchoked == {1}


# ---------------------------------------------------------------- 2. round-robin turn in pieces


def test_the_brain_round_robin_turn_is_twenty_pieces() -> None:
    piece_length = 16 * MiB
    brain = SwarmBrain(TorrentGeometry(4, piece_length), rng=random.Random(1), have=range(4))
    assert brain.choker.seeding
    interested_peers(brain, 8)
    brain.tick(0.0)
    first = regular(brain)
    for step in range(1, 13):  # 120 s at 6 MiB a rechoke: far from one 20-piece turn
        now = 10.0 * step
        for peer in brain.choker.unchoked:
            brain.choker.uploaded(peer, 6 * MiB, now)
        brain.tick(now)
        assert regular(brain) == first  # was: rotated out at 60 s, not one piece in
    for peer in first:  # a full turn each
        brain.choker.uploaded(peer, 20 * piece_length, 125.0)
    brain.tick(130.0)
    assert not regular(brain) & first


# ---------------------------------------------------------------- 3. all or nothing


@pytest.mark.parametrize(
    "event",
    [
        PrioritiesChanged(file_priorities=[0, 4], piece_priorities={3: 9}),
        PrioritiesChanged(file_priorities=[0, 4], piece_priorities={99: 1}),
        PrioritiesChanged(file_priorities=[0, 4], deadlines={5: math.nan}),
        PrioritiesChanged(file_priorities=[0, 4], deadlines={5: "soon"}),  # type: ignore[dict-item]
        PrioritiesChanged(piece_priorities={0: 0}, deadlines={5: math.inf}),
    ],
)
def test_a_bad_priorities_change_changes_nothing(event: PrioritiesChanged) -> None:
    geometry = TorrentGeometry(8, 16384, file_pieces=[range(4), range(4, 8)])
    brain = SwarmBrain(geometry, rng=random.Random(0), selection=Streaming())
    brain.handle(PeerJoined("a", fast=True), 0.0)
    brain.handle(PeerHaveAll("a"), 0.0)
    with pytest.raises(LocalProtocolError):
        brain.handle(event, 1.0)
    assert [brain.picker.piece_priority(p) for p in range(8)] == [4] * 8
    assert brain.picker.availability.num_wanted == 8
    assert brain.deadlines() == {}
    brain.check()


def test_piece_priorities_still_win_over_file_priorities() -> None:
    geometry = TorrentGeometry(8, 16384, file_pieces=[range(4), range(4, 8)])
    brain = SwarmBrain(geometry, rng=random.Random(0))
    brain.handle(PrioritiesChanged(file_priorities=[0, 4], piece_priorities={1: 7, 5: 0}), 0.0)
    assert [brain.picker.piece_priority(p) for p in range(8)] == [0, 7, 0, 0, 4, 0, 4, 4]
    brain.check()


# ---------------------------------------------------------------- 4. end-game depth


def test_end_game_duplicates_go_one_at_a_time_to_idle_peers() -> None:
    geometry = TorrentGeometry(8, 32768)
    assert PiecePicker(geometry, random.Random(0)).endgame_depth == 1
    brain = SwarmBrain(geometry, rng=random.Random(1), queueing=QueueConfig(initial_queue=16))
    brain.handle(PeerJoined("b", fast=True), 0.0)
    brain.handle(PeerHaveAll("b"), 0.0)
    assert len(requests_to(brain.handle(PeerUnchokedUs("b"), 0.0), "b")) == 16  # every block
    brain.handle(PeerJoined("a", fast=True), 0.0)
    brain.handle(PeerHaveAll("a"), 0.0)
    duplicates = requests_to(brain.handle(PeerUnchokedUs("a"), 0.0), "a")
    assert len(duplicates) == 1  # was 2: a second copy while the first is still pending
    assert requests_to(brain.tick(5.0), "a") == []  # none more while it is pending
    brain.check()
