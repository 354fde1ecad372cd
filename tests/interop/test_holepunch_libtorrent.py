"""BEP 55 against libtorrent: libtorrent relays a rendezvous between two of our PeerManagers.

Two bip sides (a Handshaker and a PeerManager running a HolepunchService each) dial one
libtorrent session seeding the same torrent, from 127.0.0.2 and 127.0.0.3. The first asks
libtorrent for a rendezvous with the second; libtorrent (bt_peer_connection's on_holepunch)
finds the second by its connection's remote address and sends each side a connect with the
other's address, which our services hand to their ``on_connect`` callbacks. Then a rendezvous
for an address libtorrent is not connected to comes back as NotConnected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trio

from bip_handshake import EncryptionPolicy, Extensions, PeerAddress, open_handshaker
from bip_metainfo import InfoHash
from bip_peer._extended import HOLEPUNCH_EXTENSION, HolepunchError
from bip_peer._holepunch import HolepunchService
from bip_peer._manager import Peer, PeerManager, PeerManagerConfig, open_peer_manager

from ._helpers import StartProcess
from ._seeders import HOST, Seeder, SmallTorrent, dial_until_complete, make_torrent
from ._seeders import start_libtorrent as start_libtorrent_seed

pytestmark = pytest.mark.interop

OURS = Extensions.EXTENSION_PROTOCOL | Extensions.FAST
DEADLINE = 15.0  # the whole exchange, libtorrent's start excluded


@dataclass
class Side:
    """One of our peers: its manager, its service, its connection to libtorrent and where that
    connection comes from (what libtorrent knows it by), and what its callbacks were given."""

    manager: PeerManager
    service: HolepunchService
    relay: Peer
    local: PeerAddress
    connects: list[tuple[InfoHash, PeerAddress]] = field(default_factory=list)
    errors: list[tuple[InfoHash, PeerAddress, int]] = field(default_factory=list)


@asynccontextmanager
async def our_side(host: str, torrent: SmallTorrent, seeder: Seeder) -> AsyncIterator[Side]:
    """A plaintext Handshaker dialling `seeder` from `host`, its handshake handed to a
    PeerManager with a HolepunchService; yields once libtorrent's extended handshake is in."""
    connects: list[tuple[InfoHash, PeerAddress]] = []
    errors: list[tuple[InfoHash, PeerAddress, int]] = []
    service = HolepunchService(
        on_connect=lambda ih, address: connects.append((ih, address)),
        on_error=lambda ih, address, code: errors.append((ih, address, code)),
    )
    sources: list[PeerAddress] = []

    async def dial(address: PeerAddress) -> trio.abc.Stream:
        stream = await trio.open_tcp_stream(str(address.host), address.port, local_address=host)
        local_host, local_port = stream.socket.getsockname()[:2]
        sources.append(PeerAddress(IPv4Address(local_host), local_port))
        return stream

    async with (
        open_handshaker(
            listen=[], extensions=OURS, encryption=EncryptionPolicy.PLAINTEXT_ONLY, dial=dial
        ) as handshaker,
        open_peer_manager(PeerManagerConfig(services=[service])) as manager,
        trio.open_nursery() as nursery,
    ):
        handshaker.register(torrent.info_hash)
        done = await dial_until_complete(handshaker, torrent, seeder, deadline=DEADLINE)
        relay = manager.add_peer(done, num_pieces=4)

        async def drain() -> None:
            async for _ in manager.events():
                pass

        nursery.start_soon(drain)
        with trio.fail_after(DEADLINE):
            while relay.extended_handshake is None:
                await trio.sleep(0.05)
        side = Side(manager, service, relay, sources[-1], connects, errors)
        yield side
        nursery.cancel_scope.cancel()


async def test_libtorrent_relays_a_rendezvous(tmp_path: Path, start_process: StartProcess) -> None:
    torrent = make_torrent(tmp_path)
    seeder = await trio.to_thread.run_sync(start_libtorrent_seed, start_process, tmp_path, torrent)
    async with (
        our_side("127.0.0.2", torrent, seeder) as x,
        our_side("127.0.0.3", torrent, seeder) as t,
    ):
        # libtorrent offers ut_holepunch under its id 4 (bt_peer_connection's holepunch_msg).
        assert x.relay.connection.their_extension_ids.get(HOLEPUNCH_EXTENSION) == 4
        assert HolepunchService.supports(t.relay)
        assert x.local.host != t.local.host
        # libtorrent finds the target by its connection's remote address: where T dialled
        # from. It may not have read T's extended handshake yet (NoSupport, or NotConnected
        # before it attached the connection to the torrent): ask again, a bounded few times.
        with trio.fail_after(DEADLINE):
            for _ in range(20):
                assert x.service.rendezvous(x.manager, x.relay, t.local)
                await trio.sleep(0.5)
                if x.connects:
                    break
            while not t.connects:
                await trio.sleep(0.05)
        assert x.connects[-1] == (torrent.info_hash, t.local)
        # T is told to dial X where libtorrent sees X: its connection's remote address.
        assert t.connects[-1] == (torrent.info_hash, x.local)
        assert all(
            code in (HolepunchError.NOT_CONNECTED, HolepunchError.NO_SUPPORT)
            for _, _, code in x.errors
        )
        assert x.service.statistics().connects >= 1
        assert t.service.statistics().connects >= 1
        assert t.errors == []

        # An address libtorrent has no connection to: NotConnected, with the target echoed.
        nobody = PeerAddress(IPv4Address(HOST), 9)
        errors_before = len(x.errors)
        assert x.service.rendezvous(x.manager, x.relay, nobody)
        with trio.fail_after(DEADLINE):
            while len(x.errors) == errors_before:
                await trio.sleep(0.05)
        assert x.errors[-1] == (torrent.info_hash, nobody, HolepunchError.NOT_CONNECTED)

        # Asking for ourselves: libtorrent's NoSelf (the target is the initiator's connection).
        errors_before = len(x.errors)
        assert x.service.rendezvous(x.manager, x.relay, x.local)
        with trio.fail_after(DEADLINE):
            while len(x.errors) == errors_before:
                await trio.sleep(0.05)
        assert x.errors[-1] == (torrent.info_hash, x.local, HolepunchError.NO_SELF)

        # libtorrent kept both connections: our messages were well formed.
        assert x.relay in x.manager.peers
        assert t.relay in t.manager.peers
