"""The shared command-line framework: argument parsing, error mapping, progress, humanize."""

from __future__ import annotations

import argparse
import io
import logging
import sys
import types
from collections.abc import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bip import _cli
from bip._errors import CLIError, describe, exit_code_for, find_expected
from bip._humanize import format_duration, format_rate, format_size, parse_size
from bip._progress import ProgressBar, render_line
from bip_metainfo import (
    CreateError,
    HashRequestError,
    InfoHashError,
    MetainfoBaseError,
    MetainfoError,
    MetainfoErrorKind,
)
from bip_utracker import TrackerTimeoutError


@pytest.fixture
def command(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], int]], None]:
    """Register a fake ``bip boom`` whose body is the given callable."""

    def install(body: Callable[[], int]) -> None:
        module = types.ModuleType("bip._cmd_boom")

        def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
            p = subparsers.add_parser("boom", help="a test command")
            p.set_defaults(func=lambda args: body())

        module.add_parser = add_parser  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "bip._cmd_boom", module)
        monkeypatch.setattr(_cli, "_COMMAND_MODULES", ("boom",))

    return install


def _raiser(exc: BaseException) -> Callable[[], int]:
    def body() -> int:
        raise exc

    return body


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("bip ")


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main([]) == 2
    assert "usage: bip" in capsys.readouterr().err


def test_unknown_option_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["--frobnicate"]) == 2
    assert "bip: error:" in capsys.readouterr().err


def test_command_status_is_returned(command: Callable[[Callable[[], int]], None]) -> None:
    command(lambda: 3)
    assert _cli.main(["boom"]) == 3


@pytest.mark.parametrize(
    ("exc", "code", "text"),
    [
        (CLIError("no such thing", exit_code=4), 4, "bip: error: no such thing\n"),
        (FileNotFoundError(2, "No such file or directory", "x.torrent"), 1, "x.torrent: No such"),
        (
            MetainfoError(MetainfoErrorKind.MISSING_INFO, "no info\ndict"),
            1,
            "bip: error: bad torrent: no info dict",
        ),
        (TrackerTimeoutError("no answer"), 1, "bip: error: tracker: no answer"),
        (KeyboardInterrupt(), 130, "bip: error: interrupted"),
        (ExceptionGroup("g", [ValueError("x"), CLIError("inner")]), 1, "bip: error: inner"),
        (BaseExceptionGroup("g", [CLIError("a"), KeyboardInterrupt()]), 130, "interrupted"),
    ],
)
def test_expected_errors_are_one_line(
    command: Callable[[Callable[[], int]], None],
    capsys: pytest.CaptureFixture[str],
    exc: BaseException,
    code: int,
    text: str,
) -> None:
    command(_raiser(exc))
    assert _cli.main(["boom"]) == code
    err = capsys.readouterr().err
    assert text in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_debug_adds_traceback(
    command: Callable[[Callable[[], int]], None], capsys: pytest.CaptureFixture[str]
) -> None:
    command(_raiser(CLIError("bad")))
    assert _cli.main(["--debug", "boom"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.rstrip().endswith("bip: error: bad")


def test_bug_is_internal_error(
    command: Callable[[Callable[[], int]], None], capsys: pytest.CaptureFixture[str]
) -> None:
    command(_raiser(ZeroDivisionError("oops")))
    assert _cli.main(["boom"]) == _cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError: oops" in err
    assert "Traceback" not in err


def test_clierror_needs_nonzero_code() -> None:
    with pytest.raises(ValueError, match="non-zero"):
        CLIError("x", exit_code=0)


def test_find_expected_ignores_bugs() -> None:
    assert find_expected(ValueError("x")) is None
    assert find_expected(ExceptionGroup("g", [ValueError("x")])) is None
    leaf = OSError(98, "Address already in use")
    assert find_expected(ExceptionGroup("g", [ExceptionGroup("h", [leaf])])) is leaf
    assert "another program" in describe(leaf)
    assert exit_code_for(leaf) == 1


# -- humanize ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (1536, "1.50 KiB"),
        (16 * 1024 * 1024, "16.0 MiB"),
        (1023.999 * 1024, "1.00 MiB"),
        (300 * 2**30, "300 GiB"),
        (-2048, "-2.00 KiB"),
    ],
)
def test_format_size(size: float, text: str) -> None:
    assert format_size(size) == text


def test_format_rate_and_duration() -> None:
    assert format_rate(0) == "0 B/s"
    assert format_rate(float("inf")) == "0 B/s"
    assert format_rate(2 * 2**20) == "2.00 MiB/s"
    assert format_duration(None) == "--"
    assert format_duration(float("inf")) == "--"
    assert format_duration(59.4) == "59s"
    assert format_duration(185) == "3m05s"
    assert format_duration(7620) == "2h07m"
    assert format_duration(3 * 86400 + 4 * 3600) == "3d04h"


