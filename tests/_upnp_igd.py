"""A fake UPnP Internet Gateway Device on 127.0.0.1 for the UPnP tests: an SSDP responder
(UDP) and a trio HTTP server serving a miniupnpd-style rootDesc.xml and the SOAP control
endpoint of its WAN connection service, keeping a mapping table; with knobs to misbehave
(:class:`FakeIgd`), run by :func:`serve_igd` or :func:`running_igd`."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import urljoin, urlsplit

import trio

LOOPBACK = "127.0.0.1"
EXTERNAL = "203.0.113.7"
IGD1 = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
WANIP1 = "urn:schemas-upnp-org:service:WANIPConnection:1"
WANIP2 = "urn:schemas-upnp-org:service:WANIPConnection:2"
WANPPP1 = "urn:schemas-upnp-org:service:WANPPPConnection:1"
SERVER = "OpenWRT/22.03 UPnP/1.1 MiniUPnPd/2.3.3"

# miniupnpd's rootDesc.xml, as an OpenWrt router serves it (fields filled in by describe()).
ROOT_DESC = """<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0" configId="1337">
<specVersion><major>1</major><minor>1</minor></specVersion>
{url_base}<device>
<deviceType>{device_type}</deviceType>
<friendlyName>{friendly_name}</friendlyName>
<manufacturer>OpenWrt</manufacturer>
<manufacturerURL>https://openwrt.org/</manufacturerURL>
<modelDescription>OpenWrt router</modelDescription>
<modelName>OpenWrt router</modelName>
<modelNumber>1</modelNumber>
<modelURL>https://openwrt.org/</modelURL>
<serialNumber>00000000</serialNumber>
<UDN>uuid:12345678-0000-0000-0000-000000000000</UDN>
<serviceList>
<service>
<serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType>
<serviceId>urn:upnp-org:serviceId:L3Forwarding1</serviceId>
<SCPDURL>/L3F.xml</SCPDURL><controlURL>/ctl/L3F</controlURL><eventSubURL>/evt/L3F</eventSubURL>
</service>
</serviceList>
<deviceList>
<device>
<deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
<friendlyName>WANDevice</friendlyName>
<manufacturer>MiniUPnP</manufacturer>
<UDN>uuid:12345678-0000-0000-0001-000000000000</UDN>
<serviceList>
<service>
<serviceType>urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1</serviceType>
<serviceId>urn:upnp-org:serviceId:WANCommonIFC1</serviceId>
<SCPDURL>/WANCfg.xml</SCPDURL><controlURL>/ctl/CmnIfCfg</controlURL>
<eventSubURL>/evt/CmnIfCfg</eventSubURL>
</service>
</serviceList>
<deviceList>
<device>
<deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<friendlyName>WANConnectionDevice</friendlyName>
<manufacturer>MiniUPnP</manufacturer>
<UDN>uuid:12345678-0000-0000-0002-000000000000</UDN>
<serviceList>
<service>
<serviceType>{service_type}</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<SCPDURL>/WANIPCn.xml</SCPDURL>
<controlURL>{control_url}</controlURL>
<eventSubURL>/evt/IPConn</eventSubURL>
</service>
</serviceList>
</device>
</deviceList>
</device>
</deviceList>
<presentationURL>http://127.0.0.1/</presentationURL>
</device>
</root>
"""

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"


@dataclass
class Entry:
    """A row of the fake's port mapping table."""

    client: str
    internal_port: int
    lease: int
    description: str


