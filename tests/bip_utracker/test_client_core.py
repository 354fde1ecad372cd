"""The sans-IO UDP tracker client core, driven with explicit ``now``."""

from __future__ import annotations

import random
import struct
from ipaddress import IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_handshake import PeerAddress
from bip_utracker._client_core import (
    MAX_REQUEST_SIZE,
    AnnounceParams,
    AnnounceResult,
    RequestFailed,
    RequestId,
    ScrapeResult,
    TrackerAddress,
    TrackerClientCore,
    TrackerEvent,
)
from bip_utracker._codec import (
    AnnounceEvent,
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
from bip_utracker._errors import (
    LocalProtocolError,
    MalformedPacketError,
    TrackerRejectedError,
    TrackerTimeoutError,
)

TRACKER = PeerAddress.parse("127.0.0.1:6969")
OTHER = PeerAddress.parse("127.0.0.2:6969")
TRACKER6 = PeerAddress.parse("[::1]:6969")
PARAMS = AnnounceParams(b"i" * 20, b"p" * 20, port=6881, left=100, event=AnnounceEvent.STARTED)
PEERS = (PeerAddress.parse("127.0.0.5:1000"), PeerAddress.parse("127.0.0.6:2000"))


def _core(**kwargs: float) -> TrackerClientCore:
    return TrackerClientCore(rng=random.Random(7), **kwargs)  # type: ignore[arg-type]


def _sent(core: TrackerClientCore, now: float = 0.0) -> list[tuple[Request, TrackerAddress]]:
    return [(decode_request(data), to) for data, to in core.datagrams_to_send(now)]


def _events(core: TrackerClientCore) -> list[TrackerEvent]:
    events = []
    while (event := core.next_event()) is not None:
        events.append(event)
    return events


def _connect(core: TrackerClientCore, now: float, connection_id: int = 99) -> None:
    """Answer the one connect request waiting to be sent."""
    [(request, to)] = _sent(core, now)
    assert isinstance(request, ConnectRequest)
    assert isinstance(to, PeerAddress)  # these tests name trackers by address
    core.receive_datagram(ConnectResponse(request.transaction_id, connection_id).encode(), to, now)


def test_announce_connects_first_and_returns_the_peers() -> None:
    core = _core()
    rid = core.announce(TRACKER, PARAMS, 0.0)
    _connect(core, 0.5, connection_id=1234)
    [(request, to)] = _sent(core, 0.5)
    assert to == TRACKER
    assert isinstance(request, AnnounceRequest)
    assert request.connection_id == 1234
    assert (request.info_hash, request.peer_id, request.port, request.left) == (
        b"i" * 20,
        b"p" * 20,
        6881,
        100,
    )
    assert request.event == AnnounceEvent.STARTED
    assert request.num_want == -1
    reply = AnnounceResponse(request.transaction_id, 900, 3, 4, PEERS).encode()
    core.receive_datagram(reply, TRACKER, 1.0)
    assert _events(core) == [AnnounceResult(rid, TRACKER, b"i" * 20, 900, 3, 4, PEERS)]
    stats = core.statistics()
    assert (stats.completed, stats.requests_in_flight, stats.connects) == (1, 0, 1)
    assert core.next_deadline() == 60.5  # only the cached id's expiry is left


def test_scrape() -> None:
    core = _core()
    hashes = (b"a" * 20, b"b" * 20)
    rid = core.scrape(TRACKER, hashes, 0.0)
    _connect(core, 0.0)
    [(request, _)] = _sent(core)
    assert isinstance(request, ScrapeRequest)
    assert request.info_hashes == hashes
    files = (ScrapeStats(1, 2, 3), ScrapeStats(4, 5, 6))
    core.receive_datagram(ScrapeResponse(request.transaction_id, files).encode(), TRACKER, 0.1)
    [result] = _events(core)
    assert result == ScrapeResult(rid, TRACKER, hashes, files)
    assert isinstance(result, ScrapeResult)
    assert result.stats(b"b" * 20) == ScrapeStats(4, 5, 6)
    with pytest.raises(LocalProtocolError):
        result.stats(b"c" * 20)


def test_one_connect_serves_every_queued_request() -> None:
    core = _core()
    first = core.announce(TRACKER, PARAMS, 0.0)
    second = core.scrape(TRACKER, (b"s" * 20,), 1.0)
    elsewhere = core.announce(OTHER, PARAMS, 1.0)
    sent = _sent(core, 1.0)
    assert [type(request) for request, _ in sent] == [ConnectRequest, ConnectRequest]
    assert [to for _, to in sent] == [TRACKER, OTHER]
    (connect, _), _ = sent
    core.receive_datagram(ConnectResponse(connect.transaction_id, 5).encode(), TRACKER, 2.0)
    requests = _sent(core, 2.0)
    assert [type(request) for request, _ in requests] == [AnnounceRequest, ScrapeRequest]
    assert {
        request.connection_id for request, _ in requests if not isinstance(request, ConnectRequest)
    } == {5}
    assert core.statistics().connects == 2
    assert core.statistics().requests_in_flight == 3
    assert {first, second, elsewhere} == {RequestId(1), RequestId(2), RequestId(3)}


def test_connection_id_is_cached_for_a_minute() -> None:
    core = _core()
    core.announce(TRACKER, PARAMS, 0.0)
    _connect(core, 0.0, connection_id=7)
    [(request, _)] = _sent(core)
    core.receive_datagram(AnnounceResponse(request.transaction_id, 1, 0, 0).encode(), TRACKER, 0)
    assert core.connection_id(TRACKER, 59.9) == 7
    core.announce(TRACKER, PARAMS, 59.9)
    [(request, _)] = _sent(core, 59.9)
    assert isinstance(request, AnnounceRequest)
    assert request.connection_id == 7
    core.receive_datagram(AnnounceResponse(request.transaction_id, 1, 0, 0).encode(), TRACKER, 60)
    assert core.connection_id(TRACKER, 60.0) is None
    core.announce(TRACKER, PARAMS, 60.0)
    [(request, _)] = _sent(core, 60.0)
    assert isinstance(request, ConnectRequest)


def test_idle_tracker_is_forgotten_when_its_id_expires() -> None:
    core = _core(connection_lifetime=30.0)
    core.announce(TRACKER, PARAMS, 0.0)
    _connect(core, 0.0)
    [(request, _)] = _sent(core)
    core.receive_datagram(AnnounceResponse(request.transaction_id, 1, 0, 0).encode(), TRACKER, 0)
    assert core.statistics().trackers == 1
    assert core.next_deadline() == 30.0
    core.handle_timer(29.0)
    assert core.statistics().trackers == 1
    core.handle_timer(30.0)
    assert core.statistics().trackers == 0
    assert core.next_deadline() is None


def test_retransmission_follows_15_times_2_to_the_n_then_fails() -> None:
    core = _core()
    rid = core.announce(TRACKER, PARAMS, 0.0)
    [(first, _)] = _sent(core)
    deadlines = []
    now = 0.0
    for _ in range(9):
        deadline = core.next_deadline()
        assert deadline is not None
        deadlines.append(deadline - now)
        now = deadline
        core.handle_timer(now - 0.001)
        assert core.datagrams_to_send(now) == []
        core.handle_timer(now)
        if len(deadlines) < 9:
            [(again, _)] = _sent(core, now)
            assert again == first  # the same packet, transaction id included
    assert deadlines == [15.0 * 2**n for n in range(9)]
    assert now == 15.0 * (2**9 - 1) == 7665.0
    [failed] = _events(core)
    assert isinstance(failed, RequestFailed)
    assert failed.request_id == rid
    assert isinstance(failed.error, TrackerTimeoutError)
    assert core.statistics().retransmissions == 8
    assert core.next_deadline() is None
    assert core.statistics().trackers == 0


def test_retransmission_is_configurable() -> None:
    core = _core(timeout=1.0, max_retransmits=2)
    core.announce(TRACKER, PARAMS, 10.0)
    _connect(core, 10.0)
    [(announce, _)] = _sent(core, 10.0)
    for now in (11.0, 13.0):
        core.handle_timer(now)
        assert _sent(core, now) == [(announce, TRACKER)]
    core.handle_timer(16.9)
    assert _events(core) == []
    core.handle_timer(17.0)
    [failed] = _events(core)
    assert isinstance(failed, RequestFailed)
    assert isinstance(failed.error, TrackerTimeoutError)
    assert "3 attempts" in str(failed.error)


def test_retransmission_after_the_id_expired_reconnects_and_a_late_answer_counts() -> None:
    core = _core()
    rid = core.announce(TRACKER, PARAMS, 0.0)
    _connect(core, 0.0, connection_id=1)
    [(announce, _)] = _sent(core)
    assert isinstance(announce, AnnounceRequest)
    for now in (15.0, 45.0):  # resent with the still-valid id
        core.handle_timer(now)
        [(again, _)] = _sent(core, now)
        assert again == announce
    core.handle_timer(105.0)  # the id expired at 60: connect again first
    [(connect, _)] = _sent(core, 105.0)
    assert isinstance(connect, ConnectRequest)
    core.receive_datagram(ConnectResponse(connect.transaction_id, 2).encode(), TRACKER, 106.0)
    [(resent, _)] = _sent(core, 106.0)
    assert isinstance(resent, AnnounceRequest)
    assert resent.connection_id == 2
    assert resent.transaction_id == announce.transaction_id
    # The new id expires at 166 (nothing to do: a request still needs the tracker); the next
    # retransmission waits 15 * 2**3 from the resend.
    assert core.next_deadline() == 166.0
    core.handle_timer(166.0)
    assert core.statistics().trackers == 1
    assert core.next_deadline() == 106.0 + 120.0
    # An answer to the very first send still completes the request.
    reply = AnnounceResponse(announce.transaction_id, 1, 0, 0).encode()
    core.receive_datagram(reply, TRACKER, 107.0)
    [result] = _events(core)
    assert isinstance(result, AnnounceResult)
    assert result.request_id == rid
    # The id expired at 166 while the request waited: nothing keeps the tracker now.
    assert core.statistics().trackers == 0
    assert core.next_deadline() is None


def test_an_id_that_expires_with_a_request_in_flight_is_forgotten() -> None:
    """Regression: the expired id was kept, and with it the tracker, for ever once the
    request ended (its expiry timer had fired and was never set again)."""
    core = _core()
    rid = core.announce(TRACKER, PARAMS, 0.0)
    _connect(core, 0.1, connection_id=42)
    [(announce, _)] = _sent(core, 0.1)
    for now in (15.1, 45.1):
        core.handle_timer(now)
        assert _sent(core, now) == [(announce, TRACKER)]
    core.handle_timer(60.1)  # the id expires, the announce still in flight
    assert core.connection_id(TRACKER, 60.1) is None
    assert core.statistics().trackers == 1  # the request still needs it
    reply = AnnounceResponse(announce.transaction_id, 1800, 0, 1).encode()
    core.receive_datagram(reply, TRACKER, 70.0)
    [result] = _events(core)
    assert isinstance(result, AnnounceResult)
    assert result.request_id == rid
    assert core.statistics().trackers == 0
    assert core.next_deadline() is None
    # A later announce connects again, as to a tracker never seen.
    core.announce(TRACKER, PARAMS, 80.0)
    [(request, _)] = _sent(core, 80.0)
    assert isinstance(request, ConnectRequest)


def test_connect_timeout_fails_every_waiting_request() -> None:
    core = _core(timeout=1.0, max_retransmits=0)
    core.announce(TRACKER, PARAMS, 0.0)
    core.scrape(TRACKER, (b"x" * 20,), 0.5)
    assert len(_sent(core)) == 1
    core.handle_timer(1.0)
    events = _events(core)
    assert len(events) == 2
    assert all(isinstance(event, RequestFailed) for event in events)
    assert all(
        isinstance(event.error, TrackerTimeoutError)
        for event in events
        if isinstance(event, RequestFailed)
    )
    assert core.statistics().trackers == 0


def test_wrong_transaction_or_address_is_ignored_and_counted() -> None:
    core = _core()
    core.announce(TRACKER, PARAMS, 0.0)
    [(connect, _)] = _sent(core)
    reply = ConnectResponse(connect.transaction_id, 5).encode()
    wrong = ConnectResponse(connect.transaction_id ^ 1, 5).encode()
    core.receive_datagram(wrong, TRACKER, 0.1)
    core.receive_datagram(reply, OTHER, 0.1)
    core.receive_datagram(reply, PeerAddress.parse("127.0.0.1:6970"), 0.1)
    core.receive_datagram(b"", TRACKER, 0.1)
    core.receive_datagram(b"\x00" * 7, TRACKER, 0.1)
    stats = core.statistics()
    assert (stats.ignored_unknown_transaction, stats.ignored_wrong_address) == (3, 2)
    assert core.connection_id(TRACKER, 0.1) is None
    assert _sent(core) == []
    core.receive_datagram(reply, TRACKER, 0.2)
    assert core.connection_id(TRACKER, 0.2) == 5


def test_reply_of_the_wrong_action_is_ignored() -> None:
    core = _core()
    core.announce(TRACKER, PARAMS, 0.0)
    [(connect, _)] = _sent(core)
    core.receive_datagram(AnnounceResponse(connect.transaction_id, 1, 2, 3).encode(), TRACKER, 0)
    core.receive_datagram(ScrapeResponse(connect.transaction_id, ()).encode(), TRACKER, 0)
    assert core.statistics().ignored_unexpected_action == 2
    assert _events(core) == []
    core.receive_datagram(ConnectResponse(connect.transaction_id, 3).encode(), TRACKER, 0)
    [(announce, _)] = _sent(core)
    core.receive_datagram(ConnectResponse(announce.transaction_id, 3).encode(), TRACKER, 0)
    assert core.statistics().ignored_unexpected_action == 3
    assert core.statistics().requests_in_flight == 1


def test_error_reply_rejects_the_request() -> None:
    core = _core()
    rid = core.announce(TRACKER, PARAMS, 0.0)
    _connect(core, 0.0)
    [(announce, _)] = _sent(core)
    core.receive_datagram(
        ErrorResponse(announce.transaction_id, "not whitelisted").encode(), TRACKER, 0
    )
    # The id was granted for this very announce: a refusal, final at once (the retry with a
    # fresh id is for ids that may be stale: tests/bip_utracker/test_client_reconnect.py).
    [failed] = _events(core)
    assert isinstance(failed, RequestFailed)
    assert failed.request_id == rid
    assert isinstance(failed.error, TrackerRejectedError)
    assert failed.error.message == "not whitelisted"
    assert _sent(core) == []
    assert core.connection_id(TRACKER, 1.0) == 99  # the id was fine: kept


def test_error_reply_to_a_cached_id_reconnects_once() -> None:
    core = _core()
    core.announce(TRACKER, PARAMS, 0.0)
    _connect(core, 0.0, connection_id=1)
    [(announce, _)] = _sent(core)
    core.receive_datagram(AnnounceResponse(announce.transaction_id, 1, 0, 0).encode(), TRACKER, 0)
    _events(core)
    rid = core.announce(TRACKER, PARAMS, 10.0)
    [(announce, _)] = _sent(core, 10.0)
    assert isinstance(announce, AnnounceRequest)
    assert announce.connection_id == 1
    # The tracker restarted and no longer knows id 1.
    refusal = ErrorResponse(announce.transaction_id, "Connection ID missmatch.").encode()
    core.receive_datagram(refusal, TRACKER, 11.0)
    assert _events(core) == []
    assert core.connection_id(TRACKER, 11.0) is None
    _connect(core, 11.0, connection_id=2)
    [(again, _)] = _sent(core, 11.0)
    assert isinstance(again, AnnounceRequest)
    assert again.connection_id == 2
    # The retry has its own transaction id: an answer to the refused packet is not one to it.
    assert again.transaction_id != announce.transaction_id
    core.receive_datagram(refusal, TRACKER, 12.0)
    assert _events(core) == []
    refused_again = ErrorResponse(again.transaction_id, "Connection ID missmatch.").encode()
    core.receive_datagram(refused_again, TRACKER, 12.0)  # refused with a fresh id too: give up
    [failed] = _events(core)
    assert isinstance(failed, RequestFailed)
    assert failed.request_id == rid
    assert isinstance(failed.error, TrackerRejectedError)


def test_error_reply_to_connect_fails_every_waiting_request() -> None:
    core = _core()
    core.announce(TRACKER, PARAMS, 0.0)
    core.announce(TRACKER, PARAMS, 0.0)
    [(connect, _)] = _sent(core)
    core.receive_datagram(ErrorResponse(connect.transaction_id, "go away").encode(), TRACKER, 1)
    events = _events(core)
    assert [type(event) for event in events] == [RequestFailed, RequestFailed]
    assert core.statistics().requests_in_flight == 0
    assert core.next_deadline() is None


@pytest.mark.parametrize(
    "reply",
    [
        lambda tid: AnnounceResponse(tid, 1, 2, 3).encode() + b"\x00",
        lambda tid: ScrapeResponse(tid, ()).encode()[:7] + b"\x02\x00",
    ],
)
def test_malformed_reply_fails_the_request(reply: object) -> None:
    core = _core()
    core.announce(TRACKER, PARAMS, 0.0)
    _connect(core, 0.0)
    [(announce, _)] = _sent(core)
    assert callable(reply)
    core.receive_datagram(reply(announce.transaction_id), TRACKER, 0.0)
    events = _events(core)
    if events:
        [failed] = events
        assert isinstance(failed, RequestFailed)
        assert isinstance(failed.error, MalformedPacketError)
        assert core.statistics().malformed == 1
    else:  # too short to carry the transaction id: ignored
        assert core.statistics().ignored_unknown_transaction == 1


def test_bare_announce_header_is_a_refusal() -> None:
    """opentracker answers a torrent missing from its whitelist with 8 bytes: action, tid."""
    core = _core()
    core.announce(TRACKER, PARAMS, 0.0)
    _connect(core, 0.0)
    [(announce, _)] = _sent(core)
    core.receive_datagram(struct.pack(">II", 1, announce.transaction_id), TRACKER, 0.0)
    [failed] = _events(core)
    assert isinstance(failed, RequestFailed)
    assert isinstance(failed.error, TrackerRejectedError)
    assert "whitelist" in str(failed.error)
    assert core.statistics().requests_in_flight == 0


def test_scrape_answered_with_the_wrong_count_is_malformed() -> None:
    core = _core()
    core.scrape(TRACKER, (b"a" * 20, b"b" * 20), 0.0)
    _connect(core, 0.0)
    [(scrape, _)] = _sent(core)
    reply = ScrapeResponse(scrape.transaction_id, (ScrapeStats(1, 1, 1),)).encode()
    core.receive_datagram(reply, TRACKER, 0.0)
    [failed] = _events(core)
    assert isinstance(failed, RequestFailed)
    assert isinstance(failed.error, MalformedPacketError)


def test_ipv6_tracker_gets_ipv6_peers() -> None:
    core = _core()
    core.announce(TRACKER6, PARAMS, 0.0)
    _connect(core, 0.0)
    [(announce, to)] = _sent(core)
    assert to == TRACKER6
    peers = (PeerAddress(IPv6Address("::1"), 51413), PeerAddress(IPv6Address("2001:db8::7"), 1))
    core.receive_datagram(
        AnnounceResponse(announce.transaction_id, 5, 1, 1, peers).encode(), TRACKER6, 0
    )
    [result] = _events(core)
    assert isinstance(result, AnnounceResult)
    assert result.peers == peers
    assert all(peer.family == 6 for peer in result.peers)


def test_cancel() -> None:
    core = _core()
    rid = core.announce(TRACKER, PARAMS, 0.0)
    [(connect, _)] = _sent(core)
    assert core.cancel(rid)
    assert not core.cancel(rid)
    assert core.next_deadline() is None
    assert core.statistics().trackers == 0
    core.receive_datagram(ConnectResponse(connect.transaction_id, 1).encode(), TRACKER, 1)
    assert _events(core) == []
    assert core.statistics().ignored_unknown_transaction == 1


def test_cancel_one_of_two_keeps_the_connect() -> None:
    core = _core()
    kept = core.announce(TRACKER, PARAMS, 0.0)
    dropped = core.announce(TRACKER, PARAMS, 0.0)
    core.cancel(dropped)
    _connect(core, 0.0)
    [(announce, _)] = _sent(core)
    core.receive_datagram(AnnounceResponse(announce.transaction_id, 1, 0, 0).encode(), TRACKER, 0)
    [result] = _events(core)
    assert result.request_id == kept


def test_bounds_and_bad_arguments() -> None:
    core = _core(max_requests=2)
    core.announce(TRACKER, PARAMS, 0.0)
    core.announce(OTHER, PARAMS, 0.0)
    with pytest.raises(LocalProtocolError, match="in flight"):
        core.announce(TRACKER, PARAMS, 0.0)
    core = _core()
    bad: object = ("127.0.0.1", 6969)
    with pytest.raises(LocalProtocolError):
        core.announce(bad, PARAMS, 0.0)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        core.announce(PeerAddress.parse("127.0.0.1:0"), PARAMS, 0.0)
    with pytest.raises(LocalProtocolError):
        core.announce(TRACKER, AnnounceParams(b"short", b"p" * 20, port=1), 0.0)
    with pytest.raises(LocalProtocolError):
        core.announce(TRACKER, AnnounceParams(b"i" * 20, b"p" * 20, port=70000), 0.0)
    with pytest.raises(LocalProtocolError):
        core.announce(TRACKER, "params", 0.0)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        core.scrape(TRACKER, (), 0.0)
    with pytest.raises(LocalProtocolError):
        core.scrape(TRACKER, (b"x" * 20,) * 75, 0.0)
    with pytest.raises(LocalProtocolError):
        core.scrape(TRACKER, (b"x" * 21,), 0.0)
    assert core.statistics().requests_in_flight == 0
    assert core.datagrams_to_send(0.0) == []
    for kwargs in (
        {"timeout": 0.0},
        {"max_retransmits": -1},
        {"connection_lifetime": 0.0},
        {"max_requests": 0},
    ):
        with pytest.raises(LocalProtocolError):
            _core(**kwargs)


def test_url_data_travels_in_every_send() -> None:
    core = _core()
    params = AnnounceParams(
        b"i" * 20, b"p" * 20, port=1, url_data=b"/announce?passkey=" + b"k" * 300
    )
    core.announce(TRACKER, params, 0.0)
    _connect(core, 0.0)
    [(announce, _)] = _sent(core)
    assert isinstance(announce, AnnounceRequest)
    assert announce.url_data == params.url_data


# --- hypothesis: garbage and forgeries never crash the core or complete a request ----------------

_addresses = st.sampled_from([TRACKER, OTHER, TRACKER6, PeerAddress.parse("127.0.0.1:1")])


@st.composite
def _forged(draw: st.DrawFn) -> bytes:
    tid = draw(st.integers(0, 2**32 - 1))
    return draw(
        st.one_of(
            st.binary(max_size=64),
            st.just(ConnectResponse(tid, draw(st.integers(0, 2**64 - 1))).encode()),
            st.just(AnnounceResponse(tid, 1, 2, 3, PEERS).encode()),
            st.just(ScrapeResponse(tid, (ScrapeStats(1, 2, 3),)).encode()),
            st.just(ErrorResponse(tid, "forged").encode()),
        )
    )


_steps = st.lists(
    st.one_of(
        st.tuples(st.just("announce"), _addresses),
        st.tuples(st.just("forge"), _addresses, _forged()),
        st.tuples(st.just("answer_wrong_address"), _addresses),
        st.tuples(st.just("wait"), st.floats(0, 500)),
    ),
    max_size=40,
)


@settings(max_examples=150)
@given(_steps, st.integers(0, 2**32))
def test_forged_traffic_never_completes_a_request(
    steps: list[tuple[object, ...]], seed: int
) -> None:
    core = TrackerClientCore(rng=random.Random(seed), timeout=5.0, max_retransmits=3)
    now = 0.0
    in_flight: dict[int, TrackerAddress] = {}  # transaction ids sent, to their destination
    issued: set[RequestId] = set()
    ended: set[RequestId] = set()

    def pump() -> None:
        for data, to in core.datagrams_to_send(now):
            in_flight[decode_request(data).transaction_id] = to
        while (event := core.next_event()) is not None:
            assert isinstance(event, RequestFailed)  # nothing genuine ever answered
            assert isinstance(event.error, TrackerTimeoutError)
            assert event.request_id in issued
            assert event.request_id not in ended
            ended.add(event.request_id)

    for step in steps:
        if step[0] == "announce":
            address = step[1]
            assert isinstance(address, PeerAddress)
            issued.add(core.announce(address, PARAMS, now))
        elif step[0] == "forge":
            _, source, data = step
            assert isinstance(source, PeerAddress)
            assert isinstance(data, bytes)
            # A forgery that guessed a live transaction id and the right address is a real
            # answer as far as anyone can tell; only genuine misses are forgeries.
            if len(data) >= 8 and in_flight.get(int.from_bytes(data[4:8], "big")) == source:
                continue
            core.receive_datagram(data, source, now)
        elif step[0] == "answer_wrong_address":
            for tid, to in list(in_flight.items()):
                source = step[1]
                assert isinstance(source, PeerAddress)
                if source != to:
                    core.receive_datagram(ConnectResponse(tid, 1).encode(), source, now)
        else:
            wait = step[1]
            assert isinstance(wait, float)
            now += wait
            core.handle_timer(now)
        pump()
        deadline = core.next_deadline()
        assert deadline is None or deadline > now
    # Run the clock out: every request ends, by timeout, exactly once.
    for _ in range(100):
        deadline = core.next_deadline()
        if deadline is None:
            break
        now = deadline
        core.handle_timer(now)
        pump()
    assert ended == issued
    assert core.statistics().requests_in_flight == 0
    assert core.statistics().trackers == 0


@settings(max_examples=300)
@given(st.binary(min_size=8, max_size=120), st.sampled_from(["connect", "announce", "scrape"]))
def test_garbage_with_a_live_transaction_id_ends_or_is_ignored(garbage: bytes, stage: str) -> None:
    """Bytes that name a live transaction from the right address: a result only if they decode
    to the right answer, otherwise a failure of that request or nothing; never an exception."""
    core = _core()
    if stage == "scrape":
        rid = core.scrape(TRACKER, (b"a" * 20,), 0.0)
    else:
        rid = core.announce(TRACKER, PARAMS, 0.0)
    if stage != "connect":
        _connect(core, 0.0)
    [(request, _)] = _sent(core)
    data = garbage[:4] + request.transaction_id.to_bytes(4, "big") + garbage[8:]
    core.receive_datagram(data, TRACKER, 1.0)
    events = _events(core)
    assert len(events) <= 1
    for event in events:
        if isinstance(event, RequestFailed):
            assert isinstance(event.error, MalformedPacketError | TrackerRejectedError)
            assert event.request_id == rid
        elif stage == "announce":
            assert isinstance(event, AnnounceResult)
            assert data[:4] == b"\x00\x00\x00\x01"
        else:
            assert stage == "scrape"
            assert isinstance(event, ScrapeResult)
            assert data[:4] == b"\x00\x00\x00\x02"
            assert len(data) == 20
    if not events and stage == "connect" and data[:4] == b"\x00\x00\x00\x00" and len(data) == 16:
        assert core.connection_id(TRACKER, 1.0) == int.from_bytes(data[8:16], "big")


def test_client_cores_against_the_server_core_with_no_network() -> None:
    """Several client cores and our server core, datagrams carried by hand (DESIGN.md 5)."""
    from bip_utracker._server_core import TrackerServerCore

    server = TrackerServerCore(secret=bytes(32), rng=random.Random(1))
    server_address = PeerAddress.parse("127.0.0.1:6969")
    clients = {PeerAddress.parse(f"127.0.0.{n}:40000"): _core() for n in range(2, 6)}
    now = 0.0

    def carry() -> None:
        """Deliver datagrams both ways until nothing moves."""
        for _ in range(10):
            moved = False
            for source, core in clients.items():
                for data, to in core.datagrams_to_send(now):
                    assert to == server_address
                    server.receive_datagram(data, (str(source.host), source.port), now)
                    moved = True
            for data, (host, port) in server.datagrams_to_send(now):
                destination = PeerAddress.parse(f"{host}:{port}")
                clients[destination].receive_datagram(data, server_address, now)
                moved = True
            if not moved:
                return
        raise AssertionError("datagrams kept moving")

    results: dict[PeerAddress, TrackerEvent] = {}
    for index, (source, core) in enumerate(clients.items()):
        params = AnnounceParams(
            b"s" * 20, bytes([index]) * 20, port=7000 + index, left=0 if index == 0 else 10
        )
        core.announce(server_address, params, now)
        carry()
        [results[source]] = _events(core)
        now += 1.0
    last = results[list(clients)[-1]]
    assert isinstance(last, AnnounceResult)
    assert (last.seeders, last.leechers) == (1, 3)
    others = {PeerAddress.parse(f"127.0.0.{n}:{7000 + n - 2}") for n in range(2, 5)}
    assert set(last.peers) == others  # never the announcer itself
    scraper = clients[next(iter(clients))]
    scraper.scrape(server_address, (b"s" * 20, b"t" * 20), now)
    carry()
    [scrape] = _events(scraper)
    assert isinstance(scrape, ScrapeResult)
    assert scrape.stats(b"s" * 20) == ScrapeStats(seeders=1, completed=0, leechers=3)
    assert scrape.stats(b"t" * 20) == ScrapeStats(seeders=0, completed=0, leechers=0)
    assert scraper.statistics().connects == 1  # the id from the announce served the scrape


def _longest_url_data() -> int:
    """URLData bytes of the longest announce that fits MAX_REQUEST_SIZE (98 bytes, then 2 per
    255-byte option)."""
    length = 0
    while 98 + (length + 1) + 2 * -(-(length + 1) // 255) <= MAX_REQUEST_SIZE:
        length += 1
    return length


def test_an_announce_longer_than_a_proxied_datagram_is_refused_at_once() -> None:
    core = _core()
    longest = _longest_url_data()
    fits = AnnounceParams(b"i" * 20, b"p" * 20, port=1, url_data=b"x" * longest)
    core.announce(TRACKER, fits, 0.0)
    assert len(fits.request(0, 0).encode()) == MAX_REQUEST_SIZE
    too_long = AnnounceParams(b"i" * 20, b"p" * 20, port=1, url_data=b"x" * (longest + 1))
    with pytest.raises(LocalProtocolError, match=f"{MAX_REQUEST_SIZE}"):
        core.announce(TRACKER, too_long, 0.0)
    with pytest.raises(LocalProtocolError, match="URLData"):
        too_long.check()
    # Refused before it was queued: the connect of the one that fits alone goes out.
    assert [type(request) for request, _ in _sent(core)] == [ConnectRequest]
    assert core.statistics().requests_in_flight == 1
    # Bytes a proxy's relay adds (262 at most) still fit the largest IPv4 UDP payload.
    assert MAX_REQUEST_SIZE + 262 == 65_507
