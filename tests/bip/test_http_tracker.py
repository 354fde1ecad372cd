"""The HTTP(S) tracker client against an in-process trio HTTP server on loopback, its sans-IO
response reader and answer parser (including hypothesis on garbage), the Announcer driving
it, and an engine download whose only peer source is an HTTP tracker."""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from _engine_helpers import loopback_config, same_files, write_content
from _http_file_server import self_signed
from _http_tracker_server import (
    Handler,
    MiniTracker,
    answer,
    http_server,
    query_of,
    reply,
    request_target,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from bip import __version__
from bip._client import TorrentOptions, open_session
from bip._client._discovery import TrackerAnnouncer
from bip._client._http_response import (
    MAX_HEADER_SIZE,
    MAX_RESPONSE_SIZE,
    HttpResponse,
    HttpResponseParser,
)
from bip._client._http_tracker import HttpAnnounceResult, HttpTrackerClient
from bip._client._http_tracker_codec import (
    MAX_TEXT,
    HttpAnnounceResponse,
    announce_query,
    parse_announce_response,
    parse_http_tracker_url,
    parse_scrape_response,
    scrape_url,
)
from bip._client._http_tracker_errors import HttpTrackerError, MalformedTrackerResponseError
from bip_bencode import encode
from bip_handshake import PeerAddress, PeerId
from bip_metainfo import InfoHash, create_torrent
from bip_utracker import (
    AnnounceClient,
    AnnounceEvent,
    AnnounceProgress,
    Announcer,
    LocalProtocolError,
    ScrapeStats,
    TrackerRejectedError,
    TrackerTimeoutError,
    open_tracker_client,
)

HASH = bytes(range(20))
PEER_ID = PeerId(b"-BP0100-\x00\xffabc def&=?")
DEADLINE = 10.0


async def announce(client: HttpTrackerClient, url: str, **changes: object) -> HttpAnnounceResult:
    arguments: dict[str, object] = {
        "peer_id": PEER_ID,
        "port": 6881,
        "uploaded": 1,
        "downloaded": 2,
        "left": 3,
        "event": AnnounceEvent.STARTED,
        "num_want": 50,
    }
    arguments.update(changes)
    return await client.announce(url, HASH, **arguments)  # type: ignore[arg-type]


# -- the request -------------------------------------------------------------------------------


async def test_the_request_byte_for_byte() -> None:
    async with http_server(reply(answer(interval=900))) as server:
        client = HttpTrackerClient(rng=random.Random(5))
        await announce(client, server.url)
    [request] = server.requests
    port = server.url.split(":")[2].split("/")[0]
    key = f"{random.Random(5).getrandbits(32):08X}"
    assert (
        request
        == (
            "GET /announce?info_hash=%00%01%02%03%04%05%06%07%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13"
            "&peer_id=-BP0100-%00%FFabc%20def%26%3D%3F&port=6881&uploaded=1&downloaded=2&left=3"
            f"&compact=1&no_peer_id=1&event=started&numwant=50&key={key} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            f"User-Agent: bip/{__version__}\r\n"
            "Accept-Encoding: identity\r\n"
            "Connection: close\r\n"
            "\r\n"
        ).encode()
    )


async def test_regular_announce_and_passkey_query_and_tracker_id() -> None:
    body = answer(interval=900, tracker_id=b"tid \x01")
    async with http_server(reply(body), path="/a/announce.php?passkey=s3cr3t") as server:
        client = HttpTrackerClient()
        await announce(client, server.url, event=AnnounceEvent.NONE, num_want=-1)
        await announce(client, server.url, event=AnnounceEvent.STOPPED, num_want=0)
    first, second = server.requests
    assert request_target(first).startswith("/a/announce.php?passkey=s3cr3t&info_hash=%00")
    params = query_of(first)
    assert "event" not in params  # a regular announce
    assert "numwant" not in params  # -1: the tracker decides
    assert "trackerid" not in params
    assert query_of(second)["event"] == b"stopped"
    assert query_of(second)["numwant"] == b"0"
    assert query_of(second)["trackerid"] == b"tid \x01"  # sent back once given
    assert query_of(second)["key"] == params["key"]  # one key per client


def test_query_keys() -> None:
    query = announce_query(
        info_hash=b"\xff" * 20,
        peer_id=b"a" * 20,
        port=1,
        uploaded=0,
        downloaded=0,
        left=0,
        event=AnnounceEvent.COMPLETED,
        num_want=0,
        key=0xAB,
        tracker_id=b"x",
    )
    assert query.endswith(
        "&compact=1&no_peer_id=1&event=completed&numwant=0&key=000000AB&trackerid=x"
    )


@pytest.mark.parametrize(
    ("url", "host", "port", "target", "header"),
    [
        ("http://t.example/announce", "t.example", 80, "/announce", "t.example"),
        ("HTTPS://t.example:443", "t.example", 443, "/", "t.example"),
        ("http://[::1]:6969/a?x=1#frag", "::1", 6969, "/a?x=1", "[::1]:6969"),
        ("http://127.0.0.1:81/é", "127.0.0.1", 81, "/%C3%A9", "127.0.0.1:81"),
    ],
)
def test_urls(url: str, host: str, port: int, target: str, header: str) -> None:
    parsed = parse_http_tracker_url(url)
    assert (parsed.host, parsed.port, parsed.target, parsed.host_header) == (
        host,
        port,
        target,
        header,
    )


@pytest.mark.parametrize(
    "url",
    [
        "udp://t.example:1/announce",
        "wss://t.example/announce",
        "http:///announce",
        "http://t.example:99999/",
        "http://t.example:0/",
        "http://user:pw@t.example/",
        "http://t.example/a b",
        "http://t.example/a\r\nX: y",
        "http://[zz::1]/",
        "http://" + "a" * 5000,
        "http://" + "a" * 70 + ".example/announce",
    ],
)
def test_bad_urls_are_the_callers_error(url: str) -> None:
    with pytest.raises(LocalProtocolError):
        HttpTrackerClient().check_tracker(url)


@pytest.mark.parametrize(
    "arguments",
    [
        {"timeout": 0},
        {"timeout": True},
        {"max_redirects": -1},
        {"user_agent": "bip\r\nX: y"},
        {"local_address": "localhost"},
    ],
)
def test_bad_client_arguments(arguments: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        HttpTrackerClient(**arguments)


async def test_bad_announce_arguments() -> None:
    client = HttpTrackerClient()
    url = "http://127.0.0.1:1/announce"
    for change in (
        {"port": 70000},
        {"left": -1},
        {"uploaded": 1.5},
        {"event": 1},
        {"num_want": 2**31},
        {"peer_id": b"short"},
    ):
        with pytest.raises(LocalProtocolError):
            await announce(client, url, **change)
    with pytest.raises(LocalProtocolError, match="info-hash"):
        await client.announce(url, b"short", peer_id=PEER_ID, port=1)


def test_scrape_urls() -> None:
    assert scrape_url("http://t.example/announce") == "http://t.example/scrape"
    assert scrape_url("http://t.example/x/announce.php?k=1") == "http://t.example/x/scrape.php?k=1"
    assert scrape_url("http://t.example/a") is None
    assert scrape_url("http://t.example/announce/x") is None


# -- the answer --------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_compact_peers_and_counts_in_every_framing(framing: str) -> None:
    peers = bytes([127, 0, 0, 2, 0x1A, 0xE1, 127, 0, 0, 3, 0, 80, 0, 0, 0, 0, 0, 1, 9, 9])
    peers6 = ipaddress.IPv6Address("::2").packed + b"\x00\x50" + b"\x01\x02"  # partial tail
    body = answer(
        interval=900, min_interval=60, complete=4, incomplete=7, peers=peers, peers6=peers6
    )
    async with http_server(reply(body, framing=framing)) as server:
        client = HttpTrackerClient(local_address="127.0.0.1")
        result = await client.announce(server.url, HASH, peer_id=PEER_ID, port=1)
    assert [str(p) for p in result.peers] == ["127.0.0.2:6881", "127.0.0.3:80", "[::2]:80"]
    assert (result.interval, result.min_interval) == (900, 60)
    assert (result.seeders, result.leechers) == (4, 7)
    assert result.info_hash == HASH
    assert result.tracker == PeerAddress.parse(server.url.split("/")[2])
    assert result.request_id == 1


async def test_dictionary_peers_skip_bad_entries() -> None:
    peers = [
        {"ip": b"127.0.0.5", "port": 6000, "peer id": b"x" * 20},
        {"ip": b"::ffff:127.0.0.6", "port": 6001},
        {"ip": b"tracker.example", "port": 6002},  # a name: not resolved
        {"ip": b"127.0.0.7", "port": 0},
        {"ip": b"127.0.0.8", "port": 70000},
        {"ip": b"\xff", "port": 1},
        {"port": 1},
        b"127.0.0.9",
        7,
    ]
    async with http_server(reply(answer(interval=60, peers=peers))) as server:
        result = await HttpTrackerClient().announce(server.url, HASH, peer_id=PEER_ID, port=1)
    assert [str(p) for p in result.peers] == ["127.0.0.5:6000", "127.0.0.6:6001"]


async def test_failure_reason_is_a_rejection() -> None:
    async with http_server(reply(answer(failure_reason=b"unregistered torrent"))) as server:
        with pytest.raises(TrackerRejectedError, match="unregistered torrent"):
            await announce(HttpTrackerClient(), server.url)
    body = answer(failure_reason=b"bad passkey")
    async with http_server(reply(body, status="403 Forbidden")) as server:
        with pytest.raises(TrackerRejectedError, match="bad passkey"):
            await announce(HttpTrackerClient(), server.url)


def test_a_tracker_text_is_one_bounded_line() -> None:
    text = b"no\r\n[fake] log line \x1b[31m" + b"x" * 100_000
    with pytest.raises(TrackerRejectedError) as caught:
        parse_announce_response(encode({b"failure reason": text}))
    message = str(caught.value)
    assert message.startswith("no\\r\\n[fake] log line \\x1b[31m")
    assert message.isprintable()
    assert len(message) < MAX_TEXT + 20
    warned = parse_announce_response(encode({b"interval": 60, b"warning message": text}))
    assert warned.warning == message


async def test_warning_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    body = answer(interval=60, warning_message=b"slow down", peers=b"")
    caplog.set_level(logging.INFO, logger="bip.client")
    async with http_server(reply(body)) as server:
        client = HttpTrackerClient()
        for _ in range(3):
            result = await announce(client, server.url)
    assert result.warning == "slow down"
    warned = [r for r in caplog.records if "slow down" in r.getMessage()]
    assert len(warned) == 1
    assert warned[0].levelno == logging.INFO


async def test_an_error_status_is_an_error() -> None:
    async with http_server(reply(b"<html>nope</html>", status="404 Not Found")) as server:
        with pytest.raises(HttpTrackerError, match="HTTP 404 Not Found"):
            await announce(HttpTrackerClient(), server.url)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty"),
        (b"<html>", "not bencoded"),
        (b"le", "not a dictionary"),
    ],
)
async def test_malformed_answers(body: bytes, reason: str) -> None:
    async with http_server(reply(body)) as server:
        with pytest.raises(MalformedTrackerResponseError, match=reason):
            await announce(HttpTrackerClient(), server.url)


