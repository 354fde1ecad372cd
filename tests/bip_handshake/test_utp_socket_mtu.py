"""The uTP socket's part of path MTU discovery: EMSGSIZE back to the connection, probes with
"don't fragment", the family's ceiling."""

from __future__ import annotations

import errno
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from ipaddress import IPv4Address

import trio
import trio.testing

from bip_handshake import PeerAddress
from bip_handshake._utp_config import UtpConfig
from bip_handshake._utp_connection import is_mtu_probe
from bip_handshake._utp_socket import UtpSocket, open_utp_over, open_utp_socket
from bip_handshake._utp_stream import UtpStream

A = PeerAddress(IPv4Address("10.0.0.1"), 6881)
B = PeerAddress(IPv4Address("10.0.0.2"), 6882)
PATH_MTU = 1300  # a tunnel's: between the floor (1232) and the IPv4 ceiling (1472)


class TooBigLink:
    """Two sockets joined in memory by a path whose first hop refuses datagrams above
    ``PATH_MTU`` at the sender, as the system does (EMSGSIZE) once it knows the path MTU."""

    def __init__(self) -> None:
        self.sockets: dict[PeerAddress, UtpSocket] = {}
        self.delivered: list[bytes] = []
        self.refused: list[bytes] = []
        self.nursery: trio.Nursery | None = None

    def _deliver(self, data: bytes, source: PeerAddress, address: PeerAddress) -> None:
        if len(data) > PATH_MTU:
            self.refused.append(data)
            raise OSError(errno.EMSGSIZE, "Message too long")
        self.delivered.append(data)
        target = self.sockets.get(address)
        if target is None:
            return
        if self.nursery is None:
            target.datagram_received(data, source)
        else:  # a send that returns at once: the datagram arrives later, as on a network
            self.nursery.start_soon(self._arrive, target, data, source)

    @staticmethod
    async def _arrive(target: UtpSocket, data: bytes, source: PeerAddress) -> None:
        await trio.sleep(0.0005)
        target.datagram_received(data, source)

    def sender(self, source: PeerAddress) -> Callable[[bytes, PeerAddress], Awaitable[None]]:
        async def send(data: bytes, address: PeerAddress) -> None:
            await trio.lowlevel.checkpoint()
            self._deliver(data, source, address)

        return send

    def sender_now(self, source: PeerAddress) -> Callable[[bytes, PeerAddress], bool]:
        def send_now(data: bytes, address: PeerAddress) -> bool:
            self._deliver(data, source, address)
            return True

        return send_now


@asynccontextmanager
async def shared_pair(link: TooBigLink) -> AsyncIterator[tuple[UtpSocket, UtpSocket]]:
    """Over open_utp_over: every datagram goes through the socket's sender task."""
    async with (
        open_utp_over(link.sender(A), A) as a,
        open_utp_over(link.sender(B), B) as b,
    ):
        link.sockets[A], link.sockets[B] = a, b
        yield a, b


@asynccontextmanager
async def own_pair(link: TooBigLink) -> AsyncIterator[tuple[UtpSocket, UtpSocket]]:
    """Sockets that send at once (as open_utp_socket's do), the sender task as fallback."""
    async with trio.open_nursery() as nursery:
        link.nursery = nursery
        a = UtpSocket(link.sender(A), A, UtpConfig(), nursery, 4, send_now=link.sender_now(A))
        b = UtpSocket(link.sender(B), B, UtpConfig(), nursery, 4, send_now=link.sender_now(B))
        for utp in (a, b):
            nursery.start_soon(utp._run_sender)
        link.sockets[A], link.sockets[B] = a, b
        yield a, b
        for utp in (a, b):
            await utp._shutdown()
        nursery.cancel_scope.cancel()


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some():
        data += chunk
    return bytes(data)


async def transfer(a: UtpSocket, b: UtpSocket, data: bytes) -> tuple[bytes, UtpStream]:
    """a dials b and sends ``data``; what b read, and a's stream."""
    received: list[bytes] = []

    async def server() -> None:
        stream = await b.incoming().receive()
        received.append(await read_all(stream))
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        stream = await a.connect(b.local_address)
        await stream.send_all(data)
        await stream.send_eof()
        assert await read_all(stream) == b""
    return received[0], stream


