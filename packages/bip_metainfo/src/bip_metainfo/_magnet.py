"""Magnet links: BEP 9, with v2 info-hashes (BEP 52) and select-only (BEP 53).

Reading follows what links in the wild need and what libtorrent does: parameter
names are case-insensitive and a ``.<number>`` after one is ignored (``tr.1`` is
``tr``, ``xt.2`` is ``xt``), values are form-urlencoded (``%XX`` escapes in either
case, ``+`` is a space) and must be UTF-8, and a malformed *optional* parameter (a
tracker that is not a tracker URL, a bad peer address, a bad ``so`` entry, ...) is
skipped. ``strict=True`` turns every such skip into a :class:`MagnetError`. The
info-hash is never optional: a missing, malformed or contradictory ``xt`` is always
an error.

Writing always produces the canonical form :meth:`MagnetLink.parse` reads back to
an equal link: hex hashes (BEP 9), upper-case escapes as JavaScript's
``encodeURIComponent`` makes them, and a fixed parameter order.
"""

from __future__ import annotations

import base64
import bisect
import ipaddress
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import quote, unquote_to_bytes

from ._errors import MagnetError, MutableLinkError
from ._infohash import InfoHash

__all__ = ["MagnetLink"]

_log = logging.getLogger("bip_metainfo.magnet")

_PREFIX = "magnet:?"
_BTIH = "urn:btih:"  # BEP 9: a v1 info-hash, 40 hex or 32 base32 characters
_BTMH = "urn:btmh:"  # BEP 52: a v2 info-hash as a hex multihash
_BTPK = "urn:btpk:"  # BEP 46: a mutable torrent's public key (in ``xs``)
_MULTIHASH_SHA256 = "1220"  # multihash code 0x12 (sha2-256), length 0x20

_MAX_LENGTH = 64 * 1024
_MAX_PARAMETERS = 1000
# libtorrent's bound (magnet_uri.cpp's max_index, "can't risk out of memory"): it skips a
# ``so`` entry naming a larger index. A client expands a selection into indices, so without
# it ``so=0-99999999`` (74 characters) would be a hundred million of them.
_MAX_FILE_INDEX = 10_000
_MAX_EXACT_LENGTH = 2**63 - 1

# Character classes spelled out: ``\d`` and str.isdigit() also match non-ASCII digits.
_HEX = re.compile(r"[0-9A-Fa-f]*")
_BASE32 = re.compile(r"[A-Za-z2-7]*")
_DIGITS = re.compile(r"[0-9]+")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# libtorrent strips a ``.<number>`` (even an empty one) after a name's first dot:
# ``tr.1`` (BEP 9's numbered trackers), ``xt.2`` (the magnet-URI draft's numbered topics).
_NUMBERED = re.compile(r"([^.]*)\.[0-9]*")
_PORT = re.compile(r"[0-9]{1,5}")
_DOTTED = re.compile(r"[0-9.]+")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_SO_VALUE = re.compile(r"[0-9,-]*")
_INDEX_DIGITS = len(str(_MAX_FILE_INDEX))

_TRACKER_SCHEMES = ("http://", "https://", "udp://", "ws://", "wss://")
_KNOWN = frozenset({"xt", "dn", "tr", "ws", "as", "xs", "kt", "xl", "x.pe", "dht", "so"})

# Kept as they are (with quote()'s own A-Z a-z 0-9 _ . - ~): encodeURIComponent's set.
_COMPONENT_SAFE = "!*'()"
_URN_SAFE = _COMPONENT_SAFE + ":"
_ENDPOINT_SAFE = "[]:"
_EXTRA_SAFE = _COMPONENT_SAFE + ":@,/?"

_Endpoint = tuple[str, int]
_FileRange = tuple[int, int]


