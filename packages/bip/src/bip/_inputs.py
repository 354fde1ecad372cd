"""Reading what users type: torrent files, magnet links, info-hashes, host:port pairs.

Every function here turns bad input into a :class:`~bip._errors.CLIError` (or lets a
library's own error through, which ``main`` words as well), so commands never see a bare
``ValueError`` from a typo.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from ipaddress import ip_address
from typing import Literal
from urllib.parse import urlsplit

from bip_metainfo import (
    DEFAULT_MAX_TORRENT_SIZE,
    InfoHash,
    MagnetError,
    MagnetLink,
    Metainfo,
    MetainfoError,
    MutableLinkError,
    MutableTorrentLink,
)
from bip_utracker import LocalProtocolError, parse_tracker_url

from ._client._http_tracker_codec import parse_http_tracker_url, shown_url
from ._errors import CLIError

__all__ = [
    "WHOLE_NUMBER",
    "check_tracker_url",
    "check_url",
    "info_hash_of",
    "load_mutable_link",
    "load_source",
    "load_torrent",
    "parse_endpoint",
    "parse_info_hash",
    "parse_port",
    "tracker_kind",
]


def load_torrent(path: str) -> Metainfo:
    """Read and validate the .torrent file at ``path`` (``-`` reads standard input).

    Raises:
        CLIError: ``path`` is a directory, or not a torrent at all.
        MetainfoError: the torrent is malformed (the library names the defect).
        OSError: the file cannot be read (missing, no permission).
    """
    if path == "-":
        data = sys.stdin.buffer.read(DEFAULT_MAX_TORRENT_SIZE + 1)
        if len(data) > DEFAULT_MAX_TORRENT_SIZE:
            raise CLIError(f"standard input holds more than {DEFAULT_MAX_TORRENT_SIZE} bytes")
        return _parse(data, "standard input")
    if os.path.isdir(path):
        raise CLIError(f"{path}: is a directory, not a .torrent file")
    try:
        return Metainfo.from_file(path)
    except MetainfoError as error:
        raise CLIError(f"{path}: not a valid torrent: {error}") from error


def _parse(data: bytes, where: str) -> Metainfo:
    try:
        return Metainfo.from_bytes(data)
    except MetainfoError as error:
        raise CLIError(f"{where}: not a valid torrent: {error}") from error


def load_source(text: str) -> Metainfo | MagnetLink:
    """A torrent file, a magnet link, or a bare info-hash (which becomes a magnet link).

    A magnet link is read strictly: a user who typed a malformed parameter wants to hear
    about it, not to have it skipped silently.

    Raises:
        CLIError: a malformed magnet link, or a path that does not exist and is not an
            info-hash either.
        MetainfoError, OSError: as for :func:`load_torrent`.
    """
    if text[:7].lower() == "magnet:":
        try:
            return MagnetLink.parse(text, strict=True)
        except ValueError as error:  # MagnetError, or an InfoHash refusing its bytes
            raise CLIError(f"bad magnet link: {error}") from error
    if text != "-" and not os.path.exists(text):
        try:
            return MagnetLink.from_info_hash(InfoHash.parse(text))
        except ValueError:
            pass  # not an info-hash either: report the missing file below
        raise CLIError(f"{text}: no such file (nor a magnet link or an info-hash)")
    return load_torrent(text)


def load_mutable_link(text: str) -> MutableTorrentLink | None:
    """The BEP 46 link ``text`` is (``magnet:?xs=urn:btpk:...`` with no info-hash), read
    strictly as :func:`load_source` reads magnet links; None for anything else.

    Raises:
        CLIError: a BEP 46 link with a malformed key, salt or other parameter.
    """
    if text[:7].lower() != "magnet:":
        return None
    try:
        MagnetLink.parse(text)
    except MutableLinkError:
        pass  # a publisher's key and no info-hash
    except MagnetError:
        return None  # load_source reports it
    else:
        return None  # an info-hash: an ordinary magnet link
    try:
        return MutableTorrentLink.parse(text, strict=True)
    except ValueError as error:
        raise CLIError(f"bad BEP 46 magnet link: {error}") from error


def info_hash_of(source: Metainfo | MagnetLink) -> InfoHash:
    """The info-hash a :func:`load_source` result names (both halves of a hybrid's)."""
    return source.info.info_hash if isinstance(source, Metainfo) else source.info_hash


def parse_info_hash(text: str) -> InfoHash:
    """An info-hash typed as 40 hex or 32 base32 characters (v1), 64 hex (v2) or a
    ``1220``-prefixed multihash.

    Raises:
        CLIError: ``text`` is none of these.
    """
    try:
        return InfoHash.parse(text.strip())
    except ValueError as error:
        raise CLIError(str(error)) from error


# ASCII digits alone, and bounded: int() would also take other scripts' digits ("\u0666"),
# underscores and spaces, and int() of thousands of digits is refused, slowly.
WHOLE_NUMBER = re.compile("-?[0-9]{1,20}")


def parse_port(text: str, *, lowest: int = 0) -> int:
    """A port number, ``lowest`` to 65535 (0: any free port, where binding; 1 where the
    port is one another host listens on).

    Raises:
        CLIError: not a number in range.
    """
    # ASCII digits alone (a minus sign is read, for a clearer message): int() would also
    # take other scripts' digits ("\u0666\u0668\u0668\u0661"), underscores and spaces.
    if WHOLE_NUMBER.fullmatch(text) is None:
        raise CLIError(f"not a port number: {text!r}")
    port = int(text)
    if not lowest <= port <= 0xFFFF:
        raise CLIError(f"a port is in {lowest}..65535, not {port}")
    return port


def parse_endpoint(
    text: str,
    *,
    default_host: str | None = None,
    default_port: int | None = None,
    lowest_port: int = 0,
) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT``, ``:PORT`` or ``HOST`` as ``(host, port)``.

    A bare IPv6 address (``::1``) is a host, not a port. Missing parts come from the
    defaults; without one the input is refused. ``lowest_port`` is 0 for an address to
    bind (any free port) and 1 for one to reach (nothing listens on port 0).

    Raises:
        CLIError: a malformed pair, a bad port, or a missing part with no default.
    """
    text = text.strip()
    host: str | None
    port_text: str | None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise CLIError(f"missing ']' in {text!r} (write [IPV6]:PORT)")
        host, rest = text[1:close], text[close + 1 :]
        if ":" not in host:
            raise CLIError(f"not an IPv6 address: {host!r} (brackets are for IPv6 only)")
        if rest and not rest.startswith(":"):
            raise CLIError(f"expected ':PORT' after ']' in {text!r}")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        host, port_text = text, None  # a bare IPv6 address
    elif ":" in text:
        host, port_text = text.split(":")
    else:
        host, port_text = text, None
        if text.isdigit():
            host, port_text = None, text  # a lone number is a port
    host = host or default_host
    if host is None:
        raise CLIError(f"missing host in {text!r} (write HOST:PORT)")
    if ":" in host:
        try:
            ip_address(host)
        except ValueError:
            raise CLIError(f"not an IPv6 address: {host!r}") from None
    if port_text:
        port = parse_port(port_text, lowest=lowest_port)
    elif default_port is not None:
        port = default_port
    else:
        raise CLIError(f"missing port in {text!r} (write HOST:PORT)")
    return host, port


def check_url(url: str, schemes: Sequence[str], what: str) -> None:
    """Refuse ``url`` unless it parses, names a host and has one of ``schemes`` (``"udp"``).

    Raises:
        CLIError: a malformed URL (a bad port, a bad IPv6 literal), another scheme, or no
            host; ``what`` names the URL in the message (``"tracker"``).
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as error:
        raise CLIError(f"bad {what} URL {url!r}: {error}") from None
    if parts.scheme.lower() not in schemes or not parts.netloc:
        raise CLIError(
            f"bad {what} URL {url!r}: expected {', '.join(s + '://' for s in schemes)} and a host"
        )


def tracker_kind(url: str) -> Literal["udp", "http"]:
    """Which client the session asks ``url`` with (the scheme as ``Discovery._client_for``
    picks it), once that client's own parser took it.

    Raises:
        CLIError: neither ``udp://``, ``http://`` nor ``https://``.
        LocalProtocolError: the parser's reason (bip_utracker's ``TrackerError`` family,
            which both parsers raise).
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "udp":
        parse_tracker_url(url)
        return "udp"
    if scheme in ("http", "https"):
        parse_http_tracker_url(url)
        return "http"
    raise CLIError(
        f"only udp://, http:// and https:// trackers are supported, not {shown_url(url)!r}"
    )


def check_tracker_url(url: str) -> None:
    """Refuse a tracker URL the session would skip: one it has no client for (neither
    ``udp://``, ``http://`` nor ``https://``), or one that client's own parser refuses
    (:func:`~bip_utracker.parse_tracker_url`, ``parse_http_tracker_url``): a UDP URL without a
    port, no host, port 0, a host that is neither an IP address nor a host name
    (``0x7f.1``), a space. The session would only log a warning, once it started.

    Raises:
        CLIError: the parser's reason, naming the URL as logs show it (no query: a passkey).
    """
    try:
        tracker_kind(url)
    except LocalProtocolError as error:
        raise CLIError(str(error)) from None
