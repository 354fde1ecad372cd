"""Sequential download and piece deadlines (``Torrent.set_sequential``,
``set_piece_deadline``...): our seed to our download on loopback, one seed only, so the order
in which the download first asks for each piece is the order its brain chose."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import trio
from _engine_helpers import (
    address_of,
    loopback_config,
    make_torrent,
    same_files,
    seeder_and_leecher,
    write_content,
)

from bip._client import Torrent, TorrentError, TorrentOptions, open_session
from bip._client._swarm import Swarm
from bip_metainfo import MagnetLink, Metainfo
from bip_select import Action, RarestFirst, SendRequest, Sequential, Streaming

PIECE = 16384  # one block per piece: a piece is asked for once, in one request
NUM_PIECES = 256
DEADLINE = 60.0


class RequestLog:
    """Every piece the download asked for, in the order first asked; ``after`` is called
    with the log after each batch of the brain's actions that asks for new pieces (to act
    mid-download, between two of the brain's steps)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.order: list[int] = []
        self.batches = 0
        self.torrent: Torrent | None = None
        self.after: Callable[[RequestLog], None] | None = None
        original = Swarm.carry_out
        log = self

        def carry_out(swarm: Swarm, actions: Iterable[Action]) -> None:
            actions = list(actions)
            original(swarm, actions)
            # Both sessions live in this process: only the download's swarm counts.
            if log.torrent is None or swarm is not log.torrent.swarm:
                return
            asked = set(log.order)
            fresh = [
                a.block.piece
                for a in actions
                if isinstance(a, SendRequest) and a.block.piece not in asked
            ]
            if fresh:
                log.order.extend(dict.fromkeys(fresh))
                log.batches += 1
                if log.after is not None:
                    log.after(log)

        monkeypatch.setattr(Swarm, "carry_out", carry_out)


def content(tmp_path: Path) -> tuple[Path, Metainfo]:
    folder = write_content(tmp_path / "seed", [NUM_PIECES * PIECE - 1000, 1000])
    return folder, make_torrent(folder, "v1", piece_length=PIECE)


async def download_logged(
    tmp_path: Path,
    log: RequestLog,
    prepare: Callable[[Torrent], None],
    torrent: Metainfo,
    folder: Path,
    *,
    complete: Callable[[Torrent], None] = lambda _: None,
) -> Torrent:
    """Download ``torrent`` from a seed of ``folder``, ``prepare`` called on the download
    as soon as it is added (before its brain is made), its requests logged; ``complete``
    called on it once complete (before its session closes: a closed torrent's controls
    refuse)."""
    # No BEP 6 allowed fast: a download the seed chokes asks for its allowed-fast pieces first,
    # whatever its order (libtorrent's too), and the order is what these tests look at.
    async with seeder_and_leecher(torrent, folder, allowed_fast_set_size=0) as (seeder, leecher):
        download = await leecher.add_torrent(
            torrent, TorrentOptions(tmp_path / "down", peers=(address_of(seeder),))
        )
        assert download.swarm is None  # what prepare does is remembered for the brain
        log.torrent = download
        prepare(download)
        await download.wait_complete()
        complete(download)
    return download


def is_ascending(pieces: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(pieces))


async def test_sequential_set_before_the_brain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, torrent = content(tmp_path)
    log = RequestLog(monkeypatch)

    def prepare(download: Torrent) -> None:
        assert not download.sequential
        download.set_sequential(True)
        assert download.sequential

    with trio.fail_after(DEADLINE):
        download = await download_logged(tmp_path, log, prepare, torrent, folder)
    assert download.completed.is_set()
    assert log.order == list(range(NUM_PIECES))
    assert same_files(folder, tmp_path / "down" / "album")


async def test_sequential_set_before_the_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, torrent = content(tmp_path)
    log = RequestLog(monkeypatch)
    with trio.fail_after(DEADLINE):
        # No allowed fast (see download_logged): the order is what this test looks at.
        async with seeder_and_leecher(torrent, folder, allowed_fast_set_size=0) as (
            seeder,
            leecher,
        ):
            address = address_of(seeder)
            magnet = MagnetLink.from_info_hash(
                torrent.info.info_hash, peers=[(str(address.host), address.port)]
            )
            download = await leecher.add_torrent(magnet, TorrentOptions(tmp_path / "down"))
            assert download.info is None
            log.torrent = download
            download.set_sequential(True)
            await download.wait_complete()
    assert log.order == list(range(NUM_PIECES))
    assert same_files(folder, tmp_path / "down" / "album")


async def test_rarest_first_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, torrent = content(tmp_path)
    log = RequestLog(monkeypatch)
    with trio.fail_after(DEADLINE):
        download = await download_logged(tmp_path, log, lambda _: None, torrent, folder)
    assert not download.sequential
    assert sorted(log.order) == list(range(NUM_PIECES))
    assert not is_ascending(log.order)  # one seed: every piece as rare, picked at random


async def test_toggled_while_downloading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, torrent = content(tmp_path)
    log = RequestLog(monkeypatch)
    marks: list[int] = []

    def after(log: RequestLog) -> None:
        if log.batches == 1:  # rarest first so far: switch to sequential
            marks.append(len(log.order))
            downloads[0].set_sequential(True)
        elif log.batches == 3:  # and back
            marks.append(len(log.order))
            downloads[0].set_sequential(False)

    downloads: list[Torrent] = []
    log.after = after
    with trio.fail_after(DEADLINE):
        await download_logged(tmp_path, log, downloads.append, torrent, folder)
    first, back = marks
    assert first < back < NUM_PIECES - 16  # pieces were left for both orders
    assert is_ascending(log.order[first:back])
    assert not is_ascending(log.order[back:])
    assert sorted(log.order) == list(range(NUM_PIECES))


