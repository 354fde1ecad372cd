"""An IPv4-mapped local address (``::ffff:a.b.c.d``) is IPv4 everywhere a session or a command
takes one, as :func:`~bip_handshake.local_addresses_by_family` reads it for the dialers and
the HTTP clients: a mapped ``tracker_bind`` is the UDP tracker client's IPv4 socket (before,
its IPv6 one: the bind failed with EINVAL, an IPv6 socket being IPv6-only, and the session
did not start: a bare ExceptionGroup of OSError 22), and ``bip tracker --bind`` too (before,
anything with a colon went to the IPv6 socket). A mapped listen host is refused with the
IPv4 address to give (before, the IPv6 listener failed with EINVAL at start)."""

from __future__ import annotations

import random

import pytest
import trio
from _engine_helpers import loopback_config
from tests._loopbacks import OTHER_LOOPBACK, require_loopbacks

from bip._cli import main
from bip._client import ClientConfig, open_session
from bip._client._session import _http_local_address, _tracker_binds
from bip._cmd_download import _bind_hosts
from bip._cmd_tracker import _client_binds
from bip._errors import CLIError
from bip_utracker import SwarmStore, serve_tracker

DEADLINE = 10.0
HASH = bytes(range(20))


@pytest.mark.parametrize(
    ("tracker_bind", "binds", "http"),
    [
        ("::ffff:10.8.0.2", ("10.8.0.2", None), ("10.8.0.2",)),
        ("::ffff:0.0.0.0", ("0.0.0.0", "::"), None),  # unspecified IPv4: as 0.0.0.0
        ("10.8.0.2", ("10.8.0.2", None), ("10.8.0.2",)),
    ],
)
def test_a_mapped_tracker_bind_is_the_ipv4_socket(
    tracker_bind: str, binds: tuple[str | None, str | None], http: tuple[str, ...] | None
) -> None:
    config = ClientConfig(listen=(("fd00::2", 0),), tracker_bind=tracker_bind)
    assert _tracker_binds(config) == binds
    assert _http_local_address(config) == http


async def test_a_session_with_a_mapped_tracker_bind_announces_from_the_ipv4_address() -> None:
    require_loopbacks(OTHER_LOOPBACK)
    config = loopback_config(trackers=True, tracker_bind=f"::ffff:{OTHER_LOOPBACK}")
    store = SwarmStore(rng=random.Random(1))
    with trio.fail_after(DEADLINE):
        async with (
            serve_tracker(("127.0.0.1", 0), handler=store) as tracker,
            open_session(config) as session,
        ):
            trackers = session.trackers
            assert trackers is not None
            assert [str(a.host) for a in trackers.local_addresses] == [OTHER_LOOPBACK]
            host, port = tracker.address[:2]
            result = await trackers.announce((host, port), HASH, peer_id=b"p" * 20, port=7)
            assert result.tracker.port == port
    assert [str(peer.host) for peer in store.peers(HASH)] == [OTHER_LOOPBACK]


@pytest.mark.parametrize(
    ("bind", "binds"),
    [
        (None, ("0.0.0.0", "::")),
        ("::ffff:127.0.0.1", ("127.0.0.1", None)),
        ("127.0.0.1", ("127.0.0.1", None)),
        ("::1", (None, "::1")),
        ("0.0.0.0", ("0.0.0.0", None)),
        ("::", (None, "::")),
        ("fe80::1%eth0", (None, "fe80::1%eth0")),
    ],
)
def test_the_tracker_command_reads_its_bind_as_the_http_client(
    bind: str | None, binds: tuple[str | None, str | None]
) -> None:
    assert _client_binds(bind) == binds


@pytest.mark.parametrize("bind", ["localhost", "[::1]", "", "127.0.0.1:6881", " 127.0.0.1"])
@pytest.mark.parametrize("action", ["announce", "scrape"])
@pytest.mark.parametrize("url", ["udp://127.0.0.1:1", "http://127.0.0.1:1/announce"])
def test_the_tracker_command_refuses_a_bind_that_is_no_ip_address(
    bind: str, action: str, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # One check, the option's own, for either kind of tracker (usage error: status 2).
    assert main(["tracker", action, url, HASH.hex(), "--bind", bind]) == 2
    err = capsys.readouterr().err
    assert (
        f"argument --bind: must be an IP address (no port, brackets or name), not {bind!r}" in err
    )


def test_a_mapped_listen_host_is_refused_with_the_ipv4_address_to_give() -> None:
    with pytest.raises(ValueError, match=r"::ffff:10\.8\.0\.2 is IPv4 .*listen on 10\.8\.0\.2$"):
        ClientConfig(listen=(("10.8.0.3", 0), ("::ffff:10.8.0.2", 0)))
    for given in ("::ffff:10.8.0.2", "[::ffff:10.8.0.2]:6881"):
        with pytest.raises(
            CLIError, match=r"^--bind ::ffff:10\.8\.0\.2 is IPv4: bind 10\.8\.0\.2$"
        ):
            _bind_hosts(["fd00::2", given])
    # Names and other addresses are still taken.
    ClientConfig(listen=(("myhost.lan", 0), ("::", 0), ("fe80::1%eth0", 0), ("::1", 0)))
