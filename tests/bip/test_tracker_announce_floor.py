"""The floor under a tracker's announce interval: libtorrent's 300 s by default, for UDP and
HTTP trackers alike, and lowered or raised through TrackerAnnouncer's ``min_interval``."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from _discovery_target import NullSink, SeedTarget
from _http_tracker_server import answer, http_server, reply

from bip._client import ClientConfig
from bip._client._discovery import TRACKER_MAX_INTERVAL, TRACKER_MIN_INTERVAL, TrackerAnnouncer
from bip._client._http_tracker import HttpTrackerClient
from bip_handshake import PeerId
from bip_utracker import DEFAULT_MIN_ANNOUNCE_INTERVAL, open_tracker_client, serve_tracker
from bip_utracker._server_core import ServerConfig

HASH = b"\x46" * 20
PEER_ID = PeerId(b"-BP0001-announcefl01")


def test_the_default_floor_is_libtorrents() -> None:
    assert TRACKER_MIN_INTERVAL == DEFAULT_MIN_ANNOUNCE_INTERVAL == 300.0


@pytest.mark.parametrize(("min_interval", "announces"), [(None, 3), (100.0, 7)])
async def test_a_tracker_asking_for_one_second_is_announced_to_at_the_floor(
    min_interval: float | None, announces: int, autojump_clock: trio.testing.MockClock
) -> None:
    """Both trackers answer ``interval`` 1; in 650 s we announce at 0, 300 and 600 (or every
    100 s with the floor lowered), to each."""
    udp_config = ServerConfig(interval=1, rate_limit=None)
    with trio.fail_after(10_000):
        async with (
            http_server(reply(answer(interval=1, peers=b""))) as http,
            serve_tracker(("127.0.0.1", 0), config=udp_config) as udp_server,
            open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as udp,
            HttpTrackerClient() as http_client,
        ):
            host, port = udp_server.address[:2]
            urls = [http.url, f"udp://{host}:{port}/announce"]
            if min_interval is None:  # the default
                announcer = TrackerAnnouncer(udp, urls, peer_id=PEER_ID, http_client=http_client)
            else:
                announcer = TrackerAnnouncer(
                    udp, urls, peer_id=PEER_ID, http_client=http_client, min_interval=min_interval
                )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(announcer.run, SeedTarget(HASH), NullSink())
                await trio.sleep(650)
                udp_announces = udp_server.statistics().announces
                http_announces = len(http.requests)
                nursery.cancel_scope.cancel()
    assert (http_announces, udp_announces) == (announces, announces)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), TRACKER_MAX_INTERVAL + 1, True, "300"])
async def test_a_bad_floor_is_refused_up_front(bad: object) -> None:
    async with open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as udp:
        with pytest.raises(ValueError, match="min_interval"):
            TrackerAnnouncer(udp, [], peer_id=PEER_ID, min_interval=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("floor", [0, -1, 1800.5, True, "300"])
def test_the_session_refuses_a_floor_that_cannot_work(floor: object) -> None:
    with pytest.raises(ValueError, match="tracker_min_interval"):
        ClientConfig(tracker_min_interval=floor)  # type: ignore[arg-type]


def test_the_sessions_floor_is_libtorrents_by_default() -> None:
    assert ClientConfig().tracker_min_interval == TRACKER_MIN_INTERVAL
