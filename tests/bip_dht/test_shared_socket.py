"""The DHT's UDP socket shared with another protocol (uTP), as libtorrent shares one port.

Loopback trio tests with real UDP, each bounded in time: datagrams that cannot be KRPC go to
``open_dht(other_datagrams=...)``, :meth:`DHT.send_datagram` sends from the node's port, and
the node itself goes on as before. The send serialisation and the callback's failure handling
are also tested on their own with fake sockets.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import ip_address

import pytest
import trio
import trio.testing

from bip_dht._errors import DHTError, LocalProtocolError
from bip_dht._node_config import DHTConfig
from bip_dht._shell import DHT, DHTSocketError, open_dht
from bip_dht._shell_datagrams import (
    WARN_EVERY,
    DatagramSender,
    ForeignDatagrams,
    is_krpc_candidate,
)
from bip_handshake import PeerAddress

FAST = DHTConfig(query_timeout=2.0, slow_after=0.5)
# A uTP ST_SYN header (type 4, version 1) and an ST_DATA one: what will share the port.
UTP_SYN = bytes([0x41, 0x00]) + bytes(18)
UTP_DATA = bytes([0x01, 0x00]) + bytes(18) + b"payload"
NODE_LOG = "bip_dht.node"


class Collector:
    """An other_datagrams callback that records what it is given and wakes a waiter."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, PeerAddress]] = []
        self._event = trio.Event()

    def __call__(self, data: bytes, source: PeerAddress) -> None:
        self.got.append((data, source))
        self._event.set()

    async def wait_for(self, count: int) -> None:
        while len(self.got) < count:
            self._event = trio.Event()
            await self._event.wait()


@asynccontextmanager
async def udp_socket(host: str = "127.0.0.9") -> AsyncIterator[trio.socket.SocketType]:
    """A plain UDP socket: the remote uTP peer."""
    family = trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET
    sock = trio.socket.socket(family, trio.socket.SOCK_DGRAM)
    with sock:
        await sock.bind((host, 0))
        yield sock


def _address(sock: trio.socket.SocketType) -> PeerAddress:
    host, port = sock.getsockname()[:2]
    return PeerAddress(ip_address(host), port)


def _target(dht: DHT, family: int = 4) -> tuple[str, int]:
    address = next(a for a in dht.addresses if a.family == family)
    return str(address.host), address.port


async def _wait_stat(dht: DHT, name: str, value: int) -> None:
    while getattr(dht.statistics(), name) < value:
        await trio.sleep(0.01)


# -- the demultiplexer on loopback -----------------------------------------------------------


async def test_a_foreign_datagram_reaches_the_callback_with_its_sender() -> None:
    collector = Collector()
    with trio.fail_after(5):
        async with (
            open_dht("127.0.0.2:0", config=FAST, other_datagrams=collector) as dht,
            udp_socket() as peer,
        ):
            await peer.sendto(UTP_SYN, _target(dht))
            await peer.sendto(UTP_DATA, _target(dht))
            await peer.sendto(b"", _target(dht))  # not KRPC either
            await collector.wait_for(3)
            sender = _address(peer)
            assert collector.got == [(UTP_SYN, sender), (UTP_DATA, sender), (b"", sender)]
            stats = dht.statistics()
            # the node never saw them: not malformed, not received, not rate-limited
            assert stats.malformed == 0
            assert stats.datagrams_received == 0
            assert stats.rate_limited == 0
            assert (stats.other_datagrams, stats.other_datagram_errors) == (3, 0)


async def test_krpc_still_works_on_the_shared_socket() -> None:
    collector = Collector()
    with trio.fail_after(10):
        async with (
            open_dht("127.0.0.2:0", config=FAST, other_datagrams=collector) as shared,
            open_dht("127.0.0.3:0", config=FAST) as plain,
            udp_socket() as peer,
        ):
            # both directions: the shared node asks, and answers
            node = await shared.ping(plain.addresses[0])
            assert node is not None
            assert node.node_id == plain.node_id.value
            node = await plain.ping(shared.addresses[0])
            assert node is not None
            assert node.node_id == shared.node_id.value
            # a datagram starting with "d" is the node's, even when it is not KRPC
            await peer.sendto(b"d3:bad", _target(shared))
            await _wait_stat(shared, "malformed", 1)
            # uTP in between KRPC: each goes its way
            await peer.sendto(UTP_SYN, _target(shared))
            assert await plain.ping(shared.addresses[0]) is not None
            await collector.wait_for(1)
            assert [data for data, _ in collector.got] == [UTP_SYN]
            assert shared.statistics().queries_received[b"ping"] == 2


