"""MetadataFetcher and a peer that re-sends its extended handshake with another
``metadata_size``: its requests made under the old size still time out (as libtorrent's
ut_metadata leaves sent requests alone), so changing the size cannot dodge ``max_timeouts``;
one change is tolerated, a second bans the peer. And a fetch never stops for good: while pieces
are missing there is always a deadline pending or a peer that can be asked (a source that let a
request time out, or a stale request it abandoned, once left it with nothing to ask; a peer
stalled by ``max_timeouts`` was once left alone for ever, though its late answers still came)."""

from __future__ import annotations

import copy
import heapq
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bip_metainfo import InfoHash
from bip_peer._extended import METADATA_PIECE_SIZE, MetadataData, MetadataReject
from bip_peer._metadata import MetadataFetcher

INFO = random.Random(6).randbytes(40_000)  # three pieces
HASH = InfoHash.from_info_bytes(INFO, v1=True)


def answer(piece: int, total: int = len(INFO)) -> MetadataData:
    start = piece * METADATA_PIECE_SIZE
    return MetadataData(piece, total, INFO[start : start + METADATA_PIECE_SIZE][:total])


def drain(fetcher: MetadataFetcher[str], peer: str, now: float) -> list[int]:
    pieces = []
    while (request := fetcher.next_request(peer, now)) is not None:
        pieces.append(request.piece)
    return pieces


def test_a_liar_flipping_its_size_cannot_starve_an_honest_peer() -> None:
    # The hunter's scenario: the liar connected first (its fake size is chosen), never answers,
    # and re-sends its handshake every 5 s with another size. The honest peer is asked and
    # the fetch ends within bounded time; the liar is banned for its second change.
    fetcher: MetadataFetcher[str] = MetadataFetcher(HASH)
    size = len(INFO)
    fetcher.add_peer("liar", size + 1)
    fetcher.add_peer("honest", size)
    now = 0.0
    for step in range(120):
        if step:
            fetcher.add_peer("liar", size + 1 + step % 2)
        drain(fetcher, "liar", now)
        while pieces := drain(fetcher, "honest", now):
            for piece in pieces:
                fetcher.on_data("honest", answer(piece), now)
        if fetcher.done:
            break
        now += 5.0
        fetcher.handle_timer(now)
    assert fetcher.result() == INFO
    assert now <= 10.0
    assert [peer for peer, _ in fetcher.take_banned()] == ["liar"]


def test_requests_made_under_the_old_size_still_time_out() -> None:
    # One change only (tolerated): the silent peer's requests still occupy its slots and count
    # as timeouts, so it stalls and the honest peer's size takes over.
    fetcher: MetadataFetcher[str] = MetadataFetcher(HASH, max_timeouts=2)
    fetcher.add_peer("silent", len(INFO) + 1)
    fetcher.add_peer("honest", len(INFO))
    assert drain(fetcher, "silent", 0.0) == [0, 1]
    fetcher.add_peer("silent", len(INFO) + 2)
    assert drain(fetcher, "silent", 1.0) == []  # its slots are still taken
    assert fetcher.next_deadline() == 10.0  # the old requests hold nothing, but expire
    fetcher.handle_timer(10.0)
    assert fetcher.statistics().timeouts == 2
    assert fetcher.metadata_size == len(INFO)
    assert drain(fetcher, "silent", 10.0) == []
    assert drain(fetcher, "honest", 10.0) == [0, 1]
    assert fetcher.take_banned() == []


def test_one_change_costs_an_answering_peer_nothing() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(HASH)
    fetcher.add_peer("a", len(INFO) + 1)
    assert drain(fetcher, "a", 0.0) == [0, 1]
    fetcher.add_peer("a", len(INFO))
    # Its answers to the old requests carry the old size: ignored, not a ban; a reject of one
    # is a reject as ever.
    fetcher.on_data("a", answer(0, len(INFO) + 1), 0.5)
    fetcher.on_reject("b", MetadataReject(1), 0.5)  # not ours: ignored
    fetcher.handle_timer(10.0)  # piece 1's request, unanswered, expires and is forgotten
    stats = fetcher.statistics()
    assert (stats.ignored, stats.timeouts, stats.banned) == (2, 1, 0)
    assert drain(fetcher, "a", 10.0) == [0, 1]  # asked again, under its new size
    for piece in (0, 1):
        fetcher.on_data("a", answer(piece), 10.5)
    assert drain(fetcher, "a", 10.5) == [2]
    fetcher.on_data("a", answer(2), 11.0)
    assert fetcher.result() == INFO


