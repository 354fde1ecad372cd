"""uTP pacing: a window that opens at once leaves spread over the round trip, not in one burst.

The regression: uploading to libtorrent over loopback resent packets that loopback never
loses. They were dropped by the kernel: libtorrent's UDP receive buffer (its OS default,
208 KiB, about 90 datagrams) overflowed when a whole congestion window left back to back
(``ss -uamp`` counted the drops, ``RcvbufErrors`` in /proc/net/snmp matched the resends). The
link below models that receiver: a bounded datagram queue drained at a fixed rate.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field

import pytest
from _utp_sim import Event, advance

import bip_handshake._utp_connection as module
from bip_handshake._utp_config import MAX_PAYLOAD, UtpConfig
from bip_handshake._utp_connection import UtpConnection, UtpState
from bip_handshake._utp_packet import UtpPacket, UtpPacketType

CONFIG = UtpConfig()


@dataclass
class BufferedLink:
    """Two cores; what goes to ``b`` waits in a socket buffer of ``capacity`` datagrams that
    ``b`` drains one per ``service_us`` (a full buffer drops the datagram, as the kernel does).
    """

    a: UtpConnection
    b: UtpConnection
    delay_us: int
    capacity: int
    service_us: int
    now: int = 0
    in_flight: list[Event] = field(default_factory=list)
    counter: int = 0
    departures: deque[int] = field(default_factory=deque)  # of datagrams queued at b
    dropped: int = 0
    bursts: list[int] = field(default_factory=list)  # data packets per datagrams_to_send of a

    def _push(self, at: int, name: str, data: bytes) -> None:
        self.counter += 1
        heapq.heappush(self.in_flight, (at, self.counter, name, data))

    def collect(self) -> None:
        sent = self.a.datagrams_to_send(self.now)
        self.bursts.append(sum(1 for d in sent if d[0] >> 4 == UtpPacketType.DATA))
        for data in sent:
            arrival = self.now + self.delay_us
            while self.departures and self.departures[0] <= arrival:
                self.departures.popleft()
            if len(self.departures) >= self.capacity:
                self.dropped += 1
                continue
            start = self.departures[-1] if self.departures else arrival
            departure = max(start, arrival) + self.service_us
            self.departures.append(departure)
            self._push(departure, "ab", data)
        for data in self.b.datagrams_to_send(self.now):
            self._push(self.now + self.delay_us, "ba", data)

    def step(self) -> bool:
        """Advance to the next event; False when nothing is left to happen."""
        return advance(self)


def buffered_link(delay_us: int, capacity: int, service_us: int) -> BufferedLink:
    rng = random.Random(7)
    a = UtpConnection.connect(
        rng.randrange(0x10000), rng.randrange(0x10000), now_us=0, config=CONFIG
    )
    syn = UtpPacket.decode(a.datagrams_to_send(0)[0])
    b = UtpConnection.accept(syn, rng.randrange(0x10000), now_us=0, config=CONFIG)
    link = BufferedLink(a, b, delay_us, capacity, service_us)
    for _ in range(100):
        if a.state is UtpState.CONNECTED:
            break
        link.step()
    assert a.state is UtpState.CONNECTED
    return link


def upload_in_bursts(link: BufferedLink, bursts: int, size: int) -> int:
    """``a`` writes ``size`` bytes at once, waits until ``b`` read them, ``bursts`` times
    (a seeder answering a batch of requests); the bytes ``b`` read."""
    received = 0
    for _ in range(bursts):
        written = 0
        target = received + size
        for _ in range(200_000):
            if written < size:
                written += link.a.write(bytes(size - written))
            received += len(link.b.read())
            if received >= target:
                break
            assert link.step(), "the link went quiet"
        assert received == target
        link.now += 20_000  # the application is idle for a while (pacing tokens refill)
    return received


def test_pacing_keeps_a_small_receive_buffer_from_overflowing() -> None:
    # 1 ms each way; the receiver's socket holds 48 datagrams and reads one per 2 us
    # (faster than we send): a whole window sent back to back overflows it, a paced one does not.
    link = buffered_link(delay_us=1_000, capacity=48, service_us=2)
    assert upload_in_bursts(link, bursts=12, size=512 * 1024) == 12 * 512 * 1024
    stats = link.a.statistics()
    assert link.dropped == 0
    assert stats.retransmits == 0
    assert max(link.bursts) <= 33  # the pacing bucket, and the one packet always allowed
    assert stats.cwnd > 48 * MAX_PAYLOAD  # the window did grow past the buffer


def test_without_pacing_the_same_link_drops(monkeypatch: pytest.MonkeyPatch) -> None:
    # The regression's other half: the model does reproduce the loss when nothing paces.
    monkeypatch.setattr(module, "_PACING_BURST", 1 << 40)
    link = buffered_link(delay_us=1_000, capacity=48, service_us=2)
    upload_in_bursts(link, bursts=12, size=512 * 1024)
    assert link.dropped > 0
    assert link.a.statistics().retransmits > 0


def test_a_window_opened_at_once_leaves_in_paced_slices() -> None:
    link = buffered_link(delay_us=5_000, capacity=10_000, service_us=0)
    upload_in_bursts(link, bursts=2, size=400_000)
    a = link.a
    assert a.statistics().cwnd > 100 * MAX_PAYLOAD
    now = link.now
    a.write(bytes(300_000))
    first = a.datagrams_to_send(now)
    assert 2 <= len(first) <= 33
    deadline = a.next_deadline()
    assert deadline is not None
    assert now < deadline < now + 10_000  # well within the round trip
    assert a.datagrams_to_send(now) == []  # nothing more until then
    later = a.datagrams_to_send(deadline)
    assert later  # the tokens accrued meanwhile let more go
    # The rate: over one round trip, about gain * cwnd bytes (never the whole backlog at once).
    sent = len(first) + len(later)
    t = deadline
    while t < now + 10_000:
        nxt = a.next_deadline()
        assert nxt is not None
        t = max(t + 1, nxt)
        sent += len(a.datagrams_to_send(t))
    assert sent * MAX_PAYLOAD <= 2 * a.statistics().cwnd + 33 * MAX_PAYLOAD


def test_no_pacing_before_a_round_trip_is_measured() -> None:
    a = UtpConnection.connect(1, 1, now_us=0, config=CONFIG)
    syn = UtpPacket.decode(a.datagrams_to_send(0)[0])
    b = UtpConnection.accept(syn, 9, now_us=0, config=CONFIG)
    for data in b.datagrams_to_send(0):
        a.receive_packet(UtpPacket.decode(data), 0)
    a.write(bytes(10 * MAX_PAYLOAD))
    a._cwnd = 100.0 * MAX_PAYLOAD
    a._rtt_us = None
    a._peer_wnd = 1 << 20
    assert len(a.datagrams_to_send(0)) == 10  # only the window limits
