"""BEP 9 against real clients: we fetch metadata from libtorrent and aria2 knowing only the
info-hash, and libtorrent fetches it from us given a magnet link whose ``x.pe`` names us."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trio

from bip_handshake import EncryptionPolicy, Extensions, Handshaker, PeerAddress, open_handshaker
from bip_metainfo import InfoHash, create_torrent
from bip_peer._exchange import MetadataExchange
from bip_peer._manager import PeerManager, PeerManagerConfig, open_peer_manager

from ._helpers import StartProcess, free_port
from ._peer_swarm import start_libtorrent_magnet
from ._seeders import (
    HOST,
    SmallTorrent,
    make_torrent,
    start_aria2,
    start_libtorrent,
    start_libtorrent_hybrid,
    start_qbittorrent,
    start_rtorrent,
)
from ._torrents import info_bytes

pytestmark = pytest.mark.interop

HERE = Path(__file__).parent
OURS = Extensions.EXTENSION_PROTOCOL | Extensions.FAST


async def _feed(handshaker: Handshaker, manager: PeerManager) -> None:
    async for done in handshaker.completed():
        manager.add_peer(done)


async def _redial(
    handshaker: Handshaker, manager: PeerManager, torrent: InfoHash, dial: list[PeerAddress]
) -> None:
    # A seeder may accept connections before it serves the torrent (qBittorrent, aria2 and
    # rtorrent check the data first) and hang up on us: dial again until a peer is connected.
    while not manager.peers:
        handshaker.discovered(torrent, dial, "test")
        await trio.sleep(1)


async def _drain(manager: PeerManager) -> None:
    async for _ in manager.events():
        pass


@asynccontextmanager
async def swarm_side(
    torrent: InfoHash,
    exchange: MetadataExchange,
    *,
    dial: list[PeerAddress] = (),  # type: ignore[assignment]
    listen: bool = False,
    encryption: EncryptionPolicy = EncryptionPolicy.PREFER_ENCRYPTED,
) -> AsyncIterator[tuple[Handshaker, PeerManager]]:
    """A Handshaker feeding a PeerManager that runs ``exchange``; dials ``dial``."""
    async with (
        open_handshaker(
            listen=[(HOST, 0)] if listen else [],
            extensions=OURS,
            encryption=encryption,
            handshake_timeout=10,
        ) as handshaker,
        open_peer_manager(PeerManagerConfig(services=[exchange])) as manager,
        trio.open_nursery() as nursery,
    ):
        handshaker.register(torrent)
        if dial:
            nursery.start_soon(_redial, handshaker, manager, torrent, dial)
        nursery.start_soon(_feed, handshaker, manager)
        nursery.start_soon(_drain, manager)
        yield handshaker, manager
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "encryption",
    [EncryptionPolicy.PLAINTEXT_ONLY, EncryptionPolicy.REQUIRE_ENCRYPTED],
    ids=["plaintext", "rc4"],
)
async def test_fetch_metadata_from_libtorrent(
    encryption: EncryptionPolicy, tmp_path: Path, start_process: StartProcess
) -> None:
    torrent = make_torrent(tmp_path)
    seed = start_libtorrent(start_process, tmp_path, torrent, enc_policy="enabled")
    expected = info_bytes(torrent.torrent_path.read_bytes())
    exchange = MetadataExchange()
    magnet_only = InfoHash(v1=torrent.v1)  # all we know
    address = PeerAddress(IPv4Address(seed.host), seed.port)
    async with swarm_side(magnet_only, exchange, dial=[address], encryption=encryption) as (
        _,
        manager,
    ):
        with trio.fail_after(30):
            got = await exchange.fetch(manager, magnet_only, timeout=25)
    assert got == expected
    assert hashlib.sha1(got).digest() == torrent.v1
    assert exchange.statistics().peers_banned == 0


async def test_fetch_hybrid_metadata_from_libtorrent(
    tmp_path: Path, start_process: StartProcess
) -> None:
    """A hybrid torrent: the fetched dictionary must match its SHA-1 and its SHA-256 hash."""
    workdir = tmp_path / "libtorrent"
    info = start_libtorrent_hybrid(start_process, workdir)
    port = int(info["port"])
    torrent = InfoHash(v1=bytes.fromhex(info["info_hash"]), v2=bytes.fromhex(info["info_hash_v2"]))
    exchange = MetadataExchange()
    address = PeerAddress(IPv4Address(HOST), port)
    async with swarm_side(torrent, exchange, dial=[address]) as (_, manager):
        with trio.fail_after(30):
            got = await exchange.fetch(manager, torrent, timeout=25)
    assert hashlib.sha1(got).digest() == torrent.v1
    assert hashlib.sha256(got).digest() == torrent.v2
    assert got == info_bytes((workdir / "payload.torrent").read_bytes())


@pytest.mark.parametrize("client", ["aria2", "qBittorrent", "rtorrent"])
async def test_fetch_metadata_from_other_clients(
    client: str, tmp_path: Path, start_process: StartProcess
) -> None:
    # rtorrent refuses a torrent without trackers: give it one where nothing listens.
    trackers = (f"http://{HOST}:{free_port()}/announce",) if client == "rtorrent" else ()
    torrent = make_torrent(tmp_path, trackers=trackers)
    start = {"aria2": start_aria2, "qBittorrent": start_qbittorrent, "rtorrent": start_rtorrent}
    seed = await trio.to_thread.run_sync(start[client], start_process, tmp_path, torrent)
    exchange = MetadataExchange()
    magnet_only = InfoHash(v1=torrent.v1)
    address = PeerAddress(IPv4Address(seed.host), seed.port)
    async with swarm_side(
        magnet_only, exchange, dial=[address], encryption=EncryptionPolicy.PLAINTEXT_ONLY
    ) as (_, manager):
        with trio.fail_after(30):
            got = await exchange.fetch(manager, magnet_only, timeout=25)
    assert got == info_bytes(torrent.torrent_path.read_bytes())


def make_many_files_torrent(workdir: Path, files: int, trackers: tuple[str, ...]) -> SmallTorrent:
    """``files`` files of 1 KiB in ``workdir/content/payload``: an info dictionary of about
    36 bytes a file (1000 files: 36 KiB, three metadata pieces)."""
    payload = workdir / "content" / "payload"
    payload.mkdir(parents=True)
    rng = random.Random(20261126)
    for n in range(files):
        (payload / f"f{n:04d}.bin").write_bytes(rng.randbytes(1024))
    metainfo = create_torrent(
        payload,
        version="v1",
        creation_date=None,
        piece_length=16 * 1024,
        created_by=None,
        trackers=trackers,
    )
    torrent_path = workdir / "payload.torrent"
    torrent_path.write_bytes(metainfo.to_bytes())
    return SmallTorrent(torrent_path, workdir / "content", metainfo.info.info_hash)


async def test_fetch_metadata_of_several_pieces_from_rtorrent(
    tmp_path: Path, start_process: StartProcess
) -> None:
    """An info dictionary larger than one 16 KiB piece from rtorrent 0.9.8, its only peer.

    rtorrent drops a ut_metadata request that arrives while its reply to the previous one is
    unsent, and stops reading the connection: asked for pieces 0 and 1 back to back, it sent
    piece 0 and nothing more, and the fetch hung. Paced as libtorrent asks (one request to a new
    peer, then one per answer and per one-second tick), and recognised by its client name so
    that no tick sends it a second, it gives the whole dictionary in well under a second.
    """
    trackers = (f"http://{HOST}:{free_port()}/announce",)  # rtorrent wants one
    torrent = await trio.to_thread.run_sync(make_many_files_torrent, tmp_path, 1000, trackers)
    expected = info_bytes(torrent.torrent_path.read_bytes())
    assert len(expected) > 2 * 16384  # three metadata pieces
    seed = await trio.to_thread.run_sync(start_rtorrent, start_process, tmp_path, torrent)
    exchange = MetadataExchange()
    magnet_only = InfoHash(v1=torrent.v1)
    address = PeerAddress(IPv4Address(seed.host), seed.port)
    async with swarm_side(
        magnet_only, exchange, dial=[address], encryption=EncryptionPolicy.PLAINTEXT_ONLY
    ) as (_, manager):
        with trio.fail_after(15):
            got = await exchange.fetch(manager, magnet_only, timeout=10)
        assert manager.statistics().peers_added == 1  # from the first connection
    assert got == expected
    assert exchange.statistics().peers_banned == 0


async def test_libtorrent_fetches_metadata_from_us(
    tmp_path: Path, start_process: StartProcess
) -> None:
    torrent = make_torrent(tmp_path)
    info = info_bytes(torrent.torrent_path.read_bytes())
    exchange = MetadataExchange()
    exchange.serve(torrent.info_hash, info)
    async with swarm_side(torrent.info_hash, exchange, listen=True) as (handshaker, manager):
        (ours,) = handshaker.listen_addresses
        magnet = f"magnet:?xt=urn:btih:{torrent.v1.hex()}&x.pe={HOST}:{ours.port}"
        _, result = await trio.to_thread.run_sync(
            start_libtorrent_magnet, start_process, tmp_path, magnet
        )
        with trio.fail_after(30):
            while not result.exists():
                await trio.sleep(0.1)
        stats = exchange.statistics()
        assert manager.statistics().peers_added >= 1
    got = json.loads(result.read_text())
    assert got["info_hash"] == torrent.v1.hex()
    assert got["metadata_size"] == len(info)
    assert got["info_sha1"] == torrent.v1.hex()
    assert stats.requests_answered >= 1
