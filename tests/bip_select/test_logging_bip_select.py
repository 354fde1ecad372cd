"""bip_select's logging: a sans-IO core, so DEBUG only, and never a record per block.

Loggers: ``bip_select.brain`` (end-game, bans, snubs, failed and lost pieces, completion),
``bip_select.choking`` (a rechoke that changed something), ``bip_select.simulator`` (a run's
start and end).
"""

from __future__ import annotations

import logging
import random

import pytest

from bip_select._actions import (
    REASON_BAD_DATA,
    REASON_SNUBBED,
    DropPeer,
    SendRequest,
)
from bip_select._brain import REASON_BANNED, SwarmBrain
from bip_select._choking import Choker
from bip_select._geometry import TorrentGeometry
from bip_select._inputs import (
    BlockReceived,
    PeerHave,
    PeerHaveAll,
    PeerJoined,
    PeerUnchokedUs,
    PieceLost,
    PieceVerified,
)
from bip_select._queueing import QueueConfig
from bip_select.simulator import PeerSpec, SwarmConfig, simulate

BRAIN = "bip_select.brain"
CHOKING = "bip_select.choking"


def texts(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    """The messages of ``name``'s records, each checked to be DEBUG."""
    found = []
    for record in caplog.records:
        if record.name == name:
            assert record.levelno == logging.DEBUG, record.getMessage()
            found.append(record.getMessage())
    return found


def assert_debug_only_and_ours(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert record.name.startswith("bip_select."), record.name
        assert record.levelno == logging.DEBUG, record.getMessage()


def test_a_rechoke_that_changes_something_is_one_debug_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    choker = Choker(rng=random.Random(1), regular_slots=2, optimistic_slots=1)
    for index, peer in enumerate(("a", "b", "c", "d", "e")):
        choker.add_peer(peer, 0.0)
        choker.set_interested(peer, True, 0.0)
        choker.downloaded(peer, 1000 * (index + 1), 0.0)
    caplog.clear()
    decision = choker.rechoke(1.0)
    assert decision.unchoke
    # a, b and c took the free slots as they became interested; the rechoke ranks by rate.
    assert decision.choke == ("a", "b")
    assert decision.unchoke == ("d", "e")
    [record] = texts(caplog, CHOKING)
    assert record == (
        "rechoke (downloading): unchoked d, e; choked a, b; 2 regular and 1 optimistic slots "
        "held (optimistic: c) among 5 interested of 5 peers"
    )
    caplog.clear()
    assert not choker.rechoke(2.0)  # nothing changes: nothing logged
    assert texts(caplog, CHOKING) == []
    assert_debug_only_and_ours(caplog)


def test_end_game_is_logged_once_when_it_begins(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    brain = SwarmBrain(TorrentGeometry(1, 16384), rng=random.Random(0))
    for peer in ("a", "b"):
        brain.handle(PeerJoined(peer), 0.0)
        brain.handle(PeerHave(peer, 0), 0.0)
    assert texts(caplog, BRAIN) == []
    actions = brain.handle(PeerUnchokedUs("a"), 0.0)
    [block] = [a.block for a in actions if isinstance(a, SendRequest)]
    # The only block is asked for: end-game from now on.
    assert brain.statistics().endgame
    ended = "end-game: every block still missing is requested (pieces left: 1); duplicates go to "
    assert texts(caplog, BRAIN) == [ended + "idle peers"]
    brain.handle(PeerUnchokedUs("b"), 0.0)  # b gets a duplicate: still the same end-game
    brain.tick(5.0)
    assert len(texts(caplog, BRAIN)) == 1
    brain.handle(BlockReceived("b", block), 1.0)
    caplog.clear()
    brain.handle(PieceVerified(0, good=False), 2.0)  # its block is free again, and asked again
    assert texts(caplog, BRAIN) == [
        "piece 0 failed its hash check (peers that sent blocks of it: 1)",
        "end-game left: pieces to download became free again",
        "peer b banned: it sent data of piece 0, which failed",
        ended + "idle peers",  # a is asked for the block again
    ]
    assert_debug_only_and_ours(caplog)


def test_bans_and_failed_pieces_are_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    geometry = TorrentGeometry(4, 16384)
    brain = SwarmBrain(geometry, rng=random.Random(1))
    brain.handle(PeerJoined("s", fast=True), 0.0)
    brain.handle(PeerHaveAll("s"), 0.0)
    asked = [a.block for a in brain.handle(PeerUnchokedUs("s"), 0.0) if isinstance(a, SendRequest)]
    piece = asked[0].piece
    brain.handle(BlockReceived("s", asked[0]), 0.5)
    caplog.clear()
    actions = brain.handle(PieceVerified(piece, good=False), 1.0)
    assert DropPeer("s", REASON_BAD_DATA) in actions
    logged = texts(caplog, BRAIN)
    assert f"piece {piece} failed its hash check (peers that sent blocks of it: 1)" in logged
    assert f"peer s banned: it sent data of piece {piece}, which failed" in logged
    caplog.clear()
    assert brain.handle(PeerJoined("s"), 2.0) == [DropPeer("s", REASON_BANNED)]
    assert texts(caplog, BRAIN) == ["peer s dropped: it was banned for bad data earlier"]
    assert_debug_only_and_ours(caplog)


def test_snubs_and_snub_drops_are_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    brain = SwarmBrain(
        TorrentGeometry(8, 32768),
        rng=random.Random(1),
        queueing=QueueConfig(snub_timeout=5.0),
        drop_snubbed_after=10.0,
    )
    brain.handle(PeerJoined("a"), 0.0)
    brain.handle(PeerHave("a", 0), 0.0)
    brain.handle(PeerUnchokedUs("a"), 0.0)
    brain.tick(6.0)
    assert "peer a snubs us" in texts(caplog, BRAIN)
    assert DropPeer("a", REASON_SNUBBED) in brain.tick(17.0)
    assert "peer a dropped: it snubbed us for 11 s" in texts(caplog, BRAIN)
    assert_debug_only_and_ours(caplog)


def test_completion_and_lost_pieces_are_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    brain = SwarmBrain(TorrentGeometry(3, 16384), rng=random.Random(1), have={0, 1})
    brain.handle(PieceVerified(2, good=True), 0.0)
    assert texts(caplog, BRAIN) == ["every wanted piece is verified: 3 of 3 pieces had"]
    caplog.clear()
    brain.handle(PieceLost(1), 1.0)
    assert texts(caplog, BRAIN) == ["piece 1 lost from storage, wanted again"]
    assert_debug_only_and_ours(caplog)


def swarm(pieces: int) -> SwarmConfig:
    """1 seed, 4 leechers and a liar: pieces of 4 blocks, so 16 * ``pieces`` blocks or more."""
    peers = [PeerSpec(upload=1e6, download=1e6, seed=True)]
    peers += [PeerSpec(upload=1e6, download=1e6) for _ in range(4)]
    peers += [PeerSpec(upload=1e6, download=1e6, malicious=True)]
    return SwarmConfig(num_pieces=pieces, piece_length=65536, peers=peers)


def test_a_simulated_swarm_logs_nothing_above_debug_and_little_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sizes = (24, 96)
    counts = []
    for pieces in sizes:
        caplog.clear()
        trace = simulate(swarm(pieces))
        assert all(when is not None for when in trace.completion.values())
        assert_debug_only_and_ours(caplog)
        assert len(texts(caplog, "bip_select.simulator")) == 2  # the start and the end
        blocks = 4 * 4 * pieces  # blocks the four honest leechers received at least
        counts.append(len(caplog.records))
        # Rechokes (every 10 s per brain), snubs, bans, end-games: far fewer than blocks.
        assert len(caplog.records) < blocks / 4, (pieces, len(caplog.records), blocks)
    [start, end] = texts(caplog, "bip_select.simulator")
    assert start.startswith("simulating 6 peers, 96 pieces of 65536 bytes")
    assert end.startswith("simulation ended at ")
    assert counts[1] < 4 * counts[0]  # no record per block: the count grows slower than them
