"""One HTTP/1.1 request and its response over trio, TLS included, and the redirects after it.

The transport the HTTP tracker client and the web seed client share: connect (with
an optional bound, from an optional local address of each IP family: :func:`local_sources`),
wrap in TLS for ``https://``, send the request, feed what arrives to a sans-IO
:class:`~._http_response.HttpResponseParser` (optionally bounding every silence), close the
stream on every path
(:func:`http_exchange`). Failures below HTTP come out as one :class:`ExchangeError`,
which each client words as its own error; a malformed response is the parser's error
and passes through.

:func:`follow_redirects` owns the redirect loop both clients run around their exchanges:
the count, loop detection, relative ``Location`` resolution, and the schemes a redirect
may lead to (``http://`` and ``https://`` only, as :func:`parse_http_tracker_url`
accepts). Each client gives its own limit, its own exchange and its own error type. A
``Location`` sent with raw bytes outside printable ASCII (a UTF-8 path, as many redirectors
send) is requested with each such byte percent-escaped, as curl and browsers do
(:func:`location_reference`); one holding a control byte (0x00-0x1f, 0x7f) is refused, as
curl refuses it.

A server on the Internet cannot send us into a local network (libtorrent's
``ssrf_mitigation``): once a global address has answered, a redirect to a host that is not
global (loopback, private, link-local, ...) is refused, by its IP literal before any
connection, and for a host name once connected, before a byte of the request is sent. A
URL from a ``.torrent`` anyone can make would otherwise let its server have us send GETs
to the routers and admin pages of our own network. A server on a local network may still
redirect anywhere (a tracker on the LAN, our own loopback tests).

Through a SOCKS5 proxy the rules are applied before the proxy is asked to connect (the
target hears nothing of a refused request). A name the proxy resolves (``socks5h://``)
has no address we can judge, and the proxy usually runs on our own machine (``ssh -D``,
microsocks), where its ``localhost`` is ours: the name itself is judged
(:func:`is_local_name`). ``localhost`` and ``*.localhost`` are this machine, names without a
dot and those of the local-use domains are local (refused where a global host is wanted),
and every such request is held to the rules for a server on this machine (a tracker's
path, a web seed without a query). A server we could not judge counts as global for the
redirect rule (unless its name is local): a redirect from it into a local network is
refused as one from the Internet.

The pure rules both clients apply besides (libtorrent's other ``ssrf_mitigation`` rules,
``allow_idna``, curl's low-speed rule) are in :mod:`._http_rules`.
"""

from __future__ import annotations

import math
import re
import ssl
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, ip_address
from typing import Final, Protocol
from urllib.parse import quote_from_bytes, urljoin

import trio

from bip._describe import safe_text
from bip_handshake import (
    PeerAddress,
    ProxyConfig,
    is_global_address,
    local_addresses_by_family,
    open_socks5_stream,
    open_tcp_stream_from,
)
from bip_utracker import LocalProtocolError

from ._http_response import HttpResponse, HttpResponseParser
from ._http_rules import IPAddress, LowSpeed
from ._http_tracker_codec import HttpTrackerUrl, parse_http_tracker_url

__all__ = [
    "REDIRECTS",
    "UNKNOWN_ANSWERER",
    "Exchange",
    "ExchangeError",
    "follow_redirects",
    "http_exchange",
    "is_local_name",
    "is_this_host_name",
    "local_sources",
    "location_reference",
]

_RECEIVE_SIZE: Final = 64 * 1024
REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
"""The statuses that send us elsewhere with a ``Location`` (RFC 9110, section 15.4)."""
UNKNOWN_ANSWERER: Final = PeerAddress(IPv4Address(0), 0)
"""Who answered when we cannot know: a name a SOCKS5 proxy resolved (or a socket that cannot
say)."""
_THIS_HOST: Final = IPv4Address("127.0.0.1")
"""The address a name of this machine is judged as (``localhost``)."""
_UNJUDGED: Final = IPv4Address(0)
"""The address another name the proxy resolves is judged as: the unspecified address, which
reaches this machine (held to the rules for a server here) and is not global."""
_LOCAL_DOMAINS: Final = (".local", ".home.arpa", ".internal")
"""Domains of local networks only: mDNS (RFC 6762), home networks (RFC 8375), and ICANN's
private-use ``.internal``."""
_AUTHORITY: Final = re.compile(rb"(?:[A-Za-z][A-Za-z0-9+.-]*:)?//[^/?#]*")
"""The scheme and authority that open an absolute or scheme-relative URL (RFC 3986, 4.2)."""
_URL_GRAPHIC: Final = "".join(map(chr, range(0x21, 0x7F)))
"""The bytes a ``Location``'s path, query and fragment keep as they are: printable ASCII (the
URL parser escapes those it does not take as they are, ``%`` kept to keep the escapes)."""
_CONTROL: Final = re.compile("[\x00-\x1f\x7f]")
"""A control byte in a ``Location`` (as the parser decodes the wire, latin-1): curl's URL
parser refuses it rather than escape it, and so do we (no server means a URL with one)."""


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
    """The address that answered (a scoped IPv6 address without its scope, which a compact
    address cannot hold); :data:`UNKNOWN_ANSWERER` if the socket cannot say."""
    try:
        name = stream.socket.getpeername()
        host = ip_address(str(name[0]).partition("%")[0])
        return PeerAddress(host, int(name[1])).normalized()
    except (OSError, ValueError, TypeError, IndexError):
        return UNKNOWN_ANSWERER


