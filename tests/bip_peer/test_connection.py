"""PeerConnection: behaviour, two connections back to back, and hypothesis."""

from __future__ import annotations

import contextlib
import doctest
from collections.abc import Callable
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_handshake import Extensions, PeerAddress
from bip_metainfo import InfoHash
from bip_peer import _connection
from bip_peer._connection import ConnectionLimits, PeerConnection, UnknownExtended
from bip_peer._errors import LocalProtocolError, PeerError, RemoteProtocolError
from bip_peer._extended import DontHave, ExtendedHandshake, MetadataRequest, UploadOnly
from bip_peer._fast import allowed_fast_set
from bip_peer._messages import (
    NEED_DATA,
    AllowedFast,
    Bitfield,
    Cancel,
    Choke,
    Extended,
    Hashes,
    HashReject,
    HashRequest,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    KeepAlive,
    Message,
    NotInterested,
    Piece,
    Port,
    RejectRequest,
    Request,
    Suggest,
    Unchoke,
)

ALL = Extensions.FAST | Extensions.EXTENSION_PROTOCOL | Extensions.DHT
PLAIN = Extensions.EXTENSION_PROTOCOL | Extensions.DHT
INFO_HASH = InfoHash(v1=bytes(range(20)))
IDS = {"ut_metadata": 3, "ut_pex": 1, "lt_donthave": 7, "upload_only": 4}
BLOCK = 16384
ROOT = bytes(32)


def make(
    *,
    ext: Extensions = ALL,
    num_pieces: int | None = 8,
    limits: ConnectionLimits | None = None,
    address: str = "10.0.0.2",
) -> PeerConnection:
    return PeerConnection(
        num_pieces=num_pieces,
        info_hash=INFO_HASH,
        our_extensions=ext,
        their_extensions=ext,
        peer_address=PeerAddress(IPv4Address(address), 6881),
        limits=limits,
    )


def deliver(conn: PeerConnection, *messages: Message) -> list[object]:
    conn.receive_data(b"".join(message.encode() for message in messages))
    return drain(conn)


def drain(conn: PeerConnection) -> list[object]:
    events: list[object] = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def transfer(sender: PeerConnection, receiver: PeerConnection, message: object) -> list[object]:
    receiver.receive_data(sender.send(message))  # type: ignore[arg-type]
    events = drain(receiver)
    owed = receiver.data_to_send()
    if owed:
        sender.receive_data(owed)
        events.extend(drain(sender))
    return events


def is_set(flag: bool) -> bool:
    """A flag read through a call, so mypy does not narrow a property across state changes."""
    return flag


def test_doctests() -> None:
    assert doctest.testmod(_connection).failed == 0


def test_initial_state() -> None:
    conn = make()
    assert conn.am_choking
    assert conn.peer_choking
    assert not conn.am_interested
    assert not conn.peer_interested
    assert conn.fast
    assert conn.extensions == ALL
    assert conn.num_pieces == 8
    assert conn.peer_pieces.is_empty
    assert conn.our_pieces.is_empty
    assert not conn.our_requests
    assert not conn.peer_requests
    assert conn.their_handshake is None
    assert conn.peer_reqq is None
    assert conn.data_to_send() == b""
    assert conn.limits == ConnectionLimits()
    assert conn.info_hash == INFO_HASH
    assert conn.peer_address is not None


# ---------------------------------------------------------------------------- choking, requests


def unchoked_pair(ext: Extensions = ALL) -> tuple[PeerConnection, PeerConnection]:
    """A seeder and a leecher of 8 pieces, the leecher unchoked and interested."""
    seeder, leecher = make(ext=ext), make(ext=ext)
    transfer(seeder, leecher, HaveAll() if Extensions.FAST in ext else Bitfield(b"\xff"))
    transfer(leecher, seeder, Interested())
    transfer(seeder, leecher, Unchoke())
    return seeder, leecher


def test_request_piece_round_trip() -> None:
    seeder, leecher = unchoked_pair()
    assert transfer(leecher, seeder, Request(2, 0, BLOCK)) == [Request(2, 0, BLOCK)]
    assert seeder.peer_requests == {(2, 0, BLOCK)}
    assert leecher.our_requests == {(2, 0, BLOCK)}
    block = bytes(BLOCK)
    [event] = transfer(seeder, leecher, Piece(2, 0, block))
    assert isinstance(event, Piece)
    assert bytes(event.block) == block
    assert not seeder.peer_requests
    assert not leecher.our_requests


def test_send_parts_does_not_copy_the_block() -> None:
    seeder, leecher = unchoked_pair()
    transfer(leecher, seeder, Request(0, 0, 4))
    block = memoryview(b"abcd")
    head, body = seeder.send_parts(Piece(0, 0, block))
    assert body is block or bytes(body) == b"abcd"
    assert len(head) == 13


def test_piece_longer_than_requested_is_an_error() -> None:
    seeder, leecher = unchoked_pair()
    transfer(leecher, seeder, Request(0, 0, 100))
    with pytest.raises(RemoteProtocolError, match="100-byte request"):
        deliver(leecher, Piece(0, 0, bytes(101)))


def test_unrequested_piece_is_counted_and_dropped() -> None:
    _, leecher = unchoked_pair()
    assert deliver(leecher, Piece(0, 0, b"abc")) == []
    assert leecher.unrequested_blocks == 1
    assert leecher.unrequested_bytes == 3


