"""bip_peer's logging: the records it emits, at which level, and how few."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from ipaddress import IPv4Address

import pytest
import trio
import trio.testing

from bip_bencode import encode
from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_peer._errors import RemoteProtocolError
from bip_peer._exchange import MetadataExchange, PeerExchange
from bip_peer._extended import MetadataData, MetadataRequest, PexMessage
from bip_peer._manager import (
    REASON_INTERNAL,
    REASON_PROTOCOL,
    ManagerEvent,
    MessageReceived,
    Peer,
    PeerManager,
    PeerManagerConfig,
    PeerRemoved,
    PeerService,
    open_peer_manager,
)
from bip_peer._messages import HaveAll, Interested, Piece, Request, Unchoke
from bip_peer._pex import PEX_FLOOD_ALLOWANCE

EXT = Extensions.EXTENSION_PROTOCOL | Extensions.FAST
NUM_PIECES = 16
BLOCK = bytes(range(256)) * 64  # 16 KiB
INFO = encode(
    {
        b"length": 1,
        b"name": b"x",
        b"piece length": 16384,
        b"pieces": random.Random(1).randbytes(5000 * 20),
    }
)  # seven metadata pieces
TORRENT = InfoHash.from_info_bytes(INFO, v1=True, v2=False)


def addr(n: int, port: int = 6881) -> PeerAddress:
    return PeerAddress(IPv4Address(f"10.0.0.{n}"), port)


def handshake(stream: trio.abc.Stream, address: PeerAddress, outbound: bool) -> CompletedHandshake:
    return CompletedHandshake(
        stream=stream,
        trailing=b"",
        peer_id=PeerId(b"-XX0000-" + bytes([0x40 + address.host.packed[-1]]) * 12),
        extensions=EXT,
        our_extensions=EXT,
        info_hash=TORRENT,
        swarm_id=TORRENT.swarm_ids()[0],
        address=address,
        direction="outbound" if outbound else "inbound",
    )


def connect(
    dialler: PeerManager, dialler_address: PeerAddress, listener: PeerManager, at: PeerAddress
) -> tuple[Peer, Peer]:
    """Join two managers as if ``dialler`` had dialled ``listener`` at ``at``."""
    ours, theirs = trio.testing.memory_stream_pair()
    a = dialler.add_peer(handshake(ours, at, True), num_pieces=NUM_PIECES)
    b = listener.add_peer(
        handshake(theirs, PeerAddress(dialler_address.host, 50000), False), num_pieces=NUM_PIECES
    )
    return a, b


async def message(events: AsyncIterator[ManagerEvent], kind: type) -> object:
    """The next received message of type ``kind`` (other events are skipped)."""
    with trio.fail_after(10):
        async for event in events:
            if isinstance(event, MessageReceived) and isinstance(event.message, kind):
                return event.message
    raise AssertionError("the manager closed")  # pragma: no cover


def above(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= level]


# -- the noise test ---------------------------------------------------------------------------


async def _transfer(blocks: int) -> int:
    """Move ``blocks`` blocks between two managers (with PEX and BEP 9 riding along)."""
    seed_metadata = MetadataExchange()
    seed_metadata.serve(TORRENT, INFO)
    received = 0
    sink = _Sink()
    seed_config = PeerManagerConfig(services=[seed_metadata, PeerExchange(sink)])
    leech_config = PeerManagerConfig(services=[MetadataExchange(), PeerExchange(sink)])
    async with open_peer_manager(seed_config) as seed, open_peer_manager(leech_config) as leech:
        on_leech, on_seed = connect(leech, addr(2), seed, addr(1))
        seed_events, leech_events = seed.events(), leech.events()
        await seed.send(on_seed, HaveAll())
        await seed.send(on_seed, Unchoke())
        await leech.send(on_leech, Interested())
        await message(leech_events, Unchoke)
        while received < blocks:
            window = min(NUM_PIECES, blocks - received)
            for index in range(window):
                await leech.send(on_leech, Request(index, 0, len(BLOCK)))
            for _ in range(window):
                request = await message(seed_events, Request)
                assert isinstance(request, Request)
                await seed.send(on_seed, Piece(request.index, request.begin, BLOCK))
            for _ in range(window):
                piece = await message(leech_events, Piece)
                assert isinstance(piece, Piece)
                received += 1
        # Then the seed goes away: one peer removed on each side.
        seed.remove_peer(on_seed, "done")
        with trio.fail_after(10):
            async for event in leech_events:  # pragma: no branch
                if isinstance(event, PeerRemoved):
                    break
    return received


class _Sink:
    def discovered(
        self, info_hash: InfoHash | bytes, addresses: Iterable[PeerAddress], source: str
    ) -> None:
        pass


async def test_a_transfer_logs_the_same_few_records_whatever_its_size(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    counts = []
    for blocks in (100, 400):
        caplog.clear()
        assert await _transfer(blocks) == blocks
        assert all(record.name.startswith("bip_peer.") for record in caplog.records), {
            record.name for record in caplog.records
        }
        assert not above(caplog, logging.INFO)
        counts.append(len(caplog.records))
    # Per-peer DEBUG records only (added, removed, closed): nothing per block or message.
    assert counts[0] == counts[1] > 0


# -- the manager ------------------------------------------------------------------------------


class Exploding:
    """A service whose ``message_received`` has a bug (or whose ``peer_added`` does)."""

    def __init__(self, where: str) -> None:
        self.where = where

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        return {}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        if self.where == "peer_added":
            raise RuntimeError("no peers")

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        if self.where == "message_received" and isinstance(message, Unchoke):
            raise RuntimeError("a bug")
        return False

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def tick(self, manager: PeerManager, now: float) -> None:
        pass


async def test_an_internal_error_is_an_error_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_peer")
    config = PeerManagerConfig(services=[Exploding("message_received")])
    async with open_peer_manager(config) as broken, open_peer_manager() as other:
        _, on_other = connect(broken, addr(9), other, addr(1))
        await other.send(on_other, Unchoke())
        with trio.fail_after(10):
            async for event in broken.events():  # pragma: no branch
                if isinstance(event, PeerRemoved):
                    assert event.reason == REASON_INTERNAL
                    break
    [error] = above(caplog, logging.INFO)
    assert error.name == "bip_peer.manager"
    assert error.levelno == logging.ERROR
    assert error.getMessage() == (
        "peer 10.0.0.1:6881 dropped after an internal error (a bug in bip_peer or a service)"
    )
    assert error.exc_info is not None
    assert isinstance(error.exc_info[1], RuntimeError)


async def test_an_internal_error_on_every_peer_does_not_flood_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A service bug that fails every peer: ERROR on the 1st, 2nd, 4th and 8th, DEBUG else."""
    caplog.set_level(logging.DEBUG, logger="bip_peer")
    config = PeerManagerConfig(services=[Exploding("message_received")])
    async with open_peer_manager(config) as broken, open_peer_manager() as other:
        events = broken.events()
        for n in range(1, 11):
            _, on_other = connect(broken, addr(20 + n), other, addr(n))
            await other.send(on_other, Unchoke())
            with trio.fail_after(10):
                async for event in events:  # pragma: no branch
                    if isinstance(event, PeerRemoved):
                        assert event.reason == REASON_INTERNAL
                        break
    dropped = [r for r in caplog.records if "dropped after an internal error" in r.getMessage()]
    assert [r.levelno == logging.ERROR for r in dropped] == [
        n in (1, 2, 4, 8) for n in range(1, 11)
    ]
    assert all(r.exc_info is not None for r in dropped)


