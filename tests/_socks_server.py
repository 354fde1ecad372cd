"""An in-test SOCKS5 server (RFC 1928, RFC 1929) on loopback, and its sans-IO codec.

Imported as ``tests._socks_server`` (the root conftest puts the repository's root on
``sys.path``). The server side of the protocol is written here independently of
``bip_handshake._socks`` so that tests can check one against the other:
:func:`decode_greeting`, :func:`decode_auth` and :func:`decode_request` read what a client
sends; :func:`encode_method`, :func:`encode_auth_status` and :func:`encode_reply` write what a
proxy answers.

:func:`serve_socks5` runs a proxy on 127.0.0.1 that relays ``CONNECT`` s to loopback targets
only (any other address is answered "not allowed by ruleset"; the name ``localhost`` is
resolved to 127.0.0.1, other names are "host unreachable"), counts what it did
(:class:`SocksServer`), and can misbehave on purpose for the tests of the client: answer
with a chosen failure code, send raw bytes instead of an answer, or say nothing.

``UDP ASSOCIATE`` (RFC 1928, sections 4 and 7) opens a relay UDP socket on 127.0.0.1 per
association (:class:`UdpAssociation`), for as long as the control connection stays open: the
client's datagrams (:func:`decode_datagram`) go to loopback targets only, datagrams from
loopback hosts come back to the client wrapped (:func:`encode_datagram`). The proxy can
refuse the command (code 7), answer with the unspecified address as its relay, and a test
can close an association's control connection or send raw datagrams from its relay.

Bounds: at most ``max_connections`` clients at once (more are closed at once), every step of
a negotiation within ``step_timeout`` seconds, messages read with their exact sizes, each
datagram read with at most 65,535 bytes.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address

import trio

__all__ = [
    "Request",
    "SocksServer",
    "UdpAssociation",
    "decode_auth",
    "decode_datagram",
    "decode_greeting",
    "decode_request",
    "encode_auth_status",
    "encode_datagram",
    "encode_method",
    "encode_reply",
    "serve_socks5",
]

MAX_DATAGRAM = 65_535
"""Bytes of a UDP datagram at most: what the relay reads at once."""


class CodecError(ValueError):
    """What a client sent is not SOCKS5."""


@dataclass(frozen=True)
class Request:
    """A client's request: its command and target (an IP address, or a name as text)."""

    command: int
    host: IPv4Address | IPv6Address | str
    port: int


def decode_greeting(data: bytes) -> tuple[int, ...]:
    """The methods a greeting (``VER NMETHODS METHODS``) offers."""
    if len(data) < 2 or data[0] != 5 or len(data) != 2 + data[1] or data[1] == 0:
        raise CodecError(f"not a SOCKS5 greeting: {data.hex()}")
    return tuple(data[2:])


def decode_auth(data: bytes) -> tuple[bytes, bytes]:
    """RFC 1929's username and password."""
    if len(data) < 2 or data[0] != 1:
        raise CodecError(f"not an RFC 1929 request: {data.hex()}")
    ulen = data[1]
    if ulen == 0 or len(data) < 3 + ulen:
        raise CodecError("a bad username length")
    plen = data[2 + ulen]
    if plen == 0 or len(data) != 3 + ulen + plen:
        raise CodecError("a bad password length")
    return data[2 : 2 + ulen], data[3 + ulen :]


def _decode_address(data: bytes, offset: int) -> tuple[IPv4Address | IPv6Address | str, int, int]:
    """``ATYP ADDR PORT`` at ``offset``: the host, the port, and the offset after them."""
    atyp = data[offset]
    if atyp == 1:
        end = offset + 1 + 4
        host: IPv4Address | IPv6Address | str = IPv4Address(data[offset + 1 : end])
    elif atyp == 4:
        end = offset + 1 + 16
        host = IPv6Address(data[offset + 1 : end])
    elif atyp == 3:
        end = offset + 2 + data[offset + 1]
        host = data[offset + 2 : end].decode("ascii")
    else:
        raise CodecError(f"address type {atyp}")
    (port,) = struct.unpack_from("!H", data, end)
    return host, port, end + 2


