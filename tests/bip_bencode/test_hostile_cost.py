"""What hostile input costs to refuse: memory and time stay in proportion to its size.

Each case is small and would cost many times its bound before the fix it guards:
the ``str_keys`` error path once kept a copy of the path to every value it looked
at, the fast decoder once searched a whole digit run for its ``:`` and handed it to
``int()``, and the error diagnosis once stepped through a digit run in Python.
Times are CPU time of this process (``time.process_time``), so other work on the
machine does not count against them.
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

from bip_bencode import BencodeDecodeError, DecodeErrorKind, decode
from bip_bencode._decode import decode_general
from bip_bencode._diagnose import integer_error

K = DecodeErrorKind


def _refusal(call: Callable[[], object]) -> tuple[BencodeDecodeError, float]:
    """Run ``call``, which must raise; return the error and the CPU seconds it took."""
    start = time.process_time()
    with pytest.raises(BencodeDecodeError) as info:
        call()
    return info.value, time.process_time() - start


@pytest.fixture
def unlimited_int_digits() -> Iterator[None]:
    """No limit on int <-> str conversion (as an application may set), for this test."""
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        yield
    finally:
        sys.set_int_max_str_digits(old)


def test_a_non_utf8_key_costs_memory_in_proportion_to_the_input() -> None:
    # A bad key first, then many values deep down: finding the bad key's offset must
    # not copy a deep path for each of them (this once peaked at ~300x the input).
    depth, count = 100, 5000
    data = b"ld1:\xffi1ee" + b"l" * depth + b"i1e" * count + b"e" * depth + b"e"
    tracemalloc.start()
    try:
        error, _ = _refusal(lambda: decode(data, str_keys=True))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (error.kind, error.offset) == (K.NON_UTF8_KEY, 2)
    assert peak < 50 * len(data)


def test_a_non_utf8_key_deep_down_is_found_at_its_offset() -> None:
    # The path to the bad dict runs through list indices and dict keys alike.
    data = b"l" + b"i1e" * 3 + b"d1:ad1:bli0eld2:ok1:x2:\xc3\x28i1eeeeee" + b"e"
    error, _ = _refusal(lambda: decode(data, str_keys=True))
    bad_key = data.index(b"2:\xc3\x28")
    assert (error.kind, error.offset) == (K.NON_UTF8_KEY, bad_key)
    assert decode(data.replace(b"\xc3\x28", b"zz"), str_keys=True) == [
        1,
        1,
        1,
        {"a": {"b": [0, [{"ok": b"x", "zz": 1}]]}},
    ]


@pytest.mark.usefixtures("unlimited_int_digits")
def test_a_long_string_length_is_refused_in_linear_time() -> None:
    # With no int() digit limit, reading a 400,000-digit length took seconds (int()
    # is quadratic); a length of more than 20 digits is refused without reading it.
    data = b"l" + b"1" * 400_000 + b":e"
    error, seconds = _refusal(lambda: decode(data))
    general, _ = _refusal(lambda: decode_general(data, 0, False, 512))
    assert (error.kind, error.offset) == (general.kind, general.offset)
    assert error.kind == K.UNEXPECTED_EOF
    keyed = b"d" + b"1" * 400_000 + b":e"
    key_error, key_seconds = _refusal(lambda: decode(keyed))
    assert key_error.kind == K.UNEXPECTED_EOF
    assert seconds < 0.2
    assert key_seconds < 0.2


def test_a_long_digit_run_is_diagnosed_in_linear_time() -> None:
    # Saying what is wrong with 5 MB of digits stepped through them in Python (~1 s).
    error, seconds = _refusal(lambda: decode(b"1" * 5_000_000))
    assert (error.kind, error.offset) == (K.UNEXPECTED_EOF, 5_000_000)
    # The integer's diagnosis on its own: decode() first runs its own regex over the
    # run, which is linear but slower than the diagnosis.
    start = time.process_time()
    integer = integer_error(b"i-" + b"1" * 5_000_000, 0)
    int_seconds = time.process_time() - start
    assert (integer.kind, integer.offset) == (K.UNEXPECTED_EOF, 5_000_002)
    assert seconds < 0.1
    assert int_seconds < 0.1


def test_a_huge_string_length_is_told_by_its_size_not_copied_into_the_message() -> None:
    data = b"1" * 100_000 + b":abc"
    with pytest.raises(BencodeDecodeError) as caught:
        decode(data)
    assert "100000-digit" in str(caught.value)
    assert len(str(caught.value)) < 200
