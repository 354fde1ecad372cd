"""Mends of what a review of the UPnP client found: an HTTP reason phrase (and every other
word of a device) is escaped before it reaches a log line, an exception or an event, C1
controls included; a device's words are cut on whole escapes, a literal backslash escaped and
space separators kept; and a host may offer a few LOCATIONs claiming the gateway in one
search, so one forged answer from the router's address cannot shut its real one out."""

from __future__ import annotations

import logging
import random
import unicodedata
from collections.abc import Callable
from ipaddress import IPv4Address

import pytest
from tests._upnp_igd import IGD1, WANIP1, response, ssdp_answer

from bip_handshake._portmap import MappingProtocol
from bip_handshake._upnp import (
    HttpResponse,
    HttpResponseParser,
    UpnpDeviceFound,
    UpnpDeviceLost,
    UpnpError,
    _device_text,
    check_soap_success,
    parse_device_services,
    parse_soap_response,
    parse_ssdp_response,
)
from bip_handshake._upnp_client import UpnpClient, UpnpRequest, UpnpRequestKind

ROUTER = IPv4Address("192.168.1.1")
OTHER = IPv4Address("192.168.1.5")
LOCAL = IPv4Address("192.168.1.20")
FORGED = "2026-11-26 13:00:00,000 CRITICAL bip.client: disk full"
# NEL (\x85) ends a line for str.splitlines and many log viewers; CSI (\x9b) starts a terminal
# escape. Both are C1 controls, which a reason phrase decoded as latin-1 holds raw.
HOSTILE_REASON = "Oops\x85" + FORGED + "\x9b2J"


def inert(text: str) -> bool:
    """Whether ``text`` holds nothing a terminal or a log viewer acts on: every character
    printable, or a space separator."""
    return all(char.isprintable() or unicodedata.category(char) == "Zs" for char in text)


def location(host: IPv4Address, port: int = 5000, path: str = "/rootDesc.xml") -> str:
    return f"http://{host}:{port}{path}"


def gateway_description(name: str = "box") -> HttpResponse:
    body = (
        f"<root><device><friendlyName>{name}</friendlyName><serviceList><service>"
        f"<serviceType>{WANIP1}</serviceType><controlURL>/ctl</controlURL>"
        "</service></serviceList></device></root>"
    )
    return HttpResponse(200, "OK", (), body.encode())


def searching_client(gateway: IPv4Address | None = ROUTER) -> UpnpClient:
    client = UpnpClient(gateway=gateway, rng=random.Random(0))
    client.add_mapping(MappingProtocol.TCP, 6881, now=0.0)
    search = client.next_request(0.0)
    assert search is not None
    assert search.kind is UpnpRequestKind.SEARCH
    client.search_sent(search, len(search.datagrams()), 0.0)
    return client


def take(client: UpnpClient, now: float, kind: UpnpRequestKind) -> UpnpRequest:
    request = client.next_request(now)
    assert request is not None, f"nothing asked, {kind} expected"
    assert request.kind is kind, request
    return request


# -- the reason phrase ------------------------------------------------------------------------


def test_a_reason_phrase_with_c1_controls_still_parses() -> None:
    # RFC 7230 lets a reason phrase hold any byte from 0x80 (obs-text): UTF-8 text holds
    # 0x80-0x9f as continuation bytes. Refusing them would refuse the whole answer.
    parser = HttpResponseParser()
    head = "HTTP/1.1 500 Erro interno\u2026\r\nContent-Length: 0\r\n\r\n".encode()
    answer = parser.receive_data(head)
    assert answer is not None
    assert answer.status == 500


def soap_failure(answer: HttpResponse) -> None:
    parse_soap_response(answer, "AddPortMapping")


@pytest.mark.parametrize("check", [check_soap_success, soap_failure])
@pytest.mark.parametrize("body", [b"", b"junk", b"<s:Envelope/>"])
def test_a_reason_phrase_is_escaped_in_an_exception(
    check: Callable[[HttpResponse], None], body: bytes
) -> None:
    with pytest.raises(UpnpError) as caught:
        check(HttpResponse(500, HOSTILE_REASON, (), body))
    text = str(caught.value)
    assert inert(text), repr(text)
    assert "Oops\\x85" in text
    assert "\\x9b2J" in text


def test_a_parsed_reason_phrase_is_escaped_in_an_exception() -> None:
    parser = HttpResponseParser()
    raw = b"HTTP/1.1 500 Oops\x85" + FORGED.encode() + b"\x9b2J\r\nContent-Length: 0\r\n\r\n"
    answer = parser.receive_data(raw)
    assert answer is not None
    with pytest.raises(UpnpError) as caught:
        check_soap_success(answer)
    assert inert(str(caught.value)), repr(str(caught.value))


