"""PieceLayerExchange over real PeerManagers joined by trio memory streams."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Mapping
from ipaddress import IPv4Address
from pathlib import Path

import _managers
import pytest
import trio
import trio.testing
from _managers import Node, node

from bip_handshake import Extensions, PeerAddress
from bip_metainfo import Info, InfoHash, Metainfo, create_torrent
from bip_peer._errors import LocalProtocolError, PieceLayerFetchError
from bip_peer._layers import PieceLayerExchange
from bip_peer._manager import (
    MessageReceived,
    Peer,
    PeerManager,
    PeerManagerConfig,
    open_peer_manager,
)
from bip_peer._messages import Hashes, HashReject, HashRequest

BLOCK = 16384
EXT = Extensions.EXTENSION_PROTOCOL | Extensions.FAST
EXT_V2 = EXT | Extensions.V2_UPGRADE


def _write(path: Path, size: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))


@pytest.fixture(scope="module")
def torrents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Metainfo]:
    root = tmp_path_factory.mktemp("layers")
    _write(root / "single.bin", 40 * BLOCK + 7, 1)
    multi = root / "multi"
    _write(multi / "a.bin", 11 * BLOCK + 5, 2)  # 12 pieces
    _write(multi / "b" / "b.bin", 3 * BLOCK, 3)  # 3 pieces
    _write(multi / "c.txt", 100, 4)  # one piece: no layer
    _write(multi / "d.bin", 2 * BLOCK + 1, 5)  # 3 pieces
    small = root / "small"
    _write(small / "x.txt", 1000, 6)
    _write(small / "y.txt", 2000, 7)
    return {
        "single": create_torrent(root / "single.bin", version="v2", piece_length=BLOCK),
        "multi": create_torrent(multi, version="v2", piece_length=BLOCK),
        "hybrid": create_torrent(multi, version="hybrid", piece_length=BLOCK),
        "big_pieces": create_torrent(multi, version="v2", piece_length=2 * BLOCK),
        "small": create_torrent(small, version="v2", piece_length=BLOCK),
    }


def addr(n: int, port: int = 6881) -> PeerAddress:
    return PeerAddress(IPv4Address(f"10.0.0.{n}"), port)


def connect(
    dialler: Node,
    listener: Node,
    info_hash: InfoHash,
    *,
    swarm_id: bytes | None = None,
    extensions: Extensions = EXT_V2,
    registered: InfoHash | None = None,
) -> tuple[Peer, Peer]:
    """Join two managers on ``swarm_id`` (by default the torrent's v2 id), the handshakes
    completed for ``registered`` (by default the torrent)."""
    return _managers.connect(
        dialler,
        listener,
        info_hash=registered or info_hash,
        swarm_id=swarm_id or info_hash.v2_truncated or info_hash.swarm_ids()[0],
        extensions=extensions,
    )


def expected_layers(metainfo: Metainfo) -> dict[bytes, bytes]:
    info = metainfo.info
    return {
        entry.pieces_root: metainfo.piece_layers[entry.pieces_root]
        for entry in info.files
        if entry.pieces_root is not None and entry.length > info.piece_length
    }


def info_only(metainfo: Metainfo) -> Info:
    """The info dictionary alone, as a magnet's metadata gives it."""
    return Info.from_bytes(metainfo.info.to_bytes())


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", ["single", "multi", "hybrid", "big_pieces"])
async def test_fetch_round_trip(
    torrents: dict[str, Metainfo], name: str, autojump_clock: trio.testing.MockClock
) -> None:
    metainfo = torrents[name]
    info = info_only(metainfo)
    seed_ex, leech_ex = PieceLayerExchange(), PieceLayerExchange(max_hashes_per_request=8)
    seed_ex.serve(metainfo.info, metainfo.piece_layers)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [seed_ex]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            connect(leech, seed, info.info_hash)
            with trio.fail_after(5):
                got = await leech_ex.fetch(leech.manager, info, timeout=30)
            assert got == expected_layers(metainfo)
            assert got  # every torrent here has a file larger than one piece
            assert leech_ex.serving(info.info_hash)  # what we fetched, we serve
            stats = leech_ex.statistics()
            assert stats.fetching == 0
            assert stats.peers_banned == 0
            assert stats.chunks_fetched == seed_ex.statistics().requests_answered
            assert seed_ex.statistics().requests_rejected == 0
            # Served now: a second fetch returns at once.
            assert await leech_ex.fetch(leech.manager, info, timeout=1) == got
            # Hash messages are the services' own, never events.
            assert not any(
                isinstance(e, MessageReceived) and isinstance(e.message, HashRequest | Hashes)
                for e in seed.events + leech.events
            )
        nursery.cancel_scope.cancel()


async def test_chunks_of_a_long_layer_from_several_peers(
    torrents: dict[str, Metainfo], autojump_clock: trio.testing.MockClock
) -> None:
    metainfo = torrents["single"]  # 41 pieces: chunks of 4, the last padded
    info = info_only(metainfo)
    seeds = [PieceLayerExchange() for _ in range(3)]
    for ex in seeds:
        ex.serve(metainfo.info, metainfo.piece_layers)
    leech_ex = PieceLayerExchange(max_hashes_per_request=4, max_requests_per_peer=2)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [seeds[0]]) as s1,
            node(nursery, addr(2), [seeds[1]]) as s2,
            node(nursery, addr(3), [seeds[2]]) as s3,
            node(nursery, addr(9), [leech_ex]) as leech,
        ):
            for seed in (s1, s2, s3):
                connect(leech, seed, info.info_hash)
            with trio.fail_after(5):
                got = await leech_ex.fetch(leech.manager, info, timeout=30)
            assert got == expected_layers(metainfo)
            answered = [ex.statistics().requests_answered for ex in seeds]
            assert sum(answered) == 11  # ceil(41 / 4)
            assert sum(1 for n in answered if n) >= 2  # in parallel
        nursery.cancel_scope.cancel()


