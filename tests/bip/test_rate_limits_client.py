"""Rate limits in the client: ClientConfig's fields reach the peer manager, a running session
changes them, a limited download takes about the time the limit says, peers on loopback are
exempt unless ``limit_local_peers`` (``--limit-local``) is set, and the CLI's
``--upload-limit`` / ``--download-limit`` / ``--limit-local`` options.

The sessions all run on loopback, a local network: the tests of the limits' pace hold local
peers to them (``limit_local_peers=True``), as libtorrent needs its local peer class limited.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
import trio
from _engine_helpers import (
    LOOPBACK,
    address_of,
    loopback_config,
    make_torrent,
    same_files,
    seeder_and_leecher,
    write_content,
)

from bip._cli import build_parser
from bip._client import ClientConfig, TorrentOptions, open_session
from bip._cmd_download import add_session_arguments, config_from_args, parse_rate
from bip._errors import CLIError

DEADLINE = 30.0


def session_args(*options: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_session_arguments(parser)
    return parser.parse_args(["--bind", LOOPBACK, "--no-trackers", *options])


# ------------------------------------------------------------------------------ ClientConfig


def test_config_defaults_unlimited() -> None:
    config = ClientConfig()
    assert config.upload_rate_limit is None
    assert config.download_rate_limit is None
    assert config.limit_local_peers is False


@pytest.mark.parametrize("value", [0, 1, 1000, 2.5e6, None])
def test_config_accepts_rates(value: float | None) -> None:
    config = ClientConfig(upload_rate_limit=value, download_rate_limit=value)
    assert config.upload_rate_limit == value


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (-1, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (True, TypeError),
        ("100", TypeError),
    ],
)
def test_config_refuses_bad_rates(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="upload_rate_limit"):
        ClientConfig(upload_rate_limit=value)  # type: ignore[arg-type]
    with pytest.raises(error, match="download_rate_limit"):
        ClientConfig(download_rate_limit=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [1, "yes", None])
def test_config_refuses_a_limit_local_peers_not_bool(value: object) -> None:
    with pytest.raises(TypeError, match="limit_local_peers"):
        ClientConfig(limit_local_peers=value)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ the session


async def test_session_passes_limits_and_changes_them() -> None:
    config = loopback_config(upload_rate_limit=50_000, download_rate_limit=0)
    async with open_session(config) as session:
        assert session.manager.config.upload_rate_limit == 50_000
        assert tuple(session.rate_limits) == (50_000, None)
        session.set_rate_limits(download=1234)
        assert tuple(session.rate_limits) == (50_000, 1234)
        assert tuple(session.manager.rate_limits) == (50_000, 1234)
        session.set_rate_limits(upload=None)
        assert tuple(session.rate_limits) == (None, 1234)
        session.set_rate_limits(upload=7, download=0)
        assert tuple(session.rate_limits) == (7, None)
        session.set_rate_limits()
        assert tuple(session.rate_limits) == (7, None)
        statistics = session.manager.statistics()
        assert statistics.upload_limiter.rate == 7
        assert session.limit_local_peers is False
        session.set_rate_limits(limit_local_peers=True)
        assert session.manager.limit_local_peers is True
        assert tuple(session.rate_limits) == (7, None)


async def test_session_passes_limit_local_peers() -> None:
    async with open_session(loopback_config(limit_local_peers=True)) as session:
        assert session.manager.config.limit_local_peers is True
        assert session.limit_local_peers is True
        with pytest.raises(TypeError, match="limit_local_peers"):
            session.set_rate_limits(upload=5, limit_local_peers=1)  # type: ignore[arg-type]
        assert tuple(session.rate_limits) == (None, None)  # nothing changed
        session.set_rate_limits(limit_local_peers=False)
        assert session.limit_local_peers is False


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"upload": -1}, ValueError),
        ({"download": math.nan}, ValueError),
        ({"upload": "1"}, TypeError),
    ],
)
async def test_session_refuses_bad_limits_and_keeps_both(
    changes: dict[str, object], error: type[Exception]
) -> None:
    async with open_session(
        loopback_config(upload_rate_limit=10, download_rate_limit=20)
    ) as session:
        with pytest.raises(error):
            session.set_rate_limits(**changes)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="download"):
            session.set_rate_limits(upload=5, download=-5)
        assert tuple(session.rate_limits) == (10, 20)


async def _timed_download(tmp_path: Path, sizes: tuple[int, ...], **changes: object) -> float:
    """Seconds a loopback leecher takes to fetch ``sizes`` from a seeder (``changes`` to both
    sessions' configs); the files must come out whole."""
    folder = write_content(tmp_path / "seed", sizes)
    torrent = make_torrent(folder, "v1", piece_length=16384)
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder, utp=False, **changes) as (seeder, leecher):
            start = trio.current_time()
            download = await leecher.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", peers=(address_of(seeder),))
            )
            await download.wait_complete()
            elapsed = trio.current_time() - start
    assert same_files(folder, tmp_path / "down" / "album")
    return elapsed


async def test_limited_download_takes_the_expected_time(tmp_path: Path) -> None:
    """320 KiB at 160 KiB/s: about two seconds (real sockets: a generous lower bound, the
    bucket's burst and the handshake's own bytes allowed for; the upper bound is the deadline)."""
    rate = 160 * 1024
    elapsed = await _timed_download(
        tmp_path, (200 * 1024, 120 * 1024), download_rate_limit=rate, limit_local_peers=True
    )
    assert elapsed >= 1.4


