"""One HTTP/1.1 request and its response over trio, TLS included, and the redirects after it.

The transport the HTTP tracker client and the web seed client share: connect (with
an optional bound, from an optional local address), wrap in TLS for ``https://``, send
the request, feed what arrives to a sans-IO :class:`~._http_response.HttpResponseParser`
(optionally bounding every silence), close the stream on every path
(:func:`http_exchange`). Failures below HTTP come out as one :class:`ExchangeError`,
which each client words as its own error; a malformed response is the parser's error
and passes through.

:func:`follow_redirects` owns the redirect loop both clients run around their exchanges:
the count, loop detection, relative ``Location`` resolution, and the schemes a redirect
may lead to (``http://`` and ``https://`` only, as :func:`parse_http_tracker_url`
accepts). Each client gives its own limit, its own exchange and its own error type.

A server on the Internet cannot send us into a local network (libtorrent's
``ssrf_mitigation``): once a global address has answered, a redirect to a host that is not
global (loopback, private, link-local, ...) is refused, by its IP literal before any
connection, and for a host name once connected, before a byte of the request is sent. A
URL from a ``.torrent`` anyone can make would otherwise let its server have us send GETs
to the routers and admin pages of our own network. A server on a local network may still
redirect anywhere (a tracker on the LAN, our own loopback tests).

The other rules of libtorrent's ``ssrf_mitigation`` and its ``allow_idna`` are pure checks
here, which each client applies to every URL it requests (redirects included), by the URL
before connecting and by the address that answered before sending:

- a tracker on this machine (loopback, or the unspecified address a connection to
  ``0.0.0.0`` reaches) is asked only on a tracker's path (:func:`tracker_path_refusal`), so a
  torrent cannot have us GET the admin pages of the web services running beside us;
- a tracker URL carrying a parameter of our own announce (``info_hash``, ``port``...) is
  refused (:func:`tracker_query_refusal`): it would make the tracker see another request than
  ours;
- a web seed on a local network takes no query string (:func:`web_seed_query_refusal`): a
  file is fetched by its path, and a query is how web applications are driven;
- with ``allow_idna`` off, a host name with an internationalised label (``xn--``) is refused
  (:func:`idna_refusal`): ``xn--pypl-53dc.com`` can pass for ``paypal.com`` in a user's eyes.
  (A Unicode host name is refused by the URL parser whatever the setting.)

Each refusal's message names its rule, so a user can tell our policy from a failing server.

:class:`LowSpeed` is curl's low-speed rule (``CURLOPT_LOW_SPEED_LIMIT``/``_TIME``), pure: a
transfer is given up once fewer than ``limit`` bytes a second arrived on average over the last
``period`` seconds. :func:`http_exchange` applies it beside the silence timeout: a slow honest
server finishes, however long its answer takes, while a trickling one is cut within
``period`` seconds.
"""

from __future__ import annotations

import math
import re
import ssl
from collections import deque
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Final, Protocol
from urllib.parse import unquote, urljoin

import trio

from bip_handshake import PeerAddress, is_global_address
from bip_utracker import LocalProtocolError, shown_path

from ._http_response import HttpResponse, HttpResponseParser
from ._http_tracker_codec import HttpTrackerUrl, parse_http_tracker_url

__all__ = [
    "REDIRECTS",
    "TRACKER_PARAMETERS",
    "Exchange",
    "ExchangeError",
    "LowSpeed",
    "follow_redirects",
    "http_exchange",
    "idna_refusal",
    "is_idna",
    "is_this_host",
    "literal_address",
    "tracker_path_refusal",
    "tracker_query_refusal",
    "web_seed_query_refusal",
]

IPAddress = IPv4Address | IPv6Address

