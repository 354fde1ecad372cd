"""Encoding errors are reported for what they are, alike on the fast and the general path.

A released memoryview, an integer past Python's digit limit and a Mapping that refuses
a key it iterates each give their own BencodeEncodeError, with the path to the value
(or to the refused key), however deep it sits. An exception raised by the caller's own
code that encoding runs (a Mapping's ``__iter__``, a list subclass's ``__iter__``, a
``__bytes__``...) propagates unchanged, as encode() documents: it is never reworded as
one of ours, and none of ours is ever a bare ValueError or KeyError.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_bencode import BencodeEncodeError, encode
from bip_bencode._encode import _FAST_DEPTH, _encode_general

Path = tuple[bytes | str | int, ...]
CHEAP = settings(max_examples=150, deadline=None)
DEPTHS = [0, 1, _FAST_DEPTH - 1, _FAST_DEPTH, _FAST_DEPTH + 1, 40]


# --- helpers (test modules cannot import each other: these mirror test_speed_paths) -----


def _outcome(fn: Callable[[], object]) -> object:
    """What ``fn()`` returns, our error as (path, message), or any other exception's type."""
    try:
        return ("ok", fn())
    except BencodeEncodeError as exc:
        return ("encode error", exc.path, str(exc))
    except Exception as exc:  # compared, and refused, by the callers
        return ("raised", type(exc), str(exc))


def _same_on_both_paths(value: Any) -> object:
    """encode()'s outcome, checked to be the general encoder's."""
    got = _outcome(lambda: encode(value))
    assert got == _outcome(lambda: _encode_general(value))
    return got


def _encode_error(value: Any) -> BencodeEncodeError:
    _same_on_both_paths(value)
    with pytest.raises(BencodeEncodeError) as info:
        encode(value)
    return info.value


def _released(data: bytes = b"ab") -> memoryview:
    view = memoryview(data)
    view.release()
    return view


def _with_released_key(data: bytes) -> dict[Any, Any]:
    """A dict holding a memoryview key that was released once in it (hashed, so allowed)."""
    view = memoryview(b"mv" + data)  # never equal to the other key
    value: dict[Any, Any] = {b"ok": 1, view: 2}
    view.release()
    return value


class _PairMap(Mapping[Any, Any]):
    """A Mapping that is no dict, so it may hold keys a dict cannot (a released memoryview)."""

    def __init__(self, pairs: list[tuple[Any, Any]]) -> None:
        self._pairs = pairs

    def __getitem__(self, key: Any) -> Any:
        for k, v in self._pairs:
            if k is key or (type(k) is type(key) and k == key):
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[Any]:
        return iter([k for k, _ in self._pairs])

    def __len__(self) -> int:
        return len(self._pairs)


