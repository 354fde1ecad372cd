"""A magnet link's torrent removed while its saved metadata is parsed (in a thread, which a
removal does not cut short) stays removed: the parse's result came back with no checkpoint,
and the run went on to register the torrent again under its full hybrid hashes (session and
handshaker) and to serve its metadata, after its removal."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio
from _engine_helpers import loopback_config, make_torrent, write_content

from bip._client import TorrentOptions, _resume, open_session
from bip._client._resume import ResumeStore
from bip_metainfo import InfoHash, MagnetLink, Metainfo

SIZES = (40_000, 5)


class _BlockingMetainfo:
    """Stands for ``Metainfo`` in the resume store: its parse blocks until released."""

    started = threading.Event()
    release = threading.Event()

    @classmethod
    def from_bytes(cls, data: bytes) -> Metainfo:
        cls.started.set()
        cls.release.wait(5)  # bounded: a failing test must not hang the worker thread
        return Metainfo.from_bytes(data)


async def test_a_torrent_removed_while_its_metadata_parses_stays_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torrent = make_torrent(write_content(tmp_path / "seed", SIZES), "hybrid")
    full = torrent.info.info_hash
    known = InfoHash(v1=full.v1)  # the magnet's hash: the v2 one is learnt from the metadata
    down = tmp_path / "down"
    await ResumeStore(down, known).save_info(torrent.info)
    monkeypatch.setattr(_BlockingMetainfo, "started", threading.Event())
    monkeypatch.setattr(_BlockingMetainfo, "release", threading.Event())
    monkeypatch.setattr(_resume, "Metainfo", _BlockingMetainfo)

    async def release_soon() -> None:
        await trio.sleep(0.1)  # the removal is waiting for the run to end by then
        _BlockingMetainfo.release.set()

    with trio.fail_after(10):
        async with open_session(loopback_config()) as session:
            magnet = MagnetLink.from_info_hash(known)
            removed = await session.add_torrent(magnet, TorrentOptions(down))
            while not _BlockingMetainfo.started.is_set():
                await trio.sleep(0.01)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(release_soon)
                await session.remove_torrent(removed)
            await trio.sleep(0.05)  # anything the run would still do, done
            assert session.torrents == ()
            assert session.find(known) is None
            assert session.find(full) is None
            assert not session._torrents
            assert not any(h.v1 == full.v1 or h.v2 == full.v2 for h in session.handshaker.torrents)
            assert not session.metadata.serving(full)
            assert not session.metadata.serving(known)
            assert not session.layers.serving(full)
            # Added again (its resume files went with the removal), it runs as any.
            await ResumeStore(down, known).save_info(torrent.info)
            again = await session.add_torrent(magnet, TorrentOptions(down))
            while again.info is None:
                await trio.sleep(0.01)
            assert again.info_hash == full
            assert session.find(full) is again
            assert full in session.handshaker.torrents
            assert session.metadata.serving(full)