def decode_request(data: bytes) -> Request:
    """A request ``VER CMD RSV ATYP DST.ADDR DST.PORT``."""
    if len(data) < 7 or data[0] != 5 or data[2] != 0:
        raise CodecError(f"not a SOCKS5 request: {data.hex()}")
    try:
        host, port, end = _decode_address(data, 3)
    except (IndexError, struct.error, UnicodeDecodeError, ValueError) as error:
        raise CodecError(f"a bad address: {error}") from None
    if end != len(data):
        raise CodecError("bytes after the request")
    return Request(data[1], host, port)


def decode_datagram(data: bytes) -> tuple[IPv4Address | IPv6Address | str, int, bytes]:
    """A client's datagram ``RSV FRAG ATYP DST.ADDR DST.PORT DATA``: target and payload.
    Fragments (``FRAG`` not zero) are refused, as most proxies do."""
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise CodecError(f"not a SOCKS5 datagram: {data[:8].hex()}")
    if data[2] != 0:
        raise CodecError(f"a fragment ({data[2]})")
    try:
        host, port, end = _decode_address(data, 3)
    except (IndexError, struct.error, UnicodeDecodeError, ValueError) as error:
        raise CodecError(f"a bad address: {error}") from None
    return host, port, data[end:]


def encode_datagram(
    host: IPv4Address | IPv6Address | str, port: int, payload: bytes, *, frag: int = 0
) -> bytes:
    """A datagram for the client: its source ``host:port`` and ``payload`` (``frag``: a
    fragment's number, for the tests of the client's drops)."""
    return bytes([0, 0, frag]) + encode_reply(0, host, port)[3:] + payload


def encode_method(method: int) -> bytes:
    """The proxy's choice of method."""
    return bytes([5, method])


def encode_auth_status(status: int) -> bytes:
    """RFC 1929's status (0: success)."""
    return bytes([1, status])


def encode_reply(code: int, host: IPv4Address | IPv6Address | str, port: int) -> bytes:
    """A reply with ``code`` and the bound address ``host:port``."""
    if isinstance(host, IPv4Address):
        address = b"\x01" + host.packed
    elif isinstance(host, IPv6Address):
        address = b"\x04" + host.packed
    else:
        name = host.encode("ascii")
        address = bytes([3, len(name)]) + name
    return bytes([5, code, 0]) + address + port.to_bytes(2, "big")


@dataclass
class UdpAssociation:
    """One ``UDP ASSOCIATE`` the proxy granted: its relay socket on 127.0.0.1 and its client.

    Attributes:
        relay_port: the relay's UDP port on 127.0.0.1.
        request: what the client asked (its address, or 0.0.0.0:0).
        client: the client's UDP address: the one it named, else its first datagram's.
        relayed: client datagrams sent on to their targets.
        returned: datagrams from targets sent back to the client.
        dropped: datagrams dropped (malformed, fragments, non-loopback).
        closed: whether the association (and its control connection) ended.
    """

    relay: trio.socket.SocketType
    relay_port: int
    request: Request
    client_host: str
    client: tuple[str, int] | None = None
    relayed: int = 0
    returned: int = 0
    dropped: int = 0
    closed: bool = False
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    def close(self) -> None:
        """End the association: the proxy closes its control connection and relay."""
        self.cancel_scope.cancel()

    async def send_to_client(self, data: bytes, to: tuple[str, int] | None = None) -> None:
        """Send raw ``data`` from the relay to the client (or to ``to``)."""
        target = to if to is not None else self.client
        if target is None:
            raise RuntimeError("the client has not sent a datagram yet: pass `to`")
        await self.relay.sendto(data, target)


