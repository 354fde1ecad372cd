"""Decoding: bytes in, values out.

The decoder is one loop over an explicit stack, never recursion, so no input can
raise ``RecursionError`` whatever the caller's own stack depth. The loop is the
hot path and is written for CPython's speed: it checks only what it must to tell a
valid document from an invalid one, and hands every failure to a small function
that works out exactly what is wrong and where (those run once, on bad input).
"""

from __future__ import annotations

from typing import Any, Literal, overload

from ._errors import BencodeDecodeError, DecodeErrorKind
from ._types import TextKeyValue, Value

__all__ = ["DEFAULT_MAX_DEPTH", "Buffer", "decode", "decode_prefix"]

Buffer = bytes | bytearray | memoryview
"""The input types the decoder accepts."""

DEFAULT_MAX_DEPTH = 512
"""How deeply lists and dictionaries may nest by default. Real documents nest a few
levels (a BEP 52 file tree one level per directory); the limit keeps code that
walks a decoded value recursively safe from hostile input."""

# Where the loop is: what the next value will be to its container. The order
# matters: an "e" may close a container exactly when _TOP < state < _VALUE.
_TOP = 0  # the document's root value
_LIST = 1  # an element of the innermost open list
_KEY = 2  # a key of the innermost open dict (or its closing "e")
_VALUE = 3  # the value for the innermost dict's latest key

_DIGITS = b"0123456789"


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
    value, end = _decode_from(data, 0, lenient, max_depth, str_keys)
    if end != len(data):
        raise BencodeDecodeError(
            DecodeErrorKind.TRAILING_DATA,
            end,
            f"{len(data) - end} byte(s) of trailing data after a complete value",
        )
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
    value, end = _decode_from(buf, start, lenient, max_depth, False)
    return value, end  # type: ignore[return-value]  # str_keys=False gives bytes keys


def _decode_from(
    data: bytes, pos: int, lenient: bool, max_depth: int, str_keys: bool
) -> tuple[Value | TextKeyValue, int]:
    """Decode the value at ``data[pos]``; return it and the offset after it."""
    n = len(data)
    find = data.find
    stack: list[Any] = []  # open containers, innermost last
    keys: list[Any] = []  # `key` as it was outside each open dict
    top: Any = None  # stack[-1]
    key: Any = None  # the innermost dict's latest key (None before its first)
    root: Any = None
    state = _TOP
    value: Any
    try:
        while True:
            c = data[pos]
            if 47 < c < 58:  # a digit: a string, "<length>:<bytes>"
                if data[pos + 1] == 58:  # one-digit length, the common case
                    start = pos + 2
                    end = start + c - 48
                elif data[pos + 2] == 58 and c != 48 and 47 < (d := data[pos + 1]) < 58:
                    start = pos + 3  # two digits: ids, hashes, names
                    end = start + c * 10 + d - 528  # 528 == 48 * 10 + 48
                else:
                    colon = find(b":", pos + 1, pos + 21)
                    length = data[pos:colon]
                    if colon < 0 or c == 48 or not length.isdigit():
                        raise _string_error(data, pos)
                    start = colon + 1
                    end = start + int(length)
                if end > n:
                    raise _eof(n, f"a string of {end - start} bytes starting at offset {start}")
                value = data[start:end]
                if state == _VALUE:
                    top[key] = value
                    state = _KEY
                elif state == _KEY:
                    if str_keys:
                        value = _utf8_key(value, pos)
                    if lenient:
                        if value in top:
                            raise _duplicate_key(pos, data[start:end])
                    elif key is not None and value <= key:
                        raise _order_error(pos, data[start:end], key)
                    key = value
                    state = _VALUE
                elif state == _LIST:
                    top.append(value)
                else:
                    return value, end
                pos = end
            elif c == 101 and _TOP < state < _VALUE:  # "e" in a list, or a dict between entries
                if state == _KEY:
                    key = keys.pop()
                stack.pop()
                pos += 1
                if not stack:
                    return root, pos
                top = stack[-1]
                state = _LIST if type(top) is list else _KEY
            elif c == 108:  # "l": open a list
                if state == _KEY or len(stack) >= max_depth:
                    raise _cannot_open(pos, state, max_depth)
                new: Any = []
                if state == _VALUE:
                    top[key] = new
                elif state == _LIST:
                    top.append(new)
                else:
                    root = new
                stack.append(new)
                top = new
                state = _LIST
                pos += 1
            elif c == 100:  # "d": open a dictionary
                if state == _KEY or len(stack) >= max_depth:
                    raise _cannot_open(pos, state, max_depth)
                new = {}
                if state == _VALUE:
                    top[key] = new
                elif state == _LIST:
                    top.append(new)
                else:
                    root = new
                stack.append(new)
                keys.append(key)
                top = new
                key = None
                state = _KEY
                pos += 1
            elif c == 105:  # "i<digits>e"
                e = find(b"e", pos + 1)
                digits = data[pos + 1 : e]
                if e < 0 or state == _KEY:
                    raise _integer_error(data, pos, state)
                if digits.isdigit():
                    if digits[0] == 48 and e > pos + 2:
                        raise _integer_error(data, pos, state)
                elif not (digits[:1] == b"-" and digits[1:].isdigit() and digits[1] != 48):
                    raise _integer_error(data, pos, state)
                try:
                    value = int(digits)
                except ValueError:  # more digits than int() will convert
                    raise _integer_error(data, pos, state) from None
                pos = e + 1
                if state == _VALUE:
                    top[key] = value
                    state = _KEY
                elif state == _LIST:
                    top.append(value)
                else:
                    return value, pos
            else:
                raise _unexpected_byte(data, pos, state)
    except IndexError:  # data[pos] past the end: the input stopped inside a value
        raise _eof(n, "the next value") from None


