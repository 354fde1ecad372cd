"""The tutorial's program, docs/tutorial/one_file_client.py, downloads from a loopback seeder.

The program runs as a subprocess, the way a reader runs it; the seeder is bip's reference
engine (``bip._client``) in this process, with a bip_utracker tracker and bip_dht nodes on
127.0.0.1. Peers reach the program from the tracker only, from the DHT only, or from
``--peer`` only, for v1, v2 and hybrid torrents; and it fails in one line when it cannot
finish. tests/interop/test_tutorial_libtorrent.py downloads from libtorrent.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Literal

import pytest
import trio

from bip._client import ClientConfig, Session, Torrent, TorrentOptions, open_session
from bip_dht import open_dht
from bip_metainfo import Metainfo, create_torrent
from bip_utracker import serve_tracker

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = ROOT / "docs" / "tutorial" / "one_file_client.py"
LOOPBACK = "127.0.0.1"
SIZES = (1_500_000, 300_000, 40_000)  # three files: a multi-file torrent, the last piece short
DEADLINE = 60.0  # seconds a case may take at most, seeder and program together

Version = Literal["v1", "v2", "hybrid"]


def write_content(root: Path) -> Path:
    """``root/album``: one file of random bytes per size, one of them in a subfolder."""
    rng = random.Random(11)
    folder = root / "album"
    for index, size in enumerate(SIZES):
        path = folder / ("sub" if index % 2 else "") / f"f{index}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
    return folder


def files(root: Path) -> dict[Path, bytes]:
    """Every file under ``root`` and its bytes."""
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def make_torrent(tmp_path: Path, version: Version, trackers: Sequence[str] = ()) -> Path:
    """A torrent of :func:`write_content`'s folder (under ``tmp_path/seed``), saved; its path."""
    folder = write_content(tmp_path / "seed")
    torrent = create_torrent(
        folder,
        version=version,
        piece_length=65536,
        trackers=[[url] for url in trackers],
        creation_date=None,
    )
    path = tmp_path / "album.torrent"
    path.write_bytes(torrent.to_bytes())
    return path


@contextlib.asynccontextmanager
async def seeding(
    torrent_path: Path, *, extra_trackers: Sequence[str] = (), dht_bootstrap: str | None = None
) -> AsyncIterator[tuple[Session, Torrent]]:
    """The engine seeding the torrent from its folder: announced to its trackers and
    ``extra_trackers``, and in a DHT joined through ``dht_bootstrap``."""
    config = ClientConfig(listen=((LOOPBACK, 0),), dht_interval=0.5, seed_rng=1)
    options = TorrentOptions(
        torrent_path.parent / "seed", resume=False, extra_trackers=tuple(extra_trackers)
    )
    async with contextlib.AsyncExitStack() as stack:
        dht = None
        if dht_bootstrap is not None:
            dht = await stack.enter_async_context(open_dht(LOOPBACK, [dht_bootstrap]))
            await dht.bootstrap()
        session = await stack.enter_async_context(open_session(config, dht=dht))
        torrent = await session.add_torrent(Metainfo.from_file(torrent_path), options)
        await torrent.wait_complete()  # checked: every piece is there
        yield session, torrent


