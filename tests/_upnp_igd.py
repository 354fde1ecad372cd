"""A fake UPnP Internet Gateway Device on 127.0.0.1 for the UPnP tests: an SSDP responder
(UDP) and a trio HTTP server serving a miniupnpd-style rootDesc.xml and the SOAP control
endpoint of its WAN connection service, keeping a mapping table; with knobs to misbehave
(:class:`FakeIgd`), run by :func:`serve_igd` or :func:`running_igd` (several on loopback
addresses of their own, answering one search: :func:`running_igds`)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
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
{second_device}</deviceList>
</device>
</deviceList>
<presentationURL>http://127.0.0.1/</presentationURL>
</device>
</root>
"""

# A second WANConnectionDevice, as a router with a PPP link and an IP one lists them.
SECOND_DEVICE = """<device>
<deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<friendlyName>WANConnectionDevice 2</friendlyName>
<UDN>uuid:12345678-0000-0000-0003-000000000000</UDN>
<serviceList>
<service>
<serviceType>{service_type}</serviceType>
<serviceId>urn:upnp-org:serviceId:WANConn2</serviceId>
<SCPDURL>/WANCn2.xml</SCPDURL>
<controlURL>{control_url}</controlURL>
<eventSubURL>/evt/Conn2</eventSubURL>
</service>
</serviceList>
</device>
"""

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"


@dataclass
class Entry:
    """A row of the fake's port mapping table."""

    client: str
    internal_port: int
    lease: int
    description: str
    granted_at: float = field(default=0.0, compare=False)
    enabled: bool = field(default=True, compare=False)


