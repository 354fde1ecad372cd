"""uTP: the retransmission backoff ends with the peer's first packet after an outage (as
libtorrent), so that a lossy link does not crawl; RESETs that ack nothing we sent end nothing."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from _utp_sim import SECOND, Event, advance, mtu_pair

from bip_handshake._utp_config import MAX_PAYLOAD, UtpConfig, UtpConnectError
from bip_handshake._utp_connection import (
    MIN_TIMEOUT_US,
    UtpConnection,
    UtpState,
    seq_distance,
)
from bip_handshake._utp_packet import UtpPacket, UtpPacketType

CONFIG = UtpConfig()
ONE_WAY = 1000  # µs


def pair(
    config: UtpConfig = CONFIG, *, a_seq: int = 1, b_seq: int = 5000
) -> tuple[UtpConnection, UtpConnection]:
    """An initiator and the connection that accepted its SYN (the SYN taken, nothing else)."""
    a = UtpConnection.connect(100, a_seq, now_us=0, config=config)
    syn = UtpPacket.decode(a.datagrams_to_send(0)[0])
    return a, UtpConnection.accept(syn, b_seq, now_us=0, config=config)


def deliver(src: UtpConnection, dst: UtpConnection, now: int, *, lost: bool = False) -> int:
    """What ``src`` sends at ``now`` arrives one way later (or is lost); how many went."""
    sent = src.datagrams_to_send(now)
    if not lost:
        for data in sent:
            dst.receive_packet(UtpPacket.decode(data), now + ONE_WAY)
    return len(sent)


def connected_with_a_sample() -> tuple[UtpConnection, UtpConnection, int]:
    """A connected pair, ``a`` with one 2 ms round trip measured; and the time."""
    a, b = pair()
    t = 0
    deliver(b, a, t)
    t += 2 * ONE_WAY
    deliver(a, b, t)  # a confirms
    a.write(b"x" * 100)
    t += 2 * ONE_WAY
    deliver(a, b, t)
    t += 2 * ONE_WAY
    deliver(b, a, t)
    assert a._rtt_us is not None
    assert a._rtt_us < 10_000
    assert a._rto_us == MIN_TIMEOUT_US
    return a, b, t


# ------------------------------------------------------------------------------ backoff


def test_the_backoff_ends_with_the_first_packet_after_an_outage() -> None:
    a, b, t = connected_with_a_sample()
    a.write(b"y" * 100)
    for _ in range(6):  # an outage: a's packet is lost six times
        assert a.datagrams_to_send(t)
        deadline = a._rto_deadline
        assert deadline is not None
        t = deadline
        a.handle_timer(t)
    assert a._rto_us == 32 * SECOND  # 500 ms doubled six times
    deliver(a, b, t)  # the outage ends: the resend arrives, b's ack too
    t += 2 * ONE_WAY
    deliver(b, a, t)
    assert a.all_sent
    assert (a._timeouts, a._rto_us) == (0, MIN_TIMEOUT_US)

    a.write(b"z" * (2 * MAX_PAYLOAD))
    sent = t
    deliver(a, b, t)  # both packets arrive; b's one ack is lost
    deliver(b, a, t + ONE_WAY, lost=True)
    deadline = a._rto_deadline
    assert deadline is not None
    assert deadline - sent <= SECOND  # was 32 s: b's keepalive (29 s) came first

    # Both sides' timers in order, for 35 s: a resends, b re-acks; b's keepalive (acking
    # ack_nr - 1, an old ack by then) times no 29 s round trip.
    now = t
    for _ in range(1000):
        deadlines = [d for d in (a.next_deadline(), b.next_deadline()) if d is not None]
        now = min(deadlines)
        if now > sent + 35 * SECOND:
            break
        for conn in (a, b):
            if conn.next_deadline() == now:
                conn.handle_timer(now)
        deliver(a, b, now)
        deliver(b, a, now)
    assert a.all_sent
    assert b.read() == b"x" * 100 + b"y" * 100 + b"z" * (2 * MAX_PAYLOAD)
    assert a._rtt_us is not None
    assert a._rtt_us < 10_000
    assert a._rto_us == MIN_TIMEOUT_US


def test_a_timeout_after_the_backoff_ended_starts_doubling_afresh() -> None:
    a, b, t = connected_with_a_sample()
    a.write(b"y" * 100)
    for _ in range(3):
        a.datagrams_to_send(t)
        deadline = a._rto_deadline
        assert deadline is not None
        t = deadline
        a.handle_timer(t)
    assert a._rto_us == 8 * MIN_TIMEOUT_US
    # A packet from b that acks nothing new (its keepalive) still shows the path works.
    keepalive = UtpPacket(
        UtpPacketType.STATE, a.recv_id, 0, 0, 1 << 20, b._seq_nr, (b._ack_nr - 1) & 0xFFFF
    )
    a.receive_packet(keepalive, t + 10)
    assert (a._timeouts, a._rto_us) == (0, MIN_TIMEOUT_US)
    assert a._rto_deadline == t + 10 + MIN_TIMEOUT_US  # brought in from t + 4 s
    a.datagrams_to_send(t + 10)
    a.handle_timer(t + 10 + MIN_TIMEOUT_US)
    assert (a._timeouts, a._rto_us) == (1, 2 * MIN_TIMEOUT_US)


def test_a_packet_never_pushes_the_resend_deadline_back() -> None:
    # A peer streaming data at us must not hold back the resend of our lost packet.
    a, b, t = connected_with_a_sample()
    a.write(b"y" * 100)
    assert deliver(a, b, t, lost=True) == 1
    deadline = a._rto_deadline
    assert deadline == t + MIN_TIMEOUT_US
    for step in range(1, 10):
        b.write(b"d" * 100)
        deliver(b, a, t + step * 50_000)
        assert a._rto_deadline == deadline


def test_a_path_shrunk_below_our_datagrams_restarts_the_search_while_the_peer_talks() -> None:
    # The peer's packets keep arriving (each ends the backoff) while our full datagrams
    # vanish: two timeouts without an ack of ours still restart the search.
    net = mtu_pair(max_ab=1472, max_ba=1472)
    a, b = net.a, net.b

    def pump() -> int:
        a.write(bytes(50_000))
        b.write(b"chatter")  # a packet or so per round trip
        b.read()
        a.read()
        return a.mtu

    net.run_until(lambda: pump() == 1472, 10 * SECOND)
    net.max_ab = 1280 - 28  # no ICMP: a's full packets vanish, its acks pass
    heard = b.statistics().packets_sent
    net.run_until(lambda: pump() == 1232, 10 * SECOND)
    assert b.statistics().packets_sent > heard + 2  # b spoke in between
    assert a.statistics().timeouts >= 2


@dataclass
class LossyLink:
    """Two cores over a link that loses, duplicates and delays datagrams at random."""

    a: UtpConnection
    b: UtpConnection
    rng: random.Random
    loss: float
    dup: float
    delay_us: tuple[int, int]
    now: int = 0
    in_flight: list[Event] = field(default_factory=list)
    counter: int = 0

    def collect(self) -> None:
        """Send what both cores have, through the lossy link."""
        for name, core in (("ab", self.a), ("ba", self.b)):
            for data in core.datagrams_to_send(self.now):
                if self.rng.random() < self.loss:
                    continue
                for _ in range(2 if self.rng.random() < self.dup else 1):
                    self.counter += 1
                    arrival = self.now + self.rng.randint(*self.delay_us)
                    heapq.heappush(self.in_flight, (arrival, self.counter, name, data))


def lossy_transfer(seed: int) -> float:
    """150 KB one way and 25 KB the other over a link losing 30 % each way; the seconds of
    simulated time it took (it must finish within 900)."""
    config = UtpConfig(receive_buffer=3 * 1196, max_timeouts=12, idle_timeout=600.0)
    rng = random.Random(seed)
    a, b = pair(config, a_seq=65530, b_seq=rng.randrange(0x10000))  # a's numbers wrap
    net = LossyLink(a, b, rng, loss=0.3, dup=0.0, delay_us=(ONE_WAY, ONE_WAY))
    ab, ba = rng.randbytes(150_000), rng.randbytes(25_000)
    got_ab, got_ba = bytearray(), bytearray()
    sent = {"ab": 0, "ba": 0}
    while net.now < 900 * SECOND:
        for name, writer, payload in (("ab", a, ab), ("ba", b, ba)):
            if sent[name] < len(payload):
                sent[name] += writer.write(payload[sent[name] :])
            elif not writer.write_shut:
                writer.shutdown_write()
        got_ab += b.read()
        got_ba += a.read()
        if (a.eof_received and b.eof_received) or UtpState.FAILED in (a.state, b.state):
            break
        assert advance(net)
    assert (bytes(got_ab), bytes(got_ba)) == (ab, ba), (seed, a.error, b.error)
    return net.now / SECOND


def test_a_lossy_link_does_not_crawl() -> None:
    # While each loss after an outage waited for the backed-off timeout (and the estimate
    # the peer's keepalive spoiled), these took up to 900 s and more (one never finished);
    # now at most about 210 s.
    took = [lossy_transfer(seed) for seed in range(8)]
    assert max(took) < 300, took


# ------------------------------------------------------------------------------- RESETs


def reset(conn: UtpConnection, ack_nr: int) -> UtpPacket:
    """A RESET with ``conn``'s receive id acking ``ack_nr``."""
    return UtpPacket(UtpPacketType.RESET, conn.recv_id, 0, 0, 0, 77, ack_nr & 0xFFFF)


