"""What the user names a torrent and its peers with: a .torrent path or a magnet link,
``HOST:PORT`` peers, and a file selection (``0,2-3``)."""

from __future__ import annotations

import os
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Final

import trio

from bip_handshake import PeerAddress
from bip_metainfo import MagnetLink, Metainfo

__all__ = [
    "MAX_FILE_RANGES",
    "SourceError",
    "TorrentSource",
    "load_source",
    "parse_file_selection",
    "parse_peer",
    "resolve_peers",
]

MAX_FILE_RANGES: Final = 4096
"""Ranges a file selection may list: a bound on what a long argument makes us build."""

TorrentSource = Metainfo | MagnetLink
"""A torrent as the user gave it: a parsed .torrent file or a magnet link."""


class SourceError(ValueError):
    """A torrent, peer or file selection given by the user is not usable; the message says why."""


def load_source(text: str | os.PathLike[str]) -> TorrentSource:
    """A magnet link (``magnet:?...``) or the .torrent file at path ``text``, parsed.

    Raises:
        MagnetError: a malformed magnet link.
        MetainfoError: the file is not a valid torrent.
        OSError: the file cannot be read.
    """
    if isinstance(text, str) and text.startswith("magnet:"):
        return MagnetLink.parse(text)
    return Metainfo.from_file(Path(text))


def parse_peer(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6 literals) as a pair; the host may be a name.

    >>> parse_peer("[::1]:6881")
    ('::1', 6881)

    Raises:
        SourceError: not of that form, or the port is not in 1..65535.
    """
    host, colon, port_text = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not (port_text.isascii() and port_text.isdigit()):
        raise SourceError(f"a peer is HOST:PORT, not {text!r}")
    port = int(port_text)
    if not 0 < port <= 0xFFFF:
        raise SourceError(f"a peer's port is in 1..65535, not {port} ({text!r})")
    return host, port


async def resolve_peers(peers: list[tuple[str, int]]) -> tuple[PeerAddress, ...]:
    """Turn ``(host, port)`` pairs into addresses, resolving names (every address of a name).

    Raises:
        SourceError: a name does not resolve.
    """
    result: dict[PeerAddress, None] = {}
    for host, port in peers:
        try:
            literal: IPv4Address | IPv6Address | None = ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            result[PeerAddress(literal, port).normalized()] = None
            continue
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
        except OSError as error:
            raise SourceError(f"cannot resolve peer {host!r}: {error}") from None
        for _family, _type, _proto, _name, sockaddr in infos:
            address = ip_address(str(sockaddr[0]).partition("%")[0])
            result[PeerAddress(address, port).normalized()] = None
    return tuple(result)


def parse_file_selection(text: str) -> frozenset[int]:
    """File indices from ``0,2-3`` (BEP 53's ``so`` syntax: indices and inclusive ranges).

    >>> sorted(parse_file_selection("0,2-3"))
    [0, 2, 3]

    Raises:
        SourceError: malformed, a range going backwards, or too many ranges.
    """
    selected: set[int] = set()
    parts = [part.strip() for part in text.split(",")]
    if len(parts) > MAX_FILE_RANGES:
        raise SourceError(f"at most {MAX_FILE_RANGES} file ranges, not {len(parts)}")
    for part in parts:
        first, dash, last = part.partition("-")
        if not (first.isascii() and first.isdigit()) or (
            dash and not (last.isascii() and last.isdigit())
        ):
            raise SourceError(f"a file selection is like 0,2-3, not {text!r}")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise SourceError(f"the file range {part!r} goes backwards")
        if high - low > 1 << 20:
            raise SourceError(f"the file range {part!r} is too large")
        selected.update(range(low, high + 1))
    return frozenset(selected)
