"""Torrents made by real third-party software load in bip_metainfo with the same meaning.

libtorrent 2.1.1 makes v1, v2 and hybrid torrents of a single file and of a directory (nested
folders, an empty file, names with spaces and non-ASCII letters, sizes that are no multiple of the
piece length, an executable, a symlink); mktorrent 1.1 and transmission-create 3.00 make v1
torrents. Each is read by `Metainfo` and compared with libtorrent's own reading of the same bytes
(info-hashes, files, pieces, piece layers, trackers, web seeds) and with hashes computed here
with hashlib from the content on disk (see _torrents.py, which does not use bip).

Everything stays in tmp_path; these tools do no networking, and the tracker URLs point at
127.0.0.1 ports nobody listens on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from bip_metainfo import FileEntry, MagnetLink, Metainfo

from ._helpers import require_client
from ._torrents import (
    ContentFile,
    bdecode,
    info_bytes,
    run_tool,
    v1_piece_hashes,
    v2_file_hashes,
    write_content,
)

if TYPE_CHECKING:
    import libtorrent as lt

pytestmark = pytest.mark.interop

KIB = 1024

# --- test content ----------------------------------------------------------------------------

DIR_NAME = "Tørrent dir ✓"
DIR_FILES = (
    ContentFile(".hidden file", 3_000),
    ContentFile("Zeta upper.txt", 1_000),
    ContentFile("a/empty", 0),
    ContentFile("a/tiny.txt", 5),
    ContentFile("big.bin", 200_003),
    ContentFile("sub dir/exactly 64 KiB", 64 * KIB),
    ContentFile("sub dir/ünï cødé/file one.bin", 70_000),
    ContentFile("tools/run me.sh", 40_000, executable=True),
)
SYMLINK = "sub dir/link to big"  # libtorrent content only: -> ../big.bin
SINGLE = ContentFile("single ünï file.bin", 150_001)

# --- optional fields -------------------------------------------------------------------------

TRACKER_TIERS = (
    ("udp://127.0.0.1:6969/announce",),
    ("http://127.0.0.1:6970/announce", "udp://127.0.0.1:6971/announce"),
)
WEB_SEEDS = ("http://127.0.0.1:8000/web seeds", "http://127.0.0.1:8001/x")
COMMENT = "a comment, ünï ✓"
CREATOR = "bip interop tests"
CREATION_DATE = 1_700_000_000
NODE = ("127.0.0.1", 6881)


def escaped_web_seeds(seeds: Sequence[str], *, directory: bool) -> tuple[str, ...]:
    """Web seeds as BEP 19 readers (libtorrent, bip) present them: spaces escaped, and a
    multi-file torrent's seed names a directory, so it ends in '/'."""
    return tuple(
        seed.replace(" ", "%20") + ("/" if directory and not seed.endswith("/") else "")
        for seed in seeds
    )


