"""uTP window updates: a window that reopens is announced at once, once per opening, for
our own reads and for reads on other connections sharing the socket's receive budget."""

from __future__ import annotations

import random

from _utp_sim import SECOND, MtuLink, advance_to, mtu_pair

from bip_handshake._utp_config import MAX_PAYLOAD, UtpConfig
from bip_handshake._utp_connection import UtpConnection, UtpReceiveBudget
from bip_handshake._utp_packet import UtpPacket, UtpPacketType, sack_offsets

SMALL = UtpConfig(receive_buffer=4 * MAX_PAYLOAD)


def data(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def states(datagrams: list[bytes]) -> list[UtpPacket]:
    packets = [UtpPacket.decode(d) for d in datagrams]
    assert all(p.type is UtpPacketType.STATE for p in packets)
    return packets


def deliver(net: MtuLink, datagrams: list[bytes]) -> None:
    """Put what b sent (taken by the test) on the way to a."""
    for datagram in datagrams:
        net.counter += 1
        net.in_flight.append((net.now + net.delay_us, net.counter, "ba", datagram))


def stall(net: MtuLink) -> None:
    """Fill b's window without reading, until nothing moves."""
    net.a.write(data(20 * MAX_PAYLOAD))
    net.run_until(
        lambda: not net.in_flight and net.b._advertised < net.b._update_threshold, 10 * SECOND
    )
    assert net.b.readable > SMALL.receive_buffer - net.b._update_threshold


def test_a_reopened_window_is_announced_at_once_and_once() -> None:
    net = mtu_pair(SMALL)
    stall(net)
    assert net.b not in net.b._budget._starved  # its own buffer is full, not the budget
    net.b.read(10)
    assert net.b.datagrams_to_send(net.now) == []  # not a packet's worth yet
    net.b.read()
    (update,) = states(net.b.datagrams_to_send(net.now))
    assert update.wnd_size == SMALL.receive_buffer
    net.b.read()  # nothing more to read: no second update
    assert net.b.datagrams_to_send(net.now) == []
    # The sender resumes one trip later, without waiting for a zero-window probe.
    stalled_at = net.now
    before = net.a.statistics().packets_sent
    deliver(net, [update.encode()])
    net.run_until(lambda: net.a.statistics().packets_sent > before, SECOND)
    assert net.now - stalled_at <= net.delay_us
    assert net.a.statistics().timeouts == 0


def test_each_opening_gets_its_update() -> None:
    net = mtu_pair(SMALL)
    for _ in range(3):
        stall(net)
        net.b.read()
        update = net.b.datagrams_to_send(net.now)
        assert len(states(update)) == 1
        deliver(net, update)


def test_an_update_past_half_the_buffer() -> None:
    # A window that was open (a packet or more) but small grows past half: worth telling.
    config = UtpConfig(receive_buffer=16 * MAX_PAYLOAD)
    net = mtu_pair(config)
    net.a.write(data(14 * MAX_PAYLOAD))
    net.run_until(lambda: net.b.readable == 14 * MAX_PAYLOAD, 10 * SECOND)
    net.run_until(lambda: not net.in_flight, 10 * SECOND)
    net.collect()
    assert MAX_PAYLOAD < net.b._advertised < config.receive_buffer // 2
    net.b.read(5 * MAX_PAYLOAD)  # 7 packets' room: still under half
    assert net.b.datagrams_to_send(net.now) == []
    net.b.read(MAX_PAYLOAD)
    (update,) = states(net.b.datagrams_to_send(net.now))
    assert update.wnd_size == 8 * MAX_PAYLOAD
    net.b.read(MAX_PAYLOAD)
    assert net.b.datagrams_to_send(net.now) == []


def test_a_slow_reader_never_leaves_the_sender_waiting_for_a_probe() -> None:
    net = mtu_pair(SMALL)
    payload = data(400_000, seed=2)
    got = bytearray()
    start = net.now
    net.a.write(payload)  # the send buffer takes it all
    net.a.shutdown_write()
    for _ in range(1000):  # the reader wakes every 50 ms
        advance_to(net, net.now + 50_000)
        got += net.b.read()
        if net.b.eof_received and not net.b.readable:
            break
    assert got == payload
    stats = net.a.statistics()
    assert stats.timeouts == 0  # no zero-window probe was ever needed
    # A window of four packets per 50 ms wake-up, about: no probe timer in the way.
    wakeups = len(payload) / SMALL.receive_buffer
    assert net.now - start <= (wakeups + 10) * 50_000


def _shared_pair(budget: UtpReceiveBudget, config: UtpConfig, seed: int) -> MtuLink:
    rng = random.Random(seed)
    a = UtpConnection.connect(
        rng.randrange(0x10000), rng.randrange(0x10000), now_us=0, config=config
    )
    syn = UtpPacket.decode(a.datagrams_to_send(0)[0])
    b = UtpConnection.accept(syn, rng.randrange(0x10000), now_us=0, config=config, budget=budget)
    net = MtuLink(a, b)
    net.run_until(lambda: a.is_open and b.is_open)
    return net


def test_reading_one_connection_reopens_another_sharing_the_budget() -> None:
    config = UtpConfig(max_buffered=8 * MAX_PAYLOAD)
    budget = UtpReceiveBudget(config.max_buffered)
    hog = _shared_pair(budget, config, seed=1)
    other = _shared_pair(budget, config, seed=2)
    hog.a.write(data(20 * MAX_PAYLOAD))
    hog.run_until(lambda: budget.free() < MAX_PAYLOAD, 10 * SECOND)
    # The other connection hears from its peer while the budget is spent: the window it
    # advertises back is shut.
    other.a.write(b"hello")
    other.run_until(lambda: other.b._advertised < MAX_PAYLOAD, 10 * SECOND)
    assert budget.take_woken() == []
    hog.b.read()  # room again, on the other connection's behalf too
    assert other.b in budget.take_woken()
    (update,) = states(other.b.datagrams_to_send(other.now))
    assert update.wnd_size >= MAX_PAYLOAD
    assert budget.take_woken() == []  # once per opening
    assert other.b.datagrams_to_send(other.now) == []


def test_connections_that_failed_leave_the_budget_alone() -> None:
    config = UtpConfig(max_buffered=8 * MAX_PAYLOAD)
    budget = UtpReceiveBudget(config.max_buffered)
    hog = _shared_pair(budget, config, seed=3)
    other = _shared_pair(budget, config, seed=4)
    hog.a.write(data(20 * MAX_PAYLOAD))
    hog.run_until(lambda: budget.free() < MAX_PAYLOAD, 10 * SECOND)
    other.a.write(b"hello")
    other.run_until(lambda: other.b._advertised < MAX_PAYLOAD, 10 * SECOND)
    other.b.abort()
    hog.b.read()
    assert other.b not in budget.take_woken()
    assert other.b not in budget._starved


def test_a_keepalive_selective_ack_is_relative_to_its_own_ack_nr() -> None:
    # A keepalive acks ack_nr - 1; its bitmask must name the packets we hold relative to
    # that, or the peer would take the packets next to them as received.
    net = mtu_pair()
    sender, receiver = net.a, net.b
    first = sender._seq_nr
    sender.write(data(4 * sender._payload_size))
    packets = [UtpPacket.decode(d) for d in sender.datagrams_to_send(net.now)]
    assert len(packets) == 2  # the initial window
    receiver.receive_packet(packets[1], net.now)  # the first one is lost: the second waits
    receiver.datagrams_to_send(net.now)
    receiver._keepalive_pending = True
    (keepalive,) = states(receiver.datagrams_to_send(net.now))
    assert keepalive.ack_nr == (first - 2) & 0xFFFF
    assert keepalive.selective_ack is not None
    held = [(keepalive.ack_nr + 2 + o) & 0xFFFF for o in sack_offsets(keepalive.selective_ack)]
    assert held == [(first + 1) & 0xFFFF]
