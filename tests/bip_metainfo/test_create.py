"""create_torrent: layouts, hashes, options, symlinks, progress, cancellation, memory.

Every torrent made here is checked against an independent computation: the v1
piece hashes are hashlib over the piece space the reader lays out (pad files as
zeros), the v2 roots and piece layers come from the merkle module over each whole
file. The tests marked ``interop`` compare whole .torrent files with libtorrent's.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bip_metainfo
from bip_bencode import decode as _decode
from bip_metainfo import CreateError, Metainfo, _create, _create_pipeline, _create_walk
from bip_metainfo._create import CreateCancelled, auto_piece_length, create_torrent
from bip_metainfo._merkle import block_hashes, piece_layer, pieces_root

KIB = 1024
MIB = 1024 * KIB
VERSIONS = ["v1", "v2", "hybrid"]
POSIX = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and symlinks")


def _payload(size: int, seed: int = 0) -> bytes:
    """Deterministic incompressible bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d:%d" % (seed, counter)).digest()
        counter += 1
    return bytes(out[:size])


def _make_tree(root: Path, files: Mapping[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _check(torrent: Metainfo, base: Path) -> None:
    """The torrent's hashes are those of the files under ``base`` (the root's parent)."""
    info = torrent.info
    length = info.piece_length
    space = bytearray()
    for entry in info.files:
        if entry.is_pad:
            space += bytes(entry.length)
            continue
        if entry.is_symlink:
            assert entry.length == 0
            continue
        data = base.joinpath(*entry.path).read_bytes()
        assert entry.length == len(data), entry
        if info.is_v2 and data:
            assert entry.offset % length == 0, f"{entry.path} is not at a piece boundary"
            assert entry.pieces_root == pieces_root(data)
            index = info.files.index(entry)
            layer = piece_layer(block_hashes(data), length)
            assert (torrent.piece_layer(index) or b"") == layer
        else:
            assert entry.pieces_root is None
        assert entry.offset == len(space)
        space += data
    if info.is_v1:
        assert info.num_pieces == -(-len(space) // length)
        for index in range(info.num_pieces):
            piece = space[index * length : (index + 1) * length]
            assert info.piece_hash(index) == hashlib.sha1(piece).digest(), index
    else:
        assert b"pieces" not in info.fields
    assert info.total_size == sum(e.length for e in info.files if not e.is_pad)


def decode(data: bytes) -> Any:
    """Decoded bencoding, typed loosely for the tests' lookups."""
    return _decode(data)


def _real(torrent: Metainfo) -> list[tuple[str, int]]:
    return [(entry.path_str(), entry.length) for entry in torrent.files if not entry.is_pad]


@pytest.fixture
def album(tmp_path: Path) -> Path:
    """A nested directory: odd names, an empty file, sizes around piece boundaries."""
    return _make_tree(
        tmp_path / "my album",
        {
            "b.txt": _payload(16 * KIB, 1),
            "b/c": _payload(5, 2),
            "sub dir/ü/f 1.bin": _payload(40000, 3),
            "a/x": _payload(70000, 4),
            "a/empty": b"",
            "Ω.dat": _payload(100 * KIB + 1, 5),
        },
    )


# --- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("size", [1, 16 * KIB, 16 * KIB + 1, 100_000, 3 * MIB + 5])
def test_single_file(tmp_path: Path, version: Any, size: int) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(_payload(size))
    torrent = create_torrent(path, version=version, piece_length=32 * KIB, creation_date=None)
    assert torrent.info.name == "file.bin"
    # (The reader lays a v2 torrent out with pad files of its own.)
    assert [(e.path, e.length) for e in torrent.files if not e.is_pad] == [(("file.bin",), size)]
    fields = torrent.info.fields
    assert (b"length" in fields) == (version != "v2")
    assert b"files" not in fields  # a single file never gets a pad file
    if version != "v1":
        assert set(fields[b"file tree"]) == {b"file.bin"}
    _check(torrent, tmp_path)
    assert torrent.info.is_v1 == (version != "v2")
    assert torrent.info.is_v2 == (version != "v1")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("piece_length", [16 * KIB, 32 * KIB, 64 * KIB, 256 * KIB])
def test_directory(album: Path, version: Any, piece_length: int) -> None:
    torrent = create_torrent(album, version=version, piece_length=piece_length, creation_date=None)
    assert torrent.info.name == "my album"
    # File tree order: components compared one by one ("b" before "b.txt").
    assert _real(torrent) == [
        ("my album/a/empty", 0),
        ("my album/a/x", 70000),
        ("my album/b/c", 5),
        ("my album/b.txt", 16 * KIB),
        ("my album/sub dir/ü/f 1.bin", 40000),
        ("my album/Ω.dat", 100 * KIB + 1),
    ]
    _check(torrent, album.parent)
    pads = [e for e in torrent.files if e.is_pad]
    if version == "v1":
        assert not pads
        assert b"piece layers" not in torrent.fields
    else:
        assert b"piece layers" in torrent.fields  # written even when empty


def test_hybrid_pads_every_file_to_a_piece_boundary(album: Path) -> None:
    torrent = create_torrent(album, piece_length=32 * KIB, creation_date=None)
    files = torrent.info.fields[b"files"]
    for before, after in itertools.pairwise(files):
        if before.get(b"attr") != b"p" and before[b"length"] % (32 * KIB):
            assert after[b"attr"] == b"p"
            assert after[b"path"] == [b".pad", str(after[b"length"]).encode()]
            assert (before[b"length"] + after[b"length"]) % (32 * KIB) == 0
    # The last file is padded too (libtorrent does it whenever there are several files).
    assert files[-1][b"attr"] == b"p"
    for entry in torrent.files:
        if not entry.is_pad and entry.length:
            assert entry.offset % (32 * KIB) == 0
    assert torrent.info.geometry.total_size % (32 * KIB) == 0


def test_a_directory_of_one_file_has_no_tail_pad(tmp_path: Path) -> None:
    _make_tree(tmp_path / "one", {"only.bin": _payload(1000)})
    torrent = create_torrent(tmp_path / "one", creation_date=None)
    assert [e.path for e in torrent.files] == [("one", "only.bin")]
    _check(torrent, tmp_path)


def test_empty_files_and_pad_after_last_data_file(tmp_path: Path) -> None:
    _make_tree(tmp_path / "d", {"a": _payload(1000), "z": b""})
    torrent = create_torrent(tmp_path / "d", piece_length=16 * KIB, creation_date=None)
    assert [(e.path_str(), e.length) for e in torrent.files] == [
        ("d/a", 1000),
        ("d/.pad/15384", 15384),
        ("d/z", 0),
    ]
    tree = torrent.info.fields[b"file tree"]
    assert tree[b"z"] == {b"": {b"length": 0}}  # no pieces root for an empty file
    _check(torrent, tmp_path)


@pytest.mark.parametrize("version", VERSIONS)
def test_reproducible(album: Path, version: Any) -> None:
    one = create_torrent(album, version=version, creation_date=None, created_by=None)
    two = create_torrent(album, version=version, creation_date=None, created_by=None)
    assert one.to_bytes() == two.to_bytes()
    assert one.info.info_hash == two.info.info_hash
    assert b"creation date" not in one.fields
    assert b"created by" not in one.fields
    # And the info-hash does not depend on the threads or the memory bound.
    three = create_torrent(
        album,
        version=version,
        creation_date=None,
        created_by=None,
        threads=1,
        max_buffered_bytes=1,
    )
    assert three.to_bytes() == one.to_bytes()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("piece_length", "job", "chunk"),
    [
        (16 * KIB, 64 * KIB, 32 * KIB),  # many pieces per chunk and per job
        (64 * KIB, 64 * KIB, 16 * KIB),  # pieces larger than a chunk
        (32 * KIB, 16 * KIB, 16 * KIB),  # jobs smaller than a piece
    ],
)
def test_job_and_chunk_boundaries(
    tmp_path: Path, version: Any, piece_length: int, job: int, chunk: int
) -> None:
    sizes = [1, 16 * KIB - 1, 16 * KIB, 16 * KIB + 1, 100_000, 200 * KIB, 3, 0, 65 * KIB]
    files = {f"f{i:02d}": _payload(size, i) for i, size in enumerate(sizes)}
    root = _make_tree(tmp_path / "t", files)
    with (
        mock.patch.object(_create_pipeline, "_JOB_BYTES", job),
        mock.patch.object(_create_pipeline, "_CHUNK_BYTES", chunk),
    ):
        torrent = create_torrent(root, version=version, piece_length=piece_length)
    _check(torrent, tmp_path)
    normal = create_torrent(root, version=version, piece_length=piece_length)
    assert torrent.info.info_hash == normal.info.info_hash


def test_name_override(tmp_path: Path, album: Path) -> None:
    torrent = create_torrent(album, name="renamed", creation_date=None)
    assert torrent.info.name == "renamed"
    assert all(e.path[0] == "renamed" for e in torrent.files)
    single = tmp_path / "x.bin"
    single.write_bytes(b"data")
    one = create_torrent(single, name="y.bin")
    assert one.files[0].path == ("y.bin",)
    assert set(one.info.fields[b"file tree"]) == {b"y.bin"}


def test_default_version_is_hybrid_and_name_from_dot(
    album: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(album)
    torrent = create_torrent(".", creation_date=None)
    assert torrent.info.is_hybrid
    assert torrent.info.name == "my album"


# --- options --------------------------------------------------------------------------


def test_optional_fields(album: Path) -> None:
    similar = hashlib.sha1(b"other").digest()
    torrent = create_torrent(
        album,
        trackers=[["udp://a.example:1", "udp://b.example:2"], "http://c.example/announce"],
        web_seeds=["http://ws.example/files"],
        http_seeds=["http://hs.example/seed"],
        nodes=[("router.example", 6881)],
        private=True,
        source="SITE",
        comment="a comment",
        creation_date=1_700_000_000,
        created_by="me 1.0",
        similar=[similar],
        collections=["set one"],
    )
    assert torrent.trackers == (
        ("udp://a.example:1", "udp://b.example:2"),
        ("http://c.example/announce",),
    )
    assert torrent.announce == "udp://a.example:1"
    assert torrent.url_list == ("http://ws.example/files/",)  # a directory: reader adds "/"
    assert torrent.fields[b"url-list"] == b"http://ws.example/files"  # one seed: a string
    assert torrent.httpseeds == ("http://hs.example/seed",)
    assert torrent.nodes == (("router.example", 6881),)
    assert torrent.comment == "a comment"
    assert torrent.created_by == "me 1.0"
    assert torrent.creation_date == 1_700_000_000
    info = torrent.info
    assert info.private
    assert info.source == "SITE"
    assert info.similar == (similar,)
    assert info.collections == ("set one",)


def test_defaults(album: Path) -> None:
    before = int(time.time())
    torrent = create_torrent(album, web_seeds=["http://a/", "http://b/"])
    assert before <= (torrent.creation_date or 0) <= int(time.time())
    assert torrent.created_by == f"bip_metainfo/{bip_metainfo.__version__}"
    assert torrent.fields[b"url-list"] == [b"http://a/", b"http://b/"]
    assert b"announce" not in torrent.fields
    for key in (b"private", b"source", b"similar", b"collections"):
        assert key not in torrent.info.fields


def test_one_tracker_has_no_announce_list(album: Path) -> None:
    torrent = create_torrent(album, trackers=["udp://t.example:1"])
    assert torrent.fields[b"announce"] == b"udp://t.example:1"
    assert b"announce-list" not in torrent.fields


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (1, 16 * KIB),
        (2684355, 16 * KIB),
        (2684356, 32 * KIB),
        (2**30, 512 * KIB),
        (100 * 2**30, 4 * MIB),
        (703687441777, 8 * MIB),
        (703687441778, 16 * MIB),
        (2**60, 16 * MIB),
    ],
)
def test_auto_piece_length(total: int, expected: int) -> None:
    assert auto_piece_length(total) == expected


def test_auto_piece_length_is_used(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(_payload(3 * MIB))
    assert create_torrent(path).info.piece_length == 32 * KIB
    with pytest.raises(ValueError, match="non-negative"):
        auto_piece_length(-1)


# --- hidden files, attributes, symlinks -------------------------------------------------


def test_hidden_files(tmp_path: Path) -> None:
    root = _make_tree(
        tmp_path / "h",
        {"a": b"1", ".hidden": b"2", ".git/config": b"3", "d/.x": b"4", "d/y": b"5"},
    )
    everything = create_torrent(root, version="v1")
    assert [e.path_str() for e in everything.files] == [
        "h/.git/config",
        "h/.hidden",
        "h/a",
        "h/d/.x",
        "h/d/y",
    ]
    visible = create_torrent(root, version="v1", include_hidden=False)
    assert [e.path_str() for e in visible.files] == ["h/a", "h/d/y"]
    _check(visible, tmp_path)
    # The top path itself is used even if its name is hidden.
    dotted = tmp_path / ".dotted"
    dotted.write_bytes(b"x")
    assert create_torrent(dotted, include_hidden=False).info.name == ".dotted"


@POSIX
def test_executable_attribute(tmp_path: Path) -> None:
    root = _make_tree(tmp_path / "e", {"run.sh": b"#!/bin/sh\n", "data": b"d" * 100})
    (root / "run.sh").chmod(0o755)
    torrent = create_torrent(root, piece_length=16 * KIB)
    attrs = {e.path_str(): e.attributes for e in torrent.files if not e.is_pad}
    assert attrs == {"e/data": "", "e/run.sh": "x"}
    assert torrent.info.fields[b"file tree"][b"run.sh"][b""][b"attr"] == b"x"
    single = create_torrent(root / "run.sh", version="v1")
    assert single.info.fields[b"attr"] == b"x"


def test_attribute_letters_are_in_libtorrents_order() -> None:
    entry = _create_walk._Entry(("f",), "f", 0, executable=True, symlink=("g",), hidden=True)
    assert entry.attr == "hxl"
    assert _create_walk._Entry(("f",), "f", 1, executable=False).attr == ""


@pytest.fixture
def linked(tmp_path: Path) -> Path:
    """A tree with links inside, a dangling one and ones leading out of it."""
    if os.name != "posix":
        pytest.skip("symlinks")
    outside = _make_tree(tmp_path / "outside", {"secret": b"s" * 10})
    root = _make_tree(tmp_path / "l", {"a": _payload(1000), "dir/f": _payload(300)})
    (root / "sub").mkdir()
    (root / "sub" / "to_a").symlink_to("../a")
    (root / "sub" / "to_dir").symlink_to("../dir")
    (root / "sub" / "abs").symlink_to(root / "a")
    (root / "sub" / "dots").symlink_to("./../sub/../a")
    (root / "sub" / "dangling").symlink_to("nowhere")
    (root / "sub" / "out").symlink_to(outside / "secret")
    (root / "sub" / "roundabout").symlink_to("../../l/a")  # leaves, then comes back
    (root / "sub" / "up").symlink_to("..")  # the torrent's root itself
    return root


def test_symlinks_stored(linked: Path) -> None:
    torrent = create_torrent(linked, piece_length=16 * KIB, creation_date=None)
    links = {e.path_str(): (e.attributes, e.symlink_target) for e in torrent.files if e.is_symlink}
    assert links == {
        "l/sub/abs": ("xl", ("l", "a")),
        "l/sub/dangling": ("xl", ("l", "sub", "dangling")),  # the reader: points at itself
        "l/sub/dots": ("xl", ("l", "a")),
        "l/sub/to_a": ("xl", ("l", "a")),
        "l/sub/to_dir": ("xl", ("l", "dir")),
    }
    files = {tuple(f[b"path"]): f for f in torrent.info.fields[b"files"]}
    assert files[(b"sub", b"dangling")][b"symlink path"] == [b"sub", b"nowhere"]
    assert files[(b"sub", b"to_a")] == {
        b"attr": b"xl",
        b"length": 0,
        b"path": [b"sub", b"to_a"],
        b"symlink path": [b"a"],
    }
    # In the v2 tree a link has no length, as libtorrent writes it.
    leaf = torrent.info.fields[b"file tree"][b"sub"][b"to_a"][b""]
    assert leaf == {b"attr": b"xl", b"symlink path": [b"a"]}
    _check(torrent, linked.parent)


def test_symlinks_followed(linked: Path) -> None:
    (linked / "sub" / "up").unlink()  # a loop when followed
    (linked / "sub" / "dangling").unlink()
    (linked / "sub" / "to_dir").unlink()  # "dir" twice: refused (test_create_hunt_mends.py)
    (linked / "sub" / "to_out_dir").symlink_to(linked.parent / "outside")
    torrent = create_torrent(linked, symlinks="follow", piece_length=16 * KIB)
    assert not any(e.is_symlink for e in torrent.files)
    assert _real(torrent) == [
        ("l/a", 1000),
        ("l/dir/f", 300),
        ("l/sub/abs", 1000),
        ("l/sub/dots", 1000),
        ("l/sub/out", 10),
        ("l/sub/roundabout", 1000),
        ("l/sub/to_a", 1000),
        ("l/sub/to_out_dir/secret", 10),
    ]
    _check(torrent, linked.parent)


def test_following_a_loop_or_a_dangling_link_fails(linked: Path) -> None:
    (linked / "sub" / "up").unlink()
    with pytest.raises(FileNotFoundError, match="points to nothing"):
        create_torrent(linked, symlinks="follow")
    (linked / "sub" / "dangling").unlink()
    (linked / "sub" / "to_dir").unlink()
    (linked / "sub" / "deeper").mkdir()
    (linked / "sub" / "deeper" / "up").symlink_to("../..")
    with pytest.raises(OSError, match="loop") as info:
        create_torrent(linked, symlinks="follow")
    assert info.value.errno == errno.ELOOP


@POSIX
def test_a_linked_top_path_is_followed(tmp_path: Path, album: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(album)
    torrent = create_torrent(link, creation_date=None)
    assert torrent.info.name == "link"
    _check(torrent, tmp_path)


@POSIX
def test_special_files_are_left_out(tmp_path: Path) -> None:
    root = _make_tree(tmp_path / "s", {"a": b"data"})
    os.mkfifo(root / "fifo")
    assert _real(create_torrent(root)) == [("s/a", 4)]


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system with byte names")
def test_a_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    root = _make_tree(tmp_path / "u", {"a": b"data"})
    with open(os.path.join(os.fsencode(root), b"bad\xff"), "wb") as file:
        file.write(b"x")
    with pytest.raises(CreateError, match="UTF-8"):
        create_torrent(root)


# --- errors ---------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        create_torrent(tmp_path / "nope")


def test_no_files_or_no_data(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CreateError, match="no files"):
        create_torrent(tmp_path / "empty")
    _make_tree(tmp_path / "zeros", {"a": b"", "b/c": b""})
    with pytest.raises(CreateError, match="all empty"):
        create_torrent(tmp_path / "zeros")
    _make_tree(tmp_path / "hidden", {".a": b"x"})
    with pytest.raises(CreateError, match="no files"):
        create_torrent(tmp_path / "hidden", include_hidden=False)


@pytest.mark.parametrize(
    ("version", "piece_length"),
    [
        ("v2", 48 * KIB),
        ("hybrid", 8 * KIB),
        ("hybrid", 0),
        ("v1", 1000),
        ("v1", -16 * KIB),
        ("v2", 2**30),
        ("v1", True),
    ],
)
def test_invalid_piece_length(album: Path, version: Any, piece_length: Any) -> None:
    # A wrong type or sign is the program's mistake (ValueError); a size the version cannot
    # take is the user's choice (CreateError, itself a ValueError).
    with pytest.raises(ValueError, match="piece length") as raised:
        create_torrent(album, version=version, piece_length=piece_length)
    positive_int = type(piece_length) is int and piece_length > 0
    assert isinstance(raised.value, CreateError) == positive_int


def test_v1_accepts_a_multiple_of_16_kib(album: Path) -> None:
    torrent = create_torrent(album, version="v1", piece_length=48 * KIB)
    assert torrent.info.piece_length == 48 * KIB
    _check(torrent, album.parent)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"version": "v3"},
        {"symlinks": "skip"},
        {"threads": 0},
        {"max_buffered_bytes": 0},
        {"trackers": [""]},
        {"web_seeds": [""]},
        {"collections": [""]},
        {"similar": [b"short"]},
        {"nodes": [("host", 0)]},
        {"creation_date": -1},
        {"name": ""},
        {"name": "a/b"},
        {"name": ".."},
    ],
)
def test_invalid_arguments(album: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        create_torrent(album, **kwargs)


@pytest.mark.parametrize("kwargs", [{"trackers": "udp://t:1"}, {"web_seeds": "http://w/"}])
def test_a_string_where_a_list_belongs(album: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="one string"):
        create_torrent(album, **kwargs)


def test_too_many_pieces(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    with open(path, "wb") as file:
        file.truncate(40 * 2**30)  # sparse: nothing is read before the check
    with pytest.raises(CreateError, match="larger piece length"):
        create_torrent(path, piece_length=16 * KIB)


def test_not_a_file_or_directory() -> None:
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null")
    with pytest.raises(CreateError, match="neither"):
        create_torrent("/dev/null")


@pytest.mark.parametrize("change", ["shrink", "grow"])
@pytest.mark.parametrize("version", ["v1", "hybrid"])
def test_a_file_that_changes_while_hashed(tmp_path: Path, change: str, version: Any) -> None:
    root = _make_tree(tmp_path / "c", {"a": _payload(100_000), "b": _payload(10)})
    scan = _create_walk._scan

    def scan_then_change(*args: Any, **kwargs: Any) -> tuple[list[Any], bool]:
        result = scan(*args, **kwargs)
        with open(root / "a", "r+b") as file:
            if change == "shrink":
                file.truncate(50_000)
            else:
                file.seek(0, os.SEEK_END)
                file.write(b"more")
        return result

    with (
        mock.patch.object(_create, "_scan", scan_then_change),
        pytest.raises(OSError, match="changed while it was hashed") as info,
    ):
        create_torrent(root, version=version)
    assert info.value.filename == str(root / "a")


# --- progress, cancellation, memory ---------------------------------------------------


@pytest.fixture(scope="module")
def sparse_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 GiB file that takes no disk space (it reads as zeros)."""
    path = tmp_path_factory.mktemp("sparse") / "big.bin"
    with open(path, "wb") as file:
        file.truncate(2**30)
    return path


@pytest.mark.parametrize("version", VERSIONS)
def test_progress(album: Path, version: Any) -> None:
    calls: list[tuple[int, int, int]] = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total, threading.get_ident()))

    with mock.patch.object(_create_pipeline, "_JOB_BYTES", 16 * KIB):
        torrent = create_torrent(album, version=version, piece_length=16 * KIB, progress=progress)
    total = torrent.info.total_size
    assert calls[0][:2] == (0, total)
    assert calls[-1][:2] == (total, total)
    assert all(call[1] == total for call in calls)
    assert all(call[2] == threading.get_ident() for call in calls)
    done = [call[0] for call in calls]
    assert done == sorted(done)


def test_progress_is_rate_limited(sparse_file: Path) -> None:
    calls: list[float] = []
    start = time.monotonic()
    create_torrent(
        sparse_file,
        version="v1",
        piece_length=MIB,
        progress=lambda done, total: calls.append(time.monotonic()),
    )
    elapsed = time.monotonic() - start
    # The first call, then at most one per 50 ms, then the last one.
    assert 2 <= len(calls) <= elapsed / 0.05 + 3
    gaps = [b - a for a, b in itertools.pairwise(calls[1:-1])]
    assert all(gap >= 0.045 for gap in gaps)


def _hashing_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("bip-hash")]


@pytest.mark.parametrize("version", VERSIONS)
def test_cancel_stops_promptly(sparse_file: Path, version: Any) -> None:
    cancel = threading.Event()
    seen: list[int] = []
    cancelled_at = 0.0

    def progress(done: int, total: int) -> None:
        nonlocal cancelled_at
        seen.append(done)
        if done and not cancel.is_set():
            cancelled_at = time.monotonic()
            cancel.set()

    with pytest.raises(CreateCancelled):
        create_torrent(
            sparse_file, version=version, piece_length=MIB, progress=progress, cancel=cancel
        )
    assert time.monotonic() - cancelled_at < 1.0
    assert seen[-1] < 2**30 // 2
    assert not _hashing_threads()  # every hashing thread has stopped


def test_cancel_from_another_thread(sparse_file: Path) -> None:
    cancel = threading.Event()
    timer = threading.Timer(0.05, cancel.set)
    timer.start()
    try:
        with pytest.raises(CreateCancelled):
            create_torrent(sparse_file, version="hybrid", piece_length=MIB, cancel=cancel)
    finally:
        timer.cancel()
    assert not _hashing_threads()


def test_cancelled_before_start(album: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CreateCancelled):
        create_torrent(album, cancel=cancel)


def test_an_exception_from_progress_stops_hashing(sparse_file: Path) -> None:
    class StopError(Exception):
        pass

    def progress(done: int, total: int) -> None:
        if done:
            raise StopError

    with pytest.raises(StopError):
        create_torrent(sparse_file, version="v2", piece_length=MIB, progress=progress)
    assert not _hashing_threads()


@pytest.mark.parametrize("version", ["v1", "hybrid"])
def test_memory_is_bounded(sparse_file: Path, version: Any) -> None:
    size = 2**30 if version == "v1" else 2**28  # keep the slower hybrid hashing short
    path = sparse_file if version == "v1" else sparse_file.with_name("quarter.bin")
    if not path.exists():
        with open(path, "wb") as file:
            file.truncate(size)
    tracemalloc.start()
    try:
        torrent = create_torrent(path, version=version, piece_length=MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert torrent.info.total_size == size
    assert peak < 16 * MIB, peak
    assert torrent.info.piece_hash(0) == hashlib.sha1(bytes(MIB)).digest()


def test_jobs_in_flight_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(_payload(2 * MIB))
    entries, _ = _create_walk._scan(str(path), include_hidden=True, follow_symlinks=False)
    with mock.patch.object(_create_pipeline, "_JOB_BYTES", 16 * KIB):
        _, in_flight = _create_pipeline._hash_files(
            entries,
            piece_length=16 * KIB,
            v1=True,
            v2=False,
            threads=3,
            max_buffered_bytes=1,
            progress=None,
            cancel=None,
        )
    assert 1 <= in_flight <= 6


# --- properties -----------------------------------------------------------------------

_NAMES = st.text(alphabet="ab. -_é€😀", min_size=1, max_size=4).filter(
    lambda name: name not in (".", "..") and name == name.strip(" .")
)


@st.composite
def _trees(draw: st.DrawFn) -> dict[tuple[str, ...], int]:
    paths = draw(st.lists(st.lists(_NAMES, min_size=1, max_size=3), min_size=1, max_size=6))
    tree: dict[tuple[str, ...], int] = {}
    for parts in paths:
        path = tuple(parts)
        # A path cannot be both a file and a directory.
        if any(other[: len(path)] == path or path[: len(other)] == other for other in tree):
            continue
        tree[path] = draw(st.sampled_from([0, 1, 5, 16 * KIB, 16 * KIB + 7, 40_000, 70_000]))
    return tree


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    tree=_trees(),
    version=st.sampled_from(VERSIONS),
    piece_length=st.sampled_from([16 * KIB, 32 * KIB, 64 * KIB]),
)
def test_random_trees(
    tmp_path: Path, tree: dict[tuple[str, ...], int], version: Any, piece_length: int
) -> None:
    root = tmp_path / f"t{len(list(tmp_path.iterdir()))}"
    root.mkdir()
    for index, (path, size) in enumerate(tree.items()):
        target = root.joinpath(*path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_payload(size, index))
    if not any(tree.values()):
        with pytest.raises(ValueError, match="empty"):
            create_torrent(root, version=version, piece_length=piece_length)
        return
    with mock.patch.object(_create_pipeline, "_JOB_BYTES", 32 * KIB):
        torrent = create_torrent(root, version=version, piece_length=piece_length)
    expected = sorted(tree)
    if version == "v2" and len(tree) == 1 and len(expected[0]) == 1:
        # A v2 file tree of one top-level file is a single-file torrent to every
        # reader, libtorrent included: it is named after the file.
        assert [e.path for e in torrent.files if not e.is_pad] == expected
        _check(torrent, root)
        return
    assert [e.path[1:] for e in torrent.files if not e.is_pad] == expected
    _check(torrent, tmp_path)
    raw = decode(torrent.to_bytes())[b"info"]
    if version != "v1":
        # The v1 list follows the file tree's order exactly.
        assert raw[b"meta version"] == 2


# --- against libtorrent -----------------------------------------------------------------


@pytest.fixture
def lt() -> Any:
    """The libtorrent module: a missing one skips the test (fails it in CI)."""
    try:
        return importlib.import_module("libtorrent")
    except ImportError:
        message = "libtorrent is not installed: `uv sync --group interop`"
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


_LT_FLAGS = {"v1": "v1_only", "v2": "v2_only", "hybrid": None}


def _lt_create(
    lt: Any,
    path: Path,
    version: str,
    piece_length: int,
    *,
    entries: list[Any] | None = None,
    **options: Any,
) -> bytes:
    """libtorrent's .torrent for ``path``; ``entries`` overrides its own file listing."""
    flags = lt.create_torrent.symlinks
    extra = _LT_FLAGS[version]
    if extra is not None:
        flags |= getattr(lt.create_torrent, extra)
    if entries is None:
        entries = lt.list_files(str(path), lambda _: True, lt.create_torrent.symlinks)
    creator = lt.create_torrent(entries, piece_length, flags)
    creator.set_creation_date(options.get("creation_date", 1_600_000_000))
    if "comment" in options:
        creator.set_comment(options["comment"])
    if "created_by" in options:
        creator.set_creator(options["created_by"])
    for tier, urls in enumerate(options.get("trackers", [])):
        for url in [urls] if isinstance(urls, str) else urls:
            creator.add_tracker(url, tier)
    for url in options.get("web_seeds", []):
        creator.add_url_seed(url)
    for host, port in options.get("nodes", []):
        creator.add_node(host, port)
    if options.get("private"):
        creator.set_priv(True)
    for info_hash in options.get("similar", []):
        creator.add_similar_torrent(lt.sha1_hash(info_hash))
    for name in options.get("collections", []):
        creator.add_collection(name)
    lt.set_piece_hashes(creator, str(path.parent))
    return bytes(lt.bencode(creator.generate()))


def _lt_entries(lt: Any, path: Path) -> list[Any]:
    """Our file list as libtorrent entries, for v1 (libtorrent lists in directory order)."""
    entries, single = _create_walk._scan(str(path), include_hidden=True, follow_symlinks=False)
    result = []
    for entry in entries:
        flags = lt.file_storage.flag_executable if entry.executable else 0
        if entry.symlink is not None:
            flags |= lt.file_storage.flag_symlink
        name = "/".join((path.name, *entry.path)) if not single else path.name
        link = "/".join(entry.symlink) if entry.symlink is not None else ""
        result.append(lt.create_file_entry(name, entry.length, flags, 0, link))
    return result


@pytest.fixture
def interop_tree(tmp_path: Path) -> Path:
    """Nested, odd names, an empty file, an executable, links in and out."""
    root = _make_tree(
        tmp_path / "inter op",
        {
            "a/x": _payload(70000, 1),
            "a/empty": b"",
            "b/c": _payload(5, 2),
            "sub dir/ü/f 1.bin": _payload(40000, 3),
            "z.txt": _payload(16 * KIB, 4),
            "Ω/big": _payload(3 * MIB + 1, 5),
        },
    )
    if os.name == "posix":
        (root / "b" / "c").chmod(0o755)
        (root / "a" / "link").symlink_to("../z.txt")
        (root / "a" / "out").symlink_to(tmp_path)  # left out, by both
    return root


@pytest.mark.interop
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("piece_length", [16 * KIB, 64 * KIB])
@pytest.mark.parametrize("kind", ["file", "directory"])
def test_same_torrent_as_libtorrent(
    lt: Any, interop_tree: Path, version: str, piece_length: int, kind: str
) -> None:
    path = interop_tree if kind == "directory" else interop_tree / "Ω" / "big"
    entries = _lt_entries(lt, path) if version == "v1" else None
    theirs = _lt_create(lt, path, version, piece_length, entries=entries)
    ours = create_torrent(
        path,
        version=version,  # type: ignore[arg-type]
        piece_length=piece_length,
        creation_date=1_600_000_000,
        created_by=None,
    )
    assert decode(ours.to_bytes()) == decode(theirs)
    assert ours.to_bytes() == theirs
    loaded = lt.torrent_info(ours.to_bytes())
    hashes = loaded.info_hashes()
    if version != "v2":
        assert bytes(hashes.v1.to_bytes()) == ours.info.info_hash.v1
    if version != "v1":
        assert bytes(hashes.v2.to_bytes()) == ours.info.info_hash.v2


@pytest.mark.interop
@pytest.mark.parametrize("version", VERSIONS)
def test_same_options_as_libtorrent(lt: Any, interop_tree: Path, version: str) -> None:
    options: dict[str, Any] = {
        "creation_date": 1_234_567_890,
        "comment": "a comment",
        "created_by": "someone 1.0",
        "trackers": [["udp://a.example:1", "udp://b.example:2"], "udp://c.example:3"],
        "web_seeds": ["http://ws.example/"],
        "nodes": [("router.example", 6881)],
        "private": True,
        "similar": [hashlib.sha1(b"x").digest()],
        "collections": ["coll"],
    }
    entries = _lt_entries(lt, interop_tree) if version == "v1" else None
    theirs = _lt_create(lt, interop_tree, version, 32 * KIB, entries=entries, **options)
    ours = create_torrent(interop_tree, version=version, piece_length=32 * KIB, **options)  # type: ignore[arg-type]
    assert ours.to_bytes() == theirs


@pytest.mark.interop
def test_libtorrent_follows_links_as_we_do(lt: Any, interop_tree: Path) -> None:
    (interop_tree / "a" / "out").unlink()
    entries = lt.list_files(str(interop_tree), lambda _: True, 0)
    creator = lt.create_torrent(entries, 16 * KIB, 0)
    creator.set_creation_date(1)
    lt.set_piece_hashes(creator, str(interop_tree.parent))
    theirs = bytes(lt.bencode(creator.generate()))
    ours = create_torrent(interop_tree, symlinks="follow", piece_length=16 * KIB, creation_date=1)
    assert decode(ours.to_bytes())[b"info"] == decode(theirs)[b"info"]


@pytest.mark.interop
@pytest.mark.parametrize(
    "total", [1, 2684355, 2684356, 10**9, 2748779070, 703687441777, 703687441778, 10**13]
)
def test_automatic_piece_length_is_libtorrents(lt: Any, total: int) -> None:
    creator = lt.create_torrent([lt.create_file_entry("x", total)], 0, 0)
    assert creator.piece_length() == auto_piece_length(total)


@pytest.mark.interop
def test_libtorrent_loads_our_file_order_where_its_own_is_inconsistent(
    lt: Any, tmp_path: Path
) -> None:
    # "b.txt" sorts before "b/c" as a whole string ('.' < '/'), after it per component.
    root = _make_tree(tmp_path / "clash", {"b.txt": _payload(100), "b/c": _payload(200)})
    ours = create_torrent(root, piece_length=16 * KIB, creation_date=None)
    assert _real(ours) == [("clash/b/c", 200), ("clash/b.txt", 100)]
    loaded = lt.torrent_info(ours.to_bytes())
    assert bytes(loaded.info_hashes().v1.to_bytes()) == ours.info.info_hash.v1
    theirs = _lt_create(lt, root, "hybrid", 16 * KIB)
    # libtorrent 2.1.1 lists its v1 files as b.txt, b/c and then refuses its own torrent.
    files = [f[b"path"] for f in decode(theirs)[b"info"][b"files"] if f.get(b"attr") != b"p"]
    if files == [[b"b.txt"], [b"b", b"c"]]:
        with pytest.raises(RuntimeError, match="v1 and v2 file metadata"):
            lt.torrent_info(theirs)


@pytest.fixture
def mktorrent() -> str:
    """The mktorrent binary: a missing one skips the test (fails it in CI)."""
    found = shutil.which("mktorrent")
    if found is None:
        message = "mktorrent is not installed: install the apt package mktorrent"
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


@pytest.mark.interop
@pytest.mark.parametrize("kind", ["file", "directory"])
def test_same_v1_info_hash_as_mktorrent(mktorrent: str, tmp_path: Path, kind: str) -> None:
    # mktorrent writes no BEP 47 attributes and follows links: a tree without either.
    root = _make_tree(
        tmp_path / "mk tree",
        {
            "a/x": _payload(70000, 1),
            "a/empty": b"",
            "b/c": _payload(5, 2),
            "sub dir/ü/f 1.bin": _payload(40000, 3),
            "z.txt": _payload(100 * KIB, 4),
        },
    )
    path = root if kind == "directory" else root / "z.txt"
    output = tmp_path / "out.torrent"
    subprocess.run(
        [mktorrent, "-l", "15", "-o", str(output), str(path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    theirs = Metainfo.from_bytes(output.read_bytes())
    ours = create_torrent(path, version="v1", piece_length=32 * KIB)
    assert ours.info.raw == theirs.info.raw
