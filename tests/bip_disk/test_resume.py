"""Resume data: round trips, strict validation, bitfields, racy files."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bip_bencode import decode, encode
from bip_disk._errors import ResumeDataError
from bip_disk._filesystem import FileStat
from bip_disk._resume import (
    RACY_WINDOW_NS,
    RESUME_FORMAT,
    ResumeData,
)
from bip_metainfo import InfoHash

HYBRID = InfoHash(v1=b"\x01" * 20, v2=b"\x02" * 32)
SAVED = 10**18


def sample(**changes: Any) -> ResumeData:
    fields: dict[str, Any] = {
        "info_hash": HYBRID,
        "num_pieces": 13,
        "have": frozenset({0, 5, 12}),
        "files": (FileStat(100, 5 * 10**17), None, FileStat(0, SAVED - 1)),
        "saved_ns": SAVED,
    }
    fields.update(changes)
    return ResumeData(**fields)


def test_round_trip_and_layout() -> None:
    data = sample()
    raw = data.to_bytes()
    assert ResumeData.from_bytes(raw) == data
    assert ResumeData.from_bytes(bytearray(raw)) == data
    document = decode(raw)
    assert isinstance(document, dict)
    assert document[b"format"] == RESUME_FORMAT
    assert document[b"version"] == 1
    assert document[b"have"] == bytes.fromhex("8408")
    files = document[b"files"]
    assert isinstance(files, list)
    assert files[1] == {}
    for hashes in (InfoHash(v1=b"\x01" * 20), InfoHash(v2=b"\x02" * 32)):
        only = sample(info_hash=hashes)
        assert ResumeData.from_bytes(only.to_bytes()) == only


@given(st.integers(1, 200).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1)))))
def test_any_set_of_pieces_round_trips(case: tuple[int, set[int]]) -> None:
    num_pieces, pieces = case
    data = sample(num_pieces=num_pieces, have=frozenset(pieces))
    assert ResumeData.from_bytes(data.to_bytes()).have == pieces


def _tamper(**changes: Any) -> bytes:
    document = decode(sample().to_bytes())
    assert isinstance(document, dict)
    for key, value in changes.items():
        name = key.replace("_", "-").encode()
        if value is None:
            del document[name]
        else:
            document[name] = value
    return encode(document)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not valid bencoding"),
        (b"i1e", "not a dictionary"),
        (b"de", "not bip_disk resume data"),
        (_tamper(format=b"libtorrent resume file"), "not bip_disk resume data"),
        (_tamper(version=2), "version 2"),
        (_tamper(version=None), "'version' is missing"),
        (_tamper(info_hash=b"short"), "'info-hash' is not 20"),
        (_tamper(info_hash2=[1]), "'info-hash2' is not 32"),
        (encode({"format": RESUME_FORMAT, "version": 1}), "no info-hash"),
        (_tamper(pieces=0), "not a positive count"),
        (_tamper(pieces=-1), "out of range"),
        (_tamper(pieces=b"13"), "not an integer"),
        (_tamper(have=[1]), "'have' is not a byte string"),
        (_tamper(have=b"\x00"), "is 2 bytes, not 1"),
        (_tamper(have=b"\x00\x01"), "spare bits set"),
        (_tamper(files={}), "'files' is not a list"),
        (_tamper(files=[1]), r"files\[0\] is not a dictionary"),
        (_tamper(files=[{"size": 1}]), "exactly 'size' and 'mtime'"),
        (_tamper(files=[{"size": 1, "mtime": 2, "x": 3}]), "exactly"),
        (_tamper(files=[{"size": b"1", "mtime": 2}]), "not an integer"),
        (_tamper(files=[{"size": -1, "mtime": 2}]), "out of range"),
        (_tamper(saved=None), "'saved'"),
        (_tamper(saved=2**64), "out of range"),
    ],
)
def test_malformed_resume_data_is_refused(raw: bytes, message: str) -> None:
    with pytest.raises(ResumeDataError, match=message):
        ResumeData.from_bytes(raw)


def test_not_bytes_and_too_large() -> None:
    with pytest.raises(ResumeDataError, match="must be bytes"):
        ResumeData.from_bytes("text")  # type: ignore[arg-type]
    with pytest.raises(ResumeDataError, match="larger than"):
        ResumeData.from_bytes(bytes(64 * 1024 * 1024 + 1))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_resume_data_or_our_error(raw: bytes) -> None:
    with contextlib.suppress(ResumeDataError):
        ResumeData.from_bytes(raw)


def test_check_torrent() -> None:
    data = sample()
    data.check_torrent(HYBRID, 13, 3)
    with pytest.raises(ResumeDataError, match="for torrent"):
        data.check_torrent(InfoHash(v1=b"\x01" * 20), 13, 3)
    with pytest.raises(ResumeDataError, match="13 pieces"):
        data.check_torrent(HYBRID, 14, 3)
    with pytest.raises(ResumeDataError, match="3 files"):
        data.check_torrent(HYBRID, 13, 4)


def test_racy_files() -> None:
    data = sample()
    assert not data.is_racy(0)  # written long before the data was made
    assert not data.is_racy(1)  # missing
    assert data.is_racy(2)  # modified within the window before saving
    edge = sample(files=(FileStat(1, SAVED - RACY_WINDOW_NS),))
    assert not edge.is_racy(0)
    # When the last racy file stops being racy: its mtime plus the window.
    assert data.racy_until_ns() == SAVED - 1 + RACY_WINDOW_NS
    assert edge.racy_until_ns() is None
    both = sample(files=(FileStat(1, SAVED - 5), FileStat(1, SAVED - 9)))
    assert both.racy_until_ns() == SAVED - 5 + RACY_WINDOW_NS
