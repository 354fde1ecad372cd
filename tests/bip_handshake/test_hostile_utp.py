"""A hostile-peer campaign against a running UtpSocket over loopback UDP.

Raw UDP attackers on other 127.0.0.X addresses flood, forge and garble packets at a real
socket on 127.0.0.1; after each campaign, the bounds still hold (the socket's and the
connections' sizes do not grow with the campaign's length), nothing was logged at ERROR,
and an honest uTP connection on the same socket still carries data. Campaigns whose point
is a timer (zero windows, idle peers) run over ``open_utp_over`` on the virtual clock.
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from ipaddress import IPv4Address

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_handshake import PeerAddress, _utp_connection
from bip_handshake._utp_config import UtpConfig
from bip_handshake._utp_connection import (
    _REORDER_PACKET_COST,
    MAX_REORDER_DISTANCE,
    UtpConnection,
    UtpReceiveBudget,
    UtpState,
)
from bip_handshake._utp_packet import UtpPacket, UtpPacketType, encode_packet, sack_offsets
from bip_handshake._utp_socket import UtpSocket, open_utp_over, open_utp_socket
from bip_handshake._utp_stream import UtpStream

T = UtpPacketType
DEADLINE = 20.0
"""Seconds any one loopback campaign may take, set-up and honest transfer included."""


def packet(  # noqa: PLR0917 (the header's fields, in wire order)
    kind: UtpPacketType,
    conn_id: int,
    seq: int,
    ack: int,
    wnd: int = 1 << 20,
    ts: int = 0,
    tsd: int = 0,
    payload: bytes = b"",
    sack: bytes | None = None,
) -> bytes:
    return encode_packet(
        kind, conn_id & 0xFFFF, ts, tsd, wnd, seq & 0xFFFF, ack & 0xFFFF, sack, payload
    )


class Attacker:
    """A raw UDP socket on its own loopback address."""

    def __init__(self, sock: trio.socket.SocketType, target: tuple[str, int]) -> None:
        self.sock = sock
        self.target = target

    async def send(self, data: bytes) -> None:
        await self.sock.sendto(data, self.target)

    async def send_many(self, datagrams: list[bytes]) -> None:
        for index, data in enumerate(datagrams):
            await self.sock.sendto(data, self.target)
            if index % 64 == 63:
                # Let the victim drain its socket buffer: the campaign is about what it
                # does with the packets, not about the kernel dropping them.
                await trio.sleep(0.001)

    async def receive(self, timeout: float = 2.0) -> UtpPacket | None:
        with trio.move_on_after(timeout):
            data, _ = await self.sock.recvfrom(70_000)
            return UtpPacket.decode(data)
        return None

    async def drain(self) -> list[UtpPacket]:
        """What the victim sent us and is waiting in our socket now."""
        got = []
        while (answer := await self.receive(0.05)) is not None:
            got.append(answer)
        return got

    @property
    def address(self) -> PeerAddress:
        host, port = self.sock.getsockname()
        return PeerAddress(IPv4Address(host), port)


@asynccontextmanager
async def attacker(victim: UtpSocket, host: str = "127.0.0.2") -> AsyncIterator[Attacker]:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind((host, 0))
        yield Attacker(sock, (str(victim.local_address.host), victim.local_address.port))


async def handshake(raw: Attacker, victim: UtpSocket, conn_id: int, seq: int) -> UtpPacket:
    """Open a connection from the attacker; the victim's answer (its seq_nr is its first)."""
    await raw.send(packet(T.SYN, conn_id, seq, 0))
    answer = await raw.receive()
    assert answer is not None
    assert answer.type is T.STATE
    return answer


def victim_core(victim: UtpSocket, raw: Attacker, conn_id: int) -> UtpConnection:
    connection = victim._connections[(raw.address, (conn_id + 1) & 0xFFFF)]
    return connection.core


async def honest_transfer(victim: UtpSocket, size: int = 200_000) -> None:
    """An honest client on 127.0.0.1 connects to ``victim`` and sends ``size`` bytes."""
    data = random.Random(size).randbytes(size)
    received = bytearray()

    async with open_utp_socket(("127.0.0.1", 0)) as client:

        async def server() -> None:
            async for stream in victim.incoming():
                if stream.remote_address == client.local_address:
                    while chunk := await stream.receive_some():
                        received.extend(chunk)
                    await stream.aclose()
                    return
                await stream.aclose()  # an attacker's: not ours to serve

        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            stream = await client.connect(victim.local_address)
            await stream.send_all(data)
            await stream.send_eof()
            await stream.aclose()
    assert bytes(received) == data


