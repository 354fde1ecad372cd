""":meth:`PeerManager.send_control` (hunt h2): small control messages bounded by the protocol
(a have per piece, a reject per request...) go past the send queue's message and byte
capacities, coalesced, under a byte bound of their own per peer (9 bytes a piece, four ``reqq``
of rejects, 64 KiB). Without it, the haves a fast download queues behind a slow but honest
peer's blocks filled the message count and the peer was dropped as if it had stopped reading.

In-memory lockstep streams: a write waits for the far end to read, so what is queued stays
queued until the test reads it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address

import pytest
import trio
import trio.testing

from bip_handshake import CompletedHandshake, Extensions, PeerAddress, PeerId
from bip_metainfo import InfoHash
from bip_peer import (
    NEED_DATA,
    ConnectionLimits,
    Have,
    KeepAlive,
    Message,
    MessageDecoder,
    Peer,
    PeerManager,
    PeerManagerConfig,
    Request,
    Unchoke,
    open_peer_manager,
)
from bip_peer._manager import _CONTROL_CHUNK, _control_bound

TORRENT = InfoHash(v1=b"\x33" * 20)
PIECES = 2000
HAVE = 9  # bytes of a have on the wire
LIMITS = ConnectionLimits(max_peer_requests=10)
BOUND = _control_bound(PIECES, LIMITS)  # 64 KiB + 9 * 2000 + 4 * 17 * 10


class Far:
    """The far end: decodes what the manager writes, when the test says so."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = MessageDecoder()

    async def read(self, count: int) -> list[Message]:
        """The next ``count`` messages (keep-alives skipped)."""
        got: list[Message] = []
        with trio.fail_after(10):
            while len(got) < count:
                message = self.decoder.next_message()
                if message is NEED_DATA:
                    self.decoder.receive_data(await self.stream.receive_some(1 << 20))
                elif not isinstance(message, KeepAlive):
                    assert isinstance(message, Message)
                    got.append(message)
        return got


@asynccontextmanager
async def stalled_peer(**config: object) -> AsyncIterator[tuple[PeerManager, Peer, Far]]:
    """A peer (fast extension, no BEP 10) whose writer is blocked in its first write."""
    local, far = trio.testing.lockstep_stream_pair()
    handshake = CompletedHandshake(
        stream=local,
        trailing=b"",
        peer_id=PeerId(b"-XX0000-remoteremote"),
        extensions=Extensions.FAST,
        our_extensions=Extensions.FAST,
        info_hash=TORRENT,
        swarm_id=TORRENT.swarm_ids()[0],
        address=PeerAddress(IPv4Address("10.0.0.1"), 6881),
        direction="outbound",
    )
    options: dict[str, object] = {"send_queue_size": 4, "limits": LIMITS, **config}
    async with open_peer_manager(PeerManagerConfig(**options)) as manager:  # type: ignore[arg-type]
        peer = manager.add_peer(handshake, num_pieces=PIECES)
        assert manager.send_nowait(peer, KeepAlive())
        await trio.testing.wait_all_tasks_blocked()  # the writer waits for the far end
        yield manager, peer, Far(far)


async def test_control_messages_go_past_the_message_count_coalesced_and_in_order() -> None:
    async with stalled_peer() as (manager, peer, far):
        assert manager.send_control(peer, Unchoke())
        for piece in range(PIECES):  # a have per piece: 500 times the message count
            assert manager.send_control(peer, Have(piece))
        task = manager._peers[peer]
        # Coalesced: a few entries of about 4 KiB, not one per have.
        assert len(task.queue) <= PIECES * HAVE // _CONTROL_CHUNK + 2
        # They take no room from the other messages: the count (4) is all theirs.
        assert [manager.send_nowait(peer, KeepAlive()) for _ in range(5)] == [True] * 4 + [False]
        messages = await far.read(1 + PIECES)
        assert messages == [Unchoke(), *(Have(piece) for piece in range(PIECES))]
        assert manager.is_connected(peer)
        # Each coalesced message still counts as one written (and the 5 keep-alives).
        with trio.fail_after(5):
            while manager.queued_bytes(peer):
                await trio.sleep(0)
        assert manager.statistics().peers[peer].messages_sent == 1 + PIECES + 5


