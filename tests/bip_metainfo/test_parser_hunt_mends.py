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

Second hunt (h1):

- A ``so`` entry past libtorrent's bound on file indices (10,000) is skipped as libtorrent
  skips it: ``so=0-99999999`` (74 characters) made a client expanding the selection build
  100 million ints.
- Every parameter name may carry a ``.<number>`` suffix (``xt.1``, ``ws.2``), as
  libtorrent reads it, not only ``tr.N``.
- Duplicate web seeds and HTTP seeds cost one escape each, and only so many entries are
  looked at: 1.4 million copies of one URL took 5 s to parse.
- A symlink to a file renamed as a duplicate follows the file to its new name, and a link
  that leads to its own directory on a case-insensitive disk is broken like any loop.
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
    InfoHash,
    MagnetError,
    MagnetLink,
    Metainfo,
    MetainfoError,
    MetainfoErrorKind,
    MutableTorrentLink,
    block_hashes,
    break_link_cycles,
    create_torrent,
    piece_layer,
    pieces_root,
    resolve_symlinks,
)
from bip_metainfo import _metainfo as metainfo_module
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


# --- h1: select-only indices bounded as libtorrent bounds them ---------------------------

V1_HEX = "cd" * 20
V2_HEX = "1220" + "ab" * 32
BASE = f"magnet:?xt=urn:btih:{V1_HEX}"
HYBRID = InfoHash(v1=bytes.fromhex(V1_HEX), v2=bytes.fromhex(V2_HEX[4:]))


@pytest.mark.parametrize(
    ("value", "ranges"),
    [
        # What libtorrent 2.1.1's parse_magnet_uri makes of each (its max_index is 10000);
        # () is select-only with no file (review r1: libtorrent downloads nothing).
        ("0-99999999", ()),
        ("5-10000", ((5, 10_000),)),
        ("9999-10001", ()),
        ("10001", ()),
        ("3,20000,4", ((3, 4),)),
        ("10000", ((10_000, 10_000),)),
        ("00010000", ((10_000, 10_000),)),
        ("0000000000003", ((3, 3),)),  # leading zeros read as atoi reads them
        ("2147483648-2147483650", ()),
    ],
)
def test_select_only_is_bounded_as_libtorrent_bounds_it(
    value: str, ranges: tuple[tuple[int, int], ...] | None
) -> None:
    link = MagnetLink.parse(f"{BASE}&so={value}")
    assert link.select_only == ranges
    assert MagnetLink.MAX_FILE_INDEX == 10_000
    # whatever a link says, a client expanding the selection builds at most 10,001 ints
    assert sum(last - first + 1 for first, last in link.select_only or ()) <= 10_001


def test_a_selection_past_the_bound_cannot_be_made_or_written() -> None:
    with pytest.raises(MagnetError) as caught:
        MagnetLink.from_info_hash(HYBRID, select_only=[10_001])
    assert caught.value.parameter == "so"
    info: dict[bytes, Any] = {
        b"name": b"x",
        b"piece length": PIECE,
        b"length": 5,
        b"pieces": bytes(20),
    }
    torrent = Metainfo.from_bytes(encode({b"info": info}))
    assert torrent.magnet(select_only=[(0, 10_000)]).select_only == ((0, 10_000),)
    with pytest.raises(MagnetError):
        torrent.magnet(select_only=[(0, 10_001)])


# --- h1: numbered parameter names --------------------------------------------------------


@pytest.mark.parametrize(
    ("numbered", "plain"),
    [
        (f"magnet:?xt.1=urn:btih:{V1_HEX}", f"magnet:?xt=urn:btih:{V1_HEX}"),
        (
            f"magnet:?xt.1=urn:btih:{V1_HEX}&xt.2=urn:btmh:{V2_HEX}",
            f"magnet:?xt=urn:btih:{V1_HEX}&xt=urn:btmh:{V2_HEX}",
        ),
        (
            f"magnet:?xt=urn:btmh:{V2_HEX}&XT.1=urn:btih:{V1_HEX}",
            f"magnet:?xt=urn:btmh:{V2_HEX}&xt=urn:btih:{V1_HEX}",
        ),
        (
            f"{BASE}&ws.1=http%3A%2F%2Fseed.example%2F&dn.1=name&as.2=http://a&xs.3=http://x"
            "&kt.1=k&xl.1=5&dht.7=h:1&so.0=1&tr.01=udp://t:1&xt.9=urn:ed2k:abc",
            f"{BASE}&ws=http%3A%2F%2Fseed.example%2F&dn=name&as=http://a&xs=http://x"
            "&kt=k&xl=5&dht=h:1&so=1&tr=udp://t:1&xt=urn:ed2k:abc",
        ),
        (f"{BASE}&dn.=name", f"{BASE}&dn=name"),  # libtorrent strips an empty number too
    ],
)
def test_a_number_after_any_parameter_name_is_ignored(numbered: str, plain: str) -> None:
    link = MagnetLink.parse(numbered, strict=True)
    assert link == MagnetLink.parse(plain, strict=True)
    assert MagnetLink.parse(str(link), strict=True) == link


