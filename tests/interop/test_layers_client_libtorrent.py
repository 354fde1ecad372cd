"""v2-only magnet links between ``bip`` and libtorrent: the BEP 52 piece layers both ways.

(a) ``bip download`` of a v2-only magnet (``xt=urn:btmh:1220...``) whose only peer is a
libtorrent seeder: the metadata (BEP 9), then the piece layers (BEP 52 hash requests), then
the files, every piece checked against its v2 hashes. Both directions of the connection are
tried: bip dialling libtorrent (``x.pe``) and libtorrent dialling bip (``connect_peer``).

(b) libtorrent downloading a v2-only magnet from ``bip seed``: it asks bip for the metadata and
then for the hashes of every file larger than a piece, which bip must answer.

This file is also the libtorrent program of (b): ``python test_layers_client_libtorrent.py
--port P --magnet M --save-path D --ready R --result R2`` adds the magnet (its ``x.pe`` names
bip), writes R once it listens and R2 once every piece is verified, and logs its alerts, the
BEP 52 ones (``HASH_REQUEST``, ``HASHES``, ``HASH_REJECT`` from the peer log) included.
Settings: _lt_common.loopback_settings (../shared/INTEROP.md); it exits after ``--lifetime``.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

# Run as a script this file has no package: see _lt_common.
if TYPE_CHECKING or __package__:
    from ._lt_common import HOST, loopback_settings, write_json
else:
    from _lt_common import HOST, loopback_settings, write_json

if TYPE_CHECKING:
    from ._helpers import StartProcess

SIZES = (3_000_000, 1_234_567, 0, 70_000, 17)  # three files over a piece: three layers
PIECE_LENGTH = 64 * 1024
DEADLINE = 60.0
# The peer log's BEP 52 lines, kept in the program's log: the evidence of who asked what.
_HASH_WORDS = ("HASH_REQUEST", "HASHES", "HASH_REJECT")


def write_files(folder: Path) -> None:
    rng = random.Random(52)
    for index, size in enumerate(SIZES):
        path = folder / ("inner" if index % 2 else "") / f"part{index}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and ".bip" not in path.relative_to(root).parts
    }


def v2_torrent(tmp_path: Path) -> tuple[Path, Path, str]:
    """Files under ``tmp_path/seed/payload`` and their v2-only .torrent (made by bip_metainfo):
    returns the .torrent's path, the folder and the v2 hash (hex)."""
    from bip_metainfo import create_torrent

    folder = tmp_path / "seed" / "payload"
    write_files(folder)
    torrent = create_torrent(
        folder, version="v2", piece_length=PIECE_LENGTH, creation_date=None, created_by=None
    )
    assert len(torrent.piece_layers) == 3
    path = tmp_path / "payload.torrent"
    path.write_bytes(torrent.to_bytes())
    v2 = torrent.info.info_hash.v2
    assert v2 is not None
    return path, folder, v2.hex()


def v2_magnet(v2_hex: str, peer: tuple[str, int] | None = None) -> str:
    from bip_metainfo import InfoHash, MagnetLink

    peers = [peer] if peer is not None else []
    return str(MagnetLink.from_info_hash(InfoHash(v2=bytes.fromhex(v2_hex)), peers=peers))


