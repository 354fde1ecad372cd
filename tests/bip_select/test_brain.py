"""SwarmBrain: inputs routed to the strategies, decisions turned into actions."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_select._actions import (
    REASON_BAD_DATA,
    REASON_SNUBBED,
    Action,
    DropPeer,
    SendBitfield,
    SendCancel,
    SendChoke,
    SendHave,
    SendHaveAll,
    SendHaveNone,
    SendInterested,
    SendNotInterested,
    SendRequest,
    SendUnchoke,
)
from bip_select._brain import REASON_BANNED, SwarmBrain
from bip_select._choking import Choker
from bip_select._errors import LocalProtocolError
from bip_select._geometry import Block, TorrentGeometry
from bip_select._inputs import (
    AllowedFast,
    BlockArrived,
    BlockDropped,
    BlockReceived,
    BlockRejected,
    BlockSent,
    Input,
    PeerBitfield,
    PeerChokedUs,
    PeerDontHave,
    PeerHave,
    PeerHaveAll,
    PeerHaveNone,
    PeerInterested,
    PeerJoined,
    PeerLeft,
    PeerNotInterested,
    PeerUnchokedUs,
    PeerUploadOnly,
    PieceDiscarded,
    PieceLost,
    PieceVerified,
    PrioritiesChanged,
    RequestTimedOut,
    Tick,
)
from bip_select._queueing import QueueConfig
from bip_select._revelation import HonestRevelation, LazyBitfield, SuperSeeding
from bip_select._selection import Sequential, Streaming

GEOMETRY = TorrentGeometry(8, 32768)  # 8 pieces of 2 blocks


def brain(have: Iterable[int] = (), **options: object) -> SwarmBrain:
    return SwarmBrain(GEOMETRY, rng=random.Random(1), have=have, **options)  # type: ignore[arg-type]


def of(actions: Sequence[Action], kind: type[Action]) -> list[Action]:
    return [a for a in actions if isinstance(a, kind)]


def requests(actions: Sequence[Action]) -> list[Block]:
    """The blocks of the SendRequest actions, in order."""
    return [a.block for a in actions if isinstance(a, SendRequest)]


def seeded_leecher(**options: object) -> SwarmBrain:
    """A leecher connected to a seed ``"s"`` that unchoked it."""
    b = brain((), **options)
    b.handle(PeerJoined("s", fast=True), 0.0)
    b.handle(PeerHaveAll("s"), 0.0)
    return b


class TestJoining:
    def test_a_leecher_with_nothing_says_have_none_to_a_fast_peer(self) -> None:
        assert brain().handle(PeerJoined("a", fast=True), 0.0) == [SendHaveNone("a")]

    def test_a_seed_says_have_all(self) -> None:
        assert brain(range(8)).handle(PeerJoined("a", fast=True), 0.0) == [SendHaveAll("a")]

    def test_a_partial_peer_sends_its_bitfield(self) -> None:
        actions = brain({1, 3}).handle(PeerJoined("a"), 0.0)
        assert actions == [SendBitfield("a", frozenset({1, 3}))]

    def test_joining_twice_is_a_local_error(self) -> None:
        b = brain()
        b.handle(PeerJoined("a"), 0.0)
        with pytest.raises(LocalProtocolError):
            b.handle(PeerJoined("a"), 0.0)

    def test_inputs_about_unknown_peers_are_local_errors(self) -> None:
        b = brain()
        for event in (PeerHave("x", 1), PeerLeft("x"), BlockReceived("x", Block(0, 0, 16384))):
            with pytest.raises(LocalProtocolError):
                b.handle(event, 0.0)

    def test_something_else_is_not_an_input(self) -> None:
        with pytest.raises(LocalProtocolError):
            brain().handle(object(), 0.0)  # type: ignore[arg-type]

    def test_unhashable_peer_keys_are_refused(self) -> None:
        with pytest.raises(LocalProtocolError):
            brain().handle(PeerJoined([1]), 0.0)  # type: ignore[arg-type]

    def test_revelation_must_match_the_pieces_we_have(self) -> None:
        with pytest.raises(LocalProtocolError):
            brain({1}, revelation=HonestRevelation(8, have={2}))

    def test_refill_interval_must_be_positive(self) -> None:
        with pytest.raises(LocalProtocolError):
            brain(refill_interval=0)


class TestInterest:
    def test_a_have_of_a_wanted_piece_makes_us_interested(self) -> None:
        b = brain()
        b.handle(PeerJoined("a"), 0.0)
        assert b.handle(PeerHave("a", 2), 0.0) == [SendInterested("a")]
        assert b.handle(PeerHave("a", 3), 0.0) == []
        assert b.is_interested("a")

    def test_a_have_of_a_piece_we_have_does_not(self) -> None:
        b = brain({2})
        b.handle(PeerJoined("a"), 0.0)
        assert b.handle(PeerHave("a", 2), 0.0) == []

    def test_bitfield_and_have_all(self) -> None:
        b = brain()
        b.handle(PeerJoined("a"), 0.0)
        b.handle(PeerJoined("s", fast=True), 0.0)
        assert b.handle(PeerBitfield("a", frozenset({0, 5})), 0.0) == [SendInterested("a")]
        assert b.handle(PeerHaveAll("s"), 0.0) == [SendInterested("s")]
        assert b.handle(PeerHaveNone("s"), 0.0) == [SendNotInterested("s")]

    def test_a_late_bitfield_replaces_the_peers_pieces(self) -> None:
        """aria2 sends a bitfield after haves: availability takes back what it lacks."""
        b = brain({1})
        b.handle(PeerJoined("a"), 0.0)
        b.handle(PeerJoined("b"), 0.0)
        b.handle(PeerHave("a", 2), 0.0)
        b.handle(PeerHave("b", 2), 0.0)
        b.handle(PeerHave("a", 3), 0.0)
        assert b.handle(PeerBitfield("a", frozenset({1, 3, 4})), 0.0) == []
        availability = b.picker.availability
        assert [availability.count(p) for p in range(6)] == [0, 1, 1, 1, 1, 0]
        assert list(availability.peer_pieces("a")) == [1, 3, 4]
        assert b.handle(PeerBitfield("a", frozenset({1})), 0.0) == [SendNotInterested("a")]
        assert b.handle(PeerBitfield("a", range(8)), 0.0) == [SendInterested("a")]
        assert availability.is_seed("a")
        assert b.handle(PeerHaveNone("a"), 0.0) == [SendNotInterested("a")]
        assert availability.count(2) == 1
        b.check()

    def test_a_late_bitfield_under_super_seeding(self) -> None:
        have = range(8)
        b = brain(have, revelation=SuperSeeding(8, have, rng=random.Random(0)))
        b.handle(PeerJoined("a", fast=True), 0.0)
        b.handle(PeerHaveAll("a"), 0.0)
        b.handle(PeerBitfield("a", frozenset({0, 1})), 0.0)
        b.handle(PeerHaveNone("a"), 0.0)
        b.handle(PeerBitfield("a", frozenset({2})), 0.0)
        b.handle(PeerLeft("a"), 0.0)
        b.check()

    def test_getting_the_piece_ends_interest(self) -> None:
        b = brain()
        b.handle(PeerJoined("a"), 0.0)
        b.handle(PeerHave("a", 4), 0.0)
        actions = b.handle(PieceVerified(4, good=True), 1.0)
        assert SendNotInterested("a") in actions
        assert SendHave("a", 4) in actions

    def test_dont_have_can_end_interest(self) -> None:
        b = brain()
        b.handle(PeerJoined("a"), 0.0)
        b.handle(PeerHave("a", 4), 0.0)
        assert b.handle(PeerDontHave("a", 4), 0.0) == [SendNotInterested("a")]

    def test_priority_zero_pieces_are_not_interesting(self) -> None:
        b = brain(piece_priorities=[0, 4, 4, 4, 4, 4, 4, 4])
        b.handle(PeerJoined("a"), 0.0)
        assert b.handle(PeerHave("a", 0), 0.0) == []
        assert b.handle(PrioritiesChanged(piece_priorities={0: 7}), 0.0) == [SendInterested("a")]


class TestRequests:
    def test_unchoke_brings_requests_then_blocks_bring_more(self) -> None:
        b = seeded_leecher(queueing=QueueConfig(initial_queue=4))
        actions = b.handle(PeerUnchokedUs("s"), 0.0)
        first = requests(actions)
        assert len(first) == 4
        assert len(set(first)) == 4
        more: list[Block] = []
        for block in first:
            more += requests(b.handle(BlockReceived("s", block), 0.5))
        assert more
        assert not set(more) & set(first)
        b.check()

    def test_choked_without_fast_frees_the_requests_for_others(self) -> None:
        b = brain()
        for peer in ("a", "b"):
            b.handle(PeerJoined(peer), 0.0)
            b.handle(PeerBitfield(peer, frozenset(range(8))), 0.0)
        asked = requests(b.handle(PeerUnchokedUs("a"), 0.0))
        b.handle(PeerUnchokedUs("b"), 0.0)
        b.handle(PeerChokedUs("a"), 1.0)
        assert b.picker.requests.num_outstanding("a") == 0
        # The blocks are free again: "b" gets them as its queue drains.
        assert all("a" not in b.picker.requests.requesters(blk) for blk in asked)
        taken: list[Block] = []
        for blk in list(b.picker.requests.outstanding("b")):
            taken += requests(b.handle(BlockReceived("b", blk), 2.0))
        assert set(asked) & set(taken)
        b.check()

    def test_fast_peer_rejects_free_blocks(self) -> None:
        b = seeded_leecher()
        asked = requests(b.handle(PeerUnchokedUs("s"), 0.0))
        b.handle(PeerChokedUs("s"), 1.0)
        assert b.picker.requests.num_outstanding("s") == len(asked)  # waiting for rejects
        for block in asked:
            b.handle(BlockRejected("s", block), 1.0)
        assert b.picker.requests.num_outstanding("s") == 0
        b.check()

    def test_allowed_fast_pieces_are_requested_while_choked(self) -> None:
        b = seeded_leecher()
        actions = b.handle(AllowedFast("s", 6), 0.0)
        assert {block.piece for block in requests(actions)} == {6}

    def test_a_request_timed_out_by_the_client_is_cancelled_and_reissued(self) -> None:
        b = brain()
        for peer in ("a", "b"):
            b.handle(PeerJoined(peer), 0.0)
            b.handle(PeerHave(peer, 0), 0.0)
        block = requests(b.handle(PeerUnchokedUs("a"), 0.0))[0]
        b.handle(PeerUnchokedUs("b"), 0.0)
        actions = b.handle(RequestTimedOut("a", block), 5.0)
        assert actions[0] == SendCancel("a", block)
        assert block in b.picker.requests.outstanding("b")

    def test_requests_time_out_on_tick(self) -> None:
        b = brain(queueing=QueueConfig(snub_timeout=5.0, request_timeout=5.0))
        b.handle(PeerJoined("a"), 0.0)
        b.handle(PeerHave("a", 0), 0.0)
        asked = requests(b.handle(PeerUnchokedUs("a"), 0.0))
        actions = b.tick(6.0)
        assert {a.block for a in actions if isinstance(a, SendCancel)} >= set(asked) - set(
            b.picker.requests.outstanding("a")
        )
        assert b.queues.is_snubbed("a")

    def test_snubbed_peers_can_be_dropped(self) -> None:
        b = brain(queueing=QueueConfig(snub_timeout=5.0), drop_snubbed_after=10.0)
        b.handle(PeerJoined("a"), 0.0)
        b.handle(PeerHave("a", 0), 0.0)
        b.handle(PeerUnchokedUs("a"), 0.0)
        b.tick(6.0)
        actions = b.tick(17.0)
        assert DropPeer("a", REASON_SNUBBED) in actions
        assert "a" not in b.peers

    def test_end_game_duplicates_and_cancels_the_losers(self) -> None:
        g = TorrentGeometry(1, 16384)
        b = SwarmBrain(g, rng=random.Random(0))
        for peer in ("a", "b"):
            b.handle(PeerJoined(peer), 0.0)
            b.handle(PeerHave(peer, 0), 0.0)
        [block] = requests(b.handle(PeerUnchokedUs("a"), 0.0))
        assert requests(b.handle(PeerUnchokedUs("b"), 0.0)) == [block]  # a duplicate
        assert b.statistics().endgame
        assert b.handle(BlockReceived("b", block), 1.0) == [SendCancel("a", block)]

    def test_priorities_dropping_a_piece_cancel_its_requests(self) -> None:
        b = seeded_leecher()
        asked = requests(b.handle(PeerUnchokedUs("s"), 0.0))
        piece = asked[0].piece
        actions = b.handle(PrioritiesChanged(piece_priorities={piece: 0}), 1.0)
        cancelled = {a.block for a in actions if isinstance(a, SendCancel)}
        assert cancelled == {blk for blk in asked if blk.piece == piece}
        assert all(blk.piece != piece for blk in requests(actions))

    def test_file_priorities_map_onto_pieces(self) -> None:
        g = TorrentGeometry(4, 16384, file_pieces=[range(2), range(2, 4)])
        b = SwarmBrain(g, rng=random.Random(0))
        b.handle(PeerJoined("s"), 0.0)
        b.handle(PeerBitfield("s", frozenset(range(4))), 0.0)
        b.handle(PrioritiesChanged(file_priorities=[0, 4]), 0.0)
        assert {blk.piece for blk in requests(b.handle(PeerUnchokedUs("s"), 0.0))} <= {2, 3}


class TestPieces:
    def test_sole_source_of_a_bad_piece_is_banned(self) -> None:
        b = seeded_leecher()
        asked = requests(b.handle(PeerUnchokedUs("s"), 0.0))
        piece = asked[0].piece
        for block in GEOMETRY.blocks(piece):
            if block in asked:
                b.handle(BlockReceived("s", block), 0.5)
        actions = b.handle(PieceVerified(piece, good=False), 1.0)
        assert (
            actions[-1] == DropPeer("s", REASON_BAD_DATA)
            or DropPeer("s", REASON_BAD_DATA) in actions
        )
        assert b.is_banned("s")
        assert "s" not in b.peers
        assert b.handle(PeerJoined("s"), 2.0) == [DropPeer("s", REASON_BANNED)]
        b.check()

    def test_a_co_source_that_left_still_shares_the_blame(self) -> None:
        g = TorrentGeometry(1, 65536)  # 4 blocks: 2 from each peer
        b = SwarmBrain(g, rng=random.Random(0), queueing=QueueConfig(initial_queue=2))
        for peer in ("honest", "bad"):
            b.handle(PeerJoined(peer), 0.0)
            b.handle(PeerHave(peer, 0), 0.0)
        first = requests(b.handle(PeerUnchokedUs("honest"), 0.0))
        second = requests(b.handle(PeerUnchokedUs("bad"), 0.0))
        assert len(first) == len(second) == 2
        for block in first:
            b.handle(BlockReceived("honest", block), 0.5)
        for block in second:
            b.handle(BlockReceived("bad", block), 0.5)
        b.handle(PeerLeft("bad"), 0.6)
        actions = b.handle(PieceVerified(0, good=False), 1.0)
        assert not of(actions, DropPeer)
        assert "honest" in b.peers
        assert b.queues.on_parole("honest")

    def test_a_good_piece_is_announced_and_a_seed_seeds(self) -> None:
        b = brain(range(7))
        b.handle(PeerJoined("a"), 0.0)
        actions = b.handle(PieceVerified(7, good=True), 1.0)
        assert SendHave("a", 7) in actions
        assert b.is_seed
        assert b.choker.seeding
        assert b.handle(PieceVerified(7, good=True), 1.0) == []

    def test_verifying_a_piece_outside_the_torrent_is_a_local_error(self) -> None:
        with pytest.raises(LocalProtocolError):
            brain().handle(PieceVerified(8, good=True), 0.0)


class TestStatistics:
    def test_a_snapshot_of_the_state(self) -> None:
        b = seeded_leecher()
        b.handle(PeerJoined("x", fast=True), 0.0)
        b.handle(PeerUnchokedUs("s"), 0.0)
        stats = b.statistics()
        assert stats.peers == 2
        assert stats.interested == 1
        assert stats.unchoked_by == 1
        assert stats.outstanding_requests > 0
        assert stats.have == 0
        assert stats.wanted == 8
        assert not stats.endgame
        assert stats.banned == 0


class TestChoking:
    def test_interested_peers_are_unchoked(self) -> None:
        b = brain(range(8))
        b.handle(PeerJoined("a"), 0.0)
        assert b.handle(PeerInterested("a"), 0.0) == [SendUnchoke("a")]
        assert b.handle(PeerNotInterested("a"), 1.0) == [SendChoke("a")]

    def test_custom_choker_slots(self) -> None:
        b = brain(
            range(8), choker=Choker(rng=random.Random(0), regular_slots=1, optimistic_slots=0)
        )
        for peer in range(3):
            b.handle(PeerJoined(peer), 0.0)
            b.handle(PeerInterested(peer), 0.0)
        b.tick(0.0)
        assert len(b.choker.unchoked) == 1

    def test_block_sent_feeds_the_upload_rate(self) -> None:
        b = brain(range(8))
        b.handle(PeerJoined("a"), 0.0)
        b.handle(BlockSent("a", Block(0, 0, 16384)), 1.0)
        assert b.choker.upload_rate("a", 1.0) > 0

    def test_tick_input_and_deadlines(self) -> None:
        b = brain()
        assert b.next_deadline() is None
        b.handle(PeerJoined("a"), 0.0)
        assert b.next_deadline() == 0.0
        b.handle(Tick(0.0), 0.0)
        deadline = b.next_deadline()
        assert deadline is not None
        assert deadline > 0.0


def revealed_in(actions: Sequence[Action]) -> set[int]:
    """The pieces the actions tell a peer we have."""
    pieces: set[int] = set()
    for action in actions:
        if isinstance(action, SendHave):
            pieces.add(action.piece)
        elif isinstance(action, SendBitfield):
            pieces |= action.pieces
    return pieces


class TestLaterNews:
    def test_upload_only_can_change_after_the_join(self) -> None:
        b = brain()
        b.handle(PeerJoined("a", upload_only=False), 0.0)
        assert not b.is_upload_only("a")
        assert b.handle(PeerUploadOnly("a", True), 0.0) == []
        assert b.is_upload_only("a")
        b.handle(PeerUploadOnly("a", False), 0.0)
        assert not b.is_upload_only("a")
        with pytest.raises(LocalProtocolError):
            b.handle(PeerUploadOnly("nobody", True), 0.0)

    def test_a_lost_piece_is_wanted_and_asked_for_again(self) -> None:
        b = brain(range(8))
        assert b.is_seed
        b.handle(PeerJoined("s", fast=True), 0.0)
        assert b.handle(PeerHaveAll("s"), 0.0) == []
        actions = b.handle(PieceLost(3), 1.0)
        assert actions == [SendInterested("s")]
        assert b.num_have == 7
        assert not b.has_piece(3)
        assert not b.choker.seeding
        assert requests(b.handle(PeerUnchokedUs("s"), 1.0)) == list(GEOMETRY.blocks(3))
        actions = b.handle(PieceVerified(3, good=True), 2.0)
        assert SendHave("s", 3) in actions  # announced again once it is back
        assert SendNotInterested("s") in actions
        assert b.is_seed
        b.check()

    def test_losing_a_piece_we_lack_or_do_not_want_changes_little(self) -> None:
        b = brain({1}, piece_priorities=[4, 0, 4, 4, 4, 4, 4, 4])
        b.handle(PeerJoined("a"), 0.0)
        b.handle(PeerHave("a", 1), 0.0)
        assert b.handle(PieceLost(0), 0.0) == []  # never had it
        assert b.handle(PieceLost(1), 0.0) == []  # priority 0: not wanted again
        assert not b.has_piece(1)
        assert not b.is_interested("a")
        with pytest.raises(LocalProtocolError):
            b.handle(PieceLost(8), 0.0)
        b.check()

    @pytest.mark.parametrize("strategy", ["lazy", "super"])
    def test_a_lost_piece_is_not_revealed(self, strategy: str) -> None:
        have = range(8)
        revelation = (
            LazyBitfield(8, have, rng=random.Random(0), max_withheld=8, max_delay=5.0)
            if strategy == "lazy"
            else SuperSeeding(8, have, rng=random.Random(0))
        )
        b = brain(have, revelation=revelation)
        told = revealed_in(b.handle(PeerJoined("a", fast=True), 0.0))
        assert 0 < len(told) < 8
        for piece in range(8):
            if piece not in told:
                b.handle(PieceLost(piece), 1.0)
        later = b.handle(PeerJoined("b", fast=True), 1.0) + b.handle(Tick(10.0), 10.0)
        assert revealed_in(later) <= told
        b.check()


class TestRevelationAndSelection:
    def test_super_seeding_reveals_one_piece(self) -> None:
        have = range(8)
        b = brain(have, revelation=SuperSeeding(8, have, rng=random.Random(0)))
        actions = b.handle(PeerJoined("a", fast=True), 0.0)
        assert actions[0] == SendHaveNone("a")
        assert len(of(actions, SendHave)) == 1

    def test_lazy_bitfield_haves_come_on_ticks(self) -> None:
        have = range(6)
        b = brain(have, revelation=LazyBitfield(8, have, rng=random.Random(2), max_delay=2.0))
        first = b.handle(PeerJoined("a"), 0.0)
        [bitfield] = of(first, SendBitfield)
        assert isinstance(bitfield, SendBitfield)
        withheld = set(have) - bitfield.pieces
        assert withheld
        deadline = b.next_deadline()
        assert deadline is not None
        assert deadline <= 2.0
        later: set[int] = set()
        for step in range(1, 6):
            later |= {a.piece for a in b.tick(step * 0.5) if isinstance(a, SendHave)}
        assert later == withheld

    def test_sequential_selection(self) -> None:
        b = seeded_leecher(selection=Sequential())
        asked = requests(b.handle(PeerUnchokedUs("s"), 0.0))
        assert [blk.piece for blk in asked] == sorted(blk.piece for blk in asked)
        assert asked[0] == Block(0, 0, 16384)

    def test_deadlines_need_a_streaming_strategy(self) -> None:
        with pytest.raises(LocalProtocolError):
            brain().handle(PrioritiesChanged(deadlines={1: 5.0}), 0.0)

    def test_deadline_pieces_come_first(self) -> None:
        b = seeded_leecher(selection=Streaming())
        b.handle(PrioritiesChanged(deadlines={6: 5.0}), 0.0)
        asked = requests(b.handle(PeerUnchokedUs("s"), 0.0))
        assert asked[0].piece == 6


# -------------------------------------------------------------------- bookkeeping properties

PEERS = ("a", "b", "c")
BLOCKS = [blk for piece in range(GEOMETRY.num_pieces) for blk in GEOMETRY.blocks(piece)]


def inputs() -> st.SearchStrategy[Input]:
    peer = st.sampled_from(PEERS)
    # Mostly real pieces and blocks, sometimes a peer's nonsense (the brain ignores it).
    piece = st.one_of(st.integers(0, GEOMETRY.num_pieces - 1), st.sampled_from([-1, 8, 2**40]))
    block = st.one_of(
        st.sampled_from(BLOCKS),
        st.sampled_from([Block(0, 5, 100), Block(99, 0, 16384), Block(1, 0, -1)]),
    )
    return st.one_of(
        st.builds(PeerJoined, peer, fast=st.booleans(), reqq=st.sampled_from([None, 2, 250])),
        st.builds(PeerLeft, peer),
        st.builds(PeerBitfield, peer, st.frozensets(piece)),
        st.builds(PeerHave, peer, piece),
        st.builds(PeerHaveAll, peer),
        st.builds(PeerHaveNone, peer),
        st.builds(PeerDontHave, peer, piece),
        st.builds(PeerChokedUs, peer),
        st.builds(PeerUnchokedUs, peer),
        st.builds(PeerInterested, peer),
        st.builds(PeerNotInterested, peer),
        st.builds(AllowedFast, peer, piece),
        st.builds(BlockArrived, peer, block),
        st.builds(BlockReceived, peer, block),
        st.builds(BlockDropped, peer, block),
        st.builds(BlockRejected, peer, block),
        st.builds(RequestTimedOut, peer, block),
        st.builds(BlockSent, peer, block),
        st.builds(PieceVerified, piece, st.booleans()),
        st.builds(PieceDiscarded, piece),
        st.builds(PieceLost, st.integers(0, GEOMETRY.num_pieces - 1)),
        st.builds(PeerUploadOnly, peer, st.booleans()),
        st.builds(Tick, st.just(0.0)),
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(inputs(), st.floats(0, 30)), max_size=50))
def test_bookkeeping_survives_any_input_sequence(steps: list[tuple[Input, float]]) -> None:
    """Whatever arrives, in whatever order: counts stay right, no block is asked twice
    outside end-game, and every request is settled or still tracked as outstanding."""
    b = brain()
    now = 0.0
    outstanding: dict[tuple[object, Block], None] = {}
    # Everyone joins first (later joins of a peer still present are API misuse, and
    # inputs about peers who left are too): the interesting sequences are the rest.
    joins: list[tuple[Input, float]] = [(PeerJoined(p, fast=p != "c"), 0.0) for p in PEERS]
    for event, delta in joins + steps:
        now += delta
        if isinstance(event, BlockDropped | BlockRejected):
            # The block came (or its arrival is replaced), or the peer refused it: that
            # request is settled, and the brain may ask the same peer for it again within
            # this very step.
            outstanding.pop((event.peer, event.block), None)
        try:
            actions = b.handle(event, now)
        except LocalProtocolError:
            continue  # the input was about a peer not joined: nothing may have changed
        for action in actions:
            if isinstance(action, SendCancel):
                outstanding.pop((action.peer, action.block), None)
            elif isinstance(action, SendRequest):
                key = (action.peer, action.block)
                assert key not in outstanding
                outstanding[key] = None
        b.check()
        for piece in range(GEOMETRY.num_pieces):
            assert b.picker.availability.count(piece) >= 0
        live = {
            (peer, blk)
            for peer in b.picker.requests.peers()
            for blk in b.picker.requests.outstanding(peer)
        }
        # Every request the brain still counts was one it sent.
        assert live <= set(outstanding)
        if not b.picker.in_endgame():
            # Outside end-game no block is asked of two peers at once (the request book
            # refuses it, unless a deadline piece is late, and there are none here).
            asked = [blk for _, blk in live]
            assert len(asked) == len(set(asked))
        for key in list(outstanding):
            if key not in live:
                del outstanding[key]  # settled: received, rejected, timed out or dropped


@pytest.mark.parametrize("seed", range(6))
def test_random_swarm_conversations_always_finish(seed: int) -> None:
    """A random walk of peers answering, rejecting, choking and announcing, with bad
    pieces; then everyone turns generous: the brain must finish, every request it made
    having been answered or cancelled, with its books consistent at every step."""
    rng = random.Random(seed)
    b = brain()
    peers = ["a", "b", "c", "d"]
    pending: dict[tuple[str, Block], None] = {}
    received: dict[int, set[Block]] = {}
    now = 0.0

    def run(event: Input) -> None:
        for action in b.handle(event, now):
            if isinstance(action, SendRequest):
                assert isinstance(action.peer, str)
                pending[(action.peer, action.block)] = None
            elif isinstance(action, SendCancel):
                assert isinstance(action.peer, str)
                pending.pop((action.peer, action.block), None)
        b.check()

    def answer(peer: str, block: Block, good_data: bool = True) -> None:
        del pending[(peer, block)]
        run(BlockReceived(peer, block))
        piece = block.piece
        if b.has_piece(piece):
            return
        got = received.setdefault(piece, set())
        got.add(block)
        if len(got) == GEOMETRY.blocks_in_piece(piece):
            del received[piece]
            run(PieceVerified(piece, good=good_data))

    for peer in peers:
        run(PeerJoined(peer, fast=rng.random() < 0.5))
        run(PeerBitfield(peer, frozenset(rng.sample(range(8), rng.randint(0, 8)))))
    for _ in range(300):
        now += rng.random()
        roll = rng.random()
        peer = rng.choice([p for p in peers if p in b.peers] or ["a"])
        if peer not in b.peers:
            break
        if roll < 0.5 and pending:
            who, block = rng.choice(list(pending))
            if rng.random() < 0.2:
                del pending[(who, block)]
                run(BlockRejected(who, block))
            else:
                answer(who, block, good_data=rng.random() < 0.95)
        elif roll < 0.65:
            run(PeerUnchokedUs(peer))
        elif roll < 0.72:
            run(PeerChokedUs(peer))
        elif roll < 0.8:
            run(PeerHave(peer, rng.randrange(8)))
        else:
            for action in b.tick(now):
                if isinstance(action, SendCancel):
                    assert isinstance(action.peer, str)
                    pending.pop((action.peer, action.block), None)
                elif isinstance(action, SendRequest):
                    assert isinstance(action.peer, str)
                    pending[(action.peer, action.block)] = None
        # Requests to peers that left or choked without the fast extension are gone.
        live = {
            (p, blk) for p in b.picker.requests.peers() for blk in b.picker.requests.outstanding(p)
        }
        for key in list(pending):
            if key not in live:
                del pending[key]
    # Everyone turns generous: a fresh seed joins, every request is answered well.
    run(PeerJoined("seed", fast=True))
    run(PeerHaveAll("seed"))
    run(PeerUnchokedUs("seed"))
    for _ in range(2000):
        if b.is_seed:
            break
        now += 1.0
        if pending:
            who, block = next(iter(pending))
            if who in b.peers:
                answer(who, block)
            else:
                del pending[(who, block)]
        else:
            for action in b.tick(now):
                if isinstance(action, SendRequest):
                    assert isinstance(action.peer, str)
                    pending[(action.peer, action.block)] = None
    assert b.is_seed