async def test_torrent_of_small_files_needs_nothing(
    torrents: dict[str, Metainfo], autojump_clock: trio.testing.MockClock
) -> None:
    exchange = PieceLayerExchange()
    async with trio.open_nursery() as nursery:
        async with node(nursery, addr(1), [exchange]) as leech:
            assert await exchange.fetch(leech.manager, torrents["small"].info, timeout=1) == {}
        nursery.cancel_scope.cancel()


async def test_peer_arriving_during_fetch_and_v2_only_registration(
    torrents: dict[str, Metainfo], autojump_clock: trio.testing.MockClock
) -> None:
    metainfo = torrents["hybrid"]
    info = info_only(metainfo)
    v2_only = InfoHash(v2=info.info_hash.v2)  # a v2 magnet's torrent: no v1 hash known
    seed_ex, leech_ex = PieceLayerExchange(), PieceLayerExchange()
    seed_ex.serve(metainfo.info, metainfo.piece_layers)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [seed_ex]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            result: dict[str, dict[bytes, bytes]] = {}

            async def fetch() -> None:
                result["layers"] = await leech_ex.fetch(leech.manager, info, timeout=30)

            nursery.start_soon(fetch)
            await trio.sleep(3)
            assert leech_ex.statistics().fetching == 1
            connect(leech, seed, info.info_hash, extensions=EXT, registered=v2_only)
            with trio.fail_after(5):
                while "layers" not in result:
                    await trio.sleep(0.1)
            assert result["layers"] == expected_layers(metainfo)
        nursery.cancel_scope.cancel()


async def test_hybrid_v1_connection_without_upgrade_is_not_asked(
    torrents: dict[str, Metainfo], autojump_clock: trio.testing.MockClock
) -> None:
    metainfo = torrents["hybrid"]
    info = info_only(metainfo)
    seed_ex, leech_ex = PieceLayerExchange(), PieceLayerExchange()
    seed_ex.serve(metainfo.info, metainfo.piece_layers)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [seed_ex]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            connect(leech, seed, info.info_hash, swarm_id=info.info_hash.v1, extensions=EXT)
            with pytest.raises(PieceLayerFetchError, match="0 v2 peers"):
                await leech_ex.fetch(leech.manager, info, timeout=20)
            assert seed_ex.statistics().requests_answered == 0
            # With the upgrade bit on both sides, the v1 connection is a v2 one.
            connect(leech, seed, info.info_hash, swarm_id=info.info_hash.v1, extensions=EXT_V2)
            with trio.fail_after(5):
                got = await leech_ex.fetch(leech.manager, info, timeout=20)
            assert got == expected_layers(metainfo)
        nursery.cancel_scope.cancel()


