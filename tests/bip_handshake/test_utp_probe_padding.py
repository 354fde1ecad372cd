"""A uTP MTU probe is the datagram that leaves padded to the probed size, nothing else.

A full packet picked for the probe whose selective ack (up to 32 bytes) left too little room
for the padding (libutp's 8-byte extension bits and a link: 12 bytes) went out unpadded yet
counted as the probe: its loss ended the search at the floor (a size never sent taken as
refused) and cut no window (a real loss taken for a probe's). It is an ordinary packet now.
Its neighbours: a probe the socket dropped unsent goes again as the same probe (counted
once) or, when it can no longer be padded, as an ordinary packet; a lost probe goes again
unpadded, uncounted; a probe acked before that copy left undoes its declared loss, so that
the ceiling never stays below a size that arrived. The peer here is the test itself, so
that any sequence of acks, selective acks and losses can be played against the sans-IO
core, with time as an argument.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from _utp_sim import MtuLink, mtu_pair
from hypothesis import event, given, settings
from hypothesis import strategies as st

from bip_handshake._utp_config import UtpConfig
from bip_handshake._utp_connection import UtpConnection, is_mtu_probe
from bip_handshake._utp_packet import UtpPacket, UtpPacketType, sack_from_offsets

FLOOR = 1232
FAR = 257
"""How far past the next expected packet a peer's packet makes our selective ack 32 bytes
long, the largest we send: a full packet's datagram is then exactly the floor."""


def _seq(datagram: bytes) -> int:
    return int.from_bytes(datagram[16:18])


def _peer_packet(
    a: UtpConnection,
    kind: UtpPacketType,
    *,
    seq: int,
    ack: int,
    sack: bytes | None = None,
    payload: bytes = b"",
    now: int = 0,
) -> UtpPacket:
    """A packet from ``a``'s peer: a window that never limits, a delay sample of 1 ms."""
    return UtpPacket(
        kind, a.recv_id, now & 0xFFFFFFFF, 1000, 1 << 20, seq & 0xFFFF, ack & 0xFFFF, sack, payload
    )


def _sack(ack: int, seqs: list[int]) -> bytes | None:
    return sack_from_offsets([((s - ack) & 0xFFFF) - 2 for s in seqs])


def _hold_far_packet(a: UtpConnection, now: int) -> int:
    """Make ``a`` hold a packet of its peer far out of order: every packet ``a`` sends then
    carries a 32-byte selective ack. Returns that packet's sequence number."""
    seq = (a._ack_nr + FAR) & 0xFFFF
    a.receive_packet(
        _peer_packet(a, UtpPacketType.DATA, seq=seq, ack=a._acked, payload=b"x", now=now), now
    )
    assert seq in a._reorder
    return seq


def _probing(ceiling: int) -> MtuLink:
    """A connected pair searching between the default floor and ``ceiling``, whose ``a`` may
    send a probe at once (a window of many packets, the peer's wide open)."""
    net = mtu_pair(UtpConfig(max_datagram_v4=ceiling))
    a = net.a
    a._cwnd = 20.0 * a._payload_size
    a._peer_wnd = 1 << 20
    return net


# ------------------------------------------------------------------ the edge


def test_a_packet_whose_selective_ack_leaves_no_room_for_padding_is_no_probe() -> None:
    net = _probing(1240)  # middle 1236: 4 bytes over a floor-sized datagram
    a = net.a
    _hold_far_packet(a, net.now)
    a.write(bytes(8 * a._payload_size))
    sent = a.datagrams_to_send(net.now)
    assert len(sent) == 8
    assert [len(d) for d in sent] == [FLOOR] * 8  # the selective ack fills the reserve
    assert not any(is_mtu_probe(d) for d in sent)
    assert a._probe_seq is None
    stats = a.statistics()
    assert (stats.mtu_probes, stats.mtu_probes_lost) == (0, 0)


