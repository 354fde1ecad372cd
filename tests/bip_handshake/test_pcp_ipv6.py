"""PCP pinholes for an IPv6 firewall: the client core with an IPv6 gateway (PCP alone, no
NAT-PMP fallback), fed by hand; the shell against a fake PCP server on [::1] (virtual time);
the IPv6 routing table; and the lock around the shell's reads of our address."""

from __future__ import annotations

import logging
import random
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
import trio
import trio.testing

from bip_handshake import _natpmp_shell as natpmp_shell
from bip_handshake._compact import PeerAddress
from bip_handshake._errors import LocalProtocolError
from bip_handshake._natpmp import (
    NATPMP_MAX_ATTEMPTS,
    NATPMP_RETRY_MAX,
    NATPMP_RETRY_MIN,
    ExternalAddressResponse,
    MappingFailed,
    MappingProtocol,
    NatPmpAddressChanged,
    NatPmpClient,
    NatPmpErrorResponse,
    NatPmpEvent,
    NatPmpResult,
    PortMapped,
)
from bip_handshake._natpmp_shell import PortMapper, default_gateway6, open_port_mapper
from bip_handshake._pcp import (
    PcpAnnounceResponse,
    PcpError,
    PcpMapRequest,
    PcpMapResponse,
    PcpResult,
    decode_pcp_request,
)

TCP, UDP = MappingProtocol.TCP, MappingProtocol.UDP
ROUTER = IPv6Address("2001:db8::1")
OURS = IPv6Address("2001:db8::5")
ROUTER_ADDRESS = PeerAddress(ROUTER, 5351)


def new_client(**changes: object) -> NatPmpClient:
    settings: dict[str, object] = {"rng": random.Random(7), "client_address": OURS, **changes}
    client = NatPmpClient(ROUTER, **settings)  # type: ignore[arg-type]
    client.add_mapping(TCP, 6881, now=0.0)
    return client


def sent(client: NatPmpClient, now: float) -> PcpMapRequest:
    [(data, destination)] = client.datagrams_to_send(now)
    assert destination == ROUTER_ADDRESS
    return decode_pcp_request(data)


def grant(request: PcpMapRequest, *, epoch: int = 1000, result: int = 0) -> bytes:
    return PcpMapResponse(
        result,
        request.lifetime if result == 0 else 0,
        epoch,
        request.nonce,
        request.protocol,
        request.internal_port,
        request.internal_port if result == 0 else 0,
        request.client_address if result == 0 else IPv6Address(0),
    ).encode()


def drain(client: NatPmpClient) -> list[NatPmpEvent]:
    events = []
    while (event := client.next_event()) is not None:
        events.append(event)
    return events


# -- the core ----------------------------------------------------------------------------------


def test_a_pinhole_is_a_pcp_map_for_our_ipv6_address() -> None:
    client = new_client()
    assert client.family == 6
    request = sent(client, 0.0)
    assert request.client_address == OURS  # as it is, not IPv4-mapped
    assert request.suggested_external_address == IPv6Address(0)  # "::": no preference
    assert (request.protocol, request.internal_port, request.lifetime) == (TCP, 6881, 3600)
    client.receive_datagram(grant(request), ROUTER_ADDRESS, now=0.1)
    events = drain(client)
    assert events[0] == NatPmpAddressChanged(OURS)
    [mapped] = [e for e in events if isinstance(e, PortMapped)]
    assert mapped.mapping.external_port == 6881
    assert client.protocol == "pcp"
    assert client.external_address == OURS
    # Renewed between 1/2 and 5/8 of the lifetime, same nonce, the pinhole suggested.
    renewal_at = client.next_deadline()
    assert renewal_at is not None
    assert 1800 <= renewal_at <= 2250.1
    client.handle_timer(renewal_at)
    renewal = sent(client, renewal_at)
    assert renewal.nonce == request.nonce
    assert renewal.suggested_external_address == OURS
    # Removal: a MAP of lifetime 0 in PCP.
    client.close(renewal_at + 1)
    client.receive_datagram(grant(renewal), ROUTER_ADDRESS, now=renewal_at + 0.5)
    deletion = sent(client, renewal_at + 1)
    assert deletion.lifetime == 0
    assert deletion.nonce == request.nonce


