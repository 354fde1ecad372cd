"""Review mends of the parole rules' cost (each test failed before its fix).

- A parole peer's pick asked, of every started piece another peer worked on, for the full set
  of peers that have it (``Availability.holders``: a pass over every connected peer) to see
  whether only parole peers were left to finish it: ``pick``'s ``on_parole`` is now the set of
  connected parole peers (``PeerQueues.parole_peers``, kept as parole starts and ends and peers
  come and go), the cheap exits come first (more peers have the piece than are on parole; a
  peer not on parole is asked for a block of it), and the parole holders are counted
  (``Availability.count_among``) only for a piece the pick would take.
- Forfeits were bounded per piece only: parole peers rejecting every request could fill eight
  records for every piece of the torrent. At most ``_MAX_FORFEITS_PER_PEER`` are now kept per
  peer (its oldest goes), and a departing peer's are found without a scan of every piece.

Sans-IO: time is the ``now`` each call is given.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest
from _brains import requests_to

from bip_select._availability import Availability
from bip_select._brain import SwarmBrain
from bip_select._geometry import BLOCK_SIZE, Block, TorrentGeometry
from bip_select._inputs import BlockReceived, PeerHaveAll, PeerJoined, PeerLeft, PeerUnchokedUs
from bip_select._queueing import PeerQueues, QueueConfig
from bip_select._selection import _FORFEIT_TIME, _MAX_FORFEITS_PER_PEER, PiecePicker

# ---------------------------------------------------------------- the parole pick's cost


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pieces ``Availability.count_among`` is asked about; ``holders`` (a pass over every
    peer) may not be called at all."""
    calls: list[int] = []
    original = Availability.count_among

    def count_among(self: Availability, piece: int, peers: Iterable[object]) -> int:
        calls.append(piece)
        return original(self, piece, peers)

    def holders(self: Availability, piece: int) -> set[object]:
        raise AssertionError("a parole pick walked every peer")

    monkeypatch.setattr(Availability, "count_among", count_among)
    monkeypatch.setattr(Availability, "holders", holders)
    return calls


def _picker(honest: int, honest_have: Iterable[int] | None = None) -> PiecePicker:
    """8 pieces of 2 blocks; parole peers "q", "r" and "s" have all (``s`` is not on the
    parole set passed: it is honest here), ``honest`` peers h0.. have ``honest_have``
    (default all); "gone" delivered block 0 of pieces 0..3 and left."""
    picker = PiecePicker(TorrentGeometry(8, 2 * BLOCK_SIZE), random.Random(0))
    for peer in ("gone", "q", "r"):
        picker.add_peer(peer)
        picker.peer_have_all(peer)
    for i in range(honest):
        picker.add_peer(f"h{i}")
        if honest_have is None:
            picker.peer_have_all(f"h{i}")
        else:
            picker.peer_bitfield(f"h{i}", honest_have)
    for piece in range(4):
        block = Block(piece, 0, BLOCK_SIZE)
        picker.requests.request("gone", block, 0.0)
        picker.block_received("gone", block)
    picker.remove_peer("gone")
    return picker


def test_a_parole_pick_with_honest_holders_counts_nothing(counted: list[int]) -> None:
    picker = _picker(honest=40)
    got = picker.pick("q", 8, 1.0, exclusive=True, on_parole={"q", "r"})
    assert got
    assert {block.piece for block in got} <= {4, 5, 6, 7}  # not the started ones
    assert counted == []  # 41 peers have each started piece, 2 are on parole: O(1)
    picker.check()


def test_a_peer_not_on_parole_asked_for_the_piece_is_a_cheap_exit(counted: list[int]) -> None:
    picker = _picker(honest=1, honest_have=range(4, 8))
    picker.add_peer("k")  # honest: has piece 0 only, and is asked for its last block
    picker.peer_bitfield("k", [0])
    picker.requests.request("k", Block(0, BLOCK_SIZE, BLOCK_SIZE), 1.0)
    got = picker.pick("q", 8, 2.0, exclusive=True, on_parole={"q", "r", "x", "y"})
    assert 0 not in {block.piece for block in got}
    assert 0 not in counted  # 3 holders, 4 on parole: k, asked, answered without a count
    picker.check()


def test_only_the_stranded_pieces_a_pick_takes_are_counted(counted: list[int]) -> None:
    picker = _picker(honest=40, honest_have=range(4, 8))  # pieces 0..3: only q and r left
    got = picker.pick("q", 1, 1.0, exclusive=True, on_parole={"q", "r"})
    assert len(got) == 1
    assert got[0].piece in range(4)
    assert got[0].begin == BLOCK_SIZE
    assert counted == [got[0].piece]  # four stranded pieces: one taken, one counted
    assert picker._exclusive == {got[0].piece: "q"}
    # A parole peer outside the set passed is still seen as having the piece.
    more = picker.pick("r", 8, 1.0, exclusive=True, on_parole={"q"})
    assert {block.piece for block in more} >= set(range(4)) - {got[0].piece}
    picker.check()


def test_count_among_agrees_with_peer_has() -> None:
    availability = Availability(20, random.Random(0))
    for peer in ("seed", "near", "some", "none"):
        availability.add_peer(peer)
    availability.have_all("seed")
    availability.have_all("near")
    availability.dont_have("near", 3)  # a near-seed: lacks piece 3 only
    availability.bitfield("some", [3, 9])
    peers = ["seed", "near", "some", "none", "unknown"]
    for piece in range(20):
        expected = sum(availability.peer_has(p, piece) for p in peers[:4])
        assert availability.count_among(piece, peers) == expected == availability.count(piece)
    assert availability.count_among(3, ["near", "some"]) == 1
    assert availability.count_among(0, []) == 0


