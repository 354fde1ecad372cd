"""A piece made only of pad bytes (BEP 47) is checked, and downloaded, like any other.

Such a piece touches no stored file: its bytes are zeros the torrent itself fixes.
The check settles it at plan time, neither read nor hashed one by one (its v1 hash
against the SHA-1 of zeros, once per size), trusting resume data that had it; it is
good or bad by its hash; a peer's blocks of it settle it with nothing written. It is
never counted by ``pieces_to_hash``. The layout is a reviewer's hand-made v1 torrent: ``a`` (one
piece), a pad file of one whole piece, then ``b`` (1000 bytes). A hybrid torrent cannot be laid
out so: its v1 files must sit where its v2 tree puts them, which has no pad-only piece.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import pytest
import trio

from bip_bencode import encode
from bip_disk import _check
from bip_disk._check import check_pad_pieces, check_pieces, plan_check, stat_files
from bip_disk._events import CheckFinished, DiskEvent, PieceVerified
from bip_disk._filesystem import FileSystem
from bip_disk._hashing import PieceVerifier
from bip_disk._layout import StorageLayout
from bip_disk._manager import DiskManager, open_disk_manager
from bip_disk._memory import MemoryFileSystem
from bip_disk._native import NativeFileSystem
from bip_disk._resume import RACY_WINDOW_NS, ResumeData
from bip_metainfo import Metainfo, MetainfoError, MetainfoErrorKind, pieces_root

PIECE = 16384
_RNG = random.Random(1)
A = _RNG.randbytes(PIECE)
B = _RNG.randbytes(1000)
PAD_PATH = "album/.pad/16384"


def _torrent(*, pad_hash: bytes | None = None, hybrid: bool = False) -> Metainfo:
    """The reviewer's layout; ``pad_hash`` replaces the pad-only piece's SHA-1."""
    space = A + bytes(PIECE) + B
    hashes = [hashlib.sha1(space[i : i + PIECE]).digest() for i in range(0, len(space), PIECE)]
    if pad_hash is not None:
        hashes[1] = pad_hash
    info: dict[str, Any] = {
        "name": "album",
        "piece length": PIECE,
        "pieces": b"".join(hashes),
        "files": [
            {"length": PIECE, "path": ["a"]},
            {"length": PIECE, "path": [".pad", str(PIECE)], "attr": "p"},
            {"length": len(B), "path": ["b"]},
        ],
    }
    if hybrid:
        info["meta version"] = 2
        info["file tree"] = {
            "a": {"": {"length": PIECE, "pieces root": pieces_root(A)}},
            "b": {"": {"length": len(B), "pieces root": pieces_root(B)}},
        }
    return Metainfo.from_bytes(encode({"info": info}))


GOOD = _torrent()
BAD = _torrent(pad_hash=bytes(20))


def _with_data(fs: FileSystem) -> FileSystem:
    fs.write("album/a", 0, A)
    fs.write("album/b", 0, B)
    return fs


def _fs(kind: str, tmp_path: Path) -> FileSystem:
    return MemoryFileSystem() if kind == "memory" else NativeFileSystem(tmp_path / "store")


class _CountingFileSystem(MemoryFileSystem):
    """A MemoryFileSystem that counts reads of each path."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: dict[str, int] = {}

    def read(self, path: str, offset: int, length: int) -> bytes:
        self.reads[path] = self.reads.get(path, 0) + 1
        return super().read(path, offset, length)


# -- planning and hashing (sans-IO) ------------------------------------------------------


def test_the_layout_has_a_piece_of_pad_bytes_only() -> None:
    layout = StorageLayout.from_info(GOOD.info)
    assert GOOD.info.num_pieces == 3
    assert [span.is_pad for span in layout.spans(1)] == [True]
    assert [layout.file_pieces(file.index) for file in layout.stored_files] == [
        range(1),
        range(2, 3),
    ]


def test_the_check_settles_the_pad_only_piece_without_reading() -> None:
    fs = _CountingFileSystem()
    _with_data(fs)
    layout = StorageLayout.from_info(GOOD.info)
    plan = plan_check(fs, layout, None)
    assert (plan.to_hash, plan.pad_only) == ((0, 2), (1,))
    assert check_pad_pieces(PieceVerifier(GOOD.info), plan.pad_only) == [True]
    assert fs.reads == {}  # zeros, from no file
    assert check_pieces(fs, layout, PieceVerifier(GOOD.info), plan.to_hash) == [True] * 2
    # read_piece still gives the zeros, for a peer asking for the piece.
    assert check_pieces(fs, layout, PieceVerifier(GOOD.info), [1]) == [True]


def test_with_no_file_there_nothing_is_hashed_and_the_pad_only_piece_is_good() -> None:
    fs = MemoryFileSystem()
    layout = StorageLayout.from_info(GOOD.info)
    plan = plan_check(fs, layout, None)
    assert (plan.to_hash, plan.pad_only) == ((), (1,))
    assert check_pad_pieces(PieceVerifier(GOOD.info), plan.pad_only) == [True]