def test_a_silent_router_fails_the_pinhole_without_natpmp(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_handshake.natpmp")
    client = new_client()
    now, sends, events = 0.0, [], []
    for _ in range(3 * NATPMP_MAX_ATTEMPTS):
        client.handle_timer(now)
        sends += [data for data, _ in client.datagrams_to_send(now)]
        events += drain(client)
        if events:
            break
        deadline = client.next_deadline()
        assert deadline is not None
        now = deadline
    # Every send is PCP (version 2), through the whole schedule: no NAT-PMP fallback.
    assert len(sends) == NATPMP_MAX_ATTEMPTS
    assert {data[0] for data in sends} == {2}
    assert client.protocol is None
    assert [e.result for e in events if isinstance(e, MappingFailed)] == [None]
    assert client.statistics().timeouts == 1
    said = [r for r in caplog.records if "no pinholes" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.INFO]  # once at INFO; later ones at DEBUG


def test_the_retry_backs_off_and_the_second_silence_is_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_handshake.natpmp")
    client = new_client()
    now = 0.0
    retries = []
    for _ in range(200):
        client.handle_timer(now)
        client.datagrams_to_send(now)
        retries += [e.retry_at - now for e in drain(client) if isinstance(e, MappingFailed)]
        if len(retries) == 2:
            break
        deadline = client.next_deadline()
        assert deadline is not None
        now = deadline
    assert retries == [NATPMP_RETRY_MIN, 2 * NATPMP_RETRY_MIN]
    levels = [r.levelno for r in caplog.records if "no pinholes" in r.getMessage()]
    assert levels == [logging.INFO, logging.DEBUG]


def test_natpmp_unsupported_version_is_a_refusal_not_a_fallback() -> None:
    client = new_client()
    request = sent(client, 0.0)
    refusal = NatPmpErrorResponse(0, NatPmpResult.UNSUPPORTED_VERSION, 5).encode()
    client.receive_datagram(refusal, ROUTER_ADDRESS, now=0.1)
    [failed] = drain(client)
    assert isinstance(failed, MappingFailed)
    assert failed.result == NatPmpResult.UNSUPPORTED_VERSION
    assert failed.retry_at == pytest.approx(0.1 + NATPMP_RETRY_MAX)
    assert client.protocol is None
    assert client.datagrams_to_send(1.0) == []  # nothing in NAT-PMP, nothing sooner
    # NAT-PMP packets are no hint on IPv6, nor an answer.
    announcement = ExternalAddressResponse(0, 9, IPv4Address("203.0.113.7")).encode()
    client.receive_datagram(announcement, ROUTER_ADDRESS, now=2.0)
    client.receive_announcement(announcement, ROUTER_ADDRESS, now=2.0)
    assert client.statistics().unexpected == 2
    assert client.statistics().hints == 0
    assert request.client_address == OURS


def test_address_mismatch_fails_and_a_new_address_asks_again_at_once() -> None:
    client = new_client()
    request = sent(client, 0.0)
    client.receive_datagram(
        grant(request, result=PcpResult.ADDRESS_MISMATCH), ROUTER_ADDRESS, now=0.1
    )
    [failed] = drain(client)
    assert isinstance(failed, MappingFailed)
    assert failed.result == PcpResult.ADDRESS_MISMATCH
    assert client.client_address_stale
    assert client.protocol == "pcp"  # no fallback
    client.set_client_address(OURS)  # the same address: the long wait stands
    assert client.datagrams_to_send(0.2) == []
    client.handle_timer(0.3)
    client.set_client_address(IPv6Address("2001:db8::6"))
    again = sent(client, 0.3)
    assert again.client_address == IPv6Address("2001:db8::6")
    assert again.nonce == request.nonce


def test_a_grant_naming_an_ipv4_address_makes_no_sense() -> None:
    client = new_client()
    request = sent(client, 0.0)
    wrong = PcpMapResponse(
        0, 3600, 1000, request.nonce, TCP, 6881, 6881, IPv4Address("203.0.113.7")
    ).encode()
    client.receive_datagram(wrong, ROUTER_ADDRESS, now=0.1)
    assert client.statistics().malformed == 1
    assert drain(client) == []
    # A PCP ANNOUNCE is a hint, as on IPv4 (once a pinhole is held).
    client.receive_datagram(grant(request), ROUTER_ADDRESS, now=0.2)
    client.receive_announcement(PcpAnnounceResponse(0, 0, 3).encode(), ROUTER_ADDRESS, now=100.0)
    assert client.statistics().hints == 1


@pytest.mark.parametrize(
    "changes",
    [
        {"pcp": False},
        {"client_address": IPv4Address("192.168.1.5")},
        {"client_address": IPv6Address("::ffff:192.168.1.5")},
        {"client_address": None},
        {"client_address": IPv6Address(0)},
    ],
)
def test_bad_ipv6_arguments(changes: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        new_client(**changes)


def test_bad_ipv6_gateways_and_addresses() -> None:
    with pytest.raises(LocalProtocolError):
        NatPmpClient(IPv6Address("fe80::1%eth0"), client_address=OURS)
    with pytest.raises(LocalProtocolError):
        NatPmpClient(IPv6Address("::ffff:10.0.0.1"), client_address=OURS)
    client = new_client()
    with pytest.raises(LocalProtocolError):
        client.set_client_address(IPv4Address("10.0.0.2"))
    with pytest.raises(LocalProtocolError):
        client.set_client_address(IPv6Address(0))
    ipv4 = NatPmpClient(IPv4Address("10.0.0.1"), client_address=IPv4Address("10.0.0.2"))
    with pytest.raises(LocalProtocolError):
        ipv4.set_client_address(OURS)
    assert ipv4.family == 4


# -- the routing table -------------------------------------------------------------------------

ROUTES = """\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 \
00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
fe800000000000000000000000000001 00000400 00000003 00000000 00450003     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
20010db8000000000000000000000009 00000200 00000003 00000000 00000003     eth1
00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
garbage line
00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
zz000000000000000000000000000009 00000001 00000003 00000000 00000003     eth2
"""


def test_default_gateway6_reads_the_ipv6_routing_table(tmp_path: Path) -> None:
    table = tmp_path / "ipv6_route"
    table.write_text(ROUTES)
    assert default_gateway6(table) == IPv6Address("2001:db8::9")  # the lowest metric
    table.write_text(ROUTES.replace("00000200", "00000800"))
    hop = default_gateway6(table)
    assert hop is not None
    assert hop == IPv6Address("fe80::1%eth0")
    assert hop.scope_id == "eth0"
    table.write_text("")
    assert default_gateway6(table) is None
    assert default_gateway6(tmp_path / "missing") is None


# -- the shell, against a PCP server on [::1] ---------------------------------------------------


class PinholeServer:
    """A PCP-only IPv6 firewall on [::1]: opens the internal port for the packet's source,
    ADDRESS_MISMATCH when the request names another client address (RFC 6887 8.1)."""

    def __init__(self) -> None:
        self.requests: list[PcpMapRequest] = []
        self.holes: dict[tuple[MappingProtocol, int], IPv6Address] = {}
        self.sock: trio.socket.SocketType | None = None

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.socket.socket(trio.socket.AF_INET6, trio.socket.SOCK_DGRAM) as sock:
            await sock.bind(("::1", 0))
            self.sock = sock
            task_status.started(sock.getsockname()[1])
            while True:
                data, source = await sock.recvfrom(2048)
                try:
                    request = decode_pcp_request(data)
                except PcpError:
                    continue
                self.requests.append(request)
                result = PcpResult.SUCCESS
                if request.client_address != IPv6Address(source[0]):
                    result = PcpResult.ADDRESS_MISMATCH
                elif request.lifetime:
                    self.holes[(request.protocol, request.internal_port)] = IPv6Address(source[0])
                else:
                    self.holes.pop((request.protocol, request.internal_port), None)
                await sock.sendto(grant(request, result=result), source)


async def wait_mapped(mapper: PortMapper, count: int) -> None:
    with trio.fail_after(10):
        while sum(m.external_port is not None for m in mapper.mappings()) < count:
            await mapper.wait_changed()


async def test_the_shell_opens_pinholes_and_closes_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = PinholeServer()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        with trio.socket.socket(trio.socket.AF_INET6, trio.socket.SOCK_DGRAM) as spare:
            await spare.bind(("::1", 0))
            announce_port = spare.getsockname()[1]
        async with open_port_mapper(
            "::1",
            [("tcp", 6881), ("udp", 6881)],
            gateway_port=port,
            bind_host="::1",
            announce_address=("::1", announce_port),
        ) as mapper:
            await wait_mapped(mapper, 2)
            assert mapper.family == 6
            assert mapper.protocol == "pcp"
            assert mapper.external_address == IPv6Address("::1")
            assert mapper.external_port("tcp", 6881) == 6881
            assert mapper.announce_address == ("::1", announce_port)
            assert set(server.holes) == {(TCP, 6881), (UDP, 6881)}
            assert {r.client_address for r in server.requests} == {IPv6Address("::1")}
            # An ANNOUNCE from the router's address and port brings a renewal forward.
            assert server.sock is not None
            await server.sock.sendto(PcpAnnounceResponse(0, 0, 1).encode(), ("::1", announce_port))
            with trio.fail_after(5):
                while mapper.statistics().announcements == 0:
                    await trio.sleep(0.01)
            assert mapper.statistics().hints == 1
        assert server.holes == {}  # deleted on exit
        nursery.cancel_scope.cancel()


async def test_no_global_ipv6_address_opens_nothing() -> None:
    for host in ("fd00::2", "fe80::2", "::1"):  # a ULA, link-local, loopback to a router
        with pytest.raises(LocalProtocolError, match="no pinhole"):
            async with open_port_mapper("2001:db8::1", bind_host=host):
                raise AssertionError("not opened")  # pragma: no cover


async def test_bad_ipv6_shell_arguments() -> None:
    bad: list[dict[str, object]] = [
        {"pcp": False},
        {"bind_host": "0.0.0.0"},
        {"announce_address": ("224.0.0.9", 5350)},
        {"announce_address": ("ff02::1", 0)},
        {"announce_address": ("fe80::1%lo", 5350)},
    ]
    for changes in bad:
        with pytest.raises(LocalProtocolError):
            async with open_port_mapper("::1", **changes):  # type: ignore[arg-type]
                raise AssertionError("not opened")  # pragma: no cover
    with pytest.raises(LocalProtocolError):
        async with open_port_mapper("fe80::1%no-such-interface0"):
            raise AssertionError("not opened")  # pragma: no cover
    with pytest.raises(LocalProtocolError):
        async with open_port_mapper("ff02::1"):
            raise AssertionError("not opened")  # pragma: no cover


# -- our address, read and applied one at a time -------------------------------------------------


async def test_address_reads_are_applied_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pump's read and the minute's may overlap: the older read is never applied last."""
    old, new = IPv4Address("10.0.0.2"), IPv4Address("10.0.0.3")
    first_read = trio.Event()
    release = trio.Event()
    reads = 0

    async def source_address(*args: object, **kwargs: object) -> IPv4Address:
        nonlocal reads
        reads += 1
        if reads == 1:
            first_read.set()
            await release.wait()  # a slow read: the address changes meanwhile
            return old
        return new

    monkeypatch.setattr(natpmp_shell, "_source_address", source_address)
    client = NatPmpClient(IPv4Address("10.0.0.1"), client_address=IPv4Address("10.0.0.9"))
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
        mapper = PortMapper(client, sock, None)
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(mapper._refresh_client_address)
                await first_read.wait()
                nursery.start_soon(mapper._refresh_client_address)
                await trio.testing.wait_all_tasks_blocked()
                assert reads == 1  # the second waits for the first to be applied
                release.set()
    assert reads == 2
    assert client.client_address == new
