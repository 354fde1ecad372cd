"""The shell's addresses and sockets: parsing ``host:port`` forms, resolving names, binding.

Private to :mod:`bip_dht._shell`. Literal addresses never touch the resolver; names go to the
system's (``getaddrinfo``). Sockets are one per family, an IPv6 one ``IPV6_V6ONLY`` so IPv4
peers never appear as mapped addresses. Failures become :class:`DHTSocketError` (bind, resolve)
or :class:`~bip_dht.LocalProtocolError` (a malformed address).
"""

from __future__ import annotations

import errno
import socket as stdlib_socket
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import TypeAlias

import trio

from bip_handshake import CompactError, PeerAddress

from ._errors import DHTError, LocalProtocolError

__all__ = [
    "MAX_DATAGRAM",
    "SEND_TRANSIENT_ERRORS",
    "TRANSIENT_ERRORS",
    "AddressLike",
    "DHTSocketError",
    "bind_list",
    "host_name",
    "open_socket",
    "resolve",
]

AddressLike: TypeAlias = str | PeerAddress | tuple[str, int]
"""``"1.2.3.4:6881"``, ``"[::1]:6881"``, ``"host.name:6881"``, a bare host (port 0 when
binding), a :class:`~bip_handshake.PeerAddress` or a ``(host, port)`` tuple."""

MAX_DATAGRAM = 65536
# ICMP errors surfacing on a UDP socket's receive: the socket is fine, a datagram was lost.
TRANSIENT_ERRORS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.EMSGSIZE,
    }
)
# What a send may meet that loses one datagram and leaves the socket fine: the ICMP errors
# above, and a full queue (trio waits out EAGAIN itself; BSD and macOS say ENOBUFS).
SEND_TRANSIENT_ERRORS = TRANSIENT_ERRORS | {errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS}


class DHTSocketError(DHTError):
    """A socket of the DHT could not be opened, bound or sent from, a name did not resolve,
    or an address is of a family the node runs no socket for; the operating system's error,
    when there is one, is the ``__cause__``."""


def _split(value: AddressLike, default_port: int | None) -> tuple[str, int]:
    if isinstance(value, PeerAddress):
        return str(value.host), value.port
    if isinstance(value, tuple):
        if len(value) != 2 or not isinstance(value[0], str) or not isinstance(value[1], int):
            raise LocalProtocolError(f"an address tuple is (host, port), got {value!r}")
        host, port = value
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise LocalProtocolError(f"expected [v6]:port, got {value!r}")
            port_text = rest[1:]
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
        else:  # a bare IPv4 address, name, or unbracketed IPv6 address
            host, port_text = text, ""
        if port_text:
            if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:
                raise LocalProtocolError(f"bad port in {value!r}")
            port = int(port_text)
        elif default_port is None:
            raise LocalProtocolError(f"{value!r} needs a port")
        else:
            port = default_port
    else:
        raise LocalProtocolError(f"an address is a str, PeerAddress or (host, port), got {value!r}")
    if not host or not 0 <= port <= 0xFFFF or isinstance(port, bool):
        raise LocalProtocolError(f"bad address {value!r}")
    return host, port


def _literal(host: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(host)
    except ValueError:
        return None


def host_name(value: AddressLike, default_port: int | None) -> tuple[str, int] | None:
    """The host name and port *value* names, or None when its host is an IP literal (what a
    proxy with remote DNS is given as a name instead of our resolving it).

    >>> host_name("router.example:6881", None), host_name("10.0.0.1:6881", None)
    (('router.example', 6881), None)

    Raises:
        LocalProtocolError: a malformed address (as :func:`resolve`).
    """
    host, port = _split(value, default_port)
    return None if _literal(host) is not None else (host, port)


async def resolve(value: AddressLike, default_port: int | None) -> list[PeerAddress]:
    """Every address *value* names (a literal is itself; a name goes to the resolver)."""
    host, port = _split(value, default_port)
    literal = _literal(host)
    if literal is not None:
        return [PeerAddress(literal, port).normalized()]
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=stdlib_socket.SOCK_DGRAM)
    except OSError as error:
        raise DHTSocketError(f"cannot resolve {host!r}: {error}") from error
    out: list[PeerAddress] = []
    for info in infos:
        sockaddr: tuple[object, ...] = tuple(info[4])
        try:
            address = PeerAddress(ip_address(str(sockaddr[0])), int(str(sockaddr[1]))).normalized()
        except (ValueError, CompactError):
            continue  # a scoped (link-local) answer: no compact form, not a DHT node
        if address not in out:
            out.append(address)
    return out


def bind_list(bind: AddressLike | Sequence[AddressLike]) -> list[AddressLike]:
    if isinstance(bind, str | PeerAddress):
        return [bind]
    if isinstance(bind, tuple) and len(bind) == 2 and isinstance(bind[1], int):
        return [(str(bind[0]), bind[1])]
    if isinstance(bind, Sequence):
        items: list[AddressLike] = []
        for item in bind:
            if isinstance(item, int):
                raise LocalProtocolError(f"bad bind address {bind!r}")
            items.append(item)
        if not items:
            raise LocalProtocolError("bind names at least one address")
        return items
    raise LocalProtocolError(f"bind is an address or a sequence of addresses, got {bind!r}")


async def open_socket(address: PeerAddress) -> trio.socket.SocketType:
    family = stdlib_socket.AF_INET if address.family == 4 else stdlib_socket.AF_INET6
    try:
        sock = trio.socket.socket(family, stdlib_socket.SOCK_DGRAM)
    except OSError as error:
        raise DHTSocketError(f"cannot open an IPv{address.family} socket: {error}") from error
    try:
        if address.family == 6:
            sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 1)
        await sock.bind((str(address.host), address.port))
    except OSError as error:
        sock.close()
        raise DHTSocketError(f"cannot bind {address}: {error}") from error
    except BaseException:
        sock.close()
        raise
    return sock