@dataclass(frozen=True, slots=True)
class MagnetLink:
    """A magnet link: an info-hash plus hints for finding the torrent's peers and metadata.

    Read one with :meth:`parse`, make one with :meth:`from_info_hash` (or the
    constructor), write one with :meth:`to_uri` or ``str()``. Values are kept
    decoded and normalised: duplicates are dropped (the first kept), IPv6
    addresses are compressed, ``so`` ranges are sorted and merged, and an empty
    display name is None; ``parse(str(link)) == link`` holds for every link whose
    URI stays within :attr:`MAX_LENGTH` characters and :attr:`MAX_PARAMETERS`
    parameters, which :meth:`parse` demands (:meth:`~bip_metainfo.Metainfo.magnet`
    keeps to them).

    >>> link = MagnetLink.parse(
    ...     "magnet:?xt=urn:btih:CDCDCDCDCDCDCDCDCDCDCDCDCDCDCDCDCDCDCDCD&dn=Big+Buck%20Bunny"
    ...     "&tr=udp%3A%2F%2Ftracker.example%3A6969&x.pe=[::1]:6881&so=4,0,2-3"
    ... )
    >>> link.info_hash.hex()
    'cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd'
    >>> link.display_name, link.trackers
    ('Big Buck Bunny', ('udp://tracker.example:6969',))
    >>> link.peers, link.select_only, link.selects(1), link.selects(3)
    ((('::1', 6881),), ((0, 0), (2, 4)), False, True)
    >>> print(*str(link).split("&"), sep="\\n&")
    magnet:?xt=urn:btih:cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd
    &dn=Big+Buck+Bunny
    &tr=udp%3A%2F%2Ftracker.example%3A6969
    &x.pe=[::1]:6881
    &so=0,2-4

    Attributes:
        info_hash: the torrent's v1 (``xt=urn:btih:``), v2 (``xt=urn:btmh:``) or
            hybrid (both) info-hash.
        display_name: ``dn``, a name to show until the metadata arrives.
        trackers: ``tr`` (and ``tr.N``) tracker URLs (http, https, udp, ws, wss), in
            the order they appear; each is its own tier, as in libtorrent.
        web_seeds: ``ws``, BEP 19 web seed URLs.
        acceptable_sources: ``as``, direct download URLs for the content.
        exact_sources: ``xs``, URLs or URNs (such as BEP 46 ``urn:btpk:``) of
            sources for the .torrent itself.
        keywords: ``kt``, search keywords (split on spaces, or ``+``).
        exact_length: ``xl``, the content's size in bytes.
        peers: ``x.pe``, peers to ask for the metadata, as ``(host, port)``; the
            host is a hostname, an IPv4 address, or an IPv6 address without brackets.
        dht_nodes: ``dht``, DHT nodes to bootstrap from, as ``(host, port)``.
        select_only: BEP 53 ``so``, the file indices to download as sorted,
            disjoint, non-adjacent inclusive ``(first, last)`` ranges, or None for
            every file; ``()`` selects no file (``so=``, or a ``so`` none of whose
            entries is usable: libtorrent then downloads nothing). See :meth:`selects`.
        extra: every other parameter, as decoded ``(name, value)`` pairs in their
            order, so that a round trip keeps them; ``xt`` topics that are not
            BitTorrent's (``urn:ed2k:``, ``urn:sha1:``, ...) are kept here as ``xt``.
    """

    MAX_LENGTH: ClassVar[int] = _MAX_LENGTH
    """The longest link :meth:`parse` reads, in characters."""
    MAX_PARAMETERS: ClassVar[int] = _MAX_PARAMETERS
    """The most ``name=value`` parameters :meth:`parse` reads in one link."""
    MAX_FILE_INDEX: ClassVar[int] = _MAX_FILE_INDEX
    """The largest file index a ``so`` range may name: libtorrent's bound, past which it
    skips the entry. A selection is at most ``MAX_FILE_INDEX + 1`` files."""
    MAX_EXACT_LENGTH: ClassVar[int] = _MAX_EXACT_LENGTH
    """The largest ``xl`` accepted."""

    info_hash: InfoHash
    display_name: str | None = None
    trackers: tuple[str, ...] = ()
    web_seeds: tuple[str, ...] = ()
    acceptable_sources: tuple[str, ...] = ()
    exact_sources: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    exact_length: int | None = None
    peers: tuple[tuple[str, int], ...] = ()
    dht_nodes: tuple[tuple[str, int], ...] = ()
    select_only: tuple[tuple[int, int], ...] | None = None
    extra: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        """Check every field can be written and read back, and normalise it.

        Raises:
            MagnetError: a value a magnet link cannot carry (naming the parameter).
            TypeError: a field of the wrong type.
        """
        _check_info_hash(self.info_hash)
        normalised = check_hints(
            display_name=self.display_name,
            trackers=self.trackers,
            web_seeds=self.web_seeds,
            peers=self.peers,
            dht_nodes=self.dht_nodes,
            select_only=self.select_only,
        )
        keywords = _texts("kt", self.keywords)
        for keyword in keywords:
            if " " in keyword:
                raise MagnetError("kt", f"a keyword cannot contain a space: {_show(keyword)}")
        length = self.exact_length
        if length is not None and (type(length) is not int or not 0 <= length <= _MAX_EXACT_LENGTH):
            raise MagnetError("xl", f"must be an int from 0 to {_MAX_EXACT_LENGTH}, not {length!r}")
        normalised |= {
            "acceptable_sources": _texts("as", self.acceptable_sources),
            "exact_sources": _texts("xs", self.exact_sources),
            "keywords": keywords,
            "extra": _check_extra(self.extra),
        }
        for field, value in normalised.items():
            object.__setattr__(self, field, value)

    @classmethod
    def from_info_hash(
        cls,
        info_hash: InfoHash,
        *,
        display_name: str | None = None,
        trackers: Iterable[str] = (),
        web_seeds: Iterable[str] = (),
        acceptable_sources: Iterable[str] = (),
        exact_sources: Iterable[str] = (),
        keywords: Iterable[str] = (),
        exact_length: int | None = None,
        peers: Iterable[tuple[str, int]] = (),
        dht_nodes: Iterable[tuple[str, int]] = (),
        select_only: Iterable[int | tuple[int, int]] | None = None,
        extra: Iterable[tuple[str, str]] = (),
    ) -> MagnetLink:
        """Make a link from an info-hash and any iterables of the other fields.

        ``select_only`` takes file indices and inclusive ``(first, last)`` ranges in
        any order, overlapping or not; None (the default) selects every file, and
        an empty iterable none (written ``so=``). A
        caller that knows the file count should pass None when every file is
        selected, as libtorrent writes no ``so`` then.

        >>> link = MagnetLink.from_info_hash(InfoHash(v1=bytes(20)), select_only=[5, 0, (1, 3)])
        >>> link.select_only, link.to_uri()[-9:]
        (((0, 3), (5, 5)), '&so=0-3,5')

        Raises:
            MagnetError: a value a magnet link cannot carry (naming the parameter).
            TypeError: a value of the wrong type.
        """
        ranges: tuple[_FileRange, ...] | None = None
        if select_only is not None:
            ranges = tuple(
                (entry, entry) if isinstance(entry, int) else entry for entry in select_only
            )
        return cls(
            info_hash,
            display_name=display_name,
            trackers=_as_tuple("tr", trackers),
            web_seeds=_as_tuple("ws", web_seeds),
            acceptable_sources=_as_tuple("as", acceptable_sources),
            exact_sources=_as_tuple("xs", exact_sources),
            keywords=_as_tuple("kt", keywords),
            exact_length=exact_length,
            peers=tuple(peers),
            dht_nodes=tuple(dht_nodes),
            select_only=ranges,
            extra=tuple(extra),
        )

    @classmethod
    def parse(cls, uri: str, *, strict: bool = False) -> MagnetLink:
        """Read a magnet link.

        By default, as libtorrent does, a malformed optional parameter is skipped:
        a tracker that is not an http(s)/udp/ws(s) URL, an ``x.pe`` or ``dht``
        address that is not ``host:port``, ``ipv4:port`` or ``[ipv6]:port`` with
        a port from 1 to 65535, a ``so`` entry that is inverted (``5-3``), open or
        past :attr:`MAX_FILE_INDEX` (a ``so`` value with any character besides
        digits, ``,`` and ``-`` is skipped whole), an ``xl`` that is not a
        non-negative integer, a value that is not UTF-8 once percent-decoded, a
        second ``dn`` or ``xl`` that disagrees with the first, and pieces without
        ``=``. Empty values count as absent, except ``so``'s: as in libtorrent, a
        ``so`` (even empty, or with every entry skipped) selects only the files it
        names, so none if it names none. With ``strict=True`` each of these
        raises instead. A name may carry a ``.<number>`` suffix, which is ignored
        (``xt.1``, ``tr.2``, as libtorrent reads them); other names with a dot
        (``x.pe``, ``x.pe.1``, ``tr.a``) are read as they are.

        Always errors: a link longer than :attr:`MAX_LENGTH` or with more than
        :attr:`MAX_PARAMETERS` parameters, one not starting ``magnet:?``
        (case-insensitively), and any problem with ``xt``: none for BitTorrent, a
        ``urn:btih:`` that is not 40 hex or 32 base32 characters, a ``urn:btmh:``
        that is not ``1220`` and 64 hex digits, two different v1 or v2 hashes, or
        a bad escape. A BEP 46 link (``xs=urn:btpk:`` with no ``xt``) has no
        info-hash, so it is refused too: :meth:`MutableTorrentLink.parse` reads it.

        Raises:
            MagnetError: the link is malformed; ``parameter`` names the culprit
                (``""`` for the link as a whole).
        """
        parser = read_parameters(uri, strict=strict)
        link = parser.build()
        parser.log_skipped(str(link.info_hash))
        return link

    def to_uri(self) -> str:
        """Write the link: ``magnet:?`` and its parameters, in a fixed order.

        The order is other ``xt`` topics, ``xt=urn:btih:`` (hex), ``xt=urn:btmh:``,
        ``xl``, ``dn``, ``tr``, ``ws``, ``as``, ``xs``, ``kt``, ``x.pe``, ``dht``,
        ``so``, then the remaining :attr:`extra` parameters. Values are escaped as
        ``encodeURIComponent`` does (``dn`` and ``kt`` write spaces as ``+``); URNs
        keep their colons, addresses their brackets and ``so`` its commas.

        A link with thousands of trackers gives a URI longer than :meth:`parse`
        reads back (:attr:`MAX_LENGTH`); :meth:`~bip_metainfo.Metainfo.magnet` leaves
        trackers out to stay within it.
        """
        parts = [f"xt={_quote(value, _URN_SAFE)}" for name, value in self.extra if name == "xt"]
        if self.info_hash.v1 is not None:
            parts.append(f"xt={_BTIH}{self.info_hash.v1.hex()}")
        if self.info_hash.v2 is not None:
            parts.append(f"xt={_BTMH}{self.info_hash.multihash().hex()}")
        if self.exact_length is not None:
            parts.append(f"xl={self.exact_length}")
        if self.display_name is not None:
            parts.append(f"dn={_quote_words(self.display_name)}")
        parts.extend(f"tr={_quote(url, _COMPONENT_SAFE)}" for url in self.trackers)
        parts.extend(f"ws={_quote(url, _COMPONENT_SAFE)}" for url in self.web_seeds)
        parts.extend(f"as={_quote_source(url)}" for url in self.acceptable_sources)
        parts.extend(f"xs={_quote_source(url)}" for url in self.exact_sources)
        if self.keywords:
            parts.append("kt=" + "+".join(_quote_words(word) for word in self.keywords))
        parts.extend(f"x.pe={_format_endpoint(peer)}" for peer in self.peers)
        parts.extend(f"dht={_format_endpoint(node)}" for node in self.dht_nodes)
        if self.select_only is not None:
            parts.append("so=" + ",".join(_format_range(r) for r in self.select_only))
        parts.extend(
            f"{_quote(name, _EXTRA_SAFE)}={_quote(value, _EXTRA_SAFE)}"
            for name, value in self.extra
            if name != "xt"
        )
        return _PREFIX + "&".join(parts)

    def __str__(self) -> str:
        """The link as a URI: see :meth:`to_uri`."""
        return self.to_uri()

    def selects(self, index: int) -> bool:
        """Whether the file at ``index`` (0-based) is to be downloaded (BEP 53).

        Every file is when the link has no ``so``.
        """
        if self.select_only is None:
            return True
        position = bisect.bisect_right(self.select_only, index, key=lambda r: r[0])
        return position > 0 and index <= self.select_only[position - 1][1]


