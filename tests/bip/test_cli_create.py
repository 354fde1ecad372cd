"""``bip create``: the torrent it writes, its options, and its errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bip._cli import main
from bip_metainfo import Metainfo, create_torrent


def _album(root: Path) -> Path:
    folder = root / "album"
    (folder / "cd1").mkdir(parents=True)
    (folder / "cd1" / "01.flac").write_bytes(bytes(range(256)) * 300)  # 76,800 bytes
    (folder / "cover.jpg").write_bytes(b"\x02" * 20_000)
    (folder / ".hidden").write_bytes(b"h" * 10)
    return folder


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert lines[-1].startswith("bip: error: ")
    assert "Traceback" not in err
    return lines[-1]


def test_default_is_hybrid_named_after_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _album(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["create", str(folder)]) == 0
    out, err = capsys.readouterr()
    torrent = Metainfo.from_file(tmp_path / "album.torrent")
    assert torrent.info.is_hybrid
    assert torrent.created_by is not None
    assert torrent.created_by.startswith("bip/")
    assert torrent.creation_date is not None
    assert "wrote album.torrent (hybrid)" in out
    assert torrent.info.info_hash.v1 is not None
    assert torrent.info.info_hash.v1.hex() in out
    assert str(torrent.magnet()) in out
    assert "hashing album" in err
    assert "100.0%" in err


@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
def test_same_torrent_as_the_library(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], version: str
) -> None:
    folder = _album(tmp_path)
    out = tmp_path / "out.torrent"
    argv = ["create", str(folder), "-o", str(out), f"--{version}", "--no-date", "--no-creator"]
    assert main([*argv, "-q"]) == 0
    assert capsys.readouterr().out == ""
    expected = create_torrent(folder, version=version, creation_date=None, created_by=None)  # type: ignore[arg-type]
    assert out.read_bytes() == expected.to_bytes()


def test_every_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _album(tmp_path)
    out = tmp_path / "x.torrent"
    argv = [
        "create",
        str(folder),
        "-o",
        str(out),
        "--v1",
        "-t",
        "udp://127.0.0.1:6969/announce",
        "-t",
        "http://127.0.0.1:8000/a,http://127.0.0.1:8001/a",
        "-w",
        "http://127.0.0.1:8080/files/",
        "--node",
        "127.0.0.1:6881",
        "--private",
        "--piece-size",
        "32k",
        "--comment",
        "a comment",
        "--source",
        "SITE",
        "--name",
        "renamed",
        "--exclude-hidden",
        "--threads",
        "1",
        "-q",
    ]
    assert main(argv) == 0
    torrent = Metainfo.from_file(out)
    info = torrent.info
    assert not info.is_v2
    assert info.piece_length == 32 * 1024
    assert info.private
    assert info.source == "SITE"
    assert info.name == "renamed"
    assert torrent.comment == "a comment"
    assert torrent.trackers == (
        ("udp://127.0.0.1:6969/announce",),
        ("http://127.0.0.1:8000/a", "http://127.0.0.1:8001/a"),
    )
    assert torrent.url_list == ("http://127.0.0.1:8080/files/",)
    assert torrent.nodes == (("127.0.0.1", 6881),)
    assert [f.path_str() for f in info.files] == ["renamed/cd1/01.flac", "renamed/cover.jpg"]


def test_reproducible_without_date(tmp_path: Path) -> None:
    folder = _album(tmp_path)
    a, b = tmp_path / "a.torrent", tmp_path / "b.torrent"
    assert main(["create", str(folder), "-o", str(a), "--no-date", "-q"]) == 0
    assert main(["create", str(folder), "-o", str(b), "--no-date", "-q"]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert Metainfo.from_file(a).creation_date is None


def test_single_file_to_stdout(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    file = tmp_path / "one.bin"
    file.write_bytes(b"z" * 50_000)
    assert main(["create", str(file), "-o", "-", "--no-date"]) == 0
    out, err = capsysbinary.readouterr()
    torrent = Metainfo.from_bytes(out)
    assert torrent.info.name == "one.bin"
    assert b"wrote standard output" in err  # the summary moves to stderr


def test_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _album(tmp_path)
    out = tmp_path / "x.torrent"
    out.write_bytes(b"precious")
    assert main(["create", str(folder), "-o", str(out), "-q"]) == 1
    assert "already exists (use --force" in _one_line_error(capsys.readouterr().err)
    assert out.read_bytes() == b"precious"
    assert main(["create", str(folder), "-o", str(out), "-q", "--force"]) == 0
    assert Metainfo.from_file(out).info.name == "album"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bip-")]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--piece-size", "20000"], "cannot create a torrent of"),
        (["-t", "127.0.0.1:6969"], "bad tracker URL"),
        (["-t", "udp://[::1"], "not a tracker URL"),
        (["-w", "udp://127.0.0.1/x"], "bad web seed URL"),
        (["--node", "127.0.0.1"], "missing port"),
        (["--threads", "0"], "--threads must be at least 1"),
    ],
)
def test_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    folder = _album(tmp_path)
    out = tmp_path / "x.torrent"
    assert main(["create", str(folder), "-o", str(out), "-q", *extra]) == 1
    assert message in _one_line_error(capsys.readouterr().err)
    assert not out.exists()


def test_bad_piece_size_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["create", str(tmp_path), "--piece-size", "lots"]) == 2
    assert "not a size" in capsys.readouterr().err


def test_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["create", str(tmp_path / "nope")]) == 1
    assert "no such file or directory" in _one_line_error(capsys.readouterr().err)


def test_nothing_to_share(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "zero").write_bytes(b"")
    assert main(["create", str(empty), "-o", str(tmp_path / "e.torrent")]) == 1
    assert "cannot create a torrent of" in _one_line_error(capsys.readouterr().err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _album(tmp_path)
    secret = folder / "cover.jpg"
    secret.chmod(0)
    try:
        assert main(["create", str(folder), "-o", str(tmp_path / "x.torrent"), "-q"]) == 1
    finally:
        secret.chmod(0o644)
    assert "Permission denied" in _one_line_error(capsys.readouterr().err)


def test_private_without_trackers_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _album(tmp_path)
    assert main(["create", str(folder), "-o", str(tmp_path / "p.torrent"), "-q", "-p"]) == 0
    assert "warning: a private torrent without trackers" in capsys.readouterr().err


def test_ctrl_c_cancels_the_hashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C lands in the main thread, which sets ``cancel`` and waits for the hashing to
    stop before exiting with 130; no torrent is written."""
    import signal
    import threading

    from bip import _cmd_create
    from bip_metainfo import CreateCancelled

    stopped = []

    def fake_create(path: object, *, cancel: threading.Event, **options: object) -> Metainfo:
        signal.raise_signal(signal.SIGINT)  # handled in the main thread: KeyboardInterrupt
        assert cancel.wait(10)
        stopped.append(True)
        raise CreateCancelled

    monkeypatch.setattr(_cmd_create, "create_torrent", fake_create)
    folder = _album(tmp_path)
    out = tmp_path / "x.torrent"
    assert main(["create", str(folder), "-o", str(out)]) == 130
    assert stopped == [True]
    assert capsys.readouterr().err.endswith("bip: error: interrupted\n")
    assert not out.exists()


def test_output_into_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _album(tmp_path)
    target = tmp_path / "torrents"
    target.mkdir()
    assert main(["create", str(folder), "-o", str(target), "-q"]) == 0
    assert Metainfo.from_file(target / "album.torrent").info.name == "album"
    missing = tmp_path / "nowhere" / "x.torrent"
    assert main(["create", str(folder), "-o", str(missing), "-q"]) == 1
    err = capsys.readouterr().err
    assert f"{missing}: no such directory" in _one_line_error(err)
    assert "hashing" not in err  # refused before any hashing


def test_name_with_a_separator_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _album(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["create", str(folder), "--name", "../up", "-q"]) == 1
    assert "the torrent needs a name" in _one_line_error(capsys.readouterr().err)
    assert not list(tmp_path.rglob("*.torrent"))
    assert not (tmp_path.parent / "up.torrent").exists()
