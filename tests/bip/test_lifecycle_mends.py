"""A torrent's life at its edges: options checked before anything changes, one torrent's
failure (bad options, a storage that cannot open, a bug) never takes the session down, and the
``downloaded`` trackers hear leaves out the pieces that failed their hash check."""

from __future__ import annotations

import logging
import random
import sys
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import trio
from _engine_helpers import address_of, loopback_config, make_torrent, until, write_content

from bip._client import TorrentError, TorrentOptions, TorrentPhase, open_session
from bip._client._resume import ResumeStore
from bip._client._torrent import Torrent
from bip_disk import (
    DiskManager,
    FileSystem,
    MemoryFileSystem,
    NativeFileSystem,
    ResumeData,
    StorageError,
    open_disk_manager,
)
from bip_disk import (
    PieceVerified as DiskPieceVerified,
)
from bip_handshake import PeerAddress

DEADLINE = 20.0


# -- TorrentOptions: refused or normalised up front ------------------------------------------


def test_files_as_a_set_is_normalised_as_set_files_does(tmp_path: Path) -> None:
    # Typed as documented: a set, no type: ignore (mypy strict checks these tests).
    options = TorrentOptions(tmp_path, files={0, 2})
    assert options.files == frozenset({0, 2})
    assert isinstance(options.files, frozenset)


@pytest.mark.parametrize(
    ("files", "error"),
    [
        ([0, 1], TypeError),  # a list: read as priorities before, a crash after
        ((0, 1), TypeError),
        (frozenset({"a"}), TypeError),
        (frozenset({True}), TypeError),
        (frozenset({-1}), ValueError),
    ],
)
def test_files_that_cannot_be_a_selection_are_refused(
    tmp_path: Path, files: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match="files"):
        TorrentOptions(tmp_path, files=files)  # type: ignore[arg-type]


@pytest.mark.parametrize("peers", [(("127.0.0.1", 6881),), ("127.0.0.1:6881",), "127.0.0.1"])
def test_peers_that_are_not_peer_addresses_are_refused(tmp_path: Path, peers: object) -> None:
    with pytest.raises(TypeError, match="peers"):
        TorrentOptions(tmp_path, peers=peers)  # type: ignore[arg-type]


def test_peers_as_a_list_and_save_dir_as_a_str_are_normalised(tmp_path: Path) -> None:
    address = PeerAddress.parse("127.0.0.1:6881")
    options = TorrentOptions(str(tmp_path), peers=[address])  # as documented: no type: ignore
    assert options.peers == (address,)
    assert options.save_dir == tmp_path


@pytest.mark.parametrize(
    "changes",
    [
        {"save_dir": 5},
        {"extra_trackers": "http://127.0.0.1/announce"},
        {"extra_trackers": (b"http://127.0.0.1/announce",)},
        {"resume": "yes"},
        {"web_seeds": 1},
        {"storage": "memory"},
    ],
)
def test_other_options_of_the_wrong_type_are_refused(
    tmp_path: Path, changes: dict[str, object]
) -> None:
    settings: dict[str, object] = {"save_dir": tmp_path, **changes}
    with pytest.raises(TypeError):
        TorrentOptions(**settings)  # type: ignore[arg-type]


# -- one torrent fails, the session goes on ---------------------------------------------------


async def _fails_alone(tmp_path: Path, options: TorrentOptions) -> str:
    """Add a torrent with ``options`` beside a healthy seed: it fails (its error returned), the
    seed and the session go on."""
    folder = write_content(tmp_path / "other", (50_000,), seed=2)
    fresh = make_torrent(write_content(tmp_path / "new", (50_000,), seed=5), "v1")
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            healthy = await session.add_torrent(
                make_torrent(folder, "v1"), TorrentOptions(folder.parent, resume=False)
            )
            await healthy.wait_complete()
            bad = await session.add_torrent(fresh, options)
            with pytest.raises(TorrentError):
                await bad.wait_complete()
            status = bad.status()
            assert status.phase is TorrentPhase.FAILED
            assert healthy.status().phase is TorrentPhase.SEEDING
            assert session.find(healthy.info_hash) is healthy
            assert status.error is not None
            return status.error


