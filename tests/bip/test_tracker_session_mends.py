"""The tracker hunt's findings as a session meets them: a torrent's tracker that no datagram
can reach (``udp://0.0.0.0``, or a name a DNS blocklist answers ``0.0.0.0`` for) is one failing
tracker, never the end of the torrent and the session; one announcer that fails in a way it
should not (a bug, a misuse) ends alone, loudly, while the others go on; and ``stopped`` asks
an HTTP tracker for no peers (``numwant=0``, as libtorrent)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from _discovery_target import NullSink, SeedTarget
from _engine_helpers import loopback_config
from _http_tracker_server import answer, http_server, query_of, reply
from tests._resolvers import FixedResolver

from bip._client import TorrentOptions, open_session
from bip._client._discovery import TrackerAnnouncer
from bip._client._http_tracker import HttpAnnounceResult, HttpTrackerClient
from bip_handshake import PeerId
from bip_metainfo import MagnetLink
from bip_utracker import (
    AnnounceEvent,
    LocalProtocolError,
    TrackerError,
    open_tracker_client,
    serve_tracker,
)
from bip_utracker._server_core import ServerConfig

HASH = b"\x47" * 20
PEER_ID = PeerId(b"-BP0001-trackmends01")
DEADLINE = 10.0
BLOCKED = {"tracker.blocked.test": ["0.0.0.0", "::"]}  # Pi-hole's default blocking answer


async def test_unconnectable_udp_trackers_fail_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The hunt's session_killed.py and session_dns_blocked.py, one torrent's part."""
    trio.socket.set_custom_hostname_resolver(FixedResolver(BLOCKED))
    config = ServerConfig(interval=60, rate_limit=None)
    async with (
        serve_tracker(("127.0.0.1", 0), config=config) as server,
        open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as udp,
    ):
        host, port = server.address
        urls = [
            "udp://0.0.0.0:6969/announce",
            "udp://tracker.blocked.test:6969/announce",
            "udp://239.1.2.3:6969/announce",
            f"udp://{host}:{port}/announce",
        ]
        announcer = TrackerAnnouncer(udp, urls, peer_id=PEER_ID, min_interval=60.0)
        with trio.move_on_after(100):
            await announcer.run(SeedTarget(HASH), NullSink())
    assert server.statistics().announces == 3  # at 0 and 60 s, and stopped at 100 s
    statuses = {status.tracker: status for status in announcer.status()}
    for url in urls[:3]:
        error = statuses[url].last_error
        assert statuses[url].failures == 3  # at 0, 15 and 45 s: backed off, not ended
        assert isinstance(error, TrackerError)
        assert not isinstance(error, LocalProtocolError)


class BrokenHttpClient(HttpTrackerClient):
    """An HTTP tracker client whose announce fails as no tracker's failure should: the
    ``error`` given (a bug of ours, a misuse)."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error
        self.calls = 0

    async def announce(self, tracker: str, *args: Any, **kwargs: Any) -> HttpAnnounceResult:
        """Fail at once."""
        await trio.lowlevel.checkpoint()
        self.calls += 1
        raise self.error


@pytest.mark.parametrize("error", [RuntimeError("a bug"), LocalProtocolError("a misuse")], ids=type)
async def test_an_announcers_own_failure_ends_it_alone(
    error: Exception, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    broken = BrokenHttpClient(error)
    config = ServerConfig(interval=60, rate_limit=None)
    bad = "http://127.0.0.1:9/announce"
    with caplog.at_level(logging.INFO, logger="bip.client"):
        async with (
            serve_tracker(("127.0.0.1", 0), config=config) as server,
            open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as udp,
        ):
            host, port = server.address
            urls = [bad, f"udp://{host}:{port}/announce"]
            announcer = TrackerAnnouncer(
                udp, urls, peer_id=PEER_ID, http_client=broken, min_interval=60.0
            )
            with trio.move_on_after(100):
                await announcer.run(SeedTarget(HASH), NullSink())
    assert server.statistics().announces == 3  # the other tracker goes on, to its stopped
    assert broken.calls == 1  # no retry of a failure nobody understands
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None  # with its traceback
    assert record.exc_info[1] is error
    assert "127.0.0.1:9" in record.getMessage()
    [status] = [status for status in announcer.status() if status.tracker == bad]
    assert not status.running
    assert status.given_up is not None
    assert str(error) in status.given_up
    assert isinstance(status.last_error, TrackerError)


async def test_the_session_outlives_a_torrent_of_unconnectable_trackers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The hunt's session_killed.py and session_dns_blocked.py: the session ended."""
    trio.socket.set_custom_hostname_resolver(FixedResolver(BLOCKED))
    trackers = ["udp://0.0.0.0:6969/announce", "udp://tracker.blocked.test:6969/announce"]
    link = "magnet:?xt=urn:btih:" + "22" * 20 + "".join(f"&tr={url}" for url in trackers)
    config = loopback_config(trackers=True, tracker_bind="127.0.0.1")
    with tempfile.TemporaryDirectory() as folder, caplog.at_level(logging.INFO, "bip.client"):
        with trio.fail_after(DEADLINE):
            async with open_session(config) as session:
                options = TorrentOptions(save_dir=Path(folder), resume=False)
                torrent = await session.add_torrent(MagnetLink.parse(link), options)

                def failed() -> set[str]:
                    return {
                        url
                        for url in trackers
                        for record in caplog.records
                        if record.getMessage().startswith(f"announce to {url} failed")
                    }

                while failed() != set(trackers):
                    await trio.sleep(0.01)
                assert session.find(torrent.info_hash) is torrent
                # A torrent added after them still comes: the session is alive.
                other = "magnet:?xt=urn:btih:" + "33" * 20
                await session.add_torrent(MagnetLink.parse(other), options)


async def test_stopped_asks_an_http_tracker_for_no_peers() -> None:
    async with http_server(reply(answer(interval=1800, peers=b""))) as http:
        with trio.fail_after(DEADLINE):
            async with (
                open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as udp,
                HttpTrackerClient() as http_client,
            ):
                announcer = TrackerAnnouncer(
                    udp, [http.url], peer_id=PEER_ID, http_client=http_client
                )
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(announcer.run, SeedTarget(HASH), NullSink())
                    # Answered (not just asked): only then is stopped due on the way out.
                    while not [status for status in announcer.status() if status.started]:
                        await trio.sleep(0.01)
                    nursery.cancel_scope.cancel()
    queries = [query_of(request) for request in http.requests]
    assert [query.get("event") for query in queries] == [b"started", b"stopped"]
    assert "numwant" not in queries[0]  # the tracker decides
    assert queries[1]["numwant"] == b"0"
    assert announcer.status()[0].last_event is AnnounceEvent.STOPPED
