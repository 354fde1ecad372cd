"""SOCKS5 UDP ASSOCIATE (bip_handshake._socks_udp) and address families: the control
connection goes to the proxy's addresses of our UDP socket's family only (a proxy name that
resolves to both), an IPv6 round trip on ::1, and TCP keep-alive on the control connection.
An IPv4-mapped address (``::ffff:127.0.0.1``), the proxy's or the relay's, is IPv4.

The proxy here is a small one of this file's that listens on 127.0.0.1 and ::1 alike
(tests._socks_server listens on 127.0.0.1 only): no authentication, ``UDP ASSOCIATE`` only,
a relay of the control connection's family on its local address, datagrams relayed to and
from loopback.
"""

from __future__ import annotations

import errno
import math
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Final

import pytest
import trio
import trio.testing
from tests._resolvers import FixedResolver, has_ipv6_loopback
from tests._socks_server import (
    decode_datagram,
    decode_greeting,
    decode_request,
    encode_datagram,
    encode_method,
    encode_reply,
    serve_socks5,
)

from bip_handshake import PeerAddress
from bip_handshake import _socks_udp as socks_udp
from bip_handshake._socks import SocksError
from bip_handshake._socks_shell import ProxyConfig, _connect_to_proxy
from bip_handshake._socks_udp import Socks5UdpSocket, open_socks5_udp_socket

DEADLINE = 3.0
DUAL = "dual.test"
"""Resolves to ::1 then 127.0.0.1 (whatever family is asked)."""
DUAL_V4_FIRST = "dual4.test"
"""Resolves to 127.0.0.1 then ::1."""
V6_ONLY = "v6only.test"
"""Resolves to ::1 alone."""
NAMES: Final[Mapping[str, tuple[str, ...]]] = {
    DUAL: ("::1", "127.0.0.1"),
    DUAL_V4_FIRST: ("127.0.0.1", "::1"),
    V6_ONLY: ("::1",),
}
"""The test names, for a :class:`FixedResolver`: loopback addresses in a fixed order and of
both families whatever the caller asks (the client must pick its family itself)."""


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no ::1 on this host")


@dataclass
class FamilyProxy:
    """The proxy of this file: its port (the same on every host it listens on) and what it
    did."""

    port: int
    unspecified_bound: bool = False
    mapped_bound: bool = False
    """Name an IPv4 relay by its IPv4-mapped IPv6 address (``::ffff:a.b.c.d``), as a
    dual-stack proxy may."""
    control_families: list[socket.AddressFamily] = field(default_factory=list)
    relayed: int = 0


async def _exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            raise trio.BrokenResourceError("the client left")
        data += chunk
    return data


async def _serve_association(proxy: FamilyProxy, stream: trio.SocketStream) -> None:
    async with stream:
        head = await _exactly(stream, 2)
        assert 0 in decode_greeting(head + await _exactly(stream, head[1]))
        await stream.send_all(encode_method(0))
        head = await _exactly(stream, 4)
        rest = await _exactly(stream, {1: 6, 4: 18}[head[3]])
        assert decode_request(head + rest).command == 3
        family = stream.socket.family
        proxy.control_families.append(family)
        local = ip_address(stream.socket.getsockname()[0])
        with trio.socket.socket(family, socket.SOCK_DGRAM) as relay:
            await relay.bind((str(local), 0))
            bound = IPv4Address(0) if proxy.unspecified_bound else local
            if proxy.mapped_bound:
                bound = IPv6Address(f"::ffff:{bound}")
            await stream.send_all(encode_reply(0, bound, relay.getsockname()[1]))
            client: tuple[str, int] | None = None

            async def relay_datagrams() -> None:
                nonlocal client
                while True:
                    data, source = await relay.recvfrom(65_535)
                    if source[0] == str(local) and client in (None, source[:2]):
                        client = source[:2]
                        host, port, payload = decode_datagram(data)
                        proxy.relayed += 1
                        await relay.sendto(payload, (str(host), port))
                    elif client is not None:
                        await relay.sendto(
                            encode_datagram(ip_address(source[0]), source[1], data), client
                        )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(relay_datagrams)
                # The association lasts while the control connection does.
                while await stream.receive_some(512):
                    pass
                nursery.cancel_scope.cancel()