def test_a_pad_only_piece_whose_hash_is_not_of_zeros_is_bad() -> None:
    fs = _with_data(MemoryFileSystem())
    layout = StorageLayout.from_info(BAD.info)
    plan = plan_check(fs, layout, None)
    assert check_pieces(fs, layout, PieceVerifier(BAD.info), plan.to_hash) == [True, True]
    assert check_pad_pieces(PieceVerifier(BAD.info), plan.pad_only) == [False]


def _resume(fs: FileSystem, layout: StorageLayout, have: set[int]) -> ResumeData:
    stats = stat_files(fs, layout)
    saved = max(stat.mtime_ns for stat in stats if stat is not None) + 10 * RACY_WINDOW_NS
    return ResumeData(GOOD.info.info_hash, 3, frozenset(have), stats, saved)


def test_resume_data_that_had_the_pad_only_piece_is_trusted_else_it_is_hashed() -> None:
    fs = _with_data(MemoryFileSystem())
    layout = StorageLayout.from_info(GOOD.info)
    plan = plan_check(fs, layout, _resume(fs, layout, {0, 1, 2}))
    assert plan.trusted == {0, 1, 2}
    assert (plan.to_hash, plan.pad_only) == ((), ())
    # Resume data made before the pad-only piece was had (by an older version): the
    # files are unchanged, yet the piece is settled, not left missing for ever.
    plan = plan_check(fs, layout, _resume(fs, layout, {0, 2}))
    assert plan.trusted == {0, 2}
    assert (plan.to_hash, plan.pad_only) == ((), (1,))


def test_a_hybrid_cannot_have_a_pad_only_piece() -> None:
    # Its v2 tree starts ``b`` at piece 1; a v1 list with a whole pad piece before it puts
    # ``b`` at piece 2: bip_metainfo refuses the hybrid (as libtorrent's files_compatible).
    with pytest.raises(MetainfoError) as raised:
        _torrent(hybrid=True)
    assert raised.value.kind is MetainfoErrorKind.INCONSISTENT_FILES


# -- through the DiskManager -------------------------------------------------------------


async def _check_finished(disk: DiskManager) -> CheckFinished:
    with trio.fail_after(10):
        async for event in disk.events():
            if isinstance(event, CheckFinished):
                return event
    raise AssertionError("the event stream ended")


async def _verdict(disk: DiskManager) -> PieceVerified:
    seen: list[DiskEvent] = []
    with trio.fail_after(10):
        async for event in disk.events():
            seen.append(event)
            if isinstance(event, PieceVerified):
                return event
    raise AssertionError(f"the event stream ended after {seen}")


@pytest.mark.parametrize("kind", ["memory", "native"])
async def test_the_reviewers_torrent_checks_complete(tmp_path: Path, kind: str) -> None:
    fs = _with_data(_fs(kind, tmp_path))
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(GOOD, fs)
        finished = await _check_finished(disk)
        assert (finished.good, finished.checked) == (3, 2)  # the pad-only piece: not hashed
        assert disk.have(torrent) == {0, 1, 2}
        assert await disk.read_block(torrent, 1, 0, PIECE) == bytes(PIECE)
        resume = await disk.save_resume_data(torrent)
    assert fs.size(PAD_PATH) is None  # pads are never written
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(GOOD, fs, resume_data=resume)
        finished = await _check_finished(disk)
        assert (finished.good, finished.checked, finished.resumed) == (3, 0, True)
    fs.close()


@pytest.mark.parametrize("kind", ["memory", "native"])
async def test_a_wrong_hash_for_the_pad_only_piece_is_reported_bad(
    tmp_path: Path, kind: str
) -> None:
    fs = _with_data(_fs(kind, tmp_path))
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(BAD, fs)
        finished = await _check_finished(disk)
        assert (finished.good, finished.checked) == (2, 2)
        assert disk.have(torrent) == {0, 2}
    fs.close()


@pytest.mark.parametrize("kind", ["memory", "native"])
async def test_a_peers_zeros_for_the_pad_only_piece_are_verified_and_not_written(
    tmp_path: Path, kind: str
) -> None:
    fs = _fs(kind, tmp_path)
    async with open_disk_manager() as disk:
        # Without a check nothing is had: the piece must come from a peer.
        torrent = await disk.add_torrent(GOOD, fs, check=False)
        await disk.wait_checked(torrent)
        assert disk.have(torrent) == frozenset()
        assert await disk.write_block(torrent, 1, 0, bytes(PIECE)) is True
        assert await _verdict(disk) == PieceVerified(torrent, 1, good=True)
        assert disk.have(torrent) == {1}
        assert await disk.write_block(torrent, 1, 0, bytes(PIECE)) is False  # had already
        await disk.wait_idle(torrent)
        assert fs.size(PAD_PATH) is None
        assert fs.size("album/a") is None  # nothing written
        assert fs.size("album/b") is None
    fs.close()


