"""What a fetch got survives its timeout, and large piece layers are built off the event loop.

A session asks again and again (``fetch`` with its ``metadata_timeout`` each time): each call
used to start from nothing, so a dictionary or a layer that takes longer than one timeout to
arrive (a slow or budgeted seeder) never came, however much of it had been verified.
"""

from __future__ import annotations

import functools
import random
import threading
from collections.abc import Mapping
from ipaddress import IPv4Address
from typing import Any

import _managers
import pytest
import trio
import trio.testing
from _managers import node

import bip_peer._layers
from bip_bencode import encode
from bip_handshake import Extensions, PeerAddress
from bip_metainfo import Info, InfoHash, PieceLayerTree
from bip_peer._errors import PieceLayerFetchError
from bip_peer._exchange import MetadataExchange, MetadataFetchError
from bip_peer._extended import MetadataRequest
from bip_peer._layers import PieceLayerExchange
from bip_peer._manager import Peer, PeerManager

BLOCK = 16384
EXT_V2 = Extensions.EXTENSION_PROTOCOL | Extensions.FAST | Extensions.V2_UPGRADE


def addr(n: int) -> PeerAddress:
    return PeerAddress(IPv4Address(f"10.0.0.{n}"), 6881)


def layered_info(pieces: int, seed: int = 1) -> tuple[Info, bytes, bytes]:
    """A v2 torrent of one file of ``pieces`` pieces of 16 KiB (random piece hashes: no data
    is needed to serve or fetch a layer); its info, the file's root and its piece layer."""
    layer = random.Random(seed).randbytes(32 * pieces)
    length = pieces * BLOCK
    root = PieceLayerTree(layer, piece_length=BLOCK, file_length=length).root
    info = Info.from_bytes(
        encode(
            {
                b"name": b"big",
                b"piece length": BLOCK,
                b"meta version": 2,
                b"file tree": {b"big.bin": {b"": {b"length": length, b"pieces root": root}}},
            }
        )
    )
    return info, root, layer


def connect_v2(leech: _managers.Node, seed: _managers.Node, info: Info) -> None:
    _managers.connect(
        leech,
        seed,
        info_hash=info.info_hash,
        swarm_id=info.info_hash.v2_truncated,
        extensions=EXT_V2,
    )


# --------------------------------------------------------------------------- piece layers


async def test_layer_chunks_verified_survive_a_fetch_that_timed_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    info, root, layer = layered_info(64)
    # A seeder that answers 8 requests, then one every 4 s; the leech asks 32 chunks of 2
    # hashes and leaves a rejecting peer alone for 30 s: no 10 s fetch can get them all.
    seed_ex = PieceLayerExchange(serve_burst=8, serve_rate=0.25)
    seed_ex.serve(info, {root: layer})
    leech_ex = PieceLayerExchange(max_hashes_per_request=2, reject_backoff=30)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [seed_ex]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            connect_v2(leech, seed, info)
            got = None
            for _ in range(40):
                try:
                    got = await leech_ex.fetch(leech.manager, info, timeout=10)
                    break
                except PieceLayerFetchError:
                    assert leech_ex.statistics().fetching == 0  # none under way between calls
            assert got == {root: layer}
            # Every chunk was verified once: none was asked again after a fetch timed out.
            assert seed_ex.statistics().requests_answered == 32
            assert leech_ex.statistics().chunks_fetched == 32
            assert not leech_ex._fetches  # complete: nothing kept
        nursery.cancel_scope.cancel()


async def test_a_budgeted_seeder_gives_a_long_layer_within_one_fetch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Defaults on both sides: the seeder answers 64 requests at once, then 16 a second. 200
    # chunks take it about 9 s; a leech that left it alone 30 s after each reject got 128.
    info, root, layer = layered_info(400)
    seed_ex = PieceLayerExchange()
    seed_ex.serve(info, {root: layer})
    leech_ex = PieceLayerExchange(max_hashes_per_request=2)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [seed_ex]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            connect_v2(leech, seed, info)
            start = trio.current_time()
            assert await leech_ex.fetch(leech.manager, info, timeout=30) == {root: layer}
            assert trio.current_time() - start < 20
            # Not a storm of requests and rejects either: a few rejects per refill.
            assert seed_ex.statistics().requests_rejected <= 40
        nursery.cancel_scope.cancel()


async def test_stop_serving_forgets_the_chunks_a_fetch_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    info, root, layer = layered_info(64)
    seed_ex = PieceLayerExchange(serve_burst=8, serve_rate=0.01)
    seed_ex.serve(info, {root: layer})
    leech_ex = PieceLayerExchange(max_hashes_per_request=2)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [seed_ex]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            connect_v2(leech, seed, info)
            with pytest.raises(PieceLayerFetchError):
                await leech_ex.fetch(leech.manager, info, timeout=5)
            assert leech_ex._fetches  # kept for the next call
            leech_ex.stop_serving(info.info_hash)  # the torrent is removed
            assert not leech_ex._fetches
            assert leech_ex.statistics().fetching == 0
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- metadata