async def test_hybrid_met_on_the_v2_id_without_the_upgrade_bit(
    torrents: dict[str, Metainfo], autojump_clock: trio.testing.MockClock
) -> None:
    metainfo = torrents["hybrid"]
    info = info_only(metainfo)
    seed_ex, leech_ex = PieceLayerExchange(), PieceLayerExchange()
    seed_ex.serve(metainfo.info, metainfo.piece_layers)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [seed_ex]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            connect(leech, seed, info.info_hash, extensions=EXT)  # on the truncated v2 id
            with trio.fail_after(5):
                got = await leech_ex.fetch(leech.manager, info, timeout=20)
            assert got == expected_layers(metainfo)
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- misbehaving peers


class BadServer:
    """Answers hash requests with flipped hashes, or (``silent``) never, or (``reject``) no."""

    def __init__(self, exchange: PieceLayerExchange, mode: str) -> None:
        self.exchange = exchange
        self.mode = mode
        self.requests = 0

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        return {}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        if not isinstance(message, HashRequest):
            return False
        self.requests += 1
        fields = (
            message.pieces_root,
            message.base_layer,
            message.index,
            message.length,
            message.proof_layers,
        )
        if self.mode == "reject":
            manager.send_nowait(peer, HashReject(*fields))
        elif self.mode == "lie":
            served = next(iter(self.exchange._served.values()))
            tree = served.trees[message.pieces_root]
            good = tree.hashes(*fields[1:])
            assert good is not None
            bad = bytearray(good)
            bad[5] ^= 1
            manager.send_nowait(peer, Hashes(*fields, bytes(bad)))
        elif self.mode == "short":
            manager.send_nowait(peer, Hashes(*fields, bytes(32)))
        return True  # "silent": swallowed

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def tick(self, manager: PeerManager, now: float) -> None:
        pass


@pytest.mark.parametrize("mode", ["lie", "short"])
async def test_liar_banned_and_fetch_completes_from_an_honest_peer(
    torrents: dict[str, Metainfo], mode: str, autojump_clock: trio.testing.MockClock
) -> None:
    metainfo = torrents["multi"]
    info = info_only(metainfo)
    honest_ex, leech_ex = PieceLayerExchange(), PieceLayerExchange()
    honest_ex.serve(metainfo.info, metainfo.piece_layers)
    reference = PieceLayerExchange()
    reference.serve(metainfo.info, metainfo.piece_layers)
    liar_service = BadServer(reference, mode)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [liar_service]) as liar,
            node(nursery, addr(3), [leech_ex]) as leech,
        ):
            connect(leech, liar, info.info_hash)
            fetching = trio.Event()
            result: dict[str, dict[bytes, bytes]] = {}

            async def fetch() -> None:
                fetching.set()
                result["layers"] = await leech_ex.fetch(leech.manager, info, timeout=60)

            nursery.start_soon(fetch)
            with trio.fail_after(5):
                while not leech.removed():
                    await trio.sleep(0.1)
            assert "bad piece layer hashes" in leech.removed()[0].reason
            assert leech_ex.statistics().peers_banned == 1
            async with node(nursery, addr(2), [honest_ex]) as honest:
                connect(leech, honest, info.info_hash)
                with trio.fail_after(5):
                    while "layers" not in result:
                        await trio.sleep(0.1)
            assert result["layers"] == expected_layers(metainfo)
        nursery.cancel_scope.cancel()


async def test_silent_peer_times_out_and_another_answers(
    torrents: dict[str, Metainfo], autojump_clock: trio.testing.MockClock
) -> None:
    metainfo = torrents["multi"]
    info = info_only(metainfo)
    honest_ex = PieceLayerExchange()
    honest_ex.serve(metainfo.info, metainfo.piece_layers)
    leech_ex = PieceLayerExchange(request_timeout=5)
    silent = BadServer(honest_ex, "silent")
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [silent]) as quiet,
            node(nursery, addr(3), [leech_ex]) as leech,
        ):
            connect(leech, quiet, info.info_hash)
            with pytest.raises(PieceLayerFetchError, match="timeouts"):
                await leech_ex.fetch(leech.manager, info, timeout=12)
            assert leech_ex.statistics().requests_timed_out >= 3
            assert leech_ex.statistics().fetching == 0
            asked = silent.requests
            assert asked == 3  # one per file, never twice while unanswered
            async with node(nursery, addr(2), [honest_ex]) as honest:
                connect(leech, honest, info.info_hash)
                with trio.fail_after(30):
                    got = await leech_ex.fetch(leech.manager, info, timeout=30)
            assert got == expected_layers(metainfo)
            assert silent.requests == asked  # its unanswered requests are not sent twice
        nursery.cancel_scope.cancel()


