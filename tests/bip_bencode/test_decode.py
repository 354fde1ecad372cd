"""Decoding: every error kind at its exact offset, every valid form, and the limits.

Parsers are fed whole, one byte at a time (every proper prefix), and with trailing
data (DESIGN.md section 5).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from bip_bencode import (
    DEFAULT_MAX_DEPTH,
    BencodeDecodeError,
    BencodeError,
    DecodeErrorKind,
    Value,
    decode,
    decode_document,
    decode_prefix,
    encode,
)

K = DecodeErrorKind
T = TypeVar("T")
DeepCaller = Callable[[Callable[[], Any]], Any]  # the deep_in_the_stack fixture


# --- helpers (test modules cannot import each other) ---------------------------------


def _error(data: bytes, **kwargs: Any) -> BencodeDecodeError:
    """Decode ``data``, which must fail, and return the error."""
    with pytest.raises(BencodeDecodeError) as info:
        decode(data, **kwargs)
    return info.value


def _list_depth(value: object) -> int:
    """How many lists are nested in ``value`` (each holding the next as its only item)."""
    depth = 0
    while isinstance(value, list):
        depth += 1
        if not value:
            break
        assert len(value) == 1
        value = value[0]
    return depth


@pytest.fixture
def default_int_digits() -> Iterator[int]:
    """Python's default limit on int <-> str conversion (4300 digits), for this test."""
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(4300)
    try:
        yield 4300
    finally:
        sys.set_int_max_str_digits(old)


# --- every error kind, at its exact offset -------------------------------------------

