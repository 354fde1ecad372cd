"""The BEP 3 / BEP 52 handshake core: both roles, fed whole, byte by byte, and fuzzed."""

from __future__ import annotations

import doctest
import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_handshake import _handshake
from bip_handshake._errors import HandshakeError, LocalProtocolError, RemoteProtocolError
from bip_handshake._extensions import Extensions
from bip_handshake._handshake import (
    HANDSHAKE_LENGTH,
    NEED_DATA,
    PAUSED,
    PROTOCOL_HEADER,
    Handshake,
    HandshakeComplete,
    HandshakeConnection,
    HandshakeEvent,
    HandshakeState,
    InfoHashReceived,
    Pending,
    Role,
)
from bip_metainfo import InfoHash

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "peer_wire"

V1 = InfoHash(v1=bytes(range(20)))
V2 = InfoHash(v2=bytes(range(100, 132)))
HYBRID = InfoHash(v1=b"\x01" * 20, v2=b"\x02" * 32)
CLIENT_ID = b"-BI0001-client000000"
SERVER_ID = b"-BI0001-server000000"
OURS = Extensions.EXTENSION_PROTOCOL | Extensions.FAST | Extensions.DHT
BITFIELD = b"\x00\x00\x00\x02\x05\xff"


def events(conn: HandshakeConnection) -> Iterator[HandshakeEvent | Pending]:
    """Every event up to and including the next NEED_DATA or PAUSED."""
    while True:
        event = conn.next_event()
        yield event
        if isinstance(event, Pending):
            return


def drain(conn: HandshakeConnection) -> list[HandshakeEvent | Pending]:
    return list(events(conn))


def feed(conn: HandshakeConnection, data: bytes, *, bytewise: bool) -> list[HandshakeEvent]:
    """Feed ``data`` (whole or one byte at a time) and collect the events."""
    got: list[HandshakeEvent] = []
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    for chunk in chunks:
        conn.receive_data(chunk)
        got.extend(e for e in events(conn) if isinstance(e, HandshakeEvent))
    return got


def handshake_bytes(
    info_hash: bytes, peer_id: bytes = SERVER_ID, extensions: Extensions = OURS
) -> bytes:
    return Handshake(extensions, info_hash, peer_id).to_bytes()


def connect(
    torrent: InfoHash,
    served: list[InfoHash],
    *,
    info_hash: bytes | None = None,
    client_ext: Extensions = OURS,
    server_ext: Extensions = OURS,
    bytewise: bool = False,
    client_trailing: bytes = b"",
    server_trailing: bytes = b"",
) -> tuple[HandshakeConnection, HandshakeConnection, list[HandshakeEvent], list[HandshakeEvent]]:
    """Run both ends against each other in memory, the receiver looking up ``served``."""
    client = HandshakeConnection.initiator(
        torrent, peer_id=CLIENT_ID, extensions=client_ext, info_hash=info_hash
    )
    server = HandshakeConnection.receiver(peer_id=SERVER_ID, extensions=server_ext)
    client_events: list[HandshakeEvent] = []
    server_events = feed(server, client.send_handshake() + client_trailing, bytewise=bytewise)
    assert isinstance(server_events[0], InfoHashReceived)
    assert server.next_event() is PAUSED
    wanted = server_events[0].info_hash
    match = [t for t in served if t.matches(wanted)]
    assert match
    reply = server.accept(match[0]) + server_trailing
    client_events += feed(client, reply, bytewise=bytewise)
    return client, server, client_events, server_events


# -- the message ------------------------------------------------------------------


def test_vector_handshake() -> None:
    data = json.loads((VECTORS / "peer_messages.json").read_text())
    (vector,) = [v for v in data["vectors"] if v["name"].startswith("handshake,")]
    raw = bytes.fromhex(vector["hex"])
    decoded = vector["decoded"]
    hs = Handshake.from_bytes(raw)
    assert hs.extensions.hex() == decoded["reserved_hex"]
    assert hs.info_hash.hex() == decoded["info_hash_hex"]
    assert hs.peer_id == decoded["peer_id"].encode()
    assert hs.to_bytes() == raw
    assert hs.extensions == Extensions.EXTENSION_PROTOCOL | Extensions.FAST