async def test_send_datagram_leaves_from_the_dht_port() -> None:
    with trio.fail_after(5):
        async with open_dht("127.0.0.2:0", config=FAST) as dht, udp_socket() as peer:
            where = _address(peer)
            await dht.send_datagram(UTP_SYN, where)
            await dht.send_datagram(bytearray(UTP_DATA), where)
            await dht.send_datagram(memoryview(b"xx" + UTP_DATA)[2:], where)
            for expected in (UTP_SYN, UTP_DATA, UTP_DATA):
                data, source = await peer.recvfrom(2048)
                assert data == expected
                assert (source[0], source[1]) == _target(dht)
            assert dht.statistics().send_errors == 0
            # an IPv4-mapped destination goes out over IPv4
            mapped = PeerAddress.parse(f"[::ffff:127.0.0.9]:{where.port}")
            await dht.send_datagram(b"\x21mapped", mapped)
            data, source = await peer.recvfrom(2048)
            assert data == b"\x21mapped"


async def test_a_round_trip_through_the_shared_socket() -> None:
    """What uTP does: answer the sender of a foreign datagram through send_datagram."""
    answers: list[tuple[bytes, PeerAddress]] = []
    send, receive = trio.open_memory_channel[tuple[bytes, PeerAddress]](16)

    def queue(data: bytes, source: PeerAddress) -> None:
        send.send_nowait((data, source))  # never blocks the reader

    with trio.fail_after(5):
        async with (
            open_dht("127.0.0.2:0", config=FAST, other_datagrams=queue) as dht,
            udp_socket() as peer,
        ):
            await peer.sendto(UTP_SYN, _target(dht))
            data, source = await receive.receive()
            answers.append((data, source))
            await dht.send_datagram(b"\x21state", source)
            reply, origin = await peer.recvfrom(2048)
            assert reply == b"\x21state"
            assert (origin[0], origin[1]) == _target(dht)
            assert answers == [(UTP_SYN, _address(peer))]


async def test_without_a_callback_non_krpc_is_malformed_as_before() -> None:
    with trio.fail_after(5):
        async with (
            open_dht("127.0.0.2:0", config=FAST) as dht,
            open_dht("127.0.0.3:0", config=FAST) as other,
            udp_socket() as peer,
        ):
            assert dht._foreign is None
            await peer.sendto(UTP_SYN, _target(dht))
            await peer.sendto(b"\xff garbage", _target(dht))
            await _wait_stat(dht, "malformed", 2)
            stats = dht.statistics()
            assert stats.datagrams_received == 2
            assert stats.bytes_received == len(UTP_SYN) + len(b"\xff garbage")
            assert await other.ping(dht.addresses[0]) is not None
            # send_datagram works without a callback too (answers would be malformed)
            await dht.send_datagram(b"\x01hello", _address(peer))
            data, _ = await peer.recvfrom(2048)
            assert data == b"\x01hello"


