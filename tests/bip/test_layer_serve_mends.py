"""A session serves a large v2 torrent's piece layers with their trees built off the event
loop (two million pieces took two seconds of it), and a removal meanwhile serves nothing."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
from _engine_helpers import loopback_config, until

import bip_peer._layers
from bip._client import Torrent, TorrentOptions, open_session
from bip_bencode import encode
from bip_metainfo import Metainfo, PieceLayerTree

BLOCK = 16384
PIECES = 2 * bip_peer._layers._INLINE_TREE_HASHES  # more than serve_async builds at once


def large_torrent() -> Metainfo:
    """A v2 torrent of one file of PIECES pieces (random piece hashes: its data is never
    read here, the file is missing)."""
    layer = random.Random(3).randbytes(32 * PIECES)
    length = PIECES * BLOCK
    root = PieceLayerTree(layer, piece_length=BLOCK, file_length=length).root
    info: dict[bytes, Any] = {
        b"name": b"large",
        b"piece length": BLOCK,
        b"meta version": 2,
        b"file tree": {b"large.bin": {b"": {b"length": length, b"pieces root": root}}},
    }
    return Metainfo.from_bytes(encode({b"info": info, b"piece layers": {root: layer}}))


class SlowTrees:
    """PieceLayerTree, recording the thread each is built on, held until ``release``."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.real = PieceLayerTree

    def __call__(self, *args: Any, **kwargs: Any) -> PieceLayerTree:
        self.threads.append(threading.current_thread().name)
        self.started.set()
        self.release.wait(20)
        return self.real(*args, **kwargs)


@pytest.fixture
def trees(monkeypatch: pytest.MonkeyPatch) -> SlowTrees:
    slow = SlowTrees()
    monkeypatch.setattr(bip_peer._layers, "PieceLayerTree", slow)
    return slow


async def test_the_trees_are_built_in_a_thread(tmp_path: Path, trees: SlowTrees) -> None:
    torrent = large_torrent()
    info_hash = torrent.info.info_hash
    with trio.fail_after(30):
        async with open_session(loopback_config()) as session:
            await session.add_torrent(torrent, TorrentOptions(tmp_path))
            assert await trio.to_thread.run_sync(trees.started.wait, 20)
            # The event loop goes on while the tree is built (the session answers).
            assert not session.layers.serving(info_hash)
            trees.release.set()
            await until(lambda: session.layers.serving(info_hash))
    assert trees.threads
    assert threading.main_thread().name not in trees.threads


async def test_a_removal_while_the_trees_are_built_serves_nothing(
    tmp_path: Path, trees: SlowTrees
) -> None:
    torrent = large_torrent()
    info_hash = torrent.info.info_hash
    with trio.fail_after(30):
        async with open_session(loopback_config()) as session:
            added: Torrent = await session.add_torrent(torrent, TorrentOptions(tmp_path))
            assert await trio.to_thread.run_sync(trees.started.wait, 20)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.remove_torrent, added)
                await until(lambda: added not in session.torrents)
                trees.release.set()  # the build ends after the removal began
            assert not session.layers.serving(info_hash)
            assert not session.layers._building
