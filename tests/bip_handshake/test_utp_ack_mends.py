"""uTP mends: acks far behind ours, blind confirmation, the cost of tiny reordered packets, wakes.

1. A packet's ``ack_nr`` was only checked against what we sent (ahead); one up to half the
   sequence space behind our latest ack passed. A blind forger needed one guess in two for
   the ack (data injection), and two ST_STATEs (acks ``A`` and ``A ^ 0x8000``) confirmed a
   half-open accept for sure. As libtorrent (``utp_stream.cpp``, ``incoming_packet``), a
   packet other than a RESET whose ack lies more than three behind our latest ack is now
   dropped whole; an accepted connection is confirmed only by an ack of ``_acked - 1`` (a
   keepalive), ``_acked`` or one of our packets in flight.
2. An out-of-order packet was charged only its payload: empty or 1-byte DATA cost the
   receive budget nothing or one byte, while each held packet costs CPython ~70-100 bytes.
   Each one is now charged a fixed cost beyond its payload.
3. Budget bytes given back other than by a read (a hole filled for a closed reader, the
   reorder buffer cleared at the FIN) woke no connection whose window the budget had shut.
"""

from __future__ import annotations

import pytest

from bip_handshake._utp_config import MAX_PAYLOAD, UtpConfig
from bip_handshake._utp_connection import (
    _REORDER_PACKET_COST,
    UtpConnection,
    UtpReceiveBudget,
    UtpState,
)
from bip_handshake._utp_packet import UtpPacket, UtpPacketType

CONFIG = UtpConfig()
DATA, STATE = UtpPacketType.DATA, UtpPacketType.STATE
MASK = 0xFFFF


def _pair(initiator_seq: int, acceptor_seq: int) -> tuple[UtpConnection, UtpConnection]:
    """A connected initiator and the connection that accepted it (confirmed)."""
    a = UtpConnection.connect(100, initiator_seq, now_us=0, config=CONFIG)
    (syn,) = a.datagrams_to_send(0)
    b = UtpConnection.accept(UtpPacket.decode(syn), acceptor_seq, now_us=0, config=CONFIG)
    for datagram in b.datagrams_to_send(0):
        a.receive_packet(UtpPacket.decode(datagram), 1)
    assert a.state is UtpState.CONNECTED
    return a, b


def _sending(seq: int) -> UtpConnection:
    """A connected initiator whose SYN had ``seq``, with two DATA packets in flight."""
    a, _ = _pair(seq, 7000)
    a.write(bytes(2 * MAX_PAYLOAD))
    assert [UtpPacket.decode(d).type for d in a.datagrams_to_send(2)] == [DATA, DATA]
    assert a._acked == seq
    return a


def _data(conn: UtpConnection, ack_nr: int, payload: bytes = b"FORGED") -> UtpPacket:
    """The next in-order DATA to ``conn``, carrying ``ack_nr``."""
    return UtpPacket(
        DATA, conn.recv_id, 0, 0, 1 << 20, (conn._ack_nr + 1) & MASK, ack_nr & MASK, None, payload
    )


# ------------------------------------------------------------- 1. acks far behind ours


@pytest.mark.parametrize("behind", [4, 5, 1000, 30_000, 0x8000])
def test_data_acking_far_behind_our_latest_ack_is_dropped(behind: int) -> None:
    a, b = _pair(40000, 7000)
    a.write(b"x" * 5000)
    for now in range(2, 40, 2):  # until everything is delivered and acked
        for datagram in a.datagrams_to_send(now):
            b.receive_packet(UtpPacket.decode(datagram), now + 1)
        for datagram in b.datagrams_to_send(now + 1):
            a.receive_packet(UtpPacket.decode(datagram), now + 1)
        if a.all_sent:
            break
    assert a.all_sent
    assert b.read() == b"x" * 5000
    assert a.datagrams_to_send(9) == []
    readable, heard = a.readable, a._last_received_us
    a.receive_packet(_data(a, a._acked - behind), 10)
    assert a.readable == readable  # not injected into the stream
    assert a._last_received_us == heard  # nor counted as a sign of life
    assert a.datagrams_to_send(10) == []  # dropped whole: not even acked


@pytest.mark.parametrize("behind", [0, 1, 2, 3])
def test_data_acking_within_libtorrents_slack_is_taken(behind: int) -> None:
    a, _ = _pair(40000, 7000)
    a.receive_packet(_data(a, a._acked - behind, b"late"), 10)
    assert a.read() == b"late"