def test_vector_fed_to_receiver() -> None:
    data = json.loads((VECTORS / "peer_messages.json").read_text())
    (vector,) = [v for v in data["vectors"] if v["name"].startswith("handshake,")]
    server = HandshakeConnection.receiver(peer_id=SERVER_ID)
    server.receive_data(bytes.fromhex(vector["hex"]))
    event = server.next_event()
    assert event == InfoHashReceived(b"\xaa" * 20, Extensions.from_hex("0000000000100004"))


def test_message_layout() -> None:
    raw = handshake_bytes(b"\x07" * 20, b"p" * 20, Extensions.DHT)
    assert len(raw) == HANDSHAKE_LENGTH == 68
    assert raw[:20] == PROTOCOL_HEADER
    assert raw[20:28] == b"\x00" * 7 + b"\x01"
    assert raw[28:48] == b"\x07" * 20
    assert raw[48:] == b"p" * 20


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        PROTOCOL_HEADER,
        handshake_bytes(b"\x01" * 20) + b"x",
        b"\x12" + handshake_bytes(b"\x01" * 20)[1:],
        handshake_bytes(b"\x01" * 20).replace(b"BitTorrent", b"BitTorrenT"),
    ],
)
def test_message_from_bad_bytes(bad: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        Handshake.from_bytes(bad)


@pytest.mark.parametrize(
    ("info_hash", "peer_id"),
    [(b"\x01" * 19, b"p" * 20), (b"\x01" * 20, b"p" * 21), ("x" * 20, b"p" * 20)],
)
def test_message_bad_fields(info_hash: bytes, peer_id: bytes) -> None:
    with pytest.raises(ValueError, match="20 bytes"):
        Handshake(Extensions.NONE, info_hash, peer_id)


def test_message_bad_extensions() -> None:
    with pytest.raises(TypeError):
        Handshake(5, b"\x01" * 20, b"p" * 20)  # type: ignore[arg-type]


# -- both ends --------------------------------------------------------------------


@pytest.mark.parametrize("bytewise", [False, True])
@pytest.mark.parametrize(
    ("torrent", "info_hash", "v2"),
    [
        (V1, V1.v1, False),
        (V2, V2.v2_truncated, True),
        (HYBRID, HYBRID.v1, True),  # both set the upgrade bit
        (HYBRID, HYBRID.v2_truncated, True),
    ],
)
def test_both_ends(torrent: InfoHash, info_hash: bytes, v2: bool, bytewise: bool) -> None:
    client, server, client_events, server_events = connect(
        torrent, [V1, V2, HYBRID], info_hash=info_hash, bytewise=bytewise
    )
    expected_ext = OURS | Extensions.V2_UPGRADE if torrent.is_hybrid else OURS
    assert client_events == [
        InfoHashReceived(info_hash, expected_ext),
        HandshakeComplete(torrent, info_hash, expected_ext, expected_ext, SERVER_ID),
    ]
    server_events += [e for e in drain(server) if isinstance(e, HandshakeEvent)]
    assert server_events == [
        InfoHashReceived(info_hash, expected_ext),
        HandshakeComplete(torrent, info_hash, expected_ext, expected_ext, CLIENT_ID),
    ]
    for conn in (client, server):
        assert conn.state is HandshakeState.COMPLETE
        assert conn.trailing_data == (b"", False)
        assert conn.torrent == torrent
        assert conn.next_event() is PAUSED
    complete = client_events[1]
    assert isinstance(complete, HandshakeComplete)
    assert complete.v2 is v2
    assert complete.common == expected_ext
    assert client.role is Role.INITIATOR
    assert server.role is Role.RECEIVER


def test_default_info_hash_prefers_v1() -> None:
    client = HandshakeConnection.initiator(HYBRID, peer_id=CLIENT_ID)
    assert client.send_handshake()[28:48] == HYBRID.v1
    client = HandshakeConnection.initiator(V2, peer_id=CLIENT_ID)
    assert client.send_handshake()[28:48] == V2.v2_truncated


def test_upgrade_bit_set_for_hybrid_only() -> None:
    hybrid = HandshakeConnection.initiator(HYBRID, peer_id=CLIENT_ID)
    assert Extensions.V2_UPGRADE in Handshake.from_bytes(hybrid.send_handshake()).extensions
    v1 = HandshakeConnection.initiator(
        V1, peer_id=CLIENT_ID, extensions=OURS | Extensions.V2_UPGRADE
    )
    assert v1.our_extensions == OURS
    assert Handshake.from_bytes(v1.send_handshake()).extensions == OURS


def test_hybrid_without_peer_upgrade_bit_stays_v1() -> None:
    client = HandshakeConnection.initiator(HYBRID, peer_id=CLIENT_ID, extensions=OURS)
    client.send_handshake()
    evts = feed(client, handshake_bytes(HYBRID.v1 or b"", extensions=OURS), bytewise=False)
    complete = evts[-1]
    assert isinstance(complete, HandshakeComplete)
    assert Extensions.V2_UPGRADE in complete.our_extensions
    assert Extensions.V2_UPGRADE not in complete.extensions
    assert complete.v2 is False


@pytest.mark.parametrize("bytewise", [False, True])
def test_trailing_data_kept(bytewise: bool) -> None:
    client, server, client_events, _ = connect(
        V1,
        [V1],
        bytewise=bytewise,
        client_trailing=b"\x00\x00\x00\x01\x02",  # interested, same packet
        server_trailing=BITFIELD,
    )
    assert isinstance(client_events[-1], HandshakeComplete)
    assert client.trailing_data == (BITFIELD, False)
    assert drain(server)[0] == HandshakeComplete(V1, V1.v1 or b"", OURS, OURS, CLIENT_ID)
    assert server.trailing_data == (b"\x00\x00\x00\x01\x02", False)
    # data after completion goes on accumulating for the next layer, and so does EOF
    client.receive_data(b"more")
    client.receive_data(b"")
    assert client.trailing_data == (BITFIELD + b"more", True)
    assert client.next_event() is PAUSED


def test_receiver_answers_after_48_bytes() -> None:
    server = HandshakeConnection.receiver(peer_id=SERVER_ID)
    raw = handshake_bytes(V1.v1 or b"", CLIENT_ID)
    server.receive_data(raw[:47])
    assert server.next_event() is NEED_DATA
    server.receive_data(raw[47:48])
    assert server.next_event() == InfoHashReceived(V1.v1 or b"", OURS)
    assert server.state is HandshakeState.AWAITING_DECISION
    assert server.next_event() is PAUSED
    reply = server.accept(V1)
    assert Handshake.from_bytes(reply) == Handshake(Extensions.NONE, V1.v1 or b"", SERVER_ID)
    assert server.next_event() is NEED_DATA
    server.receive_data(raw[48:])
    assert server.next_event() == HandshakeComplete(
        V1, V1.v1 or b"", OURS, Extensions.NONE, CLIENT_ID
    )


def test_receiver_decision_waits_for_caller_even_with_peer_id() -> None:
    server = HandshakeConnection.receiver(peer_id=SERVER_ID)
    server.receive_data(handshake_bytes(V1.v1 or b"", CLIENT_ID) + BITFIELD)
    assert drain(server) == [InfoHashReceived(V1.v1 or b"", OURS), PAUSED]
    assert server.next_event() is PAUSED
    server.accept(V1)
    assert isinstance(server.next_event(), HandshakeComplete)
    assert server.trailing_data == (BITFIELD, False)


def test_receiver_rejects_unknown_info_hash() -> None:
    server = HandshakeConnection.receiver(peer_id=SERVER_ID)
    server.receive_data(handshake_bytes(b"\xee" * 20, CLIENT_ID))
    event = server.next_event()
    assert isinstance(event, InfoHashReceived)
    assert not any(t.matches(event.info_hash) for t in (V1, V2, HYBRID))
    server.reject()
    assert server.state is HandshakeState.REJECTED
    with pytest.raises(LocalProtocolError, match="rejected"):
        server.next_event()
    with pytest.raises(LocalProtocolError):
        server.receive_data(b"x")
    with pytest.raises(LocalProtocolError):
        server.accept(V1)


def test_accept_wrong_torrent() -> None:
    server = HandshakeConnection.receiver(peer_id=SERVER_ID)
    server.receive_data(handshake_bytes(V1.v1 or b"", CLIENT_ID))
    server.next_event()
    with pytest.raises(LocalProtocolError, match="does not match"):
        server.accept(V2)
    assert server.state is HandshakeState.AWAITING_DECISION
    server.accept(V1)  # still possible


def test_v2_receiver_recognises_v2_id_only() -> None:
    # a v1 hash equal to the truncated v2 hash is a different torrent
    assert not V2.matches(V2.v2 or b"")
    assert V2.matches(V2.v2_truncated or b"")


# -- misuse: LocalProtocolError ---------------------------------------------------


@pytest.mark.parametrize(
    "state", ["send_handshake", "awaiting_info_hash", "awaiting_decision", "awaiting_peer_id"]
)
def test_every_local_action_in_every_state(state: str) -> None:
    """Every (role, state, local action) pair missing from the table is refused."""
    allowed = {
        (Role.INITIATOR, "send_handshake", "send_handshake"),
        (Role.RECEIVER, "awaiting_decision", "accept"),
        (Role.RECEIVER, "awaiting_decision", "reject"),
    }
    for role in Role:
        for action in ("send_handshake", "accept", "reject"):
            conn = _in_state(role, HandshakeState(state))
            if conn is None:
                continue
            calls: dict[str, Callable[[], object]] = {
                "send_handshake": conn.send_handshake,
                "accept": functools.partial(conn.accept, V1),
                "reject": conn.reject,
            }
            call = calls[action]
            if (role, state, action) in allowed:
                call()
            else:
                with pytest.raises(LocalProtocolError):
                    call()


def _in_state(role: Role, state: HandshakeState) -> HandshakeConnection | None:
    """A connection of ``role`` brought to ``state``, or None if the role never is there."""
    if role is Role.INITIATOR:
        conn = HandshakeConnection.initiator(V1, peer_id=CLIENT_ID)
        if state is HandshakeState.SEND_HANDSHAKE:
            return conn
        conn.send_handshake()
        if state is HandshakeState.AWAITING_INFO_HASH:
            return conn
        if state is HandshakeState.AWAITING_PEER_ID:
            conn.receive_data(handshake_bytes(V1.v1 or b"")[:48])
            conn.next_event()
            return conn
        return None
    conn = HandshakeConnection.receiver(peer_id=SERVER_ID)
    if state is HandshakeState.AWAITING_INFO_HASH:
        return conn
    if state in (HandshakeState.AWAITING_DECISION, HandshakeState.AWAITING_PEER_ID):
        conn.receive_data(handshake_bytes(V1.v1 or b"")[:48])
        conn.next_event()
        if state is HandshakeState.AWAITING_PEER_ID:
            conn.accept(V1)
        return conn
    return None


def test_local_actions_after_complete() -> None:
    client, server, _, _ = connect(V1, [V1])
    drain(server)
    for conn in (client, server):
        for call in (conn.send_handshake, conn.reject, functools.partial(conn.accept, V1)):
            with pytest.raises(LocalProtocolError):
                call()


def test_sending_twice() -> None:
    client = HandshakeConnection.initiator(V1, peer_id=CLIENT_ID)
    client.send_handshake()
    with pytest.raises(LocalProtocolError, match="send"):
        client.send_handshake()


def test_initiator_paused_until_sent() -> None:
    client = HandshakeConnection.initiator(V1, peer_id=CLIENT_ID)
    assert client.next_event() is PAUSED


def test_data_after_eof_is_local_error() -> None:
    server = HandshakeConnection.receiver(peer_id=SERVER_ID)
    server.receive_data(b"\x13")
    server.receive_data(b"")
    with pytest.raises(LocalProtocolError, match="end of the stream"):
        server.receive_data(b"B")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"role": Role.INITIATOR},
        {"role": Role.RECEIVER, "torrent": V1},
        {"role": Role.RECEIVER, "info_hash": b"\x00" * 20},
        {"role": "initiator", "torrent": V1},
        {"role": Role.RECEIVER, "extensions": 5},
    ],
)
def test_bad_construction_type(kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        HandshakeConnection(peer_id=CLIENT_ID, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"role": Role.RECEIVER, "peer_id": b"short"},
        {"role": Role.RECEIVER, "peer_id": CLIENT_ID, "max_trailing": -1},
        {"role": Role.INITIATOR, "peer_id": CLIENT_ID, "torrent": V1, "info_hash": b"\x09" * 20},
    ],
)
def test_bad_construction_value(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"peer_id|max_trailing|swarm ids"):
        HandshakeConnection(**kwargs)  # type: ignore[arg-type]