# (input, kind, offset, decode keyword arguments)
ERRORS: list[tuple[bytes, DecodeErrorKind, int, dict[str, Any]]] = [
    # UNEXPECTED_EOF: the offset is the length of the input.
    (b"", K.UNEXPECTED_EOF, 0, {}),
    (b"i", K.UNEXPECTED_EOF, 1, {}),
    (b"i12", K.UNEXPECTED_EOF, 3, {}),
    (b"i-", K.UNEXPECTED_EOF, 2, {}),
    (b"4:spa", K.UNEXPECTED_EOF, 5, {}),
    (b"12", K.UNEXPECTED_EOF, 2, {}),
    (b"10:abc", K.UNEXPECTED_EOF, 6, {}),
    (b"l", K.UNEXPECTED_EOF, 1, {}),
    (b"d", K.UNEXPECTED_EOF, 1, {}),
    (b"li1e", K.UNEXPECTED_EOF, 4, {}),
    (b"l1:", K.UNEXPECTED_EOF, 3, {}),
    (b"l10:abc", K.UNEXPECTED_EOF, 7, {}),
    (b"d3:cow", K.UNEXPECTED_EOF, 6, {}),
    (b"d3:co", K.UNEXPECTED_EOF, 5, {}),
    (b"d3:cow3:mo", K.UNEXPECTED_EOF, 10, {}),
    (b"lli1ee", K.UNEXPECTED_EOF, 6, {}),
    # EXPECTED_DIGIT: offset of the first byte that is not a digit.
    (b"ie", K.EXPECTED_DIGIT, 1, {}),
    (b"i-e", K.EXPECTED_DIGIT, 2, {}),
    (b"i12xe", K.EXPECTED_DIGIT, 3, {}),
    (b"i1.5e", K.EXPECTED_DIGIT, 2, {}),
    (b"i+1e", K.EXPECTED_DIGIT, 1, {}),
    (b"i 1e", K.EXPECTED_DIGIT, 1, {}),
    (b"i1_000e", K.EXPECTED_DIGIT, 2, {}),
    (b"i--1e", K.EXPECTED_DIGIT, 2, {}),
    (b"li1.5ee", K.EXPECTED_DIGIT, 3, {}),
    (b"d1:ai1xee", K.EXPECTED_DIGIT, 6, {}),
    (b"li12", K.UNEXPECTED_EOF, 4, {}),
    (b"li12:abe", K.EXPECTED_DIGIT, 4, {}),
    # EXPECTED_COLON: offset of the byte after the length's digits.
    (b"1x", K.EXPECTED_COLON, 1, {}),
    (b"12;ab", K.EXPECTED_COLON, 2, {}),
    (b"1-:a", K.EXPECTED_COLON, 1, {}),
    (b"l12;abe", K.EXPECTED_COLON, 3, {}),
    (b"l1xe", K.EXPECTED_COLON, 2, {}),
    (b"d3xcowi1ee", K.EXPECTED_COLON, 2, {}),
    (b"d1x", K.EXPECTED_COLON, 2, {}),
    (b"d1:a1xe", K.EXPECTED_COLON, 5, {}),
    # LEADING_ZERO: offset of the zero.
    (b"i03e", K.LEADING_ZERO, 1, {}),
    (b"i00e", K.LEADING_ZERO, 1, {}),
    (b"i-03e", K.LEADING_ZERO, 2, {}),
    (b"i-00e", K.LEADING_ZERO, 2, {}),
    (b"03:abc", K.LEADING_ZERO, 0, {}),
    (b"00:", K.LEADING_ZERO, 0, {}),
    (b"l03:abce", K.LEADING_ZERO, 1, {}),
    (b"l00:e", K.LEADING_ZERO, 1, {}),
    (b"d02:abi1ee", K.LEADING_ZERO, 1, {}),
    (b"d1:ai01ee", K.LEADING_ZERO, 5, {}),
    # NEGATIVE_ZERO: offset of the "-".
    (b"i-0e", K.NEGATIVE_ZERO, 1, {}),
    (b"li-0ee", K.NEGATIVE_ZERO, 2, {}),
    (b"d1:ai-0ee", K.NEGATIVE_ZERO, 5, {}),
    # UNSORTED_KEYS: offset of the key that sorts too early.
    (b"d1:bi1e1:ai1ee", K.UNSORTED_KEYS, 7, {}),
    (b"d2:abi1e1:ai1ee", K.UNSORTED_KEYS, 8, {}),  # a key before its own extension
    (b"d1:bi1e2:aai1ee", K.UNSORTED_KEYS, 7, {}),  # raw byte order, not length first
    (b"d1:ai1e1:ci1e1:bi1ee", K.UNSORTED_KEYS, 13, {}),
    (b"d1:ad1:bi1e1:ai1eee", K.UNSORTED_KEYS, 11, {}),  # in a nested dict
    (b"d1:ai1e0:i1ee", K.UNSORTED_KEYS, 7, {}),  # the empty key after another
    # DUPLICATE_KEY: offset of the repeated key.
    (b"d1:ai1e1:ai2ee", K.DUPLICATE_KEY, 7, {}),
    (b"d0:i1e0:i2ee", K.DUPLICATE_KEY, 6, {}),
    (b"d1:ald1:xi1e1:xi2eee", K.DUPLICATE_KEY, 12, {}),
    # NON_STRING_KEY: offset of the thing standing where a key must.
    (b"di1ei2ee", K.NON_STRING_KEY, 1, {}),
    (b"dlei1ee", K.NON_STRING_KEY, 1, {}),
    (b"d1:ai1eli1eei1ee", K.NON_STRING_KEY, 7, {}),
    (b"dxe", K.NON_STRING_KEY, 1, {}),
    # NON_UTF8_KEY (str_keys only): offset of the key.
    (b"d1:\xffi1ee", K.NON_UTF8_KEY, 1, {"str_keys": True}),
    (b"d1:ai1e2:\xc3\x28i2ee", K.NON_UTF8_KEY, 7, {"str_keys": True}),
    (b"ld1:ad2:\xfe\xffi1eeee", K.NON_UTF8_KEY, 6, {"str_keys": True}),
    (b"d3:\xed\xa0\x80i1ee", K.NON_UTF8_KEY, 1, {"str_keys": True}),  # an encoded surrogate
    # MISSING_VALUE: offset of the "e" that closes the dict too early.
    (b"d1:ae", K.MISSING_VALUE, 4, {}),
    (b"d1:ai1e1:be", K.MISSING_VALUE, 10, {}),
    (b"ld1:aee", K.MISSING_VALUE, 5, {}),
    # INVALID_TYPE: offset of the byte that starts no value.
    (b"x", K.INVALID_TYPE, 0, {}),
    (b"e", K.INVALID_TYPE, 0, {}),
    (b"-1", K.INVALID_TYPE, 0, {}),
    (b" i1e", K.INVALID_TYPE, 0, {}),
    (b"l1:axe", K.INVALID_TYPE, 4, {}),
    (b"d1:a-1e", K.INVALID_TYPE, 4, {}),
    (b"d1:axe", K.INVALID_TYPE, 4, {}),
    (b"li1e\x00e", K.INVALID_TYPE, 4, {}),
    # TRAILING_DATA: offset just past the complete value.
    (b"i1ei2e", K.TRAILING_DATA, 3, {}),
    (b"lee", K.TRAILING_DATA, 2, {}),
    (b"dee", K.TRAILING_DATA, 2, {}),
    (b"0:0:", K.TRAILING_DATA, 2, {}),
    (b"4:spam\n", K.TRAILING_DATA, 6, {}),
    (b"de\x00", K.TRAILING_DATA, 2, {"str_keys": True}),
    # DEPTH_EXCEEDED: offset of the container that opens too deep.
    (b"le", K.DEPTH_EXCEEDED, 0, {"max_depth": 0}),
    (b"de", K.DEPTH_EXCEEDED, 0, {"max_depth": 0}),
    (b"llee", K.DEPTH_EXCEEDED, 1, {"max_depth": 1}),
    (b"lllleeee", K.DEPTH_EXCEEDED, 3, {"max_depth": 3}),
    (b"d1:ad1:aleee", K.DEPTH_EXCEEDED, 8, {"max_depth": 2}),
    (b"li1eli2eee", K.DEPTH_EXCEEDED, 4, {"max_depth": 1}),
]


