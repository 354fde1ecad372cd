"""Byte ranges of files from web seeds (BEP 19), over HTTP/1.1 and HTTPS, with trio.

:class:`WebSeedClient` fetches one range of one file per call (:meth:`WebSeedClient.fetch`):
a ``Range`` GET on its own connection (``Connection: close``), redirects followed, the
answer read by the tracker client's bounded reader (``_http_response``) and never more
than the range asked for:

- ``206 Partial Content`` must carry exactly the range (its ``Content-Range``, required,
  checked; its unit in any case, or left out, as libtorrent takes it);
- ``200 OK`` (a server that ignores ``Range``) is read from the right offset when that is
  within :data:`MAX_SKIP` bytes of the file's start (the bytes before it are dropped as they
  arrive), else refused;
- ``503`` and ``429`` may say when to come back (``Retry-After``, in seconds or as an
  HTTP-date): :attr:`WebSeedError.retry_after`, which the web seed honours within its bounds;
- ``404``, ``410`` and every other ``4xx`` but ``429`` (``403 Forbidden``, ``401``, ``416``: the
  range is past the server's copy of the file...) say this file will not come from there,
  whatever we ask (:class:`WebSeedFileMissingError`), as libtorrent's ``web_peer_connection``
  marks a file not had on any such answer; every other answer (``429``, ``5xx``), a
  connection refused, a TLS failure, a silence longer than the timeout, an answer slower than
  the low-speed limit, redirects and a head longer than their deadline, or a body shorter
  than the range is a :class:`WebSeedError`;
- a request libtorrent's ``ssrf_mitigation`` or ``allow_idna`` rules refuse (a query string
  for a web seed on a local network, an ``xn--`` host name) is never sent: a
  :class:`WebSeedBlockedError`, which the web seed takes as final.

How long a fetch may take is not bounded as a whole, but by its rate, as curl's
``CURLOPT_LOW_SPEED_LIMIT``/``_TIME`` do (libtorrent's web seed timeouts are about
inactivity too): a fetch fails once fewer than ``low_speed_limit`` bytes a second arrived on
average over the last ``low_speed_time`` seconds. A slow honest server finishes a 1 MiB run
however long it takes at 1 KiB/s or more, while a server trickling its answer is cut within
``low_speed_time`` seconds (and a silent one at the silence timeout). What comes before the
data, redirects and heads (16 KiB each at most, each hop a connection of its own), has a
deadline of its own besides (``request_timeout``).
"""

from __future__ import annotations

import math
import re
import ssl
import time
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from ipaddress import IPv4Address, IPv6Address
from typing import Final

import trio

from bip import __version__
from bip_handshake import PeerAddress, ProxyConfig, is_global_address

from ._http_exchange import (
    REDIRECTS,
    ExchangeError,
    follow_redirects,
    http_exchange,
    local_sources,
)
from ._http_response import HttpResponse, HttpResponseParser
from ._http_rules import SsrfRule, idna_refusal, literal_address, web_seed_query_refusal
from ._http_tracker_codec import HttpTrackerUrl
from ._http_tracker_errors import MalformedTrackerResponseError

__all__ = [
    "DEFAULT_WEB_SEED_LOW_SPEED_LIMIT",
    "DEFAULT_WEB_SEED_LOW_SPEED_TIME",
    "DEFAULT_WEB_SEED_REQUEST_TIMEOUT",
    "DEFAULT_WEB_SEED_TIMEOUT",
    "MAX_SKIP",
    "WebSeedBlockedError",
    "WebSeedClient",
    "WebSeedError",
    "WebSeedFileMissingError",
]

DEFAULT_WEB_SEED_TIMEOUT: Final = 20.0
"""Seconds a web seed may stay silent (connecting, or between two reads of an answer)."""
DEFAULT_WEB_SEED_REQUEST_TIMEOUT: Final = 60.0
"""Seconds from the start of a fetch until the head of the answer with the data is in (the
redirects before it included): a connection and a head take a second from a sound server,
and each of the few redirects followed is another."""
DEFAULT_WEB_SEED_LOW_SPEED_LIMIT: Final = 1024
"""Bytes a second a web seed must average over :data:`DEFAULT_WEB_SEED_LOW_SPEED_TIME` (curl's
``CURLOPT_LOW_SPEED_LIMIT``): one at 1 KiB/s or more always finishes (a 1 MiB run in 17
minutes at worst), one slower is worth less than the peers its worker could be fetching for.
A trickling server must send 30 KiB each 30 s to keep a worker: the cost of serving."""
DEFAULT_WEB_SEED_LOW_SPEED_TIME: Final = 30.0
"""Seconds over which :data:`DEFAULT_WEB_SEED_LOW_SPEED_LIMIT` is averaged (curl's
``CURLOPT_LOW_SPEED_TIME``): long enough for a server's pause (a disk spinning up, a
congested link's stall) to pass, short enough that a trickle is cut soon."""
MAX_SKIP: Final = 4 * 1024 * 1024
"""Bytes of a file we read and drop at most to reach a range, when a server ignores ``Range``
and sends the whole file: beyond, the range is refused (reading gigabytes to keep a few
blocks would cost more than fetching them from peers)."""
_MAX_REDIRECTS: Final = 5
_BUSY: Final = frozenset({429, 503})  # the statuses that may carry a Retry-After
_MAX_RETRY_AFTER_DIGITS: Final = 12
# RFC 9110, 14.4: "bytes first-last/complete" or ".../*" (length unknown). The unit is
# case-insensitive (14.1); like libtorrent's http_parser, any run of blanks after it is taken,
# and its absence too (some servers send none). ASCII only: no U+017F (long s) taken for an "s".
_CONTENT_RANGE: Final = re.compile(
    r"(?:bytes[ \t]+)?([0-9]{1,18})-([0-9]{1,18})/([0-9]{1,18}|\*)", re.ASCII | re.IGNORECASE
)


