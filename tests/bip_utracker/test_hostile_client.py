"""A hostile-tracker campaign against the UDP tracker client (BEP 15), on loopback.

The client announces to trackers it does not control. Here each tracker is a raw trio UDP
socket on its own 127.0.0.X address answering as a script says: stray, spoofed, duplicated,
truncated and oversized answers, peer lists of every size and kind, error messages of any
length and bytes, absurd intervals and counts, and flows (silent after connect, rotating ids,
errors to everything, answers at the edge of each timeout, floods of unsolicited datagrams).
After each: the right outcome, exact counters, nothing left in the core's tables, and no
ERROR or traceback in the log. Timers run on the autojump clock; the flood runs in real time,
in chunks the client reads before the next, so that every count is exact.

The announcer's side (tiers, backoff) is in test_hostile_client_announcer.py.
"""

from __future__ import annotations

import logging
import random
import socket as stdlib_socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address

import pytest
import trio
import trio.testing

from bip_handshake import PeerAddress
from bip_utracker._client import TrackerClient, open_tracker_client
from bip_utracker._client_core import (
    MAX_ERROR_MESSAGE,
    AnnounceParams,
    AnnounceResult,
    TrackerClientCore,
)
from bip_utracker._codec import (
    AnnounceRequest,
    AnnounceResponse,
    ConnectRequest,
    ConnectResponse,
    ErrorResponse,
    Request,
    ScrapeRequest,
    ScrapeResponse,
    ScrapeStats,
    decode_request,
)
from bip_utracker._errors import MalformedPacketError, TrackerRejectedError, TrackerTimeoutError

HASH = b"\x5a" * 20
PEER_ID = b"-XX0001-" + bytes(12)
CLIENT_HOST = "127.0.0.1"
MAX_IPV4_PEERS = (65_507 - 20) // 6  # the most 6-byte peers an IPv4 UDP payload holds
_ANNOUNCE_HEAD = struct.Struct(">IIIII")  # action, transaction id, interval, leechers, seeders

Script = Callable[["Hostile", Request, tuple[str, int]], Awaitable[None]]


@dataclass
class Hostile:
    """A UDP tracker on one loopback address that answers as *script* says.

    Each request runs its script in a task of its own, so a script may sleep (a slow tracker)
    without holding up the next request.
    """

    sock: trio.socket.SocketType
    address: PeerAddress
    script: Script
    requests: list[tuple[float, Request]] = field(default_factory=list)
    sent: int = 0
    next_id: int = 1000

    def of_type(self, kind: type) -> list[Request]:
        return [request for _, request in self.requests if isinstance(request, kind)]

    async def send(self, data: bytes, to: tuple[str, int]) -> None:
        await self.sock.sendto(data, to)
        self.sent += 1

    async def serve(self, nursery: trio.Nursery) -> None:
        for _ in range(10_000):  # bounded: no test sends nearly as many
            data, source = await self.sock.recvfrom(65_536)
            request = decode_request(data)
            self.requests.append((trio.current_time(), request))
            nursery.start_soon(self.script, self, request, source[:2])


async def honest(tracker: Hostile, request: Request, to: tuple[str, int]) -> None:
    """What a well-behaved tracker answers."""
    await tracker.send(honest_answer(tracker, request), to)


def honest_answer(tracker: Hostile, request: Request) -> bytes:
    if isinstance(request, ConnectRequest):
        tracker.next_id += 1
        return ConnectResponse(request.transaction_id, tracker.next_id).encode()
    if isinstance(request, AnnounceRequest):
        return AnnounceResponse(request.transaction_id, 1800, 2, 3, ()).encode()
    assert isinstance(request, ScrapeRequest)
    files = (ScrapeStats(1, 2, 3),) * len(request.info_hashes)
    return ScrapeResponse(request.transaction_id, files).encode()


