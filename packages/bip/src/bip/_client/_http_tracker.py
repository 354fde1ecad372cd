"""HTTP(S) trackers (BEP 3, BEP 23 compact peers, BEP 7 IPv6 peers, BEP 48 scrape).

:class:`HttpTrackerClient` is a bip_utracker :class:`~bip_utracker.AnnounceClient`, so the same
:class:`~bip_utracker.Announcer` that keeps a torrent announced to UDP trackers drives it: the
schedule is written once. It is made of three layers, each testable alone:

- :func:`parse_http_tracker_url` and :func:`announce_query`: what we send, pure;
- :class:`HttpResponseParser`: a sans-IO HTTP/1.1 response reader (status line and headers
  within :data:`MAX_HEADER_SIZE`, a body by ``Content-Length``, chunked transfer coding or read
  to the close, within :data:`MAX_RESPONSE_SIZE`), fed bytes as they come;
- :func:`parse_announce_response` and :func:`parse_scrape_response`: the bencoded answer, pure;

and the trio shell, :class:`HttpTrackerClient`: one TCP (or TLS) connection per request with
``Connection: close``, redirects followed, the whole exchange under one timeout.

Leniency follows libtorrent's, because real trackers deviate in the same ways: dictionary keys
out of order and bytes after the bencoded answer are accepted; a missing ``interval`` means
1800 s; a compact peer list whose length is not a multiple of 6 (18) loses its last partial
entry; a bad entry of a peer list is skipped, not fatal. Everything else a tracker sends wrong
is a :class:`MalformedTrackerResponseError` with a one-line reason.
"""

from __future__ import annotations

import logging
import random
import re
import ssl
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum, auto
from ipaddress import IPv4Address, IPv6Address, ip_address
from types import TracebackType
from typing import Final
from urllib.parse import quote, quote_from_bytes, urljoin, urlsplit

import trio

from bip import __version__
from bip_bencode import BencodeDecodeError, decode_prefix
from bip_handshake import PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_utracker import (
    AnnounceEvent,
    AnnounceResult,
    LocalProtocolError,
    RequestId,
    ScrapeStats,
    TrackerError,
    TrackerRejectedError,
    TrackerTimeoutError,
)

__all__ = [
    "DEFAULT_HTTP_TRACKER_TIMEOUT",
    "DEFAULT_MAX_REDIRECTS",
    "MAX_HEADER_SIZE",
    "MAX_RESPONSE_SIZE",
    "HttpAnnounceResponse",
    "HttpAnnounceResult",
    "HttpResponse",
    "HttpResponseParser",
    "HttpTrackerClient",
    "HttpTrackerError",
    "HttpTrackerUrl",
    "MalformedTrackerResponseError",
    "announce_query",
    "parse_announce_response",
    "parse_http_tracker_url",
    "parse_scrape_response",
    "scrape_url",
]

logger = logging.getLogger("bip.client")

MAX_RESPONSE_SIZE: Final = 1024 * 1024
"""Bytes of body a tracker may send at most: libtorrent's ``tracker_maximum_response_length``."""
MAX_HEADER_SIZE: Final = 16 * 1024
"""Bytes of status line and headers (and of a chunked body's trailers) a tracker may send."""
DEFAULT_MAX_REDIRECTS: Final = 5
"""Redirects followed at most for one request."""
DEFAULT_HTTP_TRACKER_TIMEOUT: Final = 30.0
"""Seconds one whole exchange may take, redirects included (libtorrent's
``tracker_completion_timeout``)."""
MAX_URL_LENGTH: Final = 4096
"""Characters a tracker URL may have (ours, or a redirect's)."""
MAX_PEERS: Final = 10_000
"""Peers taken from one answer at most (a 1 MiB compact list would hold 174,762)."""
MAX_TRACKER_ID: Final = 1024
"""Bytes of a ``tracker id`` we agree to send back; a longer one is ignored."""

_DEFAULT_INTERVAL: Final = 1800  # libtorrent's, for an answer without "interval"
_MAX_COUNT: Final = 2**32 - 1  # intervals and swarm counts are clamped to 32 bits, as in BEP 15
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_MAX_INTERIM: Final = 8  # 1xx responses skipped before the real one
_MAX_CHUNK_LINE: Final = 1024
_RECEIVE_SIZE: Final = 64 * 1024
_MAX_TRACKER_IDS: Final = 4096  # remembered (tracker, swarm) pairs; the oldest go first
_MAX_WARNINGS: Final = 256  # distinct warning messages remembered, so each is logged once
_SWARM_ID_SIZE: Final = 20
_NUM_WANT_RANGE: Final = range(-(2**31), 2**31)


class HttpTrackerError(TrackerError):
    """An HTTP tracker failed: no connection, a TLS error, an HTTP error status, a redirect
    that cannot be followed, or a malformed answer. The :class:`~bip_utracker.Announcer`
    retries it with backoff."""


