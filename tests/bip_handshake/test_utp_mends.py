"""uTP mends: closing a uTP socket while its sender task waits for a full socket buffer (or
one that never drains); a SYN reusing the id of a live connection whose peer keeps its
receive window shut."""

from __future__ import annotations

import itertools
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from ipaddress import IPv4Address

import pytest
import trio
import trio.testing

from bip_handshake import PeerAddress
from bip_handshake._utp_connection import INITIAL_TIMEOUT_US, UtpConnection, UtpState
from bip_handshake._utp_packet import UtpPacket, UtpPacketType
from bip_handshake._utp_socket import UtpSocket, _now_us, open_utp_over

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


async def test_shutdown_counts_what_a_send_that_never_returns_kept_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A shared socket's owner whose send never returns (its buffer never drains): the
    # close waits its half second for the sender's datagram in hand, then gives up. That
    # datagram and the RESETs behind it never left, and were counted nowhere.
    async def send(data: bytes, address: PeerAddress) -> None:
        await trio.sleep_forever()

    with trio.fail_after(5):
        async with open_utp_over(send, HERE) as utp:
            syn = UtpPacket(UtpPacketType.SYN, ID, 0, 0, 1 << 20, 100, 0)
            utp.datagram_received(syn.encode(), PEER)
            await trio.testing.wait_all_tasks_blocked()  # the sender holds the ST_STATE
        stats = utp.statistics()
    # The ST_STATE answering the SYN, and the connection's RESET.
    assert (stats.datagrams_sent, stats.datagrams_dropped) == (0, 2)


# ------------------------------------------------- a live peer with its window shut


ONE_WAY = 0.025  # seconds each way between us and the peer


class ShutWindowPeer:
    """A libtorrent-like peer of a connection it opened to us (receive id ``ID``): it takes
    ``take`` DATA packets in order, then advertises a shut window (its reader is slow) and
    answers every DATA after one round trip, acking what it took (a DATA it cannot take
    gets a duplicate ack). Once ``dead``, it answers nothing (it crashed)."""

    def __init__(self, nursery: trio.Nursery, take: int) -> None:
        self.utp: UtpSocket | None = None  # ours, once open (it needs our send to open)
        self.nursery = nursery
        self.take = take
        self.taken = 0
        self.ack = 0  # the last of our sequence numbers it received in order
        self.dead = False
        self.heard: list[float] = []  # when each of its packets reached us
        self.probed: list[float] = []  # when each DATA of ours left
        self.before_each: Callable[[], None] | None = None
        self.outbox, self.inbox = trio.open_memory_channel[UtpPacket](1000)

    async def send(self, data: bytes, address: PeerAddress) -> None:
        """The socket's sender: our datagrams go to the peer."""
        self.outbox.send_nowait(UtpPacket.decode(data))
        await trio.lowlevel.checkpoint()

    async def run(self) -> None:
        async for packet in self.inbox:
            if packet.type is UtpPacketType.DATA:
                self.probed.append(trio.current_time())
            if self.dead:
                continue
            if packet.type is UtpPacketType.STATE and self.ack == 0:
                # Our answer to its SYN: it confirms with its first DATA.
                self.ack = (packet.seq_nr - 1) & 0xFFFF
                first = UtpPacket(
                    UtpPacketType.DATA, ID + 1, 0, 0, 1 << 20, 101, self.ack, payload=b"hi"
                )
                self.nursery.start_soon(self._later, first)
            elif packet.type is UtpPacketType.DATA:
                if self.taken < self.take and packet.seq_nr == (self.ack + 1) & 0xFFFF:
                    self.ack = packet.seq_nr
                    self.taken += 1
                window = 0 if self.taken >= self.take else 1 << 20
                ack = UtpPacket(UtpPacketType.STATE, ID + 1, 0, 0, window, 102, self.ack)
                self.nursery.start_soon(self._later, ack)

    async def _later(self, packet: UtpPacket) -> None:
        await trio.sleep(2 * ONE_WAY)  # our datagram's way there, its answer's way back
        if self.dead or self.utp is None:
            return
        if self.before_each is not None:
            self.before_each()  # the moment its silence is longest
        self.heard.append(trio.current_time())
        self.utp.datagram_received(packet.encode(), PEER)


