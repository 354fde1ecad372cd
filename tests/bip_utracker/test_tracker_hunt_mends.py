"""The tracker hunt's findings in bip_utracker, each pinned.

- F1: a tracker whose host name resolves to addresses no datagram can go to (0.0.0.0, a DNS
  blocklist's answer; ``::``; multicast; the IPv4 broadcast), or that names one literally, is
  a failing tracker (:class:`TrackerError`, retried by an :class:`Announcer` with backoff),
  never the caller's mistake (:class:`LocalProtocolError`, which ended ``Announcer.run``);
  a name with a usable address among unusable ones is reached at it, as libtorrent's
  ``name_lookup`` drops the endpoints it cannot route.
- F2: a client with ``max_requests`` in flight makes further calls wait for a slot (within
  the caller's own timeout), instead of refusing them with :class:`LocalProtocolError`.
- F3: the server's IPv6 socket is IPv6-only, so ``0.0.0.0:P`` and ``[::]:P`` can both serve.
- F4: ``stopped`` asks for no peers (num_want 0, as libtorrent): we are leaving.
"""

from __future__ import annotations

import socket as stdlib_socket
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
import trio
import trio.testing
from tests._resolvers import Answer, FixedResolver, has_ipv6_loopback

from bip_handshake import PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_utracker import (
    AnnounceAnswer,
    AnnounceEvent,
    AnnounceProgress,
    Announcer,
    AnnounceRequest,
    AnnounceResult,
    LocalProtocolError,
    RequestId,
    ScrapeStats,
    SwarmStore,
    TrackerClient,
    TrackerError,
    open_tracker_client,
    serve_tracker,
)
from bip_utracker._server_core import ServerConfig

HASH = b"\x33" * 20
PEER_ID = b"-BP0001-huntmends001"
DEADLINE = 10.0

needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")

# Addresses no datagram can go to: what a DNS blocklist answers (Pi-hole's default is
# 0.0.0.0 and ::), multicast groups, the IPv4 limited broadcast.
UNCONNECTABLE = ("0.0.0.0", "::", "239.1.2.3", "255.255.255.255", "ff02::1")


def _client(family: str) -> AbstractAsyncContextManager[TrackerClient]:
    """A tracker client on loopback: IPv4 only, or both families."""
    return open_tracker_client(bind_v4="127.0.0.1", bind_v6="::1" if family == "both" else None)


FAMILIES = [
    pytest.param("v4", id="ipv4-only"),
    pytest.param("both", id="dual", marks=needs_ipv6),
]


# --- F1: unconnectable tracker addresses ---------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
async def test_a_name_resolving_to_unconnectable_addresses_only_is_a_tracker_failure(
    family: str,
) -> None:
    trio.socket.set_custom_hostname_resolver(FixedResolver({"blocked.test": UNCONNECTABLE}))
    with trio.fail_after(DEADLINE):
        async with _client(family) as client:
            with pytest.raises(TrackerError) as announced:
                await client.announce(
                    "udp://blocked.test:6969/announce", HASH, peer_id=PEER_ID, port=6881
                )
            with pytest.raises(TrackerError) as scraped:
                await client.scrape(("blocked.test", 6969), [HASH])
            assert client.statistics().datagrams_sent == 0
    for caught in (announced, scraped):
        assert not isinstance(caught.value, LocalProtocolError), caught.value
        assert "blocked.test" in str(caught.value)


@pytest.mark.parametrize("family", FAMILIES)
async def test_a_name_is_reached_at_its_first_connectable_address(family: str) -> None:
    async with serve_tracker(("127.0.0.1", 0)) as server:
        port = server.address[1]
        names: dict[str, Answer] = {"mixed.test": [*UNCONNECTABLE, ("127.0.0.1", port)]}
        trio.socket.set_custom_hostname_resolver(FixedResolver(names))
        with trio.fail_after(DEADLINE):
            async with _client(family) as client:
                result = await client.announce(
                    f"udp://mixed.test:{port}/announce", HASH, peer_id=PEER_ID, port=6881
                )
    assert result.tracker == PeerAddress.parse(f"127.0.0.1:{port}")


LITERALS: list[object] = [
    "udp://0.0.0.0:6969/announce",
    "udp://255.255.255.255:6969/announce",
    "udp://239.1.2.3:6969",
    ("0.0.0.0", 6969),
    ("224.0.0.1", 6969),
    PeerAddress.parse("0.0.0.0:6969"),
    PeerAddress.parse("[::ffff:0.0.0.0]:6969"),  # a mapped one is the IPv4 address it names
]


@pytest.mark.parametrize("target", LITERALS, ids=str)
@pytest.mark.parametrize("family", FAMILIES)
async def test_an_unconnectable_literal_is_a_tracker_failure(target: object, family: str) -> None:
    with trio.fail_after(DEADLINE):
        async with _client(family) as client:
            with pytest.raises(TrackerError) as announced:
                await client.announce(target, HASH, peer_id=PEER_ID, port=6881)  # type: ignore[arg-type]
            with pytest.raises(TrackerError) as scraped:
                await client.scrape(target, [HASH])  # type: ignore[arg-type]
            assert client.statistics().datagrams_sent == 0
    for caught in (announced, scraped):
        assert not isinstance(caught.value, LocalProtocolError), caught.value