class MalformedTrackerResponseError(HttpTrackerError):
    """An HTTP tracker's answer is not HTTP, or not a tracker response we can read."""


# -- URLs and requests -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpTrackerUrl:
    """An ``http://`` or ``https://`` tracker URL, split for a request.

    Attributes:
        url: the URL as given (without its fragment).
        tls: whether it is ``https``.
        host: the host name or IP address (an IPv6 literal without brackets).
        port: the TCP port (80 or 443 unless given).
        target: the request target: the path (``/`` if empty) and the query, percent-encoded.
        host_header: the ``Host`` header's value.

    >>> url = parse_http_tracker_url("https://[::1]:8443/announce?passkey=ab")
    >>> (url.host, url.port, url.target, url.host_header)
    ('::1', 8443, '/announce?passkey=ab', '[::1]:8443')
    """

    url: str
    tls: bool
    host: str
    port: int
    target: str
    host_header: str

    @property
    def shown(self) -> str:
        """The URL without its query, for messages: a private tracker's passkey stays out of
        logs and errors."""
        return (
            f"{'https' if self.tls else 'http'}://{self.host_header}{self.target.partition('?')[0]}"
        )


# Characters a request target may carry as they are; anything else is percent-encoded (non-ASCII,
# as UTF-8) or, for controls and spaces, refused: they would split the request line.
_TARGET_SAFE: Final = "!#$%&'()*+,-./:;=?@[]_~"


