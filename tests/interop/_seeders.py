"""Start real clients seeding one small v1 torrent on loopback, for tests that dial them.

Each ``start_*`` function starts one seeder through the ``start_process`` fixture (so it is stopped
by PID at teardown) with LSD, UPnP, NAT-PMP and DHT off as ../shared/INTEROP.md says, and returns
a :class:`Seeder` once its port accepts connections (libtorrent: once the torrent is seeding).

This file is also the libtorrent seeding program: ``python _seeders.py --port P --torrent T
--save-path D --ready R [--enc-policy enabled|forced|disabled]``. Unlike ``_lt_seed.py`` it seeds
the torrent it is given and takes an encryption policy. That is why the imports of ``._helpers``
are inside the functions: run as a script, this file has no package.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bip_metainfo import InfoHash, create_torrent

if TYPE_CHECKING:
    from ._helpers import StartProcess

__all__ = [
    "HOST",
    "Seeder",
    "SmallTorrent",
    "make_torrent",
    "start_aria2",
    "start_libtorrent",
    "start_qbittorrent",
    "start_rtorrent",
]

HOST = "127.0.0.1"
_PAYLOAD_SIZE = 96 * 1024 + 123  # four pieces of 32 KiB, the last one short


@dataclass(frozen=True)
class SmallTorrent:
    """A v1 torrent made by bip_metainfo of one file in ``content_dir``."""

    torrent_path: Path
    content_dir: Path
    info_hash: InfoHash

    @property
    def v1(self) -> bytes:
        assert self.info_hash.v1 is not None
        return self.info_hash.v1


@dataclass(frozen=True)
class Seeder:
    """A client seeding a :class:`SmallTorrent` on ``(host, port)``."""

    name: str
    host: str
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


def make_torrent(workdir: Path, *, trackers: tuple[str, ...] = ()) -> SmallTorrent:
    """Write ``workdir/content/payload.bin`` and ``workdir/payload.torrent`` (v1, no date).

    rtorrent refuses a torrent without trackers ("Could not find any trackers"): give it one on
    loopback where nothing listens.
    """
    content = workdir / "content"
    content.mkdir(parents=True)
    payload = content / "payload.bin"
    payload.write_bytes(random.Random(20260101).randbytes(_PAYLOAD_SIZE))
    metainfo = create_torrent(
        payload,
        version="v1",
        creation_date=None,
        piece_length=32 * 1024,
        created_by=None,
        trackers=trackers,
    )
    torrent_path = workdir / "payload.torrent"
    torrent_path.write_bytes(metainfo.to_bytes())
    return SmallTorrent(torrent_path, content, metainfo.info.info_hash)


def _private_env(home: Path) -> dict[str, str]:
    """A minimal environment with a private HOME and XDG directories."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LC_ALL": "C.UTF-8",
    }
    for var, sub in (
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_CACHE_HOME", ".cache"),
    ):
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / sub)
    return env


# -- libtorrent ------------------------------------------------------------------------------------


def start_libtorrent(
    start_process: StartProcess,
    workdir: Path,
    torrent: SmallTorrent,
    *,
    enc_policy: str = "enabled",
) -> Seeder:
    """libtorrent 2.1 seeding `torrent`; `enc_policy` is its in/out_enc_policy
    (``enabled``: the default, accepts plaintext and MSE; ``forced``: pe_forced, MSE only)."""
    from ._helpers import file_exists, free_port, require_client

    require_client("libtorrent")
    port = free_port(HOST, tcp=True, udp=True)  # UDP too: its (disabled) uTP socket
    ready = workdir / "libtorrent-ready.json"
    start_process(
        [
            sys.executable,
            Path(__file__),
            "--port",
            str(port),
            "--torrent",
            torrent.torrent_path,
            "--save-path",
            torrent.content_dir,
            "--ready",
            ready,
            "--enc-policy",
            enc_policy,
        ],
        cwd=workdir,
        ready=file_exists(ready),
        ready_timeout=20,
        name="libtorrent",
    )
    info = json.loads(ready.read_text())
    assert info["port"] == port, info
    return Seeder("libtorrent", HOST, port)


