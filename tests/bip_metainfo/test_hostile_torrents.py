"""A malicious torrent author: well-formed, correctly hashed torrents built to hurt.

Each torrent here is valid bencoding whose info-hash matches (the author made it), so
nothing but the parser's own limits and path rules stands between it and the user:
parsing is bounded in files, pieces, sizes and time, every path stays inside the
download directory and is unique there, and every symlink leads to a file or directory
of the torrent without loops. Built with bip_bencode directly, where the creator
would refuse.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from bip_bencode import encode
from bip_metainfo._errors import MetainfoError, MetainfoErrorKind
from bip_metainfo._info import DEFAULT_MAX_FILES, Info
from bip_metainfo._merkle import pieces_root
from bip_metainfo._metainfo import MAX_URLS, Metainfo
from bip_metainfo._paths import DEFAULT_SYMLINK_HOPS, break_link_cycles
from bip_metainfo._tokens import DEFAULT_MAX_VALUES, check_value_count

K = MetainfoErrorKind
ROOT = b"\x01" * 32  # a non-zero pieces root: the parser cannot check it without layers


def _v1(files: list[dict[bytes, Any]], piece_length: int = 16384, **extra: Any) -> bytes:
    total = sum(entry.get(b"length", 0) for entry in files)
    info: dict[bytes, Any] = {
        b"name": b"t",
        b"piece length": piece_length,
        b"files": files,
        b"pieces": bytes(20 * max(1, -(-total // piece_length))),
    }
    info.update({key.encode(): value for key, value in extra.items()})
    return encode(info)


def _file(*path: bytes, length: int = 1, **extra: Any) -> dict[bytes, Any]:
    entry: dict[bytes, Any] = {b"length": length, b"path": list(path)}
    entry.update({key.replace("_", " ").encode(): value for key, value in extra.items()})
    return entry


def _link(path: bytes, *target: bytes) -> dict[bytes, Any]:
    return {b"attr": b"l", b"path": [path], b"symlink path": list(target)}


def _v2(tree: dict[bytes, Any], piece_length: int = 16384) -> bytes:
    return encode(
        {b"name": b"t", b"piece length": piece_length, b"meta version": 2, b"file tree": tree}
    )


def _refused(data: bytes, kind: MetainfoErrorKind, **limits: int) -> MetainfoError:
    with pytest.raises(MetainfoError) as caught:
        Info.from_bytes(data, **limits)
    assert caught.value.kind is kind, caught.value
    return caught.value


# --- how much a torrent may make us parse -------------------------------------------


def test_a_files_list_over_the_limit_is_refused_before_any_per_file_work() -> None:
    files = [_file(b"f%d" % i) for i in range(2_001)]
    error = _refused(_v1(files), K.TOO_MANY_FILES, max_files=2_000)
    assert "more than 2000 files" in str(error)
    assert K.TOO_MANY_FILES.libtorrent == "limit_exceeded"
    assert len(Info.from_bytes(_v1(files[:2_000]), max_files=2_000).files) == 2_000


def test_a_v2_file_tree_over_the_limit_is_refused_while_it_is_walked() -> None:
    leaf = {b"": {b"length": 1, b"pieces root": ROOT}}
    tree = {b"d%d" % d: {b"f%d" % i: leaf for i in range(100)} for d in range(21)}
    error = _refused(_v2(tree), K.TOO_MANY_FILES, max_files=2_000)
    assert "more than 2000 files" in str(error)


def test_the_default_file_limit_refuses_a_few_mb_of_tiny_file_entries_quickly() -> None:
    # 600,000 one-byte files: about 12 MB; parsing them all would take about ten
    # seconds and a gigabyte. The list is counted first, so only decoding costs.
    entry = _file(b"f")
    data = _v1([entry] * (DEFAULT_MAX_FILES + 1), piece_length=1 << 22)
    start = time.perf_counter()
    _refused(data, K.TOO_MANY_FILES)
    assert time.perf_counter() - start < 30  # generous: only to catch a per-file pass


def test_attr_of_megabytes_is_read_without_a_loop_per_byte() -> None:
    attr = b"z" * 4_000_000 + b"xh" + b"z" * 4_000_000
    info = Info.from_bytes(_v1([_file(b"a", attr=attr)]))
    assert info.files[0].attributes == "xh"
    assert info.files[0].is_executable
    assert info.files[0].is_hidden
    assert not info.files[0].is_pad
    # the short path and the long one agree on order and meaning
    assert Info.from_bytes(_v1([_file(b"a", attr=b"hx")])).files[0].attributes == "hx"
    long = b"h" + b"?" * 40 + b"xhx"
    assert Info.from_bytes(_v1([_file(b"a", attr=long)])).files[0].attributes == "hx"


def test_thousands_of_trackers_web_seeds_and_nodes_are_capped() -> None:
    document: dict[bytes, Any] = {
        b"info": {b"name": b"x", b"piece length": 16384, b"length": 3, b"pieces": bytes(20)},
        b"announce-list": [[b"udp://127.0.0.1:%d" % (i % 65535 + 1)] for i in range(5_000)]
        + [[b"http://127.0.0.1/%d/%d" % (i, j) for j in range(3)] for i in range(2_000)],
        b"url-list": [b"http://127.0.0.1/s%d" % i for i in range(5_000)],
        b"httpseeds": [b"http://127.0.0.1/h%d" % i for i in range(5_000)],
        b"nodes": [[b"127.0.0.1", i % 65535 + 1] for i in range(5_000)],
    }
    torrent = Metainfo.from_bytes(encode(document))
    assert sum(len(tier) for tier in torrent.announce_list) == MAX_URLS
    assert len(torrent.url_list) == len(torrent.httpseeds) == len(torrent.nodes) == MAX_URLS
    assert torrent.announce_list[0] == ("udp://127.0.0.1:1",)  # the first ones are kept


def test_a_name_of_megabytes_becomes_one_short_component() -> None:
    name = b"\xe2\x80\xae" + b"n" * 5_000_000 + b".txt"  # a right-to-left override first
    data = encode({b"name": name, b"piece length": 16384, b"length": 3, b"pieces": bytes(20)})
    info = Info.from_bytes(data)
    assert info.files[0].path == (info.name,)
    assert len(info.name.encode()) <= 255
    assert info.name.startswith("n")


def test_a_v2_file_tree_nested_thousands_deep_is_refused() -> None:
    tree: dict[bytes, Any] = {b"f": {b"": {b"length": 1, b"pieces root": ROOT}}}
    for _ in range(5_000):
        tree = {b"d": tree}
    with pytest.raises(MetainfoError) as caught:
        Metainfo.from_bytes(encode({b"info": {**_info_of_v2(tree)}}))
    assert caught.value.kind in (K.INVALID_BENCODING, K.FILE_TREE_TOO_DEEP)
    _refused(_v2(_nest(150)), K.INVALID_BENCODING)  # deeper than the v2 decode bound


def _info_of_v2(tree: dict[bytes, Any]) -> dict[bytes, Any]:
    return {b"name": b"t", b"piece length": 16384, b"meta version": 2, b"file tree": tree}


def _nest(depth: int) -> dict[bytes, Any]:
    tree: dict[bytes, Any] = {b"f": {b"": {b"length": 1, b"pieces root": ROOT}}}
    for _ in range(depth):
        tree = {b"d": tree}
    return tree


def test_a_file_tree_just_over_the_depth_limit_is_refused() -> None:
    assert Info.from_bytes(_v2(_nest(98))).files[0].path[-1] == "f"
    _refused(_v2(_nest(101)), K.FILE_TREE_TOO_DEEP)


# --- sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("piece_length", "kind"),
    [(0, K.INVALID_PIECE_LENGTH), (-1, K.INVALID_PIECE_LENGTH), (2**40, K.INVALID_PIECE_LENGTH)],
)
def test_impossible_piece_lengths_are_refused(piece_length: int, kind: MetainfoErrorKind) -> None:
    data = encode({b"name": b"x", b"piece length": piece_length, b"length": 3, b"pieces": b""})
    _refused(data, kind)


def test_v1_accepts_odd_piece_lengths_but_v2_needs_a_power_of_two() -> None:
    data = encode({b"name": b"x", b"piece length": 30_000, b"length": 3, b"pieces": bytes(20)})
    assert Info.from_bytes(data).piece_length == 30_000
    one = encode({b"name": b"x", b"piece length": 1, b"length": 3, b"pieces": bytes(60)})
    assert Info.from_bytes(one).num_pieces == 3
    leaf = {b"f": {b"": {b"length": 1, b"pieces root": ROOT}}}
    for bad in (1, 8192, 20_000, 3 * 16384):
        _refused(_v2(leaf, piece_length=bad), K.INVALID_PIECE_LENGTH)


@pytest.mark.parametrize("length", [2**63, 2**62, -1])
def test_file_lengths_beyond_any_disk_are_refused(length: int) -> None:
    data = encode({b"name": b"x", b"piece length": 1 << 24, b"length": length, b"pieces": b""})
    _refused(data, K.INVALID_LENGTH)


def test_a_huge_pad_file_costs_nothing_but_its_refusal() -> None:
    files = [_file(b"a"), _file(b".pad", b"x", length=2**44 - 2**15, attr=b"p"), _file(b"b")]
    data = encode({b"name": b"t", b"piece length": 1 << 22, b"files": files, b"pieces": bytes(20)})
    _refused(data, K.TOO_MANY_PIECES)


def test_pad_files_off_piece_boundaries_are_only_zeros_in_the_piece_space() -> None:
    files = [_file(b"a", length=10), _file(b"p", length=7, attr=b"p"), _file(b"b", length=5)]
    info = Info.from_bytes(_v1(files))
    assert [entry.offset for entry in info.files] == [0, 10, 17]
    assert info.total_size == 15
    assert info.files[1].is_pad


def test_pieces_of_the_wrong_length_are_refused() -> None:
    for pieces in (b"", bytes(19), bytes(21), bytes(40)):
        data = encode({b"name": b"x", b"piece length": 16384, b"length": 3, b"pieces": pieces})
        _refused(data, K.INVALID_PIECES)


def test_a_hybrid_whose_two_file_lists_disagree_is_refused() -> None:
    tree = {b"f": {b"": {b"length": 100, b"pieces root": ROOT}}}
    for files in ([_file(b"f", length=200)], [_file(b"g", length=100)], []):
        info = {
            **_info_of_v2(tree),
            b"files": files or [_file(b"f", length=100), _file(b"g", length=1)],
            b"pieces": bytes(20),
        }
        _refused(encode(info), K.INCONSISTENT_FILES)


# --- paths ----------------------------------------------------------------------------

HOSTILE_COMPONENTS = [
    b"..",
    b".",
    b"",
    b"/etc/passwd",
    b"\\..\\..\\windows",
    b"C:",
    b"c:\\x",
    b"CON",
    b"lpt1.txt",
    b"a\x00b",
    b"\x1b[31mred",
    b"trailing. ",
    b"\xff\xfe",
    b"x" * 300,
]


@pytest.mark.parametrize("component", HOSTILE_COMPONENTS)
def test_hostile_path_components_become_one_safe_component_each(component: bytes) -> None:
    info = Info.from_bytes(_v1([_file(b"..", component, b"..", b"f")]))
    path = info.files[0].path
    assert path[0] == "t"
    assert len(path) == 5
    for part in path:
        assert part not in ("", ".", "..")
        assert not set(part) & set('/\\\x00:*?"<>|')
        assert all(ord(c) >= 0x20 for c in part)
        assert len(part.encode()) <= 255
        assert part.split(".")[0].lower() not in ("con", "lpt1")


def test_names_that_meet_on_a_case_insensitive_or_normalising_disk_are_made_distinct() -> None:
    files = [
        _file(b"Readme"),
        _file(b"README"),
        _file("\u00e9".encode()),  # é, NFC
        _file("e\u0301".encode()),  # é, NFD
        _file(b"dir", b"x"),
        _file(b"DIR", b"y"),
        _file(b"same"),
        _file(b"same"),
    ]
    paths = [entry.path for entry in Info.from_bytes(_v1(files)).files]
    folded = {tuple(part.casefold() for part in path) for path in paths}
    assert len(folded) == len(paths)
    assert paths[0] == ("t", "Readme")
    assert paths[6] == ("t", "same")


def test_a_file_that_is_also_a_directory_of_another_is_renamed() -> None:
    info = Info.from_bytes(_v1([_file(b"a"), _file(b"a", b"b"), _file(b"a", b"b", b"c")]))
    paths = [entry.path for entry in info.files]
    assert paths[2] == ("t", "a", "b", "c")
    leaves = set(paths)
    for path in paths:
        for depth in range(1, len(path)):
            assert path[:depth] not in leaves  # no file stands where a directory must


def test_hundreds_of_identical_paths_are_refused_not_renamed_forever() -> None:
    _refused(_v1([_file(b"a")] * 600), K.TOO_MANY_DUPLICATE_NAMES)


# --- symlinks (BEP 47) ----------------------------------------------------------------


def _targets(files: list[dict[bytes, Any]]) -> dict[str, str | None]:
    info = Info.from_bytes(_v1(files))
    return {
        "/".join(entry.path): None
        if entry.symlink_target is None
        else "/".join(entry.symlink_target)
        for entry in info.files
    }


def test_links_outside_the_root_or_absolute_point_at_themselves() -> None:
    targets = _targets(
        [
            _file(b"a"),
            _link(b"up", b"..", b"..", b"etc", b"passwd"),
            _link(b"abs", b"/etc"),
            _link(b"drive", b"C:", b"Windows"),
        ]
    )
    assert targets == {"t/a": None, "t/up": "t/up", "t/abs": "t/abs", "t/drive": "t/drive"}


def test_links_in_a_loop_or_chained_to_a_loop_point_at_themselves() -> None:
    targets = _targets(
        [
            _file(b"a"),
            _link(b"p", b"q"),
            _link(b"q", b"p"),
            _link(b"x", b"p"),  # into the loop
            _link(b"r", b"a"),
            _link(b"s", b"r"),  # a link to a link to a file: fine
            _link(b"self", b"self"),
            _link(b"to-self", b"self"),
        ]
    )
    assert targets == {
        "t/a": None,
        "t/p": "t/p",
        "t/q": "t/q",
        "t/x": "t/x",
        "t/r": "t/a",
        "t/s": "t/r",
        "t/self": "t/self",
        "t/to-self": "t/to-self",
    }


def test_a_link_to_a_directory_holding_it_points_at_itself() -> None:
    files = [_file(b"d", b"f"), {b"attr": b"l", b"path": [b"d", b"up"], b"symlink path": [b"d"]}]
    files.append({b"attr": b"l", b"path": [b"root"], b"symlink path": [b"d"]})  # fine
    assert _targets(files) == {"t/d/f": None, "t/d/up": "t/d/up", "t/root": "t/d"}


def test_a_renamed_self_link_still_points_at_itself_not_at_what_took_its_name() -> None:
    # "a" is a directory, so the link "a" (to nothing in the torrent) is renamed "a.1";
    # its self-target must follow, or it would become a link to the directory "a".
    files = [_file(b"a", b"f"), _link(b"a", b"nothing")]
    assert _targets(files) == {"t/a/f": None, "t/a.1": "t/a.1"}


def test_long_link_chains_are_bounded() -> None:
    files = [_file(b"a"), _link(b"h0", b"a")]
    files += [_link(b"h%d" % i, b"h%d" % (i - 1)) for i in range(1, 40)]
    targets = _targets(files)
    # h31 is 32 links from a file, the most a disk follows (macOS); h32 one more
    assert targets["t/h0"] == "t/a"
    assert targets["t/h31"] == "t/h30"
    assert targets["t/h32"] == "t/h32"
    assert targets["t/h39"] == "t/h39"


def test_break_link_cycles_is_linear_in_links() -> None:
    count = 50_000
    paths = [("t", f"l{i}") for i in range(count)]
    resolved: dict[int, tuple[str, ...]] = {i: ("t", f"l{(i + 1) % count}") for i in range(count)}
    start = time.perf_counter()
    break_link_cycles(paths, resolved, DEFAULT_SYMLINK_HOPS)
    assert time.perf_counter() - start < 10
    assert all(resolved[i] == paths[i] for i in range(count))


def test_a_single_file_symlink_torrent_holds_no_data_and_is_refused() -> None:
    data = encode(
        {
            b"name": b"x",
            b"piece length": 16384,
            b"attr": b"l",
            b"symlink path": [b"/etc/passwd"],
            b"pieces": b"",
        }
    )
    _refused(data, K.INVALID_LENGTH)


# --- how much decoding may allocate ---------------------------------------------------


@pytest.mark.parametrize("unit", [b"le", b"de", b"i7e", b"1:a", b"0:"])
def test_millions_of_tiny_values_are_refused_before_decoding(unit: bytes) -> None:
    junk = unit * 120_000
    info = encode({b"name": b"x", b"piece length": 16384, b"length": 3, b"pieces": bytes(20)})
    data = b"d1:al" + junk + b"e4:info" + info + b"e"
    with pytest.raises(MetainfoError) as caught:
        check_value_count(data, 100_000)
    assert caught.value.kind is K.TOO_MANY_VALUES
    assert "more than 100000 bencoded values" in str(caught.value)
    assert K.TOO_MANY_VALUES.libtorrent == "limit_exceeded"
    check_value_count(data, 130_000)  # exactly counted: 120,000 and a few


def test_bep9_metadata_is_bounded_by_the_default_value_count() -> None:
    data = b"d4:junkl" + b"le" * DEFAULT_MAX_VALUES + b"e4:name1:xe"
    with pytest.raises(MetainfoError, match="too_many_values"):
        Info.from_bytes(data)


def test_the_value_count_passes_real_torrents_at_once_and_ignores_trailing_bytes() -> None:
    # Long strings full of "e" and ":" bytes only send the check to its exact count.
    pieces = b"e:" * 100_000
    info = encode({b"name": b"x", b"piece length": 16384, b"length": 3, b"pieces": pieces})
    check_value_count(info, 10)
    document = b"d4:info" + info + b"e"
    check_value_count(document + b"le" * 100, 11)  # after the dictionary: not read
    for malformed in (b"i12", b"5:ab", b"x", b"-1:", b"99999999999999999999999:"):
        check_value_count(malformed * 20, 3)  # left for the decoder to refuse


def test_forty_megabytes_of_empty_lists_are_refused_without_decoding_them() -> None:
    data = b"d1:al" + b"le" * 20_000_000 + b"e4:infod4:name1:xee"  # 40 MB
    start = time.perf_counter()
    with pytest.raises(MetainfoError, match="too_many_values"):
        Metainfo.from_bytes(data)
    assert time.perf_counter() - start < 30  # generous: decoding it took 10 s and 1.6 GB


# --- v2 piece layers ------------------------------------------------------------------


def _v2_torrent(length: int, layers: Any) -> bytes:
    root = pieces_root(b"b" * length)
    tree = {b"f": {b"": {b"length": length, b"pieces root": root}}}
    document: dict[bytes, Any] = {b"info": _info_of_v2(tree)}
    if layers is not None:
        document[b"piece layers"] = layers(root) if callable(layers) else layers
    return encode(document)


def test_piece_layers_that_are_wrong_unknown_or_for_a_one_piece_file_are_refused() -> None:
    cases = [
        _v2_torrent(40_000, lambda root: {root: bytes(96)}),  # three wrong hashes
        _v2_torrent(40_000, lambda root: {root: bytes(95)}),  # not whole hashes
        _v2_torrent(40_000, lambda root: {root: [b"x"]}),  # not a string
        _v2_torrent(40_000, {b"\x07" * 32: bytes(96)}),  # no file has that root
        _v2_torrent(100, lambda root: {root: bytes(32)}),  # one piece: no layer at all
        _v2_torrent(40_000, [b"not a dictionary"]),
    ]
    for data in cases:
        with pytest.raises(MetainfoError) as caught:
            Metainfo.from_bytes(data)
        assert caught.value.kind is K.INVALID_PIECE_LAYER, caught.value


def test_missing_piece_layers_are_left_to_fetch_from_peers() -> None:
    torrent = Metainfo.from_bytes(_v2_torrent(40_000, None))
    assert torrent.piece_layer(0) is None
    assert Metainfo.from_bytes(_v2_torrent(40_000, {})).piece_layers == {}
