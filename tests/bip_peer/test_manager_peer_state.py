"""PeerManager.set_num_pieces (a magnet's piece count) and PeerManager.queued_bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from ipaddress import IPv4Address
from typing import Any

import pytest
import trio
import trio.testing

from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_peer._connection import PeerConnection
from bip_peer._errors import RemoteProtocolError
from bip_peer._manager import (
    REASON_PROTOCOL,
    ManagerEvent,
    MessageReceived,
    PeerAdded,
    PeerRemoved,
    open_peer_manager,
)
from bip_peer._messages import NEED_DATA, Bitfield, Have, HaveAll, Piece, Request, Unchoke

TORRENT = InfoHash(v1=b"\x22" * 20)
BOTH = Extensions.EXTENSION_PROTOCOL | Extensions.FAST


def handshake(stream: trio.abc.Stream, *, theirs: Extensions = BOTH) -> CompletedHandshake:
    return CompletedHandshake(
        stream=stream,
        trailing=b"",
        peer_id=PeerId(b"-XX0000-remoteremote"),
        extensions=theirs,
        our_extensions=BOTH,
        info_hash=TORRENT,
        swarm_id=TORRENT.swarm_ids()[0],
        address=PeerAddress(IPv4Address("10.0.0.1"), 6881),
        direction="outbound",
    )


class Remote:
    """The far end: a PeerConnection over the other end of the stream."""

    def __init__(self, stream: trio.abc.Stream, *, extensions: Extensions = BOTH) -> None:
        self.stream = stream
        self.connection = PeerConnection(
            num_pieces=8, info_hash=TORRENT, our_extensions=extensions, their_extensions=BOTH
        )

    async def send(self, *messages: Any) -> None:
        await self.stream.send_all(b"".join(self.connection.send(m) for m in messages))

    async def receive(self) -> Any:
        while (event := self.connection.next_event()) is NEED_DATA:
            with trio.fail_after(10):
                self.connection.receive_data(await self.stream.receive_some())
        return event


BLOCK = bytes(16384)


async def next_event(events: AsyncIterator[ManagerEvent]) -> ManagerEvent:
    with trio.fail_after(10):
        return await events.__anext__()


async def magnet_peer_after(*messages: object, num_pieces: int) -> tuple[bool, list[object]]:
    """A peer added without a piece count sends ``messages``; then the count is set.

    Returns what set_num_pieces said and the events after it (up to the first removal)."""
    local, far = trio.testing.memory_stream_pair()
    async with open_peer_manager() as manager:
        peer = manager.add_peer(handshake(local))
        remote = Remote(far)
        events = manager.events()
        assert await next_event(events) == PeerAdded(peer)
        await remote.send(*messages)
        for message in messages:
            event = await next_event(events)
            assert isinstance(event, MessageReceived)
            assert event.message == message
        before = peer.connection.num_pieces  # a local: mypy narrows it, not the property
        assert before is None
        kept = manager.set_num_pieces(peer, num_pieces)
        seen: list[object] = []
        if kept:
            assert peer.connection.num_pieces == num_pieces
            seen.append(list(peer.connection.peer_pieces))
            assert manager.set_num_pieces(peer, num_pieces)  # the same count again: fine
            with pytest.raises(ValueError, match="already"):
                manager.set_num_pieces(peer, num_pieces + 1)
        else:
            seen.append(await next_event(events))
            assert not manager.set_num_pieces(peer, num_pieces)  # gone
        return kept, seen


async def test_set_num_pieces_settles_what_the_peer_said() -> None:
    kept, seen = await magnet_peer_after(Bitfield(b"\x80"), Have(5), num_pieces=6)
    assert kept
    assert seen == [[0, 5]]


async def test_set_num_pieces_removes_a_peer_whose_pieces_do_not_fit() -> None:
    kept, seen = await magnet_peer_after(HaveAll(), Have(7), num_pieces=6)
    assert not kept
    (removed,) = seen
    assert isinstance(removed, PeerRemoved)
    assert removed.reason == REASON_PROTOCOL
    assert isinstance(removed.error, RemoteProtocolError)


async def test_set_num_pieces_refuses_nonsense_and_changes_nothing() -> None:
    local, _far = trio.testing.memory_stream_pair()
    async with open_peer_manager() as manager:
        peer = manager.add_peer(handshake(local))
        with pytest.raises(TypeError):
            manager.set_num_pieces(peer, "8")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="uint32"):
            manager.set_num_pieces(peer, -1)
        assert peer.connection.num_pieces is None
        assert peer in manager.peers


async def test_queued_bytes_counts_until_written() -> None:
    local, far = trio.testing.lockstep_stream_pair()  # send_all waits for the reader
    async with open_peer_manager() as manager:
        peer = manager.add_peer(handshake(local, theirs=Extensions.FAST), num_pieces=8)
        remote = Remote(far, extensions=Extensions.FAST)
        assert manager.queued_bytes(peer) == 0
        await manager.send(peer, HaveAll())
        await trio.testing.wait_all_tasks_blocked()
        # The writer holds the have all (blocked in send_all): it still counts.
        assert manager.queued_bytes(peer) == 5
        assert manager.send_nowait(peer, Have(1))
        assert manager.queued_bytes(peer) == 5 + 9
        assert await remote.receive() == HaveAll()
        assert await remote.receive() == Have(1)
        await trio.testing.wait_all_tasks_blocked()
        assert manager.queued_bytes(peer) == 0

        # A block: its 13-byte header and its data, both parts counted.
        await manager.send(peer, Unchoke())
        assert await remote.receive() == Unchoke()
        await remote.send(Request(0, 0, len(BLOCK)))
        with trio.fail_after(10):
            while not peer.connection.peer_requests:
                await trio.sleep(0)
        await manager.send(peer, Piece(0, 0, BLOCK))
        assert manager.queued_bytes(peer) == 13 + len(BLOCK)
        assert await remote.receive() == Piece(0, 0, BLOCK)
        await trio.testing.wait_all_tasks_blocked()
        assert manager.queued_bytes(peer) == 0

        manager.remove_peer(peer, "done")
        assert manager.queued_bytes(peer) == 0