def _refusing(error: Exception) -> FileSystem:
    raise error


@pytest.mark.parametrize(
    "error",
    [PermissionError(13, "Permission denied"), StorageError("cannot reach the bucket")],
)
async def test_a_storage_that_cannot_open_fails_the_torrent_alone(
    tmp_path: Path, error: Exception
) -> None:
    options = TorrentOptions(tmp_path / "d", storage=lambda _: _refusing(error), resume=False)
    reason = await _fails_alone(tmp_path, options)
    assert str(error) in reason


@pytest.mark.torrent_bug
async def test_an_unexpected_error_in_a_torrent_fails_that_torrent_alone(tmp_path: Path) -> None:
    # A bug of the storage factory's (or ours): not a StorageError, yet one torrent's.
    options = TorrentOptions(
        tmp_path / "d", storage=lambda _: _refusing(ZeroDivisionError("oops")), resume=False
    )
    reason = await _fails_alone(tmp_path, options)
    assert "ZeroDivisionError" in reason


# -- downloaded, less the corrupt bytes --------------------------------------------------------


async def test_the_downloaded_trackers_hear_leaves_out_failed_pieces(tmp_path: Path) -> None:
    sizes = (200_000,)
    folder = write_content(tmp_path / "seed", sizes)
    torrent = make_torrent(folder, "v1", piece_length=16384)
    memory = MemoryFileSystem()
    for entry in torrent.info.files:
        memory.write("/".join(entry.path), 0, folder.parent.joinpath(*entry.path).read_bytes())
    with trio.fail_after(DEADLINE):
        async with (
            open_session(loopback_config(listen=(("127.0.0.2", 0),))) as liar,
            open_session(loopback_config(listen=(("127.0.0.3", 0),))) as leecher,
        ):
            lying = await liar.add_torrent(
                torrent,
                TorrentOptions(
                    tmp_path / "liar", files=frozenset(), resume=False, storage=lambda _: memory
                ),
            )
            await lying.wait_complete()
            garbage = random.Random(5)
            for entry in torrent.info.files:  # it serves garbage from now on
                memory.write("/".join(entry.path), 0, garbage.randbytes(entry.length))
            download = await leecher.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", peers=(address_of(liar),))
            )
            await until(lambda: download.refuses(address_of(liar)))
            _, downloaded, _ = download.transfer()
            status = download.status()
            assert status.pieces == 0
            # The status keeps every byte received; the trackers hear the good ones only.
            assert downloaded < status.downloaded
            assert download.corrupt >= 16384
            assert downloaded == max(status.downloaded - download.corrupt, 0)


# -- a clean stop leaves nothing to hash -------------------------------------------------------


async def test_a_clean_stop_mid_download_leaves_the_restart_nothing_to_hash(
    tmp_path: Path,
) -> None:
    folder = write_content(tmp_path / "full", (1_000_000,))
    torrent = make_torrent(folder, "v1", piece_length=16384)
    down = tmp_path / "down"
    slow = loopback_config(upload_rate_limit=300_000, limit_local_peers=True)
    with trio.fail_after(DEADLINE):
        async with open_session(slow) as seeder:
            seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            async with open_session(loopback_config()) as leecher:
                download = await leecher.add_torrent(
                    torrent, TorrentOptions(down, peers=(address_of(seeder),))
                )
                await until(lambda: download.status().pieces >= 5)
            # Closed while the pieces kept coming: the files were written just now.
        resume = await ResumeStore(down, torrent.info.info_hash).load_resume()
        assert resume is not None
        assert len(ResumeData.from_bytes(resume).have) >= 5
        filesystem = NativeFileSystem(down)
        try:
            async with open_disk_manager() as disk:
                hashed = await disk.pieces_to_hash(torrent, filesystem, resume_data=resume)
        finally:
            filesystem.close()
    assert hashed == 0  # as libtorrent: no rehash after a clean stop


# -- a bug in a torrent called from the session's tasks --------------------------------------