def test_a_second_change_bans_even_back_to_the_first_size() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(HASH)
    assert fetcher.add_peer("a", 100)
    assert fetcher.add_peer("a", 200)
    assert not fetcher.add_peer("a", 100)
    assert fetcher.take_banned() == [("a", "changed its metadata_size a second time (200 to 100)")]
    assert fetcher.peers == frozenset()
    assert not fetcher.add_peer("a", 100)  # banned for good


def test_learning_or_dropping_the_size_is_no_change() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(HASH)
    fetcher.add_peer("a", None)  # no metadata yet
    assert fetcher.add_peer("a", len(INFO))  # it got the metadata: not a change
    assert drain(fetcher, "a", 0.0) == [0, 1]
    assert fetcher.add_peer("a", None)  # a later handshake without the field keeps the size
    assert fetcher.metadata_size == len(INFO)
    fetcher.on_data("a", answer(0), 0.5)  # its requests stand
    assert fetcher.add_peer("a", len(INFO))
    assert fetcher.add_peer("a", len(INFO) + 1)  # the first real change: tolerated
    assert fetcher.take_banned() == []
    assert fetcher.statistics().pieces_received == 1


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ask", "answer", "timer", "resize"]),
            st.integers(0, 3),  # which peer
            st.integers(0, 2),  # which size (0: the real one)
            st.floats(0.0, 6.0),  # time passing
        ),
        max_size=60,
    )
)
def test_resizing_peers_keep_the_bookkeeping_bounded(
    steps: list[tuple[str, int, int, float]],
) -> None:
    """However peers change their sizes: slots stay bounded, stale requests are requests
    (outstanding or late), and an honest peer joining late still finishes the fetch while the
    others fall silent."""
    fetcher: MetadataFetcher[str] = MetadataFetcher(HASH)
    sent: dict[str, list[int]] = {}
    now = 0.0
    for action, n, which, elapsed in steps:
        peer = f"p{n}"
        now += elapsed
        if action == "resize":
            fetcher.add_peer(peer, len(INFO) + which)
        elif action == "timer":
            fetcher.handle_timer(now)
        elif action == "ask":
            sent.setdefault(peer, []).extend(drain(fetcher, peer, now))
        elif sent.get(peer):
            fetcher.on_data(peer, answer(sent[peer].pop(0)), now)
        if fetcher.done:
            return
        for state in fetcher._peers.values():
            assert len(state.outstanding) <= 2
            assert state.holding <= state.outstanding.keys()
            assert state.stale <= state.outstanding.keys()  # never late: see below
    fetcher.add_peer("honest", len(INFO))
    for _ in range(40):
        if fetcher.done:
            break
        now += 5.0
        fetcher.handle_timer(now)
        for silent in fetcher.peers - {"honest"}:  # asked as ever, never answering
            drain(fetcher, silent, now)
        for piece in drain(fetcher, "honest", now):
            fetcher.on_data("honest", answer(piece), now)
    assert fetcher.result() == INFO


def fake(piece: int, total: int) -> MetadataData:
    """A piece of the right length for *total* whose bytes are not the dictionary's."""
    start = piece * METADATA_PIECE_SIZE
    return MetadataData(piece, total, bytes(min(METADATA_PIECE_SIZE, total - start)))


def stuck(fetcher: MetadataFetcher[str], now: float) -> bool:
    """Whether the fetch has stopped for good: pieces missing, a peer (stalled by
    ``max_timeouts`` or not), yet no deadline pending and no peer to ask (tried on a copy)."""
    if fetcher.done or fetcher.next_deadline() is not None:
        return False
    probe = copy.deepcopy(fetcher)
    peers = probe.peers
    return bool(peers) and all(probe.next_request(peer, now) is None for peer in peers)