class SlowServer(BadServer):
    """Answers every request right, ``delay`` seconds late."""

    def __init__(self, exchange: PieceLayerExchange, nursery: trio.Nursery, delay: float) -> None:
        super().__init__(exchange, "slow")
        self.nursery = nursery
        self.delay = delay

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        if not isinstance(message, HashRequest):
            return False
        self.requests += 1

        async def reply() -> None:
            await trio.sleep(self.delay)
            served = next(iter(self.exchange._served.values()))
            fields = (message.base_layer, message.index, message.length, message.proof_layers)
            hashes = served.trees[message.pieces_root].hashes(*fields)
            assert hashes is not None
            manager.send_nowait(peer, Hashes(message.pieces_root, *fields, hashes))

        self.nursery.start_soon(reply)
        return True


async def test_late_answers_after_a_timed_out_fetch_serve_the_next_one(
    torrents: dict[str, Metainfo], autojump_clock: trio.testing.MockClock
) -> None:
    metainfo = torrents["multi"]
    info = info_only(metainfo)
    reference = PieceLayerExchange()
    reference.serve(metainfo.info, metainfo.piece_layers)
    leech_ex = PieceLayerExchange(request_timeout=5)
    async with trio.open_nursery() as nursery:
        slow_service = SlowServer(reference, nursery, delay=15)
        async with (
            node(nursery, addr(1), [slow_service]) as slow,
            node(nursery, addr(3), [leech_ex]) as leech,
        ):
            connect(leech, slow, info.info_hash)
            with pytest.raises(PieceLayerFetchError):
                await leech_ex.fetch(leech.manager, info, timeout=10)
            start = trio.current_time()
            with trio.fail_after(30):
                got = await leech_ex.fetch(leech.manager, info, timeout=30)
            assert got == expected_layers(metainfo)
            assert trio.current_time() - start == pytest.approx(5, abs=1.5)  # at 15 s
            assert slow_service.requests == 3  # the next fetch waited, it did not ask again
            assert not leech.removed()
        nursery.cancel_scope.cancel()


async def test_rejecting_peer_is_left_alone_for_a_while(
    torrents: dict[str, Metainfo], autojump_clock: trio.testing.MockClock
) -> None:
    metainfo = torrents["single"]
    info = info_only(metainfo)
    rejecter = BadServer(PieceLayerExchange(), "reject")
    leech_ex = PieceLayerExchange(reject_backoff=10)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [rejecter]) as refusing,
            node(nursery, addr(3), [leech_ex]) as leech,
        ):
            connect(leech, refusing, info.info_hash)
            with pytest.raises(PieceLayerFetchError):
                await leech_ex.fetch(leech.manager, info, timeout=25)
            # One request, then one every 10 s backoff: about three in 25 s, not a storm.
            assert 2 <= rejecter.requests <= 4
            assert not leech.removed()  # a reject is no lie
        nursery.cancel_scope.cancel()


async def test_fetch_times_out_without_peers(
    torrents: dict[str, Metainfo], autojump_clock: trio.testing.MockClock
) -> None:
    exchange = PieceLayerExchange()
    async with trio.open_nursery() as nursery:
        async with node(nursery, addr(1), [exchange]) as leech:
            start = trio.current_time()
            with pytest.raises(PieceLayerFetchError, match="within 7"):
                await exchange.fetch(leech.manager, torrents["multi"].info, timeout=7)
            assert trio.current_time() - start == pytest.approx(7)
            assert exchange.statistics().fetching == 0
        nursery.cancel_scope.cancel()


