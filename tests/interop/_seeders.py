"""Start real clients seeding one small v1 torrent on loopback, for tests that dial them.

Each ``start_*`` function starts one seeder through the ``start_process`` fixture (so it is stopped
by PID at teardown) with LSD, UPnP, NAT-PMP and DHT off as ../shared/INTEROP.md says, and returns
a :class:`Seeder` once its port accepts connections (libtorrent: once the torrent is seeding). The
builders behind them (``run_lt_peer``, ``start_aria2_process``, ``start_rtorrent_process``,
``launch_qbittorrent``) also start the downloaders of _inbound.py and the tests.
"""

from __future__ import annotations

import json
import os
import random
import sys
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import trio

from bip_handshake import CompletedHandshake, Handshaker, PeerAddress
from bip_metainfo import InfoHash, create_torrent

from ._helpers import (
    StartProcess,
    Tracker,
    file_exists,
    free_port,
    require_client,
    start_opentracker,
    tcp_listening,
    wait_for,
)
from ._rtorrent_scgi import rtorrent_seeding

__all__ = [
    "ARIA2",
    "HOST",
    "LIBTORRENT",
    "QBITTORRENT",
    "RTORRENT",
    "Identity",
    "QBittorrent",
    "Seeder",
    "SmallTorrent",
    "aria2_loopback_options",
    "dial_until_complete",
    "launch_qbittorrent",
    "make_torrent",
    "make_tracked_torrent",
    "private_env",
    "run_lt_peer",
    "start_aria2",
    "start_aria2_process",
    "start_libtorrent",
    "start_libtorrent_hybrid",
    "start_qbittorrent",
    "start_qbittorrent_with_encryption",
    "start_rtorrent",
    "start_rtorrent_process",
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
class Identity:
    """How a client names itself in its peer id: ``PeerId.client``'s name and version, and the
    prefix its peer ids start with (the versions INTEROP.md lists)."""

    name: str
    version: str
    prefix: bytes


LIBTORRENT = Identity("libtorrent", "2.1.1", b"-LT2110-")
ARIA2 = Identity("aria2", "1.36.0", b"A2-1-36-")
RTORRENT = Identity("rTorrent (libtorrent)", "0.13.8", b"-lt0D80-")
QBITTORRENT = Identity("qBittorrent", "4.5.2", b"-qB4520-")


@dataclass(frozen=True)
class Seeder:
    """A client seeding a :class:`SmallTorrent` on ``(host, port)``."""

    name: str
    host: str
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


async def dial_until_complete(
    handshaker: Handshaker, torrent: SmallTorrent, seeder: Seeder, *, deadline: float
) -> CompletedHandshake:
    """Dial `seeder` with our `handshaker` and redial after each failure until a handshake
    completes, for at most `deadline` seconds: a seeder's port may accept before it serves the
    torrent (aria2, rtorrent and ctorrent check their data first)."""
    address = PeerAddress(IPv4Address(seeder.host), seeder.port)
    with trio.fail_after(deadline):
        while True:
            failures = handshaker.statistics().failures
            assert handshaker.connect(torrent.info_hash, address)
            while handshaker.statistics().failures == failures:
                try:
                    return handshaker.completed().receive_nowait()
                except trio.WouldBlock:
                    await trio.sleep(0.05)
            await trio.sleep(0.3)


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


def make_tracked_torrent(
    start_process: StartProcess, workdir: Path, *, http: bool = False
) -> tuple[SmallTorrent, Tracker]:
    """An opentracker that whitelists it, and a torrent (``workdir/torrent``) that names it: its
    UDP announce URL, or its HTTP one with `http`.

    The tracker must whitelist the info-hash before its port is known, and the announce URL is
    outside the info dictionary (BEP 3): so the same content is first made without a tracker
    (``workdir/probe``), whose info-hash is the one to whitelist.
    """
    require_client("opentracker")
    probe = make_torrent(workdir / "probe")
    tracker = start_opentracker(start_process, workdir / "opentracker", [probe.v1])
    url = tracker.http_url if http else tracker.udp_url
    torrent = make_torrent(workdir / "torrent", trackers=(url,))
    assert torrent.info_hash == probe.info_hash
    return torrent, tracker


def private_env(home: Path) -> dict[str, str]:
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

_LT_PEER = Path(__file__).with_name("_lt_peer.py")


def run_lt_peer(
    start_process: StartProcess,
    workdir: Path,
    torrent_path: Path,
    save_path: Path,
    *,
    wait: str = "checked",
    peer: tuple[str, int] | None = None,
    seed_mode: bool = False,
    enc_policy: str = "enabled",
    alert_tracker: bool = False,
    lifetime: float = 60.0,
    ready_timeout: float = 20.0,
    name: str = "libtorrent",
) -> dict[str, Any]:
    """Start _lt_peer.py (a libtorrent 2.1 session of `torrent_path` saving to `save_path`) on a
    free port and return its ready file once it says so: `wait`, `peer`, `seed_mode`,
    `enc_policy` and `lifetime` are the program's options (see its docstring); `alert_tracker`
    logs tracker alerts too."""
    require_client("libtorrent")
    port = free_port(HOST, tcp=True, udp=True)  # UDP too: its (disabled) uTP socket
    ready = workdir / f"{name}-ready.json"
    argv: list[str | os.PathLike[str]] = [sys.executable, _LT_PEER, "--port", str(port)]
    argv += ["--torrent", torrent_path, "--save-path", save_path, "--ready", ready]
    argv += ["--wait", wait, "--enc-policy", enc_policy, "--lifetime", str(lifetime)]
    if peer is not None:
        argv += ["--peer", f"{peer[0]}:{peer[1]}"]
    if seed_mode:
        argv.append("--seed-mode")
    if alert_tracker:
        argv.append("--alert-tracker")
    start_process(
        argv, cwd=workdir, ready=file_exists(ready), ready_timeout=ready_timeout, name=name
    )
    info: dict[str, Any] = json.loads(ready.read_text())
    assert info["port"] == port, info
    return info


def start_libtorrent(
    start_process: StartProcess,
    workdir: Path,
    torrent: SmallTorrent,
    *,
    enc_policy: str = "enabled",
) -> Seeder:
    """libtorrent 2.1 seeding `torrent` (seed mode: it trusts the data); `enc_policy` is its
    in/out_enc_policy (``enabled``: the default, accepts plaintext and MSE; ``forced``: pe_forced,
    MSE only)."""
    info = run_lt_peer(
        start_process,
        workdir,
        torrent.torrent_path,
        torrent.content_dir,
        wait="seeding",
        seed_mode=True,
        enc_policy=enc_policy,
    )
    return Seeder("libtorrent", HOST, int(info["port"]))


_LT_SEED = Path(__file__).with_name("_lt_seed.py")


def start_libtorrent_hybrid(start_process: StartProcess, workdir: Path) -> dict[str, Any]:
    """_lt_seed.py: libtorrent making a hybrid torrent of its own in `workdir` (created) and
    seeding it; returns its ready file (``info_hash``, ``info_hash_v2``, ``port``, ...)."""
    require_client("libtorrent")
    port = free_port(HOST, tcp=True, udp=True)  # TCP for peers, UDP for its (disabled) uTP socket
    workdir.mkdir(parents=True)
    start_process(
        [sys.executable, _LT_SEED, "--port", str(port), "--workdir", workdir],
        cwd=workdir,
        ready=file_exists(workdir / "ready.json"),
        ready_timeout=20,
        name="libtorrent",
    )
    info: dict[str, Any] = json.loads((workdir / "ready.json").read_text())
    assert info["port"] == port, info
    return info


# -- aria2 -----------------------------------------------------------------------------------------


def aria2_loopback_options(
    home: Path, *, port: int, dht_port: int, udp_trackers: bool = False
) -> list[str]:
    """aria2c options that keep it on 127.0.0.1 (INTEROP.md): no config file, listen and DHT
    ports, no IPv6, no LPD, no DHT6, its DHT file in the private `home`, no PEX, quiet output.

    aria2 announces to ``udp://`` trackers only when its DHT is on, so `udp_trackers` turns on
    ``--enable-dht``: with no dht.dat and no ``--dht-entry-point`` it has nobody to bootstrap
    from, so it stays on loopback all the same.
    """
    return [
        "--no-conf=true",
        f"--listen-port={port}",
        f"--dht-listen-port={dht_port}",
        f"--interface={HOST}",
        "--disable-ipv6=true",
        "--bt-enable-lpd=false",
        f"--enable-dht={'true' if udp_trackers else 'false'}",
        "--enable-dht6=false",
        f"--dht-file-path={home / 'dht.dat'}",
        "--enable-peer-exchange=false",
        "--summary-interval=0",
        "--console-log-level=notice",
    ]


def start_aria2_process(
    start_process: StartProcess,
    workdir: Path,
    torrent: SmallTorrent,
    *,
    download_to: Path | None = None,
    udp_trackers: bool = False,
    require_crypto: bool = False,
    min_crypto_level: str | None = None,
    name: str = "aria2c",
) -> int:
    """aria2c with `torrent`; its listen port once it accepts connections.

    With `download_to` None it checks the data in the torrent's content directory and seeds until
    stopped; otherwise it downloads into `download_to` (created) and stops once done.
    `udp_trackers`: see :func:`aria2_loopback_options`; `require_crypto` is
    ``--bt-require-crypto``; `min_crypto_level` (``plain`` or ``arc4``), when given,
    ``--bt-min-crypto-level``.
    """
    aria2c = require_client("aria2c")
    port = free_port(HOST)
    dht_port = free_port(HOST, tcp=False, udp=True)
    home = workdir / "aria2-home"
    argv: list[str | os.PathLike[str]] = [aria2c]
    argv += aria2_loopback_options(home, port=port, dht_port=dht_port, udp_trackers=udp_trackers)
    argv.append(f"--bt-require-crypto={'true' if require_crypto else 'false'}")
    if min_crypto_level is not None:
        argv.append(f"--bt-min-crypto-level={min_crypto_level}")
    if download_to is None:
        argv += ["--seed-ratio=0.0", "-V", "--check-integrity=true", "-d", torrent.content_dir]
    else:
        download_to.mkdir()
        argv += ["--seed-time=0", "-d", download_to]
    argv.append(torrent.torrent_path)
    start_process(
        argv,
        cwd=workdir,
        env=private_env(home),
        ready=tcp_listening(HOST, port),
        ready_timeout=15,
        name=name,
    )
    return port


def start_aria2(
    start_process: StartProcess,
    workdir: Path,
    torrent: SmallTorrent,
    *,
    require_crypto: bool = False,
    min_crypto_level: str | None = None,
) -> Seeder:
    """aria2c checking and seeding `torrent`; `require_crypto` is ``--bt-require-crypto``,
    `min_crypto_level` ``--bt-min-crypto-level`` (see :func:`start_aria2_process`)."""
    port = start_aria2_process(
        start_process,
        workdir,
        torrent,
        require_crypto=require_crypto,
        min_crypto_level=min_crypto_level,
    )
    return Seeder("aria2", HOST, port)


# -- rtorrent --------------------------------------------------------------------------------------


def start_rtorrent_process(
    start_process: StartProcess,
    workdir: Path,
    torrent: SmallTorrent,
    *,
    download_to: Path | None = None,
    encryption: str | None = None,
    debug_log: Path | None = None,
    name: str = "rtorrent",
) -> int:
    """rtorrent 0.9.8 in daemon mode (a foreground process) with `torrent`; its listen port once
    it accepts connections.

    With `download_to` None it seeds from the torrent's content directory, otherwise it
    downloads into `download_to` (created). `encryption` is the argument of
    ``protocol.encryption.set`` (e.g. ``allow_incoming,try_outgoing,enable_retry``); `debug_log`,
    a file for its debug log. The rc file keeps it on 127.0.0.1 with no DHT, PEX or UDP trackers.
    """
    rtorrent = require_client("rtorrent")
    port = free_port(HOST)
    scgi = free_port(HOST)
    home = workdir / f"{name}-home"
    env = private_env(home)
    session = home / "session"
    session.mkdir()
    if download_to is not None:
        download_to.mkdir()
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
        f"directory.default.set = {torrent.content_dir if download_to is None else download_to}",
    ]
    if encryption is not None:
        lines.append(f"protocol.encryption.set = {encryption}")
    if debug_log is not None:
        lines += [f"log.open_file = rtlog, {debug_log}", "log.add_output = debug, rtlog"]
    lines.append(f"load.start_verbose = {torrent.torrent_path}")
    (home / ".rtorrent.rc").write_text("\n".join(lines) + "\n")
    start_process(
        [rtorrent],  # reads $HOME/.rtorrent.rc
        cwd=workdir,
        env=env,
        ready=tcp_listening(HOST, port),
        ready_timeout=15,
        name=name,
    )
    if download_to is None:
        # Listening is not seeding: until its hash check is over, rtorrent drops a peer
        # asking for the torrent (an MSE handshake then fails and a dialler falls back).
        info_hash = torrent.v1.hex()
        wait_for(lambda: rtorrent_seeding(HOST, scgi, info_hash), 15, what="rtorrent seeding")
    return port


