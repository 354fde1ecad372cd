"""bip_handshake's sans-IO cores against real clients, in the direction "we dial a seeder".

Each test starts one real client seeding a small v1 torrent (made by bip_metainfo) on loopback,
opens a plain TCP socket to it and drives our cores by hand:

- plaintext: ``HandshakeConnection.initiator`` alone (BEP 3);
- MSE: ``MSEInitiator`` with REQUIRE_ENCRYPTED carrying our BEP 3 handshake as its initial payload
  (IA), then the client's handshake and everything after it through ``decrypt()``.

In both cases we check the client's handshake (our info-hash, a peer id ``PeerId.client``
identifies, the reserved bits it advertises) and that the bytes after it (extended handshake,
bitfield / have_all) are kept in ``trailing_data`` unchanged.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bip_handshake import (
    NEED_DATA,
    EncryptionPolicy,
    Extensions,
    HandshakeComplete,
    HandshakeConnection,
    InfoHashReceived,
    MSEEstablished,
    MSEInitiator,
    PeerId,
)

from ._helpers import StartProcess, free_port
from ._seeders import (
    ARIA2,
    LIBTORRENT,
    QBITTORRENT,
    RTORRENT,
    Identity,
    Seeder,
    SmallTorrent,
    make_torrent,
    start_aria2,
    start_libtorrent,
    start_qbittorrent,
    start_rtorrent,
)

pytestmark = pytest.mark.interop

OUR_EXTENSIONS = Extensions.EXTENSION_PROTOCOL | Extensions.FAST
IO_TIMEOUT = 5.0
# A seeder's port may accept before it serves the torrent (aria2 and rtorrent check the data
# first): a dial that the seeder hangs up on is retried until this deadline.
SERVE_DEADLINE = 10.0

# BEP 3 message ids (BEP 6: have_all, have_none, allowed_fast; BEP 10: extended).
UNCHOKE, BITFIELD, HAVE_ALL, HAVE_NONE, ALLOWED_FAST, EXTENDED = 1, 5, 14, 15, 17, 20


@dataclass
class Dialled:
    """What one dial got: the client's handshake, our cores' view of what followed, and the
    plaintext bytes of the stream as received (decrypted for MSE)."""

    info_hash_event: InfoHashReceived
    complete: HandshakeComplete
    trailing: bytes
    closed: bool
    stream: bytes
    mse: MSEEstablished | None = None
    messages: list[tuple[int | None, bytes]] = field(default_factory=list)


class PeerHungUpError(Exception):
    """The client closed the connection before its handshake was complete."""


def parse_messages(data: bytes) -> tuple[list[tuple[int | None, bytes]], bytes]:
    """Split BEP 3 length-prefixed messages: [(id or None for keep-alive, payload)], rest."""
    messages: list[tuple[int | None, bytes]] = []
    pos = 0
    while len(data) - pos >= 4:
        length = int.from_bytes(data[pos : pos + 4], "big")
        if len(data) - pos - 4 < length:
            break
        body = data[pos + 4 : pos + 4 + length]
        messages.append((body[0], body[1:]) if body else (None, b""))
        pos += 4 + length
    return messages, data[pos:]


def _recv(sock: socket.socket, deadline: float) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the client did not answer in time")
    sock.settimeout(remaining)
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


def _has_availability(messages: list[tuple[int | None, bytes]]) -> bool:
    return any(msg_id in (BITFIELD, HAVE_ALL, HAVE_NONE) for msg_id, _ in messages)


def _dial_once(
    seeder: Seeder,
    torrent: SmallTorrent,
    peer_id: PeerId,
    *,
    mse: bool,
    policy: EncryptionPolicy = EncryptionPolicy.REQUIRE_ENCRYPTED,
) -> Dialled:
    """One connection: our handshake (optionally inside MSE), theirs, and what follows it until
    the client has said which pieces it has (bitfield / have_all) or 2 s passed."""
    conn = HandshakeConnection.initiator(
        torrent.info_hash, peer_id=peer_id.value, extensions=OUR_EXTENSIONS
    )
    our_handshake = conn.send_handshake()
    deadline = time.monotonic() + IO_TIMEOUT
    stream = bytearray()  # the plaintext stream from the client, after MSE if any
    established: MSEEstablished | None = None
    with socket.create_connection(seeder.address, timeout=IO_TIMEOUT) as sock:
        decrypt: Callable[[bytes], bytes] = bytes
        if mse:
            initiator = MSEInitiator(torrent.v1, policy, initial_payload=our_handshake)
            while True:
                mse_event = initiator.next_event()
                # Step 1 (Ya, PadA) is ready at once, step 3 after Yb: send after every round.
                if out := initiator.data_to_send():
                    sock.sendall(out)
                if isinstance(mse_event, MSEEstablished):
                    established = mse_event
                    break
                data = _recv(sock, deadline)
                if not data:
                    raise PeerHungUpError("the client closed during MSE")
                initiator.receive_data(data)
            assert not initiator.data_to_send()
            decrypt = initiator.decrypt
            first = established.data
        else:
            sock.sendall(our_handshake)
            first = b""

        def feed(plain: bytes) -> None:
            stream.extend(plain)
            conn.receive_data(plain)

        if first:
            feed(first)
        info_event: InfoHashReceived | None = None
        complete: HandshakeComplete | None = None
        while complete is None:
            event = conn.next_event()
            if isinstance(event, InfoHashReceived):
                info_event = event
            elif isinstance(event, HandshakeComplete):
                complete = event
            elif event is NEED_DATA:
                data = _recv(sock, deadline)
                if not data:
                    raise PeerHungUpError(f"the client closed after {bytes(stream)!r}")
                feed(decrypt(data))
            else:
                raise AssertionError(f"unexpected {event!r}")
        assert info_event is not None

        # Read on until the client has announced its pieces, so trailing_data is worth checking.
        more_deadline = min(deadline, time.monotonic() + 2.0)
        while not _has_availability(parse_messages(conn.trailing_data[0])[0]):
            try:
                data = _recv(sock, more_deadline)
            except TimeoutError:
                break
            feed(decrypt(data))
            if not data:
                break
    trailing, closed = conn.trailing_data
    messages, _rest = parse_messages(trailing)
    return Dialled(info_event, complete, trailing, closed, bytes(stream), established, messages)


def dial(
    seeder: Seeder,
    torrent: SmallTorrent,
    *,
    mse: bool,
    policy: EncryptionPolicy = EncryptionPolicy.REQUIRE_ENCRYPTED,
) -> Dialled:
    """Dial until the seeder serves the torrent (it may hang up while it checks its data)."""
    deadline = time.monotonic() + SERVE_DEADLINE
    while True:
        peer_id = PeerId.generate()
        try:
            return _dial_once(seeder, torrent, peer_id, mse=mse, policy=policy)
        except (PeerHungUpError, ConnectionRefusedError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.25)


def check_dialled(
    got: Dialled,
    torrent: SmallTorrent,
    identity: Identity,
    *,
    reserved: str,
) -> None:
    """The checks every client's answer must pass."""
    info_hash = torrent.v1
    # Its handshake is for our torrent, and our core saw it in two steps.
    assert got.info_hash_event.info_hash == info_hash
    assert got.complete.info_hash == info_hash
    assert got.complete.torrent == torrent.info_hash
    assert got.stream[:20] == b"\x13BitTorrent protocol"
    assert got.stream[28:48] == info_hash
    # The peer id names the client.
    peer_id = PeerId(got.complete.peer_id)
    assert got.stream[48:68] == peer_id.value
    assert peer_id.value.startswith(identity.prefix), peer_id
    info = peer_id.client
    assert info is not None, peer_id
    assert (info.name, info.version) == (identity.name, identity.version)
    # The reserved bytes are exactly what the client advertises.
    assert got.stream[20:28].hex() == reserved
    assert got.complete.extensions == Extensions.from_hex(reserved)
    assert got.info_hash_event.extensions == got.complete.extensions
    assert got.complete.our_extensions == OUR_EXTENSIONS
    assert not got.complete.v2
    # Whatever followed the handshake is kept, byte for byte, for the next layer.
    assert got.trailing == got.stream[68:]
    assert not got.closed
    assert _has_availability(got.messages), got.messages