def check_hints(
    *,
    display_name: str | None,
    trackers: tuple[str, ...],
    web_seeds: tuple[str, ...],
    peers: tuple[tuple[str, int], ...],
    dht_nodes: tuple[tuple[str, int], ...],
    select_only: tuple[tuple[int, int], ...] | None,
) -> dict[str, object]:
    """The hints a magnet link gives for a download (``dn``, ``tr``, ``ws``, ``x.pe``,
    ``dht``, ``so``), checked and normalised, by field name: shared by
    :class:`MagnetLink` and BEP 46's :class:`~bip_metainfo.MutableTorrentLink`.

    Raises:
        MagnetError: a value a magnet link cannot carry (naming the parameter).
        TypeError: a value of the wrong type.
    """
    name = display_name
    if name is not None:
        name = _check_text("dn", name) or None
    checked_trackers = _texts("tr", trackers)
    for url in checked_trackers:
        if not _is_tracker_url(url):
            raise MagnetError("tr", f"not an http, https, udp, ws or wss URL: {_show(url)}")
    return {
        "display_name": name,
        "trackers": checked_trackers,
        "web_seeds": _texts("ws", web_seeds),
        "peers": _endpoints("x.pe", peers),
        "dht_nodes": _endpoints("dht", dht_nodes),
        "select_only": _check_ranges(select_only),
    }


