"""An empty or unusable ``name``: refused for a single file, replaced for a directory.

libtorrent 2.1 (torrent_info.cpp) sanitises the name into ``_`` when it is empty and
into nothing when it is ``..`` or ``/`` (then the hex info-hash names the torrent's
directory), but ``extract_single_file``, which reads a single-file torrent's (and a
hybrid single-file torrent's v1 part's) only file from ``name``, refuses both with
``torrent_missing_name``. A v2 file tree names its files by its own keys.
"""

from __future__ import annotations

from typing import Any

import pytest

from bip_bencode import encode
from bip_metainfo import Info, MetainfoError, MetainfoErrorKind

K = MetainfoErrorKind
ROOT = bytes(range(1, 33))
LEAF: dict[str, Any] = {"": {"length": 5, "pieces root": ROOT}}


def _v1_single(**changes: Any) -> bytes:
    info: dict[str, Any] = {"name": "x", "piece length": 16384, "length": 5, "pieces": bytes(20)}
    info.update(changes)
    return encode({key: value for key, value in info.items() if value is not None})


def _v1_multi(name: bytes) -> bytes:
    files: list[Any] = [{"length": 5, "path": ["a"]}, {"length": 5, "path": ["d", "b"]}]
    return encode({"name": name, "piece length": 16384, "files": files, "pieces": bytes(20)})


def _v2(name: bytes, tree: dict[str, Any]) -> bytes:
    return encode({"name": name, "piece length": 16384, "meta version": 2, "file tree": tree})


def _hybrid_single(name: bytes) -> bytes:
    return encode(
        {
            "name": name,
            "piece length": 16384,
            "meta version": 2,
            "file tree": {"x": LEAF},
            "length": 5,
            "pieces": bytes(20),
        }
    )


@pytest.mark.parametrize(
    "data",
    [
        _v1_single(name=b""),
        _v1_single(**{"name.utf-8": b"", "name": b"x"}),  # the UTF-8 name wins, as it does
        _v1_single(name=b"", attr=b"x"),
        _v1_single(name=b".."),
        _hybrid_single(b""),
        _hybrid_single(b"/"),
    ],
    ids=["v1", "v1-name.utf-8", "v1-executable", "v1-dotdot", "hybrid", "hybrid-slash"],
)
def test_a_single_file_needs_a_usable_name(data: bytes) -> None:
    with pytest.raises(MetainfoError) as error:
        Info.from_bytes(data)
    assert error.value.kind is K.MISSING_NAME
    assert "not usable as a file name" in str(error.value)


def test_a_bad_length_is_reported_before_the_name() -> None:
    # libtorrent's extract_single_file checks the length first.
    with pytest.raises(MetainfoError) as error:
        Info.from_bytes(_v1_single(name=b"", length=-1))
    assert error.value.kind is K.INVALID_LENGTH


def test_a_multi_file_torrent_with_an_empty_name_is_in_directory_underscore() -> None:
    info = Info.from_bytes(_v1_multi(b""))
    assert info.name == "_"
    assert [entry.path for entry in info.files] == [("_", "a"), ("_", "d", "b")]


def test_a_multi_file_torrent_named_dotdot_is_in_its_info_hash_directory() -> None:
    info = Info.from_bytes(_v1_multi(b".."))
    assert info.name == info.info_hash.hex()
    assert info.files[0].path == (info.name, "a")


def test_a_v2_torrent_with_an_empty_name_is_in_directory_underscore() -> None:
    info = Info.from_bytes(_v2(b"", {"a": LEAF, "d": {"b": LEAF}}))
    assert info.name == "_"
    assert [entry.path for entry in info.files if not entry.is_pad] == [
        ("_", "a"),
        ("_", "d", "b"),
    ]


def test_a_v2_single_file_is_named_by_its_tree_key() -> None:
    info = Info.from_bytes(_v2(b"", {"only": LEAF}))
    assert info.name == "_"
    assert info.files[0].path == ("only",)


def test_a_v1_tree_with_an_unusable_name_is_refused_for_its_tree_first() -> None:
    # libtorrent checks the file tree against the meta version before any single file.
    with pytest.raises(MetainfoError) as error:
        Info.from_bytes(_v1_single(name=b"", **{"file tree": {"x": LEAF}}))
    assert error.value.kind is K.INVALID_META_VERSION
