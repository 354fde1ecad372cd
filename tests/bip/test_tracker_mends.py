"""Mends of the tracker announces: a session-wide bound on HTTP announces in flight
(libtorrent's ``max_concurrent_http_announces``), and BEP 12 tiers (one tracker per tier,
shuffled once, failing over within the tier, a tracker that answers moved to its front)."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import trio
import trio.testing
from _engine_helpers import loopback_config, until, write_content
from _http_tracker_server import MiniTracker, answer, http_server, query_of, reply

from bip._client import ClientConfig, TorrentOptions, open_session
from bip._client._discovery import TrackerAnnouncer
from bip._client._http_tracker import HttpTrackerClient
from bip._client._session import _trackers_of
from bip_handshake import PeerAddress, PeerId
from bip_metainfo import InfoHash, MagnetLink, create_torrent
from bip_utracker import AnnounceEvent, TrackerTimeoutError, open_tracker_client

HASH = bytes(range(20))
PEER_ID = PeerId(b"-BP0100-abcdefghijkl")
DEADLINE = 10.0
LIBTORRENT_MAX_CONCURRENT_HTTP_ANNOUNCES = 50


@dataclass
class Target:
    """A DiscoveryTarget: a seed whose data is checked."""

    info_hash: InfoHash = field(default_factory=lambda: InfoHash(v1=HASH))
    listen_port: int = 6881
    private: bool = False
    completed: trio.Event = field(default_factory=trio.Event)
    seeded: trio.Event = field(default_factory=trio.Event)
    ready: trio.Event = field(default_factory=trio.Event)

    def transfer(self) -> tuple[int, int, int]:
        return (0, 0, 0)


class Sink:
    def discovered(self, info_hash: object, addresses: Iterable[PeerAddress], source: str) -> None:
        pass


def checked_seed() -> Target:
    target = Target()
    target.ready.set()
    target.completed.set()
    target.seeded.set()
    return target


def dead_url() -> str:
    """An HTTP tracker URL on a port nobody listens on: each announce fails at once."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{unused.getsockname()[1]}/announce"


class Holding:
    """A tracker that holds every request until ``release`` is set, counting those open."""

    def __init__(self) -> None:
        self.open = self.peak = 0
        self.release = trio.Event()

    async def __call__(self, request: bytes, stream: trio.abc.Stream) -> None:
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            await self.release.wait()
            await reply(answer(interval=1800))(request, stream)
        finally:
            self.open -= 1


# -- a session-wide bound on HTTP announces in flight --------------------------------------------


async def test_http_announces_in_flight_are_bounded_as_libtorrents() -> None:
    """60 announces at once on one client: 50 (libtorrent's default) connect, the others wait
    for a slot and go once one frees; every one is answered."""
    holding = Holding()
    count = LIBTORRENT_MAX_CONCURRENT_HTTP_ANNOUNCES + 10
    answered: list[int] = []
    async with http_server(holding) as server, HttpTrackerClient() as client:

        async def announce(number: int) -> None:
            await client.announce(f"{server.url}?n={number}", HASH, peer_id=PEER_ID, port=6881)
            answered.append(number)

        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                for number in range(count):
                    nursery.start_soon(announce, number)
                await until(lambda: holding.open >= LIBTORRENT_MAX_CONCURRENT_HTTP_ANNOUNCES)
                await trio.testing.wait_all_tasks_blocked()
                assert holding.open == LIBTORRENT_MAX_CONCURRENT_HTTP_ANNOUNCES
                holding.release.set()
    assert sorted(answered) == list(range(count))
    assert holding.peak == LIBTORRENT_MAX_CONCURRENT_HTTP_ANNOUNCES
    assert len(server.requests) == count


