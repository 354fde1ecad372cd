"""Blocklists: which IP addresses a client refuses to talk to (libtorrent's ``ip_filter``).

An :class:`IPFilter` is an immutable set of blocked address ranges, IPv4 and IPv6 apart,
kept as sorted disjoint intervals so that :meth:`IPFilter.blocks` is one bisection
(O(log n)) however long the list. It is built from rules applied in order, the libtorrent
model: each rule blocks or allows an inclusive range, and a rule overrides what the rules
before it said about the addresses it covers (so "block 10.0.0.0/8, then allow 10.1.0.0/16"
blocks 10/8 except 10.1/16). Immutable, it can be shared by every task of a client and
replaced whole (:meth:`~bip_handshake.Handshaker.set_ip_filter`).

:func:`parse_ip_filter` reads the blocklist formats found in the wild, detected line by
line:

- P2P / PeerGuardian (Transmission, qBittorrent): ``name:first-last``;
- eMule ``ipfilter.dat``: ``first - last , level , name``; a level of 127 or less blocks
  (eMule's default filter level, as qBittorrent reads it), a higher one adds no rule;
- one CIDR block (``10.0.0.0/8``), one range (``first-last``) or one address per line,
  optionally followed by a ``#`` or ``;`` comment (Spamhaus DROP, FireHOL lists).

Blank lines and lines starting with ``#`` or ``//`` are comments. IPv4 parts with leading
zeros (``001.002.003.004``, common in P2P lists) are decimal, as PeerGuardian reads them.
Lists are messy, so parsing is lenient by default: a malformed line is skipped and
counted; ``strict=True`` raises :class:`IPFilterError` with its line number instead. What a
file can make us allocate is bounded: lines longer than ``max_line`` characters are
malformed, and more than ``max_ranges`` rules raise :class:`IPFilterError` in both modes.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address, IPv6Address
from typing import Final, Literal

from ._compact import PeerAddress

__all__ = [
    "DEFAULT_MAX_FILTER_LINE",
    "DEFAULT_MAX_FILTER_RANGES",
    "IPFilter",
    "IPFilterError",
    "IPFilterFormat",
    "IPRange",
    "ParsedIPFilter",
    "parse_ip_filter",
]

DEFAULT_MAX_FILTER_RANGES: Final = 1 << 21
"""Rules a parsed blocklist may hold by default (about two million).

The largest public lists (iblocklist's level1, about 240,000 ranges; bluetack's merged
lists) fit many times over, while a runaway file stops near a few hundred MB of memory.
"""
DEFAULT_MAX_FILTER_LINE: Final = 1024
"""Characters a blocklist line may have by default; longer lines are malformed."""
_DAT_BLOCK_LEVEL: Final = 127
"""eMule ``ipfilter.dat`` access levels up to this one block (eMule's default filter level)."""

IPFilterFormat = Literal["auto", "p2p", "dat", "cidr"]
"""A blocklist format for :func:`parse_ip_filter`; ``"auto"`` detects it per line."""

Host = IPv4Address | IPv6Address
_V4_MAX: Final = (1 << 32) - 1
_V6_MAX: Final = (1 << 128) - 1
_V4_PART: Final = re.compile(r"[0-9]{1,3}\Z")


class IPFilterError(ValueError):
    """A blocklist is malformed, or a filter was built from bad ranges.

    Attributes:
        line: the 1-based line number of the malformed line, or ``None`` when no line
            is to blame (too many ranges, a bad argument).

    >>> str(IPFilterError("not an address: 'x'", line=3))
    "line 3: not an address: 'x'"
    """

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line
        self.reason = message


@dataclass(frozen=True, slots=True, order=True)
class IPRange:
    """An inclusive range of addresses of one family, ``first`` to ``last``.

    >>> r = IPRange(IPv4Address("10.0.0.0"), IPv4Address("10.255.255.255"))
    >>> str(r), IPv4Address("10.1.2.3") in r
    ('10.0.0.0-10.255.255.255', True)

    Raises:
        IPFilterError: the bounds are of two families, or ``first`` is after ``last``.
    """

    first: IPv4Address | IPv6Address
    last: IPv4Address | IPv6Address

    def __post_init__(self) -> None:
        for bound in (self.first, self.last):
            if not isinstance(bound, IPv4Address | IPv6Address):
                raise IPFilterError(f"a range bound is an IPv4Address or IPv6Address: {bound!r}")
            if isinstance(bound, IPv6Address) and bound.scope_id is not None:
                raise IPFilterError(f"a range bound has no scope id: {bound}")
        if self.first.version != self.last.version:
            raise IPFilterError(f"a range's bounds are of one family: {self.first}, {self.last}")
        if int(self.first) > int(self.last):
            raise IPFilterError(f"a range starts before it ends: {self.first} > {self.last}")

    @property
    def family(self) -> Literal[4, 6]:
        """4 or 6."""
        return 4 if isinstance(self.first, IPv4Address) else 6

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, IPv4Address | IPv6Address) or host.version != self.first.version:
            return False
        return int(self.first) <= int(host) <= int(self.last)

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


