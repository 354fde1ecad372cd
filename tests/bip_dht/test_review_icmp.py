"""Review of the DHT's ICMP handling: every error an ICMP message can leave pending.

With ``IP_RECVERR`` on, Linux leaves *every* ICMP error it accepts for the socket pending on
it, and an unconnected UDP socket accepts any ICMP message that quotes its port, from anyone:
a parameter problem (EPROTO), an ICMPv6 administratively prohibited (EACCES, what a firewall
that rejects sends), a protocol unreachable (ENOPROTOOPT)... The next ``recvfrom`` or
``sendto`` raises it. The reader must read on and a send must be tried again, whichever it
is; the real-kernel test forges the messages with a raw socket (root only).

Which query a report fails: the ICMP message quotes the head of our datagram (Linux up to 548
bytes), which holds the query's transaction id after its arguments. The report now fails
that very query, and none if no such query is in flight to that address (a forger off the
path cannot see our ids: before, any forged port unreachable failed our oldest query to a
node and counted against the node in the table); a quote too short for the id fails the
oldest, as libtorrent; a report about one of our replies fails nothing.
"""

from __future__ import annotations

import errno
import random
import socket
import struct
import sys

import pytest
import trio

from bip_dht import _shell
from bip_dht._errors import LocalProtocolError
from bip_dht._krpc import FindNode, GetPeers, Ping
from bip_dht._krpc_quote import QuotedKRPC, quoted_krpc
from bip_dht._node import DHTNode
from bip_dht._node_config import DHTConfig
from bip_dht._shell import DHT, DHTSocketError, open_dht
from bip_dht._shell_datagrams import DatagramSender
from bip_dht._shell_sockets import SEND_TRANSIENT_ERRORS
from bip_dht._udp_errors import (
    MAX_REPORTS_PER_WAKE,
    PENDING_ERRNOS,
    ErrorQueue,
)
from bip_handshake import PeerAddress

_PING = Ping(transaction_id=b"aa", node_id=bytes(20)).encode()
# what an ICMP message that is not port unreachable leaves pending (icmp_err_convert...)
_OTHER_ICMP_ERRNOS = sorted(
    PENDING_ERRNOS - {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH}
)


def _bare_dht() -> DHT:
    return DHT(DHTNode(rng=random.Random(1), now=0.0), {}, peer_sink=None, rng=random.Random(1))


class _Raw:
    """The reader's non-blocking duplicate: recvfrom from a script; an empty error queue."""

    family = socket.AF_INET

    def __init__(self, *steps: object) -> None:
        self.steps = list(steps)

    def recvfrom(self, size: int, flags: int = 0) -> tuple[bytes, tuple[str, int]]:
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        assert isinstance(step, tuple)
        return step

    def recvmsg(self, size: int, ancsize: int, flags: int) -> object:
        raise BlockingIOError(errno.EAGAIN, "empty")

    def setsockopt(self, level: int, option: int, value: int) -> None:
        pass


