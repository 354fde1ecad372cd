"""Connections to a SOCKS5 proxy leave from our bind address (``--bind``): the CONNECT path
(bip_handshake._socks_shell's open_socks5_stream and SocksDialer, ``local_address``) and a UDP
association's control connection (bip_handshake._socks_udp, from its UDP socket's host),
against the in-test proxy on 127.0.0.1 (tests._socks_server), which relays UDP only for the
control connection's host, as Dante does."""

from __future__ import annotations

import errno
import functools
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address

import pytest
import trio
from tests._loopbacks import OTHER_LOOPBACK, require_loopbacks
from tests._resolvers import FixedResolver
from tests._socks_server import serve_socks5

from bip_handshake import PeerAddress
from bip_handshake._socks import SocksError
from bip_handshake._socks_shell import ProxyConfig, SocksDialer, open_socks5_stream
from bip_handshake._socks_udp import open_socks5_udp_socket

LOOPBACK = "127.0.0.1"
DEADLINE = 5.0


@asynccontextmanager
async def echo_target() -> AsyncIterator[tuple[PeerAddress, PeerAddress]]:
    """A TCP and a UDP echo server on 127.0.0.1: their addresses."""
    udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with udp:
        await udp.bind((LOOPBACK, 0))

        async def echo_udp() -> None:
            while True:
                data, source = await udp.recvfrom(65_535)
                await udp.sendto(data, source)

        async def echo_tcp(stream: trio.SocketStream) -> None:
            async with stream:
                while data := await stream.receive_some(1024):
                    await stream.send_all(data)

        async with trio.open_nursery() as nursery:
            [listener] = await nursery.start(
                functools.partial(trio.serve_tcp, host=LOOPBACK), echo_tcp, 0
            )
            nursery.start_soon(echo_udp)
            yield (
                PeerAddress(IPv4Address(LOOPBACK), listener.socket.getsockname()[1]),
                PeerAddress(IPv4Address(LOOPBACK), udp.getsockname()[1]),
            )
            nursery.cancel_scope.cancel()


async def test_a_udp_socket_on_another_host_associates_from_it_and_relays() -> None:
    # Before: the control connection left from 127.0.0.1, the datagrams from 127.0.0.2, and
    # the proxy dropped them as a stranger's.
    require_loopbacks(OTHER_LOOPBACK)
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5() as server,
            echo_target() as (_tcp, echo),
            open_socks5_udp_socket(
                ProxyConfig(LOOPBACK, server.port), bind=(OTHER_LOOPBACK, 0)
            ) as udp,
        ):
            await udp.wait_associated()
            await udp.sendto(b"through the relay", echo)
            assert await udp.recvfrom() == (b"through the relay", echo)
            [association] = server.associations
            assert association.client_host == OTHER_LOOPBACK
            assert association.client == (OTHER_LOOPBACK, udp.local_address.port)
            assert association.relayed == association.returned == 1
    assert server.client_hosts == [OTHER_LOOPBACK]


async def test_an_unspecified_udp_bind_lets_the_system_pick() -> None:
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5() as server,
            open_socks5_udp_socket(ProxyConfig(LOOPBACK, server.port)) as udp,
        ):
            await udp.wait_associated()
    assert server.client_hosts == [LOOPBACK]


async def test_the_socks_dialer_connects_to_the_proxy_from_its_local_address() -> None:
    require_loopbacks(OTHER_LOOPBACK)
    with trio.fail_after(DEADLINE):
        async with serve_socks5() as server, echo_target() as (target, _udp):
            dialer = SocksDialer(ProxyConfig(LOOPBACK, server.port), local_address=OTHER_LOOPBACK)
            assert dialer.local_address == OTHER_LOOPBACK
            stream = await dialer(target)
            async with stream:
                await stream.send_all(b"ping")
                assert await stream.receive_some(4) == b"ping"
    assert server.client_hosts == [OTHER_LOOPBACK]
    assert server.connects == [(LOOPBACK, target.port)]
    assert dialer.statistics().connected == 1


async def test_a_named_proxy_binds_only_its_addresses_of_the_local_family() -> None:
    # The name lists an IPv6 address first: that attempt is made unbound (and fails: nobody
    # listens there, or this host has no IPv6); the IPv4 one leaves from 127.0.0.2.
    require_loopbacks(OTHER_LOOPBACK)
    with trio.fail_after(DEADLINE):
        async with serve_socks5() as server, echo_target() as (target, _udp):
            trio.socket.set_custom_hostname_resolver(
                FixedResolver({"proxy.test": ("::1", LOOPBACK)})
            )
            stream = await open_socks5_stream(
                ProxyConfig("proxy.test", server.port),
                target.host,
                target.port,
                timeout=DEADLINE,
                local_address=OTHER_LOOPBACK,
            )
            await stream.aclose()
    assert server.client_hosts == [OTHER_LOOPBACK]


async def test_a_local_address_of_the_other_family_is_ignored() -> None:
    with trio.fail_after(DEADLINE):
        async with serve_socks5() as server, echo_target() as (target, _udp):
            dialer = SocksDialer(ProxyConfig(LOOPBACK, server.port), local_address="::1")
            stream = await dialer(target)
            await stream.aclose()
            # An unspecified address binds nothing either.
            assert (
                SocksDialer(ProxyConfig(LOOPBACK, server.port), local_address="::").local_address
                is None
            )
    assert server.client_hosts == [LOOPBACK]


async def test_a_local_address_not_of_this_host_fails_the_dial() -> None:
    with trio.fail_after(DEADLINE):
        async with serve_socks5() as server:
            dialer = SocksDialer(ProxyConfig(LOOPBACK, server.port), local_address="192.0.2.1")
            with pytest.raises(SocksError) as caught:
                await dialer(PeerAddress(IPv4Address(LOOPBACK), 6881))
    assert caught.value.errno == errno.EADDRNOTAVAIL
    assert server.accepted == 0
    assert dialer.statistics().failed == 1


async def test_a_local_address_must_be_an_ip_address() -> None:
    proxy = ProxyConfig(LOOPBACK, 1080)
    with pytest.raises(ValueError, match="local_address must be an IP address"):
        SocksDialer(proxy, local_address="eth0")
    with pytest.raises(ValueError, match="local_address must be an IP address"):
        await open_socks5_stream(proxy, LOOPBACK, 6881, timeout=1.0, local_address="")
