"""BEP 9 metadata exchange, sans-IO: MetadataFetcher and MetadataServer."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_bencode import encode
from bip_metainfo import InfoHash
from bip_peer._extended import (
    METADATA_PIECE_SIZE,
    MetadataData,
    MetadataReject,
    MetadataRequest,
)
from bip_peer._metadata import (
    DEFAULT_MAX_METADATA_SIZE,
    MetadataFetcher,
    MetadataServer,
    metadata_piece_count,
)

PIECE = METADATA_PIECE_SIZE


def make_info(size_hint: int, seed: int = 0) -> bytes:
    """A real bencoded info dictionary of about *size_hint* bytes."""
    rng = random.Random(seed)
    pieces = rng.randbytes(max(20, size_hint - 60) // 20 * 20)
    return encode({b"length": 12345, b"name": b"x", b"piece length": 16384, b"pieces": pieces})


INFO = make_info(40_000)  # three pieces, the last one short
V1 = InfoHash.from_info_bytes(INFO, v1=True)


def answer(info: bytes, request: MetadataRequest) -> MetadataData:
    start = request.piece * PIECE
    return MetadataData(request.piece, len(info), info[start : start + PIECE])


def drain(fetcher: MetadataFetcher[str], peer: str, now: float) -> list[int]:
    pieces = []
    while (request := fetcher.next_request(peer, now)) is not None:
        pieces.append(request.piece)
    return pieces


# ------------------------------------------------------------------------------ basics


def test_piece_count() -> None:
    assert [metadata_piece_count(n) for n in (1, PIECE, PIECE + 1, 3 * PIECE)] == [1, 1, 2, 3]
    for bad in (0, -1, True, 1.5, "1"):
        with pytest.raises(ValueError, match="positive int"):
            metadata_piece_count(bad)  # type: ignore[arg-type]


def test_info_fixture_is_three_pieces() -> None:
    assert metadata_piece_count(len(INFO)) == 3
    assert len(INFO) % PIECE != 0


@pytest.mark.parametrize(
    "info_hash",
    [
        InfoHash.from_info_bytes(INFO, v1=True),
        InfoHash.from_info_bytes(INFO, v2=True),
        InfoHash.from_info_bytes(INFO, v1=True, v2=True),
    ],
    ids=["v1", "v2", "hybrid"],
)
def test_one_peer_fetches_everything(info_hash: InfoHash) -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(info_hash)
    assert fetcher.add_peer("a", len(INFO))
    now = 0.0
    while not fetcher.done:
        requests = drain(fetcher, "a", now)
        assert 0 < len(requests) <= 2
        for piece in requests:
            fetcher.on_data("a", answer(INFO, MetadataRequest(piece)), now)
        now += 0.1
    assert fetcher.result() == INFO
    assert fetcher.take_banned() == []
    assert fetcher.next_request("a", now) is None
    stats = fetcher.statistics()
    assert (stats.pieces_received, stats.requests_sent, stats.hash_failures) == (3, 3, 0)
    assert stats.metadata_size == len(INFO)
    assert stats.pieces_total == 3


@pytest.mark.parametrize("hybrid_half", ["v1", "v2"])
def test_hybrid_needs_both_hashes(hybrid_half: str) -> None:
    other = make_info(len(INFO), seed=9)
    good = InfoHash.from_info_bytes(INFO, v1=True, v2=True)
    wrong = InfoHash.from_info_bytes(other, v1=True, v2=True)
    mixed = (
        InfoHash(v1=good.v1, v2=wrong.v2)
        if hybrid_half == "v1"
        else InfoHash(v1=wrong.v1, v2=good.v2)
    )
    fetcher: MetadataFetcher[str] = MetadataFetcher(mixed)
    fetcher.add_peer("a", len(INFO))
    for _ in range(3):
        for piece in drain(fetcher, "a", 0.0):
            fetcher.on_data("a", answer(INFO, MetadataRequest(piece)), 0.0)
    assert not fetcher.done
    assert fetcher.take_banned() == [("a", "sent metadata that does not match the info-hash")]


def test_pieces_spread_over_peers_in_parallel() -> None:
    info = make_info(5 * PIECE + 100)
    fetcher: MetadataFetcher[str] = MetadataFetcher(InfoHash.from_info_bytes(info, v1=True))
    for name in "abc":
        fetcher.add_peer(name, len(info))
    asked = {name: drain(fetcher, name, 0.0) for name in "abc"}
    assert asked == {"a": [0, 1], "b": [2, 3], "c": [4, 5]}
    for name, pieces in asked.items():
        for piece in pieces:
            fetcher.on_data(name, answer(info, MetadataRequest(piece)), 0.5)
    assert fetcher.result() == info


def test_constructor_checks_arguments() -> None:
    with pytest.raises(TypeError):
        MetadataFetcher(b"x" * 20)  # type: ignore[arg-type]
    for name, value in [
        ("max_size", 0),
        ("request_timeout", 0),
        ("reject_backoff", -1),
        ("max_requests_per_peer", 0),
        ("max_timeouts", True),
        ("max_parallel_failures", 1.5),
        ("stall_backoff", 0),
    ]:
        with pytest.raises(ValueError, match=name):
            MetadataFetcher(V1, **{name: value})  # type: ignore[arg-type]


# ------------------------------------------------------------------------- advertised sizes


@pytest.mark.parametrize("size", [0, -5, DEFAULT_MAX_METADATA_SIZE + 1, True])
def test_unusable_sizes_refused(size: int) -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1)
    assert not fetcher.add_peer("a", size)
    assert fetcher.peers == frozenset()
    assert fetcher.next_request("a", 0.0) is None


def test_max_size_is_configurable() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1, max_size=len(INFO) - 1)
    assert not fetcher.add_peer("a", len(INFO))
    fetcher = MetadataFetcher(V1, max_size=len(INFO))
    assert fetcher.add_peer("a", len(INFO))


def test_readvertised_size_too_big_forgets_peer() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1)
    fetcher.add_peer("a", len(INFO))
    assert drain(fetcher, "a", 0.0) == [0, 1]
    assert not fetcher.add_peer("a", 10**12)
    assert fetcher.peers == frozenset()
    assert fetcher.metadata_size is None
    fetcher.add_peer("b", len(INFO))
    assert drain(fetcher, "b", 0.0) == [0, 1]  # a's requests were released


def test_readvertised_size_replaces_the_old_one() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1)
    assert fetcher.add_peer("a", 999)
    assert fetcher.metadata_size == 999
    assert drain(fetcher, "a", 0.0) == [0]
    assert fetcher.add_peer("a", len(INFO))
    assert fetcher.metadata_size == len(INFO)
    assert fetcher.peers == {"a"}
    fetcher.on_data("a", MetadataData(0, 999, b"x" * 999), 0.0)  # asked under the old size
    assert fetcher.take_banned() == []
    assert fetcher.statistics().ignored == 1
    assert fetcher.add_peer("a", len(INFO))  # the same size again changes nothing
    assert drain(fetcher, "a", 0.0) == [0, 1]


def test_majority_size_wins_and_sticks() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1)
    fetcher.add_peer("liar", 999)
    assert fetcher.metadata_size == 999
    fetcher.add_peer("a", len(INFO))
    assert fetcher.metadata_size == 999  # sticks while an eligible peer offers it
    fetcher.remove_peer("liar")
    assert fetcher.metadata_size == len(INFO)
    fetcher.add_peer("liar2", 999)
    fetcher.add_peer("liar3", 999)
    assert fetcher.metadata_size == len(INFO)  # no switching while the current size has peers
    assert drain(fetcher, "liar2", 0.0) == []  # peers of another size are not asked
    fetcher.remove_peer("a")
    assert fetcher.metadata_size == 999


def test_tie_goes_to_the_first_peer() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1)
    fetcher.add_peer("x", 100)
    fetcher.add_peer("y", 200)
    fetcher.remove_peer("x")
    fetcher.add_peer("x", 100)
    fetcher.remove_peer("y")
    fetcher.add_peer("y", 200)
    assert fetcher.metadata_size == 100


def test_size_switches_when_its_peers_all_reject() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1)
    fetcher.add_peer("liar", 999)
    fetcher.add_peer("a", len(INFO))
    (piece,) = drain(fetcher, "liar", 0.0)
    fetcher.on_reject("liar", MetadataReject(piece), 1.0)
    assert fetcher.metadata_size == len(INFO)
    for p in drain(fetcher, "a", 1.0):
        fetcher.on_data("a", answer(INFO, MetadataRequest(p)), 1.0)
    for p in drain(fetcher, "a", 1.0):
        fetcher.on_data("a", answer(INFO, MetadataRequest(p)), 1.0)
    assert fetcher.result() == INFO


def test_total_size_disagreeing_with_advertised_bans() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1)
    fetcher.add_peer("a", len(INFO))
    drain(fetcher, "a", 0.0)
    fetcher.on_data("a", MetadataData(0, len(INFO) + 1, INFO[:PIECE]), 0.0)
    assert fetcher.take_banned() == [
        ("a", f"metadata total_size {len(INFO) + 1} differs from its metadata_size")
    ]
    assert not fetcher.add_peer("a", len(INFO))  # banned for good
    assert fetcher.take_banned() == []


@pytest.mark.parametrize("length", [0, 100, PIECE - 1])
def test_wrong_piece_length_bans(length: int) -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1)
    fetcher.add_peer("a", len(INFO))
    drain(fetcher, "a", 0.0)
    fetcher.on_data("a", MetadataData(0, len(INFO), b"x" * length), 0.0)
    ((peer, reason),) = fetcher.take_banned()
    assert peer == "a"
    assert "expected 16384" in reason


def test_short_last_piece_length_checked() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1, max_requests_per_peer=3)
    fetcher.add_peer("a", len(INFO))
    assert drain(fetcher, "a", 0.0) == [0, 1, 2]
    fetcher.on_data("a", MetadataData(2, len(INFO), INFO[2 * PIECE : -1]), 0.0)
    ((_, reason),) = fetcher.take_banned()
    assert reason.endswith(f"expected {len(INFO) - 2 * PIECE}")


# ------------------------------------------------------------------------ unknown sizes


def test_peer_without_size_probes_piece_zero() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1)
    fetcher.add_peer("a", None)
    fetcher.add_peer("b", None)
    assert drain(fetcher, "a", 0.0) == [0]
    assert drain(fetcher, "b", 0.0) == []  # one probe at a time
    fetcher.on_data("a", answer(INFO, MetadataRequest(0)), 0.1)
    assert fetcher.metadata_size == len(INFO)
    assert drain(fetcher, "b", 0.1) == [1, 2]
    for piece in (1, 2):
        fetcher.on_data("b", answer(INFO, MetadataRequest(piece)), 0.2)
    assert fetcher.result() == INFO


def test_probe_answer_out_of_range_bans() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1)
    fetcher.add_peer("a", None)
    drain(fetcher, "a", 0.0)
    fetcher.on_data("a", MetadataData(0, DEFAULT_MAX_METADATA_SIZE + 1, b""), 0.0)
    assert fetcher.take_banned() == [
        ("a", f"metadata total_size {DEFAULT_MAX_METADATA_SIZE + 1} is out of range")
    ]


def test_peer_without_size_joins_known_size() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1)
    fetcher.add_peer("sized", len(INFO))
    fetcher.add_peer("quiet", None)
    assert drain(fetcher, "quiet", 0.0) == [0, 1]
    fetcher.on_data("quiet", answer(INFO, MetadataRequest(0)), 0.0)
    assert fetcher.statistics().pieces_have == 1


def test_peer_without_size_answering_another_size_is_ignored() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1)
    fetcher.add_peer("sized", len(INFO))
    fetcher.add_peer("quiet", None)
    drain(fetcher, "quiet", 0.0)
    fetcher.on_data("quiet", MetadataData(0, 500, b"x" * 500), 0.0)
    assert fetcher.statistics().pieces_have == 0
    assert fetcher.statistics().ignored == 1
    assert drain(fetcher, "quiet", 0.0) == []  # it now claims 500 bytes: not asked
    assert fetcher.take_banned() == []


# --------------------------------------------------------------- stray answers, rejects


def test_unsolicited_and_duplicate_data_ignored() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1)
    fetcher.on_data("nobody", answer(INFO, MetadataRequest(0)), 0.0)
    fetcher.add_peer("a", len(INFO))
    fetcher.on_data("a", answer(INFO, MetadataRequest(0)), 0.0)  # not requested
    fetcher.on_reject("a", MetadataReject(0), 0.0)  # not requested either
    assert fetcher.statistics().ignored == 3
    assert fetcher.statistics().pieces_have == 0
    assert fetcher.take_banned() == []


def test_piece_never_requested_is_ignored() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1)
    fetcher.add_peer("a", len(INFO))
    assert drain(fetcher, "a", 0.0) == [0, 1]
    fetcher.on_data("a", answer(INFO, MetadataRequest(2)), 0.0)
    assert fetcher.statistics().ignored == 1


def test_reject_backs_off_and_another_peer_takes_over() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1, reject_backoff=60.0)
    fetcher.add_peer("a", len(INFO))
    fetcher.add_peer("b", len(INFO))
    assert drain(fetcher, "a", 0.0) == [0, 1]
    fetcher.on_reject("a", MetadataReject(0), 1.0)
    assert drain(fetcher, "a", 1.0) == []
    assert drain(fetcher, "b", 1.0) == [0, 2]
    # a's request for piece 1 stops holding it at 3 s (rerequest_delay): b may be asked then.
    assert fetcher.next_deadline() == pytest.approx(3.0)
    fetcher.handle_timer(30.0)
    assert drain(fetcher, "a", 30.0) == []  # still backing off (a still owes piece 1: late)
    fetcher.handle_timer(61.0)
    # b's requests timed out at 30 too: their pieces are free again, and a may be asked.
    assert drain(fetcher, "a", 61.0) == [0, 2]
    assert fetcher.statistics().rejects == 1


def test_timeout_moves_piece_and_late_data_is_still_taken() -> None:
    # As libtorrent's ut_metadata: a request holds its piece for rerequest_delay (3 s); then
    # the piece is asked of another peer too, the first request staying outstanding (its
    # answer is taken if it comes first). request_timeout (5 s here) only frees the slow
    # peer's slots and counts its timeouts. (This test once pinned the older rule: a piece
    # was asked of nobody else until its request timed out.)
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1, request_timeout=5.0)
    fetcher.add_peer("slow", len(INFO))
    assert drain(fetcher, "slow", 0.0) == [0, 1]
    fetcher.add_peer("fast", len(INFO))
    assert drain(fetcher, "fast", 1.0) == [2]
    assert fetcher.next_deadline() == 3.0  # slow's requests stop holding their pieces
    assert drain(fetcher, "fast", 2.9) == []
    fetcher.handle_timer(3.0)
    assert drain(fetcher, "fast", 3.0) == [0]  # one slot left on fast; slow's request stays
    assert drain(fetcher, "slow", 3.0) == []  # slow is not asked the same pieces again
    assert fetcher.next_deadline() == 4.0  # fast's request for piece 2 stops holding it
    fetcher.handle_timer(5.0)
    assert fetcher.statistics().timeouts == 2
    # Its slots are free, and fast's request for piece 2 is 4 s old: slow is asked it too.
    assert drain(fetcher, "slow", 5.0) == [2]
    fetcher.on_data("slow", answer(INFO, MetadataRequest(1)), 6.0)  # late, still useful
    fetcher.on_data("fast", answer(INFO, MetadataRequest(0)), 6.0)
    fetcher.on_data("slow", answer(INFO, MetadataRequest(0)), 6.0)  # late and redundant
    fetcher.on_data("fast", answer(INFO, MetadataRequest(2)), 6.0)
    assert fetcher.result() == INFO
    assert fetcher.statistics().ignored == 1


def test_peer_stalls_after_max_timeouts() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1, request_timeout=1.0, max_timeouts=3)
    fetcher.add_peer("a", len(INFO))
    drain(fetcher, "a", 0.0)
    fetcher.handle_timer(1.0)
    assert drain(fetcher, "a", 1.0) == [2]
    fetcher.handle_timer(2.0)
    assert drain(fetcher, "a", 2.0) == []
    assert fetcher.next_deadline() == 62.0  # stalled for stall_backoff, not for good
    assert drain(fetcher, "a", 61.9) == []
    assert fetcher.metadata_size == len(INFO)  # kept: nobody else offers anything


def test_remove_peer_releases_requests() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1)
    fetcher.add_peer("a", len(INFO))
    fetcher.add_peer("b", len(INFO))
    assert drain(fetcher, "a", 0.0) == [0, 1]
    fetcher.remove_peer("a")
    fetcher.remove_peer("a")  # twice is harmless
    assert drain(fetcher, "b", 0.0) == [0, 1]
    fetcher.on_data("a", answer(INFO, MetadataRequest(0)), 0.0)  # gone: ignored
    assert fetcher.statistics().pieces_have == 0


def test_next_deadline_includes_backoff_end() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1, reject_backoff=7.0, request_timeout=100)
    fetcher.add_peer("a", len(INFO))
    (first, second) = drain(fetcher, "a", 0.0)
    fetcher.on_reject("a", MetadataReject(first), 1.0)
    fetcher.on_reject("a", MetadataReject(second), 1.0)
    assert fetcher.next_deadline() == 8.0
    fetcher.handle_timer(8.0)
    assert fetcher.next_deadline() is None
    assert drain(fetcher, "a", 8.0) == [0, 1]


# ------------------------------------------------------------------------- liars


def test_single_liar_banned_then_honest_peer_finishes() -> None:
    bogus = make_info(len(INFO), seed=5)[: len(INFO)]
    fetcher: MetadataFetcher[str] = MetadataFetcher(V1, max_requests_per_peer=3)
    fetcher.add_peer("liar", len(INFO))
    for piece in drain(fetcher, "liar", 0.0):
        fetcher.on_data("liar", answer(bogus, MetadataRequest(piece)), 0.0)
    assert fetcher.take_banned() == [("liar", "sent metadata that does not match the info-hash")]
    assert fetcher.statistics().hash_failures == 1
    fetcher.add_peer("honest", len(INFO))
    for piece in drain(fetcher, "honest", 1.0):
        fetcher.on_data("honest", answer(INFO, MetadataRequest(piece)), 1.0)
    assert fetcher.result() == INFO
    assert not fetcher.statistics().single_source


def test_liar_among_several_contributors_is_found() -> None:
    info = make_info(4 * PIECE - 10)
    bogus = bytearray(info)
    bogus[PIECE * 2 + 5] ^= 0xFF  # the liar corrupts piece 2 only
    fetcher: MetadataFetcher[str] = MetadataFetcher(InfoHash.from_info_bytes(info, v1=True))
    sources = {"honest1": info, "liar": bytes(bogus), "honest2": info}
    for name in sources:
        fetcher.add_peer(name, len(info))
    now = 0.0
    for _ in range(50):
        for name, data in sources.items():
            if name not in fetcher.peers:
                continue
            for piece in drain(fetcher, name, now):
                fetcher.on_data(name, answer(data, MetadataRequest(piece)), now)
        if fetcher.done:
            break
        now += 1.0
    assert fetcher.result() == info
    stats = fetcher.statistics()
    assert stats.hash_failures == 1
    assert stats.single_source
    assert [peer for peer, _ in fetcher.take_banned()] == ["liar"]


def test_liar_of_another_size_is_banned_after_success() -> None:
    info = make_info(2 * PIECE + 10)
    fetcher: MetadataFetcher[str] = MetadataFetcher(
        InfoHash.from_info_bytes(info, v1=True), max_parallel_failures=1
    )
    bogus = make_info(3 * PIECE + 10, seed=3)
    fetcher.add_peer("liar", len(bogus))
    fetcher.add_peer("liar-friend", len(bogus))
    fetcher.add_peer("honest", len(info))
    for _ in range(10):
        for name in ("liar", "liar-friend"):
            if name in fetcher.peers:
                for piece in drain(fetcher, name, 0.0):
                    fetcher.on_data(name, answer(bogus, MetadataRequest(piece)), 0.0)
    # The two liars contributed to one failed assembly; single-source mode then tries them one
    # by one, each failing alone and getting banned.
    banned = {peer for peer, _ in fetcher.take_banned()}
    assert banned == {"liar", "liar-friend"}
    for _ in range(3):
        for piece in drain(fetcher, "honest", 1.0):
            fetcher.on_data("honest", answer(info, MetadataRequest(piece)), 1.0)
    assert fetcher.result() == info


def _two_contributor_failure(names: tuple[str, ...]) -> tuple[MetadataFetcher[str], bytes, bytes]:
    """A fetcher whose first assembly failed with pieces from names[0] (bogus) and names[1]."""
    info = random.Random(1).randbytes(2 * PIECE + 10)
    bogus = bytearray(info)
    bogus[3] ^= 1
    fetcher: MetadataFetcher[str] = MetadataFetcher(InfoHash.from_info_bytes(info, v1=True))
    for name in names:
        fetcher.add_peer(name, len(info))
    assert drain(fetcher, names[0], 0.0) == [0, 1]
    assert drain(fetcher, names[1], 0.0) == [2]
    for piece in (0, 1):
        fetcher.on_data(names[0], answer(bytes(bogus), MetadataRequest(piece)), 0.0)
    fetcher.on_data(names[1], answer(info, MetadataRequest(2)), 0.0)
    assert fetcher.statistics().single_source
    assert not fetcher.done
    assert fetcher.take_banned() == []
    return fetcher, info, bytes(bogus)


def test_single_source_moves_on_when_the_source_leaves() -> None:
    fetcher, info, bogus = _two_contributor_failure(("liar", "honest"))
    # Both contributed; the source is the first peer by order: liar.
    assert drain(fetcher, "honest", 1.0) == []
    assert drain(fetcher, "liar", 1.0) == [2, 0]  # pieces it did not send before come first
    fetcher.on_data("liar", answer(bogus, MetadataRequest(0)), 1.0)
    assert fetcher.statistics().pieces_have == 1
    fetcher.remove_peer("liar")  # leaves mid-way: its piece is discarded
    assert fetcher.statistics().pieces_have == 0
    for _ in range(3):
        for piece in drain(fetcher, "honest", 2.0):
            fetcher.on_data("honest", answer(info, MetadataRequest(piece)), 2.0)
    assert fetcher.result() == info
    assert fetcher.take_banned() == []  # liar left before it could be caught


def test_single_source_catches_the_liar_when_it_is_the_source() -> None:
    fetcher, info, bogus = _two_contributor_failure(("liar", "honest"))
    for piece in drain(fetcher, "liar", 1.0) + drain(fetcher, "liar", 1.0):
        fetcher.on_data("liar", answer(bogus, MetadataRequest(piece)), 1.0)
    for piece in drain(fetcher, "liar", 1.0):
        fetcher.on_data("liar", answer(bogus, MetadataRequest(piece)), 1.0)
    assert fetcher.take_banned() == [("liar", "sent metadata that does not match the info-hash")]
    for _ in range(3):
        for piece in drain(fetcher, "honest", 2.0):
            fetcher.on_data("honest", answer(info, MetadataRequest(piece)), 2.0)
    assert fetcher.result() == info


def test_single_source_prefers_non_contributors_and_moves_on_after_a_reject() -> None:
    fetcher, info, bogus = _two_contributor_failure(("a", "b", "c"))
    assert drain(fetcher, "a", 1.0) == []
    assert drain(fetcher, "c", 1.0) == [0, 1]  # c contributed nothing: tried first
    fetcher.on_reject("c", MetadataReject(0), 1.0)
    assert drain(fetcher, "b", 1.0) == []
    assert drain(fetcher, "a", 1.0) == [2, 0]  # next by order; c's piece 1 no longer held
    for piece in (2, 0):
        fetcher.on_data("a", answer(bogus, MetadataRequest(piece)), 1.0)
    for _ in range(3):
        for piece in drain(fetcher, "a", 1.0):
            fetcher.on_data("a", answer(bogus, MetadataRequest(piece)), 1.0)
    assert [peer for peer, _ in fetcher.take_banned()] == ["a"]
    for _ in range(3):
        for piece in drain(fetcher, "b", 2.0):
            fetcher.on_data("b", answer(info, MetadataRequest(piece)), 2.0)
    assert fetcher.result() == info
    assert fetcher.take_banned() == []


def test_single_source_stalled_source_moves_on() -> None:
    fetcher, info, _ = _two_contributor_failure(("a", "b"))
    assert drain(fetcher, "a", 10.0) == [2, 0]  # a is the source
    fetcher.handle_timer(30.0)
    fetcher.handle_timer(60.0)  # two timeouts: still the source (max_timeouts is 3)
    assert drain(fetcher, "a", 60.0) == [1]
    fetcher.handle_timer(90.0)  # the third: a is stalled, b takes over
    assert drain(fetcher, "a", 90.0) == []
    for _ in range(3):
        for piece in drain(fetcher, "b", 91.0):
            fetcher.on_data("b", answer(info, MetadataRequest(piece)), 91.0)
    assert fetcher.result() == info
    # a's corrupted piece 0 (from the failed assembly) differs from the verified one.
    assert [peer for peer, _ in fetcher.take_banned()] == ["a"]


def test_more_parallel_failures_allowed_before_single_source() -> None:
    info = random.Random(4).randbytes(2 * PIECE + 10)
    bogus = bytearray(info)
    bogus[3] ^= 1
    fetcher: MetadataFetcher[str] = MetadataFetcher(
        InfoHash.from_info_bytes(info, v1=True), max_parallel_failures=2
    )
    fetcher.add_peer("liar", len(info))
    fetcher.add_peer("honest", len(info))
    assert drain(fetcher, "liar", 0.0) == [0, 1]
    assert drain(fetcher, "honest", 0.0) == [2]
    for piece in (0, 1):
        fetcher.on_data("liar", answer(bytes(bogus), MetadataRequest(piece)), 0.0)
    fetcher.on_data("honest", answer(info, MetadataRequest(2)), 0.0)
    assert not fetcher.statistics().single_source  # one more parallel try
    # Each peer is now offered the pieces it did not send before.
    assert drain(fetcher, "liar", 1.0) == [2, 0]
    assert drain(fetcher, "honest", 1.0) == [1]


def test_single_source_readvertising_another_size_moves_on() -> None:
    fetcher, info, bogus = _two_contributor_failure(("a", "b"))
    assert drain(fetcher, "a", 1.0) == [2, 0]
    fetcher.on_data("a", answer(bogus, MetadataRequest(2)), 1.0)
    assert fetcher.statistics().pieces_have == 1
    fetcher.add_peer("a", 5)  # a now claims 5 bytes
    assert fetcher.statistics().pieces_have == 0
    assert fetcher.metadata_size == len(info)  # b still offers it
    assert drain(fetcher, "a", 1.0) == []
    assert drain(fetcher, "b", 1.0) == [0, 1]


def test_backoff_ends_without_handle_timer() -> None:
    fetcher, _, _ = _two_contributor_failure(("a", "b"))
    assert drain(fetcher, "a", 1.0) == [2, 0]
    fetcher.on_reject("a", MetadataReject(2), 1.0)  # a backs off: b becomes the source
    fetcher.remove_peer("b")  # and leaves
    # The back-off is over, though handle_timer never ran: a is asked again.
    assert drain(fetcher, "a", 100.0) == [2, 1]


def test_data_from_non_source_ignored_in_single_source_mode() -> None:
    info = random.Random(2).randbytes(3 * PIECE + 10)
    bogus = bytearray(info)
    bogus[3] ^= 1
    fetcher: MetadataFetcher[str] = MetadataFetcher(
        InfoHash.from_info_bytes(info, v1=True), request_timeout=1.0
    )
    fetcher.add_peer("a", len(info))
    fetcher.add_peer("b", len(info))
    assert drain(fetcher, "a", 0.0) == [0, 1]
    assert drain(fetcher, "b", 0.0) == [2, 3]
    fetcher.on_data("b", answer(info, MetadataRequest(2)), 0.0)
    fetcher.handle_timer(1.0)  # a's and b's outstanding requests become late
    fetcher.on_data("a", answer(bytes(bogus), MetadataRequest(0)), 1.0)
    fetcher.on_data("a", answer(bytes(bogus), MetadataRequest(1)), 1.0)
    assert drain(fetcher, "a", 1.0) == [3]
    fetcher.on_data("a", answer(bytes(bogus), MetadataRequest(3)), 1.0)
    assert fetcher.statistics().single_source
    ignored = fetcher.statistics().ignored
    fetcher.on_data("b", answer(info, MetadataRequest(3)), 1.5)  # late, but b is not the source
    assert fetcher.statistics().ignored == ignored + 1
    assert fetcher.statistics().pieces_have == 0


# ------------------------------------------------------------------- simulated swarms


@dataclass
class SimPeer:
    name: str
    honest: bool
    advertised: int | None
    data: bytes
    behaviour: str  # "good", "reject", "silent", "wrong-size", "short"
    queue: list[int] = field(default_factory=list)


def simulate(info: bytes, peers: list[SimPeer], rng: random.Random) -> MetadataFetcher[str]:
    fetcher: MetadataFetcher[str] = MetadataFetcher(
        InfoHash.from_info_bytes(info, v1=True, v2=True), request_timeout=3.0, reject_backoff=5.0
    )
    for peer in peers:
        fetcher.add_peer(peer.name, peer.advertised)
    banned: set[str] = set()
    now = 0.0
    for _ in range(400):
        for peer in peers:
            if peer.name in banned:
                continue
            while (request := fetcher.next_request(peer.name, now)) is not None:
                peer.queue.append(request.piece)
        for peer in rng.sample(peers, len(peers)):
            if peer.name in banned or not peer.queue:
                continue
            piece = peer.queue.pop(0)
            if peer.behaviour == "silent":
                continue
            if peer.behaviour == "reject":
                fetcher.on_reject(peer.name, MetadataReject(piece), now)
                continue
            total = len(peer.data)
            if piece * PIECE >= total:  # beyond what it has: as a real server, it rejects
                fetcher.on_reject(peer.name, MetadataReject(piece), now)
                continue
            chunk = peer.data[piece * PIECE : (piece + 1) * PIECE]
            if peer.behaviour == "wrong-size":
                total += 1
            if peer.behaviour == "short":
                chunk = chunk[:-1]
            fetcher.on_data(peer.name, MetadataData(piece, total, chunk), now)
        for name, _ in fetcher.take_banned():
            banned.add(name)
        if fetcher.done:
            break
        now += 1.0
        fetcher.handle_timer(now)
    for peer in peers:
        if peer.honest:
            assert peer.name not in banned, f"honest {peer.name} banned"
    return fetcher


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 5 * PIECE),
    liars=st.lists(
        st.sampled_from(
            ["corrupt", "other", "reject", "silent", "wrong-size", "short", "lie-size"]
        ),
        max_size=4,
    ),
    honest=st.integers(0, 3),
    seed=st.integers(0, 2**32),
)
def test_simulated_swarm(size: int, liars: list[str], honest: int, seed: int) -> None:
    rng = random.Random(seed)
    info = rng.randbytes(size)
    peers = [SimPeer(f"h{i}", True, len(info), info, "good") for i in range(honest)]
    for index, kind in enumerate(liars):
        name = f"l{index}"
        if kind == "corrupt":
            bad = bytearray(info)
            bad[rng.randrange(len(bad))] ^= 0x01
            peers.append(SimPeer(name, False, len(info), bytes(bad), "good"))
        elif kind == "other":
            other = rng.randbytes(rng.randint(1, 5 * PIECE))
            peers.append(SimPeer(name, False, len(other), other, "good"))
        elif kind == "lie-size":
            peers.append(SimPeer(name, False, rng.choice([None, len(info) + 7]), info, "good"))
        else:
            peers.append(SimPeer(name, False, len(info), info, kind))
    rng.shuffle(peers)
    fetcher = simulate(info, peers, rng)
    if honest:
        assert fetcher.result() == info
    else:
        assert fetcher.result() in (None, info)


# ---------------------------------------------------------------------------- server


def test_server_answers_every_piece() -> None:
    server: MetadataServer[str] = MetadataServer(INFO)
    assert server.metadata_size == len(INFO)
    assert server.piece_count == 3
    got = [server.answer("p", MetadataRequest(piece), 0.0) for piece in range(3)]
    assert all(isinstance(message, MetadataData) for message in got)
    assert b"".join(m.data for m in got if isinstance(m, MetadataData)) == INFO
    assert {m.total_size for m in got if isinstance(m, MetadataData)} == {len(INFO)}
    assert server.answer("p", MetadataRequest(3), 0.0) == MetadataReject(3)
    assert server.statistics().served == 3
    assert server.statistics().rejected_range == 1


def test_server_budget_and_refill() -> None:
    server: MetadataServer[str] = MetadataServer(INFO, burst=4, rate=2.0)
    answers = [server.answer("p", MetadataRequest(0), 0.0) for _ in range(6)]
    assert [type(a).__name__ for a in answers] == ["MetadataData"] * 4 + ["MetadataReject"] * 2
    assert isinstance(server.answer("other", MetadataRequest(0), 0.0), MetadataData)
    assert isinstance(server.answer("p", MetadataRequest(0), 0.5), MetadataData)  # 1 token back
    assert isinstance(server.answer("p", MetadataRequest(0), 0.5), MetadataReject)
    assert isinstance(server.answer("p", MetadataRequest(0), 0.1), MetadataReject)  # clock back
    assert server.statistics().rejected_budget == 4
    server.forget("p")
    assert isinstance(server.answer("p", MetadataRequest(0), 0.5), MetadataData)  # fresh budget


def test_server_bounds_tracked_peers() -> None:
    server: MetadataServer[int] = MetadataServer(INFO, burst=1, max_peers=3)
    for peer in range(5):
        server.answer(peer, MetadataRequest(0), 0.0)
    assert server.statistics().peers == 3
    # Peer 0 was forgotten (the stalest) and has a fresh budget again.
    assert isinstance(server.answer(0, MetadataRequest(0), 0.0), MetadataData)
    assert isinstance(server.answer(4, MetadataRequest(0), 0.0), MetadataReject)


def test_server_checks_arguments() -> None:
    with pytest.raises(TypeError):
        MetadataServer("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not empty"):
        MetadataServer(b"")
    for name, value in [("burst", 0), ("rate", 0.0), ("max_peers", -1)]:
        with pytest.raises(ValueError, match=name):
            MetadataServer(INFO, **{name: value})  # type: ignore[arg-type]
    assert MetadataServer(bytearray(b"de")).metadata_size == 2


def test_fetcher_against_servers() -> None:
    info = make_info(10 * PIECE + 1)
    info_hash = InfoHash.from_info_bytes(info, v1=True, v2=True)
    servers = {name: MetadataServer[str](info) for name in "abcd"}
    fetcher: MetadataFetcher[str] = MetadataFetcher(info_hash)
    for name, server in servers.items():
        fetcher.add_peer(name, server.metadata_size)
    rounds = 0
    while not fetcher.done:
        rounds += 1
        for name, server in servers.items():
            for piece in drain(fetcher, name, float(rounds)):
                reply = server.answer("me", MetadataRequest(piece), float(rounds))
                assert isinstance(reply, MetadataData)
                fetcher.on_data(name, reply, float(rounds))
    assert rounds == 2  # 11 pieces over 4 peers at 2 requests each
    assert hashlib.sha256(fetcher.result() or b"").digest() == info_hash.v2
