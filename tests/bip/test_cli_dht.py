"""``bip dht``: the one-shot commands against a small DHT of in-process nodes on loopback, and
``bip dht serve`` as a real process stopped by SIGTERM."""

from __future__ import annotations

import hashlib
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from _cli_helpers import assert_one_line_error

from bip._cli import main
from bip._client import _resume
from bip._cmd_dht import _write_state, statistics_line
from bip_dht import DHTStatistics, NodeId, open_dht

TIMEOUT = 20.0
NETWORK_HOSTS = ("127.0.0.21", "127.0.0.22", "127.0.0.23")
CLIENT = "127.0.0.24"  # the commands' own nodes bind here


def _aliases() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((NETWORK_HOSTS[0], 0))
        except OSError:
            return False
    return True


pytestmark = pytest.mark.skipif(not _aliases(), reason="needs loopback aliases (127.0.0.X)")


@pytest.fixture
def network() -> Iterator[list[str]]:
    """Three DHT nodes joined together, run by trio on a thread; their ``host:port``."""
    ready = threading.Event()
    addresses: list[str] = []
    state: dict[str, object] = {}

    async def run() -> None:
        stop = trio.Event()
        state["stop"] = stop
        state["token"] = trio.lowlevel.current_trio_token()
        async with (
            open_dht((NETWORK_HOSTS[0], 0)) as a,
            open_dht((NETWORK_HOSTS[1], 0), [a.addresses[0]]) as b,
            open_dht((NETWORK_HOSTS[2], 0), [a.addresses[0]]) as c,
        ):
            with trio.fail_after(TIMEOUT):
                await b.bootstrap()
                await c.bootstrap()
            addresses.extend(str(node.addresses[0]) for node in (a, b, c))
            ready.set()
            with trio.fail_after(120):
                await stop.wait()

    thread = threading.Thread(target=trio.run, args=(run,), daemon=True)
    thread.start()
    assert ready.wait(TIMEOUT), "the DHT did not start"
    try:
        yield addresses
    finally:
        stop = state["stop"]
        assert isinstance(stop, trio.Event)
        trio.from_thread.run_sync(stop.set, trio_token=state["token"])  # type: ignore[arg-type]
        thread.join(TIMEOUT)


def _dht(network: list[str], *argv: str) -> list[str]:
    return [*argv, "--bind", CLIENT, "--bootstrap", network[0], "--timeout", str(TIMEOUT)]