@dataclass
class FakeIgd:
    """A UPnP IGD's behaviour, with knobs to misbehave.

    Attributes:
        external: the external address answered ("" for none yet).
        service_type: the WAN connection service it offers.
        friendly_name: its name.
        ssdp_silent: answer no search.
        ssdp_answer: answer searches with these bytes instead of a proper answer.
        location_host: the host put in LOCATION (another than ours: an untrusted answer).
        location_scheme: the scheme put in LOCATION.
        decoys: extra answers per search, each with its own LOCATION (which 404s), sent
            before the real one.
        description: serve these bytes as the description instead.
        control_url: the controlURL in the description.
        url_base: a URLBase for the description.
        chunked: send every body chunked (7-byte chunks).
        delay: seconds before each HTTP answer.
        slow_actions: SOAP actions answered only after ``slow_delay`` seconds.
        slow_delay: see ``slow_actions``.
        drop: close HTTP connections without an answer.
        silent: hold HTTP connections without answering.
        garbage: answer SOAP actions with these bytes as a 200 body.
        permanent_only: answer 725 to a lease other than 0.
        same_port_only: answer 724 to an external port other than the internal one.
        taken: external ports held by another host (718).
        fault: answer AddPortMapping with this UPnP error code.
        address_fault: answer GetExternalIPAddress with this UPnP error code.
        delete_fault: answer DeletePortMapping with this UPnP error code.
        mappings: (protocol, external port) -> the mapping.
        requests: (time, action, arguments) of every SOAP request.
        searches: the M-SEARCH datagrams received.
        http_requests: request lines of every HTTP request.
    """

    external: str = EXTERNAL
    service_type: str = WANIP1
    friendly_name: str = "OpenWrt router"
    ssdp_silent: bool = False
    ssdp_answer: bytes | None = None
    location_host: str = LOOPBACK
    location_scheme: str = "http"
    decoys: int = 0
    description: bytes | None = None
    control_url: str = "/ctl/IPConn"
    url_base: str | None = None
    chunked: bool = False
    delay: float = 0.0
    slow_actions: set[str] = field(default_factory=set)
    slow_delay: float = 0.0
    drop: bool = False
    silent: bool = False
    garbage: bytes | None = None
    permanent_only: bool = False
    same_port_only: bool = False
    taken: set[int] = field(default_factory=set)
    fault: int | None = None
    address_fault: int | None = None
    delete_fault: int | None = None
    mappings: dict[tuple[str, int], Entry] = field(default_factory=dict)
    requests: list[tuple[float, str, dict[str, str]]] = field(default_factory=list)
    searches: list[bytes] = field(default_factory=list)
    http_requests: list[str] = field(default_factory=list)
    http_port: int = 0

    @property
    def location(self) -> str:
        return f"{self.location_scheme}://{self.location_host}:{self.http_port}/rootDesc.xml"

    def actions(self, name: str | None = None) -> list[tuple[float, dict[str, str]]]:
        return [(t, args) for t, action, args in self.requests if name in (None, action)]

    # -- SSDP --------------------------------------------------------------------------------

    def ssdp_answers(self, data: bytes) -> list[bytes]:
        self.searches.append(data)
        if self.ssdp_silent or not data.startswith(b"M-SEARCH * HTTP/1.1\r\n"):
            return []
        if self.ssdp_answer is not None:
            return [self.ssdp_answer]
        target = ""
        for line in data.decode("ascii").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().upper() == "ST":
                target = value.strip()
        # miniupnpd answers its device type and its services.
        if target not in (IGD1, self.service_type, "upnp:rootdevice"):
            return []
        answers = [
            self._ssdp(target, f"http://{LOOPBACK}:{self.http_port}/decoy{i}.xml")
            for i in range(self.decoys)
        ]
        answers.append(self._ssdp(target, self.location))
        return answers

    @staticmethod
    def _ssdp(target: str, location: str) -> bytes:
        return (
            "HTTP/1.1 200 OK\r\n"
            "CACHE-CONTROL: max-age=120\r\n"
            f"ST: {target}\r\n"
            f"USN: uuid:12345678-0000-0000-0000-000000000000::{target}\r\n"
            "EXT:\r\n"
            f"SERVER: {SERVER}\r\n"
            f"LOCATION: {location}\r\n"
            'OPT: "http://schemas.upnp.org/upnp/1/0/"; ns=01\r\n'
            "01-NLS: 1\r\n"
            "BOOTID.UPNP.ORG: 1\r\n"
            "CONFIGID.UPNP.ORG: 1337\r\n"
            "\r\n"
        ).encode("ascii")

    # -- HTTP --------------------------------------------------------------------------------

    def describe(self) -> bytes:
        if self.description is not None:
            return self.description
        url_base = "" if self.url_base is None else f"<URLBase>{self.url_base}</URLBase>\n"
        return ROOT_DESC.format(
            url_base=url_base,
            device_type=IGD1,
            friendly_name=self.friendly_name,
            service_type=self.service_type,
            control_url=self.control_url,
        ).encode("utf-8")

    def answer(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        *,
        client: str,
        now: float,
    ) -> tuple[int, bytes]:
        """The status and body for one request."""
        if method == "GET" and path == "/rootDesc.xml":
            return 200, self.describe()
        base = self.url_base or f"http://{LOOPBACK}:{self.http_port}/rootDesc.xml"
        if method != "POST" or path != urlsplit(urljoin(base, self.control_url)).path:
            return 404, b"<html>not found</html>"
        return self.soap(headers, body, client, now)

    def soap(
        self, headers: dict[str, str], body: bytes, client: str, now: float
    ) -> tuple[int, bytes]:
        envelope = ET.fromstring(body)
        call = next(iter(envelope.find(f"{{{SOAP_ENV}}}Body") or []))
        namespace, _, action = call.tag[1:].partition("}")
        arguments = {child.tag: child.text or "" for child in call}
        self.requests.append((now, action, arguments))
        assert namespace == self.service_type
        assert headers["soapaction"] == f'"{self.service_type}#{action}"'
        if self.garbage is not None:
            return 200, self.garbage
        if action == "GetExternalIPAddress":
            if self.address_fault is not None:
                return fault(self.address_fault)
            return 200, response(self.service_type, action, {"NewExternalIPAddress": self.external})
        protocol = arguments["NewProtocol"]
        external = int(arguments["NewExternalPort"])
        key = (protocol, external)
        if action == "DeletePortMapping":
            if self.delete_fault is not None:
                return fault(self.delete_fault)
            if self.mappings.pop(key, None) is None:
                return fault(714)
            return 200, response(self.service_type, action, {})
        assert action == "AddPortMapping", action
        assert arguments["NewInternalClient"] == client  # miniupnpd's secure mode
        assert arguments["NewRemoteHost"] == ""
        assert arguments["NewEnabled"] == "1"
        internal = int(arguments["NewInternalPort"])
        lease = int(arguments["NewLeaseDuration"])
        if self.fault is not None:
            return fault(self.fault)
        if self.permanent_only and lease != 0:
            return fault(725)
        if self.same_port_only and external != internal:
            return fault(724)
        held = self.mappings.get(key)
        if external in self.taken or (held is not None and held.client != client):
            return fault(718)
        self.mappings[key] = Entry(client, internal, lease, arguments["NewPortMappingDescription"])
        return 200, response(self.service_type, action, {})


