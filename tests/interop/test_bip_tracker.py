"""``bip tracker`` against real software: opentracker answers our announce and scrape, and
libtorrent 2.1 announces to ``bip tracker serve``.

opentracker (Debian's, whitelist mode) and libtorrent run on loopback only and are stopped by PID
at teardown; ``bip tracker serve`` runs as a process of its own too (``python -m bip``), stopped
with SIGTERM, which it takes as a clean stop.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bip._cli import main
from bip_metainfo import create_torrent

from ._helpers import StartProcess, free_port, require_client, start_opentracker, udp_request
from ._seeders import HOST, run_lt_peer

pytestmark = pytest.mark.interop

LISTED = bytes.fromhex("ab" * 20)
UNLISTED = "cd" * 20


def _bip_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main([*argv, "--bind", HOST, "--json"]) == 0, capsys.readouterr().err
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def test_announce_and_scrape_opentracker(
    tmp_path: Path, start_process: StartProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    tracker = start_opentracker(start_process, tmp_path / "opentracker", [LISTED])
    url = tracker.udp_url
    announce = ["tracker", "announce", url, LISTED.hex()]
    first = _bip_json([*announce, "--port", "7001"], capsys)
    assert (first["seeders"], first["leechers"]) == (1, 0)  # opentracker lists us to ourselves
    second = _bip_json([*announce, "--port", "7002", "--left", "1000"], capsys)
    assert "127.0.0.1:7001" in second["peers"]
    assert (second["seeders"], second["leechers"]) == (1, 1)
    scraped = _bip_json(["tracker", "scrape", url, LISTED.hex()], capsys)
    assert scraped["swarms"][0]["seeders"] == 1
    assert scraped["swarms"][0]["leechers"] == 1

    # opentracker refuses a torrent missing from its whitelist with an empty reply.
    assert main(["tracker", "announce", url, UNLISTED, "--bind", HOST, "--timeout", "5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bip: error: tracker: ")
    assert err.count("\n") == 1


def _tracker_answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        try:
            reply = udp_request(
                sock, struct.pack(">QII", 0x41727101980, 0, 7), (HOST, port), timeout=0.2
            )
        except TimeoutError:
            return False
    return reply[:8] == struct.pack(">II", 0, 7)


def test_libtorrent_announces_to_bip_tracker_serve(
    tmp_path: Path, start_process: StartProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    require_client("libtorrent")
    port = free_port(HOST, tcp=False, udp=True)
    url = f"udp://{HOST}:{port}/announce"
    start_process(
        [sys.executable, "-m", "bip", "tracker", "serve", "--bind", f"{HOST}:{port}"],
        ready=lambda: _tracker_answers(port),
        name="bip-tracker",
    )
    content = tmp_path / "content"
    content.mkdir()
    (content / "file.bin").write_bytes(bytes(range(256)) * 400)
    torrent = create_torrent(content / "file.bin", trackers=[url])
    path = tmp_path / "file.torrent"
    path.write_bytes(torrent.to_bytes())
    info_hash = torrent.info.info_hash.v1
    assert info_hash is not None

    seeder = run_lt_peer(
        start_process, tmp_path, path, content, wait="seeding", seed_mode=True, alert_tracker=True
    )
    lt_peer = f"{HOST}:{seeder['port']}"

    # libtorrent announces once it starts; ask until the swarm shows it (bounded).
    for _ in range(100):
        answer = _bip_json(["tracker", "announce", url, str(path), "--port", "7003"], capsys)
        if lt_peer in answer["peers"]:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"libtorrent at {lt_peer} never showed up in {url}")
    assert answer["seeders"] == 1
    scraped = _bip_json(["tracker", "scrape", url, info_hash.hex()], capsys)
    assert scraped["swarms"][0]["seeders"] == 1
    assert scraped["swarms"][0]["leechers"] == 1  # us