# -- the peer misbehaves: RemoteProtocolError -------------------------------------


def _assert_dead(conn: HandshakeConnection) -> None:
    assert conn.state is HandshakeState.ERROR
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"x")


@pytest.mark.parametrize("bytewise", [False, True])
@pytest.mark.parametrize(
    ("data", "match", "fails_after"),
    [
        (b"\x14" + handshake_bytes(V1.v1 or b"")[1:], "length byte 20", 1),
        (b"\x00", "length byte 0", 1),
        (b"GET / HTTP/1.1\r\n\r\n", "length byte 71", 1),
        (handshake_bytes(V1.v1 or b"").replace(b"protocol", b"Protocol"), "protocol string", 13),
        (b"\x13BitTorrent protocoX" + bytes(48), "protocol string", 20),
    ],
)
def test_wrong_protocol(data: bytes, match: str, fails_after: int, bytewise: bool) -> None:
    server = HandshakeConnection.receiver(peer_id=SERVER_ID)
    with pytest.raises(RemoteProtocolError, match=match):
        feed(server, data, bytewise=bytewise)
    if bytewise:
        # detected as soon as the first wrong byte arrives, not after 48
        assert len(server.trailing_data[0]) == fails_after
    _assert_dead(server)


@pytest.mark.parametrize("bytewise", [False, True])
def test_hybrid_initiator_accepts_the_v2_upgrade(bytewise: bool) -> None:
    # BEP 52: we dial a hybrid torrent by its v1 id with the upgrade bit; the peer
    # may answer with the truncated v2 id (libtorrent does), and the connection is v2.
    client = HandshakeConnection.initiator(HYBRID, peer_id=CLIENT_ID)
    client.send_handshake()
    upgraded = HYBRID.v2_truncated or b""
    reply = handshake_bytes(upgraded, extensions=Extensions.V2_UPGRADE)
    events = feed(client, reply, bytewise=bytewise)
    done = events[-1]
    assert isinstance(done, HandshakeComplete)
    assert done.info_hash == upgraded
    assert done.v2


