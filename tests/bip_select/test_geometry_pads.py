"""TorrentGeometry and BEP 47 pad bytes: a tracker's ``left`` counts file data only.

The oracle everywhere is bip_metainfo's own view, computed independently: a piece's
data is the length of its ``info.geometry.slices`` that fall in files that are not pad
files.
"""

from __future__ import annotations

import functools
import json
import pathlib
import tempfile
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bip_metainfo import Info, Metainfo, MetainfoError, PieceSet, create_torrent
from bip_select._errors import LocalProtocolError
from bip_select._geometry import TorrentGeometry

VECTORS = pathlib.Path(__file__).resolve().parents[3] / "shared" / "vectors" / "torrents"


def _data_in_piece(info: Info, piece: int) -> int:
    """The oracle: the bytes of ``piece`` that belong to files that are not pad files."""
    return sum(
        part.length
        for part in info.geometry.slices(piece)
        if not info.files[part.file_index].is_pad
    )


@functools.cache
def _padded_vectors() -> dict[str, Info]:
    """Every valid torrent of the shared vectors that has pad files (v1, v2 or hybrid)."""
    index = json.loads((VECTORS / "torrents_index.json").read_text())
    result = {}
    for entry in index["torrents"]:
        if entry["expect"] != "valid":
            continue
        try:
            info = Metainfo.from_bytes((VECTORS.parent / entry["file"]).read_bytes()).info
        except MetainfoError:
            continue  # valid for its source, refused by bip_metainfo: not this test's business
        if any(f.is_pad and f.length for f in info.files):
            result[entry["file"]] = info
    return result


def _vector_names() -> list[str]:
    return sorted(_padded_vectors())


def test_the_vectors_have_padded_torrents_of_every_kind() -> None:
    infos = _padded_vectors().values()
    assert any(info.is_hybrid for info in infos)
    assert any(info.is_v2 and not info.is_v1 for info in infos)
    assert any(not info.is_v2 for info in infos)


@pytest.mark.parametrize("name", _vector_names())
def test_vector_left_is_the_file_data(name: str) -> None:
    info = _padded_vectors()[name]
    g = TorrentGeometry.from_info(info)
    data = sum(f.length for f in info.files if not f.is_pad)
    assert g.data_length == data == info.total_size
    assert g.total_length == info.geometry.total_size > data  # the v1 view keeps the pads
    assert g.bytes_left(()) == data
    assert g.bytes_left(range(g.num_pieces)) == 0
    assert g.bytes_left(PieceSet(g.num_pieces, range(g.num_pieces))) == 0
    for piece in range(g.num_pieces):
        # piece_size keeps its meaning (what peers send, what bip_disk hashes) ...
        assert g.piece_size(piece) == info.piece_size(piece)
        # ... and the data in it is the pieces' own file slices without the pads.
        assert g.piece_data_size(piece) == _data_in_piece(info, piece)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_vector_left_of_any_subset(data: st.DataObject) -> None:
    info = _padded_vectors()[data.draw(st.sampled_from(_vector_names()))]
    g = TorrentGeometry.from_info(info)
    have = data.draw(st.sets(st.integers(0, g.num_pieces - 1), max_size=64))
    if data.draw(st.booleans()):  # or most of the torrent: a nearly complete download
        have = set(range(g.num_pieces)) - have
    missing = set(range(g.num_pieces)) - have
    assert g.bytes_left(have) == sum(_data_in_piece(info, p) for p in missing)
    assert g.bytes_left(list(have) * 2) == g.bytes_left(have)  # a piece counts once


def _create(
    root: pathlib.Path,
    sizes: list[int],
    version: Literal["v1", "v2", "hybrid"],
    piece_length: int,
) -> Info:
    share = root / "share"
    share.mkdir()
    for i, size in enumerate(sizes):
        (share / f"f{i:02}.bin").write_bytes(bytes([i + 1]) * size)
    return create_torrent(
        share, version=version, piece_length=piece_length, creation_date=None, threads=1
    ).info


