"""``bip create`` mends: a piece size or a node port of 0, text that is not UTF-8 and any
other argument create_torrent refuses are the user's errors, not "internal error" (exit 70);
the torrent is never written inside the directory it shares (a later run would hash the old
torrent into the new one, which then fails its own check)."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import pytest

from bip import _cmd_create
from bip._cli import main
from bip_metainfo import CreateError, Metainfo, create_torrent

_NOT_UTF8 = "caf\udce9"  # os.fsdecode(b"caf\xe9"): Latin-1 typed in a UTF-8 locale


def _share(root: Path) -> Path:
    folder = root / "share"
    folder.mkdir()
    (folder / "data.bin").write_bytes(bytes(range(256)) * 400)
    return folder


def _error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert lines[-1].startswith("bip: error: "), err
    assert "internal error" not in err
    assert "Traceback" not in err
    return lines[-1]


@pytest.mark.parametrize("size", ["0", "0k", "0 MiB", "0.0k"])
def test_a_piece_size_of_zero_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], size: str
) -> None:
    """Before: exit 70, "internal error: ValueError: piece length must be a positive
    integer, not 0"."""
    out = tmp_path / "x.torrent"
    assert main(["create", str(_share(tmp_path)), "-o", str(out), "-q", "-l", size]) == 2
    assert "--piece-size: a piece size must be positive" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("node", ["127.0.0.1:0", "[::1]:0", "node.example:0"])
def test_a_node_on_port_zero_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], node: str
) -> None:
    """Before: exit 70, "internal error: ValueError: a DHT node must be (host, port)"."""
    out = tmp_path / "x.torrent"
    assert main(["create", str(_share(tmp_path)), "-o", str(out), "-q", "--node", node]) == 1
    line = _error_line(capsys.readouterr().err)
    assert f"--node {node}: a port is in 1..65535, not 0" in line
    assert not out.exists()


def test_an_argument_create_torrent_refuses_is_the_users_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ValueError from create_torrent's checks of its arguments (before any hashing) names
    the argument: the user's to fix, whatever check bip create does not repeat."""

    def refuses(path: object, **options: object) -> Metainfo:
        raise ValueError("a DHT node must be (host, port), not ('h', 0)")

    monkeypatch.setattr(_cmd_create, "create_torrent", refuses)
    out = tmp_path / "x.torrent"
    assert main(["create", str(_share(tmp_path)), "-o", str(out), "-q"]) == 1
    line = _error_line(capsys.readouterr().err)
    assert line.endswith("a DHT node must be (host, port), not ('h', 0)")
    assert "cannot create a torrent of" in line


def test_a_value_error_once_hashing_started_is_still_a_bug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fails_while_hashing(
        path: object, *, progress: object, cancel: threading.Event, **options: object
    ) -> Metainfo:
        progress(0, 100)  # type: ignore[operator]
        raise ValueError("a bug in the hashing")

    monkeypatch.setattr(_cmd_create, "create_torrent", fails_while_hashing)
    assert main(["create", str(_share(tmp_path)), "-o", str(tmp_path / "x"), "-q"]) == 70
    assert "internal error: ValueError: a bug in the hashing" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["-c", _NOT_UTF8], "comment"),
        (["-s", _NOT_UTF8], "source"),
        (["-w", "http://w.example/" + _NOT_UTF8], "web_seeds"),
        (["-t", "wss://t.example/" + _NOT_UTF8], "trackers"),
    ],
)
def test_text_that_is_not_utf8_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], named: str
) -> None:
    """Before: exit 70, "internal error: UnicodeEncodeError"."""
    out = tmp_path / "x.torrent"
    assert main(["create", str(_share(tmp_path)), "-o", str(out), "-q", *extra]) == 1
    line = _error_line(capsys.readouterr().err)
    assert f"{named}: " in line
    assert "is not valid UTF-8" in line
    assert not out.exists()


def test_run_again_inside_the_shared_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the second run hashed the first run's share.torrent into the new torrent, then
    overwrote it: ``bip verify`` of the result found share.torrent incomplete (exit 1)."""
    share = _share(tmp_path)
    old = share / "share.torrent"
    old.write_bytes(b"the first run's torrent")
    monkeypatch.chdir(share)  # the default output, NAME.torrent here, lies in the share
    assert main(["create", ".", "-q", "-f", "-c", "second"]) == 1
    line = _error_line(capsys.readouterr().err)
    assert "share.torrent: inside the shared directory" in line
    assert "-o" in line
    assert old.read_bytes() == b"the first run's torrent"
    assert sorted(p.name for p in share.iterdir()) == ["data.bin", "share.torrent"]


@pytest.mark.parametrize("where", ["share", "share/sub/x.torrent", "share/../share/x.torrent"])
def test_an_output_inside_the_shared_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    share = _share(tmp_path)
    (share / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["create", "share", "-o", where, "-q"]) == 1
    assert "inside the shared directory" in _error_line(capsys.readouterr().err)
    assert sorted(p.name for p in share.iterdir()) == ["data.bin", "sub"]


def test_the_shared_file_itself_is_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _share(tmp_path) / "data.bin"
    before = data.read_bytes()
    assert main(["create", str(data), "-o", str(data), "-q", "-f"]) == 1
    assert "is the shared file" in _error_line(capsys.readouterr().err)
    assert data.read_bytes() == before


def test_an_output_beside_the_shared_directory_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    share = _share(tmp_path)
    (tmp_path / "share2").mkdir()  # a sibling whose name starts like the share's
    monkeypatch.chdir(tmp_path)
    assert main(["create", "share", "-q", "--no-date"]) == 0
    assert main(["create", "share", "-o", "share2", "-q", "--no-date"]) == 0
    first = Metainfo.from_bytes((tmp_path / "share.torrent").read_bytes())
    assert (tmp_path / "share2" / "share.torrent").read_bytes() == first.to_bytes()
    assert [f.path_str() for f in first.files if not f.is_pad] == ["share/data.bin"]
    assert sorted(p.name for p in share.iterdir()) == ["data.bin"]


# The review's ways around the first mend: a followed link into the output's directory, a
# `..` after a link in OUT, and a directory named two ways the string comparison missed.


def _follow_share(root: Path) -> tuple[Path, Path]:
    """``share/linkdir`` -> ``outside``: with --follow-symlinks the walk enters ``outside``."""
    share = _share(root)
    outside = root / "outside"
    outside.mkdir()
    (share / "linkdir").symlink_to(outside)
    return share, outside


def test_an_output_in_a_directory_a_followed_link_reaches_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: both runs exit 0, and the second torrent lists share/linkdir/x.torrent (the
    first run's torrent), failing its own check."""
    share, outside = _follow_share(tmp_path)
    out = outside / "x.torrent"
    argv = ["create", str(share), "--follow-symlinks", "-o", str(out), "-q", "-f"]
    assert main(argv) == 1
    line = _error_line(capsys.readouterr().err)
    assert "a directory the torrent shares" in line
    assert str(share / "linkdir") in line
    assert not out.exists()
    # Storing the link shares nothing out there: the same output is fine then.
    assert main([a for a in argv if a != "--follow-symlinks"]) == 0
    torrent = Metainfo.from_bytes(out.read_bytes())
    assert [f.path_str() for f in torrent.files if not f.is_pad] == ["share/data.bin"]


