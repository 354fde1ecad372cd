"""``bip show``: torrents, magnet links and info-hashes, as text and JSON."""

from __future__ import annotations

import io
import json
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from _cli_helpers import assert_one_line_error
from hypothesis import given, settings
from hypothesis import strategies as st

from bip._cli import main
from bip._describe import files_tree, safe_text
from bip_bencode import encode
from bip_metainfo import Metainfo, create_torrent

_VALID = encode(
    {
        b"announce": b"udp://127.0.0.1:6969",
        b"info": {
            b"name": b"x",
            b"piece length": 16384,
            b"files": [{b"length": 5, b"path": [b"a"]}, {b"length": 7, b"path": [b"b", b"c"]}],
            b"pieces": bytes(20),
        },
    }
)


def _torrent(tmp_path: Path, **options: Any) -> tuple[Path, Metainfo]:
    folder = tmp_path / "album"
    (folder / "cd1").mkdir(parents=True)
    (folder / "cd1" / "01.flac").write_bytes(b"\x01" * 70_000)
    (folder / "cd1" / "run.sh").write_bytes(b"#!/bin/sh\n")
    (folder / "cd1" / "run.sh").chmod(0o755)
    (folder / "cover.jpg").write_bytes(b"\x02" * 20_000)
    torrent = create_torrent(folder, creation_date=1_700_000_000, **options)
    path = tmp_path / "album.torrent"
    path.write_bytes(torrent.to_bytes())
    return path, torrent


def _show(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["show", *argv]) == 0
    return capsys.readouterr().out


def test_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, torrent = _torrent(
        tmp_path,
        trackers=[
            "udp://127.0.0.1:6969/announce",
            ["http://127.0.0.1:1/a", "http://127.0.0.1:2/a"],
        ],
        web_seeds=["http://127.0.0.1:8080/"],
        comment="line one\nline two \x1b[31mred",
        source="SRC",
        private=True,
    )
    out = _show([str(path)], capsys)
    hashes = torrent.info.info_hash
    assert hashes.v1 is not None
    assert hashes.v2 is not None
    assert f"info-hash v1: {hashes.v1.hex()}" in out
    assert f"info-hash v2: {hashes.v2.hex()}" in out
    assert "version:      hybrid" in out
    assert "(90,010 bytes) in 3 files" in out
    assert "private:      yes" in out
    assert "source:       SRC" in out
    assert "created on:   2023-11-14 22:13:20 UTC" in out
    # Control characters from the file are escaped: no fake lines, no terminal escapes.
    assert "comment:      line one\\nline two \\x1b[31mred" in out
    assert "\x1b" not in out
    assert "  tier 1: udp://127.0.0.1:6969/announce" in out
    assert "  tier 2: http://127.0.0.1:2/a" in out
    assert "web seeds:\n  http://127.0.0.1:8080/" in out
    assert f"magnet:       {torrent.magnet()}" in out
    tree = out[out.index("files (3; by index") :].splitlines()[1:]
    assert tree[0].strip() == "album/"
    assert tree[1].strip() == "cd1/"
    # Indices count the pad files, as BEP 53 and 'bip download --files' do.
    assert tree[2].split() == ["0", "01.flac", "68.4", "KiB"]
    assert tree[3].split() == ["2", "run.sh", "10", "B", "[x]"]
    assert tree[4].split() == ["4", "cover.jpg", "19.5", "KiB"]
    assert ".pad" not in out


def test_pad_files_on_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = _torrent(tmp_path)
    out = _show([str(path), "--pad"], capsys)
    assert ".pad/" in out
    assert "[p]" in out


def test_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, torrent = _torrent(tmp_path, version="v2", trackers=["udp://127.0.0.1:6969"])
    data = json.loads(_show([str(path), "--json"], capsys))
    info = torrent.info
    assert info.info_hash.v2 is not None
    assert data["type"] == "torrent"
    assert data["version"] == "v2"
    assert data["info_hash"] == {"v1": None, "v2": info.info_hash.v2.hex()}
    assert data["total_size"] == info.total_size
    assert data["piece_length"] == info.piece_length
    assert data["num_pieces"] == info.num_pieces
    assert data["num_files"] == 3
    assert data["trackers"] == [["udp://127.0.0.1:6969"]]
    assert data["creation_date"] == 1_700_000_000
    assert data["piece_layers"] == len(torrent.piece_layers)
    files = data["files"]
    assert [f["path"] for f in files] == [f.path_str() for f in info.files]
    first = files[0]
    assert first["pieces_root"] == info.files[0].pieces_root.hex()  # type: ignore[union-attr]
    assert (first["first_piece"], first["last_piece"]) == (0, 4)
    assert data["magnet"] == str(torrent.magnet())