async def test_refused_connection() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(HttpTrackerError, match="cannot connect"):
            await announce(HttpTrackerClient(), f"http://127.0.0.1:{port}/announce")


# -- redirects ---------------------------------------------------------------------------------


def redirecting(locations: dict[str, str], final: bytes) -> Handler:
    async def handle(request: bytes, stream: trio.abc.Stream) -> None:
        path = request_target(request).partition("?")[0]
        if path in locations:
            head = f"HTTP/1.1 302 Found\r\nLocation: {locations[path]}\r\nContent-Length: 0\r\n\r\n"
            await stream.send_all(head.encode())
        else:
            await reply(final)(request, stream)

    return handle


# The redirect mechanics, on paths that are no tracker's (/b, /c): libtorrent's
# ssrf_mitigation refuses those on this machine (tested in test_ssrf_rules.py), so it is off.


async def test_redirects_are_followed() -> None:
    handler = redirecting(
        {"/announce": "/b/announce?x=1", "/b/announce": "../c"}, answer(interval=61)
    )
    async with http_server(handler) as server:
        result = await announce(HttpTrackerClient(ssrf_mitigation=False), server.url)
    assert result.interval == 61
    targets = [request_target(r) for r in server.requests]
    assert targets[0].startswith("/announce?info_hash=")
    assert targets[1:] == ["/b/announce?x=1", "/c"]  # the Location as given, not re-queried