@pytest.mark.parametrize("torrent", [V1, HYBRID], ids=["v1", "hybrid"])
@pytest.mark.parametrize("bytewise", [False, True])
def test_initiator_refuses_another_torrent(torrent: InfoHash, bytewise: bool) -> None:
    client = HandshakeConnection.initiator(torrent, peer_id=CLIENT_ID)
    client.send_handshake()
    with pytest.raises(RemoteProtocolError, match="info-hash"):
        feed(client, handshake_bytes(b"\x99" * 20), bytewise=bytewise)
    _assert_dead(client)


def test_peer_speaks_before_our_handshake() -> None:
    client = HandshakeConnection.initiator(V1, peer_id=CLIENT_ID)
    client.receive_data(handshake_bytes(V1.v1 or b""))
    with pytest.raises(RemoteProtocolError, match="before our handshake"):
        client.next_event()
    _assert_dead(client)


@pytest.mark.parametrize("cut", [0, 1, 30, 47, 48, 67])
def test_peer_closes_mid_handshake(cut: int) -> None:
    client = HandshakeConnection.initiator(V1, peer_id=CLIENT_ID)
    client.send_handshake()
    client.receive_data(handshake_bytes(V1.v1 or b"")[:cut])
    client.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed"):
        drain(client)
    _assert_dead(client)


