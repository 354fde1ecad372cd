"""SOCKS5 over trio: proxy settings, a proxied TCP stream, and a peer dialer through a proxy.

libtorrent can send its peer connections and its tracker and web seed requests through a
SOCKS5 proxy (its ``proxy_type``, ``proxy_hostname``, ``proxy_port``, ``proxy_username``,
``proxy_password`` and ``proxy_hostnames`` settings). Here:

- :func:`parse_proxy_url` reads ``socks5://[user:password@]host[:port]`` (port 1080 unless
  told, as curl) into a frozen :class:`ProxyConfig`; ``socks5h://`` has the proxy resolve
  host names (curl's scheme, libtorrent's ``proxy_hostnames``), ``socks5://`` resolves
  them here and gives the proxy an address;
- :func:`open_socks5_stream` connects to the proxy, has it connect to a target
  (:class:`~bip_handshake._socks.Socks5Client` speaks the protocol) and returns the TCP stream
  to the proxy, positioned after the proxy's reply: what follows is the target's. Every
  failure closes the socket and raises a :class:`~bip_handshake._socks.SocksError` (an
  :class:`OSError`), the proxy's silence included (``timeout``);
- :class:`SocksDialer` is a :data:`~bip_handshake.Dialer` for the
  :class:`~bip_handshake.Handshaker`: every peer is dialled over TCP through the proxy.

Both connect to the proxy from a ``local_address`` when given one (``--bind``), as
libtorrent binds its connections to the proxy to its ``outgoing_interfaces``: a user bound to
one interface (a VPN's) has them leave by it, and a proxy that relays UDP only for the
control connection's host (Dante, RFC 1928's advice) sees that host where our UDP socket is.
Given several (one per family: ``ClientConfig(listen=...)`` with a host of each), each
connection leaves from the one of the family of the proxy's address it connects to. That
choice per family is bip's own: libtorrent rotates through its ``outgoing_interfaces`` one
connection after another whatever the destination's family, and a connection given an
address of the other family fails. A proxy named by an IPv4-mapped address
(``socks5://[::ffff:127.0.0.1]``, or a name resolving to one) is reached over IPv4, from the
IPv4 address, on an IPv4 socket (an IPv6 one may be IPv6-only: Windows, OpenBSD).

CONNECT carries TCP only; UDP goes through the proxy's relay with SOCKS5's UDP ASSOCIATE
(:mod:`bip_handshake._socks_udp`). Connections peers make to us do not go through the proxy.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Final
from urllib.parse import quote, unquote, urlsplit

import trio

from ._compact import PeerAddress
from ._errors import HandshakeError
from ._socks import Socks5Client, SocksError, SocksProtocolError, SocksReplyError, _field
from ._tcp_from import (
    _MAX_ANSWERS,
    Target,
    _connect_staggered,
    _happy_order,
    _resolve_targets,
    _Resolved,
    local_addresses_by_family,
)
from ._tcp_from import _MAX_TARGETS as _TCP_MAX_TARGETS

__all__ = [
    "DEFAULT_PROXY_PORT",
    "DEFAULT_SOCKS_TIMEOUT",
    "ProxyConfig",
    "ProxyConfigError",
    "SocksDialer",
    "SocksDialerStatistics",
    "open_socks5_stream",
    "parse_proxy_url",
    "resolve_proxy_target",
]

_log = logging.getLogger("bip_handshake.socks")

DEFAULT_PROXY_PORT: Final = 1080
"""The SOCKS port (RFC 1928), taken when a proxy URL names none, as curl does."""
DEFAULT_SOCKS_TIMEOUT: Final = 10.0
"""Seconds a :class:`SocksDialer`'s dial may take by default (the Handshaker's connect
timeout bounds it too)."""
_SCHEMES: Final = {"socks5": False, "socks5h": True}
"""Proxy URL schemes, and whether the proxy resolves host names with each."""
_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}")
"""A URL scheme (RFC 3986, section 3.1), of a sensible length."""
_MAX_TARGETS: Final = _TCP_MAX_TARGETS
"""Addresses of one host name tried at most, directly or through the proxy (each attempt
through it is a connection to the proxy): a direct connect's bound."""
_GAI_ERRNOS: Final[dict[int, int]] = {
    code: number
    for name, number in (("EAI_AGAIN", errno.EAGAIN), ("EAI_MEMORY", errno.ENOMEM))
    if (code := getattr(socket, name, None)) is not None
}
"""getaddrinfo's failure codes (``EAI_*``, not errnos) that have an errno of their own."""