async def test_an_error_raised_to_the_caller_is_not_logged_above_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_peer")
    local, _far = trio.testing.memory_stream_pair()
    async with open_peer_manager(PeerManagerConfig(services=[Exploding("peer_added")])) as manager:
        with pytest.raises(RuntimeError, match="no peers"):
            manager.add_peer(handshake(local, addr(1), True))
        await trio.testing.wait_all_tasks_blocked()
    assert not above(caplog, logging.INFO)
    assert "peer 10.0.0.1:6881 removed: internal error: no peers" in caplog.messages


async def test_a_protocol_violation_is_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_peer")
    local, far = trio.testing.memory_stream_pair()
    async with open_peer_manager() as manager:
        manager.add_peer(handshake(local, addr(1), True), num_pieces=NUM_PIECES)
        await far.send_all(b"\x00\x00\x00\x05\x04\x00\x00\x00\x63")  # a have beyond the count
        with trio.fail_after(10):
            async for event in manager.events():  # pragma: no branch
                if isinstance(event, PeerRemoved):
                    assert event.reason == REASON_PROTOCOL
                    break
    assert not above(caplog, logging.INFO)
    [removed] = [m for m in caplog.messages if m.startswith("peer 10.0.0.1:6881 removed: ")]
    assert removed.startswith(f"peer 10.0.0.1:6881 removed: {REASON_PROTOCOL}: ")
    assert any(
        m.startswith("peer 10.0.0.1:6881 added: outbound, plaintext") for m in caplog.messages
    )


# -- BEP 9 ------------------------------------------------------------------------------------


