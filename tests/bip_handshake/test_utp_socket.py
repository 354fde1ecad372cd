"""The trio uTP shell: loopback UDP, and in-memory pairs over open_utp_over on a virtual clock."""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

import pytest
import trio
import trio.testing

from bip_handshake import EncryptionPolicy, PeerAddress, PeerId
from bip_handshake._handshaker import ListenError, open_handshaker
from bip_handshake._utp_config import UtpConfig, UtpConnectError, UtpError
from bip_handshake._utp_packet import UtpPacket, UtpPacketType
from bip_handshake._utp_socket import UtpSocket, open_utp_over, open_utp_socket
from bip_handshake._utp_stream import UtpStream
from bip_metainfo import InfoHash

A = PeerAddress(IPv4Address("10.0.0.1"), 6881)
B = PeerAddress(IPv4Address("10.0.0.2"), 6882)


@dataclass
class Link:
    """An in-memory network between two shared-socket owners."""

    sockets: dict[PeerAddress, UtpSocket] = field(default_factory=dict)
    cut: bool = False
    loss: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    sent: list[tuple[PeerAddress, PeerAddress, bytes]] = field(default_factory=list)
    drop_if: Callable[[bytes], bool] | None = None
    latency: float = 0.0
    nursery: trio.Nursery | None = None

    def sender(self, source: PeerAddress) -> Callable[[bytes, PeerAddress], Awaitable[None]]:
        async def send(data: bytes, address: PeerAddress) -> None:
            self.sent.append((source, address, data))
            await trio.lowlevel.checkpoint()
            if self.cut or self.rng.random() < self.loss:
                return
            if self.drop_if is not None and self.drop_if(data):
                return
            if self.latency and self.nursery is not None:
                self.nursery.start_soon(self._deliver_later, data, source, address)
            else:
                self._deliver(data, source, address)

        return send

    def _deliver(self, data: bytes, source: PeerAddress, address: PeerAddress) -> None:
        target = self.sockets.get(address)
        if target is not None:
            target.datagram_received(data, source)

    async def _deliver_later(self, data: bytes, source: PeerAddress, address: PeerAddress) -> None:
        await trio.sleep(self.latency)
        if not self.cut:
            self._deliver(data, source, address)


@asynccontextmanager
async def memory_pair(
    config: UtpConfig | None = None, link: Link | None = None
) -> AsyncIterator[tuple[UtpSocket, UtpSocket, Link]]:
    link = link or Link()
    async with trio.open_nursery() as nursery:
        link.nursery = nursery
        async with (
            open_utp_over(link.sender(A), A, config=config) as a,
            open_utp_over(link.sender(B), B, config=config) as b,
        ):
            link.sockets[A] = a
            link.sockets[B] = b
            yield a, b, link
        nursery.cancel_scope.cancel()


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some():
        data += chunk
    return bytes(data)


async def exchange(a: UtpSocket, b: UtpSocket, ab: bytes, ba: bytes) -> None:
    """a dials b; both send, half-close, and read what the other sent."""
    results: dict[str, bytes] = {}

    async def side(name: str, stream: UtpStream, data: bytes) -> None:
        async def writer() -> None:
            await stream.send_all(data)
            await stream.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            results[name] = await read_all(stream)
        await stream.aclose()

    async def server() -> None:
        stream = await b.incoming().receive()
        assert stream.remote_address == a.local_address
        await side("b", stream, ba)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        stream = await a.connect(b.local_address)
        assert stream.remote_address == b.local_address
        await side("a", stream, ab)
    assert results["b"] == ab
    assert results["a"] == ba