def fits(link: MagnetLink) -> bool:
    """Whether ``link``'s URI is one :meth:`MagnetLink.parse` reads back: within
    :attr:`~MagnetLink.MAX_LENGTH` characters and :attr:`~MagnetLink.MAX_PARAMETERS`
    parameters."""
    uri = link.to_uri()
    return len(uri) <= _MAX_LENGTH and uri.count("&") + 1 <= _MAX_PARAMETERS


def read_parameters(uri: str, *, strict: bool) -> _Parser:
    """Every parameter of the magnet link ``uri``, read (see :meth:`MagnetLink.parse`).

    Raises:
        MagnetError: the link as a whole is malformed (too long, too many parameters, not
            ``magnet:?``), an ``xt`` is, or, with ``strict``, any parameter.
        TypeError: ``uri`` is not a str.
    """
    _check_uri_type(uri)
    if len(uri) > _MAX_LENGTH:
        raise MagnetError(
            "", f"a magnet link of {len(uri)} characters is over the limit of {_MAX_LENGTH}"
        )
    if _ascii_lower(uri[: len(_PREFIX)]) != _PREFIX:
        raise MagnetError("", f"not a magnet link (it must begin with 'magnet:?'): {_show(uri)}")
    segments = [segment for segment in uri[len(_PREFIX) :].split("&") if segment]
    if len(segments) > _MAX_PARAMETERS:
        raise MagnetError("", f"{len(segments)} parameters is over the limit of {_MAX_PARAMETERS}")
    parser = _Parser(strict)
    for segment in segments:
        parser.add(segment)
    return parser