def _libtorrent_main() -> int:
    import libtorrent as lt

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--torrent", type=Path, required=True)
    parser.add_argument("--save-path", type=Path, required=True)
    parser.add_argument("--ready", type=Path, required=True)
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
    params.flags = lt.torrent_flags.seed_mode
    handle = ses.add_torrent(params)

    ready = False
    while time.monotonic() < deadline:
        for alert in ses.pop_alerts():
            print(f"{type(alert).__name__}: {alert.message()}", flush=True)
        if (
            not ready
            and ses.is_listening()
            and ses.listen_port() == args.port
            and handle.status().state == lt.torrent_status.seeding
        ):
            got = ses.get_settings()
            info = {
                "port": ses.listen_port(),
                "peer_id_prefix": got["peer_fingerprint"],
                "in_enc_policy": got["in_enc_policy"],
                "out_enc_policy": got["out_enc_policy"],
            }
            tmp = args.ready.with_suffix(".tmp")
            tmp.write_text(json.dumps(info))
            tmp.rename(args.ready)
            print(f"ready: {info}", flush=True)
            ready = True
        ses.wait_for_alert(100)
    print("lifetime over, exiting", flush=True)
    return 0


# -- aria2 -----------------------------------------------------------------------------------------


def start_aria2(
    start_process: StartProcess,
    workdir: Path,
    torrent: SmallTorrent,
    *,
    require_crypto: bool = False,
) -> Seeder:
    """aria2c checking and seeding `torrent`; `require_crypto` is ``--bt-require-crypto``."""
    from ._helpers import free_port, require_client, tcp_listening

    aria2c = require_client("aria2c")
    port = free_port(HOST)
    dht_port = free_port(HOST, tcp=False, udp=True)
    home = workdir / "aria2-home"
    argv: list[str | os.PathLike[str]] = [
        aria2c,
        "--no-conf=true",
        f"--listen-port={port}",
        f"--dht-listen-port={dht_port}",
        f"--interface={HOST}",
        "--disable-ipv6=true",
        "--bt-enable-lpd=false",
        "--enable-dht=false",
        "--enable-dht6=false",
        f"--dht-file-path={home / 'dht.dat'}",
        "--enable-peer-exchange=false",
        "--seed-ratio=0.0",
        "--summary-interval=0",
        "--console-log-level=notice",
        f"--bt-require-crypto={'true' if require_crypto else 'false'}",
        "-V",
        "--check-integrity=true",
        "-d",
        torrent.content_dir,
        torrent.torrent_path,
    ]
    start_process(
        argv,
        cwd=workdir,
        env=_private_env(home),
        ready=tcp_listening(HOST, port),
        ready_timeout=15,
        name="aria2c",
    )
    return Seeder("aria2", HOST, port)


# -- rtorrent --------------------------------------------------------------------------------------


def start_rtorrent(
    start_process: StartProcess,
    workdir: Path,
    torrent: SmallTorrent,
    *,
    encryption: str | None = None,
) -> Seeder:
    """rtorrent 0.9.8 in daemon mode (foreground process) seeding `torrent`; `encryption` is the
    argument of ``protocol.encryption.set`` (e.g. ``allow_incoming,try_outgoing,enable_retry``)."""
    from ._helpers import free_port, require_client, tcp_listening

    rtorrent = require_client("rtorrent")
    port = free_port(HOST)
    scgi = free_port(HOST)
    home = workdir / "rtorrent-home"
    env = _private_env(home)
    session = home / "session"
    session.mkdir()
    lines = [
        "system.daemon.set = true",
        f"network.bind_address.set = {HOST}",
        f"network.local_address.set = {HOST}",
        f"network.port_range.set = {port}-{port}",
        "network.port_random.set = no",
        "dht.mode.set = disable",
        "protocol.pex.set = no",
        "trackers.use_udp.set = no",
        f"network.scgi.open_port = {HOST}:{scgi}",
        f"session.path.set = {session}",
        f"directory.default.set = {torrent.content_dir}",
    ]
    if encryption is not None:
        lines.append(f"protocol.encryption.set = {encryption}")
    lines.append(f"load.start_verbose = {torrent.torrent_path}")
    (home / ".rtorrent.rc").write_text("\n".join(lines) + "\n")
    start_process(
        [rtorrent],  # reads $HOME/.rtorrent.rc
        cwd=workdir,
        env=env,
        ready=tcp_listening(HOST, port),
        ready_timeout=15,
        name="rtorrent",
    )
    return Seeder("rtorrent", HOST, port)


# -- qBittorrent -----------------------------------------------------------------------------------