async def test_deadlines_come_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, torrent = content(tmp_path)
    log = RequestLog(monkeypatch)
    marks: list[int] = []

    def prepare(download: Torrent) -> None:
        download.set_sequential(True)
        # Before the brain: remembered, earliest deadline first.
        download.set_piece_deadline(250, 20.0)
        download.set_piece_deadline(200, 10.0)
        download.set_piece_deadline(100, 5.0)
        download.clear_piece_deadline(100)  # never mind that one
        downloads.append(download)

    def after(log: RequestLog) -> None:
        if log.batches == 1:  # 200 and 250 are asked for already: nothing else to forget
            assert log.order[:2] == [200, 250]
            downloads[0].set_piece_deadline(140, 0.0)
            downloads[0].set_piece_deadline(141, 0.0)
            downloads[0].clear_piece_deadlines()
            assert not downloads[0]._deadlines
        elif log.batches == 2:
            marks.append(len(log.order))
            downloads[0].set_piece_deadline(150, 0.0)
            downloads[0].set_piece_deadline(120, 1.0)
            downloads[0].set_piece_deadline(130, 1.0)
            downloads[0].clear_piece_deadline(130)

    def complete(download: Torrent) -> None:
        # Met deadlines are forgotten; a deadline for a piece we have is ignored.
        assert not download._deadlines
        download.set_piece_deadline(7, 1.0)
        assert not download._deadlines

    downloads: list[Torrent] = []
    log.after = after
    with trio.fail_after(DEADLINE):
        download = await download_logged(tmp_path, log, prepare, torrent, folder, complete=complete)
    assert log.order[:3] == [200, 250, 0]
    [mark] = marks
    assert log.order[mark : mark + 2] == [150, 120]  # asked for at once, before the rest
    rest = [p for p in log.order if p not in (200, 250, 150, 120)]
    assert rest == sorted(rest)  # sequential around them
    assert sorted(log.order) == list(range(NUM_PIECES))
    with pytest.raises(TorrentError, match="closed"):
        download.set_piece_deadline(7, 1.0)  # its session closed: as pause() refuses


async def test_deadline_misuse(tmp_path: Path) -> None:
    _, torrent = content(tmp_path)
    other = make_torrent(write_content(tmp_path / "other", [5000], seed=2), "v1")
    async with open_session(loopback_config()) as session:
        magnet = await session.add_torrent(
            MagnetLink.from_info_hash(other.info.info_hash), TorrentOptions(tmp_path / "m")
        )
        with pytest.raises(TorrentError, match="before the metadata"):
            magnet.set_piece_deadline(0, 1.0)
        with pytest.raises(TorrentError, match="before the metadata"):
            magnet.clear_piece_deadline(0)
        magnet.clear_piece_deadlines()  # nothing to clear: fine
        magnet.set_sequential(True)  # remembered for when the metadata comes
        assert magnet.sequential
        download = await session.add_torrent(torrent, TorrentOptions(tmp_path / "d"))
        for bad in (-1, NUM_PIECES, True):
            with pytest.raises(TorrentError, match="no piece"):
                download.set_piece_deadline(bad, 1.0)
        with pytest.raises(TorrentError, match="no piece"):
            download.clear_piece_deadline(NUM_PIECES)
        for seconds in (-0.5, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="seconds from now"):
                download.set_piece_deadline(0, seconds)
        download.clear_piece_deadline(3)  # none set: nothing happens


async def test_the_brain_learns_each_change_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No Streaming layer while no deadline needs one; the order and each deadline reach the
    brain when set, not at the next tick (bip_select's StrategyChanged, PieceDeadlineSet...)."""
    folder, torrent = content(tmp_path)
    log = RequestLog(monkeypatch)
    seen: list[str] = []

    def after(log: RequestLog) -> None:
        if log.batches != 1:
            return
        download = downloads[0]
        assert download.swarm is not None
        brain = download.swarm.brain
        assert isinstance(brain.strategy, RarestFirst)
        download.set_sequential(True)
        assert isinstance(brain.strategy, Sequential)
        pending = [p for p in range(NUM_PIECES) if p not in log.order]
        download.set_piece_deadline(pending[-1], 30.0)
        assert set(brain.deadlines()) == {pending[-1]}
        strategy = brain.strategy
        assert isinstance(strategy, Streaming)
        assert isinstance(strategy.then, Sequential)
        download.clear_piece_deadline(pending[-1])
        assert brain.deadlines() == {}
        download.set_piece_deadline(pending[-2], 30.0)
        download.clear_piece_deadlines()
        assert isinstance(brain.strategy, Sequential)  # the layer went with the last one
        download.set_sequential(True)  # no change: nothing to tell
        seen.append("checked")

    downloads: list[Torrent] = []
    log.after = after
    with trio.fail_after(DEADLINE):
        await download_logged(tmp_path, log, downloads.append, torrent, folder)
    assert seen == ["checked"]
    assert sorted(log.order) == list(range(NUM_PIECES))