@pytest.mark.parametrize(
    ("text", "size"),
    [("16384", 16384), ("16k", 16384), ("16 KiB", 16384), ("16kb", 16384), ("1.5MiB", 3 << 19)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "k", "12 parsecs", "1.3", "-4", "1e3"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"size|bytes"):
        parse_size(text)


@given(st.integers(min_value=0, max_value=2**62))
@example(104_805_172)  # 99.95 MiB printed with one decimal was "100.0 MiB"
def test_format_size_is_short(size: int) -> None:
    assert len(format_size(size)) <= 8


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (10_234, "9.99 KiB"),
        (10_235, "10.0 KiB"),  # 9.995 KiB rounds up: one decimal fewer, not "10.00"
        (102_348, "99.9 KiB"),
        (104_805_172, "100 MiB"),
        (1_048_064, "1.00 MiB"),  # 1023.5 KiB carries into the next unit
    ],
)
def test_format_size_decimals_follow_the_rounded_value(size: int, text: str) -> None:
    assert format_size(size) == text


# -- progress ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_render_line_fits_width() -> None:
    line = render_line("name", 50, 100, [("peers", "3")], width=60)
    assert len(line) <= 60
    assert "[" in line
    assert " 50.0%" in line
    assert "peers 3" in line
    assert len(render_line("x" * 100, 1, 2, width=40)) == 40
    assert "%" not in render_line("magnet", 10, None, sizes=False)


def test_plain_output_is_rate_limited() -> None:
    out = io.StringIO()
    clock = FakeClock()
    bar = ProgressBar("job", 1000, stream=out, is_tty=False, clock=clock)
    for i in range(1, 101):
        clock.now = i * 0.05  # 5 seconds in 100 updates
        bar.update(i * 10)
    bar.finish()
    bar.finish()  # idempotent
    lines = out.getvalue().splitlines()
    assert 5 <= len(lines) <= 7  # about one a second, plus the final line
    assert "100.0%" in lines[-1]
    assert "avg 200 B/s" in lines[-1]
    assert "\r" not in out.getvalue()


def test_tty_redraws_in_place() -> None:
    out = io.StringIO()
    clock = FakeClock()
    with ProgressBar("job", 100, stream=out, is_tty=True, clock=clock, width=70) as bar:
        for i in range(1, 11):
            clock.now = i * 0.5
            bar.update(i * 10, fields=[("peers", str(i))])
        assert bar.rate() == pytest.approx(20.0)
        assert bar.eta() == 0.0
    text = out.getvalue()
    assert text.count("\r") == 11
    assert text.endswith("\n")
    assert text.count("\n") == 1
    assert "peers 10" in text


def test_eta_and_unknown_total() -> None:
    clock = FakeClock()
    bar = ProgressBar("job", None, stream=io.StringIO(), is_tty=False, clock=clock)
    clock.now = 1.0
    bar.update(10)
    assert bar.eta() is None
    bar.update(10, total=110)
    assert bar.eta() == pytest.approx(10.0)


def test_error_exit_ends_line_without_redraw() -> None:
    out = io.StringIO()
    bar = ProgressBar("job", 10, stream=out, is_tty=True)
    bar.update(5)
    bar.__exit__(RuntimeError, RuntimeError(), None)
    assert out.getvalue().count("\r") == 1
    assert out.getvalue().endswith("\n")


@pytest.mark.parametrize(
    "argv", [["--debug", "boom"], ["boom", "--debug"], ["--debug", "boom", "--debug"]]
)
def test_debug_before_or_after_the_command(
    command: Callable[[Callable[[], int]], None],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    command(_raiser(CLIError("bad")))
    assert _cli.main(argv) == 1
    assert "Traceback" in capsys.readouterr().err


def test_no_debug_anywhere(
    command: Callable[[Callable[[], int]], None], capsys: pytest.CaptureFixture[str]
) -> None:
    command(_raiser(CLIError("bad")))
    assert _cli.main(["boom"]) == 1
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["boom"], logging.WARNING),
        (["-v", "boom"], logging.INFO),
        (["boom", "--verbose"], logging.INFO),
        (["boom", "--debug"], logging.DEBUG),
        (["--verbose", "boom", "--debug"], logging.DEBUG),
    ],
)
def test_logging_level_follows_the_flags(
    command: Callable[[Callable[[], int]], None], argv: list[str], level: int
) -> None:
    """Libraries log under their own names; the flags decide what reaches stderr."""
    seen: list[int] = []

    def body() -> int:
        seen.append(logging.getLogger("bip_dht.node").getEffectiveLevel())
        return 0

    command(body)
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, root.handlers[:]
    try:
        assert _cli.main(argv) == 0
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    assert seen == [level]


@pytest.mark.parametrize(
    ("error", "label"),
    [
        (InfoHashError("not hex"), "bad info-hash: not hex"),
        (CreateError("no files"), "cannot create the torrent: no files"),
        (HashRequestError("bad index"), "bad hash request: bad index"),
        (MetainfoBaseError("bitfield too long"), "bad input: bitfield too long"),
        (MetainfoError(MetainfoErrorKind.MISSING_INFO, "no info"), "bad torrent: no info"),
    ],
)
def test_every_metainfo_error_is_expected_and_labelled(error: Exception, label: str) -> None:
    """Every error bad input makes bip_metainfo raise (its base, MetainfoBaseError) is a
    one-line failure with its own label, never a traceback (review of the base-class mend)."""
    assert find_expected(error) is error
    assert describe(error).startswith(label)
