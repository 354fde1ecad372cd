"""Mends of the resume files' writes and moves (``.bip/HASH.*``).

A file's new copy is written to a temporary file made for it, never to one found at its
name: a link planted there was followed (bip overwrote a file outside the save directory,
and the rename left ``HASH.resume`` a link to it), and a FIFO blocked the open in a thread
no cancellation reaches (closing the session hung). A failed write leaves no temporary
behind, and those of a crash go with the torrent's files. Moving the files to another save
directory reads each no further than its loader would.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio

from bip._client import _resume
from bip._client._resume import ResumeStore, SavedState
from bip_metainfo import InfoHash

DEADLINE = 2.0
HASH = bytes(range(20))
FIFOS = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
LINKS = pytest.mark.skipif(os.name != "posix", reason="symbolic links need privileges")

Save = Callable[[ResumeStore], Awaitable[None]]


async def _save_resume(store: ResumeStore) -> None:
    await store.save_resume(b"d6:format15:bip-disk resumee")


async def _save_peers(store: ResumeStore) -> None:
    await store.save_peers([], [])


async def _save_selection(store: ResumeStore) -> None:
    await store.save_selection(frozenset({0}))


async def _save_state(store: ResumeStore) -> None:
    await store.save_state(SavedState(paused=True))


SAVES: dict[str, Save] = {
    "resume": _save_resume,
    "peers": _save_peers,
    "selection": _save_selection,
    "state": _save_state,
}


def _store(save_dir: Path) -> ResumeStore:
    store = ResumeStore(save_dir, InfoHash(v1=HASH))
    store.directory.mkdir(parents=True, exist_ok=True)
    return store


def _names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


@contextlib.contextmanager
def _unblocked_after(path: Path, seconds: float) -> Iterator[None]:
    """Should a write open this FIFO anyway (the bug), give it a reader after ``seconds``:
    the test fails on its clock instead of hanging."""

    def unblock() -> None:
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))

    timer = threading.Timer(seconds, unblock)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        unblock()


@LINKS
@pytest.mark.parametrize("suffix", list(SAVES))
async def test_a_link_at_the_old_temporary_name_is_not_followed(
    tmp_path: Path, suffix: str
) -> None:
    store = _store(tmp_path / "downloads")
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    target = store.directory / f"{HASH.hex()}.{suffix}"
    (store.directory / f"{target.name}.tmp").symlink_to(victim)
    with trio.fail_after(DEADLINE):
        await SAVES[suffix](store)
    assert victim.read_bytes() == b"precious"
    assert not target.is_symlink()
    assert target.is_file()


@FIFOS
async def test_a_fifo_at_the_old_temporary_name_does_not_block_a_save(tmp_path: Path) -> None:
    store = _store(tmp_path)
    fifo = store.resume_path.with_name(store.resume_path.name + ".tmp")
    os.mkfifo(fifo)
    with _unblocked_after(fifo, 2 * DEADLINE), trio.fail_after(DEADLINE):
        await store.save_resume(b"data")
    assert store.resume_path.read_bytes() == b"data"


@LINKS
async def test_whatever_is_at_a_temporary_name_drawn_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The name is random, but should a link or a FIFO be at the one drawn, another is drawn.
    store = _store(tmp_path / "downloads")
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    drawn = itertools.chain(["planted", "fifo"], itertools.count())
    monkeypatch.setattr(_resume, "secrets", SimpleNamespace(token_hex=lambda _: str(next(drawn))))
    name = store.resume_path.name
    (store.directory / f"{name}.planted.tmp").symlink_to(victim)
    os.mkfifo(store.directory / f"{name}.fifo.tmp")
    with trio.fail_after(DEADLINE):
        await store.save_resume(b"data")
    assert victim.read_bytes() == b"precious"
    assert store.resume_path.read_bytes() == b"data"
    assert _names(store.directory) == [name, f"{name}.fifo.tmp", f"{name}.planted.tmp"]


async def test_a_failed_write_leaves_no_temporary_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    await store.save_resume(b"old")

    def failing_sync(fd: int) -> None:
        raise OSError(errno.EIO, "the disk failed")

    monkeypatch.setattr(_resume, "_fsync", failing_sync)
    with trio.fail_after(DEADLINE), pytest.raises(OSError, match="the disk failed"):
        await store.save_resume(b"new")
    assert store.resume_path.read_bytes() == b"old"
    assert _names(store.directory) == [store.resume_path.name]


async def test_a_failed_rename_leaves_no_temporary_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)

    def failing_replace(source: object, target: object) -> None:
        raise OSError(errno.EXDEV, "cannot rename")

    monkeypatch.setattr(os, "replace", failing_replace)
    with trio.fail_after(DEADLINE), pytest.raises(OSError, match="cannot rename"):
        await store.save_state(SavedState())
    assert _names(store.directory) == []


async def test_the_temporaries_of_a_crash_go_with_the_torrent(tmp_path: Path) -> None:
    store = _store(tmp_path)
    await store.save_resume(b"data")
    name = store.resume_path.name
    for stale in (f"{name}.0123456789abcdef.tmp", f"{name}.tmp", f"{HASH.hex()}.state.ab.tmp"):
        (store.directory / stale).write_bytes(b"half")
    with trio.fail_after(DEADLINE):
        await store.forget_all()
    assert not store.directory.exists()


async def test_the_temporaries_of_another_torrent_stay(tmp_path: Path) -> None:
    store = _store(tmp_path)
    other = f"{bytes(20).hex()}.resume.0123.tmp"
    (store.directory / other).write_bytes(b"another torrent's write")
    await store.save_resume(b"data")
    with trio.fail_after(DEADLINE):
        await store.forget_all()
    assert _names(store.directory) == [other]


async def test_a_move_leaves_the_old_temporaries_behind_it_not_in_the_new_place(
    tmp_path: Path,
) -> None:
    old = _store(tmp_path / "old")
    await old.save_resume(b"data")
    (old.directory / f"{old.resume_path.name}.0123.tmp").write_bytes(b"half")
    new = old.moved_to(tmp_path / "new")
    with trio.fail_after(DEADLINE):
        await new.take_files_of(old)
    assert not old.directory.exists()  # nothing of the torrent's left there: removed
    assert _names(new.directory) == [new.resume_path.name]
    assert new.resume_path.read_bytes() == b"data"


@pytest.mark.parametrize(
    ("suffix", "limit"),
    [("peers", _resume._MAX_PEERS_FILE), ("state", _resume._MAX_STATE_FILE)],
)
async def test_a_move_does_not_take_a_file_larger_than_its_loader_reads(
    tmp_path: Path, suffix: str, limit: int, caplog: pytest.LogCaptureFixture
) -> None:
    # Such a file is not one we wrote (its loader ignores it): it is not read whole into
    # memory to be copied (one planted in the old place could be any size), nor moved.
    old = _store(tmp_path / "old")
    await old.save_resume(b"data")
    huge = old.directory / f"{HASH.hex()}.{suffix}"
    huge.write_bytes(b"x" * (limit + 1))
    new = old.moved_to(tmp_path / "new")
    with trio.fail_after(DEADLINE), caplog.at_level(logging.WARNING, "bip.client"):
        await new.take_files_of(old)
    assert _names(new.directory) == [new.resume_path.name]
    assert huge.stat().st_size == limit + 1  # left where it was
    assert f"{huge.name}: larger than" in caplog.text
