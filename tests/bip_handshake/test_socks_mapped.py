"""IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``) met through a SOCKS5 proxy are IPv4:

- a datagram whose source the relay writes mapped comes out of
  :meth:`~bip_handshake.Socks5UdpSocket.recvfrom` with the IPv4 source we sent to (uTP keys
  its connections by it: tests/bip/test_utp_mapped_relay.py);
- a proxy name resolving to a mapped address is connected to over IPv4 even without a local
  address, where IPv6 sockets are IPv6-only (Windows, OpenBSD, ``bindv6only=1``): trio's
  ``open_tcp_stream`` dialled it on an IPv6 socket;
- messages about an address made IPv4 say how it was written.

The in-test proxy (tests._socks_server) listens on 127.0.0.1 and relays for loopback targets.
"""

from __future__ import annotations

import errno
import functools
import socket as stdlib_socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, IPv6Address

import pytest
import tests._socks_server as socks_server
import trio
from tests._resolvers import FixedResolver
from tests._socks_server import serve_socks5

from bip_handshake import PeerAddress, SocksDialer
from bip_handshake._socks import SocksError
from bip_handshake._socks_shell import ProxyConfig, _proxy_addresses
from bip_handshake._socks_udp import open_socks5_udp_socket

DEADLINE = 5.0
MAPPED_NAME = "mapped.test"


def _mapped(host: IPv4Address | IPv6Address | str) -> IPv4Address | IPv6Address | str:
    """``host`` as a dual-stack proxy may write an IPv4 address: ``::ffff:a.b.c.d``."""
    return IPv6Address(f"::ffff:{host}") if isinstance(host, IPv4Address) else host


@asynccontextmanager
async def udp_echo() -> AsyncIterator[PeerAddress]:
    """A UDP echo server on 127.0.0.1: its address."""
    with trio.socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))

        async def echo() -> None:
            while True:  # until cancelled
                data, source = await sock.recvfrom(65_535)
                await sock.sendto(data, source)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            yield PeerAddress(IPv4Address("127.0.0.1"), sock.getsockname()[1])
            nursery.cancel_scope.cancel()


async def test_a_source_the_relay_writes_mapped_is_the_ipv4_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Before, recvfrom returned [::ffff:127.0.0.1]:port: uTP, whose connection is keyed by
    # 127.0.0.1:port, took the SYN-ACK for an unknown connection and sent a RESET.
    real = socks_server.encode_datagram

    def mapped_source(
        host: IPv4Address | IPv6Address | str, port: int, payload: bytes, *, frag: int = 0
    ) -> bytes:
        return real(_mapped(host), port, payload, frag=frag)

    monkeypatch.setattr(socks_server, "encode_datagram", mapped_source)
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5() as server,
            udp_echo() as echo,
            open_socks5_udp_socket(ProxyConfig("127.0.0.1", server.port)) as udp,
        ):
            await udp.wait_associated()
            await udp.sendto(b"ping", echo)
            payload, source = await udp.recvfrom()
    assert payload == b"ping"
    assert source == echo
    assert isinstance(source.host, IPv4Address)
    [association] = server.associations
    assert association.returned == 1  # the proxy did write it mapped (the patch ran)


class _V6OnlySockets(trio.abc.SocketFactory):
    """trio's sockets as a system whose IPv6 sockets are IPv6-only by default makes them;
    records the family of each."""

    def __init__(self) -> None:
        self.families: list[int] = []

    def socket(
        self,
        family: stdlib_socket.AddressFamily | int = stdlib_socket.AF_INET,
        type: stdlib_socket.SocketKind | int = stdlib_socket.SOCK_STREAM,
        proto: int = 0,
    ) -> trio.socket.SocketType:
        sock = trio.socket.from_stdlib_socket(stdlib_socket.socket(family, type, proto))
        if family == stdlib_socket.AF_INET6:
            sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 1)
        self.families.append(int(family))
        return sock