async def test_control_messages_do_not_fill_the_count_between_other_messages() -> None:
    async with stalled_peer() as (manager, peer, far):
        # Interleaved with counted messages, each control message makes an entry of its own;
        # those entries must not count either.
        accepted = 0
        for piece in range(100):
            assert manager.send_control(peer, Have(piece))
            if manager.send_nowait(peer, KeepAlive()):
                accepted += 1
        assert accepted == 4  # the count holds 4 messages, whatever the haves between them
        messages = await far.read(100)
        assert messages == [Have(piece) for piece in range(100)]


async def test_a_peer_over_the_control_bound_is_refused_until_it_reads() -> None:
    async with stalled_peer() as (manager, peer, far):
        sent = 0
        while manager.send_control(peer, Have(sent % PIECES)):
            sent += 1
            assert sent < 2 * BOUND // HAVE, "the control bound never refused"
        # The message that reaches the bound is taken; none after it.
        assert sent == -(-BOUND // HAVE)
        assert manager.is_connected(peer)  # refused, not removed: the caller decides
        # Read, they leave the bound: room again.
        await far.read(sent)
        with trio.fail_after(5):
            while manager.queued_bytes(peer):
                await trio.sleep(0)
        assert manager.send_control(peer, Have(0))
        assert await far.read(1) == [Have(0)]


async def test_the_bound_grows_with_the_piece_count_a_magnet_learns() -> None:
    # A magnet's connection has no piece count yet: haves are not sent before the metadata,
    # and the bound holds the rest only.
    assert _control_bound(None, LIMITS) == 64 * 1024 + 4 * 17 * 10
    assert _control_bound(PIECES, LIMITS) - _control_bound(None, LIMITS) == HAVE * PIECES


async def test_only_control_messages_are_taken() -> None:
    async with stalled_peer() as (manager, peer, _far):
        with pytest.raises(TypeError, match="not a control message"):
            manager.send_control(peer, Request(0, 0, 16384))
        assert manager.queued_bytes(peer) == 4  # the keep-alive only: nothing queued


async def test_a_removed_peer_takes_nothing() -> None:
    async with stalled_peer() as (manager, peer, _far):
        manager.remove_peer(peer, "test")
        assert not manager.send_control(peer, Have(1))


async def test_queued_counts_the_messages_of_coalesced_control_entries() -> None:
    # PeerStatistics.queued is messages waiting, not queue entries: 500 haves coalesced into
    # two entries are 500 messages queued.
    async with stalled_peer() as (manager, peer, far):
        for piece in range(500):
            assert manager.send_control(peer, Have(piece))
        assert manager.statistics().peers[peer].queued == 500
        assert manager.send_nowait(peer, KeepAlive())
        for piece in range(3):  # an entry of their own, after the keep-alive
            assert manager.send_control(peer, Have(piece))
        assert manager.statistics().peers[peer].queued == 504
        # Written, they leave the count (the blocked keep-alive's write, then the rest).
        await far.read(503)
        with trio.fail_after(5):
            while manager.queued_bytes(peer):
                await trio.sleep(0)
        assert manager.statistics().peers[peer].queued == 0


# -- Final read ----------------------------------------------------------------------------------


async def test_control_bytes_take_no_room_from_send_queue_bytes() -> None:
    # 200 haves (1,800 bytes) queued behind a blocked write with send_queue_bytes=1000: they
    # have their own bound, so the byte capacity is still all the other messages' (send
    # waited and send_nowait refused, and bip dropped the peer as "send queue full").
    async with stalled_peer(send_queue_size=1000, send_queue_bytes=1000) as (manager, peer, far):
        for piece in range(200):
            assert manager.send_control(peer, Have(piece))
        assert manager.queued_bytes(peer) == 4 + 200 * HAVE  # still counted as queued
        with trio.fail_after(1):
            await manager.send(peer, KeepAlive())
        # The other messages still have the whole capacity, no more: with the keep-alive
        # being written, 1,000 bytes are 250 keep-alives (4 bytes each).
        accepted = 0
        while manager.send_nowait(peer, KeepAlive()):
            accepted += 1
            assert accepted < 1000, "send_queue_bytes never refused"
        assert accepted == 250 - 2
        assert manager.is_connected(peer)
        assert await far.read(200) == [Have(piece) for piece in range(200)]