@needs_ipv6
@pytest.mark.parametrize("target", ["udp://[::]:6969/announce", "udp://[ff02::1]:6969"])
async def test_an_unconnectable_ipv6_literal_is_a_tracker_failure(target: str) -> None:
    with trio.fail_after(DEADLINE):
        async with _client("both") as client:
            with pytest.raises(TrackerError) as caught:
                await client.announce(target, HASH, peer_id=PEER_ID, port=6881)
    assert not isinstance(caught.value, LocalProtocolError), caught.value


@pytest.mark.parametrize("url", ["udp://blocked.test:6969/announce", "udp://0.0.0.0:6969/announce"])
async def test_the_announcer_backs_off_from_an_unconnectable_tracker(
    url: str, autojump_clock: trio.testing.MockClock
) -> None:
    """The hunt's unconnectable_tracker.py: run() raised LocalProtocolError at once."""
    trio.socket.set_custom_hostname_resolver(FixedResolver({"blocked.test": ["0.0.0.0"]}))
    async with open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as client:
        announcer = Announcer(
            client,
            url,
            HASH,
            peer_id=PEER_ID,
            port=6881,
            progress=lambda: AnnounceProgress(left=5),
            retry_delay=15.0,
        )
        with trio.move_on_after(100):  # tries at 0, 15, 45 s: backed off, not ended
            await announcer.run()
    status = announcer.status
    assert status.failures == 3
    assert isinstance(status.last_error, TrackerError)
    assert not isinstance(status.last_error, LocalProtocolError)


# --- F2: a full client is backpressure -----------------------------------------------------


async def test_calls_beyond_max_requests_wait_for_a_slot() -> None:
    """The hunt's session_inflight.py: the 10,001st call raised LocalProtocolError."""
    async with serve_tracker(("127.0.0.1", 0), config=ServerConfig(rate_limit=None)) as server:
        host, port = server.address
        results: list[AnnounceResult] = []
        with trio.fail_after(DEADLINE):
            async with open_tracker_client(bind_v4=host, bind_v6=None, max_requests=1) as client:

                async def announce(n: int) -> None:
                    peer_id = PEER_ID[:-1] + bytes([n])
                    url = f"udp://{host}:{port}/announce"
                    results.append(await client.announce(url, HASH, peer_id=peer_id, port=n))

                async with trio.open_nursery() as nursery:
                    for n in range(1, 5):
                        nursery.start_soon(announce, n)
                # Scrapes queue the same way.
                async with trio.open_nursery() as nursery:
                    for _ in range(3):
                        nursery.start_soon(client.scrape, (host, port), [HASH])
    assert len(results) == 4
    assert server.statistics().announces == 4
    assert server.statistics().scrapes == 3


async def test_a_call_waiting_for_a_slot_keeps_to_its_callers_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    silent = trio.socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    with silent:
        await silent.bind(("127.0.0.1", 0))
        tracker = PeerAddress.parse(f"127.0.0.1:{silent.getsockname()[1]}")
        async with open_tracker_client(bind_v4="127.0.0.1", bind_v6=None, max_requests=1) as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: client.announce(tracker, HASH, peer_id=PEER_ID, port=1))
                await trio.testing.wait_all_tasks_blocked()
                start = trio.current_time()
                with trio.move_on_after(5) as waited:
                    await client.scrape(tracker, [HASH])
                assert waited.cancelled_caught
                assert trio.current_time() - start == pytest.approx(5)
                assert client.statistics().requests_in_flight == 1  # the announce's only
                nursery.cancel_scope.cancel()
            assert client.statistics().requests_in_flight == 0


async def test_announcers_beyond_max_requests_back_off_instead_of_ending(
    autojump_clock: trio.testing.MockClock,
) -> None:
    silent = trio.socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_DGRAM)
    with silent:
        await silent.bind(("127.0.0.1", 0))
        url = f"udp://127.0.0.1:{silent.getsockname()[1]}/announce"
        async with open_tracker_client(bind_v4="127.0.0.1", bind_v6=None, max_requests=1) as client:
            announcers = [
                Announcer(
                    client,
                    url,
                    bytes([n]) * 20,
                    peer_id=PEER_ID,
                    port=6881,
                    progress=lambda: AnnounceProgress(left=5),
                    timeout=10.0,
                )
                for n in range(1, 4)
            ]
            with trio.move_on_after(100):
                async with trio.open_nursery() as nursery:
                    for announcer in announcers:
                        nursery.start_soon(announcer.run)
    for announcer in announcers:
        assert announcer.status.failures >= 1
        assert not isinstance(announcer.status.last_error, LocalProtocolError)


# --- F3: an IPv6 server socket is IPv6-only --------------------------------------------------