def test_every_error_kind_is_in_the_table() -> None:
    # INTEGER_TOO_LONG depends on Python's digit limit: see test_integer_too_long.
    covered = {kind for _, kind, _, _ in ERRORS} | {K.INTEGER_TOO_LONG}
    assert covered == set(DecodeErrorKind)


@pytest.mark.parametrize(
    ("data", "kind", "offset", "kwargs"), ERRORS, ids=[repr(e[0])[:40] for e in ERRORS]
)
def test_error_kind_and_offset(
    data: bytes, kind: DecodeErrorKind, offset: int, kwargs: dict[str, Any]
) -> None:
    error = _error(data, **kwargs)
    assert (error.kind, error.offset) == (kind, offset)
    assert isinstance(error, ValueError)
    assert isinstance(error, BencodeError)
    assert error.reason
    assert error.reason in str(error)
    assert f"offset {offset}" in str(error)
    # The same input gives the same error through the other entry points (without
    # the trailing-data and str_keys checks, which only decode() makes).
    if kind not in (K.TRAILING_DATA, K.NON_UTF8_KEY):
        max_depth = kwargs.get("max_depth", DEFAULT_MAX_DEPTH)
        with pytest.raises(BencodeDecodeError) as info:
            decode_prefix(data, max_depth=max_depth)
        assert (info.value.kind, info.value.offset) == (kind, offset)
        with pytest.raises(BencodeDecodeError) as info:
            decode_document(data, max_depth=max_depth)
        assert (info.value.kind, info.value.offset) == (kind, offset)


@pytest.mark.parametrize(
    ("data", "offset"),
    [(b"l1x", 2), (b"l0x", 2), (b"l5-", 2), (b"d1:a1x", 5), (b"ld1:a9;", 6)],
)
def test_a_bad_colon_at_the_very_end_is_expected_colon_not_eof(data: bytes, offset: int) -> None:
    # b"1x" alone and b"l1xe" both give EXPECTED_COLON; no continuation of b"l1x"
    # can be valid, so the input did not merely end too soon.
    error = _error(data)
    assert (error.kind, error.offset) == (K.EXPECTED_COLON, offset)


def test_decode_error_kind_values_are_stable_lowercase_names() -> None:
    for kind in DecodeErrorKind:
        assert kind.value == kind.name.lower()


# --- valid forms ---------------------------------------------------------------------

VALID: list[tuple[bytes, Value]] = [
    (b"i0e", 0),
    (b"i1e", 1),
    (b"i-1e", -1),
    (b"i42e", 42),
    (b"i-42e", -42),
    (b"i255e", 255),
    (b"i256e", 256),
    (b"i9223372036854775807e", 2**63 - 1),
    (b"i-9223372036854775808e", -(2**63)),
    (b"i18446744073709551616e", 2**64),
    (b"i" + b"9" * 100 + b"e", 10**100 - 1),
    (b"0:", b""),
    (b"1:a", b"a"),
    (b"4:spam", b"spam"),
    (b"10:0123456789", b"0123456789"),
    (b"3:i1e", b"i1e"),
    (b"3:\x00\xff:", b"\x00\xff:"),
    (b"2:ee", b"ee"),
    (b"le", []),
    (b"de", {}),
    (b"llee", [[]]),
    (b"ldee", [{}]),
    (b"li1ei2ei3ee", [1, 2, 3]),
    (b"l4:spami-7ee", [b"spam", -7]),
    (b"l0:0:e", [b"", b""]),
    (b"d0:0:e", {b"": b""}),
    (b"d0:i1e1:ai2ee", {b"": 1, b"a": 2}),
    (b"d3:cow3:moo4:spam4:eggse", {b"cow": b"moo", b"spam": b"eggs"}),
    (b"d4:spaml1:a1:bee", {b"spam": [b"a", b"b"]}),
    (b"d1:ai1e2:aai2e1:bi3ee", {b"a": 1, b"aa": 2, b"b": 3}),
    (b"d1:Ai1e1:ai2ee", {b"A": 1, b"a": 2}),
    (b"d1:\x00i1e1:\xffi2ee", {b"\x00": 1, b"\xff": 2}),
    (b"d1:ad1:bd1:cleeee", {b"a": {b"b": {b"c": []}}}),
    (b"ld1:ai1eed1:ai2eee", [{b"a": 1}, {b"a": 2}]),
    (b"l10:abcdefghij100:" + b"x" * 100 + b"e", [b"abcdefghij", b"x" * 100]),
    (b"d1:ai-100000000000000000000ee", {b"a": -(10**20)}),
]


