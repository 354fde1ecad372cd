"""Our HTTP tracker client (bip's HttpTrackerClient) against opentracker's HTTP side, and a
``bip download`` whose only tracker is opentracker's ``http://`` URL, seeded by libtorrent
announcing to the same tracker.

opentracker (Debian's, whitelist mode) and libtorrent run on loopback only and are stopped by
PID at teardown; ``bip download`` runs as its own process.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from bip._client._http_tracker import HttpTrackerClient
from bip_handshake import PeerAddress, PeerId
from bip_utracker import AnnounceEvent, TrackerError

from ._helpers import StartProcess, start_opentracker
from ._seeders import HOST, make_tracked_torrent, run_lt_peer

pytestmark = pytest.mark.interop

SWARM = hashlib.sha1(b"bip http tracker interop swarm").digest()
NOT_LISTED = hashlib.sha1(b"bip http tracker interop not whitelisted").digest()
DOWNLOAD_TIMEOUT = 60.0


def _peer_id(n: int) -> PeerId:
    return PeerId(b"-BP0100-" + n.to_bytes(12, "big"))


async def test_two_announces_over_http(tmp_path: Path, start_process: StartProcess) -> None:
    tracker = await trio.to_thread.run_sync(
        start_opentracker, start_process, tmp_path / "opentracker", [SWARM]
    )
    client = HttpTrackerClient(timeout=10)
    with trio.fail_after(30):
        first = await client.announce(
            tracker.http_url,
            SWARM,
            peer_id=_peer_id(1),
            port=7101,
            left=0,
            event=AnnounceEvent.STARTED,
        )
        second = await client.announce(
            tracker.http_url,
            SWARM,
            peer_id=_peer_id(2),
            port=7102,
            left=1000,
            event=AnnounceEvent.STARTED,
        )
        assert PeerAddress.parse(f"{HOST}:7101") in second.peers
        assert (second.seeders, second.leechers) == (1, 1)
        assert first.interval > 0
        assert second.tracker == PeerAddress.parse(f"{HOST}:{tracker.port}")
        stats = await client.scrape(tracker.http_url, [SWARM])
        assert (stats[0].seeders, stats[0].leechers) == (1, 1)
        # A torrent missing from the whitelist: opentracker refuses it (HTTP 403).
        with pytest.raises(TrackerError):
            await client.announce(tracker.http_url, NOT_LISTED, peer_id=_peer_id(3), port=7103)
        for n, port in ((1, 7101), (2, 7102)):
            await client.announce(
                tracker.http_url,
                SWARM,
                peer_id=_peer_id(n),
                port=port,
                event=AnnounceEvent.STOPPED,
            )


async def test_bip_download_through_an_http_tracker(
    tmp_path: Path, start_process: StartProcess
) -> None:
    torrent, tracker = await trio.to_thread.run_sync(
        lambda: make_tracked_torrent(start_process, tmp_path, http=True)
    )
    seeder = await trio.to_thread.run_sync(
        lambda: run_lt_peer(
            start_process,
            tmp_path,
            torrent.torrent_path,
            torrent.content_dir,
            wait="seeding",
            seed_mode=True,
            alert_tracker=True,
            lifetime=DOWNLOAD_TIMEOUT + 60,
        )
    )
    libtorrent = PeerAddress.parse(f"{HOST}:{seeder['port']}")
    client = HttpTrackerClient(timeout=5)
    with trio.fail_after(45):
        while True:  # libtorrent announces to the http:// URL once it is seeding
            stats = await client.scrape(tracker.http_url, [torrent.info_hash])
            if stats[0].seeders >= 1:
                break
            await trio.sleep(0.5)
    down = tmp_path / "down"
    argv = [sys.executable, "-m", "bip", "download", str(torrent.torrent_path)]
    argv += ["--dir", str(down), "--bind", HOST, "--port", "0", "--no-dht", "-q"]
    result = await trio.to_thread.run_sync(
        lambda: subprocess.run(
            argv, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT, check=False
        )
    )
    assert result.returncode == 0, result.stderr
    payload = torrent.content_dir / "payload.bin"
    assert (down / payload.name).read_bytes() == payload.read_bytes()
    assert "skipping" not in result.stderr  # the http:// tracker was not skipped
    # libtorrent was the only seeder, found through the tracker: our announce lists it too.
    answer = await client.announce(
        tracker.http_url, torrent.info_hash, peer_id=_peer_id(9), port=7109, left=1
    )
    assert libtorrent in answer.peers
