"""The connector and a source that lists one host under thousands of ports."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import trio
import trio.testing

from bip._client._connector import Connector
from bip_handshake import DEFAULT_MAX_PER_HOST, Handshaker, PeerAddress
from bip_metainfo import InfoHash
from bip_peer import Peer


class CountingHandshaker:
    """Queues every dial and never settles one: each stays in flight. It listens nowhere,
    and no dial reaches ourselves."""

    def __init__(self) -> None:
        self.dials: list[PeerAddress] = []
        self.listen_addresses: list[PeerAddress] = []

    def statistics(self) -> SimpleNamespace:
        return SimpleNamespace(outbound_in_flight=len(self.dials), queued=0, unregistered=0)

    def connect(
        self, info_hash: InfoHash, address: PeerAddress, *, swarm_id: bytes | None = None
    ) -> bool:
        self.dials.append(address)
        return True

    def is_dialling(self, info_hash: InfoHash, address: PeerAddress) -> bool:
        return True

    def is_self_address(self, address: PeerAddress) -> bool:
        return False


class FakeTorrent:
    def __init__(self) -> None:
        self.info_hash = InfoHash(v1=b"1" * 20)
        self.completed = trio.Event()
        self.peers: set[Peer] = set()
        self.halted = False


async def test_one_host_under_3000_ports_is_dialled_at_most_max_per_host_times(
    autojump_clock: trio.testing.MockClock,
) -> None:
    torrent = FakeTorrent()
    handshaker = CountingHandshaker()
    connector = Connector(
        handshaker=cast(Handshaker, handshaker),
        find=lambda _: torrent,
        connected_peers=lambda: 0,
        our_addresses=lambda: (),
        max_peers=200,
    )
    connector.attach(torrent)
    victim = [PeerAddress.parse(f"203.0.113.5:{port}") for port in range(1000, 4000)]
    other = PeerAddress.parse("203.0.113.6:6881")
    connector.discovered(torrent.info_hash, [*victim, other], "pex")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connector.run)
            await trio.sleep(20)  # virtual: 600 dials' worth of connection_speed
            nursery.cancel_scope.cancel()
    hosts = [address.host for address in handshaker.dials]
    assert hosts.count(victim[0].host) <= DEFAULT_MAX_PER_HOST
    assert other in handshaker.dials  # the rest of the swarm is dialled as before
    assert connector.free_slots() >= 200 - DEFAULT_MAX_PER_HOST - 1
