"""Encoding: every accepted type, canonical key order, and every error with its path."""

from __future__ import annotations

import array
import enum
import random
import sys
from collections import ChainMap, OrderedDict, defaultdict, namedtuple
from collections.abc import Callable, Iterator, Mapping
from itertools import permutations
from types import MappingProxyType
from typing import Any, TypeVar

import pytest

from bip_bencode import (
    BencodeEncodeError,
    BencodeError,
    Encodable,
    decode,
    encode,
)

T = TypeVar("T")
DeepCaller = Callable[[Callable[[], Any]], Any]  # the deep_in_the_stack fixture
Path = tuple[bytes | str | int, ...]


# --- helpers (test modules cannot import each other) ---------------------------------


def _reference(value: object) -> bytes:
    """A slow, obviously correct encoder for plain values, to check the real one against."""
    if isinstance(value, bool):
        raise AssertionError("no bools in reference values")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list | tuple):
        return b"l" + b"".join(_reference(item) for item in value) + b"e"
    if isinstance(value, Mapping):
        pairs = sorted(
            (key.encode() if isinstance(key, str) else key, item) for key, item in value.items()
        )
        body = b"".join(_reference(key) + _reference(item) for key, item in pairs)
        return b"d" + body + b"e"
    raise AssertionError(f"no reference encoding for {value!r}")


def _encode_error(value: object) -> BencodeEncodeError:
    with pytest.raises(BencodeEncodeError) as info:
        encode(value)  # type: ignore[arg-type]
    return info.value


def _follow(root: object, path: Path) -> object:
    node = root
    for step in path:
        assert isinstance(node, Mapping | list | tuple), (root, path)
        node = node[step]  # type: ignore[index]
    return node


def _nested_lists(depth: int) -> list[Encodable]:
    value: list[Encodable] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.fixture
def default_int_digits() -> Iterator[int]:
    """Python's default limit on int <-> str conversion (4300 digits), for this test."""
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(4300)
    try:
        yield 4300
    finally:
        sys.set_int_max_str_digits(old)


class Color(enum.IntEnum):
    RED = 1
    BIG = 1000


class Perm(enum.IntFlag):
    R = 4
    W = 2


class MyInt(int):
    pass


class MyBytes(bytes):
    pass


class MyStr(str):
    pass


class MyList(list[int]):
    pass


class MyDict(dict[bytes, int]):
    pass


class FrozenMap(Mapping[bytes | str, Encodable]):
    """A minimal Mapping that is no dict."""

    def __init__(self, pairs: list[tuple[bytes | str, Encodable]]) -> None:
        self._pairs = dict(pairs)

    def __getitem__(self, key: bytes | str) -> Encodable:
        return self._pairs[key]

    def __iter__(self) -> Iterator[bytes | str]:
        return iter(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)


Point = namedtuple("Point", ["x", "y"])


# --- accepted types ------------------------------------------------------------------

