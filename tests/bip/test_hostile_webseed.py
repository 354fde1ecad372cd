"""Hostile BEP 19 web seeds (and an HTTP tracker beside them) against the bip client.

The client-level campaigns fetch from a scripted raw-socket server on loopback
(``_hostile_http_server``): the answer is the range asked for or our own error, within the
silence timeout and the fetch's deadline, reading no more than it needs. The engine-level
campaign runs a whole torrent against a hostile web seed and a hostile tracker: it completes
from the honest web seed beside them, with no traceback or ERROR record."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import trio
from _engine_helpers import loopback_config, same_files, write_content
from _hostile_http_server import (
    ScriptedServer,
    canned,
    chunked,
    loopback_only,
    no_bad_records,
    response,
    scripted_server,
    stream_forever,
)
from _http_file_server import file_server

from bip._client import TorrentOptions, open_session
from bip._client._http_tracker_codec import HttpTrackerUrl, parse_http_tracker_url
from bip._client._webseed import (
    MAX_FAILURES,
    MAX_RETRY_DELAY,
    RETRY_DELAY,
    WebSeed,
    WebSeedState,
)
from bip._client._webseed_http import MAX_SKIP, WebSeedClient, WebSeedError
from bip._client._webseed_layout import web_seed_layout
from bip_metainfo import create_torrent
from bip_select import Block, Input, PeerChokedUs, PeerUnchokedUs, SendRequest

DEADLINE = 30.0
FILE = bytes(range(256)) * 64  # 16 KiB of known bytes
_RANGE = re.compile(rb"\r\nRange: bytes=([0-9]+)-([0-9]+)\r\n")


def range_of(request: bytes) -> tuple[int, int]:
    """The first and last byte a request asked for."""
    match = _RANGE.search(request)
    assert match is not None
    return int(match.group(1)), int(match.group(2))


def partial(request: bytes, *headers: str, data: bytes = FILE) -> bytes:
    """An honest 206 answer to ``request`` from ``data``."""
    first, last = range_of(request)
    return response(
        "206 Partial Content",
        data[first : last + 1],
        f"Content-Range: bytes {first}-{last}/{len(data)}",
        *headers,
    )


async def fetch(server: ScriptedServer, offset: int, length: int, *, timeout: float = 20) -> bytes:
    client = WebSeedClient(timeout=timeout)
    return await client.fetch(parse_http_tracker_url(server.url), offset, length)


# -- what a server answers ---------------------------------------------------------------------


async def test_whole_file_instead_of_a_range_is_read_no_further_than_needed() -> None:
    # 200 and a "file" of a gigabyte: the bytes before the range are dropped as they come, and
    # the connection closed once the range is read.
    sent = [0]

    async def script(request: bytes, stream: trio.abc.Stream, index: int) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
        block = FILE * 4
        for _ in range(1 << 30 // len(block)):
            await stream.send_all(block)
            sent[0] += len(block)

    with trio.fail_after(DEADLINE):
        async with scripted_server(script, path="/f.bin") as server:
            data = await fetch(server, 1000, 5000)
    assert data == (FILE * 4)[1000:6000]
    assert sent[0] < 32 * 1024 * 1024  # what the sockets' buffers could hold, not the file


async def test_whole_file_far_past_the_skip_bound_is_refused_unread() -> None:
    sent = [0]

    async def script(request: bytes, stream: trio.abc.Stream, index: int) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\n\r\n")
        for _ in range(100_000):
            await stream.send_all(FILE)
            sent[0] += len(FILE)

    with trio.fail_after(DEADLINE):
        async with scripted_server(script, path="/f.bin") as server:
            with pytest.raises(WebSeedError, match="ignores Range"):
                await fetch(server, MAX_SKIP + 1, 100)
    assert sent[0] < 32 * 1024 * 1024


def wrong_range(shift: int) -> bytes:
    return response("206 Partial Content", FILE[10 : 10 + 50], f"Content-Range: bytes {shift}-99/9")


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        pytest.param(wrong_range(11), "sent bytes", id="206 of other bytes"),
        pytest.param(
            response("206 Partial Content", FILE[10:60], "Content-Range: bytes 10-59/*"),
            "sent bytes",
            id="206 shorter range",
        ),
        pytest.param(
            response("206 Partial Content", FILE[10:50], "Content-Range: bytes 10-99/999"),
            "sent 40 bytes of 90",
            id="206 with fewer bytes than it says",
        ),
        pytest.param(
            response(
                "206 Partial Content",
                FILE[10:40],
                "Content-Range: bytes 10-99/999",
                "Content-Length: 90",
                length=False,
            ),
            "closed the connection",
            id="closed mid-body",
        ),
        pytest.param(
            response(
                "206 Partial Content",
                b"\x1f\x8b\x08\x00" + bytes(86),
                "Content-Range: bytes 10-99/999",
                "Content-Encoding: gzip",
            ),
            "Content-Encoding",
            id="gzip bomb",
        ),
        pytest.param(
            response(
                "206 Partial Content",
                FILE[10:100],
                "Content-Range: bytes 10-99/999",
                "Transfer-Encoding: br",
                length=False,
            ),
            "transfer coding",
            id="unknown transfer coding",
        ),
        pytest.param(
            response("416 Range Not Satisfiable", b"", "Content-Range: bytes */5"),
            "HTTP 416",
            id="416",
        ),
        pytest.param(
            response("503 Busy", b"later", "Retry-After: 999999999999"),
            "HTTP 503",
            id="503 huge Retry-After",
        ),
        pytest.param(
            response("503 Busy", b"later", "Retry-After: -5"), "HTTP 503", id="503 negative"
        ),
        pytest.param(
            response("503 Busy", b"", "Retry-After: Wed, 21 Oct 2099 07:28:00 GMT"),
            "HTTP 503",
            id="503 HTTP-date",
        ),
        pytest.param(b"HTTP/1.1 100 Continue\r\n\r\n" * 20, "interim", id="1xx forever"),
        pytest.param(FILE, "not an HTTP status line", id="HTTP/0.9"),
    ],
)
async def test_lying_answers_give_our_error(
    answer: bytes, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(DEADLINE):
        async with scripted_server(canned(answer, piece=7), path="/f.bin") as server:
            with pytest.raises(WebSeedError, match=error):
                await fetch(server, 10, 90, timeout=5)
    no_bad_records(caplog.records)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(("Connection: keep-alive", "Keep-Alive: timeout=3600"), id="keep-alive"),
        pytest.param(("Content-Length: 99999999999",), id="length of the whole file"),
    ],
)
async def test_a_server_keeping_the_connection_is_left_once_the_range_came(
    headers: tuple[str, ...],
) -> None:
    async def script(request: bytes, stream: trio.abc.Stream, index: int) -> None:
        first, last = range_of(request)
        head = [
            "HTTP/1.1 206 Partial Content",
            f"Content-Range: bytes {first}-{last}/{len(FILE)}",
            *headers,
        ]
        if not any(h.startswith("Content-Length") for h in headers):
            head.append(f"Content-Length: {last - first + 1}")
        await stream.send_all(("\r\n".join(head) + "\r\n\r\n").encode() + FILE[first : last + 1])
        await trio.sleep_forever()  # never closes

    with trio.fail_after(DEADLINE):
        async with scripted_server(script, path="/f.bin") as server:
            assert await fetch(server, 100, 200, timeout=60) == FILE[100:300]


async def test_chunked_ranges_with_extensions_are_read() -> None:
    async def script(request: bytes, stream: trio.abc.Stream, index: int) -> None:
        first, last = range_of(request)
        head = (
            "HTTP/1.1 206 Partial Content\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Range: bytes {first}-{last}/{len(FILE)}\r\n\r\n"
        )
        body = chunked(FILE[first : last + 1], size=100, extension=b";a=b")
        await stream.send_all(head.encode() + body)

    with trio.fail_after(DEADLINE):
        async with scripted_server(script, path="/f.bin") as server:
            assert await fetch(server, 5, 4000) == FILE[5:4005]


async def test_slower_and_slower_ends_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Each line just before the silence timeout would end: the low-speed rule ends it (1 KiB/s
    # over 30 s by default; it was a 120 s deadline for the whole fetch).
    async def script(request: bytes, stream: trio.abc.Stream, index: int) -> None:
        await stream.send_all(b"HTTP/1.1 206 Partial Content\r\n")
        for step in range(10_000):
            await trio.sleep(min(1.0 + step, 19.0))
            await stream.send_all(b"X: y\r\n")

    with trio.fail_after(1000):
        async with scripted_server(script, path="/f.bin") as server:
            start = trio.current_time()
            with pytest.raises(WebSeedError, match="slower than 1024 bytes/s over 30 s"):
                await fetch(server, 0, 100, timeout=20)
            assert 30 <= trio.current_time() - start <= 31


async def test_silence_ends_at_the_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async def script(request: bytes, stream: trio.abc.Stream, index: int) -> None:
        await stream.send_all(b"HTTP/1.1 206 Partial Content\r\n\r\n")
        await trio.sleep_forever()

    with trio.fail_after(1000):
        async with scripted_server(script, path="/f.bin") as server:
            with pytest.raises(WebSeedError, match="silent for 20 s"):
                await fetch(server, 0, 100, timeout=20)


def test_request_timeout_is_checked() -> None:
    for bad in (0, -1.0, float("nan"), True, "5"):
        with pytest.raises(ValueError, match="request_timeout"):
            WebSeedClient(request_timeout=bad)  # type: ignore[arg-type]


async def test_a_redirect_per_request_is_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    async def script(request: bytes, stream: trio.abc.Stream, index: int) -> None:
        target = request.split(b" ")[1]
        if target.startswith(b"/f.bin"):
            await stream.send_all(response("302 Found", b"", f"Location: /moved/{index}/f.bin"))
        else:
            await stream.send_all(partial(request))

    with loopback_only(monkeypatch) as guard, trio.fail_after(DEADLINE):
        async with scripted_server(script, path="/f.bin") as server:
            client = WebSeedClient()
            url = parse_http_tracker_url(server.url)
            for offset in range(0, 8000, 1000):
                assert await client.fetch(url, offset, 1000) == FILE[offset : offset + 1000]
    assert len(server.requests) == 16
    assert guard.refused == []


@pytest.mark.parametrize(
    ("location", "error"),
    [
        ("http://192.0.2.1/f.bin", "cannot connect"),
        ("//seed.example/f.bin", "cannot connect"),
        ("file:///etc/passwd", "do not follow"),
        ("http://u:secret@127.0.0.1:1/f.bin", "do not follow"),
    ],
)
async def test_redirects_off_loopback_or_to_other_schemes(
    location: str, error: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = response("301 Moved", b"x" * 100_000, f"Location: {location}")
    with loopback_only(monkeypatch) as guard, trio.fail_after(DEADLINE):
        async with scripted_server(canned(answer), path="/f.bin") as server:
            with pytest.raises(WebSeedError, match=error) as raised:
                await fetch(server, 0, 10)
    assert "secret" not in str(raised.value)
    assert len(guard.refused) == (1 if error == "cannot connect" else 0)


# -- a whole torrent ---------------------------------------------------------------------------


def hostile_seed_answer(request: bytes, index: int) -> bytes:
    """The hostile web seed's answers, in turn: every way of failing but a slow one."""
    first, last = range_of(request)
    kind = index % 6
    if kind == 0:
        return response(
            "206 Partial Content",
            b"\x1f\x8b\x08\x00" + bytes(last - first - 3),
            f"Content-Range: bytes {first}-{last}/*",
            "Content-Encoding: gzip",
        )
    if kind == 1:
        return response("206 Partial Content", b"x" * 10, f"Content-Range: bytes 0-9/{last}")
    if kind == 2:
        return response("503 Busy", b"", "Retry-After: 99999999999")
    if kind == 3:
        return response("302 Found", b"", f"Location: /loop{index % 2}")
    if kind == 4:
        return b"HTTP/1.1 100 Continue\r\n\r\n" * 30
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n"


