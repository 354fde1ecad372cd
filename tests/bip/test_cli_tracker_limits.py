"""``bip tracker serve --max-peers-per-host``: one IP address keeps at most N ports in a swarm,
further ones are answered but not recorded and counted in the statistics; bad values refused."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest
import trio

from bip._cli import build_parser, main
from bip._cmd_tracker import _store
from bip_utracker import DEFAULT_MAX_PEERS_PER_HOST, open_tracker_client

BIP = [sys.executable, "-m", "bip"]
DEADLINE = 30.0
SWARM = bytes.fromhex("ab" * 20)


def _serve_args(*extra: str) -> list[str]:
    return ["tracker", "serve", "--bind", "127.0.0.1:0", *extra]


async def _read_until(stream: trio.abc.ReceiveStream, pattern: bytes, said: bytes) -> bytes:
    """Read ``stream`` until ``pattern`` is in what was said; return all of it."""
    while re.search(pattern, said) is None:
        chunk = await stream.receive_some()
        assert chunk, said.decode()
        said += chunk
    return said


async def test_a_host_keeps_at_most_n_ports_in_a_swarm() -> None:
    argv = [*BIP, *_serve_args("--max-peers-per-host", "2", "--no-rate-limit")]
    argv += ["--stats-interval", "0.2", "--duration", str(DEADLINE)]
    process = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        with trio.fail_after(DEADLINE):
            said = await _read_until(process.stdout, rb"serving (udp://\S+)\n", b"")
            url = re.search(rb"serving (udp://\S+)\n", said)
            assert url is not None
            async with open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as client:
                answers = [
                    await client.announce(
                        url.group(1).decode(), SWARM, peer_id=bytes([n]) * 20, port=port, left=1
                    )
                    for n, port in enumerate((7001, 7002, 7003), start=1)
                ]
                scraped = await client.scrape(url.group(1).decode(), [SWARM])
            # The third port was answered (with the two recorded) but not recorded.
            assert [answer.leechers for answer in answers] == [1, 2, 2]
            assert {str(peer) for peer in answers[2].peers} == {"127.0.0.1:7001", "127.0.0.1:7002"}
            assert scraped.stats(SWARM).leechers == 2
            said = await _read_until(process.stdout, rb"over the per-host bound 1\n", said)
            assert b"peers 2 (0 seeders, 2 leechers)" in said
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(DEADLINE):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0


def test_the_flag_reaches_the_store() -> None:
    args = build_parser().parse_args(_serve_args("--max-peers-per-host", "5"))
    store = _store(args)  # the command's own store, which the server answers from
    # The store answers a sixth port of one host without recording it.
    for port in range(7001, 7007):
        compact = bytes([127, 0, 0, 1]) + port.to_bytes(2, "big")
        store.announce_compact(SWARM, compact, 1, 0, 50, 0.0)
    stats = store.statistics()
    assert (stats.peers, stats.unrecorded_peers) == (5, 1)


def test_the_default_is_the_stores() -> None:
    args = build_parser().parse_args(_serve_args())
    assert args.max_peers_per_host is None
    store = _store(args)
    for port in range(7001, 7002 + DEFAULT_MAX_PEERS_PER_HOST):
        compact = bytes([127, 0, 0, 1]) + port.to_bytes(2, "big")
        store.announce_compact(SWARM, compact, 1, 0, 50, 0.0)
    stats = store.statistics()
    assert (stats.peers, stats.unrecorded_peers) == (DEFAULT_MAX_PEERS_PER_HOST, 1)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be positive, not '0'"),
        ("-3", "must be positive, not '-3'"),
        ("two", "not a number: 'two'"),
        ("2.5", "not a number: '2.5'"),
    ],
)
def test_bad_values_are_refused(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*_serve_args("--max-peers-per-host", value), "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert f"argument --max-peers-per-host: {message}" in err


def test_help_names_the_flag_and_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tracker", "serve", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--max-peers-per-host N" in out
    assert f"not recorded (default {DEFAULT_MAX_PEERS_PER_HOST})" in out
