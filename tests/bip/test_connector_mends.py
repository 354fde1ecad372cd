"""Mends of the connector: a source listing our own address."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
import trio.testing

from bip._client._connector import Connector
from bip_handshake import (
    EncryptionPolicy,
    Handshaker,
    PeerAddress,
    PeerList,
    PeerOrigin,
    open_handshaker,
)
from bip_metainfo import InfoHash
from bip_peer import Peer

ME = PeerAddress.parse("10.0.0.1:6881")  # where a tracker lists us
LISTEN = PeerAddress.parse("10.0.0.1:7000")  # our address as the connector knows it
OTHER = PeerAddress.parse("10.0.0.2:6881")


class FakeTorrent:
    def __init__(self) -> None:
        self.info_hash = InfoHash(v1=b"\x31" * 20)
        self.completed = trio.Event()
        self.peers: set[Peer] = set()
        self.halted = False


@dataclass
class Rig:
    handshaker: Handshaker
    connector: Connector
    torrent: FakeTorrent
    peers: PeerList
    dialled: list[PeerAddress]


async def wait_for(predicate: Callable[[], bool], *, timeout: float = 30.0) -> None:
    """Poll ``predicate`` on the (virtual) clock until it holds; bounded in time."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


@asynccontextmanager
async def rig() -> AsyncIterator[Rig]:
    """A connector over a real handshaker whose every dial reaches ourselves (the peer sends
    our own handshake back) except to ``OTHER``, which hangs."""
    dialled: list[PeerAddress] = []
    torrent = FakeTorrent()
    async with trio.open_nursery() as nursery:

        async def dial(address: PeerAddress) -> trio.abc.Stream:
            dialled.append(address)
            ours, theirs = trio.testing.memory_stream_pair()

            async def echo() -> None:
                data = b""
                while len(data) < 68:
                    chunk = await theirs.receive_some()
                    if not chunk:
                        return
                    data += chunk
                if address != OTHER:
                    await theirs.send_all(data[:68])
                await trio.sleep_forever()

            nursery.start_soon(echo)
            return ours

        async with open_handshaker(
            listen=[], dial=dial, encryption=EncryptionPolicy.PLAINTEXT_ONLY
        ) as handshaker:
            handshaker.register(torrent.info_hash)
            connector = Connector(
                handshaker=handshaker,
                find=lambda _: torrent,
                connected_peers=lambda: 0,
                our_addresses=lambda: (LISTEN,),
                max_peers=50,
                new_list=lambda: PeerList(min_reconnect_time=0.05),
            )
            peers = connector.attach(torrent)
            nursery.start_soon(connector.run)
            yield Rig(handshaker, connector, torrent, peers, dialled)
        nursery.cancel_scope.cancel()


async def test_a_tracker_listing_our_address_gets_it_dialled_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """libtorrent bans the peer on ``self_connection``: our address, listed by every tracker
    answer, is dialled once, not after every announce forever."""
    async with rig() as r:
        for _ in range(8):  # eight tracker answers listing us
            r.connector.discovered(r.torrent.info_hash, [ME], "tracker")
            await trio.sleep(60)
        assert r.dialled == [ME]
        assert r.handshaker.statistics().self_connection == 1
        assert r.peers.entry(ME) is None
        assert not r.peers.is_banned(ME.host)  # the address only: others on our host are peers
        r.connector.discovered(r.torrent.info_hash, [OTHER], "tracker")
        await wait_for(lambda: OTHER in r.dialled)


async def test_our_own_address_is_refused_from_every_source(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An address the connector knows as ours (``our_addresses``) is neither recorded nor
    dialled, as PEX refuses it; one recorded before it was known to be ours is dropped."""
    async with rig() as r:
        r.connector.discovered(r.torrent.info_hash, [LISTEN, OTHER], "pex")
        await wait_for(lambda: OTHER in r.dialled)
        assert r.peers.entry(LISTEN) is None
        assert LISTEN not in r.dialled
        # Recorded before the connector knew the address (the external address decided
        # later): not dialled either.
        assert r.peers.add(LISTEN, PeerOrigin.TRACKER, trio.current_time())
        r.connector.wake()
        await trio.sleep(60)
        assert LISTEN not in r.dialled
        assert r.peers.entry(LISTEN) is None
