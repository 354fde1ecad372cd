"""A piece whose write fails while a move of the storage waits for it: the move goes on (the
fault is the old storage's), and the disk's PieceDiscarded tells the brain, which received
every block of the piece and waits for a verdict, to fetch it again. Without it the download
never completes."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import trio
from _engine_helpers import (
    download_from,
    make_torrent,
    same_files,
    seeder_and_leecher,
    until,
    write_content,
)

from bip._client import TorrentPhase
from bip_disk import FileSystem, NativeFileSystem, StorageError, TorrentState
from bip_disk._filesystem import Buffer

DEADLINE = 20.0


class FailingOnce(NativeFileSystem):
    """A NativeFileSystem whose first write of the torrent's files waits (on its thread) for
    ``gate``, telling ``entered``, then fails with EIO; the others are written."""

    def __init__(self, root: Path, gate: threading.Event, entered: threading.Event) -> None:
        super().__init__(root)
        self.gate = gate
        self.entered = entered
        self._lock = threading.Lock()
        self._failed = False

    def write(self, path: str, offset: int, data: Buffer) -> None:
        with self._lock:
            first = path.startswith("album/") and not self._failed
            self._failed = self._failed or first
        if first:
            self.entered.set()
            assert self.gate.wait(DEADLINE)  # bounded: a failing test does not hang
            raise StorageError(
                f"write {path}: {os.strerror(errno.EIO)}", errno=errno.EIO, path=path
            )
        super().write(path, offset, data)


async def test_a_piece_failing_while_the_move_waits_is_fetched_again(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", (200_000,))
    torrent = make_torrent(folder, "v1", piece_length=32768)
    down, moved = tmp_path / "down", tmp_path / "moved"
    gate, entered = threading.Event(), threading.Event()

    def storage(save_dir: Path) -> FileSystem:
        return (
            FailingOnce(save_dir, gate, entered) if save_dir == down else NativeFileSystem(save_dir)
        )

    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            download = await download_from(seeder, leecher, torrent, down, storage=storage)
            assert await trio.to_thread.run_sync(entered.wait, DEADLINE)
            handle = download.handle
            assert handle is not None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(download.move_storage, moved)
                # The move waits for the piece being written, which then fails.
                await until(lambda: leecher.disk.status(handle).state is TorrentState.MOVING)
                gate.set()
            await download.wait_complete()
            assert download.status().phase is TorrentPhase.SEEDING
            assert download.options.save_dir == moved
    assert same_files(folder, moved / "album")
