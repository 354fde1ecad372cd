"""The UPnP mapper against a fake IGD on 127.0.0.1 (virtual time)."""

from __future__ import annotations

import errno
import logging
import math
import random
import socket
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from ipaddress import IPv4Address
from typing import Any, TypeVar

import pytest
import trio
import trio.testing
from tests._upnp_igd import (
    EXTERNAL,
    IGD1,
    LOOPBACK,
    WANIP1,
    WANIP2,
    WANPPP1,
    Entry,
    FakeIgd,
    running_igd,
    running_igds,
    search_target,
    ssdp_answer,
)

import bip_handshake._upnp_shell as upnp_shell
from bip_handshake._errors import LocalProtocolError
from bip_handshake._natpmp_shell import MappingProtocolName
from bip_handshake._portmap import (
    MappingFailed,
    MappingProtocol,
    MappingRemoved,
    PortMapped,
    PortMappingEvent,
)
from bip_handshake._upnp import (
    UPNP_MAX_DESCRIPTION,
    UpnpAddressChanged,
    UpnpAddressFailed,
    UpnpDevice,
    UpnpDeviceFound,
    UpnpDeviceLost,
    UpnpDiscoveryFailed,
    UpnpMappingFailed,
    UpnpPortMapped,
)
from bip_handshake._upnp_client import (
    UPNP_CLOSE_TIMEOUT,
    UPNP_CONFLICT_ATTEMPTS,
    UPNP_CONFLICT_PORTS,
    UPNP_MAX_DEVICES,
    UPNP_MAX_PORTS_KEPT,
    UPNP_PERMANENT_RENEW,
    UPNP_RETRY_MAX,
    UPNP_RETRY_MIN,
    UPNP_SEARCH_RETRY_MAX,
    UPNP_SEARCH_RETRY_MIN,
    UPNP_SEARCH_TIMEOUT,
)
from bip_handshake._upnp_shell import (
    UpnpPortMapper,
    _multicast_options,
    _preferred_device,
    open_upnp_mapper,
)

T = TypeVar("T")
TCP_ONLY: list[tuple[MappingProtocolName, int]] = [("tcp", 6881)]


def mapper_on(
    address: tuple[str, int],
    mappings: Iterable[tuple[MappingProtocolName, int]] = (("tcp", 6881), ("udp", 6881)),
    **kwargs: Any,
) -> AbstractAsyncContextManager[UpnpPortMapper]:
    kwargs.setdefault("bind_host", LOOPBACK)
    kwargs.setdefault("gateway", None)  # no preference: the first device that serves
    return open_upnp_mapper(mappings, ssdp_address=address, **kwargs)


async def until(mapper: UpnpPortMapper, condition: Callable[[], bool], timeout: float = 60) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await mapper.wait_changed()


async def wait_mapped(mapper: UpnpPortMapper, count: int, timeout: float = 60) -> None:
    await until(
        mapper,
        lambda: sum(m.external_port is not None for m in mapper.mappings()) >= count,
        timeout,
    )


async def poll(condition: Callable[[], bool]) -> None:
    """For what no event tells: what the fake IGD saw."""
    with trio.fail_after(60):
        while not condition():
            await trio.sleep(0.1)


def of_type(events: list[tuple[float, PortMappingEvent]], kind: type[T]) -> list[tuple[float, T]]:
    return [(t, e) for t, e in events if isinstance(e, kind)]


class Recorder:
    """on_event, with the time each event came."""

    def __init__(self) -> None:
        self.events: list[tuple[float, PortMappingEvent]] = []

    def __call__(self, event: PortMappingEvent) -> None:
        self.events.append((trio.current_time(), event))

    def kinds(self) -> list[type]:
        return [type(e) for _, e in self.events]


async def test_maps_keeps_and_deletes(autojump_clock: trio.testing.MockClock) -> None:
    igd = FakeIgd()
    record = Recorder()
    async with running_igd(igd) as address:
        async with mapper_on(address, on_event=record) as mapper:
            await wait_mapped(mapper, 2)
            start = trio.current_time()
            assert mapper.device == UpnpDevice(
                igd.location,
                WANIP1,
                f"http://{LOOPBACK}:{igd.http_port}/ctl/IPConn",
                igd.friendly_name,
            )
            assert mapper.external_address == IPv4Address(EXTERNAL)
            assert mapper.external_port("tcp", 6881) == 6881
            assert mapper.external_port(MappingProtocol.UDP, 6881) == 6881
            assert mapper.external_port("tcp", 1234) is None
            tcp, _ = mapper.mappings()
            assert (tcp.protocol, tcp.lifetime) == (MappingProtocol.TCP, 3600)
            assert tcp.expires_at is not None
            assert 0 < tcp.expires_at - start <= 3600
            assert igd.mappings == {
                ("TCP", 6881): Entry(LOOPBACK, 6881, 3600, "bip"),
                ("UDP", 6881): Entry(LOOPBACK, 6881, 3600, "bip"),
            }
            # The address first, then the mappings, one at a time.
            assert [action for _, action, _ in igd.requests] == [
                "GetExternalIPAddress",
                "AddPortMapping",
                "AddPortMapping",
            ]
            assert record.kinds() == [
                UpnpDeviceFound,
                UpnpAddressChanged,
                UpnpPortMapped,
                UpnpPortMapped,
            ]
            # Kept alive: renewed halfway through each lease, the address asked as often.
            await trio.sleep(3 * 3600 + 10)
            renewals = igd.actions("AddPortMapping")
            assert len(renewals) >= 2 + 2 * 5
            assert all(args["NewLeaseDuration"] == "3600" for _, args in renewals)
            assert len(igd.actions("GetExternalIPAddress")) >= 6
            assert len(record.events) == 4  # renewals are silent
            stats = mapper.statistics()
            assert (stats.searches, stats.request_failures, stats.action_errors) == (1, 0, 0)
            assert stats.requests == len(igd.requests)
        # Deleted on exit.
        assert igd.mappings == {}
        assert [action for _, action, _ in igd.requests[-2:]] == ["DeletePortMapping"] * 2
        removed = of_type(record.events, MappingRemoved)
        assert [e.result for _, e in removed] == [0, 0]
        assert mapper.mappings() == ()