def test_an_ssdp_answers_reason_phrase_is_escaped() -> None:
    raw = b"HTTP/1.1 404 x\x85" + FORGED.encode() + b"\x9b2J\r\nST: a\r\n\r\n"
    with pytest.raises(UpnpError) as caught:
        parse_ssdp_response(raw)
    assert inert(str(caught.value)), repr(str(caught.value))
    assert "x\\x85" in str(caught.value)


def test_a_reason_phrase_cannot_forge_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    client = searching_client(gateway=None)
    with caplog.at_level(logging.DEBUG, logger="bip_handshake"):
        # Any LAN host's SSDP answer with an error status, then a description's 500.
        raw = b"HTTP/1.1 404 x\x85" + FORGED.encode() + b"\x9b2J\r\nST: a\r\n\r\n"
        client.ssdp_received(raw, IPv4Address("192.168.1.66"), 0.01)
        client.ssdp_received(ssdp_answer(IGD1, location(ROUTER)), ROUTER, 0.02)
        describe = take(client, 0.03, UpnpRequestKind.DESCRIBE)
        client.request_answered(describe, HttpResponse(500, HOSTILE_REASON, (), b""), LOCAL, 0.04)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) >= 2
    for message in messages:
        assert inert(message), repr(message)
        assert len(message.splitlines()) == 1


def test_a_lost_gateways_reason_phrase_is_escaped(caplog: pytest.LogCaptureFixture) -> None:
    # A gateway in use answers every SOAP request with HTTP 500 and a hostile reason phrase:
    # the INFO "stopped answering" line and the UpnpDeviceLost event carry it.
    client = searching_client()
    client.ssdp_received(ssdp_answer(IGD1, location(ROUTER)), ROUTER, 0.01)
    now = 0.1
    lost: list[UpnpDeviceLost] = []
    with caplog.at_level(logging.INFO, logger="bip_handshake"):
        for _ in range(200):
            request = client.next_request(now)
            if request is None:
                now += 5.0
                client.handle_timer(now)
            elif request.kind is UpnpRequestKind.SEARCH:
                client.search_sent(request, 1, now)
            elif request.kind is UpnpRequestKind.DESCRIBE:
                client.request_answered(request, gateway_description(), LOCAL, now)
            elif request.kind is UpnpRequestKind.EXTERNAL_ADDRESS:
                values = {"NewExternalIPAddress": "203.0.113.7"}
                answer = HttpResponse(
                    200, "OK", (), response(WANIP1, "GetExternalIPAddress", values)
                )
                client.request_answered(request, answer, LOCAL, now)
            else:
                answer = HttpResponse(500, HOSTILE_REASON, (), b"junk")
                client.request_answered(request, answer, LOCAL, now)
            lost += [e for e in iter(client.next_event, None) if isinstance(e, UpnpDeviceLost)]
            if lost:
                break
    assert lost, "the gateway was never deemed lost"
    assert inert(lost[0].reason), repr(lost[0].reason)
    assert "\\x85" in lost[0].reason
    stopped = [r.getMessage() for r in caplog.records if "stopped answering" in r.getMessage()]
    assert stopped
    for message in stopped:
        assert inert(message), repr(message)


def test_a_long_root_element_name_is_bounded_in_an_exception() -> None:
    tag = "a" * 20_000
    document = f"<{tag}/>".encode()
    with pytest.raises(UpnpError) as caught:
        parse_device_services(document, location(ROUTER))
    assert len(str(caught.value)) < 400
    with pytest.raises(UpnpError) as caught:
        parse_soap_response(HttpResponse(200, "OK", (), document), "AddPortMapping")
    assert len(str(caught.value)) < 400


# -- a device's words: whole escapes, backslashes, spaces -------------------------------------


def shown(char: str) -> str:
    """How one character of a device's words is shown."""
    if char == "\\":
        return "\\\\"
    if char.isprintable() or unicodedata.category(char) == "Zs":
        return char
    return repr(char)[1:-1]