def test_created_hybrid_with_odd_files(tmp_path: pathlib.Path) -> None:
    sizes = [1, 40001, 16383, 0, 16385, 77777]
    info = _create(tmp_path, sizes, "hybrid", 16384)
    assert any(f.is_pad for f in info.files)
    g = TorrentGeometry.from_info(info)
    assert g.bytes_left(()) == g.data_length == sum(sizes)
    assert g.bytes_left(range(g.num_pieces)) == 0
    assert g.total_length == g.num_pieces * 16384  # every file's last piece is padded
    # f00.bin is one byte in a piece of 16383 pad bytes.
    assert g.piece_size(0) == 16384
    assert g.piece_data_size(0) == 1
    assert g.bytes_left({0}) == sum(sizes) - 1
    assert repr(g).startswith(f"TorrentGeometry({g.num_pieces}, 16384, {g.total_length}")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(0, 70000), min_size=1, max_size=5).filter(any),
    version=st.sampled_from(["v1", "v2", "hybrid"]),
    piece_length=st.sampled_from([16384, 32768]),
    data=st.data(),
)
def test_created_left_of_any_subset(
    sizes: list[int],
    version: Literal["v1", "v2", "hybrid"],
    piece_length: int,
    data: st.DataObject,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        info = _create(pathlib.Path(tmp), sizes, version, piece_length)
    g = TorrentGeometry.from_info(info)
    assert g.data_length == sum(sizes)
    if version == "v1":  # no pad files: the two views agree
        assert g.data_length == g.total_length
    have = data.draw(st.sets(st.integers(0, g.num_pieces - 1)))
    missing = set(range(g.num_pieces)) - have
    assert g.bytes_left(have) == sum(_data_in_piece(info, p) for p in missing)
    assert g.bytes_left(()) == sum(sizes)
    assert g.bytes_left(range(g.num_pieces)) == 0


def test_without_pads_nothing_changes() -> None:
    g = TorrentGeometry(3, 32768, 70000)
    assert g.data_length == g.total_length == 70000
    assert [g.piece_data_size(p) for p in range(3)] == [g.piece_size(p) for p in range(3)]
    assert g.bytes_left({0, 2}) == 32768
    v2 = TorrentGeometry(3, 32768, piece_sizes={1: 100, 2: 5})
    assert v2.data_length == v2.total_length == 32768 + 105
    assert v2.bytes_left({1}) == 32768 + 5


def test_pad_bytes_keyword() -> None:
    g = TorrentGeometry(4, 32768, piece_sizes={3: 1000}, pad_bytes={0: 0, 1: 32768, 2: 1, 3: 999})
    assert g.total_length == 3 * 32768 + 1000
    assert g.data_length == 32768 + 32767 + 1
    # A piece all of pad (a pad file that spans pieces, as libtorrent allows) holds no data.
    assert g.piece_data_size(1) == 0
    assert g.bytes_left({1}) == g.bytes_left(()) == g.data_length
    assert g.bytes_left({0, 2, 3}) == 0
    assert [len(g.blocks(p)) for p in range(4)] == [2, 2, 2, 1]  # blocks keep the pads
    with pytest.raises(LocalProtocolError):
        g.piece_data_size(4)
    with pytest.raises(LocalProtocolError):
        g.bytes_left({4})


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((2, 16384), {"pad_bytes": {2: 1}}),  # no such piece
        ((2, 16384), {"pad_bytes": {-1: 1}}),
        ((2, 16384), {"pad_bytes": {"0": 1}}),
        ((2, 16384), {"pad_bytes": {True: 1}}),
        ((2, 16384), {"pad_bytes": {0: -1}}),
        ((2, 16384), {"pad_bytes": {0: 16385}}),  # more than the piece
        ((2, 16384), {"pad_bytes": {0: 1.0}}),
        ((2, 16384, 16385), {"pad_bytes": {1: 2}}),  # the short last piece has one byte
        ((2, 16384), {"piece_sizes": {1: 10}, "pad_bytes": {1: 11}}),
        ((2, 16384), {"pad_bytes": {0: 16384, 1: 16384}}),  # pads only: no data at all
        ((1, 16384, 100), {"pad_bytes": {0: 100}}),
    ],
)
def test_invalid_pad_bytes(args: tuple[int, ...], kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        TorrentGeometry(*args, **kwargs)  # type: ignore[arg-type]