async def test_search_rounds_and_duplicates(autojump_clock: trio.testing.MockClock) -> None:
    igd = FakeIgd(description=b"<root/>")  # no service: every round is heard out
    record = Recorder()
    async with running_igd(igd) as address, mapper_on(address, on_event=record) as mapper:
        await until(mapper, lambda: bool(of_type(record.events, UpnpDiscoveryFailed)))
        stats = mapper.statistics()
        assert (stats.searches, stats.ssdp_sent) == (1, 3 * 5)
        # miniupnpd answers three of the five search targets: nine answers, one host.
        assert (stats.ssdp_received, stats.ssdp_duplicates) == (9, 8)
        assert stats.descriptions_rejected == 1
        assert igd.http_requests == ["GET /rootDesc.xml"]
        [search, *_] = igd.searches
        assert search.startswith(b"M-SEARCH * HTTP/1.1\r\n")
        assert f"HOST: {LOOPBACK}:{address[1]}\r\n".encode() in search
        [(at, failed)] = of_type(record.events, UpnpDiscoveryFailed)
        assert at == pytest.approx(UPNP_SEARCH_TIMEOUT)
        assert failed.retry_at == pytest.approx(at + UPNP_SEARCH_RETRY_MIN)
        assert mapper.device is None


@pytest.mark.parametrize("service_type", [WANIP2, WANPPP1])
async def test_other_services(autojump_clock: trio.testing.MockClock, service_type: str) -> None:
    igd = FakeIgd(service_type=service_type)
    async with running_igd(igd) as address, mapper_on(address) as mapper:
        await wait_mapped(mapper, 2)
        assert mapper.device is not None
        assert mapper.device.service_type == service_type


async def test_chunked_answers_and_a_url_base(autojump_clock: trio.testing.MockClock) -> None:
    igd = FakeIgd(chunked=True, control_url="ctl")
    async with running_igd(igd) as address:
        igd.url_base = f"http://{LOOPBACK}:{igd.http_port}/igd/"
        async with mapper_on(address) as mapper:
            await wait_mapped(mapper, 2)
            assert mapper.device is not None
            assert mapper.device.control_url == f"http://{LOOPBACK}:{igd.http_port}/igd/ctl"
            assert mapper.external_address == IPv4Address(EXTERNAL)


async def test_a_conflict_moves_to_a_random_port(autojump_clock: trio.testing.MockClock) -> None:
    igd = FakeIgd(taken={6881})
    record = Recorder()
    draws = random.Random(1)
    expected = [draws.randint(*UPNP_CONFLICT_PORTS) for _ in range(2)]
    async with running_igd(igd) as address:
        async with mapper_on(address, on_event=record, rng=random.Random(1)) as mapper:
            await wait_mapped(mapper, 2)
            assert mapper.external_port("tcp", 6881) == expected[0]
            assert mapper.external_port("udp", 6881) == expected[1]
            assert igd.mappings.keys() == {("TCP", expected[0]), ("UDP", expected[1])}
            asked = [
                (a["NewProtocol"], a["NewExternalPort"]) for _, a in igd.actions("AddPortMapping")
            ]
            assert asked == [
                ("TCP", "6881"),
                ("TCP", str(expected[0])),
                ("UDP", "6881"),
                ("UDP", str(expected[1])),
            ]
            mapped = [e.mapping.external_port for _, e in of_type(record.events, PortMapped)]
            assert mapped == expected
            # Renewed on the port granted.
            await trio.sleep(1900)
            assert igd.actions("AddPortMapping")[-1][1]["NewExternalPort"] == str(expected[1])
        assert igd.mappings == {}


async def test_a_conflict_at_renewal_gives_a_second_port(
    autojump_clock: trio.testing.MockClock,
) -> None:
    igd = FakeIgd()
    record = Recorder()
    async with running_igd(igd) as address:
        async with mapper_on(address, TCP_ONLY, on_event=record, rng=random.Random(2)) as mapper:
            await wait_mapped(mapper, 1)
            # The router rebooted and another host took our port meanwhile.
            igd.mappings[("TCP", 6881)] = Entry("192.168.1.9", 6881, 0, "other")
            await until(mapper, lambda: len(of_type(record.events, PortMapped)) == 2, 4000)
            [first, second] = [e.mapping for _, e in of_type(record.events, PortMapped)]
            assert first.external_port == 6881
            assert second.external_port != 6881
            assert second.external_port is not None
            assert UPNP_CONFLICT_PORTS[0] <= second.external_port <= UPNP_CONFLICT_PORTS[1]
            assert mapper.external_port("tcp", 6881) == second.external_port
            assert not of_type(record.events, MappingFailed)  # it moved without a gap
        assert igd.mappings == {("TCP", 6881): Entry("192.168.1.9", 6881, 0, "other")}


async def test_permanent_leases_only(autojump_clock: trio.testing.MockClock) -> None:
    igd = FakeIgd(permanent_only=True)
    async with running_igd(igd) as address, mapper_on(address, TCP_ONLY) as mapper:
        await wait_mapped(mapper, 1)
        [mapping] = mapper.mappings()
        assert (mapping.lifetime, mapping.expires_at) == (0, math.inf)
        leases = [a["NewLeaseDuration"] for _, a in igd.actions("AddPortMapping")]
        assert leases == ["3600", "0"]
        # Renewed hourly all the same (routers reboot), asking permanent leases only.
        granted_at = igd.actions("AddPortMapping")[-1][0]
        await trio.sleep(UPNP_PERMANENT_RENEW + 10)
        [(renewed_at, renewal)] = igd.actions("AddPortMapping")[2:]
        assert renewed_at - granted_at == pytest.approx(UPNP_PERMANENT_RENEW, abs=1)
        assert renewal["NewLeaseDuration"] == "0"
        assert len(igd.actions("GetExternalIPAddress")) == 2


async def test_same_port_values_required(autojump_clock: trio.testing.MockClock) -> None:
    igd = FakeIgd(same_port_only=True)
    async with running_igd(igd) as address, mapper_on(address, []) as mapper:
        mapper.add_mapping("tcp", 7000, external_port=7001)
        await wait_mapped(mapper, 1)
        assert mapper.external_port("tcp", 7000) == 7000
        asked = [a["NewExternalPort"] for _, a in igd.actions("AddPortMapping")]
        assert asked == ["7001", "7000"]


