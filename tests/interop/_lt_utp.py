"""A loopback-only libtorrent session that speaks uTP only (TCP off), run as its own process.

``python _lt_utp.py --port P --torrent T --save-path D --ready R [--peer HOST:PORT] [--lifetime S]``

It seeds T from D in seed mode (libtorrent trusts the data), with ``enable_incoming_tcp`` and
``enable_outgoing_tcp`` off and ``enable_incoming_utp`` / ``enable_outgoing_utp`` on, so that every
peer connection is uTP over UDP port P. ``--peer``: once it listens and seeds, ``connect_peer`` to
that address (over uTP, TCP being off), to make it dial us. R (JSON: ``port``,
``peer_id_prefix``) is written once it seeds and listens.

It exits by itself after ``--lifetime`` seconds. Settings: _lt_common.loopback_settings
(../shared/INTEROP.md) with the uTP overrides above. Run as a script this file has no package, so
it imports only _lt_common, found next to it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import libtorrent as lt

# Run as a script this file has no package: see _lt_common.
if TYPE_CHECKING or __package__:
    from . import _lt_common as common
else:
    import _lt_common as common

UTP_ONLY: lt.settings_pack = {
    "enable_incoming_tcp": False,
    "enable_outgoing_tcp": False,
    "enable_incoming_utp": True,
    "enable_outgoing_utp": True,
}
"""The settings that make every peer connection uTP."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--torrent", type=Path, required=True)
    parser.add_argument("--save-path", type=Path, required=True)
    parser.add_argument("--ready", type=Path, required=True)
    parser.add_argument("--peer", default=None)
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.lifetime

    ses = lt.session(common.loopback_settings(args.port, overrides=UTP_ONLY))
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(str(args.torrent))
    params.save_path = str(args.save_path)
    params.flags = lt.torrent_flags.seed_mode
    handle = ses.add_torrent(params)

    ready = False
    while time.monotonic() < deadline:
        common.print_alerts(ses)
        status = handle.status()
        if (
            not ready
            and status.state == lt.torrent_status.seeding
            and ses.is_listening()
            and ses.listen_port() == args.port
        ):
            if args.peer is not None:
                host, port = args.peer.rsplit(":", 1)
                handle.connect_peer((host, int(port)))
                print(f"connect_peer({host}:{port}) called", flush=True)
            info = {
                "port": ses.listen_port(),
                "peer_id_prefix": ses.get_settings()["peer_fingerprint"],
            }
            common.write_json(args.ready, info)
            print(f"ready: {info}", flush=True)
            ready = True
        ses.wait_for_alert(100)
    print("lifetime over, exiting", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