async def test_a_fetch_cancelled_by_its_caller_leaves_nothing_behind(
    torrents: dict[str, Metainfo], autojump_clock: trio.testing.MockClock
) -> None:
    metainfo = torrents["multi"]
    info = info_only(metainfo)
    reference = PieceLayerExchange()
    reference.serve(metainfo.info, metainfo.piece_layers)
    leech_ex = PieceLayerExchange(request_timeout=5)
    async with trio.open_nursery() as nursery:
        slow_service = SlowServer(reference, nursery, delay=8)
        async with (
            node(nursery, addr(1), [slow_service]) as slow,
            node(nursery, addr(3), [leech_ex]) as leech,
        ):
            connect(leech, slow, info.info_hash)
            with trio.move_on_after(2) as scope:
                await leech_ex.fetch(leech.manager, info, timeout=30)
            assert scope.cancelled_caught
            assert leech_ex.statistics().fetching == 0
            assert not leech_ex.serving(info.info_hash)
            # The answers to the cancelled fetch's requests feed the next one, asked nothing.
            with trio.fail_after(30):
                got = await leech_ex.fetch(leech.manager, info, timeout=30)
            assert got == expected_layers(metainfo)
            assert slow_service.requests == 3
            assert leech_ex.statistics().fetching == 0
        nursery.cancel_scope.cancel()


async def test_two_fetches_of_one_torrent_share_the_work(
    torrents: dict[str, Metainfo], autojump_clock: trio.testing.MockClock
) -> None:
    metainfo = torrents["multi"]
    info = info_only(metainfo)
    seed_ex, leech_ex = PieceLayerExchange(), PieceLayerExchange()
    seed_ex.serve(metainfo.info, metainfo.piece_layers)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [seed_ex]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            results: list[dict[bytes, bytes]] = []

            async def fetch(timeout: float) -> None:
                with contextlib.suppress(PieceLayerFetchError):
                    results.append(await leech_ex.fetch(leech.manager, info, timeout=timeout))

            async with trio.open_nursery() as fetches:
                fetches.start_soon(fetch, 1.0)  # gives up before any peer is there
                fetches.start_soon(fetch, 30.0)
                await trio.sleep(0.5)
                assert leech_ex.statistics().fetching == 1
                await trio.sleep(1)
                assert leech_ex.statistics().fetching == 1  # the other still waits
                connect(leech, seed, info.info_hash)
            assert results == [expected_layers(metainfo)]
            assert seed_ex.statistics().requests_answered == 3  # one per file, not two
        nursery.cancel_scope.cancel()


async def test_a_peer_leaving_mid_request_hands_its_chunks_on_before_the_timeout(
    torrents: dict[str, Metainfo], autojump_clock: trio.testing.MockClock
) -> None:
    metainfo = torrents["multi"]
    info = info_only(metainfo)
    honest_ex = PieceLayerExchange()
    honest_ex.serve(metainfo.info, metainfo.piece_layers)
    silent = BadServer(honest_ex, "silent")
    leech_ex = PieceLayerExchange(request_timeout=60)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [silent]) as quiet,
            node(nursery, addr(3), [leech_ex]) as leech,
        ):
            gone, _ = connect(leech, quiet, info.info_hash)
            result: dict[str, dict[bytes, bytes]] = {}

            async def fetch() -> None:
                result["layers"] = await leech_ex.fetch(leech.manager, info, timeout=120)

            nursery.start_soon(fetch)
            with trio.fail_after(5):
                while silent.requests < 3:  # every chunk is asked of the silent peer
                    await trio.sleep(0.1)
            async with node(nursery, addr(2), [honest_ex]) as honest:
                connect(leech, honest, info.info_hash)
                await trio.sleep(1)
                assert honest_ex.statistics().requests_answered == 0  # nothing left to ask
                start = trio.current_time()
                leech.manager.remove_peer(gone, "test")
                with trio.fail_after(30):
                    while "layers" not in result:
                        await trio.sleep(0.1)
                assert trio.current_time() - start < 5  # the next tick, not the timeout
            assert result["layers"] == expected_layers(metainfo)
            assert leech_ex.statistics().requests_timed_out == 0
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- serving


