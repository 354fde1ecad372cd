"""What the session queue tests share (test_session_queue.py, test_queue_checks.py): a count
of the data checks the torrents wait for, patched into :class:`~bip_disk.DiskManager`."""

from __future__ import annotations

import pytest
import trio

from bip_disk import DiskManager, TorrentHandle, TorrentState

__all__ = ["Checks"]


class Checks:
    """Counts the data checks the torrents wait for (the full ones, the resume data's and
    the rechecks), and how many at most are under way at once; with ``gate``, the first
    check to start does not end (for the torrent) until it is set.

    Attributes:
        now: checks under way.
        most: the most ever under way at once.
        started: checks started so far.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, gate: trio.Event | None = None) -> None:
        self.now = self.most = self.started = 0
        wait_checked = DiskManager.wait_checked

        async def counted(disk: DiskManager, handle: TorrentHandle) -> TorrentState:
            self.now += 1
            self.started += 1
            self.most = max(self.most, self.now)
            try:
                if gate is not None and self.started == 1:
                    await gate.wait()
                return await wait_checked(disk, handle)
            finally:
                self.now -= 1

        monkeypatch.setattr(DiskManager, "wait_checked", counted)
