"""libtorrent 2.1 downloads a torrent completely from ``bip seed --super-seed`` alone.

A lone leecher completes only in libtorrent's loose mode (bip's default,
``strict_super_seeding`` off): each have it sends earns it the next piece. bip reveals one
piece at a time, so libtorrent asks for the pieces in the order bip reveals them, and every
request it sends is for a revealed piece (a refused one would show as a stalled download).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import trio

from bip_metainfo import create_torrent

from ._helpers import StartProcess, free_port, tcp_listening
from ._inbound import start_libtorrent_downloader
from ._seeders import HOST, SmallTorrent

pytestmark = pytest.mark.interop

SIZES = (1_500_000, 300_000)
PIECE_LENGTH = 64 * 1024  # 28 pieces: one round trip each
DEADLINE = 20.0


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


async def test_libtorrent_downloads_from_a_super_seed(
    start_process: StartProcess, tmp_path: Path
) -> None:
    content = tmp_path / "content"
    folder = content / "payload"
    rng = random.Random(3)
    for index, size in enumerate(SIZES):
        path = folder / f"data{index}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
    metainfo = create_torrent(
        folder, version="v1", piece_length=PIECE_LENGTH, creation_date=None, created_by=None
    )
    torrent_path = tmp_path / "payload.torrent"
    torrent_path.write_bytes(metainfo.to_bytes())
    torrent = SmallTorrent(torrent_path, content, metainfo.info.info_hash)
    port = free_port(HOST)
    argv = [sys.executable, "-m", "bip", "seed", str(torrent_path), str(content)]
    argv += ["--bind", HOST, "--port", str(port), "--no-trackers", "--no-dht"]
    argv += ["--super-seed", "-q"]
    start_process(argv, ready=tcp_listening(HOST, port), ready_timeout=20, name="bip-seed")
    start_libtorrent_downloader(start_process, tmp_path, torrent, port, lifetime=DEADLINE + 30)
    save = tmp_path / "lt-download"
    expected = tree(folder)
    with trio.fail_after(DEADLINE):
        while not (save / "payload").is_dir() or tree(save / "payload") != expected:
            await trio.sleep(0.1)
