"""UPnP IGD port mapping (UPnP Device Architecture 1.1, IGD v1 and v2): the codecs.

Most home routers forward ports on request through UPnP's Internet Gateway Device rather
than NAT-PMP. The conversation has three steps, and this module holds every message of
them, with no I/O and no clock (the trio side is :mod:`bip_handshake._upnp_shell`):

- **SSDP discovery**: an ``M-SEARCH`` datagram (HTTP over UDP, :func:`build_msearch`) to
  239.255.255.250:1900; each gateway answers with its description's URL in ``LOCATION``
  (:func:`parse_ssdp_response`).
- **Description**: an HTTP GET of that URL (:func:`build_http_get`; the answer is read by
  :class:`HttpResponseParser`) gives an XML document listing the device's services;
  :func:`parse_device_services` finds its WANIPConnection (:2 preferred, then :1) and
  WANPPPConnection:1 services wherever it lists them and resolves their ``controlURL``
  (:class:`UpnpDevice`, one per service; :func:`parse_device_description` gives the first).
- **Control**: SOAP actions POSTed to that URL (:func:`build_soap_request`, with shortcuts
  for GetExternalIPAddress, AddPortMapping, DeletePortMapping and
  GetSpecificPortMappingEntry); the answer's out arguments are read by
  :func:`parse_soap_response`, and a fault (a ``UPnPError`` with its ``errorCode``) raises
  :class:`UpnpActionError`. An action whose answer carries nothing we need succeeds on any
  HTTP 200 without a fault (:func:`check_soap_success`), as real routers need.

The events only the UPnP mapper reports (:class:`UpnpDeviceFound`,
:class:`UpnpDiscoveryFailed`, :class:`UpnpAddressChanged`, :class:`UpnpAddressFailed`,
:class:`UpnpDeviceLost`) are defined here too, beside the shared
:class:`~bip_handshake.PortMappingEvent`, and the shared events as one gateway of several
tells them (:class:`UpnpPortMapped`, :class:`UpnpMappingFailed`: they carry the ``device``).

Everything a device sends is untrusted (any host on the LAN can answer a search): parsing is
strict and bounded (an SSDP answer of :data:`UPNP_MAX_SSDP_RESPONSE` bytes, an HTTP head of
:data:`UPNP_MAX_HEAD` bytes and :data:`UPNP_MAX_HEADERS` headers, a description of
:data:`UPNP_MAX_DESCRIPTION` bytes, a SOAP answer of :data:`UPNP_MAX_SOAP_RESPONSE`), XML
with a ``<!DOCTYPE`` or ``<!ENTITY`` is refused before it is parsed (no router needs them;
it closes entity expansion), URLs must be ``http://`` to an IPv4 literal (never a name to
resolve), and a control URL must stay on the description's host. XML that does not parse is
given one more try after light repairs of what routers get wrong (leading whitespace or a
byte order mark, bytes after the root element, a lone ``&``). Whatever is wrong raises
:class:`UpnpError`, never a parser's own exception.

>>> request = build_msearch("urn:schemas-upnp-org:device:InternetGatewayDevice:1")
>>> request.splitlines()[0]
b'M-SEARCH * HTTP/1.1'
>>> answer = parse_ssdp_response(
...     b"HTTP/1.1 200 OK\\r\\nCACHE-CONTROL: max-age=120\\r\\n"
...     b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\\r\\n"
...     b"USN: uuid:1234::urn:schemas-upnp-org:device:InternetGatewayDevice:1\\r\\n"
...     b"LOCATION: http://192.168.1.1:5000/rootDesc.xml\\r\\n\\r\\n"
... )
>>> answer.location, answer.max_age
('http://192.168.1.1:5000/rootDesc.xml', 120)
>>> parse_http_url(answer.location)
HttpUrl(host=IPv4Address('192.168.1.1'), port=5000, target='/rootDesc.xml')
"""

from __future__ import annotations

import enum
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Final
from urllib.parse import urljoin, urlsplit

from ._errors import LocalProtocolError, RemoteProtocolError
from ._portmap import MappingFailed, MappingProtocol, PortMapped, PortMappingEvent
from ._text import printable_text

__all__ = [
    "UPNP_MAX_DESCRIPTION",
    "UPNP_MAX_HEAD",
    "UPNP_MAX_HEADERS",
    "UPNP_MAX_SERVICES",
    "UPNP_MAX_SOAP_RESPONSE",
    "UPNP_MAX_SSDP_RESPONSE",
    "UPNP_MAX_URL",
    "UPNP_SEARCH_TARGETS",
    "UPNP_SERVICE_TYPES",
    "UPNP_SSDP_HOST",
    "UPNP_SSDP_PORT",
    "HttpResponse",
    "HttpResponseParser",
    "HttpUrl",
    "SsdpResponse",
    "UpnpActionError",
    "UpnpAddressChanged",
    "UpnpAddressFailed",
    "UpnpDevice",
    "UpnpDeviceFound",
    "UpnpDeviceLost",
    "UpnpDiscoveryFailed",
    "UpnpError",
    "UpnpErrorCode",
    "UpnpMappingFailed",
    "UpnpPortMapped",
    "UpnpPortMappingEntry",
    "build_add_port_mapping",
    "build_delete_port_mapping",
    "build_get_external_address",
    "build_get_specific_port_mapping_entry",
    "build_http_get",
    "build_msearch",
    "build_soap_request",
    "check_soap_success",
    "parse_device_description",
    "parse_device_services",
    "parse_external_address",
    "parse_http_response",
    "parse_http_url",
    "parse_port_mapping_entry",
    "parse_soap_response",
    "parse_ssdp_response",
]

UPNP_SSDP_HOST: Final = "239.255.255.250"
"""SSDP's multicast group (UDA 1.1, 1.1.2)."""

UPNP_SSDP_PORT: Final = 1900
"""SSDP's UDP port."""

_IGD = "urn:schemas-upnp-org:device:InternetGatewayDevice:"

UPNP_SEARCH_TARGETS: Final[tuple[str, ...]] = (
    f"{_IGD}1",
    f"{_IGD}2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
    "upnp:rootdevice",
)
"""What an M-SEARCH asks for, one datagram each, much as miniupnpc does: both IGD versions (an
IGD:2 ought to answer a search for :1 too, but some do not), then the connection services
for the odd router that only answers those, and last every root device (all libtorrent asks:
some routers answer nothing else)."""

UPNP_SERVICE_TYPES: Final[tuple[str, ...]] = (
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
)
"""The services that map ports, most wanted first (as libtorrent lists them)."""

UPNP_MAX_SSDP_RESPONSE: Final = 4096
"""Bytes of one SSDP answer (real ones are a few hundred; libtorrent reads 1500)."""

UPNP_MAX_HEAD: Final = 16 * 1024
"""Bytes of an HTTP response's status line and headers (and of a chunked body's trailer)."""

UPNP_MAX_HEADERS: Final = 64
"""Header lines in one HTTP response (or SSDP answer)."""