def check_mse(got: Dialled) -> None:
    assert got.mse is not None
    assert got.mse.method == "rc4"
    assert got.mse.via_mse
    assert got.mse.initial_payload == b""


def check_message_ids(got: Dialled, first: list[int], *, then: set[int]) -> None:
    """The client's first messages have the ids `first`; any after them, ids in `then`."""
    ids = [msg_id for msg_id, _ in got.messages]
    assert ids[: len(first)] == first, got.messages
    assert set(ids[len(first) :]) <= then, got.messages


def expect_hang_up_on_plaintext(seeder: Seeder, torrent: SmallTorrent) -> None:
    """A client that requires MSE (and serves the torrent: dial with MSE first) hangs up on a
    plaintext handshake without answering it."""
    with pytest.raises(PeerHungUpError, match=r"closed after b''"):
        _dial_once(seeder, torrent, PeerId.generate(), mse=False)


# ------------------------------------------------------------------------------------ libtorrent

# BEP 10, fast, DHT. libtorrent sets the DHT bit although the session has DHT off: it advertises
# the bit whenever it was built with DHT support (it then ignores the peer's port message).
LT_RESERVED = "0000000000100005"


@pytest.mark.parametrize("mse", [False, True], ids=["plaintext", "mse"])
def test_libtorrent_default_policy(
    tmp_path: Path, start_process: StartProcess, *, mse: bool
) -> None:
    """libtorrent's default (pe_enabled in and out) accepts both handshakes."""
    torrent = make_torrent(tmp_path)
    seeder = start_libtorrent(start_process, tmp_path, torrent, enc_policy="enabled")
    got = dial(seeder, torrent, mse=mse)
    check_dialled(got, torrent, LIBTORRENT, reserved=LT_RESERVED)
    # Its extended handshake, then have_all (fast extension), maybe already an unchoke.
    check_message_ids(got, [EXTENDED, HAVE_ALL], then={UNCHOKE})
    if mse:
        check_mse(got)


