"""A sans-IO HTTP/1.1 response reader, bounded for answers from untrusted trackers.

:class:`HttpResponseParser` is fed bytes as they come: the status line and headers within
:data:`MAX_HEADER_SIZE`, then a body by ``Content-Length``, chunked transfer coding or read to
the close, within :data:`MAX_RESPONSE_SIZE`. Interim 1xx responses are skipped. It does no I/O:
the trio client (``_http_tracker``) reads the socket and feeds it.

Both clients ask for ``Accept-Encoding: identity`` and know only the ``chunked`` transfer coding,
so a body in a ``Content-Encoding`` or a transfer coding it cannot undo is refused rather than
taken for bencode or file data: nothing is ever inflated, so no compression bomb can grow. The
chunked framing a server adds (size lines, extensions, the CRLF after each chunk) is bounded by
the body it carries (:data:`MAX_FRAMING`): tiny chunks with long extensions cannot make us read
a gigabyte to keep a megabyte.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum, auto
from typing import Final

from bip._describe import safe_text

from ._http_tracker_errors import MalformedTrackerResponseError

__all__ = [
    "MAX_FRAMING",
    "MAX_HEADER_SIZE",
    "MAX_RESPONSE_SIZE",
    "BodyWindow",
    "HttpResponse",
    "HttpResponseParser",
]

MAX_RESPONSE_SIZE: Final = 1024 * 1024
"""Bytes of body a tracker may send at most: libtorrent's ``tracker_maximum_response_length``."""
MAX_HEADER_SIZE: Final = 16 * 1024
"""Bytes of status line and headers (and of a chunked body's trailers) a tracker may send."""

MAX_FRAMING: Final = 64 * 1024
"""Bytes of chunked framing (size lines with their extensions, CRLFs) a body may carry beyond
one byte per byte of body: a server cutting its body in sensible chunks never comes near it."""
_IDENTITY: Final = frozenset({"", "identity"})  # no coding: what we asked for
_MAX_INTERIM: Final = 8  # 1xx responses skipped before the real one
_MAX_CHUNK_LINE: Final = 1024


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A complete HTTP response.

    Attributes:
        status: the status code.
        reason: the reason phrase (latin-1), its control characters escaped: it only
            ever goes into messages.
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


