"""The metadata a magnet link fetched, and the copy kept of it for the next run: a ``btmh``
magnet naming the SHA-256 of a v1-only info dictionary fails before anything is saved, and the
kept copy is read bounded and parsed off the event loop."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
import trio
from _engine_helpers import address_of, loopback_config
from _hostile_peer import hostile_peer
from test_hostile_torrents import _serve_metadata

from bip._client import TorrentError, TorrentOptions, TorrentPhase, _resume, open_session
from bip._client._resume import ResumeStore
from bip_bencode import encode
from bip_metainfo import Info, InfoHash, MagnetLink, Metainfo

DEADLINE = 20.0
V1_INFO = encode({b"name": b"x", b"piece length": 16384, b"length": 5, b"pieces": bytes(20)})


async def test_a_v2_magnet_naming_a_v1_dictionary_fails_and_saves_nothing(
    tmp_path: Path,
) -> None:
    # The bytes hash to the magnet's v2 hash (the fetcher takes them), but a v1-only
    # dictionary has no v2 hash: not the torrent the magnet names, and nothing to keep.
    magnet_hash = InfoHash(v2=hashlib.sha256(V1_INFO).digest())
    save = tmp_path / "save"
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            torrent = await session.add_torrent(
                MagnetLink.from_info_hash(magnet_hash), TorrentOptions(save)
            )
            async with (
                hostile_peer(address_of(session), magnet_hash) as peer,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(_serve_metadata, peer, V1_INFO)
                with pytest.raises(TorrentError, match="v2 hash names an info dictionary"):
                    await torrent.wait_complete()
                assert torrent.status().phase is TorrentPhase.FAILED
                nursery.cancel_scope.cancel()
    assert not ResumeStore(save, magnet_hash).torrent_path.exists()


async def test_kept_metadata_is_parsed_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info_hash = InfoHash.from_info_bytes(V1_INFO, v1=True)
    store = ResumeStore(tmp_path, info_hash)
    await store.save_info(Info.from_bytes(V1_INFO))
    on_loop: list[bool] = []
    real = Metainfo.from_bytes

    def spy(data: bytes) -> Metainfo:
        on_loop.append(threading.current_thread() is threading.main_thread())
        return real(data)

    monkeypatch.setattr(Metainfo, "from_bytes", spy)  # the class the store parses with
    saved = await store.load_metadata()
    assert saved is not None
    assert saved[0].info_hash == info_hash
    assert on_loop == [False]


async def test_kept_metadata_larger_than_the_bound_is_not_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info_hash = InfoHash.from_info_bytes(V1_INFO, v1=True)
    store = ResumeStore(tmp_path, info_hash)
    await store.save_info(Info.from_bytes(V1_INFO))
    size = store.torrent_path.stat().st_size
    limits: list[int | None] = []
    real = _resume._read_regular

    def spy(path: Path, limit: int | None = None) -> bytes:
        limits.append(limit)
        return real(path, limit)

    monkeypatch.setattr(_resume, "_read_regular", spy)
    monkeypatch.setattr(_resume, "_MAX_TORRENT_FILE", size)
    assert await store.load_metadata() is not None  # the bound itself is fine
    monkeypatch.setattr(_resume, "_MAX_TORRENT_FILE", size - 1)
    assert await store.load_metadata() is None  # one byte more: refused, fetched again
    assert limits == [size, size - 1]