@pytest.mark.parametrize("code", _OTHER_ICMP_ERRNOS)
async def test_linux_reader_reads_on_after_any_icmp_error(
    code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    dht = _bare_dht()
    raw = _Raw(
        OSError(code, "pending"),
        (_PING, ("127.0.0.5", 6881)),
        BlockingIOError(errno.EAGAIN, "empty"),
        OSError(errno.EBADF, "gone"),  # a real failure still ends the reader
    )

    async def readable(sock: object) -> None:
        await trio.lowlevel.checkpoint()

    monkeypatch.setattr(trio.lowlevel, "wait_readable", readable)
    with trio.fail_after(2), pytest.raises(DHTSocketError):
        await dht._read_with_errors(None, ErrorQueue(raw))  # type: ignore[arg-type]
    assert dht.node.statistics().datagrams_received == 1


class _Flaky:
    def __init__(self, code: int) -> None:
        self.code = code
        self.failures = 1
        self.sent: list[bytes] = []

    async def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        await trio.lowlevel.checkpoint()
        if self.failures:
            self.failures -= 1
            raise OSError(self.code, "pending")
        self.sent.append(bytes(data))
        return len(data)


@pytest.mark.parametrize("code", _OTHER_ICMP_ERRNOS)
async def test_send_tried_again_after_any_pending_icmp_error(code: int) -> None:
    dht = _bare_dht()
    flaky = _Flaky(code)
    dht._senders[4] = DatagramSender(flaky)  # type: ignore[arg-type]
    dht._error_queues[4] = ErrorQueue(_Raw())  # type: ignore[arg-type]
    where = PeerAddress.parse("127.0.0.9:1")
    await dht.send_datagram(b"\x41", where)
    assert flaky.sent == [b"\x41"]  # sent once, not lost
    # twice: this send's own error, classed as any other (EMSGSIZE lost, EACCES refused...)
    flaky.failures = 2
    if code in SEND_TRANSIENT_ERRORS:
        await dht.send_datagram(b"\x42", where)
        assert dht.statistics().send_errors == 1
    else:
        with pytest.raises(DHTSocketError):
            await dht.send_datagram(b"\x42", where)
    assert flaky.sent == [b"\x41"]


async def test_send_without_error_queue_keeps_its_errors() -> None:
    dht = _bare_dht()
    flaky = _Flaky(errno.EACCES)  # without the option, EACCES is this send's own refusal
    dht._senders[4] = DatagramSender(flaky)  # type: ignore[arg-type]
    with pytest.raises(DHTSocketError):
        await dht.send_datagram(b"\x41", PeerAddress.parse("127.0.0.9:1"))
    assert flaky.sent == []


# -- forged ICMP messages on a real kernel -------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _ipv4_header(source: str, destination: str, length: int) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + length,
        1,
        0,
        64,
        socket.IPPROTO_UDP,
        0,
        socket.inet_aton(source),
        socket.inet_aton(destination),
    )
    return header[:10] + struct.pack("!H", _checksum(header)) + header[12:]


def _forged_icmp(
    icmp_type: int,
    code: int,
    port: int,
    *,
    quoted: bytes = _PING,
    to: tuple[str, int] = ("127.0.0.9", 9),
) -> bytes:
    """An ICMP error about a datagram (*quoted*) from 127.0.0.2:*port* to *to*."""
    udp = struct.pack("!HHHH", port, to[1], 8 + len(quoted), 0) + quoted
    message = (
        struct.pack("!BBHI", icmp_type, code, 0, 0)
        + _ipv4_header("127.0.0.2", to[0], len(udp))
        + udp
    )
    return message[:2] + struct.pack("!H", _checksum(message)) + message[4:]


def _raw_icmp_socket() -> socket.socket:
    try:
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except OSError:
        pytest.skip("forging ICMP needs a raw socket (root)")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_RECVERR is Linux's")
@pytest.mark.parametrize(
    ("icmp_type", "code"),
    [(12, 0), (3, 2), (3, 5), (3, 8)],  # parameter problem, protocol, source route, isolated
)
async def test_forged_icmp_errors_never_end_the_dht(icmp_type: int, code: int) -> None:
    assert _shell.USE_ERROR_QUEUES
    config = DHTConfig(query_timeout=2.0, slow_after=2.0)
    with _raw_icmp_socket() as raw:
        async with (
            open_dht("127.0.0.2:0", config=config, rng=random.Random(1)) as dht,
            open_dht("127.0.0.3:0", config=config, rng=random.Random(2)) as other,
        ):
            port = dht.addresses[0].port
            # more than a wake-up drains: what is left stays pending for the recvfrom
            for _ in range(MAX_REPORTS_PER_WAKE + 8):
                raw.sendto(_forged_icmp(icmp_type, code, port), ("127.0.0.2", 0))
            with trio.fail_after(5):
                for _ in range(3):
                    await trio.sleep(0.05)  # the reader wakes on the queued reports
                    assert await dht.ping(other.addresses[0]) is not None
            stats = dht.statistics()
            assert stats.icmp_errors >= MAX_REPORTS_PER_WAKE
            assert stats.unreachable == 0  # none of them is about a query in flight


# -- which query a report fails ------------------------------------------------------------------


def test_quoted_queries_give_their_transaction_id() -> None:
    node_id, target = bytes(range(20)), bytes(range(20, 40))
    for query in (
        Ping(transaction_id=b"\x01\x02", node_id=node_id),
        FindNode(transaction_id=b"e:", node_id=node_id, target=target),
        GetPeers(transaction_id=b"\xff\xfe", node_id=node_id, info_hash=target),
    ):
        data = query.encode()
        assert quoted_krpc(data) == QuotedKRPC(True, False, query.transaction_id)
        for size in range(len(data)):  # every quote length: the id, or none; never a wrong one
            quoted = quoted_krpc(data[:size])
            assert quoted.transaction_id in (None, query.transaction_id)
            assert not quoted.reply