_RECEIVE_SIZE: Final = 64 * 1024
REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
"""The statuses that send us elsewhere with a ``Location`` (RFC 9110, section 15.4)."""
TRACKER_PARAMETERS: Final = frozenset(
    {"info_hash", "peer_id", "port", "uploaded", "downloaded", "left", "corrupt", "key", "event"}
)
"""The announce parameters a tracker URL may not carry itself (libtorrent's list): ours
follow them, and a tracker reading the first of a repeated name would see another announce."""
_LOW_SPEED_BUCKETS: Final = 32  # the period is counted in this many slices: bounded memory
# A tracker's path on this machine: its first or last segment is "announce" (or "scrape" for
# a scrape), with an extension at most ("announce.php"), as trackers name it.
_TRACKER_SEGMENT: Final = re.compile(r"(announce|scrape)(\.[A-Za-z0-9]{1,8})?")


class Exchange(Protocol):
    """One request to a URL and request target, its response and who answered; with
    ``global_only``, refused (an :class:`ExchangeError`) before the request is sent if the
    host that accepted the connection is not global (:func:`http_exchange`)."""

    async def __call__(
        self, url: HttpTrackerUrl, target: str, *, global_only: bool
    ) -> tuple[HttpResponse, PeerAddress]: ...


class ExchangeError(Exception):
    """The exchange failed below HTTP (connecting, TLS, the connection dropped, silence).

    Attributes:
        message: for a failed connection the whole message ("cannot connect to
            HOST: ..."), otherwise the reason alone, for the caller to prefix.
        connecting: whether the connection itself could not be made.
    """

    def __init__(self, message: str, *, connecting: bool) -> None:
        super().__init__(message)
        self.message = message
        self.connecting = connecting


def _address_of(stream: trio.SocketStream) -> PeerAddress:
    """The address that answered; ``0.0.0.0:0`` if the socket cannot say (a scoped IPv6
    address has no compact form)."""
    try:
        name = stream.socket.getpeername()
        return PeerAddress(ip_address(name[0]), int(name[1])).normalized()
    except (OSError, ValueError, TypeError, IndexError):
        return PeerAddress(IPv4Address(0), 0)


async def http_exchange(
    url: HttpTrackerUrl,
    request: bytes,
    parser: HttpResponseParser,
    *,
    tls_context: Callable[[], ssl.SSLContext],
    local_address: str | None = None,
    connect_timeout: float | None = None,
    silence_timeout: float | None = None,
    global_only: bool = False,
    check_address: Callable[[IPAddress], None] | None = None,
    low_speed: tuple[int, float] | None = None,
) -> tuple[HttpResponse, PeerAddress]:
    """Send ``request`` to ``url``'s host and return the response ``parser`` read, and who answered.

    With ``global_only`` the connection is closed before anything is sent unless the address
    that accepted it is global (:func:`~bip_handshake.is_global_address`): a redirect from the
    Internet into a local network, through a host name that resolves there.
    ``check_address`` is then called with that address (IPv4-mapped IPv6 as IPv4): what it
    raises refuses the exchange, the connection closed before a byte of the request is sent.
    ``low_speed`` is ``(limit, period)``: the exchange fails once fewer than ``limit`` bytes a
    second arrived on average over the last ``period`` seconds (:class:`LowSpeed`, counted
    from when the request is sent).

    Raises:
        ExchangeError: the connection could not be made (within ``connect_timeout``), was to
            a host that is not global when ``global_only``, TLS failed, the connection
            broke, nothing arrived for ``silence_timeout`` seconds, or the answer came slower
            than ``low_speed`` allows.
        MalformedTrackerResponseError: the response is not valid HTTP (from the parser).
        Exception: what ``check_address`` raises.
    """
    tcp: trio.SocketStream | None = None
    with trio.move_on_after(connect_timeout if connect_timeout is not None else float("inf")):
        try:
            tcp = await trio.open_tcp_stream(url.host, url.port, local_address=local_address)
        except OSError as error:
            reason = error.strerror or str(error) or type(error).__name__
            raise ExchangeError(
                f"cannot connect to {url.host_header}: {reason}", connecting=True
            ) from None
    if tcp is None:
        raise ExchangeError(
            f"no connection to {url.host_header} within {connect_timeout:g} s", connecting=True
        )
    address = _address_of(tcp)
    try:
        if global_only and not is_global_address(address.host):
            raise ExchangeError(
                f"{url.host_header} is not on the Internet ({address.host}): a server there "
                "cannot redirect us into a local network",
                connecting=True,
            )
        if check_address is not None:
            check_address(address.host)
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    stream: trio.abc.Stream = tcp
    try:
        if url.tls:
            stream = trio.SSLStream(
                tcp, tls_context(), server_hostname=url.host, https_compatible=True
            )
        await stream.send_all(request)
        rate = None if low_speed is None else LowSpeed(*low_speed, now=trio.current_time())
        while parser.response is None:
            data = await _receive(stream, silence_timeout, rate)
            if rate is not None:
                rate.received(len(data), trio.current_time())
            if data:
                parser.receive_data(data)
            else:
                parser.receive_eof()
        return parser.response, address
    except (trio.BrokenResourceError, OSError, ssl.SSLError) as error:
        cause = error.__cause__ if error.__cause__ is not None else error
        raise ExchangeError(str(cause) or type(cause).__name__, connecting=False) from None
    finally:
        await trio.aclose_forcefully(stream)


