"""Start real clients as downloaders that dial a peer we name, for tests of inbound handshakes.

Each ``start_*`` function starts one client through the ``start_process`` fixture (stopped by PID
at teardown) with LSD, UPnP, NAT-PMP and DHT off as ../shared/INTEROP.md says, with an empty save
directory, so it wants the torrent and dials the peer it is told about (libtorrent), is given
(qBittorrent), or finds through the torrent's tracker (aria2). The launchers are the shared ones of
_seeders.py.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from bip_handshake import (
    CompletedHandshake,
    EncryptionPolicy,
    Extensions,
    Handshaker,
    PeerId,
    open_handshaker,
)

from ._helpers import StartProcess, udp_request, wait_for
from ._seeders import (
    HOST,
    Identity,
    QBittorrent,
    SmallTorrent,
    launch_qbittorrent,
    run_lt_peer,
    start_aria2_process,
)

__all__ = [
    "EXTENDED",
    "HOST",
    "OUR_EXTENSIONS",
    "announce_udp",
    "check_handshake",
    "expect_inbound",
    "first_message_id",
    "listening_handshaker",
    "start_aria2_downloader",
    "start_libtorrent_downloader",
    "start_qbittorrent_downloader",
]

# -- libtorrent ------------------------------------------------------------------------------------


def start_libtorrent_downloader(
    start_process: StartProcess,
    workdir: Path,
    torrent: SmallTorrent,
    peer_port: int | None,
    *,
    enc_policy: str = "enabled",
    lifetime: float = 60.0,
) -> dict[str, Any]:
    """libtorrent 2.1 downloading `torrent` into ``workdir/lt-download`` (created empty), told to
    dial ``127.0.0.1:peer_port`` (None: no peer, it finds them through the torrent's tracker);
    returns what it wrote in its ready file (port, peer id prefix, encryption settings, state)
    once it listens, has checked its (empty) directory and has called ``connect_peer``."""
    save = workdir / "lt-download"
    save.mkdir(parents=True)
    return run_lt_peer(
        start_process,
        workdir,
        torrent.torrent_path,
        save,
        peer=None if peer_port is None else (HOST, peer_port),
        enc_policy=enc_policy,
        alert_tracker=peer_port is None,
        lifetime=lifetime,
        name="libtorrent-downloader",
    )


# -- qBittorrent -----------------------------------------------------------------------------------


def start_qbittorrent_downloader(
    start_process: StartProcess, workdir: Path, torrent: SmallTorrent
) -> QBittorrent:
    """qbittorrent-nox 4.5.2 with `torrent` added (no data) over its Web API."""
    client, _ = launch_qbittorrent(start_process, workdir)
    save = workdir / "qbt-download"
    save.mkdir()
    client.add_torrent(torrent, save)
    wait_for(
        lambda: client.has_torrent(torrent.v1.hex()),
        15,
        interval=0.2,
        what="qBittorrent has the torrent",
    )
    return client


# -- our side: a listening Handshaker and the checks of what dials it ----------------------------

OUR_EXTENSIONS = Extensions.EXTENSION_PROTOCOL | Extensions.FAST
EXTENDED = 20  # BEP 10's message id


@asynccontextmanager
async def listening_handshaker(
    torrent: SmallTorrent, encryption: EncryptionPolicy, peer_id: PeerId, *, host: str = HOST
) -> AsyncIterator[tuple[Handshaker, int]]:
    """Our Handshaker listening on a free port of `host` (BEP 10 and fast extension bits), with
    `torrent` registered; yields it and the port."""
    async with open_handshaker(
        peer_id=peer_id,
        listen=[(host, 0)],
        extensions=OUR_EXTENSIONS,
        encryption=encryption,
        handshake_timeout=10,
    ) as handshaker:
        handshaker.register(torrent.info_hash)
        (listening,) = handshaker.listen_addresses
        yield handshaker, listening.port


def check_handshake(
    peer: CompletedHandshake,
    torrent: SmallTorrent,
    *,
    direction: str,
    identity: Identity,
    extensions: Extensions,
) -> None:
    """`peer` completed in `direction` for `torrent` with a client on 127.0.0.1 whose peer id
    names `identity`; it set at least the `extensions` bits, and we set
    :data:`OUR_EXTENSIONS`."""
    assert peer.direction == direction
    assert peer.info_hash == torrent.info_hash
    assert peer.swarm_id == torrent.v1
    info = peer.peer_id.client
    assert info is not None, peer.peer_id
    assert (info.name, info.version) == (identity.name, identity.version)
    assert peer.peer_id.value.startswith(identity.prefix), peer.peer_id
    assert str(peer.address.host) == HOST
    assert extensions in peer.extensions, peer.extensions
    assert peer.our_extensions == OUR_EXTENSIONS


async def expect_inbound(
    handshaker: Handshaker,
    torrent: SmallTorrent,
    identity: Identity,
    *,
    extensions: Extensions,
    encryption: str,
    timeout: float,
) -> CompletedHandshake:
    """The first handshake completed on `handshaker` within `timeout` seconds, checked: inbound
    (the rest as :func:`check_handshake` says), over `encryption` (``rc4`` or ``plaintext``), and
    first sending the extended handshake (BEP 10). The connection is closed on return."""
    with trio.fail_after(timeout):
        peer = await handshaker.completed().receive()
    try:
        check_handshake(
            peer,
            torrent,
            direction="inbound",
            identity=identity,
            extensions=extensions,
        )
        assert peer.encryption == encryption
        # The stream carries its first message, decrypted: the extended handshake (BEP 10).
        assert await first_message_id(peer) == EXTENDED
    finally:
        await peer.aclose()
    return peer


# -- what a peer sends first -----------------------------------------------------------------------


async def first_message_id(peer: CompletedHandshake) -> int:
    """The id of the first non-keepalive message on the stream after the handshake."""
    data = peer.trailing
    with trio.fail_after(10):
        while True:
            while len(data) >= 4 and data[:4] == bytes(4):
                data = data[4:]  # keep-alive
            if len(data) >= 5:
                assert 0 < int.from_bytes(data[:4], "big") < 1 << 20, data[:16].hex()
                return data[4]
            chunk = await peer.stream.receive_some()
            assert chunk, "the peer closed the connection"
            data += chunk


# -- a UDP tracker announce (BEP 15) ---------------------------------------------------------------


def announce_udp(
    tracker: tuple[str, int],
    info_hash: bytes,
    peer_id: bytes,
    port: int,
    *,
    left: int,
    source: str = HOST,
) -> bytes:
    """Announce ``source:port`` (event started) to a UDP tracker; return the compact peers.

    The tracker records the address the datagram comes from, so ``source`` (any
    127.0.0.X) is the address other peers are told to dial.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        tid = int.from_bytes(os.urandom(4), "big")
        reply = udp_request(
            sock,
            struct.pack(">QII", 0x41727101980, 0, tid),
            tracker,
            accept=lambda r: r[4:8] == tid.to_bytes(4, "big"),
        )
        assert len(reply) == 16, reply.hex()
        connection_id = struct.unpack(">Q", reply[8:16])[0]
        tid = int.from_bytes(os.urandom(4), "big")
        request = struct.pack(
            ">QII20s20sQQQIIIiH",
            connection_id,
            1,
            tid,
            info_hash,
            peer_id,
            0,
            left,
            0,
            2,  # started
            0,
            0x4242,
            -1,
            port,
        )
        reply = udp_request(
            sock, request, tracker, accept=lambda r: r[4:8] == tid.to_bytes(4, "big")
        )
        assert len(reply) >= 20, reply.hex()
        return reply[20:]


# -- aria2 -----------------------------------------------------------------------------------------


def start_aria2_downloader(
    start_process: StartProcess, workdir: Path, torrent: SmallTorrent
) -> None:
    """aria2c downloading `torrent` (which names a ``udp://127.0.0.1`` tracker) into
    ``workdir/aria2-download`` (created empty); its DHT is on only so that it announces to UDP
    trackers (see _seeders.aria2_loopback_options)."""
    start_aria2_process(
        start_process, workdir, torrent, download_to=workdir / "aria2-download", udp_trackers=True
    )
