"""``bip download`` and ``bip seed`` take ``--bind`` more than once: the session listens on
each address, on ``--port`` each (``ClientConfig.listen`` gets one entry per ``--bind``), so
that ``--bind 10.8.0.2 --bind fd00::2`` dials each peer from the address of its family; the
DHT node binds the first of each family (through a proxy, the one of the proxy's family). One
``--bind`` (or none) gives the one entry it always gave.

Loopback only: 127.0.0.2 is seen as itself by a listener on 127.0.0.1; ``::1`` is the one
IPv6 loopback address (the session tests skip without it)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import trio
from tests._loopbacks import OTHER_LOOPBACK, recording_listener, require_loopbacks, wait_until
from tests._socks_server import serve_socks5

from bip._cmd_download import (
    add_session_arguments,
    config_from_args,
    open_dht_node,
    open_session_with_dht,
)
from bip._errors import CLIError

DEADLINE = 10.0


def parser() -> argparse.ArgumentParser:
    made = argparse.ArgumentParser()
    add_session_arguments(made)
    return made


def session_args(*options: str) -> argparse.Namespace:
    """``bip download``'s session options; no trackers, nothing heard from a NAT gateway."""
    return parser().parse_args(
        ["--no-trackers", "--natpmp-announce-address", "off", "--port", "0", *options]
    )


# -- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("binds", "listen"),
    [
        ((), (("0.0.0.0", 7000),)),
        (("127.0.0.2",), (("127.0.0.2", 7000),)),
        (("::",), (("::", 7000),)),
        (("[::1]:9",), (("::1", 7000),)),  # a port given with it is --port's, as before
        (("10.8.0.2", "fd00::2"), (("10.8.0.2", 7000), ("fd00::2", 7000))),
        (
            ("fd00::2", "10.8.0.2", "10.8.0.3"),
            (("fd00::2", 7000), ("10.8.0.2", 7000), ("10.8.0.3", 7000)),
        ),
        (("0.0.0.0", "::"), (("0.0.0.0", 7000), ("::", 7000))),
    ],
    ids=["none", "one", "any-ipv6", "with-port", "one-of-each", "three", "every-address"],
)
def test_each_bind_is_a_listen_address_on_the_port(
    binds: tuple[str, ...], listen: tuple[tuple[str, int], ...]
) -> None:
    argv = ["--port", "7000"] + [arg for host in binds for arg in ("--bind", host)]
    assert config_from_args(parser().parse_args(argv)).listen == listen


@pytest.mark.parametrize(
    ("binds", "message"),
    [
        (("127.0.0.1", "localhost"), "--bind takes an IP address (127.0.0.1, ::), not 'localhost'"),
        (("10.8.0.2", "fd00::2", "10.8.0.2:99"), "--bind 10.8.0.2 is given twice"),
        (("::1", "[0:0::1]"), "--bind 0:0::1 is given twice"),
    ],
    ids=["a-name", "twice", "twice-written-otherwise"],
)
def test_a_bad_or_repeated_bind_is_refused(binds: tuple[str, ...], message: str) -> None:
    argv = [arg for host in binds for arg in ("--bind", host)]
    with pytest.raises(CLIError) as raised:
        config_from_args(parser().parse_args(argv))
    assert str(raised.value) == message


def test_the_help_says_bind_may_be_repeated() -> None:
    text = " ".join(parser().format_help().split())
    assert "--bind 10.8.0.2 --bind fd00::2" in text


# -- a session -------------------------------------------------------------------------


async def test_a_session_bound_twice_listens_on_both_and_dials_from_each(
    tmp_path: Path,
) -> None:
    require_loopbacks(OTHER_LOOPBACK, "::1")
    args = session_args("--bind", OTHER_LOOPBACK, "--bind", "::1")
    with trio.fail_after(DEADLINE):
        async with (
            recording_listener("127.0.0.1") as (peer4, seen4),
            recording_listener("::1") as (peer6, seen6),
            open_session_with_dht(args, config_from_args(args), tmp_path) as session,
        ):
            listening = session.handshaker.listen_addresses
            assert sorted(str(address.host) for address in listening) == ["127.0.0.2", "::1"]
            assert session.dht is not None
            assert sorted(str(address.host) for address in session.dht.addresses) == [
                "127.0.0.2",
                "::1",
            ]
            dialer = session.dialer
            assert dialer is not None
            for peer in (peer4, peer6):
                stream = await dialer(peer)
                await stream.aclose()
            await wait_until(lambda: seen4 and seen6)
    assert seen4 == [OTHER_LOOPBACK]
    assert seen6 == ["::1"]


@pytest.mark.parametrize(
    "order", [(OTHER_LOOPBACK, "::1"), ("::1", OTHER_LOOPBACK)], ids=["v4-first", "v6-first"]
)
async def test_a_proxied_dht_binds_the_address_of_the_proxys_family(
    tmp_path: Path, order: tuple[str, str]
) -> None:
    # Through an IPv4 proxy the DHT's one socket (its relay's) is on 127.0.0.2, whichever
    # --bind comes first: an IPv6 one would never reach the proxy.
    require_loopbacks(OTHER_LOOPBACK, "::1")
    with trio.fail_after(DEADLINE):
        async with serve_socks5() as proxy:
            args = session_args("--bind", order[0], "--bind", order[1], "--proxy", proxy.url())
            async with open_dht_node(args, config_from_args(args), tmp_path) as (dht, router):
                assert dht is not None
                assert router is None
                assert [str(address.host) for address in dht.addresses] == [OTHER_LOOPBACK]
