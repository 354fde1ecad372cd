"""Decoding: bytes in, values out.

Two decoders accept exactly the same documents and build the same values:

- :mod:`._fast_decode`, a small recursive one for the common case, tried first.
  It recurses at most :data:`~._fast_decode.FAST_DEPTH` levels and only tells
  valid input from everything else;
- the general decoder here, which handles whatever the fast one gives up on
  (invalid or unusual input, a caller already deep in its own stack) and every
  container nested deeper than the fast one goes.

The general decoder is one loop over an explicit stack, never recursion, so no
input can raise ``RecursionError`` whatever the caller's own stack depth. It is
written for CPython's speed too:

- one pass through the loop reads a whole dict entry (key and value) or a whole
  list item, and knows which of the two it is reading without a state machine;
- it checks only what it must to tell valid input from invalid, and hands every
  failure to :mod:`._diagnose`, which works out exactly what is wrong and where;
- rare cases (unsorted or duplicate keys, a root that is not a container, keys
  as ``str``) leave the loop for functions of their own.
"""

from __future__ import annotations

import re
from typing import Any, Literal, overload

from . import _diagnose as diagnose
from ._errors import BencodeDecodeError, DecodeErrorKind
from ._fast_decode import FAST_DEPTH, Fallback, fast_dict, fast_list
from ._text_keys import with_str_keys
from ._types import TextKeyValue, Value

__all__ = ["DEFAULT_MAX_DEPTH", "Buffer", "decode", "decode_prefix"]

Buffer = bytes | bytearray | memoryview
"""The input types the decoder accepts."""

DEFAULT_MAX_DEPTH = 512
"""How deeply lists and dictionaries may nest by default. Real documents nest a few
levels (a BEP 52 file tree one level per directory); the limit keeps code that
walks a decoded value recursively safe from hostile input."""


def _as_bytes(data: object) -> bytes:
    if type(data) is bytes:
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    kind = type(data).__name__
    raise TypeError(f"bencoded input must be bytes, bytearray or memoryview, not {kind}")


def _check_max_depth(max_depth: int) -> None:
    if type(max_depth) is not int or max_depth < 0:
        raise ValueError(f"max_depth must be a non-negative int, not {max_depth!r}")


@overload
def decode(
    data: Buffer,
    *,
    lenient: bool = ...,
    max_depth: int = ...,
    str_keys: Literal[False] = ...,
) -> Value: ...
@overload
def decode(
    data: Buffer,
    *,
    lenient: bool = ...,
    max_depth: int = ...,
    str_keys: Literal[True],
) -> TextKeyValue: ...
def decode(
    data: Buffer,
    *,
    lenient: bool = False,
    max_depth: int = DEFAULT_MAX_DEPTH,
    str_keys: bool = False,
) -> Value | TextKeyValue:
    """Decode one complete bencoded document.

    Args:
        data: the document. Nothing may follow it (use :func:`decode_prefix` to
            read a value at the start of a longer buffer).
        lenient: accept dictionaries whose keys are not in sorted order, as some
            torrents in the wild have. Everything else stays strict: duplicate keys,
            leading zeros, ``-0``, truncated strings and trailing data are still
            errors. Keys keep the order in which the input gives them.
        max_depth: how deeply lists and dictionaries may nest (a list holding a
            list has depth 2). Deeper input raises ``DEPTH_EXCEEDED``.
        str_keys: decode every dictionary key from UTF-8 to ``str``, for JSON-like
            use. A key that is not UTF-8 raises ``NON_UTF8_KEY``.

    Returns:
        ``int``, ``bytes``, ``list`` or ``dict`` (keyed by ``bytes``, or ``str``
        with ``str_keys``), nested.

    Raises:
        BencodeDecodeError: the input is not one valid bencoded value; the error's
            ``kind`` says what is wrong and ``offset`` where.
        TypeError: ``data`` is not bytes-like.
        ValueError: ``max_depth`` is negative.
    """
    if type(data) is not bytes:
        data = _as_bytes(data)
    if max_depth != DEFAULT_MAX_DEPTH:
        _check_max_depth(max_depth)
    value, end = _decode_from(data, 0, lenient, max_depth)
    if end != len(data):
        raise BencodeDecodeError(
            DecodeErrorKind.TRAILING_DATA,
            end,
            f"{len(data) - end} byte(s) of trailing data after a complete value",
        )
    if str_keys:
        return with_str_keys(value, data)
    return value