def blob(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# ----------------------------------------------------------------------------- loopback


async def test_loopback_mebibytes_both_ways() -> None:
    with trio.fail_after(30):
        async with open_utp_socket() as a, open_utp_socket() as b:
            assert a.local_address.port != 0
            await exchange(a, b, blob(3 << 20), blob(2 << 20, 1))
            stats = a.statistics()
            assert stats.connects == 1
            assert stats.connect_failures == 0
            assert b.statistics().accepted == 1
            assert stats.bytes_sent == 3 << 20


async def test_loopback_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        ctx = open_utp_socket(("::1", 0))
        async with ctx as a, open_utp_socket(("::1", 0)) as b:
            with trio.fail_after(10):
                await exchange(a, b, b"over six", b"and back")
            with pytest.raises(UtpConnectError, match="cannot reach"):
                await a.connect(A)  # an IPv4 address from an IPv6 socket
    except ListenError:
        pytest.skip("::1 is not available")


async def test_bind_errors() -> None:
    async with open_utp_socket() as a:
        with pytest.raises(ListenError, match="cannot bind"):
            async with open_utp_socket(("127.0.0.1", a.local_address.port)):
                pass
    with pytest.raises(ListenError, match="not an IP address"):
        async with open_utp_socket(("localhost", 0)):
            pass


async def test_loopback_garbage_and_unknown_connections() -> None:
    with trio.fail_after(10):
        async with open_utp_socket() as a:
            raw = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with raw:
                await raw.bind(("127.0.0.1", 0))
                target = (str(a.local_address.host), a.local_address.port)
                await raw.sendto(b"d1:ad2:id20:" + bytes(20) + b"e", target)
                stray = UtpPacket(UtpPacketType.DATA, 1234, 0, 0, 1000, 9, 8, payload=b"?")
                await raw.sendto(stray.encode(), target)
                data, _ = await raw.recvfrom(2048)
                reset = UtpPacket.decode(data)
                assert reset.type is UtpPacketType.RESET
                assert (reset.connection_id, reset.ack_nr) == (1234, 9)
            stats = a.statistics()
            assert stats.invalid_datagrams == 1
            assert stats.unknown_connection == 1
            assert stats.resets_sent == 1


# ------------------------------------------------------------------------------ memory


async def test_memory_connect_accept_and_half_close(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_pair() as (a, b, _):
        await exchange(a, b, blob(300_000), b"")
        await exchange(a, b, b"", blob(5000))
        await exchange(a, b, b"x", b"y")


async def test_memory_lossy_link(autojump_clock: trio.testing.MockClock) -> None:
    link = Link(loss=0.05, latency=0.02)
    async with memory_pair(link=link) as (a, b, _):
        start = trio.current_time()
        await exchange(a, b, blob(400_000), blob(100_000, 3))
        assert trio.current_time() - start < 20
        assert a.statistics().retransmits + b.statistics().retransmits > 0


async def test_handshaker_over_utp(autojump_clock: trio.testing.MockClock) -> None:
    torrent = InfoHash(v1=b"\x11" * 20)
    async with (
        memory_pair() as (a, b, _),
        open_handshaker(
            peer_id=PeerId(b"-BP0100-aaaaaaaaaaaa"),
            listen=[],
            dial=a.connect,
            encryption=EncryptionPolicy.PREFER_ENCRYPTED,
        ) as dialer,
        open_handshaker(
            peer_id=PeerId(b"-BP0100-bbbbbbbbbbbb"),
            listen=[],
            encryption=EncryptionPolicy.PREFER_ENCRYPTED,
        ) as acceptor,
    ):
        dialer.register(torrent)
        acceptor.register(torrent)

        async def accept() -> None:
            async for stream in b.incoming():
                acceptor.accept_stream(stream, stream.remote_address)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept)
            dialer.discovered(torrent, [b.local_address], "test")
            with trio.fail_after(30):
                ours = await dialer.completed().receive()
                theirs = await acceptor.completed().receive()
            assert ours.address == B
            assert theirs.address == A
            assert ours.encryption == "rc4"
            await ours.stream.send_all(b"piece data")
            assert await theirs.stream.receive_some() == b"piece data"
            await ours.aclose()
            await theirs.aclose()
            nursery.cancel_scope.cancel()


async def test_handshaker_counts_failed_utp_dials(autojump_clock: trio.testing.MockClock) -> None:
    torrent = InfoHash(v1=b"\x11" * 20)
    config = UtpConfig(max_pending_accepts=1)
    async with (
        memory_pair(config) as (a, b, link),
        open_handshaker(
            listen=[], dial=a.connect, encryption=EncryptionPolicy.PLAINTEXT_ONLY
        ) as dialer,
    ):
        dialer.register(torrent)
        link.cut = True  # no answer: the dial times out
        assert dialer.connect(torrent, B)
        with trio.fail_after(60):
            while dialer.statistics().failures < 1:
                await trio.sleep(1)
        link.cut = False
        unclaimed = await a.connect(B)  # fills b's accept queue: b refuses the next SYN
        assert dialer.connect(torrent, B)
        with trio.fail_after(60):
            while dialer.statistics().failures < 2:
                await trio.sleep(1)
        assert b.statistics().refused == 1
        await unclaimed.aclose()


async def test_connect_timeout(autojump_clock: trio.testing.MockClock) -> None:
    config = UtpConfig(connect_timeout=5.0)
    async with memory_pair(config) as (a, _, link):
        link.cut = True
        start = trio.current_time()
        with pytest.raises(UtpConnectError, match="no answer"):
            await a.connect(B)
        assert trio.current_time() - start == pytest.approx(5.0)
        syns = [UtpPacket.decode(d) for _, _, d in link.sent]
        assert {p.type for p in syns} >= {UtpPacketType.SYN}
        stats = a.statistics()
        assert (stats.connects, stats.connect_failures, stats.connections) == (1, 1, 0)


async def test_connect_refused_by_reset(autojump_clock: trio.testing.MockClock) -> None:
    config = UtpConfig(max_pending_accepts=1, max_connections=2)
    async with memory_pair(config) as (a, b, _):
        first = await a.connect(B)  # waits, unclaimed, in b's accept queue
        with pytest.raises(UtpConnectError, match="refused"):
            await a.connect(B)
        assert b.statistics().refused == 1
        assert a.statistics().connect_failures == 1
        second = await b.connect(A)  # b's own dials are not accepts
        with pytest.raises(UtpConnectError, match="too many"):
            await b.connect(A)
        await first.aclose()
        await second.aclose()


async def test_syn_flood_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    config = UtpConfig(max_connections=50, max_pending_accepts=10, resets_per_second=5)
    async with memory_pair(config) as (_, b, _link):
        for index in range(1000):
            syn = UtpPacket(UtpPacketType.SYN, index * 2, 0, 0, 1 << 20, 1, 0)
            b.datagram_received(syn.encode(), PeerAddress(IPv4Address("10.9.0.1"), 1000 + index))
        stats = b.statistics()
        assert stats.connections == 10  # the accept queue is the bound here
        assert stats.accepted == 10
        assert stats.refused == 990
        assert stats.resets_sent <= 5
        assert stats.resets_suppressed >= 985
        # Claiming the accepts lets more in, up to max_connections.
        claimed = [b.incoming().receive_nowait() for _ in range(10)]
        for index in range(1000, 1100):
            syn = UtpPacket(UtpPacketType.SYN, index * 2, 0, 0, 1 << 20, 1, 0)
            b.datagram_received(syn.encode(), PeerAddress(IPv4Address("10.9.0.2"), index))
            if b.incoming().statistics().current_buffer_used == 10:
                claimed.extend(b.incoming().receive_nowait() for _ in range(10))
        assert b.statistics().connections <= 50
        for stream in claimed:
            await stream.aclose()
        # Unanswered, the flood's connections time out (the SYNs' senders never speak).
        await trio.sleep(config.idle_timeout + config.close_timeout + 60)
        assert b.statistics().connections == 0


async def test_peer_vanishes_while_sending(autojump_clock: trio.testing.MockClock) -> None:
    config = UtpConfig(max_timeouts=3)
    async with memory_pair(config) as (a, b, link):
        stream = await a.connect(B)
        other = await b.incoming().receive()
        await stream.send_all(b"hello")
        assert await other.receive_some() == b"hello"
        link.cut = True
        start = trio.current_time()
        await stream.send_all(b"into the void")
        with pytest.raises(trio.BrokenResourceError) as info:
            await stream.receive_some()
        assert isinstance(info.value.__cause__, UtpError)
        assert "timed out" in str(info.value.__cause__)
        assert trio.current_time() - start < 30
        with pytest.raises(trio.BrokenResourceError):
            await stream.send_all(b"more")
        assert a.statistics().failed == 1
        await stream.aclose()
        await other.aclose()


async def test_idle_peer_times_out(autojump_clock: trio.testing.MockClock) -> None:
    config = UtpConfig(idle_timeout=50.0)
    async with memory_pair(config) as (a, b, link):
        stream = await a.connect(B)
        other = await b.incoming().receive()
        await trio.sleep(200)  # keepalives (every 29 s) keep a quiet connection open
        await stream.send_all(b"still here")
        assert await other.receive_some() == b"still here"
        link.cut = True
        start = trio.current_time()
        with pytest.raises(trio.BrokenResourceError) as info:
            await other.receive_some()
        assert "no packet" in str(info.value.__cause__)
        assert trio.current_time() - start <= 50.0 + 1


async def test_reset_by_peer(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_pair() as (a, b, _):
        stream = await a.connect(B)
        other = await b.incoming().receive()
        # a forgets the connection abruptly (as a crashed process would).
        stream._connection.core.abort()
        stream._connection.flush()
        with pytest.raises(trio.BrokenResourceError) as info:
            await other.receive_some()
        assert "reset" in str(info.value.__cause__)


async def test_closing_the_socket_breaks_streams(autojump_clock: trio.testing.MockClock) -> None:
    link = Link()
    caught: list[BaseException] = []
    async with open_utp_over(link.sender(B), B) as b, trio.open_nursery() as nursery:
        link.sockets[B] = b
        async with open_utp_over(link.sender(A), A) as a:
            link.sockets[A] = a
            stream = await a.connect(B)
            other = await b.incoming().receive()

            async def blocked() -> None:
                try:
                    await other.receive_some()
                except trio.BrokenResourceError as error:
                    caught.append(error)

            nursery.start_soon(blocked)
            await trio.sleep(1)
        # a closed: its stream is broken; b heard a RESET and its blocked reader woke.
        await trio.sleep(1)
        assert caught
        assert "reset" in str(caught[0].__cause__)
        with pytest.raises(trio.BrokenResourceError):
            await stream.send_all(b"x")
        await stream.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some()
    with pytest.raises(trio.EndOfChannel):
        await b.incoming().receive()
    with pytest.raises(UtpConnectError, match="closed"):
        await b.connect(A)


async def test_stream_misuse(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_pair() as (a, b, _):
        stream = await a.connect(B)
        other = await b.incoming().receive()
        with pytest.raises(ValueError, match="max_bytes"):
            await stream.receive_some(0)

        async def blocked_reader() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await stream.receive_some()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked_reader)
            await trio.sleep(0.1)
            with pytest.raises(trio.BusyResourceError):
                await stream.receive_some()
            await stream.aclose()  # wakes the blocked reader with ClosedResourceError
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"x")
        await stream.aclose()  # idempotent
        assert await other.receive_some() == b""  # the FIN
        await other.send_eof()
        with pytest.raises(trio.ClosedResourceError):
            await other.send_all(b"after eof")
        await other.wait_send_all_might_not_block()
        assert "UtpStream" in repr(other)


async def test_backpressure_when_the_reader_stalls(autojump_clock: trio.testing.MockClock) -> None:
    config = UtpConfig(receive_buffer=64 * 1024, send_buffer=32 * 1024)
    async with memory_pair(config) as (a, b, _):
        stream = await a.connect(B)
        other = await b.incoming().receive()
        sent = 0
        with trio.move_on_after(30):
            while True:
                await stream.send_all(b"z" * 4096)
                sent += 4096
        # Nothing is read: only the peer's window plus our send buffer was taken.
        assert sent <= 64 * 1024 + 32 * 1024 + 2 * 1400 + 4096
        got = 0
        with trio.move_on_after(30):
            while True:
                got += len(await other.receive_some())
        # The cancelled send_all may have buffered part of its last write.
        assert sent <= got <= sent + 4096


async def test_logging(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="bip_handshake.utp"):
        async with memory_pair() as (a, b, _):
            stream = await a.connect(B)
            await stream.aclose()
            await (await b.incoming().receive()).aclose()
            await trio.sleep(5)
    messages = [r.getMessage() for r in caplog.records if r.name == "bip_handshake.utp"]
    assert any("connected to" in m for m in messages)
    assert any("accepted" in m for m in messages)
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "bip_handshake.utp")