async def test_redirect_loops_limits_and_schemes() -> None:
    loop = {"/announce": "/b", "/b": "/announce"}
    async with http_server(redirecting(loop, b"")) as server:
        with pytest.raises(HttpTrackerError, match="loop"):
            await announce(HttpTrackerClient(ssrf_mitigation=False), server.url)
    chain = {f"/{i}": f"/{i + 1}" for i in range(10)} | {"/announce": "/0"}
    async with http_server(redirecting(chain, answer(interval=60))) as server:
        with pytest.raises(HttpTrackerError, match="more than 5 redirects"):
            await announce(HttpTrackerClient(ssrf_mitigation=False), server.url)
        assert len(server.requests) == 6
        result = await announce(
            HttpTrackerClient(max_redirects=11, ssrf_mitigation=False), server.url
        )
        assert result.interval == 60
    async with http_server(redirecting({"/announce": "ftp://127.0.0.1/x"}, b"")) as server:
        with pytest.raises(HttpTrackerError, match="redirects to a URL we do not follow") as err:
            await announce(HttpTrackerClient(ssrf_mitigation=False), server.url + "?passkey=SECRET")
        assert "SECRET" not in str(err.value)  # the URL shown without its query
    no_location = reply(b"", status="302 Found")
    async with http_server(no_location) as server:
        with pytest.raises(HttpTrackerError, match=r"HTTP 302 from .* names no Location"):
            await announce(HttpTrackerClient(ssrf_mitigation=False), server.url)