class _Parser:
    """The parameters of one link, gathered as they are read."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.v1: bytes | None = None
        self.v2: bytes | None = None
        self.display_name: str | None = None
        self.exact_length: int | None = None
        # Ordered sets: insertion-ordered dicts with no values.
        self.texts: dict[str, dict[str, None]] = {k: {} for k in ("tr", "ws", "as", "xs", "kt")}
        self.endpoints: dict[str, dict[_Endpoint, None]] = {"x.pe": {}, "dht": {}}
        # None until a ``so`` libtorrent reads arrives: from then on the link selects
        # only these files, none if no entry is usable (libtorrent downloads nothing).
        self.ranges: list[_FileRange] | None = None
        self.extra: list[tuple[str, str]] = []
        self.skipped = 0
        self.first_skipped = ("", "")

    def skip(self, parameter: str, reason: str) -> None:
        """Pass over a malformed optional parameter, or raise if strict."""
        if self.strict:
            raise MagnetError(parameter, reason)
        if not self.skipped:
            self.first_skipped = (parameter, reason)
        self.skipped += 1

    def select_only(self) -> list[_FileRange]:
        """The ranges read, from the first ``so`` libtorrent reads (made select-only)."""
        if self.ranges is None:
            self.ranges = []
        return self.ranges

    def add(self, segment: str) -> None:
        """Read one ``name=value`` piece of the query."""
        raw_name, equals, raw_value = segment.partition("=")
        if not equals:
            self.skip(_clip(raw_name), "a parameter without '=' (name=value)")
            if parameter_key(raw_name) == "so":
                self.select_only()  # libtorrent reads a bare ``so`` as ``so=``
            return
        try:
            name = _unescape(raw_name)
        except ValueError as error:
            self.skip(_clip(raw_name), f"bad parameter name: {error}")
            return
        if not name:
            self.skip("", f"a parameter with an empty name: {_show(segment)}")
            return
        key = parameter_key(name)
        if key == "xt":
            self.add_topic(raw_value)
            return
        try:
            value = _unescape(raw_value)
        except ValueError as error:
            self.skip(name, str(error))
            return
        if key == "tr":
            self.add_tracker(name, value)
        elif key in ("ws", "as", "xs"):
            if value:
                self.texts[key][value] = None
        elif key == "kt":
            for word in value.split(" "):
                if word:
                    self.texts["kt"][word] = None
        elif key == "dn":
            self.add_display_name(value)
        elif key == "xl":
            self.add_exact_length(value)
        elif key in ("x.pe", "dht"):
            self.add_endpoint(key, value)
        elif key == "so":
            ranges, problem = _parse_select_only(value)
            if problem is not None:
                self.skip("so", problem)
            if ranges is not None:
                self.select_only().extend(ranges)
        else:
            self.extra.append((name, value))

    def add_topic(self, raw_value: str) -> None:
        """Read an ``xt``: BitTorrent's are checked strictly, others kept as extras."""
        try:
            value = _unescape(raw_value)
        except ValueError as error:
            raise MagnetError("xt", str(error)) from None
        kind = _topic_kind(value)
        digest = value[len(_BTIH) :]
        if kind == _BTIH:
            v1 = _parse_btih(digest)
            if v1 is None:
                raise MagnetError(
                    "xt",
                    f"a urn:btih: info-hash is 40 hex or 32 base32 characters, not {_show(digest)}",
                )
            if self.v1 is not None and self.v1 != v1:
                raise MagnetError("xt", "two different v1 info-hashes (urn:btih:)")
            self.v1 = v1
        elif kind == _BTMH:
            v2 = _parse_btmh(digest)
            if v2 is None:
                raise MagnetError(
                    "xt",
                    "a urn:btmh: info-hash is a sha2-256 multihash in hex ('1220' and 64 hex"
                    f" digits), not {_show(digest)}",
                )
            if self.v2 is not None and self.v2 != v2:
                raise MagnetError("xt", "two different v2 info-hashes (urn:btmh:)")
            self.v2 = v2
        else:
            self.extra.append(("xt", value))

    def add_tracker(self, name: str, url: str) -> None:
        """Read a ``tr`` or ``tr.N``."""
        if not url:
            return
        if not _is_tracker_url(url):
            self.skip(name, f"not an http, https, udp, ws or wss tracker URL: {_show(url)}")
            return
        self.texts["tr"][url] = None

    def add_display_name(self, value: str) -> None:
        """Read a ``dn``: the first one counts."""
        if not value:
            return
        if self.display_name is None:
            self.display_name = value
        elif value != self.display_name:
            self.skip("dn", f"a second, different display name: {_show(value)}")

    def add_exact_length(self, value: str) -> None:
        """Read an ``xl``: the first one counts."""
        if not value:
            return
        length = int(value) if len(value) <= 19 and _DIGITS.fullmatch(value) else -1
        if not 0 <= length <= _MAX_EXACT_LENGTH:
            self.skip("xl", f"not a length in bytes (an integer from 0 to 2**63-1): {_show(value)}")
        elif self.exact_length is None:
            self.exact_length = length
        elif length != self.exact_length:
            self.skip("xl", f"a second, different length: {length}")

    def add_endpoint(self, key: str, value: str) -> None:
        """Read an ``x.pe`` or ``dht`` address."""
        if not value:
            return
        endpoint = _parse_endpoint(value)
        if endpoint is None:
            self.skip(
                key,
                "not host:port, ipv4:port or [ipv6]:port with a port from 1 to 65535:"
                f" {_show(value)}",
            )
            return
        self.endpoints[key][endpoint] = None

    def log_skipped(self, name: str) -> None:
        """One debug record for the link named ``name``, however many parameters it had
        wrong (none when it had none)."""
        if self.skipped:
            _log.debug(
                "magnet link for %s: skipped %d malformed parameters (the first: %s: %s)",
                name,
                self.skipped,
                self.first_skipped[0] or "(no name)",
                self.first_skipped[1],
            )

    def build(self) -> MagnetLink:
        """The link read, once every parameter is in."""
        if self.v1 is None and self.v2 is None:
            if any(_ascii_lower(source[: len(_BTPK)]) == _BTPK for source in self.texts["xs"]):
                raise MutableLinkError(
                    "xt",
                    "a BEP 46 mutable-torrent link (xs=urn:btpk:) names no info-hash: read it"
                    " with MutableTorrentLink.parse and resolve it through the DHT (BEP 44)",
                )
            raise MagnetError(
                "xt", "no BitTorrent info-hash (xt=urn:btih:... or xt=urn:btmh:1220...)"
            )
        return MagnetLink(
            InfoHash(v1=self.v1, v2=self.v2),
            display_name=self.display_name,
            trackers=tuple(self.texts["tr"]),
            web_seeds=tuple(self.texts["ws"]),
            acceptable_sources=tuple(self.texts["as"]),
            exact_sources=tuple(self.texts["xs"]),
            keywords=tuple(self.texts["kt"]),
            exact_length=self.exact_length,
            peers=tuple(self.endpoints["x.pe"]),
            dht_nodes=tuple(self.endpoints["dht"]),
            select_only=None if self.ranges is None else tuple(self.ranges),
            extra=tuple(self.extra),
        )


