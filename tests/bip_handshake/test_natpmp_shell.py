"""The NAT-PMP trio shell against a fake gateway on 127.0.0.1 (virtual time)."""

from __future__ import annotations

import socket
import sys
from functools import partial
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
import trio
import trio.testing
from _natpmp_gateway import EXTERNAL, FakeGateway, serve_gateway

from bip_handshake import _natpmp_shell as natpmp_shell
from bip_handshake._errors import LocalProtocolError
from bip_handshake._natpmp import (
    ExternalAddressRequest,
    ExternalAddressResponse,
    MappingProtocol,
    MappingRemoved,
    MappingRequest,
    NatPmpAddressChanged,
    NatPmpEvent,
    PortMapped,
)
from bip_handshake._natpmp_shell import (
    PortMapper,
    _source_address,
    default_gateway,
    open_port_mapper,
)
from bip_handshake._pcp import PcpMapRequest

LOOPBACK = "127.0.0.1"


async def wait_mapped(mapper: PortMapper, count: int) -> None:
    with trio.fail_after(10):
        while sum(m.external_port is not None for m in mapper.mappings()) < count:
            await mapper.wait_changed()


async def test_maps_keeps_and_deletes(autojump_clock: trio.testing.MockClock) -> None:
    gateway = FakeGateway(taken={6881})
    events: list[NatPmpEvent] = []
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(serve_gateway, gateway)
        async with open_port_mapper(
            LOOPBACK,
            gateway_port=port,
            bind_host=LOOPBACK,
            on_event=events.append,
            announce_address=None,
        ) as mapper:
            await wait_mapped(mapper, 2)
            assert mapper.external_address == EXTERNAL
            assert mapper.external_port("tcp", 6881) == 6882  # 6881 was taken
            assert mapper.external_port(MappingProtocol.UDP, 6881) == 6882
            assert mapper.external_port("tcp", 1234) is None
            assert str(mapper.gateway) == f"127.0.0.1:{port}"
            assert NatPmpAddressChanged(EXTERNAL) in events
            assert len([e for e in events if isinstance(e, PortMapped)]) == 2
            assert gateway.mappings.keys() == {
                (MappingProtocol.TCP, 6881),
                (MappingProtocol.UDP, 6881),
            }
            # Kept alive: renewed halfway through each hour.
            await trio.sleep(3 * 3600)
            renewals = [r for _, r in gateway.requests if isinstance(r, MappingRequest)]
            assert len(renewals) >= 2 * 6
            assert all(r.lifetime == 3600 for r in renewals)
            assert mapper.statistics().timeouts == 0
        # Deleted on exit.
        assert gateway.mappings == {}
        _, last = gateway.requests[-1]
        assert isinstance(last, MappingRequest)
        assert last.lifetime == 0
        nursery.cancel_scope.cancel()


async def test_add_and_remove_while_open(autojump_clock: trio.testing.MockClock) -> None:
    gateway = FakeGateway()
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(serve_gateway, gateway)
        async with open_port_mapper(
            LOOPBACK, [], gateway_port=port, bind_host=LOOPBACK, announce_address=None
        ) as mapper:
            await trio.sleep(1)
            assert mapper.mappings() == ()
            mapping_id = mapper.add_mapping("udp", 7000, external_port=7001)
            await wait_mapped(mapper, 1)
            assert mapper.external_port("udp", 7000) == 7001
            mapper.remove_mapping(mapping_id)
            with trio.fail_after(5):
                while mapper.mappings():
                    await mapper.wait_changed()
            assert gateway.mappings == {}
            with pytest.raises(LocalProtocolError):
                mapper.add_mapping("sctp", 1)  # type: ignore[arg-type]
            with pytest.raises(LocalProtocolError):
                mapper.remove_mapping(mapping_id)
        nursery.cancel_scope.cancel()


