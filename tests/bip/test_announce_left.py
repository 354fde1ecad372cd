"""The ``left`` a torrent announces is BEP 3's "bytes this peer still has to download" over
the whole torrent, whatever files are selected (libtorrent's ``bytes_left()``): a finished
partial download is no seed to its trackers nor in the DHT (BEP 33), and ``left`` is 0 only
once every piece is verified. The progress shown stays about the selection."""

from __future__ import annotations

from pathlib import Path

import trio
from _engine_helpers import (
    address_of,
    loopback_config,
    make_torrent,
    seeder_and_leecher,
    until,
    write_content,
)
from _http_tracker_server import MiniTracker, http_server, query_of

from bip._client import TorrentOptions, open_session
from bip._client._discovery import _DhtPlan
from bip_metainfo import InfoHash, MagnetLink, Metainfo, create_torrent

# Odd sizes: in a hybrid torrent each file but the last is padded to a piece boundary (the
# pad bytes are never part of ``left``).
SIZES = (100_001, 70_003, 40_005)
DEADLINE = 20.0


def lacking(torrent: Metainfo, selected: int) -> int:
    """The file data of every file but ``selected``: what a download of that file only still
    lacks once it has it (a hybrid torrent's files share no piece)."""
    return torrent.info.total_size - torrent.info.files[selected].length


def announced(requests: list[bytes], event: bytes) -> list[int]:
    """The ``left`` of every announce of ``event`` the tracker heard."""
    queries = [query_of(request) for request in requests]
    return [int(q["left"]) for q in queries if q.get("event") == event]


async def test_a_finished_partial_download_is_no_seed(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    tracker = MiniTracker()
    with trio.fail_after(DEADLINE):
        async with http_server(tracker) as server:
            torrent = create_torrent(
                folder,
                version="hybrid",
                piece_length=32768,
                creation_date=None,
                created_by=None,
                trackers=[server.url],
            )
            info = torrent.info
            assert any(entry.is_pad for entry in info.files)  # the test means something
            v1 = info.info_hash.swarm_ids()[0]
            async with seeder_and_leecher(torrent, folder, trackers=True, redial_interval=0.1) as (
                seeder,
                leecher,
            ):
                # A full seed announces 0 in both its swarms: the tracker counts a seeder.
                await until(lambda: len(tracker.left) == 2)
                assert set(tracker.left.values()) == {0}
                assert tracker.counts(v1) == (1, 0)
                download = await leecher.add_torrent(
                    torrent,
                    TorrentOptions(
                        tmp_path / "down", peers=(address_of(seeder),), files=frozenset({0})
                    ),
                )
                await download.wait_complete()
                # "completed" (it downloaded what it wanted) still says what the torrent lacks.
                await until(lambda: len(announced(server.requests, b"completed")) == 2)
                missing = lacking(torrent, 0)
                assert announced(server.requests, b"completed") == [missing, missing]
                assert tracker.counts(v1) == (1, 1)  # a leecher, not a second seeder
                assert download.transfer()[2] == missing
                assert not _DhtPlan.of(download).seed  # nor a seed in the DHT (BEP 33)
                # The progress shown is the selection's.
                status = download.status()
                assert status.total == status.done == info.files[0].length
                # Every file: a seed once every piece is verified.
                download.set_files(None)
                assert download.transfer()[2] == missing
                await download.wait_complete()
                assert download.transfer()[2] == 0
                assert _DhtPlan.of(download).seed


async def test_left_between_the_metadata_and_the_check(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", SIZES)
    torrent = make_torrent(folder, "hybrid")
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            # Just added: the metadata is known, the storage is not open yet (no wanted total
            # worked out). Nothing is had: the whole file data is left, never 0.
            download = await session.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", files=frozenset({0}))
            )
            assert download.status().total == 0  # the gap this test is about
            assert download.transfer()[2] == torrent.info.total_size
            await download.ready.wait()
            assert download.transfer()[2] == torrent.info.total_size
            # Nothing selected: complete at once, yet with everything still to download.
            download.set_files(frozenset())
            await download.wait_complete()
            assert download.transfer()[2] == torrent.info.total_size
            assert not _DhtPlan.of(download).seed
            # A magnet link before its metadata: unknown, but not a seed.
            magnet = await session.add_torrent(
                MagnetLink.from_info_hash(InfoHash(v1=bytes(range(20)))),
                TorrentOptions(tmp_path / "m"),
            )
            assert magnet.transfer()[2] == 1
            assert not _DhtPlan.of(magnet).seed


class Target:
    """A DiscoveryTarget whose ``left`` the test sets."""

    def __init__(self, left: int) -> None:
        self.info_hash = InfoHash(v1=bytes(20))
        self.listen_port = 6881
        self.private = False
        self.completed = trio.Event()
        self.ready = trio.Event()
        self.left = left

    def transfer(self) -> tuple[int, int, int]:
        return (0, 0, self.left)


async def test_the_dht_seed_flag_wants_every_piece() -> None:
    target = Target(left=5)
    assert not _DhtPlan.of(target).seed
    target.completed.set()  # the selection is complete, the torrent is not
    assert not _DhtPlan.of(target).seed
    target.left = 0
    assert _DhtPlan.of(target).seed
    target.listen_port = 0  # looking only: nothing to announce
    assert not _DhtPlan.of(target).seed
