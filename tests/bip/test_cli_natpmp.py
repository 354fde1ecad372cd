"""``--natpmp-announce-address ADDR:PORT`` (or ``off``) of ``bip download`` and ``bip seed``:
parsing alone, no NAT-PMP traffic."""

from __future__ import annotations

import argparse

import pytest

from bip._arguments import ipv4_endpoint_or_off
from bip._cli import build_parser
from bip._cmd_download import add_session_arguments, config_from_args

OPTION = "--natpmp-announce-address"


def parse(command: str, *options: str) -> argparse.Namespace:
    return build_parser().parse_args([command, "x.torrent", "--no-trackers", *options])


@pytest.mark.parametrize("command", ["download", "seed"])
@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ((), "224.0.0.1:5350"),  # RFC 6886's group, ClientConfig's default
        ((OPTION, "off"), None),
        ((f"{OPTION}=OFF",), None),
        ((OPTION, "239.255.0.9:15350"), "239.255.0.9:15350"),
        ((OPTION, " 127.0.0.1:65535 "), "127.0.0.1:65535"),  # a unicast stand-in, for tests
        ((OPTION, "off", "--natpmp"), None),
    ],
)
def test_the_option_reaches_the_config(
    command: str, options: tuple[str, ...], expected: str | None
) -> None:
    config = config_from_args(parse(command, *options))
    assert config.natpmp_announce_address == expected
    assert config.natpmp is ("--natpmp" in options)  # the address alone turns nothing on


@pytest.mark.parametrize(
    "value",
    [
        "224.0.0.1",
        "224.0.0.1:",
        "224.0.0.1:0",
        "224.0.0.1:65536",
        "224.0.0.1:5350x",
        "224.0.0.1:٥٣٥٠",  # Arabic-Indic digits: int() would take them
        "all-hosts:5350",
        "[ff02::1]:5350",
        "ff02::1:5350",
        ":5350",
        "",
        "no",
    ],
)
def test_bad_values_are_usage_errors(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse("download", f"{OPTION}={value}")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {OPTION}" in err
    assert "IPv4 ADDRESS:PORT" in err


def test_the_type_gives_canonical_text() -> None:
    assert ipv4_endpoint_or_off("Off") is None
    assert ipv4_endpoint_or_off("10.0.0.1:0080") == "10.0.0.1:80"
    with pytest.raises(argparse.ArgumentTypeError):
        ipv4_endpoint_or_off("224.000.000.001:5350")  # leading zeros: ipaddress refuses them


def test_help_names_the_option_and_off() -> None:
    parser = argparse.ArgumentParser()
    add_session_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert f"{OPTION} ADDR:PORT" in text
    assert "'off': not listened for" in text