async def _receive(
    stream: trio.abc.Stream, silence_timeout: float | None, rate: LowSpeed | None
) -> bytes | bytearray:
    """The next bytes of ``stream`` (empty at its end), within the silence timeout and for as
    long as the low-speed rule allows."""
    deadline = math.inf if silence_timeout is None else trio.current_time() + silence_timeout
    if rate is not None:
        deadline = min(deadline, rate.deadline())
    with trio.move_on_at(deadline):
        return await stream.receive_some(_RECEIVE_SIZE)
    if silence_timeout is None or (rate is not None and rate.too_slow(trio.current_time())):
        assert rate is not None  # nothing else sets a deadline
        raise ExchangeError(
            f"slower than {rate.limit} bytes/s over {rate.period:g} s", connecting=False
        )
    raise ExchangeError(f"silent for {silence_timeout:g} s", connecting=False)


async def follow_redirects(
    url: HttpTrackerUrl,
    target: str,
    exchange: Exchange,
    *,
    max_redirects: int,
    error: Callable[[str], Exception],
    ssrf_mitigation: bool = True,
) -> tuple[HttpResponse, PeerAddress, HttpTrackerUrl]:
    """Run ``exchange(url, target)``, then follow the redirects it answers, at most
    ``max_redirects`` of them.

    A ``Location`` is resolved against the URL that sent it and requested as given (its
    own query, none of ours: ``target`` is only the first request's). Returns the first
    answer that is not a redirect, who sent it, and the URL it came from.

    Once a global address answered (:func:`~bip_handshake.is_global_address`), the redirects
    after it may lead to global hosts only: an IP literal that is not is refused here, and a
    host name is requested with ``global_only`` (refused once connected, before the request is
    sent). Not so with ``ssrf_mitigation`` false (libtorrent's switch for all its rules).

    Raises:
        Exception: what ``error(message)`` makes, for a redirect without a ``Location``,
            to a URL that is not ``http://`` or ``https://`` (or that
            :func:`parse_http_tracker_url` refuses), from a global address to a host that
            is not, back to a URL already requested, or one redirect too many.
        ExchangeError, MalformedTrackerResponseError: from ``exchange``, as it raises them.
    """
    seen = {(url.tls, url.host_header, target)}
    global_only = False
    for _ in range(max_redirects + 1):
        response, address = await exchange(url, target, global_only=global_only)
        if response.status not in REDIRECTS:
            return response, address, url
        # Sticky: a global server redirecting through a local one to a third host is still
        # a global server choosing where we go.
        global_only = global_only or (ssrf_mitigation and is_global_address(address.host))
        location = response.header("location")
        if not location:
            raise error(f"HTTP {response.status} from {url.shown} names no Location")
        try:
            url = parse_http_tracker_url(urljoin(url.url, location))
        except (LocalProtocolError, ValueError) as refused:
            # The parser's message keeps a passkey and credentials out (shown URLs only).
            raise error(f"{url.shown} redirects to a URL we do not follow: {refused}") from None
        if global_only and _is_local_literal(url.host):
            raise error(f"a redirect from the Internet into a local network: {url.shown:.200}")
        target = url.target
        where = (url.tls, url.host_header, target)
        if where in seen:
            raise error(f"a redirect loop back to {url.shown:.200}")
        seen.add(where)
    raise error(f"more than {max_redirects} redirects")


