"""Start real clients as downloaders that dial a peer we name, for tests of inbound handshakes.

Each ``start_*`` function starts one client through the ``start_process`` fixture (stopped by PID
at teardown) with LSD, UPnP, NAT-PMP and DHT off as ../shared/INTEROP.md says, with an empty save
directory, so it wants the torrent and dials the peer it is told about.

This file is also the libtorrent downloading program: ``python _inbound.py --port P --torrent T
--save-path D --ready R --peer-port Q [--enc-policy enabled|forced|disabled]``: it adds the
torrent with no data and calls ``connect_peer(("127.0.0.1", Q))``. As in _seeders.py, the imports
of the package's modules are inside the functions: run as a script, this file has no package.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bip_handshake import CompletedHandshake

    from ._helpers import StartProcess
    from ._seeders import QBittorrent, SmallTorrent

__all__ = [
    "HOST",
    "announce_udp",
    "first_message_id",
    "start_aria2_downloader",
    "start_libtorrent_downloader",
    "start_qbittorrent_downloader",
]

HOST = "127.0.0.1"


# -- libtorrent ------------------------------------------------------------------------------------


def start_libtorrent_downloader(
    start_process: StartProcess,
    workdir: Path,
    torrent: SmallTorrent,
    peer_port: int,
    *,
    enc_policy: str = "enabled",
) -> dict[str, object]:
    """libtorrent 2.1 downloading `torrent` into an empty directory, told to dial
    ``127.0.0.1:peer_port``; returns what it wrote in its ready file (port, peer id prefix,
    encryption settings) once it has called ``connect_peer``."""
    from ._helpers import file_exists, free_port, require_client

    require_client("libtorrent")
    port = free_port(HOST, tcp=True, udp=True)
    save = workdir / "lt-download"
    save.mkdir()
    ready = workdir / "lt-downloader-ready.json"
    start_process(
        [
            sys.executable,
            Path(__file__),
            "--port",
            str(port),
            "--torrent",
            torrent.torrent_path,
            "--save-path",
            save,
            "--ready",
            ready,
            "--peer-port",
            str(peer_port),
            "--enc-policy",
            enc_policy,
        ],
        cwd=workdir,
        ready=file_exists(ready),
        ready_timeout=20,
        name="libtorrent-downloader",
    )
    info: dict[str, object] = json.loads(ready.read_text())
    return info


def _libtorrent_main() -> int:
    import libtorrent as lt

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--torrent", type=Path, required=True)
    parser.add_argument("--save-path", type=Path, required=True)
    parser.add_argument("--ready", type=Path, required=True)
    parser.add_argument("--peer-port", type=int, required=True)
    parser.add_argument("--enc-policy", choices=["enabled", "forced", "disabled"], required=True)
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.lifetime
    policy = {
        "enabled": lt.enc_policy.enabled,
        "forced": lt.enc_policy.forced,
        "disabled": lt.enc_policy.disabled,
    }[args.enc_policy]

    # INTEROP.md: pass every setting to the constructor, or LSD/UPnP/NAT-PMP/DHT start at once.
    settings: lt.settings_pack = {
        "listen_interfaces": f"{HOST}:{args.port}",
        "outgoing_interfaces": HOST,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_dht": False,
        "dht_bootstrap_nodes": "",
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "allow_multiple_connections_per_ip": True,
        "in_enc_policy": int(policy),
        "out_enc_policy": int(policy),
        "allowed_enc_level": int(lt.enc_level.both),
        "alert_mask": lt.alert_category.error | lt.alert_category.status | lt.alert_category.peer,
    }
    ses = lt.session(settings)
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(str(args.torrent))
    params.save_path = str(args.save_path)
    handle = ses.add_torrent(params)

    connected = False
    waiting = (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data)
    while time.monotonic() < deadline:
        for alert in ses.pop_alerts():
            print(f"{type(alert).__name__}: {alert.message()}", flush=True)
        if not connected and ses.is_listening() and handle.status().state not in waiting:
            handle.connect_peer((HOST, args.peer_port))
            got = ses.get_settings()
            info = {
                "port": ses.listen_port(),
                "peer_id_prefix": got["peer_fingerprint"],
                "in_enc_policy": got["in_enc_policy"],
                "out_enc_policy": got["out_enc_policy"],
                "state": str(handle.status().state),
            }
            tmp = args.ready.with_suffix(".tmp")
            tmp.write_text(json.dumps(info))
            tmp.rename(args.ready)
            print(f"connect_peer called: {info}", flush=True)
            connected = True
        ses.wait_for_alert(100)
    print("lifetime over, exiting", flush=True)
    return 0


# -- qBittorrent -----------------------------------------------------------------------------------


def start_qbittorrent_downloader(
    start_process: StartProcess, workdir: Path, torrent: SmallTorrent
) -> QBittorrent:
    """qbittorrent-nox 4.5.2 with `torrent` added (no data) over its Web API."""
    from ._helpers import wait_for
    from ._seeders import launch_qbittorrent

    client, _ = launch_qbittorrent(start_process, workdir)
    save = workdir / "qbt-download"
    save.mkdir()
    client.add_torrent(torrent, save)
    wait_for(
        lambda: client.has_torrent(torrent.v1.hex()),
        15,
        interval=0.2,
        what="qBittorrent has the torrent",
    )
    return client


# -- what a peer sends first -----------------------------------------------------------------------


async def first_message_id(peer: CompletedHandshake) -> int:
    """The id of the first non-keepalive message on the stream after the handshake."""
    import trio

    data = peer.trailing
    with trio.fail_after(10):
        while True:
            while len(data) >= 4 and data[:4] == bytes(4):
                data = data[4:]  # keep-alive
            if len(data) >= 5:
                assert 0 < int.from_bytes(data[:4], "big") < 1 << 20, data[:16].hex()
                return data[4]
            chunk = await peer.stream.receive_some()
            assert chunk, "the peer closed the connection"
            data += chunk


# -- a UDP tracker announce (BEP 15) ---------------------------------------------------------------


def announce_udp(
    tracker: tuple[str, int],
    info_hash: bytes,
    peer_id: bytes,
    port: int,
    *,
    left: int,
    source: str = HOST,
) -> bytes:
    """Announce ``source:port`` (event started) to a UDP tracker; return the compact peers.

    The tracker records the address the datagram comes from, so ``source`` (any
    127.0.0.X) is the address other peers are told to dial.
    """
    from ._helpers import udp_request

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        tid = int.from_bytes(os.urandom(4), "big")
        reply = udp_request(
            sock,
            struct.pack(">QII", 0x41727101980, 0, tid),
            tracker,
            accept=lambda r: r[4:8] == tid.to_bytes(4, "big"),
        )
        assert len(reply) == 16, reply.hex()
        connection_id = struct.unpack(">Q", reply[8:16])[0]
        tid = int.from_bytes(os.urandom(4), "big")
        request = struct.pack(
            ">QII20s20sQQQIIIiH",
            connection_id,
            1,
            tid,
            info_hash,
            peer_id,
            0,
            left,
            0,
            2,  # started
            0,
            0x4242,
            -1,
            port,
        )
        reply = udp_request(
            sock, request, tracker, accept=lambda r: r[4:8] == tid.to_bytes(4, "big")
        )
        assert len(reply) >= 20, reply.hex()
        return reply[20:]


# -- aria2 -----------------------------------------------------------------------------------------


def start_aria2_downloader(
    start_process: StartProcess, workdir: Path, torrent: SmallTorrent
) -> None:
    """aria2c downloading `torrent` (which names a ``udp://127.0.0.1`` tracker) into an empty
    directory. ``--enable-dht=true`` only so that it announces to UDP trackers (INTEROP.md): with
    no dht.dat and no entry point it has nobody to bootstrap from."""
    from ._helpers import free_port, require_client, tcp_listening
    from ._seeders import _private_env

    aria2c = require_client("aria2c")
    port = free_port(HOST)
    dht_port = free_port(HOST, tcp=False, udp=True)
    home = workdir / "aria2-home"
    save = workdir / "aria2-download"
    save.mkdir()
    start_process(
        [
            aria2c,
            "--no-conf=true",
            f"--listen-port={port}",
            f"--dht-listen-port={dht_port}",
            f"--interface={HOST}",
            "--disable-ipv6=true",
            "--bt-enable-lpd=false",
            "--enable-dht=true",
            "--enable-dht6=false",
            f"--dht-file-path={home / 'dht.dat'}",
            "--enable-peer-exchange=false",
            "--seed-time=0",
            "--summary-interval=0",
            "--console-log-level=notice",
            "-d",
            save,
            torrent.torrent_path,
        ],
        cwd=workdir,
        env=_private_env(home),
        ready=tcp_listening(HOST, port),
        ready_timeout=15,
        name="aria2c",
    )


if __name__ == "__main__":
    sys.exit(_libtorrent_main())