UPNP_MAX_DESCRIPTION: Final = 256 * 1024
"""Bytes of a device description (a router's is 3-10 KiB)."""

UPNP_MAX_SOAP_RESPONSE: Final = 64 * 1024
"""Bytes of a SOAP answer (a few hundred in practice)."""

UPNP_MAX_URL: Final = 1024
"""Characters of a URL taken from a device (LOCATION, URLBase, controlURL)."""

UPNP_MAX_SERVICES: Final = 4
"""Port mapping services taken from one description (a router offers one or two: its
WANIPConnection and, on a PPP link, its WANPPPConnection)."""

_MAX_XML_DEPTH: Final = 32  # a description nests ~10 deep, a SOAP answer 5
_MAX_INTERIM: Final = 8  # 1xx answers skipped before the real one
_MAX_CHUNK_LINE: Final = 1024  # a chunk-size line with its extensions
_MAX_DEVICE_TEXT: Final = 256  # a device's words kept: its name, a fault's description
_USER_AGENT: Final = "bip UPnP/1.1 bip_handshake"
_SOAP_ENVELOPE_NS: Final = "http://schemas.xmlsoap.org/soap/envelope/"
_SOAP_ENCODING: Final = "http://schemas.xmlsoap.org/soap/encoding/"

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] +([0-9]{3})(?:[ \t]+(.*))?")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_URL_CHARS = re.compile(r"[!-~]+")  # printable ASCII, no space: safe in a request line
_TARGET = re.compile(r"/[!-~]*")
_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_SERVICE_TYPE = re.compile(r"urn:[A-Za-z0-9.\-]+:service:[A-Za-z0-9_.\-]+:[0-9]+")
_SEARCH_TARGET = re.compile(r"[!-~]+")
# Characters XML 1.0 cannot carry at all, escaped or not.
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_DECIMAL = re.compile(r"[0-9]{1,9}")
_UINT32 = re.compile(r"[0-9]{1,10}")
# The root element's name: the first start tag (a declaration, comment or PI starts "<?"/"<!").
_FIRST_TAG = re.compile(r"<([A-Za-z_][^\s/>]*)")
# An "&" that starts no entity or character reference.
_LONE_AMPERSAND = re.compile(r"&(?![A-Za-z_][A-Za-z0-9_.\-]*;|#[0-9]+;|#x[0-9A-Fa-f]+;)")


class UpnpError(RemoteProtocolError):
    """A UPnP device sent something we cannot use: a bad SSDP answer, HTTP response,
    description or SOAP answer.

    >>> parse_http_url("https://192.168.1.1/rootDesc.xml")
    Traceback (most recent call last):
    ...
    bip_handshake._upnp.UpnpError: a UPnP URL is http://, got 'https://192.168.1.1/rootDesc.xml'
    """


class UpnpErrorCode(enum.IntEnum):
    """The UPnP error codes a WANIPConnection or WANPPPConnection action may answer with
    (UDA 1.1 3.2.2 and IGD's WANIPConnection:2 2.4). A device may send others (kept as ints)."""

    INVALID_ACTION = 401
    INVALID_ARGS = 402
    ACTION_FAILED = 501
    ACTION_NOT_AUTHORIZED = 606
    NO_SUCH_ENTRY_IN_ARRAY = 714
    WILD_CARD_NOT_PERMITTED_IN_SRC_IP = 715
    WILD_CARD_NOT_PERMITTED_IN_EXT_PORT = 716
    CONFLICT_IN_MAPPING_ENTRY = 718
    SAME_PORT_VALUES_REQUIRED = 724
    ONLY_PERMANENT_LEASES_SUPPORTED = 725
    REMOTE_HOST_ONLY_SUPPORTS_WILDCARD = 726
    EXTERNAL_PORT_ONLY_SUPPORTS_WILDCARD = 727
    NO_PORT_MAPS_AVAILABLE = 728
    CONFLICT_WITH_OTHER_MECHANISMS = 729
    WILD_CARD_NOT_PERMITTED_IN_INT_PORT = 732


def _error_code(code: int) -> UpnpErrorCode | int:
    try:
        return UpnpErrorCode(code)
    except ValueError:
        return code


class UpnpActionError(UpnpError):
    """A device turned a SOAP action down with a UPnP error (a fault carrying a
    ``UPnPError``).

    Attributes:
        code: the ``errorCode`` (a :class:`UpnpErrorCode` when known, else the int).
        description: the ``errorDescription``, "" when none was given (as the device
            gave it, but cut to 256 characters and control characters escaped).

    >>> error = UpnpActionError(718, "ConflictInMappingEntry")
    >>> error.code, str(error)
    (<UpnpErrorCode.CONFLICT_IN_MAPPING_ENTRY: 718>, 'UPnP error 718: ConflictInMappingEntry')
    """

    def __init__(self, code: int, description: str = "") -> None:
        self.code: UpnpErrorCode | int = _error_code(code)
        self.description = description
        text = f"UPnP error {code}"
        if description:
            text += f": {description}"
        super().__init__(text)


