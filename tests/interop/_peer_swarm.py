"""libtorrent programs for the bip_peer metadata and PEX interop tests.

``start_libtorrent_magnet`` starts a libtorrent session given only a magnet link (with ``x.pe``
naming the peer to fetch the metadata from); it writes a result file once the metadata arrives.
``start_libtorrent_swarm`` starts one process holding several libtorrent sessions of one torrent,
none with data, all connected to the first one (the hub), so that the hub knows other peers and
sends PEX about them.

This file is also the program: ``python _peer_swarm.py magnet ...`` or ``python _peer_swarm.py
swarm ...``. As in _inbound.py, the imports of the package's modules are inside the functions:
run as a script, this file has no package. Every session runs with _lt_common.loopback_settings
(INTEROP.md: loopback only; no LSD, UPnP, NAT-PMP, DHT or uTP) and exits by itself after
``--lifetime``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import libtorrent as lt

    from ._helpers import StartProcess

# Run as a script this file has no package: see _lt_common.
if TYPE_CHECKING or __package__:
    from ._lt_common import HOST, checking, loopback_settings, print_alerts, write_json
else:
    from _lt_common import HOST, checking, loopback_settings, print_alerts, write_json

__all__ = [
    "HOST",
    "read_isolated_status",
    "start_libtorrent_isolated",
    "start_libtorrent_magnet",
    "start_libtorrent_swarm",
]


def start_libtorrent_magnet(
    start_process: StartProcess, workdir: Path, magnet: str
) -> tuple[int, Path]:
    """libtorrent 2.1 adding ``magnet`` (which should carry ``x.pe``); returns its listen port
    and the path of the JSON file it writes once it has the metadata (``info_hash`` v1 hex,
    ``metadata_size``, ``info_sha1`` and ``info_sha256`` of the info section it received)."""
    from ._helpers import file_exists, free_port, require_client

    require_client("libtorrent")
    port = free_port(HOST, tcp=True, udp=True)
    save = workdir / "lt-magnet"
    save.mkdir()
    ready = workdir / "lt-magnet-ready.json"
    result = workdir / "lt-magnet-result.json"
    start_process(
        [
            sys.executable,
            Path(__file__),
            "magnet",
            "--port",
            str(port),
            "--magnet",
            magnet,
            "--save-path",
            save,
            "--ready",
            ready,
            "--result",
            result,
        ],
        cwd=workdir,
        ready=file_exists(ready),
        ready_timeout=20,
        name="libtorrent-magnet",
    )
    return port, result


def start_libtorrent_swarm(
    start_process: StartProcess, workdir: Path, torrent_path: Path, *, leaves: int = 2
) -> dict[str, Any]:
    """One process with ``1 + leaves`` libtorrent sessions of the torrent, none with data; each
    leaf dials the hub. Returns ``{"hub": port, "leaves": [ports]}`` once the hub has every
    leaf connected."""
    from ._helpers import file_exists, require_client

    require_client("libtorrent")
    ready = workdir / "lt-swarm-ready.json"
    start_process(
        [
            sys.executable,
            Path(__file__),
            "swarm",
            "--torrent",
            torrent_path,
            "--workdir",
            workdir,
            "--leaves",
            str(leaves),
            "--ready",
            ready,
        ],
        cwd=workdir,
        ready=file_exists(ready),
        ready_timeout=30,
        name="libtorrent-swarm",
    )
    info: dict[str, Any] = json.loads(ready.read_text())
    return info


def start_libtorrent_isolated(
    start_process: StartProcess, workdir: Path, torrent_path: Path, *, count: int = 2
) -> tuple[list[int], Path]:
    """One process with ``count`` libtorrent sessions of the torrent, none with data and none
    told about another. Returns their listen ports and the path of the status file it rewrites
    every 100 ms (read it with :func:`read_isolated_status`)."""
    from ._helpers import file_exists, require_client

    require_client("libtorrent")
    ready = workdir / "lt-isolated-ready.json"
    status = workdir / "lt-isolated-status.json"
    start_process(
        [
            sys.executable,
            Path(__file__),
            "isolated",
            "--torrent",
            torrent_path,
            "--workdir",
            workdir,
            "--count",
            str(count),
            "--ready",
            ready,
            "--status",
            status,
        ],
        cwd=workdir,
        ready=file_exists(ready),
        ready_timeout=30,
        name="libtorrent-isolated",
    )
    ports: list[int] = json.loads(ready.read_text())["ports"]
    return ports, status


def read_isolated_status(status: Path) -> list[list[dict[str, Any]]]:
    """Per session, its peers: ``{"port": remote port, "pex": learnt from PEX,
    "outgoing": it dialled}`` (empty lists until the first status is written)."""
    if not status.exists():
        return []
    peers: list[list[dict[str, Any]]] = json.loads(status.read_text())["peers"]
    return peers


# -- the program -----------------------------------------------------------------------------------


def _settings(port: int) -> lt.settings_pack:
    import libtorrent as lt

    alert_mask = (
        lt.alert_category.error
        | lt.alert_category.status
        | lt.alert_category.peer
        | lt.alert_category.connect
    )
    # Told about each other at the same moment, two sessions may dial each other at once, and
    # then each drops the other's connection as a duplicate peer id; they redial after this many
    # seconds (libtorrent's default, 60, outlasts a test).
    return loopback_settings(port, alert_mask=alert_mask, overrides={"min_reconnect_time": 1})


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
    return port


def _sessions(
    torrent: Path, workdir: Path, count: int, kind: str
) -> tuple[list[lt.session], list[lt.torrent_handle], list[int]]:
    """`count` sessions on free ports, each with the torrent and an empty ``lt-KIND-INDEX``
    directory of `workdir`: the sessions, their torrent handles and their ports."""
    import libtorrent as lt

    ti = lt.torrent_info(str(torrent))
    sessions = []
    handles = []
    ports = []
    for index in range(count):
        port = _free_port()
        ses = lt.session(_settings(port))
        params = lt.add_torrent_params()
        params.ti = ti
        save = workdir / f"lt-{kind}-{index}"
        save.mkdir(exist_ok=True)
        params.save_path = str(save)
        sessions.append(ses)
        handles.append(ses.add_torrent(params))
        ports.append(port)
    return sessions, handles, ports


def _magnet_main(args: argparse.Namespace) -> int:
    import libtorrent as lt

    deadline = time.monotonic() + args.lifetime
    ses = lt.session(_settings(args.port))
    params = lt.parse_magnet_uri(args.magnet)
    params.save_path = str(args.save_path)
    # Only the metadata is wanted: keep the payload from being downloaded.
    params.flags |= lt.torrent_flags.upload_mode
    handle = ses.add_torrent(params)
    ready = False
    done = False
    while time.monotonic() < deadline:
        for alert in ses.pop_alerts():
            print(f"{type(alert).__name__}: {alert.message()}", flush=True)
            ti = handle.torrent_file()
            if isinstance(alert, lt.metadata_received_alert) and ti is not None and not done:
                info = bytes(ti.info_section())
                write_json(
                    args.result,
                    {
                        "info_hash": str(ti.info_hashes().v1),
                        "metadata_size": len(info),
                        "info_sha1": hashlib.sha1(info).hexdigest(),
                        "info_sha256": hashlib.sha256(info).hexdigest(),
                    },
                )
                done = True
        if not ready and ses.is_listening():
            write_json(args.ready, {"port": ses.listen_port()})
            ready = True
        ses.wait_for_alert(100)
    print("lifetime over, exiting", flush=True)
    return 0


def _swarm_main(args: argparse.Namespace) -> int:

    deadline = time.monotonic() + args.lifetime
    sessions, handles, ports = _sessions(args.torrent, args.workdir, 1 + args.leaves, "swarm")
    ready = False
    connected = False
    while time.monotonic() < deadline:
        for index, ses in enumerate(sessions):
            print_alerts(ses, f"[{index}] ")
        listening = all(ses.is_listening() for ses in sessions)
        checked = not any(checking(handle.status()) for handle in handles)
        if not connected and listening and checked:
            for handle in handles[1:]:
                handle.connect_peer((HOST, ports[0]))
            connected = True
        if connected and not ready and handles[0].status().num_peers >= args.leaves:
            write_json(args.ready, {"hub": ports[0], "leaves": ports[1:]})
            print(f"ready: hub {ports[0]}, leaves {ports[1:]}", flush=True)
            ready = True
        time.sleep(0.05)
    print("lifetime over, exiting", flush=True)
    return 0


def _isolated_main(args: argparse.Namespace) -> int:
    import libtorrent as lt

    deadline = time.monotonic() + args.lifetime
    sessions, handles, ports = _sessions(args.torrent, args.workdir, args.count, "isolated")
    ready = False
    while time.monotonic() < deadline:
        for index, ses in enumerate(sessions):
            print_alerts(ses, f"[{index}] ")
        # Ready once every torrent is checked and resumed: libtorrent starts an auto-managed
        # torrent paused, and until its queue resumes it (about a second later) it hangs up on
        # peers before their handshake.
        checked = all(
            not checking(handle.status()) and not handle.flags() & lt.torrent_flags.paused
            for handle in handles
        )
        if not ready and checked and all(ses.is_listening() for ses in sessions):
            write_json(args.ready, {"ports": ports})
            ready = True
        if ready:
            peers = [
                [
                    {
                        "port": peer.ip[1],
                        "pex": bool(peer.source & lt.peer_info.pex),
                        "outgoing": bool(peer.flags & lt.peer_info.outgoing_connection),
                    }
                    for peer in handle.get_peer_info()
                ]
                for handle in handles
            ]
            write_json(args.status, {"peers": peers})
        time.sleep(0.1)
    print("lifetime over, exiting", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    magnet = commands.add_parser("magnet")
    magnet.add_argument("--port", type=int, required=True)
    magnet.add_argument("--magnet", required=True)
    magnet.add_argument("--save-path", type=Path, required=True)
    magnet.add_argument("--ready", type=Path, required=True)
    magnet.add_argument("--result", type=Path, required=True)
    magnet.add_argument("--lifetime", type=float, default=60.0)
    swarm = commands.add_parser("swarm")
    swarm.add_argument("--torrent", type=Path, required=True)
    swarm.add_argument("--workdir", type=Path, required=True)
    swarm.add_argument("--leaves", type=int, required=True)
    swarm.add_argument("--ready", type=Path, required=True)
    swarm.add_argument("--lifetime", type=float, default=60.0)
    isolated = commands.add_parser("isolated")
    isolated.add_argument("--torrent", type=Path, required=True)
    isolated.add_argument("--workdir", type=Path, required=True)
    isolated.add_argument("--count", type=int, required=True)
    isolated.add_argument("--ready", type=Path, required=True)
    isolated.add_argument("--status", type=Path, required=True)
    isolated.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args()
    if args.command == "magnet":
        return _magnet_main(args)
    if args.command == "isolated":
        return _isolated_main(args)
    return _swarm_main(args)


if __name__ == "__main__":
    sys.exit(main())
