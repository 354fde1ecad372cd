"""A swarm found through our UDP tracker: one seed and several leechers, in one process on
loopback, that only know the tracker's URL (from the torrent); every leecher completes with
every piece verified. Each pair of clients finds the other through the tracker and dials it:
the engine keeps one connection per pair."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio
from _engine_helpers import LOOPBACK, loopback_config, same_files, write_content

from bip._client import TorrentOptions, open_session
from bip_metainfo import create_torrent
from bip_utracker import open_tracker_client, serve_tracker

SIZES = (300_000, 200_000, 123_456)
LEECHERS = 4
DEADLINE = 60.0


async def test_swarm_through_our_tracker(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    with trio.fail_after(DEADLINE):
        async with serve_tracker((LOOPBACK, 0)) as tracker:
            host, port = tracker.address[:2]
            torrent = create_torrent(
                folder,
                version="hybrid",
                piece_length=16384,
                trackers=[[f"udp://{host}:{port}/announce"]],
                creation_date=None,
            )
            config = loopback_config(trackers=True)
            async with open_session(config) as seeder:
                seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
                await seeding.wait_complete()
                statuses = []
                async with trio.open_nursery() as nursery:

                    async def leech(index: int) -> None:
                        async with open_session(config) as leecher:
                            download = await leecher.add_torrent(
                                torrent, TorrentOptions(tmp_path / f"down{index}")
                            )
                            await download.wait_complete()
                            # Stay a little: the others may still want our pieces.
                            await trio.sleep(0.5)
                            statuses.append(download.status())

                    for index in range(LEECHERS):
                        nursery.start_soon(leech, index)
            assert tracker.statistics().announces >= 2 * (LEECHERS + 1)
            # Every leecher said "completed", then every client "stopped" on its way out.
            async with open_tracker_client(bind_v6=None) as client:
                scrape = await client.scrape(f"udp://{host}:{port}", [torrent.info.info_hash])
            v1 = torrent.info.info_hash.v1
            assert v1 is not None
            stats = scrape.stats(v1)
            assert stats.completed == LEECHERS
            assert stats.seeders == stats.leechers == 0
    for index in range(LEECHERS):
        assert same_files(folder, tmp_path / f"down{index}" / "album")
    assert all(status.bad_pieces == 0 for status in statuses)
    # One connection per pair, though each pair found each other both ways.
    assert all(status.peers <= LEECHERS for status in statuses)


SWARM_DOWNLOADS = 5


async def _first_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while b"\n" not in data:
        chunk = await stream.receive_some()
        assert chunk, f"ended before a line: {data!r}"
        data += chunk
    return data.split(b"\n", 1)[0].decode()


async def test_swarm_of_commands(tmp_path: Path) -> None:
    """The issue's swarm, as commands: ``bip tracker serve``, one ``bip seed`` and five ``bip
    download`` processes, each client on its own 127.0.0.X; every download exits 0."""
    folder = write_content(tmp_path / "seed", SIZES)
    bip = [sys.executable, "-m", "bip"]
    processes: list[trio.Process] = []
    try:
        with trio.fail_after(DEADLINE):
            tracker = await trio.lowlevel.open_process(
                [*bip, "tracker", "serve", "--bind", f"{LOOPBACK}:0", "--no-rate-limit"],
                stdout=subprocess.PIPE,
            )
            processes.append(tracker)
            assert tracker.stdout is not None
            url = (await _first_line(tracker.stdout)).split()[-1]
            assert url.startswith("udp://")
            torrent = create_torrent(
                folder, version="hybrid", trackers=[[url]], creation_date=None, piece_length=16384
            )
            torrent_path = tmp_path / "album.torrent"
            torrent_path.write_bytes(torrent.to_bytes())
            seed = [*bip, "seed", str(torrent_path), str(folder.parent), "-q"]
            processes.append(
                await trio.lowlevel.open_process([*seed, "--bind", "127.0.0.2", "--port", "0"])
            )
            v1 = torrent.info.info_hash.v1
            assert v1 is not None
            async with open_tracker_client(bind_v6=None) as client:
                while not (await client.scrape(url, [torrent.info.info_hash])).stats(v1).seeders:
                    await trio.sleep(0.1)  # the seed checks its data, then announces
            download = [*bip, "download", str(torrent_path), "-q", "--port", "0"]
            downloads = [
                await trio.lowlevel.open_process(
                    [*download, "--dir", str(tmp_path / f"d{i}"), "--bind", f"127.0.0.{10 + i}"]
                )
                for i in range(SWARM_DOWNLOADS)
            ]
            processes += downloads
            for process in downloads:
                assert await process.wait() == 0
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    for index in range(SWARM_DOWNLOADS):
        assert same_files(folder, tmp_path / f"d{index}" / "album")
