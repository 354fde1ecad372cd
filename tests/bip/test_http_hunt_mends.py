"""HTTP tracker client hunt mends: a tracker on this machine is asked on a tracker's path in
every spelling of ``..`` (``..%2F``, ``..;``, ``..%5C``, double encoding), a tracker URL that is
no Unicode text is a LocalProtocolError, and the response reader's bounds on its head, chunk
size lines and trailers give the same outcome however the bytes are split in reads."""

from __future__ import annotations

import re
from itertools import pairwise

import pytest
import trio
from _http_tracker_server import answer, http_server, reply
from hypothesis import given, settings
from hypothesis import strategies as st

from bip._client._http_response import (
    MAX_HEADER_SIZE,
    MAX_RESPONSE_SIZE,
    HttpResponse,
    HttpResponseParser,
)
from bip._client._http_rules import tracker_path_refusal
from bip._client._http_tracker import HttpTrackerClient
from bip._client._http_tracker_codec import parse_http_tracker_url
from bip._client._http_tracker_errors import MalformedTrackerResponseError, TrackerBlockedError
from bip_utracker import LocalProtocolError

DEADLINE = 10.0
HASH = bytes(range(20))
PEER_ID = b"-BP0100-abcdefghijkl"

# -- a tracker on this machine: no step out of the tracker's path ------------------------------

ESCAPES = [
    "/announce/..%2Fadmin",
    "/announce/%2e%2e%2fadmin",
    "/announce/..;/admin",
    "/announce/.;x/..;/admin",
    "/announce/..%3B/admin",
    "/announce/..%5Cadmin",
    "/announce/..%5cadmin",
    "/announce/%252e%252e/admin",
    "/announce/..%252Fadmin",
    "/x%2F..%2F..%2Fadmin/announce",
    "/x%5C..%5Cadmin/announce",
]


@pytest.mark.parametrize("target", ESCAPES)
def test_every_spelling_of_dot_dot_is_refused(target: str) -> None:
    refusal = tracker_path_refusal(target, "127.0.0.1", scrape=False)
    assert refusal is not None
    assert refusal.startswith("refused by ssrf_mitigation: a tracker on this machine")
    scrape = target.replace("announce", "scrape")
    assert tracker_path_refusal(scrape, "::1", scrape=True) is not None


@pytest.mark.parametrize(
    "target",
    [
        "/..x/announce",
        "/x;y/announce",
        "/x%3By/announce",
        "/%2E%2Ex/announce",
        "/a%20b/announce.php?k=%2F",  # the query is no path
    ],
)
def test_a_semicolon_or_dots_that_step_nowhere_are_kept(target: str) -> None:
    assert tracker_path_refusal(target, "127.0.0.1", scrape=False) is None


async def test_a_local_web_service_hears_no_escaped_dot_dot() -> None:
    with trio.fail_after(DEADLINE):
        async with http_server(reply(answer(interval=60)), path="") as server:
            client = HttpTrackerClient()
            for target in ("/announce/..%2Fadmin", "/announce/..;/admin", "/announce/..%5Cadmin"):
                url = server.url + target
                with pytest.raises(LocalProtocolError, match="ssrf_mitigation"):
                    client.check_tracker(url)
                # By name, the address is judged once connected: refused before a byte.
                by_name = url.replace("127.0.0.1", "localhost", 1)
                with pytest.raises(TrackerBlockedError, match="on this machine"):
                    await client.announce(by_name, HASH, peer_id=PEER_ID, port=6881)
    assert server.requests == []


# -- a tracker URL that is no Unicode text -------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://t.example/\udcff/announce",  # sys.argv's form of a byte 0xff
        "http://t.example/announce?passkey=\udcff",
        "https://t.example/announce\ud800",
    ],
)
async def test_a_lone_surrogate_is_a_local_protocol_error(url: str) -> None:
    with pytest.raises(LocalProtocolError, match="not valid Unicode text"):
        parse_http_tracker_url(url)
    client = HttpTrackerClient()
    with pytest.raises(LocalProtocolError, match="not valid Unicode text"):
        client.check_tracker(url)
    with pytest.raises(LocalProtocolError, match="not valid Unicode text"):
        await client.announce(url, HASH, peer_id=PEER_ID, port=6881)
    with pytest.raises(LocalProtocolError, match="not valid Unicode text"):
        await client.scrape(url, [HASH])


# -- the reader's bounds do not depend on how the bytes were split ---------------------------------

Outcome = tuple[HttpResponse, bool] | str