@pytest.mark.torrent_bug
@pytest.mark.parametrize("method", ["tick", "disk_event", "peer_message", "peer_removed"])
async def test_a_bug_in_a_torrent_run_by_the_sessions_tasks_fails_that_torrent_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    # The session's own tasks (its tick, the disk's and the peers' routing) call into each
    # torrent: a bug there is that torrent's, as one in its run is.
    mine = write_content(tmp_path / "mine", (50_000,), seed=1)
    theirs = write_content(tmp_path / "theirs", (50_000,), seed=2)
    wanted = make_torrent(theirs, "v1", piece_length=16384)
    with trio.fail_after(DEADLINE):
        async with (
            open_session(loopback_config(listen=(("127.0.0.2", 0),))) as seeder,
            open_session(loopback_config(listen=(("127.0.0.3", 0),))) as session,
        ):
            seeding = await seeder.add_torrent(wanted, TorrentOptions(theirs.parent, resume=False))
            healthy = await session.add_torrent(
                make_torrent(mine, "v1"), TorrentOptions(mine.parent, resume=False)
            )
            await seeding.wait_complete()
            await healthy.wait_complete()
            bad = await session.add_torrent(
                wanted, TorrentOptions(tmp_path / "down", peers=(address_of(seeder),))
            )

            def bug(*_: object) -> None:
                raise ZeroDivisionError(f"a bug in {method}")

            monkeypatch.setattr(bad, method, bug)
            # peer_removed: the seeds part once the download is done.
            await until(lambda: bad.status().phase is TorrentPhase.FAILED)
            assert "ZeroDivisionError" in (bad.status().error or "")
            assert healthy.status().phase is TorrentPhase.SEEDING
            assert session.find(healthy.info_hash) is healthy
            await trio.sleep(0.3)  # a few more ticks and routed events: the session lives on
            assert healthy.status().phase is TorrentPhase.SEEDING


@pytest.mark.torrent_bug
async def test_a_bug_in_failing_a_torrent_after_a_bug_is_still_that_torrents_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The handler fails the torrent: should failing it raise too, the session still lives.
    mine = write_content(tmp_path / "mine", (50_000,), seed=1)
    other = write_content(tmp_path / "other", (50_000,), seed=2)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            healthy = await session.add_torrent(
                make_torrent(mine, "v1"), TorrentOptions(mine.parent, resume=False)
            )
            bad = await session.add_torrent(
                make_torrent(other, "v1"), TorrentOptions(other.parent, resume=False)
            )
            await healthy.wait_complete()
            await bad.wait_complete()

            def bug(*_: object) -> None:
                raise ZeroDivisionError("a bug")

            monkeypatch.setattr(bad, "_stop_serving", bug)
            monkeypatch.setattr(bad, "tick", bug)
            await until(lambda: bad._bug_met and bad.status().phase is TorrentPhase.FAILED)
            await trio.sleep(0.3)  # more ticks: the session lives on
            assert healthy.status().phase is TorrentPhase.SEEDING
            monkeypatch.undo()  # the session's close stops serving it as ever


# -- corrupt counts data bytes ------------------------------------------------------------------


async def test_corrupt_counts_the_data_bytes_of_a_v2_tail_piece(tmp_path: Path) -> None:
    # v2: each file's last piece is short (20_000 = 16384 + 3616); downloaded counts its
    # 3616 bytes, so the corrupt bytes taken off it must be those too.
    folder = write_content(tmp_path / "seed", (20_000, 20_000), seed=1)
    torrent = make_torrent(folder, "v2", piece_length=16384)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            download = await session.add_torrent(
                torrent, TorrentOptions(tmp_path / "down", resume=False)
            )
            await until(lambda: download.handle is not None and download.swarm is not None)
            assert download.handle is not None
            await download.disk_event(DiskPieceVerified(download.handle, 1, good=False))
            assert download.corrupt == 3616
            await download.disk_event(DiskPieceVerified(download.handle, 0, good=False))
            assert download.corrupt == 3616 + 16384


# -- a clean stop of a seed: nothing to settle ---------------------------------------------------


