"""The client drops a connection id the tracker answers with an error and retries at once, once,
when that id may have been stale; an error to an id granted for the request itself is final.

Trackers word a stale id differently (ours "connection id expired", opentracker "Connection ID
missmatch.", aquatic "Connection invalid or expired"), so any error answer to an announce or a
scrape sent with a cached id counts: the sans-IO core is driven by hand, then the trio client
against our server with a connection id window so short that the cached id is stale on the
second announce.
"""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_handshake import PeerAddress
from bip_utracker._client import open_tracker_client
from bip_utracker._client_core import (
    AnnounceParams,
    AnnounceResult,
    RequestFailed,
    ScrapeResult,
    TrackerClientCore,
    TrackerEvent,
)
from bip_utracker._codec import (
    AnnounceRequest,
    AnnounceResponse,
    ConnectRequest,
    ConnectResponse,
    ErrorResponse,
    Request,
    ScrapeRequest,
    ScrapeResponse,
    ScrapeStats,
    decode_request,
)
from bip_utracker._errors import TrackerRejectedError
from bip_utracker._server import serve_tracker
from bip_utracker._server_core import BAD_CONNECTION_ID, ServerConfig

TRACKER = PeerAddress.parse("127.0.0.1:6969")
PARAMS = AnnounceParams(b"i" * 20, b"p" * 20, port=6881, left=100)
HASH = b"h" * 20
# How each tracker words a stale connection id: none of them is matched on.
STALE_ID_MESSAGES = (BAD_CONNECTION_ID, "Connection ID missmatch.", "Connection invalid or expired")


def _core(**kwargs: float) -> TrackerClientCore:
    return TrackerClientCore(rng=random.Random(5), **kwargs)  # type: ignore[arg-type]


def _sent(core: TrackerClientCore, now: float = 0.0) -> list[Request]:
    return [decode_request(data) for data, _ in core.datagrams_to_send(now)]


def _events(core: TrackerClientCore) -> list[TrackerEvent]:
    events = []
    while (event := core.next_event()) is not None:
        events.append(event)
    return events


def _connect(core: TrackerClientCore, now: float, connection_id: int) -> list[Request]:
    """Answer the one connect waiting to be sent; return what that releases."""
    [connect] = _sent(core, now)
    assert isinstance(connect, ConnectRequest)
    core.receive_datagram(
        ConnectResponse(connect.transaction_id, connection_id).encode(), TRACKER, now
    )
    return _sent(core, now)


def _announce_with_id(core: TrackerClientCore, now: float, connection_id: int) -> AnnounceRequest:
    """Start an announce and connect it; return the announce sent with *connection_id*."""
    core.announce(TRACKER, PARAMS, now)
    [announce] = _connect(core, now, connection_id)
    assert isinstance(announce, AnnounceRequest)
    assert announce.connection_id == connection_id
    return announce


def _refuse(core: TrackerClientCore, request: Request, now: float, message: str) -> None:
    core.receive_datagram(ErrorResponse(request.transaction_id, message).encode(), TRACKER, now)


def _cached(core: TrackerClientCore, now: float, *, scrape: bool = False) -> Request:
    """Get id 1 cached by an answered announce, then start a request sent with it at *now*."""
    first = _announce_with_id(core, 0.0, connection_id=1)
    core.receive_datagram(AnnounceResponse(first.transaction_id, 1, 0, 0).encode(), TRACKER, 0)
    _events(core)
    if scrape:
        core.scrape(TRACKER, (HASH,), now)
    else:
        core.announce(TRACKER, PARAMS, now)
    [request] = _sent(core, now)
    assert getattr(request, "connection_id", None) == 1
    return request