def start_rtorrent(
    start_process: StartProcess,
    workdir: Path,
    torrent: SmallTorrent,
    *,
    encryption: str | None = None,
) -> Seeder:
    """rtorrent 0.9.8 seeding `torrent`; `encryption` as in :func:`start_rtorrent_process`."""
    port = start_rtorrent_process(start_process, workdir, torrent, encryption=encryption)
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


def launch_qbittorrent(
    start_process: StartProcess, workdir: Path, *, encryption: int | None = None
) -> tuple[QBittorrent, int]:
    """Start qbittorrent-nox 4.5.2 on loopback as INTEROP.md says; its Web API and peer port.

    `encryption`, when given, is its ``Session\\Encryption`` mode: 0 allows MSE and plaintext
    (its default), 1 requires MSE, 2 disables it (libtorrent's pe_enabled, pe_forced and
    pe_disabled, incoming and outgoing).
    """
    qbt = require_client("qbittorrent-nox")
    port = free_port(HOST, tcp=True, udp=True)
    webui = free_port(HOST)
    home = workdir / "qbt-home"
    env = private_env(home)
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
                *([] if encryption is None else [f"Session\\Encryption={encryption}"]),
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
    return start_qbittorrent_with_encryption(start_process, workdir, torrent, encryption=None)


def start_qbittorrent_with_encryption(
    start_process: StartProcess,
    workdir: Path,
    torrent: SmallTorrent,
    *,
    encryption: int | None,
) -> Seeder:
    """:func:`start_qbittorrent` in the ``Session\\Encryption`` mode `encryption` (see
    :func:`launch_qbittorrent`; ``None``: its default)."""
    client, port = launch_qbittorrent(start_process, workdir, encryption=encryption)
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
