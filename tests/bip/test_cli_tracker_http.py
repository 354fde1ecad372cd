"""``bip tracker announce|scrape`` against HTTP trackers: an in-process tracker on loopback, run
by trio in a thread of its own (the command under test runs trio in the main thread)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from _cli_helpers import assert_one_line_error
from _http_tracker_server import (
    MiniTracker,
    Server,
    answer,
    http_server_in_thread,
    query_of,
    query_pairs,
    reply,
    request_target,
)

from bip._cli import main
from bip._client import ClientConfig, TorrentOptions
from bip._cmd_download import _can_find_peers
from bip_metainfo import create_torrent

V1 = "ab" * 20


@pytest.fixture
def tracker() -> Iterator[Server]:
    """A small HTTP tracker (announces and BEP 48 scrapes) on 127.0.0.1."""
    with http_server_in_thread(MiniTracker()) as server:
        yield server


def _announce(url: str, target: str, *extra: str) -> list[str]:
    return ["tracker", "announce", url, target, "--bind", "127.0.0.1", *extra]


def test_announce_then_peers(tracker: Server, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_announce(tracker.url, V1, "--port", "7001", "--json")) == 0
    first = json.loads(capsys.readouterr().out)
    assert first == {
        "tracker": tracker.url,
        "info_hash": V1,
        "interval": 1800,
        "seeders": 1,  # no --left: a seeder
        "leechers": 0,
        "peers": [],
    }
    assert main(_announce(tracker.url, V1, "--port", "7002", "--left", "100")) == 0
    out = capsys.readouterr().out
    assert out == (
        f"tracker:   {tracker.url}\n"
        f"swarm:     {V1}\n"
        "interval:  1800 s\n"
        "seeders:   1\n"
        "leechers:  1\n"
        "peers (1):\n"
        "  127.0.0.1:7001\n"
    )
    second = query_of(tracker.requests[1])
    assert second["info_hash"] == bytes.fromhex(V1)
    assert (second["port"], second["left"], second["event"]) == (b"7002", b"100", b"started")


def test_announce_options_and_a_passkey(
    tracker: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    url = tracker.url + "?passkey=s3cret"
    argv = _announce(url, V1, "--event", "none", "--numwant", "7", "--uploaded", "5")
    argv += ["--downloaded", "6", "--peer-id", "2d" * 20]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"tracker:   {tracker.url}\n" in out  # shown without its query
    assert "s3cret" not in out
    [request] = tracker.requests
    assert request_target(request).startswith("/announce?passkey=s3cret&info_hash=")
    params = query_of(request)
    assert "event" not in params  # a regular announce
    assert (params["numwant"], params["uploaded"], params["downloaded"]) == (b"7", b"5", b"6")
    assert params["peer_id"] == b"-" * 20


def test_announce_paused(tracker: Server, capsys: pytest.CaptureFixture[str]) -> None:
    """BEP 21: ``--event paused`` is sent as ``event=paused``."""
    assert main(_announce(tracker.url, V1, "--event", "paused", "--left", "100")) == 0
    assert "interval:  1800 s" in capsys.readouterr().out
    [request] = tracker.requests
    assert (query_of(request)["event"], query_of(request)["left"]) == (b"paused", b"100")


def test_announce_torrent_and_scrape(
    tracker: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "f.bin").write_bytes(b"x" * 40_000)
    torrent = create_torrent(tmp_path / "f.bin")
    path = tmp_path / "f.torrent"
    path.write_bytes(torrent.to_bytes())
    v1 = torrent.info.info_hash.v1
    v2 = torrent.info.info_hash.v2
    assert v1 is not None
    assert v2 is not None
    assert main(_announce(tracker.url, str(path), "--json")) == 0
    assert json.loads(capsys.readouterr().out)["leechers"] == 1  # --left: the torrent's size
    assert main(_announce(tracker.url, str(path), "--v2", "--left", "0", "--json")) == 0
    assert json.loads(capsys.readouterr().out)["info_hash"] == v2[:20].hex()

    argv = ["tracker", "scrape", tracker.url, str(path), V1, "--bind", "127.0.0.1"]
    assert main(argv) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["info-hash", "seeders", "completed", "leechers"]
    assert table[1].split() == [v1.hex(), "0", "0", "1"]
    assert table[2].split() == [V1, "0", "0", "0"]  # a swarm the tracker leaves out: zeros
    assert request_target(tracker.requests[-1]).startswith("/scrape?info_hash=")

    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "tracker": tracker.url,
        "swarms": [
            {
                "info_hash": v1.hex(),
                "seeders": 0,
                "completed": 0,
                "leechers": 1,
                "downloaders": None,
            },
            {"info_hash": V1, "seeders": 0, "completed": 0, "leechers": 0, "downloaders": None},
        ],
    }


def test_scrape_many_in_batches(tracker: Server, capsys: pytest.CaptureFixture[str]) -> None:
    hashes = [f"{i:040x}" for i in range(1, 121)]
    assert main(["tracker", "scrape", tracker.url, *hashes, "--bind", "127.0.0.1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == hashes
    asked = [[value.hex() for _, value in query_pairs(request)] for request in tracker.requests]
    assert [len(batch) for batch in asked] == [50, 50, 20]
    assert [swarm for batch in asked for swarm in batch] == hashes


def test_the_trackers_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    refusal = reply(answer(failure_reason=b"unregistered torrent"))
    with http_server_in_thread(refusal) as server:
        assert_one_line_error(_announce(server.url, V1), "tracker: unregistered torrent", capsys)
        argv = ["tracker", "scrape", server.url, V1]
        assert_one_line_error(argv, "tracker: unregistered torrent", capsys)


def test_an_error_status_and_a_malformed_answer(capsys: pytest.CaptureFixture[str]) -> None:
    with http_server_in_thread(reply(b"gone", status="404 Not Found")) as server:
        assert_one_line_error(_announce(server.url, V1), "tracker: HTTP 404 Not Found", capsys)
    with http_server_in_thread(reply(b"<html>")) as server:
        assert_one_line_error(_announce(server.url, V1), "tracker: the tracker's answer", capsys)


def test_unreachable_and_silent_trackers(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/announce"
        assert_one_line_error(_announce(url, V1), "tracker: cannot connect to 127.0.0.1", capsys)

    async def silent(request: bytes, stream: trio.abc.Stream) -> None:
        await trio.sleep(30)  # the command gives up first; the server's stop cancels this

    with http_server_in_thread(silent) as server:
        url = server.url + "?passkey=s3cret"
        err = assert_one_line_error(_announce(url, V1, "--timeout", "0.3"), "no answer", capsys)
        assert err == f"bip: error: no answer from {server.url} within 0.3 s (is the tracker up?)\n"
        argv = ["tracker", "scrape", url, V1, "--timeout", "0.2"]
        err = assert_one_line_error(argv, "within 0.2 s", capsys)
        assert "s3cret" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["announce", "wss://127.0.0.1/announce", V1],
            "only udp://, http:// and https:// trackers are supported",
        ),
        (["announce", "ftp://127.0.0.1/announce", V1], "only udp://, http:// and https://"),
        (["announce", "http:///announce", V1], "tracker: no host in tracker URL"),
        (["announce", "http://u:p@127.0.0.1/announce", V1], "tracker: credentials (user"),
        (["announce", "http://127.0.0.1:0/announce", V1], "tracker: port 0 in tracker URL"),
        (["scrape", "http://127.0.0.1:1/tracker.php", V1], "has no scrape URL"),
    ],
)
def test_bad_input(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(["tracker", *argv], message, capsys)


@pytest.mark.parametrize(
    ("trackers", "extra", "expected"),
    [
        (["http://127.0.0.1:1/announce"], [], True),
        (["wss://127.0.0.1:1/announce"], ["HTTPS://127.0.0.1:1/announce"], True),
        (["udp://127.0.0.1:1/announce"], [], True),
        (["wss://127.0.0.1:1/announce", "ftp://127.0.0.1/a"], [], False),
    ],
)
def test_download_counts_http_trackers_as_a_way_to_find_peers(
    tmp_path: Path, trackers: list[str], extra: list[str], expected: bool
) -> None:
    (tmp_path / "f.bin").write_bytes(b"x" * 1000)
    torrent = create_torrent(tmp_path / "f.bin", trackers=trackers)
    options = TorrentOptions(tmp_path, extra_trackers=tuple(extra))
    assert _can_find_peers(torrent, options, ClientConfig()) is expected
    assert not _can_find_peers(torrent, options, ClientConfig(trackers=False))