def test_empty_piece_reads_as_a_reject() -> None:
    _, leecher = unchoked_pair()
    leecher.send(Request(1, BLOCK, BLOCK))
    assert deliver(leecher, Piece(1, BLOCK, b"")) == [RejectRequest(1, BLOCK, BLOCK)]
    assert not leecher.our_requests
    assert deliver(leecher, Piece(1, BLOCK, b"")) == []
    assert leecher.unmatched_rejects == 1


def test_cancel_race() -> None:
    seeder, leecher = unchoked_pair()
    transfer(leecher, seeder, Request(0, 0, BLOCK))
    cancel = leecher.send(Cancel(0, 0, BLOCK))
    piece = seeder.send(Piece(0, 0, bytes(BLOCK)))  # crosses the cancel
    seeder.receive_data(cancel)
    assert drain(seeder) == []  # nothing pending any more: dropped
    assert seeder.data_to_send() == b""
    leecher.receive_data(piece)
    assert drain(leecher) == []
    assert leecher.unrequested_blocks == 1


def test_cancel_with_fast_is_answered_by_a_reject() -> None:
    seeder, leecher = unchoked_pair()
    transfer(leecher, seeder, Request(0, 0, BLOCK))
    seeder.receive_data(leecher.send(Cancel(0, 0, BLOCK)))
    assert drain(seeder) == [Cancel(0, 0, BLOCK)]
    assert not seeder.peer_requests
    leecher.receive_data(seeder.data_to_send())
    assert leecher.cancelled_requests == {(0, 0, BLOCK)}
    assert drain(leecher) == []  # the reject answers the cancelled request
    assert not leecher.cancelled_requests
    assert leecher.unmatched_rejects == 0
    # A later reject for the same block is unmatched.
    assert deliver(leecher, RejectRequest(0, 0, BLOCK)) == []
    assert leecher.unmatched_rejects == 1


def test_cancel_without_fast_owes_nothing() -> None:
    seeder, leecher = unchoked_pair(PLAIN)
    transfer(leecher, seeder, Request(0, 0, BLOCK))
    assert transfer(leecher, seeder, Cancel(0, 0, BLOCK)) == [Cancel(0, 0, BLOCK)]
    assert seeder.data_to_send() == b""


def test_choke_with_fast_rejects_pending_requests_except_allowed_fast() -> None:
    seeder, leecher = unchoked_pair()
    transfer(seeder, leecher, AllowedFast(5))
    for index in (1, 5):
        transfer(leecher, seeder, Request(index, 0, BLOCK))
    data = seeder.send(Choke())
    assert data == Choke().encode() + RejectRequest(1, 0, BLOCK).encode()
    assert seeder.peer_requests == {(5, 0, BLOCK)}
    leecher.receive_data(data)
    assert drain(leecher) == [Choke(), RejectRequest(1, 0, BLOCK)]
    assert leecher.our_requests == {(5, 0, BLOCK)}  # with fast it stays until answered
    transfer(seeder, leecher, Piece(5, 0, bytes(BLOCK)))
    assert not leecher.our_requests


def test_choke_without_fast_discards_requests_both_ways() -> None:
    seeder, leecher = unchoked_pair(PLAIN)
    transfer(leecher, seeder, Request(1, 0, BLOCK))
    data = seeder.send(Choke())
    assert data == Choke().encode()
    assert not seeder.peer_requests
    leecher.receive_data(data)
    assert drain(leecher) == [Choke()]
    assert not leecher.our_requests


def test_request_while_choked_is_allowed_only_for_allowed_fast_pieces() -> None:
    seeder, leecher = make(), make()
    transfer(seeder, leecher, HaveAll())
    transfer(seeder, leecher, AllowedFast(3))
    assert leecher.allowed_fast_from_peer == {3}
    with pytest.raises(LocalProtocolError, match="while choked"):
        leecher.send(Request(2, 0, BLOCK))
    assert transfer(leecher, seeder, Request(3, 0, BLOCK)) == [Request(3, 0, BLOCK)]
    assert seeder.peer_requests == {(3, 0, BLOCK)}


def test_requests_while_choked_are_refused_then_fatal() -> None:
    conn = make(limits=ConnectionLimits(max_choked_requests=3))
    conn.send(HaveAll())
    for begin in range(3):
        assert deliver(conn, Request(0, begin * BLOCK, BLOCK)) == []
    assert conn.data_to_send() == b"".join(
        RejectRequest(0, begin * BLOCK, BLOCK).encode() for begin in range(3)
    )
    with pytest.raises(RemoteProtocolError, match="while choked"):
        deliver(conn, Request(0, 3 * BLOCK, BLOCK))


def test_choked_request_count_restarts_at_each_choke() -> None:
    conn = make(limits=ConnectionLimits(max_choked_requests=1))
    conn.send(HaveAll())
    deliver(conn, Request(0, 0, BLOCK))
    assert conn.choked_requests == 1
    conn.send(Unchoke())
    conn.send(Choke())
    assert conn.choked_requests == 0
    deliver(conn, Request(0, 0, BLOCK))


def test_requests_beyond_the_queue_are_rejected_not_fatal() -> None:
    conn = make(limits=ConnectionLimits(max_peer_requests=2))
    conn.send(HaveAll())
    conn.send(Unchoke())
    events = deliver(conn, *(Request(0, begin, 1) for begin in range(5)))
    assert len(events) == 2
    assert len(conn.peer_requests) == 2
    assert conn.refused_requests == 3
    assert conn.data_to_send() == b"".join(
        RejectRequest(0, begin, 1).encode() for begin in range(2, 5)
    )


