"""The trio TrackerServer on loopback, talked to with raw UDP sockets and the codec."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
import trio
import trio.testing

from bip_handshake import PeerAddress
from bip_utracker._codec import (
    AnnounceEvent,
    AnnounceRequest,
    AnnounceResponse,
    ConnectRequest,
    ConnectResponse,
    ErrorResponse,
    Response,
    ScrapeRequest,
    ScrapeResponse,
    ScrapeStats,
    decode_response,
)
from bip_utracker._errors import TrackerError
from bip_utracker._server import RECEIVE_BATCH, serve_tracker
from bip_utracker._server_core import NOT_REGISTERED, Refusal, ServerConfig
from bip_utracker._swarm import AnnounceAnswer

HASH = b"\x11" * 20
OTHER = b"\x22" * 20


class Client:
    """A UDP socket that speaks to one tracker."""

    def __init__(self, sock: trio.socket.SocketType, tracker: tuple[str, int], family: int) -> None:
        self.sock = sock
        self.tracker = tracker
        self.family = family

    async def request(self, data: bytes) -> Response:
        await self.sock.sendto(data, self.tracker)
        with trio.fail_after(5):
            reply = await self.sock.recv(65536)
        return decode_response(reply, family=6 if self.family == socket.AF_INET6 else 4)

    async def connect(self) -> int:
        response = await self.request(ConnectRequest(1).encode())
        assert isinstance(response, ConnectResponse)
        return response.connection_id

    async def announce(self, info_hash: bytes = HASH, **kwargs: object) -> Response:
        fields: dict[str, object] = {
            "info_hash": info_hash,
            "peer_id": b"-XX0001-" + bytes(12),
            "downloaded": 0,
            "left": 1,
            "uploaded": 0,
            "event": AnnounceEvent.STARTED,
            "ip": 0,
            "key": 0,
            "num_want": -1,
            "port": 6881,
        }
        fields.update(kwargs)
        cid = await self.connect()
        return await self.request(AnnounceRequest(cid, 2, **fields).encode())  # type: ignore[arg-type]


async def client(tracker: tuple[str, int], host: str = "127.0.0.1") -> Client:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_DGRAM)
    await sock.bind((host, 0))
    return Client(sock, tracker, family)


async def test_announce_and_scrape_over_ipv4() -> None:
    async with serve_tracker(("127.0.0.1", 0), config=ServerConfig(rate_limit=None)) as server:
        host, port = server.address
        assert host == "127.0.0.1"
        assert port > 0
        first, second = await client(server.address), await client(server.address, "127.0.0.2")
        with first.sock, second.sock:
            assert await first.announce(left=0) == AnnounceResponse(2, 1800, 0, 1, ())
            response = await second.announce(port=7000)
            assert response == AnnounceResponse(
                2, 1800, 1, 1, (PeerAddress(IPv4Address("127.0.0.1"), 6881),)
            )
            cid = await first.connect()
            scrape = await first.request(ScrapeRequest(cid, 3, (HASH, OTHER)).encode())
            assert scrape == ScrapeResponse(3, (ScrapeStats(1, 0, 1), ScrapeStats(0, 0, 0)))
        stats = server.statistics()
        assert (stats.connects, stats.announces, stats.scrapes) == (3, 2, 1)
        assert (stats.swarms, stats.peers, stats.seeders, stats.leechers) == (1, 2, 1, 1)
        assert server.store is not None
        assert server.store.peers(HASH) == (
            PeerAddress(IPv4Address("127.0.0.1"), 6881),
            PeerAddress(IPv4Address("127.0.0.2"), 7000),
        )
        assert server.core.config.rate_limit is None
        assert server.send_failures == 0


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
async def test_announce_over_ipv6_gets_ipv6_peers() -> None:
    async with serve_tracker(("::1", 0)) as server:
        assert server.address[0] == "::1"
        first, second = await client(server.address, "::1"), await client(server.address, "::1")
        with first.sock, second.sock:
            await first.announce(port=1111)
            response = await second.announce(port=2222)
            assert isinstance(response, AnnounceResponse)
            assert response.peers == (PeerAddress(IPv6Address("::1"), 1111),)


async def test_garbage_is_dropped_and_counted() -> None:
    async with serve_tracker(("127.0.0.1", 0)) as server:
        one = await client(server.address)
        with one.sock:
            for garbage in (b"", b"hello", bytes(16), bytes(200)):
                await one.sock.sendto(garbage, server.address)
            assert isinstance(await one.request(ConnectRequest(9).encode()), ConnectResponse)
        stats = server.statistics()
        assert (stats.malformed, stats.connects, stats.datagrams) == (4, 1, 5)


async def test_allow_list_changes_at_once() -> None:
    async with serve_tracker(("127.0.0.1", 0)) as server:
        server.set_allowed_info_hashes([HASH])
        one = await client(server.address)
        with one.sock:
            assert await one.announce(OTHER) == ErrorResponse(2, NOT_REGISTERED)
            assert isinstance(await one.announce(HASH), AnnounceResponse)
            server.set_allowed_info_hashes(None)
            server.set_denied_info_hashes([HASH])
            assert isinstance(await one.announce(OTHER), AnnounceResponse)
            assert isinstance(await one.announce(HASH), ErrorResponse)


async def test_more_datagrams_than_a_batch() -> None:
    """Datagrams queued faster than one batch: every one is answered."""
    config = ServerConfig(rate_limit=None)
    async with serve_tracker(("127.0.0.1", 0), config=config) as server:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            sender.bind(("127.0.0.1", 0))
            # As many as both receive buffers surely hold (the system may cap them), so that
            # none is dropped while this task sends them all without letting the server run.
            room = min(
                sender.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                server._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            )
            count = min(3 * RECEIVE_BATCH + 7, room // 2048)
            for n in range(count):
                sender.sendto(ConnectRequest(n).encode(), server.address)
            sender.setblocking(False)
            seen: set[int] = set()
            with trio.fail_after(10):
                while len(seen) < count:
                    await trio.lowlevel.wait_readable(sender)
                    response = decode_response(sender.recv(100))
                    assert isinstance(response, ConnectResponse)
                    seen.add(response.transaction_id)
        assert server.statistics().connects == count


async def test_quiet_swarms_expire(autojump_clock: trio.testing.MockClock) -> None:
    config = ServerConfig(interval=100, peer_grace=20, expiry_interval=10)
    async with serve_tracker(("127.0.0.1", 0), config=config) as server:
        one = await client(server.address)
        with one.sock:
            await one.announce()
            assert server.statistics().swarms == 1
            await trio.sleep(115)
            assert server.statistics().swarms == 1
            await trio.sleep(20)
            stats = server.statistics()
            assert (stats.swarms, stats.peers) == (0, 0)


class Passkeys:
    """A custom handler: announces need a passkey in the URL."""

    def announce(
        self, request: AnnounceRequest, peer: bytes, num_want: int, now: float
    ) -> AnnounceAnswer | Refusal:
        if request.url_data != b"/secret/announce":
            return Refusal("unknown passkey")
        return AnnounceAnswer(seeders=1, leechers=0, peers=(peer,))

    def scrape(self, info_hashes: Sequence[bytes], now: float) -> Sequence[ScrapeStats] | Refusal:
        return [ScrapeStats(0, 0, 0)] * len(info_hashes)


async def test_custom_handler() -> None:
    async with serve_tracker(("127.0.0.1", 0), handler=Passkeys()) as server:
        assert server.store is None
        one = await client(server.address)
        with one.sock:
            assert await one.announce() == ErrorResponse(2, "unknown passkey")
            response = await one.announce(url_data=b"/secret/announce", port=4321)
            assert response == AnnounceResponse(
                2, 1800, 0, 1, (PeerAddress(IPv4Address("127.0.0.1"), 4321),)
            )


async def test_bind_failure_is_our_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        with pytest.raises(TrackerError, match="cannot bind") as caught:
            async with serve_tracker(taken.getsockname()):
                pass  # pragma: no cover
        assert isinstance(caught.value.__cause__, OSError)
    with pytest.raises(TrackerError, match="cannot bind"):
        async with serve_tracker(("no-such-host.invalid", 0)):
            pass  # pragma: no cover


async def test_replies_to_a_vanished_client_do_not_stop_the_server() -> None:
    async with serve_tracker(("127.0.0.1", 0)) as server:
        gone = await client(server.address)
        await gone.sock.sendto(ConnectRequest(1).encode(), server.address)
        gone.sock.close()  # the reply goes to a closed port (ICMP unreachable comes back)
        other = await client(server.address)
        with other.sock:
            assert isinstance(await other.request(ConnectRequest(2).encode()), ConnectResponse)


class _FlakySocket:
    """Stands in for the server socket in :meth:`TrackerServer._send`."""

    def __init__(self, outcomes: list[BaseException | None]) -> None:
        self.outcomes = outcomes
        self.sent: list[bytes] = []

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 1)

    def sendto(self, data: bytes, addr: object) -> int:
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        self.sent.append(data)
        return len(data)


def test_send_keeps_what_would_block_and_skips_unreachable_peers() -> None:
    import errno

    from bip_utracker._server import TrackerServer
    from bip_utracker._server_core import TrackerServerCore

    refused = OSError(errno.ECONNREFUSED, "refused")
    fake = _FlakySocket([None, refused, BlockingIOError(), None])
    server = TrackerServer(fake, TrackerServerCore())  # type: ignore[arg-type]
    replies = [(bytes([n]), ("127.0.0.1", n)) for n in range(4)]
    assert server._send(replies) == replies[2:]
    assert server._send(replies[2:]) == []
    assert fake.sent == [b"\x00", b"\x02", b"\x03"]
    assert server.send_failures == 1
    fake.outcomes = [OSError(errno.EBADF, "bad file descriptor")]
    with pytest.raises(OSError, match="bad file descriptor"):
        server._send(replies)


class _SocketProxy:
    """The server's socket, with scripted outcomes for its next sends."""

    def __init__(
        self,
        sock: socket.socket,
        outcomes: list[BaseException],
        receive_outcomes: list[BaseException] | None = None,
    ) -> None:
        self._sock = sock
        self.outcomes = outcomes
        self.receive_outcomes = receive_outcomes or []
        self.attempts = 0

    def fileno(self) -> int:
        return self._sock.fileno()

    def recvfrom_into(self, buffer: bytearray) -> tuple[int, Any]:
        if self.receive_outcomes:
            raise self.receive_outcomes.pop(0)
        return self._sock.recvfrom_into(buffer)

    def sendto(self, data: bytes, addr: Any) -> int:
        self.attempts += 1
        if self.outcomes:
            raise self.outcomes.pop(0)
        return self._sock.sendto(data, addr)


