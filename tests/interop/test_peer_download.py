"""Download a 64 MiB torrent through PeerManager from libtorrent, qBittorrent, aria2, rtorrent and
ctorrent, checking every piece's SHA-1.

One file of seeded random bytes (64 MiB, 256 KiB pieces, a dead loopback tracker for rtorrent) is
generated once for the module and seeded by each client in turn. Our side dials the seeder with a
bip_handshake Handshaker (BEP 10 and fast extension bits; plaintext), hands the completed
handshake to a PeerManager and runs a simple sequential requester on its events: interested,
then up to ``IN_FLIGHT`` block requests outstanding, pieces assembled in order and hashed as they
complete. Chokes, rejects (BEP 6) and pieces the seeder does not have yet are handled, since
rtorrent and ctorrent may still be checking their data when we connect. libtorrent is tried
twice: in plaintext, and with MSE required on both sides (RC4 through bip_handshake's
MSEStream).
"""

from __future__ import annotations

import functools
import hashlib
from collections import deque
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from bip_handshake import (
    CompletedHandshake,
    EncryptionPolicy,
    Extensions,
    PeerAddress,
    PeerId,
    open_handshaker,
)
from bip_peer._manager import (
    MessageReceived,
    Peer,
    PeerAdded,
    PeerManager,
    PeerManagerConfig,
    PeerRemoved,
    open_peer_manager,
)
from bip_peer._messages import (
    BLOCK_SIZE,
    Choke,
    Interested,
    Piece,
    RejectRequest,
    Request,
    Unchoke,
)

from ._helpers import StartProcess
from ._peer_seeders import BigTorrent, make_big_torrent, start_ctorrent
from ._seeders import (
    Seeder,
    SmallTorrent,
    dial_until_complete,
    start_aria2,
    start_libtorrent,
    start_qbittorrent,
    start_rtorrent,
)

pytestmark = pytest.mark.interop

SIZE = 64 * 1024 * 1024
PIECE_LENGTH = 256 * 1024
IN_FLIGHT = 64
OURS = Extensions.EXTENSION_PROTOCOL | Extensions.FAST
OUR_PEER_ID = PeerId(b"-BP0001-peerdownload")
DIAL_DEADLINE = 20.0
# ctorrent resets connections that come from its own address (127.0.0.1): dial from another.
OUR_HOST = "127.0.0.2"
DOWNLOAD_DEADLINE = 90.0

Launcher = Callable[[StartProcess, Path, SmallTorrent], Seeder]
SEEDERS: dict[str, Launcher] = {
    "libtorrent": start_libtorrent,
    # MSE required by libtorrent: the blocks come through bip_handshake's RC4 MSEStream.
    "libtorrent-mse": functools.partial(start_libtorrent, enc_policy="forced"),
    "qBittorrent": start_qbittorrent,
    "aria2": start_aria2,
    "rtorrent": start_rtorrent,
    "ctorrent": start_ctorrent,
}


@pytest.fixture(scope="module")
def big_torrent(tmp_path_factory: pytest.TempPathFactory) -> BigTorrent:
    return make_big_torrent(
        tmp_path_factory.mktemp("peer-download"), size=SIZE, piece_length=PIECE_LENGTH
    )


async def dial_from_our_host(address: PeerAddress) -> trio.abc.Stream:
    return await trio.open_tcp_stream(str(address.host), address.port, local_address=OUR_HOST)


