"""Mends of the picker's parole holds, deadline choice and time-outs (each test failed before
its fix; the hunt's probes are condensed here).

- A parole peer's hold on a piece outlived its requests when it choked us (fast extension)
  while its last blocks waited for our disk, or while a faster peer's deadline duplicate
  settled its pending request: nothing was asked of it, no reject was coming, and no other
  peer could ever finish the piece (end-game never started).
- When no peer could make a deadline, only the single fastest holder (by raw rate) might take
  the piece, even one that could not be asked for it (a parole peer barred from a piece
  another started): the urgent piece waited until the end of the download. The holders that
  could be asked now are compared by when they would deliver (their queues counted).
- A request time-out refilled the timed-out peer, in the same step, with the very block just
  cancelled at it (with BEP 6 its reject of the cancel then reads as a reject of the new
  request).

Review of those mends (each test failed before its fix, but the mutant catchers):

- The time-out record spared the block only at the same ``now``: the next step re-asked it.
  Now not until the peer answers it (or chokes us without BEP 6, or leaves).
- A rate zeroed at a choke came back only at the next tick (now at the unchoke, or at the
  first allowed-fast piece while choked).
- A plain ``(piece, begin, length)`` tuple raised a bare AttributeError.
- Tests that catch the mutants the review found surviving: the refill at a released hold, the
  brain's ``askable`` checks (snub, depth, allowed-fast piece), and the time-out record in
  deadline and end-game duplicates.

Sans-IO: time is the ``now`` each call is given.
"""

from __future__ import annotations

import random
from collections.abc import Hashable

import pytest
from _brains import requests_to, starved_slow_peer

from bip_select._actions import SendCancel, SendRequest
from bip_select._brain import SwarmBrain
from bip_select._geometry import BLOCK_SIZE, Block, TorrentGeometry
from bip_select._inputs import (
    AllowedFast,
    BlockArrived,
    BlockDropped,
    BlockReceived,
    BlockRejected,
    Input,
    PeerBitfield,
    PeerChokedUs,
    PeerHave,
    PeerHaveAll,
    PeerJoined,
    PeerUnchokedUs,
    PieceDeadlineSet,
    PieceVerified,
    RequestTimedOut,
    Tick,
)
from bip_select._queueing import PeerQueues, QueueConfig
from bip_select._selection import PiecePicker, RarestFirst, Streaming


class _Swarm:
    """A brain and what it asked of each peer (requests minus cancels)."""

    def __init__(self, brain: SwarmBrain) -> None:
        self.brain = brain
        self.now = 0.0
        self.asked: dict[Hashable, list[Block]] = {}

    def feed(self, event: Input) -> None:
        for action in self.brain.handle(event, self.now):
            if isinstance(action, SendRequest):
                self.asked.setdefault(action.peer, []).append(action.block)
            elif isinstance(action, SendCancel):
                self.asked[action.peer].remove(action.block)
        self.brain.check()

    def deliver(self, peer: Hashable, block: Block, good: bool = True) -> None:
        """``peer`` sends ``block``; a piece complete is verified (``good``)."""
        self.asked[peer].remove(block)
        self.feed(BlockReceived(peer, block))
        geometry = self.brain.geometry
        requests = self.brain.picker.requests
        piece = block.piece
        complete = all(requests.is_received(b) for b in geometry.blocks(piece))
        if complete and not self.brain.has_piece(piece):
            self.feed(PieceVerified(piece, good))

    def serve(self, peer: Hashable, steps: int) -> None:
        """``peer`` answers every request at once, once a second, for ``steps`` seconds (or
        until the download is complete)."""
        for _ in range(steps):
            if self.brain.is_complete:
                return
            self.now += 1.0
            for block in list(self.asked.get(peer, [])):
                self.deliver(peer, block)
            self.feed(Tick(self.now))