# --- reading ---------------------------------------------------------------------------


def _ascii_lower(text: str) -> str:
    # Only ASCII is folded: "\u212a".lower() is "k", and no magnet name is non-ASCII.
    return text.lower() if text.isascii() else text


def parameter_key(name: str) -> str:
    """The parameter a decoded name stands for: lower-cased (ASCII only), without the
    ``.<number>`` suffix libtorrent ignores (``TR.1`` is ``tr``, ``x.pe`` stays)."""
    key = _ascii_lower(name)
    numbered = _NUMBERED.fullmatch(key)
    return key if numbered is None else numbered[1]


def _unescape(text: str) -> str:
    """Decode form-urlencoding: ``+`` is a space, ``%XX`` a byte; the bytes are UTF-8.

    Raises:
        ValueError: a ``%`` without two hex digits, or bytes that are not UTF-8.
    """
    bad = _BAD_ESCAPE.search(text)
    if bad is not None:
        raise ValueError(f"'%' not followed by two hex digits: {_show(text[bad.start() :])}")
    try:
        return unquote_to_bytes(text.replace("+", " ")).decode("utf-8")
    except UnicodeError:  # a lone surrogate in the text, or bytes that are not UTF-8
        raise ValueError(f"not UTF-8 once percent-decoded: {_show(text)}") from None


