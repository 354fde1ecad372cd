"""Dead nodes learnt from ICMP errors (Linux's IP_RECVERR error queue), as libtorrent does.

On loopback a datagram to a closed port comes back at once as an ICMP port unreachable: the
query to it must fail then, not at its timeout (10 s here, against bounds of 2 s). The parser
of the error queue's entries is fed garbage (hypothesis); the node's entry point and the
readers' error paths are also tested without sockets.
"""

from __future__ import annotations

import errno
import random
import socket
import struct
import sys
from collections.abc import Iterator, Sequence
from contextlib import suppress
from ipaddress import ip_address
from typing import Any

import pytest
import trio
from _loopback import loopback_swarm
from hypothesis import given
from hypothesis import strategies as st

from bip_dht import _shell
from bip_dht._errors import LocalProtocolError
from bip_dht._krpc import Ping
from bip_dht._node import DHTNode
from bip_dht._node_config import DHTConfig
from bip_dht._node_events import PingFinished
from bip_dht._shell import DHT, DHTSocketError, open_dht
from bip_dht._shell_datagrams import DatagramSender
from bip_dht._transactions import TransactionTable
from bip_dht._udp_errors import (
    IP_RECVERR,
    IPV6_RECVERR,
    MAX_REPORTS_PER_WAKE,
    MSG_ERRQUEUE,
    PAYLOAD_HEAD,
    ErrorQueue,
    ErrorReportError,
    UDPErrorReport,
    enable_error_queue,
    parse_error_report,
)
from bip_handshake import NodeInfo, PeerAddress

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="ICMP errors reach UDP sockets only on Linux"
)

# Queries never time out within a test's bounds: only an ICMP error can end them early.
SLOW = DHTConfig(query_timeout=10.0, slow_after=10.0)
EXTENDED = struct.Struct("=IBBBBII")


def _closed_port(host: str) -> PeerAddress:
    """An address on *host* nobody listens on (bound for a moment, then closed)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    return PeerAddress(ip_address(host), port)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


# -- real sockets on loopback ----------------------------------------------------------------


@linux_only
@pytest.mark.parametrize("host", ["127.0.0.2", "::1"])
async def test_query_to_a_closed_port_fails_at_once(host: str) -> None:
    if ":" in host and not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    dead = _closed_port(host)
    async with open_dht(f"[{host}]:0" if ":" in host else f"{host}:0", config=SLOW) as dht:
        with trio.fail_after(2):
            assert await dht.ping(dead) is None
            # a second one, after the first report was read: the reader is still awake
            assert await dht.ping(dead) is None
        stats = dht.statistics()
        assert stats.unreachable == 2
        assert stats.timeouts == 0
        assert stats.icmp_errors >= 2
        assert stats.icmp_malformed == 0
        assert stats.send_errors == 0
        assert stats.outstanding == 0


@linux_only
async def test_lookup_with_dead_nodes_finishes_sooner() -> None:
    async with loopback_swarm(4, SLOW) as nodes:
        a = nodes[0]
        dead = [_closed_port(f"127.0.0.{40 + i}") for i in range(6)]
        rng = random.Random(7)
        target = rng.randbytes(20)
        # dead nodes with ids next to the target: the lookup must query them
        ghosts = [NodeInfo(target[:-1] + bytes([i]), address) for i, address in enumerate(dead)]
        now = trio.current_time()
        assert a.node.warm_table(ghosts, now) >= 3
        with trio.fail_after(2):
            found = await a.find_node(target)
        answered = {node.address for node in found}
        assert not answered & set(dead)
        assert {dht.addresses[0] for dht in nodes[1:]} <= answered
        stats = a.statistics()
        assert stats.unreachable >= 3
        assert stats.timeouts == 0
        # and a bootstrap naming dead addresses too
        with trio.fail_after(2):
            await a.bootstrap([nodes[1].addresses[0], *_fresh_dead(3)])
        assert a.statistics().timeouts == 0


def _fresh_dead(count: int) -> Iterator[PeerAddress]:
    for i in range(count):
        yield _closed_port(f"127.0.0.{60 + i}")


class Collector:
    """An other_datagrams callback that records what it is given."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, PeerAddress]] = []

    def __call__(self, data: bytes, source: PeerAddress) -> None:
        self.got.append((data, source))


