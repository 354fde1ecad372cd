"""The pure rules the HTTP tracker client and the web seed client apply to every request:
libtorrent's ``ssrf_mitigation`` and ``allow_idna``, and curl's low-speed rule. No I/O here:
addresses, paths and times are arguments (:mod:`._http_exchange` is the transport that
applies them).

libtorrent's other ``ssrf_mitigation`` rules (beside the redirect rule of
:func:`~._http_exchange.follow_redirects`) and its ``allow_idna`` are checks which each client
applies to every URL it requests (redirects included), by the URL before connecting and by the
address that answered before sending:

- a tracker on this machine (loopback, or the unspecified address a connection to
  ``0.0.0.0`` reaches) is asked only on a tracker's path (:func:`tracker_path_refusal`), so a
  torrent cannot have us GET the admin pages of the web services running beside us;
- a tracker URL carrying a parameter of our own announce (``info_hash``, ``port``...) is
  refused (:func:`tracker_query_refusal`): it would make the tracker see another request than
  ours;
- a web seed on a local network takes no query string (:func:`web_seed_query_refusal`): a
  file is fetched by its path, and a query is how web applications are driven;
- with ``allow_idna`` off, a host name with an internationalised label (``xn--``) is refused
  (:func:`idna_refusal`): ``xn--pypl-53dc.com`` can pass for ``paypal.com`` in a user's eyes.
  (A Unicode host name is refused by the URL parser whatever the setting.)

Each refusal's message names its rule, so a user can tell our policy from a failing server.

:class:`LowSpeed` is curl's low-speed rule (``CURLOPT_LOW_SPEED_LIMIT``/``_TIME``): a
transfer is given up once fewer than ``limit`` bytes a second arrived on average over the last
``period`` seconds. :func:`~._http_exchange.http_exchange` applies it beside the silence
timeout: a slow honest server finishes, however long its answer takes, while a trickling one
is cut within ``period`` seconds.
"""

from __future__ import annotations

import math
import re
from collections import deque
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Final, Literal
from urllib.parse import unquote

from bip_utracker import shown_path

__all__ = [
    "TRACKER_PARAMETERS",
    "IPAddress",
    "LowSpeed",
    "SsrfRule",
    "idna_refusal",
    "is_idna",
    "is_this_host",
    "literal_address",
    "tracker_path_refusal",
    "tracker_query_refusal",
    "web_seed_query_refusal",
]

IPAddress = IPv4Address | IPv6Address
SsrfRule = Literal["ssrf_mitigation", "allow_idna"]
"""The rule behind a refusal: its libtorrent setting's name."""

TRACKER_PARAMETERS: Final = frozenset(
    {"info_hash", "peer_id", "port", "uploaded", "downloaded", "left", "corrupt", "key", "event"}
)
"""The announce parameters a tracker URL may not carry itself (libtorrent's list): ours
follow them, and a tracker reading the first of a repeated name would see another announce."""
_LOW_SPEED_BUCKETS: Final = 32  # the period is counted in this many slices: bounded memory
# A tracker's path on this machine: its first or last segment is "announce" (or "scrape" for
# a scrape), with an extension at most ("announce.php"), as trackers name it.
_TRACKER_SEGMENT: Final = re.compile(r"(announce|scrape)(\.[A-Za-z0-9]{1,8})?")


# -- the low-speed rule ------------------------------------------------------------------------


class LowSpeed:
    """curl's low-speed rule for one transfer, pure: too slow once fewer than ``limit`` bytes a
    second arrived on average over the last ``period`` seconds (and ``period`` seconds have
    passed since ``now``, its start). Time is an argument; nothing is read from a clock.

    The bytes are counted in slices of ``period / 32`` seconds, so its memory is bounded
    whatever the transfer's length, and its judgement is exact to a slice: a slice partly in
    the window counts whole (in the transfer's favour).

    Args:
        limit: bytes a second, 0 or more (0: never too slow).
        period: seconds, more than 0.
        now: when the transfer starts.

    >>> rule = LowSpeed(1000, 10.0, now=0.0)
    >>> rule.received(12_000, 5.0)
    >>> rule.too_slow(10.0), rule.too_slow(16.0)
    (False, True)
    """

    __slots__ = ("_buckets", "_start", "_width", "limit", "period")

    def __init__(self, limit: int, period: float, *, now: float) -> None:
        self.limit = limit
        self.period = period
        self._start = now
        self._width = period / _LOW_SPEED_BUCKETS
        self._buckets: deque[list[float]] = deque()  # [slice start, bytes], oldest first

    def received(self, size: int, now: float) -> None:
        """Count ``size`` bytes arrived at ``now``."""
        start = math.floor(now / self._width) * self._width
        if self._buckets and self._buckets[-1][0] >= start:
            self._buckets[-1][1] += size
        else:
            self._buckets.append([start, float(size)])
        # Slices out of the window for good are forgotten.
        while self._buckets and self._buckets[0][0] + self._width + self.period <= now:
            self._buckets.popleft()

    def deadline(self) -> float:
        """When the transfer is too slow if nothing more arrives (``inf`` with a limit of 0)."""
        if self.limit <= 0:
            return math.inf
        earliest = self._start + self.period
        needed = self.limit * self.period
        left = sum(size for _, size in self._buckets)
        if left < needed:
            return earliest
        for start, size in self._buckets:
            left -= size
            if left < needed:  # once this slice leaves the window
                return max(earliest, start + self._width + self.period)
        return earliest  # pragma: no cover - the last slice leaving leaves 0 < needed

    def too_slow(self, now: float) -> bool:
        """Whether the transfer is too slow at ``now``."""
        return now >= self.deadline()


