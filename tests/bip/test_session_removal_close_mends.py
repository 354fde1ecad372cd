"""A removal with the data of a torrent that never reached the disk deletes its files (as
libtorrent's does in every state) through bip_disk's ``DiskManager.delete_files``, naming what
could not be deleted; a session that starts closing makes every torrent refuse its controls at
once, not only when its own turn to close comes; a failed or closed torrent serves its info
dictionary (BEP 9) no more."""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio
from _engine_helpers import loopback_config, make_torrent, until, write_content

from bip._client import (
    RESUME_DIRECTORY,
    Torrent,
    TorrentError,
    TorrentOptions,
    TorrentPhase,
    open_session,
)
from bip_bencode import Encodable, encode
from bip_disk import MemoryFileSystem
from bip_metainfo import Metainfo

DEADLINE = 10.0


class _Stubborn(MemoryFileSystem):
    """A storage in memory that refuses to delete one file (a permission, a busy share)."""

    def __init__(self, refused: str) -> None:
        super().__init__()
        self.refused = refused

    def remove(self, path: str) -> None:
        if path == self.refused:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        super().remove(path)


def _waits_for_its_check(torrent: Torrent) -> bool:
    """The torrent found data to hash, and waits for its turn (not on the disk yet)."""
    return not torrent._unqueued_check and torrent.handle is None


async def test_a_torrent_not_on_the_disk_has_its_files_deleted_and_what_is_left_named(
    tmp_path: Path,
) -> None:
    data = write_content(tmp_path / "src", (40_000, 20_000))
    meta = make_torrent(data, "v1")
    storage = _Stubborn("album/f0.bin")
    for path in ("f0.bin", "sub/f1.bin"):
        storage.write(f"album/{path}", 0, (data / path).read_bytes())
    options = TorrentOptions(
        tmp_path / "mem",
        storage=lambda _: storage,
        paused=True,
        auto_managed=True,
        resume=False,
    )
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            torrent = await session.add_torrent(meta, options)
            await until(lambda: _waits_for_its_check(torrent))
            # Before: nothing was deleted, and the error only counted the files there.
            with pytest.raises(TorrentError, match=r"not all of its files .*album/f0\.bin"):
                await session.remove_torrent(torrent, delete_data=True)
            assert torrent not in session.torrents
    assert storage.size("album/sub/f1.bin") is None  # deleted
    assert storage.size("album/f0.bin") == 40_000  # the one refused, named above


async def test_no_file_of_the_state_folder_is_deleted_under_a_second_name(
    tmp_path: Path,
) -> None:
    # save/alias is save/.bip: the torrent fails before its storage opens, and its removal
    # with the data deletes nothing there (as its check refused to write there).
    state = tmp_path / RESUME_DIRECTORY
    state.mkdir()
    (state / "f").write_bytes(b"not the torrent's")
    (tmp_path / "alias").symlink_to(state, target_is_directory=True)
    info: dict[bytes, Encodable] = {
        b"name": b"alias",
        b"piece length": 16384,
        b"pieces": hashlib.sha1(b"hello").digest(),
        b"files": [{b"length": 5, b"path": [b"f"]}],
    }
    meta = Metainfo.from_bytes(encode({b"info": info}))
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            torrent = await session.add_torrent(meta, TorrentOptions(tmp_path, resume=False))
            await until(lambda: torrent.status().phase is TorrentPhase.FAILED)
            with pytest.raises(TorrentError, match=f"is the folder {RESUME_DIRECTORY}"):
                await session.remove_torrent(torrent, delete_data=True)
    assert (state / "f").read_bytes() == b"not the torrent's"


async def test_every_torrent_refuses_its_controls_once_the_session_closes(
    tmp_path: Path,
) -> None:
    first_data = write_content(tmp_path / "a", (20_000,), seed=1)
    second_data = write_content(tmp_path / "b", (20_000,), seed=2)
    refused: list[str] = []
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            first = await session.add_torrent(
                make_torrent(first_data, "v1"), TorrentOptions(first_data.parent)
            )
            second = await session.add_torrent(
                make_torrent(second_data, "v1"), TorrentOptions(second_data.parent)
            )
            await first.wait_complete()
            await second.wait_complete()
            close_first: Callable[[], Awaitable[None]] = first.close

            async def poke_second_then_close() -> None:
                # The session closes its torrents one by one: the second's turn is to come.
                assert not second._stopped.is_set()
                controls: dict[str, Callable[[], None]] = {
                    "pause": second.pause,
                    "resume": second.resume,
                    "recheck": second.force_recheck,
                    "change its queueing": lambda: second.set_auto_managed(False),
                    "select files": lambda: second.set_files(None),
                }
                for verb, control in controls.items():
                    # Before: accepted (a resume told the trackers "started" again).
                    with pytest.raises(TorrentError, match=f"cannot {verb}: .* was closed"):
                        control()
                    refused.append(verb)
                with pytest.raises(TorrentError, match="cannot move its storage"):
                    await second.move_storage(tmp_path / "elsewhere")
                refused.append("move")
                await close_first()

            first.close = poke_second_then_close  # type: ignore[method-assign]
    assert len(refused) == 6
    assert second.status().phase is TorrentPhase.SEEDING  # not paused, rechecked nor moved
    assert not (tmp_path / "elsewhere").exists()


async def test_a_failed_or_closed_torrent_serves_its_metadata_no_more(tmp_path: Path) -> None:
    data = write_content(tmp_path / "seed", (20_000,))
    meta = make_torrent(data, "v1")
    private = Metainfo.from_bytes(
        encode(
            {
                b"info": {
                    b"name": b"private",
                    b"piece length": 16384,
                    b"pieces": hashlib.sha1(b"hello").digest(),
                    b"length": 5,
                    b"private": 1,
                }
            }
        )
    )
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(meta, TorrentOptions(data.parent))
            # A file selection that is not the torrent's fails it (before its storage opens).
            failing = await session.add_torrent(
                private, TorrentOptions(tmp_path / "p", files=frozenset({7}), resume=False)
            )
            await seeding.wait_complete()
            await until(lambda: failing.status().phase is TorrentPhase.FAILED)
            # Never served (private, BEP 27), and still marked so: no ut_metadata offered.
            peer = SimpleNamespace(info_hash=private.info.info_hash)
            assert session.metadata.handshake_fields(peer) == {}  # type: ignore[arg-type]

            assert session.metadata.serving(meta.info.info_hash)
            await seeding.close()
            assert not session.metadata.serving(meta.info.info_hash)  # before: served still


async def test_a_failed_public_torrent_serves_its_metadata_no_more(tmp_path: Path) -> None:
    data = write_content(tmp_path / "seed", (20_000,))
    meta = make_torrent(data, "v1")
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            failing = await session.add_torrent(
                meta, TorrentOptions(data.parent, files=frozenset({7}), resume=False)
            )
            await until(lambda: failing.status().phase is TorrentPhase.FAILED)
            assert not session.metadata.serving(meta.info.info_hash)  # before: served still