BodyWindow = Callable[[int, tuple[tuple[str, str], ...]], tuple[int, int] | None]
"""Chooses, from the final status and headers, a window of the body to keep: ``(skip, keep)``
(the first ``skip`` body bytes dropped, at most ``keep`` kept), or ``None`` for the whole body."""


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
_VERSION: Final = b"HTTP/1."
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
        window: asked once the final head is read; a ``(skip, keep)`` answer makes the reader
            drop the body's first ``skip`` bytes and complete the response as soon as ``keep``
            more are kept (at most ``max_body``): the rest of a longer body is never read, and
            its declared length is no error (a web seed answering a range request with the
            whole file). :attr:`truncated` then says the connection cannot be reused.

    >>> parser = HttpResponseParser()
    >>> parser.receive_data(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nhi")
    >>> parser.response.body
    b'hi'
    """

    def __init__(
        self,
        *,
        max_body: int = MAX_RESPONSE_SIZE,
        max_header: int = MAX_HEADER_SIZE,
        window: BodyWindow | None = None,
    ):
        self._max_body = max_body
        self._max_header = max_header
        self._window = window
        self._skip = 0
        self._keep: int | None = None  # set by the window: bytes of body to keep, then stop
        self._buffer = bytearray()
        self._state = _State.HEAD
        self._body = bytearray()
        self._remaining = 0  # of the body (LENGTH) or of the chunk (CHUNK_DATA)
        self._trailer_bytes = 0
        self._framing = 0  # bytes of chunked framing read so far
        self._body_seen = 0  # bytes of body read so far, kept or skipped
        self._scanned = 0  # where the search for the head's end resumes
        self._interim = 0
        self._status = 0
        self._reason = ""
        self._headers: tuple[tuple[str, str], ...] = ()
        self.response: HttpResponse | None = None
        """The response, once complete."""
        self.truncated = False
        """Whether the response completed at the end of its window, before its body's end."""

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
                if self.truncated:
                    self._finish()
                progressed = False
            if not progressed:
                return

    def _append_body(self, data: bytes | bytearray | memoryview) -> None:
        self._body_seen += len(data)
        if self._keep is not None:
            self._append_window(memoryview(data))
            return
        if len(self._body) + len(data) > self._max_body:
            raise MalformedTrackerResponseError(
                f"the tracker's answer exceeds {self._max_body} bytes"
            )
        self._body += data

    def _append_window(self, view: memoryview) -> None:
        assert self._keep is not None
        if self._skip:
            drop = min(self._skip, len(view))
            self._skip -= drop
            view = view[drop:]
        take = min(self._keep - len(self._body), len(view))
        self._body += view[:take]
        if len(self._body) == self._keep:
            # We stop reading: whatever follows is left unread. Finished by the caller, once
            # its view of the buffer is released (a bytearray cannot be cleared under one).
            self.truncated = True

    def _read_head(self) -> bool:
        # Resumed where the last search stopped (less the 3 bytes of a terminator cut in two):
        # a head trickled a byte at a time is scanned once, not once per byte.
        match = _HEAD_END.search(self._buffer, max(0, self._scanned - 3), self._max_header + 4)
        if match is None:
            # An answer that does not even start like HTTP/1.x (HTTP/0.9's bare body, another
            # protocol) is refused at once, not after the headers' bound or the timeout.
            start = bytes(self._buffer[: len(_VERSION)])
            if not _VERSION.startswith(start):
                raise MalformedTrackerResponseError(f"not an HTTP status line: {start!r}")
            # Up to 3 bytes past the bound may still be the start of a blank line that ends a
            # head within it ("\r\n\r"): refused once they cannot, as a head read whole is.
            if len(self._buffer) > self._max_header + 3:
                raise MalformedTrackerResponseError(
                    f"the tracker's headers exceed {self._max_header} bytes"
                )
            self._scanned = len(self._buffer)
            return False
        if match.start() > self._max_header:
            raise MalformedTrackerResponseError(
                f"the tracker's headers exceed {self._max_header} bytes"
            )
        head = bytes(self._buffer[: match.start()])
        del self._buffer[: match.end()]
        self._scanned = 0
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
        self._reason = safe_text((status.group(2) or b"").decode("latin-1"))
        self._headers = tuple(headers)
        if self._window is not None:
            chosen = self._window(code, self._headers)
            if chosen is not None:
                skip, keep = chosen
                self._skip = max(0, skip)
                self._keep = max(0, min(keep, self._max_body))
        self._choose_framing(headers)
        if self._keep == 0 and self._state is not _State.DONE:
            self.truncated = True
            self._finish()
        return True

    def _choose_framing(self, headers: Sequence[tuple[str, str]]) -> None:
        if self._status in (204, 304):
            self._finish()
            return
        if self._keep == 0:
            return  # the body is not read: how it is framed or coded does not matter
        # We asked for the identity encoding: a body compressed anyway is no bencode and no
        # file data, and inflating it is a bomb's whole point. Refused, never decoded. (An
        # error status's body is only searched for a failure reason: coded, it has none.)
        if 200 <= self._status < 300 and (coded := _codings(headers, "content-encoding")):
            raise MalformedTrackerResponseError(
                f"a body in a Content-Encoding we did not ask for: {', '.join(coded)[:40]!r}"
            )
        codings = _codings(headers, "transfer-encoding")
        if codings:  # it wins over Content-Length (RFC 9112, 6.3)
            # Only chunked can be undone here, and we never offer another coding (no TE
            # header): a coding under chunked would leave the body coded, and any other last
            # coding would be read to the close and taken as it is (RFC 9112, 6.3 says so). We
            # fail instead, as a client that cannot decode it should.
            if codings != ["chunked"]:
                raise MalformedTrackerResponseError(
                    f"a transfer coding we do not know: {', '.join(codings)[:40]!r}"
                )
            self._state = _State.CHUNK_SIZE
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
        if length > self._max_body and self._keep is None:
            raise MalformedTrackerResponseError(
                f"the tracker's answer of {length} bytes exceeds {self._max_body}"
            )
        self._remaining = length
        self._state = _State.LENGTH

    def _read_fixed(self) -> bool:
        take = min(self._remaining, len(self._buffer))
        self._append_body(memoryview(self._buffer)[:take])
        if self.truncated:  # the window is full
            self._finish()
            return False
        del self._buffer[:take]
        self._remaining -= take
        if self._remaining == 0:
            self._finish()
            return False
        return False

    def _line(self, limit: int, too_long: str) -> bytes | None:
        """The next line (its line end cut off), None until its ``\\n`` arrives, or
        ``too_long`` raised once it has more than ``limit`` bytes before its ``\\n``: found
        or not, so the outcome does not depend on how the bytes were split in reads."""
        end = self._buffer.find(b"\n", 0, limit + 1)
        if end < 0:
            # A limit of -1 (a bound used up) is passed by the first byte, not by nothing.
            if self._buffer and len(self._buffer) > limit:
                raise MalformedTrackerResponseError(too_long)
            return None
        line = bytes(self._buffer[:end]).rstrip(b"\r")
        del self._buffer[: end + 1]
        return line

    def _framed(self, line: bytes) -> None:
        """Count a chunk size line or chunk end (and its line end) against the framing bound."""
        self._framing += len(line) + 2
        if self._framing > MAX_FRAMING + self._body_seen:
            raise MalformedTrackerResponseError(
                f"the tracker's chunked framing exceeds its body by {MAX_FRAMING} bytes"
            )

    def _read_chunk_size(self) -> bool:
        line = self._line(_MAX_CHUNK_LINE, "a chunk size line is too long")
        if line is None:
            return False
        self._framed(line)
        text = line.partition(b";")[0].strip(b" \t")
        if not text or len(text) > 16 or not all(c in b"0123456789abcdefABCDEF" for c in text):
            raise MalformedTrackerResponseError(f"not a chunk size: {line[:30]!r}")
        size = int(text, 16)
        if size == 0:
            self._state = _State.TRAILERS
        else:
            if len(self._body) + size > self._max_body and self._keep is None:
                raise MalformedTrackerResponseError(
                    f"the tracker's answer exceeds {self._max_body} bytes"
                )
            self._remaining = size
            self._state = _State.CHUNK_DATA
        return True

    def _read_chunk_data(self) -> bool:
        take = min(self._remaining, len(self._buffer))
        self._append_body(memoryview(self._buffer)[:take])
        if self.truncated:  # the window is full
            self._finish()
            return False
        del self._buffer[:take]
        self._remaining -= take
        if self._remaining:
            return False
        self._state = _State.CHUNK_END
        return True

    def _read_chunk_end(self) -> bool:
        line = self._line(_MAX_CHUNK_LINE, "a chunk does not end where its size says")
        if line is None:
            return False
        self._framed(line)
        if line:
            raise MalformedTrackerResponseError("a chunk does not end where its size says")
        self._state = _State.CHUNK_SIZE
        return True

    def _read_trailers(self) -> bool:
        while True:
            before = len(self._buffer)
            # What is left of the bound, less the line's "\n".
            left = self._max_header - self._trailer_bytes - 1
            line = self._line(left, f"the tracker's trailers exceed {self._max_header} bytes")
            if line is None:
                return False
            self._trailer_bytes += before - len(self._buffer)
            if not line:
                self._finish()
                return False

    def _finish(self) -> None:
        self._state = _State.DONE
        self._buffer.clear()
        self.response = HttpResponse(self._status, self._reason, self._headers, bytes(self._body))


def _codings(headers: Sequence[tuple[str, str]], field: str) -> list[str]:
    """The codings the ``field`` headers list, in order, lower-cased, ``identity`` left out."""
    return [
        coding
        for name, value in headers
        if name == field
        for coding in (part.strip().lower() for part in value.split(","))
        if coding not in _IDENTITY
    ]