# --- libtorrent ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LtCase:
    kind: str  # "file" or "dir"
    version: str  # "v1", "v2" or "hybrid"
    piece_length: int

    @property
    def private(self) -> bool:
        return self.piece_length == 16 * KIB

    @property
    def keep_symlinks(self) -> bool:
        """64 KiB directory torrents keep the symlink as a BEP 47 link; 16 KiB ones follow it."""
        return self.kind == "dir" and self.piece_length == 64 * KIB

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.version}-{self.piece_length // KIB}k"


LT_CASES = [
    LtCase(kind, version, piece_length)
    for kind in ("file", "dir")
    for version in ("v1", "v2", "hybrid")
    for piece_length in (16 * KIB, 64 * KIB)
]


@dataclass(frozen=True)
class LtTorrent:
    case: LtCase
    data: bytes
    base: Path  # the directory given to set_piece_hashes: file paths are relative to it
    ours: Metainfo
    atp: lt.add_torrent_params
    ti: lt.torrent_info


def make_lt_torrent(tmp_path: Path, case: LtCase) -> LtTorrent:
    """Write the content, have libtorrent make a torrent of it, and load it in both readers."""
    require_client("libtorrent")
    import libtorrent as lt

    base = tmp_path / "content"
    if case.kind == "file":
        write_content(base, [SINGLE])
        target = base / SINGLE.path
    else:
        write_content(base / DIR_NAME, DIR_FILES, symlinks={SYMLINK: "../big.bin"})
        target = base / DIR_NAME

    flags = {"v1": lt.create_torrent.v1_only, "v2": lt.create_torrent.v2_only, "hybrid": 0}
    list_flags = lt.create_torrent.symlinks if case.keep_symlinks else 0
    # The two-argument list_files(path, flags) form is taken for (path, predicate) by the
    # bindings, so give a predicate.
    entries = lt.list_files(str(target), lambda _path: True, list_flags)
    ct = lt.create_torrent(entries, case.piece_length, flags[case.version] | list_flags)
    for tier, urls in enumerate(TRACKER_TIERS):
        for url in urls:
            ct.add_tracker(url, tier)
    for seed in WEB_SEEDS:
        ct.add_url_seed(seed)
    ct.add_node(*NODE)
    ct.set_comment(COMMENT)
    ct.set_creator(CREATOR)
    ct.set_creation_date(CREATION_DATE)
    ct.set_priv(case.private)
    lt.set_piece_hashes(ct, str(base))
    data = lt.bencode(ct.generate())  # generate_buf() fails on non-ASCII names in 2.1.1

    path = tmp_path / "libtorrent.torrent"
    path.write_bytes(data)
    ours = Metainfo.from_file(path)
    assert Metainfo.from_bytes(data).raw == ours.raw == data
    atp = lt.load_torrent_buffer(data)
    assert atp.ti is not None
    return LtTorrent(case, data, base, ours, atp, atp.ti)


@pytest.fixture(params=LT_CASES, ids=lambda case: case.id)
def lt_torrent(request: pytest.FixtureRequest, tmp_path: Path) -> LtTorrent:
    case: LtCase = request.param
    return make_lt_torrent(tmp_path, case)


def file_content(base: Path, entry: FileEntry) -> bytes:
    """The bytes a file contributes to the piece space: zeros for a pad file, nothing for a
    symlink, else the file on disk (its path is relative to the directory that holds the
    torrent's content)."""
    if entry.is_pad:
        return bytes(entry.length)
    if entry.is_symlink:
        return b""
    data = base.joinpath(*entry.path).read_bytes()
    assert len(data) == entry.length, entry
    return data


def lt_hash(value: lt.sha1_hash | lt.sha256_hash) -> bytes | None:
    return None if value.is_all_zeros() else value.to_bytes()


def test_libtorrent_info_hashes(lt_torrent: LtTorrent) -> None:
    ours, ti, version = lt_torrent.ours, lt_torrent.ti, lt_torrent.case.version
    raw = info_bytes(lt_torrent.data)
    assert ours.info.raw == raw
    assert ours.info.to_bytes() == raw

    hashes = ti.info_hashes()
    assert hashes.has_v1() == (version != "v2")
    assert hashes.has_v2() == (version != "v1")
    expected_v1 = hashlib.sha1(raw).digest() if version != "v2" else None
    expected_v2 = hashlib.sha256(raw).digest() if version != "v1" else None
    assert (lt_hash(hashes.v1), lt_hash(hashes.v2)) == (expected_v1, expected_v2)
    assert (ours.info.info_hash.v1, ours.info.info_hash.v2) == (expected_v1, expected_v2)

    assert ours.info.is_v1 == (version != "v2")
    assert ours.info.is_v2 == (version != "v1")
    assert ours.info.is_hybrid == (version == "hybrid")
    assert (
        ours.info.name == ti.name() == (DIR_NAME if lt_torrent.case.kind == "dir" else SINGLE.path)
    )
    # libtorrent's total_size() counts pad files, bip's total_size only real data.
    assert ours.info.geometry.total_size == ti.total_size()
    fs = ti.layout()
    assert ours.info.total_size == sum(
        fs.file_size(i) for i in range(fs.num_files()) if not fs.file_flags(i) & fs.flag_pad_file
    )


def expected_files(case: LtCase) -> list[tuple[tuple[str, ...], int]]:
    """The real (non-pad) files libtorrent was given, as sorted (path, size) pairs."""
    if case.kind == "file":
        return [((SINGLE.path,), SINGLE.size)]
    files = [((DIR_NAME, *entry.parts), entry.size) for entry in DIR_FILES]
    link_size = 0 if case.keep_symlinks else 200_003
    files.append(((DIR_NAME, *SYMLINK.split("/")), link_size))
    return sorted(files)


def test_libtorrent_file_layout(lt_torrent: LtTorrent) -> None:
    """Every file's size, offset, flags, pieces root and symlink target, in libtorrent's order,
    and the path of every real file (pad file paths are checked by the next test)."""
    import libtorrent as lt

    ours, case = lt_torrent.ours, lt_torrent.case
    fs = lt_torrent.ti.layout()
    flag = lt.file_storage

    def lt_row(i: int) -> tuple[object, ...]:
        flags = fs.file_flags(i)
        pad = bool(flags & flag.flag_pad_file)
        symlink = bool(flags & flag.flag_symlink)
        return (
            "<pad>" if pad else tuple(fs.file_path(i).split("/")),
            fs.file_size(i),
            fs.file_offset(i),
            pad,
            bool(flags & flag.flag_executable),
            bool(flags & flag.flag_hidden),
            tuple(fs.symlink(i).split("/")) if symlink else None,
            lt_hash(fs.root(i)),
        )

    def our_row(entry: FileEntry) -> tuple[object, ...]:
        return (
            "<pad>" if entry.is_pad else entry.path,
            entry.length,
            entry.offset,
            entry.is_pad,
            entry.is_executable,
            entry.is_hidden,
            entry.symlink_target,
            entry.pieces_root,
        )

    assert [our_row(entry) for entry in ours.info.files] == [
        lt_row(i) for i in range(fs.num_files())
    ]

    # ... and it is what was given to libtorrent.
    real = [entry for entry in ours.info.files if not entry.is_pad]
    assert sorted((entry.path, entry.length) for entry in real) == expected_files(case)
    if case.kind == "dir":
        (script,) = [e for e in real if e.path[1:] == ("tools", "run me.sh")]
        assert script.is_executable
        (link,) = [e for e in real if e.path[1:] == tuple(SYMLINK.split("/"))]
        assert link.symlink_target == ((DIR_NAME, "big.bin") if case.keep_symlinks else None)
    if case.version != "v1":
        # v2 and hybrid: every file with data starts a piece; pad files only fill gaps.
        for entry in ours.info.files:
            if entry.length and not entry.is_pad:
                assert entry.offset % case.piece_length == 0, entry
    else:
        assert not any(entry.is_pad for entry in ours.info.files)


FILE_PATH_CASES = [pytest.param(case, id=case.id) for case in LT_CASES]


@pytest.mark.parametrize("case", FILE_PATH_CASES)
def test_libtorrent_file_paths(tmp_path: Path, case: LtCase) -> None:
    """Every file's path, pad files included, is libtorrent's file_path()."""
    made = make_lt_torrent(tmp_path, case)
    fs = made.ti.layout()
    assert [entry.path for entry in made.ours.info.files] == [
        tuple(fs.file_path(i).split("/")) for i in range(fs.num_files())
    ]


def test_libtorrent_pieces(lt_torrent: LtTorrent) -> None:
    import libtorrent as lt

    info, ti, case = lt_torrent.ours.info, lt_torrent.ti, lt_torrent.case
    assert info.piece_length == ti.piece_length() == case.piece_length
    assert info.num_pieces == ti.num_pieces()
    pieces = range(info.num_pieces)

    # The v1 view of a piece's size (pad files count), and which file bytes it covers.
    assert [info.piece_size(i) for i in pieces] == [ti.piece_size(i) for i in pieces]
    lt_slices = [
        [(s.file_index, s.offset, s.size) for s in ti.map_block(i, 0, ti.piece_size(i))]
        for i in pieces
    ]
    assert [
        [(s.file_index, s.offset, s.length) for s in info.piece_slices(i)] for i in pieces
    ] == lt_slices
    # The v2 view: only real file bytes.
    fs = ti.layout()
    assert [info.piece_size(i, include_pad=False) for i in pieces] == [
        sum(
            size
            for index, _, size in piece
            if not fs.file_flags(index) & lt.file_storage.flag_pad_file
        )
        for piece in lt_slices
    ]

    if case.version == "v2":
        with pytest.raises(ValueError, match="v2-only"):
            info.piece_hash(0)
        return
    # v1 and hybrid: the piece hashes are libtorrent's and those of the content on disk.
    content = b"".join(file_content(lt_torrent.base, entry) for entry in info.files)
    expected = v1_piece_hashes(content, case.piece_length)
    assert [info.piece_hash(i) for i in pieces] == expected
    assert [ti.hash_for_piece(i) for i in pieces] == expected


def test_libtorrent_piece_layers(lt_torrent: LtTorrent) -> None:
    ours, case = lt_torrent.ours, lt_torrent.case
    top = bdecode(lt_torrent.data)
    assert isinstance(top, dict)
    if case.version == "v1":
        assert b"piece layers" not in top
        assert ours.piece_layers == {}
        assert all(ours.piece_layer(i) is None for i in range(len(ours.info.files)))
        assert all(entry.pieces_root is None for entry in ours.info.files)
        return

    layers = top[b"piece layers"]
    assert isinstance(layers, dict)
    found = set()
    for index, entry in enumerate(ours.info.files):
        if entry.pieces_root is None:
            assert entry.is_pad or entry.is_symlink or entry.length == 0, entry
            assert ours.piece_layer(index) is None
            continue
        # The bytes in the torrent, ...
        assert ours.piece_layer(index) == layers.get(entry.pieces_root), entry
        # ... which are the merkle tree of the file on disk (no layer for a one-piece file).
        root, layer = v2_file_hashes(file_content(lt_torrent.base, entry), case.piece_length)
        assert entry.pieces_root == root, entry
        assert ours.piece_layer(index) == (layer or None), entry
        assert (layer != b"") == (entry.length > case.piece_length), entry
        if layer:
            found.add(entry.pieces_root)
    assert found == set(layers) == set(ours.piece_layers)
    assert found, "the content has files longer than a piece"


def test_libtorrent_optional_fields(lt_torrent: LtTorrent) -> None:
    ours, atp, case = lt_torrent.ours, lt_torrent.atp, lt_torrent.case
    lt_tiers: dict[int, list[str]] = {}
    for url, tier in zip(atp.trackers, atp.tracker_tiers, strict=True):
        lt_tiers.setdefault(tier, []).append(url)
    assert ours.trackers == tuple(tuple(lt_tiers[t]) for t in sorted(lt_tiers)) == TRACKER_TIERS
    assert ours.announce == TRACKER_TIERS[0][0]

    expected_seeds = escaped_web_seeds(WEB_SEEDS, directory=case.kind == "dir")
    assert ours.url_list == expected_seeds
    if case.kind == "file" and case.version == "v2":
        # libtorrent 2.1.1 counts the pad file it adds after the data of a v2-only single-file
        # torrent as a second file, so it takes the web seed for a directory and would fetch
        # <seed>/<name>; for the hybrid torrent of the same file it fetches <seed>. bip keeps
        # BEP 19's single-file meaning for both.
        assert atp.url_seeds == [seed + "/" for seed in expected_seeds]
    else:
        assert atp.url_seeds == list(expected_seeds)

    assert ours.comment == atp.comment == COMMENT
    assert ours.created_by == atp.created_by == CREATOR
    assert ours.creation_date == atp.creation_date == CREATION_DATE
    assert ours.info.private == lt_torrent.ti.priv() == case.private
    assert list(ours.nodes) == atp.dht_nodes == [NODE]


def test_libtorrent_magnet_links(lt_torrent: LtTorrent) -> None:
    """Our magnet link for the torrent reads in libtorrent as the same torrent, and back."""
    import libtorrent as lt

    ours, ti = lt_torrent.ours, lt_torrent.ti
    parsed = lt.parse_magnet_uri(str(ours.magnet()))
    hashes = parsed.info_hashes
    assert (lt_hash(hashes.v1), lt_hash(hashes.v2)) == (
        ours.info.info_hash.v1,
        ours.info.info_hash.v2,
    )
    assert parsed.name == ti.name()
    assert parsed.trackers == [url for tier in TRACKER_TIERS for url in tier]
    assert parsed.url_seeds == list(ours.url_list)

    theirs = MagnetLink.parse(lt.make_magnet_uri(ti))
    assert theirs.info_hash == ours.info.info_hash
    assert theirs.display_name == ours.info.name


# --- mktorrent and transmission-create: v1 torrents ------------------------------------------

TOOL_DIR_NAME = "tool dir ü"
ONE_FILE = ContentFile("the only file.bin", 20_000)
TOOL_KINDS = ["file", "dir", "dir-of-one"]


def write_tool_content(tmp_path: Path, kind: str) -> tuple[Path, list[ContentFile]]:
    """The content given to a command-line tool: its path, and its files (any order)."""
    base = tmp_path / "content"
    if kind == "file":
        write_content(base, [SINGLE])
        return base / SINGLE.path, [SINGLE]
    files = list(DIR_FILES) if kind == "dir" else [ONE_FILE]
    write_content(base / TOOL_DIR_NAME, files)
    return base / TOOL_DIR_NAME, files


def mktorrent_order(file: ContentFile) -> bytes:
    """mktorrent 1.1 lists files sorted by strcmp() of their paths: by unsigned bytes."""
    return file.path.encode()


def transmission_order(file: ContentFile) -> list[int]:
    """transmission-create 3.00 sorts files with libevent's evutil_ascii_strcasecmp() of their
    full paths: ASCII letters fold to lower case, and bytes compare as signed chars, so UTF-8
    bytes (>= 0x80) sort before everything else, even before the end of the string."""
    return [
        (b if b < 0x80 else b - 0x100) + (0x20 if 0x41 <= b <= 0x5A else 0)
        for b in file.path.encode()
    ] + [0]


@dataclass(frozen=True)
class V1Expectation:
    name: str
    files: list[ContentFile]  # in the torrent's order; paths relative to the target directory
    piece_length: int
    tiers: tuple[tuple[str, ...], ...]
    web_seeds: tuple[str, ...]
    private: bool
    comment: str
    creator_prefix: str


def check_v1_torrent(torrent: Path, target: Path, expect: V1Expectation) -> None:
    """The checks shared by every v1 tool: bip, libtorrent and hashlib agree."""
    require_client("libtorrent")
    import libtorrent as lt

    data = torrent.read_bytes()
    ours = Metainfo.from_file(torrent)
    assert ours.raw == data

    # Info-hash: SHA-1 of the info dictionary's bytes as they stand in the file, and
    # libtorrent's.
    raw = info_bytes(data)
    assert ours.info.raw == raw
    atp = lt.load_torrent_buffer(data)
    ti = atp.ti
    assert ti is not None
    assert not ti.info_hashes().has_v2()
    assert ours.info.info_hash.v1 == hashlib.sha1(raw).digest() == lt_hash(ti.info_hashes().v1)
    assert ours.info.info_hash.v2 is None
    assert not ours.info.is_v2
    assert ours.info.name == ti.name() == expect.name

    # Files: what the tool was given, in its order, back to back; a directory's name first.
    directory = target.is_dir()
    prefix = (expect.name,) if directory else ()
    offsets = [sum(f.size for f in expect.files[:i]) for i in range(len(expect.files))]
    given = [
        ((*prefix, *f.parts), f.size, offset)
        for f, offset in zip(expect.files, offsets, strict=True)
    ]
    assert [(e.path, e.length, e.offset) for e in ours.info.files] == given
    assert not any(e.is_pad or e.is_symlink or e.pieces_root for e in ours.info.files)
    fs = ti.layout()
    assert [
        (tuple(fs.file_path(i).split("/")), fs.file_size(i), fs.file_offset(i))
        for i in range(fs.num_files())
    ] == given

    # Pieces: SHA-1 over the concatenated content.
    content = b"".join(
        (target.joinpath(*f.parts) if directory else target).read_bytes() for f in expect.files
    )
    expected = v1_piece_hashes(content, expect.piece_length)
    pieces = range(len(expected))
    assert ours.info.piece_length == ti.piece_length() == expect.piece_length
    assert ours.info.num_pieces == ti.num_pieces() == len(expected)
    assert ours.info.total_size == ti.total_size() == len(content)
    assert [ours.info.piece_hash(i) for i in pieces] == expected
    assert [ti.hash_for_piece(i) for i in pieces] == expected
    sizes = [min(expect.piece_length, len(content) - i * expect.piece_length) for i in pieces]
    assert [ours.info.piece_size(i) for i in pieces] == sizes
    assert [ours.info.piece_size(i, include_pad=False) for i in pieces] == sizes
    assert [ti.piece_size(i) for i in pieces] == sizes

    # The other fields.
    lt_tiers: dict[int, list[str]] = {}
    for url, tier in zip(atp.trackers, atp.tracker_tiers, strict=True):
        lt_tiers.setdefault(tier, []).append(url)
    assert ours.trackers == tuple(tuple(lt_tiers[t]) for t in sorted(lt_tiers)) == expect.tiers
    # A web seed names a directory when the torrent has more than one file (libtorrent's rule:
    # a directory torrent of one file is fetched like a single file).
    assert list(ours.url_list) == atp.url_seeds
    seeds_name_directory = len(expect.files) > 1
    assert ours.url_list == escaped_web_seeds(expect.web_seeds, directory=seeds_name_directory)
    assert ours.info.private == ti.priv() == expect.private
    assert ours.comment == atp.comment == expect.comment
    assert ours.created_by == atp.created_by
    assert ours.created_by is not None
    assert ours.created_by.startswith(expect.creator_prefix)
    assert ours.creation_date == atp.creation_date
    assert ours.creation_date is not None
    assert ours.piece_layers == {}


@pytest.mark.parametrize("kind", TOOL_KINDS)
@pytest.mark.parametrize("piece_log2", [15, 16])  # mktorrent 1.1 takes 15..28
def test_mktorrent(tmp_path: Path, kind: str, piece_log2: int) -> None:
    mktorrent = require_client("mktorrent")
    target, files = write_tool_content(tmp_path, kind)
    private = piece_log2 == 15
    # One web seed is written as a string, two as a list.
    web_seeds = WEB_SEEDS[:1] if piece_log2 == 15 else WEB_SEEDS
    out = tmp_path / "mktorrent.torrent"
    argv: list[str | Path] = [mktorrent, "-l", str(piece_log2), "-t", "2", "-c", COMMENT]
    # Each -a is a tier; commas separate the trackers of one tier.
    for tier in TRACKER_TIERS:
        argv += ["-a", ",".join(tier)]
    for seed in web_seeds:
        argv += ["-w", seed]
    if private:
        argv.append("-p")
    argv += ["-o", out, target]
    run_tool(argv, cwd=tmp_path)
    check_v1_torrent(
        out,
        target,
        V1Expectation(
            name=target.name,
            # Every file, empty and hidden ones too.
            files=sorted(files, key=mktorrent_order),
            piece_length=1 << piece_log2,
            tiers=TRACKER_TIERS,
            web_seeds=web_seeds,
            private=private,
            comment=COMMENT,
            creator_prefix="mktorrent ",
        ),
    )


@pytest.mark.parametrize("kind", TOOL_KINDS)
@pytest.mark.parametrize("piece_kib", [16, 32])
def test_transmission_create(tmp_path: Path, kind: str, piece_kib: int) -> None:
    transmission_create = require_client("transmission-create")
    target, files = write_tool_content(tmp_path, kind)
    private = piece_kib == 16
    out = tmp_path / "transmission.torrent"
    # Each -t is a tier of its own; transmission-create 3.00 cannot add web seeds.
    trackers = [url for tier in TRACKER_TIERS for url in tier]
    argv: list[str | Path] = [transmission_create, "-o", out, "-s", str(piece_kib)]
    for url in trackers:
        argv += ["-t", url]
    argv += ["-c", COMMENT]
    if private:
        argv.append("-p")
    argv.append(target)
    output = run_tool(argv, cwd=tmp_path)
    assert out.is_file(), output  # it exits with status 0 even when it fails
    # It leaves out empty files and anything whose name starts with '.'.
    kept = [f for f in files if f.size and not any(part.startswith(".") for part in f.parts)]
    check_v1_torrent(
        out,
        target,
        V1Expectation(
            name=target.name,
            files=sorted(kept, key=transmission_order),
            piece_length=piece_kib * KIB,
            tiers=tuple((url,) for url in trackers),
            web_seeds=(),
            private=private,
            comment=COMMENT,
            creator_prefix="Transmission/",
        ),
    )
