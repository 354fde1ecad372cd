"""BEP 41 options: parsing, encoding, URLData chunks, and hypothesis on random option areas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_utracker._errors import LocalProtocolError, MalformedPacketError
from bip_utracker._options import (
    MAX_OPTION_DATA,
    MAX_OPTIONS,
    Option,
    OptionType,
    encode_options,
    parse_options,
    url_data_of,
    url_data_options,
)

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "tracker"
DATA: dict[str, Any] = json.loads(
    (VECTORS / "udp_tracker_bep15_bep41.json").read_text(encoding="utf-8")
)


@pytest.mark.parametrize("vector", DATA["bep41_vectors"], ids=lambda vector: vector["name"])
def test_bep41_vectors(vector: dict[str, Any]) -> None:
    options = parse_options(bytes.fromhex(vector["hex"]))
    assert url_data_of(options) == vector["expected_url_data"].encode()
    assert options[0] == Option(OptionType.URL_DATA, vector["expected_url_data"].encode())


def test_option_type_numbers_match_the_vectors() -> None:
    types = DATA["bep41_option_types"]
    assert types["0x0"].startswith("EndOfOptions")
    assert types["0x1"].startswith("NOP")
    assert types["0x2"].startswith("URLData")
    assert [member.value for member in OptionType] == [0, 1, 2]


def test_end_of_options_stops_parsing() -> None:
    assert parse_options(b"\x01\x00\x02\x05") == (Option(OptionType.NOP),)
    assert parse_options(b"") == ()


def test_unknown_types_are_skipped_by_their_length() -> None:
    options = parse_options(b"\x07\x02ab\xff\x00\x02\x01c")
    assert options == (Option(7, b"ab"), Option(255, b""), Option(OptionType.URL_DATA, b"c"))
    assert url_data_of(options) == b"c"


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\x02", "no length"),
        (b"\x03\x02a", "declares 2 bytes, 1 left"),
        (b"\x01\x02", "no length"),
    ],
)
def test_truncated_options(raw: bytes, match: str) -> None:
    with pytest.raises(MalformedPacketError, match=match):
        parse_options(raw)


def test_option_count_is_bounded() -> None:
    assert len(parse_options(b"\x01" * MAX_OPTIONS)) == MAX_OPTIONS
    with pytest.raises(MalformedPacketError, match="more than"):
        parse_options(b"\x01" * (MAX_OPTIONS + 1))


def test_url_data_chunks() -> None:
    assert url_data_options(b"") == ()
    data = bytes(range(256)) * 3
    options = url_data_options(data)
    assert [len(option.data) for option in options] == [255, 255, 255, 3]
    assert url_data_of(parse_options(encode_options(options))) == data


@pytest.mark.parametrize(
    "option",
    [Option(-1), Option(256), Option(True), Option(0, b"x"), Option(2, b"x" * 256), Option(2, "x")],  # type: ignore[arg-type]
)
def test_encode_refuses_bad_options(option: Option) -> None:
    with pytest.raises(LocalProtocolError):
        option.encode()


_options = st.lists(
    st.one_of(
        st.just(Option(OptionType.NOP)),
        st.builds(Option, st.integers(2, 255), st.binary(max_size=MAX_OPTION_DATA)),
    ),
    max_size=20,
)


@given(_options)
def test_round_trip(options: list[Option]) -> None:
    assert parse_options(encode_options(options)) == tuple(options)
    assert parse_options(encode_options(options) + b"\x00junk") == tuple(options)


@given(st.binary(max_size=600))
def test_random_bytes_parse_or_raise_ours(raw: bytes) -> None:
    try:
        options = parse_options(raw)
    except MalformedPacketError:
        return
    assert raw.startswith(encode_options(options))
