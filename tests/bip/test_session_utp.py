"""uTP in the client: sessions that transfer over uTP, the TCP-first fallback, one UDP port
shared with the DHT, a taken UDP port, and the settings and options that drive it."""

from __future__ import annotations

import argparse
import errno
import logging
import socket
from pathlib import Path
from typing import Any

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

from bip._client import ClientConfig, TorrentOptions, _utp, open_session
from bip._client._config import DEFAULT_UTP_CONFIG
from bip._client._utp import UtpRouter, _sender
from bip._cmd_download import (
    add_session_arguments,
    config_from_args,
    open_session_with_dht,
    status_fields,
)
from bip_dht import DHTError, DHTSocketError, open_dht
from bip_handshake import ListenError, PeerAddress, UtpConfig, UtpConnectError, open_utp_socket
from bip_handshake._dialers import PeerDialer

SIZES = (100_000, 3, 40_000)
DEADLINE = 30.0


def free_port() -> int:
    """A loopback port free for both UDP and TCP (held by nobody once returned)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise AssertionError("no port free for both UDP and TCP")


def session_args(*options: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_session_arguments(parser)
    return parser.parse_args(["--bind", LOOPBACK, "--no-trackers", *options])


# ------------------------------------------------------------------------------ transfers


async def test_transfer_over_utp_only(tmp_path: Path) -> None:
    """The leecher prefers uTP: every byte goes over it (and the seeder accepted it)."""
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "hybrid")
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder, prefer_utp=True) as (seeder, leecher):
            [seeder_utp] = seeder.utp_sockets
            assert seeder_utp.local_address == address_of(seeder)  # same port number, UDP
            download = await leecher.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", peers=(address_of(seeder),))
            )
            await download.wait_complete()
            assert leecher.dialer is not None
            stats = leecher.dialer.statistics()
            assert stats.utp_connected >= 1
            assert stats.tcp_attempts == 0
            assert seeder_utp.statistics().accepted >= 1
            assert seeder.handshaker.statistics().inbound_completed >= 1
            assert seeder_utp.statistics().bytes_sent >= sum(SIZES)
    assert same_files(folder, tmp_path / "down" / "album")


async def test_status_counts_utp_peers(tmp_path: Path) -> None:
    """Both ends see their peer as uTP (the leecher dialled it, the seeder accepted it), and
    the status line says so; a TCP session's line keeps its old form."""
    # Big enough that the peers stay connected for a while after they first see each other.
    folder = write_content(tmp_path / "seed", (4_000_000,))
    torrent = make_torrent(folder, "v1")
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder, prefer_utp=True) as (seeder, leecher):
            [seeding] = seeder.torrents
            assert seeding.status().utp_peers == 0
            assert ("peers", "0 (0 seeds)") in status_fields(seeding.status())
            download = await leecher.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", peers=(address_of(seeder),))
            )
            # Seen from both ends while connected (bounded: 2000 polls of 10 ms at most).
            for _ in range(2000):
                ours, theirs = download.status(), seeding.status()
                if ours.utp_peers and theirs.utp_peers:
                    break
                await trio.sleep(0.01)
            assert (ours.peers, ours.utp_peers) == (1, 1)
            assert (theirs.peers, theirs.utp_peers) == (1, 1)
            assert ("peers", f"1 ({theirs.seeds} seeds, 1 uTP)") in status_fields(theirs)
            [peer] = [p for t in leecher.torrents for p in t.peers]
            assert peer.transport == "utp"
            await download.wait_complete()


async def test_status_counts_no_utp_peers_over_tcp(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1")
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder, utp=False) as (seeder, leecher):
            [seeding] = seeder.torrents
            download = await leecher.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", peers=(address_of(seeder),))
            )
            for _ in range(2000):
                if seeding.status().peers:
                    break
                await trio.sleep(0.01)
            status = seeding.status()
            assert (status.peers, status.utp_peers) == (1, 0)
            assert ("peers", f"1 ({status.seeds} seeds)") in status_fields(status)
            await download.wait_complete()