@asynccontextmanager
async def closing_listener() -> AsyncIterator[int]:
    """A TCP listener on 127.0.0.1 that closes what it accepts: its port."""

    async def close(stream: trio.SocketStream) -> None:
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, host="127.0.0.1")
        [listener] = await nursery.start(serve, close, 0)
        yield listener.socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def test_a_name_resolving_to_a_mapped_address_is_reached_where_ipv6_is_v6only() -> None:
    # Before, with no local address, trio's open_tcp_stream dialled ::ffff:127.0.0.1 on an
    # IPv6 socket: refused where such sockets are IPv6-only (ENETUNREACH on Linux).
    sockets = _V6OnlySockets()
    trio.socket.set_custom_socket_factory(sockets)
    trio.socket.set_custom_hostname_resolver(FixedResolver({MAPPED_NAME: ("::ffff:127.0.0.1",)}))
    with trio.fail_after(DEADLINE):
        async with serve_socks5() as server, closing_listener() as port:
            dialer = SocksDialer(ProxyConfig(MAPPED_NAME, server.port))
            stream = await dialer(PeerAddress(IPv4Address("127.0.0.1"), port))
            await stream.aclose()
    assert server.connects == [("127.0.0.1", port)]
    assert stdlib_socket.AF_INET6 not in sockets.families


async def test_an_unreachable_named_proxy_still_says_why() -> None:
    # The connect that replaced trio's keeps its failure's words and errno.
    trio.socket.set_custom_hostname_resolver(FixedResolver({MAPPED_NAME: ("::ffff:127.0.0.1",)}))
    with trio.socket.socket() as unused:
        await unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, not listening: refused
        with trio.fail_after(DEADLINE), pytest.raises(SocksError) as caught:
            await SocksDialer(ProxyConfig(MAPPED_NAME, port))(
                PeerAddress(IPv4Address("127.0.0.1"), 6881)
            )
    assert caught.value.errno == errno.ECONNREFUSED
    assert f"cannot reach the proxy {MAPPED_NAME}:{port}" in str(caught.value)


async def test_messages_about_a_mapped_proxy_say_how_it_was_written() -> None:
    trio.socket.set_custom_hostname_resolver(FixedResolver({MAPPED_NAME: ("::ffff:127.0.0.1",)}))
    with pytest.raises(SocksError) as literal:
        await _proxy_addresses(ProxyConfig("::ffff:127.0.0.1", 1080), stdlib_socket.AF_INET6)
    assert str(literal.value) == (
        "the proxy 127.0.0.1:1080 (written ::ffff:127.0.0.1) is IPv4, our UDP socket IPv6: "
        "no way to its relay"
    )
    assert literal.value.errno == errno.EHOSTUNREACH
    with pytest.raises(SocksError) as named:
        await _proxy_addresses(ProxyConfig(MAPPED_NAME, 1080), stdlib_socket.AF_INET6)
    assert str(named.value) == (
        f"the proxy {MAPPED_NAME!r} resolves to no IPv6 address (::ffff:127.0.0.1 is IPv4)"
    )


async def test_a_relay_named_mapped_and_refused_says_how_it_was_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = socks_server.encode_reply
    multicast = IPv6Address("::ffff:224.0.0.1")

    def multicast_relay(code: int, host: IPv4Address | IPv6Address | str, port: int) -> bytes:
        return real(code, multicast if isinstance(host, IPv4Address) else host, port)

    monkeypatch.setattr(socks_server, "encode_reply", multicast_relay)
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5() as server,
            open_socks5_udp_socket(ProxyConfig("127.0.0.1", server.port)) as udp,
        ):
            await _until(lambda: udp.last_error is not None)
            error = udp.last_error
    assert error is not None
    assert "(written ::ffff:224.0.0.1) is not unicast" in str(error)
    assert "224.0.0.1:" in str(error)


async def _until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` (the callers' fail_after bounds it)."""
    while not condition():
        await trio.sleep(0.005)