def _topic_kind(value: str) -> str | None:
    kind = _ascii_lower(value[: len(_BTIH)])  # URN namespaces are case-insensitive
    return kind if kind in (_BTIH, _BTMH) else None


def _parse_btih(text: str) -> bytes | None:
    if len(text) == 40 and _HEX.fullmatch(text):
        return bytes.fromhex(text)
    if len(text) == 32 and _BASE32.fullmatch(text):
        return base64.b32decode(text.upper())
    return None


def _parse_btmh(text: str) -> bytes | None:
    if len(text) == 68 and text.startswith(_MULTIHASH_SHA256) and _HEX.fullmatch(text):
        return bytes.fromhex(text[len(_MULTIHASH_SHA256) :])
    return None


def _is_tracker_url(url: str) -> bool:
    return any(_ascii_lower(url[: len(scheme)]) == scheme for scheme in _TRACKER_SCHEMES)


def _normalise_host(host: str) -> str | None:
    """The host in canonical text, or None if it is no hostname or IP address."""
    if ":" in host:
        if "%" in host:  # an IPv6 zone means nothing to another machine
            return None
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            return None
    if _DOTTED.fullmatch(host):  # all digits and dots: an IPv4 address or nothing
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            return None
    return host if len(host) <= 253 and _HOSTNAME.fullmatch(host) else None


def _parse_port(text: str) -> int | None:
    if not _PORT.fullmatch(text):
        return None
    port = int(text)
    return port if 1 <= port <= 65535 else None


def _parse_endpoint(text: str) -> _Endpoint | None:
    """``host:port``, ``ipv4:port`` or ``[ipv6]:port``, or None."""
    if text.startswith("["):
        close = text.find("]:")
        if close < 0:
            return None
        host_text, port_text = text[1:close], text[close + 2 :]
        if ":" not in host_text:  # brackets are for IPv6 addresses only
            return None
    else:
        host_text, colon, port_text = text.rpartition(":")
        if not colon or ":" in host_text:  # an IPv6 address needs its brackets
            return None
    host = _normalise_host(host_text)
    port = _parse_port(port_text)
    return None if host is None or port is None else (host, port)


def _parse_select_only(text: str) -> tuple[list[_FileRange] | None, str | None]:
    """A ``so`` value's valid ranges (None if it is dropped whole), and what was wrong
    with it, if anything.

    As libtorrent: a value holding anything besides digits, ``,`` and ``-`` is
    dropped whole; otherwise only its bad entries are; empty entries are fine. A
    value not dropped selects its valid ranges, and so no file when none is valid.
    """
    if not _SO_VALUE.fullmatch(text):
        return None, f"only digits, ',' and '-' belong in a select-only list: {_show(text)}"
    ranges: list[_FileRange] = []
    problem = None
    for entry in text.split(","):
        if not entry:
            continue
        first_text, dash, last_text = entry.partition("-")
        if not dash:
            last_text = first_text
        if not (_DIGITS.fullmatch(first_text) and _DIGITS.fullmatch(last_text)):
            problem = problem or f"{_show(entry)} is neither an index nor a range first-last"
            continue
        first = _file_index(first_text)
        last = _file_index(last_text)
        if last > _MAX_FILE_INDEX:
            problem = problem or f"{_show(entry)} names a file index over {_MAX_FILE_INDEX}"
        elif first > last:
            problem = problem or f"{_show(entry)} is an inverted range"
        else:
            ranges.append((first, last))
    return ranges, problem


def _file_index(digits: str) -> int:
    """A ``so`` index, or one past the bound for any larger: leading zeros are read as
    libtorrent's atoi reads them, and int() never sees more digits than the bound has."""
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) <= _INDEX_DIGITS else _MAX_FILE_INDEX + 1


# --- checking and normalising fields -----------------------------------------------------


def _check_info_hash(value: object) -> None:
    if not isinstance(value, InfoHash):
        raise TypeError(f"info_hash: want an InfoHash, not {type(value).__name__}")