@pytest.mark.parametrize("name", ["x.pe.1", "tr.a", "xt.1.2", "x.1", "dn.1x", "dn.\u0661"])
def test_names_libtorrent_does_not_strip_stay_extras(name: str) -> None:
    link = MagnetLink.parse(f"{BASE}&{name}=v")
    assert link.extra == ((name, "v"),)
    assert MagnetLink.parse(str(link), strict=True) == link


@pytest.mark.parametrize("name", ["xt.1", "WS.2", "dn.", "so.10", "x.pe", "s.1"])
def test_an_extra_read_as_a_known_parameter_cannot_be_made(name: str) -> None:
    if name == "s.1":  # the BEP 46 salt is no MagnetLink field: an extra there
        assert MagnetLink(HYBRID, extra=((name, "ab"),)).extra == ((name, "ab"),)
        return
    with pytest.raises(MagnetError) as caught:
        MagnetLink(HYBRID, extra=((name, "v"),))
    assert caught.value.parameter == name


def test_a_mutable_link_reads_numbered_names_too() -> None:
    key = "8543d3e6115f0f98c944077a4493dcd543e49c739fd998550a1f614ab36ed63e"
    link = MutableTorrentLink.parse(f"magnet:?xs.1=urn:btpk:{key}&s.2=6e&dn.1=Nightly&so.1=2")
    assert (link.public_key.hex(), link.salt, link.display_name) == (key, b"n", "Nightly")
    assert link.select_only == ((2, 2),)
    assert MutableTorrentLink.parse(str(link)) == link


# --- h1: web seed lists bounded in work, not only in what is kept ------------------------


def _count_escapes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    escape = metainfo_module._escape_url

    def counting(url: str) -> str | None:
        seen.append(url)
        return escape(url)

    monkeypatch.setattr(metainfo_module, "_escape_url", counting)
    return seen


@pytest.mark.parametrize("key", [b"url-list", b"httpseeds"])
def test_duplicate_seed_urls_are_escaped_once(monkeypatch: pytest.MonkeyPatch, key: bytes) -> None:
    seen = _count_escapes(monkeypatch)
    info: dict[bytes, Any] = {
        b"name": b"A",
        b"piece length": PIECE,
        b"length": 5,
        b"pieces": bytes(20),
    }
    urls = [b"a://b", b"", b"http://h/a b"] * 20_000
    torrent = Metainfo.from_bytes(encode({b"info": info, key: urls}))
    field = torrent.url_list if key == b"url-list" else torrent.httpseeds
    assert field == ("a://b", "http://h/a%20b")
    assert len(seen) == 2


