"""A session behind a SOCKS5 proxy announces to a UDP tracker through the proxy's UDP relay
(libtorrent's ``proxy_tracker_connections``): the in-test proxy (tests/_socks_server.py) and
bip_utracker's server on 127.0.0.1; the leecher knows the seed only from the tracker."""

from __future__ import annotations

from pathlib import Path

import trio
from _engine_helpers import (
    LOOPBACK,
    address_of,
    loopback_config,
    make_torrent,
    same_files,
    write_content,
)
from tests._socks_server import serve_socks5

from bip._client import TorrentOptions, open_session
from bip_utracker import serve_tracker

DEADLINE = 20.0


async def test_a_leecher_finds_the_seed_through_a_udp_tracker_behind_the_proxy(
    tmp_path: Path,
) -> None:
    folder = write_content(tmp_path / "seed", (40_000, 3))
    with trio.fail_after(DEADLINE):
        async with serve_tracker((LOOPBACK, 0)) as tracker, serve_socks5() as proxy:
            url = f"udp://{LOOPBACK}:{tracker.address[1]}/announce"
            torrent = make_torrent(folder, "v1")
            async with open_session(loopback_config(trackers=True)) as seeder:
                # The seed announces directly.
                seeding = await seeder.add_torrent(
                    torrent, TorrentOptions(folder.parent, extra_trackers=(url,))
                )
                await seeding.wait_complete()
                while not tracker.statistics().announces:  # bounded by the deadline
                    await trio.sleep(0.01)
                config = loopback_config(proxy=proxy.url(), trackers=True)
                async with open_session(config) as leecher:
                    download = await leecher.add_torrent(
                        torrent, TorrentOptions(tmp_path / "down", extra_trackers=(url,))
                    )
                    await download.wait_complete()
                    assert leecher.trackers is not None
                    relayed = leecher.trackers.proxy_statistics
                    [ours] = leecher.trackers.local_addresses
                    seed = address_of(seeder)
    # The leecher's connect and announce went through the relay, and so did the dial.
    # Ours is the association our tracker socket used (the DHT may have one of its own).
    [association] = [a for a in proxy.associations if a.client == (LOOPBACK, ours.port)]
    assert association.relayed >= 2
    assert association.returned >= 2
    assert relayed is not None
    assert relayed.sent >= 2
    assert relayed.received >= 2
    assert (LOOPBACK, seed.port) in proxy.connects
    assert same_files(folder, tmp_path / "down" / "album")
