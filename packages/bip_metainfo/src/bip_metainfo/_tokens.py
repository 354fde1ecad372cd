"""A bound on how many bencoded values a torrent may hold, checked before decoding.

Decoding builds one Python object per value: ten megabytes of ``lelele...`` hidden in an
unknown key are five million empty lists, 400 MB and seconds of work, before a single
field is looked at. libtorrent refuses a torrent of more than ``max_decode_tokens``
(3,000,000) tokens; :func:`check_value_count` refuses one of more than
:data:`DEFAULT_MAX_VALUES` values, without allocating anything per value.
"""

from __future__ import annotations

from ._errors import MetainfoError, MetainfoErrorKind

__all__ = ["DEFAULT_MAX_VALUES", "check_value_count"]

DEFAULT_MAX_VALUES = 5_000_000
"""The most bencoded values (strings, integers, lists, dictionaries) a torrent or info
dictionary may hold by default: room for :data:`~bip_metainfo.DEFAULT_MAX_FILES` files of
either version (about 8 values each), and at most some 400 MB of decoded objects."""

_E = 0x65  # "e": ends an integer, a list or a dictionary
_I = 0x69
_L = 0x6C
_D = 0x64


def check_value_count(data: bytes, limit: int = DEFAULT_MAX_VALUES) -> None:
    """Refuse ``data`` if the value at its start holds more than ``limit`` values.

    Every list, dictionary and integer ends in an ``e`` byte and every string has a
    ``:``, so their counts bound the number of values: real torrents, whose bulk is a few
    long strings (``pieces``, piece layers), pass at C speed. Only input past that bound
    is counted exactly, a scan that stops after ``limit`` values and allocates nothing
    per value. Malformed input is left for the decoder to refuse.

    Raises:
        MetainfoError: ``TOO_MANY_VALUES``.
    """
    if data.count(b"e") + data.count(b":") <= limit:
        return
    count = _count_values(data, limit)
    if count > limit:
        raise MetainfoError(
            MetainfoErrorKind.TOO_MANY_VALUES,
            f"more than {limit} bencoded values (a real torrent holds far fewer)",
        )


def _count_values(data: bytes, limit: int) -> int:
    """How many values the first value of ``data`` holds, counting stops past ``limit``."""
    count = 0
    depth = 0
    i = 0
    size = len(data)
    while i < size and count <= limit:
        byte = data[i]
        if byte == _E:
            depth -= 1
            i += 1
        elif byte in (_L, _D):
            count += 1
            depth += 1
            i += 1
        elif byte == _I:
            count += 1
            end = data.find(b"e", i)
            if end < 0:
                return count
            i = end + 1
        else:
            count += 1
            colon = data.find(b":", i, i + 21)  # a length longer than 20 digits is no length
            if colon < 0 or not data[i:colon].isdigit():
                return count
            i = colon + 1 + int(data[i:colon])
        if depth <= 0:
            break  # the first value is complete: what follows it is not read
    return count