@pytest.mark.parametrize("code", [727, 716, 606])
async def test_a_refusal_fails_the_mapping(
    autojump_clock: trio.testing.MockClock, code: int
) -> None:
    igd = FakeIgd(fault=code)
    record = Recorder()
    async with running_igd(igd) as address, mapper_on(address, TCP_ONLY, on_event=record) as mapper:
        await until(mapper, lambda: bool(of_type(record.events, MappingFailed)))
        [(at, failed)] = of_type(record.events, MappingFailed)
        assert failed.result == code
        assert failed.mapping.external_port is None
        assert failed.retry_at == pytest.approx(at + UPNP_RETRY_MAX)
        assert len(igd.actions("AddPortMapping")) == 1
        assert mapper.statistics().action_errors == 1
        igd.fault = None  # the user changed a setting
        await until(mapper, lambda: mapper.external_port("tcp", 6881) is not None, 4000)
        assert trio.current_time() == pytest.approx(failed.retry_at, abs=1)


@pytest.mark.parametrize(("code", "backoff"), [(718, UPNP_RETRY_MAX), (501, UPNP_RETRY_MIN)])
async def test_conflicts_run_out(
    autojump_clock: trio.testing.MockClock, code: int, backoff: float
) -> None:
    igd = FakeIgd(fault=code)
    record = Recorder()
    async with running_igd(igd) as address, mapper_on(address, TCP_ONLY, on_event=record) as mapper:
        await until(mapper, lambda: bool(of_type(record.events, MappingFailed)))
        [(at, failed)] = of_type(record.events, MappingFailed)
        assert failed.result == code
        assert failed.retry_at == pytest.approx(at + backoff)
        ports = [a["NewExternalPort"] for _, a in igd.actions("AddPortMapping")]
        assert len(ports) == 1 + UPNP_CONFLICT_ATTEMPTS
        assert ports[0] == "6881"
        if code == 501:
            # It may pass: the wait doubles, up to its bound.
            await until(mapper, lambda: len(of_type(record.events, MappingFailed)) == 8, 20000)
            gaps = [round(e.retry_at - t) for t, e in of_type(record.events, MappingFailed)]
            assert gaps == [60, 120, 240, 480, 960, 1920, 3600, 3600]
        assert mapper.device is not None  # a device that answers is not lost


async def test_unanswered_requests_back_off_then_the_device_is_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    igd = FakeIgd(slow_actions={"AddPortMapping"}, slow_delay=1000)
    record = Recorder()
    async with (
        running_igd(igd) as address,
        mapper_on(address, TCP_ONLY, on_event=record, http_timeout=2) as mapper,
    ):
        await until(mapper, lambda: bool(of_type(record.events, UpnpDeviceLost)), 600)
        failures = of_type(record.events, MappingFailed)
        assert [round(e.retry_at - t) for t, e in failures] == [60, 120, 240]
        assert all(e.result is None for _, e in failures)
        [(_, lost)] = of_type(record.events, UpnpDeviceLost)
        assert lost.reason == "no answer within 2 s"
        assert mapper.device is None
        assert mapper.external_address is None
        stats = mapper.statistics()
        assert (stats.request_failures, stats.devices_lost) == (3, 1)
        # Searched again at once, found again: the mapping is asked for again.
        igd.slow_actions.clear()
        await wait_mapped(mapper, 1)
        assert mapper.statistics().searches == 2
        assert len(of_type(record.events, UpnpDeviceFound)) == 2


@pytest.mark.parametrize("misbehaviour", ["drop", "silent", "garbage"])
async def test_a_device_lost_and_found_again(
    autojump_clock: trio.testing.MockClock, misbehaviour: str
) -> None:
    igd = FakeIgd()
    record = Recorder()
    async with running_igd(igd) as address, mapper_on(address, on_event=record) as mapper:
        await wait_mapped(mapper, 2)
        setattr(igd, misbehaviour, b"<html>oops</html>" if misbehaviour == "garbage" else True)
        await until(mapper, lambda: bool(of_type(record.events, UpnpDeviceLost)), 4000)
        # The grants lapse with the device.
        assert all(m.external_port is None for m in mapper.mappings())
        assert mapper.device is None
        setattr(igd, misbehaviour, None if misbehaviour == "garbage" else False)
        await wait_mapped(mapper, 2)
        assert mapper.external_port("tcp", 6881) == 6881
        kinds = record.kinds()
        assert kinds.count(UpnpDeviceFound) == 2
        assert kinds.count(UpnpPortMapped) == 4


async def test_a_device_that_keeps_failing_is_searched_for_more_slowly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Found by every search, useless to talk to.
    igd = FakeIgd(garbage=b"<html>oops</html>", garbage_status=500)
    record = Recorder()
    async with running_igd(igd) as address, mapper_on(address, on_event=record) as mapper:
        await trio.sleep(3 * 3600)
        lost = [t for t, _ in of_type(record.events, UpnpDeviceLost)]
        found = [t for t, _ in of_type(record.events, UpnpDeviceFound)]
        waits = [round(f - t) for t, f in zip(lost, found[1:], strict=False)]
        # The first search is heard out before the next starts; then the back-off.
        assert waits[:6] == [UPNP_SEARCH_TIMEOUT, 60, 120, 240, 480, 960]
        assert set(waits[6:]) <= {UPNP_SEARCH_RETRY_MAX}
        assert mapper.statistics().devices_lost == len(lost)


async def test_no_device_searches_again_ever_more_slowly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    igd = FakeIgd(ssdp_silent=True)
    record = Recorder()
    async with running_igd(igd) as address:
        async with mapper_on(address, on_event=record) as mapper:
            await trio.sleep(4 * 3600)
            failed = of_type(record.events, UpnpDiscoveryFailed)
            gaps = [round(e.retry_at - t) for t, e in failed]
            assert gaps[:6] == [60, 120, 240, 480, 960, UPNP_SEARCH_RETRY_MAX]
            assert set(gaps[6:]) == {UPNP_SEARCH_RETRY_MAX}
            assert mapper.statistics().searches == len(failed)
            assert all(m.external_port is None for m in mapper.mappings())
            igd.ssdp_silent = False
            await wait_mapped(mapper, 2, UPNP_SEARCH_RETRY_MAX + 10)
            start = trio.current_time()
        assert trio.current_time() - start < 1
        assert igd.mappings == {}