def response(service_type: str, action: str, values: dict[str, str]) -> bytes:
    inner = "".join(f"<{name}>{value}</{name}>" for name, value in values.items())
    return (
        '<?xml version="1.0"?>\r\n'
        f'<s:Envelope xmlns:s="{SOAP_ENV}" '
        's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
        f'<u:{action}Response xmlns:u="{service_type}">{inner}</u:{action}Response>'
        "</s:Body></s:Envelope>\r\n"
    ).encode()


def fault(code: int, description: str = "") -> tuple[int, bytes]:
    return 500, (
        '<?xml version="1.0"?>\r\n'
        f'<s:Envelope xmlns:s="{SOAP_ENV}" '
        's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><s:Fault>'
        "<faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>"
        '<UPnPError xmlns="urn:schemas-upnp-org:control-1-0">'
        f"<errorCode>{code}</errorCode><errorDescription>{description or 'Error'}"
        "</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>\r\n"
    ).encode()


def http_response(status: int, body: bytes, *, chunked: bool) -> bytes:
    reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}.get(status, "Status")
    head = f'HTTP/1.1 {status} {reason}\r\nContent-Type: text/xml; charset="utf-8"\r\n'
    head += f"Connection: close\r\nServer: {SERVER}\r\nEXT:\r\n"
    if not chunked:
        return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7)
    )
    return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + chunks + b"0\r\n\r\n"


async def _read_request(
    stream: trio.SocketStream,
) -> tuple[str, str, dict[str, str], bytes] | None:
    """One request, or None when the client gave up before sending it whole."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        data += chunk
        assert len(data) < 1 << 20
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    method, path, version = lines[0].split(" ")
    assert version == "HTTP/1.1"
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        body += chunk
    return method, path, headers, body


async def _serve_http(igd: FakeIgd, stream: trio.SocketStream) -> None:
    async with stream:
        try:
            request = await _read_request(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if request is None:
            return
        method, path, headers, body = request
        igd.http_requests.append(f"{method} {path}")
        assert headers["connection"] == "close"
        assert headers["host"] == f"{LOOPBACK}:{igd.http_port}"
        if igd.silent:
            await trio.sleep_forever()
        if igd.drop:
            return
        if igd.delay:
            await trio.sleep(igd.delay)
        action = headers.get("soapaction", "").strip('"').partition("#")[2]
        if action in igd.slow_actions:
            await trio.sleep(igd.slow_delay)
        client = stream.socket.getpeername()[0]
        status, answer = igd.answer(
            method, path, headers, body, client=client, now=trio.current_time()
        )
        try:
            await stream.send_all(http_response(status, answer, chunked=igd.chunked))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


async def serve_igd(
    igd: FakeIgd, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run ``igd`` on 127.0.0.1; reports the SSDP port when ready."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, partial(_serve_http, igd), 0, host=LOOPBACK)
        )
        igd.http_port = listeners[0].socket.getsockname()[1]
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.bind((LOOPBACK, 0))
            task_status.started(sock.getsockname()[1])
            while True:
                data, source = await sock.recvfrom(65536)
                for answer in igd.ssdp_answers(data):
                    await sock.sendto(answer, source)


@asynccontextmanager
async def running_igd(igd: FakeIgd) -> AsyncIterator[tuple[str, int]]:
    """Run ``igd`` while the block runs; gives the SSDP address to search."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_igd, igd)
        yield (LOOPBACK, port)
        nursery.cancel_scope.cancel()
