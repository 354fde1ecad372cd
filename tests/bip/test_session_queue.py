"""Queueing in a bip session, as libtorrent's auto-managed torrents: four auto-managed
downloads with ``active_downloads=2`` (two run, two wait QUEUED: no announce, no dial), the
next one starting when one completes, ``queue_position_top``, a user's pause left alone,
``set_auto_managed`` as a force start, and the flag and the positions saved with the resume
files and read back."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
import trio
from _check_counter import Checks
from _engine_helpers import address_of, loopback_config, make_torrent, until, write_content

from bip._client import (
    ClientConfig,
    Torrent,
    TorrentError,
    TorrentOptions,
    TorrentPhase,
    open_session,
)
from bip._client._discovery import DiscoveryTarget
from bip._client._queue import QueueDecision, QueuedTorrent, QueueLimits, TorrentQueue
from bip._client._resume import ResumeStore, SavedState, decode_saved_state
from bip._client._session import QUEUE_MIN_GAP
from bip_handshake import PeerAddress, PeerSink
from bip_metainfo import InfoHash, Metainfo

DEADLINE = 20.0
PIECE = 16384


class Announcer:
    """A tracker of sorts: once a torrent's data is checked (as bip's tracker and DHT
    sources wait for), it "announces" (recorded) and is given ``peer``, again every few
    tenths of a second as the user's peers are (a peer that refused us is dialled again);
    which torrents announce now is recorded too."""

    def __init__(self, peer: PeerAddress) -> None:
        self.peer = peer
        self.started: list[InfoHash] = []
        self.running: set[InfoHash] = set()

    async def run(self, target: DiscoveryTarget, sink: PeerSink) -> None:
        await target.ready.wait()
        self.started.append(target.info_hash)
        self.running.add(target.info_hash)
        try:
            while True:
                sink.discovered(target.info_hash, [self.peer], "user")
                await trio.sleep(0.2)
        finally:
            self.running.discard(target.info_hash)


def contents(tmp_path: Path, count: int) -> list[tuple[Path, Metainfo]]:
    """``count`` small torrents of different data, each in its own directory."""
    made = []
    for index in range(count):
        folder = write_content(tmp_path / f"seed{index}", [30_000 + 5000 * index], seed=index)
        made.append((folder, make_torrent(folder, "v1", piece_length=PIECE)))
    return made


def queued(torrent: Torrent) -> bool:
    """``torrent.queued`` (a call: the answer changes under mypy's feet)."""
    return torrent.queued


def paused(torrent: Torrent) -> bool:
    """``torrent.paused``, likewise."""
    return torrent.paused


def phases(torrents: list[Torrent]) -> list[TorrentPhase]:
    return [torrent.status().phase for torrent in torrents]


def state_of(save_dir: Path, torrent: Metainfo) -> SavedState | None:
    path = ResumeStore(save_dir, torrent.info.info_hash).state_path
    return decode_saved_state(path.read_bytes()) if path.exists() else None


def queue_config(**changes: object) -> ClientConfig:
    # Slow torrents count: the downloads without a seed must not let others start.
    settings: dict[str, object] = {"active_downloads": 2, "dont_count_slow_torrents": False}
    settings.update(changes)
    return loopback_config(**settings)


def checked(torrents: list[Torrent]) -> bool:
    """Whether every one has checked its data (a torrent queued before its check shows
    QUEUED too)."""
    return all(torrent.ready.is_set() for torrent in torrents)


async def test_four_auto_managed_downloads_two_at_a_time(tmp_path: Path) -> None:
    made = contents(tmp_path, 4)
    down = [tmp_path / "down" / str(index) for index in range(4)]
    with trio.fail_after(DEADLINE):
        async with (
            open_session(loopback_config()) as seeder,
            open_session(queue_config()) as leecher,
        ):
            # The seeder checks its data, but serves nothing until told.
            seeding = [
                await seeder.add_torrent(torrent, TorrentOptions(folder.parent, paused=True))
                for folder, torrent in made
            ]
            for torrent in seeding:
                await torrent.ready.wait()
            announcer = Announcer(address_of(seeder))
            leecher.add_source(lambda: announcer)
            t = [
                await leecher.add_torrent(torrent, TorrentOptions(down[index], auto_managed=True))
                for index, (_folder, torrent) in enumerate(made)
            ]
            assert [torrent.auto_managed for torrent in t] == [True] * 4
            # One check at a time (active_checking=1), then two downloads and two queued
            # (the checks end one after the other at once; the queue decides soon after).
            await until(lambda: checked(t) and not queued(t[0]) and not queued(t[1]))
            assert phases(t) == [TorrentPhase.DOWNLOADING] * 2 + [TorrentPhase.QUEUED] * 2
            assert [leecher.queue_position(torrent) for torrent in t] == [0, 1, 2, 3]
            assert [torrent.status().queue_position for torrent in t] == [0, 1, 2, 3]
            assert [torrent.queued for torrent in t] == [False, False, True, True]
            assert not any(torrent.paused for torrent in t)  # the queue is no pause
            # The running ones announce and dial; the queued ones neither.
            await until(lambda: {t[0].info_hash, t[1].info_hash} <= announcer.running)
            for torrent in t[2:]:
                assert torrent.info_hash not in announcer.started
                peer_list = leecher.peer_list(torrent)
                assert peer_list is not None
                assert len(peer_list) == 0  # no peer learnt: none dialled
                assert not torrent.peers

            # The first completes: it seeds (no position), and the next download starts.
            seeding[0].resume()
            await t[0].wait_complete()
            await until(lambda: not queued(t[2]))
            assert t[0].status().phase is TorrentPhase.SEEDING
            assert [leecher.queue_position(torrent) for torrent in t] == [-1, 0, 1, 2]
            assert queued(t[3])
            await until(lambda: t[2].info_hash in announcer.running)

            # To the head of the line: it starts at once, and the last running one waits.
            leecher.queue_position_top(t[3])
            assert [leecher.queue_position(torrent) for torrent in t] == [-1, 1, 2, 0]
            assert phases(t)[1:] == [
                TorrentPhase.DOWNLOADING,
                TorrentPhase.QUEUED,
                TorrentPhase.DOWNLOADING,
            ]
            await until(lambda: t[3].info_hash in announcer.running)
            await until(lambda: t[2].info_hash not in announcer.running)

            # The user pauses one: the queue leaves it paused, and its slot goes on (the
            # queue decides soon: a torrent only wakes it).
            t[1].pause()
            assert paused(t[1])
            assert not queued(t[1])
            await until(lambda: not queued(t[2]))  # started in its place
            leecher.set_queue_limits(active_downloads=0)  # a new decision: all wait...
            assert t[1].status().phase is TorrentPhase.PAUSED  # ...but the paused one
            assert queued(t[2])
            assert queued(t[3])
            assert leecher.queue_limits.active_downloads == 0
            t[1].resume()  # back in line, held until the queue decides
            assert queued(t[1])
            assert not paused(t[1])
            leecher.set_queue_limits(active_downloads=2)
            assert [torrent.queued for torrent in t] == [False, False, True, False]
    # Saved: auto-managed, each position, and no pause (the queue's hold is not one).
    saved = [state_of(down[index], torrent) for index, (_folder, torrent) in enumerate(made)]
    assert saved == [
        SavedState(auto_managed=True, queue_position=-1),
        SavedState(auto_managed=True, queue_position=1),
        SavedState(auto_managed=True, queue_position=2),
        SavedState(auto_managed=True, queue_position=0),
    ]

    # The next run: auto-managed as saved, back in the saved order, whatever the order of
    # the adds; a seed needs no download slot.
    with trio.fail_after(DEADLINE):
        async with open_session(queue_config(active_downloads=1)) as again:
            order = [2, 0, 1, 3]
            added = {
                index: await again.add_torrent(made[index][1], TorrentOptions(down[index]))
                for index in order
            }
            t = [added[index] for index in range(4)]
            assert all(torrent.auto_managed for torrent in t)
            await until(
                lambda: (
                    checked(t)
                    and phases(t)
                    == [
                        TorrentPhase.SEEDING,
                        TorrentPhase.QUEUED,
                        TorrentPhase.QUEUED,
                        TorrentPhase.DOWNLOADING,
                    ]
                )
            )
            assert [again.queue_position(torrent) for torrent in t] == [-1, 1, 2, 0]


async def test_set_auto_managed_and_positions(tmp_path: Path) -> None:
    # Three torrents with no peer: they download forever.
    made = contents(tmp_path, 3)
    with trio.fail_after(DEADLINE):
        async with (
            open_session(queue_config(active_downloads=1)) as session,
            open_session(loopback_config()) as other,
        ):
            t = [
                await session.add_torrent(
                    torrent, TorrentOptions(tmp_path / "down" / str(index), auto_managed=True)
                )
                for index, (_folder, torrent) in enumerate(made)
            ]
            # Their checks hash nothing (no file yet), so they run outside the queue; the
            # queue's first decision comes soon after.
            await until(
                lambda: (
                    checked(t)
                    and phases(t) == [TorrentPhase.DOWNLOADING] + [TorrentPhase.QUEUED] * 2
                )
            )
            # Not auto-managed: a force start, never queued, but still in line (every
            # download has a position, as libtorrent's).
            t[2].set_auto_managed(False)
            assert not queued(t[2])
            assert session.queue_position(t[2]) == 2
            assert t[2].status().phase is TorrentPhase.DOWNLOADING
            assert not t[2].status().auto_managed
            # Moves within the line.
            session.queue_position_down(t[0])
            assert [session.queue_position(torrent) for torrent in t] == [1, 0, 2]
            assert queued(t[0])
            assert not queued(t[1])
            session.queue_position_up(t[0])
            assert [session.queue_position(torrent) for torrent in t] == [0, 1, 2]
            session.queue_position_bottom(t[0])
            assert [session.queue_position(torrent) for torrent in t] == [2, 0, 1]
            session.set_queue_position(t[0], 99)  # past the end: the end
            assert [session.queue_position(torrent) for torrent in t] == [2, 0, 1]
            session.set_queue_position(t[0], 0)
            assert [session.queue_position(torrent) for torrent in t] == [0, 1, 2]
            # The one not auto-managed moves too, but runs wherever it is.
            session.queue_position_top(t[2])
            assert [session.queue_position(torrent) for torrent in t] == [1, 2, 0]
            assert not queued(t[2])
            assert queued(t[1])
            # Back to auto-managed: its place kept (the head), and the queue decides soon:
            # the one it now comes before is queued.
            t[2].set_auto_managed(True)
            assert session.queue_position(t[2]) == 0
            await until(lambda: queued(t[0]))
            assert not queued(t[2])
            session.queue_position_bottom(t[2])
            assert [session.queue_position(torrent) for torrent in t] == [0, 1, 2]
            assert queued(t[2])
            # Bad calls.
            with pytest.raises(ValueError, match="0 or more"):
                session.set_queue_position(t[0], -1)
            with pytest.raises(TypeError):
                session.set_queue_position(t[0], 1.0)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="active_seeds"):
                session.set_queue_limits(active_seeds=-3)
            with pytest.raises(ValueError, match="auto_manage_interval"):
                session.set_queue_limits(active_downloads=5, auto_manage_interval=0)
            assert session.queue_limits == QueueLimits(
                active_downloads=1, dont_count_slow_torrents=False
            )
            assert session.auto_manage_interval == 30.0
            session.set_queue_limits(auto_manage_interval=5)
            assert session.auto_manage_interval == 5.0
            stranger = await other.add_torrent(made[0][1], TorrentOptions(tmp_path / "x"))
            for call in (
                session.queue_position,
                session.queue_position_up,
                session.queue_position_top,
            ):
                with pytest.raises(TorrentError):
                    call(stranger)
            # Removing the one running starts the next (soon).
            await session.remove_torrent(t[0])
            await until(lambda: not queued(t[1]))
            assert session.queue_position(t[1]) == 0
            assert session.queue_position(t[2]) == 1
            with pytest.raises(TorrentError):
                t[0].set_auto_managed(False)