def local_sources(local_address: str | Sequence[str] | None) -> dict[int, str | None] | None:
    """The IP versions (4, 6) an HTTP connection may be made in, each with the address it
    leaves from (None: the system picks), from a client's ``local_address``, as
    :func:`~bip_handshake.local_addresses_by_family` reads it: ``None`` (every family, the
    system picks: returned as None), one IP address, or several (the session's listen
    address of each family: ``("10.8.0.2", "fd00::2")``), the first of a family counting
    (an unspecified one: the system picks in its family; an IPv4-mapped one is IPv4). A
    family with none listed is not connected in, as with one address before: trio's
    ``open_tcp_stream`` cannot bind an IPv4 address to an IPv6 socket, and a session bound to
    one family's address (a VPN's) has its trackers and web seeds see that address, never one
    of the other family the system would pick (the UDP tracker client has no socket there).

    The connection itself is :func:`~bip_handshake.open_tcp_stream_from`'s (the other
    family skipped), which takes the addresses as text.

    >>> local_sources(("fd00::2", "10.8.0.2", "fd00::3")), local_sources("0.0.0.0")
    ({6: 'fd00::2', 4: '10.8.0.2'}, {4: None})

    Raises:
        ValueError: ``local_address`` is not an IP address, nor a sequence of them (an empty
            one included: no family could be connected in): the parser's, ``local_address
            must be an IP address ...``.
    """
    # The parser's ValueError as it is: it names the setting and says what is wrong with it
    # (the HTTP tracker client's LocalProtocolError repeats it).
    found = local_addresses_by_family(local_address)
    if found is None:
        return None
    return {
        version: None if address is None else str(address) for version, address in found.items()
    }


def is_this_host_name(host: str) -> bool:
    """Whether a host name names this machine: ``localhost`` or ``*.localhost`` (RFC 6761),
    in any case, with or without the final dot.

    >>> is_this_host_name("LOCALHOST."), is_this_host_name("app.localhost")
    (True, True)
    >>> is_this_host_name("localhost.example")
    False
    """
    name = host.lower().removesuffix(".")
    return name == "localhost" or name.endswith(".localhost")


def is_local_name(host: str) -> bool:
    """Whether a host name can only name a host of a local network (or this machine): a name
    of this machine (:func:`is_this_host_name`), a name without a dot (resolved with the
    local search domains: ``router``, ``nas``), or one of a local-use domain (``.local``,
    ``.home.arpa``, ``.internal``).

    >>> [is_local_name(host) for host in ("nas", "printer.local", "tracker.example")]
    [True, True, False]
    """
    name = host.lower().removesuffix(".")
    return (
        is_this_host_name(name)
        or "." not in name
        or any(name.endswith(domain) for domain in _LOCAL_DOMAINS)
    )


def _judge(
    url: HttpTrackerUrl,
    host: IPAddress,
    *,
    global_only: bool,
    check_address: Callable[[IPAddress], None] | None,
) -> None:
    """Refuse the exchange with ``url`` at ``host`` as the rules say (see :func:`http_exchange`)."""
    if global_only and not is_global_address(host):
        raise ExchangeError(
            f"{url.host_header} is not on the Internet ({host}): a server there "
            "cannot redirect us into a local network",
            connecting=True,
        )
    if check_address is not None:
        check_address(host)


def _judge_name(
    url: HttpTrackerUrl,
    name: str,
    *,
    global_only: bool,
    check_address: Callable[[IPAddress], None] | None,
) -> None:
    """Refuse the exchange with ``url`` at a ``name`` the proxy resolves, judged by the name:
    as this machine for ``localhost``, as an unknown host of this machine otherwise (the
    stricter rules), and not global when the name is local."""
    if global_only and is_local_name(name):
        raise ExchangeError(
            f"{url.host_header} is a local name (the proxy resolves it): a server on the "
            "Internet cannot redirect us into a local network",
            connecting=True,
        )
    if check_address is not None:
        check_address(_THIS_HOST if is_this_host_name(name) else _UNJUDGED)