# --- Diagnosis of errors. These run only when the loop above has found bad input,
# --- so they favour clarity over speed.


def _eof(n: int, what: str) -> BencodeDecodeError:
    reason = f"input ended while reading {what}"
    return BencodeDecodeError(DecodeErrorKind.UNEXPECTED_EOF, n, reason)


def _digits_end(data: bytes, pos: int) -> int:
    while pos < len(data) and data[pos] in _DIGITS:
        pos += 1
    return pos


def _string_error(data: bytes, pos: int) -> BencodeDecodeError:
    """Say what is wrong with the string whose length starts at ``data[pos]``."""
    end = _digits_end(data, pos)
    if end == len(data):
        return _eof(len(data), f"the length of a string starting at offset {pos}")
    if data[end] != 58:
        return BencodeDecodeError(
            DecodeErrorKind.EXPECTED_COLON,
            end,
            f"expected ':' after a string length, found {data[end : end + 1]!r}",
        )
    if data[pos] == 48 and end > pos + 1:
        return BencodeDecodeError(
            DecodeErrorKind.LEADING_ZERO, pos, "string length written with a leading zero"
        )
    # The digits are fine, so the string is longer than the input left after it.
    return _eof(len(data), f"a string of {data[pos:end].decode()} bytes at offset {end + 1}")


def _integer_error(data: bytes, pos: int, state: int) -> BencodeDecodeError:
    """Say what is wrong with the integer whose ``i`` is at ``data[pos]``."""
    if state == _KEY:
        return _non_string_key(pos)
    first = pos + 1
    if first < len(data) and data[first] == 45:  # "-"
        first += 1
    end = _digits_end(data, first)
    if end == len(data):
        return _eof(len(data), f"an integer starting at offset {pos}")
    if end == first or data[end] != 101:
        found = data[end : end + 1]
        return BencodeDecodeError(
            DecodeErrorKind.EXPECTED_DIGIT, end, f"expected a digit in an integer, found {found!r}"
        )
    if data[first] == 48 and end > first + 1:
        return BencodeDecodeError(
            DecodeErrorKind.LEADING_ZERO, first, "integer written with a leading zero"
        )
    if data[first] == 48 and first > pos + 1:
        return BencodeDecodeError(
            DecodeErrorKind.NEGATIVE_ZERO, pos + 1, "i-0e is not a valid integer"
        )
    return BencodeDecodeError(
        DecodeErrorKind.INTEGER_TOO_LONG,
        pos + 1,
        f"integer of {end - first} digits is longer than this Python converts"
        " (see sys.set_int_max_str_digits)",
    )


def _utf8_key(key: bytes, pos: int) -> str:
    try:
        return key.decode()
    except UnicodeDecodeError:
        raise BencodeDecodeError(
            DecodeErrorKind.NON_UTF8_KEY, pos, f"key {key!r} is not UTF-8"
        ) from None


def _cannot_open(pos: int, state: int, max_depth: int) -> BencodeDecodeError:
    if state == _KEY:
        return _non_string_key(pos)
    return BencodeDecodeError(
        DecodeErrorKind.DEPTH_EXCEEDED,
        pos,
        f"lists and dictionaries nested deeper than max_depth={max_depth}",
    )


def _non_string_key(pos: int) -> BencodeDecodeError:
    return BencodeDecodeError(
        DecodeErrorKind.NON_STRING_KEY, pos, "dictionary key must be a byte string"
    )


def _unexpected_byte(data: bytes, pos: int, state: int) -> BencodeDecodeError:
    if state == _KEY:
        return _non_string_key(pos)
    found = data[pos : pos + 1]
    if state == _VALUE and found == b"e":
        return BencodeDecodeError(
            DecodeErrorKind.MISSING_VALUE, pos, "dictionary ends after a key, without its value"
        )
    return BencodeDecodeError(
        DecodeErrorKind.INVALID_TYPE, pos, f"{found!r} does not start a bencoded value"
    )


def _duplicate_key(pos: int, key: bytes) -> BencodeDecodeError:
    return BencodeDecodeError(
        DecodeErrorKind.DUPLICATE_KEY, pos, f"dictionary key {key!r} appears twice"
    )


def _order_error(pos: int, key: bytes, previous: bytes | str) -> BencodeDecodeError:
    previous_raw = previous.encode() if isinstance(previous, str) else previous
    if key == previous_raw:
        return _duplicate_key(pos, key)
    return BencodeDecodeError(
        DecodeErrorKind.UNSORTED_KEYS,
        pos,
        f"dictionary key {key!r} comes after {previous_raw!r} but sorts before it"
        " (decode with lenient=True to accept unsorted keys)",
    )
