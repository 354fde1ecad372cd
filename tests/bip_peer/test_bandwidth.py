"""Rate limits: the sans-IO token bucket, the shared trio limiter, and PeerManager's limits.

The bucket is driven with explicit times (and hypothesis); the limiter and the manager run
on trio's virtual clock (``autojump_clock``) over memory streams, so a transfer of seconds
at the limit takes no real time and its virtual duration can be checked against the rate.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_peer._bandwidth import (
    MIN_BURST,
    MIN_QUANTUM,
    BandwidthLimiter,
    TokenBucket,
    check_rate,
    default_burst,
)
from bip_peer._connection import PeerConnection
from bip_peer._manager import (
    REASON_IDLE,
    MessageReceived,
    Peer,
    PeerAdded,
    PeerManager,
    PeerManagerConfig,
    PeerRemoved,
    open_peer_manager,
)
from bip_peer._messages import (
    NEED_DATA,
    Have,
    HaveAll,
    Interested,
    KeepAlive,
    Piece,
    Request,
    Unchoke,
)
from bip_peer._stats import LimiterStatistics

TORRENT = InfoHash(v1=b"\x22" * 20)
NUM_PIECES = 1024
BOTH = Extensions.EXTENSION_PROTOCOL | Extensions.FAST
BLOCK = bytes(range(256)) * 64  # 16 KiB
PIECE_MESSAGE = len(BLOCK) + 13

BAD_RATES: list[tuple[object, type[Exception]]] = [
    (-1, ValueError),
    (-0.5, ValueError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    (-math.inf, ValueError),
    (10**400, ValueError),
    (True, TypeError),
    (False, TypeError),
    ("1000", TypeError),
    (b"1", TypeError),
    ([1000], TypeError),
]


# -- the sans-IO token bucket -----------------------------------------------------------------


def test_bucket_starts_full_and_refills_at_its_rate() -> None:
    bucket = TokenBucket(1000, burst=2000, now=10.0)
    assert (bucket.rate, bucket.burst, bucket.limited) == (1000.0, 2000.0, True)
    assert bucket.take(5000, now=10.0) == 2000
    assert bucket.take(1, now=10.0) == 0
    assert bucket.delay(500, now=10.0) == pytest.approx(0.5)
    assert bucket.take(600, now=10.5) == 500
    assert bucket.available(now=100.0) == 2000  # never more than the burst
    assert bucket.delay(2000, now=100.0) == 0.0


def test_bucket_takes_whole_tokens_only() -> None:
    bucket = TokenBucket(10, burst=100, now=0.0)
    assert bucket.take(100, now=0.0) == 100
    assert bucket.take(10, now=0.25) == 2  # 2.5 tokens earned: two whole ones
    assert bucket.available(now=0.25) == pytest.approx(0.5)
    assert bucket.take(0, now=0.25) == 0


def test_default_burst_is_a_tenth_of_a_second_or_one_piece_message() -> None:
    assert default_burst(10_000_000) == 1_000_000
    assert default_burst(1000) == MIN_BURST == PIECE_MESSAGE
    assert TokenBucket(1_000_000, now=0.0).burst == 100_000
    assert TokenBucket(1, now=0.0).burst == MIN_BURST


@pytest.mark.parametrize("rate", [None, 0, 0.0])
def test_unlimited_bucket_grants_everything(rate: float | None) -> None:
    bucket = TokenBucket(rate, now=0.0)
    assert not bucket.limited
    assert bucket.rate is None
    assert bucket.burst is None
    assert bucket.take(10**12, now=0.0) == 10**12
    assert bucket.delay(10**12, now=0.0) == 0.0
    assert bucket.available(now=0.0) == math.inf
    bucket.give_back(5, now=1.0)
    assert "unlimited" in repr(bucket)


def test_set_rate_keeps_tokens_up_to_the_new_burst() -> None:
    bucket = TokenBucket(1000, burst=5000, now=0.0)
    assert bucket.take(4000, now=0.0) == 4000
    bucket.set_rate(2000, now=1.0, burst=1500)  # 1000 + 1000 earned, cut to 1500
    assert bucket.available(now=1.0) == 1500
    assert bucket.delay(1500, now=1.0) == 0.0
    assert bucket.take(1500, now=1.0) == 1500
    assert bucket.delay(1000, now=1.0) == pytest.approx(0.5)  # the new rate
    bucket.set_rate(None, now=1.0)
    assert bucket.take(10**9, now=1.0) == 10**9
    bucket.set_rate(100, now=2.0)  # limited again: starts full
    assert bucket.available(now=2.0) == default_burst(100)


def test_time_going_backwards_earns_nothing() -> None:
    bucket = TokenBucket(1000, burst=1000, now=5.0)
    assert bucket.take(1000, now=5.0) == 1000
    assert bucket.take(1000, now=4.0) == 0
    assert bucket.available(now=5.0) == 0
    assert bucket.take(1000, now=5.5) == 500


def test_give_back_is_capped_at_the_burst() -> None:
    bucket = TokenBucket(1000, burst=1000, now=0.0)
    assert bucket.take(800, now=0.0) == 800
    bucket.give_back(300, now=0.0)
    assert bucket.available(now=0.0) == 500
    bucket.give_back(10_000, now=0.0)
    assert bucket.available(now=0.0) == 1000


@pytest.mark.parametrize(("rate", "error"), BAD_RATES)
def test_bad_rates_are_refused(rate: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        check_rate(rate)
    with pytest.raises(error):
        TokenBucket(rate, now=0.0)  # type: ignore[arg-type]
    bucket = TokenBucket(1000, burst=1000, now=0.0)
    with pytest.raises(error):
        bucket.set_rate(rate, now=1.0)  # type: ignore[arg-type]
    assert (bucket.rate, bucket.burst) == (1000.0, 1000.0)  # unchanged


@pytest.mark.parametrize(
    ("burst", "error"),
    [(0, ValueError), (0.5, ValueError), (math.nan, ValueError), (math.inf, ValueError),
     (True, TypeError), ("10", TypeError), (10**400, ValueError)],
)  # fmt: skip
def test_bad_bursts_are_refused(burst: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        TokenBucket(1000, now=0.0, burst=burst)  # type: ignore[arg-type]


def test_bad_times_and_amounts_are_refused() -> None:
    bucket = TokenBucket(1000, burst=1000, now=0.0)
    for now in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="now must be finite"):
            bucket.take(1, now=now)
        with pytest.raises(ValueError, match="now must be finite"):
            bucket.available(now)
        with pytest.raises(ValueError, match="now must be finite"):
            TokenBucket(1000, now=now)
    for amount, error in ((-1, ValueError), (True, TypeError), (1.5, TypeError)):
        with pytest.raises(error):
            bucket.take(amount, now=0.0)  # type: ignore[arg-type]
        with pytest.raises(error):
            bucket.delay(amount, now=0.0)  # type: ignore[arg-type]
        with pytest.raises(error):
            bucket.give_back(amount, now=0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="never fit"):
        bucket.delay(1001, now=0.0)
    assert bucket.available(now=0.0) == 1000  # nothing was taken by the refusals


_operations = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=3, allow_nan=False),  # time advanced first
        st.integers(min_value=0, max_value=200_000),  # then taken
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    rate=st.floats(min_value=1, max_value=1e7, allow_nan=False),
    burst=st.none() | st.floats(min_value=1, max_value=1e6, allow_nan=False),
    start=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    operations=_operations,
)
def test_never_more_than_rate_times_t_plus_burst_over_any_window(
    rate: float, burst: float | None, start: float, operations: list[tuple[float, int]]
) -> None:
    bucket = TokenBucket(rate, now=start, burst=burst)
    cap = bucket.burst
    assert cap is not None
    now = start
    taken: list[tuple[float, int]] = []
    for advance, amount in operations:
        now += advance
        got = bucket.take(amount, now)
        assert 0 <= got <= amount
        taken.append((now, got))
    for i, (first, _) in enumerate(taken):
        total = 0
        for last, got in taken[i:]:
            total += got
            bound = rate * (last - first) + cap
            assert total <= bound * (1 + 1e-9) + 1e-6, (i, total, bound)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.01, max_value=1e9, allow_nan=False),
    start=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    taken=st.integers(min_value=0, max_value=10**7),
    wanted=st.integers(min_value=1, max_value=10**7),
)
def test_the_delay_given_is_enough(rate: float, start: float, taken: int, wanted: int) -> None:
    bucket = TokenBucket(rate, now=start)
    burst = bucket.burst
    assert burst is not None
    wanted = min(wanted, int(burst))
    bucket.take(taken, now=start)
    delay = bucket.delay(wanted, now=start)
    assert delay >= 0
    if delay:
        assert bucket.available(now=start) < wanted
    # The tokens are there when the delay has passed, but for the rounding of the time:
    # start + delay is off by up to half a ulp of the clock, worth rate * ulp tokens.
    slack = rate * math.ulp(start + delay) + wanted * 1e-9
    assert bucket.available(now=start + delay) >= wanted - slack


# -- the trio limiter -------------------------------------------------------------------------


async def test_unlimited_limiter_grants_at_once_and_counts_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = BandwidthLimiter()
    assert not limiter.limited
    assert limiter.quantum is None
    start = trio.current_time()
    assert await limiter.acquire(10**9) == 10**9
    assert trio.current_time() == start
    assert limiter.statistics() == LimiterStatistics()
    assert "unlimited" in repr(limiter)


async def test_acquire_is_a_checkpoint_even_unlimited() -> None:
    limiter = BandwidthLimiter()
    with trio.CancelScope() as scope:
        scope.cancel()
        await limiter.acquire(1)
        pytest.fail("not a checkpoint")


async def test_acquire_refuses_bad_amounts() -> None:
    limiter = BandwidthLimiter(1000)
    for amount, error in ((0, ValueError), (-5, ValueError), (True, TypeError), (2.0, TypeError)):
        with pytest.raises(error):
            await limiter.acquire(amount)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not negative"):
        limiter.set_rate(-1)
    assert limiter.rate == 1000


async def test_grants_are_capped_by_the_quantum(autojump_clock: trio.testing.MockClock) -> None:
    limiter = BandwidthLimiter(100_000, burst=20_000)
    assert limiter.quantum == 20_000
    assert await limiter.acquire(50_000) == 20_000  # the burst, at once
    start = trio.current_time()
    assert await limiter.acquire(50_000) == 20_000  # the next one after 0.2 s
    assert trio.current_time() - start == pytest.approx(0.2, abs=1e-3)
    assert await limiter.acquire(5) == 5


async def test_one_task_moves_at_the_rate(autojump_clock: trio.testing.MockClock) -> None:
    rate = 50_000
    limiter = BandwidthLimiter(rate)
    burst = limiter.burst
    assert burst == MIN_BURST
    start = trio.current_time()
    moved = 0
    while moved < 1_000_000:
        moved += await limiter.acquire(1_000_000 - moved)
    elapsed = trio.current_time() - start
    assert elapsed == pytest.approx((1_000_000 - burst) / rate, rel=0.01)
    stats = limiter.statistics()
    assert stats.granted == 1_000_000
    assert stats.waits > 0
    assert stats.wait_time == pytest.approx(elapsed, rel=0.01)
    assert stats.waiting == 0


async def test_waiters_are_served_in_turn_and_share_fairly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = BandwidthLimiter(100_000)
    got = [0, 0, 0, 0]
    order: list[int] = []

    async def hungry(index: int) -> None:
        while True:
            got[index] += await limiter.acquire(10**9)
            order.append(index)

    async def modest(index: int) -> None:
        while True:
            got[index] += await limiter.acquire(2000)
            order.append(index)

    async with trio.open_nursery() as nursery:
        for index in range(3):
            nursery.start_soon(hungry, index)
        nursery.start_soon(modest, 3)
        await trio.sleep(20)
        assert limiter.statistics().waiting == 4
        nursery.cancel_scope.cancel()
    total = sum(got)
    assert total == pytest.approx(100_000 * 20 + limiter.burst, rel=0.01)  # type: ignore[operator]
    # The three that want everything get the same; the modest one is never starved.
    assert max(got[:3]) - min(got[:3]) <= 2 * MIN_QUANTUM + limiter.burst  # type: ignore[operator]
    assert got[3] >= 2000 * (len(order) // 4 - 2)
    # First come, first served: after the first round, every round serves all four.
    for start in range(4, len(order) - 4, 4):
        assert sorted(order[start : start + 4]) == [0, 1, 2, 3], order[start : start + 4]


async def test_quantum_shrinks_with_the_queue_but_not_below_the_floor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = BandwidthLimiter(1_000_000)  # burst 100 000
    assert limiter.quantum == 100_000
    await limiter.acquire(100_000)
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(limiter.acquire, 10**9)
        await trio.testing.wait_all_tasks_blocked()
        assert limiter.quantum == 10_000
        for _ in range(200):
            nursery.start_soon(limiter.acquire, 10**9)
        await trio.testing.wait_all_tasks_blocked()
        assert limiter.quantum == MIN_QUANTUM
        nursery.cancel_scope.cancel()


async def test_a_cancelled_waiter_takes_nothing_and_blocks_nobody(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = BandwidthLimiter(1000, burst=1000)
    assert await limiter.acquire(1000) == 1000  # empty now
    served: list[str] = []

    async def wait(name: str, amount: int, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            served.append(f"{name}:{await limiter.acquire(amount)}")

    async with trio.open_nursery() as nursery:
        head = await nursery.start(wait, "head", 800)
        middle = await nursery.start(wait, "middle", 500)
        await nursery.start(wait, "last", 200)
        await trio.sleep(0.5)  # 500 tokens earned: not yet the head's 800
        head.cancel()
        middle.cancel()
    # Neither cancelled waiter took anything: last got its 200 at once, from the 500.
    assert served == ["last:200"]
    assert trio.current_time() == pytest.approx(0.5)
    assert limiter.statistics().waiting == 0
    assert await limiter.acquire(300) == 300  # the 500 earned, less last's 200
    assert trio.current_time() == pytest.approx(0.5)


async def test_a_waiter_cancelled_behind_others_leaves_the_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = BandwidthLimiter(1000, burst=1000)
    await limiter.acquire(1000)
    results: list[int] = []

    async def wait(amount: int) -> None:
        results.append(await limiter.acquire(amount))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, 500)
        with trio.move_on_after(0.1):
            await limiter.acquire(300)  # queued second, gives up
        assert limiter.statistics().waiting == 1
        nursery.start_soon(wait, 400)
    assert results == [500, 400]
    assert trio.current_time() == pytest.approx(0.9, abs=1e-3)


async def test_set_rate_applies_to_waiters_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = BandwidthLimiter(10, burst=1000)
    await limiter.acquire(1000)
    done = trio.Event()

    async def wait() -> None:
        assert await limiter.acquire(1000) == 1000
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.sleep(1)  # 10 tokens earned of 1000: 99 s to go at the old rate
        limiter.set_rate(990, burst=1000)
        await done.wait()
    assert trio.current_time() == pytest.approx(2.0, abs=1e-3)  # 10 + 990 in the next second
    assert limiter.generation == 1


async def test_lifting_the_limit_releases_every_waiter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = BandwidthLimiter(1, burst=100)
    await limiter.acquire(100)
    grants: list[int] = []

    async def wait(amount: int) -> None:
        grants.append(await limiter.acquire(amount))

    async with trio.open_nursery() as nursery:
        for amount in (100, 5000, 70):
            nursery.start_soon(wait, amount)
        await trio.sleep(1)
        limiter.set_rate(None)
    assert sorted(grants) == [70, 100, 5000]  # each what it asked, not capped
    assert trio.current_time() == pytest.approx(1.0)
    assert limiter.statistics().rate is None


async def test_give_back_serves_the_head_sooner(autojump_clock: trio.testing.MockClock) -> None:
    limiter = BandwidthLimiter(100, burst=1000)
    await limiter.acquire(1000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limiter.acquire, 600)
        await trio.sleep(1)
        limiter.give_back(500)  # 100 earned + 500 back: the head goes now
    assert trio.current_time() == pytest.approx(1.0)


async def test_limiter_statistics_count_waits(autojump_clock: trio.testing.MockClock) -> None:
    limiter = BandwidthLimiter(1000, burst=1000)
    assert await limiter.acquire(1000) == 1000  # no wait
    stats = limiter.statistics()
    assert (stats.waits, stats.granted, stats.wait_time) == (0, 1000, 0.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limiter.acquire, 500)
        await trio.sleep(0.25)
        during = limiter.statistics()
        assert during.waiting == 1
        assert during.wait_time == pytest.approx(0.25)
    stats = limiter.statistics()
    assert stats == LimiterStatistics(
        rate=1000.0, burst=1000.0, waiting=0, waits=1, wait_time=stats.wait_time, granted=1500
    )
    assert stats.wait_time == pytest.approx(0.5)
    assert "1000 B/s" in repr(limiter)


# -- PeerManager's limits ---------------------------------------------------------------------
#
# The fake peers are at 10.0.0.n, a private network: exempt from the limits by default, as in
# libtorrent. The tests of the limits hold them to it (limit_local_peers=True); those of the
# exemption are in test_bandwidth_local.py.


def _handshake(stream: trio.abc.Stream, n: int) -> CompletedHandshake:
    return CompletedHandshake(
        stream=stream,
        trailing=b"",
        peer_id=PeerId(b"-XX0000-" + f"{n:012d}".encode()),
        extensions=BOTH,
        our_extensions=BOTH,
        info_hash=TORRENT,
        swarm_id=TORRENT.swarm_ids()[0],
        address=PeerAddress(IPv4Address(f"10.0.0.{n}"), 6881),
        direction="outbound",
    )


class Remote:
    """The far end of a connection: a PeerConnection over a memory stream, and a log of
    when its bytes arrived."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.connection = PeerConnection(
            num_pieces=NUM_PIECES, info_hash=TORRENT, our_extensions=BOTH, their_extensions=BOTH
        )
        self.received = 0
        self.arrivals: list[tuple[float, int]] = []

    async def send(self, *messages: Any) -> None:
        await self.stream.send_all(b"".join(self.connection.send(m) for m in messages))

    async def receive(self) -> Any:
        """The next message from the manager (keep-alives included)."""
        while True:
            event = self.connection.next_event()
            if event is not NEED_DATA:
                return event
            data = await self.stream.receive_some()
            if not data:
                raise EOFError
            self.received += len(data)
            self.arrivals.append((trio.current_time(), len(data)))
            self.connection.receive_data(data)

    async def receive_until(self, kind: type) -> Any:
        while not isinstance(message := await self.receive(), kind):
            pass
        return message


