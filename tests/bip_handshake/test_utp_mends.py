"""uTP mends: closing a uTP socket while its sender task waits for a full socket buffer."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address

import pytest
import trio
import trio.testing

from bip_handshake import PeerAddress
from bip_handshake._utp_packet import UtpPacket, UtpPacketType
from bip_handshake._utp_socket import open_utp_over

HERE = PeerAddress(IPv4Address("10.0.0.1"), 6881)
PEER = PeerAddress(IPv4Address("10.0.0.2"), 6881)
ID = 4000


@contextmanager
def full_datagram_pair() -> Iterator[tuple[trio.socket.SocketType, socket.socket]]:
    """A connected datagram pair whose first end cannot send until the second is read:
    trio's socket then waits to write, and lets one task wait at a time."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, theirs:
        ours.setblocking(False)
        theirs.setblocking(False)
        for _ in range(100_000):  # bounded: the queue holds a few hundred at most
            try:
                ours.send(b"filler")
            except BlockingIOError:
                break
        else:
            pytest.fail("the datagram socket never filled up")
        yield trio.socket.from_stdlib_socket(ours), theirs


def drain(theirs: socket.socket) -> list[bytes]:
    """Every datagram waiting at the far end."""
    received = []
    for _ in range(100_000):
        try:
            received.append(theirs.recv(65536))
        except BlockingIOError:
            break
    return received


async def test_shutdown_resets_go_after_a_send_blocked_on_a_full_buffer(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # The sender task waits for the socket to drain (the ST_STATE answering a SYN); the
    # socket is closed meanwhile. Its RESET used to be sent by the closing task at once,
    # a second writer on the socket: trio refuses a second task waiting to write
    # (BusyResourceError), so the RESET was dropped and a WARNING logged.
    with full_datagram_pair() as (ours, theirs):

        async def send(data: bytes, address: PeerAddress) -> None:
            await ours.send(data)

        async def drain_once_closing(closing: trio.Event) -> None:
            await closing.wait()
            await trio.testing.wait_all_tasks_blocked()  # the close waits, too
            drain(theirs)  # room again: the sender's ST_STATE goes, then the RESET

        closing = trio.Event()
        with caplog.at_level(logging.DEBUG, logger="bip_handshake.utp"), trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain_once_closing, closing)
                async with open_utp_over(send, HERE) as utp:
                    syn = UtpPacket(UtpPacketType.SYN, ID, 0, 0, 1 << 20, 100, 0)
                    utp.datagram_received(syn.encode(), PEER)
                    await trio.testing.wait_all_tasks_blocked()  # the sender waits to write
                    closing.set()
                stats = utp.statistics()
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert stats.datagrams_dropped == 0
        assert stats.datagrams_sent == 2
        # Whatever the drain left: the RESET follows the ST_STATE (if that was not drained).
        types = [UtpPacket.decode(data).type for data in drain(theirs)]
        assert types[-1] is UtpPacketType.RESET
        assert types.count(UtpPacketType.RESET) == 1
