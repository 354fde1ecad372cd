"""How the resume files under ``SAVE_DIR/.bip/`` are written.

Each is durable once written: the temporary file is synced before it is renamed over the
old one, and its directory after (else a power cut may leave an empty or a half file under
the new name). The fetched metadata (``HASH.torrent``) is saved under the lock the other
saves take, and not once the torrent is removed: a removal's deleting of its files, or a
move's taking of them, must not race it (a ``.torrent`` back after a removal, or left in
the old directory by a move).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import trio
import trio.testing
from _engine_helpers import loopback_config

from bip._client import TorrentOptions, open_session
from bip._client._resume import ResumeStore
from bip._client._torrent import Torrent
from bip_bencode import encode
from bip_metainfo import Info, InfoHash, MagnetLink

DEADLINE = 10.0
V1_INFO = encode({b"name": b"x", b"piece length": 16384, b"length": 5, b"pieces": bytes(20)})


async def test_a_resume_file_is_synced_before_its_rename_and_its_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ResumeStore(tmp_path, InfoHash(v1=bytes(20)))
    steps: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        steps.append("fsync directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(source: str | Path, target: str | Path) -> None:
        steps.append("replace")
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)  # the module _resume calls
    monkeypatch.setattr(os, "replace", replace)
    await store.save_resume(b"d4:havei1ee")
    assert store.resume_path.read_bytes() == b"d4:havei1ee"
    if os.name == "nt":  # pragma: no cover - Windows cannot open a directory to sync it
        assert steps == ["fsync file", "replace"]
    else:
        # The first save creates .bip/: its entry in SAVE_DIR is synced first, else a power
        # cut could lose the directory with the synced file in it.
        assert steps == ["fsync directory", "fsync file", "replace", "fsync directory"]
    steps.clear()
    await store.save_resume(b"d4:havei2ee")
    if os.name != "nt":
        assert steps == ["fsync file", "replace", "fsync directory"]


def _internal(session_torrent: object) -> Torrent:
    assert isinstance(session_torrent, Torrent)
    return session_torrent


async def test_the_metadata_is_not_saved_once_the_torrent_is_removed(tmp_path: Path) -> None:
    info = Info.from_bytes(V1_INFO)
    save = tmp_path / "save"
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            torrent = _internal(
                await session.add_torrent(
                    MagnetLink.from_info_hash(info.info_hash), TorrentOptions(save)
                )
            )
            await session.remove_torrent(torrent)
            # A fetch that ended as the removal ran: its save comes after forget_all.
            await torrent._save_info(info)
    assert not ResumeStore(save, info.info_hash).torrent_path.exists()
    assert not (save / ".bip").exists()


async def test_the_metadata_is_saved_under_the_lock_into_the_store_of_then(
    tmp_path: Path,
) -> None:
    info = Info.from_bytes(V1_INFO)
    old, new = tmp_path / "old", tmp_path / "new"
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            torrent = _internal(
                await session.add_torrent(
                    MagnetLink.from_info_hash(info.info_hash), TorrentOptions(old)
                )
            )
            store = torrent._store
            assert store is not None
            # The lock is let go first, then the save is waited for.
            async with trio.open_nursery() as nursery, torrent._save_lock:
                # A move holds the lock while it swaps the store and takes its files.
                nursery.start_soon(torrent._save_info, info)
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                torrent._store = store.moved_to(new)  # what _move does under the lock
            # Into the store of after the move, never into the old directory, where nothing
            # would ever find it again.
            assert ResumeStore(new, info.info_hash).torrent_path.exists()
            assert not store.torrent_path.exists()
