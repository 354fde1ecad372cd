"""bip_metainfo parser hunt mends.

- A hybrid torrent's v1 file list must lay its files out as its v2 tree does, entry by
  entry (libtorrent's ``files_compatible``): an oversized pad file or a whole pad piece
  before the first file made this module's piece numbering (from the v1 list) differ from
  v2 peers'.
- A v1 ``path`` or a ``symlink path`` has at most 100 components, as libtorrent 2.1.1
  takes (two million took seconds and 83 MB).
- A file whose ``attr`` makes it both a pad file and a symlink is refused (libtorrent's
  ``torrent_invalid_pad_file``).
- A bare info dictionary (BEP 9 metadata) may nest as deeply as it may in a .torrent file.
- A bad piece layer of files sharing a root is reported for the first of them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bip_bencode import encode
from bip_metainfo import (
    CreateError,
    Info,
    Metainfo,
    MetainfoError,
    MetainfoErrorKind,
    block_hashes,
    create_torrent,
    piece_layer,
    pieces_root,
)
from bip_metainfo._info import MAX_FILE_TREE_DEPTH

K = MetainfoErrorKind
PIECE = 16384
ROOT_A = bytes(range(1, 33))
ROOT_B = bytes(range(2, 34))


def _pad(length: int) -> dict[bytes, Any]:
    return {b"attr": b"p", b"length": length, b"path": [b".pad", str(length).encode()]}


def _file(name: bytes, length: int) -> dict[bytes, Any]:
    return {b"length": length, b"path": [name]}


def _hybrid(files: list[dict[bytes, Any]], tree: dict[bytes, Any] | None = None) -> bytes:
    """A hybrid torrent of a (10 bytes) and b (20,000), its v1 list ``files``."""
    if tree is None:
        tree = {
            b"a": {b"": {b"length": 10, b"pieces root": ROOT_A}},
            b"b": {b"": {b"length": 20000, b"pieces root": ROOT_B}},
        }
    total = sum(entry[b"length"] for entry in files)
    info: dict[bytes, Any] = {
        b"name": b"t",
        b"piece length": PIECE,
        b"meta version": 2,
        b"file tree": tree,
        b"files": files,
        b"pieces": bytes(20 * -(-total // PIECE)),
    }
    return encode({b"info": info})


# v2 lays out a, a pad to the piece boundary, b, and a pad to the end of its piece.
CANONICAL = [_file(b"a", 10), _pad(16374), _file(b"b", 20000), _pad(12768)]


def _refused(data: bytes, kind: MetainfoErrorKind) -> str:
    with pytest.raises(MetainfoError) as caught:
        Metainfo.from_bytes(data)
    assert caught.value.kind is kind
    return caught.value.reason


def test_a_hybrid_laid_out_as_its_v2_tree_loads() -> None:
    torrent = Metainfo.from_bytes(_hybrid(CANONICAL))
    assert [(entry.offset, entry.length) for entry in torrent.files] == [
        (0, 10),
        (10, 16374),
        (16384, 20000),
        (36384, 12768),
    ]
    assert [entry.pieces_root for entry in torrent.files] == [ROOT_A, None, ROOT_B, None]
    assert torrent.info.num_pieces == 3


def test_a_pad_file_longer_than_its_gap_is_refused() -> None:
    # b started at piece 2 by the v1 list, at piece 1 for v2 peers.
    files = [_file(b"a", 10), _pad(16374 + PIECE), _file(b"b", 20000), _pad(12768)]
    reason = _refused(_hybrid(files), K.INCONSISTENT_FILES)
    assert "65536 bytes" in reason
    assert "49152" in reason


def test_a_pad_piece_before_the_first_file_is_refused() -> None:
    reason = _refused(_hybrid([_pad(PIECE), *CANONICAL]), K.INCONSISTENT_FILES)
    assert "5 entries" in reason


def test_a_file_at_another_offset_is_refused_when_counts_and_sizes_add_up() -> None:
    # v2: a, pad, b at 16384, pad, c at 49152, pad: 6 entries, 65536 bytes. This v1 list
    # has as many of both, but b a piece on and c at no piece boundary.
    tree = {
        b"a": {b"": {b"length": 10, b"pieces root": ROOT_A}},
        b"b": {b"": {b"length": 20000, b"pieces root": ROOT_B}},
        b"c": {b"": {b"length": 5, b"pieces root": bytes(range(3, 35))}},
    }
    files = [_file(b"a", 10), _pad(32758), _file(b"b", 20000), _pad(3), _file(b"c", 5)]
    files.append(_pad(12760))
    reason = _refused(_hybrid(files, tree), K.INCONSISTENT_FILES)
    assert "(files[2], 20000 bytes at byte 32768)" in reason
    assert "(20000 bytes at byte 16384)" in reason


def test_an_index_shifted_by_an_empty_file_is_refused() -> None:
    # v2: a, pad, b, pad, z; this v1 list: z, a, pad, b, pad. Same sizes and offsets.
    tree = {
        b"a": {b"": {b"length": 10, b"pieces root": ROOT_A}},
        b"b": {b"": {b"length": 20000, b"pieces root": ROOT_B}},
        b"z": {b"": {b"length": 0}},
    }
    reason = _refused(_hybrid([_file(b"z", 0), *CANONICAL], tree), K.INCONSISTENT_FILES)
    assert "files[0] is a pad file, an empty file or a symlink where" in reason


def test_a_missing_tail_pad_is_accepted_as_libtorrent_accepts_it() -> None:
    # libtorrent 2.0.0 to 2.0.7 made hybrids without it, each pad before the file it aligns.
    tree = {
        b"a": {b"": {b"length": 10, b"pieces root": ROOT_A}},
        b"b": {b"": {b"length": 0}},
        b"c": {b"": {b"length": 20000, b"pieces root": ROOT_B}},
        b"d": {b"": {b"length": 0}},
    }
    files = [_file(b"a", 10), _file(b"b", 0), _pad(16374), _file(b"c", 20000), _file(b"d", 0)]
    torrent = Metainfo.from_bytes(_hybrid(files, tree))
    # Listed as the v2 tree lays them out, as libtorrent 2.1.1 lists them.
    assert [entry.path[-1] for entry in torrent.files] == ["a", "16374", "b", "c", "d"]
    assert [entry.offset for entry in torrent.files] == [0, 10, PIECE, PIECE, PIECE + 20000]
    assert torrent.files[3].pieces_root == ROOT_B
    assert torrent.info.num_pieces == 3
    assert torrent.info.piece_size(2) == 20000 - PIECE


def test_a_tail_pad_of_another_size_is_refused() -> None:
    files = [*CANONICAL[:3], _pad(12768 + PIECE)]
    _refused(_hybrid(files), K.INCONSISTENT_FILES)


def test_empty_files_may_trade_places_with_each_other_as_in_libtorrent() -> None:
    tree = {
        b"a": {b"": {b"length": 10, b"pieces root": ROOT_A}},
        b"b": {b"": {b"length": 20000, b"pieces root": ROOT_B}},
        b"e": {b"": {b"length": 0}},
        b"f": {b"": {b"length": 0}},
    }
    files = [*CANONICAL, _file(b"f", 0), _file(b"e", 0)]  # v2's order: e, f
    torrent = Metainfo.from_bytes(_hybrid(files, tree))
    # The v2 tree's names, as libtorrent 2.1.1 lists them.
    assert [entry.path[-1] for entry in torrent.files][-2:] == ["e", "f"]


def test_hybrids_made_here_load(tmp_path: Path) -> None:
    root = tmp_path / "t"
    (root / "d").mkdir(parents=True)
    for name, size in (("a", 10), ("d/e", 0), ("d/f", 40000), ("g", PIECE)):
        (root / name).write_bytes(b"x" * size)
    for pieces in (PIECE, 4 * PIECE):
        made = create_torrent(root, version="hybrid", piece_length=pieces, creation_date=None)
        again = Metainfo.from_bytes(made.to_bytes())
        assert again.files == made.files
        assert all(entry.offset % pieces == 0 for entry in again.files if entry.pieces_root)


@pytest.mark.parametrize("key", [b"path", b"symlink path"])
def test_a_path_deeper_than_a_tree_may_nest_is_refused(key: bytes) -> None:
    def torrent(components: int) -> bytes:
        link: dict[bytes, Any] = {b"length": 0, b"attr": b"l", b"path": [b"l"]}
        files = [_file(b"a", 5), link]
        files[0 if key == b"path" else 1][key] = [b"d"] * components
        return encode(
            {b"name": b"t", b"piece length": PIECE, b"pieces": bytes(20), b"files": files}
        )

    deepest = 100  # libtorrent 2.1.1 takes 100 components and refuses 101
    info = Info.from_bytes(torrent(deepest))
    if key == b"path":
        assert len(info.files[0].path) == 1 + deepest  # under the torrent's name
    for components in (deepest + 1, 100_000):
        with pytest.raises(MetainfoError) as caught:
            Info.from_bytes(torrent(components))
        assert caught.value.kind is K.FILE_TREE_TOO_DEEP
        assert f"{components} components" in caught.value.reason


def test_a_v2_symlink_target_is_bounded_as_well() -> None:
    link = {b"attr": b"l", b"symlink path": [b"d"] * (MAX_FILE_TREE_DEPTH + 2)}
    tree = {b"a": {b"": {b"length": 5, b"pieces root": ROOT_A}}, b"l": {b"": link}}
    info: dict[bytes, Any] = {
        b"name": b"t",
        b"piece length": PIECE,
        b"meta version": 2,
        b"file tree": tree,
    }
    with pytest.raises(MetainfoError) as caught:
        Info.from_bytes(encode(info))
    assert caught.value.kind is K.FILE_TREE_TOO_DEEP


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_create_torrent_refuses_a_link_readers_would_refuse(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "a").write_bytes(b"x")
    (root / "l").symlink_to("/".join(["d"] * (MAX_FILE_TREE_DEPTH + 1) + ["x"]))  # dangling
    with pytest.raises(CreateError, match="102 components deep"):
        create_torrent(root, version="v1")


@pytest.mark.parametrize("attr", [b"pl", b"lp", b"xlhp"])
def test_a_pad_file_that_is_a_symlink_is_refused(attr: bytes) -> None:
    link = {b"length": 0, b"attr": attr, b"path": [b"x"], b"symlink path": [b"a"]}
    multi = {b"files": [_file(b"a", 5), link]}
    single = {b"length": 5, b"attr": attr}
    for files in (multi, single):
        info: dict[bytes, Any] = {b"name": b"t", b"piece length": PIECE, b"pieces": bytes(20)}
        info.update(files)
        with pytest.raises(MetainfoError) as caught:
            Info.from_bytes(encode(info))
        assert caught.value.kind is K.INVALID_PAD_FILE
        assert "both a pad file and a symlink" in caught.value.reason


def test_a_symlink_named_like_a_bitcomet_pad_file_stays_a_symlink() -> None:
    name = b"_____padding_file_0_"
    link = {b"length": 0, b"attr": b"l", b"path": [name], b"symlink path": [b"a"]}
    files = [_file(b"a", 5), link]
    info = Info.from_bytes(
        encode({b"name": b"t", b"piece length": PIECE, b"pieces": bytes(20), b"files": files})
    )
    assert info.files[1].is_symlink
    assert not info.files[1].is_pad


@pytest.mark.parametrize(("depth", "loads"), [(126, True), (127, False)])
def test_an_info_dict_nests_as_deeply_alone_as_in_a_torrent(depth: int, loads: bool) -> None:
    base = encode({b"name": b"x", b"piece length": PIECE, b"length": 5, b"pieces": bytes(20)})
    info = base[:-1] + b"1:z" + b"l" * depth + b"e" * depth + b"e"  # lists in an unknown key
    for parse in (Info.from_bytes, lambda data: Metainfo.from_bytes(b"d4:info" + data + b"e")):
        if loads:
            parse(info)
        else:
            with pytest.raises(MetainfoError) as caught:
                parse(info)
            assert caught.value.kind is K.INVALID_BENCODING


def test_a_bad_layer_of_files_sharing_a_root_names_the_first() -> None:
    data = bytes(range(256)) * (2 * PIECE // 256)  # two pieces
    root = pieces_root(data)
    assert root is not None
    layer = piece_layer(block_hashes(data), PIECE)
    leaf = {b"": {b"length": len(data), b"pieces root": root}}
    tree = {b"a": leaf, b"b": {b"c": leaf}, b"d": leaf}
    info: dict[bytes, Any] = {
        b"name": b"t",
        b"piece length": PIECE,
        b"meta version": 2,
        b"file tree": tree,
    }
    good = Metainfo.from_bytes(encode({b"info": info, b"piece layers": {root: layer}}))
    assert [good.piece_layer(index) for index in range(3)] == [layer] * 3
    bad = encode({b"info": info, b"piece layers": {root: layer[::-1]}})
    reason = _refused(bad, K.INVALID_PIECE_LAYER)
    assert "'t/a'" in reason
