"""Run a loopback-only libtorrent session that seeds one small torrent, until stopped.

Run it as a separate process (`sys.executable _lt_seed.py --port P --workdir DIR`): it writes a
payload file and its hybrid .torrent into DIR, seeds it, and once it listens and seeds it writes
DIR/ready.json: {"info_hash": v1 hex, "info_hash_v2": v2 hex, "port": P, "peer_id_prefix": ...}.
It exits by itself after --lifetime seconds, so it never outlives a crashed test for long.
Settings: _lt_common.loopback_settings (../shared/INTEROP.md). _seeders.start_libtorrent_hybrid
starts it.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import libtorrent as lt

# Run as a script this file has no package: see _lt_common.
if TYPE_CHECKING or __package__:
    from ._lt_common import loopback_settings, print_alerts, write_json
else:
    from _lt_common import loopback_settings, print_alerts, write_json


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
    alert_mask = (
        lt.alert_category.error
        | lt.alert_category.status
        | lt.alert_category.port_mapping
        | lt.alert_category.peer
    )
    ses = lt.session(loopback_settings(args.port, host=args.ip, alert_mask=alert_mask))
    params = lt.add_torrent_params()
    params.ti = ti
    params.save_path = str(workdir)
    params.flags = lt.torrent_flags.seed_mode
    handle = ses.add_torrent(params)

    ready = False
    while time.monotonic() < deadline:
        print_alerts(ses)
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
                write_json(workdir / "ready.json", info)
                print(f"ready: {info}", flush=True)
                ready = True
        ses.wait_for_alert(100)
    print("lifetime over, exiting", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
