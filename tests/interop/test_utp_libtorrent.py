"""uTP against libtorrent 2.1 with TCP off: we dial it and fetch blocks; it dials us, and
downloads the torrent from us."""

from __future__ import annotations

import json
import os
import sys
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
import trio

from bip_handshake import EncryptionPolicy, Extensions, PeerAddress, PeerId
from bip_handshake._handshaker import CompletedHandshake, open_handshaker
from bip_handshake._utp_socket import UtpSocket, open_utp_socket
from bip_peer._messages import (
    NEED_DATA,
    Bitfield,
    Interested,
    MessageDecoder,
    Piece,
    Request,
    Unchoke,
)

from ._helpers import StartProcess, file_exists, free_port, require_client
from ._seeders import HOST, SmallTorrent, make_torrent

pytestmark = pytest.mark.interop

_LT_UTP = Path(__file__).with_name("_lt_utp.py")
BLOCK = 16 * 1024
# libtorrent's uTP is slow on loopback (INTEROP.md): the torrent is ~96 KiB, a few blocks.


def start_libtorrent_utp(
    start_process: StartProcess,
    workdir: Path,
    torrent: SmallTorrent,
    *,
    peer: PeerAddress | None = None,
    download_to: Path | None = None,
) -> dict[str, Any]:
    """_lt_utp.py seeding `torrent` over uTP only (or downloading it into `download_to`, the
    ready file's ``done`` naming the file it writes once complete); with `peer`, it dials that
    address."""
    require_client("libtorrent")
    port = free_port(HOST, tcp=True, udp=True)  # UDP for uTP; TCP too, as libtorrent binds both
    ready = workdir / "lt-utp-ready.json"
    argv: list[str | os.PathLike[str]] = [sys.executable, _LT_UTP, "--port", str(port)]
    argv += ["--torrent", torrent.torrent_path, "--ready", ready, "--lifetime", "60"]
    done = workdir / "lt-utp-done.json"
    if download_to is None:
        argv += ["--save-path", torrent.content_dir]
    else:
        download_to.mkdir(parents=True)
        argv += ["--save-path", download_to, "--download", "--done", done]
    if peer is not None:
        argv += ["--peer", f"{peer.host}:{peer.port}"]
    start_process(argv, cwd=workdir, ready=file_exists(ready), ready_timeout=20, name="lt-utp")
    info: dict[str, Any] = json.loads(ready.read_text())
    assert info["port"] == port, info
    info["done"] = str(done)
    return info


async def fetch_blocks(
    peer: CompletedHandshake, requests: list[tuple[int, int, int]]
) -> dict[tuple[int, int], bytes]:
    """Send interested, wait for unchoke, request `requests`, return the blocks received."""
    decoder = MessageDecoder()
    decoder.receive_data(peer.trailing)
    stream = peer.stream
    await stream.send_all(Interested().encode())
    unchoked = False
    blocks: dict[tuple[int, int], bytes] = {}
    while len(blocks) < len(requests):
        message = decoder.next_message()
        if message is NEED_DATA:
            data = await stream.receive_some()
            assert data, "libtorrent closed the uTP connection"
            decoder.receive_data(data)
            continue
        if isinstance(message, Unchoke) and not unchoked:
            unchoked = True
            await stream.send_all(b"".join(Request(*r).encode() for r in requests))
        elif isinstance(message, Piece):
            blocks[(message.index, message.begin)] = bytes(message.block)
    return blocks


