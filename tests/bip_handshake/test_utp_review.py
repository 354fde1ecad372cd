"""Regression tests from a review of the uTP code: wraparound, hostile packets, id choice."""

from __future__ import annotations

import random
import secrets
from ipaddress import IPv4Address

import pytest
import trio
import trio.testing
from test_utp_connection import (
    Network,
    pair,
    payload,
    state,
    transfer,
)
from test_utp_socket import memory_pair

from bip_handshake import PeerAddress
from bip_handshake._utp_config import MAX_PAYLOAD, UtpConfig, UtpConnectError
from bip_handshake._utp_connection import MAX_REORDER_DISTANCE, UtpConnection, UtpState
from bip_handshake._utp_packet import UtpPacket, UtpPacketType

CONFIG = UtpConfig()


@pytest.mark.parametrize(("seq_a", "seq_b", "seed"), [(0xFFFE, 0xFFFF, 1), (0xFFC0, 0xFFF0, 2)])
def test_lossy_transfer_across_the_wrap_both_ways(seq_a: int, seq_b: int, seed: int) -> None:
    # Both sides start just below 65535, on a lossy reordering link: the holes, selective
    # acks, the reorder buffer and the FINs all straddle the wrap.
    a = UtpConnection.connect(0xFFFF, seq_a, now_us=0, config=CONFIG)
    syn = UtpPacket.decode(a.datagrams_to_send(0)[0])
    b = UtpConnection.accept(syn, seq_b, now_us=0, config=CONFIG)
    net = Network(a, b, random.Random(seed), loss=0.08, delay=(1_000, 30_000))
    net.run_until(lambda: state(a) is UtpState.CONNECTED)
    transfer(net, payload(200 * MAX_PAYLOAD, seed), payload(120 * MAX_PAYLOAD, seed + 7))
    for direction in ("ab", "ba"):
        sent = [p for name, p in net.log if name == direction]
        seqs = {p.seq_nr for p in sent if p.type is UtpPacketType.DATA}
        assert {0xFFFF, 0, 1} <= seqs


def _packet_to_b(net: Network, kind: UtpPacketType, seq: int, data: bytes = b"") -> UtpPacket:
    return UtpPacket(kind, net.b.recv_id, 0, 0, 1 << 20, seq & 0xFFFF, net.a._ack_nr, payload=data)


def test_fin_beyond_the_reorder_bound_does_not_fix_the_end() -> None:
    # A FIN the reorder buffer would not take (libtorrent drops it before looking at its
    # type) must not fix the end of the stream: the peer's real FIN must still count.
    net = pair()
    b = net.b
    base = (b._ack_nr + 1) & 0xFFFF
    b.receive_packet(_packet_to_b(net, UtpPacketType.FIN, base + MAX_REORDER_DISTANCE + 5), 1)
    b.receive_packet(_packet_to_b(net, UtpPacketType.DATA, base, b"data"), 1)
    b.receive_packet(_packet_to_b(net, UtpPacketType.DATA, base + 1, b"more"), 1)
    b.receive_packet(_packet_to_b(net, UtpPacketType.FIN, base + 2), 1)
    assert b.read() == b"datamore"
    assert b.eof_received


def test_fin_behind_or_duplicate_is_harmless() -> None:
    net = pair()
    b = net.b
    base = (b._ack_nr + 1) & 0xFFFF
    b.receive_packet(_packet_to_b(net, UtpPacketType.FIN, base - 3), 1)  # long past
    b.receive_packet(_packet_to_b(net, UtpPacketType.DATA, base, b"x"), 1)
    b.receive_packet(_packet_to_b(net, UtpPacketType.FIN, base + 1), 1)
    b.receive_packet(_packet_to_b(net, UtpPacketType.FIN, base + 1), 1)  # resent
    b.receive_packet(_packet_to_b(net, UtpPacketType.DATA, base + 2, b"late"), 1)
    assert b.read() == b"x"
    assert b.eof_received


