"""Mends of what a hunt found in the UPnP client: the preferred gateway's answer is looked at
whatever number of other hosts answered the search first, and a device's own words (its
friendly name, a fault's description) are escaped before they can reach a log line."""

from __future__ import annotations

import logging
import random
from ipaddress import IPv4Address

import pytest
import trio
import trio.testing
from tests._upnp_igd import IGD1, LOOPBACK, WANIP1, FakeIgd, response, running_igd, ssdp_answer

from bip_handshake._portmap import MappingProtocol
from bip_handshake._upnp import (
    HttpResponse,
    UpnpActionError,
    UpnpDeviceFound,
    UpnpDiscoveryFailed,
    check_soap_success,
    parse_device_services,
)
from bip_handshake._upnp_client import (
    UPNP_MAX_DEVICES,
    UpnpClient,
    UpnpRequest,
    UpnpRequestKind,
)
from bip_handshake._upnp_shell import open_upnp_mapper

ROUTER = IPv4Address("192.168.1.1")
LOCAL = IPv4Address("192.168.1.20")
# Every UPnP device of a LAN answers a search for upnp:rootdevice: TVs, speakers, a NAS.
OTHERS = tuple(IPv4Address(f"192.168.1.{100 + n}") for n in range(UPNP_MAX_DEVICES + 4))


def location(host: IPv4Address) -> str:
    return f"http://{host}:5000/rootDesc.xml"


def gateway_description(name: str = "box") -> HttpResponse:
    body = (
        f"<root><device><friendlyName>{name}</friendlyName><serviceList><service>"
        f"<serviceType>{WANIP1}</serviceType><controlURL>/ctl</controlURL>"
        "</service></serviceList></device></root>"
    )
    return HttpResponse(200, "OK", (), body.encode())


def described_hosts(client: UpnpClient, now: float) -> list[str]:
    """Serve the search's work (every other host's description fails at once, the router's
    serves): the hosts whose description was asked for, in order."""
    asked: list[str] = []
    for _ in range(4 * UPNP_MAX_DEVICES):
        request = client.next_request(now)
        if request is None:
            return asked
        if request.kind is UpnpRequestKind.SEARCH:
            client.search_sent(request, len(request.datagrams()), now)
            continue
        assert request.url is not None
        if request.kind is UpnpRequestKind.DESCRIBE:
            asked.append(str(request.url.host))
        answer = _router_answer(request) if request.url.host == ROUTER else None
        if answer is None:
            client.request_failed(request, "connection refused", now)
        else:
            client.request_answered(request, answer, LOCAL, now)
    raise AssertionError("a flood of requests")  # pragma: no cover


def _router_answer(request: UpnpRequest) -> HttpResponse | None:
    if request.kind is UpnpRequestKind.DESCRIBE:
        return gateway_description()
    if request.kind is UpnpRequestKind.EXTERNAL_ADDRESS:
        values = {"NewExternalIPAddress": "203.0.113.7"}
        return HttpResponse(200, "OK", (), response(WANIP1, "GetExternalIPAddress", values))
    return None  # the mappings are no matter here


@pytest.mark.parametrize("concurrent", [False, True])
@pytest.mark.parametrize("target", ["upnp:rootdevice", IGD1])
def test_the_preferred_gateway_is_looked_at_after_the_bound_of_other_hosts(
    concurrent: bool, target: str
) -> None:
    client = UpnpClient(gateway=ROUTER, rng=random.Random(0), concurrent=concurrent)
    client.add_mapping(MappingProtocol.TCP, 6881, now=0.0)
    search = client.next_request(0.0)
    assert search is not None
    client.search_sent(search, len(search.datagrams()), 0.0)
    for host in OTHERS:
        client.ssdp_received(ssdp_answer("upnp:rootdevice", location(host)), host, 0.05)
    client.ssdp_received(ssdp_answer(target, location(ROUTER)), ROUTER, 0.1)
    asked = described_hosts(client, 0.2)
    assert asked[0] == str(ROUTER)  # the gateway never waits for a slot
    # The bound still holds for every other host: 4 were never looked at.
    assert sorted(asked[1:]) == sorted(str(h) for h in OTHERS[:UPNP_MAX_DEVICES])
    assert client.statistics().ssdp_ignored == len(OTHERS) - UPNP_MAX_DEVICES
    client.handle_timer(10.0)
    assert [d.control_url for d in client.devices] == [f"http://{ROUTER}:5000/ctl"]
    found = [e for e in iter(client.next_event, None) if isinstance(e, UpnpDeviceFound)]
    assert len(found) == 1