if TYPE_CHECKING or __package__:
    import pytest
    import trio

    from ._helpers import file_exists, free_port, require_client, tcp_listening
    from ._seeders import run_lt_peer

    pytestmark = pytest.mark.interop

    @pytest.mark.parametrize("dialer", ["bip", "libtorrent"])
    def test_bip_downloads_v2_magnet_from_libtorrent(
        dialer: Literal["bip", "libtorrent"], start_process: StartProcess, tmp_path: Path
    ) -> None:
        torrent_path, folder, v2_hex = v2_torrent(tmp_path)
        down = tmp_path / "down"
        port = free_port(HOST)
        argv = [sys.executable, "-m", "bip", "download", "--dir", str(down)]
        argv += ["--bind", HOST, "--port", str(port), "--no-trackers", "--no-dht", "-q"]
        if dialer == "bip":
            seeder = run_lt_peer(
                start_process,
                tmp_path,
                torrent_path,
                folder.parent,
                wait="seeding",
                seed_mode=True,
                lifetime=DEADLINE + 30,
            )
            magnet = v2_magnet(v2_hex, (HOST, int(seeder["port"])))
            result = subprocess.run(
                [*argv, magnet], capture_output=True, text=True, timeout=DEADLINE, check=False
            )
            assert result.returncode == 0, result.stderr
        else:
            bip = start_process(
                [*argv, v2_magnet(v2_hex)],
                ready=tcp_listening(HOST, port),
                ready_timeout=20,
                name="bip-download",
            )
            run_lt_peer(
                start_process,
                tmp_path,
                torrent_path,
                folder.parent,
                wait="seeding",
                seed_mode=True,
                peer=(HOST, port),
                lifetime=DEADLINE + 30,
            )
            assert bip.wait(DEADLINE) == 0, bip.logs()
        assert tree(down / "payload") == tree(folder)
        # The layers came with the metadata into the saved .torrent: a restart needs no peer.
        saved = down / ".bip" / f"{v2_hex}.torrent"
        assert b"12:piece layers" in saved.read_bytes()

    async def test_libtorrent_downloads_v2_magnet_from_bip_seed(
        start_process: StartProcess, tmp_path: Path
    ) -> None:
        require_client("libtorrent")
        torrent_path, folder, v2_hex = v2_torrent(tmp_path)
        port = free_port(HOST)
        argv = [sys.executable, "-m", "bip", "seed", str(torrent_path), str(folder.parent)]
        argv += ["--bind", HOST, "--port", str(port), "--no-trackers", "--no-dht", "-q"]
        start_process(argv, ready=tcp_listening(HOST, port), ready_timeout=20, name="bip-seed")

        lt_port = free_port(HOST, tcp=True, udp=True)  # UDP too: its (disabled) uTP socket
        save = tmp_path / "lt-download"
        save.mkdir()
        ready, result = tmp_path / "lt-ready.json", tmp_path / "lt-result.json"
        program: list[str | Path] = [sys.executable, Path(__file__), "--port", str(lt_port)]
        program += ["--magnet", v2_magnet(v2_hex, (HOST, port)), "--save-path", save]
        program += ["--ready", ready, "--result", result, "--lifetime", str(DEADLINE + 30)]
        libtorrent = start_process(
            program, ready=file_exists(ready), ready_timeout=20, name="libtorrent-magnet"
        )
        with trio.fail_after(DEADLINE):
            while not result.exists():
                assert libtorrent.alive(), libtorrent.logs()
                await trio.sleep(0.25)
        status = json.loads(result.read_text())
        assert status["have"] == status["num_pieces"] > 0, (status, libtorrent.logs())
        assert tree(save / "payload") == tree(folder)
        # It asked us for hashes, and we answered each request with hashes (none rejected).
        log = libtorrent.stdout_path.read_text()
        # (libtorrent's peer log marks what it sends "==>" and what it receives "<==".)
        lines = log.splitlines()
        assert any("==>" in line and "HASH_REQUEST" in line for line in lines), libtorrent.logs()
        assert any("<==" in line and "HASHES" in line for line in lines), libtorrent.logs()
        assert not any("HASH_REJECT" in line for line in lines), libtorrent.logs()


def _main() -> int:
    """The libtorrent side of (b): download a magnet link completely, then wait."""
    import libtorrent as lt

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--magnet", required=True)
    parser.add_argument("--save-path", type=Path, required=True)
    parser.add_argument("--ready", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.lifetime

    mask = (
        lt.alert_category.error
        | lt.alert_category.status
        | lt.alert_category.peer
        | lt.alert_category.peer_log
    )
    ses = lt.session(loopback_settings(args.port, alert_mask=mask))
    params = lt.parse_magnet_uri(args.magnet)
    params.save_path = str(args.save_path)
    handle = ses.add_torrent(params)
    ready = done = False
    while time.monotonic() < deadline:
        for alert in ses.pop_alerts():
            message = alert.message()
            # The peer log says every block too: keep its BEP 52 lines and its errors only.
            if not isinstance(alert, lt.peer_log_alert) or any(
                word in message for word in (*_HASH_WORDS, "ERROR", "DISCONNECT")
            ):
                print(f"{type(alert).__name__}: {message}", flush=True)
        if not ready and ses.is_listening():
            write_json(args.ready, {"port": ses.listen_port()})
            ready = True
        status = handle.status()
        if not done and status.has_metadata and status.is_seeding:
            handle.flush_cache()
            ti = handle.torrent_file()
            num_pieces = ti.num_pieces() if ti is not None else 0
            write_json(
                args.result,
                {"have": sum(1 for bit in status.pieces if bit), "num_pieces": num_pieces},
            )
            print("complete", flush=True)
            done = True
        ses.wait_for_alert(100)
    print("lifetime over, exiting", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
