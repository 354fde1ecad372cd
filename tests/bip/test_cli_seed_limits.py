"""``--seed-ratio``, ``--seed-time``, ``--max-peers`` of ``bip download`` and ``bip seed``, and
``bip download --sequential``: the commands stop seeding by themselves, and refuse bad values."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from _engine_helpers import (
    LOOPBACK,
    address_of,
    loopback_config,
    make_torrent,
    same_files,
    write_content,
)

from bip._arguments import duration
from bip._cli import build_parser
from bip._client import DEFAULT_MAX_PEERS, TorrentOptions, open_session
from bip._client._torrent import Torrent
from bip._cmd_download import config_from_args
from bip_handshake import PeerAddress
from bip_metainfo import Metainfo
from bip_peer import Peer, Request

DEADLINE = 60.0
PIECE = 16384
BIP = [sys.executable, "-m", "bip"]
LOCAL = ["--bind", LOOPBACK, "--port", "0", "--no-trackers", "--no-dht"]


def torrent_file(tmp_path: Path, pieces: int = 24) -> tuple[Path, Path, Metainfo]:
    """A v1 torrent of fresh content of about ``pieces`` pieces: (the .torrent, the
    content's parent directory, the torrent)."""
    folder = write_content(tmp_path / "seed", [pieces * PIECE - 5000, 5000])
    torrent = make_torrent(folder, "v1", piece_length=PIECE)
    path = tmp_path / "album.torrent"
    path.write_bytes(torrent.to_bytes())
    return path, folder.parent, torrent


async def read_until(stream: trio.abc.ReceiveStream, pattern: bytes, said: bytes) -> bytes:
    """Read ``stream`` until ``pattern`` is in what was said; return all of it."""
    while re.search(pattern, said) is None:
        chunk = await stream.receive_some()
        assert chunk, said.decode()
        said += chunk
    return said


async def read_all(stream: trio.abc.ReceiveStream, said: bytes) -> bytes:
    while chunk := await stream.receive_some():
        said += chunk
    return said


async def test_seed_time_ends_bip_seed(tmp_path: Path) -> None:
    path, seed_dir, _ = torrent_file(tmp_path)
    argv = [*BIP, "seed", str(path), str(seed_dir), *LOCAL, "--seed-time", "1s"]
    with trio.fail_after(DEADLINE):
        result = await trio.run_process(argv, capture_stderr=True, check=False)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert "until 1s of seeding" in stderr
    assert "seeded for 1s: stopped seeding" in stderr


async def test_seed_ratio_reached_by_a_leecher(tmp_path: Path) -> None:
    path, seed_dir, torrent = torrent_file(tmp_path)
    down = tmp_path / "down"
    argv = [*BIP, "seed", str(path), str(seed_dir), *LOCAL, "--seed-ratio", "1"]
    argv += ["--seed-time", "1h"]  # a bound, never reached
    process = await trio.lowlevel.open_process(argv, stderr=subprocess.PIPE)
    try:
        with trio.fail_after(DEADLINE):
            assert process.stderr is not None
            said = await read_until(process.stderr, rb"on port \d+,", b"")
            port = int(re.search(rb"on port (\d+),", said).group(1))  # type: ignore[union-attr]
            assert b"until ratio 1 or 1h00m of seeding" in said
            async with open_session(loopback_config()) as leecher:
                download = await leecher.add_torrent(
                    torrent,
                    TorrentOptions(down, peers=(PeerAddress.parse(f"{LOOPBACK}:{port}"),)),
                )
                await download.wait_complete()
                # One whole copy went up: the seed stops by itself.
                said = await read_all(process.stderr, said)
                exit_code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert exit_code == 0, said.decode()
    assert b"seed ratio 1 reached" in said
    assert same_files(seed_dir / "album", down / "album")


async def test_download_sequential_then_seed_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, seed_dir, torrent = torrent_file(tmp_path, pieces=64)
    down = tmp_path / "down"
    asked: list[int] = []
    original = Torrent._request

    def request(self: Torrent, peer: Peer, message: Request) -> None:
        # Our seed is the download's only peer: the order it is asked in is the
        # download's order.
        if message.index not in asked:
            asked.append(message.index)
        original(self, peer, message)

    monkeypatch.setattr(Torrent, "_request", request)
    # No BEP 6 allowed fast: a download the seed chokes asks for its allowed-fast pieces first,
    # out of its order (libtorrent's too), and the order is what this test looks at.
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config(allowed_fast_set_size=0)) as seeder:
            seeding = await seeder.add_torrent(torrent, TorrentOptions(seed_dir, files=frozenset()))
            await seeding.wait_complete()
            argv = [*BIP, "download", str(path), "--dir", str(down), *LOCAL, "--sequential"]
            argv += ["--peer", str(address_of(seeder)), "--seed-time", "0.5", "--max-peers", "4"]
            result = await trio.run_process(argv, capture_stderr=True, check=False)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert "seeding until 0.5s of seeding" in stderr
    assert "seeded for 0.5s: stopped seeding" in stderr
    assert asked == list(range(torrent.info.num_pieces))
    assert same_files(seed_dir / "album", down / "album")


@pytest.mark.parametrize("command", [["download", "x.torrent"], ["seed", "x.torrent"]])
def test_values_are_read(command: list[str]) -> None:
    parser = build_parser()
    args = parser.parse_args([*command, "--no-trackers"])
    assert (args.seed_ratio, args.seed_time) == (None, None)
    assert config_from_args(args).max_peers == DEFAULT_MAX_PEERS
    words = ["--seed-ratio", "1.5", "--seed-time", "1h30m", "--max-peers", "7"]
    args = parser.parse_args([*command, "--no-trackers", *words])
    assert (args.seed_ratio, args.seed_time) == (1.5, 5400.0)
    assert config_from_args(args).max_peers == 7


def test_sequential_is_off_by_default() -> None:
    parser = build_parser()
    assert not parser.parse_args(["download", "x.torrent"]).sequential
    assert parser.parse_args(["download", "x.torrent", "--sequential"]).sequential


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("30s", 30.0), ("30m", 1800.0), ("2h", 7200.0), ("1d", 86400.0),
     ("1h30m", 5400.0), ("2.5h", 9000.0), ("1d2h3m4s", 93784.0), (" 5S ", 5.0)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--seed-time", "0", "above 0"),
        ("--seed-time", "0s", "above 0"),
        ("--seed-time", "-5", "not a duration"),
        ("--seed-time", "30 min", "not a duration"),
        ("--seed-time", "1m2h", "not a duration"),
        ("--seed-time", "h", "not a duration"),
        ("--seed-time", "1e3", "not a duration"),
        ("--seed-time", "nan", "not a duration"),
        ("--seed-time", "\u0661\u0662", "not a duration"),  # Arabic-Indic digits
        ("--seed-time", "99999999999d", "at most 100 years"),
        ("--seed-ratio", "0", "must be positive"),
        ("--seed-ratio", "-1", "must be positive"),
        ("--seed-ratio", "nan", "must be positive"),
        ("--seed-ratio", "inf", "must be positive"),
        ("--seed-ratio", "lots", "not a number"),
        ("--max-peers", "0", "must be positive"),
        ("--max-peers", "-3", "must be positive"),
        ("--max-peers", "1.5", "not a number"),
        ("--max-peers", "many", "not a number"),
    ],
)
@pytest.mark.parametrize("command", ["download", "seed"])
def test_bad_values_are_refused(
    command: str, option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "x.torrent", f"{option}={value}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err
    assert message in err
