"""``bip demo``'s live view reads each peer's status once per frame: the uTP room and every
line of one frame come from one snapshot."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import cast

from bip._client import TorrentPhase, TorrentStatus
from bip._cmd_demo import _Board, board_lines
from bip._demo_swarm import DemoPeer, DemoSwarm


def _downloading(utp_peers: int) -> TorrentStatus:
    return TorrentStatus(
        name="demo",
        phase=TorrentPhase.DOWNLOADING,
        total=1000,
        done=250,
        pieces=2,
        num_pieces=8,
        download_rate=1.5 * 2**20,
        upload_rate=0.0,
        downloaded=250,
        uploaded=0,
        peers=3,
        seeds=1,
        bad_pieces=0,
        utp_peers=utp_peers,
    )


class _Counting:
    """A peer whose status is read through a counter: each read gives the next status, so a
    second read in one frame would show."""

    def __init__(self, name: str, statuses: list[TorrentStatus]) -> None:
        self.peer = DemoPeer(name, "127.0.0.9", Path("."), True)
        self.statuses = statuses
        self.reads = 0

    def status(self) -> TorrentStatus:
        status = self.statuses[min(self.reads, len(self.statuses) - 1)]
        self.reads += 1
        return status

    def __getattr__(self, name: str) -> object:
        return getattr(self.peer, name)


def _swarm(*peers: _Counting) -> DemoSwarm:
    return cast(DemoSwarm, SimpleNamespace(peers=list(peers)))


def test_board_lines_read_each_status_once() -> None:
    # The first read has uTP peers, a second would not: one snapshot makes room and shows it.
    peers = [
        _Counting("leecher 1", [_downloading(2), _downloading(0)]),
        _Counting("leecher 2", [_downloading(0)]),
    ]
    [first, _] = board_lines(_swarm(*peers), 100, bar=True)
    assert first.endswith("peers 3 (2 uTP)")
    assert [peer.reads for peer in peers] == [1, 1]


def test_a_drawn_frame_reads_each_status_once() -> None:
    peers = [_Counting(f"leecher {n}", [_downloading(n)]) for n in range(3)]
    stream = io.StringIO()
    board = _Board(stream)
    board.draw(_swarm(*peers), 1.0)
    assert [peer.reads for peer in peers] == [1, 1, 1]
    board.draw(_swarm(*peers), 3.0)
    assert [peer.reads for peer in peers] == [2, 2, 2]
    frames = stream.getvalue().split("-- ")[1:]
    assert len(frames) == 2
    assert all("leecher 2" in frame and "(2 uTP)" in frame for frame in frames)