# ---------------------------------------------------------------- the parole set


def _host(peer: object) -> object:
    assert isinstance(peer, tuple)
    return peer[0]


def _assert_parole_set(queues: PeerQueues, connected: Iterable[tuple[str, int]]) -> None:
    assert set(queues.parole_peers) == {p for p in connected if queues.on_parole(p)}


def test_the_parole_set_follows_parole_and_connections() -> None:
    queues = PeerQueues(identity=_host)
    a1, a2, b, c = ("a", 1), ("a", 2), ("b", 1), ("c", 1)
    connected = [a1, a2, b, c]
    for peer in connected:
        queues.add_peer(peer, 0.0)
    assert queues.parole_peers == set()
    assert queues.piece_failed([a1, b]) == []  # two contributors: parole, no ban
    assert queues.parole_peers == {a1, a2, b}  # a2: its host's twin connection
    queues.piece_passed([b])  # alone: b proved itself
    assert queues.parole_peers == {a1, a2}
    queues.piece_passed([a1])  # a twin's reward lifts nothing
    assert queues.parole_peers == {a1, a2}
    queues.remove_peer(a2)
    connected.remove(a2)
    assert queues.parole_peers == {a1}
    a3 = ("a", 3)
    queues.add_peer(a3, 1.0)  # the host's parole comes back with it
    connected.append(a3)
    assert queues.parole_peers == {a1, a3}
    _assert_parole_set(queues, connected)


def test_a_parole_peer_leaving_mid_piece_leaves_it_to_the_other() -> None:
    brain = SwarmBrain(
        TorrentGeometry(1, 3 * BLOCK_SIZE), rng=random.Random(0), queueing=QueueConfig()
    )
    for peer in ("H", "Q", "R"):
        brain.handle(PeerJoined(peer, reqq=250, fast=True), 0.0)
        brain.handle(PeerHaveAll(peer), 0.0)
    brain.queues.piece_failed(["Q", "R", "gone"])
    assert brain.queues.parole_peers == {"Q", "R"}
    asked = requests_to(brain.handle(PeerUnchokedUs("H"), 0.0), "H")
    brain.handle(BlockReceived("H", asked[0]), 1.0)
    brain.handle(PeerLeft("H"), 2.0)  # only parole peers left: Q finishes it, R waits
    assert requests_to(brain.handle(PeerUnchokedUs("Q"), 3.0), "Q") == asked[1:]
    assert brain.handle(PeerUnchokedUs("R"), 3.0) == []
    brain.handle(BlockReceived("Q", asked[1]), 4.0)
    actions = brain.handle(PeerLeft("Q"), 5.0)  # mid-piece: the last block goes to R
    assert brain.queues.parole_peers == {"R"}
    assert requests_to(actions, "R") == asked[2:]
    assert brain.picker._exclusive == {0: "R"}
    brain.check()


# ---------------------------------------------------------------- forfeits per peer


def test_a_rejecting_parole_peer_keeps_at_most_its_bound_of_forfeits() -> None:
    pieces = _MAX_FORFEITS_PER_PEER + 1
    picker = PiecePicker(TorrentGeometry(pieces, BLOCK_SIZE), random.Random(0))
    for peer in ("honest", "p"):
        picker.add_peer(peer)
        picker.peer_have_all(peer)
    order: list[int] = []
    for i in range(pieces):  # "p" unchokes us and rejects each piece it is given
        now = float(i)
        (block,) = picker.pick("p", 1, now, exclusive=True)
        assert block.piece not in order  # a forfeited piece is not given again (yet)
        order.append(block.piece)
        assert picker.block_rejected("p", block, now)
    assert set(picker._forfeited) == set(order[1:])  # its oldest forgotten
    # The forgotten piece is its again, long before its forfeit would have run out.
    (block,) = picker.pick("p", 1, float(pieces), exclusive=True)
    assert block.piece == order[0]
    assert pieces < _FORFEIT_TIME
    assert list(picker._forfeits_of["p"]) == order[1:]  # oldest first
    picker.check()
    picker.block_cancelled("p", block)
    # A verdict ends the piece's forfeits, leaving ends the peer's: both indexes agree.
    picker.requests.request("honest", Block(order[5], 0, BLOCK_SIZE), 70.0)
    picker.block_received("honest", Block(order[5], 0, BLOCK_SIZE))
    picker.piece_passed(order[5])
    assert order[5] not in picker._forfeits_of["p"]
    picker.check()
    picker.remove_peer("p")
    assert picker._forfeited == {}
    assert picker._forfeits_of == {}
    picker.check()


def test_an_asker_that_lost_the_piece_does_not_keep_it_from_a_parole_peer() -> None:
    """A peer not on parole asked for a block of a piece it then says it no longer has (BEP 54
    keeps its requests) finishes nothing: the parole peers left may take the piece, as when
    it was never asked (the cheap exit tested holders only through the askers)."""
    picker = PiecePicker(TorrentGeometry(1, 3 * BLOCK_SIZE), random.Random(0))
    for peer in ("gone", "q", "r", "h"):
        picker.add_peer(peer)
        picker.peer_have_all(peer)
    first = Block(0, 0, BLOCK_SIZE)
    picker.requests.request("gone", first, 0.0)
    picker.block_received("gone", first)
    picker.remove_peer("gone")  # the piece holds a departed peer's block
    picker.requests.request("h", Block(0, BLOCK_SIZE, BLOCK_SIZE), 1.0)
    picker.peer_dont_have("h", 0)  # h, not on parole, is still asked but no longer has it
    assert picker.pick("q", 2, 2.0, exclusive=True, on_parole={"q", "r"}) == [
        Block(0, 2 * BLOCK_SIZE, BLOCK_SIZE)
    ]
