"""uTP dialled through a SOCKS5 proxy's UDP relay (``ClientConfig.proxy`` with
``proxy_peer_connections``): a leecher preferring uTP downloads from a seed on 127.0.0.1
through the in-test proxy's relay (tests/_socks_server.py), and over TCP through the proxy
when the proxy refuses UDP; the dialer's ``connect_tcp`` leg and its uTP sockets' checks;
the relay socket's settings."""

from __future__ import annotations

import logging
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trio
import trio.testing
from _engine_helpers import (
    LOOPBACK,
    address_of,
    loopback_config,
    make_torrent,
    same_files,
    write_content,
)
from tests._resolvers import FixedResolver
from tests._socks_server import serve_socks5

from bip._client import Session, TorrentOptions, open_session
from bip._client._utp import _relay_bind, _relayed_config
from bip_handshake import (
    PeerAddress,
    ProxyConfig,
    SocksUnavailableError,
    UtpConfig,
    UtpConnectError,
    open_utp_socket,
)
from bip_handshake._dialers import PeerDialer

DEADLINE = 15.0
SIZES = (60_000, 3)


async def _peers_seen(seeder: Session, seen: set[tuple[PeerAddress, str]]) -> None:
    """Note the address and transport of every peer ``seeder`` has, until cancelled."""
    while True:  # cancelled by the test
        seen.update((peer.address, peer.transport) for peer in seeder.manager.peers)
        await trio.sleep(0.002)


async def _associated(session: Session) -> None:
    """Return once ``session``'s relay socket is associated: before, a uTP dial fails at
    once and TCP goes first."""
    assert session.dialer is not None
    while not session.dialer._utp_ready(4):  # bounded by the test's deadline
        await trio.sleep(0.005)


async def test_utp_dials_go_through_the_relay(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1")
    seen: set[tuple[PeerAddress, str]] = set()
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5() as proxy,
            open_session(loopback_config()) as seeder,
            open_session(loopback_config(proxy=proxy.url(), prefer_utp=True)) as leecher,
        ):
            seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            await _associated(leecher)
            assert leecher.holepunch is None
            assert leecher.dialer is not None
            [listening, relayed] = leecher.utp_sockets
            assert leecher.dialer.utp_sockets == (relayed,)  # the listener is not dialled from
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_peers_seen, seeder, seen)
                download = await leecher.add_torrent(
                    torrent, TorrentOptions(tmp_path / "down", peers=(address_of(seeder),))
                )
                await download.wait_complete()
                nursery.cancel_scope.cancel()
            stats = leecher.dialer.statistics()
            assert stats.utp_connected >= 1
            assert stats.tcp_attempts == 0
            assert listening.statistics().connects == 0
            [association] = proxy.associations
            assert association.relayed > 0
            assert association.returned > 0
    assert proxy.connects == []  # no TCP through the proxy, none directly (the dialer's)
    relay = PeerAddress(IPv4Address(LOOPBACK), association.relay_port)
    assert (relay, "utp") in seen  # the seed saw the relay, not the leecher
    assert same_files(folder, tmp_path / "down" / "album")