async def test_spoofed_answers_are_ignored(autojump_clock: trio.testing.MockClock) -> None:
    gateway = FakeGateway()
    async with trio.open_nursery() as nursery:
        gateway_sock, port = await nursery.start(serve_gateway, gateway)
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as spoofer:
            await spoofer.bind((LOOPBACK, 0))
            async with open_port_mapper(
                LOOPBACK,
                [("tcp", 6881)],
                gateway_port=port,
                bind_host=LOOPBACK,
                announce_address=None,
            ) as mapper:
                await wait_mapped(mapper, 1)
                ours = mapper._sock.getsockname()
                lie = ExternalAddressResponse(0, 1 << 20, IPv4Address("6.6.6.6")).encode()
                await spoofer.sendto(lie, ours)  # right host, wrong port
                await spoofer.sendto(b"\xff" * 3, ours)
                await gateway_sock.sendto(b"\x00\x80", ours)  # from the gateway, but garbage
                await trio.sleep(1)
                assert mapper.external_address == EXTERNAL
                stats = mapper.statistics()
                assert (stats.wrong_source, stats.malformed) == (2, 1)
        nursery.cancel_scope.cancel()


async def test_silent_gateway_and_bounded_exit(autojump_clock: trio.testing.MockClock) -> None:
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as silent:
        await silent.bind((LOOPBACK, 0))
        port = silent.getsockname()[1]
        async with open_port_mapper(
            LOOPBACK,
            gateway_port=port,
            bind_host=LOOPBACK,
            close_timeout=1.0,
            announce_address=None,
        ) as mapper:
            await trio.sleep(130)
            assert mapper.statistics().timeouts == 1
            assert all(m.external_port is None for m in mapper.mappings())
            start = trio.current_time()
        # No mapping request went out in NAT-PMP (the address request failed first, and
        # took them all along), and the gateway never answered PCP: nothing to delete, the
        # exit is immediate.
        assert trio.current_time() == start


