"""StorageLayout against real torrents: pad files, many files, empty files, v2, links."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from bip_disk._errors import PathError, StorageError
from bip_disk._filesystem import FileSystem, split_path
from bip_disk._layout import (
    Span,
    StorageLayout,
    create_files,
    read_piece,
    read_span_data,
    write_span_data,
)
from bip_disk._memory import MemoryFileSystem
from bip_metainfo import FileEntry, Info, Metainfo, MetainfoError

TORRENTS = Path("/work/shared/vectors/torrents")
FIXTURES = TORRENTS / "webtorrent-fixtures"


def _load(name: str) -> Info:
    return Metainfo.from_bytes((TORRENTS / name).read_bytes()).info


def _valid_torrents() -> list[str]:
    names = []
    for path in sorted(TORRENTS.rglob("*.torrent")):
        try:
            Metainfo.from_bytes(path.read_bytes())
        except MetainfoError:
            continue
        names.append(str(path.relative_to(TORRENTS)))
    return names


VALID = _valid_torrents()


def test_vectors_found() -> None:
    assert len(VALID) > 50


@pytest.mark.parametrize("name", VALID)
def test_spans_cover_the_piece_space_exactly(name: str) -> None:
    info = _load(name)
    layout = StorageLayout.from_info(info)
    assert layout.num_pieces == info.num_pieces
    assert layout.total_size == info.total_size
    covered = [0] * len(layout.files)
    expected_offset = 0
    for piece in range(layout.num_pieces):
        spans = layout.spans(piece)
        assert sum(span.length for span in spans) == layout.piece_size(piece)
        for span in spans:
            file = layout.files[span.file_index]
            assert span.path == file.path
            assert span.is_pad == file.is_pad
            assert span.length > 0
            assert file.is_stored or file.is_pad
            # Spans follow each other through the piece space with no gap.
            assert file.offset + span.file_offset == expected_offset
            expected_offset += span.length
            assert span.file_offset == covered[span.file_index]
            covered[span.file_index] += span.length
            assert piece in layout.file_pieces(span.file_index)
    for file in layout.files:
        assert covered[file.index] == file.length
    last = layout.num_pieces - 1
    assert layout.piece_size(last) == expected_offset - last * layout.piece_length
    assert 0 < layout.piece_size(last) <= layout.piece_length


@pytest.mark.parametrize("name", VALID)
def test_paths_are_safe_and_distinct(name: str) -> None:
    layout = StorageLayout.from_info(_load(name))
    seen: set[str] = set()
    for file in layout.stored_files + layout.symlinks:
        split_path(file.path)  # raises PathError if unsafe
        folded = file.path.casefold()
        assert folded not in seen
        seen.add(folded)
    for link in layout.symlinks:
        assert link.symlink_target is not None
        split_path(link.symlink_target)
        assert link.symlink_target != link.path


def test_last_short_piece() -> None:
    layout = StorageLayout.from_info(_load("webtorrent-fixtures/alice.torrent"))
    assert layout.piece_size(layout.num_pieces - 1) == 16327
    assert layout.piece_size(0) == 16384


def test_hybrid_last_piece_includes_trailing_pad() -> None:
    # anacrolix issue 949: the v1 view of the last piece is a full piece (the pad
    # after the last file counts), the v2 view is the file data only.
    layout = StorageLayout.from_info(_load("anacrolix/issue-949.torrent"))
    last = layout.num_pieces - 1
    assert layout.piece_size(last) == layout.piece_length
    assert layout.data_size(last) == 3677645
    assert layout.spans(last)[-1].is_pad


def test_v2_per_file_pieces() -> None:
    info = _load("libtorrent/v2_multiple_files.torrent")
    layout = StorageLayout.from_info(info)
    files = [file for file in layout.files if file.is_stored]
    assert len(files) == 3
    for file in files:
        pieces = layout.file_pieces(file.index)
        assert pieces.start * layout.piece_length == file.offset  # aligned
        assert len(pieces) == -(-file.length // layout.piece_length)
        for position, piece in enumerate(pieces):
            assert layout.v2_piece(piece) == (file.index, position)
        short = file.length % layout.piece_length
        assert layout.data_size(pieces[-1]) == (short or layout.piece_length)
        assert file.pieces_root is not None
    # Every piece of a v2 torrent belongs to exactly one file.
    owners = [layout.v2_piece(piece) for piece in range(layout.num_pieces)]
    assert all(owner is not None for owner in owners)


def test_v1_has_no_v2_pieces() -> None:
    layout = StorageLayout.from_info(_load("webtorrent-fixtures/numbers.torrent"))
    assert layout.v2_piece(0) is None


def test_pad_files_are_not_stored() -> None:
    layout = StorageLayout.from_info(_load("libtorrent_mutable/test1_pad_files.torrent"))
    pads = [file for file in layout.files if file.is_pad]
    assert len(pads) == 2
    assert all(not file.is_stored for file in pads)
    assert all(file not in layout.stored_files for file in pads)
    assert layout.total_size == sum(file.length for file in layout.stored_files)


def test_many_files_in_one_piece() -> None:
    layout = StorageLayout.from_info(_load("webtorrent-fixtures/lots-of-numbers.torrent"))
    spans = layout.spans(0)
    assert [span.path for span in spans] == [
        "lots-of-numbers/big numbers/10.txt",
        "lots-of-numbers/big numbers/11.txt",
        "lots-of-numbers/big numbers/12.txt",
        "lots-of-numbers/small numbers/1.txt",
        "lots-of-numbers/small numbers/2.txt",
        "lots-of-numbers/small numbers/3.txt",
    ]
    inner = layout.spans(0, 3, 5)
    assert [(span.path[-6:], span.file_offset, span.length) for span in inner] == [
        ("11.txt", 1, 1),
        ("12.txt", 0, 2),
        ("/1.txt", 0, 1),
        ("/2.txt", 0, 1),
    ]


def test_spans_out_of_range() -> None:
    layout = StorageLayout.from_info(_load("webtorrent-fixtures/alice.torrent"))
    last = layout.num_pieces - 1
    with pytest.raises(IndexError):
        layout.spans(layout.num_pieces)
    with pytest.raises(IndexError):
        layout.spans(-1)
    with pytest.raises(IndexError):
        layout.spans(last, 16000, 400)
    with pytest.raises(IndexError):
        layout.spans(0, -1, 3)
    with pytest.raises(IndexError):
        layout.file_pieces(5)
    assert layout.spans(last, 16327, 0) == ()


@pytest.mark.parametrize(
    "name",
    [
        "webtorrent-fixtures/numbers.torrent",
        "webtorrent-fixtures/lots-of-numbers.torrent",
        "webtorrent-fixtures/folder.torrent",
        "webtorrent-fixtures/alice.torrent",
        "webtorrent-fixtures/leaves.torrent",
    ],
)
def test_real_content_hashes_good(name: str) -> None:
    """The fixtures' real files, stored at the layout's paths, give the torrent's hashes."""
    info = _load(name)
    layout = StorageLayout.from_info(info)
    fs = MemoryFileSystem()
    for file in layout.stored_files:
        source = FIXTURES / Path(*file.path.split("/"))
        if not source.exists():  # leaves.torrent names the epub differently
            candidates = [p for p in FIXTURES.iterdir() if p.suffix == Path(file.path).suffix]
            assert len(candidates) == 1
            source = candidates[0]
        fs.write(file.path, 0, source.read_bytes())
    for piece in range(layout.num_pieces):
        assert hashlib.sha1(read_piece(fs, layout, piece)).digest() == info.piece_hash(piece)