class WebSeedError(Exception):
    """A range could not be fetched from a web seed: the server failed, refused or lied.

    Attributes:
        retry_after: seconds a ``503`` or ``429`` answer asked us to wait (its
            ``Retry-After``, 0 or more, as sent: the caller bounds it), or None.
        busy: the server said it is overloaded (``429``, or ``503`` with a
            ``Retry-After``): about the server, not the file asked for.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, busy: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.busy = busy


class WebSeedFileMissingError(WebSeedError):
    """The web seed answered 404, 410 or another 4xx but 429 for a file: it does not have
    it, or will not give it to us (403, 401), or not as the torrent has it (416: shorter)."""


class WebSeedBlockedError(WebSeedError):
    """We refused to send a web seed a request: libtorrent's ``ssrf_mitigation`` or
    ``allow_idna`` rule (the message names it). Final: the request would be refused again.

    Attributes:
        rule: ``"ssrf_mitigation"`` or ``"allow_idna"``.
    """

    def __init__(self, message: str, *, rule: SsrfRule) -> None:
        super().__init__(message)
        self.rule = rule


class WebSeedClient:
    """Fetches ranges of files from web seeds (see the module docstring).

    Args:
        timeout: seconds a server may stay silent: to connect, and between two reads.
        request_timeout: seconds from the start of a fetch until the head of the answer
            with the data is in, redirects included.
        low_speed_limit: bytes a second an answer must average over ``low_speed_time``
            seconds, or the fetch fails (0: no limit but the silence timeout).
        low_speed_time: seconds over which ``low_speed_limit`` is averaged.
        ssrf_mitigation: libtorrent's rules of that name (on by default): no query string to
            a web seed on a local network, no redirect from the Internet into one.
        allow_idna: whether a host name with an internationalised (``xn--``) label may be
            asked (off by default, as libtorrent's ``allow_idna``).
        ssl_context: the TLS context for ``https://`` (default: the system's trusted CAs,
            ``ssl.create_default_context()``, made at the first https request), as the HTTP
            tracker client does.
        user_agent: the ``User-Agent`` header (default ``bip/<version>``).
        local_address: the IP address to connect from, or one of each family, as the HTTP
            tracker client's (None: any family, the system chooses): the session gives both
            its listen address of each family (``--bind``).
        proxy: a SOCKS5 proxy every fetch goes through (``None``: connect directly; the
            connection to it leaves from ``local_address``'s address of the proxy's family),
            as the HTTP tracker client's.

    Raises:
        ValueError: a timeout (request timeout, low-speed time) that is not a positive
            number, a low-speed limit that is not an int of 0 or more, a User-Agent that is
            not printable ASCII, a local address that is not an IP address, a proxy that is
            not a ProxyConfig, or a rule's switch that is not a bool.
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_WEB_SEED_TIMEOUT,
        request_timeout: float = DEFAULT_WEB_SEED_REQUEST_TIMEOUT,
        low_speed_limit: int = DEFAULT_WEB_SEED_LOW_SPEED_LIMIT,
        low_speed_time: float = DEFAULT_WEB_SEED_LOW_SPEED_TIME,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str | None = None,
        local_address: str | Sequence[str] | None = None,
        ssrf_mitigation: bool = True,
        allow_idna: bool = False,
        proxy: ProxyConfig | None = None,
    ) -> None:
        timeout = _check_seconds("timeout", timeout)
        if proxy is not None and not isinstance(proxy, ProxyConfig):
            raise ValueError(f"proxy is a ProxyConfig or None, got {proxy!r:.80}")
        self._proxy = proxy
        self._request_timeout = _check_seconds("request_timeout", request_timeout)
        self._low_speed_time = _check_seconds("low_speed_time", low_speed_time)
        if (
            isinstance(low_speed_limit, bool)
            or not isinstance(low_speed_limit, int)
            or low_speed_limit < 0
        ):
            raise ValueError(
                f"low_speed_limit is an int of bytes a second, 0 or more, got {low_speed_limit!r}"
            )
        self._low_speed_limit = low_speed_limit
        for name, flag in (("ssrf_mitigation", ssrf_mitigation), ("allow_idna", allow_idna)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} is a bool, got {flag!r:.40}")
        self._ssrf_mitigation = ssrf_mitigation
        self._allow_idna = allow_idna
        agent = f"bip/{__version__}" if user_agent is None else user_agent
        if not isinstance(agent, str) or not agent.isascii() or not agent.isprintable():
            # A CR or LF would end the header: what follows would be a header of its own.
            raise ValueError(f"a User-Agent is printable ASCII, got {agent!r:.80}")
        self._timeout = float(timeout)
        self._ssl_context = ssl_context
        local_sources(local_address)  # ValueError: not IP addresses
        self._user_agent = agent
        # A copy: a caller's list changed later would not have been checked.
        self._local_address = (
            local_address
            if local_address is None or isinstance(local_address, str)
            else tuple(local_address)
        )

    async def fetch(self, url: HttpTrackerUrl, offset: int, length: int) -> bytes:
        """The ``length`` bytes at ``offset`` of the file at ``url`` (``length`` > 0).

        Raises:
            WebSeedFileMissingError: 404, 410 or another 4xx but 429.
            WebSeedBlockedError: the request (or a redirect's) is refused by our rules.
            WebSeedError: anything else that did not give exactly those bytes.
        """
        if offset < 0 or length <= 0:
            raise ValueError(f"not a range: {length} bytes at {offset}")
        # Until the head of the final answer is in: once it is, only the rate counts.
        before_data = trio.CancelScope(deadline=trio.current_time() + self._request_timeout)

        async def exchange(
            url: HttpTrackerUrl, target: str, *, global_only: bool
        ) -> tuple[HttpResponse, PeerAddress]:
            return await self._exchange(
                url, target, offset, length, global_only=global_only, before_data=before_data
            )

        with before_data:
            response, _, final = await follow_redirects(
                url,
                url.target,
                exchange,
                max_redirects=_MAX_REDIRECTS,
                error=WebSeedError,
                ssrf_mitigation=self._ssrf_mitigation,
            )
            return _payload(final, response, offset, length)
        raise WebSeedError(f"{url.shown}: no answer's head within {self._request_timeout:g} s")

    async def _exchange(
        self,
        url: HttpTrackerUrl,
        target: str,
        offset: int,
        length: int,
        *,
        global_only: bool,
        before_data: trio.CancelScope,
    ) -> tuple[HttpResponse, PeerAddress]:
        # Every request is judged, a redirect's too: by its URL before connecting, and for a
        # host name by the address that answered, before a byte is sent.
        if not self._allow_idna and (idna := idna_refusal(url.host)) is not None:
            raise WebSeedBlockedError(f"{url.shown}: {idna}", rule="allow_idna")

        def check_address(address: IPv4Address | IPv6Address) -> None:
            if not is_global_address(address):
                refused = web_seed_query_refusal(target, address)
                if refused is not None:
                    raise WebSeedBlockedError(f"{url.shown}: {refused}", rule="ssrf_mitigation")

        if self._ssrf_mitigation and (literal := literal_address(url.host)) is not None:
            check_address(literal)  # no need to connect to know

        def window(status: int, headers: tuple[tuple[str, str], ...]) -> tuple[int, int] | None:
            if status not in REDIRECTS:
                before_data.deadline = math.inf  # the data's head is in: the rate rules now
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
                check_address=check_address if self._ssrf_mitigation else None,
                low_speed=(self._low_speed_limit, self._low_speed_time),
                proxy=self._proxy,
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
    if 400 <= status < 500 and status not in _BUSY:
        # As libtorrent: any refusal of the request itself is about this file (a 403 for
        # one file of a mirror, a 416 for a shorter copy), and asking again gets the same;
        # but a 429 says the server is busy, and asks us to come back.
        reason = response.reason.strip()[:80]
        raise WebSeedFileMissingError(
            f"HTTP {status}{' ' + reason if reason else ''} for {url.shown}"
        )
    if status == 206:
        # Without a Content-Range nothing says which bytes came (libtorrent refuses it too).
        content_range = response.header("content-range") or ""
        match = _CONTENT_RANGE.fullmatch(content_range.strip())
        # RFC 9110, 14.4: a complete length at or below the last position is invalid.
        if (
            match is None
            or (int(match.group(1)), int(match.group(2))) != (offset, offset + length - 1)
            or (match.group(3) != "*" and int(match.group(3)) <= offset + length - 1)
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
        retry_after = _retry_after(response.header("retry-after")) if status in _BUSY else None
        raise WebSeedError(
            f"HTTP {status}{' ' + reason if reason else ''} from {url.shown}",
            retry_after=retry_after,
            busy=status == 429 or retry_after is not None,
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
