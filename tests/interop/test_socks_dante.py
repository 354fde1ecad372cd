"""bip's SOCKS5 UDP ASSOCIATE (bip_handshake._socks_udp) against real proxies.

- Dante (Debian's ``dante-server``, ``/usr/sbin/danted``) relays UDP: datagrams go to a UDP
  echo server of ours through its relay and come back unwrapped. Dante listens on 127.0.0.1
  and relays from 127.0.0.1 only (its ``external``), with a configuration in ``tmp_path``.
  Only ``socksmethod: none`` is tested: Dante's ``username`` method checks the system's
  password database (a system user with a password), which a test must not create.
- microsocks (Debian's package) answers ``UDP ASSOCIATE`` with "command not supported": we
  stay unassociated and refuse to send (never directly).

Each proxy runs as its own process, stopped by PID at teardown; our side runs in this
process. A missing binary skips the test, or fails it in CI.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trio

from bip_handshake import PeerAddress
from bip_handshake._socks import SocksReplyError, SocksUnavailableError
from bip_handshake._socks_shell import ProxyConfig
from bip_handshake._socks_udp import open_socks5_udp_socket

from ._dante import start_dante
from ._helpers import StartProcess, free_port, require_client, tcp_listening

pytestmark = pytest.mark.interop

DEADLINE = 10.0
HOST = "127.0.0.1"


@asynccontextmanager
async def udp_echo() -> AsyncIterator[PeerAddress]:
    """A UDP echo server on 127.0.0.1: its address."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind((HOST, 0))

        async def echo() -> None:
            while True:
                data, source = await sock.recvfrom(65_535)
                await sock.sendto(data, source)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            yield PeerAddress(IPv4Address(HOST), sock.getsockname()[1])
            nursery.cancel_scope.cancel()


async def test_datagrams_through_dantes_relay(tmp_path: Path, start_process: StartProcess) -> None:
    port = start_dante(start_process, tmp_path)
    with trio.fail_after(DEADLINE):
        async with (
            udp_echo() as echo,
            open_socks5_udp_socket(ProxyConfig(HOST, port), bind=(HOST, 0)) as udp,
        ):
            await udp.wait_associated()
            assert udp.relay is not None
            assert udp.relay.host == IPv4Address(HOST)
            for payload in (b"d1:ad2:id20:" + bytes(20) + b"e1:q4:ping1:t2:aa1:y1:qe", b"2"):
                await udp.sendto(payload, echo)
                assert await udp.recvfrom() == (payload, echo)
            stats = udp.statistics
            assert (stats.sent, stats.received, stats.associations) == (2, 2, 1)
            assert stats.dropped_foreign == stats.dropped_malformed == 0


async def test_microsocks_refuses_udp_associate(start_process: StartProcess) -> None:
    binary = require_client("microsocks")
    port = free_port(HOST)
    start_process([binary, "-i", HOST, "-p", str(port)], ready=tcp_listening(HOST, port))
    with trio.fail_after(DEADLINE):
        async with (
            udp_echo() as echo,
            open_socks5_udp_socket(ProxyConfig(HOST, port), bind=(HOST, 0)) as udp,
        ):
            while udp.last_error is None:  # bounded by the deadline
                await trio.sleep(0.01)
            assert isinstance(udp.last_error, SocksReplyError)
            assert udp.last_error.code == 7  # command not supported
            assert not udp.associated
            with pytest.raises(SocksUnavailableError, match="command not supported"):
                await udp.sendto(b"never sent", echo)
            assert udp.statistics.sent == 0
