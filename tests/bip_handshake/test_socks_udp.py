"""SOCKS5 UDP ASSOCIATE over trio (bip_handshake._socks_udp) against the in-test proxy on
127.0.0.1 (tests._socks_server), with a UDP echo server as the far end."""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, IPv6Address

import pytest
import trio
import trio.testing
from tests._socks_server import Request, SocksServer, encode_datagram, encode_reply, serve_socks5

from bip_handshake import ListenError, PeerAddress
from bip_handshake._socks import (
    SocksAuthError,
    SocksError,
    SocksProtocolError,
    SocksReplyError,
    SocksUnavailableError,
)
from bip_handshake._socks_shell import ProxyConfig
from bip_handshake._socks_udp import Socks5UdpSocket, open_socks5_udp_socket

LOOPBACK = ("127.0.0.1", 0)
DEADLINE = 5.0
JUMP_AFTER = 0.03
"""Real seconds of idleness before a MockClock jumps: loopback I/O is done well before."""


@asynccontextmanager
async def udp_echo() -> AsyncIterator[PeerAddress]:
    """A UDP echo server on 127.0.0.1: its address."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(LOOPBACK)

        async def echo() -> None:
            while True:
                data, source = await sock.recvfrom(65_535)
                await sock.sendto(data, source)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            yield PeerAddress(IPv4Address("127.0.0.1"), sock.getsockname()[1])
            nursery.cancel_scope.cancel()


def proxy_of(server: SocksServer, **changes: object) -> ProxyConfig:
    return ProxyConfig("127.0.0.1", server.port, **changes)  # type: ignore[arg-type]


def now_of(udp: Socks5UdpSocket) -> tuple[PeerAddress | None, SocksError | None]:
    """The relay and last error, read afresh (mypy keeps what earlier asserts narrowed)."""
    return udp.relay, udp.last_error


async def until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` (the callers' fail_after bounds it)."""
    while not condition():
        await trio.sleep(0.005)


async def echo_once(udp: Socks5UdpSocket, echo: PeerAddress, payload: bytes) -> None:
    await udp.sendto(payload, echo)
    assert await udp.recvfrom() == (payload, echo)


@asynccontextmanager
async def associated(
    *, send_local_endpoint: bool = False
) -> AsyncIterator[tuple[SocksServer, PeerAddress, Socks5UdpSocket]]:
    """The in-test proxy, a UDP echo server, and our socket on 127.0.0.1 through the proxy,
    once associated."""
    async with (
        serve_socks5() as server,
        udp_echo() as echo,
        open_socks5_udp_socket(
            proxy_of(server), bind=LOOPBACK, send_local_endpoint=send_local_endpoint
        ) as udp,
    ):
        await udp.wait_associated()
        yield server, echo, udp


async def test_datagrams_go_through_the_relay_both_ways() -> None:
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5() as server,
            udp_echo() as echo,
            open_socks5_udp_socket(proxy_of(server), bind=LOOPBACK) as udp,
        ):
            assert udp.local_address.host == IPv4Address("127.0.0.1")
            assert udp.local_address.port != 0
            await udp.wait_associated()
            [association] = server.associations
            assert udp.associated
            assert udp.relay == PeerAddress(IPv4Address("127.0.0.1"), association.relay_port)
            assert udp.last_error is None
            # As libtorrent: 0.0.0.0:0, "from anywhere on our host".
            assert association.request == Request(3, IPv4Address(0), 0)
            await echo_once(udp, echo, b"d1:ad2:id20:")
            await echo_once(udp, echo, b"")
            # A name goes to the proxy as a name (the in-test proxy knows "localhost").
            await udp.sendto(b"by name", ("localhost", echo.port))
            assert await udp.recvfrom() == (b"by name", echo)
            assert association.relayed == association.returned == 3
            stats = udp.statistics
            assert (stats.sent, stats.received, stats.associations) == (3, 3, 1)
            assert stats.dropped_foreign == stats.dropped_malformed == stats.refused_sends == 0


