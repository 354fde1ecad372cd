"""RequestBook: requests, arrivals, rejections, timeouts, end-game duplicates, verdicts."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bip_select._errors import LocalProtocolError
from bip_select._geometry import BLOCK_SIZE, Block, TorrentGeometry
from bip_select._requests import Received, RequestBook

G = TorrentGeometry(3, 2 * BLOCK_SIZE, 5 * BLOCK_SIZE)  # blocks: 2, 2, 1


def test_request_receive_complete_pass() -> None:
    book = RequestBook(G)
    a, b = G.blocks(0)
    book.request("x", a, 1.0)
    book.request("y", b, 2.0)
    assert book.num_free(0) == 0
    assert list(book.started_pieces()) == [0]
    assert book.outstanding("x") == {a: 1.0}
    assert book.receive("x", a) == Received((), False)
    assert book.receive("y", b) == Received((), True)
    assert book.num_outstanding("x") == 0
    assert book.sources(0) == {"x": 1, "y": 1}
    assert set(book.piece_passed(0)) == {"x", "y"}
    assert book.have(0)
    assert book.num_have == 1
    assert book.free_blocks(0) == []
    assert book.num_free(0) == 0
    assert book.receive("x", a) is None  # a piece we have
    book.check()


def test_no_block_twice_outside_endgame() -> None:
    book = RequestBook(G)
    a = G.block(1, 0)
    book.request("x", a, 0.0)
    with pytest.raises(LocalProtocolError):
        book.request("y", a, 0.0)
    with pytest.raises(LocalProtocolError):
        book.request("x", a, 0.0, duplicate=True)  # never twice to the same peer
    book.request("y", a, 0.0, duplicate=True)
    assert book.requesters(a) == ("x", "y")
    # The first arrival wins; the loser is to be cancelled.
    assert book.receive("y", a) == Received(("x",), False)
    assert book.requesters(a) == ()
    assert book.num_outstanding("x") == 0
    with pytest.raises(LocalProtocolError):
        book.request("z", a, 0.0, duplicate=True)  # received already
    book.check()


def test_reject_timeout_cancel_free_the_block() -> None:
    book = RequestBook(G)
    a, b = G.blocks(1)
    book.request("x", a, 0.0)
    book.request("x", b, 0.0)
    assert book.reject("x", a)
    assert not book.reject("x", a)
    assert book.free_blocks(1) == [a]
    assert book.time_out("x", b)
    assert not book.is_started(1)  # nothing asked, nothing received: not in progress
    book.request("y", b, 1.0)
    assert book.cancel("y", b)
    assert book.num_free(1) == 2
    book.check()


def test_late_block_after_timeout_is_still_taken() -> None:
    book = RequestBook(G)
    a = G.block(2, 0)
    book.request("x", a, 0.0)
    book.time_out("x", a)
    book.request("y", a, 5.0)
    result = book.receive("x", a)
    assert result == Received(("y",), True, requested=False)
    assert book.receive("y", a) is None
    book.check()


def test_drop_peer_returns_oldest_first() -> None:
    book = RequestBook(G)
    blocks = [G.block(1, 1), G.block(0, 0), G.block(2, 0)]
    for t, block in enumerate(blocks):
        book.request("x", block, float(t))
    assert book.drop_peer("x") == blocks
    assert book.num_started == 0
    assert list(book.peers()) == []
    book.check()


def test_failed_piece_starts_over_and_names_its_sources() -> None:
    book = RequestBook(G)
    a, b = G.blocks(0)
    book.request("x", a, 0.0)
    book.request("y", b, 0.0)
    book.receive("x", a)
    book.receive("y", b)
    assert set(book.piece_failed(0)) == {"x", "y"}
    assert book.free_blocks(0) == [a, b]
    assert not book.have(0)
    assert book.piece_failed(0) == ()
    book.check()


def test_pass_forgets_pending_duplicates() -> None:
    book = RequestBook(G)
    (a,) = G.blocks(2)
    book.request("x", a, 0.0)
    book.request("y", a, 0.0, duplicate=True)
    book.receive("x", a)
    book.request("z", G.block(0, 0), 0.0)
    assert book.piece_passed(2) == ("x",)
    book.lose_piece(2)
    assert not book.have(2)
    book.check()


def test_pass_of_a_piece_got_elsewhere_forgets_its_requests() -> None:
    # A piece can be verified while requests are pending (a web seed, a recheck).
    book = RequestBook(G)
    a, b = G.blocks(0)
    book.request("x", a, 0.0)
    book.request("y", b, 0.0)
    assert book.piece_passed(0) == ()
    assert book.num_outstanding("x") == book.num_outstanding("y") == 0
    assert book.num_peers == 0
    assert book.piece_passed(0) == ()  # twice: nothing more
    assert book.geometry is G
    book.check()


def test_refuses_foreign_blocks() -> None:
    book = RequestBook(G, have=[1])
    for block in (Block(0, 1, BLOCK_SIZE), Block(3, 0, BLOCK_SIZE), Block(2, 0, 5)):
        with pytest.raises(LocalProtocolError):
            book.request("x", block, 0.0)
        assert book.receive("x", block) is None
    with pytest.raises(LocalProtocolError):
        book.request("x", G.block(1, 0), 0.0)  # already had
    assert book.requesters(Block(0, 1, 5)) == ()
    assert not book.is_received(Block(0, 1, 5))
    assert book.is_received(G.block(1, 0))


def test_duplicate_candidates_spread_copies() -> None:
    book = RequestBook(G)
    a, b = G.blocks(0)
    (c,) = G.blocks(2)
    book.request("x", a, 0.0)
    book.request("x", b, 1.0)
    book.request("y", b, 1.0, duplicate=True)
    book.request("y", c, 2.0)
    # z: fewest copies first; among those the piece nearest completion (c: its only
    # block); b last (two copies already).
    assert book.duplicate_candidates("z", lambda p: True, 5) == [c, a, b]
    assert book.duplicate_candidates("x", lambda p: True, 5) == [c]
    assert book.duplicate_candidates("z", lambda p: p == 2, 5) == [c]
    assert book.duplicate_candidates("z", lambda p: True, 0) == []


class BookMachine(RuleBasedStateMachine):
    """Random request traffic: every request is settled exactly once, never lost.

    The model keeps each pending (peer, block) pair and its fate; no block has two
    requesters unless the duplicate flag was used.
    """

    def __init__(self) -> None:
        super().__init__()
        self.book = RequestBook(G)
        self.pending: set[tuple[int, Block]] = set()
        self.settled = 0
        self.issued = 0
        self.received: set[Block] = set()
        self.duplicates_allowed: set[Block] = set()

    blocks = st.sampled_from([b for p in range(3) for b in G.blocks(p)])
    peers = st.integers(0, 3)

    @rule(peer=peers, block=blocks, duplicate=st.booleans())
    def request(self, peer: int, block: Block, duplicate: bool) -> None:
        asked = self.book.requesters(block)
        ok = not self.book.is_received(block) and peer not in asked and (duplicate or not asked)
        if not ok:
            with pytest.raises(LocalProtocolError):
                self.book.request(peer, block, 0.0, duplicate=duplicate)
            return
        self.book.request(peer, block, 0.0, duplicate=duplicate)
        self.pending.add((peer, block))
        self.issued += 1
        if duplicate:
            self.duplicates_allowed.add(block)

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), how=st.sampled_from(["reject", "time_out", "cancel"]))
    def settle(self, data: st.DataObject, how: str) -> None:
        peer, block = data.draw(st.sampled_from(sorted(self.pending)))
        assert getattr(self.book, how)(peer, block)
        self.pending.discard((peer, block))
        self.settled += 1

    @rule(peer=peers, block=blocks)
    def receive(self, peer: int, block: Block) -> None:
        result = self.book.receive(peer, block)
        if self.book.have(block.piece) or block in self.received:
            assert result is None
            return
        assert result is not None
        mine = {(p, b) for (p, b) in self.pending if b == block}
        expected = set(result.cancel) | ({peer} if result.requested else set())
        assert {p for p, _ in mine} == expected
        self.settled += len(mine)
        self.pending -= mine
        self.received.add(block)

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        peer = data.draw(st.sampled_from(sorted({p for p, _ in self.pending})))
        dropped = self.book.drop_peer(peer)
        mine = {(p, b) for (p, b) in self.pending if p == peer}
        assert {(peer, b) for b in dropped} == mine
        self.pending -= mine
        self.settled += len(mine)

    @rule(piece=st.integers(0, 2), good=st.booleans())
    def verdict(self, piece: int, good: bool) -> None:
        blocks = set(G.blocks(piece))
        if not blocks <= self.received or self.book.have(piece):
            return
        mine = {(p, b) for (p, b) in self.pending if b.piece == piece}
        assert not mine  # every block is in: nothing can be pending
        if good:
            self.book.piece_passed(piece)
        else:
            self.book.piece_failed(piece)
            self.received -= blocks

    @invariant()
    def accounted(self) -> None:
        self.book.check()
        assert self.issued == self.settled + len(self.pending)
        actual = {(p, b) for p in range(4) for b in self.book.outstanding(p)}
        assert actual == self.pending
        for _, block in self.pending:
            if block not in self.duplicates_allowed:
                assert len(self.book.requesters(block)) == 1


BookMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=50)
TestBookMachine = BookMachine.TestCase
