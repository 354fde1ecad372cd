"""Real clients use bip_utracker's TrackerServer as their tracker.

- libtorrent seeds and aria2 downloads, then aria2 seeds and libtorrent downloads, each side
  knowing the other only through our tracker (the torrent names ``udp://127.0.0.1:P/announce``
  and nothing else: no DHT peers, no PEX, no ``connect_peer``).
- qBittorrent's announce shows up in our swarm store, and its Web API says the tracker works.

The tracker runs in a thread of its own with its own trio loop, so that it keeps answering
while this (synchronous) test waits for processes with the shared launchers; the test reads the
store through ``trio.from_thread`` so that it never races the loop.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
import trio.from_thread
import trio.lowlevel

from bip_handshake import PeerAddress
from bip_utracker._server import TrackerServer, serve_tracker
from bip_utracker._server_core import ServerConfig, ServerStatistics

from ._helpers import StartProcess, wait_for
from ._inbound import start_aria2_downloader, start_libtorrent_downloader
from ._seeders import (
    HOST,
    SmallTorrent,
    launch_qbittorrent,
    make_torrent,
    start_aria2_process,
    start_libtorrent,
)

pytestmark = pytest.mark.interop

T = TypeVar("T")


class ThreadedTracker:
    """Our tracker running in another thread; every look at it goes through its trio loop."""

    def __init__(self, server: TrackerServer, token: trio.lowlevel.TrioToken) -> None:
        self._server = server
        self._token = token
        self.port = server.address[1]
        self.url = f"udp://{HOST}:{self.port}/announce"

    def call(self, function: Callable[[], T]) -> T:
        return trio.from_thread.run_sync(function, trio_token=self._token)

    def peers(self, info_hash: bytes) -> tuple[PeerAddress, ...]:
        def read() -> tuple[PeerAddress, ...]:
            store = self._server.store
            assert store is not None
            return store.peers(info_hash)

        return self.call(read)

    def has_peer(self, info_hash: bytes, port: int) -> Callable[[], bool]:
        wanted = PeerAddress(IPv4Address(HOST), port)
        return lambda: wanted in self.peers(info_hash)

    def statistics(self) -> ServerStatistics:
        return self.call(self._server.statistics)


@contextlib.contextmanager
def tracker_thread(config: ServerConfig | None = None) -> Iterator[ThreadedTracker]:
    """Run ``serve_tracker`` on a free port of 127.0.0.1 in a thread for the block's duration."""
    started = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        with trio.CancelScope() as scope:
            box["scope"] = scope
            async with serve_tracker((HOST, 0), config=config) as server:
                box["tracker"] = ThreadedTracker(server, trio.lowlevel.current_trio_token())
                started.set()
                await trio.sleep_forever()

    def main() -> None:
        try:
            trio.run(serve)
        except BaseException as error:  # reported to the test thread below
            box["error"] = error
            started.set()

    thread = threading.Thread(target=main, name="bip-utracker", daemon=True)
    thread.start()
    if not started.wait(10):
        raise TimeoutError("the tracker thread did not start")
    if "error" in box:
        raise box["error"]
    tracker: ThreadedTracker = box["tracker"]
    try:
        yield tracker
    finally:
        tracker.call(box["scope"].cancel)
        thread.join(10)
    if "error" in box:
        raise box["error"]


def _same_content(downloaded: Path, torrent: SmallTorrent) -> Callable[[], bool]:
    original = (torrent.content_dir / "payload.bin").read_bytes()

    def check() -> bool:
        try:
            return downloaded.read_bytes() == original
        except OSError:
            return False

    return check


# -- the tests ------------------------------------------------------------------------------------


def test_aria2_downloads_from_libtorrent_through_our_tracker(
    tmp_path: Path, start_process: StartProcess
) -> None:
    with tracker_thread() as tracker:
        torrent = make_torrent(tmp_path / "torrent", trackers=(tracker.url,))
        seeder = start_libtorrent(start_process, tmp_path / "lt", torrent)
        wait_for(
            tracker.has_peer(torrent.v1, seeder.port),
            20,
            interval=0.1,
            what="libtorrent's announce in our swarm store",
        )
        workdir = tmp_path / "aria2"
        workdir.mkdir()
        start_aria2_downloader(start_process, workdir, torrent)
        wait_for(
            _same_content(workdir / "aria2-download" / "payload.bin", torrent),
            45,
            interval=0.2,
            what="aria2 downloading the payload from libtorrent",
        )
        stats = tracker.statistics()
        assert stats.announces >= 2
        assert stats.malformed == 0
        assert stats.errors_sent == 0


def test_libtorrent_downloads_from_aria2_through_our_tracker(
    tmp_path: Path, start_process: StartProcess
) -> None:
    with tracker_thread() as tracker:
        torrent = make_torrent(tmp_path / "torrent", trackers=(tracker.url,))
        seeder_dir = tmp_path / "aria2"
        seeder_dir.mkdir()
        # Its DHT on only so that it announces to our udp:// tracker (aria2_loopback_options).
        aria2_port = start_aria2_process(
            start_process, seeder_dir, torrent, udp_trackers=True, name="aria2c-seeder"
        )
        wait_for(
            tracker.has_peer(torrent.v1, aria2_port),
            20,
            interval=0.1,
            what="aria2's announce in our swarm store",
        )
        # No peer given: whatever it finds, it finds through the torrent's tracker.
        workdir = tmp_path / "lt"
        info = start_libtorrent_downloader(start_process, workdir, torrent, None, lifetime=90)
        port = int(info["port"])
        save = workdir / "lt-download"
        wait_for(
            _same_content(save / "payload.bin", torrent),
            45,
            interval=0.2,
            what="libtorrent downloading the payload from aria2",
        )
        assert tracker.has_peer(torrent.v1, port)()
        stats = tracker.statistics()
        assert (stats.malformed, stats.errors_sent) == (0, 0)


def test_qbittorrent_announce_lands_in_our_swarm_store(
    tmp_path: Path, start_process: StartProcess
) -> None:
    with tracker_thread() as tracker:
        torrent = make_torrent(tmp_path / "torrent", trackers=(tracker.url,))
        qbt, port = launch_qbittorrent(start_process, tmp_path / "qbt")
        qbt.add_torrent(torrent, torrent.content_dir)
        wait_for(
            tracker.has_peer(torrent.v1, port),
            30,
            interval=0.2,
            what="qBittorrent's announce in our swarm store",
        )

        # It seeds (the data is there), so the store counts a seeder.
        def counted_as_seeder() -> bool:
            return tracker.statistics().seeders == 1

        wait_for(counted_as_seeder, 30, interval=0.2, what="qBittorrent counted as a seeder")

        # And qBittorrent itself reports our tracker as working (status 2).
        def reported_working() -> bool:
            trackers = json.loads(qbt.get(f"/torrents/trackers?hash={torrent.v1.hex()}"))
            return any(t.get("url") == tracker.url and t.get("status") == 2 for t in trackers)

        wait_for(reported_working, 20, interval=0.2, what="qBittorrent's tracker status")

        # Removing the torrent sends "stopped": the store drops the peer at once.
        qbt.post(
            "/torrents/delete",
            f"hashes={torrent.v1.hex()}&deleteFiles=false".encode(),
            "application/x-www-form-urlencoded",
        )
        wait_for(
            lambda: not tracker.has_peer(torrent.v1, port)(),
            20,
            interval=0.2,
            what="qBittorrent's stopped announce",
        )
        assert tracker.statistics().peers == 0