def parse_http_tracker_url(url: str) -> HttpTrackerUrl:
    """Split an ``http://`` or ``https://`` tracker URL.

    Raises:
        LocalProtocolError: not a str, not http(s), no host, a bad port, credentials in it
            (``user:pass@``), control characters or spaces, or longer than 4096 characters.
    """
    if not isinstance(url, str):
        raise LocalProtocolError(f"a tracker URL is a str, got {url!r:.80}")
    if len(url) > MAX_URL_LENGTH:
        raise LocalProtocolError(f"a tracker URL of {len(url)} characters is too long")
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise LocalProtocolError(f"a tracker URL has no spaces or control characters: {url!r:.80}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise LocalProtocolError(f"not a tracker URL: {url!r:.80} ({error})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise LocalProtocolError(f"not an http:// or https:// URL: {url!r:.80}")
    host = parts.hostname
    if not host:
        raise LocalProtocolError(f"no host in tracker URL {url!r:.80}")
    if parts.username is not None or parts.password is not None:
        raise LocalProtocolError(f"credentials in a tracker URL are not supported: {url!r:.80}")
    if not host.isascii():
        raise LocalProtocolError(f"an international host name is not supported: {host!r:.80}")
    try:
        host.encode("idna")  # what the resolver will do: a label too long fails there
    except UnicodeError:
        raise LocalProtocolError(f"not a host name: {host!r:.80}") from None
    tls = scheme == "https"
    default = 443 if tls else 80
    port = default if port is None else port
    if port == 0:
        raise LocalProtocolError(f"port 0 in tracker URL {url!r:.80}")
    is_v6 = ":" in host
    if is_v6:
        try:
            IPv6Address(host)
        except ValueError:
            raise LocalProtocolError(f"not an IPv6 address: {host!r:.80}") from None
    shown = f"[{host}]" if is_v6 else host
    target = quote(parts.path or "/", safe=_TARGET_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_TARGET_SAFE)
    host_header = shown if port == default else f"{shown}:{port}"
    return HttpTrackerUrl(url.partition("#")[0], tls, host, port, target, host_header)


def scrape_url(url: str) -> str | None:
    """The BEP 48 scrape URL of an announce URL, or None if the tracker has none.

    The last path component must start with ``announce``, which becomes ``scrape``.

    >>> scrape_url("http://t.example/x/announce.php?passkey=1")
    'http://t.example/x/scrape.php?passkey=1'
    >>> scrape_url("http://t.example/a") is None
    True
    """
    before, query_mark, query = url.partition("?")
    head, slash, last = before.rpartition("/")
    if not slash or not last.startswith("announce") or "//" not in head + slash:
        return None
    return f"{head}/scrape{last[len('announce') :]}{query_mark}{query}"


def _quote(data: bytes) -> str:
    # Only the unreserved characters stay as they are, as libtorrent escapes the hashes.
    return quote_from_bytes(data, safe="")


_EVENT_NAMES: Final = {
    AnnounceEvent.STARTED: "started",
    AnnounceEvent.COMPLETED: "completed",
    AnnounceEvent.STOPPED: "stopped",
}


def announce_query(
    *,
    info_hash: bytes,
    peer_id: bytes,
    port: int,
    uploaded: int,
    downloaded: int,
    left: int,
    event: AnnounceEvent,
    num_want: int,
    key: int,
    tracker_id: bytes | None = None,
) -> str:
    """The query string of an announce (BEP 3, with ``compact=1`` from BEP 23).

    ``event`` is left out for a regular announce and ``numwant`` when it is -1 (the tracker
    decides); ``key`` goes as 8 hex digits, as libtorrent sends it.

    >>> announce_query(info_hash=b"\\x01" * 20, peer_id=b"-BP0100-abcdefghijkl", port=6881,
    ...                uploaded=0, downloaded=0, left=5, event=AnnounceEvent.STARTED,
    ...                num_want=-1, key=0xBEEF)[:60]
    'info_hash=%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%01%0'
    """
    fields = [
        f"info_hash={_quote(info_hash)}",
        f"peer_id={_quote(peer_id)}",
        f"port={port}",
        f"uploaded={uploaded}",
        f"downloaded={downloaded}",
        f"left={left}",
        "compact=1",
        "no_peer_id=1",
    ]
    name = _EVENT_NAMES.get(event)
    if name is not None:
        fields.append(f"event={name}")
    if num_want >= 0:
        fields.append(f"numwant={num_want}")
    fields.append(f"key={key:08X}")
    if tracker_id is not None:
        fields.append(f"trackerid={_quote(tracker_id)}")
    return "&".join(fields)


def _with_query(target: str, query: str) -> str:
    """Append our parameters: after ``&`` when the URL has a query already (a passkey)."""
    if "?" not in target:
        return f"{target}?{query}"
    return f"{target}{query}" if target.endswith(("?", "&")) else f"{target}&{query}"


def _request(url: HttpTrackerUrl, target: str, user_agent: str) -> bytes:
    return (
        f"GET {target} HTTP/1.1\r\n"
        f"Host: {url.host_header}\r\n"
        f"User-Agent: {user_agent}\r\n"
        "Accept-Encoding: identity\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii")


# -- the sans-IO response reader ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A complete HTTP response.

    Attributes:
        status: the status code.
        reason: the reason phrase (latin-1).
        headers: ``(name, value)`` pairs, names lower-case, in order (latin-1).
        body: the body, transfer coding removed.
    """

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (lower-case), or None."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found


class _State(Enum):
    HEAD = auto()
    LENGTH = auto()
    CHUNK_SIZE = auto()
    CHUNK_DATA = auto()
    CHUNK_END = auto()
    TRAILERS = auto()
    TO_CLOSE = auto()
    DONE = auto()


_HEAD_END: Final = re.compile(rb"\r?\n\r?\n")
_LINE_END: Final = re.compile(rb"\r?\n")
_STATUS_LINE: Final = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})(?: ([^\r\n]*))?")
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class HttpResponseParser:
    """Reads one HTTP/1.x response from bytes fed as they arrive; no I/O.

    Feed with :meth:`receive_data`, then :meth:`receive_eof` when the peer closed; :attr:`response`
    is set once the response is complete (bytes after it are ignored: we asked for
    ``Connection: close``). Interim 1xx responses are skipped. Every violation, and every bound
    passed, raises :class:`MalformedTrackerResponseError`.

    Args:
        max_body: bytes of body at most.
        max_header: bytes of status line and headers at most (and of trailers).

    >>> parser = HttpResponseParser()
    >>> parser.receive_data(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nhi")
    >>> parser.response.body
    b'hi'
    """

    def __init__(self, *, max_body: int = MAX_RESPONSE_SIZE, max_header: int = MAX_HEADER_SIZE):
        self._max_body = max_body
        self._max_header = max_header
        self._buffer = bytearray()
        self._state = _State.HEAD
        self._body = bytearray()
        self._remaining = 0  # of the body (LENGTH) or of the chunk (CHUNK_DATA)
        self._trailer_bytes = 0
        self._interim = 0
        self._status = 0
        self._reason = ""
        self._headers: tuple[tuple[str, str], ...] = ()
        self.response: HttpResponse | None = None
        """The response, once complete."""

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Take more bytes of the response."""
        if self._state is _State.DONE:
            return
        self._buffer += data
        self._advance()

    def receive_eof(self) -> None:
        """The peer closed: ends a body read to the close; anything else unfinished is an error."""
        if self._state is _State.DONE:
            return
        if self._state in (_State.TO_CLOSE, _State.TRAILERS):  # a last CRLF lost: harmless
            self._finish()
            return
        if self._state is _State.HEAD:
            what = "before the headers ended" if self._buffer else "without a response"
        elif self._state is _State.LENGTH:
            what = f"{self._remaining} bytes before the body's end"
        else:
            what = "in the middle of the chunked body"
        raise MalformedTrackerResponseError(f"the tracker closed the connection {what}")

    # -- the machine --

    def _advance(self) -> None:
        while self._state is not _State.DONE:
            state = self._state
            if state is _State.HEAD:
                progressed = self._read_head()
            elif state is _State.LENGTH:
                progressed = self._read_fixed()
            elif state is _State.CHUNK_SIZE:
                progressed = self._read_chunk_size()
            elif state is _State.CHUNK_DATA:
                progressed = self._read_chunk_data()
            elif state is _State.CHUNK_END:
                progressed = self._read_chunk_end()
            elif state is _State.TRAILERS:
                progressed = self._read_trailers()
            else:  # TO_CLOSE
                self._append_body(self._buffer)
                self._buffer.clear()
                progressed = False
            if not progressed:
                return

    def _append_body(self, data: bytes | bytearray | memoryview) -> None:
        if len(self._body) + len(data) > self._max_body:
            raise MalformedTrackerResponseError(
                f"the tracker's answer exceeds {self._max_body} bytes"
            )
        self._body += data

    def _read_head(self) -> bool:
        match = _HEAD_END.search(self._buffer, 0, self._max_header + 4)
        if match is None:
            if len(self._buffer) > self._max_header:
                raise MalformedTrackerResponseError(
                    f"the tracker's headers exceed {self._max_header} bytes"
                )
            return False
        head = bytes(self._buffer[: match.start()])
        del self._buffer[: match.end()]
        lines = _LINE_END.split(head)
        status = _STATUS_LINE.fullmatch(lines[0])
        if status is None:
            raise MalformedTrackerResponseError(f"not an HTTP status line: {lines[0][:60]!r}")
        code = int(status.group(1))
        headers = []
        for line in lines[1:]:
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon or not _TOKEN.fullmatch(name):
                raise MalformedTrackerResponseError(f"not an HTTP header line: {line[:60]!r}")
            headers.append((name.lower(), value.strip(" \t")))
        if 100 <= code < 200:
            self._interim += 1
            if self._interim > _MAX_INTERIM:
                raise MalformedTrackerResponseError("too many interim (1xx) responses")
            return True
        self._status = code
        self._reason = (status.group(2) or b"").decode("latin-1")
        self._headers = tuple(headers)
        self._choose_framing(headers)
        return True

    def _choose_framing(self, headers: Sequence[tuple[str, str]]) -> None:
        if self._status in (204, 304):
            self._finish()
            return
        codings = [
            coding.strip().lower()
            for name, value in headers
            if name == "transfer-encoding"
            for coding in value.split(",")
            if coding.strip()
        ]
        if codings:  # it wins over Content-Length (RFC 9112, 6.3)
            self._state = _State.CHUNK_SIZE if codings[-1] == "chunked" else _State.TO_CLOSE
            return
        lengths = {value for name, value in headers if name == "content-length"}
        if not lengths:
            self._state = _State.TO_CLOSE
            return
        values = {part.strip() for value in lengths for part in value.split(",")}
        if len(values) != 1:
            raise MalformedTrackerResponseError(f"conflicting Content-Length: {sorted(values)}")
        [text] = values
        if not (text.isascii() and text.isdigit()) or len(text) > 18:
            raise MalformedTrackerResponseError(f"not a Content-Length: {text[:30]!r}")
        length = int(text)
        if length > self._max_body:
            raise MalformedTrackerResponseError(
                f"the tracker's answer of {length} bytes exceeds {self._max_body}"
            )
        self._remaining = length
        self._state = _State.LENGTH

    def _read_fixed(self) -> bool:
        take = min(self._remaining, len(self._buffer))
        self._append_body(memoryview(self._buffer)[:take])
        del self._buffer[:take]
        self._remaining -= take
        if self._remaining == 0:
            self._finish()
            return False
        return False

    def _line(self) -> bytes | None:
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) > _MAX_CHUNK_LINE:
                raise MalformedTrackerResponseError("a chunk size line is too long")
            return None
        line = bytes(self._buffer[:end]).rstrip(b"\r")
        del self._buffer[: end + 1]
        return line

    def _read_chunk_size(self) -> bool:
        line = self._line()
        if line is None:
            return False
        text = line.partition(b";")[0].strip(b" \t")
        if not text or len(text) > 16 or not all(c in b"0123456789abcdefABCDEF" for c in text):
            raise MalformedTrackerResponseError(f"not a chunk size: {line[:30]!r}")
        size = int(text, 16)
        if size == 0:
            self._state = _State.TRAILERS
        else:
            if len(self._body) + size > self._max_body:
                raise MalformedTrackerResponseError(
                    f"the tracker's answer exceeds {self._max_body} bytes"
                )
            self._remaining = size
            self._state = _State.CHUNK_DATA
        return True

    def _read_chunk_data(self) -> bool:
        take = min(self._remaining, len(self._buffer))
        self._append_body(memoryview(self._buffer)[:take])
        del self._buffer[:take]
        self._remaining -= take
        if self._remaining:
            return False
        self._state = _State.CHUNK_END
        return True

    def _read_chunk_end(self) -> bool:
        line = self._line()
        if line is None:
            return False
        if line:
            raise MalformedTrackerResponseError("a chunk does not end where its size says")
        self._state = _State.CHUNK_SIZE
        return True

    def _read_trailers(self) -> bool:
        while True:
            before = len(self._buffer)
            line = self._line()
            if line is None:
                return False
            self._trailer_bytes += before - len(self._buffer)
            if self._trailer_bytes > self._max_header:
                raise MalformedTrackerResponseError(
                    f"the tracker's trailers exceed {self._max_header} bytes"
                )
            if not line:
                self._finish()
                return False

    def _finish(self) -> None:
        self._state = _State.DONE
        self._buffer.clear()
        self.response = HttpResponse(self._status, self._reason, self._headers, bytes(self._body))


# -- the bencoded answers ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpAnnounceResponse:
    """What a tracker answered to an announce.

    Attributes:
        interval: seconds it wants between announces (1800 if it did not say).
        min_interval: seconds it wants between announces at least, if it said.
        tracker_id: the ``tracker id`` to send back in the next announces, if any.
        complete: seeders in the swarm (0 if it did not say).
        incomplete: leechers in the swarm (0 if it did not say).
        peers: the peers, IPv4 (``peers``, compact or dictionaries) then IPv6 (``peers6``).
        warning: the tracker's ``warning message``, if any.
    """

    interval: int
    min_interval: int | None
    tracker_id: bytes | None
    complete: int
    incomplete: int
    peers: tuple[PeerAddress, ...]
    warning: str | None


def _bdecode_dict(body: bytes) -> dict[bytes, object]:
    if not body:
        raise MalformedTrackerResponseError("the tracker's answer is empty")
    try:
        # lenient (keys out of order) and a prefix (bytes after it ignored): libtorrent accepts
        # both, and trackers that sort badly or add a newline exist.
        value, _ = decode_prefix(body, lenient=True)
    except BencodeDecodeError as error:
        raise MalformedTrackerResponseError(
            f"the tracker's answer is not bencoded: {error}"
        ) from None
    if not isinstance(value, dict):
        raise MalformedTrackerResponseError(
            f"the tracker's answer is a {type(value).__name__}, not a dictionary"
        )
    return value  # type: ignore[return-value]


def _count(value: object, default: int) -> int:
    if isinstance(value, int):
        return min(max(value, 0), _MAX_COUNT)
    return default


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _compact(data: bytes, size: int) -> Iterable[PeerAddress]:
    # A partial last entry is dropped, as libtorrent does.
    for start in range(0, len(data) - size + 1, size):
        yield PeerAddress.from_compact(data[start : start + size]).normalized()


def _dict_peer(entry: object) -> PeerAddress | None:
    if not isinstance(entry, dict):
        return None
    ip, port = entry.get(b"ip"), entry.get(b"port")
    if not isinstance(ip, bytes) or isinstance(port, bool) or not isinstance(port, int):
        return None
    if not 0 < port <= 0xFFFF or len(ip) > 64:
        return None
    try:
        host = ip_address(ip.decode("ascii"))
    except (UnicodeDecodeError, ValueError):  # a host name: we do not resolve peers' names
        return None
    if isinstance(host, IPv6Address) and host.scope_id is not None:
        return None
    return PeerAddress(host, port).normalized()


def _peers(answer: dict[bytes, object]) -> tuple[PeerAddress, ...]:
    found: list[PeerAddress] = []
    peers = answer.get(b"peers")
    if isinstance(peers, bytes):
        found += _compact(peers, 6)
    elif isinstance(peers, list):
        found += (peer for peer in map(_dict_peer, peers[: MAX_PEERS * 2]) if peer is not None)
    peers6 = answer.get(b"peers6")
    if isinstance(peers6, bytes):
        found += _compact(peers6, 18)
    usable = (peer for peer in found if peer.is_connectable)
    return tuple(dict.fromkeys(usable))[:MAX_PEERS]


def parse_announce_response(body: bytes) -> HttpAnnounceResponse:
    """Read a tracker's bencoded answer to an announce.

    Raises:
        TrackerRejectedError: the answer has a ``failure reason``.
        MalformedTrackerResponseError: the answer is not a bencoded dictionary.

    >>> parse_announce_response(b"d8:intervali900e5:peers6:\\x7f\\x00\\x00\\x01\\x1a\\xe1e").peers
    (PeerAddress(host=IPv4Address('127.0.0.1'), port=6881),)
    """
    answer = _bdecode_dict(body)
    failure = answer.get(b"failure reason")
    if isinstance(failure, bytes):
        raise TrackerRejectedError(_text(failure))
    warning = answer.get(b"warning message")
    tracker_id = answer.get(b"tracker id")
    min_interval = answer.get(b"min interval")
    return HttpAnnounceResponse(
        interval=_count(answer.get(b"interval"), _DEFAULT_INTERVAL),
        min_interval=_count(min_interval, 0) if isinstance(min_interval, int) else None,
        tracker_id=(
            tracker_id
            if isinstance(tracker_id, bytes) and 0 < len(tracker_id) <= MAX_TRACKER_ID
            else None
        ),
        complete=_count(answer.get(b"complete"), 0),
        incomplete=_count(answer.get(b"incomplete"), 0),
        peers=_peers(answer),
        warning=_text(warning) if isinstance(warning, bytes) and warning else None,
    )


def parse_scrape_response(body: bytes, info_hashes: Sequence[bytes]) -> tuple[ScrapeStats, ...]:
    """Read a tracker's bencoded answer to a scrape (BEP 48): the statistics of each of
    ``info_hashes``, in order; a swarm the answer leaves out counts zeros.

    Raises:
        TrackerRejectedError: the answer has a ``failure reason``.
        MalformedTrackerResponseError: the answer is not a bencoded dictionary with ``files``.
    """
    answer = _bdecode_dict(body)
    failure = answer.get(b"failure reason")
    if isinstance(failure, bytes):
        raise TrackerRejectedError(_text(failure))
    files = answer.get(b"files")
    if not isinstance(files, dict):
        raise MalformedTrackerResponseError("the tracker's scrape answer has no files dictionary")
    stats = []
    for info_hash in info_hashes:
        entry = files.get(info_hash)
        if not isinstance(entry, dict):
            entry = {}
        stats.append(
            ScrapeStats(
                seeders=_count(entry.get(b"complete"), 0),
                completed=_count(entry.get(b"downloaded"), 0),
                leechers=_count(entry.get(b"incomplete"), 0),
            )
        )
    return tuple(stats)


# -- the trio client ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpAnnounceResult(AnnounceResult):
    """An HTTP tracker's answer: bip_utracker's :class:`~bip_utracker.AnnounceResult`
    (``request_id`` counts this client's requests; ``tracker`` is the address that answered,
    after redirects) and what only HTTP trackers say.

    Attributes:
        min_interval: seconds the tracker wants between announces at least, if it said.
        tracker_id: the ``tracker id`` it gave, if any (sent back from then on).
        warning: its ``warning message``, if any.
    """

    min_interval: int | None = None
    tracker_id: bytes | None = None
    warning: str | None = None


def _swarm_id(info_hash: InfoHash | bytes) -> bytes:
    if isinstance(info_hash, InfoHash):
        return info_hash.swarm_ids()[0]  # v1 if it has one, else the truncated v2
    if isinstance(info_hash, bytes) and len(info_hash) == _SWARM_ID_SIZE:
        return info_hash
    raise LocalProtocolError(f"an info-hash is an InfoHash or 20 bytes, got {info_hash!r:.80}")


def _peer_id(peer_id: PeerId | bytes) -> bytes:
    if isinstance(peer_id, PeerId):
        return peer_id.value
    if isinstance(peer_id, bytes) and len(peer_id) == _SWARM_ID_SIZE:
        return peer_id
    raise LocalProtocolError(f"a peer id is a PeerId or 20 bytes, got {peer_id!r:.80}")


def _amount(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LocalProtocolError(f"{name} is a non-negative int, got {value!r:.40}")
    return value


def _address_of(stream: trio.SocketStream) -> PeerAddress:
    """The address that answered (for :attr:`AnnounceResult.tracker`); ``0.0.0.0:0`` if the
    socket cannot say (a scoped IPv6 address has no compact form)."""
    try:
        name = stream.socket.getpeername()
        return PeerAddress(ip_address(name[0]), int(name[1])).normalized()
    except (OSError, ValueError, TypeError, IndexError):
        return PeerAddress(IPv4Address(0), 0)


class HttpTrackerClient:
    """Announces to (and scrapes) ``http://`` and ``https://`` trackers, over trio.

    A bip_utracker :class:`~bip_utracker.AnnounceClient`: give it to an
    :class:`~bip_utracker.Announcer` with an http(s) URL. Each request is one connection
    (``Connection: close``), its whole exchange within ``timeout`` seconds, redirects
    included. One random 32-bit ``key`` per client goes with every announce (as libtorrent
    sends it), and the ``tracker id`` a tracker gave goes back to it. Each distinct
    ``warning message`` is logged once, at INFO on the ``bip.client`` logger. Use it in an
    ``async with`` block, or call :meth:`aclose`: requests in flight then fail with
    :class:`~bip_utracker.LocalProtocolError`, as later ones do.

    Args:
        timeout: seconds one request may take, redirects included.
        ssl_context: the TLS context for ``https://`` (default: the system's trusted CAs,
            ``ssl.create_default_context()``, made at the first https request).
        user_agent: the ``User-Agent`` header (default ``bip/<version>``).
        local_address: the IP address to connect from (None: the system chooses).
        max_redirects: redirects followed at most per request.
        rng: the source of the ``key`` (default: the system's).

    Raises:
        LocalProtocolError: a bad argument.
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_HTTP_TRACKER_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str | None = None,
        local_address: str | None = None,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        rng: random.Random | None = None,
    ) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise LocalProtocolError(f"timeout is a positive number of seconds, got {timeout!r}")
        if isinstance(max_redirects, bool) or not isinstance(max_redirects, int):
            raise LocalProtocolError(f"max_redirects is an int, got {max_redirects!r}")
        if max_redirects < 0:
            raise LocalProtocolError(f"max_redirects is 0 or more, got {max_redirects}")
        if local_address is not None:
            try:
                ip_address(local_address)
            except ValueError:
                raise LocalProtocolError(
                    f"local_address is an IP address, got {local_address!r:.80}"
                ) from None
        agent = f"bip/{__version__}" if user_agent is None else user_agent
        if not agent.isascii() or not agent.isprintable():
            raise LocalProtocolError(f"a User-Agent is printable ASCII, got {agent!r:.80}")
        self._timeout = float(timeout)
        self._ssl_context = ssl_context
        self._user_agent = agent
        self._local_address = local_address
        self._max_redirects = max_redirects
        self.key = (rng if rng is not None else random.SystemRandom()).getrandbits(32)
        """The ``key`` sent with every announce."""
        self._requests = 0
        self._tracker_ids: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()
        self._warned: OrderedDict[str, None] = OrderedDict()
        self._in_flight: set[trio.CancelScope] = set()
        self._closed = False

    async def __aenter__(self) -> HttpTrackerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    async def aclose(self) -> None:
        """Close the client: requests in flight are cancelled, later ones refused."""
        self._closed = True
        for scope in self._in_flight:
            scope.cancel()
        await trio.lowlevel.checkpoint()

    def check_tracker(self, tracker: str) -> None:
        """Accept an ``http://`` or ``https://`` URL or raise
        :class:`~bip_utracker.LocalProtocolError` (see :func:`parse_http_tracker_url`)."""
        parse_http_tracker_url(tracker)

    async def announce(
        self,
        tracker: str,
        info_hash: InfoHash | bytes,
        *,
        peer_id: PeerId | bytes,
        port: int,
        uploaded: int = 0,
        downloaded: int = 0,
        left: int = 0,
        event: AnnounceEvent = AnnounceEvent.NONE,
        num_want: int = -1,
    ) -> HttpAnnounceResult:
        """Announce to ``tracker`` and return its answer.

        Args:
            tracker: the announce URL (a query already in it, such as a private tracker's
                passkey, is kept; ours follows).
            info_hash: an :class:`~bip_metainfo.InfoHash` (its v1 hash, or its truncated v2
                hash for a v2-only torrent) or a 20-byte swarm id.
            peer_id: our peer id.
            port: our TCP listen port.
            uploaded: bytes uploaded this session.
            downloaded: bytes downloaded this session.
            left: bytes left to download (0 for a seeder).
            event: started, completed, stopped, or none for a regular announce.
            num_want: how many peers we want; -1 lets the tracker decide.

        Raises:
            TrackerRejectedError: the tracker answered with a ``failure reason``.
            TrackerTimeoutError: no complete answer within the timeout.
            MalformedTrackerResponseError: the answer is not one we can read.
            HttpTrackerError: no connection, TLS failure, HTTP error status, bad redirect.
            LocalProtocolError: a bad argument, or the client is closed.
        """
        url = parse_http_tracker_url(tracker)
        swarm_id = _swarm_id(info_hash)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
            raise LocalProtocolError(f"a port is 0..65535, got {port!r:.40}")
        if not isinstance(event, AnnounceEvent):
            raise LocalProtocolError(f"not an announce event: {event!r:.40}")
        if isinstance(num_want, bool) or not isinstance(num_want, int):
            raise LocalProtocolError(f"num_want is an int, got {num_want!r:.40}")
        if num_want not in _NUM_WANT_RANGE:
            raise LocalProtocolError(f"num_want is a 32-bit signed int, got {num_want}")
        id_key = (url.url, swarm_id)
        query = announce_query(
            info_hash=swarm_id,
            peer_id=_peer_id(peer_id),
            port=port,
            uploaded=_amount("uploaded", uploaded),
            downloaded=_amount("downloaded", downloaded),
            left=_amount("left", left),
            event=event,
            num_want=num_want,
            key=self.key,
            tracker_id=self._tracker_ids.get(id_key),
        )
        response, address, request_id = await self._get(url, query)
        if response.status != 200:
            _refused(response)
        answer = parse_announce_response(response.body)
        if answer.tracker_id is not None:
            self._tracker_ids[id_key] = answer.tracker_id
            self._tracker_ids.move_to_end(id_key)
            while len(self._tracker_ids) > _MAX_TRACKER_IDS:
                self._tracker_ids.popitem(last=False)
        if answer.warning is not None:
            self._warn(url.shown, answer.warning)
        return HttpAnnounceResult(
            request_id=request_id,
            tracker=address,
            info_hash=swarm_id,
            interval=answer.interval,
            leechers=answer.incomplete,
            seeders=answer.complete,
            peers=answer.peers,
            min_interval=answer.min_interval,
            tracker_id=answer.tracker_id,
            warning=answer.warning,
        )

    async def scrape(
        self, tracker: str, info_hashes: Sequence[InfoHash | bytes]
    ) -> tuple[ScrapeStats, ...]:
        """Scrape ``tracker`` (its announce URL; BEP 48) for the swarms of ``info_hashes``.

        Raises:
            LocalProtocolError: the tracker has no scrape URL (its last path component does
                not start with ``announce``), a bad argument, or the client is closed.
            TrackerRejectedError, TrackerTimeoutError, MalformedTrackerResponseError,
            HttpTrackerError: as for :meth:`announce`.
        """
        parse_http_tracker_url(tracker)
        target = scrape_url(tracker)
        if target is None:
            raise LocalProtocolError(f"{tracker!r:.80} has no scrape URL (BEP 48)")
        url = parse_http_tracker_url(target)
        swarm_ids = [_swarm_id(info_hash) for info_hash in info_hashes]
        query = "&".join(f"info_hash={_quote(swarm_id)}" for swarm_id in swarm_ids)
        response, _, _ = await self._get(url, query)
        if response.status != 200:
            _refused(response)
        return parse_scrape_response(response.body, swarm_ids)

    # -- internals --

    def _warn(self, tracker: str, message: str) -> None:
        if message in self._warned:
            return
        self._warned[message] = None
        while len(self._warned) > _MAX_WARNINGS:
            self._warned.popitem(last=False)
        logger.info("tracker %s warns: %s", tracker, message)

    async def _get(
        self, url: HttpTrackerUrl, query: str
    ) -> tuple[HttpResponse, PeerAddress, RequestId]:
        """GET ``url`` with ``query`` appended, following redirects, within the timeout."""
        if self._closed:
            raise LocalProtocolError("the HTTP tracker client is closed")
        self._requests += 1
        request_id = RequestId(self._requests)
        scope = trio.CancelScope(deadline=trio.current_time() + self._timeout)
        self._in_flight.add(scope)
        try:
            with scope:
                response, address = await self._follow(url, _with_query(url.target, query))
                return response, address, request_id
        finally:
            self._in_flight.discard(scope)
        if self._closed:
            raise LocalProtocolError("the HTTP tracker client is closed")
        raise TrackerTimeoutError(f"no answer from {url.shown} within {self._timeout:g} s")

    async def _follow(self, url: HttpTrackerUrl, target: str) -> tuple[HttpResponse, PeerAddress]:
        seen = {(url.tls, url.host_header, target)}
        for _ in range(self._max_redirects + 1):
            response, address = await self._fetch(url, target)
            if response.status not in _REDIRECTS:
                return response, address
            location = response.header("location")
            if not location:
                raise HttpTrackerError(f"HTTP {response.status} from {url.shown} names no Location")
            try:
                url = parse_http_tracker_url(urljoin(url.url, location))
            except (LocalProtocolError, ValueError) as error:
                raise HttpTrackerError(f"a redirect to a URL we do not follow: {error}") from None
            target = url.target
            where = (url.tls, url.host_header, target)
            if where in seen:
                raise HttpTrackerError(f"a redirect loop back to {url.shown:.200}")
            seen.add(where)
        raise HttpTrackerError(f"more than {self._max_redirects} redirects")

    async def _fetch(self, url: HttpTrackerUrl, target: str) -> tuple[HttpResponse, PeerAddress]:
        try:
            tcp = await trio.open_tcp_stream(url.host, url.port, local_address=self._local_address)
        except OSError as error:
            reason = error.strerror or str(error) or type(error).__name__
            raise HttpTrackerError(f"cannot connect to {url.host_header}: {reason}") from None
        address = _address_of(tcp)
        stream: trio.abc.Stream = tcp
        try:
            if url.tls:
                stream = trio.SSLStream(
                    tcp, self._tls_context(), server_hostname=url.host, https_compatible=True
                )
            await stream.send_all(_request(url, target, self._user_agent))
            parser = HttpResponseParser()
            while parser.response is None:
                data = await stream.receive_some(_RECEIVE_SIZE)
                if data:
                    parser.receive_data(data)
                else:
                    parser.receive_eof()
            return parser.response, address
        except (trio.BrokenResourceError, OSError, ssl.SSLError) as error:
            cause = error.__cause__ if error.__cause__ is not None else error
            reason = str(cause) or type(cause).__name__
            raise HttpTrackerError(f"{url.host_header}: {reason}") from None
        finally:
            await trio.aclose_forcefully(stream)

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context


def _refused(response: HttpResponse) -> None:
    """A status other than 200: the tracker's own ``failure reason`` if the body has one (some
    trackers send it with a 4xx), else the status."""
    try:
        answer = _bdecode_dict(response.body)
    except MalformedTrackerResponseError:
        answer = {}
    failure = answer.get(b"failure reason")
    if isinstance(failure, bytes):
        raise TrackerRejectedError(_text(failure))
    reason = response.reason.strip()[:80]
    raise HttpTrackerError(f"HTTP {response.status}{' ' + reason if reason else ''}")