def _check_uri_type(value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"a magnet link is a str, not {type(value).__name__}")


def _as_tuple(parameter: str, values: Iterable[str]) -> tuple[str, ...]:
    if isinstance(values, str | bytes):  # a lone URL would otherwise become its characters
        raise TypeError(
            f"{parameter}: want an iterable of str, not a single {type(values).__name__}"
        )
    return tuple(values)


def _check_text(parameter: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{parameter}: want a str, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise MagnetError(
            parameter, f"a lone surrogate has no UTF-8 form: {_show(value)}"
        ) from None
    return value


def _texts(parameter: str, values: tuple[str, ...]) -> tuple[str, ...]:
    """Non-empty texts, duplicates dropped (the first kept)."""
    unique: dict[str, None] = {}
    for value in _as_tuple(parameter, values):
        if not _check_text(parameter, value):
            raise MagnetError(parameter, "an empty value")
        unique[value] = None
    return tuple(unique)


def _endpoints(parameter: str, values: Iterable[object]) -> tuple[_Endpoint, ...]:
    unique: dict[_Endpoint, None] = {}
    for value in values:
        if not (isinstance(value, tuple) and len(value) == 2):
            raise TypeError(f"{parameter}: want (host, port) tuples, not {value!r}")
        host_text, port = value
        host = _normalise_host(_check_text(parameter, host_text))
        if host is None:
            raise MagnetError(
                parameter,
                f"not a hostname or an IP address (IPv6 without brackets): {_show(host_text)}",
            )
        if type(port) is not int or not 1 <= port <= 65535:
            raise MagnetError(parameter, f"a port is an int from 1 to 65535, not {port!r}")
        unique[host, port] = None
    return tuple(unique)


def _check_ranges(ranges: Iterable[object] | None) -> tuple[_FileRange, ...] | None:
    """Sorted, merged ranges (adjacent ones joined); None stays None (every file), and
    no range at all is an empty selection (no file)."""
    if ranges is None:
        return None
    checked: list[_FileRange] = []
    for entry in ranges:
        if not (isinstance(entry, tuple) and len(entry) == 2):
            raise TypeError(f"so: want (first, last) tuples, not {entry!r}")
        first, last = entry
        if type(first) is not int or type(last) is not int:
            raise TypeError(f"so: file indices are ints, not {entry!r}")
        if not 0 <= first <= last <= _MAX_FILE_INDEX:
            raise MagnetError(
                "so", f"want 0 <= first <= last <= {_MAX_FILE_INDEX}, not ({first}, {last})"
            )
        checked.append((first, last))
    merged: list[list[int]] = []
    for first, last in sorted(checked):
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return tuple((first, last) for first, last in merged)


def _check_extra(extra: Iterable[object]) -> tuple[tuple[str, str], ...]:
    """Extras that read back as extras; other ``xt`` topics first, as they are written."""
    topics: list[tuple[str, str]] = []
    others: list[tuple[str, str]] = []
    for pair in extra:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"extra: want (name, value) tuples, not {pair!r}")
        name = _check_text("extra", pair[0])
        value = _check_text(name, pair[1])
        if name == "xt" and _topic_kind(value) is None:
            topics.append((name, value))
        elif not name:
            raise MagnetError("", "an extra parameter needs a name")
        elif parameter_key(name) in _KNOWN:
            raise MagnetError(name, "a parameter with a field of its own cannot be an extra")
        else:
            others.append((name, value))
    return (*topics, *others)


# --- writing ---------------------------------------------------------------------------


def _quote(text: str, safe: str) -> str:
    return quote(text, safe=safe)


def _quote_words(text: str) -> str:
    # Spaces as '+', as webtorrent and the vectors write ``dn`` and ``kt``.
    return quote(text, safe=_COMPONENT_SAFE + " ").replace(" ", "+")


def _quote_source(text: str) -> str:
    # A URN (BEP 46's urn:btpk:, urn:sha1:, ...) keeps its colons, as webtorrent writes it.
    return quote(text, safe=_URN_SAFE if _ascii_lower(text[:4]) == "urn:" else _COMPONENT_SAFE)


def _format_endpoint(endpoint: _Endpoint) -> str:
    host, port = endpoint
    text = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return quote(text, safe=_ENDPOINT_SAFE)


def _format_range(entry: _FileRange) -> str:
    first, last = entry
    return str(first) if first == last else f"{first}-{last}"


def _show(text: str, limit: int = 60) -> str:
    """``repr`` of a text, cut short: a hostile link can be 64 KiB."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