def single_source(names: tuple[str, ...], size: int = len(INFO)) -> MetadataFetcher[str]:
    """A fetcher in single-source mode: names[0] sent pieces 0 and 1 (right if of the right
    size), names[1] a wrong piece 2, so both are failed contributors."""
    fetcher: MetadataFetcher[str] = MetadataFetcher(HASH)
    for name in names:
        fetcher.add_peer(name, size)
    assert drain(fetcher, names[0], 0.0) == [0, 1]
    assert drain(fetcher, names[1], 0.0) == [2]
    for piece in (0, 1):
        fetcher.on_data(names[0], answer(piece) if size == len(INFO) else fake(piece, size), 0.5)
    fetcher.on_data(names[1], fake(2, size), 0.5)
    assert fetcher.statistics().single_source
    return fetcher


def test_a_stale_request_abandoned_by_a_rejecting_source_does_not_stop_the_fetch() -> None:
    # The reviewer's sequence: the source rejects while a request made under its old size is
    # outstanding. That request used to become late and stale for ever: once the peer was the
    # source again, that piece was never asked, no deadline, an honest newcomer refused.
    true_size = len(INFO) + 25  # three pieces either way
    info = random.Random(7).randbytes(true_size)
    fetcher: MetadataFetcher[str] = MetadataFetcher(InfoHash.from_info_bytes(info, v1=True))
    fetcher.add_peer("a", len(INFO))
    fetcher.add_peer("d", len(INFO))
    assert drain(fetcher, "a", 0.0) == [0, 1]
    assert drain(fetcher, "d", 0.0) == [2]
    for name, piece in (("a", 0), ("a", 1), ("d", 2)):
        fetcher.on_data(name, fake(piece, len(INFO)), 0.5)
    assert fetcher.statistics().single_source
    x, y = drain(fetcher, "a", 1.0)  # a is the source
    fetcher.on_data("a", fake(y, len(INFO)), 1.5)
    fetcher.add_peer("a", true_size)  # x is stale now
    fetcher.remove_peer("d")  # the size assembled is a's new one
    assert fetcher.metadata_size == true_size
    (z,) = drain(fetcher, "a", 2.0)
    fetcher.on_reject("a", MetadataReject(z), 2.0)  # the source is dropped
    fetcher.handle_timer(100.0)  # x's request timed out: forgotten, a piece to ask again
    assert x not in fetcher._peers["a"].late | fetcher._peers["a"].stale
    now = 100.0
    asked = drain(fetcher, "a", now)  # a is the source again, before b comes
    fetcher.add_peer("b", true_size)
    for _ in range(20):
        for piece in asked:
            start = piece * METADATA_PIECE_SIZE
            data = info[start : start + METADATA_PIECE_SIZE]
            fetcher.on_data("a", MetadataData(piece, true_size, data), now)
        assert not stuck(fetcher, now)
        if fetcher.done:
            break
        asked = drain(fetcher, "a", now)
        now += 1.0
    assert fetcher.result() == info


def test_a_single_source_is_asked_again_for_the_piece_it_let_time_out() -> None:
    # The source answers, except one request that times out (once: fewer than max_timeouts).
    # That piece used to stay late for ever and nobody else was asked: the fetch stopped.
    fetcher = single_source(("a", "d"))
    assert drain(fetcher, "a", 1.0) == [2, 0]  # a is the source
    fetcher.on_data("a", answer(2), 1.5)
    fetcher.handle_timer(11.0)  # piece 0's request times out
    assert drain(fetcher, "a", 11.0) == [1]  # one still outstanding: no re-ask yet
    fetcher.on_data("a", answer(1), 11.5)
    assert drain(fetcher, "a", 11.5) == [0]  # nothing else to ask it: 0 again
    assert drain(fetcher, "d", 11.5) == []  # d is not the source
    fetcher.on_data("a", answer(0), 12.0)
    assert fetcher.result() == INFO
    assert [peer for peer, _ in fetcher.take_banned()] == ["d"]  # its piece 2 was wrong


