"""The trio TrackerClient against a scripted tracker on loopback (autojump clock for timing)."""

from __future__ import annotations

import random
import socket as stdlib_socket
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import IPv6Address, ip_address

import pytest
import trio
import trio.testing

from bip_handshake import PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_utracker._client import TrackerClient, _swarm_id, open_tracker_client
from bip_utracker._client_core import AnnounceResult
from bip_utracker._codec import (
    AnnounceEvent,
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
from bip_utracker._errors import (
    LocalProtocolError,
    MalformedPacketError,
    TrackerError,
    TrackerRejectedError,
    TrackerTimeoutError,
)
from bip_utracker._url import TrackerUrl

INFO_HASH = b"\x11" * 20
PEER_ID = b"-BP0001-abcdefghijkl"
PEERS4 = (PeerAddress.parse("127.0.0.5:6881"), PeerAddress.parse("127.0.0.6:6882"))
PEERS6 = (PeerAddress(IPv6Address("::1"), 51413), PeerAddress(IPv6Address("2001:db8::9"), 1))

Reply = Callable[[Request], bytes | None]


def _has_ipv6_loopback() -> bool:
    try:
        with stdlib_socket.socket(stdlib_socket.AF_INET6, stdlib_socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _has_ipv6_loopback()
needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="this machine has no IPv6 loopback")


@dataclass
class FakeTracker:
    """A scripted UDP tracker: it records requests and answers through ``reply``."""

    sock: trio.socket.SocketType
    address: PeerAddress
    reply: Reply
    requests: list[Request] = field(default_factory=list)
    arrival_times: list[float] = field(default_factory=list)
    next_connection_id: int = 1000

    @property
    def url(self) -> str:
        host = f"[{self.address.host}]" if self.address.family == 6 else str(self.address.host)
        return f"udp://{host}:{self.address.port}"

    def of_type(self, kind: type) -> list[Request]:
        return [request for request in self.requests if isinstance(request, kind)]

    async def serve(self) -> None:
        while True:
            data, source = await self.sock.recvfrom(65536)
            request = decode_request(data)
            self.requests.append(request)
            self.arrival_times.append(trio.current_time())
            answer = self.reply(request)
            if answer is not None:
                await self.sock.sendto(answer, source[:2])


def well_behaved(tracker: FakeTracker, peers: tuple[PeerAddress, ...] = PEERS4) -> Reply:
    def reply(request: Request) -> bytes:
        if isinstance(request, ConnectRequest):
            tracker.next_connection_id += 1
            return ConnectResponse(request.transaction_id, tracker.next_connection_id).encode()
        if isinstance(request, AnnounceRequest):
            return AnnounceResponse(request.transaction_id, 1800, 2, 3, peers).encode()
        files = tuple(ScrapeStats(i, i + 1, i + 2) for i in range(len(request.info_hashes)))
        return ScrapeResponse(request.transaction_id, files).encode()

    return reply


@asynccontextmanager
async def fake_tracker(
    family: int = 4, make_reply: Callable[[FakeTracker], Reply] = well_behaved
) -> AsyncIterator[FakeTracker]:
    sock = trio.socket.socket(
        stdlib_socket.AF_INET if family == 4 else stdlib_socket.AF_INET6, stdlib_socket.SOCK_DGRAM
    )
    with sock:
        await sock.bind(("127.0.0.1" if family == 4 else "::1", 0))
        host, port = sock.getsockname()[:2]
        tracker = FakeTracker(sock, PeerAddress(ip_address(host), port), lambda _: None)
        tracker.reply = make_reply(tracker)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tracker.serve)
            yield tracker
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def client(*, bep_timing: bool = False, **kwargs: object) -> AsyncIterator[TrackerClient]:
    """A client on loopback. Unless *bep_timing* (BEP 15's 15 s and 8 retransmissions, for
    tests on the autojump clock), a short schedule bounds a real-time test that goes wrong."""
    settings: dict[str, object] = {
        "bind_v4": "127.0.0.1",
        "bind_v6": "::1" if HAS_IPV6 else None,
        "rng": random.Random(3),
    }
    if not bep_timing:
        settings.update(timeout=1.0, max_retransmits=2)
    settings.update(kwargs)
    async with open_tracker_client(**settings) as opened:  # type: ignore[arg-type]
        yield opened


