"""The order a host name's addresses are asked of a SOCKS5 proxy (``socks5://``: resolved here)
is a direct connect's (bip_handshake._tcp_from._happy_order): the first address of the
other family is moved second before the cut to eight. Before, the resolver's first eight
were asked: a name with nine IPv6 addresses before its IPv4 one never had IPv4 asked.

The in-test proxy (tests._socks_server) answers "not allowed by ruleset" for any target but
loopback ones, at once: each 2001:db8:: address (RFC 3849's) is a quick refusal."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import trio
from tests._resolvers import FixedResolver
from tests._socks_server import serve_socks5

from bip_handshake._socks_shell import ProxyConfig, _proxy_targets, open_socks5_stream
from bip_handshake._tcp_from import _MAX_TARGETS

LOOPBACK = "127.0.0.1"
DEADLINE = 5.0
NAME = "many.test"
V6 = [f"2001:db8::{index}" for index in range(1, _MAX_TARGETS + 2)]  # nine of them


async def test_the_ipv4_target_behind_nine_ipv6_ones_is_asked_second() -> None:
    trio.socket.set_custom_hostname_resolver(FixedResolver({NAME: [*V6, LOOPBACK]}))
    targets = await _proxy_targets(ProxyConfig(LOOPBACK), NAME, 80)
    assert len(targets) == _MAX_TARGETS
    assert targets[:2] == [IPv6Address(V6[0]), IPv4Address(LOOPBACK)]
    assert targets[2:] == [ip_address(text) for text in V6[1 : _MAX_TARGETS - 1]]


async def test_an_ipv4_mapped_answer_counts_as_ipv4_for_the_order() -> None:
    mapped = f"::ffff:{LOOPBACK}"
    trio.socket.set_custom_hostname_resolver(FixedResolver({NAME: [*V6, mapped]}))
    targets = await _proxy_targets(ProxyConfig(LOOPBACK), NAME, 80)
    assert targets[1] == IPv6Address(mapped)  # given to the proxy as the resolver wrote it


async def test_the_proxy_reaches_the_ipv4_address_behind_nine_ipv6_ones() -> None:
    trio.socket.set_custom_hostname_resolver(FixedResolver({NAME: [*V6, LOOPBACK]}))
    # The target: a loopback listener (the system completes the connect; nothing accepts).
    [target] = await trio.open_tcp_listeners(0, host=LOOPBACK)
    port = target.socket.getsockname()[1]
    with trio.fail_after(DEADLINE):
        async with target, serve_socks5() as server:
            stream = await open_socks5_stream(
                ProxyConfig(LOOPBACK, server.port), NAME, port, timeout=DEADLINE
            )
            await stream.aclose()
    assert server.connects == [(LOOPBACK, port)]
    assert server.refused == 1  # 2001:db8::1 alone was asked before it