class ProxyConfigError(HandshakeError, ValueError):
    """A proxy URL or :class:`ProxyConfig` that names no usable SOCKS5 proxy.

    A :class:`ValueError` too, as it always was. Its message never shows the password.
    """


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """A SOCKS5 proxy: where it is, our credentials, and who resolves host names.

    Its ``repr`` leaves the password out, and :attr:`url` shows none.

    >>> proxy = parse_proxy_url("socks5h://me:secret@127.0.0.1:9050")
    >>> proxy
    ProxyConfig(host='127.0.0.1', port=9050, username='me', remote_dns=True)
    >>> proxy.url
    'socks5h://me@127.0.0.1:9050'

    Attributes:
        host: the proxy's IP address or host name.
        port: the proxy's TCP port.
        username: RFC 1929's username (``None``: no authentication).
        password: RFC 1929's password (with a username only).
        remote_dns: the proxy resolves the targets' host names (``socks5h://``); otherwise
            they are resolved here and the proxy is given an address.

    Raises:
        ProxyConfigError: no host, a host name IDNA cannot encode (an empty label, as in ``a..b``,
            or one longer than 63 characters), a port outside 1..65535, a username without a
            password (or the reverse), or either empty or longer than 255 bytes in UTF-8.
    """

    host: str
    port: int = DEFAULT_PROXY_PORT
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    remote_dns: bool = False

    def __post_init__(self) -> None:
        """Refuse what cannot be sent to a proxy."""
        if not isinstance(self.host, str) or not self.host or len(self.host) > 255:
            raise ProxyConfigError(
                f"a proxy host is a non-empty name or address, not {self.host!r:.80}"
            )
        if _literal(self.host) is None:
            # trio's getaddrinfo first tries the name with Python's IDNA codec: one it
            # cannot encode (an empty or too long label) could never be resolved, refused
            # here rather than on every attempt. What IDNA 2008 alone refuses (trio's for
            # non-ASCII names) fails at resolution, a SocksError.
            try:
                self.host.encode("idna")
            except UnicodeError as error:
                raise ProxyConfigError(
                    f"a proxy host is an IP address or a name Python's IDNA codec can encode, "
                    f"not {self.host!r:.80} ({error})"
                ) from None
        port = self.port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 0xFFFF:
            raise ProxyConfigError(f"a proxy port is 1..65535, not {port!r}")
        if (self.username is None) != (self.password is None):
            raise ProxyConfigError("proxy credentials need both a username and a password")
        try:
            if self.username is not None:
                _field("username", self.username)
            if self.password is not None:
                _field("password", self.password)
        except ValueError as error:  # too long or empty: the message gives the length alone
            raise ProxyConfigError(str(error)) from None
        if not isinstance(self.remote_dns, bool):
            raise TypeError(f"remote_dns is a bool, not {self.remote_dns!r}")

    @property
    def address(self) -> str:
        """``host:port`` (an IPv6 host in brackets), for messages."""
        return _shown(self.host, self.port)

    @property
    def url(self) -> str:
        """The proxy as a URL, without the password (for logs and messages)."""
        scheme = "socks5h" if self.remote_dns else "socks5"
        user = "" if self.username is None else f"{quote(self.username, safe='')}@"
        return f"{scheme}://{user}{self.address}"


