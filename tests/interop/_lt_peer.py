"""A loopback-only libtorrent session of one torrent, run as its own process by the launchers.

``python _lt_peer.py --port P --torrent T --save-path D --ready R [--wait checked|seeding|complete]
[--peer HOST:PORT] [--seed-mode] [--enc-policy enabled|forced|disabled] [--lifetime S]``

- ``--seed-mode`` trusts the data in D (libtorrent's seed mode); without it libtorrent checks D.
- ``--peer``: once it listens and the check is over, ``connect_peer`` to that address (for a
  downloader with no tracker, or to make it dial us).
- ``--wait``: R (JSON, see ``_status``) is written once the session listens on P, the check is over
  and: ``checked``, nothing more; ``seeding``, the torrent seeds; ``complete``, it has every piece
  (then its files are flushed first).

It exits by itself after ``--lifetime`` seconds, so it never outlives a crashed test for long.
Settings: _lt_common.loopback_settings (../shared/INTEROP.md). Run as a script this file has no
package, so it imports only _lt_common, found next to it.
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


def _status(ses: lt.session, handle: lt.torrent_handle, num_pieces: int) -> dict[str, object]:
    """What the ready file says: the session's port, peer id prefix and encryption settings, and
    the torrent's state, pieces and error."""
    got = ses.get_settings()
    status = handle.status()
    return {
        "port": ses.listen_port(),
        "peer_id_prefix": got["peer_fingerprint"],
        "in_enc_policy": got["in_enc_policy"],
        "out_enc_policy": got["out_enc_policy"],
        "state": str(status.state),
        "is_seeding": status.is_seeding,
        "have": sum(1 for bit in status.pieces if bit),
        "num_pieces": num_pieces,
        "errc": status.errc.message() if status.errc.value() else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--torrent", type=Path, required=True)
    parser.add_argument("--save-path", type=Path, required=True)
    parser.add_argument("--ready", type=Path, required=True)
    parser.add_argument("--wait", choices=["checked", "seeding", "complete"], default="checked")
    parser.add_argument("--peer", default=None)
    parser.add_argument("--seed-mode", action="store_true")
    parser.add_argument("--enc-policy", choices=common.ENC_POLICIES, default="enabled")
    parser.add_argument("--alert-tracker", action="store_true")
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.lifetime

    alert_mask = lt.alert_category.error | lt.alert_category.status | lt.alert_category.peer
    if args.alert_tracker:
        alert_mask |= lt.alert_category.tracker
    ses = lt.session(
        common.loopback_settings(
            args.port, alert_mask=alert_mask, overrides=common.encryption_settings(args.enc_policy)
        )
    )
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(str(args.torrent))
    params.save_path = str(args.save_path)
    if args.seed_mode:
        params.flags = lt.torrent_flags.seed_mode
    handle = ses.add_torrent(params)
    num_pieces = params.ti.num_pieces()

    connected = args.peer is None
    ready = False
    while time.monotonic() < deadline:
        common.print_alerts(ses)
        status = handle.status()
        if not connected and not common.checking(status) and ses.is_listening():
            host, port = args.peer.rsplit(":", 1)
            handle.connect_peer((host, int(port)))
            print(f"connect_peer({host}:{port}) called", flush=True)
            connected = True
        if (
            not ready
            and connected
            and not common.checking(status)
            and ses.is_listening()
            and ses.listen_port() == args.port
        ):
            if args.wait == "seeding":
                ready = status.state == lt.torrent_status.seeding
            elif args.wait == "complete":
                ready = all(status.pieces) and len(status.pieces) == num_pieces
                if ready:
                    handle.flush_cache()
            else:
                ready = True
            if ready:
                info = _status(ses, handle, num_pieces)
                common.write_json(args.ready, info)
                print(f"ready: {info}", flush=True)
        ses.wait_for_alert(100)
    print("lifetime over, exiting", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
