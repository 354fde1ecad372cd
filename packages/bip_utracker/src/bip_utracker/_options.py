"""BEP 41 options: the extension area at the end of a UDP tracker announce request.

An announce request is 98 bytes; whatever follows is a list of options. Each option starts
with a type byte. Types 0 (EndOfOptions) and 1 (NOP) are that byte alone; every other type,
known or not, has a length byte and that many bytes of data, which is what lets a tracker skip
types it does not know. The list ends at EndOfOptions or at the end of the datagram; bytes after
EndOfOptions are ignored (some clients pad there).

URLData (type 2) carries the path and query of the tracker URL, at most 255 bytes per option;
a longer value is split over several URLData options that are concatenated in order.

>>> options = parse_options(bytes.fromhex("020c2f6469723f613d6226633d64010100"))
>>> url_data_of(options)
b'/dir?a=b&c=d'
>>> encode_options(url_data_options(b"/dir?a=b&c=d")).hex()
'020c2f6469723f613d6226633d64'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from ._errors import LocalProtocolError, MalformedPacketError

__all__ = [
    "MAX_OPTIONS",
    "MAX_OPTION_DATA",
    "Option",
    "OptionType",
    "encode_options",
    "options_are_well_formed",
    "parse_options",
    "url_data_of",
    "url_data_options",
]

MAX_OPTION_DATA = 255
"""The most data one option can carry: its length is a single byte."""

MAX_OPTIONS = 256
"""How many options :func:`parse_options` keeps before refusing the datagram.

A datagram of 64 KiB could otherwise make us build tens of thousands of objects out of NOPs;
no client sends more than a handful of options, and 256 URLData options already hold 64 KiB.
"""


class OptionType(IntEnum):
    """The option types BEP 41 assigns; other values are valid and skipped by their length."""

    END_OF_OPTIONS = 0
    NOP = 1
    URL_DATA = 2


@dataclass(frozen=True, slots=True)
class Option:
    """One BEP 41 option as found in (or to be written into) an announce request.

    Attributes:
        type: the option type, 0..255 (see :class:`OptionType`; other types are kept raw).
        data: the option's data: empty for types 0 and 1, at most 255 bytes otherwise.

    >>> Option(OptionType.URL_DATA, b"/announce").encode().hex()
    '02092f616e6e6f756e6365'
    >>> Option(OptionType.NOP).encode()
    b'\\x01'
    """

    type: int
    data: bytes = b""

    def encode(self) -> bytes:
        """The option's bytes: the type byte, then (for types >= 2) the length byte and data."""
        kind = self.type
        if isinstance(kind, bool) or not isinstance(kind, int) or not 0 <= kind <= 0xFF:
            raise LocalProtocolError(f"an option type is in 0..255, got {kind!r}")
        data = self.data
        if not isinstance(data, bytes):
            raise LocalProtocolError(f"option data is bytes, got {type(data).__name__}")
        if kind <= OptionType.NOP:
            if data:
                raise LocalProtocolError(f"option type {kind} carries no data")
            return bytes((kind,))
        if len(data) > MAX_OPTION_DATA:
            raise LocalProtocolError(
                f"an option carries at most {MAX_OPTION_DATA} bytes, got {len(data)}"
            )
        return bytes((kind, len(data))) + data


