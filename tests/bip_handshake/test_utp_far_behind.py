"""A packet far behind ``ack_nr`` is dropped before its acks count, as one far ahead is.

Only packets too far ahead were dropped: one whose ``seq_nr`` lay up to half the sequence
space behind had its ack, selective ack, window and timestamps taken, so a blind forger
needed only an ack within our packets in flight (and half the numbers for ``seq_nr``).
The peer resends only packets we have not acked, all sent while its oldest unacked one
was: a resend lies behind our ``ack_nr`` by fewer than the packets it has in flight, some
750 in full packets in our 1 MiB window. More than ``MAX_REORDER_DISTANCE + 1`` behind (an
ST_STATE shows the peer's next number: one less) the packet is dropped; a DATA or FIN
there still gets our ack, as any duplicate does, so a peer with a larger flight whose acks
were all lost learns what we hold.
"""

from __future__ import annotations

import pytest

from bip_handshake._utp_config import MAX_PAYLOAD, UtpConfig
from bip_handshake._utp_connection import MAX_REORDER_DISTANCE, UtpConnection, UtpState
from bip_handshake._utp_packet import UtpPacket, UtpPacketType, sack_from_offsets

CONFIG = UtpConfig()
DATA, FIN, STATE = UtpPacketType.DATA, UtpPacketType.FIN, UtpPacketType.STATE


def _name(kind: UtpPacketType) -> str:
    return kind.name


def _sending(peer_seq: int) -> UtpConnection:
    """A connection with two data packets in flight, none delivered, whose peer's sequence
    numbers start at ``peer_seq``."""
    a = UtpConnection.connect(100, 1000, now_us=0, config=CONFIG)
    (syn,) = a.datagrams_to_send(0)
    b = UtpConnection.accept(UtpPacket.decode(syn), peer_seq, now_us=0, config=CONFIG)
    for datagram in b.datagrams_to_send(0):
        a.receive_packet(UtpPacket.decode(datagram), 10)
    assert a.state is UtpState.CONNECTED
    a.write(bytes(2 * MAX_PAYLOAD + 10))
    assert [UtpPacket.decode(d).type for d in a.datagrams_to_send(20)] == [DATA] * 2
    assert len(a._outgoing) == 2
    return a


def _behind(a: UtpConnection, kind: UtpPacketType, behind: int, *, sack: bool) -> UtpPacket:
    """A packet to ``a`` whose ``seq_nr`` is ``behind`` before its ``ack_nr``, acking both
    packets ``a`` has in flight by its ack number or, with ``sack``, the second one by a
    selective ack."""
    ack_nr, mask = (a._seq_nr - 1) & 0xFFFF, None
    if sack:
        ack_nr = a._acked
        mask = sack_from_offsets([0], 4)  # bit 0: ack_nr + 2, the second packet
    return UtpPacket(
        kind,
        a.recv_id,
        0,
        5_000,
        0,
        (a._ack_nr - behind) & 0xFFFF,
        ack_nr,
        mask,
        b"x" if kind is DATA else b"",
    )


def _first_dropped(kind: UtpPacketType) -> int:
    # An ST_STATE carries the peer's next number: it shows the peer's last one 1 further
    # behind than its seq_nr.
    return MAX_REORDER_DISTANCE + (1 if kind is STATE else 2)


def test_blind_state_half_the_space_behind_acks_nothing() -> None:
    a = _sending(0xFFF0)
    a.receive_packet(_behind(a, STATE, 0x4000, sack=False), 30)
    assert len(a._outgoing) == 2
    assert a._last_received_us == 10
    assert a.datagrams_to_send(30) == []


@pytest.mark.parametrize("peer_seq", [0xFFF0, 5], ids=["ahead-wraps", "behind-wraps"])
@pytest.mark.parametrize("sack", [False, True], ids=["ack", "sack"])
@pytest.mark.parametrize("kind", [DATA, FIN, STATE], ids=_name)
def test_packet_past_the_bound_behind_moves_nothing(
    kind: UtpPacketType, sack: bool, peer_seq: int
) -> None:
    a = _sending(peer_seq)
    acked, window, rtt, ack_nr = a._acked, a._peer_wnd, a._rtt_us, a._ack_nr
    a.receive_packet(_behind(a, kind, _first_dropped(kind), sack=sack), 30)
    assert (a._acked, a._peer_wnd, a._rtt_us, a._ack_nr) == (acked, window, rtt, ack_nr)
    assert len(a._outgoing) == 2
    assert not a._current_delays
    assert a._eof_seq is None
    assert a._last_received_us == 10  # no sign of life either
    sent = [UtpPacket.decode(d) for d in a.datagrams_to_send(30)]
    if kind is STATE:
        assert sent == []  # an ST_STATE is never answered
    else:
        # Our ack all the same: a genuine resend from a larger flight learns what we hold.
        assert [(p.type, p.ack_nr) for p in sent] == [(STATE, ack_nr)]


@pytest.mark.parametrize("peer_seq", [0xFFF0, 5], ids=["ahead-wraps", "behind-wraps"])
@pytest.mark.parametrize("kind", [DATA, STATE], ids=_name)
def test_packet_at_the_bound_behind_counts(kind: UtpPacketType, peer_seq: int) -> None:
    a = _sending(peer_seq)
    a.receive_packet(_behind(a, kind, _first_dropped(kind) - 1, sack=True), 30)
    assert len(a._outgoing) == 1  # the second one, selectively acked
    assert a._peer_wnd == 0
    assert a._last_received_us == 30


def test_state_one_behind_after_a_fin_counts() -> None:
    # libtorrent does not move its number on past its FIN: its ST_STATEs after it carry
    # the FIN's number, which shows a last one 1 behind our ack_nr.
    a = _sending(0xFFF0)
    a.receive_packet(_behind(a, STATE, 0, sack=False), 30)
    assert not a._outgoing


def test_state_just_past_the_reorder_bound_ahead_counts() -> None:
    # An ST_STATE at ack_nr + MAX_REORDER_DISTANCE + 1 says the peer sent up to the bound.
    a = _sending(0xFFF0)
    a.receive_packet(_behind(a, STATE, -(MAX_REORDER_DISTANCE + 1), sack=False), 30)
    assert not a._outgoing
    assert a._last_received_us == 30


def test_resend_from_a_large_flight_gets_our_ack() -> None:
    # A peer with more packets in flight than the bound (small packets) whose acks were all
    # lost resends its oldest: dropped, but answered with our ack of everything we hold.
    a = _sending(0x0100)
    first = (a._ack_nr + 1) & 0xFFFF
    count = MAX_REORDER_DISTANCE + 200
    ack = (a._seq_nr - 1) & 0xFFFF
    for i in range(count):
        seq = (first + i) & 0xFFFF
        a.receive_packet(UtpPacket(DATA, a.recv_id, 0, 5_000, 0, seq, ack, None, b"y"), 30)
    assert a._ack_nr == (first + count - 1) & 0xFFFF
    assert a.read() == b"y" * count
    a.datagrams_to_send(30)  # the acks that are lost
    a.receive_packet(UtpPacket(DATA, a.recv_id, 0, 5_000, 0, first, ack, None, b"y"), 40)
    sent = [UtpPacket.decode(d) for d in a.datagrams_to_send(40)]
    assert [(p.type, p.ack_nr) for p in sent] == [(STATE, a._ack_nr)]
    assert a.read() == b""  # nothing delivered twice
