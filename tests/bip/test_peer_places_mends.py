"""The session and the peer manager's places (after the review of bip_peer's event bounds).

- The connector counts the manager's places in use (peers connected and leaving), not its
  peers: it dials no more for a place a peer leaving still holds.
- A duplicate connection settled at ``max_peers`` takes the old one's place
  (``replace_peer``): removing the old one, then adding the new one, was refused and lost
  both.
- A private torrent is known as private to the metadata exchange from the moment it is
  added: peers accepted before its task gets to serve() see no ``ut_metadata``.

Loopback sessions; the hostile peer helper makes plain handshakes with a chosen peer id."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
import trio
from _engine_helpers import address_of, loopback_config, make_torrent, write_content
from _hostile_peer import hostile_peer

from bip._client import TorrentOptions, open_session
from bip._client._session import REASON_DUPLICATE
from bip_metainfo import create_torrent
from bip_peer import Peer, PeerManager


async def test_the_connector_counts_the_places_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_session(loopback_config(max_peers=10)) as session:
        assert session.connector.free_slots() == 10
        # Three places held by peers leaving (gone from manager.peers, their removal not
        # queued yet): the manager would refuse a dial for them.
        monkeypatch.setattr(PeerManager, "places_in_use", property(lambda self: 3))
        assert not session.manager.peers
        assert session.connector.free_slots() == 7


async def test_a_duplicate_at_max_peers_replaces_the_old_connection(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "data", [40_000])
    torrent = make_torrent(folder, "v1")
    with trio.fail_after(30):
        async with open_session(loopback_config(max_peers=1)) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            address = address_of(session)
            # A peer id above ours: the new inbound connection wins the tie-break.
            their_id = b"\xff" * 20
            async with hostile_peer(address, torrent.info.info_hash, peer_id=their_id) as first:
                while len(session.manager.peers) < 1:
                    await trio.sleep(0.01)
                [old] = session.manager.peers
                async with hostile_peer(
                    address, torrent.info.info_hash, peer_id=their_id
                ) as second:
                    # The old connection goes; the new one stays (it was refused, and both
                    # were lost).
                    assert await first.wait_closed(5)
                    assert await second.still_open(0.5)
                    [new] = session.manager.peers
                    assert new is not old
                    assert new.address.port == second.local_address.port
                    stats = session.manager.statistics()
                    assert stats.removed_reasons.get(REASON_DUPLICATE) == 1
                    assert stats.rejected_full == 0


def _peer_of(info_hash: object) -> Peer:
    return cast(Peer, SimpleNamespace(info_hash=info_hash))


async def test_a_private_torrent_is_marked_private_when_added(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "data", [20_000])
    private = create_torrent(folder, version="v1", piece_length=16384, private=True)
    public = make_torrent(folder, "v1")
    async with open_session(loopback_config()) as session:
        exchange = session.metadata
        added = await session.add_torrent(private, TorrentOptions(folder.parent, paused=True))
        # At once, before the torrent's task reads its resume store: no ut_metadata for
        # the peers accepted from now on.
        assert exchange.handshake_fields(_peer_of(added.info_hash)) == {}
        assert not exchange.serving(added.info_hash)
        other = await session.add_torrent(public, TorrentOptions(tmp_path / "other", paused=True))
        fields = exchange.handshake_fields(_peer_of(other.info_hash))
        assert fields.get("metadata_size") == len(public.info.to_bytes())