async def test_foreign_fragmented_and_malformed_datagrams_are_dropped() -> None:
    with trio.fail_after(DEADLINE):
        async with associated() as (server, echo, udp):
            await echo_once(udp, echo, b"first")  # the proxy learns our UDP port
            [association] = server.associations
            # Straight to us, not through the relay: a foreign host, even wrapped.
            with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
                await stranger.bind(LOOPBACK)
                local = (str(udp.local_address.host), udp.local_address.port)
                await stranger.sendto(encode_datagram(echo.host, echo.port, b"x"), local)
            # From the relay: a fragment, garbage, a source named by a host name.
            await association.send_to_client(encode_datagram(echo.host, echo.port, b"x", frag=1))
            await association.send_to_client(b"\x00\x00\x00\x09garbage")
            await association.send_to_client(b"\x00")
            await association.send_to_client(encode_datagram("peer.example", 6881, b"x"))
            await echo_once(udp, echo, b"second")
            stats = udp.statistics
            assert stats.dropped_foreign == 1
            assert stats.dropped_fragments == 1
            assert stats.dropped_malformed == 3
            assert stats.received == 2


async def test_a_datagram_from_another_host_on_the_relays_port_is_foreign() -> None:
    with trio.fail_after(DEADLINE):
        async with associated() as (_server, echo, udp):
            assert udp.relay is not None
            # The relay's port on another loopback host: only the host tells them apart.
            with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as impostor:
                try:
                    await impostor.bind(("127.0.0.2", udp.relay.port))
                except OSError:
                    pytest.skip("127.0.0.2 cannot be bound on this host")
                local = (str(udp.local_address.host), udp.local_address.port)
                await impostor.sendto(encode_datagram(echo.host, echo.port, b"forged"), local)
            await echo_once(udp, echo, b"genuine")
            assert udp.statistics.dropped_foreign == 1
            assert udp.statistics.received == 1


async def test_a_source_named_by_an_ip_address_is_that_address() -> None:
    # libtorrent's unwrap takes a domain-typed source that parses as an IP address.
    with trio.fail_after(DEADLINE):
        async with associated() as (server, echo, udp):
            await echo_once(udp, echo, b"first")  # the proxy learns our UDP port
            [association] = server.associations
            await association.send_to_client(encode_datagram("10.1.2.3", 6881, b"v4"))
            await association.send_to_client(encode_datagram("peer.example", 6881, b"name"))
            await association.send_to_client(encode_datagram("2001:db8::1", 6881, b"v6"))
            assert await udp.recvfrom() == (b"v4", PeerAddress(IPv4Address("10.1.2.3"), 6881))
            assert await udp.recvfrom() == (b"v6", PeerAddress(IPv6Address("2001:db8::1"), 6881))
            assert udp.statistics.dropped_malformed == 1


async def test_a_scoped_ipv6_source_is_dropped_not_raised() -> None:
    # ip_address takes "fe80::1%eth0", PeerAddress refuses it: that CompactError once
    # escaped recvfrom, a hostile relay ending the DHT's or a tracker's receive loop.
    with trio.fail_after(DEADLINE):
        async with associated() as (server, echo, udp):
            await echo_once(udp, echo, b"first")  # the proxy learns our UDP port
            [association] = server.associations
            await association.send_to_client(encode_datagram("fe80::1%eth0", 6881, b"scoped"))
            await association.send_to_client(encode_datagram("fe80::1%1", 6881, b"scoped"))
            await echo_once(udp, echo, b"after")
            assert udp.statistics.dropped_malformed == 2
            assert udp.statistics.received == 2


async def test_a_refusal_leaves_us_unassociated_and_we_retry() -> None:
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5() as server,
            udp_echo() as echo,
        ):
            server.refuse_udp = True
            async with open_socks5_udp_socket(
                proxy_of(server), bind=LOOPBACK, retry_interval=0.02
            ) as udp:
                with pytest.raises(SocksUnavailableError, match="not set up yet"):
                    await udp.sendto(b"early", echo)
                await until(lambda: udp.last_error is not None)
                assert not udp.associated
                assert udp.relay is None
                assert isinstance(udp.last_error, SocksReplyError)
                assert udp.last_error.code == 7
                # Never sent directly: refused, and counted.
                with pytest.raises(SocksUnavailableError, match="command not supported") as raised:
                    await udp.sendto(b"hello", echo)
                assert raised.value.errno == errno.EACCES
                assert udp.statistics.refused_sends == 2
                assert udp.statistics.sent == 0
                await until(lambda: server.refused >= 2)  # it tried again
                server.refuse_udp = False
                await udp.wait_associated()
                assert now_of(udp)[1] is None
                await echo_once(udp, echo, b"at last")
                assert udp.statistics.associations == 1


