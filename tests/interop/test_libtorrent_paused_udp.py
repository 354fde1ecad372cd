"""libtorrent as a BEP 21 partial seed announces to our UDP tracker with event 4 (``paused``).

libtorrent turns every regular announce of a torrent that is finished but not a seed (it has
every piece it wants, and wants only some) into ``event_t::paused``, and writes that value
unchanged into the UDP announce's event field: 4, which BEP 15 does not define. Our server used
to drop such a datagram as malformed, so the partial seed timed out against it and stayed out of
its swarm. Here a two-file torrent is added to libtorrent with only the first file on disk and
file priorities ``[1, 0]``: once its check is done it is a partial seed (no download needed). Its
first announce already says ``paused`` (libtorrent 2.1.1 sends no ``started`` for a torrent
finished at start), and so does a forced re-announce: both must reach the handler as regular
announces marked ``paused``, counted among the announces, the peer kept as a leecher
(``left`` > 0). Having sent no ``started``, libtorrent sends no ``stopped`` either when the
torrent is removed ("not announcing" in its log): the tracker forgets it when it expires.

libtorrent runs in this process (its own network thread); the tracker runs on this test's trio
loop, which keeps answering while the test polls libtorrent between short sleeps.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from bip_metainfo import create_torrent
from bip_utracker._codec import AnnounceEvent, AnnounceRequest, ScrapeStats
from bip_utracker._server import serve_tracker
from bip_utracker._server_core import Refusal, ServerConfig
from bip_utracker._swarm import AnnounceAnswer, SwarmStore

from ._helpers import free_port, require_client
from ._lt_common import HOST, loopback_settings

pytestmark = pytest.mark.interop

PIECE = 16 * 1024
FIRST_SIZE = 4 * PIECE  # whole pieces: no piece spans both files, so the first checks alone
SECOND_SIZE = 3 * PIECE + 100


@dataclass
class Recorder:
    """A tracker handler: the built-in store, recording each announce as the handler sees it."""

    store: SwarmStore = field(default_factory=SwarmStore)
    seen: list[tuple[AnnounceEvent, bool, int]] = field(default_factory=list)

    def announce(
        self, request: AnnounceRequest, peer: bytes, num_want: int, now: float
    ) -> AnnounceAnswer | Refusal:
        self.seen.append((request.event, request.paused, request.left))
        return self.store.announce(request, peer, num_want, now)

    def scrape(self, info_hashes: Sequence[bytes], now: float) -> Sequence[ScrapeStats]:
        return self.store.scrape(info_hashes, now)


def _partial_torrent(workdir: Path, tracker_url: str) -> tuple[Path, bytes]:
    """A v1 torrent of two files with only the first on disk: (its path, its info-hash)."""
    content = workdir / "content"
    content.mkdir(parents=True)
    (content / "first.bin").write_bytes(os.urandom(FIRST_SIZE))
    (content / "second.bin").write_bytes(os.urandom(SECOND_SIZE))
    metainfo = create_torrent(
        content,
        version="v1",
        piece_length=PIECE,
        creation_date=None,
        created_by=None,
        trackers=(tracker_url,),
    )
    assert [f.path for f in metainfo.info.files] == [
        ("content", "first.bin"),
        ("content", "second.bin"),
    ]
    (content / "second.bin").unlink()  # the partial seed never had it
    path = workdir / "partial.torrent"
    path.write_bytes(metainfo.to_bytes())
    info_hash = metainfo.info.info_hash.v1
    assert info_hash is not None
    return path, info_hash


async def test_a_libtorrent_partial_seed_is_served_not_dropped(tmp_path: Path) -> None:
    require_client("libtorrent")
    import libtorrent as lt

    recorder = Recorder()
    config = ServerConfig(interval=1800, rate_limit=None)
    with trio.fail_after(20):
        async with serve_tracker((HOST, 0), config=config, handler=recorder) as server:
            url = f"udp://{HOST}:{server.address[1]}/announce"
            torrent_path, info_hash = _partial_torrent(tmp_path, url)
            overrides: Any = {"stop_tracker_timeout": 1}
            ses = lt.session(loopback_settings(free_port(), overrides=overrides))
            params = lt.add_torrent_params()
            params.ti = lt.torrent_info(str(torrent_path))
            params.save_path = str(tmp_path)
            params.file_priorities = [1, 0]
            handle = ses.add_torrent(params)
            try:
                # Its first announce, once the check found the first file whole.
                while not recorder.seen:
                    await trio.sleep(0.05)
                status = handle.status()
                assert status.is_finished  # a partial seed: finished, not seeding
                assert not status.is_seeding
                assert recorder.store.scrape([info_hash], 0.0) == (ScrapeStats(0, 0, 1),)
                # A regular announce now (as at each interval): "paused" again.
                handle.force_reannounce(0, -1, lt.reannounce_flags_t.ignore_min_interval)
                while len(recorder.seen) < 2:
                    await trio.sleep(0.05)
            finally:
                ses.remove_torrent(handle)
                del handle, ses  # (with no stopped announce to make: see the module's notes)
            stats = server.statistics()
    paused = (AnnounceEvent.NONE, True, SECOND_SIZE)  # left: the second file, which it skips
    assert recorder.seen == [paused, paused]
    assert stats.announces == 2
    assert (stats.malformed, stats.unknown_events, stats.errors_sent) == (0, 0, 0)
    # Served as a leecher (BEP 15 counts no partial seeds), present until it expires.
    assert recorder.store.scrape([info_hash], 0.0) == (ScrapeStats(0, 0, 1),)