async def test_the_wait_for_a_slot_is_not_counted_in_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One slot, a silent tracker, a 10 s timeout: each announce connects in turn and times
    out 10 s after it got the slot, not 10 s after it asked for it."""
    holding = Holding()  # never released: silent
    ends: list[float] = []
    async with http_server(holding) as server:
        client = HttpTrackerClient(timeout=10, max_concurrent=1)

        async def announce() -> None:
            with pytest.raises(TrackerTimeoutError):
                await client.announce(server.url, HASH, peer_id=PEER_ID, port=6881)
            ends.append(trio.current_time())

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(announce)
    assert [round(end - start) for end in ends] == [10, 20, 30]
    assert len(server.requests) == 3  # each one reached the tracker


async def test_a_closed_client_fails_the_announces_waiting_for_a_slot() -> None:
    holding = Holding()
    async with http_server(holding) as server:
        client = HttpTrackerClient(max_concurrent=1)
        failures: list[str] = []

        async def announce() -> None:
            try:
                await client.announce(server.url, HASH, peer_id=PEER_ID, port=6881)
            except Exception as error:  # the LocalProtocolError of a closed client
                failures.append(type(error).__name__)

        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(announce)
                nursery.start_soon(announce)
                await until(lambda: holding.open == 1)
                await trio.testing.wait_all_tasks_blocked()
                await client.aclose()
    assert failures == ["LocalProtocolError", "LocalProtocolError"]


async def test_many_trackers_waiting_for_a_slot_are_not_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Five single-tracker tiers, one slot, trackers answering in 20 s (within the client's
    30 s): each tracker is announced to in turn; none fails for the time it waited."""

    async def slow(request: bytes, stream: trio.abc.Stream) -> None:
        await trio.sleep(20)
        await reply(answer(interval=1800))(request, stream)

    async with (
        http_server(slow) as server,
        open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as udp,
    ):
        urls = [f"{server.url}?n={n}" for n in range(5)]
        announcer = TrackerAnnouncer(
            udp, urls, peer_id=PEER_ID, http_client=HttpTrackerClient(max_concurrent=1)
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announcer.run, checked_seed(), Sink())
            await trio.sleep(5 * 20 + 10)
            statuses = announcer.status()
            nursery.cancel_scope.cancel()
    assert [(s.announces, s.failures) for s in statuses] == [(1, 0)] * 5


def test_the_session_setting_is_checked() -> None:
    assert ClientConfig().max_concurrent_http_announces == 50
    for bad in (0, -1, True, 2.5):
        with pytest.raises((ValueError, TypeError), match="max_concurrent_http_announces"):
            ClientConfig(max_concurrent_http_announces=bad)  # type: ignore[arg-type]


async def test_the_session_bounds_its_http_announces(tmp_path: Path) -> None:
    """The session's HTTP tracker client takes ``max_concurrent_http_announces``: one torrent
    of 6 single-tracker tiers, 2 slots: 2 connect, the others wait."""
    holding = Holding()
    folder = write_content(tmp_path / "seed", (20_000,))
    async with http_server(holding) as server:
        torrent = create_torrent(
            folder,
            version="v1",
            piece_length=16384,
            creation_date=None,
            created_by=None,
            trackers=[[f"{server.url}?n={n}"] for n in range(6)],
        )
        config = loopback_config(trackers=True, max_concurrent_http_announces=2)
        with trio.fail_after(DEADLINE):
            async with open_session(config) as session:
                await session.add_torrent(torrent, TorrentOptions(tmp_path / "down"))
                await until(lambda: holding.open >= 2)
                await trio.testing.wait_all_tasks_blocked()
                assert holding.open == 2
                holding.release.set()
                await until(lambda: len(server.requests) >= 6)
    assert holding.peak == 2


# -- BEP 12 tiers --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "hybrid"])
async def test_a_session_announces_to_one_tracker_of_a_tier(
    tmp_path: Path, version: Literal["v1", "hybrid"]
) -> None:
    """The proof's torrent: one tier of two working trackers. One of them is announced to (in
    each swarm of a hybrid); its alternate hears nothing while it works."""
    folder = write_content(tmp_path / "seed", (20_000,))
    a, b = MiniTracker(), MiniTracker()
    async with http_server(a) as sa, http_server(b) as sb:
        torrent = create_torrent(
            folder,
            version=version,
            piece_length=16384,
            creation_date=None,
            created_by=None,
            trackers=[[sa.url, sb.url]],
        )
        with trio.fail_after(DEADLINE):
            async with open_session(loopback_config(trackers=True)) as session:
                await session.add_torrent(torrent, TorrentOptions(tmp_path / "down"))
                swarms = len(torrent.info.info_hash.swarm_ids())
                await until(lambda: len(sa.requests) + len(sb.requests) >= swarms)
                await trio.testing.wait_all_tasks_blocked()
                heard = [len(sa.requests), len(sb.requests)]
    assert sorted(heard) == [0, swarms]


def announcer_putting_first(urls: list[str], first: str, udp: object) -> TrackerAnnouncer:
    """An announcer of the one tier ``urls`` whose shuffle put ``first`` at its front."""
    for seed in range(100):
        announcer = TrackerAnnouncer(
            udp,  # type: ignore[arg-type]
            [urls],
            peer_id=PEER_ID,
            http_client=HttpTrackerClient(),
            rng=random.Random(seed),
        )
        if announcer.tiers[0][0] == first:
            return announcer
    raise AssertionError("no seed puts it first")


async def test_a_tier_fails_over_and_moves_the_tracker_that_answers_to_its_front(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tracker = MiniTracker()
    async with (
        http_server(tracker) as server,
        open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as udp,
    ):
        dead = dead_url()
        announcer = announcer_putting_first([dead, server.url], dead, udp)
        assert announcer.tiers == ((dead, server.url),)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announcer.run, checked_seed(), Sink())
            await trio.sleep(60)
            statuses = {status.tracker: status for status in announcer.status()}
            tiers = announcer.tiers
            nursery.cancel_scope.cancel()
    assert statuses[dead].failures == 1  # tried once, then its alternate
    assert statuses[server.url].announces == 1
    assert tiers == ((server.url, dead),)  # BEP 12: the one that answered goes first
    events = [query_of(request).get("event") for request in server.requests]
    assert events == [b"started", b"stopped"]