@pytest.mark.parametrize(("data", "value"), VALID, ids=[repr(v[0])[:40] for v in VALID])
def test_valid_forms_decode_and_reencode(data: bytes, value: Value) -> None:
    decoded = decode(data)
    assert decoded == value
    assert type(decoded) is type(value)
    assert encode(decoded) == data
    assert decode(data, lenient=True) == value
    assert decode_prefix(data) == (value, len(data))


def test_decoded_types_are_exact() -> None:
    value = decode(b"d1:ali1e1:xee")
    assert type(value) is dict
    key, item = next(iter(value.items()))
    assert type(key) is bytes
    assert type(item) is list
    assert type(item[0]) is int
    assert type(item[1]) is bytes


def test_decoded_strings_do_not_share_memory_with_a_mutable_input() -> None:
    data = bytearray(b"l4:spame")
    value = decode(data)
    data[3:7] = b"eggs"
    assert value == [b"spam"]


def test_strings_may_hold_anything() -> None:
    every_byte = bytes(range(256))
    assert decode(b"256:" + every_byte) == every_byte
    assert decode(b"l256:" + every_byte + b"e") == [every_byte]
    assert decode(b"d256:" + every_byte + b"i1ee") == {every_byte: 1}


def test_a_one_megabyte_string() -> None:
    payload = bytes(range(256)) * 4096
    assert len(payload) == 1 << 20
    assert decode(b"1048576:" + payload) == payload
    assert decode(b"d4:data1048576:" + payload + b"e") == {b"data": payload}
    assert decode(b"l1048576:" + payload + b"i1ee") == [payload, 1]
    # One byte short is truncation, at the end of the input.
    error = _error(b"d4:data1048576:" + payload[:-1])
    assert (error.kind, error.offset) == (K.UNEXPECTED_EOF, len(payload) + 14)


def test_a_string_length_longer_than_any_input() -> None:
    error = _error(b"l99999999999999999999999999:abce")
    assert error.kind is K.UNEXPECTED_EOF
    error = _error(b"99999999999999999999999999:abc")
    assert error.kind is K.UNEXPECTED_EOF


# --- integers and Python's digit limit -----------------------------------------------


def test_integer_at_the_digit_limit_decodes(default_int_digits: int) -> None:
    digits = b"7" * default_int_digits
    assert decode(b"i" + digits + b"e") == int(digits)
    assert decode(b"i-" + digits + b"e") == -int(digits)
    assert decode(b"li" + digits + b"ee") == [int(digits)]


def test_integer_of_4000_digits_decodes(default_int_digits: int) -> None:
    digits = b"1" + b"0" * 3999
    assert decode(b"i" + digits + b"e") == 10**3999
    assert decode(b"d1:ni" + digits + b"ee") == {b"n": 10**3999}


@pytest.mark.parametrize(
    ("data", "offset"),
    [
        (b"i" + b"1" * 5000 + b"e", 1),
        (b"i-" + b"1" * 5000 + b"e", 1),
        (b"li" + b"1" * 5000 + b"ee", 2),
        (b"d1:ni" + b"9" * 5000 + b"ee", 5),
        (b"i" + b"1" * 4301 + b"e", 1),
    ],
    ids=["top", "negative", "in-list", "in-dict", "one-past-limit"],
)
def test_integer_too_long(default_int_digits: int, data: bytes, offset: int) -> None:
    error = _error(data)
    assert (error.kind, error.offset) == (K.INTEGER_TOO_LONG, offset)
    assert "sys.set_int_max_str_digits" in error.reason


def test_an_overlong_integer_that_is_also_malformed_reports_the_malformation(
    default_int_digits: int,
) -> None:
    assert _error(b"i0" + b"1" * 5000 + b"e").kind is K.LEADING_ZERO
    assert _error(b"i" + b"1" * 5000 + b"xe").kind is K.EXPECTED_DIGIT
    assert _error(b"i" + b"1" * 5000).kind is K.UNEXPECTED_EOF


# --- lenient mode --------------------------------------------------------------------


