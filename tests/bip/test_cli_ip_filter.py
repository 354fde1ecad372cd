"""``--ip-filter FILE`` and ``--ip-filter-strict`` of ``bip download`` and ``bip seed``."""

from __future__ import annotations

import argparse
import gzip
import logging
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from _cli_helpers import assert_one_line_error
from _engine_helpers import make_torrent, write_content

from bip._arguments import MAX_IP_FILTER_FILE, load_ip_filter
from bip._cli import build_parser
from bip._cmd_download import add_session_arguments, config_from_args
from bip._errors import CLIError
from bip_handshake import IPFilter, IPRange

P2P = "# level1-like\nBad Org:001.002.003.000-1.2.3.255\nOther, Inc:5.6.7.8-5.6.7.8\n"
DAT = "010.000.000.000 - 010.255.255.255 , 000 , private\n11.0.0.0 - 11.0.0.9 , 200 , ok\n"
CIDR = "192.0.2.0/24 ; SBL1\n2001:db8::/32\n"


def session_args(*options: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_session_arguments(parser)
    return parser.parse_args(["--no-trackers", *options])


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_no_option_no_filter() -> None:
    assert config_from_args(session_args()).ip_filter is None


def test_files_of_every_format_are_combined(tmp_path: Path) -> None:
    args = session_args(
        "--ip-filter",
        write(tmp_path, "a.p2p", P2P),
        "--ip-filter",
        write(tmp_path, "b.dat", DAT),
        "--ip-filter",
        write(tmp_path, "c.txt", CIDR),
    )
    ip_filter = config_from_args(args).ip_filter
    assert ip_filter is not None
    for host in ("1.2.3.4", "5.6.7.8", "10.9.8.7", "192.0.2.200", "2001:db8:1::1"):
        assert ip_filter.blocks(host), host
    for host in ("1.2.4.0", "11.0.0.5", "192.0.3.1", "2001:db9::1"):
        assert not ip_filter.blocks(host), host


def test_gzipped_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "list.p2p.gz"
    path.write_bytes(gzip.compress(P2P.encode()))
    ip_filter = load_ip_filter([str(path)], strict=True)
    assert ip_filter == IPFilter.blocking(
        [
            IPRange(IPv4Address("1.2.3.0"), IPv4Address("1.2.3.255")),
            IPRange(IPv4Address("5.6.7.8"), IPv4Address("5.6.7.8")),
        ]
    )


def test_lenient_by_default_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    messy = tmp_path / "messy.txt"
    messy.write_bytes(P2P.encode() + b"junk line\n\xff\xfe not utf-8 either\n1.2.3\n")
    path = str(messy)
    with caplog.at_level(logging.WARNING, logger="bip"):
        ip_filter = config_from_args(session_args("--ip-filter", path)).ip_filter
    assert ip_filter is not None
    assert ip_filter.blocks("1.2.3.4")
    [warning] = [record.getMessage() for record in caplog.records]
    assert path in warning
    assert "skipped 3 malformed line(s)" in warning
    assert "line 4" in warning
    assert "--ip-filter-strict" in warning


def test_strict_refuses_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "messy.txt", P2P + "junk line\n")
    with pytest.raises(CLIError, match=r"messy\.txt: line 4: "):
        config_from_args(session_args("--ip-filter", path, "--ip-filter-strict"))


def test_an_empty_list_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bip"):
        ip_filter = load_ip_filter([write(tmp_path, "empty", "# nothing\n")], strict=False)
    assert ip_filter == IPFilter()
    assert "blocks nothing" in caplog.text


def test_unreadable_and_oversized_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CLIError, match="cannot read"):
        load_ip_filter([str(tmp_path / "missing")], strict=False)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(b"1.2.3.4\n" * 100)[:30])
    with pytest.raises(CLIError, match=r"broken\.gz: cannot read"):
        load_ip_filter([str(broken)], strict=False)
    monkeypatch.setattr("bip._arguments.MAX_IP_FILTER_FILE", 10)
    with pytest.raises(CLIError, match="larger than 10 bytes"):
        load_ip_filter([write(tmp_path, "big", "1.2.3.4\n5.6.7.8\n")], strict=False)
    assert MAX_IP_FILTER_FILE >= 64 * 1024 * 1024


def test_download_with_a_bad_file_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "bad.p2p", "fine:1.2.3.4-1.2.3.5\nbroken:1.2.3.9-1.2.3.4\n")
    err = assert_one_line_error(
        ["download", "x.torrent", "--ip-filter", path, "--ip-filter-strict"],
        f"--ip-filter {path}: line 2: a range starts before it ends",
        capsys,
    )
    assert "Traceback" not in err


def test_seed_with_a_bad_file_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_content(tmp_path / "data", (1000,))
    torrent = tmp_path / "t.torrent"
    torrent.write_bytes(make_torrent(folder, "v1").to_bytes())
    path = write(tmp_path, "bad.txt", "10.0.0.0/40\n")
    assert_one_line_error(
        [
            "seed",
            str(torrent),
            str(folder.parent),
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--no-trackers",
            "--no-dht",
            "--ip-filter",
            path,
            "--ip-filter-strict",
        ],
        f"--ip-filter {path}: line 1: not a prefix length",
        capsys,
    )


@pytest.mark.parametrize(
    "words", [["download", "x.torrent"], ["seed", "x.torrent", "dir"]], ids=["download", "seed"]
)
def test_both_commands_take_the_options(words: list[str], tmp_path: Path) -> None:
    path = write(tmp_path, "list", CIDR)
    args = build_parser().parse_args([*words, "--ip-filter", path, "--ip-filter-strict"])
    assert (args.ip_filter, args.ip_filter_strict) == ([path], True)
    ip_filter = config_from_args(args).ip_filter
    assert ip_filter is not None
    assert ip_filter.blocks("192.0.2.1")


def test_help_names_the_formats_and_modes() -> None:
    parser = argparse.ArgumentParser()
    add_session_arguments(parser)
    text = " ".join(parser.format_help().split())
    for words in ("--ip-filter FILE", "--ip-filter-strict", "P2P", "ipfilter.dat", "CIDR"):
        assert words in text
    assert "skipped with a warning" in text
    assert "trackers and web seeds are not filtered" in text
