"""Two magnet links of one hybrid torrent in one session: one naming its v1 hash, one its
v2 hash. Both are accepted (no swarm id in common); the one that learns the full hashes
while the other holds one of them fails (libtorrent's ``duplicate_torrent``) instead of
taking the other's swarm over, and removing it leaves the other whole."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from _engine_helpers import loopback_config, make_torrent, until, write_content

from bip._client import TorrentError, TorrentOptions, TorrentPhase, open_session
from bip._client._resume import ResumeStore
from bip_metainfo import InfoHash, MagnetLink


async def test_second_magnet_of_a_hybrid_fails_and_leaves_the_first_whole(
    tmp_path: Path,
) -> None:
    folder = write_content(tmp_path / "seed", (20_000,))
    info = make_torrent(folder, "hybrid").info
    full = info.info_hash
    assert full.v1 is not None
    assert full.v2 is not None
    by_v1, by_v2 = InfoHash(v1=full.v1), InfoHash(v2=full.v2)
    v1_id, v2_id = full.swarm_ids()
    # The v2 magnet's save directory keeps the metadata of an earlier run: it learns the
    # full hashes at once, with no peer.
    await ResumeStore(tmp_path / "d2", by_v2).save_info(info)
    with trio.fail_after(10):
        async with open_session(loopback_config()) as session:
            first = await session.add_torrent(
                MagnetLink.from_info_hash(by_v1), TorrentOptions(tmp_path / "d1")
            )
            second = await session.add_torrent(
                MagnetLink.from_info_hash(by_v2), TorrentOptions(tmp_path / "d2")
            )
            await until(lambda: second.status().phase is TorrentPhase.FAILED)
            error = second.status().error
            assert error is not None
            assert "already in the session" in error
            assert repr(first) in error  # the torrent it collides with is named
            # Nothing of the other hash was taken: each swarm id finds its own torrent,
            # and the handshaker never served the full hash.
            assert session.find(v1_id) is first
            assert session.find(v2_id) is second
            assert first.status().phase is TorrentPhase.METADATA
            assert full not in session.handshaker.torrents
            assert by_v1 in session.handshaker.torrents
            assert not session.metadata.serving(by_v1)

            await session.remove_torrent(second)
            assert session.torrents == (first,)
            assert session.find(v1_id) is first
            assert session.find(v2_id) is None
            assert by_v1 in session.handshaker.torrents
            # The v2 magnet can be added again now that its twin is gone (and fails alike:
            # the removal deleted the saved metadata, kept again here).
            await ResumeStore(tmp_path / "d2", by_v2).save_info(info)
            again = await session.add_torrent(
                MagnetLink.from_info_hash(by_v2), TorrentOptions(tmp_path / "d2")
            )
            await until(lambda: again.status().phase is TorrentPhase.FAILED)
            assert session.find(v1_id) is first
            with pytest.raises(TorrentError, match="already in the session"):
                await again.wait_complete()
