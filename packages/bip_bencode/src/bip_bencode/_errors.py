"""The exceptions bip_bencode raises, and the reasons a decode can fail."""

from __future__ import annotations

import enum

__all__ = [
    "BencodeDecodeError",
    "BencodeEncodeError",
    "BencodeError",
    "BencodePathError",
    "DecodeErrorKind",
]


class DecodeErrorKind(enum.Enum):
    """Why a document is not valid bencoding.

    The values are stable, lowercase names that tests and logs can match on.
    """

    UNEXPECTED_EOF = "unexpected_eof"
    """The input ended inside a value (or was empty)."""
    EXPECTED_DIGIT = "expected_digit"
    """An integer or a string length holds something other than decimal digits."""
    EXPECTED_COLON = "expected_colon"
    """A string length is not followed by ``:``."""
    LEADING_ZERO = "leading_zero"
    """An integer or string length is written with a leading zero (``i03e``, ``03:abc``)."""
    NEGATIVE_ZERO = "negative_zero"
    """The integer ``i-0e``, which has no canonical meaning."""
    INTEGER_TOO_LONG = "integer_too_long"
    """An integer has more digits than Python converts (``sys.get_int_max_str_digits()``)."""
    UNSORTED_KEYS = "unsorted_keys"
    """A dictionary key does not sort after the previous one (strict mode only)."""
    DUPLICATE_KEY = "duplicate_key"
    """A dictionary key appears twice."""
    NON_STRING_KEY = "non_string_key"
    """A dictionary key is not a byte string."""
    NON_UTF8_KEY = "non_utf8_key"
    """A dictionary key is not UTF-8, and keys were asked for as ``str``."""
    MISSING_VALUE = "missing_value"
    """A dictionary ends after a key, before that key's value."""
    INVALID_TYPE = "invalid_type"
    """A byte that starts no bencode value (``i``, ``l``, ``d`` or a digit)."""
    TRAILING_DATA = "trailing_data"
    """Bytes follow the end of a complete document."""
    DEPTH_EXCEEDED = "depth_exceeded"
    """Lists and dictionaries are nested deeper than the decoder's ``max_depth``."""


class BencodeError(Exception):
    """Base class of every error bip_bencode raises."""


class BencodeDecodeError(BencodeError, ValueError):
    """The input is not valid bencoding (in the mode asked for).

    Attributes:
        kind: what is wrong, as a :class:`DecodeErrorKind`.
        offset: the byte offset in the input where the problem was found. For
            ``UNEXPECTED_EOF`` this is the length of the input.
        reason: a human-readable description, without the offset.
    """

    def __init__(self, kind: DecodeErrorKind, offset: int, reason: str) -> None:
        super().__init__(f"{reason} (at byte offset {offset})")
        self.kind = kind
        self.offset = offset
        self.reason = reason


class BencodeEncodeError(BencodeError, TypeError, ValueError):
    """A value cannot be bencoded.

    It is a :class:`TypeError` (a float, ``None``, a ``bool`` or a set has no
    bencoding) and a :class:`ValueError` (two dictionary keys that encode to the
    same bytes, a container that contains itself).

    Attributes:
        path: where the offending value sits inside the value given to
            :func:`~bip_bencode.encode`, as the keys and indices leading to it
            (empty for the top-level value).
        reason: a human-readable description, without the path.
    """

    def __init__(self, reason: str, path: tuple[bytes | str | int, ...] = ()) -> None:
        where = "".join(f"[{step!r}]" for step in path)
        super().__init__(f"{reason} at value{where}")
        self.path = path
        self.reason = reason


class BencodePathError(BencodeError, LookupError):
    """A path given to :meth:`~bip_bencode.Document.span` leads nowhere in the document."""