# -- bounds and time -----------------------------------------------------------------------------


async def test_oversize_answers_are_refused() -> None:
    big = b"x" * (MAX_RESPONSE_SIZE + 1)
    for framing in ("length", "chunked", "close"):
        async with http_server(reply(big, framing=framing)) as server:
            with pytest.raises(MalformedTrackerResponseError, match="exceeds"):
                await announce(HttpTrackerClient(), server.url)
    huge = ("X-Filler: " + "y" * 1000,) * 17
    async with http_server(reply(answer(interval=1), headers=huge)) as server:
        with pytest.raises(MalformedTrackerResponseError, match="headers exceed"):
            await announce(HttpTrackerClient(), server.url)


async def test_a_slow_tracker_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async def silent(request: bytes, stream: trio.abc.Stream) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nd8:")
        await trio.sleep_forever()

    async with http_server(silent) as server:
        start = trio.current_time()
        with pytest.raises(TrackerTimeoutError, match="within 12 s") as caught:
            await announce(HttpTrackerClient(timeout=12), server.url + "?passkey=s3cr3t")
        assert trio.current_time() - start == pytest.approx(12, abs=0.5)
    assert "s3cr3t" not in str(caught.value)  # a passkey stays out of messages


async def test_a_closed_client_refuses_and_cancels(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def silent(request: bytes, stream: trio.abc.Stream) -> None:
        await trio.sleep_forever()

    async with http_server(silent) as server:
        client = HttpTrackerClient()
        async with trio.open_nursery() as nursery:
            failed: list[BaseException] = []

            async def pending() -> None:
                try:
                    await announce(client, server.url)
                except LocalProtocolError as error:
                    failed.append(error)

            nursery.start_soon(pending)
            await trio.sleep(1)
            await client.aclose()
        assert failed
        assert client.closed
        with pytest.raises(LocalProtocolError, match="closed"):
            await announce(client, server.url)


# -- TLS and IPv6 --------------------------------------------------------------------------------


async def test_https_with_a_trusted_self_signed_certificate(tmp_path: Path) -> None:
    server_context, client_context = self_signed(tmp_path)
    body = answer(interval=300, peers=bytes([127, 0, 0, 9, 0, 99]))
    async with http_server(reply(body, framing="close"), tls=server_context) as server:
        assert server.url.startswith("https://127.0.0.1:")
        client = HttpTrackerClient(ssl_context=client_context)
        result = await announce(client, server.url)
        assert [str(p) for p in result.peers] == ["127.0.0.9:99"]
        # The system's CAs do not know it: a TLS failure, ours.
        with pytest.raises(HttpTrackerError, match="CERTIFICATE_VERIFY_FAILED"):
            await announce(HttpTrackerClient(), server.url)


async def test_ipv6_literal_host() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    async with http_server(reply(answer(interval=60)), host="::1") as server:
        assert server.url.startswith("http://[::1]:")
        result = await announce(HttpTrackerClient(), server.url)
    assert result.tracker.host == ipaddress.IPv6Address("::1")
    assert b"\r\nHost: [::1]:" in server.requests[0]


# -- scrape ------------------------------------------------------------------------------------


async def test_scrape() -> None:
    other = b"\x09" * 20
    files = {HASH: {"complete": 3, "downloaded": 9, "incomplete": 2}}
    async with http_server(reply(encode({"files": files}))) as server:
        stats = await HttpTrackerClient().scrape(server.url, [HASH, InfoHash(v1=other)])
    assert stats == (ScrapeStats(3, 9, 2), ScrapeStats(0, 0, 0))
    assert request_target(server.requests[0]) == (
        "/scrape?info_hash=%00%01%02%03%04%05%06%07%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13"
        "&info_hash=%09%09%09%09%09%09%09%09%09%09%09%09%09%09%09%09%09%09%09%09"
    )
    with pytest.raises(LocalProtocolError, match="no scrape URL"):
        await HttpTrackerClient().scrape("http://127.0.0.1:1/tracker", [HASH])
    with pytest.raises(MalformedTrackerResponseError, match="files"):
        parse_scrape_response(b"de", [HASH])


# -- the sans-IO reader --------------------------------------------------------------------------


RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\nContent-Length: 5\n\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity, chunked\r\n\r\n"
    b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
    # Transfer-Encoding wins over Content-Length; the last CRLF lost is harmless.
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n"
    b"5\r\nhello\r\n0\r\n",
]