def _parole_holder() -> tuple[_Swarm, int]:
    """P (fast extension, reqq 2) sent a whole piece that failed (parole, not banned), had its
    requests rejected at a choke, and unchoked us again: it holds a fresh piece and is asked
    for two of its four blocks. Returns the swarm and the held piece."""
    geometry = TorrentGeometry(3, 4 * BLOCK_SIZE)
    brain = SwarmBrain(
        geometry, rng=random.Random(0), queueing=QueueConfig(ban_sole_contributor=False)
    )
    swarm = _Swarm(brain)
    swarm.feed(PeerJoined("P", reqq=2, fast=True))
    swarm.feed(PeerHaveAll("P"))
    swarm.feed(PeerUnchokedUs("P"))
    bad = swarm.asked["P"][0].piece
    requests = brain.picker.requests
    while not all(requests.is_received(b) for b in geometry.blocks(bad)):
        block = next(b for b in swarm.asked["P"] if b.piece == bad)
        swarm.asked["P"].remove(block)
        swarm.feed(BlockReceived("P", block))
    swarm.feed(PieceVerified(bad, False))
    assert brain.queues.on_parole("P")
    swarm.feed(PeerChokedUs("P"))
    for block in list(swarm.asked["P"]):
        swarm.asked["P"].remove(block)
        swarm.feed(BlockRejected("P", block))
    swarm.feed(PeerUnchokedUs("P"))
    held = swarm.asked["P"][0].piece
    assert len(swarm.asked["P"]) == 2
    assert all(b.piece == held for b in swarm.asked["P"])
    return swarm, held


def _honest_seed_joins(swarm: _Swarm) -> None:
    swarm.feed(PeerJoined("H", fast=True))
    swarm.feed(PeerHaveAll("H"))
    swarm.feed(PeerUnchokedUs("H"))


# ---------------------------------------------------------------- 1. parole holds


def test_hold_ends_when_the_choking_holders_last_blocks_are_stored() -> None:
    swarm, held = _parole_holder()
    mine = list(swarm.asked["P"])
    for block in mine:  # both arrive (our disk is slow), then P chokes us: nothing to reject
        swarm.feed(BlockArrived("P", block))
    swarm.feed(PeerChokedUs("P"))
    for block in mine:
        swarm.asked["P"].remove(block)
        swarm.feed(BlockReceived("P", block))
    _honest_seed_joins(swarm)
    # The honest seed is asked for the held piece's last blocks: the download completes.
    assert any(b.piece == held for b in swarm.asked["H"])
    swarm.serve("H", 30)
    assert swarm.brain.is_complete


def test_hold_ends_when_another_peers_copy_settles_the_choking_holders_request() -> None:
    swarm, held = _parole_holder()
    brain = swarm.brain
    _honest_seed_joins(swarm)
    for _ in range(3):  # H delivers the other pieces and is measured
        swarm.now += 1.0
        for block in list(swarm.asked.get("H", [])):
            if block.piece != held:
                swarm.deliver("H", block)
        swarm.feed(Tick(swarm.now))
    swarm.now = 4.0
    swarm.feed(PieceDeadlineSet(held, 5.0))
    swarm.feed(PeerChokedUs("P"))  # its rejects are on their way
    pending_rejects = list(swarm.asked["P"])
    swarm.now = 6.0
    swarm.feed(Tick(6.0))
    late = [b for b in swarm.asked.get("H", []) if b.piece == held]
    assert late  # H was asked for P's late blocks too
    for block in late:
        swarm.deliver("H", block)  # H's copies settle P's requests (cancels to P)
    for block in pending_rejects:  # P's rejects come after: of requests no longer pending
        if block in swarm.asked["P"]:
            swarm.asked["P"].remove(block)
        swarm.feed(BlockRejected("P", block))
    swarm.serve("H", 30)
    assert brain.is_complete, brain.picker.requests.free_blocks(held)


def test_hold_stays_with_a_choking_holder_still_asked() -> None:
    """Only the holder's last request settled ends it: one still asked will be rejected."""
    swarm, held = _parole_holder()
    first, second = swarm.asked["P"]
    swarm.feed(BlockArrived("P", first))
    swarm.feed(PeerChokedUs("P"))
    swarm.asked["P"].remove(first)
    swarm.feed(BlockReceived("P", first))
    assert swarm.brain.picker.holder(held) == "P"
    swarm.asked["P"].remove(second)
    swarm.feed(BlockRejected("P", second))  # the choke's reject ends it, as before
    assert swarm.brain.picker.holder(held) is None


# ---------------------------------------------------------------- 2. deadline choice


