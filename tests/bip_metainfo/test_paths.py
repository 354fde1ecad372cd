"""Path sanitising: the public vectors, a table of hostile inputs, and properties.

The vectors are libtorrent's own test torrents: their raw paths are read from the
files and run through the same steps a parser takes (sanitise every element,
check symlinks, rename duplicates), and the results must equal what libtorrent's
tests assert. Where we are stricter than libtorrent on purpose, the expected
value says so.
"""

from __future__ import annotations

import json
import os
import re
import string
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import bip_bencode
from bip_metainfo import MetainfoError, MetainfoErrorKind
from bip_metainfo._paths import (
    DEFAULT_DUPLICATE_LIMIT,
    _element,
    _element_slow,
    _fold,
    is_within,
    resolve_duplicates,
    resolve_symlinks,
    sanitize_name,
    sanitize_path,
    sanitize_symlink_target,
)

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"
INDEX: dict[str, Any] = json.loads((VECTORS / "torrents" / "torrents_index.json").read_text())
LIBTORRENT = [
    entry
    for entry in INDEX["torrents"]
    if entry["source"] == "libtorrent" and entry["expect"] == "valid"
]

RESERVED = {"con", "prn", "aux", "nul", "clock$", "conin$", "conout$"} | {
    f"{device}{digit}" for device in ("com", "lpt") for digit in "0123456789\xb9\xb2\xb3"
}


# ---------------------------------------------------------------------------
# What "safe" means, checked on every result in this file


def assert_safe_component(component: str) -> None:
    data = component.encode("utf-8")  # a lone surrogate would raise here
    assert component, "empty component"
    assert component not in (".", ".."), component
    assert len(data) <= 255, len(data)
    assert not set(component) & set('/\\\x00"*:<>?|'), component
    assert all(ord(c) >= 0x20 and not 0x7F <= ord(c) <= 0x9F for c in component), component
    assert not component.endswith((" ", ".")), component
    assert component.partition(".")[0].rstrip(" ").lower() not in RESERVED, component
    assert not re.search("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]", component)


def assert_stays_inside(root: Path, components: Sequence[str]) -> None:
    for component in components:
        assert_safe_component(component)
    if not components:
        return
    # On this machine, through the real filesystem ...
    resolved = root.joinpath(*components).resolve()
    assert resolved.is_relative_to(root.resolve()), resolved
    assert is_within(root, root.joinpath(*components))
    # ... and as POSIX and Windows would read the same components.
    posix = PurePosixPath("/srv/downloads")
    assert posix.joinpath(*components).parts == (*posix.parts, *components)
    windows = PureWindowsPath("C:\\downloads")
    joined = windows.joinpath(*components)
    assert joined.drive == "C:"
    assert joined.parts == (*windows.parts, *components)


# ---------------------------------------------------------------------------
# The public vectors


def _info(entry: dict[str, Any]) -> dict[bytes, Any]:
    data = (VECTORS / entry["file"]).read_bytes()
    # Some of libtorrent's test torrents carry a stray byte after the top dict.
    torrent, _ = bip_bencode.decode_prefix(data, lenient=True)
    assert isinstance(torrent, dict)
    info = torrent[b"info"]
    assert isinstance(info, dict)
    return info


