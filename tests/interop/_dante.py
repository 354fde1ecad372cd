"""Start the real Dante SOCKS5 server (Debian's ``dante-server``, ``/usr/sbin/danted``) for
interop tests: TCP CONNECT and UDP ASSOCIATE for loopback clients, no authentication.

Only ``socksmethod: none``: Dante's ``username`` method checks the system's password database
(a system user with a password), which a test must not create. Dante runs as its own process,
stopped by PID at teardown (``start_process``); a missing binary skips the test, or fails it in
CI.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ._helpers import StartProcess, free_port, require_client, tcp_listening

__all__ = ["DANTED", "dante_config", "danted", "start_dante"]

DANTED = "/usr/sbin/danted"  # Debian installs it in sbin, not always on a user's PATH


def dante_config(port: int, *, internal: str = "127.0.0.1", external: str = "127.0.0.1") -> str:
    """A Dante server on ``internal:port`` that relays TCP and UDP for loopback clients, its
    own connections and datagrams leaving from ``external``."""
    users = (
        "user.privileged: root\nuser.unprivileged: nobody\n" if os.geteuid() == 0 else ""
    )  # switching users needs root; without root Dante keeps ours
    return (
        "logoutput: stderr\n"
        f"internal: {internal} port = {port}\n"
        f"external: {external}\n"
        "clientmethod: none\n"
        "socksmethod: none\n"
        f"{users}"
        "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }\n"
        "socks pass { from: 0.0.0.0/0 to: 0.0.0.0/0 command: connect udpassociate udpreply }\n"
    )


def danted() -> str:
    """Dante's server binary (a missing one skips, or fails in CI)."""
    found = shutil.which("danted")
    if found is None and os.access(DANTED, os.X_OK):
        found = DANTED
    return found if found is not None else require_client("danted")


def start_dante(
    start_process: StartProcess,
    workdir: Path,
    *,
    internal: str = "127.0.0.1",
    external: str = "127.0.0.1",
) -> int:
    """Start Dante on a free port of ``internal`` (its configuration in ``workdir``) and wait
    until it listens; its port."""
    binary = danted()
    port = free_port(internal)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "danted.conf"
    config.write_text(dante_config(port, internal=internal, external=external))
    start_process(
        [binary, "-f", config, "-N", "1"],
        ready=tcp_listening(internal, port),
        name=f"danted-{port}",
        log_dir=workdir,
    )
    return port