@linux_only
async def test_shared_socket_with_dead_utp_peers() -> None:
    """uTP sends to a dead peer through the DHT's socket: its ICMP errors fail no query (not
    even one in flight to a node that stays silent), cost no sends (each pending error is
    taken by a send that is then tried again), and datagrams keep flowing both ways."""
    collector = Collector()
    dead = _closed_port("127.0.0.9")
    with trio.fail_after(5):
        async with (
            open_dht("127.0.0.2:0", config=SLOW, other_datagrams=collector) as dht,
            open_dht("127.0.0.3:0", config=SLOW) as other,
        ):
            silent = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with silent:
                await silent.bind(("127.0.0.10", 0))
                host, port = silent.getsockname()
                dht.add_node(PeerAddress(ip_address(host), port))  # a ping that waits
                peer = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                with peer:
                    await peer.bind(("127.0.0.11", 0))
                    where = PeerAddress(ip_address("127.0.0.11"), peer.getsockname()[1])
                    raw = dht._error_queues[4].socket
                    for i in range(20):
                        if i % 2:
                            await dht.send_datagram(bytes([0x41, i]), dead)
                            await trio.sleep(0.005)  # the reader takes the ICMP error
                        else:
                            # sent with no checkpoint before the next send: loopback answers
                            # within sendto, so the next send meets the pending error
                            raw.sendto(bytes([0x41, i]), (str(dead.host), dead.port))
                        await dht.send_datagram(bytes([0x01, i]), where)
                    got: set[bytes] = set()
                    while len(got) < 20:
                        data, _ = await peer.recvfrom(64)
                        got.add(data)
                    # the remote uTP peer answers through the shared port
                    await peer.sendto(
                        b"\x21\x00utp", (str(dht.addresses[0].host), dht.addresses[0].port)
                    )
                    while not collector.got:
                        await trio.sleep(0.01)
                assert await dht.ping(other.addresses[0]) is not None
                stats = dht.statistics()
                assert stats.send_errors == 0
                assert stats.icmp_errors >= 1
                assert stats.unreachable == 0
                assert stats.outstanding == 1  # the ping to the silent node still waits
                assert collector.got[0][0] == b"\x21\x00utp"


