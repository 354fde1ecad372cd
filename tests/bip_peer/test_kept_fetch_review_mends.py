"""What a kept fetch holds (a metadata or layer fetch that timed out, kept for the next call):
bounded, verified against every hash the caller names, and not lost to a reconnect.

A review of the kept fetches found: the bans of a kept metadata fetch held every departed
liar's connection for good; its pieces went as soon as no connected peer offered their size
(a seeder reconnecting lost them); a later fetch naming more hashes got a dictionary checked
against the kept fetch's hashes only; kept fetches had no count limit; a fetch joining a
layer build that a stop_serving dropped returned layers that were never served; and a kept
fetch of a private torrent completed by a late answer was thrown away.
"""

from __future__ import annotations

import gc
import hashlib
import os
import threading
import weakref
from typing import Any

import _managers
import pytest
import trio
import trio.testing
from _managers import node
from test_exchange_progress_mends import (
    LARGE,
    Delayed,
    addr,
    connect_v2,
    layered_info,
)

import bip_peer._layers
from bip_bencode import encode
from bip_metainfo import InfoHash, PieceLayerTree
from bip_peer._errors import PieceLayerFetchError
from bip_peer._exchange import MetadataExchange, MetadataFetchError
from bip_peer._extended import (
    METADATA_PIECE_SIZE,
    ExtendedHandshake,
    MetadataData,
    MetadataRequest,
)
from bip_peer._layers import PieceLayerExchange
from bip_peer._metadata import MetadataFetcher, MetadataServer

PIECE = METADATA_PIECE_SIZE
SMALL = encode({b"length": 1, b"name": b"x", b"piece length": 16384, b"pieces": bytes(20 * 2000)})
SMALL_IH = InfoHash.from_info_bytes(SMALL, v1=True)  # three metadata pieces


class Key:
    """A peer key whose lifetime a weak reference can watch (as a Peer's)."""


def answer(info: bytes, request: MetadataRequest) -> MetadataData:
    start = request.piece * PIECE
    return MetadataData(request.piece, len(info), info[start : start + PIECE])


def drain(fetcher: MetadataFetcher[Key], peer: Key) -> list[MetadataRequest]:
    requests = []
    while (request := fetcher.next_request(peer, 0.0)) is not None:
        requests.append(request)
    return requests


def lie(info: bytes, at: int = -3) -> bytes:
    bogus = bytearray(info)
    bogus[at] ^= 1
    return bytes(bogus)


# --------------------------------------------------------------------------- bans


def test_a_removed_liar_is_not_held_by_the_fetcher() -> None:
    fetcher: MetadataFetcher[Key] = MetadataFetcher(SMALL_IH)
    liar = Key()
    ref = weakref.ref(liar)
    assert fetcher.add_peer(liar, len(SMALL))
    bogus = lie(SMALL)
    for _ in range(3):
        while (request := fetcher.next_request(liar, 0.0)) is not None:
            fetcher.on_data(liar, answer(bogus, request), 0.0)
    assert [reason for _, reason in fetcher.take_banned()] == [
        "sent metadata that does not match the info-hash"
    ]
    assert not fetcher.add_peer(liar, len(SMALL))  # banned while its connection lasts
    fetcher.remove_peer(liar)  # its connection went: a new one is a new key
    del liar
    gc.collect()
    assert ref() is None


def test_failed_contributors_are_not_held_once_removed() -> None:
    fetcher: MetadataFetcher[Key] = MetadataFetcher(SMALL_IH)
    a, b = Key(), Key()
    refs = [weakref.ref(a), weakref.ref(b)]
    bogus = lie(SMALL)
    fetcher.add_peer(a, len(SMALL))
    fetcher.add_peer(b, len(SMALL))
    asked = [(peer, request) for peer in (a, b) for request in drain(fetcher, peer)]
    assert [(peer, request.piece) for peer, request in asked] == [(a, 0), (a, 1), (b, 2)]
    for peer, request in asked:  # b lies about the last piece
        fetcher.on_data(peer, answer(SMALL if peer is a else bogus, request), 0.0)
    del asked, peer, request
    assert fetcher.statistics().hash_failures == 1
    assert fetcher.statistics().single_source
    fetcher.remove_peer(a)
    fetcher.remove_peer(b)
    del a, b
    gc.collect()
    assert [ref() for ref in refs] == [None, None]


