"""BEP 11 against libtorrent: a libtorrent peer that knows other peers tells us about them,
and our PeerExchange hands their addresses to a PeerSink with the source "pex"."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trio

from bip_handshake import EncryptionPolicy, Extensions, PeerAddress, open_handshaker
from bip_metainfo import InfoHash
from bip_peer._exchange import PeerExchange
from bip_peer._extended import PexMessage
from bip_peer._manager import (
    MessageReceived,
    Peer,
    PeerManager,
    PeerManagerConfig,
    open_peer_manager,
)

from ._helpers import StartProcess
from ._peer_swarm import read_isolated_status, start_libtorrent_isolated, start_libtorrent_swarm
from ._seeders import HOST, make_torrent

pytestmark = pytest.mark.interop

OURS = Extensions.EXTENSION_PROTOCOL | Extensions.FAST


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


@asynccontextmanager
async def our_side(
    info_hash: InfoHash,
    exchange: PeerExchange,
    addresses: list[PeerAddress],
    on_event: Callable[[object], None] = lambda event: None,
) -> AsyncIterator[PeerManager]:
    """Our plaintext Handshaker dialling `addresses` for `info_hash`, every completed handshake
    handed to a PeerManager running `exchange`, whose events go to `on_event`; yields the manager
    and stops it all on exit."""
    async with (
        open_handshaker(
            listen=[], extensions=OURS, encryption=EncryptionPolicy.PLAINTEXT_ONLY
        ) as handshaker,
        open_peer_manager(PeerManagerConfig(services=[exchange])) as manager,
        trio.open_nursery() as nursery,
    ):
        handshaker.register(info_hash)
        handshaker.discovered(info_hash, addresses, "test")

        async def feed() -> None:
            async for done in handshaker.completed():
                manager.add_peer(done, num_pieces=4)

        async def drain() -> None:
            async for event in manager.events():
                on_event(event)

        nursery.start_soon(feed)
        nursery.start_soon(drain)
        yield manager
        nursery.cancel_scope.cancel()


async def test_libtorrent_tells_us_about_its_peers(
    tmp_path: Path, start_process: StartProcess
) -> None:
    torrent = make_torrent(tmp_path)
    swarm = await trio.to_thread.run_sync(
        start_libtorrent_swarm, start_process, tmp_path, torrent.torrent_path
    )
    hub = PeerAddress(IPv4Address(HOST), swarm["hub"])
    leaves = {PeerAddress(IPv4Address(HOST), port) for port in swarm["leaves"]}
    sink = RecordingSink()
    exchange = PeerExchange(sink)
    seen: list[object] = []

    def record(event: object) -> None:
        if isinstance(event, MessageReceived):
            seen.append(event.message)

    async with our_side(torrent.info_hash, exchange, [hub], record) as manager:
        with trio.fail_after(20):
            while not leaves <= sink.addresses():
                await trio.sleep(0.1)
        (peer,) = manager.peers
        assert isinstance(peer, Peer)
        handshake = peer.extended_handshake
        assert handshake is not None
        assert handshake.m.get("ut_pex")  # libtorrent speaks ut_pex
        assert {source for _, _, source in sink.calls} == {"pex"}
        assert all(info_hash == torrent.info_hash for info_hash, _, _ in sink.calls)
        stats = exchange.statistics()
        assert stats.messages_received >= 1
        assert stats.addresses_discovered >= len(leaves)
        assert not any(isinstance(message, PexMessage) for message in seen)  # consumed
    assert hub not in sink.addresses()


async def test_libtorrent_acts_on_our_pex(tmp_path: Path, start_process: StartProcess) -> None:
    """Two libtorrent sessions that know only us: our PEX tells each about the other, and the
    first dials the second (libtorrent notes the address came from PEX)."""
    torrent = make_torrent(tmp_path)
    ports, status = await trio.to_thread.run_sync(
        start_libtorrent_isolated, start_process, tmp_path, torrent.torrent_path
    )
    addresses = [PeerAddress(IPv4Address(HOST), port) for port in ports]
    exchange = PeerExchange(RecordingSink())

    async with our_side(torrent.info_hash, exchange, addresses) as manager:

        def learnt_by_pex() -> bool:
            sessions = read_isolated_status(status)
            return len(sessions) == 2 and any(
                peer["pex"] and peer["port"] == other
                for peers, other in zip(sessions, reversed(ports), strict=True)
                for peer in peers
            )

        with trio.fail_after(20):
            while not learnt_by_pex():
                await trio.sleep(0.1)
        assert exchange.statistics().messages_sent >= 2
        assert len(manager.peers) == 2  # libtorrent kept us: our messages were well-formed