async def test_socket_edges(autojump_clock: trio.testing.MockClock) -> None:
    config = UtpConfig(max_pending_accepts=2)
    async with memory_pair(config) as (a, b, link):
        assert a.config is config
        with pytest.raises(TypeError):
            await a.connect(("10.0.0.2", 6882))  # type: ignore[arg-type]
        with pytest.raises(UtpConnectError, match="cannot reach"):
            await a.connect(PeerAddress(IPv4Address("10.0.0.2"), 0))
        # A resent SYN is answered again, not accepted twice.
        syn = UtpPacket(UtpPacketType.SYN, 500, 0, 0, 1 << 20, 1, 0)
        source = PeerAddress(IPv4Address("10.9.9.9"), 1)
        b.datagram_received(syn.encode(), source)
        b.datagram_received(syn.encode(), source)
        assert b.statistics().accepted == 1
        await trio.sleep(0.1)
        answers = [UtpPacket.decode(d) for s, t, d in link.sent if s == B and t == source]
        assert [p.type for p in answers] == [UtpPacketType.STATE, UtpPacketType.STATE]
        # A RESET naming the connection by either of its ids ends it (as libutp looks up).
        reset = UtpPacket(UtpPacketType.RESET, 500, 0, 0, 0, 0, 0)  # our send id, not recv id
        b.datagram_received(reset.encode(), source)
        stream = b.incoming().receive_nowait()
        with pytest.raises(trio.BrokenResourceError):
            await stream.receive_some()
        # A closed accept channel refuses SYNs.
        b.incoming().close()
        b.datagram_received(UtpPacket(UtpPacketType.SYN, 900, 0, 0, 1 << 20, 1, 0).encode(), source)
        assert b.statistics().refused == 1