@pytest.mark.parametrize("data", RESPONSES)
def test_reader_whole_and_byte_by_byte(data: bytes) -> None:
    for step in (len(data), 1):
        parser = HttpResponseParser()
        for start in range(0, len(data), step):
            parser.receive_data(data[start : start + step])
        if parser.response is None:
            parser.receive_eof()
        assert parser.response is not None
        assert (parser.response.status, parser.response.body) == (200, b"hello")


def response_of(parser: HttpResponseParser) -> HttpResponse | None:
    return parser.response  # a call: mypy would keep the attribute narrowed to None


def test_reader_reads_to_the_close_and_ignores_what_follows() -> None:
    parser = HttpResponseParser()
    parser.receive_data(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nhel")
    parser.receive_data(b"lo")
    assert parser.response is None
    parser.receive_eof()
    response = response_of(parser)
    assert response is not None
    assert response.body == b"hello"
    assert response.header("server") == "x"
    parser.receive_data(b"more")  # ignored
    done = HttpResponseParser()
    done.receive_data(b"HTTP/1.1 204 No Content\r\n\r\ntrailing")
    assert done.response is not None
    assert done.response.body == b""


async def test_a_reason_phrase_cannot_drive_the_terminal() -> None:
    parser = HttpResponseParser()
    parser.receive_data(b"HTTP/1.1 503 Busy\x1b[2J\x07\r\nContent-Length: 0\r\n\r\n")
    assert parser.response is not None
    assert parser.response.reason == "Busy\\x1b[2J\\x07"
    async with http_server(reply(b"", status="500 Oops\x1b[31m")) as server:
        with pytest.raises(HttpTrackerError) as caught:
            await announce(HttpTrackerClient(), server.url)
    assert str(caught.value) == "HTTP 500 Oops\\x1b[31m"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "without a response"),
        (b"HTTP/1.1 200 OK\r\n", "before the headers ended"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP status line"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "not an HTTP header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "conflicting"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "not a Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", "9 bytes|6 bytes"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "not a chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", "does not end"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "chunked body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 2000, "too long"),
        (b"HTTP/1.1 100 Continue\r\n\r\n" * 9, "interim"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (MAX_HEADER_SIZE // 6), "headers exceed"),
    ],
)
def test_reader_refuses(data: bytes, reason: str) -> None:
    def feed() -> None:
        parser = HttpResponseParser()
        parser.receive_data(data)
        parser.receive_eof()

    with pytest.raises(MalformedTrackerResponseError, match=reason):
        feed()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 50))