async def test_not_auto_managed_by_default(tmp_path: Path) -> None:
    [(folder, torrent)] = contents(tmp_path, 1)
    with trio.fail_after(DEADLINE):
        async with open_session(loopback_config(active_downloads=0, active_seeds=0)) as session:
            seeding = await session.add_torrent(torrent, TorrentOptions(folder.parent))
            await seeding.wait_complete()
            assert not seeding.auto_managed
            assert not seeding.queued
            assert session.queue_position(seeding) == -1
    # Nothing to save: never paused, not auto-managed.
    assert state_of(folder.parent, torrent) is None
    with pytest.raises(TypeError):
        TorrentOptions(folder, auto_managed=1)  # type: ignore[arg-type]


class Passes:
    """Counts the queue's decisions, and the facts built for them, in every session."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.decisions = 0
        self.facts = 0
        decide, facts = TorrentQueue.decide, Torrent._queue_facts

        def counted_decide(queue: TorrentQueue, *args: Any, **kwargs: Any) -> QueueDecision:
            self.decisions += 1
            return decide(queue, *args, **kwargs)

        def counted_facts(torrent: Torrent, key: int, now: float) -> QueuedTorrent:
            self.facts += 1
            return facts(torrent, key, now)

        monkeypatch.setattr(TorrentQueue, "decide", counted_decide)
        monkeypatch.setattr(Torrent, "_queue_facts", counted_facts)


def tiny(tmp_path: Path, count: int) -> list[Metainfo]:
    """``count`` one-piece torrents of different data."""
    return [
        make_torrent(write_content(tmp_path / f"t{index}", [100], seed=index), "v1")
        for index in range(count)
    ]


async def test_a_burst_of_adds_is_decided_in_few_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes = Passes(monkeypatch)
    made = tiny(tmp_path, 300)
    config = queue_config(active_downloads=-1, active_checking=-1)
    with trio.fail_after(DEADLINE):
        async with open_session(config) as session:
            start = trio.current_time()
            t = []
            for index, torrent in enumerate(made):
                added = await session.add_torrent(
                    torrent, TorrentOptions(tmp_path / "down" / str(index), auto_managed=True)
                )
                # Held until the queue's first decision: nothing announced nor checked.
                assert added.queued or passes.decisions
                t.append(added)
            # Its own position at once, every download in line.
            assert [torrent.queue_position for torrent in t] == list(range(300))
            await until(lambda: checked(t) and not any(torrent.queued for torrent in t))
            elapsed = trio.current_time() - start
    # Far fewer passes than torrents asking, and no more work than one pass over every
    # torrent a second (the gap grows with the torrents: a pass costs in proportion).
    assert passes.decisions < 30
    assert passes.facts <= 300 * (elapsed / QUEUE_MIN_GAP + 3)

    # Torrents not auto-managed: the queue builds no facts and decides nothing, but every
    # download still has its place in line.
    passes.decisions = passes.facts = 0
    with trio.fail_after(DEADLINE):
        async with open_session(queue_config()) as session:
            t = [
                await session.add_torrent(torrent, TorrentOptions(tmp_path / "plain" / str(i)))
                for i, torrent in enumerate(made[:20])
            ]
            await until(lambda: checked(t))
            session.set_queue_limits(active_downloads=1)  # a decision at once: nothing to do
            assert [session.queue_position(torrent) for torrent in t] == list(range(20))
            assert not any(torrent.queued for torrent in t)
    assert passes.decisions == passes.facts == 0


async def test_paused_auto_managed_torrents_do_not_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = Checks(monkeypatch)
    made = contents(tmp_path, 4)
    with trio.fail_after(DEADLINE):
        async with open_session(queue_config(active_checking=1)) as session:
            t = [
                await session.add_torrent(
                    torrent, TorrentOptions(folder.parent, auto_managed=True, paused=True)
                )
                for folder, torrent in made
            ]
            await trio.sleep(0.3)
            assert checks.started == 0  # libtorrent's: a paused torrent does not check
            assert phases(t) == [TorrentPhase.PAUSED] * 4
            for torrent in t:
                torrent.resume()
            await until(lambda: checked(t))
            assert checks.most == 1  # one at a time, as active_checking says
            # A recheck waits for its turn too: two asked at once, one checks at a time.
            checks.most = 0
            await until(lambda: not any(torrent.queued for torrent in t))
            t[0].force_recheck()
            t[1].force_recheck()
            await until(lambda: phases(t[:2]) == [TorrentPhase.SEEDING] * 2)
            assert checks.most == 1


async def test_a_recheck_keeps_its_slot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = contents(tmp_path, 2)
    # Nobody there: the downloads run forever.
    announcer = Announcer(PeerAddress(IPv4Address("127.0.0.1"), 9))
    starts: list[Torrent] = []
    dequeue = Torrent._dequeue

    def counted(torrent: Torrent) -> None:
        if torrent.queued:
            starts.append(torrent)
        dequeue(torrent)

    monkeypatch.setattr(Torrent, "_dequeue", counted)
    with trio.fail_after(DEADLINE):
        async with open_session(queue_config(active_downloads=1)) as session:
            session.add_source(lambda: announcer)
            down = [tmp_path / "down" / str(i) for i in range(2)]
            # b is added once a runs: a check keeps no slot, so b's check ending first
            # would start b (and announce it) until the queue's next decision gave a its
            # turn back.
            a = await session.add_torrent(made[0][1], TorrentOptions(down[0], auto_managed=True))
            await until(lambda: checked([a]) and not queued(a))
            b = await session.add_torrent(made[1][1], TorrentOptions(down[1], auto_managed=True))
            await until(lambda: checked([b]))
            assert queued(b)
            await until(lambda: a.info_hash in announcer.running)
            starts.clear()
            checks = Checks(monkeypatch)
            a.force_recheck()
            assert a.status().phase is TorrentPhase.QUEUED  # waits for its turn to check
            await until(lambda: checks.started == 1)
            await until(lambda: a.status().phase is TorrentPhase.DOWNLOADING and not queued(a))
            await trio.sleep(0.1)
            # b never started in a's place (no announce to take back at once).
            assert b not in starts
            assert queued(b)
            assert b.info_hash not in announcer.started
            assert announcer.started.count(a.info_hash) == 2  # before and after its check


async def test_a_new_position_writes_the_state_file_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = contents(tmp_path, 3)
    down = [tmp_path / "down" / str(index) for index in range(3)]
    saves: list[Path] = []
    save_resume = ResumeStore.save_resume

    async def counted(store: ResumeStore, data: bytes) -> None:
        saves.append(store.resume_path)
        await save_resume(store, data)

    monkeypatch.setattr(ResumeStore, "save_resume", counted)
    with trio.fail_after(DEADLINE):
        async with open_session(queue_config(active_downloads=1)) as session:
            t = [
                await session.add_torrent(torrent, TorrentOptions(down[index], auto_managed=True))
                for index, (_folder, torrent) in enumerate(made)
            ]
            await until(lambda: checked(t))
            await until(
                lambda: all(
                    state_of(down[i], torrent) == SavedState(auto_managed=True, queue_position=i)
                    for i, (_folder, torrent) in enumerate(made)
                )
            )
            await trio.sleep(0.6)  # past resume_interval: every save due is done
            saves.clear()
            session.queue_position_bottom(t[0])  # every one moves
            await until(
                lambda: (
                    [
                        state_of(down[i], torrent).queue_position  # type: ignore[union-attr]
                        for i, (_folder, torrent) in enumerate(made)
                    ]
                    == [2, 0, 1]
                )
            )
            await until(lambda: queued(t[0]) and not queued(t[1]))
            # t[0] and t[1] changed more than their position (queued, started); t[2] not.
            assert ResumeStore(down[2], made[2][1].info.info_hash).resume_path not in saves