@pytest.mark.parametrize(
    "name",
    [
        "libtorrent_mutable/test1_pad_files.torrent",
        "libtorrent_mutable/test3_pad_files.torrent",
        "libtorrent/empty-files-3.torrent",
        "libtorrent/sample.torrent",
        "libtorrent/symlink2.torrent",
        "webtorrent-fixtures/lots-of-numbers.torrent",
        "anacrolix/issue-949.torrent",
    ],
)
def test_write_then_read_pieces(name: str) -> None:
    """Blocks written through the layout read back; pad bytes are zeros and never stored."""
    layout = StorageLayout.from_info(_load(name))
    fs = MemoryFileSystem()
    rng = random.Random(name)
    pieces = list(range(layout.num_pieces))
    if len(pieces) > 12:  # a big torrent: the first, the last and some in between
        pieces = sorted({0, 1, len(pieces) - 1, *rng.sample(pieces, 8)})
    expected = {}
    for piece in pieces:
        data = bytearray(rng.randbytes(layout.piece_size(piece)))
        for span_start, span in _offsets(layout, piece):
            if span.is_pad:
                data[span_start : span_start + span.length] = bytes(span.length)
        expected[piece] = bytes(data)
        block = 16 * 1024
        for begin in range(0, len(data), block):
            write_span_data(fs, layout, piece, begin, data[begin : begin + block])
    for piece in pieces:
        assert read_piece(fs, layout, piece) == expected[piece]
        assert read_span_data(fs, layout, piece, 1, 3) == expected[piece][1:4]
    for file in layout.files:
        if file.is_pad:
            assert fs.size(file.path) is None