def test_bans_never_removed_are_bounded() -> None:
    fetcher: MetadataFetcher[Key] = MetadataFetcher(SMALL_IH)
    refs = []
    for _ in range(3000):
        liar = Key()
        refs.append(weakref.ref(liar))
        fetcher.add_peer(liar, 7)
        fetcher.add_peer(liar, 8)
        fetcher.add_peer(liar, 9)  # a second change of size: banned
    fetcher.take_banned()
    del liar
    gc.collect()
    assert fetcher.statistics().banned == 3000
    assert sum(ref() is not None for ref in refs) <= 1024


async def test_a_reconnecting_liar_leaves_nothing_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    liar_ex, leech_ex = MetadataExchange(), MetadataExchange()
    liar_ex._servers[SMALL_IH.swarm_ids()[0]] = MetadataServer(lie(SMALL))  # lies under it
    refs: list[weakref.ref[Any]] = []
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [liar_ex]) as liar,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):

            async def keep_fetching() -> None:
                while True:
                    with pytest.raises(MetadataFetchError):
                        await leech_ex.fetch(leech.manager, SMALL_IH, timeout=60)

            nursery.start_soon(keep_fetching)

            def connected(ref: weakref.ref[Any]) -> bool:
                peer = ref()
                return peer is not None and peer in leech.manager.peers

            for n in range(4):
                peer, _ = _managers.connect(leech, liar, info_hash=SMALL_IH, ephemeral=10000 + n)
                refs.append(weakref.ref(peer))
                del peer
                with trio.fail_after(60):
                    while connected(refs[-1]):
                        await trio.sleep(0.5)
                    await trio.sleep(1)  # its removal reaches the services
            assert leech_ex.statistics().peers_banned == 4
            leech.events.clear()  # the helper keeps every event, and so every peer
            liar.events.clear()
            gc.collect()
            # The last may still be the helper's event drain's loop variable.
            assert [ref() for ref in refs[:-1]] == [None] * 3
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- size kept


def test_pieces_survive_while_no_peer_offers_their_size() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(SMALL_IH)
    fetcher.add_peer("a", len(SMALL))
    for piece in (0, 1):
        request = fetcher.next_request("a", 0.0)
        assert request == MetadataRequest(piece)
        fetcher.on_data("a", answer(SMALL, request), 0.0)
    fetcher.remove_peer("a")  # the seeder's connection drops
    assert fetcher.metadata_size is None
    fetcher.add_peer("a2", len(SMALL))  # and comes back
    assert fetcher.statistics().pieces_have == 2
    request = fetcher.next_request("a2", 1.0)
    assert request == MetadataRequest(2)
    fetcher.on_data("a2", answer(SMALL, request), 1.0)
    assert fetcher.result() == SMALL


def test_the_size_with_most_pieces_is_kept() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(SMALL_IH)
    fetcher.add_peer("a", len(SMALL))
    for _ in range(2):
        request = fetcher.next_request("a", 0.0)
        assert request is not None
        fetcher.on_data("a", answer(SMALL, request), 0.0)
    fetcher.remove_peer("a")
    other = encode({b"length": 2, b"name": b"y", b"piece length": 16384, b"pieces": bytes(40020)})
    fetcher.add_peer("b", len(other))  # another size: one piece of it
    request = fetcher.next_request("b", 0.0)
    assert request is not None
    fetcher.on_data("b", answer(other, request), 0.0)
    fetcher.remove_peer("b")
    fetcher.add_peer("c", len(SMALL))
    assert fetcher.statistics().pieces_have == 2  # the two pieces, not the one
    request = fetcher.next_request("c", 1.0)
    assert request == MetadataRequest(2)
    fetcher.on_data("c", answer(SMALL, request), 1.0)
    assert fetcher.result() == SMALL


