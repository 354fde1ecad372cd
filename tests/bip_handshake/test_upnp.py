"""UPnP IGD codecs: SSDP, HTTP responses, device descriptions and SOAP (no I/O)."""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests._upnp_igd import (
    IGD1,
    ROOT_DESC,
    SECOND_DEVICE,
    WANIP1,
    WANIP2,
    WANPPP1,
    FakeIgd,
    fault,
    http_response,
    response,
)

from bip_handshake._errors import LocalProtocolError, RemoteProtocolError
from bip_handshake._portmap import MappingProtocol
from bip_handshake._upnp import (
    UPNP_MAX_DESCRIPTION,
    UPNP_MAX_HEAD,
    UPNP_MAX_HEADERS,
    UPNP_MAX_SERVICES,
    UPNP_MAX_SOAP_RESPONSE,
    UPNP_MAX_SSDP_RESPONSE,
    UPNP_MAX_URL,
    UPNP_SEARCH_TARGETS,
    HttpResponse,
    HttpResponseParser,
    HttpUrl,
    SsdpResponse,
    UpnpActionError,
    UpnpDevice,
    UpnpError,
    UpnpErrorCode,
    UpnpPortMappingEntry,
    build_add_port_mapping,
    build_delete_port_mapping,
    build_get_external_address,
    build_get_specific_port_mapping_entry,
    build_http_get,
    build_msearch,
    build_soap_request,
    check_soap_success,
    parse_device_description,
    parse_device_services,
    parse_external_address,
    parse_http_response,
    parse_http_url,
    parse_port_mapping_entry,
    parse_soap_response,
    parse_ssdp_response,
)

LOCATION = "http://192.168.1.1:5000/rootDesc.xml"
DEVICE = UpnpDevice(LOCATION, WANIP1, "http://192.168.1.1:5000/ctl/IPConn", "router")

# What miniupnpd 2.3 sends (its own bytes, headers and all).
MINIUPNPD_SSDP = (
    b"HTTP/1.1 200 OK\r\n"
    b"CACHE-CONTROL: max-age=120\r\n"
    b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
    b"USN: uuid:12345678-0000-0000-0000-000000000000::"
    b"urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
    b"EXT:\r\n"
    b"SERVER: OpenWRT/22.03 UPnP/1.1 MiniUPnPd/2.3.3\r\n"
    b"LOCATION: http://192.168.1.1:5000/rootDesc.xml\r\n"
    b'OPT: "http://schemas.upnp.org/upnp/1/0/"; ns=01\r\n'
    b"01-NLS: 1\r\n"
    b"BOOTID.UPNP.ORG: 1\r\n"
    b"CONFIGID.UPNP.ORG: 1337\r\n"
    b"\r\n"
)


def description(
    service_type: str = WANIP1,
    control_url: str = "/ctl/IPConn",
    *,
    url_base: str | None = None,
    device_type: str = IGD1,
    second: tuple[str, str] | None = None,
) -> bytes:
    base = "" if url_base is None else f"<URLBase>{url_base}</URLBase>\n"
    second_device = (
        ""
        if second is None
        else SECOND_DEVICE.format(service_type=second[0], control_url=second[1])
    )
    return ROOT_DESC.format(
        url_base=base,
        device_type=device_type,
        friendly_name="OpenWrt router",
        service_type=service_type,
        control_url=control_url,
        second_device=second_device,
    ).encode()


def ok(body: bytes) -> HttpResponse:
    return HttpResponse(200, "OK", (), body)


def feed_bytewise(data: bytes, *, max_body: int = UPNP_MAX_SOAP_RESPONSE) -> HttpResponse:
    parser = HttpResponseParser(max_body=max_body)
    for i in range(len(data)):
        response = parser.receive_data(data[i : i + 1])
        if response is not None:
            return response
    response = parser.receive_data(b"")
    assert response is not None
    return response


# -- errors ------------------------------------------------------------------------------------


def test_errors_are_ours() -> None:
    assert issubclass(UpnpError, RemoteProtocolError)
    assert issubclass(UpnpActionError, UpnpError)
    error = UpnpActionError(725, "OnlyPermanentLeasesSupported")
    assert error.code is UpnpErrorCode.ONLY_PERMANENT_LEASES_SUPPORTED
    assert error.description == "OnlyPermanentLeasesSupported"
    unknown = UpnpActionError(899)
    assert unknown.code == 899
    assert not isinstance(unknown.code, UpnpErrorCode)
    assert str(unknown) == "UPnP error 899"


# -- SSDP --------------------------------------------------------------------------------------


def test_msearch_is_uda_1_1() -> None:
    assert build_msearch(IGD1) == (
        b"M-SEARCH * HTTP/1.1\r\n"
        b"HOST: 239.255.255.250:1900\r\n"
        b'MAN: "ssdp:discover"\r\n'
        b"MX: 2\r\n"
        b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
        b"\r\n"
    )
    assert b"HOST: 127.0.0.1:5000\r\n" in build_msearch(IGD1, host="127.0.0.1", port=5000)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"search_target": "a b"},
        {"search_target": "x\r\nEvil: 1"},
        {"search_target": ""},
        {"search_target": IGD1, "mx": 0},
        {"search_target": IGD1, "mx": 6},
        {"search_target": IGD1, "mx": True},
        {"search_target": IGD1, "port": 0},
        {"search_target": IGD1, "host": "a\nb"},
    ],
)
def test_msearch_refuses_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        build_msearch(**kwargs)  # type: ignore[arg-type]


