"""What a hunt over the ``bip`` command line found: untrusted text printed raw (terminal
escapes), output encodings that cannot show a name, Ctrl-C while bip starts, and options that
were taken when they should have been refused up front."""

from __future__ import annotations

import io
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from _cli_helpers import assert_one_line_error

import bip
from bip import _entry
from bip._cli import main
from bip._cmd_dht import _show
from bip._describe import magnet_text
from bip._errors import EXIT_INTERRUPTED, CLIError, describe
from bip._inputs import parse_port
from bip._progress import ProgressBar
from bip_bencode import Encodable, encode
from bip_metainfo import MagnetLink

ESC = "\x1b]0;PWN\x07\x1b[31m"
HASH = "ab" * 20
TIMEOUT = 30.0


def _torrent(tmp_path: Path, name: str = "x") -> Path:
    path = tmp_path / "t.torrent"
    info: dict[bytes, Encodable] = {
        b"name": name.encode(),
        b"piece length": 16384,
        b"length": 5,
        b"pieces": bytes(20),
    }
    path.write_bytes(encode({b"info": info}))
    return path


# -- terminal escapes ----------------------------------------------------------------------


def test_the_progress_label_is_escaped() -> None:
    # A magnet's dn is the label of `bip download`'s status line until the metadata comes.
    out = io.StringIO()
    bar = ProgressBar("a" + ESC, 10, stream=out, is_tty=False)
    bar.label = "b" + ESC  # what StatusLine does at each redraw
    bar.finish()
    assert "\x1b" not in out.getvalue()
    assert "\x07" not in out.getvalue()
    assert out.getvalue().startswith("b\\x1b]0;PWN\\x07\\x1b[31m ")


def test_error_lines_are_escaped_once() -> None:
    assert describe(CLIError("dn" + ESC + ": failed")) == "dn\\x1b]0;PWN\\x07\\x1b[31m: failed"
    # Already escaped (a repr): left as it is, not escaped twice.
    assert describe(CLIError(f"not a port number: {ESC!r}")) == f"not a port number: {ESC!r}"
    # Line breaks still join the line with spaces; a bad file name is escaped too.
    assert describe(CLIError("one\ntwo")) == "one two"
    error = FileNotFoundError(2, "No such file or directory", "x\x1b[2Jy\udcff")
    assert describe(error) == "x\\x1b[2Jy\\udcff: No such file or directory"


def test_a_magnets_unknown_parameter_name_is_escaped() -> None:
    link = MagnetLink.parse(f"magnet:?xt=urn:btih:{HASH}&x.%1B%5B31m=v%1B")
    text = magnet_text(link)
    assert "\x1b" not in text
    assert "x.\\x1b[31m:" in text


def test_a_dht_value_is_escaped() -> None:
    assert _show(ESC.encode()) == "\\x1b]0;PWN\\x07\\x1b[31m"
    assert _show(b"\xff") == "ff"  # not text: hex, as before


# -- output encodings ----------------------------------------------------------------------


def _streams(monkeypatch: pytest.MonkeyPatch, encoding: str) -> tuple[io.BytesIO, io.BytesIO]:
    out, err = io.BytesIO(), io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out, encoding=encoding))
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(err, encoding=encoding))
    return out, err


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_name_the_output_encoding_lacks_is_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoding: str
) -> None:
    out, err = _streams(monkeypatch, encoding)
    assert main(["show", str(_torrent(tmp_path, "\u65e5\u672c"))]) == 0
    sys.stdout.flush()
    assert b"name:         \\u65e5\\u672c\n" in out.getvalue()
    assert main(["show", str(tmp_path / "\u0444.torrent")]) == 1
    sys.stderr.flush()
    assert b"\\u0444.torrent: no such file" in err.getvalue()


# -- Ctrl-C while bip starts ---------------------------------------------------------------


class _InterruptedImport:
    """A meta path finder that raises Ctrl-C when the command line module is imported."""

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == "bip._cli":
            raise KeyboardInterrupt


@pytest.fixture
def interrupted_import(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delitem(sys.modules, "bip._cli")
    finder = _InterruptedImport()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


@pytest.mark.usefixtures("interrupted_import")
def test_ctrl_c_while_importing_exits_130(capsys: pytest.CaptureFixture[str]) -> None:
    assert _entry.main(["--version"]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "bip: error: interrupted\n"


def test_ctrl_c_while_building_the_parser_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("bip._cli.build_parser", interrupted)
    assert _entry.main(["--version"]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "bip: error: interrupted\n"


def test_a_real_sigint_while_importing_exits_130_without_a_traceback() -> None:
    # The child sends itself SIGINT from the import of the command line: Python's handler
    # raises KeyboardInterrupt in the middle of the import, where no try of main() is yet.
    child = (
        "import os, signal, sys\n"
        "class Finder:\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'bip._cli':\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "sys.meta_path.insert(0, Finder())\n"
        "from bip._entry import main\n"
        "sys.exit(main(['--version']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert (result.returncode, result.stderr) == (EXIT_INTERRUPTED, "bip: error: interrupted\n")


def test_the_bip_script_and_python_m_bip_go_through_the_entry_module() -> None:
    project = Path(bip.__file__).parents[2] / "pyproject.toml"
    scripts = tomllib.loads(project.read_text())["project"]["scripts"]
    assert scripts == {"bip": "bip._entry:main"}
    main_module = (Path(bip.__file__).parent / "__main__.py").read_text()
    assert "from ._entry import main" in main_module
    assert _entry.EXIT_INTERRUPTED == EXIT_INTERRUPTED


# -- options refused up front --------------------------------------------------------------


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command gets as far as running its session."""

    def run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the command ran: it should have refused its options first")

    monkeypatch.setattr(trio, "run", run)


@pytest.mark.usefixtures("no_run")
def test_download_refuses_a_file_as_its_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "afile"
    file.write_bytes(b"x")
    argv = ["download", str(_torrent(tmp_path)), "-d", str(file), "--no-dht"]
    assert_one_line_error(argv, f"{file}: not a directory", capsys)


@pytest.mark.usefixtures("no_run")
@pytest.mark.parametrize("command", ["download", "seed"])
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://x/", "only udp://, http:// and https:// trackers are supported, not 'ftp://x/'"),
        ("http:///announce", "no host in tracker URL"),
        ("udp://x:99999", "not a tracker URL: 'udp://x:99999' (Port out of range"),
    ],
)
def test_download_and_seed_refuse_a_tracker_they_cannot_announce_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, url: str, message: str
) -> None:
    torrent = str(_torrent(tmp_path))
    where = ["-d", str(tmp_path)] if command == "download" else [str(tmp_path)]
    argv = [command, torrent, *where, "--no-dht", "--tracker", "udp://ok:1", "--tracker", url]
    assert_one_line_error(argv, message, capsys)


@pytest.mark.parametrize("numwant", ["99999999999", "2147483648", "-2"])
def test_tracker_announce_bounds_numwant(capsys: pytest.CaptureFixture[str], numwant: str) -> None:
    argv = ["tracker", "announce", "udp://127.0.0.1:9", HASH, "--numwant", numwant]
    assert main(argv) == 2
    assert "--numwant" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text", ["\u0666\u0668\u0668\u0661", "\uff16\uff18", "6_881", "+80", " 80"]
)
def test_a_port_is_ascii_digits(text: str) -> None:
    with pytest.raises(CLIError, match="not a port number"):
        parse_port(text)
    assert parse_port("6881") == 6881
