"""Our UDP tracker client (bip_utracker) against opentracker, with fake peers and with aria2."""

from __future__ import annotations

import hashlib
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import trio

from bip_handshake import PeerAddress, PeerId, PeerSink
from bip_utracker._client import TrackerClient, open_tracker_client
from bip_utracker._codec import AnnounceEvent, ScrapeStats
from bip_utracker._errors import TrackerRejectedError

from ._helpers import StartProcess, require_client, start_opentracker
from ._inbound import start_aria2_downloader
from ._seeders import HOST, make_tracked_torrent, start_libtorrent

pytestmark = pytest.mark.interop

SWARM = hashlib.sha1(b"bip utracker interop swarm").digest()
QUIET = hashlib.sha1(b"bip utracker interop quiet swarm").digest()
NOT_LISTED = hashlib.sha1(b"bip utracker interop not whitelisted").digest()


def _client(host: str, sink: PeerSink | None = None) -> AbstractAsyncContextManager[TrackerClient]:
    # Real time on loopback: answers come in milliseconds, so a short retransmission schedule
    # keeps a lost datagram from stalling the test for BEP 15's 15 s.
    return open_tracker_client(
        bind_v4=host, bind_v6=None, sink=sink, timeout=1.0, max_retransmits=3
    )


def _peer_id(n: int) -> PeerId:
    return PeerId(b"-BP0001-" + n.to_bytes(12, "big"))


async def _announce_from(
    host: str, url: str, port: int, *, left: int, event: AnnounceEvent, n: int
) -> None:
    """Announce a fake peer ``host:port``: opentracker records the datagram's source address."""
    async with _client(host) as client:
        await client.announce(url, SWARM, peer_id=_peer_id(n), port=port, left=left, event=event)


async def test_announce_and_scrape_against_opentracker(
    tmp_path: Path, start_process: StartProcess
) -> None:
    require_client("opentracker")
    server = await trio.to_thread.run_sync(
        start_opentracker, start_process, tmp_path / "opentracker", [SWARM, QUIET]
    )
    url = server.udp_url
    seeder = PeerAddress.parse("127.0.0.2:7002")
    leecher = PeerAddress.parse("127.0.0.3:7003")
    finisher = PeerAddress.parse("127.0.0.4:7004")
    with trio.fail_after(60):
        await _announce_from("127.0.0.2", url, 7002, left=0, event=AnnounceEvent.STARTED, n=2)
        await _announce_from("127.0.0.3", url, 7003, left=1000, event=AnnounceEvent.STARTED, n=3)
        await _announce_from("127.0.0.4", url, 7004, left=1000, event=AnnounceEvent.STARTED, n=4)
        await _announce_from("127.0.0.4", url, 7004, left=0, event=AnnounceEvent.COMPLETED, n=4)

        found: list[tuple[object, list[PeerAddress], str]] = []

        class Sink:
            def discovered(self, info_hash: object, addresses: object, source: str) -> None:
                assert isinstance(addresses, tuple)
                found.append((info_hash, list(addresses), source))

        async with _client(HOST, Sink()) as client:
            result = await client.announce(
                url,
                SWARM,
                peer_id=_peer_id(1),
                port=7001,
                left=500,
                event=AnnounceEvent.STARTED,
                num_want=50,
            )
            assert result.interval > 0
            # Two seeders (one from the start, one completed), two leechers (3 and us).
            assert (result.seeders, result.leechers) == (2, 2)
            assert {seeder, leecher, finisher} <= set(result.peers)
            assert all(peer.family == 4 for peer in result.peers)
            assert found == [(SWARM, list(result.peers), "tracker")]

            scrape = await client.scrape(url, [SWARM, QUIET])
            assert scrape.stats(SWARM) == ScrapeStats(seeders=2, completed=1, leechers=2)
            assert scrape.stats(QUIET) == ScrapeStats(seeders=0, completed=0, leechers=0)

            # A stopped peer leaves the swarm.
            await _announce_from(
                "127.0.0.3", url, 7003, left=1000, event=AnnounceEvent.STOPPED, n=3
            )
            scrape = await client.scrape(url, [SWARM])
            assert scrape.stats(SWARM) == ScrapeStats(seeders=2, completed=1, leechers=1)
            again = await client.announce(url, SWARM, peer_id=_peer_id(1), port=7001, left=500)
            assert leecher not in again.peers

            # opentracker in whitelist mode answers a torrent it does not list with an 8-byte
            # announce reply (no counts, no message): we report it as a refusal.
            with pytest.raises(TrackerRejectedError, match="whitelist"):
                await client.announce(url, NOT_LISTED, peer_id=_peer_id(1), port=7001)

            stats = client.statistics()
            # Every request after the first reused the one connection id.
            assert stats.connects == 1
            assert stats.ignored_unknown_transaction == stats.ignored_wrong_address == 0


async def test_aria2_announced_through_opentracker_is_found(
    tmp_path: Path, start_process: StartProcess
) -> None:
    require_client("aria2c")
    torrent, server = await trio.to_thread.run_sync(make_tracked_torrent, start_process, tmp_path)
    await trio.to_thread.run_sync(
        start_aria2_downloader, start_process, tmp_path / "torrent", torrent
    )
    async with _client("127.0.0.2") as client:
        with trio.fail_after(45):
            while True:  # aria2 announces once its torrent is loaded
                scrape = await client.scrape(server.udp_url, [torrent.info_hash])
                if scrape.stats(torrent.v1).leechers >= 1:
                    break
                await trio.sleep(0.5)
            # We announce as a seeder from our own loopback address and get aria2 back.
            result = await client.announce(
                server.udp_url,
                torrent.info_hash,
                peer_id=_peer_id(9),
                port=7009,
                left=0,
                event=AnnounceEvent.STARTED,
            )
    aria2 = [peer for peer in result.peers if peer != PeerAddress.parse("127.0.0.2:7009")]
    assert aria2, result
    assert all(str(peer.host) == HOST for peer in aria2)
    assert result.leechers >= 1
    assert result.seeders == 1


async def test_libtorrent_seeding_through_opentracker_is_found(
    tmp_path: Path, start_process: StartProcess
) -> None:
    require_client("libtorrent")
    torrent, server = await trio.to_thread.run_sync(make_tracked_torrent, start_process, tmp_path)
    seeder = await trio.to_thread.run_sync(
        start_libtorrent, start_process, tmp_path / "torrent", torrent
    )
    async with _client("127.0.0.2") as client:
        with trio.fail_after(45):
            while True:  # libtorrent announces (left 0: a seeder) once it is seeding
                scrape = await client.scrape(server.udp_url, [torrent.info_hash])
                if scrape.stats(torrent.v1).seeders >= 1:
                    break
                await trio.sleep(0.5)
            result = await client.announce(
                server.udp_url, torrent.info_hash, peer_id=_peer_id(8), port=7008, left=1
            )
    assert PeerAddress.parse(f"{seeder.host}:{seeder.port}") in result.peers
    assert (result.seeders, result.leechers) == (1, 1)