Rule = tuple[IPRange, bool]
"""A range and whether it is blocked (``True``) or allowed (``False``)."""


def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint, non-adjacent intervals covering the same integers."""
    intervals.sort()
    merged: list[tuple[int, int]] = []
    for first, last in intervals:
        # Adjacent intervals merge too (last + 1 == first): one range, not two, as libtorrent.
        if merged and first <= merged[-1][1] + 1:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


def _subtract(
    blocked: list[tuple[int, int]], allowed: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """``blocked`` minus ``allowed``, both sorted and disjoint; one linear sweep."""
    result: list[tuple[int, int]] = []
    j = 0
    for first, last in blocked:
        while j < len(allowed) and allowed[j][1] < first:
            j += 1
        k = j
        start = first
        while k < len(allowed) and allowed[k][0] <= last:
            if allowed[k][0] > start:
                result.append((start, allowed[k][0] - 1))
            start = max(start, allowed[k][1] + 1)
            k += 1
        if start <= last:
            result.append((start, last))
    return result


def _apply(rules: Iterable[Rule]) -> dict[int, list[tuple[int, int]]]:
    """The blocked intervals per family after ``rules``, later rules overriding earlier.

    Consecutive rules of one kind are applied as one batch (sort, then a linear merge),
    so a plain blocklist costs O(n log n), not a quadratic run of insertions.
    """
    blocked: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    batch: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    batch_kind: bool | None = None

    def flush() -> None:
        for family in (4, 6):
            if not batch[family]:
                continue
            if batch_kind:
                blocked[family] = _merge(blocked[family] + batch[family])
            else:
                blocked[family] = _subtract(blocked[family], _merge(batch[family]))
            batch[family] = []

    for rule in rules:
        if not (isinstance(rule, tuple) and len(rule) == 2 and isinstance(rule[0], IPRange)):
            raise IPFilterError(f"a rule is an (IPRange, blocked) pair, not {rule!r}")
        span, block = rule
        block = bool(block)
        if block is not batch_kind:
            flush()
            batch_kind = block
        batch[span.family].append((int(span.first), int(span.last)))
    flush()
    return blocked


class IPFilter:
    """An immutable blocklist: sorted disjoint blocked ranges, IPv4 and IPv6 apart.

    Build one with :meth:`from_rules` (ordered block/allow rules, later ones overriding),
    :meth:`blocking` (blocked ranges only), or :func:`parse_ip_filter`. An empty
    ``IPFilter()`` blocks nothing. An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is
    judged as the IPv4 address it carries.

    Iterating gives the merged blocked ranges (IPv4 first, each family in order);
    ``len()`` counts them. Two filters are equal when they block the same addresses.

    >>> f = IPFilter.from_rules([
    ...     (IPRange(IPv4Address("10.0.0.0"), IPv4Address("10.255.255.255")), True),
    ...     (IPRange(IPv4Address("10.1.0.0"), IPv4Address("10.1.255.255")), False),
    ... ])
    >>> f.blocks("10.2.0.1"), f.blocks("10.1.0.1"), f.blocks("::ffff:10.0.0.1"), len(f)
    (True, False, True, 2)
    """

    __slots__ = ("_ends", "_starts")

    _starts: dict[int, tuple[int, ...]]
    _ends: dict[int, tuple[int, ...]]

    def __init__(self) -> None:
        """An empty filter, blocking nothing."""
        self._starts = {4: (), 6: ()}
        self._ends = {4: (), 6: ()}

    @classmethod
    def from_rules(cls, rules: Iterable[tuple[IPRange, bool]]) -> IPFilter:
        """A filter from ``(range, blocked)`` rules applied in order (libtorrent's
        ``add_rule``): a rule decides for the addresses it covers, over earlier rules.

        Raises:
            IPFilterError: a rule is not an ``(IPRange, bool)`` pair.
        """
        intervals = _apply(rules)
        result = cls()
        result._starts = {f: tuple(first for first, _ in intervals[f]) for f in (4, 6)}
        result._ends = {f: tuple(last for _, last in intervals[f]) for f in (4, 6)}
        return result

    @classmethod
    def blocking(cls, ranges: Iterable[IPRange]) -> IPFilter:
        """A filter blocking every address in ``ranges`` (overlaps merged).

        >>> len(IPFilter.blocking([IPRange(IPv4Address("1.0.0.0"), IPv4Address("1.0.0.9")),
        ...                        IPRange(IPv4Address("1.0.0.5"), IPv4Address("1.0.0.20"))]))
        1
        """
        return cls.from_rules((span, True) for span in ranges)

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        format: IPFilterFormat = "auto",
        max_ranges: int = DEFAULT_MAX_FILTER_RANGES,
        max_line: int = DEFAULT_MAX_FILTER_LINE,
    ) -> IPFilter:
        """A blocklist's filter, strictly: any malformed line raises (see :func:`parse_ip_filter`).

        Raises:
            IPFilterError: a malformed line (with its number), or too many ranges.
        """
        return parse_ip_filter(
            text, format=format, strict=True, max_ranges=max_ranges, max_line=max_line
        ).filter

    def blocks(self, host: IPv4Address | IPv6Address | PeerAddress | str) -> bool:
        """Whether ``host`` (an address, a :class:`PeerAddress`, or its text) is blocked.

        Raises:
            IPFilterError: ``host`` is text that is not an IP address.
        """
        if isinstance(host, PeerAddress):
            host = host.host
        elif isinstance(host, str):
            host = _parse_host(host.strip())
        if isinstance(host, IPv6Address) and host.ipv4_mapped is not None:
            host = host.ipv4_mapped
        family = 4 if isinstance(host, IPv4Address) else 6
        value = int(host)
        i = bisect_right(self._starts[family], value) - 1
        return i >= 0 and self._ends[family][i] >= value

    def allows(self, host: IPv4Address | IPv6Address | PeerAddress | str) -> bool:
        """``not blocks(host)``."""
        return not self.blocks(host)

    def __or__(self, other: IPFilter) -> IPFilter:
        """A filter blocking what either blocks (several blocklists in one)."""
        if not isinstance(other, IPFilter):
            return NotImplemented
        return IPFilter.blocking([*self, *other])

    def __len__(self) -> int:
        return len(self._starts[4]) + len(self._starts[6])

    def __iter__(self) -> Iterator[IPRange]:
        for family, kind in ((4, IPv4Address), (6, IPv6Address)):
            for first, last in zip(self._starts[family], self._ends[family], strict=True):
                yield IPRange(kind(first), kind(last))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IPFilter):
            return NotImplemented
        return self._starts == other._starts and self._ends == other._ends

    def __hash__(self) -> int:
        return hash((self._starts[4], self._ends[4], self._starts[6], self._ends[6]))

    def __repr__(self) -> str:
        return f"<IPFilter: {len(self._starts[4])} IPv4 and {len(self._starts[6])} IPv6 ranges>"

    def to_text(self) -> str:
        """The blocked ranges in P2P format, one ``blocked:first-last`` line each, which
        :func:`parse_ip_filter` reads back into an equal filter."""
        return "".join(f"blocked:{span}\n" for span in self)


# -- parsing ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedIPFilter:
    """What :func:`parse_ip_filter` read.

    Attributes:
        filter: the filter.
        rules: the rules read (a range and whether it blocks).
        skipped: malformed lines skipped (always 0 in strict mode).
        first_error: the first malformed line's error, to show the user, or ``None``.
    """

    filter: IPFilter
    rules: int
    skipped: int
    first_error: IPFilterError | None


class _LineError(Exception):
    """A line is malformed; the caller adds the line number."""


def _parse_v4(text: str) -> IPv4Address:
    """An IPv4 address; parts may have leading zeros, read as decimal (PeerGuardian lists)."""
    parts = text.split(".")
    if len(parts) != 4 or not all(_V4_PART.match(part) for part in parts):
        raise _LineError(f"not an IPv4 address: {text!r}")
    values = [int(part) for part in parts]
    if any(value > 255 for value in values):
        raise _LineError(f"not an IPv4 address: {text!r}")
    return IPv4Address(bytes(values))


def _parse_host(text: str) -> Host:
    """An IPv4 or IPv6 address (no scope id)."""
    try:
        if ":" in text:
            if "%" in text:
                raise _LineError(f"an address with a scope id: {text!r}")
            try:
                return IPv6Address(text)
            except AddressValueError:
                raise _LineError(f"not an IPv6 address: {text!r}") from None
        return _parse_v4(text)
    except _LineError as exc:
        raise IPFilterError(str(exc)) from None


def _host(text: str) -> Host:
    """:func:`_parse_host` raising :class:`_LineError`, for the line parsers."""
    try:
        return _parse_host(text.strip())
    except IPFilterError as exc:
        raise _LineError(exc.reason) from None


def _is_address(text: str) -> bool:
    try:
        _host(text)
    except _LineError:
        return False
    return True


def _span(first: Host, last: Host) -> IPRange:
    try:
        return IPRange(first, last)
    except IPFilterError as exc:
        raise _LineError(exc.reason) from None


def _line_range(text: str) -> IPRange:
    """``first-last`` (spaces allowed around the dash) or one address."""
    first, dash, last = text.partition("-")
    if not dash:
        host = _host(text)
        return IPRange(host, host)
    return _span(_host(first), _host(last))


def _line_p2p(line: str) -> Rule:
    """``name:first-last``; the name may hold ':' (and '-') before an IPv4 range."""
    head, dash, last_text = line.rpartition("-")
    if not dash or ":" not in head or _is_address(head):
        # A bare IPv6 range has a ':' too, but no name: splitting it at a ':' would
        # read a different range.
        raise _LineError("not a P2P line (name:first-last)")
    last = _host(last_text)
    if isinstance(last, IPv4Address):
        _, _, first_text = head.rpartition(":")
        return _span(_host(first_text), last), True
    # An IPv6 range: the name is what precedes the first ':' after which an address
    # parses (so an IPv6 range's name may not hold ':'; P2P lists are IPv4 in practice).
    start = 0
    while (colon := head.find(":", start)) >= 0:
        try:
            first = _host(head[colon + 1 :])
        except _LineError:
            start = colon + 1
            continue
        return _span(first, last), True
    raise _LineError(f"no IPv6 range start in {head!r}")


def _line_dat(line: str) -> Rule | None:
    """``first - last , level , name``; ``None`` for a level that allows (over 127)."""
    fields = line.split(",", 2)
    span = _line_range(fields[0])
    if len(fields) < 2 or not fields[1].strip():
        return span, True  # no level: a plain range, blocked
    level_text = fields[1].strip()
    if not level_text.isdigit() or len(level_text) > 6:
        raise _LineError(f"not an access level: {level_text!r}")
    if int(level_text) > _DAT_BLOCK_LEVEL:
        return None
    return span, True


def _line_cidr(line: str) -> Rule:
    """One CIDR block, range or address, then an optional ``#`` / ``;`` comment."""
    body = re.split(r"[#;]", line, maxsplit=1)[0].strip()
    if not body:
        raise _LineError("no address")
    if "-" in body:
        return _line_range(body), True
    if len(body.split()) != 1:
        raise _LineError(f"not one address or CIDR block: {body!r}")
    address, slash, length_text = body.partition("/")
    host = _host(address)
    if not slash:
        return IPRange(host, host), True
    bits = 32 if isinstance(host, IPv4Address) else 128
    if not length_text.isdigit() or len(length_text) > 3 or int(length_text) > bits:
        raise _LineError(f"not a prefix length: {length_text!r}")
    span = (1 << (bits - int(length_text))) - 1
    # Host bits set (10.1.2.3/8) are common in lists: the block is the network's.
    first = int(host) & ~span & (_V4_MAX if bits == 32 else _V6_MAX)
    kind = IPv4Address if bits == 32 else IPv6Address
    return IPRange(kind(first), kind(first | span)), True


