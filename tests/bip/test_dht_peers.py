"""DhtPeers: one keep_finding per swarm, started again when what its rounds depend on changes
(completion, a magnet's v2 half, a private flag), never for a private torrent."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NoReturn

import pytest
import trio
import trio.testing

from bip._client import DhtPeers
from bip_dht import DHTError
from bip_handshake import IPFilter, PeerAddress, PeerSink
from bip_metainfo import InfoHash

V1 = bytes(range(20))
V2 = bytes(range(100, 132))


@dataclass
class Target:
    """A DiscoveryTarget whose facts the test changes."""

    info_hash: InfoHash
    listen_port: int = 6881
    private: bool = False
    completed: trio.Event = field(default_factory=trio.Event)
    seeded: trio.Event = field(default_factory=trio.Event)
    ready: trio.Event = field(default_factory=trio.Event)

    def transfer(self) -> tuple[int, int, int]:
        return (0, 0, 0)


@dataclass(frozen=True)
class Call:
    info_hash: bytes
    announce: bool
    port: int | None
    seed: bool


class FakeDht:
    """Records every keep_finding; each finds one peer, then runs until cancelled."""

    def __init__(self, *, fail: bool = False) -> None:
        self.calls: list[Call] = []
        self.running = 0
        self.fail = fail
        self.ip_filter: IPFilter | None = None

    @property
    def addresses(self) -> tuple[PeerAddress, ...]:
        return ()

    def add_node(self, address: PeerAddress) -> None:
        return None

    def set_ip_filter(self, ip_filter: IPFilter | None) -> int:
        self.ip_filter = ip_filter
        return 0

    async def keep_finding(
        self,
        info_hash: bytes,
        *,
        interval: float,
        announce: bool,
        port: int | None,
        seed: bool,
        sink: PeerSink | None,
    ) -> NoReturn:
        self.calls.append(Call(info_hash, announce, port, seed))
        if self.fail:
            raise DHTError("the DHT closed while looking the torrent up")
        assert sink is not None
        sink.discovered(info_hash, [PeerAddress.parse("127.0.0.9:7000")], "dht")
        self.running += 1
        try:
            await trio.sleep_forever()
        finally:
            self.running -= 1


class Sink:
    def __init__(self) -> None:
        self.found: list[tuple[bytes, str]] = []

    def discovered(
        self, info_hash: InfoHash | bytes, addresses: Iterable[PeerAddress], source: str
    ) -> None:
        assert isinstance(info_hash, bytes)
        self.found.append((info_hash, source))


async def test_one_walk_per_swarm_announcing_then_as_a_seed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    dht, sink = FakeDht(), Sink()
    target = Target(InfoHash(v1=V1, v2=V2))
    target.ready.set()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(DhtPeers(dht, interval=60).run, target, sink)
        await trio.sleep(1)
        # (trio starts tasks in no fixed order)
        assert set(dht.calls) == {Call(V1, True, 6881, False), Call(V2[:20], True, 6881, False)}
        assert sorted(sink.found) == [(V1, "dht"), (V2[:20], "dht")]
        target.completed.set()
        await trio.sleep(10)
        # Completion restarts both, announcing as a seed (BEP 33); the old ones are gone.
        assert set(dht.calls[2:]) == {Call(V1, True, 6881, True), Call(V2[:20], True, 6881, True)}
        assert dht.running == 2
        nursery.cancel_scope.cancel()


async def test_not_listening_looks_only(autojump_clock: trio.testing.MockClock) -> None:
    dht = FakeDht()
    target = Target(InfoHash(v1=V1), listen_port=0)
    target.ready.set()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(DhtPeers(dht, interval=60).run, target, Sink())
        await trio.sleep(1)
        assert dht.calls == [Call(V1, False, None, False)]
        # Completing changes nothing a look-only round says: it goes on, not started again.
        target.completed.set()
        await trio.sleep(30)
        assert dht.calls == [Call(V1, False, None, False)]
        nursery.cancel_scope.cancel()


async def test_a_magnet_gaining_v2_then_private(autojump_clock: trio.testing.MockClock) -> None:
    """A magnet's metadata may add a v2 swarm, or say the torrent is private (BEP 27): the
    first starts a round in the new swarm, the second stops every round for good."""
    dht = FakeDht()
    target = Target(InfoHash(v1=V1))
    target.ready.set()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(DhtPeers(dht, interval=60).run, target, Sink())
            await trio.sleep(1)
            target.info_hash = InfoHash(v1=V1, v2=V2)
            await trio.sleep(10)
            assert dht.calls[0].info_hash == V1
            assert sorted(c.info_hash for c in dht.calls[1:]) == [V1, V2[:20]]
            target.private = True
            await trio.sleep(10)
            assert dht.running == 0
        assert len(dht.calls) == 3  # run() returned: nothing more was started


async def test_private_never_looked_up(autojump_clock: trio.testing.MockClock) -> None:
    dht = FakeDht()
    target = Target(InfoHash(v1=V1), private=True)
    target.ready.set()
    with trio.fail_after(10):
        await DhtPeers(dht, interval=60).run(target, Sink())
    assert dht.calls == []


async def test_waits_for_the_check(autojump_clock: trio.testing.MockClock) -> None:
    dht = FakeDht()
    target = Target(InfoHash(v1=V1))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(DhtPeers(dht, interval=60).run, target, Sink())
        await trio.sleep(30)
        assert dht.calls == []
        target.ready.set()
        await trio.sleep(1)
        assert len(dht.calls) == 1
        nursery.cancel_scope.cancel()


async def test_a_closed_dht_ends_the_source(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    dht = FakeDht(fail=True)
    target = Target(InfoHash(v1=V1))
    target.ready.set()
    caplog.set_level("INFO", logger="bip.client")
    with trio.fail_after(10):
        await DhtPeers(dht, interval=60).run(target, Sink())
    assert "DHT lookups for" in caplog.text
