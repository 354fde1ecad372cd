"""``bip download`` completes a multi-file v1 torrent seeded by aria2, qBittorrent, rtorrent,
ctorrent (the launchers of _seeders.py and _peer_seeders.py) and Transmission
(_bip_transmission.py: only in a loopback-only network namespace), MSE as each defaults to.

Our side listens and dials from 127.0.0.2 (``--bind``): ctorrent resets connections that come
from its own address, 127.0.0.1. The torrent names a dead loopback tracker, since rtorrent
refuses a torrent without one; ``bip download`` is told ``--no-trackers``.
"""

from __future__ import annotations

import functools
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bip_metainfo import create_torrent

from ._bip_transmission import start_transmission
from ._helpers import StartProcess
from ._peer_seeders import DEAD_TRACKER, start_ctorrent
from ._seeders import (
    Seeder,
    SmallTorrent,
    start_aria2,
    start_qbittorrent,
    start_rtorrent,
)

pytestmark = pytest.mark.interop

SIZES = (9_000_000, 0, 3_333_333, 65_536, 1)
PIECE_LENGTH = 256 * 1024
OUR_HOST = "127.0.0.2"
TRANSMISSION_HOST = "127.0.0.7"
DOWNLOAD_TIMEOUT = 120.0

Launcher = Callable[[StartProcess, Path, SmallTorrent], Seeder]
SEEDERS: dict[str, Launcher] = {
    "aria2": start_aria2,
    "qBittorrent": start_qbittorrent,
    "rtorrent": start_rtorrent,
    "ctorrent": start_ctorrent,
    # Transmission never dials loopback peers: it is on its own address, and we dial it.
    "Transmission": functools.partial(start_transmission, host=TRANSMISSION_HOST),
}


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("client", list(SEEDERS))
def test_bip_download_from_client(client: str, start_process: StartProcess, tmp_path: Path) -> None:
    content = tmp_path / "content"
    folder = content / "payload"
    rng = random.Random(20261124)
    for index, size in enumerate(SIZES):
        path = folder / ("deep" if index % 2 else "") / f"part{index}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
    metainfo = create_torrent(
        folder,
        version="v1",
        piece_length=PIECE_LENGTH,
        creation_date=None,
        created_by=None,
        trackers=(DEAD_TRACKER,),
    )
    torrent_path = tmp_path / "payload.torrent"
    torrent_path.write_bytes(metainfo.to_bytes())
    torrent = SmallTorrent(torrent_path, content, metainfo.info.info_hash)
    seeder = SEEDERS[client](start_process, tmp_path, torrent)

    down = tmp_path / "down"
    argv = [sys.executable, "-m", "bip", "download", str(torrent_path), "--dir", str(down)]
    argv += ["--peer", f"{seeder.host}:{seeder.port}", "--bind", OUR_HOST, "--port", "0"]
    argv += ["--no-trackers", "-q"]
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT, check=False
    )
    assert result.returncode == 0, result.stderr
    assert tree(down / "payload") == tree(folder)
