"""bip_select's glue to bip_peer: messages to inputs, actions to messages, joins, bytes left."""

from __future__ import annotations

import doctest
import random

import pytest
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_metainfo import InfoHash, PieceSet
from bip_peer import (
    NEED_DATA,
    AllowedFast,
    Bitfield,
    Cancel,
    Choke,
    DontHave,
    ExtendedHandshake,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    KeepAlive,
    Message,
    NotInterested,
    Peer,
    PeerConnection,
    Piece,
    RejectRequest,
    Request,
    Unchoke,
    UploadOnly,
)
from bip_select import _wire
from bip_select._actions import (
    Action,
    DropPeer,
    SendAllowedFast,
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
from bip_select._brain import SwarmBrain
from bip_select._errors import LocalProtocolError
from bip_select._geometry import Block, TorrentGeometry
from bip_select._inputs import AllowedFast as AllowedFastInput
from bip_select._inputs import (
    BlockReceived,
    BlockRejected,
    PeerBitfield,
    PeerChokedUs,
    PeerDontHave,
    PeerHave,
    PeerHaveAll,
    PeerHaveNone,
    PeerInterested,
    PeerJoined,
    PeerNotInterested,
    PeerUnchokedUs,
    PeerUploadOnly,
)
from bip_select._wire import block_received, handle_message, input_for, join_inputs, message_for

TORRENT = InfoHash(v1=bytes(range(20)))
BOTH = Extensions.FAST | Extensions.EXTENSION_PROTOCOL
IDS = {"upload_only": 3, "lt_donthave": 7}
N = 16


def connection(extensions: Extensions = BOTH) -> PeerConnection:
    return PeerConnection(
        num_pieces=N, info_hash=TORRENT, our_extensions=extensions, their_extensions=extensions
    )


def make_peer(extensions: Extensions = BOTH) -> tuple[Peer, PeerConnection]:
    """Our handle on a peer, and the peer's own end of the protocol (to send us messages)."""
    ours, _ = trio.testing.memory_stream_pair()
    handshake = CompletedHandshake(
        stream=ours,
        trailing=b"",
        peer_id=PeerId.generate(),
        extensions=extensions,
        our_extensions=extensions,
        info_hash=TORRENT,
        swarm_id=TORRENT.swarm_ids()[0],
        address=PeerAddress.parse("127.0.0.1:6881"),
        direction="outbound",
    )
    return Peer(handshake, connection(extensions)), connection(extensions)


def receive(peer: Peer, remote: PeerConnection, message: object) -> object:
    """``remote`` sends ``message``; our connection reads it: the message as received."""
    peer.connection.receive_data(remote.send(message))  # type: ignore[arg-type]
    received = peer.connection.next_event()
    assert received is not NEED_DATA
    assert peer.connection.next_event() is NEED_DATA
    return received


def test_doctests() -> None:
    assert doctest.testmod(_wire).failed == 0


def test_every_state_message_becomes_its_input() -> None:
    peer, remote = make_peer()
    receive(peer, remote, ExtendedHandshake(m=IDS))
    remote.receive_data(peer.connection.send(ExtendedHandshake(m=IDS)))
    while remote.next_event() is not NEED_DATA:
        pass
    expected: list[tuple[object, object]] = [
        (Have(3), PeerHave(peer, 3)),
        (Unchoke(), PeerUnchokedUs(peer)),
        (Choke(), PeerChokedUs(peer)),
        (Interested(), PeerInterested(peer)),
        (NotInterested(), PeerNotInterested(peer)),
        (AllowedFast(5), AllowedFastInput(peer, 5)),
        (DontHave(3), PeerDontHave(peer, 3)),
        (UploadOnly(True), PeerUploadOnly(peer, True)),
        (UploadOnly(False), PeerUploadOnly(peer, False)),
    ]
    for message, event in expected:
        assert input_for(peer, receive(peer, remote, message)) == event


def test_availability_messages() -> None:
    peer, remote = make_peer()
    assert input_for(peer, receive(peer, remote, HaveAll())) == PeerHaveAll(peer)
    peer, remote = make_peer()
    assert input_for(peer, receive(peer, remote, HaveNone())) == PeerHaveNone(peer)
    peer, remote = make_peer()
    bits = PieceSet(N, {0, 9, 15}).to_bitfield()
    event = input_for(peer, receive(peer, remote, Bitfield(bits)))
    # The connection's checked set, not a second parse of the bits.
    assert event == PeerBitfield(peer, peer.connection.peer_pieces)
    assert isinstance(event, PeerBitfield)
    assert set(event.pieces) == {0, 9, 15}


def test_a_reject_becomes_a_block_rejected() -> None:
    peer, _ = make_peer()
    rejected = RejectRequest(1, 16384, 100)
    assert input_for(peer, rejected) == BlockRejected(peer, Block(1, 16384, 100))


@pytest.mark.parametrize(
    "message",
    [
        Piece(0, 0, b"x"),
        Request(0, 0, 16384),
        Cancel(0, 0, 16384),
        KeepAlive(),
        ExtendedHandshake(reqq=10),
        "not a message",
        None,
    ],
)
def test_what_is_not_an_input(message: object) -> None:
    peer, _ = make_peer()
    assert input_for(peer, message) is None


def test_a_block_received() -> None:
    peer, _ = make_peer()
    block = memoryview(bytes(300))
    assert block_received(peer, Piece(4, 32768, block)) == BlockReceived(peer, Block(4, 32768, 300))


ACTIONS: list[tuple[Action, Message]] = [
    (SendRequest(1, Block(2, 16384, 16384)), Request(2, 16384, 16384)),
    (SendCancel(1, Block(2, 16384, 100)), Cancel(2, 16384, 100)),
    (SendHave(1, 5), Have(5)),
    (SendAllowedFast(1, 9), AllowedFast(9)),
    (SendInterested(1), Interested()),
    (SendNotInterested(1), NotInterested()),
    (SendChoke(1), Choke()),
    (SendUnchoke(1), Unchoke()),
    (SendHaveAll(1), HaveAll()),
    (SendHaveNone(1), HaveNone()),
]


@pytest.mark.parametrize(("action", "message"), ACTIONS)
def test_every_action_becomes_its_message(action: Action, message: Message) -> None:
    assert message_for(action, N) == message
    assert action.peer == 1  # declared on the base class: no cast needed


@given(st.frozensets(st.integers(0, N - 1)))
def test_a_bitfield_round_trips(pieces: frozenset[int]) -> None:
    message = message_for(SendBitfield(1, pieces), N)
    assert isinstance(message, Bitfield)
    assert set(PieceSet.from_bitfield(message.bits, N)) == pieces


@given(st.integers(0, N - 1), st.integers(0, 3), st.sampled_from([SendRequest, SendCancel]))
def test_requests_and_cancels_round_trip(
    piece: int, index: int, kind: type[SendRequest] | type[SendCancel]
) -> None:
    block = TorrentGeometry(N, 65536, N * 65536 - 1000).blocks(piece)[index]
    message = message_for(kind(1, block), N)
    assert isinstance(message, Request | Cancel)
    assert Block(message.index, message.begin, message.length) == block


@given(st.sampled_from([Have, DontHave, AllowedFast]), st.integers(0, N - 1))
def test_piece_messages_round_trip(kind: type[Have | DontHave | AllowedFast], piece: int) -> None:
    """What a peer says about a piece reaches the brain as that piece, and back."""
    peer, _ = make_peer()
    event = input_for(peer, kind(piece))
    assert event is not None
    assert getattr(event, "piece") == piece  # noqa: B009 - the inputs differ in type only
    assert event.peer is peer  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "action",
    [
        DropPeer(1, "snubbed"),
        SendHave(1, N),
        SendHave(1, -1),
        SendAllowedFast(1, N),
        SendBitfield(1, frozenset({N})),
        Action(),
        "not an action",
    ],
)
def test_what_cannot_be_sent_raises_our_error(action: Action) -> None:
    with pytest.raises(LocalProtocolError):
        message_for(action, N)


