"""The session and bip_peer's metadata and piece-layer exchanges.

A torrent's info dictionary is served with the ``private`` flag the session parsed (never
decoded again on the event loop), and piece layers fetched from peers that cannot be served
fail the torrent once, instead of being fetched again for ever.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import trio
from _engine_helpers import address_of, loopback_config
from _hostile_peer import hostile_peer
from test_hostile_torrents import _serve_metadata

import bip_peer._exchange
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
from bip_peer import MetadataExchange, PieceLayerExchange, PieceLayerServeError
from bip_peer._manager import PeerManager

DEADLINE = 10.0
BLOCK = 16384


DATA = bytes(3 * BLOCK)  # 3 pieces: a piece layer to fetch
ROOT = pieces_root(DATA) or b""


def _v2_info(name: bytes, extra: dict[bytes, Any] | None = None) -> dict[bytes, Any]:
    tree = {b"f": {b"": {b"length": len(DATA), b"pieces root": ROOT}}}
    return {
        b"name": name,
        b"piece length": BLOCK,
        b"meta version": 2,
        b"file tree": tree,
        **(extra or {}),
    }


def _metainfo(name: bytes, extra: dict[bytes, Any] | None = None) -> Metainfo:
    layer = piece_layer(block_hashes(DATA), BLOCK)
    return Metainfo.from_bytes(
        encode({b"info": _v2_info(name, extra), b"piece layers": {ROOT: layer}})
    )


async def test_layers_that_cannot_be_served_fail_the_magnet_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = encode(_v2_info(b"t"))
    magnet_hash = InfoHash(v2=hashlib.sha256(raw).digest())
    calls: list[InfoHash] = []

    async def refused(
        self: PieceLayerExchange, manager: PeerManager, info: Info, *, timeout: float
    ) -> dict[bytes, bytes]:
        calls.append(info.info_hash)
        await trio.lowlevel.checkpoint()
        raise PieceLayerServeError(
            f"the piece layers fetched for {info.info_hash} cannot be served"
        )

    monkeypatch.setattr(PieceLayerExchange, "fetch", refused)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            torrent = await session.add_torrent(
                MagnetLink.from_info_hash(magnet_hash), TorrentOptions(tmp_path / "save")
            )
            async with (
                hostile_peer(address_of(session), magnet_hash) as peer,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(_serve_metadata, peer, raw)
                with pytest.raises(TorrentError, match="cannot be served"):
                    await torrent.wait_complete()
                assert torrent.status().phase is TorrentPhase.FAILED
                assert len(calls) == 1  # terminal: not fetched again
                nursery.cancel_scope.cancel()


async def test_an_added_torrent_is_served_with_its_parsed_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []

    def no_decode(data: bytes, **options: Any) -> object:
        decoded.append(len(data))
        raise AssertionError("the session parsed the flag already")

    monkeypatch.setattr(bip_peer._exchange, "decode", no_decode)
    served: list[tuple[InfoHash, bool | None]] = []
    serve = MetadataExchange.serve

    def spy(
        self: MetadataExchange, info_hash: InfoHash, info: bytes, *, private: bool | None = None
    ) -> None:
        served.append((info_hash, private))
        serve(self, info_hash, info, private=private)

    monkeypatch.setattr(MetadataExchange, "serve", spy)
    # The private one holds the bytes that would make the exchange decode it.
    private = _metainfo(b"p", {b"private": 1})
    public = _metainfo(b"q")
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            options = TorrentOptions(tmp_path / "save", resume=False)
            first = await session.add_torrent(private, options)
            await session.add_torrent(public, options)
            while len(served) < 2:
                await trio.sleep(0.01)
            assert sorted(served, key=lambda call: call[1] is True) == [
                (public.info.info_hash, False),
                (private.info.info_hash, True),
            ]
            exchange = first._metadata  # the session's, shared by its torrents
            assert not exchange.serving(private.info.info_hash)
            assert exchange.serving(public.info.info_hash)
    assert decoded == []