@pytest.mark.parametrize("message", [*STALE_ID_MESSAGES, "torrent not registered"])
def test_an_error_to_an_id_granted_for_the_request_is_final_at_once(message: str) -> None:
    """The tracker granted the id for this very packet: whatever it says, it refuses the
    request, not the id (libtorrent reconnects only when the id might have expired)."""
    core = _core()
    first = _announce_with_id(core, 0.0, connection_id=1)
    _refuse(core, first, 0.1, message)
    [failed] = _events(core)
    assert isinstance(failed, RequestFailed)
    assert isinstance(failed.error, TrackerRejectedError)
    assert failed.error.message == message
    assert _sent(core, 0.1) == []  # no second round trip
    assert core.connection_id(TRACKER, 0.1) == 1  # the id itself was fine
    stats = core.statistics()
    assert (stats.connects, stats.error_retries, stats.failed) == (1, 0, 1)


@pytest.mark.parametrize("message", STALE_ID_MESSAGES)
def test_an_error_to_a_retransmission_of_a_fresh_id_reconnects(message: str) -> None:
    """Sent twice, the id has aged: the error may be about it, so it is dropped and replaced."""
    core = _core(timeout=15.0)
    first = _announce_with_id(core, 0.0, connection_id=1)
    core.handle_timer(15.0)
    [copy] = _sent(core, 15.0)
    assert copy.transaction_id == first.transaction_id
    _refuse(core, copy, 15.1, message)
    assert _events(core) == []
    assert core.connection_id(TRACKER, 15.1) is None
    [again] = _connect(core, 15.1, connection_id=2)
    assert isinstance(again, AnnounceRequest)
    assert again.connection_id == 2
    assert again.transaction_id != first.transaction_id
    core.receive_datagram(AnnounceResponse(again.transaction_id, 900, 1, 2).encode(), TRACKER, 16)
    [result] = _events(core)
    assert isinstance(result, AnnounceResult)
    assert (result.interval, result.leechers, result.seeders) == (900, 1, 2)
    stats = core.statistics()
    assert (stats.connects, stats.error_retries, stats.retransmissions) == (2, 1, 1)


def test_an_error_to_a_cached_id_reconnects_at_once() -> None:
    core = _core()
    first = _announce_with_id(core, 0.0, connection_id=1)
    core.receive_datagram(AnnounceResponse(first.transaction_id, 1, 0, 0).encode(), TRACKER, 0)
    _events(core)
    core.announce(TRACKER, PARAMS, 30.0)
    [cached] = _sent(core, 30.0)
    assert isinstance(cached, AnnounceRequest)
    assert cached.connection_id == 1
    _refuse(core, cached, 30.1, BAD_CONNECTION_ID)
    [again] = _connect(core, 30.1, connection_id=2)
    assert isinstance(again, AnnounceRequest)
    assert again.connection_id == 2


def test_a_second_error_fails_the_request_without_another_connect() -> None:
    core = _core()
    cached = _cached(core, 10.0)
    _refuse(core, cached, 10.0, "Connection ID missmatch.")
    [again] = _connect(core, 10.0, connection_id=2)
    _refuse(core, again, 10.1, "torrent not registered with this tracker")
    [failed] = _events(core)
    assert isinstance(failed, RequestFailed)
    assert isinstance(failed.error, TrackerRejectedError)
    assert failed.error.message == "torrent not registered with this tracker"
    assert _sent(core, 10.1) == []  # no third try
    stats = core.statistics()
    assert (stats.connects, stats.error_retries, stats.failed) == (2, 1, 1)
    assert stats.requests_in_flight == 0
    # The refused id 1 is gone, id 2 (granted for the retry, which it refused) stays.
    assert core.connection_id(TRACKER, 10.1) == 2
    core.handle_timer(100.0)
    assert core.next_deadline() is None
    assert core.statistics().trackers == 0


