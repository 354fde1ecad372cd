"""The Announcer against the in-process bip_utracker server on 127.0.0.1 (autojump clock)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from bip_handshake import PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_utracker._announcer import (
    DEFAULT_MIN_ANNOUNCE_INTERVAL,
    AnnounceProgress,
    Announcer,
    AnnouncerStatus,
)
from bip_utracker._client import TrackerClient, open_tracker_client
from bip_utracker._codec import AnnounceEvent, AnnounceRequest, ScrapeStats
from bip_utracker._errors import (
    LocalProtocolError,
    TrackerRejectedError,
    TrackerTimeoutError,
)
from bip_utracker._server import serve_tracker
from bip_utracker._server_core import Refusal, ServerConfig
from bip_utracker._swarm import AnnounceAnswer, SwarmStore

HASH = b"\x22" * 20
PEER_ID = PeerId(b"-BP0001-announcer001")
OTHER_ID = b"-BP0001-announcer002"


@dataclass
class Recorder:
    """A tracker handler: the built-in store, recording each announce (or refusing them)."""

    store: SwarmStore = field(default_factory=SwarmStore)
    seen: list[tuple[float, AnnounceEvent, int]] = field(default_factory=list)
    refuse: bool = False

    def announce(
        self, request: AnnounceRequest, peer: bytes, num_want: int, now: float
    ) -> AnnounceAnswer | Refusal:
        self.seen.append((trio.current_time(), AnnounceEvent(request.event), request.left))
        if self.refuse:
            return Refusal("not on this tracker")
        return self.store.announce(request, peer, num_want, now)

    def scrape(self, info_hashes: Sequence[bytes], now: float) -> Sequence[ScrapeStats]:
        return self.store.scrape(info_hashes, now)

    def events(self) -> list[AnnounceEvent]:
        return [event for _, event, _ in self.seen]

    def times(self) -> list[float]:
        return [time for time, _, _ in self.seen]


@dataclass
class Progress:
    """A download whose counters the test moves."""

    left: int = 1000
    downloaded: int = 0

    def __call__(self) -> AnnounceProgress:
        return AnnounceProgress(downloaded=self.downloaded, left=self.left)


@asynccontextmanager
async def tracker(interval: int = 120) -> AsyncIterator[tuple[str, Recorder]]:
    recorder = Recorder()
    config = ServerConfig(interval=interval, rate_limit=None)
    async with serve_tracker(("127.0.0.1", 0), config=config, handler=recorder) as server:
        host, port = server.address[:2]
        yield f"udp://{host}:{port}/announce", recorder


@asynccontextmanager
async def client(**kwargs: object) -> AsyncIterator[TrackerClient]:
    async with open_tracker_client(bind_v6=None, **kwargs) as tracker_client:  # type: ignore[arg-type]
        yield tracker_client


def announcer(tc: TrackerClient, url: str, progress: Progress, **kwargs: object) -> Announcer:
    # The trackers here ask for a minute or two: below the default floor (5 minutes, tested
    # on its own), so the tests that follow their interval lower it.
    kwargs.setdefault("min_interval", 30)
    return Announcer(tc, url, HASH, peer_id=PEER_ID, port=6881, progress=progress, **kwargs)  # type: ignore[arg-type]


async def test_started_then_the_trackers_interval(autojump_clock: trio.testing.MockClock) -> None:
    async with tracker(interval=120) as (url, recorder), client() as tc:
        progress = Progress()
        ann = announcer(tc, url, progress)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ann.run)
            await trio.sleep(1)
            progress.left = 700  # recomputed for each announce
            await trio.sleep(400)
            status = ann.status
            nursery.cancel_scope.cancel()
        events = recorder.events()
        assert events[:4] == [AnnounceEvent.STARTED] + [AnnounceEvent.NONE] * 3
        assert events[-1] is AnnounceEvent.STOPPED
        gaps = [b - a for a, b in itertools.pairwise(recorder.times()[:4])]
        assert gaps == pytest.approx([120, 120, 120], abs=1)
        assert [left for _, _, left in recorder.seen[:2]] == [1000, 700]
    assert status.running
    assert status.started
    assert not status.completed
    assert status.announces == 4
    assert status.failures == 0
    assert status.last_event is AnnounceEvent.NONE
    assert status.last_error is None
    assert status.last_result is not None
    assert status.last_result.interval == 120
    assert status.next_announce is not None
    assert status.last_announce is not None
    assert status.next_announce == pytest.approx(status.last_announce + 120, abs=1)
    final = ann.status
    assert not final.running
    assert not final.started
    assert final.next_announce is None
    assert final.last_event is AnnounceEvent.STOPPED


@pytest.mark.parametrize(("asked", "expected"), [(5, 30.0), (100_000, 600.0)])
async def test_the_interval_is_clamped(
    autojump_clock: trio.testing.MockClock, asked: int, expected: float
) -> None:
    async with tracker(interval=asked) as (url, recorder), client() as tc:
        ann = announcer(tc, url, Progress(), min_interval=30, max_interval=600)
        with trio.move_on_after(expected * 3 + 1):
            await ann.run()
        times = recorder.times()
        assert recorder.events()[:4] == [AnnounceEvent.STARTED] + [AnnounceEvent.NONE] * 3
        gaps = [b - a for a, b in itertools.pairwise(times[:4])]
        assert gaps == pytest.approx([expected] * 3, abs=1)


async def test_the_default_minimum(autojump_clock: trio.testing.MockClock) -> None:
    assert DEFAULT_MIN_ANNOUNCE_INTERVAL == 300  # libtorrent's min_announce_interval
    async with tracker(interval=1) as (url, recorder), client() as tc:
        with trio.move_on_after(DEFAULT_MIN_ANNOUNCE_INTERVAL * 2 + 1):
            await announcer(tc, url, Progress(), min_interval=None).run()
        assert recorder.events() == [
            AnnounceEvent.STARTED,
            AnnounceEvent.NONE,
            AnnounceEvent.NONE,
            AnnounceEvent.STOPPED,
        ]
        gaps = [b - a for a, b in itertools.pairwise(recorder.times()[:3])]
        assert gaps == pytest.approx([300, 300], abs=1)


async def test_the_default_minimum_gives_way_to_a_shorter_maximum(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tracker(interval=1) as (url, recorder), client() as tc:
        with trio.move_on_after(100 * 2 + 1):
            await announcer(tc, url, Progress(), min_interval=None, max_interval=100).run()
        gaps = [b - a for a, b in itertools.pairwise(recorder.times()[:3])]
        assert gaps == pytest.approx([100, 100], abs=1)


async def test_completed_is_sent_at_once_and_once(autojump_clock: trio.testing.MockClock) -> None:
    async with tracker(interval=120) as (url, recorder), client() as tc:
        progress = Progress()
        ann = announcer(tc, url, progress)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ann.run)
            await trio.sleep(10)
            progress.left, progress.downloaded = 0, 1000
            ann.mark_completed()
            await trio.sleep(1)
            assert recorder.events() == [AnnounceEvent.STARTED, AnnounceEvent.COMPLETED]
            assert recorder.times()[1] == pytest.approx(10, abs=1)
            ann.mark_completed()  # once only
            await trio.sleep(300)
            assert ann.status.completed
            nursery.cancel_scope.cancel()
        assert recorder.events().count(AnnounceEvent.COMPLETED) == 1
        assert recorder.events()[-1] is AnnounceEvent.STOPPED
        assert recorder.seen[-1][2] == 0  # a seed leaves


async def test_completed_noticed_from_progress(autojump_clock: trio.testing.MockClock) -> None:
    async with tracker(interval=60) as (url, recorder), client() as tc:
        progress = Progress()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announcer(tc, url, progress).run)
            await trio.sleep(30)
            progress.left, progress.downloaded = 0, 1000
            await trio.sleep(200)
            nursery.cancel_scope.cancel()
        events = recorder.events()
        assert events[:3] == [AnnounceEvent.STARTED, AnnounceEvent.COMPLETED, AnnounceEvent.NONE]
        assert events.count(AnnounceEvent.COMPLETED) == 1


@pytest.mark.parametrize(("left", "downloaded"), [(0, 0), (1000, 0)])
async def test_no_completed_for_a_seed_or_data_found_whole(
    autojump_clock: trio.testing.MockClock, left: int, downloaded: int
) -> None:
    async with tracker(interval=60) as (url, recorder), client() as tc:
        progress = Progress(left=left, downloaded=downloaded)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announcer(tc, url, progress).run)
            await trio.sleep(30)
            progress.left = 0  # a seed from the start, or a check that found the data
            await trio.sleep(200)
            nursery.cancel_scope.cancel()
        assert AnnounceEvent.COMPLETED not in recorder.events()


async def test_completed_before_started_follows_it(autojump_clock: trio.testing.MockClock) -> None:
    async with tracker(interval=120) as (url, recorder), client() as tc:
        ann = announcer(tc, url, Progress(left=0, downloaded=5))
        ann.mark_completed()
        with trio.move_on_after(5):
            await ann.run()
        assert recorder.events() == [
            AnnounceEvent.STARTED,
            AnnounceEvent.COMPLETED,
            AnnounceEvent.STOPPED,
        ]


async def test_stopped_is_bounded_when_the_tracker_is_gone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    updates: list[AnnouncerStatus] = []
    async with client() as tc, trio.open_nursery() as nursery:
        async with tracker(interval=120) as (url, recorder):
            ann = announcer(tc, url, Progress(), stopped_timeout=3, on_update=updates.append)
            nursery.start_soon(ann.run)
            await trio.sleep(1)
            assert ann.status.started
        # The tracker is gone (its port closed): "stopped" gets no answer.
        nursery.cancel_scope.cancel()
        cancelled_at = trio.current_time()
    assert trio.current_time() - cancelled_at == pytest.approx(3, abs=0.5)
    assert recorder.events() == [AnnounceEvent.STARTED]
    assert isinstance(updates[-1].last_error, TrackerTimeoutError)
    assert updates[-1].last_event is AnnounceEvent.STARTED


async def test_stopped_is_sent_on_cancel(autojump_clock: trio.testing.MockClock) -> None:
    async with tracker() as (url, recorder), client() as tc:
        ann = announcer(tc, url, Progress(), stopped_timeout=3)
        with trio.move_on_after(50):
            await ann.run()
        assert recorder.events() == [AnnounceEvent.STARTED, AnnounceEvent.STOPPED]
        assert recorder.store.scrape_counts(HASH, trio.current_time()) == (0, 0, 0)


async def test_no_stopped_when_its_timeout_is_set_to_0_before_the_cancel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tracker() as (url, recorder), client() as tc:
        ann = announcer(tc, url, Progress(), stopped_timeout=3)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ann.run)
            await trio.sleep(10)
            assert ann.stopped_timeout == 3
            ann.stopped_timeout = 0  # failing over from it: nothing more to say
            nursery.cancel_scope.cancel()
        assert recorder.events() == [AnnounceEvent.STARTED]
        with pytest.raises(LocalProtocolError):
            ann.stopped_timeout = -1


async def test_no_stopped_if_never_started(autojump_clock: trio.testing.MockClock) -> None:
    async with tracker() as (url, recorder), client() as tc:
        recorder.refuse = True
        with trio.move_on_after(20):
            await announcer(tc, url, Progress()).run()
        # (The client retries a refused announce once over a fresh connection id.)
        assert set(recorder.events()) == {AnnounceEvent.STARTED}


async def test_backoff_on_a_dead_tracker(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_utracker.client")
    arrivals: list[float] = []

    async def listen(sock: trio.socket.SocketType) -> None:
        while True:  # each attempt is one connect request (retransmission comes after 15 s)
            await sock.recvfrom(2048)
            arrivals.append(trio.current_time())

    with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as silent:
        await silent.bind(("127.0.0.1", 0))
        url = f"udp://127.0.0.1:{silent.getsockname()[1]}"
        async with client() as tc, trio.open_nursery() as nursery:
            nursery.start_soon(listen, silent)
            ann = announcer(tc, url, Progress(), retry_delay=10, max_interval=100, timeout=5)
            nursery.start_soon(ann.run)
            await trio.sleep(2)
            assert ann.status.announcing
            await trio.sleep(600)
            status = ann.status
            nursery.cancel_scope.cancel()
    # Attempts at 0, then after 5 s of timeout and a wait of 10, 20, 40, 80, 100 (capped)...
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert gaps[:6] == pytest.approx([15, 25, 45, 85, 105, 105], abs=0.5)
    assert status.failures == len(arrivals)
    assert status.announces == 0
    assert isinstance(status.last_error, TrackerTimeoutError)
    assert not status.announcing
    assert not status.started
    failures = [
        r for r in caplog.records if "failed" in r.getMessage() and "in a row" in r.getMessage()
    ]
    assert failures
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


async def test_failures_are_status_not_exceptions(autojump_clock: trio.testing.MockClock) -> None:
    async with tracker() as (url, recorder), client() as tc:
        recorder.refuse = True
        ann = announcer(tc, url, Progress(), retry_delay=10)
        with trio.move_on_after(12):
            await ann.run()
        status = ann.status
        assert status.failures == 2
        assert status.announces == 0
        assert not status.started
        assert isinstance(status.last_error, TrackerRejectedError)
        assert status.last_error.message == "not on this tracker"
        assert status.last_result is None


async def test_peers_go_to_the_client_sink_and_ours(
    autojump_clock: trio.testing.MockClock,
) -> None:
    found: list[tuple[str, bytes, tuple[PeerAddress, ...]]] = []

    class Sink:
        def __init__(self, name: str) -> None:
            self.name = name

        def discovered(
            self, info_hash: InfoHash | bytes, addresses: Iterable[PeerAddress], source: str
        ) -> None:
            assert source == "tracker"
            raw = info_hash.swarm_ids()[0] if isinstance(info_hash, InfoHash) else info_hash
            found.append((self.name, raw, tuple(addresses)))

    async with tracker() as (url, _):
        async with client() as other:
            await other.announce(url, HASH, peer_id=OTHER_ID, port=7000)
        async with client(sink=Sink("client")) as tc:
            ann = Announcer(
                tc, url, HASH, peer_id=PEER_ID, port=6881, progress=Progress(), sink=Sink("ours")
            )
            with trio.move_on_after(5):
                await ann.run()
    peers = (PeerAddress.parse("127.0.0.1:7000"),)
    assert found == [("client", HASH, peers), ("ours", HASH, peers)]


async def test_announce_now_respects_its_own_minimum(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with tracker(interval=1000) as (url, recorder), client() as tc:
        # Not min_interval's 600: that floor bounds the tracker's interval, not our own asks.
        ann = announcer(
            tc, url, Progress(), min_interval=600, max_interval=3000, announce_now_interval=30
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ann.run)
            await trio.sleep(10)
            ann.announce_now()
            await trio.sleep(60)
            ann.announce_now()
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
        times = recorder.times()
        assert recorder.events()[:3] == [AnnounceEvent.STARTED] + [AnnounceEvent.NONE] * 2
        assert times[1] == pytest.approx(30, abs=1)  # not before the minimum
        assert times[2] == pytest.approx(70, abs=1)  # the minimum had passed: at once


async def test_bad_arguments_are_refused_up_front() -> None:
    async with client() as tc:
        good = {"peer_id": PEER_ID, "port": 1, "progress": Progress()}
        with pytest.raises(LocalProtocolError, match="udp://"):
            Announcer(tc, "http://tracker.example/announce", HASH, **good)  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError, match="port"):
            Announcer(tc, "udp://127.0.0.1/announce", HASH, **good)  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError):
            Announcer(tc, 42, HASH, **good)  # type: ignore[arg-type]
        url = "udp://127.0.0.1:9/"
        with pytest.raises(LocalProtocolError, match="info-hash"):
            Announcer(tc, url, b"short", **good)  # type: ignore[arg-type]
        bad: list[dict[str, object]] = [
            {"peer_id": b"x"},
            {"port": 70000},
            {"port": True},
            {"progress": 3},
            {"num_want": 2**31},
            {"num_want": "50"},
            {"min_interval": 0},
            {"max_interval": float("inf")},
            {"min_interval": 100, "max_interval": 10},
            {"announce_now_interval": 0},
            {"announce_now_interval": float("nan")},
            {"retry_delay": -1},
            {"timeout": float("nan")},
            {"stopped_timeout": -1},
        ]
        for change in bad:
            with pytest.raises(LocalProtocolError):
                Announcer(tc, url, HASH, **(good | change))  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError):
            Announcer(object(), url, HASH, **good)  # type: ignore[arg-type]


async def test_running_twice_is_a_mistake(autojump_clock: trio.testing.MockClock) -> None:
    async with tracker() as (url, _), client() as tc:
        ann = announcer(tc, url, Progress())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ann.run)
            await trio.sleep(1)
            with pytest.raises(LocalProtocolError, match="already running"):
                await ann.run()
            nursery.cancel_scope.cancel()


async def test_a_closed_client_is_raised(autojump_clock: trio.testing.MockClock) -> None:
    async with tracker() as (url, _):
        async with client() as tc:
            ann = announcer(tc, url, Progress())
        with pytest.raises(LocalProtocolError, match="closed"):
            await ann.run()
    assert not ann.status.running


async def test_a_timeout_is_a_timeout_error(autojump_clock: trio.testing.MockClock) -> None:
    with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as silent:
        await silent.bind(("127.0.0.1", 0))
        async with client() as tc:
            ann = announcer(tc, f"udp://127.0.0.1:{silent.getsockname()[1]}", Progress())
            with trio.move_on_after(61):
                await ann.run()
    assert isinstance(ann.status.last_error, TrackerTimeoutError)
    assert ann.status.failures == 1


async def test_on_update_reports_each_outcome(autojump_clock: trio.testing.MockClock) -> None:
    updates: list[AnnouncerStatus] = []
    async with tracker(interval=60) as (url, recorder), client() as tc:
        ann = announcer(tc, url, Progress(), retry_delay=10, on_update=updates.append)
        with trio.move_on_after(61):
            await ann.run()
        recorder.refuse = True
        with trio.move_on_after(5):
            await ann.run()
    assert [(u.last_event, u.failures, u.started) for u in updates] == [
        (AnnounceEvent.STARTED, 0, True),
        (AnnounceEvent.NONE, 0, True),
        (AnnounceEvent.STOPPED, 0, False),
        (AnnounceEvent.STOPPED, 1, False),  # the second run's refused "started"
    ]
    assert all(u.running for u in updates)
    assert isinstance(updates[-1].last_error, TrackerRejectedError)
    assert updates[2].last_announce == pytest.approx(61, abs=1)


@dataclass
class PortRecorder(Recorder):
    """Also records the port of each announce."""

    ports: list[int] = field(default_factory=list)

    def announce(
        self, request: AnnounceRequest, peer: bytes, num_want: int, now: float
    ) -> AnnounceAnswer | Refusal:
        self.ports.append(request.port)
        return super().announce(request, peer, num_want, now)


async def test_a_port_function_is_read_at_each_announce(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A port NAT-PMP maps may change: each announce carries the port the function gives then."""
    recorder = PortRecorder()
    config = ServerConfig(interval=120, rate_limit=None)
    current = [6881]
    async with (
        serve_tracker(("127.0.0.1", 0), config=config, handler=recorder) as server,
        client() as tc,
    ):
        host, port = server.address[:2]
        ann = Announcer(
            tc,
            f"udp://{host}:{port}/announce",
            HASH,
            peer_id=PEER_ID,
            port=lambda: current[0],
            progress=Progress(),
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ann.run)
            await trio.sleep(1)
            current[0] = 7881
            await trio.sleep(120)
            nursery.cancel_scope.cancel()
        assert recorder.ports[:2] == [6881, 7881]
        # A function giving no port is the caller's mistake, raised as any bad argument.
        current[0] = 70000
        with pytest.raises(LocalProtocolError, match=r"a port is 0\.\.65535"):
            await ann.run()