def test_deadline_piece_not_kept_for_parole_peers_barred_from_it() -> None:
    """Host P (two connections, on parole, fast) has every piece; honest H (slow) started a
    piece that then gets a deadline nobody can make: H must finish it, P may not."""
    geometry = TorrentGeometry(40, 16 * BLOCK_SIZE)
    queues = PeerQueues(
        QueueConfig(ban_sole_contributor=False),
        identity=lambda key: "hostP" if str(key).startswith("P") else key,
    )
    brain = SwarmBrain(
        geometry, rng=random.Random(3), queueing=queues, selection=Streaming(then=RarestFirst())
    )
    swarm = _Swarm(brain)
    swarm.asked = {"P1": [], "P2": [], "H": []}
    swarm.feed(PeerJoined("P1", fast=True))
    swarm.feed(PeerHaveAll("P1"))
    swarm.feed(PeerUnchokedUs("P1"))
    bad = swarm.asked["P1"][0].piece
    for block in geometry.blocks(bad):
        swarm.deliver("P1", block, good=False)
    for event in (PeerJoined("P2", fast=True), PeerHaveAll("P2"), PeerUnchokedUs("P2")):
        swarm.feed(event)
    for event in (PeerJoined("H", fast=True), PeerHaveAll("H"), PeerUnchokedUs("H")):
        swarm.feed(event)
    assert queues.on_parole("P1")
    assert queues.on_parole("P2")
    urgent = -1
    for step in range(1, 11):  # P1, P2 send 12 blocks a second each, H 2
        swarm.now = step * 0.5
        for peer, per_step in (("P1", 6), ("P2", 6), ("H", 1)):
            for block in list(swarm.asked[peer])[:per_step]:
                swarm.deliver(peer, block)
        swarm.feed(Tick(swarm.now))
        if step == 6:
            urgent = next(b.piece for b in swarm.asked["H"])
            swarm.feed(PieceDeadlineSet(urgent, swarm.now + 2.0))
    # Two seconds on, every free block of the urgent piece is asked of H (the only peer that
    # may finish it); it waited for the end of the download before.
    assert brain.picker.requests.num_free(urgent) == 0
    assert queues.on_parole("P1")


def _rated(rates: dict[str, float], outstanding: dict[str, int]) -> PiecePicker:
    """A picker on Streaming with peers of ``rates`` (each has every piece) and
    ``outstanding`` requests already out at each (all of piece 0); piece 2 is due at 0.1 s,
    a deadline none of them can make."""
    geometry = TorrentGeometry(4, 64 * BLOCK_SIZE)
    streaming = Streaming(then=RarestFirst())
    streaming.set_deadline(2, 0.1)
    picker = PiecePicker(geometry, random.Random(0), streaming)
    for peer, rate in rates.items():
        picker.add_peer(peer)
        picker.peer_have_all(peer)
        picker.set_rate(peer, rate)
    for peer, count in outstanding.items():
        for block in picker.requests.free_blocks(0, count):
            picker.requests.request(peer, block, 0.0)
    return picker


def test_deadline_nobody_makes_goes_to_the_earliest_arrival_not_the_highest_rate() -> None:
    # "a" (16 KiB/s, nothing out) delivers a block in 1 s; "b" (32 KiB/s) only after the 60
    # it is already asked for (about 30 s). Neither makes a deadline 0.1 s away.
    picker = _rated({"a": 16384.0, "b": 32768.0}, {"b": 60})
    got = picker.pick("a", 1, 0.0)
    assert [b.piece for b in got] == [2]


def test_deadline_not_left_to_a_faster_peer_that_cannot_be_asked() -> None:
    picker = _rated({"a": 16384.0, "f": 10e6}, {})

    def askable(peer: Hashable, piece: int, now: float) -> bool:
        return peer != "f"  # f chokes us, say

    picker.askable = askable
    assert [b.piece for b in picker.pick("a", 1, 0.0)] == [2]
    picker.askable = None  # f could take it: a waits, as before
    assert 2 not in [b.piece for b in picker.pick("a", 1, 0.0)]