def test_a_late_error_to_a_retransmission_does_not_fail_the_retry() -> None:
    """The refused packet went out twice; both copies are refused, the retry still counts."""
    core = _core(timeout=15.0)
    first = _announce_with_id(core, 0.0, connection_id=1)
    core.handle_timer(15.0)
    [copy] = _sent(core, 15.0)
    assert isinstance(copy, AnnounceRequest)
    assert copy.transaction_id == first.transaction_id
    _refuse(core, first, 15.1, BAD_CONNECTION_ID)
    [again] = _connect(core, 15.1, connection_id=2)
    _refuse(core, copy, 15.2, BAD_CONNECTION_ID)  # the second copy's answer, late
    assert _events(core) == []
    assert core.statistics().ignored_unknown_transaction == 1
    core.receive_datagram(AnnounceResponse(again.transaction_id, 60, 0, 0).encode(), TRACKER, 15.3)
    [result] = _events(core)
    assert isinstance(result, AnnounceResult)


def test_the_retry_restarts_the_retransmission_schedule() -> None:
    core = _core(timeout=15.0)
    first = _announce_with_id(core, 0.0, connection_id=1)
    core.handle_timer(15.0)
    core.handle_timer(45.0)  # two retransmissions: the next would wait 60 s
    assert len(_sent(core, 45.0)) == 2
    _refuse(core, first, 50.0, BAD_CONNECTION_ID)
    _connect(core, 50.0, connection_id=2)
    assert core.next_deadline() == 65.0  # 15 s after the retry, not 60


def test_a_scrape_is_retried_the_same_way() -> None:
    core = _core()
    scrape = _cached(core, 10.0, scrape=True)
    assert isinstance(scrape, ScrapeRequest)
    _refuse(core, scrape, 10.1, "Connection invalid or expired")
    [again] = _connect(core, 10.1, connection_id=2)
    assert isinstance(again, ScrapeRequest)
    assert (again.connection_id, again.info_hashes) == (2, (HASH,))
    stats = ScrapeStats(seeders=4, completed=5, leechers=6)
    core.receive_datagram(ScrapeResponse(again.transaction_id, (stats,)).encode(), TRACKER, 10.2)
    [result] = _events(core)
    assert isinstance(result, ScrapeResult)
    assert result.stats(HASH) == stats


def test_requests_refused_together_share_one_reconnect() -> None:
    core = _core()
    first = _announce_with_id(core, 0.0, connection_id=1)
    core.receive_datagram(AnnounceResponse(first.transaction_id, 1, 0, 0).encode(), TRACKER, 0)
    _events(core)
    core.announce(TRACKER, PARAMS, 10.0)
    core.scrape(TRACKER, (HASH,), 10.0)
    announce, scrape = _sent(core, 10.0)
    _refuse(core, announce, 10.1, BAD_CONNECTION_ID)
    _refuse(core, scrape, 10.1, BAD_CONNECTION_ID)  # joins the reconnect already asked for
    released = _connect(core, 10.1, connection_id=2)
    assert sorted(type(request).__name__ for request in released) == [
        "AnnounceRequest",
        "ScrapeRequest",
    ]
    assert all(getattr(request, "connection_id", None) == 2 for request in released)
    assert core.statistics().connects == 2


def test_an_error_for_an_id_already_replaced_keeps_the_new_one() -> None:
    """Another request reconnected meanwhile: the late refusal of the old id uses the new one."""
    core = _core()
    first = _announce_with_id(core, 0.0, connection_id=1)
    core.receive_datagram(AnnounceResponse(first.transaction_id, 1, 0, 0).encode(), TRACKER, 0)
    _events(core)
    core.announce(TRACKER, PARAMS, 10.0)
    core.announce(TRACKER, PARAMS, 10.0)
    one, two = _sent(core, 10.0)
    _refuse(core, one, 10.1, BAD_CONNECTION_ID)
    [retry_one] = _connect(core, 10.1, connection_id=2)
    _refuse(core, two, 10.2, BAD_CONNECTION_ID)  # refused with id 1, which is already gone
    assert core.connection_id(TRACKER, 10.2) == 2
    [retry_two] = _sent(core, 10.2)  # straight away, with id 2: no third connect
    assert isinstance(retry_one, AnnounceRequest)
    assert isinstance(retry_two, AnnounceRequest)
    assert retry_two.connection_id == 2
    assert core.statistics().connects == 2