def test_miniupnpd_answer() -> None:
    answer = parse_ssdp_response(MINIUPNPD_SSDP)
    assert answer == SsdpResponse(
        location=LOCATION,
        search_target=IGD1,
        usn=f"uuid:12345678-0000-0000-0000-000000000000::{IGD1}",
        max_age=120,
    )


def test_ssdp_answer_leniencies() -> None:
    # Header names in any case, no space after the colon, bare LFs, no USN, odd max-age.
    answer = parse_ssdp_response(
        b"HTTP/1.1 200 OK\nlocation:http://10.0.0.1/d.xml\nSt:upnp:rootdevice\n"
        b"Cache-Control: no-cache, max-age = 1800\n\n"
    )
    assert answer == SsdpResponse("http://10.0.0.1/d.xml", "upnp:rootdevice", "", 1800)
    no_cache = parse_ssdp_response(
        b"HTTP/1.0 200 OK\r\nLOCATION: http://10.0.0.1/\r\nST: x\r\n"
        b"CACHE-CONTROL: max-age=soon\r\n\r\n"
    )
    assert no_cache.max_age is None
    assert parse_ssdp_response(MINIUPNPD_SSDP.replace(b"max-age=120", b"private")).max_age is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"NOTIFY * HTTP/1.1\r\nLOCATION: http://10.0.0.1/\r\nNT: x\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nLOCATION: http://10.0.0.1/\r\nST: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nLOCATION: http://10.0.0.1/\r\nST: x\r\n",  # no blank line
        b"HTTP/1.1 200 OK\r\nST: x\r\n\r\n",  # no LOCATION
        b"HTTP/1.1 200 OK\r\nLOCATION: http://10.0.0.1/\r\n\r\n",  # no ST
        b"HTTP/1.1 200 OK\r\nLOCATION:\r\nST: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nST: a\x00b\r\nLOCATION: http://10.0.0.1/\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * (UPNP_MAX_HEADERS + 1) + b"\r\n",
        MINIUPNPD_SSDP + b"x" * UPNP_MAX_SSDP_RESPONSE,
    ],
)
def test_bad_ssdp_answers_raise_our_error(data: bytes) -> None:
    with pytest.raises(UpnpError):
        parse_ssdp_response(data)


header_values = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=60
)


@given(
    location=header_values,
    target=header_values,
    usn=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60),
    max_age=st.none() | st.integers(0, 10**6),
    lf_only=st.booleans(),
)
def test_ssdp_round_trip(
    location: str, target: str, usn: str, max_age: int | None, lf_only: bool
) -> None:
    lines = ["HTTP/1.1 200 OK", f"LOCATION: {location}", f"ST: {target}"]
    if usn:
        lines.append(f"USN: {usn}")
    if max_age is not None:
        lines.append(f"CACHE-CONTROL: max-age={max_age}")
    end = "\n" if lf_only else "\r\n"
    data = (end.join(lines) + end + end).encode()
    assert parse_ssdp_response(data) == SsdpResponse(location, target, usn, max_age)


@given(st.binary(max_size=600))
def test_ssdp_garbage_gives_our_error(data: bytes) -> None:
    with contextlib.suppress(UpnpError):
        parse_ssdp_response(data)


@given(st.binary(max_size=200))
def test_ssdp_mutated_answers_give_our_error(tail: bytes) -> None:
    for data in (MINIUPNPD_SSDP[:100] + tail, tail + MINIUPNPD_SSDP):
        with contextlib.suppress(UpnpError):
            parse_ssdp_response(data)


# -- URLs --------------------------------------------------------------------------------------


def test_urls() -> None:
    assert parse_http_url("http://192.168.1.1:5000/rootDesc.xml") == HttpUrl(
        IPv4Address("192.168.1.1"), 5000, "/rootDesc.xml"
    )
    assert parse_http_url("HTTP://10.0.0.1") == HttpUrl(IPv4Address("10.0.0.1"), 80, "/")
    url = parse_http_url("http://10.0.0.1:49152/upnp/control?service=WANIPConn1#frag")
    assert url.target == "/upnp/control?service=WANIPConn1"
    assert str(url) == "http://10.0.0.1:49152/upnp/control?service=WANIPConn1"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "https://10.0.0.1/",
        "ftp://10.0.0.1/",
        "http://router.lan/rootDesc.xml",  # a name would have to be resolved
        "http://[::1]:5000/",
        "http://user@10.0.0.1/",
        "http://10.0.0.1@evil.example/",
        "http://10.0.0.1:0/",
        "http://10.0.0.1:99999/",
        "http://10.0.0.1:port/",
        "http://010.0.0.1/",
        "http://10.0.0.1/a b",
        "http://10.0.0.1/\r\nHost: evil",
        "http://10.0.0.1/é",
        "/relative",
        "http://10.0.0.1/" + "a" * UPNP_MAX_URL,
        "http://[10.0.0.1/",
    ],
)
def test_bad_urls_raise_our_error(url: str) -> None:
    with pytest.raises(UpnpError):
        parse_http_url(url)


