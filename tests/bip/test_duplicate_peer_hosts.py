"""Two connections giving one peer id (after the review of the duplicate rule).

- From two hosts, both are kept: a peer id is no identity (every peer the client meets
  learns it), so the first connection to claim an id may be an impostor's, and keeping it
  alone refused the real peer for good.
- From one host, the tie-break still keeps one (libtorrent's rule, by peer id).
- A connection being removed (still in ``manager.peers`` until its task runs) is no
  duplicate: a new connection from its host is not refused for it, and takes its place
  (added beside it, it was refused at ``max_peers_per_host``: the leaving one holds its
  place until its task runs).

Loopback sessions on 127.0.0.1; the hostile peer helper makes plain handshakes with a
chosen peer id, from a chosen 127.0.0.X."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address
from pathlib import Path

import trio
import trio.testing
from _engine_helpers import address_of, loopback_config, make_torrent, write_content
from _hostile_peer import hostile_peer

from bip._client import REASON_DUPLICATE, Session, Torrent, TorrentOptions, open_session
from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId

HONEST_HOST = "127.0.0.1"
SQUATTER_HOST = "127.0.0.2"
LOW_ID = b"\x00" * 20  # below ours: a new inbound connection loses the tie-break
HIGH_ID = b"\xff" * 20  # above ours: a new inbound connection wins it


@asynccontextmanager
async def seeding_session(
    tmp_path: Path, **changes: object
) -> AsyncIterator[tuple[Session, Torrent]]:
    folder = write_content(tmp_path / "data", [20_000])
    torrent = make_torrent(folder, "v1")
    async with open_session(loopback_config(**changes)) as session:
        seeding = await session.add_torrent(torrent, TorrentOptions(folder.parent))
        await seeding.wait_complete()
        yield session, seeding


async def connected(session: Session, count: int) -> None:
    while sum(session.manager.is_connected(p) for p in session.manager.peers) < count:
        await trio.sleep(0.01)


async def test_an_impostor_from_another_host_cuts_nobody_off(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with seeding_session(tmp_path) as (session, seeding):
            address = address_of(session)
            for victim_id in (LOW_ID, HIGH_ID):  # whichever way the tie-break would go
                async with hostile_peer(
                    address, seeding.info_hash, peer_id=victim_id, local_host=SQUATTER_HOST
                ) as squatter:
                    await connected(session, 1)
                    async with hostile_peer(
                        address, seeding.info_hash, peer_id=victim_id, local_host=HONEST_HOST
                    ) as honest:
                        # The real peer was refused while the impostor held its id.
                        with trio.move_on_after(2):
                            await connected(session, 2)
                        assert not honest.closed.is_set()
                        assert await honest.still_open(0.05)
                        assert await squatter.still_open(0.05)
                        hosts = {str(p.address.host) for p in session.manager.peers}
                        assert hosts == {HONEST_HOST, SQUATTER_HOST}
                while session.manager.peers:
                    await trio.sleep(0.01)


async def test_one_host_still_keeps_one_connection(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with seeding_session(tmp_path) as (session, seeding):
            address = address_of(session)
            async with hostile_peer(address, seeding.info_hash, peer_id=LOW_ID) as first:
                await connected(session, 1)
                async with hostile_peer(address, seeding.info_hash, peer_id=LOW_ID) as second:
                    # Opened by the side with the lower id: the new one goes, the old stays.
                    assert await second.wait_closed(5)
                    assert await first.still_open(0.1)
                    assert len(session.manager.peers) == 1


def _handshake_from(session: Session, peer_id: bytes, host: str) -> CompletedHandshake:
    stream, _ = trio.testing.memory_stream_pair()
    [torrent] = session.torrents
    return CompletedHandshake(
        stream=stream,
        trailing=b"",
        peer_id=PeerId(peer_id),
        extensions=Extensions.FAST,
        our_extensions=Extensions.FAST,
        info_hash=torrent.info_hash,
        swarm_id=torrent.info_hash.swarm_ids()[0],
        address=PeerAddress(IPv4Address(host), 40_000),
        direction="inbound",
    )


async def test_a_connection_being_removed_is_no_duplicate(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with seeding_session(tmp_path) as (session, seeding):
            address = address_of(session)
            async with hostile_peer(address, seeding.info_hash, peer_id=LOW_ID):
                await connected(session, 1)
                [old] = session.manager.peers
                new = _handshake_from(session, LOW_ID, HONEST_HOST)
                # Same host, and it would lose the tie-break to the old connection...
                assert session._settle_duplicate(seeding, new) == (False, None)
                session.manager.remove_peer(old, "gone")
                # ...which is leaving now (still among the peers until its task runs): the
                # new one was refused for it, and both were lost. It takes its place.
                assert old in session.manager.peers
                assert session._settle_duplicate(seeding, new) == (True, old)


async def test_a_connection_arriving_while_its_host_leaves_is_added(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with seeding_session(tmp_path, max_peers_per_host=1) as (session, seeding):
            address = address_of(session)
            async with hostile_peer(address, seeding.info_hash, peer_id=LOW_ID):
                await connected(session, 1)
                [old] = session.manager.peers
                session.manager.remove_peer(old, "gone")
                new = _handshake_from(session, LOW_ID, HONEST_HOST)
                # As the session's accept loop takes it: the leaving connection still holds
                # the host's only place, so added beside it, it was refused.
                keep, replaced = session._settle_duplicate(seeding, new)
                assert keep
                if replaced is None:
                    peer = session.manager.add_peer(new, num_pieces=seeding.num_pieces)
                else:
                    peer = session.manager.replace_peer(
                        replaced, new, reason=REASON_DUPLICATE, num_pieces=seeding.num_pieces
                    )
                assert session.manager.is_connected(peer)
                assert not session.manager.is_connected(old)
