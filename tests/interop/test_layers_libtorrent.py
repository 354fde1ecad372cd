"""BEP 52 piece layers against libtorrent.

- We fetch a v2 torrent's layers from a libtorrent seeder knowing only the info dictionary (as
  after a magnet's metadata), and they must equal the ``.torrent``'s ``piece layers``.
- libtorrent downloads a v2-only magnet from us: a PeerManager serving the metadata
  (MetadataExchange), the piece layers (PieceLayerExchange, answering its hash requests) and
  the pieces (a tiny in-memory seeder below). libtorrent checks every piece against the
  layers we gave it, so a wrong answer would show as a hash failure or a stall.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trio

from bip_handshake import EncryptionPolicy, Extensions, Handshaker, PeerAddress, open_handshaker
from bip_metainfo import Info, InfoHash, Metainfo, create_torrent
from bip_peer._errors import PeerError
from bip_peer._exchange import MetadataExchange
from bip_peer._layers import PieceLayerExchange
from bip_peer._manager import Peer, PeerManager, PeerManagerConfig, PeerService, open_peer_manager
from bip_peer._messages import Bitfield, HaveAll, Interested, Piece, Request, Unchoke

from ._helpers import StartProcess, file_exists, free_port, require_client
from ._seeders import HOST, run_lt_peer, start_libtorrent_hybrid

pytestmark = pytest.mark.interop

OURS = Extensions.EXTENSION_PROTOCOL | Extensions.FAST
BLOCK = 16384


def _v2_torrent(workdir: Path) -> tuple[Path, Path, Metainfo]:
    """A multi-file v2 torrent: one file of 600 pieces (two chunks of 512), small ones too."""
    content = workdir / "content"
    root = content / "album"
    rng = random.Random(52)
    sizes = {"big.bin": 600 * BLOCK - 10, "mid.bin": 5 * BLOCK + 3, "tiny.txt": 100}
    for name, size in sizes.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
    metainfo = create_torrent(
        root, version="v2", piece_length=BLOCK, creation_date=None, created_by=None
    )
    torrent_path = workdir / "album.torrent"
    torrent_path.write_bytes(metainfo.to_bytes())
    return torrent_path, content, metainfo


async def _feed(
    handshaker: Handshaker, manager: PeerManager, num_pieces: int | None = None
) -> None:
    async for done in handshaker.completed():
        manager.add_peer(done, num_pieces=num_pieces)


async def _drain(manager: PeerManager) -> None:
    async for _ in manager.events():
        pass


async def _redial(
    handshaker: Handshaker, manager: PeerManager, torrent: InfoHash, dial: PeerAddress
) -> None:
    while not manager.peers:
        handshaker.discovered(torrent, [dial], "test")
        await trio.sleep(1)


@asynccontextmanager
async def _swarm(
    torrent: InfoHash, exchange: PieceLayerExchange, dial: PeerAddress
) -> AsyncIterator[PeerManager]:
    async with (
        open_handshaker(
            listen=[],
            extensions=OURS,
            encryption=EncryptionPolicy.PLAINTEXT_ONLY,
            handshake_timeout=10,
        ) as handshaker,
        open_peer_manager(PeerManagerConfig(services=[exchange])) as manager,
        trio.open_nursery() as nursery,
    ):
        handshaker.register(torrent)
        nursery.start_soon(_redial, handshaker, manager, torrent, dial)
        nursery.start_soon(_feed, handshaker, manager)
        nursery.start_soon(_drain, manager)
        yield manager
        nursery.cancel_scope.cancel()


async def test_fetch_piece_layers_from_libtorrent(
    tmp_path: Path, start_process: StartProcess
) -> None:
    torrent_path, content, metainfo = _v2_torrent(tmp_path)
    seed = run_lt_peer(start_process, tmp_path, torrent_path, content, wait="seeding")
    info = Info.from_bytes(metainfo.info.to_bytes())  # no piece layers: a magnet's knowledge
    assert info.info_hash.v2 is not None
    magnet_only = InfoHash(v2=info.info_hash.v2)
    exchange = PieceLayerExchange()
    address = PeerAddress(IPv4Address(HOST), int(seed["port"]))
    async with _swarm(magnet_only, exchange, address) as manager:
        with trio.fail_after(40):
            got = await exchange.fetch(manager, info, timeout=35)
    expected = {
        entry.pieces_root: metainfo.piece_layers[entry.pieces_root]
        for entry in info.files
        if entry.pieces_root is not None and entry.length > info.piece_length
    }
    assert got == expected
    assert len(got) == 2
    stats = exchange.statistics()
    assert stats.peers_banned == 0
    assert stats.chunks_fetched == 3  # big.bin in two chunks of 512, mid.bin in one


async def test_fetch_piece_layers_of_libtorrents_own_hybrid_over_the_upgrade(
    tmp_path: Path, start_process: StartProcess
) -> None:
    """libtorrent's own hybrid torrent, dialled on its v1 id: libtorrent upgrades the connection
    to v2 and answers our hash requests on it."""
    workdir = tmp_path / "libtorrent"
    ready = start_libtorrent_hybrid(start_process, workdir)
    metainfo = Metainfo.from_bytes((workdir / "payload.torrent").read_bytes())
    info = Info.from_bytes(metainfo.info.to_bytes())
    assert info.is_hybrid
    assert info.info_hash.v1 == bytes.fromhex(ready["info_hash"])
    exchange = PieceLayerExchange()
    address = PeerAddress(IPv4Address(HOST), int(ready["port"]))
    async with _swarm(info.info_hash, exchange, address) as manager:
        with trio.fail_after(40):
            got = await exchange.fetch(manager, info, timeout=35)
        (peer,) = manager.peers
        # libtorrent 2.1 answers our v1 id with the truncated v2 id (BEP 52's upgrade) and sets
        # no upgrade bit: the swarm id met on the wire makes the connection a v2 one. Peer has
        # no public swarm id, hence the handshake record.
        assert peer._handshake.swarm_id == info.info_hash.v2_truncated
    (entry,) = [e for e in info.files if not e.is_pad]
    assert entry.pieces_root is not None
    assert got == {entry.pieces_root: metainfo.piece_layers[entry.pieces_root]}


# --------------------------------------------------------------------------- libtorrent from us


class _MemorySeed:
    """Every piece, from the torrent's piece space in memory: has-all, unchoke on interest,
    answer each request (pad bytes, if any, are zeros)."""

    def __init__(self, info: Info, content: Path) -> None:
        end = max(entry.offset + entry.length for entry in info.files)
        space = bytearray(end)
        for entry in info.files:
            if not entry.is_pad and entry.length:
                data = content.joinpath(*entry.path).read_bytes()
                space[entry.offset : entry.offset + entry.length] = data
        self.space = bytes(space)
        self.info = info
        self.served = 0
        # Requests wait here for run(): a hook must not block, and a full send queue must not
        # drop a block (libtorrent pipelines hundreds of requests and would time them out).
        self._requests, self._pending = trio.open_memory_channel[tuple[Peer, Request]](4096)

    async def run(self, manager: PeerManager) -> None:
        async for peer, request in self._pending:
            start = request.index * self.info.piece_length + request.begin
            block = self.space[start : start + request.length]
            with contextlib.suppress(PeerError):  # gone, or the request was cancelled
                await manager.send(peer, Piece(request.index, request.begin, block))
                self.served += 1

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        return {}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        if Extensions.FAST in peer.extensions:
            manager.send_nowait(peer, HaveAll())
        else:
            pieces = self.info.num_pieces
            bits = bytearray(b"\xff" * (pieces // 8) + (b"\x00" if pieces % 8 else b""))
            if pieces % 8:
                bits[-1] = (0xFF << (8 - pieces % 8)) & 0xFF
            manager.send_nowait(peer, Bitfield(bytes(bits)))

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        if isinstance(message, Interested):
            manager.send_nowait(peer, Unchoke())
            return True
        if isinstance(message, Request):
            with contextlib.suppress(trio.WouldBlock):  # past 4096 waiting: it times out
                self._requests.send_nowait((peer, message))
            return True
        return False

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def tick(self, manager: PeerManager, now: float) -> None:
        pass


# A libtorrent 2.1 session that adds a magnet link, downloads it and writes the result: run with
# ``python -c`` (argv: interop dir, port, magnet, save path, ready file, result file).
_LT_MAGNET_DOWNLOAD = """
import sys, time, json
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import libtorrent as lt
import _lt_common as common