async def test_plain_reader_when_the_queue_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where there is no error queue (macOS, Windows; here turned off) the node reads as
    before: a dead node costs its timeout, and nothing is read from a queue."""
    monkeypatch.setattr(_shell, "USE_ERROR_QUEUES", False)
    config = DHTConfig(query_timeout=0.5, slow_after=0.5)
    dead = _closed_port("127.0.0.2")
    with trio.fail_after(5):
        async with loopback_swarm(2, config) as nodes:
            assert await nodes[0].ping(dead) is None
            stats = nodes[0].statistics()
            assert stats.timeouts == 1
            assert stats.unreachable == stats.icmp_errors == 0


# -- the readers' error paths, with stand-in sockets ------------------------------------------


def _bare_dht() -> DHT:
    node = DHTNode(rng=random.Random(1), now=0.0)
    return DHT(node, {}, peer_sink=None, rng=random.Random(1))


_KRPC_PING = Ping(transaction_id=b"aa", node_id=bytes(20)).encode()


class FakeReceiver:
    """recvfrom that gives (or raises) what it is told, in order."""

    def __init__(self, *steps: object) -> None:
        self.steps = list(steps)

    def _next(self) -> tuple[bytes, tuple[str, int]]:
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        assert isinstance(step, tuple)
        return step

    async def recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]]:
        await trio.lowlevel.checkpoint()
        return self._next()

    def recvfrom_now(self, size: int, flags: int = 0) -> tuple[bytes, tuple[str, int]]:
        return self._next()


async def test_icmp_errors_on_receive_never_stop_the_plain_reader() -> None:
    dht = _bare_dht()
    fake = FakeReceiver(
        OSError(errno.ECONNREFUSED, "refused"),
        OSError(errno.ECONNRESET, "reset"),  # Windows' word for port unreachable
        OSError(errno.EHOSTUNREACH, "unreachable"),
        (_KRPC_PING, ("127.0.0.5", 6881)),
        OSError(errno.EBADF, "gone"),
    )
    with pytest.raises(DHTSocketError) as caught:
        await dht._read_plain(fake)  # type: ignore[arg-type]
    assert caught.value.__cause__ is not None
    assert dht.node.statistics().datagrams_received == 1


class FakeRaw:
    """The non-blocking duplicate: recvfrom from a script, recvmsg from an error script."""

    family = socket.AF_INET

    def __init__(self, receives: FakeReceiver, errors: Sequence[object] = ()) -> None:
        self.receives = receives
        self.errors = list(errors)
        self.options: list[tuple[int, int, int]] = []

    def recvfrom(self, size: int, flags: int = 0) -> tuple[bytes, tuple[str, int]]:
        return self.receives.recvfrom_now(size, flags)

    def recvmsg(self, size: int, ancsize: int, flags: int) -> Any:
        assert flags & MSG_ERRQUEUE
        if not self.errors:
            raise BlockingIOError(errno.EAGAIN, "empty")
        step = self.errors.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.options.append((level, option, value))


async def test_linux_reader_survives_pending_errors_and_reads_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dht = _bare_dht()
    flood = [(_KRPC_PING, (f"127.0.1.{i}", 6881)) for i in range(_shell._READ_BATCH + 6)]
    receives = FakeReceiver(
        OSError(errno.ECONNREFUSED, "pending"),  # the error a queued report left pending
        (_KRPC_PING, ("127.0.0.5", 6881)),
        BlockingIOError(errno.EAGAIN, "empty"),
        *flood,  # more than a batch: read over two wake-ups
        BlockingIOError(errno.EAGAIN, "empty"),
        OSError(errno.EBADF, "gone"),
    )
    raw = FakeRaw(receives, [_entry(("127.0.0.7", 1)), (b"", [], 0, "junk")])
    queue = ErrorQueue(raw)  # type: ignore[arg-type]
    wakes = 0

    async def counting_wait(sock: object) -> None:
        nonlocal wakes
        wakes += 1
        if wakes == 3:
            queue.enabled = False  # a queue turned off is not read any more
            raw.errors.append(OSError(errno.EINVAL, "must not be read"))
        await trio.lowlevel.checkpoint()

    # the stand-in socket is always readable: the reader's waits only count
    monkeypatch.setattr(trio.lowlevel, "wait_readable", counting_wait)
    with trio.fail_after(2), pytest.raises(DHTSocketError):
        await dht._read_with_errors(None, queue)  # type: ignore[arg-type]
    assert wakes == 4  # the flood took two
    assert dht.node.statistics().datagrams_received == 1 + len(flood)
    assert queue.read == 2
    assert queue.malformed == 1


async def test_send_tried_again_after_a_pending_error() -> None:
    dht = _bare_dht()
    where = PeerAddress.parse("127.0.0.9:1")

    class Flaky:
        def __init__(self, failures: int) -> None:
            self.failures = failures
            self.sent: list[bytes] = []

        async def sendto(self, data: bytes, address: tuple[str, int]) -> int:
            await trio.lowlevel.checkpoint()
            if self.failures:
                self.failures -= 1
                raise OSError(errno.ECONNREFUSED, "pending")
            self.sent.append(bytes(data))
            return len(data)

    once = Flaky(1)
    dht._senders[4] = DatagramSender(once)  # type: ignore[arg-type]
    # without an error queue a refused send is a lost datagram, as before
    await dht.send_datagram(b"\x41", where)
    assert once.sent == []
    assert dht.statistics().send_errors == 1
    dht._error_queues[4] = ErrorQueue(FakeRaw(FakeReceiver()))  # type: ignore[arg-type]
    once.failures = 1
    await dht.send_datagram(b"\x41", where)
    assert once.sent == [b"\x41"]
    assert dht.statistics().send_errors == 1
    # twice refused: this send's own error, lost and counted once
    once.failures = 2
    await dht.send_datagram(b"\x42", where)
    assert once.sent == [b"\x41"]
    assert dht.statistics().send_errors == 2
    # an error that no pending ICMP report explains is not tried again
    dht._error_queues[4].enabled = False
    once.failures = 1
    await dht.send_datagram(b"\x43", where)
    assert dht.statistics().send_errors == 3


# -- the error queue and its parser ------------------------------------------------------------


def _entry(
    destination: object,
    *,
    code: int = errno.ECONNREFUSED,
    origin: int = 2,
    payload: bytes = b"d",
    level: int = socket.IPPROTO_IP,
    kind: int = IP_RECVERR,
) -> tuple[bytes, list[tuple[int, int, bytes]], int, object]:
    """One error queue entry as recvmsg returns it."""
    data = EXTENDED.pack(code, origin, 3, 3, 0, 0, 0) + bytes(16)  # offender: AF_INET, zeros
    return payload, [(level, kind, data)], MSG_ERRQUEUE, destination


def test_parse_a_port_unreachable() -> None:
    payload, ancdata, _, address = _entry(("127.0.0.7", 6881))
    report = parse_error_report(payload, ancdata, address)
    assert report == UDPErrorReport(
        PeerAddress.parse("127.0.0.7:6881"), errno.ECONNREFUSED, 2, 3, 3, b"d"
    )
    assert report.unreachable
    six = parse_error_report(
        b"",
        [(socket.IPPROTO_IPV6, IPV6_RECVERR, EXTENDED.pack(errno.EHOSTUNREACH, 3, 1, 3, 0, 0, 0))],
        ("::ffff:10.0.0.1", 1, 0, 0),
    )
    assert six.destination == PeerAddress.parse("10.0.0.1:1")  # mapped is IPv4
    assert six.unreachable
    assert six.payload == b""
    # a long quoted datagram keeps only its head; other options' messages are skipped
    long = parse_error_report(b"d" * 600, [(1, 29, b"stamp"), *ancdata], address)
    assert long.payload == b"d" * PAYLOAD_HEAD


@pytest.mark.parametrize(
    ("code", "origin", "unreachable"),
    [
        (errno.ECONNREFUSED, 2, True),
        (errno.ENETUNREACH, 3, True),
        (errno.EHOSTUNREACH, 2, True),
        (errno.EMSGSIZE, 2, False),  # a path MTU report: the node is there
        (errno.ECONNREFUSED, 1, False),  # the local stack, not a router
        (errno.EPROTO, 3, False),
    ],
)
def test_which_reports_say_unreachable(code: int, origin: int, unreachable: bool) -> None:
    payload, ancdata, _, address = _entry(("127.0.0.7", 1), code=code, origin=origin)
    assert parse_error_report(payload, ancdata, address).unreachable is unreachable


@pytest.mark.parametrize(
    ("payload", "ancdata", "address"),
    [
        (b"d", [], ("127.0.0.1", 1)),  # no extended error
        (b"d", [(0, IP_RECVERR, bytes(15))], ("127.0.0.1", 1)),  # truncated
        (b"d", [(0, IP_RECVERR, bytes(16)), (41, IPV6_RECVERR, bytes(16))], ("127.0.0.1", 1)),
        (b"d", [(0, IP_RECVERR, bytes(16))], None),  # no destination
        (b"d", [(0, IP_RECVERR, bytes(16))], ("fe80::1%eth0", 1, 0, 2)),  # scoped
        (b"d", [(0, IP_RECVERR, bytes(16))], ("127.0.0.1", 70000)),
        (b"d", [(0, IP_RECVERR, bytes(16))], ("127.0.0.1", True)),
        (b"d", [(0, IP_RECVERR, bytes(16))], ("nonsense", 1)),
        (b"d", [(0, IP_RECVERR)], ("127.0.0.1", 1)),
        (b"d", [(0, "x", bytes(16))], ("127.0.0.1", 1)),
        (b"d", b"not a list", ("127.0.0.1", 1)),
        ("d", [(0, IP_RECVERR, bytes(16))], ("127.0.0.1", 1)),
    ],
)
def test_malformed_reports_raise_ours(payload: object, ancdata: object, address: object) -> None:
    with pytest.raises(ErrorReportError):
        parse_error_report(payload, ancdata, address)


_ADDRESSES = st.one_of(
    st.none(),
    st.tuples(st.sampled_from(["127.0.0.1", "::1", "x", ""]), st.integers(-5, 70000)),
    st.tuples(st.text(max_size=8), st.integers(), st.integers(), st.integers()),
    st.binary(max_size=8),
)
_CMSGS = st.lists(
    st.tuples(
        st.sampled_from([0, 41, 1, -1]),
        st.sampled_from([IP_RECVERR, IPV6_RECVERR, 0, 99]),
        st.binary(max_size=48),
    ),
    max_size=3,
)


@given(payload=st.binary(max_size=8), ancdata=_CMSGS, address=_ADDRESSES)
def test_garbage_reports_give_a_report_or_our_error(
    payload: bytes, ancdata: list[tuple[int, int, bytes]], address: object
) -> None:
    try:
        report = parse_error_report(payload, ancdata, address)
    except ErrorReportError:
        return
    assert isinstance(report.destination, PeerAddress)
    # The quoted head of our datagram, bounded (enough for a KRPC transaction id).
    assert report.payload == payload[:PAYLOAD_HEAD]


@given(anything=st.recursive(st.none() | st.integers() | st.binary(max_size=20), st.lists))
def test_arbitrary_control_data_gives_our_error(anything: object) -> None:
    with suppress(ErrorReportError):
        parse_error_report(b"d", anything, ("127.0.0.1", 1))


def test_queue_drains_in_bounded_batches_and_counts_malformed() -> None:
    good = _entry(("127.0.0.7", 1))
    raw = FakeRaw(FakeReceiver(), [good] * (MAX_REPORTS_PER_WAKE + 5) + [(b"", [], 0, None)])
    queue = ErrorQueue(raw)  # type: ignore[arg-type]
    assert len(queue.drain()) == MAX_REPORTS_PER_WAKE
    assert len(queue.drain()) == 5  # then the malformed one, then empty
    assert queue.read == MAX_REPORTS_PER_WAKE + 6
    assert queue.malformed == 1
    assert queue.drain() == []
    assert queue.enabled


def test_queue_that_fails_is_turned_off() -> None:
    raw = FakeRaw(FakeReceiver(), [OSError(errno.EINVAL, "strange"), _entry(("127.0.0.7", 1))])
    queue = ErrorQueue(raw)  # type: ignore[arg-type]
    assert queue.drain() == []
    assert not queue.enabled
    assert raw.options == [(socket.IPPROTO_IP, IP_RECVERR, 0)]  # which empties it
    assert queue.drain() == []  # never read again


@linux_only
def test_enable_error_queue_on_both_families() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert enable_error_queue(sock)
        assert sock.getsockopt(socket.IPPROTO_IP, IP_RECVERR) == 1
    if _has_ipv6_loopback():
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            assert enable_error_queue(sock)
            assert sock.getsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR) == 1
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        assert not enable_error_queue(sock)  # refused: read as without it


@linux_only
async def test_error_queue_opens_on_a_duplicate() -> None:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.2", 0))
        queue = ErrorQueue.open(sock)
        assert queue is not None
        assert queue.socket.fileno() != sock.fileno()
        assert sock.getsockopt(socket.IPPROTO_IP, IP_RECVERR) == 1  # the same socket
        assert queue.drain() == []
        queue.close()
        assert not queue.enabled
        assert sock.getsockname()[0] == "127.0.0.2"  # still open
    unix = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with unix:
        assert ErrorQueue.open(unix) is None


# -- the sans-IO entry point -------------------------------------------------------------------


def test_node_unreachable_fails_the_oldest_query_to_the_address() -> None:
    node = DHTNode(rng=random.Random(3), now=0.0, config=SLOW)
    dead = PeerAddress.parse("10.0.0.1:6881")
    other = PeerAddress.parse("10.0.0.2:6881")
    first = node.ping(dead, 0.0)
    second = node.ping(dead, 1.0)
    node.ping(other, 1.0)
    assert len(node.datagrams_to_send(1.0)) == 3
    assert node.unreachable(other.normalized(), 2.0)
    assert node.unreachable(dead, 2.0)
    events = [node.next_event(), node.next_event(), node.next_event()]
    assert events[2] is None
    ended = {e.operation for e in events if isinstance(e, PingFinished) and e.node is None}
    assert first in ended
    assert second not in ended
    assert node.unreachable(dead, 2.0)
    assert not node.unreachable(dead, 2.0)  # nothing in flight any more: one per datagram
    assert not node.unreachable(PeerAddress.parse("10.0.0.3:1"), 2.0)
    stats = node.statistics()
    assert stats.unreachable == 3
    assert stats.timeouts == 0
    assert stats.outstanding == 0
    with pytest.raises(LocalProtocolError):
        node.unreachable("10.0.0.1:6881", 2.0)  # type: ignore[arg-type]


def test_node_unreachable_counts_as_the_nodes_failure() -> None:
    node = DHTNode(rng=random.Random(4), now=0.0, config=SLOW)
    dead = NodeInfo(bytes(range(20)), PeerAddress.parse("10.0.0.1:6881"))
    assert node.warm_table([dead], 0.0) == 1
    node.find_node(bytes(20), 0.0)
    node.datagrams_to_send(0.0)
    before = {e.node.address: e.failures for e in node.table(4).entries(0.0)}
    assert node.unreachable(dead.address, 0.5)
    after = {e.node.address: e.failures for e in node.table(4).entries(0.5)}
    assert after.get(dead.address, 1) > before[dead.address]


def test_transaction_table_closes_the_oldest_to_an_address() -> None:
    table = TransactionTable(random.Random(1), capacity=8, timeout=8.0)
    a = PeerAddress.parse("10.0.0.1:1")
    b = PeerAddress.parse("10.0.0.2:1")

    def build(tid: bytes) -> Ping:
        return Ping(transaction_id=tid, node_id=bytes(20))

    first = table.open(build, a, None, 0, 0.0)
    table.open(build, b, None, 0, 0.5)
    third = table.open(build, a, None, 0, 1.0)
    assert table.close_oldest_to(a) is first
    assert table.close_oldest_to(a) is third
    assert table.close_oldest_to(a) is None
    assert len(table) == 1
    assert table.outstanding_to(b)