async def test_a_raising_callback_does_not_stop_the_node(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_dht")
    calls: list[bytes] = []

    def broken(data: bytes, source: PeerAddress) -> None:
        calls.append(data)
        raise ValueError("a bug upstream")

    with trio.fail_after(10):
        async with (
            open_dht("127.0.0.2:0", config=FAST, other_datagrams=broken) as dht,
            open_dht("127.0.0.3:0", config=FAST) as other,
            udp_socket() as peer,
        ):
            for _ in range(5):
                await peer.sendto(UTP_DATA, _target(dht))
            assert await other.ping(dht.addresses[0]) is not None
            while len(calls) < 5:
                await trio.sleep(0.01)
            assert dht.statistics().other_datagram_errors == 5
            # still reading: KRPC and foreign datagrams both
            assert await other.ping(dht.addresses[0]) is not None
            await peer.sendto(UTP_SYN, _target(dht))
            while len(calls) < 6:
                await trio.sleep(0.01)
            assert dht.statistics().malformed == 0
    warnings = [r for r in caplog.records if r.name == NODE_LOG and r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the first failure; the next ones at DEBUG
    assert "other_datagrams callback raised" in warnings[0].getMessage()
    assert warnings[0].exc_info is not None
    assert isinstance(warnings[0].exc_info[1], ValueError)


async def test_wrong_family_and_bad_arguments_raise_ours() -> None:
    with trio.fail_after(5):
        async with open_dht("127.0.0.2:0", config=FAST) as dht:
            with pytest.raises(DHTSocketError, match="no IPv6 socket"):
                await dht.send_datagram(b"\x41", PeerAddress.parse("[::1]:6881"))
            with pytest.raises(LocalProtocolError):
                await dht.send_datagram("text", PeerAddress.parse("127.0.0.9:1"))  # type: ignore[arg-type]
            with pytest.raises(LocalProtocolError):
                await dht.send_datagram(b"\x41", ("127.0.0.9", 1))  # type: ignore[arg-type]
            with pytest.raises(LocalProtocolError):
                await dht.send_datagram(b"\x41", PeerAddress.parse("127.0.0.9:0"))
            with pytest.raises(LocalProtocolError):
                await dht.send_datagram(b"\x41", PeerAddress.parse("0.0.0.0:6881"))
            with pytest.raises(LocalProtocolError, match="at most 65507"):
                await dht.send_datagram(bytes(65508), PeerAddress.parse("127.0.0.9:1"))
            bound = dht.addresses
        # closed: our error, and the addresses stay readable
        with pytest.raises(DHTError, match="closed"):
            await dht.send_datagram(b"\x41", PeerAddress.parse("127.0.0.9:1"))
        assert dht.addresses == bound
    with pytest.raises(LocalProtocolError, match="other_datagrams"):
        async with open_dht("127.0.0.2:0", other_datagrams=42):  # type: ignore[arg-type]
            pass


async def test_ipv6_shared_socket() -> None:
    collector = Collector()
    try:
        async with open_dht("[::1]:0", config=FAST):
            pass
    except DHTSocketError:
        pytest.skip("no IPv6 loopback here")
    with trio.fail_after(5):
        async with (
            open_dht(["127.0.0.2:0", "[::1]:0"], config=FAST, other_datagrams=collector) as dht,
            udp_socket("::1") as peer,
        ):
            assert [a.family for a in dht.addresses] == [4, 6]
            await peer.sendto(UTP_SYN, _target(dht, 6))
            await collector.wait_for(1)
            assert collector.got == [(UTP_SYN, _address(peer))]
            await dht.send_datagram(b"\x21v6", _address(peer))
            data, source = await peer.recvfrom(2048)
            assert data == b"\x21v6"
            assert (source[0], source[1]) == _target(dht, 6)


# -- sends: transient errors, serialisation ----------------------------------------------------


class FakeSocket:
    """A socket whose sends wait on a gate, or fail with a given errno, recording overlap."""

    def __init__(self, fail: int | type[Exception] | None = None) -> None:
        self.fail = fail
        self.gate = trio.Event()
        self.gate.set()
        self.sent: list[bytes] = []
        self.active = 0
        self.most_active = 0

    async def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            await self.gate.wait()
            await trio.lowlevel.checkpoint()
            if isinstance(self.fail, int):
                raise OSError(self.fail, "fake")
            if self.fail is not None:
                raise self.fail
            self.sent.append(bytes(data))
            return len(data)
        finally:
            self.active -= 1


async def test_send_errors_transient_are_counted_others_raise() -> None:
    where = PeerAddress.parse("127.0.0.9:1")
    with trio.fail_after(5):
        async with open_dht("127.0.0.2:0", config=FAST) as dht:
            for code in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENOBUFS, errno.EMSGSIZE):
                dht._senders[4] = DatagramSender(FakeSocket(fail=code))  # type: ignore[arg-type]
                await dht.send_datagram(b"\x41", where)  # lost, like a datagram on the way
            assert dht.statistics().send_errors == 4
            dht._senders[4] = DatagramSender(FakeSocket(fail=errno.EACCES))  # type: ignore[arg-type]
            with pytest.raises(DHTSocketError) as caught:
                await dht.send_datagram(b"\x41", where)
            assert isinstance(caught.value.__cause__, OSError)
            assert caught.value.__cause__.errno == errno.EACCES
            assert dht.statistics().send_errors == 4
            # the socket closed under a send waiting for room: ours, not trio's
            closing = FakeSocket(fail=trio.ClosedResourceError)
            dht._senders[4] = DatagramSender(closing)  # type: ignore[arg-type]
            with pytest.raises(DHTError, match="closed while sending"):
                await dht.send_datagram(b"\x41", where)


async def _cancel_when_blocked(scope: trio.CancelScope) -> None:
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()


async def test_sends_of_one_socket_take_turns() -> None:
    fake = FakeSocket()
    sender = DatagramSender(fake)  # type: ignore[arg-type]
    where = PeerAddress.parse("127.0.0.9:1")
    with trio.fail_after(5):
        fake.gate = trio.Event()  # the first send waits, as on a full send buffer
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(sender.send, bytes([i]), where)
                await trio.testing.wait_all_tasks_blocked()
            assert fake.active == 1
            fake.gate.set()
        assert fake.most_active == 1
        assert fake.sent == [bytes([i]) for i in range(20)]  # fair: in the order they came
        # a send cancelled while waiting its turn gives the turn back
        fake.gate = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.send, b"first", where)
            await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as waiting:
                nursery.start_soon(_cancel_when_blocked, waiting)
                await sender.send(b"cancelled", where)
            assert waiting.cancelled_caught
            fake.gate.set()
        await sender.send(b"after", where)
        assert fake.sent[-2:] == [b"first", b"after"]