def test_reader_on_garbage(data: bytes, step: int) -> None:
    parser = HttpResponseParser(max_body=100, max_header=200)
    try:
        for start in range(0, len(data), step):
            parser.receive_data(data[start : start + step])
        parser.receive_eof()
    except MalformedTrackerResponseError as error:
        assert "\n" not in str(error)  # noqa: PT017 (any of them, whichever it is)
    else:
        assert parser.response is not None


# -- the answer parser ---------------------------------------------------------------------------


def test_answer_leniency_as_libtorrent() -> None:
    # Keys out of order, a trailing newline, no interval, a non-int count: all tolerated.
    body = b"d5:peers6:\x7f\x00\x00\x01\x00\x018:completei-5e10:incomplete1:xe\n"
    parsed = parse_announce_response(body)
    assert parsed == HttpAnnounceResponse(
        interval=1800,
        min_interval=None,
        tracker_id=None,
        complete=0,
        incomplete=0,
        peers=(PeerAddress.parse("127.0.0.1:1"),),
        warning=None,
    )
    assert parse_announce_response(answer(interval=2**80)).interval == 2**32 - 1


_VALUES = st.recursive(
    st.integers(-(2**70), 2**70) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=8), inner),
    max_leaves=12,
)
_KEYS = st.sampled_from(
    [
        b"interval",
        b"min interval",
        b"tracker id",
        b"complete",
        b"incomplete",
        b"peers",
        b"peers6",
        b"warning message",
        b"failure reason",
        b"ip",
        b"port",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES | st.lists(st.dictionaries(_KEYS, _VALUES), max_size=4)))
def test_answer_parser_on_tracker_shaped_garbage(value: dict[bytes, object]) -> None:
    body = encode(value)  # type: ignore[arg-type]  # hypothesis builds Encodable values
    try:
        parsed = parse_announce_response(body)
    except TrackerRejectedError:
        assert isinstance(value.get(b"failure reason"), bytes)
    else:
        assert 0 <= parsed.interval < 2**32
        assert all(peer.is_connectable for peer in parsed.peers)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_answer_parser_on_garbage(body: bytes) -> None:
    try:
        parse_announce_response(body)
        parse_scrape_response(body, [HASH])
    except MalformedTrackerResponseError as error:
        assert "\n" not in str(error)  # noqa: PT017 (any of them, whichever it is)
    except TrackerRejectedError:
        pass


# -- the Announcer drives it -----------------------------------------------------------------------


async def test_the_announcer_drives_the_http_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peers = bytes([127, 0, 0, 7, 0, 7])
    async with http_server(reply(answer(interval=100, peers=peers))) as server:
        client = HttpTrackerClient()
        assert isinstance(client, AnnounceClient)
        with pytest.raises(LocalProtocolError, match="http:// or https://"):
            Announcer(
                client,
                "udp://127.0.0.1:1/announce",
                HASH,
                peer_id=PEER_ID,
                port=1,
                progress=AnnounceProgress,
            )
        with pytest.raises(LocalProtocolError, match="a str"):
            Announcer(
                client,
                ("127.0.0.1", 1),
                HASH,
                peer_id=PEER_ID,
                port=1,
                progress=AnnounceProgress,
            )
        found: list[PeerAddress] = []

        class Sink:
            def discovered(
                self, info_hash: object, addresses: Iterable[PeerAddress], source: str
            ) -> None:
                found.extend(addresses)

        announcer = Announcer(
            client,
            server.url,
            HASH,
            peer_id=PEER_ID,
            port=6881,
            progress=lambda: AnnounceProgress(left=10),
            sink=Sink(),
            min_interval=100,  # the tracker's 100 s, under the default floor (300 s)
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announcer.run)
            await trio.sleep(250)
            status = announcer.status
            nursery.cancel_scope.cancel()
    events = [query_of(r).get("event") for r in server.requests]
    assert events == [b"started", None, None, b"stopped"]
    assert status.tracker == server.url
    assert status.announces == 3
    assert status.last_result is not None
    assert status.last_result.interval == 100
    assert found[0] == PeerAddress.parse("127.0.0.7:7")