def test_lenient_accepts_unsorted_keys_and_keeps_input_order() -> None:
    data = b"d1:bi1e1:ai2e1:ci3ee"
    assert _error(data).kind is K.UNSORTED_KEYS
    value = decode(data, lenient=True)
    assert value == {b"b": 1, b"a": 2, b"c": 3}
    assert isinstance(value, dict)
    assert list(value) == [b"b", b"a", b"c"]
    assert encode(value) == b"d1:ai2e1:bi1e1:ci3ee"


def test_lenient_keeps_order_in_nested_dicts() -> None:
    data = b"ld1:zd1:yi1e1:xi2ee1:ai3eee"
    value = decode(data, lenient=True)
    assert isinstance(value, list)
    outer = value[0]
    assert isinstance(outer, dict)
    assert list(outer) == [b"z", b"a"]
    inner = outer[b"z"]
    assert isinstance(inner, dict)
    assert list(inner) == [b"y", b"x"]


def test_lenient_on_sorted_input_is_the_same_as_strict() -> None:
    data = b"d1:ai1e1:bd1:ci2e1:di3eee"
    assert decode(data, lenient=True) == decode(data)


def test_lenient_accepts_the_empty_key_anywhere() -> None:
    value = decode(b"d1:ai1e0:i2ee", lenient=True)
    assert isinstance(value, dict)
    assert list(value) == [b"a", b""]


@pytest.mark.parametrize(
    ("data", "offset"),
    [
        (b"d1:ai1e1:ai2ee", 7),  # adjacent
        (b"d1:bi1e1:ai1e1:bi2ee", 13),  # after the dict became unsorted
        (b"d1:ai1e1:ci1e1:bi1e1:ai1ee", 19),
        (b"d1:bi1e1:ai1e1:ai2ee", 13),
        (b"d0:i1e1:ai1e0:i2ee", 12),
        (b"d1:xd1:bi1e1:ai1e1:bi2eee", 17),  # in a nested dict
    ],
)
def test_lenient_still_rejects_duplicate_keys(data: bytes, offset: int) -> None:
    error = _error(data, lenient=True)
    assert (error.kind, error.offset) == (K.DUPLICATE_KEY, offset)


def test_lenient_sibling_dicts_do_not_share_keys() -> None:
    # The same key in two different dicts is no duplicate, even once unsorted.
    data = b"ld1:bi1e1:ai1eed1:bi1e1:ai1eee"
    assert decode(data, lenient=True) == [{b"b": 1, b"a": 1}, {b"b": 1, b"a": 1}]
    data = b"d1:bd1:bi1e1:ai1ee1:ad1:bi1eee"
    assert decode(data, lenient=True) == {b"b": {b"b": 1, b"a": 1}, b"a": {b"b": 1}}


LENIENT_STILL_REJECTS = [
    (data, kind, offset, kwargs)
    for data, kind, offset, kwargs in ERRORS
    if kind not in (K.UNSORTED_KEYS, K.NON_UTF8_KEY)
]


@pytest.mark.parametrize(
    ("data", "kind", "offset", "kwargs"),
    LENIENT_STILL_REJECTS,
    ids=[repr(e[0])[:40] for e in LENIENT_STILL_REJECTS],
)
def test_lenient_still_rejects_everything_else(
    data: bytes, kind: DecodeErrorKind, offset: int, kwargs: dict[str, Any]
) -> None:
    error = _error(data, lenient=True, **kwargs)
    assert (error.kind, error.offset) == (kind, offset)


def test_lenient_reports_other_errors_after_unsorted_keys() -> None:
    assert _error(b"d1:bi1e1:ai01ee", lenient=True).kind is K.LEADING_ZERO
    assert _error(b"d1:bi1e1:ai1ei1ei1ee", lenient=True).kind is K.NON_STRING_KEY
    assert _error(b"d1:bi1e1:ae", lenient=True).kind is K.MISSING_VALUE
    error = _error(b"d1:bi1e1:ai1e", lenient=True)
    assert (error.kind, error.offset) == (K.UNEXPECTED_EOF, 13)
    error = _error(b"d1:bi1e1:ai1eex", lenient=True)
    assert (error.kind, error.offset) == (K.TRAILING_DATA, 14)


def test_lenient_with_str_keys() -> None:
    value = decode(b"d1:bi1e1:ai2ee", lenient=True, str_keys=True)
    assert value == {"b": 1, "a": 2}
    assert isinstance(value, dict)
    assert list(value) == ["b", "a"]
    error = _error(b"d1:bi1e1:\xffi2ee", lenient=True, str_keys=True)
    assert (error.kind, error.offset) == (K.NON_UTF8_KEY, 7)


# --- max_depth -----------------------------------------------------------------------


