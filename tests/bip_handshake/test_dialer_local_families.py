"""The dialers' local addresses per IP family (``local_address=("10.8.0.2", "fd00::2")``): a
direct TCP connect (PeerDialer) and a connection to the SOCKS5 proxy (SocksDialer, and each
attempt of one: the proxy's IPv6 and IPv4 addresses) leave from the configured address of the
family they connect in, whichever is listed first; a family with none lets the system pick. A
proxy named by an IPv4-mapped address (``::ffff:127.0.0.1``) is reached over IPv4.

Loopback only: 127.0.0.2 is seen as itself by a listener on 127.0.0.1 (the system would pick
127.0.0.1). ``::1`` is the one IPv6 loopback address, so an IPv6 connect is proved bound by a
configured IPv6 address this host does not have (2001:db8::1, RFC 3849's): it fails there,
never connecting from the system's choice."""

from __future__ import annotations

import errno
from ipaddress import ip_address

import pytest
import trio
from tests._loopbacks import OTHER_LOOPBACK, recording_listener, require_loopbacks, wait_until
from tests._resolvers import FixedResolver
from tests._socks_server import serve_socks5

from bip_handshake import PeerAddress, PeerDialer, SocksDialer
from bip_handshake._socks import SocksError
from bip_handshake._socks_shell import ProxyConfig, open_socks5_stream

NOT_OURS_V6 = "2001:db8::1"
DEADLINE = 5.0
BOTH_ORDERS = pytest.mark.parametrize("reverse", [False, True], ids=["v4-first", "v6-first"])


def ordered(v4: str, v6: str, reverse: bool) -> tuple[str, str]:
    return (v6, v4) if reverse else (v4, v6)


def test_the_first_address_of_each_family_is_kept() -> None:
    cases: list[tuple[str | tuple[str, ...] | None, tuple[str, ...]]] = [
        (None, ()),
        ("127.0.0.2", ("127.0.0.2",)),
        ("::", ()),
        (("fd00::2", "10.8.0.2"), ("fd00::2", "10.8.0.2")),
        (("10.8.0.2", "10.8.0.3", "fd00::2", "fd00::3"), ("10.8.0.2", "fd00::2")),
        # An unspecified first one speaks for its family: the system picks for it.
        (("0.0.0.0", "10.8.0.2", "fd00::2"), ("fd00::2",)),
        ((), ()),
    ]
    proxy = ProxyConfig("127.0.0.1", 1080)
    for given, kept in cases:
        assert PeerDialer(local_address=given).local_addresses == kept, given
        dialer = SocksDialer(proxy, local_address=given)
        assert dialer.local_addresses == kept, given
        assert dialer.local_address == (kept[0] if kept else None)


@pytest.mark.parametrize("given", ["eth0", ("127.0.0.2", "eth0"), 5, b"127.0.0.1", ("",)])
def test_a_local_address_that_is_not_an_ip_address_is_refused(given: object) -> None:
    with pytest.raises(ValueError, match="local_address must be an IP address"):
        PeerDialer(local_address=given)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="local_address must be an IP address"):
        SocksDialer(ProxyConfig("127.0.0.1", 1080), local_address=given)  # type: ignore[arg-type]


@BOTH_ORDERS
async def test_a_direct_ipv4_connect_leaves_from_the_ipv4_address(reverse: bool) -> None:
    # Before, the first address alone counted: listed second, 127.0.0.2 was not used.
    require_loopbacks(OTHER_LOOPBACK)
    with trio.fail_after(DEADLINE):
        async with recording_listener("127.0.0.1") as (target, seen):
            dialer = PeerDialer(local_address=ordered(OTHER_LOOPBACK, NOT_OURS_V6, reverse))
            stream = await dialer(target)
            await stream.aclose()
            await wait_until(lambda: seen)
    assert seen == [OTHER_LOOPBACK]


@BOTH_ORDERS
async def test_a_direct_ipv6_connect_leaves_from_the_ipv6_address(reverse: bool) -> None:
    require_loopbacks("::1")
    with trio.fail_after(DEADLINE):
        async with recording_listener("::1") as (target, seen):
            dialer = PeerDialer(local_address=ordered(OTHER_LOOPBACK, "::1", reverse))
            stream = await dialer(target)
            await stream.aclose()
            await wait_until(lambda: seen)
            # Bound to the configured IPv6 address, not the system's choice: one this host
            # does not have fails the connect.
            bound = PeerDialer(local_address=ordered(OTHER_LOOPBACK, NOT_OURS_V6, reverse))
            with pytest.raises(OSError, match="all attempts to connect") as caught:
                await bound(target)
            assert "2001:db8::1" in repr(caught.value.__cause__)
            assert bound.statistics().failed == 1
    assert seen == ["::1"]