def test_without_a_preferred_gateway_the_bound_is_the_same_for_every_host() -> None:
    client = UpnpClient(gateway=None, rng=random.Random(0))
    client.add_mapping(MappingProtocol.TCP, 6881, now=0.0)
    search = client.next_request(0.0)
    assert search is not None
    client.search_sent(search, len(search.datagrams()), 0.0)
    for host in (*OTHERS, ROUTER):
        client.ssdp_received(ssdp_answer(IGD1, location(host)), host, 0.05)
    assert str(ROUTER) not in described_hosts(client, 0.2)
    assert client.statistics().ssdp_ignored == len(OTHERS) + 1 - UPNP_MAX_DEVICES


async def test_the_shell_maps_on_the_preferred_router_past_many_other_answers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Decoys from 127.0.0.2, 127.0.0.3...: the router's answer comes last, past the bound.
    igd = FakeIgd(decoys=UPNP_MAX_DEVICES + 4)
    events: list[object] = []
    async with (
        running_igd(igd) as address,
        open_upnp_mapper(
            [("tcp", 6881)],
            ssdp_address=address,
            bind_host=LOOPBACK,
            gateway=LOOPBACK,
            on_event=events.append,
        ) as mapper,
    ):
        with trio.fail_after(120):
            while mapper.mappings()[0].external_port is None:
                assert not any(isinstance(e, UpnpDiscoveryFailed) for e in events)
                await mapper.wait_changed()
        assert mapper.mappings()[0].external_port == 6881
        assert mapper.statistics().ssdp_ignored > 0  # the other hosts are bounded still


# -- a device's words, escaped ---------------------------------------------------------------

FORGED = "2026-11-26 13:00:00,000 CRITICAL bip.client: disk full"


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("box&#10;" + FORGED, "box\\n" + FORGED),
        ("a&#13;b&#9;c", "a\\rb\\tc"),
        ("a\x85b\u2028c\x7f", "a\\x85b\\u2028c\\x7f"),  # NEL, LINE SEPARATOR, DEL
        ("&#x9b;2Jbox", "\\x9b2Jbox"),  # a C1 CSI: a terminal acts on it
        ("evil\u202etxt.exe", "evil\\u202etxt.exe"),
        ("caf\u00e9 box", "caf\u00e9 box"),  # printable text in any script stays as it is
        ("AT&amp;T router", "AT&T router"),
    ],
)
def test_a_friendly_name_is_escaped(name: str, shown: str) -> None:
    [service] = parse_device_services(gateway_description(name).body, location(ROUTER))
    assert service.friendly_name == shown


def test_a_friendly_name_is_bounded_once_escaped() -> None:
    [service] = parse_device_services(
        gateway_description("x" + "&#10;" * 300 + "y").body, location(ROUTER)
    )
    assert service.friendly_name is not None
    assert service.friendly_name.isprintable()
    assert service.friendly_name.startswith("x\\n\\n")
    assert len(service.friendly_name) <= 256


def test_a_friendly_name_cannot_forge_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    client = UpnpClient(gateway=None, rng=random.Random(0))
    client.add_mapping(MappingProtocol.TCP, 6881, now=0.0)
    search = client.next_request(0.0)
    assert search is not None
    client.search_sent(search, len(search.datagrams()), 0.0)
    client.ssdp_received(ssdp_answer(IGD1, location(ROUTER)), ROUTER, 0.1)
    describe = client.next_request(0.1)
    assert describe is not None
    with caplog.at_level(logging.DEBUG, logger="bip_handshake"):
        client.request_answered(describe, gateway_description("box&#10;" + FORGED), LOCAL, 0.2)
    assert caplog.records
    for record in caplog.records:
        assert "\n" not in record.getMessage()
    [found] = [e for e in iter(client.next_event, None) if isinstance(e, UpnpDeviceFound)]
    assert found.device.friendly_name == "box\\n" + FORGED


def test_a_fault_description_is_escaped() -> None:
    body = (
        '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>'
        "<detail><UPnPError><errorCode>718</errorCode>"
        f"<errorDescription>Conflict&#10;{FORGED}</errorDescription>"
        "</UPnPError></detail></s:Fault></s:Body></s:Envelope>"
    ).encode()
    with pytest.raises(UpnpActionError) as caught:
        check_soap_success(HttpResponse(500, "Internal Server Error", (), body))
    assert caught.value.description == "Conflict\\n" + FORGED
    assert "\n" not in str(caught.value)
