"""A loopback-only libtorrent leecher for download_vs_libtorrent.py, run as its own process.

``python _lt_leecher.py --torrent T --save-path D --peer HOST:PORT --result R
[--encryption plaintext|rc4] [--lifetime S]``

It dials ``--peer`` (the only peer: no tracker, DHT, LSD, UPnP or NAT-PMP, uTP off: the
settings of tests/interop/_lt_common.loopback_settings), downloads into D, and as soon as
libtorrent says every piece passed its hash check it writes R (JSON, atomically):
``{"added": t0, "finished": t1, "encrypted": bool, "peer_id_prefix": str}``, where ``t0`` is
when the torrent was added and the peer dialled and ``t1`` when the last piece was verified,
both ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process of the machine, so
the benchmark compares them with its own), and exits. ``encrypted`` says whether the
connection was RC4-encrypted (MSE). It gives up after ``--lifetime`` seconds (exit 1).

``--encryption rc4`` is MSE with RC4 only, what ``bip download --encryption require`` speaks:
libtorrent's default ``allowed_enc_level`` (both) would make it pick MSE's plaintext mode,
which costs no cipher and would not compare like with like.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import libtorrent as lt

HOST = "127.0.0.1"


def settings(encryption: str) -> lt.settings_pack:
    """Loopback only, as ../tests/interop/_lt_common.loopback_settings, plus the policy."""
    pack: lt.settings_pack = {
        "listen_interfaces": f"{HOST}:0",
        "outgoing_interfaces": HOST,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_dht": False,
        "dht_bootstrap_nodes": "",
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert_category.error | lt.alert_category.status,
    }
    if encryption == "rc4":
        pack["in_enc_policy"] = int(lt.enc_policy.forced)
        pack["out_enc_policy"] = int(lt.enc_policy.forced)
        pack["allowed_enc_level"] = int(lt.enc_level.rc4)
    else:
        pack["in_enc_policy"] = int(lt.enc_policy.disabled)
        pack["out_enc_policy"] = int(lt.enc_policy.disabled)
    return pack


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torrent", type=Path, required=True)
    parser.add_argument("--save-path", type=Path, required=True)
    parser.add_argument("--peer", required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--encryption", choices=["plaintext", "rc4"], default="plaintext")
    parser.add_argument("--lifetime", type=float, default=300.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.lifetime
    host, port = args.peer.rsplit(":", 1)

    ses = lt.session(settings(args.encryption))
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(str(args.torrent))
    params.save_path = str(args.save_path)
    handle = ses.add_torrent(params)
    added = time.monotonic()
    handle.connect_peer((host, int(port)))
    encrypted = False
    while time.monotonic() < deadline:
        ses.wait_for_alert(50)
        finished = any(isinstance(a, lt.torrent_finished_alert) for a in ses.pop_alerts())
        status = handle.status()
        if not finished and status.num_pieces == params.ti.num_pieces():
            finished = True
        if not encrypted:
            encrypted = any(p.flags & lt.peer_info.rc4_encrypted for p in handle.get_peer_info())
        if finished:
            done = time.monotonic()
            result = {
                "added": added,
                "finished": done,
                "encrypted": encrypted,
                "peer_id_prefix": ses.get_settings()["peer_fingerprint"],
            }
            tmp = args.result.with_name(args.result.name + ".tmp")
            tmp.write_text(json.dumps(result))
            tmp.rename(args.result)
            return 0
    print("lifetime over before the download finished", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