def assert_clean(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


@pytest.fixture(autouse=True)
def _capture(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_handshake")


# ------------------------------------------------------------------------------ SYN floods


async def test_syn_flood_from_one_and_many_addresses(caplog: pytest.LogCaptureFixture) -> None:
    config = UtpConfig(max_connections=64, max_pending_accepts=16, resets_per_second=50)
    rng = random.Random(7)
    with trio.fail_after(DEADLINE):
        async with open_utp_socket(config=config) as victim:
            for host in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
                async with attacker(victim, host) as raw:
                    syns = [
                        packet(T.SYN, rng.randrange(0x10000), rng.randrange(0x10000), 0)
                        for _ in range(1000)
                    ]
                    # Garbage behind the header: unknown extensions, a truncated chain.
                    syns += [
                        bytes((0x41, 0x55)) + rng.randbytes(18) + rng.randbytes(rng.randrange(40))
                        for _ in range(200)
                    ]
                    await raw.send_many(syns)
            await trio.sleep(0.2)
            stats = victim.statistics()
            assert stats.connections <= config.max_pending_accepts
            assert stats.accepted <= config.max_pending_accepts
            assert stats.refused >= 1000
            assert len(victim._queue) <= 8192
            # Unclaimed, the flood fills the accept queue: a server claims and drops the
            # streams that never speak; the honest client still gets through.
            await honest_transfer(victim)
            # The flood's connections (claimed and closed, never confirmed) are gone.
            assert victim.statistics().connections <= 1
    assert_clean(caplog)


async def test_syn_flood_claimed_by_a_server_leaves_room(caplog: pytest.LogCaptureFixture) -> None:
    """A server that claims every stream and closes the silent ones: the flood's half-open
    connections must not hold slots for long, or max_connections locks honest peers out."""
    config = UtpConfig(max_connections=32, max_pending_accepts=8, connect_timeout=2.0)
    rng = random.Random(8)
    with trio.fail_after(DEADLINE):
        async with open_utp_socket(config=config) as victim:
            async with attacker(victim) as raw:
                for _ in range(5):
                    for _ in range(200):
                        await raw.send(
                            packet(T.SYN, rng.randrange(0x10000), rng.randrange(0x10000), 0)
                        )
                    await trio.sleep(0.01)
                    # The server claims and gives up on the silent streams at once.
                    while True:
                        try:
                            stream = victim.incoming().receive_nowait()
                        except trio.WouldBlock:
                            break
                        await stream.aclose()
                    # Closing a connection whose peer never spoke after its SYN frees it.
                    assert victim.statistics().connections == 0
            await honest_transfer(victim)
    assert_clean(caplog)


async def test_half_open_connections_expire(autojump_clock: trio.testing.MockClock) -> None:
    """SYNs whose senders never speak again: each half-open connection ends by itself
    after keepalive_interval + connect_timeout (not the two-minute idle timeout)."""
    config = UtpConfig(max_connections=100, max_pending_accepts=100)
    sent: list[bytes] = []

    async def send(data: bytes, address: PeerAddress) -> None:
        sent.append(data)
        await trio.lowlevel.checkpoint()

    here = PeerAddress(IPv4Address("10.0.0.1"), 6881)
    async with open_utp_over(send, here, config=config) as victim:
        for index in range(100):
            syn = packet(T.SYN, index * 7, index, 0)
            victim.datagram_received(syn, PeerAddress(IPv4Address("10.9.0.1"), 1000 + index))
        assert victim.statistics().connections == 100
        claimed = [victim.incoming().receive_nowait() for _ in range(100)]
        await trio.sleep(config.keepalive_interval + config.connect_timeout + 1)
        assert victim.statistics().connections == 0
        for stream in claimed:
            with pytest.raises(trio.BrokenResourceError):
                await stream.receive_some()
            await stream.aclose()


async def test_syn_for_an_id_in_use_by_another_peer(caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(DEADLINE):
        async with open_utp_socket() as victim, attacker(victim) as peer:
            ours = (await handshake(peer, victim, 1000, 50)).seq_nr
            honest = await victim.incoming().receive()
            core = victim_core(victim, peer, 1000)
            async with attacker(victim, "127.0.0.3") as other:
                # The same connection id from another address is another connection: the
                # first is not touched (no hijack, no replacement).
                await handshake(other, victim, 1000, 9)
                second = await victim.incoming().receive()
                assert victim.statistics().replaced == 0
                # A SYN with the same id and another sequence number from the *same*
                # address, while the connection is live, is refused.
                await peer.send(packet(T.DATA, 1001, 51, ours - 1, payload=b"live"))
                assert await honest.receive_some() == b"live"
                await peer.send(packet(T.SYN, 1000, 777, 0))
                await trio.sleep(0.1)
                assert victim_core(victim, peer, 1000) is core
                assert core.state is UtpState.CONNECTED
                assert victim.statistics().refused == 1
                await second.aclose()
            await honest.aclose()
            await honest_transfer(victim, 50_000)
    assert_clean(caplog)


# ------------------------------------------------------------------------------ forgeries


async def test_hostile_answers_to_our_connect(caplog: pytest.LogCaptureFixture) -> None:
    """Our SYN's answer forged from another address, a RESET from another address, an ack
    for a packet we never sent: all ignored; the real answer connects."""
    with trio.fail_after(DEADLINE):
        async with open_utp_socket() as us:
            listener = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with listener:
                await listener.bind(("127.0.0.6", 0))
                host, port = listener.getsockname()
                target = PeerAddress(IPv4Address(host), port)
                async with trio.open_nursery() as nursery:
                    result: list[object] = []

                    async def dial() -> None:
                        result.append(await us.connect(target))

                    nursery.start_soon(dial)
                    data, _ = await listener.recvfrom(2048)
                    syn = UtpPacket.decode(data)
                    assert syn.type is T.SYN
                    cid, seq = syn.connection_id, syn.seq_nr
                    ours = (us.local_address.host.exploded, us.local_address.port)
                    async with attacker(us, "127.0.0.7") as forger:
                        await forger.send(packet(T.STATE, cid, 77, seq))
                        await forger.send(packet(T.RESET, cid, 77, seq))
                    await listener.sendto(packet(T.STATE, cid, 77, seq + 5), ours)
                    await listener.sendto(packet(T.DATA, cid, 77, seq + 9, payload=b"?"), ours)
                    await trio.sleep(0.1)
                    assert not result
                    await listener.sendto(packet(T.STATE, cid, 77, seq), ours)
                stream = result[0]
                assert isinstance(stream, UtpStream)
                await stream.send_all(b"after all that")
                while True:
                    data, _ = await listener.recvfrom(2048)
                    got = UtpPacket.decode(data)
                    if got.type is T.DATA:
                        assert got.payload == b"after all that"
                        break
                await stream.aclose()
    assert_clean(caplog)


async def test_forged_packets_into_an_established_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(DEADLINE):
        async with open_utp_socket() as victim, attacker(victim) as peer:
            answer = await handshake(peer, victim, 2000, 100)
            ours = answer.seq_nr  # the victim's first sequence number
            stream = await victim.incoming().receive()
            core = victim_core(victim, peer, 2000)
            async with attacker(victim, "127.0.0.5") as forger:
                forged = [
                    # Right id, wrong address: RESET, FIN, DATA, acks.
                    packet(T.RESET, 2001, 0, 100),
                    packet(T.RESET, 2000, 0, 100),
                    packet(T.FIN, 2001, 101, ours - 1),
                    packet(T.DATA, 2001, 101, ours - 1, payload=b"forged"),
                    packet(T.STATE, 2001, 0, ours + 5, wnd=0),
                ]
                # Wrong ids, every type.
                forged += [packet(T(kind), cid, 101, 0) for kind in range(4) for cid in (3, 2002)]
                await forger.send_many(forged * 50)
                await trio.sleep(0.1)
            assert core.state is UtpState.CONNECTED
            assert core.readable == 0
            # From the peer's own address, wrong ids are unknown connections too.
            await peer.send_many([packet(T.RESET, cid, 0, 0) for cid in (1999, 2003, 7)])
            await peer.send(packet(T.DATA, 2001, 101, ours - 1, payload=b"real"))
            assert await stream.receive_some() == b"real"
            assert core.state is UtpState.CONNECTED
            stats = victim.statistics()
            assert stats.resets_sent + stats.resets_suppressed >= 1
            await stream.aclose()
            await honest_transfer(victim)
    assert_clean(caplog)


async def test_far_ahead_fin_and_data_are_not_buffered(caplog: pytest.LogCaptureFixture) -> None:
    config = UtpConfig(receive_buffer=64 * 1024)
    with trio.fail_after(DEADLINE):
        async with open_utp_socket(config=config) as victim, attacker(victim) as peer:
            answer = await handshake(peer, victim, 3000, 0xFFF0)  # wraps during the test
            ours = answer.seq_nr
            stream = await victim.incoming().receive()
            core = victim_core(victim, peer, 3000)
            base = 0xFFF0
            hostile = [
                packet(T.FIN, 3001, base + MAX_REORDER_DISTANCE + 5, ours - 1),
                packet(T.FIN, 3001, base + 0x7000, ours - 1),
                packet(T.FIN, 3001, base + 0x9000, ours - 1),  # "behind" us
            ]
            hostile += [
                packet(T.DATA, 3001, base + distance, ours - 1, payload=b"x" * 1000)
                for distance in (MAX_REORDER_DISTANCE + 1, 5000, 0x7FFF, 0x8000, 0xFFFF)
            ]
            # Out of order within reach, but past the window we advertise (64 KiB).
            hostile += [
                packet(T.DATA, 3001, base + distance, ours - 1, payload=b"y" * 1200)
                for distance in range(2, 200)
            ]
            await peer.send_many(hostile * 3)
            await trio.sleep(0.1)
            assert core._eof_seq is None
            # The window bounds the payload held; the budget counts each packet's charge too.
            charge = len(core._reorder) * _REORDER_PACKET_COST
            assert core._reorder_bytes - charge <= config.receive_buffer
            assert victim.statistics().buffered - charge <= config.receive_buffer
            # The hole is filled: what was buffered is delivered, in order; nothing more.
            await peer.send(packet(T.DATA, 3001, base + 1, ours - 1, payload=b"y" * 1200))
            got = bytearray()
            with trio.move_on_after(0.5):
                while True:
                    got += await stream.receive_some()
            assert got == b"y" * len(got)
            assert len(got) <= config.receive_buffer + 1200
            assert not core.eof_received
            await stream.aclose()
            await honest_transfer(victim)
    assert_clean(caplog)


async def test_reorder_flood_and_duplicates_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    config = UtpConfig(receive_buffer=256 * 1024)
    rng = random.Random(3)
    with trio.fail_after(DEADLINE):
        async with open_utp_socket(config=config) as victim, attacker(victim) as peer:
            answer = await handshake(peer, victim, 4000, 10)
            ours = answer.seq_nr
            stream = await victim.incoming().receive()
            core = victim_core(victim, peer, 4000)
            sizes = []
            for round_ in range(4):
                distances = list(range(2, MAX_REORDER_DISTANCE + 1))
                rng.shuffle(distances)
                flood = [
                    packet(T.DATA, 4001, 10 + d, ours - 1, payload=bytes([d & 0xFF]) * (d % 7))
                    for d in distances
                ]
                # Duplicates of every other one, and zero-length DATA.
                flood += flood[::2]
                await peer.send_many(flood)
                await trio.sleep(0.05)
                sizes.append((len(core._reorder), core._reorder_bytes))
                assert len(core._reorder) <= MAX_REORDER_DISTANCE
                assert core._reorder_bytes <= config.receive_buffer
                assert round_ == 0 or sizes[-1] == sizes[0]  # duplicates add nothing
            # Fill the hole: everything buffered is delivered once, in order.
            await peer.send(packet(T.DATA, 4001, 11, ours - 1, payload=b"."))
            expected = b"." + b"".join(bytes([d & 0xFF]) * (d % 7) for d in range(2, 1025))
            got = bytearray()
            while len(got) < len(expected):
                got += await stream.receive_some()
            assert got == expected
            assert core._reorder_bytes == 0
            assert victim.statistics().buffered == 0
            await stream.aclose()
            await honest_transfer(victim)
    assert_clean(caplog)


async def test_many_peers_fill_the_reorder_share(caplog: pytest.LogCaptureFixture) -> None:
    """Eight peers each hold a hole and fill what they can behind it: together they take
    at most half the socket's budget, and an honest connection still gets through."""
    config = UtpConfig(receive_buffer=128 * 1024, max_buffered=512 * 1024)
    with trio.fail_after(DEADLINE):
        async with open_utp_socket(config=config) as victim, trio.open_nursery() as nursery:
            streams = []
            for index in range(8):
                raw = await nursery.start(_reorder_filler, victim, f"127.0.0.{10 + index}")
                streams.append(raw)
            await trio.sleep(0.2)
            budget = victim._budget
            assert config.max_buffered // 2 - 1000 < budget.reorder_used
            assert budget.reorder_used <= config.max_buffered // 2
            assert budget.used <= config.max_buffered
            assert victim.statistics().buffered == budget.used
            await honest_transfer(victim)
            nursery.cancel_scope.cancel()
    assert_clean(caplog)


async def _reorder_filler(
    victim: UtpSocket, host: str, *, task_status: trio.TaskStatus[UtpStream]
) -> None:
    async with attacker(victim, host) as raw:
        ours = (await handshake(raw, victim, 100, 7)).seq_nr
        stream = await victim.incoming().receive()
        await raw.send_many(
            [packet(T.DATA, 101, 7 + d, ours - 1, payload=b"r" * 1000) for d in range(2, 200)]
        )
        task_status.started(stream)
        await trio.sleep_forever()


# ------------------------------------------------------------------------------ acks


async def test_hostile_acks(caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(DEADLINE):
        async with open_utp_socket() as victim, attacker(victim) as peer:
            answer = await handshake(peer, victim, 5000, 20)
            ours = answer.seq_nr
            stream = await victim.incoming().receive()
            core = victim_core(victim, peer, 5000)
            await peer.send(packet(T.STATE, 5001, 20, ours - 1))  # confirms
            await stream.send_all(b"z" * 20_000)
            await trio.sleep(0.05)
            hostile = [
                # Acks for packets never sent (ahead of seq_nr), with and without sacks.
                packet(T.STATE, 5001, 20, ours + 1000),
                packet(T.STATE, 5001, 20, ours + 0x7FFF, sack=b"\xff" * 255),
                packet(T.STATE, 5001, 20, ours + 0x8000, sack=b"\xff" * 255),
                # Sacks of every length, all ones, acking packets never sent.
                *(packet(T.STATE, 5001, 20, ours - 1, sack=b"\xff" * n) for n in (1, 3, 7, 255)),
                # wnd_size extremes, timestamp differences at the edges of 32 bits.
                packet(T.STATE, 5001, 20, ours - 1, wnd=0xFFFFFFFF, tsd=0xFFFFFFFF),
                packet(T.STATE, 5001, 20, ours - 1, ts=0xFFFFFFFF, tsd=0x80000000),
                packet(T.STATE, 5001, 20, ours - 1, tsd=1),
            ]
            # Extension chains that loop or overrun (a decoder's business: invalid).
            header = bytearray(packet(T.STATE, 5001, 20, ours - 1))
            header[1] = 1
            hostile += [
                bytes(header) + bytes((1, 4)) + b"\xff" * 4 + bytes((1, 4)) + b"\xff" * 4,
                bytes(header) + bytes((2, 200)) + b"\x00" * 10,
                bytes(header) + b"".join(bytes((5, 0)) for _ in range(50)),
            ]
            await peer.send_many(hostile * 100)
            await trio.sleep(0.1)
            assert core.state is UtpState.CONNECTED
            assert victim.statistics().invalid_datagrams >= 300
            assert core._outgoing  # nothing was acked by acks for packets never sent
            # The peer now acks everything for real, instantly, with absurd delays: the
            # window shrinks to a packet, but the data gets through.
            chunks: dict[int, int] = {}
            ack = ours - 1
            with trio.fail_after(10):
                while sum(chunks.values()) < 20_000:
                    got = await peer.receive()
                    assert got is not None
                    if got.type is T.DATA:
                        chunks[got.seq_nr] = len(got.payload)
                        while (ack + 1) & 0xFFFF in chunks:
                            ack = (ack + 1) & 0xFFFF
                    received = sum(chunks.values())
                    await peer.send(
                        packet(T.STATE, 5001, 20, ack, ts=0xFFFF0000, tsd=0xFFFFFFF0 - received)
                    )
            assert received == 20_000
            assert core.statistics().cwnd >= core._payload_size
            await stream.aclose()
            await honest_transfer(victim)
    assert_clean(caplog)


async def test_huge_selective_acks_cost_little(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 255-byte all-ones selective ack names 2040 packets: only the ones in flight are
    looked at (a flood of them must not cost 2040 steps each)."""
    config = UtpConfig()
    a = UtpConnection.connect(1, 100, now_us=0, config=config)
    syn = UtpPacket.decode(a.datagrams_to_send(0)[0])
    a.receive_packet(UtpPacket(T.STATE, 2, 0, 0, 1 << 20, 500, syn.seq_nr), 10)
    a.write(b"q" * 5000)
    a.datagrams_to_send(20)
    seen: list[int] = []
    real = sack_offsets

    def counting(bitmask: bytes) -> list[int]:
        seen.append(len(bitmask))
        return real(bitmask)

    monkeypatch.setattr(_utp_connection, "sack_offsets", counting)
    hostile = UtpPacket(T.STATE, 2, 0, 0, 1 << 20, 500, 100, selective_ack=b"\xff" * 255)
    a.receive_packet(hostile, 30)
    assert seen
    assert max(seen) <= 4  # a handful of packets in flight: a few bytes of mask


async def test_zero_window_forever_times_out(autojump_clock: trio.testing.MockClock) -> None:
    """A peer that keeps answering, always with a shut window and never acking our data:
    the connection fails (idle_timeout without progress); send_all does not hang."""
    config = UtpConfig(idle_timeout=60.0)
    here = PeerAddress(IPv4Address("10.0.0.1"), 6881)
    there = PeerAddress(IPv4Address("10.0.0.9"), 4000)
    to_peer: list[UtpPacket] = []

    async def send(data: bytes, address: PeerAddress) -> None:
        to_peer.append(UtpPacket.decode(data))
        await trio.lowlevel.checkpoint()

    async with open_utp_over(send, here, config=config) as victim:
        victim.datagram_received(packet(T.SYN, 600, 30, 0, wnd=0), there)
        stream = await victim.incoming().receive()
        await trio.sleep(0.01)
        ours = to_peer[0].seq_nr

        async def hostile_peer() -> None:
            while True:
                await trio.sleep(0.5)  # "alive, only full", twice a second, forever
                victim.datagram_received(packet(T.STATE, 601, 30, ours - 1, wnd=0), there)

        start = trio.current_time()
        with trio.fail_after(config.idle_timeout * 3):
            await _write_until_broken(stream, hostile_peer)
        assert trio.current_time() - start <= config.idle_timeout + 10
        assert victim.statistics().connections == 0
        await stream.aclose()


async def _write_until_broken(
    stream: trio.abc.SendStream, hostile_peer: Callable[[], Awaitable[None]]
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hostile_peer)
        with pytest.raises(trio.BrokenResourceError):
            await _send_forever(stream)
        nursery.cancel_scope.cancel()


async def _send_forever(stream: trio.abc.SendStream) -> None:
    while True:
        await stream.send_all(b"w" * 65536)


async def test_keepalive_only_peer(autojump_clock: trio.testing.MockClock) -> None:
    """A peer that only ever sends keepalives keeps its connection (that is what they are
    for) at a constant cost; once it stops, the connection ends after idle_timeout."""
    config = UtpConfig(idle_timeout=60.0)
    here = PeerAddress(IPv4Address("10.0.0.1"), 6881)
    there = PeerAddress(IPv4Address("10.0.0.9"), 4000)
    to_peer: list[bytes] = []

    async def send(data: bytes, address: PeerAddress) -> None:
        to_peer.append(data)
        await trio.lowlevel.checkpoint()

    async with open_utp_over(send, here, config=config) as victim:
        victim.datagram_received(packet(T.SYN, 700, 30, 0), there)
        stream = await victim.incoming().receive()
        await trio.sleep(0.01)
        ours = UtpPacket.decode(to_peer[0]).seq_nr
        # Confirmed (an initiator's first ST_STATE), then keepalives only.
        victim.datagram_received(packet(T.STATE, 701, 30, ours - 1), there)
        for _ in range(40):
            await trio.sleep(25)
            victim.datagram_received(packet(T.STATE, 701, 30, ours - 1), there)
        assert victim.statistics().connections == 1
        assert len(to_peer) < 100  # our keepalives, one per 29 s at most: no storm
        start = trio.current_time()
        with pytest.raises(trio.BrokenResourceError):
            await stream.receive_some()
        assert trio.current_time() - start <= config.idle_timeout + 1
        assert victim.statistics().connections == 0
        await stream.aclose()


# ------------------------------------------------------------------------------ framing


async def test_framing_garbage(caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(11)
    with trio.fail_after(DEADLINE):
        async with open_utp_socket() as victim, attacker(victim) as peer:
            answer = await handshake(peer, victim, 8000, 5)
            ours = answer.seq_nr
            stream = await victim.incoming().receive()
            core = victim_core(victim, peer, 8000)
            garbage = [b"", b"\x01", bytes(19)]
            garbage += [
                bytes((kind << 4 | version,)) + bytes(19)
                for kind in range(16)
                for version in (0, 2, 15)
            ]
            garbage += [bytes(((kind << 4) | 1,)) + rng.randbytes(19) for kind in range(5, 16)]
            garbage += [rng.randbytes(rng.randrange(1, 100)) for _ in range(300)]
            await peer.send_many(garbage)
            # Zero-length DATA in order, and a 64 KiB datagram (past one packet, within
            # the window: taken), then a datagram as large as UDP carries.
            await peer.send(packet(T.DATA, 8001, 6, ours - 1))
            await peer.send(packet(T.DATA, 8001, 7, ours - 1, payload=b"B" * 65000))
            await peer.send(packet(T.DATA, 8001, 8, ours - 1, payload=b"C" * (65507 - 20)))
            got = bytearray()
            while len(got) < 65000 + 65487:
                got += await stream.receive_some()
            assert got == b"B" * 65000 + b"C" * 65487
            assert core.state is UtpState.CONNECTED
            assert victim.statistics().invalid_datagrams >= 300
            await stream.aclose()
            await honest_transfer(victim)
    assert_clean(caplog)


# ------------------------------------------------------------------------------ slow peers


async def test_peer_that_never_reads(autojump_clock: trio.testing.MockClock) -> None:
    """Acks everything but advertises a shrinking window: our buffers stay bounded and
    send_all blocks instead of buffering."""
    config = UtpConfig(send_buffer=64 * 1024, idle_timeout=30.0)
    here = PeerAddress(IPv4Address("10.0.0.1"), 6881)
    there = PeerAddress(IPv4Address("10.0.0.9"), 4000)
    window = [256 * 1024]
    acked = [-1]
    victim_box: list[UtpSocket] = []

    async def send(data: bytes, address: PeerAddress) -> None:
        await trio.lowlevel.checkpoint()
        got = UtpPacket.decode(data)
        if got.type is T.DATA:
            # Takes what fits its window (never read), in order; drops the rest.
            if len(got.payload) <= window[0] and got.seq_nr == (acked[0] + 1) & 0xFFFF:
                window[0] -= len(got.payload)
                acked[0] = got.seq_nr
            victim_box[0].datagram_received(
                packet(T.STATE, 801, 30, acked[0], wnd=window[0]), there
            )

    async with open_utp_over(send, here, config=config) as victim:
        victim_box.append(victim)
        victim.datagram_received(packet(T.SYN, 800, 30, 0), there)
        stream = await victim.incoming().receive()
        core = victim._connections[(there, 801)].core
        acked[0] = (core._seq_nr - 1) & 0xFFFF
        victim.datagram_received(packet(T.STATE, 801, 30, acked[0]), there)
        written = 0
        with trio.move_on_after(20):
            while True:
                await stream.send_all(b"n" * 16384)
                written += 16384
        assert written <= 256 * 1024 + config.send_buffer + 16384
        assert len(core._pending) <= config.send_buffer
        await stream.aclose()


async def test_one_byte_per_packet(caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(DEADLINE):
        async with open_utp_socket() as victim, attacker(victim) as peer:
            answer = await handshake(peer, victim, 9000, 1)
            ours = answer.seq_nr
            stream = await victim.incoming().receive()
            core = victim_core(victim, peer, 9000)
            total = 0
            seq = 1
            for _ in range(20):
                await peer.send_many(
                    [packet(T.DATA, 9001, seq + i, ours - 1, payload=b"1") for i in range(1, 201)]
                )
                seq += 200
                got = bytearray()
                while len(got) < 200:
                    got += await stream.receive_some()
                total += len(got)
                assert core._reorder_bytes == 0
                assert core.readable == 0
                # Acks come back coalesced: never more than one per DATA.
                acks = await peer.drain()
                assert len(acks) <= 200
            assert total == 4000
            await stream.aclose()
            await honest_transfer(victim)
    assert_clean(caplog)


# ------------------------------------------------------------------------------ regressions
# The sans-IO rules the campaigns above needed, one by one.


def _accepted(config: UtpConfig, syn_seq: int = 30) -> tuple[UtpConnection, int]:
    syn = UtpPacket(T.SYN, 900, 0, 0, 1 << 20, syn_seq, 0)
    core = UtpConnection.accept(syn, 5000, now_us=0, config=config)
    [state] = core.datagrams_to_send(0)
    assert UtpPacket.decode(state).type is T.STATE
    return core, syn_seq


def test_closing_an_unconfirmed_connection_ends_it_at_once() -> None:
    core, _ = _accepted(UtpConfig())
    core.close(10)
    [reset] = core.datagrams_to_send(10)
    assert UtpPacket.decode(reset).type is T.RESET
    assert core.finished


def test_closing_an_unconfirmed_connection_with_data_lingers() -> None:
    core, _ = _accepted(UtpConfig())
    core.write(b"hello")
    core.close(10)
    assert not core.finished
    assert core.state is UtpState.CONNECTED


def test_half_open_deadline() -> None:
    config = UtpConfig()
    half_open = int((config.keepalive_interval + config.connect_timeout) * 1e6)
    core, _ = _accepted(config)
    deadline = core.next_deadline()
    while deadline is not None and deadline < half_open:
        core.handle_timer(deadline)
        core.datagrams_to_send(deadline)
        deadline = core.next_deadline()
    assert deadline == half_open
    core.handle_timer(half_open)
    assert core.state is UtpState.FAILED
    assert "half-open" in str(core.error)
    assert UtpPacket.decode(core.datagrams_to_send(half_open)[0]).type is T.RESET


def test_a_resent_syn_is_answered_but_does_not_lift_the_half_open_deadline() -> None:
    """A flooder resending its SYN from a real address keeps no slot past the half-open
    deadline; each copy is answered again, as our first answer may have been lost."""
    config = UtpConfig()
    core, syn_seq = _accepted(config)
    half_open = int((config.keepalive_interval + config.connect_timeout) * 1e6)
    for now in range(5_000_000, half_open, 5_000_000):
        core.receive_packet(UtpPacket(T.SYN, 900, now, 0, 1 << 20, syn_seq, 0), now)
        answers = [UtpPacket.decode(d) for d in core.datagrams_to_send(now)]
        assert any(packet.type is T.STATE for packet in answers)
    core.handle_timer(half_open)
    assert core.state is UtpState.FAILED
    assert "half-open" in str(core.error)


def test_a_confirmation_lifts_the_half_open_deadline() -> None:
    config = UtpConfig()
    core, syn_seq = _accepted(config)
    core.receive_packet(UtpPacket(T.STATE, 901, 0, 0, 1 << 20, syn_seq + 1, 4999), 1000)
    now = int((config.keepalive_interval + config.connect_timeout) * 1e6) + 1
    core.handle_timer(now)
    assert core.state is UtpState.CONNECTED


def test_no_progress_under_a_shut_window_fails() -> None:
    """Acks that keep the peer alive but never take our data: idle_timeout, then a RESET."""
    config = UtpConfig(idle_timeout=30.0)
    core, syn_seq = _accepted(config)
    core.receive_packet(UtpPacket(T.STATE, 901, 0, 0, 0, syn_seq + 1, 4999), 1000)
    core.write(b"x" * 5000)
    now = 1000
    for _ in range(10_000):
        if core.state is UtpState.FAILED:
            break
        core.datagrams_to_send(now)
        deadline = core.next_deadline()
        assert deadline is not None
        now = max(now + 1, min(deadline, now + 500_000))
        core.handle_timer(now)
        # The peer answers every half second: alive, its window shut, nothing acked.
        core.receive_packet(UtpPacket(T.STATE, 901, 0, 0, 0, syn_seq + 1, 4999), now)
    assert core.state is UtpState.FAILED
    assert "acknowledged" in str(core.error)
    assert now <= 32_000_000


# ------------------------------------------------------------------------------ fuzzing


_fields = st.tuples(
    st.sampled_from([T.DATA, T.FIN, T.STATE, T.STATE, T.DATA, T.SYN, T.RESET]),
    st.integers(-40, 40) | st.integers(0, 0xFFFF),  # seq, relative to the next expected
    st.integers(-40, 40) | st.integers(0, 0xFFFF),  # ack, relative to our last sent
    st.sampled_from([0, 1, 1400, 1 << 20, 0xFFFFFFFF]),
    st.integers(0, 0xFFFFFFFF),
    st.sampled_from([0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]) | st.integers(0, 0xFFFFFFFF),
    st.none() | st.binary(min_size=1, max_size=255),
    st.sampled_from([0, 1, 100, 1200, 5000]),
    st.integers(0, 2_000_000),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_fields, max_size=60), st.integers(0, 0xFFFF))
def test_random_packets_keep_the_invariants(
    packets: list[tuple[UtpPacketType, int, int, int, int, int, bytes | None, int, int]],
    base: int,
) -> None:
    """Whatever a connected peer sends, in any order: no exception, and the books balance
    (bytes in flight, buffered bytes, the shared budget) within their bounds."""
    config = UtpConfig(receive_buffer=64 * 1024, max_buffered=256 * 1024)
    budget = UtpReceiveBudget(config.max_buffered)
    syn = UtpPacket(T.SYN, 900, 0, 0, 1 << 20, base, 0)
    core = UtpConnection.accept(syn, 5000, now_us=0, config=config, budget=budget)
    core.receive_packet(UtpPacket(T.STATE, 901, 0, 0, 1 << 20, (base + 1) & 0xFFFF, 4999), 10)
    core.write(b"w" * 20_000)
    now = 10
    for kind, seq, ack, wnd, ts, tsd, sack, size, step in packets:
        now += step
        core.handle_timer(now)
        core.datagrams_to_send(now)
        seq_nr = (core._ack_nr + 1 + seq) & 0xFFFF if seq < 0x100 else seq
        ack_nr = (core._seq_nr - 1 + ack) & 0xFFFF if ack < 0x100 else ack
        hostile = UtpPacket(
            kind, 901, ts, tsd, wnd, seq_nr, ack_nr, selective_ack=sack, payload=b"p" * size
        )
        core.receive_packet(hostile, now)
        core.datagrams_to_send(now)
        if core.readable and step % 2:
            core.read()
        if core.state is UtpState.FAILED:
            break
        in_flight = sum(
            len(entry.payload) for entry in core._outgoing.values() if not entry.need_send
        )
        assert core._in_flight == in_flight
        assert core._unsent == sum(entry.need_send for entry in core._outgoing.values())
        charge = len(core._reorder) * _REORDER_PACKET_COST  # per packet held out of order
        assert core._reorder_bytes == sum(map(len, core._reorder.values())) + charge
        assert len(core._reorder) <= MAX_REORDER_DISTANCE
        assert core._reorder_bytes - charge <= config.receive_buffer
        assert budget.used == core.readable + core._reorder_bytes
        assert budget.reorder_used == core._reorder_bytes
        assert core._cwnd >= 1
    core.close(now)
    core.datagrams_to_send(now)
    # A closed reader's buffer is given back; out-of-order data stays counted until the
    # hole is filled (then dropped) or the connection ends.
    assert budget.used == core._reorder_bytes
    core.abort()
    assert budget.used == 0


def test_repeated_selective_acks_judge_each_packet_once() -> None:
    """A peer repeating a large mask: the packets below it are judged (fast-resent) once;
    each later copy walks nothing old; a timeout makes them eligible again."""
    config = UtpConfig()
    a = UtpConnection.connect(1, 100, now_us=0, config=config)
    syn = UtpPacket.decode(a.datagrams_to_send(0)[0])
    a.receive_packet(UtpPacket(T.STATE, 2, 0, 0, 1 << 30, 500, syn.seq_nr), 10)
    a._cwnd = 1e6
    a._rtt_us = None  # no pacing: the whole window leaves at once
    a.write(b"q" * 300_000)
    a.datagrams_to_send(20)
    in_flight = len(a._outgoing)
    assert in_flight > 200
    hostile = UtpPacket(T.STATE, 2, 0, 0, 1 << 30, 500, 100, selective_ack=b"\x55" * 255)
    a.receive_packet(hostile, 30)
    first = a.statistics().fast_retransmits
    assert first > 50
    scanned = a._sack_scanned
    for step in range(100):
        a.receive_packet(hostile, 31 + step)
    assert a.statistics().fast_retransmits == first
    assert a._sack_scanned == scanned
    a.datagrams_to_send(200)
    a.handle_timer(10_000_000)  # a retransmission timeout: everything goes again
    assert a._sack_scanned is None
