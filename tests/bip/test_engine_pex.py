"""Peer exchange (BEP 11) between our sessions: a leecher that knows only another leecher
learns the seed's address from it and connects to the seed too.

The seed serves slowly (each piece read from its disk takes a while), so that the first
leecher is still downloading, and still connected to the seed, when peer exchange runs (on
the peer manager's one-second tick).
"""

from __future__ import annotations

import time
from pathlib import Path

import trio
from _engine_helpers import address_of, loopback_config, make_torrent, same_files, write_content

from bip._client import TorrentOptions, open_session
from bip_disk import NativeFileSystem

SIZES = (250_000, 274_288)  # 32 pieces of 16 KiB
DEADLINE = 60.0
READ_DELAY = 0.3  # per piece read: 32 pieces over 4 upload workers, about 2.4 s


class SlowReads(NativeFileSystem):
    """A NativeFileSystem whose reads take ``READ_DELAY`` seconds once ``slow`` is set."""

    slow = False

    def read(self, path: str, offset: int, length: int) -> bytes:
        """Read, slowly (on the disk manager's worker thread, not the event loop)."""
        if self.slow:
            time.sleep(READ_DELAY)
        return super().read(path, offset, length)


async def test_leecher_finds_the_seed_through_pex(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "v1", piece_length=16384)
    storage = SlowReads(folder.parent)
    with trio.fail_after(DEADLINE):
        async with (
            open_session(loopback_config()) as seeder,
            open_session(loopback_config()) as first,
            open_session(loopback_config(listen=(("127.0.0.2", 0),))) as second,
        ):
            seeding = await seeder.add_torrent(
                torrent,
                TorrentOptions(folder.parent, files=frozenset(), storage=lambda _: storage),
            )
            await seeding.wait_complete()
            storage.slow = True
            one = await first.add_torrent(
                torrent, TorrentOptions(tmp_path / "one", peers=(address_of(seeder),))
            )
            # The second leecher is told about the first one only.
            two = await second.add_torrent(
                torrent, TorrentOptions(tmp_path / "two", peers=(address_of(first),))
            )
            await two.wait_complete()
            await one.wait_complete()
            assert second.pex.statistics().addresses_discovered >= 1
            assert first.pex.statistics().messages_sent >= 1
            assert second.handshaker.statistics().outbound_completed >= 2  # the seed too
    assert same_files(folder, tmp_path / "two" / "album")
