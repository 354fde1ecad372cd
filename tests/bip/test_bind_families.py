"""A session bound to an address of each family (``listen=`` 127.0.0.2 and ::1, as a VPN
with both) dials every peer from the address of the peer's family, TCP and uTP, whichever is
listed first; through a SOCKS5 proxy, its connections to the proxy (CONNECT, and the uTP
relay's UDP ASSOCIATE with its socket) leave from the address of the proxy's family. Before,
the first listen host alone counted: listed after ``::1``, 127.0.0.2 was never used.

Loopback only: 127.0.0.2 is seen as itself by a listener on 127.0.0.1 (the system would pick
127.0.0.1); ``::1`` is the one IPv6 loopback address (that an IPv6 connect is bound to the
configured address is proved in tests/bip_handshake/test_dialer_local_families.py)."""

from __future__ import annotations

import pytest
import trio
from _engine_helpers import loopback_config
from tests._loopbacks import OTHER_LOOPBACK, recording_listener, require_loopbacks, wait_until
from tests._socks_server import serve_socks5

from bip._client import open_session
from bip_handshake import SocksDialer, UtpConfig, open_utp_socket

DEADLINE = 10.0
BOTH_ORDERS = pytest.mark.parametrize("reverse", [False, True], ids=["v4-first", "v6-first"])


@pytest.fixture(autouse=True)
def _loopbacks() -> None:
    """Skip where 127.0.0.2 or ::1 is not an address of this host."""
    require_loopbacks(OTHER_LOOPBACK, "::1")


def listen(reverse: bool, *extra: str) -> tuple[tuple[str, int], ...]:
    """127.0.0.2 and ::1 (``reverse``: ::1 first), then ``extra`` hosts; any ports."""
    hosts = ("::1", OTHER_LOOPBACK) if reverse else (OTHER_LOOPBACK, "::1")
    return tuple((host, 0) for host in (*hosts, *extra))


@BOTH_ORDERS
async def test_peers_are_dialled_from_the_address_of_their_family(reverse: bool) -> None:
    # A third listener on 127.0.0.1: uTP still leaves from 127.0.0.2's socket, the first
    # IPv4 one, as TCP does (before, the last socket of a family was the dialer's).
    config = loopback_config(listen=listen(reverse, "127.0.0.1"))
    with trio.fail_after(DEADLINE):
        async with (
            recording_listener("127.0.0.1") as (peer4, seen4),
            recording_listener("::1") as (peer6, seen6),
            open_utp_socket(("127.0.0.1", 0), config=UtpConfig()) as utp_peer,
            open_session(config) as session,
        ):
            dialer = session.dialer
            assert dialer is not None
            assert sorted(dialer.local_addresses) == ["127.0.0.2", "::1"]
            assert sorted(str(s.local_address.host) for s in dialer.utp_sockets) == [
                "127.0.0.2",
                "::1",
            ]
            for peer in (peer4, peer6):
                stream = await dialer(peer)
                assert getattr(stream, "transport", None) == "tcp"
                await stream.aclose()
            await wait_until(lambda: seen4 and seen6)
            dialer.prefer_utp_for(utp_peer.local_address, 60.0)
            stream = await dialer(utp_peer.local_address)
            assert getattr(stream, "transport", None) == "utp"
            accepted = await utp_peer.incoming().receive()
            assert str(accepted.remote_address.host) == OTHER_LOOPBACK
            await accepted.aclose()
            await stream.aclose()
    assert seen4 == [OTHER_LOOPBACK]
    assert seen6 == ["::1"]


@BOTH_ORDERS
@pytest.mark.parametrize("mapped", [False, True], ids=["ipv4-proxy", "ipv4-mapped-proxy"])
async def test_connections_to_an_ipv4_proxy_leave_from_the_ipv4_address(
    reverse: bool, mapped: bool
) -> None:
    # A proxy named ::ffff:127.0.0.1 is IPv4 too: before, its CONNECT left from ::1
    # (ENETUNREACH) and the uTP relay socket was IPv6, bound to ::1.
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5() as proxy,
            recording_listener("127.0.0.1") as (peer, seen),
        ):
            url = f"socks5://[::ffff:127.0.0.1]:{proxy.port}" if mapped else proxy.url()
            config = loopback_config(listen=listen(reverse), proxy=url)
            async with open_session(config) as session:
                dialer = session.dialer
                assert dialer is not None
                via = dialer._connect_tcp_via
                assert isinstance(via, SocksDialer)
                assert sorted(via.local_addresses) == ["127.0.0.2", "::1"]
                relayed = session.utp_sockets[-1]
                assert str(relayed.local_address.host) == OTHER_LOOPBACK
                await wait_until(lambda: proxy.associations)
                stream = await via(peer)  # TCP through the proxy: a CONNECT
                await stream.aclose()
                await wait_until(lambda: seen)
    # The CONNECT and the relay's control connection left from 127.0.0.2 (before, with ::1
    # first, both left from the system's choice, 127.0.0.1, and the relay socket was on
    # 0.0.0.0).
    assert sorted(proxy.client_hosts) == [OTHER_LOOPBACK, OTHER_LOOPBACK]
    [association] = proxy.associations
    assert association.client_host == OTHER_LOOPBACK
    assert proxy.connects == [("127.0.0.1", peer.port)]