def test_a_peer_that_chokes_us_no_longer_keeps_a_deadline_piece_waiting() -> None:
    # "f" (10 MB/s) unchokes us, is asked for piece 20, then chokes us (fast extension) and
    # rejects: it cannot be asked for anything. The slow "a" then announces piece 20, due in
    # 3 s, which it cannot make either: it takes it (it waited for f's unchoke before).
    geometry = TorrentGeometry(64, 32768)
    brain = starved_slow_peer(geometry, Streaming())
    asked_f = requests_to(brain.handle(PeerUnchokedUs("f"), 0.0), "f")
    assert {b.piece for b in asked_f} == {20}
    brain.handle(PeerChokedUs("f"), 0.0)
    for block in asked_f:
        brain.handle(BlockRejected("f", block), 0.0)
    assert brain.handle(PieceDeadlineSet(20, 3.0), 0.0) == []
    assert requests_to(brain.handle(PeerHave("a", 20), 0.0), "a") == list(geometry.blocks(20))
    brain.check()


# ---------------------------------------------------------------- 3. time-outs


def _snubbed_at_61() -> tuple[SwarmBrain, list[Block], list[SendCancel], list[SendRequest]]:
    brain = SwarmBrain(TorrentGeometry(4, 4 * BLOCK_SIZE), rng=random.Random(0))
    brain.handle(PeerJoined("A", fast=True), 0.0)
    brain.handle(PeerHaveAll("A"), 0.0)
    first = [a.block for a in brain.handle(PeerUnchokedUs("A"), 0.0) if isinstance(a, SendRequest)]
    actions = brain.tick(61.0)
    brain.check()
    cancels = [a for a in actions if isinstance(a, SendCancel)]
    asks = [a for a in actions if isinstance(a, SendRequest)]
    return brain, first, cancels, asks


def test_a_timed_out_peer_is_not_asked_again_for_the_block_in_the_same_step() -> None:
    brain, first, cancels, asks = _snubbed_at_61()
    assert {c.block for c in cancels} == set(first)
    assert asks  # snubbed: one request at a time, of something else
    assert not {a.block for a in asks} & set(first)
    # A's reject answering our cancel is of a request no longer pending: nothing changes.
    assert not brain.handle(BlockRejected("A", first[0]), 61.1)
    assert {a.block for a in asks} <= set(brain.picker.requests.outstanding("A"))


def test_a_client_time_out_does_not_re_ask_the_block_of_the_same_peer() -> None:
    brain = SwarmBrain(TorrentGeometry(1, BLOCK_SIZE), rng=random.Random(0))
    brain.handle(PeerJoined("A", fast=True), 0.0)
    brain.handle(PeerHaveAll("A"), 0.0)
    first = [a.block for a in brain.handle(PeerUnchokedUs("A"), 0.0) if isinstance(a, SendRequest)]
    actions = brain.handle(RequestTimedOut("A", first[0]), 30.0)
    assert actions == [SendCancel("A", first[0])]  # snubbed: room for one, but not that one
    assert SendRequest("A", first[0]) not in brain.tick(31.0)  # not until A answers
    # Once A answered our cancel, the block may be asked of it again (nobody else has it).
    brain.handle(BlockRejected("A", first[0]), 31.5)
    assert SendRequest("A", first[0]) in brain.tick(32.0)


# ---------------------------------------------------------------- review of 7bec875


def test_a_timed_out_block_is_not_asked_of_the_peer_again_until_it_answers() -> None:
    """A chokes us and allows piece 0 fast; one request of it times out at 30 s while it
    serves the rest. Its next blocks (a later step) must not re-ask it for the cancelled one,
    or its BEP 6 reject of our cancel reads as a reject of the new request (the piece was no
    longer allowed fast, and stalled). Once it answered, the block may be asked again."""
    brain = SwarmBrain(TorrentGeometry(8, 8 * BLOCK_SIZE), rng=random.Random(0))
    brain.handle(PeerJoined("A", fast=True), 0.0)
    brain.handle(PeerHaveAll("A"), 0.0)
    first = requests_to(brain.handle(AllowedFast("A", 0), 0.0), "A")
    lost = first[0]
    assert brain.handle(RequestTimedOut("A", lost), 30.0) == [SendCancel("A", lost)]
    reasked: list[Block] = []
    for i, block in enumerate(first[1:]):
        reasked += requests_to(brain.handle(BlockReceived("A", block), 30.2 + i * 0.01), "A")
        brain.check()
    assert reasked
    assert lost not in reasked
    brain.handle(BlockRejected("A", lost), 30.3)  # A answers our cancel
    assert brain.picker.is_allowed_fast("A", 0)
    brain.check()
    later: list[Block] = []
    for i, block in enumerate(list(brain.picker.requests.outstanding("A"))):
        later += requests_to(brain.handle(BlockReceived("A", block), 30.4 + i * 0.01), "A")
    assert lost in later


