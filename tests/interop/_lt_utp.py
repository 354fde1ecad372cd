"""A loopback-only libtorrent session that speaks uTP only (TCP off), run as its own process.

``python _lt_utp.py --port P --torrent T --save-path D --ready R [--peer HOST:PORT]
[--download --done F] [--lifetime S]``

With ``enable_incoming_tcp`` and ``enable_outgoing_tcp`` off and ``enable_incoming_utp`` /
``enable_outgoing_utp`` on, every peer connection is uTP over UDP port P.

- By default it seeds T from D in seed mode (libtorrent trusts the data); R (JSON: ``port``,
  ``peer_id_prefix``) is written once it seeds and listens.
- ``--download``: it downloads T into D (empty) instead; R is written once it listens and the
  check is over, and F (JSON: ``have``, ``num_pieces``, and the ``time.time()`` of the first
  payload byte seen and of the last piece, ``first_data`` and ``finished``, for benchmarks)
  once it has every piece, files flushed.
- ``--peer``: once R is written, ``connect_peer`` to that address (over uTP, TCP being off), to
  make it dial us.

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
    parser.add_argument("--download", action="store_true")
    parser.add_argument("--done", type=Path, default=None)
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.lifetime

    ses = lt.session(common.loopback_settings(args.port, overrides=UTP_ONLY))
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(str(args.torrent))
    params.save_path = str(args.save_path)
    if not args.download:
        params.flags = lt.torrent_flags.seed_mode
    handle = ses.add_torrent(params)
    num_pieces = params.ti.num_pieces()

    ready = done = False
    first_data: float | None = None
    while time.monotonic() < deadline:
        common.print_alerts(ses)
        status = handle.status()
        started = (
            not common.checking(status)
            if args.download
            else status.state == lt.torrent_status.seeding
        )
        if not ready and started and ses.is_listening() and ses.listen_port() == args.port:
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
        if first_data is None and status.total_payload_download:
            first_data = time.time()
        if ready and not done and args.done is not None and all(status.pieces):
            finished = time.time()
            handle.flush_cache()
            have = sum(1 for bit in status.pieces if bit)
            result: dict[str, float] = {"have": have, "num_pieces": num_pieces}
            result.update(first_data=first_data or finished, finished=finished)
            common.write_json(args.done, result)
            print(f"done: {have}/{num_pieces} pieces", flush=True)
            done = True
        # Short waits in download mode: benchmarks time the download from these polls.
        ses.wait_for_alert(10 if args.download else 100)
    print("lifetime over, exiting", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