# -- libtorrent's ssrf_mitigation and allow_idna rules -------------------------------------------


def is_idna(host: str) -> bool:
    """Whether a host name is internationalised: a label in the ``xn--`` form, or any character
    that is not ASCII (libtorrent's ``is_idna``, which sees only the first kind).

    >>> is_idna("xn--bcher-kva.example"), is_idna("XN--p1ai"), is_idna("tracker.example")
    (True, True, False)
    """
    if not host.isascii():
        return True
    return any(label[:4].lower() == "xn--" for label in host.split("."))


def idna_refusal(host: str) -> str | None:
    """Why ``allow_idna`` off refuses ``host``, or None."""
    if not is_idna(host):
        return None
    return (
        f"refused with allow_idna off: {host[:80]!r} is an internationalised host name, "
        "which could pass for another"
    )


def literal_address(host: str) -> IPAddress | None:
    """A URL's host as an address if it is an IP literal (IPv4-mapped IPv6 as IPv4), else None."""
    try:
        address = ip_address(host)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_this_host(address: IPAddress) -> bool:
    """Whether a connection to ``address`` reaches this machine: loopback, or unspecified
    (a connection to ``0.0.0.0`` or ``::`` goes to the local host)."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


def _query_names(target: str) -> list[str]:
    """The parameter names of a request target's query, decoded and in lower case."""
    query = target.partition("?")[2]
    return [unquote(field.partition("=")[0]).lower() for field in query.split("&") if field]


def tracker_query_refusal(target: str) -> str | None:
    """Why ``ssrf_mitigation`` refuses a tracker URL's request target (before our query is
    added) for carrying a parameter of our own announce, or None.

    >>> tracker_query_refusal("/announce?passkey=ab") is None
    True
    >>> tracker_query_refusal("/announce?INFO_HASH=x")[:40]
    'refused by ssrf_mitigation: the tracker '
    """
    for name in _query_names(target):
        if name in TRACKER_PARAMETERS:
            return (
                f"refused by ssrf_mitigation: the tracker URL carries {name!r:.40} itself, a "
                "parameter of the announce we add"
            )
    return None


def tracker_path_refusal(target: str, address: IPAddress | str, *, scrape: bool) -> str | None:
    """Why ``ssrf_mitigation`` refuses to ask a tracker on this machine (at ``address``) for
    ``target``, or None: its path's first or last segment must be ``announce`` (``scrape``
    for a scrape), with an extension at most (``announce.php``), and no segment may be one a
    server could resolve to another path: one that decodes (once or more) to ``.`` or ``..``,
    also before a ``;`` (Tomcat's ``..;``), or to text holding a ``/`` or ``\\`` (a server
    that decodes before it normalises reads ``..%2Fadmin`` as two segments).

    libtorrent's rule asks that the path start with ``/announce``; this one also takes a
    private tracker's ``/PASSKEY/announce``, and refuses ``/announce/../admin`` in all its
    spellings (``/announce/..%2Fadmin``, ``/announce/..;/admin``...).

    >>> tracker_path_refusal("/x/announce.php?k=1", "127.0.0.1", scrape=False) is None
    True
    >>> tracker_path_refusal("/admin", "127.0.0.1", scrape=False)[:50]
    'refused by ssrf_mitigation: a tracker on this mach'
    """
    path = target.partition("?")[0]
    segments = path.split("/")[1:] or [""]
    wanted = "scrape" if scrape else "announce"
    if not any(map(_resolves_elsewhere, segments)) and any(
        (match := _TRACKER_SEGMENT.fullmatch(segment)) is not None and match.group(1) == wanted
        for segment in (segments[0], segments[-1])
    ):
        return None
    return (
        f"refused by ssrf_mitigation: a tracker on this machine ({address}) is asked on a "
        f"/{wanted} path only, not {shown_path(path)[:80]!r}"
    )


def _resolves_elsewhere(segment: str) -> bool:
    """Whether a server could read a path segment as a step to another path: a dot segment
    (``..``, ``%2e%2e``, ``..;x``: Tomcat drops a segment's ``;`` parameters before it
    normalises), or one that becomes several segments once decoded (``..%2Fadmin``, and
    ``..%5Cadmin`` for servers that take ``\\`` for ``/``). It is decoded until it no longer
    changes, for servers that decode twice; each round shortens it, so this ends."""
    while (decoded := unquote(segment)) != segment:
        segment = decoded
    return "/" in segment or "\\" in segment or segment.partition(";")[0] in (".", "..")


def web_seed_query_refusal(target: str, address: IPAddress | str) -> str | None:
    """Why ``ssrf_mitigation`` refuses to ask a web seed on a local network (at ``address``)
    for ``target``, or None: a file is fetched by its path, and a query string is how web
    applications are driven.

    >>> web_seed_query_refusal("/f.bin", "10.0.0.2") is None
    True
    >>> web_seed_query_refusal("/f.bin?a=1", "10.0.0.2")[:45]
    'refused by ssrf_mitigation: a web seed on a l'
    """
    if "?" not in target:
        return None
    return (
        f"refused by ssrf_mitigation: a web seed on a local network ({address}) takes no "
        "query string"
    )