def test_a_non_fast_choke_or_departure_forgets_the_blocks_awaiting_an_answer() -> None:
    picker = PiecePicker(TorrentGeometry(2, 2 * BLOCK_SIZE), random.Random(0))
    for peer in ("A", "B"):
        picker.add_peer(peer)
        picker.peer_have_all(peer)
    first = picker.pick("A", 1, 0.0)
    assert picker.block_timed_out("A", first[0], 30.0)
    assert first[0] not in picker.pick("A", 4, 31.0)
    picker.peer_choked("A", fast=False)  # a choke without BEP 6: no answer ever comes
    assert first[0] in picker.pick("A", 4, 32.0)
    second = picker.pick("B", 1, 33.0)
    assert picker.block_timed_out("B", second[0], 40.0)
    picker.remove_peer("B")
    picker.check()


def _measured_fast_peer() -> tuple[_Swarm, int]:
    """On Streaming, F (fast extension) sent 16 blocks a second for two seconds and chokes
    us, rejecting what it was asked: its rate for deadline decisions is 0. Returns the
    swarm and a piece nobody was asked for."""
    brain = SwarmBrain(
        TorrentGeometry(100, 2 * BLOCK_SIZE),
        rng=random.Random(0),
        selection=Streaming(then=RarestFirst()),
    )
    swarm = _Swarm(brain)
    for event in (PeerJoined("F", fast=True), PeerHaveAll("F"), PeerUnchokedUs("F")):
        swarm.feed(event)
    for step in range(8):
        swarm.now = (step + 1) * 0.25
        for block in list(swarm.asked["F"])[:4]:
            swarm.deliver("F", block)
        swarm.feed(Tick(swarm.now))
    assert brain.picker._rates["F"] > 0
    swarm.feed(PeerChokedUs("F"))
    for block in list(swarm.asked["F"]):
        swarm.asked["F"].remove(block)
        swarm.feed(BlockRejected("F", block))
    assert brain.picker._rates["F"] == 0
    fresh = next(p for p in range(100) if not brain.picker.requests.is_started(p))
    return swarm, fresh


def test_the_rate_comes_back_at_the_unchoke_not_at_the_next_tick() -> None:
    swarm, _ = _measured_fast_peer()
    swarm.now += 0.1
    swarm.feed(PeerUnchokedUs("F"))
    assert swarm.brain.picker._rates["F"] > 0


def test_the_rate_comes_back_when_a_choking_peer_allows_a_piece_fast() -> None:
    swarm, fresh = _measured_fast_peer()
    swarm.now += 0.1
    swarm.feed(AllowedFast("F", fresh))
    assert swarm.brain.picker._rates["F"] > 0


def test_block_received_takes_a_plain_triple() -> None:
    brain = SwarmBrain(TorrentGeometry(4, 4 * BLOCK_SIZE), rng=random.Random(0))
    for event in (PeerJoined("A", fast=True), PeerHaveAll("A"), PeerUnchokedUs("A")):
        brain.handle(event, 0.0)
    brain.handle(BlockReceived("A", (0, 0, BLOCK_SIZE)), 1.0)  # type: ignore[arg-type]
    assert brain.picker.requests.is_received(Block(0, 0, BLOCK_SIZE))
    asked = list(brain.picker.requests.outstanding("A"))
    plain = [(b.piece, b.begin, b.length) for b in asked[:3]]
    brain.handle(RequestTimedOut("A", plain[0]), 30.0)  # type: ignore[arg-type]
    brain.handle(BlockRejected("A", plain[1]), 30.1)  # type: ignore[arg-type]
    brain.handle(BlockDropped("A", plain[2]), 30.2)  # type: ignore[arg-type]
    assert not set(asked[:3]) & set(brain.picker.requests.outstanding("A"))
    brain.check()


