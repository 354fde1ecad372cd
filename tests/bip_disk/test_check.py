"""Planning a check (trusted / to hash / missing pieces) and hashing batches of pieces."""

from __future__ import annotations

import errno
import hashlib
from typing import Any

import pytest

from bip_bencode import encode
from bip_disk._check import check_pieces, pieces_cut_short, plan_check, stat_files
from bip_disk._errors import StorageError
from bip_disk._filesystem import FileStat
from bip_disk._hashing import PieceVerifier
from bip_disk._layout import StorageLayout
from bip_disk._memory import MemoryFileSystem
from bip_disk._resume import RACY_WINDOW_NS, ResumeData
from bip_metainfo import Info

PIECE = 16384
# Three files in a v1 torrent of 7 pieces: a = pieces 0-2 (2.5 pieces), b = 2-4, c = 5-6.
SIZES = {"a": 2 * PIECE + PIECE // 2, "b": 2 * PIECE + PIECE // 2, "c": 2 * PIECE - 10}


def _content() -> dict[str, bytes]:
    return {name: bytes([i + 1]) * size for i, (name, size) in enumerate(SIZES.items())}


def _info() -> Info:
    content = _content()
    space = b"".join(content.values())
    pieces = b"".join(
        hashlib.sha1(space[i : i + PIECE]).digest() for i in range(0, len(space), PIECE)
    )
    files: list[Any] = [{"path": [name], "length": size} for name, size in SIZES.items()]
    files.insert(1, {"path": ["empty"], "length": 0})
    return Info.from_bytes(
        encode({"name": "t", "piece length": PIECE, "pieces": pieces, "files": files})
    )


INFO = _info()
LAYOUT = StorageLayout.from_info(INFO)
ALL = tuple(range(INFO.num_pieces))


def _complete() -> MemoryFileSystem:
    fs = MemoryFileSystem()
    for name, data in _content().items():
        fs.write(f"t/{name}", 0, data)
    return fs


def _resume(fs: MemoryFileSystem, have: set[int], *, racy: bool = False) -> ResumeData:
    """Resume data for ``fs`` now, made long after the files were written unless ``racy``."""
    stats = stat_files(fs, LAYOUT)
    newest = max(stat.mtime_ns for stat in stats if stat is not None)
    saved = newest + (1 if racy else 10 * RACY_WINDOW_NS)
    return ResumeData(INFO.info_hash, INFO.num_pieces, frozenset(have), stats, saved)


def test_the_layout_is_as_described() -> None:
    assert INFO.num_pieces == 7
    assert [LAYOUT.file_pieces(i) for i in range(4)] == [
        range(3),
        range(0),
        range(2, 5),
        range(5, 7),
    ]


def test_without_resume_data_every_possible_piece_is_hashed() -> None:
    fs = _complete()
    plan = plan_check(fs, LAYOUT, None)
    assert plan.trusted == frozenset()
    assert plan.to_hash == ALL
    assert plan.changed_files == {0, 2, 3}  # stored, non-empty files
    assert check_pieces(fs, LAYOUT, PieceVerifier(INFO), plan.to_hash) == [True] * 7


def test_missing_and_short_files_rule_pieces_out_without_reading() -> None:
    fs = MemoryFileSystem()
    content = _content()
    fs.write("t/a", 0, content["a"][: PIECE + 5])  # piece 0 whole, piece 1 short
    fs.write("t/c", 0, content["c"])
    plan = plan_check(fs, LAYOUT, None)
    # b is missing: pieces 2-4 impossible; a is short: pieces 1 and 2 impossible.
    assert plan.to_hash == (0, 5, 6)
    assert plan.stats[2] is None


def test_resume_data_trusts_unchanged_files_and_rechecks_changed_ones() -> None:
    fs = _complete()
    resume = _resume(fs, {0, 1, 2, 3, 4, 5})
    plan = plan_check(fs, LAYOUT, resume)
    assert plan.trusted == {0, 1, 2, 3, 4, 5}
    assert plan.to_hash == ()  # piece 6 is not listed and c is not racy: missing
    assert plan.changed_files == frozenset()
    # c changed: its pieces (5, 6) are hashed, listed or not.
    fs.write("t/c", 0, b"\x00")
    plan = plan_check(fs, LAYOUT, resume)
    assert plan.trusted == {0, 1, 2, 3, 4}
    assert plan.to_hash == (5, 6)
    assert plan.changed_files == {3}
    # Every file different from the data: everything is hashed.
    other = tuple(
        None if stat is None else FileStat(stat.size, stat.mtime_ns - 1) for stat in resume.files
    )
    plan = plan_check(fs, LAYOUT, ResumeData(INFO.info_hash, 7, resume.have, other, 2**62))
    assert plan.to_hash == ALL


def test_racy_files_have_their_unlisted_pieces_hashed() -> None:
    fs = _complete()
    plan = plan_check(fs, LAYOUT, _resume(fs, {0, 5}, racy=True))
    assert plan.trusted == {0, 5}
    assert plan.to_hash == (1, 2, 3, 4, 6)


def test_a_piece_spanning_a_changed_file_is_hashed() -> None:
    fs = _complete()
    resume = _resume(fs, set(ALL))
    fs.write("t/b", 2 * PIECE, b"\x07")  # corrupts piece 4; b changed, so 2-4 are hashed
    plan = plan_check(fs, LAYOUT, resume)
    assert plan.trusted == {0, 1, 5, 6}
    assert plan.to_hash == (2, 3, 4)  # piece 2 holds the end of a and the start of b
    results = check_pieces(fs, LAYOUT, PieceVerifier(INFO), plan.to_hash)
    assert results == [True, True, False]


def test_check_pieces_stops_early_and_raises_real_faults() -> None:
    fs = _complete()
    verifier = PieceVerifier(INFO)
    assert check_pieces(fs, LAYOUT, verifier, ALL, [True]) == [False] * 7
    fs.truncate("t/c", 5)
    assert check_pieces(fs, LAYOUT, verifier, (5, 6)) == [False, False]  # gone: not good

    class Denied(MemoryFileSystem):
        def read(self, path: str, offset: int, length: int) -> bytes:
            raise StorageError("denied", errno=errno.EACCES, path=path)

    with pytest.raises(StorageError, match="denied"):
        check_pieces(Denied(), LAYOUT, verifier, (0,))


def test_pieces_cut_short_start_at_the_first_missing_byte() -> None:
    layout = StorageLayout.from_info(_info())
    b = next(file for file in layout.stored_files if file.path.endswith("b"))
    assert layout.file_pieces(b.index) == range(2, 5)
    assert pieces_cut_short(layout, b, b.length) == range(5, 5)
    assert pieces_cut_short(layout, b, 0) == range(2, 5)  # shares piece 2 with a
    assert pieces_cut_short(layout, b, PIECE // 2) == range(3, 5)  # piece 2 is whole
    assert pieces_cut_short(layout, b, b.length - 1) == range(4, 5)


class _NoMtime(MemoryFileSystem):
    """A backend that keeps no modification times (some object stores): every mtime is 0."""

    def stat(self, path: str) -> FileStat | None:
        found = super().stat(path)
        return None if found is None else FileStat(found.size, 0)


def test_a_file_without_a_modification_time_is_never_trusted() -> None:
    fs = _NoMtime()
    for name, data in _content().items():
        fs.write(f"t/{name}", 0, data)
    resume = ResumeData(INFO.info_hash, 7, frozenset(ALL), stat_files(fs, LAYOUT), 2**62)
    # Rewritten in place, same size: only hashing can tell, so every piece is hashed.
    fs.write("t/c", 0, b"\x00")
    plan = plan_check(fs, LAYOUT, resume)
    assert plan.trusted == frozenset()
    assert plan.to_hash == ALL
    assert plan.changed_files == {0, 2, 3}
    results = check_pieces(fs, LAYOUT, PieceVerifier(INFO), plan.to_hash)
    assert results == [True] * 5 + [False, True]