def _offsets(layout: StorageLayout, piece: int) -> list[tuple[int, Span]]:
    result = []
    position = 0
    for span in layout.spans(piece):
        result.append((position, span))
        position += span.length
    return result


def test_read_short_file_is_an_error() -> None:
    layout = StorageLayout.from_info(_load("webtorrent-fixtures/numbers.torrent"))
    fs = MemoryFileSystem()
    for file in layout.stored_files:
        fs.write(file.path, 0, bytes(file.length))
    fs.truncate(layout.stored_files[1].path, 1)
    with pytest.raises(StorageError) as info:
        read_piece(fs, layout, 0)
    assert info.value.path == layout.stored_files[1].path
    assert info.value.errno is None


def test_read_missing_file_is_an_error() -> None:
    layout = StorageLayout.from_info(_load("webtorrent-fixtures/numbers.torrent"))
    with pytest.raises(StorageError) as info:
        read_piece(MemoryFileSystem(), layout, 0)
    assert info.value.errno is not None


def test_write_outside_piece() -> None:
    layout = StorageLayout.from_info(_load("webtorrent-fixtures/numbers.torrent"))
    fs = MemoryFileSystem()
    with pytest.raises(IndexError):
        write_span_data(fs, layout, 0, 5, b"xyz")
    assert all(fs.size(file.path) is None for file in layout.files)


def test_name_override() -> None:
    info = _load("libtorrent/symlink2.torrent")
    layout = StorageLayout.from_info(info, name_override="Other/../name")
    assert all(file.path.startswith("Other..name/") for file in layout.files)
    targets = {link.path: link.symlink_target for link in layout.symlinks}
    assert targets["Other..name/Versions/Current"] == "Other..name/Versions/A"
    single = StorageLayout.from_info(_load("webtorrent-fixtures/alice.torrent"), name_override="x")
    assert [file.path for file in single.files] == ["x"]
    with pytest.raises(PathError):
        StorageLayout.from_info(info, name_override="..")


def test_self_links_are_skipped() -> None:
    files = [
        FileEntry(("t", "data"), 10, 0),
        FileEntry(("t", "loop"), 0, 10, attributes="l", symlink_target=("t", "loop")),
    ]
    layout = StorageLayout(files, 16384)
    assert layout.symlinks == ()
    assert layout.files[1].symlink_target is None
    assert layout.files[1].is_link
    assert not layout.files[1].is_stored  # a link, never a data file


def test_empty_path_refused() -> None:
    with pytest.raises(PathError):
        StorageLayout([FileEntry((), 10, 0)], 16384)


@pytest.mark.parametrize("allocate", ["none", "sparse", "full"])
def test_create_files(
    allocate: str,
    filesystem: FileSystem,
    filesystem_kind: str,
) -> None:
    layout = StorageLayout.from_info(_load("libtorrent/empty-files-3.torrent"))
    create_files(filesystem, layout, allocate=allocate)  # type: ignore[arg-type]
    for file in layout.stored_files:
        expected = 0 if allocate == "none" and file.length else file.length
        if allocate == "none" and file.length:
            assert filesystem.size(file.path) is None
        else:
            assert filesystem.size(file.path) == expected
    for file in layout.files:
        if file.is_pad:
            assert filesystem.size(file.path) is None


def test_create_files_with_links(filesystem: FileSystem, filesystem_kind: str) -> None:
    info = _load("libtorrent/symlink2.torrent")
    layout = StorageLayout.from_info(info)
    if filesystem_kind == "fsspec-memory":
        with pytest.raises(StorageError):
            create_files(filesystem, layout)
        return
    for piece in range(layout.num_pieces):
        data = (bytes(range(256)) * 16)[: layout.piece_size(piece)]
        write_span_data(filesystem, layout, piece, 0, data)
    create_files(filesystem, layout)
    create_files(filesystem, layout)  # again: links replaced, nothing else changes
    # Versions/Current -> Versions/A, so the file reads through the link.
    direct = filesystem.read("Some.framework/Versions/A/Resources/Info.plist", 0, 2000)
    linked = filesystem.read("Some.framework/Versions/Current/Resources/Info.plist", 0, 2000)
    assert linked == direct
    assert len(direct) == 1310


def test_block_helpers_split_across_many_files() -> None:
    layout = StorageLayout.from_info(_load("webtorrent-fixtures/lots-of-numbers.torrent"))
    fs: FileSystem = MemoryFileSystem()
    write: Callable[..., None] = write_span_data
    write(fs, layout, 0, 0, b"101112123123")
    assert fs.read("lots-of-numbers/small numbers/3.txt", 0, 9) == b"123"
    assert read_piece(fs, layout, 0) == b"101112123123"
