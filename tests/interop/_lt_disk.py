"""A loopback-only libtorrent session for the bip_disk interop tests, run as its own process.

``python _lt_disk.py seed --port P --torrent T --save-path D --ready R``: libtorrent checks the
data already in D itself (no seed mode), and once the check is over writes R (JSON): its state,
how many pieces it has, and its port; if it has every piece it then seeds.

``python _lt_disk.py download --port P --torrent T --save-path D --peer HOST:PORT --ready R``:
libtorrent downloads the torrent from that one peer into D and writes R once it has every piece
(and its files are flushed).

Both exit by themselves after ``--lifetime`` seconds. Settings per ../shared/INTEROP.md: loopback
only, no LSD / UPnP / NAT-PMP / DHT, no uTP. Run as a script this file has no package, so it
imports nothing of the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import libtorrent as lt

HOST = "127.0.0.1"


def _session(port: int) -> lt.session:
    # INTEROP.md: pass every setting to the constructor, or LSD/UPnP/NAT-PMP/DHT start at once.
    settings: lt.settings_pack = {
        "listen_interfaces": f"{HOST}:{port}",
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
    return lt.session(settings)


def _write_ready(path: Path, info: dict[str, object]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    tmp.rename(path)
    print(f"ready: {info}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["seed", "download"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--torrent", type=Path, required=True)
    parser.add_argument("--save-path", type=Path, required=True)
    parser.add_argument("--ready", type=Path, required=True)
    parser.add_argument("--peer", default=None)
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.lifetime

    ses = _session(args.port)
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(str(args.torrent))
    params.save_path = str(args.save_path)
    handle = ses.add_torrent(params)
    num_pieces = params.ti.num_pieces()
    ready = False
    connected = False
    while time.monotonic() < deadline:
        for alert in ses.pop_alerts():
            print(f"{type(alert).__name__}: {alert.message()}", flush=True)
        status = handle.status()
        checking = status.state in (
            lt.torrent_status.checking_files,
            lt.torrent_status.checking_resume_data,
        )
        if args.mode == "download" and args.peer and not connected and not checking:
            host, port = args.peer.rsplit(":", 1)
            handle.connect_peer((host, int(port)))
            connected = True
        if not ready and not checking and ses.is_listening():
            have = sum(1 for bit in status.pieces if bit)
            if args.mode == "seed" or have == num_pieces:
                if args.mode == "download":
                    handle.flush_cache()
                _write_ready(
                    args.ready,
                    {
                        "state": str(status.state),
                        "is_seeding": status.is_seeding,
                        "have": have,
                        "num_pieces": num_pieces,
                        "port": ses.listen_port(),
                        "errc": status.errc.message() if status.errc.value() else "",
                    },
                )
                ready = True
        ses.wait_for_alert(100)
    print("lifetime over, exiting", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
