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


def leave_with_trust(q: PeerQueues, peer: Hashable) -> None:
    """``peer`` joins, sends a good piece alone (trust 1: worth remembering) and leaves."""
    q.add_peer(peer, 0.0)
    q.piece_passed([peer])
    q.remove_peer(peer)


def test_departed_trust_is_remembered_within_a_bound() -> None:
    q = PeerQueues()
    q.add_peer("liar", 0.0)
    q.add_peer("b", 0.0)
    assert q.piece_failed(["liar", "b"]) == []
    q.remove_peer("liar")
    assert q.trust("liar") == -2
    for n in range(MAX_DEPARTED - 1):
        leave_with_trust(q, n)
    assert q.trust("liar") == -2  # MAX_DEPARTED departed: all remembered
    leave_with_trust(q, "one more")
    with pytest.raises(LocalProtocolError):
        q.trust("liar")  # forgotten: the oldest of MAX_DEPARTED + 1
    assert q.piece_failed(["liar"]) == []  # nothing to go on: skipped
    q.add_peer("liar", 0.0)
    assert q.trust("liar") == 0
    # Judging a departed peer makes it the last to forget (a departed source earns no
    # trust: which connection of its identity it was no longer tells).
    leave_with_trust(q, "old")
    for n in range(10):
        leave_with_trust(q, -n - 1)
    q.piece_passed(["old", "liar"])
    for n in range(MAX_DEPARTED - 1):
        leave_with_trust(q, n)
    assert q.trust("old") == 1


def test_an_identity_that_never_sent_a_block_is_forgotten_as_it_leaves() -> None:
    q = PeerQueues(identity=host)
    q.add_peer(("idle", 1), 0.0)
    q.add_peer(("idle", 2), 0.0)
    q.remove_peer(("idle", 1))
    assert q.trust(("idle", 1)) == 0  # its host still has a connection
    q.remove_peer(("idle", 2))
    with pytest.raises(LocalProtocolError):
        q.trust(("idle", 1))  # no block, no verdict: nothing kept
    assert not q.refuses(("idle", 3))
    # One that sent a block is kept: a verdict on its piece may come after it left.
    q.add_peer(("sender", 1), 0.0)
    q.block_received(("sender", 1), 16384, 0.5)
    q.remove_peer(("sender", 1))
    assert q.piece_failed([("sender", 1)]) == [("sender", 1)]
    assert q.refuses(("sender", 2))
    # So is gained or lost trust, parole.
    leave_with_trust(q, ("good", 1))
    assert q.trust(("good", 2)) == 1
    q.add_peer(("bad", 1), 0.0)
    q.add_peer(("other", 1), 0.0)
    assert q.piece_failed([("bad", 1), ("other", 1)]) == []
    q.piece_passed([("bad", 1)])  # back to 0 points, but still a failure on record
    q.remove_peer(("bad", 1))
    assert q.trust(("bad", 1)) == -1
    assert q.hash_failures(("bad", 1)) == 1
    assert q.on_parole(("bad", 1)) is False  # its good piece alone lifted the parole


def test_a_twin_connection_does_not_launder_a_liar() -> None:
    # A host's second connection sends whole good pieces alone while its first lies in
    # pieces shared with an honest peer of another host. Penalties go to the host; the
    # twin's good pieces earn it nothing while the host has two connections: the liar
    # reaches the ban threshold, and no later than the honest co-source.
    q = PeerQueues(identity=host)
    twin, liar, other = ("h", 1), ("h", 2), ("o", 1)
    for key in (twin, liar, other):
        q.add_peer(key, 0.0)
    banned_at: dict[Hashable, int] = {}
    for round_ in range(10):
        for dropped in q.piece_failed([liar, other]):
            banned_at.setdefault(dropped, round_)
        if q.is_banned(liar):
            break
        q.piece_passed([twin])
        q.piece_passed([twin])
        assert q.on_parole(twin)  # the host's parole is not lifted by the twin either
    assert q.is_banned(liar)
    assert q.is_banned(twin)  # one host: both its connections go
    assert banned_at[liar] == 3  # -2 a bad piece, ban at -7: the fourth
    assert banned_at.get(other, round_) >= banned_at[liar]
    assert q.hash_failures(liar) == 4


def test_rewards_come_only_from_an_identitys_sole_connection() -> None:
    q = PeerQueues(identity=host)
    q.add_peer(("h", 1), 0.0)
    q.piece_passed([("h", 1)])
    assert q.trust(("h", 1)) == 1  # one connection: as before
    q.add_peer(("h", 2), 0.0)
    q.piece_passed([("h", 1)])
    q.piece_passed([("h", 1), ("h", 2)])
    assert q.trust(("h", 1)) == 1  # two: no reward
    q.remove_peer(("h", 2))
    q.piece_passed([("h", 2)])  # a departed source earns nothing
    assert q.trust(("h", 1)) == 1
    q.piece_passed([("h", 1), ("h", 2)])  # the connected sole connection does
    assert q.trust(("h", 1)) == 2