async def test_a_closed_control_connection_ends_the_association_until_the_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Real sockets on loopback: the clock jumps only once everything has waited a little.
    autojump_clock.autojump_threshold = JUMP_AFTER
    with trio.fail_after(60):
        async with (
            serve_socks5() as server,
            udp_echo() as echo,
            open_socks5_udp_socket(proxy_of(server), bind=LOOPBACK, retry_interval=5.0) as udp,
        ):
            await udp.wait_associated()
            await echo_once(udp, echo, b"one")
            first = udp.relay
            closed = trio.current_time()
            server.associations[0].close()
            await trio.sleep(1)
            assert not udp.associated
            assert udp.relay is None
            assert isinstance(udp.last_error, SocksError)
            assert "closed the control connection" in str(udp.last_error)
            with pytest.raises(SocksUnavailableError, match="closed the control connection"):
                await udp.sendto(b"lost", echo)
            await udp.wait_associated()
            # Asked again after retry_interval, not at once.
            assert server.request_times[1] - closed == pytest.approx(5.0, abs=0.1)
            relay, _ = now_of(udp)
            assert relay != first
            assert relay == PeerAddress(IPv4Address("127.0.0.1"), server.associations[1].relay_port)
            await echo_once(udp, echo, b"two")
            assert udp.statistics.associations == 2
            assert server.associations[0].closed


async def test_failures_in_a_row_back_off(autojump_clock: trio.testing.MockClock) -> None:
    autojump_clock.autojump_threshold = JUMP_AFTER
    with trio.fail_after(200):
        async with serve_socks5() as server:
            server.refuse_udp = True
            start = trio.current_time()
            async with open_socks5_udp_socket(
                proxy_of(server), bind=LOOPBACK, retry_interval=1.0
            ) as udp:
                await server.wait_requests(5)
                times = [t - start for t in server.request_times]
                assert times == pytest.approx([0, 1, 3, 7, 15], abs=0.1)
                server.refuse_udp = False
                await udp.wait_associated()
                assert server.request_times[5] - start == pytest.approx(31, abs=0.1)
                # Success resets the delay: one retry_interval after the next loss.
                closed = trio.current_time()
                server.associations[0].close()
                await server.wait_requests(7)
                assert server.request_times[6] - closed == pytest.approx(1, abs=0.1)
                await udp.wait_associated()


async def test_username_and_password() -> None:
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5(username=b"me", password=b"s3cret") as server,
            udp_echo() as echo,
        ):
            proxy = proxy_of(server, username="me", password="s3cret")
            async with open_socks5_udp_socket(proxy, bind=LOOPBACK) as udp:
                await udp.wait_associated()
                await echo_once(udp, echo, b"authenticated")
            wrong = proxy_of(server, username="me", password="wrong")
            async with open_socks5_udp_socket(wrong, bind=LOOPBACK) as udp:
                await until(lambda: udp.last_error is not None)
                assert isinstance(udp.last_error, SocksAuthError)
                assert not udp.associated
            assert server.auth_failures == 1


