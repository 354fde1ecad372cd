"""A torrent removed while a peer of it is joining (hunt: churn, F1).

The session's accept loop adds a completed handshake to the peer manager; its ``PeerAdded``
waits in the manager's queue. A torrent removed before that event was routed disconnected only
the peers it held: the newcomer stayed connected for good, a peer of no torrent (keep-alives
kept it past the idle timeout), holding a ``max_peers`` place and its handshaker pair, so that
a torrent of the same hash added back could never dial that address. Events were also routed by
info-hash alone: those of a removed torrent's peer, routed late, reached a torrent of the same
hash added back (its peer list heard of a disconnection that was not its own).

libtorrent attaches an incoming connection to its torrent at once, and ``disconnect_all``
closes them all on removal: the session now knows each peer's torrent from the moment the
manager takes it, and routes by that torrent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address
from pathlib import Path

import trio
import trio.testing
from _engine_helpers import address_of, loopback_config, make_torrent, until, write_content
from _hostile_peer import hostile_peer

from bip._client import Session, Torrent, TorrentOptions, TorrentPhase, open_session
from bip._client._connector import ConnectorTorrent
from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_metainfo import Metainfo
from bip_peer import Peer

PEER_HOST = "127.0.0.9"


@asynccontextmanager
async def seeding_session(tmp_path: Path) -> AsyncIterator[tuple[Session, Metainfo, Path]]:
    folder = write_content(tmp_path / "data", [20_000])
    meta = make_torrent(folder, "v1")
    async with open_session(loopback_config()) as session:
        yield session, meta, folder


async def seed(session: Session, meta: Metainfo, folder: Path) -> Torrent:
    torrent = await session.add_torrent(meta, TorrentOptions(folder.parent))
    await until(lambda: torrent.status().phase is TorrentPhase.SEEDING)
    return torrent


def handshake_for(meta: Metainfo, port: int = 40_000) -> CompletedHandshake:
    """An inbound connection of ``meta``'s swarm, as the handshaker delivers one."""
    stream, _ = trio.testing.memory_stream_pair()
    return CompletedHandshake(
        stream=stream,
        trailing=b"",
        peer_id=PeerId(b"-XX0000-" + port.to_bytes(12, "big")),
        extensions=Extensions.FAST,
        our_extensions=Extensions.FAST,
        info_hash=meta.info.info_hash,
        swarm_id=meta.info.info_hash.swarm_ids()[0],
        address=PeerAddress(IPv4Address(PEER_HOST), port),
        direction="inbound",
    )


async def gone(session: Session, peer: Peer) -> None:
    while peer in session.manager.peers:
        await trio.sleep(0.01)


async def test_a_peer_added_just_before_removal_leaves_with_the_torrent(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with seeding_session(tmp_path) as (session, meta, folder):
            torrent = await seed(session, meta, folder)
            # As the accept loop takes a handshake: its PeerAdded is not routed yet when the
            # torrent is removed (no checkpoint between the two).
            peer = session.manager.add_peer(handshake_for(meta), num_pieces=torrent.num_pieces)
            await session.remove_torrent(torrent)
            assert not session.manager.is_connected(peer)
            await gone(session, peer)
            assert session.manager.places_in_use == 0


async def test_a_peer_of_no_torrent_is_removed_once_its_arrival_is_routed(
    tmp_path: Path,
) -> None:
    with trio.fail_after(20):
        async with seeding_session(tmp_path) as (session, meta, folder):
            torrent = await seed(session, meta, folder)
            await session.remove_torrent(torrent)
            # A peer the manager took for a hash no torrent of the session has.
            peer = session.manager.add_peer(handshake_for(meta), num_pieces=torrent.num_pieces)
            await gone(session, peer)
            assert session.manager.places_in_use == 0


async def test_a_removed_torrents_peer_never_reaches_the_torrent_added_back(
    tmp_path: Path,
) -> None:
    with trio.fail_after(20):
        async with seeding_session(tmp_path) as (session, meta, folder):
            first = await seed(session, meta, folder)
            heard: list[tuple[ConnectorTorrent, Peer]] = []
            peer_removed = session.connector.peer_removed

            def spy(torrent: ConnectorTorrent, peer: Peer, reason: str) -> None:
                heard.append((torrent, peer))
                peer_removed(torrent, peer, reason)

            session.connector.peer_removed = spy  # type: ignore[method-assign]
            old = session.manager.add_peer(handshake_for(meta), num_pieces=first.num_pieces)
            await session.remove_torrent(first)
            second = await seed(session, meta, folder)
            # However late the old connection's removal comes, it is not the new torrent's.
            session.manager.remove_peer(old, "gone")
            await until(lambda: any(peer == old for _, peer in heard))
            assert all(torrent is not second for torrent, peer in heard if peer == old)
            assert old not in second.peers


async def remove_as_it_joins(session: Session, meta: Metainfo, folder: Path, host: str) -> None:
    torrent = await seed(session, meta, folder)

    async def remove() -> None:
        # As soon as the manager has the peer: its arrival is most likely not routed yet.
        while not session.manager.peers:
            await trio.lowlevel.checkpoint()
        await session.remove_torrent(torrent)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(remove)
        async with hostile_peer(address_of(session), meta.info.info_hash, local_host=host) as peer:
            await until(lambda: torrent not in session.torrents)
            assert await peer.wait_closed(5)
            await until(lambda: not session.manager.peers)
            # The stream closed: the handshaker's pair is free (never, before the mend).
            await until(
                lambda: not session.handshaker.is_dialling(meta.info.info_hash, peer.local_address)
            )


async def test_a_joining_connection_is_closed_with_its_torrent(tmp_path: Path) -> None:
    """End to end, as the hunt's script: a peer that connects while its torrent is removed
    is disconnected, and its pair freed in the handshaker (a torrent added back may dial it)."""
    with trio.fail_after(30):
        async with seeding_session(tmp_path) as (session, meta, folder):
            for round_ in range(2):
                await remove_as_it_joins(session, meta, folder, f"127.0.5.{2 + round_}")