@asynccontextmanager
async def hostile(script: Script, host: str = "127.0.0.66") -> AsyncIterator[Hostile]:
    sock = trio.socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    with sock:
        await sock.bind((host, 0))
        port = sock.getsockname()[1]
        tracker = Hostile(sock, PeerAddress(ip_address(host), port), script)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tracker.serve, nursery)
            yield tracker
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def client(**kwargs: float) -> AsyncIterator[TrackerClient]:
    """A client on 127.0.0.1 with BEP 15's schedule unless told otherwise."""
    async with open_tracker_client(
        bind_v4=CLIENT_HOST,
        bind_v6=None,
        rng=random.Random(11),
        **kwargs,  # type: ignore[arg-type]
    ) as opened:
        yield opened


async def announce(opened: TrackerClient, tracker: Hostile) -> object:
    """Announce to *tracker*; the result, or the TrackerError raised."""
    target = (str(tracker.address.host), tracker.address.port)
    try:
        return await opened.announce(target, HASH, peer_id=PEER_ID, port=6881, left=1)
    except (TrackerRejectedError, TrackerTimeoutError, MalformedPacketError) as error:
        return error


async def received(opened: TrackerClient, count: int) -> None:
    """Wait until the client has read *count* datagrams (they are all on loopback already)."""
    with trio.fail_after(10):
        while opened.statistics().datagrams_received < count:
            await trio.sleep(0.001)


def assert_idle(opened: TrackerClient) -> None:
    """Nothing a tracker sent is still held: no request, no transaction."""
    assert opened.statistics().requests_in_flight == 0
    assert opened._core._transactions == {}
    assert opened._core._requests == {}


def assert_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """No error, no traceback, every record one bounded line."""
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
    for record in caplog.records:
        text = record.getMessage()
        assert len(text) < 2 * MAX_ERROR_MESSAGE + 400
        assert "\n" not in text
        assert "\x1b" not in text


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_utracker")


def raw_announce(transaction_id: int, interval: int, leechers: int, seeders: int) -> bytes:
    """An announce answer with its 32-bit fields written as unsigned (2**32-1 and all)."""
    return _ANNOUNCE_HEAD.pack(1, transaction_id, interval, leechers, seeders)


# -- stray, spoofed and duplicated answers ------------------------------------------------------


async def test_stray_spoofed_and_duplicated_answers_are_counted_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with client(timeout=5.0, max_retransmits=1) as opened:
        # Two more sockets: another port of the tracker's host, and another host.
        same_host = trio.socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
        other_host = trio.socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
        await same_host.bind(("127.0.0.66", 0))
        await other_host.bind(("127.0.0.67", 0))

        async def script(tracker: Hostile, request: Request, to: tuple[str, int]) -> None:
            right = honest_answer(tracker, request)
            tid = request.transaction_id
            wrong_action = (
                AnnounceResponse(tid, 60, 0, 0).encode()
                if isinstance(request, ConnectRequest)
                else ConnectResponse(tid, 5).encode()
            )
            await same_host.sendto(right, to)  # spoofed: another port
            await other_host.sendto(right, to)  # spoofed: another host
            await tracker.send(right[:4] + ((tid + 1) % 2**32).to_bytes(4, "big") + right[8:], to)
            await tracker.send(ConnectResponse(0xDEAD, 1).encode(), to)  # never asked
            await tracker.send(b"\x00\x00\x00", to)  # too short to name a transaction
            await tracker.send(wrong_action, to)  # the right id, the wrong kind
            await tracker.send(right, to)
            await tracker.send(right, to)  # a duplicate: its transaction is over

        with same_host, other_host:
            async with hostile(script) as tracker:
                result = await announce(opened, tracker)
                assert isinstance(result, AnnounceResult)
                assert (result.interval, result.leechers, result.seeders) == (1800, 2, 3)
                await received(opened, 16)  # eight per request: the connect and the announce
                stats = opened.statistics()
                assert stats.ignored_wrong_address == 4
                # Wrong id, never asked, too short, and the duplicate: for each request.
                assert stats.ignored_unknown_transaction == 8
                assert stats.ignored_unexpected_action == 2
                assert (stats.completed, stats.failed, stats.retransmissions) == (1, 0, 0)
                assert (stats.connects, stats.error_retries) == (1, 0)
                assert_idle(opened)
    assert_quiet(caplog)