def test_duplicate_request_is_ignored() -> None:
    conn = make()
    conn.send(HaveAll())
    conn.send(Unchoke())
    assert len(deliver(conn, Request(0, 0, 1), Request(0, 0, 1))) == 1


def test_requests_for_pieces_we_lack_are_refused_then_fatal() -> None:
    conn = make(limits=ConnectionLimits(max_invalid_requests=2))
    conn.send(Bitfield(b"\x80"))
    conn.send(Unchoke())
    assert deliver(conn, Request(1, 0, 1), Request(2, 0, 1)) == []
    assert conn.invalid_requests == 2
    with pytest.raises(RemoteProtocolError, match="do not have"):
        deliver(conn, Request(3, 0, 1))


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (Request(0, 0, BLOCK + 1), "limit"),
        (Request(0, 0, 0), "limit"),
    ],
)
def test_send_bad_requests(message: Message, match: str) -> None:
    _, leecher = unchoked_pair()
    with pytest.raises(LocalProtocolError, match=match):
        leecher.send(message)


def test_send_request_rules() -> None:
    seeder, leecher = make(), make()
    transfer(seeder, leecher, Bitfield(b"\x80"))
    transfer(seeder, leecher, Unchoke())
    with pytest.raises(LocalProtocolError, match="does not have"):
        leecher.send(Request(1, 0, BLOCK))
    leecher.send(Request(0, 0, BLOCK))
    with pytest.raises(LocalProtocolError, match="already requested"):
        leecher.send(Request(0, 0, 100))
    leecher.send(Cancel(0, 0, BLOCK))
    leecher.send(Request(0, 0, 100))


def test_send_piece_and_reject_must_answer_a_request() -> None:
    seeder, leecher = unchoked_pair()
    transfer(leecher, seeder, Request(0, 0, 10))
    with pytest.raises(LocalProtocolError):
        seeder.send(Piece(0, 0, bytes(9)))
    seeder.send(RejectRequest(0, 0, 10))
    with pytest.raises(LocalProtocolError):
        seeder.send(RejectRequest(0, 0, 10))


def test_large_block_limit() -> None:
    limits = ConnectionLimits(max_block_length=2 * BLOCK)
    conn = make(limits=limits)
    conn.send(HaveAll())
    conn.send(Unchoke())
    assert deliver(conn, Request(0, 0, 2 * BLOCK)) == [Request(0, 0, 2 * BLOCK)]


def test_piece_above_the_block_limit_is_refused_by_the_decoder() -> None:
    _, leecher = unchoked_pair()
    with pytest.raises(RemoteProtocolError):
        deliver(leecher, Piece(0, 0, bytes(BLOCK + 1)))


# ---------------------------------------------------------------------------- availability


def test_have_and_bitfield_update_peer_pieces() -> None:
    conn = make(ext=PLAIN)
    deliver(conn, Bitfield(b"\xa0"), Have(7))
    assert list(conn.peer_pieces) == [0, 2, 7]
    assert not conn.peer_has_all


def test_bitfield_spare_bits_are_an_error() -> None:
    conn = make(num_pieces=7)
    with pytest.raises(RemoteProtocolError):
        deliver(conn, Bitfield(b"\x01"))


def test_have_all_and_have_none() -> None:
    conn = make()
    deliver(conn, HaveAll())
    assert conn.peer_pieces.is_seed
    assert conn.peer_has_all
    other = make()
    deliver(other, HaveNone())
    assert other.peer_pieces.is_empty


def test_availability_after_extended_handshake_and_allowed_fast_is_fine() -> None:
    conn = make()
    events = deliver(
        conn,
        Extended(0, ExtendedHandshake(m={}).encode_payload()),
        AllowedFast(1),
        Suggest(2),
        HaveAll(),
    )
    assert len(events) == 4
    assert conn.peer_has_all


def test_late_bitfield_replaces_what_the_peer_had() -> None:
    """aria2 sends a bitfield mid-connection instead of many haves; libtorrent takes it
    as the peer's whole piece set, and so do we."""
    conn = make(ext=PLAIN)
    deliver(conn, Bitfield(b"\x80"), Have(3), Have(7))
    assert list(conn.peer_pieces) == [0, 3, 7]
    (event,) = deliver(conn, Bitfield(b"\x41"))
    assert event == Bitfield(b"\x41")
    assert list(conn.peer_pieces) == [1, 7]
    deliver(conn, Have(2))
    assert list(conn.peer_pieces) == [1, 2, 7]


def test_late_have_all_and_have_none_replace_what_the_peer_had() -> None:
    conn = make()
    deliver(conn, Have(1), HaveAll())
    assert conn.peer_pieces.is_seed
    deliver(conn, HaveNone())
    assert conn.peer_pieces.is_empty
    assert not conn.peer_has_all
    deliver(conn, Bitfield(b"\x01"), HaveAll(), Bitfield(b"\x02"))
    assert list(conn.peer_pieces) == [6]


def test_late_bitfield_is_still_checked() -> None:
    conn = make(ext=PLAIN)
    deliver(conn, Have(0))
    with pytest.raises(RemoteProtocolError):
        deliver(conn, Bitfield(b"\x80\x00"))


