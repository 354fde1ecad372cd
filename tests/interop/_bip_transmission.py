"""Transmission 3.00 (transmission-daemon) seeding a torrent on its own 127.0.0.X, for the
``bip`` download tests.

Transmission never dials loopback peers and keys peers by IP (INTEROP.md), so it only seeds to
a peer that dials it from another 127.0.0.X. Its settings.json turns off the DHT, LPD, PEX, uTP
and port forwarding and binds peers and RPC to its address; the torrent is added over RPC
(``transmission-remote``), checked, and the launcher returns once it reports 100% done.

At start Transmission opens a UDP socket towards a public IPv6 address to learn its global
address (no datagram is sent). INTEROP.md allows it only inside a loopback-only network
namespace, as CI runs: :func:`require_loopback_namespace` skips (fails under CI) elsewhere.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import pytest

from ._helpers import StartProcess, ci_enabled, free_port, require_client, tcp_listening, wait_for
from ._seeders import Seeder, SmallTorrent, private_env

__all__ = ["require_loopback_namespace", "start_transmission"]


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


def start_transmission(
    start_process: StartProcess,
    workdir: Path,
    torrent: SmallTorrent,
    *,
    host: str,
    encryption: int | None = None,
) -> Seeder:
    """transmission-daemon on ``host`` seeding ``torrent`` from its content directory.

    `encryption`, when given, is its settings.json ``encryption``: 0 prefers plaintext, 1 prefers
    MSE (its default), 2 requires MSE. Both preferences accept either handshake from a peer that
    dials it: Transmission has no mode that refuses MSE.
    """
    require_loopback_namespace()
    daemon = require_client("transmission-daemon")
    port = free_port(host)
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
        "utp-enabled": False,
        "port-forwarding-enabled": False,
        "rpc-enabled": True,
        "rpc-bind-address": host,
        "rpc-port": rpc_port,
        "rpc-authentication-required": False,
        "rpc-whitelist-enabled": False,
        "rpc-host-whitelist-enabled": False,
        "download-dir": str(torrent.content_dir),
        "incomplete-dir-enabled": False,
        "watch-dir-enabled": False,
        "start-added-torrents": True,
        "ratio-limit-enabled": False,
        "idle-seeding-limit-enabled": False,
        "speed-limit-up-enabled": False,
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
    _remote(rpc, "-a", str(torrent.torrent_path), "--download-dir", str(torrent.content_dir))

    def seeding() -> bool:
        info = _remote(rpc, "-t", "all", "-i")
        done = re.search(r"Percent Done:\s*([\d.]+)%", info)
        return done is not None and float(done.group(1)) >= 100.0

    wait_for(seeding, 30, interval=0.3, what="Transmission checked the torrent")
    return Seeder("Transmission", host, port)