def test_only_so_many_seed_entries_are_looked_at(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _count_escapes(monkeypatch)
    info: dict[bytes, Any] = {
        b"name": b"A",
        b"piece length": PIECE,
        b"length": 5,
        b"pieces": bytes(20),
    }
    # distinct entries that are no URL (an unclosed IPv6 host): none is ever kept
    urls = [b"http://[%d" % i for i in range(50_000)] + [b"http://late/"]
    torrent = Metainfo.from_bytes(encode({b"info": info, b"url-list": urls}))
    assert torrent.url_list == ()
    assert len(seen) <= 10 * metainfo_module.MAX_URLS
    # a normal list is read whole, in order, each URL once
    normal = [b"http://m%d/ x" % (i % 30) for i in range(90)]
    torrent = Metainfo.from_bytes(encode({b"info": info, b"url-list": normal}))
    assert torrent.url_list == tuple(f"http://m{i}/%20x" for i in range(30))


# --- h1: symlinks follow the renamed files they name -------------------------------------


def _link(path: list[bytes], target: list[bytes]) -> dict[bytes, Any]:
    return {b"attr": b"l", b"length": 0, b"path": path, b"symlink path": target}


def _links(files: list[dict[bytes, Any]]) -> dict[str, str | None]:
    total = sum(entry[b"length"] for entry in files)
    info: dict[bytes, Any] = {
        b"name": b"t",
        b"piece length": PIECE,
        b"files": files,
        b"pieces": bytes(20 * -(-total // PIECE)),
    }
    parsed = Info.from_bytes(encode(info))
    paths = {entry.path for entry in parsed.files}
    directories = {
        entry.path[:depth] for entry in parsed.files for depth in range(1, len(entry.path))
    }
    links = {entry.path for entry in parsed.files if entry.symlink_target}
    for entry in parsed.files:
        target = entry.symlink_target
        # every target names something of the torrent, or passes through a link that does
        assert (
            target is None
            or target in paths | directories
            or any(target[:depth] in links for depth in range(1, len(target)))
        ), entry
    return {
        "/".join(entry.path): None
        if entry.symlink_target is None
        else "/".join(entry.symlink_target)
        for entry in parsed.files
    }


def test_a_link_to_a_renamed_file_follows_it() -> None:
    files = [_file(b"a", 5), _file(b"A", 5), _link([b"L"], [b"A"])]
    assert _links(files) == {"t/a": None, "t/A.1": None, "t/L": "t/A.1"}


def test_a_link_to_a_file_renamed_for_a_directory_is_no_loop() -> None:
    files = [
        {b"length": 5, b"path": [b"d", b"x"]},
        _file(b"D", 5),
        _link([b"d", b"up"], [b"D"]),
    ]
    assert _links(files) == {"t/d/x": None, "t/D.1": None, "t/d/up": "t/D.1"}


def test_a_link_to_a_renamed_link_follows_it() -> None:
    files = [_file(b"b", 5), _link([b"B"], [b"b"]), _link([b"C"], [b"B"])]
    assert _links(files) == {"t/b": None, "t/B.1": "t/b", "t/C": "t/B.1"}


def test_a_link_to_its_own_directory_in_other_case_is_a_loop() -> None:
    # on a case-insensitive disk t/D is t/d, the link's own directory
    files = [
        {b"length": 5, b"path": [b"d", b"x"]},
        {b"length": 5, b"path": [b"D", b"y"]},
        _link([b"d", b"up"], [b"D"]),
    ]
    assert _links(files)["t/d/up"] == "t/d/up"


def test_a_link_to_a_path_a_file_keeps_is_unchanged() -> None:
    # the first of two equal paths keeps it: a link naming it names that file
    files = [_file(b"A", 5), _file(b"A", 5), _link([b"L"], [b"A"]), _link([b"M"], [b"nothing"])]
    assert _links(files) == {"t/A": None, "t/A.1": None, "t/L": "t/A", "t/M": "t/M"}


def test_a_renamed_self_link_still_points_at_itself() -> None:
    files = [_file(b"A", 5), _link([b"a"], [b"nothing"])]
    assert _links(files) == {"t/A": None, "t/a.1": "t/a.1"}


def test_a_link_through_a_renamed_link_follows_it() -> None:
    # t/L -> t/Cur/f passes through the link t/Cur -> t/dir, which "cur" renames
    files = [
        {b"length": 5, b"path": [b"dir", b"f"]},
        _file(b"cur", 5),
        _link([b"Cur"], [b"dir"]),
        _link([b"L"], [b"Cur", b"f"]),
    ]
    assert _links(files) == {
        "t/dir/f": None,
        "t/cur": None,
        "t/Cur.1": "t/dir",
        "t/L": "t/Cur.1/f",
    }


# --- Review r1: a present so whose entries are all unusable selects no file ---------------

# What libtorrent 2.1.1's parse_magnet_uri makes of each ``so`` (checked below against the
# wheel when it is installed): a value of digits, ',' and '-' switches to select-only even
# when no entry survives (so nothing is downloaded); any other character drops it whole.
SO_SHAPES: list[tuple[str, tuple[tuple[int, int], ...] | None]] = [
    ("&so=", ()),
    ("&so", ()),
    ("&so=12000", ()),
    ("&so=12000-12002", ()),
    ("&so=0-99999999", ()),
    ("&so=abc", None),
    ("&so=12000,3", ((3, 3),)),
    ("&so=,", ()),
    ("&so=5-3", ()),
    ("&so=-", ()),
    ("&so=12000&so=3", ((3, 3),)),
    ("&so=abc&so=", ()),
    ("&SO.1=", ()),
]


@pytest.mark.parametrize(("tail", "ranges"), SO_SHAPES)
def test_a_so_with_no_usable_entry_selects_no_file(
    tail: str, ranges: tuple[tuple[int, int], ...] | None
) -> None:
    link = MagnetLink.parse(BASE + tail)
    assert link.select_only == ranges
    assert MagnetLink.parse(str(link)) == link  # "so=" is written, so nothing stays nothing
    mutable = MutableTorrentLink.parse(f"magnet:?xs=urn:btpk:{'ab' * 32}{tail}")
    assert mutable.select_only == ranges
    assert MutableTorrentLink.parse(str(mutable)) == mutable


def test_so_shapes_match_libtorrent() -> None:
    lt = pytest.importorskip("libtorrent")
    for tail, ranges in SO_SHAPES:
        params = lt.parse_magnet_uri(BASE + tail)
        select_only = bool(params.flags & lt.torrent_flags.default_dont_download)
        chosen = {index for index, priority in enumerate(params.file_priorities) if priority}
        expected = None if ranges is None else {i for a, b in ranges for i in range(a, b + 1)}
        assert select_only == (ranges is not None), tail
        assert chosen == (expected or set()), tail


def test_an_empty_so_is_no_error_when_strict() -> None:
    # empty entries are fine to libtorrent; an entry it skips is still an error when strict
    assert MagnetLink.parse(f"{BASE}&so=,,", strict=True).select_only == ()
    with pytest.raises(MagnetError):
        MagnetLink.parse(f"{BASE}&so=12000", strict=True)


def test_an_empty_selection_is_made_and_written() -> None:
    link = MagnetLink.from_info_hash(HYBRID, select_only=[])
    assert link.select_only == ()
    assert str(link).endswith("&so=")
    assert not link.selects(0)
    assert MagnetLink(HYBRID, select_only=()).select_only == ()
    info: dict[bytes, Any] = {b"name": b"x", b"piece length": PIECE, b"length": 5}
    info[b"pieces"] = bytes(20)
    torrent = Metainfo.from_bytes(encode({b"info": info}))
    assert torrent.magnet(select_only=()).select_only == ()
    assert torrent.magnet().select_only is None


# --- Review r1: loops through links to directories ---------------------------------------


def _dir_file(path: bytes) -> dict[bytes, Any]:
    return {b"length": 5, b"path": path.split(b"/")}


def _dir_link(path: bytes, target: bytes) -> dict[bytes, Any]:
    return _link(path.split(b"/"), target.split(b"/"))


def test_a_link_to_a_link_to_its_own_directory_is_a_loop() -> None:
    files = [_dir_file(b"d/x"), _dir_link(b"L", b"d"), _dir_link(b"d/up", b"L")]
    assert _links(files) == {"t/d/x": None, "t/L": "t/d", "t/d/up": "t/d/up"}


def test_a_link_into_its_own_directory_through_a_link_is_a_loop() -> None:
    files = [_dir_file(b"d/e/x"), _dir_link(b"L", b"d"), _dir_link(b"d/e/up", b"L/e")]
    assert _links(files) == {"t/d/e/x": None, "t/L": "t/d", "t/d/e/up": "t/d/e/up"}


def test_a_link_through_a_link_to_its_own_directory_in_other_case_is_a_loop() -> None:
    files = [
        _dir_file(b"d/e/x"),
        _dir_file(b"d/E/z"),
        _dir_link(b"L", b"d"),
        _dir_link(b"d/e/up", b"L/E"),
    ]
    assert _links(files)["t/d/e/up"] == "t/d/e/up"
    files = [
        _dir_file(b"other/f"),
        _dir_file(b"dir/y/x"),
        _dir_link(b"dir/Y", b"other"),
        _dir_link(b"X", b"dir"),
        _dir_link(b"dir/y/L", b"X/Y"),
    ]
    assert _links(files)["t/dir/y/L"] == "t/dir/y/L"


def test_links_leading_into_each_others_directories_are_a_loop() -> None:
    # a/L -> b, b/M -> a: neither is its own ancestor, but a/L/M/L/M/... never ends
    files = [_dir_file(b"a/x"), _dir_file(b"b/y"), _dir_link(b"a/L", b"b"), _dir_link(b"b/M", b"a")]
    assert _links(files) == {"t/a/x": None, "t/b/y": None, "t/a/L": "t/a/L", "t/b/M": "t/b/M"}


def test_a_link_through_a_file_that_took_a_links_name_points_at_itself() -> None:
    # the link B -> dir is renamed B.1 for the file B: B/f no longer exists
    files = [_dir_file(b"dir/f"), _dir_file(b"B"), _dir_link(b"B", b"dir"), _dir_link(b"M", b"B/f")]
    assert _links(files) == {"t/dir/f": None, "t/B": None, "t/B.1": "t/dir", "t/M": "t/M"}


def test_honest_links_through_links_to_directories_are_kept() -> None:
    # a macOS framework, and links to a sibling directory and through it
    files = [
        _dir_file(b"F.framework/Versions/A/Headers/h"),
        _dir_file(b"F.framework/Versions/A/F"),
        _dir_link(b"F.framework/Versions/Current", b"A"),
        _dir_link(b"F.framework/Headers", b"F.framework/Versions/Current/Headers"),
        _dir_link(b"F.framework/F", b"F.framework/Versions/Current/F"),
        _dir_link(b"lib/share", b"F.framework/Headers"),
        _dir_link(b"latest", b"lib"),
        _dir_link(b"h", b"latest/share/h"),
    ]
    assert _links(files) == {
        "t/F.framework/Versions/A/Headers/h": None,
        "t/F.framework/Versions/A/F": None,
        "t/F.framework/Versions/Current": "t/F.framework/Versions/A",
        "t/F.framework/Headers": "t/F.framework/Versions/Current/Headers",
        "t/F.framework/F": "t/F.framework/Versions/Current/F",
        "t/lib/share": "t/F.framework/Headers",
        "t/latest": "t/lib",
        "t/h": "t/latest/share/h",
    }


# --- Review r7: the loop check counts links as the disk does, within its limits ----------


def test_a_link_fine_on_disk_is_kept_however_many_directory_links_it_passes() -> None:
    # h resolves through 12 links (nested framework links, sdk, cur, build/*): far below
    # the 32 that macOS (and 40 that Linux) follow, so it opens on disk and must be kept.
    o, i = "O.framework", "O.framework/Versions/A/Frameworks/I.framework"
    pairs = [
        (f"{o}/Versions/Current", f"{o}/Versions/A"),
        (f"{o}/Frameworks", f"{o}/Versions/Current/Frameworks"),
        (f"{i}/Versions/Current", f"{i}/Versions/A"),
        (f"{i}/Headers", f"{i}/Versions/Current/Headers"),
        ("sdk/inc", f"{o}/Frameworks/I.framework/Headers"),
        ("cur", "sdk"),
        ("build/inc", "cur/inc"),
        ("build/h", "build/inc/i.h"),
        ("h", "build/h"),
    ]
    files = [
        _dir_file(f"{o}/Versions/A/O".encode()),
        _dir_file(f"{i}/Versions/A/Headers/i.h".encode()),
    ]
    files += [_dir_file(b"sdk/x")] + [_dir_link(p.encode(), t.encode()) for p, t in pairs]
    links = _links(files)
    assert all(links[f"t/{path}"] == f"t/{target}" for path, target in pairs)


def _chain(length: int) -> tuple[list[tuple[str, ...]], dict[int, tuple[str, ...]]]:
    """l1 -> l2 -> ... -> l<length> -> f, as resolve_symlinks keeps it."""
    paths: list[tuple[str, ...]] = [("f",), *((f"l{k}",) for k in range(1, length + 1))]
    targets = {k: (f"l{k + 1}",) if k < length else ("f",) for k in range(1, length + 1)}
    return paths, resolve_symlinks(paths, targets, max_hops=length)


def test_break_link_cycles_follows_as_many_links_as_the_disk_does() -> None:
    paths, resolved = _chain(32)  # l1 opens through 32 links: fine on macOS and Linux
    break_link_cycles(paths, resolved)
    assert not [k for k, target in resolved.items() if target == paths[k]]


def test_only_the_link_too_far_from_its_end_is_cut_not_the_links_after_it() -> None:
    # l1 needs 33 links, one more than the disk follows; l2..l33 are within the limit
    # even though each was first met on l1's way, with less budget left.
    paths, resolved = _chain(33)
    break_link_cycles(paths, resolved)
    assert [k for k, target in resolved.items() if target == paths[k]] == [1]
    paths, resolved = _chain(9)
    break_link_cycles(paths, resolved, max_hops=8)
    assert [k for k, target in resolved.items() if target == paths[k]] == [1]


def test_break_link_cycles_follows_a_long_chain_without_recursion() -> None:
    # any budget: the chain is followed with a stack of its own, not Python's
    paths, resolved = _chain(3000)
    break_link_cycles(paths, resolved, max_hops=5000)
    assert not [k for k, target in resolved.items() if target == paths[k]]
    paths, resolved = _chain(3000)
    break_link_cycles(paths, resolved, max_hops=2990)
    assert [k for k, target in resolved.items() if target == paths[k]] == list(range(1, 11))