@pytest.mark.parametrize(
    ("knobs", "counter"),
    [
        ({"location_host": "127.0.0.2"}, "ssdp_untrusted"),  # LOCATION on another host
        ({"location_scheme": "https"}, "ssdp_untrusted"),
        (
            {"ssdp_answer": b"HTTP/1.1 200 OK\r\nLOCATION: http://router.lan/\r\nST: x\r\n\r\n"},
            "ssdp_untrusted",
        ),
        ({"ssdp_answer": b"\x00garbage"}, "ssdp_malformed"),
        ({"ssdp_answer": b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 2000 + b"\r\n"}, "ssdp_malformed"),
    ],
)
async def test_untrusted_answers_are_dropped(
    autojump_clock: trio.testing.MockClock, knobs: dict[str, Any], counter: str
) -> None:
    igd = FakeIgd(**knobs)
    async with running_igd(igd) as address, mapper_on(address) as mapper:
        await trio.sleep(UPNP_SEARCH_TIMEOUT + 1)
        stats = mapper.statistics()
        assert getattr(stats, counter) == stats.ssdp_received > 0
        assert mapper.device is None
    assert igd.http_requests == []  # nothing was fetched


@pytest.mark.parametrize(
    "description",
    [
        b'<?xml version="1.0"?><!DOCTYPE root [<!ENTITY a "b">]><root>&a;</root>',
        b"<root>" + b" " * UPNP_MAX_DESCRIPTION + b"</root>",
        b"<html><body>router login</body></html>",
        None,  # with a control URL on another host, below
    ],
)
async def test_hostile_descriptions_are_refused(
    autojump_clock: trio.testing.MockClock, description: bytes | None
) -> None:
    igd = FakeIgd(description=description, control_url="http://127.0.0.2:5000/ctl/IPConn")
    async with running_igd(igd) as address, mapper_on(address) as mapper:
        await trio.sleep(UPNP_SEARCH_TIMEOUT + 1)
        assert mapper.device is None
        assert mapper.statistics().descriptions_rejected == 1
    assert igd.requests == []  # nothing was POSTed


@pytest.mark.parametrize(("delay", "found"), [(1.5, True), (2.5, False)])
async def test_slow_answers_are_waited_for_within_the_timeout(
    autojump_clock: trio.testing.MockClock, delay: float, found: bool
) -> None:
    igd = FakeIgd(delay=delay)
    async with running_igd(igd) as address, mapper_on(address, http_timeout=2) as mapper:
        await trio.sleep(UPNP_SEARCH_TIMEOUT + 10)
        assert (mapper.device is not None) is found
        assert mapper.external_port("tcp", 6881) == (6881 if found else None)
        assert mapper.statistics().descriptions_rejected == (0 if found else 1)


async def test_devices_per_search_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    # Decoys from 127.0.0.2, 127.0.0.3...: the real answer comes last, past the bound.
    igd = FakeIgd(decoys=UPNP_MAX_DEVICES + 4)
    record = Recorder()
    async with running_igd(igd) as address, mapper_on(address, on_event=record) as mapper:
        await until(mapper, lambda: bool(of_type(record.events, UpnpDiscoveryFailed)))
        stats = mapper.statistics()
        assert stats.descriptions_rejected == UPNP_MAX_DEVICES  # nothing listens there
        assert stats.ssdp_ignored > 0
        assert igd.http_requests == []  # the real one was never fetched
        assert mapper.device is None


async def test_add_and_remove_while_open(autojump_clock: trio.testing.MockClock) -> None:
    igd = FakeIgd()
    record = Recorder()
    async with running_igd(igd) as address, mapper_on(address, [], on_event=record) as mapper:
        await until(mapper, lambda: mapper.external_address is not None)
        assert mapper.mappings() == ()
        mapping_id = mapper.add_mapping("udp", 7000, external_port=7001)
        await wait_mapped(mapper, 1)
        assert mapper.external_port("udp", 7000) == 7001
        assert igd.mappings == {("UDP", 7001): Entry(LOOPBACK, 7000, 3600, "bip")}
        mapper.remove_mapping(mapping_id)
        mapper.remove_mapping(mapping_id)  # already being removed: nothing more
        await until(mapper, lambda: not mapper.mappings())
        assert igd.mappings == {}
        [(_, removed)] = of_type(record.events, MappingRemoved)
        assert removed.result == 0
        with pytest.raises(LocalProtocolError):
            mapper.remove_mapping(mapping_id)
        with pytest.raises(LocalProtocolError):
            mapper.add_mapping("sctp", 1)  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError):
            mapper.add_mapping("tcp", 0)
        with pytest.raises(LocalProtocolError):
            mapper.add_mapping("tcp", 1, external_port=70000)
        mapper.add_mapping("tcp", 1)
        with pytest.raises(LocalProtocolError):
            mapper.add_mapping(MappingProtocol.TCP, 1)


async def test_a_removal_during_a_search_is_told_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    igd = FakeIgd(ssdp_silent=True)
    record = Recorder()
    async with running_igd(igd) as address, mapper_on(address, on_event=record) as mapper:
        await trio.sleep(1)  # searching
        [tcp, _] = mapper.mappings()
        mapper.remove_mapping(tcp.mapping_id)
        with trio.fail_after(0.1):
            await mapper.wait_changed()
        assert record.kinds() == [MappingRemoved]


async def test_cancelled_block_still_deletes(autojump_clock: trio.testing.MockClock) -> None:
    igd = FakeIgd()
    async with running_igd(igd) as address:
        with trio.move_on_after(100):
            async with mapper_on(address) as mapper:
                await trio.sleep_forever()
        assert mapper.mappings() == ()
        assert igd.mappings == {}
        assert len(igd.actions("DeletePortMapping")) == 2


async def test_an_unanswered_request_is_deleted_on_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    igd = FakeIgd(slow_actions={"AddPortMapping"}, slow_delay=1000)
    record = Recorder()
    async with running_igd(igd) as address:
        async with mapper_on(address, TCP_ONLY, on_event=record):
            # The address, then the mapping, whose answer never comes.
            await poll(lambda: igd.http_requests.count("POST /ctl/IPConn") == 2)
        # The router may have made it: it is deleted all the same (714: it had not).
        [(_, deletion)] = igd.actions("DeletePortMapping")
        assert deletion["NewExternalPort"] == "6881"
        [(_, removed)] = of_type(record.events, MappingRemoved)
        assert removed.result == 714


