"""A cancel that ends the tracker client's block with the announcers in it (Ctrl-C, an
application-wide deadline) still lets their shielded ``stopped`` out and answered; the client's
exit stays bounded all the same (in-process tracker on 127.0.0.1, autojump clock)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing
from tests._socks_server import serve_socks5

from bip_handshake import PeerId
from bip_handshake._socks_shell import ProxyConfig
from bip_utracker._announcer import AnnounceProgress, Announcer
from bip_utracker._client import TrackerClient, open_tracker_client
from bip_utracker._codec import AnnounceEvent, AnnounceRequest, ScrapeStats
from bip_utracker._errors import TrackerTimeoutError
from bip_utracker._server import serve_tracker
from bip_utracker._server_core import Refusal, ServerConfig
from bip_utracker._swarm import AnnounceAnswer, SwarmStore

HASH = b"\x44" * 20
PEER_ID = PeerId(b"-BP0001-outercancel1")
STOPPED_TIMEOUT = 2.0
JUMP_AFTER = 0.03
"""Real seconds of idleness before the MockClock jumps: loopback I/O is done well before."""


@dataclass
class Recorder:
    """A tracker handler: the built-in store, recording each announce's event."""

    store: SwarmStore = field(default_factory=SwarmStore)
    events: list[AnnounceEvent] = field(default_factory=list)

    def announce(
        self, request: AnnounceRequest, peer: bytes, num_want: int, now: float
    ) -> AnnounceAnswer | Refusal:
        self.events.append(AnnounceEvent(request.event))
        return self.store.announce(request, peer, num_want, now)

    def scrape(self, info_hashes: Sequence[bytes], now: float) -> Sequence[ScrapeStats]:
        return self.store.scrape(info_hashes, now)


@asynccontextmanager
async def tracker() -> AsyncIterator[tuple[str, Recorder]]:
    recorder = Recorder()
    config = ServerConfig(interval=120, rate_limit=None)
    async with serve_tracker(("127.0.0.1", 0), config=config, handler=recorder) as server:
        host, port = server.address[:2]
        yield f"udp://{host}:{port}/announce", recorder


def announcer(tc: TrackerClient, url: str) -> Announcer:
    return Announcer(
        tc,
        url,
        HASH,
        peer_id=PEER_ID,
        port=6881,
        progress=lambda: AnnounceProgress(left=1000),
        min_interval=60,
        stopped_timeout=STOPPED_TIMEOUT,
    )


async def test_stopped_is_answered_when_a_cancel_ends_the_client_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with tracker() as (url, recorder):
            with trio.CancelScope() as outer:
                async with open_tracker_client(bind_v6=None) as tc, trio.open_nursery() as nursery:
                    ann = announcer(tc, url)
                    nursery.start_soon(ann.run)
                    await trio.sleep(1)
                    assert ann.status.started
                    assert recorder.store.scrape_counts(HASH, trio.current_time()) == (0, 0, 1)
                    cancelled_at = trio.current_time()
                    outer.cancel()  # the client's block and the announcer's at once
            took = trio.current_time() - cancelled_at
            assert recorder.events == [AnnounceEvent.STARTED, AnnounceEvent.STOPPED]
            # We left the swarm, and in one round trip, not after the stopped timeout.
            assert recorder.store.scrape_counts(HASH, trio.current_time()) == (0, 0, 0)
            assert took < STOPPED_TIMEOUT / 2
            status = ann.status
            assert status.last_event is AnnounceEvent.STOPPED
            assert status.last_error is None
            assert not status.started
            assert not status.running


async def test_the_exit_is_bounded_when_the_tracker_never_answers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        with trio.CancelScope() as outer:
            async with open_tracker_client(bind_v6=None) as tc, trio.open_nursery() as nursery:
                async with tracker() as (url, recorder):
                    ann = announcer(tc, url)
                    nursery.start_soon(ann.run)
                    await trio.sleep(1)
                    assert ann.status.started
                # The tracker is gone (its port closed): "stopped" gets no answer, and an
                # unshielded call of ours waits for one too.
                call = functools.partial(tc.announce, url, HASH, peer_id=PEER_ID, port=6881)
                nursery.start_soon(call)
                await trio.sleep(1)
                cancelled_at = trio.current_time()
                outer.cancel()
        # The unshielded call went with the cancel; the announcer's "stopped" waited its own
        # bound, and then the client's tasks ended at once.
        assert trio.current_time() - cancelled_at == pytest.approx(STOPPED_TIMEOUT, abs=0.1)
        assert recorder.events == [AnnounceEvent.STARTED]
        assert isinstance(ann.status.last_error, TrackerTimeoutError)


async def test_a_failing_task_still_ends_the_client(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader task that fails cancels the block, whose exit ends the shielded others."""

    async def broken_read(self: TrackerClient, sock: object) -> None:
        await trio.sleep(1)
        raise OSError("the socket broke")

    monkeypatch.setattr(TrackerClient, "_read", broken_read)
    with trio.fail_after(30):
        start = trio.current_time()
        with pytest.RaisesGroup(pytest.RaisesExc(OSError, match="the socket broke")):
            async with open_tracker_client(bind_v6=None):
                await trio.sleep_forever()
        assert trio.current_time() - start == pytest.approx(1)


async def test_leaving_the_block_ends_the_client_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An exception out of the block, or its plain end, ends the shielded tasks at once."""
    with trio.fail_after(30):
        start = trio.current_time()
        with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="the caller's own")):
            async with open_tracker_client(bind_v6=None):
                raise ValueError("the caller's own")  # before the tasks even ran
        async with open_tracker_client(bind_v6=None):
            await trio.sleep(5)
        assert trio.current_time() - start == pytest.approx(5)


async def test_stopped_is_answered_through_a_proxy_when_a_cancel_ends_the_client_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Through a SOCKS5 proxy (the session's default for trackers), the association's control
    connection outlives the cancel too: the proxy keeps relaying until the block is left."""
    autojump_clock.autojump_threshold = JUMP_AFTER  # the proxy's hops are real loopback I/O
    with trio.fail_after(30):
        async with tracker() as (url, recorder), serve_socks5() as proxy:
            via = ProxyConfig("127.0.0.1", proxy.port)
            with trio.CancelScope() as outer:
                async with (
                    open_tracker_client(bind_v4="127.0.0.1", bind_v6=None, proxy=via) as tc,
                    trio.open_nursery() as nursery,
                ):
                    ann = announcer(tc, url)
                    nursery.start_soon(ann.run)
                    await trio.sleep(1)
                    assert ann.status.started
                    cancelled_at = trio.current_time()
                    outer.cancel()
            took = trio.current_time() - cancelled_at
            assert recorder.events == [AnnounceEvent.STARTED, AnnounceEvent.STOPPED]
            assert recorder.store.scrape_counts(HASH, trio.current_time()) == (0, 0, 0)
            assert took < STOPPED_TIMEOUT / 2
            assert ann.status.last_error is None
            [association] = proxy.associations
            assert association.relayed == association.returned == 3  # connect, 2 announces
            # The client's exit still ended the association (the proxy sees its end soon).
            with trio.fail_after(1):
                while not association.closed:
                    await trio.sleep(0.005)
