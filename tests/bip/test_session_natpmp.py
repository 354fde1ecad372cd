"""NAT-PMP in the session: the listen ports mapped on a gateway, the mapped port told to
trackers and peers, the mappings deleted on close; off by default; a silent or missing
gateway costs nothing.

The gateway is a small fake on 127.0.0.1 that grants each port ``offset`` above the one
asked for (another machine behind the router holds ours), so that the port we tell others is
visibly not our listen port.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Mapping
from ipaddress import IPv4Address, ip_address
from pathlib import Path
from typing import NoReturn, cast

import pytest
import trio
from _engine_helpers import address_of, loopback_config, make_torrent, write_content

from bip._client import ClientConfig, Session, TorrentOptions, open_session
from bip._client._external_address import ExternalAddresses
from bip._client._port_mapping import mappable_ports, open_session_port_mapping
from bip._cmd_download import add_session_arguments, config_from_args
from bip._errors import CLIError
from bip_handshake import (
    NATPMP_PORT,
    ExternalAddressRequest,
    ExternalAddressResponse,
    ExternalIPVoter,
    MappingProtocol,
    MappingRequest,
    MappingResponse,
    NatPmpError,
    NatPmpErrorResponse,
    NatPmpResult,
    PeerAddress,
    VoteSource,
    decode_natpmp_request,
)
from bip_peer import ExtendedHandshake, Peer, PeerManager
from bip_utracker import (
    AnnounceEvent,
    open_tracker_client,
    serve_tracker,
)

LOOPBACK = "127.0.0.1"
EXTERNAL = IPv4Address("198.51.100.7")
DEADLINE = 15.0


class Gateway:
    """A NAT-PMP gateway granting ``internal + offset`` for each new mapping (RFC 6886)."""

    def __init__(self, *, offset: int = 1000, silent: bool = False) -> None:
        self.offset = offset
        self.silent = silent
        self.requests: list[ExternalAddressRequest | MappingRequest] = []
        self.mappings: dict[tuple[MappingProtocol, int], int] = {}
        self.booted_at = trio.current_time() - 1000.0
        self.client: tuple[str, int] | None = None  # where requests come from

    def epoch(self) -> int:
        return int(trio.current_time() - self.booted_at)

    def answer(self, data: bytes) -> bytes | None:
        if data[:1] == b"\x02":  # PCP: a NAT-PMP-only gateway says so (RFC 6886 3.5)
            return NatPmpErrorResponse(0, NatPmpResult.UNSUPPORTED_VERSION, self.epoch()).encode()
        try:
            request = decode_natpmp_request(data)
        except NatPmpError:
            return None
        self.requests.append(request)
        if self.silent:
            return None
        if isinstance(request, ExternalAddressRequest):
            return ExternalAddressResponse(NatPmpResult.SUCCESS, self.epoch(), EXTERNAL).encode()
        key = (request.protocol, request.internal_port)
        if request.lifetime == 0:
            self.mappings.pop(key, None)
            port = lifetime = 0
        else:
            port = self.mappings.setdefault(key, request.internal_port + self.offset)
            lifetime = request.lifetime
        return MappingResponse(
            request.protocol,
            NatPmpResult.SUCCESS,
            self.epoch(),
            request.internal_port,
            port,
            lifetime,
        ).encode()

    def reboot(self, offset: int) -> bytes:
        """Forget every mapping, grant at another offset from now on; the announcement of
        the new epoch to send (RFC 6886 3.2.1)."""
        self.booted_at = trio.current_time()
        self.mappings.clear()
        self.offset = offset
        return ExternalAddressResponse(NatPmpResult.SUCCESS, 0, EXTERNAL).encode()

    async def serve(
        self, *, task_status: trio.TaskStatus[trio.socket.SocketType] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.bind((LOOPBACK, 0))
            task_status.started(sock)
            while True:
                data, source = await sock.recvfrom(2048)
                self.client = source
                reply = self.answer(data)
                if reply is not None:
                    await sock.sendto(reply, source)


async def start_gateway(
    nursery: trio.Nursery, gateway: Gateway
) -> tuple[trio.socket.SocketType, int]:
    sock = cast(trio.socket.SocketType, await nursery.start(gateway.serve))
    return sock, sock.getsockname()[1]


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll every 20 ms (the caller bounds the test in time)."""
    while not predicate():
        await trio.sleep(0.02)