def test_kept_pieces_are_still_verified() -> None:
    fetcher: MetadataFetcher[str] = MetadataFetcher(SMALL_IH)
    bogus = lie(SMALL, at=100)  # piece 0 is wrong
    fetcher.add_peer("liar", len(SMALL))
    for _ in range(2):
        request = fetcher.next_request("liar", 0.0)
        assert request is not None
        fetcher.on_data("liar", answer(bogus, request), 0.0)
    fetcher.remove_peer("liar")
    fetcher.add_peer("honest", len(SMALL))
    asked = []
    while (request := fetcher.next_request("honest", 1.0)) is not None:
        asked.append(request.piece)
        fetcher.on_data("honest", answer(SMALL, request), 1.0)
        if fetcher.statistics().hash_failures:
            break
    assert asked == [2]  # the kept pieces 0 and 1 were used...
    assert fetcher.statistics().hash_failures == 1  # ...and the bad one failed the hash
    for now in (2.0, 3.0, 4.0, 5.0):
        while (request := fetcher.next_request("honest", now)) is not None:
            fetcher.on_data("honest", answer(SMALL, request), now)
    assert fetcher.result() == SMALL  # the liar's kept pieces failed once, then went
    assert fetcher.take_banned() == []  # the honest peer is never banned


# --------------------------------------------------------------------------- hashes


async def test_a_kept_fetch_does_not_answer_for_hashes_it_never_checked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    x = InfoHash(v1=hashlib.sha1(SMALL).digest())
    xy = InfoHash(v1=x.v1, v2=os.urandom(32))  # no dictionary hashes to both
    seed_ex, leech_ex = MetadataExchange(), MetadataExchange()
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [seed_ex]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            with pytest.raises(MetadataFetchError):
                await leech_ex.fetch(leech.manager, x, timeout=1)  # kept
            seed_ex.serve(x, SMALL)
            _managers.connect(leech, seed, info_hash=x)
            with pytest.raises(MetadataFetchError):
                await leech_ex.fetch(leech.manager, xy, timeout=30)
        nursery.cancel_scope.cancel()


async def test_a_fetch_naming_fewer_hashes_than_a_kept_one_completes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    x = InfoHash(v1=hashlib.sha1(SMALL).digest())
    xy = InfoHash(v1=x.v1, v2=os.urandom(32))
    seed_ex, leech_ex = MetadataExchange(), MetadataExchange()
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [seed_ex]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            with pytest.raises(MetadataFetchError):
                await leech_ex.fetch(leech.manager, xy, timeout=1)  # kept
            seed_ex.serve(x, SMALL)
            _managers.connect(leech, seed, info_hash=x)
            with trio.fail_after(30):
                assert await leech_ex.fetch(leech.manager, x, timeout=30) == SMALL
            assert leech_ex.statistics().peers_banned == 0
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- count


async def test_kept_metadata_fetches_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    exchange = MetadataExchange(max_kept_fetches=3)
    hashes = [InfoHash(v1=bytes([n]) * 20) for n in range(5)]
    async with trio.open_nursery() as nursery:
        async with node(nursery, addr(2), [exchange]) as leech:
            for info_hash in hashes:
                with pytest.raises(MetadataFetchError):
                    await exchange.fetch(leech.manager, info_hash, timeout=1)
            assert exchange.statistics().kept == 3
            kept = {fetch.info_hash for fetch in exchange._fetches.values()}
            assert kept == set(hashes[2:])  # the least recently asked forgotten first
        nursery.cancel_scope.cancel()
    with pytest.raises(ValueError, match="max_kept_fetches"):
        MetadataExchange(max_kept_fetches=-1)


async def test_kept_layer_fetches_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    exchange = PieceLayerExchange(max_kept_fetches=2)
    infos = [layered_info(8, seed=n)[0] for n in range(4)]
    async with trio.open_nursery() as nursery:
        async with node(nursery, addr(2), [exchange]) as leech:
            for info in infos:
                with pytest.raises(PieceLayerFetchError):
                    await exchange.fetch(leech.manager, info, timeout=1)
            assert exchange.statistics().kept == 2
            kept = {fetch.info_hash for fetch in exchange._fetches.values()}
            assert kept == {info.info_hash for info in infos[2:]}
        nursery.cancel_scope.cancel()
    with pytest.raises(ValueError, match="max_kept_fetches"):
        PieceLayerExchange(max_kept_fetches=-1)