class _RecordingSocket(stdlib_socket.socket):
    """A socket that notes its options and its bind, in order, in ``log``."""

    log: ClassVar[list[tuple[object, ...]]] = []

    def setsockopt(self, *args: Any) -> None:
        self.log.append(("setsockopt", *args))
        super().setsockopt(*args)

    def bind(self, address: Any) -> None:
        self.log.append(("bind", address))
        super().bind(address)


@needs_ipv6
async def test_the_servers_ipv6_socket_is_ipv6_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hunt's dual_bind.py: ``[::]:P`` took IPv4's port P too, so ``0.0.0.0:P`` failed
    with EADDRINUSE. Seen on ``::1`` (tests bind loopback only), where Linux makes a socket
    IPv6-only by itself once bound: what counts is the option set before the bind, which is
    what makes ``::`` IPv6-only."""
    log: list[tuple[object, ...]] = []
    monkeypatch.setattr(_RecordingSocket, "log", log)
    monkeypatch.setattr(stdlib_socket, "socket", _RecordingSocket)
    async with serve_tracker(("::1", 0)):
        pass
    v6only = ("setsockopt", stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 1)
    [bind] = [n for n, call in enumerate(log) if call[0] == "bind"]
    assert v6only in log[:bind]


@needs_ipv6
async def test_a_server_on_a_mapped_ipv4_address_still_serves_ipv4() -> None:
    """An IPv6-only socket cannot bind ``::ffff:127.0.0.1``: that one stays dual-stack."""
    async with serve_tracker(("::ffff:127.0.0.1", 0)) as server:
        port = server.address[1]
        with trio.fail_after(DEADLINE):
            async with _client("v4") as client:
                url = f"udp://127.0.0.1:{port}/announce"
                await client.announce(url, HASH, peer_id=PEER_ID, port=6881)
    assert server.statistics().announces == 1


# --- F4: stopped asks for no peers ----------------------------------------------------------


@dataclass
class NumWants:
    """A tracker handler recording the num_want of each announce, answering with peers."""

    store: SwarmStore = field(default_factory=SwarmStore)
    seen: list[tuple[AnnounceEvent, int]] = field(default_factory=list)

    def announce(
        self, request: AnnounceRequest, peer: bytes, num_want: int, now: float
    ) -> AnnounceAnswer:
        self.seen.append((AnnounceEvent(request.event), request.num_want))
        peers = tuple(bytes([127, 0, 0, n, 0x1A, 0xE1]) for n in range(1, 4))
        return AnnounceAnswer(0, 1, peers)

    def scrape(self, info_hashes: Sequence[bytes], now: float) -> Sequence[ScrapeStats]:
        return self.store.scrape(info_hashes, now)


async def test_stopped_asks_a_udp_tracker_for_no_peers() -> None:
    """The hunt's stopped_numwant.py: stopped went with num_want -1."""
    handler = NumWants()
    config = ServerConfig(rate_limit=None)
    async with serve_tracker(("127.0.0.1", 0), config=config, handler=handler) as server:
        host, port = server.address
        with trio.fail_after(DEADLINE):
            async with open_tracker_client(bind_v4=host, bind_v6=None) as client:
                announcer = Announcer(
                    client,
                    f"udp://{host}:{port}/announce",
                    HASH,
                    peer_id=PEER_ID,
                    port=6881,
                    progress=lambda: AnnounceProgress(left=5),
                    num_want=30,
                )
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(announcer.run)
                    while not announcer.status.started:  # answered: stopped is due on exit
                        await trio.sleep(0.01)
                    nursery.cancel_scope.cancel()
    assert handler.seen == [(AnnounceEvent.STARTED, 30), (AnnounceEvent.STOPPED, 0)]
    assert announcer.status.last_event is AnnounceEvent.STOPPED


@dataclass
class RecordingClient:
    """An :class:`~bip_utracker.AnnounceClient` (an HTTP tracker's, say) recording what it
    is asked to send."""

    asked: list[tuple[AnnounceEvent, int]] = field(default_factory=list)

    def check_tracker(self, tracker: str) -> None:
        """Every URL is fine."""

    async def announce(
        self,
        tracker: str,
        info_hash: InfoHash | bytes,
        *,
        peer_id: PeerId | bytes,
        port: int,
        uploaded: int,
        downloaded: int,
        left: int,
        event: AnnounceEvent,
        num_want: int,
    ) -> AnnounceResult:
        """Record the event and num_want; answer at once."""
        await trio.lowlevel.checkpoint()
        self.asked.append((event, num_want))
        tracker_address = PeerAddress.parse("127.0.0.1:1")
        return AnnounceResult(RequestId(0), tracker_address, HASH, 1800, 0, 0, ())


async def test_stopped_asks_any_other_client_for_no_peers() -> None:
    client = RecordingClient()
    announcer = Announcer(
        client,
        "http://tracker.test/announce",
        HASH,
        peer_id=PEER_ID,
        port=6881,
        progress=lambda: AnnounceProgress(left=5),
    )
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(announcer.run)
            while not announcer.status.started:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert client.asked == [(AnnounceEvent.STARTED, -1), (AnnounceEvent.STOPPED, 0)]