class HandshakeRecorder:
    """A peer service keeping the extended handshakes peers send (the peer may be gone by
    the time a test looks: two seeds part at once)."""

    def __init__(self) -> None:
        self.handshakes: list[ExtendedHandshake] = []

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        return {}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        return None

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        if isinstance(message, ExtendedHandshake):
            self.handshakes.append(message)
        return False

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        return None

    def tick(self, manager: PeerManager, now: float) -> None:
        return None


def natpmp_config(gateway_port: int, **changes: object) -> dict[str, object]:
    return {
        "natpmp": True,
        "natpmp_gateway": LOOPBACK,
        "natpmp_gateway_port": gateway_port,
        **changes,
    }


def mapped(session: Session) -> bool:
    return bool(session.port_mappings) and all(
        m.external_port is not None for m in session.port_mappings
    )


async def test_mapped_port_reaches_tracker_and_peers_and_is_deleted(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", (40_000,))
    gateway = Gateway(offset=1000)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery, serve_tracker((LOOPBACK, 0)) as tracker:
            _, gateway_port = await start_gateway(nursery, gateway)
            host, tracker_port = tracker.address[:2]
            url = f"udp://{host}:{tracker_port}/announce"
            torrent = make_torrent(folder, "v1")
            async with open_session(
                loopback_config(trackers=True, **natpmp_config(gateway_port))
            ) as seeder:
                port = seeder.listen_port
                await wait_until(lambda: mapped(seeder))
                # TCP and UDP (uTP shares the listen port number), each granted +1000.
                granted = {
                    (m.protocol, m.internal_port, m.external_port) for m in seeder.port_mappings
                }
                assert granted == {
                    (MappingProtocol.TCP, port, port + 1000),
                    (MappingProtocol.UDP, port, port + 1000),
                }
                assert seeder.external_port == port + 1000
                assert seeder.port_mapping.external_address == EXTERNAL
                seeding = await seeder.add_torrent(
                    torrent, TorrentOptions(folder.parent, extra_trackers=(url,))
                )
                assert seeding.listen_port == port + 1000
                await seeding.wait_complete()

                # The tracker lists the seeder at the mapped port.
                async with open_tracker_client(bind_v6=None) as client:
                    await wait_until(lambda: tracker.statistics().announces >= 1)
                    result = await client.announce(
                        url,
                        torrent.info.info_hash,
                        peer_id=b"-XX0000-natpmp-test1",
                        port=9,
                        left=1,
                        event=AnnounceEvent.STARTED,
                    )
                assert PeerAddress(IPv4Address(LOOPBACK), port + 1000) in result.peers
                assert PeerAddress(IPv4Address(LOOPBACK), port) not in result.peers

                # A peer hears the mapped port in our extended handshake (BEP 10 "p").
                async with open_session(loopback_config(listen=(("127.0.0.2", 0),))) as other:
                    heard = HandshakeRecorder()
                    other.manager.add_service(heard)
                    await other.add_torrent(
                        torrent,
                        TorrentOptions(tmp_path / "other", peers=(address_of(seeder),)),
                    )
                    await wait_until(lambda: bool(heard.handshakes))
                    assert heard.handshakes[0].p == port + 1000
                assert gateway.mappings  # kept while the session runs
            # Deleted on close.
            assert gateway.mappings == {}
            deletions = [r for r in gateway.requests if isinstance(r, MappingRequest)]
            assert sum(r.lifetime == 0 for r in deletions) == 2
            nursery.cancel_scope.cancel()


class FakeDht:
    """A DHT that says it is bound to ``address``, and records the announce ports of its
    lookups and the nodes peers name (their BEP 5 port messages)."""

    def __init__(self, address: PeerAddress) -> None:
        self._address = address
        self.ports: list[int | None] = []
        self.nodes: list[PeerAddress] = []

    @property
    def addresses(self) -> tuple[PeerAddress, ...]:
        return (self._address,)

    def add_node(self, address: PeerAddress) -> None:
        self.nodes.append(address)

    def set_ip_filter(self, ip_filter: object) -> int:
        return 0

    async def keep_finding(
        self,
        info_hash: bytes,
        *,
        interval: float,
        announce: bool,
        port: int | None,
        seed: bool,
        sink: object,
    ) -> NoReturn:
        self.ports.append(port)
        await trio.sleep_forever()


async def test_the_dht_hears_the_mapped_ports(tmp_path: Path) -> None:
    """The DHT's UDP port is mapped too; the DHT announces the mapped TCP port, and peers
    hear the mapped UDP port in our BEP 5 port message."""
    folder = write_content(tmp_path / "seed", (20_000,))
    torrent = make_torrent(folder, "v1")
    dht_port = 51413  # (nothing is bound there: the fake only says so)
    dht = FakeDht(PeerAddress(IPv4Address(LOOPBACK), dht_port))
    gateway = Gateway(offset=1000)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            _, gateway_port = await start_gateway(nursery, gateway)
            async with open_session(
                loopback_config(**natpmp_config(gateway_port), utp=False), dht=dht
            ) as seeder:
                port = seeder.listen_port
                await wait_until(lambda: mapped(seeder) and len(seeder.port_mappings) == 2)
                assert {(m.protocol, m.internal_port) for m in seeder.port_mappings} == {
                    (MappingProtocol.TCP, port),
                    (MappingProtocol.UDP, dht_port),
                }
                seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
                await wait_until(lambda: bool(dht.ports))
                assert dht.ports == [port + 1000]
                other_dht = FakeDht(PeerAddress(IPv4Address("127.0.0.2"), 9))
                async with open_session(
                    loopback_config(listen=(("127.0.0.2", 0),), utp=False), dht=other_dht
                ) as other:
                    await other.add_torrent(
                        torrent,
                        TorrentOptions(tmp_path / "other", peers=(address_of(seeder),)),
                    )
                    await wait_until(lambda: bool(other_dht.nodes))
                    assert other_dht.nodes[0] == PeerAddress(IPv4Address(LOOPBACK), dht_port + 1000)
                assert seeding.listen_port == port + 1000
            nursery.cancel_scope.cancel()


async def test_a_moved_mapping_is_told_from_then_on(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The gateway reboots and grants another port: the session's external port, the
    torrent's announce port and our "p" follow."""
    folder = write_content(tmp_path / "seed", (20_000,))
    gateway = Gateway(offset=1000)
    async with trio.open_nursery() as nursery:
        sock, gateway_port = await start_gateway(nursery, gateway)
        async with open_session(
            loopback_config(**natpmp_config(gateway_port), utp=False)
        ) as session:
            port = session.listen_port
            # Virtual seconds; no torrent yet: a disk thread at work would let the clock
            # jump while nothing waits on it.
            with trio.fail_after(60):
                await wait_until(lambda: session.external_port == port + 1000)
                assert gateway.client is not None
                await sock.sendto(gateway.reboot(offset=2000), gateway.client)
                # RFC 6886 3.7: mappings are renewed within 5 s of a reset.
                await wait_until(lambda: session.external_port == port + 2000)
            assert session.port_mapping.handshake_fields(cast(Peer, None)) == {"p": port + 2000}
            seeding = await session.add_torrent(
                make_torrent(folder, "v1"), TorrentOptions(folder.parent)
            )
            assert seeding.listen_port == port + 2000
        nursery.cancel_scope.cancel()


async def test_off_by_default_nothing_is_sent(tmp_path: Path) -> None:
    gateway = Gateway()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            _, gateway_port = await start_gateway(nursery, gateway)
            config = loopback_config(natpmp_gateway=LOOPBACK, natpmp_gateway_port=gateway_port)
            assert not config.natpmp
            async with open_session(config) as session:
                folder = write_content(tmp_path / "seed", (10_000,))
                seeding = await session.add_torrent(
                    make_torrent(folder, "v1"), TorrentOptions(folder.parent)
                )
                await seeding.wait_complete()
                # A mapper would have asked at once, before the torrent was even added.
                assert session.port_mappings == ()
                assert session.port_mapping.mapper is None
                assert session.external_port == session.listen_port
                assert seeding.listen_port == session.listen_port
            assert gateway.requests == []
            nursery.cancel_scope.cancel()


async def test_a_silent_gateway_holds_nothing_up(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    gateway = Gateway(silent=True)
    async with trio.open_nursery() as nursery:
        _, gateway_port = await start_gateway(nursery, gateway)
        with trio.fail_after(5):  # virtual seconds: nothing waits on the gateway
            async with open_session(
                loopback_config(**natpmp_config(gateway_port), utp=False)
            ) as session:
                await wait_until(lambda: len(gateway.requests) >= 3)  # retransmitting
                assert session.external_port == session.listen_port
                assert [m.external_port for m in session.port_mappings] == [None]
                opened = trio.current_time()
            # Nothing was granted: nothing to delete, the close does not wait for it.
            assert trio.current_time() - opened < 1.0
        nursery.cancel_scope.cancel()


async def test_a_gateway_that_is_not_there(autojump_clock: trio.testing.MockClock) -> None:
    """Nobody listens on the gateway's port: ICMP errors, no answer; the session runs."""
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as taken:
        await taken.bind((LOOPBACK, 0))
        free_port = taken.getsockname()[1]
    with trio.fail_after(5):
        async with open_session(loopback_config(**natpmp_config(free_port))) as session:
            mapper = session.port_mapping.mapper
            assert mapper is not None
            await wait_until(lambda: mapper.statistics().retransmitted >= 2)
            assert session.external_port == session.listen_port


async def test_no_gateway_found_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("bip._client._port_mapping.default_gateway", lambda: None)
    caplog.set_level(logging.INFO, logger="bip.client")
    config = loopback_config(natpmp=True)
    async with open_session_port_mapping(
        config, tcp_port=6881, tcp_ports=(6881,), udp_ports=(6881,)
    ) as mapping:
        assert mapping.mapper is None
        assert mapping.external_tcp_port == 6881
    [record] = [r for r in caplog.records if "NAT-PMP" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "no default gateway" in record.getMessage()


async def test_a_mapper_that_cannot_start_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: object, **kwargs: object) -> object:
        raise OSError(99, "Cannot assign requested address")

    monkeypatch.setattr("bip._client._port_mapping.open_port_mapper", refuse)
    async with open_session_port_mapping(
        loopback_config(natpmp=True, natpmp_gateway="192.168.1.1"),
        tcp_port=6881,
        tcp_ports=(6881,),
        udp_ports=(),
    ) as mapping:
        assert mapping.mapper is None
        assert mapping.mappings() == ()
    assert any(
        r.levelno == logging.WARNING and "Cannot assign" in r.getMessage() for r in caplog.records
    )


async def test_global_listen_addresses_are_not_mapped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def forbidden(*args: object, **kwargs: object) -> object:
        raise AssertionError("nothing may be mapped")

    monkeypatch.setattr("bip._client._port_mapping.open_port_mapper", forbidden)
    caplog.set_level(logging.INFO, logger="bip.client")
    listening = [PeerAddress(IPv4Address("81.2.69.160"), 6881)]
    assert mappable_ports(listening) == ()
    config = loopback_config(
        natpmp=True, natpmp_gateway="192.168.1.1", listen=(("81.2.69.160", 6881),)
    )
    async with open_session_port_mapping(
        config, tcp_port=6881, tcp_ports=mappable_ports(listening), udp_ports=(6881,)
    ) as mapping:
        assert mapping.mapper is None
    assert any(r.levelno == logging.INFO and "global" in r.getMessage() for r in caplog.records)


def test_mappable_ports() -> None:
    def at(host: str, port: int) -> PeerAddress:
        return PeerAddress(ip_address(host), port)

    assert mappable_ports(
        [
            at("192.168.1.5", 6881),
            at("0.0.0.0", 6882),
            at("::", 6883),  # IPv6 alone (our sockets are IPV6_V6ONLY): no IPv4 reaches it
            at("2001:db8::1", 6884),  # IPv6: no NAT-PMP
            at("81.2.69.160", 6885),  # global
            at("10.0.0.1", 6881),  # a repeat
            at("10.0.0.1", 0),  # not bound
            at("::ffff:192.168.1.6", 6886),  # IPv4-mapped: an IPv4 socket
        ]
    ) == (6881, 6882, 6886)
    assert mappable_ports([at("::", 6881)]) == ()


async def test_beside_a_wildcard_ipv6_listener_only_the_ipv4_one_is_mapped() -> None:
    """listen=(("::", p), ("0.0.0.0", q)): ``::`` takes no IPv4, so a gateway forwarding to
    p would reach nothing; q alone is mapped (TCP, and UDP for uTP on the same ports)."""
    listening = [PeerAddress.parse("[::]:6882"), PeerAddress.parse("0.0.0.0:6881")]
    assert mappable_ports(listening) == (6881,)
    gateway = Gateway()
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            _, gateway_port = await start_gateway(nursery, gateway)
            config = loopback_config(
                **natpmp_config(gateway_port), listen=(("::", 6882), ("0.0.0.0", 6881))
            )
            async with open_session_port_mapping(
                config,
                tcp_port=6881,
                tcp_ports=mappable_ports(listening),
                udp_ports=mappable_ports(listening),
            ) as mapping:
                await wait_until(
                    lambda: (
                        bool(mapping.mappings())
                        and all(m.external_port is not None for m in mapping.mappings())
                    )
                )
                assert {(m.protocol, m.internal_port) for m in mapping.mappings()} == {
                    (MappingProtocol.TCP, 6881),
                    (MappingProtocol.UDP, 6881),
                }
                assert mapping.external_tcp_port == 6881 + gateway.offset
            asked = {r.internal_port for r in gateway.requests if isinstance(r, MappingRequest)}
            assert asked == {6881}
            nursery.cancel_scope.cancel()


async def test_the_session_tells_the_ipv4_listener_s_mapped_port_when_ipv6_is_listed_first() -> (
    None
):
    gateway = Gateway(offset=1000)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            _, gateway_port = await start_gateway(nursery, gateway)
            config = loopback_config(
                **natpmp_config(gateway_port), listen=(("::1", 0), (LOOPBACK, 0))
            )
            async with open_session(config) as session:
                v6, v4 = session.handshaker.listen_addresses
                assert v6.family == 6
                await wait_until(lambda: mapped(session))
                # Trackers, the DHT and peers hear the IPv4 listener's mapped port.
                assert session.external_port == v4.port + 1000
            nursery.cancel_scope.cancel()


def test_config_checks_the_gateway() -> None:
    assert loopback_config(natpmp_gateway="192.168.1.1").natpmp_gateway == "192.168.1.1"
    with pytest.raises(ValueError, match="IPv4"):
        loopback_config(natpmp_gateway="fe80::1")
    with pytest.raises(ValueError, match="IPv4"):
        loopback_config(natpmp_gateway="router.lan")
    with pytest.raises(TypeError):
        loopback_config(natpmp_gateway=3232235777)
    with pytest.raises(ValueError, match="natpmp_gateway_port"):
        loopback_config(natpmp_gateway_port=0)
    with pytest.raises(TypeError, match="natpmp"):
        loopback_config(natpmp="yes")
    assert loopback_config().natpmp_gateway_port == NATPMP_PORT


def test_config_checks_the_announce_address() -> None:
    # RFC 6886 3.2.1's group by default; the tests' sessions listen on no real group.
    assert ClientConfig().natpmp_announce_address == "224.0.0.1:5350"
    assert loopback_config().natpmp_announce_address is None
    assert loopback_config(natpmp_announce_address="127.0.0.1:5350").natpmp_announce_address
    for bad in ("224.0.0.1:0", "224.0.0.1", "[ff02::1]:5350", "gateway.lan:5350"):
        with pytest.raises(ValueError, match="natpmp_announce_address"):
            loopback_config(natpmp_announce_address=bad)
    with pytest.raises(TypeError, match="natpmp_announce_address"):
        loopback_config(natpmp_announce_address=("224.0.0.1", 5350))


async def test_the_announce_address_is_listened_on() -> None:
    gateway = Gateway()
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as probe:
        await probe.bind((LOOPBACK, 0))
        free = probe.getsockname()[1]  # a unicast stand-in for the group
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            _, gateway_port = await start_gateway(nursery, gateway)
            for announce, listening in ((f"{LOOPBACK}:{free}", (LOOPBACK, free)), (None, None)):
                config = loopback_config(
                    **natpmp_config(gateway_port), natpmp_announce_address=announce
                )
                async with open_session_port_mapping(
                    config, tcp_port=6881, tcp_ports=(6881,), udp_ports=()
                ) as mapping:
                    assert mapping.mapper is not None
                    assert mapping.mapper.announce_address == listening
            nursery.cancel_scope.cancel()


def session_args(*options: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_session_arguments(parser)
    return parser.parse_args(["--no-trackers", *options])


def test_cli_options() -> None:
    config = config_from_args(session_args())
    assert (config.natpmp, config.natpmp_gateway) == (False, None)
    config = config_from_args(session_args("--natpmp"))
    assert (config.natpmp, config.natpmp_gateway) == (True, None)
    config = config_from_args(session_args("--natpmp-gateway", "192.168.1.1"))
    assert (config.natpmp, config.natpmp_gateway) == (True, "192.168.1.1")
    with pytest.raises(CLIError, match="--natpmp-gateway"):
        config_from_args(session_args("--natpmp-gateway", "::1"))
    config = config_from_args(session_args("--natpmp-gateway6", "fe80::1%lo"))
    assert (config.natpmp, config.natpmp_gateway6) == (True, "fe80::1%lo")
    for bad in ("192.168.1.1", "fe80::1", "ff02::1", "x"):
        with pytest.raises(CLIError, match="--natpmp-gateway6"):
            config_from_args(session_args("--natpmp-gateway6", bad))
    parser = argparse.ArgumentParser()
    add_session_arguments(parser)
    assert "off by default" in " ".join(parser.format_help().split())


def test_router_votes_and_mapped_ports_are_ours() -> None:
    class Ours:
        def __init__(self) -> None:
            self.addresses: set[PeerAddress] = set()

        def add_our_address(self, address: PeerAddress) -> None:
            self.addresses.add(address)

        def remove_our_address(self, address: PeerAddress) -> None:
            self.addresses.discard(address)

    router: list[IPv4Address | None] = [None]
    users = Ours()
    external = ExternalAddresses(ExternalIPVoter(), ports=(6881,), users=[users])
    external.set_router_address(lambda: router[0])
    manager = cast(PeerManager, None)
    external.tick(manager, 0.0)
    assert external.voter.statistics().votes == 0  # the gateway has not said yet
    router[0] = IPv4Address("81.2.69.160")
    external.tick(manager, 1.0)
    external.tick(manager, 2.0)  # the same again: one vote per interval
    assert external.voter.statistics().votes == 1
    assert not external.addresses  # one voter never decides
    # A peer agrees: decided (the gateway's vote weighs as the DHT's).
    external.vote(IPv4Address("81.2.69.160"), IPv4Address("5.6.7.8"), VoteSource.PEER, 3.0)
    assert external.addresses == (PeerAddress(IPv4Address("81.2.69.160"), 6881),)
    external.set_mapped_ports([7881])
    assert set(external.addresses) == {
        PeerAddress(IPv4Address("81.2.69.160"), 6881),
        PeerAddress(IPv4Address("81.2.69.160"), 7881),
    }
    assert users.addresses == set(external.addresses)
    external.set_mapped_ports([8881])  # the gateway moved it
    assert users.addresses == {
        PeerAddress(IPv4Address("81.2.69.160"), 6881),
        PeerAddress(IPv4Address("81.2.69.160"), 8881),
    }
    external.set_mapped_ports([])
    assert users.addresses == {PeerAddress(IPv4Address("81.2.69.160"), 6881)}