async def test_a_peers_blocks_cannot_fix_a_wrong_pad_only_piece_hash() -> None:
    fs = MemoryFileSystem()
    async with open_disk_manager() as disk:
        torrent = await disk.add_torrent(BAD, fs, check=False)
        await disk.wait_checked(torrent)
        # Whatever the peer sends for pad bytes, they are zeros, which do not match.
        await disk.write_block(torrent, 1, 0, b"\xee" * PIECE)
        assert await _verdict(disk) == PieceVerified(torrent, 1, good=False)
        assert disk.have(torrent) == frozenset()


# -- no per-piece hashing of pads, nothing counted to hash -------------------------------

LONG = 2**16  # pad-only pieces of a whole piece each: 1 GiB of zeros
B_PIECE = 1 + LONG  # b's piece; then one pad-only piece of half a piece ends the torrent


def _long_pad_torrent() -> Metainfo:
    """``a`` (1000 bytes), a pad of ``LONG`` whole pieces after it, ``b`` (10 bytes), and a
    pad ending the torrent with a pad-only piece of half a piece (a second size)."""
    zeros = hashlib.sha1(bytes(PIECE)).digest()
    hashes = [
        hashlib.sha1(A[:1000] + bytes(PIECE - 1000)).digest(),
        zeros * LONG,
        hashlib.sha1(B[:10] + bytes(PIECE - 10)).digest(),
        hashlib.sha1(bytes(PIECE // 2)).digest(),
    ]
    info: dict[str, Any] = {
        "name": "album",
        "piece length": PIECE,
        "pieces": b"".join(hashes),
        "files": [
            {"length": 1000, "path": ["a"]},
            {"length": LONG * PIECE + PIECE - 1000, "path": [".pad", "1"], "attr": "p"},
            {"length": 10, "path": ["b"]},
            {"length": PIECE - 10 + PIECE // 2, "path": [".pad", "2"], "attr": "p"},
        ],
    }
    return Metainfo.from_bytes(encode({"info": info}))


def _count_zero_hashes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every hash of zeros ``check_pad_pieces`` computes."""
    sizes: list[int] = []
    real = _check._zeros_sha1

    def counting(size: int) -> bytes:
        sizes.append(size)
        return real(size)

    monkeypatch.setattr(_check, "_zeros_sha1", counting)
    return sizes


async def test_a_long_pad_is_not_hashed_piece_by_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    torrent = _long_pad_torrent()
    assert torrent.info.num_pieces == LONG + 3
    sizes = _count_zero_hashes(monkeypatch)
    fs = _CountingFileSystem()
    fs.write("album/a", 0, A[:1000])
    fs.write("album/b", 0, B[:10])
    async with open_disk_manager() as disk:
        assert await disk.pieces_to_hash(torrent, fs) == 2  # a's piece and b's
        handle = await disk.add_torrent(torrent, fs)
        finished = await _check_finished(disk)
        assert (finished.good, finished.checked) == (LONG + 3, 2)
        assert disk.have(handle) == frozenset(range(LONG + 3))
    assert sorted(sizes) == [PIECE // 2, PIECE]  # once per size, not once per piece
    assert fs.reads == {"album/a": 1, "album/b": 1}


@pytest.mark.parametrize("torrent", [GOOD, _long_pad_torrent()], ids=["one", "long"])
async def test_pieces_to_hash_is_zero_with_no_file_there(torrent: Metainfo) -> None:
    async with open_disk_manager() as disk:
        assert await disk.pieces_to_hash(torrent, MemoryFileSystem()) == 0


def _with_empty_file() -> Metainfo:
    """``a`` (one piece), an empty file, a pad of one whole piece, then ``b``."""
    space = A + bytes(PIECE) + B
    hashes = [hashlib.sha1(space[i : i + PIECE]).digest() for i in range(0, len(space), PIECE)]
    info: dict[str, Any] = {
        "name": "album",
        "piece length": PIECE,
        "pieces": b"".join(hashes),
        "files": [
            {"length": PIECE, "path": ["a"]},
            {"length": 0, "path": ["e"]},
            {"length": PIECE, "path": [".pad", str(PIECE)], "attr": "p"},
            {"length": len(B), "path": ["b"]},
        ],
    }
    return Metainfo.from_bytes(encode({"info": info}))


@pytest.mark.parametrize("kind", ["memory", "native"])
async def test_a_piece_of_pad_beside_an_empty_file_is_pad_only(tmp_path: Path, kind: str) -> None:
    torrent = _with_empty_file()
    fs = _with_data(_fs(kind, tmp_path))
    plan = plan_check(fs, StorageLayout.from_info(torrent.info), None)
    assert (plan.to_hash, plan.pad_only) == ((0, 2), (1,))
    async with open_disk_manager() as disk:
        assert await disk.pieces_to_hash(torrent, fs) == 2
        handle = await disk.add_torrent(torrent, fs)
        finished = await _check_finished(disk)
        assert (finished.good, finished.checked) == (3, 2)
        assert disk.have(handle) == {0, 1, 2}
    assert fs.size("album/e") == 0  # the empty file is made; the pad is not
    assert fs.size(PAD_PATH) is None
    fs.close()
