"""The tutorial's one-file client (docs/tutorial/one_file_client.py) downloads from libtorrent.

A real libtorrent 2.1 seeder on loopback, named with --peer: the torrent libtorrent made itself
(hybrid), a v1 torrent with libtorrent requiring MSE, and a multi-file v2-only torrent made by
bip_metainfo. The program runs as a subprocess, as a reader runs it; each download is checked
byte for byte.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from bip_metainfo import create_torrent

from ._helpers import StartProcess
from ._seeders import HOST, make_torrent, run_lt_peer, start_libtorrent, start_libtorrent_hybrid

pytestmark = pytest.mark.interop

PROGRAM = Path(__file__).resolve().parents[2] / "docs" / "tutorial" / "one_file_client.py"
DEADLINE = 60.0


async def run_program(torrent: Path, down: Path, port: int) -> subprocess.CompletedProcess[bytes]:
    """The program, pointed at the seeder with --peer, bounded by --timeout and DEADLINE."""
    peer = f"{HOST}:{port}"
    argv: list[str | Path] = [sys.executable, PROGRAM, torrent, down, "--peer", peer]
    with trio.fail_after(DEADLINE):
        return await trio.run_process(
            [*argv, "--timeout", "45"], capture_stdout=True, capture_stderr=True, check=False
        )


def assert_ok(result: subprocess.CompletedProcess[bytes]) -> None:
    assert result.returncode == 0, result.stderr.decode()
    assert b"is complete in" in result.stdout


async def test_libtorrents_own_hybrid_torrent(tmp_path: Path, start_process: StartProcess) -> None:
    """libtorrent makes a hybrid torrent and seeds it; the program reads that .torrent."""
    workdir = tmp_path / "libtorrent"
    info = start_libtorrent_hybrid(start_process, workdir)
    result = await run_program(workdir / "payload.torrent", tmp_path / "down", int(info["port"]))
    assert_ok(result)
    payload = (workdir / "payload.bin").read_bytes()
    assert (tmp_path / "down" / "payload.bin").read_bytes() == payload


async def test_v1_with_libtorrent_requiring_encryption(
    tmp_path: Path, start_process: StartProcess
) -> None:
    """libtorrent accepts MSE connections only (pe_forced): the program's PREFER_ENCRYPTED
    policy gets through."""
    torrent = make_torrent(tmp_path / "seed")
    seeder = start_libtorrent(start_process, tmp_path, torrent, enc_policy="forced")
    result = await run_program(torrent.torrent_path, tmp_path / "down", seeder.port)
    assert_ok(result)
    payload = (torrent.content_dir / "payload.bin").read_bytes()
    assert (tmp_path / "down" / "payload.bin").read_bytes() == payload


async def test_multi_file_v2_torrent(tmp_path: Path, start_process: StartProcess) -> None:
    """A v2-only torrent of three files (bip_metainfo made it), seeded by libtorrent."""
    rng = random.Random(7)
    content = tmp_path / "seed" / "album"
    sizes = {"a.bin": 300_000, "b/c.bin": 70_000, "d.bin": 5}
    for name, size in sizes.items():
        (content / name).parent.mkdir(parents=True, exist_ok=True)
        (content / name).write_bytes(rng.randbytes(size))
    metainfo = create_torrent(content, version="v2", piece_length=32768, creation_date=None)
    torrent = tmp_path / "album.torrent"
    torrent.write_bytes(metainfo.to_bytes())
    info = run_lt_peer(
        start_process, tmp_path, torrent, content.parent, wait="seeding", seed_mode=True
    )
    result = await run_program(torrent, tmp_path / "down", int(info["port"]))
    assert_ok(result)
    for name in sizes:
        assert (tmp_path / "down" / "album" / name).read_bytes() == (content / name).read_bytes()
