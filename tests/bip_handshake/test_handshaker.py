"""The trio Handshaker: loopback TCP (IPv4, IPv6) and in-memory streams on a virtual clock."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address
from typing import Any

import pytest
import trio
import trio.testing
from _streams import read_until_closed

from bip_handshake import (
    EncryptionPolicy,
    Extensions,
    Handshake,
    MSEEstablished,
    MSEInitiator,
    MSEReceiver,
    PeerAddress,
    PeerId,
    RemoteProtocolError,
)
from bip_handshake._handshaker import (
    CompletedHandshake,
    Direction,
    HandshakeFilters,
    Handshaker,
    ListenError,
    PeerSink,
    open_handshaker,
)
from bip_metainfo import InfoHash

TORRENT_ID = b"\x11" * 20
OTHER_ID = b"\x22" * 20
TORRENT = InfoHash(v1=TORRENT_ID)
OTHER = InfoHash(v1=OTHER_ID)
HYBRID = InfoHash(v1=b"\x33" * 20, v2=b"\x44" * 32)
PEER_A = PeerId(b"-BP0100-aaaaaaaaaaaa")
PEER_B = PeerId(b"-BP0100-bbbbbbbbbbbb")
REMOTE = PeerId(b"-XX0000-remoteremote")
ADDR = PeerAddress(IPv4Address("10.0.0.1"), 6881)


def addr(n: int, port: int = 6881) -> PeerAddress:
    return PeerAddress(IPv4Address(f"10.0.{n // 256}.{n % 256 + 1}"), port)


async def next_peer(handshaker: Handshaker) -> CompletedHandshake:
    with trio.fail_after(5):
        return await handshaker.completed().receive()


def memory_handshaker(**kwargs: Any) -> Any:
    """A plaintext handshaker with no listener, for in-memory streams."""
    kwargs.setdefault("peer_id", PEER_A)
    kwargs.setdefault("encryption", EncryptionPolicy.PLAINTEXT_ONLY)
    return open_handshaker(listen=[], **kwargs)


@asynccontextmanager
async def inbound(handshaker: Handshaker, address: PeerAddress = ADDR) -> AsyncIterator[Any]:
    """The remote end of an in-memory inbound connection."""
    ours, theirs = trio.testing.memory_stream_pair()
    handshaker.accept_stream(theirs, address)
    try:
        yield ours
    finally:
        await trio.aclose_forcefully(ours)


def remote_handshake(
    info_hash: bytes = b"\x11" * 20,
    peer_id: PeerId = REMOTE,
    extensions: Extensions = Extensions.FAST,
) -> bytes:
    return Handshake(extensions, info_hash, peer_id.value).to_bytes()


# -- two handshakers over loopback ---------------------------------------------


async def test_a_completion_is_counted_before_the_receiver_sees_it() -> None:
    """statistics() read right after receiving a peer already counts it (trio may run the
    receiver before the delivering task resumes: the count must not wait for that)."""
    async with (
        open_handshaker(peer_id=PEER_A, listen=[]) as a,
        open_handshaker(peer_id=PEER_B, listen=[("127.0.0.1", 0)]) as b,
    ):
        a.register(TORRENT)
        b.register(TORRENT)
        [b_address] = b.listen_addresses
        for round_ in range(1, 9):  # trio orders runnable tasks at random: try it both ways
            assert a.connect(TORRENT, b_address)
            out = await next_peer(a)  # waiting before the handshake completes
            assert a.statistics().outbound_completed == round_
            assert a.statistics().encrypted == round_
            into = await next_peer(b)
            assert b.statistics().inbound_completed == round_
            await out.aclose()
            await into.aclose()
            await trio.testing.wait_all_tasks_blocked()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_two_handshakers_meet_over_tcp(host: str) -> None:
    ext_a = Extensions.FAST | Extensions.EXTENSION_PROTOCOL
    ext_b = Extensions.DHT | Extensions.FAST
    try:
        async with (
            open_handshaker(peer_id=PEER_A, listen=[(host, 0)], extensions=ext_a) as a,
            open_handshaker(peer_id=PEER_B, listen=[(host, 0)], extensions=ext_b) as b,
        ):
            a.register(TORRENT)
            b.register(TORRENT)
            [b_address] = b.listen_addresses
            assert b_address.port != 0
            assert str(b_address.host) == host
            assert a.connect(TORRENT, b_address)
            out, into = await next_peer(a), await next_peer(b)
            try:
                assert out.direction == "outbound"
                assert into.direction == "inbound"
                assert (out.peer_id, into.peer_id) == (PEER_B, PEER_A)
                assert (out.extensions, into.extensions) == (ext_b, ext_a)
                assert out.common == into.common == Extensions.FAST
                assert out.info_hash == into.info_hash == TORRENT
                assert out.swarm_id == TORRENT.v1
                assert out.address == b_address
                assert into.address.host == b_address.host
                # Both prefer encryption (the default): MSE negotiates RC4.
                assert out.encryption == into.encryption == "rc4"
                # The streams are live: the peer wire protocol can start.
                await out.stream.send_all(b"\x00\x00\x00\x00")
                assert into.trailing + await into.stream.receive_some() == b"\x00\x00\x00\x00"
            finally:
                await out.aclose()
                await into.aclose()
            stats_a, stats_b = a.statistics(), b.statistics()
    except ListenError:  # pragma: no cover - no IPv6 loopback on this machine
        pytest.skip(f"cannot listen on {host}")
    assert stats_a.outbound_attempts == stats_a.outbound_completed == 1
    assert stats_b.inbound_attempts == stats_b.inbound_completed == 1
    assert stats_a.failures == stats_b.failures == 0
    assert stats_a.in_flight == stats_b.in_flight == 0
    assert stats_a.encrypted == stats_b.encrypted == 1


async def test_hybrid_torrent_sets_v2_upgrade_and_matches_both_swarm_ids() -> None:
    async with (
        open_handshaker(peer_id=PEER_A) as a,
        open_handshaker(peer_id=PEER_B) as b,
    ):
        a.register(HYBRID)
        b.register(HYBRID)
        a.discovered(HYBRID.v2 or b"", b.listen_addresses, "test")  # the full v2 hash
        out, into = await next_peer(a), await next_peer(b)
        assert out.info_hash == into.info_hash == HYBRID
        assert Extensions.V2_UPGRADE in out.common
        await out.aclose()
        await into.aclose()


async def test_connecting_to_ourselves_is_counted() -> None:
    async with open_handshaker(peer_id=PEER_A) as a:
        a.register(TORRENT)
        a.connect(TORRENT, a.listen_addresses[0])
        await trio.sleep(0.5)
        with trio.fail_after(5):
            while a.statistics().self_connection < 2:
                await trio.sleep(0.01)
        stats = a.statistics()
    assert stats.completed == 0
    assert stats.in_flight == 0


async def test_refused_port_is_connect_failed() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with open_handshaker(peer_id=PEER_A, listen=[]) as a:
        a.register(TORRENT)
        a.connect(TORRENT, PeerAddress(IPv4Address("127.0.0.1"), port))
        with trio.fail_after(5):
            while a.statistics().connect_failed < 1:
                await trio.sleep(0.01)


async def test_listen_error() -> None:
    with pytest.raises(ListenError):
        async with open_handshaker(listen=[("192.0.2.1", 0)]):
            pass  # pragma: no cover


# -- inbound, in memory ----------------------------------------------------------


async def test_inbound_delivers_trailing_bytes() -> None:
    async with memory_handshaker(extensions=Extensions.DHT) as hs, inbound(hs) as remote:
        hs.register(TORRENT)
        await remote.send_all(remote_handshake() + b"\x00\x00\x00\x05\x04abcd")
        peer = await next_peer(hs)
        assert peer.trailing == b"\x00\x00\x00\x05\x04abcd"
        assert peer.address == ADDR
        assert peer.peer_id == REMOTE
        assert peer.extensions == Extensions.FAST
        assert peer.our_extensions == Extensions.DHT
        answer = Handshake.from_bytes(await remote.receive_some(68))
        assert answer == Handshake(Extensions.DHT, TORRENT.v1 or b"", PEER_A.value)
        await peer.aclose()
        assert hs.statistics().inbound_completed == 1


async def test_unknown_info_hash_is_refused_without_answer() -> None:
    async with memory_handshaker() as hs, inbound(hs) as remote:
        hs.register(OTHER)
        await remote.send_all(remote_handshake())
        assert await read_until_closed(remote) == b""
        stats = hs.statistics()
    assert stats.unknown_info_hash == 1
    assert stats.inbound_attempts == 1
    assert stats.failures == 1


BAD_INPUTS: dict[str, tuple[bytes, str]] = {
    "garbage": (b"GET / HTTP/1.1\r\n\r\n", "protocol_error"),
    "wrong protocol string": (b"\x13BitTorrent protocoX" + bytes(48), "protocol_error"),
    "truncated": (remote_handshake()[:40], "connection_lost"),
    "truncated peer id": (remote_handshake()[:60], "connection_lost"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
async def test_bad_input_is_closed_and_counted(name: str) -> None:
    data, counter = BAD_INPUTS[name]
    async with memory_handshaker() as hs:
        hs.register(TORRENT)
        async with inbound(hs, addr(1)) as bad, inbound(hs, addr(2)) as good:
            await bad.send_all(data)
            await bad.send_eof()
            await good.send_all(remote_handshake())
            peer = await next_peer(hs)
            assert peer.address == addr(2)
            await peer.aclose()
            await read_until_closed(bad)
        stats = hs.statistics()
    assert getattr(stats, counter) == 1
    assert stats.failures == 1
    assert stats.inbound_completed == 1
    assert stats.inbound_attempts == stats.completed + stats.failures == 2


async def test_slowloris_hits_the_handshake_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async with memory_handshaker(handshake_timeout=20) as hs:
        hs.register(TORRENT)
        async with inbound(hs, addr(1)) as slow, inbound(hs, addr(2)) as good:

            async def dribble() -> None:
                for byte in remote_handshake():
                    try:
                        await slow.send_all(bytes([byte]))
                    except trio.BrokenResourceError:
                        return
                    await trio.sleep(60)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(dribble)
                start = trio.current_time()
                await trio.sleep(10)  # the slow peer is half-way through its timeout
                await good.send_all(remote_handshake())
                peer = await next_peer(hs)
                await peer.aclose()
                assert await read_until_closed(slow) == b""
                assert 20 <= trio.current_time() - start < 21
        stats = hs.statistics()
    assert stats.handshake_timeout == 1
    assert stats.inbound_completed == 1


async def test_too_many_inbound_are_closed_at_once() -> None:
    async with memory_handshaker(max_concurrent=2) as hs:
        hs.register(TORRENT)
        async with inbound(hs, addr(1)), inbound(hs, addr(2)):
            await trio.testing.wait_all_tasks_blocked()
            async with inbound(hs, addr(3)) as third:
                assert await read_until_closed(third) == b""
            stats = hs.statistics()
            assert stats.over_limit == 1
            assert stats.in_flight == 2


# -- outbound, in memory -----------------------------------------------------------


class FakeNetwork:
    """A dialler whose peers answer with a scripted handshake (or never answer)."""

    def __init__(self, peer_id: PeerId = REMOTE, answer: bool = True) -> None:
        self.peer_id = peer_id
        self.answer = answer
        self.dialled: list[PeerAddress] = []
        self.active = 0
        self.max_active = 0
        self.release = trio.Event()
        self.block = False
        self.fail = False
        self.remotes: list[trio.abc.Stream] = []

    async def dial(self, address: PeerAddress) -> trio.abc.Stream:
        self.dialled.append(address)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.block:
                await self.release.wait()
            if self.fail:
                raise OSError("refused")
        finally:
            self.active -= 1
        ours, theirs = trio.testing.memory_stream_pair()
        self.remotes.append(theirs)
        if self.answer:
            await theirs.send_all(remote_handshake(peer_id=self.peer_id))
        return ours


async def test_outbound_in_memory_sends_our_handshake() -> None:
    net = FakeNetwork()
    async with memory_handshaker(dial=net.dial, extensions=Extensions.FAST) as hs:
        hs.register(TORRENT)
        hs.discovered(TORRENT.v1 or b"", [ADDR], "tracker")
        peer = await next_peer(hs)
        assert peer.direction == "outbound"
        assert peer.address == ADDR
        sent = await net.remotes[0].receive_some(68)
        assert Handshake.from_bytes(sent) == Handshake(
            Extensions.FAST, TORRENT.v1 or b"", PEER_A.value
        )
        await peer.aclose()


@pytest.mark.parametrize(
    ("discovered_as", "expected"),
    [
        (HYBRID, HYBRID.v1),
        (HYBRID.v1, HYBRID.v1),
        (HYBRID.v2_truncated, HYBRID.v2_truncated),
        (HYBRID.v2, HYBRID.v2_truncated),
    ],
)
async def test_dials_with_the_swarm_id_the_peer_was_found_under(
    discovered_as: InfoHash | bytes, expected: bytes
) -> None:
    net = FakeNetwork(answer=False)
    async with memory_handshaker(dial=net.dial) as hs:
        hs.register(HYBRID)
        hs.discovered(discovered_as, [ADDR], "dht")
        await trio.testing.wait_all_tasks_blocked()
        sent = Handshake.from_bytes(await net.remotes[0].receive_some(68))
    assert sent.info_hash == expected
    assert Extensions.V2_UPGRADE in sent.extensions


async def test_dials_are_deduplicated_while_pending() -> None:
    net = FakeNetwork()
    net.block = True
    net.fail = True
    async with memory_handshaker(dial=net.dial) as hs:
        hs.register(TORRENT)
        hs.register(OTHER)
        mapped = PeerAddress.parse("[::ffff:10.0.0.1]:6881")
        hs.discovered(TORRENT, [ADDR, ADDR, mapped], "dht")
        hs.discovered(OTHER, [ADDR], "dht")  # another torrent: another connection
        assert not hs.connect(TORRENT, ADDR)
        await trio.testing.wait_all_tasks_blocked()
        assert net.dialled == [ADDR, ADDR]
        assert hs.statistics().dropped_duplicate == 3
        net.release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert hs.statistics().connect_failed == 2
        assert hs.connect(TORRENT, ADDR)  # no longer pending: may be dialled again
        await trio.testing.wait_all_tasks_blocked()
        assert len(net.dialled) == 3


async def test_delivered_pairs_are_not_dialled_again_until_closed() -> None:
    net = FakeNetwork()
    async with memory_handshaker(dial=net.dial) as hs:
        hs.register(TORRENT)
        assert hs.connect(TORRENT, ADDR)
        peer = await next_peer(hs)
        mapped = PeerAddress.parse("[::ffff:10.0.0.1]:6881")
        assert not hs.connect(TORRENT, ADDR)  # connected: not dialled twice
        hs.discovered(TORRENT, [ADDR, mapped], "dht")
        await trio.testing.wait_all_tasks_blocked()
        assert net.dialled == [ADDR]
        assert hs.statistics().dropped_duplicate == 3
        await peer.aclose()  # closing releases the pair
        assert hs.connect(TORRENT, ADDR)
        again = await next_peer(hs)
        assert net.dialled == [ADDR, ADDR]
        await again.stream.aclose()  # closing the stream itself releases it too
        hs.discovered(TORRENT, [ADDR], "dht")
        third = await next_peer(hs)
        assert len(net.dialled) == 3
        assert hs.statistics().dropped_duplicate == 3
        await third.aclose()


async def test_inbound_duplicate_of_a_delivered_pair_is_refused() -> None:
    net = FakeNetwork()
    async with memory_handshaker(dial=net.dial) as hs:
        hs.register(TORRENT)
        assert hs.connect(TORRENT, ADDR)
        peer = await next_peer(hs)
        async with inbound(hs) as remote:
            await remote.send_all(remote_handshake())
            assert await read_until_closed(remote) == b""  # refused without an answer
        stats = hs.statistics()
        assert stats.dropped_duplicate == 1
        assert stats.inbound_attempts == stats.failures == 1
        await peer.aclose()
        # Released: the same peer may now connect to us.
        async with inbound(hs) as remote:
            await remote.send_all(remote_handshake())
            into = await next_peer(hs)
            assert into.direction == "inbound"
        # ...and while that inbound connection is open, we do not dial it.
        assert not hs.connect(TORRENT, ADDR)
        assert hs.statistics().dropped_duplicate == 2
        await into.aclose()
        assert hs.connect(TORRENT, ADDR)
        await (await next_peer(hs)).aclose()


async def test_shutdown_releases_delivered_pairs() -> None:
    net = FakeNetwork()
    async with memory_handshaker(dial=net.dial) as hs:
        hs.register(TORRENT)
        assert hs.connect(TORRENT, ADDR)
        peer = await next_peer(hs)
    assert not hs._taken
    await peer.aclose()  # closing after shutdown is harmless


async def test_concurrency_limit_and_queue_bound(autojump_clock: trio.testing.MockClock) -> None:
    net = FakeNetwork(answer=False)
    async with memory_handshaker(
        dial=net.dial, max_concurrent=3, max_queued=10, handshake_timeout=5
    ) as hs:
        hs.register(TORRENT)
        hs.discovered(TORRENT, [addr(n) for n in range(12)], "tracker")
        await trio.testing.wait_all_tasks_blocked()
        stats = hs.statistics()
        assert stats.in_flight == 3
        assert stats.queued <= 10
        assert stats.dropped_queue_full == 2  # all 12 arrive before the dispatcher runs
        with trio.fail_after(100):
            while hs.statistics().handshake_timeout < 10:
                await trio.sleep(1)
        stats = hs.statistics()
    assert net.max_active <= 3
    assert len(net.dialled) == 10
    assert stats.outbound_attempts == 10
    assert stats.in_flight == 0
    assert stats.outbound_attempts == stats.failures


async def test_connect_timeout(autojump_clock: trio.testing.MockClock) -> None:
    net = FakeNetwork()
    net.block = True
    async with memory_handshaker(dial=net.dial, connect_timeout=7) as hs:
        hs.register(TORRENT)
        start = trio.current_time()
        hs.connect(TORRENT, ADDR)
        while hs.statistics().connect_timeout < 1:
            await trio.sleep(0.5)
        assert 7 <= trio.current_time() - start <= 8


async def test_outbound_peer_answering_another_info_hash() -> None:
    net = FakeNetwork()
    async with memory_handshaker(dial=net.dial) as hs:
        hs.register(OTHER)
        hs.connect(OTHER, ADDR)  # the fake peer answers with TORRENT's hash
        await trio.testing.wait_all_tasks_blocked()
        assert hs.statistics().protocol_error == 1


async def test_discovered_drops_unknown_and_unconnectable() -> None:
    net = FakeNetwork()
    async with memory_handshaker(dial=net.dial) as hs:
        sink: PeerSink = hs
        hs.register(TORRENT)
        sink.discovered(OTHER, [ADDR], "dht")
        sink.discovered(b"\x22" * 20, [ADDR], "dht")
        sink.discovered(TORRENT, [PeerAddress.parse("1.2.3.4:0")], "pex")
        sink.discovered(TORRENT, [PeerAddress.parse("0.0.0.0:1")], "pex")
        stats = hs.statistics()
        assert stats.discovered == 4
        assert stats.dropped_unknown_torrent == 2
        assert stats.dropped_unconnectable == 2
        assert not hs.connect(OTHER, ADDR)


async def test_unregister_drops_queued_dials() -> None:
    net = FakeNetwork()
    net.block = True
    async with memory_handshaker(dial=net.dial, max_concurrent=1) as hs:
        hs.register(TORRENT)
        hs.discovered(TORRENT, [addr(1), addr(2)], "dht")
        await trio.testing.wait_all_tasks_blocked()
        hs.unregister(TORRENT)
        assert hs.torrents == frozenset()
        net.release.set()
        await trio.testing.wait_all_tasks_blocked()
        stats = hs.statistics()
    # The queued one, and the one in flight: cancelled by unregister (no longer left to run
    # until it fails on delivery), and no failure of the peer's.
    assert stats.unregistered == 2
    assert stats.failures == 0
    assert stats.completed == 0


# -- filters -------------------------------------------------------------------------


def deny(value: object, direction: Direction) -> bool:
    return False


async def test_address_filter_both_directions() -> None:
    seen: list[tuple[PeerAddress, Direction]] = []

    def only_ten(address: PeerAddress, direction: Direction) -> bool:
        seen.append((address, direction))
        return address == ADDR

    net = FakeNetwork()
    async with memory_handshaker(dial=net.dial, filters=HandshakeFilters(address=only_ten)) as hs:
        hs.register(TORRENT)
        hs.discovered(TORRENT, [addr(5)], "dht")
        async with inbound(hs, addr(6)) as remote:
            assert await read_until_closed(remote) == b""
        assert net.dialled == []
        assert hs.statistics().filtered_address == 2
    assert seen == [(addr(5), "outbound"), (addr(6), "inbound")]


async def test_info_hash_filter_both_directions() -> None:
    net = FakeNetwork()
    async with memory_handshaker(dial=net.dial, filters=HandshakeFilters(info_hash=deny)) as hs:
        hs.register(TORRENT)
        hs.discovered(TORRENT, [ADDR], "dht")
        async with inbound(hs) as remote:
            await remote.send_all(remote_handshake())
            assert await read_until_closed(remote) == b""  # rejected before we answer
        assert net.dialled == []
        assert hs.statistics().filtered_info_hash == 2


@pytest.mark.parametrize("direction", ["inbound", "outbound"])
@pytest.mark.parametrize("kind", ["extensions", "peer_id"])
async def test_extensions_and_peer_id_filters(kind: str, direction: Direction) -> None:
    calls: list[tuple[object, Direction]] = []

    def record(value: object, d: Direction) -> bool:
        calls.append((value, d))
        return False

    filters = (
        HandshakeFilters(extensions=record)
        if kind == "extensions"
        else HandshakeFilters(peer_id=record)
    )
    net = FakeNetwork()
    async with memory_handshaker(dial=net.dial, filters=filters) as hs:
        hs.register(TORRENT)
        if direction == "outbound":
            hs.connect(TORRENT, ADDR)
            await trio.testing.wait_all_tasks_blocked()
        else:
            async with inbound(hs) as remote:
                await remote.send_all(remote_handshake())
                await read_until_closed(remote)
        stats = hs.statistics()
    assert getattr(stats, f"filtered_{kind}") == 1
    assert stats.completed == 0
    expected = Extensions.FAST if kind == "extensions" else REMOTE
    assert calls == [(expected, direction)]


async def test_direction_filters() -> None:
    net = FakeNetwork()
    filters = HandshakeFilters(inbound=False, outbound=False)
    async with memory_handshaker(dial=net.dial, filters=filters) as hs:
        hs.register(TORRENT)
        assert not hs.connect(TORRENT, ADDR)
        async with inbound(hs) as remote:
            assert await read_until_closed(remote) == b""
        assert hs.statistics().filtered_direction == 2
        assert net.dialled == []


# -- lifecycle -------------------------------------------------------------------------


async def test_exit_closes_undelivered_streams_and_body_errors_propagate() -> None:
    net = FakeNetwork()

    async def body() -> None:
        async with memory_handshaker(dial=net.dial) as hs:
            hs.register(TORRENT)
            hs.connect(TORRENT, ADDR)
            await trio.testing.wait_all_tasks_blocked()
            assert hs.statistics().in_flight == 0  # delivered into the backlog
            raise KeyError("boom")

    with pytest.raises(KeyError):
        await body()
    remote = net.remotes[0]
    await remote.receive_some(68)  # our handshake
    assert await read_until_closed(remote) == b""


async def test_outer_cancellation_exits_cleanly() -> None:
    net = FakeNetwork(answer=False)
    with trio.move_on_after(1) as scope:
        async with memory_handshaker(dial=net.dial) as hs:
            hs.register(TORRENT)
            hs.connect(TORRENT, ADDR)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert await read_until_closed(net.remotes[0]) != b""  # our handshake, then EOF


async def test_listens_on_both_families() -> None:
    try:
        async with open_handshaker(listen=[("127.0.0.1", 0), ("::1", 0)]) as hs:
            assert sorted(a.family for a in hs.listen_addresses) == [4, 6]
    except ListenError:  # pragma: no cover - no IPv6 loopback on this machine
        pytest.skip("no ::1")


async def test_arguments_are_checked() -> None:
    bad: list[dict[str, Any]] = [
        {"peer_id": "nope"},
        {"extensions": 5},
        {"max_concurrent": 0},
        {"connect_timeout": 0},
        {"handshake_timeout": float("nan")},
        {"encryption": "rc4"},
    ]
    for kwargs in bad:
        with pytest.raises((TypeError, ValueError)):
            async with open_handshaker(listen=[], **kwargs):
                pass  # pragma: no cover
    async with open_handshaker(listen=[], peer_id=PEER_A.value) as hs:
        assert hs.peer_id == PEER_A
        assert hs.extensions == Extensions.NONE
        assert hs.listen_addresses == []
        with pytest.raises(TypeError):
            hs.register(b"\x11" * 20)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            hs.discovered("abc", [], "x")  # type: ignore[arg-type]


# -- MSE/PE ----------------------------------------------------------------------

PLAIN = EncryptionPolicy.PLAINTEXT_ONLY
PREFER = EncryptionPolicy.PREFER_ENCRYPTED
REQUIRE = EncryptionPolicy.REQUIRE_ENCRYPTED

# (dialler's policy, listener's policy) -> the method, or the counters that fail.
POLICY_PAIRS: dict[tuple[EncryptionPolicy, EncryptionPolicy], str | tuple[str, str]] = {
    (PLAIN, PLAIN): "plaintext",
    (PLAIN, PREFER): "plaintext",
    (PLAIN, REQUIRE): ("connection_lost", "refused_plaintext"),
    (PREFER, PLAIN): "plaintext",  # MSE refused, then the plaintext redial
    (PREFER, PREFER): "rc4",
    (PREFER, REQUIRE): "rc4",
    (REQUIRE, PLAIN): ("mse_failed", "protocol_error"),
    (REQUIRE, PREFER): "rc4",
    (REQUIRE, REQUIRE): "rc4",
}


async def settle(*handshakers: Handshaker) -> None:
    """Wait until every attempt ended (completed or failed) and none is in flight."""
    with trio.fail_after(5):
        while True:
            stats = [hs.statistics() for hs in handshakers]
            attempts = [s.outbound_attempts + s.inbound_attempts for s in stats]
            if all(
                a > 0 and s.in_flight == 0 and s.completed + s.failures == a
                for a, s in zip(attempts, stats, strict=True)
            ):
                return
            await trio.sleep(0.01)


@pytest.mark.parametrize(
    ("dialler", "listener"),
    list(POLICY_PAIRS),
    ids=[f"{a.name}->{b.name}" for a, b in POLICY_PAIRS],
)
async def test_policy_pairs_over_tcp(dialler: EncryptionPolicy, listener: EncryptionPolicy) -> None:
    expected = POLICY_PAIRS[dialler, listener]
    async with (
        open_handshaker(peer_id=PEER_A, listen=[], encryption=dialler, handshake_timeout=5) as a,
        open_handshaker(peer_id=PEER_B, encryption=listener, handshake_timeout=5) as b,
    ):
        a.register(TORRENT)
        b.register(TORRENT)
        assert a.connect(TORRENT, b.listen_addresses[0])
        await settle(a, b)
        stats_a, stats_b = a.statistics(), b.statistics()
        if isinstance(expected, str):
            out, into = await next_peer(a), await next_peer(b)
            try:
                assert out.encryption == into.encryption == expected
                assert (out.peer_id, into.peer_id) == (PEER_B, PEER_A)
                await out.stream.send_all(b"ping")
                got = into.trailing
                while len(got) < 4:
                    got += await into.stream.receive_some()
                assert got == b"ping"
                await into.stream.send_all(b"pong")
                got = out.trailing
                while len(got) < 4:
                    got += await out.stream.receive_some()
                assert got == b"pong"
            finally:
                await out.aclose()
                await into.aclose()
    if isinstance(expected, str):
        assert stats_a.outbound_completed == stats_b.inbound_completed == 1
        assert stats_a.failures == 0
        assert stats_a.encrypted == stats_b.encrypted == (expected == "rc4")
        fell_back = (dialler, listener) == (PREFER, PLAIN)
        assert stats_a.plaintext_fallback == fell_back
        # The listener refused the MSE attempt before the plaintext redial.
        assert stats_b.failures == stats_b.protocol_error == fell_back
    else:
        a_reason, b_reason = expected
        assert stats_a.failures == getattr(stats_a, a_reason) == 1, stats_a
        assert stats_b.failures == getattr(stats_b, b_reason) == 1, stats_b
        assert stats_a.completed == stats_b.completed == 0
        assert stats_a.plaintext_fallback == 0


async def mse_dial(
    stream: trio.abc.Stream, skey: bytes, policy: EncryptionPolicy, payload: bytes
) -> tuple[MSEInitiator, MSEEstablished]:
    """The remote end of an MSE handshake (sans-IO core driven by hand)."""
    initiator = MSEInitiator(skey, policy, initial_payload=payload)
    await stream.send_all(initiator.data_to_send())
    with trio.fail_after(5):
        while True:
            initiator.receive_data(await stream.receive_some())
            event = initiator.next_event()
            if out := initiator.data_to_send():
                await stream.send_all(out)
            if isinstance(event, MSEEstablished):
                return initiator, event


async def test_inbound_mse_trailing_bytes_arrive_decrypted() -> None:
    first, second = b"\x00\x00\x00\x01\x02", b"\x00\x00\x00\x01\x03"
    async with memory_handshaker(encryption=REQUIRE) as hs:
        hs.register(TORRENT)
        async with inbound(hs) as ours:
            # Our handshake and a first message in the initial payload, one more after.
            initiator, event = await mse_dial(ours, TORRENT_ID, PREFER, remote_handshake() + first)
            assert event.method == "rc4"
            await ours.send_all(initiator.encrypt(second))
            peer = await next_peer(hs)
            try:
                assert peer.encryption == "rc4"
                assert peer.peer_id == REMOTE
                got = peer.trailing
                while len(got) < 10:
                    got += await peer.stream.receive_some()
                assert got == first + second
                # Its handshake and what follows come back encrypted.
                answer = event.data
                while len(answer) < 68:
                    answer += initiator.decrypt(await ours.receive_some())
                assert Handshake.from_bytes(answer[:68]).peer_id == PEER_A.value
                await peer.stream.send_all(b"bye")
                tail = answer[68:]
                while len(tail) < 3:
                    tail += initiator.decrypt(await ours.receive_some())
                assert tail == b"bye"
            finally:
                await peer.aclose()
    assert hs.statistics().encrypted == 1


async def test_outbound_mse_trailing_bytes_arrive_decrypted() -> None:
    ours, theirs = trio.testing.memory_stream_pair()

    async def dial(address: PeerAddress) -> trio.abc.Stream:
        return ours

    async with memory_handshaker(encryption=REQUIRE, dial=dial) as hs:
        hs.register(TORRENT)
        assert hs.connect(TORRENT, ADDR)
        receiver = MSEReceiver([TORRENT_ID], PREFER)
        data = b""
        with trio.fail_after(5):
            while True:
                receiver.receive_data(await theirs.receive_some())
                event = receiver.next_event()
                if out := receiver.data_to_send():
                    await theirs.send_all(out)
                if isinstance(event, MSEEstablished):
                    break
        assert event.method == "rc4"
        assert Handshake.from_bytes(event.data[:68]).peer_id == PEER_A.value
        await theirs.send_all(receiver.encrypt(remote_handshake() + b"after"))
        peer = await next_peer(hs)
        try:
            assert peer.encryption == "rc4"
            data = peer.trailing
            while len(data) < 5:
                data += await peer.stream.receive_some()
            assert data == b"after"
        finally:
            await peer.aclose()
            await theirs.aclose()
    assert hs.statistics().encrypted == 1


async def test_unknown_skey_is_refused_and_counted() -> None:
    async with memory_handshaker(encryption=PREFER) as hs:
        hs.register(TORRENT)
        hs.register(OTHER)
        hs.unregister(OTHER)  # the SKEY table follows register / unregister
        for skey in (OTHER_ID, b"\x99" * 20):
            async with inbound(hs) as ours:
                with pytest.raises(RemoteProtocolError):
                    await mse_dial(ours, skey, REQUIRE, remote_handshake(skey))
        await settle(hs)
    stats = hs.statistics()
    assert stats.unknown_info_hash == stats.failures == 2


async def test_plaintext_refused_when_encryption_is_required() -> None:
    async with memory_handshaker(encryption=REQUIRE) as hs:
        hs.register(TORRENT)
        async with inbound(hs) as ours:
            await ours.send_all(remote_handshake())
            assert await read_until_closed(ours) == b""
        await settle(hs)
    stats = hs.statistics()
    assert stats.refused_plaintext == stats.failures == 1


async def test_mse_stream_serialises_like_a_trio_stream() -> None:
    from bip_handshake._mse_stream import MSEStream

    class Xor:
        def encrypt(self, data: bytes | bytearray | memoryview) -> bytes:
            return bytes(b ^ 0x55 for b in data)

        decrypt = encrypt

    left, right = trio.testing.lockstep_stream_pair()
    # A stand-in for an established MSE core: MSEStream only calls encrypt and decrypt.
    ours = MSEStream(left, Xor())  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ours.send_all, b"abc")
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await ours.send_all(b"x")
        with pytest.raises(trio.BusyResourceError):
            await ours.wait_send_all_might_not_block()
        assert await right.receive_some() == Xor().encrypt(b"abc")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ours.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await ours.receive_some()
        await right.send_all(Xor().encrypt(b"z"))
    await right.aclose()
    assert await ours.receive_some() == b""
    await ours.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await left.send_all(b"x")


async def test_an_mse_padding_flood_is_cut_off_and_counted() -> None:
    # A valid Diffie-Hellman key, then padding that never holds HASH('req1', S): the
    # receiver gives up after its bounded scan, and the good peer beside it completes.
    from bip_handshake._mse_crypto import dh_public_key

    async with memory_handshaker(encryption=EncryptionPolicy.PREFER_ENCRYPTED) as hs:
        hs.register(TORRENT)
        async with inbound(hs, addr(1)) as flood, inbound(hs, addr(2)) as good:
            await flood.send_all(dh_public_key(2**100 + 1) + bytes(2000))
            await good.send_all(remote_handshake())
            peer = await next_peer(hs)
            assert peer.address == addr(2)
            await peer.aclose()
            await read_until_closed(flood)
        stats = hs.statistics()
    assert stats.failures == 1
    assert stats.inbound_completed == 1
    assert stats.inbound_attempts == stats.completed + stats.failures == 2