def _is_local_literal(host: str) -> bool:
    """Whether a URL's host is an IP address that is not global (a name: not known yet)."""
    try:
        return not is_global_address(ip_address(host))
    except ValueError:
        return False


# -- the low-speed rule ------------------------------------------------------------------------


class LowSpeed:
    """curl's low-speed rule for one transfer, pure: too slow once fewer than ``limit`` bytes a
    second arrived on average over the last ``period`` seconds (and ``period`` seconds have
    passed since ``now``, its start). Time is an argument; nothing is read from a clock.

    The bytes are counted in slices of ``period / 32`` seconds, so its memory is bounded
    whatever the transfer's length, and its judgement is exact to a slice: a slice partly in
    the window counts whole (in the transfer's favour).

    Args:
        limit: bytes a second, 0 or more (0: never too slow).
        period: seconds, more than 0.
        now: when the transfer starts.

    >>> rule = LowSpeed(1000, 10.0, now=0.0)
    >>> rule.received(12_000, 5.0)
    >>> rule.too_slow(10.0), rule.too_slow(16.0)
    (False, True)
    """

    __slots__ = ("_buckets", "_start", "_width", "limit", "period")

    def __init__(self, limit: int, period: float, *, now: float) -> None:
        self.limit = limit
        self.period = period
        self._start = now
        self._width = period / _LOW_SPEED_BUCKETS
        self._buckets: deque[list[float]] = deque()  # [slice start, bytes], oldest first

    def received(self, size: int, now: float) -> None:
        """Count ``size`` bytes arrived at ``now``."""
        start = math.floor(now / self._width) * self._width
        if self._buckets and self._buckets[-1][0] >= start:
            self._buckets[-1][1] += size
        else:
            self._buckets.append([start, float(size)])
        # Slices out of the window for good are forgotten.
        while self._buckets and self._buckets[0][0] + self._width + self.period <= now:
            self._buckets.popleft()

    def deadline(self) -> float:
        """When the transfer is too slow if nothing more arrives (``inf`` with a limit of 0)."""
        if self.limit <= 0:
            return math.inf
        earliest = self._start + self.period
        needed = self.limit * self.period
        left = sum(size for _, size in self._buckets)
        if left < needed:
            return earliest
        for start, size in self._buckets:
            left -= size
            if left < needed:  # once this slice leaves the window
                return max(earliest, start + self._width + self.period)
        return earliest  # pragma: no cover - the last slice leaving leaves 0 < needed

    def too_slow(self, now: float) -> bool:
        """Whether the transfer is too slow at ``now``."""
        return now >= self.deadline()


# -- libtorrent's ssrf_mitigation and allow_idna rules -------------------------------------------


def is_idna(host: str) -> bool:
    """Whether a host name is internationalised: a label in the ``xn--`` form, or any character
    that is not ASCII (libtorrent's ``is_idna``, which sees only the first kind).

    >>> is_idna("xn--bcher-kva.example"), is_idna("XN--p1ai"), is_idna("tracker.example")
    (True, True, False)
    """
    if not host.isascii():
        return True
    return any(label[:4].lower() == "xn--" for label in host.split("."))


