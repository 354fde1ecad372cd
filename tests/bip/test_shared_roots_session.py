"""A v2 torrent whose files share a ``pieces root`` at different lengths, in a session.

From a magnet link, its fetched metadata is not usable (bip_metainfo refuses it): the torrent
fails. Layers that cannot be served (only a bug's now: injected) fail that torrent alone, never
the session with its other torrents.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import trio
from _engine_helpers import address_of, loopback_config
from _hostile_peer import hostile_peer
from test_hostile_torrents import _serve_metadata

from bip._client import TorrentError, TorrentOptions, TorrentPhase, open_session
from bip_bencode import encode
from bip_metainfo import (
    Info,
    InfoHash,
    MagnetLink,
    Metainfo,
    block_hashes,
    piece_layer,
    pieces_root,
)
from bip_peer import PieceLayerExchange

DEADLINE = 10.0
BLOCK = 16384
DATA = bytes(range(256)) * (3 * BLOCK // 256)  # 3 pieces of one block


def _root(data: bytes) -> bytes:
    root = pieces_root(data)
    assert root is not None  # data is not empty
    return root


ROOT = _root(DATA)
LAYER = piece_layer(block_hashes(DATA), BLOCK)  # 3 hashes
# "a" claims the root at 5 pieces, "b" at its true 3.
INFO_FIELDS: dict[bytes, Any] = {
    b"name": b"t",
    b"piece length": BLOCK,
    b"meta version": 2,
    b"file tree": {
        b"a": {b"": {b"length": 5 * BLOCK, b"pieces root": ROOT}},
        b"b": {b"": {b"length": 3 * BLOCK, b"pieces root": ROOT}},
    },
}
INFO = encode(INFO_FIELDS)


def small_torrent(name: bytes) -> Metainfo:
    """A healthy v2 torrent of one tiny file."""
    tree = {b"x": {b"": {b"length": 5, b"pieces root": _root(b"hello")}}}
    info: dict[bytes, Any] = {
        b"name": name,
        b"piece length": BLOCK,
        b"meta version": 2,
        b"file tree": tree,
    }
    return Metainfo.from_bytes(encode({b"info": info}))


async def test_a_magnet_whose_metadata_shares_a_root_fails(tmp_path: Path) -> None:
    magnet_hash = InfoHash(v2=hashlib.sha256(INFO).digest())
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            torrent = await session.add_torrent(
                MagnetLink.from_info_hash(magnet_hash), TorrentOptions(tmp_path / "save")
            )
            async with (
                hostile_peer(address_of(session), magnet_hash) as peer,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(_serve_metadata, peer, INFO)
                with pytest.raises(TorrentError, match="metadata is not usable") as caught:
                    await torrent.wait_complete()
                assert ROOT.hex()[:16] in str(caught.value)
                assert torrent.status().phase is TorrentPhase.FAILED
                nursery.cancel_scope.cancel()


async def test_layers_that_cannot_be_served_fail_the_torrent_not_the_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # bip_metainfo and the exchange now agree on every root (the first file's), so a layer
    # that cannot be served is a bug's: injected here, it must fail that torrent alone.
    healthy = {
        **INFO_FIELDS,
        b"file tree": {b"a": {b"": {b"length": len(DATA), b"pieces root": ROOT}}},
    }
    torrent = Metainfo.from_bytes(encode({b"info": healthy, b"piece layers": {ROOT: LAYER}}))

    serve = PieceLayerExchange.serve

    def refuse(exchange: PieceLayerExchange, info: Info, layers: Mapping[bytes, bytes]) -> None:
        if info.info_hash == torrent.info.info_hash:
            raise ValueError("a piece layer of the wrong size (injected)")
        serve(exchange, info, layers)

    monkeypatch.setattr(PieceLayerExchange, "serve", refuse)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            options = TorrentOptions(tmp_path / "o", resume=False)
            other = await session.add_torrent(small_torrent(b"u"), options)
            bad = await session.add_torrent(torrent, TorrentOptions(tmp_path / "d", resume=False))
            with pytest.raises(TorrentError, match="piece layers cannot be served"):
                await bad.wait_complete()
            assert bad.status().phase is TorrentPhase.FAILED
            # The session and its other torrent go on.
            assert other.status().phase is not TorrentPhase.FAILED
            again = await session.add_torrent(small_torrent(b"v"), options)
            assert again.status().phase is not TorrentPhase.FAILED
