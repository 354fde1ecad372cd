"""``bip download`` and ``bip seed`` over uTP with libtorrent 2.1 whose TCP is off.

libtorrent (_lt_utp.py: incoming and outgoing TCP off, uTP on) seeds a small torrent that
``bip download`` fetches over uTP, with ``--prefer-utp`` (libtorrent's order) and with the
default order (TCP first, uTP when TCP fails); and it downloads the torrent from ``bip seed``,
whose uTP shares the DHT's UDP socket on ``--port``. The torrent is small: libtorrent's uTP
is slow on loopback (INTEROP.md).
"""

from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trio

from bip_handshake import PeerAddress

from ._helpers import StartProcess, free_port, tcp_listening
from ._seeders import HOST, make_torrent
from .test_utp_libtorrent import start_libtorrent_utp

pytestmark = pytest.mark.interop

DOWNLOAD_TIMEOUT = 60.0


@pytest.mark.parametrize("order", ["prefer-utp", "tcp-first"])
def test_bip_download_from_a_utp_only_libtorrent(
    order: str, start_process: StartProcess, tmp_path: Path
) -> None:
    torrent = make_torrent(tmp_path)
    info = start_libtorrent_utp(start_process, tmp_path, torrent)
    down = tmp_path / "down"
    argv = [sys.executable, "-m", "bip", "download", str(torrent.torrent_path), "--dir", str(down)]
    argv += ["--peer", f"{HOST}:{info['port']}", "--bind", HOST, "--port", "0"]
    argv += ["--no-trackers", "--no-dht", "-q"]
    if order == "prefer-utp":
        argv.append("--prefer-utp")
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT, check=False
    )
    assert result.returncode == 0, result.stderr
    payload = torrent.content_dir / "payload.bin"
    assert (down / payload.name).read_bytes() == payload.read_bytes()


async def test_utp_only_libtorrent_downloads_from_bip_seed(
    start_process: StartProcess, tmp_path: Path
) -> None:
    torrent = make_torrent(tmp_path)
    port = free_port(HOST, tcp=True, udp=True)
    argv = [sys.executable, "-m", "bip", "seed", str(torrent.torrent_path)]
    argv += [str(torrent.content_dir), "--bind", HOST, "--port", str(port), "--no-trackers", "-q"]
    # The DHT binds --port over UDP and uTP shares its socket.
    start_process(argv, ready=tcp_listening(HOST, port), ready_timeout=20, name="bip-seed")
    downloads = tmp_path / "lt-download"
    info = start_libtorrent_utp(
        start_process,
        tmp_path,
        torrent,
        peer=PeerAddress(IPv4Address(HOST), port),
        download_to=downloads,
    )
    payload = (torrent.content_dir / "payload.bin").read_bytes()
    with trio.fail_after(DOWNLOAD_TIMEOUT):
        while not Path(info["done"]).exists():
            await trio.sleep(0.1)
        # flush_cache is asynchronous: wait for the file to be written out.
        while (downloads / "payload.bin").read_bytes() != payload:
            await trio.sleep(0.1)