def test_a_reset_while_connecting_must_ack_our_syn() -> None:
    a, _ = pair(a_seq=40_000)
    for ack_nr in (0, 39_999, 40_001, 7):
        a.receive_packet(reset(a, ack_nr), 10)
        assert a.state is UtpState.SYN_SENT
    a.receive_packet(reset(a, 40_000), 20)
    assert a.state is UtpState.FAILED
    assert isinstance(a.error, UtpConnectError)


def test_a_reset_acking_what_we_never_sent_is_ignored() -> None:
    a, b, t = connected_with_a_sample()
    last = (a._seq_nr - 1) & 0xFFFF  # the DATA packet b acked
    # Past what we sent, or long before what the peer already acked (a blind guess).
    for ack_nr in (last + 2, last + 1000, last + 0x7FFF, last - 0x8000, last - 100, last - 4):
        a.receive_packet(reset(a, ack_nr), t)
        assert a.state is UtpState.CONNECTED
    # Still works.
    a.write(b"more")
    deliver(a, b, t)
    assert b.read().endswith(b"more")
    # Acking what the peer acked, or a little before (reordered behind a later ack): honoured.
    a.receive_packet(reset(a, last - 3), t)
    assert a.state is UtpState.FAILED


def test_our_own_resets_still_end_the_peer() -> None:
    # An abort mid-connection: the RESET acks the peer's last in-order packet.
    for a_seq, b_seq in ((1, 5000), (65535, 0), (30_000, 65_534)):
        a, b = pair(a_seq=a_seq, b_seq=b_seq)
        deliver(b, a, 0)
        deliver(a, b, 10)
        a.write(b"x")
        deliver(a, b, 20)
        b.abort()
        deliver(b, a, 30)
        assert a.state is UtpState.FAILED
        a, b = pair(a_seq=a_seq, b_seq=b_seq)
        deliver(b, a, 0)
        deliver(a, b, 10)
        a.abort()
        deliver(a, b, 20)
        assert b.state is UtpState.FAILED
    # A socket's RESET for a connection it does not know acks the packet it answers.
    a = UtpConnection.connect(100, 12_345, now_us=0, config=CONFIG)
    syn = UtpPacket.decode(a.datagrams_to_send(0)[0])
    a.receive_packet(reset(a, syn.seq_nr), 10)
    assert a.state is UtpState.FAILED
    a, b = pair(a_seq=777, b_seq=9)
    deliver(b, a, 0)
    a.write(b"x")
    data = UtpPacket.decode(a.datagrams_to_send(10)[0])
    a.receive_packet(reset(a, data.seq_nr), 20)
    assert a.state is UtpState.FAILED


