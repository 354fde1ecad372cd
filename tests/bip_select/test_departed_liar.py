"""A peer that sent bad data and hung up before the hash verdict is still judged: its trust,
parole and ban are kept per *identity* (the key itself by default, a client's host), which
outlives the connection, as libtorrent keeps them on the peer list's entry. So a departed sole
source of a bad piece is banned (a :class:`DropPeer` naming it, for the client to ban its host),
and a liar that reconnects takes up its trust and parole where it left them.

Every source of a bad piece is blamed alike (nobody knows which block was bad): an honest
co-source loses trust too, and parole (whole pieces alone) is what tells the two apart.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence

import pytest

from bip_select import (
    MAX_DEPARTED,
    REASON_BAD_DATA,
    REASON_BANNED,
    Action,
    Block,
    BlockReceived,
    DropPeer,
    LocalProtocolError,
    PeerHave,
    PeerHaveAll,
    PeerJoined,
    PeerLeft,
    PeerQueues,
    PeerUnchokedUs,
    PieceVerified,
    QueueConfig,
    SendRequest,
    SwarmBrain,
    TorrentGeometry,
)

GEOMETRY = TorrentGeometry(8, 32768)  # 8 pieces of 2 blocks


def host(key: Hashable) -> Hashable:
    """The identity of a ``(host, connection)`` key: its host."""
    assert isinstance(key, tuple)
    identity: Hashable = key[0]
    return identity


def asked(actions: Sequence[Action], peer: Hashable) -> list[Block]:
    """The blocks requested of ``peer``, in order."""
    return [a.block for a in actions if isinstance(a, SendRequest) and a.peer == peer]


def drops(actions: Sequence[Action]) -> list[DropPeer]:
    """The drops among ``actions``."""
    return [a for a in actions if isinstance(a, DropPeer)]


def send_a_whole_piece(brain: SwarmBrain, peer: Hashable, now: float) -> int:
    """``peer`` has everything and unchokes us; it sends every block of the first piece it was
    asked for (only blocks asked of it). Returns that piece."""
    brain.handle(PeerJoined(peer, fast=True), now)
    brain.handle(PeerHaveAll(peer), now)
    blocks = asked(brain.handle(PeerUnchokedUs(peer), now), peer)
    piece = blocks[0].piece
    mine = [b for b in blocks if b.piece == piece]
    assert len(mine) == len(GEOMETRY.blocks(piece))  # it alone sends the piece
    for block in mine:
        brain.handle(BlockReceived(peer, block), now)
    return piece


def test_a_sole_source_that_left_before_the_verdict_is_banned() -> None:
    brain = SwarmBrain(GEOMETRY, rng=random.Random(1))
    piece = send_a_whole_piece(brain, "liar", 0.5)
    brain.handle(PeerLeft("liar"), 0.6)  # hangs up right after its last block
    actions = brain.handle(PieceVerified(piece, good=False), 1.0)
    assert drops(actions) == [DropPeer("liar", REASON_BAD_DATA)]
    assert brain.is_banned("liar")
    assert brain.queues.is_banned("liar")  # remembered, though gone
    assert brain.queues.hash_failures("liar") == 1
    assert brain.handle(PeerJoined("liar"), 2.0) == [DropPeer("liar", REASON_BANNED)]
    assert brain.statistics().banned == 1
    brain.check()


def test_a_reconnecting_liar_is_banned_at_the_trust_threshold() -> None:
    # Not banned as a sole source (lenient): only the trust points, -2 a bad piece, ban at
    # -7, libtorrent's. Each time from a new connection of the same host, gone before the
    # verdict: the fourth bad piece bans it all the same.
    config = QueueConfig(ban_sole_contributor=False)
    brain = SwarmBrain(GEOMETRY, rng=random.Random(2), queueing=PeerQueues(config, identity=host))
    for attempt in range(4):
        key = ("liar", attempt)
        piece = send_a_whole_piece(brain, key, float(attempt))
        if attempt:
            assert brain.queues.on_parole(key)  # its parole came back with it
        brain.handle(PeerLeft(key), attempt + 0.5)
        actions = brain.handle(PieceVerified(piece, good=False), attempt + 0.6)
        assert brain.queues.trust(key) == max(-2 * (attempt + 1), -7)
        if attempt < 3:
            assert drops(actions) == []
    assert drops(actions) == [DropPeer(("liar", 3), REASON_BAD_DATA)]
    assert brain.queues.hash_failures(("liar", 0)) == 4
    # Another port of the banned host is refused at once.
    assert brain.handle(PeerJoined(("liar", 9)), 9.0) == [DropPeer(("liar", 9), REASON_BANNED)]
    brain.check()


def test_an_honest_co_source_is_not_banned_for_a_departed_liars_piece() -> None:
    g = TorrentGeometry(4, 65536)  # 4 blocks a piece: 2 from each peer
    brain = SwarmBrain(
        g,
        rng=random.Random(0),
        queueing=PeerQueues(QueueConfig(initial_queue=2), identity=host),
    )
    honest, liar = ("honest", 0), ("liar", 0)
    for peer in (honest, liar):
        brain.handle(PeerJoined(peer), 0.0)
        brain.handle(PeerHave(peer, 0), 0.0)
    first = asked(brain.handle(PeerUnchokedUs(honest), 0.0), honest)
    second = asked(brain.handle(PeerUnchokedUs(liar), 0.0), liar)
    assert {b.piece for b in first + second} == {0}
    assert len(first) == len(second) == 2
    for peer, blocks in ((honest, first), (liar, second)):
        for block in blocks:
            brain.handle(BlockReceived(peer, block), 0.5)
    brain.handle(PeerLeft(liar), 0.6)
    assert drops(brain.handle(PieceVerified(0, good=False), 1.0)) == []
    # Blamed alike (nobody knows which blocks were bad), neither banned: both on parole.
    assert brain.queues.trust(honest) == brain.queues.trust(liar) == -2
    assert brain.queues.on_parole(honest)
    assert brain.queues.on_parole(liar)
    # The liar comes back from another port, still on parole: it is given a whole piece
    # alone, which fails: banned, and the honest peer is not.
    back = ("liar", 1)
    brain.handle(PeerJoined(back), 2.0)
    brain.handle(PeerHave(back, 1), 2.0)
    blocks = asked(brain.handle(PeerUnchokedUs(back), 2.0), back)
    assert {b.piece for b in blocks} == {1}
    for block in g.blocks(1):
        if block not in blocks:  # the rest of the piece, as its queue makes room
            blocks.extend(asked(brain.handle(BlockReceived(back, blocks[0]), 2.5), back))
    for block in g.blocks(1):
        brain.handle(BlockReceived(back, block), 2.5)
    brain.handle(PeerLeft(back), 2.6)
    assert drops(brain.handle(PieceVerified(1, good=False), 3.0)) == [
        DropPeer(back, REASON_BAD_DATA)
    ]
    assert honest in brain.peers
    assert not brain.queues.is_banned(honest)
    brain.check()


def test_two_connections_of_one_identity_are_one_source_and_banned_together() -> None:
    q = PeerQueues(identity=host)
    for key in (("h", 1), ("h", 2), ("other", 1)):
        q.add_peer(key, 0.0)
    # Both blocks came from one host: it alone sent the piece.
    assert q.piece_failed([("h", 1), ("h", 2)]) == [("h", 1), ("h", 2)]
    assert q.hash_failures(("h", 2)) == 1  # one piece, counted once
    q.add_peer(("x", 1), 0.0)
    q.add_peer(("x", 2), 0.0)
    q.remove_peer(("x", 1))
    # The departed source's identity is banned at once; its other connection goes with it.
    assert q.piece_failed([("x", 1)]) == [("x", 1), ("x", 2)]
    assert q.refuses(("x", 7))
    assert not q.refuses(("other", 1))
    assert not q.refuses(("new", 1))


def test_departed_trust_is_remembered_within_a_bound() -> None:
    q = PeerQueues()
    q.add_peer("liar", 0.0)
    q.add_peer("b", 0.0)
    assert q.piece_failed(["liar", "b"]) == []
    q.remove_peer("liar")
    assert q.trust("liar") == -2
    for n in range(MAX_DEPARTED - 1):
        q.add_peer(n, 0.0)
        q.remove_peer(n)
    assert q.trust("liar") == -2  # MAX_DEPARTED departed: all remembered
    q.add_peer("one more", 0.0)
    q.remove_peer("one more")
    with pytest.raises(LocalProtocolError):
        q.trust("liar")  # forgotten: the oldest of MAX_DEPARTED + 1
    assert q.piece_failed(["liar"]) == []  # nothing to go on: skipped
    q.add_peer("liar", 0.0)
    assert q.trust("liar") == 0
    # Judging a departed peer makes it the last to forget.
    q.add_peer("old", 0.0)
    q.remove_peer("old")
    for n in range(10):
        q.add_peer(-n, 0.0)
        q.remove_peer(-n)
    q.piece_passed(["old", "liar"])
    for n in range(MAX_DEPARTED - 1):
        q.add_peer(n, 0.0)
        q.remove_peer(n)
    assert q.trust("old") == 1
