"""Rate limits spare local peers, as libtorrent's "local" peer class does.

Which addresses are local (libtorrent's ranges, edge to edge); a local peer unlimited next
to a remote one held to the limit, upload and download, without taking turns or tokens from
it; the switch (``limit_local_peers``) in the config and while running. The managers run on
trio's virtual clock over memory streams, with made-up peer addresses.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any

import pytest
import trio
import trio.testing
from _managers import handshake_with
from hypothesis import given
from hypothesis import strategies as st

from bip_handshake import Extensions
from bip_metainfo import InfoHash
from bip_peer._bandwidth import LOCAL_NETWORKS, default_burst, is_local_address
from bip_peer._connection import PeerConnection
from bip_peer._manager import (
    MessageReceived,
    Peer,
    PeerAdded,
    PeerManager,
    PeerManagerConfig,
    open_peer_manager,
)
from bip_peer._messages import NEED_DATA, Have, HaveAll, Interested, Piece, Request, Unchoke
from bip_peer._stats import LimiterStatistics

TORRENT = InfoHash(v1=b"\x33" * 20)
NUM_PIECES = 1024
BOTH = Extensions.EXTENSION_PROTOCOL | Extensions.FAST
BLOCK = bytes(range(256)) * 64  # 16 KiB
PIECE_MESSAGE = len(BLOCK) + 13
LOCAL = "10.1.2.3"
REMOTE = "203.0.113.7"  # not ours: a documentation address stands for the internet


# -- which addresses are local ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "local"),
    [
        # Each of libtorrent's ranges, first and last address, and the neighbours outside.
        ("10.0.0.0", True),
        ("10.255.255.255", True),
        ("9.255.255.255", False),
        ("11.0.0.0", False),
        ("172.16.0.0", True),
        ("172.31.255.255", True),  # the whole /12 (libtorrent once had a /16 here)
        ("172.15.255.255", False),
        ("172.32.0.0", False),
        ("192.168.0.0", True),
        ("192.168.255.255", True),
        ("192.167.255.255", False),
        ("192.169.0.0", False),
        ("169.254.0.1", True),
        ("169.254.255.255", True),
        ("169.253.255.255", False),
        ("127.0.0.1", True),
        ("127.255.255.254", True),
        ("128.0.0.0", False),
        ("fc00::", True),
        ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", True),
        ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", False),
        ("fe00::", False),
        ("fe80::1", True),
        ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", True),
        ("fec0::", False),
        ("::1", True),
        ("::2", False),
        ("::", False),
        # IPv4 as a dual-stack socket reports it: as the IPv4 address.
        ("::ffff:127.0.0.1", True),
        ("::ffff:192.168.1.1", True),
        ("::ffff:8.8.8.8", False),
        # Private in Python's sense, yet not on our network.
        ("192.0.2.1", False),
        ("198.18.0.1", False),
        ("100.64.0.1", False),
        ("2001:db8::1", False),
        ("0.0.0.0", False),
        ("255.255.255.255", False),
        ("8.8.8.8", False),
        ("2606:4700::1111", False),
    ],
)
def test_local_addresses_are_libtorrents(host: str, local: bool) -> None:
    assert is_local_address(ip_address(host)) is local


def test_loopback_and_scoped_link_local_are_local() -> None:
    assert IPv4Network("127.0.0.0/8") in LOCAL_NETWORKS
    assert IPv6Network("::1/128") in LOCAL_NETWORKS
    assert is_local_address(IPv6Address("fe80::1%eth0"))


@given(st.ip_addresses(v=4))
def test_an_ipv4_address_and_its_mapped_form_agree(host: IPv4Address) -> None:
    local = is_local_address(host)
    assert is_local_address(IPv6Address(f"::ffff:{host}")) is local
    assert local is any(host in network for network in LOCAL_NETWORKS)


@pytest.mark.parametrize("host", ["127.0.0.1", b"\x7f\0\0\1", 2130706433, None])
def test_a_host_must_be_an_address(host: object) -> None:
    with pytest.raises(TypeError, match="IPv4Address or IPv6Address"):
        is_local_address(host)  # type: ignore[arg-type]


# -- the option -------------------------------------------------------------------------------


def test_local_peers_are_exempt_by_default() -> None:
    assert PeerManagerConfig().limit_local_peers is False
    assert PeerManagerConfig(limit_local_peers=True).limit_local_peers is True


def settings(manager: PeerManager) -> tuple[bool, tuple[float | None, float | None]]:
    """The manager's switch and limits now (a call: mypy narrows a property once compared)."""
    return manager.limit_local_peers, manager.rate_limits


