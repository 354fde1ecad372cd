"""``--proxy`` falls back to the ``BIP_PROXY`` environment variable (a password given there
stays out of ``ps``), for ``bip download/seed`` and ``bip dht``."""

from __future__ import annotations

import argparse

import pytest
from _cli_helpers import assert_one_line_error
from _engine_helpers import LOOPBACK

from bip._arguments import PROXY_ENVIRONMENT, proxy_settings
from bip._cmd_download import add_session_arguments, config_from_args
from bip._errors import CLIError

HASH = "aa" * 20


def session_args(*options: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_session_arguments(parser)
    return parser.parse_args(["--bind", LOOPBACK, "--no-trackers", *options])


def test_the_environment_gives_the_proxy_when_the_option_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PROXY_ENVIRONMENT, "socks5h://me:secret@127.0.0.1:1080")
    assert config_from_args(session_args()).proxy == "socks5h://me:secret@127.0.0.1:1080"
    # The option wins over the environment.
    assert config_from_args(session_args("--proxy", "socks5://127.0.0.1:9")).proxy == (
        "socks5://127.0.0.1:9"
    )
    proxy = proxy_settings(argparse.Namespace(proxy=None))
    assert proxy is not None
    assert (proxy.host, proxy.port, proxy.remote_dns) == ("127.0.0.1", 1080, True)


@pytest.mark.parametrize("value", ["", None])
def test_an_empty_or_unset_environment_is_no_proxy(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv(PROXY_ENVIRONMENT, raising=False)
    else:
        monkeypatch.setenv(PROXY_ENVIRONMENT, value)
    assert config_from_args(session_args()).proxy is None
    assert proxy_settings(argparse.Namespace(proxy=None)) is None


def test_a_bad_environment_value_is_named_and_keeps_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PROXY_ENVIRONMENT, "socks5://me:secret@h:1/x")
    with pytest.raises(CLIError, match=f"^{PROXY_ENVIRONMENT}: ") as raised:
        config_from_args(session_args())
    assert "secret" not in str(raised.value)


def test_bip_dht_reads_the_environment_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(PROXY_ENVIRONMENT, "http://me:secret@x:1")
    argv = ["dht", "get-peers", HASH, "--bootstrap", "127.0.0.1:1"]
    err = assert_one_line_error(argv, PROXY_ENVIRONMENT, capsys)
    assert "secret" not in err