def test_libtorrent_selects_plaintext_when_offered(
    tmp_path: Path, start_process: StartProcess
) -> None:
    """PREFER_ENCRYPTED provides RC4 and plaintext. libtorrent's default (allowed_enc_level both,
    prefer_rc4 off) then selects plaintext: the MSE handshake completes, and the BEP 3 handshake
    and all after it travel in the clear (our decrypt() is the identity)."""
    torrent = make_torrent(tmp_path)
    seeder = start_libtorrent(start_process, tmp_path, torrent, enc_policy="enabled")
    got = dial(seeder, torrent, mse=True, policy=EncryptionPolicy.PREFER_ENCRYPTED)
    assert got.mse is not None
    assert (got.mse.method, got.mse.via_mse) == ("plaintext", True)
    check_dialled(got, torrent, LIBTORRENT, reserved=LT_RESERVED)
    check_message_ids(got, [EXTENDED, HAVE_ALL], then={UNCHOKE})


def test_libtorrent_pe_forced(tmp_path: Path, start_process: StartProcess) -> None:
    """With in_enc_policy = pe_forced libtorrent still accepts our MSE handshake (RC4), and hangs
    up on a plaintext one."""
    torrent = make_torrent(tmp_path)
    seeder = start_libtorrent(start_process, tmp_path, torrent, enc_policy="forced")
    got = dial(seeder, torrent, mse=True)
    check_mse(got)
    check_dialled(got, torrent, LIBTORRENT, reserved=LT_RESERVED)
    check_message_ids(got, [EXTENDED, HAVE_ALL], then={UNCHOKE})
    expect_hang_up_on_plaintext(seeder, torrent)


# ----------------------------------------------------------------------------------------- aria2

# BEP 10 and fast; INTEROP.md's ...100005 is with its DHT on: with --enable-dht=false aria2 leaves
# the DHT bit clear.
ARIA2_RESERVED = "0000000000100004"


def _check_aria2(got: Dialled, torrent: SmallTorrent) -> None:
    check_dialled(got, torrent, ARIA2, reserved=ARIA2_RESERVED)
    # Its extended handshake, have_all, then allowed_fast (BEP 6, id 17) for some pieces.
    check_message_ids(got, [EXTENDED, HAVE_ALL], then={ALLOWED_FAST, UNCHOKE})


