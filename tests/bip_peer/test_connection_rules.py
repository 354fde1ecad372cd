"""PeerConnection rules, one (state, message) pair per case, both directions.

Receiving: ``E`` the message comes out of next_event, ``D`` it is handled and
dropped (no event), ``R`` RemoteProtocolError. Sending: ``O`` allowed, ``L``
LocalProtocolError (and nothing changes).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bip_handshake import Extensions
from bip_metainfo import InfoHash
from bip_peer._connection import PeerConnection, UnknownExtended
from bip_peer._errors import LocalProtocolError, RemoteProtocolError
from bip_peer._extended import ExtendedHandshake
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
    UnknownMessage,
)

NUM_PIECES = 7
BASE = Extensions.EXTENSION_PROTOCOL | Extensions.DHT
ROOT = bytes(range(32))


def make(*, fast: bool, num_pieces: int | None = NUM_PIECES) -> PeerConnection:
    ext = BASE | Extensions.FAST if fast else BASE
    return PeerConnection(
        num_pieces=num_pieces,
        info_hash=InfoHash(v1=bytes(20)),
        our_extensions=ext,
        their_extensions=ext,
    )


def receive(conn: PeerConnection, message: Message) -> list[object]:
    conn.receive_data(message.encode())
    events: list[object] = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def outcome(conn: PeerConnection, message: Message) -> str:
    try:
        events = receive(conn, message)
    except RemoteProtocolError:
        return "R"
    return "E" if events else "D"


# ----------------------------------------------------------------------------- receiving

RECEIVED: dict[str, Message] = {
    "keep alive": KeepAlive(),
    "choke": Choke(),
    "unchoke": Unchoke(),
    "interested": Interested(),
    "not interested": NotInterested(),
    "have": Have(1),
    "have out of range": Have(NUM_PIECES),
    "bitfield": Bitfield(b"\xfe"),
    "bitfield too long": Bitfield(b"\xff\x00"),
    "bitfield too short": Bitfield(b""),
    "bitfield spare bits": Bitfield(b"\xff"),
    "have all": HaveAll(),
    "have none": HaveNone(),
    "suggest": Suggest(1),
    "suggest out of range": Suggest(NUM_PIECES),
    "allowed fast": AllowedFast(1),
    "allowed fast out of range": AllowedFast(NUM_PIECES),
    "reject unrequested": RejectRequest(1, 0, 16384),
    "reject out of range": RejectRequest(NUM_PIECES, 0, 16384),
    "request while choked": Request(1, 0, 16384),
    "request too long": Request(1, 0, 16385),
    "request empty": Request(1, 0, 0),
    "request out of range": Request(NUM_PIECES, 0, 16384),
    "cancel unrequested": Cancel(1, 0, 16384),
    "cancel out of range": Cancel(NUM_PIECES, 0, 16384),
    "piece unrequested": Piece(1, 0, b"data"),
    "piece out of range": Piece(NUM_PIECES, 0, b"data"),
    "port": Port(6881),
    "extended handshake": Extended(0, ExtendedHandshake(m={"ut_pex": 1}).encode_payload()),
    "extended handshake malformed": Extended(0, b"not bencode"),
    "extended unknown id": Extended(42, b"x"),
    "unknown message": UnknownMessage(99, b"x"),
    "hash request": HashRequest(ROOT, 0, 0, 2, 0),
    "hashes unrequested": Hashes(ROOT, 0, 0, 2, 0, bytes(64)),
    "hash reject unrequested": HashReject(ROOT, 0, 0, 2, 0),
}

# message: (no fast + fresh, no fast + after a have, fast + fresh, fast + after a have)
RECEIVE_TABLE: dict[str, str] = {
    "keep alive": "EEEE",
    "choke": "EEEE",
    "unchoke": "EEEE",
    "interested": "EEEE",
    "not interested": "EEEE",
    "have": "EEEE",
    "have out of range": "RRRR",
    "bitfield": "EEEE",  # a late one replaces the earlier, as libtorrent takes it
    "bitfield too long": "RRRR",
    "bitfield too short": "RRRR",
    "bitfield spare bits": "RRRR",
    "have all": "RREE",
    "have none": "RREE",
    "suggest": "RREE",
    "suggest out of range": "RRDD",  # ignored, as libtorrent does
    "allowed fast": "RREE",
    "allowed fast out of range": "RRDD",  # ignored, as libtorrent does
    "reject unrequested": "RRDD",
    "reject out of range": "RRDD",  # ignored, as libtorrent does
    "request while choked": "DDDD",
    "request too long": "RRRR",
    "request empty": "RRRR",
    "request out of range": "RRRR",
    "cancel unrequested": "DDDD",
    "cancel out of range": "DDDD",  # ignored, as libtorrent does
    "piece unrequested": "DDDD",
    "piece out of range": "RRRR",
    "port": "EEEE",
    "extended handshake": "EEEE",
    "extended handshake malformed": "RRRR",
    "extended unknown id": "EEEE",
    "unknown message": "EEEE",
    "hash request": "EEEE",
    "hashes unrequested": "DDDD",
    "hash reject unrequested": "DDDD",
}
RECEIVE_STATES = [(False, False), (False, True), (True, False), (True, True)]


def test_receive_table_covers_every_message() -> None:
    assert set(RECEIVE_TABLE) == set(RECEIVED)
    assert RECEIVE_TABLE["bitfield"] == "EEEE"


@pytest.mark.parametrize("name", sorted(RECEIVED))
@pytest.mark.parametrize(
    ("fast", "talked"), RECEIVE_STATES, ids=["plain", "plain+have", "fast", "fast+have"]
)
def test_receive(name: str, fast: bool, talked: bool) -> None:
    conn = make(fast=fast)
    conn.send(HaveAll() if fast else Bitfield(b"\xfe"))
    if talked:
        receive(conn, Have(0))
    expected = RECEIVE_TABLE[name][RECEIVE_STATES.index((fast, talked))]
    assert outcome(conn, RECEIVED[name]) == expected
    if expected == "R":
        # The connection is dead: every later call raises again.
        with pytest.raises(RemoteProtocolError):
            conn.next_event()
        with pytest.raises(RemoteProtocolError):
            conn.receive_data(b"")


@pytest.mark.parametrize("fast", [False, True])
def test_refused_request_owes_a_reject_only_with_fast(fast: bool) -> None:
    conn = make(fast=fast)
    conn.send(HaveAll() if fast else Bitfield(b"\xfe"))
    assert outcome(conn, Request(1, 0, 16384)) == "D"
    expected = RejectRequest(1, 0, 16384).encode() if fast else b""
    assert conn.data_to_send() == expected
    assert conn.data_to_send() == b""
    assert conn.refused_requests == 1


@pytest.mark.parametrize("their", [Extensions.DHT, Extensions.NONE])
def test_receive_port_with_or_without_their_dht_bit(their: Extensions) -> None:
    """libtorrent takes a port message as DHT support even without the bit: so do we."""
    conn = PeerConnection(
        num_pieces=1,
        info_hash=InfoHash(v1=bytes(20)),
        our_extensions=Extensions.NONE,
        their_extensions=their,
    )
    assert outcome(conn, Port(6881)) == "E"


def test_extended_needs_the_extension_bit() -> None:
    conn = PeerConnection(
        num_pieces=1,
        info_hash=InfoHash(v1=bytes(20)),
        our_extensions=Extensions.EXTENSION_PROTOCOL,
        their_extensions=Extensions.NONE,
    )
    assert outcome(conn, Extended(0, b"de")) == "R"


def test_unknown_extended_event() -> None:
    conn = make(fast=True)
    assert receive(conn, Extended(42, b"x")) == [UnknownExtended(42, None, b"x")]


# ----------------------------------------------------------------------------- sending


def _send_outcome(conn: PeerConnection, message: object) -> str:
    try:
        conn.send(message)  # type: ignore[arg-type]
    except LocalProtocolError:
        return "L"
    return "O"


SENT: dict[str, Callable[[], object]] = {
    "keep alive": KeepAlive,
    "choke": Choke,
    "unchoke": Unchoke,
    "interested": Interested,
    "not interested": NotInterested,
    "have": lambda: Have(1),
    "have out of range": lambda: Have(NUM_PIECES),
    "bitfield": lambda: Bitfield(b"\x0e"),
    "bitfield wrong length": lambda: Bitfield(b"\x0e\x00"),
    "bitfield spare bits": lambda: Bitfield(b"\x01"),
    "have all": HaveAll,
    "have none": HaveNone,
    "suggest": lambda: Suggest(1),
    "suggest out of range": lambda: Suggest(NUM_PIECES),
    "allowed fast": lambda: AllowedFast(1),
    "allowed fast out of range": lambda: AllowedFast(NUM_PIECES),
    "reject unrequested": lambda: RejectRequest(1, 0, 16384),
    "request while choked": lambda: Request(1, 0, 16384),
    "cancel unrequested": lambda: Cancel(1, 0, 16384),
    "piece unrequested": lambda: Piece(1, 0, b"x"),
    "port": lambda: Port(6881),
    "extended handshake": lambda: ExtendedHandshake(m={"ut_pex": 1}),
    "extended raw unassigned": lambda: Extended(9, b"x"),
    "extended raw handshake": lambda: Extended(0, ExtendedHandshake(m={}).encode_payload()),
    "extended raw bad handshake": lambda: Extended(0, b"garbage"),
    "unknown message": lambda: UnknownMessage(99, b""),
    "hash request": lambda: HashRequest(ROOT, 0, 0, 2, 0),
    "hashes unrequested": lambda: Hashes(ROOT, 0, 0, 2, 0, bytes(64)),
    "hash reject unrequested": lambda: HashReject(ROOT, 0, 0, 2, 0),
}
# message: (no fast + fresh, no fast + after our have, fast + fresh, fast + after our have)
SEND_TABLE: dict[str, str] = {
    "keep alive": "OOOO",
    "choke": "OOOO",
    "unchoke": "OOOO",
    "interested": "OOOO",
    "not interested": "OOOO",
    "have": "OOOO",
    "have out of range": "LLLL",
    "bitfield": "OLOL",
    "bitfield wrong length": "LLLL",
    "bitfield spare bits": "LLLL",
    "have all": "LLOL",
    "have none": "LLOL",
    "suggest": "LLOO",
    "suggest out of range": "LLLL",
    "allowed fast": "LLOO",
    "allowed fast out of range": "LLLL",
    "reject unrequested": "LLLL",
    "request while choked": "LLLL",
    "cancel unrequested": "LLLL",
    "piece unrequested": "LLLL",
    "port": "OOOO",
    "extended handshake": "OOOO",
    "extended raw unassigned": "LLLL",
    "extended raw handshake": "OOOO",
    "extended raw bad handshake": "LLLL",
    "unknown message": "OOOO",
    "hash request": "OOOO",
    "hashes unrequested": "LLLL",
    "hash reject unrequested": "LLLL",
}


def test_send_table_covers_every_message() -> None:
    assert set(SEND_TABLE) == set(SENT)


@pytest.mark.parametrize("name", sorted(SENT))
@pytest.mark.parametrize(
    ("fast", "talked"), RECEIVE_STATES, ids=["plain", "plain+have", "fast", "fast+have"]
)
def test_send(name: str, fast: bool, talked: bool) -> None:
    conn = make(fast=fast)
    receive(conn, HaveAll() if fast else Bitfield(b"\xfe"))
    if talked:
        conn.send(Have(0))
    before = _snapshot(conn)
    expected = SEND_TABLE[name][RECEIVE_STATES.index((fast, talked))]
    assert _send_outcome(conn, SENT[name]()) == expected
    if expected == "L":
        assert _snapshot(conn) == before  # refused before any state changed


def _snapshot(conn: PeerConnection) -> tuple[object, ...]:
    return (
        conn.am_choking,
        conn.am_interested,
        conn.our_pieces.to_bitfield(),
        set(conn.our_requests),
        set(conn.peer_requests),
        set(conn.allowed_fast_to_peer),
        dict(conn.our_extension_ids),
        set(conn.our_hash_requests),
    )


def test_send_port_needs_both_dht_bits() -> None:
    for ours, theirs in [(Extensions.DHT, Extensions.NONE), (Extensions.NONE, Extensions.DHT)]:
        conn = PeerConnection(
            num_pieces=1,
            info_hash=InfoHash(v1=bytes(20)),
            our_extensions=ours,
            their_extensions=theirs,
        )
        with pytest.raises(LocalProtocolError):
            conn.send(Port(6881))


def test_send_needs_the_extension_protocol() -> None:
    conn = PeerConnection(
        num_pieces=1,
        info_hash=InfoHash(v1=bytes(20)),
        our_extensions=Extensions.EXTENSION_PROTOCOL,
        their_extensions=Extensions.NONE,
    )
    with pytest.raises(LocalProtocolError):
        conn.send(ExtendedHandshake(m={}))
    with pytest.raises(LocalProtocolError):
        conn.send(Extended(0, b"de"))


@pytest.mark.parametrize(
    "message",
    [Have(0), Bitfield(b""), HaveAll(), Request(0, 0, 1), AllowedFast(0), Suggest(0)],
    ids=lambda m: type(m).__name__,
)
def test_send_before_num_pieces_is_known(message: Message) -> None:
    conn = make(fast=True, num_pieces=None)
    with pytest.raises(LocalProtocolError, match="number of pieces"):
        conn.send(message)
    conn.send(HaveNone())  # the one availability message that needs no piece count


# ------------------------------------------------------------------ requests by choke state

# A request for a piece we announced, by (fast, we choke it, the piece is allowed fast):
# E served, D refused silently, J refused with a reject owed.
REQUEST_TABLE: dict[tuple[bool, bool, bool], str] = {
    (False, True, False): "D",
    (False, False, False): "E",
    (True, True, False): "J",
    (True, True, True): "E",
    (True, False, False): "E",
    (True, False, True): "E",
}


@pytest.mark.parametrize(("fast", "choking", "allowed"), sorted(REQUEST_TABLE))
def test_request_by_choke_state(fast: bool, choking: bool, allowed: bool) -> None:
    conn = make(fast=fast)
    conn.send(HaveAll() if fast else Bitfield(b"\xfe"))
    if allowed:
        conn.send(AllowedFast(1))
    if not choking:
        conn.send(Unchoke())
    events = receive(conn, Request(1, 0, 16384))
    owed = conn.data_to_send()
    got = "E" if events else ("J" if owed else "D")
    assert got == REQUEST_TABLE[(fast, choking, allowed)]
    if got == "J":
        assert owed == RejectRequest(1, 0, 16384).encode()


# Our own request, by (fast, the peer chokes us, the peer allowed the piece fast): O or L.
OUR_REQUEST_TABLE: dict[tuple[bool, bool, bool], str] = {
    (False, True, False): "L",
    (False, False, False): "O",
    (True, True, False): "L",
    (True, True, True): "O",
    (True, False, False): "O",
    (True, False, True): "O",
}


@pytest.mark.parametrize(("fast", "choked", "allowed"), sorted(OUR_REQUEST_TABLE))
def test_our_request_by_choke_state(fast: bool, choked: bool, allowed: bool) -> None:
    conn = make(fast=fast)
    receive(conn, HaveAll() if fast else Bitfield(b"\xfe"))
    if allowed:
        receive(conn, AllowedFast(1))
    if not choked:
        receive(conn, Unchoke())
    assert _send_outcome(conn, Request(1, 0, 16384)) == OUR_REQUEST_TABLE[(fast, choked, allowed)]


# ------------------------------------------------------------------ pieces unknown (magnet)

# Received before the piece count is known: (no fast, fast).
MAGNET_TABLE: dict[str, str] = {
    "have": "EE",
    "have out of range": "EE",  # checked once the count is known
    "bitfield": "EE",
    "bitfield too long": "EE",  # kept, checked later
    "have all": "RE",
    "have none": "RE",
    "suggest": "RE",
    "allowed fast": "RE",
    "reject unrequested": "RD",
    "request while choked": "DD",
    "cancel unrequested": "DD",
    "piece unrequested": "DD",
    "keep alive": "EE",
    "unchoke": "EE",
}


@pytest.mark.parametrize("name", sorted(MAGNET_TABLE))
@pytest.mark.parametrize("fast", [False, True], ids=["plain", "fast"])
def test_receive_before_num_pieces(name: str, fast: bool) -> None:
    conn = make(fast=fast, num_pieces=None)
    assert outcome(conn, RECEIVED[name]) == MAGNET_TABLE[name][int(fast)]


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("have", True),
        ("have out of range", False),
        ("bitfield", True),
        ("bitfield too long", False),
        ("bitfield spare bits", False),
    ],
)
def test_magnet_availability_checked_when_num_pieces_is_set(name: str, valid: bool) -> None:
    conn = make(fast=True, num_pieces=None)
    receive(conn, RECEIVED[name])
    if valid:
        conn.num_pieces = NUM_PIECES
        assert conn.peer_pieces.num_pieces == NUM_PIECES
    else:
        with pytest.raises(RemoteProtocolError):
            conn.num_pieces = NUM_PIECES


def test_messages_past_the_end_that_ask_nothing_are_counted_and_ignored() -> None:
    """Suggest, allowed fast, cancel and reject for a piece that does not exist."""
    conn = PeerConnection(
        num_pieces=NUM_PIECES,
        info_hash=InfoHash(v1=bytes(20)),
        our_extensions=Extensions.FAST,
        their_extensions=Extensions.FAST,
    )
    for message in (
        Suggest(NUM_PIECES),
        AllowedFast(NUM_PIECES + 7),
        Cancel(NUM_PIECES, 0, 16384),
        RejectRequest(NUM_PIECES, 0, 16384),
    ):
        assert receive(conn, message) == []
    assert conn.ignored_out_of_range == 4
    assert conn.allowed_fast_from_peer == set()
    assert conn.data_to_send() == b""  # a cancel for nothing owes no reject
