"""Loopback addresses beyond 127.0.0.1 for tests of local addresses (``--bind``), and a TCP
listener that notes who connected.

Imported as ``tests._loopbacks`` (the root conftest puts the repository's root on
``sys.path``). A test of the source address of a connection binds it to 127.0.0.2 (a listener
on 127.0.0.1 sees it as itself, where the system would pick 127.0.0.1) or to ``::1``:
:func:`require_loopbacks` skips it where the host has not got them (macOS has 127.0.0.1
alone; containers often have no IPv6). :func:`recording_listener` is the far end that tells
which address a connection left from.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from ipaddress import ip_address

import pytest
import trio

from bip_handshake import PeerAddress

__all__ = [
    "OTHER_LOOPBACK",
    "can_bind",
    "free_port",
    "recording_listener",
    "require_loopbacks",
    "wait_until",
]

OTHER_LOOPBACK = "127.0.0.2"
"""An IPv4 loopback address other than the system's choice (any of 127/8 is one on Linux)."""


@functools.cache
def can_bind(host: str) -> bool:
    """Whether a UDP socket can be bound on the IP address ``host`` here (asked once a
    process per address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
    except OSError:
        return False
    return True


def require_loopbacks(*hosts: str) -> None:
    """Skip the calling test where any of ``hosts`` (IP addresses, say ``127.0.0.2`` and
    ``::1``) is not an address of this host."""
    for host in hosts:
        if not can_bind(host):
            if host == "::1":
                pytest.skip("no IPv6 loopback (::1) on this host")
            pytest.skip(f"{host} cannot be bound on this host")


def free_port(host: str) -> int:
    """A TCP port free on ``host`` a moment ago."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
        assert isinstance(port, int)
        return port


@asynccontextmanager
async def recording_listener(host: str) -> AsyncIterator[tuple[PeerAddress, list[str]]]:
    """A TCP listener on ``host`` (an IP address) that notes the host of each connection and
    closes it: its address, and the hosts seen, in order."""
    seen: list[str] = []

    async def note(stream: trio.SocketStream) -> None:
        seen.append(str(stream.socket.getpeername()[0]))
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(functools.partial(trio.serve_tcp, host=host), note, 0)
        yield PeerAddress(ip_address(host), listener.socket.getsockname()[1]), seen
        nursery.cancel_scope.cancel()


async def wait_until(done: Callable[[], object]) -> None:
    """Poll ``done()`` until true (a listener's note of a connection comes after the connect
    returns), bounded by the caller's deadline."""
    while not done():
        await trio.sleep(0.005)