@given(st.text(max_size=80))
def test_url_garbage_gives_our_error(text: str) -> None:
    for url in (text, "http://10.0.0.1" + text, "http://" + text):
        try:
            parsed = parse_http_url(url)
        except UpnpError:
            continue
        assert parsed.target.startswith("/")
        assert " " not in parsed.target


# -- HTTP --------------------------------------------------------------------------------------


def test_http_content_length_chunked_and_eof() -> None:
    body = b"<xml>hello</xml>"
    for chunked in (False, True):
        response = parse_http_response(http_response(200, body, chunked=chunked))
        assert (response.status, response.reason, response.body) == (200, "OK", body)
        assert response.header("Content-Type") == 'text/xml; charset="utf-8"'
        assert response.header("missing") is None
    to_eof = parse_http_response(b"HTTP/1.0 500 Oops\r\nServer: x\r\n\r\n" + body)
    assert (to_eof.status, to_eof.reason, to_eof.body) == (500, "Oops", body)
    no_reason = parse_http_response(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n")
    assert (no_reason.reason, no_reason.body) == ("", b"")


def test_http_chunk_extensions_trailers_interim_and_no_body() -> None:
    data = (
        b"\r\nHTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\nContent-Length: 999\r\n\r\n"
        b"4;name=value\r\nabcd\r\n0\r\nExpires: never\r\n\r\n"
    )
    assert parse_http_response(data).body == b"abcd"
    assert feed_bytewise(data).body == b"abcd"
    assert parse_http_response(b"HTTP/1.1 204 No Content\r\n\r\n").body == b""
    assert parse_http_response(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n").body == (
        b""
    )


def test_http_bytes_past_the_response_are_ignored() -> None:
    parser = HttpResponseParser()
    response = parser.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
    assert response is not None
    assert response.body == b"ok"
    assert parser.complete
    with pytest.raises(LocalProtocolError):
        parser.receive_data(b"more")
    with pytest.raises(LocalProtocolError):
        HttpResponseParser(max_body=-1)


@pytest.mark.parametrize(
    ("data", "max_body"),
    [
        (b"", 100),  # closed before anything
        (b"HTTP/1.1 200 OK\r\n", 100),  # closed in the head
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 100),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n", 100),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 100),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello", 100),
        (b"HTTP/1.1 200 OK\r\nContent-Length: \xd9\xa3\r\n\r\nhello", 100),
        (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 101, 100),  # to EOF, too long
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 100),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 100),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n", 100),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n", 100),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", 100),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 2000, 100),
        (b"HTTP/1.1 101 Switching\r\n\r\n", 100),
        (b"HTTP/1.1 100 Continue\r\n\r\n" * 9 + b"HTTP/1.1 200 OK\r\n\r\n", 100),
        (b"HTTP/1.1 200 OK\r\nX: " + b"x" * UPNP_MAX_HEAD + b"\r\n\r\n", 100),
        (b"HTTP/1.1 200 OK\r\nX: " + b"x" * (2 * UPNP_MAX_HEAD), 100),  # no end in sight
        (b"HTTP/1.1 200 \x01\r\n\r\n", 100),
        (b"SSH-2.0-OpenSSH\r\n\r\n", 100),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
            + b"X: y\r\n" * (UPNP_MAX_HEAD // 6 + 1)
            + b"\r\n",
            100,
        ),
    ],
)
def test_bad_http_raises_our_error(data: bytes, max_body: int) -> None:
    with pytest.raises(UpnpError):
        parse_http_response(data, max_body=max_body)
    with pytest.raises(UpnpError):
        feed_bytewise(data, max_body=max_body)


@settings(max_examples=200)
@given(
    body=st.binary(max_size=300),
    chunks=st.lists(st.integers(1, 50), max_size=10),
    mode=st.sampled_from(["length", "chunked", "eof"]),
    splits=st.lists(st.integers(0, 1000), max_size=5),
)
def test_http_round_trip_in_any_pieces(
    body: bytes, chunks: list[int], mode: str, splits: list[int]
) -> None:
    head = b"HTTP/1.1 200 OK\r\nServer: fake\r\n"
    if mode == "length":
        data = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    elif mode == "eof":
        data = head + b"\r\n" + body
    else:
        encoded, rest = b"", body
        for size in [*chunks, len(body)]:
            piece, rest = rest[:size], rest[size:]
            if piece:
                encoded += b"%X\r\n%s\r\n" % (len(piece), piece)
        data = head + b"Transfer-Encoding: chunked\r\n\r\n" + encoded + b"0\r\n\r\n"
    parser = HttpResponseParser(max_body=len(body))
    response = None
    last = 0
    for cut in [*sorted({min(s, len(data)) for s in splits}), len(data)]:
        piece = data[last:cut]
        last = cut
        if piece and response is None:
            response = parser.receive_data(piece)
    if response is None:
        response = parser.receive_data(b"")
    assert response is not None
    assert response.body == body
    with pytest.raises(UpnpError):
        parse_http_response(data, max_body=len(body) - 1) if body else _raise()


