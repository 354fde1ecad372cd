"""Batches of pieces written in runs: NativeFileSystem's vectored write, and its fallback."""

from __future__ import annotations

import errno
import os
import random
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from bip_disk import _manager
from bip_disk._errors import StorageError
from bip_disk._events import PieceVerified
from bip_disk._filesystem import Buffer
from bip_disk._manager import open_disk_manager
from bip_disk._native import NativeFileSystem
from bip_metainfo import Metainfo, create_torrent

PIECE = 16384
BLOCK = 4096


def test_vectored_write_finishes_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def short_pwritev(fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        data = b"".join(bytes(buffer) for buffer in buffers)[:5000]  # at most 5000 a call
        calls.append(len(data))
        return os.pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwritev", short_pwritev)
    parts = [random.Random(i).randbytes(size) for i, size in enumerate((3000, 0, 7000, 1, 4096))]
    with NativeFileSystem(tmp_path) as fs:
        fs._write_vectored(
            "d/f.bin", 10, [*parts[:2], memoryview(parts[2]), bytearray(parts[3]), parts[4]]
        )
        assert fs.read("d/f.bin", 0, 20000) == bytes(10) + b"".join(parts)
    assert sum(calls) == sum(map(len, parts))
    assert len(calls) > 1


def test_vectored_write_reports_storage_errors(tmp_path: Path) -> None:
    (tmp_path / "d").write_bytes(b"")  # a file where a directory should be
    with NativeFileSystem(tmp_path) as fs, pytest.raises(StorageError):
        fs._write_vectored("d/f.bin", 0, [b"a", b"b"])


def make(tmp_path: Path, pieces: int) -> tuple[Metainfo, bytes]:
    data = random.Random(11).randbytes(pieces * PIECE - 1000)  # a short last piece
    (tmp_path / "src").mkdir()
    first, second = data[: len(data) // 3], data[len(data) // 3 :]
    (tmp_path / "src" / "a.bin").write_bytes(first)
    (tmp_path / "src" / "b.bin").write_bytes(second)
    metainfo = create_torrent(
        tmp_path / "src", version="v1", piece_length=PIECE, creation_date=None
    )
    return metainfo, data


async def download(
    metainfo: Metainfo, data: bytes, fs: NativeFileSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Store every piece; the hashing threads wait until all are queued, so batches form."""
    info = metainfo.info
    gate = threading.Event()
    flush = _manager._flush

    def gated(jobs: Sequence[_manager._Job]) -> list[_manager._Outcome]:
        gate.wait(10)
        return flush(jobs)

    monkeypatch.setattr(_manager, "_flush", gated)
    async with open_disk_manager(hash_threads=2) as disk:
        torrent = await disk.add_torrent(metainfo, fs)
        await disk.wait_checked(torrent)
        for piece in range(info.num_pieces):
            size = info.piece_size(piece)
            for begin in range(0, size, BLOCK):
                start = piece * PIECE + begin
                block = data[start : start + min(BLOCK, size - begin)]
                assert await disk.write_block(torrent, piece, begin, block)
        gate.set()
        await disk.wait_idle(torrent)
        assert disk.have(torrent) == frozenset(range(info.num_pieces))
        verdicts: list[bool] = []
        while len(verdicts) < info.num_pieces:
            event = disk.events().receive_nowait()
            if isinstance(event, PieceVerified):
                verdicts.append(event.good)
        assert all(verdicts)


async def test_consecutive_pieces_of_a_file_are_written_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metainfo, data = make(tmp_path, 40)
    runs: list[int] = []
    original = NativeFileSystem._write_vectored

    def spy(self: NativeFileSystem, path: str, offset: int, buffers: Sequence[Buffer]) -> None:
        runs.append(len(buffers))
        original(self, path, offset, buffers)

    monkeypatch.setattr(NativeFileSystem, "_write_vectored", spy)
    with NativeFileSystem(tmp_path / "dl") as fs:
        await download(metainfo, data, fs, monkeypatch)
        stored = fs.read("src/a.bin", 0, len(data)) + fs.read("src/b.bin", 0, len(data))
    assert stored == data
    assert max(runs) > 2  # the pieces queued while the threads worked, written together
    assert max(runs) <= _manager._RUN_BYTES // PIECE + 1


async def test_a_failed_vectored_write_is_retried_piece_by_piece(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metainfo, data = make(tmp_path, 40)
    failures: list[int] = []

    def fail(self: NativeFileSystem, path: str, offset: int, buffers: Sequence[Buffer]) -> None:
        failures.append(len(buffers))
        raise StorageError("no room for a run", errno=errno.ENOSPC, path=path)

    monkeypatch.setattr(NativeFileSystem, "_write_vectored", fail)
    with NativeFileSystem(tmp_path / "dl") as fs:
        await download(metainfo, data, fs, monkeypatch)  # each piece written on its own succeeds
        stored = fs.read("src/a.bin", 0, len(data)) + fs.read("src/b.bin", 0, len(data))
    assert stored == data
    assert failures
