"""Hostile trackers against the Announcer (BEP 12 tiers, backoff), on loopback.

bip announces to every tier at once (libtorrent's ``announce_to_all_tiers``), one
:class:`Announcer` per tracker, all on one :class:`TrackerClient` and so on one socket. A
tracker that is silent, refuses everything, or floods us must not delay the honest one's
announces by a second; the hostile one is backed off on a growing, bounded schedule; and
an interval from 0 to 2**32-1 is held within the announcer's bounds. Hours pass on the
autojump clock; each tracker is a raw trio UDP socket on its own 127.0.0.X address.
"""

from __future__ import annotations

import itertools
import logging
import random
import socket as stdlib_socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import ip_address

import pytest
import trio
import trio.testing

from bip_handshake import PeerAddress
from bip_utracker._announcer import AnnounceProgress, Announcer, AnnouncerStatus
from bip_utracker._client import TrackerClient, open_tracker_client
from bip_utracker._codec import (
    AnnounceEvent,
    AnnounceRequest,
    AnnounceResponse,
    ConnectRequest,
    ConnectResponse,
    ErrorResponse,
    Request,
    decode_request,
)

HASH = b"\xa5" * 20
PEER_ID = b"-XX0001-" + bytes(12)
HONEST_INTERVAL = 600

Script = Callable[["Tracker", Request, tuple[str, int]], Awaitable[None]]


@dataclass
class Tracker:
    """A UDP tracker on one loopback address answering as *script* says (one task each)."""

    sock: trio.socket.SocketType
    address: PeerAddress
    script: Script
    requests: list[tuple[float, Request]] = field(default_factory=list)
    next_id: int = 1

    def times(self, kind: type) -> list[float]:
        return [at for at, request in self.requests if isinstance(request, kind)]

    async def send(self, data: bytes, to: tuple[str, int]) -> None:
        await self.sock.sendto(data, to)

    async def serve(self, nursery: trio.Nursery) -> None:
        for _ in range(10_000):  # bounded: a few hundred requests at most here
            data, source = await self.sock.recvfrom(65_536)
            request = decode_request(data)
            self.requests.append((trio.current_time(), request))
            nursery.start_soon(self.script, self, request, source[:2])


def connect_answer(tracker: Tracker, request: Request) -> bytes:
    tracker.next_id += 1
    return ConnectResponse(request.transaction_id, tracker.next_id).encode()


def honest_with(interval: int) -> Script:
    async def script(tracker: Tracker, request: Request, to: tuple[str, int]) -> None:
        if isinstance(request, ConnectRequest):
            await tracker.send(connect_answer(tracker, request), to)
        else:
            # The interval field as unsigned, so 2**32-1 can be sent.
            head = struct.pack(">IIIII", 1, request.transaction_id, interval, 1, 1)
            await tracker.send(head, to)

    return script


async def silent(tracker: Tracker, request: Request, to: tuple[str, int]) -> None:
    """Never answers anything."""


async def silent_after_connect(tracker: Tracker, request: Request, to: tuple[str, int]) -> None:
    if isinstance(request, ConnectRequest):
        await tracker.send(connect_answer(tracker, request), to)


async def refusing(tracker: Tracker, request: Request, to: tuple[str, int]) -> None:
    """Grants ids, refuses every announce."""
    if isinstance(request, ConnectRequest):
        await tracker.send(connect_answer(tracker, request), to)
    else:
        await tracker.send(ErrorResponse(request.transaction_id, "refused").encode(), to)


async def flooding(tracker: Tracker, request: Request, to: tuple[str, int]) -> None:
    """Answers every packet with a hundred datagrams of random ids, and never truly."""
    rng = random.Random(request.transaction_id)
    for _ in range(100):
        tid = rng.getrandbits(32)
        await tracker.send(AnnounceResponse(tid, 1, 0, 0, ()).encode(), to)


@asynccontextmanager
async def tracker_on(host: str, script: Script) -> AsyncIterator[Tracker]:
    sock = trio.socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    with sock:
        await sock.bind((host, 0))
        tracker = Tracker(sock, PeerAddress(ip_address(host), sock.getsockname()[1]), script)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tracker.serve, nursery)
            yield tracker
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def client() -> AsyncIterator[TrackerClient]:
    async with open_tracker_client(
        bind_v4="127.0.0.1", bind_v6=None, rng=random.Random(21)
    ) as opened:
        yield opened


