"""Shared by the command-line tests: how a refused command must look."""

from __future__ import annotations

import pytest

from bip._cli import main


def assert_one_line_error(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``bip ARGV`` in this process and check it fails (status 1) with exactly one
    ``bip: error: ...`` line on stderr that contains ``message``; return stderr."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("bip: error: ")
    assert message in err
    assert err.count("\n") == 1
    return err
