"""What a review of the command line's hunt mends found: log lines that quote a magnet's
``dn`` raw, JSON output that leaves C1 controls and bidirectional overrides raw, ``--tracker``
URLs taken that the session then skips, and options read by ``int()``."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_helpers import assert_one_line_error

import bip._cmd_download
from bip._cli import _setup_logging, main
from bip._cmd_tracker import _byte_count
from bip._describe import json_text
from bip._errors import CLIError
from bip._inputs import check_tracker_url
from bip_bencode import Encodable, encode

ESC = "\x1b]0;pwned\x07x"
SHOWN = "\\x1b]0;pwned\\x07x"
HASH = "ab" * 20
DATA = b"hello"
LOCAL = ["--bind", "127.0.0.1", "--port", "0", "--no-trackers", "--no-dht"]


# -- log lines ------------------------------------------------------------------------------


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Put the root logger back as it was (pytest's own handlers) after ``_setup_logging``."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.usefixtures("root_logging")
@pytest.mark.parametrize("flags", [{}, {"verbose": True}, {"debug": True}])
def test_log_messages_are_escaped(
    capsys: pytest.CaptureFixture[str], flags: dict[str, bool]
) -> None:
    _setup_logging(debug=flags.get("debug", False), verbose=flags.get("verbose", False))
    # What the session logs of a magnet whose peer cannot be resolved: its dn first.
    logging.getLogger("bip.client").warning("%s: x.pe: cannot resolve peer %r", ESC, "p")
    err = capsys.readouterr().err
    assert "\x1b" not in err
    assert "\x07" not in err
    assert f"{SHOWN}: x.pe: cannot resolve peer 'p'" in err
    assert err.count("\n") == 1


@pytest.mark.usefixtures("root_logging")
def test_a_debug_traceback_keeps_its_lines(capsys: pytest.CaptureFixture[str]) -> None:
    _setup_logging(debug=True, verbose=False)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("bip").exception("failed: %s", "a\nb")
    err = capsys.readouterr().err
    assert "failed: a\\nb\nTraceback (most recent call last):\n" in err
    assert err.rstrip("\n").endswith("ValueError: boom")


# -- JSON output ----------------------------------------------------------------------------


def test_json_text_escapes_what_a_terminal_acts_on() -> None:
    value = {"k\u202e": ["a\x85b\x7fc\u202ed\u2028e\u2029\U000e0001\ufeff", "\u65e5\u672c", "\n"]}
    text = json_text(value)
    assert json.loads(text) == value  # valid JSON, the same values
    assert text.isascii() is False  # other scripts stay readable
    assert "\u65e5\u672c" in text
    for char in ("\x85", "\x7f", "\u202e", "\u2028", "\u2029", "\U000e0001", "\ufeff"):
        assert char not in text
    for escape in ("\\u0085", "\\u007f", "\\u202e", "\\u2028", "\\udb40\\udc01", "\\ufeff"):
        assert escape in text
    assert text.splitlines()[0] == "{"  # indented as before


def _torrent(tmp_path: Path, name: str = "x", **extra: Encodable) -> Path:
    path = tmp_path / "t.torrent"
    info: dict[bytes, Encodable] = {
        b"name": name.encode(),
        b"piece length": 16384,
        b"length": len(DATA),
        b"pieces": hashlib.sha1(DATA).digest(),
    }
    path.write_bytes(encode({b"info": info, **{k.encode(): v for k, v in extra.items()}}))
    return path


def test_show_json_escapes_a_comment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    comment = "see\u0085\u009b31m\u202eevil"
    assert main(["show", str(_torrent(tmp_path, comment=comment.encode())), "--json"]) == 0
    out = capsys.readouterr().out
    assert "\x85" not in out
    assert "\x9b" not in out
    assert "\u202e" not in out
    assert json.loads(out)["comment"] == comment


# -- --tracker -----------------------------------------------------------------------------


# What the session's parsers refuse, each with the words of the refusal.
REFUSED = [
    ("udp://tracker.example", "needs a port"),
    ("udp://:80", "needs a host"),
    ("udp://t:0", "port is 1..65535"),
    ("udp://0x7f.1:80", "not a host name or IP address"),
    ("http://:80/announce", "no host"),
    ("http://exa mple/a", "no spaces"),
    ("https://t.example:0/a", "port 0"),
    ("ftp://x/", "only udp://, http:// and https://"),
]


@pytest.mark.parametrize(("url", "message"), REFUSED)
def test_a_tracker_the_session_would_skip_is_refused(url: str, message: str) -> None:
    with pytest.raises(CLIError, match=message):
        check_tracker_url(url)


@pytest.mark.parametrize(
    "url", ["udp://t.example:80", "UDP://127.0.0.1:1/x", "http://t.example/a?k=v", "https://[::1]/"]
)
def test_a_tracker_the_session_takes_is_taken(url: str) -> None:
    check_tracker_url(url)


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the command ran: it should have refused its options first")

    monkeypatch.setattr("trio.run", run)


@pytest.mark.usefixtures("no_run")
@pytest.mark.parametrize("command", ["download", "seed"])
def test_download_and_seed_refuse_it_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    where = ["-d", str(tmp_path)] if command == "download" else [str(tmp_path)]
    argv = [command, str(_torrent(tmp_path)), *where, "--tracker", "udp://tracker.example"]
    assert_one_line_error([*argv, "--no-dht"], "a UDP tracker URL needs a port", capsys)


# -- tracker announce's numbers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "text"),
    [
        ("--port", "\u0666\u0668\u0668\u0661"),
        ("--port", "6_881"),
        ("--port", " 80"),
        ("--port", "65536"),
        ("--numwant", "1_0"),
        ("--numwant", "\u0663"),
        ("--uploaded", str(2**63)),
        ("--downloaded", "\uff11"),
        ("--left", "-1"),
        ("--left", "9" * 400),
    ],
)
def test_tracker_announce_refuses_what_is_not_ascii_digits_in_range(
    capsys: pytest.CaptureFixture[str], option: str, text: str
) -> None:
    argv = ["tracker", "announce", "udp://127.0.0.1:9", HASH, f"{option}={text}"]
    assert main(argv) == 2
    assert option in capsys.readouterr().err


def test_byte_counts_reach_what_bep_15_sends() -> None:
    assert _byte_count(str(2**63 - 1)) == 2**63 - 1
    assert _byte_count("0") == 0


# -- names printed once the metadata is known ----------------------------------------------


async def _limit_reached(*args: object, **kwargs: object) -> str:
    return "limit reached"


@pytest.mark.parametrize("command", ["download", "seed"])
def test_seeding_lines_escape_the_name(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    name = "a\u2060b"  # a format character the sanitiser keeps
    (tmp_path / name).write_bytes(DATA)  # complete: the check finds every piece
    monkeypatch.setattr(bip._cmd_download, "seed_until_limits", _limit_reached)
    where = ["-d", str(tmp_path), "--seed"] if command == "download" else [str(tmp_path)]
    assert main([command, str(_torrent(tmp_path, name)), *where, *LOCAL]) == 0
    err = capsys.readouterr().err
    assert "\u2060" not in err
    assert "bip: a\\u2060b: limit reached: stopped seeding" in err
    said = "bip: a\\u2060b: seeding until" if command == "download" else "seeding a\\u2060b:"
    assert said in err
