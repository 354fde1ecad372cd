"""A keep-alive acks ``ack_nr - 1``: its selective ack must be counted from that number too.

A keep-alive that carried the bitmask built for ``ack_nr`` told the peer, one sequence
number off, that packets still missing had arrived: the peer dropped them from its resend
queue and the connection stalled (found by ``test_transfer_property`` on a lossy link).
"""

from __future__ import annotations

from bip_handshake._utp_config import MAX_PAYLOAD, UtpConfig
from bip_handshake._utp_connection import UtpConnection
from bip_handshake._utp_packet import UtpPacket, UtpPacketType, sack_offsets

CONFIG = UtpConfig(keepalive_interval=30.0, idle_timeout=120.0)
SECOND = 1_000_000


def _connected_pair() -> tuple[UtpConnection, UtpConnection]:
    a = UtpConnection.connect(100, 1000, now_us=0, config=CONFIG)
    (syn,) = a.datagrams_to_send(0)
    b = UtpConnection.accept(UtpPacket.decode(syn), 5000, now_us=0, config=CONFIG)
    for datagram in b.datagrams_to_send(0):
        a.receive_packet(UtpPacket.decode(datagram), 0)
    for datagram in a.datagrams_to_send(0):
        b.receive_packet(UtpPacket.decode(datagram), 0)
    b.datagrams_to_send(0)
    return a, b


def _lose_one_packet(
    a: UtpConnection, b: UtpConnection, now_us: int
) -> tuple[list[UtpPacket], int]:
    """a sends six data packets; b gets all but the fourth, and b's acks after the loss are
    lost too (a learns nothing of it). The first two, acked, open a's window for the
    rest. Returns the last four packets and the time."""
    a.write(bytes(6 * MAX_PAYLOAD))
    packets: list[UtpPacket] = []
    now = now_us
    for _ in range(500):  # slow start and pacing spread them out: bounded
        now += 1_000
        a.handle_timer(now)
        for packet in map(UtpPacket.decode, a.datagrams_to_send(now)):
            if packet.type is not UtpPacketType.DATA or len(packets) == 6:
                continue
            packets.append(packet)
            if len(packets) != 4:
                b.receive_packet(packet, now)
        acks = b.datagrams_to_send(now)
        if len(packets) < 4:  # b's acks reach a only before the loss
            for datagram in acks:
                a.receive_packet(UtpPacket.decode(datagram), now)
        if len(packets) == 6:
            return packets[2:], now
    raise AssertionError(f"only {len(packets)} data packets")


def test_keepalive_sack_counts_from_the_ack_it_carries() -> None:
    a, b = _connected_pair()
    packets, now = _lose_one_packet(a, b, 1_000)
    keepalive_at = now + int(CONFIG.keepalive_interval * SECOND)
    b.handle_timer(keepalive_at)
    (datagram,) = b.datagrams_to_send(keepalive_at)
    keepalive = UtpPacket.decode(datagram)
    assert keepalive.type is UtpPacketType.STATE
    assert keepalive.ack_nr == (packets[0].seq_nr - 1) & 0xFFFF  # ack_nr - 1: no duplicate ack
    assert keepalive.selective_ack is not None
    claimed = {
        (keepalive.ack_nr + 2 + offset) & 0xFFFF for offset in sack_offsets(keepalive.selective_ack)
    }
    assert claimed == {packets[2].seq_nr, packets[3].seq_nr}


def test_a_keepalive_never_makes_the_sender_forget_a_lost_packet() -> None:
    a, b = _connected_pair()
    _packets, now = _lose_one_packet(a, b, 1_000)
    keepalive_at = now + int(CONFIG.keepalive_interval * SECOND)
    b.handle_timer(keepalive_at)
    for datagram in b.datagrams_to_send(keepalive_at):
        a.receive_packet(UtpPacket.decode(datagram), keepalive_at)
    # Whatever a sends from now on (a resend after its timeout), the lost packet is among
    # it: once b has it, b's data is complete.
    later = keepalive_at
    for _ in range(50):  # bounded: a few timeouts at most
        deadline = a.next_deadline()
        assert deadline is not None, (a.state, a.error)
        later = max(later, deadline)
        a.handle_timer(later)
        for datagram in a.datagrams_to_send(later):
            b.receive_packet(UtpPacket.decode(datagram), later)
        for datagram in b.datagrams_to_send(later):
            a.receive_packet(UtpPacket.decode(datagram), later)
        if b.statistics().bytes_received == 6 * MAX_PAYLOAD:
            break
    assert b.statistics().bytes_received == 6 * MAX_PAYLOAD