async def _open_proxied(
    url: HttpTrackerUrl,
    proxy: ProxyConfig,
    *,
    global_only: bool,
    check_address: Callable[[IPAddress], None] | None,
    local_address: str | Sequence[str] | None,
) -> tuple[trio.SocketStream, PeerAddress]:
    """A stream to ``url``'s host through ``proxy`` (connected to from ``local_address``'s
    address of the proxy's family, if it has one), and who answers (the address the proxy was
    asked for, :data:`UNKNOWN_ANSWERER` for a name it resolved). Every target is judged before
    the proxy is asked for it."""
    answered = [UNKNOWN_ANSWERER]
    refusal: list[BaseException] = []  # what the rules raised, told from the proxy's errors

    def judge(target: IPAddress | str) -> None:
        try:
            if isinstance(target, str):
                answered[0] = UNKNOWN_ANSWERER
                _judge_name(url, target, global_only=global_only, check_address=check_address)
            else:
                answered[0] = PeerAddress(target, url.port).normalized()
                _judge(url, answered[0].host, global_only=global_only, check_address=check_address)
        except BaseException as error:
            refusal.append(error)
            raise

    try:
        # The caller's move_on_after bounds it.
        tcp = await open_socks5_stream(
            proxy,
            url.host,
            url.port,
            timeout=math.inf,
            check_target=judge,
            local_address=local_address,
        )
    except ValueError as error:
        if refusal and error is refusal[-1]:
            raise
        # A name SOCKS5 cannot carry (over 255 bytes).
        raise ExchangeError(
            f"cannot connect to {url.host_header}: {error}", connecting=True
        ) from None
    return tcp, answered[0]


