"""A torrent's hold (pause, queue, recheck) ends its dials; it charges no peer for them
(review of 04ad6fa).

``Handshaker.unregister`` ends a torrent's dials at once. The connector found them gone from
the handshaker and took each for a failed handshake: every peer being dialled got a failure and
waited ``min_reconnect_time`` x 2 after the resume, and three holds while dials pended gave a
peer up for good (never-dialled queued ones too). libtorrent closes them for a reason of its
own, as it does the connected peers: no failure, and they may be dialled again at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import trio
import trio.testing
from _engine_helpers import until

from bip._client import ClientConfig, TorrentOptions, open_session
from bip._client._connector import Connector
from bip_handshake import (
    CompletedHandshake,
    EncryptionPolicy,
    Handshaker,
    PeerAddress,
    PeerList,
    PeerOrigin,
    open_handshaker,
)
from bip_metainfo import InfoHash, MagnetLink
from bip_peer import Peer

TORRENT = InfoHash(v1=b"\x11" * 20)
OTHER = InfoHash(v1=b"\x22" * 20)
# Well under min_reconnect_time (60 s): a peer redialled within it was not made to wait.
PROMPTLY = 5.0


def addr(n: int) -> PeerAddress:
    return PeerAddress(IPv4Address(f"10.0.0.{n}"), 6881)


class Network:
    """A dialler: every connect hangs (the torrent's dials stay in flight), or, for the
    addresses in ``closing``, connects to a peer that closes at once (a failed handshake)."""

    def __init__(self, closing: frozenset[PeerAddress] = frozenset()) -> None:
        self.dialled: list[PeerAddress] = []
        self.active = 0
        self.closing = closing

    async def dial(self, address: PeerAddress) -> trio.abc.Stream:
        self.dialled.append(address)
        if address in self.closing:
            ours, theirs = trio.testing.memory_stream_pair()
            await theirs.aclose()
            return ours
        self.active += 1
        try:
            await trio.sleep_forever()
        finally:
            self.active -= 1
        raise AssertionError("unreachable")


class FakeTorrent:
    """What the connector reads of a torrent; ``halted`` as a hold sets it."""

    def __init__(self, info_hash: InfoHash = TORRENT) -> None:
        self.info_hash = info_hash
        self.completed = trio.Event()
        self.peers: set[Peer] = set()
        self.halted = False


@dataclass
class Rig:
    handshaker: Handshaker
    connector: Connector
    torrent: FakeTorrent
    peers: PeerList

    def pause(self) -> None:
        """As Torrent._hold: halted, then out of the handshaker."""
        self.torrent.halted = True
        self.handshaker.unregister(self.torrent.info_hash)

    def resume(self) -> None:
        """As Torrent._release: registered again, then the connector woken."""
        self.handshaker.register(self.torrent.info_hash)
        self.torrent.halted = False
        self.connector.wake()

    def failcounts(self, addresses: list[PeerAddress]) -> list[int]:
        entries = [self.peers.entry(address) for address in addresses]
        return [-1 if entry is None else entry.failcount for entry in entries]


@asynccontextmanager
async def rig(net: Network, *, max_concurrent: int = 64) -> AsyncIterator[Rig]:
    """A handshaker dialling through ``net`` and a running connector with one torrent."""
    torrent = FakeTorrent()
    async with open_handshaker(
        listen=[],
        encryption=EncryptionPolicy.PLAINTEXT_ONLY,
        dial=net.dial,
        max_concurrent=max_concurrent,
        connect_timeout=1e6,
        handshake_timeout=1e6,
    ) as handshaker:
        handshaker.register(torrent.info_hash)
        connector = Connector(
            handshaker=handshaker,
            find=lambda info_hash: torrent if info_hash == torrent.info_hash else None,
            connected_peers=lambda: 0,
            our_addresses=lambda: (),
            max_peers=50,
        )
        peers = connector.attach(torrent)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connector.run)
            yield Rig(handshaker, connector, torrent, peers)
            nursery.cancel_scope.cancel()


async def redialled(net: Network, count: int) -> float:
    """Seconds (virtual) until ``net`` saw ``count`` dials; inf if not within 200 s."""
    start = trio.current_time()
    with trio.move_on_after(200):
        await until(lambda: len(net.dialled) >= count)
        return trio.current_time() - start
    return float("inf")


async def test_pause_and_resume_at_once_charge_no_dial(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = Network()
    found = [addr(1), addr(2)]
    async with rig(net) as r:
        r.connector.discovered(TORRENT, found, "tracker")
        await until(lambda: net.active == 2)
        r.pause()
        r.resume()  # in the same step: the connector never saw the torrent halted
        assert await redialled(net, 4) < PROMPTLY
        assert r.failcounts(found) == [0, 0]


async def test_a_long_pause_charges_no_dial_and_the_resume_redials_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = Network()
    found = [addr(1), addr(2)]
    async with rig(net) as r:
        r.connector.discovered(TORRENT, found, "tracker")
        await until(lambda: net.active == 2)
        r.pause()
        r.connector.wake()
        await until(lambda: r.peers.dialling == 0)  # settled while paused
        assert net.active == 0
        assert r.failcounts(found) == [0, 0]
        await trio.sleep(30)  # paused a while: nothing is dialled
        assert len(net.dialled) == 2
        r.resume()
        assert await redialled(net, 4) < PROMPTLY
        assert r.failcounts(found) == [0, 0]


async def test_three_holds_while_dialling_give_no_peer_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = Network()
    found = [addr(1), addr(2)]
    async with rig(net) as r:
        r.connector.discovered(TORRENT, found, "tracker")
        for round_ in range(1, 5):
            await until(lambda: net.active == 2)
            assert len(net.dialled) == 2 * round_
            r.pause()
            r.resume()
            assert await redialled(net, 2 * (round_ + 1)) < PROMPTLY
        assert r.failcounts(found) == [0, 0]


async def test_queued_dials_never_started_are_not_charged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Another torrent's dial holds the only outbound slot: the torrent's dials wait in the
    # handshaker's queue, and the hold drops them before they start.
    net = Network()
    found = [addr(1), addr(2), addr(3)]
    async with rig(net, max_concurrent=1) as r:
        r.handshaker.register(OTHER)
        assert r.handshaker.connect(OTHER, addr(9))
        await until(lambda: net.active == 1)
        r.connector.discovered(TORRENT, found, "tracker")
        await until(lambda: r.peers.dialling == 3)
        await trio.testing.wait_all_tasks_blocked()
        assert net.dialled == [addr(9)]
        r.pause()
        r.resume()
        # Settled without a failure, and queued again at once (the slot is still taken).
        with trio.fail_after(PROMPTLY):
            await until(lambda: all(r.handshaker.is_dialling(TORRENT, a) for a in found))
        assert r.failcounts(found) == [0, 0, 0]
        r.handshaker.unregister(OTHER)  # the slot frees: the torrent's dials start
        assert await redialled(net, 2) < PROMPTLY
        assert net.dialled[1] in found


async def test_a_failed_handshake_is_still_charged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # No hold: a peer that accepts the connection and closes it failed.
    net = Network(closing=frozenset({addr(1)}))
    async with rig(net) as r:
        r.connector.discovered(TORRENT, [addr(1)], "tracker")
        with trio.fail_after(PROMPTLY):
            await until(lambda: r.failcounts([addr(1)]) == [1])
        assert r.peers.dialling == 0


async def test_a_handshake_refused_because_the_torrent_is_halted_costs_no_wait() -> None:
    torrent = FakeTorrent()
    connector = Connector(
        handshaker=cast(Handshaker, None),  # nothing dialled here
        find=lambda _: torrent,
        connected_peers=lambda: 0,
        our_addresses=lambda: (),
        max_peers=10,
    )
    peers = connector.attach(torrent)
    address = addr(1)
    peers.add(address, PeerOrigin.TRACKER, 0.0)
    assert peers.connect_candidates(1, 0.0) == [address]  # our dial, now pending
    handshake = cast(CompletedHandshake, SimpleNamespace(address=address, direction="outbound"))
    torrent.halted = True  # paused while the handshake was handed over
    connector.handshake_refused(torrent, handshake)
    torrent.halted = False
    entry = peers.entry(address)
    assert entry is not None
    assert (entry.dialling, entry.failcount) == (False, 0)
    assert peers.connect_candidates(1, 1.0) == [address]  # no min_reconnect_time wait


class HangingDials:
    """A session's ``ClientConfig.dial``: every connect hangs."""

    def __init__(self) -> None:
        self.dialled: list[PeerAddress] = []

    async def __call__(self, address: PeerAddress) -> trio.abc.Stream:
        self.dialled.append(address)
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_a_session_torrent_paused_and_resumed_redials_its_peers_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    dials = HangingDials()
    config = ClientConfig(
        listen=(), trackers=False, utp=False, dial=dials, connect_timeout=1e6, seed_rng=3
    )
    found = [addr(1), addr(2)]
    async with open_session(config) as session:
        torrent = await session.add_torrent(
            MagnetLink(InfoHash(v1=bytes(range(20)))),  # no metadata ever: it dials
            TorrentOptions(tmp_path / "down", resume=False, auto_managed=False),
        )
        session.connector.discovered(torrent.info_hash, found, "tracker")
        peers = session.connector.peer_list(torrent)
        assert peers is not None
        with trio.fail_after(PROMPTLY):
            await until(lambda: len(dials.dialled) >= 2)
        torrent.pause()
        await trio.sleep(0.05)
        torrent.resume()
        with trio.fail_after(PROMPTLY):
            await until(lambda: len(dials.dialled) >= 4)
        entries = [peers.entry(address) for address in found]
        assert [entry.failcount if entry else -1 for entry in entries] == [0, 0]


async def test_a_failed_handshake_after_another_torrent_was_removed_is_charged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # remove_torrent detaches the torrent first, then its close unregisters it: the
    # handshaker's count moves with no dial left for the connector to find gone. A dial made
    # after must be compared with the count as it was then, not an older copy, or its
    # genuine failure is taken for a hold's and redialled at once.
    net = Network(closing=frozenset({addr(1)}))
    async with rig(net) as r:
        removed = FakeTorrent(OTHER)
        r.handshaker.register(OTHER)
        r.connector.attach(removed).add(addr(9), PeerOrigin.TRACKER, trio.current_time())
        r.connector.wake()
        await until(lambda: net.active == 1)  # its dial hangs
        r.connector.detach(removed)
        r.handshaker.unregister(OTHER)
        await until(lambda: net.active == 0)
        await trio.sleep(600)  # long after: nothing dialled meanwhile
        r.connector.discovered(TORRENT, [addr(1)], "tracker")
        with trio.fail_after(PROMPTLY):
            await until(lambda: r.failcounts([addr(1)]) == [1])
        assert net.dialled.count(addr(1)) == 1  # charged at once, not excused and redialled