ACCEPTED: list[tuple[str, Encodable, bytes]] = [
    ("zero", 0, b"i0e"),
    ("one", 1, b"i1e"),
    ("minus-one", -1, b"i-1e"),
    ("255", 255, b"i255e"),
    ("256", 256, b"i256e"),
    ("minus-255", -255, b"i-255e"),
    ("minus-256", -256, b"i-256e"),
    ("2**64", 2**64, b"i18446744073709551616e"),
    ("-2**64", -(2**64), b"i-18446744073709551616e"),
    ("10**100", 10**100, b"i1" + b"0" * 100 + b"e"),
    ("IntEnum", Color.RED, b"i1e"),
    ("IntEnum-big", Color.BIG, b"i1000e"),
    ("IntFlag", Perm.R | Perm.W, b"i6e"),
    ("int-subclass", MyInt(-7), b"i-7e"),
    ("empty-bytes", b"", b"0:"),
    ("bytes", b"spam", b"4:spam"),
    ("bytes-255", b"x" * 255, b"255:" + b"x" * 255),
    ("bytes-256", b"x" * 256, b"256:" + b"x" * 256),
    ("bytes-binary", bytes(range(256)), b"256:" + bytes(range(256))),
    ("bytearray", bytearray(b"spam"), b"4:spam"),
    ("memoryview", memoryview(b"spam"), b"4:spam"),
    ("memoryview-slice", memoryview(b"xspamx")[1:-1], b"4:spam"),
    ("memoryview-strided", memoryview(b"abcdef")[::2], b"3:ace"),
    (
        "memoryview-uint16",
        memoryview(array.array("H", [1, 2])),
        b"4:" + bytes(array.array("H", [1, 2])),
    ),
    ("bytes-subclass", MyBytes(b"ab"), b"2:ab"),
    ("empty-str", "", b"0:"),
    ("str", "spam", b"4:spam"),
    ("str-utf8", "é", b"2:\xc3\xa9"),
    ("str-astral", "\U0001f600", b"4:\xf0\x9f\x98\x80"),
    ("str-nul", "\x00", b"1:\x00"),
    ("str-subclass", MyStr("ab"), b"2:ab"),
    ("empty-list", [], b"le"),
    ("empty-tuple", (), b"le"),
    ("empty-dict", {}, b"de"),
    ("list", [1, b"a", "b"], b"li1e1:a1:be"),
    ("tuple", (1, (2, (3,))), b"li1eli2eli3eeee"),
    ("namedtuple", Point(1, 2), b"li1ei2ee"),
    ("list-subclass", MyList([1, 2]), b"li1ei2ee"),
    ("nested-empties", [[], {}, (), b""], b"lledele0:e"),
    ("dict", {b"cow": b"moo", b"spam": b"eggs"}, b"d3:cow3:moo4:spam4:eggse"),
    ("dict-str-keys", {"spam": [b"a", 1]}, b"d4:spaml1:ai1eee"),
    ("dict-empty-key", {b"": b""}, b"d0:0:e"),
    ("dict-subclass", MyDict({b"b": 1, b"a": 2}), b"d1:ai2e1:bi1ee"),
    ("ordered-dict", OrderedDict([(b"b", 1), (b"a", 2)]), b"d1:ai2e1:bi1ee"),
    ("mapping-proxy", MappingProxyType({b"b": 1, b"a": 2}), b"d1:ai2e1:bi1ee"),
    ("defaultdict", defaultdict(int, {b"b": 1, b"a": 2}), b"d1:ai2e1:bi1ee"),
    ("chain-map", ChainMap({b"b": 1}, {b"a": 2, b"b": 3}), b"d1:ai2e1:bi1ee"),
    ("custom-mapping", FrozenMap([("b", 1), (b"a", [2])]), b"d1:ali2ee1:bi1ee"),
    ("bytes-subclass-key", {MyBytes(b"b"): 1, b"a": 2}, b"d1:ai2e1:bi1ee"),
    ("str-subclass-key", {MyStr("b"): 1, "a": 2}, b"d1:ai2e1:bi1ee"),
    (
        "mixed",
        {b"list": [1, (b"x", {"k": MappingProxyType({b"z": bytearray(b"v")})})]},
        b"d4:listli1el1:xd1:kd1:z1:veeeee",
    ),
]


@pytest.mark.parametrize(
    ("value", "expected"), [a[1:] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED]
)
def test_accepted_types(value: Encodable, expected: bytes) -> None:
    encoded = encode(value)
    assert type(encoded) is bytes
    assert encoded == expected
    assert encode(decode(encoded)) == encoded


def test_encode_returns_new_bytes_not_views_of_the_input() -> None:
    data = bytearray(b"spam")
    encoded = encode(data)
    data[:] = b"eggs"
    assert encoded == b"4:spam"


# --- key order -----------------------------------------------------------------------


def test_keys_sorted_by_raw_bytes() -> None:
    value = {b"b": 1, b"aa": 2, b"a": 3, b"": 4, b"\xff": 5, b"\x00": 6, b"B": 7}
    assert encode(value) == b"d0:i4e1:\x00i6e1:Bi7e1:ai3e2:aai2e1:bi1e1:\xffi5ee"


def test_str_keys_sorted_by_their_utf8_bytes() -> None:
    value = {"é": 1, "z": 2, "a": 3, "Z": 4, "\U0001f600": 5, "\uffff": 6}
    # UTF-8: "Z" 5a < "a" 61 < "z" 7a < "é" c3a9 < "\uffff" efbfbf < "\U0001f600" f09f9880
    assert encode(value) == (
        b"d1:Zi4e1:ai3e1:zi2e2:\xc3\xa9i1e3:\xef\xbf\xbfi6e4:\xf0\x9f\x98\x80i5ee"
    )
    # Sorting the str keys in Python (by code point) agrees; sorting by UTF-16 would not.
    assert list(decode(encode(value), str_keys=True)) == sorted(value)  # type: ignore[arg-type]