# -- peer lists -------------------------------------------------------------------------------


def _many_peers(count: int) -> bytes:
    return b"".join(
        IPv4Address(0x0A000000 + n).packed + (6881 + n % 1000).to_bytes(2, "big")
        for n in range(count)
    )


@pytest.mark.parametrize("count", [0, 10_000, MAX_IPV4_PEERS])
async def test_peer_lists_up_to_a_full_datagram(
    count: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A datagram bounds the list: at most 10,914 IPv4 peers, one PeerAddress each, handed
    over in the result and not kept by the client."""

    async def script(tracker: Hostile, request: Request, to: tuple[str, int]) -> None:
        if isinstance(request, AnnounceRequest):
            answer = raw_announce(request.transaction_id, 1800, count, 0) + _many_peers(count)
            await tracker.send(answer, to)
        else:
            await honest(tracker, request, to)

    async with client(timeout=5.0, max_retransmits=1) as opened, hostile(script) as tracker:
        result = await announce(opened, tracker)
        assert isinstance(result, AnnounceResult)
        assert len(result.peers) == count
        assert len(set(result.peers)) == count
        assert_idle(opened)
    assert_quiet(caplog)


async def test_undialable_and_repeated_peers_are_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Port 0, 0.0.0.0, multicast and the limited broadcast go (as bip's HTTP tracker client
    drops them: none is connectable); repeats go; our own address stays, for the peer list to
    judge (only the handshake's peer id tells us from another client on our address)."""
    good = [PeerAddress.parse(text) for text in ("10.0.0.1:6881", "10.0.0.2:51413")]
    async with client(timeout=5.0, max_retransmits=1) as opened:
        ours = opened.local_addresses[0]
        listed = [
            good[0],
            PeerAddress.parse("10.0.0.3:0"),
            PeerAddress.parse("0.0.0.0:6881"),
            PeerAddress.parse("224.0.0.1:6881"),
            PeerAddress.parse("239.255.255.250:1900"),
            good[0],
            PeerAddress.parse("255.255.255.255:6881"),
            ours,
            good[1],
            good[1],
        ]

        async def script(tracker: Hostile, request: Request, to: tuple[str, int]) -> None:
            if isinstance(request, AnnounceRequest):
                answer = AnnounceResponse(request.transaction_id, 1800, 0, 0, tuple(listed))
                await tracker.send(answer.encode(), to)
            else:
                await honest(tracker, request, to)

        async with hostile(script) as tracker:
            result = await announce(opened, tracker)
        assert isinstance(result, AnnounceResult)
        assert result.peers == (good[0], ours, good[1])
    assert_quiet(caplog)


async def test_ipv6_peers_on_an_ipv4_announce(caplog: pytest.LogCaptureFixture) -> None:
    """The packet does not say its family: 18-byte entries over IPv4 read as three 6-byte
    ones (garbage, but well-formed; the undialable among them go), and a length that is no
    multiple of 6 is a malformed answer."""
    entry = PeerAddress.parse("[::1:0:a00:1]:6881").to_compact()  # ...0001 0000 0a00 0001 1ae1
    tails = iter([entry, entry[:17]])

    async def script(tracker: Hostile, request: Request, to: tuple[str, int]) -> None:
        if isinstance(request, AnnounceRequest):
            await tracker.send(raw_announce(request.transaction_id, 1800, 0, 0) + next(tails), to)
        else:
            await honest(tracker, request, to)

    async with client(timeout=5.0, max_retransmits=1) as opened, hostile(script) as tracker:
        result = await announce(opened, tracker)
        assert isinstance(result, AnnounceResult)
        # 00000000 0000, 00000000 0001, 0a000001 1ae1: only the last is dialable.
        assert result.peers == (PeerAddress.parse("10.0.0.1:6881"),)
        failed = await announce(opened, tracker)
        assert isinstance(failed, MalformedPacketError)
        assert_idle(opened)
    assert_quiet(caplog)


# -- malformed answers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "cut"),
    [
        ("connect", 15),  # one byte short
        ("connect", 17),  # one byte over
        ("announce", 19),  # short of the 20-byte header
        ("announce", 23),  # half a peer
        ("announce", 60_000),  # oversized, not whole peers
        ("scrape", 32),  # two statistics for one hash
        ("scrape", 14),  # half a statistic
    ],
)
async def test_truncated_and_oversized_answers_fail_the_request(
    where: str, cut: int, caplog: pytest.LogCaptureFixture
) -> None:
    kinds = {"connect": ConnectRequest, "announce": AnnounceRequest, "scrape": ScrapeRequest}

    async def script(tracker: Hostile, request: Request, to: tuple[str, int]) -> None:
        answer = honest_answer(tracker, request)
        if isinstance(request, kinds[where]):
            answer = (answer + bytes(cut))[:cut]
            if where == "scrape":  # keep the scrape header, fill the rest
                answer = honest_answer(tracker, request)[:8] + bytes(cut - 8)
        await tracker.send(answer, to)

    async with client(timeout=5.0, max_retransmits=1) as opened, hostile(script) as tracker:
        target = (str(tracker.address.host), tracker.address.port)
        try:
            if where == "scrape":
                await opened.scrape(target, [HASH])
            else:
                await opened.announce(target, HASH, peer_id=PEER_ID, port=6881)
        except MalformedPacketError:
            pass
        else:
            pytest.fail("the malformed answer was accepted")
        stats = opened.statistics()
        assert (stats.malformed, stats.failed, stats.retransmissions) == (1, 1, 0)
        assert_idle(opened)
    assert_quiet(caplog)