def test_the_loss_of_a_packet_that_could_not_be_padded_is_an_ordinary_loss() -> None:
    # The regression: the unpadded "probe" was counted, and its loss ended the search at the
    # floor (ceiling 1232, though no datagram over 1232 ever left) and cut no window.
    net = _probing(1240)
    a = net.a
    _hold_far_packet(a, net.now)
    a.write(bytes(8 * a._payload_size))
    sent = a.datagrams_to_send(net.now)
    seqs = [_seq(d) for d in sent]
    cwnd = a._cwnd
    # The peer got all but the second packet (the one picked for the probe): three packets
    # after it are selectively acked.
    ack = seqs[0]
    sack = _sack(ack, seqs[2:5])
    peer_seq = (a._ack_nr + 1) & 0xFFFF
    a.receive_packet(
        _peer_packet(a, UtpPacketType.STATE, seq=peer_seq, ack=ack, sack=sack, now=net.now + 1),
        net.now + 1,
    )
    assert a._mtu_ceiling == 1240  # the search goes on
    assert a.mtu == FLOOR
    assert a._cwnd < cwnd  # a real loss halves the window
    assert not a._slow_start
    stats = a.statistics()
    assert (stats.mtu_probes, stats.mtu_probes_lost) == (0, 0)
    assert stats.fast_retransmits == 1
    (resent,) = a.datagrams_to_send(net.now + 1)
    assert _seq(resent) == seqs[1]
    assert not is_mtu_probe(resent)


def test_once_the_selective_ack_shrinks_the_next_full_packet_is_the_probe() -> None:
    net = _probing(1240)
    a = net.a
    far = _hold_far_packet(a, net.now)
    a.write(bytes(6 * a._payload_size))
    assert not any(is_mtu_probe(d) for d in a.datagrams_to_send(net.now))
    # The peer fills the hole: the reorder buffer empties, selective acks stop.
    now = net.now + 1
    for seq in range((a._ack_nr + 1) & 0xFFFF, far):
        a.receive_packet(
            _peer_packet(a, UtpPacketType.DATA, seq=seq, ack=a._acked, payload=b"y", now=now),
            now,
        )
    assert not a._reorder
    a.write(bytes(6 * a._payload_size))
    more = [d for d in a.datagrams_to_send(now) if d[0] >> 4 == UtpPacketType.DATA]
    probes = [d for d in more if is_mtu_probe(d)]
    assert len(probes) == 1
    (probe,) = probes
    assert a._probe_seq == _seq(probe)
    assert len(probe) == (FLOOR + 1240 + 1) // 2 == a._outgoing[_seq(probe)].probed
    assert a.statistics().mtu_probes == 1
    # Its ack raises the floor to exactly what was sent.
    last = _seq(more[-1])
    a.receive_packet(
        _peer_packet(a, UtpPacketType.STATE, seq=far + 1, ack=last, now=now + 1), now + 1
    )
    assert a.mtu == 1236
    assert a._probe_seq is None


def test_a_range_of_one_byte_is_still_probed_to_its_end() -> None:
    # No selective ack: a full packet is 34 bytes under the floor, room enough for any probe
    # size above it, so that the search ends on the exact size, not short of it.
    net = _probing(FLOOR + 1)
    a = net.a
    a.write(bytes(6 * a._payload_size))
    sent = a.datagrams_to_send(net.now)
    probes = [d for d in sent if is_mtu_probe(d)]
    assert [len(d) for d in probes] == [FLOOR + 1]
    last = _seq(sent[-1])
    a.receive_packet(
        _peer_packet(a, UtpPacketType.STATE, seq=a._ack_nr + 1, ack=last, now=net.now + 1),
        net.now + 1,
    )
    assert a.mtu == a._mtu_ceiling == FLOOR + 1
    a.write(bytes(6 * a._payload_size))
    assert not any(is_mtu_probe(d) for d in a.datagrams_to_send(net.now + 1))
    assert a.statistics().mtu_probes == 1