async def test_concurrent_sends_with_the_node_running() -> None:
    """Many tasks send through the DHT's socket while the node pings: no task trips over
    another (trio allows one writer waiting per socket)."""
    with trio.fail_after(10):
        async with (
            open_dht("127.0.0.2:0", config=FAST) as dht,
            open_dht("127.0.0.3:0", config=FAST) as other,
            udp_socket() as peer,
        ):
            where = _address(peer)

            async def burst(tag: int) -> None:
                for i in range(20):
                    await dht.send_datagram(bytes([0x01, tag, i]), where)

            async with trio.open_nursery() as nursery:
                for tag in range(10):
                    nursery.start_soon(burst, tag)
                nursery.start_soon(dht.ping, other.addresses[0])
                nursery.start_soon(other.ping, dht.addresses[0])
            got: set[bytes] = set()
            with trio.move_on_after(1):
                while len(got) < 200:
                    data, _ = await peer.recvfrom(64)
                    got.add(data)
            # loopback may drop on a full receive buffer, never on the sending side
            assert dht.statistics().send_errors == 0
            assert len(got) >= 100


# -- the callback wrapper on its own ------------------------------------------------------------


def test_krpc_candidates_are_bencoded_dicts() -> None:
    assert is_krpc_candidate(b"d1:ad2:id20:" + bytes(20) + b"e1:q4:ping1:t2:aa1:y1:qe")
    for first in (0x01, 0x11, 0x21, 0x31, 0x41):  # uTP: (type << 4) | version 1
        assert not is_krpc_candidate(bytes([first]) + bytes(19))
    assert not is_krpc_candidate(b"")
    assert not is_krpc_candidate(b"l1:ae")


def test_a_failing_callback_warns_once_per_many(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_dht")
    source = PeerAddress.parse("127.0.0.9:1")
    seen: list[bytes] = []

    def flaky(data: bytes, address: PeerAddress) -> None:
        seen.append(data)
        if data == b"bad":
            raise KeyError(data)

    foreign = ForeignDatagrams(flaky)
    for _ in range(2 * WARN_EVERY + 1):
        foreign.deliver(b"bad", source)
    foreign.deliver(b"good", source)
    assert foreign.received == 2 * WARN_EVERY + 2
    assert foreign.failures == 2 * WARN_EVERY + 1
    assert seen[-1] == b"good"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3  # failures 1, 1001 and 2001
    assert [str(WARN_EVERY * i + 1) in r.getMessage() for i, r in enumerate(warnings)] == [
        True,
        True,
        True,
    ]


def test_interrupts_are_not_swallowed() -> None:
    def interrupted(data: bytes, address: PeerAddress) -> None:
        raise KeyboardInterrupt

    foreign = ForeignDatagrams(interrupted)
    with pytest.raises(KeyboardInterrupt):
        foreign.deliver(b"\x01", PeerAddress.parse("127.0.0.9:1"))