async def test_emsgsize_through_the_sender_task_lowers_the_mtu(
    autojump_clock: trio.testing.MockClock,
) -> None:
    data = random.Random(1).randbytes(400_000)
    link = TooBigLink()
    with trio.fail_after(60):
        async with shared_pair(link) as (a, b):
            got, stream = await transfer(a, b, data)
            core = stream._connection.core
            assert got == data
            assert link.refused  # the probes above the path's MTU
            assert core.mtu <= PATH_MTU
            assert a.statistics().too_big == len([d for d in link.refused if d])
            assert a.statistics().datagrams_dropped == 0


async def test_emsgsize_on_an_immediate_send_lowers_the_mtu(
    autojump_clock: trio.testing.MockClock,
) -> None:
    data = random.Random(2).randbytes(400_000)
    link = TooBigLink()
    with trio.fail_after(60):
        async with own_pair(link) as (a, b):
            got, stream = await transfer(a, b, data)
            core = stream._connection.core
            assert got == data
            assert link.refused
            assert PATH_MTU - 64 <= core.mtu <= PATH_MTU  # found, not just the floor
            assert a.statistics().too_big >= 1
            assert max(len(d) for d in link.delivered) <= PATH_MTU


async def test_loopback_reaches_the_ipv4_ceiling_with_real_probes() -> None:
    # Loopback's MTU is 64 KiB: every probe passes, with "don't fragment" set on Linux.
    data = random.Random(3).randbytes(2_000_000)
    with trio.fail_after(30):
        async with open_utp_socket() as a, open_utp_socket() as b:
            got, stream = await transfer(a, b, data)
            stats = stream._connection.core.statistics()
    assert got == data
    assert stats.mtu == UtpConfig().max_datagram_v4
    assert stats.mtu_probes > 0
    assert stats.mtu_probes_lost == 0


def test_a_probe_is_known_by_its_padding() -> None:
    assert not is_mtu_probe(b"")
    assert not is_mtu_probe(bytes(40))


async def test_two_connections_sharing_a_full_budget_both_finish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The socket-wide budget is nearly full with one connection's unread data, so the
    # other's window is shut by the budget, and its out-of-order data (selectively acked,
    # gone from the sender) waits for the packets that fill its holes. Those are taken over
    # budget and announced as room, a read on either connection reopens the other's window,
    # and a resend cut before the MTU search restarted still passes a zero-window probe:
    # before these, the transfers stalled in some runs (ids and sequence numbers are random).
    config = UtpConfig(receive_buffer=32 * 1024, max_buffered=40 * 1024)
    first = random.Random(4).randbytes(200_000)
    second = random.Random(5).randbytes(200_000)
    for _run in range(8):
        link = TooBigLink()
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                link.nursery = nursery
                a = UtpSocket(link.sender(A), A, config, nursery, 4, send_now=link.sender_now(A))
                b = UtpSocket(link.sender(B), B, config, nursery, 4, send_now=link.sender_now(B))
                for utp in (a, b):
                    nursery.start_soon(utp._run_sender)
                link.sockets[A], link.sockets[B] = a, b

                async def send(data: bytes, a: UtpSocket = a) -> None:
                    stream = await a.connect(B)
                    await stream.send_all(data)
                    await stream.send_eof()

                nursery.start_soon(send, first)
                one = await b.incoming().receive()
                await trio.sleep(1)  # it fills its 32 KiB: 8 KiB of the budget are left
                nursery.start_soon(send, second)
                two = await b.incoming().receive()
                start = trio.current_time()
                got_one = await read_all(one)
                got_two = await read_all(two)
                elapsed = trio.current_time() - start
                for utp in (a, b):
                    await utp._shutdown()
                nursery.cancel_scope.cancel()
        assert (got_one, got_two) == (first, second)
        assert elapsed < 10.0, elapsed
        assert b._budget.take_woken() == []  # every window update was sent
