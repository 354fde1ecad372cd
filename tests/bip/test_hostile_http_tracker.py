"""Hostile HTTP trackers against the bip client: response framing, redirects and bodies.

Every campaign runs against a scripted raw-socket server on loopback (``_hostile_http_server``)
and checks our side: our own error, within the client's timeout, what we keep bounded, and no
traceback or ERROR record. Redirects off loopback are refused by the test's guard before any
lookup or packet, and the refusal recorded."""

from __future__ import annotations

import logging
import ssl
from ipaddress import ip_address
from typing import Any

import pytest
import trio
from _hostile_http_server import (
    canned,
    chunked,
    loopback_only,
    no_bad_records,
    response,
    scripted_server,
    stream_forever,
)

from bip._client._http_exchange import ExchangeError, follow_redirects, http_exchange
from bip._client._http_response import MAX_FRAMING, HttpResponse, HttpResponseParser
from bip._client._http_tracker import HttpTrackerClient
from bip._client._http_tracker_codec import (
    MAX_PEERS,
    MAX_TEXT,
    HttpTrackerUrl,
    parse_announce_response,
    parse_http_tracker_url,
)
from bip._client._http_tracker_errors import (
    HttpTrackerError,
    MalformedTrackerResponseError,
    TrackerFailureError,
)
from bip_bencode import encode as _encode
from bip_handshake import PeerAddress, is_global_address
from bip_utracker import AnnounceProgress, Announcer, TrackerTimeoutError

SWARM = bytes(range(20))
PEER_ID = b"-BP0100-abcdefghijkl"
GOOD = _encode({b"interval": 900, b"peers": b"\x7f\x00\x00\x02\x1a\xe1"})
DEADLINE = 20.0


def encode(value: object) -> bytes:
    """Bencode test data built loosely typed (hostile values of any type)."""
    return _encode(value)  # type: ignore[arg-type]


async def announce(client: HttpTrackerClient, url: str) -> object:
    return await client.announce(url, SWARM, peer_id=PEER_ID, port=6881, left=1)


# -- response framing --------------------------------------------------------------------------

GZIP_BOMB_HEAD = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # a gzip header; the rest zeros

