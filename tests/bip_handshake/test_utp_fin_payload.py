"""A uTP FIN that carries a payload: taken as a bare FIN, its payload ignored (libtorrent).

libtorrent never sends data in a FIN and reads data from ST_DATA only. We used to fix the end
of the stream at such a FIN and then drop it: never acked, the peer resent it until a timeout
ended the connection, and a later DATA at its sequence number ended the stream there.
"""

from __future__ import annotations

import dataclasses
import heapq

from test_utp_connection import Network, pair

from bip_handshake._utp_connection import _REORDER_PACKET_COST, UtpConnection, UtpState
from bip_handshake._utp_packet import UtpPacket, UtpPacketType


@dataclasses.dataclass
class FinPayloadNetwork(Network):
    """The pair's link, but every FIN ``a`` sends carries ``b"tail"``."""

    fins_ab: int = 0
    """How many FINs ``a`` sent (a FIN never acked is resent)."""

    def collect(self) -> None:
        for data in self.a.datagrams_to_send(self.now):
            packet = UtpPacket.decode(data)
            if packet.type is UtpPacketType.FIN:
                self.fins_ab += 1
                packet = dataclasses.replace(packet, payload=b"tail")
            self.counter += 1
            heapq.heappush(self.in_flight, (self.now + 10_000, self.counter, "ab", packet.encode()))
        for data in self.b.datagrams_to_send(self.now):
            self.counter += 1
            heapq.heappush(self.in_flight, (self.now + 10_000, self.counter, "ba", data))


def _to_b(net: Network, kind: UtpPacketType, seq: int, data: bytes = b"") -> UtpPacket:
    """A packet from ``a``'s side, acking what ``a`` got in order: it passes the ack checks."""
    b = net.b
    return UtpPacket(kind, b.recv_id, 0, 0, 1 << 20, seq & 0xFFFF, net.a._ack_nr, payload=data)


def _acks(conn: UtpConnection, now: int) -> list[int]:
    """The ack numbers of what ``conn`` sends now."""
    return [UtpPacket.decode(d).ack_nr for d in conn.datagrams_to_send(now)]


def test_fin_with_payload_in_order_is_acked_and_resends_are_acked_again() -> None:
    # The hunter's scenario: the next in-order packet is a FIN carrying data, then resent.
    net = pair()
    b = net.b
    nxt = (b._ack_nr + 1) & 0xFFFF
    b.receive_packet(_to_b(net, UtpPacketType.FIN, nxt, b"tail"), net.now)
    assert b._ack_nr == nxt
    assert b.eof_received
    assert _acks(b, net.now) == [nxt]
    for _ in range(3):
        b.receive_packet(_to_b(net, UtpPacketType.FIN, nxt, b"tail"), net.now)
        assert _acks(b, net.now) == [nxt]  # a resend: acked again
    assert b.read() == b""  # the FIN's payload is not data
    assert b.statistics().bytes_received == 0


def test_peer_sending_data_in_its_fin_closes_cleanly() -> None:
    base = pair()
    net = FinPayloadNetwork(base.a, base.b, base.rng, now=base.now)
    net.a.write(b"request")
    net.a.shutdown_write()
    net.run_until(lambda: net.b.eof_received, limit_us=5_000_000)
    assert net.b.read() == b"request"  # without the FIN's "tail"
    net.b.shutdown_write()
    net.run_until(
        lambda: net.a.state is UtpState.CLOSED and net.b.state is UtpState.CLOSED,
        limit_us=5_000_000,
    )
    assert net.a.eof_received
    assert net.fins_ab == 1  # acked the first time: never resent


def test_fin_with_payload_out_of_order_is_held_as_a_bare_fin() -> None:
    net = pair()
    b = net.b
    base = (b._ack_nr + 1) & 0xFFFF
    used = b._budget.used
    b.receive_packet(_to_b(net, UtpPacketType.FIN, base + 1, b"x" * 1000), net.now)
    # The payload takes no room anywhere: only the charge of a packet held out of order.
    assert b._reorder_bytes == _REORDER_PACKET_COST
    assert b._budget.used == used + _REORDER_PACKET_COST
    b.receive_packet(_to_b(net, UtpPacketType.DATA, base + 1, b"ends it"), net.now)  # held: no
    b.receive_packet(_to_b(net, UtpPacketType.DATA, base, b"last"), net.now)
    assert b.read() == b"last"
    assert b.eof_received
    assert b._budget.used == used


def test_refused_fin_leaves_no_state() -> None:
    # A FIN at the sequence number of data held out of order is refused: it must not fix
    # the end of the stream there (the held data then ended it, the rest was dropped).
    net = pair()
    b = net.b
    base = (b._ack_nr + 1) & 0xFFFF
    b.receive_packet(_to_b(net, UtpPacketType.DATA, base + 1, b"held "), net.now)
    for data in (b"tail", b""):
        b.receive_packet(_to_b(net, UtpPacketType.FIN, base + 1, data), net.now)
        assert b._eof_seq is None
    b.receive_packet(_to_b(net, UtpPacketType.DATA, base, b"first "), net.now)
    b.receive_packet(_to_b(net, UtpPacketType.DATA, base + 2, b"more"), net.now)
    assert not b.eof_received
    b.receive_packet(_to_b(net, UtpPacketType.FIN, base + 3, b"tail"), net.now)
    assert b.read() == b"first held more"
    assert b.eof_received
