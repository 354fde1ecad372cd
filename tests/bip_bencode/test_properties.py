"""Properties, with hypothesis: round trips, strictness, and our error or a value, always."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bip_bencode import (
    BencodeDecodeError,
    BencodeEncodeError,
    DecodeErrorKind,
    TextKeyValue,
    Value,
    decode,
    decode_document,
    decode_prefix,
    encode,
)

K = DecodeErrorKind
Path = tuple[bytes | str | int, ...]

# Modest example counts: the whole bip_bencode suite runs in a few seconds.
CHEAP = settings(max_examples=150, deadline=None)
NORMAL = settings(max_examples=60, deadline=None)
SLOW = settings(max_examples=30, deadline=None)


# --- strategies ----------------------------------------------------------------------

integers: st.SearchStrategy[int] = st.one_of(
    st.integers(),
    st.sampled_from([0, 1, -1, 9, 10, 99, 100, 255, 256, -256, 2**63 - 1, -(2**63), 2**64]),
    # Huge, but within Python's int <-> str limit (drawn cheaply: digits times a power of ten).
    st.tuples(st.integers(-(10**9), 10**9), st.integers(0, 600), st.integers(0, 10**6)).map(
        lambda t: t[0] * 10 ** t[1] + t[2]
    ),
)
byte_strings: st.SearchStrategy[bytes] = st.one_of(
    st.binary(max_size=12),
    st.sampled_from([b"", b"e", b"i", b"l", b"d", b":", b"0", b"1:a", b"i1e", b"le", b"de"]),
    # Long enough for two- and three-digit lengths.
    st.tuples(st.binary(min_size=1, max_size=3), st.integers(4, 120)).map(lambda t: t[0] * t[1]),
)
keys: st.SearchStrategy[bytes] = st.one_of(
    st.binary(max_size=6), st.sampled_from([b"", b"a", b"b", b"aa", b"info", b"\xff"])
)


def _containers(children: st.SearchStrategy[Value]) -> st.SearchStrategy[Value]:
    return st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(keys, children, max_size=5),
    )


values: st.SearchStrategy[Value] = st.recursive(
    st.one_of(integers, byte_strings), _containers, max_leaves=20
)
containers: st.SearchStrategy[Value] = _containers(values)


def _text_containers(children: st.SearchStrategy[TextKeyValue]) -> st.SearchStrategy[TextKeyValue]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=5), children, max_size=4),
    )


text_key_values: st.SearchStrategy[TextKeyValue] = st.recursive(
    st.one_of(integers, byte_strings), _text_containers, max_leaves=20
)

# Bytes that look like bencoding often enough to get deep into the decoder.
TOKENS = [
    b"i",
    b"e",
    b"l",
    b"d",
    b"-",
    b":",
    b"0",
    b"1",
    b"2",
    b"9",
    b"x",
    b"\xff",
    b"1:a",
    b"1:b",
    b"0:",
    b"2:ab",
    b"i0e",
    b"i1e",
    b"i-1e",
    b"i-0e",
    b"i01e",
    b"le",
    b"de",
    b"10:",
    b"01:",
    b"d1:ai1e",
    b"1:\xff",
]
bencodeish: st.SearchStrategy[bytes] = st.one_of(
    st.binary(max_size=40),
    st.lists(st.sampled_from(TOKENS), max_size=25).map(b"".join),
    values.map(encode),
)


# --- helpers (test modules cannot import each other) ---------------------------------


def _decode_or_error(data: bytes, **kwargs: Any) -> Value | TextKeyValue | BencodeDecodeError:
    """Decode; return our error rather than raise it. Any other exception propagates."""
    try:
        result: Value | TextKeyValue = decode(data, **kwargs)
    except BencodeDecodeError as exc:
        return exc
    return result


def _check_error(error: BencodeDecodeError, data: bytes) -> None:
    assert isinstance(error.kind, DecodeErrorKind)
    assert 0 <= error.offset <= len(data)
    if error.kind is K.UNEXPECTED_EOF:
        assert error.offset == len(data)
    if error.kind is K.TRAILING_DATA:
        assert error.offset < len(data)
    assert f"offset {error.offset}" in str(error)


def _paths(value: Value, limit: int = 200) -> list[tuple[Path, Value]]:
    """Every (path, sub-value) of ``value``, the root first, breadth first, at most ``limit``."""
    found: list[tuple[Path, Value]] = []
    todo: list[tuple[Path, Value]] = [((), value)]
    while todo and len(found) < limit:
        path, node = todo.pop(0)
        found.append((path, node))
        if isinstance(node, list):
            todo.extend(((*path, i), item) for i, item in enumerate(node))
        elif isinstance(node, dict):
            todo.extend(((*path, key), item) for key, item in node.items())
    return found


def _follow(root: object, path: Path) -> object:
    node = root
    for step in path:
        assert isinstance(node, dict | list | tuple), (root, path)
        node = node[step]  # type: ignore[index]
    return node


def _encode_shuffled(
    value: Value, rng: random.Random, spans: dict[Path, bytes], path: Path
) -> bytes:
    """Encode with every dict's keys in a random order; record each sub-value's bytes."""
    if isinstance(value, int):
        out = b"i%de" % value
    elif isinstance(value, bytes):
        out = b"%d:%s" % (len(value), value)
    elif isinstance(value, list):
        out = (
            b"l"
            + b"".join(
                _encode_shuffled(item, rng, spans, (*path, i)) for i, item in enumerate(value)
            )
            + b"e"
        )
    else:
        items = list(value.items())
        rng.shuffle(items)
        body = b"".join(
            b"%d:%s" % (len(key), key) + _encode_shuffled(item, rng, spans, (*path, key))
            for key, item in items
        )
        out = b"d" + body + b"e"
    spans[path] = out
    return out


# --- round trips ---------------------------------------------------------------------


@NORMAL
@given(values)
def test_decode_encode_round_trip(value: Value) -> None:
    data = encode(value)
    assert decode(data) == value
    assert decode(data, lenient=True) == value
    assert decode(bytearray(data)) == value
    assert decode(memoryview(data)) == value
    assert encode(decode(data)) == data


@NORMAL
@given(values, st.binary(max_size=20), st.binary(max_size=20))
def test_decode_prefix_finds_the_end(value: Value, head: bytes, tail: bytes) -> None:
    data = encode(value)
    assert decode_prefix(data + tail) == (value, len(data))
    assert decode_prefix(head + data + tail, len(head)) == (value, len(head) + len(data))
    assert decode_prefix(head + data + tail, len(head), lenient=True) == (
        value,
        len(head) + len(data),
    )
    if tail:
        with pytest.raises(BencodeDecodeError) as info:
            decode(data + tail)
        assert (info.value.kind, info.value.offset) == (K.TRAILING_DATA, len(data))


@NORMAL
@given(values, st.data())
def test_every_proper_prefix_is_unexpected_eof(value: Value, data: st.DataObject) -> None:
    encoded = encode(value)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1), label="cut")
    for lenient in (False, True):
        with pytest.raises(BencodeDecodeError) as info:
            decode(encoded[:cut], lenient=lenient)
        assert (info.value.kind, info.value.offset) == (K.UNEXPECTED_EOF, cut)


@SLOW
@given(text_key_values)
def test_str_keys_round_trip(value: TextKeyValue) -> None:
    data = encode(value)
    assert decode(data, str_keys=True) == value
    assert encode(decode(data, str_keys=True)) == data


# --- any bytes: our error or a value, never another exception ------------------------


@CHEAP
@given(bencodeish)
@example(b"l1x")
@example(b"d1:a1x")
@example(b"i" + b"9" * 5000 + b"e")
@example(b"9" * 30 + b":")
def test_strict_decode_of_any_bytes(data: bytes) -> None:
    result = _decode_or_error(data)
    if isinstance(result, BencodeDecodeError):
        _check_error(result, data)
    else:
        # Strictly valid input is canonical: it re-encodes to itself.
        assert encode(result) == data
        assert decode_prefix(data) == (result, len(data))
        assert decode_document(data).raw() == data


@CHEAP
@given(bencodeish)
def test_lenient_decode_of_any_bytes(data: bytes) -> None:
    result = _decode_or_error(data, lenient=True)
    strict = _decode_or_error(data)
    if isinstance(result, BencodeDecodeError):
        _check_error(result, data)
        # What lenient mode refuses, strict mode refuses.
        assert isinstance(strict, BencodeDecodeError)
        if strict.kind is not K.UNSORTED_KEYS:
            assert (strict.kind, strict.offset) == (result.kind, result.offset)
    else:
        assert decode(encode(result)) == result
        if isinstance(strict, BencodeDecodeError):
            assert strict.kind is K.UNSORTED_KEYS
        else:
            assert strict == result
        assert decode_document(data, lenient=True).raw() == data


@CHEAP
@given(bencodeish)
def test_str_keys_decode_of_any_bytes(data: bytes) -> None:
    result = _decode_or_error(data, str_keys=True)
    if isinstance(result, BencodeDecodeError):
        _check_error(result, data)
    else:
        assert encode(result) == data


@CHEAP
@given(bencodeish, st.binary(min_size=1, max_size=10), st.booleans())
def test_an_error_before_the_end_does_not_depend_on_what_follows(
    data: bytes, more: bytes, lenient: bool
) -> None:
    result = _decode_or_error(data, lenient=lenient)
    if isinstance(result, BencodeDecodeError) and result.kind not in (
        K.UNEXPECTED_EOF,
        K.TRAILING_DATA,
    ):
        again = _decode_or_error(data + more, lenient=lenient)
        assert isinstance(again, BencodeDecodeError)
        assert (again.kind, again.offset) == (result.kind, result.offset)


# (before, after, path of the value): a value as a list item and as a dict value,
# with its containers closed after it, or with the input ending right after it.
CONTEXTS: list[tuple[bytes, bytes, Path]] = [
    (b"l", b"e", (0,)),
    (b"li1e", b"e", (1,)),
    (b"d1:a", b"e", (b"a",)),
    (b"d0:i0e1:bld1:x", b"eee", (b"b", 0, b"x")),
    (b"l", b"", ()),
    (b"d1:a", b"", ()),
]


@CHEAP
@given(bencodeish, st.booleans())
@example(b"1x", False)
@example(b"12x", False)
@example(b"e", False)
@example(b"i1ei2e", False)
def test_a_value_decodes_the_same_wherever_it_sits(data: bytes, lenient: bool) -> None:
    # The same bytes as a whole document, as a list item and as a dict value: the
    # same value or the same error (its offset shifted by what comes before).
    alone = _decode_or_error(data, lenient=lenient)
    for before, after, path in CONTEXTS:
        nested = _decode_or_error(before + data + after, lenient=lenient)
        if not isinstance(alone, BencodeDecodeError):
            if after:
                assert not isinstance(nested, BencodeDecodeError), before
                assert _follow(nested, path) == alone
            else:  # the container is never closed
                assert isinstance(nested, BencodeDecodeError), before
                assert (nested.kind, nested.offset) == (K.UNEXPECTED_EOF, len(before + data))
        elif alone.kind in (K.UNEXPECTED_EOF, K.TRAILING_DATA) or data[:1] == b"e":
            pass  # in a container, what follows may complete it, or the container ends
        else:
            assert isinstance(nested, BencodeDecodeError), before
            expected = (alone.kind, alone.offset + len(before))
            assert (nested.kind, nested.offset) == expected, before


MUTATIONS = ["flip", "replace", "insert", "delete", "truncate", "duplicate"]


@NORMAL
@given(values, st.sampled_from(MUTATIONS), st.data())
def test_mutated_encodings_give_a_value_or_our_error(
    value: Value, mutation: str, data: st.DataObject
) -> None:
    encoded = bytearray(encode(value))
    at = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1), label="at")
    if mutation == "flip":
        encoded[at] ^= 1 << data.draw(st.integers(min_value=0, max_value=7), label="bit")
    elif mutation == "replace":
        encoded[at] = data.draw(st.sampled_from(b"ield:-09x\x00"), label="byte")
    elif mutation == "insert":
        encoded[at:at] = data.draw(st.sampled_from(TOKENS), label="insert")
    elif mutation == "delete":
        length = data.draw(st.integers(min_value=1, max_value=3), label="length")
        del encoded[at : at + length]
    elif mutation == "truncate":
        del encoded[at:]
    else:
        encoded[at:at] = encoded[at : at + 3]
    mutated = bytes(encoded)
    for lenient in (False, True):
        result = _decode_or_error(mutated, lenient=lenient)
        if isinstance(result, BencodeDecodeError):
            _check_error(result, mutated)
        elif not lenient:
            assert encode(result) == mutated
        else:
            assert decode(encode(result)) == result


# --- documents -----------------------------------------------------------------------


@NORMAL
@given(containers)
def test_document_raw_is_the_encoding_of_each_sub_value(value: Value) -> None:
    data = encode(value)
    doc = decode_document(data)
    if isinstance(value, dict):
        for key, item in value.items():
            assert doc.raw(key) == encode(item)
    for path, node in _paths(value):
        assert doc.raw(*path) == encode(node)
        start, end = doc.span(*path)
        assert data[start:end] == encode(node)


@NORMAL
@given(containers, st.randoms(use_true_random=False))
def test_lenient_document_raw_is_the_original_bytes(value: Value, rng: random.Random) -> None:
    spans: dict[Path, bytes] = {}
    data = _encode_shuffled(value, rng, spans, ())
    doc = decode_document(data, lenient=True)
    assert doc.value == value
    for path, raw in spans.items():
        assert doc.raw(*path) == raw
        assert decode(raw, lenient=True) == _follow(value, path)


@SLOW
@given(text_key_values)
def test_document_str_path_steps(value: TextKeyValue) -> None:
    doc = decode_document(encode(value))
    if isinstance(value, dict):
        for key, item in value.items():
            assert doc.raw(key) == doc.raw(key.encode()) == encode(item)


# --- values with no bencoding --------------------------------------------------------


def _clashing_keys() -> object:
    return {b"k": 1, "k": 2}


BAD: list[Callable[[], object]] = [
    lambda: 1.5,
    lambda: None,
    lambda: True,
    lambda: False,
    lambda: {1, 2},
    frozenset,
    object,
    lambda: 1j,
    lambda: "\ud800",
    lambda: {1: b"x"},  # a bad key is reported at its dictionary
    lambda: {b"a": 1, (b"b",): 2},
    _clashing_keys,
]


@NORMAL
@given(containers, st.sampled_from(BAD), st.booleans(), st.data())
def test_a_value_with_no_bencoding_anywhere_is_found(
    root: Value, make_bad: Callable[[], object], tuples: bool, data: st.DataObject
) -> None:
    bad = make_bad()
    # Walk down to a random container and put the bad value in it.
    node: object = root
    path: Path = ()
    while True:
        assert isinstance(node, list | dict)
        inner = [step for step, child in _items(node) if isinstance(child, list | dict)]
        choice = data.draw(st.sampled_from([None, *inner]), label="descend")
        if choice is None:
            break
        node = node[choice]  # type: ignore[index]
        path = (*path, choice)
    if isinstance(node, list):
        index = data.draw(st.integers(min_value=0, max_value=len(node)), label="index")
        node.insert(index, bad)
        path = (*path, index)
    else:
        key = b"\xff" * (max((len(k) for k in node), default=0) + 1)
        node[key] = bad
        path = (*path, key)
    value = _tuplify(root) if tuples else root
    with pytest.raises(BencodeEncodeError) as info:
        encode(value)  # type: ignore[arg-type]
    assert info.value.path == path
    assert _follow(value, info.value.path) is bad


def _items(node: list[Any] | dict[Any, Any]) -> list[tuple[bytes | int, object]]:
    if isinstance(node, list):
        return list(enumerate(node))
    return list(node.items())


def _tuplify(value: object) -> object:
    """The same value with every (good) list a tuple; dicts and other values kept as they are."""
    if isinstance(value, list):
        return tuple(_tuplify(item) for item in value)
    if type(value) is dict and all(type(key) is bytes for key in value):
        return {key: _tuplify(item) for key, item in value.items()}
    return value