def test_put_and_get_immutable(network: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dht", *_dht(network, "put", "hello, DHT")]) == 0
    out = capsys.readouterr().out
    target = hashlib.sha1(b"10:hello, DHT").hexdigest()  # SHA-1 of the bencoded value
    assert out.startswith(f"target {target}: stored at ")
    assert main(["dht", *_dht(network, "get", target)]) == 0
    assert capsys.readouterr().out == "hello, DHT\n"


def test_put_and_get_mutable(
    network: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "key"
    put = ["put", "version 1", "--key-file", str(key_file), "--salt", "room"]
    assert main(["dht", *_dht(network, *put)]) == 0
    captured = capsys.readouterr()
    assert "created key file" in captured.err
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_bytes()) == 32
    public = captured.out.split("(key ")[1].split(")")[0]
    # The same key again: the next version replaces the first (seq 1).
    put[1] = "version 2"
    assert main(["dht", *_dht(network, *put)]) == 0
    assert "created" not in capsys.readouterr().err
    assert main(["dht", *_dht(network, "get", "--key", public, "--salt", "room")]) == 0
    captured = capsys.readouterr()
    assert captured.out == "version 2\n"
    assert captured.err.startswith("seq 1, target ")
    # Without the salt it is another item, which nobody stored.
    assert main(["dht", *_dht(network, "get", "--key", public)]) == 1
    assert "nothing stored under key" in capsys.readouterr().err


def test_publish_then_resolve_a_mutable_torrent(
    network: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """BEP 46: each publish is a new version under the same link; resolve finds the newest."""
    key_file = str(tmp_path / "key")
    first, second = hashlib.sha1(b"v1").hexdigest(), hashlib.sha1(b"v2").hexdigest()
    publish = ["publish", first, "--key-file", key_file, "--salt", "nightly"]
    assert main(["dht", *_dht(network, *publish)]) == 0
    captured = capsys.readouterr()
    link = captured.out.strip()
    assert link.startswith("magnet:?xs=urn:btpk:")
    assert link.endswith(f"&s={b'nightly'.hex()}")
    assert f"{first} published: stored at " in captured.err
    assert main(["dht", *_dht(network, "resolve", link)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"magnet:?xt=urn:btih:{first}&xs=urn:btpk:")
    assert captured.err.startswith("version 0: ")
    publish[1] = second
    assert main(["dht", *_dht(network, *publish)]) == 0
    assert capsys.readouterr().out.strip() == link  # the link does not change
    assert main(["dht", *_dht(network, "resolve", link)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"magnet:?xt=urn:btih:{second}&")
    assert captured.err.startswith("version 1: ")
    # Another salt under the same key names nothing yet.
    other = link.replace(f"&s={b'nightly'.hex()}", "&s=00")
    assert main(["dht", *_dht(network, "resolve", other)]) == 1
    assert "no DHT node returned an item for key" in capsys.readouterr().err


def test_announce_then_get_peers(network: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    info_hash = hashlib.sha1(b"a torrent").hexdigest()
    assert main(["dht", *_dht(network, "announce", info_hash, "--port", "6999")]) == 0
    assert capsys.readouterr().out.startswith(f"announced {info_hash} on port 6999 to ")
    assert main(["dht", *_dht(network, "get-peers", info_hash)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{CLIENT}:6999\n"
    assert captured.err.startswith("1 peer (")


def test_state_replaces_bootstrap(
    network: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path / "dht.state")
    info_hash = hashlib.sha1(b"another").hexdigest()
    assert main(["dht", *_dht(network, "get-peers", info_hash), "--state", state]) == 0
    assert os.path.getsize(state) > 0
    # No --bootstrap: the nodes saved in the state are enough.
    argv = ["dht", "get-peers", info_hash, "--bind", CLIENT, "--state", state]
    assert main([*argv, "--timeout", str(TIMEOUT)]) == 0
    assert capsys.readouterr().err.startswith("0 peers (")


def test_state_is_written_durably(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The state is synced before its rename and its directory after (as resume files are):
    a power cut leaves the old state or the new one, never an empty file under the name."""
    synced: list[int] = []
    monkeypatch.setattr(_resume, "_fsync", synced.append)
    path = tmp_path / "dht.state"
    path.write_bytes(b"old")
    _write_state(str(path), b"new")
    assert path.read_bytes() == b"new"
    assert len(synced) == 2  # the temporary file, then the directory
    assert not (tmp_path / "dht.state.tmp").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["get-peers", "ab" * 20, "--bind", CLIENT], "no DHT node to start from"),
        (["get-peers", "not-a-hash", "--bind", CLIENT, "--bootstrap", "127.0.0.1:1"], "no such"),
        (["get", "abcd", "--bootstrap", "127.0.0.1:1"], "a target is 40 hex digits"),
        (["get", "--key", "00" * 32, "--salt", "x" * 65, "--bootstrap", "h:1"], "salt is at most"),
        (["put", "v", "--salt", "s", "--bootstrap", "127.0.0.1:1"], "--salt goes with --key-file"),
        (["announce", "ab" * 20, "--port", "0", "--bootstrap", "h:1"], "--port is in 1..65535"),
        (["get-peers", "ab" * 20, "--bootstrap", "nonsense"], "missing port"),
        (["get-peers", "ab" * 20, "--bootstrap", "127.0.0.1:0"], "a port is in 1..65535"),
        (["resolve", "magnet:?xt=urn:btih:" + "ab" * 20, "--bootstrap", "h:1"], "not a BEP 46"),
        (["resolve", "magnet:?xs=urn:btpk:abcd", "--bootstrap", "h:1"], "64 hex digits"),
    ],
)
def test_errors_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_one_line_error(["dht", *argv], message, capsys)


def test_unreachable_bootstrap_times_out(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((NETWORK_HOSTS[0], 0))  # bound, never read: queries go unanswered
        host, port = silent.getsockname()
        argv = ["get-peers", "ab" * 20, "--bind", CLIENT, "--bootstrap", f"{host}:{port}"]
        assert main(["dht", *argv, "--timeout", "0.5"]) == 1
    assert "no answer within 0.5 s" in capsys.readouterr().err


def test_bad_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "key"
    key_file.write_bytes(b"short")
    argv = ["put", "v", "--key-file", str(key_file), "--bootstrap", "127.0.0.1:1"]
    assert main(["dht", *argv]) == 1
    assert "not an ed25519 key file" in capsys.readouterr().err


def test_statistics_line_shows_oversized_replies() -> None:
    stats = DHTStatistics(node_id=NodeId(bytes(20)), rate_limited=2, oversized_dropped=3)
    line = statistics_line(stats)
    assert "rate-limited 2" in line
    assert "oversized replies dropped 3" in line


def test_serve_as_a_process_stops_on_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "serve.state"
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "bip", "dht", "serve", "--bind", f"{CLIENT}:0"),
            *("--state", str(state), "--stats-interval", "0.2"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], TIMEOUT)
        assert ready, "no output from bip dht serve"
        first = process.stdout.readline()
        assert first.startswith("DHT node ")
        assert f" on {CLIENT}:" in first
        assert process.stdout.readline().startswith("no bootstrap node")
        assert process.stdout.readline().startswith("nodes 0 (0 good); queries received 0")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "stopping on SIGTERM" in err
    assert "final: nodes 0" in out
    assert state.stat().st_size > 0  # saved on exit
