"""The reorder bound scales with the receive buffer, as libtorrent's does.

libtorrent (``utp_stream.cpp``, ``incoming_packet``) drops a packet more than
``max(16, m_receive_buffer_capacity / 1100)`` past its ``ack_nr``: the packets a peer can
have in flight within the window it advertises. Ours was fixed at 1024 packets whatever
``receive_buffer`` was: a large buffer's peer lost the packets past 1024 it was allowed to
send. It is now one packet per KiB of ``receive_buffer`` (1024 at the default 1 MiB), at
least 1024 as before (a small window may hold many small packets) and at most 4096 (far
below half the sequence space, so that ahead and behind stay unambiguous).
"""

from __future__ import annotations

import pytest

from bip_handshake._utp_config import UtpConfig
from bip_handshake._utp_connection import (
    MAX_REORDER_DISTANCE,
    UtpConnection,
    UtpState,
    _reorder_distance,
)
from bip_handshake._utp_packet import UtpPacket, UtpPacketType


def _connected(config: UtpConfig) -> UtpConnection:
    """A connected initiator, which has sent nothing since its SYN."""
    a = UtpConnection.connect(100, 1000, now_us=0, config=config)
    (syn,) = a.datagrams_to_send(0)
    b = UtpConnection.accept(UtpPacket.decode(syn), 7000, now_us=0, config=config)
    for datagram in b.datagrams_to_send(0):
        a.receive_packet(UtpPacket.decode(datagram), 10)
    assert a.state is UtpState.CONNECTED
    return a


def _data_at(a: UtpConnection, distance: int) -> int:
    """Sends ``a`` one byte of DATA ``distance`` past its ``ack_nr``; its sequence number."""
    seq = (a._ack_nr + distance) & 0xFFFF
    ack = (a._seq_nr - 1) & 0xFFFF
    a.receive_packet(
        UtpPacket(UtpPacketType.DATA, a.recv_id, 0, 5_000, 0, seq, ack, None, b"x"), 20
    )
    return seq


@pytest.mark.parametrize(
    ("receive_buffer", "bound"),
    [
        (1024 * 1024, MAX_REORDER_DISTANCE),  # the default: 1024, as before
        (4 * 1024 * 1024, 4096),  # larger: more packets in flight to wait for
        (3 * 1024 * 1024, 3072),
        (64 * 1024, MAX_REORDER_DISTANCE),  # smaller: as before
        (1 << 30, 4096),  # bounded above
    ],
    ids=["1MiB", "4MiB", "3MiB", "64KiB", "1GiB"],
)
def test_reorder_bound_follows_the_receive_buffer(receive_buffer: int, bound: int) -> None:
    assert _reorder_distance(receive_buffer) == bound
    a = _connected(UtpConfig(receive_buffer=receive_buffer))
    inside = _data_at(a, bound)
    assert inside in a._reorder  # the last number inside the window waits for the hole
    beyond = _data_at(a, bound + 1)
    assert beyond not in a._reorder  # one past it is dropped
    assert len(a._reorder) == 1


def test_far_behind_bound_follows_the_reorder_bound() -> None:
    """A DATA resend further behind than the (larger) bound plus one gets our ack, as ever,
    but one within it is taken as the peer's: its timestamp and window count."""
    a = _connected(UtpConfig(receive_buffer=4 * 1024 * 1024))
    seq = (a._ack_nr - 2000) & 0xFFFF
    ack = (a._seq_nr - 1) & 0xFFFF
    a.receive_packet(UtpPacket(UtpPacketType.DATA, a.recv_id, 0, 5_000, 777, seq, ack, None), 30)
    assert a._peer_wnd == 777  # 2,000 behind is within 4,097: the packet counts