def test_we_cannot_send_availability_twice() -> None:
    conn = make()
    conn.send(HaveNone())
    for message in (HaveAll(), HaveNone(), Bitfield(b"\x00")):
        with pytest.raises(LocalProtocolError):
            conn.send(message)
    conn.send(Have(3))
    assert list(conn.our_pieces) == [3]


def test_magnet_bitfield_kept_until_num_pieces_known() -> None:
    conn = make(num_pieces=None)
    deliver(conn, Bitfield(b"\xc0"), Have(5))
    assert conn.peer_pieces.num_pieces == 0
    assert conn.num_pieces is None
    conn.num_pieces = 6
    assert list(conn.peer_pieces) == [0, 1, 5]
    conn.num_pieces = 6  # same value again: fine
    with pytest.raises(ValueError, match="already"):
        conn.num_pieces = 7


@pytest.mark.parametrize(
    ("messages", "num_pieces"),
    [
        ((Bitfield(b"\xc0"),), 9),  # wrong length
        ((Bitfield(b"\xc1"),), 6),  # spare bit
        ((HaveNone(), Have(9)), 6),  # have beyond the torrent
    ],
)
def test_magnet_bitfield_checked_when_num_pieces_known(
    messages: tuple[Message, ...], num_pieces: int
) -> None:
    conn = make(num_pieces=None)
    deliver(conn, *messages)
    with pytest.raises(RemoteProtocolError):
        conn.num_pieces = num_pieces
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_magnet_have_all_and_donthave() -> None:
    conn = make(num_pieces=None)
    conn.send(ExtendedHandshake(m=IDS))
    deliver(conn, HaveAll())
    assert is_set(conn.peer_has_all)
    deliver(conn, Extended(IDS["lt_donthave"], DontHave(2).encode_payload()))
    assert not conn.peer_has_all
    deliver(conn, Have(2), Extended(IDS["lt_donthave"], DontHave(3).encode_payload()))
    conn.num_pieces = 4
    assert list(conn.peer_pieces) == [0, 1, 2]


@pytest.mark.parametrize(
    ("late", "expected"),
    [(Bitfield(b"\x04"), [5]), (HaveAll(), [0, 1, 2, 3, 4, 5]), (HaveNone(), [])],
    ids=["bitfield", "have all", "have none"],
)
def test_magnet_late_availability_replaces_earlier(late: Message, expected: list[int]) -> None:
    """Before the piece count, the latest availability message and the haves after it
    count; a have or a donthave before it is forgotten."""
    conn = make(num_pieces=None)
    conn.send(ExtendedHandshake(m=IDS))
    deliver(conn, Bitfield(b"\xc0"), Have(3))
    deliver(conn, HaveAll(), Extended(IDS["lt_donthave"], DontHave(5).encode_payload()))
    deliver(conn, late)
    assert conn.peer_has_all == (len(expected) == 6)
    conn.num_pieces = 6
    assert list(conn.peer_pieces) == expected


def test_magnet_absurd_have_is_refused_at_once() -> None:
    conn = make(num_pieces=None, limits=ConnectionLimits(max_message_length=BLOCK + 13))
    with pytest.raises(RemoteProtocolError, match="no torrent"):
        deliver(conn, Have((BLOCK + 12) * 8))


def test_magnet_allowed_fast_beyond_torrent_forgotten() -> None:
    conn = make(num_pieces=None)
    deliver(conn, AllowedFast(2), AllowedFast(50))
    conn.num_pieces = 10
    assert conn.allowed_fast_from_peer == {2}


def test_num_pieces_bad_values() -> None:
    conn = make(num_pieces=None)
    with pytest.raises(TypeError):
        conn.num_pieces = 1.5  # type: ignore[assignment]
    with pytest.raises(ValueError, match="uint32"):
        conn.num_pieces = -1


def test_allowed_fast_from_peer_is_bounded() -> None:
    conn = make(limits=ConnectionLimits(max_allowed_fast=2))
    deliver(conn, AllowedFast(1), AllowedFast(2), AllowedFast(3), AllowedFast(1))
    assert conn.allowed_fast_from_peer == {1, 2}
    assert conn.ignored_allowed_fast == 1


def test_allowed_fast_set_for_the_peer() -> None:
    conn = make(num_pieces=1313, address="80.4.4.200")
    ours = conn.allowed_fast_set(7)
    assert ours == allowed_fast_set("80.4.4.200", INFO_HASH.swarm_ids()[0], 1313, 7)
    deliver(conn, Have(ours[0]))
    assert conn.allowed_fast_set(7) == ours[1:]
    assert make(num_pieces=None).allowed_fast_set() == []


def test_swarm_id_must_match() -> None:
    with pytest.raises(ValueError, match="swarm"):
        PeerConnection(
            num_pieces=1,
            info_hash=INFO_HASH,
            our_extensions=ALL,
            their_extensions=ALL,
            swarm_id=bytes(20),
        )


# ---------------------------------------------------------------------------- extensions


def handshaken_pair() -> tuple[PeerConnection, PeerConnection]:
    a, b = make(), make()
    transfer(a, b, ExtendedHandshake(m=IDS, reqq=250))
    transfer(b, a, ExtendedHandshake(m={"ut_metadata": 2, "lt_donthave": 9}))
    return a, b


