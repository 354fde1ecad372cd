"""``bip verify``: which pieces and files are good, and that it writes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from _cli_helpers import assert_one_line_error

from bip._cli import main
from bip_metainfo import create_torrent

PIECE = 16384


def _setup(tmp_path: Path, version: str = "hybrid") -> tuple[Path, Path]:
    """``(torrent, DIR)``: album/{a.bin (5 pieces), b.bin (2 pieces), empty} under DIR."""
    data = tmp_path / "data"
    folder = data / "album"
    folder.mkdir(parents=True)
    (folder / "a.bin").write_bytes(os.urandom(5 * PIECE - 100))
    (folder / "b.bin").write_bytes(os.urandom(PIECE + 10))
    (folder / "empty").write_bytes(b"")
    torrent = create_torrent(folder, version=version, piece_length=PIECE)  # type: ignore[arg-type]
    path = tmp_path / "album.torrent"
    path.write_bytes(torrent.to_bytes())
    return path, data


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
def test_complete(tmp_path: Path, capsys: pytest.CaptureFixture[str], version: str) -> None:
    torrent, data = _setup(tmp_path, version)
    before = _snapshot(data)
    assert main(["verify", str(torrent), str(data)]) == 0
    out, err = capsys.readouterr()
    assert "album/a.bin  complete" in out
    assert "album/empty  complete" in out
    assert out.rstrip().endswith("pieces good (100%): every file is complete")
    assert "checking album" in err
    assert _snapshot(data) == before


def test_corrupt_and_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torrent, data = _setup(tmp_path, "hybrid")
    with (data / "album" / "a.bin").open("r+b") as file:
        file.seek(2 * PIECE + 5)
        file.write(b"XX")
    (data / "album" / "b.bin").unlink()
    before = _snapshot(data)
    assert main(["verify", str(torrent), str(data), "-q"]) == 1
    out = capsys.readouterr().out
    assert "album/a.bin  incomplete  4/5 pieces good" in out
    assert "album/b.bin  missing" in out
    assert "4/7 pieces good (57.1%)" in out
    assert "missing or bad pieces: 2, 5-6" in out
    assert "1 of 3 files missing" in out
    assert _snapshot(data) == before  # no file created, resized or touched


def test_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torrent, data = _setup(tmp_path, "v2")
    with (data / "album" / "b.bin").open("r+b") as file:
        file.truncate(100)
    assert main(["verify", str(torrent), str(data), "--json"]) == 1
    out, err = capsys.readouterr()
    assert err == ""  # no progress bar with --json
    report = json.loads(out)
    assert report["complete"] is False
    assert report["num_pieces"] == 7
    assert report["pieces_good"] == 5
    assert report["bad_pieces"] == [[5, 6]]
    files = {f["path"]: f for f in report["files"]}
    assert files["album/b.bin"]["status"] == "incomplete"
    assert files["album/b.bin"]["size_on_disk"] == 100
    assert files["album/b.bin"]["pieces_total"] == 2
    assert files["album/a.bin"]["status"] == "complete"
    assert report["info_hash"]["v1"] is None


def test_wrong_directory_hints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torrent, data = _setup(tmp_path)
    assert main(["verify", str(torrent), str(data / "album"), "-q"]) == 1
    out = capsys.readouterr().out
    assert "3 of 3 files missing" in out
    assert f"(try {str(data)!r})" in out
    assert not (data / "album" / "album").exists()


def test_default_directory_is_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    torrent, data = _setup(tmp_path)
    monkeypatch.chdir(data)
    assert main(["verify", str(torrent), "-q"]) == 0


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("torrent", "No such file or directory"),
        ("dir", "no such directory"),
        ("file-as-dir", "not a directory"),
    ],
)
def test_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str, message: str
) -> None:
    torrent, data = _setup(tmp_path)
    argv = {
        "torrent": [str(tmp_path / "nope.torrent"), str(data)],
        "dir": [str(torrent), str(tmp_path / "nowhere")],
        "file-as-dir": [str(torrent), str(torrent)],
    }[which]
    assert_one_line_error(["verify", *argv], message, capsys)


def test_links_and_single_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "data" / "tree"
    folder.mkdir(parents=True)
    (folder / "real.bin").write_bytes(os.urandom(40_000))
    (folder / "link").symlink_to("real.bin")
    torrent = create_torrent(folder, piece_length=PIECE)  # links stored as BEP 47 links
    path = tmp_path / "tree.torrent"
    path.write_bytes(torrent.to_bytes())
    assert main(["verify", str(path), str(tmp_path / "data"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "tree/link      link" in out
    assert "tree/real.bin  complete" in out

    single = create_torrent(folder / "real.bin", version="v2", piece_length=PIECE)
    path.write_bytes(single.to_bytes())
    assert main(["verify", str(path), str(folder), "-q"]) == 0
    assert "real.bin  complete" in capsys.readouterr().out


def test_a_short_file_shows_sizes_that_differ(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A few bytes short would round to the same KiB: then the sizes are exact bytes."""
    torrent, data = _setup(tmp_path, "v1")
    path = data / "album" / "a.bin"
    length = path.stat().st_size
    with path.open("r+b") as file:
        file.truncate(length - 13)
    assert main(["verify", str(torrent), str(data), "-q"]) == 1
    assert f"{length - 13:,} of {length:,} bytes" in capsys.readouterr().out
