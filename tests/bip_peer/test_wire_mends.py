"""Mends of the wire: later BEP 10 handshakes carry changes only (fields they leave out keep
their values), and wrong-size lt_donthave / upload_only messages are ignored as libtorrent
ignores them."""

from __future__ import annotations

import random
from ipaddress import IPv4Address

import trio.testing

from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_peer import Peer, PexFlags
from bip_peer._connection import PeerConnection, UnknownExtended
from bip_peer._exchange import _listed
from bip_peer._extended import ExtendedHandshake
from bip_peer._messages import NEED_DATA, Extended, Have, HaveAll, Message, Unchoke
from bip_select._brain import SwarmBrain
from bip_select._geometry import TorrentGeometry
from bip_select._wire import handle_message, join_inputs

BOTH = Extensions.FAST | Extensions.EXTENSION_PROTOCOL
INFO_HASH = InfoHash(v1=bytes(range(20)))
IDS = {"ut_pex": 1, "upload_only": 3, "lt_donthave": 7}
NUM_PIECES = 64


def make() -> PeerConnection:
    return PeerConnection(
        num_pieces=NUM_PIECES, info_hash=INFO_HASH, our_extensions=BOTH, their_extensions=BOTH
    )


def deliver(conn: PeerConnection, message: Message | ExtendedHandshake) -> object:
    """Feed ``conn`` one message from a peer and return the one event it makes."""
    if isinstance(message, ExtendedHandshake):
        message = Extended(0, message.encode_payload())
    conn.receive_data(message.encode())
    event = conn.next_event()
    assert conn.next_event() is NEED_DATA
    return event


FIRST = ExtendedHandshake(
    m={"ut_pex": 1, "ut_holepunch": 4},
    v="libtorrent/2.0.9.0",
    p=6881,
    reqq=4,
    metadata_size=1000,
    extra={b"e": 1},
)


def test_a_later_handshake_with_only_changes_keeps_the_other_fields() -> None:
    conn = make()
    conn.send(ExtendedHandshake(m=IDS))
    deliver(conn, FIRST)
    event = deliver(conn, ExtendedHandshake(m={"ut_pex": 0}))
    assert event == ExtendedHandshake(m={"ut_pex": 0})  # the event is what the peer sent
    merged = conn.their_handshake
    assert merged is not None
    assert conn.peer_reqq == 4
    assert (merged.v, merged.p, merged.reqq, merged.metadata_size) == (
        "libtorrent/2.0.9.0",
        6881,
        4,
        1000,
    )
    assert dict(merged.m) == {"ut_holepunch": 4} == dict(conn.their_extension_ids)
    assert dict(merged.extra) == {b"e": 1}


def test_a_field_present_later_replaces_and_an_invalid_one_keeps_the_old() -> None:
    conn = make()
    deliver(conn, FIRST)
    deliver(conn, ExtendedHandshake(reqq=16, p=7000, extra={b"e": 0}))
    assert conn.peer_reqq == 16
    assert conn.their_handshake is not None
    assert conn.their_handshake.p == 7000
    assert dict(conn.their_handshake.extra) == {b"e": 0}
    # reqq as a string and p of 0 are ignored as if absent: the old values stay.
    conn.receive_data(Extended(0, b"d1:pi0e4:reqq3:abce").encode())
    assert isinstance(conn.next_event(), ExtendedHandshake)
    assert conn.peer_reqq == 16
    assert conn.their_handshake.p == 7000


def inbound_peer() -> tuple[Peer, PeerConnection]:
    ours, _ = trio.testing.memory_stream_pair()
    handshake = CompletedHandshake(
        stream=ours,
        trailing=b"",
        peer_id=PeerId.generate(),
        extensions=BOTH,
        our_extensions=BOTH,
        info_hash=INFO_HASH,
        swarm_id=INFO_HASH.swarm_ids()[0],
        address=PeerAddress(IPv4Address("10.1.2.3"), 50123),
        direction="inbound",
    )
    peer = Peer(handshake, make())
    peer.connection.send(ExtendedHandshake(m=IDS))
    return peer, make()


def test_pex_and_the_brain_keep_what_an_earlier_handshake_said() -> None:
    peer, remote = inbound_peer()
    brain = SwarmBrain(TorrentGeometry(NUM_PIECES, 16384), rng=random.Random(1))
    for event in join_inputs(peer):
        brain.handle(event, 0.0)

    def receive(message: Message | ExtendedHandshake, now: float) -> None:
        peer.connection.receive_data(remote.send(message))
        event = peer.connection.next_event()
        assert peer.connection.next_event() is NEED_DATA
        handle_message(brain, peer, event, now)

    receive(FIRST, 0.0)
    receive(HaveAll(), 0.0)
    receive(Unchoke(), 0.0)
    receive(ExtendedHandshake(m={"ut_pex": 0}), 1.0)
    assert peer.extended_handshake is not None
    assert peer.extended_handshake.p == 6881
    listed = _listed(peer)
    assert listed is not None
    assert listed[0] == PeerAddress(IPv4Address("10.1.2.3"), 6881)
    assert PexFlags.HOLEPUNCH in listed[1]
    assert brain.queues._peer(peer).reqq == 4


def test_wrong_size_donthave_and_upload_only_are_ignored() -> None:
    for name, payload in (("upload_only", b"\x01\x00"), ("lt_donthave", b"\x00\x00\x00\x01\x00")):
        conn = make()
        conn.send(ExtendedHandshake(m=IDS))
        deliver(conn, HaveAll())
        event = deliver(conn, Extended(IDS[name], payload))
        assert event == UnknownExtended(IDS[name], name, payload)
        assert not conn.peer_upload_only
        assert conn.peer_has_all
        assert deliver(conn, Have(1)) == Have(1)  # the connection lives on