class SequentialDownload:
    """Requests every block in order, keeps ``IN_FLIGHT`` outstanding, verifies each piece."""

    def __init__(self, torrent: BigTorrent, peer: Peer) -> None:
        self.torrent = torrent
        self.peer = peer
        self.fast = Extensions.FAST in peer.extensions
        self.unchoked = False
        self.next_piece = 0  # every piece below it has all its blocks requested once
        self.retry: deque[tuple[int, int, int]] = deque()  # rejected or choked-away blocks
        self.waiting: set[tuple[int, int, int]] = set()
        self.buffers: dict[int, bytearray] = {}
        self.missing: dict[int, int] = {}  # piece -> bytes still to receive
        self.verified = 0
        self.blocks = 0

    @property
    def done(self) -> bool:
        return self.verified == self.torrent.num_pieces

    def _blocks_of(self, index: int) -> list[tuple[int, int, int]]:
        size = self.torrent.piece_size(index)
        return [(index, b, min(BLOCK_SIZE, size - b)) for b in range(0, size, BLOCK_SIZE)]

    def _next_request(self) -> tuple[int, int, int] | None:
        if self.retry:
            return self.retry.popleft()
        pieces = self.peer.connection.peer_pieces
        index = self.next_piece
        if index >= self.torrent.num_pieces or index not in pieces:
            return None  # sequential: wait for the seeder to have the next piece
        self.next_piece += 1
        self.buffers[index] = bytearray(self.torrent.piece_size(index))
        self.missing[index] = self.torrent.piece_size(index)
        blocks = self._blocks_of(index)
        self.retry.extend(blocks[1:])
        return blocks[0]

    async def top_up(self, manager: PeerManager) -> None:
        while self.unchoked and len(self.waiting) < IN_FLIGHT:
            block = self._next_request()
            if block is None:
                return
            self.waiting.add(block)
            await manager.send(self.peer, Request(*block))

    def on_piece(self, message: Piece) -> None:
        key = (message.index, message.begin, len(message.block))
        assert key in self.waiting, f"unrequested block {key}"
        self.waiting.discard(key)
        self.blocks += 1
        buffer = self.buffers[message.index]
        buffer[message.begin : message.begin + len(message.block)] = message.block
        self.missing[message.index] -= len(message.block)
        if self.missing[message.index] == 0:
            del self.missing[message.index]
            data = self.buffers.pop(message.index)
            digest = hashlib.sha1(data).digest()
            assert digest == self.torrent.piece_hashes[message.index], message.index
            self.verified += 1

    def on_lost(self, key: tuple[int, int, int]) -> None:
        if key in self.waiting:
            self.waiting.discard(key)
            self.retry.append(key)


async def download(
    torrent: BigTorrent, handshake: CompletedHandshake
) -> tuple[SequentialDownload, float]:
    """Download every piece from the peer of `handshake`; returns the download and its seconds."""
    config = PeerManagerConfig(max_peers=4)
    async with open_peer_manager(config) as manager:
        peer = manager.add_peer(handshake, num_pieces=torrent.num_pieces)
        state = SequentialDownload(torrent, peer)
        started = trio.current_time()
        await manager.send(peer, Interested())
        async for event in manager.events():
            if isinstance(event, PeerAdded):
                assert event.peer is peer
                continue
            if isinstance(event, PeerRemoved):
                raise AssertionError(f"the seeder went away: {event.reason} {event.error!r}")
            assert isinstance(event, MessageReceived)
            message = event.message
            if isinstance(message, Piece):
                state.on_piece(message)
                if state.done:
                    break
            elif isinstance(message, Unchoke):
                state.unchoked = True
            elif isinstance(message, Choke):
                state.unchoked = False
                if not state.fast:  # BEP 3: a choke drops every pending request
                    for key in list(state.waiting):
                        state.on_lost(key)
            elif isinstance(message, RejectRequest):
                state.on_lost((message.index, message.begin, message.length))
            await state.top_up(manager)
        elapsed = trio.current_time() - started
        stats = manager.statistics()
        assert stats.peers[peer].bytes_received >= torrent.length
        assert stats.messages_received >= state.blocks
    return state, elapsed


@pytest.mark.parametrize("client", list(SEEDERS))
async def test_download_every_piece(
    client: str, big_torrent: BigTorrent, start_process: StartProcess, tmp_path: Path
) -> None:
    seeder = SEEDERS[client](start_process, tmp_path, big_torrent.torrent)
    async with open_handshaker(
        peer_id=OUR_PEER_ID,
        listen=[],
        extensions=OURS,
        encryption=(
            EncryptionPolicy.REQUIRE_ENCRYPTED
            if client.endswith("-mse")
            else EncryptionPolicy.PLAINTEXT_ONLY
        ),
        handshake_timeout=10,
        dial=dial_from_our_host,
    ) as handshaker:
        handshaker.register(big_torrent.torrent.info_hash)
        handshake = await dial_until_complete(
            handshaker, big_torrent.torrent, seeder, deadline=DIAL_DEADLINE
        )
        assert handshake.encryption == ("rc4" if client.endswith("-mse") else "plaintext")
        with trio.fail_after(DOWNLOAD_DEADLINE):
            state, elapsed = await download(big_torrent, handshake)
    assert state.done
    assert state.blocks == SIZE // BLOCK_SIZE
    print(f"{client}: 64 MiB in {elapsed:.2f} s ({SIZE / elapsed / 2**20:.0f} MiB/s)")
