"""libtorrent (v1, v2 and hybrid; MSE required once), qBittorrent, aria2 and rtorrent (v1)
download a torrent completely from ``bip seed``.

``bip seed`` runs as its own process on 127.0.0.1 and announces to a UDP tracker of ours
(bip_utracker's server, in this process) named by the torrent. libtorrent is told our address
(``connect_peer``), qBittorrent too (its Web API's ``addPeers``), and aria2 finds us through the
tracker (it announces to ``udp://`` trackers only with its DHT on, which has nobody to talk to
on loopback). Each must end with every file byte for byte the same.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Literal

import pytest
import trio

from bip_metainfo import create_torrent
from bip_utracker import open_tracker_client, serve_tracker

from ._helpers import StartProcess, free_port, tcp_listening
from ._inbound import start_libtorrent_downloader, start_qbittorrent_downloader
from ._seeders import (
    HOST,
    SmallTorrent,
    make_tracked_torrent,
    start_aria2_process,
    start_rtorrent_process,
)

pytestmark = pytest.mark.interop

SIZES = (6_000_000, 2_222_222, 0, 70_000)
PIECE_LENGTH = 128 * 1024
DEADLINE = 20.0
SEED_HOST = "127.0.0.3"  # for rtorrent, which keeps one peer per IP address


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def write_files(folder: Path) -> None:
    rng = random.Random(7)
    for index, size in enumerate(SIZES):
        path = folder / ("inner" if index % 2 else "") / f"data{index}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))


@pytest.mark.parametrize(
    ("client", "version", "encryption"),
    [
        ("libtorrent", "v1", "enabled"),
        ("libtorrent", "v2", "forced"),
        ("libtorrent", "hybrid", "enabled"),
        ("qBittorrent", "v1", "enabled"),
        # aria2 1.36 sends a bitfield mid-connection in place of many haves
        # (DefaultBtInteractive::checkHave): bip_peer takes it as libtorrent does.
        ("aria2", "v1", "enabled"),
    ],
)
async def test_client_downloads_from_bip_seed(
    client: str,
    version: Literal["v1", "v2", "hybrid"],
    encryption: str,
    start_process: StartProcess,
    tmp_path: Path,
) -> None:
    """``encryption``: libtorrent's policy (``forced``: MSE only, so ``bip seed`` serves RC4)."""
    content = tmp_path / "content"
    folder = content / "payload"
    write_files(folder)
    async with serve_tracker((HOST, 0)) as tracker:
        url = f"udp://{HOST}:{tracker.address[1]}/announce"
        metainfo = create_torrent(
            folder,
            version=version,
            piece_length=PIECE_LENGTH,
            creation_date=None,
            created_by=None,
            trackers=(url,),
        )
        torrent_path = tmp_path / "payload.torrent"
        torrent_path.write_bytes(metainfo.to_bytes())
        torrent = SmallTorrent(torrent_path, content, metainfo.info.info_hash)
        port = free_port(HOST)
        argv = [sys.executable, "-m", "bip", "seed", str(torrent_path), str(content)]
        argv += ["--bind", HOST, "--port", str(port), "-q"]
        start_process(
            argv,
            ready=tcp_listening(HOST, port),
            ready_timeout=20,
            name="bip-seed",
        )
        with trio.fail_after(DEADLINE):  # in the tracker's swarm before anyone asks it
            while tracker.statistics().announces == 0:
                await trio.sleep(0.05)
        if client == "libtorrent":
            start_libtorrent_downloader(
                start_process,
                tmp_path,
                torrent,
                port,
                enc_policy=encryption,
                lifetime=DEADLINE + 30,
            )
            save = tmp_path / "lt-download"
        elif client == "qBittorrent":
            qbt = start_qbittorrent_downloader(start_process, tmp_path, torrent)
            qbt.add_peers(torrent.v1.hex(), [f"{HOST}:{port}"])
            save = tmp_path / "qbt-download"
        else:
            save = tmp_path / "aria2-download"
            start_aria2_process(
                start_process, tmp_path, torrent, download_to=save, udp_trackers=True
            )
        expected = tree(folder)
        with trio.fail_after(DEADLINE):
            while not (save / "payload").is_dir() or tree(save / "payload") != expected:
                await trio.sleep(0.25)


async def test_rtorrent_downloads_from_bip_seed(
    start_process: StartProcess, tmp_path: Path
) -> None:
    """rtorrent uses HTTP trackers only and we speak UDP: opentracker serves both on one port,
    so ``bip seed`` announces there over UDP and rtorrent finds it over HTTP. ``bip seed`` is on
    its own 127.0.0.X: rtorrent keeps one peer per IP address, and would try only itself."""
    torrent, tracker = make_tracked_torrent(start_process, tmp_path, http=True)
    port = free_port(SEED_HOST)
    argv = [sys.executable, "-m", "bip", "seed", str(torrent.torrent_path)]
    argv += [str(torrent.content_dir), "--bind", SEED_HOST, "--port", str(port)]
    argv += ["--tracker", tracker.udp_url, "-q"]
    start_process(argv, ready=tcp_listening(SEED_HOST, port), ready_timeout=20, name="bip-seed")
    with trio.fail_after(DEADLINE):
        async with open_tracker_client(bind_v6=None) as client:
            while True:  # in opentracker's swarm before rtorrent asks it
                scrape = await client.scrape(tracker.udp_url, [torrent.info_hash])
                if scrape.stats(torrent.v1).seeders:
                    break
                await trio.sleep(0.2)
    save = tmp_path / "rtorrent-download"
    start_rtorrent_process(start_process, tmp_path, torrent, download_to=save)
    payload = torrent.content_dir / "payload.bin"
    expected = payload.read_bytes()
    with trio.fail_after(DEADLINE):
        while not (save / payload.name).is_file() or (save / payload.name).read_bytes() != expected:
            await trio.sleep(0.25)