def test_a_silent_source_re_asked_still_stalls_and_the_next_peer_is_tried() -> None:
    fetcher = single_source(("a", "d"))
    # Each silent re-ask counts as a timeout: max_timeouts (3) still stalls the source.
    fetcher.add_peer("b", len(INFO))
    assert drain(fetcher, "b", 1.0) == [0, 1]  # b contributed nothing: the source
    fetcher.on_data("b", answer(0), 1.5)
    fetcher.handle_timer(11.0)  # the first timeout
    assert drain(fetcher, "b", 11.0) == [2]
    fetcher.on_data("b", answer(2), 11.5)
    assert drain(fetcher, "b", 11.5) == [1]  # asked again
    fetcher.handle_timer(21.5)  # the second
    assert drain(fetcher, "b", 21.5) == [1]
    assert drain(fetcher, "a", 21.5) == []  # b is still the source
    fetcher.handle_timer(31.5)  # the third: b is stalled and no longer the source
    assert fetcher.statistics().timeouts == 3
    assert drain(fetcher, "b", 31.5) == []
    assert drain(fetcher, "a", 31.5) == [2, 0]  # the next source
    for piece in (2, 0):
        fetcher.on_data("a", answer(piece), 32.0)
    assert drain(fetcher, "a", 32.0) == [1]
    fetcher.on_data("a", answer(1), 32.5)
    assert fetcher.result() == INFO
    assert [peer for peer, _ in fetcher.take_banned()] == ["d"]


def test_the_only_peer_is_asked_again_for_the_piece_it_let_time_out() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(HASH)
    fetcher.add_peer("a", len(INFO))
    assert drain(fetcher, "a", 0.0) == [0, 1]
    fetcher.on_data("a", answer(0), 0.5)
    fetcher.handle_timer(10.0)
    assert drain(fetcher, "a", 10.0) == [2]
    fetcher.on_data("a", answer(2), 10.5)
    assert drain(fetcher, "a", 10.5) == [1]
    fetcher.on_data("a", answer(1), 11.0)
    assert fetcher.result() == INFO


def test_a_source_whose_answer_shows_another_size_is_dropped() -> None:
    # The source advertised no size; its answer carries one that is not the size assembled.
    # It can no longer be asked, and while it stayed the source nobody else was.
    fetcher = single_source(("a", "d"))
    fetcher.add_peer("n", None)
    assert drain(fetcher, "n", 1.0) == [0, 1]  # n contributed nothing: the source
    fetcher.on_data("n", fake(0, len(INFO) + 1), 1.5)  # ignored: another size
    assert fetcher.metadata_size == len(INFO)
    fetcher.handle_timer(11.0)  # n's request for piece 1 times out
    assert drain(fetcher, "n", 11.0) == []
    assert drain(fetcher, "a", 11.0) == [2, 0]  # a is the source now
    assert not stuck(fetcher, 11.0)


def test_a_slow_lone_peer_that_stalls_is_asked_again_after_the_stall_backoff() -> None:
    # Its answers come after request_timeout (taken late), one of them never: its third
    # timeout stalled it for good, the fetch stopped with no deadline and piece 2 missing.
    fetcher: MetadataFetcher[str] = MetadataFetcher(HASH)
    fetcher.add_peer("a", len(INFO))
    assert drain(fetcher, "a", 0.0) == [0, 1]
    fetcher.handle_timer(10.0)  # two timeouts
    assert drain(fetcher, "a", 10.0) == [2]
    for piece in (0, 1):
        fetcher.on_data("a", answer(piece), 12.0)  # late, taken
    assert drain(fetcher, "a", 12.0) == []  # 2 is outstanding: nothing else to ask
    fetcher.handle_timer(20.0)  # the third: stalled (piece 2's answer was lost)
    assert drain(fetcher, "a", 20.0) == []
    assert fetcher.next_deadline() == 80.0  # stall_backoff (60 s), not for ever
    assert not stuck(fetcher, 20.0)
    fetcher.handle_timer(80.0)
    assert drain(fetcher, "a", 80.0) == [2]  # asked again, its timeouts forgotten
    fetcher.on_data("a", answer(2), 80.5)
    assert fetcher.result() == INFO


def test_a_silent_peer_costs_a_few_requests_per_stall_backoff() -> None:
    # Driven by its deadlines for an hour: never a busy loop, never more than
    # max_timeouts + max_requests_per_peer - 1 (4) requests per stall (60 s + timeouts).
    fetcher: MetadataFetcher[str] = MetadataFetcher(HASH)
    fetcher.add_peer("silent", len(INFO))
    now, wakeups = 0.0, 0
    while now < 3600.0:
        drain(fetcher, "silent", now)
        deadline = fetcher.next_deadline()
        assert deadline is not None
        assert deadline > now
        now = deadline
        fetcher.handle_timer(now)
        wakeups += 1
    stalls = 3600 // 80 + 1  # each stall follows at least 20 s of timeouts
    assert fetcher.statistics().requests_sent <= 4 * stalls
    assert wakeups <= 8 * stalls  # a release and a timeout per request, the stall's end
    assert not fetcher.done


