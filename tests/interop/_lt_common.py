"""What every libtorrent program of the interop tests shares: the loopback-only session settings of
../shared/INTEROP.md, the encryption policies by name, the atomic ready file, the alert log.

The programs (_lt_peer.py, _lt_seed.py, _peer_swarm.py) run as files in a process of their own,
where they have no package but their directory is ``sys.path[0]``; mypy, and pytest for
_peer_swarm's launchers, see them as modules of the package. So each imports this module as::

    if TYPE_CHECKING or __package__:
        from ._lt_common import loopback_settings
    else:
        from _lt_common import loopback_settings

This module imports nothing of the test suite, and libtorrent only inside its functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import libtorrent as lt

__all__ = [
    "ENC_POLICIES",
    "HOST",
    "checking",
    "encryption_settings",
    "loopback_settings",
    "print_alerts",
    "write_json",
]

HOST = "127.0.0.1"
# The names a program takes for ``--enc-policy``: libtorrent's in/out_enc_policy values.
ENC_POLICIES = ("enabled", "forced", "disabled")


def loopback_settings(
    port: int,
    *,
    host: str = HOST,
    alert_mask: int | None = None,
    overrides: lt.settings_pack | None = None,
) -> lt.settings_pack:
    """Settings for ``lt.session(...)`` listening on ``host:port`` only.

    LSD, UPnP, NAT-PMP and DHT are off (the DHT's bootstrap list empty too), because the session
    starts them at once from the constructor's settings, before any later ``apply_settings``;
    uTP is off because it crawls on loopback; several connections per IP are allowed because every
    loopback peer may share 127.0.0.1. ``alert_mask`` defaults to error, status and peer alerts;
    ``overrides`` are applied last, so a program's differences are spelt out where it starts.
    """
    import libtorrent as lt

    if alert_mask is None:
        alert_mask = lt.alert_category.error | lt.alert_category.status | lt.alert_category.peer
    settings: lt.settings_pack = {
        "listen_interfaces": f"{host}:{port}",
        "outgoing_interfaces": host,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_dht": False,
        "dht_bootstrap_nodes": "",
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": alert_mask,
    }
    if overrides is not None:
        settings.update(overrides)
    return settings


def encryption_settings(policy: str) -> lt.settings_pack:
    """``in_enc_policy`` and ``out_enc_policy`` both ``policy`` (one of :data:`ENC_POLICIES`:
    ``enabled`` is libtorrent's default, MSE or plaintext; ``forced`` MSE only; ``disabled``
    plaintext only), RC4 or plaintext inside MSE."""
    import libtorrent as lt

    value = {
        "enabled": lt.enc_policy.enabled,
        "forced": lt.enc_policy.forced,
        "disabled": lt.enc_policy.disabled,
    }[policy]
    return {
        "in_enc_policy": int(value),
        "out_enc_policy": int(value),
        "allowed_enc_level": int(lt.enc_level.both),
    }


def checking(status: lt.torrent_status) -> bool:
    """True while libtorrent checks the torrent's files or resume data."""
    import libtorrent as lt

    return status.state in (
        lt.torrent_status.checking_files,
        lt.torrent_status.checking_resume_data,
    )


def print_alerts(ses: lt.session, prefix: str = "") -> None:
    """Print the session's pending alerts to stdout, which the launcher keeps in a log file."""
    for alert in ses.pop_alerts():
        print(f"{prefix}{type(alert).__name__}: {alert.message()}", flush=True)


def write_json(path: Path, data: object) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a temporary name, then a rename), so a
    launcher polling for the file never reads half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.rename(path)