@pytest.mark.parametrize("value", [1, 0, "yes", None, 1.0])
async def test_the_option_is_a_bool(value: object) -> None:
    with pytest.raises(TypeError, match="limit_local_peers must be a bool"):
        PeerManagerConfig(limit_local_peers=value)  # type: ignore[arg-type]
    async with open_peer_manager(PeerManagerConfig(upload_rate_limit=1000)) as manager:
        with pytest.raises(TypeError, match="limit_local_peers"):
            manager.set_rate_limits(upload=5000, limit_local_peers=value)  # type: ignore[arg-type]
        assert settings(manager) == (False, (1000, None))  # nothing was changed


async def test_set_rate_limits_switches_the_option_and_keeps_the_rest() -> None:
    config = PeerManagerConfig(upload_rate_limit=1000, download_rate_limit=2000)
    async with open_peer_manager(config) as manager:
        manager.set_rate_limits(limit_local_peers=True)
        assert settings(manager) == (True, (1000, 2000))
        manager.set_rate_limits(upload=None)
        assert settings(manager) == (True, (None, 2000))  # left out: kept
        manager.set_rate_limits(limit_local_peers=False, download=5)
        assert settings(manager) == (False, (None, 5))
        assert manager.config.limit_local_peers is False  # the config keeps the start


# -- the manager ------------------------------------------------------------------------------