def test_extension_ids_both_ways() -> None:
    a, b = handshaken_pair()
    assert a.our_extension_ids == IDS
    assert a.their_extension_ids == {"ut_metadata": 2, "lt_donthave": 9}
    assert b.their_extension_ids == IDS
    assert b.peer_reqq == 250
    data = a.send(MetadataRequest(0))
    assert data[5] == 2  # framed under the peer's id
    b.receive_data(data)
    assert drain(b) == [MetadataRequest(0)]
    with pytest.raises(LocalProtocolError, match="does not support upload_only"):
        a.send_parts(UploadOnly(True))  # b never offered upload_only


def test_later_handshake_updates_and_removes_ids() -> None:
    a, b = handshaken_pair()
    transfer(b, a, ExtendedHandshake(m={"ut_metadata": 0, "ut_pex": 5}))
    assert a.their_extension_ids == {"lt_donthave": 9, "ut_pex": 5}
    with pytest.raises(LocalProtocolError):
        a.send(MetadataRequest(0))


def test_upload_only_from_handshake_and_message() -> None:
    a, b = handshaken_pair()
    assert not b.peer_upload_only
    transfer(b, a, ExtendedHandshake(m={"upload_only": 4}, upload_only=True))
    assert a.peer_upload_only
    transfer(a, b, UploadOnly(True))
    assert a.upload_only
    assert is_set(b.peer_upload_only)
    transfer(a, b, UploadOnly(False))
    assert not b.peer_upload_only


def test_donthave_both_ways() -> None:
    a, b = handshaken_pair()
    transfer(a, b, HaveAll())
    transfer(a, b, DontHave(3))
    assert 3 not in b.peer_pieces
    assert 3 not in a.our_pieces
    with pytest.raises(LocalProtocolError):
        a.send(DontHave(8))


def test_message_under_an_id_we_assigned_without_codec() -> None:
    conn = make()
    conn.send(ExtendedHandshake(m={"lt_tex": 11}))
    assert deliver(conn, Extended(11, b"x")) == [UnknownExtended(11, "lt_tex", b"x")]


def test_malformed_extension_payload_is_remote_error() -> None:
    conn = make()
    conn.send(ExtendedHandshake(m=IDS))
    with pytest.raises(RemoteProtocolError, match="ut_pex"):
        deliver(conn, Extended(IDS["ut_pex"], b"x"))


def test_wrong_size_donthave_is_ignored_as_libtorrent_does() -> None:
    conn = make()
    conn.send(ExtendedHandshake(m=IDS))
    event = UnknownExtended(IDS["lt_donthave"], "lt_donthave", b"\x00")
    assert deliver(conn, Extended(IDS["lt_donthave"], b"\x00"), Have(1)) == [event, Have(1)]


def test_donthave_out_of_range() -> None:
    conn = make()
    conn.send(ExtendedHandshake(m=IDS))
    with pytest.raises(RemoteProtocolError):
        deliver(conn, Extended(IDS["lt_donthave"], DontHave(8).encode_payload()))


def test_raw_extended_to_an_assigned_id() -> None:
    a, _ = handshaken_pair()
    assert a.send(Extended(9, b"\x00\x00\x00\x01"))[5] == 9


def test_send_type_errors() -> None:
    with pytest.raises(TypeError):
        make().send("choke")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        PeerConnection(
            num_pieces=1,
            info_hash=INFO_HASH,
            our_extensions=1,  # type: ignore[arg-type]
            their_extensions=ALL,
        )


# ---------------------------------------------------------------------------- BEP 52, port, eof


def test_hash_request_round_trip() -> None:
    a, b = make(), make()
    request = HashRequest(ROOT, 0, 0, 2, 0)
    assert transfer(a, b, request) == [request]
    with pytest.raises(LocalProtocolError):
        a.send(request)
    reply = Hashes(ROOT, 0, 0, 2, 0, bytes(64))
    assert transfer(b, a, reply) == [reply]
    assert not a.our_hash_requests
    assert not b.peer_hash_requests
    transfer(a, b, request)
    assert transfer(b, a, HashReject(ROOT, 0, 0, 2, 0)) == [HashReject(ROOT, 0, 0, 2, 0)]


def test_peer_hash_requests_are_bounded() -> None:
    conn = make(limits=ConnectionLimits(max_peer_hash_requests=1))
    assert len(deliver(conn, HashRequest(ROOT, 0, 0, 2, 0), HashRequest(ROOT, 0, 0, 2, 0))) == 1
    assert deliver(conn, HashRequest(ROOT, 0, 2, 2, 0)) == []
    assert conn.data_to_send() == HashReject(ROOT, 0, 2, 2, 0).encode()


def test_eof_mid_message() -> None:
    conn = make()
    conn.receive_data(Have(1).encode()[:3])
    assert conn.next_event() is NEED_DATA
    with pytest.raises(RemoteProtocolError):
        conn.receive_eof()
    with pytest.raises(RemoteProtocolError):
        conn.receive_eof()
    clean = make()
    clean.receive_eof()


def test_limits_validation() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ConnectionLimits(max_peer_requests=0)
    with pytest.raises(TypeError):
        ConnectionLimits(max_peer_requests=True)
    with pytest.raises(ValueError, match="fit"):
        ConnectionLimits(max_message_length=1000)


def test_limits_max_peer_requests_fits_reqq() -> None:
    """``max_peer_requests`` is the ``reqq`` of our extended handshake: it must fit its u32."""
    with pytest.raises(ValueError, match="4294967295"):
        ConnectionLimits(max_peer_requests=2**32)
    limits = ConnectionLimits(max_peer_requests=2**32 - 1)
    assert ExtendedHandshake(reqq=limits.max_peer_requests).reqq == 2**32 - 1