def test_max_depth_one_allows_one_container() -> None:
    assert decode(b"le", max_depth=1) == []
    assert decode(b"de", max_depth=1) == {}
    assert decode(b"li1e1:ae", max_depth=1) == [1, b"a"]
    assert decode(b"d1:ai1ee", max_depth=1) == {b"a": 1}
    assert _error(b"llee", max_depth=1).kind is K.DEPTH_EXCEEDED
    assert _error(b"d1:adee", max_depth=1).kind is K.DEPTH_EXCEEDED


def test_max_depth_zero_allows_scalars_only() -> None:
    assert decode(b"i5e", max_depth=0) == 5
    assert decode(b"3:abc", max_depth=0) == b"abc"
    assert _error(b"le", max_depth=0).kind is K.DEPTH_EXCEEDED
    assert _error(b"de", max_depth=0).kind is K.DEPTH_EXCEEDED


@pytest.mark.parametrize("depth", [1, 2, 3, 10, 511, 512, 513, 2000])
def test_nesting_exactly_at_max_depth_succeeds(depth: int) -> None:
    lists = b"l" * depth + b"e" * depth
    assert _list_depth(decode(lists, max_depth=depth)) == depth
    error = _error(lists, max_depth=depth - 1)
    assert (error.kind, error.offset) == (K.DEPTH_EXCEEDED, depth - 1)
    # Dicts count as lists do: depth - 1 dicts around one list.
    dicts = b"d1:a" * (depth - 1) + b"le" + b"e" * (depth - 1)
    assert decode(dicts, max_depth=depth) is not None
    error = _error(dicts, max_depth=depth - 1)
    assert (error.kind, error.offset) == (K.DEPTH_EXCEEDED, 4 * (depth - 1))


def test_default_max_depth() -> None:
    assert DEFAULT_MAX_DEPTH == 512
    ok = b"l" * 512 + b"e" * 512
    assert _list_depth(decode(ok)) == 512
    error = _error(b"l" + ok + b"e")
    assert (error.kind, error.offset) == (K.DEPTH_EXCEEDED, 512)


def test_depth_is_nesting_not_count() -> None:
    # Many containers side by side are depth 2, however many there are.
    data = b"l" + b"le" * 10_000 + b"e"
    assert decode(data, max_depth=2) == [[]] * 10_000
    # Closing containers gives depth back.
    value: Value = [[[[]]], [[[]]], [[[]]]]
    assert decode(encode(value), max_depth=4) == value
    error = _error(encode(value), max_depth=3)
    assert (error.kind, error.offset) == (K.DEPTH_EXCEEDED, 3)


@pytest.mark.parametrize("max_depth", [-1, -100])
def test_negative_max_depth_is_a_value_error(max_depth: int) -> None:
    for call in (
        lambda: decode(b"le", max_depth=max_depth),
        lambda: decode_prefix(b"le", max_depth=max_depth),
        lambda: decode_document(b"le", max_depth=max_depth),
    ):
        with pytest.raises(ValueError, match="max_depth") as info:
            call()
        assert not isinstance(info.value, BencodeDecodeError)


DEEP = 100_000
DEEP_LISTS = b"l" * DEEP + b"e" * DEEP


def test_very_deep_nesting_decodes_without_recursion() -> None:
    value = decode(DEEP_LISTS, max_depth=2 * DEEP)
    assert _list_depth(value) == DEEP


def test_very_deep_nesting_decodes_from_deep_in_the_stack(deep_in_the_stack: DeepCaller) -> None:
    depth = deep_in_the_stack(
        lambda: _list_depth(decode(DEEP_LISTS, max_depth=2 * DEEP)),
    )
    assert depth == DEEP
    dicts = b"d1:a" * (DEEP - 1) + b"le" + b"e" * (DEEP - 1)
    value = deep_in_the_stack(lambda: decode(dicts, max_depth=2 * DEEP))
    levels = 0
    while isinstance(value, dict):
        levels += 1
        value = value[b"a"]
    assert levels == DEEP - 1
    assert value == []


def test_very_deep_nesting_with_str_keys_and_lenient(deep_in_the_stack: DeepCaller) -> None:
    dicts = b"d1:a" * (DEEP - 1) + b"le" + b"e" * (DEEP - 1)
    value = deep_in_the_stack(lambda: decode(dicts, max_depth=DEEP, str_keys=True))
    levels = 0
    while isinstance(value, dict):
        levels += 1
        value = value["a"]
    assert levels == DEEP - 1
    assert _list_depth(decode(DEEP_LISTS, lenient=True, max_depth=DEEP)) == DEEP


def test_very_deep_nesting_with_the_default_max_depth_is_depth_exceeded(
    deep_in_the_stack: DeepCaller,
) -> None:
    error = deep_in_the_stack(lambda: _error(DEEP_LISTS))
    assert (error.kind, error.offset) == (K.DEPTH_EXCEEDED, DEFAULT_MAX_DEPTH)


