"""The ``left`` a torrent announces is BEP 3's "bytes this peer still has to download" over
the whole torrent, whatever files are selected (libtorrent's ``bytes_left()``): a finished
partial download is no seed to its trackers nor in the DHT (BEP 33), and ``left`` is 0 only
once every piece is verified. The progress shown stays about the selection. ``completed`` is
announced once, when the torrent becomes a seed (libtorrent's finished() calls completed()
only ``if (is_seed())``): not when a partial download finishes."""

from __future__ import annotations

import shutil
from pathlib import Path

import trio
from _discovery_target import NullSink
from _engine_helpers import (
    address_of,
    loopback_config,
    make_torrent,
    piece_bytes,
    seeder_and_leecher,
    spoil_pieces,
    until,
    write_content,
)
from _http_tracker_server import MiniTracker, http_server, query_of

from bip._client import TorrentOptions, open_session
from bip._client._discovery import TrackerAnnouncer, _DhtPlan
from bip._client._http_tracker import HttpTrackerClient
from bip_handshake import PeerId
from bip_metainfo import InfoHash, MagnetLink, Metainfo, create_torrent
from bip_utracker import open_tracker_client

# Odd sizes: in a hybrid torrent each file but the last is padded to a piece boundary (the
# pad bytes are never part of ``left``).
SIZES = (100_001, 70_003, 40_005)
DEADLINE = 20.0
# Real seconds given to an announce that must not come (nothing polls: the announcer waits
# on the torrent's ``seeded`` event, so a wrong one would go out at once).
SETTLE = 0.1
BLOCK = 16384
PEER_ID = PeerId(b"-BP0001-completed001")


def lacking(torrent: Metainfo, selected: int) -> int:
    """The file data of every file but ``selected``: what a download of that file only still
    lacks once it has it (a hybrid torrent's files share no piece)."""
    return torrent.info.total_size - torrent.info.files[selected].length


def announced(requests: list[bytes], event: bytes) -> list[int]:
    """The ``left`` of every announce of ``event`` the tracker heard."""
    queries = [query_of(request) for request in requests]
    return [int(q["left"]) for q in queries if q.get("event") == event]


def events(requests: list[bytes]) -> list[bytes | None]:
    """The ``event`` of every announce the tracker heard (None for a regular one)."""
    return [query_of(request).get("event") for request in requests]


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
                missing = lacking(torrent, 0)
                # Both swarms' "started" said what the torrent lacks: a leecher, not a second
                # seeder.
                await until(lambda: tracker.counts(v1) == (1, 1))
                # No "completed" for it: the torrent is no seed (libtorrent sends it only
                # then), whatever the selection says; the old announcer sent it at once.
                await trio.sleep(SETTLE)
                assert announced(server.requests, b"completed") == []
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
                # Now it is a seed: "completed" in each swarm, once, saying so.
                await until(lambda: len(announced(server.requests, b"completed")) == 2)
                assert announced(server.requests, b"completed") == [0, 0]
                await until(lambda: tracker.counts(v1) == (2, 0))


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
    """A DiscoveryTarget whose ``left`` (and ``downloaded``) the test sets; ``seeded`` too,
    as the torrent does: set when ``left`` reaches 0, replaced when it leaves it."""

    def __init__(self, left: int) -> None:
        self.info_hash = InfoHash(v1=bytes(20))
        self.listen_port = 6881
        self.private = False
        self.completed = trio.Event()
        self.seeded = trio.Event()
        self.ready = trio.Event()
        self.left = left
        self.downloaded = 0

    def transfer(self) -> tuple[int, int, int]:
        return (0, self.downloaded, self.left)


