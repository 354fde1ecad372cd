"""A device dripping its HTTP head costs linear work.

``HttpResponseParser`` searched the head for its end from byte 0 at every ``receive_data``
(and stripped stray blank lines anew): a LAN device sending its 16 KiB head one byte per
segment cost some 3 s of CPU per exchange. The search now starts where the last one ended
(less the 3 bytes a head end may begin in), the blank lines are stripped only until the
status line starts, and line reads (chunk sizes, trailers) likewise resume their search.
"""

from __future__ import annotations

import re
import time

import pytest

from bip_handshake import _upnp
from bip_handshake._upnp import (
    UPNP_MAX_HEAD,
    HttpResponse,
    HttpResponseParser,
    UpnpError,
    parse_http_response,
)


class _CountingPattern:
    """Stands for ``_HEAD_END``, adding up the bytes each search may look at."""

    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self.pattern = pattern
        self.scanned = 0

    def search(self, data: bytearray, pos: int, endpos: int) -> re.Match[bytes] | None:
        self.scanned += max(0, min(len(data), endpos) - pos)
        return self.pattern.search(data, pos, endpos)


def _drip(parser: HttpResponseParser, data: bytes) -> HttpResponse | None:
    response = None
    for i in range(len(data)):
        response = parser.receive_data(data[i : i + 1])
        if response is not None:
            break
    return response


def test_head_dripped_byte_by_byte_is_searched_linearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counting = _CountingPattern(_upnp._HEAD_END)
    monkeypatch.setattr(_upnp, "_HEAD_END", counting)
    filler = b"X-A: " + b"a" * (UPNP_MAX_HEAD - 200) + b"\r\n"
    head = b"\r\n\r\nHTTP/1.1 200 OK\r\n" + filler + b"Content-Length: 2\r\n\r\n"
    start = time.perf_counter()
    response = _drip(HttpResponseParser(), head + b"hi")
    elapsed = time.perf_counter() - start
    assert response is not None
    assert response.body == b"hi"
    assert ("x-a", "a" * (UPNP_MAX_HEAD - 200)) in response.headers
    # Each byte is looked at a few times at most (quadratic: some 130 million).
    assert counting.scanned <= 4 * len(head)
    assert elapsed < 0.5


def test_oversized_head_dripped_is_refused_in_linear_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counting = _CountingPattern(_upnp._HEAD_END)
    monkeypatch.setattr(_upnp, "_HEAD_END", counting)
    parser = HttpResponseParser()
    head = b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * UPNP_MAX_HEAD
    with pytest.raises(UpnpError, match="head of more than"):
        _drip(parser, head)
    assert counting.scanned <= 4 * len(head)


def test_trailer_line_dripped_is_linear() -> None:
    parser = HttpResponseParser()
    parser.receive_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n")
    trailer = b"X-T: " + b"t" * (UPNP_MAX_HEAD - 100) + b"\r\n\r\n"
    start = time.perf_counter()
    response = _drip(parser, trailer)
    assert time.perf_counter() - start < 0.5
    assert response is not None
    assert response.body == b"hi"


WHOLE = (
    b"\r\n\n"  # stray blank lines before the status line (RFC 7230 3.5)
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"\n\r\n"  # and before the final one
    b"HTTP/1.1 200 OK\n"  # a lone LF ends a line too
    b"Server: x\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
    b"3;ext=1\r\nabc\r\n0\r\nX-Trailer: y\r\n\r\n"
)


def test_every_split_reads_as_the_whole() -> None:
    expected = parse_http_response(WHOLE)
    assert expected.status == 200
    assert expected.body == b"abc"
    assert ("server", "x") in expected.headers
    for cut in range(1, len(WHOLE)):
        parser = HttpResponseParser()
        first = parser.receive_data(WHOLE[:cut])
        assert first is None
        assert parser.receive_data(WHOLE[cut:]) == expected, cut
    assert _drip(HttpResponseParser(), WHOLE) == expected


@pytest.mark.parametrize("end", [b"\r\n\r\n", b"\n\n", b"\r\n\n", b"\n\r\n"])
def test_head_end_split_anywhere_in_it(end: bytes) -> None:
    # The end of the head may begin in the bytes searched before: its first 3 are searched
    # again.
    data = b"HTTP/1.1 204 No Content\r\nServer: x" + end
    for cut in range(len(data) - len(end), len(data)):
        parser = HttpResponseParser()
        assert parser.receive_data(data[:cut]) is None
        response = parser.receive_data(data[cut:])
        assert response is not None
        assert (response.status, response.headers) == (204, (("server", "x"),)), cut