# -- URLs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpUrl:
    """A URL a device gave, checked: ``http://`` to an IPv4 literal.

    Attributes:
        host: the device's address (a name is refused: nothing is ever resolved).
        port: its TCP port (80 when the URL names none).
        target: the path and query, as sent in the request line.
    """

    host: IPv4Address
    port: int
    target: str

    def __post_init__(self) -> None:
        # The target goes into a request line: nothing may break out of it.
        if not isinstance(self.host, IPv4Address):
            raise LocalProtocolError(f"a URL's host is an IPv4Address, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise LocalProtocolError(f"a URL's port is an int, got {self.port!r}")
        if not 0 < self.port < 65536:
            raise LocalProtocolError(f"a URL's port is in 1..65535, got {self.port}")
        if not isinstance(self.target, str) or not _TARGET.fullmatch(self.target):
            raise LocalProtocolError(f"a URL's target is /printable-ASCII, got {self.target!r}")

    def __str__(self) -> str:
        return f"http://{self.host}:{self.port}{self.target}"


def parse_http_url(url: str) -> HttpUrl:
    """Check and split a URL a device gave (a LOCATION or a resolved controlURL).

    Raises:
        UpnpError: not printable ASCII, longer than :data:`UPNP_MAX_URL`, not ``http://``,
            with user information, a host that is not an IPv4 literal, or a bad port.
    """
    if not isinstance(url, str) or len(url) > UPNP_MAX_URL or not _URL_CHARS.fullmatch(url):
        raise UpnpError(f"a UPnP URL is printable ASCII of at most {UPNP_MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UpnpError(f"not a URL: {url!r}") from None
    if parts.scheme.lower() != "http":
        raise UpnpError(f"a UPnP URL is http://, got {url!r}")
    if "@" in parts.netloc:
        raise UpnpError(f"a UPnP URL carries no user information, got {url!r}")
    try:
        host = IPv4Address(parts.hostname or "")
    except ValueError:
        raise UpnpError(f"a UPnP URL's host is an IPv4 address, got {url!r}") from None
    if port == 0:
        raise UpnpError(f"a UPnP URL's port is not 0, got {url!r}")
    target = parts.path or "/"
    if not target.startswith("/"):
        raise UpnpError(f"not an absolute URL: {url!r}")
    if parts.query:
        target += "?" + parts.query
    return HttpUrl(host, 80 if port is None else port, target)


# -- HTTP ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """An HTTP response (or an SSDP answer's head), read by :class:`HttpResponseParser`.

    Attributes:
        status: the status code.
        reason: the reason phrase ("" when none), as sent (read as latin-1: it may hold
            C1 controls); bip's messages show it escaped.
        headers: ``(name, value)`` pairs in order, names lowercase, values stripped.
        body: the body, de-chunked.
    """

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None


def _parse_head(head: bytes) -> tuple[int, str, tuple[tuple[str, str], ...]]:
    """Parse a status line and headers (``head`` without its blank line)."""
    lines = [line[:-1] if line.endswith(b"\r") else line for line in head.split(b"\n")]
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise UpnpError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    if len(lines) - 1 > UPNP_MAX_HEADERS:
        raise UpnpError(f"more than {UPNP_MAX_HEADERS} header lines")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            # Also a folded line (RFC 7230 3.2.4 lets a client refuse obs-fold).
            raise UpnpError(f"not a header line: {line[:80]!r}")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise UpnpError(f"a control character in header {name.decode('ascii')!r}")
        headers.append((name.decode("ascii").lower(), value.decode("latin-1")))
    reason = (match.group(2) or b"").decode("latin-1").strip()
    if _BAD_VALUE.search(reason.encode("latin-1")):
        raise UpnpError("a control character in the reason phrase")
    return int(match.group(1)), reason, tuple(headers)


class _Mode(enum.Enum):
    HEAD = "head"
    LENGTH = "length"  # Content-Length bytes
    EOF = "eof"  # everything until the connection closes
    CHUNK_SIZE = "chunk size"
    CHUNK_DATA = "chunk data"
    CHUNK_END = "chunk end"  # the CRLF after a chunk's data
    TRAILER = "trailer"
    DONE = "done"


class HttpResponseParser:
    """Reads one HTTP/1.1 response from the bytes of a connection, as they come.

    The body is delimited by ``Transfer-Encoding: chunked``, else by ``Content-Length``,
    else by the end of the connection (RFC 7230 3.3.3); 1xx interim responses are skipped
    (at most 8), and 204 and 304 have no body. Lines may end in CRLF or a lone LF (RFC 7230
    3.5 allows a recipient to take either).

    Args:
        max_body: the largest body taken, in bytes.

    >>> parser = HttpResponseParser(max_body=100)
    >>> parser.receive_data(b"HTTP/1.1 200 OK\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n3\\r\\nab")
    >>> parser.receive_data(b"c\\r\\n0\\r\\n\\r\\n").body
    b'abc'
    """

    def __init__(self, *, max_body: int = UPNP_MAX_SOAP_RESPONSE) -> None:
        if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 0:
            raise LocalProtocolError(f"max_body is an int of at least 0, got {max_body!r}")
        self._max_body = max_body
        self._buffer = bytearray()
        self._mode = _Mode.HEAD
        self._interim = 0
        self._status = 0
        self._reason = ""
        self._headers: tuple[tuple[str, str], ...] = ()
        self._body = bytearray()
        self._left = 0  # bytes of the Content-Length or of the chunk still to come
        self._trailer = 0
        # Bytes at the buffer's start already searched for the line or head end awaited:
        # each search starts near there, not at byte 0, so a device dripping its head one
        # byte per segment costs linear work, not quadratic.
        self._scanned = 0
        self._head_started = False  # the status line began (no stray blank lines to strip)

    @property
    def complete(self) -> bool:
        """Whether the response has been read (later bytes are not looked at)."""
        return self._mode is _Mode.DONE

    def receive_data(self, data: bytes) -> HttpResponse | None:
        """Take the next bytes; ``b""`` says the connection closed. Returns the response
        once it is whole (bytes past its end are ignored), None while more must come.

        Raises:
            UpnpError: the bytes are not an HTTP/1.x response, exceed a bound, or the
                connection closed before the response ended.
            LocalProtocolError: the response was already returned.
        """
        if self._mode is _Mode.DONE:
            raise LocalProtocolError("the HTTP response was already read")
        if not data:
            return self._closed()
        self._buffer += data
        while not self.complete:
            if not self._step():
                return None
        return self._response()

    def _response(self) -> HttpResponse:
        self._buffer.clear()
        return HttpResponse(self._status, self._reason, self._headers, bytes(self._body))

    def _closed(self) -> HttpResponse:
        if self._mode is _Mode.EOF:
            self._mode = _Mode.DONE
            return self._response()
        if self._mode is _Mode.HEAD and not self._buffer and self._interim == 0:
            raise UpnpError("the connection closed without a response")
        raise UpnpError(f"the connection closed in the middle of the response ({self._mode.value})")

    def _take_body(self, chunk: bytes | bytearray) -> None:
        if len(self._body) + len(chunk) > self._max_body:
            raise UpnpError(f"an HTTP body of more than {self._max_body} bytes")
        self._body += chunk

    def _line(self, limit: int) -> bytes | None:
        end = self._buffer.find(b"\n", self._scanned)
        if end < 0:
            if len(self._buffer) > limit:
                raise UpnpError(f"an HTTP line of more than {limit} bytes")
            self._scanned = len(self._buffer)
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        self._scanned = 0
        return line[:-1] if line.endswith(b"\r") else line

    def _take_counted(self, *, then: _Mode) -> bool:
        """Take up to ``_left`` body bytes (a Content-Length body, or one chunk's data);
        once all are in, go on to ``then``. False when more bytes are needed."""
        take = min(self._left, len(self._buffer))
        self._take_body(self._buffer[:take])
        del self._buffer[:take]
        self._left -= take
        if self._left:
            return False
        self._mode = then
        return True

    def _step(self) -> bool:
        """Advance one state; False when more bytes are needed."""
        mode = self._mode
        if mode is _Mode.HEAD:
            return self._step_head()
        if mode is _Mode.LENGTH:
            return self._take_counted(then=_Mode.DONE)
        if mode is _Mode.EOF:
            self._take_body(self._buffer)
            self._buffer.clear()
            return False
        if mode is _Mode.CHUNK_SIZE:
            line = self._line(_MAX_CHUNK_LINE)
            if line is None:
                return False
            size = line.partition(b";")[0].strip(b" \t")
            if not 0 < len(size) <= 16 or not all(c in b"0123456789abcdefABCDEF" for c in size):
                raise UpnpError(f"not a chunk size: {line[:40]!r}")
            self._left = int(size, 16)
            if len(self._body) + self._left > self._max_body:
                raise UpnpError(f"an HTTP body of more than {self._max_body} bytes")
            self._mode = _Mode.CHUNK_DATA if self._left else _Mode.TRAILER
            return True
        if mode is _Mode.CHUNK_DATA:
            return self._take_counted(then=_Mode.CHUNK_END)
        if mode is _Mode.CHUNK_END:
            line = self._line(2)
            if line is None:
                return False
            if line:
                raise UpnpError("a chunk's data runs past its size")
            self._mode = _Mode.CHUNK_SIZE
            return True
        # TRAILER: header lines we do not need, until a blank one.
        line = self._line(UPNP_MAX_HEAD)
        if line is None:
            return False
        self._trailer += len(line) + 2  # with its line end
        if self._trailer > UPNP_MAX_HEAD:
            raise UpnpError(f"a chunked trailer of more than {UPNP_MAX_HEAD} bytes")
        if not line:
            self._mode = _Mode.DONE
        return True

    def _step_head(self) -> bool:
        if not self._head_started:
            # Stray blank lines before a status line are allowed (RFC 7230 3.5). Stripped
            # until the status line starts, not at every step: each strip copies the buffer.
            blank = len(self._buffer) - len(self._buffer.lstrip(b"\r\n"))
            del self._buffer[:blank]
            if not self._buffer:
                return False
            self._head_started = True
        # The bytes searched before hold no head end, but one (at most 4 bytes, CRLF CRLF)
        # may begin in their last 3 and end in the bytes just come.
        start = max(0, self._scanned - 3)
        match = _HEAD_END.search(self._buffer, start, UPNP_MAX_HEAD + 4)
        if match is None:
            if len(self._buffer) > UPNP_MAX_HEAD:
                raise UpnpError(f"an HTTP head of more than {UPNP_MAX_HEAD} bytes")
            self._scanned = len(self._buffer)
            return False
        head = bytes(self._buffer[: match.start()])
        del self._buffer[: match.end()]
        self._scanned = 0
        self._head_started = False  # an interim (1xx) response: the next head may follow
        status, reason, headers = _parse_head(head)
        if 100 <= status < 200:
            if status == 101:
                raise UpnpError("a device switched protocols (HTTP 101)")
            self._interim += 1
            if self._interim > _MAX_INTERIM:
                raise UpnpError(f"more than {_MAX_INTERIM} interim (1xx) responses")
            return True
        self._status, self._reason, self._headers = status, reason, headers
        if status in (204, 304):
            self._mode = _Mode.DONE
            return True
        codings = [v for k, v in headers if k == "transfer-encoding"]
        if codings:
            coding = ",".join(codings).strip().lower()
            if coding != "chunked":
                raise UpnpError(f"an unsupported transfer coding: {coding[:40]!r}")
            self._mode = _Mode.CHUNK_SIZE
            return True
        lengths = {v for k, v in headers if k == "content-length"}
        if not lengths:
            self._mode = _Mode.EOF
            return True
        if len(lengths) > 1:
            raise UpnpError("conflicting Content-Length headers")
        (length,) = lengths
        if not length.isascii() or not length.isdigit() or len(length) > 18:
            raise UpnpError(f"not a Content-Length: {length[:40]!r}")
        self._left = int(length)
        if self._left > self._max_body:
            raise UpnpError(f"an HTTP body of {self._left} bytes, more than {self._max_body}")
        self._mode = _Mode.LENGTH if self._left else _Mode.DONE
        return True


def parse_http_response(data: bytes, *, max_body: int = UPNP_MAX_SOAP_RESPONSE) -> HttpResponse:
    """Read a whole HTTP response: ``data`` is everything the connection carried until it
    closed.

    Raises:
        UpnpError: see :meth:`HttpResponseParser.receive_data`.

    >>> parse_http_response(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nhi").body
    b'hi'
    """
    parser = HttpResponseParser(max_body=max_body)
    if data:
        response = parser.receive_data(bytes(data))
        if response is not None:
            return response
    response = parser.receive_data(b"")
    assert response is not None  # a close either completes the response or raises
    return response


def _host_header(url: HttpUrl) -> str:
    return f"{url.host}:{url.port}"


def build_http_get(url: HttpUrl) -> bytes:
    """The GET request for a device description (``Connection: close``: one request per
    connection, as small routers like it).

    >>> build_http_get(parse_http_url("http://192.168.1.1:5000/rootDesc.xml")).splitlines()[:2]
    [b'GET /rootDesc.xml HTTP/1.1', b'Host: 192.168.1.1:5000']
    """
    return (
        f"GET {url.target} HTTP/1.1\r\n"
        f"Host: {_host_header(url)}\r\n"
        f"User-Agent: {_USER_AGENT}\r\n"
        "Accept: text/xml, application/xml\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii")


# -- SSDP ---------------------------------------------------------------------------------


def build_msearch(
    search_target: str, *, host: str = UPNP_SSDP_HOST, port: int = UPNP_SSDP_PORT, mx: int = 2
) -> bytes:
    """An SSDP ``M-SEARCH`` request (UDA 1.1 1.3.2).

    Args:
        search_target: the ``ST``: a device or service type, such as
            ``urn:schemas-upnp-org:device:InternetGatewayDevice:1``.
        host: the address the request goes to (the multicast group), for its HOST header.
        port: the port it goes to.
        mx: the most seconds a device may wait before it answers (1..5, UDA 1.1).

    Raises:
        LocalProtocolError: a bad argument.
    """
    if not isinstance(search_target, str) or not _SEARCH_TARGET.fullmatch(search_target):
        raise LocalProtocolError(f"a search target is printable ASCII, got {search_target!r}")
    if not isinstance(host, str) or not _SEARCH_TARGET.fullmatch(host):
        raise LocalProtocolError(f"a host is printable ASCII, got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise LocalProtocolError(f"a port is in 1..65535, got {port!r}")
    if isinstance(mx, bool) or not isinstance(mx, int) or not 1 <= mx <= 5:
        raise LocalProtocolError(f"MX is in 1..5, got {mx!r}")
    return (
        "M-SEARCH * HTTP/1.1\r\n"
        f"HOST: {host}:{port}\r\n"
        'MAN: "ssdp:discover"\r\n'
        f"MX: {mx}\r\n"
        f"ST: {search_target}\r\n"
        "\r\n"
    ).encode("ascii")


@dataclass(frozen=True, slots=True)
class SsdpResponse:
    """A device's answer to an M-SEARCH.

    Attributes:
        location: the URL of its description (checked only for being there).
        search_target: the ``ST`` it answers.
        usn: its unique service name ("" when it gave none).
        max_age: seconds the answer stays valid, from ``CACHE-CONTROL`` (None when absent
            or unreadable: the header only informs).
    """

    location: str
    search_target: str
    usn: str
    max_age: int | None


def _max_age(cache_control: str | None) -> int | None:
    if cache_control is None:
        return None
    for directive in cache_control.split(","):
        name, _, value = directive.partition("=")
        if name.strip().lower() == "max-age":
            value = value.strip().strip('"')
            return int(value) if _DECIMAL.fullmatch(value) else None
    return None


def parse_ssdp_response(data: bytes) -> SsdpResponse:
    """Read an answer to an M-SEARCH (HTTP over UDP: a 200 status, then headers).

    Raises:
        UpnpError: longer than :data:`UPNP_MAX_SSDP_RESPONSE`, not a 200 HTTP/1.x response
            with a whole head, or without LOCATION or ST.
    """
    data = bytes(data)
    if len(data) > UPNP_MAX_SSDP_RESPONSE:
        raise UpnpError(f"an SSDP answer of more than {UPNP_MAX_SSDP_RESPONSE} bytes")
    match = _HEAD_END.search(data)
    if match is None:
        raise UpnpError("an SSDP answer without the blank line that ends its head")
    status, reason, headers = _parse_head(data[: match.start()])
    if status != 200:
        raise UpnpError(f"an SSDP answer with status {status} {_device_text(reason)}".rstrip())
    head = HttpResponse(status, reason, headers, b"")
    location = head.header("location")
    search_target = head.header("st")
    if not location:
        raise UpnpError("an SSDP answer without LOCATION")
    if not search_target:
        raise UpnpError("an SSDP answer without ST")
    return SsdpResponse(
        location, search_target, head.header("usn") or "", _max_age(head.header("cache-control"))
    )


# -- XML ----------------------------------------------------------------------------------


class _BoundedTreeBuilder(ET.TreeBuilder):
    """A tree builder that refuses to nest deeper than :data:`_MAX_XML_DEPTH`."""

    def __init__(self) -> None:
        super().__init__()
        self._depth = 0

    def start(self, tag: str, attrs: dict[str, str], /) -> ET.Element:
        self._depth += 1
        if self._depth > _MAX_XML_DEPTH:
            raise UpnpError(f"XML nested more than {_MAX_XML_DEPTH} deep")
        return super().start(tag, attrs)

    def end(self, tag: str, /) -> ET.Element:
        self._depth -= 1
        return super().end(tag)


def _repair_xml(text: str) -> str:
    """The light repairs real devices' XML needs, as the lenient parsers of libtorrent and
    miniupnpc get by without them: whitespace or a byte order mark before the XML
    declaration, bytes after the closing root tag (NULs, a second document, junk), and a
    lone ``&`` that starts no entity or character reference (``AT&T`` in a name)."""
    text = text.lstrip("\ufeff \t\r\n")
    first = _FIRST_TAG.search(text)
    if first is not None:
        end = text.rfind(f"</{first.group(1)}")
        close = text.find(">", end) if end >= 0 else -1
        if close >= 0:
            text = text[: close + 1]
    return _LONE_AMPERSAND.sub("&amp;", text)


def _feed_xml(text: str) -> ET.Element:
    parser = ET.XMLParser(target=_BoundedTreeBuilder())
    parser.feed(text)
    return parser.close()


def _parse_xml(document: bytes, limit: int, what: str) -> ET.Element:
    if len(document) > limit:
        raise UpnpError(f"{what} of more than {limit} bytes")
    try:
        text = bytes(document).decode("utf-8")
    except UnicodeDecodeError:
        # An old router's ISO-8859-1 (its friendly name, say): every byte is a character.
        text = bytes(document).decode("latin-1")
    upper = text.upper()
    if "<!DOCTYPE" in upper or "<!ENTITY" in upper:
        raise UpnpError(f"{what} with a DOCTYPE or ENTITY declaration")
    # Fed as text, expat reads UTF-8 whatever the XML declaration says: the check above saw
    # the characters the parser sees (no UTF-16 or EBCDIC document slips a DOCTYPE by).
    try:
        return _feed_xml(text)
    except ET.ParseError as error:
        first_error = error
    # Once more after light repairs. They only cut text and spell a lone "&" as "&amp;":
    # no declaration can appear, and the bound holds for what is parsed again.
    repaired = _repair_xml(text)
    if repaired == text or len(repaired) > limit:
        raise UpnpError(f"{what} is not well-formed XML: {first_error}") from None
    try:
        return _feed_xml(repaired)
    except ET.ParseError:
        raise UpnpError(f"{what} is not well-formed XML: {first_error}") from None


def _local(tag: str) -> str:
    """An element's name without its namespace: devices disagree on namespaces."""
    return tag.rpartition("}")[2]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    for child in element:
        if _local(child.tag) == name:
            return child
    return None


def _child_text(element: ET.Element, name: str) -> str:
    child = _child(element, name)
    return "" if child is None or child.text is None else child.text.strip()


def _device_text(text: str) -> str:
    """A device's own words (its friendly name, a fault's description, an HTTP reason
    phrase) as :func:`~bip_handshake.printable_text` shows them, at most 256 characters:
    a ``&#10;`` in a friendly name, or NEL in a latin-1 reason phrase, forges no log line."""
    return printable_text(text, _MAX_DEVICE_TEXT)


def _http_error(response: HttpResponse) -> UpnpError:
    """An answer's HTTP error status, its reason phrase escaped (:func:`_device_text`): a
    reason phrase is read as latin-1, so it may hold C1 controls such as NEL."""
    return UpnpError(f"HTTP {response.status} {_device_text(response.reason)}".rstrip())


# -- the description ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpnpDevice:
    """An Internet Gateway Device, as its description shows it.

    Attributes:
        location: the URL of its description (the SSDP answer's LOCATION).
        service_type: the service that maps ports, such as
            ``urn:schemas-upnp-org:service:WANIPConnection:1``.
        control_url: the absolute URL the SOAP actions are POSTed to.
        friendly_name: the name it gives itself (at most 256 characters kept, control
            and format characters escaped: ``\\n``, a backslash doubled), None when none.
    """

    location: str
    service_type: str
    control_url: str
    friendly_name: str | None = None


_SERVICE_RANK: Final = {service.lower(): rank for rank, service in enumerate(UPNP_SERVICE_TYPES)}


def parse_device_services(document: bytes, location: str) -> tuple[UpnpDevice, ...]:
    """Every port mapping service a device description offers, the most wanted first.

    Element names are matched by local name (namespaces ignored: devices get them wrong).
    A WANIPConnection:2, :1 or WANPPPConnection:1 ``service`` is taken wherever the
    description lists it (as libtorrent does: not only under a device typed
    InternetGatewayDevice, which some routers name otherwise); they are ranked by type, then
    in document order, duplicates dropped, at most :data:`UPNP_MAX_SERVICES`. Each
    ``controlURL`` is resolved against ``URLBase`` when the description has one, else
    against ``location``; it must stay on ``location``'s host (another port is fine), and a
    service whose URL does not is skipped. The friendly name is the root device's.

    Args:
        document: the description, as the device sent it.
        location: where it came from.

    Raises:
        UpnpError: a bad ``location``, a document too large, not XML (or with a DOCTYPE),
            without such a service, or with only control URLs that are bad or on another
            host.

    >>> document = (
    ...     b"<root><device><friendlyName>box</friendlyName><serviceList>"
    ...     b"<service><serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1"
    ...     b"</serviceType><controlURL>/ppp</controlURL></service>"
    ...     b"<service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1"
    ...     b"</serviceType><controlURL>/ip</controlURL></service>"
    ...     b"</serviceList></device></root>"
    ... )
    >>> [s.control_url for s in parse_device_services(document, "http://192.168.1.1:80/d.xml")]
    ['http://192.168.1.1:80/ip', 'http://192.168.1.1:80/ppp']
    """
    origin = parse_http_url(location)
    root = _parse_xml(document, UPNP_MAX_DESCRIPTION, "a device description")
    if _local(root.tag) != "root":
        raise UpnpError(
            f"a device description's root is <root>, got <{_device_text(_local(root.tag))}>"
        )
    url_base = _child_text(root, "URLBase")
    top = _child(root, "device")
    friendly_name = None if top is None else _device_text(_child_text(top, "friendlyName")) or None
    found: list[tuple[int, int, UpnpDevice]] = []
    seen: set[tuple[str, str]] = set()
    refused: UpnpError | None = None
    for index, service in enumerate(e for e in root.iter() if _local(e.tag) == "service"):
        service_type = _child_text(service, "serviceType")
        rank = _SERVICE_RANK.get(service_type.lower())
        control = _child_text(service, "controlURL")
        if rank is None or not control or not _SERVICE_TYPE.fullmatch(service_type):
            continue
        try:
            control_url = _control_url(url_base or location, control, origin)
        except UpnpError as error:
            refused = error
            continue
        key = (service_type.lower(), control_url)
        if key not in seen:
            seen.add(key)
            device = UpnpDevice(location, service_type, control_url, friendly_name)
            found.append((rank, index, device))
    if not found:
        if refused is not None:
            raise refused
        raise UpnpError("no WANIPConnection or WANPPPConnection service in a device description")
    found.sort(key=lambda item: (item[0], item[1]))
    return tuple(device for _, _, device in found[:UPNP_MAX_SERVICES])


def _control_url(base: str, control: str, origin: HttpUrl) -> str:
    try:
        resolved = urljoin(base, control)
    except ValueError:
        raise UpnpError(f"not a control URL: {control[:80]!r}") from None
    control_url = parse_http_url(resolved)
    if control_url.host != origin.host:
        # Else a LAN host answering a search could make us POST to any host.
        raise UpnpError(f"a control URL on another host than the description: {resolved!r}")
    return str(control_url)


def parse_device_description(document: bytes, location: str) -> UpnpDevice:
    """The port mapping service a device description offers (the first of
    :func:`parse_device_services`: WANIPConnection:2, else :1, else WANPPPConnection:1).

    Args:
        document: the description, as the device sent it.
        location: where it came from.

    Raises:
        UpnpError: see :func:`parse_device_services`.
    """
    return parse_device_services(document, location)[0]


# -- SOAP ---------------------------------------------------------------------------------


def _soap_text(value: str) -> str:
    if _XML_ILLEGAL.search(value):
        raise LocalProtocolError(f"a SOAP argument cannot carry {value!r} in XML")
    # A CR would come back as LF (XML end-of-line handling): keep it as a reference.
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def build_soap_request(
    control_url: str | HttpUrl,
    service_type: str,
    action: str,
    arguments: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A SOAP action POSTed to a device (UDA 1.1 3.2.1): the HTTP request with its envelope.

    Args:
        control_url: the service's control URL.
        service_type: the service's type: the namespace of the action and its SOAPAction.
        action: the action's name, such as ``AddPortMapping``.
        arguments: ``(name, value)`` in-arguments in the order the service defines them;
            the values are XML-escaped.

    Raises:
        LocalProtocolError: a bad argument (a name that is not an XML name, a service type
            that is not a UPnP one, a value XML cannot carry).
        UpnpError: a bad control URL.

    >>> request = build_soap_request(
    ...     "http://192.168.1.1:5000/ctl/IPConn",
    ...     "urn:schemas-upnp-org:service:WANIPConnection:1",
    ...     "GetExternalIPAddress",
    ... )
    >>> [line for line in request.splitlines() if line.startswith(b"SOAPAction")]
    [b'SOAPAction: "urn:schemas-upnp-org:service:WANIPConnection:1#GetExternalIPAddress"']
    """
    url = control_url if isinstance(control_url, HttpUrl) else parse_http_url(control_url)
    if not isinstance(service_type, str) or not _SERVICE_TYPE.fullmatch(service_type):
        raise LocalProtocolError(f"not a UPnP service type: {service_type!r}")
    if not isinstance(action, str) or not _XML_NAME.fullmatch(action):
        raise LocalProtocolError(f"an action's name is an XML name, got {action!r}")
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\r\n',
        f'<s:Envelope xmlns:s="{_SOAP_ENVELOPE_NS}" s:encodingStyle="{_SOAP_ENCODING}">',
        f'<s:Body><u:{action} xmlns:u="{service_type}">',
    ]
    for name, value in arguments:
        if not isinstance(name, str) or not _XML_NAME.fullmatch(name):
            raise LocalProtocolError(f"an argument's name is an XML name, got {name!r}")
        if not isinstance(value, str):
            raise LocalProtocolError(f"argument {name}'s value is a str, got {value!r}")
        parts.append(f"<{name}>{_soap_text(value)}</{name}>")
    parts.append(f"</u:{action}></s:Body></s:Envelope>\r\n")
    body = "".join(parts).encode("utf-8")
    head = (
        f"POST {url.target} HTTP/1.1\r\n"
        f"Host: {_host_header(url)}\r\n"
        f"User-Agent: {_USER_AGENT}\r\n"
        'Content-Type: text/xml; charset="utf-8"\r\n'
        f"Content-Length: {len(body)}\r\n"
        f'SOAPAction: "{service_type}#{action}"\r\n'
        "Connection: close\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


def parse_soap_response(response: HttpResponse, action: str) -> dict[str, str]:
    """The out-arguments of a SOAP action's answer, by local name (values stripped).

    A fault carrying a ``UPnPError`` raises :class:`UpnpActionError` whatever the HTTP
    status (UDA says 500; some devices say 200).

    Args:
        response: the device's HTTP response.
        action: the action asked, whose ``<actionResponse>`` element is looked for.

    Raises:
        UpnpActionError: the device answered with a UPnP error.
        UpnpError: any other failure: an HTTP error status, a body that is not a SOAP
            envelope (or too large, or with a DOCTYPE), no ``<actionResponse>``.

    >>> body = (
    ...     b'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
    ...     b'<s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring>'
    ...     b'<detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>725'
    ...     b"</errorCode><errorDescription>OnlyPermanentLeasesSupported</errorDescription>"
    ...     b"</UPnPError></detail></s:Fault></s:Body></s:Envelope>"
    ... )
    >>> parse_soap_response(HttpResponse(500, "Internal Server Error", (), body), "AddPortMapping")
    Traceback (most recent call last):
    ...
    bip_handshake._upnp.UpnpActionError: UPnP error 725: OnlyPermanentLeasesSupported
    """
    try:
        body = _soap_body(response.body)
    except UpnpError:
        _raise_raw_fault(response.body)
        if response.status != 200:
            raise _http_error(response) from None
        raise
    fault = _child(body, "Fault")
    if fault is not None:
        _raise_fault(fault)
    if response.status != 200:
        raise _http_error(response)
    wanted = f"{action}Response".lower()
    for element in body:
        if _local(element.tag).lower() == wanted:
            values: dict[str, str] = {}
            for argument in element:
                values.setdefault(
                    _local(argument.tag), "" if argument.text is None else argument.text.strip()
                )
            return values
    raise UpnpError(f"a SOAP answer without <{action}Response>")


def check_soap_success(response: HttpResponse) -> None:
    """Whether an action whose answer carries nothing we need (AddPortMapping,
    DeletePortMapping) succeeded.

    An HTTP 200 without a SOAP fault is a success whatever its body, as libtorrent and
    miniupnpc read it: some routers answer an empty body, HTML, or an envelope without the
    ``<actionResponse>``. A fault carrying a ``UPnPError`` is a refusal whatever the status.

    Raises:
        UpnpActionError: the device answered with a UPnP error.
        UpnpError: another HTTP status than 200 without a UPnP error, or a fault without a
            readable ``UPnPError``.

    >>> check_soap_success(HttpResponse(200, "OK", (), b"<html>done</html>"))
    >>> check_soap_success(HttpResponse(500, "Internal Server Error", (), b""))
    Traceback (most recent call last):
    ...
    bip_handshake._upnp.UpnpError: HTTP 500 Internal Server Error
    """
    try:
        body = _soap_body(response.body)
    except UpnpError:
        _raise_raw_fault(response.body)
        if response.status == 200:
            return
        raise _http_error(response) from None
    fault = _child(body, "Fault")
    if fault is not None:
        _raise_fault(fault)
    if response.status != 200:
        raise _http_error(response)


def _soap_body(document: bytes) -> ET.Element:
    root = _parse_xml(document, UPNP_MAX_SOAP_RESPONSE, "a SOAP answer")
    if _local(root.tag) != "Envelope":
        raise UpnpError(
            f"a SOAP answer's root is <Envelope>, got <{_device_text(_local(root.tag))}>"
        )
    body = _child(root, "Body")
    if body is None:
        raise UpnpError("a SOAP answer without <Body>")
    return body


_RAW_ERROR_CODE: Final = re.compile(rb"<(?:[\w.-]+:)?errorCode>\s*([0-9]{1,9})\s*<")


def _raise_raw_fault(body: bytes) -> None:
    """A fault in a body that does not parse even mended (an unbound prefix...) is still a
    refusal: its ``errorCode`` is looked for in the (size-bounded) bytes, as libtorrent's
    lenient parser finds it."""
    found = _RAW_ERROR_CODE.search(body[:UPNP_MAX_SOAP_RESPONSE])
    if found is not None:
        raise UpnpActionError(int(found.group(1)))


def _raise_fault(fault: ET.Element) -> None:
    for element in fault.iter():
        if _local(element.tag) == "UPnPError":
            code = _child_text(element, "errorCode")
            if not _DECIMAL.fullmatch(code):
                raise UpnpError(f"a UPnPError without a readable errorCode: {code[:20]!r}")
            raise UpnpActionError(int(code), _device_text(_child_text(element, "errorDescription")))
    raise UpnpError(f"a SOAP fault without a UPnPError: {_child_text(fault, 'faultstring')[:80]!r}")


# -- the IGD actions ----------------------------------------------------------------------


def _check_port(name: str, value: object, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 65536:
        raise LocalProtocolError(f"{name} is an int in 0..65535, got {value!r}")
    if value == 0 and not allow_zero:
        raise LocalProtocolError(f"{name} is in 1..65535, got 0")
    return value


def _check_protocol(protocol: object) -> MappingProtocol:
    if not isinstance(protocol, MappingProtocol):
        raise LocalProtocolError(f"a protocol is a MappingProtocol, got {protocol!r}")
    return protocol


def build_get_external_address(device: UpnpDevice) -> bytes:
    """The GetExternalIPAddress request: what is the router's address on the internet?"""
    return build_soap_request(device.control_url, device.service_type, "GetExternalIPAddress")


def parse_external_address(response: HttpResponse) -> IPv4Address | None:
    """The address a GetExternalIPAddress answer gives; None when the router has none yet
    (an empty value, or 0.0.0.0: it is not connected).

    Raises:
        UpnpActionError: the router answered with a UPnP error.
        UpnpError: any other bad answer, or a value that is not an IPv4 address.
    """
    values = parse_soap_response(response, "GetExternalIPAddress")
    text = values.get("NewExternalIPAddress")
    if text is None:
        raise UpnpError("a GetExternalIPAddress answer without NewExternalIPAddress")
    if not text:
        return None
    try:
        address = IPv4Address(text)
    except ValueError:
        raise UpnpError(f"not an IPv4 address: {text[:40]!r}") from None
    return None if address == IPv4Address(0) else address


def build_add_port_mapping(
    device: UpnpDevice,
    *,
    protocol: MappingProtocol,
    external_port: int,
    internal_port: int,
    internal_client: IPv4Address,
    description: str,
    lease_duration: int,
) -> bytes:
    """The AddPortMapping request: forward ``external_port`` to our ``internal_port``.

    Args:
        device: the gateway.
        protocol: TCP or UDP.
        external_port: the port on the router's external address (1..65535).
        internal_port: our port (1..65535).
        internal_client: our address as the router sees it.
        description: ``NewPortMappingDescription``, shown in the router's pages.
        lease_duration: seconds the mapping lives; 0 asks for a permanent one.

    Raises:
        LocalProtocolError: a bad argument.
    """
    _check_protocol(protocol)
    _check_port("an external port", external_port)
    _check_port("an internal port", internal_port)
    if not isinstance(internal_client, IPv4Address):
        raise LocalProtocolError(f"an internal client is an IPv4Address, got {internal_client!r}")
    if not isinstance(description, str):
        raise LocalProtocolError(f"a description is a str, got {description!r}")
    if isinstance(lease_duration, bool) or not isinstance(lease_duration, int):
        raise LocalProtocolError(f"a lease duration is an int, got {lease_duration!r}")
    if not 0 <= lease_duration <= 0xFFFF_FFFF:
        raise LocalProtocolError(f"a lease duration is in 0..2**32-1, got {lease_duration}")
    return build_soap_request(
        device.control_url,
        device.service_type,
        "AddPortMapping",
        [
            ("NewRemoteHost", ""),
            ("NewExternalPort", str(external_port)),
            ("NewProtocol", protocol.name),
            ("NewInternalPort", str(internal_port)),
            ("NewInternalClient", str(internal_client)),
            ("NewEnabled", "1"),
            ("NewPortMappingDescription", description),
            ("NewLeaseDuration", str(lease_duration)),
        ],
    )


def build_delete_port_mapping(
    device: UpnpDevice, *, protocol: MappingProtocol, external_port: int
) -> bytes:
    """The DeletePortMapping request for the mapping of ``external_port``.

    Raises:
        LocalProtocolError: a bad argument.
    """
    return _request_for_entry(device, "DeletePortMapping", protocol, external_port)


def build_get_specific_port_mapping_entry(
    device: UpnpDevice, *, protocol: MappingProtocol, external_port: int
) -> bytes:
    """The GetSpecificPortMappingEntry request: who does the router forward
    ``external_port`` to?

    Raises:
        LocalProtocolError: a bad argument.
    """
    return _request_for_entry(device, "GetSpecificPortMappingEntry", protocol, external_port)


def _request_for_entry(
    device: UpnpDevice, action: str, protocol: MappingProtocol, external_port: int
) -> bytes:
    """An action on the router's entry for ``external_port`` (its key: no remote host,
    the port, the protocol)."""
    _check_protocol(protocol)
    _check_port("an external port", external_port)
    return build_soap_request(
        device.control_url,
        device.service_type,
        action,
        [
            ("NewRemoteHost", ""),
            ("NewExternalPort", str(external_port)),
            ("NewProtocol", protocol.name),
        ],
    )


@dataclass(frozen=True, slots=True)
class UpnpPortMappingEntry:
    """A row of a router's port mapping table, as GetSpecificPortMappingEntry tells it.

    Attributes:
        internal_port: the port it forwards to.
        internal_client: the host it forwards to, None when not given as an IPv4 address.
        enabled: whether it forwards, None when the router did not say clearly.
        description: its ``NewPortMappingDescription`` (at most 256 characters kept,
            control characters escaped).
        lease_duration: its seconds of lease (what is left of it, on most routers; 0 for
            a permanent one), None when not given or unreadable.
    """

    internal_port: int
    internal_client: IPv4Address | None
    enabled: bool | None
    description: str
    lease_duration: int | None


_BOOLEANS: Final = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def parse_port_mapping_entry(response: HttpResponse) -> UpnpPortMappingEntry:
    """The entry a GetSpecificPortMappingEntry answer gives.

    Raises:
        UpnpActionError: the router answered with a UPnP error (714 NoSuchEntryInArray: it
            holds no such mapping).
        UpnpError: any other bad answer, or no readable ``NewInternalPort``.

    >>> body = (
    ...     b"<Envelope><Body><GetSpecificPortMappingEntryResponse>"
    ...     b"<NewInternalPort>6881</NewInternalPort>"
    ...     b"<NewInternalClient>192.168.1.20</NewInternalClient><NewEnabled>1</NewEnabled>"
    ...     b"<NewPortMappingDescription>bip</NewPortMappingDescription>"
    ...     b"<NewLeaseDuration>1799</NewLeaseDuration>"
    ...     b"</GetSpecificPortMappingEntryResponse></Body></Envelope>"
    ... )
    >>> entry = parse_port_mapping_entry(HttpResponse(200, "OK", (), body))
    >>> entry.internal_client, entry.internal_port, entry.lease_duration
    (IPv4Address('192.168.1.20'), 6881, 1799)
    """
    values = parse_soap_response(response, "GetSpecificPortMappingEntry")
    port_text = values.get("NewInternalPort", "")
    if not _DECIMAL.fullmatch(port_text) or not 0 < int(port_text) < 65536:
        raise UpnpError(f"a mapping entry without a readable NewInternalPort: {port_text[:20]!r}")
    try:
        client: IPv4Address | None = IPv4Address(values.get("NewInternalClient", ""))
    except ValueError:
        client = None
    lease_text = values.get("NewLeaseDuration", "")
    lease = int(lease_text) if _UINT32.fullmatch(lease_text) else None
    if lease is not None and lease > 0xFFFF_FFFF:
        lease = None
    return UpnpPortMappingEntry(
        int(port_text),
        client,
        _BOOLEANS.get(values.get("NewEnabled", "").lower()),
        _device_text(values.get("NewPortMappingDescription", "")),
        lease,
    )


# -- events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpnpDeviceFound(PortMappingEvent):
    """A gateway was found, and its port mapping service will be used (beside those of
    the other gateways found).

    Attributes:
        device: the gateway.
    """

    device: UpnpDevice


@dataclass(frozen=True, slots=True)
class UpnpDiscoveryFailed(PortMappingEvent):
    """A search found no usable gateway; the next one starts at ``retry_at``.

    Attributes:
        retry_at: when the next search starts.
    """

    retry_at: float


@dataclass(frozen=True, slots=True)
class UpnpAddressChanged(PortMappingEvent):
    """A gateway's external address was learnt, or changed.

    Attributes:
        address: the new address.
        device: the gateway that told it (None only where built by hand).
    """

    address: IPv4Address
    device: UpnpDevice | None = None


@dataclass(frozen=True, slots=True)
class UpnpAddressFailed(PortMappingEvent):
    """Asking a gateway's external address failed; it is asked again at ``retry_at``.

    Attributes:
        result: the UPnP error code, or None (no answer, a bad one, or no address yet).
        retry_at: when it is asked again.
        device: the gateway asked (None only where built by hand).
    """

    result: UpnpErrorCode | int | None
    retry_at: float
    device: UpnpDevice | None = None


@dataclass(frozen=True, slots=True)
class UpnpDeviceLost(PortMappingEvent):
    """A gateway stopped answering: its grants are deemed gone (the other gateways' stand),
    and a new search starts.

    Attributes:
        device: the gateway lost.
        reason: what its last failure was.
    """

    device: UpnpDevice
    reason: str


@dataclass(frozen=True, slots=True)
class UpnpPortMapped(PortMapped):
    """:class:`~bip_handshake.PortMapped` on one gateway: each gateway in use grants each
    mapping on its own, and says so with one of these (a plain renewal is silent).

    Attributes:
        mapping: the mapping as that gateway now grants it.
        device: the gateway.
    """

    device: UpnpDevice


@dataclass(frozen=True, slots=True)
class UpnpMappingFailed(MappingFailed):
    """:class:`~bip_handshake.MappingFailed` on one gateway: its request (or renewal) of
    the mapping failed, or its grant lapsed; the other gateways' grants are not affected.

    Attributes:
        mapping: the mapping as that gateway holds it (``external_port`` None unless an
            earlier grant still stands).
        result: the gateway's UPnP error code, or None when it did not answer.
        retry_at: when the mapping is requested of it again.
        device: the gateway.
    """

    device: UpnpDevice