class _Lying(Mapping[Any, Any]):
    """A Mapping that iterates ``keys`` but whose ``[]`` knows only ``known``."""

    def __init__(self, keys: list[bytes | str], known: dict[bytes | str, Any]) -> None:
        self._keys = keys
        self._known = known

    def __getitem__(self, key: Any) -> Any:
        return self._known[key]

    def __iter__(self) -> Iterator[bytes | str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class _LyingDict(dict[bytes, Any]):
    """A dict subclass whose ``[]`` refuses the keys in ``refused``, which it holds."""

    refused: frozenset[bytes] = frozenset()

    def __getitem__(self, key: bytes) -> Any:
        if key in self.refused:
            raise KeyError(key)
        return dict.__getitem__(self, key)


def _raw(key: bytes | str) -> bytes:
    return key.encode() if isinstance(key, str) else key


@st.composite
def placed(draw: st.DrawFn, inner: Any) -> tuple[Any, Path]:
    """``inner`` wrapped in lists, tuples, dicts and other Mappings, with valid siblings;
    returns the value and the path to ``inner``."""
    value: Any = inner
    path: Path = ()
    for _ in range(draw(st.one_of(st.integers(0, _FAST_DEPTH + 4), st.just(60)))):
        how = draw(st.sampled_from(["list", "tuple", "dict", "str-dict", "mapping"]))
        if how in ("list", "tuple"):
            before = draw(st.lists(st.one_of(st.integers(), st.binary(max_size=4)), max_size=2))
            after = draw(st.lists(st.one_of(st.integers(), st.binary(max_size=4)), max_size=2))
            items = [*before, value, *after]
            value = items if how == "list" else tuple(items)
            path = (len(before), *path)
        else:
            key: bytes | str = draw(st.text()) if how == "str-dict" else draw(st.binary(max_size=3))
            siblings: dict[bytes | str, Any] = dict(
                draw(st.dictionaries(st.binary(max_size=3), st.integers(), max_size=2))
            )
            siblings.pop(_raw(key), None)
            mapping: dict[bytes | str, Any] = {**siblings, key: value}
            value = mapping if how != "mapping" else _PairMap(list(mapping.items()))
            path = (key, *path)
    return value, path


# --- released memoryviews -----------------------------------------------------------------


@CHEAP
@given(st.binary(max_size=300).map(_released).flatmap(placed))
def test_a_released_memoryview_at_any_depth(placed_value: tuple[Any, Path]) -> None:
    value, path = placed_value
    error = _encode_error(value)
    assert error.path == path
    assert error.reason.startswith("memoryview cannot be read (")
    assert "released" in error.reason


@CHEAP
@given(
    st.one_of(
        st.binary(max_size=4).map(_with_released_key),
        st.binary(max_size=4).map(lambda b: _PairMap([(b"z", 1), (_released(b), 2)])),
    ).flatmap(placed)
)
def test_a_released_memoryview_key_is_reported_at_its_dictionary(
    placed_value: tuple[Any, Path],
) -> None:
    value, path = placed_value
    error = _encode_error(value)
    assert error.path == path
    assert error.reason.startswith("dictionary key memoryview cannot be read (")


@pytest.mark.parametrize("depth", DEPTHS)
def test_a_live_memoryview_still_encodes(depth: int) -> None:
    value: Any = [memoryview(b"ab"), {b"k": memoryview(bytearray(b"cd"))}]
    for _ in range(depth):
        value = [value]
    assert _same_on_both_paths(value) == ("ok", b"l" * depth + b"l2:abd1:k2:cdee" + b"e" * depth)


# --- integers past the digit limit --------------------------------------------------------


@pytest.fixture
def digit_limit() -> Iterator[int]:
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(4300)
    try:
        yield 4300
    finally:
        sys.set_int_max_str_digits(old)


class _BigInt(int):
    pass


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("make", [int, _BigInt], ids=["int", "int-subclass"])
def test_an_integer_too_long_to_write_is_still_said_so(
    digit_limit: int, depth: int, make: Callable[[int], int]
) -> None:
    big = make(10**digit_limit)
    for value, path in (([1, big], (1,)), ({b"a": 1, b"b": (big,)}, (b"b", 0))):
        nested: Any = value
        for _ in range(depth):
            nested = {b"x": nested}
        error = _encode_error(nested)
        assert error.path == (b"x",) * depth + path
        assert error.reason == "integer too large to write (see sys.set_int_max_str_digits)"


# --- a Mapping that refuses a key it iterates ---------------------------------------------

distinct_keys = st.lists(
    st.one_of(st.binary(max_size=4), st.text(max_size=3)),
    min_size=1,
    max_size=40,
    unique_by=_raw,
)


@st.composite
def lying_mappings(draw: st.DrawFn) -> tuple[Mapping[Any, Any], bytes | str]:
    """A Mapping refusing some of the keys it iterates, and the first refused in bencoding's
    order (the one the error names)."""
    keys = draw(distinct_keys)
    refused = draw(st.sets(st.sampled_from(keys), min_size=1))
    first = min(refused, key=_raw)
    if draw(st.booleans()):
        # Its keys' shape may be known to the shape cache, or not.
        encode(dict.fromkeys(keys, 0))
    if all(type(k) is bytes for k in keys) and draw(st.booleans()):
        lying_dict = _LyingDict(dict.fromkeys(keys, b"v"))  # type: ignore[arg-type]
        lying_dict.refused = frozenset(refused)  # type: ignore[arg-type]
        return lying_dict, first
    known = {k: draw(st.one_of(st.integers(), st.binary(max_size=3))) for k in keys}
    for k in refused:
        del known[k]
    return _Lying(draw(st.permutations(keys)), known), first


@CHEAP
@given(lying_mappings().flatmap(lambda lm: placed(lm[0]).map(lambda p: (*p, lm[1]))))
def test_a_mapping_that_refuses_a_key_it_iterates(case: tuple[Any, Path, bytes | str]) -> None:
    value, path, refused = case
    error = _encode_error(value)
    assert error.path == (*path, refused)
    assert f"iterates the key {refused!r}, then refuses it with KeyError" in error.reason
    assert isinstance(error.__cause__, KeyError)
    # Nothing of the failed encode is left behind: the same keys still encode.
    assert encode({b"after": 1}) == b"d5:afteri1ee"


def test_a_refused_key_is_named_by_its_bytes_when_it_is_a_memoryview() -> None:
    key = memoryview(b"mv")
    value = [_Lying([b"a", key], {b"a": 1})]  # type: ignore[list-item]
    assert _encode_error(value).path == (0, b"mv")


def test_a_refusing_mapping_beyond_the_cycle_check() -> None:
    # Past 1000 levels the encoder looks for cycles across the whole value, a refusing
    # Mapping not reached yet included: that walk must not trip on it, and the
    # encoder then reports the refusal itself when it gets there.
    deep: Any = 1
    for _ in range(1200):
        deep = [deep]
    value = [deep, _Lying([b"a", b"b"], {b"a": 1})]
    error = _encode_error(value)
    assert error.path == (1, b"b")


# --- the caller's own code raising --------------------------------------------------------


def _raising_sources(exc: Exception) -> list[tuple[str, Any]]:
    """Values whose own methods raise ``exc`` while they are encoded."""

    class Iterating(Mapping[Any, Any]):
        def __iter__(self) -> Iterator[Any]:
            raise exc

        def __len__(self) -> int:
            return 1

        def __getitem__(self, key: Any) -> Any:
            return 1

    class Getting(Mapping[Any, Any]):
        def __iter__(self) -> Iterator[Any]:
            return iter([b"a"])

        def __len__(self) -> int:
            return 1

        def __getitem__(self, key: Any) -> Any:
            raise exc

    class Listing(list[Any]):
        def __iter__(self) -> Iterator[Any]:
            yield 7  # the encoder's current value is then an int: not an int's error
            raise exc

    class Tupling(tuple[Any, ...]):
        def __iter__(self) -> Iterator[Any]:
            yield "text"
            raise exc

    class Bytes(bytes):
        def __bytes__(self) -> bytes:
            raise exc

    class Int(int):
        def __int__(self) -> int:
            raise exc

    sources = [
        ("mapping-iter", Iterating()),
        ("list-subclass-iter", Listing()),
        ("tuple-subclass-iter", Tupling()),
        ("bytes-subclass", Bytes(b"x")),
        ("int-subclass", Int(3)),
    ]
    if not isinstance(exc, KeyError):  # a KeyError from [] is the refused key, ours
        sources.append(("mapping-getitem", Getting()))
    return sources


CALLER_ERRORS = [
    ValueError("the caller's own"),
    TypeError("the caller's own"),
    RuntimeError("the caller's own"),
    KeyError("the caller's own"),
    UnicodeEncodeError("utf-8", "x", 0, 1, "the caller's own"),
]


@pytest.mark.parametrize("depth", [0, 1, _FAST_DEPTH, _FAST_DEPTH + 1])
@pytest.mark.parametrize("exc", CALLER_ERRORS, ids=lambda e: type(e).__name__)
def test_the_callers_own_exceptions_propagate_unchanged(exc: Exception, depth: int) -> None:
    for name, source in _raising_sources(exc):
        for value in ([1, source], {b"a": 1, b"b": source}):
            nested: Any = value
            for _ in range(depth):
                nested = [nested]
            for fn in (encode, _encode_general):
                with pytest.raises(type(exc)) as info:
                    fn(nested)
                assert info.value is exc, (name, fn)


def test_a_mapping_is_never_read_through_items_keys_or_values() -> None:
    class Plain(_PairMap):
        def items(self) -> Any:
            raise ValueError("items")

        def keys(self) -> Any:
            raise ValueError("keys")

        def values(self) -> Any:
            raise ValueError("values")

    assert encode([Plain([(b"b", 2), (b"a", 1)])]) == b"ld1:ai1e1:bi2eee"
    # Nor when the encoder looks for the path to an error inside it.
    error = _encode_error({b"m": Plain([(b"b", [1, None]), (b"a", 1)])})
    assert error.path == (b"m", b"b", 1)


def test_the_path_search_skips_what_the_encoder_had_not_reached() -> None:
    # Keys are written sorted, so b"a" (bad) is met first; the path search walks the
    # dict in its own order, b"b" first, whose Mapping fails when iterated. The error
    # reported is still the one the encoder met.
    class Broken(Mapping[Any, Any]):
        def __iter__(self) -> Iterator[Any]:
            raise RuntimeError("not reached by the encoder")

        def __len__(self) -> int:
            return 0

        def __getitem__(self, key: Any) -> Any:
            raise KeyError(key)

    error = _encode_error({b"b": [Broken()], b"a": None})
    assert error.path == (b"a",)
    assert "NoneType has no bencoding" in error.reason


# --- garbage in ---------------------------------------------------------------------------


class _Odd:
    """A value with no bencoding."""


garbage_leaves = st.one_of(
    st.integers(),
    st.binary(max_size=5),
    st.text(max_size=4),
    st.sampled_from([None, True, 1.5, {1}, _Odd(), "\udc80"]),
    st.just(5000).map(lambda digits: 10**digits),  # too long to write
    st.binary(max_size=3).map(_released),
    st.binary(max_size=3).map(lambda b: memoryview(bytearray(b))),
)


def _refusing_one(case: tuple[list[Any], bytes]) -> _Lying:
    """A Mapping holding ``values`` under keys it serves, and refusing one more key."""
    values, extra = case
    known: dict[bytes | str, Any] = {b"k%d" % i: v for i, v in enumerate(values)}
    return _Lying([*known, b"x" + extra], known)


def _garbage_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.one_of(st.binary(max_size=3), st.text(max_size=2), st.integers(0, 2))
    return st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(keys, children, max_size=3),
        st.lists(st.tuples(keys, children), max_size=3).map(_PairMap),
        st.tuples(st.lists(children, max_size=2), st.binary(max_size=2)).map(_refusing_one),
        st.binary(max_size=3).map(_with_released_key),
    )


garbage = st.recursive(garbage_leaves, _garbage_containers, max_leaves=12)


@CHEAP
@given(garbage, st.integers(0, _FAST_DEPTH + 3))
def test_garbage_in_gives_our_error_never_a_bare_one(value: Any, depth: int) -> None:
    for _ in range(depth):
        value = [value]
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(4300)
    try:
        got = _same_on_both_paths(value)
    finally:
        sys.set_int_max_str_digits(old)
    assert got[0] in ("ok", "encode error"), got  # type: ignore[index]
