"""Byte ranges of files from web seeds (BEP 19), over HTTP/1.1 and HTTPS, with trio.

:class:`WebSeedClient` fetches one range of one file per call (:meth:`WebSeedClient.fetch`):
a ``Range`` GET on its own connection (``Connection: close``), redirects followed, the
answer read by the tracker client's bounded reader (``_http_response``) and never more
than the range asked for:

- ``206 Partial Content`` must carry exactly the range (its ``Content-Range``, required,
  checked);
- ``200 OK`` (a server that ignores ``Range``) is read from the right offset when that is
  within :data:`MAX_SKIP` bytes of the file's start (the bytes before it are dropped as they
  arrive), else refused;
- ``503`` and ``429`` may say when to come back (``Retry-After``, in seconds or as an
  HTTP-date): :attr:`WebSeedError.retry_after`, which the web seed honours within its bounds;
- ``404`` and ``410`` say the file is not there (:class:`WebSeedFileMissingError`); every other
  answer, a connection refused, a TLS failure, a silence longer than the timeout, a fetch
  longer than its deadline or a body shorter than the range is a :class:`WebSeedError`.

Each fetch has a deadline (``request_timeout``, redirects included) besides the silence
timeout: a server that sends a byte just before each silence would end would otherwise hold
a worker for as long as it likes (its headers alone may take 16 KiB).
"""

from __future__ import annotations

import re
import ssl
import time
from email.utils import parsedate_to_datetime
from ipaddress import ip_address
from typing import Final

import trio

from bip import __version__
from bip_handshake import PeerAddress

from ._http_exchange import ExchangeError, follow_redirects, http_exchange
from ._http_response import HttpResponse, HttpResponseParser
from ._http_tracker_codec import HttpTrackerUrl
from ._http_tracker_errors import MalformedTrackerResponseError

__all__ = [
    "DEFAULT_WEB_SEED_REQUEST_TIMEOUT",
    "DEFAULT_WEB_SEED_TIMEOUT",
    "MAX_SKIP",
    "WebSeedClient",
    "WebSeedError",
    "WebSeedFileMissingError",
]

DEFAULT_WEB_SEED_TIMEOUT: Final = 20.0
"""Seconds a web seed may stay silent (connecting, or between two reads of an answer)."""
DEFAULT_WEB_SEED_REQUEST_TIMEOUT: Final = 120.0
"""Seconds one fetch may take in all, redirects included: a run of 1 MiB at 10 KiB/s."""
MAX_SKIP: Final = 4 * 1024 * 1024
"""Bytes of a file we read and drop at most to reach a range, when a server ignores ``Range``
and sends the whole file: beyond, the range is refused (reading gigabytes to keep a few
blocks would cost more than fetching them from peers)."""
_MAX_REDIRECTS: Final = 5
_MISSING: Final = frozenset({404, 410})
_BUSY: Final = frozenset({429, 503})  # the statuses that may carry a Retry-After
_MAX_RETRY_AFTER_DIGITS: Final = 12
_CONTENT_RANGE: Final = re.compile(r"bytes ([0-9]{1,18})-([0-9]{1,18})/([0-9]{1,18}|\*)")