@dataclass
class RecordingSink:
    found: list[tuple[InfoHash | bytes, list[PeerAddress], str]] = field(default_factory=list)

    def discovered(
        self, info_hash: InfoHash | bytes, addresses: Iterable[PeerAddress], source: str
    ) -> None:
        self.found.append((info_hash, list(addresses), source))


async def test_announce_by_url_sends_url_data_and_feeds_the_sink() -> None:
    sink = RecordingSink()
    async with fake_tracker() as tracker, client(sink=sink) as tracker_client:
        result = await tracker_client.announce(
            tracker.url + "/announce?passkey=abc",
            INFO_HASH,
            peer_id=PeerId(PEER_ID),
            port=6881,
            left=123,
            event=AnnounceEvent.STARTED,
            num_want=50,
        )
    assert isinstance(result, AnnounceResult)
    assert (result.interval, result.leechers, result.seeders, result.peers) == (1800, 2, 3, PEERS4)
    assert result.tracker == tracker.address
    connect, announce = tracker.requests
    assert isinstance(connect, ConnectRequest)
    assert isinstance(announce, AnnounceRequest)
    assert announce.url_data == b"/announce?passkey=abc"
    assert (announce.info_hash, announce.peer_id, announce.port) == (INFO_HASH, PEER_ID, 6881)
    assert (announce.left, announce.event, announce.num_want) == (123, AnnounceEvent.STARTED, 50)
    assert announce.connection_id == 1001
    assert sink.found == [(INFO_HASH, list(PEERS4), "tracker")]


async def test_a_stopped_announce_feeds_no_peers_to_the_sink() -> None:
    sink = RecordingSink()
    async with fake_tracker() as tracker, client(sink=sink) as tracker_client:
        result = await tracker_client.announce(
            tracker.url, INFO_HASH, peer_id=PeerId(PEER_ID), port=6881, event=AnnounceEvent.STOPPED
        )
    assert result.peers == PEERS4  # the answer is whole
    assert sink.found == []


async def test_announce_by_address_and_by_host_port() -> None:
    async with fake_tracker() as tracker, client() as tracker_client:
        by_address = await tracker_client.announce(
            tracker.address, INFO_HASH, peer_id=PEER_ID, port=1
        )
        by_pair = await tracker_client.announce(
            ("127.0.0.1", tracker.address.port), INFO_HASH, peer_id=PEER_ID, port=1
        )
        by_url = await tracker_client.announce(
            TrackerUrl("127.0.0.1", tracker.address.port), INFO_HASH, peer_id=PEER_ID, port=1
        )
    assert by_address.peers == by_pair.peers == by_url.peers == PEERS4
    # One connect served all three (the connection id is cached).
    assert len(tracker.of_type(ConnectRequest)) == 1
    announces = tracker.of_type(AnnounceRequest)
    assert all(isinstance(a, AnnounceRequest) and a.url_data == b"" for a in announces)
    # The default key is the same for every announce of one client.
    assert len({a.key for a in announces if isinstance(a, AnnounceRequest)}) == 1


async def test_localhost_is_resolved() -> None:
    # IPv4 only: localhost may resolve to ::1 first, where this tracker does not listen.
    async with fake_tracker() as tracker, client(bind_v6=None) as tracker_client:
        result = await tracker_client.announce(
            f"udp://localhost:{tracker.address.port}/a", INFO_HASH, peer_id=PEER_ID, port=1
        )
        by_pair = await tracker_client.announce(
            ("localhost", tracker.address.port), INFO_HASH, peer_id=PEER_ID, port=1
        )
    assert result.peers == by_pair.peers == PEERS4


async def test_scrape() -> None:
    hashes: list[InfoHash | bytes] = [
        InfoHash(v1=b"\x01" * 20),
        b"\x02" * 20,
        InfoHash(v2=b"\x03" * 32),
    ]
    async with fake_tracker() as tracker, client() as tracker_client:
        result = await tracker_client.scrape(tracker.url, hashes)
    assert result.info_hashes == (b"\x01" * 20, b"\x02" * 20, b"\x03" * 20)
    assert result.stats(b"\x02" * 20) == ScrapeStats(1, 2, 3)
    [scrape] = tracker.of_type(ScrapeRequest)
    assert isinstance(scrape, ScrapeRequest)
    assert scrape.info_hashes == result.info_hashes


def test_swarm_id_of_a_hybrid_is_its_v1_hash() -> None:
    hybrid = InfoHash(v1=b"\x01" * 20, v2=b"\x02" * 32)
    assert _swarm_id(hybrid) == b"\x01" * 20
    assert _swarm_id(InfoHash(v2=b"\x02" * 32)) == b"\x02" * 20


