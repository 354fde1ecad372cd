"""A removal (or a close) while bip_disk's ``add_torrent`` still works on a thread (its
piece verifier, which a cancellation does not stop) waits for that add to end: the disk is
left without the torrent (and, with the data, without its files), and the torrent can be
added again, rather than the disk keeping a storage nobody owns."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio
from _engine_helpers import loopback_config, make_torrent, until, write_content

import bip_disk._manager
from bip._client import Torrent, TorrentOptions, open_session
from bip_disk import PieceVerifier
from bip_metainfo import Info

DEADLINE = 10.0


class _HeldVerifier:
    """Stands in for bip_disk's ``PieceVerifier`` as ``add_torrent`` makes it on a hashing
    thread: the thread waits until the test lets it go, so that the removal or the close
    comes while the add is under way."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.done = threading.Event()

    def __call__(self, info: Info, layers: dict[bytes, bytes]) -> PieceVerifier:
        self.started.set()
        try:
            self.release.wait(DEADLINE)
            return PieceVerifier(info, layers)
        finally:
            self.done.set()


async def _during_the_add(torrent: Torrent, held: _HeldVerifier, over: trio.Event) -> None:
    """Let the held add go once ``torrent`` stopped (the removal or close began) and the
    removal or close is ``over``, or a little later if it waits for the add; then wait until
    the add's thread and what follows it in the torrent's task are over."""
    await until(torrent._stopped.is_set)
    with trio.move_on_after(0.3):
        await over.wait()
    held.release.set()
    await until(held.done.is_set)
    await trio.sleep(0.05)  # the torrent's task, woken by the thread, registers its add


@pytest.mark.parametrize("delete_data", [False, True])
async def test_a_removal_during_the_disks_add_leaves_nothing_on_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delete_data: bool
) -> None:
    data = write_content(tmp_path / "dl", (20_000, 10_000))
    meta = make_torrent(data, "v1")
    held = _HeldVerifier()
    monkeypatch.setattr(bip_disk._manager, "PieceVerifier", held)
    options = TorrentOptions(tmp_path / "dl", resume=False)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            torrent = await session.add_torrent(meta, options)
            await until(held.started.is_set)
            async with trio.open_nursery() as nursery:
                over = trio.Event()
                nursery.start_soon(_during_the_add, torrent, held, over)
                await session.remove_torrent(torrent, delete_data=delete_data)
                over.set()
            # Before: the add registered the torrent after the removal had looked for it.
            assert session.disk.statistics().torrents == 0
            assert (data / "f0.bin").exists() is not delete_data
            assert (data / "sub" / "f1.bin").exists() is not delete_data
            monkeypatch.undo()
            again = await session.add_torrent(meta, options)  # before: "already added"
            await until(lambda: again.handle is not None or again.status().error is not None)
            assert again.status().error is None
            assert session.disk.statistics().torrents == 1


async def test_a_close_during_the_disks_add_leaves_nothing_on_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_content(tmp_path / "dl", (20_000,))
    meta = make_torrent(data, "v1")
    held = _HeldVerifier()
    monkeypatch.setattr(bip_disk._manager, "PieceVerifier", held)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            torrent = await session.add_torrent(meta, TorrentOptions(data.parent, resume=False))
            await until(held.started.is_set)
            async with trio.open_nursery() as nursery:
                over = trio.Event()
                nursery.start_soon(_during_the_add, torrent, held, over)
                await torrent.close()
                over.set()
            # Before: the disk kept a storage whose files the close had closed.
            assert session.disk.statistics().torrents == 0
