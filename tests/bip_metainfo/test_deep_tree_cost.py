"""Deep file trees cost work in proportion to the torrent, not to files x depth.

In a v2 ``file tree`` every file carries its whole directory prefix, which the torrent
states once: work done per component of every file's path (folding names for the
duplicate check, walking the tree of paths) lets a 1.4 MB torrent of 50,000 files
98 directories deep cost a minute. These tests count that work instead of timing it.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_bencode import encode
from bip_metainfo import Info, MetainfoError, MetainfoErrorKind, _paths, resolve_symlinks
from bip_metainfo._paths import _Tree

K = MetainfoErrorKind
ROOT = bytes(range(1, 33))
BIG_ROOT = bytes(range(2, 34))  # the real file's: a root names files of one length only


def _deep_tree(
    files: int,
    depth: int,
    leaf: dict[bytes, Any] | None = None,
    extra: dict[bytes, Any] | None = None,
) -> dict[bytes, Any]:
    """``files`` empty files and one real one, ``depth`` directories down (deep2.py's shape).

    ``leaf`` replaces the empty files' dictionary; ``extra`` adds entries beside them.
    """
    node: dict[bytes, Any] = {b"f%05d" % i: {b"": leaf or {b"length": 0}} for i in range(files)}
    node.update(extra or {})
    node[b"big"] = {b"": {b"length": 16384, b"pieces root": BIG_ROOT}}
    for level in reversed(range(depth)):
        node = {b"%02d" % level + "\u00e9".encode() * 8: node}
    return node


def _v2(tree: dict[bytes, Any]) -> bytes:
    return encode({b"name": b"t", b"piece length": 16384, b"meta version": 2, b"file tree": tree})


def _count_folds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    fold = _paths._fold

    def spy(component: str) -> str:
        calls.append(component)
        return fold(component)

    monkeypatch.setattr(_paths, "_fold", spy)
    return calls


class _CountingDict(dict[tuple[int, str], int]):
    """The tree's node table, counting its look-ups: the steps of every walk."""

    lookups = 0

    def get(self, key: tuple[int, str], default: Any = None) -> Any:
        _CountingDict.lookups += 1
        return super().get(key, default)


class _CountingTree(_Tree):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.nodes = _CountingDict()


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> type[_CountingDict]:
    monkeypatch.setattr(_paths, "_Tree", _CountingTree)
    _CountingDict.lookups = 0
    return _CountingDict


def test_each_distinct_component_is_folded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_folds(monkeypatch)
    info = Info.from_bytes(_v2(_deep_tree(2000, 59)))
    real = [entry for entry in info.files if not entry.is_pad]
    assert len(real) == 2001
    assert all(len(entry.path) == 61 for entry in real)  # name, 59 directories, the file
    distinct = {component for entry in real for component in entry.path}
    # Once per file and level before: 122,061 folds.
    assert len(calls) == len(set(calls)) <= len(distinct)


def test_the_tree_is_walked_once_per_directory(lookups: type[_CountingDict]) -> None:
    info = Info.from_bytes(_v2(_deep_tree(2000, 59)))
    assert len(info.files) == 2001  # "big" fills its piece: no pad file
    # Each file's own name, and each directory once per duplicate check: not x 60.
    assert lookups.lookups <= 2 * 2001 + 2 * 60


def test_deep_links_cost_no_walk_down_their_directory(lookups: type[_CountingDict]) -> None:
    link = {b"attr": b"l", b"symlink path": [b"nowhere", b"x"]}
    info = Info.from_bytes(_v2(_deep_tree(1000, 59, leaf=link)))
    links = [entry for entry in info.files if entry.is_symlink]
    assert len(links) == 1000
    assert all(entry.symlink_target == entry.path for entry in links)  # nothing there
    assert lookups.lookups <= 12 * 1001 + 4 * 60


def test_pads_between_deep_files_cost_no_walk_down_their_directory(
    lookups: type[_CountingDict],
) -> None:
    # Each one-byte file is followed by a pad file in t/.pad, and with a link in the
    # torrent every path, pads included, is checked for link targets: each real file's
    # directory was walked from the top again after the pads' (files x depth).
    one_byte = {b"length": 1, b"pieces root": ROOT}
    link = {b"lnk": {b"": {b"attr": b"l", b"symlink path": [b"nowhere"]}}}
    info = Info.from_bytes(_v2(_deep_tree(1000, 59, leaf=one_byte, extra=link)))
    pads = [entry for entry in info.files if entry.is_pad]
    assert len(pads) == 1000
    assert all(entry.path == ("t", ".pad", "16383") for entry in pads)
    (symlink,) = [entry for entry in info.files if entry.is_symlink]
    assert symlink.symlink_target == symlink.path  # nothing there: a self-link
    # A look-up for each file's name in both checks and each pad's in the link check,
    # and one for each directory per check: not 60 for each file (63,130 before).
    assert lookups.lookups <= 4 * 1002 + 4 * 60


def test_a_long_link_target_costs_linear_work(lookups: type[_CountingDict]) -> None:
    # Following a target through a long chain of real directories was a walk from the
    # root for each of its components: quadratic in the target's length. A torrent's
    # paths stop at MAX_FILE_TREE_DEPTH directories now; resolve_symlinks has no limit.
    deep = ("a",) * 3000
    paths = [("t", *deep, "f"), ("t", "l1"), ("t", "l2")]
    resolved = resolve_symlinks(paths, {1: (*deep, "x"), 2: (*deep, "f")}, root=("t",))
    assert resolved[1] == ("t", "l1")  # nothing there: a self-link
    assert resolved[2] == ("t", *deep, "f")
    assert lookups.lookups <= 20 * 3000


def test_a_deep_entry_is_still_named_in_full_when_refused() -> None:
    tree = _deep_tree(3, 4, leaf={b"length": -1})
    with pytest.raises(MetainfoError) as error:
        Info.from_bytes(_v2(tree))
    assert error.value.kind is K.INVALID_LENGTH
    directories = "/".join(f"{level:02d}" + "\u00e9" * 8 for level in range(4))
    assert f"file tree entry t/{directories}/f00000 has no valid 'length'" in str(error.value)


components = st.sampled_from(["a", "b", "A", "c"])
directory_lists = st.lists(st.lists(components, max_size=6).map(tuple), max_size=30)


@settings(max_examples=100, deadline=None)
@given(directory_lists)
def test_directory_reuse_finds_the_nodes_a_full_walk_finds(
    directories: list[tuple[str, ...]],
) -> None:
    reused = _Tree(str.lower)
    walked = _Tree(str.lower)
    expected_directories: set[int] = set()
    for path in directories:
        node = 0
        for component in path:
            node = walked.add(node, component.lower())
            expected_directories.add(node)
        assert reused.directory(path) == node
    assert reused.nodes == walked.nodes
    assert reused.directories == expected_directories