def _line_auto(line: str) -> Rule | None:
    """The line in whichever format parses it, tried from the most specific.

    DAT first (its commas), then a bare CIDR block / range / address, and P2P last: a
    name-less IPv6 range (``2001:db8::1-2001:db8::2``) would otherwise read as a P2P
    line named ``2001``.
    """
    attempts = []
    if "," in line:
        attempts.append(_line_dat)
    attempts.append(_line_cidr)
    head = line.rpartition("-")[0]
    named = ":" in head and not _is_address(head)
    if named:
        attempts.append(_line_p2p)
    errors: list[_LineError] = []
    for attempt in attempts:
        try:
            return attempt(line)
        except _LineError as exc:
            errors.append(exc)
    # Say what is wrong in the format the line looks like: a named range is a P2P line.
    raise errors[-1] if named else errors[0]


_PARSERS: Final = {"auto": _line_auto, "p2p": _line_p2p, "dat": _line_dat, "cidr": _line_cidr}


def parse_ip_filter(
    text: str,
    *,
    format: IPFilterFormat = "auto",
    strict: bool = False,
    max_ranges: int = DEFAULT_MAX_FILTER_RANGES,
    max_line: int = DEFAULT_MAX_FILTER_LINE,
) -> ParsedIPFilter:
    """Read a blocklist (P2P, eMule DAT, CIDR; see the module docstring).

    Every range read blocks (a DAT line whose level allows adds no rule). Lines end
    with LF, CRLF or CR; a leading byte order mark is ignored.

    Args:
        text: the blocklist's text.
        format: ``"auto"`` (detect per line), ``"p2p"``, ``"dat"`` or ``"cidr"``.
        strict: raise on the first malformed line instead of skipping it.
        max_ranges: rules the list may hold; past it :class:`IPFilterError` (in
            both modes: a bound, not a malformed line).
        max_line: characters a line may have; a longer one is malformed.

    Raises:
        IPFilterError: a malformed line in strict mode (with its ``line`` number), or
            more than ``max_ranges`` rules.
        TypeError: ``text`` is not a ``str``.
        ValueError: ``format`` is unknown or a bound is not positive.

    >>> parsed = parse_ip_filter("# list\\nBad Guys:001.002.003.004-1.2.3.255\\n10.0.0.0/8\\nx\\n")
    >>> parsed.filter.blocks("1.2.3.100"), parsed.rules, parsed.skipped
    (True, 2, 1)
    """
    if not isinstance(text, str):
        raise TypeError(f"a blocklist is text (str), not {type(text).__name__}")
    parser = _PARSERS.get(format)
    if parser is None:
        raise ValueError(f"unknown blocklist format {format!r}")
    if max_ranges < 1 or max_line < 1:
        raise ValueError("max_ranges and max_line must be positive")
    rules: list[Rule] = []
    skipped = 0
    first_error: IPFilterError | None = None
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "//")):
            continue
        try:
            if len(line) > max_line:
                raise _LineError(f"longer than {max_line} characters")
            rule = parser(line)
        except _LineError as exc:
            error = IPFilterError(str(exc), line=number)
            if strict:
                raise error from None
            skipped += 1
            first_error = first_error or error
            continue
        if rule is None:
            continue
        if len(rules) >= max_ranges:
            raise IPFilterError(f"more than {max_ranges} ranges", line=number)
        rules.append(rule)
    return ParsedIPFilter(IPFilter.from_rules(rules), len(rules), skipped, first_error)
