"""Our seed to our download, in one process on loopback: multi-file v1, v2 and hybrid
torrents, every piece verified, with and without MSE."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from _engine_helpers import (
    Version,
    address_of,
    loopback_config,
    make_torrent,
    same_files,
    write_content,
)

from bip._client import TorrentOptions, TorrentPhase, open_session
from bip_handshake import EncryptionPolicy

SIZES = (100_000, 0, 70_000, 32768, 5)
DEADLINE = 30.0


@pytest.mark.parametrize("version", ["v1", "v2", "hybrid"])
@pytest.mark.parametrize(
    "encryption", [EncryptionPolicy.PLAINTEXT_ONLY, EncryptionPolicy.REQUIRE_ENCRYPTED]
)
async def test_seed_to_download(
    tmp_path: Path, version: Version, encryption: EncryptionPolicy
) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, version)
    with trio.fail_after(DEADLINE):
        async with (
            open_session(loopback_config(encryption=encryption)) as seeder,
            open_session(loopback_config(encryption=encryption)) as leecher,
        ):
            seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            assert seeding.status().phase is TorrentPhase.SEEDING
            download = await leecher.add_torrent(
                torrent,
                TorrentOptions(tmp_path / "down", peers=(address_of(seeder),)),
            )
            await download.wait_complete()
            status = download.status()
    assert status.complete
    assert status.pieces == status.num_pieces == torrent.info.num_pieces
    assert status.bad_pieces == 0
    assert same_files(folder, tmp_path / "down" / "album")
