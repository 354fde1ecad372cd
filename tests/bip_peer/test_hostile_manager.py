"""Regressions found by the hostile-peer campaigns (tests/bip/test_hostile_*.py), reduced to
one PeerManager: many connections from one host cannot take every slot."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address

import pytest
import trio
import trio.testing

from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_peer._manager import (
    PeerManagerConfig,
    PeerManagerFullError,
    PeerRemoved,
    open_peer_manager,
)

TORRENT = InfoHash(v1=b"\x11" * 20)
OTHER = InfoHash(v1=b"\x22" * 20)
BOTH = Extensions.EXTENSION_PROTOCOL | Extensions.FAST


def handshake(host: str, port: int, torrent: InfoHash = TORRENT) -> CompletedHandshake:
    stream, _ = trio.testing.memory_stream_pair()
    return CompletedHandshake(
        stream=stream,
        trailing=b"",
        peer_id=PeerId(b"-XX0000-" + port.to_bytes(12, "big")),
        extensions=BOTH,
        our_extensions=BOTH,
        info_hash=torrent,
        swarm_id=torrent.swarm_ids()[0],
        address=PeerAddress(ip_address(host), port),
        direction="inbound",
    )


async def test_one_host_gets_at_most_max_peers_per_host_of_a_torrent() -> None:
    config = PeerManagerConfig(max_peers=50, max_peers_per_host=3)
    async with open_peer_manager(config) as manager:
        peers = [manager.add_peer(handshake("10.0.0.9", 1000 + n)) for n in range(3)]
        for n in range(20):  # the flood: every one refused, nothing held for it
            with pytest.raises(PeerManagerFullError, match=r"from 10\.0\.0\.9"):
                manager.add_peer(handshake("10.0.0.9", 2000 + n))
        assert manager.statistics().rejected_full == 20
        # Other hosts, and the same host for another torrent, still get in.
        manager.add_peer(handshake("10.0.0.8", 1000))
        manager.add_peer(handshake("10.0.0.9", 3000, OTHER))
        assert len(manager.peers) == 5
        # A slot of the host is free again once one of its peers is gone.
        manager.remove_peer(peers[0], "done")
        events = manager.events()
        async for event in events:
            if isinstance(event, PeerRemoved):
                break
        manager.add_peer(handshake("10.0.0.9", 4000))
        with pytest.raises(PeerManagerFullError):
            manager.add_peer(handshake("10.0.0.9", 4001))
        assert manager._per_host[(IPv4Address("10.0.0.9"), TORRENT)] == 3


async def test_no_limit_per_host_by_default() -> None:
    async with open_peer_manager(PeerManagerConfig(max_peers=10)) as manager:
        for n in range(10):
            manager.add_peer(handshake("10.0.0.9", 1000 + n))
        with pytest.raises(PeerManagerFullError, match="limit is 10"):
            manager.add_peer(handshake("10.0.0.8", 1000))


async def test_the_count_per_host_is_forgotten_with_the_peers() -> None:
    config = PeerManagerConfig(max_peers_per_host=2)
    async with open_peer_manager(config) as manager:
        for n in range(2):
            manager.add_peer(handshake("10.0.0.9", 1000 + n))
        for peer in list(manager.peers):
            manager.remove_peer(peer, "gone")
        events = manager.events()
        removed = 0
        async for event in events:
            removed += isinstance(event, PeerRemoved)
            if removed == 2:
                break
        assert not manager._per_host


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "3"])
def test_max_peers_per_host_is_checked(value: object) -> None:
    with pytest.raises(ValueError, match="max_peers_per_host"):
        PeerManagerConfig(max_peers_per_host=value)  # type: ignore[arg-type]


async def test_an_ipv4_peer_in_ipv6_form_counts_as_its_ipv4_host() -> None:
    """A dual-stack listener shows an IPv4 peer as ::ffff:a.b.c.d: the same host."""
    config = PeerManagerConfig(max_peers_per_host=2)
    async with open_peer_manager(config) as manager:
        manager.add_peer(handshake("10.0.0.9", 1000))
        manager.add_peer(handshake("::ffff:10.0.0.9", 1001))
        with pytest.raises(PeerManagerFullError, match="peers of this torrent"):
            manager.add_peer(handshake("10.0.0.9", 1002))
