"""How a SOCKS5 UDP association's control connection reaches the proxy
(bip_handshake._socks_shell._connect_in_family, through _socks_udp): the proxy's addresses
staggered as happy eyeballs, a socket the system refuses, names the resolver or IDNA refuses,
and the keep-alive options named in the log. Everything on 127.0.0.1; names come from a
resolver of this file's, never from DNS.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
from tests._resolvers import FixedResolver, has_ipv6_loopback
from tests._socks_server import serve_socks5

from bip_handshake._socks import SocksError
from bip_handshake._socks_shell import ProxyConfig, _connect_to_proxy, parse_proxy_url
from bip_handshake._socks_udp import _keep_alive, open_socks5_udp_socket

LOOPBACK = ("127.0.0.1", 0)
DEADLINE = 3.0


async def until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` (the callers' fail_after bounds it)."""
    while not condition():
        await trio.sleep(0.005)


@contextmanager
def blackhole() -> Iterator[int]:
    """A port on 127.0.0.1 whose listener's accept queue is full (never accepted): the system
    drops further SYNs, a connect there waits until cancelled (skipped where it does not)."""
    with socket.socket() as listener:
        listener.bind(LOOPBACK)
        listener.listen(0)
        address = listener.getsockname()
        fillers: list[socket.socket] = []
        try:
            for _ in range(4):  # the queue's one place, and a margin
                filler = socket.socket()
                fillers.append(filler)
                filler.setblocking(False)
                filler.connect_ex(address)
            if select.select([], [fillers[-1]], [], 0.02)[1]:
                pytest.skip("this system answers SYNs to a full accept queue")
            yield address[1]
        finally:
            for filler in fillers:
                filler.close()


async def test_an_address_dropping_syns_costs_the_stagger_not_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Tried one after the other, the first address ate the whole timeout on every attempt
    # and the second was never reached.
    streams: list[trio.socket.SocketType] = []
    real_socket = trio.socket.socket

    def spied(*args: Any, **kwargs: Any) -> trio.socket.SocketType:
        sock = real_socket(*args, **kwargs)
        if sock.type == socket.SOCK_STREAM:
            streams.append(sock)
        return sock

    with blackhole() as dead_port:
        async with serve_socks5() as server:
            names = {"two.test": [("127.0.0.1", dead_port), ("127.0.0.1", server.port)]}
            trio.socket.set_custom_hostname_resolver(FixedResolver(names))  # this run's only
            monkeypatch.setattr(trio.socket, "socket", spied)
            with trio.fail_after(1.5):
                start = trio.current_time()
                async with open_socks5_udp_socket(
                    ProxyConfig("two.test", 1080), bind=LOOPBACK, timeout=10
                ) as udp:
                    await udp.wait_associated()
                    assert 0.25 <= trio.current_time() - start < 1.25
                    assert udp.statistics.associations == 1
                    assert len(server.associations) == 1
                    loser, winner = streams
                    assert loser.fileno() == -1  # the attempt still connecting: closed
                    assert winner.fileno() != -1


async def test_a_socket_the_system_refuses_is_a_failure_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Made outside the try, the socket's EMFILE escaped as a bare OSError and ended the
    # whole block.
    real_socket = trio.socket.socket
    refusals = 0

    def refusing(*args: Any, **kwargs: Any) -> trio.socket.SocketType:
        nonlocal refusals
        if socket.SOCK_STREAM in args and refusals < 2:
            refusals += 1
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return real_socket(*args, **kwargs)

    async with serve_socks5() as server:
        proxy = ProxyConfig("127.0.0.1", server.port)
        monkeypatch.setattr(trio.socket, "socket", refusing)
        with trio.fail_after(DEADLINE):
            with pytest.raises(SocksError, match="Too many open files") as raised:
                await _connect_to_proxy(proxy, socket.AF_INET)
            assert raised.value.errno == errno.EMFILE
            async with open_socks5_udp_socket(proxy, bind=LOOPBACK, retry_interval=0.05) as udp:
                await until(lambda: udp.last_error is not None)
                assert isinstance(udp.last_error, SocksError)
                assert udp.last_error.errno == errno.EMFILE
                await udp.wait_associated()  # tried again: the next socket was made
                assert refusals == 2