async def test_an_unspecified_relay_is_the_proxys_own_address() -> None:
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5() as server,
            udp_echo() as echo,
        ):
            server.unspecified_bound = True
            async with open_socks5_udp_socket(proxy_of(server), bind=LOOPBACK) as udp:
                await udp.wait_associated()
                port = server.associations[0].relay_port
                assert udp.relay == PeerAddress(IPv4Address("127.0.0.1"), port)
                await echo_once(udp, echo, b"via the proxy's address")


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (encode_reply(0, "relay.example", 9), "by a host name"),
        (encode_reply(0, IPv6Address("::1"), 9), "is IPv6, our UDP socket .* IPv4"),
        (encode_reply(0, IPv4Address("127.0.0.1"), 0), "port 0"),
        (encode_reply(0, IPv4Address("224.0.0.1"), 9), "224.0.0.1:9 is not unicast"),
        (encode_reply(0, IPv4Address("255.255.255.255"), 9), "not unicast"),
    ],
    ids=["domain", "ipv6", "port-0", "multicast", "broadcast"],
)
async def test_unusable_relays_are_protocol_errors(reply: bytes, match: str) -> None:
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5(reply_bytes=reply) as server,
            open_socks5_udp_socket(proxy_of(server), bind=LOOPBACK) as udp,
        ):
            await until(lambda: udp.last_error is not None)
            assert isinstance(udp.last_error, SocksProtocolError)
            assert re.search(match, str(udp.last_error))
            assert not udp.associated


async def test_a_silent_proxy_times_out() -> None:
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5(silent=True) as server,
            open_socks5_udp_socket(proxy_of(server), bind=LOOPBACK, timeout=0.1) as udp,
        ):
            await until(lambda: udp.last_error is not None)
            assert udp.last_error is not None
            assert udp.last_error.errno == errno.ETIMEDOUT
            assert "within 0.1 s" in str(udp.last_error)


async def test_an_unreachable_proxy() -> None:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        await closed.bind(LOOPBACK)  # bound, not listening: connections are refused
        port = closed.getsockname()[1]
        with trio.fail_after(DEADLINE):
            async with open_socks5_udp_socket(ProxyConfig("127.0.0.1", port), bind=LOOPBACK) as udp:
                await until(lambda: udp.last_error is not None)
                assert udp.last_error is not None
                assert udp.last_error.errno == errno.ECONNREFUSED


async def test_send_local_endpoint_names_our_socket() -> None:
    with trio.fail_after(DEADLINE):
        async with associated(send_local_endpoint=True) as (server, echo, udp):
            [association] = server.associations
            local = udp.local_address
            assert association.request == Request(3, local.host, local.port)
            assert association.client == (str(local.host), local.port)
            await echo_once(udp, echo, b"named")


async def test_leaving_the_block_closes_everything() -> None:
    with trio.fail_after(DEADLINE):
        async with serve_socks5() as server:
            async with open_socks5_udp_socket(proxy_of(server), bind=LOOPBACK) as udp:
                await udp.wait_associated()
            await until(lambda: server.associations[0].closed)
            assert not udp.associated
            with pytest.raises(trio.ClosedResourceError):
                await udp.sendto(b"late", ("127.0.0.1", 9))
            with pytest.raises(trio.ClosedResourceError):
                await udp.recvfrom()
            with pytest.raises(trio.ClosedResourceError):
                await udp.wait_associated()


async def test_bad_arguments() -> None:
    proxy = ProxyConfig("127.0.0.1", 1080)
    with pytest.raises(ListenError, match="not \\(IP address, port\\)"):
        async with open_socks5_udp_socket(proxy, bind=("localhost", 0)):
            pass
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        await taken.bind(LOOPBACK)
        with pytest.raises(ListenError, match="cannot bind"):
            async with open_socks5_udp_socket(proxy, bind=taken.getsockname()):
                pass
    with pytest.raises(ValueError, match="timeout must be a positive"):
        async with open_socks5_udp_socket(proxy, timeout=0):
            pass
    with pytest.raises(ValueError, match="retry_interval must be a positive"):
        async with open_socks5_udp_socket(proxy, retry_interval=-1):
            pass
    with pytest.raises(TypeError, match="ProxyConfig"):
        async with open_socks5_udp_socket("socks5://127.0.0.1"):  # type: ignore[arg-type]
            pass
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5() as server,
            open_socks5_udp_socket(proxy_of(server), bind=LOOPBACK) as udp,
        ):
            with pytest.raises(ValueError, match="1 to 255 bytes"):
                await udp.sendto(b"x", ("a" * 256, 1))
            with pytest.raises(TypeError, match="PeerAddress or \\(host, port\\)"):
                await udp.sendto(b"x", "127.0.0.1:1")  # type: ignore[arg-type]