def test_a_released_hold_goes_at_once_to_the_peer_it_starved() -> None:
    swarm, held = _parole_holder()
    mine = list(swarm.asked["P"])
    for block in mine:  # both arrive (our disk is slow), then P chokes us
        swarm.feed(BlockArrived("P", block))
    swarm.feed(PeerChokedUs("P"))
    for event in (PeerJoined("H", fast=True), PeerBitfield("H", frozenset({held}))):
        swarm.feed(event)
    swarm.feed(PeerUnchokedUs("H"))
    assert not swarm.asked.get("H")  # starved: P holds the only piece H has
    for block in mine:
        swarm.asked["P"].remove(block)
        swarm.feed(BlockReceived("P", block))
    # P's last block stored ended its hold: H is asked for the piece then, not at a tick.
    assert any(b.piece == held for b in swarm.asked.get("H", []))


def _slow_peer_takes_the_urgent_piece(fast_peer: str) -> bool:
    """Peers "a" (16 KiB/s) and "f" (10 MB/s) have every piece; "f" is ``fast_peer``:
    "askable", "snubbed", "deep" (more than twice its queue out) or "choking" (allowing
    another piece fast). A fresh piece gets a deadline neither can make: whether "a" takes
    it (it should unless "f", sooner, could be asked for it)."""
    geometry = TorrentGeometry(40, 4 * BLOCK_SIZE)
    brain = SwarmBrain(geometry, rng=random.Random(0), selection=Streaming(then=RarestFirst()))
    picker = brain.picker
    for peer in ("a", "f"):
        brain.handle(PeerJoined(peer, fast=True), 0.0)
        brain.handle(PeerHaveAll(peer), 0.0)
    brain.handle(PeerUnchokedUs("a"), 0.0)
    if fast_peer == "choking":
        brain.handle(AllowedFast("f", 39), 0.0)
    else:
        brain.handle(PeerUnchokedUs("f"), 0.0)
    if fast_peer == "snubbed":  # with nothing out (not over its depth of one)
        for block in list(picker.requests.outstanding("f")):
            picker.block_cancelled("f", block)
        brain.queues.snub("f")
    elif fast_peer == "deep":
        extra = 2 * brain.queues.desired_depth("f", 0.0) + 1
        for piece in range(30, 39):
            for block in picker.requests.free_blocks(piece)[:extra]:
                picker.requests.request("f", block, 0.0)
                extra -= 1
    picker.set_rate("a", 16384.0)
    picker.set_rate("f", 10e6)
    urgent = next(p for p in range(30) if not picker.requests.is_started(p))
    assert isinstance(picker.strategy, Streaming)
    picker.strategy.set_deadline(urgent, 0.001)
    return urgent in {b.piece for b in picker.pick("a", 1, 0.0)}


def test_an_urgent_piece_is_not_left_to_a_faster_peer_that_may_not_be_asked() -> None:
    assert not _slow_peer_takes_the_urgent_piece("askable")
    assert _slow_peer_takes_the_urgent_piece("snubbed")
    assert _slow_peer_takes_the_urgent_piece("deep")
    assert _slow_peer_takes_the_urgent_piece("choking")


def test_a_late_deadline_block_is_not_duplicated_to_the_peer_it_timed_out_at() -> None:
    streaming = Streaming(then=RarestFirst())
    streaming.set_deadline(0, 5.0)
    picker = PiecePicker(TorrentGeometry(2, 2 * BLOCK_SIZE), random.Random(0), streaming)
    for peer, rate in (("A", 1e6), ("B", 1000.0)):
        picker.add_peer(peer)
        picker.peer_have_all(peer)
        picker.set_rate(peer, rate)
    [lost] = picker.pick("A", 1, 0.0)
    assert lost.piece == 0
    assert picker.block_timed_out("A", lost, 1.0)
    picker.requests.request("B", lost, 1.0)  # late at B (16 s a block), A would be sooner
    assert lost not in picker.pick("A", 4, 2.0)
    picker.check()


def test_an_end_game_duplicate_is_not_the_block_that_timed_out_at_the_peer() -> None:
    picker = PiecePicker(TorrentGeometry(1, BLOCK_SIZE), random.Random(0))
    for peer in ("A", "B"):
        picker.add_peer(peer)
        picker.peer_have_all(peer)
    [lost] = picker.pick("A", 1, 0.0)
    assert picker.block_timed_out("A", lost, 1.0)
    assert picker.pick("B", 1, 2.0) == [lost]
    assert picker.in_endgame()
    assert picker.pick("A", 1, 3.0) == []  # not asked of A again until it answers
    picker.check()