class QBittorrent:
    """A running qbittorrent-nox driven over its Web API at ``base``."""

    def __init__(self, base: str) -> None:
        self.base = base
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def post(self, path: str, data: bytes, content_type: str) -> bytes:
        request = urllib.request.Request(
            f"{self.base}{path}", data=data, headers={"Content-Type": content_type}
        )
        with self._opener.open(request, timeout=5) as response:
            answer: bytes = response.read()
        return answer

    def get(self, path: str) -> bytes:
        with self._opener.open(f"{self.base}{path}", timeout=5) as response:
            answer: bytes = response.read()
        return answer

    def add_torrent(self, torrent: SmallTorrent, save_path: Path) -> None:
        boundary = uuid.uuid4().hex
        body = b"".join(
            [
                f"--{boundary}\r\n".encode(),
                b'Content-Disposition: form-data; name="torrents"; filename="payload.torrent"\r\n',
                b"Content-Type: application/x-bittorrent\r\n\r\n",
                torrent.torrent_path.read_bytes(),
                f"\r\n--{boundary}\r\n".encode(),
                b'Content-Disposition: form-data; name="savepath"\r\n\r\n',
                str(save_path).encode(),
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        answer = self.post("/torrents/add", body, f"multipart/form-data; boundary={boundary}")
        assert answer.strip() == b"Ok.", answer

    def has_torrent(self, info_hash_hex: str) -> bool:
        torrents = json.loads(self.get("/torrents/info"))
        return any(t.get("hash") == info_hash_hex for t in torrents)

    def add_peers(self, info_hash_hex: str, peers: list[str]) -> bytes:
        data = urllib.parse.urlencode({"hashes": info_hash_hex, "peers": "|".join(peers)})
        return self.post("/torrents/addPeers", data.encode(), "application/x-www-form-urlencoded")


def launch_qbittorrent(start_process: StartProcess, workdir: Path) -> tuple[QBittorrent, int]:
    """Start qbittorrent-nox 4.5.2 on loopback as INTEROP.md says; its Web API and peer port."""
    from ._helpers import free_port, require_client, tcp_listening

    qbt = require_client("qbittorrent-nox")
    port = free_port(HOST, tcp=True, udp=True)
    webui = free_port(HOST)
    home = workdir / "qbt-home"
    env = _private_env(home)
    profile = workdir / "qbt-profile"
    config = profile / "qBittorrent" / "config"
    config.mkdir(parents=True)
    (config / "qBittorrent.conf").write_text(
        "\n".join(
            [
                "[LegalNotice]",
                "Accepted=true",
                "",
                "[BitTorrent]",
                "Session\\DHTEnabled=false",
                "Session\\LSDEnabled=false",
                "Session\\PeXEnabled=false",
                f"Session\\Port={port}",
                "Session\\Interface=lo",
                "Session\\InterfaceName=lo",
                f"Session\\InterfaceAddress={HOST}",
                "Session\\AddTrackersEnabled=false",
                "",
                "[Network]",
                "PortForwardingEnabled=false",
                "",
                "[Preferences]",
                "Connection\\UPnP=false",
                "Connection\\ResolvePeerCountries=false",
                f"WebUI\\Address={HOST}",
                f"WebUI\\Port={webui}",
                "WebUI\\LocalHostAuth=false",
                "WebUI\\CSRFProtection=false",
                "WebUI\\HostHeaderValidation=false",
                "",
            ]
        )
    )
    start_process(
        [qbt, f"--profile={profile}"],
        cwd=workdir,
        env=env,
        ready=tcp_listening(HOST, webui),
        ready_timeout=20,
        name="qbittorrent",
    )
    return QBittorrent(f"http://{HOST}:{webui}/api/v2"), port


def start_qbittorrent(
    start_process: StartProcess,
    workdir: Path,
    torrent: SmallTorrent,
) -> Seeder:
    """qbittorrent-nox 4.5.2 with the torrent added (and checked) over its Web API."""
    from ._helpers import tcp_listening, wait_for

    client, port = launch_qbittorrent(start_process, workdir)
    client.add_torrent(torrent, torrent.content_dir)

    def seeding() -> bool:
        torrents = json.loads(client.get("/torrents/info"))
        return any(
            t.get("hash") == torrent.v1.hex()
            and t.get("progress") == 1
            and t.get("state") in ("uploading", "stalledUP", "forcedUP")
            for t in torrents
        )

    wait_for(seeding, 15, interval=0.2, what="qBittorrent seeding the torrent")
    wait_for(tcp_listening(HOST, port), 10, what="qBittorrent listening for peers")
    return Seeder("qBittorrent", HOST, port)


if __name__ == "__main__":
    sys.exit(_libtorrent_main())