@pytest.mark.parametrize(
    "text",
    [
        "x" + "\n" * 300,
        "a" * 253 + "\u202e",
        "a" * 250 + "\U000e0041",
        "a" * 255 + "\\",
        "\\" * 300,
        "b" * 200 + "\x85" * 100,
    ],
)
def test_a_device_text_is_cut_on_whole_escapes(text: str) -> None:
    out = _device_text(text)
    pieces = [shown(char) for char in text]
    whole = ""
    for piece in pieces:  # the longest run of whole escapes that fits
        if len(whole) + len(piece) > 256:
            break
        whole += piece
    assert out == whole
    assert not out.endswith("\\") or out.endswith("\\\\")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a\\nb", "a\\\\nb"),  # the two characters \ and n: not a newline escaped
        ("C:\\box", "C:\\\\box"),
        ("Living\u00a0Room", "Living\u00a0Room"),  # NO-BREAK SPACE
        ("\u30ea\u30d3\u30f3\u30b0\u3000TV", "\u30ea\u30d3\u30f3\u30b0\u3000TV"),  # IDEOGRAPHIC
        ("em\u2003space", "em\u2003space"),
        ("zero\u200bwidth", "zero\\u200bwidth"),  # a format character: hidden, escaped
        ("line\u2028sep\u2029para", "line\\u2028sep\\u2029para"),
        ("private\ue000use", "private\\ue000use"),
        ("un\u0378assigned", "un\\u0378assigned"),
        ("lone\ud800surrogate", "lone\\ud800surrogate"),
    ],
)
def test_a_device_text_escapes_backslashes_and_keeps_spaces(name: str, expected: str) -> None:
    assert _device_text(name) == expected


def test_a_friendly_name_keeps_its_spaces_and_escapes_its_backslash() -> None:
    [service] = parse_device_services(
        gateway_description("Living&#160;Room\\n&#12288;TV").body, location(ROUTER)
    )
    assert service.friendly_name == "Living\u00a0Room\\\\n\u3000TV"


# -- a host's LOCATIONs -----------------------------------------------------------------------


def described(client: UpnpClient, now: float, serves: str) -> list[str]:
    """Serve the search's descriptions (only ``serves`` does; any other is refused): the
    URLs fetched, in order."""
    urls: list[str] = []
    for _ in range(64):
        request = client.next_request(now)
        if request is None:
            return urls
        if request.kind is UpnpRequestKind.SEARCH:
            client.search_sent(request, 1, now)
        elif request.kind is UpnpRequestKind.DESCRIBE:
            urls.append(str(request.url))
            if str(request.url) == serves:
                client.request_answered(request, gateway_description(), LOCAL, now)
            else:
                client.request_failed(request, "connection refused", now)
        else:
            return urls  # the gateway is in use: its own work starts
    raise AssertionError("a flood of requests")  # pragma: no cover


@pytest.mark.parametrize("gateway", [ROUTER, None])
def test_a_forged_claim_from_the_routers_address_does_not_shut_it_out(
    gateway: IPv4Address | None,
) -> None:
    # A LAN host spoofs the router's address: its answer claims the gateway at a closed
    # port, and comes first. The router's own answer was a duplicate, never fetched.
    client = searching_client(gateway)
    forged, real = location(ROUTER, 1, "/x"), location(ROUTER)
    client.ssdp_received(ssdp_answer(IGD1, forged), ROUTER, 0.01)
    client.ssdp_received(ssdp_answer(IGD1, real), ROUTER, 0.02)
    assert described(client, 0.1, serves=real) == [forged, real]
    found = [e for e in iter(client.next_event, None) if isinstance(e, UpnpDeviceFound)]
    assert [e.device.location for e in found] == [real]


def test_a_host_whose_first_location_serves_is_not_fetched_again() -> None:
    client = searching_client()
    first, second = location(ROUTER), location(ROUTER, 5001)
    client.ssdp_received(ssdp_answer(IGD1, first), ROUTER, 0.01)
    client.ssdp_received(ssdp_answer(WANIP1, second), ROUTER, 0.02)
    assert described(client, 0.1, serves=first) == [first]
    assert client.statistics().ssdp_duplicates == 1


@pytest.mark.parametrize("source", [ROUTER, OTHER])
def test_a_host_has_a_few_claimed_locations_per_search(source: IPv4Address) -> None:
    client = searching_client()
    media = location(source, 5000, "/media.xml")
    client.ssdp_received(ssdp_answer("upnp:rootdevice", media), source, 0.01)
    claims = [location(source, 6000 + n) for n in range(10)]
    for claim in claims:
        client.ssdp_received(ssdp_answer(IGD1, claim), source, 0.02)
        client.ssdp_received(ssdp_answer(IGD1, claim), source, 0.02)  # a repeat: a duplicate
    # Its root device's LOCATION, then three that claim the gateway, in the order heard.
    assert described(client, 0.1, serves="") == [media, *claims[:3]]
    assert client.statistics().ssdp_duplicates == 10 + 7