def test_very_deep_truncated_nesting_is_eof() -> None:
    error = _error(DEEP_LISTS[:-1], max_depth=DEEP)
    assert (error.kind, error.offset) == (K.UNEXPECTED_EOF, 2 * DEEP - 1)


# --- input types ---------------------------------------------------------------------

SAMPLES = [
    b"i42e",
    b"4:spam",
    b"d3:cow3:moo4:spaml1:a1:bee",
    b"ld1:ai1eei-5e0:e",
]


@pytest.mark.parametrize("data", SAMPLES)
def test_bytearray_and_memoryview_decode_as_bytes_do(data: bytes) -> None:
    expected = decode(data)
    assert decode(bytearray(data)) == expected
    assert decode(memoryview(data)) == expected
    window = memoryview(b"xx" + data + b"yy")[2:-2]
    assert decode(window) == expected
    assert decode_prefix(bytearray(data)) == (expected, len(data))
    assert decode_prefix(memoryview(b"xx" + data + b"yy"), 2) == (expected, len(data) + 2)


def test_errors_in_a_memoryview_slice_count_from_the_slice() -> None:
    window = memoryview(b"junk" + b"d1:bi1e1:ai1ee" + b"junk")[4:-4]
    error = _error(bytes(window))
    assert (error.kind, error.offset) == (K.UNSORTED_KEYS, 7)
    with pytest.raises(BencodeDecodeError) as info:
        decode(window)
    assert (info.value.kind, info.value.offset) == (K.UNSORTED_KEYS, 7)


def test_bytes_subclass_input() -> None:
    class Raw(bytes):
        pass

    assert decode(Raw(b"li1ee")) == [1]


@pytest.mark.parametrize("data", ["i1e", "4:spam", [105, 49, 101], 1, None, 1.5])
def test_non_bytes_input_is_a_type_error(data: object) -> None:
    with pytest.raises(TypeError, match="bytes") as info:
        decode(data)  # type: ignore[call-overload]
    assert not isinstance(info.value, BencodeError)
    with pytest.raises(TypeError, match="bytes"):
        decode_prefix(data)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes"):
        decode_document(data)  # type: ignore[arg-type]


# --- fed one byte at a time, and with trailing data ----------------------------------

DOCUMENTS = [
    b"i0e",
    b"i-123e",
    b"0:",
    b"4:spam",
    b"12:hello world!",
    b"le",
    b"de",
    b"li1ei-2e3:abce",
    b"d3:cow3:moo4:spaml1:a1:bee",
    b"d8:announce23:http://tracker.example/4:infod6:lengthi1024e4:name8:file.txt"
    b"12:piece lengthi16384e6:pieces20:" + bytes(range(20)) + b"ee",
    b"ld1:ad0:lee1:bi-1eeli0el0:eee",
    b"d0:0:1:\xffi99999999999999999999ee",
]


@pytest.mark.parametrize("document", DOCUMENTS, ids=[repr(d)[:30] for d in DOCUMENTS])
def test_every_proper_prefix_is_unexpected_eof(document: bytes) -> None:
    for cut in range(len(document)):
        prefix = document[:cut]
        for lenient in (False, True):
            with pytest.raises(BencodeDecodeError) as info:
                decode(prefix, lenient=lenient)
            assert (info.value.kind, info.value.offset) == (K.UNEXPECTED_EOF, cut), prefix
            with pytest.raises(BencodeDecodeError) as info:
                decode_prefix(prefix, lenient=lenient)
            assert (info.value.kind, info.value.offset) == (K.UNEXPECTED_EOF, cut), prefix


@pytest.mark.parametrize("document", DOCUMENTS, ids=[repr(d)[:30] for d in DOCUMENTS])
@pytest.mark.parametrize("trailing", [b"x", b"e", b"\x00", b"i1e", b"le", b"4:spam", b"0"])
def test_trailing_data(document: bytes, trailing: bytes) -> None:
    value = decode(document)
    data = document + trailing
    for lenient in (False, True):
        error = _error(data, lenient=lenient)
        assert (error.kind, error.offset) == (K.TRAILING_DATA, len(document))
        assert decode_prefix(data, lenient=lenient) == (value, len(document))


# --- decode_prefix -------------------------------------------------------------------


def test_decode_prefix_at_a_nonzero_start() -> None:
    data = b"garbage" + b"d1:ai1ee" + b"more garbage"
    assert decode_prefix(data, 7) == ({b"a": 1}, 15)
    assert decode_prefix(data, start=7, lenient=True) == ({b"a": 1}, 15)