def test_a_bitfield_needs_a_piece_count() -> None:
    with pytest.raises(LocalProtocolError):
        message_for(SendBitfield(1, frozenset()), -1)


def brain() -> SwarmBrain:
    return SwarmBrain(TorrentGeometry(N, 16384), rng=random.Random(1))


def test_a_fresh_peer_joins_with_nothing_but_its_handshakes() -> None:
    peer, _ = make_peer()
    assert join_inputs(peer) == [PeerJoined(peer, reqq=None, fast=True, upload_only=False)]
    peer, _ = make_peer(Extensions(0))
    assert join_inputs(peer) == [PeerJoined(peer, fast=False)]


def test_a_late_join_catches_up_with_the_connection() -> None:
    peer, remote = make_peer()
    receive(peer, remote, ExtendedHandshake(m=IDS, reqq=40, upload_only=True))
    receive(peer, remote, Bitfield(PieceSet(N, {1, 2}).to_bitfield()))
    receive(peer, remote, AllowedFast(7))
    receive(peer, remote, AllowedFast(2))
    receive(peer, remote, Unchoke())
    receive(peer, remote, Interested())
    assert join_inputs(peer) == [
        PeerJoined(peer, reqq=40, fast=True, upload_only=True),
        PeerBitfield(peer, peer.connection.peer_pieces),
        AllowedFastInput(peer, 2),
        AllowedFastInput(peer, 7),
        PeerUnchokedUs(peer),
        PeerInterested(peer),
    ]
    seed, remote = make_peer()
    receive(seed, remote, HaveAll())
    assert join_inputs(seed)[1:] == [PeerHaveAll(seed)]