class Asker:
    """Sends ``requests`` when the peer is added and records the answers."""

    def __init__(self, requests: list[HashRequest]) -> None:
        self.requests = requests
        self.answers: list[Hashes | HashReject] = []

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        return {}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        for request in self.requests:
            manager.send_nowait(peer, request)

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        if isinstance(message, Hashes | HashReject):
            self.answers.append(message)
            return True
        return False

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def tick(self, manager: PeerManager, now: float) -> None:
        pass


async def _ask(
    serving: PieceLayerExchange, requests: list[HashRequest], info_hash: InfoHash
) -> list[Hashes | HashReject]:
    asker = Asker(requests)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [serving]) as seed,
            node(nursery, addr(2), [asker]) as client,
        ):
            connect(client, seed, info_hash)
            with trio.fail_after(5):
                while len(asker.answers) < len(requests):
                    await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    return asker.answers


async def test_bad_requests_are_rejected(
    torrents: dict[str, Metainfo], autojump_clock: trio.testing.MockClock
) -> None:
    metainfo = torrents["big_pieces"]  # piece layer is layer 1
    info = metainfo.info
    a = next(e for e in info.files if e.path[-1] == "a.bin")  # 12 blocks, 6 pieces: depth 4
    c = next(e for e in info.files if e.path[-1] == "c.txt")
    assert a.pieces_root is not None
    assert c.pieces_root is not None
    root = a.pieces_root
    serving = PieceLayerExchange(max_hashes_per_request=4)
    serving.serve(info, metainfo.piece_layers)
    good = [
        HashRequest(root, 1, 0, 4, 2),  # half the piece layer, proof to the root
        HashRequest(root, 1, 4, 4, 2),  # the other half: two real hashes, two pads
        HashRequest(root, 2, 2, 2, 0),  # a layer above the piece layer, no proof
        HashRequest(root, 3, 1, 1, 0),  # one hash (libtorrent's last lone piece)
    ]
    bad = [
        HashRequest(root, 0, 0, 2, 0),  # below the piece layer: needs block hashes
        HashRequest(bytes(32), 1, 0, 2, 0),  # unknown root
        HashRequest(c.pieces_root, 0, 0, 1, 0),  # a one-block file: nothing to give
        HashRequest(root, 1, 1, 2, 0),  # misaligned
        HashRequest(root, 1, 0, 3, 0),  # not a power of two
        HashRequest(root, 1, 8, 2, 0),  # past the padded layer
        HashRequest(root, 1, 0, 2, 3),  # proof past the root
        HashRequest(root, 4, 0, 1, 0),  # the root's own layer
        HashRequest(root, 1, 0, 8, 2),  # more than we give at once
    ]
    answers = await _ask(serving, good + bad, info.info_hash)

    def key(m: HashRequest | Hashes | HashReject) -> tuple[object, ...]:
        return (m.pieces_root, m.base_layer, m.index, m.length, m.proof_layers)

    by_key = {key(m): m for m in answers}
    for request in good:
        assert isinstance(by_key[key(request)], Hashes), request
    for request in bad:
        assert isinstance(by_key[key(request)], HashReject), request
    layer = metainfo.piece_layers[root]
    first, second = by_key[key(good[0])], by_key[key(good[1])]
    assert isinstance(first, Hashes)
    assert isinstance(second, Hashes)
    assert len(first.hashes) == 5 * 32  # four hashes and the other half's root
    assert first.hashes[:128] == layer[:128]
    assert second.hashes[:64] == layer[128:]
    stats = serving.statistics()
    assert (stats.requests_answered, stats.requests_rejected) == (len(good), len(bad))


async def test_a_request_flood_is_bounded(
    torrents: dict[str, Metainfo], autojump_clock: trio.testing.MockClock
) -> None:
    metainfo = torrents["single"]
    root = next(iter(expected_layers(metainfo)))
    serving = PieceLayerExchange(serve_burst=10, serve_rate=0.001)
    serving.serve(metainfo.info, metainfo.piece_layers)
    requests = [HashRequest(root, 0, i * 2, 2, 0) for i in range(30)]
    requests += [HashRequest(bytes(32), 0, i * 2, 2, 0) for i in range(30)]  # bad ones too
    answers = await _ask(serving, requests, metainfo.info.info_hash)
    assert sum(isinstance(a, Hashes) for a in answers) == 10
    assert sum(isinstance(a, HashReject) for a in answers) == 50
    assert serving.statistics().requests_rejected == 50