# ---------------------------------------------------------------------------- a realistic session


def test_back_to_back_session() -> None:
    """A seeder and a leecher with every extension, from handshakes to goodbye."""
    seeder = make(num_pieces=4, address="10.0.0.2")  # sees the leecher at 10.0.0.2
    leecher = make(num_pieces=4, address="10.0.0.1")
    piece_length = 2 * BLOCK
    data = [bytes([i]) * piece_length for i in range(4)]

    transfer(leecher, seeder, ExtendedHandshake(m=IDS, reqq=500, v="bip"))
    transfer(seeder, leecher, ExtendedHandshake(m=IDS, reqq=500, upload_only=True))
    assert leecher.peer_upload_only
    transfer(seeder, leecher, HaveAll())
    transfer(leecher, seeder, HaveNone())
    transfer(leecher, seeder, Port(6881))
    for index in seeder.allowed_fast_set(2):
        transfer(seeder, leecher, AllowedFast(index))
    fast_piece = min(leecher.allowed_fast_from_peer)
    transfer(leecher, seeder, Interested())
    assert is_set(seeder.peer_interested)

    # Choked: only the allowed-fast piece may be fetched.
    for begin in (0, BLOCK):
        transfer(leecher, seeder, Request(fast_piece, begin, BLOCK))
    for index, begin, length in sorted(seeder.peer_requests):
        [event] = transfer(
            seeder, leecher, Piece(index, begin, data[index][begin : begin + length])
        )
        assert isinstance(event, Piece)
    transfer(leecher, seeder, Have(fast_piece))
    assert fast_piece in seeder.peer_pieces

    # Unchoked: fetch the rest, pipelined.
    transfer(seeder, leecher, Unchoke())
    wanted = [i for i in range(4) if i not in leecher.our_pieces]
    for index in wanted:
        for begin in (0, BLOCK):
            transfer(leecher, seeder, Request(index, begin, BLOCK))
    # Choke mid-way: the pending requests are rejected (fast) and re-requested later.
    first = sorted(seeder.peer_requests)[0]
    transfer(
        seeder, leecher, Piece(first[0], first[1], data[first[0]][first[1] : first[1] + BLOCK])
    )
    pending = set(seeder.peer_requests)
    assert len(pending) == 2 * len(wanted) - 1
    choke_events = transfer(seeder, leecher, Choke())
    rejected = [e for e in choke_events if isinstance(e, RejectRequest)]
    # Requests for allowed-fast pieces survive the choke; the others are rejected.
    allowed = {key for key in pending if key[0] in seeder.allowed_fast_to_peer}
    assert {(e.index, e.begin, e.length) for e in rejected} == pending - allowed
    assert set(leecher.our_requests) == allowed == set(seeder.peer_requests)
    transfer(seeder, leecher, Unchoke())
    for event in rejected:
        transfer(leecher, seeder, Request(event.index, event.begin, event.length))
    received = {first[:2]}
    while seeder.peer_requests:
        index, begin, length = min(seeder.peer_requests)
        transfer(seeder, leecher, Piece(index, begin, data[index][begin : begin + length]))
        received.add((index, begin))
    assert len(received) == 2 * len(wanted)
    for index in wanted:
        transfer(leecher, seeder, Have(index))
    assert seeder.peer_pieces.is_seed
    transfer(leecher, seeder, NotInterested())
    transfer(leecher, seeder, KeepAlive())
    transfer(seeder, leecher, Choke())
    assert not seeder.peer_interested
    assert leecher.peer_choking
    assert seeder.unrequested_blocks == leecher.unrequested_blocks == 0


# ---------------------------------------------------------------------------- hypothesis

pieces = st.integers(min_value=0, max_value=7)
begins = st.sampled_from([0, BLOCK])


def _candidates(conn: PeerConnection, data: st.DataObject) -> object:
    """A message this side might want to send now (send() may still refuse it).

    Requests and pieces are weighted up whenever they are possible, so that
    sessions move blocks rather than only announce things.
    """
    draw = data.draw
    makers: list[Callable[[], object]] = [
        lambda: draw(st.sampled_from([Choke(), Unchoke(), Interested(), NotInterested()])),
        lambda: Have(draw(pieces)),
        lambda: draw(st.sampled_from([HaveAll(), HaveNone()])),
        lambda: Bitfield(bytes([draw(st.integers(0, 255))])),
        lambda: AllowedFast(draw(pieces)),
        lambda: Suggest(draw(pieces)),
        lambda: DontHave(draw(pieces)),
        lambda: UploadOnly(draw(st.booleans())),
        lambda: MetadataRequest(draw(st.integers(0, 3))),
        lambda: HashRequest(ROOT, 0, draw(st.integers(0, 3)) * 2, 2, 0),
        lambda: ExtendedHandshake(m=draw(st.sampled_from([IDS, {"ut_pex": 0}, {"ut_pex": 1}]))),
        lambda: Port(draw(st.integers(1, 65535))),
        KeepAlive,
    ]
    if conn.peer_pieces.count:
        index = draw(st.sampled_from(sorted(conn.peer_pieces)))
        makers += [lambda: Request(index, draw(begins), draw(st.sampled_from([BLOCK, 100])))] * 6
    if conn.peer_requests:
        key = draw(st.sampled_from(sorted(conn.peer_requests)))
        makers += [lambda: Piece(key[0], key[1], bytes(key[2]))] * 6
        makers.append(lambda: RejectRequest(*key))
    if conn.our_requests:
        ours = draw(st.sampled_from(sorted(conn.our_requests)))
        makers.append(lambda: Cancel(*ours))
    if conn.peer_hash_requests:
        root, layer, first, length, proofs = draw(st.sampled_from(sorted(conn.peer_hash_requests)))
        makers.append(lambda: Hashes(root, layer, first, length, proofs, bytes(64)))
        makers.append(lambda: HashReject(root, layer, first, length, proofs))
    return draw(st.sampled_from(makers))()