def hostile_tracker_answer(index: int) -> bytes:
    kind = index % 4
    if kind == 0:
        return b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n" + bytes(5000)
    if kind == 1:
        return response("200 OK", b"d14:failure reason" + b"900000:" + b"\n" * 10)
    if kind == 2:
        return response("200 OK", b"d8:intervali0e5:peers" + b"7:\x00\x00\x00\x00\x00\x00\x00e")
    return response("200 OK", b"l" * 100_000)


async def test_a_torrent_completes_from_the_honest_web_seed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip")
    folder = write_content(tmp_path / "seed", (150_000, 40_000))
    down = tmp_path / "down"

    async def seed_script(request: bytes, stream: trio.abc.Stream, index: int) -> None:
        await stream.send_all(hostile_seed_answer(request, index))

    async def tracker_script(request: bytes, stream: trio.abc.Stream, index: int) -> None:
        await stream.send_all(hostile_tracker_answer(index))

    config = loopback_config(trackers=True)
    with loopback_only(monkeypatch) as guard, trio.fail_after(DEADLINE):
        async with (
            scripted_server(seed_script, host="127.0.0.3", path="/") as hostile,
            scripted_server(tracker_script, host="127.0.0.4") as tracker,
            file_server(folder.parent, host="127.0.0.5") as honest,
            open_session(config) as session,
        ):
            torrent = create_torrent(
                folder,
                piece_length=16384,
                web_seeds=[hostile.url, honest.url],
                creation_date=None,
                created_by=None,
            )
            options = TorrentOptions(down, extra_trackers=(tracker.url,))
            download = await session.add_torrent(torrent, options)
            await download.wait_complete()
            seeds = {seed.shown: seed for seed in download.web_seeds}
    assert same_files(folder, down / "album")
    assert hostile.requests  # it was asked, and failed every way it could
    assert tracker.requests
    assert guard.refused == []
    states = {seed.state for seed in seeds.values()}
    assert states <= {WebSeedState.DONE, WebSeedState.WAITING, WebSeedState.GONE}
    no_bad_records([r for r in caplog.records if r.levelno >= logging.INFO], most=40)


