"""Mends of the connector: a source listing our own address, and addresses only voted ours."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
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
# Our external address as peers voted it (BEP 10 yourip): an honest peer's, as three liars
# can make it.
VOTED = PeerAddress.parse("10.0.0.3:6881")
OTHER = PeerAddress.parse("10.0.0.2:6881")
HONEST = frozenset({OTHER, VOTED})  # dials to these hang (a peer); the others reach us


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
    asked: list[int]  # our_addresses() calls, as a one-item counter


async def wait_for(predicate: Callable[[], bool], *, timeout: float = 30.0) -> None:
    """Poll ``predicate`` on the (virtual) clock until it holds; bounded in time."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


@asynccontextmanager
async def rig(listen: tuple[tuple[str, int], ...] = ()) -> AsyncIterator[Rig]:
    """A connector over a real handshaker (listening on ``listen``) whose every dial reaches
    ourselves (the peer sends our own handshake back) except to ``HONEST``, which hang. The
    session's ``our_addresses`` gives ``VOTED``."""
    dialled: list[PeerAddress] = []
    asked = [0]

    def our_addresses() -> tuple[PeerAddress, ...]:
        asked[0] += 1
        return (VOTED,)

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
                if address not in HONEST:
                    await theirs.send_all(data[:68])
                await trio.sleep_forever()

            nursery.start_soon(echo)
            return ours

        async with open_handshaker(
            listen=list(listen), dial=dial, encryption=EncryptionPolicy.PLAINTEXT_ONLY
        ) as handshaker:
            handshaker.register(torrent.info_hash)
            connector = Connector(
                handshaker=handshaker,
                find=lambda _: torrent,
                connected_peers=lambda: 0,
                our_addresses=our_addresses,
                max_peers=50,
                new_list=lambda: PeerList(min_reconnect_time=0.05),
            )
            peers = connector.attach(torrent)
            nursery.start_soon(connector.run)
            yield Rig(handshaker, connector, torrent, peers, dialled, asked)
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


async def test_our_listen_address_is_refused_from_every_source(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An address we listen on (the handshaker's, in any form) is neither recorded nor
    dialled, as PEX refuses it; one recorded before is dropped undialled."""
    async with rig(listen=(("127.0.0.1", 0),)) as r:
        [listen] = r.handshaker.listen_addresses
        mapped = PeerAddress.parse(f"[::ffff:{listen.host}]:{listen.port}")
        r.connector.discovered(r.torrent.info_hash, [listen, mapped, OTHER], "pex")
        await wait_for(lambda: OTHER in r.dialled)
        assert r.peers.entry(listen) is None
        assert listen not in r.dialled
        assert r.peers.add(listen, PeerOrigin.TRACKER, trio.current_time())
        r.connector.wake()
        await trio.sleep(60)
        assert listen not in r.dialled
        assert mapped not in r.dialled
        assert r.peers.entry(listen) is None


async def test_an_address_only_voted_ours_is_still_a_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Peers decide our external address (BEP 10 yourip votes): three liars could name an
    honest peer's address. An address only voted ours (``our_addresses``) is recorded from
    every source and dialled as any; were it ours, the dial would find it (refused then)."""
    async with rig() as r:
        for source in ("tracker", "user", "dht"):
            r.connector.discovered(r.torrent.info_hash, [VOTED], source)
            assert r.peers.entry(VOTED) is not None
        await wait_for(lambda: VOTED in r.dialled)
        assert r.handshaker.statistics().self_connection == 0


async def test_discovered_asks_nothing_per_call(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``discovered`` runs for every LSD datagram and PEX message: it checks the addresses
    against sets kept, asking neither ``our_addresses`` nor the listeners (a system call
    each) per call."""
    reads = [0]
    listen_addresses = Handshaker.listen_addresses

    def counted(handshaker: Handshaker) -> list[PeerAddress]:
        reads[0] += 1
        return listen_addresses.fget(handshaker)  # type: ignore[attr-defined,no-any-return]

    monkeypatch.setattr(Handshaker, "listen_addresses", property(counted))
    async with rig(listen=(("127.0.0.1", 0),)) as r:
        await trio.testing.wait_all_tasks_blocked()
        asked, read = r.asked[0], reads[0]
        for port in range(1, 101):
            address = PeerAddress.parse(f"10.2.0.1:{port}")
            r.connector.discovered(r.torrent.info_hash, [address], "lsd")
        assert r.asked[0] == asked
        assert reads[0] <= read + 1  # once at most, kept: the listeners never change


async def test_the_addresses_found_ours_are_the_handshakers_alone(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handshaker remembers the addresses that answered with our peer id (its last
    ``MAX_SELF_ADDRESSES``): the connector refuses what it remembers, keeping no copy of its
    own that could disagree with it."""
    async with rig() as r:
        r.connector.discovered(r.torrent.info_hash, [ME], "tracker")
        await wait_for(lambda: r.handshaker.is_self_address(ME) and r.peers.entry(ME) is None)
        r.connector.discovered(r.torrent.info_hash, [ME], "tracker")
        assert r.peers.entry(ME) is None
        # The handshaker forgot it (newer ones took its place): a peer like any again.
        monkeypatch.setattr(r.handshaker, "is_self_address", lambda address: False)
        r.connector.discovered(r.torrent.info_hash, [ME], "tracker")
        assert r.peers.entry(ME) is not None
