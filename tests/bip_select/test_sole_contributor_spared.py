"""``PieceVerified(..., ban_sole_contributor=False)``: a peer that alone sent a bad piece loses
its trust points as any source, but is banned only at ``ban_trust`` (libtorrent's
``torrent::piece_failed`` when ``received_invalid_data`` says not to disconnect: a web seed)."""

from __future__ import annotations

import random

from bip_select import (
    BlockReceived,
    DropPeer,
    PeerHaveAll,
    PeerJoined,
    PeerQueues,
    PeerUnchokedUs,
    PieceVerified,
    QueueConfig,
    SwarmBrain,
    TorrentGeometry,
)


def test_queues_spare_a_sole_source_until_its_trust_is_gone() -> None:
    queues = PeerQueues(QueueConfig())
    queues.add_peer("ws", 0.0)
    banned = [queues.piece_failed(["ws"], ban_sole_contributor=False) for _ in range(4)]
    assert banned == [[], [], [], ["ws"]]  # -2, -4, -6, -7: the fourth bans
    assert queues.trust("ws") == -7
    assert queues.hash_failures("ws") == 4
    # The default still bans a sole source at once.
    queues.add_peer("peer", 0.0)
    assert queues.piece_failed(["peer"]) == ["peer"]


def test_the_brain_bans_a_spared_sole_source_at_ban_trust() -> None:
    geometry = TorrentGeometry(16, 32768, 16 * 32768)
    brain = SwarmBrain(geometry, rng=random.Random(1))
    for event in (PeerJoined("ws", reqq=256), PeerHaveAll("ws"), PeerUnchokedUs("ws")):
        brain.handle(event, 0.0)
    bad = 0
    for _ in range(16):
        outstanding = brain.picker.requests.outstanding("ws")
        pieces = sorted({block.piece for block in outstanding})
        [piece] = pieces[:1]
        actions = []
        for block in [block for block in outstanding if block.piece == piece]:
            actions += brain.handle(BlockReceived("ws", block), 0.0)
        actions += brain.handle(PieceVerified(piece, False, ban_sole_contributor=False), 0.0)
        bad += 1
        brain.check()
        if any(isinstance(action, DropPeer) for action in actions):
            break
    assert bad == 4
    assert brain.queues.is_banned("ws")