async def test_an_immediate_close_still_tells_its_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A block that ends before any mapping went out: the close ends at once, and its
    MappingRemoved events still reach on_event."""
    events: list[NatPmpEvent] = []
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as silent:
        await silent.bind((LOOPBACK, 0))
        port = silent.getsockname()[1]
        async with open_port_mapper(
            LOOPBACK,
            gateway_port=port,
            bind_host=LOOPBACK,
            on_event=events.append,
            announce_address=None,
        ) as mapper:
            pass
    assert mapper.mappings() == ()
    assert sum(isinstance(event, MappingRemoved) for event in events) == 2


async def test_cancelled_block_still_deletes(autojump_clock: trio.testing.MockClock) -> None:
    gateway = FakeGateway()
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(serve_gateway, gateway)
        with trio.move_on_after(100):
            async with open_port_mapper(
                LOOPBACK, gateway_port=port, bind_host=LOOPBACK, announce_address=None
            ):
                await trio.sleep_forever()
        assert gateway.mappings == {}
        nursery.cancel_scope.cancel()


async def test_exit_is_bounded_when_deletions_go_unanswered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gateway = FakeGateway()
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(serve_gateway, gateway)
        async with open_port_mapper(
            LOOPBACK,
            gateway_port=port,
            bind_host=LOOPBACK,
            close_timeout=0.5,
            announce_address=None,
        ) as mapper:
            await wait_mapped(mapper, 2)
            gateway.silent = True
            start = trio.current_time()
        assert start + 0.25 < trio.current_time() <= start + 0.5  # tried, then gave up
        nursery.cancel_scope.cancel()


async def test_the_blocks_own_error_comes_out_unwrapped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gateway = FakeGateway()
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(serve_gateway, gateway)

        async def fail_inside() -> None:
            async with open_port_mapper(
                LOOPBACK, gateway_port=port, bind_host=LOOPBACK, announce_address=None
            ) as mapper:
                await wait_mapped(mapper, 2)
                raise KeyError("the caller's own")

        with pytest.raises(KeyError):
            await fail_inside()
        assert gateway.mappings == {}
        nursery.cancel_scope.cancel()


# -- PCP ---------------------------------------------------------------------------------------


async def test_a_pcp_gateway_maps_over_pcp(autojump_clock: trio.testing.MockClock) -> None:
    gateway = FakeGateway(pcp=True, taken={6881})
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(serve_gateway, gateway)
        # Bound to every address: our address toward the gateway comes off the route.
        async with open_port_mapper(LOOPBACK, gateway_port=port, announce_address=None) as mapper:
            await wait_mapped(mapper, 2)
            assert mapper.protocol == mapper.statistics().protocol == "pcp"
            assert mapper.external_address == EXTERNAL
            assert mapper.external_port("tcp", 6881) == 6882
            requests = [r for _, r in gateway.requests]
            assert all(isinstance(r, PcpMapRequest) for r in requests)
            assert {r.client_address for r in requests} == {IPv4Address(LOOPBACK)}  # type: ignore[union-attr]
            await trio.sleep(2 * 3600)  # renewed at 1/2 to 5/8 of each hour
            assert len(gateway.requests) >= 2 * 3
            assert mapper.statistics().timeouts == 0
        assert gateway.mappings == {}  # deleted on exit: MAP with lifetime 0
        _, last = gateway.requests[-1]
        assert isinstance(last, PcpMapRequest)
        assert last.lifetime == 0
        nursery.cancel_scope.cancel()


async def test_a_gateway_silent_to_pcp_maps_over_natpmp(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gateway = FakeGateway(ignore_pcp=True)
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(serve_gateway, gateway)
        start = trio.current_time()
        async with open_port_mapper(
            LOOPBACK, gateway_port=port, bind_host=LOOPBACK, announce_address=None
        ) as mapper:
            assert mapper.statistics().protocol is None
            await wait_mapped(mapper, 2)
            assert trio.current_time() - start < 2.0
            assert mapper.protocol == "natpmp"
            kinds = [type(r) for _, r in gateway.requests]
            assert kinds[:4] == [PcpMapRequest] * 3 + [ExternalAddressRequest]
        assert gateway.mappings == {}
        nursery.cancel_scope.cancel()


async def test_pcp_off_speaks_natpmp_from_the_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gateway = FakeGateway(pcp=True)
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(serve_gateway, gateway)
        async with open_port_mapper(
            LOOPBACK,
            [("udp", 7000)],
            gateway_port=port,
            bind_host=LOOPBACK,
            pcp=False,
            announce_address=None,
        ) as mapper:
            assert mapper.protocol == "natpmp"
            await wait_mapped(mapper, 1)
        assert not any(isinstance(r, PcpMapRequest) for _, r in gateway.requests)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("moved", [True, False], ids=["moved", "nat-between"])
async def test_our_address_is_read_again_after_a_mismatch_and_before_a_probe(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, moved: bool
) -> None:
    # On opening we read an address the gateway does not see our packets come from: the
    # gateway answers ADDRESS_MISMATCH, as miniupnpd does. Read again: a new one (a DHCP
    # renewal had just moved us) brings PCP back at once; the same one (a NAT between
    # us) leaves NAT-PMP speaking until PCP is probed again an hour later, our address read
    # before the probe (the same again: NAT-PMP again). The minute's reads come on top.
    reads: list[float] = []

    async def source_address(
        gateway: IPv4Address | IPv6Address, port: int, bind_host: str, *, quiet: bool = False
    ) -> IPv4Address | None:
        reads.append(trio.current_time())
        if not moved or len(reads) == 1:
            return IPv4Address("192.0.2.77")
        return await _source_address(gateway, port, bind_host, quiet=quiet)

    monkeypatch.setattr(natpmp_shell, "_source_address", source_address)
    gateway = FakeGateway(pcp=True)
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(partial(serve_gateway, gateway, check_source=True))
        start = trio.current_time()
        async with open_port_mapper(
            LOOPBACK, [("tcp", 6881)], gateway_port=port, bind_host=LOOPBACK, announce_address=None
        ) as mapper:
            await wait_mapped(mapper, 1)
            assert trio.current_time() - start < 1.0  # mapped at once either way
            assert len(reads) == 2  # on opening, and after the mismatch
            kinds = [type(r) for _, r in gateway.requests]
            await trio.sleep(3700)
            # Each minute besides; none between (a probe's read is at its send).
            minutes = [t for t in reads[2:] if (t - start) % 60 < 1.0]
            assert len(minutes) >= 3700 // 60
            probes = [t for t, r in gateway.requests if isinstance(r, PcpMapRequest)]
            if moved:
                assert mapper.protocol == "pcp"
                assert kinds == [PcpMapRequest, PcpMapRequest]
                assert len(reads) == 2 + len(minutes)  # PCP spoken: no probe
                assert not any(isinstance(r, MappingRequest) for _, r in gateway.requests)
            else:
                assert kinds == [PcpMapRequest, ExternalAddressRequest, MappingRequest]
                # PCP is probed again an hour later, our address read before it: the same,
                # refused again, NAT-PMP again (the renewal it carries grants the same
                # port: no event tells the switches).
                assert mapper.protocol == "natpmp"
                assert 3600 <= probes[-1] - start <= 3700
                # The minute's read falls on the probe's instant: two reads there prove the
                # probe read our address afresh.
                assert reads.count(probes[-1]) == 2
            probe = [r for t, r in gateway.requests if isinstance(r, PcpMapRequest)][-1]
            ours = LOOPBACK if moved else "192.0.2.77"
            assert probe.client_address == IPv4Address(ours)
            assert mapper.external_port("tcp", 6881) == 6881
        assert gateway.mappings == {}
        nursery.cancel_scope.cancel()


async def test_no_route_to_the_gateway_means_natpmp_alone() -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of ours: the probe cannot bind to it.
    assert await _source_address(IPv4Address(LOOPBACK), 5351, "192.0.2.1") is None
    assert await _source_address(IPv4Address(LOOPBACK), 5351, LOOPBACK) == IPv4Address(LOOPBACK)


async def test_bad_arguments() -> None:
    with pytest.raises(LocalProtocolError):
        async with open_port_mapper("gateway.local", announce_address=None):
            pass  # pragma: no cover
    with pytest.raises(LocalProtocolError):
        async with open_port_mapper(LOOPBACK, close_timeout=-1, announce_address=None):
            pass  # pragma: no cover
    with pytest.raises(LocalProtocolError):
        async with open_port_mapper(LOOPBACK, [("tcp", 0)], announce_address=None):
            pass  # pragma: no cover
    with pytest.raises(LocalProtocolError):
        async with open_port_mapper(LOOPBACK, pcp="yes", announce_address=None):  # type: ignore[arg-type]
            pass  # pragma: no cover


ROUTES = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
wlan0\t00000000\t0200A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
tun0\t00000000\t0300A8C0\t0001\t0\t0\t1\t00000000\t0\t0\t0
bad\tzz\t0100A8C0\t0003\t0\t0\t1\t00000000\t0\t0\t0
short
"""


