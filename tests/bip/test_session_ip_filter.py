"""The session's IP filter on loopback: each client on its own 127.0.0.X, since the filter
judges hosts. A blocked peer is never dialled and is refused inbound; a download completes
from an allowed seed; :meth:`Session.set_ip_filter` drops the connected peers it blocks and
keeps the others."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trio
from _engine_helpers import loopback_config, make_torrent, same_files, write_content

from bip._client import ClientConfig, Session, TorrentOptions, open_session
from bip._client._session import REASON_IP_FILTER
from bip_dht import open_dht
from bip_handshake import IPFilter, IPRange, PeerAddress

SIZES = (300_000, 120_000)
DEADLINE = 30.0
ALLOWED_HOST = "127.0.0.12"
BLOCKED_HOST = "127.0.0.13"
LEECHER_HOST = "127.0.0.14"
BLOCK = IPFilter.blocking([IPRange(IPv4Address(BLOCKED_HOST), IPv4Address(BLOCKED_HOST))])


def on(host: str, **changes: object) -> ClientConfig:
    # TCP only: the filter sits in the handshaker, which both transports go through, and
    # one transport keeps the counts exact.
    return loopback_config(listen=((host, 0),), utp=False, **changes)


def address(session: Session) -> PeerAddress:
    [where] = session.handshaker.listen_addresses
    return where


def connected_hosts(session: Session) -> set[str]:
    return {str(peer.address.normalized().host) for peer in session.manager.peers}


async def wait_until(condition: Callable[[], bool]) -> None:
    while not condition():  # bounded by the caller's fail_after
        await trio.sleep(0.02)


async def test_blocked_seed_is_ignored_and_the_download_completes(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1", piece_length=16384)
    with trio.fail_after(DEADLINE):
        async with (
            open_session(on(ALLOWED_HOST)) as allowed,
            open_session(on(BLOCKED_HOST)) as blocked,
            open_session(on(LEECHER_HOST, ip_filter=BLOCK)) as leecher,
        ):
            for seeder in (allowed, blocked):
                seeding = await seeder.add_torrent(
                    torrent, TorrentOptions(folder.parent, files=frozenset())
                )
                await seeding.wait_complete()
            assert leecher.ip_filter == BLOCK
            download = await leecher.add_torrent(
                torrent,
                TorrentOptions(tmp_path / "down", peers=(address(blocked), address(allowed))),
            )
            # The blocked seed dials the leecher too: refused before a byte is read.
            assert blocked.handshaker.connect(download.info_hash, address(leecher))
            await download.wait_complete()
            await wait_until(lambda: leecher.handshaker.statistics().filtered_ip >= 2)
            stats = leecher.handshaker.statistics()
            blocked_stats = blocked.handshaker.statistics()
            assert BLOCKED_HOST not in connected_hosts(leecher)
    assert same_files(folder, tmp_path / "down" / "album")
    # Never dialled: the blocked seed saw no connection from the leecher; its own dial was
    # closed by the leecher before any handshake.
    assert blocked_stats.inbound_attempts == 0
    assert blocked_stats.outbound_completed == 0
    assert stats.inbound_completed == 0
    assert stats.outbound_completed >= 1


async def test_set_ip_filter_drops_the_blocked_peer_and_keeps_the_other(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_peer")
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1", piece_length=16384)
    # A slow download (local peers held to a small limit) keeps both peers connected.
    slow = {"download_rate_limit": 4096.0, "limit_local_peers": True}
    with trio.fail_after(DEADLINE):
        async with (
            open_session(on(ALLOWED_HOST)) as allowed,
            open_session(on(BLOCKED_HOST)) as blocked,
            open_session(on(LEECHER_HOST, **slow)) as leecher,
        ):
            for seeder in (allowed, blocked):
                seeding = await seeder.add_torrent(
                    torrent, TorrentOptions(folder.parent, files=frozenset())
                )
                await seeding.wait_complete()
            download = await leecher.add_torrent(
                torrent,
                TorrentOptions(
                    tmp_path / "down",
                    peers=(address(blocked), address(allowed)),
                    resume=False,
                ),
            )
            both = {ALLOWED_HOST, BLOCKED_HOST}
            await wait_until(lambda: connected_hosts(leecher) == both)
            assert leecher.set_ip_filter(BLOCK) == 1
            assert leecher.ip_filter == BLOCK
            await wait_until(lambda: connected_hosts(leecher) == {ALLOWED_HOST})
            # The user's peers are offered again every redial interval (1 s here): the
            # blocked one is refused each time, never reconnected.
            await wait_until(lambda: leecher.handshaker.statistics().filtered_ip >= 1)
            assert connected_hosts(leecher) == {ALLOWED_HOST}
            assert download.status().phase.name != "FAILED"
            # Lifting the filter lets the redial reconnect it.
            assert leecher.set_ip_filter(None) == 0
            await wait_until(lambda: connected_hosts(leecher) == both)
    removals = [r.getMessage() for r in caplog.records if REASON_IP_FILTER in r.getMessage()]
    assert len(removals) == 1
    assert BLOCKED_HOST in removals[0]


async def test_config_checks_the_filter_type() -> None:
    with pytest.raises(TypeError, match="ip_filter"):
        ClientConfig(ip_filter="127.0.0.1")  # type: ignore[arg-type]
    assert ClientConfig().ip_filter is None


async def test_the_filter_reaches_the_dht_nodes(tmp_path: Path) -> None:
    """The session's filter is the DHT's too (libtorrent filters DHT nodes by it): a blocked
    node is never queried, and a new filter replaces it there."""
    with trio.fail_after(DEADLINE):
        async with (
            open_dht((BLOCKED_HOST, 0), rng=random.Random(1)) as blocked_node,
            open_dht((LEECHER_HOST, 0), rng=random.Random(2)) as dht,
            open_session(on(LEECHER_HOST, ip_filter=BLOCK), dht=dht) as session,
        ):
            filters = [dht.ip_filter]
            [blocked_address] = blocked_node.addresses
            assert await dht.ping(blocked_address) is None  # never sent
            assert dht.statistics().filtered_ip >= 1
            session.set_ip_filter(None)
            filters.append(dht.ip_filter)
            assert filters[0] is BLOCK
            assert filters[1] is None
            assert await dht.ping(blocked_address) is not None