# ------------------------------------------------------------------ resends


def _probe_sent(ceiling: int = 1472) -> tuple[MtuLink, list[bytes], bytes]:
    net = _probing(ceiling)
    a = net.a
    a.write(bytes(8 * a._payload_size))
    sent = a.datagrams_to_send(net.now)
    (probe,) = [d for d in sent if is_mtu_probe(d)]
    assert a.statistics().mtu_probes == 1
    return net, sent, probe


def test_a_probe_dropped_unsent_goes_again_padded_and_counts_once() -> None:
    net, _sent, probe = _probe_sent()
    a = net.a
    a.datagram_not_sent(probe)
    (again,) = a.datagrams_to_send(net.now + 1)
    assert again == probe or (len(again) == len(probe) and is_mtu_probe(again))
    assert a._probe_seq == _seq(probe)
    assert a.statistics().mtu_probes == 1


def test_a_probe_dropped_unsent_that_can_no_longer_be_padded_is_no_probe() -> None:
    net, sent, probe = _probe_sent(1240)
    a = net.a
    a.datagram_not_sent(probe)
    _hold_far_packet(a, net.now + 1)  # its resend now carries a 32-byte selective ack
    resent = [d for d in a.datagrams_to_send(net.now + 1) if d[0] >> 4 == UtpPacketType.DATA]
    assert _seq(resent[0]) == _seq(probe)
    assert not any(is_mtu_probe(d) for d in resent)
    assert a._probe_seq is None
    # It never left the host padded: not a probe sent, not a probe lost.
    assert a.statistics().mtu_probes == 0
    # Its loss is an ordinary one: everything else arrives, it alone times out, and the
    # window drops to one packet (a lost probe alone in flight would cut nothing).
    seqs = [_seq(d) for d in sent]
    index = seqs.index(_seq(probe))
    now = net.now + 2
    a.receive_packet(
        _peer_packet(
            a,
            UtpPacketType.STATE,
            seq=a._ack_nr + 1,
            ack=seqs[index - 1],
            sack=_sack(seqs[index - 1], seqs[index + 1 :]),
            now=now,
        ),
        now,
    )
    assert list(a._outgoing) == [_seq(probe)]
    deadline = a.next_deadline()
    assert deadline is not None
    a.handle_timer(deadline)
    assert a._cwnd == a._payload_size
    stats = a.statistics()
    assert stats.timeouts == 1
    assert (stats.mtu_probes, stats.mtu_probes_lost) == (0, 0)
    assert a._mtu_ceiling == 1240


def test_a_probe_dropped_unsent_past_a_lowered_ceiling_is_no_probe() -> None:
    net, _sent, probe = _probe_sent()
    a = net.a
    a.datagram_not_sent(probe)
    # The socket refused a datagram smaller than the probe meanwhile: its size is no
    # longer in the search range, and it goes as an ordinary packet.
    ack = UtpPacket(UtpPacketType.STATE, a.send_id, 0, 0, 0, 1, 1).encode()
    a.datagram_too_big(ack + bytes(len(probe) - len(ack) - 10))
    assert a._mtu_ceiling < len(probe)
    (again,) = a.datagrams_to_send(net.now + 1)
    assert _seq(again) == _seq(probe)
    assert not is_mtu_probe(again)
    assert len(again) <= FLOOR
    assert a._probe_seq is None
    assert a.statistics().mtu_probes == 0


def test_a_lost_probe_goes_again_unpadded_and_is_not_counted_again() -> None:
    net, sent, probe = _probe_sent()
    a = net.a
    seqs = [_seq(d) for d in sent]
    index = seqs.index(_seq(probe))
    ack = seqs[index - 1]
    a.receive_packet(
        _peer_packet(
            a,
            UtpPacketType.STATE,
            seq=a._ack_nr + 1,
            ack=ack,
            sack=_sack(ack, seqs[index + 1 : index + 4]),
            now=net.now + 1,
        ),
        net.now + 1,
    )
    assert a._mtu_ceiling == len(probe) - 1
    (resent,) = a.datagrams_to_send(net.now + 1)
    assert _seq(resent) == _seq(probe)
    assert not is_mtu_probe(resent)
    stats = a.statistics()
    assert (stats.mtu_probes, stats.mtu_probes_lost) == (1, 1)


