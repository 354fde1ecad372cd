"""``bip download`` completes a multi-file v1 torrent seeded by aria2, qBittorrent, rtorrent,
ctorrent (the launchers of _seeders.py and _peer_seeders.py) and Transmission
(_bip_transmission.py: only in a loopback-only network namespace), with MSE and in plaintext.

Each mode is required on both sides, so a connection in the other mode could not carry the
download: ``bip download --encryption require`` speaks only MSE with RC4 and ``--encryption
disable`` only a plain BEP 3 handshake, and each seeder is configured to accept what is asked
(MSE: qBittorrent ``Session\\Encryption=1``, aria2 ``--bt-require-crypto=true
--bt-min-crypto-level=arc4``, rtorrent ``allow_incoming,require,require_RC4``, Transmission
``encryption`` 2; plaintext: qBittorrent 2, aria2's default, rtorrent ``none``, Transmission 0).
``bip download`` reports no per-connection encryption, so probes from fresh addresses check the
seeder's side of the bargain: before the download it answers a handshake in the mode asked (which
also waits until it serves the torrent), and after it, where it can refuse the other mode
(qBittorrent and rtorrent both ways, aria2 and Transmission for MSE), it closes the connection on
a handshake in that mode without a byte in answer. aria2 and Transmission have no setting that
refuses MSE: their plaintext runs rest on our side alone. ctorrent has no MSE at all: plaintext
only.

Our side listens and dials from 127.0.0.2 (``--bind``): ctorrent resets connections that come
from its own address, 127.0.0.1. The torrent names a dead loopback tracker, since rtorrent
refuses a torrent without one; ``bip download`` is told ``--no-trackers``.
"""

from __future__ import annotations

import functools
import os
import random
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bip_metainfo import create_torrent

from ._bip_transmission import start_transmission
from ._helpers import StartProcess, wait_for
from ._peer_seeders import DEAD_TRACKER, start_ctorrent
from ._seeders import (
    Seeder,
    SmallTorrent,
    start_aria2,
    start_qbittorrent_with_encryption,
    start_rtorrent,
)

pytestmark = pytest.mark.interop

SIZES = (40_000_000, 0, 27_043_311, 65_536, 17)  # 64 MiB in four files and an empty one
PIECE_LENGTH = 256 * 1024
OUR_HOST = "127.0.0.2"
# Probes come from addresses the seeder has not seen: Transmission drops a new connection from
# an address it knows as a seed (ours, once the download is done) as it would an unencrypted one.
PROBE_BEFORE_HOST = "127.0.0.3"
PROBE_AFTER_HOST = "127.0.0.4"
SERVE_TIMEOUT = 15.0
TRANSMISSION_HOST = "127.0.0.7"
DOWNLOAD_TIMEOUT = 120.0
PROBE_TIMEOUT = 5.0

Launcher = Callable[[StartProcess, Path, SmallTorrent], Seeder]

# client -> encryption -> (its launcher configured for that mode, whether it refuses the other).
SEEDERS: dict[str, dict[str, tuple[Launcher, bool]]] = {
    "aria2": {
        "mse": (functools.partial(start_aria2, require_crypto=True, min_crypto_level="arc4"), True),
        # aria2 always accepts an MSE handshake: --bt-require-crypto=false is as far as it goes.
        "plaintext": (functools.partial(start_aria2, require_crypto=False), False),
    },
    "qBittorrent": {
        "mse": (functools.partial(start_qbittorrent_with_encryption, encryption=1), True),
        "plaintext": (functools.partial(start_qbittorrent_with_encryption, encryption=2), True),
    },
    "rtorrent": {
        "mse": (
            functools.partial(start_rtorrent, encryption="allow_incoming,require,require_RC4"),
            True,
        ),
        "plaintext": (functools.partial(start_rtorrent, encryption="none"), True),
    },
    # Transmission never dials loopback peers: it is on its own address, and we dial it. Its
    # "prefer plaintext" still accepts MSE.
    "Transmission": {
        "mse": (functools.partial(start_transmission, host=TRANSMISSION_HOST, encryption=2), True),
        "plaintext": (
            functools.partial(start_transmission, host=TRANSMISSION_HOST, encryption=0),
            False,
        ),
    },
    # ctorrent speaks no MSE: nothing to configure and nothing to probe (it sends its plain
    # handshake at once, whatever it is sent).
    "ctorrent": {"plaintext": (start_ctorrent, False)},
}
CASES = [(client, mode) for client, modes in SEEDERS.items() for mode in modes]
OUR_POLICY = {"mse": "require", "plaintext": "disable"}


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def probe(seeder: Seeder, torrent: SmallTorrent, *, mse: bool, source: str) -> bytes:
    """Open one connection from `source` and start a handshake: an MSE one (``mse``: 96
    bytes standing for a Diffie-Hellman public key, then 20 bytes of padding) or a plain BEP 3
    one. Return the seeder's first answer (its public key, or its own handshake), or ``b""``
    when it closes the connection without a byte; TimeoutError if it stays open and silent."""
    if mse:
        opening = os.urandom(96 + 20)
    else:
        peer_id = b"-BP0000-" + os.urandom(12)
        opening = b"\x13BitTorrent protocol" + bytes(8) + torrent.v1 + peer_id
    with socket.create_connection(
        seeder.address, timeout=PROBE_TIMEOUT, source_address=(source, 0)
    ) as sock:
        sock.sendall(opening)
        try:
            return sock.recv(4096)
        except ConnectionResetError:
            return b""


@pytest.mark.parametrize(("client", "encryption"), CASES)
def test_bip_download_from_client(
    client: str, encryption: str, start_process: StartProcess, tmp_path: Path
) -> None:
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
    launcher, refuses_other = SEEDERS[client][encryption]
    seeder = launcher(start_process, tmp_path, torrent)
    # The seeder answers a handshake in the mode asked, once it serves the torrent: qBittorrent
    # hangs up on the first connections after its Web API reports it seeding (and bip download
    # would redial only 15 s later).
    wait_for(
        lambda: bool(probe(seeder, torrent, mse=encryption == "mse", source=PROBE_BEFORE_HOST)),
        SERVE_TIMEOUT,
        interval=0.2,
        what=f"{client} answering a handshake ({encryption})",
    )

    down = tmp_path / "down"
    argv = [sys.executable, "-m", "bip", "download", str(torrent_path), "--dir", str(down)]
    argv += ["--peer", f"{seeder.host}:{seeder.port}", "--bind", OUR_HOST, "--port", "0"]
    argv += ["--no-trackers", "--encryption", OUR_POLICY[encryption], "-q"]
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT, check=False
    )
    assert result.returncode == 0, result.stderr
    assert tree(down / "payload") == tree(folder)

    if refuses_other:
        # The seeder's setting took: it hangs up on a handshake in the other mode.
        other = probe(seeder, torrent, mse=encryption != "mse", source=PROBE_AFTER_HOST)
        assert other == b"", f"{client} answered a handshake in the mode not asked"