def test_trailing_data_is_bounded() -> None:
    client = HandshakeConnection.initiator(V1, peer_id=CLIENT_ID, max_trailing=10)
    client.send_handshake()
    client.receive_data(handshake_bytes(V1.v1 or b"") + b"x" * 10)  # exactly at the bound
    assert isinstance(drain(client)[-2], HandshakeComplete)
    with pytest.raises(RemoteProtocolError, match="more than 10 bytes"):
        client.receive_data(b"y")
    _assert_dead(client)


@pytest.mark.parametrize("taken", [0, 48])
def test_bound_before_events_are_read(taken: int) -> None:
    server = HandshakeConnection.receiver(peer_id=SERVER_ID, max_trailing=4)
    raw = handshake_bytes(V1.v1 or b"", CLIENT_ID)
    if taken:
        server.receive_data(raw[:taken])
        server.next_event()
    server.receive_data(raw[taken:] + b"1234")
    with pytest.raises(RemoteProtocolError):
        server.receive_data(b"5")


def test_default_bound_is_64_kib() -> None:
    server = HandshakeConnection.receiver(peer_id=SERVER_ID)
    server.receive_data(handshake_bytes(V1.v1 or b"", CLIENT_ID) + bytes(64 * 1024))
    with pytest.raises(RemoteProtocolError):
        server.receive_data(b"\x00")