def _walk_file_tree(node: dict[bytes, Any], prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    """BEP 52 file tree leaves, depth first in key order (test trees are shallow)."""
    paths: list[tuple[str, ...]] = []
    for key in sorted(node):
        child = node[key]
        path = (*prefix, *sanitize_path([key]))
        if len(child) == 1 and b"" in child:
            paths.append(path)
        else:
            paths.extend(_walk_file_tree(child, path))
    return paths


class Layout:
    """What a parser builds from an info dict, with only this module's functions."""

    def __init__(self, entry: dict[str, Any]) -> None:
        info = _info(entry)
        raw_name = info.get(b"name.utf-8", info[b"name"])
        self.name = sanitize_name(raw_name, fallback=entry.get("collector_info_hash_v1"))
        self.paths: list[tuple[str, ...]] = []
        self.pads: list[bool] = []
        self.sizes: list[int] = []
        targets: dict[int, tuple[str, ...]] = {}
        self.from_tree = b"files" not in info and b"file tree" in info
        if b"files" in info:
            for index, file in enumerate(info[b"files"]):
                attributes = file.get(b"attr", b"")
                components = file.get(b"path.utf-8", file.get(b"path"))
                if components:
                    self.paths.append((self.name, *sanitize_path(components)))
                else:
                    assert b"p" in attributes
                    self.paths.append((".pad", str(file[b"length"])))
                self.pads.append(b"p" in attributes)
                self.sizes.append(file.get(b"length", 0))
                if b"l" in attributes and b"symlink path" in file:
                    target = sanitize_symlink_target(file[b"symlink path"])
                    if target is not None:
                        targets[index] = target
        elif b"file tree" in info:
            tree = info[b"file tree"]
            self.paths = _walk_file_tree(tree, (self.name,))
            (_, node), *rest = tree.items()
            if not rest and len(node) == 1 and b"" in node:  # a single file: no directory
                self.paths = [self.paths[0][1:]]
            self.pads = [False] * len(self.paths)
            self.sizes = [0] * len(self.paths)
        else:
            self.paths = [(self.name,)]
            self.pads, self.sizes = [False], [info[b"length"]]
        self.symlinks = resolve_symlinks(self.paths, targets, root=(self.name,))

    def renamed(self) -> list[tuple[str, ...]]:
        return resolve_duplicates(self.paths, pads=self.pads, sizes=self.sizes)


def _checked(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in (entry.get("source_checks") or {}).items()
        if re.fullmatch(r"(file_path|renamed_files|symlink)\[\d+\]|name|files|num_files", key)
    }


WITH_PATH_CHECKS = [entry for entry in LIBTORRENT if _checked(entry)]


def _vector_id(entry: dict[str, Any]) -> str:
    return Path(entry["file"]).name


def test_the_vectors_this_file_relies_on_are_there() -> None:
    names = {_vector_id(entry) for entry in WITH_PATH_CHECKS}
    assert {
        "absolute_filename.torrent",
        "invalid_directory_name.torrent",
        "slash_path.torrent",
        "slash_path3.torrent",
        "symlink_filtered_path.torrent",
        "v2_invalid_filename.torrent",
        "v2_invalid_filename2.torrent",
        "invalid_name2.torrent",
        "pad_file_no_path.torrent",
        "symlink1.torrent",
        "symlink2.torrent",
        "overlapping_symlinks.torrent",
    } <= names


@pytest.mark.parametrize("entry", WITH_PATH_CHECKS, ids=_vector_id)
def test_vector_paths_equal_libtorrents(entry: dict[str, Any]) -> None:
    layout = Layout(entry)
    renamed = layout.renamed()
    for key, value in _checked(entry).items():
        index = int(key[key.index("[") + 1 : -1]) if "[" in key else None
        if key == "num_files":
            if layout.from_tree:
                continue  # libtorrent counts the pad files it inserts between v2 files
            if isinstance(value, int):
                assert len(layout.paths) == value
            else:
                assert len(layout.paths) > int(value.lstrip(">"))
        elif key == "name":
            assert layout.name == value.split(" ", 1)[0]
        elif key == "files":
            assert ["/".join(path) for path in layout.paths] == value
        elif key.startswith("file_path"):
            # "path (renamed other)": libtorrent's layout keeps the path, the
            # rename is recorded apart.
            path, _, note = value.partition(" (renamed ")
            assert "/".join(layout.paths[index]) == path  # type: ignore[index]
            if note:
                assert "/".join(renamed[index]) == note.rstrip(")")  # type: ignore[index]
        elif key.startswith("renamed_files"):
            assert "/".join(renamed[index]) == value  # type: ignore[index]
        else:
            assert "/".join(layout.symlinks[index]) == value  # type: ignore[index]


@pytest.mark.parametrize("entry", LIBTORRENT, ids=_vector_id)
def test_every_valid_vector_yields_safe_unique_paths(entry: dict[str, Any], tmp_path: Path) -> None:
    layout = Layout(entry)
    renamed = layout.renamed()
    keys = [tuple(_fold(c) for c in path) for path in renamed]
    pads = [path for path, pad in zip(keys, layout.pads, strict=True) if not pad]
    assert len(set(pads)) == len(pads)
    for path in renamed:
        assert_stays_inside(tmp_path, path)
    for target in layout.symlinks.values():
        assert_stays_inside(tmp_path, target)


def test_duplicate_files2_is_refused() -> None:
    (entry,) = [e for e in INDEX["torrents"] if e["file"].endswith("/duplicate_files2.torrent")]
    assert entry["libtorrent_error"] == "too_many_duplicate_filenames"
    paths = [("temp", *sanitize_path(f[b"path"])) for f in _info(entry)[b"files"]]
    with pytest.raises(MetainfoError) as info:
        resolve_duplicates(paths)
    assert info.value.kind is MetainfoErrorKind.TOO_MANY_DUPLICATE_NAMES
    assert info.value.kind.libtorrent == "too_many_duplicate_filenames"


def test_raw_vector_inputs_are_what_the_tests_claim() -> None:
    """The hostile inputs the vectors carry, read from the files themselves."""
    by_name = {_vector_id(e): e for e in INDEX["torrents"]}
    files = _info(by_name["slash_path.torrent"])[b"files"]
    assert files[0][b"path"] == [b"/", b"/", b"bar"]
    assert _info(by_name["slash_path3.torrent"])[b"name"] == b"temp/../../abc"
    assert _info(by_name["invalid_name2.torrent"])[b"name"] == b".."
    tree = _info(by_name["v2_invalid_filename.torrent"])[b"file tree"]
    assert list(tree) == [b"\x82est/MB"]
    files = _info(by_name["absolute_filename.torrent"])[b"files"]
    assert files[1][b"path"] == [b"/foobar"]


# ---------------------------------------------------------------------------
# Hostile path elements, one at a time

# Names whose zero-width non-joiner or joiner is part of the text: Persian "I want"
# (ZWNJ), a Devanagari half form (ZWJ), an emoji family (ZWJ).
JOINED = [
    "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645.mp3",
    "\u0915\u094d\u200d\u0937",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467",
]

HOSTILE: list[tuple[bytes | str, str]] = [
    # traversal and separators: never more than one component
    ("..", "_"),
    (".", "_"),
    ("", "_"),
    ("../../etc/passwd", "....etcpasswd"),
    ("/etc/passwd", "etcpasswd"),
    ("a/../../b", "a....b"),
    ("/", "_"),
    ("//\\", "_"),
    ("/..", "_"),
    ("../", "_"),
    ("\\\\server\\share", "servershare"),
    ("\\\\?\\C:\\x", "_C_x"),
    # drive letters and NTFS streams (stricter than libtorrent on POSIX)
    ("C:\\x", "C_x"),
    ("C:x", "C_x"),
    ("C:", "C_"),
    ("file:stream", "file_stream"),
    ("file::$DATA", "file__$DATA"),
    ('a<b>c"d|e?f*g', "a_b_c_d_e_f_g"),
    # Windows device names, with or without an extension (stricter)
    ("CON", "CON_"),
    ("con.txt", "con_.txt"),
    ("NUL", "NUL_"),
    ("nul.tar.gz", "nul_.tar.gz"),
    ("Aux", "Aux_"),
    ("prn.", "prn_"),
    ("COM1", "COM1_"),
    ("lpt9.x", "lpt9_.x"),
    ("COM\u00b9", "COM\u00b9_"),
    ("conin$", "conin$_"),
    ("CON .txt", "CON _.txt"),
    ("console", "console"),
    ("com10", "com10"),
    ("nul_", "nul_"),
    # NUL and control characters
    ("a\x00b", "ab"),
    ("\x00", "_"),
    ("\x00\x00\x00\x00", "_"),
    ("\x00..", "_"),
    ("a\x01b", "a_b"),
    ("\b?filename=4", "__filename=4"),
    ("\t", "_"),
    ("a\nb", "a_b"),
    ("a\x7fb", "a_b"),
    ("a\x85b", "a_b"),
    ("a\x9fb", "a_b"),
    # dots and spaces
    ("...", "_"),
    ("....", "_"),
    (".....", "_"),
    ("a.", "a"),
    ("abc...", "abc"),
    ("a ", "a"),
    ("a. . .", "a"),
    (" ", "_"),
    (". .", "_"),
    (" x ", " x"),
    ("..a", "..a"),
    ("a..", "a"),
    ("a...b", "a...b"),
    (".hidden", ".hidden"),
    # the bidirectional controls, which can disguise a name's extension, are dropped
    ("\u202eexe.txt", "exe.txt"),
    ("foo\u200ebar", "foobar"),
    ("foo\u202bbar", "foobar"),
    ("foo\u2066bar", "foobar"),
    ("foo\u061cbar", "foobar"),
    ("\u200f", "_"),
    # other invisible characters are kept, as libtorrent keeps them: joiners are part of
    # Persian and Indic words and of emoji sequences
    *((name, name) for name in JOINED),
    ("a\u200bb", "a\u200bb"),
    ("\ufeffx", "\ufeffx"),
    ("a\u2060b", "a\u2060b"),
    ("\u200b", "\u200b"),
    # look-alikes of separators are ordinary characters: one component
    ("a\uff0fb", "a\uff0fb"),
    ("a\u2215b", "a\u2215b"),
    ("a\u2044b", "a\u2044b"),
    ("a\uff3cb", "a\uff3cb"),
    ("\u2024\u2024", "\u2024\u2024"),  # ONE DOT LEADER twice is not ".."
    # plain names pass untouched
    ("filename=4", "filename=4"),
    ("readme.txt", "readme.txt"),
    ("\u00e9t\u00e9 \u2014 \U0001f488.mp3", "\u00e9t\u00e9 \u2014 \U0001f488.mp3"),
    ("e\u0301", "e\u0301"),  # not normalised
    # invalid UTF-8, each bad sequence one "_" (libtorrent's tests)
    (b"\xff", "_"),
    (b"\xff\xfe", "__"),
    (b"\x82est/MB", "_estMB"),
    (b"filename\xc2\xa1", "filename\u00a1"),
    (b"filename\xc2", "filename_"),
    (b"filename\xe2\x9f\xb9", "filename\u27f9"),
    (b"filename\xe2\x9f", "filename_"),
    (b"filename\xe2", "filename_"),
    (b"filename\xf0\x9f\x92\x88", "filename\U0001f488"),
    (b"filename\xf0\x9f\x92", "filename_"),
    (b"filename\xf8\x9f\x9f\x9f\x9ffoobar", "filename_foobar"),
    (b"\xf8ab", "_"),
    (b"filename\xc0\xae", "filename_"),
    (b"filename\xe0\x80\xae", "filename_"),
    (b"filename\xf0\x80\x80\xae", "filename_"),
    (b"\xc3a.txt", "_.txt"),
    (b"\xed\xa0\x80x", "_x"),
    (b"\xf4\x90\x80\x80", "_"),
    (b"\xc0\xae\xc0\xae", "__"),  # an overlong ".." is not ".."
    ("a\udc80b", "a_b"),  # a lone surrogate in str input
    ("\udcff", "_"),
]


@pytest.mark.parametrize(("raw", "expected"), HOSTILE, ids=[repr(raw) for raw, _ in HOSTILE])
def test_hostile_element(raw: bytes | str, expected: str, tmp_path: Path) -> None:
    assert sanitize_path([raw]) == (expected,)
    other = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    assert sanitize_path([other]) == (expected,)  # bytes and str agree
    assert_stays_inside(tmp_path, (expected,))


def test_a_path_keeps_one_component_per_element() -> None:
    assert sanitize_path([b"..", b"..", b"bar"]) == ("_", "_", "bar")
    assert sanitize_path([b"", b""]) == ("_", "_")
    assert sanitize_path([b"foo/../../../bar", b"bar"]) == ("foo......bar", "bar")
    assert sanitize_path(["a", ".", "b"]) == ("a", "_", "b")
    assert sanitize_path([]) == ()


LONG = "abcdefghi_" * 25  # 250 bytes


def test_long_elements_are_cut_at_240_bytes_keeping_the_extension() -> None:
    assert sanitize_path([LONG]) == (LONG[:240],)
    assert sanitize_path([LONG[:-5] + ".test"]) == (LONG[:240] + ".test",)
    assert sanitize_path([LONG[:239] + "\u2014abcde.jpg"]) == (LONG[:239] + "\u2014.jpg",)
    assert sanitize_path(["\u2014" * 100]) == ("\u2014" * 80,)
    assert sanitize_path(["x" * 300 + ".verylongext"]) == ("x" * 240,)  # no extension kept
    assert sanitize_path(["x" * 250 + ".a.b"]) == ("x" * 240 + ".b",)
    # the vector long_name.torrent: a 9-byte extension survives
    (entry,) = [e for e in LIBTORRENT if e["file"].endswith("/long_name.torrent")]
    raw = _info(entry)[b"name"]
    assert len(raw) > 255
    assert sanitize_name(raw) == "abcdefghij0123456789" * 12 + ".23456789"


def test_invalid_bytes_count_towards_the_cap() -> None:
    # libtorrent counts only the characters it keeps, and would return 260 bytes.
    (result,) = sanitize_path([b"x" * 239 + b"\xff" * 20 + b".t"])
    assert result == "x" * 239 + "_.t"


def test_a_device_name_near_the_cap_is_stable() -> None:
    (result,) = sanitize_path(["con." + "x" * 300])
    assert result.startswith("con_.")
    assert len(result.encode()) <= 255
    assert sanitize_path([result]) == (result,)


def test_sanitize_path_refuses_a_bare_string_or_other_types() -> None:
    with pytest.raises(TypeError):
        sanitize_path("a/b")
    with pytest.raises(TypeError):
        sanitize_path(b"a/b")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sanitize_path([b"a", 1])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        sanitize_symlink_target("a")
    with pytest.raises(TypeError):
        sanitize_name(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# The torrent's name

NAMES: list[tuple[bytes | str, str]] = [
    (b"temp/../../abc", "temp....abc"),
    (b"\\est2", "est2"),
    (b"..", ""),
    (b".", ""),
    (b"/", ""),
    (b"//", ""),
    (b"/..", ""),
    (b"\x00", ""),
    (b"\xe2\x80\x8e", ""),
    (b"...", ""),
    (b" ", ""),
    (b"", "_"),  # libtorrent: an empty name is "_" (a single file refuses it first)
    (b"\x01", "_"),
    (b"\xff", "_"),
    (b"foobar ", "foobar"),  # libtorrent keeps the space except on Windows
    (b"con", "con_"),
    (b"/test1/test2/test3", "test1test2test3"),
    (b"c:/test1/test2/test3", "c_test1test2test3"),
    (b"test2/../test3/.././../../test4", "test2..test3.......test4"),
    (b"Some.framework", "Some.framework"),
]


@pytest.mark.parametrize(("raw", "expected"), NAMES, ids=[repr(raw) for raw, _ in NAMES])
def test_name(raw: bytes, expected: str) -> None:
    assert sanitize_name(raw) == expected
    assert sanitize_name(raw.decode("utf-8", "surrogateescape")) == expected
    fallback = "b61560c2918f463768cd122b6d2fdd47b77bdb35"
    assert sanitize_name(raw, fallback=fallback) == (expected or fallback)


def test_a_fallback_must_itself_be_usable() -> None:
    assert sanitize_name(b"..", fallback=b"abc/") == "abc"
    with pytest.raises(ValueError, match="usable"):
        sanitize_name(b"..", fallback="..")


# ---------------------------------------------------------------------------
# Symlink targets


def test_symlink_targets_drop_dot_elements_and_sanitise_the_rest() -> None:
    assert sanitize_symlink_target([b"..", b"a", b"f"]) == ("a", "f")
    assert sanitize_symlink_target([b".", b"a", b"f"]) == ("a", "f")
    assert sanitize_symlink_target([b"a", b"/", b"bar"]) == ("a", "_", "bar")
    assert sanitize_symlink_target([b"/..", b"a"]) == ("_", "a")  # not ".." until sanitised
    assert sanitize_symlink_target([b"", b"a"]) == ("_", "a")
    assert sanitize_symlink_target([b"...", b"a"]) == ("_", "a")
    assert sanitize_symlink_target([b"/", b"etc", b"passwd"]) == ("_", "etc", "passwd")
    assert sanitize_symlink_target([]) is None
    assert sanitize_symlink_target([b".", b".."]) is None
    assert sanitize_symlink_target([b".."] * 10) is None


Parts = tuple[str, ...]


def _links(files: Sequence[Parts], links: dict[Parts, Parts]) -> dict[str, str]:
    paths = [*files, *links]
    targets = {len(files) + i: target for i, target in enumerate(links.values())}
    resolved = resolve_symlinks(paths, targets)
    return {"/".join(paths[i]): "/".join(target) for i, target in resolved.items()}


def test_a_target_naming_a_file_or_directory_is_kept() -> None:
    files: list[Parts] = [("a", "f"), ("a", "d", "g")]
    assert _links(files, {("l",): ("a", "f"), ("m",): ("a",), ("n",): ("a", "d")}) == {
        "l": "a/f",
        "m": "a",
        "n": "a/d",
    }


def test_a_target_may_be_relative_to_the_links_directory() -> None:
    files: list[Parts] = [("a", "f"), ("a", "d", "g")]
    assert _links(files, {("a", "l"): ("f",), ("a", "m"): ("d",)}) == {
        "a/l": "a/f",
        "a/m": "a/d",
    }


def test_a_target_naming_nothing_points_at_the_link_itself() -> None:
    files: list[Parts] = [("a", "f")]
    links: dict[Parts, Parts] = {
        ("l",): ("nope",),
        ("m",): ("A", "F"),
        ("n",): ("_", "a", "f"),
        ("o",): ("o",),
    }
    assert _links(files, links) == {"l": "l", "m": "m", "n": "n", "o": "o"}


def test_targets_may_go_through_links_to_directories() -> None:
    files: list[Parts] = [("x", "y", "f")]
    # c -> x/y is a link to a directory; m goes through it, in either order
    assert _links(files, {("m",): ("c", "f"), ("c",): ("x", "y")}) == {
        "m": "c/f",
        "c": "x/y",
    }
    assert _links(files, {("c",): ("x", "y"), ("m",): ("c", "nope")}) == {
        "c": "x/y",
        "m": "m",
    }
    # a link to a link counts as a link to a file
    assert _links(files, {("l",): ("x", "y", "f"), ("m",): ("l",)}) == {
        "l": "x/y/f",
        "m": "l",
    }


def test_symlink_loops_are_broken() -> None:
    files: list[Parts] = [("x", "f")]
    links: dict[Parts, Parts] = {("c",): ("d",), ("d",): ("c",), ("m",): ("c", "f")}
    assert _links(files, links) == {"c": "d", "d": "c", "m": "m"}


def test_symlink_hops_are_bounded() -> None:
    # h0 -> real, h1 -> h0, ..., h9 -> h8: each names an entry, so each is valid;
    # z -> h9/f only resolves through all ten of them.
    files: list[Parts] = [("real", "f")]
    chain: dict[Parts, Parts] = {("h0",): ("real",)}
    for i in range(1, 10):
        chain[(f"h{i}",)] = (f"h{i - 1}",)
    chain[("z",)] = ("h9", "f")
    paths = [*files, *chain]
    targets = {1 + i: target for i, target in enumerate(chain.values())}
    z = len(paths) - 1
    assert resolve_symlinks(paths, targets)[z] == ("z",)  # 8 hops by default
    assert resolve_symlinks(paths, targets, max_hops=9)[z] == ("z",)
    assert resolve_symlinks(paths, targets, max_hops=10)[z] == ("h9", "f")


# ---------------------------------------------------------------------------
# Duplicates

DUPLICATE_CASES: list[list[tuple[str, str]]] = [
    # libtorrent's test_torrent_info.cpp resolve_duplicates cases
    [
        ("test/temporary.txt", "test/temporary.txt"),
        ("test/Temporary.txt", "test/Temporary.1.txt"),
        ("test/TeMPorArY.txT", "test/TeMPorArY.2.txT"),
        ("test/test/TEMPORARY.TXT", "test/test/TEMPORARY.TXT"),
    ],
    [
        ("test/b.exe", "test/b.exe"),
        ("test/B.ExE", "test/B.1.ExE"),
        ("test/B.exe", "test/B.2.exe"),
        ("test/filler", "test/filler"),
    ],
    [
        ("test/a/b/c/d/e/f/g/h/i/j/k/l/m", "test/a/b/c/d/e/f/g/h/i/j/k/l/m"),
        ("test/a", "test/a.1"),
        ("test/a/b", "test/a/b.1"),
        ("test/a/b/c", "test/a/b/c.1"),
        ("test/a/b/c/d", "test/a/b/c/d.1"),
        ("test/a/b/c/d/e", "test/a/b/c/d/e.1"),
    ],
    [("test/a", "test/a.1"), ("test/a/b", "test/a/b")],  # directories win
    [
        ("test/A/tmp", "test/A/tmp"),
        ("test/a", "test/a.1"),
        ("test/A", "test/A.2"),
        ("test/filler", "test/filler"),
    ],
    [
        ("test/long/path/name/that/collides", "test/long/path/name/that/collides"),
        ("test/long/path", "test/long/path.1"),
    ],
    [("test/Dir/a", "test/Dir/a"), ("test/dir/b", "test/dir/b")],  # directories merge
    [("test/.hidden", "test/.hidden"), ("test/.HIDDEN", "test/.1.HIDDEN")],
    [
        ("test/a.txt", "test/a.txt"),
        ("test/a.1.txt", "test/a.1.txt"),
        ("test/A.txt", "test/A.2.txt"),
    ],
    [("t/x.tar.gz", "t/x.tar.gz"), ("t/x.tar.gz", "t/x.tar.1.gz")],
    [("t/dir.d/x", "t/dir.d/x"), ("t/dir.d", "t/dir.1.d")],
    # stricter than libtorrent 2.1, which leaves the last two equal
    [("n/a", "n/a"), ("n/A", "n/A.2"), ("n/a.1", "n/a.1")],
    [("n/a", "n/a.2"), ("n/a/b", "n/a/b"), ("n/a.1", "n/a.1")],
    # ... and which compares ASCII case only
    [("n/\u00e9", "n/\u00e9"), ("n/\u00c9", "n/\u00c9.1"), ("n/e\u0301", "n/e\u0301.2")],
    [("n/Stra\u00dfe", "n/Stra\u00dfe"), ("n/STRASSE", "n/STRASSE.1")],
]


@pytest.mark.parametrize("case", DUPLICATE_CASES)
def test_duplicates_are_renamed_like_libtorrent(case: list[tuple[str, str]]) -> None:
    paths = [tuple(before.split("/")) for before, _ in case]
    assert ["/".join(p) for p in resolve_duplicates(paths)] == [after for _, after in case]


def test_the_duplicate_limit_counts_taken_names() -> None:
    two = [("dir", "dup.txt")] * 2
    three = [("dir", "dup.txt")] * 3
    assert resolve_duplicates(two, limit=0)[1] == ("dir", "dup.1.txt")
    with pytest.raises(MetainfoError) as info:
        resolve_duplicates(three, limit=0)
    assert info.value.kind is MetainfoErrorKind.TOO_MANY_DUPLICATE_NAMES
    # n copies cost (n-1)(n-2)/2 collisions: 33 pass libtorrent's 500, 34 do not
    assert len(resolve_duplicates([("d", "x")] * 33, limit=DEFAULT_DUPLICATE_LIMIT)) == 33
    with pytest.raises(MetainfoError):
        resolve_duplicates([("d", "x")] * 34)


def test_pad_files_of_one_size_may_share_a_path() -> None:
    paths = [("t", ".pad", "16384"), ("t", "f"), ("t", ".pad", "16384"), ("t", ".pad", "16384")]
    pads = [True, False, True, True]
    assert resolve_duplicates(paths, pads=pads, sizes=[16384, 1, 16384, 1]) == [
        ("t", ".pad", "16384"),
        ("t", "f"),
        ("t", ".pad", "16384"),
        ("t", ".pad", "16384.1"),
    ]
    # a pad file does not shield an ordinary file from being renamed
    assert resolve_duplicates([("t", "x"), ("t", "x")], pads=[True, False], sizes=[5, 5]) == [
        ("t", "x"),
        ("t", "x.1"),
    ]
    with pytest.raises(ValueError, match="sizes"):
        resolve_duplicates(paths, pads=pads)


def test_renamed_components_stay_within_255_bytes() -> None:
    (long,) = sanitize_path(["x" * 239 + "\U0001f488" + "y" * 20 + ".abcdefgh"])
    assert len(long.encode()) == 252
    longest = "\u00e9" * 125 + ".ext"  # 254 bytes
    for component in (long, longest):
        renamed = resolve_duplicates([("t", component)] * 12)
        assert all(len(path[-1].encode()) <= 255 for path in renamed)
        assert renamed[11][-1].endswith(".11" + component[component.rfind(".") :])
        assert len({_fold(path[-1]) for path in renamed}) == 12


def test_an_empty_path_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        resolve_duplicates([("a",), ()])


# ---------------------------------------------------------------------------
# is_within, for the layer that writes


def test_is_within(tmp_path: Path) -> None:
    root = tmp_path / "downloads"
    (root / "t").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert is_within(root, root)
    assert is_within(root, root / "t" / "new.txt")
    assert is_within(root, "t/new.txt")
    assert is_within(str(root), os.fspath(root / "t"))
    assert not is_within(root, root / ".." / "elsewhere")
    assert not is_within(root, "../elsewhere/x")
    assert not is_within(root, outside / "x")
    assert not is_within(root, tmp_path / "downloads-2")  # a prefix is not a parent
    assert not is_within(root, "/etc/passwd")


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_is_within_follows_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "downloads"
    root.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "planted").symlink_to(outside, target_is_directory=True)
    (root / "inner").symlink_to(root / "planted")
    assert not is_within(root, root / "planted" / "x")
    assert not is_within(root, root / "inner" / "x")
    (root / "ok").symlink_to("t")
    assert is_within(root, root / "ok" / "x")
    link_root = tmp_path / "link-to-downloads"
    link_root.symlink_to(root, target_is_directory=True)
    assert is_within(link_root, root / "t")  # the root itself may be a link


# ---------------------------------------------------------------------------
# Properties

HOSTILE_TEXT = st.text(
    alphabet=st.sampled_from(
        [
            *'./\\:*?"<>| \x00\x01\x7f\x85\ufeff\u200b\u200c\u200d\u202e\u2066\uff0f\udc80',
            *"aAcCoOnN.1\u00b9$",
            *string.ascii_letters,
            *("\u00e9", "\u0301", "\u2014", "\U0001f488"),
        ]
    ),
    max_size=40,
)
HOSTILE_BYTES = st.lists(
    st.sampled_from(
        [
            *(b".", b"/", b"\\", b"\x00", b"\xff", b"\xc3", b"\xc0\xae", b"\xed\xa0\x80"),
            *(b"\xf8", b"\xe2\x80\x8e", b"\xe2\x80\x94", b"a", b"C", b":", b" ", b"con"),
            b"x" * 50,
        ]
    ),
    max_size=12,
).map(b"".join)
ELEMENT = st.one_of(st.text(), st.binary(), HOSTILE_TEXT, HOSTILE_BYTES, st.binary(max_size=300))
LONG_ELEMENT = st.builds(
    lambda head, tail: head + tail,
    st.sampled_from([b"x" * n for n in (230, 236, 238, 239, 240, 241, 250)] + [b"con." * 60]),
    HOSTILE_BYTES,
)
ANY_ELEMENT = st.one_of(ELEMENT, LONG_ELEMENT)


@given(components=st.lists(ANY_ELEMENT, max_size=6))
@settings(max_examples=400)
@example(components=[b"..", b"..", b"etc", b"passwd"])
@example(components=["C:", "\\\\?\\", "con.txt.", "a\x00b"])
def test_any_path_becomes_safe_and_stays_inside(
    components: list[bytes | str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.getbasetemp() / "root"
    root.mkdir(exist_ok=True)
    result = sanitize_path(components)
    assert len(result) == len(components)
    assert_stays_inside(root, result)
    assert sanitize_path(result) == result  # idempotent
    assert sanitize_path([c.encode() for c in result]) == result


@given(element=ANY_ELEMENT)
@settings(max_examples=400)
def test_the_fast_path_agrees_with_the_full_algorithm(element: bytes | str) -> None:
    data = element.encode("utf-8", "surrogatepass") if isinstance(element, str) else element
    for force in (True, False):
        assert _element(data, force) == _element_slow(data, force)


@given(name=ANY_ELEMENT)
@settings(max_examples=300)
def test_any_name_is_safe_or_empty(name: bytes | str) -> None:
    result = sanitize_name(name)
    if result:
        assert_safe_component(result)
        assert sanitize_name(result) == result
    assert sanitize_name(name, fallback="ab12") == (result or "ab12")


@given(target=st.lists(ANY_ELEMENT, max_size=5))
def test_any_symlink_target_is_safe(target: list[bytes | str]) -> None:
    result = sanitize_symlink_target(target)
    if result is None:
        raw = [t.encode("utf-8", "surrogatepass") if isinstance(t, str) else t for t in target]
        assert all(t in (b".", b"..") for t in raw)
    else:
        for component in result:
            assert_safe_component(component)


PATHS = st.lists(
    st.lists(
        st.sampled_from(["a", "A", "a.1", "b", "B.txt", "b.TXT", ".h", "\u00e9", "e\u0301"]),
        min_size=1,
        max_size=3,
    ).map(tuple),
    min_size=1,
    max_size=12,
)


@given(paths=PATHS)
@settings(max_examples=300)
def test_renamed_paths_never_clash(paths: list[tuple[str, ...]]) -> None:
    result = resolve_duplicates(paths, limit=10_000)
    keys = [tuple(_fold(c) for c in path) for path in result]
    directories = {key[:i] for key in keys for i in range(1, len(key))}
    assert len(set(keys)) == len(keys)
    assert not directories & set(keys)
    # a path that clashed with nothing is never renamed
    original = [tuple(_fold(c) for c in path) for path in paths]
    original_dirs = {key[:i] for key in original for i in range(1, len(key))}
    for index, key in enumerate(original):
        if original.count(key) == 1 and key not in original_dirs:
            assert result[index] == paths[index]
        assert result[index][:-1] == tuple(paths[index])[:-1]


LINKED = st.lists(
    st.tuples(
        st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map(tuple),
        st.one_of(
            st.none(),
            st.lists(st.sampled_from(["a", "b", "c", "..", "/"]), max_size=3),
        ),
    ),
    min_size=1,
    max_size=8,
)


@given(entries=LINKED)
@settings(max_examples=300)
def test_every_symlink_target_names_something_in_the_torrent_or_itself(
    entries: list[tuple[tuple[str, ...], list[str] | None]],
) -> None:
    paths = [path for path, _ in entries]
    targets = {}
    for index, (_, raw) in enumerate(entries):
        if raw is not None and (target := sanitize_symlink_target(raw)) is not None:
            targets[index] = target
    resolved = resolve_symlinks(paths, targets)
    assert set(resolved) == set(targets)
    names = {path[:i] for path in paths for i in range(1, len(path) + 1)}
    links = {paths[i] for i in targets}
    for index, target in resolved.items():
        if target == paths[index]:
            continue
        # it names an entry, or it goes through another link
        assert target in names or any(target[:i] in links for i in range(1, len(target)))


def test_folding_matches_windows_and_macos_views_of_a_name() -> None:
    assert _fold("E\u0301") == _fold("\u00e9") == _fold("\u00c9")
    assert _fold("a") != _fold("a ")
    assert unicodedata.is_normalized("NFD", _fold("\u00c5"))