def decode_prefix(
    data: Buffer,
    start: int = 0,
    *,
    lenient: bool = False,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> tuple[Value, int]:
    """Decode the one value that begins at ``data[start]`` and say where it ends.

    For framings that put a bencoded value in front of other bytes, such as a
    BEP 9 ``ut_metadata`` data message (a dict, then a piece of raw metadata), or a
    buffer holding several values back to back.

    Args:
        data: the buffer.
        start: offset of the value's first byte.
        lenient: as for :func:`decode`.
        max_depth: as for :func:`decode`.

    Returns:
        ``(value, end)``: the value, and the offset just past its last byte (so
        ``data[end:]`` is what follows it).

    Raises:
        BencodeDecodeError: no valid value starts at ``start`` (offsets in the
            error count from the start of ``data``).
        TypeError: ``data`` is not bytes-like.
        ValueError: ``start`` is outside ``data`` or ``max_depth`` is negative.
    """
    buf = _as_bytes(data)
    _check_max_depth(max_depth)
    if type(start) is not int or not 0 <= start <= len(buf):
        raise ValueError(f"start must be an offset within the data (0..{len(buf)}), not {start!r}")
    return _decode_from(buf, start, lenient, max_depth)


class _Unordered:
    """Stands in for a dict's latest key once the dict is known to be unsorted.

    Every key compares ``<=`` to it, so each later key of that dict leaves the fast
    path for :func:`_misordered_key`, which checks it for duplicates (lenient mode).
    """

    __slots__ = ()

    def __ge__(self, other: object) -> bool:
        return True


_UNORDERED = _Unordered()


def _misordered_key(pos: int, key: bytes, last: Any, top: Any, lenient: bool) -> Any:
    """Handle a key that does not sort after ``last``; return what the next must sort after.

    Reached for the first key of a dict when it is ``b""`` (``last`` starts as
    ``b""``), for unsorted or duplicate keys, and, in lenient mode, for every key
    after the first unsorted one.
    """
    if not top:  # the first key, b"": nothing to be out of order with
        return key
    if key in top:
        raise diagnose.duplicate_key(pos, key)
    if not lenient:
        raise diagnose.unsorted_key(pos, key, last)
    return _UNORDERED


_STRING_HEAD = re.compile(rb"(0|[1-9][0-9]*):")
_INTEGER = re.compile(rb"i(0|-?[1-9][0-9]*)e")


def _decode_scalar(data: bytes, pos: int) -> tuple[Value, int]:
    """Decode a string or integer that is a whole document (rare: documents are dicts)."""
    if data[pos] == 105:  # "i"
        match = _INTEGER.match(data, pos)
        if match is None:
            raise diagnose.integer_error(data, pos)
        try:
            return int(match[1]), match.end()
        except ValueError:  # more digits than int() will convert
            raise diagnose.integer_error(data, pos) from None
    if 47 < data[pos] < 58:
        match = _STRING_HEAD.match(data, pos, pos + 21)
        if match is None:
            raise diagnose.string_error(data, pos)
        end = match.end() + int(match[1])
        if end > len(data):
            raise diagnose.string_error(data, pos)
        return data[match.end() : end], end
    raise diagnose.unexpected_byte(data, pos, in_dict=False)


def _decode_from(data: bytes, pos: int, lenient: bool, max_depth: int) -> tuple[Value, int]:
    """Decode the value at ``data[pos]``; return it and the offset after it."""
    if max_depth >= FAST_DEPTH:  # else the general decoder's DEPTH_EXCEEDED is near
        try:
            c = data[pos]
            if c == 100:  # "d"
                return fast_dict(data, pos + 1, 1, max_depth)
            if c == 108:  # "l"
                return fast_list(data, pos + 1, 1, max_depth)
        # Every way the fast path gives up: its own signal, reading past the end,
        # data.index() or int() refusing, or the caller's stack too deep already.
        # (BencodeDecodeError is a ValueError, and cannot come from the fast path.)
        except (Fallback, IndexError, ValueError, RecursionError):
            pass
    return decode_general(data, pos, lenient, max_depth)


def decode_general(data: bytes, pos: int, lenient: bool, max_depth: int) -> tuple[Value, int]:
    """Decode the value at ``data[pos]`` with the general, iterative decoder.

    What :func:`decode` and :func:`decode_prefix` fall back on, and what decodes
    containers nested deeper than the fast path goes.
    """
    n = len(data)
    if pos >= n:
        raise diagnose.eof(n, "a value")
    c = data[pos]
    if c != 108 and c != 100:  # neither "l" nor "d"
        return _decode_scalar(data, pos)
    if max_depth < 1:
        raise diagnose.too_deep(pos, max_depth)
    top: Any = [] if c == 108 else {}  # the innermost open container
    root = top
    in_dict = c == 100
    # The open containers around `top`, outermost first. When a container opens
    # inside a dict, that dict's `last` is pushed just before the dict itself.
    parents: list[Any] = []
    depth = 1  # how many containers are open, `top` included
    last: Any = b""  # the key the next key of `top` must sort after
    key: Any = None  # the key of the entry being read
    value: Any
    pos += 1
    try:
        while True:
            if in_dict:  # an entry's key, or the dict's end
                c = data[pos]
                if 47 < c < 58:
                    if data[pos + 1] == 58:  # one-digit length: most keys
                        start = pos + 2
                        end = start + (c - 48)  # a small int added: see _fast_decode
                    else:
                        colon = data.find(b":", pos + 1, pos + 21)
                        length = data[pos:colon]
                        if colon < 0 or c == 48 or not length.isdigit():
                            raise diagnose.string_error(data, pos)
                        start = colon + 1
                        end = start + int(length)
                    if end > n:
                        raise diagnose.string_error(data, pos)
                    key = data[start:end]
                    last = _misordered_key(pos, key, last, top, lenient) if key <= last else key
                    pos = end
                elif c == 101:  # "e": the dict is complete
                    pos += 1
                    if not parents:
                        return root, pos
                    depth -= 1
                    top = parents.pop()
                    in_dict = type(top) is dict
                    if in_dict:
                        last = parents.pop()
                    continue
                else:
                    raise diagnose.non_string_key(pos)

            # A list item, or the value of the entry whose key was just read.
            c = data[pos]
            if 47 < c < 58:  # a string: "<length>:<bytes>"
                if data[pos + 1] == 58:  # one-digit length
                    start = pos + 2
                    end = start + (c - 48)  # a small int added: see _fast_decode
                elif 47 < (d := data[pos + 1]) < 58 and data[pos + 2] == 58 and c != 48:
                    start = pos + 3  # two digits: ids, hashes, names
                    end = start + ((c - 48) * 10 + d - 48)
                else:
                    colon = data.find(b":", pos + 1, pos + 21)
                    length = data[pos:colon]
                    if colon < 0 or c == 48 or not length.isdigit():
                        raise diagnose.string_error(data, pos)
                    start = colon + 1
                    end = start + int(length)
                if end > n:
                    raise diagnose.string_error(data, pos)
                value = data[start:end]
                pos = end
            elif c == 101 and not in_dict:  # "e": the list is complete
                pos += 1
                if not parents:
                    return root, pos
                depth -= 1
                top = parents.pop()
                in_dict = type(top) is dict
                if in_dict:
                    last = parents.pop()
                continue
            elif c == 108:  # a list opens
                depth += 1
                if depth > max_depth:
                    raise diagnose.too_deep(pos, max_depth)
                value = []
                if in_dict:
                    top[key] = value
                    parents.append(last)
                    in_dict = False
                else:
                    top.append(value)
                parents.append(top)
                top = value
                pos += 1
                continue
            elif c == 100:  # a dict opens
                depth += 1
                if depth > max_depth:
                    raise diagnose.too_deep(pos, max_depth)
                value = {}
                if in_dict:
                    top[key] = value
                    parents.append(last)
                else:
                    top.append(value)
                    in_dict = True
                parents.append(top)
                top = value
                last = b""
                pos += 1
                continue
            elif c == 105:  # an integer: "i<digits>e"
                e = data.find(b"e", pos + 1)
                digits = data[pos + 1 : e]
                if e < 0:
                    raise diagnose.integer_error(data, pos)
                if digits.isdigit():
                    if digits[0] == 48 and e > pos + 2:  # "0" then more digits
                        raise diagnose.integer_error(data, pos)
                elif not (digits[:1] == b"-" and digits[1:].isdigit() and digits[1] != 48):
                    raise diagnose.integer_error(data, pos)
                try:
                    value = int(digits)
                except ValueError:  # more digits than int() will convert
                    raise diagnose.integer_error(data, pos) from None
                pos = e + 1
            else:
                raise diagnose.unexpected_byte(data, pos, in_dict)

            if in_dict:
                top[key] = value
            else:
                top.append(value)
    except IndexError:  # data[pos] past the end: the input stopped inside a value
        raise diagnose.eof(n, "the next value") from None