def test_mixed_str_and_bytes_keys_sort_together() -> None:
    value: dict[bytes | str, int] = {"b": 1, b"a": 2, "c": 3, b"\xff": 4, "é": 5}
    assert encode(value) == b"d1:ai2e1:bi1e1:ci3e2:\xc3\xa9i5e1:\xffi4ee"
    assert encode({"a": 1, b"b": 2}) == encode({b"a": 1, "b": 2}) == b"d1:ai1e1:bi2ee"


def test_a_key_sorts_before_its_own_extension() -> None:
    assert encode({b"ab": 1, b"a": 2, b"abc": 3}) == b"d1:ai2e2:abi1e3:abci3ee"


def test_keys_that_look_like_bencoding_sort_as_bytes() -> None:
    value = {b"i1e": 1, b"1:a": 2, b"e": 3, b"le": 4}
    assert encode(value) == b"d3:1:ai2e1:ei3e3:i1ei1e2:lei4ee"
    assert decode(encode(value)) == value


@pytest.mark.parametrize(
    "value",
    [
        {b"a": 1, "a": 2},
        {"é": 1, "é".encode(): 2},
        {MyStr("k"): 1, "k" + "": 2, b"x": 3} | {b"k": 4},
    ],
    ids=["ascii", "utf8", "subclass"],
)
def test_two_keys_that_encode_the_same_are_an_error(value: dict[bytes | str, int]) -> None:
    error = _encode_error(value)
    assert error.path == ()
    assert "encode to" in error.reason
    nested = {b"x": [0, value]}
    error = _encode_error(nested)
    assert error.path == (b"x", 1)
    # Again: a clash is never remembered as a good shape.
    assert _encode_error(nested).path == (b"x", 1)


# --- integers ------------------------------------------------------------------------


def test_integers_at_the_digit_limit(default_int_digits: int) -> None:
    big = 10 ** (default_int_digits - 1)  # exactly the limit's number of digits
    assert encode(big) == b"i1" + b"0" * (default_int_digits - 1) + b"e"
    assert encode(-big) == b"i-1" + b"0" * (default_int_digits - 1) + b"e"
    assert encode(10**3999) == b"i1" + b"0" * 3999 + b"e"


@pytest.mark.parametrize(
    ("make", "path"),
    [
        (lambda n: n, ()),
        (lambda n: -n, ()),
        (lambda n: [1, n], (1,)),
        (lambda n: {b"a": {"b": (0, 0, n)}}, (b"a", "b", 2)),
    ],
    ids=["top", "negative", "in-list", "nested"],
)
def test_integers_past_the_digit_limit(
    default_int_digits: int, make: Callable[[int], object], path: Path
) -> None:
    error = _encode_error(make(10**5000))
    assert error.path == path
    assert "integer too large" in error.reason


# --- errors and their paths ----------------------------------------------------------


class Opaque:
    pass


REJECTED: list[tuple[str, object, Path, str]] = [
    ("float", 1.5, (), "float"),
    ("none", None, (), "NoneType"),
    ("true", True, (), "bool"),
    ("false", False, (), "bool"),
    ("set", {1}, (), "set"),
    ("frozenset", frozenset(), (), "frozenset"),
    ("complex", 1j, (), "complex"),
    ("object", Opaque(), (), "Opaque"),
    ("range", range(3), (), "range"),
    ("generator", (i for i in range(3)), (), "generator"),
    ("dict-keys", {b"a": 1}.keys(), (), "dict_keys"),
    ("in-list", [1, 2.5], (1,), "float"),
    ("in-tuple", (b"a", (None,)), (1, 0), "NoneType"),
    ("in-dict", {b"a": {b"b": [1, None]}}, (b"a", b"b", 1), "NoneType"),
    ("str-key-path", {"k": {1, 2}}, ("k",), "set"),
    ("deep-bool", {b"a": [{b"b": 0, b"c": True}]}, (b"a", 0, b"c"), "bool"),
    ("bool-in-mapping", {b"a": MappingProxyType({b"x": False})}, (b"a", b"x"), "bool"),
    ("in-ordered-dict", OrderedDict([(b"z", 1), (b"a", [Opaque()])]), (b"a", 0), "Opaque"),
    ("after-good-siblings", [[1, 2], [3, [4, 5.0]]], (1, 1, 1), "float"),
    ("int-key", {1: b"x"}, (), "key must be bytes or str, not int"),
    ("nested-int-key", {b"a": {1: b"x"}}, (b"a",), "not int"),
    ("bool-key", {b"a": [{True: 1}]}, (b"a", 0), "not bool"),
    ("none-key", {b"a": {None: 1}}, (b"a",), "not NoneType"),
    ("tuple-key", {(b"a",): 1}, (), "not tuple"),
    ("surrogate", "\ud800", (), "UTF-8"),
    ("nested-surrogate", {b"a": ["ok", "x\udfff"]}, (b"a", 1), "UTF-8"),
    ("surrogate-key", {b"x": {"\ud800": 1}}, (b"x",), "UTF-8"),
    ("surrogate-str-subclass", [MyStr("\ud800")], (0,), "UTF-8"),
]


