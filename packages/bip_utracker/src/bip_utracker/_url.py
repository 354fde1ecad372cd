"""``udp://host:port/path?query`` tracker URLs.

The host and port say where to send datagrams; the path and query (BEP 41) travel inside every
announce request as URLData, so one tracker address can serve several "announce URLs" (private
trackers put a passkey there). Parsing does not resolve names: :class:`TrackerUrl` keeps the host
as text and says whether it is an IP literal, and the trio shell resolves the rest.

>>> url = parse_tracker_url("udp://tracker.example.com:80/dir?a=b&c=d")
>>> url.host, url.port, url.url_data
('tracker.example.com', 80, b'/dir?a=b&c=d')
>>> parse_tracker_url("udp://[::1]:6969").ip_address
IPv6Address('::1')
>>> str(parse_tracker_url("UDP://127.0.0.1:6969/announce#fragment"))
'udp://127.0.0.1:6969/announce'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from urllib.parse import urlsplit

from ._errors import LocalProtocolError

__all__ = ["MAX_URL_LENGTH", "TrackerUrl", "parse_tracker_url"]

MAX_URL_LENGTH = 2048
"""The longest URL accepted; its URLData then still fits in one announce datagram."""

# A DNS name: dot-separated labels of letters, digits and hyphens (not at either end).
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


@dataclass(frozen=True, slots=True)
class TrackerUrl:
    """A parsed UDP tracker URL.

    Attributes:
        host: a DNS name, or an IP address in text form (IPv6 without brackets).
        port: the tracker's UDP port, 1..65535.
        url_data: the path and query, as BEP 41 URLData (empty when the URL has no path).
    """

    host: str
    port: int
    url_data: bytes = b""

    @property
    def ip_address(self) -> IPv4Address | IPv6Address | None:
        """The host as an address when it is an IP literal, else None (a name to resolve).

        >>> parse_tracker_url("udp://localhost:1").ip_address is None
        True
        """
        try:
            return ip_address(self.host)
        except ValueError:
            return None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"udp://{host}:{self.port}{self.url_data.decode('utf-8', 'replace')}"


def parse_tracker_url(url: str) -> TrackerUrl:
    """Parse a ``udp://`` tracker URL; anything else raises :class:`LocalProtocolError`.

    The scheme must be ``udp`` (any case), the port is required (UDP trackers have no default
    port), user information is refused, and a fragment is dropped. The path and query are kept
    byte for byte (as UTF-8) as the URLData; a URL without a path has empty URLData.

    >>> parse_tracker_url("udp://127.0.0.1/announce")
    Traceback (most recent call last):
    ...
    bip_utracker._errors.LocalProtocolError: a UDP tracker URL needs a port: 'udp://127.0.0.1/announce'
    """
    if not isinstance(url, str):
        raise LocalProtocolError(f"a tracker URL is a str, got {type(url).__name__}")
    if len(url) > MAX_URL_LENGTH:
        raise LocalProtocolError(f"a tracker URL is at most {MAX_URL_LENGTH} characters")
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise LocalProtocolError(f"a tracker URL has no spaces or control characters: {url!r}")
    # A lone surrogate (say, a command-line argument that was not UTF-8) has no UTF-8 form,
    # so there would be no URLData to send: refuse it here, not at the encode() at the end.
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError(f"a tracker URL is not valid Unicode text: {url!r}") from None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise LocalProtocolError(f"not a tracker URL: {url!r} ({error})") from None
    if parts.scheme.lower() != "udp":
        raise LocalProtocolError(f"a UDP tracker URL starts with udp://, got {url!r}")
    if "@" in parts.netloc:
        raise LocalProtocolError(f"a UDP tracker URL has no user information: {url!r}")
    host = parts.hostname
    if not host:
        raise LocalProtocolError(f"a UDP tracker URL needs a host: {url!r}")
    if port is None:
        raise LocalProtocolError(f"a UDP tracker URL needs a port: {url!r}")
    if port == 0:
        raise LocalProtocolError(f"a UDP tracker port is 1..65535: {url!r}")
    bracketed = parts.netloc.startswith("[")
    host = check_host(host, bracketed, url)
    path_and_query = parts.path + (f"?{parts.query}" if parts.query or _has_query(url) else "")
    return TrackerUrl(host, port, path_and_query.encode("utf-8"))


def _has_query(url: str) -> bool:
    """Whether *url* has a ``?`` before any fragment (an empty query is still kept).

    >>> _has_query("udp://a:1/x?"), _has_query("udp://a:1/x#?")
    (True, False)
    """
    return "?" in url.partition("#")[0]


def check_host(host: str, bracketed: bool, url: str) -> str:
    """The host as *url* names it: a checked IP literal (IPv6 when *bracketed*) or DNS name.

    >>> check_host("Example.ORG", False, "udp://Example.ORG:1")
    'Example.ORG'
    >>> check_host("::FFFF:1.2.3.4", True, "udp://[::FFFF:1.2.3.4]:1")
    '::ffff:102:304'
    """
    if bracketed:
        try:
            address = IPv6Address(host)
        except ValueError:
            raise LocalProtocolError(f"not an IPv6 address in brackets: {url!r}") from None
        if address.scope_id is not None:
            raise LocalProtocolError(f"a scoped IPv6 address is not supported: {url!r}")
        return str(address)
    try:
        return str(IPv4Address(host))
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(host) or len(host) > 253 or host.replace(".", "").isdigit():
        raise LocalProtocolError(f"not a host name or IP address: {host!r} in {url!r}")
    return host