def _raise() -> None:
    raise UpnpError("nothing to exceed")


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_http_garbage_gives_our_error(data: bytes) -> None:
    for candidate in (data, b"HTTP/1.1 200 OK\r\n" + data):
        with contextlib.suppress(UpnpError):
            parse_http_response(candidate, max_body=200)


def test_get_request() -> None:
    request = build_http_get(parse_http_url(LOCATION))
    assert request == (
        b"GET /rootDesc.xml HTTP/1.1\r\n"
        b"Host: 192.168.1.1:5000\r\n"
        b"User-Agent: bip UPnP/1.1 bip_handshake\r\n"
        b"Accept: text/xml, application/xml\r\n"
        b"Connection: close\r\n"
        b"\r\n"
    )


# -- descriptions ------------------------------------------------------------------------------


def test_miniupnpd_description() -> None:
    device = parse_device_description(description(), LOCATION)
    assert device == UpnpDevice(
        LOCATION, WANIP1, "http://192.168.1.1:5000/ctl/IPConn", "OpenWrt router"
    )


def test_fake_igd_description_is_the_same_document() -> None:
    igd = FakeIgd()
    igd.http_port = 5000
    assert parse_device_description(igd.describe(), "http://127.0.0.1:5000/rootDesc.xml") == (
        UpnpDevice(
            "http://127.0.0.1:5000/rootDesc.xml",
            WANIP1,
            "http://127.0.0.1:5000/ctl/IPConn",
            "OpenWrt router",
        )
    )


PREFERENCE = """<?xml version="1.0"?>
<r:root xmlns:r="urn:schemas-upnp-org:device-1-0">
<r:device><r:deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:2</r:deviceType>
<r:deviceList><device xmlns="urn:other"><deviceType>x</deviceType><serviceList>
{services}
</serviceList></device></r:deviceList></r:device></r:root>"""


def service(service_type: str, control: str) -> str:
    return (
        f"<service><serviceType>{service_type}</serviceType>"
        f"<controlURL>{control}</controlURL></service>"
    )


def test_the_best_service_wins_and_namespaces_do_not_matter() -> None:
    services = "".join(
        [
            service("urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1", "/cmn"),
            service(WANPPP1, "/ppp"),
            service(WANIP1, "/ip1"),
            service(WANIP2, ""),  # no control URL: skipped
            service(WANIP2, " /ip2 "),
            service(WANIP1, "/ip1b"),
        ]
    )
    device = parse_device_description(PREFERENCE.format(services=services).encode(), LOCATION)
    assert (device.service_type, device.control_url) == (WANIP2, "http://192.168.1.1:5000/ip2")
    assert device.friendly_name is None
    ppp = parse_device_description(
        PREFERENCE.format(services=service(WANPPP1, "/ppp")).encode(), LOCATION
    )
    assert ppp.service_type == WANPPP1
    ip1 = PREFERENCE.format(services=service(WANPPP1, "/ppp") + service(WANIP1, "/ip"))
    assert parse_device_description(ip1.encode(), LOCATION).service_type == WANIP1


@pytest.mark.parametrize(
    ("url_base", "control", "expected"),
    [
        (None, "/ctl/IPConn", "http://192.168.1.1:5000/ctl/IPConn"),
        (None, "ctl/IPConn", "http://192.168.1.1:5000/ctl/IPConn"),
        (None, "http://192.168.1.1:49000/upnp/control", "http://192.168.1.1:49000/upnp/control"),
        ("http://192.168.1.1:49000/", "/ctl", "http://192.168.1.1:49000/ctl"),
        ("http://192.168.1.1:49000/igd/", "ctl", "http://192.168.1.1:49000/igd/ctl"),
        ("", "/ctl", "http://192.168.1.1:5000/ctl"),
    ],
)
def test_control_url_resolution(url_base: str | None, control: str, expected: str) -> None:
    document = description(control_url=control, url_base=url_base)
    assert parse_device_description(document, LOCATION).control_url == expected