def test_decode_prefix_errors_count_from_the_start_of_the_data() -> None:
    with pytest.raises(BencodeDecodeError) as info:
        decode_prefix(b"xxi03e", 2)
    assert (info.value.kind, info.value.offset) == (K.LEADING_ZERO, 3)
    with pytest.raises(BencodeDecodeError) as info:
        decode_prefix(b"xxi0", 2)
    assert (info.value.kind, info.value.offset) == (K.UNEXPECTED_EOF, 4)
    with pytest.raises(BencodeDecodeError) as info:
        decode_prefix(b"xxxlle", 3, max_depth=1)
    assert (info.value.kind, info.value.offset) == (K.DEPTH_EXCEEDED, 4)


def test_decode_prefix_reads_values_back_to_back() -> None:
    values: list[Value] = [1, b"two", [3], {b"four": 4}, b"", [], {}, -6, 10**30]
    data = b"".join(encode(v) for v in values)
    pos = 0
    seen: list[Value] = []
    while pos < len(data):
        value, end = decode_prefix(data, pos)
        assert end > pos
        seen.append(value)
        pos = end
    assert seen == values
    assert pos == len(data)


def test_decode_prefix_at_the_end_of_the_data_is_eof() -> None:
    with pytest.raises(BencodeDecodeError) as info:
        decode_prefix(b"i1e", 3)
    assert (info.value.kind, info.value.offset) == (K.UNEXPECTED_EOF, 3)


@pytest.mark.parametrize("start", [-1, 4, 100])
def test_decode_prefix_start_outside_the_data_is_a_value_error(start: int) -> None:
    with pytest.raises(ValueError, match="start") as info:
        decode_prefix(b"i1e", start)
    assert not isinstance(info.value, BencodeDecodeError)


def test_decode_prefix_does_not_take_a_bool_start() -> None:
    with pytest.raises(ValueError, match="start"):
        decode_prefix(b"xi1e", True)


def test_ut_metadata_framing_a_dict_followed_by_raw_bytes() -> None:
    header = b"d8:msg_typei1e5:piecei0e10:total_sizei34256ee"
    piece = bytes(range(256)) * 64  # raw metadata, itself looking like anything
    message = header + piece
    value, end = decode_prefix(message)
    assert value == {b"msg_type": 1, b"piece": 0, b"total_size": 34256}
    assert end == len(header)
    assert message[end:] == piece
    error = _error(message)
    assert (error.kind, error.offset) == (K.TRAILING_DATA, len(header))
    # The raw piece may happen to start like bencoding; the split is the same.
    tricky = header + b"e4:spam"
    assert decode_prefix(tricky) == (value, len(header))


# --- str_keys ------------------------------------------------------------------------


def test_str_keys_converts_every_dict_key() -> None:
    data = b"d1:ald1:bi1eed1:cd1:di2eeee5:\xc3\xa9t\xc3\xa9i3ee"
    value = decode(data, str_keys=True)
    assert value == {"a": [{"b": 1}, {"c": {"d": 2}}], "été": 3}
    assert decode(data) == {b"a": [{b"b": 1}, {b"c": {b"d": 2}}], "été".encode(): 3}
    # Values that are strings stay bytes; only keys change.
    assert decode(b"d1:a1:be", str_keys=True) == {"a": b"b"}
    assert decode(b"l1:ae", str_keys=True) == [b"a"]


def test_str_keys_on_scalars_and_empty_containers() -> None:
    assert decode(b"i1e", str_keys=True) == 1
    assert decode(b"3:\xff\xfe\xfd", str_keys=True) == b"\xff\xfe\xfd"
    assert decode(b"le", str_keys=True) == []
    assert decode(b"de", str_keys=True) == {}


def test_str_keys_types_are_exact() -> None:
    value = decode(b"ld1:ad1:bi1eeee", str_keys=True)
    assert isinstance(value, list)
    outer = value[0]
    assert isinstance(outer, dict)
    assert all(type(key) is str for key in outer)
    inner = outer["a"]
    assert isinstance(inner, dict)
    assert list(inner) == ["b"]


def test_str_keys_non_utf8_value_strings_are_fine() -> None:
    assert decode(b"d1:a1:\xffe", str_keys=True) == {"a": b"\xff"}


def test_str_keys_non_utf8_key_in_a_shared_looking_structure() -> None:
    # Two dicts with equal contents: the offset is that of the bad one.
    data = b"ld1:ai1eed1:ai1eed1:\xffi1eee"
    error = _error(data, str_keys=True)
    assert (error.kind, error.offset) == (K.NON_UTF8_KEY, 18)
    data = b"d1:ad1:xi1ee1:bd1:\x80i1eee"
    error = _error(data, str_keys=True)
    assert (error.kind, error.offset) == (K.NON_UTF8_KEY, 16)
