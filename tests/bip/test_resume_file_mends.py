"""Mends of the resume files' writes and moves (``.bip/HASH.*``).

A file's new copy is written to a temporary file made for it, never to one found at its
name: a link planted there was followed (bip overwrote a file outside the save directory,
and the rename left ``HASH.resume`` a link to it), and a FIFO blocked the open in a thread
no cancellation reaches (closing the session hung). A failed write leaves no temporary
behind, and those of a crash go with the torrent's files. Moving the files to another save
directory reads each no further than its loader would.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import itertools
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio

from bip import _cmd_dht, _cmd_download
from bip._client import RESUME_DIRECTORY, ClientConfig, _resume
from bip._client._resume import ResumeStore, SavedState
from bip._cmd_download import DHT_STATE, _save_dht_state, open_dht_node
from bip_dht import DHTConfig, LocalProtocolError, _node_state
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
    for stale in (
        f"{name}.0123456789abcdef.tmp",
        f"{name}.tmp",
        f"{HASH.hex()}.state.89abcdef.tmp",
    ):
        (store.directory / stale).write_bytes(b"half")
    with trio.fail_after(DEADLINE):
        await store.forget_all()
    assert not store.directory.exists()


async def test_the_temporaries_of_another_torrent_stay(tmp_path: Path) -> None:
    store = _store(tmp_path)
    other = f"{bytes(20).hex()}.resume.0123abcd.tmp"
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
    (old.directory / f"{old.resume_path.name}.0123abcd.tmp").write_bytes(b"half")
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


# -- Review r3 ------------------------------------------------------------------------------
# bip download's DHT state (.bip/dht.state) is written and read as the resume files are; the
# temporaries of a crash go at a torrent's first save (a minute old at least); a move to
# another spelling of the same directory keeps every file.

STALE = 120.0  # seconds: older than any write in flight


def _age(path: Path, seconds: float) -> None:
    when = time.time() - seconds
    os.utime(path, (when, when), follow_symlinks=False)


@contextlib.contextmanager
def _fed_after(path: Path, seconds: float) -> Iterator[None]:
    """Should a read open this FIFO anyway (the bug), give it a writer after ``seconds``
    (which closes at once: the read ends): the test fails on its clock, never hangs."""

    def feed() -> None:
        with contextlib.suppress(OSError):  # no reader there: nothing to unblock
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

    timer = threading.Timer(seconds, feed)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        feed()


def _dht_args() -> argparse.Namespace:
    return argparse.Namespace(no_dht=False, dht_bootstrap=[])


def _dht_config() -> ClientConfig:
    return ClientConfig(listen=(("127.0.0.1", 0),))


@LINKS
async def test_a_link_at_the_dht_states_old_temporary_name_is_not_followed(
    tmp_path: Path,
) -> None:
    path = tmp_path / RESUME_DIRECTORY / DHT_STATE
    path.parent.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    path.with_name(f"{DHT_STATE}.tmp").symlink_to(victim)
    with trio.fail_after(DEADLINE):
        await _save_dht_state(path, b"state")
    assert victim.read_bytes() == b"precious"
    assert not path.is_symlink()
    assert path.read_bytes() == b"state"


@FIFOS
async def test_a_fifo_at_the_dht_states_old_temporary_name_does_not_block_its_save(
    tmp_path: Path,
) -> None:
    path = tmp_path / RESUME_DIRECTORY / DHT_STATE
    path.parent.mkdir()
    fifo = path.with_name(f"{DHT_STATE}.tmp")
    os.mkfifo(fifo)
    with _unblocked_after(fifo, 2 * DEADLINE), trio.fail_after(DEADLINE):
        await _save_dht_state(path, b"state")
    assert path.read_bytes() == b"state"


async def test_the_dht_state_is_written_durably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(_resume, "_fsync", synced.append)
    path = tmp_path / RESUME_DIRECTORY / DHT_STATE
    with trio.fail_after(DEADLINE):
        await _save_dht_state(path, b"state")
    assert path.read_bytes() == b"state"
    assert len(synced) >= 2  # the temporary file, then its directory (and .bip, made)
    assert _names(path.parent) == [DHT_STATE]


@FIFOS
async def test_a_fifo_at_the_dht_state_does_not_block_the_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / RESUME_DIRECTORY / DHT_STATE
    path.parent.mkdir()
    os.mkfifo(path)
    with (
        _fed_after(path, 2 * DEADLINE),
        trio.fail_after(DEADLINE),
        caplog.at_level(logging.WARNING, "bip"),
    ):
        async with open_dht_node(_dht_args(), _dht_config(), tmp_path) as (dht, _router):
            assert dht is not None
    assert f"{path}: cannot read it" in caplog.text
    assert path.is_file()  # the state saved at the end took the FIFO's place


async def test_the_dht_state_is_read_no_further_than_its_loader_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One planted there could be any size: never read whole into memory.
    path = tmp_path / RESUME_DIRECTORY / DHT_STATE
    path.parent.mkdir()
    limit = _cmd_dht._MAX_STATE_SIZE
    with path.open("wb") as file:
        file.truncate(4 * limit)  # sparse: no disk spent
    given: list[int] = []

    def refusing_open_dht(*args: object, state: bytes | None = None, **kwargs: object) -> None:
        given.append(-1 if state is None else len(state))
        raise RuntimeError("not started in this test")

    monkeypatch.setattr(_cmd_download, "open_dht", refusing_open_dht)
    with trio.fail_after(DEADLINE), pytest.raises(RuntimeError, match="not started"):
        async with open_dht_node(_dht_args(), _dht_config(), tmp_path):
            pass
    assert given == [limit + 1]  # one byte past: the loader refuses it as too large


def test_the_dht_state_limit_is_above_what_its_loader_reads() -> None:
    # The most bip_dht's decode_state takes (whatever max_bootstrap_addresses): a state it
    # would read must never be cut short by ours.
    most = 2 * _node_state._MAX_TABLE_BYTES + 4096 * 24 + 1024
    assert most <= _cmd_dht._MAX_STATE_SIZE
    with pytest.raises(LocalProtocolError, match="max_bootstrap_addresses"):
        DHTConfig(max_bootstrap_addresses=4097)


async def test_a_dht_states_stale_temporaries_go_at_its_save(tmp_path: Path) -> None:
    path = tmp_path / RESUME_DIRECTORY / DHT_STATE
    path.parent.mkdir()
    stale = [f"{DHT_STATE}.0123abcd.tmp", f"{DHT_STATE}.tmp"]
    fresh = f"{DHT_STATE}.89abcdef.tmp"  # another bip's save under way, maybe
    for name in (*stale, fresh, "other.state.0123abcd.tmp"):
        (path.parent / name).write_bytes(b"half")
    for name in (*stale, "other.state.0123abcd.tmp"):
        _age(path.parent / name, STALE)
    with trio.fail_after(DEADLINE):
        await _save_dht_state(path, b"state")
    assert _names(path.parent) == [DHT_STATE, fresh, "other.state.0123abcd.tmp"]


async def test_the_temporaries_of_a_crash_go_at_the_torrents_first_save(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    name = store.resume_path.name
    stale = [f"{name}.0123abcd.tmp", f"{name}.tmp", f"{HASH.hex()}.torrent.0123456789abcdef.tmp"]
    fresh = f"{HASH.hex()}.state.89abcdef.tmp"  # a write under way, maybe: left alone
    another = f"{bytes(20).hex()}.resume.0123abcd.tmp"  # another torrent's
    for leftover in (*stale, fresh, another):
        (store.directory / leftover).write_bytes(b"half")
    for leftover in (*stale, another):
        _age(store.directory / leftover, STALE)
    with trio.fail_after(DEADLINE):
        await store.save_state(SavedState(paused=True))
    assert _names(store.directory) == sorted([another, fresh, store.state_path.name])


@LINKS
async def test_a_stale_link_at_a_temporary_name_goes_not_its_target(tmp_path: Path) -> None:
    store = _store(tmp_path / "downloads")
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    link = store.directory / f"{store.resume_path.name}.0123abcd.tmp"
    link.symlink_to(victim)
    _age(link, STALE)
    with trio.fail_after(DEADLINE):
        await store.save_resume(b"data")
    assert victim.read_bytes() == b"precious"
    assert _names(store.directory) == [store.resume_path.name]


def test_a_temporary_name_is_short(tmp_path: Path) -> None:
    # Windows paths are short (260 characters unless long paths are on): 32 random bits,
    # with O_EXCL and another draw on a clash, are plenty.
    fd, temporary = _resume._create_temporary(tmp_path / "x")
    os.close(fd)
    assert len(temporary.name) == len("x.01234567.tmp")


@LINKS
async def test_a_move_to_another_spelling_of_the_same_directory_keeps_every_file(
    tmp_path: Path,
) -> None:
    old = _store(tmp_path / "seed")
    for save in SAVES.values():
        await save(old)
    before = {path.name: path.read_bytes() for path in old.directory.iterdir()}
    alias = tmp_path / "alias"
    alias.symlink_to(tmp_path / "seed")
    new = old.moved_to(alias)
    with trio.fail_after(DEADLINE):
        await new.take_files_of(old)
    assert {path.name: path.read_bytes() for path in old.directory.iterdir()} == before
    assert len(before) == len(SAVES)


async def test_a_move_skips_a_file_that_is_already_the_target(tmp_path: Path) -> None:
    # Another path to the same file (a hard link here; a bind mount, a link to it): not
    # written over itself, nor deleted as the source.
    old = _store(tmp_path / "old")
    await old.save_state(SavedState(paused=True))
    new = old.moved_to(tmp_path / "new")
    new.directory.mkdir(parents=True)
    os.link(old.state_path, new.state_path)
    inode = new.state_path.stat().st_ino
    with trio.fail_after(DEADLINE):
        await new.take_files_of(old)
    assert new.state_path.stat().st_ino == inode
    assert new.state_path.read_bytes() == _resume.encode_saved_state(SavedState(paused=True))


# -- Review r8 ------------------------------------------------------------------------------
# Only names bip makes are taken for temporaries: NAME.<8 or 16 lowercase hex>.tmp, and the
# fixed NAME.tmp of older versions only in a .bip directory; bip dht --state FILE deletes no
# file of the user's beside FILE.


def test_bip_dht_state_deletes_only_the_temporaries_bip_made(tmp_path: Path) -> None:
    from bip._cmd_dht import _write_state

    mine = ["notes.old.tmp", "notes.draft-2025.tmp", "notes.tmp", "notes.0123ABCD.tmp"]
    made = ["notes.0123abcd.tmp", "notes.0123456789abcdef.tmp"]
    for name in (*mine, *made):
        (tmp_path / name).write_bytes(b"user data")
        _age(tmp_path / name, STALE)
    _write_state(str(tmp_path / "notes"), b"state")
    assert _names(tmp_path) == sorted([*mine, "notes"])


async def test_bip_download_dht_state_deletes_the_old_fixed_temporary_in_bip(
    tmp_path: Path,
) -> None:
    path = tmp_path / RESUME_DIRECTORY / DHT_STATE
    path.parent.mkdir()
    kept = f"{DHT_STATE}.old.tmp"  # no name bip makes
    for name in (f"{DHT_STATE}.tmp", f"{DHT_STATE}.0123abcd.tmp", kept):
        (path.parent / name).write_bytes(b"half")
        _age(path.parent / name, STALE)
    with trio.fail_after(DEADLINE):
        await _save_dht_state(path, b"state")
    assert _names(path.parent) == sorted([DHT_STATE, kept])