def test_default_gateway_reads_the_routing_table(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text(ROUTES, encoding="ascii")
    # The lowest-metric default route with a gateway (tun0's has none), in host byte order.
    expected = IPv4Address(int("0100A8C0", 16).to_bytes(4, sys.byteorder))
    assert default_gateway(table) == expected
    table.write_text(ROUTES.splitlines()[0] + "\n", encoding="ascii")
    assert default_gateway(table) is None
    assert default_gateway(tmp_path / "missing") is None
    table.write_bytes(b"\xff\xfe")
    assert default_gateway(table) is None


# -- the gateway's announcements (more in test_natpmp_announce.py) -----------------------------


async def test_the_announcement_port_is_shared(autojump_clock: trio.testing.MockClock) -> None:
    """SO_REUSEADDR, and SO_REUSEPORT where it exists: every program on the host that maps
    ports listens on the group's port together (here a stand-in on loopback)."""
    async with open_port_mapper(
        LOOPBACK, [], gateway_port=9, bind_host=LOOPBACK, announce_address=(LOOPBACK, 0)
    ) as first:
        sock = first._announce_sock
        assert sock is not None
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
        if hasattr(socket, "SO_REUSEPORT"):
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
        assert first.announce_address is not None
        async with open_port_mapper(
            LOOPBACK,
            [],
            gateway_port=9,
            bind_host=LOOPBACK,
            announce_address=first.announce_address,
        ) as second:
            assert second.announce_address == first.announce_address
    assert sock.fileno() == -1  # closed with the block
    assert natpmp_shell.NATPMP_ANNOUNCE_ADDRESS == ("224.0.0.1", 5350)