def test_a_late_reject_does_not_shorten_a_stall() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(HASH, stall_backoff=100.0, reject_backoff=5.0)
    fetcher.add_peer("a", len(INFO))
    assert drain(fetcher, "a", 0.0) == [0, 1]
    fetcher.handle_timer(10.0)
    assert drain(fetcher, "a", 10.0) == [2]
    fetcher.handle_timer(20.0)  # stalled until 120
    fetcher.on_reject("a", MetadataReject(0), 21.0)  # a late request's reject
    assert fetcher.next_deadline() == 120.0
    assert drain(fetcher, "a", 30.0) == []
    assert drain(fetcher, "a", 120.0) == [0]  # the rejected piece; 1 and 2 are late


# Replies a peer gives, one per request, in order (silent once its list runs out).
ANSWER, SLOW, WRONG, REJECT, SILENT, RESIZE, OTHER_SIZE, LEAVE = range(8)
# Seconds before the reply comes: SLOW after the request timed out (it is taken late).
_DELAY = dict.fromkeys((ANSWER, WRONG, REJECT, RESIZE, OTHER_SIZE, LEAVE), 0.5) | {SLOW: 12.0}
JOIN = -1  # the event of a peer joining: its advertised size where a piece would be


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from([len(INFO), len(INFO) + 1, None]),  # advertised size
            st.integers(0, 30),  # when it joins
            st.lists(st.integers(ANSWER, LEAVE), max_size=12),  # its replies
        ),
        min_size=1,
        max_size=4,
    )
)
def test_a_fetch_always_has_a_deadline_or_a_peer_to_ask(
    peers: list[tuple[int | None, int, list[int]]],
) -> None:
    """Driven as a shell drives it (ask every peer, sleep until the next deadline or answer):
    whatever the peers do, while pieces are missing and some peer is known (stalled by
    ``max_timeouts`` or not), a deadline is pending or a peer can be asked."""
    fetcher: MetadataFetcher[str] = MetadataFetcher(HASH)
    sizes: dict[str, int | None] = {}
    replies = {f"p{n}": list(script) for n, (_, _, script) in enumerate(peers)}
    events: list[tuple[float, int, str, int, int | None]] = []  # (time, order, peer, reply, piece)
    for n, (size, join, _) in enumerate(peers):
        heapq.heappush(events, (float(join), len(events), f"p{n}", JOIN, size))
    now = 0.0
    for order in range(len(events), len(events) + 200):
        for peer in sorted(fetcher.peers):
            while (request := fetcher.next_request(peer, now)) is not None:
                reply = replies[peer].pop(0) if replies[peer] else SILENT
                if reply != SILENT:
                    heapq.heappush(events, (now + _DELAY[reply], order, peer, reply, request.piece))
        assert not stuck(fetcher, now)
        deadline = fetcher.next_deadline()
        moments = [t for t in (deadline, events[0][0] if events else None) if t is not None]
        if fetcher.done or not moments:
            return
        now = max(now, min(moments))
        while events and events[0][0] <= now:
            _, _, peer, reply, piece = heapq.heappop(events)
            if reply == JOIN:
                sizes[peer] = piece
                fetcher.add_peer(peer, piece)
                continue
            assert piece is not None
            total = sizes[peer] or len(INFO)
            if reply in (ANSWER, SLOW):
                fetcher.on_data(
                    peer, answer(piece) if total == len(INFO) else fake(piece, total), now
                )
            elif reply == WRONG:
                fetcher.on_data(peer, fake(piece, total), now)
            elif reply == OTHER_SIZE:
                fetcher.on_data(peer, fake(piece, len(INFO) + 1), now)
            elif reply == REJECT:
                fetcher.on_reject(peer, MetadataReject(piece), now)
            elif reply == RESIZE:
                sizes[peer] = len(INFO) + 1 if sizes[peer] == len(INFO) else len(INFO)
                fetcher.add_peer(peer, sizes[peer])
            else:
                fetcher.remove_peer(peer)
        fetcher.handle_timer(now)
        fetcher.take_banned()
