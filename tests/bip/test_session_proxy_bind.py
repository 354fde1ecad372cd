"""A session bound to one address (``--bind 127.0.0.2``) behind a SOCKS5 proxy connects to
the proxy from that address: its UDP tracker and uTP relay sockets and their control
connections, its TCP dials (SocksDialer), its HTTP tracker requests. The in-test proxy
(tests/_socks_server.py) on 127.0.0.1 relays UDP only for the control connection's host, as
Dante does: before, the relay sockets were bound to 127.0.0.2 (the tracker's) while their
control connections left from 127.0.0.1, and no datagram went through."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from _engine_helpers import LOOPBACK, loopback_config, make_torrent, same_files, write_content
from _http_tracker_server import MiniTracker, http_server
from tests._loopbacks import OTHER_LOOPBACK, require_loopbacks
from tests._socks_server import serve_socks5

from bip._client import TorrentOptions, open_session
from bip._client._http_tracker import HttpTrackerClient
from bip_handshake import PeerId, SocksDialer
from bip_handshake._socks_shell import ProxyConfig
from bip_utracker import serve_tracker

DEADLINE = 15.0


@pytest.fixture(autouse=True)
def _other_loopback() -> None:
    """Skip where 127.0.0.2 is not an address of this host (macOS has 127.0.0.1 alone)."""
    require_loopbacks(OTHER_LOOPBACK)


async def test_a_bound_leecher_reaches_the_udp_tracker_and_the_seed_through_the_relay(
    tmp_path: Path,
) -> None:
    folder = write_content(tmp_path / "seed", (40_000, 2))
    torrent = make_torrent(folder, "v1")
    with trio.fail_after(DEADLINE):
        async with serve_tracker((LOOPBACK, 0)) as tracker, serve_socks5() as proxy:
            url = f"udp://{LOOPBACK}:{tracker.address[1]}/announce"
            async with open_session(loopback_config(trackers=True)) as seeder:
                # The seed announces directly.
                seeding = await seeder.add_torrent(
                    torrent, TorrentOptions(folder.parent, extra_trackers=(url,))
                )
                await seeding.wait_complete()
                while not tracker.statistics().announces:  # bounded by the deadline
                    await trio.sleep(0.01)
                config = loopback_config(
                    listen=((OTHER_LOOPBACK, 0),),
                    proxy=proxy.url(),
                    trackers=True,
                    prefer_utp=True,
                )
                async with open_session(config) as leecher:
                    assert leecher.dialer is not None
                    via = leecher.dialer._connect_tcp_via
                    assert isinstance(via, SocksDialer)
                    assert via.local_address == OTHER_LOOPBACK
                    relayed = leecher.utp_sockets[-1]
                    assert str(relayed.local_address.host) == OTHER_LOOPBACK
                    utp_port = relayed.local_address.port
                    download = await leecher.add_torrent(
                        torrent, TorrentOptions(tmp_path / "down", extra_trackers=(url,))
                    )
                    await download.wait_complete()
                    assert leecher.trackers is not None
                    [ours] = leecher.trackers.local_addresses
    # Every connection to the proxy left from 127.0.0.2, and the tracker's datagrams (its
    # connect and announce) went through the relay the proxy set up for that host.
    assert proxy.client_hosts
    assert set(proxy.client_hosts) == {OTHER_LOOPBACK}
    assert {association.client_host for association in proxy.associations} == {OTHER_LOOPBACK}
    [association] = [a for a in proxy.associations if a.client == (OTHER_LOOPBACK, ours.port)]
    assert association.relayed >= 2
    assert association.returned >= 2
    # The seed was reached by uTP through the relay of the uTP socket, never by a TCP CONNECT.
    assert proxy.connects == []
    [utp] = [a for a in proxy.associations if a.client == (OTHER_LOOPBACK, utp_port)]
    assert utp.relayed > 0
    assert utp.returned > 0
    assert same_files(folder, tmp_path / "down" / "album")


async def test_http_tracker_requests_reach_the_proxy_from_the_local_address() -> None:
    tracker = MiniTracker()
    with trio.fail_after(DEADLINE):
        async with serve_socks5() as proxy, http_server(tracker) as server:
            config = ProxyConfig(LOOPBACK, proxy.port)
            async with HttpTrackerClient(proxy=config, local_address=OTHER_LOOPBACK) as client:
                await client.announce(
                    server.url, bytes(range(20)), peer_id=PeerId.generate(), port=6881, left=1
                )
    assert proxy.client_hosts == [OTHER_LOOPBACK]
    assert len(proxy.connects) == 1