@pytest.mark.parametrize(
    ("value", "path", "reason"), [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED]
)
def test_rejected_values_and_their_paths(value: object, path: Path, reason: str) -> None:
    error = _encode_error(value)
    assert error.path == path
    assert reason in error.reason
    assert isinstance(error, TypeError)
    assert isinstance(error, ValueError)
    assert isinstance(error, BencodeError)
    where = "".join(f"[{step!r}]" for step in path)
    assert str(error) == f"{error.reason} at value{where}"


def test_bool_is_refused_even_where_an_int_would_do() -> None:
    assert encode([0, 1]) == b"li0ei1ee"
    error = _encode_error({b"flags": {b"private": 1, b"seed": [0, 1, True]}})
    assert error.path == (b"flags", b"seed", 2)
    assert "int(flag)" in error.reason


def test_a_bad_value_deep_inside_deep_nesting() -> None:
    value: list[object] = [None]
    for _ in range(2000):
        value = [1, value]
    error = _encode_error(value)
    assert error.path == (1,) * 2000 + (0,)


# --- containers that contain themselves, and shared ones -----------------------------


def _assert_cycle_path(root: object, path: Path) -> None:
    """The path leads to a container that is also one of its own ancestors."""
    assert path
    ancestors = [_follow(root, path[:i]) for i in range(len(path))]
    target = _follow(root, path)
    assert any(target is ancestor for ancestor in ancestors)


def test_a_list_that_contains_itself() -> None:
    value: list[object] = [1]
    value.append(value)
    error = _encode_error(value)
    assert error.path == (1,)
    assert "contains itself" in error.reason


def test_a_dict_that_contains_itself() -> None:
    value: dict[bytes, object] = {b"a": 1}
    value[b"self"] = value
    error = _encode_error(value)
    assert error.path == (b"self",)
    assert "contains itself" in error.reason


def test_a_list_that_contains_itself_through_a_tuple() -> None:
    value: list[object] = []
    value.append((1, value))
    error = _encode_error(value)
    assert error.path == (0, 1)
    _assert_cycle_path(value, error.path)


def test_a_dict_that_contains_itself_through_a_mapping_proxy() -> None:
    value: dict[bytes, object] = {}
    value[b"m"] = MappingProxyType(value)
    error = _encode_error([value])
    assert "contains itself" in error.reason
    _assert_cycle_path([value], error.path)


def test_a_cycle_below_the_root() -> None:
    loop: list[object] = []
    loop.append([loop])
    root = {b"a": [b"x", loop]}
    error = _encode_error(root)
    assert "contains itself" in error.reason
    assert error.path[:2] == (b"a", 1)
    _assert_cycle_path(root, error.path)


def test_a_cycle_after_legitimately_deep_nesting() -> None:
    loop: dict[str, object] = {}
    loop["again"] = loop
    root = [_nested_lists(3000), {"k": loop}]
    error = _encode_error(root)
    assert error.path == (1, "k", "again")


def test_shared_values_are_fine() -> None:
    shared = [1, 2]
    value: Encodable = [shared, shared, {b"a": shared, b"b": (shared,)}]
    assert encode(value) == b"lli1ei2eeli1ei2eed1:ali1ei2ee1:blli1ei2eeeee"
    shared_dict = {b"x": shared}
    assert encode([shared_dict] * 3) == b"l" + b"d1:xli1ei2eee" * 3 + b"e"


def test_shared_deep_values_are_fine() -> None:
    # Deep enough to set off the check for containers that contain themselves.
    deep = _nested_lists(3000)
    expected = b"l" * 3000 + b"e" * 3000
    assert encode([deep, deep, {b"k": deep}]) == (
        b"l" + expected + expected + b"d1:k" + expected + b"ee"
    )


DEEP = 100_000


def test_very_deep_nesting_encodes_from_deep_in_the_stack(deep_in_the_stack: DeepCaller) -> None:
    lists = _nested_lists(DEEP)
    assert deep_in_the_stack(lambda: encode(lists)) == b"l" * DEEP + b"e" * DEEP


