"""PCP pinholes in the session: with ``natpmp`` on, the IPv6 listeners' ports are opened on
the IPv6 router (a fake PCP server on [::1]) and the grants told as our ports; the config's
IPv6 fields are checked; no router, or no global address, costs an INFO record; and no
test reaches a real router (conftest's guard)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv6Address

import pytest
import trio
from _engine_helpers import loopback_config

from bip._client import ClientConfig
from bip._client import _port_mapping as port_mapping
from bip._client._external_address import ExternalAddresses
from bip._client._port_mapping import open_session_port_mapping, pinhole_ports
from bip_handshake import (
    ExternalIPVoter,
    MappingProtocol,
    PeerAddress,
    PortMapper,
    open_port_mapper,
)
from bip_handshake._pcp import PcpMapResponse, PcpResult, decode_pcp_request

TCP, UDP = MappingProtocol.TCP, MappingProtocol.UDP


async def serve_router(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """A PCP-only IPv6 firewall on [::1] opening each pinhole on the port asked for."""
    with trio.socket.socket(trio.socket.AF_INET6, trio.socket.SOCK_DGRAM) as sock:
        await sock.bind(("::1", 0))
        task_status.started(sock.getsockname()[1])
        while True:
            data, source = await sock.recvfrom(2048)
            request = decode_pcp_request(data)
            answer = PcpMapResponse(
                PcpResult.SUCCESS,
                request.lifetime,
                1000,
                request.nonce,
                request.protocol,
                request.internal_port,
                request.internal_port if request.lifetime else 0,
                request.client_address,
            )
            await sock.sendto(answer.encode(), source)


def pcp6_config(router_port: int, **changes: object) -> ClientConfig:
    return loopback_config(
        natpmp=True,
        natpmp_gateway="127.0.0.1",
        natpmp_gateway6="::1",
        natpmp_gateway_port=router_port,
        listen=(("::1", 6881),),
        **changes,
    )


async def test_ipv6_listeners_get_pinholes_told_as_our_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[dict[str, object]] = []

    @asynccontextmanager
    async def spy(*args: object, **kwargs: object) -> AsyncIterator[PortMapper]:
        asked.append(kwargs)
        async with open_port_mapper(*args, **kwargs) as mapper:  # type: ignore[arg-type]
            yield mapper

    monkeypatch.setattr(port_mapping, "open_port_mapper", spy)
    listening = [PeerAddress.parse("[::1]:6881"), PeerAddress.parse("127.0.0.1:6882")]
    assert pinhole_ports(listening) == (6881,)
    external = ExternalAddresses(ExternalIPVoter(), ports=(6881,))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_router)
            async with open_session_port_mapping(
                pcp6_config(port),
                tcp_port=6881,
                tcp_ports=(),  # no IPv4 listener: nothing for NAT-PMP
                udp_ports=(),
                external=external,
                tcp_ports6=pinhole_ports(listening),
                udp_ports6=pinhole_ports(listening),
            ) as mapping:
                assert mapping.mapper is None
                assert mapping.mapper6 is not None
                while not (
                    mapping.mappings()
                    and all(m.external_port is not None for m in mapping.mappings())
                ):
                    await mapping.mapper6.wait_changed()
                assert {(m.protocol, m.internal_port) for m in mapping.mappings()} == {
                    (TCP, 6881),
                    (UDP, 6881),
                }
                assert mapping.external_tcp_port == 6881
                assert mapping.external_port(UDP, 6881) == 6881
                assert mapping.mapped_ports() == (6881,)
                assert mapping.mapper6.external_address == IPv6Address("::1")
                assert mapping.external_address is None  # the IPv4 gateway's alone
            nursery.cancel_scope.cancel()
    # No natpmp_announce_address6: none listened on, said as such (not the IPv4 group).
    [kwargs] = asked
    assert kwargs["announce_address"] is None


async def test_no_pinholes_without_a_router_or_a_global_address(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bip.client")
    monkeypatch.setattr("bip._client._port_mapping.default_gateway6", lambda: None)
    config = loopback_config(natpmp=True, listen=(("::1", 6881),))
    async with open_session_port_mapping(
        config, tcp_port=6881, tcp_ports=(), udp_ports=(), tcp_ports6=(6881,)
    ) as mapping:
        assert mapping.mapper6 is None
    assert any("no IPv6 default router" in r.getMessage() for r in caplog.records)
    caplog.clear()
    # A unique local address alone: nothing to open (said at INFO, no socket opened).
    config = loopback_config(natpmp=True, natpmp_gateway6="fd00::1", listen=(("fd00::2", 6881),))
    async with open_session_port_mapping(
        config, tcp_port=6881, tcp_ports=(), udp_ports=(), tcp_ports6=(6881,)
    ) as mapping:
        assert mapping.mapper6 is None
    [record] = [r for r in caplog.records if "pinhole" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert "no global IPv6 address" in record.getMessage()
    # natpmp off, or no IPv6 port: nothing asked.
    async with open_session_port_mapping(
        loopback_config(natpmp_gateway6="::1"),
        tcp_port=6881,
        tcp_ports=(),
        udp_ports=(),
        tcp_ports6=(6881,),
    ) as mapping:
        assert mapping.mapper6 is None


def test_config_checks_the_ipv6_fields() -> None:
    assert ClientConfig(natpmp_gateway6="fe80::1%eth0").natpmp_gateway6 == "fe80::1%eth0"
    assert ClientConfig(natpmp_announce_address6="[ff02::1]:5350").natpmp_gateway6 is None
    for bad in ("192.168.1.1", "::ffff:10.0.0.1", "::", "ff02::1", "router"):
        with pytest.raises(ValueError, match="natpmp_gateway6"):
            ClientConfig(natpmp_gateway6=bad)
    # Every link has its fe80::/10: a link-local router needs its interface.
    with pytest.raises(ValueError, match="needs its interface"):
        ClientConfig(natpmp_gateway6="fe80::1")
    with pytest.raises(TypeError):
        ClientConfig(natpmp_gateway6=IPv6Address("::1"))  # type: ignore[arg-type]
    for bad in ("224.0.0.1:5350", "[ff02::1]:0", "[::ffff:10.0.0.1]:5350", "ff02::1"):
        with pytest.raises(ValueError, match="natpmp_announce_address6"):
            ClientConfig(natpmp_announce_address6=bad)


async def test_no_test_reaches_a_real_router(caplog: pytest.LogCaptureFixture) -> None:
    """conftest's guard: with ``natpmp`` on and no gateway configured, a session finds no
    router, IPv4 or IPv6 (the real default routes are never read in a test)."""
    caplog.set_level(logging.INFO, logger="bip.client")
    async with open_session_port_mapping(
        loopback_config(natpmp=True),
        tcp_port=6881,
        tcp_ports=(6881,),
        udp_ports=(),
        tcp_ports6=(6881,),
    ) as mapping:
        assert (mapping.mapper, mapping.mapper6) == (None, None)
    said = [r.getMessage() for r in caplog.records]
    assert any("no default gateway found" in m for m in said)
    assert any("no IPv6 default router found" in m for m in said)
