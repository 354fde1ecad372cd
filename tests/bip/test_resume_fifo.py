"""Resume files that are not regular files: a FIFO (or a directory) put where ``.bip/HASH.*``
goes is refused at once, never waited on (reading a FIFO waits for a writer forever, in a
thread no cancellation reaches, and the torrent's start with it)."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from _engine_helpers import loopback_config, make_torrent, write_content

from bip._client import TorrentOptions, TorrentPhase, open_session
from bip._client._resume import ResumeStore, SavedPeers
from bip_metainfo import InfoHash

DEADLINE = 10.0
SUFFIXES = ("resume", "torrent", "peers", "selection", "state")


@contextlib.contextmanager
def unblocked_after(paths: list[Path], seconds: float) -> Iterator[None]:
    """Should a read wait on one of these FIFOs anyway (the bug), give it a writer after
    ``seconds``: it reads nothing and the test fails on its clock, instead of hanging."""

    def unblock() -> None:
        for path in paths:
            with contextlib.suppress(OSError):  # ENXIO: nobody reads it, as it should be
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

    timer = threading.Timer(seconds, unblock)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        unblock()


def fifos(store: ResumeStore) -> list[Path]:
    store.directory.mkdir(parents=True, exist_ok=True)
    paths = [store.directory / store.resume_path.name.replace(".resume", f".{s}") for s in SUFFIXES]
    for path in paths:
        os.mkfifo(path)
    return paths


async def test_every_loader_refuses_a_fifo_at_once(tmp_path: Path) -> None:
    store = ResumeStore(tmp_path, InfoHash(v1=bytes(20)))
    paths = fifos(store)
    with unblocked_after(paths, DEADLINE), trio.fail_after(DEADLINE / 2):
        assert await store.load_resume() is None
        assert await store.load_metadata() is None
        assert await store.load_peers() == SavedPeers()
        assert await store.load_selection() is None
        assert await store.load_state() is None  # cannot be read: a warning, not "unpaused"
        moved = store.moved_to(tmp_path / "elsewhere")
        with pytest.raises(OSError, match="not a regular file") as caught:
            await moved.take_files_of(store)
        assert caught.value.errno == errno.EINVAL


async def test_a_directory_is_refused_too(tmp_path: Path) -> None:
    store = ResumeStore(tmp_path, InfoHash(v1=bytes(20)))
    store.state_path.mkdir(parents=True)
    with trio.fail_after(DEADLINE):
        assert await store.load_state() is None
        assert await store.load_resume() is None


async def test_a_fifo_for_a_state_file_does_not_hang_add_torrent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The reviewer's case: .bip/HASH.state is a FIFO; add_torrent used to hang, uncancellably.
    folder = write_content(tmp_path / "seed", (100_000, 50_000))
    torrent = make_torrent(folder, "v1")
    store = ResumeStore(folder.parent, torrent.info.info_hash)
    paths = fifos(store)
    with unblocked_after(paths, DEADLINE), trio.fail_after(DEADLINE / 2):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            assert seeding.status().phase is TorrentPhase.SEEDING
    assert "not a regular file" in caplog.text