port, magnet, save = int(sys.argv[2]), sys.argv[3], sys.argv[4]
ready, result = Path(sys.argv[5]), Path(sys.argv[6])
mask = lt.alert_category.error | lt.alert_category.status | lt.alert_category.peer
ses = lt.session(common.loopback_settings(port, alert_mask=mask))
params = lt.parse_magnet_uri(magnet)
params.save_path = save
handle = ses.add_torrent(params)
deadline = time.monotonic() + 60
hash_failures = 0
written = False
while time.monotonic() < deadline:
    for alert in ses.pop_alerts():
        print(f"{type(alert).__name__}: {alert.message()}", flush=True)
        if isinstance(alert, lt.hash_failed_alert):
            hash_failures += 1
    if not ready.exists() and ses.is_listening():
        common.write_json(ready, {"port": ses.listen_port()})
    status = handle.status()
    if status.is_seeding and not written:
        handle.flush_cache()
        common.write_json(result, {
            "name": handle.torrent_file().name(),
            "hash_failures": hash_failures,
            "num_pieces": status.num_pieces,
            "info_hash_v2": str(handle.info_hashes().v2),
        })
        written = True
    ses.wait_for_alert(100)
print("lifetime over, exiting", flush=True)
"""


async def test_libtorrent_downloads_a_v2_magnet_from_us(
    tmp_path: Path, start_process: StartProcess
) -> None:
    _, content, metainfo = _v2_torrent(tmp_path)
    info = metainfo.info
    assert info.info_hash.v2 is not None
    torrent = InfoHash(v2=info.info_hash.v2)  # the magnet's torrent: v2 only
    metadata, layers = MetadataExchange(), PieceLayerExchange()
    metadata.serve(torrent, info.to_bytes())
    layers.serve(info, metainfo.piece_layers)
    seed = _MemorySeed(info, content)
    services: list[PeerService] = [metadata, layers, seed]
    require_client("libtorrent")
    async with (
        open_handshaker(
            listen=[(HOST, 0)],
            extensions=OURS,
            encryption=EncryptionPolicy.PREFER_ENCRYPTED,
            handshake_timeout=10,
        ) as handshaker,
        open_peer_manager(PeerManagerConfig(services=services)) as manager,
        trio.open_nursery() as nursery,
    ):
        handshaker.register(torrent)
        nursery.start_soon(_feed, handshaker, manager, info.num_pieces)
        nursery.start_soon(seed.run, manager)
        nursery.start_soon(_drain, manager)
        (ours,) = handshaker.listen_addresses
        magnet = f"magnet:?xt=urn:btmh:1220{info.info_hash.v2.hex()}&x.pe={HOST}:{ours.port}"
        save = tmp_path / "lt-download"
        save.mkdir()
        ready, result = tmp_path / "lt-ready.json", tmp_path / "lt-result.json"
        port = free_port(HOST, tcp=True, udp=True)
        argv = [sys.executable, "-c", _LT_MAGNET_DOWNLOAD, str(Path(__file__).parent), str(port)]
        argv += [magnet, str(save), str(ready), str(result)]
        process = await trio.to_thread.run_sync(
            lambda: start_process(
                argv, ready=file_exists(ready), ready_timeout=20, name="libtorrent-magnet"
            )
        )
        with trio.fail_after(50):
            while not result.exists():
                await trio.sleep(0.2)
        stats = layers.statistics()
        nursery.cancel_scope.cancel()
    got = json.loads(result.read_text())
    assert got["hash_failures"] == 0, process.logs()
    assert got["num_pieces"] == info.num_pieces
    assert got["info_hash_v2"] == info.info_hash.v2.hex()
    # libtorrent asked us for the piece layers of the two files larger than one piece.
    assert stats.requests_answered >= 2, process.logs()
    assert seed.served > 0
    expected = {
        entry.path: content.joinpath(*entry.path).read_bytes()
        for entry in info.files
        if not entry.is_pad
    }
    # libtorrent says it seeds once every piece hashed, which may be before its disk thread
    # wrote the last blocks out (flush_cache is asynchronous): wait, bounded, for the files.
    with trio.move_on_after(10):
        while any(_read(save.joinpath(*path)) != data for path, data in expected.items()):
            await trio.sleep(0.1)
    for path, data in expected.items():
        assert _read(save.joinpath(*path)) == data, path


def _read(path: Path) -> bytes | None:
    """The file's bytes, or None while it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