async def test_tcp_first_falls_back_to_a_utp_only_peer(tmp_path: Path) -> None:
    """A seeder reachable over uTP on a port whose TCP is closed: the default order (TCP
    first) is refused there and reaches it over uTP."""
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1")
    with trio.fail_after(DEADLINE):
        async with (
            seeder_and_leecher(torrent, folder) as (seeder, leecher),
            open_utp_socket((LOOPBACK, 0)) as utp_only,
            trio.open_nursery() as nursery,
        ):

            async def accept() -> None:
                async for stream in utp_only.incoming():
                    seeder.handshaker.accept_stream(stream, stream.remote_address)

            nursery.start_soon(accept)
            # Nobody listens on TCP at the uTP socket's port.
            download = await leecher.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", peers=(utp_only.local_address,))
            )
            await download.wait_complete()
            assert leecher.dialer is not None
            stats = leecher.dialer.statistics()
            assert stats.tcp_attempts >= 1
            assert stats.fallbacks >= 1
            assert stats.utp_connected >= 1
            assert stats.tcp_connected == 0
            nursery.cancel_scope.cancel()
    assert same_files(folder, tmp_path / "down" / "album")


async def test_utp_off(tmp_path: Path) -> None:
    """``utp=False``: no UDP socket, and a dial is TCP only."""
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1")
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder, utp=False, prefer_utp=True) as (
            seeder,
            leecher,
        ):
            assert seeder.utp_sockets == leecher.utp_sockets == ()
            assert leecher.dialer is not None
            assert leecher.dialer.prefer == "tcp"  # prefer_utp means nothing without uTP
            download = await leecher.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", peers=(address_of(seeder),))
            )
            await download.wait_complete()
            stats = leecher.dialer.statistics()
            assert (stats.utp_attempts, stats.tcp_connected) == (0, 1)


async def test_own_dial_accepts_utp_only(tmp_path: Path) -> None:
    """A config with its own ``dial``: no session dialer, but uTP is still accepted."""

    async def dial(address: PeerAddress) -> trio.abc.Stream:
        return await trio.open_tcp_stream(str(address.host), address.port)

    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config(dial=dial)) as session:
            assert session.dialer is None
            assert len(session.utp_sockets) == 1


async def test_dial_only_session_dials_utp_from_an_ephemeral_port(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1")
    with trio.fail_after(DEADLINE):
        async with (
            open_session(loopback_config()) as seeder,
            open_session(loopback_config(listen=(), prefer_utp=True)) as leecher,
        ):
            [outgoing] = [s for s in leecher.utp_sockets if s.local_address.family == 4]
            assert outgoing.local_address.port != 0
            seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            download = await leecher.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", peers=(address_of(seeder),))
            )
            await download.wait_complete()
            assert leecher.dialer is not None
            assert leecher.dialer.statistics().utp_connected >= 1


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


async def test_dial_only_session_reaches_ipv6_peers_over_utp(tmp_path: Path) -> None:
    """Without listeners the session dials uTP from "::" too: an IPv6 peer is reached."""
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this system")
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1")
    with trio.fail_after(DEADLINE):
        async with (
            open_session(loopback_config(listen=(("::1", 0),))) as seeder,
            open_session(loopback_config(listen=(), prefer_utp=True)) as leecher,
        ):
            families = sorted(s.local_address.family for s in leecher.utp_sockets)
            assert families == [4, 6]
            seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            download = await leecher.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", peers=(address_of(seeder),))
            )
            await download.wait_complete()
            assert same_files(folder, tmp_path / "down" / folder.name)
            [ipv6] = [s for s in leecher.utp_sockets if s.local_address.family == 6]
            assert ipv6.statistics().connects >= 1
            assert leecher.dialer is not None
            assert leecher.dialer.statistics().utp_connected >= 1