def test_an_initiator_giving_up_while_connecting_resets_the_unconfirmed_accept() -> None:
    # Its SYN_SENT abort acks 0 (it knew none of our numbers): 0 is far from our own.
    a, b = pair(b_seq=40_000)
    assert seq_distance(0, (b._seq_nr - 1) & 0xFFFF) >= 0x8000
    a.abort()
    packet = UtpPacket.decode(a.datagrams_to_send(10)[0])
    assert (packet.type, packet.ack_nr) == (UtpPacketType.RESET, 0)
    b.receive_packet(packet, 20)
    assert b.state is UtpState.FAILED
    # Once the initiator confirmed, an ack of 0 is as unknown as any other.
    a, b = pair(b_seq=40_000)
    deliver(b, a, 0)
    deliver(a, b, 10)
    b.receive_packet(reset(b, 0), 20)
    assert b.state is UtpState.CONNECTED


def test_a_reset_answering_our_keepalive_ends_the_connection() -> None:
    # A peer that forgot the connection answers our ST_STATE (which carries our next,
    # unsent number) with a RESET acking that number: honoured, not left to idle_timeout.
    a, _b, t = connected_with_a_sample()
    t += 30 * SECOND
    a.handle_timer(t)
    (keepalive,) = [UtpPacket.decode(d) for d in a.datagrams_to_send(t)]
    assert keepalive.type is UtpPacketType.STATE
    a.receive_packet(reset(a, keepalive.seq_nr), t + 1000)
    assert a.state is UtpState.FAILED