@pytest.mark.parametrize("host", ["a..b", "x" * 64 + ".org", ".lead", "a.b.."])
def test_names_idna_cannot_encode_are_refused_up_front(host: str) -> None:
    with pytest.raises(ValueError, match="IDNA codec can encode"):
        ProxyConfig(host, 1080)
    with pytest.raises(ValueError, match="IDNA codec can encode"):
        parse_proxy_url(f"socks5h://{host}:1080")


@pytest.mark.parametrize(
    "host",
    ["proxy.example.", "b\N{LATIN SMALL LETTER U WITH DIAERESIS}cher.de", "[::1]", "fe80::1%eth0"],
)
def test_names_idna_encodes_and_addresses_are_taken(host: str) -> None:
    assert ProxyConfig(host, 1080).host == host


async def test_a_name_idna_2008_refuses_is_a_failure_retried() -> None:
    # Python's IDNA 2003 takes "☃.net", trio's IDNA 2008 refuses it with a UnicodeError
    # (no DNS asked): it escaped the resolution and ended the block.
    with trio.fail_after(DEADLINE):
        async with open_socks5_udp_socket(
            ProxyConfig("\N{SNOWMAN}.net", 1080), bind=LOOPBACK, retry_interval=0.05
        ) as udp:
            await until(lambda: udp.statistics.refused_sends == 0 and udp.last_error is not None)
            assert isinstance(udp.last_error, SocksError)
            assert "not a host name IDNA can encode" in str(udp.last_error)
            assert udp.last_error.errno is None
            await trio.sleep(0.12)  # retried, still alive
            assert not udp.associated


@pytest.mark.parametrize(
    ("failure", "expected_errno"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), None),
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), errno.EAGAIN),
        (OSError(errno.ENOBUFS, "No buffer space available"), errno.ENOBUFS),
    ],
    ids=["unknown", "temporary", "system"],
)
async def test_the_resolvers_own_error_is_kept(
    failure: OSError, expected_errno: int | None
) -> None:
    # Every resolver failure was EHOSTUNREACH ("no address of our family") before.
    trio.socket.set_custom_hostname_resolver(FixedResolver({"fails.test": failure}))
    with trio.fail_after(DEADLINE):
        async with open_socks5_udp_socket(ProxyConfig("fails.test", 1080), bind=LOOPBACK) as udp:
            await until(lambda: udp.last_error is not None)
            assert udp.last_error is not None
            assert udp.last_error.errno == expected_errno
            assert str(failure.strerror) in str(udp.last_error)
            assert "cannot resolve the proxy 'fails.test': " in str(udp.last_error)


async def test_a_name_of_the_other_family_only_is_unreachable_not_unknown() -> None:
    # Asked for IPv6 alone, glibc calls localhost-with-IPv4-only unknown: the proxy's name
    # is looked up in every family, and "no IPv6 address" is EHOSTUNREACH, as documented.
    if not has_ipv6_loopback():
        pytest.skip("no ::1 on this host")
    # IPv4 alone, and glibc's answer from /etc/hosts to a lookup of IPv6 alone: unknown.
    v4_only = FixedResolver({"v4only.test": ("127.0.0.1",)}, by_family=True)
    trio.socket.set_custom_hostname_resolver(v4_only)
    try:
        with trio.fail_after(DEADLINE):
            async with open_socks5_udp_socket(
                ProxyConfig("v4only.test", 1080), bind=("::1", 0)
            ) as udp:
                await until(lambda: udp.last_error is not None)
                assert udp.last_error is not None
                assert udp.last_error.errno == errno.EHOSTUNREACH
                assert "resolves to no IPv6 address" in str(udp.last_error)
    finally:
        trio.socket.set_custom_hostname_resolver(None)


def test_keep_alive_options_are_logged_by_name(caplog: pytest.LogCaptureFixture) -> None:
    class Refusing:
        """A socket refusing every option."""

        def setsockopt(self, level: int, option: int, value: int) -> None:
            raise OSError(errno.ENOPROTOOPT, os.strerror(errno.ENOPROTOOPT))

    with caplog.at_level(logging.DEBUG, logger="bip_handshake.socks"):
        _keep_alive(Refusing())  # type: ignore[arg-type]
    text = caplog.text
    assert "keep-alive option SO_KEEPALIVE=1 " in text
    if hasattr(socket, "TCP_KEEPIDLE"):
        assert "TCP_KEEPIDLE=30 " in text
    if hasattr(socket, "TCP_KEEPCNT"):
        assert "TCP_KEEPCNT=9 " in text
