"""The torrent's upload side (bip._client._upload.Uploader) against a real PeerManager over
in-memory streams and a fake disk: per-peer queues bounded under request/cancel churn, turns
taken round robin, a send watermark per peer, gone peers forgotten, disk errors skipped."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import cast

import pytest
import trio
import trio.testing

from bip._client._upload import SEND_LOW_WATERMARK, SEND_WATERMARK, Uploader
from bip_disk import DiskManager, StorageError, TorrentHandle
from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_peer import (
    NEED_DATA,
    Cancel,
    Choke,
    ConnectionLimits,
    HaveAll,
    Interested,
    KeepAlive,
    MessageReceived,
    Peer,
    PeerConnection,
    PeerManager,
    PeerManagerConfig,
    Piece,
    Request,
    Unchoke,
    open_peer_manager,
)
from bip_select import Block

TORRENT = InfoHash(v1=b"\x33" * 20)
NUM_PIECES = 64
BLOCK = 16384
HANDLE = cast(TorrentHandle, object())  # the fake disk never looks at it
DEADLINE = 20.0  # real seconds: a test that hangs fails


@dataclass
class FakeDisk:
    """Blocks of zeros; remembers every read, in order; fails the keys in ``failing``."""

    reads: list[tuple[int, int, int]] = field(default_factory=list)
    failing: set[tuple[int, int, int]] = field(default_factory=set)
    gate: trio.Event | None = None  # reads wait for it when set

    async def read_block(self, handle: object, index: int, begin: int, length: int) -> bytes:
        key = (index, begin, length)
        self.reads.append(key)
        if self.gate is not None:
            await self.gate.wait()
        await trio.sleep(0)
        if key in self.failing:
            raise StorageError(f"cannot read {key}")
        return bytes(length)


class Remote:
    """A leecher at the far end of a stream: sends requests, reads pieces when told to."""

    def __init__(self, stream: trio.abc.Stream, reqq: int) -> None:
        self.stream = stream
        self.connection = PeerConnection(
            num_pieces=NUM_PIECES,
            info_hash=TORRENT,
            our_extensions=Extensions.FAST,
            their_extensions=Extensions.FAST,
            limits=ConnectionLimits(max_peer_requests=reqq),
        )
        self.pieces: list[tuple[int, int]] = []

    async def send(self, *messages: object) -> None:
        data = b"".join(self.connection.send(m) for m in messages)  # type: ignore[arg-type]
        await self.stream.send_all(data)

    async def read_until(self, done: Callable[[], bool]) -> None:
        """Read what the seed sends until ``done()``."""
        while not done():
            data = await self.stream.receive_some()
            assert data, "the seed closed the connection"
            self.connection.receive_data(data)
            while (event := self.connection.next_event()) is not NEED_DATA:
                if isinstance(event, Piece):
                    self.pieces.append((event.index, event.begin))


@dataclass
class Seed:
    manager: PeerManager
    uploader: Uploader
    disk: FakeDisk
    sent: list[tuple[Peer, Block]]
    nursery: trio.Nursery
    reqq: int

    async def connect(self, n: int, *, lockstep: bool = False) -> tuple[Peer, Remote]:
        """A leecher at 10.0.0.n, unchoked by us and interested."""
        pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
        local, far = pair()
        handshake = CompletedHandshake(
            stream=local,
            trailing=b"",
            peer_id=PeerId(b"-XX0000-" + bytes([n]) * 12),
            extensions=Extensions.FAST,
            our_extensions=Extensions.FAST,
            info_hash=TORRENT,
            swarm_id=TORRENT.swarm_ids()[0],
            address=PeerAddress(IPv4Address(f"10.0.0.{n}"), 6881),
            direction="inbound",
        )
        peer = self.manager.add_peer(handshake, num_pieces=NUM_PIECES)
        remote = Remote(far, self.reqq)
        await self.manager.send(peer, HaveAll())
        await self.manager.send(peer, Unchoke())
        # The remote requests only once it has read that it is unchoked.
        await remote.read_until(lambda: not remote.connection.peer_choking)
        await remote.send(Interested())
        return peer, remote

    async def settle(self) -> None:
        """Let every message in flight reach the uploader."""
        await trio.testing.wait_all_tasks_blocked()


@asynccontextmanager
async def seed(
    *,
    workers: int = 1,
    watermark: int = SEND_WATERMARK,
    low_watermark: int = SEND_LOW_WATERMARK,
    reqq: int = 500,
    run: bool = True,
    config: PeerManagerConfig | None = None,
) -> AsyncIterator[Seed]:
    disk = FakeDisk()
    sent: list[tuple[Peer, Block]] = []
    config = config or PeerManagerConfig(limits=ConnectionLimits(max_peer_requests=reqq))
    with trio.fail_after(DEADLINE):
        async with open_peer_manager(config) as manager, trio.open_nursery() as nursery:
            uploader = Uploader(
                cast(DiskManager, disk),
                manager,
                on_sent=lambda peer, block: sent.append((peer, block)),
                watermark=watermark,
                low_watermark=low_watermark,
            )

            async def dispatch() -> None:
                async for event in manager.events():
                    if isinstance(event, MessageReceived) and isinstance(event.message, Request):
                        uploader.queue(event.peer, event.message)

            nursery.start_soon(dispatch)
            state = Seed(manager, uploader, disk, sent, nursery, reqq)
            if run:
                nursery.start_soon(lambda: uploader.run(HANDLE, workers=workers))
            yield state
            nursery.cancel_scope.cancel()


def requests(piece: int, count: int, length: int = BLOCK) -> list[Request]:
    return [Request(piece, i * length, length) for i in range(count)]


# -- basics -------------------------------------------------------------------------------------


def test_the_watermark_must_be_a_positive_int() -> None:
    manager = cast(PeerManager, object())
    disk = cast(DiskManager, object())
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="watermark"):
            Uploader(disk, manager, on_sent=lambda p, b: None, watermark=bad)  # type: ignore[arg-type]


async def test_requests_are_served_in_order_and_reported() -> None:
    async with seed() as s:
        peer, remote = await s.connect(1)
        await remote.send(*requests(3, 4))
        await s.settle()
        assert s.disk.reads == [(3, i * BLOCK, BLOCK) for i in range(4)]
        assert s.sent == [(peer, Block(3, i * BLOCK, BLOCK)) for i in range(4)]
        await remote.read_until(lambda: len(remote.pieces) == 4)
        assert remote.pieces == [(3, i * BLOCK) for i in range(4)]
        assert s.uploader.queued_peers == 0  # nothing left: forgotten


async def test_a_request_cancelled_before_its_turn_is_never_read() -> None:
    async with seed(run=False) as s:
        peer, remote = await s.connect(1)
        await remote.send(*requests(1, 3))
        await s.settle()
        assert s.uploader.queued(peer) == 3
        await remote.send(Cancel(1, BLOCK, BLOCK))
        await s.settle()
        s.nursery.start_soon(lambda: s.uploader.run(HANDLE, workers=2))
        await s.settle()
        assert sorted(s.disk.reads) == [(1, 0, BLOCK), (1, 2 * BLOCK, BLOCK)]
        assert len(s.sent) == 2


async def test_a_request_cancelled_during_its_read_is_not_sent() -> None:
    async with seed() as s:
        s.disk.gate = trio.Event()
        peer, remote = await s.connect(1)
        await remote.send(*requests(1, 1))
        await s.settle()
        assert len(s.disk.reads) == 1
        await remote.send(Cancel(1, 0, BLOCK))
        await s.settle()
        s.disk.gate.set()
        await s.settle()
        assert s.sent == []
        assert s.manager.queued_bytes(peer) == 0


async def test_a_choke_drops_the_queued_requests() -> None:
    async with seed(run=False) as s:
        peer, remote = await s.connect(1)
        await remote.send(*requests(2, 5))
        await s.settle()
        await s.manager.send(peer, Choke())  # with fast: rejected, all of them
        s.nursery.start_soon(lambda: s.uploader.run(HANDLE, workers=2))
        await s.settle()
        assert s.disk.reads == []
        assert s.uploader.queued_peers == 0


async def test_a_disk_error_skips_the_block_and_serves_the_next() -> None:
    async with seed() as s:
        s.disk.failing.add((0, BLOCK, BLOCK))
        _peer, remote = await s.connect(1)
        await remote.send(*requests(0, 3))
        await s.settle()
        assert [block for _, block in s.sent] == [Block(0, 0, BLOCK), Block(0, 2 * BLOCK, BLOCK)]


# -- bounded under churn ------------------------------------------------------------------------


async def test_request_cancel_churn_keeps_each_peer_queue_within_reqq_and_a_quarter() -> None:
    reqq = 16
    async with seed(run=False, reqq=reqq) as s:
        peer, remote = await s.connect(1)
        peak = 0
        for round_ in range(50):
            batch = requests(round_ % NUM_PIECES, reqq - 1, length=1000)
            batch = [Request(r.index, r.begin + round_, r.length) for r in batch]
            await remote.send(*batch)
            await remote.send(*(Cancel(r.index, r.begin, r.length) for r in batch))
            await s.settle()
            peak = max(peak, s.uploader.queued(peer))
        assert peak <= reqq + reqq // 4 + 1
        # Three live ones among the stale: exactly those are served.
        live = [Request(60, 0, 100), Request(60, 100, 100), Request(61, 0, 100)]
        await remote.send(*live)
        await s.settle()
        s.nursery.start_soon(lambda: s.uploader.run(HANDLE, workers=1))
        await s.settle()
        assert s.disk.reads == [(r.index, r.begin, r.length) for r in live]
        assert s.uploader.queued_peers == 0


async def test_the_request_that_triggers_a_sweep_is_kept() -> None:
    reqq = 8
    limit = reqq + reqq // 4 + 1
    async with seed(run=False, reqq=reqq) as s:
        peer, remote = await s.connect(1)
        # Fill the queue to its sweep limit with stale entries, then one live request each
        # time a sweep runs: every live one must survive it.
        stale = [Request(0, i * 100, 100) for i in range(limit)]
        for chunk in (stale[:reqq], stale[reqq:]):
            await remote.send(*chunk)
            await s.settle()  # queued before the cancels arrive
            await remote.send(*(Cancel(r.index, r.begin, r.length) for r in chunk))
            await s.settle()
        assert s.uploader.queued(peer) == limit
        live = Request(1, 0, 100)
        await remote.send(live)
        await s.settle()
        assert s.uploader.queued(peer) == 1
        s.nursery.start_soon(lambda: s.uploader.run(HANDLE, workers=1))
        await s.settle()
        assert s.disk.reads == [(1, 0, 100)]


# -- fairness -----------------------------------------------------------------------------------


async def test_peers_take_turns_one_block_each() -> None:
    async with seed(run=False) as s:
        _deep, deep_remote = await s.connect(1)
        _shallow, shallow_remote = await s.connect(2)
        await deep_remote.send(*requests(0, 60, length=1000))
        await s.settle()
        await shallow_remote.send(*requests(1, 4, length=1000))
        await s.settle()
        s.nursery.start_soon(lambda: s.uploader.run(HANDLE, workers=1))
        await s.settle()
        order = [block.piece for _, block in s.sent]
        assert len(order) == 64
        # The shallow peer's four blocks alternate with the deep peer's first ones.
        assert order[:8] == [0, 1] * 4
        assert s.uploader.queued_peers == 0


# -- the watermark ------------------------------------------------------------------------------


async def test_a_peer_that_does_not_read_holds_the_watermark_and_no_worker() -> None:
    watermark = 3 * BLOCK
    async with seed(workers=2, watermark=watermark) as s:
        stuck, stuck_remote = await s.connect(1, lockstep=True)
        await stuck_remote.send(*requests(0, 40))
        await s.settle()
        # The writer holds one batch in its (lockstep) write; the watermark counts it.
        held = s.manager.queued_bytes(stuck)
        assert held <= watermark + BLOCK + 13
        served_before = len(s.sent)
        assert served_before < 40
        other, other_remote = await s.connect(2)
        await other_remote.send(*requests(1, 10))
        await s.settle()
        assert sum(peer is other for peer, _ in s.sent) == 10
        assert s.manager.queued_bytes(stuck) == held
        # It reads again: the rest is served.
        with trio.fail_after(10):
            await stuck_remote.read_until(lambda: len(stuck_remote.pieces) == 40)
        assert sum(peer is stuck for peer, _ in s.sent) == 40


async def test_a_gone_peer_is_forgotten_and_its_blocks_not_read() -> None:
    watermark = 2 * BLOCK
    async with seed(workers=2, watermark=watermark) as s:
        stuck, stuck_remote = await s.connect(1, lockstep=True)
        await stuck_remote.send(*requests(0, 30))
        await s.settle()
        reads = len(s.disk.reads)
        assert reads < 30
        assert s.uploader.queued_peers == 1
        s.manager.remove_peer(stuck, "test")
        await s.settle()
        assert s.uploader.queued_peers == 0
        assert len(s.disk.reads) == reads


async def test_a_send_queue_full_in_messages_takes_the_block_back_until_it_drains() -> None:
    config = PeerManagerConfig(send_queue_size=3, limits=ConnectionLimits(max_peer_requests=50))
    # A fixed watermark (both bounds): the second block and the third are read at once,
    # and the third meets the full queue.
    async with seed(config=config, workers=2, low_watermark=SEND_WATERMARK) as s:
        peer, remote = await s.connect(1, lockstep=True)
        await remote.send(*requests(4, 2))
        await s.settle()
        # The writer holds a batch in its write; fill the queue with small messages.
        while s.manager.send_nowait(peer, KeepAlive()):
            pass
        sent_before = len(s.sent)
        await remote.send(*requests(5, 1))
        await s.settle()
        reads = len(s.disk.reads)
        assert len(s.sent) == sent_before  # refused, and not read again and again
        assert reads <= 2 + 1
        with trio.fail_after(10):
            await remote.read_until(lambda: (5, 0) in remote.pieces)
        assert len(s.disk.reads) <= reads + 1


async def test_blocks_being_read_at_the_watermark_wait_for_a_read_not_a_watcher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the watermark at one block, the block being read alone reaches it: the peer's
    turn waits for that read to end. A watcher would find the send queue empty, hand the
    peer back at once and be started again: a busy loop for as long as the read lasts."""
    set_aside: list[Peer] = []
    original = Uploader._set_aside

    def counting(self: Uploader, peer: Peer, state: object, limit: int) -> None:
        set_aside.append(peer)
        original(self, peer, state, limit)  # type: ignore[arg-type]

    monkeypatch.setattr(Uploader, "_set_aside", counting)
    async with seed(workers=4, watermark=BLOCK) as s:
        s.disk.gate = trio.Event()
        _, remote = await s.connect(1)
        await remote.send(*requests(2, 10))
        await s.settle()  # never returns while a watcher spins
        assert s.disk.reads == [(2, 0, BLOCK)]
        assert set_aside == []
        s.disk.gate.set()
        await remote.read_until(lambda: len(remote.pieces) == 10)
        assert remote.pieces == [(2, i * BLOCK) for i in range(10)]