class Remote:
    """The far end of a connection: a PeerConnection over a memory stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.connection = PeerConnection(
            num_pieces=NUM_PIECES, info_hash=TORRENT, our_extensions=BOTH, their_extensions=BOTH
        )
        self.received = 0

    async def send(self, *messages: Any) -> None:
        await self.stream.send_all(b"".join(self.connection.send(m) for m in messages))

    async def receive(self) -> Any:
        while True:
            event = self.connection.next_event()
            if event is not NEED_DATA:
                return event
            data = await self.stream.receive_some()
            if not data:
                raise EOFError
            self.received += len(data)
            self.connection.receive_data(data)

    async def receive_until(self, kind: type) -> Any:
        while not isinstance(message := await self.receive(), kind):
            pass
        return message


@asynccontextmanager
async def manager_with(
    hosts: Sequence[str], config: PeerManagerConfig
) -> AsyncIterator[tuple[PeerManager, list[Peer], list[Remote]]]:
    async with open_peer_manager(config) as manager:
        peers, remotes = [], []
        for n, host in enumerate(hosts, 1):
            ours, far = trio.testing.memory_stream_pair()
            peers.append(
                manager.add_peer(
                    handshake_with(ours, host, n, info_hash=TORRENT), num_pieces=NUM_PIECES
                )
            )
            remotes.append(Remote(far))
        yield manager, peers, remotes


async def serve(manager: PeerManager) -> None:
    """The manager's side of an upload: have-all and unchoke, then a block per request
    (a task per peer, so that one peer's full send queue holds up only that peer)."""

    async def answer(peer: Peer, queued: trio.MemoryReceiveChannel[Request]) -> None:
        async for request in queued:
            await manager.send(peer, Piece(request.index, request.begin, BLOCK))

    async with trio.open_nursery() as nursery:
        channels: dict[Peer, trio.MemorySendChannel[Request]] = {}
        async for event in manager.events():
            if isinstance(event, PeerAdded):
                await manager.send(event.peer, HaveAll())
                await manager.send(event.peer, Unchoke())
                channels[event.peer], queued = trio.open_memory_channel[Request](math.inf)
                nursery.start_soon(answer, event.peer, queued)
            elif isinstance(event, MessageReceived) and isinstance(event.message, Request):
                channels[event.peer].send_nowait(event.message)


def requests(count: int) -> Iterator[Request]:
    return (Request(i // 4, (i % 4) * len(BLOCK), len(BLOCK)) for i in range(count))


async def leech(remote: Remote, blocks: int) -> float:
    """Ask the manager for ``blocks`` blocks; returns the time the last one arrived."""
    await remote.receive_until(Unchoke)
    await remote.send(Interested(), *requests(blocks))
    for _ in range(blocks):
        piece = await remote.receive_until(Piece)
        assert bytes(piece.block) == BLOCK
    return trio.current_time()


async def test_a_local_peer_uploads_unlimited_beside_a_remote_one_held_to_the_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rate = 100_000
    config = PeerManagerConfig(upload_rate_limit=rate)
    async with (
        manager_with([LOCAL, REMOTE], config) as (manager, _peers, (local, remote)),
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(serve, manager)
        start = trio.current_time()
        ends: dict[str, float] = {}

        async def timed(name: str, far: Remote, blocks: int) -> None:
            ends[name] = await leech(far, blocks) - start

        async with trio.open_nursery() as leechers:
            leechers.start_soon(timed, "local", local, 400)  # 6.5 MB: 65 s at the limit
            leechers.start_soon(timed, "remote", remote, 60)
        nursery.cancel_scope.cancel()
        stats = manager.statistics()
    assert ends["local"] == 0.0  # memory streams: no time at all
    # The remote peer alone in the limiter, as if the local one were not there.
    burst = default_burst(rate)
    assert ends["remote"] == pytest.approx((remote.received - burst) / rate, rel=0.03)
    upload = stats.upload_limiter
    assert upload.granted == remote.received  # every token went to the remote peer
    assert upload.exempt == local.received
    assert stats.bytes_sent == local.received + remote.received
    assert stats.download_limiter == LimiterStatistics()  # no limit: nothing counted


async def test_a_local_peer_downloads_unlimited_beside_a_remote_one_held_to_the_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rate = 50_000
    config = PeerManagerConfig(download_rate_limit=rate)
    async with manager_with([LOCAL, REMOTE], config) as (manager, peers, remotes):
        events = manager.events()
        for far in remotes:
            await far.send(HaveAll(), Unchoke())
        for _ in range(2 * 3):  # added, have-all, unchoke
            await events.__anext__()
        blocks = list(requests(40))
        for peer in peers:
            for request in blocks:
                await manager.send(peer, request)
        for far in remotes:
            for _ in blocks:
                await far.receive_until(Request)
        start = trio.current_time()
        for far in remotes:  # both peers send everything at once
            await far.send(*(Piece(r.index, r.begin, BLOCK) for r in blocks))
        done: dict[Peer, float] = {}
        got = dict.fromkeys(peers, 0)
        async for event in events:
            if isinstance(event, MessageReceived) and isinstance(event.message, Piece):
                got[event.peer] += 1
                if got[event.peer] == len(blocks):
                    done[event.peer] = trio.current_time() - start
                    if len(done) == 2:
                        break
        stats = manager.statistics()
        assert manager._peers[peers[0]].download_quota == 0  # exempt: it holds no tokens
    sent = len(blocks) * PIECE_MESSAGE
    assert done[peers[0]] == 0.0
    assert done[peers[1]] == pytest.approx((sent - default_burst(rate)) / rate, rel=0.05)
    download = stats.download_limiter
    assert download.exempt == stats.peers[peers[0]].bytes_received
    assert download.granted <= stats.peers[peers[1]].bytes_received + 2 * 1024 + PIECE_MESSAGE


async def test_exempt_bytes_are_counted_only_under_a_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        manager_with(["::1", "fd12::34"], PeerManagerConfig()) as (manager, _peers, remotes),
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(serve, manager)
        for far in remotes:
            await leech(far, 20)
        nursery.cancel_scope.cancel()
        stats = manager.statistics()
    assert stats.upload_limiter == stats.download_limiter == LimiterStatistics()


async def test_every_local_range_is_exempt_and_a_remote_ipv6_peer_is_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hosts = ["127.0.0.1", "::1", "fd00::7", "fe80::9", "::ffff:192.168.0.2", "2001:db8::5"]
    config = PeerManagerConfig(upload_rate_limit=10_000)
    async with manager_with(hosts, config) as (manager, peers, _remotes):
        exempt = [manager._peers[peer].exempt for peer in peers]
    assert exempt == [True, True, True, True, True, False]


async def test_local_peers_limited_with_the_option(autojump_clock: trio.testing.MockClock) -> None:
    rate = 100_000
    config = PeerManagerConfig(upload_rate_limit=rate, limit_local_peers=True)
    async with (
        manager_with(["127.0.0.1"], config) as (manager, _peers, (local,)),
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(serve, manager)
        start = trio.current_time()
        end = await leech(local, 60)
        nursery.cancel_scope.cancel()
        stats = manager.statistics()
    assert end - start == pytest.approx((local.received - default_burst(rate)) / rate, rel=0.03)
    assert stats.upload_limiter.exempt == 0
    assert stats.upload_limiter.granted == local.received


async def test_exempting_local_peers_while_running_releases_their_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Limited at first, a local peer crawls at 10 kB/s beside a remote one; exempted, its
    writer goes on at once (the remote peer still at the limit), and limited again, it
    crawls again."""
    rate = 10_000
    config = PeerManagerConfig(upload_rate_limit=rate, limit_local_peers=True)
    async with (
        manager_with([LOCAL, REMOTE], config) as (manager, _peers, (local, remote)),
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(serve, manager)
        nursery.start_soon(leech, local, 400)
        nursery.start_soon(leech, remote, 400)
        await trio.sleep(20)
        assert local.received + remote.received == pytest.approx(
            rate * 20 + default_burst(rate), rel=0.05
        )
        assert manager.statistics().upload_limiter.waiting == 2
        before = remote.received
        manager.set_rate_limits(limit_local_peers=False)
        start = trio.current_time()
        await trio.testing.wait_all_tasks_blocked()  # before the clock may move
        assert local.received >= 400 * PIECE_MESSAGE
        assert trio.current_time() == start  # the local peer's rest went at once
        assert not manager._peers[_peers[0]].limit_waits
        await trio.sleep(10)
        # The remote peer alone in the limiter now: all of it.
        assert remote.received - before == pytest.approx(rate * 10, rel=0.1)
        nursery.cancel_scope.cancel()
        stats = manager.statistics()
    assert stats.upload_limiter.exempt > 300 * PIECE_MESSAGE


async def test_limiting_local_peers_while_running(autojump_clock: trio.testing.MockClock) -> None:
    rate = 20_000
    config = PeerManagerConfig(upload_rate_limit=rate)
    async with (
        manager_with([LOCAL], config) as (manager, _peers, (local,)),
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(serve, manager)
        await leech(local, 50)
        assert trio.current_time() == 0.0
        manager.set_rate_limits(limit_local_peers=True)
        received = local.received
        start = trio.current_time()
        await local.send(*(Request(r.index + 20, r.begin, r.length) for r in requests(30)))
        for _ in range(30):
            await local.receive_until(Piece)
        elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert elapsed == pytest.approx(
        (local.received - received - default_burst(rate)) / rate, rel=0.05
    )


async def test_exempting_a_reader_gives_its_tokens_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The quota a local reader holds goes back to the limiter when it is exempted, and the
    read under way (asked for that quota) is counted as exempt, not left as a debt."""
    config = PeerManagerConfig(download_rate_limit=100, limit_local_peers=True)
    async with manager_with([LOCAL, REMOTE], config) as (manager, (local_peer, _), (local, _)):
        limiter = manager._download_limiter
        events = manager.events()
        for _ in range(2):
            assert isinstance(await events.__anext__(), PeerAdded)
        await trio.testing.wait_all_tasks_blocked()
        tasks = manager._peers
        held = [task.download_quota for task in tasks.values()]
        assert min(held) > 0  # both readers wait for data with a little quota
        now = trio.current_time()
        before = limiter._bucket.available(now)
        manager.set_rate_limits(limit_local_peers=False)
        assert tasks[local_peer].download_quota == 0
        assert limiter._bucket.available(now) - before == held[0]
        start = trio.current_time()
        await local.send(*(Have(i % NUM_PIECES) for i in range(5000)))  # 45 kB: 7 min at 100 B/s
        for _ in range(5000):
            event = await events.__anext__()
            assert isinstance(event, MessageReceived)
            assert event.peer is local_peer
        assert trio.current_time() == start
        assert tasks[local_peer].download_quota == 0
        stats = limiter.statistics()
    assert stats.exempt == 5000 * 9
    assert stats.granted == sum(held)  # the first grants, nothing since


async def test_exempting_a_reader_waiting_in_the_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A local reader queued behind a remote one on an empty bucket leaves the queue when
    exempted, taking nothing, and reads what waits for it at once; the remote reader goes
    on at the whole rate."""
    rate = 1000
    config = PeerManagerConfig(download_rate_limit=rate, limit_local_peers=True)
    async with (
        manager_with([REMOTE, LOCAL], config) as (manager, peers, (remote, local)),
        trio.open_nursery() as nursery,
    ):
        remote_peer, local_peer = peers
        got = dict.fromkeys(peers, 0)

        async def consume() -> None:
            async for event in manager.events():
                if isinstance(event, MessageReceived):
                    got[event.peer] += 1

        nursery.start_soon(consume)
        await remote.send(*(Have(i % NUM_PIECES) for i in range(4000)))  # 36 kB: 20 s
        await trio.sleep(5)  # the bucket is empty: the remote reader waits for tokens
        await local.send(*(Have(i % NUM_PIECES) for i in range(1000)))  # 9 kB
        await trio.sleep(1)
        await trio.testing.wait_all_tasks_blocked()
        assert got[local_peer] < 1000  # held to the limit, taking turns with the remote
        limiter = manager._download_limiter
        assert limiter.statistics().waiting == 2
        assert manager._peers[local_peer].limit_waits  # its reader is in the queue
        manager.set_rate_limits(limit_local_peers=False)
        start = trio.current_time()
        await trio.testing.wait_all_tasks_blocked()  # before the clock may move
        assert got[local_peer] == 1000
        assert trio.current_time() == start
        assert limiter.statistics().waiting == 1  # the remote reader only
        assert not manager._peers[local_peer].limit_waits
        assert manager._peers[local_peer].download_quota == 0
        before = got[remote_peer]
        await trio.sleep(10)
        assert (got[remote_peer] - before) * 9 == pytest.approx(rate * 10, rel=0.15)
        nursery.cancel_scope.cancel()