async def test_our_id_never_reuses_a_send_id_to_the_same_peer(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # b dials a: a's accepted connection sends with b's receive id R. Were a to dial b
    # with receive id R - 1, its send id would be R too: b would route a's SYN to its own
    # connection (and ignore it) and the dial would time out. a must draw another id.
    async with memory_pair() as (a, b, _):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.incoming().receive)
            inbound = await b.connect(a.local_address)
        taken = inbound._connection.core.recv_id
        draws = iter([(taken - 1) & 0xFFFF])
        real = secrets.randbelow
        monkeypatch.setattr(secrets, "randbelow", lambda n: next(draws, None) or real(n))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.incoming().receive)
            with trio.fail_after(5):
                outbound = await a.connect(b.local_address)
        assert outbound._connection.core.send_id != taken
        await outbound.send_all(b"ping")
        # Every draw taken: the dial fails instead of drawing forever.
        monkeypatch.setattr(secrets, "randbelow", lambda n: (taken - 1) & 0xFFFF)
        with pytest.raises(UtpConnectError, match="no free uTP connection id"):
            await a.connect(b.local_address)
        await outbound.aclose()
        await inbound.aclose()


async def test_syn_colliding_with_our_dial_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A peer's SYN whose id maps onto the key of our own dial to that peer: it gets a
    # RESET at once (not silence until its connect timeout), and our dial lives on.
    async with memory_pair() as (a, b, link):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.incoming().receive)
            outbound = await a.connect(b.local_address)
        recv_id = outbound._connection.core.recv_id
        syn = UtpPacket(UtpPacketType.SYN, (recv_id - 1) & 0xFFFF, 0, 0, 1 << 20, 77, 0)
        before = len(link.sent)
        a.datagram_received(syn.encode(), b.local_address)
        await trio.sleep(0.01)
        ours = [data for source, _, data in link.sent[before:] if source == a.local_address]
        answers = [UtpPacket.decode(data) for data in ours]
        assert [(p.type, p.connection_id) for p in answers] == [
            (UtpPacketType.RESET, (recv_id - 1) & 0xFFFF)
        ]
        assert a.statistics().refused == 1
        assert outbound._connection.core.state is UtpState.CONNECTED
        await outbound.send_all(b"still fine")
        await outbound.aclose()


def test_clean_close_is_not_reset_by_the_close_timeout() -> None:
    # close() arms close_timeout; a close that completes cleanly (CLOSED, lingering to
    # re-ack the peer's FIN) must not turn into a RESET and a failure when it expires.
    net = pair(config=UtpConfig(close_timeout=1.0))
    a, b = net.a, net.b
    closed_at = net.now
    a.close(closed_at)
    b.shutdown_write()
    net.run_until(lambda: state(a) is UtpState.CLOSED)
    net.now = max(net.now, closed_at + 1_000_000)  # close_timeout is over, lingering is not
    a.handle_timer(net.now)
    sent = [UtpPacket.decode(data) for data in a.datagrams_to_send(net.now)]
    assert all(packet.type is not UtpPacketType.RESET for packet in sent)
    assert a.error is None
    net.run_until(lambda: a.finished)
    assert a.error is None


async def test_resent_syn_and_wrong_resets_leave_the_connection_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with memory_pair() as (a, b, link):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.incoming().receive)
            outbound = await a.connect(b.local_address)
        core = outbound._connection.core
        # The SYN again (its ST_STATE lost, say): b answers with an ST_STATE, no new connection.
        syn = next(
            UtpPacket.decode(data)
            for source, _, data in link.sent
            if source == a.local_address and UtpPacket.decode(data).type is UtpPacketType.SYN
        )
        before = len(link.sent)
        b.datagram_received(syn.encode(), a.local_address)
        await trio.sleep(0.01)
        answers = [UtpPacket.decode(d) for s, _, d in link.sent[before:] if s == b.local_address]
        assert [p.type for p in answers] == [UtpPacketType.STATE]
        assert b.statistics().connections == 1
        assert b.statistics().accepted == 1
        # RESETs with ids that are not this connection's: ignored.
        for wrong in (core.recv_id + 2, core.recv_id - 1, core.send_id + 1):
            reset = UtpPacket(UtpPacketType.RESET, wrong & 0xFFFF, 0, 0, 0, 1, 0)
            a.datagram_received(reset.encode(), b.local_address)
        # The right id from another address: ignored too.
        other = PeerAddress(IPv4Address("10.0.0.9"), b.local_address.port)
        a.datagram_received(
            UtpPacket(UtpPacketType.RESET, core.recv_id, 0, 0, 0, 1, 0).encode(), other
        )
        await trio.sleep(0.01)
        assert core.state is UtpState.CONNECTED
        await outbound.send_all(b"alive")
        await outbound.aclose()
