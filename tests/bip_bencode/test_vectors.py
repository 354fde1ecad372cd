"""Every public bencode vector in ../shared/vectors/bencode/, against its strict verdict."""

from __future__ import annotations

import ast
import json
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest

from bip_bencode import (
    BencodeDecodeError,
    BencodeEncodeError,
    DecodeErrorKind,
    decode,
    encode,
)

VECTOR_FILE = (
    Path(__file__).resolve().parents[3] / "shared" / "vectors" / "bencode" / "bencode_vectors.json"
)
# A missing file fails at collection: the vectors are part of the proof, never skipped.
VECTORS: dict[str, Any] = json.loads(VECTOR_FILE.read_text())


def _generate(spec: dict[str, Any]) -> bytes:
    """Build a large input from the vector file's `generate` description."""
    parts = []
    for part in spec["concat"]:
        if "ascii" in part:
            parts.append(part["ascii"].encode())
        elif "repeat_ascii" in part:
            parts.append(part["repeat_ascii"].encode() * part["count"])
        elif "repeat_hex" in part:
            parts.append(bytes.fromhex(part["repeat_hex"]) * part["count"])
        elif "for_i_in_range" in part:
            fmt = part["format"]
            parts.extend(fmt.format(i=i).encode() for i in range(part["for_i_in_range"]))
        else:
            raise AssertionError(f"unknown generate part {part}")
    return b"".join(parts)


FIXED = [v for v in VECTORS["decode_vectors"] if "input_hex" in v]
GENERATED = [v for v in VECTORS["decode_vectors"] if "generate" in v]


def test_the_vector_file_is_whole() -> None:
    assert len(FIXED) + len(GENERATED) == len(VECTORS["decode_vectors"])
    assert len(FIXED) >= 100
    assert all(v["strict_verdict"] in ("valid", "invalid") for v in FIXED)


@pytest.mark.parametrize("vector", FIXED, ids=[v["id"] for v in FIXED])
def test_decode_vector_strict_verdict(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["input_hex"])
    if vector["strict_verdict"] == "valid":
        value = decode(data)
        assert value == ast.literal_eval(vector["strict_decoded_py"])
        # Strictly valid input is canonical, so it re-encodes to itself.
        assert encode(value) == data
    else:
        with pytest.raises(BencodeDecodeError) as info:
            decode(data)
        assert info.value.kind == DecodeErrorKind(vector["strict_error_class"])
        assert 0 <= info.value.offset <= len(data)


UNSORTED = [v for v in FIXED if v.get("strict_error_class") == "unsorted_keys"]


@pytest.mark.parametrize("vector", UNSORTED, ids=[v["id"] for v in UNSORTED])
def test_lenient_mode_accepts_unsorted_keys_as_the_lenient_sources_do(
    vector: dict[str, Any],
) -> None:
    data = bytes.fromhex(vector["input_hex"])
    value = decode(data, lenient=True)
    assert isinstance(value, dict)
    expected = vector.get("source_expected_py", "None")
    if expected not in ("None", "error"):
        assert value == ast.literal_eval(expected)
    # Keys keep the order the input gives them, and re-encoding sorts them.
    keys = list(value)
    assert keys != sorted(keys)
    assert decode(encode(value)) == value


@pytest.mark.parametrize(
    "kind", ["duplicate_key", "leading_zero", "negative_zero", "unexpected_eof", "expected_digit"]
)
def test_lenient_mode_still_rejects_what_is_not_about_key_order(kind: str) -> None:
    vectors = [v for v in FIXED if v.get("strict_error_class") == kind]
    assert vectors
    for vector in vectors:
        with pytest.raises(BencodeDecodeError) as info:
            decode(bytes.fromhex(vector["input_hex"]), lenient=True)
        assert info.value.kind == DecodeErrorKind(kind), vector["id"]


@pytest.mark.parametrize("vector", GENERATED, ids=[v["id"] for v in GENERATED])
def test_decode_generated_vector(vector: dict[str, Any]) -> None:
    data = _generate(vector["generate"])
    behaviour = vector.get("source_behaviour", "")
    limit = re.search(r"depth_limit=(\d+)", behaviour)
    if limit:
        # The source decodes with a depth limit and expects it to trip.
        with pytest.raises(BencodeDecodeError) as info:
            decode(data, max_depth=int(limit.group(1)))
        assert info.value.kind is DecodeErrorKind.DEPTH_EXCEEDED
        # The input itself is valid: with room enough it decodes.
        assert encode(decode(data, max_depth=len(data))) == data
        return
    assert vector["source_expected_py"] != "error"
    value = decode(data)
    assert encode(value) == data
    if vector["id"] == "lt-list-1000-ints":
        assert value == list(range(1000))
    elif vector["id"] == "lt-dict-1000-keys":
        assert value == {b"%04d" % i: i for i in range(1000)}
    elif isinstance(value, bytes):
        assert len(value) == int(data[: data.index(b":")])


def _encode_input(value_py: str) -> tuple[object, bool]:
    """Turn a vector's `value_py` into a Python value; say if it holds a bool."""
    if value_py.endswith(" as ordered mapping"):
        pairs = ast.literal_eval(value_py.removesuffix(" as ordered mapping"))
        return OrderedDict(pairs), False
    if value_py.startswith("OrderedDict("):
        return eval(value_py, {"OrderedDict": OrderedDict}), False
    if value_py.endswith("(float)"):
        return float(value_py.split(maxsplit=1)[0]), False
    value = ast.literal_eval(value_py)
    return value, "True" in value_py or "False" in value_py


def _bools_to_ints(value: object) -> object:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dict):
        return {k: _bools_to_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_bools_to_ints(v) for v in value]
    return value


ENCODE = VECTORS["encode_vectors"]


@pytest.mark.parametrize("vector", ENCODE, ids=[v["value_py"][:40] for v in ENCODE])
def test_encode_vector(vector: dict[str, Any]) -> None:
    value, has_bool = _encode_input(vector["value_py"])
    expected = bytes.fromhex(vector["expected_hex"])
    if isinstance(value, float):
        # A JavaScript library truncates floats; bencoding has none, so we refuse.
        with pytest.raises(BencodeEncodeError, match="float"):
            encode(value)  # type: ignore[arg-type]
        return
    if has_bool:
        # bencode-py writes bools as 0 and 1; bencoding has no booleans, so we
        # refuse them and ask for int(). The rest must match the source.
        with pytest.raises(BencodeEncodeError, match="bool"):
            encode(value)  # type: ignore[arg-type]
        value = _bools_to_ints(value)
    assert encode(value) == expected  # type: ignore[arg-type]


def test_encode_error_vectors() -> None:
    by_source = {v["value_py"]: v for v in VECTORS["encode_error_vectors"]}
    assert len(by_source) == 4
    with pytest.raises(BencodeEncodeError, match="NoneType"):
        encode(None)  # type: ignore[arg-type]
    with pytest.raises(BencodeEncodeError, match="encode to b'string_key'"):
        encode({"string_key": 1, b"string_key": 2, "1": 2})
    with pytest.raises(TypeError, match="key must be bytes or str, not int"):
        encode({1: 2})  # type: ignore[arg-type]
    # bencode2 refuses empty strings: an implementation choice, not the spec.
    assert encode("") == b"0:"
    assert encode({"": 2}) == b"d0:i2ee"
    assert encode(["", 1]) == b"l0:i1ee"