@asynccontextmanager
async def family_proxy(hosts: tuple[str, ...]) -> AsyncIterator[FamilyProxy]:
    """The proxy on each of ``hosts``, on one port for all."""
    first = (await trio.open_tcp_listeners(0, host=hosts[0]))[0]
    port = first.socket.getsockname()[1]
    listeners = [first]
    try:
        for host in hosts[1:]:
            listeners += await trio.open_tcp_listeners(port, host=host)
    except OSError:
        for listener in listeners:
            await listener.aclose()
        pytest.skip(f"port {port} is taken on another loopback address")
    proxy = FamilyProxy(port)

    async def handle(stream: trio.SocketStream) -> None:
        with suppress(trio.BrokenResourceError, OSError):  # the client left
            await _serve_association(proxy, stream)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        yield proxy
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def udp_echo(host: str) -> AsyncIterator[PeerAddress]:
    """A UDP echo server on ``host``: its address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
        await sock.bind((host, 0))

        async def echo() -> None:
            while True:
                data, source = await sock.recvfrom(65_535)
                await sock.sendto(data, source)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            yield PeerAddress(ip_address(host), sock.getsockname()[1])
            nursery.cancel_scope.cancel()


async def until_failed(udp: Socks5UdpSocket) -> None:
    """Wait for the first attempt's failure (the callers' fail_after bounds it)."""
    while udp.last_error is None:
        await trio.sleep(0.005)


@needs_ipv6
@pytest.mark.parametrize(
    ("name", "bind", "unspecified"),
    [
        (DUAL, "127.0.0.1", False),
        (DUAL, "127.0.0.1", True),
        (DUAL_V4_FIRST, "::1", False),
    ],
    ids=["ipv4-socket", "ipv4-socket-unspecified-relay", "ipv6-socket"],
)
async def test_a_dual_stack_proxy_name_is_reached_in_our_sockets_family(
    name: str, bind: str, unspecified: bool
) -> None:
    trio.socket.set_custom_hostname_resolver(FixedResolver(NAMES))
    try:
        with trio.fail_after(DEADLINE):
            async with (
                family_proxy(("127.0.0.1", "::1")) as proxy,
                udp_echo(bind) as echo,
                open_socks5_udp_socket(
                    ProxyConfig(name, proxy.port), bind=(bind, 0), retry_interval=0.05
                ) as udp,
            ):
                proxy.unspecified_bound = unspecified
                await udp.wait_associated()
                family = socket.AF_INET if ":" not in bind else socket.AF_INET6
                assert proxy.control_families == [family]
                assert udp.relay is not None
                assert udp.relay.host == ip_address(bind)
                await udp.sendto(b"same family", echo)
                assert await udp.recvfrom() == (b"same family", echo)
    finally:
        trio.socket.set_custom_hostname_resolver(None)


@pytest.mark.parametrize(
    ("host", "bind"),
    [(V6_ONLY, "127.0.0.1"), ("::1", "127.0.0.1"), ("127.0.0.1", "::1")],
    ids=["name", "ipv6-literal", "ipv4-literal"],
)
async def test_a_proxy_without_an_address_of_our_family_is_unreachable(
    host: str, bind: str
) -> None:
    if ":" in bind and not has_ipv6_loopback():
        pytest.skip("no ::1 on this host")
    trio.socket.set_custom_hostname_resolver(FixedResolver(NAMES))
    try:
        with trio.fail_after(DEADLINE):
            async with open_socks5_udp_socket(ProxyConfig(host, 9), bind=(bind, 0)) as udp:
                await until_failed(udp)
                assert udp.last_error is not None
                assert udp.last_error.errno == errno.EHOSTUNREACH
                assert "IPv" in str(udp.last_error)
                assert not udp.associated
    finally:
        trio.socket.set_custom_hostname_resolver(None)


@needs_ipv6
async def test_an_ipv6_round_trip_on_the_ipv6_loopback() -> None:
    with trio.fail_after(DEADLINE):
        async with (
            family_proxy(("::1",)) as proxy,
            udp_echo("::1") as echo,
            open_socks5_udp_socket(ProxyConfig("::1", proxy.port), bind=("::1", 0)) as udp,
        ):
            await udp.wait_associated()
            assert udp.relay is not None
            assert udp.relay.host == IPv6Address("::1")
            assert udp.local_address.family == 6
            await udp.sendto(b"d1:q4:pinge", echo)
            assert await udp.recvfrom() == (b"d1:q4:pinge", echo)
            await udp.sendto(b"by tuple", ("::1", echo.port))
            assert await udp.recvfrom() == (b"by tuple", echo)
            assert proxy.relayed == 2
            assert proxy.control_families == [socket.AF_INET6]
            stats = udp.statistics
            assert (stats.sent, stats.received, stats.dropped_foreign) == (2, 2, 0)


async def test_the_control_connection_has_tcp_keep_alive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    controls: list[trio.SocketStream] = []
    connect = _connect_to_proxy

    async def spied(*args: Any) -> trio.SocketStream:
        stream = await connect(*args)
        controls.append(stream)
        return stream

    monkeypatch.setattr(socks_udp, "_connect_to_proxy", spied)
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5() as server,
            open_socks5_udp_socket(
                ProxyConfig("127.0.0.1", server.port), bind=("127.0.0.1", 0)
            ) as udp,
        ):
            await udp.wait_associated()
            [control] = controls
            sock = control.socket
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
            idle = getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None))
            if idle is not None:
                assert sock.getsockopt(socket.IPPROTO_TCP, idle) == 30
            if hasattr(socket, "TCP_KEEPINTVL"):
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 1
            if hasattr(socket, "TCP_KEEPCNT"):
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 9


async def test_the_proxys_family_falls_back_when_its_name_fails_or_is_slow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    trio.socket.set_custom_hostname_resolver(FixedResolver(NAMES))
    gone = ProxyConfig("gone.test", 1080)
    with pytest.raises(SocksError, match="cannot resolve the proxy"):
        await socks_udp.proxy_udp_family(gone)
    assert await socks_udp.proxy_udp_family(gone, fallback=6) == 6
    trio.socket.set_custom_hostname_resolver(FixedResolver(delay=math.inf))  # never answers
    slow = ProxyConfig("slow.test", 1080)
    with pytest.raises(SocksError, match="did not resolve within 2 s") as raised:
        await socks_udp.proxy_udp_family(slow, timeout=2)
    assert raised.value.errno == errno.ETIMEDOUT
    # The failure is remembered for a minute: the session's other sockets do not wait again.
    start = trio.current_time()
    assert await socks_udp.proxy_udp_family(slow, timeout=2, fallback=4) == 4
    assert trio.current_time() == start
    await trio.sleep(61)
    assert await socks_udp.proxy_udp_family(slow, timeout=2, fallback=4) == 4
    assert trio.current_time() - start == pytest.approx(63)
    with pytest.raises(ValueError, match="timeout"):
        await socks_udp.proxy_udp_family(slow, timeout=-1)
    with pytest.raises(ValueError, match="fallback"):
        await socks_udp.proxy_udp_family(slow, fallback=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fallback"):
        await socks_udp.proxy_udp_family(slow, fallback=4.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        await socks_udp.proxy_udp_family(slow, timeout=True)


async def test_a_remembered_failure_is_raised_afresh_and_a_patient_caller_looks_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    trio.socket.set_custom_hostname_resolver(FixedResolver(NAMES))
    gone = ProxyConfig("gone.test", 1080)
    raised = []
    for _ in range(3):
        with pytest.raises(SocksError) as failure:
            await socks_udp.proxy_udp_family(gone)
        raised.append(failure.value)
    # One object raised again would pile up every caller's traceback for a minute.
    assert len({id(error) for error in raised}) == 3
    assert {str(error) for error in raised} == {str(raised[0])}
    # A timeout of 0 s is remembered for callers as hasty, not for a patient one.
    assert await socks_udp.proxy_udp_family(ProxyConfig(DUAL, 1), timeout=0, fallback=6) == 6
    assert await socks_udp.proxy_udp_family(ProxyConfig(DUAL, 1), timeout=0, fallback=6) == 6
    assert await socks_udp.proxy_udp_family(ProxyConfig(DUAL, 1), timeout=5) == 4


async def test_a_host_without_an_ipv4_route_takes_ipv6(monkeypatch: pytest.MonkeyPatch) -> None:
    # On an IPv6-only network a name still has A records: IPv4 only where it is routable.
    trio.socket.set_custom_hostname_resolver(
        FixedResolver({**NAMES, "v4only.test": ("127.0.0.1",)})
    )
    monkeypatch.setattr(socks_udp, "_routable", lambda family, sockaddr: family == socket.AF_INET6)
    assert await socks_udp.proxy_udp_family(ProxyConfig(DUAL, 1080)) == 6
    # No IPv6 address: IPv4, whose attempts then say why it fails.
    assert await socks_udp.proxy_udp_family(ProxyConfig("v4only.test", 1080)) == 4


async def test_a_host_without_any_route_takes_ipv4(monkeypatch: pytest.MonkeyPatch) -> None:
    # A machine with loopback alone (as CI's namespace) routes neither family to a name's
    # global addresses: IPv4 then, as before routes were looked at.
    trio.socket.set_custom_hostname_resolver(
        FixedResolver({"far.test": ("2001:db8::2", "192.0.2.2")})
    )
    monkeypatch.setattr(socks_udp, "_routable", lambda family, sockaddr: False)
    assert await socks_udp.proxy_udp_family(ProxyConfig("far.test", 1080)) == 4


async def test_the_proxys_family_is_ipv4_when_its_name_has_an_ipv4_address() -> None:
    # Resolvers list IPv6 first on hosts with global IPv6 (RFC 6724): the DHT and uTP dial
    # mostly IPv4 nodes and peers, through a relay socket of their own family.
    trio.socket.set_custom_hostname_resolver(FixedResolver(NAMES))
    assert ":" in NAMES[DUAL][0]  # IPv6 listed first
    assert await socks_udp.proxy_udp_family(ProxyConfig(DUAL, 1080)) == 4


async def test_the_family_of_an_ipv4_mapped_proxy_is_ipv4() -> None:
    # Before, 6: the uTP relay socket was IPv6, bound to ::1 beside an IPv4 --bind.
    trio.socket.set_custom_hostname_resolver(FixedResolver({"mapped.test": ("::ffff:127.0.0.1",)}))
    for host in ("::ffff:127.0.0.1", "[::ffff:127.0.0.1]", "mapped.test"):
        assert await socks_udp.proxy_udp_family(ProxyConfig(host, 1080)) == 4, host


@pytest.mark.parametrize(
    ("proxy_host", "mapped_relay", "unspecified"),
    [
        ("::ffff:127.0.0.1", False, False),
        ("127.0.0.1", True, False),
        ("127.0.0.1", True, True),
        ("::ffff:127.0.0.1", True, False),
    ],
    ids=["mapped-proxy", "mapped-relay", "mapped-unspecified-relay", "both-mapped"],
)
async def test_an_ipv4_mapped_proxy_and_relay_are_reached_from_an_ipv4_socket(
    proxy_host: str, mapped_relay: bool, unspecified: bool
) -> None:
    # Before, the control connection of an IPv4 socket found no IPv4 address for a proxy
    # named ::ffff:127.0.0.1 (EHOSTUNREACH), and a relay named ::ffff:127.0.0.1 was refused
    # as IPv6 (::ffff:0.0.0.0 as not unicast, where it is the proxy's own address).
    with trio.fail_after(DEADLINE):
        async with (
            family_proxy(("127.0.0.1",)) as proxy,
            udp_echo("127.0.0.1") as echo,
            open_socks5_udp_socket(
                ProxyConfig(proxy_host, proxy.port), bind=("127.0.0.1", 0)
            ) as udp,
        ):
            proxy.mapped_bound = mapped_relay
            proxy.unspecified_bound = unspecified
            await udp.wait_associated()
            assert proxy.control_families == [socket.AF_INET]
            assert udp.relay is not None
            assert udp.relay.host == IPv4Address("127.0.0.1")
            await udp.sendto(b"through a mapped relay", echo)
            assert await udp.recvfrom() == (b"through a mapped relay", echo)
            assert proxy.relayed == 1