async def test_dial_only_session_without_ipv6_is_quiet(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No "::" socket (bind refused, or no IPv6 in Python): DEBUG only, IPv4 goes on."""

    def refuse_ipv6(bind: tuple[str, int], **kwargs: Any) -> Any:
        if ":" in bind[0]:
            raise ListenError("cannot bind uTP to :::0: address family not supported")
        return open_utp_socket(bind, **kwargs)

    monkeypatch.setattr(_utp, "open_utp_socket", refuse_ipv6)
    for no_ipv6 in (False, True):
        caplog.clear()
        with monkeypatch.context() as patch:
            if no_ipv6:
                patch.setattr(socket, "has_ipv6", False)  # the module _utp reads it from
            with trio.fail_after(DEADLINE), caplog.at_level(logging.DEBUG, logger="bip.client"):
                async with open_session(loopback_config(listen=())) as session:
                    [outgoing] = session.utp_sockets
                    assert outgoing.local_address.family == 4
                    assert session.dialer is not None
                    assert session.dialer.utp_sockets == (outgoing,)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        quiet = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
        assert any("no outgoing uTP from ::" in text for text in quiet), quiet


# -------------------------------------------------------------------------- shared port


async def test_shared_dht_socket_carries_krpc_and_utp(tmp_path: Path) -> None:
    """``bip download``'s session on a fixed port: the DHT and uTP on one UDP socket. A DHT
    ping and a uTP transfer both reach that port."""
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1")
    port = free_port()
    args = session_args("--port", str(port))
    config = config_from_args(args)
    assert config.utp
    assert not config.prefer_utp
    with trio.fail_after(DEADLINE):
        async with (
            open_session_with_dht(args, config, tmp_path / "state") as seeder,
            open_dht((LOOPBACK, 0)) as other_node,
            open_session(loopback_config(prefer_utp=True)) as leecher,
        ):
            assert seeder.dht is not None
            [dht_address] = seeder.dht.addresses
            [utp] = seeder.utp_sockets
            assert dht_address == utp.local_address == PeerAddress.parse(f"{LOOPBACK}:{port}")
            assert utp.local_address == address_of(seeder)
            # KRPC still reaches the node.
            assert await other_node.ping(dht_address) is not None
            seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            download = await leecher.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", peers=(address_of(seeder),))
            )
            await download.wait_complete()
            assert leecher.dialer is not None
            assert leecher.dialer.statistics().utp_connected >= 1
            assert utp.statistics().accepted >= 1
            dht_stats = seeder.dht.statistics()  # type: ignore[attr-defined]
            assert dht_stats.other_datagrams >= utp.statistics().datagrams_received > 0
    assert same_files(folder, tmp_path / "down" / "album")


async def test_cli_no_utp_shares_nothing(tmp_path: Path) -> None:
    port = free_port()
    args = session_args("--port", str(port), "--no-utp")
    config = config_from_args(args)
    assert not config.utp
    with trio.fail_after(DEADLINE):
        async with open_session_with_dht(args, config, tmp_path) as session:
            assert session.utp_sockets == ()
            assert session.dht is not None
            assert session.dht.addresses[0].port == port


async def test_port_taken_warns_and_dials_from_an_ephemeral_port(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((LOOPBACK, port))
        with trio.fail_after(DEADLINE), caplog.at_level(logging.WARNING, logger="bip.client"):
            async with open_session(loopback_config(listen=((LOOPBACK, port),))) as session:
                assert address_of(session).port == port  # TCP is fine
                [outgoing] = session.utp_sockets
                assert outgoing.local_address.port not in (0, port)
                assert session.dialer is not None
                assert session.dialer.utp_sockets == (outgoing,)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"cannot accept uTP peers on UDP 127.0.0.1:{port}" in text for text in warnings)


async def test_port_taken_outgoing_socket_refuses_strays(tmp_path: Path) -> None:
    """The outgoing-only socket's port was told nobody: a stray SYN gets a RESET, and no
    connection is made for it."""
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((LOOPBACK, port))
        with trio.fail_after(DEADLINE):
            async with (
                open_session(loopback_config(listen=((LOOPBACK, port),))) as session,
                open_utp_socket() as stray,
            ):
                [outgoing] = session.utp_sockets
                assert not outgoing.accept_incoming
                with pytest.raises(UtpConnectError, match="refused"):
                    await stray.connect(outgoing.local_address)
                stats = outgoing.statistics()
                assert (stats.refused, stats.accepted, stats.connections) == (1, 0, 0)
                assert session.handshaker.statistics().inbound_attempts == 0


async def test_port_taken_outgoing_socket_still_downloads_over_utp(tmp_path: Path) -> None:
    """The outgoing-only socket (accepting nothing) dials uTP peers as any other socket."""
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1")
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((LOOPBACK, port))
        with trio.fail_after(DEADLINE):
            async with (
                open_session(loopback_config()) as seeder,
                open_session(
                    loopback_config(listen=((LOOPBACK, port),), prefer_utp=True)
                ) as leecher,
            ):
                [outgoing] = leecher.utp_sockets
                assert not outgoing.accept_incoming
                seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
                await seeding.wait_complete()
                download = await leecher.add_torrent(
                    torrent, TorrentOptions(tmp_path / "down", peers=(address_of(seeder),))
                )
                await download.wait_complete()
                assert leecher.dialer is not None
                assert leecher.dialer.statistics().utp_connected >= 1
                assert outgoing.statistics().connects >= 1
    assert same_files(folder, tmp_path / "down" / "album")


async def test_no_udp_socket_at_all_leaves_tcp(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Out of file descriptors (or no such family): warned, and the session runs on TCP."""

    def no_socket(*args: object, **kwargs: object) -> object:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(_utp, "open_utp_socket", no_socket)
    with trio.fail_after(DEADLINE), caplog.at_level(logging.WARNING, logger="bip.client"):
        async with open_session(loopback_config()) as session:
            assert session.utp_sockets == ()
            assert session.dialer is not None
            assert session.dialer.utp_sockets == ()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cannot accept uTP peers" in text for text in warnings)
    assert any("no outgoing uTP" in text for text in warnings)


# ------------------------------------------------------------------------------- pieces


async def test_router_drops_until_attached_and_routes_by_family() -> None:
    router = UtpRouter()
    v4 = PeerAddress.parse("127.0.0.1:5000")
    router.datagram_received(b"\x41junk", v4)
    assert router.dropped == 1
    async with open_utp_socket() as utp, open_utp_socket() as other:
        router.attach(utp)
        router.datagram_received(b"\x41junk", v4)
        assert utp.statistics().invalid_datagrams == 1
        router.datagram_received(b"\x41junk", PeerAddress.parse("[::1]:5000"))
        assert router.dropped == 2  # no IPv6 socket attached
        router.detach(other)  # not attached: nothing happens
        router.detach(utp)
        router.datagram_received(b"\x41junk", v4)
        assert router.dropped == 3


@pytest.mark.parametrize("error", [DHTSocketError("no IPv6 socket"), DHTError("the DHT is closed")])
async def test_sender_makes_dht_errors_lost_datagrams(error: Exception) -> None:
    class Failing:
        addresses = (PeerAddress.parse("127.0.0.1:6881"),)

        async def send_datagram(
            self, data: bytes, address: PeerAddress, *, dont_fragment: bool = False
        ) -> None:
            raise error

    send = _sender(Failing())
    with pytest.raises(OSError, match="did not send") as caught:
        await send(b"x", PeerAddress.parse("127.0.0.1:1"))
    assert caught.value.__cause__ is error


async def test_sender_sends_probes_as_probes_and_keeps_the_errno() -> None:
    # An MTU probe goes to the DHT flagged "don't fragment"; the DHT's refusal of it as too
    # big reaches uTP as EMSGSIZE, which lowers the connection's path MTU at once.
    from bip_handshake._utp_connection import _pad, is_mtu_probe
    from bip_handshake._utp_packet import UtpPacket, UtpPacketType

    flags: list[bool] = []

    class Sharer:
        addresses = (PeerAddress.parse("127.0.0.1:6881"),)

        async def send_datagram(
            self, data: bytes, address: PeerAddress, *, dont_fragment: bool = False
        ) -> None:
            flags.append(dont_fragment)
            if dont_fragment:
                try:
                    raise OSError(errno.EMSGSIZE, "Message too long")
                except OSError as too_big:
                    raise DHTSocketError("cannot send") from too_big

    packet = UtpPacket(UtpPacketType.DATA, 7, 1, 2, 3, 4, 5, payload=bytes(1100)).encode()
    probe = _pad(packet, 1300)
    assert is_mtu_probe(probe)
    send = _sender(Sharer())
    await send(packet, PeerAddress.parse("127.0.0.1:1"))
    with pytest.raises(OSError, match="did not send") as caught:
        await send(probe, PeerAddress.parse("127.0.0.1:1"))
    assert caught.value.errno == errno.EMSGSIZE
    assert flags == [False, True]


def test_config_and_options() -> None:
    config = ClientConfig()
    assert config.utp
    assert not config.prefer_utp
    assert config.utp_config is DEFAULT_UTP_CONFIG
    assert DEFAULT_UTP_CONFIG.connect_timeout == 3.0
    with pytest.raises(TypeError, match="utp must be a bool"):
        ClientConfig(utp=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="prefer_utp must be a bool"):
        ClientConfig(prefer_utp="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="utp_config"):
        ClientConfig(utp_config={"connect_timeout": 1})  # type: ignore[arg-type]
    assert ClientConfig(utp_config=UtpConfig(max_connections=8)).utp_config.max_connections == 8
    preferred = config_from_args(session_args("--prefer-utp"))
    assert preferred.prefer_utp
    assert preferred.utp
    assert not config_from_args(session_args("--no-utp")).utp
    with pytest.raises(SystemExit):
        session_args("--no-utp", "--prefer-utp")


async def test_session_dialer_order_and_local_address() -> None:
    async with open_session(
        loopback_config(listen=(("127.0.0.2", 0),), prefer_utp=True)
    ) as session:
        dialer = session.dialer
        assert isinstance(dialer, PeerDialer)
        assert dialer.prefer == "utp"
        assert dialer.local_addresses == ("127.0.0.2",)
        assert dialer.transports(PeerAddress.parse("127.0.0.1:1")) == ("utp", "tcp")
        assert dialer.transports(PeerAddress.parse("[::1]:1")) == ("tcp",)
