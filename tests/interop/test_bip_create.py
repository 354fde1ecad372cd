"""``bip create``, ``bip show`` and ``bip verify`` against libtorrent 2.1 and mktorrent.

- libtorrent loads what ``bip create`` writes (v1, v2, hybrid) and agrees on the info-hashes,
  the name, the pieces, the sizes, the trackers, the web seeds, the private flag and the
  comment; then a libtorrent session given the data (no seed mode: it hashes the files itself)
  finds every piece and seeds.
- ``bip show`` and ``bip verify`` read torrents libtorrent made: the same info-hashes, every
  piece good, and after one byte changes exactly the file holding it incomplete.
- mktorrent and ``bip create --v1`` give the same v1 info-hash for the same files and piece
  size, and ``bip verify`` finds mktorrent's torrent complete.

libtorrent runs in a process of its own on loopback (LSD, UPnP, NAT-PMP and DHT off), stopped by
PID at teardown.
"""

from __future__ import annotations

import importlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bip._cli import main
from bip_metainfo import Metainfo

from ._helpers import StartProcess, require_client
from ._seeders import run_lt_peer

pytestmark = pytest.mark.interop

KIB = 1024
FILES = {
    "a/x.bin": 70_000,
    "a/empty": 0,
    "b c/d.txt": 5,
    "ünï/f 1.bin": 40_000,
    "z.bin": 3 * 64 * KIB + 17,
}
VERSIONS = ("v1", "v2", "hybrid")


@pytest.fixture
def lt() -> Any:
    """The libtorrent module (missing: skipped here, failed in CI)."""
    require_client("libtorrent")
    return importlib.import_module("libtorrent")


def _tree(root: Path, name: str = "payload") -> Path:
    folder = root / name
    for index, (relative, size) in enumerate(FILES.items()):
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes((index * 31 + i) % 251 for i in range(size)))
    return folder


def _lt_hashes(ti: Any) -> tuple[bytes | None, bytes | None]:
    hashes = ti.info_hashes()
    v1 = hashes.v1.to_bytes() if hashes.has_v1() else None
    v2 = hashes.v2.to_bytes() if hashes.has_v2() else None
    return v1, v2


def _show_json(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["show", str(path), "--json"]) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


@pytest.mark.parametrize("version", VERSIONS)
def test_libtorrent_loads_and_checks_what_bip_creates(
    lt: Any, tmp_path: Path, start_process: StartProcess, version: str
) -> None:
    folder = _tree(tmp_path / "data")
    out = tmp_path / "ours.torrent"
    argv = ["create", str(folder), "-o", str(out), f"--{version}", "--piece-size", "32k", "-q"]
    argv += ["-t", "udp://127.0.0.1:9/announce", "-w", "http://127.0.0.1:9/seed/"]
    argv += ["--comment", "made by bip", "--private", "--source", "SRC"]
    assert main(argv) == 0
    ours = Metainfo.from_file(out)

    ti = lt.torrent_info(str(out))
    assert _lt_hashes(ti) == (ours.info.info_hash.v1, ours.info.info_hash.v2)
    assert ti.name() == "payload"
    assert ti.num_pieces() == ours.info.num_pieces
    assert ti.piece_length() == 32 * KIB
    # libtorrent counts pad files in total_size(); ours counts real data only.
    assert ti.total_size() == ours.info.geometry.total_size
    layout = ti.layout()
    real = [i for i in range(layout.num_files()) if not layout.file_flags(i) & layout.flag_pad_file]
    assert sorted(layout.file_path(i) for i in real) == sorted(
        str(Path("payload", relative)) for relative in FILES
    )
    params = lt.load_torrent_file(str(out))
    assert list(params.trackers) == ["udp://127.0.0.1:9/announce"]
    assert list(params.url_seeds) == ["http://127.0.0.1:9/seed/"]
    assert ti.priv()
    assert ti.comment() == "made by bip"

    # No seed mode: libtorrent hashes our files against our torrent and seeds.
    peer = run_lt_peer(start_process, tmp_path, out, folder.parent, ready_timeout=30)
    assert peer["have"] == ours.info.num_pieces, peer
    assert peer["is_seeding"], peer


def _lt_create(lt: Any, folder: Path, version: str) -> bytes:
    flags = {"v1": lt.create_torrent.v1_only, "v2": lt.create_torrent.v2_only, "hybrid": 0}
    entries = lt.list_files(str(folder), lambda _: True, 0)
    creator = lt.create_torrent(entries, 16 * KIB, flags[version])
    lt.set_piece_hashes(creator, str(folder.parent))
    return bytes(lt.bencode(creator.generate()))


@pytest.mark.parametrize("version", VERSIONS)
def test_bip_reads_and_verifies_what_libtorrent_creates(
    lt: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], version: str
) -> None:
    folder = _tree(tmp_path / "data")
    path = tmp_path / "theirs.torrent"
    path.write_bytes(_lt_create(lt, folder, version))
    v1, v2 = _lt_hashes(lt.torrent_info(str(path)))

    shown = _show_json(path, capsys)
    assert shown["info_hash"] == {
        "v1": None if v1 is None else v1.hex(),
        "v2": None if v2 is None else v2.hex(),
    }
    assert shown["version"] == version
    assert shown["num_files"] == len(FILES)

    assert main(["verify", str(path), str(folder.parent), "-q"]) == 0
    with (folder / "ünï" / "f 1.bin").open("r+b") as file:
        file.seek(20_000)
        file.write(b"\xff")
    capsys.readouterr()
    assert main(["verify", str(path), str(folder.parent), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    bad = [f["path"] for f in report["files"] if f["status"] != "complete"]
    assert bad == ["payload/ünï/f 1.bin"]


def test_same_v1_info_hash_as_mktorrent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mktorrent = require_client("mktorrent")
    folder = _tree(tmp_path / "data")
    theirs = tmp_path / "mk.torrent"
    subprocess.run(
        [mktorrent, "-l", "15", "-o", str(theirs), str(folder)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    ours = tmp_path / "ours.torrent"
    argv = ["create", str(folder), "-o", str(ours), "--v1", "--piece-size", "32k", "-q"]
    assert main(argv) == 0
    assert _show_json(ours, capsys)["info_hash"] == _show_json(theirs, capsys)["info_hash"]
    assert main(["verify", str(theirs), str(folder.parent), "-q"]) == 0
