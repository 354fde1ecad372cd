"""The session's peer lists and connector: what is dialled, when, and how many at once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address
from pathlib import Path
from typing import cast

import pytest
import trio
import trio.testing
from _engine_helpers import (
    address_of,
    make_torrent,
    seeder_and_leecher,
    write_content,
)

from bip._client import ClientConfig, Torrent, TorrentOptions, open_session
from bip._client._connector import Connector
from bip._client._session import Session, _LateSink, _SenderSwarm
from bip_handshake import Handshaker, PeerAddress, PeerList, PeerOrigin
from bip_metainfo import InfoHash, Metainfo
from bip_peer import (
    Bitfield,
    DontHave,
    ExtendedHandshake,
    Have,
    HaveAll,
    Peer,
    PeerManager,
    UploadOnly,
)

SIZES = (60_000, 20_000)
DEADLINE = 60.0


class Dials:
    """A fake ``ClientConfig.dial``: records each dial; ``hang`` keeps it connecting forever,
    else it is refused at once."""

    def __init__(self, *, hang: bool) -> None:
        self.hang = hang
        self.attempts: Counter[PeerAddress] = Counter()
        self.times: list[tuple[float, PeerAddress]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, address: PeerAddress) -> trio.abc.Stream:
        self.attempts[address] += 1
        self.times.append((trio.current_time(), address))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.hang:
                await trio.sleep_forever()
            await trio.lowlevel.checkpoint()
            raise ConnectionRefusedError("refused")
        finally:
            self.in_flight -= 1


def fake_config(dials: Dials, **changes: object) -> ClientConfig:
    """A session that never listens nor touches the network: every dial goes to ``dials``."""
    settings: dict[str, object] = {
        "listen": (),
        "trackers": False,
        "utp": False,
        "dial": dials,
        "redial_interval": 15.0,
        "seed_rng": 3,
    }
    settings.update(changes)
    return ClientConfig(**settings)  # type: ignore[arg-type]


def peers_at(count: int, *, base: int = 0x0A000001) -> list[PeerAddress]:
    return [PeerAddress(IPv4Address(base + i), 6881) for i in range(count)]


async def magnet_torrent(session: Session, tmp_path: Path, **options: object) -> Torrent:
    """A torrent whose metadata never comes: it stays in METADATA, dialling its peers."""
    from bip_metainfo import MagnetLink

    magnet = MagnetLink(InfoHash(v1=bytes(range(20))))
    return await session.add_torrent(
        magnet,
        TorrentOptions(tmp_path / "down", resume=False, **options),  # type: ignore[arg-type]
    )


async def wait_for(
    predicate: Callable[[], bool], *, step: float = 0.5, limit: float = 3600
) -> None:
    """Poll ``predicate`` (on the virtual clock) until true; fail after ``limit`` seconds."""
    with trio.fail_after(limit):
        while not predicate():
            await trio.sleep(step)


async def test_at_max_peers_no_more_dials(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # Dials in flight count against max_peers: with room for 3, three dials hang and no
    # other of the 20 peers is tried, however long we wait.
    dials = Dials(hang=True)
    async with open_session(fake_config(dials, max_peers=3, connect_timeout=1e6)) as session:
        torrent = await magnet_torrent(session, tmp_path)
        session.connector.discovered(torrent.info_hash, peers_at(20), "tracker")
        await trio.sleep(600)
        assert dials.most_in_flight == 3
        assert sum(dials.attempts.values()) == 3
        status = torrent.status()
        assert status.known_peers == 20
        assert status.dialling == 3


async def test_dead_address_waits_its_backoff(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # A refused address from the DHT is tried again only after 60 s x (failures + 1), and
    # never after three failures, however often the DHT names it again (a tracker naming it
    # again takes a failure off: tests/bip_handshake/test_peer_list.py).
    dials = Dials(hang=False)
    [dead] = peers_at(1)
    async with open_session(fake_config(dials)) as session:
        torrent = await magnet_torrent(session, tmp_path)
        start = trio.current_time()
        for _ in range(100):  # the DHT naming it every 10 s
            session.connector.discovered(torrent.info_hash, [dead], "dht")
            await trio.sleep(10)
        times = [when - start for when, _ in dials.times]
        assert len(times) == 3
        assert times[0] < 2
        assert 120 <= times[1] - times[0] < 135
        assert 180 <= times[2] - times[1] < 195
        peers = session.peer_list(torrent)
        assert peers is not None
        assert peers.statistics().given_up == 1


async def test_user_peer_is_redialled_every_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # The user's peers are offered again every redial_interval, and dialled again each time
    # they are not connected, failures or not (as before the peer lists).
    dials = Dials(hang=False)
    [user] = peers_at(1)
    async with open_session(fake_config(dials, redial_interval=15.0)) as session:
        await magnet_torrent(session, tmp_path, peers=(user,))
        await trio.sleep(100)
    assert 6 <= dials.attempts[user] <= 8


async def test_peers_beyond_the_dial_queue_are_dialled_later(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # More addresses at once than the handshaker's queue holds (1024): none is lost, each is
    # dialled in turn, a few a second.
    dials = Dials(hang=False)
    many = peers_at(1500)
    async with open_session(fake_config(dials, connection_speed=50, max_peers=200)) as session:
        torrent = await magnet_torrent(session, tmp_path)
        session.connector.discovered(torrent.info_hash, many, "dht")
        await wait_for(lambda: len(dials.attempts) == len(many))
        assert set(dials.attempts) == set(many)
        assert max(dials.attempts.values()) == 1
        # At most connection_speed dials a second (a burst of one second's worth at first).
        first = dials.times[0][0]
        early = [when for when, _ in dials.times if when < first + 10]
        assert len(early) <= 50 * 11
        assert session.handshaker.statistics().dropped_queue_full == 0


async def test_banned_host_is_not_dialled(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    dials = Dials(hang=False)
    bad, good = peers_at(2)
    async with open_session(fake_config(dials)) as session:
        torrent = await magnet_torrent(session, tmp_path)
        peers = session.peer_list(torrent)
        assert peers is not None
        peers.ban(bad.host)
        session.connector.discovered(
            torrent.info_hash, [bad, PeerAddress(bad.host, 1), good], "pex"
        )
        session.connector.discovered(torrent.info_hash, [bad], "user")
        await trio.sleep(300)
    assert bad.host not in {address.host for address in dials.attempts}
    assert dials.attempts[good] >= 1


async def test_swarm_id_reaches_the_handshaker(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # A peer found in a swarm (a hybrid's v2 one) is dialled with that swarm's id: the list
    # keeps the id each address came with.
    dials = Dials(hang=True)
    [peer] = peers_at(1)
    async with open_session(fake_config(dials)) as session:
        torrent = await magnet_torrent(session, tmp_path)
        [swarm_id] = torrent.info_hash.swarm_ids()
        session.connector.discovered(swarm_id, [peer], "tracker")
        await trio.sleep(5)
        peers = session.peer_list(torrent)
        assert peers is not None
        entry = peers.entry(peer)
        assert entry is not None
        assert entry.swarm_id == swarm_id
        assert dials.attempts[peer] == 1
        with pytest.raises(ValueError, match="swarm id"):
            session.handshaker.connect(torrent.info_hash, peer, swarm_id=b"x" * 20)


async def test_max_peers_one_dials_one_seed_on_loopback(tmp_path: Path) -> None:
    # Two seeds on 127.0.0.2 and 127.0.0.3, a leecher allowed one peer: it dials one seed,
    # downloads everything from it, and never dials the other while connected.
    folder = write_content(tmp_path / "seed", SIZES)
    torrent: Metainfo = make_torrent(folder, "v1")
    with trio.fail_after(DEADLINE):
        async with (
            seeder_and_leecher(torrent, folder, listen=(("127.0.0.2", 0),)) as (first, _),
            seeder_and_leecher(torrent, folder, listen=(("127.0.0.3", 0),)) as (second, _),
            open_session(
                ClientConfig(
                    listen=(("127.0.0.4", 0),), trackers=False, max_peers=1, redial_interval=0.2
                )
            ) as leecher,
        ):
            download = await leecher.add_torrent(
                torrent,
                TorrentOptions(
                    tmp_path / "down",
                    peers=(address_of(first), address_of(second)),
                    resume=False,
                ),
            )
            await download.wait_complete()
            assert leecher.handshaker.statistics().outbound_attempts == 1
            status = download.status()
            assert status.known_peers == 2


async def test_inbound_peer_listed_at_its_listen_port_and_seed_marked_while_connected(
    tmp_path: Path,
) -> None:
    # The leecher dials the seed: on the seed's side it came from an ephemeral port, and its
    # extended handshake's ``p`` moves its entry to where it listens (kept after it leaves).
    # On the leecher's side the seed is marked a seed as soon as it says so, while connected
    # (a partial selection keeps the connection up once complete).
    folder = write_content(tmp_path / "seed", SIZES)
    torrent: Metainfo = make_torrent(folder, "v1")
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            download = await leecher.add_torrent(
                torrent,
                TorrentOptions(
                    tmp_path / "down",
                    peers=(address_of(seeder),),
                    resume=False,
                    files=frozenset({0}),
                ),
            )
            await download.wait_complete()
            seeding = seeder.find(torrent.info.info_hash)
            assert seeding is not None
            theirs = seeder.peer_list(seeding)
            assert theirs is not None
            listen = address_of(leecher)
            await wait_for(lambda: theirs.entry(listen) is not None, step=0.01, limit=10)
            [entry] = theirs.entries()  # the ephemeral one is gone
            assert entry.address == listen
            assert entry.connected
            assert entry.origin == PeerOrigin.INCOMING
            ours = leecher.peer_list(download)
            assert ours is not None
            seed = ours.entry(address_of(seeder))
            assert seed is not None
            assert seed.connected
            assert seed.seed


class FakeConnection:
    def __init__(self, *, has_all: bool = False, upload_only: bool = False) -> None:
        self.peer_has_all = has_all
        self.peer_upload_only = upload_only


class FakePeer:
    """What the connector reads of a peer."""

    def __init__(
        self, address: PeerAddress, direction: str, swarm_id: bytes, connection: FakeConnection
    ) -> None:
        self.address = address
        self.direction = direction
        self.swarm_id = swarm_id
        self.connection = connection


class FakeTorrent:
    def __init__(self, info_hash: InfoHash) -> None:
        self.info_hash = info_hash
        self.completed = trio.Event()
        self.peers: set[Peer] = set()
        self.halted = False


HYBRID = InfoHash(v1=b"1" * 20, v2=b"2" * 32)


def fake_connector(torrent: FakeTorrent) -> tuple[Connector, PeerList]:
    connector = Connector(
        handshaker=cast(Handshaker, None),  # not dialling in these tests
        find=lambda _: torrent,
        connected_peers=lambda: 0,
        our_addresses=lambda: (),
        max_peers=10,
    )
    return connector, connector.attach(torrent)


async def test_seed_marked_on_each_message_and_unmarked_when_it_no_longer_is() -> None:
    torrent = FakeTorrent(HYBRID)
    connector, peers = fake_connector(torrent)
    address = PeerAddress.parse("10.0.0.5:6881")
    connection = FakeConnection()
    peer = cast(Peer, FakePeer(address, "outbound", HYBRID.v1 or b"", connection))
    peers.add(address, PeerOrigin.TRACKER, 0.0)
    peers.connected(address, 0.0)
    connector.peer_message(torrent, peer, Bitfield(b"\xff"))  # its bitfield says not yet
    assert not peers.entry(address).seed  # type: ignore[union-attr]
    connection.peer_has_all = True
    connector.peer_message(torrent, peer, Have(3))
    assert peers.entry(address).seed  # type: ignore[union-attr]
    connection.peer_has_all = False
    connector.peer_message(torrent, peer, DontHave(3))
    assert not peers.entry(address).seed  # type: ignore[union-attr]
    connection.peer_upload_only = True  # BEP 21: only uploads, wants nothing of a seed
    connector.peer_message(torrent, peer, UploadOnly(True))
    assert peers.entry(address).seed  # type: ignore[union-attr]
    connector.peer_message(torrent, peer, HaveAll())
    connector.peer_removed(torrent, peer, "closed")
    # We seed: it is not dialled again (after its wait, on the connector's clock).
    later = trio.current_time() + 100
    assert peers.connect_candidates(5, later, seed=True) == []
    assert peers.connect_candidates(5, later, seed=False) == [address]


async def test_inbound_listen_port_then_disconnect_under_it() -> None:
    torrent = FakeTorrent(HYBRID)
    connector, peers = fake_connector(torrent)
    ephemeral = PeerAddress.parse("10.0.0.6:50000")
    listen = PeerAddress.parse("10.0.0.6:6881")
    [_, v2] = HYBRID.swarm_ids()
    peer = cast(Peer, FakePeer(ephemeral, "inbound", v2, FakeConnection(has_all=True)))
    peers.connected(ephemeral, 0.0, origin=PeerOrigin.INCOMING)
    connector.peer_message(torrent, peer, ExtendedHandshake(p=6881))
    connector.peer_message(torrent, peer, ExtendedHandshake(p=6881))  # again: no change
    assert set(peers._entries) == {listen}
    entry = peers.entry(listen)
    assert entry is not None
    assert entry.swarm_id == v2  # dialled back in the swarm it came from
    assert entry.seed
    connector.peer_removed(torrent, peer, "closed")
    entry = peers.entry(listen)
    assert entry is not None
    assert not entry.connected
    assert connector._listed == {}
    # An outbound peer's p changes nothing: we know where it listens.
    out = PeerAddress.parse("10.0.0.7:6881")
    peers.connected(out, 0.0)
    outbound = cast(Peer, FakePeer(out, "outbound", v2, FakeConnection()))
    connector.peer_message(torrent, outbound, ExtendedHandshake(p=7000))
    assert PeerAddress.parse("10.0.0.7:7000") not in peers


async def test_pex_peers_keep_the_swarm_of_the_connection_that_listed_them() -> None:
    # PEX hands the sink the torrent's hashes; the service before it says which swarm the
    # message came from, and the sink names the peers by that swarm id.
    got: list[tuple[InfoHash | bytes, list[PeerAddress], str]] = []

    class Target:
        def discovered(
            self, info_hash: InfoHash | bytes, addresses: Iterable[PeerAddress], source: str
        ) -> None:
            got.append((info_hash, list(addresses), source))

    sink = _LateSink()
    found = [PeerAddress.parse("10.0.0.8:6881")]
    sink.discovered(HYBRID, found, "pex")  # no target yet: dropped
    sink.target = Target()
    [_, v2] = HYBRID.swarm_ids()
    service = _SenderSwarm(sink)
    assert service.handshake_fields(cast(Peer, None)) == {}
    sender = cast(Peer, FakePeer(found[0], "outbound", v2, FakeConnection()))
    assert not service.message_received(cast(PeerManager, None), sender, object())
    sink.discovered(HYBRID, found, "pex")
    other = InfoHash(v1=b"9" * 20)  # a swarm id not of this torrent: the hashes as given
    sink.discovered(other, found, "pex")
    assert got == [(v2, found, "pex"), (other, found, "pex")]
