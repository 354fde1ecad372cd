"""Regressions found by the hostile-peer campaigns (tests/bip/test_hostile_leeching.py),
reduced to one MetadataFetcher: a peer that never answers must not hold the fetch up."""

from __future__ import annotations

from bip_metainfo import InfoHash
from bip_peer._extended import METADATA_PIECE_SIZE, MetadataData, MetadataRequest
from bip_peer._metadata import MetadataFetcher

INFO = b"d4:name1:x12:piece lengthi16384e6:pieces0:e" + bytes(0)
V1 = InfoHash.from_info_bytes(INFO, v1=True)
BIG = b"d4:name" + str(40_000).encode() + b":" + b"x" * 40_000 + b"e"  # three pieces
BIG_V1 = InfoHash.from_info_bytes(BIG, v1=True)


def drain(fetcher: MetadataFetcher[str], peer: str, now: float) -> list[int]:
    pieces = []
    while (request := fetcher.next_request(peer, now)) is not None:
        pieces.append(request.piece)
    return pieces


def answer(info: bytes, piece: int) -> MetadataData:
    start = piece * METADATA_PIECE_SIZE
    return MetadataData(piece, len(info), info[start : start + METADATA_PIECE_SIZE])


def test_a_silent_probed_peer_does_not_hold_piece_0_once_the_size_is_known() -> None:
    # The attacker advertised no size (or 0, or a negative one, all dropped as absent): it is
    # probed for piece 0 to learn the size, and never answers. An honest peer then advertises
    # the size: it is asked for piece 0 at once, not after the probe's 10 s timeout.
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1)
    fetcher.add_peer("silent", None)
    assert drain(fetcher, "silent", 0.0) == [0]
    fetcher.add_peer("honest", len(INFO))
    assert drain(fetcher, "honest", 0.1) == [0]
    fetcher.on_data("honest", answer(INFO, 0), 0.2)
    assert fetcher.result() == INFO


def test_a_late_probe_answer_is_still_taken() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(BIG_V1)
    fetcher.add_peer("probed", None)
    assert drain(fetcher, "probed", 0.0) == [0]
    fetcher.add_peer("honest", len(BIG))
    assert drain(fetcher, "honest", 0.1) == [0, 1]
    # The probe's answer comes after all: taken (piece 0 is still missing), and it tells the
    # probed peer's size, so that it can be asked for the rest.
    fetcher.on_data("probed", answer(BIG, 0), 0.2)
    assert drain(fetcher, "probed", 0.2) == [2]
    fetcher.on_data("honest", answer(BIG, 1), 0.3)
    fetcher.on_data("probed", answer(BIG, 2), 0.3)
    assert fetcher.result() == BIG
    assert fetcher.statistics().banned == 0


def test_probing_goes_on_while_no_size_is_known() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1, request_timeout=5.0)
    fetcher.add_peer("a", None)
    fetcher.add_peer("b", None)
    assert drain(fetcher, "a", 0.0) == [0]
    assert drain(fetcher, "b", 0.0) == []  # one probe at a time
    fetcher.handle_timer(5.0)
    assert drain(fetcher, "b", 5.0) == [0]


def test_a_silent_peer_with_the_right_size_holds_a_piece_at_most_3_seconds() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1)
    fetcher.add_peer("silent", len(INFO))
    assert drain(fetcher, "silent", 0.0) == [0]
    fetcher.add_peer("honest", len(INFO))
    fetcher.handle_timer(3.0)
    assert drain(fetcher, "honest", 3.0) == [0]


def test_requests_to_silent_peers_stay_bounded() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(BIG_V1, request_timeout=1.0)
    for n in range(50):
        fetcher.add_peer(f"p{n}", len(BIG))
    now = 0.0
    for _ in range(20):
        for n in range(50):
            drain(fetcher, f"p{n}", now)
        now += 1.0
        fetcher.handle_timer(now)
    # Each peer is asked at most max_timeouts (3) times before it is left alone.
    assert fetcher.statistics().requests_sent <= 50 * 3
    assert isinstance(MetadataRequest(0), MetadataRequest)