@pytest.mark.parametrize(
    ("url_base", "control"),
    [
        (None, "http://10.6.6.6/ctl"),  # another host
        ("http://10.6.6.6/", "/ctl"),  # sent there by URLBase
        (None, "https://192.168.1.1/ctl"),
        (None, "http://gateway.lan/ctl"),
        ("ftp://192.168.1.1/", "ctl"),
        (None, "http://[::1/ctl"),
        (None, "/ctl with space"),
    ],
)
def test_control_urls_elsewhere_are_refused(url_base: str | None, control: str) -> None:
    with pytest.raises(UpnpError):
        parse_device_description(description(control_url=control, url_base=url_base), LOCATION)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<root><device><deviceType>&lol2;</deviceType></device></root>"""


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"not xml",
        b"<root/>",
        b"<scpd/>",
        BILLION_LAUGHS,
        description().replace(b"<root", b"<!doctype root>\n<root", 1),
        description().replace(b"<root", b'<!ENTITY x "y">\n<root', 1),
        b'<?xml version="1.0"?><root>&external;</root>',
        description(service_type="urn:schemas-upnp-org:service:Layer3Forwarding:1"),
        description(service_type="urn:schemas-upnp-org:service:WANIPConnection:1 extra"),
        description() + b"<!DOCTYPE junk>",  # a DOCTYPE anywhere, even past the root
        b"<root>&external;</root>\x00",  # an entity nobody declared, repair or not
        description() + b" " * UPNP_MAX_DESCRIPTION,
        description().decode().encode("utf-16"),
        # An encoding that is not ASCII-compatible cannot hide a DOCTYPE: text is read as
        # UTF-8 whatever the declaration says, so this is simply not XML.
        b'<?xml version="1.0" encoding="cp037"?>' + "<!DOCTYPE x><root/>".encode("cp037"),
        b"<root>" + b"<a>" * 40 + b"</a>" * 40 + b"</root>",
    ],
)
def test_bad_descriptions_raise_our_error(document: bytes) -> None:
    with pytest.raises(UpnpError):
        parse_device_description(document, LOCATION)


def test_latin1_description_is_read() -> None:
    document = description().replace(b"OpenWrt router</friendly", b"Routeur \xe9t\xe9</friendly")
    assert parse_device_description(document, LOCATION).friendly_name == "Routeur été"


def test_bad_location_raises_our_error() -> None:
    with pytest.raises(UpnpError):
        parse_device_description(description(), "https://192.168.1.1/")


@settings(max_examples=200)
@given(st.binary(max_size=500))
def test_description_garbage_gives_our_error(data: bytes) -> None:
    document = description()
    cut = len(data) % len(document)
    for candidate in (data, document[:cut] + data, document[:cut] + data + document[cut:]):
        with contextlib.suppress(UpnpError):
            parse_device_description(candidate, LOCATION)


# -- SOAP --------------------------------------------------------------------------------------


def soap_parts(request: bytes) -> tuple[dict[str, str], ET.Element]:
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert int(headers["content-length"]) == len(body)
    return {"request-line": lines[0], **headers}, ET.fromstring(body)


def test_add_port_mapping_request() -> None:
    request = build_add_port_mapping(
        DEVICE,
        protocol=MappingProtocol.UDP,
        external_port=6882,
        internal_port=6881,
        internal_client=IPv4Address("192.168.1.20"),
        description="bip <&> 'x'",
        lease_duration=3600,
    )
    headers, envelope = soap_parts(request)
    assert headers["request-line"] == "POST /ctl/IPConn HTTP/1.1"
    assert headers["host"] == "192.168.1.1:5000"
    assert headers["soapaction"] == f'"{WANIP1}#AddPortMapping"'
    assert headers["connection"] == "close"
    assert headers["content-type"] == 'text/xml; charset="utf-8"'
    assert envelope.tag == "{http://schemas.xmlsoap.org/soap/envelope/}Envelope"
    [call] = envelope[0]
    assert call.tag == f"{{{WANIP1}}}AddPortMapping"
    assert [(child.tag, child.text or "") for child in call] == [
        ("NewRemoteHost", ""),
        ("NewExternalPort", "6882"),
        ("NewProtocol", "UDP"),
        ("NewInternalPort", "6881"),
        ("NewInternalClient", "192.168.1.20"),
        ("NewEnabled", "1"),
        ("NewPortMappingDescription", "bip <&> 'x'"),
        ("NewLeaseDuration", "3600"),
    ]


def test_delete_and_address_requests() -> None:
    headers, envelope = soap_parts(
        build_delete_port_mapping(DEVICE, protocol=MappingProtocol.TCP, external_port=6881)
    )
    assert headers["soapaction"] == f'"{WANIP1}#DeletePortMapping"'
    [call] = envelope[0]
    assert [(c.tag, c.text or "") for c in call] == [
        ("NewRemoteHost", ""),
        ("NewExternalPort", "6881"),
        ("NewProtocol", "TCP"),
    ]
    headers, envelope = soap_parts(build_get_external_address(DEVICE))
    assert headers["soapaction"] == f'"{WANIP1}#GetExternalIPAddress"'
    assert len(envelope[0][0]) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"protocol": "TCP"},
        {"external_port": 0},
        {"external_port": 65536},
        {"internal_port": True},
        {"internal_client": "192.168.1.20"},
        {"description": "bad\x00"},
        {"description": 5},
        {"lease_duration": -1},
        {"lease_duration": 1 << 32},
        {"lease_duration": 1.5},
    ],
)
def test_add_port_mapping_refuses_bad_arguments(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {
        "protocol": MappingProtocol.TCP,
        "external_port": 6881,
        "internal_port": 6881,
        "internal_client": IPv4Address("192.168.1.20"),
        "description": "bip",
        "lease_duration": 0,
    }
    arguments.update(kwargs)
    with pytest.raises(LocalProtocolError):
        build_add_port_mapping(DEVICE, **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("service_type", "action", "arguments"),
    [
        ('urn:x:service:A:1" evil="', "Act", []),
        ("not a urn", "Act", []),
        (WANIP1, "Bad Action", []),
        (WANIP1, "<Act>", []),
        (WANIP1, "Act", [("bad name", "v")]),
        (WANIP1, "Act", [("ok", 5)]),
        (WANIP1, "Act", [("ok", "\x01")]),
        (WANIP1, "Act", [("ok", "\ufffe")]),
    ],
)
def test_soap_builder_refuses_bad_arguments(
    service_type: str, action: str, arguments: list[tuple[str, object]]
) -> None:
    with pytest.raises(LocalProtocolError):
        build_soap_request(DEVICE.control_url, service_type, action, arguments)  # type: ignore[arg-type]


xml_text = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\ufffe\uffff"), max_size=40
).filter(lambda s: all(c in "\t\n\r" or ord(c) >= 0x20 for c in s))


@given(values=st.lists(xml_text, max_size=5))
def test_soap_arguments_round_trip(values: list[str]) -> None:
    arguments = [(f"Arg{i}", value) for i, value in enumerate(values)]
    request = build_soap_request(
        parse_http_url(DEVICE.control_url), WANIP2, "AddAnyPortMapping", arguments
    )
    _, envelope = soap_parts(request)
    [call] = envelope[0]
    assert [(c.tag, c.text or "") for c in call] == arguments


ANSWER = (
    b'<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
    b's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
    b'<u:GetExternalIPAddressResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">'
    b"<NewExternalIPAddress> 203.0.113.7 </NewExternalIPAddress>"
    b"</u:GetExternalIPAddressResponse></s:Body></s:Envelope>\r\n"
)


def test_soap_answers() -> None:
    assert parse_soap_response(ok(ANSWER), "GetExternalIPAddress") == {
        "NewExternalIPAddress": "203.0.113.7"
    }
    # The action's case may differ, namespaces may be missing.
    bare = b"<Envelope><Body><getexternalipaddressresponse/></Body></Envelope>"
    assert parse_soap_response(ok(bare), "GetExternalIPAddress") == {}
    assert parse_external_address(ok(ANSWER)) == IPv4Address("203.0.113.7")
    for none in (b"", b"0.0.0.0"):
        body = ANSWER.replace(b" 203.0.113.7 ", none)
        assert parse_external_address(ok(body)) is None


def test_soap_faults() -> None:
    status, body = fault(718, "ConflictInMappingEntry")
    for code in (status, 200):  # some devices say 200
        with pytest.raises(UpnpActionError) as caught:
            parse_soap_response(HttpResponse(code, "", (), body), "AddPortMapping")
        assert caught.value.code is UpnpErrorCode.CONFLICT_IN_MAPPING_ENTRY
        assert caught.value.description == "ConflictInMappingEntry"
    _, unknown = fault(899)
    with pytest.raises(UpnpActionError) as caught:
        parse_soap_response(HttpResponse(500, "", (), unknown), "AddPortMapping")
    assert caught.value.code == 899


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b"<html>Internal error</html>"),
        (404, b""),
        (401, ANSWER),
        (200, b""),
        (200, b"garbage"),
        (200, b"<Envelope/>"),
        (200, b"<notsoap><Body/></notsoap>"),
        (200, ANSWER.replace(b"GetExternalIPAddressResponse", b"OtherResponse")),
        (
            500,
            b"<Envelope><Body><Fault><faultstring>Client</faultstring></Fault></Body></Envelope>",
        ),
        (
            500,
            b"<Envelope><Body><Fault><detail><UPnPError><errorCode>x</errorCode>"
            b"</UPnPError></detail></Fault></Body></Envelope>",
        ),
        (200, BILLION_LAUGHS),
        (200, ANSWER + b" " * UPNP_MAX_SOAP_RESPONSE),
    ],
)
def test_bad_soap_answers_raise_our_error(status: int, body: bytes) -> None:
    with pytest.raises(UpnpError) as caught:
        parse_soap_response(HttpResponse(status, "", (), body), "GetExternalIPAddress")
    assert not isinstance(caught.value, UpnpActionError)


@pytest.mark.parametrize("value", [b"not an address", b"::1", b"203.0.113.007", b"1.2.3.4.5"])
def test_bad_external_addresses_raise_our_error(value: bytes) -> None:
    with pytest.raises(UpnpError):
        parse_external_address(ok(ANSWER.replace(b" 203.0.113.7 ", value)))
    with pytest.raises(UpnpError):
        parse_external_address(ok(ANSWER.replace(b"NewExternalIPAddress", b"Other")))


@settings(max_examples=200)
@given(st.binary(max_size=400), st.sampled_from([200, 500]))
def test_soap_garbage_gives_our_error(data: bytes, status: int) -> None:
    cut = len(data) % len(ANSWER)
    for body in (data, ANSWER[:cut] + data + ANSWER[cut:]):
        with contextlib.suppress(UpnpError):
            parse_external_address(HttpResponse(status, "", (), body))


@pytest.mark.parametrize(
    ("host", "port", "target"),
    [
        ("10.0.0.1", 80, "/"),
        (IPv4Address("10.0.0.1"), 0, "/"),
        (IPv4Address("10.0.0.1"), True, "/"),
        (IPv4Address("10.0.0.1"), 80, "relative"),
        (IPv4Address("10.0.0.1"), 80, "/x HTTP/1.1\r\nHost: evil\r\n\r\n"),
    ],
)
def test_a_url_built_by_hand_is_checked(host: object, port: object, target: object) -> None:
    with pytest.raises(LocalProtocolError):
        HttpUrl(host, port, target)  # type: ignore[arg-type]


# -- what real routers get wrong ----------------------------------------------------------------


def test_searches_end_with_every_root_device() -> None:
    assert UPNP_SEARCH_TARGETS[-1] == "upnp:rootdevice"  # all libtorrent asks for
    assert UPNP_SEARCH_TARGETS[0] == IGD1


def test_a_connection_service_is_taken_wherever_the_description_lists_it() -> None:
    # Not an InternetGatewayDevice by its type, yet it offers the service: taken (libtorrent).
    document = description(device_type="urn:schemas-upnp-org:device:MediaServer:1")
    assert parse_device_description(document, LOCATION).control_url == (
        "http://192.168.1.1:5000/ctl/IPConn"
    )
    bare = (
        b"<root><serviceList><service><serviceType>" + WANPPP1.encode() + b"</serviceType>"
        b"<controlURL>/ppp</controlURL></service></serviceList></root>"
    )
    assert parse_device_description(bare, LOCATION).service_type == WANPPP1


def test_every_connection_service_is_offered_best_first() -> None:
    document = description(WANPPP1, "/ctl/PPPConn", second=(WANIP1, "/ctl/IPConn"))
    services = parse_device_services(document, LOCATION)
    assert [(s.service_type, s.control_url) for s in services] == [
        (WANIP1, "http://192.168.1.1:5000/ctl/IPConn"),
        (WANPPP1, "http://192.168.1.1:5000/ctl/PPPConn"),
    ]
    assert {s.friendly_name for s in services} == {"OpenWrt router"}  # the root device's
    assert parse_device_description(document, LOCATION) == services[0]
    # One on another host is skipped, not fatal; duplicates are dropped; the list is bounded.
    elsewhere = description(WANIP1, "http://10.6.6.6/ctl", second=(WANPPP1, "/ctl/PPPConn"))
    [ppp] = parse_device_services(elsewhere, LOCATION)
    assert ppp.service_type == WANPPP1
    twice = description(WANIP1, "/ctl/IPConn", second=(WANIP1, "/ctl/IPConn"))
    assert len(parse_device_services(twice, LOCATION)) == 1
    many = "".join(service(WANIP1, f"/ip{i}") for i in range(10))
    offered = parse_device_services(PREFERENCE.format(services=many).encode(), LOCATION)
    assert [s.control_url[-3:] for s in offered] == ["ip0", "ip1", "ip2", "ip3"]
    assert len(offered) == UPNP_MAX_SERVICES


MENDABLE = [
    pytest.param(b"\r\n  " + description(), id="whitespace before the declaration"),
    pytest.param(b"\xef\xbb\xbf\n" + description(), id="a BOM and a line before it"),
    pytest.param(description() + b"\x00\x00", id="NULs after the root"),
    pytest.param(description() + b"<junk/>garbage", id="junk after the root"),
    pytest.param(
        description().replace(b"OpenWrt router</friendly", b"AT&T router</friendly"),
        id="a lone ampersand",
    ),
]


@pytest.mark.parametrize("document", MENDABLE)
def test_what_routers_get_wrong_in_xml_is_mended(document: bytes) -> None:
    device = parse_device_description(document, LOCATION)
    assert device.control_url == "http://192.168.1.1:5000/ctl/IPConn"
    assert device.friendly_name in ("OpenWrt router", "AT&T router")


def test_mended_xml_keeps_the_refusals_and_bounds() -> None:
    # What the repairs cannot mend stays an error of ours; a DOCTYPE is refused first.
    for document in (
        b"\n" + BILLION_LAUGHS + b"\x00",
        b"\n<root>&amp;&lt;&#65;&#x41;&bogus;</root>",  # the references stay; &bogus; fails
        b"\n" + b"<root>" + b"<a>" * 40 + b"</a>" * 40 + b"</root>",
        b"&" * UPNP_MAX_DESCRIPTION,  # as "&amp;" past the bound: not parsed again
    ):
        with pytest.raises(UpnpError):
            parse_device_description(document, LOCATION)
    # A SOAP answer is mended too.
    answer = b"\n" + ANSWER.replace(b"</s:Envelope>", b"</s:Envelope>\x00junk")
    assert parse_external_address(ok(answer)) == IPv4Address("203.0.113.7")


@settings(max_examples=200)
@given(st.binary(max_size=60), st.sampled_from([b"\n", b"\xef\xbb\xbf", b" \t"]))
def test_mending_garbage_gives_our_error(data: bytes, lead: bytes) -> None:
    document = description()
    cut = len(data) % len(document)
    for candidate in (lead + data, lead + document + data, lead + document[:cut] + b"&" + data):
        with contextlib.suppress(UpnpError):
            parse_device_description(candidate, LOCATION)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>OK</html>",
        b"garbage \x00",
        b"<Envelope><Body></Body></Envelope>",  # no <AddPortMappingResponse>
        response(WANIP1, "AddPortMapping", {}),
    ],
)
def test_a_200_without_a_fault_is_a_success(body: bytes) -> None:
    check_soap_success(ok(body))  # libtorrent and miniupnpc read it so


def test_soap_success_still_tells_faults_and_errors() -> None:
    status, body = fault(718, "ConflictInMappingEntry")
    for code in (status, 200):
        with pytest.raises(UpnpActionError) as caught:
            check_soap_success(HttpResponse(code, "", (), body))
        assert caught.value.code == 718
    no_code = b"<Envelope><Body><Fault><faultstring>x</faultstring></Fault></Body></Envelope>"
    for failure in (
        HttpResponse(500, "Internal Server Error", (), b"<html>oops</html>"),
        HttpResponse(404, "Not Found", (), b""),
        HttpResponse(401, "Unauthorized", (), response(WANIP1, "AddPortMapping", {})),
        HttpResponse(200, "OK", (), no_code),
    ):
        with pytest.raises(UpnpError) as error:
            check_soap_success(failure)
        assert not isinstance(error.value, UpnpActionError)


def test_get_specific_port_mapping_entry() -> None:
    headers, envelope = soap_parts(
        build_get_specific_port_mapping_entry(
            DEVICE, protocol=MappingProtocol.UDP, external_port=6881
        )
    )
    assert headers["soapaction"] == f'"{WANIP1}#GetSpecificPortMappingEntry"'
    [call] = envelope[0]
    assert [(c.tag, c.text or "") for c in call] == [
        ("NewRemoteHost", ""),
        ("NewExternalPort", "6881"),
        ("NewProtocol", "UDP"),
    ]
    values = {
        "NewInternalPort": "6881",
        "NewInternalClient": "192.168.1.20",
        "NewEnabled": "1",
        "NewPortMappingDescription": "bip",
        "NewLeaseDuration": "1800",
    }
    body = response(WANIP1, "GetSpecificPortMappingEntry", values)
    assert parse_port_mapping_entry(ok(body)) == UpnpPortMappingEntry(
        6881, IPv4Address("192.168.1.20"), True, "bip", 1800
    )
    # Leniencies: a name for a client, an unclear flag, no lease.
    lenient = {**values, "NewInternalClient": "laptop", "NewEnabled": "maybe"}
    del lenient["NewLeaseDuration"]
    entry = parse_port_mapping_entry(ok(response(WANIP1, "GetSpecificPortMappingEntry", lenient)))
    assert (entry.internal_client, entry.enabled, entry.lease_duration) == (None, None, None)
    for lease, read in (("0", 0), ("4294967295", 4294967295), ("4294967296", None), ("-1", None)):
        odd = {**values, "NewLeaseDuration": lease, "NewEnabled": "false"}
        entry = parse_port_mapping_entry(ok(response(WANIP1, "GetSpecificPortMappingEntry", odd)))
        assert (entry.lease_duration, entry.enabled) == (read, False)
    _, missing = fault(714, "NoSuchEntryInArray")
    with pytest.raises(UpnpActionError) as caught:
        parse_port_mapping_entry(HttpResponse(500, "", (), missing))
    assert caught.value.code is UpnpErrorCode.NO_SUCH_ENTRY_IN_ARRAY
    for port in ("", "0", "65536", "x", "1" * 20):
        bad = response(WANIP1, "GetSpecificPortMappingEntry", {**values, "NewInternalPort": port})
        with pytest.raises(UpnpError):
            parse_port_mapping_entry(ok(bad))
    with pytest.raises(LocalProtocolError):
        build_get_specific_port_mapping_entry(
            DEVICE,
            protocol="TCP",  # type: ignore[arg-type]
            external_port=6881,
        )


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_entry_garbage_gives_our_error(data: bytes) -> None:
    body = response(WANIP1, "GetSpecificPortMappingEntry", {"NewInternalPort": "1"})
    cut = len(data) % len(body)
    for candidate in (data, body[:cut] + data + body[cut:]):
        with contextlib.suppress(UpnpError):
            parse_port_mapping_entry(ok(candidate))


@pytest.mark.parametrize("status", [200, 500])
def test_a_fault_that_does_not_parse_is_still_a_refusal(status: int) -> None:
    # An unbound s: prefix: not XML even mended; its errorCode is read from the bytes.
    body = (
        b"<s:Envelope><s:Body><s:Fault><detail><UPnPError><errorCode> 718 </errorCode>"
        b"</UPnPError></detail></s:Fault></s:Body></s:Envelope>"
    )
    answer = HttpResponse(status, "", (), body)
    with pytest.raises(UpnpActionError) as refused:
        check_soap_success(answer)
    assert refused.value.code == 718
    with pytest.raises(UpnpActionError):
        parse_soap_response(answer, "GetExternalIPAddress")