FRAMING_ERRORS = [
    ("status line of megabytes", b"HTTP/1.1 200 " + b"O" * 2_000_000, "headers exceed"),
    ("header line of megabytes", b"HTTP/1.1 200 OK\r\nX: " + b"a" * 2_000_000, "headers exceed"),
    ("thousands of headers", b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 20_000, "headers exceed"),
    ("huge Content-Length", b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n", "exceeds"),
    (
        "negative Content-Length",
        response("200 OK", GOOD, "Content-Length: -5", length=False),
        "not a Content-Length",
    ),
    ("two Content-Lengths", response("200 OK", GOOD, "Content-Length: 3"), "conflicting"),
    (
        "huge chunk size",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\n",
        "exceeds",
    ),
    (
        "malformed chunk size",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
        "not a chunk size",
    ),
    (
        "chunk size line forever",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"0" * 5000,
        "too long",
    ),
    (
        "trailers forever",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(GOOD)[:-2]
        + b"X-T: y\r\n" * 5000,
        "trailers exceed",
    ),
    (
        "tiny chunks, long extensions",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(GOOD * 40, size=1, extension=b";" + b"e" * 900),
        "framing exceeds",
    ),
    (
        "closed mid-body",
        response("200 OK", b"", f"Content-Length: {len(GOOD) + 9}", length=False) + GOOD,
        "closed the connection",
    ),
    (
        "closed mid-chunk",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(GOOD)[:20],
        "closed the connection",
    ),
    ("HTTP/0.9 garbage", GOOD, "not an HTTP status line"),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "not an HTTP status line"),
    ("1xx forever", b"HTTP/1.1 100 Continue\r\n\r\n" * 50, "interim"),
    (
        "gzip bomb",
        response("200 OK", GZIP_BOMB_HEAD + bytes(4000), "Content-Encoding: gzip"),
        "Content-Encoding",
    ),
    (
        "deflate, chunked",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunked(bytes(4000)),
        "Content-Encoding",
    ),
    (
        "unknown Transfer-Encoding",
        response("200 OK", GOOD, "Transfer-Encoding: gzip", length=False),
        "transfer coding",
    ),
    (
        "chunked then gzip",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n" + chunked(GOOD),
        "transfer coding",
    ),
    (
        "gzip under chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + chunked(GOOD),
        "transfer coding",
    ),
    (
        "body of two megabytes, no length",
        response("200 OK", bytes(2_000_000), length=False),
        "exceeds",
    ),
    ("header folded", b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n" + GOOD, "not an HTTP header"),
]


@pytest.mark.parametrize(
    ("answer", "error"),
    [pytest.param(answer, error, id=name) for name, answer, error in FRAMING_ERRORS],
)
async def test_framing_attacks_give_our_error(
    answer: bytes, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(DEADLINE):
        async with (
            scripted_server(canned(answer, piece=65536)) as server,
            HttpTrackerClient(timeout=10) as client,
        ):
            with pytest.raises(HttpTrackerError, match=error):
                await announce(client, server.url)
    no_bad_records(caplog.records)


FRAMING_READ = [
    (
        "Content-Length with chunked: chunked wins",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(GOOD),
    ),
    (
        "chunk extensions and trailers",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(GOOD, extension=b';name="v"')[:-2]
        + b"X-T: 1\r\n\r\n",
    ),
    (
        "body longer than Content-Length",
        response("200 OK", b"", f"Content-Length: {len(GOOD)}", length=False)
        + GOOD
        + b"garbage" * 1000,
    ),
    ("a few interim answers", b"HTTP/1.1 100 Continue\r\n\r\n" * 3 + response("200 OK", GOOD)),
    ("hundreds of headers", response("200 OK", GOOD, *(f"X-{i}: v" for i in range(500)))),
    (
        "identity codings",
        response("200 OK", GOOD, "Content-Encoding: identity", "Transfer-Encoding: identity"),
    ),
    ("HTTP/1.0 to the close", b"HTTP/1.0 200 OK\n\n" + GOOD),
]


@pytest.mark.parametrize("answer", [pytest.param(answer, id=name) for name, answer in FRAMING_READ])
async def test_odd_but_readable_framing(answer: bytes) -> None:
    with trio.fail_after(DEADLINE):
        async with (
            scripted_server(canned(answer, piece=13)) as server,
            HttpTrackerClient(timeout=10) as client,
        ):
            result = await announce(client, server.url)
    assert result.interval == 900  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("head", "chunk"),
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nX: ", b"a", id="no blank line ever"),
        pytest.param(b"HTTP/1.1 200 OK\r\n", b"X-A: b\r\n", id="headers trickled"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", b"d", id="body trickled"),
        pytest.param(b"HTTP/1.1 200 OK\r\n\r\n", b"", id="no length, never closed"),
    ],
)
async def test_slowloris_ends_at_the_timeout(
    head: bytes, chunk: bytes, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(DEADLINE * 10):
        async with (
            scripted_server(stream_forever(head, chunk, delay=1.0, limit=10_000)) as server,
            HttpTrackerClient(timeout=30) as client,
        ):
            start = trio.current_time()
            with pytest.raises(TrackerTimeoutError):
                await announce(client, server.url)
            assert trio.current_time() - start <= 30.5


def test_head_trickled_a_byte_at_a_time_is_scanned_once() -> None:
    # A head fed byte by byte: found where it ends, and the scan resumes (not quadratic).
    parser = HttpResponseParser()
    data = response("200 OK", GOOD, *(f"X-{i}: v" for i in range(900)))
    for byte in range(len(data)):
        parser.receive_data(data[byte : byte + 1])
    assert parser.response is not None
    assert parser.response.body == GOOD
    # A terminator split across two reads, in each possible place.
    for cut in range(1, 4):
        parser = HttpResponseParser()
        split = data.index(b"\r\n\r\n") + cut
        parser.receive_data(data[:split])
        parser.receive_data(data[split:])
        assert parser.response is not None
        assert parser.response.body == GOOD


def test_chunked_framing_bound_allows_ordinary_chunks() -> None:
    body = bytes(200_000)
    parser = HttpResponseParser()
    parser.receive_data(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(body, size=64, extension=b";x=1")
    )
    assert parser.response is not None
    assert parser.response.body == body
    # Empty-ish chunks with the longest extensions pass the bound and fail.
    parser = HttpResponseParser()
    with pytest.raises(MalformedTrackerResponseError, match="framing"):
        parser.receive_data(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (b"1;" + b"e" * 1000 + b"\r\nx\r\n") * ((MAX_FRAMING // 1000) + 2)
        )


def test_codings_of_a_body_not_read_do_not_matter() -> None:
    # A redirect's or an error's body coded anyway: no body we use, no refusal.
    parser = HttpResponseParser(window=lambda status, headers: (0, 0))
    parser.receive_data(response("302 Found", b"xx", "Location: /a", "Transfer-Encoding: br"))
    assert parser.response is not None
    assert parser.response.status == 302
    parser = HttpResponseParser()
    parser.receive_data(response("404 Not Found", b"zz", "Content-Encoding: gzip"))
    assert parser.response is not None
    assert parser.response.status == 404


# -- redirects ---------------------------------------------------------------------------------


def redirect(location: str) -> bytes:
    return response("302 Found", b"", f"Location: {location}")


async def test_redirect_loops_and_chains(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def loop(request: bytes, stream: trio.abc.Stream, index: int) -> None:
        where = "/b" if b"GET /announce" in request else "/announce?x=1"
        await stream.send_all(redirect(where))

    async def chain(request: bytes, stream: trio.abc.Stream, index: int) -> None:
        await stream.send_all(redirect(f"/hop{index}"))

    with trio.fail_after(DEADLINE):
        # Redirect mechanics on paths no tracker or web seed uses: libtorrent's
        # ssrf_mitigation would refuse them on loopback (test_ssrf_rules.py).
        async with HttpTrackerClient(timeout=10, ssrf_mitigation=False) as client:
            async with scripted_server(loop) as server:
                with pytest.raises(HttpTrackerError, match="redirect loop"):
                    await announce(client, server.url)
                assert len(server.requests) == 3
            async with scripted_server(chain) as server:
                with pytest.raises(HttpTrackerError, match="more than 5 redirects"):
                    await announce(client, server.url)
                assert len(server.requests) == 6
    no_bad_records(caplog.records)


@pytest.mark.parametrize(
    ("location", "error"),
    [
        ("file:///etc/passwd", "do not follow"),
        ("ftp://127.0.0.1/x", "do not follow"),
        ("udp://127.0.0.1:6969/announce", "do not follow"),
        ("javascript:alert(1)", "do not follow"),
        ("http://user:hunter2@127.0.0.1:1/announce", "credentials"),
        ("http://127.0.0.1:0/announce", "do not follow"),
        ("http://" + "a" * 5000 + "/", "do not follow"),
        ("http://0x7f.1/announce", "do not follow"),
    ],
)
async def test_redirects_we_do_not_follow(
    location: str, error: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with loopback_only(monkeypatch) as guard, trio.fail_after(DEADLINE):
        async with (
            scripted_server(canned(redirect(location))) as server,
            HttpTrackerClient(timeout=10) as client,
        ):
            with pytest.raises(HttpTrackerError, match=error) as raised:
                await announce(client, server.url)
    assert "hunter2" not in str(raised.value)
    assert len(server.requests) == 1
    assert guard.refused == []


@pytest.mark.parametrize(
    "location",
    [
        "http://192.0.2.1/announce",
        "https://198.51.100.7:8443/announce",
        "http://tracker.example/announce",
        "//tracker.example/announce",
        "http://[2001:db8::1]/announce",
    ],
)
async def test_redirects_off_loopback_reach_no_one(
    location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client follows a redirect to another host (trackers move); the test's guard refuses
    # the connection off loopback, and the client fails with its own error.
    with loopback_only(monkeypatch) as guard, trio.fail_after(DEADLINE):
        async with (
            scripted_server(canned(redirect(location))) as server,
            HttpTrackerClient(timeout=10) as client,
        ):
            with pytest.raises(HttpTrackerError, match="cannot connect"):
                await announce(client, server.url)
    assert len(guard.refused) == 1


async def test_relative_and_protocol_relative_redirects_are_followed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def script(request: bytes, stream: trio.abc.Stream, index: int) -> None:
        port = stream.socket.getsockname()[1]  # type: ignore[attr-defined]
        answers = [redirect("../x/announce?k=1"), redirect(f"//127.0.0.1:{port}/y"), GOOD]
        await stream.send_all(answers[index] if index < 2 else response("200 OK", GOOD))

    with loopback_only(monkeypatch) as guard, trio.fail_after(DEADLINE):
        async with (
            scripted_server(script, path="/a/announce") as server,
            # Redirect mechanics on paths no tracker or web seed uses: libtorrent's
            # ssrf_mitigation would refuse them on loopback (test_ssrf_rules.py).
            HttpTrackerClient(timeout=10, ssrf_mitigation=False) as client,
        ):
            result = await announce(client, server.url)
    assert result.interval == 900  # type: ignore[attr-defined]
    targets = [request.split(b" ")[1] for request in server.requests]
    assert targets[1:] == [b"/x/announce?k=1", b"/y"]
    assert guard.refused == []


async def test_location_of_megabytes() -> None:
    answer = b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1/" + b"a" * 3_000_000
    with trio.fail_after(DEADLINE):
        async with (
            scripted_server(canned(answer)) as server,
            HttpTrackerClient(timeout=10) as client,
        ):
            with pytest.raises(HttpTrackerError, match="headers exceed"):
                await announce(client, server.url)


# -- tracker bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"l" * 200_000 + b"e" * 200_000, id="deep lists"),
        pytest.param(b"d1:a" * 100_000, id="deep dicts"),
        pytest.param(b"d5:peers999999999999:abc", id="string claimed huge"),
        pytest.param(b"d8:intervali" + b"9" * 100_000 + b"ee", id="integer of 100k digits"),
        pytest.param(b"d8:intervali-0ee", id="minus zero"),
        pytest.param(b"i5e", id="not a dict"),
        pytest.param(b"", id="empty"),
    ],
)
def test_bencode_bombs_are_our_error(body: bytes) -> None:
    with pytest.raises(MalformedTrackerResponseError):
        parse_announce_response(body)


def test_peer_lists_are_bounded() -> None:
    compact = b"".join(
        bytes([10, (i >> 16) & 255, (i >> 8) & 255, i & 255]) + b"\x1a\xe1" for i in range(170_000)
    )
    answer = parse_announce_response(encode({b"peers": compact}))
    assert len(answer.peers) == MAX_PEERS
    dicts = [{b"ip": b"10.0.%d.%d" % (i // 250, i % 250 + 1), b"port": 1} for i in range(30_000)]
    answer = parse_announce_response(encode({b"peers": dicts}))
    assert len(answer.peers) == MAX_PEERS
    # peers6 of odd lengths: the partial last entry is dropped.
    six = bytes(15) + b"\x01\x1a\xe1"  # ::1 port 6881
    for extra in (1, 5, 17):
        answer = parse_announce_response(encode({b"peers6": six + bytes(extra)}))
        assert [str(peer.host) for peer in answer.peers] == ["::1"]
    assert parse_announce_response(encode({b"peers6": bytes(17)})).peers == ()


@pytest.mark.parametrize(
    ("interval", "expected"),
    [(0, 0), (-5, 0), (-(2**70), 0), (2**70, 2**32 - 1), (b"soon", 1800)],
)
def test_intervals_are_clamped(interval: object, expected: int) -> None:
    answer = parse_announce_response(encode({b"interval": interval, b"min interval": interval}))
    assert answer.interval == expected
    # (The Announcer then bounds a regular announce to [min_interval, max_interval].)


def test_failure_and_warning_of_megabytes_are_bounded() -> None:
    failure = b"\x1b[2J\nforged log line\n" + b"x" * 900_000
    with pytest.raises(TrackerFailureError) as raised:
        parse_announce_response(encode({b"failure reason": failure}))
    assert len(raised.value.message) <= MAX_TEXT
    assert "\n" not in raised.value.message
    assert "\x1b" not in raised.value.message
    answer = parse_announce_response(encode({b"warning message": b"\xff\xfe" * 400_000}))
    assert answer.warning is not None
    assert len(answer.warning) <= MAX_TEXT


@pytest.mark.parametrize(
    "value", [b"", b"\x01", b"\x01\x02\x03", b"x" * 17, b"x" * 1000, 7, [b"a"], {b"a": 1}]
)
def test_external_ip_garbage_is_ignored(value: object) -> None:
    answer = parse_announce_response(encode({b"external ip": value, b"interval": 900}))
    assert answer.external_ip is None
    assert answer.interval == 900


async def test_changing_warnings_and_tracker_ids(caplog: pytest.LogCaptureFixture) -> None:
    # A different warning and tracker id with every answer: each id goes back once, the
    # warnings are logged at INFO a few times per tracker, then at DEBUG.
    async def script(request: bytes, stream: trio.abc.Stream, index: int) -> None:
        body = encode(
            {
                b"interval": 900,
                b"tracker id": b"id-%d" % index + b"z" * (2000 if index % 3 == 2 else 0),
                b"warning message": b"warning %d\n" % index + b"w" * 5000,
            }
        )
        await stream.send_all(response("200 OK", body))

    caplog.set_level(logging.DEBUG, logger="bip.client")
    rounds = 40
    with trio.fail_after(DEADLINE):
        async with (
            scripted_server(script) as server,
            HttpTrackerClient(timeout=10) as client,
        ):
            for _ in range(rounds):
                await announce(client, server.url)
    sent = [request.split(b" ")[1] for request in server.requests]
    assert b"trackerid" not in sent[0]
    for index in range(1, rounds):
        previous = index - 1
        if previous % 3 == 2:  # too long to send back: the one before it goes
            previous -= 1
        assert f"trackerid=id-{previous}&".encode() in sent[index] + b"&"
    info = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert 1 <= len(info) <= 10
    assert all(len(r.getMessage()) < 1200 for r in caplog.records)
    no_bad_records(info)


# -- a server on the Internet redirecting into our network (libtorrent's ssrf_mitigation) ------

INTERNET = PeerAddress(ip_address("93.184.216.34"), 80)
LAN = PeerAddress(ip_address("192.168.1.20"), 80)


class FakeExchange:
    """Answers each request with the next of ``answers`` from the address given with it,
    and records each call's URL and ``global_only``."""

    def __init__(self, *answers: tuple[HttpResponse, PeerAddress]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, bool]] = []

    async def __call__(
        self, url: HttpTrackerUrl, target: str, *, global_only: bool
    ) -> tuple[HttpResponse, PeerAddress]:
        self.calls.append((url.url, global_only))
        return self.answers.pop(0)


def moved(location: str) -> HttpResponse:
    return HttpResponse(302, "Found", (("location", location),), b"")


OK = HttpResponse(200, "OK", (), GOOD)


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1/announce",
        "http://10.1.2.3:8080/admin",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://[::ffff:192.168.0.1]/",
        "http://0.0.0.0/",
    ],
)
async def test_the_internet_cannot_redirect_into_our_network(location: str) -> None:
    exchange = FakeExchange((moved(location), INTERNET))
    url = parse_http_tracker_url("http://tracker.example/announce")
    with pytest.raises(HttpTrackerError, match="into a local network"):
        await follow_redirects(url, "/", exchange, max_redirects=5, error=HttpTrackerError)
    assert exchange.calls == [("http://tracker.example/announce", False)]


async def test_a_name_after_a_global_answer_must_connect_to_a_global_address() -> None:
    # Names are judged once connected (http_exchange's global_only), and the rule sticks
    # through a local hop that a global server chose.
    exchange = FakeExchange(
        (moved("http://other.example/a"), INTERNET),
        (moved("http://lan.example/b"), LAN),
        (OK, INTERNET),
    )
    url = parse_http_tracker_url("http://tracker.example/announce")
    response, _, final = await follow_redirects(
        url, "/", exchange, max_redirects=5, error=HttpTrackerError
    )
    assert response is OK
    assert final.url == "http://lan.example/b"
    assert [only for _, only in exchange.calls] == [False, True, True]


async def test_a_local_server_may_redirect_anywhere() -> None:
    exchange = FakeExchange((moved("http://10.0.0.2/a"), LAN), (OK, LAN))
    url = parse_http_tracker_url("http://192.168.1.20/announce")
    response, _, _ = await follow_redirects(
        url, "/", exchange, max_redirects=5, error=HttpTrackerError
    )
    assert response is OK
    assert [only for _, only in exchange.calls] == [False, False]


async def test_global_only_closes_before_the_request() -> None:
    with trio.fail_after(DEADLINE):
        async with scripted_server(canned(response("200 OK", GOOD))) as server:
            with pytest.raises(ExchangeError, match="not on the Internet") as raised:
                await http_exchange(
                    parse_http_tracker_url(server.url),
                    b"GET / HTTP/1.1\r\n\r\n",
                    HttpResponseParser(),
                    tls_context=ssl.create_default_context,
                    global_only=True,
                )
            await trio.sleep(0.05)  # the server saw the connection end
    assert raised.value.connecting
    assert server.requests == []


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("::ffff:93.184.216.34", True),
        ("127.0.0.1", False),
        ("172.16.0.1", False),
        ("224.0.0.1", False),
        ("ff02::1", False),
        ("::", False),
        ("::ffff:10.0.0.1", False),
    ],
)
def test_is_global_address(host: str, expected: bool) -> None:
    assert is_global_address(ip_address(host)) is expected


# -- a megabyte of tiny containers is decoded off the event loop --------------------------------


@pytest.mark.parametrize(
    ("body", "threaded"),
    [
        pytest.param(b"d5:peersl" + b"de" * 500_000 + b"e8:intervali900ee", True, id="1 MB"),
        pytest.param(b"d8:intervali900e1:xl" + b"le" * 40_000 + b"ee", True, id="80 kB"),
        pytest.param(GOOD, False, id="small"),
    ],
)
@pytest.mark.parametrize("status", ["200 OK", "400 Bad Request"])
async def test_large_answers_are_decoded_in_a_worker_thread(
    body: bytes, threaded: bool, status: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = trio.to_thread.run_sync

    async def recorded(function: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(function.__name__)
        return await real(function, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", recorded)
    with trio.fail_after(DEADLINE):
        async with (
            scripted_server(canned(response(status, body))) as server,
            HttpTrackerClient(timeout=10) as client,
        ):
            if status == "200 OK":
                result = await announce(client, server.url)
                assert result.interval == 900  # type: ignore[attr-defined]
            else:
                with pytest.raises(HttpTrackerError, match="HTTP 400"):
                    await announce(client, server.url)
    expected = "parse_announce_response" if status == "200 OK" else "_refused"
    assert calls == ([expected] if threaded else [])


# -- the announcer on a hostile tracker's intervals --------------------------------------------


@pytest.mark.parametrize(
    ("answer", "least", "most"),
    [
        # Every 300 s (the announcer's min interval, libtorrent's), never more often.
        pytest.param(encode({b"interval": 0}), 12, 14, id="interval 0"),
        pytest.param(encode({b"interval": -100, b"min interval": -1}), 12, 14, id="negative"),
        # Capped at the announcer's max interval (1800 s), never never.
        pytest.param(encode({b"interval": 2**62, b"min interval": 2**62}), 2, 3, id="huge"),
        # Failures back off from 15 s, doubling, up to 1800 s.
        pytest.param(encode({b"failure reason": b"no", b"interval": 0}), 7, 9, id="refusal"),
        pytest.param(encode({b"failure reason": b"x", b"retry in": -5}), 7, 9, id="retry in -5"),
        pytest.param(b"l" * 100, 7, 9, id="garbage"),
    ],
)
async def test_the_announcer_neither_hammers_nor_waits_forever(
    answer: bytes, least: int, most: int, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(100_000):
        async with (
            scripted_server(canned(response("200 OK", answer))) as server,
            HttpTrackerClient(timeout=10) as client,
        ):
            announcer = Announcer(
                client,
                server.url,
                SWARM,
                peer_id=PEER_ID,
                port=6881,
                progress=lambda: AnnounceProgress(left=1),
                stopped_timeout=0,
            )
            with trio.move_on_after(3600.5):
                await announcer.run()
    assert least <= len(server.requests) <= most


# -- TLS -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(response("200 OK", GOOD), id="plain HTTP"),
        pytest.param(b"\x16\x03\x01\x00\x05" + b"\xff" * 5, id="a broken handshake"),
        pytest.param(b"\x16\x03\x01\xff\xff" + bytes(70_000), id="a huge record"),
        pytest.param(b"", id="closed at once"),
    ],
)
async def test_an_https_url_answered_without_tls(
    answer: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(DEADLINE):
        async with scripted_server(canned(answer), raw=True) as server:
            url = server.url.replace("http://", "https://")
            async with HttpTrackerClient(timeout=10) as client:
                with pytest.raises(HttpTrackerError):
                    await announce(client, url)
    no_bad_records(caplog.records)
