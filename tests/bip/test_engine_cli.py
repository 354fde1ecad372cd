"""``bip download`` and ``bip seed`` as commands: against each other and our engine on
loopback, their progress output, their exit statuses and their one-line errors."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from _engine_helpers import (
    LOOPBACK,
    address_of,
    good_pieces,
    loopback_config,
    make_torrent,
    same_files,
    write_content,
)

from bip._cli import main
from bip._client import Session, TorrentOptions, open_session
from bip_handshake import PeerAddress
from bip_metainfo import Metainfo

SIZES = (150_000, 60_000, 90_000)
DEADLINE = 60.0
BIP = [sys.executable, "-m", "bip"]
LOCAL = ["--bind", LOOPBACK, "--port", "0", "--no-trackers"]


def torrent_file(tmp_path: Path) -> tuple[Path, Path]:
    """A hybrid torrent of fresh content: (the .torrent, the content's parent directory)."""
    folder = write_content(tmp_path / "seed", SIZES)
    path = tmp_path / "album.torrent"
    path.write_bytes(make_torrent(folder, "hybrid").to_bytes())
    return path, folder.parent


@contextlib.asynccontextmanager
async def seeding_session(torrent: Metainfo, seed_dir: Path) -> AsyncIterator[Session]:
    """A loopback session seeding ``torrent`` from ``seed_dir`` (its data checked)."""
    async with open_session(loopback_config()) as seeder:
        seeding = await seeder.add_torrent(torrent, TorrentOptions(seed_dir, files=frozenset()))
        await seeding.wait_complete()
        yield seeder


async def test_download_command_from_our_seed(tmp_path: Path) -> None:
    path, seed_dir = torrent_file(tmp_path)
    torrent = make_torrent(seed_dir / "album", "hybrid")
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with seeding_session(torrent, seed_dir) as seeder:
            argv = [*BIP, "download", str(path), "--dir", str(down), *LOCAL]
            argv += ["--peer", str(address_of(seeder))]
            result = await trio.run_process(
                argv, capture_stdout=True, capture_stderr=True, check=False
            )
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert same_files(seed_dir / "album", down / "album")
    # Not a terminal: plain progress lines, the last one saying it is done and how fast.
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("album")
    assert "seeding" in last
    assert " in " in last
    assert "avg" in last


async def test_download_command_selects_files(tmp_path: Path) -> None:
    path, seed_dir = torrent_file(tmp_path)
    torrent = make_torrent(seed_dir / "album", "hybrid")
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with seeding_session(torrent, seed_dir) as seeder:
            # The last file, counted as the torrent lists them (pad files too, as BEP 53).
            index, chosen = [(i, e) for i, e in enumerate(torrent.info.files) if not e.is_pad][-1]
            argv = [*BIP, "download", str(path), "--dir", str(down), *LOCAL, "-q"]
            argv += ["--files", str(index), "--peer", str(address_of(seeder))]
            result = await trio.run_process(argv, capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    fetched = {str(p.relative_to(down)) for p in down.rglob("*.bin")}
    assert fetched == {"/".join(chosen.path)}
    assert down.joinpath(*chosen.path).read_bytes() == seed_dir.joinpath(*chosen.path).read_bytes()


async def test_seed_command_to_our_download(tmp_path: Path) -> None:
    path, seed_dir = torrent_file(tmp_path)
    torrent = make_torrent(seed_dir / "album", "hybrid")
    down = tmp_path / "down"
    argv = [*BIP, "seed", str(path), str(seed_dir), *LOCAL]
    process = await trio.lowlevel.open_process(argv, stderr=subprocess.PIPE)
    try:
        with trio.fail_after(DEADLINE):
            assert process.stderr is not None
            said = b""
            while (found := re.search(rb"on port (\d+)", said)) is None:
                chunk = await process.stderr.receive_some()
                assert chunk, said.decode()
                said += chunk
            port = int(found.group(1))
            async with open_session(loopback_config()) as leecher:
                download = await leecher.add_torrent(
                    torrent,
                    TorrentOptions(down, peers=(PeerAddress.parse(f"{LOOPBACK}:{port}"),)),
                )
                await download.wait_complete()
    finally:
        process.kill()
        await process.wait()
    assert same_files(seed_dir / "album", down / "album")
    assert good_pieces(torrent.info, down) == frozenset(range(torrent.info.num_pieces))


def test_download_missing_torrent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["download", str(tmp_path / "nothing.torrent"), "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bip: error:")
    assert "nothing.torrent" in err
    assert len(err.strip().splitlines()) == 1


def test_download_file_out_of_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = torrent_file(tmp_path)
    argv = ["download", str(path), "--dir", str(tmp_path / "down"), *LOCAL, "-q", "--files", "9"]
    assert main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    # No peer given: a warning first, that nothing will be found unless someone dials us.
    assert "no peer to dial" in lines[0]
    assert lines[-1].startswith("bip: error:")
    assert "no file 9 to select" in lines[-1]


def test_download_bad_file_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = torrent_file(tmp_path)
    assert main(["download", str(path), *LOCAL, "--files", "3-1"]) == 1
    assert "goes backwards" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--peer", "--dht-bootstrap"])
def test_download_refuses_port_0_to_dial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    path, _ = torrent_file(tmp_path)
    argv = ["download", str(path), "--dir", str(tmp_path / "down"), *LOCAL, "-q"]
    assert main([*argv, option, "127.0.0.1:0"]) == 1
    assert "a port is in 1..65535, not 0" in capsys.readouterr().err


def test_download_port_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = torrent_file(tmp_path)
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["download", str(path), "--bind", LOOPBACK, "--port", str(port), "--no-trackers"]
        # --dir: the DHT node ran before the listener failed, and saves its state there.
        assert main([*argv, "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bip: error:")
    assert str(port) in err


def test_seed_without_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = torrent_file(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["seed", str(path), str(empty), *LOCAL, "-q"]) == 1
    assert "no piece of 'album' found" in capsys.readouterr().err


def test_download_already_complete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Everything is on disk already: checked, complete, exit 0 with no peer at all.
    path, seed_dir = torrent_file(tmp_path)
    assert main(["download", str(path), "--dir", str(seed_dir), *LOCAL]) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "100.0%" in last
    assert "seeding" in last


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


async def test_download_then_seed(tmp_path: Path) -> None:
    path, seed_dir = torrent_file(tmp_path)
    torrent = make_torrent(seed_dir / "album", "hybrid")
    down = tmp_path / "down"
    host = "127.0.0.2"
    port = _free_port(host)
    argv = [*BIP, "download", str(path), "--dir", str(down), "--seed", "-q", "--no-trackers"]
    argv += ["--bind", host, "--port", str(port)]
    with trio.fail_after(DEADLINE):
        async with seeding_session(torrent, seed_dir) as seeder:
            argv += ["--peer", str(address_of(seeder))]
            process = await trio.lowlevel.open_process(argv)
            try:
                while good_pieces(torrent.info, down) != set(range(torrent.info.num_pieces)):
                    assert process.returncode is None
                    await trio.sleep(0.05)
            except BaseException:
                process.kill()
                raise
        # The first seed is gone: the only source left is bip download --seed.
        try:
            async with open_session(loopback_config(listen=(("127.0.0.3", 0),))) as leecher:
                download = await leecher.add_torrent(
                    torrent,
                    TorrentOptions(
                        tmp_path / "again", peers=(PeerAddress.parse(f"{host}:{port}"),)
                    ),
                )
                await download.wait_complete()
            assert process.poll() is None  # still seeding
        finally:
            process.send_signal(signal.SIGINT)
            exit_code = await process.wait()
    assert exit_code == 130
    assert same_files(seed_dir / "album", tmp_path / "again" / "album")


def test_bind_needs_an_address(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = torrent_file(tmp_path)
    assert main(["download", str(path), "--bind", "localhost", "--no-trackers"]) == 1
    assert "--bind takes an IP address" in capsys.readouterr().err
