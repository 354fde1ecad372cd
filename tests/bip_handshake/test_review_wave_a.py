"""Regression tests from the review of the uTP MTU discovery, socket and handshaker changes."""

from __future__ import annotations

import heapq
import random
from collections import Counter
from ipaddress import IPv4Address

import pytest
import trio
import trio.testing

from bip_handshake import EncryptionPolicy, Extensions, Handshake, PeerAddress, PeerId
from bip_handshake._handshaker import (
    CompletedHandshake,
    DialFailure,
    Handshaker,
    open_handshaker,
)
from bip_handshake._utp_config import MAX_PAYLOAD, UtpConfig
from bip_handshake._utp_connection import (
    _REORDER_PACKET_COST,
    UtpConnection,
    UtpReceiveBudget,
    is_mtu_probe,
)
from bip_handshake._utp_packet import UtpPacket, UtpPacketType
from bip_handshake._utp_socket import open_utp_over
from bip_metainfo import InfoHash

_LOCAL = PeerAddress(IPv4Address("10.0.0.1"), 6881)
_PEER = PeerAddress(IPv4Address("10.0.0.9"), 7000)


def _syn_packet(connection_id: int, seq: int) -> UtpPacket:
    return UtpPacket(UtpPacketType.SYN, connection_id, 0, 0, 1 << 20, seq, 0)


def _data(conn: UtpConnection, seq: int, payload: bytes) -> UtpPacket:
    return UtpPacket(
        UtpPacketType.DATA,
        conn.recv_id - 1 & 0xFFFF,
        0,
        0,
        1 << 20,
        seq & 0xFFFF,
        conn._acked,
        payload=payload,
    )


def _accepted(budget: UtpReceiveBudget, config: UtpConfig, index: int) -> UtpConnection:
    conn = UtpConnection.accept(
        _syn_packet(index * 2, 1000), 5000, now_us=0, config=config, budget=budget
    )
    conn.datagrams_to_send(0)
    return conn


def _advertised(conn: UtpConnection, now: int) -> int:
    conn._ack_pending = True
    return UtpPacket.decode(conn.datagrams_to_send(now)[-1]).wnd_size


# ------------------------------------------------------------------- the receive budget


def test_a_hole_far_ahead_does_not_let_a_peer_pass_the_budget_by_more_than_a_packet() -> None:
    # One out-of-order packet far ahead must not make every in-order packet before it
    # "the packet that fills the hole": the budget is passed by one packet per connection
    # (the documented bound), and a peer holding a hole open cannot fill its whole window
    # over a full budget (a thousand such peers: a gibibyte).
    config = UtpConfig(max_buffered=8 * MAX_PAYLOAD, receive_buffer=64 * MAX_PAYLOAD)
    budget = UtpReceiveBudget(config.max_buffered)
    chunk = b"x" * MAX_PAYLOAD
    hostile = _accepted(budget, config, 1)
    filler = _accepted(budget, config, 2)
    hostile.receive_packet(_data(hostile, hostile._ack_nr + 60, chunk), 1)
    assert hostile._reorder_bytes == MAX_PAYLOAD + _REORDER_PACKET_COST  # and its charge
    while budget.free() >= MAX_PAYLOAD:
        filler.receive_packet(_data(filler, filler._ack_nr + 1, chunk), 1)
    assert budget.free() < MAX_PAYLOAD
    for _ in range(50):
        hostile.receive_packet(_data(hostile, hostile._ack_nr + 1, chunk), 2)
    assert budget.used <= budget.limit + MAX_PAYLOAD
    # The window it advertises never promises what it would then drop: no room now.
    assert _advertised(hostile, 3) < MAX_PAYLOAD
    # Its reader drains the packet taken over budget: room for the next one (and it says so).
    assert hostile.read()
    assert _advertised(hostile, 4) >= MAX_PAYLOAD
    before = hostile._ack_nr
    hostile.receive_packet(_data(hostile, before + 1, chunk), 5)
    assert hostile._ack_nr == before + 1 & 0xFFFF
    assert budget.used <= budget.limit + MAX_PAYLOAD