async def test_a_tier_comes_back_to_a_failed_tracker_after_its_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every tracker of the tier fails: each is tried again once its backoff ran out, not in
    a tight loop."""
    async with open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as udp:
        first, second = dead_url(), dead_url()
        announcer = announcer_putting_first([first, second], first, udp)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announcer.run, checked_seed(), Sink())
            await trio.sleep(100)
            failures = [status.failures for status in announcer.status()]
            nursery.cancel_scope.cancel()
    # 15 s then 30 s then 60 s of backoff each: 0, 15, 45 (and 105) s.
    assert failures == [3, 3]


async def test_each_tier_has_its_own_tracker(autojump_clock: trio.testing.MockClock) -> None:
    """Every tier is announced to at once (bip keeps libtorrent's announce_to_all_tiers),
    one tracker of each; a UDP tracker is in the same tier logic."""
    one, two = MiniTracker(), MiniTracker()
    async with (
        http_server(one) as s1,
        http_server(two) as s2,
        open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as udp,
    ):
        dead = dead_url()
        silent_udp = "udp://127.0.0.1:9/announce"
        tiers = [[s1.url, silent_udp], [dead, s2.url]]
        announcer = TrackerAnnouncer(
            udp, tiers, peer_id=PEER_ID, http_client=HttpTrackerClient(), rng=random.Random(3)
        )
        assert sorted(map(sorted, announcer.tiers)) == sorted(map(sorted, tiers))
        assert announcer.urls == (s1.url, silent_udp, dead, s2.url)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announcer.run, checked_seed(), Sink())
            await trio.sleep(200)
            order = announcer.tiers
            nursery.cancel_scope.cancel()
    assert order == ((s1.url, silent_udp), (s2.url, dead))
    assert [query_of(r).get("event") for r in s1.requests] == [b"started", b"stopped"]
    assert [query_of(r).get("event") for r in s2.requests] == [b"started", b"stopped"]


def test_a_magnets_trackers_are_a_tier_each() -> None:
    """libtorrent's parse_magnet_uri gives each ``tr`` a tier of its own: all are announced
    to, as a torrent's single-tracker tiers."""
    link = MagnetLink.parse(
        "magnet:?xt=urn:btih:" + HASH.hex() + "&tr=http%3A%2F%2Fa%2Fannounce"
        "&tr=udp%3A%2F%2Fb%3A1%2Fannounce"
    )
    assert [list(tier) for tier in _trackers_of(link)] == [
        ["http://a/announce"],
        ["udp://b:1/announce"],
    ]


async def test_completed_goes_to_the_trackers_announced_to_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A download finished: ``completed`` goes to the tracker of the tier that was announced
    to; its alternate, which never heard ``started``, is not told, nor is it when it takes
    over after the first one failed (it hears ``started`` with nothing left)."""
    first, second = Failing(), MiniTracker()
    async with (
        http_server(first) as server,
        http_server(second) as alternate,
        open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as udp,
    ):
        announcer = announcer_putting_first([server.url, alternate.url], server.url, udp)
        target = Target()
        target.ready.set()
        left = [100]

        def transfer() -> tuple[int, int, int]:
            return (0, 100 - left[0], left[0])

        target.transfer = transfer  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announcer.run, target, Sink())
            await trio.sleep(10)
            left[0] = 0
            target.completed.set()
            target.seeded.set()
            await trio.sleep(10)
            statuses = {status.tracker: status for status in announcer.status()}
            first.failing = True  # its next regular announce fails: the alternate takes over
            await until(lambda: len(alternate.requests) >= 1)
            await trio.sleep(10)
            nursery.cancel_scope.cancel()
    assert statuses[server.url].last_event is AnnounceEvent.COMPLETED
    assert statuses[alternate.url].announces == 0
    assert statuses[alternate.url].failures == 0
    assert events_of(server.requests)[:2] == [b"started", b"completed"]
    heard = [query_of(request) for request in alternate.requests]
    assert [(q.get("event"), q["left"]) for q in heard] == [(b"started", b"0"), (b"stopped", b"0")]


# -- review mends: fair slots, queue waits, goodbyes, failover, tier checks ------------------------

OTHER_HASH = bytes(range(20, 40))


class Failing:
    """A MiniTracker that refuses every announce once ``failing`` is set."""

    def __init__(self) -> None:
        self.tracker = MiniTracker()
        self.failing = False

    async def __call__(self, request: bytes, stream: trio.abc.Stream) -> None:
        if self.failing:
            await reply(answer(failure_reason=b"gone"))(request, stream)
        else:
            await self.tracker(request, stream)


def events_of(requests: list[bytes]) -> list[bytes | None]:
    return [query_of(request).get("event") for request in requests]


async def test_one_swarms_many_announces_do_not_hold_up_anothers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Slots go round-robin between swarms: 20 announces of one swarm to silent trackers wait
    for 2 slots; another swarm's announce takes the next slot that frees, not the 11th."""
    silent = Holding()  # never released
    good = MiniTracker()
    async with http_server(silent) as hole, http_server(good) as server:
        client = HttpTrackerClient(timeout=30, max_concurrent=2)

        async def hog(number: int) -> None:
            with pytest.raises(TrackerTimeoutError):
                await client.announce(f"{hole.url}?n={number}", HASH, peer_id=PEER_ID, port=1)

        async with trio.open_nursery() as nursery:
            for number in range(20):
                nursery.start_soon(hog, number)
            await until(lambda: silent.open == 2)
            start = trio.current_time()
            await client.announce(server.url, OTHER_HASH, peer_id=PEER_ID, port=1)
            took = trio.current_time() - start
            nursery.cancel_scope.cancel()
    assert took <= 30 + 1


async def test_a_tracker_is_not_failed_for_its_torrents_own_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One slot held 300 s by each of 7 silent trackers of a swarm: an honest tracker of the
    same swarm waits 2100 s for it, beyond the announcer's old 1800 s, and is not failed."""
    good = MiniTracker()
    async with (
        http_server(Holding()) as hole,
        http_server(good) as server,
        open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as udp,
    ):
        http = HttpTrackerClient(timeout=300, max_concurrent=1)
        hogs = TrackerAnnouncer(
            udp, [f"{hole.url}?n={n}" for n in range(7)], peer_id=PEER_ID, http_client=http
        )
        honest = TrackerAnnouncer(udp, [server.url], peer_id=PEER_ID, http_client=http)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hogs.run, checked_seed(), Sink())
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(honest.run, checked_seed(), Sink())
            await trio.sleep(7 * 300 + 10)
            [status] = honest.status()
            heard = events_of(server.requests)
            nursery.cancel_scope.cancel()
    assert (status.failures, status.last_error) == (0, None)
    assert heard == [b"started"]