@needs_ipv6
async def test_ipv6_tracker_and_peers() -> None:
    sink = RecordingSink()
    info_hash = InfoHash(v2=b"\x42" * 32)
    async with (
        fake_tracker(6, lambda tracker: well_behaved(tracker, PEERS6)) as tracker,
        client(sink=sink) as tracker_client,
    ):
        assert tracker.url.startswith("udp://[::1]:")
        result = await tracker_client.announce(tracker.url, info_hash, peer_id=PEER_ID, port=1)
        assert [address.family for address in tracker_client.local_addresses] == [4, 6]
    assert result.peers == PEERS6
    assert result.tracker.family == 6
    [announce] = tracker.of_type(AnnounceRequest)
    assert isinstance(announce, AnnounceRequest)
    assert announce.info_hash == b"\x42" * 20  # the truncated v2 swarm id
    assert sink.found == [(info_hash, list(PEERS6), "tracker")]


async def test_lost_datagrams_are_retransmitted_at_15_and_45_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def drop_first_two(tracker: FakeTracker) -> Reply:
        answer = well_behaved(tracker)

        def reply(request: Request) -> bytes | None:
            return None if len(tracker.requests) <= 2 else answer(request)

        return reply

    async with (
        fake_tracker(make_reply=drop_first_two) as tracker,
        client(bep_timing=True) as tracker_client,
    ):
        start = trio.current_time()
        await tracker_client.announce(tracker.url, INFO_HASH, peer_id=PEER_ID, port=1)
        elapsed = trio.current_time() - start
        stats = tracker_client.statistics()
    assert [type(request) for request in tracker.requests] == [
        ConnectRequest,
        ConnectRequest,
        ConnectRequest,
        AnnounceRequest,
    ]
    offsets = [round(time - start, 3) for time in tracker.arrival_times]
    assert offsets[:3] == [0.0, 15.0, 45.0]
    assert elapsed == pytest.approx(45.0, abs=0.01)
    assert stats.retransmissions == 2


async def test_no_answer_times_out_after_every_retransmission(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        fake_tracker(make_reply=lambda tracker: lambda request: None) as tracker,
        client(bep_timing=True) as tracker_client,
    ):
        start = trio.current_time()
        with pytest.raises(TrackerTimeoutError):
            await tracker_client.announce(tracker.url, INFO_HASH, peer_id=PEER_ID, port=1)
        assert trio.current_time() - start == pytest.approx(15 * (2**9 - 1), abs=0.01)
    assert len(tracker.requests) == 9


async def test_configured_retransmission(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        fake_tracker(make_reply=lambda tracker: lambda request: None) as tracker,
        client(timeout=2.0, max_retransmits=1) as tracker_client,
    ):
        start = trio.current_time()
        with pytest.raises(TrackerTimeoutError):
            await tracker_client.scrape(("127.0.0.1", tracker.address.port), [INFO_HASH])
        assert trio.current_time() - start == pytest.approx(6.0, abs=0.01)


async def test_connection_id_expires_after_a_minute(autojump_clock: trio.testing.MockClock) -> None:
    async with fake_tracker() as tracker, client(bep_timing=True) as tracker_client:

        async def announce() -> None:
            await tracker_client.announce(tracker.url, INFO_HASH, peer_id=PEER_ID, port=1)

        await announce()
        await trio.sleep(59)
        await announce()
        assert len(tracker.of_type(ConnectRequest)) == 1
        await trio.sleep(2)
        await announce()
        assert len(tracker.of_type(ConnectRequest)) == 2
    ids = [
        a.connection_id for a in tracker.of_type(AnnounceRequest) if isinstance(a, AnnounceRequest)
    ]
    assert ids == [1001, 1001, 1002]


async def test_tracker_error_message() -> None:
    def refuse(tracker: FakeTracker) -> Reply:
        answer = well_behaved(tracker)

        def reply(request: Request) -> bytes | None:
            if isinstance(request, AnnounceRequest):
                return ErrorResponse(
                    request.transaction_id,
                    "Requested download is not authorized for use with this tracker.",
                ).encode()
            return answer(request)

        return reply

    async with fake_tracker(make_reply=refuse) as tracker, client() as tracker_client:
        with pytest.raises(TrackerRejectedError, match="not authorized") as caught:
            await tracker_client.announce(tracker.url, INFO_HASH, peer_id=PEER_ID, port=1)
    assert caught.value.message.startswith("Requested download")


