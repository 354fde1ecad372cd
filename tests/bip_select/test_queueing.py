"""PeerQueues: queue depth from measured rates, slow start, timeouts, snubbing, bans."""

from __future__ import annotations

import pytest

from bip_select._errors import LocalProtocolError
from bip_select._geometry import BLOCK_SIZE, TorrentGeometry
from bip_select._queueing import PeerQueues, QueueConfig
from bip_select._requests import RequestBook

G = TorrentGeometry(4, 4 * BLOCK_SIZE)


def _feed(q: PeerQueues, peer: str, rate: float, start: float, seconds: float) -> float:
    """Deliver blocks at ``rate`` bytes/s from ``start`` for ``seconds``; returns the end."""
    step = BLOCK_SIZE / rate
    t = start
    while t + step <= start + seconds + 1e-9:
        t += step
        q.block_received(peer, BLOCK_SIZE, t)
    return t


def test_rate_is_measured_from_blocks() -> None:
    q = PeerQueues()
    q.add_peer("p", 0.0)
    assert q.download_rate("p", 0.0) == 0.0
    t = _feed(q, "p", 4 * BLOCK_SIZE, 0.0, 10.0)
    assert q.download_rate("p", t) == pytest.approx(4 * BLOCK_SIZE, rel=0.1)
    assert q.download_rate("p", t + 30.0) == 0.0  # it forgets
    with pytest.raises(LocalProtocolError):
        q.block_received("p", -1, t)


def test_young_peer_rate_is_not_underestimated() -> None:
    q = PeerQueues()
    q.add_peer("p", 0.0)
    q.block_received("p", 100_000, 1.0)
    assert q.download_rate("p", 1.0) == pytest.approx(100_000, rel=0.1)


def test_depth_is_three_seconds_of_data_bounded() -> None:
    q = PeerQueues()
    q.add_peer("p", 0.0, reqq=1000)
    q.end_slow_start("p")
    assert q.desired_depth("p", 0.0) == 2  # min_queue with no rate yet
    t = _feed(q, "p", 100 * BLOCK_SIZE, 0.0, 10.0)
    assert q.download_rate("p", t) == pytest.approx(100 * BLOCK_SIZE)
    assert q.desired_depth("p", t) == 300
    assert q.room("p", 290, t) == 10
    assert q.room("p", 400, t) == 0
    q.set_reqq("p", 50)
    assert q.desired_depth("p", t) == 50
    q.set_reqq("p", 0)  # nonsense: the default (250) instead
    assert q.desired_depth("p", t) == 250
    assert q.downloaded("p") == round(t * 100) * BLOCK_SIZE
    fast = PeerQueues(QueueConfig(max_queue=20))
    fast.add_peer("p", 0.0)
    fast.end_slow_start("p")
    t = _feed(fast, "p", 100 * BLOCK_SIZE, 0.0, 10.0)
    assert fast.desired_depth("p", t) == 20


def test_slow_start_grows_then_settles() -> None:
    q = PeerQueues()
    q.add_peer("p", 0.0)
    assert q.desired_depth("p", 0.0) == 4  # initial_queue
    for i in range(1, 11):
        q.block_received("p", BLOCK_SIZE, i * 0.01)
    assert q.desired_depth("p", 0.1) >= 14  # one more per block while ramping
    # A steady rate: slow start ends once the rate stops growing.
    t = _feed(q, "p", 10 * BLOCK_SIZE, 0.1, 10.0)
    assert q.desired_depth("p", t) == 30


def test_snub_after_silence_and_recovery() -> None:
    q = PeerQueues()
    book = RequestBook(G)
    q.add_peer("p", 0.0)
    blocks = G.blocks(0)
    for block in blocks:
        book.request("p", block, 1.0)
    assert q.expired(book, 60.0) == []
    assert q.next_deadline(book) == 61.0
    expired = q.expired(book, 61.0)
    assert expired == [("p", b) for b in blocks]
    assert q.is_snubbed("p")
    assert q.desired_depth("p", 61.0) == 1
    q.block_received("p", BLOCK_SIZE, 62.0)
    assert not q.is_snubbed("p")
    q.request_timed_out("p", 63.0)
    assert q.is_snubbed("p")


def test_single_dropped_request_times_out_while_peer_sends() -> None:
    q = PeerQueues(QueueConfig(request_timeout=20.0))
    book = RequestBook(G)
    q.add_peer("p", 0.0)
    old, *young = G.blocks(0)
    book.request("p", old, 0.0)
    for block in young:
        book.request("p", block, 15.0)
    q.block_received("p", BLOCK_SIZE, 19.0)  # it is sending, just not `old`
    assert q.expired(book, 20.0) == [("p", old)]
    assert not q.is_snubbed("p")
    assert q.next_deadline(book) == 20.0
    assert q.next_deadline(RequestBook(G)) is None


def test_trust_points_ban_on_the_fourth_bad_piece() -> None:
    q = PeerQueues()
    for peer in "abh":
        q.add_peer(peer, 0.0)
    for round_ in range(3):
        assert q.piece_failed(["a", "h"]) == []
        assert q.on_parole("a")
        assert q.trust("a") == -2 * (round_ + 1)
    assert q.piece_failed(["a", "b"]) == ["a"]  # -8, clamped to -7: banned
    assert q.is_banned("a")
    assert q.hash_failures("a") == 4
    assert q.trust("a") == -7
    assert q.piece_failed(["a", "b"]) == []  # banned once
    assert not q.is_banned("b")


def test_sole_contributor_is_banned_at_once() -> None:
    q = PeerQueues()
    q.add_peer("a", 0.0)
    q.add_peer("b", 0.0)
    # A departed co-author still counts: b is not the sole author of this piece.
    assert q.piece_failed(["gone", "b"]) == []
    assert q.piece_failed(["a"]) == ["a"]
    lenient = PeerQueues(QueueConfig(ban_sole_contributor=False))
    lenient.add_peer("a", 0.0)
    assert lenient.piece_failed(["a"]) == []


def test_good_pieces_rebuild_trust_and_lift_parole() -> None:
    q = PeerQueues()
    q.add_peer("a", 0.0)
    q.add_peer("b", 0.0)
    q.piece_failed(["a", "b"])
    q.piece_passed(["a", "b"])
    assert q.on_parole("a")  # not alone: not proven
    q.piece_passed(["a"])
    assert not q.on_parole("a")
    assert q.trust("a") == 0
    for _ in range(20):
        q.piece_passed(["a"])
    assert q.trust("a") == 8
    q.piece_passed(["ghost"])  # unknown peers are ignored
    assert q.piece_failed(["ghost"]) == []


def test_api_misuse() -> None:
    q = PeerQueues()
    q.add_peer("a", 0.0)
    with pytest.raises(LocalProtocolError):
        q.add_peer("a", 0.0)
    with pytest.raises(LocalProtocolError):
        q.desired_depth("b", 0.0)
    assert "a" in q
    q.remove_peer("a")
    assert "a" not in q
    with pytest.raises(LocalProtocolError):
        QueueConfig(min_queue=0)
    with pytest.raises(LocalProtocolError):
        QueueConfig(snub_timeout=0)
    with pytest.raises(LocalProtocolError):
        QueueConfig(rate_window=0)
    with pytest.raises(LocalProtocolError):
        QueueConfig(ban_trust=1)


def test_expired_ignores_unknown_peers() -> None:
    q = PeerQueues()
    book = RequestBook(G)
    book.request("ghost", G.block(0, 0), 0.0)
    assert q.expired(book, 1000.0) == []
    assert q.next_deadline(book) is None