class WebSeedError(Exception):
    """A range could not be fetched from a web seed: the server failed, refused or lied.

    Attributes:
        retry_after: seconds a ``503`` or ``429`` answer asked us to wait (its
            ``Retry-After``, 0 or more, as sent: the caller bounds it), or None.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WebSeedFileMissingError(WebSeedError):
    """The web seed answered 404 or 410 for a file: it does not have it."""


class WebSeedClient:
    """Fetches ranges of files from web seeds (see the module docstring).

    Args:
        timeout: seconds a server may stay silent: to connect, and between two reads.
        request_timeout: seconds one fetch may take in all, redirects included.
        ssl_context: the TLS context for ``https://`` (default: the system's trusted CAs,
            ``ssl.create_default_context()``, made at the first https request), as the HTTP
            tracker client does.
        user_agent: the ``User-Agent`` header (default ``bip/<version>``).
        local_address: the IP address to connect from (None: the system chooses), as the
            HTTP tracker client's: the session gives both the one address it was told to
            use (``--bind``).

    Raises:
        ValueError: a timeout (or request timeout) that is not a positive number, a
            User-Agent that is not printable ASCII, or a local address that is not an IP address.
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_WEB_SEED_TIMEOUT,
        request_timeout: float = DEFAULT_WEB_SEED_REQUEST_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str | None = None,
        local_address: str | None = None,
    ) -> None:
        timeout = _check_seconds("timeout", timeout)
        self._request_timeout = _check_seconds("request_timeout", request_timeout)
        agent = f"bip/{__version__}" if user_agent is None else user_agent
        if not isinstance(agent, str) or not agent.isascii() or not agent.isprintable():
            # A CR or LF would end the header: what follows would be a header of its own.
            raise ValueError(f"a User-Agent is printable ASCII, got {agent!r:.80}")
        self._timeout = float(timeout)
        self._ssl_context = ssl_context
        if local_address is not None:
            try:
                ip_address(local_address)
            except ValueError:
                # A name would be resolved at every request, to any of its addresses.
                raise ValueError(
                    f"local_address is an IP address, got {local_address!r:.80}"
                ) from None
        self._user_agent = agent
        self._local_address = local_address

    async def fetch(self, url: HttpTrackerUrl, offset: int, length: int) -> bytes:
        """The ``length`` bytes at ``offset`` of the file at ``url`` (``length`` > 0).

        Raises:
            WebSeedFileMissingError: 404 or 410.
            WebSeedError: anything else that did not give exactly those bytes.
        """
        if offset < 0 or length <= 0:
            raise ValueError(f"not a range: {length} bytes at {offset}")

        async def exchange(
            url: HttpTrackerUrl, target: str, *, global_only: bool
        ) -> tuple[HttpResponse, PeerAddress]:
            return await self._exchange(url, target, offset, length, global_only)

        with trio.move_on_after(self._request_timeout):
            response, _, final = await follow_redirects(
                url, url.target, exchange, max_redirects=_MAX_REDIRECTS, error=WebSeedError
            )
            return _payload(final, response, offset, length)
        raise WebSeedError(f"{url.shown}: no whole answer within {self._request_timeout:g} s")

    async def _exchange(
        self, url: HttpTrackerUrl, target: str, offset: int, length: int, global_only: bool
    ) -> tuple[HttpResponse, PeerAddress]:
        def window(status: int, headers: tuple[tuple[str, str], ...]) -> tuple[int, int] | None:
            if status == 206:
                return 0, length
            if status == 200 and offset <= MAX_SKIP:
                return offset, length
            return 0, 0  # an error or a redirect: its body is of no use

        try:
            return await http_exchange(
                url,
                self._request(url, target, offset, length),
                HttpResponseParser(max_body=length, window=window),
                tls_context=self._tls_context,
                local_address=self._local_address,
                connect_timeout=self._timeout,
                silence_timeout=self._timeout,
                global_only=global_only,
            )
        except MalformedTrackerResponseError as error:
            reason = str(error).replace("the tracker", "the server")
            raise WebSeedError(f"{url.shown}: {reason}") from None
        except ExchangeError as error:
            message = error.message if error.connecting else f"{url.shown}: {error.message}"
            raise WebSeedError(message) from None

    def _request(self, url: HttpTrackerUrl, target: str, offset: int, length: int) -> bytes:
        return (
            f"GET {target} HTTP/1.1\r\n"
            f"Host: {url.host_header}\r\n"
            f"User-Agent: {self._user_agent}\r\n"
            f"Range: bytes={offset}-{offset + length - 1}\r\n"
            "Accept-Encoding: identity\r\n"
            "Connection: close\r\n"
            "\r\n"
        ).encode("ascii")

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context


def _payload(url: HttpTrackerUrl, response: HttpResponse, offset: int, length: int) -> bytes:
    """The range's bytes from a final answer, or the error it stands for."""
    status = response.status
    if status in _MISSING:
        raise WebSeedFileMissingError(f"HTTP {status} for {url.shown}")
    if status == 206:
        # Without a Content-Range nothing says which bytes came (libtorrent refuses it too).
        content_range = response.header("content-range") or ""
        match = _CONTENT_RANGE.fullmatch(content_range.strip())
        if match is None or (int(match.group(1)), int(match.group(2))) != (
            offset,
            offset + length - 1,
        ):
            raise WebSeedError(
                f"{url.shown} sent bytes {content_range[:60]!r} for {offset}-{offset + length - 1}"
            )
    elif status == 200:
        if offset > MAX_SKIP:
            raise WebSeedError(
                f"{url.shown} ignores Range requests: {offset} bytes to skip to the range"
            )
    else:
        reason = response.reason.strip()[:80]
        raise WebSeedError(
            f"HTTP {status}{' ' + reason if reason else ''} from {url.shown}",
            retry_after=_retry_after(response.header("retry-after")) if status in _BUSY else None,
        )
    if len(response.body) != length:
        raise WebSeedError(f"{url.shown} sent {len(response.body)} bytes of {length}")
    return response.body


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` (RFC 9110, 10.2.3) in seconds from now: delay-seconds, or an HTTP-date
    (0 if past); None if absent or neither (a negative number, garbage)."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        # A huge number is only a long wait, which the caller bounds; its digits are not.
        return float(text) if len(text) <= _MAX_RETRY_AFTER_DIGITS else float("inf")
    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:  # "-0000": RFC 5322's unknown zone; HTTP-dates are GMT
            return None
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None


def _check_seconds(name: str, value: object) -> float:
    """``value`` as seconds, or ValueError naming ``name``: a positive number, not a bool."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} is a positive number of seconds, got {value!r}")
    return float(value)