def test_a_joined_peer_is_asked_for_blocks() -> None:
    """The whole loop: join, messages in, requests out as messages the connection takes."""
    peer, remote = make_peer()
    receive(peer, remote, HaveAll())
    receive(peer, remote, Unchoke())
    b = brain()
    actions = [a for event in join_inputs(peer) for a in b.handle(event, 0.0)]
    requests = [a for a in actions if isinstance(a, SendRequest)]
    assert requests
    for action in actions:
        assert action.peer is peer
        # The connection agrees with the brain: it takes every message, and the peer too.
        remote.receive_data(peer.connection.send(message_for(action, N)))
    while remote.next_event() is not NEED_DATA:
        pass
    first = requests[0].block
    data = bytes(first.length)
    peer.connection.receive_data(remote.send(Piece(first.piece, first.begin, data)))
    piece = peer.connection.next_event()
    assert isinstance(piece, Piece)
    assert handle_message(b, peer, piece, 1.0) == []  # a block waits for storage
    before = b.picker.requests.num_outstanding(peer)
    more = b.handle(block_received(peer, piece), 1.0)
    refills = sum(1 for a in more if isinstance(a, SendRequest))
    assert b.picker.requests.num_outstanding(peer) == before - 1 + refills


def test_handle_message_feeds_the_brain() -> None:
    peer, remote = make_peer()
    b = brain()
    for event in join_inputs(peer):
        b.handle(event, 0.0)
    actions = handle_message(b, peer, receive(peer, remote, HaveAll()), 0.0)
    assert actions == [SendInterested(peer)]
    assert handle_message(b, peer, receive(peer, remote, KeepAlive()), 0.0) == []


def test_the_extended_handshake_sets_the_request_limit_and_upload_only() -> None:
    peer, remote = make_peer()
    b = brain()
    for event in join_inputs(peer):
        b.handle(event, 0.0)
    handshake = receive(peer, remote, ExtendedHandshake(m=IDS, reqq=3, upload_only=True))
    assert handle_message(b, peer, handshake, 0.0) == []
    assert b.is_upload_only(peer)
    for message in (HaveAll(), Unchoke()):
        handle_message(b, peer, receive(peer, remote, message), 0.0)
    # The queue never goes past the peer's reqq.
    assert b.statistics().outstanding_requests == 3
    # Saying the same again changes nothing.
    assert handle_message(b, peer, ExtendedHandshake(m=IDS, reqq=3, upload_only=True), 0.0) == []


def test_handle_message_for_a_peer_the_brain_does_not_know() -> None:
    peer, remote = make_peer()
    with pytest.raises(LocalProtocolError):
        handle_message(brain(), peer, receive(peer, remote, ExtendedHandshake(m=IDS)), 0.0)
    with pytest.raises(LocalProtocolError):
        handle_message(brain(), peer, Have(1), 0.0)


def test_bytes_left() -> None:
    geometry = TorrentGeometry(3, 32768, 70000)
    assert geometry.bytes_left(()) == 70000
    assert geometry.bytes_left([2, 2]) == 70000 - 4464
    assert geometry.bytes_left(PieceSet(3, {0, 1, 2})) == 0
    with pytest.raises(LocalProtocolError):
        geometry.bytes_left({3})


@given(st.frozensets(st.integers(0, 9)))
def test_bytes_left_is_the_missing_pieces_sizes(have: frozenset[int]) -> None:
    geometry = TorrentGeometry(10, 32768, 9 * 32768 + 5)
    missing = sum(geometry.piece_size(p) for p in range(10) if p not in have)
    assert geometry.bytes_left(have) == missing