class LyingSeed:
    """Advertises the right size and answers every request with a corrupted piece."""

    def __init__(self, info: bytes) -> None:
        bad = bytearray(info)
        for start in range(0, len(bad), 16384):
            bad[start] ^= 0xFF
        self.info = bytes(bad)

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        return {"m": {"ut_metadata": 2}, "metadata_size": len(self.info)}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        if isinstance(message, MetadataRequest):
            start = message.piece * 16384
            chunk = self.info[start : start + 16384]
            manager.send_nowait(peer, MetadataData(message.piece, len(self.info), chunk))
            return True
        return False

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def tick(self, manager: PeerManager, now: float) -> None:
        pass


@asynccontextmanager
async def drained(config: PeerManagerConfig) -> AsyncIterator[PeerManager]:
    """A manager whose events a background task consumes."""
    async with trio.open_nursery() as nursery, open_peer_manager(config) as manager:

        async def drain() -> None:
            async for _ in manager.events():
                pass

        nursery.start_soon(drain)
        yield manager
        nursery.cancel_scope.cancel()


async def test_a_fetch_and_a_ban_are_info(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_peer")
    leech_exchange, seed_exchange = MetadataExchange(), MetadataExchange()
    seed_exchange.serve(TORRENT, INFO)
    liar: list[PeerService] = [LyingSeed(INFO)]
    async with (
        drained(PeerManagerConfig(services=[leech_exchange])) as leech,
        drained(PeerManagerConfig(services=liar)) as lying,
        drained(PeerManagerConfig(services=[seed_exchange])) as seed,
    ):
        connect(leech, addr(9), lying, addr(1))
        connect(leech, addr(9), seed, addr(2))
        with trio.fail_after(120):
            assert await leech_exchange.fetch(leech, TORRENT, timeout=120) == INFO
        await trio.sleep(1)
        assert leech_exchange.statistics().peers_banned == 1
    records = above(caplog, logging.INFO)
    assert all(record.name == "bip_peer.metadata" for record in records)
    assert all(record.levelno == logging.INFO for record in records)
    messages = [record.getMessage() for record in records]
    assert (
        messages[-1] == f"fetched the metadata of {TORRENT} from peers: {len(INFO)} bytes, verified"
    )
    [ban] = messages[:-1]
    assert ban.startswith("peer 10.0.0.1:6881 banned: sent metadata")
    assert ban.endswith(f"(torrent {TORRENT})")


async def test_pex_is_debug(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_peer")
    hub_config = PeerManagerConfig(services=[PeerExchange(_Sink())], listen_port=6881)
    async with drained(hub_config) as hub:
        leaves = []
        async with trio.open_nursery() as nursery:
            for n in (2, 3):
                config = PeerManagerConfig(services=[PeerExchange(_Sink())], listen_port=6881)
                leaf = await nursery.start(_run_drained, config)
                leaves.append(leaf)
                connect(hub, addr(1), leaf, addr(n))
            await trio.sleep(3)
            nursery.cancel_scope.cancel()
    assert not above(caplog, logging.INFO)
    assert any(
        m.startswith("PEX message from 10.0.0.1:50000: 1 new addresses (of 1 listed), 0 dropped")
        for m in caplog.messages
    ), caplog.messages
    assert {r.name for r in caplog.records if r.getMessage().startswith("PEX")} == {"bip_peer.pex"}


async def _run_drained(
    config: PeerManagerConfig,
    *,
    task_status: trio.TaskStatus[PeerManager] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with drained(config) as manager:
        task_status.started(manager)
        await trio.sleep_forever()


async def test_a_pex_flood_is_one_debug_record(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_peer")
    # Every message within the allowance is taken by default: an intake interval makes the
    # later ones' added addresses ignored, which is logged once.
    exchange = PeerExchange(_Sink(), min_receive_interval=45.0)
    async with open_peer_manager(PeerManagerConfig(services=[exchange])) as manager:
        local, _far = trio.testing.memory_stream_pair()
        peer = manager.add_peer(handshake(local, addr(1), True), num_pieces=NUM_PIECES)
        flood = PexMessage(
            added=(addr(7),), added_flags=(0,), added6=(), added6_flags=(), dropped=(), dropped6=()
        )
        # The allowance (libtorrent's six bunched messages): the first is taken, the rest
        # have their added addresses ignored with one record; the next within the minute ends
        # the connection.
        for _ in range(PEX_FLOOD_ALLOWANCE):
            assert exchange.message_received(manager, peer, flood)
        assert exchange.statistics().messages_ignored == PEX_FLOOD_ALLOWANCE - 1
        with pytest.raises(RemoteProtocolError):
            exchange.message_received(manager, peer, flood)
    flooding = [m for m in caplog.messages if "sent sooner than" in m]
    assert flooding == [
        "PEX message from 10.0.0.1:6881: added addresses ignored, sent sooner than "
        "min_receive_interval after the previous one (later ones without a record)"
    ]
    assert not above(caplog, logging.INFO)
