"""``bip tracker serve|announce|scrape`` against our tracker on loopback."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from _cli_helpers import assert_one_line_error

from bip._cli import main
from bip_metainfo import create_torrent
from bip_utracker import serve_tracker

V1 = "ab" * 20
V2 = "cd" * 32


@pytest.fixture
def tracker_url() -> Iterator[str]:
    """A bip_utracker server on 127.0.0.1, run by trio in a thread of its own (the command
    under test runs trio in the main thread)."""
    ready = threading.Event()
    stop = threading.Event()
    address: list[tuple[str, int]] = []

    async def serve() -> None:
        async with serve_tracker(("127.0.0.1", 0)) as server:
            address.append(server.address)
            ready.set()
            while not stop.is_set():
                await trio.sleep(0.01)

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    assert ready.wait(10)
    host, port = address[0]
    yield f"udp://{host}:{port}/announce"
    stop.set()
    thread.join(10)


@pytest.fixture
def silent_udp() -> Iterator[str]:
    """A UDP port that takes datagrams and never answers: an unreachable tracker."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"udp://127.0.0.1:{sock.getsockname()[1]}/announce"


def _announce(url: str, target: str, *extra: str) -> list[str]:
    return ["tracker", "announce", url, target, "--bind", "127.0.0.1", *extra]


def test_announce_then_peers(tracker_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_announce(tracker_url, V1, "--port", "7001", "--json")) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["peers"] == []
    assert (first["seeders"], first["leechers"]) == (1, 0)  # no --left: a seeder
    assert main(_announce(tracker_url, V1, "--port", "7002", "--left", "100")) == 0
    out = capsys.readouterr().out
    assert f"swarm:     {V1}" in out
    assert "seeders:   1" in out
    assert "leechers:  1" in out
    assert "peers (1):\n  127.0.0.1:7001" in out


def test_announce_torrent_and_scrape(
    tracker_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "f.bin").write_bytes(b"x" * 40_000)
    torrent = create_torrent(tmp_path / "f.bin")
    path = tmp_path / "f.torrent"
    path.write_bytes(torrent.to_bytes())
    v1 = torrent.info.info_hash.v1
    v2 = torrent.info.info_hash.v2
    assert v1 is not None
    assert v2 is not None
    # A torrent announces as a leecher with its size left; --v2 joins its v2 swarm.
    assert main(_announce(tracker_url, str(path))) == 0
    assert main(_announce(tracker_url, str(path), "--v2", "--event", "completed")) == 0
    capsys.readouterr()
    argv = ["tracker", "scrape", tracker_url, str(path), v2.hex(), V1, "--bind", "127.0.0.1"]
    assert main([*argv, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["swarms"]
    assert [row["info_hash"] for row in rows] == [v1.hex(), v2[:20].hex(), V1]
    assert (rows[0]["seeders"], rows[0]["leechers"]) == (0, 1)
    assert rows[1]["leechers"] == 1
    empty = {"info_hash": V1, "seeders": 0, "completed": 0, "leechers": 0, "downloaders": None}
    assert rows[2] == empty  # downloaders: null where the tracker gives none (BEP 15 never)
    assert main(argv) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["info-hash", "seeders", "completed", "leechers"]
    assert table[1].split() == [v1.hex(), "0", "0", "1"]


def test_scrape_many_in_batches(tracker_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    hashes = [f"{i:040x}" for i in range(1, 80)]  # more than BEP 15's 74 per scrape
    assert main(["tracker", "scrape", tracker_url, *hashes, "--bind", "127.0.0.1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 79


def test_unreachable_tracker_times_out(silent_udp: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_announce(silent_udp, V1, "--timeout", "0.3")) == 1
    err = capsys.readouterr().err
    assert err == f"bip: error: no answer from {silent_udp} within 0.3 s (is the tracker up?)\n"
    argv = ["tracker", "scrape", silent_udp, V1, "--timeout", "0.2", "--bind", "127.0.0.1"]
    assert main(argv) == 1
    assert "no answer" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["announce", "wss://127.0.0.1/announce", V1], "only udp://, http:// and https://"),
        (["announce", "udp://127.0.0.1/announce", V1], "tracker: a UDP tracker URL needs a port"),
        (["announce", "udp://127.0.0.1:1", "xyz"], "xyz: no such file"),
        (["announce", "udp://127.0.0.1:1", V1, "--peer-id", "zz"], "bad --peer-id"),
        (["announce", "udp://127.0.0.1:1", V1, "--v2"], "--v2 needs a torrent with a v2"),
        (
            ["announce", "udp://127.0.0.1:1", V1, "--event", "paused"],
            "--event paused is for HTTP(S) trackers: BEP 15 has no paused event",
        ),
        (["scrape", "udp://127.0.0.1:1", "magnet:?xt=urn:btih:12"], "bad magnet link"),
        (["serve", "--allow", "nothash", "--duration", "1"], "not an info-hash"),
        (["serve", "--bind", "127.0.0.1:99999", "--duration", "1"], "a port is in 0..65535"),
        (
            ["serve", "--max-peers", "2", "--max-peers-per-swarm", "5", "--duration", "1"],
            "--max-peers must be at least --max-peers-per-swarm",
        ),
    ],
)
def test_bad_input(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(["tracker", *argv], message, capsys)


def test_serve_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert main(["tracker", "serve", "--bind", f"127.0.0.1:{port}", "--duration", "5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"bip: error: tracker: cannot bind a UDP tracker to 127.0.0.1:{port}")
    assert "in use" in err
    assert err.count("\n") == 1


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_serve_for_a_while(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["tracker", "serve", "--bind", "127.0.0.1:0", "--bind", "[::1]:0"]
    assert main([*argv, "--duration", "0.25", "--stats-interval", "0.1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("serving udp://127.0.0.1:")
    assert out[1].startswith("serving udp://[::1]:")
    assert out[-1].startswith("final: swarms 0, peers 0")
    assert any(line.startswith("swarms 0") for line in out[2:-1])


def test_tracker_without_action_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tracker"]) == 2
    assert "serve" in capsys.readouterr().err