async def run_program(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    """``python docs/tutorial/one_file_client.py ARGS``, as a reader runs it."""
    return await trio.run_process(
        [sys.executable, PROGRAM, *args], capture_stdout=True, capture_stderr=True, check=False
    )


def assert_downloaded(tmp_path: Path, result: subprocess.CompletedProcess[bytes]) -> None:
    """Exit 0, and the bytes under ``down`` are the seeded ones."""
    assert result.returncode == 0, result.stderr.decode()
    assert b"is complete in" in result.stdout
    assert files(tmp_path / "down") == files(tmp_path / "seed")


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_peers_from_the_tracker_only(tmp_path: Path, version: Version) -> None:
    """The torrent names the tracker (no --tracker): the program announces there, finds the
    seeder, downloads, and exits 0; run again over its own download, it checks the data and
    exits 0 at once, with no peer at all."""
    with trio.fail_after(DEADLINE):
        async with serve_tracker((LOOPBACK, 0)) as tracker:
            url = f"udp://{LOOPBACK}:{tracker.address[1]}/announce"
            torrent = make_torrent(tmp_path, version, trackers=[url])
            async with seeding(torrent):
                result = await run_program(torrent, tmp_path / "down", "--timeout", "30")
                assert_downloaded(tmp_path, result)
        again = await run_program(torrent, tmp_path / "down", "--timeout", "10")
    assert_downloaded(tmp_path, again)


async def test_peers_from_the_dht_only(tmp_path: Path) -> None:
    """A hybrid torrent without trackers: the seeder announces itself in a two-node DHT, the
    program bootstraps from the other node (--dht), looks the torrent up and downloads."""
    torrent = make_torrent(tmp_path, "hybrid")
    with trio.fail_after(DEADLINE):
        async with open_dht(LOOPBACK, rng=random.Random(2)) as router:
            [router_address] = router.addresses
            async with seeding(torrent, dht_bootstrap=str(router_address)):
                while router.statistics().peers == 0:  # the seeder's announce is stored
                    await trio.sleep(0.05)
                result = await run_program(
                    torrent, tmp_path / "down", "--dht", str(router_address), "--timeout", "30"
                )
    assert_downloaded(tmp_path, result)


async def test_peers_from_the_command_line_and_a_named_tracker(tmp_path: Path) -> None:
    """A hybrid torrent: --peer names the seeder, and --tracker a tracker the torrent does not
    name (the seeder announces there too): both lead to the one seeder."""
    torrent = make_torrent(tmp_path, "hybrid")
    with trio.fail_after(DEADLINE):
        async with serve_tracker((LOOPBACK, 0)) as tracker:
            url = f"udp://{LOOPBACK}:{tracker.address[1]}/announce"
            async with seeding(torrent, extra_trackers=[url]) as (session, _):
                [address] = session.handshaker.listen_addresses
                down = tmp_path / "down"
                result = await run_program(
                    torrent, down, "--peer", str(address), "--tracker", url, "--timeout", "30"
                )
    assert_downloaded(tmp_path, result)


async def test_no_peers_times_out_in_one_line(tmp_path: Path) -> None:
    """Nobody to download from: exit 1 after --timeout, with one line saying how far it got."""
    torrent = make_torrent(tmp_path, "v1")
    with trio.fail_after(DEADLINE):
        result = await run_program(torrent, tmp_path / "down", "--timeout", "0.5")
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert lines == ["one_file_client: timed out after 0.5 s with 0 of 29 pieces from 0 peers"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No such file or directory"),
        (b"d4:infoi1ee", "info"),
    ],
    ids=["missing", "malformed"],
)
async def test_bad_torrent_fails_in_one_line(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    """A torrent file that is missing or malformed: exit 1, one line, no traceback."""
    path = tmp_path / "bad.torrent"
    if content is not None:
        path.write_bytes(content)
    with trio.fail_after(DEADLINE):
        result = await run_program(path, tmp_path / "down")
    assert result.returncode == 1
    [line] = result.stderr.decode().splitlines()
    assert line.startswith("one_file_client: ")
    assert message in line


async def test_storage_fault_fails_in_one_line(tmp_path: Path) -> None:
    """DEST is a file, so no block can be stored: exit 1 with the disk's reason, in one line."""
    torrent = make_torrent(tmp_path, "v1")
    dest = tmp_path / "down"
    dest.write_bytes(b"not a folder")
    with trio.fail_after(DEADLINE):
        async with seeding(torrent) as (session, _):
            [address] = session.handshaker.listen_addresses
            result = await run_program(torrent, dest, "--peer", str(address), "--timeout", "30")
    assert result.returncode == 1
    [line] = result.stderr.decode().splitlines()
    assert line.startswith("one_file_client: storage: ")


async def test_two_seeders_end_game(tmp_path: Path) -> None:
    """Two seeders named with --peer: blocks come from both, and in end-game the last ones are
    asked of both and the copies cancelled, whichever answers first."""
    torrent = make_torrent(tmp_path, "v1")
    with trio.fail_after(DEADLINE):
        async with seeding(torrent) as (one, _), seeding(torrent) as (two, _):
            peers = [str(s.handshaker.listen_addresses[0]) for s in (one, two)]
            result = await run_program(
                torrent, tmp_path / "down", "--peer", peers[0], "--peer", peers[1]
            )
    assert_downloaded(tmp_path, result)