async def http_exchange(
    url: HttpTrackerUrl,
    request: bytes,
    parser: HttpResponseParser,
    *,
    tls_context: Callable[[], ssl.SSLContext],
    local_address: str | Sequence[str] | None = None,
    connect_timeout: float | None = None,
    silence_timeout: float | None = None,
    global_only: bool = False,
    check_address: Callable[[IPAddress], None] | None = None,
    low_speed: tuple[int, float] | None = None,
    proxy: ProxyConfig | None = None,
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

    ``local_address`` is where the connection leaves from (:func:`local_sources`): one IP
    address, or one of each family (``("10.8.0.2", "fd00::2")``), the host's addresses tried
    in those families only, each from its family's address (``None``: any family, the system
    picks the source).

    With a SOCKS5 ``proxy`` the connection goes through it (the connection to the proxy leaves
    from ``local_address``'s address of the proxy's family; the system picks when it has none;
    TLS runs over the proxied stream), and the rules judge each target before the proxy
    is asked to connect to it: an IP literal, or each address the name resolves to here
    (``socks5://``). A name the proxy resolves (``socks5h://``) has no address we know: the
    name is judged instead (:func:`is_local_name`: a local one is not global), and
    ``check_address`` is given ``127.0.0.1`` for a name of this machine, ``0.0.0.0`` for any
    other, so that the rules for a server on this machine hold (the proxy usually runs
    here); :data:`UNKNOWN_ANSWERER` is returned as who answered.

    Raises:
        ExchangeError: the connection could not be made (within ``connect_timeout``; to a
            host without an address in a family of ``local_address``), was to a host that is
            not global when ``global_only``, TLS failed, the connection
            broke, nothing arrived for ``silence_timeout`` seconds, or the answer came slower
            than ``low_speed`` allows.
        MalformedTrackerResponseError: the response is not valid HTTP (from the parser).
        ValueError: ``local_address`` is not an IP address, nor a sequence of them.
        Exception: what ``check_address`` raises.
    """
    sources = local_sources(local_address)
    tcp: trio.SocketStream | None = None
    address = UNKNOWN_ANSWERER
    with trio.move_on_after(connect_timeout if connect_timeout is not None else float("inf")):
        try:
            if proxy is not None:
                tcp, address = await _open_proxied(
                    url,
                    proxy,
                    global_only=global_only,
                    check_address=check_address,
                    local_address=local_address,
                )
            elif sources is None:
                tcp = await trio.open_tcp_stream(url.host, url.port)
            else:
                tcp = await open_tcp_stream_from(url.host, url.port, sources)
        except OSError as error:
            reason = error.strerror or str(error) or type(error).__name__
            raise ExchangeError(
                f"cannot connect to {url.host_header}: {reason}", connecting=True
            ) from None
    if tcp is None:
        raise ExchangeError(
            f"no connection to {url.host_header} within {connect_timeout:g} s", connecting=True
        )
    if proxy is None:
        # Judged once connected: the address a name resolved to is known only now.
        address = _address_of(tcp)
        try:
            _judge(url, address.host, global_only=global_only, check_address=check_address)
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
    # Without a silence timeout only the rate set the deadline, and nothing arrived since:
    # too_slow holds then.
    if rate is not None and rate.too_slow(trio.current_time()):
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
    own query, none of ours: ``target`` is only the first request's), its raw bytes outside
    printable ASCII percent-escaped each on its own (:func:`location_reference`). Returns the first
    answer that is not a redirect, who sent it, and the URL it came from.

    Once a global address answered (:func:`~bip_handshake.is_global_address`), the redirects
    after it may lead to global hosts only: an IP literal that is not is refused here, and a
    host name is requested with ``global_only`` (refused once connected, before the request is
    sent). An answer from an address we do not know (:data:`UNKNOWN_ANSWERER`: a name the
    proxy resolved) counts as global unless the URL's host is a local name
    (:func:`is_local_name`) or a local IP literal. Not so with ``ssrf_mitigation`` false
    (libtorrent's switch for all its rules).

    Raises:
        Exception: what ``error(message)`` makes, for a redirect without a ``Location``,
            with a control byte in its ``Location``, to a URL that is not ``http://`` or
            ``https://`` (or that :func:`parse_http_tracker_url` refuses), from a global
            address to a host that is not, back to a URL already requested, or one redirect
            too many.
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
        global_only = global_only or (ssrf_mitigation and _maybe_global(address, url.host))
        location = response.header("location")
        if not location:
            raise error(f"HTTP {response.status} from {url.shown} names no Location")
        if (control := _CONTROL.search(location)) is not None:
            # Only the byte is told: the rest may hold a passkey, the byte itself escaped.
            raise error(
                f"{url.shown} redirects to a URL we do not follow: its Location holds the"
                f" control byte {safe_text(control.group())}"
            )
        try:
            url = parse_http_tracker_url(urljoin(url.url, location_reference(location)))
        except (LocalProtocolError, ValueError) as refused:
            # The parser's message keeps a passkey and credentials out (shown URLs only);
            # urljoin's may quote the server's raw netloc: its controls are escaped.
            reason = safe_text(str(refused))
            raise error(f"{url.shown} redirects to a URL we do not follow: {reason}") from None
        if global_only and _is_local_literal(url.host):
            raise error(f"a redirect from the Internet into a local network: {url.shown:.200}")
        target = url.target
        where = (url.tls, url.host_header, target)
        if where in seen:
            raise error(f"a redirect loop back to {url.shown:.200}")
        seen.add(where)
    raise error(f"more than {max_redirects} redirects")


def location_reference(value: str) -> str:
    """A ``Location`` header's value (latin-1, as the response parser decodes the wire) as a
    URL reference to resolve: each byte of its path, query and fragment that is not printable
    ASCII percent-escaped on its own, the escapes already there kept.

    Many redirectors send a non-ASCII path raw, in UTF-8: its bytes are what curl and
    browsers escape and request (``/caf%C3%A9.bin``). Percent-encoding the decoded text as
    UTF-8 instead would encode each byte twice (``/caf%C3%83%C2%A9.bin``), a file no server
    has. The scheme and host are left to the URL parser, which refuses a host that is not
    ASCII; they are given in UTF-8 (if they are) so that its message names the host sent.

    >>> location_reference("/files/caf\xc3\xa9 2.bin?q=\xe9#x")
    '/files/caf%C3%A9%202.bin?q=%E9#x'
    >>> location_reference("http://h\xc3\xa9.example/a%20b")
    'http://hé.example/a%20b'
    """
    try:
        wire = value.encode("latin-1")
    except UnicodeEncodeError:
        # Not from the wire (whose values the parser decodes as latin-1): text, sent as UTF-8.
        wire = value.encode("utf-8", "surrogatepass")
    authority = _AUTHORITY.match(wire)
    split = 0 if authority is None else authority.end()
    head = wire[:split].decode("utf-8", "replace")
    return head + quote_from_bytes(wire[split:], safe=_URL_GRAPHIC)


def _maybe_global(address: PeerAddress, host: str) -> bool:
    """Whether the server at ``host`` that answered from ``address`` may be on the Internet:
    its address is global or, unknown, its URL's host is neither a local literal nor a local
    name (a server we cannot judge is not trusted to be local)."""
    if address != UNKNOWN_ANSWERER:
        return is_global_address(address.host)
    try:
        return is_global_address(ip_address(host))
    except ValueError:
        return not is_local_name(host)


def _is_local_literal(host: str) -> bool:
    """Whether a URL's host is an IP address that is not global (a name: not known yet)."""
    try:
        return not is_global_address(ip_address(host))
    except ValueError:
        return False
