"""The fast paths against the general codec: same values, same bytes, same errors.

decode() and encode() first try a small recursive fast path and fall back on the
general, iterative codec for anything the fast path does not accept. These tests
hold the two to exactly the same behaviour on arbitrary and mutated input, at and
around the fast path's depth limit, with small ``max_depth`` values, in lenient
mode, and when the caller is already deep in its own stack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bip_bencode import BencodeDecodeError, BencodeEncodeError, Value, decode, decode_prefix, encode
from bip_bencode._decode import decode_general
from bip_bencode._encode import _FAST_DEPTH as ENCODE_FAST_DEPTH
from bip_bencode._encode import _encode_general, _fast_dict, _fast_list
from bip_bencode._fast_decode import FAST_DEPTH, Fallback, fast_dict, fast_list

CHEAP = settings(max_examples=200, deadline=None)
NORMAL = settings(max_examples=80, deadline=None)

# --- strategies ----------------------------------------------------------------------

integers = st.one_of(
    st.integers(),
    st.sampled_from([0, 1, -1, 9, 10, 99, 100, 255, 256, -256, 2**64]),
)
byte_strings = st.one_of(
    st.binary(max_size=12),
    st.sampled_from([b"", b"e", b"i", b"l", b"d", b":", b"0", b"1:a", b"i1e"]),
    st.tuples(st.binary(min_size=1, max_size=3), st.integers(4, 120)).map(lambda t: t[0] * t[1]),
)
keys = st.one_of(st.binary(max_size=5), st.sampled_from([b"", b"a", b"b", b"id", b"\xff"]))


def _containers(children: st.SearchStrategy[Value]) -> st.SearchStrategy[Value]:
    return st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4))


values: st.SearchStrategy[Value] = st.recursive(
    st.one_of(integers, byte_strings), _containers, max_leaves=16
)


@st.composite
def nested(draw: st.DrawFn) -> Value:
    """A value wrapped in lists and dicts, about as deep as the fast paths go."""
    value = draw(values)
    for _ in range(draw(st.integers(0, FAST_DEPTH + 6))):
        value = [value] if draw(st.booleans()) else {draw(keys): value}
    return value


any_value = st.one_of(values, nested())

TOKENS = [b"i", b"e", b"l", b"d", b"-", b":", b"0", b"1", b"9", b"x", b"1:a", b"0:", b"i0e"]
TOKENS += [b"i-0e", b"i01e", b"le", b"de", b"10:", b"01:", b" ", b"+", b"_", b"\xff"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid encoding with a few bytes changed, inserted, deleted or cut off."""
    data = bytearray(encode(draw(any_value)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "swap"]))
        token = draw(st.sampled_from(TOKENS))
        if how == "replace":
            data[at : at + len(token)] = token
        elif how == "insert":
            data[at:at] = token
        elif how == "delete":
            del data[at : at + draw(st.integers(1, 3))]
        elif how == "truncate":
            del data[at:]
        elif at + 1 < len(data):
            data[at], data[at + 1] = data[at + 1], data[at]
    return bytes(data)


documents = st.one_of(
    any_value.map(encode),
    mutated(),
    st.lists(st.sampled_from(TOKENS), max_size=30).map(b"".join),
    st.binary(max_size=30),
)
max_depths = st.one_of(st.just(512), st.integers(0, FAST_DEPTH + 8))


# --- helpers -------------------------------------------------------------------------