# -- error messages ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        b"x" * 65_000,  # as long as a datagram allows
        b"\xff\xfe not UTF-8 \xc3",
        b"refused\n2026-11-25 ERROR bip: fake line\x1b[31m\x00\x00",
        "\u202e\u00e9\u4e2d".encode() * 2000,  # bidi override, and multi-byte characters
    ],
)
async def test_error_messages_are_bounded_and_escaped(
    message: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async def script(tracker: Hostile, request: Request, to: tuple[str, int]) -> None:
        if isinstance(request, AnnounceRequest):
            head = (3).to_bytes(4, "big") + request.transaction_id.to_bytes(4, "big")
            await tracker.send(head + message, to)
        else:
            await honest(tracker, request, to)

    async with client(timeout=5.0, max_retransmits=1) as opened, hostile(script) as tracker:
        error = await announce(opened, tracker)
        assert isinstance(error, TrackerRejectedError)
        assert 0 < len(error.message) <= MAX_ERROR_MESSAGE
        assert error.message.isprintable()
        assert str(error) == error.message
        # An error to the id just granted is a refusal: one round trip, no reconnect.
        assert len(tracker.of_type(AnnounceRequest)) == 1
        assert_idle(opened)
    assert_quiet(caplog)


# -- intervals and counts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field_value", "interval"),
    [(0, 0), (1, 1), (2**31 - 1, 2**31 - 1), (2**31, 0), (2**32 - 1, 0)],
)
async def test_absurd_intervals_and_counts(
    field_value: int, interval: int, caplog: pytest.LogCaptureFixture
) -> None:
    """BEP 15 types them int32: a field past 2**31-1 reads negative, and a negative value,
    which no tracker means, reads as 0 (an Announcer bounds the interval further)."""

    async def script(tracker: Hostile, request: Request, to: tuple[str, int]) -> None:
        if isinstance(request, AnnounceRequest):
            answer = raw_announce(request.transaction_id, field_value, field_value, field_value)
            await tracker.send(answer, to)
        elif isinstance(request, ScrapeRequest):
            answer = struct.pack(">IIIII", 2, request.transaction_id, *[field_value] * 3)
            await tracker.send(answer, to)
        else:
            await honest(tracker, request, to)

    async with client(timeout=5.0, max_retransmits=1) as opened, hostile(script) as tracker:
        result = await announce(opened, tracker)
        assert isinstance(result, AnnounceResult)
        assert result.interval == result.leechers == result.seeders == interval
        scraped = await opened.scrape((str(tracker.address.host), tracker.address.port), [HASH])
        assert scraped.stats(HASH) == ScrapeStats(interval, interval, interval)
    assert_quiet(caplog)


