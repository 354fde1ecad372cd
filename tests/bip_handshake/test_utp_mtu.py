"""uTP path MTU discovery: a floor every path carries, padded probes searching up to the
ceiling, lost probes that cut nothing, EMSGSIZE that lowers the ceiling at once."""

from __future__ import annotations

import random

import pytest
from _utp_sim import SECOND, MtuLink, move, mtu_pair
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_handshake._utp_config import MIN_DATAGRAM, PACKET_OVERHEAD, UtpConfig
from bip_handshake._utp_connection import (
    _MAX_CWND,
    _MAX_PADDING,
    PADDING_EXTENSION,
    UtpConnection,
    _pad,
    is_mtu_probe,
)
from bip_handshake._utp_packet import HEADER_SIZE, UtpPacket, UtpPacketType

IPV4_1280 = 1280 - 20 - 8  # the largest UDP payload over a 1280-byte IPv4 path
IPV4_1500 = 1500 - 20 - 8


def data(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def rtt(net: MtuLink) -> int:
    return 2 * net.delay_us


# ------------------------------------------------------------------ settings


def test_defaults_and_validation() -> None:
    config = UtpConfig()
    assert (config.min_datagram, config.max_datagram_v4, config.max_datagram_v6) == (
        1232,
        1472,
        1452,
    )
    assert config.max_datagram(6) == 1452
    with pytest.raises(ValueError, match="family"):
        config.max_datagram(5)
    with pytest.raises(ValueError, match="min_datagram must be at least"):
        UtpConfig(min_datagram=MIN_DATAGRAM - 1)
    with pytest.raises(ValueError, match="max_datagram_v4 must be between"):
        UtpConfig(max_datagram_v4=1000)
    with pytest.raises(ValueError, match="max_datagram_v6 must be between"):
        UtpConfig(max_datagram_v6=65528)
    with pytest.raises(ValueError, match="must be an int"):
        UtpConfig(min_datagram=1232.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="family"):
        UtpConnection.connect(1, 1, now_us=0, config=config, family=5)


# ------------------------------------------------------------------ searching


def test_a_new_connection_sends_no_more_than_the_floor() -> None:
    net = mtu_pair()
    assert net.a.mtu == 1232
    assert net.a.statistics().mtu == 1232
    net.a.write(data(4 * 1232))
    assert all(len(d) <= 1232 for d in net.a.datagrams_to_send(net.now))


def test_a_1500_path_reaches_the_ceiling_within_a_few_round_trips() -> None:
    net = mtu_pair(max_ab=IPV4_1500, max_ba=IPV4_1500)
    payload = data(3_000_000)
    start = net.now
    settled: list[int] = []

    def watch() -> bool:
        if not settled and net.a.mtu == 1472:
            settled.append(net.now)
        return True

    assert move(net, payload, read=watch) == payload
    assert net.a.mtu == 1472
    assert settled[0] - start <= 20 * rtt(net)
    stats = net.a.statistics()
    assert stats.mtu_probes_lost == 0
    assert stats.mtu_probes <= 9  # a binary search over 240 bytes
    assert net.dropped == 0
    assert max(net.sizes) == 1472
    # Full packets carry the confirmed size less the room for a header and selective ack.
    assert stats.bytes_sent == len(payload)


def test_ipv6_searches_up_to_its_own_ceiling() -> None:
    net = mtu_pair(family=6, max_ab=1452, max_ba=1452)
    payload = data(1_000_000)
    assert move(net, payload) == payload
    assert net.a.mtu == 1452
    assert net.dropped == 0


def test_a_1280_path_settles_at_its_mtu_and_the_transfer_is_whole() -> None:
    net = mtu_pair(max_ab=IPV4_1280, max_ba=IPV4_1280)
    payload = data(2_000_000, seed=3)
    start = net.now
    settled: list[int] = []

    def watch() -> bool:
        if not settled and net.a._mtu_floor == net.a._mtu_ceiling:
            settled.append(net.now)
        return True

    assert move(net, payload, read=watch) == payload
    assert net.a.mtu == IPV4_1280  # the search ends on the exact size
    assert settled[0] - start <= 25 * rtt(net)
    stats = net.a.statistics()
    assert stats.mtu_probes_lost >= 1
    assert net.dropped == stats.mtu_probes_lost  # only probes were ever too big
    assert stats.timeouts == 0


def test_lost_probes_are_not_congestion() -> None:
    net = mtu_pair(max_ab=IPV4_1280, max_ba=IPV4_1280)
    payload = data(1_000_000, seed=4)
    assert move(net, payload) == payload
    stats = net.a.statistics()
    assert stats.mtu_probes_lost >= 3
    # Every loss was a probe's: the window was never halved nor reset (ssthresh is only
    # set when it is), and no timeout fired.
    assert net.a._ssthresh == float(_MAX_CWND)
    assert stats.timeouts == 0
    assert stats.fast_retransmits == stats.mtu_probes_lost


def test_probe_lost_by_selective_acks_keeps_the_window_and_goes_again_unpadded() -> None:
    net = mtu_pair()
    a = net.a
    a._cwnd = 20.0 * a._payload_size
    a._peer_wnd = 1 << 20
    a.write(data(8 * a._payload_size))
    sent = a.datagrams_to_send(net.now)
    packets = [UtpPacket.decode(d) for d in sent]
    assert len(packets) == 8
    assert len(sent[0]) <= 1232
    probe_index = next(i for i, d in enumerate(sent) if len(d) > 1232)
    probe = packets[probe_index]
    assert len(sent[probe_index]) == (1232 + 1472 + 1) // 2
    # libutp's extension bits come first (it drops a packet naming a type of 3 or more in
    # its header), then the padding.
    assert sent[probe_index][1] == 2
    assert sent[probe_index][20] == PADDING_EXTENSION
    assert is_mtu_probe(sent[probe_index])
    assert not any(is_mtu_probe(d) for i, d in enumerate(sent) if i != probe_index)
    assert len(probe.payload) == a._payload_size  # padding is not data
    cwnd = a._cwnd
    # The peer got everything but the probe: three packets after it are selectively acked.
    ack = UtpPacket(
        UtpPacketType.STATE,
        a.recv_id,
        0,
        1000,
        1 << 20,
        net.b._seq_nr,
        (probe.seq_nr - 1) & 0xFFFF,
        selective_ack=bytes([0b1111, 0, 0, 0]),
    )
    a.receive_packet(ack, net.now + 1)
    assert a._cwnd >= cwnd  # not cut
    assert a._mtu_ceiling == (1232 + 1472 + 1) // 2 - 1
    assert a.mtu == 1232
    (resent,) = a.datagrams_to_send(net.now + 1)
    assert len(resent) <= 1232
    again = UtpPacket.decode(resent)
    assert (again.seq_nr, again.payload) == (probe.seq_nr, probe.payload)
    assert a.statistics().mtu_probes_lost == 1


def test_a_probe_alone_in_flight_that_times_out_cuts_nothing() -> None:
    net = mtu_pair(max_ab=IPV4_1280, max_ba=IPV4_1280)
    a = net.a
    a._cwnd = 20.0 * a._payload_size
    a._peer_wnd = 1 << 20
    a.write(data(2 * a._payload_size))
    net.run_until(lambda: a.all_sent and a._probe_seq is None, 10 * SECOND)
    # One packet went first and the probe after it: the probe alone timed out.
    stats = a.statistics()
    assert stats.mtu_probes == stats.mtu_probes_lost == 1
    assert stats.timeouts == 1
    assert a._cwnd == 20.0 * a._payload_size
    assert a._timeouts == 0


def test_padded_probe_decodes_to_its_payload() -> None:
    net = mtu_pair()
    a = net.a
    a._cwnd = 20.0 * a._payload_size
    a._peer_wnd = 1 << 20
    chunk = data(3 * a._payload_size)
    a.write(chunk)
    sent = a.datagrams_to_send(net.now)
    # Full packets are the floor less the room for a selective ack (none was due here).
    assert [len(d) for d in sent] == [1232 - 34, 1352, 1232 - 34]
    assert b"".join(UtpPacket.decode(d).payload for d in sent) == chunk
    # The chain: libutp's extension bits (8 bytes), one padding link, then nothing (no
    # selective ack was due).
    probe = sent[1]
    assert probe[1] == 2  # the header names the extension bits
    assert probe[HEADER_SIZE : HEADER_SIZE + 2] == bytes((PADDING_EXTENSION, 8))
    link = HEADER_SIZE + 10
    assert probe[link] == 0  # one padding link: its next extension is "none"
    assert probe[link + 1] == 1352 - (1232 - 34) - 10 - 2
    for datagram in sent:
        net.b.receive_packet(UtpPacket.decode(datagram), net.now + 1)
    assert net.b.read() == chunk


@given(
    st.binary(max_size=1500),
    st.none() | st.binary(min_size=4, max_size=32),
    st.integers(0, _MAX_PADDING),
)
def test_padding_is_exact_and_transparent(payload: bytes, sack: bytes | None, extra: int) -> None:
    packet = UtpPacket(UtpPacketType.DATA, 7, 1, 2, 3, 4, 5, selective_ack=sack, payload=payload)
    datagram = packet.encode()
    padded = _pad(datagram, len(datagram) + extra)
    # The extension bits (10 bytes) and a link (2 bytes at least) fit, or nothing is added.
    assert len(padded) == len(datagram) + (extra if extra >= 12 else 0)
    assert is_mtu_probe(padded) == (extra >= 12)
    assert UtpPacket.decode(padded) == packet


def test_large_gaps_are_padded_with_several_links() -> None:
    config = UtpConfig(min_datagram=600, max_datagram_v4=9000)
    net = mtu_pair(config, max_ab=9000, max_ba=9000)
    payload = data(2_000_000, seed=5)
    assert move(net, payload) == payload
    # Each probe is at most the padding a receiver walks above the floor: steps of
    # about 1500 bytes, each of them confirmed.
    assert net.a.mtu > 5000
    assert net.a.statistics().mtu_probes_lost == 0


# ------------------------------------------------------------------ EMSGSIZE and shrinking


def test_emsgsize_on_a_probe_lowers_the_ceiling_at_once() -> None:
    net = mtu_pair(max_ab=1400, max_ba=1400, emsgsize=True)
    payload = data(1_000_000, seed=6)
    assert move(net, payload) == payload
    assert net.a.mtu == 1400
    stats = net.a.statistics()
    assert stats.mtu_probes_lost == net.refused >= 1
    assert stats.timeouts == stats.fast_retransmits == 0  # refusals resent at once, uncut
    assert net.a._ssthresh == float(_MAX_CWND)


def test_a_floor_too_big_for_the_interface_is_cut_again() -> None:
    # The configured floor is more than the interface takes: every full packet is refused
    # and cut again into packets of the size the socket takes.
    config = UtpConfig(min_datagram=1472, max_datagram_v6=1472)
    net = mtu_pair(config, max_ab=1300, max_ba=1300, emsgsize=True)
    payload = data(500_000, seed=7)
    assert move(net, payload) == payload
    assert net.a.mtu <= 1300
    assert net.refused >= 1
    assert net.a.statistics().bytes_sent == len(payload)  # cut bytes are counted once


def test_an_interface_that_shrinks_mid_transfer_recovers() -> None:
    net = mtu_pair(max_ab=IPV4_1500, max_ba=IPV4_1500, emsgsize=True)
    payload = data(3_000_000, seed=8)
    shrunk: list[int] = []

    def shrink() -> bool:
        if not shrunk and net.a.statistics().bytes_sent > 1_000_000:
            assert net.a.mtu == 1472
            net.max_ab = net.max_ba = IPV4_1280  # a VPN came up
            shrunk.append(net.now)
        return True

    assert move(net, payload, read=shrink) == payload
    assert shrunk
    assert net.a.mtu <= IPV4_1280
    assert max(net.sizes[-100:]) <= IPV4_1280
    assert net.a.statistics().timeouts == 0


def test_a_path_that_shrinks_silently_recovers_by_fragments() -> None:
    # The path shrinks with no ICMP: probes (sent with "don't fragment") vanish, every other
    # datagram arrives fragmented, as libtorrent's do. Nothing stalls, nothing is cut.
    net = mtu_pair(max_ab=IPV4_1500, max_ba=IPV4_1500, fragment=True)
    payload = data(2_000_000, seed=10)
    shrunk: list[int] = []

    def shrink() -> bool:
        if not shrunk and net.a.statistics().bytes_sent > 500_000:
            assert net.a.mtu > IPV4_1280
            net.max_ab = net.max_ba = IPV4_1280
            shrunk.append(net.now)
        return True

    assert move(net, payload, read=shrink) == payload
    assert shrunk
    assert net.fragmented > 0
    assert net.a.statistics().timeouts == 0


def test_probes_are_told_apart() -> None:
    net = mtu_pair()
    a = net.a
    a._cwnd = 20.0 * a._payload_size
    a._peer_wnd = 1 << 20
    a.write(data(3 * a._payload_size))
    assert [is_mtu_probe(d) for d in a.datagrams_to_send(net.now)] == [False, True, False]
    assert not is_mtu_probe(b"")


def test_emsgsize_reports_that_cannot_apply_are_harmless() -> None:
    net = mtu_pair()
    a = net.a
    a.datagram_too_big(b"short")  # not a uTP packet
    assert a.mtu == 1232
    ack = UtpPacket(UtpPacketType.STATE, a.send_id, 0, 0, 0, 1, 1).encode()
    a.datagram_too_big(ack + bytes(1300))  # an ack: nothing to resend
    assert a._mtu_ceiling == 1319
    assert a.mtu == 1232
    assert a.datagrams_to_send(net.now) == []
    a.datagram_too_big(ack)  # a datagram smaller than any MTU
    assert a._mtu_ceiling == a.mtu == MIN_DATAGRAM
    assert a._payload_size == MIN_DATAGRAM - PACKET_OVERHEAD
    foreign = UtpPacket(UtpPacketType.DATA, a.send_id ^ 1, 0, 0, 0, 1, 1).encode()
    a.datagram_too_big(foreign)
    a.abort()
    a.datagram_too_big(foreign)


def test_sustained_loss_restarts_the_search() -> None:
    net = mtu_pair(max_ab=IPV4_1500, max_ba=IPV4_1500)
    a = net.a

    def pump() -> bool:
        a.write(data(100_000, seed=9))
        net.b.read()
        return a.mtu == 1472

    net.run_until(pump, 10 * SECOND)
    net.max_ab = 0  # the path goes dark
    net.run_until(lambda: a.statistics().timeouts >= 2, 10 * SECOND)
    assert a.mtu == 1232
    assert a._mtu_ceiling == 1472


@settings(max_examples=15, deadline=None)
@given(
    st.integers(0, 2**32),
    st.lists(st.integers(MIN_DATAGRAM, 1600), min_size=1, max_size=6),
    st.booleans(),
)
def test_an_interface_mtu_that_keeps_changing_never_corrupts_the_stream(
    seed: int, limits: list[int], both_ways: bool
) -> None:
    # The interface MTU changes every 100 ms while data flows (both ways, sometimes):
    # packets are refused, re-cut, probed again; every byte arrives once, in order.
    net = mtu_pair(max_ab=limits[0], max_ba=limits[0], emsgsize=True, seed=seed)
    ab, ba = data(300_000, seed), data(100_000 if both_ways else 0, seed + 1)
    got_ab, got_ba = bytearray(), bytearray()
    sent = [0, 0]
    changes = iter(limits[1:])
    changed = [0]  # 100 ms periods seen

    def pump() -> bool:
        for index, (writer, payload) in enumerate(((net.a, ab), (net.b, ba))):
            if sent[index] < len(payload):
                sent[index] += writer.write(memoryview(payload)[sent[index] :])
            elif not writer.write_shut:
                writer.shutdown_write()
        got_ab.extend(net.b.read())
        got_ba.extend(net.a.read())
        if net.now // 100_000 > changed[0]:
            changed[0] += 1
            limit = next(changes, None)
            if limit is not None:
                net.max_ab = net.max_ba = limit
        return net.a.eof_received and net.b.eof_received and not net.a.readable

    net.run_until(pump, 60 * SECOND)
    assert bytes(got_ab) == ab
    assert bytes(got_ba) == ba
    assert net.a.statistics().bytes_sent == len(ab)