# -- a busy server's Retry-After ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Retry-After: 120", 120.0),
        ("Retry-After: 0", 0.0),
        ("Retry-After: 99999999999999999999", float("inf")),
        ("Retry-After: -5", None),
        ("Retry-After: soon", None),
        ("Retry-After: Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("Retry-After: Wed, 99 Oct 2099 07:28:00 GMT", None),
        ("Retry-After: Mon, 01 Jan 99999 00:00:00 GMT", None),
        ("Retry-After: " + "9" * 3000, float("inf")),
        ("X-Other: 1", None),
    ],
)
@pytest.mark.parametrize("status", ["503 Service Unavailable", "429 Too Many Requests"])
async def test_retry_after_is_read(header: str, expected: float | None, status: str) -> None:
    with trio.fail_after(DEADLINE):
        async with scripted_server(canned(response(status, b"", header)), path="/f.bin") as server:
            with pytest.raises(WebSeedError) as raised:
                await fetch(server, 0, 10)
    assert raised.value.retry_after == expected


async def test_retry_after_as_an_http_date_in_the_future() -> None:
    answer = response("503 Busy", b"", "Retry-After: Fri, 01 Jan 2100 00:00:00 GMT")
    with trio.fail_after(DEADLINE):
        async with scripted_server(canned(answer), path="/f.bin") as server:
            with pytest.raises(WebSeedError) as raised:
                await fetch(server, 0, 10)
    assert raised.value.retry_after is not None
    assert raised.value.retry_after > 365 * 24 * 3600