def test_a_whitelist_refusal_is_not_retried() -> None:
    """opentracker's bare announce header refuses the torrent, not the connection id."""
    core = _core()
    first = _announce_with_id(core, 0.0, connection_id=1)
    bare_header = (1).to_bytes(4, "big") + first.transaction_id.to_bytes(4, "big")
    core.receive_datagram(bare_header, TRACKER, 0)
    [failed] = _events(core)
    assert isinstance(failed, RequestFailed)
    assert isinstance(failed.error, TrackerRejectedError)
    assert _sent(core) == []
    assert core.statistics().error_retries == 0


@settings(max_examples=60, deadline=None)
@given(
    requests=st.integers(min_value=1, max_value=12),
    message=st.text(max_size=40),
    connection_ids=st.lists(st.integers(0, 3), min_size=1, max_size=30),
)
def test_a_tracker_refusing_everything_costs_at_most_one_retry_per_request(
    requests: int, message: str, connection_ids: list[int]
) -> None:
    """However errors and connects interleave, every request ends failed after two sends
    (one if its first send already carried an id granted for it)."""
    core = _core()
    first = _announce_with_id(core, 0.0, connection_id=7)
    core.receive_datagram(AnnounceResponse(first.transaction_id, 1, 0, 0).encode(), TRACKER, 0)
    _events(core)
    for _ in range(requests):
        core.announce(TRACKER, PARAMS, 0.0)  # with the cached id 7
    given_ids = iter(connection_ids)
    sends = connects = 0
    now = 0.0
    # Each round answers everything sent: connects with an id (repeats included, as a tracker
    # with a static id does), everything else with an error. 2 * requests + 2 rounds suffice.
    for _ in range(2 * requests + 2):
        now += 0.01
        outgoing = _sent(core, now)
        if not outgoing:
            break
        for request in outgoing:
            if isinstance(request, ConnectRequest):
                connects += 1
                reply = ConnectResponse(request.transaction_id, next(given_ids, 7)).encode()
            else:
                sends += 1
                reply = ErrorResponse(request.transaction_id, message).encode()
            core.receive_datagram(reply, TRACKER, now)
    events = _events(core)
    assert len(events) == requests
    assert all(isinstance(event, RequestFailed) for event in events)
    assert requests <= sends <= 2 * requests
    assert core.statistics().error_retries == sends - requests
    assert connects <= 2 * requests
    assert core.statistics().requests_in_flight == 0
    core.handle_timer(now + 100.0)
    assert core.next_deadline() is None


async def test_an_expired_id_is_replaced_at_once_against_our_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Ids live one to two seconds at this server, sixty at the client: the second announce
    # uses a cached id the server has forgotten.
    config = ServerConfig(connection_id_window=1.0, rate_limit=None)
    async with (
        serve_tracker(("127.0.0.1", 0), config=config) as server,
        open_tracker_client(bind_v4="127.0.0.1", bind_v6=None, rng=random.Random(9)) as client,
    ):
        host, port = server.address[:2]
        tracker = (str(host), port)
        await client.announce(tracker, HASH, peer_id=b"a" * 20, port=7001, left=1)
        await trio.sleep(10)
        started = trio.current_time()
        result = await client.announce(tracker, HASH, peer_id=b"a" * 20, port=7001, left=1)
        assert trio.current_time() - started < 1.0  # no retransmission timeout, no backoff
        assert result.leechers == 1
        await trio.sleep(10)
        scraped = await client.scrape(tracker, [HASH])
        assert scraped.stats(HASH).leechers == 1
        stats = client.statistics()
        assert (stats.connects, stats.error_retries, stats.retransmissions) == (3, 2, 0)
        assert (stats.completed, stats.failed) == (3, 0)
        assert server.statistics().bad_connection_id == 2