def test_deeply_nested_dicts_and_tuples_encode_from_deep_in_the_stack(
    deep_in_the_stack: DeepCaller,
) -> None:
    depth = 20_000  # far past any recursion limit, and cheaper than DEEP
    dicts: object = {}
    for _ in range(depth - 1):
        dicts = {"a": dicts}
    expected = b"d1:a" * (depth - 1) + b"d" + b"e" * depth
    assert deep_in_the_stack(lambda: encode(dicts)) == expected  # type: ignore[arg-type]
    tuples: object = ()
    for _ in range(depth - 1):
        tuples = (tuples,)
    expected = b"l" * depth + b"e" * depth
    assert deep_in_the_stack(lambda: encode(tuples)) == expected  # type: ignore[arg-type]


def test_very_deep_self_containing_value_fails_without_recursion(
    deep_in_the_stack: DeepCaller,
) -> None:
    depth = 20_000
    value = _nested_lists(depth)
    innermost = value
    while innermost:
        inner = innermost[0]
        assert isinstance(inner, list)
        innermost = inner
    innermost.append(value)
    try:
        error = deep_in_the_stack(lambda: _encode_error(value))
        assert error.path == (0,) * depth
        assert "contains itself" in error.reason
    finally:
        innermost.clear()  # let the garbage collector free it without a cycle


# --- the cache of dict shapes --------------------------------------------------------


def test_thousands_of_distinct_dict_shapes() -> None:
    dicts: list[dict[bytes | str, Encodable]] = [
        {b"common": i, b"k%05d" % i: [i], f"s{i % 7}": b"x", b"z" * (i % 3): {}}
        for i in range(6000)
    ]
    for d in dicts:
        assert encode(d) == _reference(d)
    # Again, once the cache has been filled and emptied along the way.
    for d in reversed(dicts):
        assert encode(d) == _reference(d)
    assert encode(dicts) == _reference(dicts)


def test_same_keys_in_every_insertion_order() -> None:
    items: list[tuple[bytes, Encodable]] = [(b"d", 4), (b"b", 2), (b"a", 1), (b"c", [3])]
    expected = b"d1:ai1e1:bi2e1:cli3ee1:di4ee"
    for order in permutations(items):
        assert encode(dict(order)) == expected
        assert encode(OrderedDict(order)) == expected
        assert encode(MappingProxyType(dict(order))) == expected
    # Through the cache, values are looked up afresh each time.
    for n in range(5):
        assert encode({b"b": n, b"a": -n}) == b"d1:ai%de1:bi%dee" % (-n, n)


def test_same_key_text_as_str_and_as_bytes() -> None:
    assert encode({"b": 1, "a": 2}) == b"d1:ai2e1:bi1ee"
    assert encode({b"b": 1, b"a": 2}) == b"d1:ai2e1:bi1ee"
    assert encode({"b": 1, b"a": 2}) == b"d1:ai2e1:bi1ee"
    assert encode({b"b": 1, "a": 2}) == b"d1:ai2e1:bi1ee"


def test_a_shape_seen_first_in_a_dict_then_in_other_mappings() -> None:
    assert encode({b"y": 1, b"x": 2}) == b"d1:xi2e1:yi1ee"
    assert encode(FrozenMap([(b"y", 10), (b"x", 20)])) == b"d1:xi20e1:yi10ee"
    assert encode(MappingProxyType({b"y": 3, b"x": 4})) == b"d1:xi4e1:yi3ee"
    assert encode(MyDict({b"y": 5, b"x": 6})) == b"d1:xi6e1:yi5ee"


@pytest.mark.parametrize("count", [31, 32, 33, 40, 500])
def test_dicts_with_many_keys(count: int) -> None:
    keys = [b"key%03d" % i for i in range(count)]
    rng = random.Random(count)
    for _ in range(3):
        rng.shuffle(keys)
        value = {key: int(key[3:]) for key in keys}
        assert encode(value) == _reference(value)
        assert decode(encode(value)) == value
    mixed = {(k.decode() if i % 2 else k): i for i, k in enumerate(keys)}
    assert encode(mixed) == _reference(mixed)


def test_a_memoryview_key_is_its_bytes_whatever_was_encoded_before() -> None:
    # Keys may be bytes-like, as values may; the result must not depend on the
    # encoder's cache of dict shapes (a read-only memoryview equals its bytes).
    key = memoryview(b"cached-shape-key")
    assert encode({key: 1}) == b"d16:cached-shape-keyi1ee"  # type: ignore[arg-type]
    assert encode({b"cached-shape-key": 1}) == b"d16:cached-shape-keyi1ee"
    assert encode({key: 1}) == b"d16:cached-shape-keyi1ee"  # type: ignore[arg-type]
