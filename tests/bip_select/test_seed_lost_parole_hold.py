"""Mends from a bip_select hunt (each test failed before its fix).

- Super-seeding: a peer that once sent *have all* was never revealed a piece again after it
  stopped being a seed (a *don't have*, *have none*, a late bitfield): a seed is kept out of
  the queue of waiting peers, and nothing put it back once it lacked a piece again.
- Parole: a choke with the fast extension after the peer had delivered what it was asked
  left the parole peer's exclusive hold on the piece with nothing asked of it, and so did a
  request cancelled (its piece no longer wanted) or a block dropped by our disk while it
  choked us: nobody else could take the piece, and end-game never started (a stall for
  ever). Our own cancel or drop while it unchokes us keeps the hold (its piece stays its
  own, so a bad hash bans it as sole contributor), a piece only it worked on is its again
  after the choke, a time-out forfeits the piece while another peer has it, and end-game
  duplicates spare parole pieces and parole peers.
- Lazy bitfield: a withheld piece lost and verified again before its delayed have was due
  was announced twice.

Sans-IO: time is the ``now`` each call is given.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from bip_select._actions import DropPeer, SendBitfield, SendHave, SendRequest
from bip_select._brain import SwarmBrain
from bip_select._geometry import BLOCK_SIZE, Block, TorrentGeometry
from bip_select._inputs import (
    BlockArrived,
    BlockDropped,
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
    RequestTimedOut,
)
from bip_select._queueing import QueueConfig
from bip_select._revelation import LazyBitfield, SuperSeeding
from bip_select._selection import PiecePicker

# -- super-seeding: a seed no more ---------------------------------------------------------


@pytest.mark.parametrize("how", ["dont_have", "have_none", "late_bitfield"])
def test_a_seed_that_loses_pieces_is_revealed_one(how: str) -> None:
    n = 8
    reveal = SuperSeeding(n, range(n), rng=random.Random(1), stall_timeout=5.0)
    brain = SwarmBrain(
        TorrentGeometry(n, BLOCK_SIZE), rng=random.Random(1), have=range(n), revelation=reveal
    )
    brain.handle(PeerJoined("s", fast=True), 0.0)
    brain.handle(PeerHaveAll("s"), 0.0)
    told = reveal.revealed("s")  # the piece it was assigned on joining
    assert 3 not in told
    assert reveal.assigned("s") is None
    if how == "dont_have":
        actions = brain.handle(PeerDontHave("s", 3), 1.0)
    elif how == "have_none":
        actions = brain.handle(PeerHaveNone("s"), 1.0)
    else:
        actions = brain.handle(PeerBitfield("s", frozenset(set(range(n)) - {3})), 1.0)
    for second in range(2, 10):
        actions += brain.tick(float(second))
    revealed = [a.piece for a in actions if isinstance(a, SendHave)]
    assert len(revealed) == 1
    assert revealed[0] not in told
    assert reveal.assigned("s") == revealed[0]
    if how != "have_none":
        assert revealed == [3]  # the only piece it lacks


def test_a_seed_that_lost_everything_waits_for_a_piece_it_was_not_told() -> None:
    reveal = SuperSeeding(2, [1], rng=random.Random(0))
    assert reveal.peer_joined("s", 0.0, fast=True)[1:] == [SendHave("s", 1)]
    assert reveal.peer_have_all("s", 0.0) == []
    assert reveal.peer_have_none("s", 1.0) == []  # it lacks 1 again, but was told of it
    assert reveal.piece_added(0, 2.0) == [SendHave("s", 0)]  # the piece it waited for


def _check(ss: SuperSeeding, now: float, live: bool, context: object) -> None:
    """The counters agree with the peers, and (``live``) after a tick no peer with nothing
    assigned lacks a piece it could be revealed (the hunt's model check)."""
    views = ss._peers
    have = set(ss._have)
    for piece in range(ss.num_pieces):
        held = sum(1 for v in views.values() if v.has(piece))
        assert ss._copies[piece] + ss._whole == held, (context, "copies", piece)
        on_the_way = sum(1 for v in views.values() if v.assigned == piece)
        assert ss._on_the_way[piece] == on_the_way, (context, "on the way", piece)
    assert dict(Counter(ss._copies[p] for p in have)) == ss._tally, (context, "tally")
    if not live:
        return
    for action in ss.tick(now):
        assert isinstance(action, SendHave), (context, action)
        assert action.piece in have, (context, action)
    undelivered = any(ss._copies[p] + ss._whole == 0 for p in have)
    for view in views.values():
        if view.assigned is not None or view.seed or view.told_all:
            continue
        candidates = [p for p in have if not view.has(p) and p not in view.revealed]
        if undelivered:  # only pieces nobody has and nobody is being sent
            candidates = [
                p for p in candidates if ss._copies[p] + ss._whole == 0 and not ss._on_the_way[p]
            ]
        assert not candidates, (context, "starved", view.key, candidates)


@pytest.mark.parametrize("seed", range(24))
def test_super_seeding_model_no_peer_starves(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 10)
    have = set(range(n)) if rng.random() < 0.6 else {p for p in range(n) if rng.random() < 0.7}
    ss = SuperSeeding(
        n,
        have,
        rng=random.Random(seed),
        strict=rng.random() < 0.7,
        stall_timeout=None if rng.random() < 0.5 else 2.0,
    )
    events = ["join", "join", "left", "have", "have", "bitfield", "have_all", "have_none"]
    events += ["dont_have", "added", "lost", "tick"]
    now = 0.0
    for step in range(120):
        now += rng.choice([0.0, 0.1, 1.0, 3.0])
        event = rng.choice(events)
        piece = rng.randint(-1, n)
        peers = sorted(key for key in range(7) if key in ss)  # (keys are ints 0..6)
        live = True
        if event == "join":
            key = rng.randint(0, 6)
            if key not in ss:
                ss.peer_joined(key, now, fast=rng.random() < 0.5)
        elif event == "added" and 0 <= piece < n:
            ss.piece_added(piece, now)
        elif event == "lost" and 0 <= piece < n:
            ss.piece_lost(piece, now)
        elif event == "tick":
            ss.tick(now)
        elif peers and event not in {"join", "added", "lost"}:
            key = rng.choice(peers)
            if event == "left":
                ss.peer_left(key)
                live = False  # a peer leaving returns no actions: the next event serves
            elif event == "have":
                ss.peer_have(key, piece, now)
            elif event == "bitfield":
                ss.peer_bitfield(key, {p for p in range(-1, n + 1) if rng.random() < 0.4}, now)
            elif event == "have_all":
                ss.peer_have_all(key, now)
            elif event == "have_none":
                ss.peer_have_none(key, now)
            else:
                ss.peer_dont_have(key, piece, now)
        _check(ss, now, live, (seed, step, event))


# -- parole: a hold ends with the peer's requests, not with our own cancel or drop -------

FOUR = TorrentGeometry(4, 4 * BLOCK_SIZE)  # four blocks per piece


def _parole_picker() -> PiecePicker:
    picker = PiecePicker(FOUR, random.Random(0))
    for peer in ("honest", "suspect"):
        picker.add_peer(peer)
        picker.peer_have_all(peer)
    return picker


def _pieces(blocks: list[Block]) -> set[int]:
    return {block.piece for block in blocks}


@pytest.mark.parametrize("how", ["cancelled", "dropped"])
def test_our_cancel_or_drop_keeps_the_parole_hold(how: str) -> None:
    picker = _parole_picker()
    mine = picker.pick("suspect", 1, 0.0, exclusive=True)
    piece = mine[0].piece
    ended = picker.block_cancelled if how == "cancelled" else picker.block_dropped
    assert ended("suspect", mine[0])
    assert picker._exclusive == {piece: "suspect"}  # not the peer's doing
    assert not picker.requests.num_outstanding("suspect")
    assert piece not in _pieces(picker.pick("honest", 16, 0.0))
    assert picker.pick("suspect", 1, 0.0, exclusive=True) == mine  # asked of it again
    picker.check()


@pytest.mark.parametrize("how", ["cancelled", "dropped"])
def test_our_cancel_or_drop_at_a_choking_parole_peer_ends_an_idle_hold(how: str) -> None:
    picker = _parole_picker()
    mine = picker.pick("suspect", 2, 0.0, exclusive=True)
    piece = mine[0].piece
    ended = picker.block_cancelled if how == "cancelled" else picker.block_dropped
    assert picker.peer_choked("suspect", fast=True) == []  # both still asked: held
    assert ended("suspect", mine[0], choked=True)
    assert picker._exclusive == {piece: "suspect"}  # the other request's reject will end it
    assert ended("suspect", mine[1], choked=True)
    assert not picker._exclusive  # nothing can be asked of it: the others may finish it
    assert piece in _pieces(picker.pick("honest", 16, 0.0))
    picker.check()


def test_a_dropped_block_keeps_the_suspects_piece_its_own() -> None:
    """The reviewer's proof: a block our disk dropped no longer hands the rest of a
    suspect's piece to an honest peer, so a bad piece names the suspect alone."""
    picker = _parole_picker()
    mine = picker.pick("suspect", 4, 0.0, exclusive=True)
    piece = mine[0].piece
    assert _pieces(mine) == {piece}
    for block in mine[:3]:
        assert picker.block_received("suspect", block) is not None
    assert picker.block_dropped("suspect", mine[3])  # our disk, not the suspect
    assert piece not in _pieces(picker.pick("honest", 16, 0.0))  # honest does not take it
    assert picker.pick("suspect", 4, 0.0, exclusive=True) == [mine[3]]  # its own again
    received = picker.block_received("suspect", mine[3])
    assert received is not None
    assert received.piece_complete
    assert picker.piece_failed(piece) == ("suspect",)  # its sole contributor
    picker.check()


def test_a_dropped_block_lets_a_bad_suspect_be_banned_as_sole_contributor() -> None:
    brain = SwarmBrain(FOUR, rng=random.Random(1), queueing=QueueConfig())
    for peer in ("suspect", "honest"):
        brain.handle(PeerJoined(peer, reqq=250, fast=True), 0.0)
        brain.handle(PeerHaveAll(peer), 0.0)
    brain.queues.piece_failed(["suspect", "gone"])  # shared a bad piece: parole, no ban
    assert brain.queues.on_parole("suspect")
    asked = brain.handle(PeerUnchokedUs("suspect"), 0.0)
    mine = [a.block for a in asked if isinstance(a, SendRequest)]
    piece = mine[0].piece
    assert [b.piece for b in mine] == [piece] * 4  # a whole piece, held
    for block in mine[:3]:
        brain.handle(BlockReceived("suspect", block), 0.0)
    brain.handle(BlockArrived("suspect", mine[3]), 0.0)
    again = brain.handle(BlockDropped("suspect", mine[3]), 0.0)
    assert SendRequest("suspect", mine[3]) in again  # asked of the suspect again
    honest = brain.handle(PeerUnchokedUs("honest"), 0.0)
    assert piece not in {a.block.piece for a in honest if isinstance(a, SendRequest)}
    brain.handle(BlockReceived("suspect", mine[3]), 1.0)
    verdict = brain.handle(PieceVerified(piece, False), 1.0)
    assert [a.peer for a in verdict if isinstance(a, DropPeer)] == ["suspect"]
    assert not brain.queues.on_parole("honest")


@pytest.mark.parametrize("others", [False, True])
def test_a_parole_peer_takes_back_a_piece_only_it_worked_on(others: bool) -> None:
    picker = _parole_picker()
    mine = picker.pick("suspect", 5, 0.0, exclusive=True)  # a whole piece and one block
    whole, partial = mine[0].piece, mine[-1].piece
    assert picker.block_received("suspect", mine[-1]) is not None
    picker.peer_choked("suspect", fast=True)
    assert picker._exclusive == {whole: "suspect"}  # the idle hold went with the choke
    if others:  # meanwhile another peer asks for a block of it: the piece is shared
        taken = picker.pick("honest", 1, 0.0)
        assert _pieces(taken) == {partial}
    # Unchoked again: the piece is its own again (held again) unless shared meanwhile.
    back = picker.pick("suspect", 3, 0.0, exclusive=True)
    assert (partial in _pieces(back)) is not others
    assert (picker._exclusive.get(partial) == "suspect") is not others
    picker.check()


@pytest.mark.parametrize("holders", ["both", "suspect_alone"])
def test_a_parole_peer_forfeits_a_piece_whose_request_timed_out(holders: str) -> None:
    picker = PiecePicker(FOUR, random.Random(0))
    for peer in ("honest", "suspect"):
        picker.add_peer(peer)
    picker.peer_have_all("suspect")
    picker.peer_bitfield("honest", {0, 1, 2, 3} if holders == "both" else set())
    mine = picker.pick("suspect", 2, 0.0, exclusive=True)
    piece = mine[0].piece
    assert picker.block_received("suspect", mine[0]) is not None
    assert picker.block_timed_out("suspect", mine[1])
    assert not picker._exclusive
    back = picker.pick("suspect", 1, 0.0, exclusive=True)
    if holders == "suspect_alone":  # nobody else could finish it: it takes it back
        assert back == [mine[1]]
        return
    # Refilled first, a stalled suspect would take the block back at every time-out.
    assert piece not in _pieces(back)
    assert picker.block_received("suspect", mine[1]) is not None  # late, still taken
    assert picker.pick("suspect", 2, 0.0, exclusive=True)[0].piece == piece  # it delivers
    picker.check()


def test_end_game_spares_parole_pieces_and_parole_peers() -> None:
    picker = _parole_picker()
    held = picker.pick("suspect", 4, 0.0, exclusive=True)
    rest = picker.pick("honest", 12, 0.0)
    assert picker.in_endgame()
    for block in rest[:-1]:
        assert picker.block_received("honest", block) is not None
    for block in held[:-1]:
        assert picker.block_received("suspect", block) is not None
    # A third peer with nothing pending gets a duplicate of honest's last block, never of
    # the suspect's (older, so first in line): a duplicate that won would mix its piece.
    picker.add_peer("third")
    picker.peer_have_all("third")
    assert picker.pick("third", 4, 0.0) == [rest[-1]]
    assert picker.block_received("suspect", held[-1]) is not None
    assert picker.piece_passed(held[0].piece) == ("suspect",)
    # A parole peer with nothing pending gets no duplicate (libtorrent's pick_pieces: "don't
    # double-pick anything if the peer is on parole"); off parole it would.
    assert picker.in_endgame()
    assert picker.pick("suspect", 4, 0.0, exclusive=True) == []
    assert picker.pick("suspect", 4, 0.0) == [rest[-1]]
    picker.check()


def _paroled_brain() -> tuple[SwarmBrain, int]:
    """A brain of 4 two-block pieces whose two peers (fast extension, every piece, unchoking
    us) are on parole, "A" holding a piece with one block asked of it (the hunt's set-up);
    returns the brain and that piece."""
    brain = SwarmBrain(
        TorrentGeometry(4, 2 * BLOCK_SIZE), rng=random.Random(3), queueing=QueueConfig()
    )
    brain.handle(PeerJoined("A", reqq=250, fast=True), 0.0)
    brain.handle(PeerHaveAll("A"), 0.0)
    first = [a.block for a in brain.handle(PeerUnchokedUs("A"), 0.0) if isinstance(a, SendRequest)]
    x = first[0].piece
    own, late = (b for b in first if b.piece == x)
    brain.handle(BlockReceived("A", own), 0.0)
    brain.handle(RequestTimedOut("A", late), 0.0)  # A's second block is late...
    brain.handle(PeerJoined("B", reqq=250, fast=True), 0.0)
    brain.handle(PeerHaveAll("B"), 0.0)
    brain.handle(PeerUnchokedUs("B"), 0.0)
    brain.handle(BlockReceived("B", late), 0.0)  # ...B sends it, and the piece is bad
    actions = brain.handle(PieceVerified(x, False), 0.0)
    assert not [a for a in actions if isinstance(a, DropPeer)]
    assert brain.queues.on_parole("A")
    assert brain.queues.on_parole("B")
    for peer in ("A", "B"):
        for block in list(brain.picker.requests.outstanding(peer)):
            brain.handle(RequestTimedOut(peer, block), 0.0)
    held = [p for p, owner in brain.picker._exclusive.items() if owner == "A"]
    assert len(held) == 1
    assert [b.piece for b in brain.picker.requests.outstanding("A")] == held
    return brain, held[0]


def _b_serves(brain: SwarmBrain, now: float) -> None:
    """A chokes us for good (rejecting what it has); B sends whatever it is asked, for a
    bounded 60 s of ticks."""
    brain.handle(PeerChokedUs("A"), now)
    for block in list(brain.picker.requests.outstanding("A")):
        brain.handle(BlockRejected("A", block), now)
    geometry = brain.geometry
    for _ in range(120):
        now += 0.5
        brain.tick(now)
        for block in list(brain.picker.requests.outstanding("B")):
            brain.handle(BlockReceived("B", block), now)
            piece = block.piece
            if not brain.has_piece(piece) and all(
                brain.picker.requests.is_received(b) for b in geometry.blocks(piece)
            ):
                brain.handle(PieceVerified(piece, True), now)
        if brain.is_complete:
            return


@pytest.mark.parametrize(
    "how", ["priority", "dropped", "choked_then_priority", "choked_then_dropped"]
)
def test_a_parole_peer_choking_us_does_not_stall_the_download(how: str) -> None:
    brain, held = _paroled_brain()
    (block,) = brain.picker.requests.outstanding("A")
    if how.startswith("choked"):
        # A chokes us (fast extension) with the block still asked: the hold stays until
        # the reject, but we cancel or drop the request first, and no reject follows.
        brain.handle(BlockArrived("A", block), 0.0)
        brain.handle(PeerChokedUs("A"), 0.0)
        assert brain.picker._exclusive.get(held) == "A"
    if how.endswith("priority"):
        # The piece is no longer wanted (A's request cancelled), then wanted again.
        brain.handle(PrioritiesChanged(piece_priorities={held: 0}), 0.0)
        brain.handle(PeerChokedUs("A"), 0.0)
        brain.handle(PrioritiesChanged(piece_priorities={held: 4}), 0.0)
    else:
        brain.handle(BlockArrived("A", block), 0.0)
        brain.handle(BlockDropped("A", block), 0.0)  # our disk dropped it
    _b_serves(brain, 0.0)
    assert brain.is_complete


# -- lazy bitfield -------------------------------------------------------------------------


def test_lazy_bitfield_announces_a_piece_verified_again_once() -> None:
    lazy = LazyBitfield(20, range(20), rng=random.Random(0), max_withheld=1, max_delay=2.0)
    (bitfield,) = lazy.peer_joined("p", 0.0)
    assert isinstance(bitfield, SendBitfield)
    (withheld,) = set(range(20)) - bitfield.pieces
    assert lazy.piece_lost(withheld, 0.5) == []
    assert lazy.piece_added(withheld, 0.6) == [SendHave("p", withheld)]
    assert lazy.tick(5.0) == []  # its delayed have is not sent a second time
    assert lazy.revealed("p") == set(range(20))
