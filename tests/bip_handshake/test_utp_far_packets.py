"""A packet too far ahead for the reorder buffer is dropped before its acks count.

libtorrent (``utp_stream.cpp``, ``incoming_packet``) drops a packet whose ``seq_nr`` is past
``ack_nr`` plus its reorder bound before it looks at the packet's ack, selective ack,
window or timestamps: such a packet is forged, or from a connection too damaged to matter.
Ours refused the data but acted on the rest first, so that a packet injected with a guessed
ack could acknowledge our packets in flight (the peer never got them: lost for good), shut
the peer's window and feed the round trip estimate. An ST_STATE carries the peer's next
number, so its bound is one further. Packets a little behind ``ack_nr`` (resends whose ack
was lost) still count: libtorrent reads their acks too (those far behind:
test_utp_far_behind).
"""

from __future__ import annotations

import pytest

from bip_handshake._utp_config import MAX_PAYLOAD, UtpConfig
from bip_handshake._utp_connection import MAX_REORDER_DISTANCE, UtpConnection, UtpState
from bip_handshake._utp_packet import UtpPacket, UtpPacketType, sack_from_offsets

CONFIG = UtpConfig()


def _name(kind: UtpPacketType) -> str:
    return kind.name


def _sending() -> tuple[UtpConnection, UtpConnection]:
    """``a`` has three data packets in flight, none of them delivered. ``b``'s sequence
    numbers start just below the wrap, so that ``a``'s ``ack_nr + MAX_REORDER_DISTANCE``
    wraps."""
    a = UtpConnection.connect(100, 1000, now_us=0, config=CONFIG)
    (syn,) = a.datagrams_to_send(0)
    b = UtpConnection.accept(UtpPacket.decode(syn), 0xFFF0, now_us=0, config=CONFIG)
    for datagram in b.datagrams_to_send(0):
        a.receive_packet(UtpPacket.decode(datagram), 10)
    assert a.state is UtpState.CONNECTED
    a.write(bytes(2 * MAX_PAYLOAD + 10))
    sent = [UtpPacket.decode(d) for d in a.datagrams_to_send(20)]
    assert [p.type for p in sent] == [UtpPacketType.DATA] * 2
    assert len(a._outgoing) == 2
    return a, b


def _beyond(kind: UtpPacketType) -> int:
    """The first distance past ``a``'s ``ack_nr`` dropped for ``kind``: an ST_STATE carries
    the peer's next number (one past the last it sent), so its bound is one further."""
    return MAX_REORDER_DISTANCE + (2 if kind is UtpPacketType.STATE else 1)


def _to_a(a: UtpConnection, kind: UtpPacketType, distance: int, *, sack: bool) -> UtpPacket:
    """A packet to ``a``, ``distance`` past its ``ack_nr``, acking both packets ``a`` has
    in flight by its ack number or, with ``sack``, the second one by a selective ack."""
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
        (a._ack_nr + distance) & 0xFFFF,
        ack_nr,
        mask,
        b"x" if kind is UtpPacketType.DATA else b"",
    )


@pytest.mark.parametrize("sack", [False, True], ids=["ack", "sack"])
@pytest.mark.parametrize(
    "kind", [UtpPacketType.DATA, UtpPacketType.STATE, UtpPacketType.FIN], ids=_name
)
def test_packet_beyond_the_reorder_bound_moves_nothing(kind: UtpPacketType, sack: bool) -> None:
    a, _ = _sending()
    assert (a._ack_nr + MAX_REORDER_DISTANCE) & 0xFFFF < a._ack_nr  # the bound wraps
    acked, window, rtt = a._acked, a._peer_wnd, a._rtt_us
    a.receive_packet(_to_a(a, kind, _beyond(kind), sack=sack), 30)
    assert (a._acked, a._peer_wnd, a._rtt_us) == (acked, window, rtt)
    assert len(a._outgoing) == 2
    assert not a._current_delays
    assert a._eof_seq is None
    assert a._last_received_us == 10  # no sign of life either
    assert a.datagrams_to_send(30) == []  # and nothing to answer


@pytest.mark.parametrize("kind", [UtpPacketType.DATA, UtpPacketType.STATE], ids=_name)
def test_packet_at_the_reorder_bound_counts(kind: UtpPacketType) -> None:
    a, _ = _sending()
    a.receive_packet(_to_a(a, kind, _beyond(kind) - 1, sack=True), 30)
    assert len(a._outgoing) == 1  # the second one, selectively acked
    assert a._peer_wnd == 0
    assert a._last_received_us == 30


def test_stale_packet_behind_ack_nr_still_acks() -> None:
    # A resent packet we hold already (our ack of it was lost) carries the peer's latest
    # ack: it counts, as in libtorrent (and the peer gets our ack again).
    a, _ = _sending()
    a.receive_packet(_to_a(a, UtpPacketType.DATA, 0, sack=False), 30)
    assert a._acked == (a._seq_nr - 1) & 0xFFFF
    assert not a._outgoing