def test_single_file_v1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = encode(
        {
            b"announce": b"udp://127.0.0.1:6969",
            b"created by": b"someone",
            b"info": {
                b"name": b"x.bin",
                b"piece length": 16384,
                b"length": 5,
                b"pieces": bytes(20),
            },
        }
    )
    path = tmp_path / "x.torrent"
    path.write_bytes(raw)
    out = _show([str(path)], capsys)
    assert "version:      v1" in out
    assert "created by:   someone" in out
    assert "created on" not in out
    assert out.endswith("takes them):\n  0  x.bin  5 B\n")


def test_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, torrent = _torrent(tmp_path)
    fake = io.TextIOWrapper(io.BytesIO(path.read_bytes()))
    monkeypatch.setattr(sys, "stdin", fake)
    assert f'"name": "{torrent.info.name}"' in _show(["-", "--json"], capsys)


def test_magnet(capsys: pytest.CaptureFixture[str]) -> None:
    link = (
        "magnet:?xt=urn:btih:" + "ab" * 20 + "&dn=my+file&xl=12345&tr=udp%3A%2F%2F127.0.0.1%3A6969"
        "&x.pe=127.0.0.1:6881&so=0,2-4"
    )
    out = _show([link], capsys)
    assert "name:         my file" in out
    assert "info-hash v1: " + "ab" * 20 in out
    assert "size:         12.1 KiB (12,345 bytes)" in out
    assert "trackers:\n  udp://127.0.0.1:6969" in out
    assert "peers:\n  127.0.0.1:6881" in out
    assert "only 0, 2-4 (BEP 53)" in out
    data = json.loads(_show([link, "--json"], capsys))
    assert data["type"] == "magnet"
    assert data["select_only"] == [[0, 0], [2, 4]]
    assert data["peers"] == ["127.0.0.1:6881"]


def test_bare_info_hash(capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(_show(["cd" * 32, "--json"], capsys))
    assert data["info_hash"] == {"v1": None, "v2": "cd" * 32}


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("magnet:?xt=urn:btih:nothex", "bad magnet link: parameter 'xt'"),
        ("magnet:?dn=x", "bad magnet link"),
        ("magnet:?xt=urn:btih:" + "ab" * 20 + "&x.pe=nowhere", "bad magnet link: parameter 'x.pe'"),
        ("no-such-file.torrent", "no such file (nor a magnet link or an info-hash)"),
    ],
)
def test_bad_sources(argument: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(["show", argument], message, capsys)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a valid torrent"),
        (b"garbage", "not a valid torrent"),
        (b"d4:infod4:name1:xee", "not a valid torrent"),
        (b"le", "not a valid torrent"),
        (b"d4:infoi3ee", "not a valid torrent"),
    ],
)
def test_bad_torrents(
    tmp_path: Path, content: bytes, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.torrent"
    path.write_bytes(content)
    assert main(["show", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"bip: error: {path}: {message}")
    assert err.count("\n") == 1


def test_directory_is_not_a_torrent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(tmp_path)]) == 1
    assert "is a directory" in capsys.readouterr().err


def test_safe_text() -> None:
    assert safe_text("plain") == "plain"
    assert safe_text("a\tb\x00c\u202ed") == "a\\tb\\x00c\\u202ed"


def test_files_tree_reopens_directories(tmp_path: Path) -> None:
    from bip_metainfo import FileEntry

    files = (
        FileEntry(("t", "a", "x"), 1, 0),
        FileEntry(("t", "b"), 2, 1),
        FileEntry(("t", "a", "y"), 3, 3),
    )
    assert files_tree(files) == [
        "     t/",
        "       a/",
        "  0      x  1 B",
        "  1    b    2 B",
        "       a/",
        "  2      y  3 B",
    ]


def test_bep38_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = _torrent(tmp_path, similar=[b"\x11" * 20], collections=["set\x07one"])
    out = _show([str(path)], capsys)
    assert "similar (BEP 38):\n  " + "11" * 20 in out
    assert "collections (BEP 38):\n  set\\x07one" in out
    data = json.loads(_show([str(path), "--json"], capsys))
    assert data["similar"] == ["11" * 20]
    assert data["collections"] == ["set\x07one"]


def _status_of_show(argument: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(["show", argument])
    return status, err.getvalue()


@settings(max_examples=60, deadline=None)
@given(
    st.binary(max_size=300)
    | st.builds(lambda cut, junk: _VALID[:cut] + junk, st.integers(0, 400), st.binary(max_size=8))
)
def test_any_file_is_shown_or_refused_in_one_line(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "fuzz.torrent")
        path.write_bytes(data)
        status, err = _status_of_show(str(path))
    assert status in (0, 1)
    if status == 1:
        assert err.startswith("bip: error: ")
        assert err.count("\n") == 1


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80))
def test_any_magnet_is_shown_or_refused_in_one_line(tail: str) -> None:
    status, err = _status_of_show("magnet:?" + tail)
    assert status in (0, 1)
    if status == 1:
        assert err.startswith("bip: error: bad magnet link")
        assert err.count("\n") == 1
