"""MetadataFetcher and a peer that re-sends its extended handshake with another
``metadata_size``: its requests made under the old size still time out (as libtorrent's
ut_metadata leaves sent requests alone), so changing the size cannot dodge ``max_timeouts``;
one change is tolerated, a second bans the peer."""

from __future__ import annotations

import random

from hypothesis import given, settings
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
            assert state.stale <= state.outstanding.keys() | state.late
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