def parse_proxy_url(url: str) -> ProxyConfig:
    """The proxy a ``socks5://`` or ``socks5h://`` URL names.

    ``socks5://[user:password@]host[:port]``: the user and password are percent-decoded, an
    IPv6 host is in brackets, the port is 1080 unless given. ``socks5h://`` has the proxy
    resolve host names (remote DNS, as curl).

    >>> parse_proxy_url("socks5://[::1]")
    ProxyConfig(host='::1', port=1080, username=None, remote_dns=False)
    >>> parse_proxy_url("http://127.0.0.1:3128")
    Traceback (most recent call last):
    ...
    bip_handshake._socks_shell.ProxyConfigError: a proxy URL is socks5:// or socks5h://, not 'http://'

    Raises:
        ProxyConfigError: another scheme, no host, a bad port, a path, query or fragment, or
            credentials :class:`ProxyConfig` refuses. The message never shows the password.
    """
    if not isinstance(url, str):
        raise TypeError(f"a proxy URL is a str, not {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        # Whatever comes before a "://" that is no scheme could be credentials: not quoted.
        raise ProxyConfigError("a proxy URL is socks5:// or socks5h://, not a URL without a scheme")
    if scheme.lower() not in _SCHEMES:
        raise ProxyConfigError(
            f"a proxy URL is socks5:// or socks5h://, not {scheme[:20] + '://'!r}"
        )
    # A "/", "?" or "#" in the password ends the URL's authority there: the rest of the
    # password is then read as the port, a path, a query or a fragment. No message below
    # quotes any part of the URL (urlsplit's would quote that "port"), and an "@" after the
    # cut says how to write such a password.
    cut = min((index for mark in "/?#" if (index := rest.find(mark)) >= 0), default=len(rest))
    hint = " (percent-encode / ? # @ in the password)" if "@" in rest[cut:] else ""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ProxyConfigError(f"not a valid proxy URL: a malformed host{hint}") from None
    try:
        port = parts.port
    except ValueError:
        raise ProxyConfigError(f"not a valid proxy URL: the port is not 1..65535{hint}") from None
    host = parts.hostname
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProxyConfigError(
            f"a proxy URL is socks5://[user:password@]host[:port], nothing after{hint}"
        )
    if not host:
        raise ProxyConfigError(f"a proxy URL names no host{hint}")
    username = None if parts.username is None else unquote(parts.username)
    password = None if parts.password is None else unquote(parts.password)
    if username is not None and password is None:
        raise ProxyConfigError("a proxy URL with a username needs a password (user:password@)")
    return ProxyConfig(
        host=host,
        port=DEFAULT_PROXY_PORT if port is None else port,
        username=username,
        password=password,
        remote_dns=_SCHEMES[scheme.lower()],
    )


def _literal(host: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def _unmapped(address: IPv4Address | IPv6Address) -> IPv4Address | IPv6Address:
    """``address``, or the IPv4 address an IPv4-mapped IPv6 one (``::ffff:a.b.c.d``) embeds.

    >>> _unmapped(ip_address("::ffff:127.0.0.1")), _unmapped(ip_address("::1"))
    (IPv4Address('127.0.0.1'), IPv6Address('::1'))
    """
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _written(given: IPv4Address | IPv6Address | str) -> str:
    """For a message showing an address :func:`_unmapped` made IPv4: how it was written
    (`` (written ::ffff:10.0.0.1)``), so that the reader finds what they or the proxy
    wrote; empty for any other address (or a name).

    >>> _written(ip_address("::ffff:10.0.0.1")), _written("[::ffff:10.0.0.1]"), _written("::1")
    (' (written ::ffff:10.0.0.1)', ' (written ::ffff:10.0.0.1)', '')
    """
    address = _literal(given) if isinstance(given, str) else given
    if address is None or (mapped := _unmapped(address)) is address:
        return ""
    return f" (written ::ffff:{mapped})"  # as typed (Python 3.11 writes ::ffff:a00:1)


def _proxy_literal(host: str) -> IPv4Address | IPv6Address | None:
    """The proxy's ``host`` as the IP address to connect to, None for a name. An IPv4-mapped
    one (``socks5://[::ffff:127.0.0.1]``) is the IPv4 address it embeds: the proxy is reached
    over IPv4 (from the IPv4 ``--bind``, by an IPv4 UDP socket), as the system's IPv6 socket
    would reach it anyway, so that neither an IPv6 source address (ENETUNREACH) nor an
    IPv6-only socket is used for it.

    >>> _proxy_literal("::ffff:10.0.0.1"), _proxy_literal("[::1]"), _proxy_literal("proxy")
    (IPv4Address('10.0.0.1'), IPv6Address('::1'), None)
    """
    literal = _literal(host)
    return None if literal is None else _unmapped(literal)


def _specific_locals(
    local_address: str | Sequence[str] | None,
) -> dict[int, IPv4Address | IPv6Address]:
    """The dialers' addresses to connect from, by IP version (4, 6): those of
    :func:`~bip_handshake.local_addresses_by_family`, but for a family whose first address
    is unspecified (``0.0.0.0``, ``::``): the system picks in it, as in a family with none
    (the dialers connect in every family). An empty sequence is as None: no address to
    leave from.

    >>> [str(a) for a in _specific_locals(("fd00::2", "0.0.0.0", "10.8.0.2")).values()]
    ['fd00::2']

    Raises:
        ValueError: ``local_address`` is not an IP address, nor a sequence of them.
    """
    if (
        isinstance(local_address, Sequence)
        and not isinstance(local_address, str | bytes)  # "", b"": refused below
        and not local_address
    ):
        return {}
    found = local_addresses_by_family(local_address) or {}
    return {version: address for version, address in found.items() if address is not None}


async def resolve_proxy_target(
    proxy: ProxyConfig, host: str | IPv4Address | IPv6Address, port: int
) -> IPv4Address | IPv6Address | str:
    """What to ask ``proxy`` to connect to for ``host``: an IP address as itself; a host name
    as itself when the proxy resolves names (``socks5h://``), else the first address it
    resolves to here (:func:`open_socks5_stream` tries the others when the proxy cannot
    reach it).

    Raises:
        SocksError: the name could not be resolved (the resolver's error is the cause).
    """
    return (await _proxy_targets(proxy, host, port))[0]


async def _proxy_targets(
    proxy: ProxyConfig, host: str | IPv4Address | IPv6Address, port: int
) -> list[IPv4Address | IPv6Address | str]:
    """What to ask ``proxy`` to connect to for ``host``, in the order to try: one IP address or
    name, or the distinct addresses a name resolves to here, in the order a direct connect
    tries them (at most :data:`_MAX_TARGETS`, the first of the other family second:
    :func:`~bip_handshake._tcp_from._happy_order`).

    Raises:
        SocksError: the name could not be resolved (an invalid one too), or to no IP address.
    """
    if isinstance(host, IPv4Address | IPv6Address):
        return [host]
    literal = _literal(host)
    if literal is not None:
        return [literal]
    if proxy.remote_dns:
        return [host]
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:  # UnicodeError: a name IDNA cannot encode
        raise SocksError(
            f"cannot resolve {host!r:.80}: {_reason(error)}",
            errno_value=_resolution_errno(error),
        ) from error
    found: list[IPv4Address | IPv6Address] = []
    for family, _type, _proto, _name, sockaddr in infos[:_MAX_ANSWERS]:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = _literal(str(sockaddr[0]).partition("%")[0])
            if address is not None:
                found.append(address)
    if not found:
        raise SocksError(f"{host!r:.80} resolves to no IP address")
    # As a direct connect orders them: a name whose first 8 addresses are IPv6 still has its
    # IPv4 one asked for second (the proxy may have no IPv6 route). A mapped one is IPv4.
    ordered = _happy_order(found, lambda address: _unmapped(address).version)
    return list(ordered)  # as a list of the wider type


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if isinstance(error, UnicodeError):
        return f"not a host name IDNA can encode ({error})"
    return str(error) or type(error).__name__


def _resolution_errno(error: OSError | UnicodeError) -> int | None:
    """The errno of a failed name lookup, where one fits: the system's own (an ``EAI_SYSTEM``
    failure comes as a plain :class:`OSError`), EAGAIN for a temporary failure, ENOMEM; else
    None (an unknown or invalid name: no errno says that, and a gaierror's code is no errno).
    """
    if isinstance(error, socket.gaierror):
        code = error.errno
        return None if code is None else _GAI_ERRNOS.get(code)
    if isinstance(error, OSError):
        return error.errno
    return None


def _unresolved(proxy: ProxyConfig, error: OSError | UnicodeError) -> SocksError:
    """The :class:`SocksError` for a failed lookup of the proxy's name: the resolver's words,
    and its errno where one fits."""
    return SocksError(
        f"cannot resolve the proxy {proxy.host!r:.80}: {_reason(error)}",
        errno_value=_resolution_errno(error),
    )


async def open_socks5_stream(
    proxy: ProxyConfig,
    host: str | IPv4Address | IPv6Address,
    port: int,
    *,
    timeout: float,
    check_target: Callable[[IPv4Address | IPv6Address | str], None] | None = None,
    local_address: str | Sequence[str] | None = None,
) -> trio.SocketStream:
    """A TCP stream to ``host:port`` through ``proxy``, positioned after the proxy's reply.

    The host name is resolved here or by the proxy (:func:`resolve_proxy_target`). Resolved
    here, each of its addresses is tried in turn (at most 8) while the proxy answers that it
    cannot connect to one (a :class:`~bip_handshake._socks.SocksReplyError`), as a direct
    connect tries them. Nothing past the reply is read: the stream's next bytes are the
    target's.

    Args:
        proxy: the SOCKS5 proxy.
        host: the target: an IP address, or a host name.
        port: the target's port.
        timeout: seconds the whole of it may take (the name's resolution, the connect to the
            proxy, the negotiation); ``math.inf`` leaves the bound to the caller.
        check_target: called with each target before the proxy is asked for it (before we
            connect to the proxy for it): the IP address, or the name the proxy will resolve.
            What it raises is raised as is, nothing sent for that target: a caller's rules
            on where it may connect are applied before the target hears anything.
        local_address: the IP address the connection to the proxy leaves from (``--bind``),
            for the proxy's addresses of its family, or several: one of each family at most
            counts, the first listed (:class:`SocksDialer`). For the proxy's addresses of a
            family with none, the system picks, as with ``None`` or an unspecified address.

    Raises:
        SocksError: the proxy could not be reached, broke the protocol, refused us, could not
            connect to the target (to any of its addresses: the last one's error), or took
            longer than ``timeout`` (``errno`` ETIMEDOUT); an :class:`OSError` too. The
            socket is closed.
        ValueError: ``timeout`` is not positive, ``local_address`` is not an IP address (nor
            a sequence of them), or the target cannot be sent (a port out of 0..65535, a name
            longer than 255 bytes).
        Exception: what ``check_target`` raises.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    local = tuple(_specific_locals(local_address).values())
    with trio.move_on_after(timeout):
        failure: SocksReplyError | None = None
        for target in await _proxy_targets(proxy, host, port):
            client = Socks5Client(target, port, username=proxy.username, password=proxy.password)
            if check_target is not None:
                check_target(target)
            stream = await _connect_to_proxy(proxy, None, local)
            try:
                await _negotiate(stream, client)
            except SocksReplyError as error:
                # The proxy cannot reach this address: another of the name's may do.
                await trio.aclose_forcefully(stream)
                failure = error
                continue
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
            return stream
        assert failure is not None  # one target at least, each failed or returned
        raise failure
    raise SocksError(
        f"the proxy {proxy.address} did not connect us to {_shown(host, port)} "
        f"within {timeout:g} s",
        errno_value=errno.ETIMEDOUT,
    )


async def _connect_to_proxy(
    proxy: ProxyConfig,
    family: socket.AddressFamily | None = None,
    local: Sequence[IPv4Address | IPv6Address] = (),
) -> trio.SocketStream:
    """A TCP connection to ``proxy``, or a :class:`SocksError` with the refusal's errno.

    Always :func:`_connect_in_family`'s (happy eyeballs over :func:`_proxy_addresses`), never
    trio's ``open_tcp_stream``: an IPv4-mapped address (``::ffff:a.b.c.d``, the literal's or
    one a name resolves to) is dialled over IPv4, where trio would dial it as given on an
    IPv6 socket, which cannot reach it where those are IPv6-only by default (Windows,
    OpenBSD, Linux with ``bindv6only=1``).

    With a ``family`` (``AF_INET`` or ``AF_INET6``), only the proxy's addresses of that family
    are tried, in the resolver's order, staggered as happy eyeballs (at most
    :data:`_MAX_TARGETS`): a UDP association's control connection must be of its UDP
    socket's family, the relay being reached from that socket (libtorrent's
    ``socks5::on_name_lookup`` keeps those alone). A name with none, or a literal of the
    other family, is EHOSTUNREACH (an IPv4-mapped literal is IPv4: reached by an IPv4
    socket, not an IPv6-only one). Without one, the addresses of both families are tried.
    A name that cannot be resolved is the resolver's error (its errno where one fits).

    With ``local`` addresses (specific ones, one per family at most:
    :func:`_specific_locals`), a connection to an address of a family leaves from that
    family's; one to a family with none is made as without any (trio's ``open_tcp_stream``
    would fail that attempt instead). An address not of this host is each attempt's
    EADDRNOTAVAIL.
    """
    return await _connect_in_family(proxy, family, local)


def _unreachable(proxy: ProxyConfig, error: OSError) -> SocksError:
    """The :class:`SocksError` for a failed connect to ``proxy`` (the refusal's errno)."""
    return SocksError(
        f"cannot reach the proxy {proxy.address}: "
        f"{os.strerror(error.errno) if error.errno else _reason(error)}",
        errno_value=error.errno,
    )


async def _proxy_addresses(proxy: ProxyConfig, family: socket.AddressFamily | None) -> list[Target]:
    """The families and socket addresses of the proxy's host in ``family`` (None: IPv4 and
    IPv6, the first of the other family moved second as trio's ``open_tcp_stream`` does,
    RFC 6555's section 5.4), at most :data:`_MAX_TARGETS`, in the resolver's order; an IPv6
    one with its scope. An IPv4-mapped address (``::ffff:a.b.c.d``, the literal's or one a
    name resolves to) is the IPv4 address it embeds, ``AF_INET``: it is reached over IPv4,
    from the IPv4 local address (:func:`_proxy_literal`).

    Raises:
        SocksError: the name could not be resolved (the resolver's error, with its errno where
            one fits; an invalid name too), or to no address of ``family`` (EHOSTUNREACH:
            there is no way to the proxy from our socket).
    """
    version = None if family is None else 4 if family == socket.AF_INET else 6
    literal = _proxy_literal(proxy.host)  # an IPv4-mapped one as the IPv4 address it embeds
    if literal is not None and version is not None and literal.version != version:
        raise SocksError(
            f"the proxy {_shown(literal, proxy.port)}{_written(proxy.host)} is "
            f"IPv{literal.version}, our UDP socket IPv{version}: no way to its relay",
            errno_value=errno.EHOSTUNREACH,
        )
    resolved = await _resolved_proxy(proxy, literal, version)
    if not resolved.targets:
        kind = "IP" if version is None else f"IPv{version}"
        # A name whose IPv6 answers are all IPv4-mapped has no IPv6 address: say so, or
        # "no IPv6 address" would contradict the resolver's own AAAA answer.
        mapped = resolved.mapped_away
        mapped_note = "" if mapped is None else f" (::ffff:{mapped} is IPv4)"
        raise SocksError(
            f"the proxy {proxy.host!r:.80} resolves to no {kind} address{mapped_note}",
            errno_value=errno.EHOSTUNREACH,
        )
    return resolved.targets


async def _resolved_proxy(
    proxy: ProxyConfig, literal: IPv4Address | IPv6Address | None, version: int | None
) -> _Resolved:
    """The proxy's addresses of IP ``version`` (None: both), as :func:`_resolve_targets`
    finds them (the literal without brackets, an IPv4-mapped one unmapped).

    Raises:
        SocksError: the name could not be resolved (the resolver's error, with its errno where
            one fits; an invalid name too).
    """
    try:
        # Every family, then ours alone: asked for one family, resolvers say a name with
        # addresses of the other only is unknown (glibc's EAI_NONAME from /etc/hosts), where
        # the truth is that our socket has no way to the proxy (EHOSTUNREACH, the caller's).
        return await _resolve_targets(
            proxy.host if literal is None else str(literal),  # without brackets
            proxy.port,
            (4, 6) if version is None else (version,),
        )
    except (OSError, UnicodeError) as error:  # UnicodeError: IDNA refused the name
        raise _unresolved(proxy, error) from error


async def _connect_in_family(
    proxy: ProxyConfig,
    family: socket.AddressFamily | None,
    local: Sequence[IPv4Address | IPv6Address] = (),
) -> trio.SocketStream:
    """A TCP connection to one of the proxy's addresses of ``family`` (None: of either; see
    :func:`_connect_to_proxy`), as happy eyeballs (the connect of
    :func:`~bip_handshake.open_tcp_stream_from`, the HTTP clients' too): each address is tried
    0.25 s after the one before (at once when that one failed), the first to connect wins and
    the others are cancelled and closed. The caller's deadline bounds their time. Each socket
    is bound (port 0) to ``local``'s address of its family, if there is one, before it
    connects; one of a family without is made as without any.

    Raises:
        SocksError: the name could not be resolved, or every address failed (the last
            failure's errno; a socket the system refused, EMFILE say, or a ``local`` address
            it cannot bind, EADDRNOTAVAIL, is a failure too).
    """
    addresses = await _proxy_addresses(proxy, family)
    # IP version -> the address its sockets leave from (the first of a family, if several);
    # a family without one: the system picks.
    sources: dict[int, str | None] = {}
    for address in local:
        sources.setdefault(address.version, str(address))
    try:
        return await _connect_staggered(addresses, sources)
    except OSError as error:  # every attempt failed: the last failure
        raise _unreachable(proxy, error) from error


def _shown(host: str | IPv4Address | IPv6Address, port: int) -> str:
    text = str(host)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


async def _negotiate(stream: trio.SocketStream, client: Socks5Client) -> None:
    """Run ``client``'s conversation over ``stream`` until the proxy connected us."""
    # Bounded: each round reads at least one byte of a message of at most 262 bytes, and a
    # conversation has three messages; the timeout bounds the time.
    while not client.done:
        data = client.data_to_send()
        try:
            if data:
                await stream.send_all(data)
            received = await stream.receive_some(client.receive_size)
        except (trio.BrokenResourceError, OSError) as error:
            cause = error.__cause__ if error.__cause__ is not None else error
            raise SocksProtocolError(
                f"the connection to the proxy broke: {_reason(cause)}"
            ) from error
        client.receive_data(received)


@dataclass(frozen=True, slots=True)
class SocksDialerStatistics:
    """Counters of a :class:`SocksDialer` since it was made.

    Attributes:
        dials: dials started.
        connected: dials the proxy connected.
        failed: dials that failed (the proxy unreachable, refusing, or out of time); a dial
            cancelled by the caller is counted in ``dials`` only.
    """

    dials: int = 0
    connected: int = 0
    failed: int = 0


class SocksDialer:
    """A :data:`~bip_handshake.Dialer` that reaches every peer over TCP through a SOCKS5 proxy.

    Pass it as ``open_handshaker(dial=...)``. A peer's address is an IP address: no name is
    resolved. uTP cannot go through a CONNECT proxy: a session dialling this way dials TCP
    alone (it may still accept uTP).

    >>> dialer = SocksDialer(parse_proxy_url("socks5://127.0.0.1:1080"))
    >>> dialer.proxy.address, dialer.statistics()
    ('127.0.0.1:1080', SocksDialerStatistics(dials=0, connected=0, failed=0))
    >>> proxy = parse_proxy_url("socks5://[::1]")
    >>> SocksDialer(proxy, local_address=("::1", "127.0.0.2", "::2")).local_addresses
    ('::1', '127.0.0.2')

    Args:
        proxy: the proxy.
        timeout: seconds one dial may take (the Handshaker's ``connect_timeout`` bounds it
            as well).
        local_address: the IP address every connection to the proxy leaves from
            (``--bind``: the one the direct dialer connects from), for the proxy's addresses
            of its family; or several (``("10.8.0.2", "fd00::2")``): a connection to one of
            the proxy's addresses leaves from the first listed of that address's family. A
            family with none, or whose first is unspecified, lets the system pick (``None``
            or an empty sequence: for both). Read as
            :func:`~bip_handshake.local_addresses_by_family` reads it (an IPv4-mapped
            address is IPv4).

    Raises:
        ValueError: ``timeout`` is not a positive number, or ``local_address`` is not an IP
            address nor a sequence of them.
        TypeError: ``proxy`` is not a :class:`ProxyConfig`.
    """

    def __init__(
        self,
        proxy: ProxyConfig,
        *,
        timeout: float = DEFAULT_SOCKS_TIMEOUT,
        local_address: str | Sequence[str] | None = None,
    ) -> None:
        if not isinstance(proxy, ProxyConfig):
            raise TypeError(f"proxy must be a ProxyConfig, not {proxy!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        local = _specific_locals(local_address)
        self._proxy = proxy
        self._timeout = float(timeout)
        # Kept as text: open_socks5_stream takes it so (parsed above to fail here, not per dial).
        self._local_addresses = tuple(str(address) for address in local.values())
        self._dials = self._connected = self._failed = 0

    @property
    def proxy(self) -> ProxyConfig:
        """The proxy every dial goes through."""
        return self._proxy

    @property
    def local_address(self) -> str | None:
        """The first of :attr:`local_addresses` (None: the system picks for both families)."""
        return self._local_addresses[0] if self._local_addresses else None

    @property
    def local_addresses(self) -> tuple[str, ...]:
        """The addresses connections to the proxy leave from, one per IP family at most, in
        the order given (a family with none: the system picks)."""
        return self._local_addresses

    def statistics(self) -> SocksDialerStatistics:
        """A snapshot of the counters."""
        return SocksDialerStatistics(self._dials, self._connected, self._failed)

    async def __call__(self, address: PeerAddress) -> trio.abc.Stream:
        """Connect to ``address`` through the proxy.

        Raises:
            SocksError: the dial failed (an :class:`OSError`: the Handshaker counts it as
                ``connect_failed``).
        """
        self._dials += 1
        try:
            stream = await open_socks5_stream(
                self._proxy,
                address.host,
                address.port,
                timeout=self._timeout,
                local_address=self._local_addresses,
            )
        except SocksError as error:
            self._failed += 1
            _log.debug("dial to %s through %s failed: %s", address, self._proxy.url, error)
            raise
        self._connected += 1
        return stream