@settings(max_examples=150, deadline=None)
@given(data=st.data(), fast=st.booleans(), magnet=st.booleans())
def test_random_well_behaved_sessions_never_raise(
    data: st.DataObject, fast: bool, magnet: bool
) -> None:
    """Two sides send whatever send() allows; bytes arrive late and in pieces (races).

    With ``magnet``, the second side learns the piece count only at some point
    of the session, as after a metadata download.
    """
    ext = ALL if fast else PLAIN
    a, b = make(ext=ext), make(ext=ext, num_pieces=None if magnet else 8)
    sides = [a, b]
    wires = [bytearray(), bytearray()]  # wires[i]: bytes from side i not yet delivered
    for i, side in enumerate(sides):  # usually a session starts with availability
        opening = data.draw(st.sampled_from([HaveAll(), Bitfield(b"\xf0"), Bitfield(b"\x0f")]))
        with contextlib.suppress(LocalProtocolError):
            wires[i] += side.send(opening)
        if data.draw(st.booleans()):
            wires[i] += side.send(Unchoke())

    def deliver_some(i: int, count: int) -> None:
        chunk = bytes(wires[i][:count])
        del wires[i][:count]
        receiver = sides[1 - i]
        receiver.receive_data(chunk)
        drain(receiver)
        wires[1 - i] += receiver.data_to_send()

    for _ in range(data.draw(st.integers(min_value=1, max_value=80))):
        if b.num_pieces is None and data.draw(st.integers(0, 9)) == 0:
            b.num_pieces = 8
        i = data.draw(st.integers(0, 1))
        if data.draw(st.booleans()):
            message = _candidates(sides[i], data)
            with contextlib.suppress(LocalProtocolError):
                wires[i] += sides[i].send(message)  # type: ignore[arg-type]
        elif wires[i]:
            deliver_some(i, data.draw(st.integers(min_value=1, max_value=len(wires[i]))))
    for _ in range(10):  # flush both ways until quiet
        for i in (0, 1):
            if wires[i]:
                deliver_some(i, len(wires[i]))
    assert not wires[0]
    assert not wires[1]
    if b.num_pieces is None:
        b.num_pieces = 8
    # Once quiet, each side's view of the other matches what the other sent.
    for me, peer in ((a, b), (b, a)):
        assert me.peer_choking == peer.am_choking
        assert me.peer_interested == peer.am_interested
        assert me.peer_pieces == peer.our_pieces
        assert me.peer_upload_only == peer.upload_only
        assert dict(me.their_extension_ids) == dict(peer.our_extension_ids)
        if fast:
            # A request the peer still holds is one we wait for, or one we cancelled
            # whose answer is yet to come (the cancel crossed an answer to it).
            # Without fast this cannot hold: a request sent before we saw a choke
            # is forgotten by us (BEP 3) yet reaches the peer after its next unchoke.
            assert set(me.peer_requests) <= set(peer.our_requests) | set(peer.cancelled_requests)
        assert set(me.peer_hash_requests) <= set(peer.our_hash_requests)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), fast=st.booleans(), magnet=st.booleans())
def test_arbitrary_bytes_give_our_errors_only(data: bytes, fast: bool, magnet: bool) -> None:
    conn = make(ext=ALL if fast else PLAIN, num_pieces=None if magnet else 8)
    conn.send(ExtendedHandshake(m=IDS))
    conn.receive_data(data)
    try:
        drain(conn)
        if magnet:
            conn.num_pieces = 8
    except PeerError:
        pass


message_strategy = st.one_of(
    st.sampled_from(
        [Choke(), Unchoke(), Interested(), NotInterested(), KeepAlive(), HaveAll(), HaveNone()]
    ),
    st.builds(Have, st.integers(0, 12)),
    st.builds(Bitfield, st.binary(max_size=3)),
    st.builds(Request, st.integers(0, 9), begins, st.sampled_from([0, 1, BLOCK, BLOCK + 1])),
    st.builds(Cancel, st.integers(0, 9), begins, st.sampled_from([1, BLOCK])),
    st.builds(Piece, st.integers(0, 9), begins, st.binary(max_size=20)),
    st.builds(RejectRequest, st.integers(0, 9), begins, st.sampled_from([1, BLOCK])),
    st.builds(AllowedFast, st.integers(0, 12)),
    st.builds(Suggest, st.integers(0, 12)),
    st.builds(Port, st.integers(0, 65535)),
    st.builds(Extended, st.integers(0, 12), st.binary(max_size=30)),
    st.builds(
        HashRequest, st.just(ROOT), st.integers(0, 2), st.integers(0, 4), st.just(2), st.just(0)
    ),
)