async def test_closing_a_seed_stats_no_file_to_settle_its_resume_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A record that has every piece is never hashed for files being racy (only pieces it
    # lacks are): the close need not stat every file again to find out.
    folder = write_content(tmp_path / "seed", (20_000,) * 5)
    torrent = make_torrent(folder, "v1", piece_length=16384)
    store = ResumeStore(folder.parent, torrent.info.info_hash)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            while await store.load_resume() is None:
                await trio.sleep(0.01)
            # The record saved is kept nowhere on the torrent: the close hands its own last
            # one to _settle_resume.
            assert not hasattr(seeding, "_saved_resume")
            asked: list[object] = []
            plan = DiskManager.pieces_to_hash

            async def counted(self: DiskManager, *args: object, **kwargs: object) -> int:
                asked.append(args)
                return await plan(self, *args, **kwargs)  # type: ignore[arg-type]

            monkeypatch.setattr(DiskManager, "pieces_to_hash", counted)
    assert asked == []


# -- a bug met while the torrent is being stopped ----------------------------------------------


@pytest.mark.torrent_bug
@pytest.mark.parametrize("stop", ["fail", "remove", "close"])
async def test_a_bug_met_while_a_torrent_stops_is_that_torrents_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, stop: str
) -> None:
    # Raised while the torrent's scope is cancelled, the bug comes grouped with Cancelled:
    # its catch-all must still hold it (the session lives on) and log it with its traceback.
    mine = write_content(tmp_path / "mine", (50_000,), seed=1)
    other = write_content(tmp_path / "other", (50_000,), seed=2)

    async def cleanup_bug(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            raise ZeroDivisionError("a bug in a cleanup")

    def logged() -> bool:
        return any(
            record.levelname == "ERROR"
            and record.getMessage().endswith(": unexpected error")
            and record.exc_info is not None
            and "a bug in a cleanup" in logging.Formatter().formatException(record.exc_info)
            for record in caplog.records
        )

    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            healthy = await session.add_torrent(
                make_torrent(mine, "v1"), TorrentOptions(mine.parent, resume=False)
            )
            bad = await session.add_torrent(
                make_torrent(other, "v1"), TorrentOptions(other.parent, resume=False)
            )
            await healthy.wait_complete()
            await bad.wait_complete()
            assert bad._nursery is not None
            await bad._nursery.start(cleanup_bug)
            if stop == "fail":  # as a disk's TorrentFailed does
                bad._fail("storage: gone")
                await until(logged)
                assert bad.status().error == "storage: gone"  # the first reason stays
            elif stop == "remove":
                await session.remove_torrent(bad)
                await until(logged)
            if stop != "close":
                assert healthy.status().phase is TorrentPhase.SEEDING
                assert session.find(healthy.info_hash) is healthy
    assert logged()


# -- the catch-all's cost where it runs most -------------------------------------------------


async def test_the_tick_and_the_peers_routing_enter_no_context_manager_per_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Per torrent per tick and per routed message, a generator context manager cost four
    # times the call itself: those paths hold a bug with a plain try.
    callers: list[str] = []
    contained = Torrent._contained

    def spy(self: Torrent) -> AbstractContextManager[None]:
        callers.append(sys._getframe(1).f_code.co_name)
        return contained(self)

    monkeypatch.setattr(Torrent, "_contained", spy)
    folder = write_content(tmp_path / "seed", (50_000,))
    torrent = make_torrent(folder, "v1", piece_length=16384)
    ticks: list[float] = []
    with trio.fail_after(DEADLINE):
        async with (
            open_session(loopback_config(listen=(("127.0.0.2", 0),))) as seeder,
            open_session(loopback_config(listen=(("127.0.0.3", 0),))) as leecher,
        ):
            seeding = await seeder.add_torrent(torrent, TorrentOptions(folder.parent, resume=False))
            await seeding.wait_complete()
            tick = seeding.tick

            def counted(now: float) -> None:
                ticks.append(now)
                tick(now)

            monkeypatch.setattr(seeding, "tick", counted)
            download = await leecher.add_torrent(
                torrent,
                TorrentOptions(tmp_path / "down", peers=(address_of(seeder),), resume=False),
            )
            await download.wait_complete()
            await until(lambda: len(ticks) >= 2)
    assert "_tick" not in callers
    assert "_route_peers" not in callers
    assert "run" in callers  # the spy saw the catch-all where it stays