def _lose_probe_to_reordering(net: MtuLink, sent: list[bytes], probe: bytes) -> int:
    """The peer selectively acks every packet after ``probe``, which is only late: ``a``
    declares it lost. Returns the probe's sequence number."""
    a = net.a
    seqs = [_seq(d) for d in sent]
    index = seqs.index(_seq(probe))
    ack = seqs[index - 1]
    sack = _sack(ack, seqs[index + 1 :])
    a.receive_packet(
        _peer_packet(a, UtpPacketType.STATE, seq=a._ack_nr + 1, ack=ack, sack=sack), net.now + 1
    )
    assert a._mtu_ceiling == len(probe) - 1
    assert a.statistics().mtu_probes_lost == 1
    return seqs[index]


def test_a_probe_acked_before_it_went_again_undoes_its_loss() -> None:
    # It arrived after the packets behind it: before its unpadded copy left, its ack says
    # the padded datagram got through, and the search goes on above it.
    net, sent, probe = _probe_sent()
    a = net.a
    seq = _lose_probe_to_reordering(net, sent, probe)
    last = _seq(sent[-1])
    a.receive_packet(_peer_packet(a, UtpPacketType.STATE, seq=a._ack_nr + 1, ack=last), net.now + 2)
    assert seq not in a._outgoing
    assert a.mtu == len(probe)
    assert a._mtu_ceiling == 1472
    stats = a.statistics()
    assert (stats.mtu_probes, stats.mtu_probes_lost) == (1, 0)


def test_a_probe_acked_after_its_unpadded_copy_left_says_nothing() -> None:
    net, sent, probe = _probe_sent()
    a = net.a
    seq = _lose_probe_to_reordering(net, sent, probe)
    (resent,) = a.datagrams_to_send(net.now + 2)
    assert _seq(resent) == seq
    a.receive_packet(
        _peer_packet(a, UtpPacketType.STATE, seq=a._ack_nr + 1, ack=_seq(sent[-1])), net.now + 3
    )
    # Either copy may have arrived: the loss stands.
    assert a.mtu == FLOOR
    assert a._mtu_ceiling == len(probe) - 1
    assert a.statistics().mtu_probes_lost == 1


def test_a_late_probe_ack_yields_to_a_refusal_since() -> None:
    net, sent, probe = _probe_sent()
    a = net.a
    _lose_probe_to_reordering(net, sent, probe)
    # The socket refuses a datagram smaller than the probe: the interface shrank since.
    ack = UtpPacket(UtpPacketType.STATE, a.send_id, 0, 0, 0, 1, 1).encode()
    a.datagram_too_big(ack + bytes(1300 - len(ack)))
    a.receive_packet(
        _peer_packet(a, UtpPacketType.STATE, seq=a._ack_nr + 1, ack=_seq(sent[-1])), net.now + 2
    )
    assert a._mtu_ceiling == 1299
    assert a.mtu == FLOOR
    assert a.statistics().mtu_probes_lost == 1


# ------------------------------------------------------------------ any acks and losses


@dataclass
class _Sent:
    """One datagram of ``a``'s."""

    seq: int
    size: int
    probe: bool
    floor: int
    """The floor when it was sent."""
    epoch: int
    """Searches restarted before it was sent."""


