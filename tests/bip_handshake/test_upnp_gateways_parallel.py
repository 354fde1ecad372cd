"""UPnP gateways served side by side, one request at a time each: the core's concurrent
lanes driven alone, then the trio shell against fake IGDs on loopback (virtual time)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from ipaddress import IPv4Address

import pytest
import trio
import trio.testing
from tests._upnp_igd import IGD1, WANIP1, FakeIgd, running_igd, running_igds, ssdp_answer

from bip_handshake._errors import LocalProtocolError
from bip_handshake._natpmp_shell import MappingProtocolName
from bip_handshake._portmap import MappingProtocol, MappingRemoved, PortMappingEvent
from bip_handshake._upnp import HttpResponse, UpnpPortMapped
from bip_handshake._upnp_client import UpnpClient, UpnpRequest, UpnpRequestKind
from bip_handshake._upnp_shell import UpnpPortMapper, open_upnp_mapper

Kind = UpnpRequestKind
ROUTER = IPv4Address("192.168.1.1")
MESH = IPv4Address("192.168.1.2")
LOCAL = IPv4Address("192.168.1.20")
OK = HttpResponse(200, "OK", (), b"")
SOAP_ACTIONS = {"GetExternalIPAddress", "AddPortMapping", "DeletePortMapping"}
THREE: list[tuple[MappingProtocolName, int]] = [("tcp", 6881), ("udp", 6881), ("tcp", 6882)]


def described(host: IPv4Address) -> HttpResponse:
    body = (
        f"<root><device><friendlyName>{host}</friendlyName><serviceList><service>"
        f"<serviceType>{WANIP1}</serviceType><controlURL>/ctl</controlURL>"
        "</service></serviceList></device></root>"
    )
    return HttpResponse(200, "OK", (), body.encode())


def address_told() -> HttpResponse:
    body = (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
        f'<s:Body><u:GetExternalIPAddressResponse xmlns:u="{WANIP1}">'
        "<NewExternalIPAddress>203.0.113.7</NewExternalIPAddress>"
        "</u:GetExternalIPAddressResponse></s:Body></s:Envelope>"
    )
    return HttpResponse(200, "OK", (), body.encode())


def take(client: UpnpClient, now: float, kind: UpnpRequestKind, host: IPv4Address) -> UpnpRequest:
    request = client.next_request(now)
    assert request is not None
    assert request.kind is kind, request
    assert request.url is not None
    assert request.url.host == host, request
    return request


def test_the_concurrent_core_keeps_one_request_in_flight_per_gateway() -> None:
    client = UpnpClient(concurrent=True)
    client.add_mapping(MappingProtocol.TCP, 6881, now=0.0)
    search = client.next_request(0.0)
    assert search is not None
    assert search.kind is Kind.SEARCH
    client.search_sent(search, 5, 0.0)
    for host in (ROUTER, MESH):
        client.ssdp_received(ssdp_answer(IGD1, f"http://{host}:5000/d.xml"), host, 0.0)
    describe = take(client, 0.0, Kind.DESCRIBE, ROUTER)
    assert client.next_request(0.0) is None  # the search's lane is busy, no gateway yet
    client.request_answered(describe, described(ROUTER), LOCAL, 0.0)
    # The router's lane and the search's go side by side.
    describe = take(client, 0.0, Kind.DESCRIBE, MESH)
    stuck = take(client, 0.0, Kind.EXTERNAL_ADDRESS, ROUTER)
    assert client.next_request(0.0) is None
    client.request_answered(describe, described(MESH), LOCAL, 0.1)
    address = take(client, 0.1, Kind.EXTERNAL_ADDRESS, MESH)
    assert client.next_request(0.1) is None  # the router's question is still out
    client.request_answered(address, address_told(), LOCAL, 0.2)
    add = take(client, 0.2, Kind.ADD, MESH)
    assert client.next_request(0.2) is None  # one at a time on the mesh node too
    client.request_answered(add, OK, LOCAL, 0.3)
    mapped = [e for e in iter(client.next_event, None) if isinstance(e, UpnpPortMapped)]
    assert [e.device.control_url for e in mapped] == [f"http://{MESH}:5000/ctl"]
    # Nothing at once while the router's lane waits: the mesh node's renewal is timed.
    deadline = client.next_deadline()
    assert deadline is not None
    assert deadline > 0.3
    # Closing abandons the router's question; the mesh node's port is deleted.
    client.close(0.4)
    delete = take(client, 0.4, Kind.DELETE, MESH)
    assert client.next_request(0.4) is None
    client.request_failed(stuck, "no answer within 5 s", 5.0)  # late: ignored
    client.request_answered(delete, OK, LOCAL, 0.5)
    assert client.is_closed
    with pytest.raises(LocalProtocolError):
        UpnpClient(concurrent=1)  # type: ignore[arg-type]


class Recorder:
    """on_event, with the time each event came."""

    def __init__(self) -> None:
        self.events: list[tuple[float, PortMappingEvent]] = []

    def __call__(self, event: PortMappingEvent) -> None:
        self.events.append((trio.current_time(), event))

    def mapped(self, igd: FakeIgd) -> list[float]:
        return [
            t
            for t, e in self.events
            if isinstance(e, UpnpPortMapped) and e.device.location == igd.location
        ]


async def until(mapper: UpnpPortMapper, condition: Callable[[], bool]) -> None:
    with trio.fail_after(60):
        while not condition():
            await mapper.wait_changed()


def spacing(igd: FakeIgd) -> list[float]:
    """Seconds between the gateway's SOAP answers, in order."""
    times = [t for t, _, _ in igd.requests]
    return [b - a for a, b in itertools.pairwise(times)]


