"""A torrent's life in a session, session 13's mends: a torrent added again while its removal
runs waits for that removal (which would delete the new torrent's files and resume data); a
removed torrent's status says ``REMOVED``; a ``completed`` a tracker did not answer before a
pause goes to it after the resume (libtorrent's per-tracker ``complete_sent``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import trio
from _engine_helpers import loopback_config, make_torrent, until, write_content
from _http_tracker_server import MiniTracker, http_server, query_of

from bip._client import (
    Session,
    Torrent,
    TorrentError,
    TorrentOptions,
    TorrentPhase,
    TorrentStatus,
    open_session,
)
from bip._client._discovery import TrackerAnnouncer
from bip._client._http_tracker import HttpTrackerClient
from bip._client._resume import ResumeStore, SavedState
from bip._cmd_download import _run_version
from bip_handshake import PeerAddress, PeerId
from bip_metainfo import InfoHash, MagnetLink, Metainfo

DEADLINE = 10.0


async def test_a_torrent_added_again_during_its_removal_waits_for_it(tmp_path: Path) -> None:
    data = write_content(tmp_path / "dl", (40_000, 20_000))
    meta = make_torrent(data, "v1")
    options = TorrentOptions(tmp_path / "dl")
    added: list[Torrent] = []
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            old = await session.add_torrent(meta, options)
            await old.wait_complete()
            # The removal stops at the torrent's save lock (its files not deleted yet),
            # already out of the session's index: the window a re-add came through.
            async with trio.open_nursery() as nursery, old._save_lock:
                nursery.start_soon(lambda: session.remove_torrent(old, delete_data=True))
                await until(lambda: old._removed)

                async def add_again() -> None:
                    added.append(await session.add_torrent(meta, options))

                nursery.start_soon(add_again)
                # Nothing to wait for but time: the add must not come through (its state
                # read is a thread, which wait_all_tasks_blocked would not wait out).
                with trio.move_on_after(0.3):
                    await until(lambda: bool(added))
                # Before: the add went on; its torrent failed ("already added": the disk
                # still had the old one), and the removal deleted its resume files.
                assert added == []
            [new] = added
            assert session.torrents == (new,)
            await until(lambda: new.status().phase is not TorrentPhase.CHECKING)
            # The removal deleted the data before the new torrent looked: it has nothing,
            # and says so (before: FAILED).
            assert new.status().phase is TorrentPhase.DOWNLOADING, new.status().error
            assert new.status().done == 0
            assert not (data / "f0.bin").exists()


async def test_a_removed_torrents_status_says_removed(tmp_path: Path) -> None:
    data = write_content(tmp_path / "dl", (20_000,))
    meta = make_torrent(data, "v1")
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            seed = await session.add_torrent(meta, TorrentOptions(tmp_path / "dl"))
            await seed.wait_complete()
            paused = await session.add_torrent(
                make_torrent(write_content(tmp_path / "other", (10_000,), seed=2), "v1"),
                TorrentOptions(tmp_path / "other", paused=True),
            )
            await session.remove_torrent(seed)
            await session.remove_torrent(paused)
            # Before: SEEDING and PAUSED, as if they still ran.
            for torrent in (seed, paused):
                status = torrent.status()
                assert status.phase is TorrentPhase.REMOVED
                assert not status.complete
                assert status.peers == 0
                assert status.download_rate == 0.0
                assert status.upload_rate == 0.0
                assert status.queue_position == -1
            # The counts it had stay readable.
            assert seed.status().pieces == seed.status().num_pieces > 0


# -- completed survives a pause (libtorrent's per-tracker complete_sent) -----------------------


@dataclass
class Downloading:
    """A DiscoveryTarget: a download of 100 bytes whose data is checked; ``finish`` makes
    it a seed by download."""

    info_hash: InfoHash = field(default_factory=lambda: InfoHash(v1=bytes(range(20))))
    listen_port: int = 6881
    private: bool = False
    completed: trio.Event = field(default_factory=trio.Event)
    seeded: trio.Event = field(default_factory=trio.Event)
    ready: trio.Event = field(default_factory=trio.Event)
    left: int = 100

    def transfer(self) -> tuple[int, int, int]:
        return (0, 100 - self.left, self.left)

    def finish(self) -> None:
        self.left = 0
        self.completed.set()
        self.seeded.set()


class HoldingCompleted:
    """A tracker (MiniTracker's answers) that records each announce's event and leaves a
    ``completed`` unanswered while ``hold`` is set."""

    def __init__(self) -> None:
        self.tracker = MiniTracker()
        self.events: list[bytes | None] = []
        self.lefts: list[bytes | None] = []  # each announce's ``left``
        self.hold = True
        self.heard = trio.Event()  # set at each announce heard

    async def __call__(self, request: bytes, stream: trio.abc.Stream) -> None:
        query = query_of(request)
        event = query.get("event")
        self.events.append(event)
        self.lefts.append(query.get("left"))
        self.heard.set()
        if event == b"completed" and self.hold:
            await trio.sleep_forever()
        await self.tracker(request, stream)


class Sink:
    def discovered(self, info_hash: object, addresses: Iterable[PeerAddress], source: str) -> None:
        pass


async def _run_until(
    announcer: TrackerAnnouncer, target: Downloading, done: Callable[[], bool]
) -> None:
    """Run ``announcer`` (a torrent's run between a resume and a pause) until ``done()``."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(announcer.run, target, Sink())
        await until(done)
        nursery.cancel_scope.cancel()


async def test_completed_unanswered_before_a_pause_goes_after_the_resume() -> None:
    tracker = HoldingCompleted()
    target = Downloading()
    target.ready.set()
    with trio.fail_after(DEADLINE):
        async with http_server(tracker) as server:
            announcer = TrackerAnnouncer(
                None,  # type: ignore[arg-type]  # no UDP tracker
                [server.url],
                peer_id=PeerId(b"-BP0100-lifecycle013"),
                http_client=HttpTrackerClient(),
            )

            def finished_and_sent() -> bool:
                if tracker.events == [b"started"]:
                    target.finish()
                return b"completed" in tracker.events

            # The download finishes; "completed" goes, unanswered; then a pause.
            await _run_until(announcer, target, finished_and_sent)
            assert tracker.events == [b"started", b"completed", b"stopped"]
            tracker.hold = False
            # The resume: "started", then the "completed" still owed (before: nothing more).
            await _run_until(announcer, target, lambda: _idle(announcer))
            assert tracker.events[3:] == [b"started", b"completed", b"stopped"]
            # Answered now: a second pause and resume do not send it again.
            await _run_until(announcer, target, lambda: _idle(announcer))
            assert tracker.events[6:] == [b"started", b"stopped"]


def _idle(announcer: TrackerAnnouncer) -> bool:
    """The tracker answered, and nothing more is due now (a "completed" owed goes at once,
    in the same step as the answer to "started")."""
    return any(s.running and s.announces > 0 and not s.announcing for s in announcer.status())


# -- session 13's review (R1): the mends' edges ------------------------------------------------


def _announcer(url: str) -> TrackerAnnouncer:
    return TrackerAnnouncer(
        None,  # type: ignore[arg-type]  # no UDP tracker
        [url],
        peer_id=PeerId(b"-BP0100-lifecycle013"),
        http_client=HttpTrackerClient(),
    )


async def test_completed_owed_waits_until_the_torrent_is_a_seed_again() -> None:
    tracker = HoldingCompleted()
    target = Downloading()
    target.ready.set()
    with trio.fail_after(DEADLINE):
        async with http_server(tracker) as server:
            announcer = _announcer(server.url)

            def finished_and_sent() -> bool:
                if tracker.events == [b"started"]:
                    target.finish()
                return b"completed" in tracker.events

            await _run_until(announcer, target, finished_and_sent)
            tracker.hold = False
            # Paused, it lost its seed's standing (a file selected again, a recheck that
            # found data missing): "completed" waits for the real completion, as libtorrent
            # sends it only for a seed.
            target.left = 50
            target.seeded = trio.Event()

            def seed_again() -> bool:
                if _idle(announcer) and target.left:
                    target.finish()
                return b"completed" in tracker.events[3:]

            await _run_until(announcer, target, seed_again)
            assert tracker.events[3:] == [b"started", b"completed", b"stopped"]
            # Before: "completed" went with the "started" answer, left 50.
            assert tracker.lefts[3:] == [b"50", b"0", b"0"]


class _HeldStateReads:
    """``ResumeStore.load_state`` held, once ``armed``, after its read: ``read`` is set,
    and it returns once ``gate`` is."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed = False
        self.read = trio.Event()
        self.gate = trio.Event()
        load = ResumeStore.load_state

        async def held(store: ResumeStore) -> SavedState | None:
            state = await load(store)
            if self.armed:
                self.read.set()
                await self.gate.wait()
            return state

        monkeypatch.setattr(ResumeStore, "load_state", held)


async def _add_into(
    session: Session,
    meta: Metainfo,
    options: TorrentOptions,
    result: list[Torrent | TorrentError],
) -> None:
    try:
        result.append(await session.add_torrent(meta, options))
    except TorrentError as error:
        result.append(error)


async def test_an_add_that_read_the_state_of_a_torrent_removed_meanwhile_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_content(tmp_path / "dl", (40_000,))
    meta = make_torrent(data, "v1")
    options = TorrentOptions(tmp_path / "dl")
    state_file = tmp_path / "dl" / ".bip" / f"{meta.info.info_hash.hex()}.state"
    reads = _HeldStateReads(monkeypatch)
    result: list[Torrent | TorrentError] = []
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            old = await session.add_torrent(meta, options)
            await old.wait_complete()
            old.pause()  # a flag its state file keeps
            await until(state_file.exists)
            reads.armed = True
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_add_into, session, meta, options, result)
                await reads.read.wait()  # the add read the state of a torrent in the session
                # Its removal begins and ends meanwhile: the state read is gone with it.
                await session.remove_torrent(old)
                assert not state_file.exists()
                reads.gate.set()
            # Before: added, paused by the flag of the state file the removal deleted.
            [refused] = result
            assert isinstance(refused, TorrentError), refused
            assert "removal began" in str(refused)
            assert session.torrents == ()
            # Added again once the removal returned: a torrent of its own (no flag kept).
            reads.armed = False
            again = await session.add_torrent(meta, options)
            assert not again.paused


async def test_an_add_whose_torrent_is_being_removed_after_its_state_read_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_content(tmp_path / "dl", (40_000,))
    meta = make_torrent(data, "v1")
    options = TorrentOptions(tmp_path / "dl")
    reads = _HeldStateReads(monkeypatch)
    result: list[Torrent | TorrentError] = []
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            old = await session.add_torrent(meta, options)
            await old.wait_complete()
            reads.armed = True
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_add_into, session, meta, options, result)
                await reads.read.wait()
                # The removal begins during the read and is still under way after it (held
                # at the torrent's save lock): waiting for it could go on for ever, as others
                # add and remove it; the add is refused as a duplicate.
                async with old._save_lock:
                    nursery.start_soon(session.remove_torrent, old)
                    await until(lambda: old._removed)
                    reads.gate.set()
                    await until(lambda: bool(result))
            [refused] = result
            assert isinstance(refused, TorrentError), refused
            assert "removal began" in str(refused)
            assert session.torrents == ()


async def test_a_removal_that_raised_holds_no_later_add_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_content(tmp_path / "dl", (40_000,))
    meta = make_torrent(data, "v1")
    options = TorrentOptions(tmp_path / "dl")

    def broken(torrent: Torrent) -> None:
        raise RuntimeError("a bug in detach")

    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            torrent = await session.add_torrent(meta, options)
            await torrent.wait_complete()
            monkeypatch.setattr(session.connector, "detach", broken)
            with pytest.raises(RuntimeError, match="a bug in detach"):
                await session.remove_torrent(torrent)
            # Before: its removal stayed registered, never over: an add of it waited for ever.
            assert not session._removing(meta.info.info_hash)
            with trio.fail_after(2):
                await session.add_torrent(meta, options)


class _FailedThenRemoved:
    """What ``_run_version`` reads of a version that fails, and that a swap removes as
    soon as the command read its failure (``failure_read``; its error kept)."""

    def __init__(self) -> None:
        self.failed = False
        self.failure_read = trio.Event()
        self.removed = False

    def status(self) -> TorrentStatus:
        phase = TorrentPhase.DOWNLOADING
        if self.removed:
            phase = TorrentPhase.REMOVED
        elif self.failed:
            phase = TorrentPhase.FAILED
            self.failure_read.set()
        return TorrentStatus(
            name="v2",
            phase=phase,
            total=0,
            done=0,
            pieces=0,
            num_pieces=0,
            download_rate=0.0,
            upload_rate=0.0,
            downloaded=0,
            uploaded=0,
            peers=0,
            seeds=0,
            bad_pieces=0,
            error="disk full" if self.failed else None,
        )

    async def wait_complete(self) -> None:
        await trio.lowlevel.checkpoint()
        self.failed = True
        raise TorrentError("v2: disk full")


class _Swapping:
    """What ``_run_version`` reads of a MutableFollower: ``current``, then swapped."""

    def __init__(self, current: _FailedThenRemoved) -> None:
        self.current = current
        self.changed = trio.Event()
        self.recovered: list[object] = []

    async def settle(self) -> None:
        await trio.lowlevel.checkpoint()

    async def recover(self, failed: object) -> bool:
        self.recovered.append(failed)
        return True  # another version took its place


async def test_a_version_that_failed_and_was_swapped_out_gives_way() -> None:
    version = _FailedThenRemoved()
    follower = _Swapping(version)

    async def swap() -> None:
        await version.failure_read.wait()
        version.removed = True
        follower.changed.set()

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(swap)
            args = argparse.Namespace(quiet=True)
            # Before: REMOVED is no FAILED, and the command ended on the old error.
            shown = await _run_version(cast(Any, follower), args, seeding=False)
    assert shown is False
    assert follower.recovered == [version]


async def test_a_magnet_twin_learning_its_metadata_while_the_other_goes_fails(
    tmp_path: Path,
) -> None:
    folder = write_content(tmp_path / "seed", (20_000,))
    info = make_torrent(folder, "hybrid").info
    full = info.info_hash
    assert full.v1 is not None
    assert full.v2 is not None
    by_v1, by_v2 = InfoHash(v1=full.v1), InfoHash(v2=full.v2)
    v1_id, v2_id = full.swarm_ids()
    # The v2 magnet's metadata is kept from an earlier run: it learns the hybrid at once.
    await ResumeStore(tmp_path / "d2", by_v2).save_info(info)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config()) as session:
            first = await session.add_torrent(
                MagnetLink.from_info_hash(by_v1), TorrentOptions(tmp_path / "d1")
            )
            async with trio.open_nursery() as nursery, first._save_lock:
                nursery.start_soon(session.remove_torrent, first)
                await until(lambda: first._removed)
                second = await session.add_torrent(
                    MagnetLink.from_info_hash(by_v2), TorrentOptions(tmp_path / "d2")
                )
                await until(lambda: second.status().phase is not TorrentPhase.METADATA)
                # Before: it took the v1 swarm of the torrent still being removed.
                assert second.status().phase is TorrentPhase.FAILED
                assert "being removed" in (second.status().error or "")
                assert session.find(v1_id) is None
                assert session.find(v2_id) is second
                assert full not in session.handshaker.torrents