def make_info(pieces: int) -> bytes:
    hashes = random.Random(7).randbytes(20 * (pieces * BLOCK // 20))
    return encode({b"length": 1, b"name": b"x", b"piece length": BLOCK, b"pieces": hashes})


INFO = make_info(20)  # 21 metadata pieces
IH = InfoHash.from_info_bytes(INFO, v1=True)
connect = functools.partial(_managers.connect, info_hash=IH)


async def test_metadata_pieces_survive_a_fetch_that_timed_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A seeder that sends 4 pieces at once, then one every 2 s: no 10 s fetch gets 21.
    seed_ex = MetadataExchange(serve_burst=4, serve_rate=0.5)
    seed_ex.serve(IH, INFO)
    leech_ex = MetadataExchange(reject_backoff=2.0)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [seed_ex]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            connect(leech, seed)
            got = None
            for _ in range(20):
                try:
                    got = await leech_ex.fetch(leech.manager, IH, timeout=10)
                    break
                except MetadataFetchError:
                    assert leech_ex.statistics().fetching == 0
            assert got == INFO
            assert leech_ex.statistics().pieces_fetched == 21  # none fetched twice
            assert not leech_ex._fetches
        nursery.cancel_scope.cancel()


class Delayed:
    """A MetadataExchange that answers each request ``delay`` seconds late."""

    def __init__(self, inner: MetadataExchange, nursery: trio.Nursery, delay: float) -> None:
        self.inner, self.nursery, self.delay = inner, nursery, delay

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        return self.inner.handshake_fields(peer)

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        self.inner.peer_added(manager, peer)

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        if not isinstance(message, MetadataRequest):
            return self.inner.message_received(manager, peer, message)

        async def later() -> None:
            await trio.sleep(self.delay)
            self.inner.message_received(manager, peer, message)

        self.nursery.start_soon(later)
        return True

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        self.inner.peer_removed(manager, peer)

    def tick(self, manager: PeerManager, now: float) -> None:
        self.inner.tick(manager, now)


async def test_metadata_answers_after_a_timeout_are_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seed_ex = MetadataExchange()
    seed_ex.serve(IH, INFO)
    leech_ex = MetadataExchange()
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [Delayed(seed_ex, nursery, delay=8)]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            connect(leech, seed)
            with pytest.raises(MetadataFetchError):
                await leech_ex.fetch(leech.manager, IH, timeout=5)
            asked = seed_ex.statistics().requests_answered + 2  # two in flight, unanswered
            [kept] = set(leech_ex._fetches.values())
            with trio.fail_after(20):
                while kept.fetcher.statistics().pieces_have < 2:  # the late answers, taken
                    await trio.sleep(1)
            assert seed_ex.statistics().requests_answered == asked  # nothing asked meanwhile
            with trio.fail_after(120):
                assert await leech_ex.fetch(leech.manager, IH, timeout=120) == INFO
            assert seed_ex.statistics().requests_answered == 21  # none asked twice
        nursery.cancel_scope.cancel()


async def test_stop_serving_forgets_the_metadata_a_fetch_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seed_ex = MetadataExchange(serve_burst=4, serve_rate=0.01)
    seed_ex.serve(IH, INFO)
    leech_ex = MetadataExchange()
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [seed_ex]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            connect(leech, seed)
            with pytest.raises(MetadataFetchError):
                await leech_ex.fetch(leech.manager, IH, timeout=5)
            assert leech_ex._fetches  # kept for the next call
            leech_ex.stop_serving(IH)
            assert not leech_ex._fetches
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- off the loop


@pytest.fixture
def tree_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread each PieceLayerTree of bip_peer._layers is built on."""
    names: list[str] = []
    real = PieceLayerTree

    def recording(*args: Any, **kwargs: Any) -> PieceLayerTree:
        names.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(bip_peer._layers, "PieceLayerTree", recording)
    return names


MAIN = threading.current_thread().name
LARGE = 2 * bip_peer._layers._INLINE_TREE_HASHES  # pieces: built in a worker thread


async def test_serve_async_builds_large_trees_in_a_thread(tree_threads: list[str]) -> None:
    info, root, layer = layered_info(LARGE)
    exchange = PieceLayerExchange()
    with trio.fail_after(30):
        await exchange.serve_async(info, {root: layer})
    assert exchange.serving(info.info_hash)
    assert len(tree_threads) == 1
    assert tree_threads[0] != MAIN
    small, small_root, small_layer = layered_info(64, seed=2)
    await exchange.serve_async(small, {small_root: small_layer})  # a thread costs more
    assert tree_threads[1] == MAIN
    assert exchange.serving(small.info_hash)
    with pytest.raises(ValueError, match="does not hash"):
        await exchange.serve_async(info, {root: bytes(len(layer))})


async def test_stop_serving_during_the_build_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    info, root, layer = layered_info(LARGE)
    exchange = PieceLayerExchange()
    started, release = threading.Event(), threading.Event()
    real = PieceLayerTree

    def slow(*args: Any, **kwargs: Any) -> PieceLayerTree:
        started.set()
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(bip_peer._layers, "PieceLayerTree", slow)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(exchange.serve_async, info, {root: layer})
            assert await trio.to_thread.run_sync(started.wait, 10)
            exchange.stop_serving(info.info_hash)  # the torrent removed meanwhile
            release.set()
    assert not exchange.serving(info.info_hash)
    assert not exchange._building


async def test_a_fetched_large_layer_is_built_in_a_thread(tree_threads: list[str]) -> None:
    info, root, layer = layered_info(LARGE)
    seed_ex, leech_ex = PieceLayerExchange(), PieceLayerExchange()
    seed_ex.serve(info, {root: layer})
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [seed_ex]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            connect_v2(leech, seed, info)
            with trio.fail_after(30):
                got = await leech_ex.fetch(leech.manager, info, timeout=30)
            assert got == {root: layer}
            assert leech_ex.serving(info.info_hash)
        nursery.cancel_scope.cancel()
    assert tree_threads[0] == MAIN  # the seeder's serve(), on the caller's thread
    assert len(tree_threads) == 2
    assert tree_threads[1] != MAIN  # the leech's, once fetched