async def test_a_dead_gateway_does_not_hold_back_the_others_mappings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Found first, then silent to every SOAP action: each request waits its timeout.
    dead = FakeIgd(host="127.0.0.2", slow_actions=SOAP_ACTIONS, slow_delay=1e6)
    good = FakeIgd(host="127.0.0.3")
    record = Recorder()
    async with (
        running_igds(dead, good) as address,
        open_upnp_mapper(
            THREE,
            ssdp_address=address,
            bind_host="127.0.0.1",
            gateway=None,
            http_timeout=5.0,
            close_timeout=1.0,
            on_event=record,
        ) as mapper,
    ):
        start = trio.current_time()
        await until(mapper, lambda: len(record.mapped(good)) == 3)
        assert trio.current_time() - start < 1.0  # not after the dead one's 5 s timeout
        assert mapper.devices[0].location == dead.location  # found first, asked first
        assert dead.http_requests == ["GET /rootDesc.xml", "POST /ctl/IPConn"]
        assert good.mappings.keys() == {("TCP", 6881), ("UDP", 6881), ("TCP", 6882)}
    assert good.mappings == {}  # deleted on close, the dead one notwithstanding


async def test_each_gateway_gets_one_request_at_a_time_the_gateways_side_by_side(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Slow but alive: each answer half a second after its request.
    first = FakeIgd(host="127.0.0.2", delay=0.5)
    second = FakeIgd(host="127.0.0.3", delay=0.5)
    record = Recorder()
    async with (
        running_igds(first, second) as address,
        open_upnp_mapper(
            THREE, ssdp_address=address, bind_host="127.0.0.1", gateway=None, on_event=record
        ) as mapper,
    ):
        await until(mapper, lambda: len(record.mapped(first)) == len(record.mapped(second)) == 3)
        for igd in (first, second):
            # The address, then each mapping: never two at once (each took its 0.5 s).
            assert [action for _, action, _ in igd.requests] == [
                "GetExternalIPAddress",
                *["AddPortMapping"] * 3,
            ]
            assert all(gap >= 0.5 for gap in spacing(igd))
        # Side by side: the second's mappings did not wait for the first's.
        assert abs(max(record.mapped(first)) - max(record.mapped(second))) < 1.0


async def test_a_close_deletes_on_every_gateway_side_by_side(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Three deletions of a second each on each: one after another they would take 6 s.
    first = FakeIgd(host="127.0.0.2")
    second = FakeIgd(host="127.0.0.3")
    record = Recorder()
    async with running_igds(first, second) as address:
        async with open_upnp_mapper(
            THREE,
            ssdp_address=address,
            bind_host="127.0.0.1",
            gateway=None,
            close_timeout=4.0,
            on_event=record,
        ) as mapper:
            await until(
                mapper, lambda: len(record.mapped(first)) == len(record.mapped(second)) == 3
            )
            first.delay = second.delay = 1.0
            start = trio.current_time()
        assert trio.current_time() - start == pytest.approx(3.0, abs=0.1)
        assert first.mappings == second.mappings == {}
        for igd in (first, second):
            assert len(igd.actions("DeletePortMapping")) == 3
            assert all(gap >= 1.0 for gap in spacing(igd)[-2:])  # one at a time each
        removed = [e for _, e in record.events if isinstance(e, MappingRemoved)]
        assert [e.result for e in removed] == [0, 0, 0]


async def test_a_close_with_a_dead_gateway_deletes_on_the_other_within_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    dead = FakeIgd(host="127.0.0.2")
    good = FakeIgd(host="127.0.0.3", delay=0.2)
    record = Recorder()
    async with running_igds(dead, good) as address:
        async with open_upnp_mapper(
            THREE,
            ssdp_address=address,
            bind_host="127.0.0.1",
            gateway=None,
            close_timeout=2.0,
            on_event=record,
        ) as mapper:
            await until(mapper, lambda: len(record.mapped(dead)) == len(record.mapped(good)) == 3)
            dead.silent = True  # gone quiet: its first deletion waits out the bound
            start = trio.current_time()
        assert trio.current_time() - start == pytest.approx(2.0, abs=0.1)
        assert good.mappings == {}  # made meanwhile, not after the dead one's wait
        assert len(dead.mappings) == 3  # its leases will end them
        removed = [e for _, e in record.events if isinstance(e, MappingRemoved)]
        assert len(removed) == 3


class CallerError(Exception):
    """A bug of the caller's (or one of ours, in a request's task)."""


async def test_an_exception_of_on_event_during_the_close_comes_out_as_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Raised on the MappingRemoved the close's deletion brings, inside the close's nursery;
    # its own cause kept (not dropped by the unwrapping).
    def on_event(event: PortMappingEvent) -> None:
        if isinstance(event, MappingRemoved):
            try:
                raise KeyError("why")
            except KeyError as exc:
                raise CallerError("on_event") from exc

    igd = FakeIgd()
    async with running_igd(igd) as address:
        with pytest.raises(CallerError) as info:
            await map_and_close(address, on_event)
        assert igd.mappings == {}  # the deletion was made: the event came of its answer
    assert isinstance(info.value.__cause__, KeyError)
    assert info.value.__context__ is info.value.__cause__


async def test_a_stop_iteration_of_on_event_during_the_close_is_python_s_runtime_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # on_event is called from coroutines (the dispatcher, the close): Python turns a
    # StopIteration leaving one into RuntimeError, the StopIteration its cause (PEP 479).
    stop = StopIteration("on_event")

    def on_event(event: PortMappingEvent) -> None:
        if isinstance(event, MappingRemoved):
            raise stop

    async with running_igd(FakeIgd()) as address:
        with pytest.raises(RuntimeError, match="coroutine raised StopIteration") as info:
            await map_and_close(address, on_event)
    assert info.value.__cause__ is stop


async def map_and_close(
    address: tuple[str, int], on_event: Callable[[PortMappingEvent], None]
) -> None:
    """One mapping made on the IGD at ``address``, then the block's close."""
    async with open_upnp_mapper(
        [("tcp", 6881)],
        ssdp_address=address,
        bind_host="127.0.0.1",
        gateway=None,
        on_event=on_event,
    ) as mapper:
        await until(mapper, lambda: mapper.external_port("tcp", 6881) is not None)


async def test_a_bug_in_a_request_task_comes_out_as_itself(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A request's task runs in the worker's nursery, itself in the block's: one exception
    # still, not a group in a group.
    async def broken(*args: object) -> tuple[HttpResponse, IPv4Address]:
        raise CallerError("in a request's task")

    monkeypatch.setattr(UpnpPortMapper, "_exchange", broken)
    async with running_igd(FakeIgd()) as address:
        with pytest.raises(CallerError):
            async with open_upnp_mapper(
                [("tcp", 6881)], ssdp_address=address, bind_host="127.0.0.1", gateway=None
            ):
                await trio.sleep(60)  # the task's bug ends the block long before
