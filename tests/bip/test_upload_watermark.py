"""The uploader's adaptive send watermark (bip._client._upload): a peer's read-ahead follows
its upload rate (libtorrent's ``send_buffer_watermark_factor``), between a low and a high
bound.

Leechers are simulated over lockstep streams (the seed's write of a batch lasts until the
leecher has read all of it) that read at a set rate in trio's virtual time (the
``autojump_clock``), and keep a set number of requests open, as a real leecher does; the
disk is a fake that takes a set (virtual) time per read.
"""

from __future__ import annotations

import gc
import math
import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import cast

import pytest
import trio
import trio.testing

from bip._client._upload import (
    RATE_WINDOW,
    SEND_LOW_WATERMARK,
    SEND_WATERMARK,
    SEND_WATERMARK_FACTOR,
    UPLOAD_WORKERS,
    Uploader,
)
from bip_disk import DiskManager, TorrentHandle
from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_peer import (
    NEED_DATA,
    ConnectionLimits,
    HaveAll,
    Interested,
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

TORRENT = InfoHash(v1=b"\x44" * 20)
NUM_PIECES = 64
BLOCK = 16384
HEADER = 13  # a piece message's framing
KIB = 1024
HANDLE = cast(TorrentHandle, object())  # the fake disk never looks at it
DEADLINE = 600.0  # virtual seconds: a test that hangs fails (the clock jumps to it)
REQQ = 500


def expected_watermark(rate: float, *, low: int = SEND_LOW_WATERMARK) -> int:
    """libtorrent's formula, with our defaults."""
    return min(max(int(rate * SEND_WATERMARK_FACTOR / 100), low), SEND_WATERMARK)


@dataclass
class SlowDisk:
    """Blocks of zeros, each read taking ``latency`` seconds (reads overlap)."""

    latency: float = 0.0
    reads: int = 0

    async def read_block(self, handle: object, index: int, begin: int, length: int) -> bytes:
        self.reads += 1
        await trio.sleep(self.latency)
        return bytes(length)


@dataclass
class Leecher:
    """The far end of a lockstep stream: keeps ``depth`` requests open and reads what the
    seed sends at ``rate`` bytes per second (``math.inf``: as fast as it comes)."""

    stream: trio.abc.Stream
    rate: float
    depth: int
    connection: PeerConnection = field(
        default_factory=lambda: PeerConnection(
            num_pieces=NUM_PIECES,
            info_hash=TORRENT,
            our_extensions=Extensions.FAST,
            their_extensions=Extensions.FAST,
            limits=ConnectionLimits(max_peer_requests=REQQ),
        )
    )
    received: int = 0  # payload bytes
    requested: int = 0
    reading: bool = True
    refill: bool = True  # answer each piece with a new request
    closed: bool = False

    async def send(self, *messages: object) -> None:
        """Send ``messages`` (nothing once the seed has closed the stream)."""
        data = b"".join(self.connection.send(m) for m in messages)  # type: ignore[arg-type]
        try:
            await self.stream.send_all(data)
        except trio.BrokenResourceError:
            self.closed = True

    def _request(self, count: int) -> list[Request]:
        # Distinct blocks, piece after piece: never two open requests for one block.
        first = self.requested
        self.requested += count
        return [
            Request(n % NUM_PIECES, (n // NUM_PIECES) * BLOCK, BLOCK)
            for n in range(first, first + count)
        ]

    async def _read(self, max_bytes: int) -> int:
        """Read once; answer each piece with a new request. The bytes read (0: closed)."""
        try:
            data = await self.stream.receive_some(max_bytes)
        except trio.BrokenResourceError:
            data = b""
        if not data:
            self.closed = True
            return 0
        self.connection.receive_data(data)
        pieces = 0
        while (event := self.connection.next_event()) is not NEED_DATA:
            if isinstance(event, Piece):
                pieces += 1
                self.received += len(event.block)
        if pieces and self.refill:
            await self.send(*self._request(pieces))
        return 0 if self.closed else len(data)

    async def start(self) -> None:
        """Read the seed's unchoke, then say interested and ask for ``depth`` blocks."""
        while self.connection.peer_choking:
            assert await self._read(65536), "the seed closed the connection"
        await self.send(Interested(), *self._request(self.depth))

    async def run(self) -> None:
        """Read at ``rate`` while ``reading``, until the seed closes the stream."""
        # Small reads for a slow leecher, so that its pace is smooth at the scale of a block.
        chunk = 65536 if math.isinf(self.rate) else int(min(max(self.rate / 50, 1024), 65536))
        while True:
            if not self.reading:
                await trio.sleep(0.1)
                continue
            size = await self._read(chunk)
            if not size:
                return
            if not math.isinf(self.rate):
                await trio.sleep(size / self.rate)


@dataclass
class Seed:
    manager: PeerManager
    uploader: Uploader
    disk: SlowDisk
    nursery: trio.Nursery
    count: int = 0

    async def leecher(self, rate: float, *, depth: int = 64) -> tuple[Peer, Leecher]:
        """A leecher reading at ``rate`` bytes per second, unchoked, with its requests open."""
        self.count += 1
        n = self.count
        local, far = trio.testing.lockstep_stream_pair()
        handshake = CompletedHandshake(
            stream=local,
            trailing=b"",
            peer_id=PeerId(b"-XX0000-" + n.to_bytes(12, "big")),
            extensions=Extensions.FAST,
            our_extensions=Extensions.FAST,
            info_hash=TORRENT,
            swarm_id=TORRENT.swarm_ids()[0],
            address=PeerAddress(IPv4Address(f"10.0.{n // 250}.{n % 250 + 1}"), 6881),
            direction="inbound",
        )
        peer = self.manager.add_peer(handshake, num_pieces=NUM_PIECES)
        leecher = Leecher(far, rate, depth)
        await self.manager.send(peer, HaveAll())
        await self.manager.send(peer, Unchoke())
        await leecher.start()
        self.nursery.start_soon(leecher.run)
        return peer, leecher


@asynccontextmanager
async def seed(
    *,
    latency: float = 0.0,
    watermark: int = SEND_WATERMARK,
    low_watermark: int = SEND_LOW_WATERMARK,
) -> AsyncIterator[Seed]:
    disk = SlowDisk(latency)
    config = PeerManagerConfig(
        limits=ConnectionLimits(max_peer_requests=REQQ),
        # The leechers only send requests: no idle timeout in the tests' virtual minutes.
        idle_timeout=3600.0,
        keepalive_interval=3600.0,
        max_peers=1000,
    )
    with trio.fail_after(DEADLINE):
        async with open_peer_manager(config) as manager, trio.open_nursery() as nursery:
            uploader = Uploader(
                cast(DiskManager, disk),
                manager,
                on_sent=lambda peer, block: None,
                watermark=watermark,
                low_watermark=low_watermark,
            )

            async def dispatch() -> None:
                async for event in manager.events():
                    if isinstance(event, MessageReceived) and isinstance(event.message, Request):
                        uploader.queue(event.peer, event.message)
                    del event  # holds a peer while waiting for the next one

            nursery.start_soon(dispatch)
            nursery.start_soon(lambda: uploader.run(HANDLE))
            yield Seed(manager, uploader, disk, nursery)
            nursery.cancel_scope.cancel()


async def peak_queued(manager: PeerManager, peers: list[Peer], seconds: float) -> int:
    """The most bytes queued for ``peers`` together, sampled every 10 ms for ``seconds``."""
    peak = 0
    for _ in range(int(seconds * 100)):
        peak = max(peak, sum(manager.queued_bytes(peer) for peer in peers))
        await trio.sleep(0.01)
    return peak


async def throughput(leecher: Leecher, seconds: float) -> float:
    """Payload bytes per second ``leecher`` reads over the next ``seconds``."""
    before = leecher.received
    await trio.sleep(seconds)
    return (leecher.received - before) / seconds


# -- arguments ----------------------------------------------------------------------------------


def test_the_bounds_and_the_factor_must_be_positive_ints() -> None:
    manager = cast(PeerManager, object())
    disk = cast(DiskManager, object())
    for name in ("watermark", "low_watermark", "watermark_factor"):
        for bad in (0, -1, True, 1.5, None):
            with pytest.raises(ValueError, match=name):
                Uploader(disk, manager, on_sent=lambda p, b: None, **{name: bad})  # type: ignore[arg-type]


def test_the_defaults_are_libtorrents() -> None:
    assert SEND_LOW_WATERMARK == 10 * KIB
    assert SEND_WATERMARK_FACTOR == 50
    assert RATE_WINDOW == 1.0
    # libtorrent's high bound is 500 KiB, qBittorrent's 512 KiB: ours.
    assert SEND_WATERMARK == 512 * KIB


async def test_a_new_peer_starts_at_the_low_watermark(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with seed() as s:
        peer, _ = await s.leecher(math.inf, depth=0)
        assert s.uploader.upload_rate(peer) == 0.0
        assert s.uploader.watermark(peer) == SEND_LOW_WATERMARK


async def test_a_low_watermark_above_the_high_one_is_the_high_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with seed(watermark=4 * KIB, low_watermark=64 * KIB) as s:
        peer, _ = await s.leecher(math.inf, depth=0)
        assert s.uploader.watermark(peer) == 4 * KIB


# -- the steady state: the formula --------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "seconds"),
    [
        pytest.param(20 * KIB, 24.0, id="20KiB/s: the low bound, a block or two at a time"),
        pytest.param(200 * KIB, 8.0, id="200KiB/s: half a second of it"),
        pytest.param(4096 * KIB, 4.0, id="4MiB/s: the high bound"),
    ],
)
async def test_a_peer_reading_at_a_steady_rate_gets_half_a_second_of_it(
    autojump_clock: trio.testing.MockClock, rate: int, seconds: float
) -> None:
    """The watermark is libtorrent's formula of the rate measured, and the rate measured is
    the peer's: exact on average. At any moment it is off by up to a few blocks a second:
    the seed's writer sends what is queued in batches, so blocks are queued in bursts, one
    batch at a time, and a one-second window holds one batch more or less."""
    async with seed(latency=0.001) as s:
        # Off the grid of the rate meter's buckets (tenths of a second): events that fall
        # exactly on their edges, as virtual time makes them, would bias the samples.
        await trio.sleep(0.0317)
        peer, leecher = await s.leecher(rate, depth=REQQ)
        await trio.sleep(3.0)  # the ramp: a second or so
        before, start = leecher.received, trio.current_time()
        rates: list[float] = []
        held = 0
        for _ in range(int(seconds / 0.0113)):
            measured = s.uploader.upload_rate(peer)
            assert s.uploader.watermark(peer) == expected_watermark(measured)
            rates.append(measured)
            held = max(held, s.manager.queued_bytes(peer))
            await trio.sleep(0.0113)
        elapsed = trio.current_time() - start
        # Counted in blocks: one more or less at the edges of the time measured.
        tolerance = 0.05 + BLOCK / (rate * seconds)
        assert (leecher.received - before) / elapsed == pytest.approx(rate, rel=tolerance)
        assert statistics.mean(rates) == pytest.approx(rate, rel=tolerance)
        # What is read ahead for it: its watermark, and the block that crossed it.
        assert held <= expected_watermark(max(rates)) + BLOCK + HEADER


async def test_fifty_slow_peers_hold_a_block_or_two_each_not_the_high_watermark(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Seeding to 50 peers at 20 KiB/s each: at most 1.6 MiB read ahead in all (about a
    block each, two when a second's window holds two), where the fixed watermark held
    512 KiB each (25 MiB); and each still gets its 20 KiB/s."""
    async with seed(latency=0.001) as s:
        joined = [await s.leecher(20 * KIB, depth=40) for _ in range(50)]
        peers = [peer for peer, _ in joined]
        await trio.sleep(3.0)
        before = [leecher.received for _, leecher in joined]
        held = 0
        for _ in range(400):  # 4 s
            held = max(held, sum(s.manager.queued_bytes(peer) for peer in peers))
            assert all(s.uploader.watermark(peer) < 2 * BLOCK for peer in peers)
            await trio.sleep(0.01)
        assert held <= 50 * 2 * (BLOCK + HEADER)
        for _, leecher in joined:
            received = leecher.received - before.pop(0)
            assert received / 4.0 == pytest.approx(20 * KIB, rel=0.2)  # 5 blocks, +-1


# -- the ramp: the rate can grow ----------------------------------------------------------------


async def test_a_fast_peer_ramps_up_from_one_block_to_the_high_watermark(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with seed(latency=0.002) as s:
        peer, leecher = await s.leecher(8192 * KIB, depth=REQQ)
        assert s.uploader.watermark(peer) == SEND_LOW_WATERMARK
        await trio.sleep(1.0)
        assert s.uploader.watermark(peer) == SEND_WATERMARK
        assert await throughput(leecher, 2.0) == pytest.approx(8192 * KIB, rel=0.05)


async def test_a_fast_peer_is_served_as_fast_as_with_the_fixed_watermark(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The same leecher, from its first request: what the ramp costs is lost in the noise
    (the fixed watermark: both bounds at :data:`SEND_WATERMARK`)."""
    delivered = {}
    for low in (SEND_LOW_WATERMARK, SEND_WATERMARK):
        async with seed(latency=0.002, low_watermark=low) as s:
            _, leecher = await s.leecher(8192 * KIB, depth=REQQ)
            await trio.sleep(3.0)
            delivered[low] = leecher.received
    adaptive, fixed = delivered[SEND_LOW_WATERMARK], delivered[SEND_WATERMARK]
    assert fixed == pytest.approx(3 * 8192 * KIB, rel=0.05)
    assert adaptive >= 0.97 * fixed


async def test_a_slow_disk_still_ramps_up_while_a_read_takes_under_half_a_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One block at a time, 0.4 s a read, is 40 KiB/s: a watermark of 20 KiB, which lets a
    second read start, and so on up to the workers reading at once: 4 blocks per 0.4 s."""
    async with seed(latency=0.4) as s:
        peer, leecher = await s.leecher(math.inf, depth=REQQ)
        await trio.sleep(10.0)
        bound = UPLOAD_WORKERS * BLOCK / 0.4
        assert await throughput(leecher, 4.0) == pytest.approx(bound, rel=0.05)
        assert s.uploader.watermark(peer) == pytest.approx(bound / 2, rel=0.15)


async def test_a_disk_much_slower_than_half_a_second_a_read_keeps_one_block_at_a_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The limit of the formula (libtorrent's too): at 2 s a read, one block at a time is
    8 KiB/s, a watermark under a block: the rate cannot grow past what one read at a time
    gives (nor past what the disk gives: its reads are the limit here)."""
    async with seed(latency=2.0) as s:
        peer, leecher = await s.leecher(math.inf, depth=REQQ)
        await trio.sleep(5.0)
        assert await throughput(leecher, 20.0) == pytest.approx(BLOCK / 2.0, rel=0.1)
        assert s.uploader.watermark(peer) == SEND_LOW_WATERMARK


# -- changes of pace ----------------------------------------------------------------------------


async def test_a_peer_that_slows_down_gets_a_low_watermark_within_a_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with seed(latency=0.001) as s:
        peer, leecher = await s.leecher(4096 * KIB, depth=REQQ)
        await trio.sleep(2.0)
        assert s.uploader.watermark(peer) == SEND_WATERMARK
        leecher.rate = 20 * KIB  # read the rest of a chunk slowly, then every chunk
        await trio.sleep(1.5 * RATE_WINDOW + 1.0)
        assert s.uploader.watermark(peer) == SEND_LOW_WATERMARK
        # What was read ahead at the high watermark drains, and is refilled a block or two
        # at a time (see the fifty slow peers).
        await trio.sleep(SEND_WATERMARK / (20 * KIB))
        assert await peak_queued(s.manager, [peer], 2.0) <= 2 * (BLOCK + HEADER)


async def test_a_peer_that_stops_reading_holds_what_it_held_and_no_more(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with seed(latency=0.001) as s:
        peer, leecher = await s.leecher(4096 * KIB, depth=REQQ)
        await trio.sleep(2.0)
        leecher.reading = False
        await trio.sleep(0.5)
        held = s.manager.queued_bytes(peer)
        assert held <= SEND_WATERMARK + BLOCK + HEADER
        reads = s.disk.reads
        await trio.sleep(3.0)
        assert s.disk.reads == reads
        assert s.manager.queued_bytes(peer) == held
        assert s.uploader.upload_rate(peer) == 0.0
        assert s.uploader.watermark(peer) == SEND_LOW_WATERMARK


async def test_a_peer_keeps_its_rate_between_bursts_of_requests(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """All its requests served, the peer leaves the uploader's queues; its rate stays, so
    its next burst starts at its watermark, not at one block."""
    async with seed(latency=0.001) as s:
        peer, leecher = await s.leecher(math.inf, depth=0)
        leecher.refill = False
        await leecher.send(*leecher._request(200))
        await trio.sleep(0.2)
        assert leecher.received == 200 * BLOCK
        assert s.uploader.queued_peers == 0
        assert s.uploader.upload_rate(peer) >= 200 * BLOCK / RATE_WINDOW * 0.9
        assert s.uploader.watermark(peer) == SEND_WATERMARK


async def test_a_gone_peer_takes_its_rate_with_it(autojump_clock: trio.testing.MockClock) -> None:
    async with seed(latency=0.001) as s:
        peer, leecher = await s.leecher(200 * KIB, depth=REQQ)
        await trio.sleep(2.0)
        assert s.uploader.upload_rate(peer) > 0
        s.manager.remove_peer(peer, "test")
        await trio.sleep(0.1)
        assert leecher.closed
        assert s.uploader.queued_peers == 0
        assert s.uploader.upload_rate(peer) == 0.0
        assert s.uploader.watermark(peer) == SEND_LOW_WATERMARK


async def test_the_rates_of_peers_gone_between_bursts_go_with_their_handles(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer removed while nothing was queued for it never comes up in the uploader again:
    its rate is held weakly, and goes when nothing else holds the peer."""
    async with seed(latency=0.001) as s:
        for _ in range(20):
            peer, leecher = await s.leecher(math.inf, depth=0)
            leecher.refill = False
            await leecher.send(*leecher._request(4))
            await trio.sleep(0.1)
            assert leecher.received == 4 * BLOCK
            assert s.uploader.queued_peers == 0
            assert s.uploader.upload_rate(peer) > 0
            s.manager.remove_peer(peer, "test")
            await trio.sleep(0.1)
        del peer
        gc.collect()
        assert len(s.uploader._meters) == 0
