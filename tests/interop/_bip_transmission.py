"""Transmission 3.00 (transmission-daemon) on its own 127.0.0.X, seeding a torrent for the
``bip`` download tests (:func:`start_transmission`) or downloading one from a peer that dials it
(:func:`start_transmission_leecher`).

Transmission never dials loopback peers and keys peers by IP (INTEROP.md), so it only trades
with a peer that dials it from another 127.0.0.X. Its settings.json turns off the DHT, LPD, PEX
and port forwarding, and uTP unless asked (``utp=True``: libutp, the reference uTP, on the UDP
port of the same number as its TCP one), and binds peers and RPC to its address; the torrent is
added over RPC (``transmission-remote``) and checked. A seeder's launcher returns once it reports
100% done, a leecher's once its check of the (empty) download directory is over.

At start Transmission opens a UDP socket towards a public IPv6 address to learn its global
address (no datagram is sent). INTEROP.md allows it only inside a loopback-only network
namespace, as CI runs: :func:`require_loopback_namespace` skips (fails under CI) elsewhere.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from ._helpers import StartProcess, ci_enabled, free_port, require_client, tcp_listening, wait_for
from ._seeders import Seeder, SmallTorrent, private_env

__all__ = [
    "TransmissionLeecher",
    "require_loopback_namespace",
    "start_transmission",
    "start_transmission_leecher",
]


def require_loopback_namespace() -> None:
    """Skip unless this process sees no network interface but loopback (fail under CI)."""
    others = [name for _, name in socket.if_nameindex() if name != "lo"]
    if others:
        message = f"Transmission runs only in a loopback-only network namespace (here: {others})"
        if ci_enabled():
            pytest.fail(message)
        pytest.skip(message)


def _remote(rpc: str, *args: str) -> str:
    remote = require_client("transmission-remote")
    result = subprocess.run(
        [remote, rpc, *args], capture_output=True, text=True, timeout=10, check=True
    )
    return result.stdout


def _info_field(info: str, name: str) -> str | None:
    """The value of line ``name:`` in ``transmission-remote -i`` output, or None."""
    found = re.search(rf"^\s*{re.escape(name)}:\s*(.*?)\s*$", info, re.MULTILINE)
    return None if found is None else found.group(1)


def _percent_done(info: str) -> float:
    """``Percent Done`` of ``transmission-remote -i`` output (0 when it is not there yet)."""
    done = re.search(r"Percent Done:\s*([\d.]+)%", info)
    return 0.0 if done is None else float(done.group(1))


@dataclass(frozen=True)
class TransmissionLeecher:
    """A transmission-daemon downloading one torrent into ``download_dir``.

    It accepts peers on ``host:port`` (TCP, and uTP over UDP when started with ``utp=True``)
    and answers RPC on ``rpc`` (``HOST:PORT`` for ``transmission-remote``).
    """

    host: str
    port: int
    rpc: str
    download_dir: Path

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def info(self) -> str:
        """Its ``transmission-remote -i`` report of the torrent (blocking; up to 10 s)."""
        return _remote(self.rpc, "-t", "all", "-i")

    def percent_done(self) -> float:
        """How much of the torrent it has, verified, in percent (blocking; up to 10 s)."""
        return _percent_done(self.info())


def _launch(
    start_process: StartProcess,
    workdir: Path,
    torrent: SmallTorrent,
    *,
    host: str,
    download_dir: Path,
    encryption: int | None,
    utp: bool,
) -> tuple[int, str]:
    """Start transmission-daemon on ``host`` with ``torrent`` added, saving to
    ``download_dir``; return its peer port and its RPC address."""
    require_loopback_namespace()
    daemon = require_client("transmission-daemon")
    # uTP listens on the UDP port of the peer port's number: both must be free.
    port = free_port(host, tcp=True, udp=utp)
    rpc_port = free_port(host)
    home = workdir / "transmission-home"
    config = home / "config"
    config.mkdir(parents=True)
    settings = {
        "bind-address-ipv4": host,
        "bind-address-ipv6": "::1",
        "peer-port": port,
        "peer-port-random-on-start": False,
        "dht-enabled": False,
        "lpd-enabled": False,
        "pex-enabled": False,
        "utp-enabled": utp,
        "port-forwarding-enabled": False,
        "rpc-enabled": True,
        "rpc-bind-address": host,
        "rpc-port": rpc_port,
        "rpc-authentication-required": False,
        "rpc-whitelist-enabled": False,
        "rpc-host-whitelist-enabled": False,
        "download-dir": str(download_dir),
        "incomplete-dir-enabled": False,
        "watch-dir-enabled": False,
        "start-added-torrents": True,
        "ratio-limit-enabled": False,
        "idle-seeding-limit-enabled": False,
        "speed-limit-up-enabled": False,
        "speed-limit-down-enabled": False,
        "alt-speed-enabled": False,
        "message-level": 2,
    }
    if encryption is not None:
        settings["encryption"] = encryption
    (config / "settings.json").write_text(json.dumps(settings, indent=1))
    start_process(
        [daemon, "-f", "-g", config],
        cwd=home,
        env=private_env(home),
        ready=tcp_listening(host, rpc_port),
        ready_timeout=15,
        name="transmission",
    )
    rpc = f"{host}:{rpc_port}"
    _remote(rpc, "-a", str(torrent.torrent_path), "--download-dir", str(download_dir))
    return port, rpc


def start_transmission(
    start_process: StartProcess,
    workdir: Path,
    torrent: SmallTorrent,
    *,
    host: str,
    encryption: int | None = None,
    utp: bool = False,
) -> Seeder:
    """transmission-daemon on ``host`` seeding ``torrent`` from its content directory.

    `encryption`, when given, is its settings.json ``encryption``: 0 prefers plaintext, 1 prefers
    MSE (its default), 2 requires MSE. Both preferences accept either handshake from a peer that
    dials it: Transmission has no mode that refuses MSE. `utp` turns its uTP on (settings.json
    ``utp-enabled``; off by default): it then accepts uTP connections on the UDP port of the
    same number as the returned TCP one.
    """
    port, rpc = _launch(
        start_process,
        workdir,
        torrent,
        host=host,
        download_dir=torrent.content_dir,
        encryption=encryption,
        utp=utp,
    )

    def seeding() -> bool:
        return _percent_done(_remote(rpc, "-t", "all", "-i")) >= 100.0

    wait_for(seeding, 30, interval=0.3, what="Transmission checked the torrent")
    return Seeder("Transmission", host, port)


def start_transmission_leecher(
    start_process: StartProcess,
    workdir: Path,
    torrent: SmallTorrent,
    *,
    host: str,
    encryption: int | None = None,
    utp: bool = False,
) -> TransmissionLeecher:
    """transmission-daemon on ``host`` downloading ``torrent`` into the empty
    ``workdir/transmission-download``, from whoever dials it (it dials nobody on loopback).

    Returns once its check of the empty directory is over and it waits for peers. `encryption`
    and `utp` as for :func:`start_transmission`.
    """
    download_dir = workdir / "transmission-download"
    download_dir.mkdir(parents=True)
    port, rpc = _launch(
        start_process,
        workdir,
        torrent,
        host=host,
        download_dir=download_dir,
        encryption=encryption,
        utp=utp,
    )
    leecher = TransmissionLeecher(host, port, rpc, download_dir)

    def waiting_for_peers() -> bool:
        # It hangs up on a peer's handshake while its check runs ("Verifying (25%)").
        state = _info_field(leecher.info(), "State")
        return state is not None and not state.startswith(("Will Verify", "Verifying", "Queued"))

    wait_for(waiting_for_peers, 30, interval=0.2, what="Transmission ready to download")
    return leecher