async def test_completed_once_when_every_piece_is_verified() -> None:
    # A partial selection complete from the start: no seed, so trackers may hear "completed"
    # later, once the rest came.
    target = Target(left=5)
    target.completed.set()
    target.ready.set()
    with trio.fail_after(DEADLINE):
        async with (
            http_server(MiniTracker()) as server,
            open_tracker_client(bind_v4="127.0.0.1", bind_v6=None) as udp,
        ):
            announcer = TrackerAnnouncer(
                udp,
                [server.url],
                peer_id=PEER_ID,
                http_client=HttpTrackerClient(),
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(announcer.run, target, NullSink())
                await until(lambda: events(server.requests) == [b"started"])
                # Downloaded, selection complete, a piece still missing: no snatch yet.
                target.downloaded = 1000
                await trio.sleep(SETTLE)
                assert events(server.requests) == [b"started"]
                # A grown selection: downloading again, then every piece is here.
                target.completed = trio.Event()
                target.left = 4
                await trio.sleep(SETTLE / 2)
                target.left = 0
                target.completed.set()
                target.seeded.set()
                await until(lambda: b"completed" in events(server.requests))
                assert announced(server.requests, b"completed") == [0]
                # A piece lost (a failed read, a recheck) and got back: no second one.
                target.completed = trio.Event()
                target.seeded = trio.Event()
                target.left = 3
                await trio.sleep(SETTLE / 2)
                target.left = 0
                target.completed.set()
                target.seeded.set()
                await trio.sleep(SETTLE)
                nursery.cancel_scope.cancel()
    assert events(server.requests) == [b"started", b"completed", b"stopped"]


async def test_completed_when_the_last_piece_is_outside_the_selection(tmp_path: Path) -> None:
    # v1, piece 6 (the last, 13,401 bytes) lies in file 2 only; file 0 is pieces 0-3.
    folder = write_content(tmp_path / "seed", SIZES)
    tracker = MiniTracker()
    with trio.fail_after(DEADLINE):
        async with http_server(tracker) as server:
            torrent = create_torrent(
                folder,
                version="v1",
                piece_length=32768,
                creation_date=None,
                created_by=None,
                trackers=[server.url],
            )
            info = torrent.info
            outside = info.num_pieces - 1
            assert [s.file_index for s in info.piece_slices(outside)] == [2]
            last = piece_bytes(info, folder.parent, outside)
            assert last is not None
            # The leecher has every piece but 0 (selected: it downloads it) and the last.
            down = tmp_path / "down"
            shutil.copytree(folder, down / folder.name)
            spoil_pieces(info, down, [0, outside])
            async with seeder_and_leecher(torrent, folder, trackers=True, redial_interval=0.1) as (
                seeder,
                leecher,
            ):
                download = await leecher.add_torrent(
                    torrent,
                    TorrentOptions(down, peers=(address_of(seeder),), files=frozenset({0})),
                )
                await download.wait_complete()
                assert download.transfer()[1:] == (info.piece_size(0), len(last))
                assert not download.seeded.is_set()
                await until(lambda: b"started" in events(server.requests))
                await trio.sleep(SETTLE)
                assert announced(server.requests, b"completed") == []
                # The piece nobody selected arrives anyway (as one in flight when a selection
                # shrank): bip_disk hashes it, and the torrent is a seed with its selection
                # complete all along.
                handle = download.handle
                assert handle is not None
                for begin in range(0, len(last), BLOCK):
                    data = last[begin : begin + BLOCK]
                    await download._disk.write_block(handle, outside, begin, data)
                with trio.fail_after(5):
                    await download.seeded.wait()
                assert download.transfer()[2] == 0
                await until(lambda: b"completed" in events(server.requests))
                assert announced(server.requests, b"completed") == [0]


async def test_the_dht_seed_flag_wants_every_piece() -> None:
    target = Target(left=5)
    assert not _DhtPlan.of(target).seed
    target.completed.set()  # the selection is complete, the torrent is not
    assert not _DhtPlan.of(target).seed
    target.left = 0
    assert _DhtPlan.of(target).seed
    target.listen_port = 0  # looking only: nothing to announce
    assert not _DhtPlan.of(target).seed