@asynccontextmanager
async def manager_with(
    count: int, config: PeerManagerConfig
) -> AsyncIterator[tuple[PeerManager, list[Peer], list[Remote]]]:
    async with open_peer_manager(config) as manager:
        peers, remotes = [], []
        for n in range(1, count + 1):
            local, far = trio.testing.memory_stream_pair()
            peers.append(manager.add_peer(_handshake(local, n), num_pieces=NUM_PIECES))
            remotes.append(Remote(far))
        yield manager, peers, remotes


async def serve(manager: PeerManager) -> None:
    """The manager's side of an upload: have-all and unchoke, then a block per request.

    A task per peer answers its requests, so that a full send queue holds up that peer
    only, not the events of the others.
    """

    async def answer(peer: Peer, queued: trio.MemoryReceiveChannel[Request]) -> None:
        async for request in queued:
            await manager.send(peer, Piece(request.index, request.begin, BLOCK))

    async with trio.open_nursery() as nursery:
        channels: dict[Peer, trio.MemorySendChannel[Request]] = {}
        async for event in manager.events():
            if isinstance(event, PeerAdded):
                await manager.send(event.peer, HaveAll())
                await manager.send(event.peer, Unchoke())
                channels[event.peer], queued = trio.open_memory_channel[Request](math.inf)
                nursery.start_soon(answer, event.peer, queued)
            elif isinstance(event, MessageReceived) and isinstance(event.message, Request):
                channels[event.peer].send_nowait(event.message)


