"""PCP pinholes for an IPv6 firewall: the client core with an IPv6 gateway (PCP alone, no
NAT-PMP fallback), fed by hand; the shell against a fake PCP server on [::1] (virtual time),
following our address when the system picks it; the wrong-link filter of a link-local
gateway; the IPv6 routing table; and the lock around the shell's reads of our address."""

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
from bip_handshake._natpmp_shell import (
    NATPMP_ANNOUNCE_ADDRESS,
    PortMapper,
    default_gateway6,
    open_port_mapper,
)
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
# Global addresses the system "picks" in the shell's tests (2001:db8::/32 is not global):
# only ever bound to in name (the tests' sockets are bound to ::1), never sent to.
GLOBAL_OLD = IPv6Address("2a00:1:2::5")
GLOBAL_NEW = IPv6Address("2a00:1:2::6")


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
    assert again.nonce != request.nonce  # another client address: another PCP mapping


def test_a_new_client_address_asks_for_every_pinhole_again_at_once() -> None:
    client = new_client()
    client.add_mapping(UDP, 6881, now=0.0)
    first = sent(client, 0.0)
    client.receive_datagram(grant(first), ROUTER_ADDRESS, now=0.1)
    second = sent(client, 0.1)
    client.receive_datagram(grant(second), ROUTER_ADDRESS, now=0.2)
    assert all(m.external_port == 6881 for m in client.mappings())
    client.set_client_address(OURS)  # the same: the renewals stay where they are
    assert client.datagrams_to_send(10.0) == []
    # Our address changed (a temporary one deprecated): both pinholes, granted, go now.
    new = IPv6Address("2001:db8::6")
    client.set_client_address(new)
    again = sent(client, 10.0)
    assert again.client_address == new
    assert again.nonce != first.nonce  # another client address: another PCP mapping
    client.receive_datagram(grant(again), ROUTER_ADDRESS, now=10.1)
    then = sent(client, 10.1)
    assert then.client_address == new
    assert then.nonce not in (first.nonce, second.nonce, again.nonce)  # UDP's own, for new
    # The mapping request in flight (UDP's) starts over: every pinhole is asked again at
    # once (not at its retransmission, 0.25 s on), TCP's first.
    client.set_client_address(OURS)
    restarted = sent(client, 10.2)
    # Back under our first address: TCP takes that address's nonce again (the router may
    # still hold the mapping: another nonce would be refused NOT_AUTHORIZED, RFC 6887 11.3).
    assert (restarted.client_address, restarted.nonce) == (OURS, first.nonce)


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

    def __init__(self, *, check_source: bool = True) -> None:
        self.requests: list[PcpMapRequest] = []
        self.times: list[float] = []  # when each request came
        self.holes: dict[tuple[MappingProtocol, int], IPv6Address] = {}
        self.sock: trio.socket.SocketType | None = None
        # False: the client address in the request is taken (the tests bind ::1 alone).
        self.check_source = check_source

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.socket.socket(trio.socket.AF_INET6, trio.socket.SOCK_DGRAM) as sock:
            await sock.bind(("::1", 0))
            self.sock = sock
            started = trio.current_time()
            task_status.started(sock.getsockname()[1])
            while True:
                data, source = await sock.recvfrom(2048)
                try:
                    request = decode_pcp_request(data)
                except PcpError:
                    continue
                self.requests.append(request)
                self.times.append(trio.current_time())
                result = PcpResult.SUCCESS
                client = IPv6Address(int(request.client_address))  # IPv6 here
                if self.check_source and client != IPv6Address(source[0]):
                    result = PcpResult.ADDRESS_MISMATCH
                elif request.lifetime:
                    self.holes[(request.protocol, request.internal_port)] = client
                elif self.holes.get((request.protocol, request.internal_port)) == client:
                    del self.holes[(request.protocol, request.internal_port)]
                epoch = 1000 + int(trio.current_time() - started)  # no restart seen
                await sock.sendto(grant(request, epoch=epoch, result=result), source)


async def wait_mapped(mapper: PortMapper, count: int) -> None:
    with trio.fail_after(10):
        while sum(m.external_port is not None for m in mapper.mappings()) < count:
            await mapper.wait_changed()