# ---------------------------------------------------------------- final read


def test_a_snub_of_more_requests_than_the_record_keeps_re_asks_none_of_them() -> None:
    """A snub cancels every request of the peer at once: with 100 out, the record's bound of
    64 forgot the first ones cancelled before the same step's refill, which asked the peer
    again for one of them (its BEP 6 reject of our cancel then read as a reject of it)."""
    brain = SwarmBrain(
        TorrentGeometry(8, 32 * BLOCK_SIZE),
        rng=random.Random(0),
        queueing=QueueConfig(initial_queue=100),
    )
    brain.handle(PeerJoined("A", fast=True), 0.0)
    brain.handle(PeerHaveAll("A"), 0.0)
    first = [a.block for a in brain.handle(PeerUnchokedUs("A"), 0.0) if isinstance(a, SendRequest)]
    assert len(first) == 100
    actions = brain.tick(61.0)
    cancelled = {a.block for a in actions if isinstance(a, SendCancel)}
    assert cancelled == set(first)
    asked = {a.block for a in actions if isinstance(a, SendRequest) and a.peer == "A"}
    assert asked  # snubbed: one at a time, of something else
    assert not asked & cancelled
    brain.check()


def test_silent_parole_peers_do_not_pass_a_piece_round_while_an_honest_seed_has_it() -> None:
    """Three parole peers that never send: each took the piece at the previous one's
    time-out (its own forfeit barred only itself), so the honest seed never got it."""
    picker = PiecePicker(TorrentGeometry(2, 2 * BLOCK_SIZE), random.Random(0))
    parole = {"p1", "p2", "p3"}
    for peer in [*sorted(parole), "honest"]:
        picker.add_peer(peer)
        picker.peer_bitfield(peer, [0, 1])
    first = picker.pick("p1", 2, 0.0, exclusive=True, on_parole=parole)
    assert {b.piece for b in first} == {first[0].piece}
    piece = first[0].piece
    for block in first:
        picker.block_timed_out("p1", block, 60.0)
    # p1 forfeited the piece: neither p2 nor p3 may take it while the honest seed has it.
    taken = picker.pick("p2", 2, 60.0, exclusive=True, on_parole=parole)
    assert all(b.piece != piece for b in taken)
    assert not picker.parole_may_take("p3", piece, 60.0, parole)
    assert {b.piece for b in picker.pick("honest", 2, 60.0)} == {piece}


@pytest.mark.parametrize("other", ["chokes us", "unchokes us and stays silent"])
def test_a_forfeited_piece_is_not_kept_from_a_parole_peer_for_a_holder_never_asked(
    other: str,
) -> None:
    """Parole peers A (silent, joined first) and B (honest), and N not on parole that has
    the piece but never delivers it: the rule keeping a forfeited piece from other parole
    peers while one not on parole has it kept it from B for ever (A retook it at each of its
    forfeits' ends). It holds only while such a peer could be asked now."""
    geometry = TorrentGeometry(2, 2 * BLOCK_SIZE, 4 * BLOCK_SIZE)
    brain = SwarmBrain(geometry, rng=random.Random(0), have=[0])
    out: set[tuple[str, Block]] = set()
    now = 0.0

    def feed(event: Input) -> None:
        for action in brain.handle(event, now):
            if isinstance(action, SendRequest):
                out.add((str(action.peer), action.block))
            elif isinstance(action, SendCancel):
                out.discard((str(action.peer), action.block))

    for peer in "ABN":
        feed(PeerJoined(peer, fast=True))
    brain.queues.piece_failed(["A", "B"])  # a failed piece both sent
    for peer in "ABN":
        feed(PeerHaveAll(peer))
    feed(PeerUnchokedUs("A"))
    feed(PeerUnchokedUs("B"))
    if other != "chokes us":
        feed(PeerUnchokedUs("N"))
    for _ in range(600):
        now += 1.0
        for peer, block in sorted(out, key=repr):
            if peer == "B":
                out.discard((peer, block))
                feed(BlockReceived(peer, block))
                if all(brain.picker.requests.is_received(b) for b in geometry.blocks(1)):
                    feed(PieceVerified(1, True))
        feed(Tick(now))
        if brain.is_complete:
            break
    assert brain.is_complete, (now, sorted(out, key=repr))
    brain.check()