def limits(manager: PeerManager) -> tuple[float | None, float | None]:
    """The manager's limits now (a call: mypy narrows a property compared to a literal)."""
    return manager.rate_limits


def requests(count: int) -> Iterator[Request]:
    return (Request(i // 4, (i % 4) * len(BLOCK), len(BLOCK)) for i in range(count))


async def leech(remote: Remote, blocks: int) -> float:
    """Ask the manager for ``blocks`` blocks; returns when the last arrived."""
    await remote.receive_until(Unchoke)
    await remote.send(Interested(), *requests(blocks))
    for _ in range(blocks):
        piece = await remote.receive_until(Piece)
        assert bytes(piece.block) == BLOCK
    return trio.current_time()


async def test_upload_limit_paces_the_writer(autojump_clock: trio.testing.MockClock) -> None:
    rate = 100_000
    config = PeerManagerConfig(limit_local_peers=True, upload_rate_limit=rate)
    async with manager_with(1, config) as (manager, _peers, (remote,)):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, manager)
            start = trio.current_time()
            end = await leech(remote, 60)
            nursery.cancel_scope.cancel()
        stats = manager.statistics()
    sent = stats.bytes_sent
    assert sent == remote.received >= 60 * PIECE_MESSAGE
    burst = default_burst(rate)
    # Every byte of the wire is counted: the transfer lasts (bytes - burst) / rate.
    assert end - start == pytest.approx((sent - burst) / rate, rel=0.03)
    assert stats.upload_limiter.rate == rate
    assert stats.upload_limiter.waits > 0
    assert stats.upload_limiter.granted == sent
    assert stats.download_limiter == LimiterStatistics()  # unlimited: nothing counted
    assert _most_in_any_window(remote.arrivals, rate) <= burst + 1


def _most_in_any_window(arrivals: list[tuple[float, int]], rate: float) -> float:
    """The largest ``bytes - rate * t`` over any window of the arrivals."""
    worst = 0.0
    for i, (first, _) in enumerate(arrivals):
        total = 0
        for last, size in arrivals[i:]:
            total += size
            worst = max(worst, total - rate * (last - first))
    return worst


async def test_peers_share_the_upload_limit_fairly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rate = 200_000
    config = PeerManagerConfig(limit_local_peers=True, upload_rate_limit=rate)
    async with (
        manager_with(3, config) as (manager, _peers, remotes),
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(serve, manager)
        for remote in remotes:
            nursery.start_soon(leech, remote, 200)  # more than 10 s can carry
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    got = [remote.received for remote in remotes]
    assert sum(got) == pytest.approx(rate * 10, rel=0.03)
    assert max(got) / min(got) < 1.1, got


async def test_small_messages_do_not_starve_behind_a_tiny_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rate = 2000  # a block takes 8 s
    config = PeerManagerConfig(limit_local_peers=True, upload_rate_limit=rate, idle_timeout=10_000)
    async with (
        manager_with(2, config) as (manager, (_busy, quiet), (busy_remote, quiet_remote)),
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(serve, manager)
        nursery.start_soon(leech, busy_remote, 30)  # four minutes of blocks
        await quiet_remote.receive_until(Unchoke)  # what went out before: the burst
        await trio.sleep(5)
        start = trio.current_time()
        await manager.send(quiet, Have(3))
        assert await quiet_remote.receive_until(Have) == Have(3)
        # Behind one quantum of the busy peer's blocks at most (the burst shared by the
        # two waiters: 8 kB, 4.1 s at 2 kB/s), not its backlog of minutes.
        assert trio.current_time() - start <= (MIN_BURST / 2 + 20) / rate
        # And a keep-alive goes out on time to a peer that is sent nothing else.
        keepalive_start = trio.current_time()
        assert await quiet_remote.receive() == KeepAlive()
        assert trio.current_time() - keepalive_start <= 120 + 1 + MIN_BURST / 2 / rate
        nursery.cancel_scope.cancel()


async def test_a_removed_peer_leaves_the_upload_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = PeerManagerConfig(
        limit_local_peers=True, upload_rate_limit=1000, idle_timeout=10_000, send_queue_size=4096
    )
    async with manager_with(2, config) as (manager, (gone, staying), (_, remote)):
        await trio.sleep(60)  # the extended handshakes are out; the bucket is full again
        for index in range(2000):  # 18 kB for the first peer: more than the burst
            assert manager.send_nowait(gone, Have(index % NUM_PIECES))
        await trio.testing.wait_all_tasks_blocked()
        assert manager.statistics().upload_limiter.waiting == 1  # its writer waits
        manager.remove_peer(gone, "bye")
        await manager.send(staying, Have(5))
        start = trio.current_time()
        assert await remote.receive_until(Have) == Have(5)
        assert trio.current_time() - start <= 0.1  # 13 bytes: nobody left in front
        assert manager.statistics().upload_limiter.waiting == 0


async def test_set_rate_limits_changes_the_pace(autojump_clock: trio.testing.MockClock) -> None:
    config = PeerManagerConfig(limit_local_peers=True, upload_rate_limit=50_000)
    async with manager_with(1, config) as (manager, _peers, (remote,)):
        assert limits(manager) == (50_000, None)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, manager)
            nursery.start_soon(leech, remote, 400)
            await trio.sleep(10)
            before = remote.received
            manager.set_rate_limits(upload=200_000)
            assert limits(manager) == (200_000, None)
            await trio.sleep(10)
            during = remote.received - before
            assert before == pytest.approx(50_000 * 10 + default_burst(50_000), rel=0.05)
            assert during == pytest.approx(200_000 * 10, rel=0.05)
            manager.set_rate_limits(upload=None)  # lifted: the rest goes at once
            start = trio.current_time()
            with trio.fail_after(1):
                while remote.received < 400 * PIECE_MESSAGE:
                    await trio.sleep(0)
            assert trio.current_time() == start
            nursery.cancel_scope.cancel()
        assert manager.config.upload_rate_limit == 50_000  # the config keeps the start


async def test_download_limit_reads_no_faster_than_the_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rate = 50_000
    config = PeerManagerConfig(limit_local_peers=True, download_rate_limit=rate)
    async with manager_with(1, config) as (manager, (peer,), (remote,)):
        reads: list[tuple[float, int]] = []
        stream = manager._peers[peer].stream
        original = stream.receive_some

        async def receive_some(max_bytes: int | None = None) -> bytes | bytearray:
            data = await original(max_bytes)
            reads.append((trio.current_time(), len(data)))
            return data

        stream.receive_some = receive_some  # type: ignore[method-assign]
        events = manager.events()
        assert isinstance(await events.__anext__(), PeerAdded)
        await remote.send(HaveAll(), Unchoke())
        for _ in range(2):  # have-all and unchoke
            assert isinstance(await events.__anext__(), MessageReceived)
        blocks = list(requests(40))
        for request in blocks:
            await manager.send(peer, request)
        for _ in blocks:  # the peer sends everything at once
            await remote.receive_until(Request)
        start = trio.current_time()
        await remote.send(*(Piece(r.index, r.begin, BLOCK) for r in blocks))
        received = 0
        async for event in events:
            if isinstance(event, MessageReceived) and isinstance(event.message, Piece):
                assert bytes(event.message.block) == BLOCK  # nothing read and dropped
                received += 1
                if received == len(blocks):
                    break
        elapsed = trio.current_time() - start
        stats = manager.statistics()
    burst = default_burst(rate)
    sent = 40 * PIECE_MESSAGE
    assert elapsed == pytest.approx((sent - burst) / rate, rel=0.05)
    # Each read asked for no more than the reader held: over any window, the rate and
    # the burst, plus what the reader held when the window opened (one grant at most).
    assert _most_in_any_window(reads, rate) <= 2 * burst
    assert stats.download_limiter.waits > 0
    assert stats.upload_limiter == LimiterStatistics()


async def test_peers_share_the_download_limit_and_a_new_rate_applies(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = PeerManagerConfig(limit_local_peers=True, download_rate_limit=100_000)
    async with manager_with(3, config) as (manager, peers, remotes):
        events = manager.events()
        for remote in remotes:
            await remote.send(HaveAll(), Unchoke())
        for _ in range(3 * 3):  # added, have-all, unchoke
            await events.__anext__()
        blocks = list(requests(100))
        for peer in peers:
            for request in blocks:
                await manager.send(peer, request)
        for remote in remotes:
            for _ in blocks:
                await remote.receive_until(Request)
            await remote.send(*(Piece(r.index, r.begin, BLOCK) for r in blocks))
        got = dict.fromkeys(peers, 0)
        start = trio.current_time()

        async def count_until(deadline: float) -> None:
            with trio.move_on_at(deadline):
                async for event in events:
                    if isinstance(event, MessageReceived) and isinstance(event.message, Piece):
                        got[event.peer] += 1

        await count_until(start + 10)
        first = list(got.values())
        # 10 s at 100 kB/s: 61 blocks or so, shared evenly.
        assert sum(first) == pytest.approx(100_000 * 10 / PIECE_MESSAGE, abs=3)
        assert max(first) - min(first) <= 2, first
        manager.set_rate_limits(download=300_000)
        assert limits(manager) == (None, 300_000)
        await count_until(start + 20)
        second = [total - before for total, before in zip(got.values(), first, strict=True)]
        assert sum(second) == pytest.approx(300_000 * 10 / PIECE_MESSAGE, abs=3)
        assert max(second) - min(second) <= 2, second


async def test_a_stream_returning_more_than_asked_leaves_a_debt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rate = 10_000
    config = PeerManagerConfig(limit_local_peers=True, download_rate_limit=rate)
    async with manager_with(1, config) as (manager, (peer,), (remote,)):
        stream = manager._peers[peer].stream
        original = stream.receive_some

        async def receive_some(max_bytes: int | None = None) -> bytes | bytearray:
            return await original(None)  # everything there, whatever was asked

        stream.receive_some = receive_some  # type: ignore[method-assign]
        events = manager.events()
        assert isinstance(await events.__anext__(), PeerAdded)
        haves = [Have(i % NUM_PIECES) for i in range(10_000)]  # 90 kB
        await remote.send(*haves)
        for _ in haves:
            event = await events.__anext__()
            assert isinstance(event, MessageReceived), event
        start = trio.current_time()
        assert manager._peers[peer].download_quota < 0  # read 90 kB on 1 KiB of tokens
        await remote.send(Have(1))
        assert await events.__anext__() == MessageReceived(peer, Have(1))
        # The next read waited for the debt to be paid at the rate.
        elapsed = trio.current_time() - start
        assert elapsed == pytest.approx((90_000 - default_burst(rate)) / rate, rel=0.05)


async def test_waiting_on_the_download_limit_is_not_idleness(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = PeerManagerConfig(limit_local_peers=True, download_rate_limit=1000, idle_timeout=5)
    async with manager_with(1, config) as (manager, (peer,), (remote,)):
        events = manager.events()
        assert isinstance(await events.__anext__(), PeerAdded)
        haves = [Have(i % NUM_PIECES) for i in range(4000)]  # 36 kB: 20 s at the limit
        await remote.send(*haves)
        for _ in haves:
            event = await events.__anext__()
            assert isinstance(event, MessageReceived), event
        assert trio.current_time() >= 15
        assert peer in manager.peers
        # Then, with nothing more sent, the peer is idle as usual.
        event = await events.__anext__()
        assert event == PeerRemoved(peer, REASON_IDLE, None)


async def test_waiting_on_the_upload_limit_is_not_a_send_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = PeerManagerConfig(limit_local_peers=True, upload_rate_limit=2000, idle_timeout=5)
    async with (
        manager_with(1, config) as (manager, (peer,), (remote,)),
        trio.open_nursery() as nursery,
    ):

        async def keep_alive() -> None:
            while True:
                await trio.sleep(1)
                await remote.stream.send_all(b"\0\0\0\0")

        nursery.start_soon(keep_alive)
        nursery.start_soon(serve, manager)
        end = await leech(remote, 4)  # 65 kB at 2 kB/s: 25 s
        assert end >= 20
        assert peer in manager.peers
        nursery.cancel_scope.cancel()


async def test_a_removed_reader_gives_its_tokens_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = PeerManagerConfig(limit_local_peers=True, download_rate_limit=10_000)
    async with manager_with(1, config) as (manager, (peer,), (_remote,)):
        limiter = manager._download_limiter
        await trio.testing.wait_all_tasks_blocked()
        held = manager._peers[peer].download_quota
        assert held > 0  # the reader waits for data with a little quota
        assert limiter.burst is not None
        before = limiter._bucket.available(trio.current_time())
        assert before == pytest.approx(limiter.burst - held)
        manager.remove_peer(peer, "bye")
        await trio.testing.wait_all_tasks_blocked()
        assert limiter._bucket.available(trio.current_time()) == pytest.approx(limiter.burst)


async def test_unlimited_manager_is_unchanged(autojump_clock: trio.testing.MockClock) -> None:
    async with manager_with(2, PeerManagerConfig()) as (manager, _peers, remotes):
        assert limits(manager) == (None, None)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, manager)
            start = trio.current_time()
            for remote in remotes:
                await leech(remote, 100)
            assert trio.current_time() == start  # memory streams: no time at all
            nursery.cancel_scope.cancel()
        stats = manager.statistics()
    assert stats.upload_limiter == stats.download_limiter == LimiterStatistics()
    assert manager._upload_limiter.limited is False


async def test_limits_set_at_zero_are_unlimited(autojump_clock: trio.testing.MockClock) -> None:
    config = PeerManagerConfig(upload_rate_limit=0, download_rate_limit=0.0)
    async with manager_with(1, config) as (manager, _peers, (remote,)):
        assert limits(manager) == (None, None)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, manager)
            start = trio.current_time()
            await leech(remote, 50)
            assert trio.current_time() == start
            nursery.cancel_scope.cancel()
        manager.set_rate_limits(upload=1000, download=2000)
        assert limits(manager) == (1000, 2000)
        manager.set_rate_limits(download=0)
        assert limits(manager) == (1000, None)


@pytest.mark.parametrize(("rate", "error"), BAD_RATES)
async def test_bad_limits_are_refused(rate: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="upload_rate_limit"):
        PeerManagerConfig(upload_rate_limit=rate)  # type: ignore[arg-type]
    with pytest.raises(error, match="download_rate_limit"):
        PeerManagerConfig(download_rate_limit=rate)  # type: ignore[arg-type]
    async with open_peer_manager(PeerManagerConfig(upload_rate_limit=5000)) as manager:
        with pytest.raises(error, match="download"):
            manager.set_rate_limits(upload=1000, download=rate)  # type: ignore[arg-type]
        assert limits(manager) == (5000, None)  # neither was changed
        with pytest.raises(error, match="upload"):
            manager.set_rate_limits(upload=rate)  # type: ignore[arg-type]
        assert limits(manager) == (5000, None)
