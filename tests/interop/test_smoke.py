"""Smoke tests: the interop machinery can start each kind of client and talk to it on loopback.

The packets here are built by hand with struct; the real codecs come with their packages.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
from pathlib import Path

import pytest

from ._helpers import (
    StartProcess,
    recv_exactly,
    start_opentracker,
    udp_request,
)
from ._seeders import start_libtorrent_hybrid

pytestmark = pytest.mark.interop

HERE = Path(__file__).parent
PSTR = b"\x13BitTorrent protocol"
OUR_PEER_ID = b"-BP0001-" + bytes(range(12))


def handshake(info_hash: bytes, peer_id: bytes = OUR_PEER_ID, reserved: bytes = bytes(8)) -> bytes:
    assert len(info_hash) == 20
    assert len(peer_id) == 20
    return PSTR + reserved + info_hash + peer_id


def test_libtorrent_answers_a_handshake(tmp_path: Path, start_process: StartProcess) -> None:
    info = start_libtorrent_hybrid(start_process, tmp_path / "libtorrent")
    port = int(info["port"])
    assert info["port"] == port
    info_hash = bytes.fromhex(info["info_hash"])

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(handshake(info_hash))
        reply = recv_exactly(sock, 68, timeout=5)
    assert reply[:20] == PSTR
    reserved = reply[20:28]
    assert reserved[5] & 0x10, f"no BEP 10 extension bit in {reserved.hex()}"
    assert reserved[7] & 0x04, f"no fast extension bit in {reserved.hex()}"
    assert reply[28:48] == info_hash
    assert reply[48:56] == info["peer_id_prefix"].encode()
    assert reply[48:51] == b"-LT"

    # A torrent it does not have: it hangs up instead of answering.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(handshake(hashlib.sha1(b"not this torrent").digest()))
        with pytest.raises((EOFError, ConnectionResetError)):
            recv_exactly(sock, 68, timeout=5)


UDP_PROTOCOL_ID = 0x41727101980
ACTION_CONNECT, ACTION_ANNOUNCE = 0, 1
EVENT_STARTED = 2


def announce_request(
    connection_id: int, transaction_id: int, info_hash: bytes, port: int, left: int
) -> bytes:
    # BEP 15: connection_id, action, transaction_id, info_hash, peer_id, downloaded, left,
    # uploaded, event, ip, key, num_want, port.
    return struct.pack(
        ">QII20s20sQQQIIIiH",
        connection_id,
        ACTION_ANNOUNCE,
        transaction_id,
        info_hash,
        OUR_PEER_ID,
        0,
        left,
        0,
        EVENT_STARTED,
        0,
        0x1234,
        -1,
        port,
    )


def test_opentracker_answers_udp_connect_and_announce(
    tmp_path: Path, start_process: StartProcess
) -> None:
    info_hash = hashlib.sha1(b"bip interop smoke").digest()
    # It waits until the whitelist is loaded: see start_opentracker.
    server = start_opentracker(start_process, tmp_path / "opentracker", [info_hash])
    tracker = (server.host, server.port)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        our_port: int = sock.getsockname()[1]

        tid = int.from_bytes(os.urandom(4), "big")
        reply = udp_request(
            sock,
            struct.pack(">QII", UDP_PROTOCOL_ID, ACTION_CONNECT, tid),
            tracker,
            accept=lambda r: r[4:8] == tid.to_bytes(4, "big"),
        )
        assert len(reply) == 16
        action, reply_tid, connection_id = struct.unpack(">IIQ", reply)
        assert (action, reply_tid) == (ACTION_CONNECT, tid)

        tid = int.from_bytes(os.urandom(4), "big")
        reply = udp_request(
            sock,
            announce_request(connection_id, tid, info_hash, our_port, left=1000),
            tracker,
            accept=lambda r: r[4:8] == tid.to_bytes(4, "big"),
        )
        assert len(reply) >= 20, reply.hex()
        action, reply_tid, interval, leechers, seeders = struct.unpack(">IIIII", reply[:20])
        assert (action, reply_tid) == (ACTION_ANNOUNCE, tid)
        assert interval > 0
        assert (leechers, seeders) == (1, 0)
        # It returns the announcing peer to itself (see INTEROP.md).
        assert reply[20:] == socket.inet_aton("127.0.0.1") + our_port.to_bytes(2, "big")

        # A torrent that is not on the whitelist gets an 8-byte reply: action and transaction id
        # only, no error message.
        tid = int.from_bytes(os.urandom(4), "big")
        other = hashlib.sha1(b"not whitelisted").digest()
        reply = udp_request(
            sock,
            announce_request(connection_id, tid, other, our_port, left=1000),
            tracker,
            accept=lambda r: r[4:8] == tid.to_bytes(4, "big"),
        )
        assert reply == struct.pack(">II", ACTION_ANNOUNCE, tid)


@pytest.mark.parametrize("client", ["mktorrent"], indirect=True)
def test_client_fixture_finds_a_binary(client: str) -> None:
    assert Path(client).is_file()
    assert os.access(client, os.X_OK)