async def test_a_stopped_announce_does_not_wait_behind_regular_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every slot held by a silent tracker: a leaving torrent's ``stopped`` goes at once, on
    slots of its own (as many again, no more: 5 goodbyes to a silent tracker, 1 at a time)."""
    silent = Holding()
    good = MiniTracker()
    async with http_server(silent) as hole, http_server(good) as server:
        client = HttpTrackerClient(timeout=30, max_concurrent=1)

        async def announce(url: str, event: AnnounceEvent) -> None:
            with pytest.raises(TrackerTimeoutError):
                await client.announce(url, HASH, peer_id=PEER_ID, port=1, event=event)

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(announce, hole.url, AnnounceEvent.NONE)
            await until(lambda: silent.open == 1)
            with trio.fail_after(2):
                await client.announce(
                    server.url, OTHER_HASH, peer_id=PEER_ID, port=1, event=AnnounceEvent.STOPPED
                )
            for _ in range(5):
                nursery.start_soon(announce, hole.url, AnnounceEvent.STOPPED)
            await until(lambda: silent.open == 2)
            await trio.testing.wait_all_tasks_blocked()
            assert silent.peak == 2
            nursery.cancel_scope.cancel()
    assert events_of(server.requests) == [b"stopped"]


async def test_no_stopped_goes_to_the_tracker_a_tier_fails_over_from(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The tracker that answered ``started`` then failed is left without a goodbye (as
    libtorrent): its alternate takes over at once; the torrent's end says goodbye to it."""
    first, second = Failing(), MiniTracker()
    async with (
        http_server(first) as s1,
        http_server(second) as s2,
        open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as udp,
    ):
        announcer = announcer_putting_first([s1.url, s2.url], s1.url, udp)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announcer.run, checked_seed(), Sink())
            await until(lambda: len(s1.requests) == 1)
            first.failing = True
            await trio.sleep(1800 + 10)  # its next regular announce fails: failover
            nursery.cancel_scope.cancel()
    assert events_of(s1.requests) == [b"started", None]
    assert events_of(s2.requests) == [b"started", b"stopped"]


@pytest.mark.parametrize("bad", [[5], [None], ["udp://a:1", 7], [[b"udp://a:1"]]])
def test_a_tier_that_is_not_urls_is_a_value_error(bad: list[object]) -> None:
    with pytest.raises(ValueError, match="tracker URL is a str"):
        TrackerAnnouncer(object(), bad, peer_id=PEER_ID)  # type: ignore[arg-type]