async def test_stop_serving(
    torrents: dict[str, Metainfo], autojump_clock: trio.testing.MockClock
) -> None:
    metainfo = torrents["single"]
    root = next(iter(expected_layers(metainfo)))
    serving = PieceLayerExchange()
    serving.serve(metainfo.info, metainfo.piece_layers)
    assert serving.serving(metainfo.info.info_hash)
    assert serving.statistics().serving == 1
    serving.stop_serving(metainfo.info.info_hash)
    assert not serving.serving(metainfo.info.info_hash)
    answers = await _ask(serving, [HashRequest(root, 0, 0, 2, 0)], metainfo.info.info_hash)
    assert isinstance(answers[0], HashReject)


async def test_answers_a_full_send_queue_refused_are_sent_later(
    torrents: dict[str, Metainfo], autojump_clock: trio.testing.MockClock
) -> None:
    """A dropped answer would never be asked for again (both connections keep the request
    pending until it is answered): the answers wait for room instead."""
    metainfo = torrents["single"]
    root = next(iter(expected_layers(metainfo)))
    serving = PieceLayerExchange()
    serving.serve(metainfo.info, metainfo.piece_layers)
    requests = [HashRequest(root, 0, i * 2, 2, 0) for i in range(8)]
    requests.append(HashRequest(bytes(32), 0, 0, 2, 0))  # a reject waits its turn too
    asker = Asker(requests)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [serving], send_queue_size=1) as seed,
            node(nursery, addr(2), [asker]) as client,
        ):
            _, theirs = connect(client, seed, metainfo.info.info_hash)
            with trio.fail_after(30):
                while len(asker.answers) < len(requests):
                    await trio.sleep(0.1)
            assert sum(isinstance(a, Hashes) for a in asker.answers) == 8
            assert not theirs.connection.peer_hash_requests
            assert not serving._unsent
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- arguments


def test_serve_checks_the_layers(torrents: dict[str, Metainfo]) -> None:
    metainfo = torrents["multi"]
    exchange = PieceLayerExchange()
    layers = dict(metainfo.piece_layers)
    root = next(iter(expected_layers(metainfo)))
    with pytest.raises(ValueError, match="no piece layer"):
        exchange.serve(metainfo.info, {k: v for k, v in layers.items() if k != root})
    wrong = bytearray(layers[root])
    wrong[0] ^= 1
    with pytest.raises(ValueError, match="does not hash"):
        exchange.serve(metainfo.info, {**layers, root: bytes(wrong)})
    with pytest.raises(ValueError, match="hashes"):
        exchange.serve(metainfo.info, {**layers, root: layers[root][:-32]})
    assert not exchange.serving(metainfo.info.info_hash)


@pytest.mark.parametrize(
    "options",
    [
        {"request_timeout": 0},
        {"max_hashes_per_request": 3},
        {"max_hashes_per_request": 0},
        {"max_requests_per_peer": 0},
        {"max_requests_per_peer": 1.5},
        {"reject_backoff": -1},
        {"serve_burst": True},
        {"serve_rate": 0},
    ],
)
def test_options_checked_at_construction(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must be a positive|power of two"):
        PieceLayerExchange(**options)  # type: ignore[arg-type]


async def test_fetch_arguments(torrents: dict[str, Metainfo], tmp_path: Path) -> None:
    exchange = PieceLayerExchange()
    _write(tmp_path / "v1.bin", 3 * BLOCK, 9)
    v1 = create_torrent(tmp_path / "v1.bin", version="v1", piece_length=BLOCK)
    async with open_peer_manager(PeerManagerConfig()) as bare:
        with pytest.raises(LocalProtocolError):
            await exchange.fetch(bare, torrents["multi"].info, timeout=1)
    async with open_peer_manager(PeerManagerConfig(services=[exchange])) as manager:
        with pytest.raises(ValueError, match="v1"):
            await exchange.fetch(manager, v1.info, timeout=1)
        with pytest.raises(ValueError, match="timeout"):
            await exchange.fetch(manager, torrents["multi"].info, timeout=0)
    with pytest.raises(ValueError, match="v1"):
        exchange.serve(v1.info, {})