def _same(a: object, b: object) -> bool:
    """Equal, with the same types and the same dict key order all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _outcome(fn: Callable[[], object]) -> object:
    """What ``fn()`` returns, or the (type, kind/path, offset, message) of our error."""
    try:
        return fn()
    except BencodeDecodeError as exc:
        return ("decode error", exc.kind, exc.offset, str(exc))
    except BencodeEncodeError as exc:
        return ("encode error", exc.path, str(exc))


def _general_decode_checked(data: bytes, lenient: bool, max_depth: int) -> object:
    def run() -> Value:
        value, end = decode_general(data, 0, lenient, max_depth)
        if end != len(data):
            return ("trailing", end)  # type: ignore[return-value]
        return value

    return _outcome(run)


def _public_decode_checked(data: bytes, lenient: bool, max_depth: int) -> object:
    def run() -> Value:
        try:
            return decode(data, lenient=lenient, max_depth=max_depth)
        except BencodeDecodeError as exc:
            if exc.kind.value == "trailing_data":
                return ("trailing", exc.offset)  # type: ignore[return-value]
            raise

    return _outcome(run)


def _fast(data: bytes, start: int = 0, max_depth: int = 512) -> tuple[Value, int] | None:
    """The fast path alone: its result, or None where it gives up."""
    try:
        if data[start] == 100:
            return fast_dict(data, start + 1, 1, max_depth)
        if data[start] == 108:
            return fast_list(data, start + 1, 1, max_depth)
    except (Fallback, IndexError, ValueError):
        return None
    return None


def _has_empty_first_key(value: object) -> bool:
    if isinstance(value, dict):
        return (bool(value) and min(value) == b"") or any(map(_has_empty_first_key, value.values()))
    if isinstance(value, list):
        return any(map(_has_empty_first_key, value))
    return False


def _nest(value: Value, depth: int) -> Value:
    for _ in range(depth):
        value = [value]
    return value


def _call_near_the_limit(fn: Callable[[], Any], frames_left: int) -> Any:
    """Call ``fn`` with only about ``frames_left`` calls possible before RecursionError."""

    def room(n: int) -> int:  # how many more calls fit (C-level ones count too)
        try:
            return room(n + 1)
        except RecursionError:
            return n

    def down(remaining: int) -> Any:
        return fn() if remaining <= 0 else down(remaining - 1)

    return down(room(0) - frames_left)


# --- decoding --------------------------------------------------------------------------


@CHEAP
@given(documents, st.booleans(), max_depths)
@example(b"d0:i1ee", False, 512)  # b"" as the first key: the fast path leaves it
@example(b"d1:bi1e1:ai2ee", True, 512)  # unsorted, accepted in lenient mode
@example(b"d1:ai1e1:ai2ee", True, 512)  # duplicate
@example(b"l" * 17 + b"e" * 17, False, 17)
@example(b"l" * 18 + b"e" * 18, False, 17)
@example(b"l" * 17 + b"d1:bi1e1:ai2ee" + b"e" * 17, True, 512)  # unsorted past FAST_DEPTH
@example(b"li" + b"9" * 5000 + b"ee", False, 512)  # past int()'s digit limit
@example(b"l1:ae", False, 512)
@example(b"l2:ae", False, 512)  # a string running past the end
@example(b"l1 :ae", False, 512)
@example(b"li 1ee", False, 512)
@example(b"li1_0ee", False, 512)
@example(b"li+1ee", False, 512)
@example(b"d1:a1 :be", False, 512)
def test_decode_is_the_general_decoder(data: bytes, lenient: bool, max_depth: int) -> None:
    fast_result = _public_decode_checked(data, lenient, max_depth)
    general_result = _general_decode_checked(data, lenient, max_depth)
    assert _same(fast_result, general_result)


# Numbers the two decoders must refuse alike, wherever they stand.
NOT_CANONICAL = [
    b"01:a", b"00:", b"001:a", b"010:aaaaaaaaaa", b"-1:a", b"+1:a", b" 1:a", b"1 :a",
    b"1_0:aaaaaaaaaa", b"99999999999999999999999:a", b"1:",
    b"i-0e", b"i-01e", b"i00e", b"i01e", b"i-e", b"ie", b"i1 e", b"i 1e", b"i+1e",
    b"i1_0e", b"i--1e", b"i1-e", b"i\xd9\xa1e", b"i1", b"i-",
    b"2:a", b"12:a", b".:", b"/:", b"-:", b"/1:a", b" :",
]  # fmt: skip
CONTEXTS = [b"l%se", b"d1:a%se", b"d%si1ee", b"d1:al%see", b"l" * 17 + b"%s" + b"e" * 17]


@pytest.mark.parametrize("snippet", NOT_CANONICAL)
@pytest.mark.parametrize("context", CONTEXTS)
def test_non_canonical_numbers_are_refused_alike(snippet: bytes, context: bytes) -> None:
    data = context % snippet
    for lenient in (False, True):
        got = _public_decode_checked(data, lenient, 512)
        assert _same(got, _general_decode_checked(data, lenient, 512))
    assert _fast(data) is None or _fast(data) == _outcome(
        lambda: decode_general(data, 0, False, 512)
    )


@CHEAP
@given(documents, st.integers(0, 40))
def test_fast_path_never_accepts_what_the_general_decoder_refuses(data: bytes, start: int) -> None:
    start = min(start, len(data))
    fast_result = _fast(data, start)
    if fast_result is None:
        return
    general = _outcome(lambda: decode_general(data, start, False, 512))
    assert _same(fast_result, general)


@NORMAL
@given(any_value)
def test_fast_path_takes_canonical_documents(value: Value) -> None:
    # Guards the speed: the fast path must not quietly give up on valid input.
    data = encode(value)
    if isinstance(value, list | dict) and not _has_empty_first_key(value):
        assert _same(_fast(data), (value, len(data)))


@NORMAL
@given(documents, st.binary(max_size=6), st.booleans(), max_depths)
def test_decode_prefix_is_the_general_decoder(
    data: bytes, head: bytes, lenient: bool, max_depth: int
) -> None:
    buf = head + data
    got = _outcome(lambda: decode_prefix(buf, len(head), lenient=lenient, max_depth=max_depth))
    want = _outcome(lambda: decode_general(buf, len(head), lenient, max_depth))
    assert _same(got, want)


@pytest.mark.parametrize("depth", range(FAST_DEPTH - 2, FAST_DEPTH + 4))
@pytest.mark.parametrize("max_depth", [FAST_DEPTH - 1, FAST_DEPTH, FAST_DEPTH + 1, 512])
@pytest.mark.parametrize("inner", [b"i1e", b"de", b"d1:bi1e1:ai2ee", b"i01e", b""])
def test_depth_limit_at_the_fast_path_boundary(depth: int, max_depth: int, inner: bytes) -> None:
    for opener, closer in ((b"l", b"e"), (b"d1:a", b"e")):
        data = opener * depth + inner + closer * depth
        if not inner and opener == b"d1:a":
            data = opener * depth + b"le" + closer * depth
        for lenient in (False, True):
            assert _same(
                _public_decode_checked(data, lenient, max_depth),
                _general_decode_checked(data, lenient, max_depth),
            )


@pytest.mark.parametrize("opener", [b"l", b"d1:a"])
def test_fast_decoder_recursion_is_bounded(opener: bytes) -> None:
    # Called directly, so that no fallback hides a RecursionError: with a few more
    # frames left than FAST_DEPTH (room for the general decoder's own calls), 600
    # levels must still decode.
    data = opener * 600 + b"i1e" + b"e" * 600
    fast = fast_list if opener == b"l" else fast_dict
    got = _call_near_the_limit(lambda: fast(data, 1, 1, 1000), FAST_DEPTH + 20)
    assert _same(got, decode_general(data, 0, False, 1000))


@pytest.mark.parametrize("frames_left", [6, 10, 20, 40])
def test_decode_falls_back_when_the_stack_is_nearly_full(frames_left: int) -> None:
    data = encode({b"a": _nest([b"deep"], FAST_DEPTH + 4), b"b": 1})
    want = decode_general(data, 0, False, 512)[0]
    assert _same(_call_near_the_limit(lambda: decode(data), frames_left), want)


# --- encoding --------------------------------------------------------------------------


class _Odd:
    """A value with no bencoding."""


def _odd_values(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.one_of(keys, st.text(max_size=3)), children, max_size=3),
        st.dictionaries(st.one_of(keys, st.integers(0, 2)), children, max_size=2),
    )


encodables: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        integers,
        byte_strings,
        st.text(max_size=5),
        st.sampled_from([True, None, 1.5, bytearray(b"ab"), memoryview(b"cd"), "\udc80", _Odd()]),
        st.just(4400).map(lambda digits: 10**digits),  # too long to write
    ),
    _odd_values,
    max_leaves=12,
)


@st.composite
def nested_encodables(draw: st.DrawFn) -> Any:
    value = draw(encodables)
    for _ in range(draw(st.integers(0, ENCODE_FAST_DEPTH + 6))):
        value = [value] if draw(st.booleans()) else {draw(keys): value}
    return value


@CHEAP
@given(st.one_of(encodables, nested_encodables(), any_value))
def test_encode_is_the_general_encoder(value: Any) -> None:
    assert _same(_outcome(lambda: encode(value)), _outcome(lambda: _encode_general(value)))


def _reference_encode(value: Any) -> bytes:
    """Plain recursive bencoding of valid values, to check the general encoder by."""
    if type(value) is int:
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return b"%d:%s" % (len(raw), raw)
    if isinstance(value, list | tuple):
        return b"l" + b"".join(map(_reference_encode, value)) + b"e"
    pairs = sorted((key.encode() if isinstance(key, str) else key, v) for key, v in value.items())
    return b"d" + b"".join(_reference_encode(k) + _reference_encode(v) for k, v in pairs) + b"e"


valid_leaves = st.one_of(integers, byte_strings, st.text(max_size=4))


@st.composite
def valid_values(draw: st.DrawFn) -> Any:
    """Valid values of every accepted type, mixed and nested up to 40 deep."""
    value = draw(
        st.recursive(
            valid_leaves,
            lambda children: st.one_of(
                st.lists(children, max_size=3),
                st.lists(children, max_size=3).map(tuple),
                st.dictionaries(keys, children, max_size=3),
                st.dictionaries(st.text(max_size=3), children, max_size=3),
            ),
            max_leaves=12,
        )
    )
    for _ in range(draw(st.integers(0, 40))):
        value = draw(
            st.sampled_from(
                [[value], (value,), {b"k": value}, [b"x", value, 1], {"a": 1, "b": value}]
            )
        )
    return value


@CHEAP
@given(valid_values())
def test_general_encoder_writes_canonical_bencoding(value: Any) -> None:
    assert _encode_general(value) == _reference_encode(value)
    assert encode(value) == _reference_encode(value)


@pytest.mark.parametrize("depth", [1, 2, ENCODE_FAST_DEPTH - 1, ENCODE_FAST_DEPTH, 40, 1200])
def test_cycles_are_reported_alike(depth: int) -> None:
    outer: list[Any] = []
    node = outer
    for _ in range(depth):
        child: list[Any] = [b"x"]
        node.append({b"k": child})
        node = child
    node.append(outer)  # the innermost list holds the outermost: a cycle
    got = _outcome(lambda: encode(outer))
    assert got == _outcome(lambda: _encode_general(outer))
    assert isinstance(got, tuple)
    assert got[0] == "encode error"


TRICKY = [
    "\udc80", "é", "", True, None, 1.5, -1, 255, 256, b"x" * 300, bytearray(b"ab"),
    memoryview(b"cd"), (1, b"t"), {1: 2}, {b"a": 1, "a": 2}, {"b": 1, b"a": 2}, {"": 0},
    _Odd(), [b"ok", None],
]  # fmt: skip


def _tricky_id(value: object) -> str:
    """A test id the same in every process (pytest-xdist workers compare them): no address."""
    if isinstance(value, (memoryview, _Odd)):
        return type(value).__name__
    return repr(value)


@pytest.mark.parametrize("tricky", TRICKY, ids=_tricky_id)
@pytest.mark.parametrize("depth", [0, 1, ENCODE_FAST_DEPTH, ENCODE_FAST_DEPTH + 1])
def test_tricky_values_encode_alike(tricky: Any, depth: int) -> None:
    for value in ([b"a", tricky, 1], {b"a": tricky, b"b": 1}):
        nested_value = _nest(value, depth)
        got = _outcome(lambda v=nested_value: encode(v))  # type: ignore[misc]
        assert _same(got, _outcome(lambda v=nested_value: _encode_general(v)))  # type: ignore[misc]


@pytest.mark.parametrize("container", [list, dict])
def test_fast_encoder_recursion_is_bounded(container: type) -> None:
    value: Any = 1
    for _ in range(600):
        value = [value] if container is list else {b"a": value}
    out: list[bytes] = []
    fast = _fast_list if container is list else _fast_dict
    _call_near_the_limit(lambda: fast(value, out, 1), ENCODE_FAST_DEPTH + 30)
    assert b"".join(out) == _encode_general(value)


@pytest.mark.parametrize("frames_left", [6, 10, 20, 40])
def test_encode_falls_back_when_the_stack_is_nearly_full(frames_left: int) -> None:
    value: Any = {b"a": _nest([b"deep"], ENCODE_FAST_DEPTH + 4), b"b": "text"}
    want = _encode_general(value)
    assert _call_near_the_limit(lambda: encode(value), frames_left) == want


class _PairMap(Mapping[Any, Any]):
    """A Mapping that is no dict and so may hold keys that cannot be hashed."""

    def __init__(self, pairs: list[tuple[Any, Any]]) -> None:
        self._pairs = pairs

    def __getitem__(self, key: Any) -> Any:
        for k, v in self._pairs:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[Any]:
        return iter([k for k, _ in self._pairs])

    def __len__(self) -> int:
        return len(self._pairs)


@pytest.mark.parametrize("depth", [0, 1, ENCODE_FAST_DEPTH, ENCODE_FAST_DEPTH + 1])
def test_unhashable_keys_of_a_mapping_are_our_errors(depth: int) -> None:
    # The shape cache hashes a dict's keys; a key that cannot be hashed (only a
    # Mapping that is no dict can hold one) must not escape as a bare TypeError, nor
    # as a ValueError reported as "integer too large".
    for bad in (bytearray(b"a"), [1]):
        inner: Any = {b"x": _PairMap([(b"b", 1), (bad, 2)])}
        value = _nest(inner, depth)
        with pytest.raises(BencodeEncodeError, match="dictionary key must be bytes or str") as err:
            encode(value)
        assert err.value.path == (0,) * depth + (b"x",)
        assert _outcome(partial(_encode_general, value)) == _outcome(partial(encode, value))
    # A writable memoryview key is written as its bytes, as a read-only one is.
    writable: Any = {b"x": _PairMap([(b"b", 1), (memoryview(bytearray(b"a")), 2)])}
    assert encode(_nest(writable, depth)) == encode(_nest({b"x": {b"a": 2, b"b": 1}}, depth))


class _Shouting(dict[bytes, bytes]):
    """A dict subclass whose ``[]`` disagrees with its ``values()``."""

    def __getitem__(self, key: bytes) -> bytes:
        return dict.__getitem__(self, key).upper()


@pytest.mark.parametrize("keys", [[b"zq"], [b"zr", b"zs"], [b"zt", b"zu"][::-1]])
def test_a_mapping_is_read_alike_whether_its_shape_is_cached_or_not(keys: list[bytes]) -> None:
    # A Mapping's values are read as mapping[key] (as when its keys are first
    # sorted), also once a dict with the same keys has put them in the shape cache.
    value = {b"m": _Shouting(dict.fromkeys(keys, b"v"))}
    first = encode(value)
    encode(dict.fromkeys(keys, 1))  # caches the keys' shape
    assert encode(value) == first == _reference_encode({b"m": dict.fromkeys(keys, b"V")})


def test_a_str_subclass_key_is_written_as_its_characters() -> None:
    """A key's own ``encode()`` is ignored, as a value's is, whatever was encoded before
    (the shape cache must not make the bytes depend on history)."""

    class Shouting(str):
        def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
            return self.upper().encode(encoding, errors)

    cases: list[tuple[Any, bytes]] = [
        ({Shouting("a"): 1}, b"d1:ai1ee"),
        ({"x": {Shouting("a"): 1}}, b"d1:xd1:ai1eee"),
        ({Shouting("a"): Shouting("b")}, b"d1:a1:be"),
    ]
    for value, expected in cases:
        assert encode(value) == expected
        assert encode({"a": 1}) == b"d1:ai1ee"  # the plain shape, cached
        assert encode(value) == expected
