"""The socket-wide receive budget of uTP (``UtpConfig.max_buffered``)."""

from __future__ import annotations

import heapq
import random
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_handshake import PeerAddress
from bip_handshake._utp_config import MAX_PAYLOAD, UtpConfig
from bip_handshake._utp_connection import (
    _REORDER_PACKET_COST,
    UtpConnection,
    UtpReceiveBudget,
    UtpState,
)
from bip_handshake._utp_packet import UtpPacket, UtpPacketType
from bip_handshake._utp_socket import UtpSocket, open_utp_over

SECOND = 1_000_000
HOSTILE = PeerAddress(IPv4Address("10.0.0.66"), 6666)
LOCAL = PeerAddress(IPv4Address("10.0.0.1"), 6881)


def syn(connection_id: int, seq: int) -> UtpPacket:
    return UtpPacket(UtpPacketType.SYN, connection_id, 0, 0, 1 << 20, seq, 0)


def data(
    conn: UtpConnection, seq: int, payload: bytes, kind: UtpPacketType = UtpPacketType.DATA
) -> UtpPacket:
    # ack_nr: the SYN-ACK's number less one acknowledges nothing (never an unsent packet).
    return UtpPacket(
        kind, conn.recv_id - 1 & 0xFFFF, 0, 0, 1 << 20, seq & 0xFFFF, conn._acked, payload=payload
    )


def accepted(budget: UtpReceiveBudget, config: UtpConfig, index: int) -> UtpConnection:
    conn = UtpConnection.accept(syn(index * 2, 1000), 5000, now_us=0, config=config, budget=budget)
    conn.datagrams_to_send(0)
    return conn


def check(budget: UtpReceiveBudget, conns: list[UtpConnection]) -> None:
    """The budget's counts are exactly what the connections hold, and within its limits."""
    assert budget.used == sum(len(c._inbound) + c._reorder_bytes for c in conns)
    assert budget.reorder_used == sum(c._reorder_bytes for c in conns)
    assert 0 <= budget.used <= budget.limit
    assert 0 <= budget.reorder_used <= budget.reorder_limit


def advertised(conn: UtpConnection, now: int) -> int:
    conn._ack_pending = True
    return UtpPacket.decode(conn.datagrams_to_send(now)[-1]).wnd_size


# ------------------------------------------------------------------------ the budget


def test_budget_and_config_validation() -> None:
    assert UtpConfig().max_buffered == 64 * 1024 * 1024
    budget = UtpReceiveBudget(10_000)
    assert (budget.limit, budget.reorder_limit, budget.free(), budget.reorder_free()) == (
        10_000,
        5_000,
        10_000,
        5_000,
    )
    for bad in (0, -1, True, 1.5, "1"):
        with pytest.raises(ValueError, match="positive int"):
            UtpReceiveBudget(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="two packets"):
        UtpConfig(max_buffered=2 * MAX_PAYLOAD - 1)
    with pytest.raises(ValueError, match="must be an int"):
        UtpConfig(max_buffered=1e6)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite number"):
        UtpConfig(max_buffered=True)
    # A connection made alone gets a budget of its own.
    alone = UtpConnection.connect(1, 1, now_us=0, config=UtpConfig(max_buffered=3 * MAX_PAYLOAD))
    assert alone._budget.limit == 3 * MAX_PAYLOAD


def test_hostile_reorder_buffers_stay_within_the_budget() -> None:
    config = UtpConfig(max_buffered=64 * MAX_PAYLOAD)
    budget = UtpReceiveBudget(config.max_buffered)
    chunk = b"h" * MAX_PAYLOAD
    hostile = [accepted(budget, config, i) for i in range(40)]
    for conn in hostile:
        # Never the next packet: everything waits out of order, as long as it may.
        for offset in range(2, 40):
            conn.receive_packet(data(conn, conn._ack_nr + offset, chunk), 1)
        check(budget, hostile)
    # Out-of-order data took its half, and no more.
    assert budget.reorder_used > budget.reorder_limit - MAX_PAYLOAD
    assert budget.used == budget.reorder_used
    # A well-behaved connection still gets in-order data through the other half.
    honest = accepted(budget, config, 100)
    everyone = [*hostile, honest]
    assert advertised(honest, 2) == budget.free()
    for _ in range(1, 100):
        honest.receive_packet(data(honest, honest._ack_nr + 1, chunk), 2)
        check(budget, everyone)
    assert len(honest._inbound) >= budget.limit - budget.reorder_limit - MAX_PAYLOAD
    assert advertised(honest, 3) == budget.free() < MAX_PAYLOAD
    # The reader drains it; the window opens again.
    assert honest.read()
    check(budget, everyone)
    assert advertised(honest, 4) == budget.free() >= budget.limit // 2 - MAX_PAYLOAD