async def test_malformed_answer() -> None:
    def truncate(tracker: FakeTracker) -> Reply:
        answer = well_behaved(tracker)

        def reply(request: Request) -> bytes | None:
            data = answer(request)
            return data[:-1] if data and isinstance(request, AnnounceRequest) else data

        return reply

    async with fake_tracker(make_reply=truncate) as tracker, client() as tracker_client:
        with pytest.raises(MalformedPacketError):
            await tracker_client.announce(tracker.url, INFO_HASH, peer_id=PEER_ID, port=1)


async def test_forged_answers_from_another_port_are_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A forger who sees our transaction ids but sends from another address gets nowhere."""
    async with trio.open_nursery() as nursery:
        forger = trio.socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
        await forger.bind(("127.0.0.1", 0))

        def forge_then_answer(tracker: FakeTracker) -> Reply:
            answer = well_behaved(tracker)

            def reply(request: Request) -> bytes | None:
                if isinstance(request, ConnectRequest):
                    forged = ConnectResponse(request.transaction_id, 666).encode()
                    target = tracker_client.local_addresses[0]
                    nursery.start_soon(forger.sendto, forged, (str(target.host), target.port))
                    return None if len(tracker.requests) == 1 else answer(request)
                return answer(request)

            return reply

        async with (
            fake_tracker(make_reply=forge_then_answer) as tracker,
            client() as tracker_client,
        ):
            await tracker_client.announce(tracker.url, INFO_HASH, peer_id=PEER_ID, port=1)
            stats = tracker_client.statistics()
        forger.close()
    announce = tracker.of_type(AnnounceRequest)[0]
    assert isinstance(announce, AnnounceRequest)
    assert announce.connection_id != 666
    # The forgery for the first connect came from the wrong address; the one for the
    # second arrived after the genuine answer had retired its transaction id.
    assert stats.ignored_wrong_address + stats.ignored_unknown_transaction == 2
    assert stats.ignored_wrong_address >= 1


async def test_concurrent_announces_to_two_trackers() -> None:
    async with fake_tracker() as first, fake_tracker() as second, client() as tracker_client:
        results: list[AnnounceResult] = []

        async def announce(url: str, info_hash: bytes) -> None:
            results.append(await tracker_client.announce(url, info_hash, peer_id=PEER_ID, port=1))

        async with trio.open_nursery() as nursery:
            for index in range(6):
                tracker = first if index % 2 else second
                nursery.start_soon(announce, tracker.url, bytes([index]) * 20)
        assert tracker_client.statistics().requests_in_flight == 0
    assert len(results) == 6
    assert len(first.of_type(ConnectRequest)) == len(second.of_type(ConnectRequest)) == 1
    assert len(first.of_type(AnnounceRequest)) == len(second.of_type(AnnounceRequest)) == 3


async def test_cancelled_call_is_forgotten(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        fake_tracker(make_reply=lambda tracker: lambda request: None) as tracker,
        client(bep_timing=True) as tracker_client,
    ):
        with trio.move_on_after(20):
            await tracker_client.announce(tracker.url, INFO_HASH, peer_id=PEER_ID, port=1)
        assert tracker_client.statistics().requests_in_flight == 0
        sent = len(tracker.requests)
        await trio.sleep(1000)
        assert len(tracker.requests) == sent  # nothing retransmitted for it


async def test_closing_fails_waiting_calls() -> None:
    async with fake_tracker(make_reply=lambda tracker: lambda request: None) as tracker:
        caught: list[BaseException] = []
        async with trio.open_nursery() as nursery, client() as tracker_client:

            async def announce() -> None:
                try:
                    await tracker_client.announce(tracker.url, INFO_HASH, peer_id=PEER_ID, port=1)
                except LocalProtocolError as error:
                    caught.append(error)

            nursery.start_soon(announce)
            await trio.testing.wait_all_tasks_blocked()
        assert len(caught) == 1
        with pytest.raises(LocalProtocolError, match="closed"):
            await tracker_client.announce(tracker.url, INFO_HASH, peer_id=PEER_ID, port=1)


@pytest.mark.parametrize(
    ("target", "kwargs"),
    [
        ("http://127.0.0.1:1/announce", {}),
        (("127.0.0.1", 0), {}),
        (("127.0.0.1", "1"), {}),
        (("1.2.3", 80), {}),
        (("bad_host", 80), {}),
        (12, {}),
        ("udp://127.0.0.1:1", {"info_hash": b"short"}),
        ("udp://127.0.0.1:1", {"info_hash": "11" * 20}),
        ("udp://127.0.0.1:1", {"peer_id": b"short"}),
        ("udp://127.0.0.1:1", {"port": 70000}),
        ("udp://127.0.0.1:1", {"event": 9}),
        ("udp://127.0.0.1:1", {"ip": "1.2.3.4"}),
        ("udp://127.0.0.1:1", {"num_want": 2**31}),
    ],
)
async def test_bad_arguments(target: object, kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {"info_hash": INFO_HASH, "peer_id": PEER_ID, "port": 1}
    arguments.update(kwargs)
    async with client() as tracker_client:
        with pytest.raises(LocalProtocolError):
            await tracker_client.announce(target, **arguments)  # type: ignore[arg-type]
        assert tracker_client.statistics().requests_in_flight == 0


async def test_bad_scrape_arguments() -> None:
    async with client() as tracker_client:
        for hashes in ([], [INFO_HASH] * 75, [b"x"]):
            with pytest.raises(LocalProtocolError):
                await tracker_client.scrape("udp://127.0.0.1:1", hashes)


async def test_family_without_a_socket() -> None:
    async with client(bind_v6=None) as tracker_client:
        with pytest.raises(TrackerError, match="no IPv6 socket"):
            await tracker_client.announce("udp://[::1]:1", INFO_HASH, peer_id=PEER_ID, port=1)
    with pytest.raises(LocalProtocolError):
        async with open_tracker_client(bind_v4=None, bind_v6=None):
            pass  # pragma: no cover


class ScriptedResolver(trio.abc.HostnameResolver):
    """Answers getaddrinfo from a table, so name resolution is tested without any DNS."""

    def __init__(self, table: dict[str, list[tuple[int, str]]]) -> None:
        self.table = table

    async def getaddrinfo(  # type: ignore[override]
        self, host: bytes | None, port: bytes | str | int | None, *args: object, **kwargs: object
    ) -> list[tuple[int, int, int, str, tuple[str, int] | tuple[str, int, int, int]]]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in self.table:
            raise stdlib_socket.gaierror(stdlib_socket.EAI_NONAME, "Name or service not known")
        assert port is not None
        number = int(port)
        return [
            (
                family,
                stdlib_socket.SOCK_DGRAM,
                17,
                "",
                (address, number) if family == stdlib_socket.AF_INET else (address, number, 0, 0),
            )
            for family, address in self.table[name]
        ]

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
    ) -> tuple[str, str]:
        raise NotImplementedError  # pragma: no cover - the client never asks


async def test_host_names_resolve_to_a_family_we_have() -> None:
    trio.socket.set_custom_hostname_resolver(
        ScriptedResolver(
            {
                "both.example": [
                    (stdlib_socket.AF_INET6, "::1"),
                    (stdlib_socket.AF_INET, "127.0.0.1"),
                ],
                "v6only.example": [(stdlib_socket.AF_INET6, "::1")],
            }
        )
    )
    try:
        async with fake_tracker() as tracker, client(bind_v6=None) as tracker_client:
            result = await tracker_client.announce(
                f"udp://both.example:{tracker.address.port}", INFO_HASH, peer_id=PEER_ID, port=1
            )
            assert result.tracker == tracker.address
            with pytest.raises(TrackerError, match="no address we can reach"):
                await tracker_client.announce(
                    "udp://v6only.example:1", INFO_HASH, peer_id=PEER_ID, port=1
                )
            with pytest.raises(TrackerError, match="cannot resolve"):
                await tracker_client.scrape("udp://nowhere.example:1", [INFO_HASH])
            assert tracker_client.send_errors == 0
    finally:
        trio.socket.set_custom_hostname_resolver(None)


async def test_a_cancelled_call_does_not_lose_other_requests_datagrams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with fake_tracker() as tracker, client() as tracker_client:
        results: list[AnnounceResult] = []

        async def announce() -> None:
            results.append(
                await tracker_client.announce(tracker.url, INFO_HASH, peer_id=PEER_ID, port=1)
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(announce)
            with trio.CancelScope() as scope:
                scope.cancel()
                await tracker_client.announce(tracker.url, INFO_HASH, peer_id=PEER_ID, port=2)
            start = trio.current_time()
        # The surviving announce was answered at once, not after a retransmission.
        assert trio.current_time() - start < 1.0
    assert len(results) == 1