@BOTH_ORDERS
async def test_socks_connections_leave_from_the_address_of_the_proxys_family(
    reverse: bool,
) -> None:
    require_loopbacks(OTHER_LOOPBACK)
    with trio.fail_after(DEADLINE):
        async with serve_socks5() as server, recording_listener("127.0.0.1") as (target, _seen):
            dialer = SocksDialer(
                ProxyConfig("127.0.0.1", server.port),
                local_address=ordered(OTHER_LOOPBACK, NOT_OURS_V6, reverse),
            )
            stream = await dialer(target)
            await stream.aclose()
    assert server.client_hosts == [OTHER_LOOPBACK]
    assert dialer.statistics().connected == 1


@BOTH_ORDERS
async def test_a_connection_to_an_ipv6_proxy_leaves_from_the_ipv6_address(
    reverse: bool,
) -> None:
    # The "proxy" notes who connected and hangs up: the dial fails, the source is what counts.
    require_loopbacks("::1")
    with trio.fail_after(DEADLINE):
        async with recording_listener("::1") as (listening, seen):
            proxy = ProxyConfig("::1", listening.port)
            target = PeerAddress(ip_address("127.0.0.1"), 6881)
            ours = SocksDialer(proxy, local_address=ordered(OTHER_LOOPBACK, "::1", reverse))
            with pytest.raises(SocksError):
                await ours(target)
            not_ours = SocksDialer(
                proxy, local_address=ordered(OTHER_LOOPBACK, NOT_OURS_V6, reverse)
            )
            with pytest.raises(SocksError) as caught:
                await not_ours(target)
    assert caught.value.errno == errno.EADDRNOTAVAIL
    assert seen == ["::1"]


@BOTH_ORDERS
async def test_each_attempt_at_a_named_proxy_leaves_from_its_familys_address(
    reverse: bool,
) -> None:
    # proxy.test names an IPv6 address first (tried first, happy eyeballs): that attempt is
    # bound to 2001:db8::1 and fails at once, never reaching the listener on ::1; the IPv4
    # attempt leaves from 127.0.0.2.
    require_loopbacks(OTHER_LOOPBACK, "::1")
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5() as server,
            recording_listener("::1") as (proxy6, seen6),
            recording_listener("127.0.0.1") as (target, _seen),
        ):
            trio.socket.set_custom_hostname_resolver(
                FixedResolver({"proxy.test": (("::1", proxy6.port), ("127.0.0.1", server.port))})
            )
            stream = await open_socks5_stream(
                ProxyConfig("proxy.test", 1080),
                "127.0.0.1",
                target.port,
                timeout=DEADLINE,
                local_address=ordered(OTHER_LOOPBACK, NOT_OURS_V6, reverse),
            )
            await stream.aclose()
    assert seen6 == []
    assert server.client_hosts == [OTHER_LOOPBACK]


@pytest.mark.parametrize(
    "local",
    [(OTHER_LOOPBACK, "::1"), ("::1", OTHER_LOOPBACK), (OTHER_LOOPBACK,)],
    ids=["v4-first", "v6-first", "v4-only"],
)
@pytest.mark.parametrize("host", ["::ffff:127.0.0.1", "mapped.test"], ids=["literal", "name"])
async def test_an_ipv4_mapped_proxy_is_reached_over_ipv4_from_the_ipv4_address(
    local: tuple[str, ...], host: str
) -> None:
    # Before, its AF_INET6 address was dialled from ::1 (ENETUNREACH), or with 127.0.0.2
    # alone from the system's choice (127.0.0.1); a name resolving to it, likewise.
    require_loopbacks(OTHER_LOOPBACK)
    if "::1" in local:
        require_loopbacks("::1")
    with trio.fail_after(DEADLINE):
        async with serve_socks5() as server, recording_listener("127.0.0.1") as (target, _seen):
            trio.socket.set_custom_hostname_resolver(
                FixedResolver({"mapped.test": ("::ffff:127.0.0.1",)})
            )
            dialer = SocksDialer(ProxyConfig(host, server.port), local_address=local)
            stream = await dialer(target)
            await stream.aclose()
    assert server.client_hosts == [OTHER_LOOPBACK]
    assert server.connects == [("127.0.0.1", target.port)]