# -- flows ------------------------------------------------------------------------------------


async def test_a_tracker_that_connects_but_never_answers_the_announce(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """BEP 15's whole schedule, then a timeout: 9 announces, a reconnect only for an id that
    expired while waiting, and nothing left behind."""

    async def script(tracker: Hostile, request: Request, to: tuple[str, int]) -> None:
        if isinstance(request, ConnectRequest):
            await honest(tracker, request, to)

    async with client() as opened, hostile(script) as tracker:
        started = trio.current_time()
        error = await announce(opened, tracker)
        assert isinstance(error, TrackerTimeoutError)
        assert trio.current_time() - started == pytest.approx(15 * (2**9 - 1), abs=1)
        announces = [at - started for at, r in tracker.requests if isinstance(r, AnnounceRequest)]
        assert announces == pytest.approx([15 * (2**n - 1) for n in range(9)], abs=0.1)
        # The id (60 s) is fresh for the sends at 0, 15 and 45 s, then each needs a new one.
        assert len(tracker.of_type(ConnectRequest)) == 7
        assert_idle(opened)
    assert_quiet(caplog)


async def test_a_tracker_with_a_new_connection_id_every_time(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Each id is good for one request: every cached id is refused, and the reconnect that
    follows costs one round trip, never a loop."""
    valid: set[int] = set()

    async def script(tracker: Hostile, request: Request, to: tuple[str, int]) -> None:
        if isinstance(request, ConnectRequest):
            tracker.next_id += 7
            valid.add(tracker.next_id)
            answer = ConnectResponse(request.transaction_id, tracker.next_id).encode()
            await tracker.send(answer, to)
            return
        assert isinstance(request, AnnounceRequest)
        if request.connection_id not in valid:
            answer = ErrorResponse(request.transaction_id, "Connection ID missmatch.").encode()
        else:
            valid.discard(request.connection_id)
            answer = AnnounceResponse(request.transaction_id, 1800, 0, 1).encode()
        await tracker.send(answer, to)

    async with client() as opened, hostile(script) as tracker:
        for _ in range(5):
            assert isinstance(await announce(opened, tracker), AnnounceResult)
            await trio.sleep(10)
        stats = opened.statistics()
        assert (stats.completed, stats.failed) == (5, 0)
        assert (stats.connects, stats.error_retries, stats.retransmissions) == (5, 4, 0)
        assert len(tracker.of_type(AnnounceRequest)) == 9
    assert_quiet(caplog)


async def test_a_tracker_that_answers_everything_with_an_error(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Errors to the connect fail at once; once an id is cached, an error to it costs one
    reconnect and one retry, and then the request fails: never more."""
    refuse_connects = True

    async def script(tracker: Hostile, request: Request, to: tuple[str, int]) -> None:
        if isinstance(request, ConnectRequest) and not refuse_connects:
            await honest(tracker, request, to)
            return
        await tracker.send(ErrorResponse(request.transaction_id, "go away").encode(), to)

    async with client() as opened, hostile(script) as tracker:
        assert isinstance(await announce(opened, tracker), TrackerRejectedError)
        assert len(tracker.requests) == 1  # the connect alone
        refuse_connects = False
        # The id is granted for this announce: its refusal is final at once.
        assert isinstance(await announce(opened, tracker), TrackerRejectedError)
        assert len(tracker.requests) == 3
        # Ten seconds on, the cached id may have gone stale: one reconnect and retry.
        await trio.sleep(10)
        assert isinstance(await announce(opened, tracker), TrackerRejectedError)
        kinds = [type(request).__name__ for _, request in tracker.requests[3:]]
        assert kinds == ["AnnounceRequest", "ConnectRequest", "AnnounceRequest"]
        stats = opened.statistics()
        assert (stats.failed, stats.error_retries, stats.retransmissions) == (3, 1, 0)
        assert_idle(opened)
    assert_quiet(caplog)


@pytest.mark.parametrize("late", [False, True])
async def test_a_tracker_that_answers_at_the_edge_of_each_timeout(
    late: bool, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Just before the timeout: no retransmission. Just after: the packet went again, the
    late answer to the first copy counts, and the answer to the second is a stray."""
    delay = 15.0 + (0.01 if late else -0.01)

    async def script(tracker: Hostile, request: Request, to: tuple[str, int]) -> None:
        await trio.sleep(delay)
        await honest(tracker, request, to)

    async with client() as opened, hostile(script) as tracker:
        started = trio.current_time()
        result = await announce(opened, tracker)
        assert isinstance(result, AnnounceResult)
        assert trio.current_time() - started == pytest.approx(2 * delay, abs=0.01)
        await trio.sleep(20)  # the answers to the second copies arrive meanwhile
        stats = opened.statistics()
        assert stats.retransmissions == (2 if late else 0)
        assert stats.ignored_unknown_transaction == (2 if late else 0)
        assert len(tracker.requests) == (4 if late else 2)
        assert_idle(opened)
    assert_quiet(caplog)


async def test_a_packet_released_by_a_late_connect_answer_keeps_its_own_schedule(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The tracker ignores three connects and drops the first announce. The connect's next
    retransmission was 120 s away; the announce's is 15 s, and the shell's timer task must
    wake for it (it slept until the connect's deadline, and lost 105 s here)."""

    async def script(tracker: Hostile, request: Request, to: tuple[str, int]) -> None:
        if isinstance(request, ConnectRequest):
            if len(tracker.of_type(ConnectRequest)) == 4:
                await honest(tracker, request, to)
        elif len(tracker.of_type(AnnounceRequest)) > 1:
            await honest(tracker, request, to)

    async with client() as opened, hostile(script) as tracker:
        started = trio.current_time()
        assert isinstance(await announce(opened, tracker), AnnounceResult)
        times = [round(at - started, 1) for at, _ in tracker.requests]
        assert times == [0, 15, 45, 105, 105, 120]
        assert_idle(opened)
    assert_quiet(caplog)


async def test_a_flood_of_unsolicited_datagrams(caplog: pytest.LogCaptureFixture) -> None:
    """A tracker floods the client's socket with datagrams nobody asked for (random bytes,
    answer-shaped packets with random ids, copies of answers to requests long over) while
    the client announces to an honest tracker on the same socket: every honest answer gets
    through on the first try, each datagram costs a dict lookup and is forgotten, and
    nothing grows (real time: each chunk is read before the next is sent)."""
    rng = random.Random(4)
    chunks, chunk = 60, 50

    def junk(n: int) -> bytes:
        kind = n % 4
        tid = rng.getrandbits(32)
        if kind == 0:
            return rng.randbytes(rng.randrange(0, 1400))
        if kind == 1:
            return AnnounceResponse(tid, 1, 0, 0, ()).encode() + _many_peers(200)
        if kind == 2:
            return ConnectResponse(tid, tid).encode()
        return ErrorResponse(tid, "x" * rng.randrange(0, 1000)).encode()

    async with (
        client(timeout=3.0, max_retransmits=1) as opened,
        hostile(honest, host="127.0.0.70") as good,
        hostile(honest, host="127.0.0.71") as flooder,
    ):
        to = opened.local_addresses[0]
        answers = 0
        for number in range(chunks):
            for n in range(chunk):
                await flooder.send(junk(number * chunk + n), (str(to.host), to.port))
            if number % 6 == 0:  # an honest announce every few chunks, amid the flood
                assert isinstance(await announce(opened, good), AnnounceResult)
                answers += 2 if number == 0 else 1  # the first needs a connect
            await received(opened, flooder.sent + answers)
        stats = opened.statistics()
        assert stats.ignored_unknown_transaction == chunks * chunk
        assert (stats.completed, stats.failed, stats.retransmissions) == (10, 0, 0)
        assert stats.trackers == 1  # the honest one's cached id; the flooder left nothing
        assert_idle(opened)
    assert_quiet(caplog)


async def test_a_flooding_tracker_cannot_answer_for_another(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The flooder sees its own transaction ids only; answers it forges with them for the
    honest tracker's requests can only be wrong-address or unknown, and the client serves
    both on one socket."""

    async def forge(tracker: Hostile, request: Request, to: tuple[str, int]) -> None:
        for tid in range(request.transaction_id - 20, request.transaction_id + 20):
            fake = AnnounceResponse(tid % 2**32, 1, 99, 99, ()).encode()
            await tracker.send(fake, to)
        await honest(tracker, request, to)

    async with (
        client(timeout=3.0, max_retransmits=1) as opened,
        hostile(honest, host="127.0.0.72") as good,
        hostile(forge, host="127.0.0.73") as flooder,
    ):
        results: dict[str, object] = {}

        async def run(name: str, tracker: Hostile) -> None:
            results[name] = await announce(opened, tracker)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "good", good)
            nursery.start_soon(run, "flooder", flooder)
        good_result = results["good"]
        assert isinstance(good_result, AnnounceResult)
        assert (good_result.leechers, good_result.seeders) == (2, 3)
        assert isinstance(results["flooder"], AnnounceResult)
        assert opened.statistics().failed == 0
        assert_idle(opened)
    assert_quiet(caplog)


def test_ipv4_mapped_peers_of_an_ipv6_answer_become_ipv4() -> None:
    """At the core (no IPv6 loopback needed): an IPv6 tracker's ``::ffff:a.b.c.d`` peers are
    the IPv4 peers we would dial, once each; ``::`` and ``ff02::1`` are dropped."""
    tracker = PeerAddress.parse("[2001:db8::1]:6969")
    core = TrackerClientCore(rng=random.Random(2))
    core.announce(tracker, AnnounceParams(HASH, PEER_ID, port=6881), 0.0)
    [(connect, _)] = core.datagrams_to_send(0.0)
    tid = decode_request(connect).transaction_id
    core.receive_datagram(ConnectResponse(tid, 9).encode(), tracker, 0.0)
    [(sent, _)] = core.datagrams_to_send(0.0)
    listed = tuple(
        PeerAddress.parse(text)
        for text in (
            "[::ffff:10.0.0.1]:6881",
            "[::]:6881",
            "[ff02::1]:6881",
            "[2001:db8::2]:6881",
            "[::ffff:10.0.0.1]:6881",
        )
    )
    answer = AnnounceResponse(decode_request(sent).transaction_id, 60, 0, 0, listed)
    core.receive_datagram(answer.encode(), tracker, 0.1)
    result = core.next_event()
    assert isinstance(result, AnnounceResult)
    assert result.peers == (
        PeerAddress.parse("10.0.0.1:6881"),
        PeerAddress.parse("[2001:db8::2]:6881"),
    )