@pytest.mark.parametrize("mse", [False, True], ids=["plaintext", "mse"])
def test_aria2_crypto_optional(tmp_path: Path, start_process: StartProcess, *, mse: bool) -> None:
    """aria2's default (--bt-require-crypto=false) accepts both handshakes."""
    torrent = make_torrent(tmp_path)
    seeder = start_aria2(start_process, tmp_path, torrent, require_crypto=False)
    got = dial(seeder, torrent, mse=mse)
    _check_aria2(got, torrent)
    if mse:
        check_mse(got)


def test_aria2_require_crypto(tmp_path: Path, start_process: StartProcess) -> None:
    """--bt-require-crypto=true: aria2 accepts our MSE handshake (RC4) and hangs up on plaintext."""
    torrent = make_torrent(tmp_path)
    seeder = start_aria2(start_process, tmp_path, torrent, require_crypto=True)
    got = dial(seeder, torrent, mse=True)
    check_mse(got)
    _check_aria2(got, torrent)
    expect_hang_up_on_plaintext(seeder, torrent)


# -------------------------------------------------------------------------------------- rtorrent

# BEP 10 only: rakshasa libtorrent has no fast extension, and its DHT is off.
RTORRENT_RESERVED = "0000000000100000"


def _rtorrent_seeder(
    tmp_path: Path, start_process: StartProcess, encryption: str
) -> tuple[Seeder, SmallTorrent]:
    # rtorrent loads no torrent without a tracker: give it one where nothing listens (loopback;
    # its announces are refused).
    dead_tracker = f"http://127.0.0.1:{free_port()}/announce"
    torrent = make_torrent(tmp_path, trackers=(dead_tracker,))
    return start_rtorrent(start_process, tmp_path, torrent, encryption=encryption), torrent


def _check_rtorrent(got: Dialled, torrent: SmallTorrent) -> None:
    check_dialled(
        got,
        torrent,
        RTORRENT,
        reserved=RTORRENT_RESERVED,
    )
    # Its extended handshake, then a full bitfield: four pieces, spare bits clear.
    assert got.messages == [got.messages[0], (BITFIELD, b"\xf0")], got.messages
    assert got.messages[0][0] == EXTENDED


@pytest.mark.parametrize("mse", [False, True], ids=["plaintext", "mse"])
def test_rtorrent_allow_incoming(tmp_path: Path, start_process: StartProcess, *, mse: bool) -> None:
    """protocol.encryption.set = allow_incoming,try_outgoing,enable_retry: both handshakes."""
    seeder, torrent = _rtorrent_seeder(
        tmp_path, start_process, "allow_incoming,try_outgoing,enable_retry"
    )
    got = dial(seeder, torrent, mse=mse)
    _check_rtorrent(got, torrent)
    if mse:
        check_mse(got)


def test_rtorrent_require_rc4(tmp_path: Path, start_process: StartProcess) -> None:
    """protocol.encryption.set = allow_incoming,require,require_RC4: MSE with RC4 only."""
    seeder, torrent = _rtorrent_seeder(
        tmp_path, start_process, "allow_incoming,require,require_RC4"
    )
    got = dial(seeder, torrent, mse=True)
    check_mse(got)
    _check_rtorrent(got, torrent)
    expect_hang_up_on_plaintext(seeder, torrent)


# ----------------------------------------------------------------------------------- qBittorrent

# libtorrent 2.0 inside: BEP 10, fast, and the DHT bit (see LT_RESERVED).
QBT_RESERVED = "0000000000100005"


@pytest.mark.parametrize("mse", [False, True], ids=["plaintext", "mse"])
def test_qbittorrent(tmp_path: Path, start_process: StartProcess, *, mse: bool) -> None:
    """qBittorrent's default encryption mode ("allow") accepts both handshakes."""
    torrent = make_torrent(tmp_path)
    seeder = start_qbittorrent(start_process, tmp_path, torrent)
    got = dial(seeder, torrent, mse=mse)
    check_dialled(
        got,
        torrent,
        QBITTORRENT,
        reserved=QBT_RESERVED,
    )
    check_message_ids(got, [EXTENDED, HAVE_ALL], then={UNCHOKE})
    if mse:
        check_mse(got)