@pytest.mark.parametrize("seq", [65534, 65535, 0, 1, 2, 3, 1234])
def test_ack_window_wraps_both_ways(seq: int) -> None:
    # The SYN had seq (acked): our two DATA packets are seq + 1 and seq + 2, across 65535
    # for the first four.
    a = _sending(seq)
    # Three behind (across 0 for the later ones) is taken: an ack of nothing new.
    a.receive_packet(UtpPacket(STATE, a.recv_id, 0, 0, 1 << 20, a._ack_nr + 1, seq - 3 & MASK), 5)
    assert a._last_received_us == 5
    assert len(a._outgoing) == 2
    # Four behind is dropped whole, even with a DATA behind it that it would deliver.
    a.receive_packet(_data(a, seq - 4, b"no"), 6)
    assert a._last_received_us == 5
    assert a.readable == 0
    # Our packets in flight (ahead, across 65535 for the first ones) are acked.
    a.receive_packet(UtpPacket(STATE, a.recv_id, 0, 0, 1 << 20, a._ack_nr + 1, seq + 2 & MASK), 7)
    assert a._last_received_us == 7
    assert not a._outgoing
    assert a._acked == (seq + 2) & MASK
    # Past what we sent is dropped, as before.
    a.receive_packet(_data(a, seq + 3, b"no"), 8)
    assert a.readable == 0


def _half_open(seq: int) -> UtpConnection:
    """An accepted connection whose first sequence number is ``seq``: nothing but the SYN
    (initiator's seq 5000) heard."""
    syn = UtpPacket(UtpPacketType.SYN, 900, 0, 0, 1 << 20, 5000, 0)
    b = UtpConnection.accept(syn, seq, now_us=0, config=CONFIG)
    assert UtpPacket.decode(b.datagrams_to_send(0)[0]).seq_nr == seq
    assert not b._confirmed
    return b


def _confirming(b: UtpConnection, ack_nr: int, kind: UtpPacketType = STATE) -> UtpPacket:
    """What an initiator sends after our ST_STATE: its next number, our ``ack_nr``."""
    payload = b"hi" if kind is DATA else b""
    return UtpPacket(kind, b.recv_id, 0, 0, 1 << 20, 5001, ack_nr & MASK, None, payload)


@pytest.mark.parametrize("seq", [0, 1, 2, 40000])
def test_blind_confirmation_needs_the_right_ack(seq: int) -> None:
    # Every ack but _acked - 1 (a keepalive: seq - 2), _acked (seq - 1) leaves the
    # connection half-open; a blind forger no longer confirms it with A and A ^ 0x8000.
    b = _half_open(seq)
    honest = {(seq - 2) & MASK, (seq - 1) & MASK}
    for ack in range(0, 0x10000, 61):
        if ack not in honest:
            b.receive_packet(_confirming(b, ack), 1)
    for ack in ((seq - 3) & MASK, (seq - 4) & MASK, seq, (seq + 1) & MASK, (seq ^ 0x8000)):
        b.receive_packet(_confirming(b, ack), 1)
        b.receive_packet(_confirming(b, ack, DATA), 1)
    assert not b._confirmed
    assert b.readable == 0
    assert b._half_open_deadline is not None


@pytest.mark.parametrize("seq", [0, 1, 40000])
@pytest.mark.parametrize("behind", [0, 1], ids=["ack", "keepalive"])
def test_initiators_ack_or_keepalive_still_confirms(seq: int, behind: int) -> None:
    b = _half_open(seq)
    b.receive_packet(_confirming(b, seq - 1 - behind), 1)
    assert b._confirmed
    assert b._half_open_deadline is None


def test_ack_of_our_first_data_confirms_after_the_confirmation_timeout() -> None:
    b = _half_open(65535)
    b.write(b"hello")
    assert b.datagrams_to_send(1) == []  # held until the initiator confirms...
    b.handle_timer(1_000_000)  # ...or the confirmation timeout: our first DATA goes alone
    (first,) = b.datagrams_to_send(1_000_000)
    assert UtpPacket.decode(first).seq_nr == 65535
    b.receive_packet(_confirming(b, 65535), 1_000_001)
    assert b._confirmed
    assert b.all_sent


# ------------------------------------------------------ 2. tiny out-of-order packets


def _accepted(budget: UtpReceiveBudget, index: int) -> UtpConnection:
    syn = UtpPacket(UtpPacketType.SYN, 2 * index, 0, 0, 1 << 20, 1000, 0)
    conn = UtpConnection.accept(syn, 5000, now_us=0, config=CONFIG, budget=budget)
    conn.datagrams_to_send(0)
    return conn


def _ahead(conn: UtpConnection, offset: int, payload: bytes) -> UtpPacket:
    seq = (conn._ack_nr + offset) & MASK
    return UtpPacket(DATA, conn.recv_id, 0, 0, 1 << 20, seq, conn._acked, None, payload)