@dataclass
class FakeIgd:
    """A UPnP IGD's behaviour, with knobs to misbehave.

    Attributes:
        host: the loopback address it serves on (HTTP and SSDP).
        external: the external address answered ("" for none yet).
        service_type: the WAN connection service it offers.
        second_service: ``(service type, control URL)`` of a second connection service,
            in a WANConnectionDevice of its own.
        second_external: the external address the second service answers.
        friendly_name: its name.
        ssdp_silent: answer no search.
        ssdp_answer: answer searches with these bytes instead of a proper answer.
        location_host: the host put in LOCATION (another than ours: an untrusted answer).
        location_scheme: the scheme put in LOCATION.
        decoys: extra answers per search, each from a loopback address of its own
            (127.0.0.2, 127.0.0.3...) with a LOCATION there, where nothing listens; sent
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
        garbage: answer SOAP actions with these bytes as a body, with ``garbage_status``.
        garbage_status: see ``garbage``.
        permanent_only: answer 725 to a lease other than 0.
        same_port_only: answer 724 to an external port other than the internal one.
        taken: external ports held by another host (718).
        fault: answer AddPortMapping with this UPnP error code.
        add_fault: answer AddPortMapping of an external port with the UPnP error code it
            gives for that port (None: as usual).
        address_fault: answer GetExternalIPAddress with this UPnP error code.
        delete_fault: answer DeletePortMapping with this UPnP error code.
        specific_fault: answer GetSpecificPortMappingEntry with this UPnP error code.
        readd_conflict: answer 718 to a client adding again a mapping it holds (some
            routers do; Open.NAT #14).
        mappings: (protocol, external port) -> the mapping.
        requests: (time, action, arguments) of every SOAP request.
        searches: the M-SEARCH datagrams received.
        http_requests: request lines of every HTTP request.
    """

    host: str = LOOPBACK
    external: str = EXTERNAL
    service_type: str = WANIP1
    second_service: tuple[str, str] | None = None
    second_external: str = EXTERNAL
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
    garbage_status: int = 200
    permanent_only: bool = False
    same_port_only: bool = False
    taken: set[int] = field(default_factory=set)
    fault: int | None = None
    add_fault: Callable[[int], int | None] | None = None
    address_fault: int | None = None
    delete_fault: int | None = None
    specific_fault: int | None = None
    readd_conflict: bool = False
    mappings: dict[tuple[str, int], Entry] = field(default_factory=dict)
    requests: list[tuple[float, str, dict[str, str]]] = field(default_factory=list)
    searches: list[bytes] = field(default_factory=list)
    http_requests: list[str] = field(default_factory=list)
    http_port: int = 0
    ssdp_socket: trio.socket.SocketType | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.location_host == LOOPBACK:
            self.location_host = self.host

    @property
    def location(self) -> str:
        return f"{self.location_scheme}://{self.location_host}:{self.http_port}/rootDesc.xml"

    @property
    def decoy_hosts(self) -> list[str]:
        return [f"127.0.0.{2 + i}" for i in range(self.decoys)]

    def actions(self, name: str | None = None) -> list[tuple[float, dict[str, str]]]:
        return [(t, args) for t, action, args in self.requests if name in (None, action)]

    # -- SSDP --------------------------------------------------------------------------------

    def ssdp_answers(self, data: bytes) -> list[tuple[str, bytes]]:
        """The answers to one datagram, each with the host to send it from."""
        self.searches.append(data)
        if self.ssdp_silent or not data.startswith(b"M-SEARCH * HTTP/1.1\r\n"):
            return []
        if self.ssdp_answer is not None:
            return [(self.host, self.ssdp_answer)]
        target = search_target(data)
        # miniupnpd answers its device type and its services.
        if target not in (IGD1, self.service_type, "upnp:rootdevice"):
            return []
        answers = [
            (host, self._ssdp(target, f"http://{host}:{self.http_port}/decoy.xml"))
            for host in self.decoy_hosts
        ]
        answers.append((self.host, self._ssdp(target, self.location)))
        return answers

    @staticmethod
    def _ssdp(target: str, location: str) -> bytes:
        return ssdp_answer(target, location)

    # -- HTTP --------------------------------------------------------------------------------

    def describe(self) -> bytes:
        if self.description is not None:
            return self.description
        url_base = "" if self.url_base is None else f"<URLBase>{self.url_base}</URLBase>\n"
        second = ""
        if self.second_service is not None:
            second_type, second_control = self.second_service
            second = SECOND_DEVICE.format(service_type=second_type, control_url=second_control)
        return ROOT_DESC.format(
            url_base=url_base,
            device_type=IGD1,
            friendly_name=self.friendly_name,
            service_type=self.service_type,
            control_url=self.control_url,
            second_device=second,
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
        base = self.url_base or f"http://{self.host}:{self.http_port}/rootDesc.xml"
        services = {urlsplit(urljoin(base, self.control_url)).path: self.service_type}
        if self.second_service is not None:
            second_type, second_control = self.second_service
            services.setdefault(urlsplit(urljoin(base, second_control)).path, second_type)
        if method != "POST" or path not in services:
            return 404, b"<html>not found</html>"
        return self.soap(headers, body, client, now, services[path])

    def soap(
        self, headers: dict[str, str], body: bytes, client: str, now: float, service_type: str
    ) -> tuple[int, bytes]:
        envelope = ET.fromstring(body)
        call = next(iter(envelope.find(f"{{{SOAP_ENV}}}Body") or []))
        namespace, _, action = call.tag[1:].partition("}")
        arguments = {child.tag: child.text or "" for child in call}
        self.requests.append((now, action, arguments))
        for key, entry in list(self.mappings.items()):
            if entry.lease and now >= entry.granted_at + entry.lease:
                del self.mappings[key]  # its lease ran out
        assert namespace == service_type
        assert headers["soapaction"] == f'"{service_type}#{action}"'
        if self.garbage is not None:
            return self.garbage_status, self.garbage
        if action == "GetExternalIPAddress":
            if self.address_fault is not None:
                return fault(self.address_fault)
            external = self.external if service_type == self.service_type else self.second_external
            return 200, response(service_type, action, {"NewExternalIPAddress": external})
        protocol = arguments["NewProtocol"]
        external_port = int(arguments["NewExternalPort"])
        key = (protocol, external_port)
        if action == "GetSpecificPortMappingEntry":
            return self._specific(service_type, key, now)
        if action == "DeletePortMapping":
            if self.delete_fault is not None:
                return fault(self.delete_fault)
            if self.mappings.pop(key, None) is None:
                return fault(714)
            return 200, response(service_type, action, {})
        assert action == "AddPortMapping", action
        assert arguments["NewInternalClient"] == client  # miniupnpd's secure mode
        assert arguments["NewRemoteHost"] == ""
        assert arguments["NewEnabled"] == "1"
        internal = int(arguments["NewInternalPort"])
        lease = int(arguments["NewLeaseDuration"])
        if self.fault is not None:
            return fault(self.fault)
        code = None if self.add_fault is None else self.add_fault(external_port)
        if code is not None:
            return fault(code)
        if self.permanent_only and lease != 0:
            return fault(725)
        if self.same_port_only and external_port != internal:
            return fault(724)
        held = self.mappings.get(key)
        if external_port in self.taken or (held is not None and held.client != client):
            return fault(718)
        if held is not None and self.readd_conflict:
            return fault(718)
        description = arguments["NewPortMappingDescription"]
        self.mappings[key] = Entry(client, internal, lease, description, granted_at=now)
        return 200, response(service_type, action, {})

    def _specific(self, service_type: str, key: tuple[str, int], now: float) -> tuple[int, bytes]:
        if self.specific_fault is not None:
            return fault(self.specific_fault)
        entry = self.mappings.get(key)
        if entry is None:
            return fault(714)
        # What is left of the lease, as miniupnpd tells it (0: permanent).
        left = max(1, round(entry.lease - (now - entry.granted_at))) if entry.lease else 0
        values = {
            "NewInternalPort": str(entry.internal_port),
            "NewInternalClient": entry.client,
            "NewEnabled": "1" if entry.enabled else "0",
            "NewPortMappingDescription": entry.description,
            "NewLeaseDuration": str(left),
        }
        return 200, response(service_type, "GetSpecificPortMappingEntry", values)


def search_target(data: bytes) -> str:
    """The ST of an M-SEARCH datagram ("" when none)."""
    for line in data.decode("ascii", "replace").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().upper() == "ST":
            return value.strip()
    return ""


def ssdp_answer(target: str, location: str) -> bytes:
    """miniupnpd's answer to a search for ``target``."""
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
        assert headers["host"] == f"{igd.host}:{igd.http_port}"
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
    """Run ``igd`` on its loopback address; reports the SSDP port when ready."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, partial(_serve_http, igd), 0, host=igd.host)
        )
        igd.http_port = listeners[0].socket.getsockname()[1]
        senders = {}
        try:
            for host in [igd.host, *igd.decoy_hosts]:
                sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
                senders[host] = sock
                await sock.bind((host, 0))
            igd.ssdp_socket = sock = senders[igd.host]
            task_status.started(sock.getsockname()[1])
            while True:
                data, source = await sock.recvfrom(65536)
                await send_answers(igd, data, source, senders)
        finally:
            for sock in senders.values():
                sock.close()


async def send_answers(
    igd: FakeIgd,
    data: bytes,
    source: tuple[str, int],
    senders: dict[str, trio.socket.SocketType] | None = None,
) -> None:
    """Answer one search datagram from ``source``, each answer from its own host."""
    for host, answer in igd.ssdp_answers(data):
        sock = (senders or {}).get(host, igd.ssdp_socket)
        assert sock is not None
        await sock.sendto(answer, source)


@asynccontextmanager
async def running_igd(igd: FakeIgd) -> AsyncIterator[tuple[str, int]]:
    """Run ``igd`` while the block runs; gives the SSDP address to search."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_igd, igd)
        yield (igd.host, port)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def running_igds(
    *igds: FakeIgd, answer: Callable[[FakeIgd, bytes], bool] | None = None
) -> AsyncIterator[tuple[str, int]]:
    """Run several devices (each on its own ``host``) while the block runs; gives one SSDP
    address on 127.0.0.1 whose searches every device answers, from its own address, in the
    order given (``answer(igd, datagram)`` False: that device keeps quiet)."""
    async with trio.open_nursery() as nursery:
        for igd in igds:
            await nursery.start(serve_igd, igd)
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as hub:
            await hub.bind((LOOPBACK, 0))

            async def fan_out() -> None:
                while True:
                    data, source = await hub.recvfrom(65536)
                    for igd in igds:
                        if answer is None or answer(igd, data):
                            await send_answers(igd, data, source)

            nursery.start_soon(fan_out)
            yield hub.getsockname()
            nursery.cancel_scope.cancel()
