"""``bip demo``: the whole loopback swarm, in-process and as ``python -m bip demo`` (what
``uv run bip demo`` runs), its checks and its failures."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from bip import _demo_swarm
from bip._cli import main
from bip._client import TorrentPhase, TorrentStatus
from bip._cmd_demo import board_lines, check_copies
from bip._demo_swarm import DEMO_FILE, DemoLayout, DemoPeer, DemoSwarm, piece_length_for, run_swarm

TIMEOUT = 60.0


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The demo's temporary directory goes under this test's own (to see it removed)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def _check_report(out: str, leechers: int) -> None:
    assert out.startswith(f"bip demo: {leechers} leechers each fetched 2.00 MiB from 1 seeder in ")
    assert "every copy byte-equal to the source and every piece verified afresh" in out
    rows = [line for line in out.splitlines() if line.startswith("  leecher ")]
    assert len(rows) == leechers
    assert "tracker -, DHT " in rows[-1]  # the last one had no tracker: the DHT found peers
    assert "tracker -" not in rows[0]
    assert "seeder sent " in out


def test_demo_in_process(private_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--size", "2M", "--leechers", "3", "--timeout", str(TIMEOUT)]) == 0
    captured = capsys.readouterr()
    _check_report(captured.out, 3)
    # stderr is not a terminal here: blocks of plain lines, one per peer.
    assert "\x1b[" not in captured.err
    assert "\nseeder      127.0.0." in captured.err
    assert "\nleecher 3*  127.0.0." in captured.err  # * : no tracker
    assert "[#" not in captured.err  # bars are for terminals
    assert list(private_tmp.iterdir()) == []  # the temporary directory is gone


def test_demo_as_uv_run_runs_it(private_tmp: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bip", "demo", "--size", "2MiB", "--leechers", "2"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env={**os.environ, "TMPDIR": str(private_tmp)},
    )
    assert result.returncode == 0, result.stderr
    _check_report(result.stdout, 2)
    assert "-- 0s\n" in result.stderr  # progress blocks on a pipe
    assert list(private_tmp.iterdir()) == []


def test_keep_keeps_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keep = tmp_path / "kept"
    assert main(["demo", "--size", "2M", "--leechers", "2", "--keep", str(keep), "-q"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith(f"kept in {keep}")
    source = (keep / "seeder" / DEMO_FILE).read_bytes()
    assert len(source) == 2 << 20
    for n in (1, 2):
        assert (keep / f"leecher{n}" / DEMO_FILE).read_bytes() == source
    assert (keep / "bip-demo.torrent").stat().st_size > 0
    # A directory that is not empty is refused: the demo writes its own files there.
    assert main(["demo", "--keep", str(keep)]) == 1
    assert capsys.readouterr().err == f"bip: error: {keep}: --keep needs a new or empty directory\n"


def test_one_host_when_loopback_aliases_are_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A stock macOS has only 127.0.0.1: every part shares it, on its own port.
    monkeypatch.setattr(_demo_swarm, "_can_bind", lambda host: False)
    assert DemoLayout.plan(2, 3).shared_host
    assert main(["demo", "--size", "2M", "--leechers", "2", "-q"]) == 0
    out = capsys.readouterr().out
    _check_report(out, 2)
    assert "on 127.0.0.1 (no loopback aliases)" in out


def test_timeout_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--size", "2M", "--timeout", "0.001", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bip: error: the ")
    assert "within 0.001 s" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--size", "0"], "the size is 1 B to"),
        (["--size", "lots"], "not a size"),
        (["--leechers", "0"], "between 1 and 32 leechers"),
        (["--timeout", "-1"], "positive number of seconds"),
    ],
)
def test_bad_options(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", *argv]) == 2
    assert message in capsys.readouterr().err


async def test_a_bad_copy_is_caught(tmp_path: Path) -> None:
    swarm = await run_swarm(tmp_path, size=1 << 20, leechers=2, timeout=TIMEOUT)
    assert await check_copies(swarm) == []
    copy = swarm.leechers[1].directory / DEMO_FILE
    data = bytearray(copy.read_bytes())
    data[12345] ^= 1
    copy.write_bytes(bytes(data))
    assert await check_copies(swarm) == ["leecher 2's copy differs from the source"]


async def test_board_lines_on_a_terminal(tmp_path: Path) -> None:
    swarm = await run_swarm(tmp_path, size=1 << 20, leechers=2, timeout=TIMEOUT)
    lines = board_lines(swarm, 100, bar=True)
    assert [line.split()[0] for line in lines] == ["seeder", "leecher", "leecher"]
    bars = {line.index("]") - line.index("[") for line in lines}
    assert len(bars) == 1  # one bar width for every peer
    assert all("[####################] 100.0%  up " in line for line in lines)
    # A narrow terminal drops the bars rather than the numbers.
    assert all("[" not in line and "100.0%" in line for line in board_lines(swarm, 60, bar=True))


def _downloading(utp_peers: int) -> TorrentStatus:
    return TorrentStatus(
        name="demo",
        phase=TorrentPhase.DOWNLOADING,
        total=1000,
        done=500,
        pieces=4,
        num_pieces=8,
        download_rate=12.3 * 2**20,
        upload_rate=45.6 * 2**20,
        downloaded=500,
        uploaded=0,
        peers=12,
        seeds=1,
        bad_pieces=0,
        utp_peers=utp_peers,
    )


def _board(*utp_peers: int) -> DemoSwarm:
    """A stand-in swarm (board_lines only asks for its peers' statuses)."""
    peers = [
        DemoPeer(f"leecher {n}", "127.0.0.9", Path("."), True, final=_downloading(count))
        for n, count in enumerate(utp_peers, 1)
    ]
    return cast(DemoSwarm, SimpleNamespace(peers=peers))


def test_board_lines_count_utp_peers_only_when_there_are_some() -> None:
    # As the download status line: "(N uTP)" after the peer count when non-zero.
    tcp, utp = board_lines(_board(0, 10), 100, bar=True)
    assert "peers 12" in tcp
    assert "uTP" not in tcp
    assert utp.endswith("peers 12 (10 uTP)")  # whole: the bars left room for it
    assert len(utp) <= 100
    assert tcp.index("]") == utp.index("]")  # one bar width for all
    # Without any uTP peer the bars are as wide as before; the live view keeps the room
    # once it was needed (utp_room), so that they do not grow back and forth.
    [plain] = board_lines(_board(0), 100, bar=True)
    [kept] = board_lines(_board(0), 100, bar=True, utp_room=True)
    assert plain.index("]") > kept.index("]") == utp.index("]")
    assert "(" not in plain
    assert "(" not in kept


def test_piece_length_aims_at_about_128_pieces() -> None:
    assert piece_length_for(32 << 20) == 256 << 10
    assert piece_length_for(1) == 16 << 10
    assert piece_length_for(4 << 30) == 4 << 20
    assert piece_length_for(3 << 20) == 32 << 10