async def test_retry_after_on_other_statuses_is_ignored() -> None:
    answer = response("500 Oops", b"", "Retry-After: 100")
    with trio.fail_after(DEADLINE):
        async with scripted_server(canned(answer), path="/f.bin") as server:
            with pytest.raises(WebSeedError) as raised:
                await fetch(server, 0, 10)
    assert raised.value.retry_after is None


class BusyClient(WebSeedClient):
    """A server answering 503 with the given Retry-After (seconds, or None) every time."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__()
        self.retry_after = retry_after

    async def fetch(self, url: HttpTrackerUrl, offset: int, length: int) -> bytes:
        await trio.sleep(0.1)
        raise WebSeedError("HTTP 503", retry_after=self.retry_after)


@pytest.mark.parametrize(
    ("retry_after", "first_wait"),
    [
        (None, RETRY_DELAY),
        (0.0, RETRY_DELAY),  # no hammering
        (200.0, 200.0),
        (float("inf"), MAX_RETRY_DELAY),  # bounded
    ],
)
async def test_a_web_seed_honours_retry_after_within_bounds(
    tmp_path: Path,
    retry_after: float | None,
    first_wait: float,
    autojump_clock: trio.testing.MockClock,
) -> None:
    folder = write_content(tmp_path / "seed", (40_000,))
    info = create_torrent(folder, piece_length=16384, creation_date=None, created_by=None).info
    inputs: list[tuple[float, Input]] = []
    seed: WebSeed

    def feed(_seed: WebSeed, event: Input) -> None:
        inputs.append((trio.current_time(), event))
        if isinstance(event, PeerUnchokedUs):
            seed.act(SendRequest(seed, Block(0, 0, 16384)))

    async def deliver(_seed: WebSeed, block: Block, data: bytes) -> None:
        raise AssertionError("nothing to deliver")

    seed = WebSeed(
        web_seed_layout("http://h/", info),
        BusyClient(retry_after),
        deliver=deliver,
        feed=feed,
        piece_length=info.piece_length,
    )
    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(seed.run)
            seed.act(SendRequest(seed, Block(0, 0, 16384)))
            while seed.state is not WebSeedState.GONE:
                await trio.sleep(1)
    chokes = [t for t, event in inputs if isinstance(event, PeerChokedUs)]
    unchokes = [t for t, event in inputs if isinstance(event, PeerUnchokedUs)]
    waits = [u - c for c, u in zip(chokes, unchokes, strict=True)]
    assert len(waits) == MAX_FAILURES - 1
    assert waits[0] == pytest.approx(first_wait, abs=0.5)
    assert all(RETRY_DELAY - 0.5 <= wait <= MAX_RETRY_DELAY + 0.5 for wait in waits)


async def test_a_slowloris_web_seed_does_not_hold_the_torrent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Its headers never end, a line a second: its blocks are asked of the honest seed too
    # (end-game), and its fetches are abandoned once the torrent is complete.
    caplog.set_level(logging.DEBUG, logger="bip")
    folder = write_content(tmp_path / "seed", (400_000, 40_000))
    down = tmp_path / "down"
    slowloris = stream_forever(b"HTTP/1.1 206 Partial Content\r\n", b"X: y\r\n", delay=1.0)
    with trio.fail_after(DEADLINE):
        async with (
            scripted_server(slowloris, host="127.0.0.3", path="/") as slow,
            file_server(folder.parent, host="127.0.0.5") as honest,
            open_session(loopback_config()) as session,
        ):
            torrent = create_torrent(
                folder,
                piece_length=16384,
                web_seeds=[slow.url, honest.url],
                creation_date=None,
                created_by=None,
            )
            download = await session.add_torrent(torrent, TorrentOptions(down))
            await download.wait_complete()
            states = {seed.shown: seed.state for seed in download.web_seeds}
    assert same_files(folder, down / "album")
    assert slow.requests
    assert set(states.values()) == {WebSeedState.DONE}
    no_bad_records([r for r in caplog.records if r.levelno >= logging.INFO], most=40)