@dataclass
class _Peer:
    """The test as ``a``'s peer: what it received of ``a``'s, and when it is."""

    now: int
    cum: int
    """The last of ``a``'s packets received in order."""
    wire: list[_Sent] = field(default_factory=list)
    """``a``'s datagrams in flight, in order."""
    got: dict[int, _Sent] = field(default_factory=dict)
    """``a``'s packets received past ``cum``: the first copy that arrived."""
    received: dict[int, _Sent] = field(default_factory=dict)
    """Every packet of ``a``'s received: the first copy that arrived."""
    sizes: dict[int, set[int]] = field(default_factory=dict)
    """The datagram sizes ``a`` sent each packet in: an ack tells which copy arrived only
    when there is one (a probe resent unpadded after a timeout may have arrived padded)."""


_PATTERNS = st.lists(st.booleans(), min_size=1, max_size=12)
"""Which of the datagrams in flight arrive (cycled over them); the rest are lost."""
_OPS = st.one_of(
    st.tuples(st.just("round"), _PATTERNS, st.booleans()),
    st.tuples(st.just("deliver"), _PATTERNS, st.just(False)),
    st.tuples(st.just("ack"), st.just([True]), st.booleans()),
    # 161 to 256 past the next expected packet: selective acks of 24 to 32 bytes.
    st.tuples(st.just("data"), st.integers(0, 256) | st.integers(161, 256), st.just(False)),
    st.tuples(st.just("fill"), st.just(0), st.just(False)),
    st.tuples(st.just("tick"), st.integers(1, 700_000), st.just(False)),
)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 48),
    st.lists(_OPS, min_size=1, max_size=60),
    st.none() | st.integers(161, 256),
    st.integers(0, 2**16),
)
def test_every_probe_counted_left_padded_and_no_acked_size_is_ruled_out(
    span: int, ops: list[tuple[str, list[bool] | int, bool]], held: int | None, seed: int
) -> None:
    # A search range of 1 to 48 bytes, selective acks of any size (the peer's data far
    # ahead), any losses, acks with or without selective acks, timeouts. Every probe counted
    # left padded to exactly the probed size, inside the range, once; the floor rises only
    # to a probe size that arrived, the ceiling drops only for a lost probe, by its real
    # size, and never below a size known to have arrived in this search.
    net = mtu_pair(UtpConfig(max_datagram_v4=FLOOR + span), seed=seed)
    a = net.a
    a._cwnd = 20.0 * a._payload_size
    a._peer_wnd = 1 << 20
    a.write(bytes(300 * a._payload_size))
    peer = _Peer(net.now, a._acked)
    padded_total = 0
    epoch = 0
    acked_max = 0  # the largest datagram acked in this search that the path surely carried
    last_probe_size = 0

    def step() -> None:
        nonlocal padded_total, last_probe_size
        timers()
        floor, ceiling = a._mtu_floor, a._mtu_ceiling
        for datagram in a.datagrams_to_send(peer.now):
            if datagram[0] >> 4 not in (UtpPacketType.DATA, UtpPacketType.FIN):
                continue
            seq = _seq(datagram)
            probe = is_mtu_probe(datagram)
            full = len(UtpPacket.decode(datagram).payload) == a._payload_size
            if (
                full
                and not probe
                and floor < ceiling
                and len(datagram) + 12 > (floor + ceiling + 1) // 2
            ):
                event("a full packet had no room for a probe's padding")
            if probe:
                # The probe, at exactly the probed size, inside the search range.
                padded_total += 1
                assert seq == a._probe_seq
                assert len(datagram) == a._outgoing[a._probe_seq].probed
                assert floor < len(datagram) <= ceiling
                last_probe_size = len(datagram)
            else:
                assert seq != a._probe_seq, "the probe left unpadded"
            peer.wire.append(_Sent(seq, len(datagram), probe, floor, epoch))
            peer.sizes.setdefault(seq, set()).add(len(datagram))
        assert a.statistics().mtu_probes == padded_total

    def timers() -> None:
        before = set(a._outgoing)
        floor, ceiling = a._mtu_floor, a._mtu_ceiling
        lost = a.statistics().mtu_probes_lost
        if (deadline := a.next_deadline()) is not None and deadline <= peer.now:
            a.handle_timer(peer.now)
        check(before, floor, ceiling, lost)

    def receive(packet: UtpPacket) -> None:
        before = set(a._outgoing)
        floor, ceiling = a._mtu_floor, a._mtu_ceiling
        lost = a.statistics().mtu_probes_lost
        a.receive_packet(packet, peer.now)
        check(before, floor, ceiling, lost)

    def check(before: set[int], floor: int, ceiling: int, lost: int) -> None:
        nonlocal epoch, acked_max
        if a._mtu_floor < floor:  # two timeouts in a row: the search starts over
            event("the search restarted")
            epoch += 1
            acked_max = 0
            return
        acked = [peer.received[s] for s in before - set(a._outgoing) if s in peer.received]
        for sent in acked:
            # Sizes the path surely carried: a probe's (sent with "don't fragment"), or no
            # more than the floor, sent in this search, in one size only.
            surely = sent.probe or sent.size <= sent.floor
            if surely and sent.epoch == epoch and len(peer.sizes[sent.seq]) == 1:
                acked_max = max(acked_max, sent.size)
        if a._mtu_floor > floor:
            # Raised by an acked probe, to the size that arrived.
            event("a probe was acked")
            assert any(s.probe and s.size >= a._mtu_floor for s in acked)
        if a.statistics().mtu_probes_lost > lost:
            event("a probe was lost")
            assert a._mtu_ceiling == max(a._mtu_floor, min(ceiling, last_probe_size - 1))
        if a._mtu_ceiling < ceiling:
            assert a.statistics().mtu_probes_lost > lost  # only a lost probe lowers it
            assert a._mtu_ceiling >= acked_max
        assert a._mtu_floor <= a._mtu_ceiling

    rng = random.Random(seed)
    if held is not None:  # a selective ack of 24 to 32 bytes from the start
        ops = [("data", held, False), *ops]
    step()
    for op, arg, with_sack in ops:
        if a.state.name == "FAILED":
            break
        if op in ("deliver", "round"):
            pattern = arg
            assert isinstance(pattern, list)
            for index, sent in enumerate(peer.wire):
                if not pattern[index % len(pattern)]:
                    continue  # lost
                peer.received.setdefault(sent.seq, sent)
                distance = (sent.seq - peer.cum) & 0xFFFF
                if 0 < distance < 0x8000:
                    peer.got.setdefault(sent.seq, sent)
            peer.wire.clear()
            while (nxt := (peer.cum + 1) & 0xFFFF) in peer.got:
                del peer.got[nxt]
                peer.cum = nxt
        if op in ("ack", "round"):
            sack = _sack(peer.cum, list(peer.got)) if with_sack else None
            receive(
                _peer_packet(a, UtpPacketType.STATE, seq=a._ack_nr + 1, ack=peer.cum, sack=sack)
            )
        elif op == "data":
            assert isinstance(arg, int)
            seq = (a._ack_nr + 1 + arg) & 0xFFFF
            receive(
                _peer_packet(
                    a, UtpPacketType.DATA, seq=seq, ack=peer.cum, payload=bytes([seq & 0xFF]) * 20
                )
            )
        elif op == "fill":
            top = max(((s - a._ack_nr) & 0xFFFF for s in a._reorder), default=0)
            for offset in range(1, top):
                seq = (a._ack_nr + offset) & 0xFFFF
                if seq not in a._reorder:
                    receive(
                        _peer_packet(
                            a,
                            UtpPacketType.DATA,
                            seq=seq,
                            ack=peer.cum,
                            payload=bytes([seq & 0xFF]) * 20,
                        )
                    )
        elif op == "tick":
            assert isinstance(arg, int)
            peer.now += arg
        peer.now += rng.randrange(1, 2000)
        step()
