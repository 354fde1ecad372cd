"""Serving peers: the requests a torrent accepted, answered with blocks read from the disk.

bip_peer's :class:`~bip_peer.PeerConnection` already refused every request we must not serve
(while we choke the peer, for a piece we did not announce, beyond our ``reqq``); what reaches
here is queued and served by a few worker tasks, so a slow disk read holds up one worker, not
the task routing every peer's messages. Just before reading, and again before sending, a
request is looked up in the connection's open requests: one cancelled or rejected by a choke
meanwhile is skipped. The queue needs no bound of its own: each peer has at most our ``reqq``
requests open, and the manager holds at most ``max_peers`` peers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Final

import trio

from bip_disk import DiskManager, StorageError, TorrentHandle, TorrentStateError
from bip_peer import LocalProtocolError, Peer, PeerClosedError, PeerManager, Piece, Request
from bip_select import Block

__all__ = ["UPLOAD_WORKERS", "Uploader"]

logger = logging.getLogger("bip.client")

UPLOAD_WORKERS: Final = 4
"""Tasks per torrent reading requested blocks from disk and queueing them to peers."""


class Uploader:
    """The upload side of one torrent.

    Args:
        disk: where the blocks are read.
        manager: where the pieces are sent.
        on_sent: told of every block queued to a peer (for rates and the choker).
    """

    def __init__(
        self,
        disk: DiskManager,
        manager: PeerManager,
        *,
        on_sent: Callable[[Peer, Block], None],
    ) -> None:
        self._disk = disk
        self._manager = manager
        self._on_sent = on_sent
        self._send, self._receive = trio.open_memory_channel[tuple[Peer, Request]](math.inf)

    def queue(self, peer: Peer, request: Request) -> None:
        """Serve ``request`` from ``peer`` when a worker is free."""
        self._send.send_nowait((peer, request))

    async def run(self, handle: TorrentHandle, *, workers: int = UPLOAD_WORKERS) -> None:
        """Serve the torrent ``handle``'s requests until cancelled."""
        async with trio.open_nursery() as nursery:
            for _ in range(workers):
                nursery.start_soon(self._work, handle)

    async def _work(self, handle: TorrentHandle) -> None:
        async for peer, request in self._receive:
            key = (request.index, request.begin, request.length)
            if key not in peer.connection.peer_requests:
                continue  # cancelled, or rejected by a choke, while it waited
            try:
                data = await self._disk.read_block(handle, *key)
            except (TorrentStateError, StorageError) as error:
                # A storage fault stops the torrent; its event says why.
                logger.debug("cannot serve %s: %s", key, error)
                continue
            if key not in peer.connection.peer_requests:
                continue
            try:
                await self._manager.send(peer, Piece(request.index, request.begin, data))
            except (PeerClosedError, LocalProtocolError):
                continue  # gone, or the request was cancelled while we waited for room
            self._on_sent(peer, Block(*key))
