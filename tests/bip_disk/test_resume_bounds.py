"""Resume data is untrusted: loading it costs what a real file of the torrent costs.

A resume file claiming 64 million pieces, or listing millions of empty file entries,
used to be decoded and built in full (gigabytes of ints and dicts) before it was
compared with the torrent. Given the torrent's counts, data longer than any
``to_bytes`` writes for them is now refused before it is decoded, other counts
before the bitfield is built, and ``have`` stays a bitfield. These tests measure
the allocation peak of refusing such data.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_bencode import encode
from bip_disk._errors import ResumeDataError
from bip_disk._filesystem import FileStat
from bip_disk._manager import open_disk_manager
from bip_disk._memory import MemoryFileSystem
from bip_disk._resume import _MAX_INT, _ROOM_FOR_NEW_KEYS, ResumeData, _max_size, have_flags
from bip_metainfo import InfoHash, create_torrent

MB = 1 << 20
V1 = bytes(range(20))


def document(**changes: Any) -> dict[bytes, Any]:
    """A valid resume document of 13 pieces and 3 files, with ``changes`` (None deletes)."""
    doc: dict[bytes, Any] = {
        b"format": b"bip-disk resume",
        b"version": 1,
        b"info-hash": V1,
        b"pieces": 13,
        b"have": bytes.fromhex("8408"),
        b"files": [{b"size": 100, b"mtime": 5}, {}, {b"size": 0, b"mtime": 7}],
        b"saved": 10**18,
    }
    for key, value in changes.items():
        name = key.replace("_", "-").encode()
        if value is None:
            del doc[name]
        else:
            doc[name] = value
    return doc


def refusal_peak(call: Callable[[], object], match: str) -> int:
    """Run ``call``, which must raise ResumeDataError matching ``match``; its allocation peak."""
    tracemalloc.start()
    try:
        with pytest.raises(ResumeDataError, match=match):
            call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(("num_pieces", "num_files"), [(1, 0), (8, 1), (9, 3), (100_003, 20)])
def test_the_size_bound_is_that_of_the_longest_document_written(
    num_pieces: int, num_files: int
) -> None:
    longest = ResumeData(
        InfoHash(v1=V1, v2=bytes(32)),
        num_pieces,
        frozenset(range(num_pieces)),
        # The longest mtime is the lowest (a file dated before 1970): its minus sign.
        (FileStat(_MAX_INT, -_MAX_INT - 1),) * num_files,
        _MAX_INT,
    )
    raw = longest.to_bytes()
    assert len(raw) == _max_size(num_pieces, num_files)
    # Keys of a later version are ignored, and have some room beyond that length.
    limit = len(raw) + _ROOM_FOR_NEW_KEYS
    length = next(n for n in range(limit) if len(raw) + 5 + len(str(n)) + n == limit)
    padded = raw[:-1] + b"2:zz" + str(length).encode() + b":" + b"x" * length + b"e"
    assert len(padded) == limit
    loaded = ResumeData.from_bytes(padded, num_pieces=num_pieces, num_files=num_files)
    assert loaded == longest
    with pytest.raises(ResumeDataError, match=f"{limit + 1} bytes, more than the {limit}"):
        ResumeData.from_bytes(padded + b" ", num_pieces=num_pieces, num_files=num_files)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (encode(document(pieces=8_000_000, have=b"\xff" * 1_000_000)), "more than the"),
        (encode(document(pieces=80_000, have=bytes(10_000))), "counts 80000 pieces"),
        (encode(document(files=[{}] * 500_000)), "more than the"),
        (encode(document(files=[{}] * 2_000)), "lists 2000 files, the torrent 200"),
    ],
    ids=["pieces-long", "pieces-in-room", "files-long", "files-in-room"],
)
def test_data_of_other_counts_is_refused_before_it_is_built(raw: bytes, message: str) -> None:
    # 1 MB of "de" decodes to 36 MB of dicts, a 1 MB bitfield to 500 MB of ints
    # in a frozenset: refused before either, with at most 10 KB decoded.
    def load() -> object:
        return ResumeData.from_bytes(raw, num_pieces=13, num_files=200)

    assert refusal_peak(load, message) < MB // 4


def test_without_counts_have_stays_a_bitfield() -> None:
    claimed = 8_000_000
    raw = encode(document(pieces=claimed, have=b"\xff" * (claimed // 8), files=[]))
    tracemalloc.start()
    try:
        data = ResumeData.from_bytes(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # A few copies of the bitfield (decoded, PieceSet's, its count's int): the old
    # loader's frozenset took 500 MB.
    assert peak < 6 * claimed // 8
    assert len(data.have) == claimed
    assert claimed - 1 in data.have
    assert claimed not in data.have
    with pytest.raises(ResumeDataError, match="counts 8000000 pieces"):
        data.check_torrent(InfoHash(v1=V1), 13, 0)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (encode(document())[:-1], "not valid bencoding"),
        (encode(document()) + b"i1e", "not valid bencoding"),
        (b"d7:versioni1e6:format15:bip-disk resumee", "not valid bencoding"),
        (encode(document()).replace(b"4:sizei100e", b"4:sizei0100e"), "not valid bencoding"),
        (b"di1ei1ee", "not valid bencoding"),
        (b"le", "not a dictionary"),
        (encode(document(format=b"x" * 100)), "not bip_disk resume data"),
        (encode(document(version=2)), "version 2 is not 1"),
        (encode(document(info_hash=b"x" * 21)), "'info-hash' is not 20 bytes"),
        (encode(document(info_hash=None)), "names no info-hash"),
        (encode(document(files=[{b"mtime": 2**63, b"size": 1}, {}, {}])), "out of range"),
        (encode(document(files=[{}, {b"mtime": 1}, {}])), r"files\[1\] must hold exactly"),
        (encode(document(files=[{}, {}, b"x"])), r"files\[2\] is not a dictionary"),
        (encode(document(files=[{}] * 4)), "lists 4 files, the torrent 3"),
        (encode(document(files=None)), "'files' is not a list"),
        (encode(document(files=b"x")), "'files' is not a list"),
        (encode(document(have=None)), "'have' is not a byte string"),
        (encode(document(have=b"\xff\xff")), "spare bits set"),
        (encode(document(have=b"\xff")), "is 2 bytes, not 1"),
        (encode(document(pieces=0, have=b"")), "not a positive count"),
        (encode(document(saved=-1)), "'saved' is -1, out of range"),
    ],
)
def test_malformed_data_with_counts_is_refused(raw: bytes, message: str) -> None:
    with pytest.raises(ResumeDataError, match=message):
        ResumeData.from_bytes(raw, num_pieces=13, num_files=3)


def test_good_data_loads_and_unknown_keys_are_ignored() -> None:
    raw = encode(document())
    data = ResumeData.from_bytes(memoryview(raw), num_pieces=13, num_files=3)
    assert data == ResumeData.from_bytes(bytearray(raw))
    assert data.files == (FileStat(100, 5), None, FileStat(0, 7))
    assert data.have == {0, 5, 12}
    assert data.to_bytes() == raw
    # As libtorrent: data of a later version that adds keys still loads.
    later = encode(document(a=[{}], zz={b"x": 1}))
    assert ResumeData.from_bytes(later, num_pieces=13, num_files=3) == data
    with pytest.raises(ValueError, match="num_files must be None or a count"):
        ResumeData.from_bytes(raw, num_pieces=13, num_files=-1)
    with pytest.raises(ResumeDataError, match="must be bytes, not str"):
        ResumeData.from_bytes("d", num_pieces=13, num_files=3)  # type: ignore[arg-type]


def test_have_is_a_read_only_set_of_the_bitfield() -> None:
    data = ResumeData(InfoHash(v1=V1), 13, frozenset({0, 5, 12}), (), 0)
    have = data.have
    assert have == frozenset({0, 5, 12})
    assert frozenset({0, 5, 12}) == have
    assert have != {0, 5}
    assert have == ResumeData.from_bytes(data.to_bytes()).have
    assert hash(have) == hash(frozenset({0, 5, 12}))
    assert hash(data) == hash(ResumeData.from_bytes(data.to_bytes()))
    assert list(have) == [0, 5, 12]
    assert len(have) == 3
    assert (have - {0}) == frozenset({5, 12})
    assert isinstance(have - {0}, frozenset)
    assert (frozenset({5, 6}) - have) == frozenset({6})
    assert (have & {5, 6}) == {5}
    assert have <= set(range(13))
    for outside in (-1, 13, "5", 5.0, None):
        assert outside not in have
    assert "3/13" in repr(have)
    assert not hasattr(have, "add")
    assert have_flags(data) == bytes([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1])
    assert have_flags(ResumeData(InfoHash(v1=V1), 16, {15}, (), 0)) == bytes(15) + b"\x01"
    with pytest.raises(ResumeDataError, match="'have' of 13 pieces"):
        ResumeData(InfoHash(v1=V1), 13, frozenset({13}), (), 0)
    with pytest.raises(ResumeDataError, match="'have' of 13 pieces"):
        ResumeData(InfoHash(v1=V1), 13, frozenset({"1"}), (), 0)  # type: ignore[arg-type]


_ints = st.one_of(st.integers(-2, 20), st.just(2**63 - 1), st.just(2**63))
_scalars = st.one_of(_ints, st.binary(max_size=3), st.sampled_from([bytes(20), bytes(32)]))
_values = st.one_of(
    _scalars,
    st.lists(_scalars, max_size=2),
    st.dictionaries(st.binary(max_size=5), _scalars, max_size=2),
)
_entries: st.SearchStrategy[Any] = st.one_of(
    st.just({}),
    st.fixed_dictionaries({b"size": _ints, b"mtime": _ints}),
    st.dictionaries(st.sampled_from([b"size", b"mtime", b"x"]), _values, max_size=3),
    _scalars,
)
_KEYS = ["format", "version", "info_hash", "info_hash2", "pieces", "have", "files", "saved", "x"]


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(_KEYS), st.one_of(_values, st.lists(_entries, max_size=3)), max_size=4
    ),
    st.data(),
)
def test_garbage_is_refused_never_a_crash(changes: dict[str, Any], draw: st.DataObject) -> None:
    raw = encode(document(**changes))
    if draw.draw(st.booleans()):  # sometimes a byte changed too
        at = draw.draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([draw.draw(st.integers(0, 255))]) + raw[at + 1 :]
    counts: dict[str, int] = draw.draw(st.sampled_from([{}, {"num_pieces": 13, "num_files": 3}]))
    try:
        data = ResumeData.from_bytes(raw, **counts)
    except ResumeDataError:
        return
    assert ResumeData.from_bytes(data.to_bytes(), **counts) == data
    if counts:
        data.check_torrent(data.info_hash, 13, 3)


async def test_the_manager_refuses_a_hostile_resume_file_cheaply(tmp_path: Path) -> None:
    root = tmp_path / "album"
    root.mkdir()
    (root / "a.bin").write_bytes(bytes(40000))
    metainfo = create_torrent(root, version="v1", piece_length=16384, creation_date=None)
    info = metainfo.info
    claimed = 64_000_000
    hostile = encode(
        document(info_hash=info.info_hash.v1, pieces=claimed, have=bytes(claimed // 8), files=[{}])
    )
    async with open_disk_manager() as disk:
        with trio.fail_after(10):
            tracemalloc.start()
            try:
                with pytest.raises(ResumeDataError, match="a torrent of 3 pieces and 1 files"):
                    await disk.add_torrent(metainfo, MemoryFileSystem(), resume_data=hostile)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert peak < MB
            good = document(info_hash=info.info_hash.v1, pieces=3, have=b"\xe0", files=[{}])
            torrent = await disk.add_torrent(metainfo, MemoryFileSystem(), resume_data=encode(good))
            await disk.wait_checked(torrent)
