"""The engine's small parts on their own: user input parsing, the resume store, the status
snapshot, and the translation between bip_peer messages and bip_select inputs and actions."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from bip._client import (
    ResumeStore,
    SourceError,
    TorrentPhase,
    TorrentStatus,
    parse_file_selection,
    parse_peer,
    resolve_peers,
)
from bip._cmd_download import status_fields
from bip_bencode import encode
from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_metainfo import Info, InfoHash, PieceSet
from bip_peer import (
    AllowedFast,
    Bitfield,
    Cancel,
    Choke,
    DontHave,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    NotInterested,
    Peer,
    PeerConnection,
    RejectRequest,
    Request,
    Unchoke,
    UploadOnly,
)
from bip_select import AllowedFast as AllowedFastInput
from bip_select import (
    Block,
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
    SwarmBrain,
    TorrentGeometry,
    input_for,
    message_for,
)
from bip_select import BlockRejected as BlockRejectedInput

# -- file selections and peers -------------------------------------------------------------


def test_file_selection_examples() -> None:
    assert parse_file_selection("0,2-3") == {0, 2, 3}
    assert parse_file_selection(" 5 ") == {5}
    assert parse_file_selection("1-1,1") == {1}


@pytest.mark.parametrize("text", ["", "a", "1-", "-1", "3-1", "1,,2", "0x1", "1-2-3", "\u0661"])
def test_file_selection_refused(text: str) -> None:
    with pytest.raises(SourceError):
        parse_file_selection(text)


@given(st.sets(st.integers(0, 500), min_size=1))
def test_file_selection_round_trip(indices: set[int]) -> None:
    # Written as BEP 53 writes it: maximal runs as ranges.
    parts, ordered = [], sorted(indices)
    start = previous = ordered[0]
    for index in [*ordered[1:], None]:
        if index is not None and index == previous + 1:
            previous = index
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if index is not None:
            start = previous = index
    assert parse_file_selection(",".join(parts)) == indices


@given(st.text(max_size=30))
def test_file_selection_any_text(text: str) -> None:
    try:
        result = parse_file_selection(text)
    except SourceError:
        return
    assert all(isinstance(index, int) and index >= 0 for index in result)


def test_peers() -> None:
    assert parse_peer("10.0.0.1:6881") == ("10.0.0.1", 6881)
    assert parse_peer("[::1]:51413") == ("::1", 51413)
    assert parse_peer("example.org:1") == ("example.org", 1)
    for bad in ("10.0.0.1", ":1", "host:0", "host:65536", "host:x"):
        with pytest.raises(SourceError):
            parse_peer(bad)


async def test_resolve_peers() -> None:
    peers = await resolve_peers([("127.0.0.1", 1), ("::ffff:127.0.0.1", 1), ("localhost", 2)])
    assert PeerAddress.parse("127.0.0.1:1") in peers
    assert len([p for p in peers if p.port == 1]) == 1  # the mapped form is the same peer
    assert any(p.port == 2 for p in peers)


# -- the resume store ----------------------------------------------------------------------


def _info() -> Info:
    data = bytes(range(100))
    return Info.from_bytes(
        encode(
            {
                b"name": b"x",
                b"piece length": 16384,
                b"length": len(data),
                b"pieces": hashlib.sha1(data).digest(),
            }
        )
    )


async def test_resume_store(tmp_path: Path) -> None:
    info = _info()
    store = ResumeStore(tmp_path, info.info_hash)
    assert await store.load_resume() is None
    assert await store.load_info() is None
    await store.save_resume(b"one")
    await store.save_resume(b"two")
    assert await store.load_resume() == b"two"
    assert not list(store.directory.glob("*.tmp"))  # written aside, then renamed over
    await store.save_info(info)
    loaded = await store.load_info()
    assert loaded is not None
    assert loaded.info_hash == info.info_hash
    await store.forget_resume()
    assert await store.load_resume() is None


async def test_resume_store_refuses_bad_metadata(tmp_path: Path) -> None:
    info = _info()
    other = ResumeStore(tmp_path, InfoHash(v1=bytes(20)))
    other.torrent_path.parent.mkdir(parents=True)
    other.torrent_path.write_bytes(b"d4:info" + info.to_bytes() + b"e")  # not its torrent
    assert await other.load_info() is None
    store = ResumeStore(tmp_path, info.info_hash)
    store.torrent_path.write_bytes(b"garbage")
    assert await store.load_info() is None
    store.torrent_path.write_bytes(b"d4:infod4:name1:xee")  # parses as bencoding only
    assert await store.load_info() is None


# -- status ----------------------------------------------------------------------------------


def _status(**changes: object) -> TorrentStatus:
    fields: dict[str, object] = {
        "name": "x",
        "phase": TorrentPhase.DOWNLOADING,
        "total": 1000,
        "done": 400,
        "pieces": 4,
        "num_pieces": 10,
        "download_rate": 100.0,
        "upload_rate": 0.0,
        "downloaded": 400,
        "uploaded": 0,
        "peers": 1,
        "seeds": 1,
        "bad_pieces": 0,
    }
    fields.update(changes)
    return TorrentStatus(**fields)  # type: ignore[arg-type]


def test_status_eta() -> None:
    assert _status().eta == 6.0
    assert _status(download_rate=0.0).eta is None
    assert _status(phase=TorrentPhase.SEEDING).eta == 0.0
    assert _status(phase=TorrentPhase.SEEDING).complete
    assert not _status().complete
    assert _status(phase=TorrentPhase.METADATA, num_pieces=0, total=0, done=0).eta is None


def test_status_line_peers_out_of_known() -> None:
    """The peers field says how many of the known peers (the peer list) are connected, when
    more are known than connected."""
    assert ("peers", "1 (1 seeds)") in status_fields(_status())
    assert ("peers", "1 (1 seeds)") in status_fields(_status(known_peers=1))
    assert ("peers", "1/120 (1 seeds)") in status_fields(_status(known_peers=120))


# -- messages to inputs, actions to messages -------------------------------------------------

TORRENT = InfoHash(v1=bytes(range(20)))
BOTH = Extensions.FAST | Extensions.EXTENSION_PROTOCOL


def _peer(num_pieces: int = 16) -> Peer:
    ours, _ = trio.testing.memory_stream_pair()
    handshake = CompletedHandshake(
        stream=ours,
        trailing=b"",
        peer_id=PeerId.generate(),
        extensions=BOTH,
        our_extensions=BOTH,
        info_hash=TORRENT,
        swarm_id=TORRENT.swarm_ids()[0],
        address=PeerAddress.parse("127.0.0.1:6881"),
        direction="outbound",
    )
    connection = PeerConnection(
        num_pieces=num_pieces, info_hash=TORRENT, our_extensions=BOTH, their_extensions=BOTH
    )
    return Peer(handshake, connection)


def test_inputs_for_messages() -> None:
    peer = _peer()
    assert input_for(peer, Have(3)) == PeerHave(peer, 3)
    assert input_for(peer, HaveAll()) == PeerHaveAll(peer)
    assert input_for(peer, HaveNone()) == PeerHaveNone(peer)
    assert input_for(peer, DontHave(2)) == PeerDontHave(peer, 2)
    assert input_for(peer, Choke()) == PeerChokedUs(peer)
    assert input_for(peer, Unchoke()) == PeerUnchokedUs(peer)
    assert input_for(peer, Interested()) == PeerInterested(peer)
    assert input_for(peer, NotInterested()) == PeerNotInterested(peer)
    assert input_for(peer, AllowedFast(7)) == AllowedFastInput(peer, 7)
    assert input_for(peer, RejectRequest(1, 16384, 100)) == BlockRejectedInput(
        peer, Block(1, 16384, 100)
    )
    assert input_for(peer, Request(1, 0, 16384)) is None  # served through the disk
    bitfield = input_for(peer, Bitfield(bytes(2)))
    assert isinstance(bitfield, PeerBitfield)
    assert bitfield.pieces is peer.connection.peer_pieces


def test_a_late_bitfield_replaces_the_peers_pieces_in_the_brain() -> None:
    """aria2 sends a bitfield after haves: the connection takes it, and the input the engine
    makes of it replaces what the brain believed the peer had."""
    peer = _peer(16)
    brain = SwarmBrain(TorrentGeometry(16, 16384), rng=random.Random(0))
    brain.handle(PeerJoined(peer, fast=True), 0.0)
    connection = peer.connection
    for message in (Have(1), Have(2), Bitfield(b"\x00\x01")):
        connection.receive_data(message.encode())
        received = connection.next_event()
        event = input_for(peer, received)
        assert event is not None
        brain.handle(event, 0.0)
    assert list(brain.picker.availability.peer_pieces(peer)) == [15]
    assert brain.picker.availability.count(1) == 0
    brain.check()


def test_upload_only_becomes_an_input() -> None:
    peer = _peer()
    event = input_for(peer, UploadOnly(True))
    assert event == PeerUploadOnly(peer, peer.connection.peer_upload_only)


def test_messages_for_actions() -> None:
    peer = _peer()
    block = Block(2, 16384, 16384)
    assert message_for(SendRequest(peer, block), 16) == Request(2, 16384, 16384)
    assert message_for(SendCancel(peer, block), 16) == Cancel(2, 16384, 16384)
    assert message_for(SendHave(peer, 5), 16) == Have(5)
    assert message_for(SendInterested(peer), 16) == Interested()
    assert message_for(SendNotInterested(peer), 16) == NotInterested()
    assert message_for(SendChoke(peer), 16) == Choke()
    assert message_for(SendUnchoke(peer), 16) == Unchoke()
    assert message_for(SendHaveAll(peer), 16) == HaveAll()
    assert message_for(SendHaveNone(peer), 16) == HaveNone()
    assert message_for(SendAllowedFast(peer, 9), 16) == AllowedFast(9)
    message = message_for(SendBitfield(peer, frozenset({0, 9, 15})), 16)
    assert isinstance(message, Bitfield)
    assert set(PieceSet.from_bitfield(message.bits, 16)) == {0, 9, 15}