async def test_replies_wait_for_a_writable_socket() -> None:
    async with serve_tracker(("127.0.0.1", 0)) as server:
        # Swapped in before the server's task first runs (the body has not yielded yet).
        proxy = _SocketProxy(server._sock, [BlockingIOError()])
        server._sock = proxy  # type: ignore[assignment]
        one = await client(server.address)
        with one.sock:
            assert isinstance(await one.request(ConnectRequest(1).encode()), ConnectResponse)
        assert proxy.attempts == 2  # would block, then sent once writable


async def test_our_client_against_our_server() -> None:
    """bip_utracker's TrackerClient and TrackerServer agree on every exchange."""
    from bip_utracker._client import open_tracker_client
    from bip_utracker._errors import TrackerRejectedError

    config = ServerConfig(allowed_info_hashes=frozenset({HASH}))
    async with (
        serve_tracker(("127.0.0.1", 0), config=config) as server,
        open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as tracker_client,
    ):
        url = f"udp://127.0.0.1:{server.address[1]}/announce"
        peer_id = b"-XX0001-" + bytes(12)
        first = await tracker_client.announce(
            url, HASH, peer_id=peer_id, port=1111, left=0, event=AnnounceEvent.STARTED
        )
        assert (first.seeders, first.leechers, first.peers) == (1, 0, ())
        # The tracker keys peers by address: another port is another peer.
        second = await tracker_client.announce(url, HASH, peer_id=peer_id, port=2222, left=5)
        assert second.peers == (PeerAddress(IPv4Address("127.0.0.1"), 1111),)
        scraped = await tracker_client.scrape(url, [HASH, OTHER])
        assert scraped.files == (ScrapeStats(1, 0, 1), ScrapeStats(0, 0, 0))
        with pytest.raises(TrackerRejectedError, match=NOT_REGISTERED):
            await tracker_client.announce(url, OTHER, peer_id=peer_id, port=1111)
        await tracker_client.announce(
            url, HASH, peer_id=peer_id, port=1111, event=AnnounceEvent.STOPPED
        )
        assert server.statistics().peers == 1