async def test_a_proxy_refusing_udp_leaves_tcp_through_it(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1")
    with trio.fail_after(DEADLINE):
        async with serve_socks5() as proxy:
            proxy.refuse_udp = True
            async with (
                open_session(loopback_config()) as seeder,
                open_session(loopback_config(proxy=proxy.url(), prefer_utp=True)) as leecher,
            ):
                seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
                await seeding.wait_complete()
                seed = address_of(seeder)
                started = trio.current_time()
                download = await leecher.add_torrent(
                    torrent, TorrentOptions(tmp_path / "down", peers=(seed,))
                )
                await download.wait_complete()
                elapsed = trio.current_time() - started
                assert leecher.dialer is not None
                stats = leecher.dialer.statistics()
    # uTP was never tried (its check refused: TCP alone, with the whole deadline), and it
    # was not the peer's fault: nothing remembered.
    assert elapsed < 2.5
    assert stats.utp_attempts == 0
    assert stats.fallbacks == 0
    assert stats.tcp_connected >= 1
    assert stats.remembered == 0
    assert proxy.associations == []
    assert set(proxy.connects) == {(LOOPBACK, seed.port)}
    assert same_files(folder, tmp_path / "down" / "album")


async def test_no_listener_dials_through_the_relay_alone_ipv4_peers_only() -> None:
    with trio.fail_after(DEADLINE):
        async with serve_socks5() as proxy:
            config = loopback_config(listen=(), proxy=proxy.url(), holepunch=True)
            async with open_session(config) as session:
                # No direct outgoing socket: the relay's alone.
                [relayed] = session.utp_sockets
                assert session.dialer is not None
                assert session.dialer.utp_sockets == (relayed,)
                assert session.holepunch is None
                assert not relayed.accept_incoming
                # Left while the negotiation runs, the control connection would be reset,
                # which the in-test proxy takes badly.
                await _associated(session)
                # The check names the association (its number) a connect leaves on.
                assert session.dialer._utp_path(4) == 1
                # An IPv4 relay carries IPv4 peers only: an IPv6 one is dialled over TCP.
                assert session.dialer.transports(PeerAddress.parse("10.0.0.1:6881")) == (
                    "tcp",
                    "utp",
                )
                assert session.dialer.transports(PeerAddress.parse("[2001:db8::1]:6881")) == (
                    "tcp",
                )


async def test_a_relay_socket_that_cannot_be_bound_leaves_tcp(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def unbindable(proxy: ProxyConfig, timeout: float) -> tuple[str, int]:
        return ("not an address", 0)

    monkeypatch.setattr("bip._client._utp._relay_bind", unbindable)
    caplog.set_level(logging.WARNING, logger="bip.client")
    with trio.fail_after(DEADLINE):
        async with (
            serve_socks5() as proxy,
            open_session(loopback_config(proxy=proxy.url())) as session,
        ):
            assert session.dialer is not None
            assert session.dialer.utp_sockets == ()
            assert len(session.utp_sockets) == 1  # the listener's, accepting
    assert any("no uTP dials through the SOCKS5 proxy" in r.getMessage() for r in caplog.records)


# -- the dialer's legs --------------------------------------------------------------------------


def _refusing(calls: list[int]) -> Callable[[], None]:
    def check() -> None:
        calls.append(1)
        raise SocksUnavailableError("no UDP association (test)")

    return check


async def test_the_dialer_takes_its_tcp_leg_and_checks_its_utp_socket() -> None:
    tcp_dials: list[PeerAddress] = []
    ends = trio.testing.memory_stream_pair()

    async def connect_tcp(address: PeerAddress) -> trio.abc.Stream:
        tcp_dials.append(address)
        return ends[0]

    peer = PeerAddress.parse("127.0.0.1:9")
    calls: list[int] = []
    with trio.fail_after(DEADLINE):
        async with open_utp_socket((LOOPBACK, 0), accept_incoming=False) as utp:
            dialer = PeerDialer(prefer="utp", connect_tcp=connect_tcp, local_address=LOOPBACK)
            dialer.add_utp(utp, check=_refusing(calls))
            assert dialer.transports(peer) == ("tcp",)  # refused: TCP alone
            stream = await dialer(peer)
            assert getattr(stream, "transport", None) == "tcp"
            assert tcp_dials == [peer]
            assert calls  # asked when the transports were picked: refused, no SYN
            stats = dialer.statistics()
            assert (stats.utp_attempts, stats.fallbacks, stats.remembered) == (0, 0, 0)
            assert utp.statistics().connects == 0  # no SYN was ever queued
            # uTP alone: the check's error is the dial's.
            only = PeerDialer(tcp=False)
            only.add_utp(utp, check=_refusing([]))
            with pytest.raises(SocksUnavailableError, match="test"):
                await only(peer)
            assert only.statistics().failed == 1
            # Added again without a check, or removed: the check goes with the socket.
            only.add_utp(utp)
            with pytest.raises(UtpConnectError):
                await only(PeerAddress.parse("127.0.0.1:0"))  # port 0: refused by the socket
            with pytest.raises(TypeError, match="check must be callable"):
                dialer.add_utp(utp, check=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="connect_tcp"):
        PeerDialer(connect_tcp="socks")  # type: ignore[arg-type]


def test_the_relay_sockets_settings() -> None:
    # The SOCKS5 header alone: 10 bytes before an IPv4 address (libtorrent's 1462), 22
    # before an IPv6 one.
    config = _relayed_config(UtpConfig(), 4)
    assert (config.max_datagram_v4, config.max_datagram_v6) == (1462, 1452 - 22)
    assert config.min_datagram == 1232  # 1270 bytes of IPv4: what any sane path carries
    # Through an IPv6 relay the floor and its header fit IPv6's 1280-byte minimum MTU.
    config = _relayed_config(UtpConfig(), 6)
    assert config.min_datagram == 1280 - 40 - 8 - 22
    assert (config.max_datagram_v4, config.max_datagram_v6) == (1462, 1430)
    assert _relayed_config(UtpConfig(min_datagram=600), 6).min_datagram == 600
    assert _relayed_config(UtpConfig(min_datagram=548), 6).min_datagram == 548
    floor = UtpConfig(max_datagram_v4=1240, max_datagram_v6=1232)
    assert _relayed_config(floor, 4).max_datagram_v4 == floor.min_datagram


async def test_the_relay_socket_takes_the_proxys_family() -> None:
    v6_only = FixedResolver({"v6.proxy.test": ("::1",)})  # any other name is unknown
    trio.socket.set_custom_hostname_resolver(v6_only)
    assert await _relay_bind(ProxyConfig("127.0.0.1"), 1.0) == ("0.0.0.0", 0)
    assert await _relay_bind(ProxyConfig("::1"), 1.0) == ("::", 0)
    # A name: its first address's family (IPv6 alone here: an IPv4 socket never associated).
    assert await _relay_bind(ProxyConfig("v6.proxy.test", remote_dns=True), 1.0) == ("::", 0)
    # A name that does not resolve: IPv4, the association's attempts say why.
    assert await _relay_bind(ProxyConfig("gone.proxy.test"), 1.0) == ("0.0.0.0", 0)