@pytest.mark.parametrize("size", [0, 1])
def test_tiny_out_of_order_packets_are_charged_and_bounded(size: int) -> None:
    budget = UtpReceiveBudget(64 * 1024)
    conns = [_accepted(budget, i) for i in range(4)]
    first = conns[0]
    first.receive_packet(_ahead(first, 2, b"p" * size), 1)
    cost = budget.reorder_used - size  # what holding one packet costs beyond its payload
    assert cost > 0
    for conn in conns:
        for offset in range(2, 900):
            conn.receive_packet(_ahead(conn, offset, b"p" * size), 1)
    held = sum(len(conn._reorder) for conn in conns)
    # The out-of-order half of the budget is the bound, however small the packets.
    assert held == budget.reorder_limit // (cost + size) < 4 * 898
    assert budget.used == budget.reorder_used == held * (cost + size)
    assert budget.used == sum(conn._reorder_bytes for conn in conns)
    assert budget.reorder_free() < cost + size
    # Filling a hole delivers what waited and gives its cost back; a failure gives the rest.
    last = conns[-1]
    last_held = len(last._reorder)
    last.receive_packet(_ahead(last, 1, b"hole"), 2)
    assert last.readable == 4 + last_held * size
    assert budget.reorder_used == (held - last_held) * (cost + size)
    assert budget.used == budget.reorder_used + last.readable
    for conn in conns[:-1]:
        conn.abort()
    assert budget.reorder_used == 0
    last.read()
    assert budget.used == 0


def test_the_charge_does_not_shrink_what_the_window_takes() -> None:
    # An honest peer filling our whole window while one packet is lost: every packet past
    # the hole is held (the charge counts against the socket's budget, not the window we
    # promised), and the hole's resend delivers them all.
    config = UtpConfig(receive_buffer=64 * MAX_PAYLOAD)
    syn = UtpPacket(UtpPacketType.SYN, 8, 0, 0, 1 << 20, 1000, 0)
    conn = UtpConnection.accept(syn, 5000, now_us=0, config=config)
    conn.datagrams_to_send(0)
    chunk = b"w" * MAX_PAYLOAD
    for offset in range(2, 65):
        conn.receive_packet(_ahead(conn, offset, chunk), 1)
    assert len(conn._reorder) == 63
    conn.receive_packet(_ahead(conn, 1, chunk), 2)
    assert conn.readable == 64 * MAX_PAYLOAD
    assert conn._budget.used == conn.readable


# ------------------------------------------------- 3. every release of budget bytes wakes
#
# Bytes given back to the socket's budget other than by a read (the payload of a hole
# filled for a closed reader, the reorder buffer cleared at the FIN) woke nobody: another
# connection whose window the spent budget had shut kept it shut (its peer waiting for a
# zero-window probe) until some read happened to wake it.


def _fin(conn: UtpConnection, offset: int) -> UtpPacket:
    seq = (conn._ack_nr + offset) & MASK
    return UtpPacket(UtpPacketType.FIN, conn.recv_id, 0, 0, 1 << 20, seq, conn._acked)


def _starved_behind(budget: UtpReceiveBudget) -> UtpConnection:
    """A connection of ``budget`` that advertised a window the spent budget shut."""
    filler, waiter = _accepted(budget, 10), _accepted(budget, 11)
    while budget.free():  # the rest of the budget, in order, unread
        filler.receive_packet(_ahead(filler, 1, b"f" * min(budget.free(), MAX_PAYLOAD)), 1)
    waiter.receive_packet(_ahead(waiter, 1, b"w"), 2)  # refused: no room; acked, window 0
    [ack] = [UtpPacket.decode(d) for d in waiter.datagrams_to_send(2)]
    assert ack.type is STATE
    assert ack.wnd_size == 0
    assert budget.take_woken() == []
    return waiter


@pytest.mark.parametrize("end", ["hole filled, reader closed", "FIN clears the reorder buffer"])
def test_bytes_given_back_without_a_read_wake_a_starved_window(end: str) -> None:
    budget = UtpReceiveBudget(8 * MAX_PAYLOAD)
    holder = _accepted(budget, 1)
    for offset in (2, 3, 4):
        holder.receive_packet(_ahead(holder, offset, b"h" * MAX_PAYLOAD), 1)
    assert len(holder._reorder) == 3
    waiter = _starved_behind(budget)
    used = budget.used
    if end == "hole filled, reader closed":
        holder.close(3)
        holder.receive_packet(_ahead(holder, 1, b"hole"), 3)
    else:
        holder.receive_packet(_fin(holder, 1), 3)  # the end comes before what was held
    assert holder._reorder == {}
    assert budget.reorder_used == 0
    assert budget.used == used - 3 * (MAX_PAYLOAD + _REORDER_PACKET_COST)
    assert budget.take_woken() == [waiter]
    [update] = [UtpPacket.decode(d) for d in waiter.datagrams_to_send(3)]
    assert update.type is STATE
    assert update.wnd_size >= MAX_PAYLOAD
