"""uTP against Transmission 3.00, whose uTP is libutp (the reference implementation, also in
uTorrent), both ways, at the Handshaker level.

Transmission never dials loopback peers (INTEROP.md): in every test our side dials it over
uTP, from its own 127.0.0.X, and Transmission runs only inside a loopback-only network
namespace (``require_loopback_namespace``; CI runs everything in one).

- It seeds and we download every piece over uTP alone (a :class:`PeerDialer` with TCP off),
  with MSE required (RC4 over uTP): libutp's sender against our receiver.
- We seed and it downloads the torrent, in plaintext, until its RPC reports 100% and its file
  equals ours: our sender against libutp's receiver, with no retransmission timeout.
- Our connection starts at the 1232-byte floor and probes the path MTU with full DATA packets
  padded by an extension of a type nobody knows (``PADDING_EXTENSION``, 0x50), placed first
  in the chain. libtorrent skips it; libutp does not: it takes a datagram for uTP v1 only when
  the header's extension byte is below 3 (``UTP_Version`` in utp_internal.cpp, ``UTP_IsV1``
  in the older utp.cpp Transmission 3.00 embeds), and walks unknown types only further along
  the chain. Transmission's libutp reads our probe as a uTP v0 packet (23-byte header, the
  first four bytes its connection id), finds no such connection and answers with a v0 RESET
  (23 bytes, which we count as invalid); newer libutp drops it silently. Each probe is lost,
  resent unpadded after the selective acks behind it, and the MTU stays at the floor: the
  probe test is marked as an expected failure (strict) until our probes lead with an
  extension libutp accepts first. Measured here with the padding behind an "extension bits"
  extension (type 2, which libutp requires to be exactly 8 bytes, and libtorrent skips), all
  eight probes were acked and the MTU reached 1472.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
import trio

from bip_handshake import EncryptionPolicy, Extensions, PeerAddress, PeerId
from bip_handshake._dialers import PeerDialer
from bip_handshake._handshaker import CompletedHandshake, open_handshaker
from bip_handshake._utp_config import UtpConfig
from bip_handshake._utp_connection import UtpConnectionStatistics
from bip_handshake._utp_socket import UtpStatistics, open_utp_socket
from bip_handshake._utp_stream import UtpStream
from bip_metainfo import Info, create_torrent
from bip_peer._messages import (
    NEED_DATA,
    Bitfield,
    Choke,
    HaveAll,
    Interested,
    MessageDecoder,
    Piece,
    RejectRequest,
    Request,
    Unchoke,
)

from ._bip_transmission import (
    TransmissionLeecher,
    start_transmission,
    start_transmission_leecher,
)
from ._helpers import RunningProcess, StartProcess, running_process
from ._seeders import SmallTorrent

pytestmark = pytest.mark.interop

# Transmission keys peers by IP and never dials 127/8: it and we each get our own address.
TRANSMISSION_HOST = "127.0.0.31"
OUR_HOST = "127.0.0.32"
TRANSMISSION_PEER_ID = b"-TR3000-"
BLOCK = 16 * 1024
PIECE_LENGTH = 256 * 1024
# Transmission unchokes a new peer only at its 10 s rechoke and seeds slowly on loopback
# (INTEROP.md): a small torrent for it to seed. As a downloader it is quick, and the MTU
# search needs a few round trips of full windows: a larger one for it to download.
SEED_SIZE = 2 * 1024 * 1024 + 12_345
LEECH_SIZE = 8 * 1024 * 1024 + 4321
PIPELINE = 64
"""Requests we keep outstanding at most (Transmission advertises reqq 512)."""
FLOOR = UtpConfig().min_datagram
CEILING_V4 = UtpConfig().max_datagram_v4


def make_payload_torrent(workdir: Path, size: int) -> tuple[SmallTorrent, Info, bytes]:
    """``workdir/content/payload.bin`` of `size` random bytes and its v1 torrent (no tracker:
    peers are dialled directly)."""
    content = workdir / "content"
    content.mkdir(parents=True)
    payload = random.Random(size).randbytes(size)
    (content / "payload.bin").write_bytes(payload)
    metainfo = create_torrent(
        content / "payload.bin",
        version="v1",
        piece_length=PIECE_LENGTH,
        creation_date=None,
        created_by=None,
    )
    torrent_path = workdir / "payload.torrent"
    torrent_path.write_bytes(metainfo.to_bytes())
    info = metainfo.info
    return SmallTorrent(torrent_path, content, info.info_hash), info, payload


def blocks_of(info: Info) -> list[tuple[int, int, int]]:
    """Every block request of the torrent, in piece order."""
    return [
        (index, begin, min(BLOCK, info.piece_size(index) - begin))
        for index in range(info.num_pieces)
        for begin in range(0, info.piece_size(index), BLOCK)
    ]


async def download(peer: CompletedHandshake, info: Info) -> bytes:
    """Download every piece from `peer` (interested, then up to PIPELINE requests outstanding
    while unchoked; rejected requests are asked again); return the torrent's bytes, each piece
    checked against its hash."""
    decoder = MessageDecoder(max_block_length=BLOCK, num_pieces=info.num_pieces)
    decoder.receive_data(peer.trailing)
    stream = peer.stream
    await stream.send_all(Interested().encode())
    pending = deque(blocks_of(info))
    outstanding: set[tuple[int, int, int]] = set()
    data = bytearray(info.total_size)
    unchoked = False
    while pending or outstanding:
        if unchoked and pending and len(outstanding) < PIPELINE:
            batch = []
            while pending and len(outstanding) < PIPELINE:
                request = pending.popleft()
                outstanding.add(request)
                batch.append(Request(*request).encode())
            await stream.send_all(b"".join(batch))
        message = decoder.next_message()
        if message is NEED_DATA:
            received = await stream.receive_some()
            assert received, "Transmission closed the uTP connection"
            decoder.receive_data(received)
        elif isinstance(message, Unchoke):
            unchoked = True
        elif isinstance(message, Choke):
            unchoked = False  # BEP 6: our requests stand until served or rejected
        elif isinstance(message, RejectRequest):
            request = (message.index, message.begin, message.length)
            if request in outstanding:
                outstanding.discard(request)
                pending.appendleft(request)
        elif isinstance(message, Piece):
            request = (message.index, message.begin, len(message.block))
            assert request in outstanding, f"a block we did not ask for: {request}"
            outstanding.discard(request)
            start = message.index * info.piece_length + message.begin
            data[start : start + len(message.block)] = message.block
    for index in range(info.num_pieces):
        start = index * info.piece_length
        piece = data[start : start + info.piece_size(index)]
        assert hashlib.sha1(piece).digest() == info.piece_hash(index), f"piece {index}"
    return bytes(data)


async def test_we_download_from_transmission_over_utp(
    tmp_path: Path, start_process: StartProcess
) -> None:
    torrent, info, payload = make_payload_torrent(tmp_path, SEED_SIZE)
    seeder = start_transmission(start_process, tmp_path, torrent, host=TRANSMISSION_HOST, utp=True)
    address = PeerAddress(IPv4Address(seeder.host), seeder.port)
    async with (
        open_utp_socket((OUR_HOST, 0)) as utp,
        open_handshaker(
            listen=[],
            dial=PeerDialer(tcp=False, utp=[utp]),
            extensions=Extensions.FAST | Extensions.EXTENSION_PROTOCOL,
            encryption=EncryptionPolicy.REQUIRE_ENCRYPTED,
            handshake_timeout=10,
            connect_timeout=10,
        ) as handshaker,
    ):
        handshaker.register(torrent.info_hash)
        assert handshaker.connect(torrent.info_hash, address)
        with trio.fail_after(10):
            peer = await handshaker.completed().receive()
        try:
            assert peer.transport == "utp"
            assert peer.direction == "outbound"
            assert peer.encryption == "rc4"  # MSE over uTP, libutp carrying it
            assert peer.peer_id.value.startswith(TRANSMISSION_PEER_ID)
            # Its unchoke waits for its 10 s rechoke; then about 2 MiB.
            with trio.fail_after(25):
                data = await download(peer, info)
        finally:
            await peer.aclose()
        stats = utp.statistics()
    assert data == payload
    assert stats.connects == 1
    assert stats.connect_failures == 0
    assert stats.bytes_received >= len(payload)


@dataclass
class Served:
    """What :func:`serve` sent so far."""

    payload_bytes: int = 0
    blocks: int = 0


async def serve(peer: CompletedHandshake, info: Info, payload: bytes, served: Served) -> None:
    """Seed `payload` to `peer` (have-all or a full bitfield, unchoke, every request answered,
    counted in `served`) until it hangs up: Transmission drops a seed once it has every piece
    (two seeds have nothing to trade)."""
    decoder = MessageDecoder(num_pieces=info.num_pieces)
    decoder.receive_data(peer.trailing)
    stream = peer.stream
    if peer.common & Extensions.FAST:
        have = HaveAll().encode()
    else:
        bits = bytearray(-(-info.num_pieces // 8))
        for index in range(info.num_pieces):
            bits[index // 8] |= 0x80 >> (index % 8)
        have = Bitfield(bytes(bits)).encode()
    await stream.send_all(have + Unchoke().encode())
    while True:
        message = decoder.next_message()
        if message is NEED_DATA:
            received = await stream.receive_some()
            if not received:
                return
            decoder.receive_data(received)
        elif isinstance(message, Request):
            assert message.begin + message.length <= info.piece_size(message.index)
            start = message.index * info.piece_length + message.begin
            block = payload[start : start + message.length]
            await stream.send_all(Piece(message.index, message.begin, block).encode())
            served.payload_bytes += len(block)
            served.blocks += 1


async def wait_complete(leecher: TransmissionLeecher, payload: bytes) -> None:
    """Until Transmission reports 100% and its copy (renamed from ``.part`` once complete)
    equals `payload`; the RPC runs in a thread so that our uTP keeps running meanwhile."""
    copy = leecher.download_dir / "payload.bin"
    while await trio.to_thread.run_sync(leecher.percent_done) < 100.0:
        await trio.sleep(0.2)
    while not (copy.exists() and copy.read_bytes() == payload):
        await trio.sleep(0.1)


@dataclass(frozen=True)
class Upload:
    """What :func:`transmission_downloads_from_us` saw."""

    served: Served
    connection: UtpConnectionStatistics
    """The statistics of our uTP connection to Transmission, once it has everything."""
    socket: UtpStatistics


async def upload_to(
    leecher: TransmissionLeecher, torrent: SmallTorrent, info: Info, payload: bytes
) -> Upload:
    """Dial `leecher` over uTP, in plaintext, and seed `payload` to it until its RPC reports
    100% and its copy equals ours."""
    address = PeerAddress(IPv4Address(leecher.host), leecher.port)
    streams: list[UtpStream] = []
    served = Served()
    async with open_utp_socket((OUR_HOST, 0)) as utp:

        async def dial(target: PeerAddress) -> trio.abc.Stream:
            # The uTP stream itself (the Handshaker's is the same in plaintext): its
            # statistics are the connection's.
            stream = await utp.connect(target)
            streams.append(stream)
            return stream

        async with open_handshaker(
            peer_id=PeerId(b"-BP0100-utptransmiss"),
            listen=[],
            dial=dial,
            extensions=Extensions.FAST | Extensions.EXTENSION_PROTOCOL,
            encryption=EncryptionPolicy.PLAINTEXT_ONLY,
            handshake_timeout=10,
            connect_timeout=10,
        ) as handshaker:
            handshaker.register(torrent.info_hash)
            assert handshaker.connect(torrent.info_hash, address)
            with trio.fail_after(10):
                peer = await handshaker.completed().receive()
            try:
                assert peer.transport == "utp"
                assert peer.peer_id.value.startswith(TRANSMISSION_PEER_ID)
                # Its interest waits for its 10 s rechoke; then about 3 s.
                with trio.fail_after(20):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(serve, peer, info, payload, served)
                        await wait_complete(leecher, payload)
                        nursery.cancel_scope.cancel()
                connection = streams[0].statistics()
            finally:
                await peer.aclose()
        socket = utp.statistics()
    assert len(streams) == 1
    return Upload(served, connection, socket)


@pytest.fixture(scope="module")
def upload(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upload]:
    """Transmission, a leecher with uTP on, downloads LEECH_SIZE bytes from us; once for the
    tests of the transfer and of the MTU probes (each run waits for its 10 s rechoke)."""
    workdir = tmp_path_factory.mktemp("transmission-upload")
    with contextlib.ExitStack() as stack:

        def start(
            argv: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None, **options: Any
        ) -> RunningProcess:
            # The module's own start_process: stopped by PID when the module's tests are over.
            return stack.enter_context(
                running_process(argv, cwd=workdir if cwd is None else cwd, **options)
            )

        torrent, info, payload = make_payload_torrent(workdir, LEECH_SIZE)
        leecher = start_transmission_leecher(
            start, workdir, torrent, host=TRANSMISSION_HOST, utp=True
        )
        yield trio.run(upload_to, leecher, torrent, info, payload)


def test_transmission_downloads_from_us_over_utp(upload: Upload) -> None:
    assert upload.served.payload_bytes >= LEECH_SIZE
    # Nothing stalled: no retransmission timeout, no datagram refused by the system or
    # dropped from our send queue. (A probe libutp drops is resent at once, unpadded, after
    # the selective acks of the packets behind it: no timeout.)
    assert upload.connection.timeouts == 0
    assert upload.socket.too_big == 0
    assert upload.socket.datagrams_dropped == 0
    assert upload.connection.mtu_probes >= 1


def test_libutp_acks_our_mtu_probes(upload: Upload) -> None:
    connection = upload.connection
    # Probes were sent and libutp acked them: the search climbed from the floor to the IPv4
    # ceiling (loopback carries far more, so none is lost on the way), and no data packet
    # had to go twice.
    assert connection.mtu_probes >= 1
    assert connection.mtu_probes_lost == 0
    assert connection.mtu > FLOOR
    assert connection.mtu == CEILING_V4
    assert connection.retransmits == 0
    # libutp answered nothing we could not parse (its v0 RESET to a probe it misread).
    assert upload.socket.invalid_datagrams == 0