def announcer_for(
    opened: TrackerClient,
    tracker: Tracker,
    updates: list[AnnouncerStatus] | None = None,
) -> Announcer:
    return Announcer(
        opened,
        (str(tracker.address.host), tracker.address.port),
        HASH,
        peer_id=PEER_ID,
        port=6881,
        progress=lambda: AnnounceProgress(left=1),
        on_update=None if updates is None else updates.append,
    )


def assert_quiet(caplog: pytest.LogCaptureFixture) -> None:
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_utracker")


@pytest.mark.parametrize("script", [silent, silent_after_connect, refusing, flooding])
async def test_a_hostile_tracker_does_not_starve_another_tier(
    script: Script, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Two hours with a hostile tracker in tier 0 and an honest one in tier 1, announced to
    at once on one socket: the honest one is asked exactly every interval it gave, and the
    hostile one is asked ever more rarely."""
    async with (
        client() as opened,
        tracker_on("127.0.0.80", script) as bad,
        tracker_on("127.0.0.81", honest_with(HONEST_INTERVAL)) as good,
        trio.open_nursery() as nursery,
    ):
        start = trio.current_time()
        nursery.start_soon(announcer_for(opened, bad).run)
        nursery.start_soon(announcer_for(opened, good).run)
        await trio.sleep(7200 - 1)
        nursery.cancel_scope.cancel()
    honest = [
        round(at - start, 3)
        for at, request in good.requests
        if isinstance(request, AnnounceRequest) and request.event is not AnnounceEvent.STOPPED
    ]
    assert honest == [HONEST_INTERVAL * n for n in range(12)]  # 0, 600, ... 6600
    # The hostile tracker: attempts 15, 30, 60 ... 1800 s apart (after the 60 s timeout when
    # silent): at most 11 in two hours, each at most 4 packets (a connect and two announces
    # when refused; when silent, a packet and its retransmissions at 15 and 45 s, and a
    # connect if the id expired meanwhile).
    assert len(bad.requests) <= 4 * 11
    assert_quiet(caplog)


async def test_a_refusing_tracker_is_backed_off_on_a_growing_bounded_schedule(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    updates: list[AnnouncerStatus] = []
    async with (
        client() as opened,
        tracker_on("127.0.0.82", refusing) as bad,
        trio.open_nursery() as nursery,
    ):
        start = trio.current_time()
        nursery.start_soon(announcer_for(opened, bad, updates).run)
        await trio.sleep(4 * 3600)
        nursery.cancel_scope.cancel()
    # The gaps between attempts: 15 s doubled per failure, capped at 30 minutes.
    starts = _attempt_starts(bad, start)
    gaps = [round(b - a) for a, b in itertools.pairwise(starts)]
    assert gaps[:8] == [15, 30, 60, 120, 240, 480, 960, 1800]
    assert all(gap == 1800 for gap in gaps[8:])
    assert len(starts) <= 8 + 4 * 2 + 1  # four hours: the doublings, then two an hour
    assert updates[-1].failures == len(starts)
    assert_quiet(caplog)


def _attempt_starts(tracker: Tracker, start: float) -> list[float]:
    """When each announce attempt began: the first packet after a quiet spell of 10 s."""
    starts: list[float] = []
    last = -1e9
    for at, _ in tracker.requests:
        if at - last > 10:
            starts.append(at - start)
        last = at
    return starts


@pytest.mark.parametrize(
    ("interval", "wait"),
    [(0, 300), (1, 300), (299, 300), (301, 301), (2**31 - 1, 1800), (2**31, 300), (2**32 - 1, 300)],
)
async def test_any_interval_is_held_within_the_announcers_bounds(
    interval: int, wait: int, autojump_clock: trio.testing.MockClock
) -> None:
    """[5 min, 30 min] by default (libtorrent's floor): an interval of 0 cannot make us hammer
    the tracker, one of 68 years cannot make us forget it (2**31 and up read negative, hence 0,
    hence 5 min)."""
    async with (
        client() as opened,
        tracker_on("127.0.0.83", honest_with(interval)) as tracker,
        trio.open_nursery() as nursery,
    ):
        start = trio.current_time()
        nursery.start_soon(announcer_for(opened, tracker).run)
        await trio.sleep(3 * wait + 1)
        nursery.cancel_scope.cancel()
    times = [round(at - start, 3) for at in tracker.times(AnnounceRequest)]
    assert times[:4] == [0, wait, 2 * wait, 3 * wait]