async def test_the_shell_opens_pinholes_and_closes_them(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never(*args: object) -> IPv6Address:
        raise AssertionError("an address given is not read again")

    monkeypatch.setattr(natpmp_shell, "_source_address6", never)
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
            await trio.sleep(150)  # past two address checks, had the system picked it
        assert server.holes == {}  # deleted on exit
        nursery.cancel_scope.cancel()


class FollowedAddress:
    """The system's pick of our global address, scripted (an OSError: no route), and the
    sockets the shell opens to talk from it: bound to ::1 whatever the address (no other
    can be bound here), or refused for an address in ``refuse`` (once, unless ``sticky``)."""

    def __init__(
        self, picks: list[IPv6Address | OSError], refuse: set[IPv6Address], *, sticky: bool = False
    ) -> None:
        self.picks = picks
        self.reads: list[float] = []
        self.refuse = refuse
        self.sticky = sticky
        self.bound: list[IPv6Address] = []
        self.sockets: list[trio.socket.SocketType] = []

    async def source_address6(self, toward: IPv6Address, port: int) -> IPv6Address:
        assert toward == IPv6Address("::1")  # a loopback gateway is its own probe
        self.reads.append(trio.current_time())
        pick = self.picks[min(len(self.reads), len(self.picks)) - 1]
        if isinstance(pick, OSError):
            raise pick
        return pick

    async def open_pinhole_socket(self, address: IPv6Address) -> trio.socket.SocketType:
        if address in self.refuse:
            if not self.sticky:
                self.refuse.discard(address)
            raise OSError(99, "Cannot assign requested address")
        self.bound.append(address)
        sock = trio.socket.socket(trio.socket.AF_INET6, trio.socket.SOCK_DGRAM)
        await sock.bind(("::1", 0))
        self.sockets.append(sock)
        return sock

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(natpmp_shell, "_source_address6", self.source_address6)
        monkeypatch.setattr(natpmp_shell, "_open_pinhole_socket", self.open_pinhole_socket)


async def test_address_mismatch_reads_our_address_again_and_asks_from_the_new_one(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The system's pick was GLOBAL_OLD (since gone: the packets leave from ::1), now ::1.
    system = FollowedAddress([GLOBAL_OLD, IPv6Address("::1")], refuse=set())
    system.install(monkeypatch)
    server = PinholeServer()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        start = trio.current_time()
        async with open_port_mapper(
            "::1", [("tcp", 6881)], gateway_port=port, announce_address=None
        ) as mapper:
            await wait_mapped(mapper, 1)
            assert trio.current_time() - start < 1  # at once, not after the hour's retry
            assert [r.client_address for r in server.requests] == [GLOBAL_OLD, IPv6Address("::1")]
            assert system.bound == [GLOBAL_OLD, IPv6Address("::1")]
            assert system.sockets[0].fileno() == -1  # the old socket closed
            assert len(system.reads) == 2
        assert system.sockets[1].fileno() == -1
        assert server.holes == {}
        nursery.cancel_scope.cancel()


async def test_a_new_system_address_moves_granted_pinholes_at_once(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bip_handshake.natpmp")
    local = IPv6Address("::1")
    # Each minute: unchanged, no route (kept), GLOBAL_NEW (its socket refused: kept), then
    # GLOBAL_NEW again (moved).
    picks: list[IPv6Address | OSError] = [local, local, OSError(101, "unreachable"), GLOBAL_NEW]
    system = FollowedAddress(picks, refuse={GLOBAL_NEW})
    system.install(monkeypatch)
    server = PinholeServer(check_source=False)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        start = trio.current_time()
        async with open_port_mapper(
            "::1", [("tcp", 6881), ("udp", 6881)], gateway_port=port, announce_address=None
        ) as mapper:
            await wait_mapped(mapper, 2)
            assert server.holes == {(TCP, 6881): local, (UDP, 6881): local}
            with trio.fail_after(300):
                while set(server.holes.values()) != {GLOBAL_NEW}:
                    await trio.sleep(0.5)  # a grant of the same port again tells nothing
            moved = [t - start for t, r in zip(server.times, server.requests, strict=True)]
            assert [r.client_address for r in server.requests] == [local] * 2 + [GLOBAL_NEW] * 2
            # Read each minute; moved at the fifth read (4 minutes), far before the renewals.
            assert [round(t - start) for t in system.reads] == [0, 60, 120, 180, 240]
            assert all(239 < t < 242 for t in moved[2:])
            assert server.holes == {(TCP, 6881): GLOBAL_NEW, (UDP, 6881): GLOBAL_NEW}
            assert mapper.external_address == GLOBAL_NEW
            assert system.bound == [local, GLOBAL_NEW]
            assert system.sockets[0].fileno() == -1
        # Deleted from the new address; the old pinholes run out (nothing reaches them).
        assert server.holes == {}
        assert server.requests[-1].client_address == GLOBAL_NEW
        nursery.cancel_scope.cancel()
    said = [r.getMessage() for r in caplog.records]
    assert sum("keeping ::1 for the pinholes" in m for m in said) == 1
    assert sum("cannot send from our new address" in m for m in said) == 1


async def test_a_new_address_that_cannot_be_bound_is_said_at_info_once_per_failure(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_handshake.natpmp")
    local = IPv6Address("::1")
    # Each minute: GLOBAL_NEW twice, then GLOBAL_OLD twice, no socket for either.
    picks: list[IPv6Address | OSError] = [local, GLOBAL_NEW, GLOBAL_NEW, GLOBAL_OLD, GLOBAL_OLD]
    system = FollowedAddress(picks, refuse={GLOBAL_NEW, GLOBAL_OLD}, sticky=True)
    system.install(monkeypatch)
    server = PinholeServer(check_source=False)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        async with open_port_mapper(
            "::1", [("tcp", 6881)], gateway_port=port, announce_address=None
        ) as mapper:
            await wait_mapped(mapper, 1)
            await trio.sleep(250)  # four minutes' reads
            assert len(system.reads) == 5
            assert server.holes == {(TCP, 6881): local}  # kept all along
        nursery.cancel_scope.cancel()
    said = [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if "cannot send from our new address" in r.getMessage()
    ]
    assert [(level, str(GLOBAL_NEW) in m) for level, m in said] == [
        (logging.INFO, True),
        (logging.DEBUG, True),
        (logging.INFO, False),
        (logging.DEBUG, False),
    ]


async def test_a_close_keeps_the_address_held_after_address_mismatch(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pinholes made for GLOBAL_OLD; by the close the system picks GLOBAL_NEW, and the
    # gateway refuses the deletions (ADDRESS_MISMATCH: the packets leave from ::1 here).
    system = FollowedAddress([GLOBAL_OLD, GLOBAL_NEW], refuse=set())
    system.install(monkeypatch)
    server = PinholeServer(check_source=False)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        async with open_port_mapper(
            "::1", [("tcp", 6881), ("udp", 6881)], gateway_port=port, announce_address=None
        ) as mapper:
            await wait_mapped(mapper, 2)
            server.check_source = True
            mapped = len(server.requests)
        nursery.cancel_scope.cancel()
    deletions = server.requests[mapped:]
    assert deletions
    assert all(r.lifetime == 0 for r in deletions)
    assert {r.client_address for r in deletions} == {GLOBAL_OLD}
    # Neither read again nor rebound while closing.
    assert len(system.reads) == 1
    assert system.bound == [GLOBAL_OLD]


class FakeSocket:
    """A UDP socket stand-in: records what is sent, hands out what a test queues with the
    source address recvfrom gives (an IPv6 one with its scope id)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self._in, self._out = trio.open_memory_channel[tuple[bytes, tuple[object, ...]]](8)

    async def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        self.sent.append((data, address))
        return len(data)

    async def recvfrom(self, size: int) -> tuple[bytes, tuple[object, ...]]:
        return await self._out.receive()

    def queue(self, data: bytes, host: str, port: int, scope: int) -> None:
        self._in.send_nowait((data, (host, port, 0, scope)))

    def getsockname(self) -> tuple[str, int, int, int]:
        return ("::", 5350, 0, 0)

    def close(self) -> None:
        pass


async def test_a_link_local_gateways_address_over_another_link_is_not_the_gateway() -> None:
    """fe80::1 names a router on each link: only the gateway's link (its scope, index 7
    here) is heard, answers and announcements alike."""
    gateway = IPv6Address("fe80::1")
    client = NatPmpClient(gateway, client_address=OURS, rng=random.Random(7))
    client.add_mapping(TCP, 6881, now=0.0)
    sock, announce_sock = FakeSocket(), FakeSocket()
    mapper = PortMapper(
        client,
        sock,  # type: ignore[arg-type]
        None,
        "::",
        announce_sock=announce_sock,  # type: ignore[arg-type]
        announce_host=IPv6Address("ff02::1"),
        gateway_host=IPv6Address("fe80::1%7"),
    )
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(mapper._run)
            nursery.start_soon(mapper._listen)
            await trio.testing.wait_all_tasks_blocked()
            data, destination = sock.sent[0]
            assert destination == ("fe80::1%7", 5351)  # sent with the gateway's scope
            answer = grant(decode_pcp_request(data))
            sock.queue(answer, "fe80::1", 5351, scope=8)  # the same address, another link
            await trio.testing.wait_all_tasks_blocked()
            assert mapper.statistics().wrong_source == 1
            assert mapper.external_port("tcp", 6881) is None  # not taken
            sock.queue(answer, "fe80::1", 5351, scope=7)
            await trio.testing.wait_all_tasks_blocked()
            assert mapper.external_port("tcp", 6881) == 6881
            assert mapper.statistics().wrong_source == 1
            announcement = PcpAnnounceResponse(0, 0, 5).encode()
            announce_sock.queue(announcement, "fe80::1", 5351, scope=8)
            await trio.testing.wait_all_tasks_blocked()
            assert mapper.statistics().announcements_dropped == 1
            announce_sock.queue(announcement, "fe80::1", 5351, scope=7)
            await trio.testing.wait_all_tasks_blocked()
            assert mapper.statistics().announcements == 1
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
        # IPv4's group given on purpose: an IPv6 gateway does not announce there.
        {"announce_address": NATPMP_ANNOUNCE_ADDRESS},
        {"announce_address": ("224.0.0.1", 5350)},
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
