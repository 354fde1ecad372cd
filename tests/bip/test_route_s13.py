"""The session routes to its connector only the messages the connector acts on (a peer's
extended handshake and what says it may be a seed), not every block and request: it did,
once per block, for nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from _engine_helpers import (
    download_from,
    make_torrent,
    same_files,
    seeder_and_leecher,
    write_content,
)

from bip._client import Session, TorrentPhase
from bip._client._connector import CONNECTOR_MESSAGES
from bip_peer import Bitfield, ExtendedHandshake, HaveAll, Piece, Request

DEADLINE = 20.0


def record_connector_messages(session: Session, monkeypatch: pytest.MonkeyPatch) -> list[type]:
    """The classes of the messages ``session`` hands its connector, from now on (each still
    handed on)."""
    kinds: list[type] = []
    connector = session.connector
    original = connector.peer_message

    def recording(torrent: object, peer: object, message: object) -> None:
        kinds.append(type(message))
        original(torrent, peer, message)  # type: ignore[arg-type]

    monkeypatch.setattr(connector, "peer_message", recording)
    return kinds


async def test_blocks_and_requests_do_not_reach_the_connector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = write_content(tmp_path / "seed", (200_000,), seed=3)
    torrent = make_torrent(content, "v1", piece_length=16384)
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, content) as (seeder, leecher):
            seen_by_seeder = record_connector_messages(seeder, monkeypatch)
            seen_by_leecher = record_connector_messages(leecher, monkeypatch)
            download = await download_from(seeder, leecher, torrent, tmp_path / "down")
            await download.wait_complete()
            assert download.status().phase is TorrentPhase.SEEDING
    assert same_files(content, tmp_path / "down" / content.name)
    # What it acts on still comes: the seeder's handshake and its pieces (all of them).
    assert ExtendedHandshake in seen_by_leecher
    assert HaveAll in seen_by_leecher or Bitfield in seen_by_leecher
    assert ExtendedHandshake in seen_by_seeder
    # And nothing else: not one of the 13 blocks, nor of the requests the seeder served.
    assert Piece not in seen_by_leecher
    assert Request not in seen_by_seeder
    assert set(seen_by_leecher) | set(seen_by_seeder) <= CONNECTOR_MESSAGES