@pytest.mark.parametrize(
    "encryption",
    [EncryptionPolicy.PLAINTEXT_ONLY, EncryptionPolicy.REQUIRE_ENCRYPTED],
    ids=["plaintext", "mse"],
)
async def test_we_dial_libtorrent_over_utp(
    encryption: EncryptionPolicy, tmp_path: Path, start_process: StartProcess
) -> None:
    torrent = make_torrent(tmp_path)
    info = start_libtorrent_utp(start_process, tmp_path, torrent)
    seed = PeerAddress(IPv4Address(HOST), int(info["port"]))
    payload = (torrent.content_dir / "payload.bin").read_bytes()
    piece_length = 32 * 1024
    requests = [(0, 0, BLOCK), (0, BLOCK, BLOCK), (2, BLOCK, BLOCK), (3, 0, len(payload) % BLOCK)]
    async with (
        open_utp_socket((HOST, 0)) as utp,
        open_handshaker(
            listen=[],
            dial=utp.connect,
            extensions=Extensions.FAST | Extensions.EXTENSION_PROTOCOL,
            encryption=encryption,
            handshake_timeout=15,
            connect_timeout=10,
        ) as handshaker,
    ):
        handshaker.register(torrent.info_hash)
        assert handshaker.connect(torrent.info_hash, seed)
        with trio.fail_after(30):
            peer = await handshaker.completed().receive()
        try:
            assert peer.direction == "outbound"
            assert peer.peer_id.value.startswith(info["peer_id_prefix"].encode())
            # MSE (RC4 when we require it) works over uTP too.
            required = encryption is EncryptionPolicy.REQUIRE_ENCRYPTED
            assert peer.encryption == ("rc4" if required else "plaintext")
            with trio.fail_after(30):
                blocks = await fetch_blocks(peer, requests)
        finally:
            await peer.aclose()
        for index, begin, length in requests:
            start = index * piece_length + begin
            assert blocks[(index, begin)] == payload[start : start + length]
        stats = utp.statistics()
        assert stats.connects == 1
        assert stats.connect_failures == 0
        assert stats.bytes_received >= sum(length for *_, length in requests)


async def serve(peer: CompletedHandshake, payload: bytes, piece_length: int, done: Path) -> int:
    """Seed `payload` to `peer` (a bitfield of every piece, unchoke, answer requests) until
    `done` exists or the peer hangs up (a complete libtorrent drops a seed); return the bytes
    served."""
    num_pieces = -(-len(payload) // piece_length)
    bits = bytearray((num_pieces + 7) // 8)
    for index in range(num_pieces):
        bits[index // 8] |= 0x80 >> (index % 8)
    decoder = MessageDecoder()
    decoder.receive_data(peer.trailing)
    await peer.stream.send_all(Bitfield(bytes(bits)).encode() + Unchoke().encode())
    served = 0
    while not done.exists():
        message = decoder.next_message()
        if message is NEED_DATA:
            with trio.move_on_after(0.1):
                data = await peer.stream.receive_some()
                if not data:
                    break
                decoder.receive_data(data)
        elif isinstance(message, Request):
            start = message.index * piece_length + message.begin
            block = payload[start : start + message.length]
            await peer.stream.send_all(Piece(message.index, message.begin, block).encode())
            served += len(block)
    return served


async def test_libtorrent_dials_us_over_utp(tmp_path: Path, start_process: StartProcess) -> None:
    torrent = make_torrent(tmp_path)
    payload = (torrent.content_dir / "payload.bin").read_bytes()
    async with (
        open_utp_socket((HOST, 0)) as utp,
        open_handshaker(
            peer_id=PeerId(b"-BP0100-utputputputp"),
            listen=[],
            extensions=Extensions.FAST | Extensions.EXTENSION_PROTOCOL,
            encryption=EncryptionPolicy.PREFER_ENCRYPTED,
            handshake_timeout=15,
        ) as handshaker,
    ):
        handshaker.register(torrent.info_hash)

        async def accept(socket: UtpSocket) -> None:
            async for stream in socket.incoming():
                handshaker.accept_stream(stream, stream.remote_address)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept, utp)
            downloads = tmp_path / "downloads"
            info = start_libtorrent_utp(
                start_process, tmp_path, torrent, peer=utp.local_address, download_to=downloads
            )
            with trio.fail_after(30):
                peer = await handshaker.completed().receive()
            try:
                assert peer.direction == "inbound"
                assert peer.info_hash == torrent.info_hash
                assert peer.peer_id.value.startswith(info["peer_id_prefix"].encode())
                assert peer.address.port == int(info["port"])
                # libtorrent downloads the whole torrent from us over uTP (its SACKs and
                # window updates drive our sender).
                with trio.fail_after(40):
                    served = await serve(peer, payload, 32 * 1024, Path(info["done"]))
            finally:
                await peer.aclose()
            nursery.cancel_scope.cancel()
        assert served >= len(payload)
        with trio.fail_after(10):
            while not Path(info["done"]).exists():
                await trio.sleep(0.05)
            # flush_cache is asynchronous: wait for the file to be written out.
            while (downloads / "payload.bin").read_bytes() != payload:
                await trio.sleep(0.05)
        assert utp.statistics().accepted >= 1
