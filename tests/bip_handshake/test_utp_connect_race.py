"""An accepting side that speaks first, its answer to the SYN lost: nothing of its data is lost.

The initiator learns where the acceptor's sequence numbers start from the first packet of its
that it sees. Were the acceptor to send several DATA packets before the initiator confirmed
(its ST_STATE lost, a timeout later), and the first of them were lost too, the initiator would
start the stream at the second and miss the first (found by a fuzzer in review). So before the
confirmation only the first packet goes, and the rest once the initiator acks it.
"""

from __future__ import annotations

from bip_handshake._utp_config import UtpConfig
from bip_handshake._utp_connection import INITIAL_TIMEOUT_US, UtpConnection, UtpState
from bip_handshake._utp_packet import UtpPacket, UtpPacketType

CONFIG = UtpConfig()


def _data_seqs(datagrams: list[bytes]) -> list[int]:
    return [
        packet.seq_nr
        for packet in map(UtpPacket.decode, datagrams)
        if packet.type in (UtpPacketType.DATA, UtpPacketType.FIN)
    ]


def test_an_acceptor_speaking_first_sends_one_packet_until_confirmed() -> None:
    a = UtpConnection.connect(100, 1000, now_us=0, config=CONFIG)
    (syn,) = a.datagrams_to_send(0)
    b = UtpConnection.accept(UtpPacket.decode(syn), 5000, now_us=0, config=CONFIG)
    data = bytes(range(256)) * 40  # 10 KiB: several packets
    assert b.write(data) == len(data)
    assert _data_seqs(b.datagrams_to_send(0)) == []  # its ST_STATE only: lost
    # A timeout without a word from the initiator: the first packet goes, alone.
    now = INITIAL_TIMEOUT_US
    b.handle_timer(now)
    assert _data_seqs(b.datagrams_to_send(now)) == [5000]  # lost as well
    # Its retransmissions are that packet again, never a later one.
    for _ in range(3):
        deadline = b.next_deadline()
        assert deadline is not None
        now = deadline
        b.handle_timer(now)
        sent = _data_seqs(b.datagrams_to_send(now))
        assert set(sent) <= {5000}
    # From now on nothing is lost: a copy of it arrives, the initiator connects with the
    # stream starting there and acks it; then the rest flows and nothing is missing.
    received = bytearray()
    for _ in range(200):  # bounded: a few round trips and timers
        deadlines = [d for d in (a.next_deadline(), b.next_deadline()) if d is not None]
        now = max(now + 1_000, min(deadlines)) if deadlines else now + 1_000
        for conn in (a, b):
            conn.handle_timer(now)
        for datagram in b.datagrams_to_send(now):
            a.receive_packet(UtpPacket.decode(datagram), now)
        received += a.read()
        for datagram in a.datagrams_to_send(now):
            b.receive_packet(UtpPacket.decode(datagram), now)
        if len(received) == len(data):
            break
    assert a.state is UtpState.CONNECTED
    assert bytes(received) == data


def test_an_acceptor_closing_at_once_sends_its_fin_as_its_first_packet() -> None:
    a = UtpConnection.connect(100, 1000, now_us=0, config=CONFIG)
    (syn,) = a.datagrams_to_send(0)
    b = UtpConnection.accept(UtpPacket.decode(syn), 5000, now_us=0, config=CONFIG)
    b.shutdown_write()
    assert _data_seqs(b.datagrams_to_send(0)) == []  # before the timeout: nothing but the STATE
    b.handle_timer(INITIAL_TIMEOUT_US)
    assert _data_seqs(b.datagrams_to_send(INITIAL_TIMEOUT_US)) == [5000]


def test_a_confirmed_acceptor_sends_freely() -> None:
    a = UtpConnection.connect(100, 1000, now_us=0, config=CONFIG)
    (syn,) = a.datagrams_to_send(0)
    b = UtpConnection.accept(UtpPacket.decode(syn), 5000, now_us=0, config=CONFIG)
    for datagram in b.datagrams_to_send(0):
        a.receive_packet(UtpPacket.decode(datagram), 0)
    for datagram in a.datagrams_to_send(0):  # the initiator's ack: b is confirmed
        b.receive_packet(UtpPacket.decode(datagram), 0)
    b.write(bytes(3 * 1100))
    assert _data_seqs(b.datagrams_to_send(0)) == [5000, 5001]  # the initial window: two