@asynccontextmanager
async def writing_to_a_shut_window(
    take: int = 20,
) -> AsyncIterator[tuple[UtpSocket, ShutWindowPeer, UtpConnection]]:
    """An accepted connection whose writer has more bytes than the peer's window takes."""
    async with trio.open_nursery() as nursery:
        peer = ShutWindowPeer(nursery, take)
        async with open_utp_over(peer.send, HERE) as utp:
            peer.utp = utp
            nursery.start_soon(peer.run)
            syn = UtpPacket(UtpPacketType.SYN, ID, 0, 0, 1 << 20, 100, 0)
            utp.datagram_received(syn.encode(), PEER)
            stream = utp.incoming().receive_nowait()
            assert await stream.receive_some() == b"hi"
            nursery.start_soon(stream.send_all, b"x" * 200_000)
            with trio.fail_after(5):
                while peer.taken < take:
                    await trio.sleep(0.01)
            yield utp, peer, stream._connection.core
            nursery.cancel_scope.cancel()


def forged_syn() -> bytes:
    """A SYN from the peer's address with its id, and a sequence number the forger made up."""
    return UtpPacket(UtpPacketType.SYN, ID, 0, 0, 1 << 20, 0x4242, 0).encode()


async def test_a_live_peer_answering_probes_of_its_shut_window_is_not_replaceable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # We wait a timeout before probing a shut window, and back off: the peer answers each
    # probe at once, yet more than a second passes between its packets. Measured from its
    # last packet, that silence read as "stalled" (a third of the time: one SYN forged with
    # any sequence number then tore down the live connection).
    async with writing_to_a_shut_window() as (utp, peer, core):
        replaceable_at: list[float] = []
        forged: list[float] = []

        def check() -> None:
            now = trio.current_time()
            if core.replaceable(_now_us()):
                replaceable_at.append(now)
            if not forged and peer.heard and now - peer.heard[-1] >= 1.0:
                forged.append(now)  # the longest silence yet: the forger's best moment
                utp.datagram_received(forged_syn(), PEER)

        peer.before_each = check
        await trio.sleep(20)
        gaps = [later - earlier for earlier, later in itertools.pairwise(peer.heard)]
        assert max(gaps) > 1.0  # the case at hand: the peer's silences outlast a second
        assert replaceable_at == []
        assert forged
        stats = utp.statistics()
        assert (stats.replaced, stats.refused, stats.failed) == (0, 1, 0)
        assert core.state is UtpState.CONNECTED


async def test_a_peer_dead_behind_its_shut_window_is_replaceable_once_a_probe_goes_unanswered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The peer restarted while its window was shut: our next probe is never answered, and
    # a second after it went, the peer's new SYN replaces the dead connection.
    async with writing_to_a_shut_window() as (utp, peer, core):
        await trio.sleep(5)
        peer.dead = True
        with trio.fail_after(5):
            while not core.replaceable(_now_us()):
                await trio.sleep(0.01)
        now = trio.current_time()
        last_heard = peer.heard[-1]
        since = [t for t in peer.probed if t >= last_heard]
        assert since, "replaceable before any packet of ours went unanswered"
        unanswered = since[0]
        # Our first packet after the peer's last went within two timeouts (the probe in
        # flight expires, then the window is probed a timeout later: 0.5 s and 1 s here),
        # and counts as lost a second after it left.
        assert unanswered - last_heard <= 2 * INITIAL_TIMEOUT_US / 1e6
        assert 1.0 - 1e-6 <= now - unanswered <= 1.02  # (our poll: every 10 ms)
        utp.datagram_received(forged_syn(), PEER)
        await trio.sleep(0.01)
        assert utp.statistics().replaced == 1
        assert core.state is UtpState.FAILED
