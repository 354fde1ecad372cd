"""MetadataFetcher's re-requests: a request holds its piece for ``rerequest_delay`` (3 s, as
libtorrent's ut_metadata), then the piece is asked of another peer too while the first request
stays outstanding; ``request_timeout`` only frees the peer's slot and counts a timeout."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_bencode import encode
from bip_metainfo import InfoHash
from bip_peer._extended import METADATA_PIECE_SIZE, MetadataData
from bip_peer._metadata import (
    DEFAULT_METADATA_REQUEST_TIMEOUT,
    DEFAULT_METADATA_REREQUEST_DELAY,
    MetadataFetcher,
)


def make_info(size_hint: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    pieces = rng.randbytes(max(20, size_hint - 60) // 20 * 20)
    return encode({b"length": 1, b"name": b"x", b"piece length": 16384, b"pieces": pieces})


SMALL = make_info(1_000)  # one piece
SMALL_HASH = InfoHash.from_info_bytes(SMALL, v1=True)
BIG = make_info(80_000)  # five pieces
BIG_HASH = InfoHash.from_info_bytes(BIG, v1=True)


def answer(info: bytes, piece: int) -> MetadataData:
    start = piece * METADATA_PIECE_SIZE
    return MetadataData(piece, len(info), info[start : start + METADATA_PIECE_SIZE])


def drain(fetcher: MetadataFetcher[str], peer: str, now: float) -> list[int]:
    pieces = []
    while (request := fetcher.next_request(peer, now)) is not None:
        pieces.append(request.piece)
    return pieces


def test_the_defaults_are_libtorrents() -> None:
    assert DEFAULT_METADATA_REREQUEST_DELAY == 3.0
    assert DEFAULT_METADATA_REQUEST_TIMEOUT == 10.0


def test_a_silent_peer_delays_a_piece_by_the_rerequest_delay_only() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(SMALL_HASH)
    fetcher.add_peer("silent", len(SMALL))
    assert drain(fetcher, "silent", 0.0) == [0]
    fetcher.add_peer("honest", len(SMALL))
    assert drain(fetcher, "honest", 2.99) == []  # held by silent's request
    assert drain(fetcher, "honest", 3.0) == [0]  # without handle_timer: the request is 3 s old
    fetcher.on_data("honest", answer(SMALL, 0), 3.1)
    assert fetcher.result() == SMALL
    stats = fetcher.statistics()
    assert (stats.timeouts, stats.banned) == (0, 0)


@pytest.mark.parametrize("sent", [0.211, 0.1, 1e-9, 12345.678])
def test_the_moment_next_deadline_gives_releases_the_piece(sent: float) -> None:
    """A shell sleeps until next_deadline and calls handle_timer with it: the held piece is
    free for another peer then, whatever the rounding of ``sent + delay`` (0.211 + 3 was not
    ``>= 3.211 - 3`` the other way round, and the piece waited for the 10 s timeout)."""
    fetcher: MetadataFetcher[str] = MetadataFetcher(SMALL_HASH)
    fetcher.add_peer("silent", len(SMALL))
    assert drain(fetcher, "silent", sent) == [0]
    fetcher.add_peer("honest", len(SMALL))
    moment = fetcher.next_deadline()
    assert moment == sent + DEFAULT_METADATA_REREQUEST_DELAY
    fetcher.handle_timer(moment)
    assert fetcher.next_deadline() == sent + DEFAULT_METADATA_REQUEST_TIMEOUT
    assert drain(fetcher, "honest", moment) == [0]


def test_the_first_requests_late_answer_is_taken_and_the_second_one_ignored() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(SMALL_HASH)
    fetcher.add_peer("slow", len(SMALL))
    fetcher.add_peer("other", len(SMALL))
    assert drain(fetcher, "slow", 0.0) == [0]
    fetcher.handle_timer(3.0)
    assert drain(fetcher, "other", 3.0) == [0]
    fetcher.on_data("slow", answer(SMALL, 0), 4.0)  # the first request's answer comes first
    assert fetcher.result() == SMALL
    fetcher.on_data("other", answer(SMALL, 0), 4.5)
    stats = fetcher.statistics()
    assert (stats.pieces_received, stats.ignored, stats.banned) == (1, 1, 0)


def test_the_first_request_still_counts_its_timeout_and_holds_its_slot() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(BIG_HASH, max_requests_per_peer=1)
    fetcher.add_peer("silent", len(BIG))
    fetcher.add_peer("other", len(BIG))
    assert drain(fetcher, "silent", 0.0) == [0]
    assert drain(fetcher, "other", 0.0) == [1]
    # Released, not expired: silent's only slot is still taken until request_timeout.
    fetcher.handle_timer(3.0)
    assert drain(fetcher, "silent", 3.0) == []
    fetcher.handle_timer(10.0)
    assert fetcher.statistics().timeouts == 2
    assert drain(fetcher, "silent", 10.0) == [1]  # its slot is free again (1 expired on other)


def test_a_piece_is_asked_again_at_most_once_per_delay_and_never_twice_of_one_peer() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(SMALL_HASH)
    for name in ("a", "b", "c", "d"):
        fetcher.add_peer(name, len(SMALL))
    assert drain(fetcher, "a", 0.0) == [0]
    assert drain(fetcher, "b", 3.0) == [0]
    assert drain(fetcher, "c", 3.0) == []  # b's request holds it now, until 6 s
    assert drain(fetcher, "a", 6.0) == []  # a has it outstanding already
    assert drain(fetcher, "c", 6.0) == [0]
    assert drain(fetcher, "d", 8.9) == []
    assert drain(fetcher, "d", 9.0) == [0]
    assert fetcher.statistics().requests_sent == 4


def test_unasked_pieces_come_before_pieces_asked_elsewhere() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(BIG_HASH)
    fetcher.add_peer("slow", len(BIG))
    fetcher.add_peer("fresh", len(BIG))
    assert drain(fetcher, "slow", 0.0) == [0, 1]
    fetcher.handle_timer(3.0)
    # Pieces 0 and 1 may be asked again, but 2, 3 and 4 were asked of nobody.
    assert drain(fetcher, "fresh", 3.0) == [2, 3]


def test_among_pieces_asked_elsewhere_the_least_asked_first() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(BIG_HASH)
    fetcher.add_peer("a", len(BIG))
    fetcher.add_peer("b", len(BIG))
    fetcher.add_peer("c", len(BIG))
    fetcher.add_peer("d", len(BIG))
    assert drain(fetcher, "a", 0.0) == [0, 1]
    assert drain(fetcher, "b", 0.0) == [2, 3]
    assert drain(fetcher, "c", 0.0) == [4]  # nothing else unasked: one slot left
    assert drain(fetcher, "c", 3.0) == [0]  # the lowest of the ones asked once
    # 0 is asked twice now, 1, 2 and 3 once: d gets two of those, not 0 again.
    assert drain(fetcher, "d", 3.0) == [1, 2]


def test_next_deadline_reports_the_rerequest_moment_once() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(SMALL_HASH, reject_backoff=100.0)
    fetcher.add_peer("a", len(SMALL))
    assert drain(fetcher, "a", 1.0) == [0]
    assert fetcher.next_deadline() == 4.0
    fetcher.handle_timer(4.0)
    # Handled: the next thing to do is the request's timeout, not 4.0 again (a shell that
    # sleeps until next_deadline would spin on it).
    assert fetcher.next_deadline() == 11.0
    fetcher.handle_timer(11.0)
    assert fetcher.next_deadline() is None


def test_next_deadline_without_handle_timer_keeps_the_moment() -> None:
    # A request released lazily (by next_request) no longer holds anything to report.
    fetcher: MetadataFetcher[str] = MetadataFetcher(SMALL_HASH)
    fetcher.add_peer("a", len(SMALL))
    fetcher.add_peer("b", len(SMALL))
    assert drain(fetcher, "a", 0.0) == [0]
    assert drain(fetcher, "b", 3.5) == [0]
    assert fetcher.next_deadline() == 6.5  # b's request: a's was released at 3.5


def test_a_rerequest_delay_beyond_the_request_timeout_acts_as_the_timeout() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(
        SMALL_HASH, request_timeout=5.0, rerequest_delay=60.0
    )
    fetcher.add_peer("a", len(SMALL))
    fetcher.add_peer("b", len(SMALL))
    assert drain(fetcher, "a", 0.0) == [0]
    assert fetcher.next_deadline() == 5.0
    assert drain(fetcher, "b", 4.9) == []
    fetcher.handle_timer(5.0)
    assert drain(fetcher, "b", 5.0) == [0]


def test_a_longer_rerequest_delay_waits_longer() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(SMALL_HASH, rerequest_delay=8.0)
    fetcher.add_peer("a", len(SMALL))
    fetcher.add_peer("b", len(SMALL))
    assert drain(fetcher, "a", 0.0) == [0]
    assert drain(fetcher, "b", 7.9) == []
    assert drain(fetcher, "b", 8.0) == [0]


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), True, "3"])
def test_rerequest_delay_must_be_positive(bad: object) -> None:
    with pytest.raises(ValueError, match="rerequest_delay"):
        MetadataFetcher(SMALL_HASH, rerequest_delay=bad)  # type: ignore[arg-type]


def test_a_probe_is_released_after_the_delay_too() -> None:
    # Nobody advertised a size: one probe of piece 0 at a time, but a silent probed peer
    # holds it for the delay only, as any request.
    fetcher: MetadataFetcher[str] = MetadataFetcher(SMALL_HASH)
    fetcher.add_peer("a", None)
    fetcher.add_peer("b", None)
    assert drain(fetcher, "a", 0.0) == [0]
    assert drain(fetcher, "b", 1.0) == []
    assert drain(fetcher, "b", 3.0) == [0]
    fetcher.on_data("a", answer(SMALL, 0), 3.5)  # the first probe's answer, late: taken
    assert fetcher.result() == SMALL


def test_removing_or_resizing_a_peer_releases_what_it_held() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(BIG_HASH)
    for name in ("a", "b", "c"):
        fetcher.add_peer(name, len(BIG))
    assert drain(fetcher, "a", 0.0) == [0, 1]
    assert drain(fetcher, "b", 0.0) == [2, 3]
    fetcher.remove_peer("a")
    fetcher.add_peer("b", len(BIG) + 1)  # a new size: its requests are void
    assert drain(fetcher, "c", 0.5) == [0, 1]
    fetcher.add_peer("d", len(BIG))
    assert drain(fetcher, "d", 0.5) == [2, 3]


# --------------------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ask", "answer", "timer", "remove", "add"]),
            st.integers(0, 5),  # which peer
            st.floats(0.0, 4.0),  # time passing
        ),
        max_size=80,
    )
)
def test_bookkeeping_stays_consistent_and_bounded(steps: list[tuple[str, int, float]]) -> None:
    """Whatever peers do and however time passes: each peer has at most its slots of
    requests, and holding is a subset of outstanding; and one peer
    that answers finishes the fetch."""
    fetcher: MetadataFetcher[str] = MetadataFetcher(BIG_HASH)
    sent: dict[str, list[int]] = {}
    now = 0.0
    last_timer = -float("inf")
    for action, n, elapsed in steps:
        peer = f"p{n}"
        now += elapsed
        if action == "add":
            fetcher.add_peer(peer, len(BIG))
        elif action == "remove":
            fetcher.remove_peer(peer)
            sent.pop(peer, None)
        elif action == "timer":
            fetcher.handle_timer(now)
            last_timer = now
        elif action == "ask":
            sent.setdefault(peer, []).extend(drain(fetcher, peer, now))
        elif sent.get(peer):
            fetcher.on_data(peer, answer(BIG, sent[peer].pop(0)), now)
        if fetcher.done:
            break
        for state in fetcher._peers.values():
            assert len(state.outstanding) <= 2
            assert state.holding <= state.outstanding.keys()
        deadline = fetcher.next_deadline()
        assert deadline is None or deadline > last_timer or deadline >= now
    # An honest peer joins late and is served everything it is asked, in time.
    fetcher.add_peer("honest", len(BIG))
    for _ in range(20):
        if fetcher.done:
            break
        now += DEFAULT_METADATA_REREQUEST_DELAY
        fetcher.handle_timer(now)
        for piece in drain(fetcher, "honest", now):
            fetcher.on_data("honest", answer(BIG, piece), now)
    assert fetcher.result() == BIG