def outcome(
    data: bytes,
    cuts: list[int],
    *,
    max_header: int = MAX_HEADER_SIZE,
    max_body: int = MAX_RESPONSE_SIZE,
) -> Outcome:
    """What a reader makes of ``data`` fed in reads cut at ``cuts``, then the close."""
    parser = HttpResponseParser(max_header=max_header, max_body=max_body)
    edges = [0, *sorted(cuts), len(data)]
    try:
        for start, end in pairwise(edges):
            parser.receive_data(data[start:end])
        parser.receive_eof()
    except MalformedTrackerResponseError:
        return "refused"
    assert parser.response is not None
    return parser.response, parser.truncated


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "data",
    [
        CHUNKED + b"2\r\nhi\r\n0\r\nX: " + b"a" * 2000 + b"\r\n\r\n",  # a long trailer: kept
        CHUNKED + b"2;" + b"e" * 1030 + b"\r\nhi\r\n0\r\n\r\n",  # a long size line: refused
        CHUNKED + b"2;" + b"e" * 1021 + b"\r\nhi\r\n0\r\n\r\n",  # 1024 bytes with its CR: kept
        CHUNKED + b"2\r\nhi" + b" " * 1030 + b"\r\n0\r\n\r\n",  # a long chunk end: refused
    ],
)
def test_long_chunk_lines_and_trailers_whole_or_split(data: bytes) -> None:
    whole = outcome(data, [])
    assert all(outcome(data, [cut]) == whole for cut in range(len(CHUNKED), len(data)))


@pytest.mark.parametrize("terminator", [b"\n\n", b"\r\n\r\n", b"\r\n\n", b"\n\r\n"])
@pytest.mark.parametrize("size", [252, 253, 256, 257, 259])
def test_a_head_at_its_bound_whole_or_split(size: int, terminator: bytes) -> None:
    head = b"HTTP/1.1 200 OK\r\nX: " + b"a" * (size - 20)
    data = head + terminator + b"hi"
    whole = outcome(data, [], max_header=256)
    assert isinstance(whole, str) is (size > 256)
    assert all(outcome(data, [cut], max_header=256) == whole for cut in range(1, len(data)))


_END = st.sampled_from([b"\r\n", b"\n"])
_HEAD_END = re.compile(rb"\r?\n\r?\n")


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    """A response near the reader's bounds (a chunk size line of 1024 bytes before its
    ``\\n``, trailers longer than that), line ends of either kind, maybe cut short."""
    out = [draw(st.sampled_from([b"", b"HTTP/1.1 100 Continue\r\n\r\n"]))]
    out.append(b"HTTP/1.1 200 OK" + draw(_END))
    for size in draw(st.lists(st.integers(0, 600), max_size=3)):
        out.append(b"X: " + b"h" * size + draw(_END))
    framing = draw(st.sampled_from(["chunked", "chunked", "length", "close"]))
    body = b"body"
    if framing == "chunked":
        out.append(b"Transfer-Encoding: chunked" + draw(_END) + draw(_END))
        for extension in draw(st.lists(st.sampled_from([0, 40, 1019, 1020, 1021, 1100]))):
            ext = b";" + b"e" * extension if extension else b""
            out.append(b"%x%s%s%s%s" % (len(body), ext, draw(_END), body, draw(_END)))
        out.append(b"0" + draw(_END))
        for size in draw(st.lists(st.sampled_from([0, 40, 1100, 1500]), max_size=3)):
            out.append(b"T: " + b"t" * size + draw(_END))
        out.append(draw(_END))
    else:
        if framing == "length":
            out.append(b"Content-Length: 4" + draw(_END))
        out.append(draw(_END) + body)
    data = b"".join(out)
    return data[: draw(st.integers(0, len(data)))] if draw(st.integers(0, 3)) == 0 else data


@st.composite
def reads(draw: st.DrawFn) -> tuple[bytes, list[int], int]:
    """A response, where its reads end (most just before a line's end, where a long line is
    left partial), and a head bound (often within a few bytes of the head's length)."""
    data = draw(responses())
    ends = [index for index, byte in enumerate(data) if byte == 0x0A] or [len(data)]
    cuts = [
        max(0, draw(st.sampled_from(ends)) - draw(st.integers(0, 3) | st.integers(0, 1100)))
        for _ in range(draw(st.integers(1, 3)))
    ]
    head = _HEAD_END.search(data, data.find(b"200 OK"))
    near = draw(st.integers(-4, 4)) + (head.start() if head else len(data))
    max_header = draw(st.sampled_from([near, 4096, draw(st.integers(16, 2000))]))
    return data, cuts, max(16, max_header)


@settings(max_examples=200, deadline=None)
@given(reads())
def test_the_outcome_does_not_depend_on_the_reads(case: tuple[bytes, list[int], int]) -> None:
    data, cuts, max_header = case
    whole = outcome(data, [], max_header=max_header, max_body=64)
    assert outcome(data, cuts, max_header=max_header, max_body=64) == whole
