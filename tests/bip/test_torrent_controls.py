"""Pausing, resuming and removing a torrent of a session (libtorrent's ``pause``, ``resume``
and ``remove_torrent``): our seed and our download on loopback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio
import trio.testing
from _engine_helpers import (
    address_of,
    download_from,
    loopback_config,
    make_torrent,
    same_files,
    seeder_and_leecher,
    until,
    write_content,
)
from _http_file_server import file_server
from _http_tracker_server import MiniTracker, http_server, query_of

from bip._client import (
    Session,
    Torrent,
    TorrentError,
    TorrentOptions,
    TorrentPhase,
    open_session,
)
from bip._client._discovery import DiscoveryTarget, TrackerAnnouncer
from bip._client._torrent import REASON_PAUSED, REASON_REMOVED
from bip._client._webseed import WebSeedState
from bip_handshake import PeerSink
from bip_metainfo import MagnetLink, Metainfo, create_torrent

DEADLINE = 30.0
PIECE = 32768
RATE = 1024 * 1024  # the download's limit: about 2 s for the content, time to pause it


def content(tmp_path: Path) -> tuple[Path, Metainfo]:
    folder = write_content(tmp_path / "seed", [2 * 1024 * 1024 - 5000, 5000])
    return folder, make_torrent(folder, "v1", piece_length=PIECE)


def resume_files(save_dir: Path) -> list[str]:
    folder = save_dir / ".bip"
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


async def refused_inbound(dialler: Session, target: Session, torrent: Torrent) -> None:
    """``dialler`` dials ``target`` for ``torrent``; wait until ``target`` refuses it as a
    torrent it does not serve."""
    before = target.handshaker.statistics().unknown_info_hash
    assert dialler.handshaker.connect(torrent.info_hash, address_of(target))
    await until(lambda: target.handshaker.statistics().unknown_info_hash > before)


# -- pause and resume --------------------------------------------------------------------------


async def test_pause_a_download_then_resume_it(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    removed: list[str] = []
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(
            torrent, folder, download_rate_limit=RATE, limit_local_peers=True
        ) as (seeder, leecher):
            [seeding] = seeder.torrents
            down = tmp_path / "down"
            download = await download_from(seeder, leecher, torrent, down)
            await until(lambda: download.status().pieces >= 2)
            original = download.peer_removed

            def peer_removed(peer: object) -> None:
                removed.append("removed")
                original(peer)  # type: ignore[arg-type]

            download.peer_removed = peer_removed  # type: ignore[method-assign]
            download.pause()
            status = download.status()
            assert download.paused
            assert status.phase is TorrentPhase.PAUSED
            assert not status.complete
            assert status.done < status.total
            # Every peer goes, and the seed sees it go.
            await until(lambda: not download.peers and not seeding.peers)
            assert removed
            # The storage and what it verified stay; the peer list is kept.
            assert download.handle is not None
            pieces = status.pieces
            assert len(leecher.disk.have(download.handle)) >= pieces
            peer_list = leecher.peer_list(download)
            assert peer_list is not None
            assert len(peer_list) >= 1
            # The resume data is saved at once.
            await until(lambda: any(n.endswith(".resume") for n in resume_files(down)))
            # No dial, however often the connector is woken; inbound refused.
            attempts = leecher.handshaker.statistics().outbound_attempts
            for _ in range(3):
                leecher.connector.wake()
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert leecher.handshaker.statistics().outbound_attempts == attempts
            await refused_inbound(seeder, leecher, download)
            assert not download.peers
            download.pause()  # idempotent
            assert download.status().phase is TorrentPhase.PAUSED

            download.resume()
            assert download.status().phase is TorrentPhase.DOWNLOADING  # so not paused
            download.resume()  # idempotent
            await download.wait_complete()
    assert download.status().phase is TorrentPhase.SEEDING
    assert same_files(folder, down / "album")


async def test_resume_dials_the_peers_the_pause_dropped_at_once(tmp_path: Path) -> None:
    """A peer found by a tracker, dropped by the pause, is dialled again as soon as the
    torrent resumes: the pause says nothing about the peer, so no reconnect wait (60 s)."""
    folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(
            torrent, folder, download_rate_limit=RATE, limit_local_peers=True
        ) as (seeder, leecher):
            download = await leecher.add_torrent(torrent, TorrentOptions(tmp_path / "down"))
            leecher.connector.discovered(torrent.info.info_hash, [address_of(seeder)], "tracker")
            await until(lambda: bool(download.peers))
            download.pause()
            await until(lambda: not download.peers)
            resumed_at = trio.current_time()
            download.resume()
            await until(lambda: bool(download.peers))
            assert trio.current_time() - resumed_at < 5.0


async def test_a_paused_seed_tells_its_tracker_stopped_then_started(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", [70_000])
    with trio.fail_after(DEADLINE):
        async with http_server(MiniTracker()) as server:
            torrent = make_torrent(folder, "v1")
            options = TorrentOptions(folder.parent, extra_trackers=(server.url,))
            async with open_session(loopback_config(trackers=True)) as session:
                seeding = await session.add_torrent(torrent, options)
                await seeding.wait_complete()
                [announcer] = [s for s in seeding._sources if isinstance(s, TrackerAnnouncer)]
                # Answered: a started announce cut short is not followed by stopped.
                await until(lambda: any(s.last_result for s in announcer.status()))

                def events() -> list[bytes | None]:
                    return [query_of(r).get("event") for r in server.requests]

                seeding.pause()
                await until(lambda: b"stopped" in events())
                assert seeding.status().phase is TorrentPhase.PAUSED
                assert seeding.status().complete
                seeding.resume()
                await until(lambda: events().count(b"started") == 2)
                assert seeding.status().phase is TorrentPhase.SEEDING
    assert events()[:3] == [b"started", b"stopped", b"started"]


class CountingSource:
    """A discovery source (a DHT's place) that counts its runs and their ends."""

    def __init__(self) -> None:
        self.runs = 0
        self.ended = 0

    async def run(self, target: DiscoveryTarget, sink: PeerSink) -> None:
        self.runs += 1
        try:
            await trio.sleep_forever()
        finally:
            self.ended += 1


async def test_pause_stops_every_source_and_resume_starts_them(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", [70_000])
    torrent = make_torrent(folder, "v1")
    source = CountingSource()
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            session.add_source(lambda: source)
            seeding = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await until(lambda: source.runs == 1)
            seeding.pause()
            await until(lambda: source.ended == 1)
            seeding.resume()
            await until(lambda: source.runs == 2)
            assert source.ended == 1


async def test_pause_during_the_metadata_then_resume(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            address = address_of(seeder)
            magnet = MagnetLink.from_info_hash(
                torrent.info.info_hash, peers=[(str(address.host), address.port)]
            )
            download = await leecher.add_torrent(magnet, TorrentOptions(tmp_path / "down"))
            download.pause()
            assert download.status().phase is TorrentPhase.PAUSED
            for _ in range(3):
                leecher.connector.wake()
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert download.info is None
            assert not download.peers
            assert leecher.handshaker.statistics().outbound_completed == 0
            download.resume()
            await download.wait_complete()
    assert same_files(folder, tmp_path / "down" / "album")


async def test_pause_during_the_check_lets_it_finish(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy / "album")
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(copy))
            assert seeding.status().phase is TorrentPhase.CHECKING
            seeding.pause()
            await seeding.ready.wait()
            await seeding.wait_complete()  # the check found everything
            status = seeding.status()
            assert status.phase is TorrentPhase.PAUSED
            assert status.complete
            assert seeding.web_seeds == []
            seeding.resume()
            assert seeding.status().phase is TorrentPhase.SEEDING


async def test_pause_and_resume_refuse_a_failed_torrent(tmp_path: Path) -> None:
    _, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            failing = await session.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", files=frozenset({9}))
            )
            with pytest.raises(TorrentError, match="no file 9"):
                await failing.wait_complete()
            assert failing.status().phase is TorrentPhase.FAILED
            with pytest.raises(TorrentError, match="cannot pause: the torrent failed"):
                failing.pause()
            with pytest.raises(TorrentError, match="cannot resume"):
                failing.resume()
            assert not failing.paused


async def test_peer_added_to_a_paused_torrent_is_dropped(tmp_path: Path) -> None:
    """A connection delivered just before the pause is closed when it arrives."""
    folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            [seeding] = seeder.torrents
            download = await download_from(seeder, leecher, torrent, tmp_path / "down")
            await until(lambda: bool(download.peers))
            [peer] = download.peers
            download.pause()
            dropped: list[str] = []
            original = leecher.manager.remove_peer

            def remove_peer(peer: object, reason: str) -> None:
                dropped.append(reason)
                original(peer, reason)  # type: ignore[arg-type]

            leecher.manager.remove_peer = remove_peer  # type: ignore[method-assign]
            download.peer_added(peer)
            assert dropped == [REASON_PAUSED]
            await until(lambda: not download.peers and not seeding.peers)


# -- remove ------------------------------------------------------------------------------------


async def test_remove_a_torrent_keeps_its_data(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            [seeding] = seeder.torrents
            download = await download_from(seeder, leecher, torrent, down)
            await download.wait_complete()
            await until(lambda: bool(download.peers) or bool(seeding.peers))
            await until(lambda: len(resume_files(down)) >= 2)
            reasons: list[str] = []
            original = leecher.manager.remove_peer

            def remove_peer(peer: object, reason: str) -> None:
                reasons.append(reason)
                original(peer, reason)  # type: ignore[arg-type]

            leecher.manager.remove_peer = remove_peer  # type: ignore[method-assign]
            await leecher.remove_torrent(download)
            assert reasons == [REASON_REMOVED] * len(reasons)
            assert leecher.torrents == ()
            assert leecher.find(torrent.info.info_hash) is None
            assert leecher.peer_list(download) is None
            assert resume_files(down) == []
            assert not (down / ".bip").exists()
            assert not download.peers
            await until(lambda: not seeding.peers)
            await refused_inbound(seeder, leecher, download)
            with pytest.raises(TorrentError, match="not in the session"):
                await leecher.remove_torrent(download)
            with pytest.raises(TorrentError, match="removed"):
                download.pause()
            with pytest.raises(TorrentError, match="removed"):
                download.set_files(None)
            with pytest.raises(TorrentError, match="removed"):
                await download.move_storage(tmp_path / "elsewhere")
            await download.wait_complete()  # complete before: the event stays set
            assert download.status().pieces == torrent.info.num_pieces  # still readable
            # It can be added again, and finds its data whole.
            again = await leecher.add_torrent(torrent, TorrentOptions(down))
            await again.wait_complete()
    assert same_files(folder, down / "album")


async def test_remove_a_torrent_with_its_data(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            download = await download_from(seeder, leecher, torrent, down)
            await download.wait_complete()
            (down / "album" / "mine.txt").write_text("not the torrent's")
            (down / "other.txt").write_text("not the torrent's either")
            await leecher.remove_torrent(download, delete_data=True)
            assert leecher.torrents == ()
    left = sorted(str(p.relative_to(down)) for p in down.rglob("*") if p.is_file())
    assert left == ["album/mine.txt", "other.txt"]


async def test_remove_refuses_a_torrent_of_another_session(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with seeder_and_leecher(torrent, folder) as (seeder, leecher):
            [seeding] = seeder.torrents
            with pytest.raises(TorrentError, match="not in the session"):
                await leecher.remove_torrent(seeding)
            assert seeder.torrents == (seeding,)


async def test_remove_a_magnet_waiting_for_its_metadata(tmp_path: Path) -> None:
    _, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            magnet = MagnetLink.from_info_hash(torrent.info.info_hash)
            waiting = await session.add_torrent(magnet, TorrentOptions(tmp_path / "down"))
            waiting.pause()
            await session.remove_torrent(waiting, delete_data=True)
            assert session.torrents == ()
            with pytest.raises(TorrentError, match="the torrent was removed"):
                await waiting.wait_complete()
            with pytest.raises(TorrentError, match="removed"):
                waiting.resume()
    assert resume_files(tmp_path / "down") == []


async def test_pause_stops_the_web_seeds_and_resume_tries_them_again(tmp_path: Path) -> None:
    folder = write_content(tmp_path / "seed", [300_000, 70_000])
    down = tmp_path / "down"
    with trio.fail_after(DEADLINE):
        async with file_server(folder.parent) as server, open_session(loopback_config()) as s:
            server.status = "503 Busy"  # failing: the web seed waits 30 s before a new try
            torrent = create_torrent(
                folder,
                version="v1",
                piece_length=PIECE,
                web_seeds=[server.url],
                creation_date=None,
                created_by=None,
            )
            download = await s.add_torrent(torrent, TorrentOptions(down))
            await until(lambda: bool(download.web_seeds))
            [seed] = download.web_seeds
            await until(lambda: seed.state is WebSeedState.WAITING)
            assert download.status().web_seeds == 1
            download.pause()
            assert seed.state is WebSeedState.DONE
            assert download.status().web_seeds == 0
            asked = len(server.requests)
            server.status = None
            download.resume()  # a new run: the web seed is tried again at once
            await download.wait_complete()
            [again] = download.web_seeds
            assert again is not seed
            assert len(server.requests) > asked
    assert same_files(folder, down / "album")


async def test_remove_during_a_recheck(tmp_path: Path) -> None:
    folder, torrent = content(tmp_path)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            seeding.force_recheck()
            assert seeding.status().phase is TorrentPhase.CHECKING
            await session.remove_torrent(seeding)
            assert session.torrents == ()
            assert resume_files(folder.parent) == []
            # The data stays, whole: added again, it is found complete.
            again = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await again.wait_complete()
            assert again.status().pieces == torrent.info.num_pieces