@dataclass
class SocksServer:
    """A running in-test proxy: where it listens and what it did.

    ``refuse_udp`` and ``unspecified_bound`` may be changed while it runs.

    Attributes:
        port: its TCP port on 127.0.0.1.
        accepted: connections accepted.
        connects: the targets of the ``CONNECT`` s it relayed, in order.
        refused: requests answered with a failure code (by choice or by rule).
        auth_failures: credentials refused.
        refuse_udp: answer ``UDP ASSOCIATE`` with "command not supported" (7).
        unspecified_bound: name the relay ``0.0.0.0:port`` in the reply.
        associations: the UDP associations granted, in order.
        request_times: ``trio.current_time()`` at each request read (any command).
        client_hosts: the host of each client served, as the proxy sees it, in order.
    """

    port: int
    username: bytes | None
    password: bytes | None
    reply_code: int = 0
    method_bytes: bytes | None = None
    reply_bytes: bytes | None = None
    silent: bool = False
    accepted: int = 0
    connects: list[tuple[str, int]] = field(default_factory=list)
    refused: int = 0
    auth_failures: int = 0
    active: int = 0
    refuse_udp: bool = False
    unspecified_bound: bool = False
    associations: list[UdpAssociation] = field(default_factory=list)
    request_times: list[float] = field(default_factory=list)
    client_hosts: list[str] = field(default_factory=list)
    _request_seen: trio.Event = field(default_factory=trio.Event, repr=False)

    async def wait_requests(self, count: int) -> None:
        """Return once ``count`` requests were read in all (callers bound the wait)."""
        while len(self.request_times) < count:
            await self._request_seen.wait()

    def _saw_request(self) -> None:
        self.request_times.append(trio.current_time())
        self._request_seen.set()
        self._request_seen = trio.Event()

    def url(self, *, remote_dns: bool = False, user: str | None = None) -> str:
        """``socks5://[user:password@]127.0.0.1:port`` (``socks5h://`` with ``remote_dns``)."""
        scheme = "socks5h" if remote_dns else "socks5"
        credentials = "" if user is None else f"{user}@"
        return f"{scheme}://{credentials}127.0.0.1:{self.port}"


async def _receive_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            raise trio.BrokenResourceError("the client left")
        data += chunk
    return data


async def _read_greeting(stream: trio.SocketStream) -> bytes:
    head = await _receive_exactly(stream, 2)
    return head + await _receive_exactly(stream, head[1])


async def _read_auth(stream: trio.SocketStream) -> bytes:
    head = await _receive_exactly(stream, 2)
    user = await _receive_exactly(stream, head[1])
    plen = await _receive_exactly(stream, 1)
    return head + user + plen + await _receive_exactly(stream, plen[0])


async def _read_request(stream: trio.SocketStream) -> bytes:
    head = await _receive_exactly(stream, 4)
    if head[3] == 1:
        rest = await _receive_exactly(stream, 4 + 2)
    elif head[3] == 4:
        rest = await _receive_exactly(stream, 16 + 2)
    else:
        size = await _receive_exactly(stream, 1)
        rest = size + await _receive_exactly(stream, size[0] + 2)
    return head + rest


def _loopback(host: IPv4Address | IPv6Address | str) -> str | None:
    """The loopback address to connect to for ``host``, or None (tests reach loopback only)."""
    if isinstance(host, str):
        return "127.0.0.1" if host == "localhost" else None
    return str(host) if host.is_loopback else None


async def _relay(a: trio.SocketStream, b: trio.SocketStream) -> None:
    """Copy both ways until either side ends."""

    async def copy(source: trio.SocketStream, sink: trio.SocketStream) -> None:
        try:
            while data := await source.receive_some(64 * 1024):
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(copy, a, b)
        nursery.start_soon(copy, b, a)


def _from_client(association: UdpAssociation, source: tuple[str, int]) -> bool:
    """Whether a datagram from ``source`` is the client's (its first one fixes its port)."""
    if association.client is not None:
        return source == association.client
    return source[0] == association.client_host


async def _relay_datagrams(association: UdpAssociation) -> None:
    """Relay between the client and loopback targets until cancelled."""
    relay = association.relay
    while True:
        data, sockaddr = await relay.recvfrom(MAX_DATAGRAM)
        source = (str(sockaddr[0]), int(sockaddr[1]))
        if _from_client(association, source):
            association.client = source
            try:
                host, port, payload = decode_datagram(data)
            except CodecError:
                association.dropped += 1
                continue
            target = _loopback(host)
            if target is None:
                association.dropped += 1
                continue
            association.relayed += 1
            await relay.sendto(payload, (target, port))
        elif association.client is not None and ip_address(source[0]).is_loopback:
            association.returned += 1
            header = encode_datagram(ip_address(source[0]), source[1], b"")
            await relay.sendto(header + data, association.client)
        else:
            association.dropped += 1