def test_a_full_budget_still_takes_the_packet_that_fills_a_hole() -> None:
    # Out-of-order data was selectively acked: the peer dropped it, so it can never be
    # evicted (that lost it for good, and the stream stalled), and only the packet filling
    # the hole before it lets it go: that one is taken over budget, by one packet.
    config = UtpConfig(max_buffered=8 * MAX_PAYLOAD)
    budget = UtpReceiveBudget(config.max_buffered)
    chunk = b"e" * MAX_PAYLOAD
    held = chunk[:-_REORDER_PACKET_COST]  # charged a full packet out of order
    stuck = accepted(budget, config, 1)
    other = accepted(budget, config, 2)
    conns = [stuck, other]
    for offset in range(2, 6):
        stuck.receive_packet(data(stuck, stuck._ack_nr + offset, held), 1)
    assert stuck._reorder_bytes == 4 * MAX_PAYLOAD  # the out-of-order half
    for _ in range(4):
        other.receive_packet(data(other, other._ack_nr + 1, chunk), 1)
    assert budget.free() == 0
    check(budget, conns)
    # Other's next in-order packet finds no room, and it has no hole to fill: dropped.
    before = other._ack_nr
    other.receive_packet(data(other, before + 1, chunk), 2)
    assert other._ack_nr == before
    # Stuck says it has room for the packet that fills its hole (it takes it over budget),
    # other that it has none.
    assert advertised(stuck, 2) == stuck._peer_packet
    assert advertised(other, 2) == 0
    # Stuck's hole arrives: taken, and everything after it is delivered, nothing lost.
    first = stuck._ack_nr + 1
    stuck.receive_packet(data(stuck, first, chunk), 3)
    assert stuck._ack_nr == first + 4 & 0xFFFF
    delivered = MAX_PAYLOAD + 4 * len(held)
    assert len(stuck._inbound) == delivered
    assert not stuck._reorder
    # One packet over, no more (less the charges of the packets delivered).
    assert budget.used == budget.limit + MAX_PAYLOAD - 4 * _REORDER_PACKET_COST
    # Reading gives it back.
    assert len(stuck.read()) == delivered
    check(budget, conns)


def test_closed_reader_and_failures_give_the_budget_back() -> None:
    config = UtpConfig(max_buffered=16 * MAX_PAYLOAD)
    budget = UtpReceiveBudget(config.max_buffered)
    chunk = b"c" * 100
    a, b, c = (accepted(budget, config, i) for i in range(3))
    conns = [a, b, c]
    for conn in conns:
        conn.receive_packet(data(conn, conn._ack_nr + 1, chunk), 1)
        conn.receive_packet(data(conn, conn._ack_nr + 2, chunk), 1)
    check(budget, conns)
    a.close(2)  # drops what was read in order; the reorder buffer stays until delivered
    check(budget, conns)
    a.receive_packet(data(a, a._ack_nr + 1, chunk), 3)  # delivered to nobody
    check(budget, conns)
    assert a._reorder_bytes == 0
    assert not a._inbound
    b.abort()
    check(budget, conns)
    assert b._reorder_bytes == 0
    # A FIN ends the stream and clears what waits past it.
    c.receive_packet(data(c, c._ack_nr + 5, chunk), 4)
    c.receive_packet(data(c, c._ack_nr + 1, b"", UtpPacketType.FIN), 4)
    assert c.eof_received
    check(budget, conns)
    assert not c._reorder
    # A failed connection's unread data is the reader's until the stream closes it.
    assert budget.used == len(b._inbound) + len(c._inbound) == 200
    b.close(5)
    check(budget, conns)
    assert budget.used == 100


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),  # which connection
            st.sampled_from(["data", "fin", "read", "close", "abort"]),
            st.integers(1, 12),  # sequence offset past the last in-order packet
            st.integers(0, MAX_PAYLOAD),  # payload size
        ),
        max_size=80,
    )
)
def test_budget_accounting_property(ops: list[tuple[int, str, int, int]]) -> None:
    config = UtpConfig(max_buffered=6 * MAX_PAYLOAD, receive_buffer=4 * MAX_PAYLOAD)
    budget = UtpReceiveBudget(config.max_buffered)
    conns = [accepted(budget, config, i) for i in range(4)]
    for now, (index, op, offset, size) in enumerate(ops, start=1):
        conn = conns[index]
        if op == "data":
            conn.receive_packet(data(conn, conn._ack_nr + offset, b"p" * size), now)
        elif op == "fin":
            conn.receive_packet(data(conn, conn._ack_nr + offset, b"", UtpPacketType.FIN), now)
        elif op == "read":
            conn.read(size)
        elif op == "close":
            conn.close(now)
        else:
            conn.abort()
        conn.datagrams_to_send(now)
        check(budget, conns)
        if conn.state is not UtpState.FAILED and not conn.finished:
            assert advertised(conn, now) <= budget.free()


# ----------------------------------------------------------------- transfers still work


