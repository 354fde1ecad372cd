"""A torrent named as the save directory's ``.bip`` folder is refused only when its files go
there: a custom storage (``TorrentOptions.storage``) names them its own way, so it takes such
a torrent, from a .torrent or from a magnet link's metadata, as it takes it back next run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio
from _engine_helpers import address_of, loopback_config
from _hostile_peer import hostile_peer
from test_hostile_torrents import _serve_metadata

from bip._client import (
    RESUME_DIRECTORY,
    Torrent,
    TorrentError,
    TorrentOptions,
    TorrentPhase,
    open_session,
)
from bip._client._resume import ResumeStore
from bip_bencode import Encodable, encode
from bip_disk import MemoryFileSystem
from bip_metainfo import InfoHash, MagnetLink, Metainfo

DEADLINE = 20.0
DATA = b"hello"


def _info(*, multi: bool) -> bytes:
    fields: dict[bytes, Encodable] = {
        b"name": b".bip",
        b"piece length": 16384,
        b"pieces": hashlib.sha1(DATA).digest(),
    }
    if multi:
        fields[b"files"] = [{b"length": len(DATA), b"path": [b"dht.state"]}]
    else:
        fields[b"length"] = len(DATA)
    return encode(fields)


async def _downloading(torrent: Torrent) -> None:
    """Wait until ``torrent`` has its metadata and is past its check (or has failed)."""
    ended = (TorrentPhase.DOWNLOADING, TorrentPhase.FAILED)
    while torrent.status().phase not in ended:  # bounded by the caller's fail_after
        await trio.sleep(0.01)
    assert torrent.status().phase is TorrentPhase.DOWNLOADING, torrent.status().error
    assert torrent.status().name == ".bip"


@pytest.mark.parametrize("multi", [True, False], ids=["folder", "single-file"])
async def test_a_custom_storage_takes_a_torrent_named_as_the_state_folder(
    tmp_path: Path, multi: bool
) -> None:
    torrent = Metainfo.from_bytes(b"d4:info" + _info(multi=multi) + b"e")
    memory = MemoryFileSystem()
    memory.write(".bip/dht.state" if multi else ".bip", 0, DATA)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            options = TorrentOptions(tmp_path, storage=lambda _: memory)
            seed = await session.add_torrent(torrent, options)
            await seed.wait_complete()
            assert seed.status().name == ".bip"
    # The state folder on disk holds the resume data only: the torrent's file is in memory.
    assert (tmp_path / RESUME_DIRECTORY).is_dir()
    assert not (tmp_path / RESUME_DIRECTORY / "dht.state").exists()


async def test_a_custom_storage_takes_a_magnet_whose_metadata_names_the_state_folder(
    tmp_path: Path,
) -> None:
    raw = _info(multi=True)
    info_hash = InfoHash.from_info_bytes(raw, v1=True)
    magnet = MagnetLink.from_info_hash(info_hash)
    custom = TorrentOptions(tmp_path, storage=lambda _: MemoryFileSystem())
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            torrent = await session.add_torrent(magnet, custom)
            async with (
                hostile_peer(address_of(session), info_hash) as peer,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(_serve_metadata, peer, raw)
                await _downloading(torrent)
                nursery.cancel_scope.cancel()
        # kept for the next run, which takes it back from there with the custom storage...
        assert ResumeStore(tmp_path, info_hash).torrent_path.exists()
        async with open_session(loopback_config()) as session:
            again = await session.add_torrent(magnet, custom)
            await _downloading(again)
        # ...and refuses it with the default one, whose files would go into the state folder
        async with open_session(loopback_config()) as session:
            default = await session.add_torrent(magnet, TorrentOptions(tmp_path))
            with pytest.raises(TorrentError, match=rf"{RESUME_DIRECTORY}.*resume data"):
                await default.wait_complete()
    assert not (tmp_path / RESUME_DIRECTORY / "dht.state").exists()
