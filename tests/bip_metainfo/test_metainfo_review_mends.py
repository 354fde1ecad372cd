"""bip_metainfo mends after review of d3f336d, checked against libtorrent 2.1.1's behaviour.

- A pad file that is also a symlink (v1 ``attr`` ``pl``) and a pad file in a v2 tree are
  refused as ``INVALID_PAD_FILE`` (libtorrent's ``torrent_invalid_pad_file``, the error its
  ``pad_file_symlink.torrent`` and ``v2_invalid_pad_file.torrent`` expect).
- A path component that is not a string maps to ``torrent_invalid_name`` (libtorrent's
  ``invalid_path_list.torrent`` and ``invalid_symlink.torrent``).
- A file of ``INT_MAX / 2`` blocks of 16 KiB or more is ``INVALID_LENGTH``
  (``v2_large_file.torrent``; libtorrent 2.1.1 refuses it in v1 too).
- A v1 ``path`` or a ``symlink path`` has at most 100 components (libtorrent 2.1.1 refuses
  101), and create_torrent makes nothing libtorrent 2.1.1 cannot load: v1 paths of 100
  components, v2 files 94 directories below the top one (symlinks 93), the limit of its
  bencoding depth.
- A hybrid torrent's pad files, empty files and symlinks are the v2 tree's (libtorrent
  takes the tree as authoritative), at the v1 offsets.
- create_torrent refuses a file over ``MAX_FILE_SIZE`` as CreateError before hashing it
  (readers refuse it; it was found only by parsing the result, as MetainfoError).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import pytest

import bip_metainfo._create
import bip_metainfo._create_pipeline
import bip_metainfo._info
from bip_bencode import encode
from bip_metainfo import CreateError, Info, MetainfoError, MetainfoErrorKind, create_torrent

K = MetainfoErrorKind
PIECE = 16384
ROOT = bytes(range(1, 33))


def _v1(files: list[dict[bytes, Any]]) -> bytes:
    return encode({b"name": b"temp", b"piece length": PIECE, b"pieces": bytes(20), b"files": files})


def _v2(tree: dict[bytes, Any], piece_length: int = PIECE) -> bytes:
    info: dict[bytes, Any] = {b"name": b"t", b"piece length": piece_length}
    info.update({b"meta version": 2, b"file tree": tree})
    return encode(info)


def _refusal(data: bytes) -> MetainfoError:
    with pytest.raises(MetainfoError) as caught:
        Info.from_bytes(data)
    return caught.value


def test_a_pad_file_that_is_a_symlink_is_an_invalid_pad_file() -> None:
    # libtorrent's pad_file_symlink.torrent (2.1.1 took it as a symlink; later refused).
    link = {b"attr": b"pl", b"symlink path": [b"somewhere"]}
    error = _refusal(_v1([{b"length": 45, b"path": [b"foo", b"bar.txt"]}, link]))
    assert error.kind is K.INVALID_PAD_FILE
    assert error.kind.libtorrent == "torrent_invalid_pad_file"


def test_a_pad_file_in_a_v2_tree_is_an_invalid_pad_file() -> None:
    # libtorrent's v2_invalid_pad_file.torrent; 2.1.1 refuses it so too (error 218).
    tree = {b"test1MB": {b"": {b"attr": b"p", b"length": 1 << 20, b"pieces root": ROOT}}}
    error = _refusal(_v2(tree, 65536))
    assert error.kind is K.INVALID_PAD_FILE
    assert error.kind.libtorrent == "torrent_invalid_pad_file"


@pytest.mark.parametrize("key", [b"path", b"symlink path"])
def test_a_path_component_that_is_no_string_is_an_invalid_name(key: bytes) -> None:
    link: dict[bytes, Any] = {b"attr": b"l", b"path": [b"l"], b"symlink path": [b"a"]}
    files = [{b"length": 5, b"path": [b"a"]}, link]
    files[0 if key == b"path" else 1][key] = [b"a", 4]
    error = _refusal(_v1(files))
    assert error.kind is K.INVALID_PATH
    assert error.kind.libtorrent == "torrent_invalid_name"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_file_of_int_max_half_blocks_is_an_invalid_length(version: str) -> None:
    piece_length = 1 << 28
    for length, refused in ((16384 * ((2**31 - 1) // 2) - 1, False), (16384 * 1073741823, True)):
        if version == "v1":
            pieces = bytes(20 * -(-length // piece_length))
            data = encode(
                {b"name": b"x", b"piece length": piece_length, b"pieces": pieces, b"length": length}
            )
        else:
            data = _v2({b"x": {b"": {b"length": length, b"pieces root": ROOT}}}, piece_length)
        if refused:
            error = _refusal(data)
            assert error.kind is K.INVALID_LENGTH
            assert error.kind.libtorrent == "torrent_invalid_length"
        else:
            assert Info.from_bytes(data).total_size == length


@pytest.mark.parametrize("key", [b"path", b"symlink path"])
def test_a_v1_path_may_have_100_components_as_in_libtorrent(key: bytes) -> None:
    def torrent(components: int) -> bytes:
        link: dict[bytes, Any] = {b"attr": b"l", b"path": [b"l"], b"symlink path": [b"a"]}
        files = [{b"length": 5, b"path": [b"a"]}, link]
        files[0 if key == b"path" else 1][key] = [b"d"] * components
        return _v1(files)

    Info.from_bytes(torrent(100))
    error = _refusal(torrent(101))
    assert error.kind is K.FILE_TREE_TOO_DEEP
    assert "101 components" in error.reason


def test_a_v2_symlink_target_may_have_100_components() -> None:
    def tree(components: int) -> dict[bytes, Any]:
        link = {b"attr": b"l", b"symlink path": [b"d"] * components}
        return {b"a": {b"": {b"length": 5, b"pieces root": ROOT}}, b"l": {b"": link}}

    Info.from_bytes(_v2(tree(100)))
    assert _refusal(_v2(tree(101))).kind is K.FILE_TREE_TOO_DEEP


def test_create_torrent_makes_no_v1_path_libtorrent_refuses(tmp_path: Path) -> None:
    deep = tmp_path / "t" / Path(*["d"] * 100)
    deep.mkdir(parents=True)
    (deep / "f").write_bytes(b"x")  # a path of 101 components
    with pytest.raises(CreateError, match=r"101 directories deep .* 100 libtorrent loads"):
        create_torrent(tmp_path / "t", version="v1")
    (deep / "f").rename(deep.parent / "f")  # 100 components
    os.rmdir(deep)
    assert len(create_torrent(tmp_path / "t", version="v1").files[0].path) == 101  # and the name


@pytest.mark.parametrize(("dirs", "link"), [(94, False), (93, True)])
def test_create_torrent_makes_no_v2_tree_libtorrent_cannot_decode(
    tmp_path: Path, dirs: int, link: bool
) -> None:
    if link and os.name != "posix":
        pytest.skip("symlinks")
    root = tmp_path / "t"
    deep = root / Path(*["d"] * (dirs + 1))
    deep.mkdir(parents=True)
    (root / "a").write_bytes(b"y")

    def put(directory: Path) -> None:
        if link:
            (directory / "l").symlink_to("../" * (len(directory.relative_to(root).parts)) + "a")
        else:
            (directory / "f").write_bytes(b"x")

    put(deep)  # one directory deeper than libtorrent decodes
    versions: tuple[Literal["v2", "hybrid"], ...] = ("v2", "hybrid")
    for version in versions:
        with pytest.raises(CreateError, match=f"more than the {dirs + 1} libtorrent loads"):
            create_torrent(root, version=version)
    assert create_torrent(root, version="v1").info.is_v1  # v1 paths may go deeper
    for entry in deep.iterdir():
        entry.unlink()
    os.rmdir(deep)
    put(deep.parent)
    for version in versions:
        assert create_torrent(root, version=version).info.is_v2


@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
def test_create_torrent_refuses_a_file_over_max_file_size_before_hashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: Literal["v1", "v2", "hybrid"]
) -> None:
    bound = 2 * PIECE  # stands in for about 16 TiB
    monkeypatch.setattr(bip_metainfo._info, "MAX_FILE_SIZE", bound)
    hashed: list[int] = []
    real = bip_metainfo._create_pipeline._hash_files

    def hash_files(*args: Any, **kwargs: Any) -> Any:
        hashed.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(bip_metainfo._create, "_hash_files", hash_files)
    root = tmp_path / "t"
    root.mkdir()
    (root / "a").write_bytes(b"a" * 10)
    (root / "big").write_bytes(b"x" * (bound + 1))
    with pytest.raises(CreateError, match=f"is {bound + 1} bytes, more than the {bound}"):
        create_torrent(root, piece_length=PIECE, version=version)
    assert not hashed
    with pytest.raises(CreateError, match="more than the"):
        create_torrent(root / "big", piece_length=PIECE, version=version)  # single-file
    assert not hashed
    (root / "big").write_bytes(b"x" * bound)  # at the bound: made, and readers take it
    torrent = create_torrent(root, piece_length=PIECE, version=version, creation_date=None)
    assert max(file.length for file in torrent.files) == bound
    assert hashed


def _hybrid(v1_files: list[dict[bytes, Any]]) -> bytes:
    """A hybrid torrent of a (10 bytes), an empty file e, b (20,000 bytes) and a link l."""
    tree = {
        b"a": {b"": {b"length": 10, b"pieces root": ROOT}},
        b"b": {b"": {b"length": 20000, b"pieces root": bytes(range(2, 34))}},
        b"e": {b"": {b"length": 0, b"attr": b"x"}},
        b"l": {b"": {b"attr": b"l", b"symlink path": [b"a"]}},
    }
    total = sum(entry.get(b"length", 0) for entry in v1_files)
    info: dict[bytes, Any] = {
        b"name": b"t",
        b"piece length": PIECE,
        b"meta version": 2,
        b"file tree": tree,
        b"files": v1_files,
        b"pieces": bytes(20 * -(-total // PIECE)),
    }
    return encode(info)


def test_a_hybrid_takes_pads_empty_files_and_links_from_its_v2_tree() -> None:
    def pad(length: int, name: bytes) -> dict[bytes, Any]:
        return {b"attr": b"p", b"length": length, b"path": [name]}

    files = [
        {b"length": 10, b"path": [b"a"]},
        pad(PIECE - 10, b"_____padding_file_0_"),
        {b"length": 20000, b"path": [b"b"]},
        pad(2 * PIECE - 20000, b"padding"),
        {b"length": 0, b"path": [b"renamed-empty"]},
        {b"attr": b"l", b"path": [b"renamed-link"], b"symlink path": [b"b"]},
    ]
    info = Info.from_bytes(_hybrid(files))
    assert [entry.path_str() for entry in info.files] == [
        "t/a",
        f"t/.pad/{PIECE - 10}",
        "t/b",
        f"t/.pad/{2 * PIECE - 20000}",
        "t/e",
        "t/l",
    ]
    assert [entry.offset for entry in info.files] == [
        0,
        10,
        PIECE,
        PIECE + 20000,
        3 * PIECE,
        3 * PIECE,
    ]
    assert info.files[4].attributes == "x"
    assert info.files[5].symlink_target == ("t", "a")