@settings(max_examples=300, deadline=None)
@given(messages=st.lists(message_strategy, max_size=25), fast=st.booleans())
def test_arbitrary_messages_give_our_errors_only(messages: list[Message], fast: bool) -> None:
    conn = make(ext=ALL if fast else PLAIN)
    conn.send(ExtendedHandshake(m=IDS))
    conn.send(Bitfield(b"\xf0"))
    conn.send(Unchoke())
    for message in messages:
        try:
            deliver(conn, message)
        except RemoteProtocolError:
            with pytest.raises(RemoteProtocolError):
                conn.next_event()
            return
        assert len(conn.peer_requests) <= conn.limits.max_peer_requests


# ---------------------------------------------------------------------------- odds and ends


def test_explicit_swarm_id_and_our_handshake() -> None:
    hybrid = InfoHash(v1=bytes(20), v2=bytes(range(32)))
    conn = PeerConnection(
        num_pieces=100,
        info_hash=hybrid,
        our_extensions=ALL,
        their_extensions=ALL,
        peer_address=PeerAddress(IPv4Address("1.2.3.4"), 1),
        swarm_id=bytes(range(20)),
    )
    assert conn.allowed_fast_set() == allowed_fast_set("1.2.3.4", bytes(range(20)), 100)
    assert conn.our_handshake is None
    handshake = ExtendedHandshake(m=IDS)
    conn.send(handshake)
    assert conn.our_handshake == handshake


def test_magnet_donthave_beyond_the_torrent() -> None:
    conn = make(num_pieces=None)
    conn.send(ExtendedHandshake(m=IDS))
    deliver(conn, HaveAll(), Extended(IDS["lt_donthave"], DontHave(9).encode_payload()))
    with pytest.raises(RemoteProtocolError, match="dropped piece 9"):
        conn.num_pieces = 4


def test_unknown_metadata_message_type_is_surfaced() -> None:
    conn = make()
    conn.send(ExtendedHandshake(m=IDS))
    payload = b"d8:msg_typei9e5:piecei0ee"
    assert deliver(conn, Extended(IDS["ut_metadata"], payload)) == [
        UnknownExtended(IDS["ut_metadata"], "ut_metadata", payload)
    ]


def test_typed_extension_needs_the_extension_protocol() -> None:
    conn = make(ext=Extensions.FAST)
    with pytest.raises(LocalProtocolError, match="BEP 10"):
        conn.send(UploadOnly(True))


def test_bitfield_checked_even_if_the_decoder_let_it_through() -> None:
    # The decoder checks bitfields too once it knows the piece count; the
    # connection does not rely on it.
    conn = make(ext=PLAIN)
    with pytest.raises(RemoteProtocolError, match="bitfield"):
        conn._receive(Bitfield(b"\x00\x00"))


def test_piece_crossing_a_cancel_then_a_rerequest_of_another_length() -> None:
    seeder, leecher = unchoked_pair()
    transfer(leecher, seeder, Request(0, 0, BLOCK))
    piece = seeder.send(Piece(0, 0, bytes(BLOCK)))  # in flight
    seeder.receive_data(leecher.send(Cancel(0, 0, BLOCK)))
    leecher.send(Request(0, 0, 100))
    leecher.receive_data(piece)
    assert drain(leecher) == []  # the answer to the cancelled request, not an error
    assert leecher.our_requests == {(0, 0, 100)}
    assert leecher.unrequested_blocks == 1


def test_reject_after_cancel_and_rerequest_keeps_the_new_request() -> None:
    seeder, leecher = unchoked_pair()
    transfer(leecher, seeder, Request(0, 0, BLOCK))
    cancel = leecher.send(Cancel(0, 0, BLOCK))
    again = leecher.send(Request(0, 0, BLOCK))
    seeder.receive_data(cancel + again)
    assert drain(seeder) == [Cancel(0, 0, BLOCK), Request(0, 0, BLOCK)]
    leecher.receive_data(seeder.data_to_send())  # the reject for the cancelled one
    assert drain(leecher) == []
    assert leecher.our_requests == {(0, 0, BLOCK)} == seeder.peer_requests


def test_cancelled_requests_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_connection, "MAX_CANCELLED_REQUESTS", 2)
    _, leecher = unchoked_pair()
    for begin in range(3):
        leecher.send(Request(0, begin, 1))
        leecher.send(Cancel(0, begin, 1))
    assert leecher.cancelled_requests == {(0, 1, 1), (0, 2, 1)}


def test_choke_without_fast_forgets_cancelled_requests() -> None:
    _, leecher = unchoked_pair(PLAIN)
    leecher.send(Request(0, 0, 1))
    leecher.send(Cancel(0, 0, 1))
    deliver(leecher, Choke())
    assert not leecher.cancelled_requests


def test_our_extension_ids_must_be_distinct() -> None:
    conn = make()
    conn.send(ExtendedHandshake(m={"ut_pex": 1}))
    with pytest.raises(LocalProtocolError, match="distinct"):
        conn.send(ExtendedHandshake(m={"ut_metadata": 1}))
    with pytest.raises(LocalProtocolError, match="distinct"):
        conn.send(Extended(0, ExtendedHandshake(m={"lt_donthave": 1}).encode_payload()))
    assert conn.our_extension_ids == {"ut_pex": 1}
    conn.send(ExtendedHandshake(m={"ut_pex": 0, "ut_metadata": 1}))  # moving an id is fine
    assert conn.our_extension_ids == {"ut_metadata": 1}


def test_repr() -> None:
    conn = make()
    deliver(conn, HaveAll())
    assert repr(conn) == (
        "PeerConnection(10.0.0.2:6881, am_choking peer_choking fast, "
        "pieces=8/8, requests=0 out/0 in)"
    )
