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
from ._errors import HandshakeError

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
_MAPPED: Final = 0xFFFF << 32
"""``::ffff:0.0.0.0``, the first IPv4-mapped IPv6 address, as an integer."""
_LINE_END: Final = re.compile(r"\r\n|\r|\n")
_V6_MAX: Final = (1 << 128) - 1


class IPFilterError(HandshakeError, ValueError):
    """A blocklist is malformed, or a filter was built from bad ranges.

    A :class:`ValueError` too, as it always was.

    Attributes:
        line: the 1-based line number of the malformed line, or ``None`` when no line
            is to blame (too many ranges, a bad argument).

    >>> str(IPFilterError("not an address: 'x'", line=3))
    "line 3: not an address: 'x'"
    """

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


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


def _apply(rules: Iterable[tuple[int, int, int, bool]]) -> dict[int, list[tuple[int, int]]]:
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

    for family, first, last, block in rules:
        if block is not batch_kind:
            flush()
            batch_kind = block
        if family == 6 and first >= _MAPPED and last <= _MAPPED + _V4_MAX:
            # Lookups judge ::ffff:a.b.c.d as a.b.c.d: a rule naming only such addresses is
            # an IPv4 rule (filed as IPv6 it would never match). One that spans more of the
            # IPv6 space (::/0) stays IPv6: it does not block every IPv4 peer too.
            batch[4].append((first - _MAPPED, last - _MAPPED))
        else:
            batch[family].append((first, last))
    flush()
    return blocked


def _raw_rules(rules: Iterable[tuple[IPRange, bool]]) -> Iterator[tuple[int, int, int, bool]]:
    """``(IPRange, blocked)`` rules as (family, first, last, blocked), checked."""
    for rule in rules:
        if not (isinstance(rule, tuple) and len(rule) == 2 and isinstance(rule[0], IPRange)):
            raise IPFilterError(f"a rule is an (IPRange, blocked) pair, not {rule!r}")
        span, block = rule
        yield span.family, int(span.first), int(span.last), bool(block)


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
        return cls._from_raw(_raw_rules(rules))

    @classmethod
    def _from_raw(cls, rules: Iterable[tuple[int, int, int, bool]]) -> IPFilter:
        """A filter from (family, first, last, blocked) rules, already checked."""
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
            TypeError: ``host`` is of another type.
        """
        if isinstance(host, PeerAddress):
            host = host.host
        elif isinstance(host, str):
            host = _parse_host(host)
        elif not isinstance(host, IPv4Address | IPv6Address):
            raise TypeError(f"a host is an IP address, a PeerAddress or text, not {host!r}")
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
        return IPFilter._from_raw(
            (family, first, last, True)
            for each in (self, other)
            for family in (4, 6)
            for first, last in zip(each._starts[family], each._ends[family], strict=True)
        )

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


_Raw = tuple[int, int, int, bool]
"""A rule as the parsers make it: family, first and last as integers, blocked. Lists run
to hundreds of thousands of lines: no address objects on the way."""
_V4_TEXT: Final = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\Z")
_V4_RANGE: Final = r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}"
_P2P_V4: Final = re.compile(rf"(.*):\s*({_V4_RANGE})\s*-\s*({_V4_RANGE})\Z")
"""The common P2P line (an IPv4 range), read in one match: the name runs to the last ':'."""
_COMMENT: Final = re.compile(r"[#;]")


def _is_number(text: str) -> bool:
    """Whether ``text`` is ASCII decimal digits only. ``str.isdigit`` also takes '²' and other
    scripts' digits: ``int`` reads '٣' as 3 and raises a bare ValueError for '²'."""
    return text.isascii() and text.isdigit()


def _host(text: str) -> tuple[int, int]:
    """An IPv4 or IPv6 address as (family, integer); IPv4 parts may have leading zeros,
    read as decimal (PeerGuardian lists). No scope id."""
    text = text.strip()
    match = _V4_TEXT.match(text)
    if match is not None:
        a, b, c, d = map(int, match.groups())
        if a > 255 or b > 255 or c > 255 or d > 255:
            raise _LineError(f"not an IPv4 address: {text!r}")
        return 4, (a << 24) | (b << 16) | (c << 8) | d
    if ":" not in text:
        raise _LineError(f"not an IPv4 address: {text!r}")
    if "%" in text:
        raise _LineError(f"an address with a scope id: {text!r}")
    try:
        return 6, int(IPv6Address(text))
    except AddressValueError:
        raise _LineError(f"not an IPv6 address: {text!r}") from None


def _parse_host(text: str) -> Host:
    """An address typed by a caller (:meth:`IPFilter.blocks`)."""
    try:
        family, value = _host(text)
    except _LineError as exc:
        raise IPFilterError(str(exc)) from None
    return IPv4Address(value) if family == 4 else IPv6Address(value)


