"""The ``bip`` command as a real process: exit statuses, signals, stdout and stderr."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bip._cli import main

TIMEOUT = 30.0


def _bip(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bip", *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        check=False,
    )


def _start(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bip", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _readline(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], TIMEOUT)
    assert ready, "no output from bip"
    return process.stdout.readline()


def test_create_show_verify(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "f.bin").write_bytes(os.urandom(100_000))
    created = _bip("create", "dir", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("wrote dir.torrent (hybrid)")
    # stderr is a pipe, not a terminal: plain progress lines, no carriage returns.
    assert "\r" not in created.stderr
    assert "hashing dir  100.0%" in created.stderr
    assert _bip("verify", "dir.torrent", ".", "-q", cwd=tmp_path).returncode == 0
    (tmp_path / "dir" / "f.bin").write_bytes(b"changed")
    failed = _bip("verify", "dir.torrent", ".", "-q", cwd=tmp_path)
    assert failed.returncode == 1
    assert "incomplete" in failed.stdout


def test_error_is_one_line(tmp_path: Path) -> None:
    result = _bip("--debug", "show", str(tmp_path / "missing.torrent"))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" in result.stderr
    assert result.stderr.endswith(": no such file (nor a magnet link or an info-hash)\n")


def test_ctrl_c_exits_130() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.settimeout(TIMEOUT)
        url = f"udp://127.0.0.1:{silent.getsockname()[1]}"
        process = _start("tracker", "announce", url, "ab" * 20, "--timeout", "60")
        try:
            silent.recvfrom(2048)  # its connect request: it is waiting for us now
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=TIMEOUT)
        finally:
            process.kill()
    assert process.returncode == 130
    assert err == "bip: error: interrupted\n"


def test_serve_until_sigint(capsys: pytest.CaptureFixture[str]) -> None:
    process = _start("tracker", "serve", "--bind", "127.0.0.1:0", "--stats-interval", "3600")
    try:
        first = _readline(process)
        assert first.startswith("serving udp://127.0.0.1:")
        url = first.split()[1]
        argv = ["tracker", "announce", url, "ab" * 20, "--bind", "127.0.0.1"]
        assert main([*argv, "--timeout", "10"]) == 0
        assert "seeders:   1" in capsys.readouterr().out
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=TIMEOUT)
    finally:
        process.kill()
    assert process.returncode == 0
    assert "stopping on SIGINT" in err
    assert out.strip().endswith("final: " + out.strip().split("final: ")[-1])
    assert "swarms 1, peers 1 (1 seeders, 0 leechers); announces 1" in out