async def test_limited_upload_takes_the_expected_time(tmp_path: Path) -> None:
    """The seeder's upload limit slows the leecher the same way; the leecher's limit is off."""
    folder = write_content(tmp_path / "seed", (256 * 1024,))
    torrent = make_torrent(folder, "v1", piece_length=16384)
    with trio.fail_after(DEADLINE):
        async with (
            open_session(
                loopback_config(utp=False, upload_rate_limit=128 * 1024, limit_local_peers=True)
            ) as seeder,
            open_session(loopback_config(utp=False)) as leecher,
        ):
            seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            start = trio.current_time()
            download = await leecher.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", peers=(address_of(seeder),))
            )
            await download.wait_complete()
            elapsed = trio.current_time() - start
    assert elapsed >= 1.4
    assert same_files(folder, tmp_path / "down" / "album")


async def test_limit_lifted_while_running(tmp_path: Path) -> None:
    """A download crawling at 1 KiB/s finishes at once when the limit is lifted."""
    folder = write_content(tmp_path / "seed", (256 * 1024,))
    torrent = make_torrent(folder, "v1", piece_length=16384)
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(
            torrent, folder, utp=False, download_rate_limit=1024, limit_local_peers=True
        ) as (seeder, leecher):
            download = await leecher.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", peers=(address_of(seeder),))
            )
            await trio.sleep(0.5)
            status = download.status()
            assert status.done < status.total
            leecher.set_rate_limits(download=None)
            with trio.fail_after(10):
                await download.wait_complete()
    assert same_files(folder, tmp_path / "down" / "album")


async def test_loopback_peers_are_exempt_by_default(tmp_path: Path) -> None:
    """Both sessions limited to 1 KiB/s both ways, loopback peers not held to it: 320 KiB,
    five minutes at the limit, come in within seconds."""
    elapsed = await _timed_download(
        tmp_path, (200 * 1024, 120 * 1024), upload_rate_limit=1024, download_rate_limit=1024
    )
    assert elapsed < 10


async def test_loopback_peers_exempted_while_running(tmp_path: Path) -> None:
    """A download crawling at 1 KiB/s with loopback peers held to it finishes at once when
    they are exempted, the limit staying on; the statistics count the exempt bytes."""
    folder = write_content(tmp_path / "seed", (256 * 1024,))
    torrent = make_torrent(folder, "v1", piece_length=16384)
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(
            torrent, folder, utp=False, download_rate_limit=1024, limit_local_peers=True
        ) as (seeder, leecher):
            download = await leecher.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", peers=(address_of(seeder),))
            )
            await trio.sleep(0.5)
            status = download.status()
            assert status.done < status.total
            assert leecher.manager.statistics().download_limiter.exempt == 0
            leecher.set_rate_limits(limit_local_peers=False)
            with trio.fail_after(10):
                await download.wait_complete()
            statistics = leecher.manager.statistics().download_limiter
    assert tuple(leecher.rate_limits) == (None, 1024)
    assert statistics.exempt >= 256 * 1024 - statistics.granted
    assert same_files(folder, tmp_path / "down" / "album")


# ------------------------------------------------------------------------------ the CLI


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("0", None),
        ("1000", 1000.0),
        ("500k", 500 * 1024.0),
        ("500K", 500 * 1024.0),
        ("2M", 2 * 1024.0**2),
        ("1.5MiB", 1.5 * 1024.0**2),
        ("64 KiB/s", 64 * 1024.0),
        ("1g/S", 1024.0**3),
        ("0k", None),
    ],
)
def test_parse_rate(text: str, rate: float | None) -> None:
    assert parse_rate(text, "--upload-limit") == rate


@pytest.mark.parametrize("text", ["", "-5", "fast", "1.3", "5 furlongs", "1e6", "/s", "nan"])
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(CLIError, match="--download-limit"):
        parse_rate(text, "--download-limit")


def test_cli_options_reach_the_config() -> None:
    config = config_from_args(session_args("--upload-limit", "500k", "--download-limit", "2M"))
    assert config.upload_rate_limit == 500 * 1024
    assert config.download_rate_limit == 2 * 1024 * 1024
    unlimited = config_from_args(session_args())
    assert (unlimited.upload_rate_limit, unlimited.download_rate_limit) == (None, None)
    zero = config_from_args(session_args("--upload-limit", "0"))
    assert zero.upload_rate_limit is None
    assert unlimited.limit_local_peers is False
    local = config_from_args(session_args("--download-limit", "1k", "--limit-local"))
    assert (local.download_rate_limit, local.limit_local_peers) == (1024, True)


@pytest.mark.parametrize(
    "words", [["download", "x.torrent"], ["seed", "x.torrent", "dir"]], ids=["download", "seed"]
)
def test_both_commands_take_limit_local(words: list[str]) -> None:
    args = build_parser().parse_args([*words, "--upload-limit", "2k", "--limit-local"])
    config = config_from_args(args)
    assert (config.upload_rate_limit, config.limit_local_peers) == (2048, True)


def test_limit_local_help_names_loopback() -> None:
    parser = argparse.ArgumentParser()
    add_session_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "--limit-local" in text
    assert "127.0.0.0/8" in text
    assert "libtorrent" in text


def test_cli_bad_rate_is_a_clean_error() -> None:
    with pytest.raises(CLIError, match=r"--upload-limit takes bytes per second.*not a size"):
        config_from_args(session_args("--upload-limit", "lots"))