def _is_address(text: str) -> bool:
    try:
        _host(text)
    except _LineError:
        return False
    return True


def _span(first: tuple[int, int], last: tuple[int, int]) -> _Raw:
    """A blocking rule from ``first`` to ``last``, checked as :class:`IPRange` checks."""
    if first[0] != last[0]:
        raise _LineError("a range's bounds are of one family")
    if first[1] > last[1]:
        kind = IPv4Address if first[0] == 4 else IPv6Address
        raise _LineError(f"a range starts before it ends: {kind(first[1])} > {kind(last[1])}")
    return first[0], first[1], last[1], True


def _line_range(text: str) -> _Raw:
    """``first-last`` (spaces allowed around the dash) or one address."""
    first, dash, last = text.partition("-")
    if not dash:
        host = _host(text)
        return _span(host, host)
    return _span(_host(first), _host(last))


def _line_p2p(line: str) -> _Raw:
    """``name:first-last``; the name may hold ':' (and '-') before an IPv4 range."""
    match = _P2P_V4.match(line)
    if match is not None:
        return _span(_host(match.group(2)), _host(match.group(3)))
    head, dash, last_text = line.rpartition("-")
    if not dash or ":" not in head or _is_address(head):
        # A bare IPv6 range has a ':' too, but no name: splitting it at a ':' would
        # read a different range.
        raise _LineError("not a P2P line (name:first-last)")
    last = _host(last_text)
    if last[0] == 4:
        _, _, first_text = head.rpartition(":")
        return _span(_host(first_text), last)
    # An IPv6 range: the name is what precedes the first ':' after which an address
    # parses (so an IPv6 range's name may not hold ':'; P2P lists are IPv4 in practice).
    # An address holds 8 colons at most (1:2:3:4:5:6:7::), so the one after the name is
    # among the last 9: trying every colon of a long name would cost its length squared.
    start = len(head.rsplit(":", 9)[0]) if head.count(":") > 9 else 0
    while (colon := head.find(":", start)) >= 0:
        try:
            first = _host(head[colon + 1 :])
        except _LineError:
            start = colon + 1
            continue
        return _span(first, last)
    raise _LineError(f"no IPv6 range start in {head!r}")


def _line_dat(line: str) -> _Raw | None:
    """``first - last , level , name``; ``None`` for a level that allows (over 127)."""
    fields = line.split(",", 2)
    span = _line_range(fields[0])
    if len(fields) < 2 or not fields[1].strip():
        return span  # no level: a plain range, blocked
    level_text = fields[1].strip()
    if not _is_number(level_text) or len(level_text) > 6:
        raise _LineError(f"not an access level: {level_text!r}")
    if int(level_text) > _DAT_BLOCK_LEVEL:
        return None
    return span


def _line_cidr(line: str) -> _Raw:
    """One CIDR block, range or address, then an optional ``#`` / ``;`` comment."""
    body = _COMMENT.split(line, maxsplit=1)[0].strip()
    if not body:
        raise _LineError("no address")
    if "-" in body:
        return _line_range(body)
    if len(body.split()) != 1:
        raise _LineError(f"not one address or CIDR block: {body!r}")
    address, slash, length_text = body.partition("/")
    family, value = _host(address)
    if not slash:
        return family, value, value, True
    bits = 32 if family == 4 else 128
    if not _is_number(length_text) or len(length_text) > 3 or int(length_text) > bits:
        raise _LineError(f"not a prefix length: {length_text!r}")
    span = (1 << (bits - int(length_text))) - 1
    # Host bits set (10.1.2.3/8) are common in lists: the block is the network's.
    first = value & ~span & (_V4_MAX if bits == 32 else _V6_MAX)
    return family, first, first | span, True


def _line_auto(line: str) -> _Raw | None:
    """The line in whichever format parses it, tried from the most specific.

    A P2P IPv4 line (the bulk of real lists) is read in one match. Otherwise DAT first
    (its commas), then a bare CIDR block / range / address, and P2P last: a name-less
    IPv6 range (``2001:db8::1-2001:db8::2``) would otherwise read as a P2P line named
    ``2001``.
    """
    match = _P2P_V4.match(line)
    if match is not None:
        return _span(_host(match.group(2)), _host(match.group(3)))
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
    rules: list[_Raw] = []
    skipped = 0
    first_error: IPFilterError | None = None
    # Lines end at LF, CRLF or CR only (splitlines would also split at form feeds and
    # other separators a name may hold, and every later line number would be off).
    lines = _LINE_END.split(text.removeprefix("\ufeff"))
    for number, raw in enumerate(lines, start=1):
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
    return ParsedIPFilter(IPFilter._from_raw(rules), len(rules), skipped, first_error)