async def test_exit_is_bounded_when_the_device_is_silent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    igd = FakeIgd()
    record = Recorder()
    async with running_igd(igd) as address:
        async with mapper_on(address, on_event=record, close_timeout=1.0) as mapper:
            await wait_mapped(mapper, 2)
            igd.silent = True
            start = trio.current_time()
        assert trio.current_time() - start == pytest.approx(1.0)
        # Given up: said all the same.
        removed = of_type(record.events, MappingRemoved)
        assert [e.result for _, e in removed] == [None, None]


async def test_an_immediate_close_still_tells_its_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    igd = FakeIgd(ssdp_silent=True)
    record = Recorder()
    async with running_igd(igd) as address, mapper_on(address, on_event=record) as mapper:
        pass
    assert mapper.mappings() == ()
    assert record.kinds() == [MappingRemoved, MappingRemoved]


async def test_the_blocks_own_error_comes_out_unwrapped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    igd = FakeIgd()
    async with running_igd(igd) as address:

        async def fail_inside() -> None:
            async with mapper_on(address) as mapper:
                await wait_mapped(mapper, 2)
                raise KeyError("the caller's own")

        with pytest.raises(KeyError):
            await fail_inside()
        assert igd.mappings == {}


async def test_renewal_refused_for_a_passing_reason_keeps_the_grant_until_it_runs_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    igd = FakeIgd()
    record = Recorder()
    async with running_igd(igd) as address, mapper_on(address, TCP_ONLY, on_event=record) as mapper:
        await wait_mapped(mapper, 1)
        [granted] = mapper.mappings()
        assert granted.expires_at is not None
        igd.fault = 728  # NoPortMapsAvailable: it may pass
        await until(mapper, lambda: bool(of_type(record.events, MappingFailed)), 2000)
        [(_, refused)] = of_type(record.events, MappingFailed)
        assert refused.result == 728
        assert refused.mapping.external_port == 6881  # still standing
        assert mapper.external_port("tcp", 6881) == 6881
        await until(mapper, lambda: mapper.external_port("tcp", 6881) is None, 2000)
        assert trio.current_time() == pytest.approx(granted.expires_at)
        lapsed = of_type(record.events, MappingFailed)[-1][1]
        assert (lapsed.result, lapsed.mapping.external_port) == (None, None)
        igd.fault = None
        await wait_mapped(mapper, 1, UPNP_RETRY_MAX)


async def test_address_failures_and_changes(autojump_clock: trio.testing.MockClock) -> None:
    igd = FakeIgd(address_fault=501)
    record = Recorder()
    async with running_igd(igd) as address, mapper_on(address, TCP_ONLY, on_event=record) as mapper:
        await wait_mapped(mapper, 1)  # mappings go on without the address
        [(at, failed)] = of_type(record.events, UpnpAddressFailed)
        assert failed.result == 501
        assert failed.retry_at == pytest.approx(at + UPNP_RETRY_MIN)
        assert mapper.external_address is None
        igd.address_fault = None
        igd.external = ""  # not connected upstream yet
        await until(mapper, lambda: len(of_type(record.events, UpnpAddressFailed)) == 2, 100)
        assert of_type(record.events, UpnpAddressFailed)[-1][1].result is None
        igd.external = EXTERNAL
        await until(mapper, lambda: mapper.external_address is not None, 200)
        igd.external = "198.51.100.1"  # a new address from the ISP
        await until(mapper, lambda: mapper.external_address == IPv4Address("198.51.100.1"), 2000)
        assert [e.address for _, e in of_type(record.events, UpnpAddressChanged)] == [
            IPv4Address(EXTERNAL),
            IPv4Address("198.51.100.1"),
        ]


async def test_logging(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bip_handshake")
    igd = FakeIgd(taken={6881})
    async with (
        running_igd(igd) as address,
        mapper_on(address, TCP_ONLY, rng=random.Random(3)) as mapper,
    ):
        await wait_mapped(mapper, 1)
        port = mapper.external_port("tcp", 6881)
    records = [r for r in caplog.records if r.name == "bip_handshake.upnp"]
    assert all(r.levelno <= logging.INFO for r in records)
    infos = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert infos == [
        "UPnP gateway 127.0.0.1 found: OpenWrt router, WANIPConnection:1",
        f"UPnP gateway 127.0.0.1: our external address is {EXTERNAL}",
        f"UPnP gateway 127.0.0.1 maps TCP port 6881 to external port {port} for 3600 s",
    ]


async def test_bad_arguments() -> None:
    bad: list[dict[str, Any]] = [
        {"ssdp_address": ("gateway.local", 1900)},
        {"ssdp_address": ("239.255.255.250", 0)},
        {"ssdp_address": "239.255.255.250:1900"},
        {"bind_host": "any"},
        {"bind_host": 0},
        {"gateway": "router.lan"},
        {"gateway": 5},
        {"lease_duration": -1},
        {"lease_duration": 604801},
        {"lease_duration": True},
        {"description": "a\nb"},
        {"description": "x" * 257},
        {"close_timeout": -1},
        {"search_timeout": 0},
        {"http_timeout": math.nan},
        {"http_timeout": "5"},
    ]
    for kwargs in bad:
        with pytest.raises(LocalProtocolError):
            async with open_upnp_mapper(**kwargs):
                pass  # pragma: no cover
    for mappings in ([("tcp", 0)], [("sctp", 1)], [("tcp", 1), ("tcp", 1)]):
        with pytest.raises(LocalProtocolError):
            async with open_upnp_mapper(mappings):  # type: ignore[arg-type]
                pass  # pragma: no cover


async def test_multicast_searches_stay_on_the_lan() -> None:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        _multicast_options(sock, IPv4Address(LOOPBACK))
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 2
        interface = sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, 4)
        assert interface == IPv4Address(LOOPBACK).packed


# -- a search that cannot start, and which device a search takes ----------------------------------


