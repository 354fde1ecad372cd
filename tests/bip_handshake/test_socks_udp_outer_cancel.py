"""A cancel from outside that reaches an ``open_socks5_udp_socket`` block (Ctrl-C, a deadline
around it): ``shielded=True`` keeps the association up for the block's own shielded work until
the block is left; unshielded, the association ends and sends are refused at once (never sent
into a relay the proxy has torn down). In-test proxy and UDP echo server on 127.0.0.1."""

from __future__ import annotations

import errno
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address

import pytest
import trio
from tests._socks_server import serve_socks5

from bip_handshake import PeerAddress
from bip_handshake._socks import SocksUnavailableError
from bip_handshake._socks_shell import ProxyConfig
from bip_handshake._socks_udp import open_socks5_udp_socket

LOOPBACK = ("127.0.0.1", 0)
DEADLINE = 5.0


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


async def test_shielded_keeps_the_association_until_the_block_is_left() -> None:
    with trio.fail_after(DEADLINE):
        async with serve_socks5() as server, udp_echo() as echo:
            proxy = ProxyConfig("127.0.0.1", server.port)
            with trio.CancelScope() as outer:
                async with open_socks5_udp_socket(proxy, bind=LOOPBACK, shielded=True) as udp:
                    await udp.wait_associated()
                    outer.cancel()
                    with trio.CancelScope(shield=True):
                        # The keeper had every chance to see the cancel: it did not.
                        await trio.sleep(0.05)
                        await udp.sendto(b"stopped", echo)
                        assert await udp.recvfrom() == (b"stopped", echo)
                        [association] = server.associations
                        assert udp.associated
                        assert not association.closed
            assert not udp.associated
            # Leaving the block ended the association all the same.
            with trio.fail_after(1):
                while not association.closed:
                    await trio.sleep(0.005)


async def test_unshielded_a_cancel_ends_the_association_and_sends_are_refused() -> None:
    with trio.fail_after(DEADLINE):
        async with serve_socks5() as server, udp_echo() as echo:
            proxy = ProxyConfig("127.0.0.1", server.port)
            with trio.CancelScope() as outer:
                async with open_socks5_udp_socket(proxy, bind=LOOPBACK) as udp:
                    await udp.wait_associated()
                    outer.cancel()
                    with trio.CancelScope(shield=True):
                        await trio.sleep(0.05)  # the keeper goes with the cancel
                        assert not udp.associated
                        [association] = server.associations
                        while not association.closed:  # the proxy sees the end soon
                            await trio.sleep(0.005)
                        with pytest.raises(SocksUnavailableError, match="was ended"):
                            await udp.sendto(b"into a dead relay", echo)
                        error = udp.last_error
                        assert error is not None
                        assert error.errno == errno.ECONNABORTED
                        assert udp.statistics.sent == 0


async def test_shielded_is_a_bool() -> None:
    with pytest.raises(TypeError, match="shielded is a bool"):
        async with open_socks5_udp_socket(
            ProxyConfig("127.0.0.1", 1080),
            bind=LOOPBACK,
            shielded=1,  # type: ignore[arg-type]
        ):
            pass  # pragma: no cover