def test_an_output_a_followed_link_points_to_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The link leads to the old torrent itself, not to its directory."""
    share = _share(tmp_path)
    out = tmp_path / "x.torrent"
    out.write_bytes(b"the first run's torrent")
    (share / "t.torrent").symlink_to(out)
    argv = ["create", str(share), "--follow-symlinks", "-o", str(out), "-q", "-f"]
    assert main(argv) == 1
    line = _error_line(capsys.readouterr().err)
    assert "a file the torrent shares" in line
    assert out.read_bytes() == b"the first run's torrent"


def test_dot_dot_after_a_link_in_the_output_is_resolved_as_the_os_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``l/..`` is where ``l`` leads, then up: share/sub here, not the current directory.
    Before: exit 0, the torrent written to share/sub/x.torrent (and hashed into the next)."""
    share = _share(tmp_path)
    (share / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "l").symlink_to(share / "sub" / "deeper")
    monkeypatch.chdir(tmp_path)
    assert main(["create", "share", "-o", "l/../x.torrent", "-q", "-f"]) == 1
    assert "inside the shared directory" in _error_line(capsys.readouterr().err)
    assert not (share / "sub" / "x.torrent").exists()


def test_the_temporary_file_is_made_where_the_torrent_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beside the output as the OS finds it (``l/..``: the link's target's parent), so the
    final rename never crosses file systems (EXDEV)."""
    _share(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "deeper").mkdir(parents=True)
    (tmp_path / "l").symlink_to(elsewhere / "deeper")
    made_in: list[str] = []
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*, prefix: str, suffix: str, dir: str) -> tuple[int, str]:
        made_in.append(dir)
        return real_mkstemp(prefix=prefix, suffix=suffix, dir=dir)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.chdir(tmp_path)
    assert main(["create", "share", "-o", "l/../x.torrent", "-q"]) == 0
    assert (elsewhere / "x.torrent").is_file()
    assert not (tmp_path / "x.torrent").exists()
    assert len(made_in) == 1
    assert Path(made_in[0]).resolve() == elsewhere.resolve()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["deeper", "x.torrent"]


def test_a_node_port_out_of_range_names_the_ports_a_node_may_have(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: "a port is in 0..65535, not -1", though port 0 is refused too."""
    out = tmp_path / "x.torrent"
    share = _share(tmp_path)
    for port in ("-1", "65536"):
        assert main(["create", str(share), "-o", str(out), "--node", f"h:{port}"]) == 1
        line = _error_line(capsys.readouterr().err)
        assert line.endswith(f"--node h:{port}: a port is in 1..65535, not {port}")


def test_create_torrent_refuses_an_output_the_torrent_would_share(tmp_path: Path) -> None:
    """The hook ``bip create`` relies on, as any caller may: by identity, as the walk goes."""
    share, outside = _follow_share(tmp_path)
    (share / "sub").mkdir()
    for output in (share / "x.torrent", share / "sub" / "x.torrent", share / "data.bin"):
        with pytest.raises(CreateError, match="the torrent shares"):
            create_torrent(share, output=output, creation_date=None)
    with pytest.raises(CreateError, match="a file the torrent shares"):
        create_torrent(share / "data.bin", output=share / "data.bin")
    with pytest.raises(CreateError, match=r"'.*linkdir', a directory the torrent shares"):
        create_torrent(share, output=outside / "x.torrent", symlinks="follow")
    # Not shared: the link stored, a hidden name with hidden files left out, or elsewhere.
    hashes = {
        create_torrent(share, creation_date=None).info.info_hash,
        create_torrent(share, output=outside / "x.torrent", creation_date=None).info.info_hash,
        create_torrent(
            share, output=share / ".x.torrent", include_hidden=False, creation_date=None
        ).info.info_hash,
        create_torrent(
            share, output=tmp_path / "x.torrent", symlinks="follow", creation_date=None
        ).info.info_hash,
    }
    assert len(hashes) == 1  # linkdir leads to an empty folder: the same files each time
    with pytest.raises(FileNotFoundError):
        create_torrent(share, output=tmp_path / "nowhere" / "x.torrent")
