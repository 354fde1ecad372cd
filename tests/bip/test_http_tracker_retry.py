"""BEP 31 ``retry in`` from HTTP trackers: read strictly by the codec, carried on the refusal,
honoured by the Announcer over loopback; and the hosts an HTTP tracker URL may name (bip_utracker's
one host-name rule)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from _http_tracker_server import answer, http_server, query_of, reply
from hypothesis import given
from hypothesis import strategies as st

from bip._client._http_tracker import HttpTrackerClient
from bip._client._http_tracker_codec import (
    failure_error,
    parse_announce_response,
    parse_http_tracker_url,
    parse_scrape_response,
    retry_in,
)
from bip._client._http_tracker_errors import (
    HttpTrackerError,
    MalformedTrackerResponseError,
    TrackerFailureError,
)
from bip_bencode import encode
from bip_handshake import PeerId
from bip_utracker import (
    AnnounceProgress,
    Announcer,
    LocalProtocolError,
    TrackerRejectedError,
)

HASH = b"\x31" * 20
PEER_ID = PeerId(b"-BP0100-retryinhttp1")

# -- the codec -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (5, 5),
        (2**70, 2**32 - 1),  # clamped, as intervals are
        (b"never", "never"),
        (-1, None),
        (b"5", None),  # a string of digits is no integer
        (b"Never", None),
        (b"never ", None),
        (b"", None),
        ([5], None),
        ({b"never": 1}, None),
        (None, None),
        (True, None),
    ],
)
def test_retry_in_is_read_strictly(value: object, expected: object) -> None:
    assert retry_in(value) == expected


def test_a_failure_carries_retry_in_and_interval() -> None:
    body = answer(failure_reason=b"overloaded", retry_in=5, interval=900, min_interval=1200)
    with pytest.raises(TrackerFailureError) as caught:
        parse_announce_response(body)
    error = caught.value
    assert isinstance(error, TrackerRejectedError)
    assert (error.message, error.retry_in, error.interval) == ("overloaded", 5, 1200)
    assert str(error) == "overloaded"
    with pytest.raises(TrackerFailureError) as caught:
        parse_announce_response(answer(failure_reason=b"no tracker here", retry_in=b"never"))
    assert (caught.value.retry_in, caught.value.interval) == ("never", None)
    with pytest.raises(TrackerFailureError) as caught:
        parse_scrape_response(answer(failure_reason=b"busy", retry_in=1), [HASH])
    assert caught.value.retry_in == 1


def test_a_failure_without_retry_in_is_a_plain_refusal() -> None:
    with pytest.raises(TrackerFailureError) as caught:
        parse_announce_response(answer(failure_reason=b"unregistered torrent"))
    assert (caught.value.retry_in, caught.value.interval) == (None, None)


def test_retry_in_without_a_failure_is_no_failure() -> None:
    parsed = parse_announce_response(answer(interval=60, retry_in=5, peers=b""))
    assert parsed.interval == 60


def test_failure_error_of_an_error_status_body() -> None:
    error = failure_error(answer(failure_reason=b"slow down", retry_in=30))
    assert error is not None
    assert error.retry_in == 30
    assert failure_error(b"<html>503</html>") is None
    assert failure_error(answer(interval=5)) is None


retry_values = st.one_of(
    st.integers(-(2**80), 2**80),
    st.binary(max_size=12),
    st.sampled_from([b"never", b"NEVER", b"nevermore", b"0", b"-1"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.binary(max_size=4), st.integers(), max_size=2),
)


@given(value=retry_values, extra=st.dictionaries(st.binary(max_size=16), retry_values, max_size=4))
def test_any_retry_in_gives_a_refusal_never_a_crash(
    value: object, extra: dict[bytes, object]
) -> None:
    fields = {**extra, b"failure reason": b"no", b"retry in": value}
    with pytest.raises(TrackerFailureError) as caught:
        parse_announce_response(encode(fields))  # type: ignore[arg-type]
    got = caught.value.retry_in
    assert got is None or got == "never" or (isinstance(got, int) and 0 <= got < 2**32)
    assert got == retry_in(value)


@given(body=st.binary(max_size=200))
def test_garbage_gives_our_errors_only(body: bytes) -> None:
    with contextlib.suppress(TrackerFailureError, MalformedTrackerResponseError):
        parse_announce_response(body)
    assert failure_error(body) is None or isinstance(failure_error(body), TrackerFailureError)


# -- the client, over loopback -------------------------------------------------------------------


async def test_the_client_raises_the_trackers_retry_in() -> None:
    body = answer(failure_reason=b"overloaded", retry_in=5)
    async with http_server(reply(body)) as server:
        with pytest.raises(TrackerFailureError) as caught:
            await HttpTrackerClient().announce(server.url, HASH, peer_id=PEER_ID, port=1)
    assert caught.value.retry_in == 5
    # with an error status too (some trackers send 503 with the bencoded refusal)
    async with http_server(reply(body, status="503 Busy")) as server:
        with pytest.raises(TrackerFailureError) as caught:
            await HttpTrackerClient().announce(server.url, HASH, peer_id=PEER_ID, port=1)
    assert caught.value.retry_in == 5
    async with http_server(reply(b"busy", status="503 Busy")) as server:
        with pytest.raises(HttpTrackerError, match="503"):
            await HttpTrackerClient().announce(server.url, HASH, peer_id=PEER_ID, port=1)


def in_turn(*bodies: bytes) -> Callable[[bytes, trio.abc.Stream], Awaitable[None]]:
    """A handler answering each request with the next body (the last one after the end)."""
    count = 0

    async def handle(request: bytes, stream: trio.abc.Stream) -> None:
        nonlocal count
        body = bodies[min(count, len(bodies) - 1)]
        count += 1
        await reply(body)(request, stream)

    return handle


async def test_the_announcer_waits_the_trackers_retry_in(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handler = in_turn(answer(failure_reason=b"overloaded", retry_in=5), answer(interval=1000))
    times: list[float] = []

    async def timed(request: bytes, stream: trio.abc.Stream) -> None:
        times.append(trio.current_time())
        await handler(request, stream)

    async with http_server(timed) as server, HttpTrackerClient() as client:
        announcer = Announcer(
            client, server.url, HASH, peer_id=PEER_ID, port=6881, progress=AnnounceProgress
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announcer.run)
            await trio.sleep(10)
            assert announcer.status.failures == 1
            assert announcer.status.next_announce == pytest.approx(300, abs=1)
            await trio.sleep(400)
            status = announcer.status
            nursery.cancel_scope.cancel()
    assert times[1] - times[0] == pytest.approx(300, abs=1)
    assert status.announces == 1
    assert status.started
    events = [query_of(request).get("event") for request in server.requests]
    assert events == [b"started", b"started", b"stopped"]


async def test_the_announcer_gives_up_on_never(autojump_clock: trio.testing.MockClock) -> None:
    body = answer(failure_reason=b"this is not a tracker", retry_in=b"never")
    async with http_server(reply(body)) as server, HttpTrackerClient() as client:
        announcer = Announcer(
            client, server.url, HASH, peer_id=PEER_ID, port=6881, progress=AnnounceProgress
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announcer.run)
            await trio.sleep(86_400)
            status = announcer.status
            nursery.cancel_scope.cancel()
    assert len(server.requests) == 1  # one started, then nothing: no retry, no stopped
    assert status.given_up == "this is not a tracker"
    assert status.next_announce is None


# -- hosts of HTTP tracker URLs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host", "header"),
    [
        ("http://tracker.example/announce", "tracker.example", "tracker.example"),
        ("http://Tracker.Example.ORG:8080/a", "tracker.example.org", "tracker.example.org:8080"),
        ("http://tracker.example./announce", "tracker.example.", "tracker.example."),  # FQDN
        ("http://xn--bcher-kva.example/a", "xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("http://localhost:6969/announce", "localhost", "localhost:6969"),
        ("http://t-1.example/a", "t-1.example", "t-1.example"),
        ("http://1.2.3.4/announce", "1.2.3.4", "1.2.3.4"),
        ("http://127.0.0.1:80/announce", "127.0.0.1", "127.0.0.1"),
        ("https://[::1]:443/announce", "::1", "[::1]"),
        ("http://[2001:DB8::1]:6969/a", "2001:db8::1", "[2001:db8::1]:6969"),
        ("http://[::ffff:1.2.3.4]/a", "::ffff:1.2.3.4", "[::ffff:1.2.3.4]"),
        ("http://0x7f.example/a", "0x7f.example", "0x7f.example"),  # a number, but not last
    ],
)
def test_hosts_that_are_names_or_addresses(url: str, host: str, header: str) -> None:
    parsed = parse_http_tracker_url(url)
    assert (parsed.host, parsed.host_header) == (host, header)


@pytest.mark.parametrize(
    "url",
    [
        "http://0x7f.1/announce",  # inet_aton would read 127.0.0.1
        "http://127.1/announce",
        "http://0x7f000001/announce",
        "http://2130706433/announce",
        "http://017700000001/announce",
        "http://1.2.3/announce",
        "http://1.2.3.4.5/announce",
        "http://256.1.1.1/announce",
        "http://tracker.example.123/announce",  # ends in a number
        "http://tracker.example.0x1f/announce",
        "http://tracker.example../announce",
        "http://.tracker.example/announce",
        "http://-tracker.example/announce",
        "http://tracker-.example/announce",
        "http://tr_acker.example/announce",
        "http://" + "a" * 64 + ".example/announce",  # a label of 64
        "http://" + "a." * 127 + "example/announce",  # over 253 characters
        "http://bücher.example/announce",  # Unicode: the xn-- form is asked for
        "http://[fe80::1%25eth0]/announce",  # scoped
        "http://[::1/announce",
        "http://[1.2.3.4]/announce",
        "http://[tracker.example]/announce",
        "http://tracker.example:0/announce",
        "http://tracker.example:65536/announce",
        "http://tracker.example:port/announce",
    ],
)
def test_hosts_refused(url: str) -> None:
    with pytest.raises(LocalProtocolError):
        parse_http_tracker_url(url)


numeric_labels = st.one_of(
    st.integers(0, 2**32).map(str),
    st.integers(0, 2**32).map(hex),
    st.integers(0, 2**32).map(lambda number: "0" + oct(number)[2:]),
)


@given(
    parts=st.lists(numeric_labels, min_size=1, max_size=4),
    names=st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True), max_size=2),
    port=st.one_of(st.none(), st.integers(1, 65535)),
)
def test_a_host_that_ends_in_a_number_is_an_address_or_refused(
    parts: list[str], names: list[str], port: int | None
) -> None:
    host = ".".join([*names, *parts])
    url = f"http://{host}{'' if port is None else f':{port}'}/announce"
    try:
        parsed = parse_http_tracker_url(url)
    except LocalProtocolError:
        return
    # accepted only as a dotted-quad IPv4 address, written as such
    assert not names
    assert len(parts) == 4
    assert parsed.host == host
    assert all(part.isdigit() and str(int(part)) == part for part in parts)