def test_quoted_replies_and_garbage() -> None:
    assert quoted_krpc(b"d2:ip6:" + bytes(6) + b"1:rd2:id20:").reply
    assert quoted_krpc(b"d1:eli201e").reply
    for junk in (b"", b"x", b"d", b"d9", b"d1:", b"d1:a", b"d1:ai9", b"d1:a99999999:"):
        assert quoted_krpc(junk).transaction_id is None


def test_quoted_krpc_never_raises_on_any_bytes() -> None:
    rng = random.Random(7)
    alphabet = b"dile:0123456789atqy"
    for _ in range(3000):
        data = b"d" + bytes(rng.choice(alphabet) for _ in range(rng.randrange(40)))
        assert isinstance(quoted_krpc(data), QuotedKRPC)
    deep = b"d1:a" + b"l" * 5000  # nesting deeper than any query of ours
    assert quoted_krpc(deep).transaction_id is None


def _two_pings(node: DHTNode, address: PeerAddress) -> tuple[bytes, bytes]:
    node.ping(address, 0.0)
    node.ping(address, 0.0)
    sent = [data for data, _ in node.datagrams_to_send(0.0)]
    first, second = (quoted_krpc(data).transaction_id for data in sent)
    assert first is not None
    assert second is not None
    return first, second


def test_the_quoted_query_fails_not_the_oldest() -> None:
    node = DHTNode(rng=random.Random(3), now=0.0)
    dead = PeerAddress.parse("10.0.0.9:6881")
    first, second = _two_pings(node, dead)
    assert node.unreachable(dead, 0.1, second)
    assert node.statistics().outstanding == 1
    assert node.unreachable(dead, 0.2, first)
    assert node.statistics().unreachable == 2


def test_a_report_naming_no_query_in_flight_fails_nothing() -> None:
    node = DHTNode(rng=random.Random(3), now=0.0)
    dead = PeerAddress.parse("10.0.0.9:6881")
    first, _ = _two_pings(node, dead)
    forged = bytes(byte ^ 0xFF for byte in first)
    assert not node.unreachable(dead, 0.1, forged)  # an id not ours
    assert not node.unreachable(PeerAddress.parse("10.0.0.8:6881"), 0.1, first)  # elsewhere
    assert node.statistics().outstanding == 2
    assert node.statistics().unreachable == 0
    with pytest.raises(LocalProtocolError):
        node.unreachable(dead, 0.1, "ab")  # type: ignore[arg-type]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_RECVERR is Linux's")
async def test_a_forged_report_fails_only_the_query_it_names() -> None:
    config = DHTConfig(query_timeout=10.0, slow_after=10.0)
    with (
        _raw_icmp_socket() as raw,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole,  # reads, never answers
    ):
        hole.bind(("127.0.0.9", 0))
        hole.settimeout(2)
        where = hole.getsockname()
        async with (
            open_dht("127.0.0.2:0", config=config, rng=random.Random(1)) as dht,
            trio.open_nursery() as nursery,
        ):
            port = dht.addresses[0].port
            done: list[int] = []
            finished = trio.Event()

            async def ping(index: int) -> None:
                assert await dht.ping(PeerAddress.parse(f"{where[0]}:{where[1]}")) is None
                done.append(index)
                finished.set()

            nursery.start_soon(ping, 0)
            first = await trio.to_thread.run_sync(hole.recv, 2048)
            nursery.start_soon(ping, 1)
            second = await trio.to_thread.run_sync(hole.recv, 2048)
            # one with an id of no query of ours, then one quoting the second query
            wrong = Ping(transaction_id=b"\xee\xee", node_id=bytes(20)).encode()
            for quoted in (wrong, second):
                raw.sendto(_forged_icmp(3, 3, port, quoted=quoted, to=where), ("127.0.0.2", 0))
            with trio.fail_after(2):
                await finished.wait()
            # the reports are read in order: the wrong one was read before, and failed nothing
            assert done == [1]  # the second query, not the oldest
            stats = dht.statistics()
            assert stats.outstanding == 1  # the first still waits
            assert stats.unreachable == 1
            assert stats.icmp_errors == 2
            assert quoted_krpc(first).transaction_id != quoted_krpc(second).transaction_id
            nursery.cancel_scope.cancel()
