"""A big torrent for download tests, and a ctorrent seeder (the other seeders are in _seeders.py).

``make_big_torrent`` writes ``size`` bytes of seeded random content and a v1 torrent of it with a
tracker URL on loopback where nothing listens (rtorrent refuses a torrent without trackers; the
other clients try the tracker, get refused, and seed anyway). The result is a
:class:`~._seeders.SmallTorrent`, so every ``start_*`` launcher of _seeders.py takes it.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from bip_metainfo import create_torrent

from ._helpers import StartProcess, free_port, require_client, tcp_listening
from ._seeders import HOST, Seeder, SmallTorrent, private_env

__all__ = ["BigTorrent", "make_big_torrent", "start_ctorrent"]

DEAD_TRACKER = "http://127.0.0.1:9/announce"  # the discard port: nothing answers on loopback


@dataclass(frozen=True)
class BigTorrent:
    """A generated torrent with what a downloader needs to check it."""

    torrent: SmallTorrent
    piece_length: int
    length: int
    piece_hashes: tuple[bytes, ...]

    @property
    def num_pieces(self) -> int:
        return len(self.piece_hashes)

    def piece_size(self, index: int) -> int:
        return min(self.piece_length, self.length - index * self.piece_length)


def make_big_torrent(workdir: Path, *, size: int, piece_length: int) -> BigTorrent:
    """Write ``workdir/content/payload.bin`` (``size`` random bytes) and its v1 torrent."""
    content = workdir / "content"
    content.mkdir(parents=True)
    payload = content / "payload.bin"
    data = random.Random(20261124).randbytes(size)
    payload.write_bytes(data)
    metainfo = create_torrent(
        payload,
        version="v1",
        creation_date=None,
        piece_length=piece_length,
        created_by=None,
        trackers=(DEAD_TRACKER,),
    )
    torrent_path = workdir / "payload.torrent"
    torrent_path.write_bytes(metainfo.to_bytes())
    hashes = tuple(
        hashlib.sha1(data[start : start + piece_length]).digest()
        for start in range(0, size, piece_length)
    )
    return BigTorrent(
        SmallTorrent(torrent_path, content, metainfo.info.info_hash), piece_length, size, hashes
    )


def start_ctorrent(start_process: StartProcess, workdir: Path, torrent: SmallTorrent) -> Seeder:
    """Enhanced CTorrent dnh3.3.2 seeding ``torrent`` (no extensions at all: plain BEP 3).

    ``-f`` skips its hash check (the content is ours), ``-i`` binds it to loopback, and its
    tracker is the dead loopback one of the torrent.
    """
    ctorrent = require_client("ctorrent")
    port = free_port(HOST)
    home = workdir / "ctorrent-home"
    env = private_env(home)
    payload = next(torrent.content_dir.iterdir())
    start_process(
        [
            ctorrent,
            "-f",
            "-i",
            HOST,
            "-p",
            str(port),
            "-e",
            "1",
            "-b",
            home / "payload.bf",
            "-s",
            payload,
            torrent.torrent_path,
        ],
        cwd=home,
        env=env,
        ready=tcp_listening(HOST, port),
        ready_timeout=15,
        name="ctorrent",
    )
    return Seeder("ctorrent", HOST, port)