# --------------------------------------------------------------------------- served


async def test_a_fetch_after_a_stop_during_the_build_leaves_the_layers_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    info, root, layer = layered_info(LARGE)
    seed_ex, leech_ex = PieceLayerExchange(), PieceLayerExchange()
    seed_ex.serve(info, {root: layer})
    started, release = threading.Event(), threading.Event()
    real = PieceLayerTree

    def slow(*args: Any, **kwargs: Any) -> PieceLayerTree:
        if threading.current_thread() is not threading.main_thread():
            started.set()
            release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(bip_peer._layers, "PieceLayerTree", slow)
    results: list[dict[bytes, bytes]] = []
    with trio.fail_after(30):
        async with (
            trio.open_nursery() as nursery,
            node(nursery, addr(1), [seed_ex]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            connect_v2(leech, seed, info)
            first = trio.CancelScope()

            async def fetch_first() -> None:
                with first:
                    await leech_ex.fetch(leech.manager, info, timeout=30)

            nursery.start_soon(fetch_first)
            assert await trio.to_thread.run_sync(started.wait, 10)  # verified, building
            [fetch] = set(leech_ex._fetches.values())
            first.cancel()  # the torrent removed...
            leech_ex.stop_serving(info.info_hash)  # ...and its exchanges told

            async def fetch_again() -> None:  # added back
                results.append(await leech_ex.fetch(leech.manager, info, timeout=30))

            async with trio.open_nursery() as inner:
                inner.start_soon(fetch_again)
                while fetch.waiters < 2:
                    await trio.sleep(0.01)
                release.set()
            assert results == [{root: layer}]
            assert leech_ex.serving(info.info_hash)
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- private


async def test_a_private_dictionary_a_kept_fetch_completes_is_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    info = encode(
        {b"length": 1, b"name": b"x", b"piece length": 16384, b"pieces": bytes(20), b"private": 1}
    )
    info_hash = InfoHash.from_info_bytes(info, v1=True)
    seed_ex, leech_ex = MetadataExchange(), MetadataExchange()
    seed_ex.serve(info_hash, info, private=False)  # a seeder that serves it all the same
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [Delayed(seed_ex, nursery, delay=8)]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            _managers.connect(leech, seed, info_hash=info_hash)
            with pytest.raises(MetadataFetchError):
                await leech_ex.fetch(leech.manager, info_hash, timeout=5)
            [kept] = set(leech_ex._fetches.values())
            with trio.fail_after(20):
                await kept.done.wait()  # the late answer completed it, no caller waiting
            assert set(leech_ex._fetches.values()) == {kept}  # kept, done, for the next call
            with trio.fail_after(60):
                assert await leech_ex.fetch(leech.manager, info_hash, timeout=60) == info
            assert seed_ex.statistics().requests_answered == 1  # not fetched twice
            assert not leech_ex.serving(info_hash)  # private: never served
            assert leech_ex.statistics().kept == 0  # the caller has it now
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- review of 00345ea


LONG = encode({b"name": b"x", b"pieces": b"a" * 30000})  # two metadata pieces
LONG_IH = InfoHash.from_info_bytes(LONG, v1=True)


def _starve(mode: str) -> tuple[bool, int]:
    """A failed assembly (the liar's piece 0 is wrong), then the liar, the single source,
    stays silent and every 5 s comes back as a new peer: by re-sending its extended
    handshake with a size we refuse, then the right one ("toggle"), or by a new connection
    made before the old one closes ("reconnect"). Whether the fetch completes within 120 s,
    and how often the honest peer was asked."""
    fetcher: MetadataFetcher[str] = MetadataFetcher(LONG_IH, request_interval=1.0)
    liar, honest, size = "A0", "Z", len(LONG)
    fetcher.add_peer(liar, size)
    fetcher.add_peer(honest, size)
    asked_honest = 0
    for step in range(1200):
        now = step / 10
        if step % 10 == 0:
            fetcher.handle_timer(now)
        if fetcher.done:
            break
        for peer in sorted(fetcher.peers):
            while (request := fetcher.next_request(peer, now)) is not None:
                if peer == honest:
                    asked_honest += 1
                    fetcher.on_data(peer, answer(LONG, request), now)
                elif not fetcher.statistics().single_source and request.piece == 0:
                    fetcher.on_data(peer, answer(bytes(len(LONG)), request), now)
        fetcher.take_banned()
        if fetcher.statistics().single_source and step % 50 == 0:
            if mode == "toggle":
                fetcher.add_peer(liar, 5 * 1024 * 1024)  # refused: it is not a disconnect
                fetcher.add_peer(liar, size)
            else:
                new = f"A{step}"
                fetcher.add_peer(new, size)
                fetcher.remove_peer(liar)
                liar = new
    return fetcher.done, asked_honest


@pytest.mark.parametrize("mode", ["toggle", "reconnect"])
def test_a_liar_coming_back_does_not_hold_the_single_source(mode: str) -> None:
    done, asked_honest = _starve(mode)
    assert done
    assert asked_honest > 1


class _Connection:
    def __init__(self) -> None:
        self.their_extension_ids: dict[str, int] = {"ut_metadata": 3}


class _PeerId:
    value = b"-BI0000-000000000000"


class _FakePeer:
    """What MetadataExchange reads of a Peer (the manager never sees it)."""

    def __init__(self) -> None:
        self.info_hash = SMALL_IH
        self.address = "127.0.0.1:6881"
        self.peer_id = _PeerId()
        self.connection = _Connection()
        self.extended_handshake: ExtendedHandshake | None = None


class _FakeManager:
    def __init__(self, exchange: MetadataExchange) -> None:
        self.services = [exchange]
        self.peers: list[_FakePeer] = []
        self.removed: list[str] = []

    def remove_peer(self, peer: object, reason: str) -> None:
        self.removed.append(reason)

    def send_nowait(self, peer: object, message: object) -> bool:
        return True


def _handshake(
    exchange: MetadataExchange, manager: _FakeManager, peer: _FakePeer, size: int | None
) -> None:
    peer.extended_handshake = ExtendedHandshake(m={"ut_metadata": 3}, metadata_size=size)
    exchange.message_received(manager, peer, peer.extended_handshake)  # type: ignore[arg-type]


async def _kept_fetch(exchange: MetadataExchange, manager: _FakeManager) -> MetadataFetcher[Any]:
    with pytest.raises(MetadataFetchError):
        await exchange.fetch(manager, SMALL_IH, timeout=1)  # type: ignore[arg-type]
    [fetch] = set(exchange._fetches.values())
    return fetch.fetcher


async def test_a_ban_made_at_handshake_drops_the_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange = MetadataExchange()
    manager = _FakeManager(exchange)
    fetcher = await _kept_fetch(exchange, manager)
    peer = _FakePeer()
    ref = weakref.ref(peer)
    for size in (100, 200, 300):  # a second change of size: banned
        _handshake(exchange, manager, peer, size)
    assert len(manager.removed) == 1  # the ban disconnects it
    assert manager.removed[0].startswith("bad metadata: changed its metadata_size")
    assert exchange.statistics().peers_banned == 1
    exchange.peer_removed(manager, peer)  # type: ignore[arg-type]
    del peer
    gc.collect()
    assert ref() is None  # nothing holds its connection
    assert fetcher.take_banned() == []


def test_a_departed_peer_is_not_reported_banned() -> None:
    fetcher: MetadataFetcher[Key] = MetadataFetcher(SMALL_IH)
    liar = Key()
    ref = weakref.ref(liar)
    for size in (7, 8, 9):
        fetcher.add_peer(liar, size)
    fetcher.remove_peer(liar)  # it left before its ban was taken
    del liar
    gc.collect()
    assert ref() is None
    assert fetcher.take_banned() == []


async def test_withdrawing_ut_metadata_does_not_lift_a_ban(
    autojump_clock: trio.testing.MockClock,
) -> None:
    exchange = MetadataExchange()
    manager = _FakeManager(exchange)
    fetcher = await _kept_fetch(exchange, manager)
    peer = _FakePeer()
    for size in (100, 200, 300):
        _handshake(exchange, manager, peer, size)
    peer.connection.their_extension_ids = {}  # a handshake withdrawing ut_metadata...
    _handshake(exchange, manager, peer, None)
    peer.connection.their_extension_ids = {"ut_metadata": 3}  # ...and one offering it again
    _handshake(exchange, manager, peer, 100)
    assert peer not in fetcher.peers  # still banned: its connection is the same


async def test_a_served_dictionary_is_checked_against_every_hash_named(
    autojump_clock: trio.testing.MockClock,
) -> None:
    x = InfoHash(v1=hashlib.sha1(SMALL).digest())
    xy = InfoHash(v1=x.v1, v2=os.urandom(32))  # no dictionary hashes to both
    exchange = MetadataExchange()
    exchange.serve(x, SMALL)
    manager = _FakeManager(exchange)
    with pytest.raises(MetadataFetchError):
        await exchange.fetch(manager, xy, timeout=1)  # type: ignore[arg-type]
    assert await exchange.fetch(manager, x, timeout=1) == SMALL  # type: ignore[arg-type]


def _liar_after_a_failed_assembly(mode: str) -> list[str]:
    """Two peers, the liar's piece wrong: a failed assembly. The liar then withdraws
    ut_metadata ("withdraw") or advertises a size we refuse ("refused"), offers the right
    size again, and lies on; the honest peer completes the fetch. The peers banned."""
    fetcher: MetadataFetcher[Key] = MetadataFetcher(SMALL_IH)
    honest, liar = Key(), Key()
    fetcher.add_peer(honest, len(SMALL))
    fetcher.add_peer(liar, len(SMALL))
    bogus = lie(SMALL)
    asked = [(peer, request) for peer in (honest, liar) for request in drain(fetcher, peer)]
    assert [peer for peer, _ in asked] == [honest, honest, liar]
    for peer, request in asked:
        fetcher.on_data(peer, answer(bogus if peer is liar else SMALL, request), 0.0)
    assert fetcher.statistics().single_source
    if mode == "withdraw":
        fetcher.withdraw_peer(liar)
    else:
        assert not fetcher.add_peer(liar, 10**9)
    assert fetcher.add_peer(liar, len(SMALL))
    for _ in range(10):
        for peer in (honest, liar):
            for request in drain(fetcher, peer):
                fetcher.on_data(peer, answer(bogus if peer is liar else SMALL, request), 0.0)
    assert fetcher.result() == SMALL
    names = {honest: "honest", liar: "liar"}
    return [names[peer] for peer, _ in fetcher.take_banned()]


@pytest.mark.parametrize("mode", ["withdraw", "refused"])
def test_a_liar_coming_back_keeps_its_part_in_a_failed_assembly(mode: str) -> None:
    # What it sent is kept while its connection lasts: the verified dictionary bans it.
    assert _liar_after_a_failed_assembly(mode) == ["liar"]


def test_a_withdrawn_liar_is_not_held_once_removed() -> None:
    fetcher: MetadataFetcher[Key] = MetadataFetcher(SMALL_IH)
    a, b = Key(), Key()
    refs = [weakref.ref(a), weakref.ref(b)]
    fetcher.add_peer(a, len(SMALL))
    fetcher.add_peer(b, len(SMALL))
    asked = [(peer, request) for peer in (a, b) for request in drain(fetcher, peer)]
    for peer, request in asked:  # b lies about the last piece
        fetcher.on_data(peer, answer(SMALL if peer is a else lie(SMALL), request), 0.0)
    del asked, peer, request
    assert fetcher.statistics().hash_failures == 1
    fetcher.withdraw_peer(b)  # what it sent is kept while its connection lasts...
    fetcher.remove_peer(b)  # ...and no longer
    fetcher.remove_peer(a)
    del a, b
    gc.collect()
    assert [ref() for ref in refs] == [None, None]
