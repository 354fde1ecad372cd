"""MetadataExchange and PeerExchange over real PeerManagers joined by trio memory streams."""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address

import _managers
import pytest
import trio
import trio.testing
from _managers import Node, node

from bip_bencode import encode
from bip_handshake import PeerAddress
from bip_metainfo import InfoHash
from bip_peer._errors import LocalProtocolError
from bip_peer._exchange import (
    MetadataExchange,
    MetadataFetchError,
    PeerExchange,
)
from bip_peer._extended import MetadataData, MetadataRequest, PexMessage
from bip_peer._manager import (
    REASON_PROTOCOL,
    MessageReceived,
    Peer,
    PeerManager,
    PeerRemoved,
    PeerService,
)
from bip_peer._metadata import DEFAULT_METADATA_REREQUEST_DELAY
from bip_peer._pex import PexFlags


def make_info(size: int, seed: int = 0) -> bytes:
    pieces = random.Random(seed).randbytes(max(20, size) // 20 * 20)
    return encode({b"length": 1, b"name": b"x", b"piece length": 16384, b"pieces": pieces})


INFO = make_info(100_000)  # seven metadata pieces
IH = InfoHash.from_info_bytes(INFO, v1=True, v2=True)


def addr(n: int, port: int = 6881) -> PeerAddress:
    return PeerAddress(IPv4Address(f"10.0.0.{n}"), port)


# Every connection here is for IH unless a test names another torrent.
connect = functools.partial(_managers.connect, info_hash=IH)


# --------------------------------------------------------------------------- metadata


async def test_fetch_from_one_peer(autojump_clock: trio.testing.MockClock) -> None:
    seed_ex, leech_ex = MetadataExchange(), MetadataExchange()
    seed_ex.serve(IH, INFO)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [seed_ex]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            connect(leech, seed)
            with trio.fail_after(5):
                got = await leech_ex.fetch(leech.manager, IH, timeout=30)
            assert got == INFO
            assert leech_ex.serving(IH)  # what we fetched, we serve
            assert seed_ex.statistics().requests_answered == 7
            assert leech_ex.statistics().pieces_fetched == 7
            assert leech_ex.statistics().fetching == 0
            # A second fetch is answered at once from what we now serve.
            assert await leech_ex.fetch(leech.manager, IH, timeout=1) == INFO
            # Metadata messages are consumed by the service, never events.
            assert not any(
                isinstance(e, MessageReceived)
                and isinstance(e.message, MetadataRequest | MetadataData)
                for e in seed.events + leech.events
            )
        nursery.cancel_scope.cancel()


async def test_handshake_advertises_metadata_size(autojump_clock: trio.testing.MockClock) -> None:
    seed_ex, leech_ex = MetadataExchange(extension_id=9), MetadataExchange()
    seed_ex.serve(IH, INFO)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [seed_ex]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            on_leech, on_seed = connect(leech, seed)
            await trio.sleep(1)
            theirs = on_leech.extended_handshake
            assert theirs is not None
            assert theirs.m["ut_metadata"] == 9
            assert theirs.metadata_size == len(INFO)
            mine = on_seed.extended_handshake
            assert mine is not None
            assert mine.m["ut_metadata"] == 2
            assert mine.metadata_size is None
        nursery.cancel_scope.cancel()


async def test_fetch_in_parallel_from_several_peers(autojump_clock: trio.testing.MockClock) -> None:
    leech_ex = MetadataExchange()
    async with trio.open_nursery() as nursery:
        async with node(nursery, addr(9), [leech_ex]) as leech:
            seeds = []
            for n in range(1, 4):
                exchange = MetadataExchange()
                exchange.serve(IH, INFO)
                seeds.append(exchange)
                seed = await nursery.start(_serve_node, addr(n), exchange)
                connect(leech, seed, ephemeral=50000 + n)
            with trio.fail_after(5):
                assert await leech_ex.fetch(leech.manager, IH, timeout=30) == INFO
            answered = [exchange.statistics().requests_answered for exchange in seeds]
            assert sum(answered) == 7
            assert sum(1 for count in answered if count) >= 2  # spread over peers
        nursery.cancel_scope.cancel()


async def _serve_node(
    address: PeerAddress,
    exchange: PeerService,
    *,
    task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as nursery, node(nursery, address, [exchange]) as result:
        task_status.started(result)
        await trio.sleep_forever()


class LyingSeed:
    """A service that advertises the right size and answers with corrupted pieces (or, when
    ``silent``, never answers)."""

    def __init__(self, info: bytes, *, silent: bool = False) -> None:
        bad = bytearray(info)
        for start in range(0, len(bad), 16384):  # every piece is wrong
            bad[start] ^= 0xFF
        self.info = bytes(bad)
        self.silent = silent

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        return {"m": {"ut_metadata": 2}, "metadata_size": len(self.info)}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        if isinstance(message, MetadataRequest):
            if self.silent:
                return True
            start = message.piece * 16384
            chunk = self.info[start : start + 16384]
            manager.send_nowait(peer, MetadataData(message.piece, len(self.info), chunk))
            return True
        return False

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def tick(self, manager: PeerManager, now: float) -> None:
        pass


async def test_liar_removed_and_fetch_succeeds(autojump_clock: trio.testing.MockClock) -> None:
    leech_ex = MetadataExchange()
    honest_ex = MetadataExchange()
    honest_ex.serve(IH, INFO)
    async with trio.open_nursery() as nursery:
        async with node(nursery, addr(9), [leech_ex]) as leech:
            liar = await nursery.start(_serve_node, addr(1), LyingSeed(INFO))
            honest = await nursery.start(_serve_node, addr(2), honest_ex)
            on_liar, _ = connect(leech, liar, ephemeral=50001)
            connect(leech, honest, ephemeral=50002)
            with trio.fail_after(60):
                assert await leech_ex.fetch(leech.manager, IH, timeout=60) == INFO
            await trio.sleep(1)
            removed = {event.peer: event.reason for event in leech.removed()}
            assert removed[on_liar].startswith("bad metadata: ")
            assert leech_ex.statistics().peers_banned == 1
            assert len(leech.manager.peers) == 1
        nursery.cancel_scope.cancel()


async def test_fetch_times_out_without_peers(autojump_clock: trio.testing.MockClock) -> None:
    exchange = MetadataExchange()
    async with trio.open_nursery() as nursery:
        async with node(nursery, addr(1), [exchange]) as leech:
            start = trio.current_time()
            with pytest.raises(MetadataFetchError, match="no verified metadata"):
                await exchange.fetch(leech.manager, IH, timeout=20)
            assert trio.current_time() - start == pytest.approx(20)
            assert exchange.statistics().fetching == 0
            with pytest.raises(ValueError, match="timeout"):
                await exchange.fetch(leech.manager, IH, timeout=0)
            with pytest.raises(LocalProtocolError, match="services"):
                await MetadataExchange().fetch(leech.manager, IH, timeout=1)
        nursery.cancel_scope.cancel()


async def test_peer_arriving_during_fetch(autojump_clock: trio.testing.MockClock) -> None:
    seed_ex, leech_ex = MetadataExchange(), MetadataExchange()
    seed_ex.serve(IH, INFO)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [seed_ex]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):

            async def later() -> None:
                await trio.sleep(5)
                connect(leech, seed)

            nursery.start_soon(later)
            results = []

            async def fetch() -> None:
                results.append(await leech_ex.fetch(leech.manager, IH, timeout=30))

            async with trio.open_nursery() as fetchers:  # two fetches share one
                fetchers.start_soon(fetch)
                fetchers.start_soon(fetch)
            assert results == [INFO, INFO]
            assert seed_ex.statistics().requests_answered == 7
        nursery.cancel_scope.cancel()


async def test_unserved_torrent_is_rejected(autojump_clock: trio.testing.MockClock) -> None:
    other = MetadataExchange()  # speaks ut_metadata but serves nothing
    leech_ex = MetadataExchange(request_timeout=2.0, reject_backoff=5.0)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [other]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            connect(leech, seed)
            with pytest.raises(MetadataFetchError):
                await leech_ex.fetch(leech.manager, IH, timeout=20)
            assert other.statistics().requests_rejected >= 2
            assert other.statistics().requests_answered == 0
        nursery.cancel_scope.cancel()


async def test_peer_without_ut_metadata_is_not_asked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    leech_ex = MetadataExchange()
    async with trio.open_nursery() as nursery:
        async with node(nursery, addr(1), []) as plain, node(nursery, addr(2), [leech_ex]) as leech:
            connect(leech, plain)
            with pytest.raises(MetadataFetchError):
                await leech_ex.fetch(leech.manager, IH, timeout=10)
            assert leech.manager.peers  # nobody was dropped for it
            assert not leech.removed()
        nursery.cancel_scope.cancel()


def test_serve_checks_the_hash() -> None:
    exchange = MetadataExchange()
    with pytest.raises(ValueError, match="does not hash"):
        exchange.serve(IH, INFO + b"x")
    exchange.serve(InfoHash.from_info_bytes(INFO, v1=True), INFO)
    assert exchange.serving(IH)  # same v1 swarm
    exchange.stop_serving(IH)
    assert not exchange.serving(IH)
    assert exchange.statistics().serving == 0


@pytest.mark.parametrize("bad", [0, 256, True])
def test_extension_id_checked(bad: int) -> None:
    with pytest.raises(ValueError, match="extension_id"):
        MetadataExchange(extension_id=bad)
    with pytest.raises(ValueError, match="extension_id"):
        PeerExchange(RecordingSink(), extension_id=bad)


def test_options_checked_at_construction() -> None:
    with pytest.raises(ValueError, match="max_size"):
        MetadataExchange(max_size=0)
    with pytest.raises(ValueError, match="interval"):
        PeerExchange(RecordingSink(), interval=-1)


# -------------------------------------------------------------------------------- PEX


class RecordingSink:
    """A PeerSink that keeps what it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[InfoHash | bytes, list[PeerAddress], str]] = []

    def discovered(
        self, info_hash: InfoHash | bytes, addresses: Iterable[PeerAddress], source: str
    ) -> None:
        self.calls.append((info_hash, list(addresses), source))

    def addresses(self) -> set[PeerAddress]:
        return {address for _, addresses, _ in self.calls for address in addresses}


class PexRecorder:
    """A service (placed before PeerExchange) that notes PEX messages and their times."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, PexMessage]] = []

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        return {}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        if isinstance(message, PexMessage):
            self.messages.append((trio.current_time(), message))
        return False

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def tick(self, manager: PeerManager, now: float) -> None:
        pass


async def test_pex_hub_tells_each_peer_about_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub_sink = RecordingSink()
    async with trio.open_nursery() as nursery:
        async with node(nursery, addr(1), [PeerExchange(hub_sink)]) as hub:
            sinks = {n: RecordingSink() for n in (2, 3, 4)}
            recorders = {n: PexRecorder() for n in (2, 3, 4)}
            leaves = {}
            hub_side = {}
            for n in (2, 3, 4):
                leaf = await nursery.start(
                    _pex_node,
                    addr(n, 7000 + n),
                    # A MetadataExchange first: PEX messages go through it untouched.
                    [MetadataExchange(), recorders[n], PeerExchange(sinks[n])],
                )
                leaves[n] = leaf
                if n == 4:  # leaf 4 dials the hub: listed with the port of its handshake
                    _, hub_side[n] = connect(leaf, hub, ephemeral=40000)
                else:
                    hub_side[n], _ = connect(hub, leaf)
            await trio.sleep(3)
            everyone = {2: addr(2, 7002), 3: addr(3, 7003), 4: addr(4, 7004)}
            for n in (2, 3, 4):
                expected = {a for m, a in everyone.items() if m != n}
                assert sinks[n].addresses() == expected, n
                assert {source for _, _, source in sinks[n].calls} == {"pex"}
                ((_, first),) = recorders[n].messages
                flags = dict(zip(first.added, first.added_flags, strict=True))
                for m, address in everyone.items():
                    if m != n:
                        reachable = m != 4  # the hub dialled 2 and 3; 4 dialled the hub
                        assert bool(flags[address] & PexFlags.REACHABLE) == reachable
            # The leaves know no one but the hub: they tell it nothing.
            assert hub_sink.calls == []

            # Leaf 3 leaves: the others hear it dropped, a minute after their first message.
            hub.manager.remove_peer(hub_side[3], "test")
            await trio.sleep(70)
            for n in (2, 4):
                times = [t for t, _ in recorders[n].messages]
                assert len(times) == 2
                assert times[1] - times[0] >= 60
                assert recorders[n].messages[1][1].dropped == (addr(3, 7003),)
        nursery.cancel_scope.cancel()


async def _pex_node(
    address: PeerAddress,
    services: list[PeerService],
    *,
    task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as nursery, node(nursery, address, services) as result:
        task_status.started(result)
        await trio.sleep_forever()


async def test_pex_private_torrent_is_left_alone(autojump_clock: trio.testing.MockClock) -> None:
    sink = RecordingSink()
    private = PeerExchange(sink, is_private=lambda info_hash: True)
    async with trio.open_nursery() as nursery:
        async with node(nursery, addr(1), [private]) as hub:
            leaves = []
            for n in (2, 3):
                leaf_sink = RecordingSink()
                leaf = await nursery.start(_pex_node, addr(n), [PeerExchange(leaf_sink)])
                leaves.append(leaf_sink)
                on_hub, _ = connect(hub, leaf)
            await trio.sleep(3)
            assert "ut_pex" not in on_hub.connection.our_extension_ids
            assert all(leaf_sink.calls == [] for leaf_sink in leaves)
            assert private.statistics().messages_sent == 0
        nursery.cancel_scope.cancel()


class PexFlooder:
    """A service that sends a PEX message every tick, ignoring BEP 11's minute."""

    def __init__(self) -> None:
        self.n = 0

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        return {"m": {"ut_pex": 1}}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        return isinstance(message, PexMessage)

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def tick(self, manager: PeerManager, now: float) -> None:
        for peer in manager.peers:
            if peer.extended_handshake is not None:
                self.n += 1
                manager.send_nowait(peer, PexMessage(added=(addr(100 + self.n % 100, 1),)))


class SelfAdvertiser(PexFlooder):
    """Sends one PEX message listing its own listening address and another one."""

    def __init__(self, own: PeerAddress) -> None:
        super().__init__()
        self.own = own

    def tick(self, manager: PeerManager, now: float) -> None:
        for peer in manager.peers:
            if peer.extended_handshake is not None and not self.n:
                self.n += 1
                manager.send_nowait(peer, PexMessage(added=(self.own, addr(50))))


async def test_pex_sender_listing_itself_is_left_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = RecordingSink()
    async with trio.open_nursery() as nursery:
        async with node(nursery, addr(1), [PeerExchange(sink)]) as victim:
            own = addr(2, 7777)
            talker = await nursery.start(_pex_node, own, [SelfAdvertiser(own)])
            connect(talker, victim, ephemeral=40000)  # it dialled us: known by its handshake's p
            await trio.sleep(3)
            assert sink.addresses() == {addr(50)}
        nursery.cancel_scope.cancel()


async def test_pex_flood_is_disconnected(autojump_clock: trio.testing.MockClock) -> None:
    sink = RecordingSink()
    exchange = PeerExchange(sink)
    async with trio.open_nursery() as nursery:
        async with node(nursery, addr(1), [exchange]) as victim:
            flooder = await nursery.start(_pex_node, addr(2), [PexFlooder()])
            connect(victim, flooder)
            await trio.sleep(30.5)
            # One a second: the first six taken (libtorrent's allowance: bunched messages
            # lose nothing), the seventh removes the peer.
            stats = exchange.statistics()
            assert (stats.messages_received, stats.messages_ignored) == (6, 0)
            assert len(sink.calls) == 6
            assert stats.addresses_discovered == 6
            (removed,) = [e for e in victim.events if isinstance(e, PeerRemoved)]
            assert removed.reason == REASON_PROTOCOL
            assert not victim.manager.peers
        nursery.cancel_scope.cancel()


class Advertiser:
    """A service that adds fixed fields to a node's extended handshake."""

    def __init__(self, fields: Mapping[str, object]) -> None:
        self.fields = fields

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        return self.fields

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        return False

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        pass

    def tick(self, manager: PeerManager, now: float) -> None:
        pass


async def test_pex_flags_and_unlisted_peers(autojump_clock: trio.testing.MockClock) -> None:
    """Seed, encryption and holepunch flags come from the peer's handshake; a peer that dialled
    us without telling its listen port is not listed."""
    recorder = PexRecorder()
    async with trio.open_nursery() as nursery:
        async with node(nursery, addr(1), [PeerExchange(RecordingSink())]) as hub:
            watcher = await nursery.start(
                _pex_node, addr(2), [recorder, PeerExchange(RecordingSink())]
            )
            connect(hub, watcher)
            fancy = await nursery.start(
                _pex_node,
                addr(3),
                [Advertiser({"upload_only": True, "e": 1, "m": {"ut_holepunch": 4}})],
            )
            connect(hub, fancy)
            # Dials the hub and has no listen port to tell: not listable.
            async with node(nursery, addr(4), listen_port=None) as quiet:
                connect(quiet, hub, ephemeral=40004)
                await trio.sleep(3)
            ((_, message),) = recorder.messages
            assert message.added == (addr(3),)
            (flags,) = message.added_flags
            assert flags == PexFlags.SEED | PexFlags.PREFERS_ENCRYPTION | PexFlags.HOLEPUNCH | (
                PexFlags.REACHABLE
            )
        nursery.cancel_scope.cancel()


async def test_pex_utp_flag_for_peers_on_utp(autojump_clock: trio.testing.MockClock) -> None:
    """BEP 11's 0x04 goes with peers we talk to over uTP, whoever dialled; not with TCP ones."""
    recorder = PexRecorder()
    async with trio.open_nursery() as nursery:
        async with node(nursery, addr(1), [PeerExchange(RecordingSink())]) as hub:
            watcher = await nursery.start(
                _pex_node, addr(2), [recorder, PeerExchange(RecordingSink())]
            )
            connect(hub, watcher)
            dialled = await nursery.start(_pex_node, addr(3, 7003), [PeerExchange(RecordingSink())])
            hub_to_dialled, dialled_to_hub = connect(hub, dialled, transport="utp")
            dialling = await nursery.start(
                _pex_node, addr(4, 7004), [PeerExchange(RecordingSink())]
            )
            dialling_to_hub, hub_to_dialling = connect(
                dialling, hub, ephemeral=40004, transport="utp"
            )
            tcp = await nursery.start(_pex_node, addr(5, 7005), [PeerExchange(RecordingSink())])
            hub_to_tcp, _ = connect(hub, tcp)
            assert hub_to_dialled.transport == dialled_to_hub.transport == "utp"
            assert hub_to_dialling.transport == dialling_to_hub.transport == "utp"
            assert hub_to_tcp.transport == "tcp"
            await trio.sleep(3)
            ((_, message),) = recorder.messages
            flags = dict(zip(message.added, message.added_flags, strict=True))
            assert flags == {
                addr(3, 7003): PexFlags.UTP | PexFlags.REACHABLE,
                addr(4, 7004): PexFlags.UTP,
                addr(5, 7005): PexFlags.REACHABLE,
            }
        nursery.cancel_scope.cancel()


async def test_fetch_ignores_other_torrents_and_follows_departures(
    autojump_clock: trio.testing.MockClock,
) -> None:
    other_info = make_info(1000, seed=7)
    other = InfoHash.from_info_bytes(other_info, v1=True)
    seed_ex, leech_ex = MetadataExchange(), MetadataExchange()
    seed_ex.serve(IH, INFO)
    seed_ex.serve(other, other_info)
    async with trio.open_nursery() as nursery:
        async with (
            node(nursery, addr(1), [seed_ex]) as seed,
            node(nursery, addr(2), [leech_ex]) as leech,
        ):
            connect(leech, seed, info_hash=other, ephemeral=50001)  # another torrent
            on_leech, _ = connect(leech, seed, ephemeral=50002)
            await trio.sleep(1)
            leech.manager.remove_peer(on_leech, "test")  # gone before the fetch starts
            await trio.sleep(1)
            with pytest.raises(MetadataFetchError):
                await leech_ex.fetch(leech.manager, IH, timeout=5)
            connect(leech, seed, ephemeral=50003)
            assert await leech_ex.fetch(leech.manager, IH, timeout=5) == INFO
            assert await leech_ex.fetch(leech.manager, other, timeout=5) == other_info
            # The seed forgets the budgets of peers that left.
            leech.manager.remove_peer(next(iter(leech.manager.peers)), "test")
            await trio.sleep(1)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("delay", [1.0, DEFAULT_METADATA_REREQUEST_DELAY])
async def test_a_silent_peers_pieces_go_to_another_after_rerequest_delay(
    autojump_clock: trio.testing.MockClock, delay: float
) -> None:
    """A peer that advertises the size and never answers holds its pieces for
    ``rerequest_delay``; then the honest peer is asked for them too."""
    leech_ex = MetadataExchange(rerequest_delay=delay)
    honest_ex = MetadataExchange()
    honest_ex.serve(IH, INFO)
    async with trio.open_nursery() as nursery:
        async with node(nursery, addr(9), [leech_ex]) as leech:
            silent = await nursery.start(_serve_node, addr(1), LyingSeed(INFO, silent=True))
            honest = await nursery.start(_serve_node, addr(2), honest_ex)
            connect(leech, silent, ephemeral=50001)
            connect(leech, honest, ephemeral=50002)
            start = trio.current_time()
            assert await leech_ex.fetch(leech.manager, IH, timeout=30) == INFO
            elapsed = trio.current_time() - start
            assert delay <= elapsed < delay + 1.5  # the manager's tick, at most, on top
        nursery.cancel_scope.cancel()


async def test_fetch_survives_its_peer_leaving(autojump_clock: trio.testing.MockClock) -> None:
    """The only peer leaves in the middle: the fetch waits for the next one."""
    slow = LyingSeed(INFO, silent=True)
    leech_ex = MetadataExchange()
    honest_ex = MetadataExchange()
    honest_ex.serve(IH, INFO)
    async with trio.open_nursery() as nursery:
        async with node(nursery, addr(9), [leech_ex]) as leech:
            liar = await nursery.start(_serve_node, addr(1), slow)
            honest = await nursery.start(_serve_node, addr(2), honest_ex)
            on_liar, _ = connect(leech, liar, ephemeral=50001)

            async def swap() -> None:
                await trio.sleep(0.5)
                leech.manager.remove_peer(on_liar, "test")
                await trio.sleep(2)
                connect(leech, honest, ephemeral=50002)

            nursery.start_soon(swap)
            assert await leech_ex.fetch(leech.manager, IH, timeout=30) == INFO
            assert leech_ex.statistics().peers_banned == 0
        nursery.cancel_scope.cancel()