# -- the engine: a download whose only peer source is an HTTP tracker -------------------------


async def test_engine_download_from_an_http_tracker_only(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", (70_000, 5))
    tracker = MiniTracker()
    with trio.fail_after(30):
        async with http_server(tracker) as server:
            torrent = create_torrent(
                folder,
                version="v1",
                piece_length=32768,
                creation_date=None,
                created_by=None,
                trackers=[server.url],
            )
            config = loopback_config(trackers=True)
            async with open_session(config) as seeder, open_session(config) as leecher:
                seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
                await seeding.wait_complete()
                await tracker.announced.wait()  # the seeder is in the swarm first
                download = await leecher.add_torrent(torrent, TorrentOptions(tmp_path / "down"))
                await download.wait_complete()
    assert same_files(folder, tmp_path / "down" / "album")
    events = [query_of(r).get("event") for r in server.requests]
    assert events.count(b"started") == 2
    assert b"stopped" in events  # both said goodbye on the way out


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


async def test_the_engine_skips_other_schemes_only(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bip.client")
    target = Target()
    target.ready.set()
    target.completed.set()
    found: list[PeerAddress] = []

    class Sink:
        def discovered(
            self, info_hash: object, addresses: Iterable[PeerAddress], source: str
        ) -> None:
            found.extend(addresses)

    peers = bytes([127, 0, 0, 4, 0, 4])
    async with (
        http_server(reply(answer(interval=1800, peers=peers))) as server,
        open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as udp,
    ):
        urls = ["wss://127.0.0.1:1/announce", server.url, server.url]
        announcer = TrackerAnnouncer(udp, urls, peer_id=PEER_ID, http_client=HttpTrackerClient())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announcer.run, target, Sink())
            await trio.sleep(5)
            [status] = announcer.status()
            nursery.cancel_scope.cancel()
        without_http = TrackerAnnouncer(udp, [server.url], peer_id=PEER_ID)
        await without_http.run(target, Sink())  # nothing usable: returns at once
    assert status.announces == 1
    assert set(found) == {PeerAddress.parse("127.0.0.4:4")}
    assert [query_of(r).get("event") for r in server.requests] == [b"started", b"stopped"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "skipping wss://127.0.0.1:1/announce: only udp://, http:// and https:// trackers are"
        " supported",
        f"skipping {server.url}: only udp:// trackers are supported",
    ]


async def test_the_engine_keeps_passkeys_out_of_its_logs(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    target = Target()
    target.ready.set()
    target.completed.set()

    class Sink:
        def discovered(
            self, info_hash: object, addresses: Iterable[PeerAddress], source: str
        ) -> None:
            pass

    with socket.socket() as unused:  # a port nobody listens on: each announce fails
        unused.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{unused.getsockname()[1]}/announce?passkey=SECRET"
    urls = [
        "wss://127.0.0.1:1/announce?passkey=SECRET",  # another scheme
        "http://127.0.0.1:0/announce?passkey=SECRET",  # refused by the parser
        "http://u:SECRET@127.0.0.1:1/announce",  # credentials
        dead,
    ]
    async with open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as udp:
        announcer = TrackerAnnouncer(udp, urls, peer_id=PEER_ID, http_client=HttpTrackerClient())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announcer.run, target, Sink())
            await trio.sleep(5)
            nursery.cancel_scope.cancel()
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("skipping wss://127.0.0.1:1/announce") for message in messages)
    assert any(
        message.startswith("skipping tracker http://127.0.0.1:1/announce: credentials")
        for message in messages
    )
    assert any(
        message.startswith(f"announce to {dead.partition('?')[0]} failed") for message in messages
    )
    assert not any("SECRET" in message for message in messages)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:0/announce?passkey=SECRET",  # port 0
        "ftp://127.0.0.1/announce?passkey=SECRET",  # not http
        "http://[::1/announce?passkey=SECRET",  # urlsplit refuses it
        "http://u:SECRET@127.0.0.1/announce",  # credentials
    ],
)
def test_a_refused_url_keeps_its_secret_out_of_the_message(url: str) -> None:
    with pytest.raises(LocalProtocolError) as caught:
        parse_http_tracker_url(url)
    assert "SECRET" not in str(caught.value)
