"""Run a loopback-only libtorrent session that seeds one small torrent, until stopped.

Run it as a separate process (`sys.executable _lt_seed.py --port P --workdir DIR`): it writes a
payload file and its hybrid .torrent into DIR, seeds it, and once it listens and seeds it writes
DIR/ready.json: {"info_hash": v1 hex, "info_hash_v2": v2 hex, "port": P, "peer_id_prefix": ...}.
It exits by itself after --lifetime seconds, so it never outlives a crashed test for long.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import libtorrent as lt


def safe_settings(ip: str, port: int) -> lt.settings_pack:
    """Settings from INTEROP.md: loopback only, no LSD / UPnP / NAT-PMP / DHT, no uTP."""
    return {
        "listen_interfaces": f"{ip}:{port}",
        "outgoing_interfaces": ip,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_dht": False,
        "dht_bootstrap_nodes": "",
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert_category.error
        | lt.alert_category.status
        | lt.alert_category.port_mapping
        | lt.alert_category.peer,
    }


def make_torrent(workdir: Path, size: int, piece_length: int) -> bytes:
    """Write payload.bin (deterministic bytes) and return a hybrid v1+v2 .torrent for it."""
    payload = workdir / "payload.bin"
    payload.write_bytes(random.Random(20240101).randbytes(size))
    ct = lt.create_torrent(lt.list_files(str(payload)), piece_length)
    ct.set_creator("bip interop test")
    lt.set_piece_hashes(ct, str(workdir))
    data: bytes = lt.bencode(ct.generate())
    (workdir / "payload.torrent").write_bytes(data)
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ip", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--size", type=int, default=256 * 1024)
    parser.add_argument("--piece-length", type=int, default=32 * 1024)
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.lifetime

    workdir: Path = args.workdir
    ti = lt.torrent_info(make_torrent(workdir, args.size, args.piece_length))
    ses = lt.session(safe_settings(args.ip, args.port))
    params = lt.add_torrent_params()
    params.ti = ti
    params.save_path = str(workdir)
    params.flags = lt.torrent_flags.seed_mode
    handle = ses.add_torrent(params)

    ready = False
    while time.monotonic() < deadline:
        for alert in ses.pop_alerts():
            print(f"{type(alert).__name__}: {alert.message()}", flush=True)
        if not ready and ses.is_listening() and ses.listen_port() == args.port:
            status = handle.status()
            if status.state == lt.torrent_status.seeding:
                hashes = ti.info_hashes()
                info = {
                    "info_hash": str(hashes.v1),
                    "info_hash_v2": str(hashes.v2),
                    "port": ses.listen_port(),
                    "peer_id_prefix": ses.get_settings()["peer_fingerprint"],
                    "pid": os.getpid(),
                }
                tmp = workdir / "ready.json.tmp"
                tmp.write_text(json.dumps(info))
                tmp.rename(workdir / "ready.json")
                print(f"ready: {info}", flush=True)
                ready = True
        ses.wait_for_alert(100)
    print("lifetime over, exiting", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