class OwnerError(Exception):
    """What a shared socket's owner raises (the DHT's DHTSocketError, say)."""


@pytest.mark.parametrize("error", [OSError("ENOBUFS"), OwnerError("no IPv6 socket")])
async def test_send_errors_are_losses(
    error: Exception, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    failures = 0

    async def flaky(data: bytes, address: PeerAddress) -> None:
        nonlocal failures
        failures += 1
        raise error

    async with open_utp_over(flaky, A) as a:
        with pytest.raises(UtpConnectError):
            await a.connect(B)
        assert a.statistics().datagrams_dropped == failures >= 1
        assert a.statistics().datagrams_sent == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == (0 if isinstance(error, OSError) else 1)


async def test_stream_busy_and_wait(autojump_clock: trio.testing.MockClock) -> None:
    config = UtpConfig(receive_buffer=8 * 1024 * 1024, send_buffer=2000)
    async with memory_pair(config) as (a, b, link):
        stream = await a.connect(B)
        other = await b.incoming().receive()
        link.cut = True  # nothing is acked: the send buffer fills
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.send_all, b"x" * 100_000)
            await trio.sleep(0.1)
            with pytest.raises(trio.BusyResourceError):
                await stream.send_all(b"y")
            with pytest.raises(trio.BusyResourceError):
                await stream.wait_send_all_might_not_block()
            with pytest.raises(trio.BusyResourceError):
                await stream.send_eof()
            link.cut = False
        assert stream.statistics().bytes_sent >= 100_000 - 2000
        await stream.wait_send_all_might_not_block()
        got = 0
        while got < 100_000:
            got += len(await other.receive_some())


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("idle_timeout", 0, "positive"),
        ("max_connections", 1.5, "an int"),
        ("connect_timeout", "10", "a finite number"),
        ("keepalive_interval", True, "a finite number"),
        ("idle_timeout", float("inf"), "a finite number"),
        ("syn_retries", -1, "not be negative"),
        ("receive_buffer", 100, "at least one packet"),
        ("receive_buffer", 1 << 31, "below 2 GiB"),
    ],
)
def test_config_validation(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UtpConfig(**{field: value})  # type: ignore[arg-type]
    assert UtpConfig(syn_retries=0, resets_per_second=0).syn_retries == 0


# ------------------------------------------------------------------ bursts and fast paths


async def test_a_burst_of_data_is_acked_once(autojump_clock: trio.testing.MockClock) -> None:
    # A burst read from the socket in one wakeup is acknowledged by one ST_STATE (as
    # libtorrent defers its acks to the end of the burst); datagrams fed one by one (a
    # shared socket's owner) are acknowledged one by one.
    link = Link()
    async with memory_pair(link=link) as (a, b, _):
        client = await a.connect(B)
        server = await b.incoming().receive()
        server_core = b._connections[next(iter(b._connections))].core
        server_core._peer_wnd = 1 << 20
        a_core = a._connections[next(iter(a._connections))].core
        a_core._cwnd = 100.0 * 1300
        a_core._peer_wnd = 1 << 20
        held: list[bytes] = []

        def hold(data: bytes) -> bool:
            held.append(data)
            return True

        link.drop_if = hold  # every datagram of a's is held from here on
        for burst, feed_one_by_one in ((8, False), (4, True)):
            held.clear()
            await client.send_all(blob(burst * 1300, burst))
            await trio.sleep(0.01)
            data = [d for d in held if d[0] >> 4 == UtpPacketType.DATA]
            assert len(data) >= 4
            before = len(link.sent)
            if feed_one_by_one:
                for datagram in data:
                    b.datagram_received(datagram, A)
            else:
                b._datagrams_received([(d, A) for d in data])
            await trio.sleep(0.01)
            acks = [UtpPacket.decode(d) for s, _, d in link.sent[before:] if s == B]
            assert all(p.type is UtpPacketType.STATE for p in acks)
            assert len(acks) == (len(data) if feed_one_by_one else 1)
            assert acks[-1].ack_nr == UtpPacket.decode(data[-1]).seq_nr
            received = 0
            while received < sum(len(UtpPacket.decode(d).payload) for d in data):
                received += len(await server.receive_some())
        link.drop_if = None
        await client.aclose()
        await server.aclose()


async def test_send_now_falls_back_to_the_queue_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Our own socket sends at once; when its buffer is full (send_now says False) the
    # datagram and every later one go through the sender task, in order.
    wire: list[bytes] = []
    full = True

    def send_now(data: bytes, address: PeerAddress) -> bool:
        if full:
            return False
        wire.append(data)
        return True

    async def send(data: bytes, address: PeerAddress) -> None:
        await trio.sleep(0.001)
        wire.append(data)

    async with trio.open_nursery() as nursery:
        utp = UtpSocket(send, A, UtpConfig(), nursery, 4, send_now=send_now)
        nursery.start_soon(utp._run_sender)
        utp._enqueue(b"1", B)
        full = False
        utp._enqueue(b"2", B)  # behind "1" in the queue, not ahead of it on the wire
        await trio.sleep(0.1)
        utp._enqueue(b"3", B)  # the queue is empty again: sent at once
        assert wire == [b"1", b"2", b"3"]

        def refused(data: bytes, address: PeerAddress) -> bool:
            raise OSError("ENETUNREACH")

        utp._send_now = refused
        utp._enqueue(b"4", B)
        stats = utp.statistics()
        assert (stats.datagrams_sent, stats.datagrams_dropped) == (3, 1)
        nursery.cancel_scope.cancel()


async def test_loopback_reads_bursts_per_wakeup(monkeypatch: pytest.MonkeyPatch) -> None:
    import bip_handshake._utp_socket as module

    monkeypatch.setattr(module, "_READ_BATCH", 8)  # 60 datagrams: several batches
    with trio.fail_after(10):
        async with open_utp_socket() as a:
            raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with raw:
                raw.bind(("127.0.0.1", 0))
                target = (str(a.local_address.host), a.local_address.port)
                for _ in range(60):
                    raw.sendto(b"d1:ad2:id20:" + bytes(20) + b"e", target)
                while a.statistics().invalid_datagrams < 60:
                    await trio.sleep(0.01)
            assert a.statistics().datagrams_received == 60


async def test_loopback_full_send_buffer_and_no_address_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A send the kernel refuses for now (EAGAIN) waits in the queue for the sender task,
    # which waits until the socket is writable; nothing is lost or reordered. The address
    # caches work even when they hold nothing.
    import bip_handshake._utp_socket as module

    calls = 0

    class FullEveryThirdSend(socket.socket):
        def sendto(self, data: bytes, address: Any, /) -> int:  # type: ignore[override]
            nonlocal calls
            calls += 1
            if calls % 3 == 0:
                raise BlockingIOError(11, "Resource temporarily unavailable")
            return super().sendto(data, address)

    # Every socket made during the test (the uTP module's, trio's) is of the class.
    monkeypatch.setattr(socket, "socket", FullEveryThirdSend)
    monkeypatch.setattr(module, "_ADDRESS_CACHE", 0)
    with trio.fail_after(20):
        async with open_utp_socket() as a, open_utp_socket() as b:
            await exchange(a, b, blob(200_000, 5), blob(50_000, 6))
            assert a.statistics().datagrams_dropped == 0
            assert b.statistics().datagrams_dropped == 0
    assert calls > 100