def test_errors_share_a_base() -> None:
    assert issubclass(LocalProtocolError, HandshakeError)
    assert issubclass(RemoteProtocolError, HandshakeError)
    assert not issubclass(HandshakeError, ValueError)


# -- properties -------------------------------------------------------------------


@given(st.binary(max_size=200), st.integers(min_value=1, max_value=70))
def test_arbitrary_bytes_to_receiver(data: bytes, chunk: int) -> None:
    """Arbitrary input gives events, NEED_DATA / PAUSED or our errors, nothing else."""
    server = HandshakeConnection.receiver(peer_id=SERVER_ID, max_trailing=64)
    try:
        for start in range(0, len(data), chunk):
            server.receive_data(data[start : start + chunk])
            for event in events(server):
                if isinstance(event, InfoHashReceived):
                    server.accept(InfoHash(v1=event.info_hash))
        server.receive_data(b"")
        drain(server)
    except HandshakeError:
        return
    assert server.state is HandshakeState.COMPLETE
    assert data.startswith(PROTOCOL_HEADER)
    assert server.trailing_data == (data[HANDSHAKE_LENGTH:], True)


@given(
    st.binary(min_size=20, max_size=20),
    st.binary(min_size=20, max_size=20),
    st.integers(min_value=0, max_value=2**64 - 1),
    st.binary(max_size=100),
    st.lists(st.integers(min_value=1, max_value=68), min_size=1, max_size=10),
)
def test_any_valid_handshake_any_split(
    info_hash: bytes, peer_id: bytes, reserved: int, trailing: bytes, cuts: list[int]
) -> None:
    torrent = InfoHash(v1=info_hash)
    client = HandshakeConnection.initiator(torrent, peer_id=CLIENT_ID)
    client.send_handshake()
    raw = Handshake(Extensions(reserved), info_hash, peer_id).to_bytes() + trailing
    got: list[HandshakeEvent] = []
    position = 0
    for cut in [*cuts, len(raw)]:
        if raw[position : position + cut]:  # b"" would mean end of stream
            client.receive_data(raw[position : position + cut])
        position += cut
        got += [e for e in events(client) if isinstance(e, HandshakeEvent)]
    assert got == [
        InfoHashReceived(info_hash, Extensions(reserved)),
        HandshakeComplete(torrent, info_hash, Extensions(reserved), Extensions.NONE, peer_id),
    ]
    assert client.trailing_data == (trailing, False)


def test_doctests() -> None:
    failures, tried = doctest.testmod(_handshake, optionflags=doctest.ELLIPSIS)
    assert tried > 0
    assert failures == 0