async def test_a_search_socket_that_cannot_be_opened_is_a_search_that_found_nothing(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bip_handshake.upnp")
    real = trio.socket.socket
    exhausted = True

    def socket_or_emfile(*args: Any, **kwargs: Any) -> trio.socket.SocketType:
        if exhausted:
            raise OSError(errno.EMFILE, "Too many open files")
        return real(*args, **kwargs)

    igd = FakeIgd()
    record = Recorder()
    async with running_igd(igd) as address:
        monkeypatch.setattr(trio.socket, "socket", socket_or_emfile)
        # The block (the session around it) goes on: the search found nothing, said so.
        async with mapper_on(address, on_event=record) as mapper:
            await until(mapper, lambda: bool(of_type(record.events, UpnpDiscoveryFailed)))
            [(at, failed)] = of_type(record.events, UpnpDiscoveryFailed)
            assert failed.retry_at == pytest.approx(at + UPNP_SEARCH_RETRY_MIN)
            assert any("cannot open a search socket" in r.getMessage() for r in caplog.records)
            assert igd.searches == []
            exhausted = False  # descriptors freed: the next search finds the router
            await wait_mapped(mapper, 2, UPNP_SEARCH_RETRY_MIN + 10)
        assert igd.mappings == {}


class MediaServerToo(FakeIgd):
    """A router whose address also serves a media server: to a search for the IGD, an
    answer for ``upnp:rootdevice`` (the media server's) comes first, or (``claims``) one
    claiming the IGD with a LOCATION that serves nothing."""

    claims: bool = False

    def ssdp_answers(self, data: bytes) -> list[tuple[str, bytes]]:
        answers = super().ssdp_answers(data)
        if search_target(data) != IGD1:
            return []
        other = f"http://{self.host}:{self.http_port}/media.xml"
        first = ssdp_answer(IGD1 if self.claims else "upnp:rootdevice", other)
        return [(self.host, first), *answers]


@pytest.mark.parametrize("claims", [False, True])
async def test_a_host_whose_first_location_serves_no_gateway_has_its_gateway_fetched(
    autojump_clock: trio.testing.MockClock, claims: bool
) -> None:
    # Claiming the gateway at a URL that serves nothing (a forged answer from the router's
    # address, say) used to shut the router's own LOCATION out of the search.
    igd = MediaServerToo()
    igd.claims = claims
    async with running_igd(igd) as address, mapper_on(address) as mapper:
        await trio.sleep(UPNP_SEARCH_TIMEOUT + 1)
        fetched = [r for r in igd.http_requests if r.startswith("GET")]
        assert fetched == ["GET /media.xml", "GET /rootDesc.xml"]
        assert mapper.device is not None
        assert mapper.external_port("tcp", 6881) == 6881
        assert mapper.statistics().ssdp_duplicates > 0  # its later answers: nothing to fetch
        assert mapper.statistics().descriptions_rejected == 1


async def test_every_gateway_that_answers_maps_the_ports(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A router and a mesh node (a second NAT) on the LAN: as libtorrent, map on each.
    first = FakeIgd(host="127.0.0.2", friendly_name="first", external="198.51.100.2")
    gateway = FakeIgd(host="127.0.0.3", friendly_name="gateway")
    record = Recorder()
    async with (
        running_igds(first, gateway) as address,
        mapper_on(address, on_event=record, gateway="127.0.0.3") as mapper,
    ):
        await until(mapper, lambda: len(of_type(record.events, UpnpPortMapped)) == 4)
        assert [d.friendly_name for d in mapper.devices] == ["first", "gateway"]
        assert mapper.device is not None
        assert mapper.device.friendly_name == "gateway"  # read first
        assert mapper.external_address == IPv4Address(EXTERNAL)
        found = [t for t, _ in of_type(record.events, UpnpDeviceFound)]
        assert len(found) == 2
        assert max(found) < 1  # each used at once, while the search hears out the others
        mapped = {
            (e.device.friendly_name, e.mapping.protocol)
            for _, e in of_type(record.events, UpnpPortMapped)
        }
        assert mapped == {(n, p) for n in ("first", "gateway") for p in MappingProtocol}
        held = [
            (m.device.friendly_name, m.external_address, m.mapping.external_port)
            for m in mapper.device_mappings()
        ]
        assert held == [
            ("first", IPv4Address("198.51.100.2"), 6881),
            ("first", IPv4Address("198.51.100.2"), 6881),
            ("gateway", IPv4Address(EXTERNAL), 6881),
            ("gateway", IPv4Address(EXTERNAL), 6881),
        ]
        assert len(first.actions("AddPortMapping")) == len(gateway.actions("AddPortMapping")) == 2
        await trio.sleep(UPNP_SEARCH_TIMEOUT)
        assert len(first.searches) == len(gateway.searches) == 3 * 5  # one search, heard out
        assert not of_type(record.events, UpnpDiscoveryFailed)
    # Deleted on both on the way out: one MappingRemoved per mapping.
    assert first.mappings == gateway.mappings == {}
    removed = of_type(record.events, MappingRemoved)
    assert [e.result for _, e in removed] == [0, 0]
    assert not of_type(record.events, UpnpMappingFailed)


@pytest.mark.parametrize("gateway", [None, "127.0.0.9"])
async def test_every_device_that_serves_is_used_the_first_found_read_first(
    autojump_clock: trio.testing.MockClock, gateway: str | None
) -> None:
    useless = FakeIgd(host="127.0.0.2", description=b"<root/>")
    first = FakeIgd(host="127.0.0.3", friendly_name="first")
    second = FakeIgd(host="127.0.0.4", friendly_name="second")
    record = Recorder()
    async with (
        running_igds(useless, first, second) as address,
        mapper_on(address, on_event=record, gateway=gateway) as mapper,
    ):
        await until(mapper, lambda: len(of_type(record.events, UpnpPortMapped)) == 4)
        assert mapper.device is not None
        assert mapper.device.friendly_name == "first"  # no gateway among them: as found
        assert [d.friendly_name for d in mapper.devices] == ["first", "second"]
        assert mapper.statistics().descriptions_rejected == 1
        assert len(second.actions("AddPortMapping")) == 2


def test_the_gateway_preferred_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    router = IPv4Address("192.168.1.1")
    monkeypatch.setattr(upnp_shell, "default_gateway", lambda: router)
    group = IPv4Address("239.255.255.250")
    assert _preferred_device("route", group) == router  # the default route's gateway
    assert _preferred_device("route", IPv4Address("255.255.255.255")) == router
    assert _preferred_device("route", IPv4Address(LOOPBACK)) == IPv4Address(LOOPBACK)
    assert _preferred_device("10.0.0.138", group) == IPv4Address("10.0.0.138")
    assert _preferred_device(None, group) is None
    monkeypatch.setattr(upnp_shell, "default_gateway", lambda: None)
    assert _preferred_device("route", group) is None  # no default route: no preference
    for bad in ("router.lan", 5):
        with pytest.raises(LocalProtocolError):
            _preferred_device(bad, group)


@pytest.mark.parametrize("unconnected", ["", "0.0.0.0"])
async def test_the_connected_service_is_used(
    autojump_clock: trio.testing.MockClock, unconnected: str
) -> None:
    # miniupnpc's check: the WANIPConnection is down, the WANPPPConnection is up.
    igd = FakeIgd(external=unconnected, second_service=(WANPPP1, "/ctl/PPPConn"))
    record = Recorder()
    async with running_igd(igd) as address, mapper_on(address, on_event=record) as mapper:
        await wait_mapped(mapper, 2)
        assert mapper.device is not None
        assert (mapper.device.service_type, mapper.device.control_url) == (
            WANPPP1,
            f"http://{LOOPBACK}:{igd.http_port}/ctl/PPPConn",
        )
        assert mapper.external_address == IPv4Address(EXTERNAL)  # learnt by the check
        assert [action for _, action, _ in igd.requests] == [
            "GetExternalIPAddress",  # the WANIPConnection: not connected
            "GetExternalIPAddress",  # the WANPPPConnection
            "AddPortMapping",
            "AddPortMapping",
        ]
        assert record.kinds() == [
            UpnpDeviceFound,
            UpnpAddressChanged,
            UpnpPortMapped,
            UpnpPortMapped,
        ]


async def test_with_no_service_connected_the_first_is_used(
    autojump_clock: trio.testing.MockClock,
) -> None:
    igd = FakeIgd(external="", second_external="", second_service=(WANPPP1, "/ctl/PPPConn"))
    async with running_igd(igd) as address, mapper_on(address) as mapper:
        await wait_mapped(mapper, 2)
        assert mapper.device is not None
        assert mapper.device.service_type == WANIP1
        assert mapper.external_address is None


# -- what real routers answer ------------------------------------------------------------------


async def test_a_200_with_any_body_maps_and_deletes(autojump_clock: trio.testing.MockClock) -> None:
    igd = FakeIgd(garbage=b"<html>Done</html>")  # a 200 to every action
    record = Recorder()
    async with running_igd(igd) as address, mapper_on(address, on_event=record) as mapper:
        await wait_mapped(mapper, 2)
        # The address must be answered properly: it is not taken from such a body.
        assert mapper.external_address is None
        [(_, failed)] = of_type(record.events, UpnpAddressFailed)
        assert failed.result is None
        assert mapper.statistics().request_failures == 1
    removed = of_type(record.events, MappingRemoved)
    assert [e.result for _, e in removed] == [0, 0]
    assert len(igd.actions("DeletePortMapping")) == 2


async def test_a_conflict_on_our_own_mapping_is_a_renewal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Open.NAT #14: the router answers 718 to a client adding again the mapping it holds.
    # It used to move us to a new random port at every renewal and leak the old ones.
    igd = FakeIgd(permanent_only=True, readd_conflict=True)
    record = Recorder()
    async with running_igd(igd) as address:
        async with mapper_on(address, TCP_ONLY, on_event=record, rng=random.Random(1)) as mapper:
            await wait_mapped(mapper, 1)
            await trio.sleep(5 * UPNP_PERMANENT_RENEW + 60)
            told = [e.mapping.external_port for _, e in of_type(record.events, PortMapped)]
            assert told == [6881]
            assert not of_type(record.events, MappingFailed)
            [mapping] = mapper.mappings()
            assert (mapping.external_port, mapping.lifetime) == (6881, 0)
            assert list(igd.mappings) == [("TCP", 6881)]
            asked = {a["NewExternalPort"] for _, a in igd.actions("AddPortMapping")}
            assert asked == {"6881"}
            assert len(igd.actions("GetSpecificPortMappingEntry")) == 5
        assert igd.mappings == {}
        assert [a["NewExternalPort"] for _, a in igd.actions("DeletePortMapping")] == ["6881"]


async def test_a_conflict_on_our_own_leased_mapping_keeps_it_to_its_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    igd = FakeIgd(readd_conflict=True)  # leases of 3600 s, never renewed by a re-add
    record = Recorder()
    async with running_igd(igd) as address:
        async with mapper_on(address, TCP_ONLY, on_event=record) as mapper:
            await wait_mapped(mapper, 1)
            granted_at = trio.current_time()
            await trio.sleep(1801)
            # Deemed renewed for what the router says is left of its lease.
            [mapping] = mapper.mappings()
            assert mapping.lifetime == pytest.approx(1800, abs=2)
            assert mapping.expires_at == pytest.approx(granted_at + 3600, abs=2)
            # Past its end the router lets it go, and a new one is granted: the same port
            # all along, never a gap told.
            await trio.sleep(3 * 3600)
            assert mapper.external_port("tcp", 6881) == 6881
            assert [type(e) for _, e in record.events] == [
                UpnpDeviceFound,
                UpnpAddressChanged,
                UpnpPortMapped,
            ]
            assert {a["NewExternalPort"] for _, a in igd.actions("AddPortMapping")} == {"6881"}
            assert len(igd.actions("AddPortMapping")) < 4 * 20  # renewed ever sooner, bounded
        assert igd.mappings == {}


async def test_a_mapping_left_by_an_earlier_run_is_taken_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    igd = FakeIgd(readd_conflict=True)
    igd.mappings[("TCP", 6881)] = Entry(LOOPBACK, 6881, 0, "bip")  # ours, never deleted
    async with running_igd(igd) as address, mapper_on(address, TCP_ONLY) as mapper:
        await wait_mapped(mapper, 1)
        assert mapper.external_port("tcp", 6881) == 6881
        [mapping] = mapper.mappings()
        assert (mapping.lifetime, mapping.expires_at) == (0, math.inf)  # as the router holds it
        assert [a["NewExternalPort"] for _, a in igd.actions("AddPortMapping")] == ["6881"]
    assert igd.mappings == {}


async def test_a_conflict_for_another_hosts_entry_or_another_port_moves_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The entry forwards to another host, or to our host but another port: not ours, a
    # random port is asked for, and the entry is never deleted as ours.
    for entry in (Entry("192.168.1.9", 6881, 0, "other"), Entry(LOOPBACK, 7000, 0, "other")):
        igd = FakeIgd(readd_conflict=True)
        igd.mappings[("TCP", 6881)] = entry
        if entry.client == LOOPBACK:
            igd.taken.add(6881)
        async with running_igd(igd) as address, mapper_on(address, TCP_ONLY) as mapper:
            await wait_mapped(mapper, 1)
            assert mapper.external_port("tcp", 6881) != 6881
        assert igd.mappings == {("TCP", 6881): entry}


async def test_a_conflict_for_our_disabled_entry_moves_on_and_deletes_both(
    autojump_clock: trio.testing.MockClock,
) -> None:
    igd = FakeIgd(readd_conflict=True)
    igd.mappings[("TCP", 6881)] = Entry(LOOPBACK, 6881, 0, "bip", enabled=False)
    async with running_igd(igd) as address, mapper_on(address, TCP_ONLY) as mapper:
        await wait_mapped(mapper, 1)
        moved = mapper.external_port("tcp", 6881)
        assert moved != 6881  # it forwards nothing
    # Ours all the same: deleted with the port granted.
    deleted = [a["NewExternalPort"] for _, a in igd.actions("DeletePortMapping")]
    assert deleted == ["6881", str(moved)]
    assert igd.mappings == {}


async def test_every_port_granted_is_deleted_on_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A renewal refused with 501 by a router that will not say whose the port is: the
    # mapping moves, and the port it held may still be ours.
    refuse = False
    igd = FakeIgd(
        specific_fault=401, add_fault=lambda port: 501 if refuse and port == 6881 else None
    )
    record = Recorder()
    async with running_igd(igd) as address:
        async with mapper_on(address, TCP_ONLY, on_event=record, rng=random.Random(5)) as mapper:
            await wait_mapped(mapper, 1)
            refuse = True
            await until(mapper, lambda: mapper.external_port("tcp", 6881) != 6881, 2000)
            moved = mapper.external_port("tcp", 6881)
            assert moved is not None
            assert set(igd.mappings) == {("TCP", 6881), ("TCP", moved)}
        # Both deleted, the latest last; its result is the one told.
        deleted = [a["NewExternalPort"] for _, a in igd.actions("DeletePortMapping")]
        assert deleted == ["6881", str(moved)]
        assert igd.mappings == {}
        [(_, removed)] = of_type(record.events, MappingRemoved)
        assert removed.result == 0


async def test_ports_kept_for_deletion_are_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Every renewal refused with 501, every random port granted: the mapping moves at each
    # renewal; only the last UPNP_MAX_PORTS_KEPT are remembered (the others' leases end).
    granted: set[int] = set()

    def refuse_held(port: int) -> int | None:
        if port in granted:
            return 501
        granted.add(port)
        return None

    igd = FakeIgd(specific_fault=401, add_fault=refuse_held, permanent_only=True)
    async with running_igd(igd) as address:
        async with mapper_on(address, TCP_ONLY, rng=random.Random(7)):
            await trio.sleep((UPNP_MAX_PORTS_KEPT + 4) * UPNP_PERMANENT_RENEW + 60)
            assert len(granted) >= UPNP_MAX_PORTS_KEPT + 4
        assert len(igd.actions("DeletePortMapping")) == UPNP_MAX_PORTS_KEPT


async def test_a_501_on_a_port_shown_to_be_another_host_s_is_neither_kept_nor_deleted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The router refuses our renewal with 501 (not 718); GetSpecificPortMappingEntry shows
    # the port forwards to another host: it is theirs, as after a 718.
    other = [False]
    igd = FakeIgd(add_fault=lambda port: 501 if other[0] and port == 6881 else None)
    async with running_igd(igd) as address:
        async with mapper_on(address, TCP_ONLY) as mapper:
            await wait_mapped(mapper, 1)
            igd.mappings[("TCP", 6881)] = Entry("192.168.1.9", 6881, 0, "other")
            other[0] = True
            await until(mapper, lambda: mapper.external_port("tcp", 6881) not in (None, 6881), 4000)
            assert igd.actions("GetSpecificPortMappingEntry")
        deleted = {args["NewExternalPort"] for _, args in igd.actions("DeletePortMapping")}
        assert "6881" not in deleted
        assert igd.mappings[("TCP", 6881)] == Entry("192.168.1.9", 6881, 0, "other")


async def test_after_a_conflict_the_port_held_is_not_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Another host took our port (the router rebooted); the random ports then fail in a way
    # that may pass. The router said the port is another's: our grant of it is over.
    igd = FakeIgd(add_fault=lambda port: None if port == 6881 else 501)
    record = Recorder()
    async with running_igd(igd) as address:
        async with mapper_on(address, TCP_ONLY, on_event=record) as mapper:
            await wait_mapped(mapper, 1)
            igd.mappings[("TCP", 6881)] = Entry("192.168.1.9", 6881, 0, "other")
            await until(mapper, lambda: bool(of_type(record.events, MappingFailed)), 2000)
            [(_, failed)] = of_type(record.events, MappingFailed)
            assert failed.result == 501
            assert failed.mapping.external_port is None  # not 6881 until its lease ends
            assert mapper.external_port("tcp", 6881) is None
        # Never deleted: it is not ours.
        assert igd.actions("DeletePortMapping") == []
        assert igd.mappings == {("TCP", 6881): Entry("192.168.1.9", 6881, 0, "other")}


async def test_a_gateway_silent_at_exit_does_not_keep_the_others_mappings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The gateway read first stops answering as the block ends: its first deletion used to
    # take the whole close (an exchange may take longer than the close's bound), and the
    # other gateway's mappings were given up unsent.
    other = FakeIgd(host="127.0.0.2", friendly_name="other")
    gateway = FakeIgd(host="127.0.0.3", friendly_name="gateway")
    record = Recorder()
    async with running_igds(other, gateway) as address:
        with trio.fail_after(60):
            async with mapper_on(address, on_event=record, gateway="127.0.0.3") as mapper:
                await until(mapper, lambda: len(of_type(record.events, UpnpPortMapped)) == 4)
                gateway.silent = True
                ending = trio.current_time()
            assert trio.current_time() - ending <= UPNP_CLOSE_TIMEOUT
    assert other.mappings == {}  # deleted within the bound
    assert len(other.actions("DeletePortMapping")) == 2
    assert len(gateway.mappings) == 2  # left to their leases
    # Not confirmed on every gateway: no result.
    assert [e.result for _, e in of_type(record.events, MappingRemoved)] == [None, None]