async def test_a_transient_receive_error_is_skipped() -> None:
    import errno

    async with serve_tracker(("127.0.0.1", 0)) as server:
        refused = OSError(errno.ECONNREFUSED, "an ICMP error about an earlier reply")
        server._sock = _SocketProxy(server._sock, [], [refused])  # type: ignore[assignment]
        one = await client(server.address)
        with one.sock:
            assert isinstance(await one.request(ConnectRequest(1).encode()), ConnectResponse)


async def test_a_failing_socket_is_our_error() -> None:
    import errno

    with pytest.raises(TrackerError, match=r"socket .* failed") as caught:  # noqa: PT012
        async with serve_tracker(("127.0.0.1", 0)) as server:
            unreachable = OSError(errno.ECONNREFUSED, "refused")
            broken = OSError(errno.EBADF, "bad file descriptor")
            proxy = _SocketProxy(server._sock, [unreachable, broken])
            server._sock = proxy  # type: ignore[assignment]
            one = await client(server.address)
            with one.sock:
                for n in range(2):
                    await one.sock.sendto(ConnectRequest(n).encode(), server.address)
                await trio.sleep_forever()
    assert isinstance(caught.value.__cause__, OSError)
    assert server.send_failures == 1  # the unreachable peer only


async def test_the_body_s_exception_comes_out_unwrapped() -> None:
    with pytest.raises(KeyError, match="mine"):
        async with serve_tracker(("127.0.0.1", 0)):
            raise KeyError("mine")