def parse_options(data: bytes | bytearray | memoryview) -> tuple[Option, ...]:
    """Parse the options area of an announce request (everything after byte 98).

    Every option is returned in order, NOPs included, so that a request decodes and re-encodes
    to the same bytes; EndOfOptions and anything after it is not returned. A truncated option
    (a missing length byte, or fewer data bytes than its length says) or more than
    :data:`MAX_OPTIONS` options raise :class:`MalformedPacketError`.

    >>> parse_options(bytes.fromhex("0200"))
    (Option(type=<OptionType.URL_DATA: 2>, data=b''),)
    >>> parse_options(b"\\x00\\x00")
    ()
    >>> parse_options(bytes.fromhex("0905616263"))
    Traceback (most recent call last):
    ...
    bip_utracker._errors.MalformedPacketError: option type 9 at offset 0 declares 5 bytes, 3 left
    """
    raw = bytes(data)
    options: list[Option] = []
    position = 0
    end = len(raw)
    while position < end:
        kind = raw[position]
        if kind == OptionType.END_OF_OPTIONS:
            break
        if len(options) >= MAX_OPTIONS:
            raise MalformedPacketError(f"more than {MAX_OPTIONS} options in one announce")
        if kind == OptionType.NOP:
            options.append(_NOP)
            position += 1
            continue
        if position + 1 >= end:
            raise MalformedPacketError(f"option type {kind} at offset {position} has no length")
        length = raw[position + 1]
        start = position + 2
        if start + length > end:
            raise MalformedPacketError(
                f"option type {kind} at offset {position} declares {length} bytes, "
                f"{end - start} left"
            )
        options.append(Option(_known_type(kind), raw[start : start + length]))
        position = start + length
    return tuple(options)


# A run of NOPs, one more than may be accepted at most: the match never reads further.
_NOP_RUN = re.compile(rb"\x01{0,%d}" % (MAX_OPTIONS + 1))


def options_are_well_formed(data: bytes | bytearray | memoryview) -> bool:
    """Whether :func:`parse_options` would accept *data*, found without building anything.

    A tracker that does not use the options still has to tell a well-formed announce from
    garbage, before it knows whether the sender is genuine: this walk costs a few microseconds
    even for a datagram packed with hundreds of options (runs of NOPs are skipped in one step),
    where parsing them into objects cost a hundred.

    >>> options_are_well_formed(bytes.fromhex("020c2f6469723f613d6226633d64010100ff"))
    True
    >>> options_are_well_formed(bytes.fromhex("0905616263"))
    False
    """
    end = len(data)
    position = 0
    count = 0
    match = _NOP_RUN.match
    while position < end:
        kind = data[position]
        if kind == 1:
            nops = match(data, position)
            assert nops is not None  # (a pattern that may match nothing always matches)
            run_end = nops.end()
            count += run_end - position
            position = run_end
            if count > MAX_OPTIONS:
                return False
            continue
        if kind == 0:
            return True
        count += 1
        if count > MAX_OPTIONS or position + 1 >= end:
            return False
        position += 2 + data[position + 1]
        if position > end:
            return False
    return True


def encode_options(options: Iterable[Option]) -> bytes:
    """Concatenate the encoded *options* (no EndOfOptions is added: the datagram's end is one).

    >>> encode_options([Option(OptionType.NOP), Option(OptionType.URL_DATA, b"/a")]).hex()
    '0102022f61'
    """
    return b"".join(option.encode() for option in options)


def url_data_options(url_data: bytes) -> tuple[Option, ...]:
    """The URLData options that carry *url_data*: chunks of at most 255 bytes, in order.

    Empty *url_data* gives no option at all (a request without the extension).

    >>> [len(option.data) for option in url_data_options(b"x" * 600)]
    [255, 255, 90]
    """
    return tuple(
        Option(OptionType.URL_DATA, url_data[start : start + MAX_OPTION_DATA])
        for start in range(0, len(url_data), MAX_OPTION_DATA)
    )


def url_data_of(options: Iterable[Option]) -> bytes:
    """The URLData of *options*: the data of every URLData option, concatenated in order.

    >>> url_data_of([Option(2, b"/a"), Option(1), Option(2, b"?b=c")])
    b'/a?b=c'
    """
    return b"".join(option.data for option in options if option.type == OptionType.URL_DATA)


def _known_type(kind: int) -> int:
    """The :class:`OptionType` member for *kind* when it has one, so reprs name it."""
    return OptionType.URL_DATA if kind == OptionType.URL_DATA else kind


_NOP = Option(OptionType.NOP)