async def _associate(server: SocksServer, stream: trio.SocketStream, request: Request) -> None:
    """Grant a UDP association and hold it while the control connection stays open."""
    relay = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with relay:
        await relay.bind(("127.0.0.1", 0))
        port = relay.getsockname()[1]
        association = UdpAssociation(relay, port, request, str(stream.socket.getpeername()[0]))
        if isinstance(request.host, IPv4Address) and request.port and int(request.host):
            association.client = (str(request.host), request.port)  # the client named it
        server.associations.append(association)
        bound = IPv4Address(0) if server.unspecified_bound else IPv4Address("127.0.0.1")
        try:
            with association.cancel_scope:
                await stream.send_all(encode_reply(0, bound, port))
                async with trio.open_nursery() as nursery:

                    async def watch_control() -> None:
                        # Bytes on the control connection mean nothing: its end (a reset
                        # too, raised here inside the nursery) is the association's end.
                        with contextlib.suppress(trio.BrokenResourceError, OSError):
                            while await stream.receive_some(512):
                                pass
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(watch_control)
                    nursery.start_soon(_relay_datagrams, association)
        finally:
            association.closed = True


async def _serve_one(server: SocksServer, stream: trio.SocketStream, step_timeout: float) -> None:
    upstream: trio.SocketStream | None = None
    associate = False
    async with stream:
        with trio.move_on_after(step_timeout):
            methods = decode_greeting(await _read_greeting(stream))
            if server.method_bytes is not None:
                await stream.send_all(server.method_bytes)
                await trio.sleep(step_timeout)  # the client must give up by itself
                return
            if server.username is not None:
                if 2 not in methods:
                    await stream.send_all(encode_method(0xFF))
                    return
                await stream.send_all(encode_method(2))
                user, password = decode_auth(await _read_auth(stream))
                if (user, password) != (server.username, server.password):
                    server.auth_failures += 1
                    await stream.send_all(encode_auth_status(1))
                    return
                await stream.send_all(encode_auth_status(0))
            else:
                await stream.send_all(encode_method(0))
            request = decode_request(await _read_request(stream))
            server._saw_request()
            if server.silent:
                await trio.sleep(step_timeout)
                return
            if server.reply_bytes is not None:
                await stream.send_all(server.reply_bytes)
                await trio.sleep(step_timeout)
                return
            target = _loopback(request.host)
            code = server.reply_code
            if code == 0 and request.command == 3 and not server.refuse_udp:
                associate = True
            elif code == 0 and request.command != 1:
                code = 7
            elif code == 0 and target is None:
                code = 2 if not isinstance(request.host, str) else 4
            if code == 0 and target is not None:
                try:
                    upstream = await trio.open_tcp_stream(target, request.port)
                except OSError:
                    code = 5
            if upstream is None and not associate:
                server.refused += 1
                await stream.send_all(encode_reply(code or 1, IPv4Address(0), 0))
                return
        if associate:
            await _associate(server, stream, request)
            return
        if upstream is None:  # the client was too slow
            return
        server.connects.append((str(request.host), request.port))
        async with upstream:
            bound = ip_address(upstream.socket.getsockname()[0])
            await stream.send_all(encode_reply(0, bound, upstream.socket.getsockname()[1]))
            await _relay(stream, upstream)


@asynccontextmanager
async def serve_socks5(
    *,
    username: bytes | None = None,
    password: bytes | None = None,
    reply_code: int = 0,
    method_bytes: bytes | None = None,
    reply_bytes: bytes | None = None,
    silent: bool = False,
    max_connections: int = 64,
    step_timeout: float = 10.0,
) -> AsyncIterator[SocksServer]:
    """Run a SOCKS5 proxy on 127.0.0.1 for the duration of the block.

    Args:
        username, password: require RFC 1929 with these (``None``: no authentication).
        reply_code: answer every ``CONNECT`` with this failure code (0: relay).
        method_bytes: send these instead of the choice of method, then wait.
        reply_bytes: send these instead of the reply, then wait.
        silent: never answer the ``CONNECT``.
        max_connections: clients at once; more are closed at once.
        step_timeout: seconds a negotiation may take, and a misbehaving answer waits.
    """
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    server = SocksServer(
        port,
        username,
        password,
        reply_code=reply_code,
        method_bytes=method_bytes,
        reply_bytes=reply_bytes,
        silent=silent,
    )

    async def handle(stream: trio.SocketStream) -> None:
        server.accepted += 1
        if server.active >= max_connections:
            await trio.aclose_forcefully(stream)
            return
        server.active += 1
        server.client_hosts.append(str(stream.socket.getpeername()[0]))
        try:
            await _serve_one(server, stream, step_timeout)
        except (CodecError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client's fault, or it left: nothing to relay
        finally:
            server.active -= 1

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()
