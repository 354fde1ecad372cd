"""Info and Metainfo on generated torrents: round trips, geometry, and each defect."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_bencode import decode, encode
from bip_metainfo import Info, Metainfo, MetainfoError, MetainfoErrorKind

K = MetainfoErrorKind
ROOT = bytes(range(1, 33))  # any non-zero 32 bytes serve as a pieces root here


def _root(length: int) -> bytes:
    """A pieces root for files of ``length`` bytes: a root names files of one length only."""
    return hashlib.sha256(b"%d" % length).digest()


names = st.text(alphabet="abcdefghij", min_size=1, max_size=6)
paths = st.lists(names, min_size=1, max_size=3).map(tuple)
files = st.lists(
    st.tuples(paths, st.integers(min_value=0, max_value=200_000)),
    min_size=1,
    max_size=6,
    unique_by=lambda f: f[0],
).filter(lambda fs: sum(length for _, length in fs) > 0)
piece_lengths = st.sampled_from([16384, 32768, 65536])


def _without_prefix_clashes(entries: list[tuple[tuple[str, ...], int]]) -> bool:
    # A file may not also be a directory of another file.
    all_paths = {p for p, _ in entries}
    return not any(p[:i] in all_paths for p in all_paths for i in range(1, len(p)))


def _v1_info(entries: list[tuple[tuple[str, ...], int]], piece_length: int) -> dict[str, Any]:
    total = sum(length for _, length in entries)
    pieces = -(-total // piece_length)
    return {
        "name": "top",
        "piece length": piece_length,
        "files": [{"length": length, "path": list(path)} for path, length in entries],
        "pieces": bytes(range(20)) * pieces,
    }


def _tree(entries: list[tuple[tuple[str, ...], int]]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, length in entries:
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        leaf: dict[str, Any] = {"length": length}
        if length:
            leaf["pieces root"] = _root(length)
        node[path[-1]] = {"": leaf}
    return tree


def _tree_order(entries: list[tuple[tuple[str, ...], int]]) -> list[tuple[tuple[str, ...], int]]:
    """The order a (sorted) file tree lists files in: depth first by sorted key."""
    return sorted(entries, key=lambda e: [part.encode() for part in e[0]])


@settings(max_examples=60, deadline=None)
@given(files.filter(_without_prefix_clashes), piece_lengths)
def test_v1_round_trip_and_geometry(entries: list[Any], piece_length: int) -> None:
    data = encode({"announce": "udp://127.0.0.1:1/a", "info": _v1_info(entries, piece_length)})
    torrent = Metainfo.from_bytes(data)
    info = torrent.info
    assert [f.path for f in info.files] == [("top", *p) for p, _ in entries]
    assert [f.length for f in info.files] == [length for _, length in entries]
    assert info.info_hash.v1 == hashlib.sha1(info.raw).digest()
    assert info.info_hash.v2 is None
    document = decode(data)
    assert isinstance(document, dict)
    assert decode(info.raw) == document[b"info"]
    assert Metainfo.from_bytes(torrent.to_bytes()).info.info_hash == info.info_hash
    _check_geometry(info, include_pad=True)


@settings(max_examples=60, deadline=None)
@given(files.filter(_without_prefix_clashes), piece_lengths)
def test_v2_layout_aligns_files_and_pads_the_gaps(entries: list[Any], piece_length: int) -> None:
    info_dict: dict[str, Any] = {"name": "top", "piece length": piece_length, "meta version": 2}
    info_dict["file tree"] = {"top": _tree(entries)} if len(entries) == 1 else _tree(entries)
    info = Info.from_bytes(encode(info_dict))
    assert info.is_v2
    assert not info.is_v1
    real = [f for f in info.files if not f.is_pad]
    expected = _tree_order(entries)
    assert [f.length for f in real] == [length for _, length in expected]
    for entry in real:
        if entry.length:
            assert entry.offset % piece_length == 0
            assert entry.pieces_root == _root(entry.length)
    _check_geometry(info, include_pad=True)
    # Without pads, each file's last piece is short: the piece sizes add up to the data.
    total = sum(info.piece_size(i, include_pad=False) for i in range(info.num_pieces))
    assert total == info.total_size


@settings(max_examples=40, deadline=None)
@given(files.filter(_without_prefix_clashes), piece_lengths)
def test_hybrid_agrees_with_its_v2_tree(entries: list[Any], piece_length: int) -> None:
    ordered = _tree_order(entries)
    v1_files: list[dict[str, Any]] = []
    offset = 0
    for path, length in ordered:
        v1_files.append({"length": length, "path": list(path)})
        offset += length
        gap = -offset % piece_length
        if length and gap:
            v1_files.append({"attr": "p", "length": gap, "path": [".pad", str(gap)]})
            offset += gap
    info_dict: dict[str, Any] = {
        "name": "top",
        "piece length": piece_length,
        "meta version": 2,
        "file tree": _tree(ordered),
        "files": v1_files,
        "pieces": bytes(20) * (offset // piece_length),
    }
    info = Info.from_bytes(encode(info_dict))
    assert info.is_hybrid
    assert [f.pieces_root for f in info.files if f.length and not f.is_pad] == [
        _root(length) for _, length in ordered if length
    ]
    _check_geometry(info, include_pad=True)


def _check_geometry(info: Info, *, include_pad: bool) -> None:
    """Pieces tile the piece space: slices are contiguous and add up to the piece size."""
    covered = 0
    for index in range(info.num_pieces):
        parts = info.piece_slices(index)
        for part in parts:
            entry = info.files[part.file_index]
            assert entry.offset + part.offset == covered
            assert 0 < part.length <= entry.length
            covered += part.length
        assert sum(p.length for p in parts) == info.piece_size(index, include_pad=include_pad)
    assert covered == info.geometry.total_size
    for index, entry in enumerate(info.files):
        pieces = info.geometry.file_pieces(index)
        assert len(pieces) == (
            -(-entry.end // info.piece_length) - entry.offset // info.piece_length
            if entry.length
            else 0
        )


def test_geometry_refuses_a_piece_that_does_not_exist() -> None:
    info = Info.from_bytes(encode(_v1_info([(("a",), 5)], 16384)))
    with pytest.raises(IndexError):
        info.piece_slices(1)
    with pytest.raises(IndexError):
        info.piece_hash(-1)


def _info(**changes: Any) -> bytes:
    base: dict[str, Any] = {"name": "x", "piece length": 16384, "length": 5, "pieces": bytes(20)}
    base.update(changes)
    return encode({key: value for key, value in base.items() if value is not None})


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (_info(**{"piece length": None}), K.MISSING_PIECE_LENGTH),
        (_info(**{"piece length": b"16384"}), K.MISSING_PIECE_LENGTH),
        (_info(**{"piece length": 0}), K.INVALID_PIECE_LENGTH),
        (_info(**{"piece length": 2**30}), K.INVALID_PIECE_LENGTH),
        (_info(name=None), K.MISSING_NAME),
        (_info(length=-1), K.INVALID_LENGTH),
        (_info(length=None), K.INVALID_LENGTH),
        (_info(length=0, pieces=b""), K.INVALID_LENGTH),
        (_info(pieces=None), K.MISSING_PIECES),
        (_info(pieces=bytes(21)), K.INVALID_PIECES),
        (_info(pieces=bytes(40)), K.INVALID_PIECES),
        (_info(length=None, files=[]), K.NO_FILES),
        (_info(length=None, files=[{"length": 5}]), K.MISSING_NAME),
        (_info(length=None, files=[{"length": 5, "path": [1]}]), K.INVALID_PATH),
        (_info(length=None, files=[b"x"]), K.INVALID_FIELD),
        (_info(**{"meta version": 3}), K.INVALID_META_VERSION),
        (_info(**{"file tree": {}}), K.INVALID_META_VERSION),
        (_info(**{"meta version": 2}), K.INVALID_FILE_TREE),
        (_info(**{"meta version": 2, "piece length": 16385}), K.INVALID_PIECE_LENGTH),
        (_info(length=2**40, **{"piece length": 16384}), K.TOO_MANY_PIECES),
        (b"d4:name1:x12:piece lengthi16384e1:ai1e6:lengthi5e6:pieces20:" + bytes(20) + b"e", None),
        (b"i5e", K.MISSING_INFO),
        (b"d4:name", K.INVALID_BENCODING),
    ],
)
def test_each_defect_has_its_kind(data: bytes, kind: MetainfoErrorKind | None) -> None:
    if kind is None:  # unsorted keys in a v1 info dict are accepted, as libtorrent does
        assert Info.from_bytes(data).name == "x"
        return
    with pytest.raises(MetainfoError) as info:
        Info.from_bytes(data)
    assert info.value.kind is kind


def _v2(tree: Any, **changes: Any) -> bytes:
    info: dict[str, Any] = {
        "name": "x",
        "piece length": 16384,
        "meta version": 2,
        "file tree": tree,
    }
    info.update(changes)
    return encode(info)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (_v2({"a": {"": {"length": 5}}}), K.MISSING_PIECES_ROOT),
        (_v2({"a": {"": {"length": 5, "pieces root": bytes(32)}}}), K.MISSING_PIECES_ROOT),
        (_v2({"a": {"": {"length": 5, "pieces root": bytes(31)}}}), K.MISSING_PIECES_ROOT),
        (_v2({"a": {"": {"length": 5, "pieces root": ROOT, "attr": "p"}}}), K.INVALID_PAD_FILE),
        (_v2({"a": {"length": 5}}), K.INVALID_FILE_TREE),
        (_v2({"": {"": {"length": 5, "pieces root": ROOT}}}), K.INVALID_FILE_TREE),
        (_v2({"a": {"": b"x"}}), K.INVALID_FILE_TREE),
        (_v2({"a": {}}), K.NO_FILES),
        (_v2({"a": {"": {"length": 0}}}), K.INVALID_LENGTH),
    ],
)
def test_each_v2_defect_has_its_kind(data: bytes, kind: MetainfoErrorKind) -> None:
    with pytest.raises(MetainfoError) as info:
        Info.from_bytes(data)
    assert info.value.kind is kind


def test_a_file_tree_may_nest_only_so_deep() -> None:
    def tree(depth: int) -> dict[str, Any]:
        node: dict[str, Any] = {"f": {"": {"length": 5, "pieces root": ROOT}}}
        for _ in range(depth):
            node = {"d": node}
        return node

    assert Info.from_bytes(_v2(tree(99))).files[0].length == 5
    with pytest.raises(MetainfoError) as info:
        Info.from_bytes(_v2(tree(101)))
    assert info.value.kind in (K.FILE_TREE_TOO_DEEP, K.INVALID_BENCODING)


def test_v2_info_must_be_canonical_bencoding() -> None:
    unsorted = (
        _v2({"a": {"": {"length": 5, "pieces root": ROOT}}})
        .replace(b"4:name1:x", b"")
        .replace(b"d9:file tree", b"d4:name1:x9:file tree")
    )
    with pytest.raises(MetainfoError) as info:
        Info.from_bytes(unsorted)
    assert info.value.kind is K.INVALID_BENCODING


def test_metainfo_fields() -> None:
    torrent = Metainfo.from_bytes(
        encode(
            {
                "announce": " udp://a:1/x",
                "announce-list": [["udp://a:1/x", "udp://b:2/y"], [], ["udp://a:1/x", ""]],
                "url-list": "http://seed/a file",
                "httpseeds": ["http://h/1", "http://h/1"],
                "nodes": [["127.0.0.1", 6881], ["bad"], ["h", 70000]],
                "comment": "hi",
                "created by": "me",
                "creation date": 1234,
                "encoding": "UTF-8",
                "info": {"name": "x", "piece length": 16384, "length": 5, "pieces": bytes(20)},
                "x-unknown": [1, 2],
            }
        )
    )
    assert torrent.announce == "udp://a:1/x"
    assert torrent.trackers == (("udp://a:1/x", "udp://b:2/y"),)
    assert torrent.url_list == ("http://seed/a%20file",)
    assert torrent.httpseeds == ("http://h/1",)
    assert torrent.nodes == (("127.0.0.1", 6881),)
    assert (torrent.comment, torrent.created_by, torrent.creation_date) == ("hi", "me", 1234)
    assert torrent.fields[b"x-unknown"] == [1, 2]
    written = decode(torrent.to_bytes())
    assert isinstance(written, dict)
    assert written[b"x-unknown"] == [1, 2]


def test_reading_a_file_is_bounded(tmp_path: Any) -> None:
    path = tmp_path / "big.torrent"
    path.write_bytes(b"d" + b"0:" * 1000)
    with pytest.raises(MetainfoError) as info:
        Metainfo.from_file(path, max_size=100)
    assert info.value.kind is K.TOO_LARGE


@pytest.mark.parametrize(("value", "private"), [(1, True), (0, False), (b"1", False), (2, True)])
def test_private_is_a_non_zero_integer(value: object, private: bool) -> None:
    assert Info.from_bytes(_info(private=value)).private is private
