"""``bip download`` completes multi-file torrents seeded by libtorrent: v1, v2 and hybrid, with
MSE required on both sides and with plaintext only.

The torrent is made by bip_metainfo from seeded random files; libtorrent (_lt_peer.py, seed mode)
serves it on loopback; ``bip download`` runs as its own process, dials libtorrent (``--peer``),
and must exit 0 with every file byte for byte the same.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from bip_metainfo import InfoHash, MagnetLink, create_torrent

from ._helpers import StartProcess
from ._seeders import HOST, run_lt_peer

pytestmark = pytest.mark.interop

SIZES = (40_000_000, 1_234_567, 0, 25_000_000, 17)  # about 63 MiB in five files
PIECE_LENGTH = 64 * 1024
DOWNLOAD_TIMEOUT = 120.0

# (libtorrent's in/out_enc_policy, our --encryption): MSE required by both, or by neither.
ENCRYPTION = {"mse": ("forced", "require"), "plaintext": ("disabled", "disable")}


def write_files(folder: Path) -> None:
    rng = random.Random(20261124)
    for index, size in enumerate(SIZES):
        path = folder / ("nested" if index % 2 else "") / f"file{index}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("encryption", list(ENCRYPTION))
@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
def test_bip_download_from_libtorrent(
    version: Literal["v1", "v2", "hybrid"],
    encryption: str,
    start_process: StartProcess,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "seed" / "payload"
    write_files(folder)
    torrent = create_torrent(
        folder, version=version, piece_length=PIECE_LENGTH, creation_date=None, created_by=None
    )
    torrent_path = tmp_path / "payload.torrent"
    torrent_path.write_bytes(torrent.to_bytes())
    lt_policy, our_policy = ENCRYPTION[encryption]
    seeder = run_lt_peer(
        start_process,
        tmp_path,
        torrent_path,
        folder.parent,
        wait="seeding",
        seed_mode=True,
        enc_policy=lt_policy,
        lifetime=DOWNLOAD_TIMEOUT + 30,
    )
    down = tmp_path / "down"
    argv = [sys.executable, "-m", "bip", "download", str(torrent_path), "--dir", str(down)]
    argv += ["--peer", f"{HOST}:{seeder['port']}", "--bind", HOST, "--port", "0"]
    argv += ["--no-trackers", "--encryption", our_policy, "-q"]
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT, check=False
    )
    assert result.returncode == 0, result.stderr
    assert tree(down / "payload") == tree(folder)


@pytest.mark.parametrize("version", ["v1", "hybrid"])
def test_bip_download_magnet_from_libtorrent(
    version: Literal["v1", "hybrid"], start_process: StartProcess, tmp_path: Path
) -> None:
    """A magnet link with only the v1 hash and libtorrent as ``x.pe``: the metadata comes from
    libtorrent (BEP 9), then the files."""
    folder = tmp_path / "seed" / "payload"
    write_files(folder)
    torrent = create_torrent(
        folder, version=version, piece_length=PIECE_LENGTH, creation_date=None, created_by=None
    )
    torrent_path = tmp_path / "payload.torrent"
    torrent_path.write_bytes(torrent.to_bytes())
    seeder = run_lt_peer(
        start_process,
        tmp_path,
        torrent_path,
        folder.parent,
        wait="seeding",
        seed_mode=True,
        lifetime=DOWNLOAD_TIMEOUT + 30,
    )
    v1 = InfoHash(v1=torrent.info.info_hash.v1)
    magnet = MagnetLink.from_info_hash(v1, peers=[(HOST, int(seeder["port"]))])
    down = tmp_path / "down"
    argv = [sys.executable, "-m", "bip", "download", str(magnet), "--dir", str(down)]
    argv += ["--bind", HOST, "--port", "0", "--no-trackers", "-q"]
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT, check=False
    )
    assert result.returncode == 0, result.stderr
    assert tree(down / "payload") == tree(folder)
