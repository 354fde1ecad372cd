"""Working out what is wrong with bad input, once the decoder has found it.

The decoder's loop checks only enough to tell good input from bad; when it finds
bad input it calls one of these to build a :class:`BencodeDecodeError` that says
exactly what is wrong and at which offset. They run once per error, so they
favour clarity over speed.
"""

from __future__ import annotations

import re

from ._errors import BencodeDecodeError, DecodeErrorKind

# Matched by the regex engine, not stepped through in Python: hostile input can hand
# us a digit run as long as itself (5 MB took a second).
_DIGIT_RUN = re.compile(rb"[0-9]*")


def eof(n: int, what: str) -> BencodeDecodeError:
    """The input (of ``n`` bytes) ended while reading ``what``."""
    reason = f"input ended while reading {what}"
    return BencodeDecodeError(DecodeErrorKind.UNEXPECTED_EOF, n, reason)


def _digits_end(data: bytes, pos: int) -> int:
    """Offset just past the run of ASCII digits that starts at ``pos`` (``pos`` if none)."""
    match = _DIGIT_RUN.match(data, pos)
    assert match is not None  # a pattern that matches the empty string always matches
    return match.end()


def string_error(data: bytes, pos: int) -> BencodeDecodeError:
    """Say what is wrong with the string whose length starts at ``data[pos]``."""
    end = _digits_end(data, pos)
    if end == len(data):
        return eof(len(data), f"the length of a string starting at offset {pos}")
    if data[end] != 58:  # ":"
        return BencodeDecodeError(
            DecodeErrorKind.EXPECTED_COLON,
            end,
            f"expected ':' after a string length, found {data[end : end + 1]!r}",
        )
    if data[pos] == 48 and end > pos + 1:  # "0" then more digits
        return BencodeDecodeError(
            DecodeErrorKind.LEADING_ZERO, pos, "string length written with a leading zero"
        )
    # The length is well formed, so the string runs past the end of the input. A length of
    # more digits than any input can hold is told by its size: the message stays short.
    digits = end - pos
    length = data[pos:end].decode() if digits <= 20 else f"a {digits}-digit number of"
    return eof(len(data), f"a string of {length} bytes at offset {end + 1}")


def integer_error(data: bytes, pos: int) -> BencodeDecodeError:
    """Say what is wrong with the integer whose ``i`` is at ``data[pos]``."""
    first = pos + 1
    if first < len(data) and data[first] == 45:  # "-"
        first += 1
    end = _digits_end(data, first)
    if end == len(data):
        return eof(len(data), f"an integer starting at offset {pos}")
    if end == first or data[end] != 101:  # no digits, or no "e" after them
        found = data[end : end + 1]
        return BencodeDecodeError(
            DecodeErrorKind.EXPECTED_DIGIT, end, f"expected a digit in an integer, found {found!r}"
        )
    if data[first] == 48 and end > first + 1:
        return BencodeDecodeError(
            DecodeErrorKind.LEADING_ZERO, first, "integer written with a leading zero"
        )
    if data[first] == 48 and first > pos + 1:
        return BencodeDecodeError(DecodeErrorKind.NEGATIVE_ZERO, pos + 1, "i-0e is not an integer")
    return BencodeDecodeError(
        DecodeErrorKind.INTEGER_TOO_LONG,
        pos + 1,
        f"integer of {end - first} digits is longer than this Python converts"
        " (see sys.set_int_max_str_digits)",
    )


def too_deep(pos: int, max_depth: int) -> BencodeDecodeError:
    """A list or dict opens at ``pos`` deeper than ``max_depth`` allows."""
    return BencodeDecodeError(
        DecodeErrorKind.DEPTH_EXCEEDED,
        pos,
        f"lists and dictionaries nested deeper than max_depth={max_depth}",
    )


def non_string_key(pos: int) -> BencodeDecodeError:
    """Something other than a string stands where a dict key must."""
    return BencodeDecodeError(
        DecodeErrorKind.NON_STRING_KEY, pos, "dictionary key must be a byte string"
    )


def unexpected_byte(data: bytes, pos: int, in_dict: bool) -> BencodeDecodeError:
    """``data[pos]`` starts no value (in a dict, where a key's value should be)."""
    found = data[pos : pos + 1]
    if in_dict and found == b"e":
        return BencodeDecodeError(
            DecodeErrorKind.MISSING_VALUE, pos, "dictionary ends after a key, without its value"
        )
    return BencodeDecodeError(
        DecodeErrorKind.INVALID_TYPE, pos, f"{found!r} does not start a bencoded value"
    )


def duplicate_key(pos: int, key: bytes) -> BencodeDecodeError:
    """``key``, at ``pos``, is already in its dict."""
    return BencodeDecodeError(
        DecodeErrorKind.DUPLICATE_KEY, pos, f"dictionary key {key!r} appears twice"
    )


def unsorted_key(pos: int, key: bytes, previous: bytes) -> BencodeDecodeError:
    """``key``, at ``pos``, does not sort after the key before it."""
    return BencodeDecodeError(
        DecodeErrorKind.UNSORTED_KEYS,
        pos,
        f"dictionary key {key!r} comes after {previous!r} but sorts before it"
        " (decode with lenient=True to accept unsorted keys)",
    )