def idna_refusal(host: str) -> str | None:
    """Why ``allow_idna`` off refuses ``host``, or None."""
    if not is_idna(host):
        return None
    return (
        f"refused with allow_idna off: {host[:80]!r} is an internationalised host name, "
        "which could pass for another"
    )


def literal_address(host: str) -> IPAddress | None:
    """A URL's host as an address if it is an IP literal (IPv4-mapped IPv6 as IPv4), else None."""
    try:
        address = ip_address(host)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_this_host(address: IPAddress) -> bool:
    """Whether a connection to ``address`` reaches this machine: loopback, or unspecified
    (a connection to ``0.0.0.0`` or ``::`` goes to the local host)."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


def _query_names(target: str) -> list[str]:
    """The parameter names of a request target's query, decoded and in lower case."""
    query = target.partition("?")[2]
    return [unquote(field.partition("=")[0]).lower() for field in query.split("&") if field]


def tracker_query_refusal(target: str) -> str | None:
    """Why ``ssrf_mitigation`` refuses a tracker URL's request target (before our query is
    added) for carrying a parameter of our own announce, or None.

    >>> tracker_query_refusal("/announce?passkey=ab") is None
    True
    >>> tracker_query_refusal("/announce?INFO_HASH=x")[:40]
    'refused by ssrf_mitigation: the tracker '
    """
    for name in _query_names(target):
        if name in TRACKER_PARAMETERS:
            return (
                f"refused by ssrf_mitigation: the tracker URL carries {name!r:.40} itself, a "
                "parameter of the announce we add"
            )
    return None


def tracker_path_refusal(target: str, address: IPAddress | str, *, scrape: bool) -> str | None:
    """Why ``ssrf_mitigation`` refuses to ask a tracker on this machine (at ``address``) for
    ``target``, or None: its path's first or last segment must be ``announce`` (``scrape``
    for a scrape), with an extension at most (``announce.php``), and no segment ``.`` or
    ``..``, which a server would resolve to another path.

    libtorrent's rule asks that the path start with ``/announce``; this one also takes a
    private tracker's ``/PASSKEY/announce``, and refuses ``/announce/../admin``.

    >>> tracker_path_refusal("/x/announce.php?k=1", "127.0.0.1", scrape=False) is None
    True
    >>> tracker_path_refusal("/admin", "127.0.0.1", scrape=False)[:50]
    'refused by ssrf_mitigation: a tracker on this mach'
    """
    path = target.partition("?")[0]
    segments = path.split("/")[1:] or [""]
    wanted = "scrape" if scrape else "announce"
    decoded = [unquote(segment) for segment in segments]
    if not any(segment in (".", "..") for segment in decoded) and any(
        (match := _TRACKER_SEGMENT.fullmatch(segment)) is not None and match.group(1) == wanted
        for segment in (segments[0], segments[-1])
    ):
        return None
    return (
        f"refused by ssrf_mitigation: a tracker on this machine ({address}) is asked on a "
        f"/{wanted} path only, not {shown_path(path)[:80]!r}"
    )


def web_seed_query_refusal(target: str, address: IPAddress | str) -> str | None:
    """Why ``ssrf_mitigation`` refuses to ask a web seed on a local network (at ``address``)
    for ``target``, or None: a file is fetched by its path, and a query string is how web
    applications are driven.

    >>> web_seed_query_refusal("/f.bin", "10.0.0.2") is None
    True
    >>> web_seed_query_refusal("/f.bin?a=1", "10.0.0.2")[:45]
    'refused by ssrf_mitigation: a web seed on a l'
    """
    if "?" not in target:
        return None
    return (
        f"refused by ssrf_mitigation: a web seed on a local network ({address}) takes no "
        "query string"
    )