# ------------------------------------------------------------------- the socket's RESETs


async def test_a_reset_rate_below_one_per_second_still_sends_resets(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # resets_per_second=0.5 is one RESET every two seconds, not none at all.
    sent: list[bytes] = []

    async def send(datagram: bytes, address: PeerAddress) -> None:
        sent.append(datagram)

    stray = UtpPacket(UtpPacketType.DATA, 77, 0, 0, 1 << 20, 5, 4, payload=b"?").encode()
    config = UtpConfig(resets_per_second=0.5)
    async with open_utp_over(send, _LOCAL, config=config) as utp:
        for _ in range(10):
            utp.datagram_received(stray, _PEER)
        await trio.sleep(0.1)
        assert utp.statistics().resets_sent == 1
        assert utp.statistics().resets_suppressed == 9
        await trio.sleep(1)  # half a token: still none
        utp.datagram_received(stray, _PEER)
        await trio.sleep(0.1)
        assert utp.statistics().resets_sent == 1
        await trio.sleep(1)
        utp.datagram_received(stray, _PEER)
        await trio.sleep(0.1)
        assert utp.statistics().resets_sent == 2
        assert len(sent) == 2
        assert all(UtpPacket.decode(d).type is UtpPacketType.RESET for d in sent)
    # Off means off.
    async with open_utp_over(send, _LOCAL, config=UtpConfig(resets_per_second=0)) as utp:
        utp.datagram_received(stray, _PEER)
        await trio.sleep(0.1)
        assert utp.statistics().resets_sent == 0


async def test_a_window_reopened_by_another_connection_failing_is_announced_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A connection starved by the shared budget is woken when another connection gives its
    # bytes back; when that one fails on a packet (a RESET), no read follows to send the
    # update: the socket must send it after the packet, or the peer waits for its probe.
    config = UtpConfig(max_buffered=4 * MAX_PAYLOAD, max_pending_accepts=8)
    sent: list[UtpPacket] = []

    async def send(datagram: bytes, address: PeerAddress) -> None:
        sent.append(UtpPacket.decode(datagram))

    chunk = b"w" * MAX_PAYLOAD

    def packet(kind: UtpPacketType, our_id: int, seq: int, ack: int, payload: bytes) -> bytes:
        return UtpPacket(kind, our_id + 1, 0, 0, 1 << 20, seq, ack, payload=payload).encode()

    async with open_utp_over(send, _LOCAL, config=config) as utp:
        utp.datagram_received(_syn_packet(10, 100).encode(), _PEER)  # starved: connection id 10
        utp.datagram_received(_syn_packet(20, 500).encode(), _PEER)  # freeing: connection id 20
        await trio.sleep(0.01)
        acks = {p.connection_id: p for p in sent if p.type is UtpPacketType.STATE}
        # Wrapped: a SYN-ACK numbered 0 (1 in 65,536) is acknowledged as 65535.
        starved_ack, freeing_ack = acks[10].seq_nr - 1 & 0xFFFF, acks[20].seq_nr - 1 & 0xFFFF
        # Freeing holds the out-of-order half of the budget, starved the in-order half
        # (each packet held out of order is charged _REORDER_PACKET_COST beyond its payload).
        short = chunk[: MAX_PAYLOAD - 2 * _REORDER_PACKET_COST]
        for offset, payload in ((2, chunk), (3, short)):
            utp.datagram_received(
                packet(UtpPacketType.DATA, 20, 500 + offset, freeing_ack, payload), _PEER
            )
        for offset in (1, 2):
            utp.datagram_received(
                packet(UtpPacketType.DATA, 10, 100 + offset, starved_ack, chunk), _PEER
            )
        await trio.sleep(0.01)
        assert utp._budget.free() == 0
        last = [p for p in sent if p.connection_id == 10][-1]
        assert last.wnd_size < MAX_PAYLOAD
        sent.clear()
        # The peer's RESET acks what it acked before (one acking nothing we sent is ignored).
        utp.datagram_received(packet(UtpPacketType.RESET, 20, 0, freeing_ack, b""), _PEER)
        # No read anywhere, no timer run: only the socket's own pump after the packet (what
        # it sends waits in its queue for the sender task, or was sent already).
        out = sent + [UtpPacket.decode(datagram) for datagram, _, _ in utp._queue]
        updates = [p for p in out if p.connection_id == 10 and p.type is UtpPacketType.STATE]
        assert updates
        assert updates[-1].wnd_size >= 2 * MAX_PAYLOAD


# ------------------------------------------------------------------- the handshaker's pairs

_TORRENT = InfoHash(v1=b"\x11" * 20)
_REMOTE = PeerId(b"-XX0000-remoteremote")


def _handshake_bytes() -> bytes:
    return Handshake(Extensions.FAST, b"\x11" * 20, _REMOTE.value).to_bytes()


class _ScriptedPeers:
    """Dials that answer, fail or hang until released, per address, as a test says."""

    def __init__(self) -> None:
        self.mode: dict[PeerAddress, str] = {}
        self.release = trio.Event()
        self.remotes: list[trio.abc.Stream] = []

    async def dial(self, address: PeerAddress) -> trio.abc.Stream:
        mode = self.mode.get(address, "answer")
        if mode == "hang":
            await self.release.wait()
        if mode == "fail":
            raise OSError("refused")
        ours, theirs = trio.testing.memory_stream_pair()
        self.remotes.append(theirs)
        await theirs.send_all(_handshake_bytes())
        return ours


@pytest.mark.parametrize("seed", range(12))
async def test_the_handshakers_pairs_never_leak(seed: int) -> None:
    # Random dials (answered, refused, hanging), inbound handshakes from the same addresses
    # (simultaneous opens included), closes, failed-dial callbacks and cancels: after every
    # step the taken pairs are exactly those dialling or open (as many as are delivered and
    # not closed), and once everything is closed and released, nothing is left.
    rng = random.Random(seed)
    addresses = [PeerAddress(IPv4Address(f"10.7.0.{n}"), 6881) for n in range(1, 4)]
    peers = _ScriptedPeers()
    delivered: list[CompletedHandshake] = []
    failures: list[DialFailure] = []

    def check(hs: Handshaker) -> None:
        open_now = Counter((p.info_hash, p.address) for p in delivered)
        assert {k: v for k, v in hs._open.items() if v} == dict(open_now)
        assert hs._taken == hs._dialling | set(open_now)

    async with (
        open_handshaker(
            peer_id=PeerId(b"-BP0100-aaaaaaaaaaaa"),
            listen=[],
            encryption=EncryptionPolicy.PLAINTEXT_ONLY,
            dial=peers.dial,
            on_dial_failed=failures.append,
        ) as hs,
        trio.open_nursery() as nursery,
    ):
        hs.register(_TORRENT)

        async def collect() -> None:
            async for peer in hs.completed():
                delivered.append(peer)

        nursery.start_soon(collect)
        remotes: list[trio.abc.Stream] = []
        for _ in range(60):
            address = rng.choice(addresses)
            step = rng.choice(("dial", "dial", "inbound", "close", "release", "mode"))
            if step == "dial":
                hs.connect(_TORRENT, address)
            elif step == "inbound":
                ours, theirs = trio.testing.memory_stream_pair()
                remotes.append(ours)
                hs.accept_stream(theirs, address, transport="utp")
                await ours.send_all(_handshake_bytes())
            elif step == "close" and delivered:
                peer = delivered.pop(rng.randrange(len(delivered)))
                await peer.aclose()
            elif step == "release":
                peers.release.set()
                peers.release = trio.Event()
            elif step == "mode":
                peers.mode[address] = rng.choice(("answer", "fail", "hang"))
            await trio.testing.wait_all_tasks_blocked()
            check(hs)
        # Everything ends: hanging dials are let go (answered), every connection closed.
        peers.mode.clear()
        peers.release.set()
        await trio.testing.wait_all_tasks_blocked()
        while delivered:
            await delivered.pop().aclose()
        await trio.testing.wait_all_tasks_blocked()
        check(hs)
        assert not hs._taken
        assert not hs._dialling
        assert not hs._open
        # Every failure told was a refused connect, of our torrent.
        assert all(f.reason == "connect_failed" and f.torrent == _TORRENT for f in failures)
        for stream in remotes + peers.remotes:
            await trio.aclose_forcefully(stream)
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------- path MTU discovery


def _consistent(conn: UtpConnection) -> None:
    assert conn._mtu_floor <= conn._mtu_ceiling
    entries = conn._outgoing.values()
    assert conn._unsent == sum(e.need_send for e in entries)
    assert conn._in_flight == sum(len(e.payload) for e in entries if not e.need_send)


@pytest.mark.parametrize("seed", range(6))
def test_probes_on_a_lossy_reordering_path_whose_mtu_changes(seed: int) -> None:
    # Loss, duplicates and reordering while the path MTU changes: probes are lost (silently,
    # or refused with EMSGSIZE: a probe leaves with "don't fragment"), acked by selective or
    # cumulative acks, restarted after timeouts; other datagrams over the limit arrive
    # fragmented. Sequence numbers start near the wrap. The stream arrives whole, and the
    # floor, the resend count and the bytes in flight stay consistent after every step.
    rng = random.Random(seed)
    config = UtpConfig(min_datagram=rng.choice([548, 1000, 1232]))
    a = UtpConnection.connect(rng.randrange(0x10000), 65530, now_us=0, config=config)
    b = UtpConnection.accept(
        UtpPacket.decode(a.datagrams_to_send(0)[0]), 65500, now_us=0, config=config
    )
    payload = rng.randbytes(400_000)
    limit: int | None = rng.choice([None, 1100, 1252, 1400])
    in_flight: list[tuple[int, int, str, bytes]] = []
    counter = now = sent = 0
    got = bytearray()
    for _ in range(200_000):
        if sent < len(payload):
            sent += a.write(memoryview(payload)[sent:])
        elif not a.write_shut:
            a.shutdown_write()
        got += b.read()
        if b.eof_received and not b.readable:
            break
        if rng.random() < 0.01:
            limit = rng.choice([None, 700, 1100, 1232, 1252, 1300, 1472])
        for name, core in (("ab", a), ("ba", b)):
            refused = False
            for datagram in core.datagrams_to_send(now):
                if refused:
                    core.datagram_not_sent(datagram)
                elif limit is not None and len(datagram) > limit and is_mtu_probe(datagram):
                    if rng.random() < 0.5:
                        core.datagram_too_big(datagram)
                        refused = True
                elif rng.random() >= 0.03:
                    for _ in range(2 if rng.random() < 0.01 else 1):
                        counter += 1
                        arrival = now + 10_000 + rng.randrange(20_000)
                        heapq.heappush(in_flight, (arrival, counter, name, datagram))
            _consistent(core)
        deadlines = [t for t in (a.next_deadline(), b.next_deadline()) if t is not None]
        if in_flight:
            deadlines.append(in_flight[0][0])
        now = max(now, min(deadlines))
        while in_flight and in_flight[0][0] <= now:
            _, _, name, datagram = heapq.heappop(in_flight)
            (b if name == "ab" else a).receive_packet(UtpPacket.decode(datagram), now)
        for core in (a, b):
            deadline = core.next_deadline()
            if deadline is not None and deadline <= now:
                core.handle_timer(now)
            _consistent(core)
    assert bytes(got) == payload
    assert a.statistics().mtu_probes > 0