def run_transfer(config: UtpConfig, size: int, seed: int, loss: float) -> None:
    """a sends ``size`` bytes to b over a lossy, jittery link; b reads slowly."""
    rng = random.Random(seed)
    a = UtpConnection.connect(
        rng.randrange(0x10000), rng.randrange(0x10000), now_us=0, config=config
    )
    first = UtpPacket.decode(a.datagrams_to_send(0)[0])
    budget = UtpReceiveBudget(config.max_buffered)
    b = UtpConnection.accept(first, rng.randrange(0x10000), now_us=0, config=config, budget=budget)
    payload = rng.randbytes(size)
    sent = 0
    got = bytearray()
    queue: list[tuple[int, int, str, bytes]] = []
    counter = 0
    now = 0
    while not b.eof_received and now < 600 * SECOND:
        if sent < size:
            sent += a.write(payload[sent:])
        elif not a.write_shut:
            a.shutdown_write()
        if rng.random() < 0.5:
            got += b.read(4 * MAX_PAYLOAD)
        assert budget.used <= budget.limit
        for name, conn in (("ab", a), ("ba", b)):
            for datagram in conn.datagrams_to_send(now):
                if rng.random() < loss:
                    continue
                counter += 1
                heapq.heappush(queue, (now + rng.randint(5_000, 30_000), counter, name, datagram))
        times = [t for t in (a.next_deadline(), b.next_deadline()) if t is not None]
        if queue:
            times.append(queue[0][0])
        assert times
        now = max(now + 1, min(times))
        while queue and queue[0][0] <= now:
            _, _, name, datagram = heapq.heappop(queue)
            (b if name == "ab" else a).receive_packet(UtpPacket.decode(datagram), now)
        for conn in (a, b):
            deadline = conn.next_deadline()
            if deadline is not None and deadline <= now:
                conn.handle_timer(now)
    got += b.read()
    assert bytes(got) == payload
    assert budget.used == 0


@pytest.mark.parametrize("seed", range(3))
def test_a_transfer_completes_with_a_small_budget(seed: int) -> None:
    # The budget, not receive_buffer, is the limit: 3 packets, half of them out of order.
    run_transfer(UtpConfig(max_buffered=3 * MAX_PAYLOAD), 200_000, seed, loss=0.05)


def test_a_transfer_completes_with_the_default_budget() -> None:
    run_transfer(UtpConfig(), 300_000, 7, loss=0.02)


# --------------------------------------------------------------------------- the socket


async def test_socket_hostile_connections_stay_within_the_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = UtpConfig(max_buffered=32 * MAX_PAYLOAD, max_pending_accepts=64)
    sent: list[bytes] = []

    async def send(datagram: bytes, address: PeerAddress) -> None:
        sent.append(datagram)

    chunk = b"z" * MAX_PAYLOAD
    async with open_utp_over(send, LOCAL, config=config) as utp:
        assert isinstance(utp, UtpSocket)
        for index in range(50):
            utp.datagram_received(syn(index * 2, 100).encode(), HOSTILE)
        await trio.sleep(0.01)
        acks = {
            p.connection_id: p for p in map(UtpPacket.decode, sent) if p.type is UtpPacketType.STATE
        }
        assert len(acks) == 50
        for index in range(50):
            ack = acks[index * 2]
            for offset in range(2, 30):
                packet = UtpPacket(
                    UtpPacketType.DATA,
                    index * 2 + 1,
                    0,
                    0,
                    1 << 20,
                    100 + offset,
                    # Wrapped: a SYN-ACK numbered 0 (1 in 65,536) is acknowledged as 65535.
                    ack.seq_nr - 1 & 0xFFFF,
                    payload=chunk,
                )
                utp.datagram_received(packet.encode(), HOSTILE)
            budget = utp._budget
            assert budget.used <= budget.limit
            assert budget.reorder_used <= budget.reorder_limit
        assert budget.reorder_used > budget.reorder_limit - MAX_PAYLOAD
        held = sum(c.core._reorder_bytes + len(c.core._inbound) for c in utp._connections.values())
        assert held == budget.used == utp.statistics().buffered


async def test_socket_transfer_completes_with_a_small_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = UtpConfig(max_buffered=4 * MAX_PAYLOAD)
    other = PeerAddress(IPv4Address("10.0.0.2"), 6882)
    sockets: dict[PeerAddress, UtpSocket] = {}
    rng = random.Random(3)

    def sender(source: PeerAddress) -> Callable[[bytes, PeerAddress], Awaitable[None]]:
        async def send(datagram: bytes, address: PeerAddress) -> None:
            if rng.random() >= 0.03:  # a little loss
                sockets[address].datagram_received(datagram, source)
            await trio.sleep(0.005)

        return send

    payload = rng.randbytes(300_000)
    async with (
        open_utp_over(sender(LOCAL), LOCAL, config=config) as a,
        open_utp_over(sender(other), other, config=config) as b,
    ):
        sockets[LOCAL], sockets[other] = a, b
        received = bytearray()

        async def server() -> None:
            stream = await b.incoming().receive()
            while chunk := await stream.receive_some(MAX_PAYLOAD):
                received.extend(chunk)
                assert b._budget.used <= b._budget.limit
            await stream.aclose()

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server)
                stream = await a.connect(other)
                await stream.send_all(payload)
                await stream.send_eof()
                assert await stream.receive_some() == b""
                await stream.aclose()
        assert bytes(received) == payload
        assert b._budget.used == 0
